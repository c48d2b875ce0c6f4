//! `Translate<E>`: the streaming response body.
//!
//! Owns: the per-stream state machine that sits between hyper's upstream body and the
//! client. Each poll drains every upstream frame that is already available, parses and
//! translates all complete events in one pass, and hands hyper the translated bytes as one
//! frame — coalescing what has arrived, never waiting for more. It also owns keepalive pings
//! while the upstream is silent, the idle timeout, turning a mid-stream failure (upstream
//! error event, transport error, EOF without a terminal event) into one protocol-correct
//! error frame, and the response-head hold (`poll_prelude`). Dropping it (client gone) drops
//! the upstream body and the live-stream guard.
//!
//! Does not own: sending the request, retries and status errors (`server::pipeline`), the
//! parsing and decoding of upstream events (`upstream::events::Pump`, shared with
//! non-stream aggregation), or wire formats (`dialect`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::dialect::Encoder;
use crate::error::{Error, ErrorKind, Protocol};
use crate::upstream::events::{Delta, Pump};
use crate::upstream::failure::{self, PromptSize};
use crate::upstream::meter::Meter;
use crate::upstream::stream::Upstream;

/// First capacity of the per-stream output buffer (it grows to what a wake-up produces).
const OUT_CAPACITY: usize = 1024;

/// The most translated bytes handed to the client in one frame. Past it the body stops
/// reading the upstream until the frame is written, so a client that reads slowly holds
/// back the upstream (flow control) instead of making the proxy buffer a whole answer.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Counts live streams; the guard decrements on drop, whatever way the stream ends.
#[derive(Default)]
pub struct StreamCounter {
    live: AtomicUsize,
}

impl StreamCounter {
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Take a slot if fewer than `limit` are live.
    pub fn try_acquire(self: &Arc<Self>, limit: usize) -> Option<StreamGuard> {
        let prev = self.live.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamGuard {
            counter: Arc::clone(self),
            permit: None,
        })
    }
}

/// One live stream, and the account window slot it holds upstream.
pub struct StreamGuard {
    counter: Arc<StreamCounter>,
    permit: Option<crate::admission::Permit>,
}

impl StreamGuard {
    /// Hold an account's window slot until the stream ends.
    pub fn hold(&mut self, permit: crate::admission::Permit) {
        self.permit = Some(permit);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.counter.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stream timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub keepalive: Duration,
    pub idle_timeout: Duration,
}

/// Outcome of the head-hold phase.
#[derive(Debug)]
pub enum Prelude {
    /// Output started (or the response finished well): send the 200 and stream.
    Commit,
    /// The upstream failed before any output: answer with an HTTP error (or retry).
    Failed(Error),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Streaming,
    /// A terminal event (or a failure) was written; flush `out`, then end.
    Finished,
    Ended,
}

/// What [`Translate`] reads: an upstream response body ([`Upstream`] in the server; any
/// body of `Bytes` frames, e.g. in tests that drive the real translator from memory).
pub trait Source:
    http_body::Body<Data = Bytes, Error: std::error::Error + 'static> + Unpin + Send + 'static
{
}

impl<T> Source for T where
    T: http_body::Body<Data = Bytes, Error: std::error::Error + 'static> + Unpin + Send + 'static
{
}

/// The translating body. `E` writes the client's protocol; `B` is the upstream body.
pub struct Translate<E: Encoder, B: Source = Upstream> {
    upstream: Option<B>,
    /// The parse/decode loop shared with non-stream aggregation.
    events: Pump,
    encoder: E,
    out: BytesMut,
    phase: Phase,
    protocol: Protocol,
    prompt: PromptSize,
    timing: Timing,
    last_sent: Instant,
    last_upstream: Instant,
    timer: Pin<Box<Sleep>>,
    /// Set by a failure seen while the head is still held.
    held_failure: Option<Error>,
    /// Any output item or text seen (ends the head hold).
    output_started: bool,
    /// Collects the answer for the exchange store (`previous_response_id`), when kept.
    recorder: Option<Recorder>,
    _guard: Option<StreamGuard>,
    /// Usage and the ending error, for the request log.
    meter: Option<Arc<Meter>>,
}

/// Collects a streamed answer and hands it over once, when the stream completes.
pub struct Recorder {
    collected: crate::upstream::collect::Collected,
    done: Box<dyn FnOnce(&crate::upstream::collect::Collected) + Send>,
}

impl Recorder {
    pub fn new(done: Box<dyn FnOnce(&crate::upstream::collect::Collected) + Send>) -> Self {
        Recorder {
            collected: crate::upstream::collect::Collected::new(),
            done,
        }
    }
}

impl<E: Encoder, B: Source> Translate<E, B> {
    pub fn new(
        upstream: B,
        mut encoder: E,
        protocol: Protocol,
        prompt: PromptSize,
        timing: Timing,
    ) -> Self {
        let now = Instant::now();
        // Small on purpose: `split().freeze()` hands each frame to hyper, and a later
        // `reserve` allocates at least this much again while hyper still holds the last
        // frame; 8 KB here was 8–16 KB of RSS per idle stream (massif, 10,000 streams).
        let mut out = BytesMut::with_capacity(OUT_CAPACITY);
        encoder.begin(&mut out);
        Translate {
            upstream: Some(upstream),
            events: Pump::new(),
            encoder,
            out,
            phase: Phase::Streaming,
            protocol,
            prompt,
            timing,
            last_sent: now,
            last_upstream: now,
            timer: Box::pin(tokio::time::sleep_until(now + timing.keepalive)),
            held_failure: None,
            output_started: false,
            recorder: None,
            _guard: None,
            meter: None,
        }
    }

    /// Parse and translate every complete event in the parser. Returns true when a
    /// terminal event was handled.
    fn process(&mut self, committed: bool) -> bool {
        let Translate {
            events,
            encoder,
            out,
            protocol,
            prompt,
            held_failure,
            output_started,
            meter,
            recorder,
            ..
        } = self;
        loop {
            let ev = match events.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return false,
                Err(err) => {
                    if committed && let Some(m) = meter {
                        m.record_error(&err);
                    }
                    Self::fail_into(encoder, out, held_failure, committed, err);
                    return true;
                }
            };
            encoder.raw(ev.event, ev.data, out);
            let mut failure: Option<Error> = None;
            let mut terminal = false;
            let decoded = ev.decode(|d| {
                if d.is_terminal()
                    && let Some(m) = meter
                {
                    m.record_delta(d);
                }
                match d {
                    Delta::Failed { code, message, .. } | Delta::Error { code, message } => {
                        let window = prompt.window;
                        let tokens = prompt.tokens;
                        failure = Some(failure::from_terminal(*code, *message, *protocol, || {
                            PromptSize { tokens, window }
                        }));
                    }
                    Delta::Created { .. } => {
                        if let Some(r) = recorder.as_mut() {
                            r.collected.push(d);
                        }
                        encoder.delta(d, out)
                    }
                    _ => {
                        *output_started = true;
                        terminal |= d.is_terminal();
                        if let Some(r) = recorder.as_mut() {
                            r.collected.push(d);
                        }
                        encoder.delta(d, out);
                    }
                }
            });
            if let Err(err) = decoded {
                failure = Some(err);
            }
            if let Some(err) = failure {
                // A failure while the head is held goes back to the pipeline (which may retry).
                if committed && let Some(m) = meter {
                    m.record_error(&err);
                }
                Self::fail_into(encoder, out, held_failure, committed, err);
                return true;
            }
            if terminal {
                if let Some(r) = recorder.take() {
                    (r.done)(&r.collected);
                }
                return true;
            }
            if !committed && *output_started {
                // End of the head hold: the rest of this read is translated after the
                // commit (`poll_frame` drains the parser first), so a failure that follows
                // output in the same read is an in-stream error, as if it came later.
                return false;
            }
        }
    }

    fn fail_into(
        encoder: &mut E,
        out: &mut BytesMut,
        held: &mut Option<Error>,
        committed: bool,
        err: Error,
    ) {
        if committed {
            encoder.fail(&err, out);
        } else {
            *held = Some(err);
        }
    }

    fn fail(&mut self, committed: bool, err: Error) {
        if committed && let Some(m) = &self.meter {
            m.record_error(&err);
        }
        Self::fail_into(
            &mut self.encoder,
            &mut self.out,
            &mut self.held_failure,
            committed,
            err,
        );
        self.phase = Phase::Finished;
    }

    /// Drain every upstream frame available now. Returns `Poll::Pending` only when nothing
    /// at all happened; `Ready(())` when bytes were processed or the stream finished.
    fn pump(&mut self, cx: &mut Context<'_>, committed: bool) -> Poll<()> {
        let mut progressed = false;
        while self.phase == Phase::Streaming
            && (committed || !self.output_started)
            && self.out.len() < MAX_FRAME_BYTES
        {
            let Some(upstream) = self.upstream.as_mut() else {
                break;
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    progressed = true;
                    if let Ok(data) = frame.into_data() {
                        self.last_upstream = Instant::now();
                        self.events.push(&data);
                        if self.process(committed) {
                            self.phase = Phase::Finished;
                            self.release_upstream();
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    progressed = true;
                    self.upstream = None;
                    let err = Error::new(
                        ErrorKind::BadGateway,
                        format!(
                            "upstream connection failed mid-stream: {}",
                            crate::upstream::client::error_chain(&e)
                        ),
                    );
                    self.fail(committed, err);
                }
                Poll::Ready(None) => {
                    progressed = true;
                    self.upstream = None;
                    let terminal = self.finish_parser(committed);
                    if !terminal && self.phase == Phase::Streaming {
                        self.fail(committed, failure::incomplete_stream());
                    }
                    self.phase = Phase::Finished;
                }
                Poll::Pending => break,
            }
        }
        if progressed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// At EOF: terminate a final unterminated event (tolerant, like `SseParser::finish`)
    /// and process it.
    fn finish_parser(&mut self, committed: bool) -> bool {
        self.events.end();
        self.process(committed)
    }

    /// After a terminal event the upstream normally has only its chunk terminator left;
    /// read it so the connection returns to the pool, without holding the client.
    fn release_upstream(&mut self) {
        if let Some(mut body) = self.upstream.take() {
            tokio::spawn(async move {
                let drain = async {
                    while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            });
        }
    }

    /// The head-hold phase: read until output starts, the response ends, or it fails.
    pub fn poll_prelude(&mut self, cx: &mut Context<'_>) -> Poll<Prelude> {
        loop {
            if let Some(err) = self.held_failure.take() {
                self.phase = Phase::Ended;
                return Poll::Ready(Prelude::Failed(err));
            }
            if self.output_started || self.phase != Phase::Streaming {
                return Poll::Ready(Prelude::Commit);
            }
            if self.pump(cx, false).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Attach the live-stream slot (held for as long as the client reads the stream).
    /// Report usage and the ending error to the request log.
    pub fn with_meter(mut self, meter: Arc<Meter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Keep the completed answer (for `previous_response_id`).
    pub fn with_recorder(mut self, recorder: Option<Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    pub fn with_guard(mut self, guard: Option<StreamGuard>) -> Self {
        self._guard = guard;
        self
    }
}

impl<E: Encoder, B: Source> Body for Translate<E, B> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.phase == Phase::Streaming && this.process(true) {
            this.phase = Phase::Finished;
            this.release_upstream();
        }
        loop {
            if this.phase == Phase::Streaming {
                let _ = this.pump(cx, true);
            }
            if !this.out.is_empty() {
                this.last_sent = Instant::now();
                let bytes = this.out.split().freeze();
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match this.phase {
                Phase::Finished | Phase::Ended => {
                    this.phase = Phase::Ended;
                    return Poll::Ready(None);
                }
                Phase::Streaming => {}
            }
            // Nothing to send: act on an elapsed deadline, else sleep until the next one.
            let now = Instant::now();
            let idle_at = this.last_upstream + this.timing.idle_timeout;
            let keepalive_at = this.last_sent + this.timing.keepalive;
            if now >= idle_at {
                let secs = this.timing.idle_timeout.as_secs();
                let err = Error::new(
                    ErrorKind::Timeout,
                    format!("The upstream sent nothing for {secs} s; the stream was abandoned."),
                );
                this.upstream = None;
                this.fail(true, err);
                continue;
            }
            if now >= keepalive_at {
                this.encoder.keepalive(&mut this.out);
                continue;
            }
            // Re-arm only when the deadline moved: resetting to "now" on every poll would
            // postpone a timer that tokio rounds up to the next millisecond forever.
            let at = keepalive_at.min(idle_at);
            if this.timer.deadline() != at {
                this.timer.as_mut().reset(at);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Finished with nothing left to hand over: the next poll returns `None`.
        self.out.is_empty() && matches!(self.phase, Phase::Finished | Phase::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;
    use crate::dialect::{Plan, chat, translate_json};

    /// An upstream that has everything buffered already.
    struct Buffered(VecDeque<Bytes>);

    impl Body for Buffered {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    /// A streaming Chat Completions body translating `reads`, with no deadline in reach.
    fn chat_stream(reads: VecDeque<Bytes>) -> Pin<Box<Translate<impl Encoder, Buffered>>> {
        let plan = translate_json(
            chat::translate,
            &serde_json::json!({"model": "gpt-5.5", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
            &http::HeaderMap::new(),
        )
        .expect("a valid request");
        let timing = Timing {
            keepalive: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(3600),
        };
        let prompt = PromptSize {
            tokens: 1,
            window: 272_000,
        };
        Box::pin(Translate::new(
            Buffered(reads),
            plan.encoder(),
            Protocol::OpenAi,
            prompt,
            timing,
        ))
    }

    #[tokio::test]
    async fn the_body_says_it_is_over_with_its_last_frame() {
        let events: VecDeque<Bytes> = [
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"hello\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",\"output\":[]}}\n\n",
        ]
        .into_iter()
        .map(Bytes::from)
        .collect();
        let mut body = chat_stream(events);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut text = Vec::new();
        while !body.is_end_stream() {
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    text.extend_from_slice(&frame.into_data().unwrap_or_default())
                }
                other => panic!("a frame before the end was announced, got {other:?}"),
            }
        }
        let text = String::from_utf8(text).unwrap_or_default();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[tokio::test]
    async fn a_frame_holds_at_most_max_frame_bytes_however_much_the_upstream_buffered() {
        let delta = format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"{}\"}}\n\n",
            "x".repeat(1000)
        );
        let mut reads = VecDeque::new();
        reads.push_back(Bytes::from_static(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n",
        ));
        for _ in 0..4000 {
            reads.push_back(Bytes::from(delta.clone()));
        }
        let mut body = chat_stream(reads);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut total = 0;
        let mut frames = 0;
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            let n = frame.into_data().map_or(0, |d| d.len());
            // One event's output may cross the line; never much more.
            assert!(n <= MAX_FRAME_BYTES + 4096, "a frame of {n} bytes");
            total += n;
            frames += 1;
        }
        assert!(total > 4_000_000, "everything arrived: {total}");
        assert!(
            frames >= total / (MAX_FRAME_BYTES + 4096),
            "{frames} frames"
        );
    }
}
