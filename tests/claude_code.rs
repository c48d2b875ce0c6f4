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
