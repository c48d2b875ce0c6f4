//! Slow and hostile clients: one read deadline for a request's head and body (with a
//! minimum rate), for HTTP/1.1 and h2; a client that stops reading is dropped after the
//! write stall time and its upstream stream released; the connection limit. (2,000
//! trickling connections are in `tests/tricklers.rs`, a process of their own for its RSS.)
//! Real server + emulator over loopback; waits are for events (a socket closing, a counter
//! reaching its value).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Harness;
use common::raw::{self, End};
use common::{trickle, until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn chat_body(text: &str, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "gpt-5.5",
        "stream": stream,
        "messages": [{"role": "user", "content": text}]
    }))
    .unwrap()
}

fn messages_body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}]
    }))
    .unwrap()
}

#[tokio::test]
async fn a_request_sent_a_byte_at_a_time_gets_408_in_the_protocols_shape_at_the_read_deadline() {
    // The header timeout (30 s) is not what ends these: the request's read deadline is.
    let h = Harness::with(|c| c.request_read_timeout = Duration::from_secs(2)).await;
    for (path, body) in [
        (CHAT, chat_body("hi", false)),
        (MESSAGES, messages_body("hi")),
    ] {
        // A body a byte every 300 ms (it would take a minute).
        let sock = TcpStream::connect(h.server.addr()).await.unwrap();
        let started = Instant::now();
        let (mut rd, mut wr) = sock.into_split();
        let head = raw::head(path, &format!("content-length: {}\r\n", body.len()));
        wr.write_all(head.as_bytes()).await.unwrap();
        let (bytes, end) = tokio::select! {
            r = async {
                let mut out = Vec::new();
                let end = match rd.read_to_end(&mut out).await { Ok(_) => End::Closed, Err(_) => End::Reset };
                (out, end)
            } => r,
            _ = trickle(&mut wr, &body, Duration::from_millis(300)) => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(15)) => panic!("no answer to a body sent a byte at a time"),
        };
        let took = started.elapsed();
        let reply = raw::parse(&bytes, end);
        assert_eq!(reply.status, 408, "{path}: {reply:?}");
        let v = reply.json();
        if path == MESSAGES {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        } else {
            assert_eq!(v["error"]["code"], "request_timeout");
        }
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("did not arrive within 2 s"),
            "{v}"
        );
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
            "answered after {took:?}"
        );
        // A head sent a byte at a time meets the same deadline (not the 30 s header timeout).
        let sock = TcpStream::connect(h.server.addr()).await.unwrap();
        let started = Instant::now();
        let (mut rd, mut wr) = sock.into_split();
        let (bytes, end) = tokio::select! {
            r = async {
                let mut out = Vec::new();
                let end = match rd.read_to_end(&mut out).await { Ok(_) => End::Closed, Err(_) => End::Reset };
                (out, end)
            } => r,
            _ = trickle(&mut wr, head.as_bytes(), Duration::from_millis(300)) => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(15)) => panic!("no answer to a head sent a byte at a time"),
        };
        let reply = raw::parse(&bytes, end);
        assert_eq!(reply.status, 408, "{path}: {reply:?}");
        assert!(started.elapsed() < Duration::from_secs(8));
    }
    // Others were served all along, and still are.
    let r = h
        .post(
            CHAT,
            &serde_json::from_slice::<Value>(&chat_body("ok", false)).unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_large_body_at_a_sane_rate_earns_time_past_the_read_deadline() {
    let h = Harness::with(|c| c.request_read_timeout = Duration::from_secs(1)).await;
    // 48 KiB in 8 KiB parts 300 ms apart: 1.5 s, past the 1 s deadline, at ~27 KiB/s.
    let text = "x".repeat(48 * 1024);
    let body = chat_body(&text, false);
    let mut sock = TcpStream::connect(h.server.addr()).await.unwrap();
    let started = Instant::now();
    let head = raw::head(CHAT, &format!("content-length: {}\r\n", body.len()));
    sock.write_all(head.as_bytes()).await.unwrap();
    for part in body.chunks(8 * 1024) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sock.write_all(part).await.unwrap();
    }
    assert!(started.elapsed() > Duration::from_secs(1));
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let reply = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let reply = raw::parse(&buf, End::Open);
        let len: usize = reply
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(usize::MAX, |v| v.trim().parse().unwrap());
        if reply.body.len() >= len {
            break reply;
        }
    };
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Half a body, then nothing (never ends, never wakes).
struct HalfThenSilence(Option<Bytes>);

impl http_body::Body for HalfThenSilence {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn an_h2_client_whose_body_is_too_slow_gets_408_in_the_protocols_shape() {
    let h = Harness::with(|c| c.request_read_timeout = Duration::from_secs(1)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (path, body) in [
        (CHAT, chat_body("hi", false)),
        (MESSAGES, messages_body("hi")),
    ] {
        let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
        let started = Instant::now();
        let send = h2
            .post(h.url(path))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap(HalfThenSilence(Some(half))))
            .send();
        let r = tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .expect("an answer before the body ends")
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 408);
        assert!(started.elapsed() >= Duration::from_millis(900));
        let v: Value = r.json().await.unwrap();
        if path == MESSAGES {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        } else {
            assert_eq!(v["error"]["code"], "request_timeout");
        }
    }
    // The h2 connection serves on.
    let r = h2
        .post(h.url(CHAT))
        .header("content-type", "application/json")
        .body(chat_body("ok", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_write_stall_and_its_upstream_released() {
    let h = Harness::with(|c| {
        c.write_stall = Duration::from_secs(1);
        c.account_limits.start = 8;
        c.account_limits.ceiling = 8;
    })
    .await;
    // A client with a small receive window asks for ~20 MB and reads none of it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(h.server.addr()).await.unwrap();
    let body = chat_body("EMU:deltas:100000", true);
    let head = raw::head(CHAT, &format!("content-length: {}\r\n", body.len()));
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body).await.unwrap();
    until(
        "the stalled stream is live upstream",
        Duration::from_secs(10),
        || h.emu.live_streams() == 1,
    )
    .await;
    // Every other stream runs on meanwhile.
    let r = h
        .post(
            CHAT,
            &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "EMU:deltas:20"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // The stalled client is dropped, and its upstream stream and account slot released.
    let state = h.server.state();
    until(
        "the stalled client dropped",
        Duration::from_secs(15),
        || state.streams.live() == 0,
    )
    .await;
    until(
        "the upstream stream released",
        Duration::from_secs(5),
        || h.emu.live_streams() == 0,
    )
    .await;
    let v: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(v["live_streams"], 0, "nothing leaks");
    assert_eq!(
        v["accounts"][0]["open"], 0,
        "the account's slot is free: {v}"
    );
    // What it had not read ends short of the end.
    let (bytes, end) = raw::read_to_close(&mut stalled, Duration::from_secs(10)).await;
    assert_ne!(end, End::Open);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"));
    assert!(!text.contains("[DONE]"), "the stalled stream was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_stream_its_client_stops_taking_is_dropped_after_the_write_stall_and_the_others_run_on()
 {
    let h = Harness::with(|c| {
        c.write_stall = Duration::from_secs(1);
        c.account_limits.start = 8;
        c.account_limits.ceiling = 8;
    })
    .await;
    // A 64 KiB stream window: what the client does not take stops the stream soon.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(65_535)
        .build()
        .unwrap();
    let stream = |text: &str| {
        h2.post(h.url(CHAT))
            .header("content-type", "application/json")
            .body(chat_body(text, true))
            .send()
    };
    // A long stream (a delta every millisecond) of which the client takes nothing.
    let mut stalled = stream("EMU:deltas:100000 EMU:pace:1").await.unwrap();
    assert_eq!(stalled.version(), reqwest::Version::HTTP_2);
    assert_eq!(stalled.status(), 200);
    // Another stream on the same connection runs on.
    let r = stream("EMU:deltas:20").await.unwrap();
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // The stalled stream is dropped, and its upstream stream and account slot released.
    let state = h.server.state();
    until(
        "the stalled h2 stream dropped",
        Duration::from_secs(15),
        || state.streams.live() == 0,
    )
    .await;
    until(
        "the upstream stream released",
        Duration::from_secs(5),
        || h.emu.live_streams() == 0,
    )
    .await;
    let v: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(
        v["accounts"][0]["open"], 0,
        "the account's slot is free: {v}"
    );
    // Read now, the stalled stream ends in an error short of its end.
    let mut text = Vec::new();
    let failed = loop {
        match stalled.chunk().await {
            Ok(Some(c)) => text.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        failed,
        "the stalled stream was reset; read {} bytes, ending {:?}",
        text.len(),
        String::from_utf8_lossy(&text[text.len().saturating_sub(300)..])
    );
    assert!(!String::from_utf8_lossy(&text).contains("[DONE]"));
    // The connection serves on.
    let r = stream("EMU:deltas:5").await.unwrap();
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

/// A keep-alive connection that has had one `/health` answered (so the server holds it).
async fn held_connection(addr: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    health_on(&mut sock).await;
    sock
}

/// Sends `GET /health` on `sock` and reads its answer (the connection stays open).
async fn health_on(sock: &mut TcpStream) {
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let reply = raw::parse(&buf, End::Open);
        if let Some(len) = reply
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap())
            && reply.body.len() >= len
        {
            assert_eq!(reply.status, 200);
            return;
        }
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_get_503_and_the_open_ones_keep_working() {
    let h = Harness::with(|c| c.max_connections = 4).await;
    let addr = h.server.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(held_connection(addr).await);
    }
    assert_eq!(h.server.state().connections.load(Ordering::Acquire), 4);
    // The fifth gets a 503 at once and is closed.
    let reply = raw::send(addr, b"", Duration::from_secs(5)).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.has("retry-after: 1"), "{}", reply.head);
    let v = reply.json();
    assert_eq!(v["error"]["code"], "server_is_overloaded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-connections"),
        "{v}"
    );
    assert_eq!(reply.end, End::Closed);
    // The open ones keep working.
    for sock in &mut held {
        health_on(sock).await;
    }
    // One leaves: its place is given back, and a new connection is served.
    drop(held.pop());
    until(
        "the closed connection's place given back",
        Duration::from_secs(5),
        || h.server.state().connections.load(Ordering::Acquire) == 3,
    )
    .await;
    held.push(held_connection(addr).await);
    for sock in &mut held {
        health_on(sock).await;
    }
}
