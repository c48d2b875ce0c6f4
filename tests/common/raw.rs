//! Raw HTTP/1.1 over a loopback socket, for the framing and slow-client tests: the bytes a
//! test writes are exactly what the server reads, and how the connection ended (a clean
//! close, a reset) is visible.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the server's side of a connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A clean close (read returned 0).
    Closed,
    /// A reset or another read error.
    Reset,
    /// Still open when the test stopped waiting.
    Open,
}

/// One response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The head, lower-cased, without the blank line.
    pub head: String,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
    pub end: End,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} / {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the head has this header line (lower-case `name: value`).
    pub fn has(&self, line: &str) -> bool {
        self.head.lines().any(|l| l.trim() == line)
    }
}

/// Connects, writes `wire`, and reads until the server closes (or `wait` passes).
pub async fn send(addr: SocketAddr, wire: &[u8], wait: Duration) -> Reply {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(wire).await.unwrap();
    read_reply(&mut sock, wait).await
}

/// Reads until the server closes (or `wait` passes) and parses the first response.
pub async fn read_reply(sock: &mut TcpStream, wait: Duration) -> Reply {
    let (bytes, end) = read_to_close(sock, wait).await;
    parse(&bytes, end)
}

/// Everything the server sends until it closes, resets, or `wait` passes.
pub async fn read_to_close(sock: &mut TcpStream, wait: Duration) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match sock.read(&mut chunk).await {
                Ok(0) => return End::Closed,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(_) => return End::Reset,
            }
        }
    };
    let end = tokio::time::timeout(wait, read).await.unwrap_or(End::Open);
    (out, end)
}

/// The first response in `bytes`.
pub fn parse(bytes: &[u8], end: End) -> Reply {
    let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Reply {
            status: 0,
            head: String::from_utf8_lossy(bytes).into_owned(),
            body: Vec::new(),
            end,
        };
    };
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &bytes[split + 4..];
    let body = if head
        .lines()
        .any(|l| l.trim() == "transfer-encoding: chunked")
    {
        dechunk(rest)
    } else if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        head,
        body,
        end,
    }
}

/// A chunked body's data (as much as is complete).
pub fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = wire.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&wire[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok());
        let Some(size) = size else { break };
        let data = &wire[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        wire = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A request head for `path` with `extra` header lines (each ending in CRLF) and a body
/// framed by the caller.
pub fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n{extra}\r\n"
    )
}

/// `body` as one chunk, the last chunk and an empty trailer section.
pub fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

/// The Resident Set Size of process `pid`, in bytes (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The file descriptors process `pid` has open (Linux): its sockets among them.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The soft limit on open files of this process (Linux).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
