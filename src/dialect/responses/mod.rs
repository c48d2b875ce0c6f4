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
//!
//! Layout: `request` (the public request → `UpstreamRequest`), `stream` (the forwarding
//! encoder and the tool-name restoring edits), `render` (the final Response object). This
//! file holds the plan: its `PlanCore` and render's `Answer` (how the answer is written),
//! both filled in by `request`. The files depend one way: this file on the others,
//! `request` on `render`; none uses this file.

mod render;
mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use request::previous_response_not_found;
pub use stream::ResponsesEncoder;

use crate::dialect::{Ctx, KeepAs, Plan, PlanCore, unix_now};
use crate::error::{Error, Protocol};
use crate::upstream::collect::Collected;
use crate::upstream::request::UpstreamRequest;
use render::Answer;

/// A translated Responses request and everything needed to answer it.
pub struct ResponsesPlan {
    /// The request, the client's model (echoed in the non-stream answer), chaining and
    /// keeping (under the backend's response id, unless `store: false`).
    core: PlanCore,
    answer: Answer,
}

/// Translate a Responses request body (parsed in place).
pub fn translate(body: &mut [u8], ctx: &Ctx<'_>) -> Result<ResponsesPlan, Error> {
    let (core, answer) = request::translate(body, ctx)?;
    Ok(ResponsesPlan { core, answer })
}

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
        ResponsesEncoder::new(self.answer.renamed.then(|| self.answer.names.clone()))
    }

    fn render(&self, collected: &Collected) -> Vec<u8> {
        render::render(&self.core, &self.answer, collected, unix_now())
    }

    fn upstream_mut(&mut self) -> Option<&mut UpstreamRequest> {
        Some(&mut self.core.upstream)
    }
}
