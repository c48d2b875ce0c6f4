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
