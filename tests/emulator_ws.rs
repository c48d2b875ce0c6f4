//! The emulator's Responses WebSocket transport over real sockets (plain and TLS): the
//! handshake checks, one event per text frame, continuation from the socket's last
//! response, warm-ups, wrapped errors (rules, account limits, unknown ids, busy socket),
//! the per-socket limit and the refusal mode.

// Test helpers outside #[test] functions panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use codex_as_api::emulator::{Emulator, EmulatorConfig, TestCredentials, WebSocketMode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Bound on any single wait for a frame (a hang fails the test instead of blocking it).
const WAIT: Duration = Duration::from_secs(20);

/// An emulator for tungstenite clients: permessage-deflate, which tungstenite does not
/// implement, is off (the offer in [`headers`] goes unanswered).
async fn emulator(cfg: EmulatorConfig) -> (Emulator, TestCredentials) {
    let emu = Emulator::start(EmulatorConfig {
        ws_deflate: false,
        ..cfg
    })
    .await
    .unwrap();
    let creds = emu.issue_credentials(3600);
    (emu, creds)
}

fn headers(creds: &TestCredentials) -> Vec<(String, String)> {
    vec![
        (
            "authorization".into(),
            format!("Bearer {}", creds.access_token),
        ),
        ("chatgpt-account-id".into(), creds.account_id.clone()),
        (
            "openai-beta".into(),
            "responses_websockets=2026-02-06".into(),
        ),
        ("originator".into(), "codex_cli_rs".into()),
        ("session-id".into(), "conv-1".into()),
        (
            "sec-websocket-extensions".into(),
            "permessage-deflate; client_max_window_bits".into(),
        ),
    ]
}

/// The client handshake over `io` (plain or TLS) with extra `headers`; the socket and the
/// 101's headers.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    url: &str,
    headers: &[(String, String)],
) -> Result<(WebSocketStream<S>, Vec<(String, String)>), WsError> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, io).await?;
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    Ok((ws, headers))
}

async fn connect_with(
    emu: &Emulator,
    headers: &[(String, String)],
) -> Result<(WebSocketStream<TcpStream>, Vec<(String, String)>), WsError> {
    let tcp = TcpStream::connect(emu.addr()).await.unwrap();
    handshake(tcp, &emu.ws_url(), headers).await
}

async fn connect(emu: &Emulator, creds: &TestCredentials) -> WebSocketStream<TcpStream> {
    connect_with(emu, &headers(creds)).await.unwrap().0
}

/// A refused handshake: its status and JSON body.
async fn refused(emu: &Emulator, headers: &[(String, String)]) -> (u16, Value) {
    match connect_with(emu, headers).await {
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(body).unwrap(),
            )
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// Sends `v` as one text frame.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: &Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next message (pongs to the server's pings go out on the way), in time.
async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<Result<Message, WsError>> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
}

fn body(text: &str) -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": "You are a test.",
        "input": [user(text)],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort": "medium"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-1",
    })
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

/// `body` as a `response.create` frame.
fn create(mut b: Value) -> Value {
    let obj = b.as_object_mut().unwrap();
    let mut framed = serde_json::Map::new();
    framed.insert("type".into(), json!("response.create"));
    framed.extend(std::mem::take(obj));
    Value::Object(framed)
}

fn with_tools(mut b: Value) -> Value {
    b["tools"] = json!([
        {"type": "function", "name": "Bash", "description": "run", "strict": false,
         "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
    ]);
    b
}

/// The next text frame as JSON, skipping pings and pongs; `None` on a close frame or a
/// clean end.
async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Option<Value> {
    loop {
        match recv(ws).await {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Ok(Message::Binary(_))) => panic!("unexpected binary frame"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("websocket: {e}"),
        }
    }
}

/// Frames up to and including a terminal event or a wrapped error.
async fn turn<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next(ws).await.expect("the socket stays open until the end");
        let ty = f["type"].as_str().unwrap().to_owned();
        frames.push(f);
        if matches!(
            ty.as_str(),
            "response.completed" | "response.failed" | "response.incomplete" | "error"
        ) {
            return frames;
        }
    }
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "response.output_text.delta")
        .map(|f| f["delta"].as_str().unwrap())
        .collect()
}

fn completed(frames: &[Value]) -> &Value {
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "response.completed", "{frames:#?}");
    &last["response"]
}

fn output_items(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "response.output_item.done")
        .map(|f| f["item"].clone())
        .collect()
}

/// One wrapped error frame: `(status, error)`.
async fn error<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> (u64, Value) {
    let f = next(ws).await.expect("an error frame");
    assert_eq!(f["type"], "error", "{f}");
    (f["status"].as_u64().unwrap(), f)
}

#[tokio::test]
async fn a_text_turn_streams_one_event_per_frame_and_the_socket_is_reused() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let (mut ws, resp_headers) = connect_with(&emu, &headers(&creds)).await.unwrap();
    assert!(emu.ws_url().starts_with("ws://127.0.0.1:"));
    // permessage-deflate is offered but not negotiated (`ws_deflate: false`).
    assert!(
        !resp_headers
            .iter()
            .any(|(k, _)| k == "sec-websocket-extensions"),
        "{resp_headers:?}"
    );
    assert!(resp_headers.iter().any(|(k, _)| k == "x-models-etag"));

    let first = create(body("hello there"));
    send(&mut ws, &first).await;
    let frames = turn(&mut ws).await;
    let rl = &frames[0];
    assert_eq!(rl["type"], "codex.rate_limits", "{frames:#?}");
    assert_eq!(rl["plan_type"], "plus");
    assert_eq!(rl["rate_limits"]["allowed"], true);
    assert_eq!(rl["rate_limits"]["limit_reached"], false);
    assert_eq!(rl["rate_limits"]["primary"]["window_minutes"], 300);
    assert_eq!(rl["rate_limits"]["primary"]["used_percent"], 12.0);
    assert!(rl["rate_limits"]["primary"]["reset_at"].as_i64().unwrap() > 0);
    assert_eq!(rl["rate_limits"]["secondary"]["window_minutes"], 10080);
    assert!(rl["credits"].is_object());
    let meta = &frames[1];
    assert_eq!(meta["type"], "response.metadata");
    let turn_state = meta["headers"]["x-codex-turn-state"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(turn_state.starts_with("ts_"));
    assert_eq!(meta["headers"]["openai-model"], "gpt-5.5");
    assert_eq!(frames[2]["type"], "response.created");
    assert_eq!(frames[2]["sequence_number"], 0);
    assert_eq!(text_of(&frames), "You said: hello there");
    let done = completed(&frames);
    assert!(done["id"].as_str().unwrap().starts_with("resp_"));
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The same socket serves the next request; the turn state is the socket's.
    let second = create(body("again"));
    send(&mut ws, &second).await;
    let frames = turn(&mut ws).await;
    assert_eq!(text_of(&frames), "You said: again");
    assert_eq!(
        frames[1]["headers"]["x-codex-turn-state"],
        turn_state.as_str()
    );

    let stats = emu.stats();
    assert_eq!(stats.ws_handshakes, 1);
    assert_eq!(stats.ws_requests, 2);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(
        stats.ws_request_bytes,
        (first.to_string().len() + second.to_string().len()) as u64
    );
    assert_eq!(stats.ws_continuations, 0);
    assert!(stats.ws_bytes_sent > 0);
    assert_eq!(stats.responses_requests, 2, "either transport counts");
    let recorded = emu.requests();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.websocket() && !r.zstd));
    assert!(recorded[0].body.get("type").is_none());
    assert_eq!(recorded[0].body["input"], body("hello there")["input"]);
    assert!(
        recorded[0]
            .headers
            .iter()
            .any(|(k, v)| k == "openai-beta" && v.starts_with("responses_websockets="))
    );
    assert_eq!(emu.live_streams(), 0);
}

#[tokio::test]
async fn a_continuation_sends_only_new_items_and_the_script_sees_the_full_input() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, &creds).await;
    let first = with_tools(body("run it EMU:tool"));
    send(&mut ws, &create(first.clone())).await;
    let frames = turn(&mut ws).await;
    let id = completed(&frames)["id"].as_str().unwrap().to_owned();
    let items = output_items(&frames);
    let call = items
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a function call");

    // Only the tool output: the rules only accept it if the server put the call back.
    let output =
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "42"});
    let mut delta = with_tools(body("unused"));
    delta["input"] = json!([output]);
    delta["previous_response_id"] = json!(id);
    let delta_frame = create(delta);
    send(&mut ws, &delta_frame).await;
    let frames = turn(&mut ws).await;
    assert_eq!(text_of(&frames), "Tool output: 42", "{frames:#?}");
    let chained = completed(&frames);

    // The same request sent whole (previous input + output items + new item) is billed
    // the same input: the server rebuilt exactly that body.
    let mut full = with_tools(body("unused"));
    let mut all = first["input"].as_array().unwrap().clone();
    all.extend(items.iter().cloned());
    all.push(output.clone());
    full["input"] = Value::Array(all);
    let mut fresh = connect(&emu, &creds).await;
    send(&mut fresh, &create(full)).await;
    let whole = turn(&mut fresh).await;
    assert_eq!(
        completed(&whole)["usage"]["input_tokens"],
        chained["usage"]["input_tokens"]
    );

    let stats = emu.stats();
    assert_eq!(stats.ws_continuations, 1);
    assert_eq!(
        stats.ws_request_bytes,
        emu.requests()
            .iter()
            .map(|r| {
                let mut b = json!({"type": "response.create"});
                b.as_object_mut()
                    .unwrap()
                    .extend(r.frame.as_ref().unwrap().as_object().unwrap().clone());
                b.to_string().len() as u64
            })
            .sum::<u64>()
    );
    // The frame as received: the id and the delta only; the body as processed: whole.
    let rec = &emu.requests()[1];
    assert!(rec.websocket());
    let frame = rec.frame.as_ref().unwrap();
    assert_eq!(frame["previous_response_id"], id.as_str());
    assert_eq!(frame["input"], json!([output]));
    assert!(rec.body.get("previous_response_id").is_none());
    assert_eq!(rec.body["input"], emu.requests()[2].body["input"]);
    assert!(delta_frame.to_string().len() < emu.requests()[2].body.to_string().len());
}

#[tokio::test]
async fn an_unknown_previous_response_is_not_found_and_sockets_do_not_share_ids() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut a = connect(&emu, &creds).await;
    let mut b = body("x");
    b["previous_response_id"] = json!("resp_nope");
    send(&mut a, &create(b)).await;
    let (status, f) = error(&mut a).await;
    assert_eq!(status, 400);
    assert_eq!(f["error"]["type"], "invalid_request_error");
    assert_eq!(f["error"]["code"], "previous_response_not_found");
    assert_eq!(f["error"]["param"], "previous_response_id");
    assert_eq!(
        f["error"]["message"],
        "Previous response with id 'resp_nope' not found."
    );

    // A completed response on socket A is unknown to a new socket B.
    send(&mut a, &create(body("first"))).await;
    let id = completed(&turn(&mut a).await)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut b_sock = connect(&emu, &creds).await;
    let mut chained = body("second");
    chained["previous_response_id"] = json!(id);
    send(&mut b_sock, &create(chained.clone())).await;
    let (_, f) = error(&mut b_sock).await;
    assert_eq!(f["error"]["code"], "previous_response_not_found");
    // …while socket A chains from it.
    send(&mut a, &create(chained)).await;
    assert_eq!(text_of(&turn(&mut a).await), "You said: second");
    assert_eq!(emu.stats().ws_continuations, 1);
}

#[tokio::test]
async fn a_warm_up_answers_an_empty_response_that_the_next_request_chains_from() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, &creds).await;
    let mut warm = body("warm words");
    warm["generate"] = json!(false);
    send(&mut ws, &create(warm)).await;
    let frames = turn(&mut ws).await;
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "codex.rate_limits",
            "response.metadata",
            "response.created",
            "response.completed"
        ]
    );
    let done = completed(&frames);
    assert_eq!(done["output"], json!([]));
    let id = done["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"));

    // The first real request: no new items, the warm-up's input answers.
    let mut first = body("unused");
    first["input"] = json!([]);
    first["previous_response_id"] = json!(id);
    send(&mut ws, &create(first)).await;
    assert_eq!(text_of(&turn(&mut ws).await), "You said: warm words");
    assert_eq!(emu.requests()[0].frame.as_ref().unwrap()["generate"], false);
    assert!(
        emu.requests()[0].body.get("generate").is_none(),
        "a field of the frame, not of the prompt"
    );
    assert_eq!(emu.stats().ws_continuations, 1);
}

#[tokio::test]
async fn refuse_mode_answers_the_handshake_with_426_until_switched_back() {
    let (emu, creds) = emulator(EmulatorConfig {
        websocket: WebSocketMode::Refuse(426),
        ..EmulatorConfig::default()
    })
    .await;
    let (status, v) = refused(&emu, &headers(&creds)).await;
    assert_eq!(status, 426);
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(emu.stats().ws_handshakes, 0);
    emu.set_websocket_mode(WebSocketMode::Accept);
    let mut ws = connect(&emu, &creds).await;
    send(&mut ws, &create(body("now"))).await;
    assert_eq!(text_of(&turn(&mut ws).await), "You said: now");
    assert_eq!(emu.stats().ws_handshakes, 1);
}

#[tokio::test]
async fn the_connection_limit_answers_a_wrapped_error_and_closes_the_socket() {
    let (emu, creds) = emulator(EmulatorConfig {
        websocket_responses_per_socket: Some(1),
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu, &creds).await;
    send(&mut ws, &create(body("one"))).await;
    completed(&turn(&mut ws).await);
    send(&mut ws, &create(body("two"))).await;
    let (status, f) = error(&mut ws).await;
    assert_eq!(status, 400);
    assert_eq!(f["error"]["type"], "invalid_request_error");
    assert_eq!(f["error"]["code"], "websocket_connection_limit_reached");
    assert_eq!(
        f["error"]["message"],
        "Responses websocket connection limit reached (60 minutes). Create a new websocket connection to continue."
    );
    // Then the server closes the socket.
    let end = recv(&mut ws).await;
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
    // A new socket serves again; the limit can change at run time.
    emu.set_websocket_responses_per_socket(None);
    let mut ws = connect(&emu, &creds).await;
    for text in ["a", "b"] {
        send(&mut ws, &create(body(text))).await;
        completed(&turn(&mut ws).await);
    }
}

#[tokio::test]
async fn a_rules_rejection_and_bad_frames_are_wrapped_400s_and_the_socket_lives_on() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, &creds).await;
    let mut bad = body("x");
    bad["store"] = json!(true);
    send(&mut ws, &create(bad)).await;
    let (status, f) = error(&mut ws).await;
    assert_eq!(status, 400);
    assert_eq!(f["error"]["message"], "Store must be set to false");
    assert!(f["headers"]["x-request-id"].is_string());

    let mut unknown = body("x");
    unknown["bogus"] = json!(1);
    send(&mut ws, &create(unknown)).await;
    let (_, f) = error(&mut ws).await;
    assert_eq!(f["error"]["message"], "Unsupported parameter: bogus");

    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(error(&mut ws).await.1["error"]["code"], "invalid_json");
    send(&mut ws, &json!({"type": "response.append", "input": []})).await;
    assert_eq!(
        error(&mut ws).await.1["error"]["code"],
        "unsupported_message_type"
    );
    ws.send(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(
        error(&mut ws).await.1["error"]["code"],
        "binary_frame_not_supported"
    );
    // Pings are answered.
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = recv(&mut ws).await;
    assert!(
        matches!(pong, Some(Ok(Message::Pong(ref p))) if p.as_ref() == b"hi"),
        "{pong:?}"
    );

    send(&mut ws, &create(body("still here"))).await;
    assert_eq!(text_of(&turn(&mut ws).await), "You said: still here");
    // Only response.create frames count.
    assert_eq!(emu.stats().ws_requests, 3);
}

#[tokio::test]
async fn account_limits_are_wrapped_429s_and_a_busy_socket_refuses_a_second_request() {
    let (emu, creds) = emulator(EmulatorConfig {
        account_concurrency: Some(1),
        ..EmulatorConfig::default()
    })
    .await;
    let mut a = connect(&emu, &creds).await;
    send(&mut a, &create(body("hold EMU:gate:g1"))).await;
    // Wait for the first delta: the stream is open and parked at the gate.
    loop {
        let f = next(&mut a).await.unwrap();
        if f["type"] == "response.output_text.delta" {
            break;
        }
    }
    assert_eq!(emu.account_stats(&creds.account_id).open_streams, 1);
    assert_eq!(emu.live_streams(), 1);

    // One request in flight per socket.
    send(&mut a, &create(body("too soon"))).await;
    let (status, f) = error(&mut a).await;
    assert_eq!(status, 400);
    assert_eq!(
        f["error"]["code"],
        "conversation_already_has_active_response"
    );

    // The account's other socket is over its limit of open streams.
    let mut b = connect(&emu, &creds).await;
    send(&mut b, &create(body("second"))).await;
    let (status, f) = error(&mut b).await;
    assert_eq!(status, 429);
    assert_eq!(f["error"]["code"], "rate_limit_exceeded");
    assert_eq!(f["headers"]["x-codex-primary-used-percent"], "12.0");
    assert!(f["headers"].get("retry-after").is_none());
    assert_eq!(emu.stats().concurrency_refusals, 1);

    emu.open_gate("g1");
    let rest = turn(&mut a).await;
    completed(&rest);
    assert_eq!(emu.account_stats(&creds.account_id).open_streams, 0);
    send(&mut b, &create(body("second"))).await;
    assert_eq!(text_of(&turn(&mut b).await), "You said: second");

    // A usage limit: 429 usage_limit_reached with the reset time and the limit headers.
    let resets_at = 1_900_000_000;
    emu.set_usage_limit(&creds.account_id, Some(resets_at));
    send(&mut b, &create(body("limited"))).await;
    let (status, f) = error(&mut b).await;
    assert_eq!(status, 429);
    assert_eq!(f["error"]["type"], "usage_limit_reached");
    assert_eq!(f["error"]["resets_at"], resets_at);
    assert_eq!(f["headers"]["x-codex-primary-used-percent"], "100.0");
    assert_eq!(f["headers"]["x-codex-active-limit"], "codex");
}

#[tokio::test]
async fn a_dropped_socket_releases_the_stream_and_a_reset_drops_without_close() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut a = connect(&emu, &creds).await;
    send(&mut a, &create(body("hold EMU:gate:never"))).await;
    loop {
        if next(&mut a).await.unwrap()["type"] == "response.output_text.delta" {
            break;
        }
    }
    assert_eq!(emu.account_stats(&creds.account_id).open_streams, 1);
    drop(a);
    tokio::time::timeout(WAIT, async {
        while emu.account_stats(&creds.account_id).open_streams != 0 || emu.live_streams() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slot is released when the socket drops");

    let mut b = connect(&emu, &creds).await;
    send(&mut b, &create(body("EMU:flakyreset:1"))).await;
    let end = recv(&mut b).await;
    assert!(matches!(end, Some(Err(_))), "no close frame: {end:?}");
}

#[tokio::test]
async fn the_handshake_checks_the_token_and_the_beta_header() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut h = headers(&creds);
    h[0].1 = "Bearer not-a-token".into();
    let (status, v) = refused(&emu, &h).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "token_expired");
    let h: Vec<(String, String)> = headers(&creds)
        .into_iter()
        .filter(|(k, _)| k != "openai-beta")
        .collect();
    let (status, v) = refused(&emu, &h).await;
    assert_eq!(status, 400);
    assert!(v["detail"].as_str().unwrap().contains("OpenAI-Beta"), "{v}");
    assert_eq!(emu.stats().ws_handshakes, 0);
}

#[tokio::test]
async fn a_tls_handshake_serves_wss() {
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;

    let (emu, creds) = emulator(EmulatorConfig {
        tls: true,
        ..EmulatorConfig::default()
    })
    .await;
    assert!(emu.ws_url().starts_with("wss://127.0.0.1:"));
    let ca =
        rustls_pki_types::CertificateDer::from_pem_slice(emu.ca_pem().unwrap().as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(emu.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1".to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut ws, _) = handshake(tls, &emu.ws_url(), &headers(&creds))
        .await
        .unwrap();
    send(&mut ws, &create(body("over tls"))).await;
    let frames = turn(&mut ws).await;
    assert_eq!(frames[0]["type"], "codex.rate_limits");
    assert_eq!(text_of(&frames), "You said: over tls");
    send(&mut ws, &create(body("twice"))).await;
    assert_eq!(text_of(&turn(&mut ws).await), "You said: twice");
    assert_eq!(emu.stats().ws_handshakes, 1);
}

/// The bench's comparison of upstream bytes per turn: the SSE route counts request bodies
/// as they arrived (compressed when zstd), the WebSocket route its frames' text.
#[tokio::test]
async fn request_bytes_are_counted_per_transport() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let http = reqwest::Client::new();
    let plain = body("counted plain").to_string();
    let compressed = zstd::encode_all(body("counted zstd").to_string().as_bytes(), 3).unwrap();
    for (bytes, zstd) in [
        (plain.clone().into_bytes(), false),
        (compressed.clone(), true),
    ] {
        let mut req = http
            .post(format!("{}/codex/responses", emu.base_url()))
            .header("authorization", format!("Bearer {}", creds.access_token))
            .header("chatgpt-account-id", &creds.account_id)
            .header("content-type", "application/json");
        if zstd {
            req = req.header("content-encoding", "zstd");
        }
        let resp = req.body(bytes).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
    }
    let stats = emu.stats();
    assert_eq!(
        stats.responses_body_bytes,
        (plain.len() + compressed.len()) as u64
    );
    assert!(emu.requests().iter().all(|r| !r.websocket()));
    assert_eq!((stats.ws_requests, stats.ws_request_bytes), (0, 0));

    let mut ws = connect(&emu, &creds).await;
    let frame = create(body("counted ws"));
    send(&mut ws, &frame).await;
    completed(&turn(&mut ws).await);
    let stats = emu.stats();
    assert_eq!(stats.ws_request_bytes, frame.to_string().len() as u64);
    assert_eq!(
        stats.responses_body_bytes,
        (plain.len() + compressed.len()) as u64
    );
}

/// The socket is read while a response plays: a ping between paced deltas is answered at
/// once, and the response goes on whole.
#[tokio::test]
async fn a_ping_while_a_response_plays_is_answered_between_its_frames() {
    let (emu, creds) = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, &creds).await;
    send(&mut ws, &create(body("paced EMU:deltas:6 EMU:pace:40"))).await;
    loop {
        if next(&mut ws).await.unwrap()["type"] == "response.output_text.delta" {
            break;
        }
    }
    ws.send(Message::Ping(b"mid".to_vec().into()))
        .await
        .unwrap();
    let mut pong_at = None;
    let mut frames = Vec::new();
    loop {
        match recv(&mut ws).await {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(p.as_ref(), b"mid");
                pong_at = Some(frames.len());
            }
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                let end = f["type"] == "response.completed";
                frames.push(f);
                if end {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let deltas = frames
        .iter()
        .filter(|f| f["type"] == "response.output_text.delta")
        .count();
    let pong_at = pong_at.expect("a pong");
    assert!(
        frames
            .get(pong_at..)
            .unwrap()
            .iter()
            .any(|f| f["type"] == "response.output_text.delta"),
        "the pong came before the last delta: {pong_at} of {frames:#?}"
    );
    assert!(deltas >= 4, "{frames:#?}");
    assert_eq!(emu.live_streams(), 0);
}

/// By default the emulator accepts an offered permessage-deflate and compresses its events:
/// a client without the extension (plain tungstenite) sees RSV1 set. (The round trip with
/// the extension is tested in tests/upstream_ws.rs and the adapter's unit tests.)
#[tokio::test]
async fn an_offered_permessage_deflate_is_accepted_and_events_go_compressed() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let creds = emu.issue_credentials(3600);
    let (mut ws, resp_headers) = connect_with(&emu, &headers(&creds)).await.unwrap();
    let ext = resp_headers
        .iter()
        .find(|(k, _)| k == "sec-websocket-extensions")
        .map(|(_, v)| v.as_str());
    assert_eq!(ext, Some("permessage-deflate"), "{resp_headers:?}");
    // The request goes uncompressed (allowed), the events come compressed.
    send(&mut ws, &create(body("hello there"))).await;
    let got = recv(&mut ws).await;
    assert!(
        matches!(
            got,
            Some(Err(WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::NonZeroReservedBits
            )))
        ),
        "{got:?}"
    );
    let stats = emu.stats();
    assert_eq!(stats.ws_requests, 1);
    assert_eq!(
        stats.ws_request_wire_bytes, stats.ws_request_bytes,
        "sent plain"
    );
}
