//! The non-stream Responses answer: a `Collected` response as the final Response object
//! (§10.3), with its output items in the public shape.

use simd_json::prelude::*;

use crate::dialect::PlanCore;
use crate::dialect::items::{write_str_objects, write_summary, write_tool_call};
use crate::json::{write_counts, write_opt_str, write_str, write_u64};
use crate::upstream::collect::{Collected, Finish, Item};
use crate::upstream::events::Usage;
use crate::upstream::request::{ToolChoice, ToolNames, random_id};

/// How a Responses answer is written, besides the `PlanCore` (set by `request`, read by
/// `render` and the plan's encoder).
pub(super) struct Answer {
    pub(super) names: ToolNames,
    /// Some tool name was shortened: item events must have their names restored.
    pub(super) renamed: bool,
    /// The client's `instructions` (echoed in the non-stream answer).
    pub(super) instructions: Option<String>,
}

fn write_usage(out: &mut Vec<u8>, u: &Usage) {
    const USAGE: &[u8] = br#"{"input_tokens":#,"input_tokens_details":{"cached_tokens":#},"output_tokens":#,"output_tokens_details":{"reasoning_tokens":#},"total_tokens":#}"#;
    write_counts(
        out,
        USAGE,
        &[u.input, u.cached, u.output, u.reasoning, u.total],
    );
}

/// The final Response object (§10.3) for `stream:false`.
pub(super) fn render(core: &PlanCore, a: &Answer, c: &Collected, created: u64) -> Vec<u8> {
    let up = &core.upstream;
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"id\":");
    if c.response_id.is_empty() {
        write_str(&mut out, &random_id("resp_"));
    } else {
        write_str(&mut out, &c.response_id);
    }
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    write_u64(&mut out, created);
    match &c.finish {
        Finish::Incomplete(reason) => {
            out.extend_from_slice(b",\"status\":\"incomplete\"");
            out.extend_from_slice(b",\"model\":");
            write_str(&mut out, &core.client_model);
            out.extend_from_slice(b",\"error\":null,\"incomplete_details\":{\"reason\":");
            write_opt_str(&mut out, reason.as_deref());
            out.push(b'}');
        }
        _ => {
            out.extend_from_slice(b",\"status\":\"completed\"");
            out.extend_from_slice(b",\"model\":");
            write_str(&mut out, &core.client_model);
            out.extend_from_slice(b",\"error\":null,\"incomplete_details\":null");
        }
    }
    out.extend_from_slice(b",\"instructions\":");
    write_opt_str(&mut out, a.instructions.as_deref());
    out.extend_from_slice(b",\"output\":[");
    for (k, item) in c.items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_item(&mut out, item, &a.names);
    }
    out.extend_from_slice(b"],\"parallel_tool_calls\":");
    out.extend_from_slice(if up.parallel_tool_calls {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"reasoning\":{\"effort\":");
    write_opt_str(&mut out, up.effort.as_deref());
    out.extend_from_slice(b",\"summary\":");
    write_opt_str(&mut out, up.summary);
    out.extend_from_slice(b"},\"store\":false,\"text\":");
    match &up.text {
        Some(t) => out.extend_from_slice(t),
        None => out.extend_from_slice(br#"{"format":{"type":"text"}}"#),
    }
    out.extend_from_slice(b",\"tool_choice\":");
    match &up.tool_choice {
        ToolChoice::Auto => out.extend_from_slice(b"\"auto\""),
        ToolChoice::None => out.extend_from_slice(b"\"none\""),
        ToolChoice::Required => out.extend_from_slice(b"\"required\""),
        ToolChoice::Function(name) => {
            out.extend_from_slice(b"{\"type\":\"function\",\"name\":");
            write_str(&mut out, a.names.restore(name));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"tools\":[],\"usage\":");
    write_usage(&mut out, &c.usage);
    out.push(b'}');
    out
}

/// One output item in the public Responses shape.
fn write_item(out: &mut Vec<u8>, item: &Item, names: &ToolNames) {
    match item {
        Item::Message {
            text,
            refusal,
            phase,
            citations,
        } => {
            // `Collected` keeps no message id; a fresh one is what the public API promises.
            out.extend_from_slice(b"{\"id\":");
            write_str(out, &random_id("msg_"));
            out.extend_from_slice(
                b",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[",
            );
            let with_text = !text.is_empty() || refusal.is_empty();
            if with_text {
                out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
                write_str(out, text);
                out.extend_from_slice(b",\"annotations\":[");
                for (j, cit) in citations.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"type\":\"url_citation\",\"start_index\":");
                    write_u64(out, u64::from(cit.start));
                    out.extend_from_slice(b",\"end_index\":");
                    write_u64(out, u64::from(cit.end));
                    out.extend_from_slice(b",\"url\":");
                    write_str(out, &cit.url);
                    out.extend_from_slice(b",\"title\":");
                    write_str(out, cit.title.as_deref().unwrap_or(""));
                    out.push(b'}');
                }
                out.extend_from_slice(b"],\"logprobs\":[]}");
            }
            if !refusal.is_empty() {
                if with_text {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"type\":\"refusal\",\"refusal\":");
                write_str(out, refusal);
                out.push(b'}');
            }
            out.push(b']');
            if let Some(phase) = phase {
                out.extend_from_slice(b",\"phase\":");
                write_str(out, phase);
            }
            out.push(b'}');
        }
        Item::Reasoning(r) => {
            out.extend_from_slice(b"{\"id\":");
            write_str(out, &r.id);
            out.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":");
            write_summary(out, &r.summary);
            out.extend_from_slice(b",\"encrypted_content\":");
            write_opt_str(out, r.encrypted_content.as_deref());
            out.push(b'}');
        }
        Item::ToolCall(call) => {
            write_tool_call(out, call, names.restore(&call.name));
            out.extend_from_slice(b",\"status\":\"completed\"}");
        }
        Item::WebSearch { id, query, sources } => {
            out.extend_from_slice(b"{\"id\":");
            write_str(out, id);
            out.extend_from_slice(
                b",\"type\":\"web_search_call\",\"status\":\"completed\",\"action\":{\"type\":\"search\",\"query\":",
            );
            write_opt_str(out, query.as_deref());
            if !sources.is_empty() {
                out.extend_from_slice(b",\"sources\":");
                let urls = sources.iter().map(|(url, _)| url);
                write_str_objects(out, br#"{"type":"url","url":"#, urls);
            }
            out.extend_from_slice(b"}}");
        }
        Item::Compaction {
            id,
            encrypted_content,
        } => {
            out.push(b'{');
            if let Some(id) = id {
                out.extend_from_slice(b"\"id\":");
                write_str(out, id);
                out.push(b',');
            }
            out.extend_from_slice(b"\"type\":\"compaction\",\"encrypted_content\":");
            write_str(out, encrypted_content);
            out.push(b'}');
        }
    }
}
