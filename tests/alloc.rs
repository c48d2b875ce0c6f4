//! Proof of the hot-path rule "no per-event heap allocation in steady state": a counting
//! global allocator wraps the system allocator, and after warm-up, parsing, decoding and
//! encoding one more upstream text-delta (and tool-argument delta) event allocates nothing,
//! for every dialect.
//!
//! This file is the crate's one audited place with `unsafe`: `GlobalAlloc` is an unsafe
//! trait. The impl only forwards to `System` (same layout, same pointer) and bumps a
//! thread-local counter; it is its own test binary, so `#![forbid(unsafe_code)]` of the
//! library is untouched. Counting is per thread and armed only around the measured call, so
//! the test harness's own threads cannot disturb it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use bytes::BytesMut;
use codex_as_api::config::Config;
use codex_as_api::dialect::{Ctx, Encoder, Plan, chat, messages, responses};
use codex_as_api::sse::parse::SseParser;
use codex_as_api::upstream::catalog::Catalog;
use codex_as_api::upstream::events::Decoder;
use http::HeaderMap;
use serde_json::json;

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches only
// const-initialised thread-locals (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations performed by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    COUNT.with(Cell::get)
}

const TEXT: &[u8] = include_bytes!("../benches/fixtures/text_1000.sse");
const TOOL: &[u8] = include_bytes!("../benches/fixtures/tool_args_1000.sse");

/// The fixture split into its SSE events (each with its `\n\n`).
fn events(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(2).position(|w| w == b"\n\n") {
        let (ev, tail) = rest.split_at(at + 2);
        out.push(ev);
        rest = tail;
    }
    out
}

struct Pipe<E: Encoder> {
    parser: SseParser,
    decoder: Decoder,
    encoder: E,
    out: BytesMut,
}

impl<E: Encoder> Pipe<E> {
    fn new(mut encoder: E) -> Self {
        let mut out = BytesMut::with_capacity(64 * 1024);
        encoder.begin(&mut out);
        Pipe {
            parser: SseParser::new(1 << 26),
            decoder: Decoder::new(),
            encoder,
            out,
        }
    }

    /// What `body::Translate` does with one socket read.
    fn feed(&mut self, bytes: &[u8]) {
        self.parser.push(bytes);
        let Pipe {
            parser,
            decoder,
            encoder,
            out,
        } = self;
        while let Ok(Some(ev)) = parser.next_event() {
            encoder.raw(ev.event, ev.data, out);
            decoder.decode(ev.data, |d| encoder.delta(d, out)).unwrap();
        }
        // The body hands `out` to hyper per wakeup; here we keep the capacity.
        out.clear();
    }
}

/// Feeds the fixture up to event `warm` (warm-up), then asserts that each of the next
/// deltas (which must be `kind` deltas) is translated without allocating.
fn assert_steady_state<E: Encoder>(encoder: E, input: &[u8], kind: &str, dialect: &str) {
    let evs = events(input);
    let first = evs
        .iter()
        .position(|e| e.windows(kind.len()).any(|w| w == kind.as_bytes()))
        .unwrap();
    let warm = first + 50;
    let mut pipe = Pipe::new(encoder);
    for ev in &evs[..warm] {
        pipe.feed(ev);
    }
    for ev in &evs[warm..warm + 20] {
        assert!(ev.windows(kind.len()).any(|w| w == kind.as_bytes()));
        let n = allocations(|| pipe.feed(ev));
        assert_eq!(
            n, 0,
            "{dialect}: translating one more {kind} event allocated {n} times"
        );
    }
}

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

fn tools_openai() -> serde_json::Value {
    json!([{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}])
}

#[test]
fn chat_translates_a_text_or_tool_delta_without_allocating() {
    let env = Env::new();
    let mut body = serde_json::to_vec(&json!({"model": "gpt-5.5", "stream": true,
        "messages": [{"role": "user", "content": "hi"}], "tools": tools_openai()}))
    .unwrap();
    let plan = chat::translate(&mut body, &env.ctx()).unwrap();
    assert_steady_state(plan.encoder(), TEXT, "output_text.delta", "chat");
    assert_steady_state(plan.encoder(), TOOL, "arguments.delta", "chat");
}

#[test]
fn messages_translates_a_text_or_tool_delta_without_allocating() {
    let env = Env::new();
    let mut body = serde_json::to_vec(&json!({"model": "claude-opus-5-5", "stream": true, "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]}))
    .unwrap();
    let plan = messages::translate(&mut body, &env.ctx()).unwrap();
    assert_steady_state(plan.encoder(), TEXT, "output_text.delta", "messages");
    assert_steady_state(plan.encoder(), TOOL, "arguments.delta", "messages");
}

#[test]
fn responses_passes_a_text_or_tool_delta_through_without_allocating() {
    let env = Env::new();
    let mut body = serde_json::to_vec(&json!({"model": "gpt-5.5", "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "tools": [{"type": "function", "name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}]}))
    .unwrap();
    let plan = responses::translate(&mut body, &env.ctx()).unwrap();
    assert_steady_state(plan.encoder(), TEXT, "output_text.delta", "responses");
    assert_steady_state(plan.encoder(), TOOL, "arguments.delta", "responses");
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(16));
    });
    assert_eq!(n, 1);
}
