//! Routing and the HTTP edge: body reading (with zstd), auth checks, the unary endpoints
//! (models §15, images §18, compaction v1 §17.1, usage §19, accounts check §16, token
//! §12.3, sign-in §13 via `oauth`), the account checks of `/responses` (usage limit, then
//! open streams per account) and its response heads (rate-limit headers §10.2).
//!
//! Dispatches the WebSocket upgrade to `ws`. The path a parsed `/responses` body takes
//! and its refusals are `admit`'s, the response builders and header readers `http`'s: both
//! shared with `ws`, which wraps a refusal in an `error` frame instead.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::admit::{Admission, Admit, RateLimits, Refusal, admit};
use super::http::{Resp, bytes_response, header_list, json_response, session_id, set};
use super::oauth::OAuth;
use super::rules::{self, seal};
use super::shared::{MAX_RECORDED, Recorded, Shared};
use super::stream::{EmuBody, LiveStream};
use super::util::{lock, now_secs, random_hex};

/// Bodies above this are refused (the real backend's limit is far below it).
const MAX_BODY: usize = 64 << 20;

/// A small valid PNG (8x8, red), base64.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR42mP4z8CAFTEMLQkAKP8/wc53yE8AAAAASUVORK5CYII=";

/// A request answered with nothing (`EMU:flakyreset`): the service fails, so hyper closes
/// an HTTP/1.1 connection without a response (after the request was read: the client
/// cannot tell whether it was processed) and resets an h2 stream with `REFUSED_STREAM`
/// (RFC 9113 §8.7: provably not processed, safe to retry), as an edge shedding load does.
#[derive(Debug)]
pub(super) struct Abort(h2::Error);

impl Abort {
    fn refused() -> Abort {
        Abort(h2::Error::from(h2::Reason::REFUSED_STREAM))
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("emulator: request aborted (EMU:flakyreset)")
    }
}

impl std::error::Error for Abort {
    /// hyper resets the h2 stream with the reason of an `h2::Error` it finds here.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn not_found() -> Resp {
    json_response(404, &json!({"detail": "Not Found"}))
}

fn unauthorized() -> Resp {
    Refusal::unauthorized().into_response()
}

/// The `x-codex-*` headers; `limit_resets_at`: the primary window is used up until then.
fn rate_limit_headers(resp: &mut Resp, limit_resets_at: Option<i64>) {
    for (name, value) in RateLimits::now(limit_resets_at).headers() {
        set(resp, name, &value);
    }
}

fn request_id(resp: &mut Resp) {
    set(resp, "x-request-id", &format!("req_{}", random_hex(32)));
}

/// Serves one request; `Err` aborts it without an answer.
pub(super) async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Resp, Abort> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    Ok(match (method, path.as_str()) {
        (Method::POST, "/backend-api/codex/responses") => return responses(req, &shared).await,
        (Method::GET, "/backend-api/codex/responses") => super::ws::handshake(req, &shared),
        (Method::GET, "/backend-api/codex/models") => models(&req, &shared),
        (Method::POST, "/backend-api/codex/images/generations") => images(req, &shared).await,
        (Method::POST, "/backend-api/codex/responses/compact") => compact(req, &shared).await,
        (Method::GET, "/backend-api/wham/usage") => usage(&req, &shared),
        (Method::GET, "/backend-api/wham/accounts/check") => accounts(&req, &shared),
        (Method::POST, "/oauth/token") => token(req, &shared).await,
        (Method::GET, "/oauth/authorize") => authorize(&req, &shared),
        (Method::POST, "/api/accounts/deviceauth/usercode") => {
            device(req, &shared, OAuth::device_usercode).await
        }
        (Method::POST, "/api/accounts/deviceauth/token") => {
            device(req, &shared, OAuth::device_token).await
        }
        (Method::GET, "/codex/device") => device_page(None),
        (Method::POST, "/codex/device") => device_approve(req, &shared).await,
        _ => not_found(),
    })
}

/// Keeps a unary POST for `Emulator::unary_requests`.
fn record_unary(shared: &Shared, path: &str, parts: &hyper::http::request::Parts, raw: &[u8]) {
    let recorded = Recorded {
        headers: header_list(&parts.headers),
        body: serde_json::from_slice(raw).unwrap_or(Value::Null),
        zstd: false,
        frame: None,
    };
    let mut unary = lock(&shared.unary);
    if unary.len() >= MAX_RECORDED {
        unary.pop_front();
    }
    unary.push_back((path.to_owned(), Arc::new(recorded)));
}

thread_local! {
    /// This thread's zstd decoding context, reused by every request it decodes.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Undo `Content-Encoding: zstd`. A frame that states its size (every one-shot encoder,
/// the proxy's included) is decoded with the thread's reused context into one exact
/// allocation: a fresh streaming context per request cost the emulator, in the load bench,
/// time that was counted against the proxy. Anything else (no size, several frames, a size
/// over the limit) takes the streaming decoder.
fn decode_zstd(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(raw)
        && size <= MAX_BODY as u64
    {
        let size = size as usize;
        let decoded = DECOMPRESSOR.with(|slot| {
            let mut slot = slot.try_borrow_mut().ok()?;
            if slot.is_none() {
                *slot = zstd::bulk::Decompressor::new().ok();
            }
            slot.as_mut()?.decompress(raw, size).ok()
        });
        if let Some(decoded) = decoded {
            return Ok(decoded);
        }
    }
    zstd::stream::decode_all(raw)
}

/// Reads the body, undoing `Content-Encoding: zstd`. `Err` is the response to send.
/// Also returns whether it was zstd and its length as it arrived.
async fn read_body(
    req: Request<Incoming>,
) -> Result<(hyper::http::request::Parts, Bytes, bool, usize), Resp> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let raw = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(json_response(
                413,
                &json!({"detail": "Request body too large"}),
            ));
        }
    };
    let zstd = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("zstd"));
    let wire_len = raw.len();
    if !zstd {
        return Ok((parts, raw, false, wire_len));
    }
    match decode_zstd(&raw) {
        Ok(decoded) if decoded.len() <= MAX_BODY => {
            Ok((parts, Bytes::from(decoded), true, wire_len))
        }
        Ok(_) => Err(json_response(
            413,
            &json!({"detail": "Request body too large"}),
        )),
        Err(_) => Err(json_response(
            400,
            &json!({"detail": "Could not decode request body with Content-Encoding: zstd"}),
        )),
    }
}

async fn responses(req: Request<Incoming>, shared: &Shared) -> Result<Resp, Abort> {
    shared.counters.responses.fetch_add(1, Ordering::Relaxed);
    let (parts, raw, zstd, wire_len) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return Ok(resp),
    };
    shared
        .counters
        .responses_body_bytes
        .fetch_add(wire_len as u64, Ordering::Relaxed);
    let parsed: Option<Value> = serde_json::from_slice(&raw).ok();
    let recorded = Arc::new(Recorded {
        headers: header_list(&parts.headers),
        body: parsed.unwrap_or(Value::Null),
        zstd,
        frame: None,
    });
    shared.record(recorded.clone());

    let Some(account) = shared.tokens.authorized(&parts.headers) else {
        return Ok(unauthorized());
    };
    account.count_request();
    let body = &recorded.body;
    if body.is_null() {
        return Ok(json_response(
            400,
            &json!({"detail": "We could not parse the JSON body of your request."}),
        ));
    }
    let admission = admit(
        shared,
        &Admit {
            account: &account,
            body,
            body_len: raw.len(),
            session_id: session_id(&parts.headers),
            warmup: false,
        },
    );
    Ok(match admission {
        Admission::Refused(refusal) => refusal.into_response(),
        Admission::Reset => return Err(Abort::refused()),
        Admission::Stream { sse, delay, open } => {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let mut resp = Response::new(EmuBody::Script(sse.into_body(
                shared.chunking,
                LiveStream::new(&shared.live_streams, &shared.sse_bytes),
                Some(open),
            )));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            resp.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            request_id(&mut resp);
            rate_limit_headers(&mut resp, None);
            if let Some(m) = body.get("model").and_then(Value::as_str) {
                set(&mut resp, "openai-model", m);
            }
            set(&mut resp, "x-models-etag", &shared.catalog.etag);
            resp
        }
    })
}

fn models(req: &Request<Incoming>, shared: &Shared) -> Resp {
    shared.counters.models.fetch_add(1, Ordering::Relaxed);
    if shared.tokens.authorized(req.headers()).is_none() {
        return unauthorized();
    }
    let etag = &shared.catalog.etag;
    let matches = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        let mut r = Response::new(EmuBody::Full(None));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        bytes_response(200, "application/json", shared.catalog.body.clone())
    };
    set(&mut resp, "etag", etag);
    resp
}

async fn images(req: Request<Incoming>, shared: &Shared) -> Resp {
    shared.counters.images.fetch_add(1, Ordering::Relaxed);
    let (parts, raw, _, _) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    record_unary(
        shared,
        "/backend-api/codex/images/generations",
        &parts,
        &raw,
    );
    if shared.tokens.authorized(&parts.headers).is_none() {
        return unauthorized();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return json_response(
            400,
            &json!({"detail": "We could not parse the JSON body of your request."}),
        );
    };
    let Some(prompt) = body
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
    else {
        return json_response(
            400,
            &json!({"error": {"message": "Missing required parameter: 'prompt'.", "type": "invalid_request_error", "param": "prompt", "code": "missing_required_parameter"}}),
        );
    };
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let data: Vec<Value> = (0..n)
        .map(|_| json!({"b64_json": PNG_B64, "revised_prompt": format!("{prompt} (emulated)")}))
        .collect();
    let input_tokens = (prompt.len() / 4).max(1) as u64;
    json_response(
        200,
        &json!({
            "created": now_secs(),
            "data": data,
            "usage": {"input_tokens": input_tokens, "output_tokens": 100 * n, "total_tokens": input_tokens + 100 * n,
                      "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0}},
        }),
    )
}

async fn compact(req: Request<Incoming>, shared: &Shared) -> Resp {
    let (parts, raw, _, _) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    record_unary(shared, "/backend-api/codex/responses/compact", &parts, &raw);
    let Some(account) = shared.tokens.authorized(&parts.headers) else {
        return unauthorized();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return json_response(
            400,
            &json!({"detail": "We could not parse the JSON body of your request."}),
        );
    };
    let slug = body.get("model").and_then(Value::as_str).unwrap_or("");
    if shared.catalog.find(slug).is_none() {
        return json_response(
            400,
            &json!({"detail": format!("The '{slug}' model is not supported when using Codex with a ChatGPT account.")}),
        );
    }
    let Some(input) = body.get("input").and_then(Value::as_array) else {
        return json_response(400, &json!({"detail": "Missing required parameter: input"}));
    };
    let mut output: Vec<Value> = input
        .iter()
        .filter(|it| {
            rules::item_type(it) == "message"
                && it.get("role").and_then(Value::as_str) == Some("user")
        })
        .cloned()
        .collect();
    let id = format!("cmp_{}", random_hex(32));
    output.push(
        json!({"type": "compaction", "encrypted_content": seal(&shared.account_secret(&account.id), "compaction", &id)}),
    );
    json_response(200, &json!({ "output": output }))
}

/// `/wham/usage` for the account of the presented token.
fn usage(req: &Request<Incoming>, shared: &Shared) -> Resp {
    let Some(account) = shared.tokens.authorized(req.headers()) else {
        return unauthorized();
    };
    let now = now_secs();
    let limit = account.usage_limit();
    let (used, reset_at) = match limit {
        Some(t) => (100, t),
        None => (12, now + 3600),
    };
    let reached_type = limit.map(|_| json!({"type": "rate_limit_reached"}));
    json_response(
        200,
        &json!({
            "plan_type": "plus",
            "rate_limit": {
                "allowed": limit.is_none(), "limit_reached": limit.is_some(),
                "primary_window": {"used_percent": used, "limit_window_seconds": 18000, "reset_after_seconds": reset_at.saturating_sub(now).max(0), "reset_at": reset_at},
                "secondary_window": {"used_percent": 3, "limit_window_seconds": 604800, "reset_after_seconds": 259200, "reset_at": now + 259_200},
            },
            "credits": {"has_credits": true, "unlimited": false, "balance": "9.99"},
            "additional_rate_limits": [{"limit_name": "codex_other", "metered_feature": "codex_other",
                "rate_limit": {"allowed": true, "limit_reached": false, "primary_window": null, "secondary_window": null}}],
            "rate_limit_reached_type": reached_type,
        }),
    )
}

/// `/wham/accounts/check` for the account of the presented token.
fn accounts(req: &Request<Incoming>, shared: &Shared) -> Resp {
    let Some(account) = shared.tokens.authorized(req.headers()) else {
        return unauthorized();
    };
    let id = &account.id;
    json_response(
        200,
        &json!({
            "accounts": [{"id": id, "account_id": id, "plan_type": "plus", "name": null,
                "profile_picture_url": null, "structure": "personal",
                "workspace_backend_origin": "NO_CONSTRAINT", "account_routing_override": "NO_CONSTRAINT"}],
            "account_ordering": [id],
            "default_account_id": id,
        }),
    )
}

async fn token(req: Request<Incoming>, shared: &Shared) -> Resp {
    shared.counters.token.fetch_add(1, Ordering::Relaxed);
    let (parts, raw, _, _) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (status, body) =
        shared
            .tokens
            .token_endpoint(&shared.oauth, &shared.accounts.default, content_type, &raw);
    json_response(status, &body)
}

fn authorize(req: &Request<Incoming>, shared: &Shared) -> Resp {
    let query = super::tokens::parse_form(req.uri().query().unwrap_or("").as_bytes());
    match shared.oauth.authorize(&query) {
        super::oauth::Authorize::Redirect(to) => {
            let mut resp = bytes_response(302, "text/plain", Bytes::new());
            if let Ok(v) = HeaderValue::from_str(&to) {
                resp.headers_mut().insert(hyper::header::LOCATION, v);
            }
            resp
        }
        super::oauth::Authorize::Error(status, body) => json_response(status, &body),
    }
}

async fn device(
    req: Request<Incoming>,
    shared: &Shared,
    endpoint: fn(&OAuth, &[u8]) -> (u16, Value),
) -> Resp {
    let (_, raw, _, _) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (status, body) = endpoint(&shared.oauth, &raw);
    json_response(status, &body)
}

/// The page a user types the device code into (`/codex/device`).
fn device_page(message: Option<&str>) -> Resp {
    let note = message.unwrap_or("Enter the code shown in your terminal.");
    let html = format!(
        "<!doctype html><title>Device login</title><p>{note}</p>\
         <form method=post><input name=user_code><button>Continue</button></form>"
    );
    bytes_response(200, "text/html; charset=utf-8", Bytes::from(html))
}

async fn device_approve(req: Request<Incoming>, shared: &Shared) -> Resp {
    let (_, raw, _, _) = match read_body(req).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let form = super::tokens::parse_form(&raw);
    let code = form.get("user_code").map(String::as_str).unwrap_or("");
    if shared.oauth.approve_device(code) {
        device_page(Some("Device approved. You can return to your terminal."))
    } else {
        let mut resp = device_page(Some("That code is not valid or has expired."));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        resp
    }
}
