//! Field helpers over the simd-json tree of a request, shared by the dialects.
//!
//! Owns: reading a field (JSON `null` counts as absent), checking its type with an error
//! that names the parameter, the base64 check, parsing a body that must be an object, and
//! the conversation id the OpenAI dialects derive from a request.
//! Does not own: what a field means (each dialect's `request.rs`).

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::{Ctx, parse_body};
use crate::error::Error;
use crate::upstream::request::stable_id;

/// A 400 naming the offending parameter.
pub(crate) fn bad(param: &str, message: impl Into<String>) -> Error {
    Error::bad_request(message).with_param(param)
}

/// A field of an object, treating JSON `null` as absent (clients send `null` for unset).
pub(crate) fn field<'v, 'a>(v: &'v Value<'a>, key: &str) -> Option<&'v Value<'a>> {
    v.as_object()
        .and_then(|o| o.get(key))
        .filter(|v| !v.is_null())
}

/// "a string", "an array", … for error messages.
pub(crate) fn type_name(v: &Value<'_>) -> &'static str {
    if v.is_null() {
        "null"
    } else if v.is_bool() {
        "a boolean"
    } else if v.is_str() {
        "a string"
    } else if v.is_array() {
        "an array"
    } else if v.is_object() {
        "an object"
    } else {
        "a number"
    }
}

/// A string field, `None` when absent or not a string (the lenient reading).
pub(crate) fn str_field<'v>(v: &'v Value<'_>, key: &str) -> Option<&'v str> {
    field(v, key).and_then(|x| x.as_str())
}

/// A 400 for a value of the wrong type at `path` (the Messages wording).
pub(crate) fn type_error(path: &str, expected: &str, got: &Value<'_>) -> Error {
    Error::bad_request(format!(
        "{path}: expected {expected}, got {}",
        type_name(got)
    ))
    .with_param(path.to_owned())
}

pub(crate) fn want_str<'v>(v: &'v Value<'_>, param: &str) -> Result<&'v str, Error> {
    v.as_str().ok_or_else(|| {
        bad(
            param,
            format!("`{param}` must be a string, not {}", type_name(v)),
        )
    })
}

pub(crate) fn opt_str<'v>(
    obj: &'v Value<'_>,
    key: &str,
    param: &str,
) -> Result<Option<&'v str>, Error> {
    field(obj, key).map(|v| want_str(v, param)).transpose()
}

pub(crate) fn req_str<'v>(obj: &'v Value<'_>, key: &str, param: &str) -> Result<&'v str, Error> {
    opt_str(obj, key, param)?.ok_or_else(|| bad(param, format!("`{param}` is required")))
}

pub(crate) fn opt_bool(obj: &Value<'_>, key: &str) -> Result<Option<bool>, Error> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            bad(
                key,
                format!("`{key}` must be a boolean, not {}", type_name(v)),
            )
        }),
    }
}

pub(crate) fn want_array<'v, 'a>(v: &'v Value<'a>, param: &str) -> Result<&'v [Value<'a>], Error> {
    v.as_array().map(Vec::as_slice).ok_or_else(|| {
        bad(
            param,
            format!("`{param}` must be an array, not {}", type_name(v)),
        )
    })
}

pub(crate) fn want_object(v: &Value<'_>, param: &str) -> Result<(), Error> {
    if v.is_object() {
        Ok(())
    } else {
        Err(bad(
            param,
            format!("`{param}` must be an object, not {}", type_name(v)),
        ))
    }
}

/// Standard base64 with optional padding (no whitespace), checked without decoding.
pub(crate) fn is_base64(data: &[u8]) -> bool {
    let body_len = data.iter().rposition(|&b| b != b'=').map_or(0, |p| p + 1);
    let pad = data.len() - body_len;
    let body = data.get(..body_len).unwrap_or_default();
    !body.is_empty()
        && pad <= 2
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        && if pad > 0 {
            data.len().is_multiple_of(4)
        } else {
            body.len() % 4 != 1
        }
}

/// Parse a request body that must be a JSON object (the OpenAI dialects).
pub(crate) fn parse_object<'a>(body: &'a mut [u8], ctx: &Ctx<'_>) -> Result<Value<'a>, Error> {
    let root = parse_body(body, ctx.config.max_json_depth)?;
    if !root.is_object() {
        return Err(Error::bad_request("the request body must be a JSON object"));
    }
    Ok(root)
}

/// The request's `model`: required, a non-empty string.
pub(crate) fn req_model<'v>(root: &'v Value<'_>) -> Result<&'v str, Error> {
    let model = req_str(root, "model", "model")?;
    if model.is_empty() {
        return Err(bad("model", "`model` must not be empty"));
    }
    Ok(model)
}

/// The OpenAI dialects' conversation id: the client's `prompt_cache_key` when it is usable
/// as a header value (else hashed under `tag`), otherwise a stable hash of `parts` and the
/// client's `Authorization` header, so the backend's prefix cache hits across turns.
pub(crate) fn conversation_id(
    root: &Value<'_>,
    ctx: &Ctx<'_>,
    tag: &[u8],
    parts: &[&[u8]],
) -> Result<String, Error> {
    if let Some(key) = opt_str(root, "prompt_cache_key", "prompt_cache_key")?
        && !key.is_empty()
    {
        let header_safe = key.len() <= 200
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if header_safe {
            return Ok(key.to_owned());
        }
        let mut key_tag = tag.to_vec();
        key_tag.extend_from_slice(b"-key");
        return Ok(stable_id(&[&key_tag, key.as_bytes()]));
    }
    let auth = ctx
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
    all.push(tag);
    all.extend_from_slice(parts);
    all.push(auth);
    Ok(stable_id(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_check_allows_missing_padding_but_not_bad_lengths() {
        assert!(is_base64(b"abc"), "unpadded");
        assert!(!is_base64(b"abcde"));
        assert!(is_base64(b"abcd"));
        assert!(is_base64(b"ab=="));
        assert!(!is_base64(b"a==="));
        assert!(!is_base64(b"abc=="));
        assert!(!is_base64(b"ab c"));
        assert!(!is_base64(b""));
        assert!(!is_base64(b"=="));
    }
}
