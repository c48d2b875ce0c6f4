//! SSE output: a writer that frames Responses events (`event: <type>\ndata: <json>\n\n`,
//! `sequence_number` counted here) into a list of steps, and the HTTP body that plays
//! the steps out without a task or channel: one frame per event (yielding between
//! frames so each is flushed as its own chunk) or one frame per burst, with pauses and
//! an abrupt cut.
//!
//! Send-time stamps (`EMU:stamp`, for the load harness): a delta whose text carries
//! [`STAMP_PLACEHOLDER`] is kept as a [`Step::Stamped`]; when the body hands that step to
//! hyper, the sixteen zeros are overwritten with [`clock_ns`], so a client in the
//! same process measures receive − send per chunk on one monotonic clock.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;

use super::accounts::OpenStream;
use super::config::Chunking;
use super::util::clock_ns;

/// Marker + sixteen digits of a send-time stamp; the digits are written at send time.
pub const STAMP_PLACEHOLDER: &str = "T@0000000000000000";

/// One step of a scripted body.
pub(super) enum Step {
    Data(Bytes),
    /// Event bytes with stamp digits at these offsets, filled in when the step is sent.
    Stamped(Vec<u8>, Vec<usize>),
    Pause(Duration),
    /// Hold until the gate opens (`EMU:gate`).
    Gate(tokio::sync::watch::Receiver<bool>),
    /// End the body with an error: hyper drops the connection without a terminal chunk.
    Cut,
}

/// Builds the steps of one SSE answer.
pub(super) struct Sse {
    seq: u64,
    steps: Vec<Step>,
    buf: Vec<u8>,
    /// Per-request chunking (`EMU:coalesce`, `EMU:perevent`); `None`: the emulator's.
    pub(super) chunking: Option<Chunking>,
}

impl Sse {
    pub(super) fn new() -> Sse {
        Sse {
            seq: 0,
            steps: Vec::with_capacity(32),
            buf: Vec::with_capacity(256),
            chunking: None,
        }
    }

    /// Like [`Sse::event`], for a delta event: stamp placeholders in it are filled at send time.
    pub(super) fn delta_event(&mut self, ty: &str, fields: &Value) {
        self.event(ty, fields);
        self.stamp_last();
    }

    /// Turns the last data step into a stamped step if it carries stamp placeholders.
    fn stamp_last(&mut self) {
        let Some(Step::Data(b)) = self.steps.last() else {
            return;
        };
        let at: Vec<usize> = memchr::memmem::find_iter(b, STAMP_PLACEHOLDER.as_bytes())
            .map(|i| i + 2)
            .collect();
        if at.is_empty() {
            return;
        }
        let bytes = b.to_vec();
        if let Some(last) = self.steps.last_mut() {
            *last = Step::Stamped(bytes, at);
        }
    }

    /// Writes one event: `fields` must be a JSON object; `type` and `sequence_number` go first.
    pub(super) fn event(&mut self, ty: &str, fields: &Value) {
        self.head(ty);
        let at = self.buf.len();
        let _ = serde_json::to_writer(&mut self.buf, fields);
        // Splice the object's opening brace into a comma after the head.
        if matches!(self.buf.get(at..), Some(b"{}") | Some(b"null")) {
            self.buf.truncate(at);
            self.buf.extend_from_slice(b"}\n\n");
        } else {
            if let Some(b) = self.buf.get_mut(at) {
                *b = b',';
            }
            self.buf.extend_from_slice(b"\n\n");
        }
        self.push_buf();
    }

    /// Fast path for the hot text event: no intermediate `Value`.
    pub(super) fn text_delta(&mut self, item_id: &str, output_index: usize, delta: &str) {
        self.head("response.output_text.delta");
        self.buf.extend_from_slice(b",\"item_id\":");
        let _ = serde_json::to_writer(&mut self.buf, item_id);
        self.buf.extend_from_slice(b",\"output_index\":");
        self.buf
            .extend_from_slice(output_index.to_string().as_bytes());
        self.buf
            .extend_from_slice(b",\"content_index\":0,\"delta\":");
        let _ = serde_json::to_writer(&mut self.buf, delta);
        self.buf.extend_from_slice(b",\"logprobs\":[]}\n\n");
        self.push_buf();
        self.stamp_last();
    }

    fn head(&mut self, ty: &str) {
        self.buf.clear();
        self.buf.extend_from_slice(b"event: ");
        self.buf.extend_from_slice(ty.as_bytes());
        self.buf.extend_from_slice(b"\ndata: {\"type\":\"");
        self.buf.extend_from_slice(ty.as_bytes());
        self.buf.extend_from_slice(b"\",\"sequence_number\":");
        self.buf.extend_from_slice(self.seq.to_string().as_bytes());
        self.seq += 1;
    }

    fn push_buf(&mut self) {
        self.steps
            .push(Step::Data(Bytes::copy_from_slice(&self.buf)));
    }

    pub(super) fn pause(&mut self, d: Duration) {
        self.steps.push(Step::Pause(d));
    }

    pub(super) fn gate(&mut self, g: tokio::sync::watch::Receiver<bool>) {
        self.steps.push(Step::Gate(g));
    }

    pub(super) fn cut(&mut self) {
        self.steps.push(Step::Cut);
    }

    /// The steps for the WebSocket transport: each event's `data` JSON alone (one text
    /// frame each, no SSE framing), pauses, gates and the cut as they are.
    pub(super) fn into_ws_steps(self) -> VecDeque<Step> {
        self.steps
            .into_iter()
            .map(|step| match step {
                Step::Data(b) => {
                    let (from, to) = sse_data_span(&b);
                    Step::Data(b.slice(from..to))
                }
                Step::Stamped(b, at) => {
                    let (from, to) = sse_data_span(&b);
                    let json = b.get(from..to).unwrap_or_default().to_vec();
                    Step::Stamped(json, at.into_iter().map(|i| i - from).collect())
                }
                other => other,
            })
            .collect()
    }

    /// The body; `live` and `open` (the account's open-stream slot) are released when it
    /// is dropped.
    pub(super) fn into_body(
        self,
        chunking: Chunking,
        live: LiveStream,
        open: Option<OpenStream>,
    ) -> ScriptBody {
        ScriptBody::new(self.steps, self.chunking.unwrap_or(chunking), live, open)
    }
}

/// Counts one SSE body in [`super::Emulator::live_streams`] until it is dropped (played out,
/// or abandoned because the client hung up): tests observe upstream cancellation with it.
/// Also counts the body bytes handed to hyper (`Stats::sse_bytes_sent`): a client that
/// stops reading stops that count once flow control and buffers are full.
pub(super) struct LiveStream(Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicU64>);

impl LiveStream {
    pub(super) fn new(
        counter: &Arc<AtomicUsize>,
        sent: &Arc<std::sync::atomic::AtomicU64>,
    ) -> LiveStream {
        counter.fetch_add(1, Ordering::AcqRel);
        LiveStream(Arc::clone(counter), Arc::clone(sent))
    }

    pub(super) fn sent(&self, n: usize) {
        self.1.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Plays out scripted steps.
pub(super) struct ScriptBody {
    steps: VecDeque<Step>,
    /// A pause or a gate being waited for.
    sleep: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    per_event: bool,
    yield_next: bool,
    live: LiveStream,
    /// The account's open-stream slot: released as soon as the last frame (or the cut)
    /// is handed over, so a client can never see the end before the slot is free.
    open: Option<OpenStream>,
}

impl ScriptBody {
    fn new(
        steps: Vec<Step>,
        chunking: Chunking,
        live: LiveStream,
        open: Option<OpenStream>,
    ) -> ScriptBody {
        let per_event = chunking == Chunking::PerEvent;
        let steps: VecDeque<Step> = if per_event {
            steps.into()
        } else {
            let mut merged = VecDeque::with_capacity(4);
            let mut burst: Vec<u8> = Vec::new();
            let mut stamps: Vec<usize> = Vec::new();
            let flush = |merged: &mut VecDeque<Step>,
                         burst: &mut Vec<u8>,
                         stamps: &mut Vec<usize>| {
                if stamps.is_empty() {
                    if !burst.is_empty() {
                        merged.push_back(Step::Data(Bytes::from(std::mem::take(burst))));
                    }
                } else {
                    merged.push_back(Step::Stamped(std::mem::take(burst), std::mem::take(stamps)));
                }
            };
            for step in steps {
                match step {
                    Step::Data(b) => burst.extend_from_slice(&b),
                    Step::Stamped(b, at) => {
                        let base = burst.len();
                        stamps.extend(at.into_iter().map(|i| i + base));
                        burst.extend_from_slice(&b);
                    }
                    other => {
                        flush(&mut merged, &mut burst, &mut stamps);
                        merged.push_back(other);
                    }
                }
            }
            flush(&mut merged, &mut burst, &mut stamps);
            merged
        };
        ScriptBody {
            steps,
            sleep: None,
            per_event,
            yield_next: false,
            live,
            open,
        }
    }

    /// The next frame of the script (the body of [`EmuBody::Script`]).
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            if self.yield_next {
                // Returning Pending makes hyper flush what it has buffered, so every event
                // leaves as its own chunk and write, like the real backend.
                self.yield_next = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let step = self.steps.pop_front();
            if self.steps.is_empty() {
                self.open = None;
            }
            match step {
                None => return Poll::Ready(None),
                Some(Step::Data(b)) => {
                    self.live.sent(b.len());
                    self.yield_next = self.per_event && !self.steps.is_empty();
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Step::Stamped(mut b, at)) => {
                    fill_stamps(&mut b, &at);
                    self.yield_next = self.per_event && !self.steps.is_empty();
                    self.live.sent(b.len());
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(b)))));
                }
                Some(Step::Pause(d)) => self.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Gate(mut g)) => {
                    self.sleep = Some(Box::pin(async move {
                        let _ = g.wait_for(|open| *open).await;
                    }))
                }
                Some(Step::Cut) => {
                    self.open = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "emulator: stream cut (EMU:cut)",
                    ))));
                }
            }
        }
    }

    fn is_done(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }
}

/// Where the JSON of one `event: …\ndata: <json>\n\n` block lies.
fn sse_data_span(b: &[u8]) -> (usize, usize) {
    let from = memchr::memmem::find(b, b"\ndata: ").map_or(0, |i| i + 7);
    let to = b.len().saturating_sub(2).max(from);
    (from, to)
}

/// Writes the send time into the stamp digits at `at` (see [`STAMP_PLACEHOLDER`]).
pub(super) fn fill_stamps(b: &mut [u8], at: &[usize]) {
    let digits = stamp_digits(clock_ns());
    for &i in at {
        if let Some(slot) = b.get_mut(i..i + digits.len()) {
            slot.copy_from_slice(&digits);
        }
    }
}

/// `ns` as sixteen zero-padded decimal digits.
fn stamp_digits(mut ns: u64) -> [u8; 16] {
    let mut d = [b'0'; 16];
    for slot in d.iter_mut().rev() {
        *slot = b'0' + (ns % 10) as u8;
        ns /= 10;
    }
    d
}

/// Every body the emulator sends.
pub(super) enum EmuBody {
    Full(Option<Bytes>),
    Script(ScriptBody),
}

impl Body for EmuBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            EmuBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            EmuBody::Script(s) => s.poll_step(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            EmuBody::Full(b) => b.is_none(),
            EmuBody::Script(s) => s.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            EmuBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            EmuBody::Full(None) => SizeHint::with_exact(0),
            EmuBody::Script(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(s: &Sse, i: usize) -> String {
        match &s.steps[i] {
            Step::Data(b) => String::from_utf8(b.to_vec()).unwrap(),
            _ => panic!("not data"),
        }
    }

    #[test]
    fn events_are_framed_with_type_and_sequence_first() {
        let mut s = Sse::new();
        s.event(
            "response.created",
            &json!({"response": {"id": "resp_1", "x": {}}}),
        );
        s.event("response.in_progress", &json!({}));
        s.text_delta("msg_1", 0, "h\"i");
        assert_eq!(
            data(&s, 0),
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"x\":{}}}\n\n"
        );
        assert_eq!(
            data(&s, 1),
            "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1}\n\n"
        );
        let d: Value =
            serde_json::from_str(data(&s, 2).split("data: ").nth(1).unwrap().trim()).unwrap();
        assert_eq!(d["delta"], "h\"i");
        assert_eq!(d["sequence_number"], 2);
    }

    #[test]
    fn websocket_steps_are_the_bare_json_with_stamps_moved() {
        let mut s = Sse::new();
        s.event("response.created", &json!({"response": {"id": "resp_1"}}));
        s.pause(Duration::from_millis(1));
        s.text_delta("msg_1", 0, &format!("{STAMP_PLACEHOLDER}a"));
        let steps: Vec<Step> = s.into_ws_steps().into_iter().collect();
        match &steps[0] {
            Step::Data(b) => assert_eq!(
                &b[..],
                br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}"#
            ),
            _ => panic!("not data"),
        }
        assert!(matches!(steps[1], Step::Pause(_)));
        match &steps[2] {
            Step::Stamped(b, at) => {
                let mut b = b.clone();
                fill_stamps(&mut b, at);
                let v: Value = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["type"], "response.output_text.delta");
                assert_eq!(stamps_in(&b).len(), 1);
                assert!(!String::from_utf8(b).unwrap().contains(STAMP_PLACEHOLDER));
            }
            _ => panic!("not stamped"),
        }
    }

    fn stamps_in(b: &[u8]) -> Vec<u64> {
        memchr::memmem::find_iter(b, b"T@")
            .map(|i| {
                std::str::from_utf8(&b[i + 2..i + 18])
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn stamps_are_written_at_send_time_per_event_and_coalesced() {
        use http_body_util::BodyExt;
        for chunking in [Chunking::PerEvent, Chunking::Coalesced] {
            let mut s = Sse::new();
            s.event("response.created", &json!({}));
            s.text_delta("msg_1", 0, &format!("{STAMP_PLACEHOLDER}a "));
            s.text_delta("msg_1", 0, &format!("{STAMP_PLACEHOLDER}b "));
            s.text_delta("msg_1", 0, "unstamped");
            let before = clock_ns();
            let live = LiveStream::new(&Arc::new(AtomicUsize::new(0)), &Arc::default());
            let bytes = EmuBody::Script(s.into_body(chunking, live, None))
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let stamps = stamps_in(&bytes);
            assert_eq!(stamps.len(), 2, "{chunking:?}");
            assert!(stamps.iter().all(|&t| t >= before && t <= clock_ns()));
        }
    }
}
