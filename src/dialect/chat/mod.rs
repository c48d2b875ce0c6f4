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
//!
//! Layout: `request` (Chat JSON → `UpstreamRequest`), `stream` (`Delta` →
//! `chat.completion.chunk` frames), `render` (the non-stream `chat.completion`). This file
//! holds the plan: its `PlanCore` and render's `Answer` (how the answer is written), both
//! filled in by `request`. The files depend one way: this file on the others, `request` and
//! `stream` on `render`; none uses this file.

mod render;
mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::ChatEncoder;

use crate::dialect::{Ctx, Plan, PlanCore, unix_now};
use crate::error::{Error, Protocol};
use crate::upstream::collect::Collected;
use crate::upstream::request::UpstreamRequest;
use render::Answer;

/// A translated Chat request and everything needed to answer it.
pub struct ChatPlan {
    /// The request, the client's model (echoed in every answer), chaining and keeping.
    core: PlanCore,
    answer: Answer,
}

/// Translate a Chat Completions request body (parsed in place).
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<ChatPlan, Error> {
    let (core, answer) = request::translate(body, ctx)?;
    Ok(ChatPlan { core, answer })
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
        ChatEncoder::new(&self.core, &self.answer, &self.answer.id, unix_now())
    }

    fn render(&self, c: &Collected) -> Vec<u8> {
        render::render(&self.core, &self.answer, c, &self.answer.id, unix_now())
    }

    fn upstream_mut(&mut self) -> Option<&mut UpstreamRequest> {
        Some(&mut self.core.upstream)
    }
}
