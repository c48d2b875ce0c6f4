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
//! limit is then the peer's: hyper drives the h2 connection in a task of its own, so its
//! SETTINGS cannot be watched as they arrive); until then it carries only its opener's
//! stream, so no stream is ever queued inside h2 behind a limit we did not know yet.
//!
//! A peer that does not speak h2 (ALPN picked HTTP/1.1) turns the pool off for the rest of
//! the process; requests then take the shared hyper-util client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::client::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, ReqBody, error_chain};
use super::proxy::Connector;
use crate::error::Error;

/// The most streams used on one connection, whatever the peer allows.
const MAX_STREAMS_PER_CONNECTION: usize = 1000;
/// Streams a burst expects of a connection before any peer's limit was learned (the common
/// limit of CDN front ends).
const ASSUMED_STREAMS: usize = 100;

struct Conn {
    send: http2::SendRequest<ReqBody>,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection task last saw it.
    peer_limit: Arc<AtomicUsize>,
    /// Streams open on it (slots handed out and not yet dropped).
    open: AtomicUsize,
    /// When it last had no stream open.
    idle_since: Mutex<Instant>,
    /// A response came, and `peer_limit` was read after it: it is the peer's.
    confirmed: Arc<AtomicBool>,
    /// Asks the connection task to read the peer's limit now (after the first response).
    refresh: Arc<tokio::sync::Notify>,
}

impl Conn {
    /// Streams we put on it at once: the peer's limit once confirmed, else one (its
    /// opener's).
    fn limit(&self) -> usize {
        if !self.confirmed.load(Ordering::Acquire) {
            return 1;
        }
        self.peer_limit
            .load(Ordering::Acquire)
            .clamp(1, MAX_STREAMS_PER_CONNECTION)
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
    Response(Response<Incoming>, Slot),
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
        let mut send = conn.send.clone();
        match send.send_request(req).await {
            Ok(resp) => {
                // The first response: the peer's SETTINGS (sent before it) were read; the
                // connection task confirms the connection with its limit.
                if !conn.confirmed.load(Ordering::Acquire) {
                    conn.refresh.notify_one();
                }
                Ok(Sent::Response(resp, slot))
            }
            Err(e) => Err(super::failure::h2_failure(&e)),
        }
    }

    /// The least loaded connection with a free slot (its slot taken), else whether another
    /// connection may be opened. Drops closed connections and surplus idle ones.
    fn pick(&self) -> Pick {
        let mut conns = lock(&self.conns);
        conns.retain(|c| !c.send.is_closed());
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
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .initial_max_send_streams(ASSUMED_STREAMS)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(io)
            .await
            .map_err(|e| {
                Error::unreachable(format!("upstream h2 handshake failed: {}", error_chain(&e)))
            })?;
        // The connection task reads the peer's limit when asked (hyper keeps it on the
        // connection, not on `SendRequest`) and so confirms the connection.
        let peer_limit = Arc::new(AtomicUsize::new(ASSUMED_STREAMS));
        let confirmed = Arc::new(AtomicBool::new(false));
        let refresh = Arc::new(tokio::sync::Notify::new());
        let (seen, sure, asked) = (
            Arc::clone(&peer_limit),
            Arc::clone(&confirmed),
            Arc::clone(&refresh),
        );
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut conn = Box::pin(conn);
            let ended = loop {
                tokio::select! {
                    r = conn.as_mut() => break r,
                    () = asked.notified() => {
                        let limit = conn.current_max_send_streams();
                        seen.store(limit, Ordering::Release);
                        sure.store(true, Ordering::Release);
                        if let Some(pool) = pool.upgrade() {
                            pool.learned.store(
                                limit.clamp(1, MAX_STREAMS_PER_CONNECTION),
                                Ordering::Release,
                            );
                            pool.changed.notify_waiters();
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %error_chain(&e), "upstream h2 connection ended");
            }
        });
        let conn = Arc::new(Conn {
            send,
            peer_limit,
            open: AtomicUsize::new(1),
            idle_since: Mutex::new(Instant::now()),
            confirmed,
            refresh,
        });
        lock(&self.conns).push(Arc::clone(&conn));
        tracing::debug!(
            connections = self.connections(),
            "opened an upstream h2 connection"
        );
        Ok(Some(conn))
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
