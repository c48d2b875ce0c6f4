//! Everything about talking to the Codex backend.
//!
//! Owns: the pooled client (`client`), the upstream request (allow-listed body, headers:
//! `request`), the model catalog (`catalog`), the decoding of SSE events into the `Delta`
//! pivot (`events`), non-stream aggregation (`collect`) and the mapping of upstream failures
//! to `Error` (`failure`).
pub mod client;
