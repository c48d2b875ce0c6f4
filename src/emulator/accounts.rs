//! ChatGPT accounts: each has its own ids, an optional usage limit, and the count of its
//! open `/responses` streams, which the account-wide concurrency limit checks (since
//! 2026-08 the real backend refuses more than a few concurrently open streams per account
//! with HTTP 429).
//!
//! Owns every account ([`Accounts`]: the default one, the registry by id, the limit of
//! open streams per account) and each account's counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::util::{lock, random_alnum, uuid_like};

/// `usage_limit` when no limit is set.
const NO_LIMIT: i64 = i64::MIN;

/// Counters of one account (a snapshot), from [`super::Emulator::account_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountStats {
    /// Authorized `POST /codex/responses` of this account.
    pub requests: u64,
    /// Streams of this account open now (admitted, not yet finished or dropped).
    pub open_streams: usize,
    /// The most streams that were open at once (since start or [`super::Emulator::reset_peaks`]).
    pub peak_open_streams: usize,
    /// Requests refused with 429 because the account had its limit of open streams.
    pub concurrency_refusals: u64,
    /// Requests refused with 429 `usage_limit_reached` ([`super::Emulator::set_usage_limit`]).
    pub usage_limit_refusals: u64,
}

/// One account.
pub(super) struct Account {
    pub(super) id: String,
    pub(super) user_id: String,
    requests: AtomicU64,
    open: AtomicUsize,
    peak: AtomicUsize,
    concurrency_refusals: AtomicU64,
    usage_limit_refusals: AtomicU64,
    /// `resets_at` (unix seconds) of the usage limit in force, or [`NO_LIMIT`].
    usage_limit: AtomicI64,
}

impl Account {
    pub(super) fn new(id: String) -> Account {
        Account {
            id,
            user_id: format!("user-{}", random_alnum(24)),
            requests: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            concurrency_refusals: AtomicU64::new(0),
            usage_limit_refusals: AtomicU64::new(0),
            usage_limit: AtomicI64::new(NO_LIMIT),
        }
    }

    pub(super) fn stats(&self) -> AccountStats {
        AccountStats {
            requests: self.requests.load(Ordering::Relaxed),
            open_streams: self.open.load(Ordering::Acquire),
            peak_open_streams: self.peak.load(Ordering::Acquire),
            concurrency_refusals: self.concurrency_refusals.load(Ordering::Relaxed),
            usage_limit_refusals: self.usage_limit_refusals.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The `resets_at` of the usage limit in force, if any.
    pub(super) fn usage_limit(&self) -> Option<i64> {
        match self.usage_limit.load(Ordering::Acquire) {
            NO_LIMIT => None,
            t => Some(t),
        }
    }

    pub(super) fn set_usage_limit(&self, resets_at: Option<i64>) {
        // `i64::MIN` as a reset time is meaningless; it is taken as the earliest other one.
        let v = resets_at.map_or(NO_LIMIT, |t| t.max(NO_LIMIT + 1));
        self.usage_limit.store(v, Ordering::Release);
    }

    pub(super) fn refused_for_usage(&self) {
        self.usage_limit_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Opens one stream unless `limit` are open already (then counts the refusal).
    pub(super) fn try_open(self: &Arc<Self>, limit: usize) -> Option<OpenStream> {
        let mut open = self.open.load(Ordering::Acquire);
        loop {
            if open >= limit {
                self.concurrency_refusals.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        self.peak.fetch_max(open + 1, Ordering::AcqRel);
        Some(OpenStream(Arc::clone(self)))
    }

    fn reset_peak(&self) {
        self.peak
            .store(self.open.load(Ordering::Acquire), Ordering::Release);
    }
}

/// One open stream of an account: held from admission (before the response head, through
/// any `EMU:slow` delay) inside the SSE body, and released when the body is dropped
/// (played out, cut, or abandoned by the client).
pub(super) struct OpenStream(Arc<Account>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every account, and the limit of open streams each may have.
pub(super) struct Accounts {
    /// The account `Emulator::issue_credentials` and the sign-in flows issue tokens for.
    pub(super) default: Arc<Account>,
    /// Every account (the default one included), by id.
    all: Mutex<HashMap<String, Arc<Account>>>,
    /// Open streams allowed per account (`usize::MAX`: unlimited).
    concurrency: AtomicUsize,
}

impl Accounts {
    /// A default account with a fresh id, and `concurrency` streams allowed per account.
    pub(super) fn new(concurrency: Option<usize>) -> Accounts {
        let default = Arc::new(Account::new(uuid_like()));
        let all = HashMap::from([(default.id.clone(), default.clone())]);
        Accounts {
            default,
            all: Mutex::new(all),
            concurrency: AtomicUsize::new(concurrency.unwrap_or(usize::MAX)),
        }
    }

    /// The account with this id, registered if it is new.
    pub(super) fn account(&self, id: &str) -> Arc<Account> {
        let mut accounts = lock(&self.all);
        Arc::clone(
            accounts
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(Account::new(id.to_owned()))),
        )
    }

    /// The account with this id, if it exists.
    pub(super) fn find_account(&self, id: &str) -> Option<Arc<Account>> {
        lock(&self.all).get(id).cloned()
    }

    /// A new account with a fresh id.
    pub(super) fn add_account(&self) -> Arc<Account> {
        let mut accounts = lock(&self.all);
        loop {
            let id = uuid_like();
            if let std::collections::hash_map::Entry::Vacant(slot) = accounts.entry(id.clone()) {
                return Arc::clone(slot.insert(Arc::new(Account::new(id))));
            }
        }
    }

    pub(super) fn reset_peaks(&self) {
        for a in lock(&self.all).values() {
            a.reset_peak();
        }
    }

    /// The limit of open streams per account (`usize::MAX`: none).
    pub(super) fn stream_limit(&self) -> usize {
        self.concurrency.load(Ordering::Acquire)
    }

    /// Sets the limit of open streams per account (`None`: none).
    pub(super) fn set_stream_limit(&self, limit: Option<usize>) {
        self.concurrency
            .store(limit.unwrap_or(usize::MAX), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_open_up_to_the_limit_and_close_on_drop() {
        let a = Arc::new(Account::new("acct".into()));
        let one = a.try_open(2);
        let two = a.try_open(2);
        assert!(one.is_some() && two.is_some());
        assert!(a.try_open(2).is_none());
        assert_eq!(a.stats().open_streams, 2);
        assert_eq!(a.stats().concurrency_refusals, 1);
        drop(one);
        assert_eq!(a.stats().open_streams, 1);
        let three = a.try_open(2);
        assert!(three.is_some());
        drop((two, three));
        assert_eq!(a.stats().open_streams, 0);
        assert_eq!(a.stats().peak_open_streams, 2);
        a.reset_peak();
        assert_eq!(a.stats().peak_open_streams, 0);
    }

    #[test]
    fn usage_limit_round_trips() {
        let a = Account::new("acct".into());
        assert_eq!(a.usage_limit(), None);
        a.set_usage_limit(Some(1_800_000_000));
        assert_eq!(a.usage_limit(), Some(1_800_000_000));
        a.set_usage_limit(None);
        assert_eq!(a.usage_limit(), None);
    }
}
