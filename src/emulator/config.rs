//! How an emulator starts ([`EmulatorConfig`]) and the modes it can run in: the chunking
//! of SSE bodies ([`Chunking`]) and the answer to a WebSocket upgrade ([`WebSocketMode`]).
//!
//! A leaf: its code uses no other module of the emulator.

use std::net::SocketAddr;

/// How the emulator starts.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; the default `127.0.0.1:0` picks a free port.
    pub addr: SocketAddr,
    /// Serve HTTPS with a certificate signed by a CA generated at start
    /// ([`Emulator::ca_pem`](super::Emulator::ca_pem)).
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
    /// Accept an offered permessage-deflate (RFC 7692) on WebSocket upgrades, and then
    /// compress the event frames too, each socket's context kept between its messages
    /// unless the client asked for `server_no_context_takeover` (the real backend may;
    /// default on).
    pub ws_deflate: bool,
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
            ws_deflate: true,
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
