//! Incremental zero-copy server-sent-events parser.
//!
//! Owns: turning a byte stream (delivered in arbitrary chunks) into SSE events per the WHATWG
//! EventSource "interpret an event stream" rules: `\n`, `\r\n` and `\r` line ends; `field: value`
//! with one optional space stripped; `:` comments; `data` lines joined with `\n`; `event` and
//! `id` fields; `retry` and unknown fields ignored; a blank line dispatches an event only when
//! at least one `data` line was seen (an empty `data:` line still counts).
//!
//! Does not own: what an event *means* (`upstream` decodes the JSON payload), the HTTP body
//! (the caller pushes whatever bytes one socket read delivered), reconnection (`retry`, the
//! persistent last-event-ID): `id` reports only an `id` field seen inside the event itself,
//! so a caller that needs the WHATWG "last event ID" keeps the last `Some`. A leading UTF-8 BOM
//! is not stripped (the Codex backend never sends one; it would only turn the first field
//! into an unknown, ignored one).
//!
//! Design: bytes are copied once into an internal buffer; an event hands out slices of that
//! buffer (`event`, `id`, and `data` when there is exactly one `data` line). Only multi-line
//! data is joined, into a reused scratch `Vec`. "Need more bytes" is `Ok(None)`, a state and
//! never an error. The consumed prefix is dropped in [`SseParser::push`] only when copying the
//! unconsumed tail costs no more than the bytes already consumed, so compaction is amortized
//! O(1) per byte and a warmed-up parser does not allocate.
//!
//! Every event is bounded by `max_event_bytes`, counted from the first byte of the event's
//! first line (comments and ignored fields included) through the terminator of the line being
//! read, so a stream that never sends a line end cannot grow the buffer without bound. The
//! limit is checked identically whether bytes arrive one at a time or all at once: a partial
//! line is rejected as soon as the bytes already held exceed the limit, which the complete
//! line would exceed too.

use std::fmt;

use memchr::{memchr, memchr2};

/// One dispatched event, borrowing the parser until the next call that takes `&mut self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field; empty when the event had none (WHATWG then calls it `message`).
    pub event: &'a [u8],
    /// The `data` lines joined with `\n` (empty for a lone `data:` line).
    pub data: &'a [u8],
    /// The last `id` field of this event (an `id` containing NUL is ignored, per WHATWG).
    pub id: Option<&'a [u8]>,
}

/// A parse failure. The parser stays failed: every later call returns the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// One event's lines exceeded the configured `max_event_bytes`.
    EventTooLarge,
}

impl SseError {
    /// A static description, so rendering an error never allocates.
    pub const fn as_str(self) -> &'static str {
        match self {
            SseError::EventTooLarge => "SSE event exceeds the configured size limit",
        }
    }
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for SseError {}

/// A half-open byte range into the parser's buffer. Offsets, not slices, so that the buffer
/// can be appended to and compacted between calls.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    const EMPTY: Span = Span { start: 0, end: 0 };

    fn shift(self, by: usize) -> Span {
        Span {
            start: self.start.saturating_sub(by),
            end: self.end.saturating_sub(by),
        }
    }
}

fn slice(buf: &[u8], span: Span) -> &[u8] {
    buf.get(span.start..span.end).unwrap_or(&[])
}

/// Incremental SSE parser; see the module docs.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// First byte of the pending event; everything before it is consumed.
    start: usize,
    /// First byte of the next line not yet interpreted.
    cursor: usize,
    /// Where the search for the next line end resumes, so a long partial line delivered in
    /// many small chunks is scanned once, not once per chunk.
    scan: usize,
    max_event_bytes: usize,
    name: Span,
    /// The single data line, valid while `has_data && !multiline`.
    data: Span,
    id: Option<Span>,
    has_data: bool,
    /// Data lives in `scratch` (two or more `data` lines).
    multiline: bool,
    scratch: Vec<u8>,
    /// Set by `finish`: the bytes held are all there will be.
    eof: bool,
    failed: bool,
}

impl SseParser {
    /// A parser that rejects any event whose lines exceed `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            start: 0,
            cursor: 0,
            scan: 0,
            max_event_bytes,
            name: Span::EMPTY,
            data: Span::EMPTY,
            id: None,
            has_data: false,
            multiline: false,
            scratch: Vec::new(),
            eof: false,
            failed: false,
        }
    }

    /// Appends bytes. Pushing after [`finish`](Self::finish) resumes normal (non-EOF) parsing.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed {
            // A failed stream is over; holding more bytes would only waste memory.
            return;
        }
        self.eof = false;
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, or `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        if self.advance()? {
            Ok(Some(self.take_event()))
        } else {
            Ok(None)
        }
    }

    /// Call at end of stream, repeatedly until `Ok(None)`: a final unterminated line (or a
    /// trailing `\r`) counts as terminated, and a pending event that has data is dispatched
    /// even without its blank line. WHATWG would drop that event; a backend that closes right
    /// after its last `data:` line still meant it, so we are tolerant.
    pub fn finish(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        self.eof = true;
        self.next_event()
    }

    /// Bytes held that are not yet consumed (the pending event's lines and unread input).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    fn fail(&mut self) -> SseError {
        self.failed = true;
        self.buf = Vec::new();
        self.scratch = Vec::new();
        self.start = 0;
        self.cursor = 0;
        self.scan = 0;
        SseError::EventTooLarge
    }

    /// Drops the consumed prefix when that is cheap relative to what was consumed.
    fn compact(&mut self) {
        let consumed = self.start;
        if consumed == 0 {
            return;
        }
        let len = self.buf.len();
        if consumed >= len {
            self.buf.clear();
        } else if consumed >= len - consumed {
            self.buf.copy_within(consumed.., 0);
            self.buf.truncate(len - consumed);
        } else {
            return;
        }
        self.start = 0;
        self.cursor -= consumed;
        self.scan -= consumed;
        self.name = self.name.shift(consumed);
        self.data = self.data.shift(consumed);
        self.id = self.id.map(|s| s.shift(consumed));
    }

    /// Interprets lines until an event is ready (`true`) or the bytes run out (`false`).
    fn advance(&mut self) -> Result<bool, SseError> {
        if self.failed {
            return Err(SseError::EventTooLarge);
        }
        loop {
            let len = self.buf.len();
            let found = self
                .buf
                .get(self.scan..)
                .and_then(|rest| memchr2(b'\n', b'\r', rest))
                .map(|i| self.scan + i);
            let (line_end, next) = match found {
                Some(end) if self.buf.get(end) == Some(&b'\n') => (end, end + 1),
                Some(end) => match self.buf.get(end + 1) {
                    Some(b'\n') => (end, end + 2),
                    Some(_) => (end, end + 1),
                    // A `\r` at the end may be the first half of `\r\n`: wait, unless at EOF.
                    None if self.eof => (end, end + 1),
                    None => {
                        self.scan = end;
                        return self.need_more(len);
                    }
                },
                None if self.eof && self.cursor < len => (len, len),
                None if self.eof => return Ok(self.end_of_stream()),
                None => {
                    self.scan = len;
                    return self.need_more(len);
                }
            };
            if next - self.start > self.max_event_bytes {
                return Err(self.fail());
            }
            let line = Span {
                start: self.cursor,
                end: line_end,
            };
            self.cursor = next;
            self.scan = next;
            if line.start == line.end {
                if self.has_data {
                    return Ok(true);
                }
                // WHATWG: a blank line with an empty data buffer resets the event, no dispatch.
                self.reset();
                self.start = self.cursor;
                continue;
            }
            self.field(line);
        }
    }

    fn need_more(&mut self, len: usize) -> Result<bool, SseError> {
        // The partial line can only grow, so holding more than the limit already dooms it.
        if len - self.start > self.max_event_bytes {
            return Err(self.fail());
        }
        Ok(false)
    }

    fn end_of_stream(&mut self) -> bool {
        if self.has_data {
            return true;
        }
        self.reset();
        self.start = self.cursor;
        false
    }

    fn field(&mut self, line: Span) {
        let bytes = slice(&self.buf, line);
        if bytes.first() == Some(&b':') {
            return;
        }
        let (name, value) = match memchr(b':', bytes) {
            Some(colon) => {
                let mut value_start = line.start + colon + 1;
                if bytes.get(colon + 1) == Some(&b' ') {
                    value_start += 1;
                }
                (
                    bytes.get(..colon).unwrap_or(&[]),
                    Span {
                        start: value_start,
                        end: line.end,
                    },
                )
            }
            None => (
                bytes,
                Span {
                    start: line.end,
                    end: line.end,
                },
            ),
        };
        match name {
            b"data" => {
                if !self.has_data {
                    self.has_data = true;
                    self.data = value;
                } else {
                    if !self.multiline {
                        self.multiline = true;
                        self.scratch.clear();
                        self.scratch.extend_from_slice(slice(&self.buf, self.data));
                    }
                    self.scratch.push(b'\n');
                    self.scratch.extend_from_slice(slice(&self.buf, value));
                }
            }
            b"event" => self.name = value,
            // WHATWG ignores an `id` containing NUL.
            b"id" if memchr(0, slice(&self.buf, value)).is_none() => self.id = Some(value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.name = Span::EMPTY;
        self.data = Span::EMPTY;
        self.id = None;
        self.has_data = false;
        self.multiline = false;
    }

    /// Hands out the ready event and starts the next one. The spans stay valid until the next
    /// `push`, which cannot happen while the returned borrow lives.
    fn take_event(&mut self) -> SseEvent<'_> {
        let (name, data, id, multiline) = (self.name, self.data, self.id, self.multiline);
        self.reset();
        self.start = self.cursor;
        let buf = &self.buf;
        SseEvent {
            event: slice(buf, name),
            data: if multiline {
                &self.scratch
            } else {
                slice(buf, data)
            },
            id: id.map(|s| slice(buf, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Event {
            event: Vec<u8>,
            data: Vec<u8>,
            id: Option<Vec<u8>>,
        },
        Error(SseError),
    }

    impl From<SseEvent<'_>> for Out {
        fn from(e: SseEvent<'_>) -> Self {
            Out::Event {
                event: e.event.to_vec(),
                data: e.data.to_vec(),
                id: e.id.map(<[u8]>::to_vec),
            }
        }
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> Out {
        Out::Event {
            event: event.as_bytes().to_vec(),
            data: data.as_bytes().to_vec(),
            id: id.map(|s| s.as_bytes().to_vec()),
        }
    }

    /// Drains `next_event`, recording an error as the last output. Returns false on error.
    fn drain(p: &mut SseParser, out: &mut Vec<Out>, at_eof: bool) -> bool {
        loop {
            let r = if at_eof { p.finish() } else { p.next_event() };
            match r {
                Ok(Some(e)) => out.push(e.into()),
                Ok(None) => return true,
                Err(e) => {
                    out.push(Out::Error(e));
                    return false;
                }
            }
        }
    }

    fn parse_chunks(chunks: &[&[u8]], max: usize) -> Vec<Out> {
        let mut p = SseParser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            if !drain(&mut p, &mut out, false) {
                return out;
            }
        }
        drain(&mut p, &mut out, true);
        out
    }

    fn parse_whole(input: &[u8], max: usize) -> Vec<Out> {
        parse_chunks(&[input], max)
    }

    fn parse_bytewise(input: &[u8], max: usize) -> Vec<Out> {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        parse_chunks(&chunks, max)
    }

    /// Obviously-correct reference: the WHATWG algorithm over the whole input at EOF, with the
    /// same size rule and the same tolerant final dispatch as the fast parser.
    fn reference(input: &[u8], max: usize) -> Vec<Out> {
        let mut out = Vec::new();
        let mut start = 0usize;
        let mut i = 0usize;
        let mut name: Vec<u8> = Vec::new();
        let mut data: Vec<Vec<u8>> = Vec::new();
        let mut id: Option<Vec<u8>> = None;
        let dispatch = |name: &mut Vec<u8>,
                        data: &mut Vec<Vec<u8>>,
                        id: &mut Option<Vec<u8>>,
                        out: &mut Vec<Out>| {
            if !data.is_empty() {
                out.push(Out::Event {
                    event: name.clone(),
                    data: data.join(&b'\n'),
                    id: id.clone(),
                });
            }
            name.clear();
            data.clear();
            *id = None;
        };
        while i < input.len() {
            let line_start = i;
            while i < input.len() && input[i] != b'\n' && input[i] != b'\r' {
                i += 1;
            }
            let line = &input[line_start..i];
            if i < input.len() {
                if input[i] == b'\r' && i + 1 < input.len() && input[i + 1] == b'\n' {
                    i += 2;
                } else {
                    i += 1;
                }
            }
            if i - start > max {
                out.push(Out::Error(SseError::EventTooLarge));
                return out;
            }
            if line.is_empty() {
                dispatch(&mut name, &mut data, &mut id, &mut out);
                start = i;
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, mut value) = match line.iter().position(|&b| b == b':') {
                Some(c) => (&line[..c], &line[c + 1..]),
                None => (line, &[][..]),
            };
            if value.first() == Some(&b' ') {
                value = &value[1..];
            }
            match field {
                b"data" => data.push(value.to_vec()),
                b"event" => name = value.to_vec(),
                b"id" if !value.contains(&0) => id = Some(value.to_vec()),
                _ => {}
            }
        }
        dispatch(&mut name, &mut data, &mut id, &mut out);
        out
    }

    #[test]
    fn typical_responses_stream() {
        let input = b"event: response.created\ndata: {\"a\":1}\n\nevent: response.output_text.delta\ndata: {\"delta\":\"Hi\"}\n\n";
        let want = vec![
            ev("response.created", "{\"a\":1}", None),
            ev("response.output_text.delta", "{\"delta\":\"Hi\"}", None),
        ];
        assert_eq!(parse_whole(input, 1 << 20), want);
        assert_eq!(parse_bytewise(input, 1 << 20), want);
    }

    #[test]
    fn all_line_ending_kinds_are_equivalent() {
        let want = vec![ev("e", "a\nb", Some("7")), ev("", "c", None)];
        for nl in ["\n", "\r\n", "\r"] {
            let input = format!("event: e{nl}id: 7{nl}data: a{nl}data: b{nl}{nl}data: c{nl}{nl}");
            assert_eq!(parse_whole(input.as_bytes(), 1 << 20), want, "{nl:?}");
            assert_eq!(parse_bytewise(input.as_bytes(), 1 << 20), want, "{nl:?}");
        }
        let mixed = b"event: e\r\nid: 7\rdata: a\ndata: b\r\r\ndata: c\n\r";
        assert_eq!(parse_whole(mixed, 1 << 20), want);
        assert_eq!(parse_bytewise(mixed, 1 << 20), want);
    }

    #[test]
    fn cr_at_end_of_chunk_waits_for_possible_lf() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"data: x\r");
        assert_eq!(p.next_event(), Ok(None));
        // The `\n` completes `\r\n`; it must not be read as a second (blank) line.
        p.push(b"\n");
        assert_eq!(p.next_event(), Ok(None));
        p.push(b"\r");
        assert_eq!(p.next_event(), Ok(None));
        p.push(b"\n");
        let e = p.next_event().unwrap().unwrap();
        assert_eq!(e.data, b"x");
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn comments_are_ignored() {
        let input = b": keepalive\n\n:another\ndata: x\n: inside\n\n";
        assert_eq!(parse_whole(input, 1 << 20), vec![ev("", "x", None)]);
    }

    #[test]
    fn fields_with_and_without_space_after_colon() {
        let input = b"event:nospace\ndata:tight\n\nevent:  two\ndata:  two\n\n";
        assert_eq!(
            parse_whole(input, 1 << 20),
            vec![ev("nospace", "tight", None), ev(" two", " two", None)]
        );
    }

    #[test]
    fn line_without_colon_is_field_with_empty_value() {
        let input = b"data\ndata\n\nevent\ndata: x\n\nid\ndata: y\n\n";
        assert_eq!(
            parse_whole(input, 1 << 20),
            vec![ev("", "\n", None), ev("", "x", None), ev("", "y", Some(""))]
        );
    }

    #[test]
    fn empty_data_line_dispatches_empty_event() {
        assert_eq!(parse_whole(b"data:\n\n", 1 << 20), vec![ev("", "", None)]);
        assert_eq!(parse_whole(b"data: \n\n", 1 << 20), vec![ev("", "", None)]);
    }

    #[test]
    fn blank_line_without_data_resets_event_name_and_id() {
        let input = b"event: lost\nid: 1\n\ndata: x\n\n";
        assert_eq!(parse_whole(input, 1 << 20), vec![ev("", "x", None)]);
    }

    #[test]
    fn retry_and_unknown_fields_are_ignored() {
        let input = b"retry: 1000\nfoo: bar\ndata: x\nDATA: y\n\n";
        assert_eq!(parse_whole(input, 1 << 20), vec![ev("", "x", None)]);
    }

    #[test]
    fn id_containing_nul_is_ignored() {
        let input = b"id: 1\nid: a\0b\ndata: x\n\n";
        assert_eq!(parse_whole(input, 1 << 20), vec![ev("", "x", Some("1"))]);
    }

    #[test]
    fn done_sentinel_is_an_ordinary_event() {
        assert_eq!(
            parse_whole(b"data: [DONE]\n\n", 1 << 20),
            vec![ev("", "[DONE]", None)]
        );
    }

    #[test]
    fn leading_bom_is_not_stripped() {
        // Documented: the BOM becomes part of the first field name, which is then unknown.
        let input = "\u{feff}data: x\n\ndata: y\n\n";
        assert_eq!(
            parse_whole(input.as_bytes(), 1 << 20),
            vec![ev("", "y", None)]
        );
    }

    #[test]
    fn single_data_line_borrows_the_buffer() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"event: a\ndata: payload\n\n");
        let range = p.buf.as_ptr_range();
        let (lo, hi) = (range.start as usize, range.end as usize);
        let e = p.next_event().unwrap().unwrap();
        assert_eq!(e.data, b"payload");
        for ptr in [e.data.as_ptr() as usize, e.event.as_ptr() as usize] {
            assert!((lo..hi).contains(&ptr));
        }
    }

    #[test]
    fn multi_line_data_reuses_scratch_without_reallocating() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"data: aaaa\ndata: bbbb\n\n");
        assert_eq!(p.next_event().unwrap().unwrap().data, b"aaaa\nbbbb");
        let cap = p.scratch.capacity();
        let ptr = p.scratch.as_ptr();
        for _ in 0..100 {
            p.push(b"data: cccc\ndata: dddd\n\n");
            assert_eq!(p.next_event().unwrap().unwrap().data, b"cccc\ndddd");
        }
        assert_eq!(p.scratch.capacity(), cap);
        assert_eq!(p.scratch.as_ptr(), ptr);
    }

    #[test]
    fn buffer_is_compacted_and_does_not_grow_in_steady_state() {
        let mut p = SseParser::new(1 << 20);
        let frame = b"event: response.output_text.delta\ndata: {\"delta\":\"x\"}\n\n";
        let chunk: Vec<u8> = frame.repeat(50);
        // Split mid-frame so a partial event is always carried over.
        let (a, b) = chunk.split_at(chunk.len() / 2 + 7);
        let mut count = 0;
        for _ in 0..3 {
            for part in [a, b] {
                p.push(part);
                while p.next_event().unwrap().is_some() {
                    count += 1;
                }
            }
        }
        let cap = p.buf.capacity();
        for _ in 0..1000 {
            for part in [a, b] {
                p.push(part);
                while p.next_event().unwrap().is_some() {
                    count += 1;
                }
            }
        }
        assert_eq!(count, 1003 * 50);
        assert_eq!(p.buf.capacity(), cap);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn one_byte_chunks_equal_whole_buffer() {
        let input = b": hi\r\nevent: response.created\r\ndata: {\"x\":1}\r\n\r\nevent:a\rdata:1\rdata:2\r\rid: 9\ndata\n\ndata: tail";
        let whole = parse_whole(input, 1 << 20);
        assert_eq!(whole.len(), 4);
        assert_eq!(parse_bytewise(input, 1 << 20), whole);
        assert_eq!(reference(input, 1 << 20), whole);
    }

    #[test]
    fn event_too_large_for_complete_event() {
        let input = b"data: 0123456789\n\n";
        assert_eq!(
            parse_whole(input, input.len()),
            vec![ev("", "0123456789", None)]
        );
        assert_eq!(
            parse_whole(input, input.len() - 1),
            vec![Out::Error(SseError::EventTooLarge)]
        );
        assert_eq!(
            parse_bytewise(input, input.len() - 1),
            vec![Out::Error(SseError::EventTooLarge)]
        );
    }

    #[test]
    fn event_too_large_for_unterminated_line_bounds_the_buffer() {
        let mut p = SseParser::new(64);
        let mut err = None;
        for _ in 0..100 {
            p.push(b"xxxxxxxx");
            if let Err(e) = p.next_event() {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(SseError::EventTooLarge));
        assert_eq!(p.buffered(), 0);
        // Sticky: the stream is over.
        p.push(b"\n\ndata: x\n\n");
        assert_eq!(p.next_event(), Err(SseError::EventTooLarge));
        assert_eq!(p.finish(), Err(SseError::EventTooLarge));
    }

    #[test]
    fn limit_is_per_event_not_per_stream() {
        let input = b"data: 12345\n\n".repeat(100);
        let out = parse_whole(&input, 16);
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|o| *o == ev("", "12345", None)));
    }

    #[test]
    fn error_display_is_static() {
        assert_eq!(
            SseError::EventTooLarge.to_string(),
            "SSE event exceeds the configured size limit"
        );
        let _: &dyn std::error::Error = &SseError::EventTooLarge;
    }

    #[test]
    fn finish_dispatches_pending_event_with_data() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"event: e\ndata: x");
        assert_eq!(p.next_event(), Ok(None));
        assert_eq!(
            p.finish(),
            Ok(Some(SseEvent {
                event: b"e",
                data: b"x",
                id: None
            }))
        );
        assert_eq!(p.finish(), Ok(None));
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn finish_treats_trailing_cr_as_line_end() {
        assert_eq!(parse_whole(b"data: x\r", 1 << 20), vec![ev("", "x", None)]);
        assert_eq!(
            parse_whole(b"data: x\r\r", 1 << 20),
            vec![ev("", "x", None)]
        );
    }

    #[test]
    fn finish_drops_pending_event_without_data() {
        assert_eq!(parse_whole(b"event: e\nid: 1", 1 << 20), vec![]);
        assert_eq!(parse_whole(b": only a comment", 1 << 20), vec![]);
        assert_eq!(parse_whole(b"", 1 << 20), vec![]);
    }

    #[test]
    fn finish_returns_all_undrained_events() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"data: 1\n\ndata: 2\n\ndata: 3");
        let mut out = Vec::new();
        drain(&mut p, &mut out, true);
        assert_eq!(
            out,
            vec![ev("", "1", None), ev("", "2", None), ev("", "3", None)]
        );
    }

    #[test]
    fn push_after_finish_resumes() {
        let mut p = SseParser::new(1 << 20);
        p.push(b"data: 1\n\n");
        assert!(p.finish().unwrap().is_some());
        assert_eq!(p.finish(), Ok(None));
        p.push(b"data: 2\r");
        assert_eq!(p.next_event(), Ok(None));
        p.push(b"\n\n");
        assert_eq!(p.next_event().unwrap().unwrap().data, b"2");
    }

    /// Random SSE-ish input: a mix of real fields, junk, comments, every line ending, and
    /// occasional raw bytes, so both the common and the degenerate paths are exercised.
    fn random_input(rng: &mut fastrand::Rng) -> Vec<u8> {
        let mut v = Vec::new();
        let lines = rng.usize(0..24);
        for _ in 0..lines {
            match rng.u8(0..12) {
                0 => {}
                1 => v.extend_from_slice(b": comment"),
                2 | 3 => v.extend_from_slice(b"event: response.output_text.delta"),
                4..=6 => {
                    v.extend_from_slice(if rng.bool() { b"data: " } else { b"data:" });
                    for _ in 0..rng.usize(0..12) {
                        v.push(*rng.choice(b"{}\":ab ,1\0").unwrap_or(&b'x'));
                    }
                }
                7 => v.extend_from_slice(if rng.bool() { b"id: 42" } else { b"id" }),
                8 => v.extend_from_slice(b"retry: 10"),
                9 => v.extend_from_slice(if rng.bool() { b"data" } else { b"event" }),
                10 => v.extend_from_slice(b"unknown:  x"),
                _ => {
                    for _ in 0..rng.usize(0..6) {
                        v.push(*rng.choice(b"\r\n: d").unwrap_or(&b'x'));
                    }
                }
            }
            let nl: &[u8] = match rng.u8(0..4) {
                0 => b"\n",
                1 => b"\r\n",
                2 => b"\r",
                _ => b"\n\n",
            };
            // Sometimes leave the final line unterminated, to exercise `finish`.
            if rng.u8(0..8) != 0 {
                v.extend_from_slice(nl);
            }
        }
        v
    }

    fn random_split<'a>(rng: &mut fastrand::Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = rng.usize(0..=rest.len().min(16));
            let (a, b) = rest.split_at(n);
            chunks.push(a);
            rest = b;
        }
        chunks
    }

    #[test]
    fn fast_parser_agrees_with_naive_reference_on_random_inputs() {
        for seed in 0..3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let input = random_input(&mut rng);
            let max = if rng.bool() {
                1 << 20
            } else {
                rng.usize(0..64)
            };
            let want = reference(&input, max);
            assert_eq!(
                parse_whole(&input, max),
                want,
                "seed {seed} whole {input:?}"
            );
            let chunks = random_split(&mut rng, &input);
            assert_eq!(
                parse_chunks(&chunks, max),
                want,
                "seed {seed} split {chunks:?}"
            );
            assert_eq!(parse_bytewise(&input, max), want, "seed {seed} bytewise");
        }
    }
}
