//! The emulator's HTTP answers and request headers, shared by the SSE route (`routes`) and
//! the WebSocket transport (`ws`).
//!
//! Owns: the response type ([`Resp`]) and its builders (a JSON or byte body with its
//! content type, one header set), and reading request headers (all of them in order, the
//! session id).

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::stream::EmuBody;

pub(super) type Resp = Response<EmuBody>;

pub(super) fn json_response(status: u16, body: &Value) -> Resp {
    bytes_response(status, "application/json", Bytes::from(body.to_string()))
}

pub(super) fn bytes_response(status: u16, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(EmuBody::Full(Some(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

pub(super) fn set(resp: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// Header names in lower case and values, in arrival order.
pub(super) fn header_list(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `session-id` (or the older `session_id`).
pub(super) fn session_id(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get("session-id")
        .or_else(|| headers.get("session_id"))
        .and_then(|v| v.to_str().ok())
}
