//! placeholder
#![forbid(unsafe_code)]
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod dialect;
pub mod emulator;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod server;
pub mod sse;
pub mod tokens;
pub mod upstream;
