//! The Responses WebSocket mode for clients: `GET /v1/responses` (and `/responses`,
//! `/backend-api/codex/responses`) with `Upgrade: websocket`, as the Codex CLI opens it
//! with `supports_websockets = true` on a custom provider (`protocol/codex-websocket.md`).
//!
//! Owns: recognising and accepting the upgrade on an HTTP/1.1 connection (after the same
//! guards as every request: head size, Host, Origin, API key), then the socket's life: each
//! `response.create` text frame runs through the `/v1/responses` path (the Responses
//! dialect, `previous_response_id` chained from the exchanges this server kept, the
//! pipeline with its accounts, window and upstream transport) and its events go back one
//! JSON text frame each; a `generate:false` warm-up is answered here with an empty
//! `response.created` / `response.completed` whose id later requests chain from; errors go
//! out in the wrapped shape `{"type":"error","status":N,"error":{…},"headers":{…}}`; one
//! request in flight (a second one meanwhile is refused); a client that closes mid-stream
//! drops its upstream request.
//!
//! Every exchange of a socket is kept for `previous_response_id` whatever `store` says:
//! the CLI sends `store:false` and chains the next turn to the last response. On a
//! WebSocket upstream the chained turn goes out as a continuation again (`upstream::ws`).
//!
//! Does not own: HTTP/1.1 framing (`h1`), the translation (`dialect::responses`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::respond::RespBody;
use super::state::State;
use crate::dialect::{Ctx, Plan, responses};
use crate::error::{Error, Protocol};
use crate::sse::parse::SseParser;
use crate::upstream::collect::{Collected, Finish};

/// The paths that answer the upgrade.
fn is_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/responses" | "/responses" | "/backend-api/codex/responses"
    )
}

/// A WebSocket upgrade of the Responses route.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && is_path(req.uri().path())
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `Sec-WebSocket-Accept` of a valid upgrade request, else the 400 to answer.
pub fn accept_key<B>(req: &Request<B>) -> Result<String, Error> {
    let h = req.headers();
    let upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !upgrade {
        return Err(Error::bad_request(
            "a WebSocket upgrade needs `Connection: Upgrade`",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Error::bad_request(
            "only WebSocket version 13 is supported (`Sec-WebSocket-Version: 13`)",
        ));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Error::bad_request("a WebSocket upgrade needs `Sec-WebSocket-Key`"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// The 101 answer.
pub fn switching(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// Serve an accepted socket (the 101 already written; `buf` holds bytes read past the head).
/// Between requests the socket closes when the server shuts down.
pub async fn serve(
    state: Arc<State>,
    stream: TcpStream,
    buf: Vec<u8>,
    headers: HeaderMap,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(state.config.max_body_bytes);
    config.max_frame_size = Some(state.config.max_body_bytes);
    // Small buffers: a client socket mostly waits between turns.
    config.read_buffer_size = crate::upstream::ws::SOCKET_BUFFER;
    let mut ws =
        WebSocketStream::from_partially_read(stream, buf, Role::Server, Some(config)).await;
    state
        .ws_sessions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    loop {
        let msg = tokio::select! {
            msg = ws.next() => Some(msg),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(msg) = msg else {
            let _ = ws.close(None).await;
            return;
        };
        let Some(msg) = msg else { return };
        let data = match msg {
            Ok(Message::Text(t)) => Bytes::from(t),
            Ok(Message::Binary(_)) => {
                let err = Error::bad_request(
                    "binary frames are not accepted: send `response.create` as a text frame",
                );
                if send_error(&mut ws, &err).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => continue,
        };
        if turn(&state, &mut ws, &data, &headers).await.is_err() {
            return;
        }
    }
}

type Socket = WebSocketStream<TcpStream>;
type SendResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// One `response.create`. An `Err` means the socket is gone.
async fn turn(state: &Arc<State>, ws: &mut Socket, data: &[u8], headers: &HeaderMap) -> SendResult {
    let request_id = crate::upstream::request::random_id("req_");
    let started = Instant::now();
    let (mut body, generate) = match request_body(data) {
        Ok(v) => v,
        Err(err) => return send_error(ws, &err).await,
    };
    let plan = {
        let catalog = state.catalog.current();
        let ctx = Ctx {
            config: &state.config,
            catalog: &catalog,
            headers,
        };
        responses::translate(&mut body, &ctx).and_then(|mut plan| {
            state.history.chain(&mut plan)?;
            plan.keep_always();
            Ok(plan)
        })
    };
    let plan = match plan {
        Ok(p) => p,
        Err(err) => return send_error(ws, &err).await,
    };
    if !generate {
        return warm_up(state, ws, &plan).await;
    }
    let mut resp = super::pipeline::run(state, plan, &request_id).await;
    let status = resp.status();
    let log = super::reqlog::RequestLog {
        status: status.as_u16(),
        meter: resp.extensions_mut().remove::<Arc<super::reqlog::Meter>>(),
        request_id,
        method: Method::GET,
        route: "/v1/responses (websocket)".to_owned(),
        started,
        error: None,
    };
    let mut resp = resp.map(|b| super::reqlog::wrap(b, log));
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .body_mut()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let error = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .unwrap_or(Value::Null);
        return send_wrapped(ws, status.as_u16(), error, retry_after).await;
    }
    stream_events(ws, resp.into_body()).await
}

/// The JSON body for the Responses dialect (the frame without `type`, `generate` and
/// `client_metadata`, always streamed) and whether to generate.
fn request_body(data: &[u8]) -> Result<(Vec<u8>, bool), Error> {
    let mut v: Value = serde_json::from_slice(data)
        .map_err(|e| Error::bad_request(format!("the frame is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::bad_request("the frame must be a JSON object"));
    };
    match obj.remove("type") {
        Some(Value::String(t)) if t == "response.create" => {}
        other => {
            return Err(Error::bad_request(format!(
                "unsupported message type {}: send {{\"type\":\"response.create\", …}}",
                other.map_or_else(|| "(none)".to_owned(), |t| t.to_string())
            ))
            .with_code("invalid_type"));
        }
    }
    let generate = !matches!(obj.remove("generate"), Some(Value::Bool(false)));
    obj.remove("client_metadata");
    obj.insert("stream".into(), Value::Bool(true));
    let body = serde_json::to_vec(&v).map_err(|e| Error::internal(e.to_string()))?;
    Ok((body, generate))
}

/// `generate:false`: an empty response, kept so the next turn chains from it.
async fn warm_up(
    state: &Arc<State>,
    ws: &mut Socket,
    plan: &responses::ResponsesPlan,
) -> SendResult {
    let id = crate::upstream::request::random_id("resp_");
    let mut done = Collected::new();
    done.response_id = id.clone();
    done.finish = Finish::Completed;
    let up = plan.upstream();
    state
        .history
        .keep(id.clone(), &up.input, &done, &up.conversation_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let response = |status: &str| {
        serde_json::json!({
            "id": id, "object": "response", "created_at": now, "status": status,
            "model": plan.client_model(), "output": [], "usage": null,
        })
    };
    let created = serde_json::json!({"type":"response.created","sequence_number":0,"response":response("in_progress")});
    let completed = serde_json::json!({"type":"response.completed","sequence_number":1,"response":response("completed")});
    ws.feed(text(created.to_string())).await?;
    ws.send(text(completed.to_string())).await
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// The streamed answer, one event per text frame; the client is watched meanwhile (a close
/// drops the upstream request, a second request is refused).
async fn stream_events(ws: &mut Socket, mut body: RespBody) -> SendResult {
    let mut parser = SseParser::new(crate::upstream::events::MAX_EVENT_BYTES);
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else {
                    return ws.flush().await;
                };
                let Ok(data) = frame.into_data() else { continue };
                parser.push(&data);
                while let Ok(Some(ev)) = parser.next_event() {
                    if ev.data.is_empty() || ev.data == b"[DONE]" {
                        continue;
                    }
                    let s = String::from_utf8_lossy(ev.data).into_owned();
                    ws.feed(text(s)).await?;
                }
                ws.flush().await?;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    let err = Error::bad_request(
                        "a response is already in progress on this socket: send the next `response.create` after `response.completed`",
                    )
                    .with_code("response_in_progress");
                    send_error(ws, &err).await?;
                }
                Some(Ok(_)) => {}
                // Gone: dropping the body drops the upstream request.
                Some(Err(e)) => return Err(e),
                None => return Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed),
            }
        }
    }
}

async fn send_error(ws: &mut Socket, err: &Error) -> SendResult {
    let status = err.status(Protocol::OpenAi);
    let body: Value = serde_json::from_slice(&err.body(Protocol::OpenAi)).unwrap_or(Value::Null);
    let error = body.get("error").cloned().unwrap_or(Value::Null);
    send_wrapped(ws, status, error, err.retry_after.map(|s| s.to_string())).await
}

async fn send_wrapped(
    ws: &mut Socket,
    status: u16,
    error: Value,
    retry_after: Option<String>,
) -> SendResult {
    let mut headers = serde_json::Map::new();
    if let Some(r) = retry_after {
        headers.insert("retry-after".into(), Value::String(r));
    }
    let frame = serde_json::json!({
        "type": "error",
        "status": status,
        "error": error,
        "headers": headers,
    });
    ws.send(text(frame.to_string())).await
}
