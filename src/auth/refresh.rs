//! The OAuth token endpoint: one refresh call and the classification of its answer.
//!
//! Owns: the request of §12.3 (JSON body with `client_id`, `grant_type`, `refresh_reason`,
//! `refresh_token`; Codex-style `originator` and `user-agent`; no `Authorization`), the
//! 15 s deadline, and the split of failures into permanent (HTTP 401, with the exact
//! messages of §12.5) and transient (anything else).
//!
//! Does not own: single-flight, locking or persistence (`store`, `file`).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::upstream::client::HttpClient;

/// The public OAuth client id of the Codex CLI.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The `originator` the Codex CLI and `codex login` send by default.
pub const ORIGINATOR: &str = "codex_cli_rs";
/// The Codex CLI version we present ourselves as (kept near a current release).
pub const CLIENT_VERSION: &str = "0.169.0";

const TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BODY: usize = 256 * 1024;

/// Why a refresh happens; sent as `refresh_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Before use, because the access token is about to expire.
    ProactiveExpiry,
    /// After the backend answered 401 to a request.
    UnauthorizedRecovery,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProactiveExpiry => "proactive_expiry",
            Reason::UnauthorizedRecovery => "unauthorized_recovery",
        }
    }
}

/// The token fields of a 200 answer; each is optional. Debug redacts.
pub(crate) struct Refreshed {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Refreshed")
            .field("id_token", &r(&self.id_token))
            .field("access_token", &r(&self.access_token))
            .field("refresh_token", &r(&self.refresh_token))
            .finish()
    }
}

/// A failed refresh.
#[derive(Debug)]
pub(crate) enum Failure {
    /// HTTP 401: the refresh token will never work again. `code` as read from the body.
    Permanent { code: Option<String> },
    /// Network error, timeout, any other status: try again later with the same tokens.
    Transient(Error),
}

/// `User-Agent` in the Codex shape, for this client version.
pub fn user_agent() -> String {
    user_agent_for(CLIENT_VERSION)
}

/// `User-Agent` in the Codex CLI's shape: `codex_cli_rs/<version> (<os>; <arch>) codex-as-api/<ours>`
/// (the backend's requests use the configured client version).
pub fn user_agent_for(client_version: &str) -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Mac OS",
        "windows" => "Windows",
        other => other,
    };
    format!(
        "{ORIGINATOR}/{client_version} ({os}; {}) codex-as-api/{}",
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION")
    )
}

/// One POST to the token endpoint.
pub(crate) async fn call(
    client: &HttpClient,
    token_url: &str,
    refresh_token: &str,
    reason: Reason,
) -> Result<Refreshed, Failure> {
    let body = serde_json::json!({
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_reason": reason.as_str(),
        "refresh_token": refresh_token,
    });
    let body = serde_json::to_vec(&body)
        .map_err(|e| Failure::Transient(Error::internal(format!("refresh body: {e}"))))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(token_url)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header("originator", HeaderValue::from_static(ORIGINATOR))
        .header(header::USER_AGENT, user_agent())
        .header(header::ACCEPT, HeaderValue::from_static("*/*"))
        .body(Full::new(Bytes::from(body)))
        // The URL comes from configuration; say which setting is wrong, not the token.
        .map_err(|e| {
            Failure::Transient(Error::internal(format!(
                "invalid token endpoint URL {token_url:?}: {e}"
            )))
        })?;

    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            transient(
                ErrorKind::BadGateway,
                format!("the token endpoint is unreachable ({e})"),
            )
        })?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                transient(
                    ErrorKind::BadGateway,
                    format!("reading the token endpoint's answer failed ({e})"),
                )
            })?
            .to_bytes();
        Ok::<_, Failure>((status, bytes))
    };
    let (status, bytes) = match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(transient(
                ErrorKind::Timeout,
                format!(
                    "the token endpoint did not answer within {} s",
                    TIMEOUT.as_secs()
                ),
            ));
        }
    };
    classify(status, &bytes)
}

fn transient(kind: ErrorKind, why: String) -> Failure {
    Failure::Transient(Error::new(
        kind,
        format!("Could not refresh the ChatGPT access token: {why}. The request can be retried."),
    ))
}

/// Turn the endpoint's answer into tokens or a classified failure.
pub(crate) fn classify(status: StatusCode, body: &[u8]) -> Result<Refreshed, Failure> {
    if status == StatusCode::UNAUTHORIZED {
        return Err(Failure::Permanent {
            code: error_code(body),
        });
    }
    if !status.is_success() {
        let kind = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            ErrorKind::UpstreamServer
        } else {
            ErrorKind::BadGateway
        };
        let code = error_code(body)
            .map(|c| format!(", code {c}"))
            .unwrap_or_default();
        let mut err = transient(
            kind,
            format!("the token endpoint answered HTTP {status}{code}"),
        );
        if let Failure::Transient(e) = &mut err {
            // Every non-401 answer is temporary by §12.5, whatever its status class.
            e.retryable = true;
        }
        return Err(err);
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(transient(
            ErrorKind::BadGateway,
            "the token endpoint's answer is not a JSON object".to_owned(),
        ));
    };
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(Refreshed {
        id_token: text("id_token"),
        access_token: text("access_token"),
        refresh_token: text("refresh_token"),
    })
}

/// The code of an error body: `{"error":{"code":X}}`, `{"error":"X"}` or `{"code":X}`.
/// Only short identifier-like codes are kept, so nothing echoed by the server (a token,
/// a long message) can travel into our errors.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = match v.get("error") {
        Some(Value::Object(e)) => e.get("code").and_then(Value::as_str),
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
    .or_else(|| v.get("code").and_then(Value::as_str))?;
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    plausible.then(|| code.to_owned())
}

pub(crate) const REUSED: &str = "refresh_token_reused";

/// The exact client-facing message for a permanent failure (§12.5), with the way out.
pub(crate) fn permanent_message(code: Option<&str>) -> String {
    let what = match code {
        Some("refresh_token_expired") => {
            "Your access token could not be refreshed because your refresh token has expired. Please log out and sign in again."
        }
        Some(REUSED) => {
            "Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again."
        }
        Some("refresh_token_invalidated") => {
            "Your access token could not be refreshed because your refresh token was revoked. Please log out and sign in again."
        }
        _ => "Your access token could not be refreshed. Please log out and sign in again.",
    };
    format!("{what} Run `codex login` to sign in again.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_reads_all_three_shapes() {
        let real = br#"{"error":{"message":"Your refresh token has already been used to generate a new access token. Please try signing in again.","type":"invalid_request_error","param":null,"code":"refresh_token_reused"}}"#;
        assert_eq!(error_code(real).as_deref(), Some(REUSED));
        assert_eq!(
            error_code(br#"{"error":"refresh_token_expired"}"#).as_deref(),
            Some("refresh_token_expired")
        );
        assert_eq!(
            error_code(br#"{"code":"refresh_token_invalidated"}"#).as_deref(),
            Some("refresh_token_invalidated")
        );
        assert_eq!(error_code(b"<html>"), None);
        assert_eq!(error_code(br#"{"error":"has spaces in it"}"#), None);
    }

    #[test]
    fn only_401_is_permanent() {
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, br#"{"error":"refresh_token_expired"}"#),
            Err(Failure::Permanent { code: Some(c) }) if c == "refresh_token_expired"
        ));
        for s in [400u16, 403, 429, 500, 503] {
            let status = StatusCode::from_u16(s).unwrap();
            match classify(status, b"{}") {
                Err(Failure::Transient(e)) => assert!(e.retryable, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
        let ok = classify(StatusCode::OK, br#"{"access_token":"a","expires_in":3600}"#).unwrap();
        assert_eq!(ok.access_token.as_deref(), Some("a"));
        assert!(ok.refresh_token.is_none() && ok.id_token.is_none());
        assert!(matches!(
            classify(StatusCode::OK, b"not json"),
            Err(Failure::Transient(_))
        ));
    }

    #[test]
    fn permanent_messages_are_exact() {
        assert_eq!(
            permanent_message(Some(REUSED)),
            "Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again. Run `codex login` to sign in again."
        );
        assert_eq!(
            permanent_message(Some("whatever")),
            "Your access token could not be refreshed. Please log out and sign in again. Run `codex login` to sign in again."
        );
        assert_eq!(permanent_message(None), permanent_message(Some("x")));
    }

    #[test]
    fn user_agent_has_codex_shape() {
        let ua = user_agent();
        assert!(ua.starts_with("codex_cli_rs/0.169.0 ("), "{ua}");
        assert!(HeaderValue::from_str(&ua).is_ok());
    }
}
