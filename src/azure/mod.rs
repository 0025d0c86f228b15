//! Azure: managed disks through the Resource Manager (create for upload,
//! grant and revoke SAS access) and their page blobs through a SAS (Put
//! Page, Get Page Ranges, ranged reads). Tokens and SAS URLs are [`Secret`]s:
//! they never reach a log, an error or a report.

pub mod arm;
pub mod names;
pub mod page_blob;
pub mod session;
pub mod token;

pub use session::Session;

use std::time::Duration;

/// The Compute API version every disk call uses.
pub const COMPUTE_API_VERSION: &str = "2024-03-02";
/// The storage `x-ms-version` of every blob call (the newest Azurite 3.35 accepts).
pub const STORAGE_VERSION: &str = "2025-11-05";
/// Azure Resource Manager in Azure's public cloud.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
/// The scope of ARM tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// The scope of the Entra tokens a disk with `dataAccessAuthMode`
/// AzureActiveDirectory wants beside its SAS. The double slash is not a
/// typo: the service checks the token's audience for exactly
/// `https://disk.azure.com/` (its resource id with the trailing slash), and
/// a scope is that resource id followed by `/.default` (as AzCopy and the
/// storage SDKs' challenge policies ask for it).
pub const DISK_SCOPE: &str = "https://disk.azure.com//.default";
/// The resource id a disk's 401 challenge names (`resource_id=...`).
pub const DISK_RESOURCE: &str = "https://disk.azure.com/";

/// A bearer token or SAS URL: printable only as `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad("***")
    }
}

/// How hard to try, and for how long.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Resource Manager endpoint (an emulator's for tests).
    pub arm_endpoint: String,
    /// Limit on one request, from connect to the last byte.
    pub request_timeout: Duration,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Longest wait for a long-running operation.
    pub operation_timeout: Duration,
    /// Retries allowed for the whole run, all requests together.
    pub retry_budget: u64,
    /// First backoff delay; doubles per retry of a call, with jitter.
    pub backoff_base: Duration,
    /// Longest backoff delay.
    pub backoff_max: Duration,
    /// Lifetime asked for each SAS.
    pub sas_duration: Duration,
    /// Most attempts of one call, whatever budget the run has left.
    pub attempts_per_call: u32,
    /// The stall rule: once every call to an Azure endpoint has failed for
    /// this long, none succeeding, the run stops and says so; no single
    /// request waits longer either.
    pub stall_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            arm_endpoint: ARM_ENDPOINT.to_owned(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30 * 60),
            retry_budget: 1000,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            sas_duration: Duration::from_secs(24 * 3600),
            attempts_per_call: 8,
            stall_timeout: crate::retry::DEFAULT_STALL,
        }
    }
}

/// Why an Azure call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No credential could produce a token.
    #[error("cannot get an Azure token: {0}")]
    Token(String),

    /// The ARM endpoint is not usable.
    #[error("{0}")]
    Endpoint(String),

    /// Resource Manager refused a call.
    #[error("{what}: {code} (HTTP {status}): {message}")]
    Arm {
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// ARM's error code.
        code: String,
        /// ARM's message.
        message: String,
    },

    /// A long-running operation failed or took too long.
    #[error("{what}: {detail}")]
    Operation {
        /// What was being done.
        what: String,
        /// How it ended.
        detail: String,
    },

    /// The disk is not in the state the step needs.
    #[error("disk {disk} is {state}; {advice}")]
    State {
        /// Disk name.
        disk: String,
        /// Its state.
        state: arm::DiskState,
        /// What to do.
        advice: String,
    },

    /// The storage service refused a blob call.
    #[error("{what}: {code} (HTTP {status})")]
    Blob {
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// Storage error code.
        code: String,
    },

    /// A request could not be sent or its answer was cut off.
    #[error("{what}: {detail}")]
    Transport {
        /// What was being done.
        what: String,
        /// What the HTTP client said (without the URL).
        detail: String,
    },

    /// The run's retries are used up.
    #[error("gave up after the run's {retries} retries; last error: {last}")]
    RetryBudget {
        /// The budget.
        retries: u64,
        /// The last failure.
        last: String,
    },

    /// Every call to an endpoint failed for the stall rule's limit.
    #[error("no request to {endpoint} has got through for {seconds} s; stopped, as nothing moves (last error: {last})")]
    Stalled {
        /// The endpoint (its origin only: never a SAS).
        endpoint: String,
        /// How long every call failed.
        seconds: u64,
        /// The last failure.
        last: Box<Error>,
    },

    /// One call kept failing.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<Error>,
    },

    /// The I/O runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),

    /// An answer did not have the expected shape.
    #[error("{what}: unexpected answer: {detail}")]
    Protocol {
        /// What was being done.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// True when the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Arm { status, .. } | Error::Blob { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            Error::Transport { .. } => true,
            _ => false,
        }
    }

    /// True when a blob call failed because its SAS expired or was revoked.
    pub fn is_sas_refused(&self) -> bool {
        matches!(self, Error::Blob { status: 403, .. })
    }
}

/// An HTTP client with the settings' timeouts (no redirects: a SAS is never
/// sent anywhere but where it points).
pub(crate) fn http_client(s: &Settings) -> Result<reqwest::Client, Error> {
    // No request waits past the stall rule's limit: it would be a stall.
    let timeout = s.request_timeout.min(s.stall_timeout);
    reqwest::Client::builder()
        .connect_timeout(s.connect_timeout.min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| {
            Error::Endpoint(format!(
                "cannot set up the HTTP client: {}",
                e.without_url()
            ))
        })
}

/// A transport error, worded without the URL (which may hold a SAS).
pub(crate) fn transport(what: &str, e: reqwest::Error) -> Error {
    let e = e.without_url();
    let detail = if e.is_timeout() {
        "the request timed out".to_owned()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    };
    Error::Transport {
        what: what.to_owned(),
        detail,
    }
}

/// Backoff with equal jitter for retry `attempt` (0-based).
pub(crate) fn backoff(s: &Settings, attempt: u32) -> Duration {
    crate::retry::backoff(s.backoff_base, s.backoff_max, attempt)
}

/// One failed attempt of a call, as the retry step needs it.
pub(crate) struct Failed<'a> {
    /// The attempt's number in its call (0-based), raised on each retry.
    pub attempt: &'a mut u32,
    /// When the attempt was sent.
    pub started: std::time::Instant,
    /// Where it went: a URL whose origin alone is named (a SAS URL is fine).
    pub url: &'a str,
    /// Why it failed.
    pub error: Error,
}

/// Takes the retry after a failed attempt under `budget` (or says the run
/// must stop: the call's attempts, the run's budget, or the stall rule),
/// then waits out its backoff: the one retry step every Azure call shares.
pub(crate) async fn back_off(
    budget: &RetryBudget,
    s: &Settings,
    failed: Failed<'_>,
) -> Result<(), Error> {
    let Failed {
        attempt,
        started,
        url,
        error: last,
    } = failed;
    tracing::debug!(attempt = *attempt + 1, "Azure call retried after: {last}");
    if let Some(failing) = budget.0.stall().failed(started) {
        return Err(Error::Stalled {
            endpoint: origin(url),
            seconds: failing.as_secs(),
            last: Box::new(last),
        });
    }
    budget.retry(*attempt, s.attempts_per_call, last)?;
    tokio::time::sleep(backoff(s, *attempt)).await;
    *attempt += 1;
    Ok(())
}

/// The run's shared retry budget, with a cap per call.
#[derive(Debug)]
pub struct RetryBudget(crate::retry::Budget);

impl RetryBudget {
    /// A budget of `total` retries, with the stall rule's limit `stall`.
    pub fn new(total: u64, stall: Duration) -> RetryBudget {
        RetryBudget(crate::retry::Budget::new(total, stall))
    }

    /// A call got through: the service is moving (the stall rule).
    pub fn succeeded(&self) {
        self.0.stall().succeeded();
    }

    /// Takes retry number `attempt` (0-based) of one call, or says the run
    /// must stop with `last` as the reason: when the run's budget is spent or
    /// the call has had `per_call` attempts.
    pub fn retry(&self, attempt: u32, per_call: u32, last: Error) -> Result<(), Error> {
        if attempt + 1 >= per_call {
            return Err(Error::GaveUp {
                attempts: attempt + 1,
                last: Box::new(last),
            });
        }
        self.take(&last)
    }

    /// Takes one retry, or says the run must stop with `last` as the reason.
    pub fn take(&self, last: &Error) -> Result<(), Error> {
        if self.0.take() {
            return Ok(());
        }
        Err(Error::RetryBudget {
            retries: self.0.total(),
            last: last.to_string(),
        })
    }

    /// Retries used so far.
    pub fn used(&self) -> u64 {
        self.0.used()
    }
}

/// The scheme, host and port of `url`, nothing else: how an endpoint is
/// named in messages, never with a SAS's path or query.
pub(crate) fn origin(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "an Azure endpoint".to_owned(),
        |u| u.origin().ascii_serialization(),
    )
}

/// Checks that an endpoint is https, or plain http on loopback only (an emulator).
pub fn check_endpoint(url: &str) -> Result<reqwest::Url, Error> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| Error::Endpoint(format!("the endpoint {url} is not a URL ({e})")))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback => Ok(u),
        _ => Err(Error::Endpoint(format!(
            "the endpoint {url} must use https (plain http only on 127.0.0.1 or ::1, for emulators)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sig=abc");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "sig=abc");
    }

    #[test]
    fn endpoints_are_named_by_their_origin_alone() {
        assert_eq!(
            origin("https://md-x.z1.blob.storage.azure.net/abc/abcd?sv=2021&sig=SECRET"),
            "https://md-x.z1.blob.storage.azure.net"
        );
        assert_eq!(
            origin("http://127.0.0.1:10000/a?sig=s"),
            "http://127.0.0.1:10000"
        );
        assert_eq!(origin("not a url"), "an Azure endpoint");
    }

    #[test]
    fn endpoints_need_https_off_loopback() {
        assert!(check_endpoint("https://management.azure.com").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(check_endpoint("http://[::1]:8080").is_ok());
        assert!(check_endpoint("http://example.com").is_err());
        assert!(check_endpoint("not a url").is_err());
    }

    #[test]
    fn the_budget_runs_out() {
        let b = RetryBudget::new(2, crate::retry::DEFAULT_STALL);
        let e = Error::Token("x".into());
        assert!(b.take(&e).is_ok());
        assert!(b.take(&e).is_ok());
        assert!(matches!(
            b.take(&e),
            Err(Error::RetryBudget { retries: 2, .. })
        ));
        assert_eq!(b.used(), 2);
    }
}
