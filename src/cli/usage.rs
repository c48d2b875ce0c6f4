//! `codex-as-api usage`: the account's rate-limit windows from `GET {root}/wham/usage`
//! (§19), drawn as bars in the terminal, or the backend's JSON as is with `--json`.
//!
//! Owns: the request (credentials from the same `TokenStore` the server uses, so an expired
//! access token is refreshed and a 401 runs reload → refresh once), and the rendering:
//! one line per window (5-hour, weekly, any other length) with a bar, percent used and the
//! reset time, then plan, credits and any additional metered limits.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use super::{fetch, human_duration, now_secs, utc_minutes};
use crate::auth::{AuthHeaders, ORIGINATOR, TokenStore, user_agent};
use crate::config::Config;
use crate::upstream::client::HttpClient;

const BAR_WIDTH: usize = 30;

fn request(config: &Config, auth: &AuthHeaders) -> Result<Request<Full<Bytes>>, String> {
    let url = format!("{}/wham/usage", config.upstream_url);
    Request::builder()
        .method(Method::GET)
        .uri(&url)
        .header(header::AUTHORIZATION, auth.authorization.clone())
        .header("chatgpt-account-id", auth.account_id.clone())
        .header("originator", ORIGINATOR)
        .header(header::USER_AGENT, user_agent())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("invalid upstream URL {url:?}: {e}"))
}

/// Fetch the usage document of the account whose credentials are at `auth_path`.
pub async fn fetch_usage(
    config: &Config,
    auth_path: &Path,
    client: &HttpClient,
) -> Result<Value, String> {
    let store = TokenStore::new(
        auth_path.to_owned(),
        config.token_url.clone(),
        client.clone(),
    );
    let mut auth = store
        .headers()
        .await
        .map_err(|e| super::login_hint(e.message))?;
    let mut recovered = false;
    loop {
        let (status, _, body) =
            fetch(client, request(config, &auth)?, Duration::from_secs(30)).await?;
        if status == StatusCode::UNAUTHORIZED && !recovered {
            recovered = true;
            auth = match store
                .reload(&auth)
                .await
                .map_err(|e| super::login_hint(e.message))?
            {
                Some(fresh) => fresh,
                None => store
                    .refresh_after_unauthorized(&auth)
                    .await
                    .map_err(|e| super::login_hint(e.message))?,
            };
            continue;
        }
        if !status.is_success() {
            let detail = String::from_utf8_lossy(&body);
            let detail: String = detail.chars().take(300).collect();
            return Err(format!(
                "GET {}/wham/usage answered HTTP {}: {detail}",
                config.upstream_url,
                status.as_u16()
            ));
        }
        return serde_json::from_slice(&body)
            .map_err(|_| "the usage endpoint answered with something that is not JSON".to_owned());
    }
}

/// `5-hour limit`, `Weekly limit`, `30-minute limit`, … from a window length.
fn window_name(seconds: Option<i64>, fallback: &str) -> String {
    match seconds {
        Some(604_800) => "Weekly limit".to_owned(),
        Some(86_400) => "Daily limit".to_owned(),
        Some(s) if s > 0 && s % 86_400 == 0 => format!("{}-day limit", s / 86_400),
        Some(s) if s > 0 && s % 3600 == 0 => format!("{}-hour limit", s / 3600),
        Some(s) if s > 0 && s % 60 == 0 => format!("{}-minute limit", s / 60),
        _ => fallback.to_owned(),
    }
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, pct: f64, s: &str) -> String {
        if !self.color {
            return s.to_owned();
        }
        let code = if pct >= 90.0 {
            "31"
        } else if pct >= 70.0 {
            "33"
        } else {
            "32"
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }
}

fn bar(pct: f64) -> String {
    let pct = pct.clamp(0.0, 100.0);
    let filled = ((pct / 100.0) * BAR_WIDTH as f64).round() as usize;
    let filled = filled.min(BAR_WIDTH);
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR_WIDTH - filled))
}

fn window_line(out: &mut String, w: &Value, fallback: &str, now: i64, style: &Style) {
    if !w.is_object() {
        return;
    }
    let pct = w.get("used_percent").and_then(Value::as_f64).unwrap_or(0.0);
    let secs = w.get("limit_window_seconds").and_then(Value::as_i64);
    let reset_at = w.get("reset_at").and_then(Value::as_i64).or_else(|| {
        w.get("reset_after_seconds")
            .and_then(Value::as_i64)
            .map(|s| now + s)
    });
    let name = window_name(secs, fallback);
    let reset = match reset_at {
        Some(at) => format!(
            "resets in {} ({})",
            human_duration(at - now),
            utc_minutes(at)
        ),
        None => String::new(),
    };
    out.push_str(&format!(
        "  {name:<16} {} {pct:>5.1}% used   {reset}\n",
        style.paint(pct, &bar(pct))
    ));
}

fn limit_block(out: &mut String, limit: &Value, now: i64, style: &Style) -> bool {
    let mut any = false;
    for (key, fallback) in [
        ("primary_window", "Short window"),
        ("secondary_window", "Long window"),
    ] {
        if let Some(w) = limit.get(key).filter(|w| w.is_object()) {
            window_line(out, w, fallback, now, style);
            any = true;
        }
    }
    if limit.get("limit_reached").and_then(Value::as_bool) == Some(true) {
        out.push_str("  ⚠ limit reached: requests are refused until the window resets\n");
    }
    any
}

/// The terminal rendering of a `/wham/usage` document at time `now`.
pub fn render(doc: &Value, now: i64, color: bool) -> String {
    let style = Style { color };
    let mut out = String::new();
    let plan = doc
        .get("plan_type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    out.push_str(&format!("ChatGPT plan: {plan}\n\nCodex usage\n"));
    let shown = doc
        .get("rate_limit")
        .is_some_and(|l| limit_block(&mut out, l, now, &style));
    if !shown {
        out.push_str("  no rate-limit windows reported\n");
    }
    if let Some(extra) = doc.get("additional_rate_limits").and_then(Value::as_array) {
        for l in extra {
            let name = l
                .get("limit_name")
                .and_then(Value::as_str)
                .unwrap_or("other");
            let mut block = String::new();
            if l.get("rate_limit")
                .is_some_and(|r| limit_block(&mut block, r, now, &style))
            {
                out.push_str(&format!("\n{name}\n{block}"));
            }
        }
    }
    if let Some(c) = doc.get("credits").filter(|c| c.is_object()) {
        let unlimited = c.get("unlimited").and_then(Value::as_bool) == Some(true);
        let has = c.get("has_credits").and_then(Value::as_bool) == Some(true);
        let balance = c.get("balance").and_then(|b| {
            b.as_str()
                .map(str::to_owned)
                .or_else(|| b.as_f64().map(|f| f.to_string()))
        });
        let text = if unlimited {
            "unlimited".to_owned()
        } else if has {
            balance.unwrap_or_else(|| "available".to_owned())
        } else {
            "none".to_owned()
        };
        out.push_str(&format!("\nCredits: {text}\n"));
    }
    if let Some(t) = doc
        .get("rate_limit_reached_type")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
    {
        out.push_str(&format!("Limit reached: {t}\n"));
    }
    out
}

/// Run the command.
/// Print every account's usage (`--accounts`, else the one auth path). With one account
/// the output is that account's alone; with several, each is headed by its label, and
/// `--json` prints `[{"account", "usage" | "error"}]`. Fails only when every account failed.
pub async fn run(config: &Config, client: &HttpClient, json: bool) -> Result<(), String> {
    let specs = config.account_specs();
    if let [only] = specs.as_slice() {
        let doc = fetch_usage(config, &only.path, client).await?;
        return print(&doc, json);
    }
    let labels = crate::accounts::labels(&specs);
    let mut docs = Vec::with_capacity(specs.len());
    let mut text = String::new();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut failures = 0;
    for (spec, label) in specs.iter().zip(labels) {
        let r = fetch_usage(config, &spec.path, client).await;
        text.push_str(&format!("Account {label} ({})\n", spec.path.display()));
        match &r {
            Ok(doc) => text.push_str(&render(doc, now_secs(), color)),
            Err(e) => {
                failures += 1;
                text.push_str(&format!("  unavailable: {e}\n"));
            }
        }
        text.push('\n');
        docs.push(match r {
            Ok(doc) => serde_json::json!({"account": label, "usage": doc}),
            Err(e) => serde_json::json!({"account": label, "error": e}),
        });
    }
    if failures == specs.len() {
        return Err(format!("no account answered:\n{text}"));
    }
    if json {
        return print(&Value::Array(docs), true);
    }
    super::print_out(text.as_bytes())
}

fn print(doc: &Value, json: bool) -> Result<(), String> {
    if json {
        let mut text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
        text.push('\n');
        return super::print_out(text.as_bytes());
    }
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    super::print_out(render(doc, now_secs(), color).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_windows_plan_and_credits() {
        let doc = serde_json::json!({"plan_type": "plus",
            "rate_limit": {"allowed": true, "limit_reached": false,
              "primary_window": {"used_percent": 50, "limit_window_seconds": 18000, "reset_after_seconds": 3600, "reset_at": 7200},
              "secondary_window": {"used_percent": 3, "limit_window_seconds": 604800, "reset_after_seconds": 259200, "reset_at": 262800}},
            "credits": {"has_credits": true, "unlimited": false, "balance": "9.99"},
            "additional_rate_limits": null, "rate_limit_reached_type": null});
        let text = render(&doc, 3600, false);
        assert!(text.contains("ChatGPT plan: plus"), "{text}");
        assert!(
            text.contains(&format!(
                "5-hour limit     {}{}  50.0% used   resets in 1h 00m (1970-01-01 02:00 UTC)",
                "█".repeat(15),
                "░".repeat(15)
            )),
            "{text}"
        );
        assert!(text.contains("Weekly limit"), "{text}");
        assert!(text.contains("3.0% used   resets in 3d 0h"), "{text}");
        assert!(text.contains("Credits: 9.99"), "{text}");
    }

    #[test]
    fn names_windows_by_length() {
        assert_eq!(window_name(Some(18_000), "x"), "5-hour limit");
        assert_eq!(window_name(Some(604_800), "x"), "Weekly limit");
        assert_eq!(window_name(Some(1800), "x"), "30-minute limit");
        assert_eq!(window_name(None, "x"), "x");
    }
}
