//! The process's interrupt request. The binary points it at the flag its
//! SIGINT/SIGTERM handlers set; long local work that has no stop switch of
//! its own (reading and editing a mounted guest) checks it between steps and
//! stops with an error, so that it unwinds (filesystems unmounted, loop
//! devices detached) instead of dying where it stands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes `flag` the process's interrupt request (the first call wins).
pub fn watch(flag: Arc<AtomicBool>) {
    let _ = FLAG.set(flag);
}

/// True once an interrupt was asked for.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}
