//! Responses request translation: a public Responses request → one `UpstreamRequest` the
//! backend accepts (items re-emitted with only the fixes it needs, tools, tool choice,
//! text options), and the errors for what needs server-side state.

use super::render::Answer;
use std::borrow::Cow;
use std::ops::Range;

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::dialect::fields::{
    bad, field, opt_bool, opt_str, parse_object, req_model, req_str, type_name, want_array,
    want_object, want_str,
};
use crate::dialect::{Ctx, KeepAs, PlanCore};
use crate::error::Error;
use crate::json::{join_array, write_str, write_value};
use crate::upstream::catalog::ModelInfo;
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest};

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
pub(super) fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<(PlanCore, Answer), Error> {
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
    let conversation_id = crate::dialect::fields::conversation_id(
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
    let core = PlanCore {
        upstream,
        client_model: model.to_owned(),
        stream,
        previous,
        keep: keep.then_some(KeepAs::ResponseId),
    };
    let answer = Answer {
        renamed: names.any_renamed(),
        names,
        instructions: instructions.map(str::to_owned),
    };
    Ok((core, answer))
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
