//! A minimal JSON span scanner: finds the byte range of a member's value without building a
//! tree. Input is the backend's JSON; anything malformed yields `None`, never a panic.
//! Fuzzed against serde_json (`fuzzing::json_spans`).
use std::ops::Range;

use memchr::memchr2;

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// End (exclusive) of the string whose opening quote is at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr2(b'"', b'\\', b.get(j..)?)?;
        if *b.get(j)? == b'\\' {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// End (exclusive) of the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The value span of member `key` among the first `limit` members of the object `b`.
pub fn leading_member(b: &[u8], key: &[u8], limit: usize) -> Option<Range<usize>> {
    let mut i = ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i = ws(b, i + 1);
    for _ in 0..limit {
        if *b.get(i)? != b'"' {
            return None;
        }
        let key_end = string_end(b, i)?;
        let k = b.get(i + 1..key_end - 1)?;
        i = ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        let start = ws(b, i + 1);
        let end = value_end(b, start)?;
        if k == key {
            return Some(start..end);
        }
        i = ws(b, end);
        if *b.get(i)? != b',' {
            return None;
        }
        i = ws(b, i + 1);
    }
    None
}

/// The value span of top-level member `key` of the object `b`.
pub fn member(b: &[u8], key: &[u8]) -> Option<Range<usize>> {
    leading_member(b, key, usize::MAX)
}

/// The spans of the elements of the array `b`.
pub fn elements(b: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut i = ws(b, 0);
    if *b.get(i)? != b'[' {
        return None;
    }
    i = ws(b, i + 1);
    let mut out = Vec::new();
    if *b.get(i)? == b']' {
        return Some(out);
    }
    loop {
        let end = value_end(b, i)?;
        out.push(i..end);
        i = ws(b, end);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// A non-negative JSON integer.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}
