//! `Provider`: the in-process client — the server's endpoints called as functions, on the
//! same accounts, token store, upstream pool, scheduler and translators, with no socket in
//! between. The Python and Node.js packages are built on it.
//!
//! Owns: calling a route in-process (`route::handle` with a request built here), turning an
//! error answer back into the [`Error`] it was rendered from, the typed non-stream chat
//! answer ([`ChatResponse`]) and the typed chat stream ([`ChatStream`] of [`ChatEvent`]s,
//! decoded from the Chat Completions stream with the crate's SSE parser).
//!
//! Does not own: any translation (the dialects do it, exactly as for HTTP clients).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::emulator::Demo;
use crate::error::{Error, ErrorKind};
use crate::server::respond::RespBody;
use crate::server::route;
use crate::server::state::State;
use crate::sse::parse::SseParser;

/// Largest event the chat stream decoder accepts (a tool call's arguments arrive in pieces).
const MAX_EVENT_BYTES: usize = 64 << 20;

/// The in-process client.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use codex_as_api::{Config, Provider};
/// use serde_json::json;
///
/// // `demo(true)`: the built-in emulator answers; drop it to use your ChatGPT login.
/// let provider = Provider::new(Config::builder().demo(true).build()?).await?;
/// let answer = provider
///     .chat(json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}))
///     .await?;
/// assert!(!answer.content.is_empty());
/// assert_eq!(answer.finish_reason, "stop");
/// # Ok::<(), codex_as_api::Error>(())
/// # }).unwrap();
/// ```
pub struct Provider {
    state: Arc<State>,
    _demo: Option<Demo>,
}

/// One tool call of an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (a JSON text).
    pub arguments: String,
}

/// Token usage of one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens served from the cache.
    pub cached_tokens: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

/// A whole chat answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChatResponse {
    pub content: String,
    /// `stop`, `tool_calls`, `length` or `content_filter`.
    pub finish_reason: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    /// The reasoning summary, when the model produced one.
    pub reasoning_content: Option<String>,
    /// The answer's id (`chatcmpl-…`).
    pub response_id: String,
    /// The model as the request named it.
    pub model: String,
}

/// One event of a streamed chat answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// Answer text.
    Text { text: String },
    /// Reasoning summary text.
    Reasoning { text: String },
    /// A tool call begins.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a tool call's arguments.
    ToolCallDelta { index: usize, arguments: String },
    /// A tool call is complete (its whole arguments).
    ToolCallEnd { index: usize, call: ToolCall },
    /// Token usage (before `Finish`).
    Usage { usage: Usage },
    /// The answer is complete; always the last event.
    Finish { reason: String, response_id: String },
}

impl Provider {
    /// A provider on `config`'s accounts (with `demo`, on the built-in emulator). Needs a
    /// Tokio runtime.
    pub async fn new(mut config: Config) -> Result<Provider, Error> {
        let demo = Demo::start_if(&mut config).await?;
        Ok(Provider {
            state: Arc::new(State::new(config)?),
            _demo: demo,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// A Chat Completions request (`messages`, `tools`, `reasoning_effort`, …; `stream` is
    /// ignored) → the whole answer.
    pub async fn chat(&self, mut request: Value) -> Result<ChatResponse, Error> {
        set(&mut request, "stream", Value::Bool(false))?;
        let v = self
            .json(Method::POST, "/v1/chat/completions", &request)
            .await?;
        Ok(chat_response(&v, &self.state.config.reasoning_field))
    }

    /// A Chat Completions request → its answer as typed events, ending with `Finish` (or
    /// an error). Dropping the stream cancels the request upstream.
    pub async fn chat_stream(&self, mut request: Value) -> Result<ChatStream, Error> {
        set(&mut request, "stream", Value::Bool(true))?;
        set(
            &mut request,
            "stream_options",
            serde_json::json!({"include_usage": true}),
        )?;
        let body = self
            .call(Method::POST, "/v1/chat/completions", Some(&request))
            .await?;
        Ok(ChatStream::new(
            body,
            self.state.config.reasoning_field.clone(),
        ))
    }

    /// A Responses API request (non-streaming) → the response object.
    pub async fn responses(&self, mut request: Value) -> Result<Value, Error> {
        set(&mut request, "stream", Value::Bool(false))?;
        self.json(Method::POST, "/v1/responses", &request).await
    }

    /// An Anthropic Messages request (non-streaming) → the message object.
    pub async fn messages(&self, mut request: Value) -> Result<Value, Error> {
        set(&mut request, "stream", Value::Bool(false))?;
        self.json(Method::POST, "/v1/messages", &request).await
    }

    /// An image generation request (`prompt`, `size`, …) → `{created, data: [{b64_json}]}`.
    pub async fn images(&self, request: Value) -> Result<Value, Error> {
        self.json(Method::POST, "/v1/images/generations", &request)
            .await
    }

    /// Describe images (`images`: URLs or data URLs, `prompt`) → the answer.
    pub async fn inspect(&self, request: Value) -> Result<Value, Error> {
        self.json(Method::POST, "/v1/inspect", &request).await
    }

    /// Compact a conversation (`messages`, or Responses `input`) → the compacted items.
    pub async fn compact(&self, request: Value) -> Result<Value, Error> {
        self.json(Method::POST, "/v1/compact", &request).await
    }

    /// The model catalog (`{object: "list", data: […]}`).
    pub async fn models(&self) -> Result<Value, Error> {
        let body = self.call(Method::GET, "/v1/models", None).await?;
        parse_json(body).await
    }

    /// The accounts' rate-limit windows, plan and credits.
    pub async fn usage(&self) -> Result<Value, Error> {
        let body = self.call(Method::GET, "/v1/usage", None).await?;
        parse_json(body).await
    }

    async fn json(&self, method: Method, path: &str, request: &Value) -> Result<Value, Error> {
        let body = self.call(method, path, Some(request)).await?;
        parse_json(body).await
    }

    /// Run one route in-process; a non-2xx answer becomes the `Error` it was rendered from.
    async fn call(
        &self,
        method: Method,
        path: &str,
        request: Option<&Value>,
    ) -> Result<RespBody, Error> {
        let body = match request {
            Some(v) => {
                Bytes::from(serde_json::to_vec(v).map_err(|e| Error::bad_request(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.state.config.api_key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Error::internal(format!("building the request: {e}")))?;
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let resp = route::handle(Arc::clone(&self.state), req, peer).await;
        if resp.status().is_success() {
            return Ok(resp.into_body());
        }
        if let Some(err) = resp.extensions().get::<Error>() {
            return Err(err.clone());
        }
        let status = resp.status();
        let text = match resp.into_body().collect().await {
            Ok(c) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
            Err(never) => match never {},
        };
        Err(Error::new(
            ErrorKind::UpstreamServer,
            format!("HTTP {status}: {text}"),
        ))
    }
}

fn set(request: &mut Value, key: &str, value: Value) -> Result<(), Error> {
    match request.as_object_mut() {
        Some(o) => {
            o.insert(key.to_owned(), value);
            Ok(())
        }
        None => Err(Error::bad_request("the request must be a JSON object")),
    }
}

async fn parse_json(body: RespBody) -> Result<Value, Error> {
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("the answer is not JSON: {e}")))
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n(u.get("prompt_tokens")),
        completion_tokens: n(u.get("completion_tokens")),
        total_tokens: n(u.get("total_tokens")),
        cached_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")),
        reasoning_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
    })
}

fn tool_call(v: &Value) -> ToolCall {
    ToolCall {
        id: text(v, "id"),
        name: v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        arguments: v
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// A `chat.completion` object as a `ChatResponse`.
fn chat_response(v: &Value, reasoning_field: &str) -> ChatResponse {
    let choice = v.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    ChatResponse {
        content: text(message, "content"),
        finish_reason: text(choice, "finish_reason"),
        tool_calls: message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| calls.iter().map(tool_call).collect())
            .unwrap_or_default(),
        usage: usage(v),
        reasoning_content: message
            .get(reasoning_field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        response_id: text(v, "id"),
        model: text(v, "model"),
    }
}

/// An error chunk of the chat stream (`{"error": {message, type, code}}`) as an `Error`.
fn stream_error(e: &Value) -> Error {
    let code = text(e, "code");
    let kind = match (text(e, "type").as_str(), code.as_str()) {
        (_, "context_length_exceeded") => ErrorKind::ContextLengthExceeded,
        (_, "rate_limit_exceeded") => ErrorKind::RateLimited,
        (_, "usage_limit_reached") => ErrorKind::UsageLimit,
        ("invalid_request_error", _) => ErrorKind::BadRequest,
        _ => ErrorKind::UpstreamServer,
    };
    let mut err = Error::new(kind, text(e, "message"));
    if !code.is_empty() {
        err = err.with_code(code);
    }
    err
}

/// A streamed chat answer: a `Stream` of `Result<ChatEvent, Error>`, ending after `Finish`
/// or the first error.
pub struct ChatStream {
    body: RespBody,
    parser: SseParser,
    reasoning_field: String,
    ready: VecDeque<Result<ChatEvent, Error>>,
    /// Tool calls begun, by index.
    calls: Vec<ToolCall>,
    finish: Option<String>,
    response_id: String,
    done: bool,
}

impl ChatStream {
    fn new(body: RespBody, reasoning_field: String) -> ChatStream {
        ChatStream {
            body,
            parser: SseParser::new(MAX_EVENT_BYTES),
            reasoning_field,
            ready: VecDeque::new(),
            calls: Vec::new(),
            finish: None,
            response_id: String::new(),
            done: false,
        }
    }

    /// Decode every complete event buffered in the parser.
    fn drain(&mut self) {
        loop {
            let data = match self.parser.next_event() {
                Ok(Some(ev)) => ev.data.to_vec(),
                Ok(None) => return,
                Err(e) => return self.fail(Error::internal(e.as_str())),
            };
            if data == b"[DONE]" {
                return self.end();
            }
            match serde_json::from_slice::<Value>(&data) {
                Ok(chunk) => self.chunk(&chunk),
                Err(e) => return self.fail(Error::internal(format!("bad stream chunk: {e}"))),
            }
            if self.done {
                return;
            }
        }
    }

    fn chunk(&mut self, chunk: &Value) {
        if let Some(e) = chunk.get("error") {
            return self.fail(stream_error(e));
        }
        if self.response_id.is_empty() {
            self.response_id = text(chunk, "id");
        }
        if let Some(choice) = chunk.pointer("/choices/0") {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(t) = delta.get(&self.reasoning_field).and_then(Value::as_str)
                && !t.is_empty()
            {
                self.push(ChatEvent::Reasoning { text: t.to_owned() });
            }
            if let Some(t) = delta.get("content").and_then(Value::as_str)
                && !t.is_empty()
            {
                self.push(ChatEvent::Text { text: t.to_owned() });
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                self.tool_delta(call);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                for (index, call) in std::mem::take(&mut self.calls).into_iter().enumerate() {
                    self.push(ChatEvent::ToolCallEnd { index, call });
                }
                self.finish = Some(reason.to_owned());
            }
        }
        if let Some(usage) = usage(chunk) {
            self.push(ChatEvent::Usage { usage });
        }
    }

    fn tool_delta(&mut self, delta: &Value) {
        let index = delta
            .get("index")
            .and_then(Value::as_u64)
            .map_or(self.calls.len(), |i| i as usize);
        let part = tool_call(delta);
        if index >= self.calls.len() {
            self.calls.resize_with(index + 1, ToolCall::default);
            self.push(ChatEvent::ToolCallStart {
                index,
                id: part.id.clone(),
                name: part.name.clone(),
            });
        }
        if !part.arguments.is_empty() {
            if let Some(call) = self.calls.get_mut(index) {
                if call.id.is_empty() {
                    call.id = part.id;
                    call.name = part.name;
                }
                call.arguments.push_str(&part.arguments);
            }
            self.push(ChatEvent::ToolCallDelta {
                index,
                arguments: part.arguments,
            });
        } else if let Some(call) = self.calls.get_mut(index)
            && call.id.is_empty()
        {
            call.id = part.id;
            call.name = part.name;
        }
    }

    fn push(&mut self, ev: ChatEvent) {
        self.ready.push_back(Ok(ev));
    }

    fn fail(&mut self, err: Error) {
        self.ready.push_back(Err(err));
        self.done = true;
    }

    /// The stream is over: `Finish`, or an error if the answer never finished.
    fn end(&mut self) {
        match self.finish.take() {
            Some(reason) => {
                let response_id = std::mem::take(&mut self.response_id);
                self.push(ChatEvent::Finish {
                    reason,
                    response_id,
                });
                self.done = true;
            }
            None => self.fail(
                Error::new(
                    ErrorKind::UpstreamServer,
                    "the answer ended before it was complete",
                )
                .with_code("upstream_stream_incomplete"),
            ),
        }
    }
}

impl futures_util::Stream for ChatStream {
    type Item = Result<ChatEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.ready.pop_front() {
                return Poll::Ready(Some(ev));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.parser.push(&data);
                        this.drain();
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    if let Ok(Some(ev)) = this.parser.finish()
                        && ev.data != b"[DONE]"
                    {
                        let data = ev.data.to_vec();
                        if let Ok(chunk) = serde_json::from_slice::<Value>(&data) {
                            this.chunk(&chunk);
                        }
                    }
                    if !this.done {
                        this.end();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream_of(chunks: &[Value]) -> ChatStream {
        let mut sse = String::new();
        for c in chunks {
            sse.push_str(&format!("data: {c}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        ChatStream::new(
            crate::server::respond::full(sse),
            "reasoning_content".to_owned(),
        )
    }

    async fn events(s: ChatStream) -> Vec<Result<ChatEvent, Error>> {
        use futures_util::StreamExt;
        s.collect().await
    }

    #[tokio::test]
    async fn tool_calls_are_started_streamed_and_ended_before_usage_and_finish() {
        let s = stream_of(&[
            json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think"}}]}),
            json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]}),
            json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\""}}]}}]}),
            json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}),
            json!({"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
        ]);
        let got: Vec<ChatEvent> = events(s).await.into_iter().map(|e| e.unwrap()).collect();
        let call = ToolCall {
            id: "call_a".into(),
            name: "f".into(),
            arguments: "{\"x\":1}".into(),
        };
        assert_eq!(
            got,
            vec![
                ChatEvent::Reasoning {
                    text: "think".into()
                },
                ChatEvent::ToolCallStart {
                    index: 0,
                    id: "call_a".into(),
                    name: "f".into()
                },
                ChatEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"x\"".into()
                },
                ChatEvent::ToolCallDelta {
                    index: 0,
                    arguments: ":1}".into()
                },
                ChatEvent::ToolCallEnd { index: 0, call },
                ChatEvent::Usage {
                    usage: Usage {
                        prompt_tokens: 3,
                        completion_tokens: 2,
                        total_tokens: 5,
                        ..Usage::default()
                    }
                },
                ChatEvent::Finish {
                    reason: "tool_calls".into(),
                    response_id: "chatcmpl-1".into()
                },
            ]
        );
    }

    #[tokio::test]
    async fn an_error_chunk_ends_the_stream_with_that_error() {
        let s = stream_of(&[
            json!({"id":"c","choices":[{"index":0,"delta":{"content":"par"}}]}),
            json!({"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}),
        ]);
        let got = events(s).await;
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].as_ref().unwrap(),
            &ChatEvent::Text { text: "par".into() }
        );
        let err = got[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ContextLengthExceeded);
        assert_eq!(err.message, "too long");
    }

    #[tokio::test]
    async fn a_stream_without_a_finish_is_an_error() {
        let s = stream_of(&[json!({"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]})]);
        let got = events(s).await;
        let err = got.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.code.as_deref(), Some("upstream_stream_incomplete"));
    }
}
