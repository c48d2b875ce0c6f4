//! The state every connection of one emulator shares ([`Shared`]): the counters, the
//! recorded requests, the WebSocket settings changed at run time, the `EMU:` lookup tables
//! and gates, and the state it composes from the modules that own it (accounts:
//! [`accounts`](super::accounts), issued tokens: [`tokens`](super::tokens), sign-in:
//! [`oauth`](super::oauth), the model catalog: [`catalog`](super::catalog)).
//!
//! The handlers (`routes`, `ws`, `admit`, `rules`, `script`) take a `&Shared`; the modules
//! whose state it holds do not know it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::accounts::Accounts;
use super::catalog::Catalog;
use super::config::{Chunking, EmulatorConfig, WebSocketMode};
use super::oauth::OAuth;
use super::tokens::Tokens;
use super::util::lock;
use crate::upstream::deflate::Wire;

/// Requests kept for [`Emulator::requests`](super::Emulator::requests) (the oldest are
/// dropped): a load run must not grow the emulator without bound.
pub(super) const MAX_RECORDED: usize = 1024;

/// One recorded request, shared with the handler without copying the body.
pub(super) struct Recorded {
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: serde_json::Value,
    pub(super) zstd: bool,
    /// A WebSocket `response.create` frame as received (without `type`).
    pub(super) frame: Option<serde_json::Value>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) responses: AtomicU64,
    pub(super) token: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) images: AtomicU64,
    pub(super) models: AtomicU64,
    pub(super) concurrency_refusals: AtomicU64,
    pub(super) responses_body_bytes: AtomicU64,
    pub(super) ws_handshakes: AtomicU64,
    pub(super) ws_requests: AtomicU64,
    pub(super) ws_request_bytes: AtomicU64,
    pub(super) ws_continuations: AtomicU64,
    pub(super) ws_closed: AtomicU64,
}

/// State shared by every connection.
pub(super) struct Shared {
    pub(super) chunking: Chunking,
    /// Keys the MAC of every `encrypted_content` this emulator hands out.
    secret: [u8; 32],
    /// Every account, the default one, and the limit of open streams per account.
    pub(super) accounts: Accounts,
    pub(super) counters: Counters,
    pub(super) live_streams: Arc<AtomicUsize>,
    /// SSE body bytes handed to hyper, over every stream.
    pub(super) sse_bytes: Arc<AtomicU64>,
    /// WebSocket event payload bytes handed to the socket.
    pub(super) ws_bytes: Arc<AtomicU64>,
    /// Whether an offered permessage-deflate is accepted.
    pub(super) ws_deflate: bool,
    /// WebSocket data-frame payload bytes as they crossed the wire (compressed when
    /// permessage-deflate was negotiated).
    pub(super) ws_wire: Arc<Wire>,
    /// [`WebSocketMode`]: 0 accepts, anything else is the refusal status.
    ws_refuse: AtomicU32,
    /// Responses per WebSocket (`u32::MAX`: unlimited).
    pub(super) ws_per_socket: AtomicU32,
    /// Bumped by `forget_responses`: a socket's last response of an older epoch is unknown.
    pub(super) ws_epoch: AtomicU64,
    /// Turns true when the emulator stops: upgraded sockets end with it.
    pub(super) stop: watch::Receiver<bool>,
    /// The latest [`MAX_RECORDED`] requests.
    pub(super) recorded: Mutex<VecDeque<Arc<Recorded>>>,
    /// The latest [`MAX_RECORDED`] unary POSTs (images, compaction v1) with their paths.
    pub(super) unary: Mutex<VecDeque<(String, Arc<Recorded>)>>,
    /// Issued tokens.
    pub(super) tokens: Tokens,
    /// Authorization codes and device-code sessions.
    pub(super) oauth: OAuth,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of every h2 connection.
    pub(super) h2_max_streams: u32,
    /// `EMU:flaky:<n>` counters, keyed by the full text of the user message (prefixed for
    /// `EMU:flakyevent` and `EMU:flakyreset`).
    pub(super) flaky: Mutex<HashMap<String, u64>>,
    /// Last `input_tokens` seen per prompt-cache key.
    pub(super) cache: Mutex<HashMap<String, u64>>,
    /// Ids of items (`fc_…`, `msg_…`) that were produced after a reasoning item → that `rs_…`.
    pub(super) followers: Mutex<HashMap<String, String>>,
    /// `EMU:gate:<name>` gates: closed until
    /// [`Emulator::open_gate`](super::Emulator::open_gate).
    pub(super) gates: Mutex<HashMap<String, watch::Sender<bool>>>,
    pub(super) catalog: Catalog,
}

impl Shared {
    /// The key `encrypted_content` is sealed with for `account_id`: like the real backend,
    /// reasoning and compaction blobs made for one account do not open for another.
    pub(super) fn account_secret(&self, account_id: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        h.update(account_id.as_bytes());
        h.finalize().into()
    }

    /// A receiver of the gate `name` (created closed on first use).
    pub(super) fn gate(&self, name: &str) -> watch::Receiver<bool> {
        lock(&self.gates)
            .entry(name.to_owned())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }
}

impl Shared {
    /// Keeps a request for [`Emulator::requests`](super::Emulator::requests).
    pub(super) fn record(&self, recorded: Arc<Recorded>) {
        let mut all = lock(&self.recorded);
        if all.len() >= MAX_RECORDED {
            all.pop_front();
        }
        all.push_back(recorded);
    }

    pub(super) fn websocket_mode(&self) -> WebSocketMode {
        match self.ws_refuse.load(Ordering::Acquire) {
            0 => WebSocketMode::Accept,
            s => WebSocketMode::Refuse(u16::try_from(s).unwrap_or(u16::MAX)),
        }
    }

    /// Changes how WebSocket upgrades are answered from now on.
    pub(super) fn set_websocket_mode(&self, mode: WebSocketMode) {
        self.ws_refuse
            .store(ws_refuse_code(mode), Ordering::Release);
    }

    /// Responses one socket may serve (`None`: unlimited).
    pub(super) fn ws_responses_per_socket(&self) -> Option<u32> {
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
    /// The state of an emulator started with `cfg`; `stop` turns true when it stops.
    pub(super) fn new(
        cfg: &EmulatorConfig,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Shared> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Shared {
            chunking: cfg.chunking,
            secret,
            accounts: Accounts::new(cfg.account_concurrency),
            counters: Counters::default(),
            live_streams: Arc::new(AtomicUsize::new(0)),
            sse_bytes: Arc::new(AtomicU64::new(0)),
            ws_bytes: Arc::new(AtomicU64::new(0)),
            ws_deflate: cfg.ws_deflate,
            ws_wire: Arc::default(),
            ws_refuse: AtomicU32::new(ws_refuse_code(cfg.websocket)),
            ws_per_socket: AtomicU32::new(cfg.websocket_responses_per_socket.unwrap_or(u32::MAX)),
            ws_epoch: AtomicU64::new(0),
            stop,
            recorded: Mutex::new(VecDeque::new()),
            unary: Mutex::new(VecDeque::new()),
            tokens: Tokens::new(cfg.refresh_access_ttl_secs),
            oauth: OAuth::new(cfg.device_poll_interval_secs),
            h2_max_streams: cfg.h2_max_concurrent_streams,
            flaky: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            catalog: Catalog::build(),
        })
    }
}
