//! SSE frame encoder: appends complete frames to a caller-owned, reused `BytesMut`.
//!
//! Owns: the byte layout of the frames we send to clients (`event:`/`data:` lines, comments,
//! the OpenAI `[DONE]` sentinel). Does not own: the payloads (the dialects render compact
//! JSON), flushing, or keep-alive timing (`server`).
//!
//! Payloads are single-line by contract: compact JSON never contains a raw line break, so
//! every frame is one `data:` line and the encoder never has to split. Debug builds assert it
//! rather than paying for a scan on the hot path in release.

use bytes::{BufMut, BytesMut};

/// The terminal frame of an OpenAI Chat Completions stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

fn is_single_line(b: &[u8]) -> bool {
    memchr::memchr2(b'\n', b'\r', b).is_none()
}

/// Appends `event: {name}\ndata: {data}\n\n`.
pub fn event(out: &mut BytesMut, name: &str, data: &[u8]) {
    debug_assert!(
        is_single_line(name.as_bytes()),
        "SSE event name has a line break"
    );
    debug_assert!(is_single_line(data), "SSE data has a line break");
    out.reserve(7 + name.len() + 7 + data.len() + 2);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// Appends `data: {data}\n\n`.
pub fn data(out: &mut BytesMut, data: &[u8]) {
    debug_assert!(is_single_line(data), "SSE data has a line break");
    out.reserve(6 + data.len() + 2);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// Appends `: {text}\n\n` (a comment, e.g. a keep-alive; clients ignore it).
pub fn comment(out: &mut BytesMut, text: &str) {
    debug_assert!(
        is_single_line(text.as_bytes()),
        "SSE comment has a line break"
    );
    out.reserve(2 + text.len() + 2);
    out.put_slice(b": ");
    out.put_slice(text.as_bytes());
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::parse::{SseEvent, SseParser};

    #[test]
    fn frames_have_the_exact_wire_layout() {
        let mut out = BytesMut::new();
        event(&mut out, "response.created", b"{\"a\":1}");
        data(&mut out, b"{}");
        comment(&mut out, "keepalive");
        out.extend_from_slice(DONE);
        assert_eq!(
            &out[..],
            b"event: response.created\ndata: {\"a\":1}\n\ndata: {}\n\n: keepalive\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn parser_reads_back_what_the_writer_wrote() {
        let mut out = BytesMut::new();
        event(&mut out, "message_start", b"{\"type\":\"message_start\"}");
        comment(&mut out, "ping");
        data(&mut out, b"{\"choices\":[]}");
        data(&mut out, b"");
        event(&mut out, "", b" leading space kept");
        out.extend_from_slice(DONE);
        let mut p = SseParser::new(1 << 20);
        p.push(&out);
        let mut got = Vec::new();
        while let Some(e) = p.next_event().unwrap() {
            got.push((e.event.to_vec(), e.data.to_vec(), e.id.is_some()));
        }
        assert_eq!(p.finish(), Ok(None::<SseEvent<'_>>));
        let want: Vec<(Vec<u8>, Vec<u8>, bool)> = vec![
            (
                b"message_start".to_vec(),
                b"{\"type\":\"message_start\"}".to_vec(),
                false,
            ),
            (b"".to_vec(), b"{\"choices\":[]}".to_vec(), false),
            (b"".to_vec(), b"".to_vec(), false),
            (b"".to_vec(), b" leading space kept".to_vec(), false),
            (b"".to_vec(), b"[DONE]".to_vec(), false),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn writer_appends_without_clearing() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        data(&mut out, b"x");
        assert_eq!(&out[..], b"prefixdata: x\n\n");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "line break")]
    fn multi_line_data_is_rejected_in_debug() {
        data(&mut BytesMut::new(), b"a\nb");
    }
}
