//! A faithful emulator of the ChatGPT Codex backend, served over real loopback HTTP.
//!
//! The real `chatgpt.com` is unreachable from tests, benches and `--demo`, so this module
//! owns a stand-in that speaks the same wire protocol (`protocol/codex-backend.md`) and
//! enforces the same rules, answering with the exact rejection bodies the real backend
//! sends. It owns:
//!
//! * in this file: the [`Emulator`] handle with its snapshots ([`Stats`],
//!   [`RecordedRequest`]), the accept loop, and [`Demo`] (`--demo`: an emulator and
//!   credentials for it in a temporary `auth.json`),
//! * how an emulator starts ([`EmulatorConfig`], [`config`]) and the state every connection
//!   shares ([`shared`]), with small stateless helpers ([`util`]),
//! * the connections the accept loop serves (HTTP/1.1 and h2 through the hyper-util auto
//!   builder, with HTTP/1.1 upgrades, optional TLS with a CA generated at start: [`tls`]),
//! * the Responses WebSocket transport (`protocol/codex-websocket.md`) at
//!   `GET /backend-api/codex/responses` ([`Emulator::ws_url`], [`ws`]): the RFC 6455
//!   handshake through hyper's upgrade, one `response.create` text frame per request and
//!   one event per text frame, `previous_response_id` continuation from the socket's last
//!   response, `generate: false` warm-ups, wrapped `error` frames, the `codex.rate_limits`
//!   and `response.metadata` frames, a per-socket response limit and a refusal mode
//!   ([`WebSocketMode`]); requests take the same path as the SSE route's,
//! * routing and the unary endpoints (models, images, compaction v1, usage, token
//!   refresh: [`routes`]),
//! * what the SSE route and the WebSocket transport share: the path of a parsed
//!   `/responses` body and its refusals ([`admit`]), the response builders and header
//!   readers ([`http`]); `routes` → `ws` → `admit` → `http`, and `routes` uses the last
//!   two directly, never the other way,
//! * the issued-token registry and JWT minting ([`tokens`]), and the sign-in flows of
//!   `auth.openai.com` (authorize with PKCE, device codes: [`oauth`]),
//! * the request rules of §5.3/§6 ([`rules`]) and the model catalog ([`catalog`]),
//! * scripted SSE answers chosen by `EMU:` directives ([`script`]) and the body that
//!   plays them out, chunk per event or coalesced ([`stream`]), counted while live so tests
//!   can see an abandoned upstream request being dropped ([`Emulator::live_streams`]).
//!
//! It also models the account side of the real backend, so admission control and a pool
//! of several accounts can be tested ([`accounts`]):
//!
//! * several ChatGPT accounts ([`Emulator::add_account`]), each with its own ids and
//!   tokens ([`Emulator::issue_credentials_for`]); a refresh keeps the account of its
//!   refresh token, and `/wham/usage` and `/wham/accounts/check` answer for the account
//!   of the presented token,
//! * the per-account concurrency limit ([`EmulatorConfig::account_concurrency`]): since
//!   2026-08 the real backend answers 429 `rate_limit_exceeded` (no `Retry-After`) to a
//!   request that arrives while an account already has a few streams open,
//! * per-account usage limits ([`Emulator::set_usage_limit`]): 429
//!   `usage_limit_reached` with the reset time, checked before the concurrency limit,
//! * per-account counters ([`Emulator::account_stats`]).
//!
//! Dependencies go one way: this file uses its children, and no child uses this file's
//! items. Among the children, `routes` → `ws` → `admit` → `script` → `rules` → `shared`,
//! and `shared` holds the state of `accounts`, `tokens` (→ `oauth`) and `catalog`, which
//! know nothing of it; `config` and `util` are leaves.
//!
//! It does not own anything the proxy uses on its hot path: nothing outside tests,
//! benches and `--demo` should depend on it.

mod accounts;
mod admit;
mod catalog;
mod config;
mod http;
mod oauth;
mod routes;
mod rules;
mod script;
mod shared;
mod stream;
mod tls;
mod tokens;
mod util;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::Error;
use shared::Shared;
use util::lock;

pub use accounts::AccountStats;
pub use config::{Chunking, EmulatorConfig, WebSocketMode};
pub use stream::STAMP_PLACEHOLDER;
pub use tokens::TestCredentials;
pub use util::clock_ns;

/// Counters since start (a snapshot).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Responses requests over either transport (HTTP POSTs and WebSocket frames).
    pub responses_requests: u64,
    pub token_calls: u64,
    pub connections_accepted: u64,
    pub images_requests: u64,
    pub models_requests: u64,
    /// Requests refused because their account had its limit of open streams.
    pub concurrency_refusals: u64,
    /// SSE body bytes handed to the HTTP layer, over every stream.
    pub sse_bytes_sent: u64,
    /// Request body bytes of `POST /codex/responses` as they arrived on the wire
    /// (compressed when zstd).
    pub responses_body_bytes: u64,
    /// Accepted WebSocket upgrades of `/codex/responses`.
    pub ws_handshakes: u64,
    /// `response.create` frames received.
    pub ws_requests: u64,
    /// Text payload bytes of the `response.create` frames received.
    pub ws_request_bytes: u64,
    /// Payload bytes of the WebSocket data frames received, as they crossed the wire
    /// (compressed when permessage-deflate was negotiated).
    pub ws_request_wire_bytes: u64,
    /// `response.create` frames that chained from a known `previous_response_id`.
    pub ws_continuations: u64,
    /// Text payload bytes of the event frames sent over WebSockets.
    pub ws_bytes_sent: u64,
    /// Upgraded sockets ended and closed, by either side.
    pub ws_closed: u64,
}

/// One `POST /codex/responses` as received (body after zstd decoding), or one
/// `response.create` frame of a WebSocket.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Header names in lower case, in arrival order (of the handshake, for a WebSocket).
    pub headers: Vec<(String, String)>,
    /// The JSON body (`null` when it was not JSON) as the backend processes it: for a
    /// WebSocket continuation, the whole conversation (the previous input and output, then
    /// the new items) without `previous_response_id`.
    pub body: serde_json::Value,
    /// Whether the body arrived with `Content-Encoding: zstd`.
    pub zstd: bool,
    /// The `response.create` frame as it arrived over a WebSocket (without `type`; a
    /// continuation has `previous_response_id` and only its new items); `None` over HTTP.
    pub frame: Option<serde_json::Value>,
}

impl RecordedRequest {
    /// Whether it came as a `response.create` frame over a WebSocket.
    pub fn websocket(&self) -> bool {
        self.frame.is_some()
    }
}

/// A running emulator. Dropping it stops the accept loop and every connection.
pub struct Emulator {
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds, spawns the accept loop and returns at once.
    pub async fn start(cfg: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind(cfg.addr).await?;
        let addr = listener.local_addr()?;
        let (acceptor, ca_pem) = if cfg.tls {
            let material = tls::generate().map_err(std::io::Error::other)?;
            (Some(material.acceptor), Some(material.ca_pem))
        } else {
            (None, None)
        };
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(&cfg, stop_rx.clone())?);
        let accept = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stop_rx));
        Ok(Emulator {
            addr,
            tls: cfg.tls,
            ca_pem,
            shared,
            stop,
            accept: Some(accept),
        })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// The upstream root, e.g. `http://127.0.0.1:4242/backend-api`.
    pub fn base_url(&self) -> String {
        format!("{}/backend-api", self.origin())
    }

    /// The WebSocket endpoint of the Responses transport, e.g.
    /// `ws://127.0.0.1:4242/backend-api/codex/responses` (`wss://` with TLS).
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://127.0.0.1:{}/backend-api/codex/responses",
            self.addr.port()
        )
    }

    /// Changes [`EmulatorConfig::websocket`] at run time (sockets already open stay open).
    pub fn set_websocket_mode(&self, mode: WebSocketMode) {
        self.shared.set_websocket_mode(mode);
    }

    /// Changes [`EmulatorConfig::websocket_responses_per_socket`] at run time; open
    /// sockets are checked against the new limit at their next `response.create`.
    pub fn set_websocket_responses_per_socket(&self, limit: Option<u32>) {
        self.shared
            .ws_per_socket
            .store(limit.unwrap_or(u32::MAX), Ordering::Release);
    }

    /// Every open socket forgets its last response (as after a backend restart): a
    /// `previous_response_id` sent next is `previous_response_not_found`.
    pub fn forget_responses(&self) {
        self.shared.ws_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The token endpoint, e.g. `http://127.0.0.1:4242/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.origin())
    }

    /// The sign-in issuer root (what `https://auth.openai.com` is for the real thing):
    /// `{root}/oauth/authorize`, `{root}/oauth/token`, `{root}/api/accounts/deviceauth/…`.
    pub fn auth_base_url(&self) -> String {
        self.origin()
    }

    /// Approve a pending device-code login, as a user entering `user_code` at
    /// `{auth_base_url}/codex/device` would. False when no pending login has that code.
    pub fn approve_device(&self, user_code: &str) -> bool {
        self.shared.oauth.approve_device(user_code)
    }

    /// How many times `POST /api/accounts/deviceauth/token` was called.
    pub fn device_polls(&self) -> u64 {
        self.shared.oauth.device_polls()
    }

    /// PEM of the generated test CA (TLS mode only).
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Mints a token set the emulator accepts for the default account ([`Self::account_id`]);
    /// a negative ttl gives an expired access token.
    pub fn issue_credentials(&self, access_ttl_secs: i64) -> TestCredentials {
        self.shared
            .tokens
            .issue(&self.shared.accounts.default, access_ttl_secs)
    }

    /// Like [`Self::issue_credentials`], for the account `account_id` (its JWT claims and
    /// `TestCredentials::account_id` name it). An id the emulator does not know yet is
    /// registered as a new account.
    pub fn issue_credentials_for(&self, account_id: &str, access_ttl_secs: i64) -> TestCredentials {
        let account = self.shared.accounts.account(account_id);
        self.shared.tokens.issue(&account, access_ttl_secs)
    }

    /// The id of the default account (the one [`Self::issue_credentials`] and the sign-in
    /// flows issue tokens for).
    pub fn account_id(&self) -> String {
        self.shared.accounts.default.id.clone()
    }

    /// Creates an account with a new id and its own user id; returns the account id.
    pub fn add_account(&self) -> String {
        self.shared.accounts.add_account().id.clone()
    }

    /// Changes [`EmulatorConfig::account_concurrency`] at run time. Streams already open
    /// stay open; only new requests are checked against the new limit.
    pub fn set_account_concurrency(&self, limit: Option<usize>) {
        self.shared.accounts.set_stream_limit(limit);
    }

    /// While `Some(resets_at)` (unix seconds), every `/codex/responses` of the account is
    /// refused with 429 `usage_limit_reached` naming that reset time, and `/wham/usage`
    /// shows its primary window 100 % used. `None` lifts the limit. An unknown id is
    /// registered as a new account.
    pub fn set_usage_limit(&self, account_id: &str, resets_at: Option<i64>) {
        self.shared
            .accounts
            .account(account_id)
            .set_usage_limit(resets_at);
    }

    /// A snapshot of one account's counters (all zero for an unknown id).
    pub fn account_stats(&self, account_id: &str) -> AccountStats {
        self.shared
            .accounts
            .find_account(account_id)
            .map(|a| a.stats())
            .unwrap_or_default()
    }

    /// Opens the gate `name`: every stream held by `EMU:gate:<name>` goes on, and later
    /// ones pass at once.
    pub fn open_gate(&self, name: &str) {
        lock(&self.shared.gates)
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .send_replace(true);
    }

    /// Sets every account's `peak_open_streams` to its current `open_streams`.
    pub fn reset_peaks(&self) {
        self.shared.accounts.reset_peaks();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            responses_requests: c.responses.load(Ordering::Relaxed)
                + c.ws_requests.load(Ordering::Relaxed),
            token_calls: c.token.load(Ordering::Relaxed),
            connections_accepted: c.connections.load(Ordering::Relaxed),
            images_requests: c.images.load(Ordering::Relaxed),
            models_requests: c.models.load(Ordering::Relaxed),
            concurrency_refusals: c.concurrency_refusals.load(Ordering::Relaxed),
            sse_bytes_sent: self.shared.sse_bytes.load(Ordering::Relaxed),
            responses_body_bytes: c.responses_body_bytes.load(Ordering::Relaxed),
            ws_handshakes: c.ws_handshakes.load(Ordering::Relaxed),
            ws_requests: c.ws_requests.load(Ordering::Relaxed),
            ws_request_bytes: c.ws_request_bytes.load(Ordering::Relaxed),
            ws_request_wire_bytes: self.shared.ws_wire.received.load(Ordering::Relaxed),
            ws_continuations: c.ws_continuations.load(Ordering::Relaxed),
            ws_bytes_sent: self.shared.ws_bytes.load(Ordering::Relaxed),
            ws_closed: c.ws_closed.load(Ordering::Relaxed),
        }
    }

    /// The latest `POST /codex/responses` received (up to 1,024), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded)
            .iter()
            .map(|r| RecordedRequest {
                headers: r.headers.clone(),
                body: r.body.clone(),
                zstd: r.zstd,
                frame: r.frame.clone(),
            })
            .collect()
    }

    /// SSE answers currently being played out: one that stays above 0 after the proxy's
    /// client left means the upstream request leaked.
    pub fn live_streams(&self) -> usize {
        self.shared.live_streams.load(Ordering::Acquire)
    }

    /// The latest unary `POST`s (up to 1,024) to the image and compaction v1 endpoints, oldest first, with the
    /// path it was sent to (`/backend-api/codex/images/generations`, …).
    pub fn unary_requests(&self) -> Vec<(String, RecordedRequest)> {
        lock(&self.shared.unary)
            .iter()
            .map(|(path, r)| {
                (
                    path.clone(),
                    RecordedRequest {
                        headers: r.headers.clone(),
                        body: r.body.clone(),
                        zstd: r.zstd,
                        frame: r.frame.clone(),
                    },
                )
            })
            .collect()
    }

    /// Makes every access token issued so far invalid.
    pub fn revoke_access_tokens(&self) {
        self.shared.tokens.revoke_access();
    }

    /// Stops accepting, closes every connection and waits for the accept loop.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The demo backend of one server or provider; dropping it stops the emulator and removes
/// the credentials.
pub struct Demo {
    _emulator: Emulator,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// When `config.demo` is set: start the emulator and point `config` at it (its URL, its
    /// token endpoint, fresh credentials for one account). Otherwise nothing.
    pub async fn start_if(config: &mut Config) -> Result<Option<Demo>, Error> {
        if !config.demo {
            return Ok(None);
        }
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .map_err(|e| Error::internal(format!("cannot start the demo emulator: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("codex-as-api-demo-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::internal(format!("demo: {e}")))?;
        let auth = dir.path().join("auth.json");
        emulator
            .issue_credentials(24 * 3600)
            .write_auth_json(&auth)
            .map_err(|e| Error::internal(format!("demo: cannot write credentials: {e}")))?;
        config.upstream_url = emulator.base_url();
        config.token_url = emulator.token_url();
        config.auth_path = auth;
        config.accounts.clear();
        tracing::warn!(
            upstream = %config.upstream_url,
            "DEMO MODE: answers come from the built-in Codex backend emulator, not from ChatGPT"
        );
        Ok(Some(Demo {
            _emulator: emulator,
            _dir: dir,
        }))
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (tcp, _) = match accepted {
            Ok(pair) => pair,
            Err(_) => {
                // Out of descriptors and the like: back off instead of spinning or exiting.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(TokioIo::new(tls), shared, stop).await;
                    }
                }
                None => serve(TokioIo::new(tcp), shared, stop).await,
            }
        });
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let h2_max_streams = shared.h2_max_streams;
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { routes::handle(req, shared).await }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Like a real edge, a limit of streams per h2 connection (100 by default), and a
    // connection window large enough that h2's budget for buffered small DATA frames
    // (half the window) never closes a connection whose request bodies wait for handlers
    // while thousands of requests arrive at once.
    builder
        .http2()
        .max_concurrent_streams(h2_max_streams)
        .initial_connection_window_size((1 << 31) - 1);
    // HTTP/1.1 upgrades for the WebSocket transport (h2 does not carry WebSockets here).
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}
