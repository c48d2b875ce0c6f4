//! Server-sent events: the incremental zero-copy SSE parser (`parse`). The dialects write
//! their own frames.
pub mod parse;
