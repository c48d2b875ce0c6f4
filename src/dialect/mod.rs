//! Client protocols: OpenAI Chat Completions (`chat`), Anthropic Messages (`messages`) and
//! the Responses passthrough (`responses`).
//!
//! Owns: the contract between the server pipeline and a protocol. A dialect turns the
//! client's JSON into a `Plan` (the `UpstreamRequest` plus everything needed to answer), and
//! a plan makes an `Encoder` (streaming: `Delta` → wire bytes) or renders a `Collected`
//! response (non-streaming). The pipeline owns transport, retries, keepalive timing and
//! errors before the head; dialects own bytes.

pub mod chat;
pub mod messages;
pub mod responses;

use bytes::BytesMut;
use http::HeaderMap;

use crate::config::Config;
use crate::error::{Error, Protocol};
use crate::upstream::catalog::Catalog;
use crate::upstream::collect::Collected;
use crate::upstream::events::Delta;
use crate::upstream::request::UpstreamRequest;

/// What a translator may consult.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub catalog: &'a Catalog,
    /// The client's request headers.
    pub headers: &'a HeaderMap,
}

impl Ctx<'_> {
    /// The backend slug for a client model name: the name itself when the catalog knows it,
    /// the small model for `haiku`-class names, else the configured default model.
    pub fn backend_model(&self, client_model: &str) -> String {
        if self.catalog.is_known(client_model) {
            return client_model.to_owned();
        }
        let lower = client_model.to_ascii_lowercase();
        if lower.contains("haiku") || lower.contains("mini") || lower.contains("small") {
            return self.config.small_model.clone();
        }
        self.config.model.clone()
    }

    /// The context window of a backend model: config.toml's `model_context_window` if set,
    /// else the catalog's.
    pub fn context_window(&self, backend_model: &str) -> u64 {
        self.config.context_window.unwrap_or_else(|| {
            self.catalog
                .find(backend_model)
                .map(|m| m.context_window)
                .unwrap_or(272_000)
        })
    }
}

/// A translated request, ready to run.
pub trait Plan: Send + Sync + 'static {
    type Encoder: Encoder;
    /// The protocol errors are rendered in.
    fn protocol(&self) -> Protocol;
    fn upstream(&self) -> &UpstreamRequest;
    /// Whether the client asked for a stream.
    fn stream(&self) -> bool;
    /// A fresh encoder for one streamed answer.
    fn encoder(&self) -> Self::Encoder;
    /// The complete non-stream answer (a 200 JSON body). Only called when `collected.finish`
    /// is `Completed` or `Incomplete`; failures become errors in the pipeline.
    fn render(&self, collected: &Collected) -> Vec<u8>;
    /// Content type of the streamed answer.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }
}

/// Writes one streamed answer. Every method appends complete SSE frames to `out`.
pub trait Encoder: Send + Unpin + 'static {
    /// The head was committed: write the opening frames (Chat: the role chunk; Anthropic:
    /// `message_start` and a `ping`).
    fn begin(&mut self, out: &mut BytesMut);
    /// One pivot event. Terminal `Completed`/`Incomplete` write the closing frames
    /// (`finish_reason` chunk, usage, `[DONE]` / `message_delta`, `message_stop`).
    /// `Failed`/`Error` are never passed here: the pipeline maps them and calls `fail`.
    fn delta(&mut self, d: &Delta<'_>, out: &mut BytesMut);
    /// The raw upstream event (`data` payload) before it is decoded; only the Responses
    /// passthrough uses it.
    fn raw(&mut self, _event: &[u8], _data: &[u8], _out: &mut BytesMut) {}
    /// Nothing arrived for a keepalive interval (Chat: `: keep-alive` comment; Anthropic:
    /// `event: ping`).
    fn keepalive(&mut self, out: &mut BytesMut);
    /// The stream failed after `begin`: write one protocol-correct error frame (and `[DONE]`
    /// for Chat). Nothing is written after it.
    fn fail(&mut self, err: &Error, out: &mut BytesMut);
}

/// Parse a JSON request body with simd-json, enforcing the nesting limit first (so deep
/// input gets a clear 400 instead of a stack overflow).
pub fn parse_body<'a>(
    body: &'a mut [u8],
    max_depth: usize,
) -> Result<simd_json::BorrowedValue<'a>, Error> {
    check_depth(body, max_depth)?;
    if std::str::from_utf8(body).is_err() {
        return Err(Error::bad_request("request body is not valid UTF-8"));
    }
    simd_json::to_borrowed_value(body)
        .map_err(|e| Error::bad_request(format!("request body is not valid JSON: {e}")))
}

/// Reject JSON nested deeper than `max_depth` (counts `[`/`{` outside strings). String
/// contents, most of a large request, are skipped with `memchr2` for `"` and `\\`.
pub fn check_depth(body: &[u8], max_depth: usize) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => loop {
                let rest = body.get(i..).unwrap_or_default();
                match memchr::memchr2(b'"', b'\\', rest) {
                    // Unterminated: the parser reports it.
                    None => return Ok(()),
                    Some(k) => {
                        let escape = rest.get(k) == Some(&b'\\');
                        i += k + if escape { 2 } else { 1 };
                        if !escape {
                            break;
                        }
                    }
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::bad_request(format!(
                        "request JSON is nested deeper than the limit of {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_counts_only_structure_outside_strings() {
        assert!(check_depth(b"[[[]]]", 3).is_ok());
        assert!(check_depth(b"[[[[]]]]", 3).is_err());
        assert!(check_depth(br#"{"a":"[[[[[[[["}"#, 1).is_ok());
        assert!(check_depth(br#"{"a":"\"[[[["}"#, 1).is_ok());
        assert!(check_depth(br#"{"a":"\\"}"#, 1).is_ok());
        assert!(check_depth(br#"{"a":"\\","b":[[1]]}"#, 2).is_err());
        assert!(check_depth(br#"{"a":"x\\\"[[","b":[1]}"#, 2).is_ok());
        assert!(check_depth(br#"["unterminated [[[["#, 1).is_ok());
    }

    #[test]
    fn parse_body_gives_clear_errors() {
        let mut bad = b"{not json".to_vec();
        let e = parse_body(&mut bad, 10).unwrap_err();
        assert!(e.message.contains("not valid JSON"));
        let mut deep = vec![b'['; 200];
        deep.extend(vec![b']'; 200]);
        assert!(
            parse_body(&mut deep, 128)
                .unwrap_err()
                .message
                .contains("nested")
        );
    }
}
