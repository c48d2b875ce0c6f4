//! JSON output helpers for the hot path and the request translators.
//!
//! Owns: writing JSON strings (escaped) and scalars straight into byte buffers, joining
//! already-written values into an array, and writing a parsed `simd_json` value back out. Everything the proxy emits is written by hand with these
//! helpers, so no intermediate tree is built per event.
//!
//! `span` finds a member's value or an array's elements as byte ranges without parsing.
//!
//! Does not own: parsing (callers use `simd_json` directly).

pub mod span;

use bytes::BufMut;
use simd_json::prelude::*;

/// Lower-case hex digits (JSON `\u` escapes, HTTP chunk sizes).
pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes that need escaping in a JSON string: `"`, `\` and the control characters.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Write `s` as a quoted, escaped JSON string.
pub fn write_str<B: BufMut>(out: &mut B, s: &str) {
    out.put_u8(b'"');
    write_str_body(out, s);
    out.put_u8(b'"');
}

/// A mask with the high bit set in each byte of the little-endian word `w` that needs
/// escaping (`< 0x20`, `"`, `\\`): the "has less / has zero byte" tests of Bit Twiddling
/// Hacks. A borrow can only flag bytes above a flagged one, so the lowest set bit is exact.
#[inline]
fn escape_mask(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    control | has_zero(w ^ (LO * u64::from(b'"'))) | has_zero(w ^ (LO * u64::from(b'\\')))
}

/// The index of the first byte at or after `from` that needs escaping.
#[inline]
fn next_escape(bytes: &[u8], mut from: usize) -> Option<usize> {
    // Two words per step: one branch per 16 clean bytes.
    while let Some(Ok(pair)) = bytes.get(from..from + 16).map(<[u8; 16]>::try_from) {
        let (a, b) = pair.split_at(8);
        let lo = a
            .try_into()
            .map_or(0, |w| escape_mask(u64::from_le_bytes(w)));
        let hi = b
            .try_into()
            .map_or(0, |w| escape_mask(u64::from_le_bytes(w)));
        if lo | hi != 0 {
            let off = if lo != 0 {
                lo.trailing_zeros() / 8
            } else {
                8 + hi.trailing_zeros() / 8
            };
            return Some(from + off as usize);
        }
        from += 16;
    }
    while let Some(Ok(word)) = bytes.get(from..from + 8).map(<[u8; 8]>::try_from) {
        let mask = escape_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return Some(from + (mask.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    bytes
        .get(from..)?
        .iter()
        .position(|&b| ESCAPE[b as usize])
        .map(|k| from + k)
}

/// Write the escaped contents of `s` without the surrounding quotes.
///
/// Clean runs are found eight bytes at a time and copied in one `put_slice` (large tool
/// results in a 2 MB request are mostly clean text); the escaper jumps straight to the next
/// byte that needs escaping.
pub fn write_str_body<B: BufMut>(out: &mut B, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        if let Some(clean) = bytes.get(start..at) {
            out.put_slice(clean);
        }
        let b = bytes.get(at).copied().unwrap_or(0);
        match b {
            b'"' => out.put_slice(b"\\\""),
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            0x08 => out.put_slice(b"\\b"),
            0x0c => out.put_slice(b"\\f"),
            _ => out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        start = at + 1;
    }
    if let Some(clean) = bytes.get(start..) {
        out.put_slice(clean);
    }
}

/// Write `Some(s)` as a string and `None` as `null`.
pub fn write_opt_str<B: BufMut>(out: &mut B, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.put_slice(b"null"),
    }
}

/// Write an unsigned integer.
pub fn write_u64<B: BufMut>(out: &mut B, n: u64) {
    let mut buf = itoa_buf(n);
    let (digits, len) = (&mut buf.0, buf.1);
    out.put_slice(&digits[20 - len..]);
}

fn itoa_buf(mut n: u64) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    (buf, 20 - i)
}

/// `[a,b,…]` from values that are already JSON.
pub fn join_array<'a>(items: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.clone().map(|j| j.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

/// Write a parsed value back out as compact JSON.
pub fn write_value(out: &mut Vec<u8>, v: &simd_json::BorrowedValue<'_>) {
    // `Writable::write` only fails on I/O errors, which a Vec never produces.
    let _ = v.write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_match_serde_json() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "ctl \u{1} \u{1f} \n \r \t \u{8} \u{c}",
            "unicode é ✓ 😀",
            "",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn the_word_at_a_time_escaper_equals_serde_json_at_every_offset() {
        // Every special byte at every position of a 16+ byte run, plus multi-byte UTF-8.
        let specials = [
            '"', '\\', '\n', '\u{0}', '\u{1f}', ' ', 'é', '😀', '\u{7f}', '~',
        ];
        for &c in &specials {
            for at in 0..20 {
                let mut s: String = "abcdefghijklmnopqrstuvw".chars().take(at).collect();
                s.push(c);
                s.push_str("0123456789abcdef");
                let mut out = Vec::new();
                write_str(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
            }
        }
    }

    #[test]
    fn integers() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
