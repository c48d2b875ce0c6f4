//! Chat Completions request translation: the client's JSON (messages, tools,
//! `tool_choice`, `response_format`, effort, cache key, Codex extras) → one `UpstreamRequest`.
//!
//! Owns: checking what cannot be served, the tool list and names, the conversation as
//! `instructions` + `input` items, and the conversation id. Pure: no I/O.

use super::render::Answer;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::dialect::fields::{
    bad, field, is_base64, opt_bool, opt_str, parse_object, req_model, type_name, want_array,
    want_str,
};
use crate::dialect::items::{lite_namespace, write_tool_call_head};
use crate::dialect::{Ctx, KeepAs, PlanCore};
use crate::error::Error;
use crate::json::{join_array, write_str, write_str_body, write_value};
use crate::upstream::catalog::ModelInfo;
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest, random_id};

/// The name the official client gives an unnamed JSON schema.
const DEFAULT_SCHEMA_NAME: &str = "codex_output_schema";

/// Translate a Chat Completions request body (parsed in place): the plan's core and how its
/// answer is written.
pub(super) fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<(PlanCore, Answer), Error> {
    let root = parse_object(body, ctx)?;
    let model = req_model(&root)?;
    let backend = ctx.backend_model(model);
    let info = ctx.catalog.find(&backend);

    let stream = opt_bool(&root, "stream")?.unwrap_or(false);
    let include_usage = field(&root, "stream_options")
        .and_then(|o| field(o, "include_usage"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    check_single_text_choice(&root)?;

    // Tools first: history translation needs to know which names are custom tools.
    let mut names = ToolNames::default();
    let mut tools = parse_tools(&root, &mut names)?;
    let legacy = field(&root, "tools").is_none() && field(&root, "functions").is_some();
    let tool_choice = resolve_tool_choice(&root, &mut tools, &mut names, legacy)?;
    let parallel = if legacy {
        // Legacy answers carry one `function_call` only.
        false
    } else {
        opt_bool(&root, "parallel_tool_calls")?.unwrap_or(true)
    };

    let messages = match field(&root, "messages") {
        Some(v) => want_array(v, "messages")?,
        None => return Err(bad("messages", "`messages` is required")),
    };
    if messages.is_empty() {
        return Err(bad(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let custom_names: Vec<&str> = tools
        .iter()
        .filter(|t| t.custom)
        .map(|t| t.client_name.as_str())
        .collect();
    let conv = translate_messages(messages, &mut names, &custom_names, info)?;

    let tools_json = join_array(tools.as_slice().iter().map(|t| t.json.as_slice()));

    let effort = reasoning_effort(&root, info)?;
    let text = text_options(&root, info)?;
    let service_tier = match field(&root, "service_tier").and_then(|v| v.as_str()) {
        Some(t @ ("priority" | "flex"))
            if info.is_some_and(|m| m.service_tiers.iter().any(|s| s == t)) =>
        {
            Some(t.to_owned())
        }
        _ => None,
    };

    let conversation_id = conversation_id(&root, ctx, &conv)?;
    let subagent = match ctx
        .headers
        .get("x-openai-subagent")
        .and_then(|v| v.to_str().ok())
    {
        Some(s) if !s.is_empty() => Some(s.to_owned()),
        _ => field(&root, "subagent")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    let memgen = ctx
        .headers
        .get("x-openai-memgen-request")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        || field(&root, "memgen_request").and_then(|v| v.as_bool()) == Some(true);

    let previous = opt_str(&root, "previous_response_id", "previous_response_id")?
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let upstream = UpstreamRequest {
        model: backend,
        instructions: conv.instructions,
        input: conv.input,
        tools: tools_json,
        tool_choice,
        parallel_tool_calls: parallel,
        effort,
        summary: Some("auto"),
        text,
        service_tier,
        conversation_id,
        include_sources: field(&root, "web_search_options").is_some(),
        subagent,
        memgen,
        compaction: false,
        lite: info.is_some_and(|m| m.responses_lite),
    };
    let id = random_id("chatcmpl-");
    // Kept for `previous_response_id` on `store: true`, or when it continues a kept exchange.
    let keep = previous.is_some() || opt_bool(&root, "store")? == Some(true);
    let core = PlanCore {
        upstream,
        client_model: model.to_owned(),
        stream,
        keep: keep.then(|| KeepAs::Fixed(id.clone())),
        previous,
    };
    let answer = Answer {
        names,
        include_usage,
        reasoning_field: ctx.config.reasoning_field.clone(),
        legacy,
        id,
    };
    Ok((core, answer))
}

/// `n > 1` and audio output cannot be served: one text choice is all the backend makes.
fn check_single_text_choice(root: &Value<'_>) -> Result<(), Error> {
    if let Some(n) = field(root, "n") {
        let one = n.as_u64() == Some(1) || n.as_f64() == Some(1.0) || n.as_i64() == Some(1);
        if !one {
            return Err(bad(
                "n",
                "only one choice is supported: `n` must be 1 (or omitted)",
            ));
        }
    }
    if field(root, "audio").is_some() {
        return Err(bad("audio", "audio output is not supported"));
    }
    if let Some(m) = field(root, "modalities")
        && let Some(list) = m.as_array()
        && list.iter().any(|v| v.as_str() == Some("audio"))
    {
        return Err(bad(
            "modalities",
            "audio output is not supported: `modalities` may only contain \"text\"",
        ));
    }
    Ok(())
}

/// One tool as it will be sent upstream.
struct ToolDef {
    /// The client's name (empty for hosted tools).
    client_name: String,
    custom: bool,
    hosted: bool,
    json: Vec<u8>,
}

fn parse_tools(root: &Value<'_>, names: &mut ToolNames) -> Result<Vec<ToolDef>, Error> {
    let mut out = Vec::new();
    if let Some(tools) = field(root, "tools") {
        for (i, t) in want_array(tools, "tools")?.iter().enumerate() {
            let param = format!("tools[{i}]");
            let kind = opt_str(t, "type", &param)?.unwrap_or("function");
            match kind {
                "function" => {
                    let f = field(t, "function")
                        .ok_or_else(|| bad(&param, format!("`{param}.function` is required")))?;
                    out.push(function_tool(f, &format!("{param}.function"), names)?);
                }
                "custom" => {
                    let c = field(t, "custom")
                        .ok_or_else(|| bad(&param, format!("`{param}.custom` is required")))?;
                    out.push(custom_tool(c, &format!("{param}.custom"), names)?);
                }
                other => {
                    return Err(bad(
                        &param,
                        format!(
                            "unsupported tool type {other:?} in `{param}`: use \"function\" or \"custom\""
                        ),
                    ));
                }
            }
        }
    }
    if let Some(functions) = field(root, "functions") {
        for (i, f) in want_array(functions, "functions")?.iter().enumerate() {
            out.push(function_tool(f, &format!("functions[{i}]"), names)?);
        }
    }
    if let Some(ws) = field(root, "web_search_options") {
        out.push(web_search_tool(ws));
    }
    Ok(out)
}

/// Writes the opening `{"type":…,"name":…[,"description":…]` of a function or custom tool
/// (`kind`) and returns the client's name.
fn tool_head<'v>(
    json: &mut Vec<u8>,
    kind: &str,
    t: &'v Value<'_>,
    param: &str,
    names: &mut ToolNames,
) -> Result<&'v str, Error> {
    let name = match field(t, "name") {
        Some(v) => want_str(v, &format!("{param}.name"))?,
        None => return Err(bad(param, format!("`{param}.name` is required"))),
    };
    json.extend_from_slice(b"{\"type\":");
    write_str(json, kind);
    json.extend_from_slice(b",\"name\":");
    write_str(json, &names.add(name));
    if let Some(d) = opt_str(t, "description", &format!("{param}.description"))? {
        json.extend_from_slice(b",\"description\":");
        write_str(json, d);
    }
    Ok(name)
}

fn function_tool(f: &Value<'_>, param: &str, names: &mut ToolNames) -> Result<ToolDef, Error> {
    let mut json = Vec::with_capacity(128);
    let name = tool_head(&mut json, "function", f, param, names)?;
    json.extend_from_slice(b",\"parameters\":");
    match field(f, "parameters") {
        Some(p) if p.is_object() => write_value(&mut json, p, None),
        Some(p) => {
            return Err(bad(
                param,
                format!(
                    "`{param}.parameters` must be a JSON Schema object, not {}",
                    type_name(p)
                ),
            ));
        }
        None => json.extend_from_slice(br#"{"type":"object","properties":{}}"#),
    }
    write_strict(&mut json, f);
    json.push(b'}');
    Ok(ToolDef {
        client_name: name.to_owned(),
        custom: false,
        hosted: false,
        json,
    })
}

/// `,"strict":true` or `,"strict":false` from the client's `strict` (absent: false).
fn write_strict(out: &mut Vec<u8>, v: &Value<'_>) {
    let strict = field(v, "strict")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    out.extend_from_slice(if strict {
        b",\"strict\":true"
    } else {
        b",\"strict\":false"
    });
}

fn custom_tool(c: &Value<'_>, param: &str, names: &mut ToolNames) -> Result<ToolDef, Error> {
    let mut json = Vec::with_capacity(128);
    let name = tool_head(&mut json, "custom", c, param, names)?;
    if let Some(format) = field(c, "format") {
        json.extend_from_slice(b",\"format\":");
        let kind = field(format, "type").and_then(|v| v.as_str());
        match (kind, field(format, "grammar")) {
            // Chat nests the grammar; Responses flattens it.
            (Some("grammar"), Some(g)) => {
                json.extend_from_slice(b"{\"type\":\"grammar\"");
                if let Some(s) = field(g, "syntax") {
                    json.extend_from_slice(b",\"syntax\":");
                    write_value(&mut json, s, None);
                }
                if let Some(d) = field(g, "definition") {
                    json.extend_from_slice(b",\"definition\":");
                    write_value(&mut json, d, None);
                }
                json.push(b'}');
            }
            _ => write_value(&mut json, format, None),
        }
    }
    json.push(b'}');
    Ok(ToolDef {
        client_name: name.to_owned(),
        custom: true,
        hosted: false,
        json,
    })
}

fn web_search_tool(ws: &Value<'_>) -> ToolDef {
    let mut json = Vec::with_capacity(96);
    json.extend_from_slice(br#"{"type":"web_search","external_web_access":true"#);
    if let Some(size) = field(ws, "search_context_size").and_then(|v| v.as_str()) {
        json.extend_from_slice(b",\"search_context_size\":");
        write_str(&mut json, size);
    }
    // Chat nests the location under `approximate`; Responses flattens it.
    if let Some(loc) = field(ws, "user_location").and_then(|l| field(l, "approximate"))
        && let Some(obj) = loc.as_object()
    {
        json.extend_from_slice(br#","user_location":{"type":"approximate""#);
        for key in ["country", "region", "city", "timezone"] {
            if let Some(v) = obj.get(key).and_then(|v| v.as_str()) {
                json.push(b',');
                write_str(&mut json, key);
                json.push(b':');
                write_str(&mut json, v);
            }
        }
        json.push(b'}');
    }
    json.push(b'}');
    ToolDef {
        client_name: String::new(),
        custom: false,
        hosted: true,
        json,
    }
}

/// The name inside `{"type":"function","function":{"name"}}` / `{"type":"custom",…}`.
fn choice_name<'v>(v: &'v Value<'_>) -> Option<(&'v str, bool)> {
    let kind = field(v, "type")
        .and_then(|t| t.as_str())
        .unwrap_or("function");
    let custom = kind == "custom";
    let inner = field(v, kind).unwrap_or(v);
    field(inner, "name")
        .and_then(|n| n.as_str())
        .map(|n| (n, custom))
}

fn resolve_tool_choice(
    root: &Value<'_>,
    tools: &mut Vec<ToolDef>,
    names: &mut ToolNames,
    legacy: bool,
) -> Result<ToolChoice, Error> {
    let (choice, param) = match field(root, "tool_choice") {
        Some(c) => (Some(c), "tool_choice"),
        None if legacy => (field(root, "function_call"), "function_call"),
        None => (None, "tool_choice"),
    };
    let Some(choice) = choice else {
        return Ok(ToolChoice::Auto);
    };
    if let Some(s) = choice.as_str() {
        return match s {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            "none" => {
                tools.clear();
                Ok(ToolChoice::Auto)
            }
            other => Err(bad(
                param,
                format!(
                    "unsupported `{param}` {other:?}: use \"auto\", \"none\", \"required\" or an object"
                ),
            )),
        };
    }
    if !choice.is_object() {
        return Err(bad(
            param,
            format!(
                "`{param}` must be a string or an object, not {}",
                type_name(choice)
            ),
        ));
    }
    if field(choice, "type").and_then(|t| t.as_str()) == Some("allowed_tools") {
        let allowed = field(choice, "allowed_tools").unwrap_or(choice);
        let mode = field(allowed, "mode")
            .and_then(|m| m.as_str())
            .unwrap_or("auto");
        let list = match field(allowed, "tools") {
            Some(l) => want_array(l, "tool_choice.allowed_tools.tools")?,
            None => &[],
        };
        let keep: Vec<&str> = list
            .iter()
            .filter_map(|t| choice_name(t).map(|(n, _)| n))
            .collect();
        tools.retain(|t| t.hosted || keep.contains(&t.client_name.as_str()));
        return match mode {
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(
                param,
                format!("unsupported allowed_tools mode {other:?}: use \"auto\" or \"required\""),
            )),
        };
    }
    let Some((name, custom)) = choice_name(choice) else {
        return Err(bad(param, format!("`{param}` names no tool")));
    };
    let Some(def) = tools.iter().find(|t| !t.hosted && t.client_name == name) else {
        return Err(bad(
            param,
            format!("`{param}` forces the tool {name:?}, which is not in `tools`"),
        ));
    };
    if custom || def.custom {
        // The backend's forced choice only names functions: force a custom tool by making it
        // the only tool and requiring a call.
        tools.retain(|t| !t.hosted && t.client_name == name);
        return Ok(ToolChoice::Required);
    }
    Ok(ToolChoice::Function(names.add(name).into_owned()))
}

fn reasoning_effort(root: &Value<'_>, info: Option<&ModelInfo>) -> Result<Option<String>, Error> {
    let requested = match field(root, "reasoning_effort") {
        Some(v) => Some(want_str(v, "reasoning_effort")?),
        None => field(root, "reasoning")
            .and_then(|r| field(r, "effort"))
            .map(|v| want_str(v, "reasoning.effort"))
            .transpose()?,
    };
    Ok(match (info, requested) {
        (Some(m), Some(r)) => Some(m.clamp_effort(r)),
        (Some(m), None) => Some(m.default_effort.clone()),
        (None, r) => r.map(str::to_owned),
    })
}

/// The upstream `text` object: structured output format and verbosity.
fn text_options(root: &Value<'_>, info: Option<&ModelInfo>) -> Result<Option<Vec<u8>>, Error> {
    let mut format = Vec::new();
    if let Some(rf) = field(root, "response_format") {
        let kind = match field(rf, "type") {
            Some(t) => want_str(t, "response_format.type")?,
            None => return Err(bad("response_format", "`response_format.type` is required")),
        };
        match kind {
            "text" => {}
            "json_object" => format.extend_from_slice(br#"{"type":"json_object"}"#),
            "json_schema" => {
                let js = field(rf, "json_schema").ok_or_else(|| {
                    bad(
                        "response_format",
                        "`response_format.json_schema` is required for type json_schema",
                    )
                })?;
                format.extend_from_slice(br#"{"type":"json_schema","name":"#);
                let name = opt_str(js, "name", "response_format.json_schema.name")?
                    .unwrap_or(DEFAULT_SCHEMA_NAME);
                write_str(&mut format, name);
                format.extend_from_slice(b",\"schema\":");
                match field(js, "schema") {
                    Some(s) if s.is_object() => write_value(&mut format, s, None),
                    Some(s) => {
                        return Err(bad(
                            "response_format",
                            format!(
                                "`response_format.json_schema.schema` must be an object, not {}",
                                type_name(s)
                            ),
                        ));
                    }
                    None => format.extend_from_slice(br#"{"type":"object"}"#),
                }
                write_strict(&mut format, js);
                if let Some(d) =
                    opt_str(js, "description", "response_format.json_schema.description")?
                {
                    format.extend_from_slice(b",\"description\":");
                    write_str(&mut format, d);
                }
                format.push(b'}');
            }
            other => {
                return Err(bad(
                    "response_format",
                    format!(
                        "unsupported response_format type {other:?}: use \"text\", \"json_object\" or \"json_schema\""
                    ),
                ));
            }
        }
    }
    let verbosity = match field(root, "verbosity") {
        Some(v) => match want_str(v, "verbosity")? {
            s @ ("low" | "medium" | "high") => Some(s),
            other => {
                return Err(bad(
                    "verbosity",
                    format!("unsupported verbosity {other:?}: use \"low\", \"medium\" or \"high\""),
                ));
            }
        },
        None => None,
    }
    .filter(|_| info.is_some_and(|m| m.supports_verbosity));
    if format.is_empty() && verbosity.is_none() {
        return Ok(None);
    }
    let mut text = Vec::with_capacity(format.len() + 32);
    text.push(b'{');
    if !format.is_empty() {
        text.extend_from_slice(b"\"format\":");
        text.extend_from_slice(&format);
    }
    if let Some(v) = verbosity {
        if !format.is_empty() {
            text.push(b',');
        }
        text.extend_from_slice(b"\"verbosity\":");
        write_str(&mut text, v);
    }
    text.push(b'}');
    Ok(Some(text))
}

/// `prompt_cache_key` when usable as a header value, else a stable hash of what identifies
/// the conversation (so the backend's prefix cache hits across turns).
fn conversation_id(root: &Value<'_>, ctx: &Ctx<'_>, conv: &Conversation) -> Result<String, Error> {
    let user = field(root, "user")
        .or_else(|| field(root, "safety_identifier"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    crate::dialect::fields::conversation_id(
        root,
        ctx,
        b"chat",
        &[
            user.as_bytes(),
            conv.instructions.as_bytes(),
            conv.first_user.as_bytes(),
        ],
    )
}

/// The messages translated to `instructions` + `input`.
struct Conversation {
    instructions: String,
    input: Vec<u8>,
    /// Text of the first user message (part of the cache key).
    first_user: String,
}

/// The `input` array being written, one item at a time.
struct Items {
    buf: Vec<u8>,
    count: usize,
    /// Lite model (§7.1): replayed function calls carry `"namespace":"functions"`, as the
    /// backend sent them.
    lite: bool,
}

impl Items {
    fn item(&mut self) -> &mut Vec<u8> {
        if self.count > 0 {
            self.buf.push(b',');
        }
        self.count += 1;
        &mut self.buf
    }
}

/// Calls seen so far in the history, for pairing outputs with calls.
struct Call {
    id: String,
    custom: bool,
}

fn translate_messages(
    messages: &[Value<'_>],
    names: &mut ToolNames,
    custom_names: &[&str],
    info: Option<&ModelInfo>,
) -> Result<Conversation, Error> {
    let mut instructions = String::new();
    let mut items = Items {
        buf: Vec::with_capacity(1024),
        count: 0,
        lite: info.is_some_and(|m| m.responses_lite),
    };
    items.buf.push(b'[');
    let mut first_user: Option<String> = None;
    let mut leading = true;
    let mut calls: Vec<Call> = Vec::new();
    let mut last_legacy: Option<String> = None;

    for (i, m) in messages.iter().enumerate() {
        let p = format!("messages[{i}]");
        if !m.is_object() {
            return Err(bad(
                &p,
                format!("`{p}` must be an object, not {}", type_name(m)),
            ));
        }
        let role = match field(m, "role") {
            Some(r) => want_str(r, &format!("{p}.role"))?,
            None => return Err(bad(&p, format!("`{p}.role` is required"))),
        };
        let content = field(m, "content");
        let cp = format!("{p}.content");
        match role {
            "system" | "developer" => {
                let parts = text_parts(content, &cp)?;
                if leading {
                    for t in parts {
                        if t.is_empty() {
                            continue;
                        }
                        if !instructions.is_empty() {
                            instructions.push_str("\n\n");
                        }
                        instructions.push_str(t);
                    }
                } else if parts.iter().any(|t| !t.is_empty()) {
                    // The backend refuses `role:"system"` items; developer carries the same weight.
                    let out = items.item();
                    out.extend_from_slice(br#"{"type":"message","role":"developer","content":["#);
                    let mut first = true;
                    for t in parts.into_iter().filter(|t| !t.is_empty()) {
                        input_text(out, &mut first, t);
                    }
                    out.extend_from_slice(b"]}");
                }
            }
            "user" => {
                leading = false;
                let out = items.item();
                out.extend_from_slice(br#"{"type":"message","role":"user","content":["#);
                let text = user_content(out, content, &cp, info)?;
                out.extend_from_slice(b"]}");
                if first_user.is_none() {
                    first_user = Some(text);
                }
            }
            "assistant" => {
                leading = false;
                assistant_message(
                    &mut items,
                    m,
                    &p,
                    names,
                    custom_names,
                    &mut calls,
                    &mut last_legacy,
                )?;
            }
            "tool" => {
                leading = false;
                let id = match field(m, "tool_call_id") {
                    Some(v) => want_str(v, &format!("{p}.tool_call_id"))?,
                    None => return Err(bad(&p, format!("`{p}.tool_call_id` is required"))),
                };
                let Some(call) = calls.iter().find(|c| c.id == id) else {
                    return Err(bad(
                        "messages",
                        format!(
                            "`{p}` is a tool result for tool_call_id {id:?}, but no earlier assistant message has a tool call with that id"
                        ),
                    ));
                };
                let out = items.item();
                out.extend_from_slice(if call.custom {
                    br#"{"type":"custom_tool_call_output","call_id":"#
                } else {
                    br#"{"type":"function_call_output","call_id":"#
                });
                write_str(out, id);
                out.extend_from_slice(b",\"output\":");
                tool_output(out, content, &cp, info)?;
                out.push(b'}');
            }
            "function" => {
                leading = false;
                let Some(id) = &last_legacy else {
                    return Err(bad(
                        "messages",
                        format!(
                            "`{p}` is a function result, but no earlier assistant message has a `function_call`"
                        ),
                    ));
                };
                let out = items.item();
                out.extend_from_slice(br#"{"type":"function_call_output","call_id":"#);
                write_str(out, id);
                out.extend_from_slice(b",\"output\":");
                tool_output(out, content, &cp, info)?;
                out.push(b'}');
            }
            other => {
                return Err(bad(
                    &format!("{p}.role"),
                    format!(
                        "unsupported role {other:?} in `{p}`: use system, developer, user, assistant or tool"
                    ),
                ));
            }
        }
    }
    items.buf.push(b']');
    Ok(Conversation {
        instructions,
        input: items.buf,
        first_user: first_user.unwrap_or_default(),
    })
}

fn input_text(out: &mut Vec<u8>, first: &mut bool, text: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.extend_from_slice(br#"{"type":"input_text","text":"#);
    write_str(out, text);
    out.push(b'}');
}

/// The parts of a content that is not a string.
fn content_parts<'v, 'a>(c: &'v Value<'a>, param: &str) -> Result<&'v [Value<'a>], Error> {
    c.as_array().map(Vec::as_slice).ok_or_else(|| {
        bad(
            param,
            format!(
                "`{param}` must be a string or an array of parts, not {}",
                type_name(c)
            ),
        )
    })
}

/// Text of a system/developer content: a string or `text` parts.
fn text_parts<'v>(content: Option<&'v Value<'_>>, param: &str) -> Result<Vec<&'v str>, Error> {
    let Some(c) = content else {
        return Ok(Vec::new());
    };
    if let Some(s) = c.as_str() {
        return Ok(vec![s]);
    }
    let parts = content_parts(c, param)?;
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let kind = opt_str(part, "type", &format!("{pp}.type"))?.unwrap_or("text");
        if kind != "text" {
            return Err(bad(
                &pp,
                format!(
                    "unsupported part type {kind:?} in `{pp}`: only text parts are allowed here"
                ),
            ));
        }
        match field(part, "text") {
            Some(t) => out.push(want_str(t, &format!("{pp}.text"))?),
            None => return Err(bad(&pp, format!("`{pp}.text` is required"))),
        }
    }
    Ok(out)
}

/// Write user content parts; returns the message's text (for the cache key).
fn user_content(
    out: &mut Vec<u8>,
    content: Option<&Value<'_>>,
    param: &str,
    info: Option<&ModelInfo>,
) -> Result<String, Error> {
    let mut first = true;
    let Some(c) = content else {
        return Err(bad(
            param,
            format!("`{param}` is required for user messages"),
        ));
    };
    if let Some(s) = c.as_str() {
        input_text(out, &mut first, s);
        return Ok(s.to_owned());
    }
    let parts = content_parts(c, param)?;
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{param}[{j}]");
        let kind = match field(part, "type") {
            Some(t) => want_str(t, &format!("{pp}.type"))?,
            None => return Err(bad(&pp, format!("`{pp}.type` is required"))),
        };
        match kind {
            "text" => {
                let t = match field(part, "text") {
                    Some(t) => want_str(t, &format!("{pp}.text"))?,
                    None => return Err(bad(&pp, format!("`{pp}.text` is required"))),
                };
                input_text(out, &mut first, t);
                text.push_str(t);
            }
            "image_url" => {
                input_image(out, &mut first, part, &pp, info)?;
            }
            "input_audio" => {
                return Err(bad(
                    &pp,
                    format!("`{pp}`: audio input is not supported (text and images only)"),
                ));
            }
            "file" => {
                let f = field(part, "file")
                    .ok_or_else(|| bad(&pp, format!("`{pp}.file` is required")))?;
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(br#"{"type":"input_file""#);
                for key in ["file_data", "file_id", "filename"] {
                    if let Some(v) = opt_str(f, key, &format!("{pp}.file.{key}"))? {
                        out.push(b',');
                        write_str(out, key);
                        out.push(b':');
                        write_str(out, v);
                    }
                }
                out.push(b'}');
            }
            other => {
                return Err(bad(
                    &pp,
                    format!(
                        "unsupported content part type {other:?} in `{pp}`: use text, image_url or file"
                    ),
                ));
            }
        }
    }
    Ok(text)
}

/// `{"type":"input_image","image_url":…,"detail":…}` from an `image_url` part (its
/// `image_url` is `{url, detail}` or a bare string), after a comma unless it is the `first`.
fn input_image(
    out: &mut Vec<u8>,
    first: &mut bool,
    part: &Value<'_>,
    part_param: &str,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    if !*first {
        out.push(b',');
    }
    *first = false;
    let param = &format!("{part_param}.image_url");
    let Some(v) = field(part, "image_url") else {
        return Err(bad(param, format!("`{param}` is required")));
    };
    let (url, detail) = if let Some(s) = v.as_str() {
        (s, None)
    } else {
        let url = match field(v, "url") {
            Some(u) => want_str(u, &format!("{param}.url"))?,
            None => return Err(bad(param, format!("`{param}.url` is required"))),
        };
        (url, field(v, "detail").and_then(|d| d.as_str()))
    };
    out.extend_from_slice(br#"{"type":"input_image","image_url":"#);
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| data_url_error(param))?;
        let mime = match mime {
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" => mime,
            // A common client slip; the backend only knows the registered name.
            "image/jpg" => "image/jpeg",
            _ => return Err(data_url_error(param)),
        };
        if !is_base64(data.as_bytes()) {
            return Err(bad(
                param,
                format!("`{param}`: the image data is not valid base64"),
            ));
        }
        out.extend_from_slice(b"\"data:");
        write_str_body(out, mime);
        out.extend_from_slice(b";base64,");
        write_str_body(out, data);
        out.push(b'"');
    } else if url.starts_with("https://") || url.starts_with("http://") {
        write_str(out, url);
    } else {
        return Err(bad(
            param,
            format!("`{param}`: the image URL must be an http(s) URL or a base64 data URL"),
        ));
    }
    let detail = match detail {
        Some(d @ ("low" | "high" | "auto")) => d,
        Some("original") if info.is_some_and(|m| m.image_detail_original) => "original",
        Some("original") => "high",
        _ => "auto",
    };
    out.extend_from_slice(b",\"detail\":");
    write_str(out, detail);
    out.push(b'}');
    Ok(())
}

fn data_url_error(param: &str) -> Error {
    bad(
        param,
        format!(
            "`{param}`: image data URLs must look like data:image/(png|jpeg|gif|webp);base64,<data>"
        ),
    )
}

/// A tool result: a string (text parts joined with newlines), or a part list when it
/// carries images.
fn tool_output(
    out: &mut Vec<u8>,
    content: Option<&Value<'_>>,
    param: &str,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    let Some(c) = content else {
        out.extend_from_slice(b"\"\"");
        return Ok(());
    };
    if let Some(s) = c.as_str() {
        write_str(out, s);
        return Ok(());
    }
    let parts = content_parts(c, param)?;
    let has_image = parts
        .iter()
        .any(|p| field(p, "type").and_then(|t| t.as_str()) == Some("image_url"));
    if has_image {
        out.push(b'[');
        let mut first = true;
        for (j, part) in parts.iter().enumerate() {
            let pp = format!("{param}[{j}]");
            match field(part, "type").and_then(|t| t.as_str()) {
                Some("image_url") => {
                    input_image(out, &mut first, part, &pp, info)?;
                }
                _ => {
                    if let Some(t) = field(part, "text") {
                        input_text(out, &mut first, want_str(t, &format!("{pp}.text"))?);
                    }
                }
            }
        }
        out.push(b']');
        return Ok(());
    }
    out.push(b'"');
    let mut first = true;
    for (j, part) in parts.iter().enumerate() {
        if let Some(t) = field(part, "text") {
            let t = want_str(t, &format!("{param}[{j}].text"))?;
            if !first {
                out.extend_from_slice(b"\\n");
            }
            first = false;
            write_str_body(out, t);
        }
    }
    out.push(b'"');
    Ok(())
}

fn assistant_message(
    items: &mut Items,
    m: &Value<'_>,
    p: &str,
    names: &mut ToolNames,
    custom_names: &[&str],
    calls: &mut Vec<Call>,
    last_legacy: &mut Option<String>,
) -> Result<(), Error> {
    // Text first: the calls follow the text that introduced them.
    let mut texts: Vec<&str> = Vec::new();
    match field(m, "content") {
        None => {}
        Some(c) => {
            if let Some(s) = c.as_str() {
                texts.push(s);
            } else if let Some(parts) = c.as_array() {
                for part in parts {
                    let t = match field(part, "type").and_then(|t| t.as_str()) {
                        Some("refusal") => field(part, "refusal"),
                        _ => field(part, "text"),
                    };
                    if let Some(t) = t.and_then(|t| t.as_str()) {
                        texts.push(t);
                    }
                }
            } else {
                return Err(bad(
                    &format!("{p}.content"),
                    format!(
                        "`{p}.content` must be a string, an array of parts or null, not {}",
                        type_name(c)
                    ),
                ));
            }
        }
    }
    if texts.iter().all(|t| t.is_empty())
        && let Some(r) = field(m, "refusal").and_then(|r| r.as_str())
    {
        texts.push(r);
    }
    if texts.iter().any(|t| !t.is_empty()) {
        let out = items.item();
        out.extend_from_slice(br#"{"type":"message","role":"assistant","content":["#);
        let mut first = true;
        for t in texts.into_iter().filter(|t| !t.is_empty()) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(br#"{"type":"output_text","text":"#);
            write_str(out, t);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }

    if let Some(tc) = field(m, "tool_calls") {
        let tp = format!("{p}.tool_calls");
        for (j, call) in want_array(tc, &tp)?.iter().enumerate() {
            let cp = format!("{tp}[{j}]");
            let id = match field(call, "id") {
                Some(v) => want_str(v, &format!("{cp}.id"))?,
                None => return Err(bad(&cp, format!("`{cp}.id` is required"))),
            };
            let kind = opt_str(call, "type", &format!("{cp}.type"))?.unwrap_or("function");
            let inner =
                field(call, kind).ok_or_else(|| bad(&cp, format!("`{cp}.{kind}` is required")))?;
            let name = match field(inner, "name") {
                Some(v) => want_str(v, &format!("{cp}.{kind}.name"))?,
                None => return Err(bad(&cp, format!("`{cp}.{kind}.name` is required"))),
            };
            let payload_key = if kind == "custom" {
                "input"
            } else {
                "arguments"
            };
            let custom = kind == "custom" || custom_names.contains(&name);
            let lite = items.lite;
            let out = items.item();
            write_tool_call_head(
                out,
                id,
                &names.add(name),
                custom,
                lite_namespace(lite && !custom),
            );
            write_payload(out, field(inner, payload_key), custom);
            out.push(b'}');
            calls.push(Call {
                id: id.to_owned(),
                custom,
            });
        }
    }

    if let Some(fc) = field(m, "function_call") {
        let fp = format!("{p}.function_call");
        let name = match field(fc, "name") {
            Some(v) => want_str(v, &format!("{fp}.name"))?,
            None => return Err(bad(&fp, format!("`{fp}.name` is required"))),
        };
        // Legacy calls have no id; derive one from the position so the history (and so
        // the cached prefix) is byte-stable across requests.
        let id = format!("call_fn_{}", items.count);
        let lite = items.lite;
        let out = items.item();
        write_tool_call_head(out, &id, &names.add(name), false, lite_namespace(lite));
        write_payload(out, field(fc, "arguments"), false);
        out.push(b'}');
        calls.push(Call {
            id: id.clone(),
            custom: false,
        });
        *last_legacy = Some(id);
    }
    Ok(())
}

/// Call arguments as a JSON string (some clients send an object instead of a string).
fn write_payload(out: &mut Vec<u8>, v: Option<&Value<'_>>, custom: bool) {
    match v {
        Some(v) if v.is_str() => write_value(out, v, None),
        Some(v) => {
            let mut compact = Vec::new();
            write_value(&mut compact, v, None);
            write_str(out, &String::from_utf8_lossy(&compact));
        }
        None if custom => out.extend_from_slice(b"\"\""),
        None => out.extend_from_slice(b"\"{}\""),
    }
}
