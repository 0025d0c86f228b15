//! One progress display for every command: a bar with a total and an ETA
//! when the bytes to move are known, a running count otherwise, a line per
//! step for work in steps; on standard error, and only on a terminal.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

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
        let terminal = std::io::stderr().is_terminal();
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
    /// and counts its bytes afresh.
    pub fn step(&self, label: &str, step: &str) {
        let mut bar = self.bar.lock().unwrap_or_else(PoisonError::into_inner);
        bar.finish_and_clear();
        if self.terminal {
            eprintln!("{label}: {step}");
        }
        *bar = self::bar(self.terminal, None, self.verb);
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
            format!("{{spinner}} [{{elapsed_precise}}] {{bytes}} {verb} ({{bytes_per_sec}})"),
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
