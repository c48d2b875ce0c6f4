//! codex-as-api: local OpenAI- and Anthropic-compatible APIs on a ChatGPT subscription.
//!
//! One request, end to end:
//!
//! ```text
//! client ──HTTP/1.1 (server::h1) or h2 (hyper)──▶ server::route ──▶ dialect::{chat,messages,responses}
//!   (or a Responses WebSocket: server::ws)   (client JSON, parsed once) │ builds ONE upstream body
//!                                                       ▼
//!        accounts::route (conversation → account) ──▶ admission (the account's window;
//!                                                       │ beyond it: queued here)
//!                  auth::TokenStore (ArcSwap) ──▶ upstream::request (headers, body, zstd
//!                                                       │ only for HTTP)
//!                                                       │ upstream::ws (a Responses WebSocket
//!                                                       │ per account and conversation; the
//!                                                       │ default) or HTTP: upstream::conn
//!                                                       │ (driven HTTP/1.1, plain http) or
//!                                                       │ upstream::h2pool (rustls + h2)
//!                                                       ▼
//!              chatgpt.com /backend-api/codex/responses (WebSocket frames or SSE)
//!                                                       │ upstream::stream::Upstream (SSE bytes,
//!                                                       │ over conn::HttpBody or ws::WsBody)
//!                                                       ▼
//!    body::Translate<E> ── upstream::events::Pump: sse::parse (zero-copy lines) → one
//!    event's JSON, normalised ── Delta (the pivot) ── E::encode (the client's bytes, written
//!    into a reused buffer) ──▶ the client's connection
//! ```
//!
//! Dependencies point one way: the server's modules over `body`, over the dialects, over
//! the upstream modules, over `auth`, `json`, `sse`, `error` and `config`;
//! `server::respond` and `server::state` are the server's leaves, and `server`'s own file
//! only uses its children. Inside `upstream`, `stream` (the response body)
//! sits over the two transports, `ws` over `conn` (it connects through the pool), and
//! `collect` over `stream` and `events`; inside the emulator, `routes` over `ws` over
//! `admit` over `http`. No file uses a file that uses it back, a parent module's file and
//! its children's included (`.ci/circles.py --children` reads every file's `use` trees and
//! paths; CI runs it).
//!
//! Non-streaming requests run the same pipeline; `upstream::collect` reads the stream
//! through the same parse/decode loop as the streaming body (`upstream::events::Pump`),
//! aggregates it, and the dialect renders the final JSON (the backend only streams).
//!
//! What each module owns:
//!
//! - [`config`]: `Config` — flags > env > `$CODEX_HOME/config.toml` > defaults; every limit.
//! - [`error`]: the one `Error` type (kind, side, retryability) and its rendering per protocol.
//! - [`auth`]: `TokenStore` (ArcSwap of credentials + prebuilt header values), auth.json
//!   read / atomic write under a lock file, single-flight refresh, JWT claims.
//! - [`accounts`]: the ChatGPT logins served (`--accounts`): labels, conversation
//!   affinity, the choice of account for a new conversation, usage-limit cooldown.
//! - [`admission`]: one account's adaptive window of open upstream streams and its
//!   two-class, per-conversation-fair queue.
//! - [`upstream`]: the upstream connections (`client`: the shared hyper-rustls client;
//!   `conn`: the driven HTTP/1.1 pool the streaming body polls itself; `h2pool`: the
//!   stream-aware h2 pool; `ws`: the Responses WebSocket transport with continuation;
//!   `proxy`: outbound proxies; `stream`: the one response body over them), upstream
//!   request building (strict body allow-list, Responses-lite layout, headers, zstd), event
//!   decoding into `Delta` (`events`, with the parse/decode loop `Pump`), the usage
//!   `meter`, non-stream aggregation (`collect`), failure mapping, the rate-limit headers,
//!   the model catalog.
//! - [`sse`]: the incremental zero-copy SSE parser and the frame writer.
//! - [`json`]: string escaping, the one parsed-value writer (`write_value`), raw-slice
//!   helpers and the span scanner (`json::span`).
//! - [`dialect`]: Chat Completions, Anthropic Messages and Responses, each a directory of
//!   the same files: `request` (client JSON → upstream request), `stream` (`Delta` → wire
//!   bytes), `render` (non-stream JSON), `tests`; the plan in its `mod.rs`. Shared once:
//!   `dialect::fields` (request field helpers), `dialect::items` (items in the backend's
//!   input shape, also for `server::history`), `PlanCore` (what every plan carries);
//!   `dialect::compact`, the compaction endpoints (v2 with the v1 fallback).
//! - [`body`]: `Translate<E>`, the streaming body: drains every upstream frame already
//!   available and emits the translated bytes as one frame; keepalives and idle timeout.
//! - [`tokens`]: o200k token counting (count_tokens, usage estimates).
//! - [`server`]: what requests share (`state`), accept loop (connection limit) and head
//!   limits (`head`: 408/431), the
//!   HTTP/1.1 client connection (`h1`: strict framing, read deadline, write stall; h2
//!   clients go to hyper, with `h2`'s body bounds and stalled-stream watchdog), routing and
//!   guards (`route`), entering an account (`admit`), the request pipeline with retries
//!   (`pipeline`), the Responses WebSocket mode for clients (`ws`), the response builders
//!   (`respond`), the unary endpoints
//!   (`endpoints`: models, images, inspect, compaction, usage), unary backend calls
//!   (`backend`), the live catalog (`catalog`), the `previous_response_id` store
//!   (`history`), and the one log line per request (`reqlog`).
//! - [`cli`]: the user commands besides `serve`: `login` (browser PKCE and device code,
//!   writing the Codex CLI's auth.json), `usage` (rate-limit bars), `claude` (with Claude
//!   Code's first-run settings: `onboarding`) and `env`.
//! - [`emulator`]: a faithful Codex backend on a loopback port for tests, benches and `--demo`.
//! - `fuzzing` (feature `fuzzing`): entry points shared by the fuzz targets and the corpus
//!   replay test.
//!
//! Features: `demo` (default) compiles the emulator in, for `--demo`; `fuzzing` the fuzz
//!   entry points.
#![forbid(unsafe_code)]
// Without `internals`, items only the crate's own tests and benches use are unused here.
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

// Modules internal to the crate. The crate's own tests and benches (its dev-dependency on
// itself turns on the `internals` feature) reach them as `codex_as_api::internals::…`.
pub(crate) mod accounts;
pub(crate) mod admission;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod dialect;
pub(crate) mod json;
pub(crate) mod server;
pub(crate) mod sse;
pub(crate) mod tokens;
pub(crate) mod upstream;

/// The internal modules, re-exported for the crate's own tests and benches (feature
/// `internals`); not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    macro_rules! reexport {
        ($($m:ident),*) => { $(pub mod $m { pub use crate::$m::*; })* };
    }
    reexport!(
        accounts, admission, auth, body, dialect, json, server, sse, tokens, upstream
    );
}

pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod emulator;
/// Without the `demo` feature: no emulator, and `--demo` is refused.
#[cfg(not(feature = "demo"))]
#[path = "no_demo.rs"]
mod emulator;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod provider;

/// README.md's Rust example is compiled with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use config::{Config, ConfigBuilder};
pub use error::{Error, ErrorKind};
pub use provider::{ChatEvent, ChatResponse, ChatStream, Provider, ToolCall, Usage};
pub use server::{Server, Service, shutdown_signal};

/// Helpers for the unit tests of more than one module.
#[cfg(test)]
pub(crate) mod test_support;
