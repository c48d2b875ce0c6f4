//! The streamed Messages answer: `Delta` → the exact `message_start … message_stop` event
//! sequence (with `event:` lines), local stop sequences held back until they cannot match.

use super::render::{
    Answer, char_range, find_stop, incomplete_reason, server_tool_id, signature_envelope,
    wrap_arguments, write_citation, write_search_result_block, write_usage_fields,
};

use bytes::{BufMut, BytesMut};
use simd_json::prelude::*;

use crate::dialect::{Encoder, PlanCore};
use crate::error::Error;
use crate::json::{write_str, write_u64};
use crate::upstream::events::{Citation, Delta, Source, Usage};
use crate::upstream::request::{ToolNames, random_id};

/// Length of the longest suffix of `held` that is a proper prefix of some stop sequence (the
/// text that must wait for the next delta before it can be sent).
fn partial_suffix_len(held: &str, stops: &[String]) -> usize {
    let h = held.as_bytes();
    let mut keep = 0;
    for s in stops {
        let mut l = s.len().saturating_sub(1).min(h.len());
        while l > keep {
            if s.is_char_boundary(l) && h.ends_with(s.as_bytes().get(..l).unwrap_or_default()) {
                keep = l;
                break;
            }
            l -= 1;
        }
    }
    keep
}

const TEXT_DELTA: &[u8] = br#","delta":{"type":"text_delta","text":"#;
const THINKING_DELTA: &[u8] = br#","delta":{"type":"thinking_delta","thinking":"#;
const JSON_DELTA: &[u8] = br#","delta":{"type":"input_json_delta","partial_json":"#;
const SIGNATURE_DELTA: &[u8] = br#","delta":{"type":"signature_delta","signature":"#;
const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// One `content_block_delta` frame whose delta has a single string field.
fn string_delta(out: &mut BytesMut, index: u32, head: &[u8], value: &str) {
    out.put_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    write_u64(out, u64::from(index));
    out.put_slice(head);
    write_str(out, value);
    out.put_slice(b"}}\n\n");
}

fn block_start_head(out: &mut BytesMut, index: u32) {
    out.put_slice(
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
    );
    write_u64(out, u64::from(index));
    out.put_slice(b",\"content_block\":");
}

fn block_stop(out: &mut BytesMut, index: u32) {
    out.put_slice(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":");
    write_u64(out, u64::from(index));
    out.put_slice(b"}\n\n");
}

/// The content block currently open, by upstream `output_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text { item: u32 },
    Thinking { item: u32, has_text: bool },
    Tool { item: u32, args: bool, custom: bool },
}

/// Writes one streamed Messages answer (A.8). Blocks never interleave: the open block is
/// closed before another starts. Text, thinking and argument deltas are written straight into
/// the output buffer (no allocation per event); with `stop_sequences`, text that might begin
/// a stop sequence waits in a reused buffer for the next delta.
pub struct MessagesEncoder {
    model: String,
    names: ToolNames,
    stop: Vec<String>,
    thinking: bool,
    summaries: bool,
    citations: bool,
    input_estimate: u64,
    /// Index of the next content block.
    next: u32,
    open: Open,
    any_tool: bool,
    searches: u64,
    /// The stop sequence that ended the answer; everything after it is dropped.
    stopped: Option<usize>,
    /// Text held back while it may be the start of a stop sequence.
    held: String,
    /// Text of the current message, kept only when citations are possible (`cited_text`).
    msg_text: String,
    finished: bool,
}

impl MessagesEncoder {
    fn current(&self) -> u32 {
        self.next.saturating_sub(1)
    }

    fn start(&mut self, open: Open, out: &mut BytesMut) -> u32 {
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = open;
        block_start_head(out, index);
        index
    }

    fn close(&mut self, out: &mut BytesMut) {
        let index = self.current();
        match self.open {
            Open::None => return,
            Open::Text { .. } if !self.held.is_empty() => {
                string_delta(out, index, TEXT_DELTA, &self.held);
                self.held.clear();
            }
            Open::Tool { args: false, .. } => string_delta(out, index, JSON_DELTA, "{}"),
            _ => {}
        }
        block_stop(out, index);
        self.open = Open::None;
    }

    fn ensure_text(&mut self, item: u32, out: &mut BytesMut) {
        if self.open != (Open::Text { item }) {
            self.start(Open::Text { item }, out);
            out.put_slice(b"{\"type\":\"text\",\"text\":\"\"}}\n\n");
        }
    }

    fn ensure_thinking(&mut self, item: u32, out: &mut BytesMut) {
        if !matches!(self.open, Open::Thinking { item: i, .. } if i == item) {
            self.start(
                Open::Thinking {
                    item,
                    has_text: false,
                },
                out,
            );
            out.put_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n");
        }
    }

    fn text(&mut self, item: u32, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        self.ensure_text(item, out);
        if self.citations {
            self.msg_text.push_str(text);
        }
        let index = self.current();
        if self.stop.is_empty() {
            string_delta(out, index, TEXT_DELTA, text);
            return;
        }
        self.held.push_str(text);
        if let Some((pos, k)) = find_stop(&self.held, &self.stop) {
            if let Some(before) = self.held.get(..pos).filter(|s| !s.is_empty()) {
                string_delta(out, index, TEXT_DELTA, before);
            }
            self.held.clear();
            self.stopped = Some(k);
            self.close(out);
            return;
        }
        let send = self.held.len() - partial_suffix_len(&self.held, &self.stop);
        if send > 0 {
            if let Some(ready) = self.held.get(..send) {
                string_delta(out, index, TEXT_DELTA, ready);
            }
            self.held.drain(..send);
        }
    }

    fn citation(&mut self, item: u32, c: &Citation<'_>, out: &mut BytesMut) {
        self.ensure_text(item, out);
        out.put_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_u64(out, u64::from(self.current()));
        out.put_slice(br#","delta":{"type":"citations_delta","citation":"#);
        let cited = char_range(&self.msg_text, c.start, c.end);
        write_citation(out, c.url, c.title, cited);
        out.put_slice(b"}}\n\n");
    }

    fn tool_start(
        &mut self,
        item: u32,
        call_id: &str,
        name: &str,
        custom: bool,
        out: &mut BytesMut,
    ) {
        self.any_tool = true;
        self.start(
            Open::Tool {
                item,
                args: false,
                custom,
            },
            out,
        );
        out.put_slice(br#"{"type":"tool_use","id":"#);
        write_str(out, call_id);
        out.put_slice(br#","name":"#);
        write_str(out, self.names.restore(name));
        out.put_slice(b",\"input\":{}}}\n\n");
    }

    fn web_search(
        &mut self,
        id: &str,
        query: Option<&str>,
        sources: &[Source<'_>],
        out: &mut BytesMut,
    ) {
        self.searches += 1;
        let srv = server_tool_id(id);
        let index = self.start(Open::None, out);
        out.put_slice(br#"{"type":"server_tool_use","id":"#);
        write_str(out, &srv);
        out.put_slice(b",\"name\":\"web_search\",\"input\":{}}}\n\n");
        let mut q = Vec::with_capacity(32);
        q.extend_from_slice(br#"{"query":"#);
        write_str(&mut q, query.unwrap_or(""));
        q.push(b'}');
        string_delta(out, index, JSON_DELTA, &String::from_utf8_lossy(&q));
        block_stop(out, index);
        let index = self.start(Open::None, out);
        write_search_result_block(out, &srv, sources.iter().map(|s| (s.url, s.title)));
        out.put_slice(b"}\n\n");
        block_stop(out, index);
    }

    fn finish(&mut self, reason: &'static str, usage: &Usage, out: &mut BytesMut) {
        self.close(out);
        let (reason, sequence) = match self.stopped.and_then(|k| self.stop.get(k)) {
            Some(s) => ("stop_sequence", Some(s.as_str())),
            None => (reason, None),
        };
        out.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out.put_slice(reason.as_bytes());
        out.put_slice(b"\",\"stop_sequence\":");
        crate::json::write_opt_str(out, sequence);
        out.put_slice(b"},\"usage\":{");
        write_usage_fields(out, usage);
        if self.searches > 0 {
            out.put_slice(br#","server_tool_use":{"web_search_requests":"#);
            write_u64(out, self.searches);
            out.put_u8(b'}');
        }
        out.put_slice(b"}}\n\n");
        out.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.finished = true;
    }
}

impl Encoder for MessagesEncoder {
    fn begin(&mut self, out: &mut BytesMut) {
        out.put_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        write_str(out, &random_id("msg_"));
        out.put_slice(br#","type":"message","role":"assistant","model":"#);
        write_str(out, &self.model);
        out.put_slice(
            br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":"#,
        );
        write_u64(out, self.input_estimate);
        out.put_slice(
            br#","cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
        );
        out.put_slice(b"\n\n");
        out.put_slice(PING);
    }

    fn delta(&mut self, d: &Delta<'_>, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        // After a stop sequence the message only ends: nothing else of it is written.
        if self.stopped.is_some()
            && !matches!(d, Delta::Completed { .. } | Delta::Incomplete { .. })
        {
            return;
        }
        match d {
            Delta::MessageStart { .. } => {
                self.close(out);
                self.msg_text.clear();
            }
            Delta::Text { index, text } | Delta::Refusal { index, text } => {
                self.text(*index, text, out)
            }
            Delta::Citation { index, citation } => self.citation(*index, citation, out),
            Delta::MessageDone { index } => {
                if self.open == (Open::Text { item: *index }) {
                    self.close(out);
                }
            }
            Delta::ReasoningStart { index, .. } => {
                if self.thinking {
                    self.ensure_thinking(*index, out);
                }
            }
            Delta::ReasoningPart { index, part } => {
                if let Open::Thinking {
                    item,
                    has_text: true,
                } = self.open
                    && item == *index
                    && *part > 0
                {
                    string_delta(out, self.current(), THINKING_DELTA, "\n\n");
                }
            }
            Delta::ReasoningText { index, text, .. } => {
                if !self.thinking || !self.summaries || text.is_empty() {
                    return;
                }
                self.ensure_thinking(*index, out);
                string_delta(out, self.current(), THINKING_DELTA, text);
                self.open = Open::Thinking {
                    item: *index,
                    has_text: true,
                };
            }
            Delta::ReasoningDone {
                index,
                id,
                encrypted_content,
                ..
            } => {
                if !self.thinking {
                    return;
                }
                self.ensure_thinking(*index, out);
                if let Some(enc) = encrypted_content.filter(|e| !e.is_empty()) {
                    let sig = signature_envelope(id, enc);
                    string_delta(out, self.current(), SIGNATURE_DELTA, &sig);
                }
                self.close(out);
            }
            Delta::ToolCallStart {
                index,
                call_id,
                name,
                custom,
            } => self.tool_start(*index, call_id, name, *custom, out),
            Delta::ToolCallArgs { index, fragment } => {
                if let Open::Tool {
                    item,
                    custom: false,
                    ..
                } = self.open
                    && item == *index
                    && !fragment.is_empty()
                {
                    string_delta(out, self.current(), JSON_DELTA, fragment);
                    self.open = Open::Tool {
                        item,
                        args: true,
                        custom: false,
                    };
                }
            }
            Delta::ToolCallDone {
                index,
                call_id,
                name,
                arguments,
                custom,
                ..
            } => {
                if !matches!(self.open, Open::Tool { item, .. } if item == *index) {
                    self.tool_start(*index, call_id, name, *custom, out);
                }
                if let Open::Tool { args: false, .. } = self.open {
                    let input = wrap_arguments(arguments);
                    string_delta(out, self.current(), JSON_DELTA, &input);
                    self.open = Open::Tool {
                        item: *index,
                        args: true,
                        custom: *custom,
                    };
                }
                self.close(out);
            }
            Delta::WebSearchDone {
                id, query, sources, ..
            } => self.web_search(id, *query, sources, out),
            Delta::Completed { usage } => {
                let reason = if self.any_tool {
                    "tool_use"
                } else {
                    "end_turn"
                };
                self.finish(reason, usage, out);
            }
            Delta::Incomplete { reason, usage } => {
                self.finish(incomplete_reason(*reason), usage, out);
            }
            Delta::Created { .. }
            | Delta::CompactionDone { .. }
            | Delta::Failed { .. }
            | Delta::Error { .. } => {}
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if !self.finished {
            out.put_slice(PING);
        }
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        // Close the open block so the stream stays balanced (start/stop) up to the error.
        if self.open != Open::None {
            block_stop(out, self.current());
            self.open = Open::None;
        }
        out.put_slice(b"event: error\ndata: ");
        out.put_slice(&err.anthropic_json());
        out.put_slice(b"\n\n");
        self.finished = true;
    }
}

impl MessagesEncoder {
    pub(super) fn new(core: &PlanCore, a: &Answer) -> Self {
        MessagesEncoder {
            model: core.client_model.clone(),
            names: a.names.clone(),
            stop: a.stop_sequences.clone(),
            thinking: a.thinking,
            summaries: a.summaries,
            citations: a.citations,
            input_estimate: a.input_estimate,
            next: 0,
            open: Open::None,
            any_tool: false,
            searches: 0,
            stopped: None,
            held: String::new(),
            msg_text: String::new(),
            finished: false,
        }
    }
}
