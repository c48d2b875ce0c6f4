//! Client protocols: OpenAI Chat Completions (`chat`), Anthropic Messages (`messages`), the
//! Responses passthrough (`responses`) and remote compaction checkpoints (`compact`).
//!
//! Owns: the contract between the server pipeline and a protocol. A dialect turns the
//! client's JSON into a `Plan` (the `UpstreamRequest` plus everything needed to answer), and
//! a plan makes an `Encoder` (streaming: `Delta` → wire bytes) or renders a `Collected`
//! response (non-streaming). The pipeline owns transport, retries, keepalive timing and
//! errors before the head; dialects own bytes. This file holds the contract (`Ctx`, `Plan`
//! with its `PlanCore`, `Encoder`, `KeepAs`) and request body parsing.
//!
//! Every dialect is a directory of the same files: `mod.rs` (its plan type and `Plan`
//! impl), `request.rs` (client JSON → `UpstreamRequest`), `stream.rs` (`Delta` → client
//! bytes, the `Encoder`), `render.rs` (the non-stream JSON) and `tests.rs`. What they
//! share lives once beside them: `fields` (reading and type-checking request fields, the OpenAI dialects' conversation id) and
//! `items` (items in the backend's input shape: tool calls replayed from a client's
//! history, an answer's items kept for `previous_response_id`). `compact` builds on an
//! already translated request.

pub mod chat;
pub mod compact;
pub(crate) mod fields;
pub(crate) mod items;
pub mod messages;
pub mod responses;

use std::time::{SystemTime, UNIX_EPOCH};

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
        self.config
            .context_window_or(|| self.catalog.find(backend_model).map(|m| m.context_window))
    }
}

/// The id a kept exchange is found under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepAs {
    /// An id the proxy chose before the request ran (`chatcmpl-…`).
    Fixed(String),
    /// The backend's `resp_…` id, which the Responses passthrough shows the client.
    ResponseId,
}

impl KeepAs {
    /// The id for a finished answer (`None` when the backend sent no response id).
    pub fn id(&self, c: &Collected) -> Option<String> {
        match self {
            KeepAs::Fixed(id) => Some(id.clone()),
            KeepAs::ResponseId => (!c.response_id.is_empty()).then(|| c.response_id.clone()),
        }
    }
}

/// What every plan carries, read through the `Plan` getters (each dialect's plan holds one).
pub struct PlanCore {
    /// The one upstream request.
    pub upstream: UpstreamRequest,
    /// The model name the client asked for (echoed in answers, logged).
    pub client_model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// `previous_response_id`: the kept exchange this request continues.
    pub previous: Option<String>,
    /// Whether this exchange is kept for `previous_response_id`, and under which id (the
    /// one the client sees). `None`: not kept.
    pub keep: Option<KeepAs>,
}

impl PlanCore {
    /// A core that chains nothing and is not kept.
    pub fn new(upstream: UpstreamRequest, client_model: String, stream: bool) -> PlanCore {
        PlanCore {
            upstream,
            client_model,
            stream,
            previous: None,
            keep: None,
        }
    }
}

/// A translated request, ready to run.
pub trait Plan: Send + Sync + 'static {
    type Encoder: Encoder;
    /// The protocol errors are rendered in.
    fn protocol(&self) -> Protocol;
    /// The request and the settings every plan has.
    fn core(&self) -> &PlanCore;
    fn upstream(&self) -> &UpstreamRequest {
        &self.core().upstream
    }
    /// The model name the client asked for (for the request log).
    fn client_model(&self) -> &str {
        &self.core().client_model
    }
    /// Whether the client asked for a stream.
    fn stream(&self) -> bool {
        self.core().stream
    }
    /// A fresh encoder for one streamed answer.
    fn encoder(&self) -> Self::Encoder;
    /// The complete non-stream answer (a 200 JSON body). Only called when `collected.finish`
    /// is `Completed` or `Incomplete`; failures become errors in the pipeline.
    fn render(&self, collected: &Collected) -> Vec<u8>;
    /// A last check of a complete non-stream answer before `render` (compaction requires
    /// exactly one compaction item); an error is answered instead of the render.
    fn check(&self, _collected: &Collected) -> Result<(), Error> {
        Ok(())
    }
    /// `previous_response_id`: the kept exchange this request continues (the route splices
    /// its items in front of `upstream().input`).
    fn previous_response_id(&self) -> Option<&str> {
        self.core().previous.as_deref()
    }
    /// Mutable access for that splice (plans that never chain answer `None`).
    fn upstream_mut(&mut self) -> Option<&mut UpstreamRequest> {
        None
    }
    /// Whether this exchange is kept for `previous_response_id`, and under which id (the one
    /// the client sees). `None`: not kept.
    fn keep_as(&self) -> Option<KeepAs> {
        self.core().keep.clone()
    }
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

/// Seconds since the epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Test support: run a dialect's `translate` on `body` with the test config, the built-in
/// catalog and `headers`.
#[cfg(test)]
pub(crate) fn translate_json<P>(
    translate: fn(&mut [u8], &Ctx<'_>) -> Result<P, Error>,
    body: &serde_json::Value,
    headers: &HeaderMap,
) -> Result<P, Error> {
    let config = Config::for_tests(
        "http://127.0.0.1:1",
        std::path::PathBuf::from("/nonexistent"),
    );
    let catalog = Catalog::builtin();
    let ctx = Ctx {
        config: &config,
        catalog: &catalog,
        headers,
    };
    let mut bytes = serde_json::to_vec(body).unwrap();
    translate(&mut bytes, &ctx)
}

/// Requests up to this size parse with the thread's reused simd-json buffers; larger ones
/// get fresh buffers that are freed afterwards, so no thread keeps more than a few times
/// this size alive between requests.
const REUSE_BUFFERS_UP_TO: usize = 4 << 20;

thread_local! {
    /// simd-json's scratch buffers (a padded copy of the input, the unescaped strings, the
    /// structural indexes, the stage-2 stack), kept per thread: a large request otherwise
    /// pays for fresh, page-faulting allocations of about twice its size on every parse.
    static PARSE_BUFFERS: std::cell::RefCell<Option<(usize, simd_json::Buffers)>> =
        const { std::cell::RefCell::new(None) };
}

/// Bodies from this size on keep their original text (`Original`) for `json::RawStrings`;
/// below it, escaping the few strings costs less than the copy.
const KEEP_ORIGINAL_FROM: usize = 16 << 10;

thread_local! {
    /// The buffer `Original` copies a request body into, kept per thread like `PARSE_BUFFERS`
    /// (a fresh 2 MB buffer page-faults on every request).
    static ORIGINAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A copy of a request body taken before it is parsed in place (empty for a small body);
/// the buffer goes back to the thread when dropped.
pub(crate) struct Original(Vec<u8>);

impl Original {
    pub(crate) fn copy(body: &[u8]) -> Original {
        if body.len() < KEEP_ORIGINAL_FROM {
            return Original(Vec::new());
        }
        let mut buf = if body.len() <= REUSE_BUFFERS_UP_TO {
            ORIGINAL.with(|cell| cell.take())
        } else {
            Vec::new()
        };
        buf.clear();
        buf.extend_from_slice(body);
        Original(buf)
    }
}

impl std::ops::Deref for Original {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Original {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() > 0 && buf.capacity() <= REUSE_BUFFERS_UP_TO {
            ORIGINAL.with(|cell| *cell.borrow_mut() = buf);
        }
    }
}

/// Parse a JSON request body with simd-json in place (strings are unescaped inside `body`),
/// enforcing the nesting limit while parsing (stage 2 is iterative, so deep input gets a
/// clear 400 before the recursive tree building could overflow the stack). UTF-8 is
/// validated by simd-json's first stage.
pub fn parse_body<'a>(
    body: &'a mut [u8],
    max_depth: usize,
) -> Result<simd_json::BorrowedValue<'a>, Error> {
    use simd_json::value::borrowed::to_value_with_buffers as parse;
    let len = body.len();
    let fresh = || simd_json::Buffers::with_max_depth(len, max_depth);
    let result = if len <= REUSE_BUFFERS_UP_TO {
        let reused = PARSE_BUFFERS.with(|cell| cell.borrow_mut().take());
        let mut buffers = match reused {
            Some((depth, b)) if depth == max_depth => b,
            _ => fresh(),
        };
        let result = parse(body, &mut buffers);
        PARSE_BUFFERS.with(|cell| *cell.borrow_mut() = Some((max_depth, buffers)));
        result
    } else {
        parse(body, &mut fresh())
    };
    result.map_err(|e| match e.error() {
        simd_json::ErrorType::DepthLimitExceeded => Error::bad_request(format!(
            "request JSON is nested deeper than the limit of {max_depth} levels"
        )),
        simd_json::ErrorType::InvalidUtf8 => Error::bad_request("request body is not valid UTF-8"),
        _ => Error::bad_request(format!("request body is not valid JSON: {e}")),
    })
}

/// Test fixture: the events of a realistic backend stream (reasoning, a commentary message
/// and a Bash call) up to its terminal event, which each dialect's tests add.
#[cfg(test)]
pub(crate) const STREAM_B_ITEMS: [&str; 20] = [
    r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_7c","object":"response","status":"in_progress","model":"gpt-5.5","output":[],"usage":null}}"#,
    r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_7c","object":"response","status":"in_progress","model":"gpt-5.5","output":[]}}"#,
    r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAA…","summary":[]}}"#,
    r#"{"type":"response.reasoning_summary_part.added","sequence_number":3,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}"#,
    r#"{"type":"response.reasoning_summary_text.delta","sequence_number":4,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"**Running a command**\n\nI'll run "}"#,
    r#"{"type":"response.reasoning_summary_text.delta","sequence_number":5,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"echo."}"#,
    r#"{"type":"response.reasoning_summary_text.done","sequence_number":6,"item_id":"rs_1","output_index":0,"summary_index":0,"text":"**Running a command**\n\nI'll run echo."}"#,
    r#"{"type":"response.reasoning_summary_part.done","sequence_number":7,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":"**Running a command**\n\nI'll run echo."}}"#,
    r#"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAA…","summary":[{"type":"summary_text","text":"**Running a command**\n\nI'll run echo."}]}}"#,
    r#"{"type":"response.output_item.added","sequence_number":9,"output_index":1,"item":{"id":"msg_2","type":"message","status":"in_progress","content":[],"phase":"commentary","role":"assistant"}}"#,
    r#"{"type":"response.content_part.added","sequence_number":10,"item_id":"msg_2","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
    r#"{"type":"response.output_text.delta","sequence_number":11,"item_id":"msg_2","output_index":1,"content_index":0,"delta":"Running it now.","logprobs":[]}"#,
    r#"{"type":"response.output_text.done","sequence_number":12,"item_id":"msg_2","output_index":1,"content_index":0,"text":"Running it now.","logprobs":[]}"#,
    r#"{"type":"response.content_part.done","sequence_number":13,"item_id":"msg_2","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Running it now."}}"#,
    r#"{"type":"response.output_item.done","sequence_number":14,"output_index":1,"item":{"id":"msg_2","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Running it now."}],"phase":"commentary","role":"assistant"}}"#,
    r#"{"type":"response.output_item.added","sequence_number":15,"output_index":2,"item":{"id":"fc_3","type":"function_call","status":"in_progress","arguments":"","call_id":"call_abc","name":"Bash"}}"#,
    r#"{"type":"response.function_call_arguments.delta","sequence_number":16,"item_id":"fc_3","output_index":2,"delta":"{\"command\":\"echo "}"#,
    r#"{"type":"response.function_call_arguments.delta","sequence_number":17,"item_id":"fc_3","output_index":2,"delta":"hi\"}"}"#,
    r#"{"type":"response.function_call_arguments.done","sequence_number":18,"item_id":"fc_3","output_index":2,"arguments":"{\"command\":\"echo hi\"}"}"#,
    r#"{"type":"response.output_item.done","sequence_number":19,"output_index":2,"item":{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\"command\":\"echo hi\"}","call_id":"call_abc","name":"Bash"}}"#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_counts_only_structure_outside_strings() {
        let ok = |s: &[u8], depth| parse_body(&mut s.to_vec(), depth).is_ok();
        let nested = |s: &[u8], depth| {
            parse_body(&mut s.to_vec(), depth)
                .unwrap_err()
                .message
                .contains("nested deeper")
        };
        assert!(ok(b"[[[]]]", 3));
        assert!(nested(b"[[[[]]]]", 3));
        assert!(ok(br#"{"a":"[[[[[[[["}"#, 1));
        assert!(ok(br#"{"a":"\"[[[["}"#, 1));
        assert!(ok(br#"{"a":"\\"}"#, 1));
        assert!(nested(br#"{"a":"\\","b":[[1]]}"#, 2));
        assert!(ok(br#"{"a":"x\\\"[[","b":[1]}"#, 2));
        // The thread's reused buffers do not carry one limit over to another.
        assert!(ok(b"[[[[]]]]", 4));
        assert!(nested(b"[[[[]]]]", 3));
    }

    #[test]
    fn parse_body_reports_invalid_utf8() {
        let e = parse_body(&mut b"{\"a\":\"\xff\"}".to_vec(), 8).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
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
