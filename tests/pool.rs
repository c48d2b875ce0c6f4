//! Upstream connection pooling, counted at the emulator: sequential streaming requests
//! reuse the pooled upstream connection instead of opening one each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Harness;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_requests_open_at_most_four_upstream_connections() {
    let h = Harness::start().await;
    let before = h.emu.stats().connections_accepted;
    for i in 0..1000 {
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/chat/completions",
                json!({"model": "gpt-5.5", "stream": true,
                    "messages": [{"role": "user", "content": "EMU:deltas:5"}]}),
            )
        } else {
            (
                "/v1/messages",
                json!({"model": "claude-opus-5-5", "stream": true, "max_tokens": 100,
                    "messages": [{"role": "user", "content": "EMU:deltas:5"}]}),
            )
        };
        let resp = h.post(path, &body).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("lorem"), "request {i}: {text}");
    }
    let opened = h.emu.stats().connections_accepted - before;
    eprintln!("1,000 sequential requests opened {opened} upstream connection(s)");
    assert!(
        opened <= 4,
        "1,000 sequential requests opened {opened} upstream connections"
    );
    assert_eq!(h.emu.stats().responses_requests, 1000);
}

/// The emulator over TLS (h2) advertising `limit` streams per connection, and a server with
/// room in its account window for every stream, at most `max_connections` h2 connections.
async fn h2_backend(
    limit: u32,
    max_connections: usize,
) -> (
    codex_as_api::emulator::Emulator,
    codex_as_api::Server,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = codex_as_api::emulator::EmulatorConfig {
        h2_max_concurrent_streams: limit,
        ..Default::default()
    };
    let (emu, mut config) = common::tls_emulator(cfg, dir.path(), 3600).await;
    config.account_limits.start = 1000;
    config.account_limits.ceiling = 1000;
    config.upstream_max_connections = max_connections;
    // The h2 pool is the SSE transport's.
    config.upstream_transport = codex_as_api::config::Transport::Sse;
    let server = codex_as_api::Server::bind(config).await.unwrap();
    (emu, server, dir)
}

fn gated_streams(
    server: &codex_as_api::Server,
    n: usize,
    gate: &str,
) -> Vec<tokio::task::JoinHandle<(u16, String)>> {
    let http = reqwest::Client::new();
    (0..n)
        .map(|i| {
            let rb = http
                .post(format!("http://{}/v1/chat/completions", server.addr()))
                .json(
                    &json!({"model": "gpt-5.5", "stream": true, "prompt_cache_key": format!("s{i}"),
                    "messages": [{"role": "user", "content": format!("EMU:gate:{gate} go")}]}),
                );
            tokio::spawn(async move {
                let r = rb.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect()
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// hyper-util's pool keeps one h2 connection per origin and queues streams beyond the
/// peer's SETTINGS_MAX_CONCURRENT_STREAMS behind it; ours opens another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_peers_limit_open_another_h2_connection() {
    let (emu, server, _dir) = h2_backend(10, 32).await;
    let streams = gated_streams(&server, 25, "spread");
    until("all 25 streams open upstream at once", || {
        emu.live_streams() == 25
    })
    .await;
    assert!(server.state().pool.h2_connections() >= 3);
    emu.open_gate("spread");
    for s in streams {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
}

/// At `--upstream-max-connections` a stream waits for a slot instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_streams_wait_for_a_slot() {
    let (emu, server, _dir) = h2_backend(10, 1).await;
    let streams = gated_streams(&server, 15, "cap");
    until("10 streams open upstream", || emu.live_streams() == 10).await;
    assert_eq!(server.state().pool.h2_connections(), 1);
    emu.open_gate("cap");
    for s in streams {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    assert_eq!(server.state().pool.h2_connections(), 1);
}

/// A burst opens one connection per peer limit of streams, not one per stream (each
/// handshake costs the burst's TTFB) — on a fresh pool, before any limit was learned, and
/// again once it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_opens_one_connection_per_peer_limit_of_streams() {
    let (emu, server, _dir) = h2_backend(10, 32).await;
    for round in ["fresh", "learned"] {
        let streams = gated_streams(&server, 25, round);
        until("all 25 streams open upstream at once", || {
            emu.live_streams() == 25
        })
        .await;
        assert_eq!(
            server.state().pool.h2_connections(),
            3,
            "{round}: 25 streams at 10 per connection"
        );
        emu.open_gate(round);
        for s in streams {
            let (status, body) = s.await.unwrap();
            assert_eq!(status, 200, "{body}");
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        }
        until("the streams to end upstream", || emu.live_streams() == 0).await;
    }
}
