//! The request rules of `POST /codex/responses` (§5.3, §6): a strict top-level allow-list,
//! `store`/`stream`/`instructions` (optional for lite models, §7.1), catalog checks, tool names, and the item-consistency
//! rules (call/output pairing, reasoning items and their `encrypted_content`, replayed
//! item ids, image data). Every rejection carries the exact body the real backend sends.
//!
//! `encrypted_content` is self-verifying (a keyed SHA-256 over the item id with a
//! per-emulator secret), so checking it needs no state.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::shared::Shared;
use super::util::{lock, random_alnum};

/// A rejection: HTTP status and JSON body.
pub(super) struct Reject {
    pub(super) status: u16,
    pub(super) body: Value,
}

fn detail(msg: impl Into<String>) -> Reject {
    Reject {
        status: 400,
        body: json!({ "detail": msg.into() }),
    }
}

fn item_error(msg: impl Into<String>) -> Reject {
    invalid(msg, "input", Value::Null)
}

fn invalid(msg: impl Into<String>, param: &str, code: Value) -> Reject {
    Reject {
        status: 400,
        body: json!({"error": {"message": msg.into(), "type": "invalid_request_error", "param": param, "code": code}}),
    }
}

/// The backend's fields, and `client_metadata` (WebSocket frames carry it).
fn allowed(key: &str) -> bool {
    crate::upstream::request::BODY_FIELDS.contains(&key) || key == "client_metadata"
}

const SEAL_PREFIX: &str = "gAAAAA";
const MAC_LEN: usize = 32;

fn mac(secret: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(payload);
    h.finalize().to_vec()
}

/// Opaque, verifiable `encrypted_content` for item `id` of `kind` (`reasoning`, `compaction`).
pub(super) fn seal(secret: &[u8; 32], kind: &str, id: &str) -> String {
    let mut payload = Vec::with_capacity(kind.len() + id.len() + 200);
    payload.extend_from_slice(kind.as_bytes());
    payload.push(0x1f);
    payload.extend_from_slice(id.as_bytes());
    payload.push(0x1f);
    // Filler: real blobs are large and opaque; this keeps ours from looking like ids.
    payload.extend_from_slice(random_alnum(160).as_bytes());
    let tag = mac(secret, &payload);
    payload.extend_from_slice(&tag);
    format!("{SEAL_PREFIX}{}", URL_SAFE.encode(payload))
}

/// The item id sealed in `enc`, if this emulator issued it for `kind` and it is unaltered.
pub(super) fn unseal(secret: &[u8; 32], kind: &str, enc: &str) -> Option<String> {
    let raw = URL_SAFE.decode(enc.strip_prefix(SEAL_PREFIX)?).ok()?;
    let split = raw.len().checked_sub(MAC_LEN)?;
    let (payload, tag) = raw.split_at(split);
    if mac(secret, payload) != tag {
        return None;
    }
    let mut fields = payload.split(|&b| b == 0x1f);
    let k = fields.next()?;
    let id = fields.next()?;
    (k == kind.as_bytes()).then(|| String::from_utf8_lossy(id).into_owned())
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_tools(tools: &[Value], prefix: &str) -> Result<(), Reject> {
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        let ty = tool.get("type").and_then(Value::as_str).unwrap_or("");
        if let Some(name) = tool.get("name").and_then(Value::as_str)
            && matches!(ty, "function" | "custom" | "namespace")
            && !valid_tool_name(name)
        {
            return Err(invalid(
                format!(
                    "Invalid '{path}.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got '{name}'."
                ),
                &format!("{path}.name"),
                json!("invalid_value"),
            ));
        }
        if ty == "namespace"
            && let Some(inner) = tool.get("tools").and_then(Value::as_array)
        {
            check_tools(inner, &format!("{path}.tools"))?;
        }
    }
    Ok(())
}

fn valid_image_bytes(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
        || b.starts_with(&[0xff, 0xd8, 0xff])
        || b.starts_with(b"GIF87a")
        || b.starts_with(b"GIF89a")
        || (b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP".as_slice()))
}

fn check_image(part: &Value) -> Result<(), Reject> {
    let bad = || item_error("The image data you provided does not represent a valid image");
    match part.get("image_url").and_then(Value::as_str) {
        Some(url) if url.starts_with("data:") => {
            let (_, data) = url.split_once(";base64,").ok_or_else(bad)?;
            let bytes = STANDARD_PAD_INDIFFERENT
                .decode(data.trim())
                .map_err(|_| bad())?;
            if valid_image_bytes(&bytes) {
                Ok(())
            } else {
                Err(bad())
            }
        }
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(()),
        None if part.get("file_id").and_then(Value::as_str).is_some() => Ok(()),
        _ => Err(bad()),
    }
}

fn check_parts(content: Option<&Value>) -> Result<(), Reject> {
    if let Some(parts) = content.and_then(Value::as_array) {
        for part in parts {
            if part.get("type").and_then(Value::as_str) == Some("input_image") {
                check_image(part)?;
            }
        }
    }
    Ok(())
}

/// The item's type; the public API allows a bare `{role, content}` message.
pub(super) fn item_type(item: &Value) -> &str {
    match item.get("type").and_then(Value::as_str) {
        Some(t) => t,
        None if item.get("role").is_some() => "message",
        None => "",
    }
}

fn check_input(shared: &Shared, secret: &[u8; 32], input: &[Value]) -> Result<(), Reject> {
    let followers: HashMap<String, String> = {
        let map = lock(&shared.followers);
        input
            .iter()
            .filter_map(|it| it.get("id").and_then(Value::as_str))
            .filter_map(|id| map.get(id).map(|rs| (id.to_owned(), rs.clone())))
            .collect()
    };
    let mut calls: HashSet<&str> = HashSet::new();
    let mut reasoning: HashSet<String> = HashSet::new();
    for (i, item) in input.iter().enumerate() {
        let ty = item_type(item);
        let id = item.get("id").and_then(Value::as_str);
        if let Some(id) = id
            && let Some(rs) = followers.get(id)
            && !reasoning.contains(rs)
        {
            return Err(item_error(format!(
                "Item '{id}' of type '{ty}' was provided without its required 'reasoning' item: '{rs}'."
            )));
        }
        match ty {
            "message" => {
                if item.get("role").and_then(Value::as_str) == Some("system") {
                    return Err(detail("System messages are not allowed"));
                }
                check_parts(item.get("content"))?;
            }
            "reasoning" => {
                let shown = id.unwrap_or("rs_unknown");
                let Some(enc) = item.get("encrypted_content").and_then(Value::as_str) else {
                    return Err(item_error(format!(
                        "Item with id '{shown}' not found. Items are not persisted when `store` is set to false."
                    )));
                };
                let sealed = unseal(secret, "reasoning", enc)
                    .filter(|sealed_id| id.is_none_or(|id| id == sealed_id));
                let Some(rs_id) = sealed else {
                    return Err(item_error(format!(
                        "The encrypted content for item {shown} could not be verified."
                    )));
                };
                if input.get(i + 1).is_none() {
                    return Err(item_error(format!(
                        "Item '{rs_id}' of type 'reasoning' was provided without its required following item."
                    )));
                }
                reasoning.insert(rs_id);
            }
            "function_call" | "custom_tool_call" | "local_shell_call" => {
                if let Some(call_id) = item.get("call_id").and_then(Value::as_str) {
                    calls.insert(call_id);
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                if !calls.contains(call_id) {
                    let what = if ty == "function_call_output" {
                        "function call output"
                    } else {
                        "custom tool call output"
                    };
                    return Err(item_error(format!(
                        "No tool call found for {what} with call_id {call_id}."
                    )));
                }
                check_parts(item.get("output"))?;
            }
            "additional_tools" => {
                if let Some(tools) = item.get("tools").and_then(Value::as_array) {
                    check_tools(tools, &format!("input[{i}].tools"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a `/responses` body sent by the account whose sealing key is `secret`
/// ([`Shared::account_secret`]: reasoning encrypted for one account does not verify for
/// another); `Ok` means it would be served.
pub(super) fn check(shared: &Shared, secret: &[u8; 32], body: &Value) -> Result<(), Reject> {
    let Some(obj) = body.as_object() else {
        return Err(detail("Invalid JSON body"));
    };
    if let Some(key) = obj.keys().find(|k| !allowed(k)) {
        return Err(detail(format!("Unsupported parameter: {key}")));
    }
    if obj.get("store") != Some(&Value::Bool(false)) {
        return Err(detail("Store must be set to false"));
    }
    if obj.get("stream") != Some(&Value::Bool(true)) {
        return Err(detail("Stream must be set to true"));
    }
    let slug = obj.get("model").and_then(Value::as_str).unwrap_or("");
    let model = shared.catalog.find(slug);
    match obj.get("instructions") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        // Lite models (§7.1) get the base prompt as a `developer` message instead.
        None if model.is_some_and(|m| m.lite) => {}
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(detail("Instructions are required"));
        }
        Some(_) => return Err(detail("Instructions are not valid")),
    }
    let Some(model) = model else {
        return Err(detail(format!(
            "The '{slug}' model is not supported when using Codex with a ChatGPT account."
        )));
    };
    if let Some(effort) = obj
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        && !model.efforts.contains(&effort)
    {
        return Err(invalid(
            format!("Unsupported value: '{effort}' is not supported with the '{slug}' model."),
            "reasoning.effort",
            json!("unsupported_value"),
        ));
    }
    match obj.get("service_tier") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if model.service_tiers.contains(&t.as_str()) => {}
        Some(_) => return Err(detail("Unsupported parameter: service_tier")),
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        check_tools(tools, "tools")?;
    }
    match obj.get("input") {
        Some(Value::Array(items)) => check_input(shared, secret, items),
        Some(Value::String(_)) => Ok(()),
        _ => Err(detail("Missing required parameter: input")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_detects_tampering() {
        let secret = [7u8; 32];
        let enc = seal(&secret, "reasoning", "rs_abc");
        assert!(enc.starts_with("gAAAAA"));
        assert_eq!(
            unseal(&secret, "reasoning", &enc).as_deref(),
            Some("rs_abc")
        );
        assert_eq!(unseal(&secret, "compaction", &enc), None);
        assert_eq!(unseal(&[8u8; 32], "reasoning", &enc), None);
        let mut altered = enc.clone().into_bytes();
        let mid = altered.len() / 2;
        altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            unseal(&secret, "reasoning", std::str::from_utf8(&altered).unwrap()),
            None
        );
    }

    #[test]
    fn tool_names_follow_the_pattern() {
        assert!(valid_tool_name("Bash"));
        assert!(valid_tool_name("mcp__server-x_1"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("a.b"));
        assert!(!valid_tool_name(&"a".repeat(65)));
        assert!(valid_tool_name(&"a".repeat(64)));
    }

    #[test]
    fn image_magic_bytes() {
        assert!(valid_image_bytes(b"\x89PNG\r\n\x1a\n...."));
        assert!(valid_image_bytes(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!valid_image_bytes(b"hello"));
    }
}
