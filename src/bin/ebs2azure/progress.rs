//! One progress display for every command: a bar with a total and an ETA
//! when the bytes to move are known, a running count otherwise, a line per
//! step for work in steps; on standard error, and only on a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Set by `--quiet`: no progress, notes or warnings on standard error.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences progress (and notes) for the run.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// True when progress and notes may be shown: a terminal, and not `--quiet`.
pub fn shown() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// True unless `--quiet`.
pub fn chatty() -> bool {
    !QUIET.load(Ordering::Relaxed)
}

const WITH_TOTAL: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})";

/// Progress of one command's work.
pub struct Progress {
    bar: Mutex<ProgressBar>,
    terminal: bool,
    verb: &'static str,
}

impl Progress {
    /// Progress over `total` bytes when known; `verb` names what a count
    /// without a total counts ("read").
    pub fn new(total: Option<u64>, verb: &'static str) -> Progress {
        let terminal = shown();
        Progress {
            bar: Mutex::new(bar(terminal, total, verb)),
            terminal,
            verb,
        }
    }

    /// Counts `n` more bytes done.
    pub fn inc(&self, n: u64) {
        self.bar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inc(n);
    }

    /// Starts a new step: says what it is on its own line (`label: step`)
    /// and counts its bytes afresh, against `total` when it is known.
    pub fn step(&self, label: &str, step: &str, total: Option<u64>) {
        let mut bar = self.bar.lock().unwrap_or_else(PoisonError::into_inner);
        bar.finish_and_clear();
        if self.terminal {
            eprintln!("{label}: {step}");
        }
        *bar = self::bar(self.terminal, total, self.verb);
    }

    /// Shows how far a snapshot's listing has got: the blocks listed so
    /// far, then (once it is complete) a bar against the bytes to read.
    pub fn listing(&self, l: &ebs2azure::source::Listing) {
        use std::sync::atomic::Ordering::Relaxed;
        let bar = self.bar.lock().unwrap_or_else(PoisonError::into_inner);
        if l.complete.load(Relaxed) {
            if bar.length().is_none() {
                bar.set_length(l.bytes.load(Relaxed));
                bar.set_style(
                    ProgressStyle::with_template(WITH_TOTAL)
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message("");
            }
        } else {
            bar.set_message(format!(
                "of {} listed so far",
                indicatif::HumanBytes(l.bytes.load(Relaxed))
            ));
        }
    }

    /// Shows an upload's or a migration's steps and bytes, labelled `label`.
    pub fn show(&self, label: &str, p: ebs2azure::upload::Progress<'_>) {
        match p {
            ebs2azure::upload::Progress::Step(step, total) => self.step(label, step, total),
            ebs2azure::upload::Progress::Bytes(n) => self.inc(n),
        }
    }

    /// Clears the display, before the command prints its result.
    pub fn finish(&self) {
        self.bar
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn bar(terminal: bool, total: Option<u64>, verb: &str) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(t) => (ProgressBar::new(t), WITH_TOTAL.to_owned()),
        None => (
            ProgressBar::no_length(),
            format!(
                "{{spinner}} [{{elapsed_precise}}] {{bytes}} {verb} ({{bytes_per_sec}}) {{msg}}"
            ),
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Progress of a plan run: a total bar of disks and a line per active disk
/// on a terminal, or (with `json`) one JSON event per line on standard
/// output: `started`, `step`, `progress` (at most one a second per disk),
/// then `finished`, `failed`, `interrupted`, `excluded` or `not_run` with
/// the disk's report line.
pub struct FleetProgress {
    json: bool,
    multi: Option<indicatif::MultiProgress>,
    total: Option<ProgressBar>,
    disks: Mutex<std::collections::HashMap<String, DiskLine>>,
}

struct DiskLine {
    bar: Option<ProgressBar>,
    bytes: u64,
    last_event: std::time::Instant,
}

impl FleetProgress {
    /// Progress over `disks` disks.
    pub fn new(disks: usize, json: bool) -> FleetProgress {
        let terminal = shown();
        let (multi, total) = if terminal && !json {
            let multi = indicatif::MultiProgress::new();
            let total = multi.add(ProgressBar::new(disks as u64));
            total.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {pos}/{len} disks ended {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            total.enable_steady_tick(Duration::from_millis(500));
            (Some(multi), Some(total))
        } else {
            (None, None)
        };
        FleetProgress {
            json,
            multi,
            total,
            disks: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Shows one event of the run.
    pub fn event(&self, e: &ebs2azure::plan::Event<'_>) {
        use ebs2azure::plan::Event;
        let mut disks = self.disks.lock().unwrap_or_else(PoisonError::into_inner);
        match *e {
            Event::Started { disk, resumed } => {
                let bar = self.multi.as_ref().map(|m| {
                    let b = m.add(ProgressBar::no_length());
                    b.set_style(
                        ProgressStyle::with_template(
                            "  {spinner} {prefix}: {bytes} ({bytes_per_sec}) {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_prefix(disk.name.clone());
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                });
                disks.insert(
                    disk.name.clone(),
                    DiskLine {
                        bar,
                        bytes: 0,
                        last_event: std::time::Instant::now(),
                    },
                );
                if self.json {
                    crate::print::event(&serde_json::json!({
                        "event": "started", "disk": disk.name, "machine": disk.machine,
                        "snapshot": disk.snapshot, "role": disk.role, "resumed": resumed,
                    }));
                }
            }
            Event::Step { disk, step } => {
                if let Some(line) = disks.get_mut(disk) {
                    if let Some(b) = &line.bar {
                        b.set_message(step.to_owned());
                    }
                }
                if self.json {
                    crate::print::event(
                        &serde_json::json!({"event": "step", "disk": disk, "step": step}),
                    );
                }
            }
            Event::Bytes { disk, bytes } => {
                if let Some(line) = disks.get_mut(disk) {
                    line.bytes += bytes;
                    if let Some(b) = &line.bar {
                        b.inc(bytes);
                    }
                    if self.json && line.last_event.elapsed() >= Duration::from_secs(1) {
                        line.last_event = std::time::Instant::now();
                        crate::print::event(
                            &serde_json::json!({"event": "progress", "disk": disk, "bytes_read": line.bytes}),
                        );
                    }
                }
            }
            Event::Phase { machine, phase } => {
                if self.json {
                    crate::print::event(&serde_json::json!({
                        "event": "phase", "machine": machine, "phase": phase,
                    }));
                } else if shown() {
                    let line = format!("{machine}: {phase}");
                    match &self.multi {
                        Some(m) => {
                            let _ = m.println(line);
                        }
                        None => eprintln!("{line}"),
                    }
                }
            }
            Event::Ended(r) => {
                if let Some(line) = disks.remove(&r.name) {
                    if let (Some(m), Some(b)) = (&self.multi, line.bar) {
                        b.finish_and_clear();
                        m.remove(&b);
                    }
                }
                if let Some(t) = &self.total {
                    t.inc(1);
                    if r.error.is_some() {
                        let _ = self.multi.as_ref().map(|m| {
                            m.println(format!(
                                "{}: {}",
                                r.name,
                                r.error.as_deref().unwrap_or_default()
                            ))
                        });
                    }
                }
                if self.json {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        // The event is named by the outcome: finished, failed, ...
                        let kind = match r.status {
                            ebs2azure::plan::report::DiskStatus::Finished
                            | ebs2azure::plan::report::DiskStatus::FinishedEarlier => "finished",
                            ebs2azure::plan::report::DiskStatus::Failed => "failed",
                            ebs2azure::plan::report::DiskStatus::Interrupted => "interrupted",
                            ebs2azure::plan::report::DiskStatus::Excluded => "excluded",
                            ebs2azure::plan::report::DiskStatus::NotRun => "not_run",
                            ebs2azure::plan::report::DiskStatus::Seeded => "seeded",
                            ebs2azure::plan::report::DiskStatus::Synced => "synced",
                        };
                        o.insert("event".into(), kind.into());
                    }
                    crate::print::event(&v);
                }
            }
        }
    }

    /// Clears the display.
    pub fn finish(&self) {
        if let Some(t) = &self.total {
            t.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
