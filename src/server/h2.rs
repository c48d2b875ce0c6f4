//! What an h2 client gets beyond hyper's h2 server: the bounds `h1` puts on its own clients.
//!
//! Owns: [`Bounded`], the request body of an h2 client (the request's read deadline at
//! `h1::MIN_BODY_RATE`, trailers under `h1::MAX_TRAILER_BYTES` and counted against the body
//! limit), and [`Watched`], a streaming response body whose client must keep taking it: a
//! stream it has not taken a frame of for `--write-stall-secs` (the client withholds its
//! flow-control window) is dropped, which releases its upstream stream, while the other
//! streams of the connection run on. A client that reads nothing at all, not even pings, is
//! hyper's keep-alive to drop (set up in `server`).
//!
//! Does not own: the h2 connection (hyper, from `server`), routing (`route`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::h1;
use super::respond::RespBody;
use super::route::BoxError;
use crate::config::Config;
use crate::error::{Error, ErrorKind};

/// The request body of an h2 client with the bounds `h1` puts on its own: the request must
/// arrive within `--request-read-timeout-secs` of its head, plus the time its bytes earn at
/// `h1::MIN_BODY_RATE` (else 408), and its trailers stay under `h1::MAX_TRAILER_BYTES` (431)
/// and count against the body limit (413).
pub struct Bounded<B> {
    inner: B,
    due: Instant,
    timeout: Duration,
    /// Armed the first time the body waits for the client.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    received: u64,
    limit: usize,
}

impl<B> Bounded<B> {
    pub fn new(inner: B, config: &Config) -> Bounded<B> {
        Bounded {
            inner,
            due: Instant::now() + config.request_read_timeout,
            timeout: config.request_read_timeout,
            timer: None,
            received: 0,
            limit: config.max_body_bytes,
        }
    }
}

impl<B> http_body::Body for Bounded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    let size: usize = trailers
                        .iter()
                        .map(|(k, v)| k.as_str().len() + v.len() + 4)
                        .sum();
                    let cap = h1::MAX_TRAILER_BYTES;
                    if size > cap {
                        return Poll::Ready(Some(Err(Box::new(Error::new(
                            ErrorKind::HeadersTooLarge,
                            format!(
                                "the request body's trailers are larger than the limit of {cap} bytes"
                            ),
                        )))));
                    }
                    if (this.received as usize).saturating_add(size) > this.limit {
                        return Poll::Ready(Some(Err(Box::new(Error::new(
                            ErrorKind::PayloadTooLarge,
                            format!(
                                "request body is larger than the limit of {} bytes (trailers count)",
                                this.limit
                            ),
                        )))));
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        // Waiting for the client: past the time its bytes earned, it is too slow.
        let due = this.due + h1::earned(this.received);
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= due {
                return Poll::Ready(Some(Err(Box::new(h1::too_slow(this.timeout)))));
            }
            timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A streaming response body to an h2 client, dropped when the client stops taking it.
pub struct Watched {
    watch: Arc<Watch>,
    /// Dropped with the body: the watchdog ends with the stream, not a tick later.
    _ended: tokio::sync::oneshot::Sender<()>,
}

struct Watch {
    /// `None` once the watchdog dropped it.
    body: Mutex<Option<RespBody>>,
    /// When (ms after `epoch`, + 1) a frame was handed to hyper that hyper has not come back
    /// after; 0 while the body itself is waiting (for the upstream).
    handed: AtomicU64,
    epoch: std::time::Instant,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RespBody>> {
        match self.body.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        }
    }
}

impl Watched {
    /// Watch `body` if it streams (a body of known size is handed over at once); a client
    /// that takes none of it for `stall` loses it.
    pub fn wrap(body: RespBody, stall: Duration) -> http_body_util::Either<RespBody, Watched> {
        if body.is_end_stream() || body.size_hint().exact().is_some() {
            return http_body_util::Either::Left(body);
        }
        let watch = Arc::new(Watch {
            body: Mutex::new(Some(body)),
            handed: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        });
        let (ended, ended_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(watchdog(Arc::downgrade(&watch), stall, ended_rx));
        http_body_util::Either::Right(Watched {
            watch,
            _ended: ended,
        })
    }
}

/// Checks the stream every half stall time while it lives; drops its body once a frame
/// has waited a whole stall time for the client.
async fn watchdog(
    watch: Weak<Watch>,
    stall: Duration,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) {
    let stall_ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX);
    let tick = (stall / 2).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut ended => return,
        }
        let Some(w) = watch.upgrade() else {
            return;
        };
        let handed = w.handed.load(Ordering::Acquire);
        if handed != 0 && w.now_ms().saturating_sub(handed) >= stall_ms {
            tracing::info!(
                secs = stall.as_secs(),
                "an h2 client took nothing of its stream for the write stall time; dropped"
            );
            let body = w.lock().take();
            drop(body);
            return;
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let w = &self.watch;
        // Hyper is back for more: the client took what it was handed.
        w.handed.store(0, Ordering::Release);
        let mut body = w.lock();
        let Some(inner) = body.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(Error::new(
                ErrorKind::RequestTimeout,
                "the client stopped reading its stream",
            )))));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                w.handed.store(w.now_ms(), Ordering::Release);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(never))) => match never {},
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.watch.lock().as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
