//! Tokens: JWT minting (§12.2), the registry of issued access and refresh tokens, the
//! bearer check of every backend call, and `POST /oauth/token` with rotating refresh
//! tokens and reuse detection (§12.3, §12.5).
//!
//! All of it is kept in [`Tokens`]; the `authorization_code` grant asks `oauth` whether
//! the code is good.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::accounts::Account;
use super::oauth::OAuth;
use super::util::{lock, now_secs, random_alnum, random_hex, rfc3339_now};

/// A token set the emulator accepts. `Debug` never prints a token.
#[derive(Clone)]
pub struct TestCredentials {
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: String,
    pub account_id: String,
}

impl fmt::Debug for TestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCredentials")
            .field("id_token", &"<redacted>")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

impl TestCredentials {
    /// The Codex CLI's `auth.json` (§12.1), with `last_refresh` = now.
    pub fn auth_json(&self) -> Value {
        json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": self.id_token,
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "account_id": self.account_id,
            },
            "last_refresh": rfc3339_now(),
        })
    }

    /// Writes [`Self::auth_json`] pretty-printed (2-space indent), mode 0600.
    pub fn write_auth_json(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut text = serde_json::to_string_pretty(&self.auth_json())?;
        text.push('\n');
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()
    }
}

/// What became of a refresh token.
enum RefreshState {
    Live,
    Used,
}

/// Every token this emulator issued.
#[derive(Default)]
struct Registry {
    /// access token → (account, exp)
    access: HashMap<String, (Arc<Account>, i64)>,
    /// refresh token → (state, the account a refresh issues for)
    refresh: HashMap<String, (RefreshState, Arc<Account>)>,
}

fn jwt(payload: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(payload.to_string());
    let sig = URL_SAFE_NO_PAD.encode(random_hex(32));
    format!("{header}.{body}.{sig}")
}

fn auth_claim(account: &Account) -> Value {
    json!({
        "chatgpt_account_id": account.id,
        "chatgpt_plan_type": "plus",
        "chatgpt_user_id": account.user_id,
        "user_id": account.user_id,
    })
}

/// The token side of the emulator: every token it issued, and the lifetime of the access
/// tokens a refresh mints.
pub(super) struct Tokens {
    registry: Mutex<Registry>,
    refresh_ttl: i64,
}

impl Tokens {
    /// No token issued yet; a refresh mints access tokens good for `refresh_ttl` seconds.
    pub(super) fn new(refresh_ttl: i64) -> Tokens {
        Tokens {
            registry: Mutex::new(Registry::default()),
            refresh_ttl,
        }
    }

    /// Makes every access token issued so far invalid.
    pub(super) fn revoke_access(&self) {
        lock(&self.registry).access.clear();
    }

    /// Mints and registers a full token set for `account`.
    pub(super) fn issue(&self, account: &Arc<Account>, access_ttl_secs: i64) -> TestCredentials {
        let now = now_secs();
        let exp = now.saturating_add(access_ttl_secs);
        let access_token = jwt(&json!({
            "email": "emulator@example.com",
            "exp": exp,
            "iat": now,
            "jti": random_hex(16),
            "https://api.openai.com/auth": auth_claim(account),
        }));
        let id_token = jwt(&json!({
            "email": "emulator@example.com",
            "exp": now + 3600,
            "iat": now,
            "https://api.openai.com/auth": auth_claim(account),
        }));
        let refresh_token = format!("rt_{}", random_alnum(43));
        let mut reg = lock(&self.registry);
        reg.access
            .insert(access_token.clone(), (Arc::clone(account), exp));
        reg.refresh.insert(
            refresh_token.clone(),
            (RefreshState::Live, Arc::clone(account)),
        );
        TestCredentials {
            id_token,
            access_token,
            refresh_token,
            account_id: account.id.clone(),
        }
    }

    /// The account whose live access token `Authorization` carries, when
    /// `chatgpt-account-id` names that account.
    pub(super) fn authorized(&self, headers: &hyper::HeaderMap) -> Option<Arc<Account>> {
        let token = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let claimed = headers
            .get("chatgpt-account-id")
            .and_then(|v| v.to_str().ok())?;
        let reg = lock(&self.registry);
        let (account, exp) = reg.access.get(token.trim())?;
        (*exp > now_secs() && claimed == account.id).then(|| Arc::clone(account))
    }

    /// `POST /oauth/token`: `(status, JSON body)`. Codes are checked by `oauth`; an
    /// `authorization_code` grant issues tokens for `default_account`.
    pub(super) fn token_endpoint(
        &self,
        oauth: &OAuth,
        default_account: &Arc<Account>,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        let fields: HashMap<String, String> = if content_type.contains("x-www-form-urlencoded") {
            parse_form(body)
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                    .collect(),
                _ => parse_form(body),
            }
        };
        let grant = fields.get("grant_type").map(String::as_str).unwrap_or("");
        match grant {
            "refresh_token" => {
                let Some(rt) = fields.get("refresh_token").filter(|s| !s.is_empty()) else {
                    return oauth_error(
                        400,
                        "invalid_request",
                        "Missing required parameter: refresh_token.",
                    );
                };
                let account = {
                    let mut reg = lock(&self.registry);
                    match reg.refresh.get_mut(rt.as_str()) {
                        Some((state @ RefreshState::Live, account)) => {
                            *state = RefreshState::Used;
                            Arc::clone(account)
                        }
                        Some((RefreshState::Used, _)) => {
                            return oauth_error(
                                401,
                                "refresh_token_reused",
                                "Your refresh token has already been used to generate a new access token. Please try signing in again.",
                            );
                        }
                        None => {
                            return oauth_error(
                                401,
                                "refresh_token_invalidated",
                                "Your refresh token has been invalidated. Please try signing in again.",
                            );
                        }
                    }
                };
                (
                    200,
                    self.token_reply(self.issue(&account, self.refresh_ttl)),
                )
            }
            // Codes come from `/oauth/authorize` or the device flow; PKCE is checked.
            "authorization_code" => match oauth.redeem_code(&fields) {
                Ok(()) => (200, self.token_reply(self.issue(default_account, 3600))),
                Err(e) => e,
            },
            _ => oauth_error(400, "unsupported_grant_type", "Unsupported grant_type."),
        }
    }

    fn token_reply(&self, c: TestCredentials) -> Value {
        json!({
            "id_token": c.id_token,
            "access_token": c.access_token,
            "refresh_token": c.refresh_token,
            "expires_in": self.refresh_ttl,
            "token_type": "Bearer",
            "scope": "openid profile email offline_access",
        })
    }
}

fn oauth_error(status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

/// `application/x-www-form-urlencoded` → map (last value wins).
pub(super) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_escapes() {
        let f = parse_form(
            b"grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1%3A1455&x=a+b",
        );
        assert_eq!(f["grant_type"], "authorization_code");
        assert_eq!(f["redirect_uri"], "http://127.0.0.1:1455");
        assert_eq!(f["x"], "a b");
    }

    #[test]
    fn jwt_has_three_segments_and_decodable_payload() {
        let t = jwt(&json!({"exp": 5}));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!parts[2].is_empty());
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["exp"], 5);
    }
}
