//! Anthropic Messages (`POST /v1/messages`, `POST /v1/messages/count_tokens`).
//!
//! Owns: translating a Messages request into one `UpstreamRequest` (system text →
//! `instructions`, mid-conversation `role:"system"` entries → `developer` items at their
//! position, content blocks → Responses items, tools, tool choice, effort), the streamed
//! answer (`Delta` → the exact `message_start … message_stop` event sequence, with `event:`
//! lines), the non-stream `Message`, local `stop_sequences`, and `count_tokens`.
//!
//! Reasoning round trip: Claude Code echoes every `thinking` block back verbatim, signature
//! included, so the signature carries the upstream reasoning item's id and
//! `encrypted_content` in an envelope: `cxa1.` + base64url (no padding) of
//! `u32 big-endian id length ‖ id ‖ encrypted_content`. It is deterministic and reverses byte
//! for byte; anything else (a real Anthropic signature, garbage) opens to `None` and the block
//! is dropped, never a 400. A reasoning item is only replayed when an item follows it in the
//! same assistant turn (the backend rejects a trailing reasoning item), and function calls
//! and messages are replayed without upstream item ids.
//!
//! Leniency: unknown fields, block types, roles and betas are ignored (Claude Code degrades
//! on a 400); wrong types of known fields, invalid images, unsupported server tools and
//! orphaned tool results are 400s naming the field. `count_tokens` runs the same code in a
//! lenient mode that skips instead of failing.
//!
//! Does not own: transport, keepalive timing, mapping upstream failures (`upstream::failure`)
//! or the SSE parser.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, BytesMut};
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::{Ctx, Encoder, Plan, parse_body};
use crate::error::{Error, Protocol};
use crate::json::{write_str, write_u64};
use crate::upstream::collect::{Collected, Finish, Item, OwnedCitation};
use crate::upstream::events::{Citation, Delta, Source, Usage};
use crate::upstream::request::{ToolChoice, ToolNames, UpstreamRequest, random_id, stable_id};

/// Marks our own thinking signatures (version 1 of the envelope).
const SIGNATURE_PREFIX: &str = "cxa1.";

/// Claude Code's per-run billing block: it varies between runs and would break the cached
/// prefix, so it never reaches the upstream.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

// ---------------------------------------------------------------------------------------
// Signature envelope
// ---------------------------------------------------------------------------------------

/// Pack a reasoning item's id and `encrypted_content` into a thinking-block signature.
pub fn signature_envelope(reasoning_id: &str, encrypted_content: &str) -> String {
    let len = u32::try_from(reasoning_id.len()).unwrap_or(u32::MAX);
    let mut raw = Vec::with_capacity(4 + reasoning_id.len() + encrypted_content.len());
    raw.extend_from_slice(&len.to_be_bytes());
    raw.extend_from_slice(reasoning_id.as_bytes());
    raw.extend_from_slice(encrypted_content.as_bytes());
    let mut out = String::with_capacity(SIGNATURE_PREFIX.len() + raw.len().div_ceil(3) * 4);
    out.push_str(SIGNATURE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
    out
}

/// The `(reasoning_id, encrypted_content)` inside one of our signatures; `None` for foreign
/// or damaged signatures.
pub fn open_signature(sig: &str) -> Option<(String, String)> {
    let b64 = sig.strip_prefix(SIGNATURE_PREFIX)?;
    let raw = URL_SAFE_NO_PAD.decode(b64).ok()?;
    let (len, rest) = raw.split_first_chunk::<4>()?;
    let n = u32::from_be_bytes(*len) as usize;
    if rest.len() < n {
        return None;
    }
    let (id, enc) = rest.split_at(n);
    let id = std::str::from_utf8(id).ok()?;
    let enc = std::str::from_utf8(enc).ok()?;
    if enc.is_empty() {
        return None;
    }
    Some((id.to_owned(), enc.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Small JSON helpers over the parsed request
// ---------------------------------------------------------------------------------------

/// A field that is present and not `null`.
fn field<'v, 'a>(v: &'v Value<'a>, key: &str) -> Option<&'v Value<'a>> {
    match v {
        Value::Object(o) => o.get(key).filter(|x| !x.is_null()),
        _ => None,
    }
}

fn str_field<'v>(v: &'v Value<'_>, key: &str) -> Option<&'v str> {
    field(v, key).and_then(|x| x.as_str())
}

fn kind_name(v: &Value<'_>) -> &'static str {
    match v {
        Value::Static(simd_json::StaticNode::Null) => "null",
        Value::Static(simd_json::StaticNode::Bool(_)) => "a boolean",
        Value::Static(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_error(path: &str, expected: &str, got: &Value<'_>) -> Error {
    Error::bad_request(format!(
        "{path}: expected {expected}, got {}",
        kind_name(got)
    ))
    .with_param(path.to_owned())
}

/// Write a parsed value as compact JSON. Objects keep the client's key order (simd-json keeps
/// insertion order up to 32 keys); larger objects are written with sorted keys, so the bytes
/// sent upstream stay stable between requests (prompt caching) whatever the map's hasher does.
fn write_json(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Static(_) => crate::json::write_value(out, v),
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, x);
            }
            out.push(b']');
        }
        Value::Object(o) => {
            out.push(b'{');
            if o.len() <= 32 {
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    write_json(out, x);
                }
            } else {
                let mut entries: Vec<_> = o.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    write_json(out, x);
                }
            }
            out.push(b'}');
        }
    }
}

/// Standard base64 (padding optional, no whitespace), checked without decoding.
fn valid_base64(s: &str) -> bool {
    let b = s.as_bytes();
    let body = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    let padded = body.len() != b.len();
    if body.is_empty() || (padded && !b.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return false;
    }
    body.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

fn push_sep(buf: &mut Vec<u8>, count: &mut usize) {
    if *count > 0 {
        buf.push(b',');
    }
    *count += 1;
}

fn push_text_part(buf: &mut Vec<u8>, count: &mut usize, text: &str) {
    push_sep(buf, count);
    buf.extend_from_slice(br#"{"type":"input_text","text":"#);
    write_str(buf, text);
    buf.push(b'}');
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

struct Translator {
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
    user_parts: Vec<u8>,
    user_count: usize,
    scratch: Vec<u8>,
    /// `output_config.effort` of the last `role:"system"` entry.
    system_effort: Option<String>,
}

impl Translator {
    fn new(lenient: bool) -> Self {
        let mut input = Vec::with_capacity(4096);
        input.push(b'[');
        Translator {
            lenient,
            input,
            items: 0,
            names: ToolNames::default(),
            calls: HashSet::new(),
            pending: Vec::new(),
            msg_open: false,
            msg_parts: 0,
            user_parts: Vec::new(),
            user_count: 0,
            scratch: Vec::new(),
            system_effort: None,
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
        write_str(&mut self.input, text);
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
            Some(other) => {
                return Err(type_error(
                    &format!("messages.{i}.content"),
                    "a string or an array of content blocks",
                    other,
                ));
            }
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
                    write_str(&mut item, t);
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
                    Some(v) => write_json(&mut self.scratch, v),
                    None => self.scratch.extend_from_slice(b"{}"),
                }
                let up = self.names.add(name).into_owned();
                self.begin_item();
                self.input
                    .extend_from_slice(br#"{"type":"function_call","call_id":"#);
                write_str(&mut self.input, id);
                self.input.extend_from_slice(br#","name":"#);
                write_str(&mut self.input, &up);
                self.input.extend_from_slice(br#","arguments":"#);
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
            // redacted_thinking, other server-tool results, unknown blocks: nothing to replay.
            _ => {}
        }
        Ok(())
    }

    fn developer(&mut self, content: Option<&Value<'_>>, i: usize) -> Result<(), Error> {
        self.end_assistant_turn();
        let mut parts = Vec::new();
        let mut count = 0;
        match content {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => push_text_part(&mut parts, &mut count, s),
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for t in blocks
                    .iter()
                    .filter_map(|b| str_field(b, "text"))
                    .filter(|t| !t.is_empty() && !t.starts_with(BILLING_HEADER))
                {
                    push_text_part(&mut parts, &mut count, t);
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
        if count > 0 {
            self.begin_item();
            self.input
                .extend_from_slice(br#"{"type":"message","role":"developer","content":["#);
            self.input.extend_from_slice(&parts);
            self.input.extend_from_slice(b"]}");
        }
        Ok(())
    }

    fn user(&mut self, content: Option<&Value<'_>>, i: usize) -> Result<(), Error> {
        self.end_assistant_turn();
        self.user_parts.clear();
        self.user_count = 0;
        match content {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => {
                push_text_part(&mut self.user_parts, &mut self.user_count, s)
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    self.user_block(block, i, j)?;
                }
            }
            Some(other) => {
                return Err(type_error(
                    &format!("messages.{i}.content"),
                    "a string or an array of content blocks",
                    other,
                ));
            }
        }
        // Tool outputs were written as they came; the other blocks follow as one message.
        if self.user_count > 0 {
            self.begin_item();
            self.input
                .extend_from_slice(br#"{"type":"message","role":"user","content":["#);
            self.input.extend_from_slice(&self.user_parts);
            self.input.extend_from_slice(b"]}");
        }
        Ok(())
    }

    fn user_block(&mut self, block: &Value<'_>, i: usize, j: usize) -> Result<(), Error> {
        let path = || format!("messages.{i}.content.{j}");
        match str_field(block, "type") {
            Some("text") => {
                if let Some(t) = str_field(block, "text").filter(|t| !t.is_empty()) {
                    push_text_part(&mut self.user_parts, &mut self.user_count, t);
                }
            }
            Some("image") => {
                write_image(
                    &mut self.user_parts,
                    &mut self.user_count,
                    block,
                    &path,
                    self.lenient,
                )?;
            }
            Some("document") => self.document(block)?,
            Some("search_result") => {
                let t = search_result_text(block);
                push_text_part(&mut self.user_parts, &mut self.user_count, &t);
            }
            Some("tool_result") => self.tool_result(block, &path)?,
            _ => {}
        }
        Ok(())
    }

    fn document(&mut self, block: &Value<'_>) -> Result<(), Error> {
        let src = field(block, "source");
        let is_pdf = src.is_some_and(|s| {
            str_field(s, "type") == Some("base64")
                && str_field(s, "media_type") == Some("application/pdf")
        });
        if is_pdf {
            let data = src.and_then(|s| str_field(s, "data")).unwrap_or("");
            if !valid_base64(data) {
                if self.lenient {
                    return Ok(());
                }
                return Err(Error::bad_request(
                    "document source data is not valid base64".to_owned(),
                ));
            }
            let title = str_field(block, "title").unwrap_or("document.pdf");
            push_sep(&mut self.user_parts, &mut self.user_count);
            self.user_parts.extend_from_slice(
                br#"{"type":"input_file","file_data":"data:application/pdf;base64,"#,
            );
            self.user_parts.extend_from_slice(data.as_bytes());
            self.user_parts.extend_from_slice(br#"","filename":"#);
            write_str(&mut self.user_parts, title);
            self.user_parts.push(b'}');
            return Ok(());
        }
        for t in document_texts(block) {
            if !t.is_empty() {
                push_text_part(&mut self.user_parts, &mut self.user_count, t);
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
        let has_image = blocks.iter().any(|b| str_field(b, "type") == Some("image"));
        let mut out = Vec::new();
        out.extend_from_slice(br#"{"type":"function_call_output","call_id":"#);
        write_str(&mut out, id);
        out.extend_from_slice(br#","output":"#);
        if has_image {
            let mut parts = Vec::new();
            let mut count = 0usize;
            let mut prefixed = !is_error;
            for (k, b) in blocks.iter().enumerate() {
                let text = match str_field(b, "type") {
                    Some("image") => {
                        let p = || format!("{}.content.{k}", path());
                        write_image(&mut parts, &mut count, b, &p, self.lenient)?;
                        continue;
                    }
                    _ => block_text(b),
                };
                let Some(text) = text else { continue };
                if !prefixed {
                    prefixed = true;
                    push_text_part(&mut parts, &mut count, &format!("Error: {text}"));
                } else {
                    push_text_part(&mut parts, &mut count, &text);
                }
            }
            if !prefixed {
                // An error result with only images: say so before them.
                let mut with = Vec::new();
                let mut c = 0;
                push_text_part(&mut with, &mut c, "Error");
                if count > 0 {
                    with.push(b',');
                }
                with.extend_from_slice(&parts);
                parts = with;
            }
            out.push(b'[');
            out.extend_from_slice(&parts);
            out.push(b']');
        } else {
            let mut text = String::new();
            match field(block, "content") {
                Some(Value::String(s)) => text.push_str(s),
                _ => {
                    for t in blocks.iter().filter_map(block_text) {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&t);
                    }
                }
            }
            if is_error {
                text = if text.is_empty() {
                    "Error".to_owned()
                } else {
                    format!("Error: {text}")
                };
            }
            write_str(&mut out, &text);
        }
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
fn block_text(b: &Value<'_>) -> Option<String> {
    match str_field(b, "type") {
        Some("text") => str_field(b, "text").map(str::to_owned),
        Some("search_result") => Some(search_result_text(b)),
        Some("document") => {
            let t = document_texts(b).join("\n");
            (!t.is_empty()).then_some(t)
        }
        Some("tool_reference") => str_field(b, "tool_name").map(|n| format!("Tool loaded: {n}")),
        _ => None,
    }
}

/// Write one `input_image` part. `Ok(false)` when the block was skipped (lenient mode, or a
/// source we cannot forward such as a Files API id).
fn write_image(
    buf: &mut Vec<u8>,
    count: &mut usize,
    block: &Value<'_>,
    path: &dyn Fn() -> String,
    lenient: bool,
) -> Result<bool, Error> {
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
            if !valid_base64(data) {
                return fail(format!(
                    "{}.source.data: image data is not valid base64",
                    path()
                ));
            }
            push_sep(buf, count);
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
            push_sep(buf, count);
            buf.extend_from_slice(br#"{"type":"input_image","image_url":"#);
            write_str(buf, url);
            buf.extend_from_slice(br#","detail":"auto"}"#);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A translated Messages request.
pub struct MessagesPlan {
    upstream: UpstreamRequest,
    /// The model name the client asked for (echoed in answers).
    model: String,
    stream: bool,
    stop_sequences: Vec<String>,
    names: ToolNames,
    /// Whether reasoning is shown as `thinking` blocks (thinking enabled or adaptive).
    thinking: bool,
    /// Citations are possible (web search enabled): keep message text for `cited_text`.
    citations: bool,
    input_estimate: u64,
}

impl MessagesPlan {
    /// The client's `stop_sequences` (honoured locally).
    pub fn stop_sequences(&self) -> &[String] {
        &self.stop_sequences
    }

    /// The model name the client asked for.
    pub fn client_model(&self) -> &str {
        &self.model
    }

    /// Mutable access to the upstream request (e.g. for the pipeline's subagent headers).
    pub fn upstream_mut(&mut self) -> &mut UpstreamRequest {
        &mut self.upstream
    }
}

/// Translate a `POST /v1/messages` body.
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<MessagesPlan, Error> {
    build(body, ctx, false)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens":N,"context_window":W,"auto_compact_token_limit":L}`.
/// Runs the same translation (leniently: what cannot be translated is skipped, not a 400) and
/// counts the upstream body with o200k_base.
pub fn count_tokens(body: &mut [u8], ctx: &Ctx<'_>) -> Result<Vec<u8>, Error> {
    let plan = build(body, ctx, true)?;
    let n = crate::tokens::count_upstream_body(&plan.upstream.body()).max(1);
    let window = ctx.context_window(&plan.upstream.model);
    let limit = ctx
        .config
        .auto_compact_token_limit
        .unwrap_or(window * 9 / 10);
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

fn build(body: &mut [u8], ctx: &Ctx<'_>, lenient: bool) -> Result<MessagesPlan, Error> {
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
                .filter(|t| !t.starts_with(BILLING_HEADER))
            {
                if !instructions.is_empty() {
                    instructions.push_str("\n\n");
                }
                instructions.push_str(t);
            }
        }
        Some(other) => {
            return Err(type_error(
                "system",
                "a string or an array of text blocks",
                other,
            ));
        }
    }

    let mut t = Translator::new(lenient);

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
                    write_json(&mut first_content, c);
                }
                let r = match str_field(m, "role").unwrap_or("user") {
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
                .and_then(|b| b.as_f64())
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
        write_json(&mut out, schema);
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
    let input_estimate = ((instructions.len() + input.len() + tools.len()) / 4) as u64;
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
    };
    Ok(MessagesPlan {
        upstream,
        model,
        stream,
        stop_sequences,
        names,
        thinking: thinking_blocks,
        citations: include_sources,
        input_estimate,
    })
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
        write_str(out, str_field(tool, "description").unwrap_or(""));
        out.extend_from_slice(br#","parameters":"#);
        match schema {
            Some(s) => write_json(out, s),
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

// ---------------------------------------------------------------------------------------
// Shared answer pieces
// ---------------------------------------------------------------------------------------

/// The earliest match of any stop sequence: `(byte position, which sequence)`.
fn find_stop(text: &str, stops: &[String]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (k, s) in stops.iter().enumerate() {
        if let Some(p) = text.find(s.as_str())
            && best.is_none_or(|(bp, _)| p < bp)
        {
            best = Some((p, k));
        }
    }
    best
}

/// Length of the longest suffix of `held` that is a proper prefix of some stop sequence (the
/// text that must wait for the next delta before it can be sent).
fn partial_suffix_len(held: &str, stops: &[String]) -> usize {
    let h = held.as_bytes();
    let mut keep = 0;
    for s in stops {
        let mut l = s.len().saturating_sub(1).min(h.len());
        while l > keep {
            if s.is_char_boundary(l) && h.ends_with(s.as_bytes().get(..l).unwrap_or_default()) {
                keep = l;
                break;
            }
            l -= 1;
        }
    }
    keep
}

/// The characters `start..end` of `s` (annotation indices count characters).
fn char_range(s: &str, start: u32, end: u32) -> &str {
    let byte = |n: u32| s.char_indices().nth(n as usize).map_or(s.len(), |(i, _)| i);
    let (a, b) = (byte(start), byte(end.max(start)));
    s.get(a..b).unwrap_or("")
}

/// Tool-call arguments as a JSON object: unchanged when they are one, `{}` when empty, else
/// wrapped as `{"_raw": "<text>"}` so the client always gets an object.
fn wrap_arguments(args: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = args.trim();
    if trimmed.is_empty() {
        return "{}".into();
    }
    match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Object(_)) => trimmed.into(),
        _ => {
            let mut out = Vec::with_capacity(args.len() + 16);
            out.extend_from_slice(br#"{"_raw":"#);
            write_str(&mut out, args);
            out.push(b'}');
            String::from_utf8_lossy(&out).into_owned().into()
        }
    }
}

fn server_tool_id(id: &str) -> String {
    let tail = id.strip_prefix("ws_").unwrap_or(id);
    if tail.is_empty() {
        random_id("srvtoolu_")
    } else {
        format!("srvtoolu_{tail}")
    }
}

fn write_search_result_block<'s, B: BufMut>(
    out: &mut B,
    tool_use_id: &str,
    sources: impl Iterator<Item = (&'s str, Option<&'s str>)>,
) {
    out.put_slice(br#"{"type":"web_search_tool_result","tool_use_id":"#);
    write_str(out, tool_use_id);
    out.put_slice(br#","content":["#);
    for (i, (url, title)) in sources.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(br#"{"type":"web_search_result","url":"#);
        write_str(out, url);
        out.put_slice(br#","title":"#);
        write_str(out, title.unwrap_or(url));
        out.put_slice(br#","encrypted_content":"","page_age":null}"#);
    }
    out.put_slice(b"]}");
}

fn write_citation<B: BufMut>(out: &mut B, url: &str, title: Option<&str>, cited: &str) {
    out.put_slice(br#"{"type":"web_search_result_location","url":"#);
    write_str(out, url);
    out.put_slice(br#","title":"#);
    write_str(out, title.unwrap_or(url));
    out.put_slice(br#","cited_text":"#);
    write_str(out, cited);
    out.put_slice(br#","encrypted_index":""}"#);
}

/// Usage in Anthropic terms: `input_tokens` excludes the cached part.
fn write_usage_fields<B: BufMut>(out: &mut B, u: &Usage) {
    let cached = u.cached.min(u.input);
    out.put_slice(br#""input_tokens":"#);
    write_u64(out, u.input - cached);
    out.put_slice(br#","cache_creation_input_tokens":0,"cache_read_input_tokens":"#);
    write_u64(out, cached);
    out.put_slice(br#","output_tokens":"#);
    write_u64(out, u.output);
}

fn incomplete_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("content_filter") => "refusal",
        _ => "max_tokens",
    }
}

// ---------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------

const TEXT_DELTA: &[u8] = br#","delta":{"type":"text_delta","text":"#;
const THINKING_DELTA: &[u8] = br#","delta":{"type":"thinking_delta","thinking":"#;
const JSON_DELTA: &[u8] = br#","delta":{"type":"input_json_delta","partial_json":"#;
const SIGNATURE_DELTA: &[u8] = br#","delta":{"type":"signature_delta","signature":"#;
const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// One `content_block_delta` frame whose delta has a single string field.
fn string_delta(out: &mut BytesMut, index: u32, head: &[u8], value: &str) {
    out.put_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    write_u64(out, u64::from(index));
    out.put_slice(head);
    write_str(out, value);
    out.put_slice(b"}}\n\n");
}

fn block_start_head(out: &mut BytesMut, index: u32) {
    out.put_slice(
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
    );
    write_u64(out, u64::from(index));
    out.put_slice(b",\"content_block\":");
}

fn block_stop(out: &mut BytesMut, index: u32) {
    out.put_slice(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":");
    write_u64(out, u64::from(index));
    out.put_slice(b"}\n\n");
}

/// The content block currently open, by upstream `output_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text { item: u32 },
    Thinking { item: u32, has_text: bool },
    Tool { item: u32, args: bool, custom: bool },
}

/// Writes one streamed Messages answer (A.8). Blocks never interleave: the open block is
/// closed before another starts. Text, thinking and argument deltas are written straight into
/// the output buffer (no allocation per event); with `stop_sequences`, text that might begin
/// a stop sequence waits in a reused buffer for the next delta.
pub struct MessagesEncoder {
    model: String,
    names: ToolNames,
    stop: Vec<String>,
    thinking: bool,
    citations: bool,
    input_estimate: u64,
    /// Index of the next content block.
    next: u32,
    open: Open,
    any_tool: bool,
    searches: u64,
    /// The stop sequence that ended the answer; everything after it is dropped.
    stopped: Option<usize>,
    /// Text held back while it may be the start of a stop sequence.
    held: String,
    /// Text of the current message, kept only when citations are possible (`cited_text`).
    msg_text: String,
    finished: bool,
}

impl MessagesEncoder {
    fn current(&self) -> u32 {
        self.next.saturating_sub(1)
    }

    fn start(&mut self, open: Open, out: &mut BytesMut) -> u32 {
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = open;
        block_start_head(out, index);
        index
    }

    fn close(&mut self, out: &mut BytesMut) {
        let index = self.current();
        match self.open {
            Open::None => return,
            Open::Text { .. } if !self.held.is_empty() => {
                string_delta(out, index, TEXT_DELTA, &self.held);
                self.held.clear();
            }
            Open::Tool { args: false, .. } => string_delta(out, index, JSON_DELTA, "{}"),
            _ => {}
        }
        block_stop(out, index);
        self.open = Open::None;
    }

    fn ensure_text(&mut self, item: u32, out: &mut BytesMut) {
        if self.open != (Open::Text { item }) {
            self.start(Open::Text { item }, out);
            out.put_slice(b"{\"type\":\"text\",\"text\":\"\"}}\n\n");
        }
    }

    fn ensure_thinking(&mut self, item: u32, out: &mut BytesMut) {
        if !matches!(self.open, Open::Thinking { item: i, .. } if i == item) {
            self.start(
                Open::Thinking {
                    item,
                    has_text: false,
                },
                out,
            );
            out.put_slice(b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n");
        }
    }

    fn text(&mut self, item: u32, text: &str, out: &mut BytesMut) {
        if self.stopped.is_some() || text.is_empty() {
            return;
        }
        self.ensure_text(item, out);
        if self.citations {
            self.msg_text.push_str(text);
        }
        let index = self.current();
        if self.stop.is_empty() {
            string_delta(out, index, TEXT_DELTA, text);
            return;
        }
        self.held.push_str(text);
        if let Some((pos, k)) = find_stop(&self.held, &self.stop) {
            if let Some(before) = self.held.get(..pos).filter(|s| !s.is_empty()) {
                string_delta(out, index, TEXT_DELTA, before);
            }
            self.held.clear();
            self.stopped = Some(k);
            self.close(out);
            return;
        }
        let send = self.held.len() - partial_suffix_len(&self.held, &self.stop);
        if send > 0 {
            if let Some(ready) = self.held.get(..send) {
                string_delta(out, index, TEXT_DELTA, ready);
            }
            self.held.drain(..send);
        }
    }

    fn citation(&mut self, item: u32, c: &Citation<'_>, out: &mut BytesMut) {
        if self.stopped.is_some() {
            return;
        }
        self.ensure_text(item, out);
        out.put_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_u64(out, u64::from(self.current()));
        out.put_slice(br#","delta":{"type":"citations_delta","citation":"#);
        let cited = char_range(&self.msg_text, c.start, c.end);
        write_citation(out, c.url, c.title, cited);
        out.put_slice(b"}}\n\n");
    }

    fn tool_start(
        &mut self,
        item: u32,
        call_id: &str,
        name: &str,
        custom: bool,
        out: &mut BytesMut,
    ) {
        self.any_tool = true;
        self.start(
            Open::Tool {
                item,
                args: false,
                custom,
            },
            out,
        );
        out.put_slice(br#"{"type":"tool_use","id":"#);
        write_str(out, call_id);
        out.put_slice(br#","name":"#);
        write_str(out, self.names.restore(name));
        out.put_slice(b",\"input\":{}}}\n\n");
    }

    fn web_search(
        &mut self,
        id: &str,
        query: Option<&str>,
        sources: &[Source<'_>],
        out: &mut BytesMut,
    ) {
        self.searches += 1;
        let srv = server_tool_id(id);
        let index = self.start(Open::None, out);
        out.put_slice(br#"{"type":"server_tool_use","id":"#);
        write_str(out, &srv);
        out.put_slice(b",\"name\":\"web_search\",\"input\":{}}}\n\n");
        let mut q = Vec::with_capacity(32);
        q.extend_from_slice(br#"{"query":"#);
        write_str(&mut q, query.unwrap_or(""));
        q.push(b'}');
        string_delta(out, index, JSON_DELTA, &String::from_utf8_lossy(&q));
        block_stop(out, index);
        let index = self.start(Open::None, out);
        write_search_result_block(out, &srv, sources.iter().map(|s| (s.url, s.title)));
        out.put_slice(b"}\n\n");
        block_stop(out, index);
    }

    fn finish(&mut self, reason: &'static str, usage: &Usage, out: &mut BytesMut) {
        self.close(out);
        let (reason, sequence) = match self.stopped.and_then(|k| self.stop.get(k)) {
            Some(s) => ("stop_sequence", Some(s.as_str())),
            None => (reason, None),
        };
        out.put_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"");
        out.put_slice(reason.as_bytes());
        out.put_slice(b"\",\"stop_sequence\":");
        crate::json::write_opt_str(out, sequence);
        out.put_slice(b"},\"usage\":{");
        write_usage_fields(out, usage);
        if self.searches > 0 {
            out.put_slice(br#","server_tool_use":{"web_search_requests":"#);
            write_u64(out, self.searches);
            out.put_u8(b'}');
        }
        out.put_slice(b"}}\n\n");
        out.put_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.finished = true;
    }
}

impl Encoder for MessagesEncoder {
    fn begin(&mut self, out: &mut BytesMut) {
        out.put_slice(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":",
        );
        write_str(out, &random_id("msg_"));
        out.put_slice(br#","type":"message","role":"assistant","model":"#);
        write_str(out, &self.model);
        out.put_slice(
            br#","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":"#,
        );
        write_u64(out, self.input_estimate);
        out.put_slice(
            br#","cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
        );
        out.put_slice(b"\n\n");
        out.put_slice(PING);
    }

    fn delta(&mut self, d: &Delta<'_>, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        match d {
            Delta::MessageStart { .. } => {
                self.close(out);
                self.msg_text.clear();
            }
            Delta::Text { index, text } | Delta::Refusal { index, text } => {
                self.text(*index, text, out)
            }
            Delta::Citation { index, citation } => self.citation(*index, citation, out),
            Delta::MessageDone { index } => {
                if self.open == (Open::Text { item: *index }) {
                    self.close(out);
                }
            }
            Delta::ReasoningStart { index, .. } => {
                if self.thinking && self.stopped.is_none() {
                    self.ensure_thinking(*index, out);
                }
            }
            Delta::ReasoningPart { index, part } => {
                if let Open::Thinking {
                    item,
                    has_text: true,
                } = self.open
                    && item == *index
                    && *part > 0
                {
                    string_delta(out, self.current(), THINKING_DELTA, "\n\n");
                }
            }
            Delta::ReasoningText { index, text, .. } => {
                if !self.thinking || self.stopped.is_some() || text.is_empty() {
                    return;
                }
                self.ensure_thinking(*index, out);
                string_delta(out, self.current(), THINKING_DELTA, text);
                self.open = Open::Thinking {
                    item: *index,
                    has_text: true,
                };
            }
            Delta::ReasoningDone {
                index,
                id,
                encrypted_content,
                ..
            } => {
                if !self.thinking || self.stopped.is_some() {
                    return;
                }
                self.ensure_thinking(*index, out);
                if let Some(enc) = encrypted_content.filter(|e| !e.is_empty()) {
                    let sig = signature_envelope(id, enc);
                    string_delta(out, self.current(), SIGNATURE_DELTA, &sig);
                }
                self.close(out);
            }
            Delta::ToolCallStart {
                index,
                call_id,
                name,
                custom,
            } => {
                if self.stopped.is_none() {
                    self.tool_start(*index, call_id, name, *custom, out);
                }
            }
            Delta::ToolCallArgs { index, fragment } => {
                if let Open::Tool {
                    item,
                    custom: false,
                    ..
                } = self.open
                    && item == *index
                    && !fragment.is_empty()
                {
                    string_delta(out, self.current(), JSON_DELTA, fragment);
                    self.open = Open::Tool {
                        item,
                        args: true,
                        custom: false,
                    };
                }
            }
            Delta::ToolCallDone {
                index,
                call_id,
                name,
                arguments,
                custom,
            } => {
                if self.stopped.is_some() {
                    return;
                }
                if !matches!(self.open, Open::Tool { item, .. } if item == *index) {
                    self.tool_start(*index, call_id, name, *custom, out);
                }
                if let Open::Tool { args: false, .. } = self.open {
                    let input = wrap_arguments(arguments);
                    string_delta(out, self.current(), JSON_DELTA, &input);
                    self.open = Open::Tool {
                        item: *index,
                        args: true,
                        custom: *custom,
                    };
                }
                self.close(out);
            }
            Delta::WebSearchDone {
                id, query, sources, ..
            } => {
                if self.stopped.is_none() {
                    self.web_search(id, *query, sources, out);
                }
            }
            Delta::Completed { usage } => {
                let reason = if self.any_tool {
                    "tool_use"
                } else {
                    "end_turn"
                };
                self.finish(reason, usage, out);
            }
            Delta::Incomplete { reason, usage } => {
                self.finish(incomplete_reason(*reason), usage, out);
            }
            Delta::Created { .. }
            | Delta::CompactionDone { .. }
            | Delta::Failed { .. }
            | Delta::Error { .. } => {}
        }
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if !self.finished {
            out.put_slice(PING);
        }
    }

    fn fail(&mut self, err: &Error, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        out.put_slice(b"event: error\ndata: ");
        out.put_slice(&err.anthropic_json());
        out.put_slice(b"\n\n");
        self.finished = true;
    }
}

// ---------------------------------------------------------------------------------------
// Plan and the non-stream answer
// ---------------------------------------------------------------------------------------

impl Plan for MessagesPlan {
    type Encoder = MessagesEncoder;

    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }

    fn upstream(&self) -> &UpstreamRequest {
        &self.upstream
    }

    fn stream(&self) -> bool {
        self.stream
    }

    fn encoder(&self) -> MessagesEncoder {
        MessagesEncoder {
            model: self.model.clone(),
            names: self.names.clone(),
            stop: self.stop_sequences.clone(),
            thinking: self.thinking,
            citations: self.citations,
            input_estimate: self.input_estimate,
            next: 0,
            open: Open::None,
            any_tool: false,
            searches: 0,
            stopped: None,
            held: String::new(),
            msg_text: String::new(),
            finished: false,
        }
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(br#"{"id":"#);
        write_str(&mut out, &random_id("msg_"));
        out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
        write_str(&mut out, &self.model);
        out.extend_from_slice(br#","content":["#);
        let mut n = 0usize;
        let mut stopped: Option<usize> = None;
        let mut any_tool = false;
        let mut searches = 0u64;
        for item in &c.items {
            if stopped.is_some() {
                break;
            }
            match item {
                Item::Message {
                    text,
                    refusal,
                    citations,
                    ..
                } => {
                    let joined;
                    let mut t: &str = text;
                    if !refusal.is_empty() {
                        joined = format!("{text}{refusal}");
                        t = &joined;
                    }
                    if let Some((pos, k)) = find_stop(t, &self.stop_sequences) {
                        t = t.get(..pos).unwrap_or("");
                        stopped = Some(k);
                    }
                    if t.is_empty() && citations.is_empty() {
                        continue;
                    }
                    push_sep(&mut out, &mut n);
                    out.extend_from_slice(br#"{"type":"text","text":"#);
                    write_str(&mut out, t);
                    out.extend_from_slice(br#","citations":"#);
                    write_citations(&mut out, text, citations);
                    out.push(b'}');
                }
                Item::Reasoning {
                    id,
                    summary,
                    encrypted_content,
                } => {
                    if !self.thinking {
                        continue;
                    }
                    push_sep(&mut out, &mut n);
                    out.extend_from_slice(br#"{"type":"thinking","thinking":"#);
                    write_str(&mut out, &summary.join("\n\n"));
                    out.extend_from_slice(br#","signature":"#);
                    match encrypted_content.as_deref().filter(|e| !e.is_empty()) {
                        Some(enc) => write_str(&mut out, &signature_envelope(id, enc)),
                        None => out.extend_from_slice(b"\"\""),
                    }
                    out.push(b'}');
                }
                Item::ToolCall {
                    call_id,
                    name,
                    arguments,
                    ..
                } => {
                    any_tool = true;
                    push_sep(&mut out, &mut n);
                    out.extend_from_slice(br#"{"type":"tool_use","id":"#);
                    write_str(&mut out, call_id);
                    out.extend_from_slice(br#","name":"#);
                    write_str(&mut out, self.names.restore(name));
                    out.extend_from_slice(br#","input":"#);
                    out.extend_from_slice(wrap_arguments(arguments).as_bytes());
                    out.push(b'}');
                }
                Item::WebSearch { id, query, sources } => {
                    searches += 1;
                    let srv = server_tool_id(id);
                    push_sep(&mut out, &mut n);
                    out.extend_from_slice(br#"{"type":"server_tool_use","id":"#);
                    write_str(&mut out, &srv);
                    out.extend_from_slice(br#","name":"web_search","input":{"query":"#);
                    write_str(&mut out, query.as_deref().unwrap_or(""));
                    out.extend_from_slice(b"}}");
                    push_sep(&mut out, &mut n);
                    write_search_result_block(
                        &mut out,
                        &srv,
                        sources.iter().map(|(u, t)| (u.as_str(), t.as_deref())),
                    );
                }
                Item::Compaction { .. } => {}
            }
        }
        let (reason, sequence) = match stopped.and_then(|k| self.stop_sequences.get(k)) {
            Some(s) => ("stop_sequence", Some(s.as_str())),
            None => match &c.finish {
                Finish::Incomplete(r) => (incomplete_reason(r.as_deref()), None),
                _ if any_tool => ("tool_use", None),
                _ => ("end_turn", None),
            },
        };
        out.extend_from_slice(br#"],"stop_reason":"#);
        write_str(&mut out, reason);
        out.extend_from_slice(br#","stop_sequence":"#);
        crate::json::write_opt_str(&mut out, sequence);
        out.extend_from_slice(br#","usage":{"#);
        write_usage_fields(&mut out, &c.usage);
        out.extend_from_slice(
            br#","cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"server_tool_use":"#,
        );
        if searches > 0 {
            out.extend_from_slice(br#"{"web_search_requests":"#);
            write_u64(&mut out, searches);
            out.push(b'}');
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(br#","service_tier":"standard"}}"#);
        out
    }
}

fn write_citations(out: &mut Vec<u8>, text: &str, citations: &[OwnedCitation]) {
    if citations.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'[');
    for (i, c) in citations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_citation(
            out,
            &c.url,
            c.title.as_deref(),
            char_range(text, c.start, c.end),
        );
    }
    out.push(b']');
}
