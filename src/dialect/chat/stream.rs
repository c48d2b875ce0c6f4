//! The streamed Chat answer: `Delta` → `chat.completion.chunk` SSE frames (the prefix shared
//! by every chunk is written once per stream; see the module docs of `super`).

use super::render::{Answer, incomplete_reason, write_head, write_usage};
use bytes::BytesMut;
use simd_json::prelude::*;

use crate::dialect::{Encoder, PlanCore};
use crate::error::Error;
use crate::json::{write_str, write_str_body, write_u64};
use crate::upstream::events::{Delta, Usage};
use crate::upstream::request::ToolNames;

const SUFFIX: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const SUFFIX_USAGE: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Streams one answer as `chat.completion.chunk` frames.
pub struct ChatEncoder {
    /// `data: {"id":…,"object":…,"created":…,"model":…,"system_fingerprint":null,`
    /// followed by `"choices":[{"index":0,"delta":`; `head_len` marks the split.
    prefix: Vec<u8>,
    head_len: usize,
    suffix: &'static [u8],
    include_usage: bool,
    /// `{"reasoning_content":` (or `{"reasoning":`).
    reasoning_key: Vec<u8>,
    names: ToolNames,
    /// Upstream `output_index` of each tool call; the position is the client's `index`.
    calls: Vec<u32>,
    legacy: bool,
    /// Reasoning text was written since the last part boundary.
    reasoning_dirty: bool,
    /// The next reasoning text starts a new part: prefix it with a blank line.
    reasoning_sep: bool,
    refused: bool,
    done: bool,
}

impl ChatEncoder {
    pub(super) fn new(core: &PlanCore, a: &Answer, id: &str, created: u64) -> Self {
        let mut prefix = Vec::with_capacity(160 + core.client_model.len());
        prefix.extend_from_slice(b"data: ");
        write_head(
            &mut prefix,
            id,
            b"chat.completion.chunk",
            created,
            &core.client_model,
        );
        prefix.extend_from_slice(b",\"system_fingerprint\":null,");
        let head_len = prefix.len();
        prefix.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        let mut reasoning_key = Vec::with_capacity(24);
        reasoning_key.push(b'{');
        write_str(&mut reasoning_key, &a.reasoning_field);
        reasoning_key.push(b':');
        ChatEncoder {
            prefix,
            head_len,
            suffix: if a.include_usage {
                SUFFIX_USAGE
            } else {
                SUFFIX
            },
            include_usage: a.include_usage,
            reasoning_key,
            names: a.names.clone(),
            calls: Vec::with_capacity(4),
            legacy: a.legacy,
            reasoning_dirty: false,
            reasoning_sep: false,
            refused: false,
            done: false,
        }
    }

    /// The client index of the call at upstream `index`.
    fn call_index(&self, index: u32) -> Option<usize> {
        // `as_slice`: with `simd_json::prelude` in scope, `Vec::iter` resolves to
        // `value_trait::Array::iter`, which boxes its iterator (one allocation per delta).
        self.calls.as_slice().iter().position(|&i| i == index)
    }

    fn finish(&mut self, reason: &str, usage: &Usage, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"{},\"logprobs\":null,\"finish_reason\":");
        write_str(out, reason);
        out.extend_from_slice(if self.include_usage {
            b"}],\"usage\":null}\n\n".as_slice()
        } else {
            b"}]}\n\n".as_slice()
        });
        if self.include_usage {
            out.extend_from_slice(self.prefix.get(..self.head_len).unwrap_or_default());
            out.extend_from_slice(b"\"choices\":[],\"usage\":");
            write_usage(out, usage);
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(DONE);
        self.done = true;
    }
}

impl Encoder for ChatEncoder {
    fn begin(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        out.extend_from_slice(self.suffix);
    }

    fn delta(&mut self, d: &Delta<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match d {
            Delta::Text { text, .. } => {
                if text.is_empty() {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"{\"content\":");
                write_str(out, text);
                out.extend_from_slice(b"}");
                out.extend_from_slice(self.suffix);
            }
            Delta::ToolCallArgs { index, fragment } => {
                if fragment.is_empty() {
                    return;
                }
                let Some(k) = self.call_index(*index) else {
                    return;
                };
                if self.legacy && k > 0 {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                if self.legacy {
                    out.extend_from_slice(b"{\"function_call\":{\"arguments\":");
                    write_str(out, fragment);
                    out.extend_from_slice(b"}}");
                } else {
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    write_u64(out, k as u64);
                    out.extend_from_slice(b",\"function\":{\"arguments\":");
                    write_str(out, fragment);
                    out.extend_from_slice(b"}}]}");
                }
                out.extend_from_slice(self.suffix);
            }
            Delta::ReasoningText { text, .. } => {
                if text.is_empty() {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(&self.reasoning_key);
                out.extend_from_slice(b"\"");
                if self.reasoning_sep {
                    out.extend_from_slice(b"\\n\\n");
                    self.reasoning_sep = false;
                }
                write_str_body(out, text);
                out.extend_from_slice(b"\"}");
                out.extend_from_slice(self.suffix);
                self.reasoning_dirty = true;
            }
            Delta::ReasoningPart { .. } => {
                if self.reasoning_dirty {
                    self.reasoning_sep = true;
                    self.reasoning_dirty = false;
                }
            }
            Delta::Refusal { text, .. } => {
                if text.is_empty() {
                    return;
                }
                self.refused = true;
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"{\"refusal\":");
                write_str(out, text);
                out.extend_from_slice(b"}");
                out.extend_from_slice(self.suffix);
            }
            Delta::ToolCallStart {
                index,
                call_id,
                name,
                ..
            } => {
                if self.call_index(*index).is_some() {
                    return;
                }
                let k = self.calls.len();
                self.calls.push(*index);
                let name = self.names.restore(name);
                if self.legacy {
                    if k > 0 {
                        return;
                    }
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b"{\"function_call\":{\"name\":");
                    write_str(out, name);
                    out.extend_from_slice(b",\"arguments\":\"\"}}");
                } else {
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    write_u64(out, k as u64);
                    out.extend_from_slice(b",\"id\":");
                    write_str(out, call_id);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    write_str(out, name);
                    out.extend_from_slice(b",\"arguments\":\"\"}}]}");
                }
                out.extend_from_slice(self.suffix);
            }
            Delta::Completed { usage } => {
                let reason = if !self.calls.is_empty() && self.legacy {
                    "function_call"
                } else if !self.calls.is_empty() {
                    "tool_calls"
                } else if self.refused {
                    "content_filter"
                } else {
                    "stop"
                };
                self.finish(reason, usage, out);
            }
            Delta::Incomplete { reason, usage } => {
                self.finish(incomplete_reason(*reason), usage, out);
            }
            // Citations only exist in non-stream `annotations`; the rest carries nothing a
            // Chat client can show. Failures reach `fail`, never here.
            Delta::Created { .. }
            | Delta::MessageStart { .. }
            | Delta::Citation { .. }
            | Delta::MessageDone { .. }
            | Delta::ReasoningStart { .. }
            | Delta::ReasoningDone { .. }
            | Delta::ToolCallDone { .. }
            | Delta::WebSearchDone { .. }
            | Delta::CompactionDone { .. }
            | Delta::Failed { .. }
            | Delta::Error { .. } => {}
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b": keep-alive\n\n");
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.done {
            return;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&err.openai_json());
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(DONE);
        self.done = true;
    }
}
