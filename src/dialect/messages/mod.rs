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
//! the stream shares). This file holds the plan: its `PlanCore` and render's `Answer` (how
//! the answer is written), both filled in by `request`. The files depend one way: this file
//! on the others, `request` and `stream` on `render`; none uses this file.

mod render;
mod request;
mod stream;
#[cfg(test)]
mod tests;

#[cfg(feature = "internals")]
pub use render::signature_envelope;
pub use request::count_tokens;
pub use stream::MessagesEncoder;

use crate::dialect::{Ctx, Plan, PlanCore};
use crate::error::{Error, Protocol};
use crate::upstream::collect::Collected;
use render::Answer;

/// A translated Messages request.
pub struct MessagesPlan {
    /// The request and the client's model (echoed in answers); never chained or kept.
    core: PlanCore,
    answer: Answer,
}

/// Translate a `POST /v1/messages` body.
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<MessagesPlan, Error> {
    let (core, answer) = request::build(body, ctx, false)?;
    Ok(MessagesPlan { core, answer })
}

impl Plan for MessagesPlan {
    type Encoder = MessagesEncoder;

    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }

    fn core(&self) -> &PlanCore {
        &self.core
    }

    fn encoder(&self) -> MessagesEncoder {
        MessagesEncoder::new(&self.core, &self.answer)
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        render::render(&self.core, &self.answer, c)
    }
}
