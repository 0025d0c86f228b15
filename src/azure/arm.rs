//! Resource Manager calls of a direct upload: create a disk for upload,
//! read its state, grant and revoke SAS access, delete it. Long-running
//! operations are followed through `Azure-AsyncOperation` or `Location`,
//! honouring `Retry-After`, under a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::token::TokenSource;
use super::COMPUTE_API_VERSION;
use super::{check_endpoint, transport, Error, RetryBudget, Secret, Settings};

/// Most polls of one long-running operation.
const MAX_POLLS: u32 = 10_000;

/// Which managed disk.
#[derive(Clone, Debug, Serialize)]
pub struct DiskRef {
    /// Subscription id.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Disk name.
    pub name: String,
}

impl DiskRef {
    /// The disk's resource id.
    pub fn id(&self) -> String {
        self.path()
    }

    fn path(&self) -> String {
        use super::names::segment;
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{}",
            segment(&self.subscription),
            segment(&self.resource_group),
            segment(&self.name)
        )
    }

    /// A disk reference whose subscription, resource group and name follow
    /// Azure's rules; the first problem otherwise.
    pub fn checked(
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Result<DiskRef, String> {
        use super::names;
        let problem = names::subscription_problem(subscription)
            .or_else(|| names::resource_group_problem(resource_group))
            .or_else(|| names::disk_name_problem(name));
        match problem {
            Some(p) => Err(p),
            None => Ok(DiskRef {
                subscription: subscription.to_owned(),
                resource_group: resource_group.to_owned(),
                name: name.to_owned(),
            }),
        }
    }
}

pub use crate::kinds::{HyperVGeneration, OsType};

/// A managed disk's `diskState`, as the Compute API's `DiskState` enum
/// names it (an answer outside the enum is kept as [`DiskState::Other`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DiskState {
    /// Not attached to a VM: the state an upload ends in.
    Unattached,
    /// Attached to a running VM.
    Attached,
    /// Attached to a stopped, deallocated VM.
    Reserved,
    /// Frozen for a snapshot or restore point.
    Frozen,
    /// A SAS is open on it (after beginGetAccess with Read).
    ActiveSas,
    /// A SAS is open while it is frozen.
    ActiveSasFrozen,
    /// Created for upload; no SAS yet.
    ReadyToUpload,
    /// Created for upload, with a write SAS open.
    ActiveUpload,
    /// A state this client does not know.
    Other(String),
}

impl DiskState {
    /// The state ARM's JSON names `s`.
    pub fn parse(s: &str) -> DiskState {
        match s {
            "Unattached" => DiskState::Unattached,
            "Attached" => DiskState::Attached,
            "Reserved" => DiskState::Reserved,
            "Frozen" => DiskState::Frozen,
            "ActiveSAS" => DiskState::ActiveSas,
            "ActiveSASFrozen" => DiskState::ActiveSasFrozen,
            "ReadyToUpload" => DiskState::ReadyToUpload,
            "ActiveUpload" => DiskState::ActiveUpload,
            other => DiskState::Other(other.to_owned()),
        }
    }

    /// True for the states an interrupted upload can continue from.
    pub fn is_upload(&self) -> bool {
        matches!(self, DiskState::ReadyToUpload | DiskState::ActiveUpload)
    }
}

impl std::fmt::Display for DiskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            DiskState::Unattached => "Unattached",
            DiskState::Attached => "Attached",
            DiskState::Reserved => "Reserved",
            DiskState::Frozen => "Frozen",
            DiskState::ActiveSas => "ActiveSAS",
            DiskState::ActiveSasFrozen => "ActiveSASFrozen",
            DiskState::ReadyToUpload => "ReadyToUpload",
            DiskState::ActiveUpload => "ActiveUpload",
            DiskState::Other(s) => s,
        })
    }
}

impl std::str::FromStr for DiskState {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<DiskState, Self::Err> {
        Ok(DiskState::parse(s))
    }
}

impl Serialize for DiskState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::kinds::as_text::serialize(self, s)
    }
}

/// What the disk to create looks like.
#[derive(Clone, Debug, Serialize)]
pub struct DiskSpec {
    /// Azure region, e.g. westeurope.
    pub location: String,
    /// SKU, e.g. Premium_LRS.
    pub sku: String,
    /// Set for OS disks.
    pub os_type: Option<OsType>,
    /// Hyper-V generation (OS disks).
    pub hyper_v_generation: Option<HyperVGeneration>,
    /// Availability zone.
    pub zone: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// The VHD's size including its 512-byte footer.
    pub upload_size_bytes: u64,
    /// Customer-managed keys.
    pub encryption: Option<DiskEncryption>,
    /// Whether the upload URL also wants an Entra token.
    pub data_access: DataAccessAuthMode,
}

/// Who may use a disk's upload and read URLs: the Compute API's
/// `dataAccessAuthMode`. With AzureActiveDirectory the SAS alone is not
/// enough; each request also carries an Entra token of an identity allowed
/// to read or write the disk's data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum DataAccessAuthMode {
    /// The SAS is enough (Azure's default).
    #[default]
    None,
    /// The SAS and an Entra token.
    AzureActiveDirectory,
}

impl DataAccessAuthMode {
    /// True for Azure's default, which the disk body leaves out.
    pub fn is_none(&self) -> bool {
        *self == DataAccessAuthMode::None
    }
}

impl std::fmt::Display for DataAccessAuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataAccessAuthMode::None => "None",
            DataAccessAuthMode::AzureActiveDirectory => "AzureActiveDirectory",
        })
    }
}

impl std::str::FromStr for DataAccessAuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(DataAccessAuthMode::None),
            "azureactivedirectory" | "entra" => Ok(DataAccessAuthMode::AzureActiveDirectory),
            _ => Err(format!(
                "data access auth mode {s:?} is not AzureActiveDirectory or None"
            )),
        }
    }
}

/// SAS access kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Upload.
    Write,
    /// Read back.
    Read,
}

impl Access {
    /// The `access` value of beginGetAccess (the Compute API's `AccessLevel`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Write => "Write",
            Access::Read => "Read",
        }
    }
}

/// A disk's customer-managed-key encryption (`encryption` of the Compute
/// API's disk properties).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiskEncryption {
    /// The disk encryption set's resource id.
    pub set: String,
    /// Platform-managed keys as well (double encryption).
    pub double: bool,
}

impl DiskEncryption {
    /// The Compute API's `encryption.type`.
    pub fn kind(&self) -> &'static str {
        if self.double {
            "EncryptionAtRestWithPlatformAndCustomerKeys"
        } else {
            "EncryptionAtRestWithCustomerKey"
        }
    }
}

/// A disk as Resource Manager reports it.
#[derive(Clone, Debug, Serialize)]
pub struct DiskInfo {
    /// ReadyToUpload, ActiveUpload, Unattached, ActiveSAS, ...
    pub state: DiskState,
    /// uploadSizeBytes it was created with, if any.
    pub upload_size_bytes: Option<u64>,
    /// Its resource id.
    pub id: String,
}

/// A Resource Manager client for managed disks.
pub struct Arm {
    http: reqwest::Client,
    endpoint: String,
    token: Arc<dyn TokenSource>,
    settings: Settings,
    budget: Arc<RetryBudget>,
}

impl Arm {
    /// A client for `settings.arm_endpoint` with tokens from `token`.
    pub fn new(
        settings: &Settings,
        token: Arc<dyn TokenSource>,
        budget: Arc<RetryBudget>,
    ) -> Result<Arm, Error> {
        let endpoint = check_endpoint(&settings.arm_endpoint)?;
        Ok(Arm {
            http: super::http_client(settings)?,
            endpoint: endpoint.as_str().trim_end_matches('/').to_owned(),
            token,
            settings: settings.clone(),
            budget,
        })
    }

    /// The credential in use, for the report.
    pub fn credential(&self) -> String {
        self.token.describe()
    }

    fn url(&self, path: &str) -> String {
        self.url_at(path, COMPUTE_API_VERSION)
    }

    /// The URL of `path` under `api_version`.
    fn url_at(&self, path: &str, api_version: &str) -> String {
        format!("{}{path}?api-version={api_version}", self.endpoint)
    }

    /// One call, retried on throttling, 5xx and transport errors.
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 0;
        loop {
            let token = self.token.token().await?;
            let started = Instant::now();
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose());
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            } else if method == Method::POST {
                req = req.header("Content-Length", "0");
            }
            let e = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.budget.succeeded();
                    return Ok(r);
                }
                Ok(r) => arm_error(what, r).await,
                Err(e) => transport(what, e),
            };
            if !e.is_retryable() {
                return Err(e);
            }
            let failed = super::Failed {
                attempt: &mut attempt,
                started,
                url,
                error: e,
            };
            super::back_off(&self.budget, &self.settings, failed).await?;
        }
    }

    /// Follows a long-running operation to its end; returns its output, if any.
    async fn follow(&self, what: &str, resp: reqwest::Response) -> Result<Option<Value>, Error> {
        let status = resp.status();
        let async_op = header(&resp, "azure-asyncoperation");
        let location = header(&resp, "location");
        let mut wait = retry_after(&resp);
        if status != StatusCode::ACCEPTED && status != StatusCode::CREATED {
            return Ok(body_json(resp).await);
        }
        if async_op.is_none() && location.is_none() {
            return Ok(body_json(resp).await);
        }
        let deadline = Instant::now() + self.settings.operation_timeout;
        for _ in 0..MAX_POLLS {
            if Instant::now() >= deadline {
                return Err(Error::Operation {
                    what: what.into(),
                    detail: format!(
                        "not finished after {} s",
                        self.settings.operation_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(wait).await;
            if let Some(op) = &async_op {
                check_endpoint(op)?;
                let r = self.call(what, Method::GET, op, None).await?;
                wait = retry_after(&r);
                let v = body_json(r).await.unwrap_or(Value::Null);
                match v.get("status").and_then(Value::as_str).unwrap_or("") {
                    "Succeeded" => {
                        if let Some(out) = v.pointer("/properties/output") {
                            return Ok(Some(out.clone()));
                        }
                        return match &location {
                            Some(loc) => self.result(what, loc).await,
                            None => Ok(None),
                        };
                    }
                    ended @ ("Failed" | "Canceled") => {
                        let (code, msg) = cloud_error(v.get("error").unwrap_or(&Value::Null));
                        return Err(Error::Operation {
                            what: what.into(),
                            detail: format!("the operation ended {ended} ({code}): {msg}"),
                        });
                    }
                    _ => continue,
                }
            } else if let Some(loc) = &location {
                check_endpoint(loc)?;
                let r = self.call(what, Method::GET, loc, None).await?;
                if r.status() == StatusCode::ACCEPTED {
                    wait = retry_after(&r);
                    continue;
                }
                return Ok(body_json(r).await);
            }
        }
        Err(Error::Operation {
            what: what.into(),
            detail: format!("still running after {MAX_POLLS} polls"),
        })
    }

    /// The result at an operation's `Location`, once it is there.
    async fn result(&self, what: &str, loc: &str) -> Result<Option<Value>, Error> {
        check_endpoint(loc)?;
        for _ in 0..MAX_POLLS {
            let r = self.call(what, Method::GET, loc, None).await?;
            if r.status() != StatusCode::ACCEPTED {
                return Ok(body_json(r).await);
            }
            tokio::time::sleep(retry_after(&r)).await;
        }
        Err(Error::Operation {
            what: what.into(),
            detail: "no result".into(),
        })
    }

    /// The disk, or `None` when it does not exist.
    pub async fn get(&self, disk: &DiskRef) -> Result<Option<DiskInfo>, Error> {
        let what = format!("reading disk {}", disk.name);
        match self
            .call(&what, Method::GET, &self.url(&disk.path()), None)
            .await
        {
            Ok(r) => {
                let v = body_json(r).await.unwrap_or(Value::Null);
                Ok(Some(DiskInfo {
                    state: DiskState::parse(
                        v.pointer("/properties/diskState")
                            .and_then(Value::as_str)
                            .unwrap_or("Unknown"),
                    ),
                    upload_size_bytes: v
                        .pointer("/properties/creationData/uploadSizeBytes")
                        .and_then(Value::as_u64),
                    id: v
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                }))
            }
            Err(Error::Arm { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an empty disk to upload into and waits until it is ReadyToUpload.
    pub async fn create_for_upload(
        &self,
        disk: &DiskRef,
        spec: &DiskSpec,
    ) -> Result<DiskInfo, Error> {
        let what = format!("creating disk {}", disk.name);
        let mut props = json!({
            "creationData": {"createOption": "Upload", "uploadSizeBytes": spec.upload_size_bytes},
        });
        if let Some(os) = spec.os_type {
            props["osType"] = json!(os.to_string());
        }
        if let Some(g) = spec.hyper_v_generation {
            props["hyperVGeneration"] = json!(g.to_string());
        }
        let mut body = json!({
            "location": spec.location,
            "sku": {"name": spec.sku},
            "properties": props,
        });
        if let Some(z) = &spec.zone {
            body["zones"] = json!([z]);
        }
        if let Some(e) = &spec.encryption {
            body["properties"]["encryption"] =
                json!({"type": e.kind(), "diskEncryptionSetId": e.set});
        }
        if !spec.data_access.is_none() {
            body["properties"]["dataAccessAuthMode"] = json!(spec.data_access.to_string());
        }
        if !spec.tags.is_empty() {
            let tags: serde_json::Map<String, Value> = spec
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            body["tags"] = Value::Object(tags);
        }
        let r = self
            .call(&what, Method::PUT, &self.url(&disk.path()), Some(&body))
            .await?;
        self.follow(&what, r).await?;
        let info = self.get(disk).await?.ok_or_else(|| Error::Operation {
            what: what.clone(),
            detail: "the disk is gone after its creation".into(),
        })?;
        if info.state != DiskState::ReadyToUpload {
            return Err(Error::State {
                disk: disk.name.clone(),
                state: info.state.clone(),
                advice: "a new upload needs ReadyToUpload; delete the disk or choose another name"
                    .into(),
            });
        }
        Ok(info)
    }

    /// Grants SAS access to the disk's blob and returns the SAS URL.
    pub async fn begin_access(&self, disk: &DiskRef, access: Access) -> Result<Secret, Error> {
        let what = format!("granting {} access to disk {}", access.as_str(), disk.name);
        let body = json!({
            "access": access.as_str(),
            "durationInSeconds": self.settings.sas_duration.as_secs(),
        });
        let url = self.url(&format!("{}/beginGetAccess", disk.path()));
        let r = self.call(&what, Method::POST, &url, Some(&body)).await?;
        let out = self.follow(&what, r).await?.unwrap_or(Value::Null);
        let sas = out
            .get("accessSAS")
            .or_else(|| out.get("accessSas"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Protocol {
                what: what.clone(),
                detail: "no accessSAS in the result".into(),
            })?;
        check_endpoint(sas).map_err(|_| Error::Protocol {
            what,
            detail: "the SAS URL is not https (nor loopback http)".into(),
        })?;
        Ok(Secret::new(sas))
    }

    /// Revokes SAS access; for an upload this also checks the footer and ends it.
    pub async fn end_access(&self, disk: &DiskRef) -> Result<(), Error> {
        let what = format!("ending access to disk {}", disk.name);
        let url = self.url(&format!("{}/endGetAccess", disk.path()));
        let r = self.call(&what, Method::POST, &url, None).await?;
        self.follow(&what, r).await?;
        Ok(())
    }

    /// PUTs the resource at `path` (under `api_version`) and follows the
    /// long-running operation; returns the resource as ARM reports it.
    pub async fn put_resource(
        &self,
        what: &str,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> Result<Option<Value>, Error> {
        self.write_resource(Method::PUT, what, path, api_version, body)
            .await
    }

    /// A PUT or PATCH of the resource at `path`, its operation followed.
    async fn write_resource(
        &self,
        method: Method,
        what: &str,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> Result<Option<Value>, Error> {
        let url = self.url_at(path, api_version);
        let r = self.call(what, method, &url, Some(body)).await?;
        self.follow(what, r).await
    }

    /// The resource at `path`, or `None` when it does not exist.
    pub async fn get_resource(
        &self,
        what: &str,
        path: &str,
        api_version: &str,
    ) -> Result<Option<Value>, Error> {
        let url = self.url_at(path, api_version);
        match self.call(what, Method::GET, &url, None).await {
            Ok(r) => Ok(body_json(r).await),
            Err(Error::Arm { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PATCHes the resource at `path` and follows the operation.
    pub async fn patch_resource(
        &self,
        what: &str,
        path: &str,
        api_version: &str,
        body: &Value,
    ) -> Result<Option<Value>, Error> {
        self.write_resource(Method::PATCH, what, path, api_version, body)
            .await
    }

    /// Deletes the resource at `path` (nothing happens if it does not exist).
    pub async fn delete_resource(
        &self,
        what: &str,
        path: &str,
        api_version: &str,
    ) -> Result<(), Error> {
        let url = self.url_at(path, api_version);
        match self.call(what, Method::DELETE, &url, None).await {
            Ok(r) => self.follow(what, r).await.map(|_| ()),
            Err(Error::Arm { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Locks a finished disk's network access: no SAS export or upload
    /// (`networkAccessPolicy` DenyAll) and no public access.
    pub async fn lock_network(&self, disk: &DiskRef) -> Result<(), Error> {
        let what = format!("locking the network access of disk {}", disk.name);
        let body = json!({"properties": {"networkAccessPolicy": "DenyAll", "publicNetworkAccess": "Disabled"}});
        self.patch_resource(&what, &disk.path(), COMPUTE_API_VERSION, &body)
            .await
            .map(drop)
    }

    /// Deletes the disk (nothing happens if it does not exist).
    pub async fn delete(&self, disk: &DiskRef) -> Result<(), Error> {
        let what = format!("deleting disk {}", disk.name);
        let r = self
            .call(&what, Method::DELETE, &self.url(&disk.path()), None)
            .await;
        match r {
            Ok(r) => self.follow(&what, r).await.map(|_| ()),
            Err(Error::Arm { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The wait an answer asks for (`Retry-After` seconds, at most a minute; one second if absent).
fn retry_after(r: &reqwest::Response) -> Duration {
    let secs = header(r, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.min(60))
}

async fn body_json(r: reqwest::Response) -> Option<Value> {
    let bytes = r.bytes().await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// ARM's error answer as an [`Error`].
async fn arm_error(what: &str, r: reqwest::Response) -> Error {
    let status = r.status().as_u16();
    let v = body_json(r).await.unwrap_or(Value::Null);
    let (code, message) = cloud_error(v.get("error").unwrap_or(&Value::Null));
    Error::Arm {
        what: what.into(),
        status,
        code,
        message,
    }
}

/// Most levels of `details` followed into a CloudError.
const MAX_DETAIL_DEPTH: usize = 8;

/// The code and message of a CloudError's `error` (or an operation's):
/// where it has `details`, the innermost first one, which is where Compute
/// puts the real cause, after the outer message.
fn cloud_error(e: &Value) -> (String, String) {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut inner = e;
    for _ in 0..MAX_DETAIL_DEPTH {
        match inner
            .get("details")
            .and_then(Value::as_array)
            .and_then(|d| d.first())
        {
            Some(d) if d.is_object() => inner = d,
            _ => break,
        }
    }
    let code = Some(text(inner, "code"))
        .filter(|c| !c.is_empty())
        .or_else(|| Some(text(e, "code")).filter(|c| !c.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    let (outer, innermost) = (text(e, "message"), text(inner, "message"));
    let message = if std::ptr::eq(inner, e) || outer.is_empty() || outer == innermost {
        innermost
    } else if innermost.is_empty() {
        outer
    } else {
        format!("{outer} {innermost}")
    };
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_errors_innermost_detail_is_its_cause() {
        let plain = json!({"code": "InvalidParameter", "message": "bad sku", "target": "sku.name"});
        assert_eq!(
            cloud_error(&plain),
            ("InvalidParameter".into(), "bad sku".into())
        );
        let wrapped = json!({"code": "BadRequest", "message": "The request failed; see details.",
            "details": [{"code": "OperationNotAllowed", "message": "outer detail",
                "details": [{"code": "QuotaExceeded", "message": "Disk quota reached in westeurope."}]}]});
        assert_eq!(
            cloud_error(&wrapped),
            (
                "QuotaExceeded".into(),
                "The request failed; see details. Disk quota reached in westeurope.".into()
            )
        );
        let odd = json!({"code": "X", "message": "m", "details": ["not an object"]});
        assert_eq!(cloud_error(&odd), ("X".into(), "m".into()));
        assert_eq!(cloud_error(&Value::Null), ("unknown".into(), String::new()));
    }
}
