//! Unit tests of the Chat dialect: request translation, the stream encoder and the
//! non-stream render, each through the plan the way the pipeline drives it.

use bytes::BytesMut;
use http::HeaderMap;
use serde_json::{Value as J, json};

use super::render::*;
use super::stream::*;
use super::*;
use crate::dialect::{Encoder, Plan};
use crate::error::Error;
use crate::upstream::collect::Collected;
use crate::upstream::events::{Decoder, Delta, Usage};

fn plan_with(body: J, headers: &HeaderMap) -> Result<ChatPlan, Error> {
    crate::dialect::translate_json(translate, &body, headers)
}

fn plan(body: J) -> ChatPlan {
    plan_with(body, &HeaderMap::new()).unwrap()
}

fn err(body: J) -> Error {
    match plan_with(body, &HeaderMap::new()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn upstream(body: J) -> J {
    serde_json::from_slice(&plan(body).upstream().body()).unwrap()
}

fn user(text: &str) -> J {
    json!({"role": "user", "content": text})
}

// ---- request translation ----

#[test]
fn leading_system_messages_become_instructions_and_later_ones_developer_items() {
    let up = upstream(json!({
        "model": "gpt-5.5",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            user("hi"),
            {"role": "system", "content": "Now be verbose."}
        ]
    }));
    assert_eq!(up["instructions"], "Be terse.\n\nUse metric.");
    assert_eq!(
        up["input"],
        json!([
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Now be verbose."}]}
        ])
    );
    assert_eq!(up["model"], "gpt-5.5");
    assert_eq!(up["store"], false);
    assert_eq!(up["stream"], true);
    assert_eq!(up["reasoning"]["summary"], "auto");
}

#[test]
fn user_images_keep_parts_separate_with_data_and_https_urls() {
    let up = upstream(json!({
        "model": "gpt-5.5",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": "https://example.com/cat.jpg"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
        ]}]
    }));
    assert_eq!(
        up["input"][0]["content"],
        json!([
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
        ])
    );
}

#[test]
fn bad_image_data_urls_and_audio_input_are_rejected_clearly() {
    let image = |url: &str| {
        json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]})
    };
    let e = err(image("data:image/tiff;base64,AAAA"));
    assert_eq!(e.status(Protocol::OpenAi), 400);
    assert!(
        e.message.contains("data:image/(png|jpeg|gif|webp)"),
        "{}",
        e.message
    );
    let e = err(image("data:image/png;base64,not base64!"));
    assert!(e.message.contains("not valid base64"), "{}", e.message);
    let e = err(
        json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
    );
    assert!(e.message.contains("audio"));
}

#[test]
fn assistant_text_comes_before_its_tool_calls_and_tool_results_pair_by_id() {
    let up = upstream(json!({
        "model": "gpt-5.5",
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "messages": [
            user("weather?"),
            {"role": "assistant", "content": "Checking.", "reasoning_content": "ignored", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_b", "content": "rainy"},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny"}, {"type": "text", "text": "22C"}]}
        ]
    }));
    let input = up["input"].as_array().unwrap();
    assert_eq!(
        input[1],
        json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]})
    );
    assert_eq!(
        input[2],
        json!({"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(input[3]["call_id"], "call_b");
    assert_eq!(
        input[4],
        json!({"type": "function_call_output", "call_id": "call_b", "output": "rainy"})
    );
    assert_eq!(input[5]["output"], "sunny\n22C");
    assert_eq!(
        up["tools"][0],
        json!({"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": false})
    );
}

#[test]
fn tool_result_without_a_matching_call_is_a_400_on_messages() {
    let e = err(json!({"model": "gpt-5.5", "messages": [
        user("hi"),
        {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}
    ]}));
    assert_eq!(e.status(Protocol::OpenAi), 400);
    assert_eq!(e.param.as_deref(), Some("messages"));
    assert!(e.message.contains("call_zzz"));
}

#[test]
fn legacy_function_messages_pair_with_the_last_legacy_call() {
    let p = plan(json!({"model": "gpt-5.5",
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": {"name": "f"},
    "messages": [
        user("go"),
        {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "done"}
    ]}));
    assert!(p.answer.legacy);
    let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
    assert_eq!(up["input"][1]["type"], "function_call");
    assert_eq!(up["input"][2]["call_id"], up["input"][1]["call_id"]);
    assert_eq!(up["tool_choice"], json!({"type": "function", "name": "f"}));
    assert_eq!(up["parallel_tool_calls"], false);
}

#[test]
fn ignored_parameters_never_reach_the_upstream() {
    let up = upstream(json!({
        "model": "gpt-5.5", "messages": [user("hi")],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 10,
        "stop": ["x"], "user": "u1", "seed": 7, "logprobs": true, "top_logprobs": 2,
        "presence_penalty": 1, "frequency_penalty": 1, "logit_bias": {"1": 2},
        "metadata": {"a": "b"}, "store": true, "prediction": {"type": "content", "content": "x"},
        "modalities": ["text"], "prompt_cache_retention": "24h", "service_tier": "scale",
        "stream_options": {"include_obfuscation": true}, "n": 1, "some_future_field": {"x": 1}
    }));
    for k in [
        "temperature",
        "top_p",
        "max_tokens",
        "max_output_tokens",
        "max_completion_tokens",
        "stop",
        "user",
        "seed",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "metadata",
        "prediction",
        "modalities",
        "prompt_cache_retention",
        "service_tier",
        "stream_options",
        "n",
        "some_future_field",
    ] {
        assert!(up.get(k).is_none(), "{k} leaked upstream");
    }
    assert_eq!(up["store"], false);
}

#[test]
fn n_above_one_and_audio_output_are_400() {
    let e = err(json!({"model": "gpt-5.5", "messages": [user("hi")], "n": 2}));
    assert_eq!(e.param.as_deref(), Some("n"));
    let e = err(json!({"model": "gpt-5.5", "messages": [user("hi")], "audio": {"voice": "x"}}));
    assert_eq!(e.param.as_deref(), Some("audio"));
    let e =
        err(json!({"model": "gpt-5.5", "messages": [user("hi")], "modalities": ["text", "audio"]}));
    assert_eq!(e.param.as_deref(), Some("modalities"));
}

#[test]
fn missing_or_mistyped_fields_name_the_field() {
    assert_eq!(
        err(json!({"messages": [user("hi")]})).param.as_deref(),
        Some("model")
    );
    assert_eq!(
        err(json!({"model": "gpt-5.5", "messages": []}))
            .param
            .as_deref(),
        Some("messages")
    );
    let e = err(json!({"model": "gpt-5.5", "messages": {"role": "user"}}));
    assert!(
        e.message.contains("`messages` must be an array"),
        "{}",
        e.message
    );
    let e = err(json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": 5}]}));
    assert_eq!(e.param.as_deref(), Some("messages[0].content"));
    let e = err(json!({"model": "gpt-5.5", "messages": [{"role": "wizard", "content": "x"}]}));
    assert!(e.message.contains("wizard"));
}

#[test]
fn tool_choice_variants_map_to_the_backend() {
    let tools = json!([
        {"type": "function", "function": {"name": "a"}},
        {"type": "function", "function": {"name": "b"}},
        {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: x"}}}}
    ]);
    let with = |choice: J| {
        upstream(
            json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools, "tool_choice": choice}),
        )
    };
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools}));
    assert_eq!(up["tool_choice"], "auto");
    assert_eq!(up["parallel_tool_calls"], true);
    assert_eq!(up["tools"].as_array().unwrap().len(), 3);
    assert_eq!(
        up["tools"][2],
        json!({"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}})
    );
    assert_eq!(with(json!("required"))["tool_choice"], "required");
    let none = with(json!("none"));
    assert_eq!(none["tools"], json!([]));
    let forced = with(json!({"type": "function", "function": {"name": "b"}}));
    assert_eq!(
        forced["tool_choice"],
        json!({"type": "function", "name": "b"})
    );
    let allowed = with(
        json!({"type": "allowed_tools", "allowed_tools": {"mode": "required",
            "tools": [{"type": "function", "function": {"name": "a"}}]}}),
    );
    assert_eq!(allowed["tool_choice"], "required");
    assert_eq!(allowed["tools"].as_array().unwrap().len(), 1);
    assert_eq!(allowed["tools"][0]["name"], "a");
    let custom = with(json!({"type": "custom", "custom": {"name": "apply_patch"}}));
    assert_eq!(custom["tool_choice"], "required");
    assert_eq!(custom["tools"][0]["name"], "apply_patch");
    assert_eq!(custom["tools"].as_array().unwrap().len(), 1);
    let e = err(
        json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "zzz"}}}),
    );
    assert_eq!(e.param.as_deref(), Some("tool_choice"));
    let off = upstream(
        json!({"model": "gpt-5.5", "messages": [user("hi")], "parallel_tool_calls": false}),
    );
    assert_eq!(off["parallel_tool_calls"], false);
}

#[test]
fn response_format_json_object_and_json_schema_flatten_into_text_format() {
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_object"}, "verbosity": "low"}));
    assert_eq!(
        up["text"],
        json!({"format": {"type": "json_object"}, "verbosity": "low"})
    );
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person",
                "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": true, "description": "A person"}}}));
    assert_eq!(
        up["text"],
        json!({"format": {"type": "json_schema", "name": "person",
                "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": true, "description": "A person"}})
    );
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}));
    assert_eq!(up["text"]["format"]["name"], "codex_output_schema");
    let up = upstream(
        json!({"model": "gpt-5.5", "messages": [user("x")], "response_format": {"type": "text"}}),
    );
    assert!(up.get("text").is_none());
}

#[test]
fn reasoning_effort_is_clamped_to_the_model_and_defaults_to_the_catalog() {
    let effort = |extra: J| {
        let mut body = json!({"model": "gpt-5.5", "messages": [user("x")]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        upstream(body)["reasoning"]["effort"].clone()
    };
    assert_eq!(effort(json!({})), "medium");
    assert_eq!(effort(json!({"reasoning_effort": "minimal"})), "low");
    assert_eq!(effort(json!({"reasoning_effort": "high"})), "high");
    assert_eq!(effort(json!({"reasoning": {"effort": "max"}})), "xhigh");
}

#[test]
fn long_tool_names_are_shortened_upstream_and_restored_in_both_answers() {
    let long = format!("mcp__server__{}", "x".repeat(80));
    let p = plan(
        json!({"model": "gpt-5.5", "messages": [user("x")], "stream": true,
            "tools": [{"type": "function", "function": {"name": long}}]}),
    );
    let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
    let short = up["tools"][0]["name"].as_str().unwrap().to_owned();
    assert_ne!(short, long);
    assert!(short.len() <= 64);

    let mut enc = ChatEncoder::new(&p.core, &p.answer, "chatcmpl-1", 1);
    let mut out = BytesMut::new();
    enc.delta(
        &Delta::ToolCallStart {
            index: 0,
            call_id: "call_1",
            name: &short,
            custom: false,
        },
        &mut out,
    );
    let chunk = chunks(&out);
    assert_eq!(
        chunk[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        long.as_str()
    );

    let mut c = Collected::new();
    c.push(&Delta::ToolCallStart {
        index: 0,
        call_id: "call_1",
        name: &short,
        custom: false,
    });
    c.push(&Delta::ToolCallDone {
        index: 0,
        call_id: "call_1",
        name: &short,
        namespace: None,
        arguments: "{}",
        custom: false,
    });
    c.push(&Delta::Completed {
        usage: Usage::default(),
    });
    let v: J = serde_json::from_slice(&render(&p.core, &p.answer, &c, "chatcmpl-1", 1)).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        long.as_str()
    );
}

#[test]
fn cache_key_is_the_prompt_cache_key_or_stable_per_conversation_and_api_key() {
    let body = json!({"model": "gpt-5.5", "messages": [{"role": "system", "content": "S"}, user("first")]});
    assert_eq!(
        upstream(
            json!({"model": "gpt-5.5", "messages": [user("x")], "prompt_cache_key": "conv-1"})
        )["prompt_cache_key"],
        "conv-1"
    );
    let a = upstream(body.clone())["prompt_cache_key"].clone();
    let mut longer = body.clone();
    longer["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "ok"}));
    longer["messages"]
        .as_array_mut()
        .unwrap()
        .push(user("second"));
    assert_eq!(
        upstream(longer)["prompt_cache_key"],
        a,
        "later turns keep the key"
    );
    let mut other = body.clone();
    other["user"] = json!("someone");
    assert_ne!(upstream(other)["prompt_cache_key"], a);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, "Bearer k2".parse().unwrap());
    let p = plan_with(body, &headers).unwrap();
    assert_ne!(p.upstream().conversation_id, a.as_str().unwrap());
}

#[test]
fn codex_extras_come_from_headers_or_body() {
    let mut headers = HeaderMap::new();
    headers.insert("x-openai-subagent", "review".parse().unwrap());
    headers.insert("x-openai-memgen-request", "true".parse().unwrap());
    let p = plan_with(
        json!({"model": "gpt-5.5", "messages": [user("x")]}),
        &headers,
    )
    .unwrap();
    assert_eq!(p.upstream().subagent.as_deref(), Some("review"));
    assert!(p.upstream().memgen);
    let p = plan(
        json!({"model": "gpt-5.5", "messages": [user("x")], "subagent": "compact", "memgen_request": true}),
    );
    assert_eq!(p.upstream().subagent.as_deref(), Some("compact"));
    assert!(p.upstream().memgen);
}

#[test]
fn web_search_options_add_the_hosted_tool_and_sources() {
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("x")],
            "web_search_options": {"user_location": {"type": "approximate", "approximate": {"country": "FR"}}}}));
    assert_eq!(
        up["tools"][0],
        json!({"type": "web_search", "external_web_access": true, "user_location": {"type": "approximate", "country": "FR"}})
    );
    assert_eq!(up["include"][1], "web_search_call.action.sources");
}

#[test]
fn priority_tier_is_forwarded_only_when_the_catalog_lists_it() {
    let up =
        upstream(json!({"model": "gpt-5.5", "messages": [user("x")], "service_tier": "priority"}));
    assert_eq!(up["service_tier"], "priority");
    let up = upstream(json!({"model": "gpt-5.5", "messages": [user("x")], "service_tier": "flex"}));
    assert!(up.get("service_tier").is_none());
}

// ---- streaming ----

/// The JSON of every `data:` frame (`[DONE]` as the string "[DONE]").
fn chunks(out: &[u8]) -> Vec<J> {
    let s = std::str::from_utf8(out).unwrap();
    assert!(s.ends_with("\n\n"), "frames end with a blank line");
    s.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let data = f
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad frame {f:?}"));
            if data == "[DONE]" {
                J::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// The `delta` of every chunk (`[DONE]` left out).
fn deltas(out: &[u8]) -> Vec<J> {
    chunks(out)
        .iter()
        .filter(|c| c.is_object())
        .map(|c| c["choices"][0]["delta"].clone())
        .collect()
}

fn stream_plan(extra: J) -> ChatPlan {
    let mut body = json!({"model": "my-client-model", "messages": [user("x")], "stream": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    plan(body)
}

fn run(p: &ChatPlan, events: &[&str]) -> Vec<u8> {
    let mut enc = ChatEncoder::new(&p.core, &p.answer, "chatcmpl-1", 1795509282);
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    let mut dec = Decoder::new();
    for e in events {
        dec.decode(e.as_bytes(), |d| enc.delta(d, &mut out))
            .unwrap();
    }
    out.to_vec()
}

#[test]
fn text_stream_with_include_usage_matches_the_documented_frames() {
    let p = stream_plan(json!({"stream_options": {"include_usage": true}}));
    let out = run(
        &p,
        &[
            r#"{"type":"response.created","response":{"id":"resp_1"}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"message","role":"assistant"}}"#,
            r#"{"type":"response.output_text.delta","output_index":0,"delta":"Hi"}"#,
            r#"{"type":"response.output_text.delta","output_index":0,"delta":"!\n\"x\""}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"message","content":[{"type":"output_text","text":"Hi!"}]}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":1246}}}"#,
        ],
    );
    let head = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795509282,"model":"my-client-model","system_fingerprint":null,"choices":[{"index":0,"delta":"#;
    let tail = r#","logprobs":null,"finish_reason":null}],"usage":null}"#;
    let expected = format!(
        "{head}{{\"role\":\"assistant\",\"content\":\"\"}}{tail}\n\n\
             {head}{{\"content\":\"Hi\"}}{tail}\n\n\
             {head}{{\"content\":\"!\\n\\\"x\\\"\"}}{tail}\n\n\
             {head}{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n\
             data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795509282,\"model\":\"my-client-model\",\"system_fingerprint\":null,\"choices\":[],\"usage\":{{\"prompt_tokens\":1234,\"completion_tokens\":12,\"total_tokens\":1246,\"prompt_tokens_details\":{{\"cached_tokens\":1024,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":4,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n\
             data: [DONE]\n\n"
    );
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    for c in chunks(&out) {
        if c.is_object() {
            assert_eq!(c["id"], "chatcmpl-1");
        }
    }
}

#[test]
fn two_parallel_tool_calls_stream_by_index_as_fragments_arrive() {
    let p =
        stream_plan(json!({"tools": [{"type": "function", "function": {"name": "get_weather"}}]}));
    let out = run(
        &p,
        &[
            r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","call_id":"call_a1","name":"get_weather","arguments":""}}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\"city\":"}"#,
            r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","call_id":"call_b2","name":"get_weather","arguments":""}}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":1,"delta":"{\"city\":\"Rome\"}"}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"\"Paris\"}"}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_a1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"function_call","call_id":"call_b2","name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        ],
    );
    let c = chunks(&out);
    let deltas = deltas(&out);
    assert_eq!(
        deltas,
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"tool_calls": [{"index": 0, "id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "call_b2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\":\"Rome\"}"}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            json!({}),
        ]
    );
    let last = &c[c.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        last.get("usage").is_none(),
        "no usage keys without include_usage"
    );
    assert_eq!(c[c.len() - 1], "[DONE]");
    for chunk in &c[..c.len() - 2] {
        assert_eq!(chunk["choices"][0]["finish_reason"], J::Null);
        assert_eq!(chunk["choices"][0]["logprobs"], J::Null);
        assert_eq!(chunk["system_fingerprint"], J::Null);
    }
}

#[test]
fn reasoning_streams_as_the_configured_field_with_a_blank_line_between_parts() {
    let p = stream_plan(json!({}));
    let out = run(
        &p,
        &[
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"**Plan**"}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":1,"delta":"Then act."}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"e","summary":[{"text":"**Plan**"},{"text":"Then act."}]}}"#,
            r#"{"type":"response.output_text.delta","output_index":1,"delta":"Done"}"#,
            r#"{"type":"response.completed","response":{}}"#,
        ],
    );
    let deltas = deltas(&out);
    assert_eq!(
        deltas,
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"reasoning_content": "**Plan**"}),
            json!({"reasoning_content": "\n\nThen act."}),
            json!({"content": "Done"}),
            json!({}),
        ]
    );
}

#[test]
fn incomplete_for_max_output_tokens_finishes_with_length() {
    let p = stream_plan(json!({}));
    let out = run(
        &p,
        &[
            r#"{"type":"response.output_text.delta","output_index":0,"delta":"cut"}"#,
            r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"}}}"#,
        ],
    );
    let c = chunks(&out);
    assert_eq!(c[c.len() - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(c[c.len() - 1], "[DONE]");
}

#[test]
fn failure_writes_one_error_chunk_then_done_and_nothing_after() {
    let p = stream_plan(json!({"stream_options": {"include_usage": true}}));
    let mut enc = ChatEncoder::new(&p.core, &p.answer, "chatcmpl-1", 1);
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    enc.delta(
        &Delta::Text {
            index: 0,
            text: "par",
        },
        &mut out,
    );
    let start = out.len();
    let e = Error::new(
        crate::error::ErrorKind::BadGateway,
        "The upstream stream ended before completion.",
    )
    .with_code("upstream_stream_incomplete");
    enc.fail(&e, &mut out);
    enc.delta(
        &Delta::Completed {
            usage: Usage::default(),
        },
        &mut out,
    );
    enc.fail(&e, &mut out);
    assert_eq!(
        std::str::from_utf8(&out[start..]).unwrap(),
        "data: {\"error\":{\"message\":\"The upstream stream ended before completion.\",\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_incomplete\"}}\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn keepalive_is_an_sse_comment() {
    let p = stream_plan(json!({}));
    let mut enc = p.encoder();
    let mut out = BytesMut::new();
    enc.keepalive(&mut out);
    assert_eq!(&out[..], b": keep-alive\n\n");
}

#[test]
fn large_tool_schemas_translate_to_byte_identical_bodies() {
    // Objects over 32 keys leave simd-json's vector map; their order must still be the
    // same on every request, or the backend's prompt cache misses.
    let mut props = serde_json::Map::new();
    for i in 0..40 {
        props.insert(format!("p{i}"), json!({"type": "string"}));
    }
    let body = json!({
        "model": "gpt-5.5",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}]
    });
    let first = stream_plan(body.clone()).upstream().body();
    for _ in 0..5 {
        assert_eq!(stream_plan(body.clone()).upstream().body(), first);
    }
}

// ---- non-stream ----

fn collect(events: &[&str]) -> Collected {
    let mut dec = Decoder::new();
    let mut c = Collected::new();
    for e in events {
        dec.decode(e.as_bytes(), |d| c.push(d)).unwrap();
    }
    c
}

#[test]
fn non_stream_text_answer_has_the_documented_shape() {
    let p = plan(json!({"model": "my-client-model", "messages": [user("x")]}));
    let c = collect(&[
        r#"{"type":"response.output_text.delta","output_index":0,"delta":"Hello"}"#,
        r#"{"type":"response.output_text.annotation.added","output_index":0,"annotation":{"type":"url_citation","url":"https://e.com","title":"E","start_index":0,"end_index":5}}"#,
        r#"{"type":"response.completed","response":{"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"total_tokens":13}}}"#,
    ]);
    let v: J = serde_json::from_slice(&render(&p.core, &p.answer, &c, "chatcmpl-9", 7)).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "chatcmpl-9", "object": "chat.completion", "created": 7, "model": "my-client-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": null,
                "annotations": [{"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 5, "url": "https://e.com", "title": "E"}}]},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": null
        })
    );
}

#[test]
fn non_stream_tool_calls_have_null_content_and_tool_calls_finish() {
    let p = plan(json!({"model": "gpt-5.5", "messages": [user("x")],
            "tools": [{"type": "function", "function": {"name": "get_weather"}},
                      {"type": "custom", "custom": {"name": "apply_patch"}}]}));
    let c = collect(&[
        r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}"#,
        r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"custom_tool_call","call_id":"call_2","name":"apply_patch","input":"*** Begin Patch"}}"#,
        r#"{"type":"response.completed","response":{}}"#,
    ]);
    let v: J = serde_json::from_slice(&render(&p.core, &p.answer, &c, "chatcmpl-9", 7)).unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], J::Null);
    assert_eq!(
        m["tool_calls"],
        json!([
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}
        ])
    );
    assert!(m.get("reasoning_content").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn non_stream_reasoning_joins_parts_and_legacy_requests_get_function_call() {
    let p = plan(json!({"model": "gpt-5.5", "messages": [user("x")]}));
    let c = collect(&[
        r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"e","summary":[{"text":"a"},{"text":"b"}]}}"#,
        r#"{"type":"response.output_text.delta","output_index":1,"delta":"ok"}"#,
        r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"content_filter"}}}"#,
    ]);
    let v: J = serde_json::from_slice(&render(&p.core, &p.answer, &c, "chatcmpl-9", 7)).unwrap();
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "a\n\nb");
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");

    let legacy =
        plan(json!({"model": "gpt-5.5", "messages": [user("x")], "functions": [{"name": "f"}]}));
    let c = collect(&[
        r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"}}"#,
        r#"{"type":"response.completed","response":{}}"#,
    ]);
    let v: J =
        serde_json::from_slice(&render(&legacy.core, &legacy.answer, &c, "chatcmpl-9", 7)).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["function_call"],
        json!({"name": "f", "arguments": "{}"})
    );
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "function_call");
}

mod more_tests {

    use super::*;
    use super::{deltas, plan};
    use serde_json::{Value as J, json};

    #[test]
    fn custom_tool_calls_stream_in_the_function_shape_and_round_trip_as_custom() {
        let p = plan(json!({"model": "gpt-5.5", "stream": true,
            "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}],
            "messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "call_p", "type": "function",
                    "function": {"name": "apply_patch", "arguments": "*** Begin Patch"}}]},
                {"role": "tool", "tool_call_id": "call_p", "content": "ok"}]}));
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        assert_eq!(
            up["input"][1],
            json!({"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"})
        );
        assert_eq!(up["input"][2]["type"], "custom_tool_call_output");

        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::ToolCallStart {
                index: 0,
                call_id: "call_q",
                name: "apply_patch",
                custom: true,
            },
            &mut out,
        );
        enc.delta(
            &Delta::ToolCallArgs {
                index: 0,
                fragment: "*** Begin",
            },
            &mut out,
        );
        assert_eq!(
            deltas(&out),
            vec![
                json!({"tool_calls": [{"index": 0, "id": "call_q", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "*** Begin"}}]}),
            ]
        );
    }

    #[test]
    fn legacy_function_requests_stream_function_call_deltas() {
        let p = plan(
            json!({"model": "gpt-5.5", "stream": true, "functions": [{"name": "f"}],
            "messages": [{"role": "user", "content": "x"}]}),
        );
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::ToolCallStart {
                index: 0,
                call_id: "call_1",
                name: "f",
                custom: false,
            },
            &mut out,
        );
        enc.delta(
            &Delta::ToolCallArgs {
                index: 0,
                fragment: "{}",
            },
            &mut out,
        );
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        assert_eq!(
            deltas(&out),
            vec![
                json!({"function_call": {"name": "f", "arguments": ""}}),
                json!({"function_call": {"arguments": "{}"}}),
                json!({}),
            ]
        );
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"finish_reason\":\"function_call\"")
        );
    }

    #[test]
    fn refusals_stream_as_refusal_deltas_and_finish_with_content_filter() {
        let p = plan(
            json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        );
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::Refusal {
                index: 0,
                text: "I can't.",
            },
            &mut out,
        );
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        assert_eq!(deltas(&out)[0], json!({"refusal": "I can't."}));
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"finish_reason\":\"content_filter\"")
        );
    }
}
