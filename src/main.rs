//! The `codex-as-api` command line: `serve` (the default), `emulator`, `completions`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use codex_as_api::config::{Config, ServeArgs};
use codex_as_api::emulator::{Chunking, Emulator, EmulatorConfig};
use codex_as_api::server::{self, Server};

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
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(
        long,
        env = "CODEX_AS_API_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    log_level: String,
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
    /// Run only the built-in Codex backend emulator (for tests and benchmarks).
    Emulator {
        /// Port to listen on (0 = any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Serve HTTPS with a generated test CA (its PEM is written to --ca-out).
        #[arg(long)]
        tls: bool,
        /// Where to write the CA PEM in --tls mode.
        #[arg(long)]
        ca_out: Option<std::path::PathBuf>,
        /// Write an auth.json with credentials the emulator accepts.
        #[arg(long)]
        auth_out: Option<std::path::PathBuf>,
        /// Send bursts of events as one HTTP chunk instead of one chunk per event.
        #[arg(long)]
        coalesce: bool,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn init_logging(log: &LogArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
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
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(*args).await,
            Some(Command::Emulator {
                port,
                tls,
                ca_out,
                auth_out,
                coalesce,
            }) => emulator(port, tls, ca_out, auth_out, coalesce).await,
            Some(Command::Completions { shell }) => {
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "codex-as-api", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("codex-as-api: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = Config::resolve(&args)?;
    // Keep the demo backend alive for the whole run.
    let mut _demo: Option<(Emulator, tempfile_dir::TempDir)> = None;
    if config.demo {
        let emu = Emulator::start(EmulatorConfig::default())
            .await
            .map_err(|e| format!("cannot start the demo emulator: {e}"))?;
        let dir = tempfile_dir::TempDir::new().map_err(|e| format!("demo: {e}"))?;
        let auth = dir.path().join("auth.json");
        emu.issue_credentials(24 * 3600)
            .write_auth_json(&auth)
            .map_err(|e| format!("demo: cannot write credentials: {e}"))?;
        config.upstream_url = emu.base_url();
        config.token_url = emu.token_url();
        config.auth_path = auth;
        tracing::warn!(
            upstream = %config.upstream_url,
            "DEMO MODE: answers come from the built-in Codex backend emulator, not from ChatGPT"
        );
        _demo = Some((emu, dir));
    }
    let server = Server::start(config).await.map_err(|e| e.message.clone())?;
    let st = server.state();
    let auth = if st.tokens.available() {
        let plan = st
            .tokens
            .current()
            .and_then(|h| h.plan.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        format!("ChatGPT credentials loaded (plan: {plan})")
    } else {
        format!(
            "NO ChatGPT credentials at {} — run `codex login`, or start with --demo",
            st.config.auth_path.display()
        )
    };
    tracing::info!(
        address = %server.addr(),
        model = %st.config.model,
        upstream = %st.config.upstream_url,
        auth = %auth,
        "codex-as-api {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        server.addr()
    );
    server::run_until_signal(server).await;
    Ok(())
}

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

/// A temporary directory removed on drop (the demo's credentials live there).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            let dir = std::env::temp_dir().join(format!(
                "codex-as-api-demo-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&dir)?;
            Ok(TempDir(dir))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
