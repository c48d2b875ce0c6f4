//! The non-stream Messages answer (`Message` JSON), and what the stream shares with it: how
//! the answer is written (`Answer`), the thinking-signature envelope (opened again by
//! `request`), local stop sequences, citations, server tool ids, usage fields, stop reasons.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::BufMut;
use simd_json::prelude::*;

use crate::dialect::PlanCore;
use crate::json::{write_str, write_u64};
use crate::upstream::collect::{Call, Collected, Finish, Item, OwnedCitation};
use crate::upstream::events::Usage;
use crate::upstream::request::{ToolNames, random_id};

/// How a Messages answer is written, besides the `PlanCore` (set by `request`, read by
/// `render` and `stream`).
pub(super) struct Answer {
    pub(super) stop_sequences: Vec<String>,
    pub(super) names: ToolNames,
    /// Whether reasoning is shown as `thinking` blocks (thinking enabled or adaptive).
    pub(super) thinking: bool,
    /// Whether thinking blocks carry the summary text (`display` is not `omitted`).
    pub(super) summaries: bool,
    /// Citations are possible (web search enabled): keep message text for `cited_text`.
    pub(super) citations: bool,
    pub(super) input_estimate: u64,
}

/// Marks our own thinking signatures (version 1 of the envelope).
const SIGNATURE_PREFIX: &str = "cxa1.";

/// Pack a reasoning item's id and `encrypted_content` into a thinking-block signature.
pub fn signature_envelope(reasoning_id: &str, encrypted_content: &str) -> String {
    let len = u32::try_from(reasoning_id.len()).unwrap_or(u32::MAX);
    let mut raw = Vec::with_capacity(4 + reasoning_id.len() + encrypted_content.len());
    raw.extend_from_slice(&len.to_be_bytes());
    raw.extend_from_slice(reasoning_id.as_bytes());
    raw.extend_from_slice(encrypted_content.as_bytes());
    let mut out = String::with_capacity(SIGNATURE_PREFIX.len() + raw.len().div_ceil(3) * 4);
    out.push_str(SIGNATURE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
    out
}

/// The `(reasoning_id, encrypted_content)` inside one of our signatures; `None` for foreign
/// or damaged signatures.
pub(super) fn open_signature(sig: &str) -> Option<(String, String)> {
    let b64 = sig.strip_prefix(SIGNATURE_PREFIX)?;
    let raw = URL_SAFE_NO_PAD.decode(b64).ok()?;
    let (len, rest) = raw.split_first_chunk::<4>()?;
    let n = u32::from_be_bytes(*len) as usize;
    if rest.len() < n {
        return None;
    }
    let (id, enc) = rest.split_at(n);
    let id = std::str::from_utf8(id).ok()?;
    let enc = std::str::from_utf8(enc).ok()?;
    if enc.is_empty() {
        return None;
    }
    Some((id.to_owned(), enc.to_owned()))
}

/// The earliest match of any stop sequence: `(byte position, which sequence)`.
pub(super) fn find_stop(text: &str, stops: &[String]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (k, s) in stops.iter().enumerate() {
        if let Some(p) = text.find(s.as_str())
            && best.is_none_or(|(bp, _)| p < bp)
        {
            best = Some((p, k));
        }
    }
    best
}

/// The characters `start..end` of `s` (annotation indices count characters).
pub(super) fn char_range(s: &str, start: u32, end: u32) -> &str {
    let byte = |n: u32| s.char_indices().nth(n as usize).map_or(s.len(), |(i, _)| i);
    let (a, b) = (byte(start), byte(end.max(start)));
    s.get(a..b).unwrap_or("")
}

/// Tool-call arguments as a JSON object: unchanged when they are one, `{}` when empty, else
/// wrapped as `{"_raw": "<text>"}` so the client always gets an object.
pub(super) fn wrap_arguments(args: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = args.trim();
    if trimmed.is_empty() {
        return "{}".into();
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Object(_)) => trimmed.into(),
        _ => {
            let mut out = Vec::with_capacity(args.len() + 16);
            out.extend_from_slice(br#"{"_raw":"#);
            write_str(&mut out, args);
            out.push(b'}');
            String::from_utf8_lossy(&out).into_owned().into()
        }
    }
}

pub(super) fn server_tool_id(id: &str) -> String {
    let tail = id.strip_prefix("ws_").unwrap_or(id);
    if tail.is_empty() {
        random_id("srvtoolu_")
    } else {
        format!("srvtoolu_{tail}")
    }
}

pub(super) fn write_search_result_block<'s, B: BufMut>(
    out: &mut B,
    tool_use_id: &str,
    sources: impl Iterator<Item = (&'s str, Option<&'s str>)>,
) {
    out.put_slice(br#"{"type":"web_search_tool_result","tool_use_id":"#);
    write_str(out, tool_use_id);
    out.put_slice(br#","content":["#);
    for (i, (url, title)) in sources.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(br#"{"type":"web_search_result","url":"#);
        write_str(out, url);
        out.put_slice(br#","title":"#);
        write_str(out, title.unwrap_or(url));
        out.put_slice(br#","encrypted_content":"","page_age":null}"#);
    }
    out.put_slice(b"]}");
}

pub(super) fn write_citation<B: BufMut>(out: &mut B, url: &str, title: Option<&str>, cited: &str) {
    out.put_slice(br#"{"type":"web_search_result_location","url":"#);
    write_str(out, url);
    out.put_slice(br#","title":"#);
    write_str(out, title.unwrap_or(url));
    out.put_slice(br#","cited_text":"#);
    write_str(out, cited);
    out.put_slice(br#","encrypted_index":""}"#);
}

/// Usage in Anthropic terms: `input_tokens` excludes the cached part.
pub(super) fn write_usage_fields<B: BufMut>(out: &mut B, u: &Usage) {
    let cached = u.cached.min(u.input);
    out.put_slice(br#""input_tokens":"#);
    write_u64(out, u.input - cached);
    out.put_slice(br#","cache_creation_input_tokens":0,"cache_read_input_tokens":"#);
    write_u64(out, cached);
    out.put_slice(br#","output_tokens":"#);
    write_u64(out, u.output);
}

pub(super) fn incomplete_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("content_filter") => "refusal",
        _ => "max_tokens",
    }
}

/// A comma before every element but the first of a list being written.
pub(super) fn push_sep(buf: &mut Vec<u8>, count: &mut usize) {
    if *count > 0 {
        buf.push(b',');
    }
    *count += 1;
}

/// The complete non-stream `Message`.
pub(super) fn render(core: &PlanCore, a: &Answer, c: &Collected) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(br#"{"id":"#);
    write_str(&mut out, &random_id("msg_"));
    out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
    write_str(&mut out, &core.client_model);
    out.extend_from_slice(br#","content":["#);
    let mut n = 0usize;
    let mut stopped: Option<usize> = None;
    let mut any_tool = false;
    let mut searches = 0u64;
    for item in &c.items {
        if stopped.is_some() {
            break;
        }
        match item {
            Item::Message {
                text,
                refusal,
                citations,
                ..
            } => {
                let joined;
                let mut t: &str = text;
                if !refusal.is_empty() {
                    joined = format!("{text}{refusal}");
                    t = &joined;
                }
                if let Some((pos, k)) = find_stop(t, &a.stop_sequences) {
                    t = t.get(..pos).unwrap_or("");
                    stopped = Some(k);
                }
                if t.is_empty() && citations.is_empty() {
                    continue;
                }
                push_sep(&mut out, &mut n);
                out.extend_from_slice(br#"{"type":"text","text":"#);
                write_str(&mut out, t);
                out.extend_from_slice(br#","citations":"#);
                write_citations(&mut out, text, citations);
                out.push(b'}');
            }
            Item::Reasoning(r) => {
                if !a.thinking {
                    continue;
                }
                push_sep(&mut out, &mut n);
                out.extend_from_slice(br#"{"type":"thinking","thinking":"#);
                if a.summaries {
                    write_str(&mut out, &r.summary.join("\n\n"));
                } else {
                    out.extend_from_slice(b"\"\"");
                }
                out.extend_from_slice(br#","signature":"#);
                match r.encrypted_content.as_deref().filter(|e| !e.is_empty()) {
                    Some(enc) => write_str(&mut out, &signature_envelope(&r.id, enc)),
                    None => out.extend_from_slice(b"\"\""),
                }
                out.push(b'}');
            }
            Item::ToolCall(Call {
                call_id,
                name,
                arguments,
                ..
            }) => {
                any_tool = true;
                push_sep(&mut out, &mut n);
                out.extend_from_slice(br#"{"type":"tool_use","id":"#);
                write_str(&mut out, call_id);
                out.extend_from_slice(br#","name":"#);
                write_str(&mut out, a.names.restore(name));
                out.extend_from_slice(br#","input":"#);
                out.extend_from_slice(wrap_arguments(arguments).as_bytes());
                out.push(b'}');
            }
            Item::WebSearch { id, query, sources } => {
                searches += 1;
                let srv = server_tool_id(id);
                push_sep(&mut out, &mut n);
                out.extend_from_slice(br#"{"type":"server_tool_use","id":"#);
                write_str(&mut out, &srv);
                out.extend_from_slice(br#","name":"web_search","input":{"query":"#);
                write_str(&mut out, query.as_deref().unwrap_or(""));
                out.extend_from_slice(b"}}");
                push_sep(&mut out, &mut n);
                write_search_result_block(
                    &mut out,
                    &srv,
                    sources.iter().map(|(u, t)| (u.as_str(), t.as_deref())),
                );
            }
            Item::Compaction { .. } => {}
        }
    }
    let (reason, sequence) = match stopped.and_then(|k| a.stop_sequences.get(k)) {
        Some(s) => ("stop_sequence", Some(s.as_str())),
        None => match &c.finish {
            Finish::Incomplete(r) => (incomplete_reason(r.as_deref()), None),
            _ if any_tool => ("tool_use", None),
            _ => ("end_turn", None),
        },
    };
    out.extend_from_slice(br#"],"stop_reason":"#);
    write_str(&mut out, reason);
    out.extend_from_slice(br#","stop_sequence":"#);
    crate::json::write_opt_str(&mut out, sequence);
    out.extend_from_slice(br#","usage":{"#);
    write_usage_fields(&mut out, &c.usage);
    out.extend_from_slice(
        br#","cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"server_tool_use":"#,
    );
    if searches > 0 {
        out.extend_from_slice(br#"{"web_search_requests":"#);
        write_u64(&mut out, searches);
        out.push(b'}');
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(br#","service_tier":"standard"}}"#);
    out
}

fn write_citations(out: &mut Vec<u8>, text: &str, citations: &[OwnedCitation]) {
    if citations.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'[');
    for (i, c) in citations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_citation(
            out,
            &c.url,
            c.title.as_deref(),
            char_range(text, c.start, c.end),
        );
    }
    out.push(b']');
}
