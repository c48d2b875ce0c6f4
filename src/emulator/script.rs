//! Scripted answers to a valid `/responses` body: which behaviour (`EMU:` directives in
//! the last user message, a tool round trip, a compaction trigger), and the realistic
//! event sequence of §9 that plays it (items, deltas, terminal event, usage §10.1).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::config::Chunking;
use super::rules::{item_type, seal};
use super::shared::Shared;
use super::stream::{STAMP_PLACEHOLDER, Sse};
use super::util::{bounded_insert, lock, now_secs, random_alnum, random_hex};

/// A unary error answer.
pub(super) struct Status {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) retry_after: Option<u64>,
    /// A usage limit resetting then (unix seconds): send the rate-limit headers with the
    /// primary window at 100 %.
    pub(super) limit_resets_at: Option<i64>,
}

/// What to answer.
pub(super) enum Reply {
    /// A unary error answer.
    Status(Status),
    /// A 200 SSE answer, after `delay`.
    Stream { sse: Sse, delay: Option<Duration> },
    /// No answer at all (`EMU:flakyreset`): close the HTTP/1.1 connection, reset the h2
    /// stream.
    Reset,
}

/// The request facts the script needs.
pub(super) struct Request<'a> {
    pub(super) body: &'a Value,
    pub(super) session_id: Option<&'a str>,
    pub(super) body_len: usize,
    /// The sealing key of the requesting account ([`Shared::account_secret`]).
    pub(super) secret: [u8; 32],
}

/// Directives found in one user message.
#[derive(Default)]
struct Directives<'a> {
    /// `(name, argument after ':', rest of the line after the token)`
    main: Option<(&'a str, &'a str, &'a str)>,
    slow: Option<u64>,
    stall: Option<u64>,
    /// `EMU:gate:<name>`: after the first delta, hold until the test opens the gate.
    gate: Option<&'a str>,
    flaky: Option<u64>,
    /// `EMU:flakyevent:<n>`: the first n times, a 200 stream that fails at once.
    flaky_event: Option<u64>,
    /// `EMU:flakyreset:<n>`: the first n times, no answer (reset / connection closed).
    flaky_reset: Option<u64>,
    /// `EMU:pace:<ms>`: a pause after every delta.
    pace: Option<u64>,
    /// `EMU:stamp`: every delta carries its send time ([`STAMP_PLACEHOLDER`]).
    stamp: bool,
    /// `EMU:coalesce` / `EMU:perevent`: this answer's chunking.
    chunking: Option<Chunking>,
    /// `EMU:hangup`: after the whole answer, the connection (the WebSocket, or the HTTP
    /// connection) is dropped, as a backend closing an idle socket does.
    hangup: bool,
}

fn parse_directives(text: &str) -> Directives<'_> {
    let mut d = Directives::default();
    let mut rest = text;
    while let Some(pos) = rest.find("EMU:") {
        let after = rest.get(pos + 4..).unwrap_or("");
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let token = after.get(..end).unwrap_or("");
        let tail = after.get(end..).unwrap_or("");
        let line = tail.split('\n').next().unwrap_or("").trim();
        let (name, arg) = token.split_once(':').unwrap_or((token, ""));
        match name {
            "slow" => d.slow = arg.parse().ok(),
            "stall" => d.stall = arg.parse().ok(),
            "gate" => d.gate = Some(arg),
            "flaky" => d.flaky = arg.parse().ok(),
            "flakyevent" => d.flaky_event = arg.parse().ok(),
            "flakyreset" => d.flaky_reset = arg.parse().ok(),
            "pace" => d.pace = arg.parse().ok(),
            "stamp" => d.stamp = true,
            "hangup" => d.hangup = true,
            "coalesce" => d.chunking = Some(Chunking::Coalesced),
            "perevent" => d.chunking = Some(Chunking::PerEvent),
            _ if d.main.is_none() => d.main = Some((name, arg, line)),
            _ => {}
        }
        rest = tail;
    }
    d
}

/// Text of a message's parts (`input_text`/`output_text`, or string content), and its image count.
fn content_text(content: Option<&Value>) -> (String, usize) {
    match content {
        Some(Value::String(s)) => (s.clone(), 0),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut images = 0;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            texts.push(t);
                        }
                    }
                    Some("input_image") => images += 1,
                    _ => {}
                }
            }
            (texts.join("\n"), images)
        }
        _ => (String::new(), 0),
    }
}

fn with_images(mut text: String, images: usize) -> String {
    if images > 0 {
        text.push_str(&format!(" [images: {images}]"));
    }
    text
}

/// A function tool offered in the request: `(name, parameters, namespace)`.
type ToolRef<'a> = (&'a str, Option<&'a Value>, Option<&'a str>);

fn collect_tools<'a>(tools: &'a [Value], ns: Option<&'a str>, out: &mut Vec<ToolRef<'a>>) {
    for t in tools {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                if let Some(name) = t.get("name").and_then(Value::as_str) {
                    out.push((name, t.get("parameters"), ns));
                }
            }
            Some("namespace") => {
                // Calls to a namespaced tool carry the namespace, `functions` included
                // (§6.3, §7.1).
                let inner_ns = t.get("name").and_then(Value::as_str);
                if let Some(inner) = t.get("tools").and_then(Value::as_array) {
                    collect_tools(inner, inner_ns, out);
                }
            }
            _ => {}
        }
    }
}

/// Function tools from top-level `tools` and from lite-mode `additional_tools` items.
fn function_tools(body: &Value) -> Vec<ToolRef<'_>> {
    let mut out = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        collect_tools(tools, None, &mut out);
    }
    if let Some(items) = body.get("input").and_then(Value::as_array) {
        for it in items.iter().filter(|i| item_type(i) == "additional_tools") {
            if let Some(tools) = it.get("tools").and_then(Value::as_array) {
                collect_tools(tools, None, &mut out);
            }
        }
    }
    out
}

/// A value for a JSON schema: each required property filled by type.
fn fill(schema: Option<&Value>, variant: u8) -> Value {
    let Some(schema) = schema else {
        return json!("test");
    };
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "number" | "integer" => json!(variant),
        "boolean" => json!(true),
        "array" => json!([]),
        "null" => Value::Null,
        "object" => {
            let mut obj = Map::new();
            let props = schema.get("properties");
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for name in req.iter().filter_map(Value::as_str) {
                    let sub = props.and_then(|p| p.get(name));
                    obj.insert(name.to_owned(), fill(sub, variant));
                }
            }
            Value::Object(obj)
        }
        _ if variant > 1 => json!(format!("test{variant}")),
        _ => json!("test"),
    }
}

fn args_for(schema: Option<&Value>, variant: u8) -> String {
    match fill(schema, variant) {
        Value::Object(m) => Value::Object(m).to_string(),
        _ => "{}".to_owned(),
    }
}

/// Splits text into small word-sized deltas (at least two when possible).
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let boundary = (prev_ws && !c.is_whitespace()) || i - start >= 12;
        if i > start && boundary {
            if let Some(p) = text.get(start..i) {
                out.push(p);
            }
            start = i;
        }
        prev_ws = c.is_whitespace();
    }
    if let Some(p) = text.get(start..).filter(|p| !p.is_empty()) {
        out.push(p);
    }
    if out.len() == 1 {
        split_in(text, 2)
    } else {
        out
    }
}

/// Splits at char boundaries into up to `n` non-empty parts.
fn split_in(text: &str, n: usize) -> Vec<&str> {
    let chars: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    if chars.len() < 2 {
        return vec![text];
    }
    let n = n.min(chars.len());
    let mut cuts: Vec<usize> = (1..n)
        .filter_map(|k| chars.get(k * chars.len() / n).copied())
        .collect();
    cuts.dedup();
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for c in cuts {
        if let Some(p) = text.get(start..c) {
            out.push(p);
        }
        start = c;
    }
    if let Some(p) = text.get(start..) {
        out.push(p);
    }
    out
}

/// One response being written.
struct Turn<'a> {
    shared: &'a Shared,
    req: &'a Request<'a>,
    sse: Sse,
    id: String,
    model: &'a str,
    created_at: i64,
    output: Vec<Value>,
    stall: Option<Duration>,
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    pace: Option<Duration>,
    out_bytes: usize,
    reasoning_tokens: u64,
}

impl<'a> Turn<'a> {
    fn new(shared: &'a Shared, req: &'a Request<'a>, stall: Option<Duration>) -> Turn<'a> {
        Turn {
            shared,
            req,
            sse: Sse::new(),
            id: format!("resp_{}", random_hex(32)),
            model: req.body.get("model").and_then(Value::as_str).unwrap_or(""),
            created_at: now_secs(),
            output: Vec::new(),
            stall,
            gate: None,
            pace: None,
            out_bytes: 0,
            reasoning_tokens: 0,
        }
    }

    fn response(&self, status: &str) -> Value {
        let b = self.req.body;
        let reasoning = b.get("reasoning").cloned().unwrap_or(Value::Null);
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "model": self.model,
            "output": [],
            "parallel_tool_calls": b.get("parallel_tool_calls").cloned().unwrap_or(Value::Bool(true)),
            "reasoning": {
                "effort": reasoning.get("effort").cloned().unwrap_or(Value::Null),
                "summary": reasoning.get("summary").cloned().unwrap_or(Value::Null),
            },
            "service_tier": b.get("service_tier").cloned().unwrap_or(json!("auto")),
            "store": false,
            "text": b.get("text").cloned().unwrap_or(json!({"format": {"type": "text"}})),
            "tool_choice": b.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "usage": null,
            "metadata": {},
        })
    }

    fn start(&mut self) {
        let r = self.response("in_progress");
        self.sse
            .event("response.created", &json!({ "response": r }));
        let r = json!({"id": self.id, "object": "response", "status": "in_progress", "model": self.model, "output": []});
        self.sse
            .event("response.in_progress", &json!({ "response": r }));
    }

    /// After the first delta of the response, honour `EMU:gate` and `EMU:stall`.
    fn after_delta(&mut self) {
        if let Some(g) = self.gate.take() {
            self.sse.gate(g);
        }
        if let Some(d) = self.stall.take().or(self.pace) {
            self.sse.pause(d);
        }
    }

    fn item_added(&mut self, item: &Value) {
        let idx = self.output.len();
        self.sse.event(
            "response.output_item.added",
            &json!({"output_index": idx, "item": item}),
        );
    }

    fn item_done(&mut self, item: Value) {
        let idx = self.output.len();
        self.sse.event(
            "response.output_item.done",
            &json!({"output_index": idx, "item": item}),
        );
        self.output.push(item);
    }

    /// Opens a message and streams `deltas`; returns the item id.
    fn message_open(&mut self, phase: &str, deltas: &[&str]) -> String {
        let id = format!("msg_{}", random_hex(32));
        let idx = self.output.len();
        self.item_added(&json!({"id": id, "type": "message", "status": "in_progress", "content": [], "phase": phase, "role": "assistant"}));
        self.sse.event(
            "response.content_part.added",
            &json!({"item_id": id, "output_index": idx, "content_index": 0, "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
        );
        for d in deltas {
            self.sse.text_delta(&id, idx, d);
            self.out_bytes += d.len();
            self.after_delta();
        }
        id
    }

    /// A complete message; `citation` = `(start, end, url, title)`.
    fn message(&mut self, text: &str, phase: &str, citation: Option<Value>) -> String {
        let id = self.message_open(phase, &pieces(text));
        let idx = self.output.len();
        let annotations: Vec<Value> = citation.into_iter().collect();
        for (n, a) in annotations.iter().enumerate() {
            self.sse.event(
                "response.output_text.annotation.added",
                &json!({"item_id": id, "output_index": idx, "content_index": 0, "annotation_index": n, "annotation": a}),
            );
        }
        self.sse.event(
            "response.output_text.done",
            &json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
        );
        let part = json!({"type": "output_text", "annotations": annotations, "logprobs": [], "text": text});
        self.sse.event(
            "response.content_part.done",
            &json!({"item_id": id, "output_index": idx, "content_index": 0, "part": part}),
        );
        self.item_done(json!({"id": id, "type": "message", "status": "completed", "content": [part], "phase": phase, "role": "assistant"}));
        id
    }

    fn reasoning(&mut self, summaries: &[&str]) -> String {
        let id = format!("rs_{}", random_hex(32));
        // Like the real backend, reasoning is only portable when `include` asks for it.
        let wanted = self
            .req
            .body
            .get("include")
            .and_then(Value::as_array)
            .is_some_and(|inc| inc.iter().any(|v| v == "reasoning.encrypted_content"));
        let enc = if wanted {
            Value::String(seal(&self.req.secret, "reasoning", &id))
        } else {
            Value::Null
        };
        let idx = self.output.len();
        self.item_added(
            &json!({"id": id, "type": "reasoning", "encrypted_content": enc, "summary": []}),
        );
        let mut done = Vec::new();
        for (si, s) in summaries.iter().enumerate() {
            let part = json!({"type": "summary_text", "text": ""});
            self.sse.event(
                "response.reasoning_summary_part.added",
                &json!({"item_id": id, "output_index": idx, "summary_index": si, "part": part}),
            );
            for d in pieces(s) {
                self.sse.event(
                    "response.reasoning_summary_text.delta",
                    &json!({"item_id": id, "output_index": idx, "summary_index": si, "delta": d}),
                );
                self.after_delta();
            }
            self.sse.event(
                "response.reasoning_summary_text.done",
                &json!({"item_id": id, "output_index": idx, "summary_index": si, "text": s}),
            );
            let part = json!({"type": "summary_text", "text": s});
            self.sse.event(
                "response.reasoning_summary_part.done",
                &json!({"item_id": id, "output_index": idx, "summary_index": si, "part": part}),
            );
            done.push(part);
            self.reasoning_tokens += (s.len() / 4) as u64 + 16;
        }
        self.item_done(
            json!({"id": id, "type": "reasoning", "encrypted_content": enc, "summary": done}),
        );
        id
    }

    fn function_call(&mut self, name: &str, ns: Option<&str>, args: &str, deltas: bool) -> String {
        let pieces = if deltas {
            split_in(args, 3)
        } else {
            Vec::new()
        };
        self.function_call_in(name, ns, args, &pieces)
    }

    /// A function call whose arguments stream as `pieces` (which concatenate to `args`).
    fn function_call_in(
        &mut self,
        name: &str,
        ns: Option<&str>,
        args: &str,
        pieces: &[&str],
    ) -> String {
        let id = format!("fc_{}", random_hex(32));
        let call_id = format!("call_{}", random_alnum(24));
        let idx = self.output.len();
        let mut item = json!({"id": id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id, "name": name});
        if let (Some(ns), Some(obj)) = (ns, item.as_object_mut()) {
            obj.insert("namespace".to_owned(), json!(ns));
        }
        self.item_added(&item);
        for d in pieces {
            self.sse.delta_event(
                "response.function_call_arguments.delta",
                &json!({"item_id": id, "output_index": idx, "delta": d}),
            );
            self.after_delta();
        }
        self.sse.event(
            "response.function_call_arguments.done",
            &json!({"item_id": id, "output_index": idx, "arguments": args}),
        );
        self.out_bytes += args.len();
        if let Some(obj) = item.as_object_mut() {
            obj.insert("status".to_owned(), json!("completed"));
            obj.insert("arguments".to_owned(), json!(args));
        }
        self.item_done(item);
        id
    }

    fn web_search(&mut self, query: &str, url: &str) {
        let id = format!("ws_{}", random_hex(32));
        let idx = self.output.len();
        self.item_added(&json!({"id": id, "type": "web_search_call", "status": "in_progress", "action": {"type": "search", "query": query}}));
        for ev in [
            "response.web_search_call.in_progress",
            "response.web_search_call.searching",
            "response.web_search_call.completed",
        ] {
            self.sse
                .event(ev, &json!({"item_id": id, "output_index": idx}));
        }
        self.item_done(json!({"id": id, "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": query, "sources": [{"type": "url", "url": url}]}}));
    }

    fn compaction(&mut self) {
        let id = format!("cmp_{}", random_hex(32));
        let item = json!({"id": id, "type": "compaction", "encrypted_content": seal(&self.req.secret, "compaction", &id)});
        self.item_added(&item);
        self.item_done(item);
    }

    fn usage(&self) -> Value {
        let input = (self.req.body_len / 4).max(1) as u64;
        let cached = self.cached(input);
        let output = (self.out_bytes / 4) as u64 + 1 + self.reasoning_tokens;
        json!({
            "input_tokens": input,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": input + output,
        })
    }

    /// Prompt-cache emulation: a hit needs `session-id` == `prompt_cache_key`, seen before.
    fn cached(&self, input: u64) -> u64 {
        let Some(key) = self
            .req
            .body
            .get("prompt_cache_key")
            .and_then(Value::as_str)
        else {
            return 0;
        };
        let mut cache = lock(&self.shared.cache);
        let prev = bounded_insert(&mut cache, key.to_owned(), input);
        match prev {
            Some(prev) if self.req.session_id == Some(key) => (prev / 128 * 128).min(input),
            _ => 0,
        }
    }

    fn finish(&mut self, status: &str, extra: Option<(&str, Value)>) {
        let mut r = self.response(status);
        if let Some(obj) = r.as_object_mut() {
            obj.insert("output".to_owned(), Value::Array(self.output.clone()));
            obj.insert("usage".to_owned(), self.usage());
            if let Some((k, v)) = extra {
                obj.insert(k.to_owned(), v);
            }
        }
        let ev = match status {
            "completed" => "response.completed",
            "incomplete" => "response.incomplete",
            _ => "response.failed",
        };
        self.sse.event(ev, &json!({ "response": r }));
    }

    fn failed(&mut self, code: &str, message: &str) {
        let mut r = self.response("failed");
        if let Some(obj) = r.as_object_mut() {
            obj.insert(
                "error".to_owned(),
                json!({"code": code, "message": message}),
            );
        }
        self.sse.event("response.failed", &json!({ "response": r }));
    }

    /// Remembers that `followers` were produced after reasoning item `rs`.
    fn link(&self, rs: &str, followers: &[&str]) {
        let mut map = lock(&self.shared.followers);
        for f in followers {
            bounded_insert(&mut map, (*f).to_owned(), rs.to_owned());
        }
    }
}

fn status(code: u16, body: Value, retry_after: Option<u64>) -> Reply {
    Reply::Status(Status {
        status: code,
        body,
        retry_after,
        limit_resets_at: None,
    })
}

/// The 429 of an exhausted usage limit that resets at `resets_at` (unix seconds).
pub(super) fn usage_limit(resets_at: i64) -> Status {
    let in_secs = resets_at.saturating_sub(now_secs()).max(0);
    Status {
        status: 429,
        body: json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": "plus", "resets_at": resets_at, "resets_in_seconds": in_secs}}),
        retry_after: None,
        limit_resets_at: Some(resets_at),
    }
}

/// The 429 of the per-account concurrency limit (no `Retry-After`).
pub(super) fn too_many_streams() -> Value {
    json!({"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "param": null, "message": "Too many concurrent requests for this account. Please try again later."}})
}

/// Counts one more sighting of `key`; true while it has been seen at most `n` times.
fn within_first(shared: &Shared, key: String, n: u64) -> bool {
    let mut counts = lock(&shared.flaky);
    let seen = counts.get(&key).copied().unwrap_or(0) + 1;
    bounded_insert(&mut counts, key, seen);
    seen <= n
}

pub(super) fn overloaded() -> Value {
    json!({"error": {"message": "Our servers are currently overloaded. Please try again later.", "type": "server_error", "param": null, "code": "server_is_overloaded"}})
}

pub(super) fn token_expired() -> Value {
    json!({"error": {"message": "Provided authentication token is expired. Please try signing in again.", "type": null, "code": "token_expired", "param": null}, "status": 401})
}

/// Decides and writes the answer to a body that passed the rules.
pub(super) fn respond(shared: &Shared, req: &Request<'_>) -> Reply {
    let empty = Vec::new();
    let items = req
        .body
        .get("input")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let last = items.last();
    let last_type = last.map(item_type).unwrap_or("");

    if last_type == "compaction_trigger" {
        // `EMU:no-compaction-v2` in a user message: answer like a backend without the v2
        // beta (the client then has to fall back to `/responses/compact`).
        let v2_off = items.iter().any(|i| {
            item_type(i) == "message"
                && content_text(i.get("content"))
                    .0
                    .contains("EMU:no-compaction-v2")
        });
        if v2_off {
            return status(
                400,
                json!({"detail": "Invalid input item type: 'compaction_trigger'."}),
                None,
            );
        }
        let mut t = Turn::new(shared, req, None);
        t.start();
        t.compaction();
        t.finish("completed", None);
        return stream(t, None);
    }

    if matches!(
        last_type,
        "function_call_output" | "custom_tool_call_output"
    ) {
        let (text, images) = match last.and_then(|l| l.get("output")) {
            Some(Value::String(s)) => (s.clone(), 0),
            other => content_text(other),
        };
        let mut t = Turn::new(shared, req, None);
        t.start();
        t.message(
            &with_images(format!("Tool output: {text}"), images),
            "final_answer",
            None,
        );
        t.finish("completed", None);
        return stream(t, None);
    }

    let (user_text, images) = match req.body.get("input") {
        Some(Value::String(s)) => (s.clone(), 0),
        _ => items
            .iter()
            .rev()
            .find(|i| {
                item_type(i) == "message" && i.get("role").and_then(Value::as_str) == Some("user")
            })
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default(),
    };
    let d = parse_directives(&user_text);

    // The flaky family, each with its own counter per text, checked in this order (a
    // counter only moves when its check is reached).
    if let Some(n) = d.flaky
        && within_first(shared, user_text.clone(), n)
    {
        return status(503, overloaded(), Some(1));
    }
    if let Some(n) = d.flaky_reset
        && within_first(shared, format!("reset\0{user_text}"), n)
    {
        return Reply::Reset;
    }
    if let Some(n) = d.flaky_event
        && within_first(shared, format!("event\0{user_text}"), n)
    {
        let mut t = Turn::new(shared, req, None);
        t.sse.chunking = d.chunking;
        t.start();
        overloaded_event(&mut t);
        return stream(t, None);
    }

    let delay = d.slow.map(Duration::from_millis);
    let mut t = Turn::new(shared, req, d.stall.map(Duration::from_millis));
    t.pace = d.pace.map(Duration::from_millis);
    t.gate = d.gate.map(|g| shared.gate(g));
    t.sse.chunking = d.chunking;
    // With `EMU:stamp`, each generated delta starts with a send-time stamp.
    let stamp = if d.stamp { STAMP_PLACEHOLDER } else { "" };
    let echo = || with_images(format!("You said: {user_text}"), images);
    let (name, arg, line) = d.main.unwrap_or(("", "", ""));
    match name {
        "401" => return status(401, token_expired(), None),
        "429" => return Reply::Status(usage_limit(now_secs() + 3600)),
        "429rate" => {
            return status(
                429,
                json!({"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "param": null, "message": "Rate limit reached for requests. Please try again in 1s."}}),
                Some(1),
            );
        }
        "503" => return status(503, overloaded(), Some(1)),
        "403" => {
            return status(
                403,
                json!({"detail": "You do not have access to this resource."}),
                None,
            );
        }
        "500" => {
            return status(
                500,
                json!({"error": {"message": "An error occurred while processing your request.", "type": "server_error", "param": null, "code": null}}),
                None,
            );
        }
        _ => {}
    }

    t.start();
    match name {
        "reasoning" => {
            let rs = t.reasoning(&[
                "**Reading the request**\n\nThe user wants a short answer.",
                "**Answering**\n\nI'll reply directly.",
            ]);
            let msg = t.message(&echo(), "final_answer", None);
            t.link(&rs, &[&msg]);
            t.finish("completed", None);
        }
        "reasoning_tool" | "tool" | "tool_nodelta" | "parallel" => {
            let tools = function_tools(req.body);
            let chosen: Vec<(String, Option<&str>, String)> = if name == "parallel" {
                let first = tools.first();
                let second = tools.get(1).or(first);
                [(first, 1u8), (second, 2u8)]
                    .into_iter()
                    .filter_map(|(t, v)| t.map(|(n, s, ns)| ((*n).to_owned(), *ns, args_for(*s, v))))
                    .collect()
            } else if !arg.is_empty() {
                let found = tools.iter().find(|(n, _, _)| *n == arg);
                let args = if line.is_empty() {
                    args_for(found.and_then(|(_, s, _)| *s), 1)
                } else {
                    line.to_owned()
                };
                vec![(arg.to_owned(), found.and_then(|(_, _, ns)| *ns), args)]
            } else {
                tools
                    .first()
                    .map(|(n, s, ns)| ((*n).to_owned(), *ns, args_for(*s, 1)))
                    .into_iter()
                    .collect()
            };
            if chosen.is_empty() {
                t.message(
                    "EMU: the request offers no function tool to call.",
                    "final_answer",
                    None,
                );
            } else {
                let rs = (name == "reasoning_tool").then(|| {
                    t.reasoning(&["**Running a command**\n\nI'll call the tool as requested."])
                });
                let mut followers = Vec::new();
                if rs.is_some() {
                    followers.push(t.message("Running it now.", "commentary", None));
                }
                for (tool, ns, args) in &chosen {
                    followers.push(t.function_call(tool, *ns, args, name != "tool_nodelta"));
                }
                if let Some(rs) = rs {
                    let refs: Vec<&str> = followers.iter().map(String::as_str).collect();
                    t.link(&rs, &refs);
                }
            }
            t.finish("completed", None);
        }
        "context" => t.failed(
            "context_length_exceeded",
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
        ),
        "overloaded_event" => overloaded_event(&mut t),
        "error_event" => {
            t.message_open("final_answer", &["Partial ", "answer "]);
            t.sse.event(
                "error",
                &json!({"code": "server_error", "message": "The server had an error processing your request. Sorry about that!", "param": null}),
            );
        }
        "incomplete" | "content_filter" => {
            let reason = if name == "incomplete" {
                "max_output_tokens"
            } else {
                "content_filter"
            };
            t.message_open("final_answer", &["This answer ", "was cut ", "short"]);
            t.finish(
                "incomplete",
                Some(("incomplete_details", json!({ "reason": reason }))),
            );
        }
        "cut" => {
            t.message_open("final_answer", &["This stream ", "will be ", "cut"]);
            t.sse.cut();
        }
        "deltas" => {
            let n: usize = arg.parse().unwrap_or(10);
            const WORDS: [&str; 8] = [
                "lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ",
                "elit ",
            ];
            let owned: Vec<String> = WORDS
                .iter()
                .cycle()
                .take(n)
                .map(|w| format!("{stamp}{w}"))
                .collect();
            let deltas: Vec<&str> = owned.iter().map(String::as_str).collect();
            let text: String = deltas.concat();
            let id = t.message_open("final_answer", &deltas);
            let idx = t.output.len();
            t.sse.event(
                "response.output_text.done",
                &json!({"item_id": id, "output_index": idx, "content_index": 0, "text": text, "logprobs": []}),
            );
            let part = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
            t.sse.event(
                "response.content_part.done",
                &json!({"item_id": id, "output_index": idx, "content_index": 0, "part": part}),
            );
            t.item_done(json!({"id": id, "type": "message", "status": "completed", "content": [part], "phase": "final_answer", "role": "assistant"}));
            t.finish("completed", None);
        }
        "argdeltas" => {
            // One call of the first offered tool whose arguments stream as `n` deltas:
            // `{"command":"` … words … `"}`.
            let n: usize = arg.parse().unwrap_or(10).max(2);
            let tools = function_tools(req.body);
            match tools.first() {
                None => {
                    t.message(
                        "EMU: the request offers no function tool to call.",
                        "final_answer",
                        None,
                    );
                }
                Some(&(tool, _, ns)) => {
                    let mut owned: Vec<String> = (0..n)
                        .map(|i| format!("{stamp}w{i} "))
                        .collect();
                    if let Some(first) = owned.first_mut() {
                        first.insert_str(0, "{\"command\":\"");
                    }
                    if let Some(last) = owned.last_mut() {
                        last.push_str("\"}");
                    }
                    let args: String = owned.concat();
                    let pieces: Vec<&str> = owned.iter().map(String::as_str).collect();
                    t.function_call_in(tool, ns, &args, &pieces);
                }
            }
            t.finish("completed", None);
        }
        "websearch" => {
            let url = "https://example.com/emulator";
            let query = user_text.replace("EMU:websearch", "");
            let query = match query.trim() {
                "" => "emulator web search",
                q => q,
            };
            t.web_search(query, url);
            let title = "Example Domain";
            let text = format!("According to {title}, the answer is 42.");
            let start = "According to ".chars().count();
            let end = start + title.chars().count();
            t.message(
                &text,
                "final_answer",
                Some(json!({"type": "url_citation", "start_index": start, "end_index": end, "url": url, "title": title})),
            );
            t.finish("completed", None);
        }
        "json" => {
            t.message(r#"{"answer":"ok"}"#, "final_answer", None);
            t.finish("completed", None);
        }
        _ => {
            t.message(&echo(), "final_answer", None);
            t.finish("completed", None);
        }
    }
    if d.hangup {
        t.sse.cut();
    }
    stream(t, delay)
}

/// The answer to a warm-up (`generate: false` over the WebSocket transport): a response
/// created and completed at once, with no output.
pub(super) fn warmup(shared: &Shared, req: &Request<'_>) -> Sse {
    let mut t = Turn::new(shared, req, None);
    let r = t.response("in_progress");
    t.sse.event("response.created", &json!({ "response": r }));
    t.finish("completed", None);
    t.sse
}

/// `response.failed` with `server_is_overloaded` (`EMU:overloaded_event`, `EMU:flakyevent`).
fn overloaded_event(t: &mut Turn<'_>) {
    t.failed(
        "server_is_overloaded",
        "Our servers are currently overloaded. Please try again later.",
    );
}

fn stream(t: Turn<'_>, delay: Option<Duration>) -> Reply {
    Reply::Stream { sse: t.sse, delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse() {
        let d = parse_directives(
            "please EMU:slow:50 EMU:tool:Bash {\"command\":\"cat nonce.txt\"}\nnext",
        );
        assert_eq!(d.slow, Some(50));
        assert_eq!(
            d.main,
            Some(("tool", "Bash", "{\"command\":\"cat nonce.txt\"}"))
        );
        let d = parse_directives("EMU:flaky:2");
        assert_eq!(d.flaky, Some(2));
        assert!(d.main.is_none());
        let d = parse_directives("x EMU:flakyevent:3 EMU:flakyreset:1 y");
        assert_eq!(
            (d.flaky, d.flaky_event, d.flaky_reset),
            (None, Some(3), Some(1))
        );
        assert!(d.main.is_none());
        let d = parse_directives("EMU:deltas:200 EMU:stamp EMU:pace:50 EMU:coalesce EMU:hangup");
        assert!(d.hangup);
        assert_eq!(d.main.map(|(n, a, _)| (n, a)), Some(("deltas", "200")));
        assert!(d.stamp);
        assert_eq!(d.pace, Some(50));
        assert_eq!(d.chunking, Some(Chunking::Coalesced));
    }

    #[test]
    fn pieces_cover_the_text() {
        for t in [
            "You said: hello there world",
            "ab",
            "x",
            "ééééééééééééééééééééé",
            "",
        ] {
            let p = pieces(t);
            assert_eq!(p.concat(), t);
            if t.chars().count() > 1 {
                assert!(p.len() >= 2, "{t}");
            }
        }
        assert_eq!(split_in("{}", 3), vec!["{", "}"]);
        assert_eq!(split_in("{\"a\":1}", 3).concat(), "{\"a\":1}");
    }

    #[test]
    fn fill_uses_required_properties() {
        let schema = json!({"type": "object", "properties": {"s": {"type": "string"}, "n": {"type": "integer"}, "b": {"type": "boolean"}, "o": {"type": "string"}, "e": {"enum": ["x", "y"]}}, "required": ["s", "n", "b", "e"]});
        assert_eq!(
            fill(Some(&schema), 1),
            json!({"s": "test", "n": 1, "b": true, "e": "x"})
        );
    }
}
