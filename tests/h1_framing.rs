//! HTTP/1.1 framing as strict as RFC 9112 asks of an origin server: what it forbids is
//! refused with a status in the client's protocol shape (never a silent close), trailers
//! are bounded, and a request pipelined during a stream lets the stream finish before a
//! clean close. Raw bytes over loopback sockets to the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::raw::{self, End};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const WAIT: Duration = Duration::from_secs(10);

/// A valid body for `path` (so that a lenient server would answer 200).
fn body(path: &str) -> Vec<u8> {
    let v = if path == MESSAGES {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    } else {
        json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]})
    };
    serde_json::to_vec(&v).unwrap()
}

/// The error of `reply` in `path`'s protocol shape: its type.
fn error_type(reply: &raw::Reply, path: &str) -> String {
    let v: Value = reply.json();
    if path == MESSAGES {
        assert_eq!(v["type"], "error", "{v}");
        v["error"]["type"].as_str().unwrap().to_owned()
    } else {
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["type"].as_str().unwrap().to_owned()
    }
}

/// The server still answers a normal request.
async fn still_serves(h: &Harness) {
    let r = h
        .post(
            CHAT,
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "ok?"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn framing_rfc_9112_forbids_gets_400_in_each_protocols_shape_then_a_close() {
    let h = Harness::start().await;
    type Case = (&'static str, fn(&str, &[u8]) -> Vec<u8>);
    let cases: &[Case] = &[
        ("a bare LF ends the request line", |p, b| {
            let mut w = format!(
                "POST {p} HTTP/1.1\nHost: localhost\r\ncontent-length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            w.extend_from_slice(b);
            w
        }),
        ("a bare LF ends a header line", |p, b| {
            let mut w = format!(
                "POST {p} HTTP/1.1\r\nHost: localhost\ncontent-length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            w.extend_from_slice(b);
            w
        }),
        ("a bare LF ends the head", |p, b| {
            let mut w = format!(
                "POST {p} HTTP/1.1\r\nHost: localhost\r\ncontent-length: {}\r\n\n",
                b.len()
            )
            .into_bytes();
            w.extend_from_slice(b);
            w
        }),
        ("a bare LF ends a chunk-size line", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked\r\n").into_bytes();
            w.extend_from_slice(format!("{:x}\n", b.len()).as_bytes());
            w.extend_from_slice(b);
            w.extend_from_slice(b"\r\n0\r\n\r\n");
            w
        }),
        ("whitespace after a chunk size", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked\r\n").into_bytes();
            w.extend_from_slice(format!("{:x} \r\n", b.len()).as_bytes());
            w.extend_from_slice(b);
            w.extend_from_slice(b"\r\n0\r\n\r\n");
            w
        }),
        ("whitespace before a chunk size", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked\r\n").into_bytes();
            w.extend_from_slice(format!("\t{:x}\r\n", b.len()).as_bytes());
            w.extend_from_slice(b);
            w.extend_from_slice(b"\r\n0\r\n\r\n");
            w
        }),
        ("a sign before a chunk size", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked\r\n").into_bytes();
            w.extend_from_slice(format!("+{:x}\r\n", b.len()).as_bytes());
            w.extend_from_slice(b);
            w.extend_from_slice(b"\r\n0\r\n\r\n");
            w
        }),
        ("a bare CR in a chunk extension", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked\r\n").into_bytes();
            w.extend_from_slice(format!("{:x};a\rb\r\n", b.len()).as_bytes());
            w.extend_from_slice(b);
            w.extend_from_slice(b"\r\n0\r\n\r\n");
            w
        }),
        ("chunked not last", |p, b| {
            let mut w = raw::head(p, "transfer-encoding: chunked, identity\r\n").into_bytes();
            w.extend_from_slice(&raw::chunked(b));
            w
        }),
        ("chunked given twice", |p, b| {
            let mut w = raw::head(
                p,
                "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
            )
            .into_bytes();
            w.extend_from_slice(&raw::chunked(&raw::chunked(b)));
            w
        }),
        ("no Host", |p, b| {
            let mut w =
                format!("POST {p} HTTP/1.1\r\ncontent-length: {}\r\n\r\n", b.len()).into_bytes();
            w.extend_from_slice(b);
            w
        }),
        ("two Hosts", |p, b| {
            let mut w = raw::head(
                p,
                &format!("Host: localhost\r\ncontent-length: {}\r\n", b.len()),
            )
            .into_bytes();
            w.extend_from_slice(b);
            w
        }),
    ];
    for (what, wire) in cases {
        for path in [CHAT, MESSAGES] {
            let reply = raw::send(h.server.addr(), &wire(path, &body(path)), WAIT).await;
            assert_eq!(reply.status, 400, "{what} ({path}): {reply:?}");
            assert_eq!(error_type(&reply, path), "invalid_request_error", "{what}");
            assert!(reply.has("connection: close"), "{what}: {}", reply.head);
            assert_eq!(reply.end, End::Closed, "{what} ({path})");
        }
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_gets_501_in_each_protocols_shape() {
    let h = Harness::start().await;
    for path in [CHAT, MESSAGES] {
        let mut wire = raw::head(path, "transfer-encoding: gzip, chunked\r\n").into_bytes();
        wire.extend_from_slice(&raw::chunked(&body(path)));
        let reply = raw::send(h.server.addr(), &wire, WAIT).await;
        assert_eq!(reply.status, 501, "{reply:?}");
        let kind = error_type(&reply, path);
        assert_eq!(
            kind,
            if path == MESSAGES {
                "api_error"
            } else {
                "server_error"
            }
        );
        assert!(reply.text().contains("gzip"), "{}", reply.text());
        assert_eq!(reply.end, End::Closed);
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn a_malformed_chunked_body_gets_a_400_response_not_a_silent_close() {
    let h = Harness::start().await;
    for path in [CHAT, MESSAGES] {
        // The chunk's data is not followed by CRLF.
        let b = body(path);
        let mut wire = raw::head(path, "transfer-encoding: chunked\r\n").into_bytes();
        wire.extend_from_slice(format!("{:x}\r\n", b.len()).as_bytes());
        wire.extend_from_slice(&b);
        wire.extend_from_slice(b"XY0\r\n\r\n");
        let reply = raw::send(h.server.addr(), &wire, WAIT).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(error_type(&reply, path), "invalid_request_error");
        assert!(
            reply.text().contains("does not end with CRLF"),
            "{}",
            reply.text()
        );
        assert_eq!(reply.end, End::Closed);
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn chunked_trailers_have_a_byte_cap_and_count_against_the_body_limit() {
    let h = Harness::with(|c| c.max_body_bytes = 4096).await;
    let with_trailers = |path: &str, data: &[u8], trailers: &str| {
        let mut wire = raw::head(path, "transfer-encoding: chunked\r\n").into_bytes();
        wire.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        wire.extend_from_slice(data);
        wire.extend_from_slice(b"\r\n0\r\n");
        wire.extend_from_slice(trailers.as_bytes());
        wire.extend_from_slice(b"\r\n");
        wire
    };
    // A body under the limit with small trailers is served.
    let b = body(CHAT);
    let reply = raw::send(
        h.server.addr(),
        &with_trailers(CHAT, &b, "x-checksum: 1\r\nconnection-hint: no\r\n"),
        WAIT,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    for path in [CHAT, MESSAGES] {
        // Data under the limit, data and trailers over it: 413.
        let mut data = body(path);
        let pad = 4000 - data.len();
        data.splice(
            1..1,
            format!("\"pad\":\"{}\",", "x".repeat(pad - 9)).into_bytes(),
        );
        assert_eq!(data.len(), 4000);
        let trailers = format!("x-pad: {}\r\n", "y".repeat(200));
        let reply = raw::send(
            h.server.addr(),
            &with_trailers(path, &data, &trailers),
            WAIT,
        )
        .await;
        assert_eq!(reply.status, 413, "{reply:?}");
        assert_eq!(
            error_type(&reply, path),
            if path == MESSAGES {
                "request_too_large"
            } else {
                "invalid_request_error"
            }
        );
        assert_eq!(reply.end, End::Closed);
    }
    // Trailers past their own cap (16 KiB): 431, whatever the body limit.
    let h = Harness::start().await;
    for path in [CHAT, MESSAGES] {
        let trailers = format!("x-big: {}\r\n", "z".repeat(20_000));
        let reply = raw::send(
            h.server.addr(),
            &with_trailers(path, &body(path), &trailers),
            WAIT,
        )
        .await;
        assert_eq!(reply.status, 431, "{reply:?}");
        assert_eq!(error_type(&reply, path), "invalid_request_error");
        assert!(reply.text().contains("trailers"), "{}", reply.text());
    }
    still_serves(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_during_a_stream_lets_the_stream_finish_then_the_connection_closes_cleanly()
 {
    let h = Harness::start().await;
    let b = serde_json::to_vec(&json!({
        "model": "gpt-5.5",
        "stream": true,
        "messages": [{"role": "user", "content": "EMU:deltas:40 EMU:pace:10"}]
    }))
    .unwrap();
    let mut wire = raw::head(CHAT, &format!("content-length: {}\r\n", b.len())).into_bytes();
    wire.extend_from_slice(&b);
    let sock = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    let (mut rd, mut wr) = sock.into_split();
    wr.write_all(&wire).await.unwrap();
    // The stream has begun.
    let mut got = vec![0u8; 64 * 1024];
    let n = rd.read(&mut got).await.unwrap();
    got.truncate(n);
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    // Now the client pipelines requests, and keeps sending until it has read the end.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let next = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(400);
        loop {
            tokio::select! {
                w = wr.write_all(&next) => if w.is_err() { break },
                _ = done_rx.changed() => break,
            }
        }
        wr
    });
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => return End::Closed,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(_) => return End::Reset,
            }
        }
    };
    let end = tokio::time::timeout(WAIT, read).await.unwrap_or(End::Open);
    let _ = done_tx.send(true);
    let _wr = writer.await.unwrap();
    let reply = raw::parse(&got, end);
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the stream finished: {}",
        &text[text.len().saturating_sub(200)..]
    );
    // 40 deltas cycle over 8 words: each word 5 times.
    assert_eq!(text.matches("adipiscing").count(), 5, "every delta arrived");
    assert_eq!(
        end,
        End::Closed,
        "a clean close after the response, not a reset"
    );
    // The pipelined requests were not answered.
    assert_eq!(
        String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count(),
        1
    );
    still_serves(&h).await;
}
