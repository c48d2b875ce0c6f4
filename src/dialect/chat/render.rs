//! The non-stream Chat answer: a `Collected` response rendered as one `chat.completion`,
//! and the usage object and finish reasons the stream shares.

use simd_json::prelude::*;

use crate::dialect::PlanCore;
use crate::json::{write_counts, write_str, write_u64};
use crate::upstream::collect::{Call, Collected, Finish, Item};
use crate::upstream::events::Usage;
use crate::upstream::request::ToolNames;

/// How a Chat answer is written, besides the `PlanCore` (set by `request`, read by `render`
/// and `stream`).
pub(super) struct Answer {
    pub(super) names: ToolNames,
    pub(super) include_usage: bool,
    /// `reasoning_content` or `reasoning`.
    pub(super) reasoning_field: String,
    /// The request used only legacy `functions`: answer with `function_call`.
    pub(super) legacy: bool,
    /// The `chatcmpl-…` id of the answer (fixed per request so a kept exchange is found
    /// under the id the client saw).
    pub(super) id: String,
}

fn service_tier(core: &PlanCore) -> &str {
    core.upstream.service_tier.as_deref().unwrap_or("default")
}

/// `{"id":…,"object":"<object>","created":…,"model":…`: how every Chat object begins.
pub(super) fn write_head(out: &mut Vec<u8>, id: &str, object: &[u8], created: u64, model: &str) {
    out.extend_from_slice(b"{\"id\":");
    write_str(out, id);
    out.extend_from_slice(b",\"object\":\"");
    out.extend_from_slice(object);
    out.extend_from_slice(b"\",\"created\":");
    write_u64(out, created);
    out.extend_from_slice(b",\"model\":");
    write_str(out, model);
}

/// The full OpenAI usage object.
pub(super) fn write_usage<B: bytes::BufMut>(out: &mut B, u: &Usage) {
    const USAGE: &[u8] = br#"{"prompt_tokens":#,"completion_tokens":#,"total_tokens":#,"prompt_tokens_details":{"cached_tokens":#,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":#,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
    write_counts(
        out,
        USAGE,
        &[u.input, u.output, u.total, u.cached, u.reasoning],
    );
}

pub(super) fn incomplete_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("content_filter") => "content_filter",
        // `max_output_tokens` and anything unknown: the answer was cut short.
        _ => "length",
    }
}

pub(super) fn render(
    core: &PlanCore,
    a: &Answer,
    c: &Collected,
    id: &str,
    created: u64,
) -> Vec<u8> {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut annotations = Vec::new();
    let mut reasoning: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for item in &c.items {
        match item {
            Item::Message {
                text: t,
                refusal: r,
                citations,
                ..
            } => {
                // Citation offsets are relative to their message; shift them into the joined text.
                let base = text.chars().count() as u32;
                for cit in citations {
                    annotations.push((base + cit.start, base + cit.end, cit));
                }
                text.push_str(t);
                refusal.push_str(r);
            }
            Item::Reasoning(r) => {
                reasoning.extend(
                    r.summary
                        .iter()
                        .map(String::as_str)
                        .filter(|s| !s.is_empty()),
                );
            }
            Item::ToolCall(c) => calls.push(c),
            Item::WebSearch { .. } | Item::Compaction { .. } => {}
        }
    }
    let finish = match &c.finish {
        Finish::Incomplete(reason) => incomplete_reason(reason.as_deref()),
        _ if !calls.is_empty() && a.legacy => "function_call",
        _ if !calls.is_empty() => "tool_calls",
        _ if !refusal.is_empty() => "content_filter",
        _ => "stop",
    };

    let mut out = Vec::with_capacity(512 + text.len() + refusal.len());
    write_head(
        &mut out,
        id,
        b"chat.completion",
        created,
        &core.client_model,
    );
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    if text.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        write_str(&mut out, &text);
    }
    out.extend_from_slice(b",\"refusal\":");
    if refusal.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        write_str(&mut out, &refusal);
    }
    out.extend_from_slice(b",\"annotations\":[");
    for (k, (start, end, cit)) in annotations.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"url_citation\",\"url_citation\":{\"start_index\":");
        write_u64(&mut out, u64::from(*start));
        out.extend_from_slice(b",\"end_index\":");
        write_u64(&mut out, u64::from(*end));
        out.extend_from_slice(b",\"url\":");
        write_str(&mut out, &cit.url);
        out.extend_from_slice(b",\"title\":");
        write_str(&mut out, cit.title.as_deref().unwrap_or(""));
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    if !reasoning.is_empty() {
        out.push(b',');
        write_str(&mut out, &a.reasoning_field);
        out.push(b':');
        write_str(&mut out, &reasoning.join("\n\n"));
    }
    if a.legacy {
        if let Some(Call {
            name, arguments, ..
        }) = calls.first()
        {
            out.extend_from_slice(b",\"function_call\":{\"name\":");
            write_str(&mut out, a.names.restore(name));
            out.extend_from_slice(b",\"arguments\":");
            write_str(&mut out, arguments);
            out.push(b'}');
        }
    } else if !calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (k, call) in calls.iter().enumerate() {
            let Call {
                call_id,
                name,
                arguments,
                custom,
                ..
            } = call;
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_str(&mut out, call_id);
            if *custom {
                out.extend_from_slice(b",\"type\":\"custom\",\"custom\":{\"name\":");
                write_str(&mut out, a.names.restore(name));
                out.extend_from_slice(b",\"input\":");
            } else {
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_str(&mut out, a.names.restore(name));
                out.extend_from_slice(b",\"arguments\":");
            }
            write_str(&mut out, arguments);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
    write_str(&mut out, finish);
    out.extend_from_slice(b"}],\"usage\":");
    write_usage(&mut out, &c.usage);
    out.extend_from_slice(b",\"service_tier\":");
    write_str(&mut out, service_tier(core));
    out.extend_from_slice(b",\"system_fingerprint\":null}");
    out
}
