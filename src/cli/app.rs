//! The `codex-as-api` command line as a library function ([`run`]): `serve` (the default),
//! `login`, `usage`, `claude`, `env`, `emulator`, `completions`; logging setup and the
//! startup banner. The binary, the Python package's `codex-as-api` script and the npm
//! launcher all call it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::claude::Shell;
use crate::cli::{claude, login, print_out, usage};
use crate::config::{Config, ServeArgs};
#[cfg(feature = "demo")]
use crate::emulator::{Chunking, Emulator, EmulatorConfig};
use crate::server::Server;
use crate::upstream::client::HttpClient;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "codex-as-api",
    version,
    about = "Local OpenAI- and Anthropic-compatible APIs on your ChatGPT subscription (via the Codex backend)",
    long_about = None,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(clap::Args, Debug, Clone)]
struct LogArgs {
    /// Log level (error, warn, info, debug, trace; default: info for the server, error for
    /// the other commands); RUST_LOG overrides it.
    #[arg(long, env = "CODEX_AS_API_LOG_LEVEL", global = true)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "CODEX_AS_API_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API server (the default).
    Serve(Box<ServeArgs>),
    /// Sign in to ChatGPT and save the credentials to auth.json (shared with the Codex CLI).
    Login(LoginArgs),
    /// Show the account's rate-limit windows (5-hour, weekly), plan and credits.
    Usage(UsageArgs),
    /// Run Claude Code against codex-as-api (starts the server in the background if needed).
    Claude(ClaudeArgs),
    /// Print the environment for Claude Code as shell exports (`eval "$(codex-as-api env)"`).
    Env(EnvArgs),
    /// Run only the built-in Codex backend emulator (for tests and benchmarks).
    #[cfg(feature = "demo")]
    Emulator {
        /// Port to listen on (0 = any free port).
        #[arg(long, env = "CODEX_AS_API_EMULATOR_PORT", default_value_t = 0)]
        port: u16,
        /// Serve HTTPS with a generated test CA (its PEM is written to --ca-out).
        #[arg(long, env = "CODEX_AS_API_EMULATOR_TLS")]
        tls: bool,
        /// Where to write the CA PEM in --tls mode.
        #[arg(long, env = "CODEX_AS_API_EMULATOR_CA_OUT")]
        ca_out: Option<std::path::PathBuf>,
        /// Write an auth.json with credentials the emulator accepts.
        #[arg(long, env = "CODEX_AS_API_EMULATOR_AUTH_OUT")]
        auth_out: Option<std::path::PathBuf>,
        /// Send bursts of events as one HTTP chunk instead of one chunk per event.
        #[arg(long, env = "CODEX_AS_API_EMULATOR_COALESCE")]
        coalesce: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the credentials live (shared by `login` and `usage`).
#[derive(clap::Args, Debug, Clone, Default)]
struct AuthFileArgs {
    /// Credentials file (default $CODEX_HOME/auth.json).
    #[arg(long, env = "CODEX_AS_API_AUTH_PATH")]
    auth_path: Option<PathBuf>,
    /// Codex home (auth.json, config.toml); default ~/.codex.
    #[arg(long, env = "CODEX_HOME")]
    codex_home: Option<PathBuf>,
    /// Extra PEM roots trusted for TLS.
    #[arg(long, env = "CODEX_AS_API_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct LoginArgs {
    /// Device-code sign-in for machines without a browser.
    #[arg(long, env = "CODEX_AS_API_LOGIN_DEVICE")]
    device: bool,
    /// Port of the local sign-in callback server (the issuer expects 1455).
    #[arg(long, env = "CODEX_AS_API_CALLBACK_PORT", default_value_t = 1455)]
    callback_port: u16,
    /// Do not try to open a browser; only print the sign-in URL.
    #[arg(long, env = "CODEX_AS_API_NO_BROWSER")]
    no_browser: bool,
    /// The OAuth issuer.
    #[arg(
        long,
        env = "CODEX_AS_API_AUTH_BASE_URL",
        default_value = "https://auth.openai.com"
    )]
    auth_base_url: String,
    #[command(flatten)]
    files: AuthFileArgs,
}

#[derive(clap::Args, Debug)]
struct UsageArgs {
    /// Print the backend's usage document as JSON.
    #[arg(long, env = "CODEX_AS_API_USAGE_JSON")]
    json: bool,
    /// Backend root ({root}/wham/usage).
    #[arg(long, env = "CODEX_AS_API_UPSTREAM_URL")]
    upstream_url: Option<String>,
    /// Several accounts: comma-separated auth.json paths (as for `serve`).
    #[arg(long, env = "CODEX_AS_API_ACCOUNTS", value_delimiter = ',')]
    accounts: Vec<PathBuf>,
    /// OAuth token endpoint (for refreshing an expired access token).
    #[arg(long, env = "CODEX_AS_API_TOKEN_URL")]
    token_url: Option<String>,
    #[command(flatten)]
    files: AuthFileArgs,
}

#[derive(clap::Args, Debug)]
struct ClaudeArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Keep a server this command starts running after Claude Code exits (by default it
    /// stops with Claude Code; a server that was already running is always left alone).
    #[arg(long, env = "CODEX_AS_API_KEEP_SERVER")]
    keep_server: bool,
    /// Arguments for Claude Code (after `--`). The binary is $CODEX_AS_API_CLAUDE_BIN or `claude`.
    #[arg(last = true)]
    claude_args: Vec<OsString>,
}

#[derive(clap::Args, Debug)]
struct EnvArgs {
    /// Shell syntax of the output.
    #[arg(long, env = "CODEX_AS_API_SHELL", value_enum, default_value_t = Shell::Sh)]
    shell: Shell,
    #[command(flatten)]
    serve: ServeArgs,
}

impl AuthFileArgs {
    fn serve_args(&self) -> ServeArgs {
        ServeArgs {
            auth_path: self.auth_path.clone(),
            codex_home: self.codex_home.clone(),
            ca_file: self.ca_file.clone(),
            ..ServeArgs::default()
        }
    }
}

fn client(config: &Config) -> Result<HttpClient, String> {
    crate::upstream::client::build(config.ca_file.as_deref(), config.upstream_proxy.as_deref())
        .map_err(|e| e.message)
}

/// The logging flags again, for a server started in the background.
fn log_argv(log: &LogArgs) -> Vec<OsString> {
    let format = match log.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut argv: Vec<OsString> = vec!["--log-format".into(), format.into()];
    if let Some(level) = &log.log_level {
        argv.push("--log-level".into());
        argv.push(level.into());
    }
    argv
}

/// `default_level` applies when neither RUST_LOG nor --log-level says otherwise: the
/// server logs at info, the one-shot commands only their errors (which they also print).
fn init_logging(log: &LogArgs, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let level = log.log_level.as_deref().unwrap_or(default_level);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tungstenite logs every handshake request, Authorization included, at trace: when a
    // filter lets trace through, cap it at debug for tungstenite (secrets never reach
    // logs). Only then: the directive would otherwise turn its debug lines on.
    let filter = if filter.max_level_hint() == Some(tracing_subscriber::filter::LevelFilter::TRACE)
    {
        ["tungstenite=debug", "tokio_tungstenite=debug"]
            .iter()
            .filter_map(|d| d.parse().ok())
            .fold(filter, EnvFilter::add_directive)
    } else {
        filter
    };
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second run in one process (a library caller) keeps the first subscriber.
    let _ = match log.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Run the command line `args` (the program name first, as in `std::env::args_os()`) to
/// its end: parse (`--help`, `--version` and usage errors print and return as clap does),
/// set up logging (once per process), start a runtime, run the command. Ctrl-C and SIGTERM
/// end `serve` gracefully.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_level = match cli.command {
        None | Some(Command::Serve(_)) => "info",
        #[cfg(feature = "demo")]
        Some(Command::Emulator { .. }) => "info",
        Some(_) => "error",
    };
    init_logging(&cli.log, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codex-as-api: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let done: Result<(), String> = match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(*args).await,
            #[cfg(feature = "demo")]
            Some(Command::Emulator {
                port,
                tls,
                ca_out,
                auth_out,
                coalesce,
            }) => emulator(port, tls, ca_out, auth_out, coalesce).await,
            Some(Command::Login(a)) => {
                let config = Config::resolve(&a.files.serve_args())?;
                let opts = login::LoginOptions {
                    auth_base: a.auth_base_url,
                    auth_path: config.auth_path.clone(),
                    callback_port: a.callback_port,
                    open_browser: !a.no_browser,
                    device: a.device,
                };
                login::run(&client(&config)?, &opts).await.map(|_| ())
            }
            Some(Command::Usage(a)) => {
                let mut args = a.files.serve_args();
                args.upstream_url = a.upstream_url;
                args.token_url = a.token_url;
                args.accounts = a.accounts;
                let config = Config::resolve(&args)?;
                usage::run(&config, &client(&config)?, a.json).await
            }
            Some(Command::Env(a)) => {
                let config = Config::resolve(&a.serve)?;
                let text = claude::env_command(&client(&config)?, &config, a.shell).await?;
                print_out(text.as_bytes())
            }
            Some(Command::Claude(a)) => {
                let config = Config::resolve(&a.serve)?;
                // The flags as given: the server it may start is given the same ones.
                let given = matches.subcommand_matches("claude").unwrap_or(&matches);
                return claude::launch(
                    &client(&config)?,
                    &config,
                    given,
                    &log_argv(&cli.log),
                    &a.claude_args,
                    a.keep_server,
                )
                .await;
            }
            Some(Command::Completions { shell }) => {
                let mut cmd = Cli::command();
                let mut text = Vec::new();
                clap_complete::generate(shell, &mut cmd, "codex-as-api", &mut text);
                print_out(&text)
            }
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("codex-as-api: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::resolve(&args)?;
    let server = Server::bind(config).await.map_err(|e| e.message.clone())?;
    // Before the address is announced: whoever reads it may signal at once.
    let signal = crate::server::shutdown_signal();
    let st = server.state();
    let primary = st.accounts.primary();
    let plan = primary
        .and_then(|a| a.tokens.current())
        .and_then(|h| h.plan.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    let ready = st.accounts.all().iter().filter(|a| a.available()).count();
    for a in st.accounts.all().iter().filter(|a| !a.available()) {
        let why = a.tokens.problem().unwrap_or_default();
        tracing::warn!(account = %a.label, "account unavailable: {why}");
    }
    let auth = if ready > 0 {
        format!(
            "{ready} of {} ChatGPT account(s) loaded",
            st.accounts.all().len()
        )
    } else {
        format!(
            "NO ChatGPT credentials at {}: run `codex-as-api login`, or start with --demo",
            st.config.auth_path.display()
        )
    };
    tracing::info!(
        address = %server.addr(),
        model = %st.config.model,
        small_model = %st.config.small_model,
        upstream = %st.config.upstream_url,
        auth = %auth,
        auth_available = ready > 0,
        plan = %plan,
        api_key_required = st.config.api_key.is_some(),
        account_max_streams = st.config.account_limits.start,
        "codex-as-api {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        server.addr()
    );
    if std::env::var_os(claude::STOP_ON_STDIN_EOF).is_some() {
        // Started by `claude` for one session: stop when the launcher's pipe closes too.
        let ended = async {
            stdin_closed().await;
            tracing::info!("stopping: the session that started this server ended");
        };
        server
            .run_until(async {
                tokio::select! {
                    () = signal => {}
                    () = ended => {}
                }
            })
            .await;
    } else {
        server.run_until(signal).await;
    }
    Ok(())
}

/// Resolves when stdin reaches end of file (or fails). A plain thread, not tokio's stdin:
/// a read pending on tokio's blocking pool would hold up the runtime's shutdown.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.await;
    } else {
        std::future::pending::<()>().await;
    }
}

#[cfg(feature = "demo")]
async fn emulator(
    port: u16,
    tls: bool,
    ca_out: Option<std::path::PathBuf>,
    auth_out: Option<std::path::PathBuf>,
    coalesce: bool,
) -> Result<(), String> {
    let cfg = EmulatorConfig {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        tls,
        chunking: if coalesce {
            Chunking::Coalesced
        } else {
            Chunking::PerEvent
        },
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(cfg)
        .await
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    if let (Some(path), Some(pem)) = (ca_out, emu.ca_pem()) {
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = auth_out {
        emu.issue_credentials(24 * 3600)
            .write_auth_json(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("CODEX_AS_API_UPSTREAM_URL={}", emu.base_url());
    println!("CODEX_AS_API_TOKEN_URL={}", emu.token_url());
    let _ = tokio::signal::ctrl_c().await;
    emu.shutdown().await;
    Ok(())
}
