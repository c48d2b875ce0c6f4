//! The Responses WebSocket mode for clients (`GET /v1/responses` with Upgrade), end to end:
//! a tokio-tungstenite client, the real server, the emulator over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use codex_as_api::config::Transport;
use common::{Harness, until};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(h: &Harness, path: &str, headers: &[(&str, &str)]) -> Result<Client, WsError> {
    let url = format!("{}{}", h.base.replacen("http://", "ws://", 1), path);
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let addr = h.server.addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
}

async fn send(ws: &mut Client, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text frame (pings and pongs skipped).
async fn next(ws: &mut Client) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => {
                assert!(
                    !t.starts_with("event:") && !t.starts_with("data:"),
                    "no SSE framing on a WebSocket: {t}"
                );
                return serde_json::from_str(&t).expect("every frame is one JSON event");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames up to and including the response's terminal event or a wrapped error.
async fn turn(ws: &mut Client, req: &Value) -> Vec<Value> {
    send(ws, req).await;
    let mut out = Vec::new();
    loop {
        let v = next(ws).await;
        let end = matches!(
            v["type"].as_str(),
            Some("response.completed" | "response.failed" | "response.incomplete" | "error")
        );
        out.push(v);
        if end {
            return out;
        }
    }
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "response.output_text.delta")
        .map(|f| f["delta"].as_str().unwrap_or(""))
        .collect()
}

fn create(input: Value) -> Value {
    json!({"type": "response.create", "model": "gpt-5.5", "input": input, "store": false, "stream": true})
}

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

#[tokio::test]
async fn a_turn_streams_one_event_per_frame_and_the_socket_serves_the_next() {
    let h = Harness::start().await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    let frames = turn(&mut ws, &create(json!([user("hello socket")]))).await;
    assert_eq!(frames[0]["type"], "response.created");
    assert_eq!(frames.last().unwrap()["type"], "response.completed");
    assert_eq!(text_of(&frames), "You said: hello socket");
    let id = frames.last().unwrap()["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("resp_"));
    // The same socket serves another request.
    let again = turn(&mut ws, &create(json!([user("second")]))).await;
    assert_eq!(text_of(&again), "You said: second");
    // Also under /responses and the backend's own path.
    for path in ["/responses", "/backend-api/codex/responses"] {
        let mut other = open(&h, path, &[]).await.unwrap();
        let f = turn(&mut other, &create(json!("plain string input"))).await;
        assert_eq!(text_of(&f), "You said: plain string input", "{path}");
    }
}

#[tokio::test]
async fn previous_response_id_chains_from_what_this_server_kept() {
    // Over SSE the chained turn reaches the backend as the whole conversation.
    let h = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    let first = turn(&mut ws, &create(json!([user("first turn")]))).await;
    let id = first.last().unwrap()["response"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut next_req = create(json!([user("second turn")]));
    next_req["previous_response_id"] = json!(id);
    let second = turn(&mut ws, &next_req).await;
    assert_eq!(second.last().unwrap()["type"], "response.completed");
    let up = h.last_upstream();
    assert!(up.body.get("previous_response_id").is_none());
    let input = up.body["input"].as_array().unwrap();
    let texts: Vec<String> = input
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        texts,
        ["first turn", "You said: first turn", "second turn"],
        "{input:?}"
    );
}

#[tokio::test]
async fn a_warm_up_is_answered_here_and_the_next_turn_chains_from_it() {
    let h = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    let mut warm = create(json!([user("setup")]));
    warm["generate"] = json!(false);
    let before = h.emu.stats().responses_requests;
    let frames = turn(&mut ws, &warm).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["type"], "response.created");
    assert_eq!(frames[1]["type"], "response.completed");
    assert_eq!(frames[1]["response"]["output"], json!([]));
    assert_eq!(
        h.emu.stats().responses_requests,
        before,
        "a warm-up never reaches the backend"
    );
    let id = frames[1]["response"]["id"].as_str().unwrap().to_owned();
    let mut real = create(json!([user("go")]));
    real["previous_response_id"] = json!(id);
    let out = turn(&mut ws, &real).await;
    assert_eq!(text_of(&out), "You said: go");
    let input = h.last_upstream().body["input"].clone();
    assert_eq!(input.as_array().unwrap().len(), 2, "{input}");
    assert_eq!(input[0]["content"][0]["text"], "setup");
}

#[tokio::test]
async fn errors_come_back_wrapped_and_the_socket_stays_usable() {
    let h = Harness::start().await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    // Unknown previous response.
    let mut req = create(json!([user("x")]));
    req["previous_response_id"] = json!("resp_unknown");
    let f = turn(&mut ws, &req).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["type"], "error");
    assert_eq!(f[0]["status"], 400);
    assert_eq!(f[0]["error"]["code"], "previous_response_not_found");
    assert_eq!(f[0]["error"]["param"], "previous_response_id");
    // Not JSON, then a wrong type.
    ws.send(Message::Text("{nope".into())).await.unwrap();
    let e = next(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["status"].as_u64()),
        (Some("error"), Some(400))
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("JSON"));
    send(&mut ws, &json!({"type": "response.cancel"})).await;
    let e = next(&mut ws).await;
    assert_eq!(e["status"], 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response.create")
    );
    // A translation error in the client's shape.
    let f = turn(&mut ws, &create(json!(42))).await;
    assert_eq!(
        (f[0]["type"].as_str(), f[0]["status"].as_u64()),
        (Some("error"), Some(400)),
        "{f:?}"
    );
    assert_eq!(f[0]["error"]["type"], "invalid_request_error");
    assert!(
        f[0]["error"]["message"].as_str().unwrap().contains("input"),
        "{f:?}"
    );
    // An upstream refusal (the usage limit) with its headers.
    h.emu
        .set_usage_limit(&h.emu.account_id(), Some(4_000_000_000));
    let f = turn(&mut ws, &create(json!([user("x")]))).await;
    assert_eq!(f[0]["status"], 429, "{f:?}");
    assert!(f[0]["headers"]["retry-after"].is_string(), "{f:?}");
    h.emu.set_usage_limit(&h.emu.account_id(), None);
    // Still usable.
    let ok = turn(&mut ws, &create(json!([user("after errors")]))).await;
    assert_eq!(text_of(&ok), "You said: after errors");
}

#[tokio::test]
async fn the_upgrade_passes_the_same_guards_as_every_request() {
    let h = Harness::with(|c| c.api_key = Some("sk-local".into())).await;
    match open(&h, "/v1/responses", &[]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401 answer, got {:?}", other.map(|_| ())),
    }
    let mut ws = open(&h, "/v1/responses", &[("authorization", "Bearer sk-local")])
        .await
        .unwrap();
    let f = turn(&mut ws, &create(json!([user("keyed")]))).await;
    assert_eq!(text_of(&f), "You said: keyed");
    // A web page of a foreign origin cannot open a socket (browsers do not apply CORS to
    // WebSockets, so this check is the only one).
    match open(
        &h,
        "/v1/responses",
        &[
            ("authorization", "Bearer sk-local"),
            ("origin", "https://evil.example"),
        ],
    )
    .await
    {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403 answer, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_drops_its_upstream_request() {
    let h = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    send(
        &mut ws,
        &create(json!([user("EMU:gate:hold tell me more")])),
    )
    .await;
    // Output began: the upstream stream is live.
    loop {
        let v = next(&mut ws).await;
        if v["type"] == "response.output_text.delta" {
            break;
        }
    }
    assert_eq!(h.emu.live_streams(), 1);
    drop(ws);
    until(
        "the upstream stream to be dropped",
        Duration::from_secs(10),
        || h.emu.live_streams() == 0,
    )
    .await;
    h.emu.open_gate("hold");
}

#[tokio::test]
async fn a_second_request_while_one_streams_is_refused_and_the_first_finishes() {
    let h = Harness::start().await;
    let mut ws = open(&h, "/v1/responses", &[]).await.unwrap();
    send(&mut ws, &create(json!([user("EMU:gate:second the first")]))).await;
    loop {
        let v = next(&mut ws).await;
        if v["type"] == "response.output_text.delta" {
            break;
        }
    }
    send(&mut ws, &create(json!([user("too early")]))).await;
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["status"], 400);
    assert_eq!(e["error"]["code"], "response_in_progress");
    h.emu.open_gate("second");
    let mut last = Value::Null;
    while last["type"] != "response.completed" {
        last = next(&mut ws).await;
    }
}
