//! POST /v1/chat/completions end to end: the real server, the emulator over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use codex_as_api::config::Transport;
use common::{Harness, error_message, frames};
use serde_json::{Value, json};

fn user(text: &str) -> Value {
    json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": text}]})
}

async fn stream_text(h: &Harness, body: &Value) -> (reqwest::StatusCode, String) {
    let resp = h.post("/v1/chat/completions", body).await;
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// The chunk JSONs of a stream (without `[DONE]`), asserting `[DONE]` ends it.
fn chunks(body: &str) -> Vec<Value> {
    let fs = frames(body);
    assert_eq!(
        fs.last().map(|f| f.data.as_str()),
        Some("[DONE]"),
        "stream must end with [DONE]: {body}"
    );
    fs[..fs.len() - 1]
        .iter()
        .map(|f| {
            assert!(f.event.is_none(), "chat chunks have no event: lines");
            f.json()
        })
        .collect()
}

#[tokio::test]
async fn non_stream_answer_has_openai_shape_and_the_clients_model() {
    let h = Harness::start().await;
    let resp = h.post("/v1/chat/completions", &json!({
        "model": "my-local-alias",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    })).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "my-local-alias");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "You said: hello there"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
    assert!(u["completion_tokens_details"]["reasoning_tokens"].is_u64());
    // Unknown model → the configured backend model; instructions from the system message.
    let up = h.last_upstream();
    assert_eq!(up.body["model"], "gpt-5.5");
    assert_eq!(up.body["instructions"], "Be brief.");
    assert_eq!(up.body["store"], false);
    assert_eq!(up.body["stream"], true);
    // Over a WebSocket (the default) frames are never zstd; over HTTP bodies are.
    assert!(up.websocket() && !up.zstd);
    let h = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    h.post("/v1/chat/completions", &user("over http")).await;
    assert!(
        h.last_upstream().zstd,
        "bodies are zstd-compressed by default"
    );
}

#[tokio::test]
async fn stream_has_role_chunk_content_finish_and_done() {
    let h = Harness::start().await;
    let (status, body) = stream_text(
        &h,
        &json!({
            "model": "gpt-5.5", "stream": true,
            "messages": [{"role": "user", "content": "stream me"}]
        }),
    )
    .await;
    assert_eq!(status, 200);
    let cs = chunks(&body);
    let id = cs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        cs[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let mut text = String::new();
    for c in &cs {
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-5.5");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, "You said: stream me");
    assert!(
        cs.iter()
            .filter(|c| c["choices"][0]["delta"]["content"].is_string())
            .count()
            > 2,
        "text arrives in several deltas"
    );
    let last = cs.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn messages_map_to_instructions_developer_items_images_calls_and_outputs() {
    let h = Harness::start().await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let resp = h.post("/v1/chat/completions", &json!({
        "model": "gpt-5.5",
        "messages": [
            {"role": "system", "content": "Base rules."},
            {"role": "developer", "content": "More rules."},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "system", "content": "Mid-conversation note."},
            {"role": "user", "content": "and now?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    })).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let up = h.last_upstream().body;
    assert_eq!(up["instructions"], "Base rules.\n\nMore rules.");
    let input = up["input"].as_array().unwrap();
    let kinds: Vec<String> = input
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap_or("?"),
                i["role"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "message:user",
            "message:assistant",
            "function_call:",
            "function_call_output:",
            "message:developer",
            "message:user"
        ]
    );
    let parts = input[0]["content"].as_array().unwrap();
    assert_eq!(parts[0], json!({"type": "input_text", "text": "look"}));
    assert_eq!(parts[1]["type"], "input_image");
    assert!(
        parts[1]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(parts[2]["image_url"], "https://example.com/cat.jpg");
    assert_eq!(parts[2]["detail"], "low");
    assert_eq!(input[2]["call_id"], "call_1");
    assert_eq!(input[2]["name"], "get_weather");
    assert_eq!(input[3]["output"], "sunny");
    assert_eq!(up["tools"][0]["name"], "get_weather");
    assert_eq!(up["tools"][0]["type"], "function");
    assert_eq!(up["parallel_tool_calls"], true);
    assert_eq!(up["tool_choice"], "auto");
}

#[tokio::test]
async fn tool_calls_stream_incrementally_with_index_id_and_name_first() {
    let h = Harness::start().await;
    let (status, body) = stream_text(&h, &json!({
        "model": "gpt-5.5", "stream": true,
        "messages": [{"role": "user", "content": "EMU:tool"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    })).await;
    assert_eq!(status, 200);
    let cs = chunks(&body);
    let calls: Vec<&Value> = cs
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(
        calls.len() >= 3,
        "a start chunk and at least two argument fragments: {body}"
    );
    assert_eq!(calls[0]["index"], 0);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], "");
    let mut args = String::new();
    for c in &calls[1..] {
        assert!(
            c.get("id").is_none() && c["function"].get("name").is_none(),
            "only the first chunk names the call"
        );
        args.push_str(c["function"]["arguments"].as_str().unwrap());
    }
    let parsed: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(parsed["city"], "test");
    assert_eq!(
        cs.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn parallel_tool_calls_get_indices_zero_and_one() {
    let h = Harness::start().await;
    let (_, body) = stream_text(&h, &json!({
        "model": "gpt-5.5", "stream": true,
        "messages": [{"role": "user", "content": "EMU:parallel"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    })).await;
    let cs = chunks(&body);
    let starts: Vec<&Value> = cs
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .filter(|c| c.get("id").is_some())
        .collect();
    assert_eq!(starts.len(), 2, "{body}");
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[1]["index"], 1);
    assert_ne!(starts[0]["id"], starts[1]["id"]);
    // Non-stream: both calls, content null.
    let v: Value = h.post("/v1/chat/completions", &json!({
        "model": "gpt-5.5",
        "messages": [{"role": "user", "content": "EMU:parallel"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    })).await.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn tool_choice_and_parallel_flag_are_forwarded() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]);
    for (choice, expected) in [
        (json!("required"), json!("required")),
        (json!("auto"), json!("auto")),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"type": "function", "name": "f"}),
        ),
    ] {
        let r = h
            .post(
                "/v1/chat/completions",
                &json!({
                    "model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}],
                    "tools": tools, "tool_choice": choice, "parallel_tool_calls": false
                }),
            )
            .await;
        assert_eq!(r.status(), 200);
        let up = h.last_upstream().body;
        assert_eq!(up["tool_choice"], expected);
        assert_eq!(up["parallel_tool_calls"], false);
    }
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}],
                "tools": tools, "tool_choice": "none"
            }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let up = h.last_upstream().body;
    assert!(up["tools"].as_array().unwrap().is_empty() || up["tool_choice"] == "none");
}

#[tokio::test]
async fn tool_round_trip_answers_from_the_tool_output() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
    let first: Value = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-5.5", "tools": tools,
                "messages": [{"role": "user", "content": "EMU:tool"}]
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    let msg = first["choices"][0]["message"].clone();
    let call = &msg["tool_calls"][0];
    let second: Value = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-5.5", "tools": tools,
                "messages": [
                    {"role": "user", "content": "EMU:tool"},
                    msg,
                    {"role": "tool", "tool_call_id": call["id"], "content": "the answer is 42"}
                ]
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "Tool output: the answer is 42"
    );
}

#[tokio::test]
async fn reasoning_streams_as_reasoning_content_and_effort_is_forwarded() {
    let h = Harness::start().await;
    let (_, body) = stream_text(
        &h,
        &json!({
            "model": "gpt-5.5", "stream": true, "reasoning_effort": "high",
            "messages": [{"role": "user", "content": "EMU:reasoning"}]
        }),
    )
    .await;
    let cs = chunks(&body);
    let reasoning: String = cs
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert!(!reasoning.is_empty(), "{body}");
    assert!(
        reasoning.contains("\n\n"),
        "summary parts are separated: {reasoning:?}"
    );
    for c in &cs {
        let d = &c["choices"][0]["delta"];
        assert!(
            !(d.get("reasoning_content").is_some() && d.get("content").is_some()),
            "never both in one delta"
        );
    }
    let up = h.last_upstream().body;
    assert_eq!(up["reasoning"]["effort"], "high");
    assert_eq!(up["include"][0], "reasoning.encrypted_content");
    // minimal is clamped to the model's lowest level; non-stream carries message.reasoning_content.
    let v: Value = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-5.5", "reasoning_effort": "minimal",
                "messages": [{"role": "user", "content": "EMU:reasoning"}]
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        v["choices"][0]["message"]["reasoning_content"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    assert_eq!(h.last_upstream().body["reasoning"]["effort"], "low");
}

#[tokio::test]
async fn response_format_becomes_text_format() {
    let h = Harness::start().await;
    let r = h.post("/v1/chat/completions", &json!({
        "model": "gpt-5.5", "messages": [{"role": "user", "content": "EMU:json reply in JSON"}],
        "response_format": {"type": "json_object"}
    })).await;
    let v: Value = r.json().await.unwrap();
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["answer"], "ok");
    assert_eq!(
        h.last_upstream().body["text"]["format"]["type"],
        "json_object"
    );
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]});
    h.post("/v1/chat/completions", &json!({
        "model": "gpt-5.5", "messages": [{"role": "user", "content": "EMU:json"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "ans", "schema": schema, "strict": true}}
    })).await;
    let f = &h.last_upstream().body["text"]["format"];
    assert_eq!(f["type"], "json_schema");
    assert_eq!(f["name"], "ans");
    assert_eq!(f["schema"], schema);
    assert_eq!(f["strict"], true);
}

#[tokio::test]
async fn include_usage_adds_a_final_usage_chunk() {
    let h = Harness::start().await;
    let (_, body) = stream_text(
        &h,
        &json!({
            "model": "gpt-5.5", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "count me"}]
        }),
    )
    .await;
    let cs = chunks(&body);
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    for c in &cs[..cs.len() - 1] {
        assert_eq!(c["usage"], Value::Null);
    }
}

#[tokio::test]
async fn finish_reasons_for_incomplete_and_content_filter() {
    let h = Harness::start().await;
    for (prompt, reason) in [
        ("EMU:incomplete", "length"),
        ("EMU:content_filter", "content_filter"),
    ] {
        let v: Value = h
            .post("/v1/chat/completions", &user(prompt))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], reason, "{v}");
        let (_, body) = stream_text(&h, &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": prompt}]})).await;
        assert_eq!(
            chunks(&body).last().unwrap()["choices"][0]["finish_reason"],
            reason
        );
    }
}

#[tokio::test]
async fn unsupported_openai_fields_are_accepted_and_never_forwarded() {
    let h = Harness::start().await;
    let r = h.post("/v1/chat/completions", &json!({
        "model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 10,
        "stop": ["x"], "user": "u1", "seed": 7, "n": 1, "logprobs": false,
        "presence_penalty": 0.1, "frequency_penalty": 0.1, "metadata": {"a": "b"}, "store": true
    })).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let up = h.last_upstream().body;
    for k in [
        "temperature",
        "top_p",
        "max_tokens",
        "max_output_tokens",
        "stop",
        "user",
        "seed",
        "n",
        "logprobs",
        "metadata",
        "presence_penalty",
        "frequency_penalty",
    ] {
        assert!(up.get(k).is_none(), "{k} must not be forwarded");
    }
    assert_eq!(up["store"], false);
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["param"], "n");
}

#[tokio::test]
async fn cache_key_subagent_and_session_headers_go_upstream() {
    // The HTTP request's headers (the WebSocket handshake's: tests/upstream_ws.rs).
    let h = Harness::with(|c| c.upstream_transport = Transport::Sse).await;
    h.post_with(
        "/v1/chat/completions",
        &json!({
            "model": "gpt-5.5", "prompt_cache_key": "conv-123",
            "messages": [{"role": "user", "content": "hi"}]
        }),
        &[("x-openai-subagent", "review")],
    )
    .await;
    let up = h.last_upstream();
    assert_eq!(up.body["prompt_cache_key"], "conv-123");
    let header = |n: &str| {
        up.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("session-id").as_deref(), Some("conv-123"));
    assert_eq!(header("thread-id").as_deref(), Some("conv-123"));
    assert_eq!(header("x-client-request-id").as_deref(), Some("conv-123"));
    assert_eq!(header("x-openai-subagent").as_deref(), Some("review"));
    assert_eq!(header("originator").as_deref(), Some("codex_cli_rs"));
    assert!(
        header("user-agent")
            .unwrap()
            .starts_with("codex_cli_rs/0.169.0")
    );
    assert_eq!(header("version").as_deref(), Some("0.169.0"));
    // Without a key the id is stable per conversation: same first turn → same id.
    h.post("/v1/chat/completions", &user("stable please")).await;
    let a = h.last_upstream().body["prompt_cache_key"].clone();
    h.post("/v1/chat/completions", &user("stable please")).await;
    assert_eq!(h.last_upstream().body["prompt_cache_key"], a);
}

#[tokio::test]
async fn memgen_and_subagent_go_upstream_as_headers_from_headers_or_body_fields() {
    let h = Harness::start().await;
    let header = |up: &codex_as_api::emulator::RecordedRequest, n: &str| {
        up.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let r = h
        .post_with(
            "/v1/chat/completions",
            &user("hi"),
            &[("x-openai-memgen-request", "true")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let up = h.last_upstream();
    assert_eq!(
        header(&up, "x-openai-memgen-request").as_deref(),
        Some("true")
    );
    assert_eq!(header(&up, "x-openai-subagent"), None);
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "subagent": "compact", "memgen_request": true,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let up = h.last_upstream();
    assert_eq!(header(&up, "x-openai-subagent").as_deref(), Some("compact"));
    assert_eq!(
        header(&up, "x-openai-memgen-request").as_deref(),
        Some("true")
    );
    assert!(up.body.get("subagent").is_none() && up.body.get("memgen_request").is_none());
    h.post("/v1/chat/completions", &user("hi")).await;
    let up = h.last_upstream();
    assert_eq!(header(&up, "x-openai-subagent"), None);
    assert_eq!(header(&up, "x-openai-memgen-request"), None);
}

#[tokio::test]
async fn no_compression_setting_sends_plain_json_bodies() {
    let h = Harness::with(|c| c.compress = false).await;
    let r = h.post("/v1/chat/completions", &user("plain body")).await;
    assert_eq!(r.status(), 200);
    let up = h.last_upstream();
    assert!(!up.zstd, "no_compression turns zstd off");
    assert!(up.headers.iter().all(|(k, _)| k != "content-encoding"));
    assert_eq!(up.body["input"][0]["content"][0]["text"], "plain body");
}

#[tokio::test]
async fn usage_limit_is_429_with_retry_after_and_reset_time() {
    let h = Harness::start().await;
    let r = h.post("/v1/chat/completions", &user("EMU:429")).await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&ra), "{ra}");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "insufficient_quota");
    assert!(error_message(&e).contains("plus"));
    assert_eq!(
        h.emu.stats().responses_requests,
        1,
        "usage limits are never retried"
    );
}

#[tokio::test]
async fn context_overflow_is_400_context_length_exceeded() {
    let h = Harness::start().await;
    for stream in [false, true] {
        let r = h.post("/v1/chat/completions", &json!({"model": "gpt-5.5", "stream": stream, "messages": [{"role": "user", "content": "EMU:context"}]})).await;
        assert_eq!(
            r.status(),
            400,
            "the head is held so early failures become statuses"
        );
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "context_length_exceeded");
    }
}

#[tokio::test]
async fn overload_is_retried_then_503_with_retry_after() {
    let h = Harness::with(|c| c.upstream_retries = 1).await;
    let r = h.post("/v1/chat/completions", &user("EMU:503")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "server_is_overloaded");
    assert_eq!(
        h.emu.stats().responses_requests,
        2,
        "one retry before the first byte"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_before_the_first_byte() {
    let h = Harness::start().await;
    let r = h
        .post("/v1/chat/completions", &user("EMU:flaky:1 then fine"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.emu.stats().responses_requests, 2);
}

#[tokio::test]
async fn other_upstream_failures_are_5xx() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let r = h.post("/v1/chat/completions", &user("EMU:500")).await;
    assert_eq!(r.status(), 500);
    let r = h.post("/v1/chat/completions", &user("EMU:cut")).await;
    assert_eq!(
        r.status(),
        502,
        "a non-stream answer cut before completion is a failure"
    );
}

#[tokio::test]
async fn failure_after_streaming_began_ends_with_one_error_chunk_then_done() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    for prompt in ["EMU:error_event", "EMU:cut"] {
        let (status, body) = stream_text(&h, &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": prompt}]})).await;
        assert_eq!(status, 200, "{prompt}: {body}");
        let cs = chunks(&body);
        let errors: Vec<&Value> = cs.iter().filter(|c| c.get("error").is_some()).collect();
        assert_eq!(errors.len(), 1, "{body}");
        assert!(
            cs.last().unwrap().get("error").is_some(),
            "nothing after the error chunk but [DONE]"
        );
        assert!(
            cs.iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null()),
            "a failed stream is never a success"
        );
    }
}

#[tokio::test]
async fn keepalive_comments_flow_while_the_upstream_is_silent() {
    let h = Harness::with(|c| c.keepalive = std::time::Duration::from_millis(300)).await;
    let resp = h.post("/v1/chat/completions", &json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "EMU:stall:1500"}]})).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains(": keep-alive\n\n"), "{body}");
    assert_eq!(frames(&body).last().unwrap().data, "[DONE]");
}

/// A fresh server against the harness's emulator that reads the (changed) auth.json again.
async fn server_on_same_auth(h: &Harness) -> codex_as_api::Server {
    let mut config = codex_as_api::config::Config::for_tests(&h.emu.base_url(), h.auth_path());
    config.token_url = h.emu.token_url();
    codex_as_api::Server::bind(config).await.unwrap()
}

#[tokio::test]
async fn missing_credentials_give_401_that_says_codex_login() {
    let h = Harness::start().await;
    std::fs::remove_file(h.auth_path()).unwrap();
    // A fresh server on the same (now empty) auth path.
    let server = server_on_same_auth(&h).await;
    let base = format!("http://{}", server.addr());
    let health: Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["auth_available"], false);
    let r = h
        .http
        .post(format!("{base}/v1/chat/completions"))
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert!(error_message(&e).contains("codex login"), "{e}");
}

#[tokio::test]
async fn permanently_failed_refresh_is_401_with_the_relogin_message() {
    let h = Harness::start().await;
    // Expired access token whose refresh token the emulator never issued.
    let mut auth: Value =
        serde_json::from_str(&std::fs::read_to_string(h.auth_path()).unwrap()).unwrap();
    let expired = h.emu.issue_credentials(-60);
    auth["tokens"]["access_token"] = json!(expired.access_token);
    auth["tokens"]["refresh_token"] = json!("rt_unknown");
    std::fs::write(h.auth_path(), serde_json::to_vec_pretty(&auth).unwrap()).unwrap();
    let server = server_on_same_auth(&h).await;
    let r = h
        .http
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&user("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    assert!(error_message(&e).contains("sign in again"), "{e}");
    assert_eq!(h.emu.stats().responses_requests, 0);
}

#[tokio::test]
async fn bad_requests_are_400_in_openai_shape() {
    let h = Harness::start().await;
    let r = h
        .http
        .post(h.url("/v1/chat/completions"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": "nope"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5.5", "messages": [{"role": "wizard", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = h.get("/v1/nothing-here").await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert!(error_message(&e).contains("/v1/nothing-here"));
}
