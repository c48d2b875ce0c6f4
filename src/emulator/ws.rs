//! The Responses WebSocket transport (`protocol/codex-websocket.md`) at
//! `GET /backend-api/codex/responses`: the RFC 6455 handshake (through hyper's HTTP/1.1
//! upgrade), then one `response.create` text frame per request and one Responses event
//! per text frame.
//!
//! A request takes the SSE route's path ([`admit::admit`]: rules, usage limit, open
//! streams per account, script); what differs lives here:
//!
//! * `previous_response_id`: the socket keeps its last completed response (id, full input,
//!   output items as streamed); a request naming it gets that input + output + its own
//!   `input`, any other id a wrapped 400 `previous_response_not_found`,
//! * `generate: false` (the CLI's warm-up): `response.created` + `response.completed`
//!   with no output, which becomes the socket's last response,
//! * before each response: `codex.rate_limits` and `response.metadata` frames,
//! * refusals as wrapped `error` frames (`status`, `error`, `headers`); a binary frame,
//!   bad JSON or another `type` is a wrapped 400 (codes `binary_frame_not_supported`,
//!   `invalid_json`, `unsupported_message_type`); a `response.create` while a response
//!   is playing is a wrapped 400 `conversation_already_has_active_response`,
//! * a per-socket response limit (`websocket_connection_limit_reached`, then close).
//!
//! The socket is tokio-tungstenite's [`WebSocketStream`] over hyper's upgraded connection,
//! split in two halves; one task per socket `select!`s between the next client message
//! (tungstenite answers pings while reading; a second request is refused, a hang-up ends
//! the task and releases the account's open-stream slot and the live-stream count at once)
//! and [`Conn::play`], the next step of the response being played (a frame, a pause, a
//! gate). Frames go out with `feed` and a `flush` per event (`Chunking::PerEvent`) or at
//! each pause and at the end (coalesced), so a burst is one write.
//!
//! permessage-deflate (RFC 7692): an offer in `Sec-WebSocket-Extensions` is accepted
//! (unless `EmulatorConfig::ws_deflate` is off; the client's window is never narrowed, a
//! `server_max_window_bits` or `*_no_context_takeover` in the offer is honoured) and the
//! upgraded connection runs under `upstream::deflate::Deflate` in the server role:
//! requests are inflated, events compressed. Data-frame payload bytes are counted as they
//! crossed the wire (`Stats::ws_request_wire_bytes`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::accounts::{Account, OpenStream};
use super::admit::{self, Admission, Refusal};
use super::config::{Chunking, WebSocketMode};
use super::http::{self, Resp};
use super::shared::{Recorded, Shared};
use super::stream::{EmuBody, LiveStream, Step};
use super::util::random_hex;
use crate::upstream::deflate::{self, Deflate};

/// Outgoing bytes tungstenite buffers before it writes them out unasked (and, while the
/// client does not read, the player waits).
const WRITE_BUFFER: usize = 256 << 10;
/// How long a closing socket may take to write what it still holds.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<Deflate<TokioIo<Upgraded>>>;
type Tx = SplitSink<Socket, Message>;
type Rx = SplitStream<Socket>;

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `GET /backend-api/codex/responses`: the handshake checks, then the upgrade.
pub(super) fn handshake(req: Request<Incoming>, shared: &Arc<Shared>) -> Resp {
    let headers = req.headers();
    if !has_token(headers, hyper::header::UPGRADE, "websocket") {
        return http::json_response(405, &json!({"detail": "Method Not Allowed"}));
    }
    if req.version() != hyper::Version::HTTP_11
        || !has_token(headers, hyper::header::CONNECTION, "upgrade")
    {
        return http::json_response(
            400,
            &json!({"detail": "A WebSocket upgrade needs HTTP/1.1 with Connection: Upgrade."}),
        );
    }
    let version_ok = headers
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut resp = http::json_response(
            426,
            &json!({"detail": "Unsupported WebSocket version; expected 13."}),
        );
        http::set(&mut resp, "sec-websocket-version", "13");
        return resp;
    }
    let Some(key) = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return http::json_response(400, &json!({"detail": "Missing Sec-WebSocket-Key header."}));
    };
    let Some(account) = shared.tokens.authorized(headers) else {
        return Refusal::unauthorized().into_response();
    };
    let beta_ok = headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("responses_websockets="));
    if !beta_ok {
        return http::json_response(
            400,
            &json!({"detail": "The Responses WebSocket transport needs the header 'OpenAI-Beta: responses_websockets=<version>'."}),
        );
    }
    if let WebSocketMode::Refuse(status) = shared.websocket_mode() {
        return http::json_response(
            status,
            &json!({"error": {"type": "invalid_request_error", "code": "websocket_not_supported", "param": null,
                "message": "The WebSocket transport is not available for this request. Use HTTP streaming instead."}}),
        );
    }
    let deflate = if shared.ws_deflate {
        deflate::answer_offer(
            headers
                .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    } else {
        None
    };
    let conn = Conn {
        shared: Arc::clone(shared),
        headers: http::header_list(headers),
        session_id: http::session_id(headers).map(str::to_owned),
        account,
        turn_state: format!("ts_{}", random_hex(32)),
        last: None,
        served: 0,
        playing: None,
        wait: None,
        unflushed: false,
        deflate: deflate.is_some(),
    };
    shared
        .counters
        .ws_handshakes
        .fetch_add(1, Ordering::Relaxed);
    let params = deflate.as_ref().map(|(p, _)| *p);
    let answer = deflate.map(|(_, a)| a);
    let wire = Arc::clone(&shared.ws_wire);
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let config = WebSocketConfig::default().write_buffer_size(WRITE_BUFFER);
            let io = Deflate::new(
                TokioIo::new(upgraded),
                deflate::Role::Server,
                Arc::new(std::sync::OnceLock::from(params)),
            )
            .counting(wire);
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            let shared = Arc::clone(&conn.shared);
            // `run` owns the socket: it is closed when this returns.
            conn.run(ws).await;
            shared.counters.ws_closed.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut resp = Response::new(EmuBody::Full(None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = answer.and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    http::set(&mut resp, "x-models-etag", &shared.catalog.etag);
    http::set(
        &mut resp,
        "x-request-id",
        &format!("req_{}", random_hex(32)),
    );
    resp
}

/// The socket's last completed response.
struct Last {
    id: String,
    /// The request as processed (its `input` is the whole conversation so far).
    request: Arc<Recorded>,
    output: Vec<Value>,
    /// `Shared::ws_epoch` when it completed: [`super::Emulator::forget_responses`] bumps it.
    epoch: u64,
}

/// A response being played.
struct Playing {
    steps: VecDeque<Step>,
    /// One event per write (`Chunking::PerEvent`) or every frame up to a pause at once.
    per_event: bool,
    /// The account's open-stream slot, released when the last frame is handed over.
    _open: OpenStream,
    /// Counted in `live_streams`; counts the frame bytes in `ws_bytes_sent`.
    live: LiveStream,
    /// The request as processed (for the next continuation).
    request: Arc<Recorded>,
    /// Items of `response.output_item.done` so far.
    output: Vec<Value>,
    /// The id of `response.completed`, once played.
    completed: Option<String>,
}

/// Why the socket ends.
enum End {
    /// Write what is buffered, then drop the connection (after a close frame, or without
    /// one for `EMU:flakyreset` and `EMU:cut`).
    Drop,
    /// The client left, the socket failed or the emulator stops: drop it at once.
    Gone,
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One upgraded socket.
struct Conn {
    shared: Arc<Shared>,
    /// The handshake's headers, recorded with every request.
    headers: Vec<(String, String)>,
    session_id: Option<String>,
    account: Arc<Account>,
    turn_state: String,
    last: Option<Last>,
    /// Responses served (for the per-socket limit).
    served: u32,
    playing: Option<Playing>,
    /// The pause or gate the player waits on (kept here: [`Conn::play`] is cancelled
    /// whenever a client message comes first, and must resume where it was).
    wait: Option<Wait>,
    /// Frames fed to the socket and not flushed yet.
    unflushed: bool,
    /// permessage-deflate was negotiated (the adapter counts wire bytes; otherwise the
    /// text is what crossed the wire).
    deflate: bool,
}

impl Conn {
    async fn run(mut self, ws: Socket) {
        let (mut tx, mut rx): (Tx, Rx) = ws.split();
        let mut stop = self.shared.stop.clone();
        let end = loop {
            tokio::select! {
                msg = rx.next() => {
                    let done = match msg {
                        Some(Ok(Message::Text(t))) => self.on_request(&mut tx, t.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.send_error(
                                &mut tx,
                                400,
                                "binary_frame_not_supported",
                                "Binary frames are not supported; send response.create as a text frame.",
                            )
                            .await
                        }
                        // tungstenite queued the reply; the flush below sends it.
                        Some(Ok(Message::Close(_))) | Some(Err(_)) => Err(End::Drop),
                        // Pongs are queued (and written) by tungstenite itself.
                        Some(Ok(_)) => Ok(()),
                        None => Err(End::Gone),
                    };
                    if let Err(end) = done {
                        break end;
                    }
                }
                end = self.play(&mut tx) => break end,
                _ = stop.changed() => break End::Gone,
            }
        };
        // Whatever the end, the response stops here: its slot and live count go now.
        self.playing = None;
        self.wait = None;
        if let End::Drop = end {
            let _ = tokio::time::timeout(FLUSH_ON_CLOSE, tx.flush()).await;
        }
    }

    /// Plays the current response: feeds its frames, flushes per event or before a pause
    /// and at the end, waits out pauses and gates; pending while there is nothing to do.
    /// Returns only when the socket must end. Cancel-safe: a step leaves the queue once
    /// fed, the wait and the flush still owed are kept in `self`.
    async fn play(&mut self, tx: &mut Tx) -> End {
        loop {
            // Flush per event, and whatever is queued before waiting (a pause, a gate, the
            // next request).
            let waiting = self.wait.is_some() || self.playing.is_none();
            if self.unflushed && (waiting || self.playing.as_ref().is_some_and(|p| p.per_event)) {
                if tx.flush().await.is_err() {
                    return End::Gone;
                }
                self.unflushed = false;
            }
            if let Some(w) = self.wait.as_mut() {
                w.await;
                self.wait = None;
            }
            let Some(p) = self.playing.as_mut() else {
                std::future::pending::<()>().await;
                continue;
            };
            if p.steps.is_empty() {
                // Handed over whole (the flush follows): the slot is released now.
                self.finish();
                continue;
            }
            let frame = match p.steps.front_mut() {
                None => continue,
                Some(Step::Data(b)) => b.clone(),
                Some(Step::Stamped(b, at)) => {
                    super::stream::fill_stamps(b, at);
                    Bytes::copy_from_slice(b)
                }
                Some(Step::Pause(d)) => {
                    self.wait = Some(Box::pin(tokio::time::sleep(*d)));
                    p.steps.pop_front();
                    continue;
                }
                Some(Step::Gate(_)) => {
                    if let Some(Step::Gate(mut g)) = p.steps.pop_front() {
                        self.wait = Some(Box::pin(async move {
                            let _ = g.wait_for(|open| *open).await;
                        }));
                    }
                    continue;
                }
                Some(Step::Cut) => return End::Drop,
            };
            let Ok(text) = Utf8Bytes::try_from(frame.clone()) else {
                p.steps.pop_front();
                continue;
            };
            if tx.feed(Message::Text(text)).await.is_err() {
                return End::Gone;
            }
            p.steps.pop_front();
            self.unflushed = true;
            observe(p, &frame);
            p.live.sent(frame.len());
        }
    }

    /// The playing response was handed over whole: release its slot, and keep it as the
    /// socket's last response if it completed.
    fn finish(&mut self) {
        if let Some(p) = self.playing.take()
            && let Some(id) = p.completed
        {
            self.last = Some(Last {
                id,
                request: p.request,
                output: p.output,
                epoch: self.shared.ws_epoch.load(Ordering::Acquire),
            });
        }
    }

    /// Queues `v` as one text frame; [`Conn::play`] flushes it.
    async fn send_json(&mut self, tx: &mut Tx, v: &Value) -> Result<(), End> {
        tx.feed(Message::text(v.to_string()))
            .await
            .map_err(|_| End::Gone)?;
        self.unflushed = true;
        Ok(())
    }

    /// Keep a request for `Emulator::requests`: `body` as the backend processes it (a
    /// continuation expanded), `frame` as it arrived.
    fn record(&self, body: Value, frame: Value) -> Arc<Recorded> {
        let recorded = Arc::new(Recorded {
            headers: self.headers.clone(),
            body,
            zstd: false,
            frame: Some(frame),
        });
        self.shared.record(Arc::clone(&recorded));
        recorded
    }

    /// A wrapped `invalid_request_error` with `code`.
    async fn send_error(
        &mut self,
        tx: &mut Tx,
        status: u16,
        code: &str,
        message: &str,
    ) -> Result<(), End> {
        self.send_json(
            tx,
            &json!({"type": "error", "status": status,
                "error": {"type": "invalid_request_error", "code": code, "message": message}}),
        )
        .await
    }

    /// A refusal of the shared path as a wrapped error frame.
    async fn send_refusal(&mut self, tx: &mut Tx, r: Refusal) -> Result<(), End> {
        let error = match r.body.get("error") {
            Some(e @ Value::Object(_)) => e.clone(),
            _ => {
                let message = match r.body.get("detail").and_then(Value::as_str) {
                    Some(d) => d.to_owned(),
                    None => r.body.to_string(),
                };
                json!({"type": "invalid_request_error", "code": null, "message": message})
            }
        };
        let headers: Map<String, Value> = r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        self.send_json(
            tx,
            &json!({"type": "error", "status": r.status, "error": error, "headers": headers}),
        )
        .await
    }

    /// One text frame from the client. `Err` when the socket must end.
    async fn on_request(&mut self, tx: &mut Tx, text: &str) -> Result<(), End> {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
            return self
                .send_error(tx, 400, "invalid_json", "The message is not a JSON object.")
                .await;
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("response.create") => {}
            other => {
                let message = format!(
                    "Unsupported message type '{}'; expected 'response.create'.",
                    other.unwrap_or("")
                );
                return self
                    .send_error(tx, 400, "unsupported_message_type", &message)
                    .await;
            }
        }
        c.ws_requests.fetch_add(1, Ordering::Relaxed);
        c.ws_request_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        if !self.deflate {
            self.shared
                .ws_wire
                .received
                .fetch_add(text.len() as u64, Ordering::Relaxed);
        }
        obj.remove("type");
        let frame = Value::Object(obj.clone());
        if self.playing.is_some() {
            self.record(frame.clone(), frame);
            return self.send_error(
                tx,
                400,
                "conversation_already_has_active_response",
                "A response is already in progress on this connection; send response.create after it completes.",
            )
            .await;
        }
        if let Some(limit) = self.shared.ws_responses_per_socket()
            && self.served >= limit
        {
            self.record(frame.clone(), frame);
            self.send_error(
                tx,
                400,
                "websocket_connection_limit_reached",
                "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue.",
            )
            .await?;
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "websocket connection limit reached".into(),
            };
            let _ = tx.feed(Message::Close(Some(close))).await;
            return Err(End::Drop);
        }
        self.account.count_request();
        match obj.remove("previous_response_id") {
            None | Some(Value::Null) => {}
            Some(prev) => {
                let id = prev.as_str().unwrap_or_default();
                let epoch = self.shared.ws_epoch.load(Ordering::Acquire);
                let Some(last) = self
                    .last
                    .as_ref()
                    .filter(|l| l.id == id && l.epoch == epoch)
                else {
                    self.record(frame.clone(), frame);
                    let message = format!("Previous response with id '{id}' not found.");
                    return self
                        .send_json(
                            tx,
                            &json!({"type": "error", "status": 400, "error": {
                                "type": "invalid_request_error", "code": "previous_response_not_found",
                                "param": "previous_response_id", "message": message}}),
                        )
                        .await;
                };
                let mut full = input_items(last.request.body.get("input"));
                full.extend(last.output.iter().cloned());
                full.extend(input_items(obj.get("input")));
                obj.insert("input".to_owned(), Value::Array(full));
                c.ws_continuations.fetch_add(1, Ordering::Relaxed);
            }
        }
        // What the backend processes: the whole conversation; `client_metadata` is
        // metadata, not prompt.
        obj.remove("client_metadata");
        let warmup = obj.remove("generate") == Some(Value::Bool(false));
        let recorded = self.record(Value::Object(obj), frame);
        let body = &recorded.body;
        let admission = admit::admit(
            &self.shared,
            &admit::Admit {
                account: &self.account,
                body,
                body_len: json_len(body),
                session_id: self.session_id.as_deref(),
                warmup,
            },
        );
        match admission {
            Admission::Refused(r) => self.send_refusal(tx, r).await,
            Admission::Reset => Err(End::Drop),
            Admission::Stream { sse, delay, open } => {
                self.served += 1;
                let per_event = sse.chunking.unwrap_or(self.shared.chunking) == Chunking::PerEvent;
                let mut steps = sse.into_ws_steps();
                if let Some(d) = delay {
                    steps.push_front(Step::Pause(d));
                }
                self.send_json(tx, &admit::RateLimits::now(None).event())
                    .await?;
                let model = body.get("model").cloned().unwrap_or(Value::Null);
                let metadata = json!({"type": "response.metadata",
                    "headers": {"x-codex-turn-state": self.turn_state, "openai-model": model},
                    "metadata": {}});
                self.send_json(tx, &metadata).await?;
                self.playing = Some(Playing {
                    steps,
                    per_event,
                    _open: open,
                    live: LiveStream::new(&self.shared.live_streams, &self.shared.ws_bytes),
                    request: Arc::clone(&recorded),
                    output: Vec::new(),
                    completed: None,
                });
                Ok(())
            }
        }
    }
}

/// Notes what the socket must remember of a frame being sent: output items, the id of
/// the completed response.
fn observe(playing: &mut Playing, frame: &[u8]) {
    const ITEM_DONE: &[u8] = b"{\"type\":\"response.output_item.done\"";
    const COMPLETED: &[u8] = b"{\"type\":\"response.completed\"";
    if frame.starts_with(ITEM_DONE) {
        if let Ok(mut ev) = serde_json::from_slice::<Value>(frame)
            && let Some(item) = ev.get_mut("item")
        {
            playing.output.push(item.take());
        }
    } else if frame.starts_with(COMPLETED)
        && let Ok(ev) = serde_json::from_slice::<Value>(frame)
    {
        playing.completed = ev
            .pointer("/response/id")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
}

/// The length of `v` written as compact JSON, without writing it anywhere.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The items of an `input` (a string is one user message).
fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}]})],
        _ => Vec::new(),
    }
}
