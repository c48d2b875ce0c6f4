//! The Responses API passthrough: `POST /v1/responses` ⇄ the Codex Responses backend.
//!
//! Owns: fixing a public Responses request into one the backend accepts (an allow-listed
//! `UpstreamRequest`), forwarding the backend's SSE events to the client almost unchanged,
//! and rendering a `Collected` response as the final Response object for `stream:false`.
//! Pure translation: no I/O, no timers, no retries.
//!
//! Design notes:
//! * The client already speaks the backend's language, so the request is re-emitted item by
//!   item (`write_value`) with only the fixes the backend needs: `system` → `developer`,
//!   bare `{"role","content"}` entries get `"type":"message"`, string content becomes parts,
//!   `web_search_preview` → `web_search`, function tools get `strict:false`, long tool
//!   names are shortened. Rejected parameters (`temperature`, `max_output_tokens`, …) have
//!   no path to the wire because `UpstreamRequest` is an allow-list.
//! * Streaming is byte-forwarding: `Encoder::raw` sees every upstream event before it is
//!   decoded and writes it as `event: <type>\ndata: <json>\n\n` untouched. The only events
//!   ever rewritten are (a) a terminal `response.completed`/`response.incomplete` whose
//!   `response.output` is `[]` (the backend sometimes leaves it empty, and some clients read
//!   only the final object), which gets the collected `output_item.done` items spliced in,
//!   and (b) item events carrying a tool name that was shortened on the way up (rare). Both
//!   work on byte spans found by a small JSON span scanner, so the rest of the event is kept
//!   byte-for-byte and nothing is parsed into a tree.
//! * Upstream failures (`response.failed`, `error`) are not forwarded raw: the pipeline maps
//!   them to `Encoder::fail`, which writes the single `error` event, so the client never
//!   sees two errors.
//! * `previous_response_id` is only recorded here (`Plan::previous_response_id`); the route
//!   splices the kept conversation from `server::history` in front of `input`, and answers
//!   `previous_response_not_found` for ids it does not hold. Exchanges are kept unless the
//!   client sends `store: false` (the public API's default is `true`).

use std::borrow::Cow;
use std::ops::Range;

use bytes::BytesMut;
use memchr::{memchr, memmem};

use crate::json::span;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::fields::{
    bad, field, opt_bool, opt_str, parse_object, req_model, req_str, type_name, want_array,
    want_object, want_str,
};
use super::items::{write_summary, write_tool_call};
use super::{Ctx, Encoder, KeepAs, Plan, PlanCore, unix_now};
use crate::error::{Error, Protocol};
use crate::json::{join_array, write_opt_str, write_str, write_u64, write_value};
use crate::upstream::catalog::ModelInfo;
use crate::upstream::collect::{Collected, Finish, Item};
use crate::upstream::events::{Delta, Usage};
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest, random_id};

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// A translated Responses request and everything needed to answer it.
pub struct ResponsesPlan {
    /// The request, the client's model (echoed in the non-stream answer), chaining and
    /// keeping (under the backend's response id, unless `store: false`).
    core: PlanCore,
    names: ToolNames,
    /// Some tool name was shortened: item events must have their names restored.
    renamed: bool,
    /// The client's `instructions` (echoed in the non-stream answer).
    instructions: Option<String>,
}

/// A quoted JSON string.
fn quoted(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    write_str(&mut v, s);
    v
}

/// Write `obj` as an object: `head` (members already rendered, without braces) first, then
/// every member not in `skip`, in the client's order, with `set` replacing a member's value
/// (or appended when the member is absent).
fn write_object(
    out: &mut Vec<u8>,
    obj: &Value<'_>,
    head: &[u8],
    skip: &[&str],
    set: &[(&str, &[u8])],
) {
    out.push(b'{');
    out.extend_from_slice(head);
    let mut first = head.is_empty();
    let members = obj.as_object();
    for (k, v) in members.into_iter().flat_map(|m| m.iter()) {
        let key: &str = k;
        if skip.contains(&key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, key);
        out.push(b':');
        match set.iter().find(|(sk, _)| *sk == key) {
            Some((_, bytes)) => out.extend_from_slice(bytes),
            None => write_value(out, v, None),
        }
    }
    for (k, bytes) in set {
        let written = !skip.contains(k) && members.is_some_and(|m| m.contains_key(*k));
        if written {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, k);
        out.push(b':');
        out.extend_from_slice(bytes);
    }
    out.push(b'}');
}

/// Translate a Responses request body (parsed in place).
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<ResponsesPlan, Error> {
    let root = parse_object(body, ctx)?;
    reject_stateful(&root)?;
    let model = req_model(&root)?;
    let backend = ctx.backend_model(model);
    let info = ctx.catalog.find(&backend);

    // `stream` is remembered for the answer; `store` is validated only. Upstream always
    // gets `stream:true` and `store:false` (the request writer's constants).
    let stream = opt_bool(&root, "stream")?.unwrap_or(false);
    // The public API's default is `store: true`: such exchanges are kept locally.
    let keep = opt_bool(&root, "store")?.unwrap_or(true);
    let previous = opt_str(&root, "previous_response_id", "previous_response_id")?
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let instructions = opt_str(&root, "instructions", "instructions")?;

    let mut names = ToolNames::default();
    let mut tools = parse_tools(&root, &mut names)?;
    let tool_choice = resolve_tool_choice(&root, &mut tools, &mut names)?;
    let parallel = opt_bool(&root, "parallel_tool_calls")?.unwrap_or(true);
    let (input, first_item) = translate_input(&root, &mut names, info)?;

    let tools_json = join_array(tools.as_slice().iter().map(|t| t.json.as_slice()));

    let (effort, summary) = reasoning(&root, info)?;
    let text = text_options(&root, info)?;
    let include_sources = include_sources(&root)?;
    let service_tier = match opt_str(&root, "service_tier", "service_tier")? {
        Some(t) if info.is_some_and(|m| m.service_tiers.iter().any(|s| s == t)) => {
            Some(t.to_owned())
        }
        // `auto`/`default` and tiers the catalog does not offer: the backend rejects them.
        _ => None,
    };
    let first = input.get(first_item).unwrap_or_default();
    let conversation_id = super::conversation_id(
        &root,
        ctx,
        b"responses",
        &[instructions.unwrap_or("").as_bytes(), first],
    )?;
    let subagent = ctx
        .headers
        .get("x-openai-subagent")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let memgen = ctx
        .headers
        .get("x-openai-memgen-request")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));

    let upstream = UpstreamRequest {
        model: backend,
        // Empty stays empty: the request writer substitutes the default.
        instructions: instructions.unwrap_or("").to_owned(),
        input,
        tools: tools_json,
        tool_choice,
        parallel_tool_calls: parallel,
        effort,
        summary,
        text,
        service_tier,
        conversation_id,
        include_sources,
        subagent,
        memgen,
        compaction: false,
        lite: info.is_some_and(|m| m.responses_lite),
    };
    Ok(ResponsesPlan {
        core: PlanCore {
            upstream,
            client_model: model.to_owned(),
            stream,
            previous,
            keep: keep.then_some(KeepAs::ResponseId),
        },
        renamed: names.any_renamed(),
        names,
        instructions: instructions.map(str::to_owned),
    })
}

/// Features that need server-side state or templates, which the backend (and this proxy)
/// do not keep. (`previous_response_id` is served from the local store of kept exchanges.)
fn reject_stateful(root: &Value<'_>) -> Result<(), Error> {
    if field(root, "conversation").is_some() {
        return Err(unsupported(
            "conversation",
            "`conversation` is not supported: codex-as-api keeps no conversation state; send the full history in `input`",
        ));
    }
    if opt_bool(root, "background")? == Some(true) {
        return Err(unsupported(
            "background",
            "`background: true` is not supported: codex-as-api keeps no responses to poll; use `stream` instead",
        ));
    }
    if field(root, "prompt").is_some() {
        return Err(unsupported(
            "prompt",
            "prompt templates (`prompt`) are not supported: send `instructions` and `input` instead",
        ));
    }
    Ok(())
}

fn unsupported(param: &str, message: &str) -> Error {
    bad(param, message).with_code("unsupported_parameter")
}

/// The error for a `previous_response_id` the local store does not hold (never kept,
/// evicted by the store's caps, or from before a restart).
pub fn previous_response_not_found(id: &str) -> Error {
    bad(
        "previous_response_id",
        format!(
            "Previous response with id '{id}' not found: codex-as-api keeps recent responses in memory only (bounded, lost on restart; the ChatGPT backend stores nothing). Send the full conversation in `input` instead."
        ),
    )
    .with_code("previous_response_not_found")
}

/// One tool as it will be sent upstream.
struct ToolDef {
    /// The client's name (function and custom tools).
    name: Option<String>,
    kind: ToolKind,
    json: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ToolKind {
    Function,
    Custom,
    WebSearch,
    /// `namespace`, `tool_search`, `local_shell`: forwarded, never forced by name.
    Other,
}

fn parse_tools(root: &Value<'_>, names: &mut ToolNames) -> Result<Vec<ToolDef>, Error> {
    let Some(tools) = field(root, "tools") else {
        return Ok(Vec::new());
    };
    want_array(tools, "tools")?
        .iter()
        .enumerate()
        .map(|(i, t)| tool(t, &format!("tools[{i}]"), names, true))
        .collect()
}

fn tool(t: &Value<'_>, p: &str, names: &mut ToolNames, top: bool) -> Result<ToolDef, Error> {
    want_object(t, p)?;
    let kind = req_str(t, "type", &format!("{p}.type"))?;
    let mut json = Vec::with_capacity(256);
    match kind {
        "function" | "custom" => {
            let name = req_str(t, "name", &format!("{p}.name"))?;
            let up = quoted(&names.add(name));
            let mut set: Vec<(&str, &[u8])> = vec![("name", &up)];
            // The official client always sends `strict:false`; the backend's default differs.
            if kind == "function" && field(t, "strict").is_none() {
                set.push(("strict", b"false"));
            }
            let head: &[u8] = if kind == "function" {
                br#""type":"function""#
            } else {
                br#""type":"custom""#
            };
            write_object(&mut json, t, head, &["type"], &set);
            return Ok(ToolDef {
                name: Some(name.to_owned()),
                kind: if kind == "function" {
                    ToolKind::Function
                } else {
                    ToolKind::Custom
                },
                json,
            });
        }
        "namespace" if top => {
            let inner = match field(t, "tools") {
                Some(v) => want_array(v, &format!("{p}.tools"))?,
                None => &[],
            };
            let mut list = vec![b'['];
            for (j, it) in inner.iter().enumerate() {
                let ip = format!("{p}.tools[{j}]");
                let def = tool(it, &ip, names, false)?;
                if !matches!(def.kind, ToolKind::Function | ToolKind::Custom) {
                    return Err(bad(
                        &ip,
                        format!("`{ip}`: a namespace may only hold function and custom tools"),
                    ));
                }
                if j > 0 {
                    list.push(b',');
                }
                list.extend_from_slice(&def.json);
            }
            list.push(b']');
            write_object(
                &mut json,
                t,
                br#""type":"namespace""#,
                &["type"],
                &[("tools", &list)],
            );
        }
        "web_search"
        | "web_search_preview"
        | "web_search_2025_08_26"
        | "web_search_preview_2025_03_11"
            if top =>
        {
            // Without it the backend searches only its cache (the official client sends it).
            let set: &[(&str, &[u8])] = if field(t, "external_web_access").is_none() {
                &[("external_web_access", b"true")]
            } else {
                &[]
            };
            write_object(&mut json, t, br#""type":"web_search""#, &["type"], set);
            return Ok(ToolDef {
                name: None,
                kind: ToolKind::WebSearch,
                json,
            });
        }
        // Backend-native types the Codex CLI sends with `wire_api = "responses"`.
        "tool_search" | "local_shell" if top => write_value(&mut json, t, None),
        "file_search"
        | "code_interpreter"
        | "computer_use_preview"
        | "computer_use"
        | "mcp"
        | "image_generation" => {
            return Err(bad(
                p,
                format!(
                    "the hosted tool type {kind:?} in `{p}` is not available through the ChatGPT Codex backend; supported tool types are function, custom, namespace and web_search"
                ),
            ));
        }
        other => {
            return Err(bad(
                p,
                format!(
                    "unsupported tool type {other:?} in `{p}`: use function, custom, namespace or web_search"
                ),
            ));
        }
    }
    Ok(ToolDef {
        name: None,
        kind: ToolKind::Other,
        json,
    })
}

fn resolve_tool_choice(
    root: &Value<'_>,
    tools: &mut Vec<ToolDef>,
    names: &mut ToolNames,
) -> Result<ToolChoice, Error> {
    let p = "tool_choice";
    let Some(choice) = field(root, p) else {
        return Ok(ToolChoice::Auto);
    };
    if let Some(s) = choice.as_str() {
        return match s {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(
                p,
                format!(
                    "unsupported `tool_choice` {other:?}: use \"auto\", \"none\", \"required\" or an object"
                ),
            )),
        };
    }
    if !choice.is_object() {
        return Err(bad(
            p,
            format!(
                "`tool_choice` must be a string or an object, not {}",
                type_name(choice)
            ),
        ));
    }
    let kind = req_str(choice, "type", "tool_choice.type")?;
    match kind {
        "function" | "custom" => {
            // Responses puts `name` at the top; tolerate the Chat nesting too.
            let name = match opt_str(choice, "name", "tool_choice.name")? {
                Some(n) => n,
                None => field(choice, kind)
                    .map(|inner| req_str(inner, "name", "tool_choice.name"))
                    .transpose()?
                    .ok_or_else(|| bad(p, "`tool_choice.name` is required"))?,
            };
            let Some(def) = tools.iter().find(|t| t.name.as_deref() == Some(name)) else {
                return Err(bad(
                    p,
                    format!("`tool_choice` forces the tool {name:?}, which is not in `tools`"),
                ));
            };
            if def.kind == ToolKind::Custom {
                // The backend's forced choice names functions only: force a custom tool by
                // making it the only tool and requiring a call.
                tools.retain(|t| t.name.as_deref() == Some(name) && t.kind == ToolKind::Custom);
                return Ok(ToolChoice::Required);
            }
            Ok(ToolChoice::Function(names.add(name).into_owned()))
        }
        "allowed_tools" => {
            let mode = opt_str(choice, "mode", "tool_choice.mode")?.unwrap_or("auto");
            let list = match field(choice, "tools") {
                Some(l) => want_array(l, "tool_choice.tools")?,
                None => &[],
            };
            let keep_names: Vec<&str> = list
                .iter()
                .filter_map(|t| field(t, "name").and_then(|n| n.as_str()))
                .collect();
            let keep_search = list.iter().any(|t| {
                field(t, "type")
                    .and_then(|k| k.as_str())
                    .is_some_and(|k| k.starts_with("web_search"))
            });
            tools.retain(|t| match t.kind {
                ToolKind::WebSearch => keep_search,
                ToolKind::Other => true,
                _ => t.name.as_deref().is_some_and(|n| keep_names.contains(&n)),
            });
            match mode {
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(bad(
                    p,
                    format!(
                        "unsupported allowed_tools mode {other:?}: use \"auto\" or \"required\""
                    ),
                )),
            }
        }
        k if k.starts_with("web_search") => {
            if !tools.iter().any(|t| t.kind == ToolKind::WebSearch) {
                return Err(bad(
                    p,
                    "`tool_choice` forces web search, but `tools` has no web_search tool",
                ));
            }
            tools.retain(|t| t.kind == ToolKind::WebSearch);
            Ok(ToolChoice::Required)
        }
        other => Err(bad(
            p,
            format!(
                "unsupported `tool_choice.type` {other:?}: use function, custom, allowed_tools or web_search"
            ),
        )),
    }
}

/// The upstream `input` array, and the byte range of its first item (part of the cache key).
fn translate_input(
    root: &Value<'_>,
    names: &mut ToolNames,
    info: Option<&ModelInfo>,
) -> Result<(Vec<u8>, Range<usize>), Error> {
    let Some(input) = field(root, "input") else {
        return Err(bad("input", "`input` is required"));
    };
    let mut out = Vec::with_capacity(1024);
    out.push(b'[');
    if let Some(s) = input.as_str() {
        out.extend_from_slice(
            br#"{"type":"message","role":"user","content":[{"type":"input_text","text":"#,
        );
        write_str(&mut out, s);
        out.extend_from_slice(b"}]}]");
        let end = out.len() - 1;
        return Ok((out, 1..end));
    }
    let items = input.as_array().ok_or_else(|| {
        bad(
            "input",
            format!(
                "`input` must be a string or an array of items, not {}",
                type_name(input)
            ),
        )
    })?;
    // A chained request may add nothing (e.g. compacting a kept conversation by id).
    if items.is_empty() && field(root, "previous_response_id").is_none() {
        return Err(bad("input", "`input` must contain at least one item"));
    }
    let mut first = 1..1;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        input_item(&mut out, item, &format!("input[{i}]"), names, info)?;
        if i == 0 {
            first = start..out.len();
        }
    }
    out.push(b']');
    Ok((out, first))
}

fn input_item(
    out: &mut Vec<u8>,
    item: &Value<'_>,
    p: &str,
    names: &mut ToolNames,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    want_object(item, p)?;
    match opt_str(item, "type", &format!("{p}.type"))? {
        Some("message") => message(out, item, p, info),
        None if field(item, "role").is_some() => message(out, item, p, info),
        None => Err(bad(
            p,
            format!("`{p}.type` is required (or `role` and `content` for a message)"),
        )),
        Some("item_reference") => Err(bad(
            p,
            format!(
                "`{p}` is an item_reference: codex-as-api keeps no items (the ChatGPT backend stores nothing); send the full item instead"
            ),
        )),
        Some("function_call" | "custom_tool_call") => {
            let name = opt_str(item, "name", &format!("{p}.name"))?;
            match name.map(|n| names.add(n)) {
                Some(Cow::Owned(up)) => {
                    write_object(out, item, b"", &[], &[("name", &quoted(&up))]);
                }
                _ => write_value(out, item, None),
            }
            Ok(())
        }
        Some(_) => {
            write_value(out, item, None);
            Ok(())
        }
    }
}

fn message(
    out: &mut Vec<u8>,
    item: &Value<'_>,
    p: &str,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    let role = req_str(item, "role", &format!("{p}.role"))?;
    let role = match role {
        // The backend refuses `system` items; `developer` carries the same weight.
        "system" | "developer" => "developer",
        "user" | "assistant" => role,
        other => {
            return Err(bad(
                &format!("{p}.role"),
                format!(
                    "unsupported role {other:?} in `{p}`: use user, assistant, system or developer"
                ),
            ));
        }
    };
    let cp = format!("{p}.content");
    let Some(content) = field(item, "content") else {
        return Err(bad(&cp, format!("`{cp}` is required")));
    };
    let mut parts = Vec::with_capacity(64);
    if let Some(s) = content.as_str() {
        parts.extend_from_slice(if role == "assistant" {
            br#"[{"type":"output_text","text":"#
        } else {
            br#"[{"type":"input_text","text":"#
        });
        write_str(&mut parts, s);
        parts.extend_from_slice(b"}]");
    } else if let Some(list) = content.as_array() {
        parts.push(b'[');
        for (j, part) in list.iter().enumerate() {
            if j > 0 {
                parts.push(b',');
            }
            content_part(&mut parts, part, &format!("{cp}[{j}]"), info)?;
        }
        parts.push(b']');
    } else {
        return Err(bad(
            &cp,
            format!(
                "`{cp}` must be a string or an array of parts, not {}",
                type_name(content)
            ),
        ));
    }
    let mut head = Vec::with_capacity(40);
    head.extend_from_slice(br#""type":"message","role":"#);
    write_str(&mut head, role);
    head.extend_from_slice(b",\"content\":");
    head.extend_from_slice(&parts);
    write_object(out, item, &head, &["type", "role", "content"], &[]);
    Ok(())
}

/// A content part, forwarded as is except for image fixes the backend needs (the same
/// ones the Chat dialect makes): `image/jpg` → `image/jpeg`, and `detail:"original"` only
/// where the catalog allows it.
fn content_part(
    out: &mut Vec<u8>,
    part: &Value<'_>,
    p: &str,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    want_object(part, p)?;
    if field(part, "type").and_then(|t| t.as_str()) != Some("input_image") {
        write_value(out, part, None);
        return Ok(());
    }
    let mut set: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(url) = opt_str(part, "image_url", &format!("{p}.image_url"))?
        && let Some(rest) = url.strip_prefix("data:image/jpg;")
    {
        set.push(("image_url", quoted(&format!("data:image/jpeg;{rest}"))));
    }
    if opt_str(part, "detail", &format!("{p}.detail"))? == Some("original")
        && !info.is_some_and(|m| m.image_detail_original)
    {
        set.push(("detail", quoted("high")));
    }
    if set.is_empty() {
        write_value(out, part, None);
    } else {
        let set: Vec<(&str, &[u8])> = set.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        write_object(out, part, b"", &[], &set);
    }
    Ok(())
}

/// `reasoning.effort` clamped to the catalog (default: the model's default) and
/// `reasoning.summary` (or the deprecated `generate_summary`).
fn reasoning(
    root: &Value<'_>,
    info: Option<&ModelInfo>,
) -> Result<(Option<String>, Option<&'static str>), Error> {
    let r = field(root, "reasoning");
    if let Some(r) = r {
        want_object(r, "reasoning")?;
    }
    let requested = match r {
        Some(r) => opt_str(r, "effort", "reasoning.effort")?,
        None => None,
    };
    let effort = match (info, requested) {
        (Some(m), Some(e)) => Some(m.clamp_effort(e)),
        (Some(m), None) => Some(m.default_effort.clone()),
        (None, e) => e.map(str::to_owned),
    };
    let summary = match r {
        Some(r) => match opt_str(r, "summary", "reasoning.summary")? {
            Some(s) => Some(s),
            None => opt_str(r, "generate_summary", "reasoning.generate_summary")?,
        },
        None => None,
    };
    let summary = match summary {
        None | Some("none") => None,
        Some("auto") => Some("auto"),
        Some("concise") => Some("concise"),
        Some("detailed") => Some("detailed"),
        Some(other) => {
            return Err(bad(
                "reasoning.summary",
                format!(
                    "unsupported `reasoning.summary` {other:?}: use \"auto\", \"concise\" or \"detailed\""
                ),
            ));
        }
    };
    Ok((effort, summary))
}

/// The upstream `text` object: the client's `format` and `verbosity`, re-emitted as given
/// (verbosity only where the catalog supports it).
fn text_options(root: &Value<'_>, info: Option<&ModelInfo>) -> Result<Option<Vec<u8>>, Error> {
    let Some(text) = field(root, "text") else {
        return Ok(None);
    };
    want_object(text, "text")?;
    let format = field(text, "format");
    if let Some(f) = format {
        want_object(f, "text.format")?;
    }
    let verbosity = opt_str(text, "verbosity", "text.verbosity")?
        .filter(|_| info.is_some_and(|m| m.supports_verbosity));
    if format.is_none() && verbosity.is_none() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    if let Some(f) = format {
        out.extend_from_slice(b"\"format\":");
        write_value(&mut out, f, None);
    }
    if let Some(v) = verbosity {
        if format.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"verbosity\":");
        write_str(&mut out, v);
    }
    out.push(b'}');
    Ok(Some(out))
}

/// Whether `include` asks for search sources (`reasoning.encrypted_content` is always sent).
fn include_sources(root: &Value<'_>) -> Result<bool, Error> {
    let Some(include) = field(root, "include") else {
        return Ok(false);
    };
    let mut sources = false;
    for (i, v) in want_array(include, "include")?.iter().enumerate() {
        sources |= want_str(v, &format!("include[{i}]"))? == "web_search_call.action.sources";
    }
    Ok(sources)
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

impl ResponsesPlan {
    /// Keep this exchange for `previous_response_id` whatever `store` says (the WebSocket
    /// mode chains every turn to the last one).
    pub fn keep_always(&mut self) {
        self.core.keep = Some(KeepAs::ResponseId);
    }
}

impl Plan for ResponsesPlan {
    type Encoder = ResponsesEncoder;

    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }

    fn core(&self) -> &PlanCore {
        &self.core
    }

    fn encoder(&self) -> ResponsesEncoder {
        ResponsesEncoder::new(self.renamed.then(|| self.names.clone()))
    }

    fn render(&self, collected: &Collected) -> Vec<u8> {
        render(self, collected, unix_now())
    }

    fn upstream_mut(&mut self) -> Option<&mut UpstreamRequest> {
        Some(&mut self.core.upstream)
    }
}

fn write_usage(out: &mut Vec<u8>, u: &Usage) {
    out.extend_from_slice(b"{\"input_tokens\":");
    write_u64(out, u.input);
    out.extend_from_slice(b",\"input_tokens_details\":{\"cached_tokens\":");
    write_u64(out, u.cached);
    out.extend_from_slice(b"},\"output_tokens\":");
    write_u64(out, u.output);
    out.extend_from_slice(b",\"output_tokens_details\":{\"reasoning_tokens\":");
    write_u64(out, u.reasoning);
    out.extend_from_slice(b"},\"total_tokens\":");
    write_u64(out, u.total);
    out.push(b'}');
}

/// The final Response object (§10.3) for `stream:false`.
fn render(plan: &ResponsesPlan, c: &Collected, created: u64) -> Vec<u8> {
    let up = &plan.core.upstream;
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"id\":");
    if c.response_id.is_empty() {
        write_str(&mut out, &random_id("resp_"));
    } else {
        write_str(&mut out, &c.response_id);
    }
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    write_u64(&mut out, created);
    match &c.finish {
        Finish::Incomplete(reason) => {
            out.extend_from_slice(b",\"status\":\"incomplete\"");
            out.extend_from_slice(b",\"model\":");
            write_str(&mut out, &plan.core.client_model);
            out.extend_from_slice(b",\"error\":null,\"incomplete_details\":{\"reason\":");
            write_opt_str(&mut out, reason.as_deref());
            out.push(b'}');
        }
        _ => {
            out.extend_from_slice(b",\"status\":\"completed\"");
            out.extend_from_slice(b",\"model\":");
            write_str(&mut out, &plan.core.client_model);
            out.extend_from_slice(b",\"error\":null,\"incomplete_details\":null");
        }
    }
    out.extend_from_slice(b",\"instructions\":");
    write_opt_str(&mut out, plan.instructions.as_deref());
    out.extend_from_slice(b",\"output\":[");
    for (k, item) in c.items.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        write_item(&mut out, item, &plan.names);
    }
    out.extend_from_slice(b"],\"parallel_tool_calls\":");
    out.extend_from_slice(if up.parallel_tool_calls {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"reasoning\":{\"effort\":");
    write_opt_str(&mut out, up.effort.as_deref());
    out.extend_from_slice(b",\"summary\":");
    write_opt_str(&mut out, up.summary);
    out.extend_from_slice(b"},\"store\":false,\"text\":");
    match &up.text {
        Some(t) => out.extend_from_slice(t),
        None => out.extend_from_slice(br#"{"format":{"type":"text"}}"#),
    }
    out.extend_from_slice(b",\"tool_choice\":");
    match &up.tool_choice {
        ToolChoice::Auto => out.extend_from_slice(b"\"auto\""),
        ToolChoice::None => out.extend_from_slice(b"\"none\""),
        ToolChoice::Required => out.extend_from_slice(b"\"required\""),
        ToolChoice::Function(name) => {
            out.extend_from_slice(b"{\"type\":\"function\",\"name\":");
            write_str(&mut out, plan.names.restore(name));
            out.push(b'}');
        }
    }
    out.extend_from_slice(b",\"tools\":[],\"usage\":");
    write_usage(&mut out, &c.usage);
    out.push(b'}');
    out
}

/// One output item in the public Responses shape.
fn write_item(out: &mut Vec<u8>, item: &Item, names: &ToolNames) {
    match item {
        Item::Message {
            text,
            refusal,
            phase,
            citations,
        } => {
            // `Collected` keeps no message id; a fresh one is what the public API promises.
            out.extend_from_slice(b"{\"id\":");
            write_str(out, &random_id("msg_"));
            out.extend_from_slice(
                b",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[",
            );
            let with_text = !text.is_empty() || refusal.is_empty();
            if with_text {
                out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
                write_str(out, text);
                out.extend_from_slice(b",\"annotations\":[");
                for (j, cit) in citations.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"type\":\"url_citation\",\"start_index\":");
                    write_u64(out, u64::from(cit.start));
                    out.extend_from_slice(b",\"end_index\":");
                    write_u64(out, u64::from(cit.end));
                    out.extend_from_slice(b",\"url\":");
                    write_str(out, &cit.url);
                    out.extend_from_slice(b",\"title\":");
                    write_str(out, cit.title.as_deref().unwrap_or(""));
                    out.push(b'}');
                }
                out.extend_from_slice(b"],\"logprobs\":[]}");
            }
            if !refusal.is_empty() {
                if with_text {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"type\":\"refusal\",\"refusal\":");
                write_str(out, refusal);
                out.push(b'}');
            }
            out.push(b']');
            if let Some(phase) = phase {
                out.extend_from_slice(b",\"phase\":");
                write_str(out, phase);
            }
            out.push(b'}');
        }
        Item::Reasoning {
            id,
            summary,
            encrypted_content,
        } => {
            out.extend_from_slice(b"{\"id\":");
            write_str(out, id);
            out.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":");
            write_summary(out, summary);
            out.extend_from_slice(b",\"encrypted_content\":");
            write_opt_str(out, encrypted_content.as_deref());
            out.push(b'}');
        }
        Item::ToolCall {
            call_id,
            name,
            namespace,
            arguments,
            custom,
        } => {
            write_tool_call(
                out,
                call_id,
                names.restore(name),
                namespace.as_deref(),
                arguments,
                *custom,
            );
            out.extend_from_slice(b",\"status\":\"completed\"}");
        }
        Item::WebSearch { id, query, sources } => {
            out.extend_from_slice(b"{\"id\":");
            write_str(out, id);
            out.extend_from_slice(
                b",\"type\":\"web_search_call\",\"status\":\"completed\",\"action\":{\"type\":\"search\",\"query\":",
            );
            write_opt_str(out, query.as_deref());
            if !sources.is_empty() {
                out.extend_from_slice(b",\"sources\":[");
                for (j, (url, _)) in sources.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"type\":\"url\",\"url\":");
                    write_str(out, url);
                    out.push(b'}');
                }
                out.push(b']');
            }
            out.extend_from_slice(b"}}");
        }
        Item::Compaction {
            id,
            encrypted_content,
        } => {
            out.push(b'{');
            if let Some(id) = id {
                out.extend_from_slice(b"\"id\":");
                write_str(out, id);
                out.push(b',');
            }
            out.extend_from_slice(b"\"type\":\"compaction\",\"encrypted_content\":");
            write_str(out, encrypted_content);
            out.push(b'}');
        }
    }
}

// ---------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------

/// Streams one answer by forwarding the upstream's events.
pub struct ResponsesEncoder {
    /// Present only when a tool name was shortened: the fast path never looks for names.
    names: Option<ToolNames>,
    /// The `item` JSON of every `response.output_item.done`, back to back.
    items: Vec<u8>,
    /// (`output_index`, span in `items`) per collected item.
    spans: Vec<(u64, Range<usize>)>,
    /// The `sequence_number` the next event the client sees should carry.
    next_seq: u64,
    done: bool,
}

impl ResponsesEncoder {
    fn new(names: Option<ToolNames>) -> Self {
        ResponsesEncoder {
            names,
            items: Vec::new(),
            spans: Vec::new(),
            next_seq: 0,
            done: false,
        }
    }

    fn collect(&mut self, data: &[u8]) {
        let Some(item) = span::member(data, b"item") else {
            return;
        };
        let Some(bytes) = data.get(item) else {
            return;
        };
        let index = span::member(data, b"output_index")
            .and_then(|r| data.get(r))
            .and_then(span::parse_u64)
            .unwrap_or(self.spans.len() as u64);
        let start = self.items.len();
        self.items.extend_from_slice(bytes);
        self.spans.push((index, start..self.items.len()));
    }

    /// The terminal event with the collected items spliced into an empty `response.output`,
    /// or `None` when it needs no change.
    fn splice_output(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        if self.spans.is_empty() || memmem::find(data, b"\"output\":[]").is_none() {
            return None;
        }
        let resp = span::member(data, b"response")?;
        let output = span::member(data.get(resp.clone())?, b"output")?;
        let output = resp.start + output.start..resp.start + output.end;
        let inner = data.get(output.start + 1..output.end.checked_sub(1)?)?;
        if data.get(output.start) != Some(&b'[') || !inner.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.spans.sort_by_key(|(index, _)| *index);
        let mut out = Vec::with_capacity(data.len() + self.items.len() + self.spans.len());
        out.extend_from_slice(data.get(..output.start)?);
        out.push(b'[');
        for (k, (_, r)) in self.spans.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.items.get(r.clone())?);
        }
        out.push(b']');
        out.extend_from_slice(data.get(output.end..)?);
        Some(out)
    }
}

/// `event: <kind>\ndata: <data>\n\n` (multi-line data keeps one `data:` line per line).
fn frame(out: &mut BytesMut, kind: &[u8], data: &[u8]) {
    out.reserve(kind.len() + data.len() + 17);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"\ndata: ");
    if memchr(b'\n', data).is_none() {
        out.extend_from_slice(data);
    } else {
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\ndata: ");
            }
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\n\n");
}

impl Encoder for ResponsesEncoder {
    /// Responses streams open with the upstream's own `response.created`.
    fn begin(&mut self, _out: &mut BytesMut) {}

    fn raw(&mut self, event: &[u8], data: &[u8], out: &mut BytesMut) {
        if self.done || data.is_empty() || data == b"[DONE]" {
            return;
        }
        let kind = if event.is_empty() {
            match span::member(data, b"type")
                .filter(|r| data.get(r.start) == Some(&b'"'))
                .and_then(|r| data.get(r.start + 1..r.end.saturating_sub(1)))
            {
                Some(k) if !k.is_empty() => k,
                // Not an event object: the decoder reports it and `fail` writes the error.
                _ => return,
            }
        } else {
            event
        };
        // The pipeline turns these into `fail`, which writes the one error event.
        if kind == b"response.failed" || kind == b"error" {
            return;
        }
        let seq = span::leading_member(data, b"sequence_number", 2)
            .and_then(|r| data.get(r))
            .and_then(span::parse_u64);
        let rewritten = match kind {
            b"response.output_item.added" | b"response.output_item.done" => {
                let restored = self
                    .names
                    .as_ref()
                    .and_then(|names| names::restore_item_event(data, names));
                if kind == b"response.output_item.done" {
                    self.collect(restored.as_deref().unwrap_or(data));
                }
                restored
            }
            b"response.completed" | b"response.incomplete" => {
                // Spliced items were restored when collected.
                self.splice_output(data).or_else(|| {
                    self.names
                        .as_ref()
                        .and_then(|names| names::restore_response_event(data, names))
                })
            }
            _ => None,
        };
        frame(out, kind, rewritten.as_deref().unwrap_or(data));
        self.next_seq = match seq {
            Some(n) => n.saturating_add(1),
            None => self.next_seq.saturating_add(1),
        };
    }

    fn delta(&mut self, d: &Delta<'_>, _out: &mut BytesMut) {
        // The bytes went out in `raw`; deltas only mark the end.
        if matches!(d, Delta::Completed { .. } | Delta::Incomplete { .. }) {
            self.done = true;
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b": keep-alive\n\n");
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        let code = err.code.as_deref().unwrap_or(err.kind.openai_code());
        out.extend_from_slice(b"event: error\ndata: {\"type\":\"error\",\"code\":");
        write_str(out, code);
        out.extend_from_slice(b",\"message\":");
        write_str(out, &err.message);
        out.extend_from_slice(b",\"param\":null,\"sequence_number\":");
        write_u64(out, self.next_seq);
        out.extend_from_slice(b"}\n\n");
    }
}

/// Restoring shortened tool names inside forwarded events (slow path, only when a name was
/// shortened on the way up). Edits are byte splices of the `name` value.
mod names {
    use std::ops::Range;

    use super::span;
    use crate::json::write_str;
    use crate::upstream::request::ToolNames;

    /// The `name` span of a call item and the client's name, when it differs.
    fn item_edit(item: &[u8], base: usize, names: &ToolNames) -> Option<(Range<usize>, String)> {
        let kind = span::member(item, b"type").and_then(|r| item.get(r))?;
        if kind != b"\"function_call\"" && kind != b"\"custom_tool_call\"" {
            return None;
        }
        let r = span::member(item, b"name")?;
        // Upstream names are `[A-Za-z0-9_-]`: the raw string body is the name.
        let raw = item.get(r.start + 1..r.end.checked_sub(1)?)?;
        let up = std::str::from_utf8(raw).ok()?;
        let original = names.restore(up);
        (original != up).then(|| (base + r.start..base + r.end, original.to_owned()))
    }

    fn apply(data: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Option<Vec<u8>> {
        if edits.is_empty() {
            return None;
        }
        edits.sort_by_key(|(r, _)| r.start);
        let mut out = Vec::with_capacity(data.len() + 64 * edits.len());
        let mut at = 0;
        for (r, name) in &edits {
            out.extend_from_slice(data.get(at..r.start)?);
            write_str(&mut out, name);
            at = r.end;
        }
        out.extend_from_slice(data.get(at..)?);
        Some(out)
    }

    /// `response.output_item.added` / `.done`.
    pub(super) fn restore_item_event(data: &[u8], names: &ToolNames) -> Option<Vec<u8>> {
        let r = span::member(data, b"item")?;
        let edit = item_edit(data.get(r.clone())?, r.start, names)?;
        apply(data, vec![edit])
    }

    /// `response.completed` / `.incomplete` with a non-empty `response.output`.
    pub(super) fn restore_response_event(data: &[u8], names: &ToolNames) -> Option<Vec<u8>> {
        let resp = span::member(data, b"response")?;
        let out = span::member(data.get(resp.clone())?, b"output")?;
        let base = resp.start + out.start;
        let arr = data.get(base..resp.start + out.end)?;
        let edits = span::elements(arr)?
            .into_iter()
            .filter_map(|e| item_edit(arr.get(e.clone())?, base + e.start, names))
            .collect();
        apply(data, edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::STREAM_B_ITEMS;
    use crate::error::ErrorKind;
    use crate::sse::parse::SseParser;
    use crate::upstream::collect::OwnedCitation;
    use crate::upstream::events::Decoder;
    use http::HeaderMap;
    use serde_json::{Value as J, json};

    fn plan_with(body: J, headers: &HeaderMap) -> Result<ResponsesPlan, Error> {
        crate::dialect::translate_json(translate, &body, headers)
    }

    fn plan(body: J) -> ResponsesPlan {
        plan_with(body, &HeaderMap::new()).unwrap()
    }

    fn err(body: J) -> Error {
        match plan_with(body, &HeaderMap::new()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn upstream(body: J) -> J {
        serde_json::from_slice(&plan(body).upstream().body()).unwrap()
    }

    fn with(extra: J) -> J {
        let mut body = json!({"model": "gpt-5.5", "input": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    // ---- request translation ----

    #[test]
    fn string_input_becomes_one_user_message_with_input_text() {
        let up =
            upstream(json!({"model": "gpt-5.5", "input": "Say hi", "instructions": "Be terse."}));
        assert_eq!(
            up["input"],
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi"}]}])
        );
        assert_eq!(up["instructions"], "Be terse.");
        assert_eq!(up["model"], "gpt-5.5");
        assert_eq!(up["tools"], json!([]));
        assert_eq!(up["tool_choice"], "auto");
        assert_eq!(up["parallel_tool_calls"], true);
        assert_eq!(up["include"], json!(["reasoning.encrypted_content"]));
        assert!(up.get("text").is_none());
        assert!(up["reasoning"].get("summary").is_none());
    }

    #[test]
    fn array_input_rewrites_system_to_developer_and_normalises_bare_role_entries() {
        let up = upstream(json!({"model": "gpt-5.5", "input": [
            {"role": "system", "content": "Use metric."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be kind."}]},
            {"role": "user", "content": "hi"},
            {"type": "message", "id": "msg_1", "role": "assistant", "phase": "final_answer",
             "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
            {"role": "assistant", "content": "Again"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": null, "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "Bash", "arguments": "{}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
        ]}));
        assert_eq!(
            up["input"],
            json!([
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use metric."}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be kind."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
                 "id": "msg_1", "phase": "final_answer"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Again"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "content": null, "encrypted_content": "gAAA"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "Bash", "arguments": "{}", "status": "completed"},
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
            ])
        );
        // Instructions absent: left empty here, the request writer sends its default.
        assert_eq!(
            plan(json!({"model": "gpt-5.5", "input": "x"}))
                .upstream()
                .instructions,
            ""
        );
    }

    #[test]
    fn images_get_the_backend_fixes_and_other_parts_pass_through() {
        let up = upstream(
            json!({"model": "gpt-5.5", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/jpg;base64,AAAA", "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
            ]}]}),
        );
        assert_eq!(
            up["input"][0]["content"],
            json!([
                {"type": "input_image", "image_url": "data:image/jpeg;base64,AAAA", "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
            ])
        );
    }

    #[test]
    fn rejected_and_unknown_parameters_are_dropped() {
        let up = upstream(with(json!({
            "max_output_tokens": 100, "max_tool_calls": 3, "temperature": 0.2, "top_p": 0.9,
            "top_logprobs": 2, "truncation": "auto", "metadata": {"a": "b"}, "user": "u1",
            "safety_identifier": "s", "prompt_cache_retention": "24h",
            "stream_options": {"include_obfuscation": false}, "client_metadata": {"x": "y"},
            "frobnicate": true, "background": false
        })));
        for key in up.as_object().unwrap().keys() {
            assert!(
                crate::upstream::request::BODY_FIELDS.contains(&key.as_str()),
                "{key} was forwarded"
            );
        }
    }

    #[test]
    fn store_and_stream_from_the_client_are_never_forwarded() {
        let p = plan(with(json!({"store": true, "stream": false})));
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        assert_eq!(up["store"], false);
        assert_eq!(up["stream"], true);
        assert!(!p.stream());
        assert!(plan(with(json!({"stream": true}))).stream());
        assert!(!plan(with(json!({}))).stream(), "stream defaults to false");
    }

    #[test]
    fn tools_are_forwarded_with_strict_false_and_web_search_preview_becomes_web_search() {
        let up = upstream(with(json!({"tools": [
            {"type": "function", "name": "Bash", "description": "Run", "parameters": {"type": "object"}},
            {"type": "function", "name": "Strict", "strict": true, "parameters": {"type": "object"}},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "namespace", "name": "image_gen", "description": "d", "tools": [{"type": "function", "name": "imagegen", "parameters": {}}]},
            {"type": "web_search_preview", "search_context_size": "low"}
        ]})));
        assert_eq!(
            up["tools"],
            json!([
                {"type": "function", "name": "Bash", "description": "Run", "parameters": {"type": "object"}, "strict": false},
                {"type": "function", "name": "Strict", "strict": true, "parameters": {"type": "object"}},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
                {"type": "namespace", "name": "image_gen", "description": "d", "tools": [{"type": "function", "name": "imagegen", "parameters": {}, "strict": false}]},
                {"type": "web_search", "search_context_size": "low", "external_web_access": true}
            ])
        );
        let up = upstream(with(json!({
            "tools": [{"type": "function", "name": "Bash"}],
            "tool_choice": {"type": "function", "name": "Bash"},
            "parallel_tool_calls": false
        })));
        assert_eq!(
            up["tool_choice"],
            json!({"type": "function", "name": "Bash"})
        );
        assert_eq!(up["parallel_tool_calls"], false);
        assert_eq!(
            upstream(with(json!({"tool_choice": "required"})))["tool_choice"],
            "required"
        );
    }

    #[test]
    fn hosted_tools_the_backend_lacks_are_rejected_naming_the_type() {
        for kind in [
            "file_search",
            "code_interpreter",
            "computer_use_preview",
            "mcp",
            "image_generation",
            "teleporter",
        ] {
            let e = err(with(
                json!({"tools": [{"type": "function", "name": "ok"}, {"type": kind}]}),
            ));
            assert_eq!(e.status(Protocol::OpenAi), 400);
            assert!(e.message.contains(kind), "{}", e.message);
            assert_eq!(e.param.as_deref(), Some("tools[1]"));
        }
    }

    #[test]
    fn previous_response_id_is_passed_on_and_store_decides_keeping() {
        let p = plan(with(json!({"previous_response_id": "resp_123"})));
        assert_eq!(p.previous_response_id(), Some("resp_123"));
        assert_eq!(p.keep_as(), Some(super::super::KeepAs::ResponseId));
        let p = plan(with(json!({"store": false})));
        assert_eq!(p.previous_response_id(), None);
        assert_eq!(p.keep_as(), None);
        let e = previous_response_not_found("resp_123");
        assert_eq!(e.status(Protocol::OpenAi), 400);
        assert_eq!(e.code.as_deref(), Some("previous_response_not_found"));
        assert_eq!(e.param.as_deref(), Some("previous_response_id"));
        assert!(e.message.contains("resp_123") && e.message.contains("full conversation"));
    }

    #[test]
    fn conversation_background_and_prompt_templates_are_unsupported() {
        for (extra, param) in [
            (json!({"conversation": "conv_1"}), "conversation"),
            (json!({"background": true}), "background"),
            (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
        ] {
            let e = err(with(extra));
            assert_eq!(e.status(Protocol::OpenAi), 400);
            assert_eq!(e.param.as_deref(), Some(param));
            assert!(e.message.contains("not supported"), "{}", e.message);
        }
    }

    #[test]
    fn wrong_types_are_rejected_naming_the_field() {
        for (extra, param) in [
            (json!({"input": 5}), "input"),
            (json!({"instructions": ["x"]}), "instructions"),
            (json!({"tools": {"type": "function"}}), "tools"),
            (json!({"stream": "yes"}), "stream"),
            (json!({"reasoning": "high"}), "reasoning"),
            (json!({"text": {"format": "json"}}), "text.format"),
            (json!({"include": "reasoning.encrypted_content"}), "include"),
            (json!({"tool_choice": 3}), "tool_choice"),
            (
                json!({"input": [{"role": "user", "content": 1}]}),
                "input[0].content",
            ),
            (json!({"input": [{"content": "no role"}]}), "input[0]"),
        ] {
            let e = err(with(extra.clone()));
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
        }
        assert_eq!(err(json!({"input": "hi"})).param.as_deref(), Some("model"));
        assert_eq!(
            err(json!({"model": "gpt-5.5"})).param.as_deref(),
            Some("input")
        );
    }

    #[test]
    fn reasoning_effort_is_clamped_to_the_catalog_and_summary_forwarded() {
        let up = upstream(with(
            json!({"reasoning": {"effort": "max", "summary": "detailed"}}),
        ));
        assert_eq!(
            up["reasoning"],
            json!({"effort": "xhigh", "summary": "detailed"})
        );
        let up = upstream(with(
            json!({"reasoning": {"effort": "minimal", "generate_summary": "concise"}}),
        ));
        assert_eq!(
            up["reasoning"],
            json!({"effort": "low", "summary": "concise"})
        );
        assert_eq!(
            upstream(with(json!({})))["reasoning"],
            json!({"effort": "medium"})
        );
    }

    #[test]
    fn text_include_cache_key_and_service_tier_are_forwarded() {
        let up = upstream(with(json!({
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}, "verbosity": "low", "extra": 1},
            "include": ["web_search_call.action.sources", "reasoning.encrypted_content"],
            "prompt_cache_key": "conv-42",
            "service_tier": "priority"
        })));
        assert_eq!(
            up["text"],
            json!({"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"})
        );
        assert_eq!(
            up["include"],
            json!([
                "reasoning.encrypted_content",
                "web_search_call.action.sources"
            ])
        );
        assert_eq!(up["prompt_cache_key"], "conv-42");
        assert_eq!(up["service_tier"], "priority");
        assert!(
            upstream(with(json!({"service_tier": "auto"})))
                .get("service_tier")
                .is_none()
        );
    }

    #[test]
    fn without_a_cache_key_the_conversation_id_is_stable_per_prefix_and_caller() {
        let id = |body: J, auth: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
            plan_with(body, &h)
                .unwrap()
                .upstream()
                .conversation_id
                .clone()
        };
        let turn1 = json!({"model": "gpt-5.5", "instructions": "S", "input": [{"role": "user", "content": "a"}]});
        let turn2 = json!({"model": "gpt-5.5", "instructions": "S", "input": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}
        ]});
        assert_eq!(id(turn1.clone(), "Bearer k1"), id(turn2, "Bearer k1"));
        assert_ne!(id(turn1.clone(), "Bearer k1"), id(turn1, "Bearer k2"));
    }

    // ---- streaming ----

    /// Upstream events as the backend frames them.
    fn wire(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in lines {
            let v: J = serde_json::from_str(l).unwrap();
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(v["type"].as_str().unwrap().as_bytes());
            out.extend_from_slice(b"\ndata: ");
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        out
    }

    /// Drive the encoder the way `body::Translate` does: `raw`, then the decoded deltas;
    /// `Failed`/`Error` become one `fail`.
    fn run(enc: &mut ResponsesEncoder, bytes: &[u8]) -> Vec<u8> {
        let mut parser = SseParser::new(1 << 20);
        parser.push(bytes);
        let mut dec = Decoder::new();
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        assert!(out.is_empty(), "begin writes nothing");
        while let Some(ev) = parser.next_event().unwrap() {
            enc.raw(ev.event, ev.data, &mut out);
            let mut failure = None;
            dec.decode(ev.data, |d| match d {
                Delta::Failed { code, message, .. } | Delta::Error { code, message } => {
                    let mut e = Error::new(ErrorKind::UpstreamServer, message.unwrap_or("failed"));
                    if let Some(c) = code {
                        e = e.with_code(*c);
                    }
                    failure = Some(e);
                }
                _ => enc.delta(d, &mut out),
            })
            .unwrap();
            if let Some(e) = failure {
                enc.fail(&e, &mut out);
                break;
            }
        }
        out.to_vec()
    }

    /// (event, parsed data) of every frame.
    fn frames(out: &[u8]) -> Vec<(String, J)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (ev, data) = f.split_once('\n').unwrap();
                let ev = ev.strip_prefix("event: ").unwrap().to_owned();
                (
                    ev,
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    const STREAM_A: &[&str] = &[
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_0a1b","object":"response","created_at":1795509282,"status":"in_progress","model":"gpt-5.5","output":[],"usage":null,"store":false,"tool_choice":"auto","parallel_tool_calls":true,"reasoning":{"effort":"medium","summary":null},"text":{"format":{"type":"text"},"verbosity":"low"},"error":null,"incomplete_details":null}}"#,
        r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_0a1b","object":"response","status":"in_progress","model":"gpt-5.5","output":[]}}"#,
        r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"in_progress","content":[],"phase":"final_answer","role":"assistant"}}"#,
        r#"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_9f","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
        r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
        r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"!","logprobs":[]}"#,
        r#"{"type":"response.output_text.done","sequence_number":6,"item_id":"msg_9f","output_index":0,"content_index":0,"text":"Hi!","logprobs":[]}"#,
        r#"{"type":"response.content_part.done","sequence_number":7,"item_id":"msg_9f","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}}"#,
        r#"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}],"phase":"final_answer","role":"assistant"}}"#,
        r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_0a1b","object":"response","status":"completed","model":"gpt-5.5","output":[{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi!"}],"phase":"final_answer","role":"assistant"}],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1246}}}"#,
    ];

    const STREAM_B_COMPLETED: &str = r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[{"id":"rs_1","type":"reasoning","encrypted_content":"gAAAAA…","summary":[{"type":"summary_text","text":"**Running a command**\n\nI'll run echo."}]},{"id":"msg_2","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Running it now."}],"phase":"commentary","role":"assistant"},{"id":"fc_3","type":"function_call","status":"completed","arguments":"{\"command\":\"echo hi\"}","call_id":"call_abc","name":"Bash"}],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":0},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":8},"total_tokens":1274}}}"#;

    fn encoder(body: J) -> ResponsesEncoder {
        plan(body).encoder()
    }

    #[test]
    fn realistic_streams_are_forwarded_byte_identical() {
        let a = wire(STREAM_A);
        assert_eq!(run(&mut encoder(with(json!({}))), &a), a);
        let mut lines = STREAM_B_ITEMS.to_vec();
        lines.push(STREAM_B_COMPLETED);
        // An unknown event type passes through too.
        lines.insert(
            3,
            r#"{"type":"response.future.thing","sequence_number":3,"x":[1,{"y":"}"}]}"#,
        );
        let b = wire(&lines);
        let mut enc = encoder(with(
            json!({"tools": [{"type": "function", "name": "Bash"}]}),
        ));
        assert_eq!(run(&mut enc, &b), b);
        // Nothing is written after the terminal event.
        let mut out = BytesMut::new();
        enc.fail(&Error::internal("late"), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn events_without_an_event_field_are_named_from_their_type() {
        let mut bytes = Vec::new();
        for l in STREAM_A {
            bytes.extend_from_slice(b"data: ");
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\n\n");
        }
        bytes.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(run(&mut encoder(with(json!({}))), &bytes), wire(STREAM_A));
    }

    #[test]
    fn completed_with_empty_output_gets_the_collected_items_spliced_in() {
        let mut lines = STREAM_B_ITEMS.to_vec();
        let empty = r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[],"usage":{"input_tokens":1234,"output_tokens":40,"total_tokens":1274}}}"#;
        lines.push(empty);
        let out = run(&mut encoder(with(json!({}))), &wire(&lines));
        let all = frames(&out);
        assert_eq!(all.len(), lines.len());
        let (ev, last) = all.last().unwrap();
        assert_eq!(ev, "response.completed");
        let full: J = serde_json::from_str(STREAM_B_COMPLETED).unwrap();
        assert_eq!(last["response"]["output"], full["response"]["output"]);
        assert_eq!(last["response"]["usage"]["total_tokens"], 1274);
        assert_eq!(last["sequence_number"], 20);
        // Every other event is untouched.
        let prefix = wire(&STREAM_B_ITEMS);
        assert_eq!(out.get(..prefix.len()).unwrap(), prefix.as_slice());
    }

    #[test]
    fn fail_writes_exactly_one_error_event_with_the_next_sequence_number() {
        let mut enc = encoder(with(json!({})));
        let out = run(&mut enc, &wire(STREAM_A.get(..5).unwrap()));
        let mut tail = BytesMut::new();
        let e = Error::new(
            ErrorKind::BadGateway,
            "The upstream stream ended before completion.",
        )
        .with_code("upstream_stream_incomplete");
        enc.fail(&e, &mut tail);
        enc.fail(&e, &mut tail);
        enc.keepalive(&mut tail);
        let text = std::str::from_utf8(&tail).unwrap();
        assert!(text.ends_with(": keep-alive\n\n"));
        let errors = frames(text.trim_end_matches(": keep-alive\n\n").as_bytes());
        assert_eq!(
            errors,
            vec![(
                "error".to_owned(),
                json!({"type": "error", "code": "upstream_stream_incomplete",
                       "message": "The upstream stream ended before completion.",
                       "param": null, "sequence_number": 5})
            )]
        );
        assert_eq!(frames(&out).len(), 5);
        // Without a code, one comes from the kind.
        let mut enc = encoder(with(json!({})));
        let mut out = BytesMut::new();
        enc.fail(&Error::new(ErrorKind::Overloaded, "busy"), &mut out);
        assert_eq!(frames(&out)[0].1["code"], "server_is_overloaded");
        assert_eq!(frames(&out)[0].1["sequence_number"], 0);
    }

    #[test]
    fn failed_and_error_raw_events_are_not_forwarded() {
        let failed = [
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_f1","object":"response","status":"in_progress","output":[]}}"#,
            r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_f1","object":"response","status":"in_progress","output":[]}}"#,
            r#"{"type":"response.failed","sequence_number":2,"response":{"id":"resp_f1","object":"response","created_at":1759510079,"status":"failed","background":false,"error":{"code":"context_length_exceeded","message":"Your input exceeds the context window of this model. Please adjust your input and try again."},"incomplete_details":null,"usage":null,"metadata":{}}}"#,
        ];
        let out = run(&mut encoder(with(json!({}))), &wire(&failed));
        let all = frames(&out);
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].0, "error");
        assert_eq!(all[2].1["code"], "context_length_exceeded");
        assert_eq!(all[2].1["sequence_number"], 2);
        assert!(!String::from_utf8_lossy(&out).contains("response.failed"));

        let error = [
            failed[0],
            r#"{"type":"error","sequence_number":1,"code":"server_error","message":"The server had an error processing your request. Sorry about that!","param":null}"#,
        ];
        let out = run(&mut encoder(with(json!({}))), &wire(&error));
        let all = frames(&out);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].1["code"], "server_error");
        assert_eq!(all[1].1["sequence_number"], 1);
    }

    #[test]
    fn shortened_tool_names_go_up_short_and_come_back_restored_in_events() {
        let long = format!("mcp__server__{}", "x".repeat(80));
        let p = plan(with(json!({
            "tools": [{"type": "function", "name": long}],
            "tool_choice": {"type": "function", "name": long},
            "input": [{"type": "function_call", "call_id": "c0", "name": long, "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "c0", "output": "ok"}]
        })));
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        let short = up["tools"][0]["name"].as_str().unwrap().to_owned();
        assert_eq!(short.len(), 64);
        assert_eq!(up["tool_choice"]["name"], short.as_str());
        assert_eq!(up["input"][0]["name"], short.as_str());

        let item = |seq: u32, kind: &str| {
            format!(
                r#"{{"type":"{kind}","sequence_number":{seq},"output_index":0,"item":{{"id":"fc_1","type":"function_call","status":"completed","arguments":"{{}}","call_id":"c1","name":"{short}"}}}}"#
            )
        };
        let added = item(0, "response.output_item.added");
        let done = item(1, "response.output_item.done");
        let completed = format!(
            r#"{{"type":"response.completed","sequence_number":2,"response":{{"id":"r","output":[{{"type":"function_call","call_id":"c1","name":"{short}","arguments":"{{}}"}}],"usage":null}}}}"#
        );
        let out = run(&mut p.encoder(), &wire(&[&added, &done, &completed]));
        let all = frames(&out);
        assert_eq!(all[0].1["item"]["name"], long.as_str());
        assert_eq!(all[1].1["item"]["name"], long.as_str());
        assert_eq!(all[2].1["response"]["output"][0]["name"], long.as_str());
        assert_eq!(all[2].1["response"]["output"][0]["call_id"], "c1");
    }

    // ---- non-stream ----

    fn collected(lines: &[&str]) -> Collected {
        let mut dec = Decoder::new();
        let mut c = Collected::new();
        for l in lines {
            dec.decode(l.as_bytes(), |d| c.push(d)).unwrap();
        }
        c
    }

    fn rendered(p: &ResponsesPlan, c: &Collected) -> J {
        serde_json::from_slice(&render(p, c, 1795509282)).unwrap()
    }

    #[test]
    fn render_text_response() {
        let p = plan(with(
            json!({"model": "gpt-5.5", "instructions": "You are terse.", "text": {"verbosity": "low"}}),
        ));
        let mut c = collected(STREAM_A);
        if let Some(Item::Message { citations, .. }) = c.items.first_mut() {
            citations.push(OwnedCitation {
                url: "https://example.com".into(),
                title: Some("Ex".into()),
                start: 0,
                end: 2,
            });
        }
        let v = rendered(&p, &c);
        assert!(v["output"][0]["id"].as_str().unwrap().starts_with("msg_"));
        let mut out0 = v["output"][0].clone();
        out0.as_object_mut().unwrap().remove("id");
        assert_eq!(
            out0,
            json!({"type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": "Hi!", "annotations": [
                       {"type": "url_citation", "start_index": 0, "end_index": 2, "url": "https://example.com", "title": "Ex"}
                   ], "logprobs": []}],
                   "phase": "final_answer"})
        );
        let mut v = v;
        v.as_object_mut().unwrap().remove("output");
        assert_eq!(
            v,
            json!({"id": "resp_0a1b", "object": "response", "created_at": 1795509282, "status": "completed",
                   "model": "gpt-5.5", "error": null, "incomplete_details": null, "instructions": "You are terse.",
                   "parallel_tool_calls": true, "reasoning": {"effort": "medium", "summary": null}, "store": false,
                   "text": {"verbosity": "low"}, "tool_choice": "auto", "tools": [],
                   "usage": {"input_tokens": 1234, "input_tokens_details": {"cached_tokens": 1024},
                             "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1246}})
        );
    }

    #[test]
    fn render_reasoning_and_tool_call() {
        let p = plan(with(
            json!({"model": "my-alias", "tools": [{"type": "function", "name": "Bash"}]}),
        ));
        let mut lines = STREAM_B_ITEMS.to_vec();
        lines.push(STREAM_B_COMPLETED);
        let v = rendered(&p, &collected(&lines));
        assert_eq!(v["model"], "my-alias");
        assert_eq!(v["instructions"], J::Null);
        assert_eq!(
            v["output"][0],
            json!({"id": "rs_1", "type": "reasoning",
                   "summary": [{"type": "summary_text", "text": "**Running a command**\n\nI'll run echo."}],
                   "encrypted_content": "gAAAAA…"})
        );
        assert_eq!(v["output"][1]["phase"], "commentary");
        assert_eq!(v["output"][1]["content"][0]["text"], "Running it now.");
        assert_eq!(
            v["output"][2],
            json!({"type": "function_call", "call_id": "call_abc", "name": "Bash",
                   "arguments": "{\"command\":\"echo hi\"}", "status": "completed"})
        );
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 8);
        assert!(v.get("output_text").is_none());
    }

    #[test]
    fn render_custom_tool_call_and_incomplete() {
        let p = plan(with(json!({})));
        let c = collected(&[
            r#"{"type":"response.created","response":{"id":"resp_i1"}}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"ctc_1","type":"custom_tool_call","call_id":"call_1","name":"apply_patch","input":"*** Begin Patch"}}"#,
            r#"{"type":"response.incomplete","response":{"id":"resp_i1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":900,"output_tokens":128,"total_tokens":1028}}}"#,
        ]);
        let v = rendered(&p, &c);
        assert_eq!(v["status"], "incomplete");
        assert_eq!(
            v["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(
            v["output"][0],
            json!({"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch",
                   "input": "*** Begin Patch", "status": "completed"})
        );
        assert_eq!(v["usage"]["total_tokens"], 1028);
        // No response id upstream: a fresh one.
        let v = rendered(&p, &Collected::new());
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["output"], json!([]));
    }

    #[test]
    fn span_scanner_finds_top_level_members_only() {
        let data = br#"{"a":{"type":"inner","s":"}\"]"},"type" : "outer","n":[1,[2]],"k":12}"#;
        let get = |k: &[u8]| span::member(data, k).map(|r| data.get(r).unwrap().to_vec());
        assert_eq!(get(b"type").unwrap(), br#""outer""#);
        assert_eq!(get(b"n").unwrap(), b"[1,[2]]");
        assert_eq!(span::parse_u64(&get(b"k").unwrap()), Some(12));
        assert_eq!(get(b"missing"), None);
        assert_eq!(span::leading_member(data, b"k", 2), None);
        assert_eq!(span::elements(b"[1, {\"a\":[]} ,\"x\"]").unwrap().len(), 3);
        assert_eq!(span::member(b"{\"a\":\"unterminated", b"b"), None);
        assert_eq!(span::member(b"", b"a"), None);
    }
}
