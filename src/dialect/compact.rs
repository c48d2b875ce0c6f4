//! Remote compaction checkpoints: `POST /v1/compact` (OpenAI Responses shape, for a
//! Responses- or Chat-shaped request) and `POST /v1/messages/compact` (Anthropic shape).
//!
//! Owns: turning an already translated request (`UpstreamRequest` from the `responses`,
//! `chat` or `messages` dialect) into the compaction v2 request (the history plus a final
//! `{"type":"compaction_trigger"}`, codex-backend.md §17.2) and into the v1 body for the
//! `/responses/compact` fallback (§17.1); and rendering the checkpoint the client continues
//! from: the history's user messages followed by the one `compaction` item, which is exactly
//! what v1 returns and what later requests send in place of the old history.
//!
//! Does not own: transport, retries or choosing v1 after v2 failed (`server::endpoints`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde_json::{Value, json};

use super::{Encoder, Plan, PlanCore};
use crate::error::{Error, ErrorKind, Protocol};
use crate::upstream::collect::{Collected, Item};
use crate::upstream::events::{Delta, Usage};
use crate::upstream::request::{UpstreamRequest, random_id};

/// A compaction request, ready to run (never streamed).
pub struct CompactPlan {
    /// The v2 request and the client's model (named in the checkpoint); never streamed.
    core: PlanCore,
    protocol: Protocol,
    /// The user messages of the history (kept in the checkpoint, as v1 does).
    kept: Vec<Value>,
}

/// The user `message` items of an upstream `input` array.
fn user_messages(input: &[u8]) -> Vec<Value> {
    let items: Vec<Value> = serde_json::from_slice(input).unwrap_or_default();
    items
        .into_iter()
        .filter(|it| {
            it.get("type").and_then(Value::as_str) == Some("message")
                && it.get("role").and_then(Value::as_str) == Some("user")
        })
        .collect()
}

impl CompactPlan {
    /// The v2 request for `translated` (the request the client would have sent for a turn).
    pub fn new(translated: &UpstreamRequest, protocol: Protocol, client_model: &str) -> Self {
        let mut upstream = translated.clone();
        let mut input = upstream.input.clone();
        // `input` is a JSON array written by a dialect: append the trigger before `]`.
        while input.last().is_some_and(u8::is_ascii_whitespace) {
            input.pop();
        }
        if input.pop() == Some(b']') {
            if input.iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
                input.push(b',');
            }
            input.extend_from_slice(br#"{"type":"compaction_trigger"}]"#);
        } else {
            input = br#"[{"type":"compaction_trigger"}]"#.to_vec();
        }
        upstream.input = input;
        upstream.compaction = true;
        // The official client sends no reasoning summary and no hosted-tool includes here.
        upstream.summary = None;
        upstream.include_sources = false;
        CompactPlan {
            kept: user_messages(&translated.input),
            core: PlanCore::new(upstream, client_model.to_owned(), false),
            protocol,
        }
    }

    /// The body for the v1 fallback `POST /responses/compact` (no `include`, no `store`).
    pub fn v1_body(&self) -> Vec<u8> {
        let up = &self.core.upstream;
        let original = serde_json::from_slice::<Vec<Value>>(&up.input)
            .unwrap_or_default()
            .into_iter()
            .filter(|it| it.get("type").and_then(Value::as_str) != Some("compaction_trigger"))
            .collect::<Vec<_>>();
        let tools: Value = serde_json::from_slice(&up.tools).unwrap_or_else(|_| json!([]));
        let mut body = json!({
            "model": up.model,
            "input": original,
            "instructions": if up.instructions.trim().is_empty() {
                crate::upstream::request::DEFAULT_INSTRUCTIONS
            } else {
                up.instructions.as_str()
            },
            "tools": tools,
            "parallel_tool_calls": up.parallel_tool_calls,
        });
        if let Some(effort) = &up.effort {
            body["reasoning"] = json!({ "effort": effort });
        }
        if let Some(text) = up
            .text
            .as_ref()
            .and_then(|t| serde_json::from_slice::<Value>(t).ok())
        {
            body["text"] = text;
        }
        body.to_string().into_bytes()
    }

    /// The checkpoint from a v1 reply `{"output":[…]}`.
    pub fn render_v1(&self, reply: &[u8]) -> Result<Vec<u8>, Error> {
        let v: Value = serde_json::from_slice(reply).map_err(|_| {
            Error::new(
                ErrorKind::BadGateway,
                "the upstream compaction reply is not JSON",
            )
        })?;
        let output = v
            .get("output")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let compaction = output
            .iter()
            .filter(|it| it.get("type").and_then(Value::as_str) == Some("compaction"))
            .count();
        if compaction != 1 {
            return Err(no_compaction(compaction, output.len()));
        }
        Ok(self.checkpoint(output, &Usage::default(), ""))
    }

    fn checkpoint(&self, output: Vec<Value>, usage: &Usage, response_id: &str) -> Vec<u8> {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let v = match self.protocol {
            Protocol::OpenAi => json!({
                "id": if response_id.is_empty() { random_id("cmp_") } else { response_id.to_owned() },
                "object": "response.compaction",
                "created_at": created,
                "model": self.core.client_model,
                "output": output,
                "usage": {
                    "input_tokens": usage.input,
                    "input_tokens_details": {"cached_tokens": usage.cached},
                    "output_tokens": usage.output,
                    "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                    "total_tokens": usage.total,
                },
            }),
            Protocol::Anthropic => {
                // The compaction item travels as one opaque `compaction` block; the kept
                // user turns stay as they were on the client's side.
                let content: Vec<Value> = output
                    .iter()
                    .filter(|it| it.get("type").and_then(Value::as_str) == Some("compaction"))
                    .map(|it| {
                        json!({
                            "type": "compaction",
                            "content": it.get("encrypted_content").cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                json!({
                    "id": random_id("msg_"),
                    "type": "message",
                    "role": "assistant",
                    "model": self.core.client_model,
                    "content": content,
                    "stop_reason": "compaction",
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": usage.input.saturating_sub(usage.cached),
                        "cache_read_input_tokens": usage.cached,
                        "cache_creation_input_tokens": 0,
                        "output_tokens": usage.output,
                    },
                })
            }
        };
        v.to_string().into_bytes()
    }
}

fn no_compaction(found: usize, of: usize) -> Error {
    Error::new(
        ErrorKind::BadGateway,
        format!(
            "remote compaction expected exactly one compaction output item, got {found} from {of} output items"
        ),
    )
    .with_code("compaction_failed")
}

impl Plan for CompactPlan {
    type Encoder = NoStream;

    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn core(&self) -> &PlanCore {
        &self.core
    }

    /// The request log names the backend model for a compaction.
    fn client_model(&self) -> &str {
        &self.core.upstream.model
    }

    fn encoder(&self) -> NoStream {
        NoStream
    }

    fn check(&self, c: &Collected) -> Result<(), Error> {
        let found = c
            .items
            .iter()
            .filter(|i| matches!(i, Item::Compaction { .. }))
            .count();
        if found == 1 {
            Ok(())
        } else {
            Err(no_compaction(found, c.items.len()))
        }
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        let mut output = self.kept.clone();
        for item in &c.items {
            if let Item::Compaction {
                id,
                encrypted_content,
            } = item
            {
                let mut v = json!({"type": "compaction", "encrypted_content": encrypted_content});
                if let Some(id) = id {
                    v["id"] = json!(id);
                }
                output.push(v);
            }
        }
        self.checkpoint(output, &c.usage, &c.response_id)
    }
}

/// Compaction is never streamed; the pipeline never asks this encoder for bytes.
pub struct NoStream;

impl Encoder for NoStream {
    fn begin(&mut self, _out: &mut BytesMut) {}
    fn delta(&mut self, _d: &Delta<'_>, _out: &mut BytesMut) {}
    fn keepalive(&mut self, _out: &mut BytesMut) {}
    fn fail(&mut self, _err: &Error, _out: &mut BytesMut) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(input: &str) -> UpstreamRequest {
        UpstreamRequest {
            model: "gpt-5.5".into(),
            input: input.as_bytes().to_vec(),
            tools: b"[]".to_vec(),
            ..UpstreamRequest::default()
        }
    }

    #[test]
    fn trigger_is_appended_and_v1_body_drops_it() {
        let p = CompactPlan::new(
            &up(
                r#"[{"type":"message","role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"message","role":"assistant","content":[]}]"#,
            ),
            Protocol::OpenAi,
            "m",
        );
        let input: Vec<Value> = serde_json::from_slice(&p.core.upstream.input).unwrap();
        assert_eq!(input.len(), 3);
        assert_eq!(input[2]["type"], "compaction_trigger");
        assert!(p.core.upstream.compaction);
        assert_eq!(p.kept.len(), 1);
        let v1: Value = serde_json::from_slice(&p.v1_body()).unwrap();
        assert_eq!(v1["input"].as_array().unwrap().len(), 2);
        assert!(v1.get("include").is_none() && v1.get("store").is_none());
        let empty = CompactPlan::new(&up("[]"), Protocol::OpenAi, "m");
        assert_eq!(
            empty.core.upstream.input,
            br#"[{"type":"compaction_trigger"}]"#
        );
    }

    #[test]
    fn v1_reply_needs_exactly_one_compaction_item() {
        let p = CompactPlan::new(&up("[]"), Protocol::Anthropic, "claude-x");
        let ok = p
            .render_v1(br#"{"output":[{"type":"compaction","encrypted_content":"gA"}]}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(v["content"][0]["type"], "compaction");
        assert_eq!(v["content"][0]["content"], "gA");
        assert_eq!(v["model"], "claude-x");
        assert!(p.render_v1(br#"{"output":[]}"#).is_err());
    }
}
