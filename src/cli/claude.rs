//! `codex-as-api claude [-- ARGS]` and `codex-as-api env`: Claude Code pointed at this
//! server.
//!
//! Owns: the environment Claude Code needs (anthropic-messages.md B.10, B.11): the base URL
//! (no `/v1`), a key, every model slot mapped to a backend model (the small/fast slot to
//! `small_model`, so background "haiku" calls work), the real context window as
//! `CLAUDE_CODE_AUTO_COMPACT_WINDOW` (Claude Code assumes 200k for ids it does not know),
//! the offline switches, and the variables that would send it elsewhere unset; rendering
//! that set as `sh`, `fish` or PowerShell; finding a running server through `/health` (its
//! model and window win over the local config) or starting one in the background; Claude
//! Code's first-run answers (`onboarding`); and running `claude` (`$CODEX_AS_API_CLAUDE_BIN`
//! or `claude` on `PATH`). When it found a server running, or was told `--keep-server`, this
//! process becomes Claude Code (exec). When it started the server itself, Claude Code runs as
//! its child and the server stops when Claude Code exits: the server was started with its
//! stdin a pipe from this process and `STOP_ON_STDIN_EOF` set, so it shuts down gracefully
//! when the pipe closes (also if this process is killed). Meanwhile Ctrl-C and friends are
//! Claude Code's (this process ignores SIGINT and SIGQUIT) and SIGTERM/SIGHUP are passed on
//! to it; its exit status is ours.
//!
//! Does not own: the server (`server`), which it starts as `codex-as-api serve` in its own
//! process group with the same settings, logging to `$CODEX_HOME/codex-as-api.log`.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bytes::Bytes;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;

use super::fetch;
use crate::config::{Config, ServeArgs};
use crate::upstream::catalog::Catalog;
use crate::upstream::client::HttpClient;

/// Key sent when the server does not require one (Claude Code insists on having a key).
pub const PLACEHOLDER_KEY: &str = "codex-as-api";
/// How long a freshly started server may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Set in the environment of a server `claude` starts for one session: `serve` then shuts
/// down when its stdin reaches end of file (the launcher exited or closed the pipe).
pub const STOP_ON_STDIN_EOF: &str = "CODEX_AS_API_STOP_ON_STDIN_EOF";
/// How long a server stopped after Claude Code exits may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Shell syntax for `env`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Sh,
    Fish,
    Powershell,
}

/// What Claude Code is pointed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `http://127.0.0.1:18080`.
    pub base_url: String,
    pub model: String,
    pub small_model: String,
    pub context_window: u64,
}

impl Target {
    /// From the local settings (no server asked).
    pub fn from_config(config: &Config) -> Target {
        let window = config.context_window_or(|| {
            Catalog::builtin()
                .find(&config.model)
                .map(|m| m.context_window)
        });
        Target {
            base_url: base_url(config),
            model: config.model.clone(),
            small_model: config.small_model.clone(),
            context_window: window,
        }
    }
}

/// The address clients use: a wildcard bind is reached over loopback.
fn base_url(config: &Config) -> String {
    let host = match config.host {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        h => h,
    };
    match host {
        IpAddr::V4(a) => format!("http://{a}:{}", config.port),
        IpAddr::V6(a) => format!("http://[{a}]:{}", config.port),
    }
}

/// One variable: set to a value, or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    Set(&'static str, String),
    Unset(&'static str),
}

/// Variables that would route Claude Code somewhere else or to another credential.
const UNSET: [&str; 5] = [
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
];

/// Only traffic to `ANTHROPIC_BASE_URL` (B.11).
const OFFLINE: [&str; 6] = [
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
    "DISABLE_ERROR_REPORTING",
    "DISABLE_BUG_COMMAND",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY",
];

/// The whole environment for Claude Code. `key` is the server's API key, if it has one.
pub fn vars(target: &Target, key: Option<&str>) -> Vec<Var> {
    let mut v = vec![
        Var::Set("ANTHROPIC_BASE_URL", target.base_url.clone()),
        Var::Set(
            "ANTHROPIC_API_KEY",
            key.unwrap_or(PLACEHOLDER_KEY).to_owned(),
        ),
        Var::Set("ANTHROPIC_MODEL", target.model.clone()),
        Var::Set("ANTHROPIC_DEFAULT_OPUS_MODEL", target.model.clone()),
        Var::Set("ANTHROPIC_DEFAULT_SONNET_MODEL", target.model.clone()),
        Var::Set("ANTHROPIC_DEFAULT_HAIKU_MODEL", target.small_model.clone()),
        Var::Set("ANTHROPIC_SMALL_FAST_MODEL", target.small_model.clone()),
        Var::Set("CLAUDE_CODE_SUBAGENT_MODEL", target.model.clone()),
        Var::Set(
            "CLAUDE_CODE_AUTO_COMPACT_WINDOW",
            target.context_window.to_string(),
        ),
    ];
    v.extend(OFFLINE.iter().map(|k| Var::Set(k, "1".to_owned())));
    v.extend(UNSET.iter().map(|k| Var::Unset(k)));
    v
}

fn quote_sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn quote_fish(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn quote_ps(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The variables as shell code to `eval`.
pub fn render(vars: &[Var], shell: Shell) -> String {
    let mut out = String::new();
    for v in vars {
        let line = match (shell, v) {
            (Shell::Sh, Var::Set(k, val)) => format!("export {k}={}", quote_sh(val)),
            (Shell::Sh, Var::Unset(k)) => format!("unset {k}"),
            (Shell::Fish, Var::Set(k, val)) => format!("set -gx {k} {}", quote_fish(val)),
            (Shell::Fish, Var::Unset(k)) => format!("set -e {k}"),
            (Shell::Powershell, Var::Set(k, val)) => format!("$env:{k} = {}", quote_ps(val)),
            (Shell::Powershell, Var::Unset(k)) => {
                format!("Remove-Item Env:{k} -ErrorAction SilentlyContinue")
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `GET {base}/health` of a running codex-as-api, or `None` when nothing (ours) answers.
/// `key` is sent when set: on a non-loopback bind `/health` reports the model only with it.
pub async fn probe(client: &HttpClient, base: &str, key: Option<&str>) -> Option<Value> {
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("{base}/health"));
    if let Some(k) = key {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let (status, _, body) = fetch(client, req, Duration::from_secs(2)).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    (v.get("status").and_then(Value::as_str) == Some("ok")).then_some(v)
}

/// What a running server reports wins over the local settings.
pub fn apply_health(target: &mut Target, health: &Value) {
    if let Some(m) = health.get("model").and_then(Value::as_str) {
        if target.small_model == target.model {
            target.small_model = m.to_owned();
        }
        target.model = m.to_owned();
    }
    if let Some(w) = health.get("context_window").and_then(Value::as_u64) {
        target.context_window = w;
    }
}

/// The `serve` command line for the flags of [`ServeArgs`] given on this command line
/// (`matches`, the parsed `claude` command), and the environment it needs. What came from
/// the environment or a default is not repeated: the server inherits the environment. A
/// flag whose value clap hides (the API key, the upstream proxy, which may hold
/// credentials) travels in its env var, never on a command line other users can read.
pub fn serve_argv(matches: &ArgMatches) -> (Vec<OsString>, Vec<(OsString, OsString)>) {
    let mut argv: Vec<OsString> = vec!["serve".into()];
    let mut env = Vec::new();
    let serve = ServeArgs::augment_args(clap::Command::new("serve"));
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        let given = matches.value_source(id) == Some(ValueSource::CommandLine);
        let (Some(long), true) = (arg.get_long(), given) else {
            continue;
        };
        if !arg.get_action().takes_values() {
            argv.push(format!("--{long}").into());
            continue;
        }
        let values = matches.get_raw(id).into_iter().flatten();
        match arg.get_env() {
            Some(var) if arg.is_hide_env_values_set() => {
                let joined = values.collect::<Vec<_>>().join(OsStr::new(","));
                env.push((var.to_owned(), joined));
            }
            _ => {
                for v in values {
                    argv.push(format!("--{long}").into());
                    argv.push(v.to_owned());
                }
            }
        }
    }
    (argv, env)
}

/// A server this process started.
struct Started {
    child: std::process::Child,
    /// The write end of the server's stdin when it stops with this session.
    stop: Option<std::process::ChildStdin>,
}

/// The program that runs this command line, when it is not the current executable (the
/// Python and npm packages' launchers).
pub const SELF_EXE: &str = "CODEX_AS_API_EXE";

/// Start `codex-as-api serve` detached, logging to `log`, and wait until it answers. With
/// `session`, the server stops when its stdin pipe (held in `Started::stop`) closes.
async fn start_server(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    args: &ArgMatches,
    log_args: &[OsString],
    log: &std::path::Path,
    session: bool,
) -> Result<(Value, Started), String> {
    // The Python and npm packages run this command line inside their interpreter: they
    // name the program that runs it again in CODEX_AS_API_EXE.
    let exe = match std::env::var_os(SELF_EXE) {
        Some(exe) if !exe.is_empty() => std::path::PathBuf::from(exe),
        _ => std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start the server: {e}"))?,
    };
    let (mut argv, env) = serve_argv(args);
    argv.extend(log_args.iter().cloned());
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the server log {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("server log {}: {e}", log.display()))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(&argv).stdout(out).stderr(err);
    // Its own process group: Ctrl-C in Claude Code does not stop the server.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
    }
    if session {
        cmd.stdin(std::process::Stdio::piped())
            .env(STOP_ON_STDIN_EOF, "1");
    } else {
        cmd.stdin(std::process::Stdio::null())
            .env_remove(STOP_ON_STDIN_EOF);
    }
    cmd.envs(env);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stop = child.stdin.take();
    eprintln!(
        "codex-as-api: started the server in the background (pid {}, log {}){}",
        child.id(),
        log.display(),
        if session {
            "; it stops when Claude Code exits (--keep-server keeps it)"
        } else {
            ""
        }
    );
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(h) = probe(client, base, key).await {
            return Ok((h, Started { child, stop }));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the background server exited ({status}); see {}",
                log.display()
            ));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the background server did not answer {base}/health within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop a server started for this session: close its stdin, wait for its graceful exit.
async fn stop_server(mut started: Started) {
    drop(started.stop.take());
    let pid = started.child.id();
    let child = tokio::task::spawn_blocking(move || {
        let status = started.child.wait();
        (started, status)
    });
    match tokio::time::timeout(STOP_TIMEOUT, child).await {
        Ok(Ok((_, Ok(_)))) => {}
        Ok(Ok((mut s, Err(e)))) => {
            eprintln!("codex-as-api: waiting for the server (pid {pid}): {e}");
            let _ = s.child.kill();
        }
        Ok(Err(e)) => eprintln!("codex-as-api: waiting for the server (pid {pid}): {e}"),
        Err(_) => {
            eprintln!(
                "codex-as-api: the server (pid {pid}) did not stop within {} s; killing it",
                STOP_TIMEOUT.as_secs()
            );
            kill(pid);
        }
    }
}

/// Kill process `pid` at once (a server that would not stop).
fn kill(pid: u32) {
    #[cfg(unix)]
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    #[cfg(not(unix))]
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/T", "/PID", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Mark Claude Code's onboarding done and approve `key` (problems are reported, not fatal).
fn first_run(key: &str) {
    let Some(path) = super::onboarding::config_path() else {
        return;
    };
    match super::onboarding::apply(&path, key) {
        Ok(m) if m.rejected => eprintln!(
            "codex-as-api: Claude Code has this API key recorded as rejected in {}; approve it in Claude Code's /config (\"Use custom API key\")",
            path.display()
        ),
        Ok(_) => {}
        Err(e) => eprintln!("codex-as-api: Claude Code's first-run settings: {e}"),
    }
}

/// Run `cmd` as a child (signals handled as the module docs say) and return its status.
#[cfg(unix)]
async fn run_claude(cmd: std::process::Command) -> Result<std::process::ExitStatus, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let bin = cmd.get_program().to_owned();
    let sig = |k: SignalKind| signal(k).map_err(|e| format!("cannot handle signals: {e}"));
    // Registered (before Claude Code starts), these no longer stop this process; the
    // terminal sends them to Claude Code (same process group) too.
    let mut int = sig(SignalKind::interrupt())?;
    let mut quit = sig(SignalKind::quit())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut hup = sig(SignalKind::hangup())?;
    let mut cmd = tokio::process::Command::from(cmd);
    let mut child = cmd.spawn().map_err(|e| missing_claude(&bin, &e))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw);
    loop {
        let forward = tokio::select! {
            status = child.wait() => {
                return status.map_err(|e| format!("waiting for Claude Code: {e}"));
            }
            _ = int.recv() => None,
            _ = quit.recv() => None,
            _ = term.recv() => Some(rustix::process::Signal::TERM),
            _ = hup.recv() => Some(rustix::process::Signal::HUP),
        };
        if let (Some(s), Some(pid)) = (forward, pid) {
            let _ = rustix::process::kill_process(pid, s);
        }
    }
}

/// Run `cmd` as a child and return its status. Ctrl-C reaches every process of the
/// console, Claude Code included; this process waits for it instead of stopping.
#[cfg(not(unix))]
async fn run_claude(cmd: std::process::Command) -> Result<std::process::ExitStatus, String> {
    let bin = cmd.get_program().to_owned();
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| missing_claude(&bin, &e))?;
    loop {
        tokio::select! {
            status = child.wait() => {
                return status.map_err(|e| format!("waiting for Claude Code: {e}"));
            }
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

fn missing_claude(bin: &std::ffi::OsStr, err: &std::io::Error) -> String {
    format!(
        "cannot run {bin:?} ({err}); install Claude Code (`npm install -g @anthropic-ai/claude-code`) or set CODEX_AS_API_CLAUDE_BIN"
    )
}

/// `codex-as-api env`.
pub async fn env_command(
    client: &HttpClient,
    config: &Config,
    shell: Shell,
) -> Result<String, String> {
    let mut target = Target::from_config(config);
    if let Some(h) = probe(client, &target.base_url, config.api_key.as_deref()).await {
        apply_health(&mut target, &h);
    }
    Ok(render(&vars(&target, config.api_key.as_deref()), shell))
}

/// The `claude` binary to run.
fn claude_bin() -> OsString {
    std::env::var_os("CODEX_AS_API_CLAUDE_BIN")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "claude".into())
}

/// `codex-as-api claude [-- ARGS]`: Claude Code's exit status. Where this process becomes
/// Claude Code (a server was running, or `keep_server`), it only returns on failure.
pub async fn launch(
    client: &HttpClient,
    config: &Config,
    args: &ArgMatches,
    log_args: &[OsString],
    claude_args: &[OsString],
    keep_server: bool,
) -> Result<std::process::ExitCode, String> {
    let mut target = Target::from_config(config);
    let key = config.api_key.as_deref();
    let (health, started) = match probe(client, &target.base_url, key).await {
        Some(h) => (h, None),
        None => {
            let log = config.codex_home.join("codex-as-api.log");
            let (h, s) = start_server(
                client,
                &target.base_url,
                key,
                args,
                log_args,
                &log,
                !keep_server,
            )
            .await?;
            (h, Some(s))
        }
    };
    apply_health(&mut target, &health);
    first_run(key.unwrap_or(PLACEHOLDER_KEY));
    let bin = claude_bin();
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(claude_args);
    for v in vars(&target, key) {
        match v {
            Var::Set(k, val) => cmd.env(k, val),
            Var::Unset(k) => cmd.env_remove(k),
        };
    }
    match started {
        Some(s) if !keep_server => {
            let status = run_claude(cmd).await;
            stop_server(s).await;
            Ok(exit_code(status?))
        }
        #[cfg(unix)]
        _ => {
            use std::os::unix::process::CommandExt;
            let err = cmd.exec();
            Err(missing_claude(&bin, &err))
        }
        // No exec: Claude Code runs as a child, its status becomes ours.
        #[cfg(not(unix))]
        _ => Ok(exit_code(run_claude(cmd).await?)),
    }
}

/// A child's status as this process's exit code (128 + the signal that ended it).
fn exit_code(status: std::process::ExitStatus) -> std::process::ExitCode {
    let code = match status.code() {
        Some(c) => c,
        #[cfg(unix)]
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
        #[cfg(not(unix))]
        None => 1,
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            base_url: "http://127.0.0.1:18080".into(),
            model: "gpt-5.5".into(),
            small_model: "gpt-5.6-luna".into(),
            context_window: 272_000,
        }
    }

    #[test]
    fn quoting_survives_each_shell() {
        assert_eq!(quote_sh("a'b"), "'a'\\''b'");
        assert_eq!(quote_fish("a'b\\"), "'a\\'b\\\\'");
        assert_eq!(quote_ps("a'b"), "'a''b'");
    }

    #[test]
    fn renders_every_variable_for_every_shell() {
        let v = vars(&target(), None);
        let sh = render(&v, Shell::Sh);
        assert!(sh.contains("export ANTHROPIC_BASE_URL='http://127.0.0.1:18080'\n"));
        assert!(sh.contains("export ANTHROPIC_SMALL_FAST_MODEL='gpt-5.6-luna'\n"));
        assert!(sh.contains("export CLAUDE_CODE_AUTO_COMPACT_WINDOW='272000'\n"));
        assert!(sh.contains("unset ANTHROPIC_AUTH_TOKEN\n"));
        let fish = render(&v, Shell::Fish);
        assert!(fish.contains("set -gx ANTHROPIC_MODEL 'gpt-5.5'\n"));
        assert!(fish.contains("set -e CLAUDE_CODE_USE_BEDROCK\n"));
        let ps = render(&v, Shell::Powershell);
        assert!(ps.contains("$env:ANTHROPIC_API_KEY = 'codex-as-api'\n"));
        assert!(
            ps.contains("Remove-Item Env:CLAUDE_CODE_OAUTH_TOKEN -ErrorAction SilentlyContinue\n")
        );
    }

    #[test]
    fn serve_argv_carries_set_flags_and_keeps_the_key_off_the_command_line() {
        // `serve` as it appears inside `claude`: ServeArgs flattened beside Claude's own.
        let cmd = ServeArgs::augment_args(clap::Command::new("claude")).arg(
            clap::Arg::new("keep-server")
                .long("keep-server")
                .num_args(0),
        );
        let given = [
            "claude",
            "--port",
            "1234",
            "--model",
            "gpt-6-sol",
            "--api-key",
            "sk-secret",
            "--upstream-proxy",
            "http://user:pw@proxy:3128",
            "--cors-allow-origin",
            "http://a.test,http://b.test",
            "--keep-server",
            "--demo",
        ];
        let (argv, env) = serve_argv(&cmd.try_get_matches_from(given).unwrap());
        let argv: Vec<String> = argv.into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            argv,
            [
                "serve",
                "--port",
                "1234",
                "--model",
                "gpt-6-sol",
                "--demo",
                "--cors-allow-origin",
                "http://a.test",
                "--cors-allow-origin",
                "http://b.test",
            ]
        );
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("CODEX_AS_API_UPSTREAM_PROXY", "http://user:pw@proxy:3128"),
                ("CODEX_AS_API_API_KEY", "sk-secret"),
            ]
        );
    }
}
