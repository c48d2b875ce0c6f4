//! Running one proxied request: the `Plan` → upstream → client path.
//!
//! Owns: the stream slot, building the upstream HTTP request once (headers of §3.3, body
//! written and zstd-compressed once; again without reasoning items when a conversation moves
//! to another account), entering an account (`admit`: route, then wait in its window), the
//! retry loop (only before the first byte reached the client and never after a generation
//! produced output; a concurrency 429 is requeued at the head with the window shrunk,
//! `usage_limit_reached` cools the account and fails over, connect errors, resets, 5xx and
//! overload back off honouring `Retry-After`; at most `1 + upstream_retries` attempts,
//! within the queue deadline), the 401 recovery sequence (reload auth.json → retry →
//! refresh → retry), the response-head hold, and what a non-stream answer becomes
//! (aggregated by `upstream::collect`, rendered by the dialect).
//!
//! Does not own: wire formats (`dialect`), the body state machine (`body`), the window and
//! queue (`admission`) or the choice of account (`accounts`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::state::State;
use crate::accounts::{Account, conversation_key, strip_reasoning};
use crate::admission::Permit;
use crate::auth::AuthHeaders;
use crate::body::{Prelude, Timing, Translate};
use crate::config::Transport;
use crate::dialect::Plan;
use crate::error::{Error, ErrorKind, Protocol};
use crate::server::reqlog::Meter;
use crate::server::respond::{RespBody, error_response, json_response, stream_response};
use crate::upstream::collect::{self, Finish};
use crate::upstream::failure::{self, PromptSize};
use crate::upstream::request::{self, UpstreamRequest};
use crate::upstream::stream::Upstream;
use crate::upstream::ws;

/// Longest `Retry-After` we wait out ourselves before answering the client instead.
const MAX_INTERNAL_WAIT: Duration = Duration::from_secs(10);
/// Cap on an upstream error body we read.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Run `plan` and produce the client's response (errors included, in the plan's protocol).
/// The response carries the request's `reqlog::Meter` as an extension.
pub async fn run<P: Plan>(state: &Arc<State>, plan: P, request_id: &str) -> Response<RespBody> {
    let protocol = plan.protocol();
    let meter = Meter::new(plan.client_model(), &plan.upstream().model);
    let mut resp = match run_inner(state, plan, request_id, &meter).await {
        Ok(resp) => resp,
        Err(err) => {
            meter.record_error(&err);
            error_response(&err, protocol, request_id)
        }
    };
    resp.extensions_mut().insert(meter);
    resp
}

/// Like `run`, but an error is returned for the caller to handle (compaction falls back).
pub async fn try_run<P: Plan>(
    state: &Arc<State>,
    plan: P,
    request_id: &str,
) -> Result<Response<RespBody>, Error> {
    let meter = Meter::new(plan.client_model(), &plan.upstream().model);
    let mut resp = run_inner(state, plan, request_id, &meter).await?;
    resp.extensions_mut().insert(meter);
    Ok(resp)
}

/// A quick prompt size (a token per 4 bytes) for the error mappers; a context-window error
/// gets the exact count afterwards from `exact_context`, off the async workers.
fn prompt_size(state: &State, body: &[u8], model: &str) -> PromptSize {
    PromptSize {
        tokens: body.len() as u64 / 4,
        window: prompt_size_window(state, model),
    }
}

fn backoff(err: &Error, attempt: u32) -> Option<Duration> {
    if let Some(secs) = err.retry_after {
        let d = Duration::from_secs(secs);
        return (d <= MAX_INTERNAL_WAIT).then_some(d);
    }
    let base = 200u64 << attempt.min(6);
    let jitter = fastrand::u64(0..=base / 10);
    Some(Duration::from_millis(base + jitter))
}

/// Send one attempt: over the Responses WebSocket when the transport allows it (the
/// answer of a refused or failed upgrade falls back to SSE in `auto`), else HTTP + SSE.
async fn send(
    state: &State,
    url: &str,
    auth: &AuthHeaders,
    upstream: &UpstreamRequest,
    body: &Prepared,
    account: &Account,
) -> Result<Response<Upstream>, Error> {
    let transport = state.config.upstream_transport;
    // Compaction and memory generation stay on HTTP, as their own request kinds.
    if transport != Transport::Sse && !upstream.compaction && !upstream.memgen {
        let mut headers = request::common_headers(&state.config.client_version, auth, upstream)?;
        headers.insert("openai-beta", HeaderValue::from_static(ws::BETA));
        if let Ok(v) = HeaderValue::from_str(&format!("{}:0", upstream.conversation_id)) {
            headers.insert("x-codex-window-id", v);
        }
        let call = ws::Call {
            key: format!(
                "{}\n{}\n{}",
                account.label,
                upstream.conversation_id,
                upstream.subagent.as_deref().unwrap_or("")
            ),
            url: &state.ws_url,
            headers,
            body: body.raw.clone(),
            lite: upstream.lite,
            fallback: transport == Transport::Auto,
        };
        match state.sockets.send(&state.pool, call).await? {
            ws::Outcome::Stream(resp) => return Ok(resp.map(Upstream::from)),
            ws::Outcome::Status(resp) => return Ok(resp.map(Upstream::from)),
            ws::Outcome::Sse => {}
        }
    }
    let (wire, compressed) = body.wire();
    let req = request::http_request(
        &state.config.client_version,
        url,
        auth,
        upstream,
        wire,
        compressed,
    )?;
    Ok(state.pool.request(req).await?.map(Upstream::from))
}

async fn read_error_body(body: Upstream) -> Vec<u8> {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    match tokio::time::timeout(Duration::from_secs(30), limited.collect()).await {
        Ok(Ok(c)) => c.to_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// The body as sent to one account: the JSON (a WebSocket frame is built from it; token
/// counts read it) and, for HTTP, its wire form, compressed on first use: a request that
/// goes over the WebSocket never pays for zstd.
struct Prepared {
    raw: Bytes,
    zstd: bool,
    wire: std::sync::OnceLock<(Bytes, bool)>,
}

impl Prepared {
    fn new(state: &State, upstream: &UpstreamRequest) -> Prepared {
        Prepared {
            raw: Bytes::from(upstream.body()),
            zstd: state.config.compress,
            wire: std::sync::OnceLock::new(),
        }
    }

    /// The HTTP body and whether it is zstd-compressed.
    fn wire(&self) -> (Bytes, bool) {
        self.wire
            .get_or_init(|| request::wire_form(&self.raw, self.zstd))
            .clone()
    }
}

/// The upstream body of `upstream` as `(JSON, wire bytes, compressed)`, as an HTTP attempt
/// sends it. Public for the `large_request` bench, which runs this exact path.
#[doc(hidden)]
pub fn prepare_body(upstream: &UpstreamRequest, compress: bool) -> (Bytes, Bytes, bool) {
    let raw = Bytes::from(upstream.body());
    let (wire, compressed) = request::wire_form(&raw, compress);
    (raw, wire, compressed)
}

/// A failed attempt, before any byte reached the client: `Ok` once it is time to try
/// again (back through admission), else the error to answer with. Frees (or, for a
/// concurrency refusal, returns with a shrink) the attempt's window slot.
async fn retry(
    state: &State,
    err: Error,
    account: &Account,
    permit: Permit,
    refusal: bool,
    meter: &Meter,
    deadline: Instant,
) -> Result<(), Error> {
    match next_step(state, &err, account, permit, refusal, meter, deadline) {
        Next::Again(wait) => {
            if let Some(w) = wait {
                tokio::time::sleep(w).await;
            }
            Ok(())
        }
        Next::Stop => Err(err),
        Next::Fail(other) => Err(other),
    }
}

/// How a failed attempt goes on.
enum Next {
    /// Try again (after this pause).
    Again(Option<Duration>),
    Stop,
    /// Stop with this error instead.
    Fail(Error),
}

fn next_step(
    state: &State,
    err: &Error,
    account: &Account,
    permit: Permit,
    refusal: bool,
    meter: &Meter,
    deadline: Instant,
) -> Next {
    let attempts = meter.attempts();
    let more = attempts < 1 + u64::from(state.config.upstream_retries);
    if refusal {
        // The backend's per-account stream limit: shrink the window; the admission hold
        // spaces the next try.
        permit.refused(err.retry_after.map(Duration::from_secs));
        if more {
            tracing::info!(account = %account.label, attempts, "concurrency refusal: requeued at the head");
            return Next::Again(None);
        }
        return Next::Stop;
    }
    drop(permit);
    if err.kind == ErrorKind::UsageLimit {
        if state.accounts.limit_reached(account, err.resets_at) && more {
            return Next::Again(None);
        }
        return state.accounts.all_limited().map_or(Next::Stop, Next::Fail);
    }
    if !err.retryable || !more {
        return Next::Stop;
    }
    let Some(wait) = backoff(err, attempts.saturating_sub(1) as u32) else {
        return Next::Stop;
    };
    if Instant::now() + wait >= deadline {
        return Next::Stop;
    }
    tracing::info!(attempt = attempts, kind = ?err.kind, wait_ms = wait.as_millis() as u64, "retrying upstream request");
    Next::Again(Some(wait))
}

async fn run_inner<P: Plan>(
    state: &Arc<State>,
    plan: P,
    request_id: &str,
    meter: &Arc<Meter>,
) -> Result<Response<RespBody>, Error> {
    let protocol = plan.protocol();
    let mut guard = state
        .streams
        .try_acquire(state.config.max_concurrent_streams)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Overloaded,
                format!(
                    "codex-as-api is at its limit of {} concurrent upstream streams; retry shortly.",
                    state.config.max_concurrent_streams
                ),
            )
            .with_retry_after(1)
        })?;
    let upstream = plan.upstream();
    let mut body = Prepared::new(state, upstream);
    let url = state.config.responses_url();
    let conversation = conversation_key(&upstream.conversation_id);
    let class = super::admit::class_of(state, upstream);
    let deadline = Instant::now() + state.config.queue_timeout;
    let timing = Timing {
        keepalive: state.config.keepalive,
        idle_timeout: state.config.stream_idle_timeout,
    };
    let mut front = false;
    let mut stripped = false;
    loop {
        let (route, permit) =
            super::admit::admit(state, conversation, class, front, deadline, Some(meter)).await?;
        front = true;
        let account = route.account;
        if let Some(from) = &route.moved_from
            && !stripped
        {
            stripped = true;
            if let Some(input) = strip_reasoning(&upstream.input) {
                tracing::info!(from = %from, to = %account.label, "conversation moved to another account: reasoning items encrypted under the old account were dropped from the input");
                let mut moved = upstream.clone();
                moved.input = input;
                body = Prepared::new(state, &moved);
            }
        }
        let mut auth = account.tokens.headers().await?;
        let mut recovery = 0u8;
        let resp = loop {
            let sent = tokio::time::timeout(
                state.config.stream_idle_timeout,
                send(state, &url, &auth, upstream, &body, &account),
            );
            let resp = match sent.await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "the upstream did not send response headers in time",
                    ));
                }
            };
            let Ok(resp) = resp else { break resp };
            account.record(resp.headers());
            if let Some(tag) = resp
                .headers()
                .get("x-models-etag")
                .and_then(|v| v.to_str().ok())
            {
                state.catalog.announce(tag);
                super::backend::refresh_in_background(state);
            }
            if resp.status() == StatusCode::UNAUTHORIZED && recovery < 2 {
                drop(resp);
                if recovery == 0 {
                    recovery = 1;
                    if let Some(fresh) = account.tokens.reload(&auth).await? {
                        tracing::info!(
                            "upstream 401: retrying with credentials reloaded from disk"
                        );
                        auth = fresh;
                        continue;
                    }
                }
                recovery = 2;
                tracing::info!("upstream 401: refreshing credentials");
                auth = account.tokens.refresh_after_unauthorized(&auth).await?;
                continue;
            }
            break Ok(resp);
        };
        let resp = match resp {
            Ok(r) => r,
            Err(err) => {
                retry(state, err, &account, permit, false, meter, deadline).await?;
                continue;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let text = Box::pin(read_error_body(resp.into_body())).await;
            let err = failure::from_status(status.as_u16(), &headers, &text, protocol, || {
                prompt_size(state, &body.raw, &upstream.model)
            });
            let err = exact_context(state, err, protocol, &body.raw, &upstream.model).await;
            tracing::debug!(status = status.as_u16(), kind = ?err.kind, "upstream error status");
            let refusal =
                status == StatusCode::TOO_MANY_REQUESTS && err.kind == ErrorKind::RateLimited;
            retry(state, err, &account, permit, refusal, meter, deadline).await?;
            continue;
        }
        permit.accepted();
        let estimate = PromptSize {
            tokens: body.raw.len() as u64 / 4,
            window: prompt_size_window(state, &upstream.model),
        };
        if plan.stream() {
            let mut t =
                Translate::new(resp.into_body(), plan.encoder(), protocol, estimate, timing)
                    .with_meter(meter.clone())
                    .with_recorder(recorder(state, &plan));
            let held = tokio::time::timeout(
                state.config.head_hold,
                std::future::poll_fn(|cx| t.poll_prelude(cx)),
            )
            .await;
            match held {
                Ok(Prelude::Failed(err)) => {
                    let err = exact_context(state, err, protocol, &body.raw, &upstream.model).await;
                    drop(t);
                    retry(state, err, &account, permit, false, meter, deadline).await?;
                    continue;
                }
                Ok(Prelude::Commit) | Err(_) => {
                    guard.hold(permit);
                    let t = t.with_guard(Some(guard));
                    return Ok(stream_response(t, plan.stream_content_type(), request_id));
                }
            }
        }
        // Boxed: only non-streaming requests need the collector's state.
        let collected = Box::pin(collect::collect(
            resp.into_body(),
            state.config.stream_idle_timeout,
        ))
        .await;
        // Only a generation that failed before producing any output runs again.
        let err = match collected {
            Ok(c) => {
                let produced = !c.items.is_empty();
                let err = match &c.finish {
                    Finish::Completed | Finish::Incomplete(_) => {
                        drop(permit);
                        plan.check(&c)?;
                        meter.record_usage(&c.usage);
                        if let Some(keep) = plan.keep_as()
                            && let Some(id) = keep.id(&c)
                        {
                            state
                                .history
                                .keep(id, &upstream.input, &c, &upstream.conversation_id);
                        }
                        return Ok(json_response(StatusCode::OK, plan.render(&c), request_id));
                    }
                    Finish::Failed { code, message } => failure::from_terminal(
                        code.as_deref(),
                        message.as_deref(),
                        protocol,
                        || prompt_size(state, &body.raw, &upstream.model),
                    ),
                    Finish::Open => failure::incomplete_stream(),
                };
                let err = exact_context(state, err, protocol, &body.raw, &upstream.model).await;
                if produced {
                    return Err(err);
                }
                err
            }
            // Cut or stalled after the answer began: it may have produced output.
            Err(err) => return Err(err),
        };
        retry(state, err, &account, permit, false, meter, deadline).await?;
        continue;
    }
}

/// A recorder that keeps the streamed exchange, when the plan asks for it.
fn recorder<P: Plan>(state: &Arc<State>, plan: &P) -> Option<crate::body::Recorder> {
    let keep = plan.keep_as()?;
    let st = Arc::clone(state);
    let input = plan.upstream().input.clone();
    let conversation = plan.upstream().conversation_id.clone();
    Some(crate::body::Recorder::new(Box::new(move |c| {
        if matches!(c.finish, Finish::Completed | Finish::Incomplete(_))
            && let Some(id) = keep.id(c)
        {
            st.history.keep(id, &input, c, &conversation);
        }
    })))
}

fn prompt_size_window(state: &State, model: &str) -> u64 {
    state.config.context_window_or(|| {
        state
            .catalog
            .current()
            .find(model)
            .map(|m| m.context_window)
    })
}

/// Replace the estimate in a context-window error by the exact count, counted on the
/// blocking pool (a prompt can be megabytes).
async fn exact_context(
    state: &State,
    err: Error,
    protocol: Protocol,
    body: &[u8],
    model: &str,
) -> Error {
    if err.kind != ErrorKind::ContextLengthExceeded {
        return err;
    }
    let owned = body.to_vec();
    let Ok(tokens) =
        tokio::task::spawn_blocking(move || crate::tokens::count_upstream_body(&owned)).await
    else {
        return err;
    };
    let size = PromptSize {
        tokens,
        window: prompt_size_window(state, model),
    };
    failure::context_exceeded(protocol, &size)
}
