//! Criterion benches of the CPU hot path, on committed upstream recordings
//! (`benches/fixtures/*.sse`, captured from the emulator):
//!
//! * `sse/parse` — bytes/s through `SseParser` for chunk sizes 1, 16, 256 and whole;
//! * `translate/chat`, `translate/messages` — upstream bytes → client bytes (parse, decode,
//!   encode; exactly what `body::Translate` does per socket read), delta events/s;
//! * `request/large` — a 100 KB and a 2 MB Claude Code-like Messages request → upstream body
//!   (`fixtures/claude_code.rs` makes them);
//! * `large_request` — the proxy's whole CPU path for the 2 MB request: the body as hyper
//!   delivers it (16 KB chunks) collected the way `server::route` reads it, parsed and
//!   translated, the upstream JSON written and zstd-compressed (`pipeline::prepare_body`);
//! * `zstd/2MB` — compressing that upstream body at levels -5 … 3 (bytes are printed once),
//!   timed by thread CPU time like `large_request/2MB-cpu`;
//! * `deflate/2MB` — the same body as one WebSocket message through the permessage-deflate
//!   compressor at levels 1 and 6;
//! * `deflate/write`, `deflate/read` — 200 delta events of `text_1000`, each its own
//!   compressed WebSocket message, written through a server's permessage-deflate adapter
//!   (`upstream::deflate::Deflate`; the socket's compressor context kept between messages,
//!   or reset after each), and read through a client's into the frames tungstenite reads.
//!
//! Every bench asserts its expected event count, so a broken parser cannot look fast.
//! `cargo test --benches` runs each once as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

#[path = "fixtures/claude_code.rs"]
mod claude_code;
use claude_code::claude_code_request;

use bytes::BytesMut;
use codex_as_api::config::Config;
use codex_as_api::internals::dialect::{Ctx, Encoder, Plan, chat, messages};
use codex_as_api::internals::sse::parse::SseParser;
use codex_as_api::internals::upstream::catalog::Catalog;
use codex_as_api::internals::upstream::deflate::Params;
use codex_as_api::internals::upstream::events::{Decoder, Delta};
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

fn request_large(c: &mut Criterion) {
    let env = Env::new();
    let mut g = c.benchmark_group("request/large");
    for (label, target) in [("100KB", 100 << 10), ("2MB", 2 << 20)] {
        let body = claude_code_request(target);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut work = body.clone();
        let plan = messages::translate(&mut work, &env.ctx()).unwrap();
        let up: Value = serde_json::from_slice(&plan.upstream().body()).unwrap();
        let items = up["input"].as_array().unwrap().len();
        // Each turn (under 8 KB on average) becomes a function_call and a
        // function_call_output, often with a message and a reasoning item.
        let turns = (body.len() / 8000).max(1);
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

/// A request body as hyper hands it over: `chunk`-byte frames.
struct Chunked(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Read like `server::route::read_body` does (collect under the size limit, one `Vec`).
fn read_body(wire: &bytes::Bytes, chunk: usize) -> Vec<u8> {
    use http_body_util::BodyExt;
    let frames = (0..wire.len())
        .step_by(chunk)
        .map(|at| wire.slice(at..(at + chunk).min(wire.len())))
        .collect();
    let body = http_body_util::Limited::new(Chunked(frames), 64 << 20);
    let collected = futures_lite_block_on(body.collect()).unwrap();
    codex_as_api::internals::server::route::collected_to_vec(collected)
}

/// Poll a future that never waits (the chunks are all there) to completion.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Client bytes → compressed upstream bytes for the 2 MB request, all of the proxy's CPU
/// work before the upstream send.
fn large_request(c: &mut Criterion) {
    use codex_as_api::internals::server::pipeline::prepare_body;
    let env = Env::new();
    let body = bytes::Bytes::from(claude_code_request(2 << 20));
    let run = || {
        let mut buf = read_body(&body, 16 << 10);
        let plan = messages::translate(&mut buf, &env.ctx()).unwrap();
        prepare_body(plan.upstream(), true)
    };
    let (raw, wire, compressed) = run();
    if let Ok(path) = std::env::var("LARGE_REQUEST_DUMP") {
        std::fs::write(format!("{path}.client.json"), &body).unwrap();
        std::fs::write(format!("{path}.upstream.json"), &raw).unwrap();
    }
    assert!(compressed && raw.len() > body.len() / 2 && wire.len() < raw.len() / 4);
    eprintln!(
        "large_request: client {} B → upstream JSON {} B → zstd {} B",
        body.len(),
        raw.len(),
        wire.len()
    );
    let mut g = c.benchmark_group("large_request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(30);
    g.bench_function("2MB", |b| b.iter(|| black_box(run().1.len())));
    // The same, timed by this thread's CPU time: on a loaded machine wall time also counts
    // the time the thread waited for a core.
    g.bench_function("2MB-cpu", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu();
            for _ in 0..iters {
                black_box(run().1.len());
            }
            thread_cpu().saturating_sub(start)
        })
    });
    // The WebSocket transport (the default) sends the JSON uncompressed in its frame: the
    // same path without zstd.
    let ws = || {
        let mut buf = read_body(&body, 16 << 10);
        let plan = messages::translate(&mut buf, &env.ctx()).unwrap();
        prepare_body(plan.upstream(), false)
    };
    g.bench_function("2MB-websocket-cpu", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu();
            for _ in 0..iters {
                black_box(ws().1.len());
            }
            thread_cpu().saturating_sub(start)
        })
    });
    g.finish();
}

/// This thread's CPU time (`/proc/thread-self/schedstat`, nanoseconds on a core); zero where
/// that file does not exist.
fn thread_cpu() -> std::time::Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    std::time::Duration::from_nanos(ns)
}

/// The upstream body of the 2 MB Claude Code-like request, uncompressed.
fn upstream_body_2mb() -> Vec<u8> {
    let env = Env::new();
    let mut body = claude_code_request(2 << 20);
    messages::translate(&mut body, &env.ctx())
        .unwrap()
        .upstream()
        .body()
}

/// The 2 MB upstream body compressed at several levels: time here, bytes printed once.
fn zstd_levels(c: &mut Criterion) {
    let raw = upstream_body_2mb();
    let mut g = c.benchmark_group("zstd/2MB");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(20);
    use zstd::zstd_safe::CParameter as P;
    let variants: &[(&str, i32, &[P])] = &[
        ("-5", -5, &[]),
        ("-1", -1, &[]),
        ("1", 1, &[]),
        ("2", 2, &[]),
        ("3", 3, &[]),
        // The level-1 table at 2^16 entries (default for 2 MB: 2^13).
        ("1-hashlog16", 1, &[P::HashLog(16)]),
    ];
    for &(level, l, params) in variants {
        let mut z = zstd::bulk::Compressor::new(l).unwrap();
        for &p in params {
            z.set_parameter(p).unwrap();
        }
        let n = z.compress(&raw).unwrap().len();
        eprintln!("zstd level {level}: {} B → {n} B", raw.len());
        // Timed by thread CPU time (see `large_request`).
        g.bench_function(BenchmarkId::from_parameter(level), |b| {
            b.iter_custom(|iters| {
                let start = thread_cpu();
                for _ in 0..iters {
                    black_box(z.compress(&raw).unwrap().len());
                }
                thread_cpu().saturating_sub(start)
            })
        });
    }
    g.finish();
}

/// The same 2 MB body as one WebSocket message through the permessage-deflate compressor
/// (`upstream::deflate`) at levels 1 (the one used) and 6 (zlib's default): thread CPU
/// time here, bytes printed once.
fn deflate_levels(c: &mut Criterion) {
    use codex_as_api::internals::upstream::deflate;
    let raw = upstream_body_2mb();
    let mut g = c.benchmark_group("deflate/2MB");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.sample_size(10);
    let mut out = Vec::new();
    for level in [1, 6] {
        let fresh = || flate2::Compress::new(flate2::Compression::new(level), false);
        deflate::deflate(&mut fresh(), &raw, &mut out).unwrap();
        eprintln!(
            "deflate level {level}{}: {} B → {} B",
            if level == deflate::LEVEL {
                " (used)"
            } else {
                ""
            },
            raw.len(),
            out.len()
        );
        g.bench_function(BenchmarkId::from_parameter(level), |b| {
            b.iter_custom(|iters| {
                let start = thread_cpu();
                for _ in 0..iters {
                    deflate::deflate(&mut fresh(), &raw, &mut out).unwrap();
                    black_box(out.len());
                }
                thread_cpu().saturating_sub(start)
            })
        });
    }
    g.finish();
}

/// The first 200 delta events of `text_1000` (their `data:` JSON).
fn delta_events() -> Vec<&'static [u8]> {
    let events: Vec<&[u8]> = FIXTURES[0]
        .1
        .split(|b| *b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
        .filter(|data| data.windows(7).any(|w| w == b".delta\""))
        .take(200)
        .collect();
    assert_eq!(events.len(), 200);
    events
}

/// `events` written as text frames through a server's `Deflate` on a fresh socket (as the
/// emulator sends them: one message each, one write per event), the socket's compressor
/// set up included; returns the bytes on the wire.
fn deflate_write(rt: &tokio::runtime::Runtime, events: &[&[u8]], params: Params) -> Vec<u8> {
    use codex_as_api::internals::upstream::deflate::{self, Deflate, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, mut far) = tokio::io::duplex(1 << 22);
    let cell = std::sync::Arc::new(std::sync::OnceLock::new());
    cell.set(Some(params)).unwrap();
    let mut socket = Deflate::new(near, Role::Server, cell);
    let mut frame = BytesMut::new();
    rt.block_on(async {
        for ev in events {
            frame.clear();
            deflate::put_frame(&mut frame, 0x81, None, ev);
            socket.write_all(&frame).await.unwrap();
            socket.flush().await.unwrap();
        }
        socket.shutdown().await.unwrap();
        drop(socket);
        let mut wire = Vec::new();
        far.read_to_end(&mut wire).await.unwrap();
        wire
    })
}

/// 200 delta events as a compressing backend sends them on the Responses WebSocket (each
/// event its own message, deflated at level 1), through the permessage-deflate adapter
/// (`upstream::deflate::Deflate`) on a fresh socket each time, its compressor or
/// decompressor set up included (wall time: a run is too short for the scheduler's
/// per-thread CPU clock):
///
/// * `deflate/write` — a server's side (the emulator's): `context` keeps the socket's
///   compressor context between messages (what a server does unless the client declined
///   it), `no_context_takeover` resets it after each message;
/// * `deflate/read` — the client's side (the proxy's upstream socket): the `context` wire
///   inflated into the frames tungstenite reads.
fn deflate_events(c: &mut Criterion) {
    use codex_as_api::internals::upstream::deflate::{Deflate, Role};
    use tokio::io::AsyncReadExt;
    let events = delta_events();
    let plain: usize = events.iter().map(|e| e.len() + 2).sum();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let reset = Params {
        server_no_context_takeover: true,
        ..Params::default()
    };
    let kept = deflate_write(&rt, &events, Params::default());
    let alone = deflate_write(&rt, &events, reset);
    eprintln!(
        "deflate/write: 200 events, {plain} B as frames → {} B with context, {} B without",
        kept.len(),
        alone.len()
    );
    assert!(kept.len() < alone.len() && alone.len() < plain);
    let mut g = c.benchmark_group("deflate/write");
    g.throughput(Throughput::Elements(events.len() as u64));
    for (name, params) in [
        ("context", Params::default()),
        ("no_context_takeover", reset),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(deflate_write(&rt, &events, params).len()))
        });
    }
    g.finish();

    let mut out = Vec::new();
    let read = |out: &mut Vec<u8>| {
        let cell = std::sync::Arc::new(std::sync::OnceLock::new());
        cell.set(Some(Params::default())).unwrap();
        let io = tokio::io::join(&kept[..], tokio::io::sink());
        let mut socket = Deflate::new(io, Role::Client, cell);
        out.clear();
        rt.block_on(socket.read_to_end(out)).unwrap();
    };
    read(&mut out);
    // Every event inflated, each behind a 2- or 4-byte frame header.
    assert!(
        out.len() >= plain && out.len() <= plain + 2 * events.len(),
        "{}",
        out.len()
    );
    let mut g = c.benchmark_group("deflate/read");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("200_events", |b| {
        b.iter(|| {
            read(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    sse_parse,
    translate_chat,
    translate_messages,
    request_large,
    large_request,
    zstd_levels,
    deflate_levels,
    deflate_events
);
criterion_main!(benches);
