//! The real Codex CLI (npm `@openai/codex`, tests/e2e/node, installed by tests/run.sh),
//! configured with codex-as-api's `/v1` as a custom Responses provider, run with `codex exec`
//! offline against codex-as-api and the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, codex};

/// Run `codex exec <prompt>` in a fresh CODEX_HOME pointing at `h`; (success, stdout, stderr).
async fn codex_exec(h: &Harness, prompt: &str, files: &[(&str, &str)]) -> (bool, String, String) {
    codex_exec_with(h, prompt, files, "").await
}

/// `codex_exec` with extra lines for the provider's table (e.g. `supports_websockets = true`).
async fn codex_exec_with(
    h: &Harness,
    prompt: &str,
    files: &[(&str, &str)],
    provider_extra: &str,
) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("codex-home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "codex_as_api"
approval_policy = "never"
sandbox_mode = "read-only"

[model_providers.codex_as_api]
name = "codex-as-api"
base_url = "{}/v1"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
{}
"#,
        h.base, provider_extra
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    for (name, text) in files {
        std::fs::write(work.join(name), text).unwrap();
    }
    let mut cmd = tokio::process::Command::new(codex());
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        prompt,
    ])
    .current_dir(&work)
    .stdin(std::process::Stdio::null())
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HOME", dir.path())
    .env("CODEX_HOME", &home)
    .env("RUST_LOG", "error");
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("codex finishes within 180 s")
        .expect("codex starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_completes_through_the_responses_endpoint() {
    let h = Harness::start().await;
    let (ok, stdout, stderr) = codex_exec(&h, "Reply with the single word: codex-hi", &[]).await;
    assert!(ok, "codex exec failed:\nstdout: {stdout}\nstderr: {stderr}");
    // The emulator echoes the prompt: the answer really made the round trip.
    assert!(
        stdout.contains("You said: Reply with the single word: codex-hi"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let up = h.last_upstream();
    assert_eq!(up.body["store"], false);
    assert!(up.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_runs_a_shell_tool_round_trip() {
    let h = Harness::start().await;
    let nonce = format!("nonce-{}", fastrand::u64(..));
    let prompt = r#"EMU:tool:exec_command {"cmd":"cat nonce.txt"}"#;
    let (ok, stdout, stderr) = codex_exec(&h, prompt, &[("nonce.txt", &nonce)]).await;
    assert!(ok, "codex exec failed:\nstdout: {stdout}\nstderr: {stderr}");
    // Only running `cat` could have put the nonce into the final answer.
    assert!(
        stdout.contains("Tool output:") && stdout.contains(&nonce),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let up = h.last_upstream();
    let input = up.body["input"].as_array().unwrap();
    assert!(
        input
            .iter()
            .any(|i| i["type"] == "function_call" && i["name"] == "exec_command")
    );
    assert!(input.iter().any(|i| i["type"] == "function_call_output"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_runs_a_tool_turn_over_the_responses_websocket() {
    let h = Harness::start().await;
    let nonce = format!("nonce-{}", fastrand::u64(..));
    let prompt = r#"EMU:tool:exec_command {"cmd":"cat nonce.txt"}"#;
    let (ok, stdout, stderr) = codex_exec_with(
        &h,
        prompt,
        &[("nonce.txt", &nonce)],
        "supports_websockets = true",
    )
    .await;
    assert!(ok, "codex exec failed:\nstdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("Tool output:") && stdout.contains(&nonce),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // The CLI really talked to us over the WebSocket.
    let health: serde_json::Value = h.get("/health").await.json().await.unwrap();
    assert!(
        health["websocket_sessions"].as_u64().unwrap() >= 1,
        "{health}\nstderr: {stderr}"
    );
    // The tool's output went upstream (as a whole conversation or a continuation).
    let bodies = h.upstream_bodies();
    assert!(
        bodies.iter().any(|b| b["input"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["type"] == "function_call_output"))),
        "{bodies:?}"
    );
}
