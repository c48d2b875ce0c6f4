//! The streamed Responses answer: every upstream event forwarded as `event: <type>` +
//! `data: <json>`, with the two rewrites the module docs describe (an empty terminal
//! `output` filled in, shortened tool names restored).

use std::ops::Range;

use bytes::BytesMut;
use memchr::{memchr, memmem};
use simd_json::prelude::*;

use crate::dialect::Encoder;
use crate::error::Error;
use crate::json::span;
use crate::json::{write_str, write_u64};
use crate::upstream::events::Delta;
use crate::upstream::request::ToolNames;

/// Streams one answer by forwarding the upstream's events.
pub struct ResponsesEncoder {
    /// Present only when a tool name was shortened: the fast path never looks for names.
    names: Option<ToolNames>,
    /// The `item` JSON of every `response.output_item.done`, back to back.
    items: Vec<u8>,
    /// (`output_index`, span in `items`) per collected item.
    spans: Vec<(u64, Range<usize>)>,
    /// The `sequence_number` the next event the client sees should carry.
    next_seq: u64,
    done: bool,
}

impl ResponsesEncoder {
    pub(super) fn new(names: Option<ToolNames>) -> Self {
        ResponsesEncoder {
            names,
            items: Vec::new(),
            spans: Vec::new(),
            next_seq: 0,
            done: false,
        }
    }

    fn collect(&mut self, data: &[u8]) {
        let Some(item) = span::member(data, b"item") else {
            return;
        };
        let Some(bytes) = data.get(item) else {
            return;
        };
        let index = span::member(data, b"output_index")
            .and_then(|r| data.get(r))
            .and_then(span::parse_u64)
            .unwrap_or(self.spans.len() as u64);
        let start = self.items.len();
        self.items.extend_from_slice(bytes);
        self.spans.push((index, start..self.items.len()));
    }

    /// The terminal event with the collected items spliced into an empty `response.output`,
    /// or `None` when it needs no change.
    fn splice_output(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if self.spans.is_empty() || memmem::find(data, b"\"output\":[]").is_none() {
            return None;
        }
        let resp = span::member(data, b"response")?;
        let output = span::member(data.get(resp.clone())?, b"output")?;
        let output = resp.start + output.start..resp.start + output.end;
        let inner = data.get(output.start + 1..output.end.checked_sub(1)?)?;
        if data.get(output.start) != Some(&b'[') || !inner.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.spans.sort_by_key(|(index, _)| *index);
        let mut out = Vec::with_capacity(data.len() + self.items.len() + self.spans.len());
        out.extend_from_slice(data.get(..output.start)?);
        out.push(b'[');
        for (k, (_, r)) in self.spans.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.items.get(r.clone())?);
        }
        out.push(b']');
        out.extend_from_slice(data.get(output.end..)?);
        Some(out)
    }
}

/// `event: <kind>\ndata: <data>\n\n` (multi-line data keeps one `data:` line per line).
fn frame(out: &mut BytesMut, kind: &[u8], data: &[u8]) {
    out.reserve(kind.len() + data.len() + 17);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\ndata: ");
    if memchr(b'\n', data).is_none() {
        out.extend_from_slice(data);
    } else {
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\ndata: ");
            }
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\n\n");
}

impl Encoder for ResponsesEncoder {
    /// Responses streams open with the upstream's own `response.created`.
    fn begin(&mut self, _out: &mut BytesMut) {}

    fn raw(&mut self, event: &[u8], data: &[u8], out: &mut BytesMut) {
        if self.done || data.is_empty() || data == b"[DONE]" {
            return;
        }
        let kind = if event.is_empty() {
            match span::member(data, b"type")
                .filter(|r| data.get(r.start) == Some(&b'"'))
                .and_then(|r| data.get(r.start + 1..r.end.saturating_sub(1)))
            {
                Some(k) if !k.is_empty() => k,
                // Not an event object: the decoder reports it and `fail` writes the error.
                _ => return,
            }
        } else {
            event
        };
        // The pipeline turns these into `fail`, which writes the one error event.
        if kind == b"response.failed" || kind == b"error" {
            return;
        }
        let seq = span::leading_member(data, b"sequence_number", 2)
            .and_then(|r| data.get(r))
            .and_then(span::parse_u64);
        let rewritten = match kind {
            b"response.output_item.added" | b"response.output_item.done" => {
                let restored = self
                    .names
                    .as_ref()
                    .and_then(|names| names::restore_item_event(data, names));
                if kind == b"response.output_item.done" {
                    self.collect(restored.as_deref().unwrap_or(data));
                }
                restored
            }
            b"response.completed" | b"response.incomplete" => {
                // Spliced items were restored when collected.
                self.splice_output(data).or_else(|| {
                    self.names
                        .as_ref()
                        .and_then(|names| names::restore_response_event(data, names))
                })
            }
            _ => None,
        };
        frame(out, kind, rewritten.as_deref().unwrap_or(data));
        self.next_seq = match seq {
            Some(n) => n.saturating_add(1),
            None => self.next_seq.saturating_add(1),
        };
    }

    fn delta(&mut self, d: &Delta<'_>, _out: &mut BytesMut) {
        // The bytes went out in `raw`; deltas only mark the end.
        if matches!(d, Delta::Completed { .. } | Delta::Incomplete { .. }) {
            self.done = true;
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b": keep-alive\n\n");
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        let code = err.code.as_deref().unwrap_or(err.kind.openai_code());
        out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"code\":");
        write_str(out, code);
        out.extend_from_slice(b",\"message\":");
        write_str(out, &err.message);
        out.extend_from_slice(b",\"param\":null,\"sequence_number\":");
        write_u64(out, self.next_seq);
        out.extend_from_slice(b"}\n\n");
    }
}

/// Restoring shortened tool names inside forwarded events (slow path, only when a name was
/// shortened on the way up). Edits are byte splices of the `name` value.
mod names {
    use std::ops::Range;

    use crate::json::span;
    use crate::json::write_str;
    use crate::upstream::request::ToolNames;

    /// The `name` span of a call item and the client's name, when it differs.
    fn item_edit(item: &[u8], base: usize, names: &ToolNames) -> Option<(Range<usize>, String)> {
        let kind = span::member(item, b"type").and_then(|r| item.get(r))?;
        if kind != b"\"function_call\"" && kind != b"\"custom_tool_call\"" {
            return None;
        }
        let r = span::member(item, b"name")?;
        // Upstream names are `[A-Za-z0-9_-]`: the raw string body is the name.
        let raw = item.get(r.start + 1..r.end.checked_sub(1)?)?;
        let up = std::str::from_utf8(raw).ok()?;
        let original = names.restore(up);
        (original != up).then(|| (base + r.start..base + r.end, original.to_owned()))
    }

    fn apply(data: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Option<Vec<u8>> {
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|(r, _)| r.start);
        let mut out = Vec::with_capacity(data.len() + 64 * edits.len());
        let mut at = 0;
        for (r, name) in &edits {
            out.extend_from_slice(data.get(at..r.start)?);
            write_str(&mut out, name);
            at = r.end;
        }
        out.extend_from_slice(data.get(at..)?);
        Some(out)
    }

    /// `response.output_item.added` / `.done`.
    pub(super) fn restore_item_event(data: &[u8], names: &ToolNames) -> Option<Vec<u8>> {
        let r = span::member(data, b"item")?;
        let edit = item_edit(data.get(r.clone())?, r.start, names)?;
        apply(data, vec![edit])
    }

    /// `response.completed` / `.incomplete` with a non-empty `response.output`.
    pub(super) fn restore_response_event(data: &[u8], names: &ToolNames) -> Option<Vec<u8>> {
        let resp = span::member(data, b"response")?;
        let out = span::member(data.get(resp.clone())?, b"output")?;
        let base = resp.start + out.start;
        let arr = data.get(base..resp.start + out.end)?;
        let edits = span::elements(arr)?
            .into_iter()
            .filter_map(|e| item_edit(arr.get(e.clone())?, base + e.start, names))
            .collect();
        apply(data, edits)
    }
}
