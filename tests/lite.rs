//! "Responses lite" models (codex-backend.md §7.1) end to end: the catalog flag picks the
//! layout, tools travel as a leading `additional_tools` item, calls come back namespaced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use codex_as_api::emulator::RecordedRequest;
use common::{Harness, frames};
use serde_json::{Value, json};

fn header<'a>(r: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Asserts the lite layout and returns the tools of the `functions` namespace.
fn assert_lite(r: &RecordedRequest, instructions: &str) -> Vec<Value> {
    let b = &r.body;
    // Over HTTP a header; over a WebSocket (the default) the frame's client_metadata.
    match &r.frame {
        None => assert_eq!(
            header(r, "x-openai-internal-codex-responses-lite"),
            Some("true")
        ),
        Some(f) => assert_eq!(
            f["client_metadata"]["ws_request_header_x_openai_internal_codex_responses_lite"],
            "true"
        ),
    }
    assert!(b.get("tools").is_none(), "{b}");
    assert!(b.get("instructions").is_none(), "{b}");
    assert_eq!(b["parallel_tool_calls"], false);
    assert_eq!(b["tool_choice"], "auto");
    assert_eq!(b["reasoning"]["context"], "all_turns");
    let at = &b["input"][0];
    assert_eq!(at["type"], "additional_tools");
    assert_eq!(at["role"], "developer");
    assert!(at["id"].as_str().unwrap().starts_with("at_"));
    let ns = &at["tools"][0];
    assert_eq!(ns["type"], "namespace");
    assert_eq!(ns["name"], "functions");
    let dev = &b["input"][1];
    assert_eq!(dev["role"], "developer");
    assert_eq!(dev["content"][0]["text"], instructions);
    ns["tools"].as_array().unwrap().clone()
}

#[tokio::test]
async fn chat_tools_on_a_lite_model_use_the_lite_layout_and_round_trip() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
    let first: Value = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-6.1-sol", "tools": tools,
                "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "EMU:tool"}]
            }),
        )
        .await
        .json()
        .await
        .unwrap();
    let up = h.last_upstream();
    let inner = assert_lite(&up, "Be terse.");
    assert_eq!(inner[0]["name"], "lookup");
    assert_eq!(up.body["input"][2]["role"], "user");
    let msg = first["choices"][0]["message"].clone();
    let call = &msg["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup", "{first}");
    let second: Value = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-6.1-sol", "tools": tools,
                "messages": [
                    {"role": "system", "content": "Be terse."},
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
        second["choices"][0]["message"]["content"], "Tool output: the answer is 42",
        "{second}"
    );
    // The tool prefix is byte-identical across turns (prompt cache).
    let bodies = h.upstream_bodies();
    assert_eq!(bodies[0]["input"][0], bodies[1]["input"][0]);
    assert_eq!(bodies[0]["input"][1], bodies[1]["input"][1]);
    // The replayed call carries the namespace the backend gave it.
    let replayed = bodies[1]["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(replayed["namespace"], "functions");
    assert_eq!(replayed["name"], "lookup");
}

#[tokio::test]
async fn chat_tool_choice_none_on_a_lite_model_sends_no_tools() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-6.1-sol", "tool_choice": "none",
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
                "messages": [{"role": "user", "content": "hi"}]
            }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let b = h.last_upstream().body;
    assert_eq!(b["tool_choice"], "auto");
    assert!(b.get("tools").is_none());
    assert_eq!(b["input"][0]["type"], "message");
    assert_eq!(b["input"][0]["role"], "developer");
}

#[tokio::test]
async fn messages_tools_on_a_lite_model_use_the_lite_layout_and_names_map_back() {
    let h = Harness::start().await;
    let long = format!("mcp__some_server__{}", "very_long_tool_name_".repeat(4));
    let tool = json!({"name": long, "description": "d", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}});
    let r = h
        .post_with(
            "/v1/messages",
            &json!({"model": "gpt-6.1-sol", "max_tokens": 1024, "system": "You are terse.",
                    "tools": [tool], "messages": [{"role": "user", "content": "EMU:tool"}]}),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    let up = h.last_upstream();
    let inner = assert_lite(&up, "You are terse.");
    let up_name = inner[0]["name"].as_str().unwrap();
    assert!(up_name.len() <= 64 && up_name != long);
    let use_block = m["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(use_block["name"], long.as_str());
}

#[tokio::test]
async fn responses_passthrough_tools_move_into_additional_tools_on_a_lite_model() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-6.1-sol", "instructions": "S", "input": "EMU:tool", "stream": true,
                    "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
                              {"type": "web_search"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let up = h.last_upstream();
    let inner = assert_lite(&up, "S");
    assert_eq!(inner[0]["name"], "lookup");
    assert_eq!(up.body["input"][0]["tools"][1]["type"], "web_search");
    // The stream is forwarded as the backend sent it: the call names its namespace, and a
    // client replaying it sends the namespace back.
    let call = frames(&text)
        .iter()
        .filter(|f| f.data.starts_with('{'))
        .map(|f| f.json())
        .find(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "function_call")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(call["item"]["name"], "lookup");
    assert_eq!(call["item"]["namespace"], "functions");
}

#[tokio::test]
async fn classic_model_keeps_the_classic_layout() {
    let h = Harness::start().await;
    let r = h
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "gpt-5.5",
                "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
                "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
            }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let up = h.last_upstream();
    assert_eq!(header(&up, "x-openai-internal-codex-responses-lite"), None);
    assert_eq!(up.body["instructions"], "Be terse.");
    assert_eq!(up.body["tools"][0]["name"], "lookup");
    assert_eq!(up.body["input"][0]["role"], "user");
    assert!(up.body["reasoning"].get("context").is_none());
}

#[tokio::test]
async fn emulator_serves_lite_bodies_without_instructions_only_for_lite_models() {
    let h = Harness::start().await;
    let post = |body: Value| {
        h.http
            .post(format!("{}/codex/responses", h.emu.base_url()))
            .header("authorization", format!("Bearer {}", h.creds.access_token))
            .header("chatgpt-account-id", &h.creds.account_id)
            .header("x-openai-internal-codex-responses-lite", "true")
            .json(&body)
            .send()
    };
    let lite = |model: &str| {
        json!({
            "model": model,
            "input": [
                {"type": "additional_tools", "id": "at_1", "role": "developer", "tools": [
                    {"type": "namespace", "name": "functions", "description": "", "tools": [
                        {"type": "function", "name": "lookup", "strict": false,
                         "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "S"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "EMU:tool"}]}
            ],
            "tool_choice": "auto", "parallel_tool_calls": false,
            "reasoning": {"effort": "low", "context": "all_turns"},
            "store": false, "stream": true, "include": ["reasoning.encrypted_content"]
        })
    };
    let r = post(lite("gpt-6.1-sol")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let call = frames(&text)
        .iter()
        .map(|f| f.json())
        .find(|e| e["type"] == "response.output_item.done" && e["item"]["type"] == "function_call")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(call["item"]["name"], "lookup");
    assert_eq!(call["item"]["namespace"], "functions");
    let r = post(lite("gpt-5.5")).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"detail": "Instructions are required"}));
}

#[tokio::test]
async fn non_stream_responses_keep_the_call_namespace_and_history_replays_it() {
    let h = Harness::start().await;
    let tools = json!([{"type": "function", "name": "lookup",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]);
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-6.1-sol", "instructions": "S", "input": "EMU:tool", "tools": tools}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let call = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("{first}"))
        .clone();
    assert_eq!(call["name"], "lookup");
    assert_eq!(call["namespace"], "functions", "{call}");

    // Chained: the kept call goes back to the backend with its namespace.
    let r = h
        .post(
            "/v1/responses",
            &json!({"model": "gpt-6.1-sol", "instructions": "S", "tools": tools,
                    "previous_response_id": first["id"],
                    "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let up = h.last_upstream();
    let replayed = up.body["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap_or_else(|| panic!("{}", up.body))
        .clone();
    assert_eq!(replayed["namespace"], "functions", "{replayed}");
    assert_eq!(replayed["call_id"], call["call_id"]);
}
