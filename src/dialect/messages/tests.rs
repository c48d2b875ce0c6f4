//! Unit tests of the Messages dialect: request translation, the stream encoder and the
//! non-stream render, each through the plan the way the pipeline drives it.

use std::path::PathBuf;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value as J, json};

use super::render::open_signature;
use super::request::*;
use super::*;
use crate::config::Config;
use crate::dialect::{Ctx, Encoder, Plan, STREAM_B_ITEMS};
use crate::error::Error;
use crate::upstream::catalog::Catalog;
use crate::upstream::collect::{Call, Collected, Finish, Item, OwnedCitation};
use crate::upstream::events::{Decoder, Delta, Usage};

struct Env {
    config: Config,
    catalog: Catalog,
    headers: HeaderMap,
}

impl Env {
    fn new() -> Self {
        Env {
            config: Config::for_tests("http://127.0.0.1:1", PathBuf::from("/nonexistent")),
            catalog: Catalog::builtin(),
            headers: HeaderMap::new(),
        }
    }
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            config: &self.config,
            catalog: &self.catalog,
            headers: &self.headers,
        }
    }
    fn try_plan(&self, body: &J) -> Result<MessagesPlan, Error> {
        let mut b = serde_json::to_vec(body).unwrap();
        translate(&mut b, &self.ctx())
    }
    fn plan(&self, body: &J) -> MessagesPlan {
        self.try_plan(body).unwrap()
    }
    fn upstream(&self, body: &J) -> J {
        upstream_json(&self.plan(body))
    }
    fn count(&self, body: &J) -> J {
        let mut b = serde_json::to_vec(body).unwrap();
        serde_json::from_slice(&count_tokens(&mut b, &self.ctx()).unwrap()).unwrap()
    }
}

fn upstream_json(p: &MessagesPlan) -> J {
    serde_json::from_slice(&p.upstream().body()).unwrap()
}

fn bad(env: &Env, body: &J) -> String {
    match env.try_plan(body) {
        Ok(_) => panic!("expected a 400"),
        Err(e) => {
            assert_eq!(e.status(Protocol::Anthropic), 400);
            e.message
        }
    }
}

/// Trimmed first-turn body of Claude Code (Part B §B.12 no. 1) around `messages`.
fn cc_body(messages: J) -> J {
    json!({
      "model": "claude-opus-5-5",
      "messages": messages,
      "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.ce7; cc_entrypoint=sdk-cli;"},
        {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "\nYou are an agent working with the user toward their goals.", "cache_control": {"type": "ephemeral"}}
      ],
      "tools": [
        {"name": "Bash", "description": "Executes a bash command and returns its output.",
         "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
           "properties": {"command": {"description": "The command to execute", "type": "string"},
                          "timeout": {"type": "number"}, "description": {"type": "string"},
                          "run_in_background": {"type": "boolean"}, "dangerouslyDisableSandbox": {"type": "boolean"}},
           "required": ["command"], "additionalProperties": false}},
        {"name": "ToolSearch", "description": "Fetches full schema definitions for deferred tools.",
         "input_schema": {"type": "object", "properties": {"query": {"type": "string"}, "max_results": {"type": "number", "default": 5}},
           "required": ["query", "max_results"], "additionalProperties": false}},
        {"name": "DeferredToolPlaceholder", "description": "Reserved placeholder; never call this tool.",
         "input_schema": {"type": "object", "properties": {}}, "defer_loading": true}
      ],
      "metadata": {"user_id": "{\"device_id\":\"6b20142b\",\"account_uuid\":\"\",\"session_id\":\"a31f3bca-a60d-4b01-935a-96d1911167bb\"}"},
      "max_tokens": 128000,
      "thinking": {"type": "adaptive", "display": "omitted"},
      "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
      "output_config": {"effort": "medium"},
      "stream": true
    })
}

fn first_turn() -> J {
    json!([
      {"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAttribution for git commits\n</system-reminder>\n"},
        {"type": "text", "text": "hi"}]},
      {"role": "system", "content": [
        {"type": "text", "text": "# Environment\nPrimary working directory: /w", "cache_control": {"type": "ephemeral"}}],
       "output_config": {"effort": "medium"}}
    ])
}

fn simple(messages: J) -> J {
    json!({"model": "gpt-5.5", "max_tokens": 100, "messages": messages})
}

fn png() -> &'static str {
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
}

// ---- frames ----------------------------------------------------------------------

fn frames(bytes: &[u8]) -> Vec<J> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert!(
        s.is_empty() || s.ends_with("\n\n"),
        "frames end with a blank line"
    );
    s.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut lines = f.lines();
            let ev = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "one data line per frame");
            let v: J = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], ev, "event line equals the data type");
            v
        })
        .collect()
}

/// A compact picture of a frame list: `start:text`, `text_delta:Hi`, `stop`, …
fn describe(frames: &[J]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f["type"].as_str().unwrap() {
            "content_block_start" => format!(
                "start{}:{}",
                f["index"],
                f["content_block"]["type"].as_str().unwrap()
            ),
            "content_block_delta" => {
                let d = &f["delta"];
                let t = d["type"].as_str().unwrap();
                let v = match t {
                    "text_delta" => d["text"].clone(),
                    "thinking_delta" => d["thinking"].clone(),
                    "input_json_delta" => d["partial_json"].clone(),
                    "signature_delta" => J::String("<sig>".into()),
                    _ => J::String("…".into()),
                };
                format!("{}{}:{}", t, f["index"], v.as_str().unwrap())
            }
            "content_block_stop" => format!("stop{}", f["index"]),
            "message_delta" => format!(
                "message_delta:{}",
                f["delta"]["stop_reason"].as_str().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect()
}

/// The text of every `text_delta`, joined.
fn streamed_text(frames: &[J]) -> String {
    frames
        .iter()
        .filter(|x| x["delta"]["type"] == "text_delta")
        .map(|x| x["delta"]["text"].as_str().unwrap())
        .collect()
}

fn assert_balanced(frames: &[J]) {
    let mut open: Option<u64> = None;
    let mut next = 0u64;
    for f in frames {
        match f["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "blocks never interleave");
                assert_eq!(f["index"].as_u64(), Some(next));
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(f["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(f["index"].as_u64(), open);
                open = None;
            }
            "message_delta" | "message_stop" => assert_eq!(open, None),
            _ => {}
        }
    }
    assert_eq!(open, None);
}

fn run_lines(plan: &MessagesPlan, lines: &[&str]) -> Vec<J> {
    let mut enc = plan.encoder();
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    let mut dec = Decoder::new();
    for l in lines {
        dec.decode(l.as_bytes(), |d| enc.delta(d, &mut out))
            .unwrap();
    }
    let f = frames(&out);
    assert_balanced(&f);
    f
}

fn run_deltas(plan: &MessagesPlan, deltas: &[Delta<'_>]) -> Vec<J> {
    let mut enc = plan.encoder();
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    for d in deltas {
        enc.delta(d, &mut out);
    }
    let f = frames(&out);
    assert_balanced(&f);
    f
}

fn collect(lines: &[&str]) -> Collected {
    let mut dec = Decoder::new();
    let mut c = Collected::new();
    for l in lines {
        dec.decode(l.as_bytes(), |d| c.push(d)).unwrap();
    }
    c
}

/// Rebuild the assistant message a client would keep from a stream.
fn assistant_from_frames(frames: &[J]) -> J {
    let mut blocks: Vec<J> = Vec::new();
    let mut json_buf = String::new();
    for f in frames {
        match f["type"].as_str().unwrap() {
            "content_block_start" => {
                blocks.push(f["content_block"].clone());
                json_buf.clear();
            }
            "content_block_delta" => {
                let b = blocks.last_mut().unwrap();
                let d = &f["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = format!(
                            "{}{}",
                            b["text"].as_str().unwrap(),
                            d["text"].as_str().unwrap()
                        );
                        b["text"] = J::String(t);
                    }
                    "thinking_delta" => {
                        let t = format!(
                            "{}{}",
                            b["thinking"].as_str().unwrap(),
                            d["thinking"].as_str().unwrap()
                        );
                        b["thinking"] = J::String(t);
                    }
                    "signature_delta" => b["signature"] = d["signature"].clone(),
                    "input_json_delta" => json_buf.push_str(d["partial_json"].as_str().unwrap()),
                    _ => {}
                }
            }
            "content_block_stop" => {
                let b = blocks.last_mut().unwrap();
                if b["type"] == "tool_use" {
                    b["input"] = serde_json::from_str(&json_buf).unwrap();
                }
            }
            _ => {}
        }
    }
    json!({"role": "assistant", "content": blocks})
}

/// `STREAM_B_ITEMS` and its `response.completed` with an empty `output`.
fn stream_b() -> Vec<&'static str> {
    let mut lines = STREAM_B_ITEMS.to_vec();
    lines.push(
            r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1000},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":8},"total_tokens":1274}}}"#,
        );
    lines
}

fn text_stream(id: &str, text: &str) -> Vec<String> {
    vec![
            format!(r#"{{"type":"response.output_item.added","output_index":0,"item":{{"id":"rs_{id}","type":"reasoning","summary":[]}}}}"#),
            format!(r#"{{"type":"response.output_item.done","output_index":0,"item":{{"id":"rs_{id}","type":"reasoning","encrypted_content":"enc-{id}","summary":[]}}}}"#),
            format!(r#"{{"type":"response.output_item.added","output_index":1,"item":{{"type":"message","role":"assistant","content":[]}}}}"#),
            format!(r#"{{"type":"response.output_text.delta","output_index":1,"delta":{}}}"#, J::String(text.into())),
            format!(r#"{{"type":"response.output_item.done","output_index":1,"item":{{"type":"message","content":[{{"type":"output_text","text":{}}}]}}}}"#, J::String(text.into())),
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":10,"output_tokens":2}}}"#.to_owned(),
        ]
}

// ---- envelope --------------------------------------------------------------------

#[test]
fn signature_envelope_round_trips_byte_for_byte_and_rejects_foreign() {
    for (id, enc) in [
        ("rs_1", "gAAAAA…=="),
        ("", "x"),
        ("rs_\u{e9}", &"A".repeat(10_000)[..]),
    ] {
        let sig = signature_envelope(id, enc);
        assert!(sig.starts_with("cxa1."));
        assert_eq!(sig, signature_envelope(id, enc), "deterministic");
        assert!(sig.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(open_signature(&sig), Some((id.to_owned(), enc.to_owned())));
    }
    assert_eq!(open_signature("EqQBCkgIARAB"), None);
    assert_eq!(open_signature("cxa1.!!!"), None);
    assert_eq!(open_signature("cxa1."), None);
    assert_eq!(open_signature("cxa1.AAAA_w"), None);
    assert_eq!(open_signature(""), None);
}

// ---- request translation ---------------------------------------------------------

#[test]
fn system_blocks_join_in_order_without_the_billing_header() {
    let env = Env::new();
    let v = env.upstream(&cc_body(first_turn()));
    assert_eq!(
        v["instructions"],
        "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\n\nYou are an agent working with the user toward their goals."
    );
    assert!(!v.to_string().contains("x-anthropic-billing-header"));
    assert_eq!(v["model"], "gpt-5.5");
    assert_eq!(v["store"], false);
    assert_eq!(v["include"][0], "reasoning.encrypted_content");
    let v = env.upstream(&json!({"model":"gpt-5.5","system":"You are terse.","messages":[{"role":"user","content":"hi"}]}));
    assert_eq!(v["instructions"], "You are terse.");
    assert_eq!(
        v["input"],
        json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}])
    );
}

#[test]
fn role_system_entries_become_developer_items_at_their_position() {
    let env = Env::new();
    let mut msgs = first_turn();
    msgs.as_array_mut().unwrap().extend([
        json!({"role":"assistant","content":[{"type":"text","text":"Hello."}]}),
        json!({"role":"system","content":"Later system text","output_config":{"effort":"medium"}}),
        json!({"role":"user","content":"again"}),
    ]);
    let v = env.upstream(&cc_body(msgs));
    let input = v["input"].as_array().unwrap();
    let roles: Vec<&str> = input.iter().map(|i| i["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["user", "developer", "assistant", "developer", "user"]
    );
    assert_eq!(
        input[0]["content"],
        json!([
            {"type":"input_text","text":"<system-reminder>\nAttribution for git commits\n</system-reminder>\n"},
            {"type":"input_text","text":"hi"}
        ])
    );
    assert_eq!(
        input[1]["content"][0]["text"],
        "# Environment\nPrimary working directory: /w"
    );
    assert_eq!(
        input[3]["content"],
        json!([{"type":"input_text","text":"Later system text"}])
    );
    assert_eq!(
        input[2]["content"],
        json!([{"type":"output_text","text":"Hello."}])
    );
    assert!(!v.to_string().contains("\"system\""));
    assert!(!v.to_string().contains("cache_control"));
}

#[test]
fn consecutive_same_role_messages_are_kept_in_order() {
    let env = Env::new();
    let v = env.upstream(&simple(json!([
        {"role":"user","content":"<system-reminder>\nCalled the Read tool</system-reminder>"},
        {"role":"user","content":[{"type":"text","text":"second"}]},
        {"role":"assistant","content":"a1"},
        {"role":"assistant","content":[{"type":"text","text":"a2"}]}
    ])));
    let texts: Vec<&str> = v["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "<system-reminder>\nCalled the Read tool</system-reminder>",
            "second",
            "a1",
            "a2"
        ]
    );
}

#[test]
fn images_become_input_image_and_bad_ones_are_400() {
    let env = Env::new();
    let v = env.upstream(&simple(json!([{"role":"user","content":[
        {"type":"image","source":{"type":"base64","media_type":"image/png","data":png()}},
        {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}},
        {"type":"text","text":"describe"}
    ]}])));
    assert_eq!(
        v["input"][0]["content"],
        json!([
            {"type":"input_image","image_url":format!("data:image/png;base64,{}", png()),"detail":"auto"},
            {"type":"input_image","image_url":"https://example.com/a.jpg","detail":"auto"},
            {"type":"input_text","text":"describe"}
        ])
    );
    let m = bad(
        &env,
        &simple(json!([{"role":"user","content":[
            {"type":"text","text":"x"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"not base64!"}}]}])),
    );
    assert!(m.contains("messages.0.content.1.source.data"), "{m}");
    assert!(m.contains("base64"), "{m}");
    let m = bad(
        &env,
        &simple(json!([{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/bmp","data":png()}}]}])),
    );
    assert!(m.contains("image/bmp"), "{m}");
}

#[test]
fn input_estimate_charges_images_per_item_not_per_byte() {
    let big = "A".repeat(400_000);
    let mut input = br#"[{"type":"input_image","image_url":"data:image/png;base64,"#.to_vec();
    input.extend_from_slice(big.as_bytes());
    input.extend_from_slice(br#"","detail":"auto"},{"type":"input_text","text":"hi"}]"#);
    let n = estimate_tokens(400, &input);
    assert!(n > 765 && n < 765 + 200, "{n}");
    assert_eq!(estimate_tokens(8, b""), 2);
}

#[test]
fn documents_become_input_file_or_text() {
    let env = Env::new();
    let v = env.upstream(&simple(json!([{"role":"user","content":[
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"},"title":"spec.pdf"},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain text"}},
            {"type":"document","source":{"type":"content","content":[{"type":"text","text":"c1"}]}},
            {"type":"search_result","source":"https://example.com","title":"Example","content":[{"type":"text","text":"body"}]}
        ]}])));
    assert_eq!(
        v["input"][0]["content"],
        json!([
            {"type":"input_file","file_data":"data:application/pdf;base64,JVBERi0x","filename":"spec.pdf"},
            {"type":"input_text","text":"plain text"},
            {"type":"input_text","text":"c1"},
            {"type":"input_text","text":"Search result: Example (https://example.com)\nbody"}
        ])
    );
}

fn bash_call(id: &str, cmd: &str) -> J {
    json!({"type":"tool_use","id":id,"name":"Bash","input":{"command":cmd,"description":"Run it"}})
}

#[test]
fn tool_result_with_image_becomes_a_list_output() {
    let env = Env::new();
    let v = env.upstream(&cc_body(json!([
            {"role":"user","content":"read red.png"},
            {"role":"assistant","content":[{"type":"text","text":"I'll run a tool."},
              {"type":"tool_use","id":"toolu_36d09bf0f5494d24be516f37","name":"Read","input":{"file_path":"/home/me/red.png"}}]},
            {"role":"user","content":[
              {"tool_use_id":"toolu_36d09bf0f5494d24be516f37","type":"tool_result",
               "content":[{"type":"text","text":"the image:"},{"type":"image","source":{"type":"base64","data":png(),"media_type":"image/png"}}],
               "cache_control":{"type":"ephemeral"}}]}
        ])));
    let input = v["input"].as_array().unwrap();
    assert_eq!(
        input[2],
        json!({"type":"function_call","call_id":"toolu_36d09bf0f5494d24be516f37","name":"Read","arguments":"{\"file_path\":\"/home/me/red.png\"}"})
    );
    assert_eq!(
        input[3],
        json!({"type":"function_call_output","call_id":"toolu_36d09bf0f5494d24be516f37","output":[
                {"type":"input_text","text":"the image:"},
                {"type":"input_image","image_url":format!("data:image/png;base64,{}", png()),"detail":"auto"}]})
    );
    assert_eq!(input.len(), 4);
}

#[test]
fn error_results_are_prefixed_and_outputs_are_strings() {
    let env = Env::new();
    let v = env.upstream(&simple(json!([
            {"role":"user","content":"go"},
            {"role":"assistant","content":[bash_call("toolu_a","echo_hello"), bash_call("toolu_b","x"), bash_call("toolu_c","y"), bash_call("toolu_d","z")]},
            {"role":"user","content":[
              {"type":"tool_result","content":"Exit code 127\n/bin/bash: line 1: echo_hello: command not found","is_error":true,"tool_use_id":"toolu_a"},
              {"type":"tool_result","tool_use_id":"toolu_b","content":[{"type":"text","text":"l1"},{"type":"text","text":"l2"}]},
              {"type":"tool_result","tool_use_id":"toolu_c"},
              {"type":"tool_result","tool_use_id":"toolu_d","is_error":true,"content":[{"type":"image","source":{"type":"base64","data":png(),"media_type":"image/png"}}]}
            ]}
        ])));
    let input = v["input"].as_array().unwrap();
    assert_eq!(
        input[5]["output"],
        "Error: Exit code 127\n/bin/bash: line 1: echo_hello: command not found"
    );
    assert_eq!(input[6]["output"], "l1\nl2");
    assert_eq!(input[7]["output"], "");
    assert_eq!(
        input[8]["output"][0],
        json!({"type":"input_text","text":"Error"})
    );
    assert_eq!(input[8]["output"][1]["type"], "input_image");
}

#[test]
fn parallel_results_out_of_order_follow_their_calls() {
    let env = Env::new();
    let v = env.upstream(&cc_body(json!([
            {"role":"user","content":"run two"},
            {"role":"assistant","content":[
              {"type":"tool_use","id":"toolu_037160b5755f4d8eb8a68cce","name":"Bash","input":{"command":"echo one","description":"Print one"}},
              {"type":"tool_use","id":"toolu_5a7016f100ac4bfab71f413e","name":"Bash","input":{"command":"echo two","description":"Print two"}}]},
            {"role":"user","content":[
              {"tool_use_id":"toolu_5a7016f100ac4bfab71f413e","type":"tool_result","content":"two","is_error":false},
              {"tool_use_id":"toolu_037160b5755f4d8eb8a68cce","type":"tool_result","content":"one","is_error":false,"cache_control":{"type":"ephemeral"}}]}
        ])));
    let input = v["input"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = input[1..]
        .iter()
        .map(|i| (i["type"].as_str().unwrap(), i["call_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("function_call", "toolu_037160b5755f4d8eb8a68cce"),
            ("function_call", "toolu_5a7016f100ac4bfab71f413e"),
            ("function_call_output", "toolu_5a7016f100ac4bfab71f413e"),
            ("function_call_output", "toolu_037160b5755f4d8eb8a68cce"),
        ]
    );
    assert_eq!(input[3]["output"], "two");
    assert_eq!(
        input[1]["arguments"],
        "{\"command\":\"echo one\",\"description\":\"Print one\"}"
    );
    assert!(
        input.iter().all(|i| i.get("id").is_none()),
        "no upstream item ids"
    );
}

#[test]
fn tool_result_without_an_earlier_tool_use_is_400() {
    let env = Env::new();
    let m = bad(
        &env,
        &simple(json!([
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_missing","content":"x"}]}
        ])),
    );
    assert!(
        m.contains("toolu_missing") && m.contains("messages.0.content.0"),
        "{m}"
    );
}

#[test]
fn tool_outputs_come_before_text_of_the_same_message() {
    let env = Env::new();
    let v = env.upstream(&simple(json!([
            {"role":"user","content":"go"},
            {"role":"assistant","content":[bash_call("toolu_34b71654ddb745909b757ea1","rm -rf x")]},
            {"role":"user","content":[
              {"type":"text","text":"before"},
              {"type":"tool_result","content":"The user doesn't want to proceed with this tool use.","is_error":true,"tool_use_id":"toolu_34b71654ddb745909b757ea1"},
              {"type":"text","text":"CRITICAL: Respond with TEXT ONLY."}]}
        ])));
    let input = v["input"].as_array().unwrap();
    assert_eq!(input[2]["type"], "function_call_output");
    assert_eq!(
        input[2]["output"],
        "Error: The user doesn't want to proceed with this tool use."
    );
    assert_eq!(
        input[3],
        json!({"type":"message","role":"user","content":[
                {"type":"input_text","text":"before"},
                {"type":"input_text","text":"CRITICAL: Respond with TEXT ONLY."}]})
    );
}

#[test]
fn thinking_round_trips_over_three_turns() {
    let env = Env::new();
    // Turn 1: the user asks; the answer is §9.3's reasoning + commentary + call.
    let mut msgs = first_turn();
    let plan = env.plan(&cc_body(msgs.clone()));
    let f1 = run_lines(&plan, &stream_b());
    let a1 = assistant_from_frames(&f1);
    assert_eq!(a1["content"][0]["type"], "thinking");
    assert_eq!(a1["content"][0]["thinking"], "");
    assert!(
        a1["content"][0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("cxa1.")
    );
    assert_eq!(a1["content"][2]["input"], json!({"command":"echo hi"}));

    // Turn 2: Claude Code echoes the turn verbatim and answers the call.
    msgs.as_array_mut().unwrap().extend([
            a1.clone(),
            json!({"role":"user","content":[{"tool_use_id":"call_abc","type":"tool_result","content":"hi","is_error":false,"cache_control":{"type":"ephemeral"}}]}),
        ]);
    let plan2 = env.plan(&cc_body(msgs.clone()));
    let v2 = upstream_json(&plan2);
    let input = v2["input"].as_array().unwrap();
    assert_eq!(
        input[2],
        json!({"type":"reasoning","id":"rs_1","summary":[],"content":null,"encrypted_content":"gAAAAA…"})
    );
    assert_eq!(
        input[3],
        json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"Running it now."}]})
    );
    assert_eq!(input[4]["type"], "function_call");
    assert_eq!(
        input[5],
        json!({"type":"function_call_output","call_id":"call_abc","output":"hi"})
    );

    // Turn 3: a second answer (reasoning + text), plus a foreign signature and a
    // redacted block from some other server: those are dropped.
    let lines = text_stream("2", "Done: hi");
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let a2 = assistant_from_frames(&run_lines(&plan2, &lines));
    let mut a2_blocks = a2["content"].as_array().unwrap().clone();
    a2_blocks.insert(
        0,
        json!({"type":"thinking","thinking":"foreign","signature":"EqQBCkgIARAB"}),
    );
    a2_blocks.insert(1, json!({"type":"redacted_thinking","data":"EmwKAhgBEgy"}));
    msgs.as_array_mut().unwrap().extend([
        json!({"role":"assistant","content":a2_blocks}),
        json!({"role":"user","content":"thanks"}),
    ]);
    let v3 = env.upstream(&cc_body(msgs));
    let input = v3["input"].as_array().unwrap();
    let kinds: Vec<&str> = input.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "reasoning",
            "message",
            "function_call",
            "function_call_output",
            "reasoning",
            "message",
            "message"
        ]
    );
    assert_eq!(input[6]["encrypted_content"], "enc-2");
    assert_eq!(input[6]["id"], "rs_2");
    assert_eq!(input[7]["content"][0]["text"], "Done: hi");
    assert!(!v3.to_string().contains("foreign"));
    assert!(!v3.to_string().contains("EmwKAhgBEgy"));
}

#[test]
fn thinking_text_becomes_the_summary_and_a_trailing_reasoning_is_dropped() {
    let env = Env::new();
    let sig = signature_envelope("rs_9", "enc9");
    let v = env.upstream(&simple(json!([
            {"role":"user","content":"q"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"I think","signature":sig},{"type":"text","text":"A"}]},
            {"role":"user","content":"q2"},
            {"role":"assistant","content":[{"type":"text","text":"B"},{"type":"thinking","thinking":"dangling","signature":signature_envelope("rs_x","e")}]},
            {"role":"user","content":"q3"}
        ])));
    let input = v["input"].as_array().unwrap();
    assert_eq!(
        input[1]["summary"],
        json!([{"type":"summary_text","text":"I think"}])
    );
    assert_eq!(input[2]["content"][0]["text"], "A");
    assert!(!v.to_string().contains("dangling"));
    assert_eq!(input.len(), 6);
}

#[test]
fn tool_choice_variants_and_parallel_switch() {
    let env = Env::new();
    let with = |tc: J| {
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["tools"] = json!([{"name":"Bash","input_schema":{"type":"object"}}]);
        b["tool_choice"] = tc;
        env.upstream(&b)
    };
    let v = with(json!({"type":"auto"}));
    assert_eq!(
        (v["tool_choice"].clone(), v["parallel_tool_calls"].clone()),
        (json!("auto"), json!(true))
    );
    assert_eq!(with(json!({"type":"any"}))["tool_choice"], "required");
    assert_eq!(with(json!({"type":"none"}))["tool_choice"], "none");
    assert_eq!(
        with(json!({"type":"tool","name":"Bash"}))["tool_choice"],
        json!({"type":"function","name":"Bash"})
    );
    let v = with(json!({"type":"auto","disable_parallel_tool_use":true}));
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(
        v["tools"],
        json!([{"type":"function","name":"Bash","description":"","parameters":{"type":"object"},"strict":false}])
    );
}

#[test]
fn effort_follows_the_mapping_table() {
    let env = Env::new();
    let effort = |model: &str, thinking: Option<J>, oc: Option<J>| {
        let mut b = json!({"model":model,"messages":[{"role":"user","content":"x"}]});
        if let Some(t) = thinking {
            b["thinking"] = t;
        }
        if let Some(o) = oc {
            b["output_config"] = o;
        }
        let v = env.upstream(&b);
        (
            v["reasoning"]["effort"].as_str().unwrap().to_owned(),
            v["reasoning"].get("summary").cloned(),
        )
    };
    let e = |model, t, o| effort(model, t, o).0;
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"type":"adaptive"})),
            Some(json!({"effort":"high"}))
        ),
        "high"
    );
    assert_eq!(
        e("gpt-5.5", None, Some(json!({"effort":"max"}))),
        "xhigh",
        "clamped"
    );
    assert_eq!(e("gpt-6-sol", None, Some(json!({"effort":"max"}))), "max");
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"type":"disabled"})),
            Some(json!({"effort":"low"}))
        ),
        "low"
    );
    assert_eq!(
        e("gpt-5.5", Some(json!({"type":"adaptive"})), None),
        "medium",
        "model default"
    );
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"type":"enabled","budget_tokens":1024})),
            None
        ),
        "low"
    );
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"type":"enabled","budget_tokens":8000})),
            None
        ),
        "medium"
    );
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"budget_tokens":31999,"type":"enabled","display":"omitted"})),
            None
        ),
        "high"
    );
    assert_eq!(
        e(
            "gpt-5.5",
            Some(json!({"type":"enabled","budget_tokens":64000})),
            None
        ),
        "xhigh"
    );
    assert_eq!(
        e("gpt-5.5", Some(json!({"type":"disabled"})), None),
        "low",
        "lowest"
    );
    assert_eq!(e("claude-3-5-haiku-20241022", None, None), "low");
    assert_eq!(
        effort(
            "gpt-5.5",
            Some(json!({"type":"adaptive","display":"omitted"})),
            None
        )
        .1,
        None
    );
    assert_eq!(
        effort(
            "gpt-5.5",
            Some(json!({"type":"adaptive","display":"updates"})),
            None
        )
        .1,
        Some(json!("auto"))
    );
    assert_eq!(
        effort("gpt-5.5", Some(json!({"type":"adaptive"})), None).1,
        Some(json!("auto"))
    );
    // Claude Code's default model: client name echoed, configured backend used.
    let p = env.plan(&cc_body(first_turn()));
    assert_eq!(p.client_model(), "claude-opus-5-5");
    assert_eq!(p.upstream().model, "gpt-5.5");
    assert_eq!(p.upstream().effort.as_deref(), Some("medium"));
    assert_eq!(p.upstream().summary, None);
    assert!(p.stream());
    assert_eq!(p.protocol(), Protocol::Anthropic);
}

#[test]
fn web_search_tool_and_unsupported_server_tools() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"search"}]));
    b["tools"] = json!([{"type":"web_search_20250305","name":"web_search","max_uses":5,
            "allowed_domains":["docs.rs"],"blocked_domains":[],
            "user_location":{"type":"approximate","city":"Berlin","region":"Berlin","country":"DE","timezone":"Europe/Berlin"}}]);
    let p = env.plan(&b);
    assert!(p.upstream().include_sources);
    let v = upstream_json(&p);
    assert_eq!(
        v["tools"],
        json!([{"type":"web_search","external_web_access":true,"filters":{"allowed_domains":["docs.rs"]},
                "user_location":{"type":"approximate","city":"Berlin","region":"Berlin","country":"DE","timezone":"Europe/Berlin"}}])
    );
    assert_eq!(
        v["include"],
        json!([
            "reasoning.encrypted_content",
            "web_search_call.action.sources"
        ])
    );
    for ty in [
        "bash_20250124",
        "text_editor_20250728",
        "code_execution_20250825",
        "computer_20250124",
        "web_fetch_20250910",
        "memory_20250818",
    ] {
        b["tools"] = json!([{"type":ty,"name":"x"}]);
        let m = bad(&env, &b);
        assert!(m.contains(ty) && m.contains("tools.0"), "{m}");
    }
}

#[test]
fn unknown_blocks_fields_and_betas_are_ignored() {
    let env = Env::new();
    let mut b = cc_body(json!([
        {"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"},"citations":null},
          {"type":"future_block","x":1},{"type":"image","source":{"type":"file","file_id":"file_1"}}],"extra":true},
        {"role":"assistant","content":[{"type":"text","text":"Searching."},
          {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"rust hyper 1.0"}},
          {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[{"type":"web_search_result","url":"https://hyper.rs","title":"hyper","encrypted_content":"Eqg","page_age":"2 days ago"}]},
          {"type":"code_execution_tool_result","tool_use_id":"x","content":{}},
          {"type":"mystery"}]},
        {"role":"user","content":"odd role"}
    ]));
    let m = bad(&env, &cc_body(json!([{"role":"tool","content":"x"}])));
    assert!(m.contains("unknown role \"tool\""), "{m}");
    for (k, v) in [
        ("safeguards", json!([{"type":"dangerous_tool_use"}])),
        ("temperature", json!(0.7)),
        ("top_p", json!(0.9)),
        ("top_k", json!(5)),
        ("service_tier", json!("auto")),
        ("container", json!("c")),
        ("cache_control", json!({"type":"ephemeral"})),
    ] {
        b[k] = v;
    }
    b["tools"][0]["input_examples"] = json!([{"command":"ls"}]);
    b["tools"][0]["eager_input_streaming"] = json!(false);
    b["tools"][0]["strict"] = json!(true);
    b["tools"][0]["cache_control"] = json!({"type":"ephemeral"});
    let v = env.upstream(&b);
    let s = v.to_string();
    for k in [
        "safeguards",
        "temperature",
        "top_p",
        "cache_control",
        "defer_loading",
        "input_examples",
        "metadata",
        "max_tokens",
        "context_management",
    ] {
        assert!(!s.contains(k), "{k} leaked: {s}");
    }
    let input = v["input"].as_array().unwrap();
    assert_eq!(
        input[0]["content"],
        json!([{"type":"input_text","text":"hi"}])
    );
    assert_eq!(
        input[1]["content"],
        json!([{"type":"output_text","text":"Searching."},
                {"type":"output_text","text":"[web_search: rust hyper 1.0]"},
                {"type":"output_text","text":"[web_search results]\n- hyper <https://hyper.rs>"}])
    );
    assert_eq!(input[2]["role"], "user");
    assert_eq!(v["tools"][0]["strict"], false);
    assert_eq!(v["tools"][2]["name"], "DeferredToolPlaceholder");
}

#[test]
fn wrong_types_are_400_naming_the_field() {
    let env = Env::new();
    assert!(bad(&env, &json!({"messages":[]})).contains("model"));
    assert!(bad(&env, &json!({"model":"m"})).contains("messages"));
    assert!(bad(&env, &json!({"model":"m","messages":{}})).contains("messages"));
    assert!(bad(&env, &json!({"model":7,"messages":[]})).contains("model"));
    let m = bad(&env, &simple(json!([{"role":"user","content":5}])));
    assert!(
        m.contains("messages.0.content") && m.contains("a number"),
        "{m}"
    );
    assert!(bad(&env, &json!({"model":"m","messages":[],"system":3})).contains("system"));
    assert!(bad(&env, &json!({"model":"m","messages":[],"tools":{}})).contains("tools"));
    assert!(
        bad(
            &env,
            &json!({"model":"m","messages":[],"stop_sequences":"x"})
        )
        .contains("stop_sequences")
    );
    let mut body = b"[1]".to_vec();
    assert!(translate(&mut body, &env.ctx()).is_err());
}

#[test]
fn long_tool_names_are_shortened_upstream_and_restored() {
    let env = Env::new();
    let long = format!("mcp__plugin_server__{}", "very_long_tool_name_".repeat(4));
    let mut b = simple(json!([
        {"role":"user","content":"x"},
        {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":long,"input":{}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok"}]}
    ]));
    b["tools"] =
        json!([{"name":long,"description":"d","input_schema":{"type":"object","properties":{}}}]);
    b["tool_choice"] = json!({"type":"tool","name":long});
    let p = env.plan(&b);
    let v = upstream_json(&p);
    let up = v["tools"][0]["name"].as_str().unwrap().to_owned();
    assert!(up.len() <= 64 && up != long);
    assert_eq!(v["input"][1]["name"], up);
    assert_eq!(v["tool_choice"]["name"], up);
    let f = run_deltas(
        &p,
        &[
            Delta::ToolCallStart {
                index: 0,
                call_id: "call_9",
                name: &up,
                custom: false,
            },
            Delta::ToolCallArgs {
                index: 0,
                fragment: "{}",
            },
            Delta::ToolCallDone {
                index: 0,
                call_id: "call_9",
                name: &up,
                namespace: None,
                arguments: "{}",
                custom: false,
            },
            Delta::Completed {
                usage: Usage::default(),
            },
        ],
    );
    assert_eq!(f[2]["content_block"]["name"], long.as_str());
    let mut c = Collected::new();
    c.items.push(Item::ToolCall(Call {
        call_id: "call_9".into(),
        name: up.clone(),
        namespace: None,
        arguments: "{}".into(),
        custom: false,
    }));
    c.finish = Finish::Completed;
    let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
    assert_eq!(r["content"][0]["name"], long.as_str());
}

#[test]
fn conversation_id_comes_from_header_then_metadata_then_a_hash() {
    let mut env = Env::new();
    let b = cc_body(first_turn());
    assert_eq!(
        env.plan(&b).upstream().conversation_id,
        "a31f3bca-a60d-4b01-935a-96d1911167bb"
    );
    env.headers.insert(
        "x-claude-code-session-id",
        HeaderValue::from_static("hdr-session"),
    );
    assert_eq!(env.plan(&b).upstream().conversation_id, "hdr-session");
    let env = Env::new();
    let plain =
        simple(json!([{"role":"user","content":"first"},{"role":"assistant","content":"a"}]));
    let id1 = env.plan(&plain).upstream().conversation_id.clone();
    let mut longer = plain.clone();
    longer["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role":"user","content":"more"}));
    assert_eq!(
        env.plan(&longer).upstream().conversation_id,
        id1,
        "stable as the history grows"
    );
    let other = simple(json!([{"role":"user","content":"other"}]));
    assert_ne!(env.plan(&other).upstream().conversation_id, id1);
    let mut meta = plain.clone();
    meta["metadata"] = json!({"user_id":"not json"});
    assert_eq!(env.plan(&meta).upstream().conversation_id, id1);
}

#[test]
fn stop_sequences_speed_and_output_format() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["stop_sequences"] = json!(["END", ""]);
    b["speed"] = json!("fast");
    b["output_config"] = json!({"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"string"}}}}});
    let p = env.plan(&b);
    assert_eq!(p.answer.stop_sequences, ["END".to_owned()]);
    let v = upstream_json(&p);
    assert_eq!(v["service_tier"], "priority");
    assert_eq!(v["text"]["format"]["type"], "json_schema");
    assert_eq!(
        v["text"]["format"]["schema"]["properties"]["a"]["type"],
        "string"
    );
    assert!(!v.to_string().contains("stop_sequences"));
}

#[test]
fn large_objects_are_written_deterministically() {
    let env = Env::new();
    let mut props = serde_json::Map::new();
    for i in 0..50 {
        props.insert(format!("p{i:02}"), json!({"type":"string"}));
    }
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["tools"] = json!([{"name":"Big","input_schema":{"type":"object","properties":props}}]);
    let a = env.plan(&b).upstream().body();
    for _ in 0..5 {
        assert_eq!(env.plan(&b).upstream().body(), a);
    }
    let v: J = serde_json::from_slice(&a).unwrap();
    assert_eq!(
        v["tools"][0]["parameters"]["properties"]
            .as_object()
            .unwrap()
            .len(),
        50
    );
}

// ---- streaming -------------------------------------------------------------------

#[test]
fn text_stream_has_the_exact_event_sequence() {
    let env = Env::new();
    let p = env.plan(&simple(json!([{"role":"user","content":"hi"}])));
    let f = run_lines(
        &p,
        &[
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_0a1b","status":"in_progress","output":[]}}"#,
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"in_progress","content":[],"phase":"final_answer","role":"assistant"}}"#,
            r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
            r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"!","logprobs":[]}"#,
            r#"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","text":"Hi!"}],"phase":"final_answer","role":"assistant"}}"#,
            r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_0a1b","status":"completed","usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1246}}}"#,
        ],
    );
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:text",
            "text_delta0:Hi",
            "text_delta0:!",
            "stop0",
            "message_delta:end_turn",
            "message_stop"
        ]
    );
    let m = &f[0]["message"];
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["model"], "gpt-5.5");
    assert_eq!(m["content"], json!([]));
    assert_eq!(m["stop_reason"], J::Null);
    assert_eq!(m["usage"]["output_tokens"], 1);
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(f[2]["content_block"], json!({"type":"text","text":""}));
    assert_eq!(
        f[6],
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"input_tokens":210,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":12}})
    );
}

#[test]
fn reasoning_commentary_and_tool_call_stream_like_claude_expects() {
    let env = Env::new();
    let mut b = cc_body(first_turn());
    b["thinking"] = json!({"type":"adaptive","display":"updates"});
    let p = env.plan(&b);
    let f = run_lines(&p, &stream_b());
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:thinking",
            "thinking_delta0:**Running a command**\n\nI'll run ",
            "thinking_delta0:echo.",
            "signature_delta0:<sig>",
            "stop0",
            "start1:text",
            "text_delta1:Running it now.",
            "stop1",
            "start2:tool_use",
            "input_json_delta2:{\"command\":\"echo ",
            "input_json_delta2:hi\"}",
            "stop2",
            "message_delta:tool_use",
            "message_stop",
        ]
    );
    assert_eq!(f[0]["message"]["model"], "claude-opus-5-5");
    assert_eq!(
        f[2]["content_block"],
        json!({"type":"thinking","thinking":"","signature":""})
    );
    let sig = f[5]["delta"]["signature"].as_str().unwrap();
    assert_eq!(open_signature(sig), Some(("rs_1".into(), "gAAAAA…".into())));
    assert_eq!(
        f.iter()
            .filter(|x| x["delta"]["type"] == "signature_delta")
            .count(),
        1
    );
    assert_eq!(
        f[10]["content_block"],
        json!({"type":"tool_use","id":"call_abc","name":"Bash","input":{}})
    );
    assert_eq!(f[14]["usage"]["input_tokens"], 234);
    assert_eq!(f[14]["usage"]["cache_read_input_tokens"], 1000);
    assert_eq!(f[14]["usage"]["output_tokens"], 40);
}

#[test]
fn reasoning_parts_are_separated_and_hidden_without_thinking() {
    let env = Env::new();
    let lines = [
        r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
        r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
        r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"a"}"#,
        r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}"#,
        r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":1,"delta":"b"}"#,
        r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"enc","summary":[{"text":"a"},{"text":"b"}]}}"#,
        r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"message","content":[{"type":"output_text","text":"ok"}]}}"#,
        r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
    ];
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["thinking"] = json!({"type":"enabled","budget_tokens":2000});
    let f = run_lines(&env.plan(&b), &lines);
    assert_eq!(
        describe(&f)[2..8],
        [
            "start0:thinking",
            "thinking_delta0:a",
            "thinking_delta0:\n\n",
            "thinking_delta0:b",
            "signature_delta0:<sig>",
            "stop0"
        ]
    );
    let f = run_lines(
        &env.plan(&simple(json!([{"role":"user","content":"x"}]))),
        &lines,
    );
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:text",
            "text_delta0:ok",
            "stop0",
            "message_delta:end_turn",
            "message_stop"
        ]
    );
}

#[test]
fn parallel_tool_calls_are_sequential_blocks_and_empty_arguments_send_braces() {
    let env = Env::new();
    let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
    let f = run_lines(
        &p,
        &[
            r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":""}}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\"command\":\"echo one\"}"}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":"{\"command\":\"echo one\"}"}}"#,
            r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","call_id":"call_2","name":"ListAgents","arguments":""}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"function_call","call_id":"call_2","name":"ListAgents","arguments":""}}"#,
            r#"{"type":"response.output_item.done","output_index":2,"item":{"type":"function_call","call_id":"call_3","name":"Bash","arguments":"{\"command\":\"echo two\"}"}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        ],
    );
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:tool_use",
            "input_json_delta0:{\"command\":\"echo one\"}",
            "stop0",
            "start1:tool_use",
            "input_json_delta1:{}",
            "stop1",
            "start2:tool_use",
            "input_json_delta2:{\"command\":\"echo two\"}",
            "stop2",
            "message_delta:tool_use",
            "message_stop",
        ]
    );
    let a = assistant_from_frames(&f);
    assert_eq!(
        a["content"][1],
        json!({"type":"tool_use","id":"call_2","name":"ListAgents","input":{}})
    );
}

#[test]
fn stop_sequences_cut_text_across_deltas() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["stop_sequences"] = json!(["STOP", "\n\nHuman:"]);
    let p = env.plan(&b);
    let t = |text| Delta::Text { index: 0, text };
    let f = run_deltas(
        &p,
        &[
            Delta::MessageStart {
                index: 0,
                phase: None,
            },
            t("Hello ST"),
            t("AR and S"),
            t("T"),
            t("OP tail"),
            t("more"),
            Delta::MessageDone { index: 0 },
            Delta::ToolCallStart {
                index: 1,
                call_id: "c",
                name: "Bash",
                custom: false,
            },
            Delta::ToolCallDone {
                index: 1,
                call_id: "c",
                name: "Bash",
                namespace: None,
                arguments: "{}",
                custom: false,
            },
            Delta::Completed {
                usage: Usage::default(),
            },
        ],
    );
    let text = streamed_text(&f);
    assert_eq!(text, "Hello STAR and ");
    let last = &f[f.len() - 2];
    assert_eq!(
        last["delta"],
        json!({"stop_reason":"stop_sequence","stop_sequence":"STOP"})
    );
    assert!(!describe(&f).iter().any(|d| d.contains("tool_use")));
    // A partial match at the end of a message is flushed, not swallowed.
    let f = run_deltas(
        &p,
        &[
            t("abc\n\nHum"),
            Delta::MessageDone { index: 0 },
            Delta::Completed {
                usage: Usage::default(),
            },
        ],
    );
    let text = streamed_text(&f);
    assert_eq!(text, "abc\n\nHum");
    assert_eq!(f[f.len() - 2]["delta"]["stop_reason"], "end_turn");
}

#[test]
fn incomplete_maps_to_max_tokens_or_refusal() {
    let env = Env::new();
    let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
    let f = run_deltas(
        &p,
        &[
            Delta::Text {
                index: 0,
                text: "partial",
            },
            Delta::Incomplete {
                reason: Some("max_output_tokens"),
                usage: Usage {
                    input: 9,
                    output: 7,
                    ..Usage::default()
                },
            },
        ],
    );
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:text",
            "text_delta0:partial",
            "stop0",
            "message_delta:max_tokens",
            "message_stop"
        ]
    );
    let f = run_deltas(
        &p,
        &[Delta::Incomplete {
            reason: Some("content_filter"),
            usage: Usage::default(),
        }],
    );
    assert_eq!(f[2]["delta"]["stop_reason"], "refusal");
}

#[test]
fn fail_writes_one_error_event_and_nothing_after() {
    let env = Env::new();
    let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
    let mut enc = p.encoder();
    let mut out = BytesMut::new();
    enc.begin(&mut out);
    enc.delta(
        &Delta::Text {
            index: 0,
            text: "hal",
        },
        &mut out,
    );
    enc.keepalive(&mut out);
    let err = Error::new(crate::error::ErrorKind::Overloaded, "Overloaded");
    enc.fail(&err, &mut out);
    let len = out.len();
    enc.delta(
        &Delta::Text {
            index: 0,
            text: "more",
        },
        &mut out,
    );
    enc.delta(
        &Delta::Completed {
            usage: Usage::default(),
        },
        &mut out,
    );
    enc.keepalive(&mut out);
    enc.fail(&err, &mut out);
    assert_eq!(out.len(), len);
    let f = frames(&out);
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:text",
            "text_delta0:hal",
            "ping",
            "stop0",
            "error"
        ]
    );
    assert_eq!(
        f[6],
        json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
    );
}

#[test]
fn web_search_streams_server_tool_blocks_and_citations() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["tools"] = json!([{"type":"web_search_20250305","name":"web_search"}]);
    let p = env.plan(&b);
    let f = run_lines(
        &p,
        &[
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"ws_014h","type":"web_search_call","status":"completed","action":{"type":"search","query":"hyper 1.0 release","sources":[{"type":"url","url":"https://hyper.rs/blog/","title":"hyper 1.0"}]}}}"#,
            r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"message","content":[]}}"#,
            r#"{"type":"response.output_text.delta","output_index":1,"delta":"hyper 1.0 is out"}"#,
            r#"{"type":"response.output_text.annotation.added","output_index":1,"annotation":{"type":"url_citation","url":"https://hyper.rs/blog/","title":"hyper 1.0","start_index":0,"end_index":9}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"message","content":[]}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        ],
    );
    assert_eq!(
        describe(&f),
        [
            "message_start",
            "ping",
            "start0:server_tool_use",
            "input_json_delta0:{\"query\":\"hyper 1.0 release\"}",
            "stop0",
            "start1:web_search_tool_result",
            "stop1",
            "start2:text",
            "text_delta2:hyper 1.0 is out",
            "citations_delta2:…",
            "stop2",
            "message_delta:end_turn",
            "message_stop",
        ]
    );
    assert_eq!(
        f[2]["content_block"],
        json!({"type":"server_tool_use","id":"srvtoolu_014h","name":"web_search","input":{}})
    );
    assert_eq!(
        f[5]["content_block"],
        json!({"type":"web_search_tool_result","tool_use_id":"srvtoolu_014h","content":[
                {"type":"web_search_result","url":"https://hyper.rs/blog/","title":"hyper 1.0","encrypted_content":"","page_age":null}]})
    );
    assert_eq!(
        f[9]["delta"]["citation"],
        json!({"type":"web_search_result_location","url":"https://hyper.rs/blog/","title":"hyper 1.0","cited_text":"hyper 1.0","encrypted_index":""})
    );
    assert_eq!(
        f[11]["usage"]["server_tool_use"],
        json!({"web_search_requests":1})
    );
}

#[test]
fn output_for_one_byte_text_deltas_equals_whole_text() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["stop_sequences"] = json!(["zz"]);
    let p = env.plan(&b);
    let text = "naïve café — ünïcode z text zy";
    let mut pieces: Vec<Delta<'_>> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let mut j = i + 1;
        while !text.is_char_boundary(j) {
            j += 1;
        }
        pieces.push(Delta::Text {
            index: 0,
            text: &text[i..j],
        });
        i = j;
    }
    pieces.push(Delta::Completed {
        usage: Usage::default(),
    });
    let f = run_deltas(&p, &pieces);
    let got = streamed_text(&f);
    assert_eq!(got, text);
}

// ---- render ----------------------------------------------------------------------

#[test]
fn render_builds_a_complete_message() {
    let env = Env::new();
    let mut b = cc_body(first_turn());
    b["stream"] = json!(false);
    b["thinking"] = json!({"type":"adaptive","display":"summarized"});
    let p = env.plan(&b);
    assert!(!p.stream());
    let c = collect(&stream_b());
    let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
    assert!(r["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(r["type"], "message");
    assert_eq!(r["role"], "assistant");
    assert_eq!(r["model"], "claude-opus-5-5");
    let sig = signature_envelope("rs_1", "gAAAAA…");
    assert_eq!(
        r["content"],
        json!([
            {"type":"thinking","thinking":"**Running a command**\n\nI'll run echo.","signature":sig},
            {"type":"text","text":"Running it now.","citations":null},
            {"type":"tool_use","id":"call_abc","name":"Bash","input":{"command":"echo hi"}}
        ])
    );
    assert_eq!(r["stop_reason"], "tool_use");
    assert_eq!(r["stop_sequence"], J::Null);
    assert_eq!(
        r["usage"],
        json!({"input_tokens":234,"cache_creation_input_tokens":0,"cache_read_input_tokens":1000,"output_tokens":40,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},
                "server_tool_use":null,"service_tier":"standard"})
    );
}

#[test]
fn render_wraps_bad_arguments_and_honours_stop_sequences() {
    let env = Env::new();
    let mut b = simple(json!([{"role":"user","content":"x"}]));
    b["stop_sequences"] = json!(["###"]);
    let p = env.plan(&b);
    let mut c = Collected::new();
    c.items.push(Item::ToolCall(Call {
        call_id: "c1".into(),
        name: "Bash".into(),
        namespace: None,
        arguments: "{not json".into(),
        custom: false,
    }));
    c.items.push(Item::ToolCall(Call {
        call_id: "c2".into(),
        name: "Bash".into(),
        namespace: None,
        arguments: "".into(),
        custom: false,
    }));
    c.items.push(Item::Message {
        text: "keep ### drop".into(),
        refusal: String::new(),
        phase: None,
        citations: vec![],
    });
    c.items.push(Item::Message {
        text: "after".into(),
        refusal: String::new(),
        phase: None,
        citations: vec![],
    });
    c.finish = Finish::Completed;
    let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
    assert_eq!(r["content"][0]["input"], json!({"_raw":"{not json"}));
    assert_eq!(r["content"][1]["input"], json!({}));
    assert_eq!(r["content"][2]["text"], "keep ");
    assert_eq!(r["content"].as_array().unwrap().len(), 3);
    assert_eq!(r["stop_reason"], "stop_sequence");
    assert_eq!(r["stop_sequence"], "###");
    let mut c = Collected::new();
    c.finish = Finish::Incomplete(Some("max_output_tokens".into()));
    let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
    assert_eq!(r["stop_reason"], "max_tokens");
    assert_eq!(r["content"], json!([]));
}

#[test]
fn render_web_search_with_citations() {
    let env = Env::new();
    let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
    let mut c = Collected::new();
    c.items.push(Item::WebSearch {
        id: "ws_1".into(),
        query: Some("q".into()),
        sources: vec![("https://a.example".into(), None)],
    });
    c.items.push(Item::Message {
        text: "héllo world".into(),
        refusal: String::new(),
        phase: None,
        citations: vec![OwnedCitation {
            url: "https://a.example".into(),
            title: Some("A".into()),
            start: 0,
            end: 5,
        }],
    });
    c.finish = Finish::Completed;
    let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
    assert_eq!(
        r["content"][0],
        json!({"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}})
    );
    assert_eq!(r["content"][1]["content"][0]["title"], "https://a.example");
    assert_eq!(r["content"][2]["citations"][0]["cited_text"], "héllo");
    assert_eq!(
        r["usage"]["server_tool_use"],
        json!({"web_search_requests":1})
    );
    assert_eq!(r["stop_reason"], "end_turn");
}

// ---- count_tokens ----------------------------------------------------------------

#[test]
fn count_tokens_is_within_five_percent_of_the_exact_count() {
    let env = Env::new();
    let mut msgs = first_turn();
    msgs.as_array_mut().unwrap().extend([
            json!({"role":"assistant","content":[{"type":"text","text":"I'll run a tool."}, bash_call("toolu_1","ls -la /work && cat README.md")]}),
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"total 8\ndrwxr-xr-x 2 me me 4096 .\n-rw-r--r-- 1 me me 120 README.md\n# Project\nA proxy that speaks two protocols."}]}),
        ]);
    let body = cc_body(msgs);
    let plan = env.plan(&body);
    let v = upstream_json(&plan);
    let mut text = String::new();
    text.push_str(v["instructions"].as_str().unwrap());
    for item in v["input"].as_array().unwrap() {
        for part in item["content"].as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(part["text"].as_str().unwrap_or(""));
        }
        for k in ["name", "arguments", "output"] {
            if let Some(s) = item[k].as_str() {
                text.push('\n');
                text.push_str(s);
            }
        }
    }
    text.push('\n');
    text.push_str(&v["tools"].to_string());
    let exact = crate::tokens::count(&text) as f64;
    let r = env.count(&body);
    let n = r["input_tokens"].as_u64().unwrap() as f64;
    assert!(
        (n - exact).abs() / exact < 0.05,
        "count {n} vs exact {exact}"
    );
    assert_eq!(r["context_window"], 272_000);
    assert_eq!(r["auto_compact_token_limit"], 244_800);
}

#[test]
fn count_tokens_never_rejects_partial_bodies() {
    let mut env = Env::new();
    env.config.auto_compact_token_limit = Some(180_000);
    env.config.context_window = Some(200_000);
    let r = env.count(&json!({"model":"claude-opus-5-5","messages":[{"role":"user","content":"\nYou are an agent working with the user toward their goals."}],"tools":[]}));
    assert!(r["input_tokens"].as_u64().unwrap() > 5);
    assert_eq!(r["context_window"], 200_000);
    assert_eq!(r["auto_compact_token_limit"], 180_000);
    for body in [
        json!({"model":"m","tools":[{"name":"Bash","description":"Run","input_schema":{"type":"object"}}]}),
        json!({"messages":[{"role":"user","content":"foo"}]}),
        json!({"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"nope","content":"x"}]}]}),
        json!({"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"!!"}}]}]}),
        json!({"model":"m","messages":[],"tools":[{"type":"bash_20250124","name":"bash"}],"thinking":{"type":"enabled","budget_tokens":2048}}),
        json!({"model":"m","messages":[{"role":"user","content":5}],"stream":"yes"}),
    ] {
        let r = env.count(&body);
        assert!(r["input_tokens"].as_u64().unwrap() >= 1, "{body}");
    }
}
