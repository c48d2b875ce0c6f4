//! Fleets (issue 13): per-account admission control, several accounts, and retries the
//! client never sees. The real server and the emulator over loopback; the emulator enforces
//! the backend's per-account stream limit (`account_concurrency`) and usage limits.
//!
//! Streams that must stay open are held by `EMU:gate:<name>` (after their first delta) until
//! the test opens the gate; the tests wait for states (`/health`, emulator counters), never
//! for a fixed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use codex_as_api::Server;
use codex_as_api::config::Config;
use codex_as_api::emulator::{Emulator, EmulatorConfig};
use codex_as_api::internals::accounts::AccountSpec;
use codex_as_api::internals::admission::Limits;
use common::{frames, until};
use serde_json::{Value, json};

/// An emulator with `accounts` registered accounts and a server spending all of them.
struct Fleet {
    emu: Emulator,
    _server: Server,
    base: String,
    dir: tempfile::TempDir,
    /// Emulator account ids, in `--accounts` order.
    ids: Vec<String>,
    paths: Vec<PathBuf>,
    http: reqwest::Client,
}

impl Fleet {
    async fn start(
        concurrency: Option<usize>,
        accounts: usize,
        adjust: impl FnOnce(&mut Config),
    ) -> Fleet {
        let emu = Emulator::start(EmulatorConfig {
            account_concurrency: concurrency,
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut ids = vec![emu.account_id()];
        for _ in 1..accounts {
            ids.push(emu.add_account());
        }
        let mut paths = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let path = dir.path().join(format!("acct{i}")).join("auth.json");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            emu.issue_credentials_for(id, 3600)
                .write_auth_json(&path)
                .unwrap();
            paths.push(path);
        }
        let mut config = Config::for_tests(&emu.base_url(), paths[0].clone());
        config.token_url = emu.token_url();
        config.codex_home = dir.path().to_path_buf();
        if accounts > 1 {
            config.accounts = paths
                .iter()
                .map(|p| AccountSpec {
                    path: p.clone(),
                    label: None,
                })
                .collect();
        }
        adjust(&mut config);
        let server = Server::bind(config).await.unwrap();
        Fleet {
            base: format!("http://{}", server.addr()),
            emu,
            _server: server,
            dir,
            ids,
            paths,
            http: reqwest::Client::new(),
        }
    }

    async fn health(&self) -> Value {
        self.http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `/health`'s entry for account `i`.
    async fn account(&self, i: usize) -> Value {
        self.health().await["accounts"][i].clone()
    }

    /// Wait until `/health` satisfies `cond` (10 s at most).
    async fn until_health(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let h = self.health().await;
            if cond(&h) {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A streaming chat request; `(status, headers, body)`.
    fn chat(
        &self,
        text: &str,
        key: &str,
        headers: &[(&str, &str)],
        stream: bool,
    ) -> impl std::future::Future<Output = (u16, reqwest::header::HeaderMap, String)> + 'static
    {
        let mut rb = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .json(
                &json!({"model": "gpt-5.5", "stream": stream, "prompt_cache_key": key,
                "messages": [{"role": "user", "content": text}]}),
            );
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }
    }

    /// `n` agents, each one streaming chat turn (its own conversation) held open by the
    /// gate `gate` after its first delta.
    fn agents(&self, n: usize, gate: &str) -> Vec<Agent> {
        (0..n)
            .map(|i| {
                let text = format!("EMU:gate:{gate} work");
                tokio::spawn(self.chat(&text, &format!("agent-{i}"), &[], true))
            })
            .collect()
    }

    fn refusals(&self) -> u64 {
        self.emu.stats().concurrency_refusals
    }
}

type Agent = tokio::task::JoinHandle<(u16, reqwest::header::HeaderMap, String)>;

/// Every agent's stream completed.
async fn all_complete(agents: Vec<Agent>) {
    for a in agents {
        let (status, _, body) = a.await.unwrap();
        assert_complete(status, &body);
    }
}

/// A streamed chat answer that completed: content and `[DONE]`, no error frame.
fn assert_complete(status: u16, body: &str) {
    assert_eq!(status, 200, "{body}");
    let fr = frames(body);
    assert!(fr.iter().any(|f| f.data == "[DONE]"), "{body}");
    assert!(!body.contains("\"error\""), "{body}");
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test]
async fn twenty_four_agents_on_a_three_stream_account_queue_and_none_sees_a_429() {
    let f = Fleet::start(Some(3), 1, |_| {}).await;
    let agents = f.agents(24, "fleet");
    let h = f
        .until_health("3 open, 21 queued", |h| {
            h["accounts"][0]["open"] == 3 && h["queued"] == 21
        })
        .await;
    assert_eq!(h["accounts"][0]["window"], 3, "{h}");
    until("3 open streams upstream", Duration::from_secs(10), || {
        f.emu.account_stats(&f.ids[0]).open_streams == 3
    })
    .await;
    assert_eq!(
        f.emu.stats().responses_requests,
        3,
        "queued requests are not sent upstream"
    );
    f.emu.open_gate("fleet");
    all_complete(agents).await;
    let s = f.emu.account_stats(&f.ids[0]);
    assert_eq!(s.requests, 24);
    assert_eq!(
        s.concurrency_refusals, 0,
        "nothing beyond the limit was sent"
    );
    assert!(s.peak_open_streams <= 3, "peak {}", s.peak_open_streams);
    let h = f.health().await;
    assert_eq!(h["accounts"][0]["admitted"], 24, "{h}");
    assert_eq!(h["queued"], 0, "{h}");
}

#[tokio::test]
async fn a_concurrency_refusal_shrinks_the_window_and_the_client_never_sees_it() {
    // The server believes in 4 streams; the backend allows 2.
    let f = Fleet::start(Some(2), 1, |c| {
        c.account_limits = Limits {
            start: 4,
            ceiling: 8,
            grow_after: Duration::from_secs(3600),
        };
    })
    .await;
    let agents = f.agents(6, "shrink");
    let h = f
        .until_health("the window shrunk to the 2 accepted streams", |h| {
            let a = &h["accounts"][0];
            a["window"] == 2 && a["open"] == 2 && a["queued"] == 4
        })
        .await;
    assert_eq!(h["accounts"][0]["refused"], 2, "{h}");
    assert_eq!(f.refusals(), 2);
    f.emu.open_gate("shrink");
    all_complete(agents).await;
    assert_eq!(f.refusals(), 2, "no further refusal once the window fit");
    assert!(f.emu.account_stats(&f.ids[0]).peak_open_streams <= 2);
}

#[tokio::test]
async fn a_full_window_with_waiters_grows_by_itself_up_to_the_ceiling() {
    let f = Fleet::start(None, 1, |c| {
        c.account_limits = Limits {
            start: 1,
            ceiling: 3,
            grow_after: Duration::from_millis(100),
        };
    })
    .await;
    let agents = f.agents(4, "grow");
    // No request ends and none arrives: the window still grows, one step per quiet period.
    let h = f
        .until_health("the window grew to its ceiling", |h| {
            let a = &h["accounts"][0];
            a["window"] == 3 && a["open"] == 3 && a["queued"] == 1
        })
        .await;
    assert_eq!(h["accounts"][0]["refused"], 0, "{h}");
    until("3 open streams upstream", Duration::from_secs(10), || {
        f.emu.account_stats(&f.ids[0]).open_streams == 3
    })
    .await;
    f.emu.open_gate("grow");
    all_complete(agents).await;
}

/// A server with one slot, taken by a gated stream; returns the holder's task.
async fn one_slot_held(f: &Fleet, gate: &str) -> Agent {
    let holder = tokio::spawn(f.chat(&format!("EMU:gate:{gate} hold"), "holder", &[], true));
    f.until_health("the holder is open", |h| h["accounts"][0]["open"] == 1)
        .await;
    holder
}

fn one_slot(c: &mut Config) {
    c.account_limits = Limits {
        start: 1,
        ceiling: 1,
        grow_after: Duration::from_secs(3600),
    };
}

/// The user texts the emulator received, in arrival order.
fn upstream_texts(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .iter()
        .map(|r| {
            let input = r.body["input"].as_array().cloned().unwrap_or_default();
            input
                .iter()
                .rev()
                .find(|i| i["role"] == "user")
                .map(|i| {
                    i["content"]
                        .as_array()
                        .and_then(|c| c.first())
                        .and_then(|p| p["text"].as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn interactive_turns_go_before_background_work() {
    let f = Fleet::start(None, 1, |c| {
        one_slot(c);
        c.small_model = "gpt-6-luna".into();
    })
    .await;
    let holder = one_slot_held(&f, "prio").await;
    let mut queued = Vec::new();
    // Background work arrives first: a sub-agent, memory generation, the small model.
    let bg: [(&str, &[(&str, &str)]); 2] = [
        ("bg-review", &[("x-openai-subagent", "review")]),
        ("bg-memgen", &[("x-openai-memgen-request", "true")]),
    ];
    for (i, (text, headers)) in bg.into_iter().enumerate() {
        queued.push(tokio::spawn(f.chat(text, text, headers, true)));
        f.until_health("queued", |h| h["queued"] == i + 1).await;
    }
    let small = f.http.post(format!("{}/v1/chat/completions", f.base)).json(
        &json!({"model": "claude-haiku-4-5", "stream": false, "prompt_cache_key": "bg-small",
                "messages": [{"role": "user", "content": "bg-small"}]}),
    );
    let small = tokio::spawn(async move { small.send().await.unwrap().status().as_u16() });
    f.until_health("queued", |h| h["queued"] == 3).await;
    queued.push(tokio::spawn(f.chat("interactive", "fg", &[], true)));
    f.until_health("queued", |h| h["queued"] == 4).await;
    f.emu.open_gate("prio");
    let (status, _, body) = holder.await.unwrap();
    assert_complete(status, &body);
    all_complete(queued).await;
    assert_eq!(small.await.unwrap(), 200);
    let texts = upstream_texts(&f.emu);
    assert_eq!(
        texts[1..],
        ["interactive", "bg-review", "bg-memgen", "bg-small"],
        "{texts:?}"
    );
}

#[tokio::test]
async fn conversations_take_turns_in_the_queue() {
    let f = Fleet::start(None, 1, one_slot).await;
    let holder = one_slot_held(&f, "fair").await;
    let mut queued = Vec::new();
    // Conversation A queues three turns before conversation B queues one.
    for (i, (text, key)) in [
        ("a1", "conv-a"),
        ("a2", "conv-a"),
        ("a3", "conv-a"),
        ("b1", "conv-b"),
    ]
    .into_iter()
    .enumerate()
    {
        queued.push(tokio::spawn(f.chat(text, key, &[], true)));
        f.until_health("queued", |h| h["queued"] == i + 1).await;
    }
    f.emu.open_gate("fair");
    let (status, _, body) = holder.await.unwrap();
    assert_complete(status, &body);
    all_complete(queued).await;
    let texts = upstream_texts(&f.emu);
    assert_eq!(texts[1..], ["a1", "b1", "a2", "a3"], "{texts:?}");
}

#[tokio::test]
async fn past_the_queue_timeout_the_client_gets_a_429_in_its_own_shape() {
    let f = Fleet::start(None, 1, |c| {
        one_slot(c);
        c.queue_timeout = Duration::from_millis(300);
    })
    .await;
    let holder = one_slot_held(&f, "timeout").await;
    let (status, headers, body) = f.chat("late", "late", &[], true).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "5");
    let e: Value = serde_json::from_str(&body).unwrap();
    // OpenAI's own 429 shape: type `requests`, code `rate_limit_exceeded`.
    assert_eq!(e["error"]["type"], "requests", "{e}");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded", "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("concurrency") && msg.contains("saturated"),
        "{msg}"
    );
    let r = f
        .http
        .post(format!("{}/v1/messages", f.base))
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "late too"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "5");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["type"], "rate_limit_error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("saturated"),
        "{e}"
    );
    assert_eq!(
        f.emu.stats().responses_requests,
        1,
        "timed-out requests never went upstream"
    );
    assert_eq!(f.account(0).await["timed_out"], 2);
    f.emu.open_gate("timeout");
    let (status, _, body) = holder.await.unwrap();
    assert_complete(status, &body);
}

#[tokio::test]
async fn a_client_that_disconnects_while_queued_leaves_the_queue_at_once() {
    let f = Fleet::start(None, 1, one_slot).await;
    let holder = one_slot_held(&f, "gone").await;
    let waiter = tokio::spawn(f.chat("gave up", "quitter", &[], true));
    f.until_health("queued", |h| h["queued"] == 1).await;
    waiter.abort();
    f.until_health("the queue emptied", |h| h["queued"] == 0)
        .await;
    f.emu.open_gate("gone");
    let (status, _, body) = holder.await.unwrap();
    assert_complete(status, &body);
    let (status, _, body) = f.chat("next", "next", &[], true).await;
    assert_complete(status, &body);
    assert_eq!(
        upstream_texts(&f.emu)[1..],
        ["next"],
        "the abandoned request never went upstream"
    );
}

#[tokio::test]
async fn failures_before_the_first_byte_are_retried_and_never_reach_the_client() {
    let f = Fleet::start(Some(3), 1, |_| {}).await;
    // Overloaded right after response.created, twice: the third attempt streams.
    let (status, _, body) = f.chat("EMU:flakyevent:2 one", "k1", &[], true).await;
    assert_complete(status, &body);
    assert!(body.contains("Hello") || body.contains("content"), "{body}");
    // The same for a non-streaming call.
    let (status, _, body) = f.chat("EMU:flakyevent:1 two", "k2", &[], false).await;
    assert_eq!(status, 200, "{body}");
    // An HTTP/1.1 connection closed after the request went out: it may have started a
    // generation, so it is not sent again; the client gets a 502 in its shape.
    let (status, _, body) = f.chat("EMU:flakyreset:2 three", "k3", &[], true).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream"), "{body}");
    // 503 as a status.
    let (status, _, body) = f.chat("EMU:flaky:2 four", "k4", &[], true).await;
    assert_complete(status, &body);
    let texts = upstream_texts(&f.emu);
    let count = |p: &str| texts.iter().filter(|t| t.starts_with(p)).count();
    assert_eq!(
        (
            count("EMU:flakyevent:2"),
            count("EMU:flakyevent:1"),
            count("EMU:flakyreset"),
            count("EMU:flaky:2")
        ),
        (3, 2, 1, 3),
        "{texts:?}"
    );
    let h = f.account(0).await;
    assert_eq!((n(&h["open"]), n(&h["queued"])), (0, 0), "{h}");
}

#[tokio::test]
async fn a_stream_that_fails_after_output_is_not_retried() {
    let f = Fleet::start(None, 1, |_| {}).await;
    // `EMU:cut` streams text, then the connection drops: the client saw bytes.
    let (status, _, body) = f.chat("EMU:cut", "cut", &[], true).await;
    assert_eq!(status, 200);
    assert!(body.contains("This stream"), "{body}");
    assert!(
        body.contains("error"),
        "the failure is reported in-stream: {body}"
    );
    // Non-streaming: the generation produced output, so it is not run again either.
    let (status, _, body) = f.chat("EMU:cut", "cut2", &[], false).await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(f.emu.stats().responses_requests, 2, "one attempt each");
}

#[tokio::test]
async fn two_accounts_share_the_load() {
    let f = Fleet::start(Some(3), 2, |_| {}).await;
    let agents = f.agents(12, "pair");
    let h = f
        .until_health("both windows full, 6 queued", |h| {
            h["accounts"][0]["open"] == 3 && h["accounts"][1]["open"] == 3 && h["queued"] == 6
        })
        .await;
    assert_ne!(h["accounts"][0]["label"], h["accounts"][1]["label"], "{h}");
    // The backend sees the same: three streams open on each account.
    until(
        "3 open streams upstream on each account",
        Duration::from_secs(10),
        || {
            f.ids
                .iter()
                .all(|id| f.emu.account_stats(id).open_streams == 3)
        },
    )
    .await;
    f.emu.open_gate("pair");
    all_complete(agents).await;
    let (a, b) = (
        f.emu.account_stats(&f.ids[0]),
        f.emu.account_stats(&f.ids[1]),
    );
    assert_eq!(a.requests + b.requests, 12);
    assert!(a.requests >= 3 && b.requests >= 3, "{a:?} {b:?}");
    assert_eq!(f.refusals(), 0);
}

#[tokio::test]
async fn a_conversation_stays_on_its_account_across_turns() {
    let f = Fleet::start(None, 2, |_| {}).await;
    let mut history = vec![json!({"role": "user", "content": "turn 1"})];
    let mut counts = Vec::new();
    for turn in 1..=4 {
        // Another conversation in between, so both accounts get work.
        let (status, _, body) = f.chat("other", &format!("other-{turn}"), &[], true).await;
        assert_complete(status, &body);
        let r = f
            .http
            .post(format!("{}/v1/chat/completions", f.base))
            .json(&json!({"model": "gpt-5.5", "prompt_cache_key": "sticky", "messages": history}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        history.push(v["choices"][0]["message"].clone());
        history.push(json!({"role": "user", "content": format!("turn {}", turn + 1)}));
        let sticky: Vec<usize> = f
            .ids
            .iter()
            .map(|id| {
                f.emu
                    .requests()
                    .iter()
                    .filter(|r| r.body["prompt_cache_key"] == "sticky")
                    .filter(|r| header(r, "chatgpt-account-id") == Some(id.as_str()))
                    .count()
            })
            .collect();
        counts.push(sticky);
    }
    let last = counts.last().unwrap();
    assert!(
        last == &vec![4, 0] || last == &vec![0, 4],
        "all four turns on one account: {counts:?}"
    );
    let others: u64 = f
        .ids
        .iter()
        .map(|id| f.emu.account_stats(id).requests)
        .sum();
    assert_eq!(others, 8);
    assert!(
        f.ids.iter().all(|id| f.emu.account_stats(id).requests > 0),
        "new conversations spread over both accounts"
    );
}

/// A Responses turn that yields encrypted reasoning, on conversation `key`.
async fn reasoning_turn(f: &Fleet, key: &str, input: Value) -> (u16, Value) {
    let r = f
        .http
        .post(format!("{}/v1/responses", f.base))
        .json(
            &json!({"model": "gpt-5.5", "prompt_cache_key": key, "input": input,
            "reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"],
            "store": false}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn header<'a>(r: &'a codex_as_api::emulator::RecordedRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn account_of(emu: &Emulator, ids: &[String], key: &str) -> Vec<usize> {
    emu.requests()
        .iter()
        .filter(|r| r.body["prompt_cache_key"] == key)
        .map(|r| {
            let id = header(r, "chatgpt-account-id").unwrap();
            ids.iter().position(|i| i == id).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_usage_limit_cools_the_account_and_the_conversation_moves_without_its_reasoning() {
    let f = Fleet::start(None, 2, |_| {}).await;
    let first = json!([{"role": "user", "content": "EMU:reasoning think first"}]);
    let (status, v) = reasoning_turn(&f, "mover", first.clone()).await;
    assert_eq!(status, 200, "{v}");
    let output = v["output"].as_array().unwrap().clone();
    assert!(
        output
            .iter()
            .any(|i| i["type"] == "reasoning" && i["encrypted_content"].is_string()),
        "{v}"
    );
    let home = account_of(&f.emu, &f.ids, "mover")[0];
    let away = 1 - home;
    let resets_at = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800) as i64;
    f.emu.set_usage_limit(&f.ids[home], Some(resets_at));
    // Turn 2 replays turn 1's output, reasoning included.
    let mut input = first.as_array().unwrap().clone();
    input.extend(output);
    input.push(json!({"role": "user", "content": "turn 2"}));
    let (status, v) = reasoning_turn(&f, "mover", Value::Array(input)).await;
    assert_eq!(status, 200, "the usage limit never reached the client: {v}");
    assert_eq!(account_of(&f.emu, &f.ids, "mover"), [home, home, away]);
    let moved = f.emu.requests().pop().unwrap();
    let items = moved.body["input"].as_array().unwrap();
    assert!(
        !items.iter().any(|i| i["type"] == "reasoning"),
        "reasoning sealed for the old account was dropped: {items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i["type"] == "message" && i["role"] == "assistant")
    );
    let h = f.account(home).await;
    assert_eq!(h["cooled_until"], resets_at, "{h}");
    // The cooled account gets no new work: new conversations go to the other one.
    for i in 0..3 {
        let (status, _, body) = f.chat("new", &format!("fresh-{i}"), &[], true).await;
        assert_complete(status, &body);
    }
    let s = f.emu.account_stats(&f.ids[home]);
    assert_eq!(s.usage_limit_refusals, 1, "{s:?}");
    assert_eq!(f.emu.account_stats(&f.ids[away]).requests, 4);
}

#[tokio::test]
async fn when_every_account_is_limited_the_client_gets_the_earliest_reset_at_once() {
    let f = Fleet::start(None, 2, |_| {}).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    f.emu.set_usage_limit(&f.ids[0], Some(now + 600));
    f.emu.set_usage_limit(&f.ids[1], Some(now + 7200));
    let (status, headers, body) = f.chat("hi", "limited", &[], true).await;
    assert_eq!(status, 429, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("every configured account"), "{msg}");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&after), "the earliest reset: {after}");
    let sent = f.emu.stats().responses_requests;
    assert_eq!(sent, 2, "each account was asked once");
    // Later requests are answered at once, without asking the backend.
    let r = f
        .http
        .post(format!("{}/v1/messages", f.base))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error", "{e}");
    assert_eq!(f.emu.stats().responses_requests, sent);
    let h = f.health().await;
    assert_eq!(h["accounts"][0]["cooled_until"], now + 600, "{h}");
    assert_eq!(h["accounts"][1]["cooled_until"], now + 7200, "{h}");
}

#[tokio::test]
async fn a_bad_entry_in_accounts_is_named_in_health_and_the_rest_serve() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good").join("auth.json");
    std::fs::create_dir_all(good.parent().unwrap()).unwrap();
    emu.issue_credentials(3600).write_auth_json(&good).unwrap();
    let missing = dir.path().join("missing").join("auth.json");
    let broken = dir.path().join("broken").join("auth.json");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, "{not json").unwrap();
    let mut config = Config::for_tests(&emu.base_url(), good.clone());
    config.token_url = emu.token_url();
    config.codex_home = dir.path().to_path_buf();
    config.accounts = [&missing, &good, &broken]
        .into_iter()
        .map(|p| AccountSpec {
            path: p.clone(),
            label: None,
        })
        .collect();
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();
    let h: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["auth_available"], true, "{h}");
    let accounts = h["accounts"].as_array().unwrap();
    let labels: Vec<&str> = accounts
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["missing", "good", "broken"]);
    assert_eq!(accounts[1]["available"], true);
    assert_eq!(accounts[1]["problem"], Value::Null);
    for (i, path) in [(0, &missing), (2, &broken)] {
        assert_eq!(accounts[i]["available"], false, "{h}");
        let problem = accounts[i]["problem"].as_str().unwrap();
        assert!(problem.contains(&path.display().to_string()), "{problem}");
    }
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    let access = saved["tokens"]["access_token"].as_str().unwrap();
    assert!(!h.to_string().contains(access), "no token in /health");
    for _ in 0..3 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        emu.stats().responses_requests,
        3,
        "all served by the good account"
    );
}

#[tokio::test]
async fn with_no_usable_account_the_client_gets_the_login_hint() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a").join("auth.json");
    let b = dir.path().join("b").join("auth.json");
    let mut config = Config::for_tests(&emu.base_url(), a.clone());
    config.accounts = [a, b]
        .into_iter()
        .map(|path| AccountSpec { path, label: None })
        .collect();
    let server = Server::bind(config).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", server.addr()))
        .json(&json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("login"),
        "{e}"
    );
    assert_eq!(emu.stats().responses_requests, 0);
}

#[tokio::test]
async fn usage_reports_every_account() {
    let f = Fleet::start(None, 2, |_| {}).await;
    let u: Value = f
        .http
        .get(format!("{}/usage", f.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = u["accounts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{u}");
    assert_eq!(u["account"], list[0]["account"]);
    assert_ne!(list[0]["account"], list[1]["account"]);
    for a in list {
        assert_eq!(a["source"], "wham/usage", "{a}");
    }
    // `codex-as-api usage --accounts`: every account, under its label.
    let list: Vec<String> = f.paths.iter().map(|p| p.display().to_string()).collect();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_codex-as-api"));
    cmd.args(["usage", "--json", "--accounts", &list.join(",")])
        .args([
            "--upstream-url",
            &f.emu.base_url(),
            "--token-url",
            &f.emu.token_url(),
        ])
        .env("CODEX_HOME", f.dir.path());
    // The emulator runs on this test's runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["acct0", "acct1"], "{doc}");
    for a in doc.as_array().unwrap() {
        assert!(a["usage"]["rate_limit"].is_object(), "{a}");
    }
}

#[tokio::test]
async fn an_h2_stream_refused_before_any_output_is_retried_on_the_tls_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmulatorConfig {
        account_concurrency: Some(3),
        ..EmulatorConfig::default()
    };
    let (emu, mut config) = common::tls_emulator(cfg, dir.path(), 3600).await;
    // The h2 path: a refused stream is provably unprocessed.
    config.upstream_transport = codex_as_api::config::Transport::Sse;
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();
    for (text, stream) in [
        ("EMU:flakyreset:2 h2", true),
        ("EMU:flakyreset:1 h2 unary", false),
    ] {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "gpt-5.5", "stream": stream,
                "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if stream {
            assert_complete(status, &body);
        } else {
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(
        emu.stats().responses_requests,
        5,
        "2 + 1 resets, then one answer each"
    );
    assert_eq!(
        server.state().pool.h2_connections(),
        1,
        "one h2 connection: resets were per stream"
    );
}
