//! codex-as-api: local OpenAI- and Anthropic-compatible APIs on a ChatGPT subscription.
//!
//! One request, end to end:
//!
//! ```text
//! client ──HTTP/1.1 or h2──▶ server::route ──▶ dialect::{chat,messages,responses}
//!         (OpenAI / Anthropic JSON, parsed once)        │ builds ONE upstream body
//!                                                       ▼
//!                  auth::TokenStore (ArcSwap) ──▶ upstream::request (headers + body, zstd)
//!                                                       │ pooled hyper-rustls client
//!                                                       ▼
//!                          chatgpt.com /backend-api/codex/responses (SSE)
//!                                                       │ response body (Incoming)
//!                                                       ▼
//!    body::Translate<E> ── sse::parse (zero-copy lines) ── upstream::events (one event's
//!    JSON, normalised) ── Delta (the pivot) ── E::encode (the client's bytes, written into
//!    a reused buffer) ──▶ hyper ──▶ client
//! ```
//!
//! Non-streaming requests run the same pipeline; `upstream::collect` aggregates the stream
//! and the dialect renders the final JSON (the backend only streams).
//!
//! What each module owns:
//!
//! - [`config`]: `Config` — flags > env > `$CODEX_HOME/config.toml` > defaults; every limit.
//! - [`error`]: the one `Error` type (kind, side, retryability) and its rendering per protocol.
//! - [`auth`]: `TokenStore` (ArcSwap of credentials + prebuilt header values), auth.json
//!   read / atomic write under a lock file, single-flight refresh, JWT claims.
//! - [`upstream`]: the one pooled client, upstream request building (strict body
//!   allow-list), event decoding into `Delta`, stream collection, failure mapping, the
//!   model catalog.
//! - [`sse`]: the incremental zero-copy SSE parser and the frame writer.
//! - [`json`]: string escaping and raw-slice helpers shared by the encoders.
//! - [`dialect`]: Chat Completions, Anthropic Messages and Responses: request
//!   translation, `Delta` → wire bytes, non-stream rendering.
//! - [`body`]: `Translate<E>`, the streaming body: drains every upstream frame already
//!   available and emits the translated bytes as one frame; keepalives and idle timeout.
//! - [`tokens`]: o200k token counting (count_tokens, usage estimates).
//! - [`server`]: accept loop, routing, guards, the request pipeline, rate-limit snapshot,
//!   the one log line per request (`server::reqlog`).
//! - [`cli`]: the user commands besides `serve`: `login` (browser PKCE and device code,
//!   writing the Codex CLI's auth.json), `usage` (rate-limit bars), `claude` and `env`.
//! - [`emulator`]: a faithful Codex backend on a loopback port for tests, benches and `--demo`.
//! - `fuzzing`: entry points shared by the fuzz targets and the corpus replay test.
#![forbid(unsafe_code)]
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod dialect;
pub mod emulator;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod server;
pub mod sse;
pub mod tokens;
pub mod upstream;
