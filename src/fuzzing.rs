//! Fuzz entry points, shared by the `fuzz/` targets and by corpus replay in `cargo test`.
//!
//! Owns: one function per fuzz target, each taking arbitrary bytes and panicking only when an
//! invariant is broken (a panic is what the fuzzer reports), plus [`run`], which dispatches by
//! target name so `tests/fuzz_corpus.rs` can replay every committed seed directory. Does not
//! own: the parsers themselves, or the fuzz harness (libFuzzer lives in `fuzz/`).
//!
//! To add a target: write `pub fn name(data: &[u8])` here, add it to [`TARGETS`] and [`run`],
//! add `fuzz/fuzz_targets/name.rs` (a one-liner) plus its `[[bin]]` in `fuzz/Cargo.toml`, and
//! commit seeds under `fuzz/corpus/name/`.
#![doc(hidden)]

use crate::sse::parse::{SseError, SseEvent, SseParser};

/// Every target name [`run`] knows.
pub const TARGETS: &[&str] = &["sse_parse", "sse_chunking"];

/// Runs the target called `target` on `data`; `false` when no such target exists.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "sse_parse" => sse_parse(data),
        "sse_chunking" => sse_chunking(data),
        _ => return false,
    }
    true
}

/// One parser outcome, owned so whole-buffer and chunked runs can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Event {
        event: Vec<u8>,
        data: Vec<u8>,
        id: Option<Vec<u8>>,
    },
    Error(SseError),
}

/// Structural facts every dispatched event must satisfy, whatever the input.
fn check_event(e: &SseEvent<'_>, input_len: usize) {
    let no_line_break = |b: &[u8]| !b.iter().any(|&c| c == b'\n' || c == b'\r');
    assert!(no_line_break(e.event), "event name holds a line break");
    assert!(e.id.is_none_or(no_line_break), "id holds a line break");
    assert!(e.id.is_none_or(|id| !id.contains(&0)), "id holds NUL");
    assert!(!e.data.contains(&b'\r'), "data holds a CR");
    assert!(e.data.len() <= input_len, "data longer than the input");
}

/// Drains the parser (via `finish` when `at_eof`), recording outcomes; false after an error.
fn drain(p: &mut SseParser, out: &mut Vec<Outcome>, at_eof: bool, input_len: usize) -> bool {
    loop {
        let r = if at_eof { p.finish() } else { p.next_event() };
        match r {
            Ok(Some(e)) => {
                check_event(&e, input_len);
                out.push(Outcome::Event {
                    event: e.event.to_vec(),
                    data: e.data.to_vec(),
                    id: e.id.map(<[u8]>::to_vec),
                });
            }
            Ok(None) => return true,
            Err(e) => {
                out.push(Outcome::Error(e));
                return false;
            }
        }
    }
}

fn parse_in_chunks<'a>(
    chunks: impl Iterator<Item = &'a [u8]>,
    max: usize,
    input_len: usize,
) -> Vec<Outcome> {
    let mut p = SseParser::new(max);
    let mut out = Vec::new();
    for c in chunks {
        p.push(c);
        assert!(p.buffered() <= input_len, "buffered more than was pushed");
        if !drain(&mut p, &mut out, false, input_len) {
            return out;
        }
    }
    if drain(&mut p, &mut out, true, input_len) {
        assert_eq!(p.buffered(), 0, "bytes left after finish returned None");
    }
    out
}

/// Whole input at once, drained, finished; with a generous and a tight event-size limit.
pub fn sse_parse(data: &[u8]) {
    for max in [1 << 20, data.len() / 3] {
        let out = parse_in_chunks(std::iter::once(data), max, data.len());
        let events = out
            .iter()
            .filter(|o| matches!(o, Outcome::Event { .. }))
            .count();
        // Every event needs at least a `data` line and its terminator.
        assert!(
            events <= data.len() / 4 + 1,
            "more events than input allows"
        );
    }
}

/// Chunking invariance: feeding the payload in pieces gives exactly the whole-buffer result.
///
/// Layout of `data`: byte 0 = `k | limit << 3` where `k` (0..=7) is how many chunk-length
/// bytes follow and `limit` (0 = none) picks a tight event-size limit of `limit * 8` bytes;
/// then `k` length bytes, used cyclically (`len = byte + 1`; `k == 0` means 1-byte chunks);
/// the rest is the SSE payload.
pub fn sse_chunking(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(control & 7);
    let limit = usize::from(control >> 3);
    let (lens, payload) = rest.split_at(k.min(rest.len()));
    let max = if limit == 0 { 1 << 20 } else { limit * 8 };

    let whole = parse_in_chunks(std::iter::once(payload), max, payload.len());

    let mut remaining = payload;
    let mut i = 0usize;
    let chunks = std::iter::from_fn(|| {
        if remaining.is_empty() {
            return None;
        }
        let len = lens
            .get(i % lens.len().max(1))
            .map_or(1, |&b| usize::from(b) + 1);
        i += 1;
        let (chunk, tail) = remaining.split_at(len.min(remaining.len()));
        remaining = tail;
        Some(chunk)
    });
    let split = parse_in_chunks(chunks, max, payload.len());
    assert_eq!(
        split, whole,
        "chunked parse differs from whole-buffer parse"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dispatches_every_listed_target_and_rejects_unknown_names() {
        for t in TARGETS {
            assert!(run(t, b"\x02\x03\x05event: a\ndata: b\n\n"));
        }
        assert!(!run("no_such_target", b""));
    }

    #[test]
    fn targets_accept_empty_and_degenerate_inputs() {
        for t in TARGETS {
            for input in [&b""[..], b"\0", b"\x07", b"\r", b"\xff\xff\xff\r\n\r\n"] {
                assert!(run(t, input));
            }
        }
    }
}
