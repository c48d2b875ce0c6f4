//! The streaming hot path's upstream connections: HTTP/1.1 connections kept in our own
//! pool and driven by the body that reads them, in the same task.
//!
//! Owns: connecting (the hyper-rustls connector, ALPN `http/1.1`), the idle pool (LIFO,
//! capped, with an idle timeout), sending one request on a pooled or new connection
//! (retrying once on a fresh connection when a reused one turns out to be closed), and
//! [`HttpBody`], the response body that polls its own connection (`stream::Upstream` wraps
//! it, as it wraps the WebSocket transport's body).
//!
//! Which path: a plain `http://` upstream (the emulator, a local backend) gets driven
//! HTTP/1.1 connections, one per stream; an `https://` upstream (chatgpt.com) goes through
//! the h2 pool (`h2pool`), which multiplexes the streams over a few h2 connections (the
//! shared client only when the peer does not offer h2). Over TLS a connection per stream costs ~90 KB of RSS (TLS and HTTP buffers,
//! measured with 10,000 slow streams) and two descriptors per stream; h2 holds a slow stream
//! in a few KB, and upstream events at model speed never pile up in one read anyway.
//!
//! Why: with hyper-util's pooled client, the connection runs in its own task and hands
//! every HTTP chunk to the response body through a channel that holds one chunk — a task
//! wake-up and switch per upstream event, and the body can never see more than one event
//! per poll, so the client gets a frame and a write per event (the measured ~0.5x of direct
//! throughput). Here [`HttpBody::poll_frame`] polls the connection itself: one socket read
//! that delivered many events is decoded and drained in one pass of `body::Translate`,
//! which then writes them to the client as one frame. Nothing waits for more bytes.
//!
//! Does not own: the Responses WebSocket transport (`ws`, which connects through
//! `Pool::connect_io`), other upstream calls (token refresh, models), which use the shared
//! `client::HttpClient` (h2 by ALPN where the server offers it).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::failure;
use super::h2pool::{H2Pool, Sent, Slot};
use super::proxy::Connector;
use bytes::Bytes;
use h2::RecvStream;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::client::{ReqBody, error_chain};
use crate::error::Error;

pub(super) type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Conn = http1::Connection<Io, ReqBody>;
type Sender = http1::SendRequest<ReqBody>;

/// Idle connections kept at most.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused (servers close theirs
/// after about a minute; reusing one they are closing costs a retry).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// How long a checked-out idle connection may take to report ready.
const READY_WAIT: Duration = Duration::from_millis(200);

/// One connection: the request handle and the connection state machine, driven by
/// whoever holds it.
struct Driven {
    send: Sender,
    /// `None` once the connection future finished (closed or failed).
    conn: Option<Conn>,
}

impl Driven {
    /// Polls the connection; returns false once it is finished.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.conn = None;
                false
            }
        }
    }
}

struct Idle {
    driven: Box<Driven>,
    since: Instant,
}

/// The pool of driven upstream connections (one upstream origin in practice).
pub struct Pool {
    connector: Mutex<HttpsConnector<Connector>>,
    idle: Mutex<Vec<Idle>>,
    /// Streams to `https://` upstreams: h2 connections with free stream slots.
    h2: Arc<H2Pool>,
    /// For `https://` upstreams that do not speak h2.
    shared: super::client::HttpClient,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool whose TLS trusts webpki roots plus the PEM roots of `ca_file`.
    pub fn new(
        ca_file: Option<&Path>,
        proxy: Option<&str>,
        h2_limits: super::h2pool::Limits,
        shared: super::client::HttpClient,
    ) -> Result<Arc<Pool>, Error> {
        let h2 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::client::tls_config(ca_file)?)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Connector::new(proxy));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(super::client::tls_config(ca_file)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(Connector::new(proxy));
        Ok(Arc::new(Pool {
            connector: Mutex::new(https),
            idle: Mutex::new(Vec::new()),
            h2: H2Pool::new(h2, h2_limits),
            shared,
        }))
    }

    /// Open h2 connections to an `https://` upstream (for tests and stats).
    pub fn h2_connections(&self) -> usize {
        self.h2.connections()
    }

    /// A connected stream (TLS for `https://`) on which a WebSocket handshake runs.
    pub(super) async fn connect_io(&self, uri: &Uri) -> Result<Io, Error> {
        let connecting = {
            let mut c = lock(&self.connector);
            c.call(uri.clone())
        };
        connecting
            .await
            .map_err(|e| Error::unreachable(format!("cannot reach the upstream at {uri}: {e}")))
    }

    /// Sends `req` and returns the response head; its body drives the connection.
    pub async fn request(
        self: &Arc<Self>,
        req: Request<ReqBody>,
    ) -> Result<Response<HttpBody>, Error> {
        if req.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
            // Boxed: the driven path's state (a connection, its handshake) is ~8 KB, and
            // every request future would otherwise carry room for it, HTTPS ones too.
            return Box::pin(self.request_driven(req)).await;
        }
        let req = match self.h2.request(req).await? {
            Sent::Response(resp, slot) => {
                let (parts, body) = resp.into_parts();
                return Ok(Response::from_parts(parts, HttpBody::h2(body, slot, self)));
            }
            Sent::NotH2(req) => req,
        };
        let resp = self.shared.request(req).await.map_err(|e| {
            let err = Error::unreachable(format!("cannot reach the upstream: {}", error_chain(&e)));
            // Retried only when provably not processed: no connection, or the h2 stream
            // refused (RFC 9113 §8.7). Anything else may have started a generation.
            if e.is_connect() || failure::refused_stream(&e) {
                err
            } else {
                err.not_retryable()
            }
        })?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, HttpBody::new(body, None, self)))
    }

    /// A plain-HTTP request on a pooled driven connection, or a new one.
    async fn request_driven(
        self: &Arc<Self>,
        req: Request<ReqBody>,
    ) -> Result<Response<HttpBody>, Error> {
        if let Some(driven) = self.checkout().await {
            let copy = copy_request(&req);
            match self.send(driven, req).await {
                Ok(resp) => return Ok(resp),
                // A reused connection the server had closed before the request went out:
                // one more try on a fresh connection is safe. (Closed after it went out
                // — an incomplete message — it may have started a generation: no retry.)
                Err(e) if failure::unsent(&e) => {
                    tracing::debug!(error = %e, "pooled upstream connection was closed; reconnecting");
                    return self.send_fresh(copy).await;
                }
                Err(e) => return Err(failure::transport(e)),
            }
        }
        self.send_fresh(req).await
    }

    async fn send_fresh(
        self: &Arc<Self>,
        req: Request<ReqBody>,
    ) -> Result<Response<HttpBody>, Error> {
        let fresh = self.connect(req.uri()).await?;
        self.send(fresh, req).await.map_err(failure::transport)
    }

    async fn send(
        self: &Arc<Self>,
        mut driven: Box<Driven>,
        req: Request<ReqBody>,
    ) -> Result<Response<HttpBody>, hyper::Error> {
        let mut head = std::pin::pin!(driven.send.send_request(req));
        let resp = std::future::poll_fn(|cx| {
            driven.drive(cx);
            head.as_mut().poll(cx)
        })
        .await?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(
            parts,
            HttpBody::new(body, Some(driven), self),
        ))
    }

    async fn connect(&self, uri: &Uri) -> Result<Box<Driven>, Error> {
        let io = self.connect_io(uri).await?;
        // Nothing was written yet: a failure here is as retryable as a connect failure.
        let (send, conn) = http1::Builder::new().handshake(io).await.map_err(|e| {
            Error::unreachable(format!("upstream connection failed: {}", error_chain(&e)))
        })?;
        Ok(Box::new(Driven {
            send,
            conn: Some(conn),
        }))
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Box<Driven>> {
        loop {
            let Idle { mut driven, since } = lock(&self.idle).pop()?;
            if since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let ready = tokio::time::timeout(
                READY_WAIT,
                std::future::poll_fn(|cx| {
                    if !driven.drive(cx) {
                        return Poll::Ready(false);
                    }
                    driven.send.poll_ready(cx).map(|r| r.is_ok())
                }),
            )
            .await;
            if ready == Ok(true) {
                return Some(driven);
            }
        }
    }

    fn put(&self, driven: Box<Driven>) {
        if driven.conn.is_none() || driven.send.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            driven,
            since: Instant::now(),
        });
    }
}

fn copy_request(req: &Request<ReqBody>) -> Request<ReqBody> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// The body of an HTTP response from the pool: a stream of the driven HTTP/1.1 connection
/// (plain HTTP), which it polls itself, of an h2 connection of the pool (TLS), or of the
/// shared client (TLS without h2). At the end of a driven body the connection goes back to
/// the pool; dropped early, it is closed (an h2 stream is reset).
pub struct HttpBody {
    wire: Wire,
    /// Boxed once at connect (and moved, not copied, through the idle pool): the
    /// connection state is large, and an `https://` response has none.
    driven: Option<Box<Driven>>,
    pool: Arc<Pool>,
    /// The stream's slot on its h2 connection (`h2pool`), freed with the body.
    _slot: Option<Slot>,
}

enum Wire {
    Hyper(Incoming),
    H2(RecvStream),
}

/// Why an HTTP response body failed.
#[derive(Debug)]
pub enum HttpError {
    Hyper(hyper::Error),
    H2(h2::Error),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Hyper(e) => e.fmt(f),
            HttpError::H2(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Hyper(e) => e.source(),
            HttpError::H2(e) => e.source(),
        }
    }
}

impl HttpBody {
    fn new(body: Incoming, driven: Option<Box<Driven>>, pool: &Arc<Pool>) -> HttpBody {
        HttpBody {
            wire: Wire::Hyper(body),
            driven,
            pool: Arc::clone(pool),
            _slot: None,
        }
    }

    fn h2(body: RecvStream, slot: Slot, pool: &Arc<Pool>) -> HttpBody {
        HttpBody {
            wire: Wire::H2(body),
            driven: None,
            pool: Arc::clone(pool),
            _slot: Some(slot),
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) {
        if let Some(mut driven) = self.driven.take() {
            // Let the connection see the end of the message and turn idle.
            driven.drive(cx);
            self.pool.put(driven);
        }
    }
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        let body = match &mut this.wire {
            Wire::Hyper(body) => body,
            Wire::H2(stream) => {
                return stream.poll_data(cx).map(|r| {
                    r.map(|d| {
                        let data = d.map_err(HttpError::H2)?;
                        // Read: the peer may send as much again (the window is what one
                        // stream may run ahead of its client).
                        let _ = stream.flow_control().release_capacity(data.len());
                        Ok(Frame::data(data))
                    })
                });
            }
        };
        // Body, then the connection (which reads the socket and queues the next chunk),
        // then the body again: a chunk already read never waits for another wake-up.
        for attempt in 0..2 {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.finish(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.driven = None;
                    return Poll::Ready(Some(Err(HttpError::Hyper(e))));
                }
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Pending => {}
            }
            if attempt == 0 {
                match this.driven.as_mut() {
                    Some(d) => {
                        d.drive(cx);
                    }
                    None => return Poll::Pending,
                }
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        match &self.wire {
            Wire::Hyper(b) => b.is_end_stream(),
            Wire::H2(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.wire {
            Wire::Hyper(b) => b.size_hint(),
            Wire::H2(_) => SizeHint::default(),
        }
    }
}
