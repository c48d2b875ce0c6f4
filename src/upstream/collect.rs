//! Non-streaming aggregation: a whole upstream response as owned items.
//!
//! Owns: reading a whole upstream response ([`collect`]: through the same parse/decode loop
//! as the streaming body, `events::Pump`, with the idle timeout) and folding its `Delta`
//! sequence into `Collected` (the output items in order, usage and how the response
//! ended), which each dialect renders as its own final JSON.

use std::time::Duration;

use http_body_util::BodyExt;

use super::events::{Delta, Pump, Usage};
use super::stream::Upstream;
use crate::error::{Error, ErrorKind};

/// Read a whole upstream response into a `Collected`: it ends at the terminal event (or at
/// EOF, `Finish::Open` then); the upstream silent for `idle` is a timeout.
pub async fn collect(mut body: Upstream, idle: Duration) -> Result<Collected, Error> {
    let mut events = Pump::new();
    let mut collected = Collected::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(f) => f,
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("The upstream sent nothing for {} s.", idle.as_secs()),
                ));
            }
        };
        let eof = match frame {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    events.push(&data);
                }
                false
            }
            Some(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::BadGateway,
                    format!(
                        "upstream connection failed: {}",
                        super::client::error_chain(&e)
                    ),
                ));
            }
            None => {
                events.end();
                true
            }
        };
        while let Some(ev) = events.next_event()? {
            ev.decode(|d| collected.push(d))?;
            if collected.finish != Finish::Open {
                // Read the terminator so the connection can be pooled.
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                return Ok(collected);
            }
        }
        if eof {
            return Ok(collected);
        }
    }
}

/// One citation on message text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedCitation {
    pub url: String,
    pub title: Option<String>,
    pub start: u32,
    pub end: u32,
}

/// One output item of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Message {
        text: String,
        refusal: String,
        phase: Option<String>,
        citations: Vec<OwnedCitation>,
    },
    Reasoning(Reasoning),
    ToolCall(Call),
    WebSearch {
        id: String,
        query: Option<String>,
        sources: Vec<(String, Option<String>)>,
    },
    Compaction {
        id: Option<String>,
        encrypted_content: String,
    },
}

/// One reasoning item of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasoning {
    pub id: String,
    /// Summary parts in order.
    pub summary: Vec<String>,
    pub encrypted_content: Option<String>,
}

impl Reasoning {
    /// Summary part `part`, the parts before it created empty where missing.
    fn part(&mut self, part: u32) -> &mut String {
        let i = part as usize;
        if self.summary.len() <= i {
            self.summary.resize(i + 1, String::new());
        }
        &mut self.summary[i]
    }
}

/// One tool call of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Call {
    pub call_id: String,
    /// As the backend knows it (a dialect restores the client's name).
    pub name: String,
    /// The namespace the tool was declared in, echoed back to Responses clients and
    /// replayed in kept history.
    pub namespace: Option<String>,
    pub arguments: String,
    pub custom: bool,
}

/// How the response ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Finish {
    /// No terminal event yet (a stream that stops here is a failure).
    #[default]
    Open,
    Completed,
    Incomplete(Option<String>),
    Failed {
        code: Option<String>,
        message: Option<String>,
    },
}

/// The aggregate of one upstream response.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    pub response_id: String,
    /// Items in upstream `output_index` order.
    pub items: Vec<Item>,
    pub usage: Usage,
    pub finish: Finish,
    /// Maps `output_index` → position in `items`.
    positions: Vec<Option<usize>>,
}

impl Collected {
    pub fn new() -> Self {
        Collected::default()
    }

    /// Whether any function or custom tool call was produced.
    pub fn has_tool_calls(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::ToolCall(_)))
    }

    /// All message text (commentary included) joined in order.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for item in &self.items {
            if let Item::Message { text, .. } = item {
                s.push_str(text);
            }
        }
        s
    }

    fn at(&mut self, index: u32, make: impl FnOnce() -> Item) -> Option<&mut Item> {
        let i = index as usize;
        if self.positions.len() <= i {
            self.positions.resize(i + 1, None);
        }
        let pos = match self.positions[i] {
            Some(p) => p,
            None => {
                self.items.push(make());
                let p = self.items.len() - 1;
                self.positions[i] = Some(p);
                p
            }
        };
        self.items.get_mut(pos)
    }

    /// Fold one delta in.
    pub fn push(&mut self, d: &Delta<'_>) {
        match d {
            Delta::Created { id } => self.response_id = (*id).to_owned(),
            Delta::MessageStart { index, phase } => {
                self.at(*index, || Item::Message {
                    text: String::new(),
                    refusal: String::new(),
                    phase: phase.map(str::to_owned),
                    citations: Vec::new(),
                });
            }
            Delta::Text { index, text } => {
                if let Some(Item::Message { text: t, .. }) = self.at(*index, empty_message) {
                    t.push_str(text);
                }
            }
            Delta::Refusal { index, text } => {
                if let Some(Item::Message { refusal, .. }) = self.at(*index, empty_message) {
                    refusal.push_str(text);
                }
            }
            Delta::Citation { index, citation } => {
                if let Some(Item::Message { citations, .. }) = self.at(*index, empty_message) {
                    citations.push(OwnedCitation {
                        url: citation.url.to_owned(),
                        title: citation.title.map(str::to_owned),
                        start: citation.start,
                        end: citation.end,
                    });
                }
            }
            Delta::ReasoningStart { index, id } => {
                self.at(*index, || {
                    Item::Reasoning(Reasoning {
                        id: (*id).to_owned(),
                        ..Reasoning::default()
                    })
                });
            }
            Delta::ReasoningPart { index, part } => {
                if let Some(Item::Reasoning(r)) = self.at(*index, empty_reasoning) {
                    r.part(*part);
                }
            }
            Delta::ReasoningText { index, part, text } => {
                if let Some(Item::Reasoning(r)) = self.at(*index, empty_reasoning) {
                    r.part(*part).push_str(text);
                }
            }
            Delta::ReasoningDone {
                index,
                id,
                encrypted_content,
                ..
            } => {
                if let Some(Item::Reasoning(r)) = self.at(*index, empty_reasoning) {
                    if !id.is_empty() {
                        r.id = (*id).to_owned();
                    }
                    r.encrypted_content = encrypted_content.map(str::to_owned);
                }
            }
            Delta::ToolCallStart {
                index,
                call_id,
                name,
                custom,
            } => {
                self.at(*index, || {
                    Item::ToolCall(Call {
                        call_id: (*call_id).to_owned(),
                        name: (*name).to_owned(),
                        custom: *custom,
                        ..Call::default()
                    })
                });
            }
            Delta::ToolCallArgs { .. } => {}
            Delta::ToolCallDone {
                index,
                call_id,
                name,
                namespace,
                arguments,
                custom,
            } => {
                let make = || {
                    Item::ToolCall(Call {
                        custom: *custom,
                        ..Call::default()
                    })
                };
                if let Some(Item::ToolCall(c)) = self.at(*index, make) {
                    c.call_id = (*call_id).to_owned();
                    c.name = (*name).to_owned();
                    c.namespace = namespace.map(str::to_owned);
                    c.arguments = (*arguments).to_owned();
                }
            }
            Delta::WebSearchDone {
                index,
                id,
                query,
                sources,
            } => {
                self.at(*index, || Item::WebSearch {
                    id: (*id).to_owned(),
                    query: query.map(str::to_owned),
                    sources: sources
                        .iter()
                        .map(|s| (s.url.to_owned(), s.title.map(str::to_owned)))
                        .collect(),
                });
            }
            Delta::CompactionDone {
                index,
                id,
                encrypted_content,
            } => {
                self.at(*index, || Item::Compaction {
                    id: id.map(str::to_owned),
                    encrypted_content: (*encrypted_content).to_owned(),
                });
            }
            Delta::MessageDone { .. } => {}
            Delta::Completed { usage } => {
                self.usage = *usage;
                self.finish = Finish::Completed;
            }
            Delta::Incomplete { reason, usage } => {
                self.usage = *usage;
                self.finish = Finish::Incomplete(reason.map(str::to_owned));
            }
            Delta::Failed {
                code,
                message,
                usage,
            } => {
                self.usage = *usage;
                self.finish = Finish::Failed {
                    code: code.map(str::to_owned),
                    message: message.map(str::to_owned),
                };
            }
            Delta::Error { code, message } => {
                self.finish = Finish::Failed {
                    code: code.map(str::to_owned),
                    message: message.map(str::to_owned),
                };
            }
        }
    }
}

fn empty_message() -> Item {
    Item::Message {
        text: String::new(),
        refusal: String::new(),
        phase: None,
        citations: Vec::new(),
    }
}

fn empty_reasoning() -> Item {
    Item::Reasoning(Reasoning::default())
}

#[cfg(test)]
mod tests {
    use super::super::events::Decoder;
    use super::*;

    #[test]
    fn collects_reasoning_text_and_calls_in_order() {
        let events = [
            r#"{"type":"response.created","response":{"id":"resp_7c"}}"#,
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"a"}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":1,"delta":"b"}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"enc","summary":[{"text":"a"},{"text":"b"}]}}"#,
            r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"message","phase":"commentary"}}"#,
            r#"{"type":"response.output_text.delta","output_index":1,"delta":"Run"}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"message","content":[{"type":"output_text","text":"Run"}]}}"#,
            r#"{"type":"response.output_item.added","output_index":2,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":""}}"#,
            r#"{"type":"response.function_call_arguments.delta","output_index":2,"delta":"{}"}"#,
            r#"{"type":"response.output_item.done","output_index":2,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":"{}"}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        ];
        let mut dec = Decoder::new();
        let mut c = Collected::new();
        for e in events {
            dec.decode(e.as_bytes(), |d| c.push(d)).unwrap();
        }
        assert_eq!(c.response_id, "resp_7c");
        assert_eq!(c.finish, Finish::Completed);
        assert!(c.has_tool_calls());
        assert_eq!(
            c.items[0],
            Item::Reasoning(Reasoning {
                id: "rs_1".into(),
                summary: vec!["a".into(), "b".into()],
                encrypted_content: Some("enc".into())
            })
        );
        assert_eq!(c.text(), "Run");
        assert_eq!(c.usage.total, 7);
    }
}
