//! EBS snapshots read through the EBS direct APIs (ListSnapshotBlocks,
//! GetSnapshotBlock): only written blocks are fetched, each checked against
//! its SHA-256, with expiring tokens refreshed, throttling absorbed by an
//! adaptive in-flight limit, every request under a timeout and the whole run
//! under one retry budget (the SDK's own retries are off: none nest).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ebs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError;
use aws_sdk_ebs::operation::list_changed_blocks::ListChangedBlocksError;
use aws_sdk_ebs::operation::list_snapshot_blocks::ListSnapshotBlocksError;
use aws_sdk_ebs::types::{ChecksumAlgorithm, ValidationExceptionReason};
use aws_sdk_ebs::Client;
use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify, Semaphore};

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
/// Fetched blocks waiting for the copy workers.
const READY_BLOCKS: usize = 8;
/// Blocks being received at once. Requests waiting on the network hold no
/// block memory, so many can be in flight while memory stays at this many
/// blocks plus the ready ones (about 24 MiB at EBS's 512 KiB).
const RECEIVING_BLOCKS: usize = 16;

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
    /// GetSnapshotBlock requests in flight (lowered while throttled).
    pub in_flight: InFlightPolicy,
    /// GetSnapshotBlock requests per second per snapshot that requests are
    /// paced to (the account's quota; AWS publishes 1,000).
    pub ebs_quota: f64,
    /// First backoff delay; doubles per retry of a call, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_max: Duration,
    /// Retries allowed for the whole run, all calls together.
    pub retry_budget: u64,
    /// Attempts of one call (a block, a listing page) before the run gives
    /// that disk up: an endpoint that stays unreachable ends the run in
    /// about a minute, not when the run's budget is spent hours later.
    pub attempts_per_call: u32,
    /// The stall rule: once every request to EBS has failed for this long,
    /// none succeeding, the run stops and says so; no single request waits
    /// longer either.
    pub stall_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            region: None,
            profile: None,
            endpoint_url: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            in_flight: InFlightPolicy::Adaptive {
                cap: DEFAULT_IN_FLIGHT_CAP,
            },
            ebs_quota: PUBLISHED_GET_PER_SNAPSHOT,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(20),
            retry_budget: 1000,
            attempts_per_call: 10,
            stall_timeout: crate::retry::DEFAULT_STALL,
        }
    }
}

/// GetSnapshotBlock requests per second per snapshot, as AWS publishes it.
pub const PUBLISHED_GET_PER_SNAPSHOT: f64 = 1000.0;
/// The most requests in flight an adaptive policy asks for by default:
/// 1,000 requests/s at a 400 ms round trip, with headroom.
pub const DEFAULT_IN_FLIGHT_CAP: usize = 512;
/// List requests per second per account, as AWS publishes it.
const PUBLISHED_LIST_PER_ACCOUNT: f64 = 50.0;

/// The documented request quotas, shared by every snapshot of a run: they
/// are per snapshot (GetSnapshotBlock) and per account (list calls), not per
/// process.
#[derive(Debug)]
pub struct Quotas {
    list_per_account: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// GetSnapshotBlock requests in flight for the whole run, all snapshots
    /// together (a fleet's one budget); `None`: each snapshot its own.
    run_in_flight: Option<Arc<Semaphore>>,
    /// Retries for the whole run, all snapshots together; `None`: each
    /// snapshot its own budget.
    run_retries: Option<Arc<crate::retry::Budget>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Quotas {
    /// Quotas with the service's published list limit: 50 list requests per
    /// second per account (GetSnapshotBlock's, per snapshot, is each
    /// source's [`Settings::ebs_quota`]).
    pub fn published() -> Arc<Quotas> {
        Quotas::new(PUBLISHED_LIST_PER_ACCOUNT)
    }

    /// Quotas with another list rate (requests per second).
    pub fn new(list_per_account: f64) -> Arc<Quotas> {
        Arc::new(Quotas {
            list_per_account,
            buckets: Mutex::new(HashMap::new()),
            run_in_flight: None,
            run_retries: None,
        })
    }

    /// The published quotas, plus one bound on requests in flight and one
    /// retry budget for every snapshot read in the run: many disks share
    /// what one disk alone would have.
    pub fn shared(in_flight: usize, retries: u64, stall: Duration) -> Arc<Quotas> {
        Arc::new(Quotas {
            list_per_account: PUBLISHED_LIST_PER_ACCOUNT,
            buckets: Mutex::new(HashMap::new()),
            run_in_flight: Some(Arc::new(Semaphore::new(in_flight.max(1)))),
            run_retries: Some(Arc::new(crate::retry::Budget::new(retries, stall))),
        })
    }

    /// Reserves one request under `key` at `rate` per second and returns how
    /// long the caller must wait before sending it.
    fn reserve(&self, key: &str, rate: f64) -> Duration {
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Looked up by &str: no allocation per request once the bucket exists.
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: burst(rate),
                    at: now,
                },
            );
        }
        let Some(b) = buckets.get_mut(key) else {
            return Duration::ZERO;
        };
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst(rate));
        b.at = now;
        b.tokens -= 1.0; // reserve: later callers queue behind
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Waits until one request under `key` fits in `rate` per second.
    async fn wait(&self, key: &str, rate: f64) {
        let wait = self.reserve(key, rate);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Requests a bucket at `rate` per second lets through at once: a tenth of
/// a second's worth. A whole second's burst, sent at once, reaches the
/// service bunched up and is throttled even though the second's average is
/// under the quota (measured: `scripts/bench-ebs` was throttled down to a
/// third of its limit at 200 ms with one-second bursts).
fn burst(rate: f64) -> f64 {
    (rate / 10.0).max(1.0)
}

/// How many GetSnapshotBlock requests one snapshot keeps in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InFlightPolicy {
    /// What the quota needs at the measured round trip (Little's law:
    /// requests in flight = rate x round trip), a quarter more as headroom,
    /// from [`MIN_ADAPTIVE`] to `cap`.
    Adaptive {
        /// The most, whatever the round trip.
        cap: usize,
    },
    /// This many, whatever the round trip.
    Fixed(usize),
}

impl InFlightPolicy {
    /// The most requests in flight this policy can ask for.
    pub fn cap(self) -> usize {
        match self {
            InFlightPolicy::Adaptive { cap } | InFlightPolicy::Fixed(cap) => cap.max(1),
        }
    }
}

/// The fewest requests an adaptive policy keeps in flight.
pub const MIN_ADAPTIVE: usize = 8;
/// The round trip assumed until one is measured: a client near its region.
const FIRST_RTT: Duration = Duration::from_millis(100);
/// Weight of a new round-trip sample in the moving average.
const RTT_WEIGHT: f64 = 0.1;

/// The limit on requests in flight: a ceiling (fixed, or from the quota and
/// the measured round trip) times a factor that halves when throttled and
/// grows back by one request per window of successes (AIMD).
#[derive(Debug)]
struct InFlight {
    state: Mutex<FlightState>,
    freed: Notify,
    policy: InFlightPolicy,
    /// GetSnapshotBlock requests per second the pacing allows.
    rate: f64,
}

#[derive(Debug)]
struct FlightState {
    /// The limit before throttling: what the round trip needs, or the fixed count.
    ceiling: f64,
    /// The share of the ceiling allowed, (0, 1]: halved when throttled.
    factor: f64,
    /// Requests in flight.
    busy: usize,
    /// The moving average of the round trip, in seconds.
    rtt: f64,
}

struct Permit<'a>(&'a InFlight);

impl InFlight {
    fn new(policy: InFlightPolicy, rate: f64) -> InFlight {
        let f = InFlight {
            state: Mutex::new(FlightState {
                ceiling: 1.0,
                factor: 1.0,
                busy: 0,
                rtt: FIRST_RTT.as_secs_f64(),
            }),
            freed: Notify::new(),
            policy,
            rate,
        };
        {
            let mut st = f.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.ceiling = f.ceiling(st.rtt);
        }
        f
    }

    /// The ceiling at round trip `rtt` (seconds).
    fn ceiling(&self, rtt: f64) -> f64 {
        match self.policy {
            InFlightPolicy::Fixed(n) => n.max(1) as f64,
            InFlightPolicy::Adaptive { cap } => {
                crate::littles_law::in_flight(self.rate, rtt, MIN_ADAPTIVE, cap) as f64
            }
        }
    }

    /// Waits for room under the current limit.
    async fn acquire(&self) -> Permit<'_> {
        // Each wait ends when a request in flight finishes (every request has a
        // timeout), or after a second, when the limit is looked at again.
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if (st.busy as f64) < (st.ceiling * st.factor).floor().max(1.0) {
                    st.busy += 1;
                    return Permit(self);
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), freed).await;
        }
    }

    fn throttled(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.factor = (st.factor / 2.0).max(1.0 / st.ceiling);
    }

    /// A request answered after `rtt`: the round trip is learned, and the
    /// limit grows back by one request per window of them.
    fn succeeded(&self, rtt: Duration) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.rtt += (rtt.as_secs_f64() - st.rtt) * RTT_WEIGHT;
        st.ceiling = self.ceiling(st.rtt);
        let limit = (st.ceiling * st.factor).max(1.0);
        st.factor = ((limit + 1.0 / limit) / st.ceiling).min(1.0);
    }

    /// Takes the first measured round trip as it is, in place of the
    /// assumed one: far from the region, the first requests then start at
    /// the count the quota needs instead of climbing to it.
    fn first_sample(&self, rtt: Duration) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.rtt = rtt.as_secs_f64();
        st.ceiling = self.ceiling(st.rtt);
    }

    /// The current limit on requests in flight.
    fn limit(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (st.ceiling * st.factor).floor().max(1.0) as usize
    }

    /// The measured round trip (moving average).
    fn rtt(&self) -> Duration {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Duration::from_secs_f64(st.rtt)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.busy = st.busy.saturating_sub(1);
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
    /// Blocks to fetch, with their tokens.
    blocks: Vec<(u64, String)>,
    /// Blocks a changed-blocks listing gives with no second token: written
    /// in the base, never written (trimmed) in the newer snapshot.
    removed: Vec<u64>,
    next: Option<String>,
}

/// The state a snapshot's fetch tasks share.
struct Inner {
    snapshot: String,
    /// The base: only blocks that changed since it are listed (ListChangedBlocks).
    first: Option<String>,
    region: String,
    /// Where the requests go, to name it when it stalls.
    endpoint: String,
    client: Client,
    size: u64,
    block_size: u32,
    settings: Settings,
    quotas: Arc<Quotas>,
    in_flight: InFlight,
    retries: Arc<crate::retry::Budget>,
    /// Blocks not to fetch: durable at the target from an earlier run.
    skip: Arc<HashSet<u64>>,
    /// How far the listing of `blocks()` has got.
    listing: Arc<super::Listing>,
    /// Tokens of listed blocks not fetched yet (at most about a page).
    tokens: Mutex<HashMap<u64, String>>,
    first_page: Mutex<Option<Page>>,
    /// Block buffers to reuse (allocating and faulting in 512 KiB per block costs).
    spare: Mutex<Vec<Vec<u8>>>,
    /// Bounds the block buffers alive at once: the source's memory.
    buffers: Arc<Semaphore>,
    counters: EbsCounters,
}

/// An EBS snapshot as a block source.
///
/// [`BlockSource::blocks`] starts the fetching: the listing and up to
/// [`Settings::in_flight`] GetSnapshotBlock requests run as tasks on a
/// small async runtime, and blocks are handed over as they arrive, so a few
/// copy workers keep many requests in flight without a thread per request.
pub struct EbsSource {
    inner: Arc<Inner>,
    /// Fetched blocks handed out by `blocks()` and not read yet.
    ready: Mutex<HashMap<u64, BlockBuf>>,
    /// Checked SHA-256 of blocks read and not released yet.
    digests: Mutex<HashMap<u64, [u8; 32]>>,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for EbsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsSource")
            .field("snapshot", &self.inner.snapshot)
            .field("size", &self.inner.size)
            .finish_non_exhaustive()
    }
}

/// The one rule for snapshot ids, in every command: `snap-` followed by 8
/// or 17 lower-case hex digits (EC2's short and long ids). Anything else is
/// a path.
pub fn is_snapshot_id(s: &str) -> bool {
    s.strip_prefix("snap-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// True for what looks meant as a snapshot id but breaks the rule
/// (`snap-` in any case, then anything): worth a sentence rather than
/// "no such file".
pub fn is_near_snapshot_id(s: &str) -> bool {
    !is_snapshot_id(s)
        && s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("snap-"))
        && !s.contains('/')
}

impl EbsSource {
    /// Connects (default credential chain) and lists the first page of the snapshot.
    pub fn open(
        snapshot: &str,
        settings: &Settings,
        quotas: Arc<Quotas>,
    ) -> Result<EbsSource, Error> {
        Self::open_listing(None, snapshot, settings, quotas)
    }

    /// The blocks of `second` that differ from `first` (ListChangedBlocks),
    /// for a delta sync: changed blocks are fetched from `second`, and
    /// blocks `second` no longer holds come out of [`BlockSource::blocks`]
    /// too and read as zeros.
    pub fn open_changed(
        first: &str,
        second: &str,
        settings: &Settings,
        quotas: Arc<Quotas>,
    ) -> Result<EbsSource, Error> {
        if !is_snapshot_id(first) {
            return Err(Error::BadSnapshotId(first.to_owned()));
        }
        Self::open_listing(Some(first), second, settings, quotas)
    }

    fn open_listing(
        first: Option<&str>,
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
        let run_retries = quotas.run_retries.clone();
        let sdk = rt.block_on(load_config(settings));
        let region = sdk.region().map(|r| r.to_string()).ok_or(Error::NoRegion)?;
        let endpoint = sdk.endpoint_url().map_or_else(
            || format!("https://ebs.{region}.amazonaws.com"),
            str::to_owned,
        );
        let mut inner = Inner {
            snapshot: snapshot.to_owned(),
            endpoint,
            first: first.map(str::to_owned),
            region,
            // The SDK's config, with the client whose connections keep small buffers.
            client: Client::from_conf(
                aws_sdk_ebs::config::Builder::from(&sdk)
                    .http_client(super::ebs_http::SmallBufferClient::default())
                    .build(),
            ),
            size: 0,
            block_size: 0,
            settings: settings.clone(),
            quotas,
            in_flight: InFlight::new(settings.in_flight, settings.ebs_quota),
            retries: run_retries.clone().unwrap_or_else(|| {
                Arc::new(crate::retry::Budget::new(
                    settings.retry_budget,
                    settings.stall_timeout,
                ))
            }),
            skip: Arc::new(HashSet::new()),
            listing: Arc::default(),
            tokens: Mutex::new(HashMap::new()),
            first_page: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            buffers: Arc::new(Semaphore::new(RECEIVING_BLOCKS + READY_BLOCKS)),
            counters: EbsCounters::default(),
        };
        let listed_at = Instant::now();
        let (page, volume_gib, block_size) = rt.block_on(inner.list(None, None, PAGE))?;
        // The listing's round trip is the first sample of the service's. It
        // over-states it when the listing was retried or slow to build, which
        // errs safe: pacing, not this count, holds the rate to the quota.
        inner.in_flight.first_sample(listed_at.elapsed());
        inner.block_size = block_size;
        inner.size = volume_gib << 30;
        if let Some(bad) = page
            .blocks
            .iter()
            .map(|b| b.0)
            .chain(page.removed.iter().copied())
            .find(|i| (i + 1) * u64::from(block_size) > inner.size)
        {
            return Err(inner.inconsistent(format!(
                "block {bad} lies past the end of the {volume_gib} GiB volume"
            )));
        }
        inner.first_page = Mutex::new(Some(page));
        Ok(EbsSource {
            inner: Arc::new(inner),
            ready: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            rt,
        })
    }

    /// Leaves the blocks in `done` out of [`BlockSource::blocks`]: they are
    /// not fetched (an earlier run made them durable at the target).
    pub fn skipping(mut self, done: HashSet<u64>) -> EbsSource {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.skip = Arc::new(done);
        }
        self
    }

    /// The snapshot id.
    pub fn snapshot(&self) -> &str {
        &self.inner.snapshot
    }

    /// The region the client talks to.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Block `index` when the snapshot holds it, `None` when it was never
    /// written (it reads as zeros). For reading a few structures (partition
    /// tables, superblocks), not for copies: each call lists the snapshot
    /// from `index` first.
    pub fn read_listed_block(&self, index: u64) -> Result<Option<Vec<u8>>, Error> {
        self.rt.block_on(async {
            let (page, _, _) = self.inner.list(None, Some(index), REFRESH_PAGE).await?;
            let Some((_, token)) = page.blocks.into_iter().find(|(i, _)| *i == index) else {
                return Ok(None);
            };
            {
                let mut tokens = self
                    .inner
                    .tokens
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                tokens.insert(index, token);
            }
            let data = self.inner.fetch(index).await?;
            let bytes = data.data.to_vec();
            self.inner.give_back(data);
            Ok(Some(bytes))
        })
    }

    /// Retries, throttling and refreshes seen so far.
    pub fn counters(&self) -> &EbsCounters {
        &self.inner.counters
    }

    /// The GetSnapshotBlock round trip measured so far (moving average),
    /// and the limit on requests in flight it gives now.
    pub fn flight(&self) -> (Duration, usize) {
        (self.inner.in_flight.rtt(), self.inner.in_flight.limit())
    }

    /// Lists the whole snapshot once, keeping every block's token, and
    /// returns the written blocks' indexes: [`EbsSource::read_written_block`]
    /// then reads any of them with one request.
    pub fn index_blocks(&self) -> Result<std::collections::BTreeSet<u64>, Error> {
        self.rt.block_on(async {
            let mut pager = Pager::new(&self.inner, true);
            let mut all = std::collections::BTreeSet::new();
            while let Some(page) = pager.next_page().await? {
                all.extend(page.fetch);
            }
            Ok(all)
        })
    }

    /// Block `index`, which the listing named: fetched with its kept token
    /// (renewed by a listing when it is gone or expired) and checked.
    pub fn read_written_block(&self, index: u64) -> Result<Vec<u8>, Error> {
        self.rt.block_on(async {
            let data = self.inner.fetch(index).await?;
            let bytes = data.data.to_vec();
            self.inner.give_back(data);
            Ok(bytes)
        })
    }

    /// Counts the snapshot's written blocks, or for a changed-blocks source
    /// the blocks that differ (a full listing, no data read).
    pub fn count_blocks(&self) -> Result<u64, Error> {
        self.rt.block_on(async {
            let mut pager = Pager::new(&self.inner, false);
            let mut n = 0;
            while let Some(page) = pager.next_page().await? {
                n += (page.fetch.len() + page.removed.len()) as u64;
            }
            Ok(n)
        })
    }
}

impl Inner {
    fn inconsistent(&self, detail: String) -> Error {
        Error::Inconsistent {
            snapshot: self.snapshot.clone(),
            detail,
        }
    }

    /// A block buffer, once fewer than the most allowed are alive; reused
    /// when one is spare.
    async fn buffer(&self) -> BlockBuf {
        // The semaphore is never closed; were it, the buffer would go unbounded, not wrong.
        let permit = self.buffers.clone().acquire_owned().await.ok();
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        BlockBuf {
            data: spare.unwrap_or_else(|| vec![0u8; self.block_size as usize]),
            sha256: None,
            removed: false,
            _permit: permit,
        }
    }

    /// Keeps a block buffer for reuse and lets another be taken.
    fn give_back(&self, buf: BlockBuf) {
        let BlockBuf { mut data, .. } = buf;
        {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            if spare.len() < RECEIVING_BLOCKS + READY_BLOCKS {
                data.resize(self.block_size as usize, 0);
                spare.push(data);
            }
        }
    }

    /// One page of the listing (ListSnapshotBlocks, or ListChangedBlocks
    /// from the base), retried; returns (page, volume GiB, block size).
    async fn list(
        &self,
        next: Option<String>,
        start: Option<u64>,
        max: i32,
    ) -> Result<(Page, u64, u32), Error> {
        match &self.first {
            Some(first) => self.list_changed(first, next, start, max).await,
            None => self.list_written(next, start, max).await,
        }
    }

    /// Checks a listing's block and volume sizes; returns them.
    fn sizes(&self, block_size: i32, volume: i64) -> Result<(u32, u64), Error> {
        check_sizes(block_size, volume, self.block_size).map_err(|d| self.inconsistent(d))
    }

    /// One listing call (`once`), paced under the list quota and retried as
    /// its failure says; an expired page token is the caller's to handle.
    async fn listed<F, Fut>(&self, mut once: F) -> Result<(Page, u64, u32), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(Page, u64, u32), Failure>>,
    {
        let mut attempt = 0;
        loop {
            self.quotas.wait("list", self.quotas.list_per_account).await;
            let started = Instant::now();
            match once().await {
                Ok(page) => {
                    self.retries.stall().succeeded();
                    return Ok(page);
                }
                Err(Failure::TokenExpired) => return Err(Error::PageTokenExpired),
                Err(f) => self.pause(f, &mut attempt, None, started).await?,
            }
        }
    }

    /// Checks that block `i` (as listed) is a valid index after `last`.
    fn listed_index(&self, i: Option<i32>, last: Option<u64>) -> Result<u64, Failure> {
        check_index(i, last).map_err(|d| Failure::Fatal(self.inconsistent(d)))
    }

    /// One ListChangedBlocks page between `first` and the snapshot, retried.
    async fn list_changed(
        &self,
        first: &str,
        next: Option<String>,
        start: Option<u64>,
        max: i32,
    ) -> Result<(Page, u64, u32), Error> {
        self.listed(|| async {
            let call = self
                .client
                .list_changed_blocks()
                .first_snapshot_id(first)
                .second_snapshot_id(&self.snapshot)
                .max_results(max)
                .set_next_token(next.clone())
                .set_starting_block_index(start.map(|s| s.min(i32::MAX as u64) as i32));
            let out = match call.send().await {
                Ok(out) => out,
                Err(SdkError::ServiceError(se))
                    if matches!(se.err(), ListChangedBlocksError::ValidationException(v)
                        if v.reason() == Some(&ValidationExceptionReason::UnrelatedSnapshots)) =>
                {
                    return Err(Failure::Fatal(Error::UnrelatedSnapshots {
                        first: first.to_owned(),
                        second: self.snapshot.clone(),
                    }))
                }
                Err(e) => {
                    return Err(self.classify(e, None, |e| match e {
                        ListChangedBlocksError::ValidationException(v) => {
                            v.reason() == Some(&ValidationExceptionReason::InvalidPageToken)
                        }
                        _ => false,
                    }))
                }
            };
            let (bs, volume) = self
                .sizes(
                    out.block_size().unwrap_or(0),
                    out.volume_size().unwrap_or(0),
                )
                .map_err(Failure::Fatal)?;
            let (mut blocks, mut removed) = (Vec::new(), Vec::new());
            let mut last: Option<u64> = None;
            for b in out.changed_blocks() {
                let i = self.listed_index(b.block_index(), last)?;
                last = Some(i);
                match b.second_block_token() {
                    Some(t) => blocks.push((i, t.to_owned())),
                    None => removed.push(i),
                }
            }
            let next = out.next_token().map(str::to_owned);
            Ok((
                Page {
                    blocks,
                    removed,
                    next,
                },
                volume,
                bs,
            ))
        })
        .await
    }

    /// One ListSnapshotBlocks page, retried.
    async fn list_written(
        &self,
        next: Option<String>,
        start: Option<u64>,
        max: i32,
    ) -> Result<(Page, u64, u32), Error> {
        self.listed(|| async {
            let call = self
                .client
                .list_snapshot_blocks()
                .snapshot_id(&self.snapshot)
                .max_results(max)
                .set_next_token(next.clone())
                .set_starting_block_index(start.map(|s| s.min(i32::MAX as u64) as i32));
            let out = call.send().await.map_err(|e| {
                self.classify(e, None, |e| match e {
                    ListSnapshotBlocksError::ValidationException(v) => {
                        v.reason() == Some(&ValidationExceptionReason::InvalidPageToken)
                    }
                    _ => false,
                })
            })?;
            let (bs, volume) = self
                .sizes(
                    out.block_size().unwrap_or(0),
                    out.volume_size().unwrap_or(0),
                )
                .map_err(Failure::Fatal)?;
            let mut blocks = Vec::with_capacity(out.blocks().len());
            for b in out.blocks() {
                let i =
                    self.listed_index(b.block_index(), blocks.last().map(|b: &(u64, String)| b.0))?;
                let t = b.block_token().ok_or_else(|| {
                    Failure::Fatal(self.inconsistent("a listed block has no index or token".into()))
                })?;
                blocks.push((i, t.to_owned()));
            }
            let next = out.next_token().map(str::to_owned);
            Ok((
                Page {
                    blocks,
                    removed: Vec::new(),
                    next,
                },
                volume,
                bs,
            ))
        })
        .await
    }

    /// A fresh token for `index` (its old one expired); refreshes the tokens of
    /// the listed blocks that follow it too.
    async fn refresh_token(&self, index: u64) -> Result<String, Error> {
        self.counters
            .tokens_refreshed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(snapshot = %self.snapshot, block = index, "block token expired; listing again from there");
        let (page, _, _) = self.list(None, Some(index), REFRESH_PAGE).await?;
        let mut found = None;
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// Waits before a retry, or says the run must stop.
    /// `started` is when the failed attempt was sent (for the stall rule).
    async fn pause(
        &self,
        f: Failure,
        attempt: &mut u32,
        block: Option<u64>,
        started: Instant,
    ) -> Result<(), Error> {
        let last = match f {
            Failure::Fatal(e) => return Err(e),
            Failure::TokenExpired => return Ok(()),
            Failure::Throttled(m) => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                self.in_flight.throttled();
                tracing::debug!(snapshot = %self.snapshot, ?block, "throttled ({m}); requests in flight lowered to {}", self.in_flight.limit());
                m
            }
            Failure::Transient(m) => {
                tracing::debug!(snapshot = %self.snapshot, ?block, attempt = *attempt + 1, "retrying after: {m}");
                m
            }
        };
        if let Some(failing) = self.retries.stall().failed(started) {
            return Err(Error::Stalled {
                endpoint: self.endpoint.clone(),
                seconds: failing.as_secs(),
                last,
            });
        }
        if *attempt + 1 >= self.settings.attempts_per_call.max(1) {
            return Err(Error::Attempts {
                snapshot: self.snapshot.clone(),
                block,
                attempts: *attempt + 1,
                last,
            });
        }
        if !self.retries.take() {
            return Err(Error::RetryBudget {
                snapshot: self.snapshot.clone(),
                block,
                retries: self.retries.total(),
                last,
            });
        }
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
        let s = &self.settings;
        tokio::time::sleep(crate::retry::backoff(
            s.backoff_base,
            s.backoff_max,
            *attempt,
        ))
        .await;
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
            // A whole, successful answer the SDK cannot read breaks the
            // service's contract: asking again gets the same answer.
            SdkError::ResponseError(r)
                if r.raw().status().is_success()
                    && r.raw().body().bytes().is_some_and(|b| !b.is_empty()) =>
            {
                Failure::Fatal(self.inconsistent(format!(
                    "an answer this client cannot read ({}); not retried, as it would come back the same",
                    innermost(&err)
                )))
            }
            SdkError::ResponseError(_) => Failure::Transient(format!(
                "the answer was cut off: {}",
                DisplayErrorContext(&err)
            )),
            // The HTTP client marks a refused certificate as the caller's to mend.
            SdkError::DispatchFailure(d)
                if d.is_user() && super::ebs_http::certificate_refused(&err) =>
            {
                Failure::Fatal(Error::Certificate {
                    endpoint: self.endpoint.clone(),
                    detail: innermost(&err),
                })
            }
            // Refused, reset or dropped connections: anything but a mistake of ours.
            SdkError::DispatchFailure(d) if !d.is_user() => {
                Failure::Transient(format!("connection failed: {}", DisplayErrorContext(&err)))
            }
            _ => Failure::Fatal(Error::Config(DisplayErrorContext(&err).to_string())),
        }
    }

    /// One GetSnapshotBlock attempt, streamed into a block buffer and hashed
    /// as it arrives. The buffer is taken only once the answer starts, so a
    /// request waiting on the network holds no block memory.
    async fn get_once(&self, index: u64, token: &str) -> Result<Fetched, Failure> {
        let call = self
            .client
            .get_snapshot_block()
            .snapshot_id(&self.snapshot)
            .block_index(index as i32)
            .block_token(token);
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
        let asked = Instant::now();
        let mut buf = self.buffer().await;
        let waited = asked.elapsed();
        let (mut len, mut hasher) = (0usize, Sha256::new());
        while let Some(chunk) = out.block_data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    self.give_back(buf);
                    return Err(Failure::Transient(format!(
                        "the block's data was cut off: {e}"
                    )));
                }
            };
            let end = len + chunk.len();
            if end > buf.data.len() {
                self.give_back(buf);
                return Err(Failure::Transient(format!(
                    "block {index} came with more than {} bytes",
                    self.block_size
                )));
            }
            buf.data[len..end].copy_from_slice(&chunk);
            hasher.update(&chunk);
            len = end;
        }
        buf.data.truncate(len);
        let expected = out.checksum().unwrap_or("");
        let sha256 = out.checksum_algorithm() == Some(&ChecksumAlgorithm::ChecksumAlgorithmSha256);
        let digest: [u8; 32] = hasher.finalize().into();
        let actual = base64::engine::general_purpose::STANDARD.encode(digest);
        let checksum_ok = sha256 && expected == actual;
        buf.sha256 = checksum_ok.then_some(digest);
        Ok(Fetched {
            data: buf,
            checksum_ok,
            waited,
        })
    }

    /// Fetches block `index` whole and checked: token refreshes, checksum
    /// retries and backoff all happen here, under the in-flight limit and the quota.
    async fn fetch(&self, index: u64) -> Result<BlockBuf, Error> {
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        let mut token = match token {
            Some(t) => t,
            None => self.refresh_token(index).await?,
        };
        let (mut attempt, mut refreshes, mut mismatches) = (0u32, 0u32, 0u32);
        loop {
            let (started, result) = {
                let _permit = self.in_flight.acquire().await;
                self.quotas
                    .wait(&self.snapshot, self.settings.ebs_quota)
                    .await;
                let started = Instant::now();
                (started, self.get_once(index, &token).await)
            };
            let failure = match result {
                Ok(f) if f.data.data.len() != self.block_size as usize => {
                    let len = f.data.data.len();
                    self.give_back(f.data);
                    Failure::Transient(format!(
                        "block {index} came with {len} bytes, not {}",
                        self.block_size
                    ))
                }
                Ok(f) if !f.checksum_ok => {
                    self.give_back(f.data);
                    self.counters
                        .checksum_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    mismatches += 1;
                    tracing::info!(snapshot = %self.snapshot, block = index, "block failed its SHA-256 check; fetching it again");
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
                    // Were a slow copy's wait counted, the limit would grow
                    // with it, and with it the answers parked in the HTTP
                    // client's buffers (measured: 336 MiB against Azure at 50 ms).
                    self.in_flight
                        .succeeded(started.elapsed().saturating_sub(f.waited));
                    self.retries.stall().succeeded();
                    return Ok(f.data);
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
                token = self.refresh_token(index).await?;
                continue;
            }
            self.pause(failure, &mut attempt, Some(index), started)
                .await?;
        }
    }
}

/// A block's bytes, counted against the source's memory bound while alive.
struct BlockBuf {
    data: Vec<u8>,
    /// The SHA-256 of `data`, once it matched the service's checksum.
    sha256: Option<[u8; 32]>,
    /// A block the newer snapshot of a changed-blocks listing no longer
    /// holds: no data, it reads as zeros.
    removed: bool,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What one fetch brought.
struct Fetched {
    data: BlockBuf,
    /// The SHA-256 of the bytes matches the service's checksum.
    checksum_ok: bool,
    /// How long the answer waited for a block buffer: the copy's pace, not
    /// the service's, so not part of the round trip.
    waited: Duration,
}

/// Checks a listing's block size and volume size (GiB) against what EBS
/// can answer and against the block size of earlier pages (`known`, 0 when
/// none); returns them as this client uses them. Pure, for the fuzz targets.
pub fn check_sizes(block_size: i32, volume: i64, known: u32) -> Result<(u32, u64), String> {
    let bs = u32::try_from(block_size).unwrap_or(0);
    if !bs.is_power_of_two() || !(4096..=(16 << 20)).contains(&bs) {
        return Err(format!(
            "block size {block_size} is not a power of two from 4 KiB to 16 MiB"
        ));
    }
    if known != 0 && bs != known {
        return Err(format!(
            "block size changed from {known} to {bs} between pages"
        ));
    }
    let volume = u64::try_from(volume)
        .ok()
        .filter(|&v| v > 0 && v <= 65536)
        .ok_or_else(|| format!("volume size {volume} GiB is outside 1..=65536"))?;
    Ok((bs, volume))
}

/// Checks that a listed block index `i` is there, not negative, and after
/// the one listed before it (`last`). Pure, for the fuzz targets.
pub fn check_index(i: Option<i32>, last: Option<u64>) -> Result<u64, String> {
    let i = i.ok_or_else(|| "a listed block has no index".to_owned())?;
    let i = u64::try_from(i).map_err(|_| format!("negative block index {i}"))?;
    if last.is_some_and(|prev| prev >= i) {
        return Err(format!("block {i} is listed out of order"));
    }
    Ok(i)
}

pub(crate) async fn load_config(s: &Settings) -> aws_config::SdkConfig {
    // No request waits past the stall rule's limit: it would be a stall.
    let request_timeout = s.request_timeout.min(s.stall_timeout);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s.connect_timeout.min(request_timeout))
        .read_timeout(request_timeout)
        .operation_attempt_timeout(request_timeout)
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

/// One page of a listing, as the pager hands it on.
struct Listed {
    /// Blocks to fetch.
    fetch: Vec<u64>,
    /// Blocks that read as zeros now (changed-blocks listings only).
    removed: Vec<u64>,
}

/// Walks a snapshot's listing page by page; optionally keeps the tokens
/// where fetches (and refreshes) find them.
struct Pager<'a> {
    inner: &'a Inner,
    keep_tokens: bool,
    next: Option<String>,
    last: Option<u64>,
    started: bool,
}

impl<'a> Pager<'a> {
    fn new(inner: &'a Inner, keep_tokens: bool) -> Pager<'a> {
        Pager {
            inner,
            keep_tokens,
            next: None,
            last: None,
            started: false,
        }
    }

    /// The next non-empty page's block indexes, or `None` at the end.
    async fn next_page(&mut self) -> Result<Option<Listed>, Error> {
        // Empty pages are allowed ("can return an empty array"): keep going
        // while a token remains, but not forever.
        for _ in 0..=MAX_EMPTY_PAGES {
            if self.started && self.next.is_none() {
                return Ok(None);
            }
            let page = self.fetch().await?;
            let first = page
                .blocks
                .first()
                .map(|b| b.0)
                .into_iter()
                .chain(page.removed.first().copied())
                .min();
            let last = page
                .blocks
                .last()
                .map(|b| b.0)
                .into_iter()
                .chain(page.removed.last().copied())
                .max();
            if let (Some(prev), Some(first)) = (self.last, first) {
                if first <= prev {
                    return Err(self.inner.inconsistent(format!(
                        "block {first} was listed again after block {prev}"
                    )));
                }
            }
            self.next = page.next;
            let Some(last) = last else {
                continue;
            };
            self.last = Some(last);
            // The page's tokens go where a refresh can renew them, until each block is read.
            if self.keep_tokens {
                {
                    let mut t = self
                        .inner
                        .tokens
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    t.extend(page.blocks.iter().map(|(i, tok)| (*i, tok.clone())));
                }
            }
            return Ok(Some(Listed {
                fetch: page.blocks.into_iter().map(|(i, _)| i).collect(),
                removed: page.removed,
            }));
        }
        Err(self
            .inner
            .inconsistent(format!("{MAX_EMPTY_PAGES} pages in a row listed no block")))
    }

    async fn fetch(&mut self) -> Result<Page, Error> {
        if !self.started {
            self.started = true;
            let first = self
                .inner
                .first_page
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            return match first {
                Some(p) => Ok(p),
                None => Ok(self.inner.list(None, None, PAGE).await?.0),
            };
        }
        match self.inner.list(self.next.clone(), None, PAGE).await {
            Ok((p, _, _)) => Ok(p),
            // An hour-old page token: carry on after the last block listed.
            Err(Error::PageTokenExpired) => Ok(self
                .inner
                .list(None, self.last.map(|l| l + 1), PAGE)
                .await?
                .0),
            Err(e) => Err(e),
        }
    }
}

/// A fetched block, or why the run stops.
type Arrival = Result<(u64, BlockBuf), Error>;

/// Lists the snapshot and fetches every listed block, at most
/// the in-flight policy's cap at a time, sending each as it arrives; stops early when
/// the receiver is gone.
async fn produce(inner: Arc<Inner>, tx: mpsc::Sender<Arrival>) {
    let tasks = Arc::new(Semaphore::new(inner.settings.in_flight.cap()));
    let mut pager = Pager::new(&inner, true);
    loop {
        let Listed {
            fetch: page,
            removed,
        } = match pager.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => {
                inner.listing.complete.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let to_read = page.iter().filter(|i| !inner.skip.contains(i)).count() as u64;
        inner.listing.blocks.fetch_add(to_read, Ordering::Relaxed);
        inner
            .listing
            .bytes
            .fetch_add(to_read * u64::from(inner.block_size), Ordering::Relaxed);
        // Blocks the newer snapshot no longer holds: zeros, nothing to fetch.
        for index in removed {
            if inner.skip.contains(&index) {
                continue;
            }
            inner.listing.blocks.fetch_add(1, Ordering::Relaxed);
            let zeros = BlockBuf {
                data: Vec::new(),
                sha256: None,
                removed: true,
                _permit: None,
            };
            if tx.send(Ok((index, zeros))).await.is_err() {
                return;
            }
        }
        for index in page {
            if inner.skip.contains(&index) {
                continue;
            }
            let Ok(slot) = tasks.clone().acquire_owned().await else {
                return;
            };
            // The run's bound, shared with every other snapshot of the run.
            let shared = match &inner.quotas.run_in_flight {
                Some(run) => match run.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                None => None,
            };
            if tx.is_closed() {
                return;
            }
            let (inner, tx) = (inner.clone(), tx.clone());
            tokio::spawn(async move {
                let arrival = inner.fetch(index).await.map(|data| (index, data));
                // Answered: the run's share goes to the next request at once.
                drop(shared);
                let _ = tx.send(arrival).await;
                drop(slot);
            });
        }
    }
}

/// Blocks as the fetch tasks deliver them, in arrival order.
struct Arrivals<'a> {
    src: &'a EbsSource,
    rx: mpsc::Receiver<Arrival>,
}

impl Iterator for Arrivals<'_> {
    type Item = Result<u64, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        // Ends when every task has sent or given up: each request has a
        // timeout and the run a retry budget.
        match self.rx.blocking_recv()? {
            Ok((index, data)) => {
                {
                    let mut ready = self
                        .src
                        .ready
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    ready.insert(index, data);
                }
                Some(Ok(index))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl BlockSource for EbsSource {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size
    }

    fn pace(&self) -> Option<f64> {
        let quota = self.inner.settings.ebs_quota;
        (quota > 0.0).then_some(quota)
    }

    /// Starts fetching: blocks come in arrival order, already read and checked.
    fn listing(&self) -> Option<Arc<super::Listing>> {
        Some(self.inner.listing.clone())
    }

    fn blocks(&self) -> Box<dyn Iterator<Item = Result<u64, Error>> + Send + '_> {
        let (tx, rx) = mpsc::channel(READY_BLOCKS);
        self.rt.spawn(produce(self.inner.clone(), tx));
        Box::new(Arrivals { src: self, rx })
    }

    fn read_block<'a>(&'a self, index: u64, buf: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let ready = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        let data = match ready {
            Some(data) => data,
            // Not delivered by `blocks()`: fetch it now.
            None => self.rt.block_on(self.inner.fetch(index))?,
        };
        if data.removed {
            let len = self.inner.block_size as usize;
            buf[..len].fill(0);
            return Ok(&buf[..len]);
        }
        let len = data.data.len();
        buf[..len].copy_from_slice(&data.data);
        if let Some(d) = data.sha256 {
            self.digests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(index, d);
        }
        self.inner.give_back(data);
        Ok(&buf[..len])
    }

    fn take_sha256(&self, index: u64) -> Option<[u8; 32]> {
        self.digests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index)
    }

    fn release_block(&self, index: u64) {
        // Bounded: one entry per block between its read and its release.
        self.take_sha256(index);
        // A block fetched and never read (the copy stopped): its buffer goes
        // back, so that the fetches waiting for one can end.
        let unread = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        if let Some(data) = unread {
            self.inner.give_back(data);
        }
    }
}

/// The innermost cause's message: what actually went wrong, without the
/// layers (and the raw answer) around it.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
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
        assert!(is_snapshot_id("snap-0123abcd"), "8 digits: the short form");
        assert!(!is_snapshot_id("snap-123"));
        assert!(!is_snapshot_id("snap-0123456789abcdef01"));
        assert!(is_near_snapshot_id("snap-0123456789ABCDEFG"));
        assert!(is_near_snapshot_id("SNAP-0123abcd"));
        assert!(!is_near_snapshot_id("snap-0123abcd"));
        assert!(!is_near_snapshot_id("./snap-123"));
        assert!(!is_near_snapshot_id("disk.raw"));
        assert!(
            !is_near_snapshot_id("snäp-1"),
            "no panic on a split character"
        );
    }

    #[test]
    fn aimd_halves_and_recovers_within_bounds() {
        let ms = Duration::from_millis;
        let f = InFlight::new(InFlightPolicy::Fixed(64), 1000.0);
        f.throttled();
        f.throttled();
        assert_eq!(f.limit(), 16);
        for _ in 0..10_000 {
            f.succeeded(ms(500));
        }
        assert_eq!(f.limit(), 64, "a fixed count ignores the round trip");
        for _ in 0..20 {
            f.throttled();
        }
        assert_eq!(f.limit(), 1);
    }

    #[test]
    fn an_adaptive_limit_follows_littles_law_within_its_cap() {
        let ms = Duration::from_millis;
        // 1,000/s at the assumed 100 ms: 125 with headroom.
        let f = InFlight::new(InFlightPolicy::Adaptive { cap: 512 }, 1000.0);
        assert_eq!(f.limit(), 125);
        for _ in 0..200 {
            f.succeeded(ms(200));
        }
        assert!((240..=250).contains(&f.limit()), "{}", f.limit());
        assert!((ms(195)..=ms(200)).contains(&f.rtt()), "{:?}", f.rtt());
        for _ in 0..200 {
            f.succeeded(ms(2000));
        }
        assert_eq!(f.limit(), 512, "capped");
        // The first sample replaces the assumption at once.
        let f = InFlight::new(InFlightPolicy::Adaptive { cap: 512 }, 1000.0);
        f.first_sample(ms(400));
        assert_eq!(f.limit(), 500);
        // A low quota near its region: the floor.
        let f = InFlight::new(InFlightPolicy::Adaptive { cap: 512 }, 20.0);
        for _ in 0..200 {
            f.succeeded(ms(5));
        }
        assert_eq!(f.limit(), MIN_ADAPTIVE);
        // Throttled: halved under the ceiling, then back one per window.
        let f = InFlight::new(InFlightPolicy::Adaptive { cap: 512 }, 1000.0);
        f.throttled();
        assert_eq!(f.limit(), 62);
        for _ in 0..100_000 {
            f.succeeded(ms(100));
        }
        assert_eq!(f.limit(), 125);
    }

    #[test]
    fn quotas_space_requests_out() {
        let q = Quotas::new(0.0);
        let waits: Vec<Duration> = (0..60).map(|_| q.reserve("s", 100.0)).collect();
        // A burst of a tenth of a second (10) passes at once; the 50 after it
        // queue at 100/s, so the last waits about half a second (less the
        // moments the loop took).
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        assert!(waits[10..].windows(2).all(|w| w[1] > w[0]), "{waits:?}");
        assert!(waits[59] >= Duration::from_millis(400), "{:?}", waits[59]);
        assert!(waits[59] <= Duration::from_millis(500), "{:?}", waits[59]);
        // Another key has its own bucket; rate 0 never waits.
        assert!(q.reserve("t", 100.0).is_zero());
        assert!(q.reserve("list", q.list_per_account).is_zero());
    }

    #[test]
    fn in_flight_permits_stop_at_the_limit_and_free_on_drop() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let f = InFlight::new(InFlightPolicy::Fixed(2), 1000.0);
            let a = f.acquire().await;
            let _b = f.acquire().await;
            let third = tokio::time::timeout(Duration::from_millis(50), f.acquire()).await;
            assert!(third.is_err(), "a third permit under a limit of 2");
            drop(a);
            let third = tokio::time::timeout(Duration::from_secs(5), f.acquire()).await;
            assert!(third.is_ok(), "a freed permit is handed on");
        });
    }
}
