//! The one pooled HTTP client to the upstream (chatgpt.com or the emulator).
//!
//! Owns: building the hyper-util client with hyper-rustls once at start-up (webpki roots plus
//! the PEM roots of `CODEX_AS_API_CA_FILE`, HTTP/1.1 and h2 by ALPN, plain http for loopback
//! test backends; h2 windows sized so that clients that stop reading never stall or break
//! the other streams of a shared connection). Every caller clones the handle; nothing
//! rebuilds it per request. The streaming `/responses` calls over plain HTTP use the driven
//! connections of `conn` instead.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::proxy::Connector;
use crate::error::{Error, ErrorKind};

/// Request body type for every upstream call.
pub type ReqBody = Full<Bytes>;

/// The pooled client handle (cheap to clone).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<Connector>, ReqBody>;

/// Build the pooled client. `ca_file` adds PEM roots (the emulator's test CA, a corporate CA);
/// `proxy` is `--upstream-proxy` (`None`: the environment's, see `proxy`).
pub fn build(ca_file: Option<&Path>, proxy: Option<&str>) -> Result<HttpClient, Error> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Connector::new(proxy));
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .http2_initial_stream_window_size(H2_STREAM_WINDOW)
        .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
        .build(https))
}

/// How far one h2 stream may run ahead of its client: what a client that stops reading
/// leaves buffered in the proxy (hyper's default is 2 MiB).
pub(super) const H2_STREAM_WINDOW: u32 = 1 << 20;

/// The h2 connection window, as large as the protocol allows, so that only stream windows
/// limit buffering. With hyper's 5 MiB, a few clients that stop reading used up the
/// connection's window and stalled every other stream on it; and h2's budget for buffered
/// small DATA frames (half this window; Codex sends one small frame per SSE event) ran out,
/// which closes the connection with `ENHANCE_YOUR_CALM` and fails all of its streams.
pub(super) const H2_CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// An error and its chain of sources, `: `-separated (hyper's own message is often just
/// "client error (Connect)"; the cause is further down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        msg.push_str(": ");
        msg.push_str(&inner.to_string());
        src = inner.source();
    }
    msg
}

/// The TLS client settings: webpki roots plus the PEM roots of `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot read CA file {}: {e}", path.display()),
            )
        })?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| {
                Error::internal(format!("invalid PEM in CA file {}: {e}", path.display()))
            })?;
            roots
                .add(cert)
                .map_err(|e| Error::internal(format!("CA file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::internal(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
