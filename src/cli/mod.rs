//! The user-facing subcommands besides `serve`: `login` (browser PKCE and device-code
//! sign-in, §13), `usage` (the account's rate-limit windows, §19), `claude` (runs Claude
//! Code against this server, its first run done in `onboarding`) and `env` (the same
//! settings as shell exports).
//!
//! Owns: those flows and their terminal output, and the small HTTP helpers they share (one
//! request, a whole small body, a timeout) over the pooled upstream client.
//!
//! Does not own: the auth.json format and its atomic write (`auth::file`), refresh
//! (`auth::TokenStore`), or the server itself (`server`). Secrets never reach the terminal:
//! tokens are written to auth.json only, and error texts carry codes and messages from the
//! issuer, never a token.

pub mod app;
pub(crate) mod claude;
pub(crate) mod login;
pub(crate) mod onboarding;
pub(crate) mod usage;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::upstream::client::HttpClient;

/// Cap on any answer these commands read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Send one request and read the whole (small) answer.
pub(crate) async fn fetch(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, http::HeaderMap, Bytes), String> {
    let uri = req.uri().clone();
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            format!(
                "cannot reach {uri}: {}",
                crate::upstream::client::error_chain(&e)
            )
        })?;
        let status = resp.status();
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {uri} failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, parts.headers, bytes))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{uri} did not answer within {} s", timeout.as_secs()))?
}

/// Writes a command's output to stdout. A closed pipe (`codex-as-api usage | head -1`) is
/// not an error: the reader has what it wanted.
pub fn print_out(text: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// `application/x-www-form-urlencoded` / query escaping of one value.
pub(crate) fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Decode a query string or form body (`+` is a space; last value wins).
pub(crate) fn parse_query(q: &str) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// `n` random bytes as base64url without padding (PKCE verifier, state).
pub(crate) fn random_b64url(n: usize) -> Result<String, String> {
    use base64::Engine;
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// `2026-11-24 08:35 UTC` for a unix time.
pub(crate) fn utc_minutes(secs: i64) -> String {
    let full = crate::auth::file::format_rfc3339(secs, 0);
    match (full.get(..10), full.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => full,
    }
}

/// `3d 4h`, `2h 05m`, `12m`, `now` for a duration in seconds.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "now".to_owned();
    }
    // Round up to whole minutes first, so 3599 s reads `1h 00m`, never `60m`.
    let minutes = (secs + 59) / 60;
    let (d, h, m) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else {
        format!("{m}m")
    }
}

/// Credential errors name `codex login`; from this tool, its own command does the same.
pub(crate) fn login_hint(message: String) -> String {
    if message.contains("codex login") {
        format!("{message} (`codex-as-api login` signs in too.)")
    } else {
        message
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    crate::auth::file::now().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let q = format!("a={}&b=x+y", form_encode("http://127.0.0.1:1455/cb?x=1 2"));
        let m = parse_query(&q);
        assert_eq!(m["a"], "http://127.0.0.1:1455/cb?x=1 2");
        assert_eq!(m["b"], "x y");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(0), "now");
        assert_eq!(human_duration(59), "1m");
        assert_eq!(human_duration(3600), "1h 00m");
        assert_eq!(human_duration(3599), "1h 00m");
        assert_eq!(human_duration(7199), "2h 00m");
        assert_eq!(human_duration(259_199), "3d 0h");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
    }
}
