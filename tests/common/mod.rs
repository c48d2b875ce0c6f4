//! Shared harness for the integration tests: the emulator and the real server over loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod raw;

use std::path::PathBuf;

use codex_as_api::Server;
use codex_as_api::config::Config;
use codex_as_api::emulator::{Emulator, EmulatorConfig, TestCredentials};
use serde_json::Value;

pub struct Harness {
    pub emu: Emulator,
    pub server: Server,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub creds: TestCredentials,
    pub http: reqwest::Client,
}

impl Harness {
    /// Emulator + credentials valid for an hour + server with test defaults.
    pub async fn start() -> Harness {
        Self::with(|_| {}).await
    }

    /// Like `start`, with a chance to adjust the server config.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Harness {
        Self::build(EmulatorConfig::default(), 3600, adjust).await
    }

    pub async fn build(
        emu_cfg: EmulatorConfig,
        access_ttl: i64,
        adjust: impl FnOnce(&mut Config),
    ) -> Harness {
        let emu = Emulator::start(emu_cfg).await.expect("emulator starts");
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth.json");
        let creds = emu.issue_credentials(access_ttl);
        creds.write_auth_json(&auth).unwrap();
        let mut config = Config::for_tests(&emu.base_url(), auth);
        config.token_url = emu.token_url();
        config.codex_home = dir.path().to_path_buf();
        adjust(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let base = format!("http://{}", server.addr());
        Harness {
            emu,
            server,
            base,
            dir,
            creds,
            http: reqwest::Client::new(),
        }
    }

    pub fn auth_path(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut rb = self.http.post(self.url(path)).json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self.http.get(self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// The upstream bodies the emulator received, oldest first.
    pub fn upstream_bodies(&self) -> Vec<Value> {
        self.emu.requests().into_iter().map(|r| r.body).collect()
    }

    pub fn last_upstream(&self) -> codex_as_api::emulator::RecordedRequest {
        self.emu
            .requests()
            .pop()
            .expect("an upstream request was made")
    }
}

/// The emulator over TLS (h2 and HTTP/1.1 by ALPN, its test CA written to `dir`), credentials
/// valid for `access_ttl` seconds, and a server config that reaches and trusts it.
pub async fn tls_emulator(
    cfg: EmulatorConfig,
    dir: &std::path::Path,
    access_ttl: i64,
) -> (Emulator, Config) {
    let emu = Emulator::start(EmulatorConfig { tls: true, ..cfg })
        .await
        .expect("emulator starts");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let auth = dir.join("auth.json");
    emu.issue_credentials(access_ttl)
        .write_auth_json(&auth)
        .unwrap();
    let mut config = Config::for_tests(&emu.base_url(), auth);
    config.ca_file = Some(ca);
    config.token_url = emu.token_url();
    (emu, config)
}

/// `error.message` of an OpenAI- or Anthropic-shaped error body.
pub fn error_message(v: &Value) -> &str {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {v}"))
}

/// One SSE frame: optional `event:` name and the `data:` payload.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {}", self.data))
    }
}

/// Parse a whole SSE body (comments dropped).
pub fn frames(body: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim_start().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push(Frame {
                event,
                data: data.join("\n"),
            });
        }
    }
    out
}

/// The Python interpreter of the SDK venv (set up by tests/run.sh).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CODEX_AS_API_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "the SDK venv is missing: run tests/run.sh (it creates .venv with the openai and anthropic SDKs)"
    );
    p
}

/// The Claude Code CLI (installed by tests/run.sh).
pub fn claude() -> PathBuf {
    if let Some(p) = std::env::var_os("CODEX_AS_API_TEST_CLAUDE") {
        return PathBuf::from(p);
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/node/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "Claude Code is missing: run tests/run.sh (it runs npm ci in tests/e2e/node)"
    );
    p
}

/// The Codex CLI (installed by tests/run.sh).
pub fn codex() -> PathBuf {
    if let Some(p) = std::env::var_os("CODEX_AS_API_TEST_CODEX") {
        return PathBuf::from(p);
    }
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/node/node_modules/.bin/codex");
    assert!(
        p.exists(),
        "the Codex CLI is missing: run tests/run.sh (it runs npm ci in tests/e2e/node)"
    );
    p
}

/// Waits (bounded) until `cond` holds, re-checking as the runtime makes progress.
pub async fn until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Writes `bytes` one at a time, `every` apart, until the write fails; never returns
/// earlier (select it against a read).
pub async fn trickle(
    wr: &mut (impl tokio::io::AsyncWriteExt + Unpin),
    bytes: &[u8],
    every: std::time::Duration,
) {
    for b in bytes {
        if wr.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    std::future::pending::<()>().await;
}
