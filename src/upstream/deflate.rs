//! permessage-deflate (RFC 7692) for tungstenite, which does not implement it: an IO
//! adapter ([`Deflate`]) below the WebSocket, and the negotiation of the extension's
//! parameters ([`OFFER`], [`accept_response`] for a client, [`answer_offer`] for a server).
//!
//! Owns: the RFC 6455 frame parsing this needs in both directions, the raw DEFLATE
//! compression of outgoing messages (a client's each on its own: one compressor per
//! thread, reset after every message, which RFC 7692 always allows; a server's on the
//! socket's own compressor, its context kept unless the client negotiated
//! `server_no_context_takeover`), the decompressor of one socket
//! (the peer's context kept between messages unless it negotiated
//! `*_no_context_takeover`), the cap on an inflated message (against
//! decompression bombs), and the count of data-frame payload bytes as they crossed the
//! wire ([`Wire`]).
//!
//! How: until the negotiated parameters are set in the shared cell ([`Negotiated`]; set to
//! `None` when the extension was not negotiated) every byte passes through untouched, so
//! tungstenite's HTTP handshake runs over the adapter. A client holds what follows a `101`
//! answer's header block until the cell is set, so a frame sent right after the answer is
//! still inflated. Once negotiated, a data message tungstenite writes (one frame per
//! message) is unmasked, deflated, marked RSV1 and re-masked (client role) on its way out;
//! control frames, fragmented messages and very small messages go out as they are. A
//! compressed message read from the wire is collected up to its last fragment, inflated,
//! and handed to tungstenite as one plain frame (masked with a zero key in the server role,
//! where tungstenite expects masked frames). Invalid deflate data, a message over the cap or
//! a malformed compressed message is an `io::Error` (the socket fails like a broken one).
//!
//! Cost: a client socket holds only its decompressor (about 40 KiB with its window). A
//! compressor with a 15-bit window is a few hundred KiB: kept per socket it was 90 MB more
//! RSS at 256 open sockets (load bench, tls ws row) and would be 300 MB for the 1,024 idle
//! sockets the pool may keep, for ~4.1 against ~5 KB per chained turn of the tool-loop
//! bench. So a client's message never refers to an earlier one, and a thread's compressor
//! serves every socket. A server (the emulator, like a real backend) sends many small
//! event messages per request instead: resetting a compressor clears its 128 KiB hash table,
//! which per event cost more than compressing it (`cargo bench --bench codec deflate/write`),
//! so a server socket keeps its compressor, and its events refer to the earlier ones.
//!
//! Does not own: the handshake itself (the upstream client in `ws`, the emulator's server);
//! a leaf: it uses no other module of the crate.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a client offers in `Sec-WebSocket-Extensions` (the Codex CLI's offer).
pub(crate) const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Largest inflated message by default (tungstenite's limit on the upstream socket).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The compression level of outgoing messages. Level 1 against 6, on the Claude Code-like
/// tool loop of the load bench and the 2 MB request of the codec bench (`deflate/2MB`):
/// about a third of the CPU (a big first frame is the cost that shows), for continuation
/// frames of ~3 KB instead of ~0.4 KB against SSE's ~70 KB.
pub const LEVEL: u32 = 1;
/// Messages shorter than this go out uncompressed.
const MIN_COMPRESS: usize = 64;
/// Outgoing bytes buffered before a write waits for the socket.
const HIGH_WATER: usize = 256 * 1024;
/// The tail a sync flush ends with, stripped on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// Longest HTTP header block a client holds while it waits for the negotiation.
const MAX_HEAD: usize = 64 * 1024;
/// An empty buffer larger than this is let go (a socket may wait idle a long time).
const KEEP: usize = 64 * 1024;

/// Lets go of an empty buffer's memory when it grew large.
fn trim(b: &mut BytesMut) {
    if b.is_empty() && b.capacity() > KEEP {
        *b = BytesMut::new();
    }
}

/// Which end of the socket the adapter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Writes masked frames, reads unmasked ones.
    Client,
    /// Writes unmasked frames, reads masked ones.
    Server,
}

/// The negotiated parameters (RFC 7692 §7.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, 8..=15 (`None`: 15).
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window, 8..=15 (`None`: 15).
    pub client_max_window_bits: Option<u8>,
}

/// The parameters, set once after the handshake (`None`: not negotiated).
pub type Negotiated = Arc<OnceLock<Option<Params>>>;

/// Data-frame payload bytes as they crossed the wire (compressed when they were).
#[derive(Debug, Default)]
pub(crate) struct Wire {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The extensions of a `Sec-WebSocket-Extensions` header: each a name and its parameters
/// (name, optional value with quotes removed).
type Ext = (String, Vec<(String, Option<String>)>);

fn parse_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Ext>, String> {
    let mut out = Vec::new();
    for value in values {
        for ext in value.split(',') {
            let mut parts = ext.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            if name.is_empty() {
                if ext.trim().is_empty() {
                    continue;
                }
                return Err(format!("bad extension {ext:?}"));
            }
            let mut params = Vec::new();
            for p in parts {
                let (k, v) = match p.split_once('=') {
                    Some((k, v)) => {
                        let v = v.trim();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or(v);
                        (k.trim(), Some(v.to_owned()))
                    }
                    None => (p, None),
                };
                if k.is_empty() {
                    return Err(format!("bad extension parameter in {ext:?}"));
                }
                params.push((k.to_ascii_lowercase(), v));
            }
            out.push((name.to_ascii_lowercase(), params));
        }
    }
    Ok(out)
}

fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// Reads one permessage-deflate parameter list; `offer` allows a valueless
/// `client_max_window_bits` (an offer's "any window").
fn params_of(list: &[(String, Option<String>)], offer: bool) -> Result<Params, String> {
    let mut p = Params::default();
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in list {
        if seen.contains(&k.as_str()) {
            return Err(format!("duplicate parameter {k}"));
        }
        seen.push(k);
        match (k.as_str(), v.as_deref()) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                p.server_max_window_bits =
                    Some(window_bits(v).ok_or_else(|| format!("bad {k}={v}"))?);
            }
            ("client_max_window_bits", None) if offer => {}
            ("client_max_window_bits", Some(v)) => {
                p.client_max_window_bits =
                    Some(window_bits(v).ok_or_else(|| format!("bad {k}={v}"))?);
            }
            _ => return Err(format!("bad permessage-deflate parameter {k}")),
        }
    }
    Ok(p)
}

/// A client's reading of the `101` answer's `Sec-WebSocket-Extensions` values, after it
/// offered [`OFFER`]: `Ok(None)` when the server declined, an error (fail the handshake)
/// when it names another extension or invalid parameters.
pub(crate) fn accept_response<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Params>, String> {
    let exts = parse_extensions(values)?;
    match exts.as_slice() {
        [] => Ok(None),
        [(name, params)] if name == "permessage-deflate" => params_of(params, false).map(Some),
        [(name, _)] => Err(format!("the server chose an extension not offered: {name}")),
        _ => Err("the server chose more than one extension".to_owned()),
    }
}

/// A server's answer to the offers in `Sec-WebSocket-Extensions`: the first acceptable
/// permessage-deflate offer's parameters and the header value to answer with, or `None`
/// (no offer, or none acceptable). The server uses a 15-bit window unless the client
/// limits it, and never asks the client for a smaller one.
pub(crate) fn answer_offer<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Option<(Params, String)> {
    let exts = parse_extensions(values).ok()?;
    for (name, list) in exts {
        if name != "permessage-deflate" {
            continue;
        }
        let Ok(offer) = params_of(&list, true) else {
            continue;
        };
        let mut answer = String::from("permessage-deflate");
        let params = Params {
            server_no_context_takeover: offer.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover,
            server_max_window_bits: offer.server_max_window_bits,
            client_max_window_bits: None,
        };
        if params.server_no_context_takeover {
            answer.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = params.server_max_window_bits {
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        return Some((params, answer));
    }
    None
}

/// A parsed frame header.
struct Head {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Header length.
    start: usize,
    len: usize,
}

/// The header of the frame at the start of `buf`, once it is there; an error for a frame
/// longer than `cap`.
fn head(buf: &[u8], cap: usize) -> io::Result<Option<Head>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= cap)
        .ok_or_else(|| bad(format!("WebSocket frame of {len} bytes is too long")))?;
    let mask = if b1 & 0x80 != 0 {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Ok(Some(Head {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        start: at,
        len,
    }))
}

fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    if key == [0; 4] {
        return;
    }
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Appends one frame to `out`.
pub fn put_frame(out: &mut BytesMut, b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    out.reserve(payload.len() + 14);
    out.extend_from_slice(&[b0]);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[m | n as u8]),
        n if n <= usize::from(u16::MAX) => {
            out.extend_from_slice(&[m | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[m | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let from = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[from..], key);
        }
        None => out.extend_from_slice(payload),
    }
}

/// Raw-deflates `input` with a sync flush into `out`, without the trailing `00 00 ff ff`.
pub fn deflate(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(input.len() / 2 + 64);
    let start = c.total_in();
    loop {
        let done = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        let rest = input.get(done..).unwrap_or(&[]);
        c.compress_vec(rest, out, FlushCompress::Sync)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let done = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        if done >= input.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - 4);
    }
    Ok(())
}

/// Inflates `input` (ending with the restored tail) into `out`, at most `cap` bytes.
/// Returns whether the stream ended (a final block: the context starts over).
fn inflate(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>, cap: usize) -> io::Result<bool> {
    out.clear();
    out.reserve((input.len() * 4).clamp(1024, cap.max(1)));
    let start = d.total_in();
    loop {
        let before_in = d.total_in();
        let before_out = out.len();
        let done = usize::try_from(before_in - start).unwrap_or(usize::MAX);
        let rest = input.get(done..).unwrap_or(&[]);
        let status = d
            .decompress_vec(rest, out, FlushDecompress::Sync)
            .map_err(|e| bad(format!("permessage-deflate: invalid data: {e}")))?;
        if out.len() > cap {
            return Err(bad(format!(
                "permessage-deflate: message over {cap} bytes once inflated"
            )));
        }
        let done = usize::try_from(d.total_in() - start).unwrap_or(usize::MAX);
        if status == Status::StreamEnd {
            return Ok(true);
        }
        if done >= input.len() && out.len() < out.capacity() {
            return Ok(false);
        }
        if out.len() == out.capacity() {
            if out.len() >= cap {
                return Err(bad(format!(
                    "permessage-deflate: message over {cap} bytes once inflated"
                )));
            }
            let more = out.capacity().min(cap + 1 - out.len());
            out.reserve(more);
        } else if d.total_in() == before_in && out.len() == before_out {
            return Err(bad("permessage-deflate: truncated data"));
        }
    }
}

thread_local! {
    /// This thread's compressor and its window bits, reset after every message.
    static COMPRESSOR: RefCell<Option<(u8, Compress)>> = const { RefCell::new(None) };
}

/// A raw-deflate compressor at [`LEVEL`] with an LZ77 window of `bits` (9..=15).
fn compressor(bits: u8) -> Compress {
    let level = Compression::new(LEVEL);
    if bits == 15 {
        Compress::new(level, false)
    } else {
        Compress::new_with_window_bits(level, false, bits)
    }
}

/// Deflates `input` as a message on its own into `out`, with an LZ77 window of `bits`
/// (9..=15), on this thread's compressor.
fn deflate_message(bits: u8, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match &mut *slot {
            Some((b, c)) if *b == bits => c,
            other => &mut other.insert((bits, compressor(bits))).1,
        };
        let done = deflate(c, input, out);
        c.reset();
        done
    })
}

/// The outgoing side's state.
struct Out {
    /// Inside a fragmented message written as it is.
    fragmented: bool,
    scratch: Vec<u8>,
    /// The server role's own compressor, its context kept between messages.
    compress: Option<Compress>,
}

/// A compressed message being read.
struct Collecting {
    opcode: u8,
    data: Vec<u8>,
}

/// The IO adapter (see the module doc).
pub struct Deflate<S> {
    io: S,
    role: Role,
    params: Negotiated,
    wire: Arc<Wire>,
    cap: usize,
    /// Frames tungstenite wrote, not yet whole.
    w_in: BytesMut,
    /// Bytes to write to `io`.
    w_out: BytesMut,
    out: Out,
    /// Bytes read from `io`, not yet processed.
    r_in: BytesMut,
    /// Bytes for tungstenite.
    r_out: BytesMut,
    collecting: Option<Collecting>,
    decompress: Option<Decompress>,
    inflated: Vec<u8>,
    eof: bool,
    /// Client: the handshake answer has been seen (`Some(true)`: a 101, so what follows
    /// waits for the negotiation; `Some(false)`: everything passes).
    head: Option<bool>,
}

impl<S> Deflate<S> {
    /// Wraps `io`; `params` is set once the handshake is done (at once for a server).
    pub fn new(io: S, role: Role, params: Negotiated) -> Deflate<S> {
        Deflate {
            io,
            role,
            params,
            wire: Arc::new(Wire::default()),
            cap: MAX_MESSAGE,
            w_in: BytesMut::new(),
            w_out: BytesMut::new(),
            out: Out {
                fragmented: false,
                scratch: Vec::new(),
                compress: None,
            },
            r_in: BytesMut::new(),
            r_out: BytesMut::new(),
            collecting: None,
            decompress: None,
            inflated: Vec::new(),
            eof: false,
            head: None,
        }
    }

    /// Counts wire bytes in `wire` (shared with the caller).
    pub(crate) fn counting(mut self, wire: Arc<Wire>) -> Self {
        self.wire = wire;
        self
    }

    /// The largest inflated message accepted.
    pub(crate) fn max_message(mut self, cap: usize) -> Self {
        self.cap = cap;
        self
    }

    fn negotiated(&self) -> Option<Params> {
        self.params.get().copied().flatten()
    }

    /// Our own side's largest window.
    fn own_window(&self, p: &Params) -> Option<u8> {
        match self.role {
            Role::Client => p.client_max_window_bits,
            Role::Server => p.server_max_window_bits,
        }
    }

    fn peer_no_context_takeover(&self, p: &Params) -> bool {
        match self.role {
            Role::Client => p.server_no_context_takeover,
            Role::Server => p.client_no_context_takeover,
        }
    }

    /// Turns the whole frames of `w_in` into wire frames in `w_out`.
    fn process_out(&mut self, p: &Params) -> io::Result<()> {
        // Our window (zlib cannot do an 8-bit raw window: then messages go uncompressed).
        let bits = match self.own_window(p) {
            None => Some(15),
            Some(b) if b >= 9 => Some(b),
            Some(_) => None,
        };
        while let Some(h) = head(&self.w_in, usize::MAX)? {
            let total = h.start + h.len;
            if self.w_in.len() < total {
                break;
            }
            let data = h.opcode == 1 || h.opcode == 2;
            let compress = data && h.fin && !h.rsv1 && h.len >= MIN_COMPRESS;
            if h.opcode < 8 {
                if data {
                    self.out.fragmented = !h.fin;
                } else if h.opcode == 0 && h.fin {
                    self.out.fragmented = false;
                }
            }
            match bits.filter(|_| compress && !self.out.fragmented) {
                Some(bits) => {
                    let payload = &mut self.w_in[h.start..total];
                    if let Some(key) = h.mask {
                        apply_mask(payload, key);
                    }
                    let scratch = &mut self.out.scratch;
                    match self.role {
                        Role::Client => deflate_message(bits, payload, scratch)?,
                        Role::Server => {
                            let c = self.out.compress.get_or_insert_with(|| compressor(bits));
                            deflate(c, payload, scratch)?;
                            if p.server_no_context_takeover {
                                c.reset();
                            }
                        }
                    }
                    let mask = match self.role {
                        Role::Client => Some(fastrand::u32(..).to_ne_bytes()),
                        Role::Server => None,
                    };
                    put_frame(
                        &mut self.w_out,
                        0x80 | 0x40 | h.opcode,
                        mask,
                        &self.out.scratch,
                    );
                    self.wire
                        .sent
                        .fetch_add(self.out.scratch.len() as u64, Ordering::Relaxed);
                }
                None => {
                    if h.opcode < 8 {
                        self.wire.sent.fetch_add(h.len as u64, Ordering::Relaxed);
                    }
                    self.w_out.extend_from_slice(&self.w_in[..total]);
                }
            }
            self.w_in.advance(total);
        }
        trim(&mut self.w_in);
        if self.out.scratch.capacity() > KEEP {
            self.out.scratch = Vec::new();
        }
        Ok(())
    }

    /// Turns the whole frames of `r_in` into frames for tungstenite in `r_out`.
    fn process_in(&mut self, p: &Params) -> io::Result<()> {
        // A compressed message is at most the cap long on the wire too.
        while let Some(h) = head(&self.r_in, self.cap.saturating_add(16))? {
            let total = h.start + h.len;
            if self.r_in.len() < total {
                break;
            }
            let data = h.opcode == 1 || h.opcode == 2;
            if h.opcode < 8 {
                self.wire
                    .received
                    .fetch_add(h.len as u64, Ordering::Relaxed);
            }
            let collect = match (&self.collecting, h.opcode) {
                (Some(_), 0) if h.rsv1 => {
                    return Err(bad("permessage-deflate: RSV1 on a continuation frame"));
                }
                (Some(_), 0) => true,
                (Some(_), _) if data => {
                    return Err(bad(
                        "permessage-deflate: a new message inside a fragmented one",
                    ));
                }
                (None, _) => data && h.rsv1,
                _ => false,
            };
            if !collect {
                self.r_out.extend_from_slice(&self.r_in[..total]);
                self.r_in.advance(total);
                continue;
            }
            let c = self.collecting.get_or_insert_with(|| Collecting {
                opcode: h.opcode,
                data: Vec::new(),
            });
            if c.data.len() + h.len > self.cap {
                return Err(bad(format!(
                    "permessage-deflate: message over {} bytes",
                    self.cap
                )));
            }
            let from = c.data.len();
            c.data.extend_from_slice(&self.r_in[h.start..total]);
            if let Some(key) = h.mask {
                apply_mask(&mut c.data[from..], key);
            }
            self.r_in.advance(total);
            if !h.fin {
                continue;
            }
            let Some(mut c) = self.collecting.take() else {
                continue;
            };
            c.data.extend_from_slice(&TAIL);
            let peer_reset = self.peer_no_context_takeover(p);
            let d = self
                .decompress
                .get_or_insert_with(|| Decompress::new(false));
            let ended = inflate(d, &c.data, &mut self.inflated, self.cap)?;
            if ended || peer_reset {
                d.reset(false);
            }
            let mask = match self.role {
                Role::Client => None,
                Role::Server => Some([0; 4]),
            };
            put_frame(&mut self.r_out, 0x80 | c.opcode, mask, &self.inflated);
            if self.inflated.capacity() > KEEP {
                self.inflated = Vec::new();
            }
        }
        trim(&mut self.r_in);
        Ok(())
    }

    /// Before the negotiation, a client passes the handshake answer's header block and
    /// holds what follows a 101.
    fn process_head(&mut self) {
        if self.head.is_none() {
            let end = self.r_in.windows(4).position(|w| w == b"\r\n\r\n");
            match end {
                Some(i) => {
                    let is_101 = self.r_in.starts_with(b"HTTP/1.1 101")
                        || self.r_in.starts_with(b"HTTP/1.0 101");
                    self.r_out.extend_from_slice(&self.r_in[..i + 4]);
                    self.r_in.advance(i + 4);
                    self.head = Some(is_101);
                }
                None if self.r_in.len() > MAX_HEAD => self.head = Some(false),
                None => return,
            }
        }
        if self.head == Some(false) {
            let n = self.r_in.len();
            self.r_out.extend_from_slice(&self.r_in[..n]);
            self.r_in.clear();
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflate<S> {
    /// Writes `w_out` out; `Ready` once it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.w_out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.w_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.w_out.advance(n);
        }
        trim(&mut self.w_out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Deflate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.r_out.is_empty() {
                let n = this.r_out.len().min(buf.remaining());
                buf.put_slice(&this.r_out[..n]);
                this.r_out.advance(n);
                trim(&mut this.r_out);
                return Poll::Ready(Ok(()));
            }
            match this.params.get() {
                Some(Some(p)) => {
                    let p = *p;
                    this.process_in(&p)?;
                }
                Some(None) => {
                    let n = this.r_in.len();
                    this.r_out.extend_from_slice(&this.r_in[..n]);
                    this.r_in.clear();
                }
                None if this.role == Role::Client => this.process_head(),
                None => {
                    let n = this.r_in.len();
                    this.r_out.extend_from_slice(&this.r_in[..n]);
                    this.r_in.clear();
                }
            }
            if !this.r_out.is_empty() {
                continue;
            }
            if this.eof {
                // A partial frame at EOF: tungstenite sees the connection end.
                return Poll::Ready(Ok(()));
            }
            // Read into the caller's buffer, then take the bytes back for processing.
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            let got = &buf.filled()[start..];
            if got.is_empty() {
                this.eof = true;
            } else {
                this.r_in.extend_from_slice(got);
            }
            buf.set_filled(start);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Deflate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(p) = this.negotiated() else {
            if !this.w_in.is_empty() {
                let rest = this.w_in.split();
                this.w_out.extend_from_slice(&rest);
            }
            ready!(this.poll_drain(cx))?;
            return Pin::new(&mut this.io).poll_write(cx, data);
        };
        if this.w_out.len() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.w_in.extend_from_slice(data);
        this.process_out(&p)?;
        // Start writing now; what the socket does not take waits for the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

    type Ws = WebSocketStream<Deflate<DuplexStream>>;

    async fn ws(io: DuplexStream, role: Role, params: Option<Params>, wire: &Arc<Wire>) -> Ws {
        let ws_role = match role {
            Role::Client => WsRole::Client,
            Role::Server => WsRole::Server,
        };
        let io =
            Deflate::new(io, role, Arc::new(OnceLock::from(params))).counting(Arc::clone(wire));
        WebSocketStream::from_raw_socket(io, ws_role, None).await
    }

    /// A client and a server socket over a duplex pipe, with their wire counters.
    async fn pair(params: Option<Params>) -> (Ws, Ws, Arc<Wire>, Arc<Wire>) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (cw, sw) = (Arc::default(), Arc::default());
        let client = ws(a, Role::Client, params, &cw).await;
        let server = ws(b, Role::Server, params, &sw).await;
        (client, server, cw, sw)
    }

    /// A `response.create`-like frame: the same instructions and tools every turn, new
    /// input items.
    fn json_like(turn: usize) -> String {
        let tools: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"type":"function","name":"tool_{i}","description":"Runs the step {i} of the plan and reports what it changed in the working tree.","parameters":{{"type":"object","properties":{{"path":{{"type":"string"}}}}}}}}"#))
            .collect();
        let input: Vec<String> = (0..=turn)
            .map(|i| format!(r#"{{"type":"function_call_output","call_id":"call_{i:04}","output":"file {i}: {} lines changed"}}"#, i * 7 % 13))
            .collect();
        // Instructions of words drawn at random (the same every turn): text that does not
        // compress to nothing on its own.
        let mut rng = fastrand::Rng::with_seed(7);
        let words = [
            "agent",
            "repository",
            "careful",
            "tests",
            "patch",
            "the",
            "a",
            "of",
            "files",
            "review",
            "never",
            "always",
            "shell",
            "output",
            "plan",
            "user",
            "answer",
            "diff",
        ];
        let instructions: Vec<String> = (0..1500)
            .map(|_| format!("{}{}", words[rng.usize(..words.len())], rng.u16(..1000)))
            .collect();
        format!(
            r#"{{"type":"response.create","model":"gpt-5-codex","instructions":"{}","tools":[{}],"input":[{}],"store":false,"stream":true}}"#,
            instructions.join(" "),
            tools.join(","),
            input.join(",")
        )
    }

    async fn next_text(ws: &mut Ws) -> String {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn messages_round_trip_both_ways_each_on_its_own() {
        let (mut client, mut server, cw, sw) = pair(Some(Params::default())).await;
        let mut sizes = Vec::new();
        let mut payload = 0;
        for turn in 0..5 {
            let text = json_like(turn);
            payload += text.len() as u64;
            let before = cw.sent.load(Ordering::Relaxed);
            client.send(Message::text(text.clone())).await.unwrap();
            // A control frame between messages passes through (and is answered).
            client
                .send(Message::Ping(vec![1, 2, 3].into()))
                .await
                .unwrap();
            assert_eq!(next_text(&mut server).await, text);
            sizes.push(cw.sent.load(Ordering::Relaxed) - before);
            let event = format!(
                r#"{{"type":"response.output_text.delta","delta":"turn {turn} {}"}}"#,
                "ok ".repeat(50)
            );
            server.send(Message::text(event.clone())).await.unwrap();
            assert_eq!(next_text(&mut client).await, event);
        }
        let wire = cw.sent.load(Ordering::Relaxed);
        assert_eq!(sw.received.load(Ordering::Relaxed), wire);
        assert!(wire * 2 < payload, "wire {wire} vs payload {payload}");
        // Each message stands alone: a longer one costs more, whatever came before.
        assert!(
            sizes.windows(2).all(|w| w[0] <= w[1]),
            "per-turn wire bytes {sizes:?}"
        );
        // Tiny messages go as they are.
        client.send(Message::text("hi")).await.unwrap();
        assert_eq!(next_text(&mut server).await, "hi");
        client.close(None).await.unwrap();
        assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn without_context_takeover_each_message_stands_alone() {
        let params = Params {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Params::default()
        };
        let (mut client, mut server, cw, _) = pair(Some(params)).await;
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let before = cw.sent.load(Ordering::Relaxed);
            let text = json_like(3);
            client.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(next_text(&mut server).await, text);
            sizes.push(cw.sent.load(Ordering::Relaxed) - before);
            server.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(next_text(&mut client).await, text);
        }
        assert!(sizes[0] < json_like(3).len() as u64 / 2);
        assert_eq!(sizes[0], sizes[1]);
        assert_eq!(sizes[1], sizes[2]);
    }

    #[tokio::test]
    async fn a_server_keeps_its_context_unless_the_client_declined_it() {
        let declined = Params {
            server_no_context_takeover: true,
            ..Params::default()
        };
        for (params, kept) in [(Params::default(), true), (declined, false)] {
            let (mut client, mut server, _, sw) = pair(Some(params)).await;
            let event = json_like(2);
            let mut sizes = Vec::new();
            for _ in 0..3 {
                let before = sw.sent.load(Ordering::Relaxed);
                server.send(Message::text(event.clone())).await.unwrap();
                assert_eq!(next_text(&mut client).await, event);
                sizes.push(sw.sent.load(Ordering::Relaxed) - before);
            }
            if kept {
                // The repeats refer to the first message (level 1 finds only some of
                // the matches: 7477, 669, 1730 bytes).
                assert!(sizes[1] * 3 < sizes[0], "{sizes:?}");
                assert!(sizes[2] * 3 < sizes[0], "{sizes:?}");
            } else {
                assert_eq!((sizes[0], sizes[1]), (sizes[1], sizes[2]), "{sizes:?}");
            }
        }
    }

    #[tokio::test]
    async fn large_messages_cross_a_narrow_pipe_both_ways() {
        // A 4 KiB pipe: frames arrive in many reads and writes wait for the reader.
        let (a, b) = tokio::io::duplex(4096);
        let (cw, sw) = (Arc::default(), Arc::default());
        let params = Some(Params::default());
        let (mut client, mut server) = (
            ws(a, Role::Client, params, &cw).await,
            ws(b, Role::Server, params, &sw).await,
        );
        let mut rng = fastrand::Rng::with_seed(3);
        let texts: Vec<String> = (0..3)
            .map(|_| (0..200_000).map(|_| rng.alphanumeric()).collect::<String>())
            .collect();
        let sent = texts.clone();
        let writer = tokio::spawn(async move {
            for t in sent {
                client.send(Message::text(t)).await.unwrap();
            }
            client
        });
        for t in &texts {
            assert_eq!(&next_text(&mut server).await, t);
        }
        let mut client = writer.await.unwrap();
        let sent = texts.clone();
        let writer = tokio::spawn(async move {
            for t in sent {
                server.send(Message::text(t)).await.unwrap();
            }
        });
        for t in &texts {
            assert_eq!(&next_text(&mut client).await, t);
        }
        writer.await.unwrap();
        assert_eq!(
            cw.sent.load(Ordering::Relaxed),
            sw.received.load(Ordering::Relaxed)
        );
    }

    #[tokio::test]
    async fn a_narrow_client_window_still_round_trips() {
        for bits in [8, 9, 12] {
            let params = Params {
                client_max_window_bits: Some(bits),
                server_max_window_bits: Some(bits),
                ..Params::default()
            };
            let (mut client, mut server, _, _) = pair(Some(params)).await;
            for turn in 0..3 {
                let text = json_like(turn);
                client.send(Message::text(text.clone())).await.unwrap();
                assert_eq!(next_text(&mut server).await, text);
                server.send(Message::text(text.clone())).await.unwrap();
                assert_eq!(next_text(&mut client).await, text);
            }
        }
    }

    #[tokio::test]
    async fn not_negotiated_passes_every_byte() {
        let (mut client, mut server, cw, sw) = pair(None).await;
        let text = json_like(2);
        client.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_text(&mut server).await, text);
        server.send(Message::binary(vec![7u8; 300])).await.unwrap();
        assert!(matches!(client.next().await, Some(Ok(Message::Binary(b))) if b.len() == 300));
        assert_eq!(cw.sent.load(Ordering::Relaxed), 0);
        assert_eq!(sw.received.load(Ordering::Relaxed), 0);
    }

    /// One compressed message as raw frames from a server: `parts` fragments, a ping
    /// between the first two.
    fn fragmented(c: &mut Compress, text: &str, parts: usize) -> BytesMut {
        let mut z = Vec::new();
        deflate(c, text.as_bytes(), &mut z).unwrap();
        let step = z.len().div_ceil(parts);
        let mut out = BytesMut::new();
        for (i, chunk) in z.chunks(step).enumerate() {
            let fin = if (i + 1) * step >= z.len() { 0x80 } else { 0 };
            let b0 = if i == 0 { 0x40 | 1 } else { 0 };
            put_frame(&mut out, fin | b0, None, chunk);
            if i == 0 {
                put_frame(&mut out, 0x80 | 9, None, b"ping");
            }
        }
        out
    }

    #[tokio::test]
    async fn a_fragmented_compressed_message_with_a_ping_inside_is_inflated() {
        let (a, mut raw) = tokio::io::duplex(1 << 16);
        let mut client = ws(a, Role::Client, Some(Params::default()), &Arc::default()).await;
        let mut c = Compress::new(Compression::default(), false);
        let texts = [json_like(1), json_like(2)];
        for t in &texts {
            raw.write_all(&fragmented(&mut c, t, 3)).await.unwrap();
        }
        for t in &texts {
            assert!(matches!(client.next().await, Some(Ok(Message::Ping(p))) if &p[..] == b"ping"));
            assert!(matches!(client.next().await, Some(Ok(Message::Text(x))) if x.as_str() == t));
        }
    }

    #[tokio::test]
    async fn bad_deflate_data_and_oversized_messages_fail_the_socket() {
        let (a, mut raw) = tokio::io::duplex(1 << 16);
        let mut client = ws(a, Role::Client, Some(Params::default()), &Arc::default()).await;
        let mut frame = BytesMut::new();
        put_frame(&mut frame, 0x80 | 0x40 | 1, None, &[0xff; 40]);
        raw.write_all(&frame).await.unwrap();
        assert!(matches!(client.next().await, Some(Err(_))));

        // A message that inflates past the cap (the server's cap is 4 KiB here).
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut client = ws(a, Role::Client, Some(Params::default()), &Arc::default()).await;
        let io = Deflate::new(
            b,
            Role::Server,
            Arc::new(OnceLock::from(Some(Params::default()))),
        )
        .max_message(4096);
        let mut server = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
        client.send(Message::text("a".repeat(3000))).await.unwrap();
        assert_eq!(next_text(&mut server).await.len(), 3000);
        client
            .send(Message::text("a".repeat(100_000)))
            .await
            .unwrap();
        let got = server.next().await;
        assert!(matches!(got, Some(Err(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_client_holds_what_follows_the_101_until_the_negotiation() {
        let (a, mut raw) = tokio::io::duplex(1 << 16);
        let cell: Negotiated = Arc::default();
        let io = Deflate::new(a, Role::Client, Arc::clone(&cell));
        let text = json_like(4);
        let server = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = raw.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(
                req.to_ascii_lowercase().contains(
                    "sec-websocket-extensions: permessage-deflate; client_max_window_bits"
                )
            );
            let key = req
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("sec-websocket-key:")
                        .then(|| l[18..].trim().to_owned())
                })
                .unwrap();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut out = BytesMut::from(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n\r\n").as_bytes());
            // The first event in the same write as the answer.
            let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
            let mut z = Vec::new();
            deflate(&mut c, text.as_bytes(), &mut z).unwrap();
            put_frame(&mut out, 0x80 | 0x40 | 1, None, &z);
            raw.write_all(&out).await.unwrap();
            raw
        });
        let req = http::Request::get("ws://localhost/v1/responses")
            .header("host", "localhost")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .header("sec-websocket-extensions", OFFER)
            .body(())
            .unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, io).await.unwrap();
        let values = resp
            .headers()
            .get_all("sec-websocket-extensions")
            .iter()
            .map(|v| v.to_str().unwrap());
        let params = accept_response(values).unwrap();
        assert_eq!(params.and_then(|p| p.server_max_window_bits), Some(12));
        cell.set(params).unwrap();
        let _raw = server.await.unwrap();
        assert_eq!(next_text_of(&mut ws).await, json_like(4));
    }

    async fn next_text_of<S: AsyncRead + AsyncWrite + Unpin>(
        ws: &mut WebSocketStream<S>,
    ) -> String {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[test]
    fn negotiation_follows_rfc_7692() {
        assert_eq!(accept_response([]), Ok(None));
        assert_eq!(
            accept_response(["permessage-deflate"]),
            Ok(Some(Params::default()))
        );
        assert_eq!(
            accept_response([
                "permessage-deflate; client_max_window_bits=10; server_no_context_takeover"
            ]),
            Ok(Some(Params {
                client_max_window_bits: Some(10),
                server_no_context_takeover: true,
                ..Params::default()
            }))
        );
        assert_eq!(
            accept_response([r#"permessage-deflate; server_max_window_bits="9""#])
                .map(|p| p.and_then(|p| p.server_max_window_bits)),
            Ok(Some(9))
        );
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert!(accept_response([bad]).is_err(), "{bad}");
        }

        assert_eq!(answer_offer([]), None);
        assert_eq!(answer_offer(["x-other"]), None);
        let (p, a) = answer_offer([OFFER]).unwrap();
        assert_eq!((p, a.as_str()), (Params::default(), "permessage-deflate"));
        // An offer with bad parameters is skipped for the next one.
        let (p, a) = answer_offer([
            "permessage-deflate; client_max_window_bits=99, permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
        ])
        .unwrap();
        assert_eq!(p.server_max_window_bits, Some(10));
        assert!(p.client_no_context_takeover);
        assert_eq!(
            a,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
        );
        // Our reading of our own answer gives the same parameters.
        assert_eq!(accept_response([a.as_str()]), Ok(Some(p)));
    }
}
