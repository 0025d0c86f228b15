//! The HTTP client the EBS SDK is given: hyper over rustls, as the SDK's
//! own, with one change: a connection's read buffer stops at
//! [`READ_BUFFER`]. Hyper lets it grow to about 400 KiB, and an answer that
//! waits for a block buffer (the copy is slower than EBS) sits in it; with
//! hundreds of requests in flight far from the region, that was most of
//! the memory. Measured with `scripts/bench-ebs`'s snapshot at 400 ms: at
//! 420 blocks/s, 131 MiB with hyper's default and 55 MiB at 64 KiB; at
//! 1,000/s (507 in flight), 93 MiB at 64 KiB and 80 MiB at 32 KiB, CPU
//! within the noise; 16 KiB cost 28% more CPU in reads. The SDK's builder
//! does not expose the setting, hence this client.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::connect::{
    capture_connection, CaptureConnection, HttpConnector as TcpConnector, HttpInfo,
};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The most a connection's read buffer holds (hyper's floor is 8 KiB).
pub const READ_BUFFER: usize = 32 * 1024;

type Hyper =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

/// A connector's timeouts: to connect, and for an answer's head.
type Timeouts = (Option<Duration>, Option<Duration>);

/// Hands the SDK one connector (one connection pool) per set of timeouts.
#[derive(Debug, Default)]
pub struct SmallBufferClient {
    connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for SmallBufferClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        // A map of pools, whole after any panic: keep using it.
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(key.0, key.1)))
            .clone()
    }
}

/// One connection pool with its timeouts.
#[derive(Clone)]
struct Connector {
    client: Hyper,
    /// How long an answer's head may take.
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Connector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(connect_timeout);
        tcp.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        // No system roots: HTTPS then fails on each call, naming the
        // certificate, and plain HTTP (a local endpoint) still works.
        let tls = match tls.with_native_roots() {
            Ok(with_roots) => with_roots,
            Err(e) => {
                tracing::warn!(
                    "no system root certificates ({e}); HTTPS endpoints will be refused"
                );
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(rustls_config_without_roots())
            }
        };
        let https = tls.https_or_http().enable_http1().wrap_connector(tcp);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER)
            .build(https);
        Connector {
            client,
            read_timeout,
        }
    }
}

/// A TLS configuration that trusts no certificate.
fn rustls_config_without_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder_with_protocol_versions(rustls::DEFAULT_VERSIONS)
    })
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        // The SDK closes a connection after a timeout or a 5xx on it
        // (poisoning): it finds the connection through this.
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let answer = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let answer = match read_timeout {
                Some(limit) => match tokio::time::timeout(limit, answer).await {
                    Ok(a) => a,
                    Err(_) => {
                        return Err(ConnectorError::timeout(
                            format!("no answer within {limit:?}").into(),
                        ))
                    }
                },
                None => answer.await,
            };
            match answer {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(connector_error(e)),
            }
        })
    }
}

/// The connection a request went out on, as the SDK's poisoning wants it.
fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    let connected = captured.connection_metadata();
    let connected = connected.as_ref()?;
    let mut extras = hyper::http::Extensions::new();
    connected.get_extras(&mut extras);
    let info = extras.get::<HttpInfo>();
    let poison = captured.clone();
    let mut meta = ConnectionMetadata::builder()
        .proxied(connected.is_proxied())
        .poison_fn(move || {
            if let Some(c) = poison.connection_metadata().as_ref() {
                c.poison();
            }
        });
    meta.set_local_addr(info.map(HttpInfo::local_addr))
        .set_remote_addr(info.map(HttpInfo::remote_addr));
    Some(meta.build())
}

/// What the SDK's retry and our classification need to know of a failure:
/// a mistake of ours (never retried), a timeout, or a transport failure.
fn connector_error(err: hyper_util::client::legacy::Error) -> ConnectorError {
    if certificate_refused(&err) {
        // Asking again gets the same certificate: not a transport failure.
        return ConnectorError::user(err.into());
    }
    if err.is_connect() {
        return ConnectorError::io(err.into());
    }
    let hyper = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<hyper::Error>());
    match hyper {
        Some(h) if h.is_timeout() => ConnectorError::timeout(err.into()),
        Some(h) if h.is_user() => ConnectorError::user(err.into()),
        Some(h) if h.is_incomplete_message() => {
            ConnectorError::other(err.into(), Some(ErrorKind::TransientError))
        }
        // Closed, reset or refused connections, and I/O errors.
        _ => ConnectorError::io(err.into()),
    }
}

/// True when the TLS handshake refused the server's certificate (unknown
/// issuer, wrong name, expired), somewhere in `err`'s chain of causes.
pub(crate) fn certificate_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    // A chain of causes is short; the bound keeps a cyclic one from looping.
    for _ in 0..32 {
        let Some(e) = next else { return false };
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        // An I/O error's source skips its payload: look at the payload itself.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_under_io_errors_and_nothing_else_is() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        assert!(certificate_refused(&wrapped));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!certificate_refused(&reset));
        let other =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(!certificate_refused(&other));
    }
}
