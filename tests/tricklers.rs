//! 2,000 connections trickling a byte a second while 16 streams run: the streams keep their
//! per-delta latency (measured against the same streams alone, in the same run), the
//! tricklers are answered 408 and closed by the request's read deadline, and the server's
//! memory returns to its baseline. The server is the real binary in a child process, so
//! its RSS and descriptors are its own (the tricklers' ends live in this process); the
//! emulator runs here, so a delta's send stamp and its receive time share one clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codex_as_api::emulator::{Emulator, EmulatorConfig, clock_ns};
use common::raw::{self, End};
use common::{trickle, until};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_codex-as-api");
const CHAT: &str = "/v1/chat/completions";
const TRICKLERS: usize = 2000;
const STREAMS: usize = 16;
const DELTAS: usize = 60;
const PACE_MS: u64 = 25;
/// Longer than connecting 2,000 sockets takes on a loaded 2-core machine (CI once took
/// over 6 s), so every trickler is held at once before the first is closed.
const DEADLINE: Duration = Duration::from_secs(10);

/// The server binary, killed when dropped.
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

impl Server {
    fn start(emu: &Emulator, home: &std::path::Path) -> Server {
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("CODEX_HOME", home)
            .env("CODEX_AS_API_UPSTREAM_URL", emu.base_url())
            .env("CODEX_AS_API_TOKEN_URL", emu.token_url())
            .env("CODEX_AS_API_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .args(["--port", "0"])
            .args([
                "--request-read-timeout-secs",
                &DEADLINE.as_secs().to_string(),
            ])
            .args([
                "--account-max-streams",
                "32",
                "--account-max-streams-ceiling",
                "32",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let rest = &line[at + "listening on http://".len()..];
                    let _ = tx.send(rest.chars().take_while(|c| !c.is_whitespace()).collect());
                }
            }
        });
        let addr: String = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a `listening on` line");
        Server { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> u64 {
        raw::rss_bytes(self.pid()).unwrap()
    }

    fn fds(&self) -> usize {
        raw::open_fds(self.pid()).unwrap()
    }
}

/// Stamps (`T@` + 16 digits, the emulator's send time) in `carry` + `data`: receive − send
/// for each, in ns; an incomplete tail is kept.
fn scan_stamps(carry: &mut Vec<u8>, data: &[u8], now: u64, out: &mut Vec<u64>) {
    carry.extend_from_slice(data);
    let mut last_end = 0;
    for i in memchr::memmem::find_iter(carry, b"T@") {
        let Some(digits) = carry.get(i + 2..i + 18) else {
            break;
        };
        if let Some(stamp) = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            last_end = i + 18;
            if stamp != 0 {
                out.push(now.saturating_sub(stamp));
            }
        }
    }
    let keep_from = carry.len().saturating_sub(17).max(last_end);
    carry.drain(..keep_from);
}

/// `STREAMS` concurrent streams of `DELTAS` stamped deltas `PACE_MS` apart: every delta's
/// latency (receive − send), in ns, sorted.
async fn stamped_streams(http: &reqwest::Client, base: &str) -> Vec<u64> {
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let http = http.clone();
        let url = format!("{base}{CHAT}");
        let body = json!({
            "model": "gpt-5.5",
            "stream": true,
            "messages": [{"role": "user", "content": format!("EMU:deltas:{DELTAS} EMU:pace:{PACE_MS} EMU:stamp")}]
        });
        tasks.push(tokio::spawn(async move {
            let mut resp = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let (mut carry, mut lat) = (Vec::new(), Vec::new());
            while let Some(chunk) = resp.chunk().await.unwrap() {
                scan_stamps(&mut carry, &chunk, clock_ns(), &mut lat);
            }
            assert_eq!(lat.len(), DELTAS, "every delta arrived");
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[u64], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[i])
}

/// One trickling connection: half send their head a byte a second, half a whole head and
/// then the body a byte a second. Returns the status it was answered with (0: none), how
/// long after its connect it was closed, and when.
async fn trickler(sock: TcpStream, head_at_once: bool) -> (u16, Duration, Instant) {
    let started = Instant::now();
    let (mut rd, mut wr) = sock.into_split();
    let body = serde_json::to_vec(&json!({
        "model": "gpt-5.5",
        "messages": [{"role": "user", "content": "a body that never finishes"}]
    }))
    .unwrap();
    let head = raw::head(CHAT, &format!("content-length: {}\r\n", body.len()));
    let slow: &[u8] = if head_at_once {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return (0, started.elapsed(), Instant::now());
        }
        &body
    } else {
        head.as_bytes()
    };
    let mut got = Vec::new();
    tokio::select! {
        _ = rd.read_to_end(&mut got) => {}
        _ = trickle(&mut wr, slow, Duration::from_secs(1)) => {}
    }
    (
        raw::parse(&got, End::Closed).status,
        started.elapsed(),
        Instant::now(),
    )
}

/// One round: 2,000 tricklers connected one after another (the listen backlog is finite),
/// the 16 streams run while they trickle, every trickler answered and closed. Returns the
/// streams' latencies, the server's RSS with the tricklers held, and the tricklers' first
/// and last close after connecting.
async fn round(
    server: &Server,
    http: &reqwest::Client,
    base: &str,
) -> (Vec<u64>, u64, Duration, Duration) {
    let fds_before = server.fds();
    let since = Instant::now();
    let mut tricklers = Vec::with_capacity(TRICKLERS);
    for i in 0..TRICKLERS {
        let sock = TcpStream::connect(&server.addr).await.unwrap();
        tricklers.push(tokio::spawn(trickler(sock, i % 2 == 0)));
    }
    let connected = since.elapsed();
    until(
        &format!("every trickler held by the server (connected in {connected:?})"),
        Duration::from_secs(10),
        // Less the connections that may close on their own meanwhile: the streams' idle
        // keep-alive clients and upstream connections (one each per stream at most). Every
        // trickler is still checked one by one below (a 408 each, closed by the deadline).
        || server.fds() + 2 * STREAMS >= fds_before + TRICKLERS,
    )
    .await;
    let rss_held = server.rss();
    let loaded = stamped_streams(http, base).await;
    let streams_ended = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    let (mut fastest, mut slowest) = (Duration::MAX, Duration::ZERO);
    let mut first_closed = None::<Instant>;
    for t in tricklers {
        let (status, after, at) = tokio::time::timeout(DEADLINE + Duration::from_secs(10), t)
            .await
            .expect("every trickler closed by the read deadline")
            .unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        fastest = fastest.min(after);
        slowest = slowest.max(after);
        first_closed = Some(first_closed.map_or(at, |f| f.min(at)));
    }
    assert!(
        first_closed.is_some_and(|f| f > streams_ended),
        "the streams ran while every trickler was held (connected in {connected:?}, streams ended {:?} after the first connect)",
        streams_ended - since
    );
    assert_eq!(statuses.get(&408), Some(&TRICKLERS), "{statuses:?}");
    assert!(
        fastest >= DEADLINE - Duration::from_millis(500)
            && slowest < DEADLINE + Duration::from_secs(5),
        "closed between {fastest:?} and {slowest:?} after connecting (deadline {DEADLINE:?})"
    );
    // The streams just ran may have left more idle keep-alive client and upstream
    // connections than there were before (one each per stream at most); the 2,000
    // tricklers' must all be gone.
    until(
        &format!(
            "every trickler's connection gone from the server ({} descriptors as the wait began, {fds_before} before the round)",
            server.fds()
        ),
        Duration::from_secs(10),
        || server.fds() <= fds_before + 2 * STREAMS,
    )
    .await;
    (loaded, rss_held, fastest, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_connections_are_closed_by_the_deadline_while_16_streams_run_at_unchanged_latency()
 {
    // This process holds the tricklers' ends, the server its own: some to spare for both.
    let need = (TRICKLERS + 1024) as u64;
    match raw::open_files_limit() {
        Some(n) if n >= need => {}
        other => {
            eprintln!(
                "SKIPPED: the open-files soft limit ({other:?}) is below the {need} this test needs; raise it with `ulimit -n {need}`"
            );
            return;
        }
    }
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    emu.issue_credentials(3600)
        .write_auth_json(&home.path().join("auth.json"))
        .unwrap();
    let server = Server::start(&emu, home.path());
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();

    // Warm up (connections, buffers, catalog), then the streams alone.
    stamped_streams(&http, &base).await;
    let alone = stamped_streams(&http, &base).await;
    let rss_cold = server.rss();
    // A first round warms the allocator too: what it frees stays in malloc's arenas (glibc
    // trims only an unpinned top), for the next rounds to reuse. The baseline is after it.
    let (_, rss_first_held, _, _) = round(&server, &http, &base).await;
    let rss_base = server.rss();
    let (loaded, rss_held, fastest, slowest) = round(&server, &http, &base).await;
    // A leak grows the RSS by the same amount every round; the arenas settle once, in
    // whichever round spreads the connections' buffers over a thread's arena first. So the
    // smallest growth of three rounds after the warm one is what a connection keeps.
    let mut afters = vec![rss_base, server.rss()];
    for _ in 0..2 {
        round(&server, &http, &base).await;
        afters.push(server.rss());
    }
    let kept = afters
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .min()
        .unwrap();
    let (a50, a99, amax) = (pct(&alone, 0.5), pct(&alone, 0.99), pct(&alone, 1.0));
    let (l50, l99, lmax) = (pct(&loaded, 0.5), pct(&loaded, 0.99), pct(&loaded, 1.0));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_trickler = rss_first_held.saturating_sub(rss_cold) / TRICKLERS as u64;
    eprintln!(
        "per-delta latency, {STREAMS} streams x {DELTAS} deltas: alone p50 {a50:?} p99 {a99:?} max {amax:?}; \
         with {TRICKLERS} tricklers p50 {l50:?} p99 {l99:?} max {lmax:?}; \
         server RSS: cold {:.1} MiB, first round held {:.1} MiB ({per_trickler} B per trickler); \
         baseline {:.1} MiB, held {:.1} MiB, after each later round {:.1?} MiB; \
         tricklers closed {fastest:?}..{slowest:?} after connecting",
        mib(rss_cold),
        mib(rss_first_held),
        mib(rss_base),
        mib(rss_held),
        afters[1..].iter().map(|&b| mib(b)).collect::<Vec<_>>(),
    );
    // Generous bounds: unchanged within scheduling noise on a loaded 2-core machine.
    let slack = Duration::from_millis(20);
    assert!(l50 <= a50 * 3 + slack, "p50 {l50:?} vs {a50:?} alone");
    assert!(l99 <= a99 * 3 + slack * 5, "p99 {l99:?} vs {a99:?} alone");
    // A held trickler costs the server little, and it is all given back.
    assert!(per_trickler <= 32 * 1024, "{per_trickler} B per trickler");
    assert!(
        kept <= 4 * 1024 * 1024,
        "server RSS grew by at least {:.1} MiB in every round (baseline {:.1} MiB, held {:.1} MiB)",
        mib(kept),
        mib(rss_base),
        mib(rss_held)
    );
}
