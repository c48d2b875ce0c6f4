//! The real Codex CLI (npm `@openai/codex`, tests/e2e/node, installed by tests/run.sh),
//! configured with codex-as-api's `/v1` as a custom Responses provider, run with `codex exec`
//! offline against codex-as-api and the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, codex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_completes_through_the_responses_endpoint() {
    let h = Harness::start().await;
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
"#,
        h.base
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let mut cmd = tokio::process::Command::new(codex());
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "Reply with the single word: codex-hi",
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex exec failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    // The emulator echoes the prompt: the answer really made the round trip.
    assert!(
        stdout.contains("You said: Reply with the single word: codex-hi"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let up = h.last_upstream();
    assert_eq!(up.body["store"], false);
    assert!(up.body["tools"].as_array().is_some_and(|t| !t.is_empty()));
}
