//! Unary (non-streamed) calls to the backend and the live model catalog.
//!
//! Owns: sending one request to a backend endpoint other than the streamed `/responses`
//! (the model catalog §15, image generation §18, compaction v1 §17.1, `/wham/usage` §19)
//! with the official client's headers and the 401 recovery sequence (reload auth.json →
//! retry → refresh → retry), mapping an error status to `Error`; and `LiveCatalog`, the
//! cached `/codex/models` catalog (an `ArcSwap` read lock-free by every request, refreshed
//! at most every 5 minutes with `If-None-Match`, and when a `/responses` reply announces a
//! new `x-models-etag`), which keeps the built-in list while the backend cannot be reached.
//!
//! Does not own: the streamed `/responses` path (`pipeline`) or what the endpoints answer
//! the client (`route`, `endpoints`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::accounts::Account;
use crate::admission::Class;
use crate::error::{Error, ErrorKind, Protocol};
use crate::server::State;
use crate::upstream::catalog::Catalog;
use crate::upstream::failure::{self, PromptSize};

/// How long a fetched catalog is fresh (the official client's cache time).
pub const CATALOG_TTL: Duration = Duration::from_secs(300);
/// After a failed fetch, the built-in (or last good) catalog serves this long before retrying.
const CATALOG_RETRY: Duration = Duration::from_secs(30);
/// The official client's timeout for the catalog request.
const CATALOG_TIMEOUT: Duration = Duration::from_secs(5);
/// Cap on a unary reply body (image generation answers carry base64 PNGs).
const MAX_REPLY: usize = 64 << 20;

/// One backend reply.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Send one request to `url` with the auth headers, recovering from a 401 once by reloading
/// `auth.json` and once by refreshing. Non-success statuses are returned, not mapped.
pub async fn send(
    state: &State,
    account: &Account,
    method: Method,
    url: &str,
    body: Option<&[u8]>,
    extra: &[(&'static str, HeaderValue)],
    timeout: Duration,
) -> Result<Reply, Error> {
    let mut auth = account.tokens.headers().await?;
    let mut recovery = 0u8;
    loop {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(header::AUTHORIZATION, auth.authorization.clone())
            .header("chatgpt-account-id", auth.account_id.clone())
            .header("originator", "codex_cli_rs")
            .header(
                header::USER_AGENT,
                crate::upstream::request::user_agent(&state.config.client_version),
            )
            .header("version", state.config.client_version.as_str())
            .header(header::ACCEPT, "*/*");
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in extra {
            b = b.header(*k, v.clone());
        }
        let req = b
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| Error::internal(format!("building the upstream request: {e}")))?;
        let resp = match tokio::time::timeout(timeout, state.client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(Error::unreachable(format!(
                    "cannot reach the upstream at {url}: {}",
                    crate::upstream::client::error_chain(&e)
                )));
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("the upstream did not answer {url} within {timeout:?}"),
                ));
            }
        };
        account.record(resp.headers());
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED && recovery < 2 {
            drop(resp);
            if recovery == 0 {
                recovery = 1;
                if let Some(fresh) = account.tokens.reload(&auth).await? {
                    auth = fresh;
                    continue;
                }
            }
            recovery = 2;
            auth = account.tokens.refresh_after_unauthorized(&auth).await?;
            continue;
        }
        let (parts, incoming) = resp.into_parts();
        let collected = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(incoming, MAX_REPLY).collect(),
        )
        .await;
        let body = match collected {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => {
                return Err(Error::new(
                    ErrorKind::BadGateway,
                    format!("reading the upstream reply from {url}: {e}"),
                ));
            }
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("the upstream reply from {url} did not finish within {timeout:?}"),
                ));
            }
        };
        return Ok(Reply {
            status,
            headers: parts.headers,
            body,
        });
    }
}

/// `send` a JSON body that makes the backend generate (images, compaction v1) and require
/// a 2xx, mapping an error status as the pipeline does. It takes a slot in an account's
/// window like a stream; a concurrency refusal is requeued and a usage limit fails over
/// to another account (at most `1 + upstream_retries` attempts, within the queue timeout).
pub async fn post_json(
    state: &State,
    url: &str,
    body: &[u8],
    extra: &[(&'static str, HeaderValue)],
    protocol: Protocol,
    timeout: Duration,
) -> Result<Bytes, Error> {
    let deadline = Instant::now() + state.config.queue_timeout;
    // No conversation: each call is its own, so it goes to the least-loaded account.
    let key = fastrand::u64(..);
    let max = 1 + u64::from(state.config.upstream_retries);
    let mut attempts = 0u64;
    let mut front = false;
    loop {
        let (route, permit) =
            super::admit::admit(state, key, Class::Interactive, front, deadline, None).await?;
        front = true;
        attempts += 1;
        let account = route.account;
        let reply = send(
            state,
            &account,
            Method::POST,
            url,
            Some(body),
            extra,
            timeout,
        )
        .await?;
        if reply.status.is_success() {
            permit.accepted();
            return Ok(reply.body);
        }
        let err = failure::from_status(
            reply.status.as_u16(),
            &reply.headers,
            &reply.body,
            protocol,
            || PromptSize {
                tokens: body.len() as u64 / 4,
                window: 272_000,
            },
        );
        match err.kind {
            ErrorKind::RateLimited if reply.status == StatusCode::TOO_MANY_REQUESTS => {
                permit.refused(err.retry_after.map(Duration::from_secs));
            }
            ErrorKind::UsageLimit => {
                drop(permit);
                if !state.accounts.limit_reached(&account, err.resets_at) {
                    return Err(state.accounts.all_limited().unwrap_or(err));
                }
            }
            _ => return Err(err),
        }
        if attempts >= max {
            return Err(err);
        }
    }
}

/// The model catalog: the backend's when it could be fetched, else the built-in list.
pub struct LiveCatalog {
    current: ArcSwap<Catalog>,
    etag: Mutex<Option<String>>,
    /// Milliseconds since `epoch` at which the catalog is due for a fetch (0: now).
    due_ms: AtomicU64,
    /// Milliseconds since `epoch` (+1) of the last fetch attempt (0: never).
    attempted_ms: AtomicU64,
    ttl_ms: AtomicU64,
    /// Whether `current` came from the backend.
    live: std::sync::atomic::AtomicBool,
    fetch: tokio::sync::Mutex<()>,
    epoch: Instant,
}

impl Default for LiveCatalog {
    fn default() -> Self {
        LiveCatalog {
            current: ArcSwap::from_pointee(Catalog::builtin()),
            etag: Mutex::new(None),
            due_ms: AtomicU64::new(0),
            attempted_ms: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(CATALOG_TTL.as_millis() as u64),
            live: std::sync::atomic::AtomicBool::new(false),
            fetch: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
        }
    }
}

impl LiveCatalog {
    /// The catalog now (lock-free).
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Whether the current catalog came from the backend (else it is the built-in list).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Change how long a fetched catalog stays fresh (tests use zero).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(ttl.as_millis() as u64, Ordering::Release);
        self.due_ms.store(0, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a fetch is due (a reply that announces an ETag only starts one then).
    pub fn is_due(&self) -> bool {
        self.now_ms() >= self.due_ms.load(Ordering::Acquire)
    }

    fn etag(&self) -> Option<String> {
        self.etag.lock().ok().and_then(|e| e.clone())
    }

    /// A `/responses` reply named the catalog's current ETag: a differing one makes the
    /// catalog due, unless a fetch was tried within the retry interval (so a backend whose
    /// catalog keeps failing is not asked once per request).
    pub fn announce(&self, etag: &str) {
        if self.etag().as_deref() == Some(etag) {
            return;
        }
        let attempted = self.attempted_ms.load(Ordering::Acquire);
        if attempted == 0 || self.now_ms() + 1 >= attempted + CATALOG_RETRY.as_millis() as u64 {
            self.due_ms.store(0, Ordering::Release);
        }
    }

    /// Fetch the catalog if it is due (single flight; failures keep the current one).
    pub async fn refresh(&self, state: &State) {
        if !self.is_due() {
            return;
        }
        let _flight = self.fetch.lock().await;
        if !self.is_due() {
            return;
        }
        let ttl = Duration::from_millis(self.ttl_ms.load(Ordering::Acquire));
        self.attempted_ms
            .store(self.now_ms() + 1, Ordering::Release);
        let next = match self.fetch_once(state).await {
            Ok(()) => ttl,
            Err(e) => {
                tracing::warn!(error = %e.message, "model catalog unavailable; serving the built-in or last fetched list");
                ttl.min(CATALOG_RETRY)
            }
        };
        self.due_ms
            .store(self.now_ms() + next.as_millis() as u64, Ordering::Release);
    }

    async fn fetch_once(&self, state: &State) -> Result<(), Error> {
        let url = format!(
            "{}/codex/models?client_version={}",
            state.config.upstream_url, state.config.client_version
        );
        let mut extra = Vec::new();
        if self.is_live()
            && let Some(tag) = self.etag()
            && let Ok(v) = HeaderValue::from_str(&tag)
        {
            extra.push(("if-none-match", v));
        }
        let account = state
            .accounts
            .primary()
            .ok_or_else(|| Error::new(ErrorKind::AuthUnavailable, "no account"))?;
        let reply = send(
            state,
            account,
            Method::GET,
            &url,
            None,
            &extra,
            CATALOG_TIMEOUT,
        )
        .await?;
        if reply.status == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        if !reply.status.is_success() {
            return Err(Error::new(
                ErrorKind::BadGateway,
                format!("GET /codex/models answered HTTP {}", reply.status.as_u16()),
            ));
        }
        let catalog = Catalog::from_backend(&reply.body).ok_or_else(|| {
            Error::new(
                ErrorKind::BadGateway,
                "GET /codex/models: not a model catalog",
            )
        })?;
        let tag = reply
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Ok(mut e) = self.etag.lock() {
            *e = tag;
        }
        self.current.store(Arc::new(catalog));
        self.live.store(true, Ordering::Release);
        Ok(())
    }
}

/// Refresh the catalog in the background when it is due (never delays the caller).
pub fn refresh_in_background(state: &Arc<State>) {
    if state.catalog.is_due() {
        let st = Arc::clone(state);
        tokio::spawn(async move { st.catalog.refresh(&st).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_etags_refetch_at_most_once_per_retry_interval() {
        let c = LiveCatalog::default();
        assert!(c.is_due(), "never fetched");
        c.due_ms.store(u64::MAX, Ordering::Release);
        c.announce("W/\"a\"");
        assert!(c.is_due(), "no attempt yet: a new ETag makes it due");
        c.due_ms.store(u64::MAX, Ordering::Release);
        c.attempted_ms.store(c.now_ms() + 1, Ordering::Release);
        c.announce("W/\"b\"");
        assert!(!c.is_due(), "just tried: wait for the retry interval");
        if let Ok(mut e) = c.etag.lock() {
            *e = Some("W/\"b\"".into());
        }
        c.attempted_ms.store(0, Ordering::Release);
        c.announce("W/\"b\"");
        assert!(!c.is_due(), "the ETag we hold changes nothing");
        assert!(!c.is_live());
        assert!(
            c.current().find("gpt-5.5").is_some(),
            "built-in until fetched"
        );
    }
}
