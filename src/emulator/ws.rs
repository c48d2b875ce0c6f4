//! The Responses WebSocket transport (`protocol/codex-websocket.md`) at
//! `GET /backend-api/codex/responses`: the RFC 6455 handshake (through hyper's HTTP/1.1
//! upgrade), then one `response.create` text frame per request and one Responses event
//! per text frame.
//!
//! A request takes the SSE route's path ([`routes::admit`]: rules, usage limit, open
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
//! The protocol state is tungstenite's [`WebSocketContext`] over an in-memory [`Pipe`]; one
//! task per socket moves bytes between the pipe and the socket, so reading (pings, a
//! second request, a hang-up) goes on while a response plays. permessage-deflate is never
//! negotiated (an offered `Sec-WebSocket-Extensions` goes unanswered).
//!
//! [`WsClient`] is the same pipe on the client side, for tests and benches: the crate has
//! no `futures` traits, which tokio-tungstenite's `Stream`/`Sink` need.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tokio_tungstenite::tungstenite::{self, Message};

use super::accounts::{Account, OpenStream};
use super::routes::{self, Admission, Refusal, Resp};
use super::stream::{EmuBody, LiveStream, Step};
use super::{Recorded, Shared, WebSocketMode, random_hex};

/// Outgoing bytes buffered before the player stops handing frames to the socket.
const TX_HIGH_WATER: usize = 256 << 10;
/// How long a closing socket may take to write what it still holds.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(5);

/// The bytes between tungstenite (which reads and writes it like a non-blocking socket)
/// and the real socket: `rx` received, not yet parsed; `tx` framed, not yet written.
#[derive(Default)]
struct Pipe {
    rx: Vec<u8>,
    rx_pos: usize,
    tx: Vec<u8>,
    eof: bool,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.rx.get(self.rx_pos..).unwrap_or_default();
        if avail.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = avail.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.rx_pos += n;
        if self.rx_pos >= self.rx.len() {
            self.rx.clear();
            self.rx_pos = 0;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pipe {
    fn consumed(&mut self, n: usize) {
        self.tx.drain(..n.min(self.tx.len()));
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// Writes one chunk of `tx`; never completes while `tx` is empty (a `select!` branch).
async fn write_some<W: AsyncWrite + Unpin>(wr: &mut W, tx: &[u8]) -> io::Result<usize> {
    if tx.is_empty() {
        std::future::pending::<()>().await;
    }
    let n = wr.write(tx).await?;
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(n)
}

/// Writes everything `pipe` holds and flushes.
async fn write_all<W: AsyncWrite + Unpin>(wr: &mut W, pipe: &mut Pipe) -> io::Result<()> {
    while !pipe.tx.is_empty() {
        let n = write_some(wr, &pipe.tx).await?;
        pipe.consumed(n);
    }
    wr.flush().await
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Completes when the pause or gate in `wait` does; never when there is none.
async fn wait_on(wait: &mut Option<Wait>) {
    match wait.as_mut() {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

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
        return routes::json_response(405, &json!({"detail": "Method Not Allowed"}));
    }
    if req.version() != hyper::Version::HTTP_11
        || !has_token(headers, hyper::header::CONNECTION, "upgrade")
    {
        return routes::json_response(
            400,
            &json!({"detail": "A WebSocket upgrade needs HTTP/1.1 with Connection: Upgrade."}),
        );
    }
    let version_ok = headers
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut resp = routes::json_response(
            426,
            &json!({"detail": "Unsupported WebSocket version; expected 13."}),
        );
        routes::set(&mut resp, "sec-websocket-version", "13");
        return resp;
    }
    let Some(key) = headers
        .get(hyper::header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return routes::json_response(400, &json!({"detail": "Missing Sec-WebSocket-Key header."}));
    };
    let Some(account) = shared.authorized(headers) else {
        return Refusal::unauthorized().into_response();
    };
    let beta_ok = headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("responses_websockets="));
    if !beta_ok {
        return routes::json_response(
            400,
            &json!({"detail": "The Responses WebSocket transport needs the header 'OpenAI-Beta: responses_websockets=<version>'."}),
        );
    }
    if let WebSocketMode::Refuse(status) = shared.websocket_mode() {
        return routes::json_response(
            status,
            &json!({"error": {"type": "invalid_request_error", "code": "websocket_not_supported", "param": null,
                "message": "The WebSocket transport is not available for this request. Use HTTP streaming instead."}}),
        );
    }
    let conn = Conn {
        shared: Arc::clone(shared),
        headers: routes::header_list(headers),
        session_id: routes::session_id(headers).map(str::to_owned),
        account,
        turn_state: format!("ts_{}", random_hex(32)),
        last: None,
        served: 0,
        playing: None,
        ctx: WebSocketContext::new(Role::Server, None),
        pipe: Pipe::default(),
        end: End::Open,
    };
    shared
        .counters
        .ws_handshakes
        .fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            conn.run(TokioIo::new(upgraded)).await;
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
    routes::set(&mut resp, "x-models-etag", &shared.catalog.etag);
    routes::set(
        &mut resp,
        "x-request-id",
        &format!("req_{}", random_hex(32)),
    );
    resp
}

/// The socket's last completed response.
struct Last {
    id: String,
    input: Vec<Value>,
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
    /// The full input of the request (for the next continuation).
    input: Vec<Value>,
    /// Items of `response.output_item.done` so far.
    output: Vec<Value>,
    /// The id of `response.completed`, once played.
    completed: Option<String>,
}

/// How the socket ends.
#[derive(PartialEq, Eq)]
enum End {
    Open,
    /// Write what is buffered, then drop the connection (after a close frame, or without
    /// one for `EMU:flakyreset` and `EMU:cut`).
    Drop,
}

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
    ctx: WebSocketContext,
    pipe: Pipe,
    end: End,
}

impl Conn {
    async fn run<S>(mut self, io: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut stop = self.shared.stop.clone();
        let mut buf = vec![0u8; 16 << 10];
        let mut wait: Option<Wait> = None;
        loop {
            if wait.is_none() {
                wait = self.pump();
            }
            let _ = self.ctx.flush(&mut self.pipe);
            if self.end == End::Drop {
                let _ =
                    tokio::time::timeout(FLUSH_ON_CLOSE, write_all(&mut wr, &mut self.pipe)).await;
                return;
            }
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        self.pipe.rx.extend_from_slice(buf.get(..n).unwrap_or_default());
                        self.read_frames();
                    }
                },
                r = write_some(&mut wr, &self.pipe.tx) => match r {
                    Ok(n) => {
                        self.pipe.consumed(n);
                        if self.pipe.tx.is_empty() && wr.flush().await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                () = wait_on(&mut wait) => wait = None,
                _ = stop.changed() => return,
            }
        }
    }

    /// Hands the playing response's frames to the protocol, up to a pause or gate (returned
    /// to be waited on), the end, or a full send buffer.
    fn pump(&mut self) -> Option<Wait> {
        loop {
            let playing = self.playing.as_mut()?;
            if self.pipe.tx.len() >= TX_HIGH_WATER
                || (playing.per_event && !self.pipe.tx.is_empty())
            {
                return None;
            }
            let Some(step) = playing.steps.pop_front() else {
                self.finish();
                return None;
            };
            let frame = match step {
                Step::Data(b) => b,
                Step::Stamped(mut b, at) => {
                    super::stream::fill_stamps(&mut b, &at);
                    Bytes::from(b)
                }
                Step::Pause(d) => return Some(Box::pin(tokio::time::sleep(d))),
                Step::Gate(mut g) => {
                    return Some(Box::pin(async move {
                        let _ = g.wait_for(|open| *open).await;
                    }));
                }
                Step::Cut => {
                    self.playing = None;
                    self.end = End::Drop;
                    return None;
                }
            };
            observe(playing, &frame);
            playing.live.sent(frame.len());
            let Ok(text) = tungstenite::Utf8Bytes::try_from(frame) else {
                continue;
            };
            let last = playing.steps.is_empty();
            self.put(Message::Text(text));
            if last {
                self.finish();
                return None;
            }
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
                input: p.input,
                output: p.output,
                epoch: self.shared.ws_epoch.load(Ordering::Acquire),
            });
        }
    }

    /// Parses every complete frame received so far.
    fn read_frames(&mut self) {
        loop {
            match self.ctx.read(&mut self.pipe) {
                Ok(Message::Text(t)) => self.on_request(t.as_str()),
                Ok(Message::Binary(_)) => self.send_error(
                    400,
                    "binary_frame_not_supported",
                    "Binary frames are not supported; send response.create as a text frame.",
                ),
                // Pongs (and close replies) are queued by tungstenite itself.
                Ok(_) => {}
                Err(e) if would_block(&e) => return,
                Err(_) => {
                    self.end = End::Drop;
                    return;
                }
            }
            if self.end == End::Drop {
                return;
            }
        }
    }

    /// Frames `msg` into the pipe at once (errors: the socket is closing anyway).
    fn put(&mut self, msg: Message) {
        let _ = self.ctx.write(&mut self.pipe, msg);
        let _ = self.ctx.flush(&mut self.pipe);
    }

    fn send_json(&mut self, v: &Value) {
        self.put(Message::text(v.to_string()));
    }

    /// A wrapped 400 `invalid_request_error` with `code`.
    /// Keep a request for `Emulator::requests`: `body` as the backend processes it (a
    /// continuation expanded), `frame` as it arrived.
    fn record(&self, body: Value, frame: Value) {
        self.shared.record(Arc::new(Recorded {
            headers: self.headers.clone(),
            body,
            zstd: false,
            frame: Some(frame),
        }));
    }

    fn send_error(&mut self, status: u16, code: &str, message: &str) {
        self.send_json(&json!({"type": "error", "status": status,
            "error": {"type": "invalid_request_error", "code": code, "message": message}}));
    }

    /// A refusal of the shared path as a wrapped error frame.
    fn send_refusal(&mut self, r: Refusal) {
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
            &json!({"type": "error", "status": r.status, "error": error, "headers": headers}),
        );
    }

    fn on_request(&mut self, text: &str) {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
            self.send_error(400, "invalid_json", "The message is not a JSON object.");
            return;
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("response.create") => {}
            other => {
                let message = format!(
                    "Unsupported message type '{}'; expected 'response.create'.",
                    other.unwrap_or("")
                );
                self.send_error(400, "unsupported_message_type", &message);
                return;
            }
        }
        c.ws_requests.fetch_add(1, Ordering::Relaxed);
        c.ws_request_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        obj.remove("type");
        let frame = Value::Object(obj.clone());
        if self.playing.is_some() {
            self.record(frame.clone(), frame);
            self.send_error(
                400,
                "conversation_already_has_active_response",
                "A response is already in progress on this connection; send response.create after it completes.",
            );
            return;
        }
        if let Some(limit) = self.shared.ws_responses_per_socket()
            && self.served >= limit
        {
            self.record(frame.clone(), frame);
            self.send_error(
                400,
                "websocket_connection_limit_reached",
                "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue.",
            );
            let _ = self.ctx.close(
                &mut self.pipe,
                Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "websocket connection limit reached".into(),
                }),
            );
            self.end = End::Drop;
            return;
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
                    self.send_json(&json!({"type": "error", "status": 400, "error": {
                        "type": "invalid_request_error", "code": "previous_response_not_found",
                        "param": "previous_response_id", "message": message}}));
                    return;
                };
                let mut full = last.input.clone();
                full.extend(last.output.iter().cloned());
                full.extend(input_items(obj.get("input")));
                obj.insert("input".to_owned(), Value::Array(full));
                c.ws_continuations.fetch_add(1, Ordering::Relaxed);
            }
        }
        // What the backend processes: the whole conversation; `client_metadata` is
        // metadata, not prompt.
        obj.remove("client_metadata");
        self.record(Value::Object(obj.clone()), frame);
        let warmup = obj.remove("generate") == Some(Value::Bool(false));
        let body = Value::Object(obj);
        let admission = routes::admit(
            &self.shared,
            &routes::Admit {
                account: &self.account,
                body: &body,
                body_len: body.to_string().len(),
                session_id: self.session_id.as_deref(),
                warmup,
            },
        );
        match admission {
            Admission::Refused(r) => self.send_refusal(r),
            Admission::Reset => self.end = End::Drop,
            Admission::Stream { sse, delay, open } => {
                self.served += 1;
                let per_event =
                    sse.chunking.unwrap_or(self.shared.chunking) == super::Chunking::PerEvent;
                let mut steps = sse.into_ws_steps();
                if let Some(d) = delay {
                    steps.push_front(Step::Pause(d));
                }
                self.send_json(&routes::RateLimits::now(None).event());
                let model = body.get("model").cloned().unwrap_or(Value::Null);
                self.send_json(&json!({"type": "response.metadata",
                    "headers": {"x-codex-turn-state": self.turn_state, "openai-model": model},
                    "metadata": {}}));
                self.playing = Some(Playing {
                    steps,
                    per_event,
                    _open: open,
                    live: LiveStream::new(&self.shared.live_streams, &self.shared.ws_bytes),
                    input: input_items(body.get("input")),
                    output: Vec::new(),
                    completed: None,
                });
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

/// The items of an `input` (a string is one user message).
fn input_items(input: Option<&Value>) -> Vec<Value> {
    match input {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}]})],
        _ => Vec::new(),
    }
}

/// Why [`WsClient`] failed.
#[derive(Debug)]
pub enum WsClientError {
    /// The server answered the handshake with a status other than 101.
    Rejected {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Io(io::Error),
    Ws(tungstenite::Error),
}

impl fmt::Display for WsClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsClientError::Rejected { status, body, .. } => write!(
                f,
                "handshake rejected with {status}: {}",
                String::from_utf8_lossy(body)
            ),
            WsClientError::Io(e) => write!(f, "websocket i/o: {e}"),
            WsClientError::Ws(e) => write!(f, "websocket: {e}"),
        }
    }
}

impl std::error::Error for WsClientError {}

impl From<io::Error> for WsClientError {
    fn from(e: io::Error) -> Self {
        WsClientError::Io(e)
    }
}

impl From<tungstenite::Error> for WsClientError {
    fn from(e: tungstenite::Error) -> Self {
        WsClientError::Ws(e)
    }
}

/// A small WebSocket client over any tokio stream (plain or TLS), for tests and benches:
/// a real RFC 6455 client (tungstenite's handshake and framing), driven without the
/// `futures` traits. Pings are answered while reading.
pub struct WsClient<S> {
    io: S,
    ws: tungstenite::WebSocket<Pipe>,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    /// Runs the handshake for `url` (`ws://` or `wss://`; the stream is already connected,
    /// TLS included) with extra `headers`. Returns the client and the 101's headers.
    pub async fn connect(
        mut io: S,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WsClient<S>, Vec<(String, String)>), WsClientError> {
        use tungstenite::client::IntoClientRequest;
        use tungstenite::handshake::HandshakeError;
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| WsClientError::Io(io::Error::other(e)))?;
            let value =
                HeaderValue::from_str(v).map_err(|e| WsClientError::Io(io::Error::other(e)))?;
            req.headers_mut().append(name, value);
        }
        let mut buf = vec![0u8; 16 << 10];
        // Everything received during the handshake: the body of a refusal is cut from it.
        let mut seen: Vec<u8> = Vec::new();
        let mut attempt = tungstenite::client::client(req, Pipe::default());
        loop {
            match attempt {
                Ok((mut ws, resp)) => {
                    write_all(&mut io, ws.get_mut()).await?;
                    let headers = routes::header_list(resp.headers());
                    return Ok((WsClient { io, ws, buf }, headers));
                }
                Err(HandshakeError::Interrupted(mut mid)) => {
                    let pipe = mid.get_mut().get_mut();
                    write_all(&mut io, pipe).await?;
                    let n = io.read(&mut buf).await?;
                    let got = buf.get(..n).unwrap_or_default();
                    seen.extend_from_slice(got);
                    pipe.rx.extend_from_slice(got);
                    pipe.eof = n == 0;
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                    let headers = routes::header_list(resp.headers());
                    let mut body = memchr::memmem::find(&seen, b"\r\n\r\n")
                        .and_then(|i| seen.get(i + 4..))
                        .unwrap_or_default()
                        .to_vec();
                    let want = resp
                        .headers()
                        .get(hyper::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    while body.len() < want {
                        let n = io.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(buf.get(..n).unwrap_or_default());
                    }
                    return Err(WsClientError::Rejected {
                        status: resp.status().as_u16(),
                        headers,
                        body,
                    });
                }
                Err(HandshakeError::Failure(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: Message) -> Result<(), WsClientError> {
        self.ws.send(msg)?;
        write_all(&mut self.io, self.ws.get_mut()).await?;
        Ok(())
    }

    /// Sends `v` as one text frame.
    pub async fn send_json(&mut self, v: &Value) -> Result<(), WsClientError> {
        self.send(Message::text(v.to_string())).await
    }

    /// The next message (pongs to the server's pings are sent on the way); `Ok(None)` once
    /// the connection closed cleanly, an error when it ended without a close handshake.
    pub async fn recv(&mut self) -> Result<Option<Message>, WsClientError> {
        loop {
            match self.ws.read() {
                Ok(m) => {
                    write_all(&mut self.io, self.ws.get_mut()).await?;
                    return Ok(Some(m));
                }
                Err(e) if would_block(&e) => {
                    write_all(&mut self.io, self.ws.get_mut()).await?;
                    let n = self.io.read(&mut self.buf).await?;
                    let got = self.buf.get(..n).unwrap_or_default();
                    let pipe = self.ws.get_mut();
                    pipe.rx.extend_from_slice(got);
                    pipe.eof = n == 0;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next text frame as JSON, skipping pings and pongs; `Ok(None)` on a close frame
    /// or a clean end.
    pub async fn recv_json(&mut self) -> Result<Option<Value>, WsClientError> {
        loop {
            match self.recv().await? {
                Some(Message::Text(t)) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| WsClientError::Io(io::Error::other(e)));
                }
                Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Some(Message::Binary(_)) => {
                    return Err(WsClientError::Io(io::Error::other(
                        "unexpected binary frame",
                    )));
                }
                Some(Message::Close(_)) | None => return Ok(None),
            }
        }
    }
}
