//! The ChatGPT accounts the server spends: one or more logins, each with its own
//! credentials, admission window, rate-limit snapshot and cooldown, and the routing of a
//! request to one of them.
//!
//! Owns: the account list built from `--accounts` (default: the one auth path), labels (the
//! auth file's parent folder name, or the label given in config.toml), conversation
//! affinity (a conversation stays on the account that served it: the backend's prompt cache
//! and the encrypted reasoning live per account), the choice for a new conversation (most
//! free window, then lowest recent usage), cooldown after `usage_limit_reached` until the
//! reset, and the "every account is at its usage limit" answer. Does not own: the window
//! and queue (`admission`), the credentials file (`auth`), or sending anything upstream.
//!
//! With one account every decision is trivial and nothing here is locked on the hot path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use http::HeaderMap;

use crate::admission::{Admission, Limits};
use crate::auth::TokenStore;
use crate::error::{Error, ErrorKind};
use crate::upstream::client::HttpClient;
use crate::upstream::ratelimit::{self, Snapshot};

/// Conversations remembered for affinity before the table is cleared (bounded memory).
const MAX_AFFINITY: usize = 65_536;

/// One listed auth file and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    pub path: PathBuf,
    pub label: Option<String>,
}

/// One ChatGPT login.
pub struct Account {
    pub label: String,
    pub tokens: Arc<TokenStore>,
    pub admission: Arc<Admission>,
    /// The latest `x-codex-*` snapshot of this account's replies.
    pub rate_limits: ArcSwapOption<Snapshot>,
    /// Unix second until which the account is at its usage limit (0: not cooled).
    cooled_until: AtomicU64,
}

impl Account {
    /// Whether its credentials are loaded and usable.
    pub fn available(&self) -> bool {
        self.tokens.available()
    }

    /// The reset time of a usage limit still in force.
    pub fn cooled_until(&self, now: u64) -> Option<u64> {
        let t = self.cooled_until.load(Ordering::Acquire);
        (t > now).then_some(t)
    }

    /// The account hit its usage limit: no new work until `resets_at` (unknown: a minute).
    pub fn cool(&self, resets_at: Option<u64>) {
        let resets_at = resets_at.unwrap_or_else(|| now_secs() + 60);
        self.cooled_until.fetch_max(resets_at, Ordering::AcqRel);
        self.admission.evict_all();
        tracing::warn!(
            account = %self.label,
            until = %crate::upstream::failure::format_utc(resets_at),
            "account at its usage limit: cooled until the reset"
        );
    }

    /// Keep the rate-limit snapshot of a reply, if it has one.
    pub fn record(&self, headers: &HeaderMap) {
        if let Some(s) = ratelimit::parse(headers) {
            self.rate_limits.store(Some(Arc::new(s)));
        }
    }

    fn usage_percent(&self) -> f64 {
        self.rate_limits
            .load()
            .as_ref()
            .and_then(|s| s.primary.as_ref().map(|w| w.used_percent))
            .unwrap_or(0.0)
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
pub struct Route {
    pub account: Arc<Account>,
    /// The conversation was bound to another account and had to move.
    pub moved_from: Option<String>,
}

/// Every account, and the conversations bound to them.
pub struct Accounts {
    list: Vec<Arc<Account>>,
    affinity: Mutex<HashMap<u64, usize>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The label of an auth file: its parent folder's name (`~/.codex/auth.json` → `.codex`).
pub fn default_label(path: &std::path::Path) -> String {
    path.parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
}

/// The label of each spec, made unique (`name`, `name-2`, …).
pub fn labels(specs: &[AccountSpec]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(specs.len());
    for spec in specs {
        let base = spec
            .label
            .clone()
            .unwrap_or_else(|| default_label(&spec.path));
        let mut label = base.clone();
        let mut n = 2;
        while out.contains(&label) {
            label = format!("{base}-{n}");
            n += 1;
        }
        out.push(label);
    }
    out
}

impl Accounts {
    /// Load every listed account.
    pub fn new(
        specs: &[AccountSpec],
        token_url: &str,
        client: &HttpClient,
        limits: Limits,
    ) -> Accounts {
        let mut list: Vec<Arc<Account>> = Vec::with_capacity(specs.len());
        for (spec, label) in specs.iter().zip(labels(specs)) {
            list.push(Arc::new(Account {
                label,
                tokens: TokenStore::new(spec.path.clone(), token_url.to_owned(), client.clone()),
                admission: Admission::new(limits),
                rate_limits: ArcSwapOption::empty(),
                cooled_until: AtomicU64::new(0),
            }));
        }
        Accounts {
            list,
            affinity: Mutex::new(HashMap::new()),
        }
    }

    pub fn all(&self) -> &[Arc<Account>] {
        &self.list
    }

    /// The account for calls that belong to no conversation (catalog, usage): the first
    /// available one, else the first.
    pub fn primary(&self) -> Option<&Arc<Account>> {
        self.list
            .iter()
            .find(|a| a.available())
            .or_else(|| self.list.first())
    }

    /// Whether any account has usable credentials.
    pub fn any_available(&self) -> bool {
        self.list.iter().any(|a| a.available())
    }

    /// Pick the account for a request of `conversation` (a hash of its id): the account it
    /// is bound to while that one can take work, else the one with the most free window
    /// (then the lowest recent usage), which it is then bound to.
    pub fn route(&self, conversation: u64) -> Result<Route, Error> {
        let now = now_secs();
        if let [only] = self.list.as_slice() {
            if let Some(reset) = only.cooled_until(now) {
                return Err(all_limited(reset, now));
            }
            return Ok(Route {
                account: Arc::clone(only),
                moved_from: None,
            });
        }
        let usable = |a: &Account| a.available() && a.cooled_until(now).is_none();
        let mut affinity = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
        let bound = affinity.get(&conversation).copied();
        if let Some(i) = bound
            && let Some(a) = self.list.get(i)
            && usable(a)
        {
            return Ok(Route {
                account: Arc::clone(a),
                moved_from: None,
            });
        }
        let best = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, a)| usable(a))
            .max_by(|(_, x), (_, y)| {
                x.admission
                    .headroom()
                    .cmp(&y.admission.headroom())
                    .then(y.usage_percent().total_cmp(&x.usage_percent()))
            })
            .map(|(i, _)| i);
        let Some(i) = best else {
            drop(affinity);
            return self.none_usable(now);
        };
        if affinity.len() >= MAX_AFFINITY {
            affinity.clear();
        }
        affinity.insert(conversation, i);
        let moved_from = bound
            .filter(|b| *b != i)
            .and_then(|b| self.list.get(b))
            .map(|a| a.label.clone());
        Ok(Route {
            account: Arc::clone(&self.list[i]),
            moved_from,
        })
    }

    /// `account` answered `usage_limit_reached`: with several accounts it is cooled until
    /// the reset (one account alone keeps asking: the backend's answer is as fast and
    /// exact). Whether another account can take the request now.
    pub fn limit_reached(&self, account: &Account, resets_at: Option<u64>) -> bool {
        if self.list.len() > 1 {
            account.cool(resets_at);
        }
        self.has_other(account)
    }

    /// Whether an account other than `than` could take a request now.
    fn has_other(&self, than: &Account) -> bool {
        let now = now_secs();
        self.list.iter().any(|a| {
            !std::ptr::eq(a.as_ref(), than) && a.available() && a.cooled_until(now).is_none()
        })
    }

    /// With several accounts all at their usage limit: the 429 naming the earliest reset.
    pub fn all_limited(&self) -> Option<Error> {
        let now = now_secs();
        if self.list.len() < 2
            || self
                .list
                .iter()
                .any(|a| a.available() && a.cooled_until(now).is_none())
        {
            return None;
        }
        self.none_usable(now).err()
    }

    /// No account can take work: the earliest usage-limit reset if they are all cooled,
    /// else the first account (its credentials error names the login to run).
    fn none_usable(&self, now: u64) -> Result<Route, Error> {
        let earliest = self
            .list
            .iter()
            .filter(|a| a.available())
            .filter_map(|a| a.cooled_until(now))
            .min();
        if let Some(reset) = earliest {
            return Err(all_limited(reset, now));
        }
        match self.list.first() {
            Some(a) => Ok(Route {
                account: Arc::clone(a),
                moved_from: None,
            }),
            None => Err(Error::new(
                ErrorKind::AuthUnavailable,
                "no ChatGPT account is configured",
            )),
        }
    }
}

/// Every account is at its usage limit: 429 at once with the earliest reset.
fn all_limited(reset: u64, now: u64) -> Error {
    let wait = reset.saturating_sub(now);
    Error::new(
        ErrorKind::UsageLimit,
        format!(
            "The ChatGPT usage limit has been reached on every configured account; the earliest resets at {} (in {wait} s).",
            crate::upstream::failure::format_utc(reset)
        ),
    )
    .with_code("insufficient_quota")
    .with_retry_after(wait.clamp(1, crate::upstream::failure::MAX_RETRY_AFTER))
    .not_retryable()
}

/// A stable hash of a conversation id for the queue and the affinity table.
pub fn conversation_key(id: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    h.write(id.as_bytes());
    h.finish()
}

/// Remove reasoning items from an upstream `input` array: their `encrypted_content` was
/// sealed under another account, which cannot decrypt it. `None` when there are none.
pub fn strip_reasoning(input: &[u8]) -> Option<Vec<u8>> {
    memchr::memmem::find(input, b"\"reasoning\"")?;
    let items: Vec<serde_json::Value> = serde_json::from_slice(input).ok()?;
    let before = items.len();
    let kept: Vec<serde_json::Value> = items
        .into_iter()
        .filter(|i| i.get("type").and_then(|t| t.as_str()) != Some("reasoning"))
        .collect();
    if kept.len() == before {
        return None;
    }
    serde_json::to_vec(&kept).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_items_are_stripped_and_the_rest_kept_in_order() {
        let input = br#"[{"type":"message","role":"user","content":"a"},{"type":"reasoning","encrypted_content":"x","summary":[]},{"type":"function_call","name":"f","arguments":"{}","call_id":"c"}]"#;
        let out = strip_reasoning(input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["type"], "function_call");
        assert!(strip_reasoning(br#"[{"type":"message","content":"reasoning"}]"#).is_none());
    }

    #[test]
    fn labels_are_parent_folders_made_unique() {
        assert_eq!(
            default_label(std::path::Path::new("/h/alice/auth.json")),
            "alice"
        );
        let client = crate::upstream::client::build(None, None).unwrap();
        let specs = [
            AccountSpec {
                path: "/nonexistent/a/auth.json".into(),
                label: None,
            },
            AccountSpec {
                path: "/nonexistent2/a/auth.json".into(),
                label: None,
            },
            AccountSpec {
                path: "/x/auth.json".into(),
                label: Some("work".into()),
            },
        ];
        let limits = Limits {
            start: 3,
            ceiling: 8,
            grow_after: std::time::Duration::from_secs(30),
        };
        let a = Accounts::new(&specs, "http://127.0.0.1:9/oauth/token", &client, limits);
        let labels: Vec<&str> = a.all().iter().map(|a| a.label.as_str()).collect();
        assert_eq!(labels, ["a", "a-2", "work"]);
        assert!(!a.any_available());
    }
}
