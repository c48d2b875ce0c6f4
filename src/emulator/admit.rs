//! The path a parsed `/responses` body takes, whichever transport carried it: [`admit`]
//! (rules, usage limit, open streams, script) and its refusals ([`Refusal`]: status, body,
//! headers), with the account's rate-limit picture ([`RateLimits`]). The SSE route
//! (`routes`) sends a refusal as an HTTP answer; the WebSocket transport (`ws`) wraps it in
//! an `error` frame.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::accounts::{Account, OpenStream};
use super::http::{Resp, json_response, set};
use super::rules;
use super::script::{self, Reply};
use super::shared::Shared;
use super::stream::Sse;
use super::util::{now_secs, random_hex};

/// The account's rate-limit picture, as the `x-codex-*` headers of an SSE answer and the
/// `codex.rate_limits` event of a WebSocket answer both show it (one source for both).
pub(super) struct RateLimits {
    primary_used: f64,
    primary_reset: i64,
    secondary_used: f64,
    secondary_reset: i64,
    limited: bool,
}

impl RateLimits {
    /// `limit_resets_at`: the primary window is used up until then.
    pub(super) fn now(limit_resets_at: Option<i64>) -> RateLimits {
        let now = now_secs();
        let (primary_used, primary_reset) = match limit_resets_at {
            Some(t) => (100.0, t),
            None => (12.0, now + 3600),
        };
        RateLimits {
            primary_used,
            primary_reset,
            secondary_used: 3.0,
            secondary_reset: now + 259_200,
            limited: limit_resets_at.is_some(),
        }
    }

    /// The `x-codex-*` headers.
    pub(super) fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "x-codex-primary-used-percent",
                format!("{:.1}", self.primary_used),
            ),
            ("x-codex-primary-window-minutes", "300".to_owned()),
            ("x-codex-primary-reset-at", self.primary_reset.to_string()),
            (
                "x-codex-secondary-used-percent",
                format!("{:.1}", self.secondary_used),
            ),
            ("x-codex-secondary-window-minutes", "10080".to_owned()),
            (
                "x-codex-secondary-reset-at",
                self.secondary_reset.to_string(),
            ),
            ("x-codex-credits-has-credits", "true".to_owned()),
            ("x-codex-credits-unlimited", "false".to_owned()),
            ("x-codex-credits-balance", "9.99".to_owned()),
        ]
    }

    /// The WebSocket-only `codex.rate_limits` event.
    pub(super) fn event(&self) -> Value {
        json!({
            "type": "codex.rate_limits",
            "plan_type": "plus",
            "rate_limits": {
                "allowed": !self.limited,
                "limit_reached": self.limited,
                "primary": {"used_percent": self.primary_used, "window_minutes": 300, "reset_at": self.primary_reset},
                "secondary": {"used_percent": self.secondary_used, "window_minutes": 10080, "reset_at": self.secondary_reset},
            },
            "credits": {"has_credits": true, "unlimited": false, "balance": "9.99"},
        })
    }
}

/// A `/responses` request answered without a stream: the status, the JSON body and the
/// headers of the HTTP answer. The SSE route sends it as is; the WebSocket route wraps it
/// in an `error` frame (`status`, `error`, `headers`).
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(status: u16, body: Value) -> Refusal {
        Refusal {
            status,
            body,
            headers: vec![("x-request-id", format!("req_{}", random_hex(32)))],
        }
    }

    pub(super) fn unauthorized() -> Refusal {
        Refusal {
            status: 401,
            body: script::token_expired(),
            headers: vec![
                ("x-openai-authorization-error", "token_expired".to_owned()),
                // base64 of {"error":{"code":"token_expired"}}
                (
                    "x-error-json",
                    "eyJlcnJvciI6eyJjb2RlIjoidG9rZW5fZXhwaXJlZCJ9fQ==".to_owned(),
                ),
            ],
        }
    }

    fn rate_limited(mut self, limit_resets_at: Option<i64>) -> Refusal {
        self.headers
            .extend(RateLimits::now(limit_resets_at).headers());
        self
    }

    /// The answer to a [`Reply::Status`].
    fn from_status(reply: script::Status) -> Refusal {
        let script::Status {
            status,
            body,
            retry_after,
            limit_resets_at,
        } = reply;
        let mut r = if status == 401 {
            let mut r = Refusal::unauthorized();
            r.headers
                .push(("x-request-id", format!("req_{}", random_hex(32))));
            r
        } else {
            Refusal::new(status, body)
        };
        if let Some(secs) = retry_after {
            r.headers.push(("retry-after", secs.to_string()));
        }
        if limit_resets_at.is_some() {
            r = r.rate_limited(limit_resets_at);
            r.headers.push(("x-codex-active-limit", "codex".to_owned()));
        }
        r
    }

    /// 429 for a request over the account's limit of open streams: no `Retry-After`, the
    /// usual rate-limit headers.
    fn too_many_streams() -> Refusal {
        Refusal::new(429, script::too_many_streams()).rate_limited(None)
    }

    pub(super) fn into_response(self) -> Resp {
        let mut resp = json_response(self.status, &self.body);
        for (name, value) in &self.headers {
            set(&mut resp, name, value);
        }
        resp
    }
}

/// What the path shared by both transports decided for one `/responses` body.
pub(super) enum Admission {
    /// An answer without a stream.
    Refused(Refusal),
    /// No answer at all (`EMU:flakyreset`).
    Reset,
    /// A scripted stream, after `delay`, holding the account's open-stream slot.
    Stream {
        sse: Sse,
        delay: Option<Duration>,
        open: OpenStream,
    },
}

/// One `/responses` body of an authorized account, whichever transport carried it.
pub(super) struct Admit<'a> {
    pub(super) account: &'a Arc<Account>,
    pub(super) body: &'a Value,
    /// The length of the full body (decoded), for the usage numbers.
    pub(super) body_len: usize,
    pub(super) session_id: Option<&'a str>,
    /// `generate: false` (a WebSocket warm-up): an empty response instead of the script.
    pub(super) warmup: bool,
}

/// The path both transports share once the body is parsed: the rules, the account's usage
/// limit, then its limit of open streams, then the script.
pub(super) fn admit(shared: &Shared, a: &Admit<'_>) -> Admission {
    let secret = shared.account_secret(&a.account.id);
    if let Err(reject) = rules::check(shared, &secret, a.body) {
        return Admission::Refused(Refusal::new(reject.status, reject.body));
    }
    // A limited account refuses without opening a stream.
    if let Some(resets_at) = a.account.usage_limit() {
        a.account.refused_for_usage();
        return Admission::Refused(Refusal::from_status(script::usage_limit(resets_at)));
    }
    // Held until the stream ends or is dropped; a unary answer releases it at once.
    let Some(open) = a.account.try_open(shared.accounts.stream_limit()) else {
        shared
            .counters
            .concurrency_refusals
            .fetch_add(1, Ordering::Relaxed);
        return Admission::Refused(Refusal::too_many_streams());
    };
    let script_req = script::Request {
        body: a.body,
        session_id: a.session_id,
        body_len: a.body_len,
        secret,
    };
    if a.warmup {
        return Admission::Stream {
            sse: script::warmup(shared, &script_req),
            delay: None,
            open,
        };
    }
    match script::respond(shared, &script_req) {
        Reply::Status(reply) => Admission::Refused(Refusal::from_status(reply)),
        Reply::Reset => Admission::Reset,
        Reply::Stream { sse, delay } => Admission::Stream { sse, delay, open },
    }
}
