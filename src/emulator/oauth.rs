//! The sign-in side of `auth.openai.com` (§13): the browser authorize step with PKCE, the
//! one-time authorization codes it hands out, and the device-code flow.
//!
//! Owns: `GET /oauth/authorize` (checks the request like the real issuer and, since the
//! emulated user is always signed in, redirects straight back to `redirect_uri` with a
//! `code` and the `state`), the grant registry the `authorization_code` exchange of
//! `POST /oauth/token` checks against (single use, same `redirect_uri`, and
//! `base64url(SHA-256(code_verifier)) == code_challenge`), and the device endpoints
//! `POST /api/accounts/deviceauth/usercode`, `POST /api/accounts/deviceauth/token` (403
//! while pending, then the code and its PKCE pair) and the approval page `/codex/device`
//! (or [`super::Emulator::approve_device`]).
//!
//! All of it is kept in [`OAuth`], which knows nothing of the rest of the emulator.
//!
//! Does not own: minting tokens (`tokens`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::util::{lock, now_secs, random_alnum};
use crate::auth::CLIENT_ID;

/// Device codes expire after this long (§13.2).
const DEVICE_TTL_SECS: i64 = 15 * 60;
/// Authorization codes are good for this long.
const CODE_TTL_SECS: i64 = 10 * 60;

/// Where the exchange of a code must say it was redirected to.
enum Redirect {
    Exact(String),
    /// Device codes: `{issuer}/deviceauth/callback`.
    DeviceCallback,
}

struct Grant {
    challenge: String,
    redirect: Redirect,
    expires: i64,
}

struct Device {
    user_code: String,
    approved: bool,
    expires: i64,
}

/// Grants and device sessions in flight.
#[derive(Default)]
struct Registry {
    codes: HashMap<String, Grant>,
    devices: HashMap<String, Device>,
    /// Polls of the device token endpoint since start.
    polls: u64,
}

/// What `/oauth/authorize` answers.
pub(super) enum Authorize {
    /// 302 to this URL.
    Redirect(String),
    /// An error page: `(status, JSON)`.
    Error(u16, Value),
}

fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

/// `application/x-www-form-urlencoded` escaping of one value.
pub(super) fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn is_loopback_callback(uri: &str) -> bool {
    let rest = uri
        .strip_prefix("http://127.0.0.1:")
        .or_else(|| uri.strip_prefix("http://localhost:"));
    match rest.and_then(|r| r.split_once('/')) {
        Some((port, path)) => port.parse::<u16>().is_ok() && path == "auth/callback",
        None => false,
    }
}

/// The sign-in state: grants and device sessions in flight, and the poll interval device
/// clients are told.
pub(super) struct OAuth {
    registry: Mutex<Registry>,
    device_interval: u64,
}

impl OAuth {
    /// Nothing in flight; the device-code endpoint tells clients to poll every
    /// `device_interval` seconds.
    pub(super) fn new(device_interval: u64) -> OAuth {
        OAuth {
            registry: Mutex::new(Registry::default()),
            device_interval,
        }
    }

    /// `GET /oauth/authorize?…` with the query already decoded.
    pub(super) fn authorize(&self, q: &HashMap<String, String>) -> Authorize {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        let bad = |code: &str, msg: &str| {
            let (s, v) = error(400, code, msg);
            Authorize::Error(s, v)
        };
        if get("client_id") != CLIENT_ID {
            return bad("invalid_client", "Unknown client_id.");
        }
        if get("response_type") != "code" {
            return bad("unsupported_response_type", "response_type must be `code`.");
        }
        let redirect_uri = get("redirect_uri");
        if !is_loopback_callback(redirect_uri) {
            return bad(
                "invalid_request",
                "redirect_uri is not registered for this client.",
            );
        }
        let challenge = get("code_challenge");
        if get("code_challenge_method") != "S256" || challenge.len() != 43 {
            return bad(
                "invalid_request",
                "PKCE is required: code_challenge (43 chars) with code_challenge_method=S256.",
            );
        }
        let scopes: Vec<&str> = get("scope").split(' ').collect();
        if !scopes.contains(&"openid") || !scopes.contains(&"offline_access") {
            return bad(
                "invalid_scope",
                "scope must include openid and offline_access.",
            );
        }
        let state = get("state");
        if state.is_empty() {
            return bad("invalid_request", "Missing required parameter: state.");
        }
        let code = format!("ac_{}", random_alnum(43));
        lock(&self.registry).codes.insert(
            code.clone(),
            Grant {
                challenge: challenge.to_owned(),
                redirect: Redirect::Exact(redirect_uri.to_owned()),
                expires: now_secs() + CODE_TTL_SECS,
            },
        );
        Authorize::Redirect(format!(
            "{redirect_uri}?code={}&scope={}&state={}",
            form_encode(&code),
            form_encode(get("scope")),
            form_encode(state)
        ))
    }

    /// The `authorization_code` grant: `Ok(())` when the code, redirect and verifier match.
    pub(super) fn redeem_code(&self, fields: &HashMap<String, String>) -> Result<(), (u16, Value)> {
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != CLIENT_ID {
            return Err(error(401, "invalid_client", "Unknown client_id."));
        }
        // Single use: a code is gone after its first exchange, good or bad.
        let Some(grant) = lock(&self.registry).codes.remove(get("code")) else {
            return Err(error(400, "invalid_grant", "Invalid authorization code."));
        };
        if grant.expires < now_secs() {
            return Err(error(400, "invalid_grant", "Authorization code expired."));
        }
        let redirect = get("redirect_uri");
        let redirect_ok = match &grant.redirect {
            Redirect::Exact(r) => r == redirect,
            Redirect::DeviceCallback => redirect.ends_with("/deviceauth/callback"),
        };
        if !redirect_ok {
            return Err(error(
                400,
                "invalid_grant",
                "redirect_uri does not match the authorization request.",
            ));
        }
        if challenge_of(get("code_verifier")) != grant.challenge {
            return Err(error(
                400,
                "invalid_grant",
                "code_verifier does not match the code_challenge.",
            ));
        }
        Ok(())
    }

    /// `POST /api/accounts/deviceauth/usercode`.
    pub(super) fn device_usercode(&self, body: &[u8]) -> (u16, Value) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if v.get("client_id").and_then(Value::as_str) != Some(CLIENT_ID) {
            return error(400, "invalid_client", "Unknown client_id.");
        }
        let id = format!("deviceauth_{}", random_alnum(24));
        let raw = random_alnum(8).to_ascii_uppercase();
        let user_code = format!(
            "{}-{}",
            raw.get(..4).unwrap_or(""),
            raw.get(4..).unwrap_or("")
        );
        lock(&self.registry).devices.insert(
            id.clone(),
            Device {
                user_code: user_code.clone(),
                approved: false,
                expires: now_secs() + DEVICE_TTL_SECS,
            },
        );
        (
            200,
            json!({"device_auth_id": id, "user_code": user_code,
                   "interval": self.device_interval.to_string()}),
        )
    }

    /// `POST /api/accounts/deviceauth/token`: 403 while pending, then the code.
    pub(super) fn device_token(&self, body: &[u8]) -> (u16, Value) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = v
            .get("device_auth_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let user_code = v.get("user_code").and_then(Value::as_str).unwrap_or("");
        let mut reg = lock(&self.registry);
        reg.polls += 1;
        let Some(dev) = reg.devices.get_mut(id) else {
            return error(404, "deviceauth_not_found", "Unknown device authorization.");
        };
        if dev.user_code != user_code {
            return error(404, "deviceauth_not_found", "Unknown device authorization.");
        }
        if dev.expires < now_secs() {
            return error(410, "deviceauth_expired", "The device code has expired.");
        }
        if !dev.approved {
            return error(
                403,
                "deviceauth_authorization_pending",
                "The user has not entered the code yet.",
            );
        }
        reg.devices.remove(id);
        let mut bytes = [0u8; 64];
        if getrandom::fill(&mut bytes).is_err() {
            return error(500, "server_error", "no randomness");
        }
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = challenge_of(&verifier);
        let code = format!("ac_{}", random_alnum(43));
        reg.codes.insert(
            code.clone(),
            Grant {
                challenge: challenge.clone(),
                redirect: Redirect::DeviceCallback,
                expires: now_secs() + CODE_TTL_SECS,
            },
        );
        (
            200,
            json!({"authorization_code": code, "code_challenge": challenge, "code_verifier": verifier}),
        )
    }

    /// The user entered `user_code` on the device page. False when no session has it.
    pub(super) fn approve_device(&self, user_code: &str) -> bool {
        let wanted = user_code.trim().to_ascii_uppercase();
        let mut reg = lock(&self.registry);
        let mut found = false;
        for dev in reg.devices.values_mut() {
            if dev.user_code == wanted {
                dev.approved = true;
                found = true;
            }
        }
        found
    }

    /// How many times the device token endpoint was polled since start.
    pub(super) fn device_polls(&self) -> u64 {
        lock(&self.registry).polls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636_example() {
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn only_loopback_callbacks_are_registered() {
        assert!(is_loopback_callback("http://127.0.0.1:1455/auth/callback"));
        assert!(is_loopback_callback("http://localhost:1455/auth/callback"));
        assert!(!is_loopback_callback("http://evil.com:1455/auth/callback"));
        assert!(!is_loopback_callback("http://127.0.0.1:1455/other"));
        assert_eq!(form_encode("a b/c"), "a+b%2Fc");
    }
}
