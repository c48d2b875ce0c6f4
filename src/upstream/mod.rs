//! Everything about talking to the Codex backend.
//!
//! Owns: the pooled client (`client`), the upstream request (allow-listed body, ids, tool
//! names: `request`), the transports (`conn`: driven HTTP/1.1 and the pool, over `h2pool`
//! and `proxy`; `ws`: the Responses WebSocket, which connects through `conn` and
//! compresses its frames with `deflate`, permessage-deflate below tungstenite), the one
//! response body over both (`stream::Upstream`), the model catalog (`catalog`), the
//! decoding of SSE events into the `Delta` pivot (`events`), non-stream aggregation
//! (`collect`), the usage `meter`, the mapping of upstream failures to `Error`
//! (`failure`) and the `x-codex-*` rate-limit headers (`ratelimit`).
//!
//! Dependencies point one way: `stream` over `ws` over `conn` over `h2pool`, `proxy` and
//! `client`; `ws` over `deflate` (a leaf the emulator uses too).
pub mod catalog;
pub mod client;
pub mod collect;
pub mod conn;
pub mod deflate;
pub mod events;
pub mod failure;
pub mod h2pool;
pub mod meter;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod stream;
pub mod ws;
