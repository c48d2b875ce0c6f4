//! The Responses WebSocket as the upstream transport (`--upstream-transport`), end to end:
//! clients over HTTP, the real server, the emulator's WebSocket route over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use codex_as_api::config::Transport;
use codex_as_api::emulator::{EmulatorConfig, RecordedRequest, WebSocketMode};
use common::{Harness, error_message, frames, until};
use serde_json::{Value, json};

#[path = "../benches/fixtures/messages_stream.rs"]
mod messages_stream;
use messages_stream::rebuild_content;

fn bash() -> Value {
    json!({"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}})
}

async fn messages(h: &Harness, body: &Value, session: &str) -> (u16, Value) {
    let r = h
        .post_with(
            "/v1/messages",
            body,
            &[
                ("anthropic-version", "2023-06-01"),
                ("x-claude-code-session-id", session),
            ],
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn header<'a>(r: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn frame(r: &RecordedRequest) -> &Value {
    r.frame.as_ref().expect("sent over the WebSocket")
}

/// A Claude Code-like tool loop of `turns` tool calls in one session; returns the final
/// answer and the messages sent last.
async fn tool_loop(h: &Harness, session: &str, turns: usize) -> (Value, Vec<Value>) {
    let mut msgs = vec![json!({"role": "user", "content": "EMU:tool:Bash {\"command\":\"ls\"}"})];
    let mut last = Value::Null;
    for i in 0..=turns {
        let (status, m) = messages(
            h,
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [bash()], "messages": msgs}),
            session,
        )
        .await;
        assert_eq!(status, 200, "{m}");
        last = m.clone();
        if i == turns {
            break;
        }
        assert_eq!(m["stop_reason"], "tool_use", "{m}");
        let id = m["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap()["id"]
            .clone();
        msgs.push(json!({"role": "assistant", "content": m["content"]}));
        msgs.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": format!("file-{i}.txt")},
            {"type": "text", "text": if i + 1 < turns { "EMU:tool:Bash {\"command\":\"ls\"}" } else { "done?" }}
        ]}));
    }
    (last, msgs)
}

#[tokio::test]
async fn a_request_goes_as_one_frame_with_the_clis_handshake_headers() {
    let h = Harness::start().await;
    let r = h
        .post_with(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "prompt_cache_key": "conv-ws",
                    "messages": [{"role": "user", "content": "hello ws"}]}),
            &[("x-openai-subagent", "review")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: hello ws");
    let up = h.last_upstream();
    assert!(up.websocket() && !up.zstd);
    assert_eq!(
        header(&up, "openai-beta"),
        Some("responses_websockets=2026-02-06")
    );
    assert!(header(&up, "authorization").unwrap().starts_with("Bearer "));
    assert_eq!(
        header(&up, "chatgpt-account-id"),
        Some(h.creds.account_id.as_str())
    );
    assert_eq!(header(&up, "originator"), Some("codex_cli_rs"));
    assert!(
        header(&up, "user-agent")
            .unwrap()
            .starts_with("codex_cli_rs/")
    );
    for k in ["session-id", "thread-id", "x-client-request-id"] {
        assert_eq!(header(&up, k), Some("conv-ws"), "{k}");
    }
    assert_eq!(header(&up, "x-codex-window-id"), Some("conv-ws:0"));
    assert_eq!(header(&up, "x-openai-subagent"), Some("review"));
    assert_eq!(
        header(&up, "version"),
        None,
        "no version header on the WebSocket"
    );
    let f = frame(&up);
    assert_eq!(f["model"], "gpt-5.5");
    assert_eq!(f["store"], false);
    assert_eq!(f["stream"], true);
    assert_eq!(f["prompt_cache_key"], "conv-ws");
    assert!(f.get("previous_response_id").is_none());
    // codex.rate_limits became the account's snapshot.
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["upstream_transport"], "websocket");
    assert!(
        health["rate_limits"]["primary"]["used_percent"].is_number(),
        "{health}"
    );
    assert_eq!(
        health["upstream_websockets_idle"], 1,
        "the socket is kept for the next turn"
    );
    let stats = h.emu.stats();
    assert_eq!((stats.ws_handshakes, stats.ws_requests), (1, 1));
}

#[tokio::test]
async fn a_claude_code_tool_loop_sends_only_new_items_after_the_first_turn() {
    let h = Harness::start().await;
    let (last, msgs) = tool_loop(&h, "sess-loop", 3).await;
    assert_eq!(last["content"][0]["text"], "You said: done?");
    let stats = h.emu.stats();
    assert_eq!(stats.ws_handshakes, 1, "one socket for the whole session");
    assert_eq!(stats.ws_continuations, 3, "{stats:?}");
    // permessage-deflate: the frames crossed the wire compressed (small frames, each on
    // its own: not by much).
    assert!(
        stats.ws_request_wire_bytes < stats.ws_request_bytes,
        "{stats:?}"
    );
    let reqs = h.emu.requests();
    assert_eq!(reqs.len(), 4);
    assert!(frame(&reqs[0]).get("previous_response_id").is_none());
    for r in &reqs[1..] {
        let f = frame(r);
        assert!(
            f["previous_response_id"]
                .as_str()
                .unwrap()
                .starts_with("resp_")
        );
        let types: Vec<&str> = f["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["function_call_output", "message"], "{f}");
    }
    // What the backend processed is the whole conversation, as SSE would have sent it.
    let sse = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    let (_, again) = messages(
        &sse,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [bash()], "messages": msgs}),
        "sess-loop",
    )
    .await;
    let whole = sse.last_upstream().body;
    let processed = &reqs[3].body;
    let strip = |v: &Value| -> Vec<Value> {
        v["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if let Some(o) = i.as_object_mut() {
                    o.remove("id");
                    o.remove("status");
                }
                i
            })
            .collect()
    };
    assert_eq!(strip(processed).len(), strip(&whole).len());
    assert_eq!(again["content"], last["content"]);
    // Fewer bytes on the wire than the last full frame would have been.
    let full_bytes = serde_json::to_vec(&whole).unwrap().len();
    let chained_bytes = serde_json::to_vec(frame(&reqs[3])).unwrap().len();
    assert!(
        chained_bytes < full_bytes,
        "{chained_bytes} vs {full_bytes}"
    );
}

#[tokio::test]
async fn an_edited_history_or_a_changed_setting_is_sent_in_full() {
    let h = Harness::start().await;
    let first = json!({"model": "gpt-5.5", "prompt_cache_key": "edit",
        "messages": [{"role": "user", "content": "one"}]});
    h.post("/v1/chat/completions", &first).await;
    // The history says something else than the answer did.
    let edited = json!({"model": "gpt-5.5", "prompt_cache_key": "edit",
        "messages": [{"role": "user", "content": "one"},
                     {"role": "assistant", "content": "not what you said"},
                     {"role": "user", "content": "two"}]});
    let r = h.post("/v1/chat/completions", &edited).await;
    assert_eq!(r.status(), 200);
    assert!(
        frame(&h.last_upstream())
            .get("previous_response_id")
            .is_none()
    );
    // The true history chains…
    let true_history = json!({"model": "gpt-5.5", "prompt_cache_key": "edit",
        "messages": [{"role": "user", "content": "one"},
                     {"role": "assistant", "content": "not what you said"},
                     {"role": "user", "content": "two"},
                     {"role": "assistant", "content": "You said: two"},
                     {"role": "user", "content": "three"}]});
    h.post("/v1/chat/completions", &true_history).await;
    let f = frame(&h.last_upstream()).clone();
    assert!(f.get("previous_response_id").is_some(), "{f}");
    assert_eq!(f["input"].as_array().unwrap().len(), 1);
    // …but not with other instructions.
    let mut other = true_history.clone();
    other["messages"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"role": "system", "content": "Be terse."}));
    h.post("/v1/chat/completions", &other).await;
    assert!(
        frame(&h.last_upstream())
            .get("previous_response_id")
            .is_none()
    );
    assert_eq!(h.emu.stats().ws_continuations, 1);
}

#[tokio::test]
async fn an_unknown_previous_response_is_sent_again_in_full() {
    let h = Harness::start().await;
    let turn = |text: &str, history: &[(&str, &str)]| {
        let mut msgs: Vec<Value> = history
            .iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        msgs.push(json!({"role": "user", "content": text}));
        json!({"model": "gpt-5.5", "prompt_cache_key": "forget", "messages": msgs})
    };
    h.post("/v1/chat/completions", &turn("a", &[])).await;
    h.emu.forget_responses();
    let r = h
        .post(
            "/v1/chat/completions",
            &turn("b", &[("user", "a"), ("assistant", "You said: a")]),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: b");
    let reqs = h.emu.requests();
    assert_eq!(reqs.len(), 3, "the chained try, then the full one");
    assert!(frame(&reqs[1]).get("previous_response_id").is_some());
    assert!(frame(&reqs[2]).get("previous_response_id").is_none());
    assert_eq!(frame(&reqs[2])["input"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_426_switches_auto_to_sse_for_good_and_websocket_mode_fails_clearly() {
    let cfg = EmulatorConfig {
        websocket: WebSocketMode::Refuse(426),
        ..EmulatorConfig::default()
    };
    let h = Harness::build(cfg.clone(), 3600, |_| {}).await;
    for text in ["first", "second"] {
        let r = h
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": text}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let up = h.last_upstream();
        assert!(!up.websocket() && up.zstd, "over HTTP");
    }
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["upstream_transport"], "sse");
    assert_eq!(h.emu.stats().ws_handshakes, 0);

    let strict = Harness::build(cfg, 3600, |c| c.upstream_transport = Transport::WebSocket).await;
    let r = strict
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert!(error_message(&e).contains("WebSocket"), "{e}");
    assert!(strict.emu.requests().is_empty());
}

#[tokio::test]
async fn a_socket_at_its_connection_limit_is_replaced_at_once() {
    let cfg = EmulatorConfig {
        websocket_responses_per_socket: Some(1),
        ..EmulatorConfig::default()
    };
    let h = Harness::build(cfg, 3600, |_| {}).await;
    let body =
        |msgs: Value| json!({"model": "gpt-5.5", "prompt_cache_key": "limit", "messages": msgs});
    h.post(
        "/v1/chat/completions",
        &body(json!([{"role": "user", "content": "a"}])),
    )
    .await;
    let r = h
        .post(
            "/v1/chat/completions",
            &body(json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "You said: a"}, {"role": "user", "content": "b"}])),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: b");
    assert_eq!(h.emu.stats().ws_handshakes, 2, "a new socket");
    // On the new socket nothing chains: the full conversation.
    assert!(
        frame(&h.last_upstream())
            .get("previous_response_id")
            .is_none()
    );
}

#[tokio::test]
async fn wrapped_refusals_are_handled_like_http_statuses() {
    let h = Harness::start().await;
    // The usage limit: a 429 with the reset, in the client's shape.
    h.emu
        .set_usage_limit(&h.emu.account_id(), Some(4_000_000_000));
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "insufficient_quota", "{e}");
    h.emu.set_usage_limit(&h.emu.account_id(), None);
    // A transient failure before output is retried (on a new socket: the CLI drops a socket
    // after any error).
    let r = h
        .post("/v1/chat/completions", &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "EMU:flaky:1 then fine"}]}))
        .await;
    assert_eq!(r.status(), 200);
    // A dead access token at the handshake: refreshed, then the socket opens.
    h.emu.revoke_access_tokens();
    let before = h.emu.stats().token_calls;
    let r = h
        .post("/v1/chat/completions", &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "after refresh"}]}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emu.stats().token_calls, before + 1);
}

#[tokio::test]
async fn a_client_that_leaves_closes_its_socket_and_idle_sockets_close_on_time() {
    let h = Harness::with(|c| c.upstream_idle = Duration::from_secs(1)).await;
    let resp = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "EMU:gate:leave hello"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    // The first delta arrived: the upstream response is live.
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!frames(&String::from_utf8_lossy(&first)).is_empty());
    assert_eq!(h.emu.live_streams(), 1);
    drop(resp);
    until(
        "the upstream response to be dropped",
        Duration::from_secs(10),
        || h.emu.live_streams() == 0,
    )
    .await;
    h.emu.open_gate("leave");
    // A finished turn keeps its socket, for --upstream-idle-secs only.
    h.post(
        "/v1/chat/completions",
        &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "kept"}]}),
    )
    .await;
    let sockets = &h.server.state().sockets;
    assert_eq!(sockets.idle(), 1);
    until("the idle socket to close", Duration::from_secs(10), || {
        sockets.idle() == 0
    })
    .await;
}

#[tokio::test]
async fn wss_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, config) = common::tls_emulator(EmulatorConfig::default(), dir.path(), 3600).await;
    let server = codex_as_api::Server::bind(config).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "over wss"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: over wss");
    assert_eq!(emu.stats().ws_handshakes, 1);
    assert!(emu.requests()[0].websocket());
}

/// A streaming client may send its next turn the moment it reads `message_stop`, before
/// the server has polled the rest of the stream (here: never). The socket is back in the
/// pool by then, with what continuation needs, so the turn still goes as a continuation
/// on the same socket. The service is called in-process so that nothing polls a body the
/// test does not.
#[tokio::test]
async fn a_turn_sent_at_message_stop_continues_on_the_same_socket() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::Service;

    let emu = codex_as_api::emulator::Emulator::start(EmulatorConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    emu.issue_credentials(3600).write_auth_json(&auth).unwrap();
    let mut config = codex_as_api::Config::for_tests(&emu.base_url(), auth);
    config.token_url = emu.token_url();
    config.codex_home = dir.path().to_path_buf();
    config.upstream_transport = Transport::WebSocket;
    let service = codex_as_api::Server::service(config).await.unwrap();

    let mut msgs = vec![json!({"role": "user", "content": "EMU:tool:Bash {\"command\":\"ls\"}"})];
    let mut unread = Vec::new();
    for turn in 0..3 {
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": true,
            "tools": [bash()], "messages": msgs});
        let req = http::Request::post("/v1/messages")
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-claude-code-session-id", "sess-stop")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = service.call(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut sse = Vec::new();
        while !String::from_utf8_lossy(&sse).contains("event: message_stop") {
            let frame = body.frame().await.expect("more frames").unwrap();
            sse.extend_from_slice(&frame.into_data().unwrap_or_default());
        }
        // Kept, unread past `message_stop`, until the test ends.
        unread.push(body);
        let content = rebuild_content(&sse);
        let call = content
            .iter()
            .find(|b| b["type"] == "tool_use")
            .unwrap_or_else(|| panic!("turn {turn}: no tool call in {content:?}"));
        let id = call["id"].clone();
        msgs.push(json!({"role": "assistant", "content": content}));
        msgs.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": format!("file-{turn}.txt")},
            {"type": "text", "text": "EMU:tool:Bash {\"command\":\"ls\"}"}
        ]}));
    }
    let stats = emu.stats();
    assert_eq!(
        stats.ws_handshakes, 1,
        "one socket for the session: {stats:?}"
    );
    assert_eq!(stats.ws_continuations, 2, "{stats:?}");
}

/// The backend played by the Python `websockets` library (an independent permessage-deflate
/// implementation, tests/e2e/ws_deflate_peer.py): the request frames go compressed, and its
/// compressed events are inflated.
#[tokio::test]
async fn permessage_deflate_interoperates_with_an_independent_implementation() {
    use tokio::io::AsyncBufReadExt;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/ws_deflate_peer.py");
    let mut peer = tokio::process::Command::new(common::python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the Python peer starts");
    let stdout = peer.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the peer prints its port")
        .unwrap()
        .expect(
            "a port line (is `websockets` installed in the venv? see tests/e2e/requirements.txt)",
        );
    let h = Harness::with(|c| {
        c.upstream_url = format!("http://127.0.0.1:{}/backend-api", port.trim());
        c.upstream_transport = Transport::WebSocket;
    })
    .await;
    let mut msgs = vec![json!({"role": "user", "content": "hello deflate"})];
    for (turn, said) in ["hello deflate", "and again"].into_iter().enumerate() {
        let r = h
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-5.5", "prompt_cache_key": "conv-deflate", "messages": msgs}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let seen: Value = serde_json::from_str(&content).unwrap();
        assert_eq!(seen["said"], said, "{seen}");
        assert!(
            seen["offered"]
                .as_str()
                .unwrap()
                .contains("permessage-deflate; client_max_window_bits"),
            "{seen}"
        );
        assert!(
            seen["accepted"]
                .as_str()
                .unwrap()
                .starts_with("permessage-deflate"),
            "{seen}"
        );
        assert_eq!(seen["compressed_frames"], turn + 1, "{seen}");
        assert_eq!(seen["plain_frames"], 0, "{seen}");
        msgs.push(json!({"role": "assistant", "content": content}));
        msgs.push(json!({"role": "user", "content": "and again"}));
    }
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(
        health["upstream_websockets_idle"], 1,
        "one socket for both turns"
    );
    drop(peer.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), peer.wait()).await;
}

#[tokio::test]
async fn an_emulator_without_deflate_gets_plain_frames() {
    let cfg = EmulatorConfig {
        ws_deflate: false,
        ..EmulatorConfig::default()
    };
    let h = Harness::build(cfg, 3600, |c| c.upstream_transport = Transport::WebSocket).await;
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "plain ws"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "You said: plain ws");
    let stats = h.emu.stats();
    assert_eq!(stats.ws_requests, 1);
    assert_eq!(stats.ws_request_wire_bytes, stats.ws_request_bytes);
}

/// A Messages request of `msgs` for the tests of parallel conversations.
fn claude_turn(msgs: &[Value]) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": msgs})
}

/// The first turns of two conversations of one session, held at the gate `gate` until both
/// stream (so each gets its own socket); both answers.
async fn two_at_once(h: &Harness, a: &str, b: &str, gate: &str, session: &str) -> (Value, Value) {
    let open = async {
        until("both turns streaming", Duration::from_secs(10), || {
            h.emu.live_streams() == 2
        })
        .await;
        h.emu.open_gate(gate);
    };
    let first_a = claude_turn(&[json!({"role": "user", "content": a})]);
    let first_b = claude_turn(&[json!({"role": "user", "content": b})]);
    let ((sa, ma), (sb, mb), ()) = tokio::join!(
        messages(h, &first_a, session),
        messages(h, &first_b, session),
        open
    );
    assert_eq!((sa, sb), (200, 200), "{ma} {mb}");
    (ma, mb)
}

/// Two conversations of one session at once (Claude Code's parallel subagents share its
/// session id): each socket they ran on is kept, and each next turn continues on its own.
#[tokio::test]
async fn parallel_turns_of_one_session_keep_their_sockets_and_each_continues_on_its_own() {
    let h = Harness::start().await;
    let (alpha, beta) = ("EMU:gate:both alpha", "EMU:gate:both beta");
    let (ma, mb) = two_at_once(&h, alpha, beta, "both", "sess-par").await;
    let mut a = vec![json!({"role": "user", "content": alpha})];
    let mut b = vec![json!({"role": "user", "content": beta})];
    assert_eq!(h.emu.stats().ws_handshakes, 2);
    until("both sockets idle", Duration::from_secs(10), || {
        h.server.state().sockets.idle() == 2
    })
    .await;
    // The next turns, one after the other: each takes the socket its history ran on.
    for (msgs, m, text) in [(&mut b, mb, "beta again"), (&mut a, ma, "alpha again")] {
        msgs.push(json!({"role": "assistant", "content": m["content"]}));
        msgs.push(json!({"role": "user", "content": text}));
        let (status, m) = messages(&h, &claude_turn(msgs), "sess-par").await;
        assert_eq!(status, 200, "{m}");
        assert_eq!(m["content"][0]["text"], format!("You said: {text}"), "{m}");
    }
    let stats = h.emu.stats();
    assert_eq!(stats.ws_handshakes, 2, "{stats:?}");
    assert_eq!(stats.ws_continuations, 2, "{stats:?}");
    let reqs = h.emu.requests();
    for r in &reqs[2..] {
        assert_eq!(
            frame(r)["input"].as_array().unwrap().len(),
            1,
            "{:?}",
            frame(r)
        );
    }
}

#[tokio::test]
async fn a_dead_pooled_socket_gives_way_to_the_conversations_other_idle_socket() {
    let h = Harness::start().await;
    // The backend closes beta's socket right after its answer.
    let beta = "EMU:gate:pair beta EMU:hangup";
    let (_, mb) = two_at_once(&h, "EMU:gate:pair alpha", beta, "pair", "sess-dead").await;
    let mut b = vec![json!({"role": "user", "content": beta})];
    until(
        "beta's socket closed by the backend",
        Duration::from_secs(10),
        || h.emu.stats().ws_closed == 1,
    )
    .await;
    // Beta's next turn: the socket it continues is dead, so it goes in full on alpha's
    // idle socket rather than on a new one.
    b.push(json!({"role": "assistant", "content": mb["content"]}));
    b.push(json!({"role": "user", "content": "beta again"}));
    let (status, m) = messages(&h, &claude_turn(&b), "sess-dead").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["content"][0]["text"], "You said: beta again", "{m}");
    let stats = h.emu.stats();
    assert_eq!(stats.ws_handshakes, 2, "{stats:?}");
    assert_eq!(stats.ws_continuations, 0, "{stats:?}");
    let reqs = h.emu.requests();
    let last = frame(reqs.last().unwrap());
    assert!(last.get("previous_response_id").is_none(), "{last}");
    assert_eq!(last["input"].as_array().unwrap().len(), 3, "{last}");
}
