//! The Node.js addon of codex-as-api (napi-rs): the command line run in-process
//! ([`run_cli`]), the in-process client ([`Provider`], a chat through a cancellable
//! [`ChatCall`] or streaming through [`ChatEventStream`])
//! and the HTTP server ([`start_server`]). The JavaScript package (`index.js`) builds the
//! public API on these; this layer only converts values and errors.
//!
//! Owns: options → `Config`, `codex_as_api::Error` → a JavaScript error whose message is
//! `codex-as-api-error:` + a JSON object (`kind`, `status`, `type`, `code`, `message`,
//! `retry_after`; the JavaScript layer turns it into a `ChatGPTOAuthError`), a pull-based
//! stream with an explicit close and a chat call with a cancel (dropping the native stream
//! or the call cancels the request upstream).
//!
//! Does not own: anything the Rust crate's public API does not offer.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use codex_as_api::error::Protocol;
use codex_as_api::{ChatEvent, ChatStream, Config, Server};
use futures_util::StreamExt;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell, watch};

/// Prefix of the message of every error raised from a `codex_as_api::Error`.
const ERROR_MARKER: &str = "codex-as-api-error:";

/// `UsageLimit` → `usage_limit`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn js_error(e: &codex_as_api::Error) -> napi::Error {
    let payload = json!({
        "kind": snake_case(&format!("{:?}", e.kind())),
        "status": e.status(Protocol::OpenAi),
        "type": e.openai_type(),
        "code": e.code,
        "param": e.param,
        "message": e.message,
        "retry_after": e.retry_after().map(|d| d.as_secs()),
    });
    napi::Error::new(Status::GenericFailure, format!("{ERROR_MARKER}{payload}"))
}

fn invalid(message: impl Into<String>) -> napi::Error {
    js_error(&codex_as_api::Error::bad_request(message))
}

fn to_js<T: serde::Serialize>(value: &T) -> napi::Result<Value> {
    serde_json::to_value(value).map_err(|e| js_error(&codex_as_api::Error::internal(e.to_string())))
}

/// Settings of a provider or a server. An option left out falls back to its environment
/// variable (as for `codex-as-api serve`), then to `config.toml` in the Codex home, then to
/// the default.
#[napi(object)]
#[derive(Clone, Default)]
pub struct Options {
    /// Default backend model (`CODEX_AS_API_MODEL`).
    pub model: Option<String>,
    /// The ChatGPT credentials file (`CODEX_AS_API_AUTH_PATH`; default `$CODEX_HOME/auth.json`).
    pub auth_json_path: Option<String>,
    /// The Codex backend root (`CODEX_AS_API_UPSTREAM_URL`).
    pub base_url: Option<String>,
    /// The OAuth token endpoint (`CODEX_AS_API_TOKEN_URL`).
    pub token_url: Option<String>,
    /// The Codex home (`CODEX_HOME`; default `~/.codex`).
    pub codex_home: Option<String>,
    /// Seconds without a byte from the backend before a request fails (default 300).
    pub timeout: Option<f64>,
    /// Answer from the built-in Codex backend emulator (no ChatGPT login needed).
    pub demo: Option<bool>,
    /// Server only: the address to bind (default 127.0.0.1).
    pub host: Option<String>,
    /// Server only: the port (default 0: any free port).
    pub port: Option<u32>,
    /// The key clients must present (`CODEX_AS_API_API_KEY`).
    pub api_key: Option<String>,
}

fn or_env(value: &Option<String>, var: &str) -> Option<String> {
    value
        .clone()
        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

fn config(o: &Options, server: bool) -> napi::Result<Config> {
    let mut b = Config::builder();
    if let Some(v) = or_env(&o.model, "CODEX_AS_API_MODEL") {
        b = b.model(v);
    }
    if let Some(v) = or_env(&o.auth_json_path, "CODEX_AS_API_AUTH_PATH") {
        b = b.auth_path(v);
    }
    if let Some(v) = or_env(&o.codex_home, "CODEX_HOME") {
        b = b.codex_home(v);
    }
    if let Some(v) = or_env(&o.base_url, "CODEX_AS_API_UPSTREAM_URL") {
        b = b.upstream_url(v);
    }
    if let Some(v) = or_env(&o.token_url, "CODEX_AS_API_TOKEN_URL") {
        b = b.token_url(v);
    }
    if let Some(v) = or_env(&o.api_key, "CODEX_AS_API_API_KEY") {
        b = b.api_key(v);
    }
    if let Some(t) = o.timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(invalid("`timeout` must be a positive number of seconds"));
        }
        b = b.stream_idle_timeout_secs(t.ceil() as u64);
    }
    b = b.demo(o.demo.unwrap_or(false));
    if server {
        let host = match &o.host {
            Some(h) => h
                .parse::<IpAddr>()
                .map_err(|_| invalid(format!("`host` is not an IP address: {h:?}")))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let port = u16::try_from(o.port.unwrap_or(0))
            .map_err(|_| invalid("`port` must be between 0 and 65535"))?;
        b = b.host(host).port(port);
    }
    b.build().map_err(|e| js_error(&e))
}

/// The exit status of an `ExitCode` (which does not expose it).
fn exit_status(code: ExitCode) -> i32 {
    (0..=u8::MAX)
        .find(|c| ExitCode::from(*c) == code)
        .map_or(1, i32::from)
}

/// Give SIGINT and SIGTERM back their default action before Tokio takes them over.
///
/// Node installs its own handler for both (it restores the terminal, then re-raises the
/// signal, relying on a one-shot registration to die of it). Tokio's handler chains to the
/// handler it replaced, so it would call Node's, whose re-raise comes straight back to
/// Tokio's: the signal would bounce forever. With the defaults in place Tokio's handler is
/// the only one, as in the `codex-as-api` binary.
#[cfg(unix)]
fn default_signal_actions() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `signal` with `SIG_DFL` installs no code, only the default action of a
        // standard signal; nothing else in the process depends on Node's handler.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// Run the command line (`argv[0]` is the program name) to its end and return its exit
/// status. It runs on a thread of its own with its own runtime; Ctrl-C and SIGTERM end
/// `serve` gracefully (the process's handlers for them are replaced: this is for a
/// launcher, not for a library inside an application). Blocks the caller.
#[napi]
pub fn run_cli(argv: Vec<String>) -> napi::Result<i32> {
    #[cfg(unix)]
    default_signal_actions();
    let cli = std::thread::Builder::new()
        .name("codex-as-api".to_owned())
        .spawn(move || codex_as_api::cli::app::run(argv))
        .map_err(|e| napi::Error::from_reason(format!("cannot start the CLI thread: {e}")))?;
    cli.join()
        .map(exit_status)
        .map_err(|_| napi::Error::from_reason("the command line panicked"))
}

/// The crate version the addon was built from.
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The in-process client: every endpoint as an async method, no socket in between. The
/// core provider starts on the first call (with `demo`, so does the emulator).
#[napi]
pub struct Provider {
    config: Config,
    inner: Arc<OnceCell<codex_as_api::Provider>>,
}

#[napi]
impl Provider {
    /// Settings are checked here; credentials are read on the first call.
    #[napi(constructor)]
    pub fn new(options: Option<Options>) -> napi::Result<Provider> {
        Ok(Provider {
            config: config(&options.unwrap_or_default(), false)?,
            inner: Arc::new(OnceCell::new()),
        })
    }

    async fn core(&self) -> napi::Result<&codex_as_api::Provider> {
        core(&self.inner, &self.config).await
    }

    /// The default model.
    #[napi(getter)]
    pub fn model(&self) -> String {
        self.config.model.clone()
    }

    /// A Chat Completions request, as a call whose `result` is `{content, finish_reason,
    /// tool_calls, usage, reasoning_content, response_id, model}`. Nothing is sent before
    /// [`ChatCall::result`]; [`ChatCall::cancel`] drops the call, which cancels the request
    /// upstream and frees its place among the account's open streams.
    #[napi]
    pub fn chat(&self, request: Value) -> ChatCall {
        ChatCall {
            config: self.config.clone(),
            inner: Arc::clone(&self.inner),
            request: Mutex::new(Some(request)),
            cancelled: watch::channel(false).0,
        }
    }

    /// A Chat Completions request → a stream of events (`text`, `reasoning`,
    /// `tool_call_start`, `tool_call_delta`, `tool_call_end`, `usage`, `finish`). Errors
    /// before the first event reject here.
    #[napi]
    pub async fn chat_stream(&self, request: Value) -> napi::Result<ChatEventStream> {
        let stream = self
            .core()
            .await?
            .chat_stream(request)
            .await
            .map_err(|e| js_error(&e))?;
        Ok(ChatEventStream {
            stream: Arc::new(Mutex::new(Some(stream))),
            closed: watch::channel(false).0,
        })
    }

    /// A Responses API request (non-streaming) → the response object.
    #[napi]
    pub async fn responses(&self, request: Value) -> napi::Result<Value> {
        self.core()
            .await?
            .responses(request)
            .await
            .map_err(|e| js_error(&e))
    }

    /// An Anthropic Messages request (non-streaming) → the message object.
    #[napi]
    pub async fn messages(&self, request: Value) -> napi::Result<Value> {
        self.core()
            .await?
            .messages(request)
            .await
            .map_err(|e| js_error(&e))
    }

    /// An image generation request (`prompt`, `size`, …) → `{created, data: [{b64_json}]}`.
    #[napi]
    pub async fn images(&self, request: Value) -> napi::Result<Value> {
        self.core()
            .await?
            .images(request)
            .await
            .map_err(|e| js_error(&e))
    }

    /// Describe images (`images`, `prompt`) → the answer.
    #[napi]
    pub async fn inspect(&self, request: Value) -> napi::Result<Value> {
        self.core()
            .await?
            .inspect(request)
            .await
            .map_err(|e| js_error(&e))
    }

    /// Compact a conversation (`messages`, or Responses `input`) → the compacted items.
    #[napi]
    pub async fn compact(&self, request: Value) -> napi::Result<Value> {
        self.core()
            .await?
            .compact(request)
            .await
            .map_err(|e| js_error(&e))
    }

    /// The model catalog.
    #[napi]
    pub async fn models(&self) -> napi::Result<Value> {
        self.core().await?.models().await.map_err(|e| js_error(&e))
    }

    /// The accounts' rate-limit windows, plan and credits.
    #[napi]
    pub async fn usage(&self) -> napi::Result<Value> {
        self.core().await?.usage().await.map_err(|e| js_error(&e))
    }
}

/// The provider's core, started on the first call of the provider or of one of its calls.
async fn core<'a>(
    inner: &'a OnceCell<codex_as_api::Provider>,
    config: &Config,
) -> napi::Result<&'a codex_as_api::Provider> {
    inner
        .get_or_try_init(|| codex_as_api::Provider::new(config.clone()))
        .await
        .map_err(|e| js_error(&e))
}

/// One non-streaming chat call (see [`Provider::chat`]).
#[napi]
pub struct ChatCall {
    config: Config,
    inner: Arc<OnceCell<codex_as_api::Provider>>,
    request: Mutex<Option<Value>>,
    cancelled: watch::Sender<bool>,
}

#[napi]
impl ChatCall {
    /// Sends the request and resolves to the answer; rejects at once when the call is
    /// cancelled (before or during it). Only once per call.
    #[napi]
    pub async fn result(&self) -> napi::Result<Value> {
        let mut cancelled = self.cancelled.subscribe();
        let request = self
            .request
            .lock()
            .await
            .take()
            .ok_or_else(|| invalid("this call was already made"))?;
        let work = async {
            let answer = core(&self.inner, &self.config).await?.chat(request).await;
            to_js(&answer.map_err(|e| js_error(&e))?)
        };
        // Dropping `work` drops the request: the proxy cancels it upstream.
        tokio::select! {
            answer = work => answer,
            _ = cancelled.wait_for(|c| *c) => Err(napi::Error::from_reason("the call was cancelled")),
        }
    }

    /// Cancels the call: a pending `result` rejects now, a later one at once.
    #[napi]
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }
}

/// A streamed chat answer, pulled one event at a time. `close` (or the object being
/// collected) drops the native stream, which cancels the request upstream.
#[napi]
pub struct ChatEventStream {
    stream: Arc<Mutex<Option<ChatStream>>>,
    closed: watch::Sender<bool>,
}

#[napi]
impl ChatEventStream {
    /// The next event, or `null` once the stream has ended or was closed. An error ends
    /// the stream.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<Value>> {
        let mut closed = self.closed.subscribe();
        let mut slot = self.stream.lock().await;
        if *closed.borrow_and_update() {
            *slot = None;
        }
        let Some(stream) = slot.as_mut() else {
            return Ok(None);
        };
        let item = tokio::select! {
            item = stream.next() => item,
            _ = closed.changed() => None,
        };
        match item {
            Some(Ok(event)) => {
                if matches!(event, ChatEvent::Finish { .. }) {
                    *slot = None;
                }
                to_js(&event).map(Some)
            }
            Some(Err(e)) => {
                *slot = None;
                Err(js_error(&e))
            }
            None => {
                *slot = None;
                Ok(None)
            }
        }
    }

    /// End the stream now (a pending `next` resolves to `null`); resolves once the
    /// request upstream is cancelled.
    #[napi]
    pub async fn close(&self) {
        self.closed.send_replace(true);
        self.stream.lock().await.take();
    }
}

/// A running server (see [`start_server`]).
#[napi]
pub struct NativeServer {
    server: Mutex<Option<Server>>,
    host: String,
    port: u16,
}

#[napi]
impl NativeServer {
    /// The bound address.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The bound port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.port)
    }

    /// Stop accepting, let in-flight requests finish within the drain time, then resolve.
    #[napi]
    pub async fn close(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.shutdown().await;
        }
    }
}

/// Serve every endpoint on `host:port` (default 127.0.0.1 and a free port), in this
/// process, until `close()`.
#[napi]
pub async fn start_server(options: Option<Options>) -> napi::Result<NativeServer> {
    let config = config(&options.unwrap_or_default(), true)?;
    let server = Server::bind(config).await.map_err(|e| js_error(&e))?;
    let addr = server.addr();
    Ok(NativeServer {
        server: Mutex::new(Some(server)),
        host: addr.ip().to_string(),
        port: addr.port(),
    })
}
