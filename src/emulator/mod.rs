//! Codex backend emulator (placeholder).
