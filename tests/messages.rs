//! POST /v1/messages and /v1/messages/count_tokens end to end: the real server, the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Frame, Harness, error_message, frames};
use serde_json::{Value, json};

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

fn msg(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": text}]})
}

fn bash() -> Value {
    json!({"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}})
}

async fn create(h: &Harness, body: &Value) -> (u16, Value) {
    let r = h
        .post_with(
            "/v1/messages?beta=true",
            body,
            &[
                ("anthropic-version", "2023-06-01"),
                ("anthropic-beta", "some-future-beta-2099-01-01"),
            ],
        )
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn stream(h: &Harness, body: &Value) -> (u16, Vec<Frame>) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let r = h
        .post_with(
            "/v1/messages?beta=true",
            &body,
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, frames(&text))
}

/// Every frame has an `event:` line equal to its JSON `type`; blocks are balanced.
fn check_stream(fs: &[Frame]) -> Vec<Value> {
    let mut open: Option<u64> = None;
    let mut out = Vec::new();
    for f in fs {
        let v = f.json();
        assert_eq!(
            f.event.as_deref(),
            v["type"].as_str(),
            "event line must equal type: {v}"
        );
        match v["type"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.is_none(), "blocks never interleave");
                open = Some(v["index"].as_u64().unwrap());
            }
            "content_block_delta" => assert_eq!(open, v["index"].as_u64()),
            "content_block_stop" => {
                assert_eq!(open, v["index"].as_u64());
                open = None;
            }
            _ => {}
        }
        out.push(v);
    }
    out
}

fn types(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t != "ping")
        .collect()
}

#[tokio::test]
async fn non_stream_message_has_anthropic_shape() {
    let h = Harness::start().await;
    let (status, m) = create(&h, &msg("hello claude")).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(m["content"][0]["text"], "You said: hello claude");
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(m["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(m["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(h.last_upstream().body["model"], "gpt-5.5");
}

#[tokio::test]
async fn stream_has_the_exact_event_sequence() {
    let h = Harness::start().await;
    let (status, fs) = stream(&h, &msg("stream claude")).await;
    assert_eq!(status, 200);
    let evs = check_stream(&fs);
    assert_eq!(evs[0]["type"], "message_start");
    assert_eq!(evs[1]["type"], "ping", "a ping right after message_start");
    assert_eq!(evs[0]["message"]["model"], "claude-sonnet-4-5");
    assert!(evs[0]["message"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let t = types(&evs);
    assert_eq!(t.first().unwrap(), "message_start");
    assert_eq!(&t[t.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(t[1], "content_block_start");
    let text: String = evs
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "You said: stream claude");
    let md = evs.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(md["delta"]["stop_reason"], "end_turn");
    assert!(md["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn claude_code_style_input_is_translated_faithfully() {
    let h = Harness::start().await;
    let body = json!({
        "model": "claude-opus-5-5", "max_tokens": 128000, "stream": false,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.ce7; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Main prompt.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>\nattribution\n</system-reminder>\n"}, {"type": "text", "text": "look at this", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd", "cache_control": {"type": "ephemeral"}}], "output_config": {"effort": "medium"}},
            {"role": "user", "content": "a string follow-up"},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
                {"type": "some_future_block", "x": 1}
            ]}
        ],
        "tools": [bash(), {"name": "DeferredToolPlaceholder", "description": "never", "input_schema": {"type": "object", "properties": {}}, "defer_loading": true}],
        "metadata": {"user_id": "{\"device_id\":\"d\",\"account_uuid\":\"\",\"session_id\":\"a31f3bca-a60d-4b01-935a-96d1911167bb\"}"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "temperature": 0.5, "top_k": 5, "top_p": 0.9
    });
    let (status, m) = create(&h, &body).await;
    assert_eq!(status, 200, "{m}");
    let up = h.last_upstream().body;
    let instructions = up["instructions"].as_str().unwrap();
    assert!(!instructions.contains("x-anthropic-billing-header"));
    assert!(
        instructions.contains("You are a Claude agent.") && instructions.contains("Main prompt.")
    );
    let input = up["input"].as_array().unwrap();
    let roles: Vec<&str> = input
        .iter()
        .map(|i| i["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "developer", "user", "user"]);
    assert_eq!(
        input[0]["content"].as_array().unwrap().len(),
        2,
        "one input_text per block"
    );
    assert!(
        input[1]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("# Environment")
    );
    let imgs: Vec<&Value> = input[3]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "input_image")
        .collect();
    assert_eq!(imgs.len(), 2);
    assert!(
        imgs[0]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(imgs[1]["image_url"], "https://example.com/a.png");
    assert_eq!(up["reasoning"]["effort"], "high");
    assert_eq!(
        up["prompt_cache_key"],
        "a31f3bca-a60d-4b01-935a-96d1911167bb"
    );
    for k in [
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_output_tokens",
        "metadata",
    ] {
        assert!(up.get(k).is_none(), "{k} must not be forwarded");
    }
}

#[tokio::test]
async fn session_header_is_the_cache_key_and_cached_tokens_are_reported() {
    let h = Harness::start().await;
    let hdr = [("x-claude-code-session-id", "sess-42")];
    let body = msg(&"a long prompt prefix that the backend caches between turns. ".repeat(40));
    let first: Value = h
        .post_with("/v1/messages", &body, &hdr)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h.last_upstream().body["prompt_cache_key"], "sess-42");
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    let full = first["usage"]["input_tokens"].as_u64().unwrap();
    let m: Value = h
        .post_with("/v1/messages", &body, &hdr)
        .await
        .json()
        .await
        .unwrap();
    let u = &m["usage"];
    let cached = u["cache_read_input_tokens"].as_u64().unwrap();
    assert!(cached > 0, "second turn of a session hits the cache: {u}");
    assert_eq!(
        u["input_tokens"].as_u64().unwrap() + cached,
        full,
        "input_tokens excludes the cached tokens"
    );
}

#[tokio::test]
async fn parallel_tool_results_out_of_order_with_images_and_errors() {
    let h = Harness::start().await;
    let (status, first) = create(
        &h,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [bash()],
        "messages": [{"role": "user", "content": "EMU:parallel"}]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["stop_reason"], "tool_use");
    let uses: Vec<Value> = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .cloned()
        .collect();
    assert_eq!(uses.len(), 2);
    let (status, second) = create(&h, &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [bash()],
        "messages": [
            {"role": "user", "content": "EMU:parallel"},
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": uses[1]["id"], "content": [{"type": "text", "text": "see"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                {"type": "tool_result", "tool_use_id": uses[0]["id"], "content": "exit 1", "is_error": true, "cache_control": {"type": "ephemeral"}}
            ]}
        ]})).await;
    assert_eq!(status, 200, "{second}");
    let up = h.last_upstream().body;
    let outs: Vec<&Value> = up["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outs.len(), 2);
    assert!(
        outs[0]["output"].is_array(),
        "an image result is a list of parts"
    );
    assert!(
        outs[1]["output"].as_str().unwrap().starts_with("Error: "),
        "is_error is visible to the model"
    );
    assert_eq!(second["content"][0]["text"], "Tool output: Error: exit 1");
}

#[tokio::test]
async fn tool_use_streams_input_json_deltas_and_tool_choice_maps() {
    let h = Harness::start().await;
    let (_, fs) = stream(
        &h,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [bash()],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [{"role": "user", "content": "EMU:tool"}]}),
    )
    .await;
    let evs = check_stream(&fs);
    let start = evs
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(start["content_block"]["name"], "Bash");
    assert_eq!(start["content_block"]["input"], json!({}));
    let parts: Vec<&str> = evs
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(
        parts.iter().filter(|p| !p.is_empty()).count() >= 2,
        "fragments stream as they arrive: {parts:?}"
    );
    let input: Value = serde_json::from_str(&parts.concat()).unwrap();
    assert_eq!(input["command"], "test");
    assert_eq!(
        evs.iter().find(|e| e["type"] == "message_delta").unwrap()["delta"]["stop_reason"],
        "tool_use"
    );
    let up = h.last_upstream().body;
    assert_eq!(up["tool_choice"], "required");
    assert_eq!(up["parallel_tool_calls"], false);
    for (choice, expected) in [
        (
            json!({"type": "tool", "name": "Bash"}),
            json!({"type": "function", "name": "Bash"}),
        ),
        (json!({"type": "auto"}), json!("auto")),
    ] {
        let (s, _) = create(&h, &json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "tools": [bash()], "tool_choice": choice, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(s, 200);
        assert_eq!(h.last_upstream().body["tool_choice"], expected);
    }
}

#[tokio::test]
async fn long_tool_names_are_shortened_upstream_and_restored() {
    let h = Harness::start().await;
    let long = format!("mcp__some_server__{}", "very_long_tool_name_".repeat(4));
    assert!(long.len() > 64);
    let tool = json!({"name": long, "description": "d", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}});
    let (status, m) = create(&h, &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "tools": [tool], "messages": [{"role": "user", "content": "EMU:tool"}]})).await;
    assert_eq!(status, 200, "{m}");
    let up_name = h.last_upstream().body["tools"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(up_name.len() <= 64);
    let use_block = m["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(use_block["name"], long.as_str());
}

#[tokio::test]
async fn thinking_round_trip_over_three_turns_restores_reasoning_items() {
    let h = Harness::start().await;
    let mut messages = vec![json!({"role": "user", "content": "EMU:reasoning_tool"})];
    for turn in 0..3 {
        let (_, fs) = stream(
            &h,
            &json!({"model": "claude-opus-5-5", "max_tokens": 4096, "tools": [bash()],
            "thinking": {"type": "adaptive"}, "messages": messages}),
        )
        .await;
        let evs = check_stream(&fs);
        // Rebuild the assistant message exactly as Claude Code does from the stream.
        let mut blocks: Vec<Value> = Vec::new();
        for e in &evs {
            match e["type"].as_str().unwrap() {
                "content_block_start" => blocks.push(e["content_block"].clone()),
                "content_block_delta" => {
                    let b = blocks.last_mut().unwrap();
                    let d = &e["delta"];
                    match d["type"].as_str().unwrap() {
                        "thinking_delta" => {
                            b["thinking"] = json!(format!(
                                "{}{}",
                                b["thinking"].as_str().unwrap(),
                                d["thinking"].as_str().unwrap()
                            ))
                        }
                        "signature_delta" => b["signature"] = d["signature"].clone(),
                        "text_delta" => {
                            b["text"] = json!(format!(
                                "{}{}",
                                b["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            ))
                        }
                        "input_json_delta" => {
                            b["partial"] = json!(format!(
                                "{}{}",
                                b["partial"].as_str().unwrap_or(""),
                                d["partial_json"].as_str().unwrap()
                            ))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let sigs = evs
            .iter()
            .filter(|e| e["delta"]["type"] == "signature_delta")
            .count();
        assert_eq!(sigs, 1, "turn {turn}: the whole signature in one delta");
        for b in &mut blocks {
            if b["type"] == "tool_use" {
                let p = b["partial"].take();
                b["input"] = serde_json::from_str(p.as_str().unwrap_or("{}")).unwrap();
                b.as_object_mut().unwrap().remove("partial");
            }
        }
        assert_eq!(blocks[0]["type"], "thinking");
        let use_id = blocks.iter().find(|b| b["type"] == "tool_use").unwrap()["id"].clone();
        messages.push(json!({"role": "assistant", "content": blocks}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use_id, "content": format!("turn {turn} ok")}]}));
        messages.push(json!({"role": "user", "content": "EMU:reasoning_tool"}));
    }
    // The last upstream request carries the reasoning items right before their calls.
    let up = h.last_upstream().body;
    let input = up["input"].as_array().unwrap();
    let reasoning: Vec<usize> = input
        .iter()
        .enumerate()
        .filter(|(_, i)| i["type"] == "reasoning")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        reasoning.len(),
        2,
        "two earlier turns carried reasoning back"
    );
    for n in reasoning {
        assert!(input[n]["encrypted_content"].is_string());
        assert_ne!(input[n + 1]["type"], "reasoning");
    }
}

#[tokio::test]
async fn foreign_signatures_are_dropped_and_tampered_ones_are_rejected_upstream() {
    let h = Harness::start().await;
    let assistant = |sig: &str| {
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": sig},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
            {"type": "text", "text": "ok"}
        ]})
    };
    let (status, m) = create(&h, &json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"}, assistant("EqQBCkgIARAB-a-real-anthropic-signature"), {"role": "user", "content": "again"}]})).await;
    assert_eq!(status, 200, "{m}");
    assert!(
        h.last_upstream().body["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] != "reasoning")
    );
    // A signature of ours whose encrypted content was altered: the backend (emulator) refuses it.
    let (_, fs) = stream(&h, &json!({"model": "claude-opus-5-5", "max_tokens": 4096, "thinking": {"type": "adaptive"}, "messages": [{"role": "user", "content": "EMU:reasoning"}]})).await;
    let sig = check_stream(&fs)
        .iter()
        .find(|e| e["delta"]["type"] == "signature_delta")
        .unwrap()["delta"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = create(&h, &json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "EMU:reasoning"}, assistant(&sig), {"role": "user", "content": "again"}]})).await;
    assert_eq!(status, 200, "our own signature round-trips");
    assert!(
        h.last_upstream().body["input"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["type"] == "reasoning")
    );
}

#[tokio::test]
async fn web_search_server_tool_yields_search_blocks() {
    let h = Harness::start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5, "allowed_domains": ["docs.rs"]}],
        "messages": [{"role": "user", "content": "EMU:websearch hyper"}]});
    let (status, m) = create(&h, &body).await;
    assert_eq!(status, 200, "{m}");
    let up = h.last_upstream().body;
    let ws = up["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "web_search")
        .unwrap()
        .clone();
    assert_eq!(ws["filters"]["allowed_domains"], json!(["docs.rs"]));
    let kinds: Vec<&str> = m["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"server_tool_use") && kinds.contains(&"web_search_tool_result"),
        "{kinds:?}"
    );
    assert_eq!(m["usage"]["server_tool_use"]["web_search_requests"], 1);
    let (_, fs) = stream(&h, &body).await;
    check_stream(&fs);
}

#[tokio::test]
async fn stop_reasons_and_local_stop_sequences() {
    let h = Harness::start().await;
    for (prompt, reason) in [
        ("EMU:incomplete", "max_tokens"),
        ("EMU:content_filter", "refusal"),
    ] {
        let (_, m) = create(&h, &msg(prompt)).await;
        assert_eq!(m["stop_reason"], reason, "{m}");
    }
    let mut body = msg("alpha beta gamma delta");
    body["stop_sequences"] = json!(["gamma"]);
    let (_, m) = create(&h, &body).await;
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "gamma");
    assert_eq!(m["content"][0]["text"], "You said: alpha beta ");
    let (_, fs) = stream(&h, &body).await;
    let evs = check_stream(&fs);
    let text: String = evs
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "You said: alpha beta ");
    assert_eq!(
        evs.iter().find(|e| e["type"] == "message_delta").unwrap()["delta"]["stop_sequence"],
        "gamma"
    );
    assert!(h.last_upstream().body.get("stop").is_none());
}

#[tokio::test]
async fn model_map_uses_small_model_for_haiku() {
    let h = Harness::with(|c| c.small_model = "gpt-5.6-luna".into()).await;
    let mut body = msg("hi");
    body["model"] = json!("claude-3-5-haiku-20241022");
    let (_, m) = create(&h, &body).await;
    assert_eq!(m["model"], "claude-3-5-haiku-20241022");
    assert_eq!(h.last_upstream().body["model"], "gpt-5.6-luna");
}

#[tokio::test]
async fn errors_have_anthropic_shapes_and_statuses() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let (status, e) = create(&h, &msg("EMU:context")).await;
    assert_eq!(status, 400);
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let text = error_message(&e);
    let re_ok = text.starts_with("prompt is too long: ")
        && text.ends_with(" maximum")
        && text.contains(" tokens > ");
    assert!(re_ok, "{text}");
    let r = h.post("/v1/messages", &msg("EMU:429")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    let (status, e) = create(&h, &msg("EMU:503")).await;
    assert_eq!(status, 529);
    assert_eq!(e["error"]["type"], "overloaded_error");
    let (status, e) = create(
        &h,
        &json!({"model": "claude-x", "max_tokens": 5, "messages": "nope"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let (status, e) = create(&h, &json!({"model": "claude-x", "max_tokens": 5, "tools": [{"type": "bash_20250124", "name": "bash"}], "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 400);
    assert!(error_message(&e).contains("bash_20250124"));
    let r = h.post("/v1/messages/compact", &msg("hi")).await;
    assert!(r.status() == 501 || r.status() == 200);
    let e: Value = r.json().await.unwrap();
    assert!(e["type"] == "error" || e["type"] == "message", "{e}");
}

#[tokio::test]
async fn failure_after_the_stream_began_is_one_error_event() {
    let h = Harness::with(|c| c.upstream_retries = 0).await;
    let (status, fs) = stream(&h, &msg("EMU:error_event")).await;
    assert_eq!(status, 200);
    let evs = check_stream(&fs);
    assert_eq!(evs.last().unwrap()["type"], "error");
    assert_eq!(evs.iter().filter(|e| e["type"] == "error").count(), 1);
    assert!(evs.iter().all(|e| e["type"] != "message_stop"));
}

#[tokio::test]
async fn pings_flow_while_the_upstream_is_silent() {
    let h = Harness::with(|c| c.keepalive = std::time::Duration::from_millis(300)).await;
    let (_, fs) = stream(&h, &msg("EMU:stall:1500")).await;
    let evs = check_stream(&fs);
    assert!(
        evs.iter().filter(|e| e["type"] == "ping").count() >= 3,
        "{evs:?}"
    );
    assert_eq!(evs.last().unwrap()["type"], "message_stop");
}

#[tokio::test]
async fn count_tokens_answers_with_window_and_compact_limit() {
    let h = Harness::start().await;
    let r = h.post_with("/v1/messages/count_tokens?beta=true", &json!({"model": "claude-opus-5-5",
        "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}], "tools": [bash()]}),
        &[("anthropic-beta", "token-counting-2024-11-01")]).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 10);
    assert_eq!(v["context_window"], 272000);
    assert!(v["auto_compact_token_limit"].as_u64().unwrap() > 0);
    assert_eq!(h.emu.stats().responses_requests, 0, "counting is local");
}

#[tokio::test]
async fn count_tokens_is_within_5_percent_of_the_exact_o200k_count_of_the_translated_text() {
    let h = Harness::start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a careful engineer. Answer briefly and name the files you read."}],
    "tools": [bash()],
    "messages": [
        {"role": "user", "content": "Which files are in this repository, and what do they do? ".repeat(20)},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look at the tree first."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la && wc -l src/*.rs"}}
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": "Cargo.toml\nREADME.md\nsrc/main.rs   400 lines\nsrc/lib.rs  67 lines\n".repeat(30)}]},
        {"role": "user", "content": "Summarise what you found, en détail: ünïcode, 数字 123456 and symbols {}[]()."}
    ]});
    let r = h.post("/v1/messages/count_tokens", &body).await;
    assert_eq!(r.status(), 200);
    let counted = r.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap() as f64;
    // The same request sent for real: the emulator recorded what was translated upstream.
    let (status, m) = create(&h, &body).await;
    assert_eq!(status, 200, "{m}");
    let up = h.last_upstream().body;
    let mut texts: Vec<String> = vec![up["instructions"].as_str().unwrap().to_owned()];
    for item in up["input"].as_array().unwrap() {
        for k in ["name", "arguments", "output"] {
            if let Some(s) = item[k].as_str() {
                texts.push(s.to_owned());
            }
        }
        for part in item["content"].as_array().into_iter().flatten() {
            if let Some(s) = part["text"].as_str() {
                texts.push(s.to_owned());
            }
        }
    }
    texts.push(up["tools"].to_string());
    let exact = codex_as_api::internals::tokens::count(&texts.join("\n")) as f64;
    assert!(exact > 500.0, "a sizeable request: {exact}");
    assert!(
        (counted - exact).abs() <= exact * 0.05,
        "count_tokens said {counted}, the exact o200k count of the translated text is {exact}"
    );
}

#[tokio::test]
async fn documents_the_backend_cannot_take_are_a_clear_400_and_pdf_tool_results_are_files() {
    let h = Harness::start().await;
    for source in [
        json!({"type": "file", "file_id": "file_011"}),
        json!({"type": "base64", "media_type": "application/msword", "data": "SGVsbG8="}),
    ] {
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "read it"}, {"type": "document", "source": source}]}]});
        let (status, e) = create(&h, &body).await;
        assert_eq!(status, 400, "{source}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        let m = error_message(&e);
        assert!(
            m.contains("messages.0.content.1.source") && m.contains("base64 PDF"),
            "{m}"
        );
        // Counting tokens stays lenient.
        let r = h.post("/v1/messages/count_tokens", &body).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(h.emu.stats().responses_requests, 0);
    // A PDF read by a tool (Claude Code's Read) reaches the model as a file, not as nothing.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "tools": [bash()], "messages": [
        {"role": "user", "content": "read the report"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "cat r.pdf"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "PDF file read"},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}, "title": "r.pdf"}]}]}
    ]});
    let (status, m) = create(&h, &body).await;
    assert_eq!(status, 200, "{m}");
    let up = h.last_upstream().body;
    let out = up["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call_output")
        .unwrap();
    assert_eq!(
        out["output"],
        json!([
            {"type": "input_text", "text": "PDF file read"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0x", "filename": "r.pdf"}
        ])
    );
}
