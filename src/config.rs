//! Settings: a flag overrides its env var, which overrides `$CODEX_HOME/config.toml`, which
//! overrides the default.
//!
//! Owns: every tunable and limit of the server, the `serve` flags (`ServeArgs`, with their env
//! var names), and reading the Codex CLI's `config.toml` (root keys `model`,
//! `model_context_window`, `model_auto_compact_token_limit`, plus our own optional
//! `[codex_as_api]` table whose keys are the flag names with `_`), and the fallbacks for the
//! context window and auto-compaction limit derived from those keys.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::accounts::AccountSpec;
use crate::admission::Limits;

/// The official client version we present upstream (`version` header, `client_version`).
pub const CODEX_CLIENT_VERSION: &str = "0.169.0";

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
            .finish_non_exhaustive()
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
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
    fn int(&self, key: &str) -> Option<u64> {
        self.ours(key)
            .and_then(|v| v.as_integer())
            .and_then(|i| u64::try_from(i).ok())
    }
    fn bool(&self, key: &str) -> bool {
        self.ours(key).and_then(|v| v.as_bool()).unwrap_or(false)
    }
    fn root_int(&self, key: &str) -> Option<u64> {
        self.root
            .get(key)
            .and_then(|v| v.as_integer())
            .and_then(|i| u64::try_from(i).ok())
    }
}

impl Config {
    /// Resolve settings from flags/env (`args`) over config.toml over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, String> {
        let codex_home = args
            .codex_home
            .clone()
            .unwrap_or_else(|| home_dir().join(".codex"));
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
        let port = match args.port {
            Some(p) => p,
            None => match t.int("port") {
                Some(p) => {
                    u16::try_from(p).map_err(|_| format!("config.toml: invalid port {p}"))?
                }
                None => 18080,
            },
        };
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
        let secs = |v: Option<u64>, key: &str, default: u64| {
            Duration::from_secs(v.or_else(|| t.int(key)).unwrap_or(default))
        };
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
        let start = ranged(
            args.account_max_streams
                .or_else(|| t.int("account_max_streams").map(|v| v as usize)),
            "account_max_streams",
            3,
            1..=4096,
        )?;
        let ceiling = ranged(
            args.account_max_streams_ceiling
                .or_else(|| t.int("account_max_streams_ceiling").map(|v| v as usize)),
            "account_max_streams_ceiling",
            8.max(start),
            1..=4096,
        )?;
        if ceiling < start {
            return Err(format!(
                "--account-max-streams-ceiling ({ceiling}) is below --account-max-streams ({start})"
            ));
        }
        let grow_secs = ranged(
            args.account_window_grow_secs
                .or_else(|| t.int("account_window_grow_secs")),
            "account_window_grow_secs",
            30,
            0..=86_400,
        )?;
        let queue_secs = ranged(
            args.queue_timeout_secs
                .or_else(|| t.int("queue_timeout_secs")),
            "queue_timeout_secs",
            300,
            1..=86_400,
        )?;
        let request_read_secs = ranged(
            args.request_read_timeout_secs
                .or_else(|| t.int("request_read_timeout_secs")),
            "request_read_timeout_secs",
            60,
            1..=86_400,
        )?;
        let write_stall_secs = ranged(
            args.write_stall_secs.or_else(|| t.int("write_stall_secs")),
            "write_stall_secs",
            120,
            1..=86_400,
        )?;
        let max_connections = ranged(
            args.max_connections
                .or_else(|| t.int("max_connections").map(|v| v as usize)),
            "max_connections",
            8192,
            1..=1_000_000,
        )?;
        Ok(Config {
            request_read_timeout: Duration::from_secs(request_read_secs),
            write_stall: Duration::from_secs(write_stall_secs),
            max_connections,
            accounts,
            account_limits: Limits {
                start,
                ceiling,
                grow_after: Duration::from_secs(grow_secs),
            },
            queue_timeout: Duration::from_secs(queue_secs),
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
            keepalive: secs(args.keepalive_secs, "keepalive_secs", 10),
            stream_idle_timeout: secs(
                args.stream_idle_timeout_secs,
                "stream_idle_timeout_secs",
                300,
            ),
            head_hold: Duration::from_millis(
                args.head_hold_ms
                    .or_else(|| t.int("head_hold_ms"))
                    .unwrap_or(10_000),
            ),
            max_body_bytes: args
                .max_body_bytes
                .or_else(|| t.int("max_body_bytes").map(|v| v as usize))
                .unwrap_or(32 * 1024 * 1024),
            max_json_depth: args
                .max_json_depth
                .or_else(|| t.int("max_json_depth").map(|v| v as usize))
                .unwrap_or(128),
            max_concurrent_streams: args
                .max_concurrent_streams
                .or_else(|| t.int("max_concurrent_streams").map(|v| v as usize))
                .unwrap_or(4096),
            upstream_retries: args
                .upstream_retries
                .or_else(|| t.int("upstream_retries").map(|v| v as u32))
                .unwrap_or(2),
            reasoning_field,
            drain: secs(args.drain_secs, "drain_secs", 30),
            header_timeout: secs(args.header_timeout_secs, "header_timeout_secs", 30),
            cors_origins: cors_origins(&args.cors_allow_origin, &t),
            context_window: t.root_int("model_context_window"),
            auto_compact_token_limit: t.root_int("model_auto_compact_token_limit"),
            codex_home,
            client_version: CODEX_CLIENT_VERSION.to_owned(),
            history_max_entries: args
                .history_max_entries
                .or_else(|| t.int("history_max_entries").map(|v| v as usize))
                .unwrap_or(1024),
            history_max_bytes: args
                .history_max_bytes
                .or_else(|| t.int("history_max_bytes").map(|v| v as usize))
                .unwrap_or(64 * 1024 * 1024),
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
        self.auto_compact_token_limit.unwrap_or(window * 9 / 10)
    }

    /// Defaults only (tests, benches): nothing read from the environment or disk.
    pub fn for_tests(upstream_url: &str, auth_path: PathBuf) -> Config {
        let mut c = Config::resolve(&ServeArgs {
            codex_home: Some(PathBuf::from("/nonexistent-codex-home")),
            ..ServeArgs::default()
        })
        .unwrap_or_else(|_| unreachable_config());
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
    pub fn responses_url(&self) -> String {
        format!("{}/codex/responses", self.upstream_url)
    }
}

/// A numeric setting within `range`, else an error naming its flag.
fn ranged<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<T>,
    key: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "--{} must be between {} and {}, not {v}",
            key.replace('_', "-"),
            range.start(),
            range.end()
        ))
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

fn unreachable_config() -> Config {
    // Resolving pure defaults cannot fail; this keeps `for_tests` free of panics anyway.
    Config {
        host: IpAddr::from([127, 0, 0, 1]),
        port: 0,
        model: "gpt-5.5".into(),
        small_model: "gpt-5.5".into(),
        codex_home: PathBuf::new(),
        config_path: PathBuf::new(),
        auth_path: PathBuf::new(),
        upstream_url: String::new(),
        token_url: String::new(),
        ca_file: None,
        api_key: None,
        insecure_no_auth: false,
        demo: false,
        compress: true,
        keepalive: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_secs(300),
        head_hold: Duration::from_secs(10),
        max_body_bytes: 32 * 1024 * 1024,
        max_json_depth: 128,
        max_concurrent_streams: 4096,
        upstream_retries: 2,
        reasoning_field: "reasoning_content".into(),
        drain: Duration::from_secs(30),
        header_timeout: Duration::from_secs(30),
        cors_origins: Vec::new(),
        context_window: None,
        auto_compact_token_limit: None,
        client_version: CODEX_CLIENT_VERSION.into(),
        history_max_entries: 1024,
        history_max_bytes: 64 * 1024 * 1024,
        accounts: Vec::new(),
        account_limits: Limits {
            start: 3,
            ceiling: 8,
            grow_after: Duration::from_secs(30),
        },
        queue_timeout: Duration::from_secs(300),
        request_read_timeout: Duration::from_secs(60),
        write_stall: Duration::from_secs(120),
        max_connections: 8192,
    }
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
