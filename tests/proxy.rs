//! Outbound proxies: every upstream connection (the backend over TLS and h2, the token
//! endpoint) goes through an HTTP `CONNECT` proxy or a SOCKS5 proxy started by the test on
//! loopback, from `--upstream-proxy` or from `HTTPS_PROXY`. The backend is the emulator under
//! a name that is not loopback (`codex-emulator.test`, in its test certificate); the proxies
//! map every name to 127.0.0.1 and record what they were asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use codex_as_api::Server;
use codex_as_api::config::Config;
use codex_as_api::emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAME: &str = "codex-emulator.test";

type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP proxy that answers `CONNECT host:port` by connecting to 127.0.0.1:port.
async fn connect_proxy() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let authorized = head
                    .to_ascii_lowercase()
                    .contains("proxy-authorization: basic");
                log.lock()
                    .unwrap()
                    .push(format!("{line} auth={authorized}"));
                let target = line.split(' ').nth(1).unwrap_or_default();
                let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                let mut up = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (addr, seen)
}

/// A SOCKS5 proxy (no authentication) that connects every destination to 127.0.0.1.
async fn socks5_proxy() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut hello = [0u8; 2];
                c.read_exact(&mut hello).await.unwrap();
                assert_eq!(hello[0], 5, "SOCKS version");
                let mut methods = vec![0u8; usize::from(hello[1])];
                c.read_exact(&mut methods).await.unwrap();
                c.write_all(&[5, 0]).await.unwrap();
                let mut req = [0u8; 4];
                c.read_exact(&mut req).await.unwrap();
                assert_eq!(&req[..3], &[5, 1, 0], "CONNECT request");
                let host = match req[3] {
                    3 => {
                        let mut len = [0u8; 1];
                        c.read_exact(&mut len).await.unwrap();
                        let mut name = vec![0u8; usize::from(len[0])];
                        c.read_exact(&mut name).await.unwrap();
                        String::from_utf8(name).unwrap()
                    }
                    1 => {
                        let mut ip = [0u8; 4];
                        c.read_exact(&mut ip).await.unwrap();
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    other => panic!("address type {other}"),
                };
                let mut port = [0u8; 2];
                c.read_exact(&mut port).await.unwrap();
                let port = u16::from_be_bytes(port);
                log.lock().unwrap().push(format!("{host}:{port}"));
                let mut up = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
            });
        }
    });
    (addr, seen)
}

/// The emulator over TLS (h2), credentials whose access token has expired (so the first
/// request refreshes through the proxy too), and a config reaching both by `NAME`.
async fn backend(dir: &std::path::Path) -> (Emulator, Config) {
    let (emu, mut config) = common::tls_emulator(EmulatorConfig::default(), dir, -60).await;
    config.upstream_url = config.upstream_url.replace("127.0.0.1", NAME);
    config.token_url = config.token_url.replace("127.0.0.1", NAME);
    (emu, config)
}

async fn chat(server: &Server) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn upstream_and_token_calls_go_through_an_http_connect_proxy_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, seen) = connect_proxy().await;
    let (emu, mut config) = backend(dir.path()).await;
    config.upstream_proxy = Some(format!("http://user:secret@{proxy}"));
    let server = Server::bind(config).await.unwrap();
    let (status, v) = chat(&server).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(emu.stats().token_calls, 1, "the refresh went through too");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    let port = emu.addr().port();
    for line in &seen {
        assert_eq!(line, &format!("CONNECT {NAME}:{port} HTTP/1.1 auth=true"));
    }
    assert!(!format!("{:?}", server.state().config).contains("secret"));
}

#[tokio::test]
async fn upstream_calls_go_through_a_socks5_proxy_that_resolves_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, seen) = socks5_proxy().await;
    let (emu, mut config) = backend(dir.path()).await;
    config.upstream_proxy = Some(format!("socks5h://{proxy}"));
    let server = Server::bind(config).await.unwrap();
    let (status, v) = chat(&server).await;
    assert_eq!(status, 200, "{v}");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for target in &seen {
        assert_eq!(target, &format!("{NAME}:{}", emu.addr().port()));
    }
}

#[tokio::test]
async fn loopback_upstreams_never_go_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, seen) = connect_proxy().await;
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let auth = dir.path().join("auth.json");
    emu.issue_credentials(3600).write_auth_json(&auth).unwrap();
    let mut config = Config::for_tests(&emu.base_url(), auth);
    config.token_url = emu.token_url();
    config.upstream_proxy = Some(format!("http://{proxy}"));
    let server = Server::bind(config).await.unwrap();
    let (status, v) = chat(&server).await;
    assert_eq!(status, 200, "{v}");
    assert!(seen.lock().unwrap().is_empty());
}

/// `HTTPS_PROXY` in the environment of the real binary (no flag), as the Codex CLI honours it.
#[tokio::test(flavor = "multi_thread")]
async fn https_proxy_from_the_environment_is_honoured() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, seen) = connect_proxy().await;
    let (emu, config) = backend(dir.path()).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex-as-api"))
        .args(["serve", "--port", "0", "--log-format", "json"])
        .args(["--upstream-url", &config.upstream_url])
        .args(["--token-url", &config.token_url])
        .arg("--auth-path")
        .arg(&config.auth_path)
        .arg("--ca-file")
        .arg(config.ca_file.as_ref().unwrap())
        .env("CODEX_HOME", dir.path())
        .env("HTTPS_PROXY", format!("http://{proxy}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the server started");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(a) = v["fields"]["address"].as_str() {
            break a.to_owned();
        }
    };
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let port = emu.addr().port();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("CONNECT {NAME}:{port} HTTP/1.1 auth=false")),
        "{seen:?}"
    );
    child.kill().await.unwrap();
}
