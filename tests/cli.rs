//! The `codex-as-api` binary as a user runs it: `login` (both flows through the emulator's
//! OAuth endpoints), `usage`, `env`, `claude` (with a fake Claude Code that records its
//! environment), request logs, `--help`/`--version` and completions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codex_as_api::emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_codex-as-api");

/// The binary with an environment that cannot reach a real account or config.
fn bin(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"))
        .kill_on_drop(true);
    c
}

fn std_bin(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"));
    c
}

async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut Lines<R>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a line within 20 s")
        .expect("readable")
        .expect("not at end of output")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig {
        device_poll_interval_secs: 1,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

async fn finish(mut child: Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the command finishes")
        .unwrap()
}

fn write_creds(emu: &Emulator, home: &Path, ttl: i64) {
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    emu.issue_credentials(ttl)
        .write_auth_json(&home.join(".codex/auth.json"))
        .unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// auth.json as `login` must write it (Codex CLI format, 0600).
fn assert_codex_auth_json(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let doc = read_json(path);
    assert_eq!(doc["auth_mode"], "chatgpt");
    assert_eq!(doc["OPENAI_API_KEY"], Value::Null);
    for k in ["id_token", "access_token", "refresh_token", "account_id"] {
        assert!(
            doc["tokens"][k].as_str().is_some_and(|s| !s.is_empty()),
            "tokens.{k} in {doc}"
        );
    }
    assert!(doc["last_refresh"].as_str().unwrap().ends_with('Z'));
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// `usage` with the credentials at `home/.codex/auth.json`.
async fn usage(home: &Path, emu: &Emulator, extra: &[&str]) -> std::process::Output {
    bin(home)
        .arg("usage")
        .args([
            "--upstream-url",
            &emu.base_url(),
            "--token-url",
            &emu.token_url(),
        ])
        .args(extra)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_browser_flow_writes_codex_auth_json_that_usage_can_use() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    let mut child = bin(home.path())
        .args(["login", "--no-browser", "--callback-port", "0"])
        .args(["--auth-base-url", &emu.auth_base_url()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out: Lines<BufReader<ChildStdout>> =
        BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = next_line(&mut out).await;
        if let Some(u) = line
            .trim()
            .strip_prefix(&format!("{}/oauth/authorize?", emu.auth_base_url()))
        {
            break format!("{}/oauth/authorize?{u}", emu.auth_base_url());
        }
    };
    // The browser's part: the issuer redirects to the local callback, which exchanges the
    // code and sends the browser on to /success.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let to_callback = http.get(&url).send().await.unwrap();
    assert_eq!(to_callback.status(), 302);
    let callback = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(callback.starts_with("http://127.0.0.1:"), "{callback}");
    assert!(callback.contains("/auth/callback?code="), "{callback}");
    // A forged state is refused and the sign-in keeps waiting.
    let forged = callback.replace("&state=", "&state=x");
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 400);
    let to_success = http.get(&callback).send().await.unwrap();
    assert_eq!(to_success.status(), 302);
    assert_eq!(to_success.headers()["location"], "/success");
    let origin = callback.split("/auth/callback").next().unwrap();
    let page = http.get(format!("{origin}/success")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Signed in"));
    let mut rest = String::new();
    while let Ok(Some(l)) = out.next_line().await {
        rest.push_str(&l);
    }
    assert!(finish(child).await.success());
    assert!(rest.contains("Signed in"), "{rest}");
    assert!(!rest.contains("eyJ"), "no token is printed: {rest}");
    let auth = home.path().join(".codex/auth.json");
    assert_codex_auth_json(&auth);
    // The saved credentials work against the backend.
    let o = usage(home.path(), &emu, &["--json"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["plan_type"], "plus");
}

// macOS always opens URLs with `open`; the fake opener is the Linux/BSD `xdg-open`.
#[cfg(not(target_os = "macos"))]
#[tokio::test(flavor = "multi_thread")]
async fn login_opens_the_sign_in_url_in_a_browser_when_there_is_one() {
    use std::os::unix::fs::PermissionsExt;
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    // A graphical session whose browser opener records the URL it was given.
    let bin_dir = home.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let opener = bin_dir.join("xdg-open");
    let record = home.path().join("opened-url");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = bin(home.path())
        .args(["login", "--callback-port", "0"])
        .args(["--auth-base-url", &emu.auth_base_url()])
        .env("PATH", path)
        .env("DISPLAY", ":99")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, printed) = authorize_url(&mut child, &emu).await;
    let mut opened = String::new();
    for _ in 0..200 {
        opened = std::fs::read_to_string(&record).unwrap_or_default();
        if !opened.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(opened, printed, "the browser gets the printed sign-in URL");
    // The browser's part: follow the issuer's redirects through the local callback.
    let page = reqwest::get(&opened).await.unwrap();
    assert_eq!(page.status(), 200);
    while let Ok(Some(_)) = out.next_line().await {}
    assert!(finish(child).await.success());
    assert_codex_auth_json(&home.path().join(".codex/auth.json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_device_flow_polls_until_approved_and_writes_auth_json() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".codex")).unwrap();
    // Keys the Codex CLI (or a later version) wrote survive a new sign-in.
    std::fs::write(
        home.path().join(".codex/auth.json"),
        r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-old","future":{"kept":true}}"#,
    )
    .unwrap();
    let mut child = bin(home.path())
        .args(["login", "--device", "--auth-base-url", &emu.auth_base_url()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut saw_page = false;
    loop {
        let line = next_line(&mut out).await;
        saw_page |= line.contains(&format!("{}/codex/device", emu.auth_base_url()));
        if line.contains("enter the code") {
            break;
        }
    }
    assert!(saw_page);
    let code = loop {
        let line = next_line(&mut out).await;
        if !line.trim().is_empty() {
            break line.trim().to_owned();
        }
    };
    let waited = std::time::Instant::now();
    while emu.device_polls() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "it polls while pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(emu.approve_device(&code), "user code {code:?} is pending");
    assert!(finish(child).await.success());
    let auth = home.path().join(".codex/auth.json");
    assert_codex_auth_json(&auth);
    assert_eq!(read_json(&auth)["future"]["kept"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_draws_both_windows_plan_and_credits() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    write_creds(&emu, home.path(), 3600);
    let o = usage(home.path(), &emu, &[]).await;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("ChatGPT plan: plus"), "{text}");
    let five = text.lines().find(|l| l.contains("5-hour limit")).unwrap();
    assert!(
        five.contains(&format!("{}{}", "█".repeat(4), "░".repeat(26))),
        "{five}"
    );
    assert!(five.contains("12.0% used"), "{five}");
    assert!(five.contains("resets in 1h 00m ("), "{five}");
    let week = text.lines().find(|l| l.contains("Weekly limit")).unwrap();
    assert!(week.contains("3.0% used   resets in 3d 0h ("), "{week}");
    assert!(text.contains("Credits: 9.99"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not a terminal");

    let o = usage(home.path(), &emu, &["--json"]).await;
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["rate_limit"]["primary_window"]["used_percent"], 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_refreshes_an_expired_access_token() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    let auth = home.path().join(".codex/auth.json");
    write_creds(&emu, home.path(), -60);
    let before = read_json(&auth)["tokens"]["access_token"].clone();
    let o = usage(home.path(), &emu, &[]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(read_json(&auth)["tokens"]["access_token"], before);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_without_credentials_says_how_to_sign_in() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    let o = usage(home.path(), &emu, &[]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("auth.json"), "{err}");
}

fn env_lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn env_prints_claude_code_settings_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = |shell: &str| {
        std_bin(home.path())
            .args([
                "env",
                "--port",
                &port.to_string(),
                "--model",
                "gpt-6.1-terra",
            ])
            .args(["--small-model", "gpt-5.6-luna", "--shell", shell])
            .output()
            .unwrap()
    };
    let sh = env_lines(&run("sh").stdout);
    for want in [
        format!("export ANTHROPIC_BASE_URL='http://127.0.0.1:{port}'"),
        "export ANTHROPIC_API_KEY='codex-as-api'".to_owned(),
        "export ANTHROPIC_MODEL='gpt-6.1-terra'".to_owned(),
        "export ANTHROPIC_DEFAULT_SONNET_MODEL='gpt-6.1-terra'".to_owned(),
        "export ANTHROPIC_SMALL_FAST_MODEL='gpt-5.6-luna'".to_owned(),
        "export ANTHROPIC_DEFAULT_HAIKU_MODEL='gpt-5.6-luna'".to_owned(),
        "export CLAUDE_CODE_AUTO_COMPACT_WINDOW='500000'".to_owned(),
        "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC='1'".to_owned(),
        "unset ANTHROPIC_AUTH_TOKEN".to_owned(),
    ] {
        assert!(sh.contains(&want), "{want} in {sh:#?}");
    }
    // What sh makes of it.
    let script = format!(
        "ANTHROPIC_AUTH_TOKEN=x; {}\nprintf '%s|%s|%s' \"$ANTHROPIC_BASE_URL\" \"$ANTHROPIC_MODEL\" \"${{ANTHROPIC_AUTH_TOKEN-unset}}\"",
        sh.join("\n")
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("http://127.0.0.1:{port}|gpt-6.1-terra|unset")
    );
    let fish = env_lines(&run("fish").stdout);
    assert!(
        fish.contains(&"set -gx ANTHROPIC_MODEL 'gpt-6.1-terra'".to_owned()),
        "{fish:#?}"
    );
    assert!(
        fish.contains(&"set -e CLAUDE_CODE_USE_BEDROCK".to_owned()),
        "{fish:#?}"
    );
    let ps = env_lines(&run("powershell").stdout);
    assert!(
        ps.contains(&format!(
            "$env:ANTHROPIC_BASE_URL = 'http://127.0.0.1:{port}'"
        )),
        "{ps:#?}"
    );
    assert!(
        ps.contains(
            &"Remove-Item Env:ANTHROPIC_AUTH_TOKEN -ErrorAction SilentlyContinue".to_owned()
        ),
        "{ps:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn env_follows_the_model_of_a_running_server() {
    let h = common::Harness::with(|c| c.model = "gpt-6.1-terra".into()).await;
    let home = tempfile::tempdir().unwrap();
    let port = h.server.addr().port();
    let o = std_bin(home.path())
        .args(["env", "--port", &port.to_string()])
        .output()
        .unwrap();
    let sh = env_lines(&o.stdout);
    assert!(
        sh.contains(&"export ANTHROPIC_MODEL='gpt-6.1-terra'".to_owned()),
        "{sh:#?}"
    );
    assert!(
        sh.contains(&"export CLAUDE_CODE_AUTO_COMPACT_WINDOW='500000'".to_owned()),
        "{sh:#?}"
    );
    // On a non-loopback bind `/health` tells the model only to a client with the key.
    let h = common::Harness::with(|c| {
        c.model = "gpt-6.1-terra".into();
        c.host = "0.0.0.0".parse().unwrap();
        c.api_key = Some("k-env".into());
    })
    .await;
    let port = h.server.addr().port().to_string();
    let o = std_bin(home.path())
        .args(["env", "--host", "0.0.0.0", "--port", &port])
        .env("CODEX_AS_API_API_KEY", "k-env")
        .output()
        .unwrap();
    let sh = env_lines(&o.stdout);
    assert!(
        sh.contains(&"export ANTHROPIC_MODEL='gpt-6.1-terra'".to_owned()),
        "{sh:#?}"
    );
}

/// A stand-in for Claude Code that records its environment and arguments.
fn fake_claude(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("fake-claude");
    let record = dir.join("record");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > '{0}.env'\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{0}.args'\nexit 7\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

fn recorded_env(record: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(record.with_extension("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn recorded_args(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record.with_extension("args"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_runs_against_a_running_server_with_the_right_env() {
    let h = common::Harness::with(|c| c.model = "gpt-6-sol".into()).await;
    let home = tempfile::tempdir().unwrap();
    let (script, record) = fake_claude(home.path());
    let port = h.server.addr().port();
    let status = bin(home.path())
        .args([
            "claude",
            "--port",
            &port.to_string(),
            "--",
            "-p",
            "hello world",
            "--verbose",
        ])
        .env("CODEX_AS_API_CLAUDE_BIN", &script)
        .env("ANTHROPIC_AUTH_TOKEN", "would-win-over-the-key")
        .env("CLAUDE_CODE_USE_BEDROCK", "1")
        .env("CLAUDE_CONFIG_DIR", home.path().join("claude-config"))
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(7), "Claude Code's exit status is ours");
    // Claude Code's first run is done for it, where CLAUDE_CONFIG_DIR says.
    let cfg: Value = serde_json::from_slice(
        &std::fs::read(home.path().join("claude-config/.claude.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["hasCompletedOnboarding"], true);
    assert_eq!(
        cfg["customApiKeyResponses"]["approved"],
        serde_json::json!(["codex-as-api"])
    );
    assert!(!home.path().join(".claude.json").exists());
    // A server that was already running is left alone.
    let health = get_json(&reqwest::Client::new(), &h.url("/health")).await;
    assert_eq!(health["status"], "ok");
    let env = recorded_env(&record);
    assert_eq!(
        env["ANTHROPIC_BASE_URL"],
        format!("http://127.0.0.1:{port}")
    );
    assert_eq!(env["ANTHROPIC_API_KEY"], "codex-as-api");
    assert_eq!(env["ANTHROPIC_MODEL"], "gpt-6-sol");
    assert_eq!(env["ANTHROPIC_SMALL_FAST_MODEL"], "gpt-6-sol");
    assert_eq!(env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"], "272000");
    for k in [
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
    ] {
        assert_eq!(env[k], "1", "{k}");
    }
    assert!(!env.contains_key("ANTHROPIC_AUTH_TOKEN"));
    assert!(!env.contains_key("CLAUDE_CODE_USE_BEDROCK"));
    assert_eq!(recorded_args(&record), ["-p", "hello world", "--verbose"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_starts_the_server_in_the_background_when_none_runs() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    write_creds(&emu, home.path(), 3600);
    let (script, record) = fake_claude(home.path());
    let port = free_port();
    let o = bin(home.path())
        .args([
            "claude",
            "--keep-server",
            "--port",
            &port.to_string(),
            "--api-key",
            "sk-local-test",
        ])
        .args([
            "--upstream-url",
            &emu.base_url(),
            "--token-url",
            &emu.token_url(),
        ])
        .env("CODEX_AS_API_CLAUDE_BIN", &script)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let pid: u32 = err
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the launcher names the server's pid: {err}"));
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .arg(self.0.to_string())
                .status();
        }
    }
    let _server = Kill(pid);
    assert_eq!(o.status.code(), Some(7), "{err}");
    assert!(!err.contains("sk-local-test"), "the key is never printed");
    let env = recorded_env(&record);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(env["ANTHROPIC_BASE_URL"], base);
    assert_eq!(env["ANTHROPIC_API_KEY"], "sk-local-test");
    // With --keep-server the background server outlives the launcher and serves Claude
    // Code's requests.
    let http = reqwest::Client::new();
    let health = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(health["auth_available"], true);
    let resp = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &env["ANTHROPIC_API_KEY"])
        .header("anthropic-version", "2023-06-01")
        .json(
            &serde_json::json!({"model": env["ANTHROPIC_MODEL"], "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = std::fs::read_to_string(home.path().join(".codex/codex-as-api.log")).unwrap();
    assert!(log.contains("listening"), "{log}");
}

/// A fake Claude Code that also records the server's /health while it runs.
fn fake_claude_probing(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (script, record) = fake_claude(dir);
    let body = std::fs::read_to_string(&script).unwrap().replace(
        "exit 7",
        &format!(
            "curl -s \"$ANTHROPIC_BASE_URL/health\" > '{}.health'\nexit 7",
            record.display()
        ),
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, record)
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_stops_the_server_it_started_when_claude_code_exits() {
    let home = tempfile::tempdir().unwrap();
    let (script, record) = fake_claude_probing(home.path());
    // Claude Code's config exists already: merged into, never replaced.
    std::fs::write(
        home.path().join(".claude.json"),
        r#"{"theme":"light","customApiKeyResponses":{"approved":["older-key"],"rejected":[]}}"#,
    )
    .unwrap();
    let port = free_port();
    let o = bin(home.path())
        .args(["claude", "--demo", "--port", &port.to_string()])
        .env("CODEX_AS_API_API_KEY", "sk-local-0123456789abcdefghijXYZ")
        .env("CODEX_AS_API_CLAUDE_BIN", &script)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(7),
        "Claude Code's exit status is ours: {err}"
    );
    assert!(err.contains("stops when Claude Code exits"), "{err}");
    let pid: u32 = err
        .split("(pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the launcher names the server's pid: {err}"));
    // The server served while Claude Code ran…
    let health: Value =
        serde_json::from_slice(&std::fs::read(record.with_extension("health")).unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["demo"], true);
    // …and was gone (reaped) when the launcher returned.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the server (pid {pid}) still runs"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let log = std::fs::read_to_string(home.path().join(".codex/codex-as-api.log")).unwrap();
    assert!(
        log.contains("the session that started this server ended"),
        "{log}"
    );
    // The first-run settings, merged: the key's last 20 characters approved.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(home.path().join(".claude.json")).unwrap()).unwrap();
    assert_eq!(cfg["theme"], "light");
    assert_eq!(cfg["hasCompletedOnboarding"], true);
    assert_eq!(
        cfg["customApiKeyResponses"]["approved"],
        serde_json::json!(["older-key", "3456789abcdefghijXYZ"])
    );
    assert!(
        !err.contains("sk-local-0123456789abcdefghijXYZ"),
        "the key is never printed"
    );
}

/// The launcher outlives Ctrl-C (Claude Code's to handle), passes SIGTERM on to Claude Code,
/// returns its status and stops the server it started.
#[tokio::test(flavor = "multi_thread")]
async fn claude_passes_sigterm_on_and_survives_sigint() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("fake-claude");
    std::fs::write(
        &script,
        "#!/bin/sh\ntrap 'echo got-term; kill $pid; exit 9' TERM\nsleep 60 &\npid=$!\necho ready\nwait $pid\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let mut child = bin(home.path())
        .args(["claude", "--demo", "--port", &port.to_string()])
        .env("CODEX_AS_API_CLAUDE_BIN", &script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut out).await, "ready");
    let launcher = child.id().unwrap().to_string();
    let kill = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &launcher])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    kill("-INT");
    kill("-TERM");
    assert_eq!(next_line(&mut out).await, "got-term");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the launcher exits after Claude Code")
        .unwrap();
    assert_eq!(status.code(), Some(9));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_reports_a_missing_claude_binary() {
    let h = common::Harness::start().await;
    let home = tempfile::tempdir().unwrap();
    let o = bin(home.path())
        .args(["claude", "--port", &h.server.addr().port().to_string()])
        .env(
            "CODEX_AS_API_CLAUDE_BIN",
            home.path().join("no-such-claude"),
        )
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CODEX_AS_API_CLAUDE_BIN"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_every_endpoint_without_a_chatgpt_login() {
    // A fresh machine: no auth.json, no config, no backend.
    let home = tempfile::tempdir().unwrap();
    let mut child = bin(home.path())
        .args(["--demo", "--port", "0", "--log-format", "json"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = log_line(&mut err, |v| v["level"] == "WARN").await;
    assert!(warning.to_string().contains("DEMO MODE"), "{warning}");
    let banner = log_line(&mut err, |v| v["fields"]["address"].is_string()).await;
    assert_eq!(banner["fields"]["auth_available"], true, "{banner}");
    let base = format!("http://{}", banner["fields"]["address"].as_str().unwrap());
    let http = reqwest::Client::new();
    let health = get_json(&http, &format!("{base}/health")).await;
    assert_eq!(health["auth_available"], true, "{health}");
    assert_eq!(health["demo"], true, "{health}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /health`"))
        .unwrap();
    for k in health.as_object().unwrap().keys() {
        assert!(
            row.contains(&format!("`{k}`")),
            "README's /health row lacks `{k}`"
        );
    }
    let chat =
        serde_json::json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]});
    let msg = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = Value::Bool(true);
    let mut msg_stream = msg.clone();
    msg_stream["stream"] = Value::Bool(true);
    for (path, body) in [
        ("/v1/chat/completions", chat.clone()),
        ("/v1/chat/completions", chat_stream),
        ("/v1/messages", msg.clone()),
        ("/v1/messages", msg_stream),
        ("/v1/messages/count_tokens", msg.clone()),
        ("/v1/messages/compact", msg),
        (
            "/v1/responses",
            serde_json::json!({"model": "gpt-5.5", "input": "hi"}),
        ),
        (
            "/v1/compact",
            serde_json::json!({"model": "gpt-5.5", "input": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/images/generations",
            serde_json::json!({"prompt": "a red square"}),
        ),
        (
            "/v1/inspect",
            serde_json::json!({"prompt": "what is this?"}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{path} {body}: {text}");
        assert!(
            !text.contains("\"error\":{") && !text.contains("\"type\":\"error\""),
            "{path} {body}: {text}"
        );
    }
    for path in ["/v1/models", "/usage"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(
        !home.path().join(".codex/auth.json").exists(),
        "the demo never writes the user's credentials"
    );
    // On SIGTERM it exits cleanly and removes its throwaway credentials.
    let pid = child.id().unwrap();
    let demo_dirs = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("codex-as-api-demo-{pid}-"))
            })
            .count()
    };
    assert_eq!(
        demo_dirs(),
        1,
        "the demo keeps its credentials in a temp dir"
    );
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(finish(child).await.success());
    assert_eq!(demo_dirs(), 0, "removed on exit");
}

/// Option entries of a `--help` text: each starts at a line whose first token is a flag.
fn option_entries(help: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_options = line == "Options:";
            continue;
        }
        if !in_options {
            continue;
        }
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with("  ") && !line.starts_with("          ") {
            entries.push(t.to_owned());
        } else if let Some(last) = entries.last_mut() {
            last.push(' ');
            last.push_str(t);
        }
    }
    entries
}

#[test]
fn every_flag_of_every_subcommand_names_its_env_var() {
    let home = tempfile::tempdir().unwrap();
    for sub in [
        "",
        "serve",
        "login",
        "usage",
        "claude",
        "env",
        "emulator",
        "completions",
    ] {
        let mut c = std_bin(home.path());
        if !sub.is_empty() {
            c.arg(sub);
        }
        let o = c.arg("--help").output().unwrap();
        assert!(o.status.success(), "{sub} --help");
        let help = String::from_utf8_lossy(&o.stdout);
        let entries = option_entries(&help);
        assert!(
            entries.iter().any(|e| e.starts_with("-h, --help")),
            "{sub}: {help}"
        );
        for e in entries {
            if e.starts_with("-h, --help") || e.starts_with("-V, --version") {
                continue;
            }
            assert!(e.contains("[env: "), "`{sub}` flag without env var: {e}");
        }
    }
    let top = String::from_utf8_lossy(&std_bin(home.path()).arg("--help").output().unwrap().stdout)
        .into_owned();
    for sub in ["login", "usage", "claude", "env", "completions"] {
        assert!(top.contains(&format!("  {sub} ")), "{sub} listed in {top}");
    }
}

#[test]
fn readme_documents_every_flag_and_env_var_of_every_subcommand() {
    let home = tempfile::tempdir().unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut missing = Vec::new();
    for sub in ["", "login", "usage", "claude", "env", "emulator"] {
        let mut c = std_bin(home.path());
        if !sub.is_empty() {
            c.arg(sub);
        }
        let help = String::from_utf8_lossy(&c.arg("--help").output().unwrap().stdout).into_owned();
        for e in option_entries(&help) {
            let flag = e
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or_default();
            if flag == "--help" || flag == "--version" {
                continue;
            }
            if !readme.contains(&format!("`{flag}")) && !readme.contains(&format!(" {flag}")) {
                missing.push(format!("{sub} {flag}"));
            }
            if let Some(env) = e.split("[env: ").nth(1) {
                let name: String = env
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !readme.contains(&name) {
                    missing.push(format!("{sub} {flag}: {name}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in README.md: {missing:?}");
}

#[test]
fn version_and_completions() {
    let home = tempfile::tempdir().unwrap();
    let v = std_bin(home.path()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("codex-as-api {}", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let o = std_bin(home.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        for word in ["login", "usage", "claude", "callback-port"] {
            assert!(text.contains(word), "{shell} completions know {word}");
        }
    }
}

/// `codex-as-api completions bash | head -1`: the reader closes the pipe early; the command
/// exits cleanly instead of panicking on the broken pipe.
#[test]
fn output_into_a_closed_pipe_exits_cleanly() {
    use std::process::Stdio;
    let home = tempfile::tempdir().unwrap();
    let mut child = std_bin(home.path())
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the child writes its (tens of KB of) output.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A streamed Chat Completions request with the log test's API key.
async fn stream_chat(http: &reqwest::Client, base: &str, content: &str) -> reqwest::Response {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-local-log-test")
        .json(&serde_json::json!({"model": "gpt-5.5", "stream": true,
            "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap()
}

/// The next JSON log line on the server's stderr that `pick` accepts.
async fn log_line(
    lines: &mut Lines<BufReader<ChildStderr>>,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let line = next_line(lines).await;
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("--log-format json writes JSON lines ({e}): {line}"));
        if pick(&v) {
            return v;
        }
    }
}

fn is_request(v: &Value) -> bool {
    v["target"] == "codex_as_api::request"
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_have_a_banner_and_one_line_per_request() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    write_creds(&emu, home.path(), 3600);
    let mut child = bin(home.path())
        .args([
            "serve",
            "--port",
            "0",
            "--log-format",
            "json",
            "--model",
            "gpt-5.5",
        ])
        .args([
            "--upstream-url",
            &emu.base_url(),
            "--token-url",
            &emu.token_url(),
        ])
        .env("CODEX_AS_API_API_KEY", "sk-local-log-test")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let banner = log_line(&mut err, |v| v["fields"]["address"].is_string()).await;
    let f = &banner["fields"];
    assert_eq!(banner["level"], "INFO");
    assert_eq!(f["model"], "gpt-5.5");
    assert_eq!(f["auth_available"], true);
    assert_eq!(f["plan"], "plus");
    assert_eq!(f["api_key_required"], true);
    let base = format!("http://{}", f["address"].as_str().unwrap());
    assert!(f["message"].as_str().unwrap().contains(&base), "{banner}");
    assert!(!banner.to_string().contains("sk-local-log-test"));

    let http = reqwest::Client::new();
    // A streamed Chat Completions request.
    let resp = stream_chat(&http, &base, "hello").await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    resp.text().await.unwrap();
    let line = log_line(&mut err, is_request).await;
    let f = &line["fields"];
    assert_eq!(f["request_id"], request_id.as_str());
    assert_eq!(f["method"], "POST");
    assert_eq!(f["route"], "/v1/chat/completions");
    assert_eq!(f["client_model"], "gpt-5.5");
    assert_eq!(f["backend_model"], "gpt-5.5");
    assert_eq!(f["status"], 200);
    assert_eq!(f["outcome"], "ok");
    assert!(f["input_tokens"].as_u64().unwrap() > 0, "{line}");
    assert!(f["output_tokens"].as_u64().unwrap() > 0, "{line}");
    assert!(f["cached_tokens"].is_u64(), "{line}");
    let ttfb = f["ttfb_ms"].as_f64().unwrap();
    let total = f["duration_ms"].as_f64().unwrap();
    assert!(ttfb > 0.0 && ttfb <= total, "{line}");
    // The account that served it (its auth.json's folder), the wait for a slot, attempts.
    assert_eq!(f["account"], ".codex", "{line}");
    assert_eq!(f["attempts"], 1, "{line}");
    let queued = f["queued_ms"].as_f64().unwrap();
    assert!((0.0..=total).contains(&queued), "{line}");

    // A 503 retried before the first byte: two attempts, the client saw none of it.
    let resp = stream_chat(&http, &base, "EMU:flaky:1 again").await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let f = log_line(&mut err, is_request).await["fields"].clone();
    assert_eq!(
        (f["attempts"].as_u64(), f["outcome"].as_str()),
        (Some(2), Some("ok")),
        "{f}"
    );

    // A non-stream Anthropic request for a Claude model: the backend model differs.
    let resp = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk-local-log-test")
        .header("anthropic-version", "2023-06-01")
        .json(
            &serde_json::json!({"model": "claude-opus-5-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let f = log_line(&mut err, is_request).await["fields"].clone();
    assert_eq!(f["route"], "/v1/messages");
    assert_eq!(f["client_model"], "claude-opus-5-5");
    assert_eq!(f["backend_model"], "gpt-5.5");
    assert!(f["input_tokens"].as_u64().unwrap() > 0);

    // A stream that fails after it started: 200, but the line says how it ended.
    let resp = stream_chat(&http, &base, "EMU:error_event").await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let f = log_line(&mut err, is_request).await["fields"].clone();
    assert_eq!(f["status"], 200);
    assert!(f["outcome"].as_str().unwrap().starts_with("error:"), "{f}");

    // A client that goes away mid-stream.
    let mut resp = stream_chat(&http, &base, "EMU:stall:3000 hello").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    let f = log_line(&mut err, is_request).await["fields"].clone();
    assert_eq!(f["outcome"], "client_closed", "{f}");
    assert!(
        f["duration_ms"].as_f64().unwrap() < 3000.0,
        "logged when the client left: {f}"
    );

    // Errors are logged too: a wrong key.
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&serde_json::json!({"model": "gpt-5.5", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let f = log_line(&mut err, is_request).await["fields"].clone();
    assert_eq!(f["status"], 401);
    assert!(f["outcome"].as_str().unwrap().starts_with("error:"), "{f}");
    assert!(
        !f.to_string().contains("wrong"),
        "the presented key is not logged: {f}"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_banner_names_an_unusable_entry_of_accounts() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    write_creds(&emu, home.path(), 3600);
    let good = home.path().join(".codex/auth.json");
    let missing = home.path().join("gone/auth.json");
    let list = format!("{},{}", good.display(), missing.display());
    let mut child = bin(home.path())
        .args([
            "serve",
            "--port",
            "0",
            "--log-format",
            "json",
            "--accounts",
            &list,
        ])
        .args([
            "--upstream-url",
            &emu.base_url(),
            "--token-url",
            &emu.token_url(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = log_line(&mut err, |v| v["fields"]["account"] == "gone").await;
    assert_eq!(warning["level"], "WARN", "{warning}");
    let text = warning["fields"]["message"].as_str().unwrap();
    assert!(text.contains(&missing.display().to_string()), "{text}");
    let banner = log_line(&mut err, |v| v["fields"]["address"].is_string()).await;
    let f = &banner["fields"];
    assert_eq!(f["auth_available"], true, "{banner}");
    assert!(f["auth"].as_str().unwrap().contains("1 of 2"), "{banner}");
    let saved = read_json(&good);
    let token = saved["tokens"]["access_token"].as_str().unwrap();
    assert!(!banner.to_string().contains(token) && !warning.to_string().contains(token));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn log_level_flag_and_rust_log_filter_lines() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    write_creds(&emu, home.path(), 3600);
    let quiet = |extra: &[&str], rust_log: Option<&str>| {
        let mut c = bin(home.path());
        c.args(["serve", "--port", "0", "--log-format", "json"])
            .args(["--upstream-url", &emu.base_url()])
            .args(extra)
            .stderr(Stdio::piped());
        if let Some(r) = rust_log {
            c.env("RUST_LOG", r);
        }
        c.spawn().unwrap()
    };
    // --log-level warn hides the info banner; RUST_LOG overrides the flag.
    let mut child = quiet(&["--log-level", "warn"], None);
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let got = tokio::time::timeout(Duration::from_millis(1500), err.next_line()).await;
    assert!(
        got.is_err() || matches!(got, Ok(Ok(None))),
        "nothing at warn: {got:?}"
    );
    child.kill().await.unwrap();
    let mut child = quiet(&["--log-level", "warn"], Some("info"));
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    log_line(&mut err, |v| v["fields"]["address"].is_string()).await;
    child.kill().await.unwrap();
}

/// The real Claude Code (tests/e2e/node, installed by tests/run.sh), launched by `claude`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_launches_the_real_claude_code_against_the_server() {
    let h = common::Harness::with(|c| c.model = "gpt-6-sol".into()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "projects": {work.to_string_lossy(): {"hasTrustDialogAccepted": true}}
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).unwrap();
    let port = h.server.addr().port().to_string();
    let out = bin(&home)
        .args(["claude", "--port", &port, "--"])
        .args([
            "-p",
            "Reply with the single word: hi",
            "--output-format",
            "json",
        ])
        .env("CODEX_AS_API_CLAUDE_BIN", common::claude())
        .env("CLAUDE_CODE_MAX_RETRIES", "1")
        .current_dir(&work)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("claude finishes within 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["is_error"], false, "{v}");
    assert!(
        v["result"]
            .as_str()
            .unwrap()
            .contains("Reply with the single word: hi"),
        "{v}"
    );
    // Every call (the main turn and any background "haiku" call) reached the server's model.
    let bodies = h.upstream_bodies();
    assert!(!bodies.is_empty());
    assert!(
        bodies.iter().all(|b| b["model"] == "gpt-6-sol"),
        "{bodies:?}"
    );
}

/// Start `login` on a fixed callback port and read up to its authorize URL.
async fn start_browser_login(
    home: &Path,
    emu: &Emulator,
    port: u16,
) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = bin(home)
        .args([
            "login",
            "--no-browser",
            "--callback-port",
            &port.to_string(),
        ])
        .args(["--auth-base-url", &emu.auth_base_url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, url) = authorize_url(&mut child, emu).await;
    (child, out, url)
}

/// Read `login`'s output up to the authorize URL it prints.
async fn authorize_url(
    child: &mut Child,
    emu: &Emulator,
) -> (Lines<BufReader<ChildStdout>>, String) {
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let prefix = format!("{}/oauth/authorize?", emu.auth_base_url());
    let url = loop {
        let line = next_line(&mut out).await;
        if line.trim().starts_with(&prefix) {
            break line.trim().to_owned();
        }
    };
    (out, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn login_takes_the_callback_port_over_and_ignores_forged_callbacks() {
    let emu = emulator().await;
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let (first, _out1, _) = start_browser_login(home.path(), &emu, port).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Another page cannot end the sign-in with a made-up error.
    let forged = http
        .get(format!(
            "http://127.0.0.1:{port}/auth/callback?error=access_denied&state=guess"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    // A second login asks the first to stop (its /cancel page) and takes the port.
    let (second, _out2, url) = start_browser_login(home.path(), &emu, port).await;
    let first = tokio::time::timeout(Duration::from_secs(20), first.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!first.status.success());
    assert!(String::from_utf8_lossy(&first.stderr).contains("cancelled"));
    let to_callback = http.get(&url).send().await.unwrap();
    let callback = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(callback.starts_with(&format!("http://127.0.0.1:{port}/auth/callback?")));
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 302);
    assert!(finish(second).await.success());
    assert_codex_auth_json(&home.path().join(".codex/auth.json"));
}

/// GET `url` and parse the answer as JSON.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Every numeric setting of `serve`: flag, smallest and largest accepted value, and other
/// flags a value needs to be valid at all (a ceiling below the default start is refused).
const NUMERIC_FLAGS: [(&str, u64, u64, &[&str]); 21] = [
    ("port", 0, 65_535, &[]),
    ("keepalive-secs", 1, 86_400, &[]),
    ("stream-idle-timeout-secs", 1, 86_400, &[]),
    ("head-hold-ms", 0, 86_400_000, &[]),
    ("max-body-bytes", 1, 1 << 30, &[]),
    ("max-json-depth", 1, 1024, &[]),
    ("max-concurrent-streams", 1, 1_000_000, &[]),
    ("upstream-retries", 0, 100, &[]),
    ("drain-secs", 0, 86_400, &[]),
    ("header-timeout-secs", 1, 86_400, &[]),
    ("upstream-max-connections", 1, 4096, &[]),
    ("request-read-timeout-secs", 1, 86_400, &[]),
    ("write-stall-secs", 1, 86_400, &[]),
    ("max-connections", 1, 1_000_000, &[]),
    ("upstream-idle-secs", 1, 86_400, &[]),
    ("history-max-entries", 0, 1_000_000, &[]),
    ("history-max-bytes", 0, 1 << 36, &[]),
    ("account-max-streams", 1, 1_000_000, &[]),
    (
        "account-max-streams-ceiling",
        1,
        1_000_000,
        &["--account-max-streams", "1"],
    ),
    ("account-window-grow-secs", 0, 86_400, &[]),
    ("queue-timeout-secs", 1, 86_400, &[]),
];

/// The Codex CLI's own numeric keys at the root of config.toml.
const NUMERIC_ROOT_KEYS: [(&str, u64, u64); 2] = [
    ("model_context_window", 1, u32::MAX as u64),
    ("model_auto_compact_token_limit", 1, u32::MAX as u64),
];

/// Requests in turn on a single HTTP/1.1 connection.
struct OneConnection {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    addr: std::net::SocketAddr,
}

impl OneConnection {
    async fn open(addr: std::net::SocketAddr) -> OneConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        OneConnection { send, addr }
    }

    async fn call(&mut self, method: &str, path: &str, body: String) -> (http::StatusCode, String) {
        use http_body_util::BodyExt;
        // A refusal that left the body unread (413) closes the connection: open another.
        if self.send.ready().await.is_err() {
            *self = OneConnection::open(self.addr).await;
        }
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn post(&mut self, path: &str, body: String) -> (http::StatusCode, String) {
        self.call("POST", path, body).await
    }

    async fn get(&mut self, path: &str) -> (http::StatusCode, String) {
        self.call("GET", path, String::new()).await
    }
}

/// A server on `config` (numeric settings as resolved; upstream, credentials and port from
/// the harness: a checked port is the OS's to bind) answers the main kinds of work, at the
/// nesting limit too, and shuts down.
async fn serves_on(resolved: codex_as_api::config::Config, what: &str) {
    let depth = resolved.max_json_depth;
    let h = common::Harness::with(move |c| {
        let keep = c.clone();
        *c = resolved;
        c.upstream_url = keep.upstream_url;
        c.token_url = keep.token_url;
        c.auth_path = keep.auth_path;
        c.codex_home = keep.codex_home;
        c.port = 0;
    })
    .await;
    // One keep-alive connection for every request: with `--max-connections 1` a client
    // pool that opened a second one while the first turns idle would be refused.
    let mut one = OneConnection::open(h.server.addr()).await;
    // `metadata` nested to the limit: the request's own depth is exactly `depth`.
    let nested = format!(
        r#"{{"model":"gpt-5.5","stream":true,"messages":[{{"role":"user","content":"hi"}}],"metadata":{}{}}}"#,
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    );
    let msg = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    for (path, body) in [
        ("/v1/chat/completions", nested),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-5.5","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
                .to_owned(),
        ),
        ("/v1/messages", msg.to_string()),
        ("/v1/messages/count_tokens", msg.to_string()),
    ] {
        let (status, text) = one.post(path, body).await;
        assert!(
            status.is_success() || status.is_client_error(),
            "{what}: {path}: {status} {text}"
        );
    }
    let (status, _) = one.get("/health").await;
    assert_eq!(status, 200, "{what}");
    drop(one);
    let common::Harness { server, http, .. } = h;
    drop(http);
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .unwrap_or_else(|_| panic!("{what}: the server shuts down"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_numeric_setting_is_range_checked_at_start_and_its_extremes_run() {
    use clap::{Args, FromArgMatches};
    use codex_as_api::config::{Config, ServeArgs};
    use std::any::TypeId;
    let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
    // Every numeric flag of ServeArgs is in the table, and only those.
    let numeric_types = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<u128>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<i128>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ];
    let mut numeric: Vec<&str> = cmd
        .get_arguments()
        .filter(|a| {
            let t = a.get_value_parser().type_id();
            numeric_types.iter().any(|n| t == *n)
        })
        .filter_map(|a| a.get_long())
        .collect();
    numeric.sort_unstable();
    let mut listed: Vec<&str> = NUMERIC_FLAGS.iter().map(|f| f.0).collect();
    listed.sort_unstable();
    assert_eq!(
        numeric, listed,
        "every numeric serve flag needs a row in NUMERIC_FLAGS"
    );
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap().to_owned();
    for (flag, min, max, extra) in NUMERIC_FLAGS {
        let mut values = vec![0, 1, max, max + 1, u64::MAX];
        values.dedup();
        for v in values {
            let what = format!("--{flag} {v}");
            let accepted = (min..=max).contains(&v);
            let mut argv = vec![
                "serve".to_owned(),
                "--codex-home".to_owned(),
                home_arg.clone(),
            ];
            argv.extend(extra.iter().map(|a| a.to_string()));
            argv.extend([format!("--{flag}"), v.to_string()]);
            let resolved = match cmd.clone().try_get_matches_from(&argv) {
                Err(e) => Err(e.to_string()),
                Ok(m) => Config::resolve(&ServeArgs::from_arg_matches(&m).unwrap()),
            };
            match resolved {
                Ok(c) => {
                    assert!(accepted, "{what} was accepted");
                    serves_on(c, &what).await;
                }
                Err(e) => {
                    assert!(!accepted, "{what} was refused: {e}");
                    assert!(e.contains(&format!("--{flag}")), "{what}: {e}");
                }
            }
        }
        // The same key in config.toml: a TOML integer is at most i64::MAX; a negative or
        // non-integer value is refused too, naming the key and its flag.
        let key = flag.replace('-', "_");
        for (v, accepted) in [
            ("0".to_owned(), min == 0),
            ("1".to_owned(), true),
            (max.to_string(), true),
            ((max + 1).to_string(), false),
            (i64::MAX.to_string(), false),
            ("-1".to_owned(), false),
            ("\"10\"".to_owned(), false),
        ] {
            let mut text = format!("[codex_as_api]\n{key} = {v}\n");
            if !extra.is_empty() {
                text.push_str("account_max_streams = 1\n");
            }
            std::fs::write(home.path().join("config.toml"), text).unwrap();
            let args = ServeArgs {
                codex_home: Some(home.path().to_path_buf()),
                ..ServeArgs::default()
            };
            match Config::resolve(&args) {
                Ok(_) => assert!(accepted, "config.toml {key} = {v} was accepted"),
                Err(e) => {
                    assert!(!accepted, "config.toml {key} = {v} was refused: {e}");
                    assert!(
                        e.contains(&key) && e.contains(&format!("--{flag}")),
                        "{key} = {v}: {e}"
                    );
                }
            }
        }
        std::fs::remove_file(home.path().join("config.toml")).unwrap();
    }
    for (key, min, max) in NUMERIC_ROOT_KEYS {
        for (v, accepted) in [
            ("0".to_owned(), min == 0),
            ("1".to_owned(), true),
            (max.to_string(), true),
            ((max + 1).to_string(), false),
            (i64::MAX.to_string(), false),
            ("-1".to_owned(), false),
            ("\"1\"".to_owned(), false),
        ] {
            std::fs::write(home.path().join("config.toml"), format!("{key} = {v}\n")).unwrap();
            let args = ServeArgs {
                codex_home: Some(home.path().to_path_buf()),
                ..ServeArgs::default()
            };
            match Config::resolve(&args) {
                Ok(c) => {
                    assert!(accepted, "config.toml {key} = {v} was accepted");
                    serves_on(c, &format!("{key} = {v}")).await;
                }
                Err(e) => {
                    assert!(!accepted, "config.toml {key} = {v} was refused: {e}");
                    assert!(e.contains(key), "{key} = {v}: {e}");
                }
            }
        }
    }
}

#[tokio::test]
async fn out_of_range_settings_stop_the_binary_at_start_naming_the_flag() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = bin(home.path());
        c.arg("serve").args(["--port", "0"]).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        async move {
            let o = tokio::time::timeout(Duration::from_secs(20), c.output())
                .await
                .expect("the binary stops at once")
                .unwrap();
            assert!(!o.status.success());
            String::from_utf8_lossy(&o.stderr).into_owned()
        }
    };
    let err = run(&["--keepalive-secs", "0"], &[]).await;
    assert!(
        err.contains("--keepalive-secs") && err.contains("between 1 and 86400"),
        "{err}"
    );
    let err = run(
        &[],
        &[("CODEX_AS_API_QUEUE_TIMEOUT_SECS", "18446744073709551615")],
    )
    .await;
    assert!(
        err.contains("--queue-timeout-secs") && err.contains("CODEX_AS_API_QUEUE_TIMEOUT_SECS"),
        "{err}"
    );
    let err = run(&["--upstream-retries", "18446744073709551615"], &[]).await;
    assert!(err.contains("--upstream-retries"), "{err}");
    std::fs::create_dir_all(home.path().join(".codex")).unwrap();
    std::fs::write(
        home.path().join(".codex/config.toml"),
        "[codex_as_api]\nmax_json_depth = 0\n",
    )
    .unwrap();
    let err = run(&[], &[]).await;
    assert!(
        err.contains("max_json_depth") && err.contains("--max-json-depth"),
        "{err}"
    );
    std::fs::remove_file(home.path().join(".codex/config.toml")).unwrap();
    // A CORS allow-list of `*` without a key: every web page could spend the subscription.
    let err = run(&["--cors-allow-origin", "*"], &[]).await;
    assert!(
        err.contains("--cors-allow-origin") && err.contains("every web page"),
        "{err}"
    );
}
