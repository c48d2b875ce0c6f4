//! JSON output helpers for the hot path and the request translators.
//!
//! Owns: writing JSON strings (escaped) and scalars straight into byte buffers, joining
//! already-written values into an array, and writing a parsed `simd_json` value back out
//! (`write_value`, the one value writer: key order kept, strings copied from the request's
//! text where they can be). Everything the proxy emits is written by hand with these helpers,
//! so no intermediate tree is built per event.
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

/// The client's request body as it arrived, next to the buffer simd-json parsed it in:
/// a string of the parsed document is written upstream by copying its original JSON text
/// when that text is exactly what [`write_str`] would write (true of nearly every string a
/// JavaScript client such as Claude Code sends: `JSON.stringify` escapes the same bytes the
/// same way), instead of escaping the unescaped copy again. Large tool results make up most
/// of a long conversation, so this is most of the translation's writing.
///
/// It relies on how simd-json parses in place: a string's unescaped bytes are written over
/// its own text, starting right after its opening quote, so a parsed `&str` that lies inside
/// the parsed buffer starts at the same offset as its original text. Callers pass whole
/// strings of the document (never a slice of one); every use checks that the string lies in
/// the parsed buffer right after a quote, and falls back to [`write_str`] for anything else
/// (a string the parser had to own, a copy, a non-canonical escape such as `\/` or
/// `\u00e9`). simd-json rejects raw control characters inside strings, so only the escapes
/// need checking.
pub struct RawStrings<'r> {
    raw: &'r [u8],
    /// Address of the parsed buffer's first byte.
    base: usize,
    /// Finders for `\u` and `\/`, built once per request.
    unicode: memchr::memmem::Finder<'static>,
    solidus: memchr::memmem::Finder<'static>,
}

impl<'r> RawStrings<'r> {
    /// Strings shorter than this are escaped directly (checking costs about as much).
    const MIN_LEN: usize = 48;

    /// `raw`: the body before parsing; `parsed`: the buffer it was copied into and is parsed
    /// in place (only its address is kept).
    pub fn new(raw: &'r [u8], parsed: &[u8]) -> RawStrings<'r> {
        RawStrings {
            raw,
            base: parsed.as_ptr() as usize,
            unicode: memchr::memmem::Finder::new(b"\\u"),
            solidus: memchr::memmem::Finder::new(b"\\/"),
        }
    }

    /// No original text: every string is escaped.
    pub fn none() -> RawStrings<'static> {
        RawStrings::new(&[], &[])
    }

    /// The original JSON text of the parsed string `s` (without quotes) when it is exactly
    /// what `write_str_body` would write for `s`.
    fn span(&self, s: &str) -> Option<&'r [u8]> {
        if s.len() < Self::MIN_LEN {
            return None;
        }
        let off = (s.as_ptr() as usize).checked_sub(self.base)?;
        if off == 0 || self.raw.get(off - 1) != Some(&b'"') {
            return None;
        }
        let text = self.raw.get(off..)?;
        // The text is at least as long as `s`: its closing quote is the first quote from
        // there on that an odd run of backslashes does not escape.
        let mut end = s.len();
        loop {
            end += memchr::memchr(b'"', text.get(end..)?)?;
            let run = text
                .get(..end)?
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count();
            if run.is_multiple_of(2) {
                break;
            }
            end += 1;
        }
        let text = text.get(..end)?;
        // Every escape is then one of the short ones (`\"`, `\\`, `\n`, …), which is how
        // `write_str` writes those bytes, except a `\/` (never canonical) and a `\u` (only
        // as `\u00XX`, lower-case, for a control character without a short form); no other
        // byte needs escaping (the parser rejected raw control characters). A `\u` or `\/`
        // after an escaped backslash is text, not an escape.
        let mut from = 0;
        while let Some(at) = self.unicode.find(text.get(from..)?).map(|k| from + k) {
            if escapes(text, at) && !canonical_unicode(text.get(at + 2..at + 6)?) {
                return None;
            }
            from = at + 2;
        }
        let mut from = 0;
        while let Some(at) = self.solidus.find(text.get(from..)?).map(|k| from + k) {
            if escapes(text, at) {
                return None;
            }
            from = at + 2;
        }
        Some(text)
    }

    /// [`write_str`] for a whole string of the parsed document.
    pub fn write_str(&self, out: &mut Vec<u8>, s: &str) {
        match self.span(s) {
            Some(text) => {
                out.reserve(text.len() + 2);
                out.push(b'"');
                out.extend_from_slice(text);
                out.push(b'"');
            }
            None => write_str(out, s),
        }
    }

    /// [`write_str_body`] for a whole string of the parsed document.
    pub fn write_str_body(&self, out: &mut Vec<u8>, s: &str) {
        match self.span(s) {
            Some(text) => out.extend_from_slice(text),
            None => write_str_body(out, s),
        }
    }
}

/// Whether the backslash at `at` starts an escape (an even run of backslashes precedes it).
fn escapes(text: &[u8], at: usize) -> bool {
    let run = text
        .get(..at)
        .map_or(0, |t| t.iter().rev().take_while(|&&b| b == b'\\').count());
    run.is_multiple_of(2)
}

/// Whether the four hex digits of a `\u` escape are the way `write_str` writes that
/// character: `00XX` in lower case, for a control character without a short form.
fn canonical_unicode(hex: &[u8]) -> bool {
    let &[b'0', b'0', hi, lo] = hex else {
        return false;
    };
    let lo = match lo {
        b'0'..=b'9' => lo - b'0',
        b'a'..=b'f' => lo - b'a' + 10,
        _ => return false,
    };
    let c = match hi {
        b'0' => lo,
        b'1' => 16 + lo,
        _ => return false,
    };
    !matches!(c, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
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

/// Write `template` with each `#` in it replaced by the next of `counts`: a JSON object of
/// counts from one line of its text (the templates hold no other `#`).
pub fn write_counts<B: BufMut>(out: &mut B, template: &[u8], counts: &[u64]) {
    let mut parts = template.split(|&b| b == b'#');
    if let Some(first) = parts.next() {
        out.put_slice(first);
    }
    for (part, &n) in parts.zip(counts) {
        write_u64(out, n);
        out.put_slice(part);
    }
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

/// Write a parsed value as compact JSON. Objects keep the client's key order (simd-json keeps
/// insertion order up to 32 keys); larger objects are written with sorted keys, so the bytes
/// sent upstream stay stable between requests (prompt caching) whatever the map's hasher does.
/// Strings are copied from the request's text where they can be (`raw`), else escaped.
pub fn write_value(
    out: &mut Vec<u8>,
    v: &simd_json::BorrowedValue<'_>,
    raw: Option<&RawStrings<'_>>,
) {
    use simd_json::BorrowedValue as Value;
    let string = |out: &mut Vec<u8>, s: &str| match raw {
        Some(raw) => raw.write_str(out, s),
        None => write_str(out, s),
    };
    match v {
        // `Writable::write` only fails on I/O errors, which a Vec never produces.
        Value::Static(_) => {
            let _ = v.write(out);
        }
        Value::String(s) => string(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x, raw);
            }
            out.push(b']');
        }
        Value::Object(o) => {
            let member = |out: &mut Vec<u8>, i: usize, k: &str, x: &Value<'_>| {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                write_value(out, x, raw);
            };
            out.push(b'{');
            if o.len() <= 32 {
                for (i, (k, x)) in o.iter().enumerate() {
                    member(out, i, k, x);
                }
            } else {
                let mut entries: Vec<_> = o.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    member(out, i, k, x);
                }
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fill_a_template_in_order() {
        let mut out = Vec::new();
        write_counts(
            &mut out,
            br#"{"a":#,"b":{"c":#},"d":0}"#,
            &[7, 18_446_744_073_709_551_615],
        );
        assert_eq!(out, br#"{"a":7,"b":{"c":18446744073709551615},"d":0}"#);
        out.clear();
        write_counts(&mut out, b"#", &[0]);
        assert_eq!(out, b"0");
    }

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
    fn raw_strings_write_what_write_str_writes() {
        let long = "x".repeat(60);
        // Canonical text (as JSON.stringify and serde_json write it) and every kind of
        // non-canonical escape, each inside a string long enough to be copied.
        let pieces = [
            r#"plain"#,
            r#"quote \" backslash \\ newline \n tab \t cr \r bs \b ff \f"#,
            r#"ctl \u0001 \u001f \u001b"#,
            r#"del \u007f"#,
            r#"solidus \/ here"#,
            r#"upper \u001F hex"#,
            r#"short form spelled long \u000a"#,
            r#"non-ascii \u00e9 escaped"#,
            r#"surrogates \ud83d\ude00"#,
            "raw non-ascii é ✓ 😀",
            r#"ends in an escape \\"#,
        ];
        let mut doc = String::from("{\"a\":[");
        for (i, p) in pieces.iter().enumerate() {
            if i > 0 {
                doc.push(',');
            }
            doc.push_str(&format!(
                "\"{p} {long}\",\"{p}\",{{\"{long} {p}\":\"{p}{long}\"}}"
            ));
        }
        doc.push_str("]}");
        let original = doc.clone().into_bytes();
        let mut parsed = original.clone();
        let raw = RawStrings::new(&original, &parsed);
        let v = simd_json::to_borrowed_value(&mut parsed).unwrap();
        fn walk<'v>(v: &'v simd_json::BorrowedValue<'_>, out: &mut Vec<&'v str>) {
            match v {
                simd_json::BorrowedValue::String(s) => out.push(s),
                simd_json::BorrowedValue::Array(a) => a.iter().for_each(|x| walk(x, out)),
                simd_json::BorrowedValue::Object(o) => o.iter().for_each(|(k, x)| {
                    out.push(k);
                    walk(x, out)
                }),
                simd_json::BorrowedValue::Static(_) => {}
            }
        }
        let mut strings = Vec::new();
        walk(&v, &mut strings);
        // Four strings per piece, and the key "a".
        assert_eq!(strings.len(), pieces.len() * 4 + 1);
        let mut copied = 0;
        for &s in &strings {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            raw.write_str(&mut a, s);
            write_str(&mut b, s);
            assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            raw.write_str_body(&mut a, s);
            write_str_body(&mut b, s);
            assert_eq!(a, b);
            copied += usize::from(raw.span(s).is_some());
        }
        // The canonical long strings (plain, short escapes, control escapes, raw
        // non-ASCII, a trailing escape) are copied: three long strings each, plus the short
        // escapes piece alone, which is long enough by itself.
        assert_eq!(copied, 5 * 3 + 1);
        // A copy (outside the parsed buffer) and a missing original are escaped.
        let owned = strings[0].to_owned();
        assert!(raw.span(&owned).is_none());
        assert!(RawStrings::none().span(strings[0]).is_none());
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
