//! The one error type of the crate.
//!
//! Owns: the classification of every failure (what went wrong, which side caused it, whether
//! a retry is safe) and its rendering to an HTTP status and a protocol-shaped body. Errors are
//! rendered only at the edge (`server`), once the client's protocol is known.
//!
//! Does not own: mapping upstream bodies to errors (`upstream::failure`), or deciding when to
//! retry (`server::pipeline`).

use std::fmt;

/// Which side of the proxy caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// What went wrong. Each kind has one HTTP status per protocol and one error type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum ErrorKind {
    /// Malformed or unsupported client input (400).
    BadRequest,
    /// The prompt does not fit the model's context window (400, Claude Code's compaction trigger).
    ContextLengthExceeded,
    /// Wrong or missing inbound API key (401).
    Unauthorized,
    /// No ChatGPT credentials (401; the message says `codex login`).
    AuthUnavailable,
    /// ChatGPT credentials that cannot be used: not refreshable, refused by the token
    /// endpoint or by the backend, or of another account (401; the message says `codex login`).
    RefreshFailed,
    /// Refused by a guard (Host check) or an upstream 403 (403).
    Forbidden,
    /// Unknown route or object (404).
    NotFound,
    /// Unknown or unsupported model (404).
    ModelNotFound,
    /// Request body over the limit (413).
    PayloadTooLarge,
    /// The client did not finish its request headers in time (408).
    RequestTimeout,
    /// Request headers over the limit (431).
    HeadersTooLarge,
    /// Upstream usage limit for the plan reached (429, not retried).
    UsageLimit,
    /// Ordinary rate limit (429, retry after a delay).
    RateLimited,
    /// Quota or plan errors such as `usage_not_included` (429).
    QuotaExceeded,
    /// Upstream or local overload, including the concurrent-stream limit (503 / Anthropic 529).
    Overloaded,
    /// Upstream 5xx or an in-stream server error (500).
    UpstreamServer,
    /// Upstream unreachable or speaking nonsense (502).
    BadGateway,
    /// Upstream idle or head timeout (504).
    Timeout,
    /// Endpoint exists but this behaviour is not available (501).
    NotImplemented,
    /// A bug or invariant failure inside the proxy (500).
    Internal,
}

impl ErrorKind {
    /// The OpenAI error `code` of each kind: the one table for error bodies and stream
    /// error events.
    pub fn openai_code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::Unauthorized | ErrorKind::AuthUnavailable | ErrorKind::RefreshFailed => {
                "invalid_api_key"
            }
            ErrorKind::Forbidden => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::HeadersTooLarge => "request_header_fields_too_large",
            ErrorKind::UsageLimit | ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::Overloaded => "server_is_overloaded",
            ErrorKind::UpstreamServer | ErrorKind::Internal => "server_error",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotImplemented => "not_implemented",
        }
    }
}

/// The client protocol an error is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// One failure, with everything needed to render it and to decide on a retry.
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub side: Side,
    /// Human-readable, safe to show (never contains secrets).
    pub message: String,
    /// OpenAI `error.code` (e.g. `context_length_exceeded`); `None` renders as `null`.
    pub code: Option<String>,
    /// OpenAI `error.param`.
    pub param: Option<String>,
    /// Seconds for the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Whether the same request may be sent again (only before the first byte reached the client).
    pub retryable: bool,
    /// A usage limit's reset (unix seconds), so the account can be cooled until then.
    pub resets_at: Option<u64>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let side = match kind {
            ErrorKind::BadRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::NotFound
            | ErrorKind::ModelNotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::HeadersTooLarge => Side::Client,
            ErrorKind::Internal | ErrorKind::NotImplemented => Side::Internal,
            _ => Side::Upstream,
        };
        let retryable = matches!(
            kind,
            ErrorKind::Overloaded
                | ErrorKind::UpstreamServer
                | ErrorKind::BadGateway
                | ErrorKind::RateLimited
                | ErrorKind::Timeout
        );
        Error {
            kind,
            side,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
            retryable,
            resets_at: None,
        }
    }

    /// What went wrong, coarsely (the status and error type follow from it).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// How long to wait before trying again, when the backend or the server said so.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after.map(std::time::Duration::from_secs)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The upstream could not be reached or its connection failed (502
    /// `upstream_unreachable`; retryable unless marked otherwise).
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadGateway, message).with_code("upstream_unreachable")
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_side(mut self, side: Side) -> Self {
        self.side = side;
        self
    }

    pub fn not_retryable(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// HTTP status for this error in `protocol`.
    pub fn status(&self, protocol: Protocol) -> u16 {
        match self.kind {
            ErrorKind::BadRequest | ErrorKind::ContextLengthExceeded => 400,
            ErrorKind::Unauthorized | ErrorKind::AuthUnavailable | ErrorKind::RefreshFailed => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::UsageLimit | ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
            ErrorKind::Overloaded => match protocol {
                Protocol::OpenAi => 503,
                Protocol::Anthropic => 529,
            },
            ErrorKind::UpstreamServer | ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
            ErrorKind::BadGateway => 502,
            ErrorKind::Timeout => 504,
        }
    }

    /// OpenAI `error.type`.
    pub fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::Unauthorized
            | ErrorKind::AuthUnavailable
            | ErrorKind::RefreshFailed
            | ErrorKind::NotFound
            | ErrorKind::ModelNotFound
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::HeadersTooLarge => "invalid_request_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::UsageLimit | ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::RateLimited => "requests",
            ErrorKind::Overloaded
            | ErrorKind::UpstreamServer
            | ErrorKind::BadGateway
            | ErrorKind::Timeout
            | ErrorKind::NotImplemented
            | ErrorKind::Internal => "server_error",
        }
    }

    /// OpenAI `error.code` when none was set explicitly.
    /// The `code` of an HTTP error body: the kind's code, except where OpenAI answers with
    /// `code: null` (a generic invalid request, a refusal, a server error).
    fn openai_default_code(&self) -> Option<&'static str> {
        match self.kind {
            ErrorKind::BadRequest
            | ErrorKind::Forbidden
            | ErrorKind::UpstreamServer
            | ErrorKind::Internal
            | ErrorKind::NotImplemented => None,
            kind => Some(kind.openai_code()),
        }
    }

    /// Anthropic `error.type`.
    pub fn anthropic_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::RequestTimeout
            | ErrorKind::HeadersTooLarge => "invalid_request_error",
            ErrorKind::Unauthorized | ErrorKind::AuthUnavailable | ErrorKind::RefreshFailed => {
                "authentication_error"
            }
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::UsageLimit | ErrorKind::RateLimited | ErrorKind::QuotaExceeded => {
                "rate_limit_error"
            }
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::UpstreamServer
            | ErrorKind::BadGateway
            | ErrorKind::NotImplemented
            | ErrorKind::Internal => "api_error",
        }
    }

    /// `{"error":{"message","type","param","code"}}`
    pub fn openai_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.message.len());
        out.extend_from_slice(b"{\"error\":{\"message\":");
        crate::json::write_str(&mut out, &self.message);
        out.extend_from_slice(b",\"type\":");
        crate::json::write_str(&mut out, self.openai_type());
        out.extend_from_slice(b",\"param\":");
        crate::json::write_opt_str(&mut out, self.param.as_deref());
        out.extend_from_slice(b",\"code\":");
        // OpenAI clients key on `invalid_api_key` for every 401; the specific refresh
        // failure is in the message.
        let code = match self.kind {
            ErrorKind::Unauthorized | ErrorKind::AuthUnavailable | ErrorKind::RefreshFailed => {
                Some("invalid_api_key")
            }
            _ => self.code.as_deref().or(self.openai_default_code()),
        };
        crate::json::write_opt_str(&mut out, code);
        out.extend_from_slice(b"}}");
        out
    }

    /// `{"type":"error","error":{"type","message"}}`
    pub fn anthropic_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.message.len());
        out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
        crate::json::write_str(&mut out, self.anthropic_type());
        out.extend_from_slice(b",\"message\":");
        crate::json::write_str(&mut out, &self.message);
        out.extend_from_slice(b"}}");
        out
    }

    /// The body for `protocol`.
    pub fn body(&self, protocol: Protocol) -> Vec<u8> {
        match protocol {
            Protocol::OpenAi => self.openai_json(),
            Protocol::Anthropic => self.anthropic_json(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_and_a_stream_error_event_agree_on_the_code() {
        use strum::IntoEnumIterator;
        for kind in ErrorKind::iter() {
            let body: serde_json::Value =
                serde_json::from_slice(&Error::new(kind, "m").openai_json()).unwrap_or_default();
            let code = &body["error"]["code"];
            // Either OpenAI's null, or the one code the stream events use too.
            assert!(
                code.is_null() || code == kind.openai_code(),
                "{kind:?}: {code} vs {}",
                kind.openai_code()
            );
        }
        let limited: serde_json::Value =
            serde_json::from_slice(&Error::new(ErrorKind::RateLimited, "m").openai_json())
                .unwrap_or_default();
        assert_eq!(limited["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn overload_is_529_for_anthropic_and_503_for_openai() {
        let e = Error::new(ErrorKind::Overloaded, "busy").with_retry_after(2);
        assert_eq!(e.status(Protocol::Anthropic), 529);
        assert_eq!(e.status(Protocol::OpenAi), 503);
        assert!(e.retryable);
    }

    #[test]
    fn bodies_have_each_protocols_shape() {
        let e = Error::new(ErrorKind::ContextLengthExceeded, "too \"long\"");
        let o: serde_json::Value = serde_json::from_slice(&e.openai_json()).unwrap();
        assert_eq!(o["error"]["code"], "context_length_exceeded");
        assert_eq!(o["error"]["message"], "too \"long\"");
        assert_eq!(o["error"]["param"], serde_json::Value::Null);
        let a: serde_json::Value = serde_json::from_slice(&e.anthropic_json()).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "invalid_request_error");
    }
}
