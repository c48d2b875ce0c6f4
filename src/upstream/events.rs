//! Upstream SSE events → the `Delta` pivot.
//!
//! Owns: reading one event's JSON (simd-json, borrowed, with reused buffers: no per-event
//! allocation on the text path) and turning it into zero or more `Delta`s. The decoder also
//! normalises what the backend may leave out: an item that arrives only as
//! `output_item.done` still gets its start and its text or arguments delta, so encoders can
//! rely on `*Start → deltas → *Done` for every item. And [`Pump`], the one parse/decode
//! loop over a response's bytes (SSE events through `sse::parse`, each decoded here) that
//! the streaming body and non-stream aggregation share.
//!
//! Does not own: SSE framing itself (`sse::parse`), reading the upstream body and its
//! timeouts (`body::Translate`, `collect`) or client wire formats (`dialect`).

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::sse::parse::SseParser;

/// Token usage of one response (missing fields count as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Includes `cached`.
    pub input: u64,
    pub cached: u64,
    /// Includes `reasoning`.
    pub output: u64,
    pub reasoning: u64,
    pub total: u64,
}

/// One `url_citation` annotation on output text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Citation<'a> {
    pub url: &'a str,
    pub title: Option<&'a str>,
    pub start: u32,
    pub end: u32,
}

/// One search source of a `web_search_call`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source<'a> {
    pub url: &'a str,
    pub title: Option<&'a str>,
}

/// The pivot between the upstream and every client dialect. `index` is the upstream
/// `output_index` (the item's position in the response output).
#[derive(Debug, PartialEq)]
pub enum Delta<'a> {
    /// `response.created`: the upstream accepted the request.
    Created { id: &'a str },
    /// An assistant message starts. `phase` is `commentary` for a preamble before tool calls.
    MessageStart { index: u32, phase: Option<&'a str> },
    /// A piece of assistant text.
    Text { index: u32, text: &'a str },
    /// A citation attached to the text of message `index`.
    Citation { index: u32, citation: Citation<'a> },
    /// A piece of refusal text.
    Refusal { index: u32, text: &'a str },
    /// The message is complete.
    MessageDone { index: u32 },
    /// A reasoning item starts.
    ReasoningStart { index: u32, id: &'a str },
    /// A new summary part (`part` 0, 1, …) of reasoning item `index` starts.
    ReasoningPart { index: u32, part: u32 },
    /// A piece of reasoning summary (or raw reasoning) text.
    ReasoningText {
        index: u32,
        part: u32,
        text: &'a str,
    },
    /// The reasoning item is complete; `encrypted_content` is the opaque state to send back.
    ReasoningDone {
        index: u32,
        id: &'a str,
        encrypted_content: Option<&'a str>,
        summary: Vec<&'a str>,
    },
    /// A function (or custom, freeform) tool call starts.
    ToolCallStart {
        index: u32,
        call_id: &'a str,
        name: &'a str,
        custom: bool,
    },
    /// A fragment of the call's arguments (JSON text; raw input for custom tools).
    ToolCallArgs { index: u32, fragment: &'a str },
    /// The call is complete; `arguments` is the whole argument string. `namespace` is the
    /// tool's namespace when it was declared inside one (`image_gen`, lite `functions`).
    ToolCallDone {
        index: u32,
        call_id: &'a str,
        name: &'a str,
        namespace: Option<&'a str>,
        arguments: &'a str,
        custom: bool,
    },
    /// A hosted web search finished.
    WebSearchDone {
        index: u32,
        id: &'a str,
        query: Option<&'a str>,
        sources: Vec<Source<'a>>,
    },
    /// A `compaction` item (remote compaction).
    CompactionDone {
        index: u32,
        id: Option<&'a str>,
        encrypted_content: &'a str,
    },
    /// Terminal: `response.completed`.
    Completed { usage: Usage },
    /// Terminal: `response.incomplete` (`reason` is `max_output_tokens`, `content_filter`, …).
    Incomplete {
        reason: Option<&'a str>,
        usage: Usage,
    },
    /// Terminal: `response.failed`.
    Failed {
        code: Option<&'a str>,
        message: Option<&'a str>,
        usage: Usage,
    },
    /// Terminal: a top-level `error` event.
    Error {
        code: Option<&'a str>,
        message: Option<&'a str>,
    },
}

impl Delta<'_> {
    /// Whether this delta ends the response.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Delta::Completed { .. }
                | Delta::Incomplete { .. }
                | Delta::Failed { .. }
                | Delta::Error { .. }
        )
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    delta: Option<&'a str>,
    #[serde(default)]
    output_index: Option<u32>,
    #[serde(default)]
    summary_index: Option<u32>,
    #[serde(default, borrow)]
    item: Option<RawItem<'a>>,
    #[serde(default, borrow)]
    response: Option<RawResponse<'a>>,
    #[serde(default, borrow)]
    annotation: Option<RawAnnotation<'a>>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
    #[serde(default, borrow)]
    message: Option<&'a str>,
    #[serde(default, borrow)]
    error: Option<RawError<'a>>,
}

#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    phase: Option<&'a str>,
    #[serde(default, borrow)]
    call_id: Option<&'a str>,
    #[serde(default, borrow)]
    name: Option<&'a str>,
    #[serde(default, borrow)]
    namespace: Option<&'a str>,
    #[serde(default, borrow)]
    arguments: Option<&'a str>,
    #[serde(default, borrow)]
    input: Option<&'a str>,
    #[serde(default, borrow)]
    encrypted_content: Option<&'a str>,
    #[serde(default, borrow)]
    summary: Option<Vec<RawText<'a>>>,
    #[serde(default, borrow)]
    content: Option<Vec<RawText<'a>>>,
    #[serde(default, borrow)]
    action: Option<RawAction<'a>>,
}

#[derive(Deserialize)]
struct RawText<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a str>,
    #[serde(default, borrow)]
    text: Option<&'a str>,
    #[serde(default, borrow)]
    refusal: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawAction<'a> {
    #[serde(default, borrow)]
    query: Option<&'a str>,
    #[serde(default, borrow)]
    sources: Option<Vec<RawSource<'a>>>,
}

#[derive(Deserialize)]
struct RawSource<'a> {
    #[serde(default, borrow)]
    url: Option<&'a str>,
    #[serde(default, borrow)]
    title: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawAnnotation<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a str>,
    #[serde(default, borrow)]
    url: Option<&'a str>,
    #[serde(default, borrow)]
    title: Option<&'a str>,
    #[serde(default)]
    start_index: Option<u32>,
    #[serde(default)]
    end_index: Option<u32>,
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default, borrow)]
    error: Option<RawError<'a>>,
    #[serde(default, borrow)]
    incomplete_details: Option<RawIncomplete<'a>>,
}

#[derive(Deserialize)]
struct RawError<'a> {
    #[serde(default, borrow)]
    code: Option<&'a str>,
    #[serde(default, borrow)]
    message: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawIncomplete<'a> {
    #[serde(default, borrow)]
    reason: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<RawInputDetails>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    output_tokens_details: Option<RawOutputDetails>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawInputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawOutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl RawUsage {
    fn usage(&self) -> Usage {
        let input = self.input_tokens.unwrap_or(0);
        let output = self.output_tokens.unwrap_or(0);
        Usage {
            input,
            cached: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output,
            reasoning: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            total: self.total_tokens.unwrap_or(input + output),
        }
    }
}

fn usage_of(r: &Option<RawResponse<'_>>) -> Usage {
    r.as_ref()
        .and_then(|r| r.usage.as_ref())
        .map(RawUsage::usage)
        .unwrap_or_default()
}

/// What the decoder knows about one output item.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Unseen,
    Message {
        streamed: bool,
    },
    Reasoning {
        streamed: bool,
    },
    Tool {
        streamed: bool,
    },
    Other,
}

/// Why an event could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The `data:` payload is not JSON or lacks `type`.
    InvalidJson,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream sent an event that is not valid JSON")
    }
}

/// The simd-json parse state reused by every `Decoder` on a thread.
struct Scratch {
    bytes: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: simd_json::tape::Tape<'static>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Option<Scratch>> = const { std::cell::Cell::new(None) };
}

/// Largest event copy whose parse buffers stay cached on a thread.
const MAX_KEPT_SCRATCH: usize = 1024 * 1024;

/// Output items tracked per response (see `dispatch`).
const MAX_OUTPUT_ITEMS: usize = 4096;

/// Turns upstream events into `Delta`s. One per upstream response; reuse across events.
#[derive(Default)]
pub struct Decoder {
    slots: Vec<Slot>,
    /// Stand-in slot for indices at or above `MAX_OUTPUT_ITEMS`.
    overflow: Slot,
    /// `output_index` of the current message for `Text` when the upstream omits it.
    response_id: String,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// The upstream response id (`resp_…`), once `response.created` was seen.
    pub fn response_id(&self) -> &str {
        &self.response_id
    }

    fn slot(&mut self, index: u32) -> &mut Slot {
        let i = index as usize;
        if i >= MAX_OUTPUT_ITEMS {
            // An absurd `output_index` must not size a table: such an item is ignored.
            self.overflow = Slot::Other;
            return &mut self.overflow;
        }
        if self.slots.len() <= i {
            self.slots.resize(i + 1, Slot::Unseen);
        }
        &mut self.slots[i]
    }

    /// Decode one event's `data` payload and call `emit` for each resulting `Delta`.
    /// Unknown event types produce nothing.
    pub fn decode<F>(&mut self, data: &[u8], mut emit: F) -> Result<(), DecodeError>
    where
        F: FnMut(&Delta<'_>),
    {
        if data == b"[DONE]" {
            return Ok(());
        }
        // The parse buffers are per thread, not per stream: a decode never awaits, and
        // 10,000 idle streams must not keep 10,000 sets of them.
        let Scratch {
            mut bytes,
            mut buffers,
            tape,
        } = SCRATCH.take().unwrap_or_else(|| Scratch {
            bytes: Vec::new(),
            buffers: simd_json::Buffers::new(256),
            tape: simd_json::tape::Tape(Vec::new()),
        });
        bytes.clear();
        bytes.extend_from_slice(data);
        // The tape is reused across events (`Tape::reset` re-lifetimes the empty Vec), so a
        // steady-state event allocates nothing.
        let mut tape = tape.reset();
        let (result, tape) = match simd_json::fill_tape(&mut bytes, &mut buffers, &mut tape) {
            Ok(()) => {
                let mut de = simd_json::Deserializer::from_tape(tape);
                let result = match RawEvent::deserialize(&mut de) {
                    Ok(ev) => {
                        self.dispatch(ev, &mut emit);
                        Ok(())
                    }
                    Err(_) => Err(DecodeError::InvalidJson),
                };
                (result, de.into_tape().reset())
            }
            Err(_) => (Err(DecodeError::InvalidJson), tape.reset()),
        };
        // A rare huge event (a compaction item) does not pin its buffers to the thread.
        if bytes.capacity() <= MAX_KEPT_SCRATCH {
            bytes.clear();
            SCRATCH.set(Some(Scratch {
                bytes,
                buffers,
                tape,
            }));
        }
        result
    }

    fn dispatch<F>(&mut self, ev: RawEvent<'_>, emit: &mut F)
    where
        F: FnMut(&Delta<'_>),
    {
        let index = ev.output_index.unwrap_or(0);
        // An absurd `output_index` must not size the per-item tables (here and in every
        // aggregator): such an item is ignored. A real response has a handful of items.
        let whole_response = matches!(
            ev.kind,
            "response.created"
                | "response.completed"
                | "response.incomplete"
                | "response.failed"
                | "error"
        );
        if index as usize >= MAX_OUTPUT_ITEMS && !whole_response {
            return;
        }
        match ev.kind {
            "response.output_text.delta" => {
                let text = ev.delta.unwrap_or("");
                self.ensure_message(index, None, emit);
                *self.slot(index) = Slot::Message { streamed: true };
                emit(&Delta::Text { index, text });
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let part = ev.summary_index.unwrap_or(0);
                if let Slot::Unseen = self.slot(index) {
                    emit(&Delta::ReasoningStart { index, id: "" });
                    emit(&Delta::ReasoningPart { index, part });
                }
                *self.slot(index) = Slot::Reasoning { streamed: true };
                emit(&Delta::ReasoningText {
                    index,
                    part,
                    text: ev.delta.unwrap_or(""),
                });
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                if let Slot::Tool { .. } = self.slot(index) {
                    *self.slot(index) = Slot::Tool { streamed: true };
                    emit(&Delta::ToolCallArgs {
                        index,
                        fragment: ev.delta.unwrap_or(""),
                    });
                }
                // Arguments for a call we never saw start are recovered from output_item.done.
            }
            "response.reasoning_summary_part.added" => {
                let part = ev.summary_index.unwrap_or(0);
                if let Slot::Unseen = self.slot(index) {
                    emit(&Delta::ReasoningStart { index, id: "" });
                    *self.slot(index) = Slot::Reasoning { streamed: false };
                }
                emit(&Delta::ReasoningPart { index, part });
            }
            "response.refusal.delta" => {
                self.ensure_message(index, None, emit);
                *self.slot(index) = Slot::Message { streamed: true };
                emit(&Delta::Refusal {
                    index,
                    text: ev.delta.unwrap_or(""),
                });
            }
            "response.output_text.annotation.added" => {
                if let Some(a) = ev.annotation
                    && a.kind.unwrap_or("url_citation") == "url_citation"
                    && let Some(url) = a.url
                {
                    emit(&Delta::Citation {
                        index,
                        citation: Citation {
                            url,
                            title: a.title,
                            start: a.start_index.unwrap_or(0),
                            end: a.end_index.unwrap_or(0),
                        },
                    });
                }
            }
            "response.output_item.added" => {
                if let Some(item) = ev.item {
                    self.item_added(index, item, emit);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = ev.item {
                    self.item_done(index, item, emit);
                }
            }
            "response.created" => {
                let id = ev.response.as_ref().and_then(|r| r.id).unwrap_or("");
                self.response_id.clear();
                self.response_id.push_str(id);
                emit(&Delta::Created { id });
            }
            "response.completed" => emit(&Delta::Completed {
                usage: usage_of(&ev.response),
            }),
            "response.incomplete" => {
                let reason = ev
                    .response
                    .as_ref()
                    .and_then(|r| r.incomplete_details.as_ref())
                    .and_then(|d| d.reason);
                emit(&Delta::Incomplete {
                    reason,
                    usage: usage_of(&ev.response),
                })
            }
            "response.failed" => {
                let err = ev.response.as_ref().and_then(|r| r.error.as_ref());
                emit(&Delta::Failed {
                    code: err.and_then(|e| e.code),
                    message: err.and_then(|e| e.message),
                    usage: usage_of(&ev.response),
                })
            }
            "error" => {
                let (code, message) = match &ev.error {
                    Some(e) => (e.code.or(ev.code), e.message.or(ev.message)),
                    None => (ev.code, ev.message),
                };
                emit(&Delta::Error { code, message })
            }
            _ => {}
        }
    }

    fn ensure_message<F>(&mut self, index: u32, phase: Option<&str>, emit: &mut F)
    where
        F: FnMut(&Delta<'_>),
    {
        if let Slot::Unseen = self.slot(index) {
            *self.slot(index) = Slot::Message { streamed: false };
            emit(&Delta::MessageStart { index, phase });
        }
    }

    fn item_added<F>(&mut self, index: u32, item: RawItem<'_>, emit: &mut F)
    where
        F: FnMut(&Delta<'_>),
    {
        if *self.slot(index) != Slot::Unseen {
            return;
        }
        match item.kind {
            "message" => self.ensure_message(index, item.phase, emit),
            "reasoning" => {
                *self.slot(index) = Slot::Reasoning { streamed: false };
                emit(&Delta::ReasoningStart {
                    index,
                    id: item.id.unwrap_or(""),
                });
            }
            "function_call" | "custom_tool_call" => {
                *self.slot(index) = Slot::Tool { streamed: false };
                emit(&Delta::ToolCallStart {
                    index,
                    call_id: item.call_id.or(item.id).unwrap_or(""),
                    name: item.name.unwrap_or(""),
                    custom: item.kind == "custom_tool_call",
                });
            }
            _ => *self.slot(index) = Slot::Other,
        }
    }

    fn item_done<F>(&mut self, index: u32, item: RawItem<'_>, emit: &mut F)
    where
        F: FnMut(&Delta<'_>),
    {
        let slot = *self.slot(index);
        match item.kind {
            "message" => {
                self.ensure_message(index, item.phase, emit);
                if !matches!(slot, Slot::Message { streamed: true }) {
                    for part in item.content.iter().flatten() {
                        match (part.kind, part.text, part.refusal) {
                            (Some("refusal"), _, Some(text)) => {
                                emit(&Delta::Refusal { index, text })
                            }
                            (_, Some(text), _) if !text.is_empty() => {
                                emit(&Delta::Text { index, text })
                            }
                            _ => {}
                        }
                    }
                }
                *self.slot(index) = Slot::Other;
                emit(&Delta::MessageDone { index });
            }
            "reasoning" => {
                let summary: Vec<&str> = item
                    .summary
                    .iter()
                    .flatten()
                    .filter_map(|s| s.text)
                    .collect();
                let id = item.id.unwrap_or("");
                if slot == Slot::Unseen {
                    emit(&Delta::ReasoningStart { index, id });
                }
                if !matches!(slot, Slot::Reasoning { streamed: true }) {
                    for (part, text) in summary.iter().enumerate() {
                        let part = part as u32;
                        emit(&Delta::ReasoningPart { index, part });
                        emit(&Delta::ReasoningText { index, part, text });
                    }
                }
                *self.slot(index) = Slot::Other;
                emit(&Delta::ReasoningDone {
                    index,
                    id,
                    encrypted_content: item.encrypted_content,
                    summary,
                });
            }
            "function_call" | "custom_tool_call" => {
                let custom = item.kind == "custom_tool_call";
                let call_id = item.call_id.or(item.id).unwrap_or("");
                let name = item.name.unwrap_or("");
                let arguments = if custom {
                    item.input.unwrap_or("")
                } else {
                    item.arguments.unwrap_or("")
                };
                if slot == Slot::Unseen {
                    emit(&Delta::ToolCallStart {
                        index,
                        call_id,
                        name,
                        custom,
                    });
                }
                if !matches!(slot, Slot::Tool { streamed: true }) && !arguments.is_empty() {
                    emit(&Delta::ToolCallArgs {
                        index,
                        fragment: arguments,
                    });
                }
                *self.slot(index) = Slot::Other;
                emit(&Delta::ToolCallDone {
                    index,
                    call_id,
                    name,
                    namespace: item.namespace,
                    arguments,
                    custom,
                });
            }
            "web_search_call" => {
                let (query, sources) = match &item.action {
                    Some(a) => (
                        a.query,
                        a.sources
                            .iter()
                            .flatten()
                            .filter_map(|s| {
                                s.url.map(|url| Source {
                                    url,
                                    title: s.title,
                                })
                            })
                            .collect(),
                    ),
                    None => (None, Vec::new()),
                };
                *self.slot(index) = Slot::Other;
                emit(&Delta::WebSearchDone {
                    index,
                    id: item.id.unwrap_or(""),
                    query,
                    sources,
                });
            }
            "compaction" | "compaction_summary" => {
                *self.slot(index) = Slot::Other;
                emit(&Delta::CompactionDone {
                    index,
                    id: item.id,
                    encrypted_content: item.encrypted_content.unwrap_or(""),
                });
            }
            _ => *self.slot(index) = Slot::Other,
        }
    }
}

/// Owned copy of a `Delta`, for tests and for buffering events before the response head.
pub fn describe(d: &Delta<'_>) -> String {
    format!("{d:?}")
}

/// Largest single upstream event accepted (reasoning items with encrypted content are KBs;
/// a compaction item can be large).
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// The one parse/decode loop of an upstream response: its bytes in (`push`), its SSE
/// events out one at a time (`next_event`), each decoded into `Delta`s (`Event::decode`). The
/// streaming body (`body::Translate`) and non-stream aggregation (`collect::collect`) both
/// read a response through it.
pub struct Pump {
    parser: SseParser,
    decoder: Decoder,
}

/// One complete event, as it came (`event`, `data`), until it is decoded.
pub struct Event<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
    decoder: &'a mut Decoder,
}

impl Default for Pump {
    fn default() -> Self {
        Pump::new()
    }
}

impl Pump {
    pub fn new() -> Self {
        Pump {
            parser: SseParser::new(MAX_EVENT_BYTES),
            decoder: Decoder::new(),
        }
    }

    /// Bytes read from the upstream.
    pub fn push(&mut self, data: &[u8]) {
        self.parser.push(data);
    }

    /// At EOF: terminate a final unterminated event (tolerant, like `SseParser::finish`),
    /// so `next_event` yields it.
    pub fn end(&mut self) {
        self.parser.push(b"\n\n");
    }

    /// The next complete event buffered, if any; an event over the size limit is an error.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, Error> {
        let Pump { parser, decoder } = self;
        match parser.next_event() {
            Ok(Some(ev)) => Ok(Some(Event {
                event: ev.event,
                data: ev.data,
                decoder,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::new(
                ErrorKind::BadGateway,
                format!("upstream stream: {e}"),
            )),
        }
    }
}

impl Event<'_> {
    /// Decode the event: `emit` is called for each resulting `Delta`.
    pub fn decode<F>(self, emit: F) -> Result<(), Error>
    where
        F: FnMut(&Delta<'_>),
    {
        self.decoder
            .decode(self.data, emit)
            .map_err(|e| Error::new(ErrorKind::BadGateway, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &[&str]) -> Vec<String> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for l in lines {
            dec.decode(l.as_bytes(), |d| out.push(describe(d))).unwrap();
        }
        out
    }

    #[test]
    fn text_stream_decodes_to_start_text_done_completed() {
        let out = run(&[
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","output":[]}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"phase":"final_answer","role":"assistant"}}"#,
            r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi \"there\"","logprobs":[]}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","text":"Hi \"there\"","annotations":[]}],"role":"assistant"}}"#,
            r#"{"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"output_tokens_details":null,"total_tokens":13}}}"#,
        ]);
        assert_eq!(
            out,
            vec![
                r#"Created { id: "resp_1" }"#,
                r#"MessageStart { index: 0, phase: Some("final_answer") }"#,
                r#"Text { index: 0, text: "Hi \"there\"" }"#,
                r#"MessageDone { index: 0 }"#,
                r#"Completed { usage: Usage { input: 10, cached: 4, output: 3, reasoning: 0, total: 13 } }"#,
            ]
        );
    }

    #[test]
    fn items_only_in_done_are_synthesised() {
        let out = run(&[
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call","call_id":"call_1","name":"f","arguments":"{\"a\":1}"}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"id":"msg_1","type":"message","content":[{"type":"output_text","text":"ok"}]}}"#,
        ]);
        assert_eq!(
            out,
            vec![
                r#"ToolCallStart { index: 0, call_id: "call_1", name: "f", custom: false }"#,
                r#"ToolCallArgs { index: 0, fragment: "{\"a\":1}" }"#,
                r#"ToolCallDone { index: 0, call_id: "call_1", name: "f", namespace: None, arguments: "{\"a\":1}", custom: false }"#,
                r#"MessageStart { index: 1, phase: None }"#,
                r#"Text { index: 1, text: "ok" }"#,
                r#"MessageDone { index: 1 }"#,
            ]
        );
    }

    #[test]
    fn streamed_arguments_are_not_repeated_at_done() {
        let out = run(&[
            r#"{"type":"response.output_item.added","output_index":2,"item":{"id":"fc_3","type":"function_call","arguments":"","call_id":"call_abc","name":"Bash"}}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":2,"delta":"{\"command\":"}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":2,"delta":"\"ls\"}"}"#,
            r#"{"type":"response.output_item.done","output_index":2,"item":{"id":"fc_3","type":"function_call","arguments":"{\"command\":\"ls\"}","call_id":"call_abc","name":"Bash"}}"#,
        ]);
        assert_eq!(out.len(), 4);
        assert!(out[3].starts_with("ToolCallDone"));
    }

    #[test]
    fn reasoning_and_terminal_errors() {
        let out = run(&[
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"think"}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"gAAA","summary":[{"type":"summary_text","text":"think"}]}}"#,
            r#"{"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"context_length_exceeded","message":"too long"}}}"#,
            r#"{"type":"error","code":"server_error","message":"boom","param":null}"#,
            r#"{"type":"some.future.event","x":1}"#,
        ]);
        assert_eq!(out[0], r#"ReasoningStart { index: 0, id: "rs_1" }"#);
        assert_eq!(out[1], r#"ReasoningPart { index: 0, part: 0 }"#);
        assert_eq!(
            out[2],
            r#"ReasoningText { index: 0, part: 0, text: "think" }"#
        );
        assert!(out[3].contains("encrypted_content: Some(\"gAAA\")"));
        assert!(out[4].contains("context_length_exceeded"));
        assert!(out[5].contains("server_error"));
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        let mut dec = Decoder::new();
        assert_eq!(
            dec.decode(b"{not json", |_| {}),
            Err(DecodeError::InvalidJson)
        );
        assert_eq!(dec.decode(b"[DONE]", |_| {}), Ok(()));
    }
}
