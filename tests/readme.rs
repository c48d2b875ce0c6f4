//! Every `curl` example of README.md, run as written against `codex-as-api --demo`: each
//! answers 2xx (or the status its comment documents, e.g. "# always a 404") with the
//! documented shape. The examples are read from README.md when the test runs, so an edited
//! README is what gets tested.
//!
//! Where a private network namespace is available (`unshare -rn`), the test re-runs itself
//! inside one, so the server listens on the README's own `localhost:18080` with no other
//! process on the machine able to hold that port; elsewhere the server takes a free port
//! and `localhost:18080` is substituted (the only change ever made to an example).
//!
//! The commands run in order in one `sh` script (variables such as `$id` carry over);
//! between two commands the script prints a separator on stdout and stderr, and a
//! `$CURL_HOME/.curlrc` makes every curl report its status on stderr (`%{stderr}`), so
//! stdout stays exactly what the example prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_codex-as-api");
const README_ADDR: &str = "localhost:18080";
/// Set in the re-run inside the private network namespace.
const INSIDE: &str = "CODEX_AS_API_README_NETNS";
const SEP: &str = "@@readme-example-end@@";
const STATUS: &str = "@@status";

/// One example: its lines as written (continuations joined by the shell, not by us).
#[derive(Debug)]
struct Example {
    text: String,
    line: usize,
}

/// The `curl` commands for this server in README.md's shell blocks, in order.
fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut current: Option<Example> = None;
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
            current = None;
            continue;
        }
        if !in_shell {
            continue;
        }
        let cmd = match current.take() {
            Some(mut c) => {
                c.text.push('\n');
                c.text.push_str(line);
                c
            }
            None => Example {
                text: line.to_owned(),
                line: i + 1,
            },
        };
        if line.trim_end().ends_with('\\') {
            current = Some(cmd);
        } else if cmd.text.contains("curl ") && cmd.text.contains(README_ADDR) {
            out.push(cmd);
        }
    }
    out
}

/// The status an example's trailing comment documents (`# … 404 …`), else any 2xx.
fn documented_status(text: &str) -> Option<u16> {
    let last = text.lines().last().unwrap_or("");
    let comment = last.split_once(" # ")?.1;
    comment
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse().ok())
        .find(|s| (400..600).contains(s))
}

/// Method and path of the example's outermost request (the last curl on its first line
/// group naming this server), with `$variables` left as written.
fn request_of(text: &str) -> (String, String) {
    let flat = text.replace("\\\n", " ");
    let curl = flat.rsplit("curl ").next().unwrap_or("");
    let at = curl
        .find(README_ADDR)
        .expect("the example names the server");
    let path: String = curl[at + README_ADDR.len()..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != '"' && *c != ')')
        .collect();
    let words: Vec<&str> = curl.split_whitespace().collect();
    let method = if let Some(i) = words.iter().position(|w| *w == "-X") {
        words.get(i + 1).copied().unwrap_or("GET").to_owned()
    } else if words
        .iter()
        .any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('I'))
    {
        "HEAD".to_owned()
    } else if words.iter().any(|w| *w == "-d" || w.starts_with("--data")) {
        "POST".to_owned()
    } else {
        "GET".to_owned()
    };
    (method, path)
}

fn json(out: &str, what: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
}

fn has(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(f).is_some(), "{what}: no `{f}` in {v}");
    }
}

/// `data:` payloads of an SSE answer (at least one, each JSON or `[DONE]`).
fn sse(out: &str, what: &str) -> Vec<String> {
    let data: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    assert!(!data.is_empty(), "{what}: no `data:` lines: {out}");
    for d in &data {
        assert!(
            d == "[DONE]" || serde_json::from_str::<Value>(d).is_ok(),
            "{what}: bad data line {d}"
        );
    }
    data
}

/// The documented shape of each endpoint's answer (README "Endpoints").
fn check_shape(ex: &Example, content_type: &str, out: &str) {
    let (method, path) = request_of(&ex.text);
    let what = format!("README.md:{} ({method} {path})", ex.line);
    let stream = ex.text.contains(r#""stream":true"#);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if ex
        .text
        .trim_start()
        .starts_with(|c: char| c.is_ascii_alphabetic())
        && ex
            .text
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains("=$("))
    {
        // An assignment (`id=$(curl … | jq -r .id)`): it prints nothing; the next examples
        // use what it kept.
        assert!(out.trim().is_empty(), "{what}: {out}");
        return;
    }
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["health"]) => {
            let v = json(out, &what);
            has(
                &v,
                &[
                    "status",
                    "version",
                    "model",
                    "auth_available",
                    "demo",
                    "accounts",
                ],
                &what,
            );
            assert_eq!(v["status"], "ok", "{what}");
            assert_eq!(v["demo"], true, "{what}");
        }
        ("POST", ["v1", "chat", "completions"]) if stream => {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{what}: {content_type}"
            );
            let data = sse(out, &what);
            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{what}");
            let first: Value = serde_json::from_str(&data[0]).unwrap();
            assert_eq!(first["object"], "chat.completion.chunk", "{what}");
        }
        ("POST", ["v1", "chat", "completions"]) => {
            let v = json(out, &what);
            has(
                &v,
                &["id", "object", "created", "model", "choices", "usage"],
                &what,
            );
            assert_eq!(v["object"], "chat.completion", "{what}");
            assert!(
                v["choices"][0]["message"]["content"].is_string(),
                "{what}: {v}"
            );
        }
        ("POST", ["v1", "responses"]) if stream => {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{what}: {content_type}"
            );
            assert!(out.contains("event: response.completed"), "{what}: {out}");
            sse(out, &what);
        }
        ("POST", ["v1", "responses"]) => {
            let v = json(out, &what);
            has(
                &v,
                &[
                    "id",
                    "object",
                    "created_at",
                    "status",
                    "model",
                    "output",
                    "usage",
                ],
                &what,
            );
            assert_eq!(v["object"], "response", "{what}");
            assert_eq!(v["status"], "completed", "{what}");
        }
        ("GET", ["v1", "responses", _]) => {
            let v = json(out, &what);
            assert_eq!(v["error"]["code"], "not_found", "{what}: {v}");
            assert!(v["error"]["message"].is_string(), "{what}: {v}");
        }
        ("DELETE", ["v1", "responses", _]) => {
            let v = json(out, &what);
            has(&v, &["id"], &what);
            assert_eq!(v["object"], "response.deleted", "{what}");
            assert_eq!(v["deleted"], true, "{what}");
        }
        ("POST", ["v1", "messages"]) => {
            let v = json(out, &what);
            has(
                &v,
                &[
                    "id",
                    "type",
                    "role",
                    "model",
                    "content",
                    "stop_reason",
                    "usage",
                ],
                &what,
            );
            assert_eq!(v["type"], "message", "{what}");
        }
        ("POST", ["v1", "messages", "count_tokens"]) => {
            let v = json(out, &what);
            has(
                &v,
                &["input_tokens", "context_window", "auto_compact_token_limit"],
                &what,
            );
            assert!(
                v["input_tokens"].as_u64().is_some_and(|n| n > 0),
                "{what}: {v}"
            );
        }
        ("POST", ["v1", "compact"]) => {
            let v = json(out, &what);
            has(
                &v,
                &["id", "object", "created_at", "model", "output", "usage"],
                &what,
            );
            assert_eq!(v["object"], "response.compaction", "{what}");
            let last = v["output"].as_array().and_then(|o| o.last()).cloned();
            assert_eq!(
                last.unwrap_or_default()["type"],
                "compaction",
                "{what}: {v}"
            );
        }
        ("POST", ["v1", "messages", "compact"]) => {
            let v = json(out, &what);
            assert_eq!(v["type"], "message", "{what}");
            assert_eq!(v["role"], "assistant", "{what}");
            assert_eq!(v["stop_reason"], "compaction", "{what}");
            assert_eq!(v["content"][0]["type"], "compaction", "{what}: {v}");
        }
        ("POST", ["v1", "images", "generations"]) => {
            let v = json(out, &what);
            has(&v, &["created", "data", "usage"], &what);
            assert!(v["data"][0]["b64_json"].is_string(), "{what}: {v}");
            assert!(v["data"][0].get("revised_prompt").is_some(), "{what}: {v}");
        }
        ("POST", ["v1", "inspect"]) => {
            let v = json(out, &what);
            has(&v, &["id", "object", "model", "text", "usage"], &what);
            assert_eq!(v["object"], "inspect", "{what}");
        }
        ("GET", ["v1", "models"]) => {
            let v = json(out, &what);
            assert_eq!(v["object"], "list", "{what}");
            assert!(v["data"][0]["context_window"].is_u64(), "{what}: {v}");
        }
        ("GET", ["v1", "models", id]) if ex.text.contains("anthropic-version") => {
            let v = json(out, &what);
            assert_eq!(v["type"], "model", "{what}");
            assert_eq!(v["id"], *id, "{what}");
            assert!(v["max_input_tokens"].is_u64(), "{what}: {v}");
        }
        ("GET", ["v1", "models", id]) => {
            let v = json(out, &what);
            assert_eq!(v["object"], "model", "{what}");
            assert_eq!(v["id"], *id, "{what}");
        }
        ("GET", ["usage"]) => {
            let v = json(out, &what);
            has(
                &v,
                &[
                    "source",
                    "plan",
                    "primary",
                    "secondary",
                    "credits",
                    "headers",
                    "account",
                    "accounts",
                ],
                &what,
            );
        }
        ("HEAD", ["api", "hello"]) => {
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
        }
        _ => panic!(
            "{what}: no documented shape is known for this example; add its check to tests/readme.rs"
        ),
    }
}

/// A `codex-as-api --demo` process, stopped on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(home: &Path, port: Option<u16>) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("--demo")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"))
        .env("CODEX_AS_API_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on http://".len()..];
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(Ok(addr));
            }
            log.push(line);
        }
        let _ = tx.send(Err(log.join("\n")));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(addr)) => Server { child, addr },
        Ok(Err(log)) => panic!("the server exited before listening:\n{log}"),
        Err(_) => {
            let _ = child.kill();
            panic!("no `listening on` line within 30 s")
        }
    }
}

/// Run every example against a fresh `--demo` server (`port: None` = the README's port).
fn run_examples(port: Option<u16>) -> usize {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let list = examples(&readme);
    assert!(
        list.len() >= 15,
        "README.md has its curl examples: {list:#?}"
    );
    let home = tempfile::tempdir().unwrap();
    let server = start_server(home.path(), port);
    let target = match port {
        None => {
            assert_eq!(server.addr, "127.0.0.1:18080", "the README's address");
            README_ADDR.to_owned()
        }
        Some(p) => format!("127.0.0.1:{p}"),
    };
    std::fs::write(
        home.path().join(".curlrc"),
        format!("write-out = \"%{{stderr}}{STATUS} %{{http_code}} %{{content_type}}\\n\"\n"),
    )
    .unwrap();
    let mut script = String::from("set -u\n");
    for ex in &list {
        script.push_str(&ex.text.replace(README_ADDR, &target));
        script.push_str(&format!("\nprintf '\\n{SEP}\\n'; printf '{SEP}\\n' >&2\n"));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CURL_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let outs: Vec<&str> = stdout.split(&format!("\n{SEP}\n")).collect();
    let errs: Vec<&str> = stderr.split(&format!("{SEP}\n")).collect();
    assert!(
        outs.len() > list.len() && errs.len() > list.len(),
        "every example ran to its end:\nstdout: {stdout}\nstderr: {stderr}"
    );
    for (i, ex) in list.iter().enumerate() {
        let what = format!("README.md:{}: {}", ex.line, ex.text);
        // The outermost request is the last curl to finish.
        let (status, content_type) = errs[i]
            .lines()
            .rev()
            .filter_map(|l| l.strip_prefix(STATUS))
            .map(|l| {
                let mut w = l.split_whitespace();
                let status: u16 = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                (status, w.next().unwrap_or("").to_owned())
            })
            .next()
            .unwrap_or_else(|| panic!("{what}: curl reported no status: {}", errs[i]));
        match documented_status(&ex.text) {
            Some(want) => assert_eq!(status, want, "{what}\n{}", outs[i]),
            None => assert!(
                (200..300).contains(&status),
                "{what}: status {status}\n{}\n{}",
                outs[i],
                errs[i]
            ),
        }
        check_shape(ex, &content_type, outs[i]);
    }
    drop(server);
    list.len()
}

/// `unshare -rn` works here and can bring the namespace's loopback up.
fn private_netns() -> bool {
    Command::new("unshare")
        .args(["-rn", "--", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn readme_curl_examples_answer_as_documented() {
    if std::env::var_os(INSIDE).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success(), "loopback up in the private namespace");
        let n = run_examples(None);
        println!("README examples checked on {README_ADDR}: {n}");
        return;
    }
    if private_netns() {
        let out = Command::new("unshare")
            .args(["-rn", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "readme_curl_examples_answer_as_documented",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSIDE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("README examples checked on"),
            "inside the private network namespace:\n{stdout}\n{stderr}"
        );
        println!("{stdout}");
        return;
    }
    eprintln!(
        "no private network namespace (unshare -rn): the server takes a free port in place of {README_ADDR}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    run_examples(Some(port));
}

#[test]
fn examples_are_found_with_their_continuations_and_documented_statuses() {
    let md = "text\n```sh\ncurl -s localhost:18080/health\n# comment\ncurl -s localhost:18080/v1/x -H 'a: b' \\\n  -d '{}'\ncurl -s localhost:18080/v1/responses/$id   # always a 404 that says why\ncargo run\n```\n```json\ncurl localhost:18080/no\n```\n";
    let ex = examples(md);
    assert_eq!(ex.len(), 3, "{ex:#?}");
    assert_eq!(
        ex[1].text,
        "curl -s localhost:18080/v1/x -H 'a: b' \\\n  -d '{}'"
    );
    assert_eq!(ex[1].line, 5);
    assert_eq!(request_of(&ex[1].text), ("POST".into(), "/v1/x".into()));
    assert_eq!(documented_status(&ex[2].text), Some(404));
    assert_eq!(documented_status(&ex[0].text), None);
    assert_eq!(
        request_of("id=$(curl -s localhost:18080/v1/responses -d '{}' | jq -r .id)"),
        ("POST".into(), "/v1/responses".into())
    );
    assert_eq!(
        request_of("curl -s -X DELETE localhost:18080/v1/responses/$id"),
        ("DELETE".into(), "/v1/responses/$id".into())
    );
    assert_eq!(request_of("curl -sI localhost:18080/api/hello").0, "HEAD");
}
