//! One log line per request, written when the response body ends.
//!
//! Owns: `RequestLog` (route, status, timings) and `Logged`, the body wrapper that
//! notes the time to first byte and emits the line (target `codex_as_api::request`) when the
//! body ends, or when it is dropped early (the client went away: `outcome = "client_closed"`).
//! Errors are logged the same way, with `outcome = "error:<code>"`.
//!
//! The `Meter` travels from the pipeline to the route as a response extension, so nothing
//! about a request needs threading through every call. The hot path pays one `Option`
//! check per event; usage is recorded once, at the terminal event. Nothing secret is logged:
//! no header, no body, no key.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Method;
use http_body::{Body, Frame, SizeHint};

use super::respond::RespBody;
use crate::error::Error;
pub use crate::upstream::meter::Meter;
use crate::upstream::meter::error_name;

/// The request side of a log line.
#[derive(Debug)]
pub struct RequestLog {
    pub request_id: String,
    pub method: Method,
    pub route: String,
    pub status: u16,
    pub started: Instant,
    pub meter: Option<Arc<Meter>>,
    /// An error answered by the route itself (no pipeline ran).
    pub error: Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl RequestLog {
    pub fn for_error(mut self, err: &Error) -> Self {
        self.error = Some(error_name(err));
        self
    }

    fn emit(&self, ttfb: Option<Duration>, closed_early: bool) {
        let duration_ms = ms(self.started.elapsed());
        let ttfb_ms = ms(ttfb.unwrap_or_default());
        let error = self.error.as_deref().or_else(|| {
            self.meter
                .as_ref()
                .and_then(|m| m.error.get().map(String::as_str))
        });
        let outcome = match (error, closed_early) {
            (Some(e), _) => format!("error:{e}"),
            (None, true) => "client_closed".to_owned(),
            (None, false) => "ok".to_owned(),
        };
        match &self.meter {
            Some(m) => {
                let account = m
                    .account
                    .lock()
                    .ok()
                    .and_then(|a| a.clone())
                    .unwrap_or_default();
                tracing::info!(
                    target: "codex_as_api::request",
                    request_id = %self.request_id,
                    method = %self.method,
                    route = %self.route,
                    client_model = %m.client_model,
                    backend_model = %m.backend_model,
                    status = self.status,
                    input_tokens = m.input.load(Ordering::Relaxed),
                    output_tokens = m.output.load(Ordering::Relaxed),
                    cached_tokens = m.cached.load(Ordering::Relaxed),
                    usage_reported = m.usage_seen.load(Ordering::Relaxed),
                    account = %account.0,
                    moved_from = account.1.as_deref().unwrap_or(""),
                    queued_ms = m.queued_us.load(Ordering::Relaxed) as f64 / 1000.0,
                    attempts = m.attempts.load(Ordering::Relaxed),
                    ttfb_ms,
                    duration_ms,
                    outcome = %outcome,
                    "request"
                )
            }
            None => tracing::info!(
                target: "codex_as_api::request",
                request_id = %self.request_id,
                method = %self.method,
                route = %self.route,
                status = self.status,
                ttfb_ms,
                duration_ms,
                outcome = %outcome,
                "request"
            ),
        }
    }
}

/// A response body of any type, logging its request when it ends.
pub struct Logged<B: Body> {
    inner: B,
    log: Option<RequestLog>,
    ttfb: Option<Duration>,
}

/// Wrap `body` so `log` is emitted when it ends.
pub fn wrap(body: RespBody, log: RequestLog) -> RespBody {
    RespBody::new(Logged {
        inner: body,
        log: Some(log),
        ttfb: None,
    })
}

impl<B: Body + Unpin> Body for Logged<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(_)) => {
                if this.ttfb.is_none()
                    && let Some(l) = &this.log
                {
                    this.ttfb = Some(l.started.elapsed());
                }
            }
            Poll::Ready(None) => {
                if let Some(l) = this.log.take() {
                    let ttfb = this.ttfb.or_else(|| Some(l.started.elapsed()));
                    l.emit(ttfb, false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(l) = self.log.take() {
            // hyper drops a body that says it is over (empty, HEAD) without polling it.
            let ended = self.inner.is_end_stream();
            let ttfb = self.ttfb.or_else(|| ended.then(|| l.started.elapsed()));
            l.emit(ttfb, !ended);
        }
    }
}
