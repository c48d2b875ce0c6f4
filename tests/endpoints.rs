//! The endpoints beyond the three protocols, end to end against the emulator: models from
//! the live catalog, image generation, inspect, remote compaction, usage, /health.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, error_message, frames};
use serde_json::{Value, json};

#[tokio::test]
async fn models_come_from_the_backend_catalog_and_are_cached() {
    let h = Harness::start().await;
    let v: Value = h.get("/v1/models").await.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    // The backend's priorities (terra = 2) and descriptions, not the built-in list's.
    assert_eq!(data[0]["id"], "gpt-6.1-sol");
    assert_eq!(data[1]["id"], "gpt-6.1-terra");
    assert_eq!(data[1]["context_window"], 500_000);
    assert_eq!(data[1]["description"], "Long-context agentic coding model.");
    let one: Value = h
        .get("/v1/models/gpt-6.1-terra")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "gpt-6.1-terra");
    assert_eq!(one["context_window"], 500_000);
    // Within the 5 minutes the catalog is not fetched again.
    let _ = h.get("/v1/models").await;
    assert_eq!(h.emu.stats().models_requests, 1);
    // Anthropic's shape on the same path.
    let a: Value = h
        .get_with("/v1/models", &[("anthropic-version", "2023-06-01")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["first_id"], "gpt-6.1-sol");
    assert_eq!(a["data"][1]["max_input_tokens"], 500_000);
    assert_eq!(a["data"][0]["type"], "model");
    let missing = h.get("/v1/models/nope").await;
    assert_eq!(missing.status(), 404);
    let e: Value = missing.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn stale_catalog_is_revalidated_with_if_none_match() {
    let h = Harness::start().await;
    let _ = h.get("/v1/models").await;
    h.server.state().catalog.set_ttl(Duration::from_millis(0));
    let v: Value = h.get("/v1/models").await.json().await.unwrap();
    assert_eq!(
        v["data"][1]["id"], "gpt-6.1-terra",
        "the 304 keeps the live list"
    );
    assert_eq!(h.emu.stats().models_requests, 2);
    assert!(h.server.state().catalog.is_live());
}

#[tokio::test]
async fn unreachable_backend_falls_back_to_the_built_in_models() {
    let h = Harness::with(|c| c.upstream_url = "http://127.0.0.1:9/backend-api".into()).await;
    let r = h.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-5.5"));
    assert_eq!(ids[1], "gpt-6-sol", "built-in priorities");
    assert!(!h.server.state().catalog.is_live());
}

#[tokio::test]
async fn images_generate_b64_and_data_urls() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red square", "n": 2, "size": "1024x1024", "quality": "high", "background": "opaque"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["created"].as_u64().unwrap() > 0);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(
        data[0]["b64_json"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo")
    );
    assert!(
        data[0]["revised_prompt"]
            .as_str()
            .unwrap()
            .contains("a red square")
    );
    // What reached the backend's image endpoint: the client's options, with the proxy's auth.
    let (path, up) = h.emu.unary_requests().pop().unwrap();
    assert_eq!(path, "/backend-api/codex/images/generations");
    for (k, v) in [
        ("prompt", json!("a red square")),
        ("n", json!(2)),
        ("size", json!("1024x1024")),
        ("quality", json!("high")),
        ("background", json!("opaque")),
    ] {
        assert_eq!(up.body[k], v, "{k} in {}", up.body);
    }
    assert!(up.body.get("response_format").is_none());
    let header = |n: &str| up.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v);
    assert!(header("authorization").unwrap().starts_with("Bearer "));
    assert!(header("chatgpt-account-id").is_some());
    let r = h
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red square", "response_format": "url"}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert!(
        v["data"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,iVBORw0KGgo")
    );
    assert!(v["data"][0].get("b64_json").is_none());
    assert_eq!(h.emu.stats().images_requests, 2);
}

#[tokio::test]
async fn bad_image_requests_are_400_before_the_backend() {
    let h = Harness::start().await;
    for (body, param) in [
        (json!({"n": 1}), "prompt"),
        (json!({"prompt": "x", "n": 11}), "n"),
        (json!({"prompt": "x", "size": "3x3"}), "size"),
        (
            json!({"prompt": "x", "response_format": "gif"}),
            "response_format",
        ),
    ] {
        let r = h.post("/v1/images/generations", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["param"], param);
    }
    assert_eq!(h.emu.stats().images_requests, 0);
}

const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mP4z8CAFTEMLQkAKP8/wc53yE8AAAAASUVORK5CYII=";

#[tokio::test]
async fn inspect_answers_with_the_models_text() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/inspect",
            &json!({"prompt": "what is this?", "images": [{"image_url": PNG}, {"image_url": PNG}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], "You said: what is this? [images: 2]");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let up = h.last_upstream();
    let parts = up.body["input"][0]["content"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "input_text");
    assert_eq!(parts[1]["type"], "input_image");
    assert_eq!(parts[1]["image_url"], PNG);
    // Streamed: Chat chunks.
    let r = h
        .post("/v1/inspect", &json!({"prompt": "stream?", "stream": true}))
        .await;
    let body = r.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let text: String = frames(&body)
        .iter()
        .filter(|f| f.data != "[DONE]")
        .filter_map(|f| {
            f.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "You said: stream?");
    let bad = h.post("/v1/inspect", &json!({"images": []})).await;
    assert_eq!(bad.status(), 400);
    let bad = h
        .post(
            "/v1/inspect",
            &json!({"prompt": "x", "images": [{"url": 1}]}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["error"]["param"], "images[0]");
}

fn history() -> Value {
    json!([
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"}
    ])
}

#[tokio::test]
async fn compact_returns_a_checkpoint_the_client_continues_from() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/compact",
            &json!({"model": "gpt-5.5", "input": history(), "instructions": "Be brief."}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response.compaction");
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 3, "{v}");
    assert_eq!(out[0]["role"], "user");
    assert_eq!(out[2]["type"], "compaction");
    assert!(out[2]["id"].as_str().unwrap().starts_with("cmp_"));
    // v2: the history plus the trigger, with the beta header.
    let up = h.last_upstream();
    let input = up.body["input"].as_array().unwrap();
    assert_eq!(input.last().unwrap()["type"], "compaction_trigger");
    assert!(
        up.headers
            .iter()
            .any(|(k, v)| k == "x-codex-beta-features" && v == "remote_compaction_v2")
    );
    // A kept conversation can be compacted by id.
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-5.5", "input": "kept turn"}),
        )
        .await;
    let kept: Value = r.json().await.unwrap();
    let r = h
        .post(
            "/v1/compact",
            &json!({"model": "gpt-5.5", "input": [], "previous_response_id": kept["id"]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let sent = h.last_upstream().body["input"].clone();
    assert_eq!(sent[0]["content"][0]["text"], "kept turn");
    assert_eq!(sent[2]["type"], "compaction_trigger");
    // Continue: the checkpoint in place of the history, then a new turn.
    let mut next = out.clone();
    next.push(json!({"role": "user", "content": "third question"}));
    let r = h
        .post("/v1/responses", &json!({"model": "gpt-5.5", "input": next}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let up = h.last_upstream();
    assert_eq!(up.body["input"][2]["type"], "compaction");
}

#[tokio::test]
async fn compact_falls_back_to_v1_and_answers_anthropic_shape_on_the_alias() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/compact",
            &json!({"model": "gpt-5.5", "input": [{"role": "user", "content": "EMU:no-compaction-v2 hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.last().unwrap()["type"], "compaction");
    assert!(
        out.last().unwrap().get("id").is_none(),
        "v1 items carry no id: {v}"
    );

    let r = h
        .post(
            "/v1/messages/compact",
            &json!({"model": "claude-sonnet-4", "max_tokens": 100,
                    "messages": [{"role": "user", "content": "long history"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4");
    assert_eq!(v["content"][0]["type"], "compaction");
    assert!(v["content"][0]["content"].as_str().unwrap().len() > 10);

    let bad = h.post("/v1/messages/compact", &json!({"model": "x"})).await;
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert_eq!(e["type"], "error");
}

/// The original project's body: Chat messages, no `model`, content as a string or parts.
#[tokio::test]
async fn compact_accepts_the_chat_shaped_body() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/compact",
            &json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
                {"role": "user", "content": [{"type": "text", "text": "second question"}]}
            ]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "response.compaction");
    // No model in the body: the server's.
    assert_eq!(v["model"], h.server.state().config.model.as_str());
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 3, "{v}");
    assert_eq!(out[0]["role"], "user");
    assert_eq!(out[0]["content"][0]["text"], "first question");
    assert_eq!(out[1]["content"][0]["text"], "second question");
    assert_eq!(out[2]["type"], "compaction");
    // Upstream: the system message as instructions, the rest as input items, the trigger last.
    let up = h.last_upstream();
    assert!(
        up.body["instructions"]
            .as_str()
            .unwrap()
            .contains("Be brief."),
        "{}",
        up.body
    );
    let input = up.body["input"].as_array().unwrap();
    assert_eq!(input.len(), 4, "{}", up.body);
    assert_eq!(input[0]["role"], "user");
    assert_eq!(input[0]["content"][0]["type"], "input_text");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[1]["content"][0]["text"], "first answer");
    assert_eq!(input[2]["content"][0]["text"], "second question");
    assert_eq!(input[3]["type"], "compaction_trigger");
    assert!(!input.iter().any(|i| i["role"] == "system"));

    // A named model is used (and echoed); the v1 fallback works for this shape too.
    let r = h
        .post(
            "/v1/compact",
            &json!({"model": "gpt-5.5", "reasoning_effort": "low", "messages": [
                {"role": "user", "content": "EMU:no-compaction-v2 hi"}
            ]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "gpt-5.5");
    assert_eq!(
        v["output"].as_array().unwrap().last().unwrap()["type"],
        "compaction"
    );
}

#[tokio::test]
async fn compact_refuses_a_bad_chat_shaped_body_in_openai_shape() {
    let h = Harness::start().await;
    let cases = [
        (json!({"messages": "hi"}), "messages"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"messages": [{"content": "x"}]}), "messages[0]"),
        (json!({"messages": ["x"]}), "messages[0]"),
        (
            json!({"messages": [{"role": "user", "content": 7}]}),
            "messages[0].content",
        ),
        (
            json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"input": "x", "messages": [{"role": "user", "content": "x"}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let r = h.post("/v1/compact", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{body}: {e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
        assert!(!error_message(&e).is_empty());
    }
    // Neither shape: the Responses dialect's answer, as before.
    let r = h.post("/v1/compact", &json!({"model": "gpt-5.5"})).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "input");
}

#[tokio::test]
async fn usage_reports_plan_windows_and_credits() {
    let h = Harness::start().await;
    let r = h.get("/usage").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["source"], "wham/usage");
    assert_eq!(v["plan"], "plus");
    assert_eq!(v["primary"]["used_percent"], 12);
    assert_eq!(v["primary"]["window_minutes"], 300);
    assert_eq!(v["secondary"]["window_minutes"], 10080);
    assert!(v["primary"]["resets_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["credits"]["balance"], "9.99");
    assert!(v["headers"].is_null(), "no /responses call yet");
    // After a turn the x-codex-* headers are there too, and in /health.
    let _ = h
        .post("/v1/responses", &json!({"model": "gpt-5.5", "input": "hi"}))
        .await;
    let v: Value = h.get("/usage").await.json().await.unwrap();
    assert_eq!(v["headers"]["primary"]["used_percent"], 12.0);
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_secs"].is_u64());
    assert_eq!(health["live_streams"], 0);
    assert_eq!(health["rate_limits"]["secondary"]["window_minutes"], 10080);
    assert_eq!(health["kept_responses"], 1);
    assert!(health["kept_response_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_models_etag_on_a_reply_fetches_the_catalog_in_the_background() {
    let h = Harness::start().await;
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["models_source"], "builtin");
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    for _ in 0..1000 {
        if h.server.state().catalog.is_live() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.emu.stats().models_requests, 1);
    let health: Value = h.get("/health").await.json().await.unwrap();
    assert_eq!(health["models_source"], "backend");
    // The same ETag on later replies fetches nothing more.
    let _ = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "again"}]}),
        )
        .await;
    let _ = h.get("/v1/models").await;
    // Nothing is due, so no background fetch was started (one starts only when due).
    assert!(!h.server.state().catalog.is_due());
    assert_eq!(h.emu.stats().models_requests, 1);
}

#[tokio::test]
async fn usage_without_wham_or_rate_limit_headers_is_a_clear_502() {
    let dead = Harness::with(|c| c.upstream_url = "http://127.0.0.1:9/backend-api".into()).await;
    let r = dead.get("/usage").await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert!(error_message(&e).contains("usage is unavailable"));
}
