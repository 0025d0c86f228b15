//! One Azure session per run: the I/O runtime, the token source, the
//! Resource Manager client, the page-blob client and the run's retry
//! budget, built once and shared by every upload, resume and verification
//! of the run. Every call made through it is retried under that budget:
//! ARM calls in [`Arm`], Put Page in the managed-disk sink (which also
//! renews its SAS), and the reads and page-range listings here.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::arm::Arm;
use super::page_blob::{self, PageBlob};
use super::token::{self, TokenSource};
use super::{Error, RetryBudget, Secret, Settings};

/// Everything a run needs to talk to Azure.
pub struct Session {
    rt: tokio::runtime::Runtime,
    arm: Arc<Arm>,
    blob: PageBlob,
    budget: Arc<RetryBudget>,
    settings: Settings,
}

impl Session {
    /// A session with ARM tokens from `token_file`, else the environment,
    /// else azure_identity's credentials; and tokens for disks that want one
    /// beside their SAS from `disk_token_file`, else likewise.
    pub fn new(
        settings: &Settings,
        token_file: Option<&Path>,
        disk_token_file: Option<&Path>,
    ) -> Result<Session, Error> {
        Session::with_tokens(
            settings,
            token::from_args(token_file)?,
            token::disk_from_args(disk_token_file)?,
        )
    }

    /// A session with the given token sources, for Resource Manager and for
    /// disks' upload and read URLs (injected, as tests and library users may).
    pub fn with_tokens(
        settings: &Settings,
        tokens: Arc<dyn TokenSource>,
        disk_tokens: Arc<dyn TokenSource>,
    ) -> Result<Session, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("azure-io")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let budget = Arc::new(RetryBudget::new(
            settings.retry_budget,
            settings.stall_timeout,
        ));
        Ok(Session {
            arm: Arc::new(Arm::new(settings, tokens, budget.clone())?),
            blob: PageBlob::new(settings, disk_tokens)?,
            rt,
            budget,
            settings: settings.clone(),
        })
    }

    /// Runs `f` to its end on the session's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The runtime's handle, for blocking calls from worker threads.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// The Resource Manager client.
    pub fn arm(&self) -> &Arc<Arm> {
        &self.arm
    }

    /// The page-blob client (one attempt per call; see [`Session::read`]).
    pub fn blob(&self) -> &PageBlob {
        &self.blob
    }

    /// The run's retry budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The session's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The credential in use, for reports (never the token).
    pub fn credential(&self) -> String {
        self.arm.credential()
    }

    /// Reads `len` bytes at `offset` of the blob behind `sas`, retried.
    pub async fn read(&self, sas: &Secret, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        self.retried(sas, || self.blob.read(sas, offset, len)).await
    }

    /// The written page ranges of `disk`'s blob (of `size` bytes) behind
    /// `sas`, retried, checked (sorted, aligned, in bounds) and merged.
    pub async fn page_ranges(
        &self,
        sas: &Secret,
        disk: &str,
        size: u64,
    ) -> Result<Vec<Range<u64>>, Error> {
        let listed = self.retried(sas, || self.blob.page_ranges(sas)).await?;
        page_blob::check_listing(&listed, size).map_err(|detail| Error::Protocol {
            what: format!("listing the written page ranges of disk {disk}"),
            detail,
        })?;
        Ok(page_blob::merge(listed))
    }

    /// Runs `call` (a blob call through `sas`) until it succeeds, fails for
    /// good, or the call's attempts, the run's budget or the stall rule end it.
    async fn retried<T, F, Fut>(&self, sas: &Secret, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            match call().await {
                Ok(v) => {
                    self.budget.succeeded();
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    let failed = super::Failed {
                        attempt: &mut attempt,
                        started,
                        url: sas.expose(),
                        error: e,
                    };
                    super::back_off(&self.budget, &self.settings, failed).await?
                }
                Err(e) => return Err(e),
            }
        }
    }
}
