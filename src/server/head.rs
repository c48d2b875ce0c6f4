//! The first request head of a connection, read before hyper takes the socket.
//!
//! Owns: answering a client that is too slow to send its headers (408) or whose headers are
//! too large (431) with a body in the client's protocol shape, which hyper cannot do (it
//! closes a timed-out connection silently and sends a bare 431). The bytes read here are
//! handed back to hyper unchanged through [`Rewind`]. Later requests on a keep-alive
//! connection are bounded by hyper's own header timeout and buffer limit (same values).
//!
//! The protocol of a partial head is guessed from its bytes: a `/messages` path or an
//! `anthropic-version` / `x-api-key` header means Anthropic, anything else OpenAI.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Protocol};

/// Largest request head (request line + headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

/// What reading the first head gave.
pub enum FirstHead {
    /// The head is complete (or the client spoke h2): serve these bytes and the rest.
    Ready(Bytes),
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
    // Where the search for the blank line resumes (a head sent a byte at a time must not
    // cost a rescan of everything per byte).
    let mut scanned = 0;
    loop {
        if head_complete(buf.get(scanned..).unwrap_or(&[])) {
            return FirstHead::Ready(Bytes::from(buf));
        }
        scanned = buf.len().saturating_sub(3);
        if buf.len() > max {
            let err = Error::new(
                ErrorKind::HeadersTooLarge,
                format!("request headers are larger than the limit of {max} bytes"),
            );
            answer(stream, &err, protocol_guess(&buf)).await;
            return FirstHead::Refused;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(buf.capacity().min(max));
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return FirstHead::Gone,
            Ok(Ok(_)) => {}
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

/// A complete HTTP/1 head, or the h2 connection preface (which ends in a blank line too).
fn head_complete(buf: &[u8]) -> bool {
    memchr::memmem::find(buf, b"\r\n\r\n").is_some()
        // Bare-LF heads are legal enough for hyper: let it judge them.
        || memchr::memmem::find(buf, b"\n\n").is_some()
}

pub(crate) fn protocol_guess(head: &[u8]) -> Protocol {
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

/// Answer with `err` (a 4xx about the head) and close: the client may still be sending, so
/// its bytes are read and discarded for a moment, lest the close reset the connection and
/// destroy the answer before it is read.
pub(crate) async fn answer(stream: &mut TcpStream, err: &Error, protocol: Protocol) {
    let body = err.body(protocol);
    let status = err.status(protocol);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    tracing::info!(status, message = %err.message, "refused a request head");
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

/// A stream that first replays bytes already read from it.
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(this.prefix.get(..n).unwrap_or(&[]));
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
        let FirstHead::Ready(prefix) =
            read_first(&mut server, Duration::from_secs(30), MAX_HEAD_BYTES).await
        else {
            panic!("the head was not found");
        };
        let _c = client.await.unwrap();
        let mut all = prefix.to_vec();
        let mut rewind = Rewind::new(prefix, server);
        all.clear();
        while all.len() < head.len() {
            let mut chunk = [0u8; 64];
            let n = rewind.read(&mut chunk).await.unwrap();
            all.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(all, head);
    }

    #[test]
    fn heads_end_at_a_blank_line() {
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(head_complete(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
    }
}
