//! Messages request translation: the client's JSON → one `UpstreamRequest` (system text →
//! `instructions`, `role:"system"` entries → `developer` items, content blocks → Responses
//! items, tools, tool choice, effort), and `count_tokens` over the same translation.
//!
//! Owns: the leniency rules of the module docs (`super`) on the request side. Pure: no I/O.

use super::render::{Answer, open_signature, push_sep};
use std::collections::HashSet;

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::dialect::fields::{field, is_base64, str_field, type_error};
use crate::dialect::items::{lite_namespace, write_tool_call_head};
use crate::dialect::{Ctx, PlanCore, parse_body};
use crate::error::Error;
use crate::json::{RawStrings, write_str, write_u64, write_value};
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest, stable_id};

/// Claude Code's per-run billing block: it varies between runs and would break the cached
/// prefix, so it never reaches the upstream.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

// ---------------------------------------------------------------------------------------
// Small JSON helpers over the parsed request
// ---------------------------------------------------------------------------------------

/// The content parts of one input message as they are written (the body of its JSON
/// array); `lenient` skips an image or a file that cannot be sent instead of failing.
struct Parts {
    buf: Vec<u8>,
    count: usize,
    lenient: bool,
}

impl Parts {
    fn new(lenient: bool) -> Parts {
        Parts {
            buf: Vec::new(),
            count: 0,
            lenient,
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }

    /// The buffer, with the separator before a new part written.
    fn next(&mut self) -> &mut Vec<u8> {
        push_sep(&mut self.buf, &mut self.count);
        &mut self.buf
    }

    fn text(&mut self, text: &str, raw: &RawStrings<'_>) {
        let buf = self.next();
        buf.extend_from_slice(br#"{"type":"input_text","text":"#);
        raw.write_str(buf, text);
        buf.push(b'}');
    }

    /// Write a base64 PDF `document` as one `input_file` part. `Ok(false)` when the block is no
    /// PDF (or, in lenient mode, not valid base64).
    fn pdf(&mut self, block: &Value<'_>, path: &dyn Fn() -> String) -> Result<bool, Error> {
        if !is_pdf(block) {
            return Ok(false);
        }
        let data = field(block, "source")
            .and_then(|s| str_field(s, "data"))
            .unwrap_or("");
        if !is_base64(data.as_bytes()) {
            if self.lenient {
                return Ok(false);
            }
            return Err(Error::bad_request(format!(
                "{}.source.data: document source data is not valid base64",
                path()
            )));
        }
        let title = str_field(block, "title").unwrap_or("document.pdf");
        let buf = self.next();
        buf.extend_from_slice(br#"{"type":"input_file","file_data":"data:application/pdf;base64,"#);
        buf.extend_from_slice(data.as_bytes());
        buf.extend_from_slice(br#"","filename":"#);
        write_str(buf, title);
        buf.push(b'}');
        Ok(true)
    }

    /// Write one `input_image` part. `Ok(false)` when the block was skipped (lenient mode, or a
    /// source we cannot forward such as a Files API id).
    fn image(&mut self, block: &Value<'_>, path: &dyn Fn() -> String) -> Result<bool, Error> {
        let lenient = self.lenient;
        let fail = |msg: String| {
            if lenient {
                Ok(false)
            } else {
                Err(Error::bad_request(msg))
            }
        };
        let Some(src) = field(block, "source") else {
            return fail(format!("{}.source: field required", path()));
        };
        match str_field(src, "type") {
            Some("base64") => {
                let media = str_field(src, "media_type").unwrap_or("");
                if !IMAGE_TYPES.contains(&media) {
                    return fail(format!(
                        "{}.source.media_type: unsupported image type '{media}' (use image/png, image/jpeg, image/gif or image/webp)",
                        path()
                    ));
                }
                let data = str_field(src, "data").unwrap_or("");
                if !is_base64(data.as_bytes()) {
                    return fail(format!(
                        "{}.source.data: image data is not valid base64",
                        path()
                    ));
                }
                let buf = self.next();
                buf.extend_from_slice(br#"{"type":"input_image","image_url":"data:"#);
                buf.extend_from_slice(media.as_bytes());
                buf.extend_from_slice(b";base64,");
                buf.extend_from_slice(data.as_bytes());
                buf.extend_from_slice(br#"","detail":"auto"}"#);
                Ok(true)
            }
            Some("url") => {
                let Some(url) = str_field(src, "url") else {
                    return fail(format!("{}.source.url: field required", path()));
                };
                let buf = self.next();
                buf.extend_from_slice(br#"{"type":"input_image","image_url":"#);
                write_str(buf, url);
                buf.extend_from_slice(br#","detail":"auto"}"#);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Text for a `search_result` block (user content or inside a tool result).
fn search_result_text(block: &Value<'_>) -> String {
    let mut s = String::from("Search result");
    if let Some(t) = str_field(block, "title") {
        s.push_str(": ");
        s.push_str(t);
    }
    if let Some(src) = str_field(block, "source") {
        s.push_str(" (");
        s.push_str(src);
        s.push(')');
    }
    for t in field(block, "content")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| str_field(b, "text"))
    {
        s.push('\n');
        s.push_str(t);
    }
    s
}

/// Text pieces of a `document` block with a text or content source.
fn document_texts<'v>(block: &'v Value<'_>) -> Vec<&'v str> {
    let Some(src) = field(block, "source") else {
        return Vec::new();
    };
    match str_field(src, "type") {
        Some("text") => str_field(src, "data").into_iter().collect(),
        Some("content") => match field(src, "content") {
            Some(Value::String(s)) => vec![s.as_ref()],
            Some(Value::Array(a)) => a.iter().filter_map(|b| str_field(b, "text")).collect(),
            _ => Vec::new(),
        },
        Some("url") => str_field(src, "url").into_iter().collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// How much reasoning the client asked for, before clamping to the model.
enum Want {
    Named(String),
    ModelDefault,
    Lowest,
}

struct Translator<'r> {
    /// The request's original text, for copying strings (`RawStrings`).
    raw: RawStrings<'r>,
    lenient: bool,
    input: Vec<u8>,
    items: usize,
    names: ToolNames,
    /// `call_id`s of the function calls emitted so far.
    calls: HashSet<String>,
    /// Reasoning items waiting for the item that followed them.
    pending: Vec<Vec<u8>>,
    /// An assistant `message` item is open in `input` (its `content` array).
    msg_open: bool,
    msg_parts: usize,
    user_parts: Parts,
    scratch: Vec<u8>,
    /// `output_config.effort` of the last `role:"system"` entry.
    system_effort: Option<String>,
    /// Lite model (§7.1): replayed function calls carry `"namespace":"functions"`, as the
    /// backend sent them.
    lite: bool,
}

impl<'r> Translator<'r> {
    /// `capacity`: the request body's size; the input items are about as long (mostly
    /// the same strings), so reserving it up front saves the growth copies.
    fn new(lenient: bool, capacity: usize, raw: RawStrings<'r>) -> Self {
        let mut input = Vec::with_capacity(capacity.max(4096));
        input.push(b'[');
        Translator {
            raw,
            lenient,
            input,
            items: 0,
            names: ToolNames::default(),
            calls: HashSet::new(),
            pending: Vec::new(),
            msg_open: false,
            msg_parts: 0,
            user_parts: Parts::new(lenient),
            scratch: Vec::new(),
            system_effort: None,
            lite: false,
        }
    }

    fn begin_item(&mut self) {
        if self.items > 0 {
            self.input.push(b',');
        }
        self.items += 1;
    }

    fn flush_reasoning(&mut self) {
        for item in std::mem::take(&mut self.pending) {
            self.begin_item();
            self.input.extend_from_slice(&item);
        }
    }

    fn close_assistant(&mut self) {
        if self.msg_open {
            self.input.extend_from_slice(b"]}");
            self.msg_open = false;
        }
    }

    /// Leave the assistant turn: a reasoning item nothing followed cannot be replayed.
    fn end_assistant_turn(&mut self) {
        self.close_assistant();
        self.pending.clear();
    }

    fn assistant_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.msg_open {
            self.flush_reasoning();
            self.begin_item();
            self.input
                .extend_from_slice(br#"{"type":"message","role":"assistant","content":["#);
            self.msg_open = true;
            self.msg_parts = 0;
        }
        if self.msg_parts > 0 {
            self.input.push(b',');
        }
        self.msg_parts += 1;
        self.input
            .extend_from_slice(br#"{"type":"output_text","text":"#);
        self.raw.write_str(&mut self.input, text);
        self.input.push(b'}');
    }

    fn assistant(&mut self, content: Option<&Value<'_>>, i: usize) -> Result<(), Error> {
        match content {
            None => {}
            Some(Value::String(s)) => self.assistant_text(s),
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    self.assistant_block(block, i, j)?;
                }
            }
            Some(other) => return Err(content_error(i, other)),
        }
        self.close_assistant();
        Ok(())
    }

    fn assistant_block(&mut self, block: &Value<'_>, i: usize, j: usize) -> Result<(), Error> {
        match str_field(block, "type") {
            Some("text") => {
                if let Some(t) = str_field(block, "text") {
                    self.assistant_text(t);
                }
            }
            Some("thinking") => {
                let Some((id, enc)) = str_field(block, "signature").and_then(open_signature) else {
                    return Ok(());
                };
                self.close_assistant();
                let mut item = Vec::with_capacity(enc.len() + 128);
                item.extend_from_slice(br#"{"type":"reasoning","#);
                if !id.is_empty() {
                    item.extend_from_slice(br#""id":"#);
                    write_str(&mut item, &id);
                    item.push(b',');
                }
                item.extend_from_slice(br#""summary":["#);
                if let Some(t) = str_field(block, "thinking").filter(|t| !t.is_empty()) {
                    item.extend_from_slice(br#"{"type":"summary_text","text":"#);
                    self.raw.write_str(&mut item, t);
                    item.push(b'}');
                }
                item.extend_from_slice(br#"],"content":null,"encrypted_content":"#);
                write_str(&mut item, &enc);
                item.push(b'}');
                self.pending.push(item);
            }
            Some("tool_use") => {
                let Some(id) = str_field(block, "id") else {
                    if self.lenient {
                        return Ok(());
                    }
                    return Err(Error::bad_request(format!(
                        "messages.{i}.content.{j}.id: field required"
                    )));
                };
                let name = str_field(block, "name").unwrap_or("");
                self.close_assistant();
                self.flush_reasoning();
                self.scratch.clear();
                match field(block, "input") {
                    Some(v) => write_value(&mut self.scratch, v, Some(&self.raw)),
                    None => self.scratch.extend_from_slice(b"{}"),
                }
                let up = self.names.add(name).into_owned();
                self.begin_item();
                write_tool_call_head(&mut self.input, id, &up, false, lite_namespace(self.lite));
                // The scratch buffer holds JSON we wrote, so it is UTF-8.
                let args = String::from_utf8_lossy(&self.scratch);
                write_str(&mut self.input, &args);
                self.input.push(b'}');
                self.calls.insert(id.to_owned());
            }
            Some("server_tool_use") => {
                let name = str_field(block, "name").unwrap_or("server tool");
                let text = match field(block, "input").and_then(|v| str_field(v, "query")) {
                    Some(q) => format!("[{name}: {q}]"),
                    None => format!("[{name}]"),
                };
                self.assistant_text(&text);
            }
            Some("web_search_tool_result") => {
                let mut text = String::from("[web_search results]");
                match field(block, "content") {
                    Some(Value::Array(results)) => {
                        for r in results.iter() {
                            let url = str_field(r, "url").unwrap_or("");
                            let title = str_field(r, "title").unwrap_or(url);
                            text.push_str("\n- ");
                            text.push_str(title);
                            text.push_str(" <");
                            text.push_str(url);
                            text.push('>');
                        }
                    }
                    Some(err) => {
                        text.push_str("\nsearch failed: ");
                        text.push_str(str_field(err, "error_code").unwrap_or("unknown error"));
                    }
                    None => {}
                }
                self.assistant_text(&text);
            }
            Some("compaction") => {
                // A checkpoint from `/v1/messages/compact`: the backend's compaction item,
                // opaque to the client, replayed as it was.
                let Some(enc) = str_field(block, "content").filter(|c| !c.is_empty()) else {
                    return Ok(());
                };
                self.close_assistant();
                self.flush_reasoning();
                self.begin_item();
                self.input
                    .extend_from_slice(br#"{"type":"compaction","encrypted_content":"#);
                self.raw.write_str(&mut self.input, enc);
                self.input.push(b'}');
            }
            // redacted_thinking, other server-tool results, unknown blocks: nothing to replay.
            _ => {}
        }
        Ok(())
    }

    fn developer(&mut self, content: Option<&Value<'_>>, i: usize) -> Result<(), Error> {
        self.end_assistant_turn();
        let mut parts = Parts::new(self.lenient);
        match content {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => parts.text(s, &self.raw),
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for t in blocks
                    .iter()
                    .filter_map(|b| str_field(b, "text"))
                    .filter(|t| !t.is_empty() && !t.starts_with(BILLING_HEADER))
                {
                    parts.text(t, &self.raw);
                }
            }
            Some(other) => {
                return Err(type_error(
                    &format!("messages.{i}.content"),
                    "a string or an array of text blocks",
                    other,
                ));
            }
        }
        if parts.count > 0 {
            self.begin_item();
            self.input
                .extend_from_slice(br#"{"type":"message","role":"developer","content":["#);
            self.input.extend_from_slice(&parts.buf);
            self.input.extend_from_slice(b"]}");
        }
        Ok(())
    }

    fn user(&mut self, content: Option<&Value<'_>>, i: usize) -> Result<(), Error> {
        self.end_assistant_turn();
        self.user_parts.clear();
        match content {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => self.user_parts.text(s, &self.raw),
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    self.user_block(block, i, j)?;
                }
            }
            Some(other) => return Err(content_error(i, other)),
        }
        // Tool outputs were written as they came; the other blocks follow as one message.
        if self.user_parts.count > 0 {
            self.begin_item();
            self.input
                .extend_from_slice(br#"{"type":"message","role":"user","content":["#);
            self.input.extend_from_slice(&self.user_parts.buf);
            self.input.extend_from_slice(b"]}");
        }
        Ok(())
    }

    fn user_block(&mut self, block: &Value<'_>, i: usize, j: usize) -> Result<(), Error> {
        let path = || format!("messages.{i}.content.{j}");
        match str_field(block, "type") {
            Some("text") => {
                if let Some(t) = str_field(block, "text").filter(|t| !t.is_empty()) {
                    self.user_parts.text(t, &self.raw);
                }
            }
            Some("image") => {
                self.user_parts.image(block, &path)?;
            }
            Some("document") => self.document(block, &path)?,
            Some("search_result") => {
                let t = search_result_text(block);
                self.user_parts.text(&t, &self.raw);
            }
            Some("tool_result") => self.tool_result(block, &path)?,
            _ => {}
        }
        Ok(())
    }

    fn document(&mut self, block: &Value<'_>, path: &dyn Fn() -> String) -> Result<(), Error> {
        if self.user_parts.pdf(block, path)? {
            return Ok(());
        }
        let src_type = field(block, "source").and_then(|s| str_field(s, "type"));
        if !matches!(src_type, Some("text" | "content" | "url")) {
            if self.lenient {
                return Ok(());
            }
            // A Files API id or a base64 file other than a PDF: the backend cannot take it,
            // and dropping it silently would hide the document from the model.
            return Err(Error::bad_request(format!(
                "{}.source: this document source cannot be sent to the backend (send a base64 PDF, or a text or content source)",
                path()
            ))
            .with_param(format!("{}.source", path())));
        }
        for t in document_texts(block) {
            if !t.is_empty() {
                self.user_parts.text(t, &self.raw);
            }
        }
        Ok(())
    }

    fn tool_result(&mut self, block: &Value<'_>, path: &dyn Fn() -> String) -> Result<(), Error> {
        let Some(id) = str_field(block, "tool_use_id") else {
            if self.lenient {
                return Ok(());
            }
            return Err(Error::bad_request(format!(
                "{}.tool_use_id: field required",
                path()
            )));
        };
        if !self.calls.contains(id) {
            if self.lenient {
                return Ok(());
            }
            return Err(Error::bad_request(format!(
                "{}: tool_result for tool_use_id '{id}' has no matching tool_use block earlier in the conversation",
                path()
            ))
            .with_param(path()));
        }
        let is_error = field(block, "is_error").and_then(|v| v.as_bool()) == Some(true);
        let blocks: &[Value<'_>] = match field(block, "content") {
            Some(Value::Array(a)) => a.as_slice(),
            _ => &[],
        };
        // Images and PDFs need the list form of the output; text alone is one string.
        let has_media = blocks
            .iter()
            .any(|b| str_field(b, "type") == Some("image") || is_pdf(b));
        if !has_media {
            // The common case (a large part of a long conversation): the output text is
            // written straight into `input`, one piece at a time.
            self.begin_item();
            let raw = &self.raw;
            let out = &mut self.input;
            out.extend_from_slice(br#"{"type":"function_call_output","call_id":"#);
            write_str(out, id);
            out.extend_from_slice(br#","output":""#);
            if is_error {
                out.extend_from_slice(b"Error");
            }
            // Pieces are joined with newlines; `Error: ` comes before the first non-empty one.
            let mut any = false;
            let mut piece = |out: &mut Vec<u8>, t: &str| {
                if any {
                    out.extend_from_slice(b"\\n");
                } else if t.is_empty() {
                    return;
                } else if is_error {
                    out.extend_from_slice(b": ");
                }
                any = true;
                raw.write_str_body(out, t);
            };
            match field(block, "content") {
                Some(Value::String(s)) => piece(out, s),
                _ => {
                    for t in blocks.iter().filter_map(block_text) {
                        piece(out, &t);
                    }
                }
            }
            out.extend_from_slice(b"\"}");
            return Ok(());
        }
        let mut out = Vec::new();
        out.extend_from_slice(br#"{"type":"function_call_output","call_id":"#);
        write_str(&mut out, id);
        out.extend_from_slice(br#","output":"#);
        let mut parts = Parts::new(self.lenient);
        let mut prefixed = !is_error;
        for (k, b) in blocks.iter().enumerate() {
            let text = match str_field(b, "type") {
                Some("image") => {
                    let p = || format!("{}.content.{k}", path());
                    parts.image(b, &p)?;
                    continue;
                }
                Some("document") if is_pdf(b) => {
                    let p = || format!("{}.content.{k}", path());
                    parts.pdf(b, &p)?;
                    continue;
                }
                _ => block_text(b),
            };
            let Some(text) = text else { continue };
            if !prefixed {
                prefixed = true;
                parts.text(&format!("Error: {text}"), &self.raw);
            } else {
                parts.text(&text, &self.raw);
            }
        }
        if !prefixed {
            // An error result with only images or files: say so before them.
            let mut with = Parts::new(self.lenient);
            with.text("Error", &self.raw);
            if parts.count > 0 {
                with.next().extend_from_slice(&parts.buf);
            }
            parts = with;
        }
        out.push(b'[');
        out.extend_from_slice(&parts.buf);
        out.push(b']');
        out.push(b'}');
        self.begin_item();
        self.input.extend_from_slice(&out);
        Ok(())
    }

    fn finish(mut self) -> (Vec<u8>, ToolNames) {
        self.end_assistant_turn();
        self.input.push(b']');
        (self.input, self.names)
    }
}

/// The text a tool-result content block contributes (images are handled separately).
fn block_text<'v>(b: &'v Value<'_>) -> Option<std::borrow::Cow<'v, str>> {
    use std::borrow::Cow;
    match str_field(b, "type") {
        Some("text") => str_field(b, "text").map(Cow::Borrowed),
        Some("search_result") => Some(Cow::Owned(search_result_text(b))),
        Some("document") => {
            let t = document_texts(b).join("\n");
            (!t.is_empty()).then_some(Cow::Owned(t))
        }
        Some("tool_reference") => {
            str_field(b, "tool_name").map(|n| Cow::Owned(format!("Tool loaded: {n}")))
        }
        _ => None,
    }
}

/// Whether `block` is a `document` with a base64 PDF source.
fn is_pdf(block: &Value<'_>) -> bool {
    field(block, "source").is_some_and(|s| {
        str_field(s, "type") == Some("base64")
            && str_field(s, "media_type") == Some("application/pdf")
    })
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens":N,"context_window":W,"auto_compact_token_limit":L}`.
/// Runs the same translation (leniently: what cannot be translated is skipped, not a 400) and
/// counts the upstream body with o200k_base.
pub fn count_tokens(body: &mut [u8], ctx: &Ctx<'_>) -> Result<Vec<u8>, Error> {
    let (core, _) = build(body, ctx, true)?;
    let n = crate::tokens::count_upstream_body(&core.upstream.body()).max(1);
    let window = ctx.context_window(&core.upstream.model);
    let limit = ctx.config.auto_compact_limit(window);
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(br#"{"input_tokens":"#);
    write_u64(&mut out, n);
    out.extend_from_slice(br#","context_window":"#);
    write_u64(&mut out, window);
    out.extend_from_slice(br#","auto_compact_token_limit":"#);
    write_u64(&mut out, limit);
    out.push(b'}');
    Ok(out)
}

/// The plan's core and how its answer is written; `lenient` skips what cannot be translated
/// (`count_tokens`) instead of failing.
pub(super) fn build(
    body: &mut [u8],
    ctx: &Ctx<'_>,
    lenient: bool,
) -> Result<(PlanCore, Answer), Error> {
    let body_len = body.len();
    // The text as it arrived, so long strings are copied rather than escaped again.
    let original = crate::dialect::Original::copy(body);
    let raw = RawStrings::new(&original, body);
    let root = parse_body(body, ctx.config.max_json_depth)?;
    if !matches!(root, Value::Object(_)) {
        return Err(Error::bad_request("request body must be a JSON object"));
    }

    let model = match field(&root, "model") {
        Some(Value::String(s)) if !s.is_empty() => s.to_string(),
        Some(Value::String(_)) | None if lenient => ctx.config.model.clone(),
        Some(Value::String(_)) | None => {
            return Err(Error::bad_request("model: field required").with_param("model"));
        }
        Some(_) if lenient => ctx.config.model.clone(),
        Some(other) => return Err(type_error("model", "a string", other)),
    };
    let backend = ctx.backend_model(&model);

    let stream = match field(&root, "stream") {
        None => false,
        Some(v) => match v.as_bool() {
            Some(b) => b,
            None if lenient => false,
            None => return Err(type_error("stream", "a boolean", v)),
        },
    };

    // System prompt → instructions.
    let mut instructions = String::new();
    match field(&root, "system") {
        None => {}
        Some(Value::String(s)) => instructions.push_str(s),
        Some(Value::Array(blocks)) => {
            for t in blocks
                .iter()
                .filter_map(|b| str_field(b, "text"))
                .filter(|t| !t.is_empty() && !t.starts_with(BILLING_HEADER))
            {
                if !instructions.is_empty() {
                    instructions.push_str("\n\n");
                }
                instructions.push_str(t);
            }
        }
        Some(_) if lenient => {}
        Some(other) => {
            return Err(type_error(
                "system",
                "a string or an array of text blocks",
                other,
            ));
        }
    }

    let mut t = Translator::new(lenient, body_len, raw);
    t.lite = ctx.catalog.find(&backend).is_some_and(|m| m.responses_lite);

    // Tools first, so the history's tool names map the same way.
    let mut tools = Vec::with_capacity(1024);
    let mut include_sources = false;
    tools.push(b'[');
    let mut tool_count = 0usize;
    match field(&root, "tools") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, tool) in list.iter().enumerate() {
                translate_tool(
                    tool,
                    i,
                    &mut t,
                    &mut tools,
                    &mut tool_count,
                    &mut include_sources,
                )?;
            }
        }
        Some(other) if !lenient => return Err(type_error("tools", "an array", other)),
        Some(_) => {}
    }
    tools.push(b']');

    // tool_choice and parallel calls.
    let mut tool_choice = ToolChoice::Auto;
    let mut parallel = true;
    if let Some(tc) = field(&root, "tool_choice") {
        match str_field(tc, "type") {
            Some("any") => tool_choice = ToolChoice::Required,
            Some("none") => tool_choice = ToolChoice::None,
            Some("tool") => match str_field(tc, "name") {
                Some(name) => tool_choice = ToolChoice::Function(t.names.add(name).into_owned()),
                None if lenient => {}
                None => {
                    return Err(Error::bad_request("tool_choice.name: field required")
                        .with_param("tool_choice.name"));
                }
            },
            _ => {}
        }
        if field(tc, "disable_parallel_tool_use").and_then(|v| v.as_bool()) == Some(true) {
            parallel = false;
        }
    }

    // Messages.
    let mut first_content = Vec::new();
    match field(&root, "messages") {
        Some(Value::Array(msgs)) => {
            for (i, m) in msgs.iter().enumerate() {
                if !matches!(m, Value::Object(_)) {
                    if lenient {
                        continue;
                    }
                    return Err(type_error(&format!("messages.{i}"), "an object", m));
                }
                let content = field(m, "content");
                if i == 0
                    && let Some(c) = content
                {
                    write_value(&mut first_content, c, Some(&t.raw));
                }
                let role = str_field(m, "role").unwrap_or("user");
                if !lenient && !matches!(role, "user" | "assistant" | "system" | "developer") {
                    return Err(Error::bad_request(format!(
                        "messages.{i}.role: unknown role {role:?}; use \"user\" or \"assistant\""
                    ))
                    .with_param(format!("messages.{i}.role")));
                }
                let r = match role {
                    "assistant" => t.assistant(content, i),
                    "system" | "developer" => {
                        if let Some(e) =
                            field(m, "output_config").and_then(|o| str_field(o, "effort"))
                        {
                            t.system_effort = Some(e.to_owned());
                        }
                        t.developer(content, i)
                    }
                    _ => t.user(content, i),
                };
                if let Err(e) = r
                    && !lenient
                {
                    return Err(e);
                }
            }
        }
        None if lenient => {}
        None => return Err(Error::bad_request("messages: field required").with_param("messages")),
        Some(other) if !lenient => return Err(type_error("messages", "an array", other)),
        Some(_) => {}
    }

    // Reasoning effort and visibility.
    let thinking = field(&root, "thinking");
    let thinking_type = thinking.and_then(|v| str_field(v, "type"));
    let display = thinking.and_then(|v| str_field(v, "display"));
    let effort_field = field(&root, "output_config").and_then(|o| str_field(o, "effort"));
    let want = match (effort_field, thinking_type) {
        (Some(e), _) => Want::Named(e.to_owned()),
        (None, Some("adaptive")) => match t.system_effort.take() {
            Some(e) => Want::Named(e),
            None => Want::ModelDefault,
        },
        (None, Some("enabled")) => {
            let budget = thinking
                .and_then(|v| field(v, "budget_tokens"))
                .and_then(|b| b.as_u64().map(|u| u as f64).or_else(|| b.as_f64()))
                .unwrap_or(0.0);
            Want::Named(budget_effort(budget).to_owned())
        }
        _ => Want::Lowest,
    };
    let info = ctx.catalog.find(&backend);
    let effort = match (info, want) {
        (Some(m), Want::Named(e)) => m.clamp_effort(&e),
        (Some(m), Want::ModelDefault) => m.default_effort.clone(),
        (Some(m), Want::Lowest) => m
            .efforts
            .first()
            .cloned()
            .unwrap_or_else(|| m.default_effort.clone()),
        (None, Want::Named(e)) => e,
        (None, Want::ModelDefault) => "medium".to_owned(),
        (None, Want::Lowest) => "low".to_owned(),
    };
    let thinking_blocks = matches!(thinking_type, Some("enabled") | Some("adaptive"));
    let summary = (thinking_blocks && display != Some("omitted")).then_some("auto");

    // Structured output.
    let format = field(&root, "output_config")
        .and_then(|o| field(o, "format"))
        .or_else(|| field(&root, "output_format"))
        .filter(|f| str_field(f, "type") == Some("json_schema"))
        .and_then(|f| field(f, "schema"));
    let text = format.map(|schema| {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            br#"{"format":{"type":"json_schema","name":"codex_output_schema","strict":false,"schema":"#,
        );
        write_value(&mut out, schema, Some(&t.raw));
        out.extend_from_slice(b"}}");
        out
    });

    // Stop sequences.
    let mut stop_sequences = Vec::new();
    match field(&root, "stop_sequences") {
        None => {}
        Some(Value::Array(list)) => {
            for s in list.iter() {
                match s.as_str() {
                    Some(s) if !s.is_empty() => stop_sequences.push(s.to_owned()),
                    Some(_) => {}
                    None if lenient => {}
                    None => {
                        return Err(type_error("stop_sequences", "an array of strings", s));
                    }
                }
            }
        }
        Some(_) if lenient => {}
        Some(other) => return Err(type_error("stop_sequences", "an array of strings", other)),
    }

    let service_tier = (str_field(&root, "speed") == Some("fast")
        && info.is_some_and(|m| m.service_tiers.iter().any(|s| s == "priority")))
    .then(|| "priority".to_owned());

    // Conversation id: the session header, else metadata.user_id's session_id, else a hash
    // of the conversation's start.
    let conversation_id = ctx
        .headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            field(&root, "metadata")
                .and_then(|m| str_field(m, "user_id"))
                .and_then(session_from_user_id)
        })
        .unwrap_or_else(|| stable_id(&[instructions.as_bytes(), &first_content]));

    let (input, names) = t.finish();
    let input_estimate = estimate_tokens(instructions.len() + tools.len(), &input);
    let upstream = UpstreamRequest {
        model: backend,
        instructions,
        input,
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        effort: Some(effort),
        summary,
        text,
        service_tier,
        conversation_id,
        include_sources,
        subagent: None,
        memgen: false,
        compaction: false,
        lite: info.is_some_and(|m| m.responses_lite),
    };
    let answer = Answer {
        stop_sequences,
        names,
        thinking: thinking_blocks,
        summaries: summary.is_some(),
        citations: include_sources,
        input_estimate,
    };
    Ok((PlanCore::new(upstream, model, stream), answer))
}

/// A quick input-size estimate for `message_start` (the real count arrives with the final
/// `message_delta`): about 4 bytes per token, with inline base64 media charged per item
/// rather than per byte.
pub(super) fn estimate_tokens(other_bytes: usize, input: &[u8]) -> u64 {
    let mut media = 0usize;
    let mut media_bytes = 0usize;
    let mut rest = input;
    while let Some(at) = memchr::memmem::find(rest, b";base64,") {
        let data = rest.get(at + 8..).unwrap_or_default();
        let len = memchr::memchr(b'"', data).unwrap_or(data.len());
        media += 1;
        media_bytes += len;
        rest = data.get(len..).unwrap_or_default();
    }
    let text_bytes = (other_bytes + input.len()).saturating_sub(media_bytes);
    (text_bytes / 4) as u64 + media as u64 * crate::tokens::IMAGE_TOKENS
}

fn budget_effort(budget: f64) -> &'static str {
    if budget < 4000.0 {
        "low"
    } else if budget < 16000.0 {
        "medium"
    } else if budget < 32000.0 {
        "high"
    } else {
        "xhigh"
    }
}

/// Claude Code's `metadata.user_id` is a JSON object serialised into a string.
fn session_from_user_id(user_id: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(user_id).ok()?;
    v.get("session_id")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn translate_tool(
    tool: &Value<'_>,
    i: usize,
    t: &mut Translator,
    out: &mut Vec<u8>,
    count: &mut usize,
    include_sources: &mut bool,
) -> Result<(), Error> {
    if !matches!(tool, Value::Object(_)) {
        if t.lenient {
            return Ok(());
        }
        return Err(type_error(&format!("tools.{i}"), "an object", tool));
    }
    let ty = str_field(tool, "type");
    let schema = field(tool, "input_schema");
    if schema.is_some() || matches!(ty, None | Some("custom")) {
        let Some(name) = str_field(tool, "name") else {
            if t.lenient {
                return Ok(());
            }
            return Err(Error::bad_request(format!(
                "tools.{i}.name: field required"
            )));
        };
        let up = t.names.add(name).into_owned();
        push_sep(out, count);
        out.extend_from_slice(br#"{"type":"function","name":"#);
        write_str(out, &up);
        out.extend_from_slice(br#","description":"#);
        t.raw
            .write_str(out, str_field(tool, "description").unwrap_or(""));
        out.extend_from_slice(br#","parameters":"#);
        match schema {
            Some(s) => write_value(out, s, Some(&t.raw)),
            None => out.extend_from_slice(br#"{"type":"object","properties":{}}"#),
        }
        out.extend_from_slice(br#","strict":false}"#);
        return Ok(());
    }
    let ty = ty.unwrap_or("");
    if ty.starts_with("web_search") {
        *include_sources = true;
        push_sep(out, count);
        out.extend_from_slice(br#"{"type":"web_search","external_web_access":true"#);
        if let Some(Value::Array(domains)) = field(tool, "allowed_domains")
            && !domains.is_empty()
        {
            out.extend_from_slice(br#","filters":{"allowed_domains":["#);
            let mut n = 0;
            for d in domains.iter().filter_map(|d| d.as_str()) {
                push_sep(out, &mut n);
                write_str(out, d);
            }
            out.extend_from_slice(b"]}");
        }
        if let Some(loc) = field(tool, "user_location") {
            out.extend_from_slice(br#","user_location":{"type":"approximate""#);
            for key in ["city", "region", "country", "timezone"] {
                if let Some(v) = str_field(loc, key) {
                    out.push(b',');
                    write_str(out, key);
                    out.push(b':');
                    write_str(out, v);
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
        return Ok(());
    }
    if t.lenient {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "tools.{i}: the server tool type '{ty}' is not supported by this gateway (supported: custom tools with input_schema, and web_search)"
    ))
    .with_param(format!("tools.{i}.type")))
}

/// `messages.{i}.content` is neither a string nor an array.
fn content_error(i: usize, other: &Value<'_>) -> Error {
    type_error(
        &format!("messages.{i}.content"),
        "a string or an array of content blocks",
        other,
    )
}
