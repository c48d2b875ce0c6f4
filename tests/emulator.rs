//! The Codex backend emulator over real loopback HTTP: every rule answers with the exact
//! rejection body, scripted streams have the §9 shape, tokens rotate, and the unary
//! endpoints (models, images, compaction, usage) behave like the real backend.

// Test helpers outside #[test] functions panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use codex_as_api::emulator::{Chunking, Emulator, EmulatorConfig, TestCredentials};
use serde_json::{Value, json};

struct Fixture {
    emu: Emulator,
    creds: TestCredentials,
    http: reqwest::Client,
}

async fn fixture() -> Fixture {
    fixture_with(EmulatorConfig::default()).await
}

async fn fixture_with(cfg: EmulatorConfig) -> Fixture {
    let emu = Emulator::start(cfg).await.unwrap();
    let creds = emu.issue_credentials(3600);
    Fixture {
        emu,
        creds,
        http: reqwest::Client::new(),
    }
}

fn body(text: &str) -> Value {
    json!({
        "model": "gpt-5.5",
        "instructions": "You are a test.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort": "medium"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-1",
    })
}

fn with_tools(mut b: Value) -> Value {
    b["tools"] = json!([
        {"type": "function", "name": "Bash", "description": "run", "strict": false,
         "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}, "bg": {"type": "boolean"}},
                        "required": ["command", "timeout", "bg"]}},
        {"type": "function", "name": "Read", "description": "read", "strict": false,
         "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
    ]);
    b
}

/// One parsed SSE event: `(event line, data JSON)`.
type Event = (String, Value);

fn parse_sse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut ev = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            let json: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            assert_eq!(json["type"], ev.as_str(), "event line matches type");
            (ev, json)
        })
        .collect()
}

fn types(events: &[Event]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    fn post_raw(&self, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/codex/responses"))
            .header(
                "authorization",
                format!("Bearer {}", self.creds.access_token),
            )
            .header("chatgpt-account-id", &self.creds.account_id)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string())
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        self.post_raw(body).send().await.unwrap()
    }

    /// POST and expect a 200 stream; returns the events, checking sequence numbers.
    async fn stream(&self, body: &Value) -> Vec<Event> {
        let resp = self.post(body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        let events = parse_sse(&text);
        for (i, (_, e)) in events.iter().enumerate() {
            assert_eq!(
                e["sequence_number"], i as u64,
                "sequence numbers increase by one"
            );
        }
        events
    }

    async fn rejected(&self, body: &Value) -> (u16, Value) {
        let resp = self.post(body).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }
}

fn detail(msg: &str) -> Value {
    json!({ "detail": msg })
}

fn item_error(msg: &str) -> Value {
    json!({"error": {"message": msg, "type": "invalid_request_error", "param": "input", "code": null}})
}

fn done_items(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|(t, _)| t == "response.output_item.done")
        .map(|(_, e)| e["item"].clone())
        .collect()
}

fn text_of(events: &[Event]) -> String {
    events
        .iter()
        .filter(|(t, _)| t == "response.output_text.delta")
        .map(|(_, e)| e["delta"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn plain_stream_has_the_full_event_sequence_and_headers() {
    let f = fixture().await;
    let resp = f.post(&body("hello there")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    for name in [
        "x-request-id",
        "x-codex-primary-used-percent",
        "x-codex-primary-window-minutes",
        "x-codex-primary-reset-at",
        "x-codex-secondary-used-percent",
        "x-codex-secondary-window-minutes",
        "x-codex-secondary-reset-at",
        "x-codex-credits-has-credits",
        "x-codex-credits-unlimited",
        "x-codex-credits-balance",
    ] {
        assert!(h.contains_key(name), "{name}");
    }
    let events = parse_sse(&resp.text().await.unwrap());
    let t = types(&events);
    assert_eq!(t[0], "response.created");
    assert_eq!(t[1], "response.in_progress");
    assert_eq!(t[2], "response.output_item.added");
    assert_eq!(t[3], "response.content_part.added");
    let deltas = t
        .iter()
        .filter(|t| **t == "response.output_text.delta")
        .count();
    assert!(deltas >= 2, "{t:?}");
    let tail = &t[t.len() - 4..];
    assert_eq!(
        tail,
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(text_of(&events), "You said: hello there");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        "You said: hello there"
    );
    let usage = &completed["usage"];
    let input = usage["input_tokens"].as_u64().unwrap();
    let output = usage["output_tokens"].as_u64().unwrap();
    assert!(input > 10);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), input + output);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(f.emu.stats().responses_requests, 1);
    assert_eq!(f.emu.requests().len(), 1);
    assert_eq!(f.emu.requests()[0].body, body("hello there"));
    assert!(!f.emu.requests()[0].zstd);
}

#[tokio::test]
async fn echo_counts_images_and_bare_messages_work() {
    let f = fixture().await;
    let mut b = body("x");
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mP4z8CAFTEMLQkAKP8/wc53yE8AAAAASUVORK5CYII=";
    b["input"] = json!([{"role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": format!("data:image/png;base64,{png}")},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"}
    ]}]);
    let events = f.stream(&b).await;
    assert_eq!(text_of(&events), "You said: look [images: 2]");
}

#[tokio::test]
async fn cached_tokens_need_matching_session_header_and_a_repeat() {
    let f = fixture().await;
    let b = body("cache me please, this is a long enough prompt to matter");
    let send = |session: &'static str| f.post_raw(&b).header("session-id", session).send();
    let first = parse_sse(&send("conv-1").await.unwrap().text().await.unwrap());
    let u1 = first.last().unwrap().1["response"]["usage"].clone();
    assert_eq!(u1["input_tokens_details"]["cached_tokens"], 0);
    let second = parse_sse(&send("conv-1").await.unwrap().text().await.unwrap());
    let u2 = second.last().unwrap().1["response"]["usage"].clone();
    let input = u1["input_tokens"].as_u64().unwrap();
    assert_eq!(
        u2["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        input / 128 * 128
    );
    let third = parse_sse(&send("other").await.unwrap().text().await.unwrap());
    assert_eq!(
        third.last().unwrap().1["response"]["usage"]["input_tokens_details"]["cached_tokens"],
        0
    );
}

#[tokio::test]
async fn zstd_body_is_accepted_and_recorded_decoded() {
    let f = fixture().await;
    let b = body("compressed hello");
    let compressed = zstd::encode_all(b.to_string().as_bytes(), 3).unwrap();
    let resp = f
        .http
        .post(f.url("/codex/responses"))
        .header("authorization", format!("Bearer {}", f.creds.access_token))
        .header("chatgpt-account-id", &f.creds.account_id)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    assert_eq!(text_of(&events), "You said: compressed hello");
    let rec = &f.emu.requests()[0];
    assert!(rec.zstd);
    assert_eq!(rec.body, b);
    assert!(
        rec.headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == "zstd")
    );
}

#[tokio::test]
async fn unsupported_parameters_are_rejected_by_name() {
    let f = fixture().await;
    for (param, value) in [
        ("max_output_tokens", json!(100)),
        ("temperature", json!(0.5)),
        ("top_p", json!(1)),
        ("presence_penalty", json!(0)),
        ("frequency_penalty", json!(0)),
        ("seed", json!(1)),
        ("metadata", json!({})),
        ("top_logprobs", json!(2)),
        ("truncation", json!("auto")),
        ("previous_response_id", json!("resp_1")),
        ("user", json!("u")),
    ] {
        let mut b = body("hi");
        b[param] = value;
        assert_eq!(
            f.rejected(&b).await,
            (400, detail(&format!("Unsupported parameter: {param}")))
        );
    }
}

#[tokio::test]
async fn store_stream_and_instructions_rules() {
    let f = fixture().await;
    let mut b = body("hi");
    b["store"] = json!(true);
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Store must be set to false"))
    );
    b.as_object_mut().unwrap().remove("store");
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Store must be set to false"))
    );
    let mut b = body("hi");
    b["stream"] = json!(false);
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Stream must be set to true"))
    );
    b.as_object_mut().unwrap().remove("stream");
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Stream must be set to true"))
    );
    let mut b = body("hi");
    b["instructions"] = json!("");
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Instructions are required"))
    );
    b.as_object_mut().unwrap().remove("instructions");
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Instructions are required"))
    );
}

#[tokio::test]
async fn unknown_model_and_effort_are_rejected() {
    let f = fixture().await;
    let mut b = body("hi");
    b["model"] = json!("gpt-5.3-codex");
    assert_eq!(
        f.rejected(&b).await,
        (
            400,
            detail(
                "The 'gpt-5.3-codex' model is not supported when using Codex with a ChatGPT account."
            )
        )
    );
    let mut b = body("hi");
    b["reasoning"] = json!({"effort": "max"});
    assert_eq!(
        f.rejected(&b).await,
        (
            400,
            json!({"error": {"message": "Unsupported value: 'max' is not supported with the 'gpt-5.5' model.", "type": "invalid_request_error", "param": "reasoning.effort", "code": "unsupported_value"}})
        )
    );
    // Every catalog model is served.
    for m in [
        "gpt-6.1-sol",
        "gpt-6-sol",
        "gpt-5.6-terra",
        "gpt-5.6-luna",
        "gpt-5.5",
    ] {
        let mut b = body("hi");
        b["model"] = json!(m);
        b["reasoning"] = json!({"effort": "low"});
        f.stream(&b).await;
    }
    let mut b = body("hi");
    b["service_tier"] = json!("flex");
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("Unsupported parameter: service_tier"))
    );
    b["service_tier"] = json!("priority");
    f.stream(&b).await;
}

#[tokio::test]
async fn system_messages_are_rejected() {
    let f = fixture().await;
    let mut b = body("hi");
    b["input"] = json!([{"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
                        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]);
    assert_eq!(
        f.rejected(&b).await,
        (400, detail("System messages are not allowed"))
    );
}

#[tokio::test]
async fn bad_tool_names_are_rejected_naming_the_tool() {
    let f = fixture().await;
    let long = "mcp__".to_owned() + &"x".repeat(60);
    for name in [long.as_str(), "has.dot", ""] {
        let mut b = with_tools(body("hi"));
        b["tools"][1]["name"] = json!(name);
        let (status, err) = f.rejected(&b).await;
        assert_eq!(status, 400);
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert_eq!(err["error"]["param"], "tools[1].name");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("tools[1].name") && msg.contains(&format!("'{name}'")),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn function_call_output_without_its_call_is_rejected() {
    let f = fixture().await;
    let mut b = body("hi");
    b["input"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "function_call_output", "call_id": "call_missing", "output": "x"}));
    assert_eq!(
        f.rejected(&b).await,
        (
            400,
            item_error("No tool call found for function call output with call_id call_missing.")
        )
    );
    let mut b = body("hi");
    b["input"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "custom_tool_call_output", "call_id": "call_c", "output": "x"}));
    assert_eq!(
        f.rejected(&b).await,
        (
            400,
            item_error("No tool call found for custom tool call output with call_id call_c.")
        )
    );
}

#[tokio::test]
async fn invalid_image_data_is_rejected() {
    let f = fixture().await;
    let bad = base64::engine::general_purpose::STANDARD.encode(b"definitely not an image");
    for url in [
        format!("data:image/png;base64,{bad}"),
        "data:image/png;base64,!!!".to_owned(),
    ] {
        let mut b = body("x");
        b["input"][0]["content"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "input_image", "image_url": url}));
        assert_eq!(
            f.rejected(&b).await,
            (
                400,
                item_error("The image data you provided does not represent a valid image")
            )
        );
    }
}

#[tokio::test]
async fn tool_directive_streams_argument_deltas_and_round_trips() {
    let f = fixture().await;
    let b = with_tools(body("do it EMU:tool"));
    let events = f.stream(&b).await;
    let arg_deltas: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "response.function_call_arguments.delta")
        .map(|(_, e)| &e["delta"])
        .collect();
    assert!(arg_deltas.len() >= 2);
    let joined: String = arg_deltas.iter().map(|d| d.as_str().unwrap()).collect();
    let items = done_items(&events);
    assert_eq!(items.len(), 1);
    let call = &items[0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "Bash");
    assert_eq!(call["arguments"].as_str().unwrap(), joined);
    let args: Value = serde_json::from_str(&joined).unwrap();
    assert_eq!(args, json!({"command": "test", "timeout": 1, "bg": true}));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));

    // Round trip: the answer depends on the tool's output.
    let mut b2 = b.clone();
    let input = b2["input"].as_array_mut().unwrap();
    input.push(call.clone());
    input.push(
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "nonce-42"}),
    );
    let events = f.stream(&b2).await;
    assert_eq!(text_of(&events), "Tool output: nonce-42");

    // List outputs with an image.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mP4z8CAFTEMLQkAKP8/wc53yE8AAAAASUVORK5CYII=";
    let last = b2["input"].as_array_mut().unwrap().last_mut().unwrap();
    last["output"] = json!([{"type": "input_text", "text": "saw"}, {"type": "input_image", "image_url": format!("data:image/png;base64,{png}")}]);
    let events = f.stream(&b2).await;
    assert_eq!(text_of(&events), "Tool output: saw [images: 1]");
}

#[tokio::test]
async fn named_tool_directive_uses_exact_arguments() {
    let f = fixture().await;
    let b = with_tools(body("EMU:tool:Bash {\"command\":\"cat nonce.txt\"}"));
    let items = done_items(&f.stream(&b).await);
    assert_eq!(items[0]["name"], "Bash");
    assert_eq!(items[0]["arguments"], "{\"command\":\"cat nonce.txt\"}");
}

#[tokio::test]
async fn parallel_and_nodelta_tool_calls() {
    let f = fixture().await;
    let items = done_items(&f.stream(&with_tools(body("EMU:parallel"))).await);
    assert_eq!(items.len(), 2);
    assert_ne!(items[0]["call_id"], items[1]["call_id"]);
    assert_ne!(items[0]["arguments"], items[1]["arguments"]);

    let events = f.stream(&with_tools(body("EMU:tool_nodelta"))).await;
    assert!(!types(&events).contains(&"response.function_call_arguments.delta"));
    let items = done_items(&events);
    assert_eq!(items[0]["type"], "function_call");
    assert!(!items[0]["arguments"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn reasoning_round_trip_accepts_echo_and_rejects_tampering() {
    let f = fixture().await;
    let b = with_tools(body("EMU:reasoning_tool"));
    let events = f.stream(&b).await;
    let t = types(&events);
    assert!(t.contains(&"response.reasoning_summary_part.added"));
    assert!(t.contains(&"response.reasoning_summary_text.delta"));
    let items = done_items(&events);
    assert_eq!(items.len(), 3);
    let (rs, msg, call) = (&items[0], &items[1], &items[2]);
    assert_eq!(rs["type"], "reasoning");
    assert!(
        rs["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("gAAAAA")
    );
    assert_eq!(msg["phase"], "commentary");
    assert_eq!(call["type"], "function_call");
    let completed = &events.last().unwrap().1["response"];
    assert!(
        completed["usage"]["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let follow_up = |items: Vec<Value>| {
        let mut b2 = b.clone();
        let input = b2["input"].as_array_mut().unwrap();
        input.extend(items);
        input.push(
            json!({"type": "function_call_output", "call_id": call["call_id"], "output": "hi\n"}),
        );
        b2
    };
    let mut echoed_rs = rs.clone();
    echoed_rs["content"] = Value::Null;
    // Echoed as received: accepted.
    let events = f
        .stream(&follow_up(vec![
            echoed_rs.clone(),
            msg.clone(),
            call.clone(),
        ]))
        .await;
    assert_eq!(text_of(&events), "Tool output: hi\n");

    // Altered encrypted_content.
    let rs_id = rs["id"].as_str().unwrap();
    let mut altered = echoed_rs.clone();
    let enc = altered["encrypted_content"].as_str().unwrap().to_owned();
    let flipped = if enc.ends_with('A') { "B" } else { "A" };
    altered["encrypted_content"] = json!(format!("{}{flipped}", &enc[..enc.len() - 1]));
    assert_eq!(
        f.rejected(&follow_up(vec![altered, msg.clone(), call.clone()]))
            .await,
        (
            400,
            item_error(&format!(
                "The encrypted content for item {rs_id} could not be verified."
            ))
        )
    );

    // Missing encrypted_content.
    let mut missing = echoed_rs.clone();
    missing.as_object_mut().unwrap().remove("encrypted_content");
    assert_eq!(
        f.rejected(&follow_up(vec![missing, msg.clone(), call.clone()]))
            .await,
        (
            400,
            item_error(&format!(
                "Item with id '{rs_id}' not found. Items are not persisted when `store` is set to false."
            ))
        )
    );

    // The call's id without its reasoning item.
    let msg_id = msg["id"].as_str().unwrap();
    assert_eq!(
        f.rejected(&follow_up(vec![msg.clone(), call.clone()]))
            .await,
        (
            400,
            item_error(&format!(
                "Item '{msg_id}' of type 'message' was provided without its required 'reasoning' item: '{rs_id}'."
            ))
        )
    );
    let fc_id = call["id"].as_str().unwrap();
    assert_eq!(
        f.rejected(&follow_up(vec![call.clone()])).await,
        (
            400,
            item_error(&format!(
                "Item '{fc_id}' of type 'function_call' was provided without its required 'reasoning' item: '{rs_id}'."
            ))
        )
    );
    // Dropping the ids (keeping call_id) is the documented fix.
    let mut bare = call.clone();
    bare.as_object_mut().unwrap().remove("id");
    f.stream(&follow_up(vec![bare])).await;

    // Reasoning as the last item.
    let mut b3 = b.clone();
    b3["input"].as_array_mut().unwrap().push(echoed_rs);
    assert_eq!(
        f.rejected(&b3).await,
        (
            400,
            item_error(&format!(
                "Item '{rs_id}' of type 'reasoning' was provided without its required following item."
            ))
        )
    );

    // Foreign encrypted content (another emulator's secret).
    let other = fixture().await;
    let foreign = done_items(&other.stream(&body("EMU:reasoning")).await)[0].clone();
    let foreign_id = foreign["id"].as_str().unwrap().to_owned();
    let mut b4 = body("hi");
    b4["input"].as_array_mut().unwrap().insert(0, foreign);
    b4["input"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]}));
    assert_eq!(
        f.rejected(&b4).await,
        (
            400,
            item_error(&format!(
                "The encrypted content for item {foreign_id} could not be verified."
            ))
        )
    );
}

#[tokio::test]
async fn reasoning_directive_has_two_summary_parts_then_text() {
    let f = fixture().await;
    let events = f.stream(&body("EMU:reasoning")).await;
    let items = done_items(&events);
    assert_eq!(items[0]["type"], "reasoning");
    assert_eq!(items[0]["summary"].as_array().unwrap().len(), 2);
    assert_eq!(items[1]["type"], "message");
    assert_eq!(text_of(&events), "You said: EMU:reasoning");

    // Without include: no encrypted_content, so the item cannot be replayed.
    let mut b = body("EMU:reasoning");
    b.as_object_mut().unwrap().remove("include");
    let items = done_items(&f.stream(&b).await);
    assert_eq!(items[0]["encrypted_content"], Value::Null);
}

#[tokio::test]
async fn http_error_directives() {
    let f = fixture().await;
    let resp = f.post(&body("EMU:401")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "token_expired"
    );

    let resp = f.post(&body("EMU:429")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-codex-primary-used-percent"], "100.0");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "usage_limit_reached");
    assert_eq!(v["error"]["plan_type"], "plus");
    assert_eq!(v["error"]["resets_in_seconds"], 3600);
    assert!(v["error"]["resets_at"].as_i64().unwrap() > 1_700_000_000);

    let resp = f.post(&body("EMU:429rate")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );

    let resp = f.post(&body("EMU:503")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "server_is_overloaded"
    );

    let resp = f.post(&body("EMU:500")).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );

    let resp = f.post(&body("EMU:403")).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("do not have access")
    );
}

#[tokio::test]
async fn flaky_fails_n_times_per_text_then_succeeds() {
    let f = fixture().await;
    for _ in 0..2 {
        let resp = f.post(&body("EMU:flaky:2 a")).await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
    }
    // A different text has its own counter.
    assert_eq!(f.post(&body("EMU:flaky:2 b")).await.status(), 503);
    let events = f.stream(&body("EMU:flaky:2 a")).await;
    assert_eq!(types(&events).last().unwrap(), &"response.completed");
}

#[tokio::test]
async fn in_stream_failures() {
    let f = fixture().await;
    let events = f.stream(&body("EMU:context")).await;
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
    assert_eq!(
        events[2].1["response"]["error"]["code"],
        "context_length_exceeded"
    );

    let events = f.stream(&body("EMU:overloaded_event")).await;
    assert_eq!(
        events.last().unwrap().1["response"]["error"]["code"],
        "server_is_overloaded"
    );

    let events = f.stream(&body("EMU:error_event")).await;
    assert!(!text_of(&events).is_empty());
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "server_error");

    for (d, reason) in [
        ("EMU:incomplete", "max_output_tokens"),
        ("EMU:content_filter", "content_filter"),
    ] {
        let events = f.stream(&body(d)).await;
        assert!(!text_of(&events).is_empty());
        let last = &events.last().unwrap().1;
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["incomplete_details"]["reason"], reason);
    }
}

#[tokio::test]
async fn cut_stream_has_no_terminal_event() {
    let f = fixture().await;
    let resp = f.post(&body("EMU:cut")).await;
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let mut text = String::new();
    let mut errored = false;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(None) => break,
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    assert!(errored, "the body ends abruptly");
    let events = parse_sse(&text);
    assert_eq!(types(&events)[0], "response.created");
    assert!(!text_of(&events).is_empty());
    for (t, _) in &events {
        assert!(!matches!(
            t.as_str(),
            "response.completed" | "response.failed" | "response.incomplete" | "error"
        ));
    }
}

#[tokio::test]
async fn slow_and_stall_delay_the_stream() {
    let f = fixture().await;
    let start = std::time::Instant::now();
    let resp = f.post(&body("EMU:slow:300")).await;
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();

    let start = std::time::Instant::now();
    let mut resp = f.post(&body("EMU:stall:400")).await;
    let head = start.elapsed();
    let mut text = String::new();
    let mut first_delta_at = None;
    while let Some(c) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
        if first_delta_at.is_none() && text.contains("response.output_text.delta") {
            first_delta_at = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    assert!(head < std::time::Duration::from_millis(300));
    assert!(first_delta_at.unwrap() < std::time::Duration::from_millis(300));
    assert!(total >= std::time::Duration::from_millis(400));
    assert_eq!(
        types(&parse_sse(&text)).last().unwrap(),
        &"response.completed"
    );
}

#[tokio::test]
async fn deltas_directive_emits_n_events_each_chunked() {
    for chunking in [Chunking::PerEvent, Chunking::Coalesced] {
        let f = fixture_with(EmulatorConfig {
            chunking,
            ..Default::default()
        })
        .await;
        let mut resp = f.post(&body("EMU:deltas:200")).await;
        let mut chunks = 0;
        let mut text = String::new();
        while let Some(c) = resp.chunk().await.unwrap() {
            chunks += 1;
            text.push_str(&String::from_utf8_lossy(&c));
        }
        let events = parse_sse(&text);
        assert_eq!(
            events
                .iter()
                .filter(|(t, _)| t == "response.output_text.delta")
                .count(),
            200
        );
        assert_eq!(types(&events).last().unwrap(), &"response.completed");
        if chunking == Chunking::Coalesced {
            assert!(chunks < 20, "{chunks}");
        } else {
            assert!(chunks > 20, "{chunks}");
        }
    }
}

#[tokio::test]
async fn websearch_and_json_directives() {
    let f = fixture().await;
    let events = f.stream(&body("EMU:websearch rust news")).await;
    let items = done_items(&events);
    assert_eq!(items[0]["type"], "web_search_call");
    assert_eq!(items[0]["action"]["type"], "search");
    assert_eq!(items[0]["action"]["query"], "rust news");
    assert_eq!(items[0]["action"]["sources"][0]["type"], "url");
    assert!(types(&events).contains(&"response.output_text.annotation.added"));
    let ann = &items[1]["content"][0]["annotations"][0];
    assert_eq!(ann["type"], "url_citation");
    let text = items[1]["content"][0]["text"].as_str().unwrap();
    let (s, e) = (
        ann["start_index"].as_u64().unwrap() as usize,
        ann["end_index"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[s..e], ann["title"].as_str().unwrap());

    let events = f.stream(&body("EMU:json")).await;
    assert_eq!(text_of(&events), "{\"answer\":\"ok\"}");
}

#[tokio::test]
async fn compaction_v2_and_v1() {
    let f = fixture().await;
    let mut b = body("summarize");
    b["input"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "compaction_trigger"}));
    let events = f.stream(&b).await;
    let items = done_items(&events);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["type"], "compaction");
    assert!(
        items[0]["encrypted_content"]
            .as_str()
            .unwrap()
            .starts_with("gAAAAA")
    );
    assert_eq!(
        events.last().unwrap().1["response"]["output"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let resp = f
        .http
        .post(f.url("/codex/responses/compact"))
        .header("authorization", format!("Bearer {}", f.creds.access_token))
        .header("chatgpt-account-id", &f.creds.account_id)
        .json(&json!({"model": "gpt-5.5", "instructions": "x", "tools": [], "parallel_tool_calls": true,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]},
                      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let out = v["output"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["content"][0]["text"], "say hi");
    assert_eq!(out[1]["type"], "compaction");
}

#[tokio::test]
async fn expired_revoked_and_foreign_tokens_get_401() {
    let f = fixture().await;
    let expired = f.emu.issue_credentials(-10);
    let expected = json!({"error": {"message": "Provided authentication token is expired. Please try signing in again.", "type": null, "code": "token_expired", "param": null}, "status": 401});
    let send = |token: String, account: String| {
        f.http
            .post(f.url("/codex/responses"))
            .header("authorization", format!("Bearer {token}"))
            .header("chatgpt-account-id", account)
            .body(body("hi").to_string())
            .send()
    };
    let resp = send(expired.access_token.clone(), expired.account_id.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap(), expected);
    let resp = send(f.creds.access_token.clone(), "wrong-account".into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = send("garbage".into(), f.creds.account_id.clone())
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A valid token without the chatgpt-account-id header is refused too.
    let resp = f
        .http
        .post(f.url("/codex/responses"))
        .header("authorization", format!("Bearer {}", f.creds.access_token))
        .body(body("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = send(f.creds.access_token.clone(), f.creds.account_id.clone())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the same request with the header passes"
    );
    assert_eq!(f.post(&body("hi")).await.status(), 200);
    f.emu.revoke_access_tokens();
    let resp = f.post(&body("hi")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap(), expected);
    let resp = f
        .http
        .get(f.url("/codex/models?client_version=0.169.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(!parts[2].is_empty());
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "none", "typ": "JWT"}));
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_detected() {
    let f = fixture_with(EmulatorConfig {
        refresh_access_ttl_secs: 120,
        ..Default::default()
    })
    .await;
    let refresh = |rt: String| {
        f.http
            .post(f.emu.token_url())
            .json(&json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann", "grant_type": "refresh_token", "refresh_reason": "proactive_expiry", "refresh_token": rt}))
            .send()
    };
    let resp = refresh(f.creds.refresh_token.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let new: Value = resp.json().await.unwrap();
    let new_access = new["access_token"].as_str().unwrap().to_owned();
    let new_refresh = new["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, f.creds.refresh_token);
    assert_ne!(new_access, f.creds.access_token);
    let c = claims(&new_access);
    let exp = c["exp"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((exp - now - 120).abs() <= 5, "exp {exp} now {now}");
    assert_eq!(
        c["https://api.openai.com/auth"]["chatgpt_account_id"],
        f.creds.account_id.as_str()
    );
    assert_eq!(
        c["https://api.openai.com/auth"]["chatgpt_plan_type"],
        "plus"
    );
    assert!(c["email"].is_string());
    claims(new["id_token"].as_str().unwrap());

    // The new access token works.
    let resp = f
        .http
        .post(f.url("/codex/responses"))
        .header("authorization", format!("Bearer {new_access}"))
        .header("chatgpt-account-id", &f.creds.account_id)
        .body(body("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Reusing the old refresh token.
    let resp = refresh(f.creds.refresh_token.clone()).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": {"message": "Your refresh token has already been used to generate a new access token. Please try signing in again.", "type": "invalid_request_error", "param": null, "code": "refresh_token_reused"}})
    );
    // Unknown token.
    let resp = refresh("rt_unknown".into()).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "refresh_token_invalidated"
    );
    // The rotated one still works once.
    assert_eq!(refresh(new_refresh.clone()).await.unwrap().status(), 200);
    assert_eq!(refresh(new_refresh).await.unwrap().status(), 401);
    assert_eq!(f.emu.stats().token_calls, 5);

    // Form-encoded authorization_code: a code /oauth/authorize never issued is refused
    // (the full PKCE flow is tested in tests/cli.rs).
    let resp = f
        .http
        .post(f.emu.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=abc&redirect_uri=http%3A%2F%2F127.0.0.1%3A1455%2Fauth%2Fcallback&client_id=app_EMoamEEZ73f0CkXaXp7hrann&code_verifier=v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn models_catalog_with_etag_and_304() {
    let f = fixture().await;
    let get = |etag: Option<String>| {
        let mut r = f
            .http
            .get(f.url("/codex/models?client_version=0.169.0"))
            .header("authorization", format!("Bearer {}", f.creds.access_token))
            .header("chatgpt-account-id", &f.creds.account_id);
        if let Some(e) = etag {
            r = r.header("if-none-match", e);
        }
        r.send()
    };
    let resp = get(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    let models = v["models"].as_array().unwrap();
    let find = |slug: &str| models.iter().find(|m| m["slug"] == slug).cloned().unwrap();
    let m = find("gpt-5.5");
    assert_eq!(m["context_window"], 272000);
    assert_eq!(m["use_responses_lite"], false);
    assert_eq!(m["support_verbosity"], true);
    assert_eq!(m["default_reasoning_level"], "medium");
    let efforts: Vec<&str> = m["supported_reasoning_levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["effort"].as_str().unwrap())
        .collect();
    assert_eq!(efforts, ["low", "medium", "high", "xhigh"]);
    assert!(m["base_instructions"].is_string());
    for slug in ["gpt-6.1-sol", "gpt-6-sol", "gpt-5.6-terra", "gpt-5.6-luna"] {
        assert_eq!(find(slug)["use_responses_lite"], true);
    }
    let resp = get(Some(etag.clone())).await.unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(get(Some("\"other\"".into())).await.unwrap().status(), 200);
    assert_eq!(f.emu.stats().models_requests, 3);
}

#[tokio::test]
async fn images_return_real_pngs_honouring_n() {
    let f = fixture().await;
    let resp = f
        .http
        .post(f.url("/codex/images/generations"))
        .header("authorization", format!("Bearer {}", f.creds.access_token))
        .header("chatgpt-account-id", &f.creds.account_id)
        .json(&json!({"prompt": "a small red square", "background": "opaque", "model": "gpt-image-2", "quality": "auto", "size": "auto", "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let png = base64::engine::general_purpose::STANDARD
        .decode(data[0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.ends_with(&[0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]));
    assert!(data[0]["revised_prompt"].is_string());
    assert!(v["created"].is_i64());
    assert!(v["usage"]["total_tokens"].is_u64());
    assert_eq!(f.emu.stats().images_requests, 1);
}

#[tokio::test]
async fn usage_accounts_and_unknown_routes() {
    let f = fixture().await;
    let get = |path: &str| {
        f.http
            .get(f.url(path))
            .header("authorization", format!("Bearer {}", f.creds.access_token))
            .header("chatgpt-account-id", &f.creds.account_id)
            .send()
    };
    let v: Value = get("/wham/usage").await.unwrap().json().await.unwrap();
    assert_eq!(v["plan_type"], "plus");
    assert_eq!(
        v["rate_limit"]["primary_window"]["limit_window_seconds"],
        18000
    );
    let v: Value = get("/wham/accounts/check")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["default_account_id"], f.creds.account_id.as_str());
    let resp = get("/nope").await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"detail": "Not Found"})
    );
}

#[tokio::test]
async fn credentials_write_auth_json_and_hide_tokens_in_debug() {
    let f = fixture().await;
    let dbg = format!("{:?}", f.creds);
    assert!(!dbg.contains(&f.creds.access_token));
    assert!(!dbg.contains(&f.creds.refresh_token));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    f.creds.write_auth_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\n  \"tokens\": {"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["auth_mode"], "chatgpt");
    assert_eq!(v["OPENAI_API_KEY"], Value::Null);
    assert_eq!(v["tokens"]["access_token"], f.creds.access_token.as_str());
    assert_eq!(v["tokens"]["account_id"], f.creds.account_id.as_str());
    assert!(v["last_refresh"].as_str().unwrap().ends_with('Z'));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[tokio::test]
async fn h2_prior_knowledge_and_keep_alive_connections() {
    let f = fixture().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let resp = h2
            .post(f.url("/codex/responses"))
            .header("authorization", format!("Bearer {}", f.creds.access_token))
            .header("chatgpt-account-id", &f.creds.account_id)
            .body(body("over h2").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(
            text_of(&parse_sse(&resp.text().await.unwrap())),
            "You said: over h2"
        );
    }
    for _ in 0..3 {
        f.stream(&body("keep alive")).await;
    }
    assert_eq!(f.emu.stats().connections_accepted, 2);
    f.emu.shutdown().await;
}

/// TLS mode, end to end: verify against `ca_pem()`, negotiate each ALPN protocol, stream.
#[tokio::test]
async fn tls_mode_serves_h1_and_h2_with_the_generated_ca() {
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;

    let f = fixture_with(EmulatorConfig {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(f.emu.base_url().starts_with("https://127.0.0.1:"));
    assert!(f.emu.token_url().starts_with("https://127.0.0.1:"));
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(f.emu.ca_pem().unwrap().as_bytes())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for (alpn, name) in [(&b"h2"[..], "localhost"), (&b"http/1.1"[..], "127.0.0.1")] {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(f.emu.addr()).await.unwrap();
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(server_name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = hyper::Request::post(format!("{}/codex/responses", f.emu.base_url()))
            .header("authorization", format!("Bearer {}", f.creds.access_token))
            .header("chatgpt-account-id", &f.creds.account_id)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body("over tls").to_string(),
            )))
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let events = parse_sse(std::str::from_utf8(&bytes).unwrap());
        assert_eq!(text_of(&events), "You said: over tls");
    }
}

// ---------------------------------------------------------------------------------------
// Accounts: several of them, the per-account limit of open streams, usage limits.

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits (up to 10 s) until `cond` holds: for state the emulator reaches on its own
/// schedule, like a stream released after its client left.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The exact 429 of the per-account concurrency limit.
fn too_many_streams() -> Value {
    json!({"error": {"type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "param": null,
        "message": "Too many concurrent requests for this account. Please try again later."}})
}

impl Fixture {
    fn post_as(&self, creds: &TestCredentials, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/codex/responses"))
            .header("authorization", format!("Bearer {}", creds.access_token))
            .header("chatgpt-account-id", &creds.account_id)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Opens a stream that stalls after its first delta for a minute; returns once the
    /// head and the first delta have arrived, so the stream is certainly open.
    async fn hold_open(&self, creds: &TestCredentials, tag: &str) -> reqwest::Response {
        let mut resp = self
            .post_as(creds, &body(&format!("EMU:stall:60000 {tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut seen = String::new();
        while !seen.contains("response.output_text.delta") {
            let chunk = resp
                .chunk()
                .await
                .unwrap()
                .expect("the stream stalls, not ends");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        resp
    }

    fn get_as(&self, creds: &TestCredentials, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .header("authorization", format!("Bearer {}", creds.access_token))
            .header("chatgpt-account-id", &creds.account_id)
    }
}

#[tokio::test]
async fn account_concurrency_refuses_the_stream_over_the_limit() {
    let f = fixture_with(EmulatorConfig {
        account_concurrency: Some(2),
        ..Default::default()
    })
    .await;
    let acct = f.creds.account_id.clone();
    assert_eq!(acct, f.emu.account_id());
    let a = f.hold_open(&f.creds, "a").await;
    let b = f.hold_open(&f.creds, "b").await;
    let s = f.emu.account_stats(&acct);
    assert_eq!((s.open_streams, s.peak_open_streams), (2, 2));

    // The third is refused: 429, the exact body, no Retry-After, the usual x-codex headers.
    let resp = f.post(&body("third")).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(resp.headers()["x-codex-primary-used-percent"], "12.0");
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.json::<Value>().await.unwrap(), too_many_streams());
    let s = f.emu.account_stats(&acct);
    assert_eq!(s.concurrency_refusals, 1);
    assert_eq!(s.open_streams, 2, "a refusal opens nothing");
    assert_eq!(s.requests, 3);
    assert_eq!(f.emu.stats().concurrency_refusals, 1);

    // A client that leaves releases its stream.
    drop(a);
    wait_until("the abandoned stream is released", || {
        f.emu.account_stats(&acct).open_streams == 1
    })
    .await;
    // A stream that finishes releases it too: two in a row fit next to `b` only if the
    // first was released when its body ended.
    for _ in 0..2 {
        let events = f.stream(&body("after")).await;
        assert_eq!(types(&events).last().unwrap(), &"response.completed");
    }
    let s = f.emu.account_stats(&acct);
    assert_eq!((s.open_streams, s.peak_open_streams), (1, 2));
    assert_eq!(s.concurrency_refusals, 1);
    f.emu.reset_peaks();
    assert_eq!(f.emu.account_stats(&acct).peak_open_streams, 1);
    drop(b);

    // Unknown accounts have no counters.
    assert_eq!(
        f.emu.account_stats("nobody"),
        codex_as_api::emulator::AccountStats::default()
    );
}

#[tokio::test]
async fn account_concurrency_counts_a_stream_from_admission_through_its_slow_start() {
    let f = fixture().await;
    f.emu.set_account_concurrency(Some(1));
    let acct = f.creds.account_id.clone();
    // `EMU:slow` delays the head: the stream is open before any byte leaves.
    let slow = tokio::spawn(f.post_raw(&body("EMU:slow:60000 slow")).send());
    wait_until("the slow request is admitted", || {
        f.emu.account_stats(&acct).open_streams == 1
    })
    .await;
    let resp = f.post(&body("second")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.json::<Value>().await.unwrap(), too_many_streams());
    // A unary error answer holds no stream: with the limit at 1 and one open, a scripted
    // 503 is still refused for concurrency, and once the limit is lifted answers 503 and
    // leaves the count alone.
    assert_eq!(f.post(&body("EMU:503")).await.status(), 429);
    f.emu.set_account_concurrency(None);
    assert_eq!(f.post(&body("EMU:503")).await.status(), 503);
    assert_eq!(f.emu.account_stats(&acct).open_streams, 1);
    f.stream(&body("unlimited now")).await;
    assert_eq!(f.emu.account_stats(&acct).concurrency_refusals, 2);
    slow.abort();
}

#[tokio::test]
async fn account_concurrency_is_per_account() {
    let f = fixture_with(EmulatorConfig {
        account_concurrency: Some(2),
        ..Default::default()
    })
    .await;
    let other = f.emu.add_account();
    assert_ne!(other, f.emu.account_id());
    let other_creds = f.emu.issue_credentials_for(&other, 3600);
    assert_eq!(other_creds.account_id, other);
    let mut held = Vec::new();
    for (creds, tag) in [
        (&f.creds, "a1"),
        (&other_creds, "b1"),
        (&f.creds, "a2"),
        (&other_creds, "b2"),
    ] {
        held.push(f.hold_open(creds, tag).await);
    }
    for id in [f.emu.account_id(), other.clone()] {
        let s = f.emu.account_stats(&id);
        assert_eq!(
            (s.open_streams, s.peak_open_streams, s.concurrency_refusals),
            (2, 2, 0),
            "{id}"
        );
    }
    // Both accounts are at their limit now.
    let resp = f.post_as(&other_creds, &body("b3")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(f.post(&body("a3")).await.status(), 429);
    assert_eq!(f.emu.account_stats(&other).concurrency_refusals, 1);
    assert_eq!(f.emu.stats().concurrency_refusals, 2);
}

#[tokio::test]
async fn accounts_have_their_own_tokens_and_refresh_keeps_the_account() {
    let f = fixture().await;
    let other = f.emu.add_account();
    let creds = f.emu.issue_credentials_for(&other, 3600);
    let auth = |jwt: &str| claims(jwt)["https://api.openai.com/auth"].clone();
    let mine = auth(&f.creds.access_token);
    let theirs = auth(&creds.access_token);
    assert_eq!(theirs["chatgpt_account_id"], other.as_str());
    assert_eq!(auth(&creds.id_token)["chatgpt_account_id"], other.as_str());
    assert_ne!(theirs["chatgpt_user_id"], mine["chatgpt_user_id"]);
    // A token is only good with its own account's id.
    let mut wrong = creds.clone();
    wrong.account_id = f.emu.account_id();
    assert_eq!(
        f.post_as(&wrong, &body("hi"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let mut current = creds.clone();
    for _ in 0..2 {
        let resp = f
            .http
            .post(f.emu.token_url())
            .json(&json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann", "grant_type": "refresh_token", "refresh_token": current.refresh_token}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        current = TestCredentials {
            id_token: v["id_token"].as_str().unwrap().to_owned(),
            access_token: v["access_token"].as_str().unwrap().to_owned(),
            refresh_token: v["refresh_token"].as_str().unwrap().to_owned(),
            account_id: other.clone(),
        };
        let refreshed = auth(&current.access_token);
        assert_eq!(refreshed["chatgpt_account_id"], other.as_str());
        assert_eq!(refreshed["chatgpt_user_id"], theirs["chatgpt_user_id"]);
        assert_eq!(
            auth(&current.id_token)["chatgpt_account_id"],
            other.as_str()
        );
        let resp = f.post_as(&current, &body("hi")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
    }
    assert_eq!(f.emu.account_stats(&other).requests, 2);
    assert_eq!(f.emu.account_stats(&f.emu.account_id()).requests, 0);

    // The account endpoints answer for the presented token's account.
    let v: Value = f
        .get_as(&current, "/wham/accounts/check")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["default_account_id"], other.as_str());
    assert_eq!(v["accounts"][0]["id"], other.as_str());
    let v: Value = f
        .get_as(&f.creds, "/wham/accounts/check")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["default_account_id"], f.emu.account_id().as_str());

    // Credentials for an id the emulator has not seen register that account.
    let named = f.emu.issue_credentials_for("acct-named-by-test", 3600);
    assert_eq!(
        auth(&named.access_token)["chatgpt_account_id"],
        "acct-named-by-test"
    );
    f.stream_as(&named, "hello").await;
}

impl Fixture {
    async fn stream_as(&self, creds: &TestCredentials, text: &str) -> Vec<Event> {
        let resp = self.post_as(creds, &body(text)).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        parse_sse(&text)
    }
}

#[tokio::test]
async fn usage_limit_refuses_that_account_until_cleared() {
    let f = fixture().await;
    let other = f.emu.add_account();
    let creds = f.emu.issue_credentials_for(&other, 3600);
    let resets_at = now_unix() + 5000;
    f.emu.set_usage_limit(&other, Some(resets_at));
    // Checked before the concurrency limit: even with no stream allowed at all, the
    // limited account answers usage_limit_reached and opens nothing.
    f.emu.set_account_concurrency(Some(0));

    let resp = f.post_as(&creds, &body("hi")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-codex-primary-used-percent"], "100.0");
    assert_eq!(
        resp.headers()["x-codex-primary-reset-at"],
        resets_at.to_string().as_str()
    );
    assert!(resp.headers().get("retry-after").is_none());
    let v: Value = resp.json().await.unwrap();
    let in_secs = v["error"]["resets_in_seconds"].as_i64().unwrap();
    assert!((4990..=5000).contains(&in_secs), "{in_secs}");
    assert_eq!(
        v,
        json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
            "plan_type": "plus", "resets_at": resets_at, "resets_in_seconds": in_secs}})
    );
    let s = f.emu.account_stats(&other);
    assert_eq!(
        (
            s.usage_limit_refusals,
            s.concurrency_refusals,
            s.peak_open_streams
        ),
        (1, 0, 0)
    );

    // `/wham/usage` shows it for that account only.
    let v: Value = f
        .get_as(&creds, "/wham/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rate_limit"]["primary_window"]["used_percent"], 100);
    assert_eq!(v["rate_limit"]["primary_window"]["reset_at"], resets_at);
    assert_eq!(v["rate_limit"]["limit_reached"], true);
    assert_eq!(v["rate_limit"]["allowed"], false);
    let v: Value = f
        .get_as(&f.creds, "/wham/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rate_limit"]["primary_window"]["used_percent"], 12);
    assert_eq!(v["rate_limit"]["limit_reached"], false);

    // The other account is only held by the concurrency limit.
    let resp = f.post(&body("hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.json::<Value>().await.unwrap(), too_many_streams());
    f.emu.set_account_concurrency(None);
    f.stream(&body("hi")).await;
    assert_eq!(
        f.post_as(&creds, &body("hi"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );

    f.emu.set_usage_limit(&other, None);
    let events = f.stream_as(&creds, "hi").await;
    assert_eq!(types(&events).last().unwrap(), &"response.completed");
    let v: Value = f
        .get_as(&creds, "/wham/usage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["rate_limit"]["primary_window"]["used_percent"], 12);
    assert_eq!(f.emu.account_stats(&other).usage_limit_refusals, 2);
}

#[tokio::test]
async fn flakyevent_fails_in_stream_n_times_then_succeeds() {
    let f = fixture().await;
    for _ in 0..2 {
        let events = f.stream(&body("EMU:flakyevent:2 a")).await;
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.failed"
            ]
        );
        assert_eq!(
            events[2].1["response"]["error"]["code"],
            "server_is_overloaded"
        );
    }
    let events = f.stream(&body("EMU:flakyevent:2 a")).await;
    assert_eq!(types(&events).last().unwrap(), &"response.completed");

    // Each of the flaky family keeps its own count for the same text.
    let text = "EMU:flaky:1 EMU:flakyevent:1 b";
    assert_eq!(f.post(&body(text)).await.status(), 503);
    let events = f.stream(&body(text)).await;
    assert_eq!(types(&events).last().unwrap(), &"response.failed");
    let events = f.stream(&body(text)).await;
    assert_eq!(types(&events).last().unwrap(), &"response.completed");
}

#[tokio::test]
async fn flakyreset_aborts_n_times_before_any_byte_then_succeeds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture().await;
    // HTTP/1.1: the connection closes with not a single byte of a response.
    let raw_request = |text: &str| {
        let b = body(text).to_string();
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\nchatgpt-account-id: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            f.creds.access_token,
            f.creds.account_id,
            b.len()
        )
    };
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(f.emu.addr()).await.unwrap();
        tcp.write_all(raw_request("EMU:flakyreset:2 a").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    let events = f.stream(&body("EMU:flakyreset:2 a")).await;
    assert_eq!(types(&events).last().unwrap(), &"response.completed");
    assert_eq!(f.emu.live_streams(), 0);
    assert_eq!(f.emu.account_stats(&f.creds.account_id).open_streams, 0);

    // h2: the stream is refused (REFUSED_STREAM: not processed); the connection goes on.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let send = |text: &str| {
        h2.post(f.url("/codex/responses"))
            .header("authorization", format!("Bearer {}", f.creds.access_token))
            .header("chatgpt-account-id", &f.creds.account_id)
            .body(body(text).to_string())
            .send()
    };
    let before = f.emu.stats().connections_accepted;
    let requests = f.emu.stats().responses_requests;
    // hyper's client retries a REFUSED_STREAM by itself (it is safe to): the refusal and the
    // retry both reach the emulator, on the one connection.
    let resp = send("EMU:flakyreset:1 h2").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(f.emu.stats().responses_requests, requests + 2);
    assert_eq!(
        types(&parse_sse(&resp.text().await.unwrap()))
            .last()
            .unwrap(),
        &"response.completed"
    );
    assert_eq!(f.emu.stats().connections_accepted, before + 1);
}
