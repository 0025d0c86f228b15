//! An Azure managed disk in its upload state as a block sink: each write
//! becomes Put Page requests of at most 4 MiB through the disk's write SAS,
//! retried on 5xx and timeouts under the run's budget, with the SAS renewed
//! when it expires. `finish` writes the VHD footer and ends the upload.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use super::{BlockSink, Error};
use crate::azure::arm::{Access, Arm, DiskRef, DiskState};
use crate::azure::page_blob::{PageBlob, MAX_PUT_PAGE, PAGE};
use crate::azure::{back_off, Failed, RetryBudget, Secret, Session, Settings};

/// Most SAS renewals in one run (each is an ARM call; a SAS refused right
/// after renewal means something else is wrong).
const MAX_SAS_RENEWALS: u64 = 100;

/// What an upload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UploadStats {
    /// Put Page requests that succeeded.
    pub put_requests: u64,
    /// Bytes those requests carried (the footer included).
    pub bytes_sent: u64,
    /// Bytes not sent because a resumed upload had written them already.
    pub bytes_already_there: u64,
    /// Times the SAS was renewed.
    pub sas_renewals: u64,
    /// Clear Page requests that succeeded (a delta sync zeroing old data).
    #[serde(default)]
    pub clear_requests: u64,
    /// Bytes those requests cleared (none of them sent).
    #[serde(default)]
    pub bytes_cleared: u64,
}

/// A managed disk being uploaded.
pub struct ManagedDiskSink {
    rt: tokio::runtime::Handle,
    arm: Arc<Arm>,
    disk: DiskRef,
    blob: PageBlob,
    /// The write SAS and its generation (bumped on each renewal).
    sas: RwLock<(Secret, u64)>,
    renewing: tokio::sync::Mutex<()>,
    /// Ranges a resumed upload finds written; writes inside them are skipped.
    written: Vec<Range<u64>>,
    settings: Settings,
    budget: Arc<RetryBudget>,
    put_requests: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_already_there: AtomicU64,
    sas_renewals: AtomicU64,
    clear_requests: AtomicU64,
    bytes_cleared: AtomicU64,
}

impl ManagedDiskSink {
    /// A sink writing to `disk` through `sas` in `session`; `written` lists
    /// ranges already there (resume).
    pub fn new(
        session: &Session,
        disk: DiskRef,
        sas: Secret,
        written: Vec<Range<u64>>,
    ) -> ManagedDiskSink {
        ManagedDiskSink {
            rt: session.handle(),
            arm: session.arm().clone(),
            disk,
            blob: session.blob().clone(),
            sas: RwLock::new((sas, 0)),
            renewing: tokio::sync::Mutex::new(()),
            written: crate::azure::page_blob::merge(written),
            settings: session.settings().clone(),
            budget: session.budget().clone(),
            put_requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_already_there: AtomicU64::new(0),
            sas_renewals: AtomicU64::new(0),
            clear_requests: AtomicU64::new(0),
            bytes_cleared: AtomicU64::new(0),
        }
    }

    /// What was sent so far.
    pub fn stats(&self) -> UploadStats {
        UploadStats {
            put_requests: self.put_requests.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_already_there: self.bytes_already_there.load(Ordering::Relaxed),
            sas_renewals: self.sas_renewals.load(Ordering::Relaxed),
            clear_requests: self.clear_requests.load(Ordering::Relaxed),
            bytes_cleared: self.bytes_cleared.load(Ordering::Relaxed),
        }
    }

    fn azure(&self, source: crate::azure::Error) -> Error {
        Error::Azure {
            disk: self.disk.name.clone(),
            source,
        }
    }

    fn current_sas(&self) -> (Secret, u64) {
        let g = self.sas.read().unwrap_or_else(PoisonError::into_inner);
        (g.0.clone(), g.1)
    }

    /// Replaces SAS generation `seen` with a fresh one (once, however many
    /// writers saw it refused).
    async fn renew(&self, seen: u64) -> Result<(), crate::azure::Error> {
        let _one = self.renewing.lock().await;
        if self.current_sas().1 != seen {
            return Ok(());
        }
        let n = self.sas_renewals.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_SAS_RENEWALS {
            return Err(crate::azure::Error::Operation {
                what: "renewing the write SAS".into(),
                detail: format!("it was refused after {MAX_SAS_RENEWALS} renewals"),
            });
        }
        tracing::info!(disk = %self.disk.name, "the write SAS was refused (expired); asking for a new one");
        let fresh = self.arm.begin_access(&self.disk, Access::Write).await?;
        // A writer that panicked cannot leave the pair half-set: take it anyway.
        *self.sas.write().unwrap_or_else(PoisonError::into_inner) = (fresh, seen + 1);
        Ok(())
    }

    /// One Put Page (an update with `data`, or a clear of `clear` bytes),
    /// retried and with the SAS renewed as needed.
    async fn put_or_clear(
        &self,
        offset: u64,
        data: bytes::Bytes,
        clear: u64,
    ) -> Result<(), crate::azure::Error> {
        let mut attempt = 0;
        loop {
            let (sas, generation) = self.current_sas();
            let started = std::time::Instant::now();
            let sent = if clear > 0 {
                self.blob.clear_pages(&sas, offset, clear).await
            } else {
                self.blob.put_page(&sas, offset, data.clone()).await
            };
            if sent.is_ok() {
                self.budget.succeeded();
            }
            match sent {
                Ok(()) if clear > 0 => {
                    self.clear_requests.fetch_add(1, Ordering::Relaxed);
                    self.bytes_cleared.fetch_add(clear, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(()) => {
                    self.put_requests.fetch_add(1, Ordering::Relaxed);
                    self.bytes_sent
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.is_sas_refused() => self.renew(generation).await?,
                Err(e) if e.is_retryable() => {
                    let failed = Failed {
                        attempt: &mut attempt,
                        started,
                        url: sas.expose(),
                        error: e,
                    };
                    back_off(&self.budget, &self.settings, failed).await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// True when a resumed upload already holds `range`.
    fn already_written(&self, range: &Range<u64>) -> bool {
        let i = self.written.partition_point(|r| r.end < range.end);
        self.written
            .get(i)
            .is_some_and(|r| r.start <= range.start && range.end <= r.end)
    }

    async fn put(&self, offset: u64, data: bytes::Bytes) -> Result<(), crate::azure::Error> {
        self.put_or_clear(offset, data, 0).await
    }

    /// Writes the footer at `size` and leaves the disk open for more writes
    /// (a pre-seed, a delta sync): the disk stays in its upload state.
    pub fn write_footer(&self, size: u64, footer: &[u8; 512]) -> Result<UploadStats, Error> {
        self.rt
            .block_on(self.put(size, bytes::Bytes::copy_from_slice(footer)))
            .map_err(|e| self.azure(e))?;
        Ok(self.stats())
    }

    /// Writes the footer at `size`, ends the upload and checks the disk is Unattached.
    pub fn finish(&self, size: u64, footer: &[u8; 512]) -> Result<UploadStats, Error> {
        self.write_footer(size, footer)?;
        self.rt
            .block_on(async {
                self.arm.end_access(&self.disk).await?;
                let state = self
                    .arm
                    .get(&self.disk)
                    .await?
                    .map(|d| d.state)
                    .unwrap_or_else(|| DiskState::Other("gone".into()));
                if state != DiskState::Unattached {
                    return Err(crate::azure::Error::State {
                        disk: self.disk.name.clone(),
                        state,
                        advice: "the upload ended but the disk is not Unattached; look at it in the portal".into(),
                    });
                }
                Ok(())
            })
            .map_err(|e| self.azure(e))?;
        Ok(self.stats())
    }
}

impl BlockSink for ManagedDiskSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.write_bytes(offset, bytes::Bytes::copy_from_slice(data))
    }

    /// Each chunk of at most 4 MiB goes out as a slice of `data`, not a copy.
    fn write_bytes(&self, offset: u64, data: bytes::Bytes) -> Result<(), Error> {
        if !offset.is_multiple_of(PAGE) || !(data.len() as u64).is_multiple_of(PAGE) {
            return Err(Error::Unaligned {
                disk: self.disk.name.clone(),
                offset,
                len: data.len(),
            });
        }
        for start in (0..data.len()).step_by(MAX_PUT_PAGE) {
            let chunk = data.slice(start..(start + MAX_PUT_PAGE).min(data.len()));
            let at = offset + start as u64;
            let range = at..at + chunk.len() as u64;
            if self.already_written(&range) {
                self.bytes_already_there
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                continue;
            }
            self.rt
                .block_on(self.put(at, chunk))
                .map_err(|e| self.azure(e))?;
        }
        Ok(())
    }

    fn clear_at(&self, offset: u64, len: u64) -> Result<(), Error> {
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(Error::Unaligned {
                disk: self.disk.name.clone(),
                offset,
                len: len as usize,
            });
        }
        if len == 0 {
            return Ok(());
        }
        self.rt
            .block_on(self.put_or_clear(offset, bytes::Bytes::new(), len))
            .map_err(|e| self.azure(e))
    }
}
