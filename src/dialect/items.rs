//! Items in the backend's input shape, written by hand: an answer's output items sent back
//! as `input` (the kept history behind `previous_response_id`), the tool-call items the
//! dialects replay from a client's history, and the reasoning summary both shapes share.
//!
//! Owns: `write_input_item` (one collected output item as an input item) and the pieces the
//! Responses answer reuses for its output items (`write_summary`, `write_str_objects`,
//! `write_tool_call`).
//! Does not own: the public Responses output shape (`responses::render`) or where a kept
//! conversation is stored (`server::history`).

use crate::json::write_str;
use crate::upstream::collect::{Call, Item};

/// One answered item as the backend takes it back in `input` (upstream tool names, no
/// output-only fields). Returns false for items that are not sent back.
pub(crate) fn write_input_item(out: &mut Vec<u8>, item: &Item) -> bool {
    match item {
        Item::Message {
            text,
            refusal,
            phase,
            ..
        } => {
            out.extend_from_slice(
                b"{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":",
            );
            write_str(out, if text.is_empty() { refusal } else { text });
            out.extend_from_slice(b"}]");
            if let Some(p) = phase {
                out.extend_from_slice(b",\"phase\":");
                write_str(out, p);
            }
            out.push(b'}');
            true
        }
        Item::Reasoning(r) => {
            let Some(enc) = &r.encrypted_content else {
                return false;
            };
            out.extend_from_slice(b"{\"type\":\"reasoning\",\"id\":");
            write_str(out, &r.id);
            out.extend_from_slice(b",\"summary\":");
            write_summary(out, &r.summary);
            out.extend_from_slice(b",\"encrypted_content\":");
            write_str(out, enc);
            out.push(b'}');
            true
        }
        Item::WebSearch { .. } => false,
        Item::ToolCall(call) => {
            write_tool_call(out, call, &call.name);
            out.push(b'}');
            true
        }
        Item::Compaction {
            encrypted_content, ..
        } => {
            out.extend_from_slice(b"{\"type\":\"compaction\",\"encrypted_content\":");
            write_str(out, encrypted_content);
            out.push(b'}');
            true
        }
    }
}

/// A reasoning item's `summary` array: one `summary_text` part per non-empty part.
pub(crate) fn write_summary(out: &mut Vec<u8>, summary: &[String]) {
    let parts = summary.iter().filter(|s| !s.is_empty());
    write_str_objects(out, br#"{"type":"summary_text","text":"#, parts);
}

/// `[{…,"key":s},…]`: one object per string, `head` being each object's text up to it.
pub(crate) fn write_str_objects<S: AsRef<str>>(
    out: &mut Vec<u8>,
    head: &[u8],
    strs: impl Iterator<Item = S>,
) {
    out.push(b'[');
    for (i, s) in strs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(head);
        write_str(out, s.as_ref());
        out.push(b'}');
    }
    out.push(b']');
}

/// A tool call item named `name` up to its `arguments` (function) or `input` (custom),
/// without the closing brace: `{"type":"function_call","call_id":…,"name":…,"arguments":…`.
pub(crate) fn write_tool_call(out: &mut Vec<u8>, call: &Call, name: &str) {
    write_tool_call_head(
        out,
        &call.call_id,
        name,
        call.custom,
        call.namespace.as_deref(),
    );
    write_str(out, &call.arguments);
}

/// The namespace a replayed function call carries: `functions` for a lite model (§7.1).
pub(crate) fn lite_namespace(lite: bool) -> Option<&'static str> {
    lite.then_some("functions")
}

/// A tool call item up to the key of its payload:
/// `{"type":"function_call","call_id":…,"name":…,"arguments":` (`"input":` when custom).
/// A call to a tool declared inside a namespace carries it (`"namespace":"functions"` for
/// a lite model's function tools, §7.1).
pub(crate) fn write_tool_call_head(
    out: &mut Vec<u8>,
    call_id: &str,
    name: &str,
    custom: bool,
    namespace: Option<&str>,
) {
    out.extend_from_slice(if custom {
        b"{\"type\":\"custom_tool_call\",\"call_id\":".as_slice()
    } else {
        b"{\"type\":\"function_call\",\"call_id\":".as_slice()
    });
    write_str(out, call_id);
    if let Some(ns) = namespace {
        out.extend_from_slice(b",\"namespace\":");
        write_str(out, ns);
    }
    out.extend_from_slice(b",\"name\":");
    write_str(out, name);
    out.extend_from_slice(if custom {
        b",\"input\":".as_slice()
    } else {
        b",\"arguments\":".as_slice()
    });
}
