//! The real `codex-as-api` binary as a process: signals and graceful shutdown, bind safety,
//! two processes sharing one auth.json, a crash in the middle of a refresh, and a search of
//! every log line at trace level for token strings. The backend is the emulator, in this
//! test process, over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_as_api::emulator::{Emulator, EmulatorConfig, TestCredentials};
use common::frames;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_codex-as-api");

/// One running `codex-as-api serve`, its stderr captured line by line.
struct Proc {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn command(emu: &Emulator, home: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("CODEX_HOME", home)
            .env("CODEX_AS_API_UPSTREAM_URL", emu.base_url())
            .env("CODEX_AS_API_TOKEN_URL", emu.token_url())
            .env("CODEX_AS_API_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns and waits for the "listening on" line.
    fn start(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no `listening on` line; stderr:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        Proc { child, addr, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits for the exit (at most `limit`), killing the process if it overstays.
    async fn wait(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("still running after {limit:?}; stderr:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).await.unwrap()
}

fn write_creds(emu: &Emulator, dir: &Path, ttl: i64) -> (PathBuf, TestCredentials) {
    let auth = dir.join("auth.json");
    let creds = emu.issue_credentials(ttl);
    creds.write_auth_json(&auth).unwrap();
    (auth, creds)
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-5.5", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

fn msg(text: &str, stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_auth_json_never_redeem_the_same_refresh_token() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (auth, creds) = write_creds(&emu, dir.path(), -60);
    let a = Proc::start(Proc::command(&emu, dir.path()));
    let b = Proc::start(Proc::command(&emu, dir.path()));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 { a.url("") } else { b.url("") };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat(&format!("hello {i}"), false))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}\nA:\n{}\nB:\n{}", a.log(), b.log());
    }
    assert_eq!(
        emu.stats().token_calls,
        1,
        "one process refreshed; the other re-read auth.json under the lock and adopted it"
    );
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    assert_ne!(saved["tokens"]["refresh_token"], json!(creds.refresh_token));
    // Both keep working on the rotated credentials.
    for p in [&a, &b] {
        let r = http
            .post(p.url("/v1/messages"))
            .json(&msg("again", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(emu.stats().token_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_accepting_let_the_in_flight_stream_finish_and_exit_0() {
    let emu = emulator().await;
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        write_creds(&emu, dir.path(), 3600);
        let mut p = Proc::start(Proc::command(&emu, dir.path()));
        let http = reqwest::Client::new();
        let mut resp = http
            .post(p.url("/v1/chat/completions"))
            .json(&chat("EMU:stall:1500 finish me", true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = String::from_utf8(resp.chunk().await.unwrap().unwrap().to_vec()).unwrap();
        p.signal(sig);
        // New connections are refused soon after the signal.
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(&p.addr).await.is_err() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "still accepting after {sig}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The in-flight stream runs to its end.
        while let Some(chunk) = resp.chunk().await.unwrap() {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
        let fs = frames(&body);
        assert_eq!(fs.last().unwrap().data, "[DONE]", "{body}");
        assert!(!body.contains("\"error\""), "{body}");
        let (status, _) = p.wait(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "exit 0 after {sig}: {status:?}\n{}",
            p.log()
        );
        assert!(p.log().contains("shutting down"), "{}", p.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drain_is_bounded_by_the_drain_time() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(&emu, dir.path(), 3600);
    let mut cmd = Proc::command(&emu, dir.path());
    cmd.env("CODEX_AS_API_DRAIN_SECS", "1");
    let mut p = Proc::start(cmd);
    let http = reqwest::Client::new();
    let mut resp = http
        .post(p.url("/v1/messages"))
        .json(&msg("EMU:stall:60000", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.chunk().await.unwrap();
    p.signal("-TERM");
    let (status, took) = p.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", p.log());
    assert!(
        took < Duration::from_secs(5),
        "a stuck stream does not hold shutdown past the drain time ({took:?})"
    );
    assert!(p.log().contains("drain time over"), "{}", p.log());
}

#[tokio::test]
async fn non_loopback_bind_without_a_key_refuses_to_start_saying_what_to_set() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(&emu, dir.path(), 3600);
    let out = Proc::command(&emu, dir.path())
        .args(["--host", "0.0.0.0"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to bind 0.0.0.0"), "{err}");
    assert!(
        err.contains("CODEX_AS_API_API_KEY"),
        "says what to set: {err}"
    );
    assert!(err.contains("--insecure-no-auth"), "{err}");
}

#[tokio::test]
async fn insecure_no_auth_overrides_the_bind_check_with_a_loud_warning() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(&emu, dir.path(), 3600);
    let mut cmd = Proc::command(&emu, dir.path());
    cmd.args(["--host", "0.0.0.0", "--insecure-no-auth"]);
    let p = Proc::start(cmd);
    let log = p.log();
    let warn = log
        .lines()
        .find(|l| l.contains("WITHOUT an API key"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(warn.contains("WARN"), "{warn}");
    assert!(p.addr.starts_with("0.0.0.0:"), "{}", p.addr);
}

#[tokio::test]
async fn default_bind_is_loopback() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    write_creds(&emu, dir.path(), 3600);
    let p = Proc::start(Proc::command(&emu, dir.path()));
    assert!(p.addr.starts_with("127.0.0.1:"), "{}", p.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_refresh_always_leaves_a_valid_auth_json() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    // What a crash between write and rename leaves behind: a partial temp file.
    std::fs::write(
        dir.path().join(".auth.json.tmp-00000000deadbeef"),
        b"{\"tokens\": {\"access_tok",
    )
    .unwrap();
    let http = reqwest::Client::new();
    for i in 0..12u64 {
        let creds = emu.issue_credentials(-60);
        creds.write_auth_json(&auth).unwrap();
        let mut p = Proc::start(Proc::command(&emu, dir.path()));
        let url = p.url("/v1/chat/completions");
        let req = http.post(url).json(&chat("refresh me", false)).send();
        // Kill at a different moment of the refresh each round: before, during, after.
        let _ = tokio::time::timeout(Duration::from_millis(i * 7), req).await;
        let _ = p.child.kill();
        let _ = p.child.wait();
        let text = std::fs::read_to_string(&auth).unwrap();
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {i}: auth.json is not valid JSON ({e}): {text}"));
        for k in ["access_token", "refresh_token", "id_token"] {
            assert!(
                doc["tokens"][k].is_string(),
                "round {i}: {k} missing: {doc}"
            );
        }
    }
    // And the file still works for a clean run.
    emu.issue_credentials(-60).write_auth_json(&auth).unwrap();
    let p = Proc::start(Proc::command(&emu, dir.path()));
    let r = http
        .post(p.url("/v1/chat/completions"))
        .json(&chat("after the crashes", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_logs_at_trace_level() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (auth, creds) = write_creds(&emu, dir.path(), -60);
    let key = "sk-local-key-never-logged-4242";
    let mut cmd = Proc::command(&emu, dir.path());
    cmd.env("CODEX_AS_API_API_KEY", key)
        .args(["--log-level", "trace"]);
    let mut p = Proc::start(cmd);
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {key}");
    let send = |path: &str, body: Value, auth: Option<&str>| {
        let mut rb = http.post(p.url(path)).json(&body);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    // Refresh (expired token), streams in both protocols, errors, a 401 that forces a
    // reload and a second refresh, a wrong client key, health.
    let r = send("/v1/chat/completions", chat("first", false), Some(&bearer))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(
        "/v1/chat/completions",
        chat("streamed", true),
        Some(&bearer),
    )
    .await
    .unwrap();
    assert!(r.text().await.unwrap().ends_with("[DONE]\n\n"));
    let r = send("/v1/messages", msg("EMU:reasoning", true), Some(&bearer))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let r = send(
        "/v1/chat/completions",
        chat("EMU:500", false),
        Some(&bearer),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 500);
    let mut answers = r.text().await.unwrap();
    emu.revoke_access_tokens();
    let r = send("/v1/messages", msg("after revoke", false), Some(&bearer))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(
        "/v1/chat/completions",
        chat("EMU:401", false),
        Some(&bearer),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    answers.push_str(&r.text().await.unwrap());
    let r = send("/v1/messages", msg("EMU:401", false), Some(&bearer))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    answers.push_str(&r.text().await.unwrap());
    let r = send(
        "/v1/chat/completions",
        chat("x", false),
        Some("Bearer wrong"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    answers.push_str(&r.text().await.unwrap());
    let health = http
        .get(p.url("/health"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(emu.stats().token_calls >= 2, "refreshed at least twice");
    p.signal("-TERM");
    let (status, _) = p.wait(Duration::from_secs(10)).await;
    assert!(status.success());

    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&auth).unwrap()).unwrap();
    let mut secrets: Vec<String> = vec![
        creds.access_token.clone(),
        creds.refresh_token.clone(),
        creds.id_token.clone(),
        key.to_owned(),
    ];
    for k in ["access_token", "refresh_token", "id_token"] {
        secrets.push(saved["tokens"][k].as_str().unwrap().to_owned());
    }
    let log = p.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() > 50 && lines.iter().any(|l| l.contains("TRACE")),
        "trace logging was on: {} lines",
        lines.len()
    );
    for (n, line) in lines.iter().enumerate() {
        for s in &secrets {
            // Any 16-character window of a secret would be a leak, not only the whole string.
            let start = s.len().saturating_sub(16) / 2;
            let probe = &s[start..(start + 16).min(s.len())];
            assert!(!line.contains(probe), "line {n} leaks a secret: {line}");
        }
        assert!(
            !line.contains("eyJ"),
            "line {n} holds something that looks like a JWT: {line}"
        );
    }
    for s in &secrets {
        assert!(!health.contains(s.as_str()), "/health leaks a secret");
        assert!(
            !answers.contains(s.as_str()),
            "an error answer leaks a secret"
        );
    }
    assert!(!answers.contains("eyJ"), "{answers}");
}
