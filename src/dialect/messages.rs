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

use super::fields::{field, is_base64, str_field, type_error};
use super::items::{lite_namespace, write_tool_call_head};
use super::{Ctx, Encoder, Plan, PlanCore, parse_body};
use crate::error::{Error, Protocol};
use crate::json::{RawStrings, write_str, write_u64, write_value};
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

fn push_sep(buf: &mut Vec<u8>, count: &mut usize) {
    if *count > 0 {
        buf.push(b',');
    }
    *count += 1;
}

fn push_text_part(buf: &mut Vec<u8>, count: &mut usize, text: &str, raw: &RawStrings<'_>) {
    push_sep(buf, count);
    buf.extend_from_slice(br#"{"type":"input_text","text":"#);
    raw.write_str(buf, text);
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
    user_parts: Vec<u8>,
    user_count: usize,
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
            user_parts: Vec::new(),
            user_count: 0,
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
        let mut parts = Vec::new();
        let mut count = 0;
        match content {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => {
                push_text_part(&mut parts, &mut count, s, &self.raw)
            }
            Some(Value::String(_)) => {}
            Some(Value::Array(blocks)) => {
                for t in blocks
                    .iter()
                    .filter_map(|b| str_field(b, "text"))
                    .filter(|t| !t.is_empty() && !t.starts_with(BILLING_HEADER))
                {
                    push_text_part(&mut parts, &mut count, t, &self.raw);
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
                push_text_part(&mut self.user_parts, &mut self.user_count, s, &self.raw)
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
                    push_text_part(&mut self.user_parts, &mut self.user_count, t, &self.raw);
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
            Some("document") => self.document(block, &path)?,
            Some("search_result") => {
                let t = search_result_text(block);
                push_text_part(&mut self.user_parts, &mut self.user_count, &t, &self.raw);
            }
            Some("tool_result") => self.tool_result(block, &path)?,
            _ => {}
        }
        Ok(())
    }

    fn document(&mut self, block: &Value<'_>, path: &dyn Fn() -> String) -> Result<(), Error> {
        if write_pdf(
            &mut self.user_parts,
            &mut self.user_count,
            block,
            path,
            self.lenient,
        )? {
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
                push_text_part(&mut self.user_parts, &mut self.user_count, t, &self.raw);
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
                Some("document") if is_pdf(b) => {
                    let p = || format!("{}.content.{k}", path());
                    write_pdf(&mut parts, &mut count, b, &p, self.lenient)?;
                    continue;
                }
                _ => block_text(b),
            };
            let Some(text) = text else { continue };
            if !prefixed {
                prefixed = true;
                push_text_part(&mut parts, &mut count, &format!("Error: {text}"), &self.raw);
            } else {
                push_text_part(&mut parts, &mut count, &text, &self.raw);
            }
        }
        if !prefixed {
            // An error result with only images or files: say so before them.
            let mut with = Vec::new();
            let mut c = 0;
            push_text_part(&mut with, &mut c, "Error", &self.raw);
            if count > 0 {
                with.push(b',');
            }
            with.extend_from_slice(&parts);
            parts = with;
        }
        out.push(b'[');
        out.extend_from_slice(&parts);
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

/// Write a base64 PDF `document` as one `input_file` part. `Ok(false)` when the block is no
/// PDF (or, in lenient mode, not valid base64).
fn write_pdf(
    buf: &mut Vec<u8>,
    count: &mut usize,
    block: &Value<'_>,
    path: &dyn Fn() -> String,
    lenient: bool,
) -> Result<bool, Error> {
    if !is_pdf(block) {
        return Ok(false);
    }
    let data = field(block, "source")
        .and_then(|s| str_field(s, "data"))
        .unwrap_or("");
    if !is_base64(data.as_bytes()) {
        if lenient {
            return Ok(false);
        }
        return Err(Error::bad_request(format!(
            "{}.source.data: document source data is not valid base64",
            path()
        )));
    }
    let title = str_field(block, "title").unwrap_or("document.pdf");
    push_sep(buf, count);
    buf.extend_from_slice(br#"{"type":"input_file","file_data":"data:application/pdf;base64,"#);
    buf.extend_from_slice(data.as_bytes());
    buf.extend_from_slice(br#"","filename":"#);
    write_str(buf, title);
    buf.push(b'}');
    Ok(true)
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
            if !is_base64(data.as_bytes()) {
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
    /// The request and the client's model (echoed in answers); never chained or kept.
    core: PlanCore,
    stop_sequences: Vec<String>,
    names: ToolNames,
    /// Whether reasoning is shown as `thinking` blocks (thinking enabled or adaptive).
    thinking: bool,
    /// Whether thinking blocks carry the summary text (`display` is not `omitted`).
    summaries: bool,
    /// Citations are possible (web search enabled): keep message text for `cited_text`.
    citations: bool,
    input_estimate: u64,
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
    let n = crate::tokens::count_upstream_body(&plan.core.upstream.body()).max(1);
    let window = ctx.context_window(&plan.core.upstream.model);
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

fn build(body: &mut [u8], ctx: &Ctx<'_>, lenient: bool) -> Result<MessagesPlan, Error> {
    let body_len = body.len();
    // The text as it arrived, so long strings are copied rather than escaped again.
    let original = super::Original::copy(body);
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
    Ok(MessagesPlan {
        core: PlanCore::new(upstream, model, stream),
        stop_sequences,
        names,
        thinking: thinking_blocks,
        summaries: summary.is_some(),
        citations: include_sources,
        input_estimate,
    })
}

/// A quick input-size estimate for `message_start` (the real count arrives with the final
/// `message_delta`): about 4 bytes per token, with inline base64 media charged per item
/// rather than per byte.
fn estimate_tokens(other_bytes: usize, input: &[u8]) -> u64 {
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
    summaries: bool,
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
                if !self.thinking || !self.summaries || self.stopped.is_some() || text.is_empty() {
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
                ..
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
        // Close the open block so the stream stays balanced (start/stop) up to the error.
        if self.open != Open::None {
            block_stop(out, self.current());
            self.open = Open::None;
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

    fn core(&self) -> &PlanCore {
        &self.core
    }

    fn encoder(&self) -> MessagesEncoder {
        MessagesEncoder {
            model: self.core.client_model.clone(),
            names: self.names.clone(),
            stop: self.stop_sequences.clone(),
            thinking: self.thinking,
            summaries: self.summaries,
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
        write_str(&mut out, &self.core.client_model);
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
                    if self.summaries {
                        write_str(&mut out, &summary.join("\n\n"));
                    } else {
                        out.extend_from_slice(b"\"\"");
                    }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use http::{HeaderMap, HeaderValue};
    use serde_json::{Value as J, json};

    use super::*;
    use crate::config::Config;
    use crate::dialect::STREAM_B_ITEMS;
    use crate::upstream::catalog::Catalog;
    use crate::upstream::events::Decoder;

    struct Env {
        config: Config,
        catalog: Catalog,
        headers: HeaderMap,
    }

    impl Env {
        fn new() -> Self {
            Env {
                config: Config::for_tests("http://127.0.0.1:1", PathBuf::from("/nonexistent")),
                catalog: Catalog::builtin(),
                headers: HeaderMap::new(),
            }
        }
        fn ctx(&self) -> Ctx<'_> {
            Ctx {
                config: &self.config,
                catalog: &self.catalog,
                headers: &self.headers,
            }
        }
        fn try_plan(&self, body: &J) -> Result<MessagesPlan, Error> {
            let mut b = serde_json::to_vec(body).unwrap();
            translate(&mut b, &self.ctx())
        }
        fn plan(&self, body: &J) -> MessagesPlan {
            self.try_plan(body).unwrap()
        }
        fn upstream(&self, body: &J) -> J {
            upstream_json(&self.plan(body))
        }
        fn count(&self, body: &J) -> J {
            let mut b = serde_json::to_vec(body).unwrap();
            serde_json::from_slice(&count_tokens(&mut b, &self.ctx()).unwrap()).unwrap()
        }
    }

    fn upstream_json(p: &MessagesPlan) -> J {
        serde_json::from_slice(&p.upstream().body()).unwrap()
    }

    fn bad(env: &Env, body: &J) -> String {
        match env.try_plan(body) {
            Ok(_) => panic!("expected a 400"),
            Err(e) => {
                assert_eq!(e.status(Protocol::Anthropic), 400);
                e.message
            }
        }
    }

    /// Trimmed first-turn body of Claude Code (Part B §B.12 no. 1) around `messages`.
    fn cc_body(messages: J) -> J {
        json!({
          "model": "claude-opus-5-5",
          "messages": messages,
          "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.ce7; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "\nYou are an agent working with the user toward their goals.", "cache_control": {"type": "ephemeral"}}
          ],
          "tools": [
            {"name": "Bash", "description": "Executes a bash command and returns its output.",
             "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"command": {"description": "The command to execute", "type": "string"},
                              "timeout": {"type": "number"}, "description": {"type": "string"},
                              "run_in_background": {"type": "boolean"}, "dangerouslyDisableSandbox": {"type": "boolean"}},
               "required": ["command"], "additionalProperties": false}},
            {"name": "ToolSearch", "description": "Fetches full schema definitions for deferred tools.",
             "input_schema": {"type": "object", "properties": {"query": {"type": "string"}, "max_results": {"type": "number", "default": 5}},
               "required": ["query", "max_results"], "additionalProperties": false}},
            {"name": "DeferredToolPlaceholder", "description": "Reserved placeholder; never call this tool.",
             "input_schema": {"type": "object", "properties": {}}, "defer_loading": true}
          ],
          "metadata": {"user_id": "{\"device_id\":\"6b20142b\",\"account_uuid\":\"\",\"session_id\":\"a31f3bca-a60d-4b01-935a-96d1911167bb\"}"},
          "max_tokens": 128000,
          "thinking": {"type": "adaptive", "display": "omitted"},
          "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
          "output_config": {"effort": "medium"},
          "stream": true
        })
    }

    fn first_turn() -> J {
        json!([
          {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAttribution for git commits\n</system-reminder>\n"},
            {"type": "text", "text": "hi"}]},
          {"role": "system", "content": [
            {"type": "text", "text": "# Environment\nPrimary working directory: /w", "cache_control": {"type": "ephemeral"}}],
           "output_config": {"effort": "medium"}}
        ])
    }

    fn simple(messages: J) -> J {
        json!({"model": "gpt-5.5", "max_tokens": 100, "messages": messages})
    }

    fn png() -> &'static str {
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    }

    // ---- frames ----------------------------------------------------------------------

    fn frames(bytes: &[u8]) -> Vec<J> {
        let s = std::str::from_utf8(bytes).unwrap();
        assert!(
            s.is_empty() || s.ends_with("\n\n"),
            "frames end with a blank line"
        );
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let mut lines = f.lines();
                let ev = lines.next().unwrap().strip_prefix("event: ").unwrap();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                assert!(lines.next().is_none(), "one data line per frame");
                let v: J = serde_json::from_str(data).unwrap();
                assert_eq!(v["type"], ev, "event line equals the data type");
                v
            })
            .collect()
    }

    /// A compact picture of a frame list: `start:text`, `text_delta:Hi`, `stop`, …
    fn describe(frames: &[J]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f["type"].as_str().unwrap() {
                "content_block_start" => format!(
                    "start{}:{}",
                    f["index"],
                    f["content_block"]["type"].as_str().unwrap()
                ),
                "content_block_delta" => {
                    let d = &f["delta"];
                    let t = d["type"].as_str().unwrap();
                    let v = match t {
                        "text_delta" => d["text"].clone(),
                        "thinking_delta" => d["thinking"].clone(),
                        "input_json_delta" => d["partial_json"].clone(),
                        "signature_delta" => J::String("<sig>".into()),
                        _ => J::String("…".into()),
                    };
                    format!("{}{}:{}", t, f["index"], v.as_str().unwrap())
                }
                "content_block_stop" => format!("stop{}", f["index"]),
                "message_delta" => format!(
                    "message_delta:{}",
                    f["delta"]["stop_reason"].as_str().unwrap()
                ),
                other => other.to_owned(),
            })
            .collect()
    }

    /// The text of every `text_delta`, joined.
    fn streamed_text(frames: &[J]) -> String {
        frames
            .iter()
            .filter(|x| x["delta"]["type"] == "text_delta")
            .map(|x| x["delta"]["text"].as_str().unwrap())
            .collect()
    }

    fn assert_balanced(frames: &[J]) {
        let mut open: Option<u64> = None;
        let mut next = 0u64;
        for f in frames {
            match f["type"].as_str().unwrap() {
                "content_block_start" => {
                    assert_eq!(open, None, "blocks never interleave");
                    assert_eq!(f["index"].as_u64(), Some(next));
                    open = Some(next);
                    next += 1;
                }
                "content_block_delta" => assert_eq!(f["index"].as_u64(), open),
                "content_block_stop" => {
                    assert_eq!(f["index"].as_u64(), open);
                    open = None;
                }
                "message_delta" | "message_stop" => assert_eq!(open, None),
                _ => {}
            }
        }
        assert_eq!(open, None);
    }

    fn run_lines(plan: &MessagesPlan, lines: &[&str]) -> Vec<J> {
        let mut enc = plan.encoder();
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        let mut dec = Decoder::new();
        for l in lines {
            dec.decode(l.as_bytes(), |d| enc.delta(d, &mut out))
                .unwrap();
        }
        let f = frames(&out);
        assert_balanced(&f);
        f
    }

    fn run_deltas(plan: &MessagesPlan, deltas: &[Delta<'_>]) -> Vec<J> {
        let mut enc = plan.encoder();
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        for d in deltas {
            enc.delta(d, &mut out);
        }
        let f = frames(&out);
        assert_balanced(&f);
        f
    }

    fn collect(lines: &[&str]) -> Collected {
        let mut dec = Decoder::new();
        let mut c = Collected::new();
        for l in lines {
            dec.decode(l.as_bytes(), |d| c.push(d)).unwrap();
        }
        c
    }

    /// Rebuild the assistant message a client would keep from a stream.
    fn assistant_from_frames(frames: &[J]) -> J {
        let mut blocks: Vec<J> = Vec::new();
        let mut json_buf = String::new();
        for f in frames {
            match f["type"].as_str().unwrap() {
                "content_block_start" => {
                    blocks.push(f["content_block"].clone());
                    json_buf.clear();
                }
                "content_block_delta" => {
                    let b = blocks.last_mut().unwrap();
                    let d = &f["delta"];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            let t = format!(
                                "{}{}",
                                b["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            );
                            b["text"] = J::String(t);
                        }
                        "thinking_delta" => {
                            let t = format!(
                                "{}{}",
                                b["thinking"].as_str().unwrap(),
                                d["thinking"].as_str().unwrap()
                            );
                            b["thinking"] = J::String(t);
                        }
                        "signature_delta" => b["signature"] = d["signature"].clone(),
                        "input_json_delta" => {
                            json_buf.push_str(d["partial_json"].as_str().unwrap())
                        }
                        _ => {}
                    }
                }
                "content_block_stop" => {
                    let b = blocks.last_mut().unwrap();
                    if b["type"] == "tool_use" {
                        b["input"] = serde_json::from_str(&json_buf).unwrap();
                    }
                }
                _ => {}
            }
        }
        json!({"role": "assistant", "content": blocks})
    }

    /// `STREAM_B_ITEMS` and its `response.completed` with an empty `output`.
    fn stream_b() -> Vec<&'static str> {
        let mut lines = STREAM_B_ITEMS.to_vec();
        lines.push(
            r#"{"type":"response.completed","sequence_number":20,"response":{"id":"resp_7c","object":"response","status":"completed","model":"gpt-5.5","output":[],"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1000},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":8},"total_tokens":1274}}}"#,
        );
        lines
    }

    fn text_stream(id: &str, text: &str) -> Vec<String> {
        vec![
            format!(r#"{{"type":"response.output_item.added","output_index":0,"item":{{"id":"rs_{id}","type":"reasoning","summary":[]}}}}"#),
            format!(r#"{{"type":"response.output_item.done","output_index":0,"item":{{"id":"rs_{id}","type":"reasoning","encrypted_content":"enc-{id}","summary":[]}}}}"#),
            format!(r#"{{"type":"response.output_item.added","output_index":1,"item":{{"type":"message","role":"assistant","content":[]}}}}"#),
            format!(r#"{{"type":"response.output_text.delta","output_index":1,"delta":{}}}"#, J::String(text.into())),
            format!(r#"{{"type":"response.output_item.done","output_index":1,"item":{{"type":"message","content":[{{"type":"output_text","text":{}}}]}}}}"#, J::String(text.into())),
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":10,"output_tokens":2}}}"#.to_owned(),
        ]
    }

    // ---- envelope --------------------------------------------------------------------

    #[test]
    fn signature_envelope_round_trips_byte_for_byte_and_rejects_foreign() {
        for (id, enc) in [
            ("rs_1", "gAAAAA…=="),
            ("", "x"),
            ("rs_\u{e9}", &"A".repeat(10_000)[..]),
        ] {
            let sig = signature_envelope(id, enc);
            assert!(sig.starts_with("cxa1."));
            assert_eq!(sig, signature_envelope(id, enc), "deterministic");
            assert!(sig.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(open_signature(&sig), Some((id.to_owned(), enc.to_owned())));
        }
        assert_eq!(open_signature("EqQBCkgIARAB"), None);
        assert_eq!(open_signature("cxa1.!!!"), None);
        assert_eq!(open_signature("cxa1."), None);
        assert_eq!(open_signature("cxa1.AAAA_w"), None);
        assert_eq!(open_signature(""), None);
    }

    // ---- request translation ---------------------------------------------------------

    #[test]
    fn system_blocks_join_in_order_without_the_billing_header() {
        let env = Env::new();
        let v = env.upstream(&cc_body(first_turn()));
        assert_eq!(
            v["instructions"],
            "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\n\nYou are an agent working with the user toward their goals."
        );
        assert!(!v.to_string().contains("x-anthropic-billing-header"));
        assert_eq!(v["model"], "gpt-5.5");
        assert_eq!(v["store"], false);
        assert_eq!(v["include"][0], "reasoning.encrypted_content");
        let v = env.upstream(&json!({"model":"gpt-5.5","system":"You are terse.","messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(v["instructions"], "You are terse.");
        assert_eq!(
            v["input"],
            json!([{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}])
        );
    }

    #[test]
    fn role_system_entries_become_developer_items_at_their_position() {
        let env = Env::new();
        let mut msgs = first_turn();
        msgs.as_array_mut().unwrap().extend([
            json!({"role":"assistant","content":[{"type":"text","text":"Hello."}]}),
            json!({"role":"system","content":"Later system text","output_config":{"effort":"medium"}}),
            json!({"role":"user","content":"again"}),
        ]);
        let v = env.upstream(&cc_body(msgs));
        let input = v["input"].as_array().unwrap();
        let roles: Vec<&str> = input.iter().map(|i| i["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "developer", "assistant", "developer", "user"]
        );
        assert_eq!(
            input[0]["content"],
            json!([
                {"type":"input_text","text":"<system-reminder>\nAttribution for git commits\n</system-reminder>\n"},
                {"type":"input_text","text":"hi"}
            ])
        );
        assert_eq!(
            input[1]["content"][0]["text"],
            "# Environment\nPrimary working directory: /w"
        );
        assert_eq!(
            input[3]["content"],
            json!([{"type":"input_text","text":"Later system text"}])
        );
        assert_eq!(
            input[2]["content"],
            json!([{"type":"output_text","text":"Hello."}])
        );
        assert!(!v.to_string().contains("\"system\""));
        assert!(!v.to_string().contains("cache_control"));
    }

    #[test]
    fn consecutive_same_role_messages_are_kept_in_order() {
        let env = Env::new();
        let v = env.upstream(&simple(json!([
            {"role":"user","content":"<system-reminder>\nCalled the Read tool</system-reminder>"},
            {"role":"user","content":[{"type":"text","text":"second"}]},
            {"role":"assistant","content":"a1"},
            {"role":"assistant","content":[{"type":"text","text":"a2"}]}
        ])));
        let texts: Vec<&str> = v["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "<system-reminder>\nCalled the Read tool</system-reminder>",
                "second",
                "a1",
                "a2"
            ]
        );
    }

    #[test]
    fn images_become_input_image_and_bad_ones_are_400() {
        let env = Env::new();
        let v = env.upstream(&simple(json!([{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":png()}},
            {"type":"image","source":{"type":"url","url":"https://example.com/a.jpg"}},
            {"type":"text","text":"describe"}
        ]}])));
        assert_eq!(
            v["input"][0]["content"],
            json!([
                {"type":"input_image","image_url":format!("data:image/png;base64,{}", png()),"detail":"auto"},
                {"type":"input_image","image_url":"https://example.com/a.jpg","detail":"auto"},
                {"type":"input_text","text":"describe"}
            ])
        );
        let m = bad(
            &env,
            &simple(json!([{"role":"user","content":[
            {"type":"text","text":"x"},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"not base64!"}}]}])),
        );
        assert!(m.contains("messages.0.content.1.source.data"), "{m}");
        assert!(m.contains("base64"), "{m}");
        let m = bad(
            &env,
            &simple(json!([{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/bmp","data":png()}}]}])),
        );
        assert!(m.contains("image/bmp"), "{m}");
    }

    #[test]
    fn input_estimate_charges_images_per_item_not_per_byte() {
        let big = "A".repeat(400_000);
        let mut input = br#"[{"type":"input_image","image_url":"data:image/png;base64,"#.to_vec();
        input.extend_from_slice(big.as_bytes());
        input.extend_from_slice(br#"","detail":"auto"},{"type":"input_text","text":"hi"}]"#);
        let n = estimate_tokens(400, &input);
        assert!(n > 765 && n < 765 + 200, "{n}");
        assert_eq!(estimate_tokens(8, b""), 2);
    }

    #[test]
    fn documents_become_input_file_or_text() {
        let env = Env::new();
        let v = env.upstream(&simple(json!([{"role":"user","content":[
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"},"title":"spec.pdf"},
            {"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain text"}},
            {"type":"document","source":{"type":"content","content":[{"type":"text","text":"c1"}]}},
            {"type":"search_result","source":"https://example.com","title":"Example","content":[{"type":"text","text":"body"}]}
        ]}])));
        assert_eq!(
            v["input"][0]["content"],
            json!([
                {"type":"input_file","file_data":"data:application/pdf;base64,JVBERi0x","filename":"spec.pdf"},
                {"type":"input_text","text":"plain text"},
                {"type":"input_text","text":"c1"},
                {"type":"input_text","text":"Search result: Example (https://example.com)\nbody"}
            ])
        );
    }

    fn bash_call(id: &str, cmd: &str) -> J {
        json!({"type":"tool_use","id":id,"name":"Bash","input":{"command":cmd,"description":"Run it"}})
    }

    #[test]
    fn tool_result_with_image_becomes_a_list_output() {
        let env = Env::new();
        let v = env.upstream(&cc_body(json!([
            {"role":"user","content":"read red.png"},
            {"role":"assistant","content":[{"type":"text","text":"I'll run a tool."},
              {"type":"tool_use","id":"toolu_36d09bf0f5494d24be516f37","name":"Read","input":{"file_path":"/home/me/red.png"}}]},
            {"role":"user","content":[
              {"tool_use_id":"toolu_36d09bf0f5494d24be516f37","type":"tool_result",
               "content":[{"type":"text","text":"the image:"},{"type":"image","source":{"type":"base64","data":png(),"media_type":"image/png"}}],
               "cache_control":{"type":"ephemeral"}}]}
        ])));
        let input = v["input"].as_array().unwrap();
        assert_eq!(
            input[2],
            json!({"type":"function_call","call_id":"toolu_36d09bf0f5494d24be516f37","name":"Read","arguments":"{\"file_path\":\"/home/me/red.png\"}"})
        );
        assert_eq!(
            input[3],
            json!({"type":"function_call_output","call_id":"toolu_36d09bf0f5494d24be516f37","output":[
                {"type":"input_text","text":"the image:"},
                {"type":"input_image","image_url":format!("data:image/png;base64,{}", png()),"detail":"auto"}]})
        );
        assert_eq!(input.len(), 4);
    }

    #[test]
    fn error_results_are_prefixed_and_outputs_are_strings() {
        let env = Env::new();
        let v = env.upstream(&simple(json!([
            {"role":"user","content":"go"},
            {"role":"assistant","content":[bash_call("toolu_a","echo_hello"), bash_call("toolu_b","x"), bash_call("toolu_c","y"), bash_call("toolu_d","z")]},
            {"role":"user","content":[
              {"type":"tool_result","content":"Exit code 127\n/bin/bash: line 1: echo_hello: command not found","is_error":true,"tool_use_id":"toolu_a"},
              {"type":"tool_result","tool_use_id":"toolu_b","content":[{"type":"text","text":"l1"},{"type":"text","text":"l2"}]},
              {"type":"tool_result","tool_use_id":"toolu_c"},
              {"type":"tool_result","tool_use_id":"toolu_d","is_error":true,"content":[{"type":"image","source":{"type":"base64","data":png(),"media_type":"image/png"}}]}
            ]}
        ])));
        let input = v["input"].as_array().unwrap();
        assert_eq!(
            input[5]["output"],
            "Error: Exit code 127\n/bin/bash: line 1: echo_hello: command not found"
        );
        assert_eq!(input[6]["output"], "l1\nl2");
        assert_eq!(input[7]["output"], "");
        assert_eq!(
            input[8]["output"][0],
            json!({"type":"input_text","text":"Error"})
        );
        assert_eq!(input[8]["output"][1]["type"], "input_image");
    }

    #[test]
    fn parallel_results_out_of_order_follow_their_calls() {
        let env = Env::new();
        let v = env.upstream(&cc_body(json!([
            {"role":"user","content":"run two"},
            {"role":"assistant","content":[
              {"type":"tool_use","id":"toolu_037160b5755f4d8eb8a68cce","name":"Bash","input":{"command":"echo one","description":"Print one"}},
              {"type":"tool_use","id":"toolu_5a7016f100ac4bfab71f413e","name":"Bash","input":{"command":"echo two","description":"Print two"}}]},
            {"role":"user","content":[
              {"tool_use_id":"toolu_5a7016f100ac4bfab71f413e","type":"tool_result","content":"two","is_error":false},
              {"tool_use_id":"toolu_037160b5755f4d8eb8a68cce","type":"tool_result","content":"one","is_error":false,"cache_control":{"type":"ephemeral"}}]}
        ])));
        let input = v["input"].as_array().unwrap();
        let kinds: Vec<(&str, &str)> = input[1..]
            .iter()
            .map(|i| (i["type"].as_str().unwrap(), i["call_id"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("function_call", "toolu_037160b5755f4d8eb8a68cce"),
                ("function_call", "toolu_5a7016f100ac4bfab71f413e"),
                ("function_call_output", "toolu_5a7016f100ac4bfab71f413e"),
                ("function_call_output", "toolu_037160b5755f4d8eb8a68cce"),
            ]
        );
        assert_eq!(input[3]["output"], "two");
        assert_eq!(
            input[1]["arguments"],
            "{\"command\":\"echo one\",\"description\":\"Print one\"}"
        );
        assert!(
            input.iter().all(|i| i.get("id").is_none()),
            "no upstream item ids"
        );
    }

    #[test]
    fn tool_result_without_an_earlier_tool_use_is_400() {
        let env = Env::new();
        let m = bad(
            &env,
            &simple(json!([
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_missing","content":"x"}]}
            ])),
        );
        assert!(
            m.contains("toolu_missing") && m.contains("messages.0.content.0"),
            "{m}"
        );
    }

    #[test]
    fn tool_outputs_come_before_text_of_the_same_message() {
        let env = Env::new();
        let v = env.upstream(&simple(json!([
            {"role":"user","content":"go"},
            {"role":"assistant","content":[bash_call("toolu_34b71654ddb745909b757ea1","rm -rf x")]},
            {"role":"user","content":[
              {"type":"text","text":"before"},
              {"type":"tool_result","content":"The user doesn't want to proceed with this tool use.","is_error":true,"tool_use_id":"toolu_34b71654ddb745909b757ea1"},
              {"type":"text","text":"CRITICAL: Respond with TEXT ONLY."}]}
        ])));
        let input = v["input"].as_array().unwrap();
        assert_eq!(input[2]["type"], "function_call_output");
        assert_eq!(
            input[2]["output"],
            "Error: The user doesn't want to proceed with this tool use."
        );
        assert_eq!(
            input[3],
            json!({"type":"message","role":"user","content":[
                {"type":"input_text","text":"before"},
                {"type":"input_text","text":"CRITICAL: Respond with TEXT ONLY."}]})
        );
    }

    #[test]
    fn thinking_round_trips_over_three_turns() {
        let env = Env::new();
        // Turn 1: the user asks; the answer is §9.3's reasoning + commentary + call.
        let mut msgs = first_turn();
        let plan = env.plan(&cc_body(msgs.clone()));
        let f1 = run_lines(&plan, &stream_b());
        let a1 = assistant_from_frames(&f1);
        assert_eq!(a1["content"][0]["type"], "thinking");
        assert_eq!(a1["content"][0]["thinking"], "");
        assert!(
            a1["content"][0]["signature"]
                .as_str()
                .unwrap()
                .starts_with("cxa1.")
        );
        assert_eq!(a1["content"][2]["input"], json!({"command":"echo hi"}));

        // Turn 2: Claude Code echoes the turn verbatim and answers the call.
        msgs.as_array_mut().unwrap().extend([
            a1.clone(),
            json!({"role":"user","content":[{"tool_use_id":"call_abc","type":"tool_result","content":"hi","is_error":false,"cache_control":{"type":"ephemeral"}}]}),
        ]);
        let plan2 = env.plan(&cc_body(msgs.clone()));
        let v2 = upstream_json(&plan2);
        let input = v2["input"].as_array().unwrap();
        assert_eq!(
            input[2],
            json!({"type":"reasoning","id":"rs_1","summary":[],"content":null,"encrypted_content":"gAAAAA…"})
        );
        assert_eq!(
            input[3],
            json!({"type":"message","role":"assistant","content":[{"type":"output_text","text":"Running it now."}]})
        );
        assert_eq!(input[4]["type"], "function_call");
        assert_eq!(
            input[5],
            json!({"type":"function_call_output","call_id":"call_abc","output":"hi"})
        );

        // Turn 3: a second answer (reasoning + text), plus a foreign signature and a
        // redacted block from some other server: those are dropped.
        let lines = text_stream("2", "Done: hi");
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let a2 = assistant_from_frames(&run_lines(&plan2, &lines));
        let mut a2_blocks = a2["content"].as_array().unwrap().clone();
        a2_blocks.insert(
            0,
            json!({"type":"thinking","thinking":"foreign","signature":"EqQBCkgIARAB"}),
        );
        a2_blocks.insert(1, json!({"type":"redacted_thinking","data":"EmwKAhgBEgy"}));
        msgs.as_array_mut().unwrap().extend([
            json!({"role":"assistant","content":a2_blocks}),
            json!({"role":"user","content":"thanks"}),
        ]);
        let v3 = env.upstream(&cc_body(msgs));
        let input = v3["input"].as_array().unwrap();
        let kinds: Vec<&str> = input.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "message",
                "reasoning",
                "message",
                "function_call",
                "function_call_output",
                "reasoning",
                "message",
                "message"
            ]
        );
        assert_eq!(input[6]["encrypted_content"], "enc-2");
        assert_eq!(input[6]["id"], "rs_2");
        assert_eq!(input[7]["content"][0]["text"], "Done: hi");
        assert!(!v3.to_string().contains("foreign"));
        assert!(!v3.to_string().contains("EmwKAhgBEgy"));
    }

    #[test]
    fn thinking_text_becomes_the_summary_and_a_trailing_reasoning_is_dropped() {
        let env = Env::new();
        let sig = signature_envelope("rs_9", "enc9");
        let v = env.upstream(&simple(json!([
            {"role":"user","content":"q"},
            {"role":"assistant","content":[{"type":"thinking","thinking":"I think","signature":sig},{"type":"text","text":"A"}]},
            {"role":"user","content":"q2"},
            {"role":"assistant","content":[{"type":"text","text":"B"},{"type":"thinking","thinking":"dangling","signature":signature_envelope("rs_x","e")}]},
            {"role":"user","content":"q3"}
        ])));
        let input = v["input"].as_array().unwrap();
        assert_eq!(
            input[1]["summary"],
            json!([{"type":"summary_text","text":"I think"}])
        );
        assert_eq!(input[2]["content"][0]["text"], "A");
        assert!(!v.to_string().contains("dangling"));
        assert_eq!(input.len(), 6);
    }

    #[test]
    fn tool_choice_variants_and_parallel_switch() {
        let env = Env::new();
        let with = |tc: J| {
            let mut b = simple(json!([{"role":"user","content":"x"}]));
            b["tools"] = json!([{"name":"Bash","input_schema":{"type":"object"}}]);
            b["tool_choice"] = tc;
            env.upstream(&b)
        };
        let v = with(json!({"type":"auto"}));
        assert_eq!(
            (v["tool_choice"].clone(), v["parallel_tool_calls"].clone()),
            (json!("auto"), json!(true))
        );
        assert_eq!(with(json!({"type":"any"}))["tool_choice"], "required");
        assert_eq!(with(json!({"type":"none"}))["tool_choice"], "none");
        assert_eq!(
            with(json!({"type":"tool","name":"Bash"}))["tool_choice"],
            json!({"type":"function","name":"Bash"})
        );
        let v = with(json!({"type":"auto","disable_parallel_tool_use":true}));
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(
            v["tools"],
            json!([{"type":"function","name":"Bash","description":"","parameters":{"type":"object"},"strict":false}])
        );
    }

    #[test]
    fn effort_follows_the_mapping_table() {
        let env = Env::new();
        let effort = |model: &str, thinking: Option<J>, oc: Option<J>| {
            let mut b = json!({"model":model,"messages":[{"role":"user","content":"x"}]});
            if let Some(t) = thinking {
                b["thinking"] = t;
            }
            if let Some(o) = oc {
                b["output_config"] = o;
            }
            let v = env.upstream(&b);
            (
                v["reasoning"]["effort"].as_str().unwrap().to_owned(),
                v["reasoning"].get("summary").cloned(),
            )
        };
        let e = |model, t, o| effort(model, t, o).0;
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"type":"adaptive"})),
                Some(json!({"effort":"high"}))
            ),
            "high"
        );
        assert_eq!(
            e("gpt-5.5", None, Some(json!({"effort":"max"}))),
            "xhigh",
            "clamped"
        );
        assert_eq!(e("gpt-6-sol", None, Some(json!({"effort":"max"}))), "max");
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"type":"disabled"})),
                Some(json!({"effort":"low"}))
            ),
            "low"
        );
        assert_eq!(
            e("gpt-5.5", Some(json!({"type":"adaptive"})), None),
            "medium",
            "model default"
        );
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"type":"enabled","budget_tokens":1024})),
                None
            ),
            "low"
        );
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"type":"enabled","budget_tokens":8000})),
                None
            ),
            "medium"
        );
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"budget_tokens":31999,"type":"enabled","display":"omitted"})),
                None
            ),
            "high"
        );
        assert_eq!(
            e(
                "gpt-5.5",
                Some(json!({"type":"enabled","budget_tokens":64000})),
                None
            ),
            "xhigh"
        );
        assert_eq!(
            e("gpt-5.5", Some(json!({"type":"disabled"})), None),
            "low",
            "lowest"
        );
        assert_eq!(e("claude-3-5-haiku-20241022", None, None), "low");
        assert_eq!(
            effort(
                "gpt-5.5",
                Some(json!({"type":"adaptive","display":"omitted"})),
                None
            )
            .1,
            None
        );
        assert_eq!(
            effort(
                "gpt-5.5",
                Some(json!({"type":"adaptive","display":"updates"})),
                None
            )
            .1,
            Some(json!("auto"))
        );
        assert_eq!(
            effort("gpt-5.5", Some(json!({"type":"adaptive"})), None).1,
            Some(json!("auto"))
        );
        // Claude Code's default model: client name echoed, configured backend used.
        let p = env.plan(&cc_body(first_turn()));
        assert_eq!(p.client_model(), "claude-opus-5-5");
        assert_eq!(p.upstream().model, "gpt-5.5");
        assert_eq!(p.upstream().effort.as_deref(), Some("medium"));
        assert_eq!(p.upstream().summary, None);
        assert!(p.stream());
        assert_eq!(p.protocol(), Protocol::Anthropic);
    }

    #[test]
    fn web_search_tool_and_unsupported_server_tools() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"search"}]));
        b["tools"] = json!([{"type":"web_search_20250305","name":"web_search","max_uses":5,
            "allowed_domains":["docs.rs"],"blocked_domains":[],
            "user_location":{"type":"approximate","city":"Berlin","region":"Berlin","country":"DE","timezone":"Europe/Berlin"}}]);
        let p = env.plan(&b);
        assert!(p.upstream().include_sources);
        let v = upstream_json(&p);
        assert_eq!(
            v["tools"],
            json!([{"type":"web_search","external_web_access":true,"filters":{"allowed_domains":["docs.rs"]},
                "user_location":{"type":"approximate","city":"Berlin","region":"Berlin","country":"DE","timezone":"Europe/Berlin"}}])
        );
        assert_eq!(
            v["include"],
            json!([
                "reasoning.encrypted_content",
                "web_search_call.action.sources"
            ])
        );
        for ty in [
            "bash_20250124",
            "text_editor_20250728",
            "code_execution_20250825",
            "computer_20250124",
            "web_fetch_20250910",
            "memory_20250818",
        ] {
            b["tools"] = json!([{"type":ty,"name":"x"}]);
            let m = bad(&env, &b);
            assert!(m.contains(ty) && m.contains("tools.0"), "{m}");
        }
    }

    #[test]
    fn unknown_blocks_fields_and_betas_are_ignored() {
        let env = Env::new();
        let mut b = cc_body(json!([
            {"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"},"citations":null},
              {"type":"future_block","x":1},{"type":"image","source":{"type":"file","file_id":"file_1"}}],"extra":true},
            {"role":"assistant","content":[{"type":"text","text":"Searching."},
              {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"rust hyper 1.0"}},
              {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[{"type":"web_search_result","url":"https://hyper.rs","title":"hyper","encrypted_content":"Eqg","page_age":"2 days ago"}]},
              {"type":"code_execution_tool_result","tool_use_id":"x","content":{}},
              {"type":"mystery"}]},
            {"role":"user","content":"odd role"}
        ]));
        let m = bad(&env, &cc_body(json!([{"role":"tool","content":"x"}])));
        assert!(m.contains("unknown role \"tool\""), "{m}");
        for (k, v) in [
            ("safeguards", json!([{"type":"dangerous_tool_use"}])),
            ("temperature", json!(0.7)),
            ("top_p", json!(0.9)),
            ("top_k", json!(5)),
            ("service_tier", json!("auto")),
            ("container", json!("c")),
            ("cache_control", json!({"type":"ephemeral"})),
        ] {
            b[k] = v;
        }
        b["tools"][0]["input_examples"] = json!([{"command":"ls"}]);
        b["tools"][0]["eager_input_streaming"] = json!(false);
        b["tools"][0]["strict"] = json!(true);
        b["tools"][0]["cache_control"] = json!({"type":"ephemeral"});
        let v = env.upstream(&b);
        let s = v.to_string();
        for k in [
            "safeguards",
            "temperature",
            "top_p",
            "cache_control",
            "defer_loading",
            "input_examples",
            "metadata",
            "max_tokens",
            "context_management",
        ] {
            assert!(!s.contains(k), "{k} leaked: {s}");
        }
        let input = v["input"].as_array().unwrap();
        assert_eq!(
            input[0]["content"],
            json!([{"type":"input_text","text":"hi"}])
        );
        assert_eq!(
            input[1]["content"],
            json!([{"type":"output_text","text":"Searching."},
                {"type":"output_text","text":"[web_search: rust hyper 1.0]"},
                {"type":"output_text","text":"[web_search results]\n- hyper <https://hyper.rs>"}])
        );
        assert_eq!(input[2]["role"], "user");
        assert_eq!(v["tools"][0]["strict"], false);
        assert_eq!(v["tools"][2]["name"], "DeferredToolPlaceholder");
    }

    #[test]
    fn wrong_types_are_400_naming_the_field() {
        let env = Env::new();
        assert!(bad(&env, &json!({"messages":[]})).contains("model"));
        assert!(bad(&env, &json!({"model":"m"})).contains("messages"));
        assert!(bad(&env, &json!({"model":"m","messages":{}})).contains("messages"));
        assert!(bad(&env, &json!({"model":7,"messages":[]})).contains("model"));
        let m = bad(&env, &simple(json!([{"role":"user","content":5}])));
        assert!(
            m.contains("messages.0.content") && m.contains("a number"),
            "{m}"
        );
        assert!(bad(&env, &json!({"model":"m","messages":[],"system":3})).contains("system"));
        assert!(bad(&env, &json!({"model":"m","messages":[],"tools":{}})).contains("tools"));
        assert!(
            bad(
                &env,
                &json!({"model":"m","messages":[],"stop_sequences":"x"})
            )
            .contains("stop_sequences")
        );
        let mut body = b"[1]".to_vec();
        assert!(translate(&mut body, &env.ctx()).is_err());
    }

    #[test]
    fn long_tool_names_are_shortened_upstream_and_restored() {
        let env = Env::new();
        let long = format!("mcp__plugin_server__{}", "very_long_tool_name_".repeat(4));
        let mut b = simple(json!([
            {"role":"user","content":"x"},
            {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":long,"input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok"}]}
        ]));
        b["tools"] = json!([{"name":long,"description":"d","input_schema":{"type":"object","properties":{}}}]);
        b["tool_choice"] = json!({"type":"tool","name":long});
        let p = env.plan(&b);
        let v = upstream_json(&p);
        let up = v["tools"][0]["name"].as_str().unwrap().to_owned();
        assert!(up.len() <= 64 && up != long);
        assert_eq!(v["input"][1]["name"], up);
        assert_eq!(v["tool_choice"]["name"], up);
        let f = run_deltas(
            &p,
            &[
                Delta::ToolCallStart {
                    index: 0,
                    call_id: "call_9",
                    name: &up,
                    custom: false,
                },
                Delta::ToolCallArgs {
                    index: 0,
                    fragment: "{}",
                },
                Delta::ToolCallDone {
                    index: 0,
                    call_id: "call_9",
                    name: &up,
                    namespace: None,
                    arguments: "{}",
                    custom: false,
                },
                Delta::Completed {
                    usage: Usage::default(),
                },
            ],
        );
        assert_eq!(f[2]["content_block"]["name"], long.as_str());
        let mut c = Collected::new();
        c.items.push(Item::ToolCall {
            call_id: "call_9".into(),
            name: up.clone(),
            namespace: None,
            arguments: "{}".into(),
            custom: false,
        });
        c.finish = Finish::Completed;
        let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
        assert_eq!(r["content"][0]["name"], long.as_str());
    }

    #[test]
    fn conversation_id_comes_from_header_then_metadata_then_a_hash() {
        let mut env = Env::new();
        let b = cc_body(first_turn());
        assert_eq!(
            env.plan(&b).upstream().conversation_id,
            "a31f3bca-a60d-4b01-935a-96d1911167bb"
        );
        env.headers.insert(
            "x-claude-code-session-id",
            HeaderValue::from_static("hdr-session"),
        );
        assert_eq!(env.plan(&b).upstream().conversation_id, "hdr-session");
        let env = Env::new();
        let plain =
            simple(json!([{"role":"user","content":"first"},{"role":"assistant","content":"a"}]));
        let id1 = env.plan(&plain).upstream().conversation_id.clone();
        let mut longer = plain.clone();
        longer["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role":"user","content":"more"}));
        assert_eq!(
            env.plan(&longer).upstream().conversation_id,
            id1,
            "stable as the history grows"
        );
        let other = simple(json!([{"role":"user","content":"other"}]));
        assert_ne!(env.plan(&other).upstream().conversation_id, id1);
        let mut meta = plain.clone();
        meta["metadata"] = json!({"user_id":"not json"});
        assert_eq!(env.plan(&meta).upstream().conversation_id, id1);
    }

    #[test]
    fn stop_sequences_speed_and_output_format() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["stop_sequences"] = json!(["END", ""]);
        b["speed"] = json!("fast");
        b["output_config"] = json!({"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"string"}}}}});
        let p = env.plan(&b);
        assert_eq!(p.stop_sequences, ["END".to_owned()]);
        let v = upstream_json(&p);
        assert_eq!(v["service_tier"], "priority");
        assert_eq!(v["text"]["format"]["type"], "json_schema");
        assert_eq!(
            v["text"]["format"]["schema"]["properties"]["a"]["type"],
            "string"
        );
        assert!(!v.to_string().contains("stop_sequences"));
    }

    #[test]
    fn large_objects_are_written_deterministically() {
        let env = Env::new();
        let mut props = serde_json::Map::new();
        for i in 0..50 {
            props.insert(format!("p{i:02}"), json!({"type":"string"}));
        }
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["tools"] = json!([{"name":"Big","input_schema":{"type":"object","properties":props}}]);
        let a = env.plan(&b).upstream().body();
        for _ in 0..5 {
            assert_eq!(env.plan(&b).upstream().body(), a);
        }
        let v: J = serde_json::from_slice(&a).unwrap();
        assert_eq!(
            v["tools"][0]["parameters"]["properties"]
                .as_object()
                .unwrap()
                .len(),
            50
        );
    }

    // ---- streaming -------------------------------------------------------------------

    #[test]
    fn text_stream_has_the_exact_event_sequence() {
        let env = Env::new();
        let p = env.plan(&simple(json!([{"role":"user","content":"hi"}])));
        let f = run_lines(
            &p,
            &[
                r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_0a1b","status":"in_progress","output":[]}}"#,
                r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"in_progress","content":[],"phase":"final_answer","role":"assistant"}}"#,
                r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
                r#"{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_9f","output_index":0,"content_index":0,"delta":"!","logprobs":[]}"#,
                r#"{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_9f","type":"message","status":"completed","content":[{"type":"output_text","text":"Hi!"}],"phase":"final_answer","role":"assistant"}}"#,
                r#"{"type":"response.completed","sequence_number":9,"response":{"id":"resp_0a1b","status":"completed","usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":1024},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":1246}}}"#,
            ],
        );
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:text",
                "text_delta0:Hi",
                "text_delta0:!",
                "stop0",
                "message_delta:end_turn",
                "message_stop"
            ]
        );
        let m = &f[0]["message"];
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(m["model"], "gpt-5.5");
        assert_eq!(m["content"], json!([]));
        assert_eq!(m["stop_reason"], J::Null);
        assert_eq!(m["usage"]["output_tokens"], 1);
        assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
        assert_eq!(f[2]["content_block"], json!({"type":"text","text":""}));
        assert_eq!(
            f[6],
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"input_tokens":210,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":12}})
        );
    }

    #[test]
    fn reasoning_commentary_and_tool_call_stream_like_claude_expects() {
        let env = Env::new();
        let mut b = cc_body(first_turn());
        b["thinking"] = json!({"type":"adaptive","display":"updates"});
        let p = env.plan(&b);
        let f = run_lines(&p, &stream_b());
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:thinking",
                "thinking_delta0:**Running a command**\n\nI'll run ",
                "thinking_delta0:echo.",
                "signature_delta0:<sig>",
                "stop0",
                "start1:text",
                "text_delta1:Running it now.",
                "stop1",
                "start2:tool_use",
                "input_json_delta2:{\"command\":\"echo ",
                "input_json_delta2:hi\"}",
                "stop2",
                "message_delta:tool_use",
                "message_stop",
            ]
        );
        assert_eq!(f[0]["message"]["model"], "claude-opus-5-5");
        assert_eq!(
            f[2]["content_block"],
            json!({"type":"thinking","thinking":"","signature":""})
        );
        let sig = f[5]["delta"]["signature"].as_str().unwrap();
        assert_eq!(open_signature(sig), Some(("rs_1".into(), "gAAAAA…".into())));
        assert_eq!(
            f.iter()
                .filter(|x| x["delta"]["type"] == "signature_delta")
                .count(),
            1
        );
        assert_eq!(
            f[10]["content_block"],
            json!({"type":"tool_use","id":"call_abc","name":"Bash","input":{}})
        );
        assert_eq!(f[14]["usage"]["input_tokens"], 234);
        assert_eq!(f[14]["usage"]["cache_read_input_tokens"], 1000);
        assert_eq!(f[14]["usage"]["output_tokens"], 40);
    }

    #[test]
    fn reasoning_parts_are_separated_and_hidden_without_thinking() {
        let env = Env::new();
        let lines = [
            r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":0}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":0,"delta":"a"}"#,
            r#"{"type":"response.reasoning_summary_part.added","output_index":0,"summary_index":1}"#,
            r#"{"type":"response.reasoning_summary_text.delta","output_index":0,"summary_index":1,"delta":"b"}"#,
            r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"rs_1","type":"reasoning","encrypted_content":"enc","summary":[{"text":"a"},{"text":"b"}]}}"#,
            r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"message","content":[{"type":"output_text","text":"ok"}]}}"#,
            r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
        ];
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["thinking"] = json!({"type":"enabled","budget_tokens":2000});
        let f = run_lines(&env.plan(&b), &lines);
        assert_eq!(
            describe(&f)[2..8],
            [
                "start0:thinking",
                "thinking_delta0:a",
                "thinking_delta0:\n\n",
                "thinking_delta0:b",
                "signature_delta0:<sig>",
                "stop0"
            ]
        );
        let f = run_lines(
            &env.plan(&simple(json!([{"role":"user","content":"x"}]))),
            &lines,
        );
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:text",
                "text_delta0:ok",
                "stop0",
                "message_delta:end_turn",
                "message_stop"
            ]
        );
    }

    #[test]
    fn parallel_tool_calls_are_sequential_blocks_and_empty_arguments_send_braces() {
        let env = Env::new();
        let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
        let f = run_lines(
            &p,
            &[
                r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":""}}"#,
                r#"{"type":"response.function_call_arguments.delta","output_index":0,"delta":"{\"command\":\"echo one\"}"}"#,
                r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","call_id":"call_1","name":"Bash","arguments":"{\"command\":\"echo one\"}"}}"#,
                r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","call_id":"call_2","name":"ListAgents","arguments":""}}"#,
                r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"function_call","call_id":"call_2","name":"ListAgents","arguments":""}}"#,
                r#"{"type":"response.output_item.done","output_index":2,"item":{"type":"function_call","call_id":"call_3","name":"Bash","arguments":"{\"command\":\"echo two\"}"}}"#,
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
            ],
        );
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:tool_use",
                "input_json_delta0:{\"command\":\"echo one\"}",
                "stop0",
                "start1:tool_use",
                "input_json_delta1:{}",
                "stop1",
                "start2:tool_use",
                "input_json_delta2:{\"command\":\"echo two\"}",
                "stop2",
                "message_delta:tool_use",
                "message_stop",
            ]
        );
        let a = assistant_from_frames(&f);
        assert_eq!(
            a["content"][1],
            json!({"type":"tool_use","id":"call_2","name":"ListAgents","input":{}})
        );
    }

    #[test]
    fn stop_sequences_cut_text_across_deltas() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["stop_sequences"] = json!(["STOP", "\n\nHuman:"]);
        let p = env.plan(&b);
        let t = |text| Delta::Text { index: 0, text };
        let f = run_deltas(
            &p,
            &[
                Delta::MessageStart {
                    index: 0,
                    phase: None,
                },
                t("Hello ST"),
                t("AR and S"),
                t("T"),
                t("OP tail"),
                t("more"),
                Delta::MessageDone { index: 0 },
                Delta::ToolCallStart {
                    index: 1,
                    call_id: "c",
                    name: "Bash",
                    custom: false,
                },
                Delta::ToolCallDone {
                    index: 1,
                    call_id: "c",
                    name: "Bash",
                    namespace: None,
                    arguments: "{}",
                    custom: false,
                },
                Delta::Completed {
                    usage: Usage::default(),
                },
            ],
        );
        let text = streamed_text(&f);
        assert_eq!(text, "Hello STAR and ");
        let last = &f[f.len() - 2];
        assert_eq!(
            last["delta"],
            json!({"stop_reason":"stop_sequence","stop_sequence":"STOP"})
        );
        assert!(!describe(&f).iter().any(|d| d.contains("tool_use")));
        // A partial match at the end of a message is flushed, not swallowed.
        let f = run_deltas(
            &p,
            &[
                t("abc\n\nHum"),
                Delta::MessageDone { index: 0 },
                Delta::Completed {
                    usage: Usage::default(),
                },
            ],
        );
        let text = streamed_text(&f);
        assert_eq!(text, "abc\n\nHum");
        assert_eq!(f[f.len() - 2]["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn incomplete_maps_to_max_tokens_or_refusal() {
        let env = Env::new();
        let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
        let f = run_deltas(
            &p,
            &[
                Delta::Text {
                    index: 0,
                    text: "partial",
                },
                Delta::Incomplete {
                    reason: Some("max_output_tokens"),
                    usage: Usage {
                        input: 9,
                        output: 7,
                        ..Usage::default()
                    },
                },
            ],
        );
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:text",
                "text_delta0:partial",
                "stop0",
                "message_delta:max_tokens",
                "message_stop"
            ]
        );
        let f = run_deltas(
            &p,
            &[Delta::Incomplete {
                reason: Some("content_filter"),
                usage: Usage::default(),
            }],
        );
        assert_eq!(f[2]["delta"]["stop_reason"], "refusal");
    }

    #[test]
    fn fail_writes_one_error_event_and_nothing_after() {
        let env = Env::new();
        let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
        let mut enc = p.encoder();
        let mut out = BytesMut::new();
        enc.begin(&mut out);
        enc.delta(
            &Delta::Text {
                index: 0,
                text: "hal",
            },
            &mut out,
        );
        enc.keepalive(&mut out);
        let err = Error::new(crate::error::ErrorKind::Overloaded, "Overloaded");
        enc.fail(&err, &mut out);
        let len = out.len();
        enc.delta(
            &Delta::Text {
                index: 0,
                text: "more",
            },
            &mut out,
        );
        enc.delta(
            &Delta::Completed {
                usage: Usage::default(),
            },
            &mut out,
        );
        enc.keepalive(&mut out);
        enc.fail(&err, &mut out);
        assert_eq!(out.len(), len);
        let f = frames(&out);
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:text",
                "text_delta0:hal",
                "ping",
                "stop0",
                "error"
            ]
        );
        assert_eq!(
            f[6],
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})
        );
    }

    #[test]
    fn web_search_streams_server_tool_blocks_and_citations() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["tools"] = json!([{"type":"web_search_20250305","name":"web_search"}]);
        let p = env.plan(&b);
        let f = run_lines(
            &p,
            &[
                r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"ws_014h","type":"web_search_call","status":"completed","action":{"type":"search","query":"hyper 1.0 release","sources":[{"type":"url","url":"https://hyper.rs/blog/","title":"hyper 1.0"}]}}}"#,
                r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"message","content":[]}}"#,
                r#"{"type":"response.output_text.delta","output_index":1,"delta":"hyper 1.0 is out"}"#,
                r#"{"type":"response.output_text.annotation.added","output_index":1,"annotation":{"type":"url_citation","url":"https://hyper.rs/blog/","title":"hyper 1.0","start_index":0,"end_index":9}}"#,
                r#"{"type":"response.output_item.done","output_index":1,"item":{"type":"message","content":[]}}"#,
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":2}}}"#,
            ],
        );
        assert_eq!(
            describe(&f),
            [
                "message_start",
                "ping",
                "start0:server_tool_use",
                "input_json_delta0:{\"query\":\"hyper 1.0 release\"}",
                "stop0",
                "start1:web_search_tool_result",
                "stop1",
                "start2:text",
                "text_delta2:hyper 1.0 is out",
                "citations_delta2:…",
                "stop2",
                "message_delta:end_turn",
                "message_stop",
            ]
        );
        assert_eq!(
            f[2]["content_block"],
            json!({"type":"server_tool_use","id":"srvtoolu_014h","name":"web_search","input":{}})
        );
        assert_eq!(
            f[5]["content_block"],
            json!({"type":"web_search_tool_result","tool_use_id":"srvtoolu_014h","content":[
                {"type":"web_search_result","url":"https://hyper.rs/blog/","title":"hyper 1.0","encrypted_content":"","page_age":null}]})
        );
        assert_eq!(
            f[9]["delta"]["citation"],
            json!({"type":"web_search_result_location","url":"https://hyper.rs/blog/","title":"hyper 1.0","cited_text":"hyper 1.0","encrypted_index":""})
        );
        assert_eq!(
            f[11]["usage"]["server_tool_use"],
            json!({"web_search_requests":1})
        );
    }

    #[test]
    fn output_for_one_byte_text_deltas_equals_whole_text() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["stop_sequences"] = json!(["zz"]);
        let p = env.plan(&b);
        let text = "naïve café — ünïcode z text zy";
        let mut pieces: Vec<Delta<'_>> = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = i + 1;
            while !text.is_char_boundary(j) {
                j += 1;
            }
            pieces.push(Delta::Text {
                index: 0,
                text: &text[i..j],
            });
            i = j;
        }
        pieces.push(Delta::Completed {
            usage: Usage::default(),
        });
        let f = run_deltas(&p, &pieces);
        let got = streamed_text(&f);
        assert_eq!(got, text);
    }

    // ---- render ----------------------------------------------------------------------

    #[test]
    fn render_builds_a_complete_message() {
        let env = Env::new();
        let mut b = cc_body(first_turn());
        b["stream"] = json!(false);
        b["thinking"] = json!({"type":"adaptive","display":"summarized"});
        let p = env.plan(&b);
        assert!(!p.stream());
        let c = collect(&stream_b());
        let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
        assert!(r["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(r["type"], "message");
        assert_eq!(r["role"], "assistant");
        assert_eq!(r["model"], "claude-opus-5-5");
        let sig = signature_envelope("rs_1", "gAAAAA…");
        assert_eq!(
            r["content"],
            json!([
                {"type":"thinking","thinking":"**Running a command**\n\nI'll run echo.","signature":sig},
                {"type":"text","text":"Running it now.","citations":null},
                {"type":"tool_use","id":"call_abc","name":"Bash","input":{"command":"echo hi"}}
            ])
        );
        assert_eq!(r["stop_reason"], "tool_use");
        assert_eq!(r["stop_sequence"], J::Null);
        assert_eq!(
            r["usage"],
            json!({"input_tokens":234,"cache_creation_input_tokens":0,"cache_read_input_tokens":1000,"output_tokens":40,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},
                "server_tool_use":null,"service_tier":"standard"})
        );
    }

    #[test]
    fn render_wraps_bad_arguments_and_honours_stop_sequences() {
        let env = Env::new();
        let mut b = simple(json!([{"role":"user","content":"x"}]));
        b["stop_sequences"] = json!(["###"]);
        let p = env.plan(&b);
        let mut c = Collected::new();
        c.items.push(Item::ToolCall {
            call_id: "c1".into(),
            name: "Bash".into(),
            namespace: None,
            arguments: "{not json".into(),
            custom: false,
        });
        c.items.push(Item::ToolCall {
            call_id: "c2".into(),
            name: "Bash".into(),
            namespace: None,
            arguments: "".into(),
            custom: false,
        });
        c.items.push(Item::Message {
            text: "keep ### drop".into(),
            refusal: String::new(),
            phase: None,
            citations: vec![],
        });
        c.items.push(Item::Message {
            text: "after".into(),
            refusal: String::new(),
            phase: None,
            citations: vec![],
        });
        c.finish = Finish::Completed;
        let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
        assert_eq!(r["content"][0]["input"], json!({"_raw":"{not json"}));
        assert_eq!(r["content"][1]["input"], json!({}));
        assert_eq!(r["content"][2]["text"], "keep ");
        assert_eq!(r["content"].as_array().unwrap().len(), 3);
        assert_eq!(r["stop_reason"], "stop_sequence");
        assert_eq!(r["stop_sequence"], "###");
        let mut c = Collected::new();
        c.finish = Finish::Incomplete(Some("max_output_tokens".into()));
        let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
        assert_eq!(r["stop_reason"], "max_tokens");
        assert_eq!(r["content"], json!([]));
    }

    #[test]
    fn render_web_search_with_citations() {
        let env = Env::new();
        let p = env.plan(&simple(json!([{"role":"user","content":"x"}])));
        let mut c = Collected::new();
        c.items.push(Item::WebSearch {
            id: "ws_1".into(),
            query: Some("q".into()),
            sources: vec![("https://a.example".into(), None)],
        });
        c.items.push(Item::Message {
            text: "héllo world".into(),
            refusal: String::new(),
            phase: None,
            citations: vec![OwnedCitation {
                url: "https://a.example".into(),
                title: Some("A".into()),
                start: 0,
                end: 5,
            }],
        });
        c.finish = Finish::Completed;
        let r: J = serde_json::from_slice(&p.render(&c)).unwrap();
        assert_eq!(
            r["content"][0],
            json!({"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}})
        );
        assert_eq!(r["content"][1]["content"][0]["title"], "https://a.example");
        assert_eq!(r["content"][2]["citations"][0]["cited_text"], "héllo");
        assert_eq!(
            r["usage"]["server_tool_use"],
            json!({"web_search_requests":1})
        );
        assert_eq!(r["stop_reason"], "end_turn");
    }

    // ---- count_tokens ----------------------------------------------------------------

    #[test]
    fn count_tokens_is_within_five_percent_of_the_exact_count() {
        let env = Env::new();
        let mut msgs = first_turn();
        msgs.as_array_mut().unwrap().extend([
            json!({"role":"assistant","content":[{"type":"text","text":"I'll run a tool."}, bash_call("toolu_1","ls -la /work && cat README.md")]}),
            json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"total 8\ndrwxr-xr-x 2 me me 4096 .\n-rw-r--r-- 1 me me 120 README.md\n# Project\nA proxy that speaks two protocols."}]}),
        ]);
        let body = cc_body(msgs);
        let plan = env.plan(&body);
        let v = upstream_json(&plan);
        let mut text = String::new();
        text.push_str(v["instructions"].as_str().unwrap());
        for item in v["input"].as_array().unwrap() {
            for part in item["content"].as_array().into_iter().flatten() {
                text.push('\n');
                text.push_str(part["text"].as_str().unwrap_or(""));
            }
            for k in ["name", "arguments", "output"] {
                if let Some(s) = item[k].as_str() {
                    text.push('\n');
                    text.push_str(s);
                }
            }
        }
        text.push('\n');
        text.push_str(&v["tools"].to_string());
        let exact = crate::tokens::count(&text) as f64;
        let r = env.count(&body);
        let n = r["input_tokens"].as_u64().unwrap() as f64;
        assert!(
            (n - exact).abs() / exact < 0.05,
            "count {n} vs exact {exact}"
        );
        assert_eq!(r["context_window"], 272_000);
        assert_eq!(r["auto_compact_token_limit"], 244_800);
    }

    #[test]
    fn count_tokens_never_rejects_partial_bodies() {
        let mut env = Env::new();
        env.config.auto_compact_token_limit = Some(180_000);
        env.config.context_window = Some(200_000);
        let r = env.count(&json!({"model":"claude-opus-5-5","messages":[{"role":"user","content":"\nYou are an agent working with the user toward their goals."}],"tools":[]}));
        assert!(r["input_tokens"].as_u64().unwrap() > 5);
        assert_eq!(r["context_window"], 200_000);
        assert_eq!(r["auto_compact_token_limit"], 180_000);
        for body in [
            json!({"model":"m","tools":[{"name":"Bash","description":"Run","input_schema":{"type":"object"}}]}),
            json!({"messages":[{"role":"user","content":"foo"}]}),
            json!({"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"nope","content":"x"}]}]}),
            json!({"model":"m","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"!!"}}]}]}),
            json!({"model":"m","messages":[],"tools":[{"type":"bash_20250124","name":"bash"}],"thinking":{"type":"enabled","budget_tokens":2048}}),
            json!({"model":"m","messages":[{"role":"user","content":5}],"stream":"yes"}),
        ] {
            let r = env.count(&body);
            assert!(r["input_tokens"].as_u64().unwrap() >= 1, "{body}");
        }
    }
}
