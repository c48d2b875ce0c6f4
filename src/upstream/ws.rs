//! The Responses WebSocket transport to the backend (what the Codex CLI prefers), per
//! `protocol/codex-websocket.md`.
//!
//! Owns: the handshake (the CLI's headers, `wss://` for an `https://` root, through the
//! same connector as every upstream connection: proxies, test CA), the sockets of each
//! account and conversation kept between turns (one request in flight per socket, so as
//! many as ran at once; a turn takes the one whose last exchange it continues, else the
//! most recently used; a reused socket is checked for a pending close, and pinged when it
//! was idle a while; closed after `--upstream-idle-secs`), the `response.create` frame,
//! continuation (only the new input items with `previous_response_id` when the request
//! matches the last one on the socket), the WebSocket-only events (`codex.rate_limits`
//! becomes the `x-codex-*` headers of the answer, `response.metadata`'s turn state is
//! echoed in `client_metadata`, a wrapped error with a status becomes an HTTP answer with
//! that status and headers), reconnecting at once on
//! `websocket_connection_limit_reached`, resending in full on
//! `previous_response_not_found`, and [`WsBody`], the stream of one response as SSE
//! `data:` frames for `body::Translate` (the parser, decoder and translators are the SSE
//! path's own; `stream::Upstream` wraps it). The sockets ([`Sockets`]) live next to the
//! HTTP pool (`server::State`), and connect through it (`conn::Pool::connect_io`).
//!
//! When: `--upstream-transport auto` (the default) tries the WebSocket first and uses SSE
//! for the rest of the process once the backend refuses the upgrade (426, or 404/405: no
//! such endpoint), and for one request when the handshake fails before the request was
//! sent. `websocket` never falls back.
//!
//! Compression: the handshake offers permessage-deflate (`client_max_window_bits`, as the
//! CLI does); tungstenite does not implement it, so the socket runs over
//! [`deflate::Deflate`], which compresses the `response.create` frames and inflates the
//! backend's once the 101 answer's `Sec-WebSocket-Extensions` is read here (an extension
//! not offered or invalid parameters fail the handshake, RFC 7692). With continuation a
//! turn's request frame is small on the wire, though each is compressed on its own.
//!
//! Does not own: which requests go over it and the retry policy (`server::pipeline`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::conn::{Io, Pool};
use super::deflate::{self, Deflate};
use crate::error::{Error, ErrorKind};
use crate::json::span;

/// The beta header value the backend requires on the upgrade.
pub const BETA: &str = "responses_websockets=2026-02-06";
/// Idle sockets kept at most (the oldest is closed first).
const MAX_IDLE: usize = 1024;
/// A reused socket idle longer than this is pinged before the request goes out.
const PING_AFTER: Duration = Duration::from_secs(15);
/// How long a ping may take to be answered.
const PING_WAIT: Duration = Duration::from_secs(5);
/// Connect + handshake bound (the CLI's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Reconnections for `websocket_connection_limit_reached` within one request.
const MAX_RECONNECTS: u32 = 2;
/// tungstenite's read chunk per socket.
pub const SOCKET_BUFFER: usize = 8 * 1024;
/// Largest message accepted from the backend.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

type Ws = WebSocketStream<Deflate<TokioIo<Io>>>;

/// One open socket and what it remembers for continuation.
pub struct Socket {
    ws: Ws,
    last: Option<Last>,
    turn_state: Option<String>,
    since: Instant,
}

/// The last completed exchange on a socket.
struct Last {
    /// The request as sent in full (its input is what the backend holds).
    sent: Parts,
    /// The response's output items, canonical.
    output: Vec<Value>,
    id: String,
}

/// The idle sockets (per account and conversation: as many as ran at once, most recently
/// used last) and whether the backend refused the transport.
pub struct Sockets {
    idle: Mutex<Idle>,
    refused: AtomicBool,
    idle_for: Duration,
    sweeper: std::sync::Once,
}

#[derive(Default)]
struct Idle {
    #[expect(
        clippy::vec_box,
        reason = "a socket travels boxed between the pool and its response body: no copy"
    )]
    by_key: HashMap<String, Vec<Box<Socket>>>,
    count: usize,
}

impl Idle {
    /// Closes the sockets idle for `idle_for` or longer.
    fn expire(&mut self, idle_for: Duration) {
        self.by_key.retain(|_, list| {
            list.retain(|s| s.since.elapsed() < idle_for);
            !list.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
    }

    /// Closes the socket idle longest.
    fn close_oldest(&mut self) {
        let oldest = self
            .by_key
            .iter()
            .filter_map(|(k, list)| Some((k, list.first()?.since)))
            .min_by_key(|(_, since)| *since)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest
            && let Some(list) = self.by_key.get_mut(&key)
        {
            list.remove(0);
            self.count -= 1;
            if list.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sockets {
    pub fn new(idle_for: Duration) -> Arc<Sockets> {
        Arc::new(Sockets {
            idle: Mutex::new(Idle::default()),
            refused: AtomicBool::new(false),
            idle_for,
            sweeper: std::sync::Once::new(),
        })
    }

    /// The backend refused the upgrade (426 or no such endpoint): SSE from now on.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Idle sockets now (for tests and `/health`).
    pub fn idle(&self) -> usize {
        lock(&self.idle).count
    }

    /// An idle socket of `key`: the one whose last exchange `parts` continues (with the
    /// number of new items), else the most recently used (with `None`). The key's sockets
    /// leave the pool while one is chosen, so the comparison runs without the lock.
    fn take(&self, key: &str, parts: Option<&Parts>) -> Option<(Box<Socket>, Option<usize>)> {
        let mut list = {
            let mut idle = lock(&self.idle);
            let list = idle.by_key.remove(key)?;
            idle.count -= list.len();
            list
        };
        list.retain(|s| s.since.elapsed() < self.idle_for);
        if list.is_empty() {
            return None;
        }
        let chained = parts.and_then(|p| {
            list.iter().enumerate().rev().find_map(|(at, s)| {
                let new = continues(s.last.as_ref()?, p)?;
                Some((at, new))
            })
        });
        let (at, new) = match chained {
            Some((at, new)) => (at, Some(new)),
            None => (list.len() - 1, None),
        };
        let socket = list.remove(at);
        if !list.is_empty() {
            let mut idle = lock(&self.idle);
            idle.count += list.len();
            let kept = idle.by_key.entry(key.to_owned()).or_default();
            // Sockets put back meanwhile are the more recent ones.
            list.append(kept);
            *kept = list;
        }
        Some((socket, new))
    }

    fn put(self: &Arc<Self>, key: String, mut socket: Box<Socket>) {
        socket.since = Instant::now();
        {
            let mut idle = lock(&self.idle);
            if idle.count >= MAX_IDLE {
                idle.close_oldest();
            }
            idle.by_key.entry(key).or_default().push(socket);
            idle.count += 1;
        }
        self.sweeper.call_once(|| {
            let me = Arc::downgrade(self);
            let every = (self.idle_for / 2).max(Duration::from_millis(100));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(s) = me.upgrade() else { return };
                    lock(&s.idle).expire(s.idle_for);
                }
            });
        });
    }
}

/// One request to send over the WebSocket.
pub struct Call<'a> {
    /// Pool key: the account and the conversation (and what travels in handshake headers).
    pub key: String,
    /// `wss://…/codex/responses`.
    pub url: &'a str,
    /// Handshake headers besides the WebSocket ones.
    pub headers: HeaderMap,
    /// The JSON body as for HTTP (uncompressed); kept for the next turn's comparison.
    pub body: Bytes,
    /// A Responses-lite body (§7.1): said in `client_metadata`.
    pub lite: bool,
    /// `auto`: fall back to SSE instead of failing when the transport is unavailable.
    pub fallback: bool,
}

/// What came of a WebSocket attempt.
pub enum Outcome {
    /// The answer's stream of events.
    Stream(Response<WsBody>),
    /// An error status (the upgrade's answer, or an `error` frame with a status) as an
    /// HTTP-like answer with that status, its body read whole.
    Status(Response<Bytes>),
    /// Use SSE for this request.
    Sse,
}

/// A request body seen as its `input` array's elements and the rest (its "shape": every
/// other field), without copying: ranges into the shared body.
struct Parts {
    body: Bytes,
    /// The `input` array.
    input: Range<usize>,
    /// Its elements, relative to `input`.
    items: Vec<Range<usize>>,
}

impl Parts {
    fn split(body: Bytes) -> Option<Parts> {
        let input = span::member(&body, b"input")?;
        let items = span::elements(&body[input.clone()])?;
        Some(Parts { body, input, items })
    }

    fn item(&self, i: usize) -> Option<&[u8]> {
        let r = self.items.get(i)?;
        self.body
            .get(self.input.start + r.start..self.input.start + r.end)
    }

    /// Every field but `input` is the same.
    fn same_shape(&self, other: &Parts) -> bool {
        self.body[..self.input.start] == other.body[..other.input.start]
            && self.body[self.input.end..] == other.body[other.input.end..]
    }
}

/// A request item or an output item in a form both sides agree on: no ids or statuses,
/// message parts reduced to their text, reasoning to its encrypted content, tool-call
/// arguments parsed.
fn canon(mut v: Value) -> Value {
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    obj.remove("id");
    obj.remove("status");
    obj.remove("namespace");
    match obj.get("type").and_then(Value::as_str) {
        Some("message") => {
            obj.remove("phase");
            if !obj.contains_key("role") {
                obj.insert("role".into(), Value::from("assistant"));
            }
            if let Some(Value::Array(parts)) = obj.get_mut("content") {
                for p in parts.iter_mut() {
                    if let Some(p) = p.as_object_mut() {
                        p.retain(|k, _| k == "type" || k == "text");
                    }
                }
            }
            if let Some(Value::String(text)) = obj.get("content").cloned() {
                obj.insert(
                    "content".into(),
                    serde_json::json!([{"type": "output_text", "text": text}]),
                );
            }
        }
        Some("reasoning") => {
            obj.retain(|k, _| k == "type" || k == "encrypted_content");
        }
        Some("function_call") => {
            if let Some(Value::String(args)) = obj.get("arguments")
                && let Ok(parsed) = serde_json::from_str::<Value>(args)
            {
                obj.insert("arguments".into(), parsed);
            }
        }
        _ => {}
    }
    v
}

fn is_assistant_message(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("message")
        && v.get("role").and_then(Value::as_str).unwrap_or("assistant") == "assistant"
}

fn is_reasoning(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("reasoning")
}

/// Merge consecutive assistant messages into one (a client keeps an assistant turn's
/// text blocks in one message; the model may answer with several message items).
fn merged(items: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for mut v in items {
        if is_assistant_message(&v)
            && let Some(prev) = out.last_mut()
            && is_assistant_message(prev)
        {
            let more = v
                .get_mut("content")
                .and_then(Value::as_array_mut)
                .map(std::mem::take)
                .unwrap_or_default();
            if let Some(Value::Array(parts)) = prev.get_mut("content") {
                parts.extend(more);
            }
            continue;
        }
        out.push(v);
    }
    out
}

/// The number of new items when `now` continues `last` (its input, then its output, then
/// new items), else `None`. Output reasoning items the client did not send back are
/// allowed to be missing: a chain carries them anyway.
fn continues(last: &Last, now: &Parts) -> Option<usize> {
    let before = &last.sent;
    if !before.same_shape(now) || now.items.len() < before.items.len() {
        return None;
    }
    for i in 0..before.items.len() {
        if before.item(i)? != now.item(i)? {
            return None;
        }
    }
    let want = merged(last.output.iter().cloned());
    let want_plain = merged(want.iter().filter(|v| !is_reasoning(v)).cloned());
    let start = before.items.len();
    let limit = (start + 2 * want.len() + 2).min(now.items.len());
    let mut got: Vec<Value> = Vec::new();
    for k in start..=limit {
        if k > start {
            got.push(canon(serde_json::from_slice(now.item(k - 1)?).ok()?));
        }
        let g = merged(got.iter().cloned());
        if g == want || (!g.iter().any(is_reasoning) && g == want_plain) {
            return Some(now.items.len() - k);
        }
    }
    None
}

/// The `response.create` frame: the body with `type` first, optionally chained, with the
/// socket's turn state echoed.
fn frame(
    body: &[u8],
    chain: Option<(&str, &Parts, usize)>,
    turn: Option<&str>,
    lite: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(b"{\"type\":\"response.create\",");
    let inner = &body[1..body.len().saturating_sub(1)];
    match chain {
        Some((id, parts, new)) => {
            out.extend_from_slice(b"\"previous_response_id\":");
            crate::json::write_str(&mut out, id);
            out.push(b',');
            out.extend_from_slice(&body[1..parts.input.start]);
            out.push(b'[');
            let first = parts.items.len() - new;
            for i in first..parts.items.len() {
                if i > first {
                    out.push(b',');
                }
                out.extend_from_slice(parts.item(i).unwrap_or_default());
            }
            out.push(b']');
            out.extend_from_slice(&body[parts.input.end..body.len() - 1]);
        }
        None => out.extend_from_slice(inner),
    }
    if turn.is_some() || lite {
        out.extend_from_slice(b",\"client_metadata\":{");
        if let Some(t) = turn {
            out.extend_from_slice(b"\"x-codex-turn-state\":");
            crate::json::write_str(&mut out, t);
        }
        if lite {
            if turn.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(
                b"\"ws_request_header_x_openai_internal_codex_responses_lite\":\"true\"",
            );
        }
        out.push(b'}');
    }
    out.push(b'}');
    out
}

/// The `type` of an event frame, read from its first member.
fn event_type(data: &[u8]) -> Option<&[u8]> {
    let r = span::leading_member(data, b"type", 1)?;
    data.get(r.start + 1..r.end.checked_sub(1)?)
}

/// The parts of a wrapped error frame that decide what happens.
struct Wrapped {
    status: u16,
    code: Option<String>,
    body: Vec<u8>,
    headers: HeaderMap,
}

fn wrapped_error(data: &[u8]) -> Option<Wrapped> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let status = v
        .get("status")
        .or_else(|| v.get("status_code"))
        .and_then(Value::as_u64)?;
    let status = u16::try_from(status).ok()?;
    let error = v.get("error").cloned().unwrap_or(Value::Null);
    let code = error.get("code").and_then(Value::as_str).map(str::to_owned);
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(h)) = v.get("headers") {
        for (k, val) in h {
            let text = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(hv)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&text),
            ) {
                headers.insert(n, hv);
            }
        }
    }
    let body = serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default();
    Some(Wrapped {
        status,
        code,
        body,
        headers,
    })
}

/// `codex.rate_limits` as the `x-codex-*` headers the SSE answer carries.
fn rate_limit_headers(data: &[u8], out: &mut HeaderMap) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut set = |name: String, value: String| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.insert(n, v);
        }
    };
    for which in ["primary", "secondary"] {
        let Some(w) = v.pointer(&format!("/rate_limits/{which}")) else {
            continue;
        };
        if let Some(p) = w.get("used_percent").and_then(Value::as_f64) {
            set(format!("x-codex-{which}-used-percent"), p.to_string());
        }
        if let Some(m) = w.get("window_minutes").and_then(Value::as_u64) {
            set(format!("x-codex-{which}-window-minutes"), m.to_string());
        }
        if let Some(r) = w
            .get("reset_at")
            .or_else(|| w.get("resets_at"))
            .and_then(Value::as_u64)
        {
            set(format!("x-codex-{which}-reset-at"), r.to_string());
        }
    }
    if let Some(c) = v.get("credits") {
        for (field, header) in [
            ("has_credits", "x-codex-credits-has-credits"),
            ("unlimited", "x-codex-credits-unlimited"),
        ] {
            if let Some(b) = c.get(field).and_then(Value::as_bool) {
                set(header.into(), b.to_string());
            }
        }
        match c.get("balance") {
            Some(Value::String(s)) => set("x-codex-credits-balance".into(), s.clone()),
            Some(Value::Number(n)) => set("x-codex-credits-balance".into(), n.to_string()),
            _ => {}
        }
    }
}

/// How a handshake ended.
enum Handshake {
    Open(Box<Socket>, HeaderMap),
    /// The backend answered the upgrade with this (not 101).
    Status(Response<Bytes>),
    /// 426 or no such endpoint: the transport is not offered.
    Refused,
    /// Nothing was sent: connect, TLS or handshake I/O failed.
    Failed(Error),
}

impl Sockets {
    /// Send `call` over a pooled socket, or a new one connected through `pool`.
    pub async fn send(self: &Arc<Self>, pool: &Pool, call: Call<'_>) -> Result<Outcome, Error> {
        let sockets = Arc::clone(self);
        if sockets.refused() {
            return fallback(&call, "the backend refused the WebSocket transport earlier");
        }
        let parts = Parts::split(call.body.clone());
        let mut reconnects = 0;
        let mut full = false;
        // A pooled socket and the new items when the request continues its last exchange.
        let mut reused = sockets.take(&call.key, parts.as_ref());
        loop {
            let (mut socket, head, new) = match reused.take() {
                Some((s, new)) => match alive(s).await {
                    Some(s) => (s, HeaderMap::new(), new),
                    None => {
                        // Dead: the conversation's other idle sockets come before a new one.
                        reused = sockets.take(&call.key, parts.as_ref());
                        continue;
                    }
                },
                None => match handshake(pool, &call).await {
                    Handshake::Open(s, h) => (s, h, None),
                    Handshake::Status(resp) => return Ok(Outcome::Status(resp)),
                    Handshake::Refused => {
                        sockets.refused.store(true, Ordering::Relaxed);
                        tracing::info!(
                            "the backend does not serve the Responses WebSocket: SSE from now on"
                        );
                        return fallback(&call, "the backend refused the WebSocket upgrade");
                    }
                    Handshake::Failed(err) => {
                        if call.fallback {
                            tracing::info!(error = %err.message, "WebSocket handshake failed: this request goes over SSE");
                            return Ok(Outcome::Sse);
                        }
                        return Err(err);
                    }
                },
            };
            let chain = match (&socket.last, new) {
                (Some(last), Some(n)) if !full => Some((last.id.clone(), n)),
                _ => None,
            };
            let msg = frame(
                &call.body,
                chain
                    .as_ref()
                    .and_then(|(id, n)| Some((id.as_str(), parts.as_ref()?, *n))),
                socket.turn_state.as_deref(),
                call.lite,
            );
            let sent_bytes = msg.len();
            if let Err(e) = socket
                .ws
                .send(Message::Text(
                    tungstenite::Utf8Bytes::try_from(msg)
                        .map_err(|_| Error::internal("the request body is not UTF-8"))?,
                ))
                .await
            {
                // Not written: safe to send again on a new socket.
                tracing::debug!(error = %e, "WebSocket send failed; reconnecting");
                reconnects += 1;
                if reconnects > MAX_RECONNECTS {
                    return Err(Error::unreachable(format!(
                        "upstream WebSocket failed: {e}"
                    )));
                }
                continue;
            }
            tracing::trace!(
                bytes = sent_bytes,
                chained = chain.is_some(),
                "response.create sent"
            );
            let mut headers = head;
            let first = loop {
                match socket.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let data = Bytes::from(t);
                        match event_type(&data) {
                            Some(b"codex.rate_limits") => rate_limit_headers(&data, &mut headers),
                            Some(b"response.metadata") => {
                                if socket.turn_state.is_none() {
                                    socket.turn_state = turn_state(&data);
                                }
                            }
                            Some(b"keepalive") => {}
                            Some(b"error") => match wrapped_error(&data) {
                                Some(w) => break First::Error(w),
                                None => break First::Event(data),
                            },
                            _ => break First::Event(data),
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        return Err(Error::new(
                            ErrorKind::BadGateway,
                            "the upstream WebSocket sent a binary frame",
                        )
                        .not_retryable());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Err(Error::unreachable(format!(
                            "upstream WebSocket failed before the answer: {e}"
                        ))
                        .not_retryable());
                    }
                    None => {
                        return Err(Error::unreachable(
                            "the upstream WebSocket closed before the answer",
                        )
                        .not_retryable());
                    }
                }
            };
            let data = match first {
                First::Event(d) => d,
                First::Error(w) => {
                    if w.status < 300 {
                        // Not an error status: nothing to map; treat as a stream error.
                        return Ok(Outcome::Status(status_response(
                            StatusCode::BAD_GATEWAY,
                            w.headers,
                            w.body,
                        )));
                    }
                    match w.code.as_deref() {
                        Some("websocket_connection_limit_reached")
                            if reconnects < MAX_RECONNECTS =>
                        {
                            reconnects += 1;
                            tracing::debug!("websocket_connection_limit_reached: new socket");
                            continue;
                        }
                        Some("previous_response_not_found") if chain.is_some() && !full => {
                            full = true;
                            socket.last = None;
                            reused = Some((socket, None));
                            continue;
                        }
                        _ => {}
                    }
                    let status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    let mut h = headers;
                    h.extend(w.headers);
                    return Ok(Outcome::Status(status_response(status, h, w.body)));
                }
            };
            let body = WsBody {
                socket: Some(socket),
                first: Some(data),
                sockets,
                key: call.key,
                pending: parts,
                output: Vec::new(),
                id: None,
                end: End::Open,
            };
            let mut resp = Response::new(body);
            *resp.headers_mut() = headers;
            return Ok(Outcome::Stream(resp));
        }
    }
}

async fn handshake(pool: &Pool, call: &Call<'_>) -> Handshake {
    let url: Uri = match call.url.parse() {
        Ok(u) => u,
        Err(e) => {
            return Handshake::Failed(Error::unreachable(format!("bad upstream URL: {e}")));
        }
    };
    // The connector speaks http(s); the WebSocket runs over the stream it returns.
    let tcp_uri: Uri = {
        let scheme = if url.scheme_str() == Some("wss") {
            "https"
        } else {
            "http"
        };
        match format!(
            "{scheme}://{}/",
            url.authority().map(|a| a.as_str()).unwrap_or("")
        )
        .parse()
        {
            Ok(u) => u,
            Err(e) => {
                return Handshake::Failed(Error::unreachable(format!("bad upstream URL: {e}")));
            }
        }
    };
    let mut req = Request::get(url.clone());
    if let Some(h) = req.headers_mut() {
        *h = call.headers.clone();
        let host = url.authority().map(|a| a.as_str()).unwrap_or("");
        for (name, value) in [
            ("host", host.to_owned()),
            ("connection", "Upgrade".to_owned()),
            ("upgrade", "websocket".to_owned()),
            ("sec-websocket-version", "13".to_owned()),
            (
                "sec-websocket-key",
                tungstenite::handshake::client::generate_key(),
            ),
            ("sec-websocket-extensions", deflate::OFFER.to_owned()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    let Ok(req) = req.body(()) else {
        return Handshake::Failed(Error::unreachable("bad WebSocket request"));
    };
    let negotiated: deflate::Negotiated = Arc::default();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let io = pool.connect_io(&tcp_uri).await?;
        let cell = Arc::clone(&negotiated);
        let io =
            Deflate::new(TokioIo::new(io), deflate::Role::Client, cell).max_message(MAX_MESSAGE);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE);
        config.max_frame_size = Some(MAX_MESSAGE);
        // A socket waits idle between turns (up to MAX_IDLE of them): tungstenite's
        // default 128 KiB read and write buffers each would be most of its memory.
        config.read_buffer_size = SOCKET_BUFFER;
        config.write_buffer_size = 0;
        Ok::<_, Error>(tokio_tungstenite::client_async_with_config(req, io, Some(config)).await)
    })
    .await;
    let result = match connected {
        Err(_) => {
            return Handshake::Failed(Error::unreachable(
                "the upstream WebSocket handshake timed out",
            ));
        }
        Ok(Err(err)) => return Handshake::Failed(err),
        Ok(Ok(r)) => r,
    };
    match result {
        Ok((ws, resp)) => {
            let values = resp
                .headers()
                .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .map(|v| v.to_str().unwrap_or("\u{0}"));
            match deflate::accept_response(values) {
                Ok(params) => {
                    // Set once, here: the cell is new.
                    let _ = negotiated.set(params);
                }
                Err(why) => {
                    return Handshake::Failed(Error::unreachable(format!(
                        "upstream WebSocket handshake failed: {why}"
                    )));
                }
            }
            let socket = Box::new(Socket {
                ws,
                last: None,
                turn_state: None,
                since: Instant::now(),
            });
            Handshake::Open(socket, resp.headers().clone())
        }
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            if matches!(status.as_u16(), 426 | 404 | 405) {
                return Handshake::Refused;
            }
            let headers = resp.headers().clone();
            let body = resp.into_body().unwrap_or_default();
            Handshake::Status(status_response(status, headers, body))
        }
        Err(e) => Handshake::Failed(Error::unreachable(format!(
            "upstream WebSocket handshake failed: {e}"
        ))),
    }
}

enum First {
    Event(Bytes),
    Error(Wrapped),
}

fn fallback(call: &Call<'_>, why: &str) -> Result<Outcome, Error> {
    if call.fallback {
        Ok(Outcome::Sse)
    } else {
        Err(Error::unreachable(format!(
            "{why} (--upstream-transport websocket; use auto or sse)"
        )))
    }
}

fn status_response(status: StatusCode, headers: HeaderMap, body: Vec<u8>) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn turn_state(data: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(data).ok()?;
    v.pointer("/headers/x-codex-turn-state")?
        .as_str()
        .map(str::to_owned)
}

/// A reused socket, unless the backend closed it (a close already queued, or no answer to
/// a ping after a long idle).
async fn alive(mut s: Box<Socket>) -> Option<Box<Socket>> {
    // Anything queued on an idle socket is a close, an error or noise.
    loop {
        let polled = std::future::poll_fn(|cx| match s.ws.poll_next_unpin(cx) {
            Poll::Ready(x) => Poll::Ready(Some(x)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        match polled {
            None => break,
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(_) => return None,
        }
    }
    if s.since.elapsed() < PING_AFTER {
        return Some(s);
    }
    s.ws.send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .ok()?;
    let pong = tokio::time::timeout(PING_WAIT, async {
        loop {
            match s.ws.next().await {
                Some(Ok(Message::Pong(_))) => return true,
                Some(Ok(Message::Ping(_))) => continue,
                _ => return false,
            }
        }
    })
    .await;
    (pong == Ok(true)).then_some(s)
}

#[derive(PartialEq, Eq)]
enum End {
    Open,
    /// Completed: the socket goes back to the pool after the last frame.
    Completed,
    /// Failed or broken: the socket is closed.
    Dropped,
}

/// One response read from a socket, as SSE `data:` frames.
pub struct WsBody {
    socket: Option<Box<Socket>>,
    first: Option<Bytes>,
    sockets: Arc<Sockets>,
    key: String,
    /// The request as sent, kept until its answer completes.
    pending: Option<Parts>,
    output: Vec<Value>,
    id: Option<String>,
    end: End,
}

impl WsBody {
    /// Look at one event on its way through: keep what continuation needs and see the end.
    fn observe(&mut self, data: &[u8]) {
        match event_type(data) {
            Some(b"response.output_item.done") => {
                if let Some(item) = span::member(data, b"item")
                    .and_then(|r| serde_json::from_slice::<Value>(&data[r]).ok())
                {
                    self.output.push(canon(item));
                }
            }
            Some(b"response.completed") => {
                self.id = span::member(data, b"response")
                    .and_then(|r| span::member(&data[r.clone()], b"id").map(|i| (r, i)))
                    .and_then(|(r, i)| {
                        let s = &data[r][i];
                        serde_json::from_slice::<String>(s).ok()
                    });
                self.end = End::Completed;
            }
            Some(b"response.failed" | b"response.incomplete" | b"error") => {
                self.end = End::Dropped;
            }
            _ => {}
        }
    }

    fn sse(data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + 8);
        out.put_slice(b"data: ");
        out.put_slice(data);
        out.put_slice(b"\n\n");
        out.freeze()
    }

    /// The response ended: a completed socket goes back to the pool with what it knows,
    /// before the client sees the end (its next turn may be sent the moment it does).
    fn finish(&mut self) {
        let Some(mut socket) = self.socket.take() else {
            return;
        };
        if self.end != End::Completed {
            return;
        }
        socket.last = match (self.pending.take(), self.id.take()) {
            (Some(sent), Some(id)) => Some(Last {
                sent,
                output: std::mem::take(&mut self.output),
                id,
            }),
            _ => None,
        };
        self.sockets.put(std::mem::take(&mut self.key), socket);
    }

    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, tungstenite::Error>>> {
        if let Some(d) = self.first.take() {
            self.observe(&d);
            if self.end == End::Completed {
                self.finish();
            }
            return Poll::Ready(Some(Ok(Self::sse(&d))));
        }
        if self.end != End::Open {
            self.finish();
            return Poll::Ready(None);
        }
        let Some(socket) = self.socket.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match socket.ws.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    self.socket = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.socket = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                    self.socket = None;
                    return Poll::Ready(Some(Err(tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ExpectedFragment(
                            tungstenite::protocol::frame::coding::Data::Binary,
                        ),
                    ))));
                }
                Poll::Ready(Some(Ok(Message::Text(t)))) => {
                    let data = t.as_bytes();
                    match event_type(data) {
                        Some(b"codex.rate_limits" | b"keepalive") => continue,
                        Some(b"response.metadata") => {
                            if socket.turn_state.is_none() {
                                socket.turn_state = turn_state(data);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let out = Self::sse(data);
                    let data = Bytes::from(t);
                    self.observe(&data);
                    if self.end == End::Completed {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(out)));
                }
                Poll::Ready(Some(Ok(_))) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(input: Value) -> Bytes {
        Bytes::from(
            serde_json::to_vec(
                &json!({"model":"m","instructions":"i","input":input,"tools":[],"store":false}),
            )
            .unwrap_or_default(),
        )
    }

    fn split(b: &Bytes) -> Option<Parts> {
        Parts::split(b.clone())
    }

    fn last_of(input: Value, output: Vec<Value>) -> Last {
        let b = body(input);
        Last {
            sent: split(&b).unwrap_or_else(|| panic!("split")),
            output: output.into_iter().map(canon).collect(),
            id: "resp_1".into(),
        }
    }

    fn user(t: &str) -> Value {
        json!({"type":"message","role":"user","content":[{"type":"input_text","text":t}]})
    }

    #[test]
    fn a_turn_that_extends_the_last_one_sends_only_its_new_items() {
        let last = last_of(
            json!([user("hi")]),
            vec![
                json!({"id":"rs_1","type":"reasoning","summary":[],"encrypted_content":"E"}),
                json!({"id":"msg_1","type":"message","status":"completed","role":"assistant","phase":"commentary","content":[{"type":"output_text","text":"Let me","annotations":[]}]}),
                json!({"id":"fc_1","type":"function_call","status":"completed","call_id":"c1","name":"ls","arguments":"{\"path\": \".\"}"}),
            ],
        );
        // A client that sends the reasoning back, with the call's arguments re-serialised.
        let with_reasoning = body(json!([
            user("hi"),
            {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"x"}],"content":null,"encrypted_content":"E"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me"}]},
            {"type":"function_call","call_id":"c1","name":"ls","arguments":"{\"path\":\".\"}"},
            {"type":"function_call_output","call_id":"c1","output":"a b"}
        ]));
        let p = split(&with_reasoning).unwrap_or_else(|| panic!("split"));
        assert_eq!(continues(&last, &p), Some(1));
        // A client that drops reasoning (chat clients) still chains.
        let without = body(json!([
            user("hi"),
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Let me"}]},
            {"type":"function_call","call_id":"c1","name":"ls","arguments":"{\"path\":\".\"}"},
            {"type":"function_call_output","call_id":"c1","output":"a b"},
            user("more")
        ]));
        let p = split(&without).unwrap_or_else(|| panic!("split"));
        assert_eq!(continues(&last, &p), Some(2));
        let f = frame(&without, Some(("resp_1", &p, 2)), Some("ts"), false);
        let v: Value = serde_json::from_slice(&f).unwrap_or_default();
        assert_eq!(v["type"], "response.create");
        assert_eq!(v["previous_response_id"], "resp_1");
        assert_eq!(v["input"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["input"][0]["type"], "function_call_output");
        assert_eq!(v["client_metadata"]["x-codex-turn-state"], "ts");
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn anything_else_is_sent_in_full() {
        let last = last_of(
            json!([user("hi")]),
            vec![
                json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}),
            ],
        );
        // Edited history.
        let edited = body(
            json!([user("hey"), {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}, user("x")]),
        );
        assert_eq!(
            continues(&last, &split(&edited).unwrap_or_else(|| panic!())),
            None
        );
        // A different answer in the history.
        let other = body(
            json!([user("hi"), {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]}, user("x")]),
        );
        assert_eq!(
            continues(&last, &split(&other).unwrap_or_else(|| panic!())),
            None
        );
        // A changed setting.
        let mut changed: Value = serde_json::from_slice(&body(json!([user("hi"), {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}, user("x")]))).unwrap_or_default();
        changed["instructions"] = json!("other");
        let changed = Bytes::from(serde_json::to_vec(&changed).unwrap_or_default());
        assert_eq!(
            continues(&last, &split(&changed).unwrap_or_else(|| panic!())),
            None
        );
        // The same request again (a retry of the last turn) is not a continuation.
        let again = body(json!([user("hi")]));
        assert_eq!(
            continues(&last, &split(&again).unwrap_or_else(|| panic!())),
            None
        );
        // Several answer messages are one assistant turn to a client.
        let last = last_of(
            json!([user("hi")]),
            vec![
                json!({"type":"message","role":"assistant","phase":"commentary","content":[{"type":"output_text","text":"A"}]}),
                json!({"type":"message","role":"assistant","phase":"final_answer","content":[{"type":"output_text","text":"B"}]}),
            ],
        );
        let joined = body(
            json!([user("hi"), {"type":"message","role":"assistant","content":[{"type":"output_text","text":"A"},{"type":"output_text","text":"B"}]}, user("x")]),
        );
        assert_eq!(
            continues(&last, &split(&joined).unwrap_or_else(|| panic!())),
            Some(1)
        );
    }

    #[test]
    fn a_full_frame_is_the_body_with_its_type_first() {
        let b = body(json!([user("hi")]));
        let f = frame(&b, None, None, false);
        let v: Value = serde_json::from_slice(&f).unwrap_or_default();
        let mut expect: Value = serde_json::from_slice(&b).unwrap_or_default();
        expect["type"] = json!("response.create");
        assert_eq!(v, expect);
        assert!(f.starts_with(b"{\"type\":\"response.create\",\"model\""));
    }

    #[test]
    fn wrapped_errors_and_rate_limits_become_http_terms() {
        let w = wrapped_error(br#"{"type":"error","status":429,"error":{"type":"usage_limit_reached","code":"usage_limit_reached","resets_at":1700000000},"headers":{"retry-after":"7","x-codex-primary-used-percent":100}}"#)
            .unwrap_or_else(|| panic!("wrapped"));
        assert_eq!(w.status, 429);
        assert_eq!(w.code.as_deref(), Some("usage_limit_reached"));
        assert_eq!(
            w.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
        assert_eq!(
            w.headers
                .get("x-codex-primary-used-percent")
                .map(|v| v.as_bytes()),
            Some(&b"100"[..])
        );
        let v: Value = serde_json::from_slice(&w.body).unwrap_or_default();
        assert_eq!(v["error"]["resets_at"], 1_700_000_000);
        assert!(wrapped_error(br#"{"type":"error","error":{"message":"no status"}}"#).is_none());
        let mut h = HeaderMap::new();
        rate_limit_headers(br#"{"type":"codex.rate_limits","rate_limits":{"primary":{"used_percent":12.5,"window_minutes":300,"reset_at":1700000100}},"credits":{"has_credits":true,"unlimited":false,"balance":"5"}}"#, &mut h);
        let snap = super::super::ratelimit::parse(&h).unwrap_or_else(|| panic!("snapshot"));
        let primary = snap.primary.unwrap_or_default();
        assert_eq!(primary.used_percent, 12.5);
        assert_eq!(primary.window_minutes, Some(300));
        assert_eq!(primary.resets_at, Some(1_700_000_100));
        assert_eq!(snap.credits_has, Some(true));
        assert_eq!(snap.credits_balance.as_deref(), Some("5"));
        assert_eq!(
            event_type(br#"{"type":"response.completed","response":{}}"#),
            Some(&b"response.completed"[..])
        );
    }
}
