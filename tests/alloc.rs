//! Proof of the hot-path rule "no per-event heap allocation in steady state": a counting
//! global allocator wraps the system allocator, and after warm-up, one more upstream
//! text-delta (and tool-argument delta) event through the real streaming body
//! (`body::Translate`: SSE parsing, decoding, encoding, the frame handed out) allocates
//! nothing, for every dialect. The upstream body is an in-memory queue of socket reads.
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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use codex_as_api::config::Config;
use codex_as_api::error::Protocol;
use codex_as_api::internals::body::{Timing, Translate};
use codex_as_api::internals::dialect::{Ctx, Encoder, Plan, chat, messages, responses};
use codex_as_api::internals::upstream::catalog::Catalog;
use codex_as_api::internals::upstream::failure::PromptSize;
use http::HeaderMap;
use http_body::{Body, Frame};
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

/// The upstream body: socket reads queued by the test; `Pending` when there are none.
struct Feed(Arc<Mutex<VecDeque<Bytes>>>);

impl http_body::Body for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.lock().unwrap().pop_front() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

/// The real translating body over a [`Feed`].
struct Pipe<E: Encoder> {
    body: Pin<Box<Translate<E, Feed>>>,
    reads: Arc<Mutex<VecDeque<Bytes>>>,
}

impl<E: Encoder> Pipe<E> {
    fn new(encoder: E) -> Self {
        let reads = Arc::new(Mutex::new(VecDeque::with_capacity(4)));
        let timing = Timing {
            keepalive: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
        };
        let prompt = PromptSize {
            tokens: 10,
            window: 272_000,
        };
        let body = Translate::new(
            Feed(Arc::clone(&reads)),
            encoder,
            Protocol::OpenAi,
            prompt,
            timing,
        );
        Pipe {
            body: Box::pin(body),
            reads,
        }
    }

    /// Queue one socket read (outside any measurement: the queue may grow).
    fn queue(&self, bytes: &[u8]) {
        self.reads
            .lock()
            .unwrap()
            .push_back(Bytes::copy_from_slice(bytes));
    }

    /// One poll of the body, as hyper does per wakeup: the frame it hands out is dropped
    /// (written to the socket). Whether there was a frame (some events translate to none).
    fn poll(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                assert!(frame.is_data());
                true
            }
            Poll::Pending => false,
            Poll::Ready(_) => panic!("the stream ended early"),
        }
    }
}

/// Feeds the fixture up to event `warm` (warm-up), then asserts that each of the next
/// deltas (which must be `kind` deltas) is translated without allocating.
fn assert_steady_state<E: Encoder>(encoder: E, input: &[u8], kind: &str, dialect: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let evs = events(input);
    let first = evs
        .iter()
        .position(|e| e.windows(kind.len()).any(|w| w == kind.as_bytes()))
        .unwrap();
    let warm = first + 50;
    let mut pipe = Pipe::new(encoder);
    for ev in &evs[..warm] {
        pipe.queue(ev);
        pipe.poll();
    }
    for ev in &evs[warm..warm + 20] {
        assert!(ev.windows(kind.len()).any(|w| w == kind.as_bytes()));
        pipe.queue(ev);
        let mut framed = false;
        let n = allocations(|| framed = pipe.poll());
        assert!(framed, "{dialect}: a {kind} event produced no output");
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
