//! Settings: a flag overrides its env var, which overrides `$CODEX_HOME/config.toml`, which
//! overrides the default.
//!
//! Owns: every tunable and limit of the server, the `serve` flags (`ServeArgs`, with their env
//! var names), and reading the Codex CLI's `config.toml` (root keys `model`,
//! `model_context_window`, `model_auto_compact_token_limit`, plus our own optional
//! `[codex_as_api]` table whose keys are the flag names with `_`), and the fallbacks for the
//! context window and auto-compaction limit derived from those keys.
//!
//! Every numeric setting (flag, env var or config.toml key) is a `Knob` with a range checked
//! here, at start, with an error naming the flag: no value can reach the server that would
//! make it panic, spin (a zero keep-alive) or overflow `Instant` arithmetic (durations are
//! at most a day).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

pub use crate::accounts::AccountSpec;
pub use crate::admission::Limits;

/// The official client version we present upstream (`version` header, `client_version`).
pub const CODEX_CLIENT_VERSION: &str = "0.169.0";

/// How streaming requests reach the backend (`--upstream-transport`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// The WebSocket; SSE for the rest of the process once the backend refuses the
    /// upgrade (426, or no such endpoint), and for one request when the handshake fails
    /// before the request was sent.
    #[default]
    Auto,
    /// Only the WebSocket.
    #[value(name = "websocket")]
    WebSocket,
    /// Only HTTP POST with an SSE answer.
    Sse,
}

/// Flags of `serve` (also accepted at the top level). Every flag names its env var.
#[derive(Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Bind address.
    #[arg(long, env = "CODEX_AS_API_HOST")]
    pub host: Option<IpAddr>,
    /// Listen port.
    #[arg(long, env = "CODEX_AS_API_PORT")]
    pub port: Option<u16>,
    /// Backend model used when the client names a model the backend does not know.
    #[arg(long, env = "CODEX_AS_API_MODEL")]
    pub model: Option<String>,
    /// Backend model for small/fast client models (Claude `haiku`).
    #[arg(long, env = "CODEX_AS_API_SMALL_MODEL")]
    pub small_model: Option<String>,
    /// Credentials file (default $CODEX_HOME/auth.json).
    #[arg(long, env = "CODEX_AS_API_AUTH_PATH")]
    pub auth_path: Option<PathBuf>,
    /// Codex home (auth.json, config.toml); default ~/.codex.
    #[arg(long, env = "CODEX_HOME")]
    pub codex_home: Option<PathBuf>,
    /// Backend root: {root}/codex/responses, {root}/codex/models, {root}/wham/usage, ….
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    /// OAuth token endpoint.
    #[arg(long, env = "CODEX_AS_API_TOKEN_URL")]
    pub token_url: Option<String>,
    /// Extra PEM roots trusted for upstream TLS.
    #[arg(long, env = "CODEX_AS_API_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Proxy for every upstream connection (http://, https://, socks5://, socks5h://);
    /// default: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY with NO_PROXY.
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_PROXY", hide_env_values = true)]
    pub upstream_proxy: Option<String>,
    /// How streaming requests reach the backend: `auto` (a WebSocket, falling back to
    /// SSE when the backend refuses it), `websocket` or `sse`.
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_TRANSPORT", value_enum)]
    pub upstream_transport: Option<Transport>,
    /// Key clients must present (Authorization: Bearer or x-api-key).
    #[arg(long, env = "CODEX_AS_API_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow a non-loopback bind without an API key (dangerous).
    #[arg(long, env = "CODEX_AS_API_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve on the built-in Codex backend emulator (no ChatGPT login needed).
    #[arg(long, env = "CODEX_AS_API_DEMO")]
    pub demo: bool,
    /// Send request bodies uncompressed instead of zstd.
    #[arg(long, env = "CODEX_AS_API_NO_COMPRESSION")]
    pub no_compression: bool,
    /// Seconds between keep-alive pings while the upstream is silent.
    #[arg(long, env = "CODEX_AS_API_KEEPALIVE_SECS")]
    pub keepalive_secs: Option<u64>,
    /// Seconds without an upstream byte before a stream is failed.
    #[arg(long, env = "CODEX_AS_API_STREAM_IDLE_TIMEOUT_SECS")]
    pub stream_idle_timeout_secs: Option<u64>,
    /// Milliseconds the response head is held to turn early upstream failures into statuses.
    #[arg(long, env = "CODEX_AS_API_HEAD_HOLD_MS")]
    pub head_hold_ms: Option<u64>,
    /// Maximum request body in bytes.
    #[arg(long, env = "CODEX_AS_API_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Maximum JSON nesting depth of a request.
    #[arg(long, env = "CODEX_AS_API_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<usize>,
    /// Maximum concurrent upstream streams (more get 503/529).
    #[arg(long, env = "CODEX_AS_API_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<usize>,
    /// Attempts after the first for retryable upstream failures before the first byte.
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_RETRIES")]
    pub upstream_retries: Option<u32>,
    /// Field name for reasoning text in Chat Completions (`reasoning_content` or `reasoning`).
    #[arg(long, env = "CODEX_AS_API_REASONING_FIELD")]
    pub reasoning_field: Option<String>,
    /// Seconds to let in-flight streams finish on shutdown.
    #[arg(long, env = "CODEX_AS_API_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Seconds a client may take to send its request headers.
    #[arg(long, env = "CODEX_AS_API_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Most h2 connections to an https upstream (more open when every one is full).
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_MAX_CONNECTIONS")]
    pub upstream_max_connections: Option<usize>,
    /// Close surplus upstream h2 connections idle this long.
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_IDLE_SECS")]
    pub upstream_idle_secs: Option<u64>,
    /// Browser origins allowed by CORS (repeat the flag or separate with commas; `*` allows
    /// any). Without it no CORS headers are sent and browsers cannot call the API.
    #[arg(
        long = "cors-allow-origin",
        env = "CODEX_AS_API_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,
    /// Exchanges kept in memory for `previous_response_id` (oldest evicted first).
    #[arg(long, env = "CODEX_AS_API_HISTORY_MAX_ENTRIES")]
    pub history_max_entries: Option<usize>,
    /// Bytes those kept exchanges may hold in all (oldest evicted first).
    #[arg(long, env = "CODEX_AS_API_HISTORY_MAX_BYTES")]
    pub history_max_bytes: Option<usize>,
    /// ChatGPT logins to spread work over: auth.json paths, comma-separated (default: the
    /// one auth path).
    #[arg(long, env = "CODEX_AS_API_ACCOUNTS", value_delimiter = ',')]
    pub accounts: Vec<PathBuf>,
    /// Upstream streams each account starts with (its window adapts to the backend).
    #[arg(long, env = "CODEX_AS_API_ACCOUNT_MAX_STREAMS")]
    pub account_max_streams: Option<usize>,
    /// The most an account's window grows to.
    #[arg(long, env = "CODEX_AS_API_ACCOUNT_MAX_STREAMS_CEILING")]
    pub account_max_streams_ceiling: Option<usize>,
    /// Seconds of demand over a full window, without a refusal, before it grows by one.
    #[arg(long, env = "CODEX_AS_API_ACCOUNT_WINDOW_GROW_SECS")]
    pub account_window_grow_secs: Option<u64>,
    /// Seconds a request may wait for an account's window before a 429.
    #[arg(long, env = "CODEX_AS_API_QUEUE_TIMEOUT_SECS")]
    pub queue_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's head and body (408 after it; a large body
    /// gets more time at the minimum rate).
    #[arg(long, env = "CODEX_AS_API_REQUEST_READ_TIMEOUT_SECS")]
    pub request_read_timeout_secs: Option<u64>,
    /// Seconds a client may stop reading a response before it is dropped.
    #[arg(long, env = "CODEX_AS_API_WRITE_STALL_SECS")]
    pub write_stall_secs: Option<u64>,
    /// Client connections held at once; more get 503 and are closed.
    #[arg(long, env = "CODEX_AS_API_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

/// Resolved settings.
#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub model: String,
    pub small_model: String,
    pub codex_home: PathBuf,
    pub config_path: PathBuf,
    pub auth_path: PathBuf,
    pub upstream_url: String,
    pub token_url: String,
    pub ca_file: Option<PathBuf>,
    /// `--upstream-proxy`; `None`: the environment's proxies (`upstream::proxy`).
    pub upstream_proxy: Option<String>,
    /// `--upstream-transport` (default `auto`).
    pub upstream_transport: Transport,
    pub api_key: Option<String>,
    pub insecure_no_auth: bool,
    pub demo: bool,
    pub compress: bool,
    pub keepalive: Duration,
    pub stream_idle_timeout: Duration,
    pub head_hold: Duration,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub max_concurrent_streams: usize,
    pub upstream_retries: u32,
    pub reasoning_field: String,
    pub drain: Duration,
    pub header_timeout: Duration,
    /// Most h2 connections to an https upstream.
    pub upstream_max_connections: usize,
    /// Surplus idle upstream h2 connections close after this.
    pub upstream_idle: Duration,
    /// CORS allow-list (exact origins, or `*`); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// `model_context_window` from config.toml.
    pub context_window: Option<u64>,
    /// `model_auto_compact_token_limit` from config.toml.
    pub auto_compact_token_limit: Option<u64>,
    pub client_version: String,
    /// Cap on exchanges kept for `previous_response_id` (`history_max_entries`).
    pub history_max_entries: usize,
    /// Cap on the bytes those exchanges hold (`history_max_bytes`).
    pub history_max_bytes: usize,
    /// The accounts of `--accounts`; empty: `auth_path` alone (see `account_specs`).
    pub accounts: Vec<AccountSpec>,
    /// Each account's starting window and its growth.
    pub account_limits: Limits,
    /// How long a request may wait for a window (`queue_timeout_secs`).
    pub queue_timeout: Duration,
    /// How long a client has to send a request's head and body (`request_read_timeout_secs`).
    pub request_read_timeout: Duration,
    /// How long a client may stop reading a response (`write_stall_secs`).
    pub write_stall: Duration,
    /// Client connections held at once (`max_connections`).
    pub max_connections: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("model", &self.model)
            .field("auth_path", &self.auth_path)
            .field("upstream_url", &self.upstream_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "upstream_proxy",
                &self.upstream_proxy.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The user's home: `HOME` when set, else the platform's (the profile folder on Windows).
pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(std::env::home_dir)
}

/// Read `config.toml`; a missing file is empty, a malformed one is an error.
fn read_toml(path: &Path) -> Result<toml::Table, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .parse::<toml::Table>()
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

struct Toml {
    root: toml::Table,
}

impl Toml {
    fn ours(&self, key: &str) -> Option<&toml::Value> {
        self.root
            .get("codex_as_api")
            .and_then(|t| t.as_table())
            .and_then(|t| t.get(key))
    }
    fn str(&self, key: &str) -> Option<String> {
        self.ours(key).and_then(|v| v.as_str()).map(str::to_owned)
    }
    fn bool(&self, key: &str) -> bool {
        self.ours(key).and_then(|v| v.as_bool()).unwrap_or(false)
    }
}

/// A whole number that is not negative, else an error naming where it is (`what`).
fn uint(value: Option<&toml::Value>, what: &str) -> Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(v) => v
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| {
                format!("config.toml: {what} must be a non-negative whole number, not {v}")
            }),
    }
}

/// Where a numeric setting's value came from (for the error that names it).
#[derive(Clone, Copy)]
enum Source {
    /// The flag or its env var (clap does not say which).
    Flag,
    /// `[codex_as_api]` in config.toml.
    Ours,
    /// The root of config.toml (the Codex CLI's own keys).
    Root,
}

/// One numeric setting: its key (the flag name with `_`; the config.toml key), default and
/// accepted range. Every numeric setting is one of these, so none goes unchecked.
struct Knob {
    key: &'static str,
    default: u64,
    min: u64,
    max: u64,
}

/// The longest duration any setting may take: a day. Larger values buy nothing and would
/// bring `Instant` arithmetic closer to overflow.
pub const MAX_SECS: u64 = 86_400;

impl Knob {
    const fn new(key: &'static str, default: u64, min: u64, max: u64) -> Knob {
        Knob {
            key,
            default,
            min,
            max,
        }
    }

    /// The flag/env value, else config.toml's, else the default; outside the range an
    /// error naming the flag (and the env var or config.toml key it may have come from).
    fn resolve(&self, flag: Option<u64>, t: &Toml) -> Result<u64, String> {
        let (value, source) = match flag {
            Some(v) => (v, Source::Flag),
            None => match uint(
                t.ours(self.key),
                &format!(
                    "[codex_as_api] {} (--{})",
                    self.key,
                    self.key.replace('_', "-")
                ),
            )? {
                Some(v) => (v, Source::Ours),
                None => return Ok(self.default),
            },
        };
        self.check(value, source)
    }

    fn check(&self, v: u64, source: Source) -> Result<u64, String> {
        if (self.min..=self.max).contains(&v) {
            return Ok(v);
        }
        let flag = self.key.replace('_', "-");
        let from = match source {
            Source::Flag => format!(
                "--{flag} (env CODEX_AS_API_{})",
                self.key.to_ascii_uppercase()
            ),
            Source::Ours => format!("config.toml [codex_as_api] {} (--{flag})", self.key),
            Source::Root => format!("config.toml {}", self.key),
        };
        Err(format!(
            "{from} must be between {} and {}, not {v}",
            self.min, self.max
        ))
    }
}

/// Every numeric setting with its default and range.
mod knobs {
    use super::{Knob, MAX_SECS};

    pub const PORT: Knob = Knob::new("port", 18080, 0, 65_535);
    pub const KEEPALIVE_SECS: Knob = Knob::new("keepalive_secs", 10, 1, MAX_SECS);
    pub const STREAM_IDLE_TIMEOUT_SECS: Knob =
        Knob::new("stream_idle_timeout_secs", 300, 1, MAX_SECS);
    pub const HEAD_HOLD_MS: Knob = Knob::new("head_hold_ms", 10_000, 0, MAX_SECS * 1000);
    pub const MAX_BODY_BYTES: Knob = Knob::new("max_body_bytes", 32 << 20, 1, 1 << 30);
    pub const MAX_JSON_DEPTH: Knob = Knob::new("max_json_depth", 128, 1, 1024);
    pub const MAX_CONCURRENT_STREAMS: Knob =
        Knob::new("max_concurrent_streams", 4096, 1, 1_000_000);
    pub const UPSTREAM_RETRIES: Knob = Knob::new("upstream_retries", 2, 0, 100);
    pub const DRAIN_SECS: Knob = Knob::new("drain_secs", 30, 0, MAX_SECS);
    pub const HEADER_TIMEOUT_SECS: Knob = Knob::new("header_timeout_secs", 30, 1, MAX_SECS);
    pub const UPSTREAM_MAX_CONNECTIONS: Knob = Knob::new("upstream_max_connections", 32, 1, 4096);
    pub const UPSTREAM_IDLE_SECS: Knob = Knob::new("upstream_idle_secs", 90, 1, MAX_SECS);
    pub const REQUEST_READ_TIMEOUT_SECS: Knob =
        Knob::new("request_read_timeout_secs", 60, 1, MAX_SECS);
    pub const WRITE_STALL_SECS: Knob = Knob::new("write_stall_secs", 120, 1, MAX_SECS);
    pub const MAX_CONNECTIONS: Knob = Knob::new("max_connections", 8192, 1, 1_000_000);
    pub const HISTORY_MAX_ENTRIES: Knob = Knob::new("history_max_entries", 1024, 0, 1_000_000);
    pub const HISTORY_MAX_BYTES: Knob = Knob::new("history_max_bytes", 64 << 20, 0, 1 << 36);
    pub const ACCOUNT_MAX_STREAMS: Knob = Knob::new("account_max_streams", 3, 1, 1_000_000);
    pub const ACCOUNT_MAX_STREAMS_CEILING: Knob =
        Knob::new("account_max_streams_ceiling", 8, 1, 1_000_000);
    pub const ACCOUNT_WINDOW_GROW_SECS: Knob =
        Knob::new("account_window_grow_secs", 30, 0, MAX_SECS);
    pub const QUEUE_TIMEOUT_SECS: Knob = Knob::new("queue_timeout_secs", 300, 1, MAX_SECS);
    /// Root keys of the Codex CLI (no default: the catalog's window applies).
    pub const MODEL_CONTEXT_WINDOW: Knob = Knob::new("model_context_window", 0, 1, u32::MAX as u64);
    pub const MODEL_AUTO_COMPACT_TOKEN_LIMIT: Knob =
        Knob::new("model_auto_compact_token_limit", 0, 1, u32::MAX as u64);
}

/// A `usize` setting (its range fits any 32-bit `usize`).
fn size(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Toml {
    /// A root key of the Codex CLI, checked like ours.
    fn root_num(&self, knob: &Knob) -> Result<Option<u64>, String> {
        match uint(self.root.get(knob.key), knob.key)? {
            Some(v) => knob.check(v, Source::Root).map(Some),
            None => Ok(None),
        }
    }
}

impl Config {
    /// Resolve settings from flags/env (`args`) over config.toml over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let codex_home = args.codex_home.clone().unwrap_or_else(|| {
            home_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".codex")
        });
        let config_path = codex_home.join("config.toml");
        let t = Toml {
            root: read_toml(&config_path)?,
        };
        let host = match args.host {
            Some(h) => h,
            None => match t.str("host") {
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("config.toml: invalid host {s:?}"))?,
                None => IpAddr::from([127, 0, 0, 1]),
            },
        };
        let port = knobs::PORT.resolve(args.port.map(u64::from), &t)? as u16;
        let model = args
            .model
            .clone()
            .or_else(|| {
                t.root
                    .get("model")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "gpt-5.5".to_owned());
        let small_model = args
            .small_model
            .clone()
            .or_else(|| t.str("small_model"))
            .unwrap_or_else(|| model.clone());
        let auth_path = args
            .auth_path
            .clone()
            .or_else(|| t.str("auth_path").map(PathBuf::from))
            .unwrap_or_else(|| codex_home.join("auth.json"));
        let reasoning_field = args
            .reasoning_field
            .clone()
            .or_else(|| t.str("reasoning_field"))
            .unwrap_or_else(|| "reasoning_content".to_owned());
        if reasoning_field != "reasoning_content" && reasoning_field != "reasoning" {
            return Err(format!(
                "reasoning field must be `reasoning_content` or `reasoning`, not {reasoning_field:?}"
            ));
        }
        let accounts = accounts(&args.accounts, &t)?;
        let num = |knob: &Knob, flag: Option<u64>| knob.resolve(flag, &t);
        let usize_flag = |v: Option<usize>| v.map(|v| v as u64);
        let secs = |knob: &Knob, flag: Option<u64>| num(knob, flag).map(Duration::from_secs);
        let start = num(
            &knobs::ACCOUNT_MAX_STREAMS,
            usize_flag(args.account_max_streams),
        )?;
        let ceiling_knob = Knob {
            default: knobs::ACCOUNT_MAX_STREAMS_CEILING.default.max(start),
            ..knobs::ACCOUNT_MAX_STREAMS_CEILING
        };
        let ceiling = num(&ceiling_knob, usize_flag(args.account_max_streams_ceiling))?;
        if ceiling < start {
            return Err(format!(
                "--account-max-streams-ceiling ({ceiling}) is below --account-max-streams ({start})"
            ));
        }
        Ok(Config {
            request_read_timeout: secs(
                &knobs::REQUEST_READ_TIMEOUT_SECS,
                args.request_read_timeout_secs,
            )?,
            write_stall: secs(&knobs::WRITE_STALL_SECS, args.write_stall_secs)?,
            max_connections: size(num(
                &knobs::MAX_CONNECTIONS,
                usize_flag(args.max_connections),
            )?),
            accounts,
            account_limits: Limits {
                start: size(start),
                ceiling: size(ceiling),
                grow_after: secs(
                    &knobs::ACCOUNT_WINDOW_GROW_SECS,
                    args.account_window_grow_secs,
                )?,
            },
            queue_timeout: secs(&knobs::QUEUE_TIMEOUT_SECS, args.queue_timeout_secs)?,
            host,
            port,
            small_model,
            model,
            config_path,
            auth_path,
            upstream_url: args
                .upstream_url
                .clone()
                .or_else(|| t.str("upstream_url"))
                .unwrap_or_else(|| "https://chatgpt.com/backend-api".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            token_url: args
                .token_url
                .clone()
                .or_else(|| t.str("token_url"))
                .unwrap_or_else(|| "https://auth.openai.com/oauth/token".to_owned()),
            upstream_proxy: args
                .upstream_proxy
                .clone()
                .or_else(|| t.str("upstream_proxy"))
                .filter(|p| !p.is_empty()),
            upstream_transport: match args.upstream_transport {
                Some(t) => t,
                None => match t.str("upstream_transport") {
                    None => Transport::Auto,
                    Some(v) => <Transport as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
                        format!(
                            "upstream_transport in config.toml: '{v}' is not one of auto, websocket, sse"
                        )
                    })?,
                },
            },
            ca_file: args
                .ca_file
                .clone()
                .or_else(|| t.str("ca_file").map(PathBuf::from)),
            api_key: args
                .api_key
                .clone()
                .or_else(|| t.str("api_key"))
                .filter(|k| !k.is_empty()),
            insecure_no_auth: args.insecure_no_auth || t.bool("insecure_no_auth"),
            demo: args.demo || t.bool("demo"),
            compress: !(args.no_compression || t.bool("no_compression")),
            keepalive: secs(&knobs::KEEPALIVE_SECS, args.keepalive_secs)?,
            stream_idle_timeout: secs(
                &knobs::STREAM_IDLE_TIMEOUT_SECS,
                args.stream_idle_timeout_secs,
            )?,
            head_hold: Duration::from_millis(num(&knobs::HEAD_HOLD_MS, args.head_hold_ms)?),
            max_body_bytes: size(num(
                &knobs::MAX_BODY_BYTES,
                usize_flag(args.max_body_bytes),
            )?),
            max_json_depth: size(num(
                &knobs::MAX_JSON_DEPTH,
                usize_flag(args.max_json_depth),
            )?),
            max_concurrent_streams: size(num(
                &knobs::MAX_CONCURRENT_STREAMS,
                usize_flag(args.max_concurrent_streams),
            )?),
            upstream_retries: num(
                &knobs::UPSTREAM_RETRIES,
                args.upstream_retries.map(u64::from),
            )? as u32,
            reasoning_field,
            drain: secs(&knobs::DRAIN_SECS, args.drain_secs)?,
            header_timeout: secs(&knobs::HEADER_TIMEOUT_SECS, args.header_timeout_secs)?,
            upstream_max_connections: num(
                &knobs::UPSTREAM_MAX_CONNECTIONS,
                usize_flag(args.upstream_max_connections),
            )? as usize,
            upstream_idle: secs(&knobs::UPSTREAM_IDLE_SECS, args.upstream_idle_secs)?,
            cors_origins: cors_origins(&args.cors_allow_origin, &t),
            context_window: t.root_num(&knobs::MODEL_CONTEXT_WINDOW)?,
            auto_compact_token_limit: t.root_num(&knobs::MODEL_AUTO_COMPACT_TOKEN_LIMIT)?,
            codex_home,
            client_version: CODEX_CLIENT_VERSION.to_owned(),
            history_max_entries: size(num(
                &knobs::HISTORY_MAX_ENTRIES,
                usize_flag(args.history_max_entries),
            )?),
            history_max_bytes: size(num(
                &knobs::HISTORY_MAX_BYTES,
                usize_flag(args.history_max_bytes),
            )?),
        })
    }

    /// A model's context window: `model_context_window` if set, else what the catalog says
    /// (`catalog_window`, only asked then), else 272k.
    pub fn context_window_or(&self, catalog_window: impl FnOnce() -> Option<u64>) -> u64 {
        self.context_window
            .or_else(catalog_window)
            .unwrap_or(272_000)
    }

    /// The token count at which clients should compact: `model_auto_compact_token_limit` if
    /// set, else 90% of `window`.
    pub fn auto_compact_limit(&self, window: u64) -> u64 {
        self.auto_compact_token_limit
            .unwrap_or((u128::from(window) * 9 / 10) as u64)
    }

    /// Defaults only (tests, benches): nothing read from the environment or disk.
    pub fn for_tests(upstream_url: &str, auth_path: PathBuf) -> Config {
        let mut c = Config::resolve(&ServeArgs {
            codex_home: Some(PathBuf::from("/nonexistent-codex-home")),
            ..ServeArgs::default()
        })
        // The defaults are in range by construction (the knob table); a failure here is a
        // bug in that table, and this is only for tests and benches.
        .unwrap_or_else(|e| panic!("the default configuration does not resolve: {e}"));
        c.upstream_url = upstream_url.trim_end_matches('/').to_owned();
        c.auth_path = auth_path;
        c.port = 0;
        c
    }

    /// The accounts to serve with: `--accounts`, else the one auth path.
    pub fn account_specs(&self) -> Vec<AccountSpec> {
        if self.accounts.is_empty() {
            vec![AccountSpec {
                path: self.auth_path.clone(),
                label: None,
            }]
        } else {
            self.accounts.clone()
        }
    }

    /// `{root}/codex/responses`.
    /// The WebSocket URL of the responses endpoint (`wss://` for an `https://` root).
    pub fn responses_ws_url(&self) -> String {
        let url = self.responses_url();
        match url.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => match url.strip_prefix("http://") {
                Some(rest) => format!("ws://{rest}"),
                None => url,
            },
        }
    }

    pub fn responses_url(&self) -> String {
        format!("{}/codex/responses", self.upstream_url)
    }
}

/// `--accounts`, else `accounts` in config.toml (paths, or tables `{path, label}`).
fn accounts(flag: &[PathBuf], t: &Toml) -> Result<Vec<AccountSpec>, String> {
    let mut specs: Vec<AccountSpec> = flag
        .iter()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| AccountSpec {
            path: p.clone(),
            label: None,
        })
        .collect();
    if flag.is_empty() {
        match t.ours("accounts") {
            None => {}
            Some(toml::Value::String(s)) => specs.extend(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| AccountSpec {
                        path: PathBuf::from(p),
                        label: None,
                    }),
            ),
            Some(toml::Value::Array(a)) => {
                for v in a {
                    let spec = match v {
                        toml::Value::String(p) => AccountSpec {
                            path: PathBuf::from(p),
                            label: None,
                        },
                        toml::Value::Table(tab) => AccountSpec {
                            path: tab
                                .get("path")
                                .and_then(|p| p.as_str())
                                .map(PathBuf::from)
                                .ok_or("config.toml: every [[codex_as_api.accounts]] entry needs a `path`")?,
                            label: tab
                                .get("label")
                                .and_then(|l| l.as_str())
                                .map(str::to_owned),
                        },
                        _ => return Err("config.toml: `accounts` entries are paths or {path, label} tables".into()),
                    };
                    specs.push(spec);
                }
            }
            Some(_) => {
                return Err("config.toml: `accounts` is a list of auth.json paths".into());
            }
        }
    }
    Ok(specs)
}

/// Flag/env origins, else `cors_allow_origin` from config.toml (a string or an array).
fn cors_origins(flag: &[String], t: &Toml) -> Vec<String> {
    let from_toml = || match t.ours("cors_allow_origin") {
        Some(toml::Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let raw: Vec<String> = if flag.is_empty() {
        from_toml()
    } else {
        flag.to_vec()
    };
    raw.iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_config_toml_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "model = \"gpt-6-sol\"\nmodel_context_window = 200000\nmodel_auto_compact_token_limit = 180000\n[codex_as_api]\nport = 19999\nkeepalive_secs = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            codex_home: Some(dir.path().to_path_buf()),
            port: Some(20000),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.port, 20000);
        assert_eq!(c.model, "gpt-6-sol");
        assert_eq!(c.context_window, Some(200_000));
        assert_eq!(c.auto_compact_token_limit, Some(180_000));
        assert_eq!(c.keepalive, Duration::from_secs(3));
        assert_eq!(c.auth_path, dir.path().join("auth.json"));
        let defaults = Config::resolve(&ServeArgs {
            codex_home: Some(dir.path().join("none")),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(defaults.port, 18080);
        assert_eq!(defaults.model, "gpt-5.5");
        assert_eq!(defaults.host.to_string(), "127.0.0.1");
        assert_eq!(defaults.upstream_url, "https://chatgpt.com/backend-api");
    }

    #[test]
    fn cors_origins_come_from_the_flag_or_config_toml_and_default_to_none() {
        let dir = tempfile::tempdir().unwrap();
        let none = Config::resolve(&ServeArgs {
            codex_home: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert!(none.cors_origins.is_empty());
        std::fs::write(
            dir.path().join("config.toml"),
            "[codex_as_api]\ncors_allow_origin = [\"http://localhost:3000/\", \"https://app.example\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            codex_home: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(
            c.cors_origins,
            ["http://localhost:3000", "https://app.example"]
        );
        let c = Config::resolve(&ServeArgs {
            cors_allow_origin: vec!["*".into()],
            ..args
        })
        .unwrap();
        assert_eq!(c.cors_origins, ["*"]);
    }

    #[test]
    fn history_caps_come_from_the_flag_then_config_toml_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            codex_home: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(
            (c.history_max_entries, c.history_max_bytes),
            (1024, 64 << 20)
        );
        std::fs::write(
            dir.path().join("config.toml"),
            "[codex_as_api]\nhistory_max_entries = 7\nhistory_max_bytes = 4096\n",
        )
        .unwrap();
        let c = Config::resolve(&args).unwrap();
        assert_eq!((c.history_max_entries, c.history_max_bytes), (7, 4096));
        let c = Config::resolve(&ServeArgs {
            history_max_entries: Some(3),
            ..args
        })
        .unwrap();
        assert_eq!((c.history_max_entries, c.history_max_bytes), (3, 4096));
    }

    #[test]
    fn malformed_config_toml_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "model = [").unwrap();
        let err = Config::resolve(&ServeArgs {
            codex_home: Some(dir.path().to_path_buf()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.contains("config.toml"), "{err}");
    }
}

/// Builds a [`Config`] in code: each `serve` setting by its flag's name (`--max-body-bytes`
/// is `.max_body_bytes(…)`), then [`ConfigBuilder::build`] resolves it as the command line
/// would — over `config.toml` in the Codex home, over the defaults — checking every range.
/// No flag or environment variable is read (the Codex home defaults to `~/.codex`, where the
/// Codex CLI keeps `auth.json`).
///
/// ```
/// use codex_as_api::Config;
///
/// let config = Config::builder()
///     .port(0u16)
///     .model("gpt-5.5")
///     .codex_home("/nonexistent")
///     .max_body_bytes(1usize << 20)
///     .build()
///     .unwrap();
/// assert_eq!(config.max_body_bytes, 1 << 20);
/// assert!(Config::builder().keepalive_secs(0u64).build().is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    args: ServeArgs,
}

macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl ConfigBuilder {
            $(
                #[doc = concat!("`--", stringify!($name), "` (with `-` for `_`).")]
                pub fn $name(mut self, value: impl Into<$ty>) -> Self {
                    self.args.$name = Some(value.into());
                    self
                }
            )*
        }
    };
}

setters! {
    host: IpAddr, port: u16, model: String, small_model: String, auth_path: PathBuf,
    codex_home: PathBuf, upstream_url: String, token_url: String, ca_file: PathBuf,
    upstream_proxy: String, upstream_transport: Transport, api_key: String,
    keepalive_secs: u64, stream_idle_timeout_secs: u64, head_hold_ms: u64,
    max_body_bytes: usize, max_json_depth: usize, max_concurrent_streams: usize,
    upstream_retries: u32, reasoning_field: String, drain_secs: u64,
    header_timeout_secs: u64, upstream_max_connections: usize, upstream_idle_secs: u64,
    history_max_entries: usize, history_max_bytes: usize, account_max_streams: usize,
    account_max_streams_ceiling: usize, account_window_grow_secs: u64,
    queue_timeout_secs: u64, request_read_timeout_secs: u64, write_stall_secs: u64,
    max_connections: usize,
}

impl ConfigBuilder {
    /// `--insecure-no-auth`: allow a non-loopback bind without an API key.
    pub fn insecure_no_auth(mut self, on: bool) -> Self {
        self.args.insecure_no_auth = on;
        self
    }
    /// `--demo`: answer from the built-in Codex backend emulator (no ChatGPT login needed).
    pub fn demo(mut self, on: bool) -> Self {
        self.args.demo = on;
        self
    }
    /// `--no-compression`: send request bodies to the backend uncompressed.
    pub fn no_compression(mut self, on: bool) -> Self {
        self.args.no_compression = on;
        self
    }
    /// `--cors-allow-origin` (repeatable): one more allowed browser origin.
    pub fn cors_allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.args.cors_allow_origin.push(origin.into());
        self
    }
    /// `--accounts`: one more ChatGPT login (an auth.json path) to spread work over.
    pub fn account(mut self, auth_json: impl Into<PathBuf>) -> Self {
        self.args.accounts.push(auth_json.into());
        self
    }
    /// Resolve and check every setting; an error names the setting out of range.
    pub fn build(self) -> Result<Config, crate::error::Error> {
        Config::resolve(&self.args).map_err(crate::error::Error::bad_request)
    }
}

/// The `serve` flags' environment variables alone (no command line).
#[derive(clap::Parser)]
struct EnvOnly {
    #[command(flatten)]
    serve: ServeArgs,
}

impl Config {
    /// A builder with nothing set: every setting at its default or its config.toml value.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Settings as `codex-as-api serve` resolves them with no flags: the `CODEX_AS_API_*`
    /// environment variables (and `CODEX_HOME`) over config.toml over the defaults.
    pub fn from_env() -> Result<Config, crate::error::Error> {
        ConfigBuilder::from_env()?.build()
    }
}

impl ConfigBuilder {
    /// A builder preset with the `CODEX_AS_API_*` environment variables (and `CODEX_HOME`),
    /// as `codex-as-api serve` reads them; a setter then overrides its variable.
    pub fn from_env() -> Result<ConfigBuilder, crate::error::Error> {
        use clap::Parser;
        let env = EnvOnly::try_parse_from(["codex-as-api"])
            .map_err(|e| crate::error::Error::bad_request(e.to_string()))?;
        Ok(ConfigBuilder { args: env.serve })
    }
}
