"""Shared by the scripts/bench-* benchmarks: run a command and measure it."""
import os
import statistics
import subprocess
import sys
import time


def run(cmd, after=None, env=None):
    """Runs cmd; returns (wall seconds, cpu seconds, peak RSS in KiB). Exits on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if after:
        after()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed: {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def table(results):
    """Prints median/best wall, median CPU and peak RSS per tool; returns {tool: (median, best, cpu, rss)}."""
    print(f"{'tool':<12} {'wall median':>12} {'wall best':>10} {'cpu median':>11} {'peak RSS':>10}")
    summary = {}
    for name, rows in results.items():
        walls = [w for w, _, _ in rows]
        cpus = [c for _, c, _ in rows]
        rss = max(m for _, _, m in rows)
        summary[name] = (statistics.median(walls), min(walls), statistics.median(cpus), rss)
        s = summary[name]
        print(f"{name:<12} {s[0]:>11.3f}s {s[1]:>9.3f}s {s[2]:>10.3f}s {rss / 1024:>8.1f}MiB")
    return summary
