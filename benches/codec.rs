//! Criterion benches of the CPU hot path, on committed upstream recordings
//! (`benches/fixtures/*.sse`, captured from the emulator):
//!
//! * `sse/parse` — bytes/s through `SseParser` for chunk sizes 1, 16, 256 and whole;
//! * `translate/chat`, `translate/messages` — upstream bytes → client bytes (parse, decode,
//!   encode; exactly what `body::Translate` does per socket read), delta events/s;
//! * `request/large` — a 100 KB and a 2 MB Claude Code-like Messages request → upstream body.
//!
//! Every bench asserts its expected event count, so a broken parser cannot look fast.
//! `cargo test --benches` runs each once as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use bytes::BytesMut;
use codex_as_api::config::Config;
use codex_as_api::dialect::{Ctx, Encoder, Plan, chat, messages};
use codex_as_api::sse::parse::SseParser;
use codex_as_api::upstream::catalog::Catalog;
use codex_as_api::upstream::events::{Decoder, Delta};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use serde_json::{Value, json};

/// `(name, bytes, SSE events, delta events)`.
const FIXTURES: &[(&str, &[u8], usize, usize)] = &[
    (
        "text_1000",
        include_bytes!("fixtures/text_1000.sse"),
        1008,
        1000,
    ),
    (
        "tool_args_1000",
        include_bytes!("fixtures/tool_args_1000.sse"),
        1028,
        1000 + 12,
    ),
    (
        "reasoning",
        include_bytes!("fixtures/reasoning.sse"),
        36,
        20,
    ),
];

struct Env {
    config: Config,
    catalog: Catalog,
    headers: HeaderMap,
}

impl Env {
    fn new() -> Env {
        Env {
            config: Config::for_tests("http://127.0.0.1:1", PathBuf::from("/nonexistent")),
            catalog: Catalog::builtin(),
            headers: HeaderMap::new(),
        }
    }
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            catalog: &self.catalog,
            headers: &self.headers,
        }
    }
}

fn bash_tool_chat() -> Value {
    json!([{"type": "function", "function": {"name": "Bash", "description": "run",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}])
}

fn bash_tool_messages() -> Value {
    json!([{"name": "Bash", "description": "Executes a bash command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}])
}

fn chat_plan(env: &Env) -> chat::ChatPlan {
    let mut b = serde_json::to_vec(&json!({
        "model": "gpt-5.5", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}], "tools": bash_tool_chat(),
    }))
    .unwrap();
    chat::translate(&mut b, &env.ctx()).unwrap()
}

fn messages_plan(env: &Env) -> messages::MessagesPlan {
    let mut b = serde_json::to_vec(&json!({
        "model": "claude-opus-5-5", "stream": true, "max_tokens": 32000,
        "messages": [{"role": "user", "content": "hi"}], "tools": bash_tool_messages(),
        "thinking": {"type": "adaptive", "display": "summarized"},
    }))
    .unwrap();
    messages::translate(&mut b, &env.ctx()).unwrap()
}

/// Parses `input` fed in `chunk`-byte pieces; returns the number of events.
fn parse(input: &[u8], chunk: usize, parser: &mut SseParser) -> usize {
    let mut n = 0;
    for piece in input.chunks(chunk) {
        parser.push(piece);
        while let Ok(Some(ev)) = parser.next_event() {
            black_box(ev.data);
            n += 1;
        }
    }
    n
}

fn sse_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse/parse");
    for &(name, input, events, _) in FIXTURES {
        g.throughput(Throughput::Bytes(input.len() as u64));
        for chunk in [1usize, 16, 256, usize::MAX] {
            let label = if chunk == usize::MAX {
                "whole".to_owned()
            } else {
                chunk.to_string()
            };
            let chunk = chunk.min(input.len());
            let mut parser = SseParser::new(1 << 26);
            g.bench_with_input(BenchmarkId::new(name, label), &chunk, |b, &chunk| {
                b.iter(|| assert_eq!(parse(input, chunk, &mut parser), events))
            });
        }
    }
    g.finish();
}

/// Upstream bytes → client bytes, the way `body::Translate` does it for one socket read.
/// Returns `(upstream events, deltas, client bytes)`.
fn translate<E: Encoder>(
    input: &[u8],
    parser: &mut SseParser,
    decoder: &mut Decoder,
    mut enc: E,
    out: &mut BytesMut,
) -> (usize, usize, usize) {
    out.clear();
    enc.begin(out);
    parser.push(input);
    let (mut events, mut deltas) = (0, 0);
    while let Ok(Some(ev)) = parser.next_event() {
        events += 1;
        enc.raw(ev.event, ev.data, out);
        decoder
            .decode(ev.data, |d| {
                if matches!(
                    d,
                    Delta::Text { .. } | Delta::ToolCallArgs { .. } | Delta::ReasoningText { .. }
                ) {
                    deltas += 1;
                }
                enc.delta(d, out);
            })
            .unwrap();
    }
    (events, deltas, out.len())
}

fn bench_translate<P: Plan>(c: &mut Criterion, group: &str, plan: &P) {
    let mut g = c.benchmark_group(group);
    for &(name, input, events, deltas) in FIXTURES {
        let mut parser = SseParser::new(1 << 26);
        let mut decoder = Decoder::new();
        let mut out = BytesMut::with_capacity(1 << 20);
        let (e, d, len) = translate(input, &mut parser, &mut decoder, plan.encoder(), &mut out);
        assert_eq!((e, d), (events, deltas), "{group}/{name}: event counts");
        assert!(len > 0);
        g.throughput(Throughput::Elements(deltas as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let (e, _, len) =
                    translate(input, &mut parser, &mut decoder, plan.encoder(), &mut out);
                assert_eq!(e, events);
                black_box(len)
            })
        });
    }
    g.finish();
}

fn translate_chat(c: &mut Criterion) {
    let env = Env::new();
    bench_translate(c, "translate/chat", &chat_plan(&env));
}

fn translate_messages(c: &mut Criterion) {
    let env = Env::new();
    bench_translate(c, "translate/messages", &messages_plan(&env));
}

/// A Claude Code-like conversation of about `target` bytes: a long system prompt, tools, and
/// turns of Bash calls whose results are file listings and file contents.
pub fn large_request(target: usize) -> Vec<u8> {
    let line = "    pub fn handle(&mut self, req: Request<Incoming>) -> Result<Response<Body>, Error> { /* \"quoted\" \\ path */ }\n";
    let mut messages = vec![json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>"},
        {"type": "text", "text": "Refactor the server module and run the tests."}]})];
    let mut turn = 0;
    let mut size = 0;
    while size < target {
        let id = format!("toolu_{turn:024}");
        let output: String = line.repeat(40);
        size += output.len() + 400;
        messages.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": format!("Let me look at file {turn}.")},
            {"type": "tool_use", "id": id, "name": "Bash", "input": {"command": format!("cat src/file_{turn}.rs")}}]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": output}]}));
        turn += 1;
    }
    messages.push(json!({"role": "user", "content": "Now run cargo test."}));
    serde_json::to_vec(&json!({
        "model": "claude-opus-5-5", "stream": true, "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.\n".repeat(200)}],
        "messages": messages, "tools": bash_tool_messages(),
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": "{\"device_id\":\"6b20142b\",\"session_id\":\"a31f3bca-a60d-4b01-935a-96d1911167bb\"}"},
    }))
    .unwrap()
}

fn request_large(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("request/large");
    for (label, target) in [("100KB", 100 << 10), ("2MB", 2 << 20)] {
        let body = large_request(target);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut work = body.clone();
        let plan = messages::translate(&mut work, &env.ctx()).unwrap();
        let up: Value = serde_json::from_slice(&plan.upstream().body()).unwrap();
        let items = up["input"].as_array().unwrap().len();
        // Each assistant turn becomes a message + a function_call, each result a function_call_output.
        let turns = (body.len() / 4000).max(1);
        assert!(
            items >= turns,
            "{label}: {items} input items for ~{turns} turns"
        );
        g.bench_function(label, |b| {
            b.iter(|| {
                work.copy_from_slice(&body);
                let plan = messages::translate(&mut work, &env.ctx()).unwrap();
                let mut out = Vec::with_capacity(body.len() + 4096);
                plan.upstream().write_body(&mut out);
                assert!(out.len() > body.len() / 2);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    sse_parse,
    translate_chat,
    translate_messages,
    request_large
);
criterion_main!(benches);
