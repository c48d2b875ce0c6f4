//! The endpoints beyond the three translated protocols: the model list, image generation,
//! image inspection, remote compaction and account usage.
//!
//! Owns: validating each endpoint's request (bad input → 400 in the endpoint's protocol),
//! calling the backend through `backend` or the `pipeline`, and shaping each answer:
//! * `GET /v1/models[/{id}]`: the live catalog in the OpenAI list shape, or Anthropic's when
//!   the request carries Anthropic headers;
//! * `POST /v1/images/generations`: the backend's `/codex/images/generations` (§18) →
//!   the Images API shape; `response_format:"url"` → a `data:` URL;
//! * `POST /v1/inspect`: a prompt plus images, answered by the model through the Chat
//!   dialect (stream optional), non-stream as `{"text",…}`;
//! * `POST /v1/compact`, `/v1/messages/compact`: compaction v2 through `/responses`, falling
//!   back to v1 `/responses/compact`; `/v1/compact` takes a Responses-shaped body or a
//!   Chat-shaped one (`{"messages":[…]}`, translated by the Chat dialect);
//! * `GET /usage`: `/wham/usage` (§19) merged with the latest `x-codex-*` header snapshot.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::accounts::Account;
use crate::dialect::compact::CompactPlan;
use crate::dialect::{Ctx, Plan, PlanCore, chat, messages, responses};
use crate::error::{Error, ErrorKind, Protocol};
use crate::server::backend;
use crate::server::pipeline;
use crate::server::respond::{RespBody, json_response};
use crate::server::state::State;
use crate::upstream::catalog::{Catalog, ModelInfo};
use crate::upstream::collect::{Collected, Item};
use crate::upstream::request::random_id;

/// Image generation can take a minute or more upstream.
const IMAGE_TIMEOUT: Duration = Duration::from_secs(300);
const COMPACT_TIMEOUT: Duration = Duration::from_secs(300);
const USAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// The backend's image model (codex-backend.md §18).
const IMAGE_MODEL: &str = "gpt-image-2";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bad(param: &str, message: impl Into<String>) -> Error {
    Error::bad_request(message).with_param(param)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Map<String, Value>, Error> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::bad_request("the request body must be a JSON object")),
        Err(e) => Err(Error::bad_request(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------

fn model_json(m: &ModelInfo, protocol: Protocol) -> Value {
    match protocol {
        Protocol::OpenAi => json!({
            "id": m.slug,
            "object": "model",
            "created": 1795500000,
            "owned_by": "openai",
            "display_name": m.display_name,
            "description": m.description,
            "context_window": m.context_window,
            "supported_reasoning_levels": m.efforts,
            "default_reasoning_level": m.default_effort,
        }),
        Protocol::Anthropic => json!({
            "type": "model",
            "id": m.slug,
            "display_name": m.display_name,
            "created_at": "2026-01-01T00:00:00Z",
            "max_input_tokens": m.context_window,
        }),
    }
}

/// `GET /v1/models`: the listed models by priority.
pub async fn models_list(state: &State, protocol: Protocol) -> Vec<u8> {
    backend::refresh_catalog(state).await;
    let catalog: Arc<Catalog> = state.catalog.current();
    let mut models: Vec<&ModelInfo> = catalog.models.iter().filter(|m| m.visible).collect();
    models.sort_by_key(|m| m.priority);
    let data: Vec<Value> = models.iter().map(|m| model_json(m, protocol)).collect();
    let v = match protocol {
        Protocol::OpenAi => json!({"object": "list", "data": data}),
        Protocol::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": models.first().map(|m| m.slug.as_str()),
            "last_id": models.last().map(|m| m.slug.as_str()),
        }),
    };
    v.to_string().into_bytes()
}

/// `GET /v1/models/{id}`.
pub async fn model_one(state: &State, id: &str, protocol: Protocol) -> Result<Vec<u8>, Error> {
    backend::refresh_catalog(state).await;
    let catalog = state.catalog.current();
    let m = catalog.find(id).ok_or_else(|| {
        Error::new(
            ErrorKind::ModelNotFound,
            format!("The model `{id}` does not exist or you do not have access to it."),
        )
        .with_code("model_not_found")
    })?;
    Ok(model_json(m, protocol).to_string().into_bytes())
}

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

fn opt_string<'a>(
    req: &'a serde_json::Map<String, Value>,
    key: &str,
    allowed: Option<&[&str]>,
) -> Result<Option<&'a str>, Error> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if let Some(allowed) = allowed
                && !allowed.contains(&s.as_str())
            {
                return Err(bad(
                    key,
                    format!(
                        "Invalid value for `{key}`: {s:?}. Supported values are: {}.",
                        allowed.join(", ")
                    ),
                ));
            }
            Ok(Some(s))
        }
        Some(_) => Err(bad(key, format!("`{key}` must be a string"))),
    }
}

/// `POST /v1/images/generations`.
pub async fn images(state: &Arc<State>, body: &[u8]) -> Result<Vec<u8>, Error> {
    let req = parse_json(body)?;
    let prompt = match req.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.as_str(),
        Some(Value::String(_)) => return Err(bad("prompt", "`prompt` must not be empty")),
        Some(_) => return Err(bad("prompt", "`prompt` must be a string")),
        None => return Err(bad("prompt", "`prompt` is required")),
    };
    let n = match req.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=10) => n,
            _ => return Err(bad("n", "`n` must be an integer from 1 to 10")),
        },
    };
    let size = opt_string(
        &req,
        "size",
        Some(&[
            "auto",
            "1024x1024",
            "1536x1024",
            "1024x1536",
            "256x256",
            "512x512",
            "1792x1024",
            "1024x1792",
        ]),
    )?
    .unwrap_or("auto");
    let quality = opt_string(
        &req,
        "quality",
        Some(&["auto", "low", "medium", "high", "standard", "hd"]),
    )?
    .map(|q| match q {
        // DALL·E names → the gpt-image levels.
        "standard" => "medium",
        "hd" => "high",
        q => q,
    })
    .unwrap_or("auto");
    let background =
        opt_string(&req, "background", Some(&["auto", "opaque", "transparent"]))?.unwrap_or("auto");
    let url_format =
        opt_string(&req, "response_format", Some(&["b64_json", "url"]))? == Some("url");
    let output_format =
        opt_string(&req, "output_format", Some(&["png", "jpeg", "webp"]))?.unwrap_or("png");
    let model = match opt_string(&req, "model", None)? {
        Some(m) if m.starts_with("gpt-image") => m,
        _ => IMAGE_MODEL,
    };
    let mut up = json!({
        "prompt": prompt,
        "background": background,
        "model": model,
        "quality": quality,
        "size": size,
    });
    if n > 1 {
        up["n"] = json!(n);
    }
    if output_format != "png" {
        up["output_format"] = json!(output_format);
    }
    let turn = random_id("img_");
    let mut extra = Vec::new();
    if let Ok(v) = HeaderValue::from_str(&turn) {
        extra.push(("x-codex-image-turn-id", v));
    }
    let url = format!("{}/codex/images/generations", state.config.upstream_url);
    let reply = backend::post_json(
        state,
        &url,
        up.to_string().as_bytes(),
        &extra,
        Protocol::OpenAi,
        IMAGE_TIMEOUT,
    )
    .await?;
    let v: Value = serde_json::from_slice(&reply).map_err(|_| {
        Error::new(
            ErrorKind::BadGateway,
            "the upstream image reply is not JSON",
        )
    })?;
    let mime = match output_format {
        "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        _ => "image/png",
    };
    let data: Vec<Value> = v
        .get("data")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|it| {
                    let b64 = it.get("b64_json")?.as_str()?;
                    let revised = it.get("revised_prompt").cloned().unwrap_or(Value::Null);
                    Some(if url_format {
                        json!({"url": format!("data:{mime};base64,{b64}"), "revised_prompt": revised})
                    } else {
                        json!({"b64_json": b64, "revised_prompt": revised})
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if data.is_empty() {
        return Err(Error::new(
            ErrorKind::BadGateway,
            "the upstream image generation returned no image",
        ));
    }
    let mut out = json!({
        "created": v.get("created").and_then(Value::as_u64).unwrap_or_else(now_secs),
        "data": data,
    });
    if let Some(u) = v.get("usage") {
        out["usage"] = u.clone();
    }
    Ok(out.to_string().into_bytes())
}

// ---------------------------------------------------------------------------------------
// Inspect
// ---------------------------------------------------------------------------------------

/// `POST /v1/inspect`: `{"prompt","images":[{"image_url"}],"model"?,"stream"?}` as a Chat
/// request with one user message (the text, then every image).
pub async fn inspect(
    state: &Arc<State>,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<Response<RespBody>, Error> {
    let req = parse_json(body)?;
    let prompt = match req.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        Some(Value::String(_)) => return Err(bad("prompt", "`prompt` must not be empty")),
        Some(_) => return Err(bad("prompt", "`prompt` must be a string")),
        None => return Err(bad("prompt", "`prompt` is required")),
    };
    let mut parts = vec![json!({"type": "text", "text": prompt})];
    match req.get("images") {
        None | Some(Value::Null) => {}
        Some(Value::Array(images)) => {
            for (i, img) in images.iter().enumerate() {
                let url = match img {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => match o.get("image_url") {
                        Some(Value::String(s)) => Some(s.as_str()),
                        Some(Value::Object(u)) => u.get("url").and_then(Value::as_str),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(url) = url.filter(|u| !u.is_empty()) else {
                    return Err(bad(
                        &format!("images[{i}]"),
                        format!(
                            "`images[{i}]` must be {{\"image_url\": \"<https or data: URL>\"}}"
                        ),
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(d) = img.get("detail") {
                    image["detail"] = d.clone();
                }
                parts.push(json!({"type": "image_url", "image_url": image}));
            }
        }
        Some(_) => return Err(bad("images", "`images` must be an array")),
    }
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        None | Some(Value::Null) => state.config.model.clone(),
        Some(_) => return Err(bad("model", "`model` must be a string")),
    };
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
    };
    let mut chat_body = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": parts}],
    });
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str)
        && let Some(messages) = chat_body["messages"].as_array_mut()
    {
        messages.insert(0, json!({"role": "system", "content": instructions}));
    }
    if stream {
        chat_body["stream_options"] = json!({"include_usage": true});
    }
    let mut bytes = chat_body.to_string().into_bytes();
    let catalog = state.catalog.current();
    let ctx = Ctx {
        config: &state.config,
        catalog: &catalog,
        headers,
    };
    let plan = chat::translate(&mut bytes, &ctx)?;
    Ok(pipeline::run(state, InspectPlan { chat: plan, model }, request_id).await)
}

/// A Chat plan whose non-stream answer is `{"id","object":"inspect","model","text","usage"}`.
struct InspectPlan {
    chat: chat::ChatPlan,
    model: String,
}

impl Plan for InspectPlan {
    type Encoder = <chat::ChatPlan as Plan>::Encoder;

    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }

    fn core(&self) -> &PlanCore {
        self.chat.core()
    }

    /// The request log names the backend model for an inspection.
    fn client_model(&self) -> &str {
        &self.core().upstream.model
    }

    fn encoder(&self) -> Self::Encoder {
        self.chat.encoder()
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        let text: String = c
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        json!({
            "id": random_id("inspect-"),
            "object": "inspect",
            "model": self.model,
            "text": text,
            "usage": {
                "prompt_tokens": c.usage.input,
                "completion_tokens": c.usage.output,
                "total_tokens": c.usage.total,
            },
        })
        .to_string()
        .into_bytes()
    }
}

// ---------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------

/// Errors after which v1 is not worth trying (the account or the request is the problem).
fn final_error(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Unauthorized
            | ErrorKind::AuthUnavailable
            | ErrorKind::RefreshFailed
            | ErrorKind::UsageLimit
            | ErrorKind::QuotaExceeded
            | ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::PayloadTooLarge
            | ErrorKind::ModelNotFound
    )
}

/// `POST /v1/compact` (a Responses-shaped body, or the original project's Chat-shaped one)
/// and `POST /v1/messages/compact` (a Messages-shaped body, answered in Anthropic's shape).
pub async fn compact(
    state: &Arc<State>,
    headers: &HeaderMap,
    body: &mut [u8],
    protocol: Protocol,
    request_id: &str,
) -> Result<Response<RespBody>, Error> {
    let catalog = state.catalog.current();
    let ctx = Ctx {
        config: &state.config,
        catalog: &catalog,
        headers,
    };
    let plan = match protocol {
        Protocol::OpenAi => match chat_shaped(body, &state.config.model)? {
            // The original project's body: `{"messages":[…]}` (model optional).
            Some(mut chat_body) => {
                let mut p = chat::translate(&mut chat_body, &ctx)?;
                state.history.chain(&mut p)?;
                CompactPlan::new(p.upstream(), protocol, p.client_model())
            }
            None => {
                let mut p = responses::translate(body, &ctx)?;
                // Compacting a kept conversation by id works too.
                state.history.chain(&mut p)?;
                CompactPlan::new(p.upstream(), protocol, p.client_model())
            }
        },
        Protocol::Anthropic => {
            let p = messages::translate(body, &ctx)?;
            CompactPlan::new(p.upstream(), protocol, p.client_model())
        }
    };
    let v1_body = plan.v1_body();
    let client_plan = Arc::new(plan);
    let v2 = pipeline::try_run(state, SharedPlan(Arc::clone(&client_plan)), request_id).await;
    let v2_err = match v2 {
        Ok(resp) => return Ok(resp),
        Err(e) if final_error(&e) => return Err(e),
        Err(e) => e,
    };
    tracing::info!(error = %v2_err.message, "remote compaction v2 failed; falling back to /responses/compact");
    let url = format!("{}/codex/responses/compact", state.config.upstream_url);
    let mut extra = Vec::new();
    if let Ok(v) = HeaderValue::from_str(&client_plan.upstream().conversation_id) {
        extra.push(("session_id", v));
    }
    extra.push(("x-openai-subagent", HeaderValue::from_static("compact")));
    let reply =
        backend::post_json(state, &url, &v1_body, &extra, protocol, COMPACT_TIMEOUT).await?;
    let out = client_plan.render_v1(&reply)?;
    Ok(json_response(StatusCode::OK, out, request_id))
}

/// `POST /v1/compact` with a Chat-shaped body (`messages`, no `input`): that body, with the
/// server's model filled in when it names none, for the Chat dialect (leading system and
/// developer messages become the instructions, the rest input items, as for
/// `/v1/chat/completions`). `None` for a Responses-shaped body (or one that is not JSON:
/// the Responses dialect reports it).
fn chat_shaped(body: &[u8], default_model: &str) -> Result<Option<Vec<u8>>, Error> {
    let Ok(Value::Object(mut req)) = serde_json::from_slice::<Value>(body) else {
        return Ok(None);
    };
    if !req.contains_key("messages") {
        return Ok(None);
    }
    if req.contains_key("input") {
        return Err(bad(
            "messages",
            "send either `input` (a Responses-shaped body) or `messages` (a Chat-shaped body), not both",
        ));
    }
    if matches!(req.get("model"), None | Some(Value::Null)) {
        req.insert("model".to_owned(), Value::from(default_model));
        return Ok(Some(Value::Object(req).to_string().into_bytes()));
    }
    Ok(Some(body.to_vec()))
}

/// A plan shared with the caller (the fallback needs it after the pipeline consumed one).
struct SharedPlan(Arc<CompactPlan>);

impl Plan for SharedPlan {
    type Encoder = <CompactPlan as Plan>::Encoder;
    fn protocol(&self) -> Protocol {
        self.0.protocol()
    }
    fn core(&self) -> &PlanCore {
        self.0.core()
    }
    fn client_model(&self) -> &str {
        self.0.client_model()
    }
    fn encoder(&self) -> Self::Encoder {
        self.0.encoder()
    }
    fn check(&self, c: &Collected) -> Result<(), Error> {
        self.0.check(c)
    }
    fn render(&self, c: &Collected) -> Vec<u8> {
        self.0.render(c)
    }
}

// ---------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------

fn window_from_wham(w: &Value) -> Value {
    if !w.is_object() {
        return Value::Null;
    }
    let secs = w.get("limit_window_seconds").and_then(Value::as_u64);
    json!({
        "used_percent": w.get("used_percent").cloned().unwrap_or(Value::Null),
        "window_minutes": secs.map(|s| s / 60),
        "resets_at": w.get("reset_at").cloned().unwrap_or(Value::Null),
        "reset_after_seconds": w.get("reset_after_seconds").cloned().unwrap_or(Value::Null),
    })
}

fn window_from_headers(w: Option<&crate::upstream::ratelimit::Window>, now: u64) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({
            "used_percent": w.used_percent,
            "window_minutes": w.window_minutes,
            "resets_at": w.resets_at,
            "reset_after_seconds": w.resets_at.map(|r| r.saturating_sub(now)),
        }),
    }
}

/// `GET /usage`: see the README for the shape. The top level is the first usable
/// account's report; `accounts` has one per account (an `error` where it failed).
pub async fn usage(state: &Arc<State>) -> Result<Vec<u8>, Error> {
    let all = state.accounts.all();
    let primary = state
        .accounts
        .primary()
        .ok_or_else(|| Error::new(ErrorKind::AuthUnavailable, "no account is configured"))?;
    let mut top = None;
    let mut list = Vec::with_capacity(all.len());
    for a in all {
        let r = account_usage(state, a).await;
        let mut entry = match &r {
            Ok(v) => v.clone(),
            Err(e) => json!({"error": e.message}),
        };
        entry["account"] = Value::from(a.label.as_str());
        list.push(entry);
        if Arc::ptr_eq(a, primary) {
            top = Some(r);
        }
    }
    let mut out = top.unwrap_or_else(|| Ok(Value::Object(Default::default())))?;
    out["account"] = Value::from(primary.label.as_str());
    out["accounts"] = Value::Array(list);
    Ok(out.to_string().into_bytes())
}

/// One account's usage: `GET /wham/usage`, else its latest `x-codex-*` headers.
async fn account_usage(state: &State, account: &Account) -> Result<Value, Error> {
    let url = format!("{}/wham/usage", state.config.upstream_url);
    let wham =
        match backend::send(state, account, Method::GET, &url, None, &[], USAGE_TIMEOUT).await {
            Ok(r) if r.status.is_success() => serde_json::from_slice::<Value>(&r.body).ok(),
            Ok(r) => {
                tracing::warn!(status = r.status.as_u16(), "GET /wham/usage failed");
                None
            }
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::AuthUnavailable | ErrorKind::RefreshFailed | ErrorKind::Unauthorized
                ) =>
            {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "GET /wham/usage failed");
                None
            }
        };
    let snapshot = account.rate_limits.load_full();
    let now = now_secs();
    let headers_json = match &snapshot {
        Some(s) => {
            let mut b = Vec::new();
            s.write_json(&mut b);
            serde_json::from_slice(&b).unwrap_or(Value::Null)
        }
        None => Value::Null,
    };
    let plan_from_token = account.tokens.current().and_then(|h| h.plan.clone());
    let out = match &wham {
        Some(w) => {
            let rl = &w["rate_limit"];
            json!({
                "source": "wham/usage",
                "plan": w.get("plan_type").cloned().filter(|p| !p.is_null()).or(plan_from_token.map(Value::from)).unwrap_or(Value::Null),
                "primary": window_from_wham(&rl["primary_window"]),
                "secondary": window_from_wham(&rl["secondary_window"]),
                "limit_reached": rl.get("limit_reached").cloned().unwrap_or(Value::Null),
                "allowed": rl.get("allowed").cloned().unwrap_or(Value::Null),
                "credits": w.get("credits").cloned().unwrap_or(Value::Null),
                "rate_limit_reached_type": w.get("rate_limit_reached_type").cloned().unwrap_or(Value::Null),
                "additional_rate_limits": w.get("additional_rate_limits").cloned().unwrap_or(Value::Null),
                "headers": headers_json,
            })
        }
        None => {
            let Some(s) = &snapshot else {
                return Err(Error::new(
                    ErrorKind::BadGateway,
                    "usage is unavailable: GET /wham/usage failed and no upstream response has carried x-codex-* rate-limit headers yet",
                ));
            };
            json!({
                "source": "headers",
                "plan": plan_from_token,
                "primary": window_from_headers(s.primary.as_ref(), now),
                "secondary": window_from_headers(s.secondary.as_ref(), now),
                "limit_reached": Value::Null,
                "allowed": Value::Null,
                "credits": {"has_credits": s.credits_has, "unlimited": s.credits_unlimited, "balance": s.credits_balance},
                "rate_limit_reached_type": Value::Null,
                "additional_rate_limits": Value::Null,
                "headers": headers_json,
            })
        }
    };
    Ok(out)
}
