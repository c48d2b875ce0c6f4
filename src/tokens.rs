//! Token counting (placeholder).
