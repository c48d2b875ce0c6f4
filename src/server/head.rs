//! Reading a request head up to its end: the first one of every connection (before it is
//! known to be HTTP/1.x or h2), and each later one of an `h1` connection.
//!
//! Owns: finding where a head ends (its first blank line, after any empty lines before the
//! request line; bare LF too), the head size limit (`MAX_HEAD_BYTES`, measured on the head,
//! so the answer does not depend on how the bytes arrived), answering a client that is too
//! slow to send its headers (408) or whose headers are too large (431) with a body in the
//! client's protocol shape, and [`rewind`], which hands the bytes read here back to hyper for
//! an h2 connection. The decision on the bytes read so far is the sans-IO `progress`,
//! shared with the `h1_requests` fuzz target.
//!
//! The protocol of a partial head is guessed from its bytes (those of the head only): a
//! `/messages` path or an `anthropic-version` / `x-api-key` header means Anthropic, anything
//! else OpenAI.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Chain};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Error, ErrorKind, Protocol};

/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

/// What reading the first head gave.
pub enum FirstHead {
    /// The head is complete (or the client spoke h2): serve these bytes and the rest; the
    /// first of them arrived at this instant (where a request's read deadline starts).
    Ready(Bytes, tokio::time::Instant),
    /// The client closed, or sent nothing before the timeout: nothing to answer.
    Gone,
    /// Answered with an error; close the connection.
    Refused,
}

/// Read until the end of the first head, the size limit, or the timeout.
pub async fn read_first(stream: &mut TcpStream, timeout: Duration, max: usize) -> FirstHead {
    read_head(stream, Vec::with_capacity(4096), timeout, max).await
}

/// Like `read_first`, for any head of a connection: `buf` holds bytes already read.
pub async fn read_head(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    timeout: Duration,
    max: usize,
) -> FirstHead {
    let deadline = tokio::time::Instant::now() + timeout;
    // Bytes read ahead (a pipelined request) arrived before this call: count from now.
    let mut first_byte = (!buf.is_empty()).then(tokio::time::Instant::now);
    let mut scanned = 0;
    loop {
        match progress(&buf, &mut scanned, max) {
            Ok(true) => {
                let since = first_byte.unwrap_or_else(tokio::time::Instant::now);
                return FirstHead::Ready(Bytes::from(buf), since);
            }
            Ok(false) => {}
            Err((err, protocol)) => {
                answer(stream, &err, protocol).await;
                return FirstHead::Refused;
            }
        }
        make_room(&mut buf, max);
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return FirstHead::Gone,
            Ok(Ok(_)) => {
                first_byte.get_or_insert_with(tokio::time::Instant::now);
            }
            Err(_) if buf.is_empty() => return FirstHead::Gone,
            Err(_) => {
                let err = Error::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "the request headers did not arrive within {} s",
                        timeout.as_secs_f64()
                    ),
                );
                answer(stream, &err, protocol_guess(&buf)).await;
                return FirstHead::Refused;
            }
        }
    }
}

/// Room for the next read of a head: at least 4 KiB (a keep-alive connection's buffer can be
/// empty, and an empty `Vec` grows by 64 bytes a read: three reads for a typical head), then
/// doubling, up to the head limit.
fn make_room(buf: &mut Vec<u8>, max: usize) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(buf.capacity().min(max).max(4096));
    }
}

/// Where reading a head stands once `buf` holds the bytes read so far: `Ok(true)` when it
/// is complete, `Ok(false)` when more bytes are needed, `Err` (431, and the protocol to
/// answer in) when it is larger than `max`. However the bytes arrived, the answer is the
/// same: a complete head is measured, not the buffer, and the protocol is guessed from the
/// bytes within the limit. `scanned` (0 for a new head) is where the search for its end
/// resumes, so that a head sent a byte at a time does not cost a rescan per byte.
pub(crate) fn progress(
    buf: &[u8],
    scanned: &mut usize,
    max: usize,
) -> Result<bool, (Error, Protocol)> {
    let end = head_end(buf, *scanned);
    *scanned = buf.len().saturating_sub(2);
    if end.unwrap_or(buf.len()) > max {
        let err = Error::new(
            ErrorKind::HeadersTooLarge,
            format!("request headers are larger than the limit of {max} bytes"),
        );
        return Err((err, protocol_guess(buf.get(..=max).unwrap_or(buf))));
    }
    Ok(end.is_some())
}

/// The length of the head at the start of `buf`, through its blank line, once it has one:
/// the first LF followed by LF or CRLF after the empty lines that may precede the request
/// line (RFC 9112 §2.2, skipped by the parser too); the h2 preface ends in a blank line as
/// well. The search starts at `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let from = from.max(start);
    memchr::memchr_iter(b'\n', buf.get(from..)?).find_map(|i| {
        let next = from + i + 1;
        match buf.get(next..)? {
            [b'\n', ..] => Some(next + 1),
            [b'\r', b'\n', ..] => Some(next + 2),
            _ => None,
        }
    })
}

/// The protocol a (partial) head was meant for, from its bytes up to its blank line.
pub(crate) fn protocol_guess(buf: &[u8]) -> Protocol {
    let head = buf
        .get(..head_end(buf, 0).unwrap_or(buf.len()))
        .unwrap_or(buf);
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or(head);
    if memchr::memmem::find(line, b" /v1/messages").is_some()
        || memchr::memmem::find(line, b" /messages").is_some()
    {
        return Protocol::Anthropic;
    }
    let lower = head.to_ascii_lowercase();
    if memchr::memmem::find(&lower, b"\nanthropic-version:").is_some()
        || memchr::memmem::find(&lower, b"\nx-api-key:").is_some()
    {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

/// Answer with `err` (a 4xx about the head or the body) and close: the client may still be
/// sending, so its bytes are read and discarded for a moment, lest the close reset the
/// connection and destroy the answer before it is read.
pub(crate) async fn answer(stream: &mut TcpStream, err: &Error, protocol: Protocol) {
    let out = answer_bytes(err, protocol);
    tracing::info!(status = err.status(protocol), message = %err.message, "refused a request");
    let write = async {
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
    let drain = async {
        // On the heap: an array here would size every connection's task.
        let mut sink = vec![0u8; 4096];
        while let Ok(1..) = stream.read(&mut sink).await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// `err` as a complete HTTP/1.1 response in `protocol`'s shape, with `connection: close`
/// (and `retry-after` when the error has one).
pub(crate) fn answer_bytes(err: &Error, protocol: Protocol) -> Vec<u8> {
    let body = err.body(protocol);
    let status = err.status(protocol);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry = err
        .retry_after
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// A connection whose first bytes were read by [`read_first`]: tokio's own reader chain and
/// joined halves.
pub type Rewound = tokio::io::Join<Chain<io::Cursor<Bytes>, OwnedReadHalf>, OwnedWriteHalf>;

/// `inner` with `prefix`, the bytes already read from it, read again first (for hyper).
pub fn rewind(prefix: Bytes, inner: TcpStream) -> Rewound {
    let (rd, wr) = inner.into_split();
    tokio::io::join(io::Cursor::new(prefix).chain(rd), wr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_of_a_partial_head() {
        assert_eq!(
            protocol_guess(b"POST /v1/messages HTTP/1.1\r\nHost: x"),
            Protocol::Anthropic
        );
        assert_eq!(
            protocol_guess(b"POST /v1/chat/completions HTTP/1.1\r\nX-Api-Key: k\r\n"),
            Protocol::Anthropic
        );
        assert_eq!(
            protocol_guess(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x"),
            Protocol::OpenAi
        );
        assert_eq!(protocol_guess(b"GE"), Protocol::OpenAi);
        // Only the head counts, not a pipelined request after it.
        assert_eq!(
            protocol_guess(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nx-api-key: k\r\n\r\n"),
            Protocol::OpenAi
        );
    }

    #[tokio::test]
    async fn a_head_sent_byte_by_byte_is_found_and_replayed_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nBODY";
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for b in head {
                c.write_all(&[*b]).await.unwrap();
                c.flush().await.unwrap();
            }
            c
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let FirstHead::Ready(prefix, _) =
            read_first(&mut server, Duration::from_secs(30), MAX_HEAD_BYTES).await
        else {
            panic!("the head was not found");
        };
        let _c = client.await.unwrap();
        let mut all = prefix.to_vec();
        let mut rewind = rewind(prefix, server);
        all.clear();
        while all.len() < head.len() {
            let mut chunk = [0u8; 64];
            let n = rewind.read(&mut chunk).await.unwrap();
            all.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(all, head);
    }

    #[test]
    fn a_head_is_read_into_at_least_4_kib_even_from_an_empty_buffer() {
        let mut empty = Vec::new();
        make_room(&mut empty, MAX_HEAD_BYTES);
        assert!(empty.capacity() >= 4096, "{}", empty.capacity());
        // A buffer with room is left as it is; a full one doubles.
        let mut roomy = Vec::with_capacity(8192);
        make_room(&mut roomy, MAX_HEAD_BYTES);
        assert_eq!(roomy.capacity(), 8192);
        let mut full = vec![b'x'; 8192];
        make_room(&mut full, MAX_HEAD_BYTES);
        assert!(full.capacity() >= 16384, "{}", full.capacity());
    }

    #[test]
    fn heads_end_at_a_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(head_end(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        // Bare LF, and an LF line followed by a CRLF one, end a head too.
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\n", 0), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\r\n", 0), Some(22));
        // Empty lines before the request line do not end it.
        assert_eq!(head_end(b"\r\n\r\n\n", 0), None);
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(22));
    }

    #[test]
    fn a_complete_head_over_the_limit_is_refused_however_it_arrived() {
        let head = b"GET / HTTP/1.1\r\nX: 0123456789\r\n\r\n";
        let mut scanned = 0;
        assert!(progress(head, &mut scanned, head.len()).unwrap());
        for max in [head.len() - 1, 20] {
            let mut scanned = 0;
            let (err, _) = progress(head, &mut scanned, max).unwrap_err();
            assert_eq!(err.kind, ErrorKind::HeadersTooLarge);
        }
        // Whatever follows the head does not count.
        let mut scanned = 0;
        assert!(
            progress(
                &[&head[..], &[b'x'; 100]].concat(),
                &mut scanned,
                head.len()
            )
            .unwrap()
        );
    }
}
