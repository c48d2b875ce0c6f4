//! Anthropic Messages (placeholder).
