//! Unary (non-streamed) calls to the backend, the model catalog's fetch among them.
//!
//! Owns: sending one request to a backend endpoint other than the streamed `/responses`
//! (the model catalog §15, image generation §18, compaction v1 §17.1, `/wham/usage` §19)
//! with the official client's headers and the 401 recovery sequence (reload auth.json →
//! retry → refresh → retry), mapping an error status to `Error`; and the fetch of the
//! `/codex/models` catalog (with `If-None-Match`) for `catalog::LiveCatalog`.
//!
//! Does not own: the streamed `/responses` path (`pipeline`), what the endpoints answer
//! the client (`route`, `endpoints`), when the catalog is due and its cache (`catalog`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::catalog::Fetched;
use super::state::State;
use crate::accounts::Account;
use crate::admission::Class;
use crate::error::{Error, ErrorKind, Protocol};
use crate::upstream::catalog::Catalog;
use crate::upstream::failure::{self, PromptSize};

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

/// Fetch the catalog if it is due (single flight; a failure keeps the current one).
pub async fn refresh_catalog(state: &State) {
    state
        .catalog
        .refresh(|etag| fetch_catalog(state, etag))
        .await;
}

/// `GET /codex/models`, conditional on `etag` (the live catalog's).
async fn fetch_catalog(state: &State, etag: Option<String>) -> Result<Fetched, Error> {
    let url = format!(
        "{}/codex/models?client_version={}",
        state.config.upstream_url, state.config.client_version
    );
    let mut extra = Vec::new();
    if let Some(v) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
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
        return Ok(Fetched::NotModified);
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
    let etag = reply
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Fetched::New { catalog, etag })
}

/// Refresh the catalog in the background when it is due (never delays the caller).
pub fn refresh_in_background(state: &Arc<State>) {
    if state.catalog.is_due() {
        let st = Arc::clone(state);
        tokio::spawn(async move { refresh_catalog(&st).await });
    }
}
