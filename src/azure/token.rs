//! Where bearer tokens come from: a token the user already holds (a file or
//! an environment variable, as `az account get-access-token` prints it; also
//! how the emulator is reached), or the azure_identity credentials in a
//! fixed order, the first that yields a token winning. Two audiences:
//! Resource Manager for every run, and managed disks' data plane for the
//! uploads and reads of disks that want an Entra token beside their SAS.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ManagedIdentityCredential,
    WorkloadIdentityCredential,
};

use super::{Error, Secret, ARM_SCOPE, DISK_SCOPE};

/// The environment variable holding a pre-obtained ARM bearer token.
pub const TOKEN_ENV: &str = "EBS2AZURE_ARM_TOKEN";
/// The environment variable holding a pre-obtained token for disks' upload
/// and read URLs (`az account get-access-token --resource https://disk.azure.com/`).
pub const DISK_TOKEN_ENV: &str = "EBS2AZURE_DISK_TOKEN";

/// A future of a token, boxed so that sources can sit behind `dyn`.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret, Error>> + Send + 'a>>;

/// Something that hands out bearer tokens for one audience.
pub trait TokenSource: Send + Sync {
    /// A token valid for its audience now.
    fn token(&self) -> TokenFuture<'_>;

    /// Which credential this is, for the run report (never the token).
    fn describe(&self) -> String;
}

/// A bearer token obtained beforehand.
pub struct StaticToken {
    token: Secret,
    origin: String,
}

impl StaticToken {
    /// A token the caller holds already (a library user's own credential).
    pub fn new(token: impl Into<String>) -> StaticToken {
        StaticToken {
            token: Secret::new(token),
            origin: "a token given by the caller".into(),
        }
    }

    /// Reads a token file: the bare token, or the JSON of `az account get-access-token`.
    pub fn from_file(path: &Path) -> Result<StaticToken, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Token(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        let token = parse_token(&text).ok_or_else(|| {
            Error::Token(format!(
                "the token file {} holds neither a bearer token nor the JSON of `az account get-access-token`",
                path.display()
            ))
        })?;
        Ok(StaticToken {
            token,
            origin: format!("token file {}", path.display()),
        })
    }

    /// The token in [`TOKEN_ENV`], if set.
    pub fn from_env() -> Option<StaticToken> {
        StaticToken::from_var(TOKEN_ENV)
    }

    /// The token in the environment variable `var`, if set.
    fn from_var(var: &str) -> Option<StaticToken> {
        let text = std::env::var(var).ok()?;
        Some(StaticToken {
            token: parse_token(&text)?,
            origin: format!("environment variable {var}"),
        })
    }
}

/// A bare token, or the `accessToken` field of az's JSON.
fn parse_token(text: &str) -> Option<Secret> {
    let text = text.trim();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let t = v.get("accessToken")?.as_str()?;
        return (!t.is_empty()).then(|| Secret::new(t));
    }
    let ok = !text.is_empty() && !text.chars().any(char::is_whitespace);
    ok.then(|| Secret::new(text))
}

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let t = self.token.clone();
        Box::pin(async move { Ok(t) })
    }

    fn describe(&self) -> String {
        format!("pre-obtained token ({})", self.origin)
    }
}

/// azure_identity's credentials tried in order: client secret from the
/// environment, workload identity, managed identity, Azure CLI. The first
/// that yields a token is kept for the rest of the run.
pub struct IdentityChain {
    candidates: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: Mutex<Option<usize>>,
    scope: &'static str,
}

impl IdentityChain {
    /// The chain with every credential this environment can build, for
    /// Resource Manager.
    pub fn new() -> IdentityChain {
        IdentityChain::for_scope(ARM_SCOPE)
    }

    /// The same chain for tokens of `scope`.
    pub fn for_scope(scope: &'static str) -> IdentityChain {
        let mut candidates: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(tenant), Some(client), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            if let Ok(c) = ClientSecretCredential::new(&tenant, client, secret.into(), None) {
                candidates.push(("client secret (AZURE_CLIENT_SECRET)", c));
            }
        }
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            if let Ok(c) = WorkloadIdentityCredential::new(None) {
                candidates.push(("workload identity", c));
            }
        }
        if let Ok(c) = ManagedIdentityCredential::new(None) {
            candidates.push(("managed identity", c));
        }
        if let Ok(c) = AzureCliCredential::new(None) {
            candidates.push(("Azure CLI", c));
        }
        IdentityChain {
            candidates,
            chosen: Mutex::new(None),
            scope,
        }
    }

    async fn get(&self) -> Result<Secret, Error> {
        let chosen = self.chosen.lock().ok().and_then(|c| *c);
        let order: Vec<usize> = match chosen {
            Some(i) => vec![i],
            None => (0..self.candidates.len()).collect(),
        };
        let mut tried = Vec::new();
        for i in order {
            let (name, cred) = &self.candidates[i];
            // Managed identity on a machine without one can take long to say no.
            let got =
                tokio::time::timeout(Duration::from_secs(30), cred.get_token(&[self.scope], None))
                    .await;
            match got {
                Ok(Ok(t)) => {
                    if let Ok(mut c) = self.chosen.lock() {
                        *c = Some(i);
                    }
                    return Ok(Secret::new(t.token.secret()));
                }
                Ok(Err(e)) => tried.push(format!("{name}: {}", first_line(&e.to_string()))),
                Err(_) => tried.push(format!("{name}: no answer in 30 s")),
            }
        }
        Err(Error::Token(format!(
            "no credential worked ({}); set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, run `az login`, or give a token file",
            if tried.is_empty() { "none available".to_owned() } else { tried.join("; ") }
        )))
    }
}

impl Default for IdentityChain {
    fn default() -> Self {
        IdentityChain::new()
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl TokenSource for IdentityChain {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.get())
    }

    fn describe(&self) -> String {
        let chosen = self.chosen.lock().ok().and_then(|c| *c);
        match chosen {
            Some(i) => format!("azure_identity: {}", self.candidates[i].0),
            None => "azure_identity (none used yet)".to_owned(),
        }
    }
}

/// The token source for a run: `--arm-token-file`, then [`TOKEN_ENV`], then
/// the azure_identity chain.
pub fn from_args(token_file: Option<&Path>) -> Result<Arc<dyn TokenSource>, Error> {
    if let Some(p) = token_file {
        return Ok(Arc::new(StaticToken::from_file(p)?));
    }
    if let Some(t) = StaticToken::from_env() {
        return Ok(Arc::new(t));
    }
    Ok(Arc::new(IdentityChain::new()))
}

/// The token source for disks' upload and read URLs, asked only when a disk
/// wants one (`dataAccessAuthMode` AzureActiveDirectory): `token_file`, then
/// [`DISK_TOKEN_ENV`], then the azure_identity chain for [`DISK_SCOPE`].
pub fn disk_from_args(token_file: Option<&Path>) -> Result<Arc<dyn TokenSource>, Error> {
    if let Some(p) = token_file {
        return Ok(Arc::new(StaticToken::from_file(p)?));
    }
    if let Some(t) = StaticToken::from_var(DISK_TOKEN_ENV) {
        return Ok(Arc::new(t));
    }
    Ok(Arc::new(IdentityChain::for_scope(DISK_SCOPE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_bare_or_from_az_json() {
        assert_eq!(parse_token("abc.def\n").unwrap().expose(), "abc.def");
        let az =
            r#"{"accessToken": "eyJ0", "expiresOn": "2026-01-01 00:00:00", "tokenType": "Bearer"}"#;
        assert_eq!(parse_token(az).unwrap().expose(), "eyJ0");
        assert!(parse_token("").is_none());
        assert!(parse_token("two words").is_none());
        assert!(parse_token("{\"other\": 1}").is_none());
    }

    #[test]
    fn a_token_file_is_read_and_described_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "tok123\n").unwrap();
        let s = StaticToken::from_file(&p).unwrap();
        assert!(!s.describe().contains("tok123"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(s.token()).unwrap().expose(), "tok123");
        assert!(StaticToken::from_file(&dir.path().join("missing")).is_err());
    }
}
