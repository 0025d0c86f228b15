"""Shared by the scripts/bench-* benchmarks: run a command and measure it."""
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

MIB = 1 << 20
PAGE = 4096
# Azure's largest Put Page.
CHUNK = 4 * MIB
# The bearer token the benchmarks' ARM emulator wants (not a secret).
TOKEN = "bench-arm-token"
STORAGE_VERSION = "2025-11-05"
# The subscription the benchmarks' disks live in (a GUID, as Azure's are).
SUBSCRIPTION = "00000000-0000-0000-0000-00000000beec"


def run(cmd, after=None, env=None, user=None):
    """Runs cmd; returns (wall seconds, cpu seconds, peak RSS in KiB). Exits on failure.
    `user`, a list, gets the run's user CPU seconds appended (the rest is the kernel's)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if after:
        after()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed: {err.strip()}")
    if user is not None:
        user.append(usage.ru_utime)
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


def nonzero_ranges(path, size):
    """Our grain: runs of non-zero 4 KiB pages inside each 4 MiB chunk; also AzCopy's bytes."""
    zero = bytes(PAGE)
    ranges, chunks = [], 0
    with open(path, "rb") as f:
        for base in range(0, size, CHUNK):
            try:
                # Holes are skipped unread (what a careful script does with a sparse download).
                if os.lseek(f.fileno(), base, os.SEEK_DATA) >= base + CHUNK:
                    continue
            except OSError:  # ENXIO: no data from here on
                break
            f.seek(base)
            data = f.read(min(CHUNK, size - base))
            if data.count(0) == len(data):
                continue
            chunks += len(data)
            start = None
            for off in range(0, len(data), PAGE):
                nz = data[off:off + PAGE] != zero
                if nz and start is None:
                    start = off
                elif not nz and start is not None:
                    ranges.append((base + start, off - start))
                    start = None
            if start is not None:
                ranges.append((base + start, len(data) - start))
    return ranges, chunks


class Arm:
    """Just enough of the ARM flow for the peer: create, grant write, end."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def call(self, method, url, body=None):
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read()

    def follow(self, headers):
        op = headers.get("Azure-AsyncOperation")
        for _ in range(1000):
            _, _, body = self.call("GET", op)
            v = json.loads(body)
            if v["status"] == "Succeeded":
                return (v.get("properties") or {}).get("output")
            time.sleep(0.05)
        raise RuntimeError("operation did not finish")

    def disk(self, name):
        return f"{self.endpoint}/subscriptions/{SUBSCRIPTION}/resourceGroups/bench/providers/Microsoft.Compute/disks/{name}"

    def create_and_grant(self, name, upload_size):
        _, h, _ = self.call("PUT", self.disk(name) + "?api-version=2024-03-02", {
            "location": "westeurope", "sku": {"name": "Premium_LRS"},
            "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": upload_size}}})
        self.follow(h)
        _, h, _ = self.call("POST", self.disk(name) + "/beginGetAccess?api-version=2024-03-02",
                            {"access": "Write", "durationInSeconds": 86400})
        return self.follow(h)["accessSAS"]

    def end(self, name):
        _, h, _ = self.call("POST", self.disk(name) + "/endGetAccess?api-version=2024-03-02")
        self.follow(h)


def sdk_upload(arm, name, vhd, size, ranges, workers):
    """The peer: azure-storage-blob's upload_page over the same ranges, from a thread pool."""
    from azure.storage.blob import BlobClient
    sas = arm.create_and_grant(name, size + 512)
    blob = BlobClient.from_blob_url(sas, api_version=STORAGE_VERSION, max_page_size=CHUNK)
    fd = os.open(vhd, os.O_RDONLY)
    try:
        def put(r):
            off, length = r
            blob.upload_page(os.pread(fd, length, off), offset=off, length=length)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(put, ranges):
                pass
        put((size, 512))  # the footer
    finally:
        os.close(fd)
    arm.end(name)


COLDSNAP_VERSION = "0.12.0"


def coldsnap_bin(root):
    """coldsnap, built once from the Rust registry into target/peers (the EBS peer)."""
    peers = root / "target" / "peers"
    exe = peers / "bin" / "coldsnap"
    if not exe.exists():
        print(f"building coldsnap {COLDSNAP_VERSION} into {peers} (once) ...", file=sys.stderr)
        subprocess.run(["cargo", "install", "coldsnap", "--version", COLDSNAP_VERSION, "--locked",
                        "--root", str(peers), "--quiet"], check=True)
    return exe


def vhd_footer(size):
    """A fixed VHD footer for a disk of `size` bytes (the VHD spec's fields, CHS geometry and checksum)."""
    import struct
    import uuid
    sectors = min(size // 512, 65535 * 16 * 255)
    if sectors >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = sectors // spt
    else:
        spt = 17
        cth = sectors // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = sectors // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = sectors // spt
    stamp = int(time.time()) - 946684800  # seconds since 2000-01-01
    f = bytearray(512)
    struct.pack_into(">8sIIQI4sI4sQQHBBII16s", f, 0, b"conectix", 2, 0x00010000, 0xFFFFFFFFFFFFFFFF, stamp,
                     b"bnch", 0x00010000, b"Wi2k", size, size, cth // heads, heads, spt, 2, 0, uuid.uuid4().bytes)
    struct.pack_into(">I", f, 64, ~sum(f) & 0xFFFFFFFF)
    return bytes(f)
