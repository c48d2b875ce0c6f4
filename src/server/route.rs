//! Routing and request guards.
//!
//! Owns: the endpoint table (`Route`: what `dispatch` runs and what a preflight lists),
//! choosing the error protocol for a request, the guards that run before any work (header
//! size on keep-alive connections, Host check against DNS rebinding on loopback binds, the
//! browser-origin check: a request a web page sent from an origin not on the CORS
//! allow-list is a 403, on every route; the inbound API key compared in constant time),
//! the body size limit, CORS (only for allow-listed origins: preflights with each path's
//! methods and the Private Network Access grant, and response headers; none at all by
//! default), reading the body (a refusal its body already made in the client's terms, such
//! as `h2::Bounded`'s 408, is kept), `/health` (only `{"status"}` on a non-loopback bind
//! without the key), and rendering an `Error` as a response. The non-protocol endpoints
//! (models, images, inspect, compaction, usage) live in `endpoints`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::dialect::{Ctx, chat, messages, responses};
use crate::error::{Error, ErrorKind, Protocol};
use crate::server::endpoints;
use crate::server::pipeline;
use crate::server::respond::{RespBody, error_response, full, json_response};
use crate::server::state::State;

/// A request body the router can read: hyper's (h2 clients) or `h1`'s.
pub trait ReqBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send {}
impl<B> ReqBody for B where B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send {}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Anthropic shape for `/v1/messages*` and for requests that carry Anthropic headers.
pub(crate) fn protocol_of(path: &str, headers: &HeaderMap) -> Protocol {
    if path.starts_with("/v1/messages")
        || path.starts_with("/messages")
        || headers.contains_key("anthropic-version")
        || headers.contains_key("x-api-key")
    {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

/// Whether a Host header names this machine (for loopback binds).
fn host_is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    let prefix = b"Bearer ";
    (auth.len() > prefix.len() && auth[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &auth[prefix.len()..])
}

/// Whether the allow-list admits `origin` (`*` admits any; `null` only when listed).
fn origin_listed(list: &[String], origin: &[u8]) -> bool {
    list.iter()
        .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin))
}

/// The request's `Origin` when the CORS allow-list admits it.
fn allowed_origin(state: &State, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    origin_listed(&state.config.cors_origins, origin.as_bytes()).then(|| origin.clone())
}

/// Refuse what a web page sent from another origin, unless that origin is allow-listed: any
/// page can make "simple" requests (`text/plain` POSTs, `no-cors` fetches) to 127.0.0.1
/// without a preflight, and on loopback no key stops them. Browsers always say where a
/// request comes from (`Origin`, `Sec-Fetch-Site`; pages cannot forge either); SDKs, curl
/// and Claude Code send neither and are unaffected.
fn origin_guard(state: &State, headers: &HeaderMap) -> Result<(), Error> {
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    let site_is = |s: &[u8]| site.is_some_and(|v| v.eq_ignore_ascii_case(s));
    // The browser vouches that no other site's page is involved (this origin, or the user).
    if site_is(b"same-origin") || site_is(b"none") {
        return Ok(());
    }
    let list = &state.config.cors_origins;
    let refused = |from: String| {
        Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "{from} is not allowed: web pages may call this server only from an origin listed in --cors-allow-origin (CODEX_AS_API_CORS_ORIGINS), so that a page you visit cannot spend your ChatGPT subscription."
            ),
        ))
    };
    let mut origins = headers.get_all(header::ORIGIN).iter().peekable();
    if origins.peek().is_some() {
        for o in origins {
            if !origin_listed(list, o.as_bytes()) {
                let shown: String = String::from_utf8_lossy(o.as_bytes())
                    .chars()
                    .take(200)
                    .collect();
                return refused(format!("A request from the web page origin {shown:?}"));
            }
        }
        return Ok(());
    }
    if (site_is(b"cross-site") || site_is(b"same-site")) && !list.iter().any(|o| o == "*") {
        return refused(
            "A request from another site's web page (Sec-Fetch-Site without an Origin)".to_owned(),
        );
    }
    Ok(())
}

/// Every route, matched once; `dispatch` runs it and `methods_of` lists a path's methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'p> {
    Health,
    Hello,
    Models,
    Model(&'p str),
    Usage,
    Images,
    Inspect,
    CompactResponses,
    CompactMessages,
    Chat,
    Responses,
    ResponseGet(&'p str),
    ResponseDelete(&'p str),
    Messages,
    CountTokens,
}

fn route<'p>(method: &Method, path: &'p str) -> Option<Route<'p>> {
    Some(match (method, path) {
        (&Method::GET, "/health") => Route::Health,
        (&Method::GET | &Method::HEAD, "/api/hello" | "/") => Route::Hello,
        (&Method::GET, "/v1/models" | "/models") => Route::Models,
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            Route::Model(&p["/v1/models/".len()..])
        }
        (&Method::GET, "/usage" | "/v1/usage") => Route::Usage,
        (&Method::POST, "/v1/images/generations" | "/images/generations") => Route::Images,
        (&Method::POST, "/v1/inspect" | "/inspect") => Route::Inspect,
        (&Method::POST, "/v1/compact" | "/v1/responses/compact" | "/responses/compact") => {
            Route::CompactResponses
        }
        (&Method::POST, "/v1/messages/compact" | "/messages/compact") => Route::CompactMessages,
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => Route::Chat,
        (&Method::POST, "/v1/responses" | "/responses") => Route::Responses,
        (&Method::GET, p) if p.starts_with("/v1/responses/") => {
            Route::ResponseGet(&p["/v1/responses/".len()..])
        }
        (&Method::DELETE, p) if p.starts_with("/v1/responses/") => {
            Route::ResponseDelete(&p["/v1/responses/".len()..])
        }
        (&Method::POST, "/v1/messages" | "/messages") => Route::Messages,
        (&Method::POST, "/v1/messages/count_tokens" | "/messages/count_tokens") => {
            Route::CountTokens
        }
        _ => return None,
    })
}

/// The methods `path` answers, for a preflight's `Access-Control-Allow-Methods`.
fn methods_of(path: &str) -> String {
    let mut out = String::new();
    for m in [Method::GET, Method::HEAD, Method::POST, Method::DELETE] {
        if route(&m, path).is_some() {
            out.push_str(m.as_str());
            out.push_str(", ");
        }
    }
    out.push_str("OPTIONS");
    out
}

/// A CORS preflight from an allowed origin: 204 with the path's methods and the headers the
/// browser asked for; the Private Network Access grant only when it asked for it.
fn preflight(origin: HeaderValue, headers: &HeaderMap, path: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Ok(v) = HeaderValue::from_str(&methods_of(path)) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static(
                "authorization, content-type, x-api-key, anthropic-version, anthropic-beta",
            )
        });
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    if headers
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        h.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Every check a request passes before any work (its body is not read yet).
/// The guards of a WebSocket upgrade (`server::ws`): those of every request.
pub(crate) fn upgrade_guard<B>(state: &State, req: &Request<B>) -> Result<(), Error> {
    guard(state, req, req.uri().path())
}

fn guard<B>(state: &State, req: &Request<B>, path: &str) -> Result<(), Error> {
    head_size_guard(req)?;
    host_guard(state, req)?;
    origin_guard(state, req.headers())?;
    key_guard(state, req, path)
}

/// Headers over the limit on a keep-alive connection (the first request of a connection is
/// checked in `server::head`; hyper's own buffer, a few times larger, is the last resort).
fn head_size_guard<B>(req: &Request<B>) -> Result<(), Error> {
    let max = super::head::MAX_HEAD_BYTES;
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if size > max {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            format!("request headers are larger than the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// On loopback binds, refuse requests addressed to a foreign name (DNS rebinding).
fn host_guard<B>(state: &State, req: &Request<B>) -> Result<(), Error> {
    if state.config.host.is_loopback() {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        if let Some(host) = host
            && !host_is_loopback(&host)
        {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "Host {host:?} is not allowed: this server answers only requests addressed to a loopback name (DNS rebinding protection)."
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the request presents the configured key (false when none is configured).
fn has_key(state: &State, headers: &HeaderMap) -> bool {
    match (&state.config.api_key, presented_key(headers)) {
        (Some(key), Some(k)) => constant_time_eq(k, key.as_bytes()),
        _ => false,
    }
}

/// With a key configured, every endpoint but `/health` (and the bare liveness probe) needs it.
fn key_guard<B>(state: &State, req: &Request<B>, path: &str) -> Result<(), Error> {
    if state.config.api_key.is_some()
        && path != "/health"
        && path != "/api/hello"
        && !has_key(state, req.headers())
    {
        return Err(Error::new(
            ErrorKind::Unauthorized,
            "Missing or invalid API key: send the key configured in CODEX_AS_API_API_KEY as `Authorization: Bearer <key>` or `x-api-key: <key>`.",
        ));
    }
    Ok(())
}

async fn read_body<B: ReqBody>(
    req: Request<B>,
    limit: usize,
) -> Result<(HeaderMap, Vec<u8>), Error> {
    let too_large = || {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok((parts.headers, collected_to_vec(c))),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        // A refusal already in the client's terms (`h2::Bounded`: too slow, trailers too large).
        Err(e) => match e.downcast::<Error>() {
            Ok(err) => Err(*err),
            Err(e) => Err(Error::bad_request(format!(
                "could not read the request body: {e}"
            ))),
        },
    }
}

/// A collected request body as the one mutable buffer the parser works in place on, with
/// at most one copy: a body of several frames is joined into a fresh buffer that is then
/// taken over as is; a single frame shared with hyper's read buffer is copied once.
/// Public for the `large_request` bench.
#[doc(hidden)]
pub fn collected_to_vec(c: http_body_util::Collected<Bytes>) -> Vec<u8> {
    match c.to_bytes().try_into_mut() {
        Ok(unique) => Vec::from(unique),
        Err(shared) => shared.to_vec(),
    }
}

/// Read the body and run a dialect's `translate` over it with a `Ctx` (the config, the
/// current model catalog and the request's headers).
async fn read_translated<T, B: ReqBody>(
    req: Request<B>,
    state: &State,
    translate: fn(&mut [u8], &Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let (headers, mut body) = read_body(req, state.config.max_body_bytes).await?;
    let catalog = state.catalog.current();
    let ctx = Ctx {
        config: &state.config,
        catalog: &catalog,
        headers: &headers,
    };
    translate(&mut body, &ctx)
}

/// Handle one request.
pub async fn handle<B: ReqBody>(
    state: Arc<State>,
    req: Request<B>,
    _peer: SocketAddr,
) -> Response<RespBody> {
    let request_id = crate::upstream::request::random_id("req_");
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let protocol = protocol_of(&path, req.headers());
    let started = std::time::Instant::now();
    let origin = allowed_origin(&state, req.headers());
    let (mut resp, failed) = match (&origin, &method) {
        // Preflights carry no credentials: answer them before the API key check (the
        // Host check still applies).
        (Some(o), &Method::OPTIONS)
            if req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) =>
        {
            match host_guard(&state, &req) {
                Ok(()) => (preflight(o.clone(), req.headers(), &path), None),
                Err(e) => (error_response(&e, protocol, &request_id), Some(e)),
            }
        }
        // Boxed: `dispatch` is the union of every endpoint's state; held inline, this future
        // (and so every request in flight) would be about twice its size.
        _ => match Box::pin(dispatch(&state, req, &path, &method, protocol, &request_id)).await {
            Ok(r) => (r, None),
            Err(e) => (error_response(&e, protocol, &request_id), Some(e)),
        },
    };
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("request-id, x-request-id, retry-after"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    let mut log = super::reqlog::RequestLog {
        status: resp.status().as_u16(),
        meter: resp.extensions_mut().remove::<Arc<super::reqlog::Meter>>(),
        request_id,
        method,
        route: path,
        started,
        error: None,
    };
    if let Some(e) = &failed {
        log = log.for_error(e);
    }
    resp.map(|body| super::reqlog::wrap(body, log))
}

async fn dispatch<B: ReqBody>(
    state: &Arc<State>,
    req: Request<B>,
    path: &str,
    method: &Method,
    protocol: Protocol,
    request_id: &str,
) -> Result<Response<RespBody>, Error> {
    guard(state, &req, path)?;
    let Some(route) = route(method, path) else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("Unknown endpoint: {method} {path}. See the README for the list of endpoints."),
        ));
    };
    match route {
        Route::Health => Ok(json_response(
            StatusCode::OK,
            health(state, req.headers()),
            request_id,
        )),
        Route::Hello => Ok(json_response(
            StatusCode::OK,
            b"{\"ok\":true}".to_vec(),
            request_id,
        )),
        Route::Models => Ok(json_response(
            StatusCode::OK,
            endpoints::models_list(state, protocol).await,
            request_id,
        )),
        Route::Model(id) => endpoints::model_one(state, id, protocol)
            .await
            .map(|b| json_response(StatusCode::OK, b, request_id)),
        Route::Usage => endpoints::usage(state)
            .await
            .map(|b| json_response(StatusCode::OK, b, request_id)),
        Route::Images => {
            let (_, body) = read_body(req, state.config.max_body_bytes).await?;
            endpoints::images(state, &body)
                .await
                .map(|b| json_response(StatusCode::OK, b, request_id))
        }
        Route::Inspect => {
            let (headers, body) = read_body(req, state.config.max_body_bytes).await?;
            endpoints::inspect(state, &headers, &body, request_id).await
        }
        Route::CompactResponses => {
            let (headers, mut body) = read_body(req, state.config.max_body_bytes).await?;
            endpoints::compact(state, &headers, &mut body, Protocol::OpenAi, request_id).await
        }
        Route::CompactMessages => {
            let (headers, mut body) = read_body(req, state.config.max_body_bytes).await?;
            endpoints::compact(state, &headers, &mut body, Protocol::Anthropic, request_id).await
        }
        Route::Chat => {
            let mut plan = read_translated(req, state, chat::translate).await?;
            state.history.chain(&mut plan)?;
            Ok(pipeline::run(state, plan, request_id).await)
        }
        Route::Responses => {
            let mut plan = read_translated(req, state, responses::translate).await?;
            state.history.chain(&mut plan)?;
            Ok(pipeline::run(state, plan, request_id).await)
        }
        Route::ResponseGet(id) => Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "No response found with id '{id}': codex-as-api keeps no Response objects (the ChatGPT backend stores nothing); recent exchanges are kept only to serve `previous_response_id`."
            ),
        )
        .with_code("not_found")),
        Route::ResponseDelete(id) => {
            if state.history.remove(id) {
                let mut out = Vec::with_capacity(64 + id.len());
                out.extend_from_slice(b"{\"id\":");
                crate::json::write_str(&mut out, id);
                out.extend_from_slice(b",\"object\":\"response.deleted\",\"deleted\":true}");
                Ok(json_response(StatusCode::OK, out, request_id))
            } else {
                Err(Error::new(
                    ErrorKind::NotFound,
                    format!("No response found with id '{id}'."),
                )
                .with_code("not_found"))
            }
        }
        Route::Messages => {
            crate::tokens::warm_in_background();
            let plan = read_translated(req, state, messages::translate).await?;
            Ok(pipeline::run(state, plan, request_id).await)
        }
        Route::CountTokens => {
            // Counting is CPU work proportional to the body (up to --max-body-bytes): on the
            // blocking pool, so streams on the async workers never wait behind it.
            let (headers, mut body) = read_body(req, state.config.max_body_bytes).await?;
            let st = Arc::clone(state);
            let out = tokio::task::spawn_blocking(move || {
                let catalog = st.catalog.current();
                let ctx = Ctx {
                    config: &st.config,
                    catalog: &catalog,
                    headers: &headers,
                };
                messages::count_tokens(&mut body, &ctx)
            })
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "token counting failed"))??;
            Ok(json_response(StatusCode::OK, out, request_id))
        }
    }
}

/// `/health`. On a non-loopback bind, without the key, only `{"status":"ok"}`: paths,
/// limits, rate limits and history sizes are for the owner, not for whoever can reach the port.
fn health(state: &State, headers: &HeaderMap) -> Vec<u8> {
    use crate::json::{write_str, write_u64};
    let c = &state.config;
    if !c.host.is_loopback() && !has_key(state, headers) {
        return b"{\"status\":\"ok\"}".to_vec();
    }
    let window = c.context_window_or(|| {
        state
            .catalog
            .current()
            .find(&c.model)
            .map(|m| m.context_window)
    });
    let compact = c.auto_compact_limit(window);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"status\":\"ok\",\"version\":");
    write_str(&mut out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b",\"auth_available\":");
    out.extend_from_slice(if state.accounts.any_available() {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"model\":");
    write_str(&mut out, &c.model);
    out.extend_from_slice(b",\"codex_config_path\":");
    write_str(&mut out, &c.config_path.to_string_lossy());
    out.extend_from_slice(b",\"context_window\":");
    write_u64(&mut out, window);
    out.extend_from_slice(b",\"auto_compact_token_limit\":");
    write_u64(&mut out, compact);
    out.extend_from_slice(b",\"uptime_secs\":");
    write_u64(&mut out, state.started.elapsed().as_secs());
    out.extend_from_slice(b",\"live_streams\":");
    write_u64(&mut out, state.streams.live() as u64);
    out.extend_from_slice(b",\"demo\":");
    out.extend_from_slice(if c.demo { b"true" } else { b"false" });
    out.extend_from_slice(b",\"models_source\":");
    out.extend_from_slice(if state.catalog.is_live() {
        b"\"backend\""
    } else {
        b"\"builtin\""
    });
    let (kept, kept_bytes) = state.history.usage();
    out.extend_from_slice(b",\"kept_responses\":");
    write_u64(&mut out, kept as u64);
    out.extend_from_slice(b",\"kept_response_bytes\":");
    write_u64(&mut out, kept_bytes as u64);
    out.extend_from_slice(b",\"upstream_transport\":");
    let ws = c.upstream_transport != crate::config::Transport::Sse && !state.sockets.refused();
    out.extend_from_slice(if ws { b"\"websocket\"" } else { b"\"sse\"" });
    out.extend_from_slice(b",\"upstream_websockets_idle\":");
    write_u64(&mut out, state.sockets.idle() as u64);
    out.extend_from_slice(b",\"websocket_sessions\":");
    write_u64(
        &mut out,
        state.ws_sessions.load(std::sync::atomic::Ordering::Relaxed),
    );
    out.extend_from_slice(b",\"rate_limits\":");
    match state
        .accounts
        .primary()
        .and_then(|a| a.rate_limits.load_full())
    {
        Some(s) => s.write_json(&mut out),
        None => out.extend_from_slice(b"null"),
    }
    write_accounts(state, &mut out);
    out.push(b'}');
    out
}

/// `/health`'s `accounts` array and `queued` total: each login's window and queue.
fn write_accounts(state: &State, out: &mut Vec<u8>) {
    use crate::json::{write_str, write_u64};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut queued = 0;
    out.extend_from_slice(b",\"accounts\":[");
    for (i, a) in state.accounts.all().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let s = a.admission.stats();
        queued += s.queued;
        out.extend_from_slice(b"{\"label\":");
        write_str(out, &a.label);
        out.extend_from_slice(b",\"auth_path\":");
        write_str(out, &a.tokens.auth_path().to_string_lossy());
        out.extend_from_slice(b",\"available\":");
        out.extend_from_slice(if a.available() { b"true" } else { b"false" });
        out.extend_from_slice(b",\"problem\":");
        match a.tokens.problem() {
            Some(p) => write_str(out, &p),
            None => out.extend_from_slice(b"null"),
        }
        for (k, v) in [
            ("window", s.window as u64),
            ("open", s.open as u64),
            ("queued", s.queued as u64),
            ("peak_open", s.peak_open as u64),
            ("admitted", s.admitted),
            ("refused", s.refused),
            ("timed_out", s.timed_out),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            write_u64(out, v);
        }
        out.extend_from_slice(b",\"cooled_until\":");
        match a.cooled_until(now) {
            Some(t) => write_u64(out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"rate_limits\":");
        match a.rate_limits.load_full() {
            Some(s) => s.write_json(out),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"queued\":");
    write_u64(out, queued as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_host_names() {
        for h in [
            "localhost",
            "localhost:18080",
            "127.0.0.1:1",
            "[::1]:80",
            "127.1.2.3",
            "foo.localhost",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "evil.com",
            "evil.com:18080",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil.com",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn api_key_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(presented_key(&h), Some(&b"sk-1"[..]));
        h.insert("x-api-key", HeaderValue::from_static("sk-2"));
        assert_eq!(presented_key(&h), Some(&b"sk-2"[..]));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
