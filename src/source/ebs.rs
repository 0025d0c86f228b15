//! EBS snapshots read through the EBS direct APIs (ListSnapshotBlocks,
//! GetSnapshotBlock): only written blocks are fetched, each checked against
//! its SHA-256, with expiring tokens refreshed, throttling absorbed by an
//! adaptive in-flight limit, every request under a timeout and the whole run
//! under one retry budget (the SDK's own retries are off: none nest).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError;
use aws_sdk_ebs::operation::list_snapshot_blocks::ListSnapshotBlocksError;
use aws_sdk_ebs::types::{ChecksumAlgorithm, ValidationExceptionReason};
use aws_sdk_ebs::Client;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{BlockSource, Error};

/// Blocks per ListSnapshotBlocks page (the service's maximum).
const PAGE: i32 = 10_000;
/// Blocks asked for when refreshing one block's token.
const REFRESH_PAGE: i32 = 100;
/// Times one block may fail its checksum before the run stops.
const CHECKSUM_ATTEMPTS: u32 = 3;
/// Times one block's token may be refreshed.
const TOKEN_REFRESHES: u32 = 3;
/// Empty list pages in a row accepted before the listing is deemed broken.
const MAX_EMPTY_PAGES: u32 = 1000;

/// How to reach EBS and how hard to push it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// AWS region (otherwise the default chain's: AWS_REGION, the profile, IMDS).
    pub region: Option<String>,
    /// Named profile (otherwise AWS_PROFILE or `default`).
    pub profile: Option<String>,
    /// Endpoint override, e.g. an emulator (AWS_ENDPOINT_URL(_EBS) work too).
    pub endpoint_url: Option<String>,
    /// Limit on one request attempt, from connect to the last byte.
    pub request_timeout: Duration,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Most GetSnapshotBlock requests in flight (lowered while throttled).
    pub max_in_flight: usize,
    /// First backoff delay; doubles per retry of a call, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_max: Duration,
    /// Retries allowed for the whole run, all calls together.
    pub retry_budget: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            region: None,
            profile: None,
            endpoint_url: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 64,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(20),
            retry_budget: 1000,
        }
    }
}

/// The documented request quotas, shared by every snapshot of a run: they
/// are per snapshot (GetSnapshotBlock) and per account (list calls), not per
/// process.
#[derive(Debug)]
pub struct Quotas {
    get_per_snapshot: f64,
    list_per_account: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Quotas {
    /// Quotas with the service's published limits: 1,000 GetSnapshotBlock
    /// requests per second per snapshot, 50 list requests per second per account.
    pub fn published() -> Arc<Quotas> {
        Quotas::new(1000.0, 50.0)
    }

    /// Quotas with other rates (requests per second).
    pub fn new(get_per_snapshot: f64, list_per_account: f64) -> Arc<Quotas> {
        Arc::new(Quotas {
            get_per_snapshot,
            list_per_account,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Waits until one request under `key` fits in `rate` per second.
    fn wait(&self, key: &str, rate: f64) {
        if rate <= 0.0 {
            return;
        }
        let wait = {
            let Ok(mut buckets) = self.buckets.lock() else {
                return;
            };
            let now = Instant::now();
            // Looked up by &str: no allocation per request once the bucket exists.
            if !buckets.contains_key(key) {
                buckets.insert(
                    key.to_owned(),
                    Bucket {
                        tokens: rate,
                        at: now,
                    },
                );
            }
            let Some(b) = buckets.get_mut(key) else {
                return;
            };
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
            b.at = now;
            b.tokens -= 1.0; // reserve: later callers queue behind
            if b.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-b.tokens / rate)
        };
        std::thread::sleep(wait);
    }
}

/// An in-flight limit that halves when throttled and grows by one per
/// window of successes (AIMD), between 1 and the configured maximum.
#[derive(Debug)]
struct InFlight {
    state: Mutex<(f64, usize)>,
    freed: Condvar,
    max: f64,
}

struct Permit<'a>(&'a InFlight);

impl InFlight {
    fn new(max: usize) -> InFlight {
        InFlight {
            state: Mutex::new((max as f64, 0)),
            freed: Condvar::new(),
            max: max.max(1) as f64,
        }
    }

    fn acquire(&self) -> Permit<'_> {
        if let Ok(mut st) = self.state.lock() {
            // Each wait ends when a request in flight finishes, and every request has a timeout.
            while st.1 as f64 >= st.0.floor().max(1.0) {
                st = match self.freed.wait_timeout(st, Duration::from_secs(1)) {
                    Ok((g, _)) => g,
                    Err(_) => return Permit(self),
                };
            }
            st.1 += 1;
        }
        Permit(self)
    }

    fn throttled(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.0 = (st.0 / 2.0).max(1.0);
        }
    }

    fn succeeded(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.0 = (st.0 + 1.0 / st.0).min(self.max);
        }
    }

    #[cfg(test)]
    fn limit(&self) -> usize {
        self.state.lock().map(|st| st.0 as usize).unwrap_or(1)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.1 = st.1.saturating_sub(1);
        }
        self.0.freed.notify_one();
    }
}

/// What went wrong with one call, and what to do about it.
enum Failure {
    /// Slow down and retry.
    Throttled(String),
    /// Retry after a pause.
    Transient(String),
    /// The block or page token expired: get a new one.
    TokenExpired,
    /// Stop the run.
    Fatal(Error),
}

/// Counters for the run report.
#[derive(Debug, Default)]
pub struct EbsCounters {
    /// Requests retried.
    pub retries: AtomicU64,
    /// Throttling answers received.
    pub throttled: AtomicU64,
    /// Block tokens refreshed.
    pub tokens_refreshed: AtomicU64,
    /// Blocks whose checksum did not match (then retried).
    pub checksum_mismatches: AtomicU64,
}

/// One page of a listing.
struct Page {
    blocks: Vec<(u64, String)>,
    next: Option<String>,
}

/// An EBS snapshot as a block source.
pub struct EbsSource {
    snapshot: String,
    region: String,
    client: Client,
    rt: tokio::runtime::Runtime,
    size: u64,
    block_size: u32,
    settings: Settings,
    quotas: Arc<Quotas>,
    in_flight: InFlight,
    retries_left: AtomicU64,
    /// Tokens of listed blocks not read yet (at most about a page).
    tokens: Mutex<HashMap<u64, String>>,
    first_page: Mutex<Option<Page>>,
    /// Retries, throttling and refreshes seen so far.
    pub counters: EbsCounters,
}

impl std::fmt::Debug for EbsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsSource")
            .field("snapshot", &self.snapshot)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// True for ids of the form `snap-` followed by hex digits.
pub fn is_snapshot_id(s: &str) -> bool {
    s.strip_prefix("snap-").is_some_and(|h| {
        !h.is_empty()
            && h.len() <= 59
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl EbsSource {
    /// Connects (default credential chain) and lists the first page of the snapshot.
    pub fn open(
        snapshot: &str,
        settings: &Settings,
        quotas: Arc<Quotas>,
    ) -> Result<EbsSource, Error> {
        if !is_snapshot_id(snapshot) {
            return Err(Error::BadSnapshotId(snapshot.to_owned()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ebs-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;
        let sdk = rt.block_on(load_config(settings));
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            Error::Config("no AWS region is set: pass --region or set AWS_REGION".into())
        })?;
        let client = Client::new(&sdk);
        let mut src = EbsSource {
            snapshot: snapshot.to_owned(),
            region,
            client,
            rt,
            size: 0,
            block_size: 0,
            settings: settings.clone(),
            quotas,
            in_flight: InFlight::new(settings.max_in_flight),
            retries_left: AtomicU64::new(settings.retry_budget),
            tokens: Mutex::new(HashMap::new()),
            first_page: Mutex::new(None),
            counters: EbsCounters::default(),
        };
        let (page, volume_gib, block_size) = src.list(None, None, PAGE)?;
        src.block_size = block_size;
        src.size = volume_gib << 30;
        if let Some(bad) = page
            .blocks
            .iter()
            .find(|(i, _)| (i + 1) * u64::from(block_size) > src.size)
        {
            return Err(src.inconsistent(format!(
                "block {} lies past the end of the {volume_gib} GiB volume",
                bad.0
            )));
        }
        src.first_page = Mutex::new(Some(page));
        Ok(src)
    }

    /// The snapshot id.
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// The region the client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Counts the snapshot's written blocks (a full listing, no data read).
    pub fn count_blocks(&self) -> Result<u64, Error> {
        let mut it = Listing::new(self, false);
        let mut n = 0;
        for b in &mut it {
            b?;
            n += 1;
        }
        Ok(n)
    }

    fn inconsistent(&self, detail: String) -> Error {
        Error::Inconsistent {
            snapshot: self.snapshot.clone(),
            detail,
        }
    }

    /// One ListSnapshotBlocks page, retried; returns (page, volume GiB, block size).
    fn list(
        &self,
        next: Option<String>,
        start: Option<u64>,
        max: i32,
    ) -> Result<(Page, u64, u32), Error> {
        let mut attempt = 0;
        loop {
            self.quotas.wait("list", self.quotas.list_per_account);
            let call = self
                .client
                .list_snapshot_blocks()
                .snapshot_id(&self.snapshot)
                .max_results(max)
                .set_next_token(next.clone())
                .set_starting_block_index(start.map(|s| s.min(i32::MAX as u64) as i32));
            let failure = match self.rt.block_on(call.send()) {
                Ok(out) => {
                    let block_size = out.block_size().unwrap_or(0);
                    let volume = out.volume_size().unwrap_or(0);
                    let bs = u32::try_from(block_size).unwrap_or(0);
                    if !bs.is_power_of_two() || !(4096..=(16 << 20)).contains(&bs) {
                        return Err(self.inconsistent(format!(
                            "block size {block_size} is not a power of two from 4 KiB to 16 MiB"
                        )));
                    }
                    if self.block_size != 0 && bs != self.block_size {
                        return Err(self.inconsistent(format!(
                            "block size changed from {} to {bs} between pages",
                            self.block_size
                        )));
                    }
                    let volume = u64::try_from(volume)
                        .ok()
                        .filter(|&v| v > 0 && v <= 65536)
                        .ok_or_else(|| {
                            self.inconsistent(format!(
                                "volume size {volume} GiB is outside 1..=65536"
                            ))
                        })?;
                    let mut blocks = Vec::with_capacity(out.blocks().len());
                    for b in out.blocks() {
                        let (Some(i), Some(t)) = (b.block_index(), b.block_token()) else {
                            return Err(
                                self.inconsistent("a listed block has no index or token".into())
                            );
                        };
                        let i = u64::try_from(i)
                            .map_err(|_| self.inconsistent(format!("negative block index {i}")))?;
                        if blocks.last().is_some_and(|&(prev, _)| prev >= i) {
                            return Err(
                                self.inconsistent(format!("block {i} is listed out of order"))
                            );
                        }
                        blocks.push((i, t.to_owned()));
                    }
                    let next = out.next_token().map(str::to_owned);
                    return Ok((Page { blocks, next }, volume, bs));
                }
                Err(e) => self.classify(e, None, |e| match e {
                    ListSnapshotBlocksError::ValidationException(v) => {
                        v.reason() == Some(&ValidationExceptionReason::InvalidPageToken)
                    }
                    _ => false,
                }),
            };
            match failure {
                Failure::TokenExpired => return Err(Error::PageTokenExpired),
                f => self.pause(f, &mut attempt, None)?,
            }
        }
    }

    /// A fresh token for `index` (its old one expired); refreshes the tokens of
    /// the listed blocks that follow it too.
    fn refresh_token(&self, index: u64) -> Result<String, Error> {
        self.counters
            .tokens_refreshed
            .fetch_add(1, Ordering::Relaxed);
        let (page, _, _) = self.list(None, Some(index), REFRESH_PAGE)?;
        let mut found = None;
        if let Ok(mut tokens) = self.tokens.lock() {
            for (i, t) in page.blocks {
                if i == index {
                    found = Some(t);
                } else if let Some(slot) = tokens.get_mut(&i) {
                    *slot = t;
                }
            }
        }
        found.ok_or_else(|| self.inconsistent(format!("block {index} is no longer listed")))
    }

    /// Sleeps before a retry, or says the run must stop.
    fn pause(&self, f: Failure, attempt: &mut u32, block: Option<u64>) -> Result<(), Error> {
        let last = match f {
            Failure::Fatal(e) => return Err(e),
            Failure::TokenExpired => return Ok(()),
            Failure::Throttled(m) => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                self.in_flight.throttled();
                m
            }
            Failure::Transient(m) => m,
        };
        let left = self
            .retries_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_err() {
            return Err(Error::RetryBudget {
                snapshot: self.snapshot.clone(),
                block,
                retries: self.settings.retry_budget,
                last,
            });
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let exp = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << (*attempt).min(16));
        let cap = exp.min(self.settings.backoff_max);
        // Equal jitter: half fixed, half random, so retries spread out but still back off.
        std::thread::sleep(cap / 2 + cap.mul_f64(jitter() / 2.0));
        *attempt += 1;
        Ok(())
    }

    /// Sorts an SDK error into what to do next.
    fn classify<E>(
        &self,
        err: SdkError<E, aws_sdk_ebs::config::http::HttpResponse>,
        block: Option<u64>,
        token_expired: impl Fn(&E) -> bool,
    ) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let snapshot = self.snapshot.clone();
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let e = se.err();
                let code = e.code().unwrap_or("unknown").to_owned();
                let message = e.message().unwrap_or("").to_owned();
                if token_expired(e) {
                    return Failure::TokenExpired;
                }
                match code.as_str() {
                    "RequestThrottledException"
                    | "ThrottlingException"
                    | "ServiceQuotaExceededException"
                    | "TooManyRequestsException" => {
                        Failure::Throttled(format!("{code}: {message}"))
                    }
                    _ if status == 429 || status == 402 => {
                        Failure::Throttled(format!("{code}: {message}"))
                    }
                    _ if status >= 500 => {
                        Failure::Transient(format!("{code} (HTTP {status}): {message}"))
                    }
                    "ResourceNotFoundException" => Failure::Fatal(Error::SnapshotNotFound {
                        snapshot,
                        region: self.region.clone(),
                    }),
                    "AccessDeniedException" => {
                        Failure::Fatal(Error::AccessDenied { snapshot, message })
                    }
                    "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "MissingAuthenticationTokenException" => Failure::Fatal(Error::Credentials {
                        message: format!("{code}: {message}"),
                    }),
                    _ => Failure::Fatal(Error::Service {
                        snapshot,
                        block,
                        code,
                        message,
                    }),
                }
            }
            _ if missing_credentials(&err) => Failure::Fatal(Error::Credentials {
                message: "no usable AWS credentials were found".into(),
            }),
            SdkError::TimeoutError(_) => Failure::Transient("the request timed out".into()),
            SdkError::ResponseError(_) => Failure::Transient(format!(
                "the answer was cut off: {}",
                DisplayErrorContext(&err)
            )),
            // Refused, reset or dropped connections: anything but a mistake of ours.
            SdkError::DispatchFailure(d) if !d.is_user() => {
                Failure::Transient(format!("connection failed: {}", DisplayErrorContext(&err)))
            }
            _ => Failure::Fatal(Error::Config(DisplayErrorContext(&err).to_string())),
        }
    }

    /// One GetSnapshotBlock attempt, streamed into `buf` and hashed as it
    /// arrives (no second copy of the block is held).
    fn get_once(&self, index: u64, token: &str, buf: &mut [u8]) -> Result<Fetched, Failure> {
        let call = self
            .client
            .get_snapshot_block()
            .snapshot_id(&self.snapshot)
            .block_index(index as i32)
            .block_token(token);
        self.rt.block_on(async {
            let mut out = match call.send().await {
                Ok(o) => o,
                Err(e) => {
                    return Err(self.classify(e, Some(index), |e| match e {
                        GetSnapshotBlockError::ValidationException(v) => {
                            v.reason() == Some(&ValidationExceptionReason::InvalidBlockToken)
                        }
                        _ => false,
                    }))
                }
            };
            let (mut len, mut hasher) = (0usize, Sha256::new());
            while let Some(chunk) = out.block_data.next().await {
                let chunk = chunk.map_err(|e| {
                    Failure::Transient(format!("the block's data was cut off: {e}"))
                })?;
                let end = len + chunk.len();
                if end > buf.len() {
                    return Err(Failure::Transient(format!(
                        "block {index} came with more than {} bytes",
                        buf.len()
                    )));
                }
                buf[len..end].copy_from_slice(&chunk);
                hasher.update(&chunk);
                len = end;
            }
            let expected = out.checksum().unwrap_or("");
            let sha256 =
                out.checksum_algorithm() == Some(&ChecksumAlgorithm::ChecksumAlgorithmSha256);
            let actual = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
            Ok(Fetched {
                len,
                checksum_ok: sha256 && expected == actual,
            })
        })
    }
}

/// What one fetch put into the buffer.
struct Fetched {
    len: usize,
    /// The SHA-256 of the bytes matches the service's checksum.
    checksum_ok: bool,
}

async fn load_config(s: &Settings) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s.connect_timeout)
        .read_timeout(s.request_timeout)
        .operation_attempt_timeout(s.request_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(u) = &s.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    loader.load().await
}

/// True when the SDK could not find or load credentials (its messages say so).
fn missing_credentials<E: std::error::Error + 'static, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> bool {
    let text = DisplayErrorContext(err).to_string();
    matches!(
        err,
        SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_)
    ) && (text.contains("credentials") || text.contains("identity"))
}

/// A number in [0, 1) from the standard library's randomly keyed hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Lists a snapshot's blocks page by page, lazily; optionally keeps their
/// tokens for [`BlockSource::read_block`].
struct Listing<'a> {
    src: &'a EbsSource,
    keep_tokens: bool,
    queue: VecDeque<u64>,
    next: Option<String>,
    last: Option<u64>,
    started: bool,
    done: bool,
}

impl<'a> Listing<'a> {
    fn new(src: &'a EbsSource, keep_tokens: bool) -> Listing<'a> {
        Listing {
            src,
            keep_tokens,
            queue: VecDeque::new(),
            next: None,
            last: None,
            started: false,
            done: false,
        }
    }

    fn fetch(&mut self) -> Result<(), Error> {
        let page = if !self.started {
            self.started = true;
            match self.src.first_page.lock().ok().and_then(|mut p| p.take()) {
                Some(p) => p,
                None => self.src.list(None, None, PAGE)?.0,
            }
        } else {
            match self.src.list(self.next.clone(), None, PAGE) {
                Ok((p, _, _)) => p,
                // An hour-old page token: carry on after the last block listed.
                Err(Error::PageTokenExpired) => {
                    self.src.list(None, self.last.map(|l| l + 1), PAGE)?.0
                }
                Err(e) => return Err(e),
            }
        };
        if let (Some(last), Some(&(first, _))) = (self.last, page.blocks.first()) {
            if first <= last {
                return Err(self
                    .src
                    .inconsistent(format!("block {first} was listed again after block {last}")));
            }
        }
        self.next = page.next;
        self.done = self.next.is_none();
        // The page's tokens go where a refresh can renew them, until each block is read.
        if self.keep_tokens {
            if let Ok(mut t) = self.src.tokens.lock() {
                t.extend(page.blocks.iter().map(|(i, tok)| (*i, tok.clone())));
            }
        }
        self.queue.extend(page.blocks.into_iter().map(|(i, _)| i));
        Ok(())
    }
}

impl Iterator for Listing<'_> {
    type Item = Result<u64, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        // Empty pages are allowed ("can return an empty array"): keep going while
        // a token remains, but not forever.
        let mut empty_pages = 0;
        while self.queue.is_empty() {
            if self.done && self.started {
                return None;
            }
            empty_pages += 1;
            let result = if empty_pages > MAX_EMPTY_PAGES {
                Err(self
                    .src
                    .inconsistent(format!("{MAX_EMPTY_PAGES} pages in a row listed no block")))
            } else {
                self.fetch()
            };
            if let Err(e) = result {
                self.done = true;
                self.started = true;
                return Some(Err(e));
            }
        }
        let index = self.queue.pop_front()?;
        self.last = Some(index);
        Some(Ok(index))
    }
}

impl BlockSource for EbsSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, Error>> + Send + '_> {
        Box::new(Listing::new(self, true))
    }

    fn preferred_concurrency(&self) -> std::num::NonZeroUsize {
        std::num::NonZeroUsize::new(self.settings.max_in_flight)
            .unwrap_or(std::num::NonZeroUsize::MIN)
    }

    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let token = self.tokens.lock().ok().and_then(|mut t| t.remove(&index));
        let mut token = match token {
            Some(t) => t,
            None => self.refresh_token(index)?,
        };
        let (mut attempt, mut refreshes, mut mismatches) = (0u32, 0u32, 0u32);
        loop {
            let result = {
                let _permit = self.in_flight.acquire();
                self.quotas
                    .wait(&self.snapshot, self.quotas.get_per_snapshot);
                self.get_once(index, &token, buf)
            };
            let failure = match result {
                Ok(f) if f.len != self.block_size as usize => Failure::Transient(format!(
                    "block {index} came with {} bytes, not {}",
                    f.len, self.block_size
                )),
                Ok(f) if !f.checksum_ok => {
                    self.counters
                        .checksum_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    mismatches += 1;
                    if mismatches >= CHECKSUM_ATTEMPTS {
                        return Err(Error::Checksum {
                            snapshot: self.snapshot.clone(),
                            block: index,
                            attempts: mismatches,
                        });
                    }
                    Failure::Transient(format!("block {index} failed its SHA-256 check"))
                }
                Ok(f) => {
                    self.in_flight.succeeded();
                    return Ok(&buf[..f.len]);
                }
                Err(f) => f,
            };
            if let Failure::TokenExpired = failure {
                refreshes += 1;
                if refreshes > TOKEN_REFRESHES {
                    return Err(self.inconsistent(format!(
                        "block {index}'s token was refused after {TOKEN_REFRESHES} refreshes"
                    )));
                }
                token = self.refresh_token(index)?;
                continue;
            }
            self.pause(failure, &mut attempt, Some(index))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids() {
        assert!(is_snapshot_id("snap-0123456789abcdef0"));
        assert!(!is_snapshot_id("snap-"));
        assert!(!is_snapshot_id("snap-XYZ"));
        assert!(!is_snapshot_id("disk.raw"));
        assert!(!is_snapshot_id("snap-0123456789ABCDEF0"));
    }

    #[test]
    fn aimd_halves_and_recovers_within_bounds() {
        let f = InFlight::new(64);
        f.throttled();
        f.throttled();
        assert_eq!(f.limit(), 16);
        for _ in 0..10_000 {
            f.succeeded();
        }
        assert_eq!(f.limit(), 64);
        for _ in 0..20 {
            f.throttled();
        }
        assert_eq!(f.limit(), 1);
    }

    #[test]
    fn quotas_space_requests_out() {
        let q = Quotas::new(100.0, 0.0);
        let t = Instant::now();
        for _ in 0..150 {
            q.wait("s", q.get_per_snapshot);
        }
        // 100 in the first burst, then 50 more at 100/s: about half a second.
        let took = t.elapsed();
        // Only the lower bound is a property of the limiter; the upper one depends on the machine.
        assert!(took >= Duration::from_millis(400), "{took:?}");
        q.wait("list", q.list_per_account); // rate 0: never waits
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
