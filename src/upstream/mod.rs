//! Everything about talking to the Codex backend.
//!
//! Owns: the pooled client (`client`), the upstream request (allow-listed body, ids, tool
//! names: `request`), the model catalog (`catalog`), the decoding of SSE events into the
//! `Delta` pivot (`events`), non-stream aggregation (`collect`) the mapping of upstream
//! failures to `Error` (`failure`) and the `x-codex-*` rate-limit headers (`ratelimit`).
pub mod catalog;
pub mod client;
pub mod collect;
pub mod conn;
pub mod events;
pub mod failure;
pub mod h2pool;
pub mod meter;
pub mod proxy;
pub mod ratelimit;
pub mod request;
pub mod ws;
