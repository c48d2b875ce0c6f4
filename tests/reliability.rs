//! Reliability: the bad-input matrix (every bad input gets a 4xx in the protocol's error
//! shape with a clear message, and the server keeps serving others), the upstream faults
//! survived, retries, cancellation, refresh under stress, and CORS. Real server + emulator
//! over loopback; the README's "Reliability" tables list these tests by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use codex_as_api::emulator::EmulatorConfig;
use common::{Harness, error_message, frames};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn chat(content: Value) -> Value {
    json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": content}]})
}

fn msg(content: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": content}]})
}

/// Sends raw bytes as the body of a POST.
async fn post_raw(h: &Harness, path: &str, body: Vec<u8>) -> reqwest::Response {
    h.http
        .post(h.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Asserts an OpenAI-shaped error with `status` and returns its message.
async fn openai_error(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["type"].is_string(), "{e}");
    assert!(e["error"].get("code").is_some(), "{e}");
    let m = error_message(&e).to_owned();
    assert!(m.len() > 10, "a clear message: {m}");
    m
}

/// Asserts an Anthropic-shaped error with `status` and returns its message.
async fn anthropic_error(r: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(r.status(), status);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error", "{e}");
    let m = error_message(&e).to_owned();
    assert!(m.len() > 10, "a clear message: {m}");
    (e["error"]["type"].as_str().unwrap().to_owned(), m)
}

/// The server still answers real work in both protocols.
async fn still_serves(h: &Harness) {
    let r = h.post(CHAT, &chat(json!("still there?"))).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "You said: still there?"
    );
    let r = h.post(MESSAGES, &msg(json!("and here?"))).await;
    assert_eq!(r.status(), 200);
}

/// Runs `bad` and a good request concurrently; both must get their own answer.
async fn bad_input_while_serving<F, Fut>(h: &Harness, bad: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let good = async {
        let r = h.post(CHAT, &chat(json!("meanwhile"))).await;
        assert_eq!(r.status(), 200);
    };
    tokio::join!(bad(), good);
    still_serves(h).await;
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_gets_400_in_each_protocols_shape() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(post_raw(&h, CHAT, b"{\"model\": \"gpt".to_vec()).await, 400).await;
        assert!(m.contains("not valid JSON"), "{m}");
        let (t, m) =
            anthropic_error(post_raw(&h, MESSAGES, b"{\"model\":,}".to_vec()).await, 400).await;
        assert_eq!(t, "invalid_request_error");
        assert!(m.contains("not valid JSON"), "{m}");
    })
    .await;
    assert_eq!(h.emu.stats().responses_requests, 3, "only the good ones");
}

#[tokio::test]
async fn wrong_types_get_400_naming_the_field() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(
            h.post(CHAT, &json!({"model": "gpt-5.5", "messages": "hello"}))
                .await,
            400,
        )
        .await;
        assert!(m.contains("messages"), "{m}");
        let m = openai_error(
            h.post(
                CHAT,
                &json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("model"), "{m}");
        let (_, m) = anthropic_error(
            h.post(
                MESSAGES,
                &json!({"model": "claude-x", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("stream"), "{m}");
        let (_, m) =
            anthropic_error(h.post(MESSAGES, &msg(json!(42))).await, 400).await;
        assert!(m.contains("content"), "{m}");
    })
    .await;
}

#[tokio::test]
async fn missing_required_fields_get_400_naming_the_field() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(h.post(CHAT, &json!({"model": "gpt-5.5"})).await, 400).await;
        assert!(m.contains("messages"), "{m}");
        let m = openai_error(
            h.post(
                CHAT,
                &json!({"messages": [{"role": "user", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("model"), "{m}");
        let (_, m) = anthropic_error(
            h.post(MESSAGES, &json!({"model": "claude-x", "max_tokens": 5}))
                .await,
            400,
        )
        .await;
        assert!(m.contains("messages"), "{m}");
        let (_, m) = anthropic_error(
            h.post(
                MESSAGES,
                &json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("model"), "{m}");
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_gets_400() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let mut body = br#"{"model":"gpt-5.5","messages":[{"role":"user","content":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
        body.extend_from_slice(br#""}]}"#);
        let m = openai_error(post_raw(&h, CHAT, body.clone()).await, 400).await;
        assert!(m.contains("UTF-8"), "{m}");
        let (_, m) = anthropic_error(post_raw(&h, MESSAGES, body).await, 400).await;
        assert!(m.contains("UTF-8"), "{m}");
    })
    .await;
}

#[tokio::test]
async fn nesting_deeper_than_the_default_limit_of_128_gets_400() {
    let h = Harness::start().await;
    let deep = |depth: usize| {
        let mut s = String::from(
            r#"{"model":"gpt-5.5","messages":[{"role":"user","content":"x"}],"metadata":"#,
        );
        s.push_str(&"[".repeat(depth));
        s.push_str(&"]".repeat(depth));
        s.push('}');
        s.into_bytes()
    };
    bad_input_while_serving(&h, || async {
        let m = openai_error(post_raw(&h, CHAT, deep(200)).await, 400).await;
        assert!(m.contains("nested deeper than the limit of 128"), "{m}");
        let (_, m) = anthropic_error(post_raw(&h, MESSAGES, deep(10_000)).await, 400).await;
        assert!(m.contains("128"), "{m}");
    })
    .await;
    // Under the limit the same shape is fine (the depth check is not off by a mile).
    let r = post_raw(&h, CHAT, deep(100)).await;
    assert_ne!(r.status(), 400, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn body_over_the_default_32_mib_limit_gets_413() {
    let h = Harness::start().await;
    let big = "x".repeat(33 * 1024 * 1024);
    bad_input_while_serving(&h, || async {
        let m = openai_error(h.post(CHAT, &chat(json!(big))).await, 413).await;
        assert!(m.contains("33554432"), "{m}");
        let (t, _) = anthropic_error(h.post(MESSAGES, &msg(json!(big))).await, 413).await;
        assert_eq!(t, "request_too_large");
    })
    .await;
    // Without a Content-Length (chunked), the limit is enforced while reading.
    let mut sock = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    sock.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..40 {
        let framed = [b"100000\r\n".as_slice(), &chunk, b"\r\n"].concat();
        if sock.write_all(&framed).await.is_err() {
            break;
        }
    }
    let (status, body) = read_response(&mut sock).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");
    still_serves(&h).await;
}

/// Reads one HTTP/1.1 response (until the server closes or 5 s pass): status and body text.
async fn read_response(sock: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 8192];
        loop {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    && buf.len() >= end + 4 + len
                {
                    break;
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn invalid_base64_or_unsupported_image_data_gets_400() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let image = |url: &str| chat(json!([{"type": "image_url", "image_url": {"url": url}}]));
        let m = openai_error(
            h.post(CHAT, &image("data:image/png;base64,***not base64***"))
                .await,
            400,
        )
        .await;
        assert!(m.contains("base64"), "{m}");
        let m = openai_error(
            h.post(CHAT, &image("data:image/tiff;base64,AAAA")).await,
            400,
        )
        .await;
        assert!(m.contains("image"), "{m}");
        let m = openai_error(h.post(CHAT, &image("ftp://example.com/x.png")).await, 400).await;
        assert!(m.contains("URL"), "{m}");
        let block = |media: &str, data: &str| {
            msg(json!([{"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}]))
        };
        let (t, m) =
            anthropic_error(h.post(MESSAGES, &block("image/png", "%%%%")).await, 400).await;
        assert_eq!(t, "invalid_request_error");
        assert!(m.contains("base64"), "{m}");
        let (_, m) =
            anthropic_error(h.post(MESSAGES, &block("image/bmp", "AAAA")).await, 400).await;
        assert!(m.contains("image/bmp") || m.contains("media"), "{m}");
    })
    .await;
    assert_eq!(
        h.emu.stats().responses_requests,
        3,
        "rejected before upstream"
    );
}

#[tokio::test]
async fn bad_input_on_the_responses_endpoint_gets_400_in_openai_shape() {
    const RESPONSES: &str = "/v1/responses";
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(
            post_raw(&h, RESPONSES, b"{\"model\": \"gpt".to_vec()).await,
            400,
        )
        .await;
        assert!(m.contains("not valid JSON"), "{m}");
        let m = openai_error(
            post_raw(
                &h,
                RESPONSES,
                b"{\"model\":\"gpt-5.5\",\"input\":\"\xff\"}".to_vec(),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("UTF-8"), "{m}");
        let deep = format!(
            "{{\"model\":\"gpt-5.5\",\"input\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let m = openai_error(post_raw(&h, RESPONSES, deep.into_bytes()).await, 400).await;
        assert!(m.contains("nested deeper than the limit of 128"), "{m}");
        for (body, field) in [
            (json!({"model": 5, "input": "hi"}), "model"),
            (json!({"model": "gpt-5.5", "input": 42}), "input"),
            (
                json!({"model": "gpt-5.5", "input": "hi", "stream": "yes"}),
                "stream",
            ),
            (json!({"input": "hi"}), "model"),
            (json!({"model": "gpt-5.5"}), "input"),
            (
                json!({"model": "gpt-5.5", "input": [{"role": "wizard", "content": "x"}]}),
                "wizard",
            ),
        ] {
            let m = openai_error(h.post(RESPONSES, &body).await, 400).await;
            assert!(m.contains(field), "{body}: {m}");
        }
    })
    .await;
    assert_eq!(h.emu.stats().responses_requests, 3, "only the good ones");
}

#[tokio::test]
async fn unknown_roles_get_400_naming_the_role() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(
            h.post(
                CHAT,
                &json!({"model": "gpt-5.5", "messages": [{"role": "wizard", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("wizard"), "{m}");
        let (_, m) = anthropic_error(
            h.post(
                MESSAGES,
                &json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}),
            )
            .await,
            400,
        )
        .await;
        assert!(m.contains("wizard"), "{m}");
    })
    .await;
}

#[tokio::test]
async fn unknown_endpoint_gets_404_in_the_right_shape() {
    let h = Harness::start().await;
    bad_input_while_serving(&h, || async {
        let m = openai_error(h.get("/v1/nothing-here").await, 404).await;
        assert!(m.contains("/v1/nothing-here"), "{m}");
        let r = h
            .http
            .post(h.url("/v1/messages/nothing"))
            .header("anthropic-version", "2023-06-01")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (t, m) = anthropic_error(r, 404).await;
        assert_eq!(t, "not_found_error");
        assert!(m.contains("/v1/messages/nothing"), "{m}");
        // The wrong method on a real endpoint is a 404 too, naming method and path.
        let m = openai_error(h.get(CHAT).await, 404).await;
        assert!(m.contains("GET /v1/chat/completions"), "{m}");
    })
    .await;
}

#[tokio::test]
async fn huge_header_gets_431_in_each_protocols_shape() {
    let h = Harness::start().await;
    let huge = "a".repeat(300 * 1024);
    // First request of a fresh connection (checked before hyper parses it) and a request
    // on a warm keep-alive connection (checked by the router).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(h.get("/health").await.status(), 200);
    for client in [&fresh, &h.http] {
        bad_input_while_serving(&h, || async {
            let r = client
                .post(h.url(CHAT))
                .header("x-padding", huge.as_str())
                .json(&chat(json!("hi")))
                .send()
                .await
                .unwrap();
            let m = openai_error(r, 431).await;
            assert!(m.contains("headers are larger than the limit"), "{m}");
            let r = client
                .post(h.url(MESSAGES))
                .header("x-padding", huge.as_str())
                .json(&msg(json!("hi")))
                .send()
                .await
                .unwrap();
            let (t, _) = anthropic_error(r, 431).await;
            assert_eq!(t, "invalid_request_error");
        })
        .await;
    }
}

#[tokio::test]
async fn slow_client_that_never_finishes_its_headers_gets_408_after_the_header_timeout() {
    let h = Harness::with(|c| c.header_timeout = Duration::from_millis(600)).await;
    let mut slow = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nx-a")
        .await
        .unwrap();
    let mut slow_openai = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    slow_openai
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // Others are served while the slow clients hang.
    still_serves(&h).await;
    let started = Instant::now();
    let (status, body) = read_response(&mut slow).await;
    assert_eq!(status, 408, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["type"], "error");
    assert!(error_message(&e).contains("did not arrive"), "{e}");
    let (status, body) = read_response(&mut slow_openai).await;
    assert_eq!(status, 408, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serves(&h).await;
}

#[tokio::test]
async fn no_cors_headers_unless_an_allow_list_is_configured() {
    let h = Harness::start().await;
    // A client that says nothing about a web page (SDKs, curl) gets no CORS headers.
    let r = h.post(CHAT, &chat(json!("hi"))).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
    // A page's preflight is refused, with no grant of any kind.
    let r = h
        .http
        .request(reqwest::Method::OPTIONS, h.url(CHAT))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
}

#[tokio::test]
async fn allow_listed_origins_get_cors_headers_and_preflights_others_are_refused() {
    let h = Harness::with(|c| {
        c.cors_origins = vec!["http://localhost:3000".into(), "null".into()];
        c.api_key = Some("k-cors".into());
    })
    .await;
    // A preflight carries no credentials and still succeeds.
    let r = h
        .http
        .request(reqwest::Method::OPTIONS, h.url(CHAT))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(r.headers()["access-control-allow-methods"], "POST, OPTIONS");
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "authorization, content-type"
    );
    // Not asked for, no Private Network Access grant.
    assert!(
        r.headers()
            .get("access-control-allow-private-network")
            .is_none()
    );
    let r = h
        .post_with(
            CHAT,
            &chat(json!("hi")),
            &[
                ("origin", "http://localhost:3000"),
                ("sec-fetch-site", "cross-site"),
                ("authorization", "Bearer k-cors"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    // A sandboxed page (`Origin: null`) passes only because `null` is listed.
    let r = h
        .post_with(
            CHAT,
            &chat(json!("hi")),
            &[("origin", "null"), ("authorization", "Bearer k-cors")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "null");
    // The key is still required for the real request.
    let r = h
        .post_with(
            CHAT,
            &chat(json!("hi")),
            &[("origin", "http://localhost:3000")],
        )
        .await;
    assert_eq!(r.status(), 401);
    // Another origin is refused even with the key, and gets no CORS headers.
    let r = h
        .post_with(
            CHAT,
            &chat(json!("hi")),
            &[
                ("origin", "https://evil.example"),
                ("authorization", "Bearer k-cors"),
            ],
        )
        .await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let m = openai_error(r, 403).await;
    assert!(m.contains("https://evil.example"), "{m}");
}

/// Every route of the server, with a method it answers (the path's other methods are found
/// by the preflight test).
const ROUTES: [(&str, &str); 24] = [
    ("GET", "/health"),
    ("GET", "/"),
    ("GET", "/api/hello"),
    ("HEAD", "/api/hello"),
    ("GET", "/v1/models"),
    ("GET", "/models"),
    ("GET", "/v1/models/gpt-5.5"),
    ("GET", "/usage"),
    ("GET", "/v1/usage"),
    ("POST", "/v1/images/generations"),
    ("POST", "/v1/inspect"),
    ("POST", "/v1/compact"),
    ("POST", "/v1/responses/compact"),
    ("POST", "/v1/messages/compact"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/responses"),
    ("GET", "/v1/responses/resp_1"),
    ("DELETE", "/v1/responses/resp_1"),
    ("POST", "/v1/messages"),
    ("POST", "/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/no/such/route"),
];

#[tokio::test]
async fn web_pages_from_origins_not_on_the_allow_list_get_403_in_shape_before_any_work() {
    let h = Harness::start().await;
    // What any page can do without a preflight: a `no-cors` text/plain POST.
    let simple = |path: &str, body: Value| {
        h.http
            .post(h.url(path))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "no-cors")
            .body(body.to_string())
            .send()
    };
    let m = openai_error(simple(CHAT, chat(json!("hi"))).await.unwrap(), 403).await;
    assert!(m.contains("--cors-allow-origin"), "{m}");
    let (t, m) = anthropic_error(simple(MESSAGES, msg(json!("hi"))).await.unwrap(), 403).await;
    assert_eq!(t, "permission_error");
    assert!(m.contains("https://evil.example"), "{m}");
    // Every route, every way a page's origin shows: a foreign origin, a sandboxed page
    // (`null`), and requests that carry no Origin but say they come from another site.
    for origin in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")],
        &[
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "same-site"),
        ],
        &[("sec-fetch-site", "cross-site")],
        &[
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "no-cors"),
        ],
    ] {
        for (method, path) in ROUTES {
            let mut rb = h
                .http
                .request(method.parse().unwrap(), h.url(path))
                .body(chat(json!("hi")).to_string());
            for (k, v) in origin {
                rb = rb.header(*k, *v);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 403, "{method} {path} {origin:?}");
        }
    }
    assert!(h.emu.requests().is_empty(), "nothing went upstream");
    assert_eq!(h.emu.stats().images_requests, 0);
    // Refused before the body is read: a client waiting for `100 Continue` never gets it.
    let mut sock = tokio::net::TcpStream::connect(h.server.addr())
        .await
        .unwrap();
    sock.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = read_response(&mut sock).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_error"), "{body}");
    // Browsers vouching that no other site is involved, and clients that say nothing, pass.
    let own = h.base.clone();
    for headers in [
        &[("sec-fetch-site", "same-origin"), ("origin", own.as_str())][..],
        &[("sec-fetch-site", "none")],
        &[],
    ] {
        let r = h.post_with(CHAT, &chat(json!("hi")), headers).await;
        assert_eq!(r.status(), 200, "{headers:?}");
        let r = h.get_with("/health", headers).await;
        assert_eq!(r.status(), 200, "{headers:?}");
    }
    still_serves(&h).await;
}

#[tokio::test]
async fn websocket_upgrade_from_an_origin_not_on_the_allow_list_is_refused_with_403() {
    let h = Harness::start().await;
    for path in ["/v1/responses", "/responses", "/v1/chat/completions"] {
        let mut sock = tokio::net::TcpStream::connect(h.server.addr())
            .await
            .unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://evil.example\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut sock).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("https://evil.example"), "{body}");
    }
    assert!(h.emu.requests().is_empty());
}

#[tokio::test]
async fn a_wildcard_allow_list_without_an_api_key_refuses_to_start_saying_why() {
    let emu = codex_as_api::emulator::Emulator::start(EmulatorConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut c = codex_as_api::config::Config::for_tests(&emu.base_url(), dir.path().join("a"));
    c.cors_origins = vec!["http://localhost:3000".into(), "*".into()];
    let err = match codex_as_api::Server::bind(c.clone()).await {
        Ok(_) => panic!("started with `*` and no key"),
        Err(e) => e.message,
    };
    assert!(err.contains("--cors-allow-origin"), "{err}");
    assert!(err.contains("API key"), "{err}");
    assert!(err.contains("every web page"), "{err}");
    // With a key it starts, and the key stands between any page and the subscription.
    let h = Harness::with(|c| {
        c.cors_origins = vec!["*".into()];
        c.api_key = Some("k-any".into());
    })
    .await;
    for headers in [
        &[("origin", "https://any.example")][..],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
    ] {
        let mut with_key = headers.to_vec();
        with_key.push(("authorization", "Bearer k-any"));
        let r = h.post_with(CHAT, &chat(json!("hi")), &with_key).await;
        assert_eq!(r.status(), 200, "{headers:?}");
        let r = h.post_with(CHAT, &chat(json!("hi")), headers).await;
        assert_eq!(r.status(), 401, "{headers:?}");
    }
}

#[tokio::test]
async fn preflights_list_every_method_of_the_route_and_grant_private_network_access_only_to_listed_origins()
 {
    let h = Harness::with(|c| {
        c.cors_origins = vec!["http://localhost:3000".into()];
        c.api_key = Some("k-pf".into());
    })
    .await;
    let preflight = |path: &str, origin: &'static str| {
        h.http
            .request(reqwest::Method::OPTIONS, h.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-private-network", "true")
            .send()
    };
    for (_, path) in ROUTES {
        let r = preflight(path, "http://localhost:3000").await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(
            r.headers()["access-control-allow-private-network"],
            "true",
            "{path}"
        );
        let listed: Vec<String> = r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        // The methods the route really answers: every one that is not "Unknown endpoint".
        let mut answered = Vec::new();
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            let r = h
                .http
                .request(method.parse().unwrap(), h.url(path))
                .header("authorization", "Bearer k-pf")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            // A HEAD answer has no body to say why; no HEAD route answers 404 otherwise.
            let unknown = status == 404 && (method == "HEAD" || text.contains("Unknown endpoint"));
            if !unknown {
                answered.push(method.to_owned());
            }
        }
        answered.push("OPTIONS".to_owned());
        assert_eq!(listed, answered, "{path}");
    }
    // An origin that is not listed gets a 403 and no grant at all.
    let r = preflight(CHAT, "https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
}

#[tokio::test]
async fn health_on_a_non_loopback_bind_without_the_key_reports_only_its_status() {
    let full_keys = [
        "version",
        "codex_config_path",
        "accounts",
        "rate_limits",
        "kept_responses",
    ];
    let h = Harness::with(|c| {
        c.host = "0.0.0.0".parse().unwrap();
        c.api_key = Some("k-health".into());
    })
    .await;
    let url = format!("http://127.0.0.1:{}/health", h.server.addr().port());
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong")],
        &[("x-api-key", "k-health-")],
    ] {
        let mut rb = h.http.get(&url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"status": "ok"}),
            "{headers:?}"
        );
    }
    for headers in [
        &[("authorization", "Bearer k-health")][..],
        &[("x-api-key", "k-health")],
    ] {
        let mut rb = h.http.get(&url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        for k in full_keys {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
    }
    // No key configured at all (--insecure-no-auth): nobody gets more than the status.
    let h = Harness::with(|c| {
        c.host = "0.0.0.0".parse().unwrap();
        c.insecure_no_auth = true;
    })
    .await;
    let url = format!("http://127.0.0.1:{}/health", h.server.addr().port());
    let v: Value = h.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"status": "ok"}));
    // A loopback bind keeps the full report for its local tools.
    let h = Harness::start().await;
    let v: Value = h.get("/health").await.json().await.unwrap();
    for k in full_keys {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
}

// ---------------------------------------------------------------------------------------
// Security guards
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn with_a_key_every_endpoint_but_health_needs_it_and_gets_401_in_shape() {
    let h = Harness::with(|c| c.api_key = Some("sk-local-123".into())).await;
    assert_eq!(h.get("/health").await.status(), 200);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-5.5"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/nothing"),
    ] {
        let r = h
            .http
            .request(method.parse().unwrap(), h.url(path))
            .json(&chat(json!("x")))
            .send()
            .await
            .unwrap();
        let m = openai_error(r, 401).await;
        assert!(m.contains("CODEX_AS_API_API_KEY"), "{m}");
    }
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let r = h
            .post_with(path, &msg(json!("x")), &[("x-api-key", "sk-local-12")])
            .await;
        let (t, _) = anthropic_error(r, 401).await;
        assert_eq!(t, "authentication_error");
    }
    let r = h
        .post_with(MESSAGES, &msg(json!("x")), &[("x-api-key", "sk-local-123")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emu.stats().responses_requests, 1);
}

#[tokio::test]
async fn foreign_host_header_is_refused_on_loopback_binds_in_each_shape() {
    let h = Harness::start().await;
    for host in ["evil.example", "attacker.com:18080", "10.1.2.3"] {
        let r = h
            .http
            .post(h.url(CHAT))
            .header("host", host)
            .json(&chat(json!("x")))
            .send()
            .await
            .unwrap();
        let m = openai_error(r, 403).await;
        assert!(m.contains("DNS rebinding"), "{m}");
    }
    let r = h
        .http
        .post(h.url(MESSAGES))
        .header("host", "evil.example")
        .json(&msg(json!("x")))
        .send()
        .await
        .unwrap();
    let (t, _) = anthropic_error(r, 403).await;
    assert_eq!(t, "permission_error");
    assert_eq!(h.emu.stats().responses_requests, 0);
    still_serves(&h).await;
}

// ---------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------

async fn stream_body(h: &Harness, path: &str, mut body: Value) -> (u16, String) {
    body["stream"] = json!(true);
    let r = h.post(path, &body).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn upstream_401_that_survives_reload_and_refresh_is_401_saying_codex_login() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let m = openai_error(h.post(CHAT, &chat(json!("EMU:401"))).await, 401).await;
    assert!(m.contains("codex login"), "{m}");
    let (t, _) = anthropic_error(h.post(MESSAGES, &msg(json!("EMU:401"))).await, 401).await;
    assert_eq!(t, "authentication_error");
    still_serves(&h).await;
}

#[tokio::test]
async fn upstream_403_is_403_permission_error_and_not_retried() {
    let h = Harness::start().await;
    let m = openai_error(h.post(CHAT, &chat(json!("EMU:403"))).await, 403).await;
    assert!(m.contains("do not have access"), "{m}");
    let (t, _) = anthropic_error(h.post(MESSAGES, &msg(json!("EMU:403"))).await, 403).await;
    assert_eq!(t, "permission_error");
    assert_eq!(h.emu.stats().responses_requests, 2, "4xx is never retried");
}

#[tokio::test]
async fn upstream_429_is_retried_after_retry_after_then_429_with_retry_after() {
    let h = Harness::with(|c| c.upstream_retries = 1).await;
    let started = Instant::now();
    let r = h.post(CHAT, &chat(json!("EMU:429rate"))).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out Retry-After: 1 before the retry"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let m = openai_error(r, 429).await;
    assert!(m.contains("Rate limit"), "{m}");
    assert_eq!(h.emu.stats().responses_requests, 2);
    let r = h.post(MESSAGES, &msg(json!("EMU:429rate"))).await;
    assert_eq!(r.headers()["x-should-retry"], "true");
    let (t, _) = anthropic_error(r, 429).await;
    assert_eq!(t, "rate_limit_error");
}

#[tokio::test]
async fn usage_limit_429_is_not_retried() {
    let h = Harness::with(|c| c.upstream_retries = 3).await;
    let m = openai_error(h.post(CHAT, &chat(json!("EMU:429"))).await, 429).await;
    assert!(m.contains("usage limit"), "{m}");
    assert_eq!(h.emu.stats().responses_requests, 1);
}

#[tokio::test]
async fn upstream_500_and_503_are_retried_a_bounded_number_of_times() {
    let h = Harness::with(|c| c.upstream_retries = 2).await;
    openai_error(h.post(CHAT, &chat(json!("EMU:500"))).await, 500).await;
    assert_eq!(h.emu.stats().responses_requests, 3, "1 + 2 retries");
    let started = Instant::now();
    let r = h.post(MESSAGES, &msg(json!("EMU:503"))).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two waits of the upstream's Retry-After: 1"
    );
    assert!(r.headers().get("retry-after").is_some());
    let (t, _) = anthropic_error(r, 529).await;
    assert_eq!(t, "overloaded_error");
    assert_eq!(h.emu.stats().responses_requests, 6);
    // Retries recover a transient failure.
    let r = h.post(CHAT, &chat(json!("EMU:flaky:2 once"))).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn failure_after_the_first_byte_is_never_retried() {
    let h = Harness::with(|c| c.upstream_retries = 3).await;
    let (status, body) = stream_body(&h, CHAT, chat(json!("EMU:error_event"))).await;
    assert_eq!(status, 200);
    assert!(body.contains("Partial "), "{body}");
    let (status, _) = stream_body(&h, MESSAGES, msg(json!("EMU:cut"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.emu.stats().responses_requests,
        2,
        "output had reached the client: no retry"
    );
}

#[tokio::test]
async fn response_failed_becomes_an_error_in_each_shape() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let m = openai_error(
        h.post(CHAT, &chat(json!("EMU:overloaded_event"))).await,
        503,
    )
    .await;
    assert!(m.contains("overloaded"), "{m}");
    let (t, _) = anthropic_error(
        h.post(MESSAGES, &msg(json!("EMU:overloaded_event"))).await,
        529,
    )
    .await;
    assert_eq!(t, "overloaded_error");
    // Streaming too: the head is held, so a failure before output is a status.
    let (status, _) = stream_body(&h, CHAT, chat(json!("EMU:context"))).await;
    assert_eq!(status, 400);
    // After output began: one error event, no success terminal.
    let (status, body) = stream_body(&h, MESSAGES, msg(json!("EMU:error_event"))).await;
    assert_eq!(status, 200);
    let fs = frames(&body);
    assert_eq!(fs.last().unwrap().event.as_deref(), Some("error"));
    assert!(
        fs.iter()
            .all(|f| f.event.as_deref() != Some("message_stop"))
    );
}

#[tokio::test]
async fn response_incomplete_finishes_with_a_length_stop() {
    let h = Harness::start().await;
    let v: Value = h
        .post(CHAT, &chat(json!("EMU:incomplete")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let v: Value = h
        .post(MESSAGES, &msg(json!("EMU:incomplete")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "max_tokens");
    let (_, body) = stream_body(&h, MESSAGES, msg(json!("EMU:incomplete"))).await;
    let fs = frames(&body);
    assert_eq!(fs.last().unwrap().event.as_deref(), Some("message_stop"));
    assert!(body.contains("\"max_tokens\""), "{body}");
}

#[tokio::test]
async fn truncated_stream_ends_with_one_error_event_in_each_shape() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let (status, body) = stream_body(&h, CHAT, chat(json!("EMU:cut"))).await;
    assert_eq!(status, 200);
    let fs = frames(&body);
    assert_eq!(fs.last().unwrap().data, "[DONE]");
    let errors: Vec<_> = fs.iter().filter(|f| f.data.contains("\"error\"")).collect();
    assert_eq!(errors.len(), 1, "{body}");
    assert!(errors[0].data.contains("upstream"), "{body}");
    assert!(errors[0].data.contains("mid-stream"), "{body}");
    let (status, body) = stream_body(&h, MESSAGES, msg(json!("EMU:cut"))).await;
    assert_eq!(status, 200);
    let fs = frames(&body);
    assert_eq!(fs.last().unwrap().event.as_deref(), Some("error"));
    assert_eq!(
        fs.iter()
            .filter(|f| f.event.as_deref() == Some("error"))
            .count(),
        1
    );
    // Non-streaming: a 502 that says what happened.
    let m = openai_error(h.post(CHAT, &chat(json!("EMU:cut"))).await, 502).await;
    assert!(m.contains("upstream connection failed"), "{m}");
}

#[tokio::test]
async fn silent_upstream_past_the_stream_idle_timeout_fails_in_each_shape() {
    let h = Harness::with(|c| {
        c.stream_idle_timeout = Duration::from_millis(1500);
        c.keepalive = Duration::from_millis(300);
        c.upstream_retries = 0;
    })
    .await;
    let started = Instant::now();
    let (status, body) = stream_body(&h, CHAT, chat(json!("EMU:stall:30000"))).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(10), "not the stall");
    let fs = frames(&body);
    assert_eq!(fs.last().unwrap().data, "[DONE]");
    let err = fs.iter().find(|f| f.data.contains("\"error\"")).unwrap();
    assert!(err.data.contains("sent nothing for"), "{body}");
    let (_, body) = stream_body(&h, MESSAGES, msg(json!("EMU:stall:30000"))).await;
    let fs = frames(&body);
    let last = fs.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["type"], "timeout_error");
    // Non-streaming: 504 in shape.
    let m = openai_error(h.post(CHAT, &chat(json!("EMU:stall:30000"))).await, 504).await;
    assert!(m.contains("sent nothing"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(h.emu.live_streams(), 0, "the silent upstreams were dropped");
}

#[tokio::test]
async fn connect_failure_is_502_with_a_clear_message() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = Harness::with(|c| {
        c.upstream_url = format!("http://127.0.0.1:{port}/backend-api");
        c.upstream_retries = 1;
    })
    .await;
    let m = openai_error(h.post(CHAT, &chat(json!("hi"))).await, 502).await;
    assert!(m.contains("cannot reach the upstream"), "{m}");
    assert!(m.contains(&port.to_string()), "names the address: {m}");
    let (t, m) = anthropic_error(h.post(MESSAGES, &msg(json!("hi"))).await, 502).await;
    assert_eq!(t, "api_error");
    assert!(m.contains("cannot reach the upstream"), "{m}");
}

#[tokio::test]
async fn connect_errors_are_retried_with_backoff_until_the_upstream_comes_up() {
    // A port nothing listens on yet; the upstream appears there ~300 ms after the request.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = Harness::with(|c| {
        c.upstream_url = format!("http://127.0.0.1:{port}/backend-api");
        c.upstream_retries = 3;
    })
    .await;
    let emu = h.emu.addr();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (mut down, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(emu).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    let started = Instant::now();
    let r = h.post(CHAT, &chat(json!("hello again"))).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered only once the upstream was up"
    );
    assert_eq!(h.emu.stats().responses_requests, 1);
    late.abort();
}

#[tokio::test]
async fn dns_failure_is_502_with_a_clear_message() {
    let h = Harness::with(|c| {
        c.upstream_url = "http://no-such-host.invalid/backend-api".into();
        c.upstream_retries = 0;
    })
    .await;
    let m = openai_error(h.post(CHAT, &chat(json!("hi"))).await, 502).await;
    assert!(m.contains("cannot reach the upstream"), "{m}");
    assert!(m.contains("dns"), "says it was name resolution: {m}");
    assert!(m.contains("no-such-host.invalid"), "{m}");
}

#[tokio::test]
async fn client_disconnect_drops_upstream_within_1s() {
    let h = Harness::start().await;
    for (path, body) in [
        (CHAT, chat(json!("EMU:stall:20000"))),
        (MESSAGES, msg(json!("EMU:stall:20000"))),
    ] {
        let mut body = body;
        body["stream"] = json!(true);
        let mut resp = h.post(path, &body).await;
        assert_eq!(resp.status(), 200);
        // Output has begun (the stall comes after the first delta).
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        assert_eq!(h.emu.live_streams(), 1, "the upstream stream is live");
        drop(resp);
        let left = Instant::now();
        while h.emu.live_streams() > 0 && left.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            h.emu.live_streams(),
            0,
            "the emulator saw its request dropped within 1 s of the client leaving"
        );
        let v: Value = h.get("/health").await.json().await.unwrap();
        assert_eq!(v["live_streams"], 0, "nothing leaks");
    }
    still_serves(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_with_100_concurrent_requests_makes_exactly_one_token_call() {
    let h = Harness::build(EmulatorConfig::default(), -60, |_| {}).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = h.http.clone();
        let (url, body) = if i % 2 == 0 {
            (h.url(CHAT), chat(json!(format!("n{i}"))))
        } else {
            (h.url(MESSAGES), msg(json!(format!("n{i}"))))
        };
        tasks.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.emu.stats().token_calls, 1);
    assert_eq!(h.emu.stats().responses_requests, 100);
}

#[tokio::test]
async fn concurrent_stream_limit_gives_503_and_529_overloaded_then_recovers() {
    let h = Harness::with(|c| c.max_concurrent_streams = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut b = chat(json!("EMU:stall:1500"));
        b["stream"] = json!(true);
        let mut r = h.post(CHAT, &b).await;
        assert_eq!(r.status(), 200);
        let _ = r.chunk().await.unwrap();
        held.push(r);
    }
    let r = h.post(CHAT, &chat(json!("third"))).await;
    assert!(r.headers().get("retry-after").is_some());
    let m = openai_error(r, 503).await;
    assert!(m.contains("limit of 2 concurrent upstream streams"), "{m}");
    let (t, _) = anthropic_error(h.post(MESSAGES, &msg(json!("third"))).await, 529).await;
    assert_eq!(t, "overloaded_error");
    for r in held {
        assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    still_serves(&h).await;
}
