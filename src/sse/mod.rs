//! Server-sent events: the incremental zero-copy parser (`parse`) and the frame encoder (`write`).
pub mod parse;
pub mod write;
