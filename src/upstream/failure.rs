//! Upstream failures → `Error`.
//!
//! Owns: the error taxonomy of codex-backend.md §11 — HTTP statuses before the stream
//! (`from_status`) and terminal in-stream events (`from_terminal`) — mapped to kinds,
//! messages, `Retry-After` and retryability, without losing `resets_at`, plan or codes —
//! and transport failures (`transport`, `h2_failure`): retryable only when the request
//! provably was not processed (never sent, or an h2 `REFUSED_STREAM`).

use http::HeaderMap;

use crate::error::{Error, ErrorKind, Protocol, Side};

/// Cap for `Retry-After` on usage limits: Claude Code waits at least that long, so a reset
/// hours away must not stall a session (the real reset time is in the message).
pub const MAX_RETRY_AFTER: u64 = 3600;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn retry_after_header(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .map(|f| f.ceil().max(0.0) as u64)
}

/// Parse "try again in 11.054s" / "in 250ms" / "in 3 seconds" into whole seconds (≥ 1).
pub fn parse_try_again(message: &str) -> Option<u64> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("try again in ")? + "try again in ".len();
    let rest = &lower[at..];
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let n: f64 = rest[..num_end].parse().ok()?;
    let unit = rest[num_end..].trim_start();
    let secs = if unit.starts_with("ms") {
        n / 1000.0
    } else {
        n
    };
    Some(secs.ceil().max(1.0) as u64)
}

/// Format unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Context needed to word a context-window error.
pub struct PromptSize {
    /// Tokens of the prompt as sent.
    pub tokens: u64,
    /// The model's context window.
    pub window: u64,
}

/// `context_length_exceeded` in each protocol's words (Anthropic's is Claude Code's
/// compaction trigger and must keep this exact format).
pub fn context_exceeded(protocol: Protocol, size: &PromptSize) -> Error {
    let tokens = size.tokens.max(size.window + 1);
    let message = match protocol {
        Protocol::Anthropic => format!(
            "prompt is too long: {tokens} tokens > {} maximum",
            size.window
        ),
        Protocol::OpenAi => format!(
            "This model's maximum context length is {} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages.",
            size.window
        ),
    };
    Error::new(ErrorKind::ContextLengthExceeded, message)
        .with_param("messages")
        .not_retryable()
}

/// An HTTP error status from the backend (before any SSE).
pub fn from_status(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    protocol: Protocol,
    size: impl FnOnce() -> PromptSize,
) -> Error {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let err = &v["error"];
    let detail = v["detail"].as_str();
    let etype = err["type"].as_str().or(err["code"].as_str()).unwrap_or("");
    let code = err["code"].as_str().or(err["type"].as_str());
    let message = err["message"]
        .as_str()
        .or(detail)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            if text.trim().is_empty() {
                format!("upstream answered HTTP {status}")
            } else {
                format!("upstream answered HTTP {status}: {text}")
            }
        });
    let retry_after = retry_after_header(headers);
    match status {
        400 if message.contains("not supported when using Codex with a ChatGPT account") => {
            Error::new(ErrorKind::ModelNotFound, message).with_code("model_not_found")
        }
        400 if code == Some("context_length_exceeded") => context_exceeded(protocol, &size()),
        400 | 404 | 409 | 413 | 422 => {
            let mut e = Error::new(ErrorKind::BadRequest, message).with_side(Side::Upstream);
            if let Some(c) = err["code"].as_str() {
                e = e.with_code(c);
            }
            if let Some(p) = err["param"].as_str() {
                e = e.with_param(p);
            }
            e
        }
        401 => Error::new(
            ErrorKind::RefreshFailed,
            "The ChatGPT backend rejected the credentials even after a refresh. Run `codex login` to sign in again.",
        )
        .not_retryable(),
        403 => Error::new(ErrorKind::Forbidden, format!("upstream refused the request: {message}"))
            .not_retryable(),
        429 => rate_limited(etype, &message, err, retry_after),
        503 => {
            let mut e = Error::new(ErrorKind::Overloaded, message);
            e.retry_after = retry_after.or(Some(1));
            e
        }
        500..=599 => {
            let mut e = Error::new(ErrorKind::UpstreamServer, message);
            e.retry_after = retry_after;
            e
        }
        _ => Error::new(
            ErrorKind::BadGateway,
            format!("upstream answered unexpected HTTP {status}: {message}"),
        ),
    }
}

fn rate_limited(
    etype: &str,
    message: &str,
    err: &serde_json::Value,
    retry_after: Option<u64>,
) -> Error {
    match etype {
        "usage_limit_reached" => {
            let now = now_secs();
            let resets_at = err["resets_at"]
                .as_u64()
                .or_else(|| err["resets_in_seconds"].as_u64().map(|s| now + s));
            let plan = err["plan_type"].as_str().unwrap_or("unknown");
            let wait = resets_at.map(|r| r.saturating_sub(now)).unwrap_or(60);
            let when = resets_at
                .map(|r| format!("; it resets at {} (in {wait} s)", format_utc(r)))
                .unwrap_or_default();
            let mut e = Error::new(
                ErrorKind::UsageLimit,
                format!("The ChatGPT usage limit of your {plan} plan has been reached{when}."),
            )
            .with_code("insufficient_quota")
            .with_retry_after(wait.clamp(1, MAX_RETRY_AFTER))
            .not_retryable();
            e.resets_at = Some(resets_at.unwrap_or(now + 60));
            e
        }
        "usage_not_included" => Error::new(
            ErrorKind::QuotaExceeded,
            format!("Codex usage is not included in this ChatGPT plan: {message}"),
        )
        .not_retryable(),
        "insufficient_quota" => Error::new(ErrorKind::QuotaExceeded, message.to_owned())
            .with_code("insufficient_quota")
            .not_retryable(),
        _ => {
            let mut e = Error::new(ErrorKind::RateLimited, message.to_owned());
            e.retry_after = retry_after.or_else(|| parse_try_again(message)).or(Some(1));
            e
        }
    }
}

/// A terminal in-stream failure (`response.failed` or a top-level `error` event).
pub fn from_terminal(
    code: Option<&str>,
    message: Option<&str>,
    protocol: Protocol,
    size: impl FnOnce() -> PromptSize,
) -> Error {
    let msg = message.unwrap_or("The upstream stream failed.").to_owned();
    match code.unwrap_or("") {
        "context_length_exceeded" => context_exceeded(protocol, &size()),
        "insufficient_quota"
        | "credit_balance_exhausted"
        | "organization_spend_limit_exceeded"
        | "project_spend_limit_exceeded" => Error::new(ErrorKind::QuotaExceeded, msg)
            .with_code("insufficient_quota")
            .not_retryable(),
        "usage_not_included" => Error::new(ErrorKind::QuotaExceeded, msg).not_retryable(),
        "usage_limit_reached" => Error::new(ErrorKind::UsageLimit, msg)
            .with_code("insufficient_quota")
            .not_retryable(),
        "invalid_prompt" | "bio_policy" => Error::new(ErrorKind::BadRequest, msg)
            .with_code("invalid_prompt")
            .not_retryable(),
        "server_is_overloaded" | "slow_down" => {
            Error::new(ErrorKind::Overloaded, msg).with_retry_after(1)
        }
        "rate_limit_exceeded" => {
            let after = parse_try_again(&msg).unwrap_or(1);
            Error::new(ErrorKind::RateLimited, msg).with_retry_after(after)
        }
        other => {
            let e = Error::new(ErrorKind::UpstreamServer, msg);
            if other.is_empty() {
                e
            } else {
                e.with_code(other)
            }
        }
    }
}

/// The stream ended without a terminal event.
pub fn incomplete_stream() -> Error {
    Error::new(
        ErrorKind::BadGateway,
        "The upstream stream ended before completion.",
    )
    .with_code("upstream_stream_incomplete")
}

/// A failed h2 stream of the pool: retryable only when refused (`REFUSED_STREAM`: not
/// processed) or never sent.
pub(super) fn h2_failure(e: &h2::Error, sent: bool) -> Error {
    let err = Error::unreachable(format!(
        "cannot reach the upstream: {}",
        super::client::error_chain(e)
    ));
    if !sent || refused_stream(e) {
        err
    } else {
        err.not_retryable()
    }
}

/// hyper never sent the request (the connection was gone before it was dispatched).
pub(super) fn unsent(e: &hyper::Error) -> bool {
    e.is_canceled() || e.is_closed()
}

/// An h2 `RST_STREAM` / `GOAWAY` with `REFUSED_STREAM` somewhere in the error's chain.
pub(super) fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(err) = src {
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        src = err.source();
    }
    false
}

/// A transport failure of the plain-HTTP path: retryable only when the request was never
/// sent (the handshake failed, or hyper had not dispatched it).
pub(super) fn transport(e: hyper::Error) -> Error {
    let err = Error::unreachable(format!(
        "upstream connection failed: {}",
        super::client::error_chain(&e)
    ));
    if unsent(&e) { err } else { err.not_retryable() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> PromptSize {
        PromptSize {
            tokens: 300_000,
            window: 272_000,
        }
    }

    #[test]
    fn usage_limit_has_bounded_retry_after_and_reset_time() {
        let resets = now_secs() + 7200;
        let body = format!(
            r#"{{"error":{{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_at":{resets}}}}}"#
        );
        let e = from_status(
            429,
            &HeaderMap::new(),
            body.as_bytes(),
            Protocol::Anthropic,
            size,
        );
        assert_eq!(e.kind, ErrorKind::UsageLimit);
        assert_eq!(e.retry_after, Some(MAX_RETRY_AFTER));
        assert!(e.message.contains("plus"));
        assert!(e.message.contains("UTC"));
        assert!(!e.retryable);
    }

    #[test]
    fn context_exceeded_uses_claude_codes_format() {
        let e = from_terminal(
            Some("context_length_exceeded"),
            None,
            Protocol::Anthropic,
            size,
        );
        assert_eq!(
            e.message,
            "prompt is too long: 300000 tokens > 272000 maximum"
        );
        assert_eq!(e.status(Protocol::Anthropic), 400);
        let o = from_terminal(
            Some("context_length_exceeded"),
            None,
            Protocol::OpenAi,
            size,
        );
        assert!(o.message.contains("maximum context length is 272000"));
    }

    #[test]
    fn statuses_map_to_kinds() {
        let h = HeaderMap::new();
        let e = from_status(
            400,
            &h,
            br#"{"detail":"Unsupported parameter: temperature"}"#,
            Protocol::OpenAi,
            size,
        );
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert_eq!(e.message, "Unsupported parameter: temperature");
        let e = from_status(400, &h, br#"{"detail":"The 'gpt-5.3-codex' model is not supported when using Codex with a ChatGPT account."}"#, Protocol::OpenAi, size);
        assert_eq!(e.kind, ErrorKind::ModelNotFound);
        let e = from_status(503, &h, b"", Protocol::Anthropic, size);
        assert_eq!(e.status(Protocol::Anthropic), 529);
        let e = from_status(500, &h, b"oops", Protocol::OpenAi, size);
        assert!(e.retryable);
        assert!(e.message.contains("oops"));
    }

    #[test]
    fn try_again_parsing() {
        assert_eq!(parse_try_again("Please try again in 11.054s."), Some(12));
        assert_eq!(parse_try_again("try again in 250ms"), Some(1));
        assert_eq!(parse_try_again("Try again in 3 seconds"), Some(3));
        assert_eq!(parse_try_again("nope"), None);
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_512_893), "2026-11-24 09:34:53 UTC");
    }
}
