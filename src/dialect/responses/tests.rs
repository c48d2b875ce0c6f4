//! Unit tests of the Responses dialect: request translation, the stream encoder and the
//! non-stream render, each through the plan the way the pipeline drives it.

use bytes::BytesMut;

use super::request::*;
use super::stream::*;
use super::translate;
use super::*;
use crate::dialect::STREAM_B_ITEMS;
use crate::dialect::{Encoder, Plan};
use crate::error::Error;
use crate::error::ErrorKind;
use crate::json::span;
use crate::sse::parse::SseParser;
use crate::upstream::collect::OwnedCitation;
use crate::upstream::collect::{Collected, Item};
use crate::upstream::events::Decoder;
use crate::upstream::events::Delta;
use http::HeaderMap;
use serde_json::{Value as J, json};

fn plan_with(body: J, headers: &HeaderMap) -> Result<ResponsesPlan, Error> {
    crate::dialect::translate_json(translate, &body, headers)
}

fn plan(body: J) -> ResponsesPlan {
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

fn with(extra: J) -> J {
    let mut body = json!({"model": "gpt-5.5", "input": "hi"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

// ---- request translation ----

#[test]
fn string_input_becomes_one_user_message_with_input_text() {
    let up = upstream(json!({"model": "gpt-5.5", "input": "Say hi", "instructions": "Be terse."}));
    assert_eq!(
        up["input"],
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi"}]}])
    );
    assert_eq!(up["instructions"], "Be terse.");
    assert_eq!(up["model"], "gpt-5.5");
    assert_eq!(up["tools"], json!([]));
    assert_eq!(up["tool_choice"], "auto");
    assert_eq!(up["parallel_tool_calls"], true);
    assert_eq!(up["include"], json!(["reasoning.encrypted_content"]));
    assert!(up.get("text").is_none());
    assert!(up["reasoning"].get("summary").is_none());
}

#[test]
fn array_input_rewrites_system_to_developer_and_normalises_bare_role_entries() {
    let up = upstream(json!({"model": "gpt-5.5", "input": [
        {"role": "system", "content": "Use metric."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
        {"role": "user", "content": "hi"},
        {"type": "message", "id": "msg_1", "role": "assistant", "phase": "final_answer",
         "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
        {"role": "assistant", "content": "Again"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": null, "encrypted_content": "gAAA"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "Bash", "arguments": "{}", "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
    ]}));
    assert_eq!(
        up["input"],
        json!([
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use metric."}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be kind."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
             "id": "msg_1", "phase": "final_answer"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Again"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": null, "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "Bash", "arguments": "{}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
        ])
    );
    // Instructions absent: left empty here, the request writer sends its default.
    assert_eq!(
        plan(json!({"model": "gpt-5.5", "input": "x"}))
            .upstream()
            .instructions,
        ""
    );
}

#[test]
fn images_get_the_backend_fixes_and_other_parts_pass_through() {
    let up = upstream(
        json!({"model": "gpt-5.5", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/jpg;base64,AAAA", "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/a.png"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
        ]}]}),
    );
    assert_eq!(
        up["input"][0]["content"],
        json!([
            {"type": "input_image", "image_url": "data:image/jpeg;base64,AAAA", "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/a.png"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
        ])
    );
}

#[test]
fn rejected_and_unknown_parameters_are_dropped() {
    let up = upstream(with(json!({
        "max_output_tokens": 100, "max_tool_calls": 3, "temperature": 0.2, "top_p": 0.9,
        "top_logprobs": 2, "truncation": "auto", "metadata": {"a": "b"}, "user": "u1",
        "safety_identifier": "s", "prompt_cache_retention": "24h",
        "stream_options": {"include_obfuscation": false}, "client_metadata": {"x": "y"},
        "frobnicate": true, "background": false
    })));
    for key in up.as_object().unwrap().keys() {
        assert!(
            crate::upstream::request::BODY_FIELDS.contains(&key.as_str()),
            "{key} was forwarded"
        );
    }
}

#[test]
fn store_and_stream_from_the_client_are_never_forwarded() {
    let p = plan(with(json!({"store": true, "stream": false})));
    let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
    assert_eq!(up["store"], false);
    assert_eq!(up["stream"], true);
    assert!(!p.stream());
    assert!(plan(with(json!({"stream": true}))).stream());
    assert!(!plan(with(json!({}))).stream(), "stream defaults to false");
}

#[test]
fn tools_are_forwarded_with_strict_false_and_web_search_preview_becomes_web_search() {
    let up = upstream(with(json!({"tools": [
        {"type": "function", "name": "Bash", "description": "Run", "parameters": {"type": "object"}},
        {"type": "function", "name": "Strict", "strict": true, "parameters": {"type": "object"}},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
        {"type": "namespace", "name": "image_gen", "description": "d", "tools": [{"type": "function", "name": "imagegen", "parameters": {}}]},
        {"type": "web_search_preview", "search_context_size": "low"}
    ]})));
    assert_eq!(
        up["tools"],
        json!([
            {"type": "function", "name": "Bash", "description": "Run", "parameters": {"type": "object"}, "strict": false},
            {"type": "function", "name": "Strict", "strict": true, "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "namespace", "name": "image_gen", "description": "d", "tools": [{"type": "function", "name": "imagegen", "parameters": {}, "strict": false}]},
            {"type": "web_search", "search_context_size": "low", "external_web_access": true}
        ])
    );
    let up = upstream(with(json!({
        "tools": [{"type": "function", "name": "Bash"}],
        "tool_choice": {"type": "function", "name": "Bash"},
        "parallel_tool_calls": false
    })));
    assert_eq!(
        up["tool_choice"],
        json!({"type": "function", "name": "Bash"})
    );
    assert_eq!(up["parallel_tool_calls"], false);
    assert_eq!(
        upstream(with(json!({"tool_choice": "required"})))["tool_choice"],
        "required"
    );
}

#[test]
fn hosted_tools_the_backend_lacks_are_rejected_naming_the_type() {
    for kind in [
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "mcp",
        "image_generation",
        "teleporter",
    ] {
        let e = err(with(
            json!({"tools": [{"type": "function", "name": "ok"}, {"type": kind}]}),
        ));
        assert_eq!(e.status(Protocol::OpenAi), 400);
        assert!(e.message.contains(kind), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("tools[1]"));
    }
}

#[test]
fn previous_response_id_is_passed_on_and_store_decides_keeping() {
    let p = plan(with(json!({"previous_response_id": "resp_123"})));
    assert_eq!(p.previous_response_id(), Some("resp_123"));
    assert_eq!(p.keep_as(), Some(super::super::KeepAs::ResponseId));
    let p = plan(with(json!({"store": false})));
    assert_eq!(p.previous_response_id(), None);
    assert_eq!(p.keep_as(), None);
    let e = previous_response_not_found("resp_123");
    assert_eq!(e.status(Protocol::OpenAi), 400);
    assert_eq!(e.code.as_deref(), Some("previous_response_not_found"));
    assert_eq!(e.param.as_deref(), Some("previous_response_id"));
    assert!(e.message.contains("resp_123") && e.message.contains("full conversation"));
}

#[test]
fn conversation_background_and_prompt_templates_are_unsupported() {
    for (extra, param) in [
        (json!({"conversation": "conv_1"}), "conversation"),
        (json!({"background": true}), "background"),
        (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
    ] {
        let e = err(with(extra));
        assert_eq!(e.status(Protocol::OpenAi), 400);
        assert_eq!(e.param.as_deref(), Some(param));
        assert!(e.message.contains("not supported"), "{}", e.message);
    }
}

#[test]
fn wrong_types_are_rejected_naming_the_field() {
    for (extra, param) in [
        (json!({"input": 5}), "input"),
        (json!({"instructions": ["x"]}), "instructions"),
        (json!({"tools": {"type": "function"}}), "tools"),
        (json!({"stream": "yes"}), "stream"),
        (json!({"reasoning": "high"}), "reasoning"),
        (json!({"text": {"format": "json"}}), "text.format"),
        (json!({"include": "reasoning.encrypted_content"}), "include"),
        (json!({"tool_choice": 3}), "tool_choice"),
        (
            json!({"input": [{"role": "user", "content": 1}]}),
            "input[0].content",
        ),
        (json!({"input": [{"content": "no role"}]}), "input[0]"),
    ] {
        let e = err(with(extra.clone()));
        assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
    }
    assert_eq!(err(json!({"input": "hi"})).param.as_deref(), Some("model"));
    assert_eq!(
        err(json!({"model": "gpt-5.5"})).param.as_deref(),
        Some("input")
    );
}

#[test]
fn reasoning_effort_is_clamped_to_the_catalog_and_summary_forwarded() {
    let up = upstream(with(
        json!({"reasoning": {"effort": "max", "summary": "detailed"}}),
    ));
    assert_eq!(
        up["reasoning"],
        json!({"effort": "xhigh", "summary": "detailed"})
    );
    let up = upstream(with(
        json!({"reasoning": {"effort": "minimal", "generate_summary": "concise"}}),
    ));
    assert_eq!(
        up["reasoning"],
        json!({"effort": "low", "summary": "concise"})
    );
    assert_eq!(
        upstream(with(json!({})))["reasoning"],
        json!({"effort": "medium"})
    );
}

#[test]
fn text_include_cache_key_and_service_tier_are_forwarded() {
    let up = upstream(with(json!({
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}, "verbosity": "low", "extra": 1},
        "include": ["web_search_call.action.sources", "reasoning.encrypted_content"],
        "prompt_cache_key": "conv-42",
        "service_tier": "priority"
    })));
    assert_eq!(
        up["text"],
        json!({"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"})
    );
    assert_eq!(
        up["include"],
        json!([
            "reasoning.encrypted_content",
            "web_search_call.action.sources"
        ])
    );
    assert_eq!(up["prompt_cache_key"], "conv-42");
    assert_eq!(up["service_tier"], "priority");
    assert!(
        upstream(with(json!({"service_tier": "auto"})))
            .get("service_tier")
            .is_none()
    );
}

#[test]
fn without_a_cache_key_the_conversation_id_is_stable_per_prefix_and_caller() {
    let id = |body: J, auth: &str| {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        plan_with(body, &h)
            .unwrap()
            .upstream()
            .conversation_id
            .clone()
    };
    let turn1 = json!({"model": "gpt-5.5", "instructions": "S", "input": [{"role": "user", "content": "a"}]});
    let turn2 = json!({"model": "gpt-5.5", "instructions": "S", "input": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}
    ]});
    assert_eq!(id(turn1.clone(), "Bearer k1"), id(turn2, "Bearer k1"));
    assert_ne!(id(turn1.clone(), "Bearer k1"), id(turn1, "Bearer k2"));
}

// ---- streaming ----

/// Upstream events as the backend frames them.
fn wire(lines: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        let v: J = serde_json::from_str(l).unwrap();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(v["type"].as_str().unwrap().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// Drive the encoder the way `body::Translate` does: `raw`, then the decoded deltas;
/// `Failed`/`Error` become one `fail`.
fn run(enc: &mut ResponsesEncoder, bytes: &[u8]) -> Vec<u8> {
    let mut parser = SseParser::new(1 << 20);
    parser.push(bytes);
    let mut dec = Decoder::new();
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    assert!(out.is_empty(), "begin writes nothing");
    while let Some(ev) = parser.next_event().unwrap() {
        enc.raw(ev.event, ev.data, &mut out);
        let mut failure = None;
        dec.decode(ev.data, |d| match d {
            Delta::Failed { code, message, .. } | Delta::Error { code, message } => {
                let mut e = Error::new(ErrorKind::UpstreamServer, message.unwrap_or("failed"));
                if let Some(c) = code {
                    e = e.with_code(*c);
                }
                failure = Some(e);
            }
            _ => enc.delta(d, &mut out),
        })
        .unwrap();
        if let Some(e) = failure {
            enc.fail(&e, &mut out);
            break;
        }
    }
    out.to_vec()
}

/// (event, parsed data) of every frame.
fn frames(out: &[u8]) -> Vec<(String, J)> {
    let text = std::str::from_utf8(out).unwrap();
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let (ev, data) = f.split_once('\n').unwrap();
            let ev = ev.strip_prefix("event: ").unwrap().to_owned();
            (
                ev,
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

const STREAM_A: &[&str] = &[
    r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_0a1b","object":"response","created_at":1795509282,"status":"in_progress","model":"gpt-5.5","output":[],"usage":null,"store":false,"tool_choice":"auto","parallel_tool_calls":true,"reasoning":{"effort":"medium","summary":null},"text":{"format":{"type":"text"},"verbosity":"low"},"error":null,"incomplete_details":null}}"#,
    r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_0a1b","object":"response","status":"in_progress","model":"gpt-5.5","output":[]}}"#,
    r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"in_progress","content":[],"phase":"final_answer","role":"assistant"}}"#,
    r#"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_9f","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
    r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
    r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"!","logprobs":[]}"#,
    r#"{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_9f","output_index":0,"content_index":0,"text":"Hi!","logprobs":[]}"#,
    r#"{"type":"response.content_part.done","sequence_number":7,"item_id":"msg_9f","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}}"#,
    r#"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}],"phase":"final_answer","role":"assistant"}}"#,
    r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_0a1b","object":"response","status":"completed","model":"gpt-5.5","output":[{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}],"phase":"final_answer","role":"assistant"}],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1246}}}"#,
];

const STREAM_B_COMPLETED: &str = r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAA…","summary":[{"type":"summary_text","text":"**Running a command**\n\nI'll run echo."}]},{"id":"msg_2","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Running it now."}],"phase":"commentary","role":"assistant"},{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\"command\":\"echo hi\"}","call_id":"call_abc","name":"Bash"}],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":0},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":8},"total_tokens":1274}}}"#;

fn encoder(body: J) -> ResponsesEncoder {
    plan(body).encoder()
}

#[test]
fn realistic_streams_are_forwarded_byte_identical() {
    let a = wire(STREAM_A);
    assert_eq!(run(&mut encoder(with(json!({}))), &a), a);
    let mut lines = STREAM_B_ITEMS.to_vec();
    lines.push(STREAM_B_COMPLETED);
    // An unknown event type passes through too.
    lines.insert(
        3,
        r#"{"type":"response.future.thing","sequence_number":3,"x":[1,{"y":"}"}]}"#,
    );
    let b = wire(&lines);
    let mut enc = encoder(with(
        json!({"tools": [{"type": "function", "name": "Bash"}]}),
    ));
    assert_eq!(run(&mut enc, &b), b);
    // Nothing is written after the terminal event.
    let mut out = BytesMut::new();
    enc.fail(&Error::internal("late"), &mut out);
    assert!(out.is_empty());
}

#[test]
fn events_without_an_event_field_are_named_from_their_type() {
    let mut bytes = Vec::new();
    for l in STREAM_A {
        bytes.extend_from_slice(b"data: ");
        bytes.extend_from_slice(l.as_bytes());
        bytes.extend_from_slice(b"\n\n");
    }
    bytes.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(run(&mut encoder(with(json!({}))), &bytes), wire(STREAM_A));
}

#[test]
fn completed_with_empty_output_gets_the_collected_items_spliced_in() {
    let mut lines = STREAM_B_ITEMS.to_vec();
    let empty = r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[],"usage":{"input_tokens":1234,"output_tokens":40,"total_tokens":1274}}}"#;
    lines.push(empty);
    let out = run(&mut encoder(with(json!({}))), &wire(&lines));
    let all = frames(&out);
    assert_eq!(all.len(), lines.len());
    let (ev, last) = all.last().unwrap();
    assert_eq!(ev, "response.completed");
    let full: J = serde_json::from_str(STREAM_B_COMPLETED).unwrap();
    assert_eq!(last["response"]["output"], full["response"]["output"]);
    assert_eq!(last["response"]["usage"]["total_tokens"], 1274);
    assert_eq!(last["sequence_number"], 20);
    // Every other event is untouched.
    let prefix = wire(&STREAM_B_ITEMS);
    assert_eq!(out.get(..prefix.len()).unwrap(), prefix.as_slice());
}

#[test]
fn fail_writes_exactly_one_error_event_with_the_next_sequence_number() {
    let mut enc = encoder(with(json!({})));
    let out = run(&mut enc, &wire(STREAM_A.get(..5).unwrap()));
    let mut tail = BytesMut::new();
    let e = Error::new(
        ErrorKind::BadGateway,
        "The upstream stream ended before completion.",
    )
    .with_code("upstream_stream_incomplete");
    enc.fail(&e, &mut tail);
    enc.fail(&e, &mut tail);
    enc.keepalive(&mut tail);
    let text = std::str::from_utf8(&tail).unwrap();
    assert!(text.ends_with(": keep-alive\n\n"));
    let errors = frames(text.trim_end_matches(": keep-alive\n\n").as_bytes());
    assert_eq!(
        errors,
        vec![(
            "error".to_owned(),
            json!({"type": "error", "code": "upstream_stream_incomplete",
                       "message": "The upstream stream ended before completion.",
                       "param": null, "sequence_number": 5})
        )]
    );
    assert_eq!(frames(&out).len(), 5);
    // Without a code, one comes from the kind.
    let mut enc = encoder(with(json!({})));
    let mut out = BytesMut::new();
    enc.fail(&Error::new(ErrorKind::Overloaded, "busy"), &mut out);
    assert_eq!(frames(&out)[0].1["code"], "server_is_overloaded");
    assert_eq!(frames(&out)[0].1["sequence_number"], 0);
}

#[test]
fn failed_and_error_raw_events_are_not_forwarded() {
    let failed = [
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_f1","object":"response","status":"in_progress","output":[]}}"#,
        r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_f1","object":"response","status":"in_progress","output":[]}}"#,
        r#"{"type":"response.failed","sequence_number":2,"response":{"id":"resp_f1","object":"response","created_at":1759510079,"status":"failed","background":false,"error":{"code":"context_length_exceeded","message":"Your input exceeds the context window of this model. Please adjust your input and try again."},"incomplete_details":null,"usage":null,"metadata":{}}}"#,
    ];
    let out = run(&mut encoder(with(json!({}))), &wire(&failed));
    let all = frames(&out);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].0, "error");
    assert_eq!(all[2].1["code"], "context_length_exceeded");
    assert_eq!(all[2].1["sequence_number"], 2);
    assert!(!String::from_utf8_lossy(&out).contains("response.failed"));

    let error = [
        failed[0],
        r#"{"type":"error","sequence_number":1,"code":"server_error","message":"The server had an error processing your request. Sorry about that!","param":null}"#,
    ];
    let out = run(&mut encoder(with(json!({}))), &wire(&error));
    let all = frames(&out);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1["code"], "server_error");
    assert_eq!(all[1].1["sequence_number"], 1);
}

#[test]
fn shortened_tool_names_go_up_short_and_come_back_restored_in_events() {
    let long = format!("mcp__server__{}", "x".repeat(80));
    let p = plan(with(json!({
        "tools": [{"type": "function", "name": long}],
        "tool_choice": {"type": "function", "name": long},
        "input": [{"type": "function_call", "call_id": "c0", "name": long, "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c0", "output": "ok"}]
    })));
    let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
    let short = up["tools"][0]["name"].as_str().unwrap().to_owned();
    assert_eq!(short.len(), 64);
    assert_eq!(up["tool_choice"]["name"], short.as_str());
    assert_eq!(up["input"][0]["name"], short.as_str());

    let item = |seq: u32, kind: &str| {
        format!(
            r#"{{"type":"{kind}","sequence_number":{seq},"output_index":0,"item":{{"id":"fc_1","type":"function_call","status":"completed","arguments":"{{}}","call_id":"c1","name":"{short}"}}}}"#
        )
    };
    let added = item(0, "response.output_item.added");
    let done = item(1, "response.output_item.done");
    let completed = format!(
        r#"{{"type":"response.completed","sequence_number":2,"response":{{"id":"r","output":[{{"type":"function_call","call_id":"c1","name":"{short}","arguments":"{{}}"}}],"usage":null}}}}"#
    );
    let out = run(&mut p.encoder(), &wire(&[&added, &done, &completed]));
    let all = frames(&out);
    assert_eq!(all[0].1["item"]["name"], long.as_str());
    assert_eq!(all[1].1["item"]["name"], long.as_str());
    assert_eq!(all[2].1["response"]["output"][0]["name"], long.as_str());
    assert_eq!(all[2].1["response"]["output"][0]["call_id"], "c1");
}

// ---- non-stream ----

fn collected(lines: &[&str]) -> Collected {
    let mut dec = Decoder::new();
    let mut c = Collected::new();
    for l in lines {
        dec.decode(l.as_bytes(), |d| c.push(d)).unwrap();
    }
    c
}

fn rendered(p: &ResponsesPlan, c: &Collected) -> J {
    serde_json::from_slice(&super::render::render(&p.core, &p.answer, c, 1795509282)).unwrap()
}

#[test]
fn render_text_response() {
    let p = plan(with(
        json!({"model": "gpt-5.5", "instructions": "You are terse.", "text": {"verbosity": "low"}}),
    ));
    let mut c = collected(STREAM_A);
    if let Some(Item::Message { citations, .. }) = c.items.first_mut() {
        citations.push(OwnedCitation {
            url: "https://example.com".into(),
            title: Some("Ex".into()),
            start: 0,
            end: 2,
        });
    }
    let v = rendered(&p, &c);
    assert!(v["output"][0]["id"].as_str().unwrap().starts_with("msg_"));
    let mut out0 = v["output"][0].clone();
    out0.as_object_mut().unwrap().remove("id");
    assert_eq!(
        out0,
        json!({"type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": "Hi!", "annotations": [
                       {"type": "url_citation", "start_index": 0, "end_index": 2, "url": "https://example.com", "title": "Ex"}
                   ], "logprobs": []}],
                   "phase": "final_answer"})
    );
    let mut v = v;
    v.as_object_mut().unwrap().remove("output");
    assert_eq!(
        v,
        json!({"id": "resp_0a1b", "object": "response", "created_at": 1795509282, "status": "completed",
                   "model": "gpt-5.5", "error": null, "incomplete_details": null, "instructions": "You are terse.",
                   "parallel_tool_calls": true, "reasoning": {"effort": "medium", "summary": null}, "store": false,
                   "text": {"verbosity": "low"}, "tool_choice": "auto", "tools": [],
                   "usage": {"input_tokens": 1234, "input_tokens_details": {"cached_tokens": 1024},
                             "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1246}})
    );
}

#[test]
fn render_reasoning_and_tool_call() {
    let p = plan(with(
        json!({"model": "my-alias", "tools": [{"type": "function", "name": "Bash"}]}),
    ));
    let mut lines = STREAM_B_ITEMS.to_vec();
    lines.push(STREAM_B_COMPLETED);
    let v = rendered(&p, &collected(&lines));
    assert_eq!(v["model"], "my-alias");
    assert_eq!(v["instructions"], J::Null);
    assert_eq!(
        v["output"][0],
        json!({"id": "rs_1", "type": "reasoning",
                   "summary": [{"type": "summary_text", "text": "**Running a command**\n\nI'll run echo."}],
                   "encrypted_content": "gAAAAA…"})
    );
    assert_eq!(v["output"][1]["phase"], "commentary");
    assert_eq!(v["output"][1]["content"][0]["text"], "Running it now.");
    assert_eq!(
        v["output"][2],
        json!({"type": "function_call", "call_id": "call_abc", "name": "Bash",
                   "arguments": "{\"command\":\"echo hi\"}", "status": "completed"})
    );
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 8);
    assert!(v.get("output_text").is_none());
}

#[test]
fn render_custom_tool_call_and_incomplete() {
    let p = plan(with(json!({})));
    let c = collected(&[
        r#"{"type":"response.created","response":{"id":"resp_i1"}}"#,
        r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"ctc_1","type":"custom_tool_call","call_id":"call_1","name":"apply_patch","input":"*** Begin Patch"}}"#,
        r#"{"type":"response.incomplete","response":{"id":"resp_i1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":900,"output_tokens":128,"total_tokens":1028}}}"#,
    ]);
    let v = rendered(&p, &c);
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(
        v["output"][0],
        json!({"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch",
                   "input": "*** Begin Patch", "status": "completed"})
    );
    assert_eq!(v["usage"]["total_tokens"], 1028);
    // No response id upstream: a fresh one.
    let v = rendered(&p, &Collected::new());
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["output"], json!([]));
}

#[test]
fn span_scanner_finds_top_level_members_only() {
    let data = br#"{"a":{"type":"inner","s":"}\"]"},"type" : "outer","n":[1,[2]],"k":12}"#;
    let get = |k: &[u8]| span::member(data, k).map(|r| data.get(r).unwrap().to_vec());
    assert_eq!(get(b"type").unwrap(), br#""outer""#);
    assert_eq!(get(b"n").unwrap(), b"[1,[2]]");
    assert_eq!(span::parse_u64(&get(b"k").unwrap()), Some(12));
    assert_eq!(get(b"missing"), None);
    assert_eq!(span::leading_member(data, b"k", 2), None);
    assert_eq!(span::elements(b"[1, {\"a\":[]} ,\"x\"]").unwrap().len(), 3);
    assert_eq!(span::member(b"{\"a\":\"unterminated", b"b"), None);
    assert_eq!(span::member(b"", b"a"), None);
}
