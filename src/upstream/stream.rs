//! [`Upstream`]: one upstream response body, whichever transport carried it.
//!
//! Owns: the body the pipeline reads (`body::Translate` for a stream, `collect` for a
//! non-stream answer, the error-body reader for a status error) over its three sources —
//! an HTTP response from the pool (`conn::HttpBody`, which drives its own connection), a
//! Responses WebSocket answer (`ws::WsBody`, events as SSE `data:` frames), or a short
//! answer already read whole (a WebSocket upgrade refused with a status, an `error` frame
//! with a status) — and [`UpstreamError`], why one failed.
//!
//! Does not own: the transports (`conn`, `ws`), which this module sits over: each hands
//! its own body type, and this one wraps it (`From`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::conn::{HttpBody, HttpError};
use super::ws::WsBody;

/// An upstream response body: a stream of the driven HTTP/1.1 connection (plain HTTP), of
/// the h2 pool (TLS), or of a Responses WebSocket (`ws`), or a short answer already read.
/// Dropped early, its connection (or socket) is closed.
pub struct Upstream {
    source: Source,
}

enum Source {
    Http(HttpBody),
    /// Boxed: a socket's state is large, and most bodies are HTTP ones.
    WebSocket(Box<WsBody>),
    Bytes(Option<Bytes>),
}

impl From<HttpBody> for Upstream {
    fn from(body: HttpBody) -> Upstream {
        Upstream {
            source: Source::Http(body),
        }
    }
}

impl From<WsBody> for Upstream {
    fn from(body: WsBody) -> Upstream {
        Upstream {
            source: Source::WebSocket(Box::new(body)),
        }
    }
}

impl From<Bytes> for Upstream {
    fn from(body: Bytes) -> Upstream {
        Upstream {
            source: Source::Bytes(Some(body)),
        }
    }
}

/// Why an upstream body failed.
#[derive(Debug)]
pub enum UpstreamError {
    Http(HttpError),
    WebSocket(tokio_tungstenite::tungstenite::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Http(e) => e.fmt(f),
            UpstreamError::WebSocket(e) => write!(f, "WebSocket: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Http(e) => e.source(),
            UpstreamError::WebSocket(e) => e.source(),
        }
    }
}

impl Body for Upstream {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match &mut self.source {
            Source::Http(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|r| r.map(|f| f.map_err(UpstreamError::Http))),
            Source::WebSocket(ws) => ws
                .poll_data(cx)
                .map(|r| r.map(|d| d.map(Frame::data).map_err(UpstreamError::WebSocket))),
            Source::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Http(b) => b.is_end_stream(),
            Source::WebSocket(_) => false,
            Source::Bytes(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Http(b) => b.size_hint(),
            Source::WebSocket(_) => SizeHint::default(),
            Source::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
