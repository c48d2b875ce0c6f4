//! OpenAI Chat Completions: `POST /v1/chat/completions` ⇄ the Codex Responses backend.
//!
//! Owns: translating one Chat request (messages, tools, `tool_choice`, `response_format`,
//! effort, cache key, Codex extras) into an `UpstreamRequest`; encoding the `Delta` stream as
//! `chat.completion.chunk` SSE frames; rendering a `Collected` response as one
//! `chat.completion`. Pure translation: no I/O, no timers, no retries.
//!
//! Design notes:
//! * Parameters the backend rejects (`temperature`, `max_tokens`, `stop`, `seed`, …) are
//!   accepted and never forwarded: the upstream body is built from an allow-list, so an
//!   unknown field simply has no path to the wire.
//! * Every chunk of one stream shares `id`/`created`/`model`, so the constant JSON prefix is
//!   written once per stream and each text delta costs one prefix copy, one escaped string
//!   and one suffix copy (no heap allocation in steady state).
//! * Tool names the backend would reject are shortened via `ToolNames` and restored in every
//!   answer; `call_id` round-trips verbatim, so no server-side state is needed.
//! * Custom (freeform) tool calls: non-stream answers use the documented Chat shape
//!   `{"type":"custom","custom":{"name","input"}}`; streamed deltas use the `function` shape
//!   with the raw input as `arguments`, because the SDKs' delta types only know `function`.
//!   History that sends a custom tool's call back as `type:"function"` is mapped back to a
//!   `custom_tool_call`, so either shape round-trips.
//! * Legacy `functions`/`function_call` requests (no `tools`) get legacy answers
//!   (`message.function_call`, `finish_reason:"function_call"`) and one call at most.
//! * `tool_choice:"none"` is emulated by sending no tools (safe on every backend mode);
//!   a forced custom tool is sent as the only tool with `tool_choice:"required"`.

use bytes::BytesMut;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::fields::{
    bad, field, is_base64, opt_bool, opt_str, parse_object, req_model, type_name, want_array,
    want_str,
};
use super::items::{lite_namespace, write_tool_call_head};
use super::{Ctx, Encoder, KeepAs, Plan, PlanCore, unix_now};
use crate::error::{Error, Protocol};
use crate::json::{join_array, write_str, write_str_body, write_u64, write_value};
use crate::upstream::catalog::ModelInfo;
use crate::upstream::collect::{Collected, Finish, Item};
use crate::upstream::events::{Delta, Usage};
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest, random_id};

/// The name the official client gives an unnamed JSON schema.
const DEFAULT_SCHEMA_NAME: &str = "codex_output_schema";

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// A translated Chat request and everything needed to answer it.
pub struct ChatPlan {
    /// The request, the client's model (echoed in every answer), chaining and keeping.
    core: PlanCore,
    names: ToolNames,
    include_usage: bool,
    /// `reasoning_content` or `reasoning`.
    reasoning_field: String,
    /// The request used only legacy `functions`: answer with `function_call`.
    legacy: bool,
    /// The `chatcmpl-…` id of the answer (fixed per request so a kept exchange is found
    /// under the id the client saw).
    id: String,
}

/// Translate a Chat Completions request body (parsed in place).
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<ChatPlan, Error> {
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
    Ok(ChatPlan {
        core: PlanCore {
            upstream,
            client_model: model.to_owned(),
            stream,
            keep: keep.then(|| KeepAs::Fixed(id.clone())),
            previous,
        },
        names,
        include_usage,
        reasoning_field: ctx.config.reasoning_field.clone(),
        legacy,
        id,
    })
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
    super::conversation_id(
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
                input_image(
                    out,
                    &mut first,
                    field(part, "image_url"),
                    &format!("{pp}.image_url"),
                    info,
                )?;
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

/// `{"type":"input_image","image_url":…,"detail":…}` from `{url, detail}` or a bare string
/// (after a comma unless it is the `first` part).
fn input_image(
    out: &mut Vec<u8>,
    first: &mut bool,
    v: Option<&Value<'_>>,
    param: &str,
    info: Option<&ModelInfo>,
) -> Result<(), Error> {
    if !*first {
        out.push(b',');
    }
    *first = false;
    let Some(v) = v else {
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
                    input_image(
                        out,
                        &mut first,
                        field(part, "image_url"),
                        &format!("{pp}.image_url"),
                        info,
                    )?;
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

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

/// The full OpenAI usage object.
fn write_usage<B: bytes::BufMut>(out: &mut B, u: &Usage) {
    out.put_slice(b"{\"prompt_tokens\":");
    write_u64(out, u.input);
    out.put_slice(b",\"completion_tokens\":");
    write_u64(out, u.output);
    out.put_slice(b",\"total_tokens\":");
    write_u64(out, u.total);
    out.put_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
    write_u64(out, u.cached);
    out.put_slice(b",\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":");
    write_u64(out, u.reasoning);
    out.put_slice(
        b",\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}",
    );
}

fn incomplete_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("content_filter") => "content_filter",
        // `max_output_tokens` and anything unknown: the answer was cut short.
        _ => "length",
    }
}

impl ChatPlan {
    fn service_tier(&self) -> &str {
        self.core
            .upstream
            .service_tier
            .as_deref()
            .unwrap_or("default")
    }
}

impl Plan for ChatPlan {
    type Encoder = ChatEncoder;

    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }

    fn core(&self) -> &PlanCore {
        &self.core
    }

    fn encoder(&self) -> ChatEncoder {
        ChatEncoder::new(self, &self.id, unix_now())
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        render(self, c, &self.id, unix_now())
    }

    fn upstream_mut(&mut self) -> Option<&mut UpstreamRequest> {
        Some(&mut self.core.upstream)
    }
}

fn render(plan: &ChatPlan, c: &Collected, id: &str, created: u64) -> Vec<u8> {
    let mut text = String::new();
    let mut refusal = String::new();
    let mut annotations = Vec::new();
    let mut reasoning: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for item in &c.items {
        match item {
            Item::Message {
                text: t,
                refusal: r,
                citations,
                ..
            } => {
                // Citation offsets are relative to their message; shift them into the joined text.
                let base = text.chars().count() as u32;
                for cit in citations {
                    annotations.push((base + cit.start, base + cit.end, cit));
                }
                text.push_str(t);
                refusal.push_str(r);
            }
            Item::Reasoning { summary, .. } => {
                reasoning.extend(summary.iter().map(String::as_str).filter(|s| !s.is_empty()));
            }
            Item::ToolCall { .. } => calls.push(item),
            Item::WebSearch { .. } | Item::Compaction { .. } => {}
        }
    }
    let finish = match &c.finish {
        Finish::Incomplete(reason) => incomplete_reason(reason.as_deref()),
        _ if !calls.is_empty() && plan.legacy => "function_call",
        _ if !calls.is_empty() => "tool_calls",
        _ if !refusal.is_empty() => "content_filter",
        _ => "stop",
    };

    let mut out = Vec::with_capacity(512 + text.len() + refusal.len());
    out.extend_from_slice(b"{\"id\":");
    write_str(&mut out, id);
    out.extend_from_slice(b",\"object\":\"chat.completion\",\"created\":");
    write_u64(&mut out, created);
    out.extend_from_slice(b",\"model\":");
    write_str(&mut out, &plan.core.client_model);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    if text.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        write_str(&mut out, &text);
    }
    out.extend_from_slice(b",\"refusal\":");
    if refusal.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        write_str(&mut out, &refusal);
    }
    out.extend_from_slice(b",\"annotations\":[");
    for (k, (start, end, cit)) in annotations.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"url_citation\",\"url_citation\":{\"start_index\":");
        write_u64(&mut out, u64::from(*start));
        out.extend_from_slice(b",\"end_index\":");
        write_u64(&mut out, u64::from(*end));
        out.extend_from_slice(b",\"url\":");
        write_str(&mut out, &cit.url);
        out.extend_from_slice(b",\"title\":");
        write_str(&mut out, cit.title.as_deref().unwrap_or(""));
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    if !reasoning.is_empty() {
        out.push(b',');
        write_str(&mut out, &plan.reasoning_field);
        out.push(b':');
        write_str(&mut out, &reasoning.join("\n\n"));
    }
    if plan.legacy {
        if let Some(Item::ToolCall {
            name, arguments, ..
        }) = calls.first()
        {
            out.extend_from_slice(b",\"function_call\":{\"name\":");
            write_str(&mut out, plan.names.restore(name));
            out.extend_from_slice(b",\"arguments\":");
            write_str(&mut out, arguments);
            out.push(b'}');
        }
    } else if !calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (k, call) in calls.iter().enumerate() {
            let Item::ToolCall {
                call_id,
                name,
                arguments,
                custom,
                ..
            } = call
            else {
                continue;
            };
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_str(&mut out, call_id);
            if *custom {
                out.extend_from_slice(b",\"type\":\"custom\",\"custom\":{\"name\":");
                write_str(&mut out, plan.names.restore(name));
                out.extend_from_slice(b",\"input\":");
            } else {
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_str(&mut out, plan.names.restore(name));
                out.extend_from_slice(b",\"arguments\":");
            }
            write_str(&mut out, arguments);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
    write_str(&mut out, finish);
    out.extend_from_slice(b"}],\"usage\":");
    write_usage(&mut out, &c.usage);
    out.extend_from_slice(b",\"service_tier\":");
    write_str(&mut out, plan.service_tier());
    out.extend_from_slice(b",\"system_fingerprint\":null}");
    out
}

const SUFFIX: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}]}\n\n";
const SUFFIX_USAGE: &[u8] = b",\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

/// Streams one answer as `chat.completion.chunk` frames.
pub struct ChatEncoder {
    /// `data: {"id":…,"object":…,"created":…,"model":…,"system_fingerprint":null,`
    /// followed by `"choices":[{"index":0,"delta":`; `head_len` marks the split.
    prefix: Vec<u8>,
    head_len: usize,
    suffix: &'static [u8],
    include_usage: bool,
    /// `{"reasoning_content":` (or `{"reasoning":`).
    reasoning_key: Vec<u8>,
    names: ToolNames,
    /// Upstream `output_index` of each tool call; the position is the client's `index`.
    calls: Vec<u32>,
    legacy: bool,
    /// Reasoning text was written since the last part boundary.
    reasoning_dirty: bool,
    /// The next reasoning text starts a new part: prefix it with a blank line.
    reasoning_sep: bool,
    refused: bool,
    done: bool,
}

impl ChatEncoder {
    fn new(plan: &ChatPlan, id: &str, created: u64) -> Self {
        let mut prefix = Vec::with_capacity(160 + plan.core.client_model.len());
        prefix.extend_from_slice(b"data: {\"id\":");
        write_str(&mut prefix, id);
        prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        write_u64(&mut prefix, created);
        prefix.extend_from_slice(b",\"model\":");
        write_str(&mut prefix, &plan.core.client_model);
        prefix.extend_from_slice(b",\"system_fingerprint\":null,");
        let head_len = prefix.len();
        prefix.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        let mut reasoning_key = Vec::with_capacity(24);
        reasoning_key.push(b'{');
        write_str(&mut reasoning_key, &plan.reasoning_field);
        reasoning_key.push(b':');
        ChatEncoder {
            prefix,
            head_len,
            suffix: if plan.include_usage {
                SUFFIX_USAGE
            } else {
                SUFFIX
            },
            include_usage: plan.include_usage,
            reasoning_key,
            names: plan.names.clone(),
            calls: Vec::with_capacity(4),
            legacy: plan.legacy,
            reasoning_dirty: false,
            reasoning_sep: false,
            refused: false,
            done: false,
        }
    }

    /// The client index of the call at upstream `index`.
    fn call_index(&self, index: u32) -> Option<usize> {
        // `as_slice`: with `simd_json::prelude` in scope, `Vec::iter` resolves to
        // `value_trait::Array::iter`, which boxes its iterator (one allocation per delta).
        self.calls.as_slice().iter().position(|&i| i == index)
    }

    fn finish(&mut self, reason: &str, usage: &Usage, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"{},\"logprobs\":null,\"finish_reason\":");
        write_str(out, reason);
        out.extend_from_slice(if self.include_usage {
            b"}],\"usage\":null}\n\n".as_slice()
        } else {
            b"}]}\n\n".as_slice()
        });
        if self.include_usage {
            out.extend_from_slice(self.prefix.get(..self.head_len).unwrap_or_default());
            out.extend_from_slice(b"\"choices\":[],\"usage\":");
            write_usage(out, usage);
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(DONE);
        self.done = true;
    }
}

impl Encoder for ChatEncoder {
    fn begin(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        out.extend_from_slice(self.suffix);
    }

    fn delta(&mut self, d: &Delta<'_>, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match d {
            Delta::Text { text, .. } => {
                if text.is_empty() {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"{\"content\":");
                write_str(out, text);
                out.extend_from_slice(b"}");
                out.extend_from_slice(self.suffix);
            }
            Delta::ToolCallArgs { index, fragment } => {
                if fragment.is_empty() {
                    return;
                }
                let Some(k) = self.call_index(*index) else {
                    return;
                };
                if self.legacy && k > 0 {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                if self.legacy {
                    out.extend_from_slice(b"{\"function_call\":{\"arguments\":");
                    write_str(out, fragment);
                    out.extend_from_slice(b"}}");
                } else {
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    write_u64(out, k as u64);
                    out.extend_from_slice(b",\"function\":{\"arguments\":");
                    write_str(out, fragment);
                    out.extend_from_slice(b"}}]}");
                }
                out.extend_from_slice(self.suffix);
            }
            Delta::ReasoningText { text, .. } => {
                if text.is_empty() {
                    return;
                }
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(&self.reasoning_key);
                out.extend_from_slice(b"\"");
                if self.reasoning_sep {
                    out.extend_from_slice(b"\\n\\n");
                    self.reasoning_sep = false;
                }
                write_str_body(out, text);
                out.extend_from_slice(b"\"}");
                out.extend_from_slice(self.suffix);
                self.reasoning_dirty = true;
            }
            Delta::ReasoningPart { .. } => {
                if self.reasoning_dirty {
                    self.reasoning_sep = true;
                    self.reasoning_dirty = false;
                }
            }
            Delta::Refusal { text, .. } => {
                if text.is_empty() {
                    return;
                }
                self.refused = true;
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"{\"refusal\":");
                write_str(out, text);
                out.extend_from_slice(b"}");
                out.extend_from_slice(self.suffix);
            }
            Delta::ToolCallStart {
                index,
                call_id,
                name,
                ..
            } => {
                if self.call_index(*index).is_some() {
                    return;
                }
                let k = self.calls.len();
                self.calls.push(*index);
                let name = self.names.restore(name);
                if self.legacy {
                    if k > 0 {
                        return;
                    }
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b"{\"function_call\":{\"name\":");
                    write_str(out, name);
                    out.extend_from_slice(b",\"arguments\":\"\"}}");
                } else {
                    out.extend_from_slice(&self.prefix);
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    write_u64(out, k as u64);
                    out.extend_from_slice(b",\"id\":");
                    write_str(out, call_id);
                    out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    write_str(out, name);
                    out.extend_from_slice(b",\"arguments\":\"\"}}]}");
                }
                out.extend_from_slice(self.suffix);
            }
            Delta::Completed { usage } => {
                let reason = if !self.calls.is_empty() && self.legacy {
                    "function_call"
                } else if !self.calls.is_empty() {
                    "tool_calls"
                } else if self.refused {
                    "content_filter"
                } else {
                    "stop"
                };
                self.finish(reason, usage, out);
            }
            Delta::Incomplete { reason, usage } => {
                self.finish(incomplete_reason(*reason), usage, out);
            }
            // Citations only exist in non-stream `annotations`; the rest carries nothing a
            // Chat client can show. Failures reach `fail`, never here.
            Delta::Created { .. }
            | Delta::MessageStart { .. }
            | Delta::Citation { .. }
            | Delta::MessageDone { .. }
            | Delta::ReasoningStart { .. }
            | Delta::ReasoningDone { .. }
            | Delta::ToolCallDone { .. }
            | Delta::WebSearchDone { .. }
            | Delta::CompactionDone { .. }
            | Delta::Failed { .. }
            | Delta::Error { .. } => {}
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(b": keep-alive\n\n");
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.done {
            return;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&err.openai_json());
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(DONE);
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::events::Decoder;
    use http::HeaderMap;
    use serde_json::{Value as J, json};

    fn plan_with(body: J, headers: &HeaderMap) -> Result<ChatPlan, Error> {
        crate::dialect::translate_json(translate, &body, headers)
    }

    pub(super) fn plan(body: J) -> ChatPlan {
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

    fn user(text: &str) -> J {
        json!({"role": "user", "content": text})
    }

    // ---- request translation ----

    #[test]
    fn leading_system_messages_become_instructions_and_later_ones_developer_items() {
        let up = upstream(json!({
            "model": "gpt-5.5",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
                user("hi"),
                {"role": "system", "content": "Now be verbose."}
            ]
        }));
        assert_eq!(up["instructions"], "Be terse.\n\nUse metric.");
        assert_eq!(
            up["input"],
            json!([
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Now be verbose."}]}
            ])
        );
        assert_eq!(up["model"], "gpt-5.5");
        assert_eq!(up["store"], false);
        assert_eq!(up["stream"], true);
        assert_eq!(up["reasoning"]["summary"], "auto");
    }

    #[test]
    fn user_images_keep_parts_separate_with_data_and_https_urls() {
        let up = upstream(json!({
            "model": "gpt-5.5",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": "https://example.com/cat.jpg"},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
            ]}]
        }));
        assert_eq!(
            up["input"][0]["content"],
            json!([
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}
            ])
        );
    }

    #[test]
    fn bad_image_data_urls_and_audio_input_are_rejected_clearly() {
        let image = |url: &str| {
            json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]})
        };
        let e = err(image("data:image/tiff;base64,AAAA"));
        assert_eq!(e.status(Protocol::OpenAi), 400);
        assert!(
            e.message.contains("data:image/(png|jpeg|gif|webp)"),
            "{}",
            e.message
        );
        let e = err(image("data:image/png;base64,not base64!"));
        assert!(e.message.contains("not valid base64"), "{}", e.message);
        let e = err(
            json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
        );
        assert!(e.message.contains("audio"));
    }

    #[test]
    fn assistant_text_comes_before_its_tool_calls_and_tool_results_pair_by_id() {
        let up = upstream(json!({
            "model": "gpt-5.5",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "messages": [
                user("weather?"),
                {"role": "assistant", "content": "Checking.", "reasoning_content": "ignored", "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_b", "content": "rainy"},
                {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny"}, {"type": "text", "text": "22C"}]}
            ]
        }));
        let input = up["input"].as_array().unwrap();
        assert_eq!(
            input[1],
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]})
        );
        assert_eq!(
            input[2],
            json!({"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(input[3]["call_id"], "call_b");
        assert_eq!(
            input[4],
            json!({"type": "function_call_output", "call_id": "call_b", "output": "rainy"})
        );
        assert_eq!(input[5]["output"], "sunny\n22C");
        assert_eq!(
            up["tools"][0],
            json!({"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": false})
        );
    }

    #[test]
    fn tool_result_without_a_matching_call_is_a_400_on_messages() {
        let e = err(json!({"model": "gpt-5.5", "messages": [
            user("hi"),
            {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}
        ]}));
        assert_eq!(e.status(Protocol::OpenAi), 400);
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(e.message.contains("call_zzz"));
    }

    #[test]
    fn legacy_function_messages_pair_with_the_last_legacy_call() {
        let p = plan(json!({"model": "gpt-5.5",
        "functions": [{"name": "f", "parameters": {"type": "object"}}],
        "function_call": {"name": "f"},
        "messages": [
            user("go"),
            {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": "done"}
        ]}));
        assert!(p.legacy);
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        assert_eq!(up["input"][1]["type"], "function_call");
        assert_eq!(up["input"][2]["call_id"], up["input"][1]["call_id"]);
        assert_eq!(up["tool_choice"], json!({"type": "function", "name": "f"}));
        assert_eq!(up["parallel_tool_calls"], false);
    }

    #[test]
    fn ignored_parameters_never_reach_the_upstream() {
        let up = upstream(json!({
            "model": "gpt-5.5", "messages": [user("hi")],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 10,
            "stop": ["x"], "user": "u1", "seed": 7, "logprobs": true, "top_logprobs": 2,
            "presence_penalty": 1, "frequency_penalty": 1, "logit_bias": {"1": 2},
            "metadata": {"a": "b"}, "store": true, "prediction": {"type": "content", "content": "x"},
            "modalities": ["text"], "prompt_cache_retention": "24h", "service_tier": "scale",
            "stream_options": {"include_obfuscation": true}, "n": 1, "some_future_field": {"x": 1}
        }));
        for k in [
            "temperature",
            "top_p",
            "max_tokens",
            "max_output_tokens",
            "max_completion_tokens",
            "stop",
            "user",
            "seed",
            "logprobs",
            "top_logprobs",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
            "metadata",
            "prediction",
            "modalities",
            "prompt_cache_retention",
            "service_tier",
            "stream_options",
            "n",
            "some_future_field",
        ] {
            assert!(up.get(k).is_none(), "{k} leaked upstream");
        }
        assert_eq!(up["store"], false);
    }

    #[test]
    fn n_above_one_and_audio_output_are_400() {
        let e = err(json!({"model": "gpt-5.5", "messages": [user("hi")], "n": 2}));
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = err(json!({"model": "gpt-5.5", "messages": [user("hi")], "audio": {"voice": "x"}}));
        assert_eq!(e.param.as_deref(), Some("audio"));
        let e = err(
            json!({"model": "gpt-5.5", "messages": [user("hi")], "modalities": ["text", "audio"]}),
        );
        assert_eq!(e.param.as_deref(), Some("modalities"));
    }

    #[test]
    fn missing_or_mistyped_fields_name_the_field() {
        assert_eq!(
            err(json!({"messages": [user("hi")]})).param.as_deref(),
            Some("model")
        );
        assert_eq!(
            err(json!({"model": "gpt-5.5", "messages": []}))
                .param
                .as_deref(),
            Some("messages")
        );
        let e = err(json!({"model": "gpt-5.5", "messages": {"role": "user"}}));
        assert!(
            e.message.contains("`messages` must be an array"),
            "{}",
            e.message
        );
        let e = err(json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": 5}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = err(json!({"model": "gpt-5.5", "messages": [{"role": "wizard", "content": "x"}]}));
        assert!(e.message.contains("wizard"));
    }

    #[test]
    fn tool_choice_variants_map_to_the_backend() {
        let tools = json!([
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b"}},
            {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: x"}}}}
        ]);
        let with = |choice: J| {
            upstream(
                json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools, "tool_choice": choice}),
            )
        };
        let up = upstream(json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools}));
        assert_eq!(up["tool_choice"], "auto");
        assert_eq!(up["parallel_tool_calls"], true);
        assert_eq!(up["tools"].as_array().unwrap().len(), 3);
        assert_eq!(
            up["tools"][2],
            json!({"type": "custom", "name": "apply_patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}})
        );
        assert_eq!(with(json!("required"))["tool_choice"], "required");
        let none = with(json!("none"));
        assert_eq!(none["tools"], json!([]));
        let forced = with(json!({"type": "function", "function": {"name": "b"}}));
        assert_eq!(
            forced["tool_choice"],
            json!({"type": "function", "name": "b"})
        );
        let allowed = with(
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "required",
            "tools": [{"type": "function", "function": {"name": "a"}}]}}),
        );
        assert_eq!(allowed["tool_choice"], "required");
        assert_eq!(allowed["tools"].as_array().unwrap().len(), 1);
        assert_eq!(allowed["tools"][0]["name"], "a");
        let custom = with(json!({"type": "custom", "custom": {"name": "apply_patch"}}));
        assert_eq!(custom["tool_choice"], "required");
        assert_eq!(custom["tools"][0]["name"], "apply_patch");
        assert_eq!(custom["tools"].as_array().unwrap().len(), 1);
        let e = err(
            json!({"model": "gpt-5.5", "messages": [user("hi")], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "zzz"}}}),
        );
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let off = upstream(
            json!({"model": "gpt-5.5", "messages": [user("hi")], "parallel_tool_calls": false}),
        );
        assert_eq!(off["parallel_tool_calls"], false);
    }

    #[test]
    fn response_format_json_object_and_json_schema_flatten_into_text_format() {
        let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_object"}, "verbosity": "low"}));
        assert_eq!(
            up["text"],
            json!({"format": {"type": "json_object"}, "verbosity": "low"})
        );
        let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person",
                "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": true, "description": "A person"}}}));
        assert_eq!(
            up["text"],
            json!({"format": {"type": "json_schema", "name": "person",
                "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": true, "description": "A person"}})
        );
        let up = upstream(json!({"model": "gpt-5.5", "messages": [user("json")],
            "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}));
        assert_eq!(up["text"]["format"]["name"], "codex_output_schema");
        let up = upstream(
            json!({"model": "gpt-5.5", "messages": [user("x")], "response_format": {"type": "text"}}),
        );
        assert!(up.get("text").is_none());
    }

    #[test]
    fn reasoning_effort_is_clamped_to_the_model_and_defaults_to_the_catalog() {
        let effort = |extra: J| {
            let mut body = json!({"model": "gpt-5.5", "messages": [user("x")]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            upstream(body)["reasoning"]["effort"].clone()
        };
        assert_eq!(effort(json!({})), "medium");
        assert_eq!(effort(json!({"reasoning_effort": "minimal"})), "low");
        assert_eq!(effort(json!({"reasoning_effort": "high"})), "high");
        assert_eq!(effort(json!({"reasoning": {"effort": "max"}})), "xhigh");
    }

    #[test]
    fn long_tool_names_are_shortened_upstream_and_restored_in_both_answers() {
        let long = format!("mcp__server__{}", "x".repeat(80));
        let p = plan(
            json!({"model": "gpt-5.5", "messages": [user("x")], "stream": true,
            "tools": [{"type": "function", "function": {"name": long}}]}),
        );
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        let short = up["tools"][0]["name"].as_str().unwrap().to_owned();
        assert_ne!(short, long);
        assert!(short.len() <= 64);

        let mut enc = ChatEncoder::new(&p, "chatcmpl-1", 1);
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::ToolCallStart {
                index: 0,
                call_id: "call_1",
                name: &short,
                custom: false,
            },
            &mut out,
        );
        let chunk = chunks(&out);
        assert_eq!(
            chunk[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            long.as_str()
        );

        let mut c = Collected::new();
        c.push(&Delta::ToolCallStart {
            index: 0,
            call_id: "call_1",
            name: &short,
            custom: false,
        });
        c.push(&Delta::ToolCallDone {
            index: 0,
            call_id: "call_1",
            name: &short,
            namespace: None,
            arguments: "{}",
            custom: false,
        });
        c.push(&Delta::Completed {
            usage: Usage::default(),
        });
        let v: J = serde_json::from_slice(&render(&p, &c, "chatcmpl-1", 1)).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            long.as_str()
        );
    }

    #[test]
    fn cache_key_is_the_prompt_cache_key_or_stable_per_conversation_and_api_key() {
        let body = json!({"model": "gpt-5.5", "messages": [{"role": "system", "content": "S"}, user("first")]});
        assert_eq!(
            upstream(
                json!({"model": "gpt-5.5", "messages": [user("x")], "prompt_cache_key": "conv-1"})
            )["prompt_cache_key"],
            "conv-1"
        );
        let a = upstream(body.clone())["prompt_cache_key"].clone();
        let mut longer = body.clone();
        longer["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "ok"}));
        longer["messages"]
            .as_array_mut()
            .unwrap()
            .push(user("second"));
        assert_eq!(
            upstream(longer)["prompt_cache_key"],
            a,
            "later turns keep the key"
        );
        let mut other = body.clone();
        other["user"] = json!("someone");
        assert_ne!(upstream(other)["prompt_cache_key"], a);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Bearer k2".parse().unwrap());
        let p = plan_with(body, &headers).unwrap();
        assert_ne!(p.upstream().conversation_id, a.as_str().unwrap());
    }

    #[test]
    fn codex_extras_come_from_headers_or_body() {
        let mut headers = HeaderMap::new();
        headers.insert("x-openai-subagent", "review".parse().unwrap());
        headers.insert("x-openai-memgen-request", "true".parse().unwrap());
        let p = plan_with(
            json!({"model": "gpt-5.5", "messages": [user("x")]}),
            &headers,
        )
        .unwrap();
        assert_eq!(p.upstream().subagent.as_deref(), Some("review"));
        assert!(p.upstream().memgen);
        let p = plan(
            json!({"model": "gpt-5.5", "messages": [user("x")], "subagent": "compact", "memgen_request": true}),
        );
        assert_eq!(p.upstream().subagent.as_deref(), Some("compact"));
        assert!(p.upstream().memgen);
    }

    #[test]
    fn web_search_options_add_the_hosted_tool_and_sources() {
        let up = upstream(json!({"model": "gpt-5.5", "messages": [user("x")],
            "web_search_options": {"user_location": {"type": "approximate", "approximate": {"country": "FR"}}}}));
        assert_eq!(
            up["tools"][0],
            json!({"type": "web_search", "external_web_access": true, "user_location": {"type": "approximate", "country": "FR"}})
        );
        assert_eq!(up["include"][1], "web_search_call.action.sources");
    }

    #[test]
    fn priority_tier_is_forwarded_only_when_the_catalog_lists_it() {
        let up = upstream(
            json!({"model": "gpt-5.5", "messages": [user("x")], "service_tier": "priority"}),
        );
        assert_eq!(up["service_tier"], "priority");
        let up =
            upstream(json!({"model": "gpt-5.5", "messages": [user("x")], "service_tier": "flex"}));
        assert!(up.get("service_tier").is_none());
    }

    // ---- streaming ----

    /// The JSON of every `data:` frame (`[DONE]` as the string "[DONE]").
    fn chunks(out: &[u8]) -> Vec<J> {
        let s = std::str::from_utf8(out).unwrap();
        assert!(s.ends_with("\n\n"), "frames end with a blank line");
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let data = f
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad frame {f:?}"));
                if data == "[DONE]" {
                    J::String("[DONE]".into())
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    /// The `delta` of every chunk (`[DONE]` left out).
    pub(super) fn deltas(out: &[u8]) -> Vec<J> {
        chunks(out)
            .iter()
            .filter(|c| c.is_object())
            .map(|c| c["choices"][0]["delta"].clone())
            .collect()
    }

    fn stream_plan(extra: J) -> ChatPlan {
        let mut body = json!({"model": "my-client-model", "messages": [user("x")], "stream": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        plan(body)
    }

    fn run(p: &ChatPlan, events: &[&str]) -> Vec<u8> {
        let mut enc = ChatEncoder::new(p, "chatcmpl-1", 1795509282);
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        let mut dec = Decoder::new();
        for e in events {
            dec.decode(e.as_bytes(), |d| enc.delta(d, &mut out))
                .unwrap();
        }
        out.to_vec()
    }

    #[test]
    fn text_stream_with_include_usage_matches_the_documented_frames() {
        let p = stream_plan(json!({"stream_options": {"include_usage": true}}));
        let out = run(
            &p,
            &[
                r#"{"type":"response.created","response":{"id":"resp_1"}}"#,
                r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"message","role":"assistant"}}"#,
                r#"{"type":"response.output_text.delta","output_index":0,"delta":"Hi"}"#,
                r#"{"type":"response.output_text.delta","output_index":0,"delta":"!\n\"x\""}"#,
                r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"message","content":[{"type":"output_text","text":"Hi!"}]}}"#,
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":1246}}}"#,
            ],
        );
        let head = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795509282,"model":"my-client-model","system_fingerprint":null,"choices":[{"index":0,"delta":"#;
        let tail = r#","logprobs":null,"finish_reason":null}],"usage":null}"#;
        let expected = format!(
            "{head}{{\"role\":\"assistant\",\"content\":\"\"}}{tail}\n\n\
             {head}{{\"content\":\"Hi\"}}{tail}\n\n\
             {head}{{\"content\":\"!\\n\\\"x\\\"\"}}{tail}\n\n\
             {head}{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n\
             data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1795509282,\"model\":\"my-client-model\",\"system_fingerprint\":null,\"choices\":[],\"usage\":{{\"prompt_tokens\":1234,\"completion_tokens\":12,\"total_tokens\":1246,\"prompt_tokens_details\":{{\"cached_tokens\":1024,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":4,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        for c in chunks(&out) {
            if c.is_object() {
                assert_eq!(c["id"], "chatcmpl-1");
            }
        }
    }

    #[test]
    fn two_parallel_tool_calls_stream_by_index_as_fragments_arrive() {
        let p = stream_plan(
            json!({"tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
        );
        let out = run(
            &p,
            &[
                r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","call_id":"call_a1","name":"get_weather","arguments":""}}"#,
                r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\"city\":"}"#,
                r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","call_id":"call_b2","name":"get_weather","arguments":""}}"#,
                r#"{"type":"response.function_call_arguments.delta","output_index":1,"delta":"{\"city\":\"Rome\"}"}"#,
                r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"\"Paris\"}"}"#,
                r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_a1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}"#,
                r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"function_call","call_id":"call_b2","name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}"#,
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
            ],
        );
        let c = chunks(&out);
        let deltas = deltas(&out);
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"tool_calls": [{"index": 0, "id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
                json!({"tool_calls": [{"index": 1, "id": "call_b2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"city\":\"Rome\"}"}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                json!({}),
            ]
        );
        let last = &c[c.len() - 2];
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert!(
            last.get("usage").is_none(),
            "no usage keys without include_usage"
        );
        assert_eq!(c[c.len() - 1], "[DONE]");
        for chunk in &c[..c.len() - 2] {
            assert_eq!(chunk["choices"][0]["finish_reason"], J::Null);
            assert_eq!(chunk["choices"][0]["logprobs"], J::Null);
            assert_eq!(chunk["system_fingerprint"], J::Null);
        }
    }

    #[test]
    fn reasoning_streams_as_the_configured_field_with_a_blank_line_between_parts() {
        let p = stream_plan(json!({}));
        let out = run(
            &p,
            &[
                r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
                r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
                r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"**Plan**"}"#,
                r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}"#,
                r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":1,"delta":"Then act."}"#,
                r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"e","summary":[{"text":"**Plan**"},{"text":"Then act."}]}}"#,
                r#"{"type":"response.output_text.delta","output_index":1,"delta":"Done"}"#,
                r#"{"type":"response.completed","response":{}}"#,
            ],
        );
        let deltas = deltas(&out);
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"reasoning_content": "**Plan**"}),
                json!({"reasoning_content": "\n\nThen act."}),
                json!({"content": "Done"}),
                json!({}),
            ]
        );
    }

    #[test]
    fn incomplete_for_max_output_tokens_finishes_with_length() {
        let p = stream_plan(json!({}));
        let out = run(
            &p,
            &[
                r#"{"type":"response.output_text.delta","output_index":0,"delta":"cut"}"#,
                r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"}}}"#,
            ],
        );
        let c = chunks(&out);
        assert_eq!(c[c.len() - 2]["choices"][0]["finish_reason"], "length");
        assert_eq!(c[c.len() - 1], "[DONE]");
    }

    #[test]
    fn failure_writes_one_error_chunk_then_done_and_nothing_after() {
        let p = stream_plan(json!({"stream_options": {"include_usage": true}}));
        let mut enc = ChatEncoder::new(&p, "chatcmpl-1", 1);
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        enc.delta(
            &Delta::Text {
                index: 0,
                text: "par",
            },
            &mut out,
        );
        let start = out.len();
        let e = Error::new(
            crate::error::ErrorKind::BadGateway,
            "The upstream stream ended before completion.",
        )
        .with_code("upstream_stream_incomplete");
        enc.fail(&e, &mut out);
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        enc.fail(&e, &mut out);
        assert_eq!(
            std::str::from_utf8(&out[start..]).unwrap(),
            "data: {\"error\":{\"message\":\"The upstream stream ended before completion.\",\"type\":\"server_error\",\"param\":null,\"code\":\"upstream_stream_incomplete\"}}\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn keepalive_is_an_sse_comment() {
        let p = stream_plan(json!({}));
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.keepalive(&mut out);
        assert_eq!(&out[..], b": keep-alive\n\n");
    }

    #[test]
    fn large_tool_schemas_translate_to_byte_identical_bodies() {
        // Objects over 32 keys leave simd-json's vector map; their order must still be the
        // same on every request, or the backend's prompt cache misses.
        let mut props = serde_json::Map::new();
        for i in 0..40 {
            props.insert(format!("p{i}"), json!({"type": "string"}));
        }
        let body = json!({
            "model": "gpt-5.5",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": props}}}]
        });
        let first = stream_plan(body.clone()).upstream().body();
        for _ in 0..5 {
            assert_eq!(stream_plan(body.clone()).upstream().body(), first);
        }
    }

    // ---- non-stream ----

    fn collect(events: &[&str]) -> Collected {
        let mut dec = Decoder::new();
        let mut c = Collected::new();
        for e in events {
            dec.decode(e.as_bytes(), |d| c.push(d)).unwrap();
        }
        c
    }

    #[test]
    fn non_stream_text_answer_has_the_documented_shape() {
        let p = plan(json!({"model": "my-client-model", "messages": [user("x")]}));
        let c = collect(&[
            r#"{"type":"response.output_text.delta","output_index":0,"delta":"Hello"}"#,
            r#"{"type":"response.output_text.annotation.added","output_index":0,"annotation":{"type":"url_citation","url":"https://e.com","title":"E","start_index":0,"end_index":5}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"total_tokens":13}}}"#,
        ]);
        let v: J = serde_json::from_slice(&render(&p, &c, "chatcmpl-9", 7)).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-9", "object": "chat.completion", "created": 7, "model": "my-client-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": null,
                    "annotations": [{"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 5, "url": "https://e.com", "title": "E"}}]},
                    "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                    "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
                "service_tier": "default", "system_fingerprint": null
            })
        );
    }

    #[test]
    fn non_stream_tool_calls_have_null_content_and_tool_calls_finish() {
        let p = plan(json!({"model": "gpt-5.5", "messages": [user("x")],
            "tools": [{"type": "function", "function": {"name": "get_weather"}},
                      {"type": "custom", "custom": {"name": "apply_patch"}}]}));
        let c = collect(&[
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"custom_tool_call","call_id":"call_2","name":"apply_patch","input":"*** Begin Patch"}}"#,
            r#"{"type":"response.completed","response":{}}"#,
        ]);
        let v: J = serde_json::from_slice(&render(&p, &c, "chatcmpl-9", 7)).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], J::Null);
        assert_eq!(
            m["tool_calls"],
            json!([
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}
            ])
        );
        assert!(m.get("reasoning_content").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn non_stream_reasoning_joins_parts_and_legacy_requests_get_function_call() {
        let p = plan(json!({"model": "gpt-5.5", "messages": [user("x")]}));
        let c = collect(&[
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"e","summary":[{"text":"a"},{"text":"b"}]}}"#,
            r#"{"type":"response.output_text.delta","output_index":1,"delta":"ok"}"#,
            r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"content_filter"}}}"#,
        ]);
        let v: J = serde_json::from_slice(&render(&p, &c, "chatcmpl-9", 7)).unwrap();
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "a\n\nb");
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");

        let legacy = plan(
            json!({"model": "gpt-5.5", "messages": [user("x")], "functions": [{"name": "f"}]}),
        );
        let c = collect(&[
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"}}"#,
            r#"{"type":"response.completed","response":{}}"#,
        ]);
        let v: J = serde_json::from_slice(&render(&legacy, &c, "chatcmpl-9", 7)).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["function_call"],
            json!({"name": "f", "arguments": "{}"})
        );
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "function_call");
    }
}

#[cfg(test)]
mod more_tests {
    use super::tests::{deltas, plan};
    use super::*;
    use serde_json::{Value as J, json};

    #[test]
    fn custom_tool_calls_stream_in_the_function_shape_and_round_trip_as_custom() {
        let p = plan(json!({"model": "gpt-5.5", "stream": true,
            "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}],
            "messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "call_p", "type": "function",
                    "function": {"name": "apply_patch", "arguments": "*** Begin Patch"}}]},
                {"role": "tool", "tool_call_id": "call_p", "content": "ok"}]}));
        let up: J = serde_json::from_slice(&p.upstream().body()).unwrap();
        assert_eq!(
            up["input"][1],
            json!({"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"})
        );
        assert_eq!(up["input"][2]["type"], "custom_tool_call_output");

        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::ToolCallStart {
                index: 0,
                call_id: "call_q",
                name: "apply_patch",
                custom: true,
            },
            &mut out,
        );
        enc.delta(
            &Delta::ToolCallArgs {
                index: 0,
                fragment: "*** Begin",
            },
            &mut out,
        );
        assert_eq!(
            deltas(&out),
            vec![
                json!({"tool_calls": [{"index": 0, "id": "call_q", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "*** Begin"}}]}),
            ]
        );
    }

    #[test]
    fn legacy_function_requests_stream_function_call_deltas() {
        let p = plan(
            json!({"model": "gpt-5.5", "stream": true, "functions": [{"name": "f"}],
            "messages": [{"role": "user", "content": "x"}]}),
        );
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::ToolCallStart {
                index: 0,
                call_id: "call_1",
                name: "f",
                custom: false,
            },
            &mut out,
        );
        enc.delta(
            &Delta::ToolCallArgs {
                index: 0,
                fragment: "{}",
            },
            &mut out,
        );
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        assert_eq!(
            deltas(&out),
            vec![
                json!({"function_call": {"name": "f", "arguments": ""}}),
                json!({"function_call": {"arguments": "{}"}}),
                json!({}),
            ]
        );
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"finish_reason\":\"function_call\"")
        );
    }

    #[test]
    fn refusals_stream_as_refusal_deltas_and_finish_with_content_filter() {
        let p = plan(
            json!({"model": "gpt-5.5", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        );
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.delta(
            &Delta::Refusal {
                index: 0,
                text: "I can't.",
            },
            &mut out,
        );
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        assert_eq!(deltas(&out)[0], json!({"refusal": "I can't."}));
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"finish_reason\":\"content_filter\"")
        );
    }
}
