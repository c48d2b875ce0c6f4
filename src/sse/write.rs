//! SSE frame encoder (placeholder).
