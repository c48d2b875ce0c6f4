//! JWT claims the proxy reads from the ChatGPT id and access tokens.
//!
//! Owns: decoding a JWT payload (base64url, no signature check: the backend checks
//! signatures, we only need `exp`, the account id, the plan and the e-mail) into [`Claims`].
//! Malformed tokens decode to empty claims; nothing here panics or fails loudly, because a
//! token we cannot read is still a token the backend may accept.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT;
use serde_json::Value;

const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

/// The claims of one token that matter to the proxy. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub exp: Option<i64>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub account_id: Option<String>,
    pub user_id: Option<String>,
}

impl Claims {
    /// Decode the payload of `jwt`. Returns empty claims for anything that is not a JWT.
    pub fn decode(jwt: &str) -> Claims {
        let mut parts = jwt.split('.');
        let payload = match (parts.next(), parts.next()) {
            (Some(_), Some(p)) if !p.is_empty() => p,
            _ => return Claims::default(),
        };
        let Ok(bytes) = URL_SAFE_NO_PAD_INDIFFERENT.decode(payload) else {
            return Claims::default();
        };
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
            return Claims::default();
        };
        let auth = map.get(AUTH_CLAIM);
        let auth_str = |key: &str| {
            auth.and_then(|a| a.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let exp = map.get("exp").and_then(|v| {
            v.as_i64()
                // Some issuers write exp as a float; whole seconds are enough.
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        });
        let email = map
            .get("email")
            .and_then(Value::as_str)
            .or_else(|| {
                map.get(PROFILE_CLAIM)
                    .and_then(|p| p.get("email"))
                    .and_then(Value::as_str)
            })
            .map(str::to_owned);
        Claims {
            exp,
            email,
            plan: auth_str("chatgpt_plan_type"),
            account_id: auth_str("chatgpt_account_id"),
            user_id: auth_str("chatgpt_user_id").or_else(|| auth_str("user_id")),
        }
    }
}

#[cfg(test)]
pub(crate) fn fake_jwt(payload: &Value) -> String {
    let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        enc(br#"{"alg":"none","typ":"JWT"}"#),
        enc(payload.to_string().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_exp_email_plan_account_and_user() {
        let jwt = fake_jwt(&json!({
            "email": "u@example.com",
            "exp": 1795600000,
            "https://api.openai.com/auth": {
                "chatgpt_account_id": "acc-1",
                "chatgpt_plan_type": "plus",
                "chatgpt_user_id": "user-1"
            }
        }));
        let c = Claims::decode(&jwt);
        assert_eq!(c.exp, Some(1795600000));
        assert_eq!(c.email.as_deref(), Some("u@example.com"));
        assert_eq!(c.plan.as_deref(), Some("plus"));
        assert_eq!(c.account_id.as_deref(), Some("acc-1"));
        assert_eq!(c.user_id.as_deref(), Some("user-1"));
    }

    #[test]
    fn email_falls_back_to_profile_claim_and_user_id_to_legacy_key() {
        let jwt = fake_jwt(&json!({
            "https://api.openai.com/profile": {"email": "p@example.com"},
            "https://api.openai.com/auth": {"user_id": "user-legacy", "chatgpt_plan_type": "some_future_plan"}
        }));
        let c = Claims::decode(&jwt);
        assert_eq!(c.email.as_deref(), Some("p@example.com"));
        assert_eq!(c.user_id.as_deref(), Some("user-legacy"));
        assert_eq!(c.plan.as_deref(), Some("some_future_plan"));
        assert_eq!(c.exp, None);
    }

    #[test]
    fn padded_payload_is_accepted() {
        let payload = base64::engine::general_purpose::URL_SAFE.encode(br#"{"exp":5}"#);
        assert_eq!(Claims::decode(&format!("h.{payload}.s")).exp, Some(5));
    }

    #[test]
    fn malformed_tokens_give_empty_claims() {
        for jwt in [
            "",
            ".",
            "..",
            "abc",
            "a.!!!.c",
            "a.bm90IGpzb24.c",
            "a.WzEsMl0.c",
            "rt_opaque",
            "a.\u{e9}\u{e9}.c",
        ] {
            assert_eq!(Claims::decode(jwt), Claims::default(), "{jwt:?}");
        }
    }
}
