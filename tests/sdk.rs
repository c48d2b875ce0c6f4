//! The official Python SDKs (OpenAI, Anthropic) against the real server and the emulator.
//! The venv comes from tests/run.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, python};

async fn pytest(file: &str) {
    let h = Harness::start().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tokio::process::Command::new(python())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            &format!("{root}/tests/e2e/{file}"),
        ])
        .env("CODEX_AS_API_BASE_URL", &h.base)
        .current_dir(root)
        .output()
        .await
        .expect("python runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "pytest {file} failed:\n{text}");
    assert!(text.contains(" passed"), "pytest ran no test:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_suite_passes() {
    pytest("test_openai_sdk.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_suite_passes() {
    pytest("test_anthropic_sdk.py").await;
}
