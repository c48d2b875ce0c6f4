//! The HTTP/1.1 server connection for clients (h2 clients go to hyper).
//!
//! Owns: one client connection from its first complete head to its close: parsing each head
//! as strictly as RFC 9112 asks of an origin server (`httparse`, then: CRLF line ends only,
//! exactly one valid Host in HTTP/1.1, `chunked` once and last, any other transfer coding a
//! 501, a `Content-Length` digits only; the head's size limit and header timeout with
//! protocol-shaped 431/408 through `head`, for every request of the connection, not only
//! the first), request bodies (`Content-Length` and chunked, decoded by the sans-IO
//! `Framing::decode`: chunk sizes are hex digits and nothing else, every line ends with
//! CRLF, no control character in an extension or trailer, size lines and the trailer
//! section are limited, trailers count against the body limit; a refused body gets its
//! 400/413/431 before the close; `Expect: 100-continue`; fed to the router while it runs),
//! the request's read deadline (head and body within `--request-read-timeout-secs`, a body
//! earning more at `MIN_BODY_RATE`; 408 in the protocol's shape), keep-alive and
//! `Connection: close`, HTTP/1.0 clients, HEAD, writing the response head and body (the
//! framing headers are ours: `Content-Length` when the size is known, else chunked, never
//! both; each frame written straight from the body's bytes; a client that reads nothing for
//! `--write-stall-secs` is dropped), noticing a client that goes away mid-stream (its
//! response body is dropped at once), a request pipelined during a stream (the stream
//! finishes, then a lingering close), and graceful shutdown (an idle connection closes, a
//! busy one after its response).
//!
//! Why not hyper here: hyper keeps an 8–16 KB read buffer, an 8 KB write buffer and its
//! connection state for as long as a response streams; a slow stream here holds a stack
//! buffer only while it polls the socket for a close.
//!
//! Does not own: routing (`route`), reading a head to its end (`head`), h2. `parse_head` and
//! `Framing::decode` are what the `h1_requests` and `h1_chunked` fuzz targets drive.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version, header};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::head::{self, FirstHead};
use super::respond::RespBody;
use super::route;
use super::state::State;
use crate::error::{Error, ErrorKind, Protocol};

/// Most headers in one request head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (extensions included) of a chunked request body.
pub(crate) const MAX_CHUNK_LINE: usize = 1024;
/// Largest trailer section (every line with its CRLF, the blank line too) of a chunked
/// request body; trailers also count against the body limit.
pub(crate) const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Request body bytes read ahead of the router.
const BODY_AHEAD: usize = 64 * 1024;
/// Longest wait for a client to read an error answer before its connection is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes per second at which a request body earns time beyond `--request-read-timeout-secs`
/// (a large upload at a sane rate is never cut; one sent a byte at a time is).
pub(crate) const MIN_BODY_RATE: u64 = 8 * 1024;

/// Serve one HTTP/1.x connection whose first head (and maybe more) is in `buf`; its first
/// byte arrived at `started` (a request's read deadline counts from its first byte).
/// `_open` is held until the connection ends (graceful shutdown waits for it).
pub async fn serve(
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    state: Arc<State>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
    mut started: Instant,
) {
    let config = &state.config;
    loop {
        let (req, framing, keep_alive, expect) = match parse_head(&mut buf) {
            Ok(parsed) => parsed,
            Err(err) => {
                let protocol = protocol_of_head(&buf);
                Box::pin(answer_and_close(
                    &mut stream,
                    &err,
                    protocol,
                    Version::HTTP_11,
                ))
                .await;
                return;
            }
        };
        if super::ws::is_upgrade(&req) && framing == Framing::None {
            let accepted =
                route::upgrade_guard(&state, &req).and_then(|()| super::ws::accept_key(&req));
            match accepted {
                Ok(key) => {
                    if stream.write_all(&super::ws::switching(&key)).await.is_ok() {
                        let headers = req.into_parts().0.headers;
                        super::ws::serve(state, stream, buf, headers, stop).await;
                    }
                }
                Err(err) => {
                    let protocol = route::protocol_of(req.uri().path(), req.headers());
                    Box::pin(answer_and_close(&mut stream, &err, protocol, req.version())).await;
                }
            }
            return;
        }
        let head_only = req.method() == Method::HEAD;
        let version = req.version();
        let protocol = route::protocol_of(req.uri().path(), req.headers());
        let mut keep_alive = keep_alive && !*stop.borrow();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let body = Incoming {
            shared: Arc::clone(&shared),
            done: framing == Framing::None,
        };
        let req = req.map(|()| body);
        let mut feeder = Feeder {
            framing,
            buf: std::mem::take(&mut buf),
            shared,
            expect_continue: expect,
            continue_sent: 0,
            received: 0,
            data: 0,
            trailers: 0,
            limit: config.max_body_bytes,
        };
        // The request's read deadline, while there is a body to read (on the heap: only
        // requests with a body pay for it).
        let mut deadline = (framing != Framing::None).then(|| {
            Box::pin(tokio::time::sleep_until(
                started + config.request_read_timeout,
            ))
        });
        // Boxed: the router's future is large and lives only until the response head; held
        // inline it would size this connection's task for as long as the connection lives.
        let mut handler = Box::pin(route::handle(Arc::clone(&state), req, peer));
        let outcome = std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(resp) = handler.as_mut().poll(cx) {
                    return Poll::Ready(Ok(resp));
                }
                match feeder.poll_feed(cx, &mut stream) {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Ready(Ok(false)) | Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                }
                if feeder.finished() {
                    deadline = None;
                }
                if let Some(timer) = deadline.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    // The body earns time as it arrives; past what it earned, it is too slow.
                    let due = started + config.request_read_timeout + earned(feeder.received);
                    if Instant::now() >= due {
                        return Poll::Ready(Err(FeedError::Refused(too_slow(
                            config.request_read_timeout,
                        ))));
                    }
                    timer.as_mut().reset(due);
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await;
        drop(handler);
        drop(deadline);
        let resp = match outcome {
            Ok(resp) => resp,
            Err(FeedError::Gone) => return,
            Err(FeedError::Refused(err)) => {
                Box::pin(head::answer(&mut stream, &err, protocol)).await;
                return;
            }
        };
        // A body the router did not read to its end makes the connection unusable.
        let body_done = feeder.finished();
        keep_alive &= body_done;
        buf = feeder.buf;
        drop(feeder.shared);
        if buf.is_empty() {
            // Nothing read ahead: hold no buffer while the response streams.
            buf = Vec::new();
        }
        let written = write_response(
            &mut stream,
            resp,
            head_only,
            version,
            keep_alive,
            config.write_stall,
        )
        .await;
        match written {
            // The client went away or stopped reading: drop the connection (and the body).
            Err(_) | Ok(Written::Gone) => return,
            // A request pipelined during a stream is not served: close without destroying
            // the response just sent.
            Ok(Written::Pipelined) => {
                Box::pin(linger(&mut stream)).await;
                return;
            }
            Ok(Written::Close) => {
                if body_done {
                    let _ = stream.shutdown().await;
                } else {
                    Box::pin(linger(&mut stream)).await;
                }
                return;
            }
            Ok(Written::KeepAlive) => {}
        }
        // Next head: what was read ahead, then the socket. Idle connections close on shutdown.
        if buf.capacity() > 4096 && buf.len() <= 4096 {
            buf.shrink_to(4096);
        }
        let next = tokio::select! {
            next = Box::pin(head::read_head(&mut stream, buf, head_timeout(config), head::MAX_HEAD_BYTES)) => next,
            _ = stop.wait_for(|s| *s) => return,
        };
        buf = match next {
            FirstHead::Ready(b, since) => {
                started = since;
                Vec::from(b)
            }
            FirstHead::Gone | FirstHead::Refused => return,
        };
    }
}

/// The time a head may take: the header timeout, within the request's read deadline.
pub(crate) fn head_timeout(config: &crate::config::Config) -> Duration {
    config.header_timeout.min(config.request_read_timeout)
}

/// The time a body that has sent `received` bytes has earned beyond the read deadline, at
/// [`MIN_BODY_RATE`].
pub(crate) fn earned(received: u64) -> Duration {
    Duration::from_secs_f64(received as f64 / MIN_BODY_RATE as f64)
}

/// The answer to a request whose body did not arrive in time.
pub(crate) fn too_slow(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::RequestTimeout,
        format!(
            "the request body did not arrive within {} s (or at {} KiB/s after that)",
            timeout.as_secs_f64(),
            MIN_BODY_RATE / 1024
        ),
    )
}

/// How the request body is delimited.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Framing {
    None,
    Length(u64),
    /// Chunked; the state of the chunk decoder.
    Chunked(Chunk),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until the blank line; this many bytes so far.
    Trailers(usize),
}

/// Why a request body is refused (the connection then closes): a `Copy` value with a
/// static message, as `httparse` does it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BodyRefusal {
    /// Not chunked coding as RFC 9112 §7.1 spells it (400).
    Malformed(&'static str),
    /// The trailer section is larger than [`MAX_TRAILER_BYTES`] (431).
    TrailersTooLarge,
}

impl BodyRefusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            BodyRefusal::Malformed(m) => m,
            BodyRefusal::TrailersTooLarge => "the chunked trailer section is too large",
        }
    }

    /// The answer to the client.
    pub(crate) fn error(self) -> Error {
        match self {
            BodyRefusal::Malformed(m) => {
                Error::bad_request(format!("malformed chunked request body: {m}"))
            }
            BodyRefusal::TrailersTooLarge => Error::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "the chunked request body's trailers are larger than the limit of {MAX_TRAILER_BYTES} bytes"
                ),
            ),
        }
    }
}

/// A control character other than HTAB: never in a chunk extension or a field value.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A chunk-size line without its CRLF: `1*HEXDIG [ ";" chunk-ext ]`, nothing around the
/// digits (a sign, whitespace, `0x` are refused), no control character in the extension
/// (a bare CR least of all). The extension itself is ignored (RFC 9112 §7.1.1).
fn chunk_size(line: &[u8]) -> Result<u64, BodyRefusal> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyRefusal::Malformed("a chunk size is not hex digits"));
    }
    let mut size: u64 = 0;
    for &b in line.get(..digits).unwrap_or_default() {
        let d = (b as char).to_digit(16).unwrap_or_default();
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(BodyRefusal::Malformed("a chunk size is beyond 64 bits"))?;
    }
    match line.get(digits..).unwrap_or_default() {
        [] => Ok(size),
        [b';', ext @ ..] => {
            if ext.contains(&b'\r') {
                Err(BodyRefusal::Malformed("a bare CR in a chunk extension"))
            } else if ext.iter().any(|&b| is_ctl(b)) {
                Err(BodyRefusal::Malformed(
                    "a control character in a chunk extension",
                ))
            } else {
                Ok(size)
            }
        }
        _ => Err(BodyRefusal::Malformed(
            "a chunk size is followed by something other than `;` or CRLF",
        )),
    }
}

/// A trailer line without its CRLF: `field-name ":" field-value` with no control
/// character but HTAB in the value (no obs-fold either: a name never starts with space).
fn trailer_field(line: &[u8]) -> Result<(), BodyRefusal> {
    let bad = BodyRefusal::Malformed("a malformed trailer field");
    let colon = memchr::memchr(b':', line).ok_or(bad)?;
    let (name, value) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad);
    }
    if value.iter().any(|&b| is_ctl(b)) {
        return Err(bad);
    }
    Ok(())
}

impl Framing {
    /// Decode body bytes from the front of `buf`, handing each run of body bytes to `body`
    /// and removing what was consumed; at the body's end the framing becomes `None` and the
    /// rest of `buf` (the next head) is left. Ok(true): progress was made. The bytes of a
    /// chunked body's trailer section are added to `trailers` as they are consumed (they
    /// count against the body limit). Every line ends with CRLF (a bare LF is refused),
    /// and a refusal does not depend on how the bytes were split. Sans-IO, so it is also
    /// what the `h1_*` fuzz targets drive.
    pub(crate) fn decode(
        &mut self,
        buf: &mut Vec<u8>,
        trailers: &mut usize,
        mut body: impl FnMut(&[u8]),
    ) -> Result<bool, BodyRefusal> {
        let mut progressed = false;
        loop {
            match *self {
                Framing::None => return Ok(progressed),
                Framing::Length(0) => {
                    *self = Framing::None;
                    return Ok(true);
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(progressed);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    body(buf.get(..n).unwrap_or_default());
                    buf.drain(..n);
                    *self = Framing::Length(left - n as u64);
                    progressed = true;
                }
                Framing::Chunked(Chunk::Size) => {
                    let eol = memchr::memchr(b'\n', buf);
                    if eol.unwrap_or(buf.len()) > MAX_CHUNK_LINE {
                        return Err(BodyRefusal::Malformed("a chunk-size line is too long"));
                    }
                    let Some(eol) = eol else {
                        return Ok(progressed);
                    };
                    let line = buf
                        .get(..eol)
                        .unwrap_or_default()
                        .strip_suffix(b"\r")
                        .ok_or(BodyRefusal::Malformed("a bare LF ends a chunk-size line"))?;
                    let size = chunk_size(line)?;
                    buf.drain(..=eol);
                    *self = Framing::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                    progressed = true;
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(progressed);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    body(buf.get(..n).unwrap_or_default());
                    buf.drain(..n);
                    *self = Framing::Chunked(if left == n as u64 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n as u64)
                    });
                    progressed = true;
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    match buf.get(..2) {
                        Some(b"\r\n") => {}
                        None if buf.first().is_none_or(|b| *b == b'\r') => {
                            return Ok(progressed);
                        }
                        _ => {
                            return Err(BodyRefusal::Malformed(
                                "a chunk's data does not end with CRLF",
                            ));
                        }
                    }
                    buf.drain(..2);
                    *self = Framing::Chunked(Chunk::Size);
                    progressed = true;
                }
                Framing::Chunked(Chunk::Trailers(used)) => {
                    let eol = memchr::memchr(b'\n', buf);
                    // The line is at least this long, LF included, once it is complete.
                    let len = eol.map_or(buf.len() + 1, |e| e + 1);
                    if used + len > MAX_TRAILER_BYTES {
                        return Err(BodyRefusal::TrailersTooLarge);
                    }
                    let Some(eol) = eol else {
                        return Ok(progressed);
                    };
                    let line = buf
                        .get(..eol)
                        .unwrap_or_default()
                        .strip_suffix(b"\r")
                        .ok_or(BodyRefusal::Malformed("a bare LF ends a trailer line"))?;
                    let blank = line.is_empty();
                    if !blank {
                        trailer_field(line)?;
                    }
                    buf.drain(..=eol);
                    *trailers += len;
                    *self = if blank {
                        Framing::None
                    } else {
                        Framing::Chunked(Chunk::Trailers(used + len))
                    };
                    progressed = true;
                }
            }
        }
    }
}

/// The request body as the router sees it: chunks the connection read ahead.
#[derive(Default)]
struct Shared {
    chunks: VecDeque<Bytes>,
    queued: usize,
    ended: bool,
    failed: Option<String>,
    /// The router asked for the body (time to send `100 Continue`).
    polled: bool,
    waker: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    match shared.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    }
}

/// The request body handed to the router.
pub struct Incoming {
    shared: Arc<Mutex<Shared>>,
    done: bool,
}

#[derive(Debug)]
pub struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut s = lock(&self.shared);
        s.polled = true;
        if let Some(chunk) = s.chunks.pop_front() {
            s.queued -= chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(e) = s.failed.take() {
            drop(s);
            self.done = true;
            return Poll::Ready(Some(Err(BodyError(e))));
        }
        if s.ended {
            drop(s);
            self.done = true;
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Reads the request body from the socket into `Shared` while the router runs.
struct Feeder {
    framing: Framing,
    /// Bytes read from the socket and not yet consumed (body, then maybe the next head).
    buf: Vec<u8>,
    shared: Arc<Mutex<Shared>>,
    expect_continue: bool,
    /// Bytes of `100 Continue` written.
    continue_sent: usize,
    /// Body bytes read from the socket so far (framing included): what earns a slow body
    /// more time at [`MIN_BODY_RATE`].
    received: u64,
    /// Body data handed to the router, and trailer bytes consumed: together they count
    /// against `limit` (the router counts only the data).
    data: usize,
    trailers: usize,
    limit: usize,
}

/// Why feeding the router stopped early.
enum FeedError {
    /// The client closed or the socket failed: nobody to answer.
    Gone,
    /// The body is refused: answer this, then close.
    Refused(Error),
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl Feeder {
    fn finished(&self) -> bool {
        self.framing == Framing::None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// Move body bytes from `buf` to the router. Ok(true): progress was made.
    fn decode(&mut self) -> Result<bool, Error> {
        let open = self.framing != Framing::None;
        let shared = &self.shared;
        let data = &mut self.data;
        let decoded = self
            .framing
            .decode(&mut self.buf, &mut self.trailers, |bytes| {
                *data += bytes.len();
                let chunk = Bytes::copy_from_slice(bytes);
                let mut s = lock(shared);
                s.queued += chunk.len();
                s.chunks.push_back(chunk);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            });
        let progressed = match decoded {
            Ok(p) => p,
            Err(refusal) => {
                self.fail(refusal.message().to_owned());
                return Err(refusal.error());
            }
        };
        if self.trailers > 0 && self.data.saturating_add(self.trailers) > self.limit {
            self.fail("the request body is too large".to_owned());
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "request body is larger than the limit of {} bytes (trailers count)",
                    self.limit
                ),
            ));
        }
        if open && self.framing == Framing::None {
            self.end();
        }
        Ok(progressed)
    }

    fn end(&mut self) {
        let mut s = self.lock();
        s.ended = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    fn fail(&mut self, message: String) {
        let mut s = self.lock();
        s.failed = Some(message);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Feed the router: `Ready(Ok(true))` when something moved, `Ready(Ok(false))` when the
    /// body is complete (nothing more to do here), `Pending` while waiting on the socket or
    /// the router, `Ready(Err)` when the connection failed.
    /// With the body read, watch the socket while the router works (a request may wait in
    /// an account's queue): a client that closes (or half-closes, as hyper treats it by
    /// default) ends the request at once. Bytes of a pipelined next request are kept, up
    /// to one head's worth.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
    ) -> Poll<Result<bool, FeedError>> {
        if self.buf.len() >= head::MAX_HEAD_BYTES {
            return Poll::Ready(Ok(false));
        }
        let mut tmp = [0u8; 1024];
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(FeedError::Gone)),
            Poll::Ready(Ok(())) => {
                self.buf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(FeedError::Gone)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_feed(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
    ) -> Poll<Result<bool, FeedError>> {
        if self.framing == Framing::None {
            return self.poll_close(cx, stream);
        }
        let (polled, queued) = {
            let s = self.lock();
            (s.polled, s.queued)
        };
        if self.expect_continue {
            // Like hyper: `100 Continue` once the router reads the body.
            if !polled {
                return Poll::Pending;
            }
            while self.continue_sent < CONTINUE.len() {
                let rest = CONTINUE.get(self.continue_sent..).unwrap_or_default();
                match Pin::new(&mut *stream).poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(FeedError::Gone));
                    }
                    Poll::Ready(Ok(n)) => self.continue_sent += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.expect_continue = false;
        }
        match self.decode() {
            Ok(true) => return Poll::Ready(Ok(true)),
            Ok(false) => {}
            Err(e) => return Poll::Ready(Err(FeedError::Refused(e))),
        }
        if queued >= BODY_AHEAD {
            // The router wakes this task when it takes a chunk.
            return Poll::Pending;
        }
        let mut tmp = [0u8; 16 * 1024];
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                if filled.is_empty() {
                    self.fail("the client closed the connection mid-body".into());
                    return Poll::Ready(Err(FeedError::Gone));
                }
                self.received += filled.len() as u64;
                self.buf.extend_from_slice(filled);
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(e)) => {
                self.fail(format!("reading the request body: {e}"));
                Poll::Ready(Err(FeedError::Gone))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Parse the complete head at the start of `buf` and remove it from `buf`. Returns the
/// request (body to be attached), its body framing, whether the connection may be kept
/// alive after it, and whether the client waits for `100 Continue`.
pub(crate) fn parse_head(buf: &mut Vec<u8>) -> Result<(Request<()>, Framing, bool, bool), Error> {
    let bad = |m: &str| Error::bad_request(format!("malformed HTTP request: {m}"));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(bad("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::new(
                ErrorKind::HeadersTooLarge,
                format!("request headers are more than the limit of {MAX_HEADERS}"),
            ));
        }
        Err(e) => return Err(bad(&e.to_string())),
    };
    // RFC 9112 §2.2 lets a server take a bare LF as a line end; this one refuses it, so
    // that no other parser on the path can read the head differently.
    let head = buf.get(..len).unwrap_or_default();
    if memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head.get(i - 1) != Some(&b'\r')) {
        return Err(bad("a line ends with a bare LF, not CRLF"));
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let uri: http::Uri = parsed
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad("invalid request target"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("invalid header value"))?;
        map.append(name, value);
    }
    let has = |name: &HeaderName, token: &str| {
        map.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let mut keep_alive = match version {
        Version::HTTP_10 => has(&header::CONNECTION, "keep-alive"),
        _ => !has(&header::CONNECTION, "close"),
    };
    let expect = version == Version::HTTP_11 && has(&header::EXPECT, "100-continue");
    // RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request, at most one in HTTP/1.0.
    let mut hosts = map.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(bad("more than one Host header")),
        (None, _) if version == Version::HTTP_11 => {
            return Err(bad("no Host header (HTTP/1.1 requires one)"));
        }
        (Some(host), _) if !host.is_empty() && !valid_host(host) => {
            return Err(bad("invalid Host header"));
        }
        _ => {}
    }
    let mut codings = map.get_all(header::TRANSFER_ENCODING).iter().peekable();
    let framing = if codings.peek().is_some() {
        // RFC 9112 §6.1: an HTTP/1.0 message with a transfer-encoding has faulty framing.
        if version == Version::HTTP_10 {
            return Err(bad("transfer-encoding in an HTTP/1.0 request"));
        }
        let (mut chunked, mut last_chunked, mut other) = (0, false, None);
        for value in codings {
            let value = value
                .to_str()
                .map_err(|_| bad("invalid transfer-encoding"))?;
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                last_chunked = coding.eq_ignore_ascii_case("chunked");
                if last_chunked {
                    chunked += 1;
                } else {
                    other.get_or_insert(coding);
                }
            }
        }
        // §6.3: without `chunked` last the body's end cannot be known (400); §6.1: a
        // coding the server does not implement is a 501.
        if chunked > 1 {
            return Err(bad(
                "`chunked` is given more than once in transfer-encoding",
            ));
        }
        if !last_chunked {
            return Err(bad("`chunked` is not the last transfer coding"));
        }
        if let Some(coding) = other {
            let coding: String = coding.chars().take(64).collect();
            return Err(Error::new(
                ErrorKind::NotImplemented,
                format!("transfer coding {coding:?} is not implemented (only chunked is)"),
            ));
        }
        if map.contains_key(header::CONTENT_LENGTH) {
            // Both: the length is ignored, and the connection is not reused (RFC 9112 §6.3).
            keep_alive = false;
        }
        Framing::Chunked(Chunk::Size)
    } else {
        let mut length: Option<u64> = None;
        for v in map.get_all(header::CONTENT_LENGTH) {
            for part in v
                .to_str()
                .map_err(|_| bad("invalid content-length"))?
                .split(',')
            {
                let part = part.trim();
                let n: u64 = part
                    .parse()
                    .ok()
                    .filter(|_| part.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting content-length values"));
                }
                length = Some(n);
            }
        }
        match length {
            Some(n) if n > 0 => Framing::Length(n),
            _ => Framing::None,
        }
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = map;
    buf.drain(..len);
    Ok((req, framing, keep_alive, expect && framing != Framing::None))
}

/// A Host value is `uri-host [ ":" port ]` (RFC 9110 §7.2), no user info.
fn valid_host(host: &HeaderValue) -> bool {
    host.to_str()
        .ok()
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .is_some_and(|a| !a.as_str().contains('@'))
}

/// The protocol a malformed head was meant for (for the shape of the error).
pub(crate) fn protocol_of_head(buf: &[u8]) -> Protocol {
    head::protocol_guess(buf)
}

/// Answer a head that cannot be served, then close.
async fn answer_and_close(stream: &mut TcpStream, err: &Error, protocol: Protocol, _v: Version) {
    head::answer(stream, err, protocol).await;
}

/// How writing a response ended.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Complete; the connection may serve the next request.
    KeepAlive,
    /// Complete, with `connection: close` (or an HTTP/1.0 body ended by the close).
    Close,
    /// Complete, but the client sent more while it streamed: close without reading it.
    Pipelined,
    /// The client went away before the end.
    Gone,
}

/// Write `resp`; a client that takes none of it for `stall` fails the write (`TimedOut`).
async fn write_response(
    stream: &mut TcpStream,
    resp: Response<RespBody>,
    head_only: bool,
    version: Version,
    keep_alive: bool,
    stall: Duration,
) -> io::Result<Written> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless = head_only
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    // HTTP/1.0 has no chunked encoding: an unknown length ends with the connection.
    let chunked = known.is_none() && !bodiless && version == Version::HTTP_11;
    let keep_alive = keep_alive && (known.is_some() || chunked || bodiless);
    // The framing headers are this function's: a handler's Content-Length is written only
    // where no framing of ours is (a HEAD or 304 of a body of unknown size), so a length
    // and chunked coding never meet, nor two lengths.
    let framing_ours = chunked
        || known.is_some()
        || status == http::StatusCode::NO_CONTENT
        || status.is_informational();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && framing_ours)
        {
            continue;
        }
        has_date |= name == header::DATE;
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // Nor are the response's headers (their map would live as long as the stream).
    drop(parts);
    if !has_date {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if status != http::StatusCode::NO_CONTENT && !status.is_informational() {
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if let Some(n) = known
            && status != http::StatusCode::NOT_MODIFIED
        {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(n.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let ended = if keep_alive {
        Written::KeepAlive
    } else {
        Written::Close
    };
    if bodiless || known == Some(0) {
        write_parts(stream, &[&head], stall).await?;
        // Dropped unpolled, as hyper does (the request log counts it as ended).
        return Ok(ended);
    }
    // One write per body frame, with what is due before it (the head, the first time) and,
    // when the body says it is over, after it (the last chunk): a streamed answer whose
    // first frame is ready costs one write and one client wake-up for its head and first
    // bytes, and none for its terminator.
    let mut head = Some(head);
    let mut body = Pin::new(&mut body);
    let mut pipelined = false;
    // The body's first frame if it has one now (`Some(None)`: it has ended).
    let mut next = std::future::poll_fn(|cx| match body.as_mut().poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => {
                if let Some(h) = head.take() {
                    // The body has nothing yet: the head goes out alone, now.
                    write_parts(stream, &[&h], stall).await?;
                }
                let frame = std::future::poll_fn(|cx| {
                    if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                        return Poll::Ready(Some(frame));
                    }
                    // Nothing to send: watch the socket so a client that goes away is
                    // noticed now.
                    if client_gone(cx, stream, &mut pipelined) {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                match frame {
                    Some(frame) => frame,
                    None => return Ok(Written::Gone),
                }
            }
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(never)) => match never {},
            None => {
                // Over with no frame to carry them: the head if still due, the terminator.
                let h = head.take();
                let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
                write_parts(stream, &[h.as_deref().unwrap_or_default(), end], stall).await?;
                break;
            }
        };
        let last = body.is_end_stream();
        let h = head.take();
        let h = h.as_deref().unwrap_or_default();
        if chunked {
            let mut size = [0u8; 18];
            let size = chunk_size_line(&mut size, data.len());
            let end: &[u8] = if last { b"\r\n0\r\n\r\n" } else { b"\r\n" };
            write_parts(stream, &[h, size, &data, end], stall).await?;
        } else {
            write_parts(stream, &[h, &data], stall).await?;
        }
        if last {
            break;
        }
    }
    Ok(if pipelined { Written::Pipelined } else { ended })
}

/// `len` as a chunk-size line (lower-case hex, CRLF), written into `buf`.
fn chunk_size_line(buf: &mut [u8; 18], len: usize) -> &[u8] {
    use crate::json::HEX;
    let mut i = 16;
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[i..]
}

/// Poll the socket of a streaming response: true when the client closed or failed. Bytes
/// a client sends meanwhile (a pipelined request) are not expected from the clients served
/// here: once some arrive the socket is no longer read (a client flooding it cannot keep
/// this task reading instead of streaming, and a client that leaves is then noticed by a
/// failed write), the response in progress finishes, and the connection closes with a
/// lingering close (`Written::Pipelined`).
fn client_gone(cx: &mut Context<'_>, stream: &mut TcpStream, pipelined: &mut bool) -> bool {
    if *pipelined {
        return false;
    }
    let mut probe = [0u8; 64];
    let mut rb = ReadBuf::new(&mut probe);
    match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) if rb.filled().is_empty() => true,
        Poll::Ready(Ok(())) => {
            *pipelined = true;
            false
        }
        Poll::Ready(Err(_)) => true,
        Poll::Pending => false,
    }
}

/// Write all of `parts` with vectored writes (no copy into a buffer). A client that takes
/// no byte for `stall` fails it with `TimedOut` (it stopped reading; its stream is dropped).
async fn write_parts(stream: &mut TcpStream, parts: &[&[u8]], stall: Duration) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let mut skip = written;
        let mut slices: [io::IoSlice<'_>; 4] = [io::IoSlice::new(&[]); 4];
        let mut k = 0;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            if let Some(slot) = slices.get_mut(k) {
                *slot = io::IoSlice::new(p.get(skip..).unwrap_or_default());
                k += 1;
            }
            skip = 0;
        }
        let write = stream.write_vectored(slices.get(..k).unwrap_or_default());
        let n = match tokio::time::timeout(stall, write).await {
            Ok(n) => n?,
            Err(_) => {
                tracing::info!(
                    secs = stall.as_secs(),
                    "a client read nothing of its response for the write stall time; dropped"
                );
                return Err(io::ErrorKind::TimedOut.into());
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

/// Close after an answer the client may still be sending a body for: stop writing, then
/// read and discard for a while so the close does not reset the connection (which could
/// destroy the answer before the client reads it).
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        // On the heap: an array here would size every connection's task.
        let mut sink = vec![0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeder(framing: Framing, bytes: &[u8]) -> Feeder {
        Feeder {
            framing,
            buf: bytes.to_vec(),
            shared: Arc::new(Mutex::new(Shared::default())),
            expect_continue: false,
            continue_sent: 0,
            received: 0,
            data: 0,
            trailers: 0,
            limit: 1 << 20,
        }
    }

    /// A body of unknown size: frames all ready at once, then the end; `tells` whether
    /// `is_end_stream` says so as soon as the last frame is taken (as the translating body
    /// does).
    struct Frames {
        frames: VecDeque<Bytes>,
        tells: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.tells && self.frames.is_empty()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_head_goes_with_a_ready_first_frame_and_the_terminator_with_the_last() {
        use http_body_util::BodyExt;
        for (tells, writes) in [(true, 3), (false, 4)] {
            let frames = ["one", "two", "three"].map(Bytes::from).into();
            let body = Frames { frames, tells }.boxed_unsync();
            let before = crate::test_support::thread_writes();
            let out = written(Response::new(body), false).await;
            // Head + "one", "two", "three" + the terminator; one write fewer when the body
            // does not say it is over after its last frame.
            assert_eq!(
                crate::test_support::thread_writes() - before,
                writes,
                "tells {tells}: {out:?}"
            );
            assert!(out.starts_with("http/1.1 200 ok\r\n"), "{out:?}");
            assert!(
                out.ends_with("\r\n\r\n3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"),
                "{out:?}"
            );
        }
    }

    /// What `write_response` puts on a real loopback socket for `resp`.
    async fn written(resp: Response<RespBody>, head_only: bool) -> String {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap().to_ascii_lowercase()
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let w = write_response(
            &mut server,
            resp,
            head_only,
            Version::HTTP_11,
            true,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(w, Written::KeepAlive);
        drop(server);
        client.await.unwrap()
    }

    #[tokio::test]
    async fn a_handlers_content_length_never_meets_chunked_coding_nor_a_second_length() {
        use http_body_util::BodyExt;
        let with_length = |body: RespBody, length: &'static str| {
            let mut resp = Response::new(body);
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
            resp
        };
        // Size unknown: chunked, and the handler's length is not written.
        let unsized_body = Frames {
            frames: [Bytes::from_static(b"hello")].into(),
            tells: false,
        }
        .boxed_unsync();
        let out = written(with_length(unsized_body, "5"), false).await;
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(!out.contains("content-length"), "{out}");
        assert!(out.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{out}");
        // Size known: one length, the body's own, whatever the handler said.
        let out = written(
            with_length(super::super::respond::full("hello"), "99"),
            false,
        )
        .await;
        assert_eq!(out.matches("content-length").count(), 1, "{out}");
        assert!(out.contains("content-length: 5\r\n"), "{out}");
        assert!(!out.contains("transfer-encoding"), "{out}");
        // HEAD of a body of unknown size: the handler's length stands alone.
        let unsized_body = Frames {
            frames: [Bytes::from_static(b"hello")].into(),
            tells: false,
        }
        .boxed_unsync();
        let out = written(with_length(unsized_body, "5"), true).await;
        assert!(out.contains("content-length: 5\r\n"), "{out}");
        assert!(!out.contains("transfer-encoding"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut buf = [0u8; 18];
        for (len, want) in [
            (0usize, "0\r\n"),
            (9, "9\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(chunk_size_line(&mut buf, len), want.as_bytes());
        }
    }

    fn body_of(f: &Feeder) -> Vec<u8> {
        let s = f.lock();
        s.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn a_head_is_parsed_and_removed_leaving_the_rest() {
        let mut buf = b"POST /v1/messages?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbodyGET".to_vec();
        let (req, framing, keep_alive, expect) = parse_head(&mut buf).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/v1/messages");
        assert_eq!(req.headers()["host"], "localhost");
        assert_eq!(framing, Framing::Length(4));
        assert!(keep_alive && expect);
        assert_eq!(buf, b"bodyGET");
    }

    #[test]
    fn connection_close_http_1_0_and_conflicting_lengths() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec();
        assert!(!parse_head(&mut buf).unwrap().2);
        let mut buf = b"GET / HTTP/1.0\r\n\r\n".to_vec();
        assert!(!parse_head(&mut buf).unwrap().2);
        let mut buf = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec();
        assert!(parse_head(&mut buf).unwrap().2);
        let mut buf =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
                .to_vec();
        assert_eq!(
            parse_head(&mut buf).unwrap_err().kind,
            ErrorKind::BadRequest
        );
        // Chunked wins over a length, and the connection is not reused.
        let mut buf =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (_, framing, keep_alive, _) = parse_head(&mut buf).unwrap();
        assert_eq!(framing, Framing::Chunked(Chunk::Size));
        assert!(!keep_alive);
    }

    #[test]
    fn a_chunked_body_is_decoded_and_the_next_head_is_left() {
        let mut f = feeder(
            Framing::Chunked(Chunk::Size),
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1",
        );
        assert!(f.decode().unwrap());
        assert!(f.finished());
        assert_eq!(body_of(&f), b"hello world");
        assert!(f.lock().ended);
        assert_eq!(f.buf, b"GET / HTTP/1.1");
    }

    #[test]
    fn a_chunked_body_split_anywhere_decodes_the_same() {
        let wire = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let mut f = feeder(Framing::Chunked(Chunk::Size), &wire[..cut]);
            f.decode().unwrap();
            f.buf.extend_from_slice(&wire[cut..]);
            f.decode().unwrap();
            assert!(f.finished(), "cut at {cut}");
            assert_eq!(body_of(&f), b"abc0123456789abcdef", "cut at {cut}");
        }
    }

    #[test]
    fn broken_chunks_fail() {
        let mut f = feeder(Framing::Chunked(Chunk::Size), b"zz\r\n");
        assert!(f.decode().is_err());
        let mut f = feeder(Framing::Chunked(Chunk::Size), b"3\r\nabcX\r\n");
        assert!(f.decode().is_err());
        // A chunk size is hex digits only (`from_str_radix` alone takes a sign), with
        // nothing around them; lines end with CRLF; no bare CR in an extension.
        for line in [
            &b"+5\r\n"[..],
            b"-0\r\n",
            b"0x5\r\n",
            b";a\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"5\t;a\r\n",
            b"5\n",
            b"5;a\rb\r\n",
            b"5;a\x00\r\n",
            b"11111111111111111\r\n",
        ] {
            let mut f = feeder(Framing::Chunked(Chunk::Size), line);
            let err = f.decode().unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::BadRequest,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // Leading zeros are only zeros.
        let mut f = feeder(
            Framing::Chunked(Chunk::Size),
            b"00000000000000000003\r\nabc\r\n0\r\n\r\n",
        );
        assert!(f.decode().unwrap());
        assert_eq!(body_of(&f), b"abc");
        // A bare LF after the data, in a trailer and as the blank line.
        for wire in [
            &b"3\r\nabc\n0\r\n\r\n"[..],
            b"0\r\nx: y\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: a\rb\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
        ] {
            let mut f = feeder(Framing::Chunked(Chunk::Size), wire);
            let err = f.decode().unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::BadRequest,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn trailers_have_a_cap_and_count_against_the_body_limit() {
        let trailer = |n: usize| format!("x-t: {}\r\n", "v".repeat(n));
        // At the cap (every trailer line and the blank line) they are fine.
        let line = trailer(MAX_TRAILER_BYTES - 2 - 7);
        let wire = format!("3\r\nabc\r\n0\r\n{line}\r\n");
        let mut f = feeder(Framing::Chunked(Chunk::Size), wire.as_bytes());
        assert!(f.decode().unwrap());
        assert!(f.finished());
        // One byte more is a 431, and so is a line that cannot end under the cap.
        let line = trailer(MAX_TRAILER_BYTES - 2 - 6);
        for wire in [
            format!("3\r\nabc\r\n0\r\n{line}\r\n"),
            format!("3\r\nabc\r\n0\r\nx-t: {}", "v".repeat(MAX_TRAILER_BYTES)),
        ] {
            let mut f = feeder(Framing::Chunked(Chunk::Size), wire.as_bytes());
            assert_eq!(f.decode().unwrap_err().kind, ErrorKind::HeadersTooLarge);
        }
        // Data and trailers together over the body limit: 413.
        let mut f = feeder(
            Framing::Chunked(Chunk::Size),
            b"3\r\nabc\r\n0\r\nx: yz\r\n\r\n",
        );
        f.limit = 8;
        assert_eq!(f.decode().unwrap_err().kind, ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn strict_framing_headers_and_host() {
        let status = |head: &str| {
            let mut buf = head.as_bytes().to_vec();
            parse_head(&mut buf)
                .map(|_| 200)
                .unwrap_or_else(|e| e.status(Protocol::OpenAi))
        };
        for (head, want) in [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                200,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
            ("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
        ] {
            assert_eq!(status(head), want, "{head:?}");
        }
    }

    #[test]
    fn a_long_chunk_size_line_fails_whether_or_not_its_end_arrived() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE + 1, b'x');
        let mut f = feeder(Framing::Chunked(Chunk::Size), &line);
        assert!(f.decode().is_err());
        line.extend_from_slice(b"\nhello\r\n0\r\n\r\n");
        let mut f = feeder(Framing::Chunked(Chunk::Size), &line);
        assert!(f.decode().is_err());
        // At the limit (its CR included) it is fine.
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE - 1, b'x');
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        let mut f = feeder(Framing::Chunked(Chunk::Size), &line);
        assert!(f.decode().unwrap());
        assert_eq!(body_of(&f), b"hello");
    }

    #[test]
    fn a_content_length_is_digits_only() {
        for value in ["+3", "-0", " 3 x", "0x3", "3 3", ""] {
            let mut buf =
                format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\nabc")
                    .into_bytes();
            assert!(parse_head(&mut buf).is_err(), "{value:?}");
        }
        let mut buf = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc".to_vec();
        assert_eq!(parse_head(&mut buf).unwrap().1, Framing::Length(3));
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let mut f = feeder(Framing::Length(3), b"abcGET");
        assert!(f.decode().unwrap());
        assert!(f.finished());
        assert_eq!(body_of(&f), b"abc");
        assert_eq!(f.buf, b"GET");
    }
}
