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
/// Streams assumed on a new connection until the peer's SETTINGS say otherwise (the common
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
}

impl Conn {
    /// Streams the peer lets us open at once here.
    fn limit(&self) -> usize {
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
    /// A slot was freed or a connection opened.
    changed: tokio::sync::Notify,
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
            changed: tokio::sync::Notify::new(),
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
            }
        };
        let slot = Slot {
            conn: Arc::clone(&conn),
            pool: Arc::clone(self),
        };
        let mut send = conn.send.clone();
        match send.send_request(req).await {
            Ok(resp) => Ok(Sent::Response(resp, slot)),
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
        // The connection task keeps `peer_limit` current (hyper reads the peer's SETTINGS
        // on the connection, not on `SendRequest`).
        let peer_limit = Arc::new(AtomicUsize::new(ASSUMED_STREAMS));
        let seen = Arc::clone(&peer_limit);
        tokio::spawn(async move {
            let mut conn = Box::pin(conn);
            let ended = std::future::poll_fn(|cx| {
                let r = conn.as_mut().poll(cx);
                seen.store(conn.current_max_send_streams(), Ordering::Release);
                r
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(error = %error_chain(&e), "upstream h2 connection ended");
            }
        });
        let conn = Arc::new(Conn {
            send,
            peer_limit,
            open: AtomicUsize::new(1),
            idle_since: Mutex::new(Instant::now()),
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
}
