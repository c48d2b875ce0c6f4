//! The real Claude Code CLI (tests/e2e/node, installed by tests/run.sh), run
//! non-interactively and offline against codex-as-api and the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Harness, claude};
use serde_json::Value;

async fn run_claude(
    h: &Harness,
    home: &Path,
    work: &Path,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(claude());
    cmd.args(args)
        .current_dir(work)
        .stdin(std::process::Stdio::null())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("ANTHROPIC_BASE_URL", &h.base)
        .env("ANTHROPIC_API_KEY", "sk-local-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_BUG_COMMAND", "1")
        .env("CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY", "1")
        .env("IS_SANDBOX", "1")
        .env("ANTHROPIC_MODEL", "gpt-5.5")
        .env("ANTHROPIC_DEFAULT_OPUS_MODEL", "gpt-5.5")
        .env("ANTHROPIC_DEFAULT_SONNET_MODEL", "gpt-5.5")
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", "gpt-5.5")
        .env("ANTHROPIC_SMALL_FAST_MODEL", "gpt-5.5")
        .env("CLAUDE_CODE_MAX_RETRIES", "1");
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("claude finishes within 180 s")
        .expect("claude starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let home = dir.join("home");
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "bypassPermissionsModeAccepted": true,
        "projects": {work.to_string_lossy(): {"hasTrustDialogAccepted": true}}
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).unwrap();
    (home, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_completes_a_plain_turn() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (home, work) = setup(dir.path());
    let (ok, out, err) = run_claude(
        &h,
        &home,
        &work,
        &[
            "-p",
            "Reply with the single word: hi",
            "--output-format",
            "json",
            "--model",
            "gpt-5.5",
        ],
    )
    .await;
    assert!(ok, "claude failed:\nstdout: {out}\nstderr: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["is_error"], false, "{v}");
    assert_eq!(v["subtype"], "success");
    assert!(
        v["result"]
            .as_str()
            .unwrap()
            .contains("Reply with the single word: hi"),
        "{v}"
    );
    // Claude Code really went through /v1/messages with its own request shape.
    let up = h.last_upstream().body;
    assert!(
        up["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "Bash")
    );
    let header = h.last_upstream().headers;
    assert!(header.iter().any(|(k, _)| k == "session-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_a_bash_tool_round_trip() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (home, work) = setup(dir.path());
    let nonce = format!("nonce-{}", fastrand::u64(..));
    std::fs::write(work.join("nonce.txt"), &nonce).unwrap();
    let prompt = r#"EMU:tool:Bash {"command":"cat nonce.txt","description":"Print the nonce"}"#;
    let (ok, out, err) = run_claude(
        &h,
        &home,
        &work,
        &[
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--allowedTools",
            "Bash",
            "--model",
            "gpt-5.5",
        ],
    )
    .await;
    assert!(ok, "claude failed:\nstdout: {out}\nstderr: {err}");
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let result = lines
        .iter()
        .find(|l| l["type"] == "result")
        .expect("a result line");
    assert_eq!(result["is_error"], false, "{result}");
    // The answer depends on the tool really running: only `cat` could know the nonce.
    assert_eq!(
        result["result"].as_str().unwrap().trim(),
        format!("Tool output: {nonce}"),
        "{out}"
    );
    let tool_used = lines.iter().any(|l| {
        l["type"] == "assistant"
            && l["message"]["content"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|b| b["type"] == "tool_use" && b["name"] == "Bash")
            })
    });
    assert!(tool_used, "{out}");
    // The turn after the tool ran went upstream as a continuation over the WebSocket:
    // only the tool's result, chained to the first answer.
    let stats = h.emu.stats();
    assert!(stats.ws_continuations >= 1, "{stats:?}");
    let chained = h
        .emu
        .requests()
        .into_iter()
        .filter_map(|r| r.frame)
        .find(|f| f.get("previous_response_id").is_some())
        .expect("a chained frame");
    let input = chained["input"].as_array().unwrap();
    assert!(
        input.iter().all(|i| i["type"] == "function_call_output"),
        "{chained}"
    );
}

/// Runs a command in a pseudo-terminal (40×120), relaying its output to stdout and stdin to
/// it; exits with the command's status.
const PTY_RELAY: &str = r#"
import os, pty, sys, select, fcntl, termios, struct, signal
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
os.kill(pid, signal.SIGWINCH)
inp = sys.stdin.fileno()
fds = [fd, inp]
while True:
    r, _, _ = select.select(fds, [], [])
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        os.write(1, data)
    if inp in r:
        data = os.read(inp, 65536)
        if data:
            os.write(fd, data)
        else:
            fds.remove(inp)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// The screen's text so far: escape sequences dropped, and whitespace too (Ink moves the
/// cursor instead of writing spaces), so phrases are searched without their spaces.
fn screen_text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                Some('(' | ')') => {
                    chars.next();
                }
                _ => {}
            }
        } else if !c.is_whitespace() && !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn squeeze(phrase: &str) -> String {
    phrase.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Reads the terminal until `phrase` shows (bounded), returning the screen text so far.
async fn wait_for_screen(
    out: &mut tokio::process::ChildStdout,
    raw: &mut Vec<u8>,
    phrase: &str,
    limit: Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let want = squeeze(phrase);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = screen_text(raw);
        if text.contains(&want) {
            return text;
        }
        let mut buf = [0u8; 8192];
        match tokio::time::timeout_at(deadline, out.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("the terminal closed before {phrase:?} showed:\n{text}"),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("reading the terminal: {e}"),
            Err(_) => panic!("{phrase:?} did not show within {limit:?}; the screen:\n{text}"),
        }
    }
}

/// A first run in a fresh HOME, through `codex-as-api claude` under a pseudo-terminal: the
/// first screen is Claude Code's prompt (no onboarding, theme or "use this API key?"
/// question), and the server the launcher started stops when Claude Code exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_interactive_run_opens_on_the_prompt() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Only the folder's trust, the user's own answer per folder, is there beforehand.
    std::fs::write(
        home.join(".claude.json"),
        serde_json::json!({"projects": {work.to_string_lossy(): {"hasTrustDialogAccepted": true}}})
            .to_string(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", PTY_RELAY, env!("CARGO_BIN_EXE_codex-as-api")])
        .args(["claude", "--demo", "--port", &port.to_string()])
        .current_dir(&work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TERM", "xterm-256color")
        .env("CODEX_AS_API_CLAUDE_BIN", claude())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the pty relay");
    let mut out = child.stdout.take().unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut raw = Vec::new();
    let limit = Duration::from_secs(90);
    // The prompt's status line.
    let screen = wait_for_screen(&mut out, &mut raw, "shift+tab to cycle", limit).await;
    for question in [
        "Do you want to use this API key",
        "Choose the text style",
        "Let's get started",
        "Unable to connect to Anthropic services",
        "Select login method",
        "Do you trust the files in this folder",
    ] {
        assert!(
            !screen.contains(&squeeze(question)),
            "{question:?} was asked:\n{screen}"
        );
    }
    assert!(screen.contains(&squeeze("Claude Code")), "{screen}");
    // Ctrl-C twice quits Claude Code.
    input.write_all(b"\x03").await.unwrap();
    wait_for_screen(&mut out, &mut raw, "Press Ctrl-C again to exit", limit).await;
    input.write_all(b"\x03").await.unwrap();
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .expect("Claude Code exits after Ctrl-C twice")
        .unwrap();
    assert!(status.success(), "{status}: {}", screen_text(&raw));
    // The launcher stopped the server it started.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens"
    );
    // The first-run answers are recorded; the folder's trust kept.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(home.join(".claude.json")).unwrap()).unwrap();
    assert_eq!(cfg["hasCompletedOnboarding"], true, "{cfg}");
    assert_eq!(
        cfg["customApiKeyResponses"]["approved"],
        serde_json::json!(["codex-as-api"])
    );
    assert_eq!(
        cfg["projects"][work.to_string_lossy().as_ref()]["hasTrustDialogAccepted"],
        true
    );
}
