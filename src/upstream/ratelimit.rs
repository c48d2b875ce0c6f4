//! The latest rate-limit snapshot from the `x-codex-*` response headers (codex-backend.md
//! §10.2), kept lock-free per account (`accounts::Account::record`) for `/health` and
//! `/usage`.

use http::HeaderMap;

/// One rate-limit window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub used_percent: f64,
    pub window_minutes: Option<u64>,
    pub resets_at: Option<u64>,
}

/// What the last upstream response said about limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub primary: Option<Window>,
    pub secondary: Option<Window>,
    pub credits_has: Option<bool>,
    pub credits_unlimited: Option<bool>,
    pub credits_balance: Option<String>,
    pub captured_at: u64,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "True" => Some(true),
        "false" | "0" | "False" => Some(false),
        _ => None,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn window(h: &HeaderMap, which: &str, now: u64) -> Option<Window> {
    let used = header(h, &format!("x-codex-{which}-used-percent")).and_then(|v| v.parse().ok());
    let minutes =
        header(h, &format!("x-codex-{which}-window-minutes")).and_then(|v| v.parse().ok());
    let resets_at = header(h, &format!("x-codex-{which}-reset-at"))
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            header(h, &format!("x-codex-{which}-reset-after-seconds"))
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| now + s)
        });
    let used_percent: f64 = used?;
    if used_percent == 0.0 && minutes.is_none() && resets_at.is_none() {
        return None;
    }
    Some(Window {
        used_percent,
        window_minutes: minutes,
        resets_at,
    })
}

/// Parse the headers; `None` when they carry no rate-limit information.
pub fn parse(h: &HeaderMap) -> Option<Snapshot> {
    let now = now_secs();
    let s = Snapshot {
        primary: window(h, "primary", now),
        secondary: window(h, "secondary", now),
        credits_has: header(h, "x-codex-credits-has-credits").and_then(flag),
        credits_unlimited: header(h, "x-codex-credits-unlimited").and_then(flag),
        credits_balance: header(h, "x-codex-credits-balance").map(str::to_owned),
        captured_at: now,
    };
    (s.primary.is_some() || s.secondary.is_some() || s.credits_has.is_some()).then_some(s)
}

impl Snapshot {
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json::{write_opt_str, write_u64};
        fn win(out: &mut Vec<u8>, w: &Option<Window>) {
            match w {
                None => out.extend_from_slice(b"null"),
                Some(w) => {
                    out.extend_from_slice(
                        format!("{{\"used_percent\":{}", w.used_percent).as_bytes(),
                    );
                    out.extend_from_slice(b",\"window_minutes\":");
                    match w.window_minutes {
                        Some(m) => write_u64(out, m),
                        None => out.extend_from_slice(b"null"),
                    }
                    out.extend_from_slice(b",\"resets_at\":");
                    match w.resets_at {
                        Some(r) => write_u64(out, r),
                        None => out.extend_from_slice(b"null"),
                    }
                    out.push(b'}');
                }
            }
        }
        fn opt_bool(out: &mut Vec<u8>, b: Option<bool>) {
            out.extend_from_slice(match b {
                Some(true) => b"true",
                Some(false) => b"false",
                None => b"null",
            });
        }
        out.extend_from_slice(b"{\"primary\":");
        win(out, &self.primary);
        out.extend_from_slice(b",\"secondary\":");
        win(out, &self.secondary);
        out.extend_from_slice(b",\"credits\":{\"has_credits\":");
        opt_bool(out, self.credits_has);
        out.extend_from_slice(b",\"unlimited\":");
        opt_bool(out, self.credits_unlimited);
        out.extend_from_slice(b",\"balance\":");
        write_opt_str(out, self.credits_balance.as_deref());
        out.extend_from_slice(b"},\"captured_at\":");
        write_u64(out, self.captured_at);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn parses_both_windows_and_credits() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-codex-primary-used-percent",
            HeaderValue::from_static("12.5"),
        );
        h.insert(
            "x-codex-primary-window-minutes",
            HeaderValue::from_static("300"),
        );
        h.insert(
            "x-codex-primary-reset-at",
            HeaderValue::from_static("1795512893"),
        );
        h.insert(
            "x-codex-secondary-used-percent",
            HeaderValue::from_static("0"),
        );
        h.insert(
            "x-codex-credits-has-credits",
            HeaderValue::from_static("true"),
        );
        h.insert("x-codex-credits-balance", HeaderValue::from_static("9.99"));
        let s = parse(&h).unwrap();
        assert_eq!(s.primary.as_ref().unwrap().window_minutes, Some(300));
        assert_eq!(s.secondary, None);
        assert_eq!(s.credits_has, Some(true));
        let mut out = Vec::new();
        s.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["primary"]["used_percent"], 12.5);
        assert_eq!(v["credits"]["balance"], "9.99");
        assert!(parse(&HeaderMap::new()).is_none());
    }
}
