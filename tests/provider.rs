//! The public library API: `Config::builder`, `Provider` (in-process calls against the
//! emulator over loopback), `Server::serve` on a caller's listener and `Server::service`
//! mounted in a caller's hyper server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use codex_as_api::emulator::{Emulator, EmulatorConfig};
use codex_as_api::{ChatEvent, Config, ErrorKind, Provider, Server};
use futures_util::StreamExt;
use serde_json::{Value, json};

struct Setup {
    emu: Emulator,
    _dir: tempfile::TempDir,
    config: Config,
}

async fn setup() -> Setup {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    emu.issue_credentials(3600).write_auth_json(&auth).unwrap();
    let config = Config::builder()
        .port(0u16)
        .codex_home(dir.path())
        .auth_path(&auth)
        .upstream_url(emu.base_url())
        .token_url(emu.token_url())
        .build()
        .unwrap();
    Setup {
        emu,
        _dir: dir,
        config,
    }
}

fn user(text: &str) -> Value {
    json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": text}]})
}

const WEATHER: &str = r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

#[tokio::test]
async fn chat_returns_the_whole_answer_with_usage_and_id() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let a = p.chat(user("hello there")).await.unwrap();
    assert!(!a.content.is_empty());
    assert_eq!(a.finish_reason, "stop");
    assert!(a.tool_calls.is_empty());
    assert!(a.response_id.starts_with("chatcmpl-"), "{a:?}");
    assert_eq!(a.model, "gpt-5.5");
    let u = a.usage.expect("usage");
    assert!(u.prompt_tokens > 0 && u.total_tokens == u.prompt_tokens + u.completion_tokens);
    assert_eq!(s.emu.stats().responses_requests, 1);
}

#[tokio::test]
async fn chat_returns_tool_calls() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let mut req = user("EMU:parallel");
    req["tools"] = serde_json::from_str(WEATHER).unwrap();
    let a = p.chat(req).await.unwrap();
    assert_eq!(a.finish_reason, "tool_calls");
    assert_eq!(a.tool_calls.len(), 2);
    assert_ne!(a.tool_calls[0].id, a.tool_calls[1].id);
    for c in &a.tool_calls {
        assert_eq!(c.name, "get_weather");
        let _: Value = serde_json::from_str(&c.arguments).unwrap();
    }
}

#[tokio::test]
async fn chat_stream_yields_typed_events_ending_with_finish() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let mut req = user("EMU:tool");
    req["tools"] = serde_json::from_str(WEATHER).unwrap();
    let events: Vec<ChatEvent> = p
        .chat_stream(req)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let starts = events
        .iter()
        .filter(|e| matches!(e, ChatEvent::ToolCallStart { name, .. } if name == "get_weather"))
        .count();
    assert_eq!(starts, 1, "{events:?}");
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::ToolCallDelta { arguments, .. } => Some(arguments.as_str()),
            _ => None,
        })
        .collect();
    let end = events
        .iter()
        .find_map(|e| match e {
            ChatEvent::ToolCallEnd { call, .. } => Some(call.clone()),
            _ => None,
        })
        .expect("a ToolCallEnd");
    assert_eq!(end.arguments, deltas);
    assert!(end.id.starts_with("call_"));
    let args: Value = serde_json::from_str(&end.arguments).unwrap();
    assert_eq!(args["city"], "test");
    assert!(events.iter().any(|e| matches!(e, ChatEvent::Usage { .. })));
    match events.last().unwrap() {
        ChatEvent::Finish {
            reason,
            response_id,
        } => {
            assert_eq!(reason, "tool_calls");
            assert!(response_id.starts_with("chatcmpl-"));
        }
        other => panic!("last event {other:?}"),
    }
}

#[tokio::test]
async fn chat_stream_text_arrives_in_pieces() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let mut stream = p.chat_stream(user("EMU:deltas:5")).await.unwrap();
    let mut pieces = Vec::new();
    while let Some(ev) = stream.next().await {
        if let ChatEvent::Text { text } = ev.unwrap() {
            pieces.push(text);
        }
    }
    assert_eq!(pieces.len(), 5, "{pieces:?}");
}

#[tokio::test]
async fn errors_keep_their_kind_and_retry_after() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let e = p.chat(user("EMU:429")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UsageLimit, "{e:?}");
    assert!(e.retry_after().is_some(), "{e:?}");
    let e = p.chat(json!(["not", "an", "object"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
    let e = p
        .chat(json!({"model": "gpt-5.5", "messages": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest);
    assert!(e.message.contains("messages"), "{}", e.message);
    // The same in a stream: the error comes before any event.
    let Err(e) = p.chat_stream(user("EMU:429")).await else {
        panic!("a usage-limit error")
    };
    assert_eq!(e.kind(), ErrorKind::UsageLimit);
}

#[tokio::test]
async fn the_other_endpoints_answer_in_their_shapes() {
    let s = setup().await;
    let p = Provider::new(s.config.clone()).await.unwrap();
    let r = p
        .responses(json!({"model": "gpt-5.5", "input": "hello"}))
        .await
        .unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    let m = p
        .messages(json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}))
        .await
        .unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    let models = p.models().await.unwrap();
    assert_eq!(models["object"], "list");
    assert!(!models["data"].as_array().unwrap().is_empty());
    let img = p
        .images(json!({"prompt": "a red square", "size": "1024x1024"}))
        .await
        .unwrap();
    assert!(img["data"][0]["b64_json"].is_string(), "{img}");
}

#[tokio::test]
async fn server_serves_on_a_listener_the_caller_bound() {
    let s = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::serve(s.config.clone(), listener).await.unwrap();
    assert_eq!(server.addr(), addr);
    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    server.shutdown().await;
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err());
}

#[tokio::test]
async fn service_mounts_in_a_callers_hyper_server() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = setup().await;
    let service = Server::service(s.config.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let v: Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&user("hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert_eq!(s.emu.stats().responses_requests, 1);
}

#[tokio::test]
async fn demo_mode_needs_no_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder()
        .codex_home(dir.path())
        .demo(true)
        .build()
        .unwrap();
    let p = Provider::new(config).await.unwrap();
    assert!(p.config().upstream_url.starts_with("http://127.0.0.1:"));
    assert!(!p.chat(user("hello")).await.unwrap().content.is_empty());
}
