//! Fuzz entry points, shared by the `fuzz/` targets and by corpus replay in `cargo test`.
//!
//! Owns: one function per fuzz target, each taking arbitrary bytes and panicking only when an
//! invariant is broken (a panic is what the fuzzer reports), plus [`run`], which dispatches by
//! target name so `tests/fuzz_corpus.rs` can replay every committed seed directory. Does not
//! own: the parsers themselves, or the fuzz harness (libFuzzer lives in `fuzz/`).
//!
//! To add a target: write `pub fn name(data: &[u8])` here, add it to [`TARGETS`] and [`run`],
//! add `fuzz/fuzz_targets/name.rs` (a one-liner) plus its `[[bin]]` in `fuzz/Cargo.toml`, and
//! commit seeds under `fuzz/corpus/name/`.
#![doc(hidden)]

use std::path::PathBuf;

use bytes::BytesMut;
use http::HeaderMap;

use crate::config::Config;
use crate::dialect::{Ctx, Encoder, Plan, chat, messages, responses};
use crate::error::{Error, Protocol};
use crate::server::h1::{self, Chunk, Framing};
use crate::server::head;
use crate::upstream::catalog::Catalog;
use crate::upstream::events::{Decoder, Delta};
use crate::upstream::failure::{self, PromptSize};

use crate::sse::parse::{SseError, SseEvent, SseParser};

/// Every target name [`run`] knows.
pub const TARGETS: &[&str] = &[
    "sse_parse",
    "sse_chunking",
    "chat_request",
    "messages_request",
    "responses_request",
    "events_to_chat",
    "events_to_messages",
    "auth_json",
    "h1_requests",
    "h1_chunked",
    "events_to_responses",
    "json_spans",
];

/// Runs the target called `target` on `data`; `false` when no such target exists.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "sse_parse" => sse_parse(data),
        "sse_chunking" => sse_chunking(data),
        "chat_request" => chat_request(data),
        "messages_request" => messages_request(data),
        "responses_request" => responses_request(data),
        "events_to_chat" => events_to_chat(data),
        "events_to_messages" => events_to_messages(data),
        "auth_json" => auth_json(data),
        "h1_requests" => h1_requests(data),
        "h1_chunked" => h1_chunked(data),
        "events_to_responses" => events_to_responses(data),
        "json_spans" => json_spans(data),
        _ => return false,
    }
    true
}

/// One parser outcome, owned so whole-buffer and chunked runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Event {
        event: Vec<u8>,
        data: Vec<u8>,
        id: Option<Vec<u8>>,
    },
    Error(SseError),
}

/// Structural facts every dispatched event must satisfy, whatever the input.
fn check_event(e: &SseEvent<'_>, input_len: usize) {
    let no_line_break = |b: &[u8]| !b.iter().any(|&c| c == b'\n' || c == b'\r');
    assert!(no_line_break(e.event), "event name holds a line break");
    assert!(e.id.is_none_or(no_line_break), "id holds a line break");
    assert!(e.id.is_none_or(|id| !id.contains(&0)), "id holds NUL");
    assert!(!e.data.contains(&b'\r'), "data holds a CR");
    assert!(e.data.len() <= input_len, "data longer than the input");
}

/// Drains the parser (via `finish` when `at_eof`), recording outcomes; false after an error.
fn drain(p: &mut SseParser, out: &mut Vec<Outcome>, at_eof: bool, input_len: usize) -> bool {
    loop {
        let r = if at_eof { p.finish() } else { p.next_event() };
        match r {
            Ok(Some(e)) => {
                check_event(&e, input_len);
                out.push(Outcome::Event {
                    event: e.event.to_vec(),
                    data: e.data.to_vec(),
                    id: e.id.map(<[u8]>::to_vec),
                });
            }
            Ok(None) => return true,
            Err(e) => {
                out.push(Outcome::Error(e));
                return false;
            }
        }
    }
}

fn parse_in_chunks<'a>(
    chunks: impl Iterator<Item = &'a [u8]>,
    max: usize,
    input_len: usize,
) -> Vec<Outcome> {
    let mut p = SseParser::new(max);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c);
        assert!(p.buffered() <= input_len, "buffered more than was pushed");
        if !drain(&mut p, &mut out, false, input_len) {
            return out;
        }
    }
    if drain(&mut p, &mut out, true, input_len) {
        assert_eq!(p.buffered(), 0, "bytes left after finish returned None");
    }
    out
}

/// Whole input at once, drained, finished; with a generous and a tight event-size limit.
pub fn sse_parse(data: &[u8]) {
    for max in [1 << 20, data.len() / 3] {
        let out = parse_in_chunks(std::iter::once(data), max, data.len());
        let events = out
            .iter()
            .filter(|o| matches!(o, Outcome::Event { .. }))
            .count();
        // Every event needs at least a `data` line and its terminator.
        assert!(
            events <= data.len() / 4 + 1,
            "more events than input allows"
        );
    }
}

/// Chunking invariance: feeding the payload in pieces gives exactly the whole-buffer result.
///
/// Layout of `data`: byte 0 = `k | limit << 3` where `k` (0..=7) is how many chunk-length
/// bytes follow and `limit` (0 = none) picks a tight event-size limit of `limit * 8` bytes;
/// then `k` length bytes, used cyclically (`len = byte + 1`; `k == 0` means 1-byte chunks);
/// the rest is the SSE payload.
pub fn sse_chunking(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(control & 7);
    let limit = usize::from(control >> 3);
    let (lens, payload) = rest.split_at(k.min(rest.len()));
    let max = if limit == 0 { 1 << 20 } else { limit * 8 };

    let whole = parse_in_chunks(std::iter::once(payload), max, payload.len());
    let split = parse_in_chunks(pieces(payload, lens), max, payload.len());
    assert_eq!(
        split, whole,
        "chunked parse differs from whole-buffer parse"
    );
}

/// `payload` cut into pieces whose lengths are `lens` used cyclically (`len = byte + 1`;
/// no `lens` means 1-byte pieces).
fn pieces<'a>(payload: &'a [u8], lens: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut remaining = payload;
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if remaining.is_empty() {
            return None;
        }
        let len = lens
            .get(i % lens.len().max(1))
            .map_or(1, |&b| usize::from(b) + 1);
        i += 1;
        let (chunk, tail) = remaining.split_at(len.min(remaining.len()));
        remaining = tail;
        Some(chunk)
    })
}

// ---------------------------------------------------------------------------------------
// Request translators
// ---------------------------------------------------------------------------------------

fn fuzz_config() -> Config {
    let mut c = Config::for_tests(
        "http://127.0.0.1:9",
        PathBuf::from("/nonexistent/auth.json"),
    );
    // A small limit so deep inputs reach the depth check within the fuzzer's input size.
    c.max_json_depth = 32;
    c
}

/// An error for the client: a 4xx, a body in the protocol's shape that is valid JSON.
fn check_client_error(e: &Error, protocol: Protocol) {
    let status = e.status(protocol);
    assert!(
        (400..500).contains(&status),
        "bad input gave {status}: {}",
        e.message
    );
    assert!(!e.message.is_empty(), "an error without a message");
    let body = e.body(protocol);
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => panic!(
            "error body is not JSON ({err}): {}",
            String::from_utf8_lossy(&body)
        ),
    };
    let msg = match protocol {
        Protocol::OpenAi => &v["error"]["message"],
        Protocol::Anthropic => {
            assert_eq!(v["type"], "error", "Anthropic error without type: error");
            &v["error"]["message"]
        }
    };
    assert!(msg.is_string(), "error body without a message: {v}");
}

/// The upstream body a plan would send is one JSON object with a string `model` and a
/// boolean `stream` of true (the backend only streams).
fn check_upstream(plan: &impl Plan) {
    let body = plan.upstream().body();
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => panic!(
            "upstream body is not JSON ({err}): {}",
            String::from_utf8_lossy(&body)
        ),
    };
    assert!(v["model"].is_string(), "upstream body without a model: {v}");
    assert_eq!(v["stream"], true, "upstream body must stream: {v}");
    assert!(
        v["input"].is_array() || v["input"].is_string(),
        "upstream input: {v}"
    );
}

fn with_ctx<R>(f: impl FnOnce(&Ctx<'_>) -> R) -> R {
    let config = fuzz_config();
    let catalog = Catalog::builtin();
    let headers = HeaderMap::new();
    let ctx = Ctx {
        config: &config,
        catalog: &catalog,
        headers: &headers,
    };
    f(&ctx)
}

/// A Chat Completions body: translated, or refused with a 4xx in OpenAI's shape.
pub fn chat_request(data: &[u8]) {
    with_ctx(|ctx| match chat::translate(&mut data.to_vec(), ctx) {
        Ok(plan) => check_upstream(&plan),
        Err(e) => check_client_error(&e, Protocol::OpenAi),
    });
}

/// A Messages body (create and count_tokens): translated, or a 4xx in Anthropic's shape.
pub fn messages_request(data: &[u8]) {
    with_ctx(|ctx| {
        match messages::translate(&mut data.to_vec(), ctx) {
            Ok(plan) => check_upstream(&plan),
            Err(e) => check_client_error(&e, Protocol::Anthropic),
        }
        match messages::count_tokens(&mut data.to_vec(), ctx) {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("count_tokens answer is not JSON: {e}"));
                assert!(
                    v["input_tokens"].is_u64(),
                    "count_tokens without input_tokens: {v}"
                );
            }
            Err(e) => check_client_error(&e, Protocol::Anthropic),
        }
    });
}

/// A Responses body: passed through, or refused with a 4xx in OpenAI's shape.
pub fn responses_request(data: &[u8]) {
    with_ctx(|ctx| match responses::translate(&mut data.to_vec(), ctx) {
        Ok(plan) => {
            let body = plan.upstream().body();
            if let Err(err) = serde_json::from_slice::<serde_json::Value>(&body) {
                panic!(
                    "upstream body is not JSON ({err}): {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Err(e) => check_client_error(&e, Protocol::OpenAi),
    });
}

// ---------------------------------------------------------------------------------------
// Upstream event sequences → client streams
// ---------------------------------------------------------------------------------------

/// Reads fuzz bytes as choices; zeros once exhausted.
struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn done(&self) -> bool {
        self.data.is_empty()
    }

    /// A short string: `len` byte then that many bytes (lossy UTF-8), sometimes a fixed
    /// interesting one.
    fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 24);
        match n {
            20 => "\"quoted\\\" \n\r\t</script>".to_owned(),
            21 => "héllo → 世界 🎉".to_owned(),
            22 => "\u{2028}\u{0}\u{1f}".to_owned(),
            23 => String::new(),
            _ => String::from_utf8_lossy(self.bytes(n)).into_owned(),
        }
    }

    /// The next `n` bytes (fewer once exhausted).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (s, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        s
    }

    /// An output index: mostly small, sometimes absurd.
    fn index(&mut self) -> u32 {
        match self.byte() {
            250 => u32::MAX,
            251 => 1 << 20,
            b => u32::from(b % 6),
        }
    }

    fn name(&mut self) -> String {
        match self.byte() % 5 {
            0 => "bash".to_owned(),
            1 => "read_file".to_owned(),
            2 => "mcp__server__a_very_long_tool_name_that_needs_shortening_upstream_x".to_owned(),
            3 => String::new(),
            _ => self.text(),
        }
    }
}

/// The upstream SSE body described by `c`: a sequence of Codex backend events.
fn upstream_events(c: &mut Choices<'_>) -> Vec<u8> {
    use serde_json::json;
    let mut out = Vec::new();
    let push = |out: &mut Vec<u8>, ev: serde_json::Value| {
        let ty = ev["type"].as_str().unwrap_or("x").to_owned();
        out.extend_from_slice(format!("event: {ty}\ndata: {ev}\n\n").as_bytes());
    };
    let mut raw = Vec::new();
    let mut n = 0;
    while !c.done() && n < 64 {
        n += 1;
        let op = c.byte() % 18;
        let i = c.index();
        let usage = json!({"input_tokens": c.byte(), "output_tokens": c.byte(), "total_tokens": 300, "input_tokens_details": {"cached_tokens": c.byte()}, "output_tokens_details": {"reasoning_tokens": 1}});
        match op {
            0 => push(
                &mut out,
                json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
            ),
            1 => push(
                &mut out,
                json!({"type": "response.output_item.added", "output_index": i, "item": {"type": "message", "id": "msg_1", "role": "assistant", "phase": if c.byte().is_multiple_of(2) {"final_answer"} else {"commentary"}, "content": []}}),
            ),
            2 => push(
                &mut out,
                json!({"type": "response.output_text.delta", "output_index": i, "content_index": 0, "delta": c.text()}),
            ),
            3 => push(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": i, "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": c.text()}, {"type": "refusal", "refusal": c.text()}]}}),
            ),
            4 => push(
                &mut out,
                json!({"type": "response.output_item.added", "output_index": i, "item": {"type": "reasoning", "id": c.text(), "summary": []}}),
            ),
            5 => push(
                &mut out,
                json!({"type": "response.reasoning_summary_part.added", "output_index": i, "summary_index": c.byte() % 3}),
            ),
            6 => push(
                &mut out,
                json!({"type": "response.reasoning_summary_text.delta", "output_index": i, "summary_index": c.byte() % 3, "delta": c.text()}),
            ),
            7 => push(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": i, "item": {"type": "reasoning", "id": c.text(), "encrypted_content": c.text(), "summary": [{"type": "summary_text", "text": c.text()}]}}),
            ),
            8 => push(
                &mut out,
                json!({"type": "response.output_item.added", "output_index": i, "item": {"type": if c.byte().is_multiple_of(4) {"custom_tool_call"} else {"function_call"}, "call_id": c.text(), "name": c.name(), "arguments": ""}}),
            ),
            9 => push(
                &mut out,
                json!({"type": "response.function_call_arguments.delta", "output_index": i, "delta": c.text()}),
            ),
            10 => push(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": i, "item": {"type": if c.byte().is_multiple_of(4) {"custom_tool_call"} else {"function_call"}, "call_id": c.text(), "name": c.name(), "arguments": c.text(), "input": c.text()}}),
            ),
            11 => push(
                &mut out,
                json!({"type": "response.refusal.delta", "output_index": i, "delta": c.text()}),
            ),
            12 => push(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": i, "item": {"type": "web_search_call", "id": c.text(), "status": "completed", "action": {"type": "search", "query": c.text(), "sources": [{"type": "url", "url": c.text(), "title": c.text()}]}}}),
            ),
            13 => push(
                &mut out,
                json!({"type": "response.output_text.annotation.added", "output_index": i, "annotation": {"type": "url_citation", "url": c.text(), "title": c.text(), "start_index": c.byte(), "end_index": c.byte()}}),
            ),
            14 => match c.byte() % 6 {
                0 => push(
                    &mut out,
                    json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "usage": usage}}),
                ),
                1 => push(
                    &mut out,
                    json!({"type": "response.incomplete", "response": {"id": "resp_1", "status": "incomplete", "incomplete_details": {"reason": c.text()}, "usage": usage}}),
                ),
                2 => push(
                    &mut out,
                    json!({"type": "response.failed", "response": {"id": "resp_1", "status": "failed", "error": {"code": "context_length_exceeded", "message": c.text()}, "usage": usage}}),
                ),
                3 => push(
                    &mut out,
                    json!({"type": "response.failed", "response": {"id": "resp_1", "status": "failed", "error": {"code": c.text(), "message": c.text()}}}),
                ),
                4 => push(
                    &mut out,
                    json!({"type": "error", "code": c.text(), "message": c.text(), "param": null}),
                ),
                _ => push(
                    &mut out,
                    json!({"type": "response.completed", "response": {"id": "resp_1"}}),
                ),
            },
            15 => push(
                &mut out,
                json!({"type": "response.output_item.done", "output_index": i, "item": {"type": "compaction", "id": c.text(), "encrypted_content": c.text()}}),
            ),
            16 => {
                // A data line that is not JSON (the decoder must refuse it, not panic).
                raw.clear();
                raw.extend_from_slice(b"data: ");
                raw.extend(c.text().bytes().filter(|&b| b != b'\n' && b != b'\r'));
                raw.extend_from_slice(b"\n\n");
                out.extend_from_slice(&raw);
            }
            _ => out.extend_from_slice(b": comment\n\n"),
        }
    }
    out
}

/// How a stream ended, by the same rules as `body::Translate`: every event is parsed,
/// decoded and encoded; a failure before the terminal event becomes one `fail` frame; EOF
/// without a terminal event is an incomplete-stream failure.
fn translate_stream<E: Encoder>(mut encoder: E, upstream: &[u8], protocol: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encoder.begin(&mut out);
    let mut parser = SseParser::new(1 << 20);
    parser.push(upstream);
    parser.push(b"\n\n");
    let mut decoder = Decoder::new();
    let prompt = PromptSize {
        tokens: 10,
        window: 272_000,
    };
    let mut ended = false;
    while !ended {
        let ev = match parser.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                let err = Error::new(
                    crate::error::ErrorKind::BadGateway,
                    format!("upstream stream: {e}"),
                );
                encoder.fail(&err, &mut out);
                ended = true;
                continue;
            }
        };
        encoder.raw(ev.event, ev.data, &mut out);
        let mut failure = None;
        let mut terminal = false;
        let decoded = decoder.decode(ev.data, |d| match d {
            Delta::Failed { code, message, .. } | Delta::Error { code, message } => {
                failure = Some(failure::from_terminal(*code, *message, protocol, || {
                    PromptSize {
                        tokens: prompt.tokens,
                        window: prompt.window,
                    }
                }));
            }
            _ => {
                terminal |= d.is_terminal();
                encoder.delta(d, &mut out);
            }
        });
        if decoded.is_err() {
            failure = Some(Error::new(
                crate::error::ErrorKind::BadGateway,
                "upstream sent an event that is not valid JSON",
            ));
        }
        if let Some(err) = failure {
            encoder.fail(&err, &mut out);
            ended = true;
        } else if terminal {
            ended = true;
        }
    }
    if !ended {
        encoder.fail(&failure::incomplete_stream(), &mut out);
    }
    out.to_vec()
}

/// The same upstream body through the non-stream aggregator: a completed or incomplete
/// response renders to one JSON object.
fn check_non_stream(plan: &impl Plan, upstream: &[u8]) {
    use crate::upstream::collect::{Collected, Finish};
    let mut parser = SseParser::new(1 << 20);
    parser.push(upstream);
    parser.push(b"\n\n");
    let mut decoder = Decoder::new();
    let mut collected = Collected::new();
    while let Ok(Some(ev)) = parser.next_event() {
        if decoder.decode(ev.data, |d| collected.push(d)).is_err() {
            return;
        }
        if collected.finish != Finish::Open {
            break;
        }
    }
    if matches!(collected.finish, Finish::Completed | Finish::Incomplete(_)) {
        let body = plan.render(&collected);
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
            panic!(
                "non-stream answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

/// The client stream as (event name, data) pairs; panics unless it is well-formed SSE.
fn client_frames(stream: &[u8]) -> Vec<(String, String)> {
    assert!(
        stream.is_empty() || stream.ends_with(b"\n\n"),
        "the stream does not end with a complete frame"
    );
    let mut p = SseParser::new(1 << 24);
    p.push(stream);
    let mut frames = Vec::new();
    loop {
        match p.next_event() {
            Ok(Some(e)) => frames.push((
                String::from_utf8(e.event.to_vec())
                    .unwrap_or_else(|_| panic!("event name not UTF-8")),
                String::from_utf8(e.data.to_vec()).unwrap_or_else(|_| panic!("data not UTF-8")),
            )),
            Ok(None) => break,
            Err(e) => panic!("client stream is not valid SSE: {e:?}"),
        }
    }
    assert_eq!(p.buffered(), 0, "bytes after the last frame");
    frames
}

fn json_of(data: &str) -> serde_json::Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {data}"))
}

const CHAT_BODIES: [&str; 4] = [
    r#"{"model":"gpt-5.5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"gpt-5.5","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"bash","parameters":{"type":"object"}}},{"type":"function","function":{"name":"mcp__server__a_very_long_tool_name_that_needs_shortening_upstream_x"}}]}"#,
    r#"{"model":"gpt-5.5","stream":true,"messages":[{"role":"user","content":"hi"}],"functions":[{"name":"bash"}]}"#,
    r#"{"model":"o3","stream":true,"reasoning_effort":"high","messages":[{"role":"user","content":"hi"}]}"#,
];

const MESSAGES_BODIES: [&str; 4] = [
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"bash","input_schema":{"type":"object"}},{"name":"mcp__server__a_very_long_tool_name_that_needs_shortening_upstream_x","input_schema":{"type":"object"}}]}"#,
    r#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"stop_sequences":["ab","\n\n","x"],"messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"claude-haiku-4-5","max_tokens":100,"stream":true,"thinking":{"type":"enabled","budget_tokens":2000},"stop_sequences":["a"],"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"hi"}]}"#,
];

/// Upstream event sequences through the Chat encoder: valid SSE, JSON payloads, one
/// terminal chunk (`finish_reason` or `error`), then exactly one `[DONE]`, last.
pub fn events_to_chat(data: &[u8]) {
    let mut c = Choices { data };
    let body = CHAT_BODIES[usize::from(c.byte()) % CHAT_BODIES.len()];
    let Ok(plan) = with_ctx(|ctx| chat::translate(&mut body.as_bytes().to_vec(), ctx)) else {
        panic!("a fixed Chat request did not translate");
    };
    let upstream = upstream_events(&mut c);
    check_non_stream(&plan, &upstream);
    let stream = translate_stream(plan.encoder(), &upstream, Protocol::OpenAi);
    let frames = client_frames(&stream);
    let mut done = 0;
    let mut terminal = 0;
    for (i, (event, data)) in frames.iter().enumerate() {
        assert!(
            event.is_empty() || event == "message",
            "Chat frames carry no event name: {event}"
        );
        if data == "[DONE]" {
            done += 1;
            assert_eq!(i + 1, frames.len(), "frames after [DONE]");
            continue;
        }
        let v = json_of(data);
        if v.get("error").is_some() {
            terminal += 1;
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        if let Some(choice) = v["choices"].as_array().and_then(|a| a.first()) {
            if !choice["finish_reason"].is_null() {
                terminal += 1;
            }
            assert!(choice["delta"].is_object(), "{v}");
        }
    }
    assert_eq!(done, 1, "exactly one [DONE]");
    assert_eq!(terminal, 1, "exactly one finish_reason or error chunk");
}

/// Upstream event sequences through the Messages encoder: valid SSE, JSON payloads whose
/// `type` is the event name, `message_start` first, content blocks started and stopped in
/// order and balanced, exactly one terminal event (`message_stop` or `error`), last.
pub fn events_to_messages(data: &[u8]) {
    let mut c = Choices { data };
    let body = MESSAGES_BODIES[usize::from(c.byte()) % MESSAGES_BODIES.len()];
    let Ok(plan) = with_ctx(|ctx| messages::translate(&mut body.as_bytes().to_vec(), ctx)) else {
        panic!("a fixed Messages request did not translate");
    };
    let upstream = upstream_events(&mut c);
    check_non_stream(&plan, &upstream);
    let stream = translate_stream(plan.encoder(), &upstream, Protocol::Anthropic);
    let frames = client_frames(&stream);
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    let mut terminal = 0;
    let mut message_delta = 0;
    for (i, (event, data)) in frames.iter().enumerate() {
        let v = json_of(data);
        assert_eq!(
            v["type"].as_str(),
            Some(event.as_str()),
            "event name and type differ: {data}"
        );
        if i == 0 {
            assert_eq!(
                event, "message_start",
                "the stream starts with message_start"
            );
        }
        match event.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "a block started while another is open");
                assert_eq!(
                    v["index"].as_u64(),
                    Some(next),
                    "block indices are consecutive"
                );
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => {
                assert!(
                    open.is_some() && v["index"].as_u64() == open,
                    "delta outside its block: {data}"
                );
            }
            "content_block_stop" => {
                assert!(
                    open.is_some() && v["index"].as_u64() == open,
                    "stop of a block that is not open: {data}"
                );
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta with a block open");
                message_delta += 1;
            }
            "message_stop" | "error" => {
                terminal += 1;
                assert_eq!(i + 1, frames.len(), "frames after the terminal event");
                assert_eq!(open, None, "the stream ended with a content block open");
            }
            "message_start" => assert_eq!(i, 0, "a second message_start"),
            "ping" => {}
            other => panic!("unknown Anthropic event {other}"),
        }
    }
    assert_eq!(terminal, 1, "exactly one terminal event");
    assert!(message_delta <= 1, "more than one message_delta");
}

// ---------------------------------------------------------------------------------------
// auth.json
// ---------------------------------------------------------------------------------------

/// Any bytes as `auth.json`: parsed or refused with a message free of token text; a
/// refresh write-back keeps every other key and parses back to the new tokens; Debug
/// never shows a token.
pub fn auth_json(data: &[u8]) {
    use crate::auth::file;
    match file::parse(data) {
        Err(why) => {
            let text = why.describe(std::path::Path::new("/x/auth.json"));
            assert!(text.contains("/x/auth.json"), "{text}");
        }
        Ok((mut doc, tokens)) => {
            // Debug must not depend on the secrets at all: searching it for the token text
            // would be fooled by a token that equals the (shown) account id, or `<redacted>`.
            let dbg = format!("{tokens:?}");
            let mut blank = tokens.clone();
            blank.access_token = "A".into();
            blank.refresh_token = blank.refresh_token.map(|_| "R".into());
            blank.id_token = blank.id_token.map(|_| "I".into());
            assert_eq!(dbg, format!("{blank:?}"), "Debug shows a token");
            let _ = crate::auth::claims::Claims::decode(&tokens.access_token);
            let before = doc.clone();
            file::apply_refresh(
                &mut doc,
                None,
                Some("at-new"),
                Some("rt-new"),
                (1_700_000_000, 5),
            );
            let bytes =
                serde_json::to_vec_pretty(&doc).unwrap_or_else(|e| panic!("serialize: {e}"));
            let Ok((_, again)) = file::parse(&bytes) else {
                panic!("a written-back auth.json does not parse");
            };
            assert_eq!(again.access_token, "at-new");
            assert_eq!(again.refresh_token.as_deref(), Some("rt-new"));
            assert_eq!(again.last_refresh, Some(1_700_000_000));
            if let (Some(a), Some(b)) = (before.as_object(), doc.as_object()) {
                for (k, v) in a {
                    if k != "tokens" && k != "last_refresh" {
                        assert_eq!(b.get(k), Some(v), "write-back lost key {k}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP/1.1 server connection (server::head, server::h1)
// ---------------------------------------------------------------------------------------

/// What the server does with a client's bytes, in order; owned so that whole-buffer and
/// split runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum H1Step {
    /// A request head handed to the router (method, target, version, headers).
    Request {
        head: String,
        framing: Framing,
        keep_alive: bool,
        expect: bool,
    },
    /// The whole body of that request.
    Body(Vec<u8>),
    /// A head refused with this status (in this protocol's shape); the connection closes.
    Refused(u16, Protocol, String),
    /// A broken body: answered with a 400 (431 for trailers over their cap), then closed.
    BodyFailed(String),
    /// The bytes end inside a head (a 408 once the header timeout passes).
    HeadStalled,
    /// The bytes end inside a body, after this much of it.
    BodyStalled(Vec<u8>),
    /// The request did not allow keep-alive: the connection closes, later bytes unread.
    Closed,
    /// The h2 preface: the connection goes to hyper.
    H2,
}

/// A refused head: 431 for a size limit, 501 for a transfer coding other than chunked, 400
/// for anything else, with a JSON body.
fn h1_refused(e: &Error, protocol: Protocol) -> H1Step {
    use crate::error::ErrorKind;
    let status = e.status(protocol);
    let expected = match e.kind {
        ErrorKind::HeadersTooLarge => 431,
        ErrorKind::BadRequest => 400,
        ErrorKind::NotImplemented => 501,
        ref other => panic!("a head refused as {other:?}: {}", e.message),
    };
    assert_eq!(status, expected, "{}", e.message);
    if let Err(err) = serde_json::from_slice::<serde_json::Value>(&e.body(protocol)) {
        panic!("the answer to a refused head is not JSON: {err}");
    }
    H1Step::Refused(status, protocol, e.message.clone())
}

/// `req` as the head a client would send for it.
fn h1_head_of(req: &http::Request<()>) -> Vec<u8> {
    let version = if req.version() == http::Version::HTTP_10 {
        "1.0"
    } else {
        "1.1"
    };
    let mut head = format!("{} {} HTTP/{version}\r\n", req.method(), req.uri()).into_bytes();
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// What RFC 9112 says of an accepted head, checked against what `parse_head` made of it;
/// and the request, written back as a head, parses to the same.
fn h1_check_request(parsed: &(http::Request<()>, Framing, bool, bool)) -> H1Step {
    use http::{Version, header};
    let (req, framing, keep_alive, expect) = parsed;
    let (framing, keep_alive, expect) = (*framing, *keep_alive, *expect);
    let tokens = |name: header::HeaderName| -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let http10 = req.version() == Version::HTTP_10;
    let has_length = req.headers().contains_key(header::CONTENT_LENGTH);
    let hosts = req.headers().get_all(header::HOST).iter().count();
    assert!(
        hosts == 1 || (http10 && hosts == 0),
        "{hosts} Host headers in an accepted HTTP/{} request",
        if http10 { "1.0" } else { "1.1" }
    );
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        assert!(!http10, "an HTTP/1.0 request with a transfer-encoding");
        let codings: Vec<String> = tokens(header::TRANSFER_ENCODING)
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        assert_eq!(codings, ["chunked"], "transfer codings accepted");
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        assert!(
            !(has_length && keep_alive),
            "chunked with a length is kept alive"
        );
    } else if has_length {
        let lengths = tokens(header::CONTENT_LENGTH);
        assert!(
            lengths
                .iter()
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())),
            "content-length not 1*DIGIT: {lengths:?}"
        );
        let n: u64 = lengths
            .first()
            .and_then(|l| l.parse().ok())
            .unwrap_or_default();
        assert!(lengths.iter().all(|l| l.parse() == Ok(n)), "{lengths:?}");
        let want = if n == 0 {
            Framing::None
        } else {
            Framing::Length(n)
        };
        assert_eq!(framing, want);
    } else {
        assert_eq!(framing, Framing::None, "a body without framing headers");
    }
    let connection = tokens(header::CONNECTION);
    if connection.iter().any(|t| t == "close")
        || (http10 && !connection.iter().any(|t| t == "keep-alive"))
    {
        assert!(!keep_alive, "kept alive against Connection: {connection:?}");
    }
    assert!(
        !expect || (!http10 && framing != Framing::None),
        "100-continue without a body"
    );

    let head = format!(
        "{} {} {:?} {:?}",
        req.method(),
        req.uri(),
        req.version(),
        req.headers()
    );
    let mut again = h1_head_of(req);
    let reparsed = h1::parse_head(&mut again)
        .unwrap_or_else(|e| panic!("a parsed head written back is refused: {}", e.message));
    assert!(again.is_empty(), "bytes left after a written-back head");
    let (req2, framing2, keep_alive2, expect2) = reparsed;
    let head2 = format!(
        "{} {} {:?} {:?}",
        req2.method(),
        req2.uri(),
        req2.version(),
        req2.headers()
    );
    assert_eq!(head2, head, "a written-back head parses differently");
    assert_eq!(
        (framing2, keep_alive2, expect2),
        (framing, keep_alive, expect)
    );
    H1Step::Request {
        head,
        framing,
        keep_alive,
        expect,
    }
}

/// The server side of one connection fed `reads`, with heads limited to `max` bytes:
/// `head::progress`, `h1::parse_head` and `Framing::decode` in the order `h1::serve` runs
/// them, for a router that reads every body to its end.
fn h1_connection<'a>(reads: impl Iterator<Item = &'a [u8]>, max: usize) -> Vec<H1Step> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut scanned = 0;
    let mut total = 0;
    // The request whose body is being read: its framing, keep-alive, the body so far, and
    // its Content-Length.
    let mut body: Option<(Framing, bool, Vec<u8>, Option<u64>)> = None;
    let mut trailers = 0;
    for read in reads {
        buf.extend_from_slice(read);
        total += read.len();
        loop {
            if let Some((framing, keep_alive, data, declared)) = &mut body {
                let declared = *declared;
                if let Err(e) =
                    framing.decode(&mut buf, &mut trailers, |d| data.extend_from_slice(d))
                {
                    let status = e.error().status(Protocol::OpenAi);
                    assert!(
                        status == 400 || status == 431,
                        "a body refused with {status}"
                    );
                    out.push(H1Step::BodyFailed(e.message().to_owned()));
                    return out;
                }
                assert!(trailers <= h1::MAX_TRAILER_BYTES, "trailers over their cap");
                assert!(data.len() <= total, "a body longer than the input");
                if let Some(n) = declared {
                    assert!(data.len() as u64 <= n, "a body beyond its Content-Length");
                }
                if *framing != Framing::None {
                    break;
                }
                if let Some(n) = declared {
                    assert_eq!(data.len() as u64, n, "a body short of its Content-Length");
                }
                out.push(H1Step::Body(std::mem::take(data)));
                if !*keep_alive {
                    out.push(H1Step::Closed);
                    return out;
                }
                body = None;
                scanned = 0;
            }
            match head::progress(&buf, &mut scanned, max) {
                Ok(false) => break,
                Ok(true) => {}
                Err((e, protocol)) => {
                    out.push(h1_refused(&e, protocol));
                    return out;
                }
            }
            if out.is_empty() && buf.starts_with(b"PRI * HTTP/2.0") {
                out.push(H1Step::H2);
                return out;
            }
            let before = buf.len();
            let head_copy = buf.clone();
            let parsed = match h1::parse_head(&mut buf) {
                Ok(parsed) => parsed,
                Err(e) => {
                    out.push(h1_refused(&e, h1::protocol_of_head(&buf)));
                    return out;
                }
            };
            let raw = head_copy.get(..before - buf.len()).unwrap_or_default();
            assert!(
                memchr::memchr_iter(b'\n', raw).all(|i| i > 0 && raw.get(i - 1) == Some(&b'\r')),
                "a head with a bare LF was accepted"
            );
            out.push(h1_check_request(&parsed));
            let declared = match parsed.1 {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            body = Some((parsed.1, parsed.2, Vec::new(), declared));
            trailers = 0;
        }
    }
    match body {
        Some((_, _, data, _)) => out.push(H1Step::BodyStalled(data)),
        None if !buf.is_empty() => out.push(H1Step::HeadStalled),
        None => {}
    }
    out
}

/// Any bytes as what a client sends on one connection (pipelined requests, bodies of either
/// framing): the heads accepted agree with RFC 9112 (CRLF line ends, one Host, `chunked`
/// the only transfer coding) and parse the same when written back, refusals are 400, 431
/// or 501 (a transfer coding other than chunked), bodies never exceed their length, and
/// reading the bytes in fuzzer-chosen pieces gives exactly what reading them at once gives.
///
/// Layout of `data`: byte 0 = `k | limit << 3` where `k` (0..=7) is how many read-length
/// bytes follow (used cyclically, `len = byte + 1`; `k == 0` means 1-byte reads) and
/// `limit` (0 = the server's) limits heads to `limit * 16` bytes; the rest is the wire.
pub fn h1_requests(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(control & 7);
    let limit = usize::from(control >> 3);
    let (lens, wire) = rest.split_at(k.min(rest.len()));
    let max = if limit == 0 {
        head::MAX_HEAD_BYTES
    } else {
        limit * 16
    };
    let whole = h1_connection(std::iter::once(wire), max);
    let split = h1_connection(pieces(wire, lens), max);
    assert_eq!(
        split, whole,
        "reading in pieces differs from reading at once"
    );
}

/// Chunked request bodies: a body cut into chunks of fuzzer-chosen sizes, their size lines
/// spelled in any valid way (hex case, leading zeros, extensions), then trailers and the next
/// request, decodes (read in fuzzer-chosen pieces) to exactly the body and leaves exactly
/// the next request. What RFC 9112 §7.1 does not allow is refused after exactly the chunks
/// before it: a size line longer than the limit, a bare LF ending any line (size line, the
/// end of a chunk's data, a trailer, the blank line), whitespace after the size, a control
/// character (a bare CR among them) in an extension or a trailer, and one broken spelling
/// when the fuzzer picks it (a sign, `0x`, a non-hex digit, no digits, a size beyond u64,
/// no CRLF after the data).
///
/// Layout of `data`: byte 0 = `broken | chunk << 4` (`broken` 1..=7 breaks chunk `chunk`
/// as listed above, other values nothing); byte 1 = `k` (0..=7) read-length bytes follow,
/// as in [`h1_requests`]; the rest describes the chunks, the trailers and the line ends.
pub fn h1_chunked(data: &[u8]) {
    let mut c = Choices { data };
    let flags = c.byte();
    let (broken, broken_chunk) = (flags % 16, usize::from(flags >> 4));
    let k = c.byte() % 8;
    let lens = c.bytes(usize::from(k));
    let ctl = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
    let mut wire = Vec::new();
    let mut body = Vec::new();
    // The body decoded when the decoder refuses the wire, if it must.
    let mut refused_after: Option<usize> = None;
    let mut i = 0;
    loop {
        let len = c.byte();
        let data = c.bytes(usize::from(len));
        let spelling = c.byte();
        let ext_kind = c.byte();
        let mut line = Vec::new();
        let hex = if spelling & 1 == 0 {
            format!("{:x}", data.len())
        } else {
            format!("{:X}", data.len())
        };
        let zeros = usize::from((spelling >> 1) & 3);
        let digits = match (i == broken_chunk).then_some(broken) {
            Some(1) => format!("+{hex}"),
            Some(2) => format!("-{hex}"),
            Some(3) => format!("0x{hex}"),
            Some(4) => format!("{hex}g"),
            Some(5) => String::new(),
            Some(6) => format!("1{:016x}", data.len()),
            _ => format!("{}{hex}", "0".repeat(zeros)),
        };
        line.extend_from_slice(digits.as_bytes());
        // Whitespace after the size (the grammar's BWS before `;` included) is refused.
        let bws = spelling & 8 != 0;
        if bws {
            line.extend_from_slice(b" \t");
        }
        let ext_start = line.len();
        match ext_kind % 5 {
            0 => {}
            1 => line.extend_from_slice(b";name"),
            2 => line.extend_from_slice(b";name=value;x=\"q;\\\"\""),
            3 => {
                let len = c.byte() % 32;
                let ext = c.bytes(usize::from(len));
                line.push(b';');
                line.extend(ext.iter().filter(|&&b| b != b'\n'));
            }
            _ => {
                line.push(b';');
                line.resize(line.len() + usize::from(c.byte()) * 8, b'x');
            }
        }
        // Without its CR the line ends in a bare LF (unless the extension ended in one).
        if spelling & 16 == 0 {
            line.push(b'\r');
        }
        let content = line.strip_suffix(b"\r");
        let ext = content.and_then(|c| c.get(ext_start..)).unwrap_or_default();
        let line_ok = content.is_some() && !bws && !ext.iter().any(ctl);
        if refused_after.is_none()
            && (line.len() > h1::MAX_CHUNK_LINE
                || !line_ok
                || (i == broken_chunk && (1..=6).contains(&broken)))
        {
            refused_after = Some(body.len());
        }
        wire.extend_from_slice(&line);
        wire.push(b'\n');
        if data.is_empty() {
            break;
        }
        wire.extend_from_slice(data);
        body.extend_from_slice(data);
        if i == broken_chunk && broken == 7 {
            refused_after.get_or_insert(body.len());
            wire.extend_from_slice(b"X\r\n");
        } else if spelling & 32 == 0 {
            wire.extend_from_slice(b"\r\n");
        } else {
            refused_after.get_or_insert(body.len());
            wire.push(b'\n');
        }
        i += 1;
    }
    for t in 0..c.byte() % 3 {
        wire.extend_from_slice(format!("x-trailer-{t}: ").as_bytes());
        let len = c.byte() % 16;
        let value = c.bytes(usize::from(len));
        let value: Vec<u8> = value.iter().copied().filter(|&b| b != b'\n').collect();
        if value.iter().any(ctl) {
            refused_after.get_or_insert(body.len());
        }
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
    }
    if c.byte() & 1 == 0 {
        wire.extend_from_slice(b"\r\n");
    } else {
        refused_after.get_or_insert(body.len());
        wire.push(b'\n');
    }
    let next = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    wire.extend_from_slice(next);

    let decode = |reads: &mut dyn Iterator<Item = &[u8]>| {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut trailers = 0;
        for read in reads {
            buf.extend_from_slice(read);
            let r = framing.decode(&mut buf, &mut trailers, |d| out.extend_from_slice(d));
            assert!(out.len() <= body.len(), "decoded more than the body");
            if let Err(e) = r {
                return (out, Err(e));
            }
        }
        (out, Ok((framing, buf)))
    };
    let mut refusals = Vec::new();
    for reads in [
        &mut std::iter::once(&wire[..]) as &mut dyn Iterator<Item = &[u8]>,
        &mut pieces(&wire, lens),
    ] {
        let (out, rest) = decode(reads);
        match refused_after {
            Some(n) => {
                let Err(refusal) = rest else {
                    panic!("a broken chunked body was accepted");
                };
                refusals.push(refusal);
                assert_eq!(
                    out,
                    body.get(..n).unwrap_or_default(),
                    "decoded before refusing"
                );
            }
            None => {
                let Ok((framing, rest)) = rest else {
                    panic!("a valid chunked body was refused: {rest:?}");
                };
                assert_eq!(framing, Framing::None, "the body did not end");
                assert_eq!(out, body, "decoded body differs");
                assert_eq!(rest, next, "the next request was not left whole");
            }
        }
    }
    if let [whole, split] = refusals[..] {
        assert_eq!(whole, split, "refused differently when read in pieces");
    }
    if refused_after.is_none() {
        // The same body in a request on a connection, followed by the next request.
        let mut conn = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        conn.extend_from_slice(&wire);
        let steps = h1_connection(pieces(&conn, lens), head::MAX_HEAD_BYTES);
        assert!(
            matches!(&steps[..], [H1Step::Request { .. }, H1Step::Body(b), H1Step::Request { .. }, H1Step::Body(e)] if *b == body && e.is_empty()),
            "{steps:?}"
        );
    }
}

const RESPONSES_BODIES: [&str; 3] = [
    r#"{"model":"gpt-5.5","stream":true,"input":"hi"}"#,
    r#"{"model":"gpt-5.5","stream":true,"input":[{"role":"user","content":"hi"}],"tools":[{"type":"function","name":"bash","parameters":{"type":"object"}},{"type":"function","name":"mcp__server__a_very_long_tool_name_that_needs_shortening_upstream_x","parameters":{"type":"object"}}]}"#,
    r#"{"model":"gpt-5.5","stream":true,"include":["reasoning.encrypted_content"],"reasoning":{"effort":"high"},"input":"hi"}"#,
];

/// Upstream event sequences through the Responses encoder (byte forwarding with splices):
/// valid SSE; every frame named, its data JSON whose `type` is that name; `sequence_number`s
/// strictly increasing; never a `response.failed` (failures become the one `error` event);
/// exactly one terminal frame (`response.completed`, `response.incomplete` or `error`), last;
/// a spliced terminal `response.output` holds every `output_item.done` item.
pub fn events_to_responses(data: &[u8]) {
    let mut c = Choices { data };
    let body = RESPONSES_BODIES[usize::from(c.byte()) % RESPONSES_BODIES.len()];
    let Ok(plan) = with_ctx(|ctx| responses::translate(&mut body.as_bytes().to_vec(), ctx)) else {
        panic!("a fixed Responses request did not translate");
    };
    let upstream = upstream_events(&mut c);
    check_non_stream(&plan, &upstream);
    let stream = translate_stream(plan.encoder(), &upstream, Protocol::OpenAi);
    let frames = client_frames(&stream);
    let mut last_seq: Option<u64> = None;
    let mut terminal = 0;
    let mut done_items = 0;
    for (i, (event, data)) in frames.iter().enumerate() {
        assert!(!event.is_empty(), "an unnamed frame: {data}");
        assert_ne!(
            event, "response.failed",
            "failures go out as the error event"
        );
        let v = json_of(data);
        assert_eq!(v["type"].as_str(), Some(event.as_str()), "{data}");
        if let Some(seq) = v["sequence_number"].as_u64() {
            assert!(
                last_seq.is_none_or(|l| seq > l),
                "sequence_number went back: {data}"
            );
            last_seq = Some(seq);
        }
        match event.as_str() {
            "response.output_item.done" => done_items += 1,
            "response.completed" | "response.incomplete" | "error" => {
                terminal += 1;
                assert_eq!(i + 1, frames.len(), "frames after the terminal one");
                if event == "error" {
                    assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
                    assert!(v["sequence_number"].is_u64(), "{v}");
                }
                if let Some(out) = v["response"]["output"].as_array()
                    && !out.is_empty()
                {
                    assert!(
                        out.len() <= done_items,
                        "spliced more items than were done: {v}"
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(terminal, 1, "exactly one terminal frame");
}

/// The Responses encoder's JSON span scanner against serde_json. Byte 0 picks the mode:
/// an object (`member` finds every unescaped, unique key's value, which parses to what
/// serde_json parsed, and misses absent keys), an array (`elements` matches serde_json's
/// elements one to one) or a number (`parse_u64` agrees with serde_json on every u64).
/// On input serde_json refuses, the scanner may answer anything but must not panic.
pub fn json_spans(data: &[u8]) {
    use crate::json::span;
    use serde_json::Value;
    let Some((&mode, b)) = data.split_first() else {
        return;
    };
    let parsed = serde_json::from_slice::<Value>(b);
    match mode % 3 {
        0 => {
            let _ = span::member(b, b"type");
            let _ = span::leading_member(b, b"sequence_number", 2);
            let Ok(Value::Object(obj)) = parsed else {
                return;
            };
            // With no backslash in the input every key is written as it reads, so the
            // scanner (which compares raw key bytes, as the backend writes them) must find
            // each unique one. With one, a key may be escaped at the top level and shadowed
            // by a plain copy deeper down: a span found must still be one whole value.
            let plain_input = !b.contains(&b'\\');
            for (k, v) in &obj {
                let encoded = serde_json::to_string(k).unwrap_or_default();
                let unique = memchr::memmem::find_iter(b, encoded.as_bytes()).count() == 1;
                match span::member(b, k.as_bytes()) {
                    Some(r) => {
                        let got: Value = serde_json::from_slice(&b[r.clone()])
                            .unwrap_or_else(|e| panic!("span of {k:?} is not JSON ({e})"));
                        if plain_input && unique {
                            assert_eq!(&got, v, "member {k:?}");
                        }
                    }
                    None => assert!(!(plain_input && unique), "member {k:?} not found"),
                }
            }
            // A raw NUL cannot be in a valid JSON key.
            assert_eq!(span::member(b, b"\x00absent"), None);
        }
        1 => {
            let got = span::elements(b);
            let Ok(Value::Array(items)) = parsed else {
                return;
            };
            let Some(spans) = got else {
                panic!("a valid array was not split");
            };
            assert_eq!(spans.len(), items.len());
            for (r, v) in spans.into_iter().zip(&items) {
                let e: Value = serde_json::from_slice(&b[r])
                    .unwrap_or_else(|e| panic!("element span is not JSON ({e})"));
                assert_eq!(&e, v);
            }
        }
        _ => {
            let got = span::parse_u64(b);
            if let Ok(Value::Number(n)) = parsed
                && let Some(u) = n.as_u64()
                && !b.iter().any(|c| c.is_ascii_whitespace())
            {
                assert_eq!(got, Some(u), "parse_u64 disagrees with serde_json");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dispatches_every_listed_target_and_rejects_unknown_names() {
        for t in TARGETS {
            assert!(run(t, b"\x02\x03\x05event: a\ndata: b\n\n"));
        }
        assert!(!run("no_such_target", b""));
    }

    #[test]
    fn targets_accept_empty_and_degenerate_inputs() {
        for t in TARGETS {
            for input in [&b""[..], b"\0", b"\x07", b"\r", b"\xff\xff\xff\r\n\r\n"] {
                assert!(run(t, input));
            }
        }
    }
}
