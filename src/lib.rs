//! placeholder
#![forbid(unsafe_code)]
pub mod auth;
pub mod emulator;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod server;
pub mod sse;
pub mod upstream;
