//! A faithful emulator of the ChatGPT Codex backend, served over real loopback HTTP.
//!
//! The real `chatgpt.com` is unreachable from tests, benches and `--demo`, so this module
//! owns a stand-in that speaks the same wire protocol (`protocol/codex-backend.md`) and
//! enforces the same rules, answering with the exact rejection bodies the real backend
//! sends. It owns:
//!
//! * the accept loop (HTTP/1.1 and h2 through the hyper-util auto builder, with HTTP/1.1
//!   upgrades, optional TLS with a CA generated at start: [`tls`]),
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
//! * the issued-token registry and JWT minting ([`tokens`]),
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
//! It does not own anything the proxy uses on its hot path: nothing outside tests,
//! benches and `--demo` should depend on it.

mod accounts;
mod admit;
mod catalog;
mod demo;
mod http;
mod oauth;
mod routes;
mod rules;
mod script;
mod stream;
mod tls;
mod tokens;
mod ws;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use accounts::AccountStats;
pub use demo::Demo;
pub use stream::STAMP_PLACEHOLDER;
pub use tokens::TestCredentials;

/// Requests kept for [`Emulator::requests`] (the oldest are dropped): a load run must not
/// grow the emulator without bound.
const MAX_RECORDED: usize = 1024;
/// Entries kept per lookup table (prompt cache, reasoning followers, flaky counters)
/// before it is cleared.
const MAX_TABLE: usize = 65_536;

/// Nanoseconds on the monotonic clock since this process first asked; the clock of the
/// `EMU:stamp` send-time stamps, so a client in the same process can compute latencies.
pub fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Inserts into a lookup table, clearing it first when it is full (bounded memory).
fn bounded_insert<K: Eq + Hash, V>(map: &mut HashMap<K, V>, key: K, value: V) -> Option<V> {
    if map.len() >= MAX_TABLE && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value)
}

/// How the emulator starts.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    /// Serve HTTPS with a certificate signed by a CA generated at start ([`Emulator::ca_pem`]).
    pub tls: bool,
    /// How SSE events are handed to the connection.
    pub chunking: Chunking,
    /// Lifetime of access tokens minted by a refresh, in seconds.
    pub refresh_access_ttl_secs: i64,
    /// The `interval` the device-code endpoint tells clients to poll at (the real one: 5).
    pub device_poll_interval_secs: u64,
    /// Streams one account may have open at once; a request beyond it gets 429
    /// `rate_limit_exceeded` without `Retry-After`. `None`: unlimited.
    pub account_concurrency: Option<usize>,
    /// The h2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised per connection (like common CDN
    /// front ends: 100).
    pub h2_max_concurrent_streams: u32,
    /// How a WebSocket upgrade of `/codex/responses` is answered.
    pub websocket: WebSocketMode,
    /// Responses one WebSocket serves; the next `response.create` gets the wrapped
    /// `websocket_connection_limit_reached` error and the socket is closed (the real
    /// backend's limit is 60 minutes). `None`: unlimited.
    pub websocket_responses_per_socket: Option<u32>,
}

/// How the emulator answers a WebSocket upgrade of `/codex/responses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WebSocketMode {
    /// Upgrade (after the auth and `OpenAI-Beta` checks).
    #[default]
    Accept,
    /// Refuse every handshake with this status and a JSON body: 426 is how the real
    /// backend tells a client to use HTTP SSE instead.
    Refuse(u16),
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            chunking: Chunking::PerEvent,
            refresh_access_ttl_secs: 3600,
            device_poll_interval_secs: 5,
            account_concurrency: None,
            h2_max_concurrent_streams: 100,
            websocket: WebSocketMode::Accept,
            websocket_responses_per_socket: None,
        }
    }
}

/// Chunking of the SSE body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Each SSE event is its own HTTP chunk, flushed on its own (like the real backend).
    PerEvent,
    /// Every burst of events (the events between two pauses) is written as one chunk.
    Coalesced,
}

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
    /// `response.create` frames that chained from a known `previous_response_id`.
    pub ws_continuations: u64,
    /// Text payload bytes of the event frames sent over WebSockets.
    pub ws_bytes_sent: u64,
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
        self.shared
            .ws_refuse
            .store(ws_refuse_code(mode), Ordering::Release);
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
        self.shared.approve_device(user_code)
    }

    /// How many times `POST /api/accounts/deviceauth/token` was called.
    pub fn device_polls(&self) -> u64 {
        self.shared.device_polls()
    }

    /// PEM of the generated test CA (TLS mode only).
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// Mints a token set the emulator accepts for the default account ([`Self::account_id`]);
    /// a negative ttl gives an expired access token.
    pub fn issue_credentials(&self, access_ttl_secs: i64) -> TestCredentials {
        self.shared
            .issue(&self.shared.default_account, access_ttl_secs)
    }

    /// Like [`Self::issue_credentials`], for the account `account_id` (its JWT claims and
    /// `TestCredentials::account_id` name it). An id the emulator does not know yet is
    /// registered as a new account.
    pub fn issue_credentials_for(&self, account_id: &str, access_ttl_secs: i64) -> TestCredentials {
        let account = self.shared.account(account_id);
        self.shared.issue(&account, access_ttl_secs)
    }

    /// The id of the default account (the one [`Self::issue_credentials`] and the sign-in
    /// flows issue tokens for).
    pub fn account_id(&self) -> String {
        self.shared.default_account.id.clone()
    }

    /// Creates an account with a new id and its own user id; returns the account id.
    pub fn add_account(&self) -> String {
        self.shared.add_account().id.clone()
    }

    /// Changes [`EmulatorConfig::account_concurrency`] at run time. Streams already open
    /// stay open; only new requests are checked against the new limit.
    pub fn set_account_concurrency(&self, limit: Option<usize>) {
        self.shared
            .account_concurrency
            .store(limit.unwrap_or(usize::MAX), Ordering::Release);
    }

    /// While `Some(resets_at)` (unix seconds), every `/codex/responses` of the account is
    /// refused with 429 `usage_limit_reached` naming that reset time, and `/wham/usage`
    /// shows its primary window 100 % used. `None` lifts the limit. An unknown id is
    /// registered as a new account.
    pub fn set_usage_limit(&self, account_id: &str, resets_at: Option<i64>) {
        self.shared.account(account_id).set_usage_limit(resets_at);
    }

    /// A snapshot of one account's counters (all zero for an unknown id).
    pub fn account_stats(&self, account_id: &str) -> AccountStats {
        self.shared
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
        self.shared.reset_peaks();
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
            ws_continuations: c.ws_continuations.load(Ordering::Relaxed),
            ws_bytes_sent: self.shared.ws_bytes.load(Ordering::Relaxed),
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
        lock(&self.shared.tokens).access.clear();
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

/// One recorded request, shared with the handler without copying the body.
struct Recorded {
    headers: Vec<(String, String)>,
    body: serde_json::Value,
    zstd: bool,
    /// A WebSocket `response.create` frame as received (without `type`).
    frame: Option<serde_json::Value>,
}

#[derive(Default)]
struct Counters {
    responses: AtomicU64,
    token: AtomicU64,
    connections: AtomicU64,
    images: AtomicU64,
    models: AtomicU64,
    concurrency_refusals: AtomicU64,
    responses_body_bytes: AtomicU64,
    ws_handshakes: AtomicU64,
    ws_requests: AtomicU64,
    ws_request_bytes: AtomicU64,
    ws_continuations: AtomicU64,
}

/// State shared by every connection.
struct Shared {
    chunking: Chunking,
    refresh_ttl: i64,
    /// Keys the MAC of every `encrypted_content` this emulator hands out.
    secret: [u8; 32],
    /// The account [`Emulator::issue_credentials`] and the sign-in flows issue tokens for.
    default_account: Arc<accounts::Account>,
    /// Every account (the default one included), by id.
    accounts: Mutex<HashMap<String, Arc<accounts::Account>>>,
    /// Open streams allowed per account (`usize::MAX`: unlimited).
    account_concurrency: AtomicUsize,
    counters: Counters,
    live_streams: Arc<AtomicUsize>,
    /// SSE body bytes handed to hyper, over every stream.
    sse_bytes: Arc<AtomicU64>,
    /// WebSocket event payload bytes handed to the socket.
    ws_bytes: Arc<AtomicU64>,
    /// [`WebSocketMode`]: 0 accepts, anything else is the refusal status.
    ws_refuse: AtomicU32,
    /// Responses per WebSocket (`u32::MAX`: unlimited).
    ws_per_socket: AtomicU32,
    /// Bumped by `forget_responses`: a socket's last response of an older epoch is unknown.
    ws_epoch: AtomicU64,
    /// Turns true when the emulator stops: upgraded sockets end with it.
    stop: watch::Receiver<bool>,
    /// The latest [`MAX_RECORDED`] requests.
    recorded: Mutex<VecDeque<Arc<Recorded>>>,
    /// The latest [`MAX_RECORDED`] unary POSTs (images, compaction v1) with their paths.
    unary: Mutex<VecDeque<(String, Arc<Recorded>)>>,
    tokens: Mutex<tokens::Registry>,
    /// Authorization codes and device-code sessions.
    oauth: Mutex<oauth::Registry>,
    device_interval: u64,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of every h2 connection.
    h2_max_streams: u32,
    /// `EMU:flaky:<n>` counters, keyed by the full text of the user message (prefixed for
    /// `EMU:flakyevent` and `EMU:flakyreset`).
    flaky: Mutex<HashMap<String, u64>>,
    /// Last `input_tokens` seen per prompt-cache key.
    cache: Mutex<HashMap<String, u64>>,
    /// Ids of items (`fc_…`, `msg_…`) that were produced after a reasoning item → that `rs_…`.
    followers: Mutex<HashMap<String, String>>,
    /// `EMU:gate:<name>` gates: closed until [`Emulator::open_gate`].
    gates: Mutex<HashMap<String, watch::Sender<bool>>>,
    catalog: catalog::Catalog,
}

impl Shared {
    /// The key `encrypted_content` is sealed with for `account_id`: like the real backend,
    /// reasoning and compaction blobs made for one account do not open for another.
    fn account_secret(&self, account_id: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(account_id.as_bytes());
        h.finalize().into()
    }

    /// A receiver of the gate `name` (created closed on first use).
    fn gate(&self, name: &str) -> watch::Receiver<bool> {
        lock(&self.gates)
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }
}

impl Shared {
    /// Keeps a request for [`Emulator::requests`].
    fn record(&self, recorded: Arc<Recorded>) {
        let mut all = lock(&self.recorded);
        if all.len() >= MAX_RECORDED {
            all.pop_front();
        }
        all.push_back(recorded);
    }

    fn websocket_mode(&self) -> WebSocketMode {
        match self.ws_refuse.load(Ordering::Acquire) {
            0 => WebSocketMode::Accept,
            s => WebSocketMode::Refuse(u16::try_from(s).unwrap_or(u16::MAX)),
        }
    }

    /// Responses one socket may serve (`None`: unlimited).
    fn ws_responses_per_socket(&self) -> Option<u32> {
        match self.ws_per_socket.load(Ordering::Acquire) {
            u32::MAX => None,
            n => Some(n),
        }
    }
}

fn ws_refuse_code(mode: WebSocketMode) -> u32 {
    match mode {
        WebSocketMode::Accept => 0,
        WebSocketMode::Refuse(s) => u32::from(s.max(1)),
    }
}

impl Shared {
    fn new(cfg: &EmulatorConfig, stop: watch::Receiver<bool>) -> std::io::Result<Shared> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        let default_account = Arc::new(accounts::Account::new(uuid_like()));
        let accounts = HashMap::from([(default_account.id.clone(), default_account.clone())]);
        Ok(Shared {
            chunking: cfg.chunking,
            refresh_ttl: cfg.refresh_access_ttl_secs,
            secret,
            default_account,
            accounts: Mutex::new(accounts),
            account_concurrency: AtomicUsize::new(cfg.account_concurrency.unwrap_or(usize::MAX)),
            counters: Counters::default(),
            live_streams: Arc::new(AtomicUsize::new(0)),
            sse_bytes: Arc::new(AtomicU64::new(0)),
            ws_bytes: Arc::new(AtomicU64::new(0)),
            ws_refuse: AtomicU32::new(ws_refuse_code(cfg.websocket)),
            ws_per_socket: AtomicU32::new(cfg.websocket_responses_per_socket.unwrap_or(u32::MAX)),
            ws_epoch: AtomicU64::new(0),
            stop,
            recorded: Mutex::new(VecDeque::new()),
            unary: Mutex::new(VecDeque::new()),
            tokens: Mutex::new(tokens::Registry::default()),
            oauth: Mutex::new(oauth::Registry::default()),
            device_interval: cfg.device_poll_interval_secs,
            h2_max_streams: cfg.h2_max_concurrent_streams,
            flaky: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            catalog: catalog::Catalog::build(),
        })
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not wedge the emulator).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// Seconds since the Unix epoch.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `n` random lower-case hex digits (ids, not secrets).
fn random_hex(n: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..n)
        .map(|_| char::from(HEX[fastrand::usize(..16)]))
        .collect()
}

/// `n` random alphanumerics (ids, not secrets).
fn random_alnum(n: usize) -> String {
    (0..n).map(|_| fastrand::alphanumeric()).collect()
}

fn uuid_like() -> String {
    format!(
        "{}-{}-4{}-a{}-{}",
        random_hex(8),
        random_hex(4),
        random_hex(3),
        random_hex(3),
        random_hex(12)
    )
}

/// RFC 3339 UTC timestamp with nanoseconds, like the official client's `last_refresh`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn rfc3339_has_the_expected_shape() {
        let s = rfc3339_now();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.ends_with('Z'));
        assert_eq!(&s[10..11], "T");
    }
}
