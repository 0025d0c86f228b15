//! The few EC2 calls a cutover and a discovery make: DescribeInstances,
//! StopInstances, CreateSnapshots, DescribeSnapshots and DescribeVolumes.
//!
//! Interop decision: EC2 is a Query API (form-encoded POST, XML answers).
//! The AWS SDK's EC2 crate covers all of EC2's hundreds of calls; alone it
//! took 3 min 38 s and 8.1 GiB of memory to build on 2 cores (aws-sdk-ec2
//! 1.274, debug), for four calls; so requests are signed here with SigV4 (`aws-sigv4`, which the
//! EBS SDK already builds), with the credentials and region of the same
//! default chain, and answers are read with `roxmltree`. Endpoint:
//! `AWS_ENDPOINT_URL_EC2`, else the EBS endpoint override (one emulator
//! serves both), else `AWS_ENDPOINT_URL`, else EC2's regional endpoint.
//!
//! Every call has a timeout; throttling (`RequestLimitExceeded`), 5xx and
//! dropped connections are retried with backoff, at most [`MAX_ATTEMPTS`]
//! times; anything else is permanent.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use crate::retry;
use crate::source::ebs::{self, Settings};

/// The EC2 API version every request names.
const API_VERSION: &str = "2016-11-15";
/// Attempts per call (throttling, 5xx, dropped connections).
pub const MAX_ATTEMPTS: u32 = 8;
/// Largest answer read (a page of instances or snapshots is far smaller).
const MAX_ANSWER: usize = 16 << 20;
/// Most pages of one listing followed (up to 1,000 items each).
const MAX_PAGES: usize = 1000;

/// Why an EC2 call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// EC2 refused the call.
    #[error("EC2 {action}: {code}: {message}")]
    Service {
        /// The call.
        action: &'static str,
        /// EC2's error code.
        code: String,
        /// EC2's message.
        message: String,
    },
    /// The call could not be made or its answer read.
    #[error("EC2 {action}: {detail}")]
    Transport {
        /// The call.
        action: &'static str,
        /// What happened.
        detail: String,
    },
    /// No credentials, no region, or no client.
    #[error("EC2: {0}")]
    Setup(String),
    /// An answer this client cannot read.
    #[error("EC2 {action}: the answer cannot be read: {detail}")]
    Answer {
        /// The call.
        action: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// An instance as DescribeInstances tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Its state's name: pending, running, stopping, stopped, ...
    pub state: String,
    /// Its EBS volumes: device name, volume id.
    pub volumes: Vec<(String, String)>,
    /// Its type (`m5.large`).
    pub instance_type: String,
    /// Windows or not (EC2's `platform` says `windows` or nothing).
    pub windows: bool,
    /// `x86_64`, `arm64` or `i386`.
    pub architecture: String,
    /// How it boots now: `uefi` or `legacy-bios`; empty when EC2 does not say.
    pub boot_mode: String,
    /// `ebs`, or `instance-store` (no snapshot can hold its root).
    pub root_device_type: String,
    /// The root device's name (`/dev/xvda`).
    pub root_device: String,
    /// Its tags, in EC2's order.
    pub tags: Vec<(String, String)>,
}

impl Instance {
    /// The value of its `Name` tag, if any.
    pub fn name(&self) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == "Name")
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Which instances a discovery takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<String>),
    /// Those with every one of these tags (key, value).
    Tags(Vec<(String, String)>),
    /// Every instance of the region that is not terminated.
    All,
}

/// A volume as DescribeVolumes tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Its id.
    pub id: String,
    /// Its size in GiB.
    pub size_gib: u64,
    /// Encrypted with a KMS key (reading its snapshots needs kms:Decrypt).
    pub encrypted: bool,
}

/// A snapshot as DescribeSnapshots or CreateSnapshots tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id.
    pub id: String,
    /// The volume it was taken of.
    pub volume: String,
    /// pending, completed or error.
    pub state: String,
    /// Progress as EC2 prints it ("42%").
    pub progress: String,
    /// When it was started (ISO 8601 as EC2 writes it: sorts as time).
    pub start_time: String,
}

/// An EC2 client for one region.
pub struct Ec2 {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    settings: Settings,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Ec2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The endpoint EC2 calls go to (see the module's documentation).
fn endpoint(settings: &Settings, region: &str) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    env("AWS_ENDPOINT_URL_EC2")
        .or_else(|| settings.endpoint_url.clone())
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"))
}

impl Ec2 {
    /// A client with the default credential chain and `settings`' region,
    /// profile, endpoint and timeouts.
    pub fn connect(settings: &Settings) -> Result<Ec2, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("cannot start the I/O runtime: {e}")))?;
        let sdk = rt.block_on(ebs::load_config(settings));
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            Error::Setup("no AWS region is set (in AWS_REGION or the profile)".into())
        })?;
        let credentials = sdk
            .credentials_provider()
            .ok_or_else(|| Error::Setup("no AWS credentials provider".into()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| Error::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Ec2 {
            http,
            endpoint: endpoint(settings, &region),
            region,
            credentials,
            settings: settings.clone(),
            rt,
        })
    }

    /// The region the client calls.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// DescribeInstances of one instance.
    pub fn instance(&self, id: &str) -> Result<Instance, Error> {
        let action = "DescribeInstances";
        let xml = self.call(action, &[("InstanceId.1", id)])?;
        instances(action, &xml)?
            .0
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| Error::Answer {
                action,
                detail: format!("instance {id} is not in the answer"),
            })
    }

    /// DescribeInstances of a selection, every page followed; terminated
    /// (and shutting-down) instances are left out.
    pub fn instances(&self, select: &Selection) -> Result<Vec<Instance>, Error> {
        let action = "DescribeInstances";
        let mut fixed: Vec<(String, String)> =
            vec![("Filter.1.Name".into(), "instance-state-name".into())];
        for (k, state) in ["pending", "running", "stopping", "stopped"]
            .iter()
            .enumerate()
        {
            fixed.push((format!("Filter.1.Value.{}", k + 1), (*state).into()));
        }
        let mut paged = true;
        match select {
            Selection::Ids(ids) => {
                // EC2 takes no MaxResults with ids: one answer per call.
                paged = false;
                for (k, id) in ids.iter().enumerate() {
                    fixed.push((format!("InstanceId.{}", k + 1), id.clone()));
                }
            }
            Selection::Tags(tags) => {
                for (k, (key, value)) in tags.iter().enumerate() {
                    fixed.push((format!("Filter.{}.Name", k + 2), format!("tag:{key}")));
                    fixed.push((format!("Filter.{}.Value.1", k + 2), value.clone()));
                }
            }
            Selection::All => {}
        }
        let mut out = Vec::new();
        self.pages(action, &fixed, paged, |xml| {
            let (mut got, next) = instances(action, xml)?;
            out.append(&mut got);
            Ok(next)
        })?;
        Ok(out)
    }

    /// DescribeVolumes of `ids`.
    pub fn volumes(&self, ids: &[String]) -> Result<Vec<Volume>, Error> {
        let action = "DescribeVolumes";
        let mut out = Vec::new();
        for chunk in ids.chunks(200) {
            let params: Vec<(String, String)> = chunk
                .iter()
                .enumerate()
                .map(|(k, id)| (format!("VolumeId.{}", k + 1), id.clone()))
                .collect();
            self.pages(action, &params, false, |xml| {
                let doc = parse(action, xml)?;
                for item in items(&doc, "volumeSet") {
                    out.push(Volume {
                        id: text(item, &["volumeId"]),
                        size_gib: text(item, &["size"]).parse().unwrap_or(0),
                        encrypted: text(item, &["encrypted"]) == "true",
                    });
                }
                Ok(next_token(&doc))
            })?;
        }
        Ok(out)
    }

    /// The newest completed snapshot of each of `volumes` that has one,
    /// among the caller's own (DescribeSnapshots, every page followed).
    pub fn latest_snapshots(
        &self,
        volumes: &[String],
    ) -> Result<BTreeMap<String, Snapshot>, Error> {
        let action = "DescribeSnapshots";
        let mut best: BTreeMap<String, Snapshot> = BTreeMap::new();
        for chunk in volumes.chunks(200) {
            let mut params: Vec<(String, String)> = vec![
                ("Owner.1".into(), "self".into()),
                ("Filter.1.Name".into(), "status".into()),
                ("Filter.1.Value.1".into(), "completed".into()),
                ("Filter.2.Name".into(), "volume-id".into()),
            ];
            for (k, v) in chunk.iter().enumerate() {
                params.push((format!("Filter.2.Value.{}", k + 1), v.clone()));
            }
            self.pages(action, &params, true, |xml| {
                let doc = parse(action, xml)?;
                for s in snapshots(action, xml)? {
                    if s.state != "completed" || !chunk.contains(&s.volume) {
                        continue;
                    }
                    let key = |x: &Snapshot| (x.start_time.clone(), x.id.clone());
                    if best.get(&s.volume).is_none_or(|b| key(&s) > key(b)) {
                        best.insert(s.volume.clone(), s);
                    }
                }
                Ok(next_token(&doc))
            })?;
        }
        Ok(best)
    }

    /// Calls `action` with `params`, then again with each NextToken the
    /// answer gives (MaxResults 1000 when `paged`), at most [`MAX_PAGES`]
    /// times; `each` reads a page and returns its NextToken.
    fn pages(
        &self,
        action: &'static str,
        params: &[(String, String)],
        paged: bool,
        mut each: impl FnMut(&str) -> Result<Option<String>, Error>,
    ) -> Result<(), Error> {
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut p: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if paged {
                p.push(("MaxResults", "1000"));
            }
            if let Some(t) = &token {
                p.push(("NextToken", t.as_str()));
            }
            let xml = self.call(action, &p)?;
            token = each(&xml)?;
            if token.is_none() {
                return Ok(());
            }
        }
        Err(Error::Answer {
            action,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// StopInstances of `ids` (a stopped instance stays stopped).
    pub fn stop(&self, ids: &[String]) -> Result<(), Error> {
        let names: Vec<String> = (1..=ids.len()).map(|i| format!("InstanceId.{i}")).collect();
        let params: Vec<(&str, &str)> = names
            .iter()
            .map(String::as_str)
            .zip(ids.iter().map(String::as_str))
            .collect();
        self.call("StopInstances", &params).map(drop)
    }

    /// CreateSnapshots of every volume of `instance`, at one instant
    /// (crash-consistent across the volumes).
    pub fn create_snapshots(
        &self,
        instance: &str,
        description: &str,
    ) -> Result<Vec<Snapshot>, Error> {
        let action = "CreateSnapshots";
        let xml = self.call(
            action,
            &[
                ("InstanceSpecification.InstanceId", instance),
                ("InstanceSpecification.ExcludeBootVolume", "false"),
                ("Description", description),
                ("CopyTagsFromSource", "volume"),
            ],
        )?;
        snapshots(action, &xml)
    }

    /// DescribeSnapshots of `ids`.
    pub fn snapshots(&self, ids: &[String]) -> Result<Vec<Snapshot>, Error> {
        let action = "DescribeSnapshots";
        let names: Vec<String> = (1..=ids.len()).map(|i| format!("SnapshotId.{i}")).collect();
        let params: Vec<(&str, &str)> = names
            .iter()
            .map(String::as_str)
            .zip(ids.iter().map(String::as_str))
            .collect();
        let xml = self.call(action, &params)?;
        snapshots(action, &xml)
    }

    /// One call, signed, retried as the module says; returns the answer's text.
    fn call(&self, action: &'static str, params: &[(&str, &str)]) -> Result<String, Error> {
        self.rt.block_on(async {
            let mut attempt = 0u32;
            loop {
                let last = attempt + 1 >= MAX_ATTEMPTS;
                match self.call_once(action, params).await {
                    Ok(text) => return Ok(text),
                    Err((e, true)) if !last => {
                        tracing::debug!(action, attempt, "retrying after: {e}");
                        tokio::time::sleep(retry::backoff(
                            self.settings.backoff_base,
                            self.settings.backoff_max,
                            attempt,
                        ))
                        .await;
                        attempt += 1;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        })
    }

    /// One attempt; the error says whether it may be retried.
    async fn call_once(
        &self,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<String, (Error, bool)> {
        let transport = |detail: String, retry| (Error::Transport { action, detail }, retry);
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action)
            .append_pair("Version", API_VERSION);
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish();
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            (
                Error::Setup(format!("no usable AWS credentials: {e}")),
                false,
            )
        })?;
        let identity = credentials.into();
        let signing = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| transport(format!("cannot sign the request: {e}"), false))?
            .into();
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| u.port().map_or(h.to_owned(), |p| format!("{h}:{p}")))
            })
            .ok_or_else(|| transport(format!("{url} is not a usable endpoint"), false))?;
        let headers = [("content-type", content_type), ("host", host.as_str())];
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| transport(format!("cannot sign the request: {e}"), false))?;
        let (instructions, _) = sign(signable, &signing)
            .map_err(|e| transport(format!("cannot sign the request: {e}"), false))?
            .into_parts();
        let mut req = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone());
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        let r = req.send().await.map_err(|e| {
            transport(
                e.to_string(),
                e.is_timeout() || e.is_connect() || e.is_request(),
            )
        })?;
        let status = r.status().as_u16();
        let mut bytes = Vec::new();
        let mut r = r;
        while let Some(chunk) = r
            .chunk()
            .await
            .map_err(|e| transport(format!("the answer was cut off: {e}"), true))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(transport(
                    format!("the answer is over {MAX_ANSWER} bytes"),
                    false,
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (code, message) = match roxmltree::Document::parse(&text) {
            Ok(doc) => {
                let err = doc.descendants().find(|n| n.has_tag_name("Error"));
                (
                    err.map(|e| text_of(e, &["Code"])).unwrap_or_default(),
                    err.map(|e| text_of(e, &["Message"])).unwrap_or_default(),
                )
            }
            Err(_) => (String::new(), String::new()),
        };
        let code = if code.is_empty() {
            format!("HTTP {status}")
        } else {
            code
        };
        let retry = status >= 500
            || matches!(
                code.as_str(),
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "InternalError"
                    | "Unavailable"
            );
        Err((
            Error::Service {
                action,
                code,
                message,
            },
            retry,
        ))
    }
}

fn parse<'a>(action: &'static str, xml: &'a str) -> Result<roxmltree::Document<'a>, Error> {
    roxmltree::Document::parse(xml).map_err(|e| Error::Answer {
        action,
        detail: e.to_string(),
    })
}

/// The text at `path` (child tag names) under `node`, or "".
fn text_of(node: roxmltree::Node<'_, '_>, path: &[&str]) -> String {
    let mut cur = node;
    for name in path {
        match cur.children().find(|n| n.has_tag_name(*name)) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    cur.text().unwrap_or("").trim().to_owned()
}

fn text(node: roxmltree::Node<'_, '_>, path: &[&str]) -> String {
    text_of(node, path)
}

/// The `item`s of every `set` element.
fn items<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    set: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    doc.descendants()
        .filter(move |n| n.has_tag_name(set))
        .flat_map(|s| s.children().filter(|n| n.has_tag_name("item")))
}

/// The answer's top-level `nextToken`, if any.
fn next_token(doc: &roxmltree::Document<'_>) -> Option<String> {
    Some(text(doc.root_element(), &["nextToken"])).filter(|t| !t.is_empty())
}

/// The instances of a DescribeInstances answer, and its NextToken.
fn instances(action: &'static str, xml: &str) -> Result<(Vec<Instance>, Option<String>), Error> {
    let doc = parse(action, xml)?;
    let list = items(&doc, "instancesSet")
        .map(|item| Instance {
            id: text(item, &["instanceId"]),
            state: text(item, &["instanceState", "name"]),
            volumes: children(item, "blockDeviceMapping")
                .map(|m| (text(m, &["deviceName"]), text(m, &["ebs", "volumeId"])))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            instance_type: text(item, &["instanceType"]),
            windows: text(item, &["platform"]).eq_ignore_ascii_case("windows"),
            architecture: text(item, &["architecture"]),
            // The mode it boots in now; `bootMode` alone may say uefi-preferred,
            // which depends on the type.
            boot_mode: Some(text(item, &["currentInstanceBootMode"]))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| match text(item, &["bootMode"]).as_str() {
                    "uefi-preferred" => String::new(),
                    m => m.to_owned(),
                }),
            root_device_type: text(item, &["rootDeviceType"]),
            root_device: text(item, &["rootDeviceName"]),
            tags: children(item, "tagSet")
                .map(|t| (text(t, &["key"]), text(t, &["value"])))
                .collect(),
        })
        .collect();
    Ok((list, next_token(&doc)))
}

/// The `item`s of `node`'s child list `list`.
fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    list: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children()
        .filter(move |n| n.has_tag_name(list))
        .flat_map(|m| m.children().filter(|n| n.has_tag_name("item")))
}

/// The snapshots of a `snapshotSet`.
fn snapshots(action: &'static str, xml: &str) -> Result<Vec<Snapshot>, Error> {
    let doc = parse(action, xml)?;
    Ok(items(&doc, "snapshotSet")
        .map(|item| Snapshot {
            id: text(item, &["snapshotId"]),
            volume: text(item, &["volumeId"]),
            // CreateSnapshots says `state`, DescribeSnapshots `status`.
            state: Some(text(item, &["status"]))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| text(item, &["state"])),
            progress: text(item, &["progress"]),
            start_time: text(item, &["startTime"]),
        })
        .filter(|s| !s.id.is_empty())
        .collect())
}

/// Waits, polling every `every`, until each of `ids` is completed,
/// `limit` has passed or `stop` is set; `progress` sees every poll's answer.
pub fn wait_completed(
    ec2: &Ec2,
    ids: &[String],
    every: Duration,
    limit: Duration,
    stop: &std::sync::atomic::AtomicBool,
    progress: &dyn Fn(&[Snapshot]),
) -> Result<Vec<Snapshot>, WaitError> {
    let started = std::time::Instant::now();
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(WaitError::Interrupted);
        }
        let now = ec2.snapshots(ids).map_err(WaitError::Ec2)?;
        progress(&now);
        if let Some(bad) = now.iter().find(|s| s.state == "error") {
            return Err(WaitError::Failed(bad.id.clone()));
        }
        if now.len() == ids.len() && now.iter().all(|s| s.state == "completed") {
            return Ok(now);
        }
        if started.elapsed() >= limit {
            let pending = now
                .iter()
                .filter(|s| s.state != "completed")
                .map(|s| format!("{} ({})", s.id, s.progress))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(WaitError::TimedOut { limit, pending });
        }
        std::thread::sleep(every);
    }
}

/// Why waiting for snapshots ended without them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// A call failed.
    #[error(transparent)]
    Ec2(Error),
    /// EC2 says a snapshot failed.
    #[error("snapshot {0} failed (EC2 says error); take it again")]
    Failed(String),
    /// The wait was interrupted.
    #[error("the wait for the snapshots was interrupted")]
    Interrupted,
    /// The limit passed first.
    #[error("the snapshots were not completed within {limit:?}: {pending} still pending; wait and run again, or allow longer")]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// The snapshots still pending, with their progress.
        pending: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_ec2_writes_them() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSnapshotsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>
<snapshotSet><item><snapshotId>snap-00000001</snapshotId><volumeId>vol-1</volumeId><status>pending</status><progress>40%</progress></item>
<item><snapshotId>snap-00000002</snapshotId><volumeId>vol-2</volumeId><state>completed</state></item></snapshotSet></DescribeSnapshotsResponse>"#;
        let s = snapshots("DescribeSnapshots", xml).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].state.as_str(), s[0].progress.as_str()),
            ("pending", "40%")
        );
        assert_eq!(
            (s[1].volume.as_str(), s[1].state.as_str()),
            ("vol-2", "completed")
        );
        assert!(snapshots("DescribeSnapshots", "<not xml").is_err());
    }

    #[test]
    fn the_endpoint_follows_the_overrides() {
        let s = Settings {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            ..Settings::default()
        };
        if std::env::var_os("AWS_ENDPOINT_URL_EC2").is_none() {
            assert_eq!(endpoint(&s, "eu-west-1"), "http://127.0.0.1:9");
        }
    }
}
