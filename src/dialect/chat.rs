//! OpenAI Chat Completions (placeholder).
