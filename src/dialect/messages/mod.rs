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
//!
//! Layout: `request` (Messages JSON → `UpstreamRequest`, and `count_tokens`), `stream`
//! (`Delta` → the event sequence), `render` (the non-stream `Message` and the answer pieces
//! the stream shares); this file holds the plan and the signature envelope.

mod render;
mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{count_tokens, translate};
pub use stream::MessagesEncoder;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::dialect::{Plan, PlanCore};
use crate::error::Protocol;
use crate::upstream::collect::Collected;
use crate::upstream::request::ToolNames;

/// Marks our own thinking signatures (version 1 of the envelope).
const SIGNATURE_PREFIX: &str = "cxa1.";

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
        MessagesEncoder::new(self)
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        render::render(self, c)
    }
}
