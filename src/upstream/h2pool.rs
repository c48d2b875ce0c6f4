//! The h2 connections to an `https://` upstream, with as many streams on each as its peer
//! allows, and more connections when they are full.
//!
//! Owns: the set of h2 connections (TLS with ALPN `h2`), a count of open streams on each,
//! the choice of connection for a new stream (the least loaded one with a free slot under
//! the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, read from hyper's `SendRequest`), opening
//! another connection when every one is full (up to `--upstream-max-connections`), waiting
//! for a slot only when that cap is reached, and closing surplus connections idle for
//! `--upstream-idle-secs`. hyper-util's pool, which this replaces for streams, keeps one h2
//! connection per origin and queues every stream beyond the peer's limit behind the others:
//! head-of-line blocking for long agent streams. Does not own: TLS settings (`client`),
//! the plain-HTTP driven connections (`conn`) or retries.
//!
//! A burst does not open a connection per request: a connection being opened, or open but
//! not yet confirmed, is counted at the peer's limit (as last learned; 100 before any),
//! and requests beyond the free slots claim places on it and wait for it. A connection is
//! confirmed when its first response arrives (the peer's SETTINGS came before it, so the
//! limit `SendRequest` reports is then the peer's: the connection is driven in a task of its
//! own, so its SETTINGS cannot be watched as they arrive); until then it carries only its
//! opener's stream, so no stream is ever queued inside h2 behind a limit we did not know yet.
//!
//! Streams use the `h2` crate directly, not hyper's h2 client: hyper hands each request to
//! its connection task through a channel, sends the body from a task of its own once the
//! connection task has granted it capacity, and awaits each response in a third task. That
//! is three task switches and a second write (and TLS record) per request before the
//! upstream has the whole request, and one more switch before the response head reaches
//! the body. Here the caller's task opens the stream and queues HEADERS and the body's DATA
//! together (h2 buffers DATA sent before capacity is granted and flushes both in one write),
//! and it polls the response and its DATA frames itself. The connection task only reads,
//! writes and pings (`--upstream-idle-secs` aside, hyper's keep-alive: a PING every 30 s,
//! the connection closed when its PONG does not come within 20 s).
//!
//! A peer that does not speak h2 (ALPN picked HTTP/1.1) turns the pool off for the rest of
//! the process; requests then take the shared hyper-util client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::client::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, ReqBody, error_chain};
use super::failure::h2_failure;
use super::proxy::Connector;
use crate::error::Error;

/// The connection's transport, as the `h2` crate reads and writes it (tokio's I/O traits
/// over hyper-rustls's stream).
type H2Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// How often a connection is pinged, and how long its PONG may take before it is closed
/// (hyper's keep-alive as this pool set it before it drove h2 itself).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most streams used on one connection, whatever the peer allows.
const MAX_STREAMS_PER_CONNECTION: usize = 1000;
/// Streams a burst expects of a connection before any peer's limit was learned (the common
/// limit of CDN front ends).
const ASSUMED_STREAMS: usize = 100;

struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Streams open on it (slots handed out and not yet dropped).
    open: AtomicUsize,
    /// When it last had no stream open.
    idle_since: Mutex<Instant>,
    /// A response came, so the limit `send` reports is the peer's.
    confirmed: AtomicBool,
    /// The connection task ended (the connection closed or failed).
    closed: Arc<AtomicBool>,
}

impl Conn {
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` as last received (within our cap).
    fn peer_limit(&self) -> usize {
        self.send
            .current_max_send_streams()
            .clamp(1, MAX_STREAMS_PER_CONNECTION)
    }

    /// Streams we put on it at once: the peer's limit once confirmed, else one (its
    /// opener's).
    fn limit(&self) -> usize {
        if self.confirmed.load(Ordering::Acquire) {
            self.peer_limit()
        } else {
            1
        }
    }
}

/// The pool's settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub idle: Duration,
}

/// Every h2 connection to the upstream.
pub struct H2Pool {
    connector: Mutex<HttpsConnector<Connector>>,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Connections being opened (they count against the cap).
    opening: AtomicUsize,
    /// Requests waiting for a place on a connection being opened or not yet confirmed.
    claims: AtomicUsize,
    /// The peer's stream limit as a confirmed connection last showed it; 0 before any.
    learned: AtomicUsize,
    /// A slot was freed, a connection opened or confirmed.
    changed: Arc<tokio::sync::Notify>,
    /// The peer answered ALPN with HTTP/1.1: use the shared client instead.
    unsupported: AtomicBool,
    limits: Limits,
}

/// One open stream's place on its connection; freed when dropped (the response body ends
/// or is dropped).
pub struct Slot {
    conn: Arc<Conn>,
    pool: Arc<H2Pool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.conn.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.conn.idle_since) = Instant::now();
        }
        self.pool.changed.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `request` gives back.
pub enum Sent {
    Response(Response<RecvStream>, Slot),
    /// The peer does not speak h2: send it another way (the request is returned unsent).
    NotH2(Request<ReqBody>),
}

impl H2Pool {
    pub fn new(connector: HttpsConnector<Connector>, limits: Limits) -> Arc<H2Pool> {
        Arc::new(H2Pool {
            connector: Mutex::new(connector),
            conns: Mutex::new(Vec::new()),
            opening: AtomicUsize::new(0),
            claims: AtomicUsize::new(0),
            learned: AtomicUsize::new(0),
            changed: Arc::new(tokio::sync::Notify::new()),
            unsupported: AtomicBool::new(false),
            limits: Limits {
                max_connections: limits.max_connections.max(1),
                idle: limits.idle,
            },
        })
    }

    /// Open connections now (for tests and `/health`).
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Send `req` on a connection with a free stream slot.
    pub async fn request(self: &Arc<Self>, req: Request<ReqBody>) -> Result<Sent, Error> {
        if self.unsupported.load(Ordering::Acquire) {
            return Ok(Sent::NotH2(req));
        }
        let conn = loop {
            // Registered before looking, so a slot freed meanwhile is not missed.
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            match self.pick() {
                Pick::Got(conn) => break conn,
                Pick::Open => match self.open(req.uri()).await {
                    Ok(Some(conn)) => break conn,
                    Ok(None) => return Ok(Sent::NotH2(req)),
                    Err(e) => return Err(e),
                },
                Pick::Wait => changed.await,
                Pick::Claim => {
                    let _claim = Claim(self);
                    changed.await;
                }
            }
        };
        let slot = Slot {
            conn: Arc::clone(&conn),
            pool: Arc::clone(self),
        };
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        let mut send = conn
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| h2_failure(&e, false))?;
        // HEADERS and DATA are queued together and leave in one write: h2 buffers DATA
        // sent before the stream was granted capacity.
        let (response, mut stream) = send
            .send_request(Request::from_parts(parts, ()), body.is_empty())
            .map_err(|e| h2_failure(&e, false))?;
        if !body.is_empty() {
            stream
                .send_data(body, true)
                .map_err(|e| h2_failure(&e, true))?;
        }
        let resp = response.await.map_err(|e| h2_failure(&e, true))?;
        // The first response: the peer's SETTINGS (sent before it) were read, so the
        // limit `send` reports is the peer's.
        if !conn.confirmed.swap(true, Ordering::AcqRel) {
            self.learned.store(conn.peer_limit(), Ordering::Release);
            self.changed.notify_waiters();
        }
        Ok(Sent::Response(resp, slot))
    }

    /// The least loaded connection with a free slot (its slot taken), else whether another
    /// connection may be opened. Drops closed connections and surplus idle ones.
    fn pick(&self) -> Pick {
        let mut conns = lock(&self.conns);
        conns.retain(|c| !c.closed.load(Ordering::Acquire));
        let idle = self.limits.idle;
        let mut kept_idle = false;
        conns.retain(|c| {
            if c.open.load(Ordering::Acquire) > 0 {
                return true;
            }
            // One idle connection stays for the next request; more are closed (dropping
            // the last `SendRequest` ends the connection) once idle long enough.
            let keep = !kept_idle || lock(&c.idle_since).elapsed() < idle;
            kept_idle = true;
            keep
        });
        let best = conns
            .iter()
            .filter(|c| c.open.load(Ordering::Acquire) < c.limit())
            .min_by_key(|c| c.open.load(Ordering::Acquire));
        if let Some(c) = best {
            c.open.fetch_add(1, Ordering::AcqRel);
            return Pick::Got(Arc::clone(c));
        }
        let opening = self.opening.load(Ordering::Acquire);
        // Places on connections still coming (each one's opener holds one of them).
        let coming = opening
            + conns
                .iter()
                .filter(|c| !c.confirmed.load(Ordering::Acquire))
                .count();
        let per = match self.learned.load(Ordering::Acquire) {
            0 => ASSUMED_STREAMS,
            known => known,
        };
        if self.claims.load(Ordering::Acquire) < coming * (per - 1) {
            self.claims.fetch_add(1, Ordering::AcqRel);
            return Pick::Claim;
        }
        if conns.len() + opening < self.limits.max_connections {
            self.opening.fetch_add(1, Ordering::AcqRel);
            return Pick::Open;
        }
        Pick::Wait
    }

    /// Open one more connection and take a slot on it; `None` when the peer chose HTTP/1.1.
    async fn open(self: &Arc<Self>, uri: &Uri) -> Result<Option<Arc<Conn>>, Error> {
        struct Opening<'a>(&'a H2Pool);
        impl Drop for Opening<'_> {
            fn drop(&mut self) {
                self.0.opening.fetch_sub(1, Ordering::AcqRel);
                self.0.changed.notify_waiters();
            }
        }
        let _opening = Opening(self);
        let connecting = lock(&self.connector).call(uri.clone());
        let io = connecting
            .await
            .map_err(|e| Error::unreachable(format!("cannot reach the upstream at {uri}: {e}")))?;
        if !io.connected().is_negotiated_h2() {
            tracing::info!(%uri, "the upstream chose HTTP/1.1 over h2: streams use the shared client");
            self.unsupported.store(true, Ordering::Release);
            return Ok(None);
        }
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .initial_max_send_streams(ASSUMED_STREAMS)
            // As hyper's client: no server push.
            .enable_push(false)
            .handshake::<_, Bytes>(TokioIo::new(io))
            .await
            .map_err(|e| {
                Error::unreachable(format!("upstream h2 handshake failed: {}", error_chain(&e)))
            })?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(conn, Arc::clone(&closed)));
        let conn = Arc::new(Conn {
            send,
            open: AtomicUsize::new(1),
            idle_since: Mutex::new(Instant::now()),
            confirmed: AtomicBool::new(false),
            closed,
        });
        lock(&self.conns).push(Arc::clone(&conn));
        tracing::debug!(
            connections = self.connections(),
            "opened an upstream h2 connection"
        );
        Ok(Some(conn))
    }
}

/// Drives one connection (reads, writes, pings) until it ends, then marks it closed.
/// Dropping the pool's last `SendRequest` with no stream open ends it (GOAWAY).
async fn drive(mut conn: h2::client::Connection<H2Io, Bytes>, closed: Arc<AtomicBool>) {
    let mut pings = conn.ping_pong();
    let mut conn = std::pin::pin!(conn);
    let why = loop {
        tokio::select! {
            r = conn.as_mut() => break r.err().map(|e| error_chain(&e)),
            () = tokio::time::sleep(KEEP_ALIVE_INTERVAL) => {}
        }
        let Some(pings) = pings.as_mut() else {
            continue;
        };
        let pong = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pings.ping(h2::Ping::opaque()));
        tokio::select! {
            r = conn.as_mut() => break r.err().map(|e| error_chain(&e)),
            r = pong => match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Some(error_chain(&e)),
                Err(_) => break Some("no PONG within 20 s".to_owned()),
            },
        }
    };
    closed.store(true, Ordering::Release);
    if let Some(why) = why {
        tracing::debug!(error = %why, "upstream h2 connection ended");
    }
}

enum Pick {
    Got(Arc<Conn>),
    Open,
    Wait,
    /// Wait for a connection being opened or confirmed (a claim on one of its places).
    Claim,
}

/// A claim on a place of a connection still coming, released when its wait ends.
struct Claim<'a>(&'a H2Pool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.claims.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(all(test, feature = "demo"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::emulator::{Emulator, EmulatorConfig};

    /// The pool and its connection task run on this test's one thread; the emulator runs
    /// on a runtime of its own, so the writes counted here are the pool's.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_leaves_in_one_write_headers_and_body_together() {
        let emu_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let emu = emu_rt
            .spawn(Emulator::start(EmulatorConfig {
                tls: true,
                ..EmulatorConfig::default()
            }))
            .await
            .unwrap()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::super::client::tls_config(Some(&ca)).unwrap())
            .https_only()
            .enable_http2()
            .wrap_connector(Connector::new(None));
        let pool = H2Pool::new(
            connector,
            Limits {
                max_connections: 4,
                idle: Duration::from_secs(60),
            },
        );
        let creds = emu.issue_credentials(3600);
        let body = serde_json::json!({
            "model": "gpt-5.5", "instructions": "Be brief.", "store": false, "stream": true,
            "input": [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "EMU:deltas:3"}]}],
        })
        .to_string();
        let request = || {
            Request::post(format!("{}/codex/responses", emu.base_url()))
                .header("authorization", format!("Bearer {}", creds.access_token))
                .header("chatgpt-account-id", &creds.account_id)
                .header("content-type", "application/json")
                .header("accept", "text/event-stream")
                .body(ReqBody::new(Bytes::from(body.clone())))
                .unwrap()
        };
        // The first request opens the connection (handshake, SETTINGS); the second is
        // the one counted.
        for counted in [false, true] {
            let before = crate::test_support::thread_writes();
            let Sent::Response(resp, _slot) = pool.request(request()).await.unwrap() else {
                panic!("the emulator speaks h2");
            };
            let writes = crate::test_support::thread_writes() - before;
            assert_eq!(resp.status(), 200);
            if counted {
                assert_eq!(
                    writes, 1,
                    "HEADERS and the body's DATA must leave in one write"
                );
            }
            let mut body = resp.into_body();
            let mut text = Vec::new();
            while let Some(chunk) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
                let chunk = chunk.unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text).unwrap();
            assert!(text.contains("response.completed"), "{text}");
        }
        drop(pool);
        drop(emu);
        emu_rt.shutdown_background();
    }
}
