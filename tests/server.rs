//! Server-level behaviour: health, guards, limits, TLS upstream, auth through the proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use codex_as_api::emulator::EmulatorConfig;
use common::{Harness, error_message};
use serde_json::{Value, json};

fn user(text: &str) -> Value {
    json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn health_reports_auth_model_and_config() {
    let h = Harness::start().await;
    let v: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["auth_available"], true);
    assert_eq!(v["model"], "gpt-5.5");
    assert_eq!(v["context_window"], 272000);
    assert!(
        v["codex_config_path"]
            .as_str()
            .unwrap()
            .ends_with("config.toml")
    );
    assert!(v["auto_compact_token_limit"].as_u64().unwrap() > 0);
    assert_eq!(v["live_streams"], 0);
}

#[tokio::test]
async fn api_key_is_required_everywhere_but_health() {
    let h = Harness::with(|c| c.api_key = Some("sekret".into())).await;
    assert_eq!(h.get("/health").await.status(), 200);
    let r = h.post("/v1/chat/completions", &user("hi")).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let r = h
        .post_with(
            "/v1/chat/completions",
            &user("hi"),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = h
        .post_with(
            "/v1/chat/completions",
            &user("hi"),
            &[("authorization", "Bearer sekret")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = h.post_with("/v1/messages", &json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}), &[("x-api-key", "nope")]).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn foreign_host_headers_are_refused_on_loopback() {
    let h = Harness::start().await;
    let r = h
        .get_with("/v1/models", &[("host", "evil.example:18080")])
        .await;
    assert_eq!(r.status(), 403);
    let r = h
        .get_with("/v1/models", &[("host", "localhost:18080")])
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = Harness::with(|c| c.max_body_bytes = 1024).await;
    let big = "x".repeat(4096);
    let r = h.post("/v1/chat/completions", &user(&big)).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "request_too_large");
    assert_eq!(
        h.post("/v1/chat/completions", &user("small"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn concurrent_stream_limit_answers_overloaded_in_each_protocol() {
    let h = Harness::with(|c| c.max_concurrent_streams = 1).await;
    let slow = h.http.post(h.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "EMU:gate:slow"}]}))
        .send();
    let slow = tokio::spawn(slow);
    // Wait for the event: the first stream holds the one slot.
    while h.server.state().streams.live() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = h.post("/v1/chat/completions", &user("second")).await;
    assert_eq!(r.status(), 503);
    let r = h.post("/v1/messages", &json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(r.status(), 529);
    h.emu.open_gate("slow");
    let body = slow.await.unwrap().unwrap().text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn models_list_in_both_shapes() {
    let h = Harness::start().await;
    let v: Value = h.get("/v1/models").await.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-5.5")
    );
    let v: Value = h
        .get_with("/v1/models", &[("anthropic-version", "2023-06-01")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["has_more"], false);
    assert!(v["first_id"].is_string());
    assert_eq!(v["data"][0]["type"], "model");
}

#[tokio::test]
async fn upstream_tls_works_through_rustls_with_the_ca_file() {
    let cfg = EmulatorConfig {
        tls: true,
        ..EmulatorConfig::default()
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.pem");
    let ca_for_closure = ca_path.clone();
    // The CA is only known after the emulator starts: write it before the server reads it.
    let emu = codex_as_api::emulator::Emulator::start(cfg).await.unwrap();
    std::fs::write(&ca_path, emu.ca_pem().unwrap()).unwrap();
    assert!(emu.base_url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    emu.issue_credentials(3600).write_auth_json(&auth).unwrap();
    let mut config = codex_as_api::config::Config::for_tests(&emu.base_url(), auth.clone());
    config.ca_file = Some(ca_for_closure);
    config.token_url = emu.token_url();
    let server = codex_as_api::Server::bind(config).await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&user("over tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: over tls");
    // Without the CA the handshake fails: a clear 502.
    let config = codex_as_api::config::Config::for_tests(&emu.base_url(), auth);
    let server = codex_as_api::Server::bind(config).await.unwrap();
    let r = http
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&user("no ca"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert!(
        error_message(&e).contains("cannot reach the upstream"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_and_50_concurrent_requests_make_one_token_call() {
    let h = Harness::build(EmulatorConfig::default(), -30, |_| {}).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = h.http.clone();
        let url = h.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&user(&format!("hello {i}")))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.emu.stats().token_calls, 1);
    // The rotated refresh token was saved.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(h.auth_path()).unwrap()).unwrap();
    assert_ne!(
        saved["tokens"]["refresh_token"],
        json!(h.creds.refresh_token)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.auth_path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn upstream_401_reloads_then_refreshes_then_succeeds() {
    let h = Harness::start().await;
    assert_eq!(
        h.post("/v1/chat/completions", &user("warm")).await.status(),
        200
    );
    h.emu.revoke_access_tokens();
    let r = h.post("/v1/chat/completions", &user("after revoke")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.emu.stats().token_calls,
        1,
        "one refresh after the reload did not help"
    );
    // Another process refreshed the file: a reload alone recovers, no token call.
    h.emu.revoke_access_tokens();
    let fresh = h.emu.issue_credentials(3600);
    let mut auth: Value =
        serde_json::from_str(&std::fs::read_to_string(h.auth_path()).unwrap()).unwrap();
    auth["tokens"]["access_token"] = json!(fresh.access_token);
    auth["tokens"]["refresh_token"] = json!(fresh.refresh_token);
    std::fs::write(h.auth_path(), serde_json::to_vec_pretty(&auth).unwrap()).unwrap();
    let r = h
        .post("/v1/chat/completions", &user("after external refresh"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emu.stats().token_calls, 1);
}

#[tokio::test]
async fn client_disconnect_drops_the_stream_and_frees_the_slot() {
    let h = Harness::start().await;
    let resp = h.http.post(h.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "EMU:stall:5000"}]}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(v["live_streams"], 1);
    drop(resp);
    let mut live = 1;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let v: Value = h.get("/health").await.json().await.unwrap();
        live = v["live_streams"].as_u64().unwrap();
        if live == 0 {
            break;
        }
    }
    assert_eq!(
        live, 0,
        "the live stream count returns to 0 within 1 s of the client leaving"
    );
}

#[tokio::test]
async fn non_loopback_bind_without_key_refuses_to_start() {
    let mut config = codex_as_api::config::Config::for_tests(
        "http://127.0.0.1:9",
        "/nonexistent/auth.json".into(),
    );
    config.host = "0.0.0.0".parse().unwrap();
    let err = codex_as_api::Server::bind(config.clone())
        .await
        .err()
        .unwrap();
    assert!(
        err.message.contains("CODEX_AS_API_API_KEY"),
        "{}",
        err.message
    );
    config.api_key = Some("k".into());
    let s = codex_as_api::Server::bind(config).await.unwrap();
    s.shutdown().await;
}

/// One raw HTTP/1.1 connection: `Expect: 100-continue` with a chunked body, then a
/// pipelined HEAD and a GET with `Connection: close`, all answered in order.
#[tokio::test]
async fn keep_alive_chunked_bodies_continue_head_and_pipelining_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let body = serde_json::to_vec(&user("hi")).unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    let mut wire = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in [a, b] {
        wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        wire.extend_from_slice(part);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire.extend_from_slice(b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wire.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut sock = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    sock.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut got))
        .await
        .expect("the server closed the connection after `Connection: close`")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text}"
    );
    assert!(text.contains("\"chat.completion\""), "{text}");
    // HEAD (the router answers 404: only GET serves /health): a length, no body; the GET's
    // body is the only health document.
    let (_, head_resp) = text.split_once("HTTP/1.1 404 Not Found\r\n").expect(&text);
    let (head_resp, get) = head_resp.split_once("HTTP/1.1 200 OK\r\n").expect(&text);
    let head_resp = head_resp.to_ascii_lowercase();
    assert!(head_resp.contains("content-length: "), "{text}");
    assert!(head_resp.ends_with("\r\n\r\n"), "{text}");
    assert!(
        get.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(text.matches("\"status\":\"ok\"").count(), 1, "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 4, "{text}");
}

/// Clients that stop reading must not break or stall the other streams multiplexed on the
/// shared h2 (TLS) upstream connection. Each stalled stream leaves thousands of small DATA
/// frames buffered in the proxy; with hyper's default windows (5 MB for the connection) a
/// few such streams used up the connection window (every stream stalled) or h2's budget for
/// buffered small frames (GOAWAY `too_many_data_frames`: every stream on it failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_never_break_other_streams_on_the_shared_h2_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (emu, mut config) = common::tls_emulator(EmulatorConfig::default(), dir.path(), 3600).await;
    // Room for every stream at once: this is about the shared h2 connection, not about an
    // account's window (where stalled clients would hold the slots and the rest queue).
    config.account_limits.start = 64;
    config.account_limits.ceiling = 64;
    config.upstream_transport = codex_as_api::config::Transport::Sse;
    let server = codex_as_api::Server::bind(config).await.unwrap();
    let addr = server.addr();

    // Stalled clients: a tiny receive buffer, a long stream of one HTTP chunk per event,
    // and nothing read until the end.
    const STALLED: usize = 6;
    const DELTAS: usize = 30_000;
    let body = json!({"model": "gpt-5.5", "stream": true,
        "messages": [{"role": "user", "content": format!("EMU:deltas:{DELTAS} EMU:perevent")}]})
    .to_string();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // Wait until the upstream has filled every stalled stream's buffers in the proxy: at
    // least a full 1 MiB stream window each, more than hyper's old 5 MB connection window.
    let filled = (STALLED as u64) << 20;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while emu.stats().sse_bytes_sent < filled {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream sent only {} bytes",
            emu.stats().sse_bytes_sent
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Other streams on the same upstream connection still run to the end.
    let http = reqwest::Client::new();
    for i in 0..3 {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            http.post(format!("http://{addr}/v1/chat/completions"))
                .json(&json!({"model": "gpt-5.5", "stream": true,
                    "messages": [{"role": "user", "content": "EMU:deltas:200 EMU:perevent"}]}))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} stalled behind the stalled clients"))
        .unwrap();
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(20), r.text())
            .await
            .unwrap_or_else(|_| panic!("stream {i} stalled behind the stalled clients"))
            .unwrap();
        assert!(!text.contains("\"error\""), "stream {i}: {text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "stream {i}");
    }

    // The stalled streams lost nothing either: every delta, no error, a clean end.
    for (i, mut s) in stalled.into_iter().enumerate() {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
            .await
            .unwrap_or_else(|_| panic!("stalled stream {i} never finished"))
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("\"error\""),
            "stalled stream {i} failed: {}",
            &text[text.len().saturating_sub(600)..]
        );
        let deltas = text.matches("\"content\":\"").count();
        // One role chunk with empty content, then one chunk per delta.
        assert_eq!(deltas, DELTAS + 1, "stalled stream {i}");
        // Raw HTTP/1.1: the last event, then the chunked body's terminator.
        assert!(text.contains("data: [DONE]\n\n"), "stalled stream {i}");
        assert!(text.ends_with("\r\n0\r\n\r\n"), "stalled stream {i}");
    }
}

/// HTTP/1.1 framing edge cases the `h1_requests` / `h1_chunked` fuzz targets found, on raw
/// connections: empty lines before a request line (sent on their own first) are served; a
/// head with bare LF line ends, a signed Content-Length, a signed chunk size and a
/// chunk-size line over the limit (its end in the same read) are each a 400, then a close.
#[tokio::test]
async fn h1_framing_edge_cases_found_by_fuzzing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let exchange = async |parts: &[&[u8]]| {
        let mut sock = tokio::net::TcpStream::connect(h.server.addr())
            .await
            .unwrap();
        for part in parts {
            sock.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut got))
            .await
            .expect("the server kept the connection open")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    };
    let get = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let t = exchange(&[b"\r\n\r\n", get]).await;
    assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
    let t = exchange(&[b"GET /health HTTP/1.1\nHost: localhost\nConnection: close\n\r\n"]).await;
    assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
    assert!(t.contains("bare LF"), "{t}");

    let post = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\ncontent-type: application/json\r\n";
    let body = serde_json::to_string(&user("hi")).unwrap();
    let t = exchange(&[format!("{post}Content-Length: +{}\r\n\r\n{body}", body.len()).as_bytes()])
        .await;
    assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
    let chunked = |size_line: String| {
        format!("{post}Transfer-Encoding: chunked\r\n\r\n{size_line}\r\n{body}\r\n0\r\n\r\n")
    };
    let t = exchange(&[chunked(format!("+{:x}", body.len())).as_bytes()]).await;
    assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
    assert!(t.contains("chunk size is not hex digits"), "{t}");
    let long = format!("{:x};ext={}", body.len(), "x".repeat(1100));
    let t = exchange(&[chunked(long).as_bytes()]).await;
    assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
    assert!(t.contains("chunk-size line is too long"), "{t}");
}
