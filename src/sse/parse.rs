//! Incremental zero-copy SSE parser (placeholder).
