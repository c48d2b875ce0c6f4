//! Outbound proxies: the TCP connector under every upstream connection (the backend over
//! TLS or plain HTTP, the token endpoint, `/wham/usage`), as the Codex CLI honours them.
//!
//! Owns: choosing, per destination, a direct connection, an HTTP `CONNECT` tunnel or a
//! SOCKS5 proxy (hyper-util's `Tunnel` and `SocksV5` connectors), from `--upstream-proxy`
//! (every destination) or else the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! lower or upper case, and `NO_PROXY`, through hyper-util's `Matcher`). Loopback
//! destinations (`localhost`, `127.0.0.0/8`, `::1`) always connect directly: a local test
//! backend or emulator is never sent through a proxy. Credentials in a proxy URL are sent
//! as the proxy asks (Basic for `CONNECT`, user/password for SOCKS5) and never logged.
//! Does not own: TLS (hyper-rustls wraps this connector) or HTTP.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector under every upstream connection (cheap to clone).
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    matcher: Option<std::sync::Arc<Matcher>>,
}

/// The TCP side of every upstream connection: no Nagle, a 15 s connect timeout, TCP
/// keepalive.
fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(15)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

impl Connector {
    /// `proxy`: `--upstream-proxy` (`http://`, `https://`, `socks5://` or `socks5h://`, with
    /// optional `user:password@`); `None`: the environment's proxies, if any.
    pub fn new(proxy: Option<&str>) -> Connector {
        let matcher = match proxy {
            Some(url) => Some(Matcher::builder().all(url.to_owned()).build()),
            None => {
                let from_env = [
                    "HTTPS_PROXY",
                    "https_proxy",
                    "HTTP_PROXY",
                    "http_proxy",
                    "ALL_PROXY",
                    "all_proxy",
                ]
                .iter()
                .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
                from_env.then(Matcher::from_env)
            }
        };
        Connector {
            direct: tcp(),
            matcher: matcher.map(std::sync::Arc::new),
        }
    }

    /// The proxy for `dst`, if one applies.
    fn route(&self, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
        if dst.host().is_none_or(is_loopback) {
            return None;
        }
        self.matcher.as_ref()?.intercept(dst)
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1 (bracketed or not).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(via) = self.route(&dst) else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let proxy = via.uri().clone();
        match proxy.scheme_str() {
            Some(scheme @ ("socks5" | "socks5h")) => {
                let mut socks = SocksV5::new(proxy.clone(), self.direct.clone())
                    // socks5h: the proxy resolves the name; socks5: we do.
                    .local_dns(scheme == "socks5");
                if let Some((user, pass)) = via.raw_auth() {
                    socks = socks.with_auth(user.to_owned(), pass.to_owned());
                }
                Box::pin(async move { socks.call(dst).await.map_err(Into::into) })
            }
            _ => {
                let mut tunnel = Tunnel::new(proxy, self.direct.clone());
                if let Some(auth) = via.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_destinations_never_go_through_a_proxy() {
        let c = Connector::new(Some("http://proxy.example:3128"));
        for dst in [
            "http://127.0.0.1:8080/x",
            "https://localhost/x",
            "http://[::1]:1/",
            "http://a.localhost/",
            "http://127.9.9.9/",
        ] {
            assert!(c.route(&dst.parse().unwrap()).is_none(), "{dst}");
        }
        let via = c.route(&"https://chatgpt.com/backend-api".parse().unwrap());
        assert_eq!(
            via.map(|i| i.uri().to_string()),
            Some("http://proxy.example:3128/".to_owned())
        );
    }
}
