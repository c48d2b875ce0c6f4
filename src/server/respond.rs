//! Building responses: the one response body type, JSON and error answers (an `Error`
//! in the client's protocol, with `Retry-After` and Anthropic's `x-should-retry`), and the
//! head of a streamed answer. A leaf: the server's other modules use it, it uses none of
//! them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Full, combinators::UnsyncBoxBody};

use crate::error::{Error, Protocol};

/// The response body type of every route.
pub type RespBody = UnsyncBoxBody<Bytes, std::convert::Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> RespBody {
    UnsyncBoxBody::new(Full::new(bytes.into()))
}

/// A JSON response with the request id headers.
pub fn json_response(status: StatusCode, body: Vec<u8>, request_id: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v.clone());
        h.insert("request-id", v);
    }
    resp
}

/// Render an error in `protocol`'s shape with its status and `Retry-After`.
pub fn error_response(err: &Error, protocol: Protocol, request_id: &str) -> Response<RespBody> {
    let status =
        StatusCode::from_u16(err.status(protocol)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, err.body(protocol), request_id);
    // For in-process callers (`Provider`): the error itself, not only its rendering.
    resp.extensions_mut().insert(err.clone());
    if let Some(secs) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if protocol == Protocol::Anthropic {
        let retry = if err.retryable || err.retry_after.is_some() {
            "true"
        } else {
            "false"
        };
        resp.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static(retry));
    }
    resp
}

/// A streamed answer (SSE) of `content_type`, never cached or buffered by proxies.
pub fn stream_response<B>(
    body: B,
    content_type: &'static str,
    request_id: &str,
) -> Response<RespBody>
where
    B: http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
{
    let mut resp = Response::new(RespBody::new(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v.clone());
        h.insert("request-id", v);
    }
    resp
}
