//! The live model catalog: the backend's `/codex/models` when it could be fetched, else
//! the built-in list.
//!
//! Owns: the cached catalog (an `ArcSwap` read lock-free by every request), when it is due
//! (at most every 5 minutes, or when a `/responses` reply announces a new `x-models-etag`,
//! at most once per retry interval) and the single flight of a refresh. A failed fetch
//! keeps the built-in or last good list.
//!
//! Does not own: the request that fetches it (`backend::refresh_catalog`).

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::error::Error;
use crate::upstream::catalog::Catalog;

/// How long a fetched catalog is fresh (the official client's cache time).
pub const CATALOG_TTL: Duration = Duration::from_secs(300);
/// After a failed fetch, the built-in (or last good) catalog serves this long before retrying.
const CATALOG_RETRY: Duration = Duration::from_secs(30);

/// What one fetch found.
pub enum Fetched {
    /// `304`: the catalog held is current.
    NotModified,
    New {
        catalog: Catalog,
        etag: Option<String>,
    },
}

/// The model catalog: the backend's when it could be fetched, else the built-in list.
pub struct LiveCatalog {
    current: ArcSwap<Catalog>,
    etag: Mutex<Option<String>>,
    /// Milliseconds since `epoch` at which the catalog is due for a fetch (0: now).
    due_ms: AtomicU64,
    /// Milliseconds since `epoch` (+1) of the last fetch attempt (0: never).
    attempted_ms: AtomicU64,
    ttl_ms: AtomicU64,
    /// Whether `current` came from the backend.
    live: std::sync::atomic::AtomicBool,
    fetch: tokio::sync::Mutex<()>,
    epoch: Instant,
}

impl Default for LiveCatalog {
    fn default() -> Self {
        LiveCatalog {
            current: ArcSwap::from_pointee(Catalog::builtin()),
            etag: Mutex::new(None),
            due_ms: AtomicU64::new(0),
            attempted_ms: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(CATALOG_TTL.as_millis() as u64),
            live: std::sync::atomic::AtomicBool::new(false),
            fetch: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
        }
    }
}

impl LiveCatalog {
    /// The catalog now (lock-free).
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Whether the current catalog came from the backend (else it is the built-in list).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Change how long a fetched catalog stays fresh (tests use zero).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(ttl.as_millis() as u64, Ordering::Release);
        self.due_ms.store(0, Ordering::Release);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a fetch is due (a reply that announces an ETag only starts one then).
    pub fn is_due(&self) -> bool {
        self.now_ms() >= self.due_ms.load(Ordering::Acquire)
    }

    fn etag(&self) -> Option<String> {
        self.etag.lock().ok().and_then(|e| e.clone())
    }

    /// A `/responses` reply named the catalog's current ETag: a differing one makes the
    /// catalog due, unless a fetch was tried within the retry interval (so a backend whose
    /// catalog keeps failing is not asked once per request).
    pub fn announce(&self, etag: &str) {
        if self.etag().as_deref() == Some(etag) {
            return;
        }
        let attempted = self.attempted_ms.load(Ordering::Acquire);
        if attempted == 0 || self.now_ms() + 1 >= attempted + CATALOG_RETRY.as_millis() as u64 {
            self.due_ms.store(0, Ordering::Release);
        }
    }

    /// Run `fetch` (given the ETag of the live catalog, if any) when the catalog is due:
    /// single flight; a failure keeps the current catalog and retries sooner.
    pub async fn refresh<F, Fut>(&self, fetch: F)
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: Future<Output = Result<Fetched, Error>>,
    {
        if !self.is_due() {
            return;
        }
        let _flight = self.fetch.lock().await;
        if !self.is_due() {
            return;
        }
        let ttl = Duration::from_millis(self.ttl_ms.load(Ordering::Acquire));
        self.attempted_ms
            .store(self.now_ms() + 1, Ordering::Release);
        let held = if self.is_live() { self.etag() } else { None };
        let next = match fetch(held).await {
            Ok(Fetched::NotModified) => ttl,
            Ok(Fetched::New { catalog, etag }) => {
                if let Ok(mut e) = self.etag.lock() {
                    *e = etag;
                }
                self.current.store(Arc::new(catalog));
                self.live.store(true, Ordering::Release);
                ttl
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "model catalog unavailable; serving the built-in or last fetched list");
                ttl.min(CATALOG_RETRY)
            }
        };
        self.due_ms
            .store(self.now_ms() + next.as_millis() as u64, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_etags_refetch_at_most_once_per_retry_interval() {
        let c = LiveCatalog::default();
        assert!(c.is_due(), "never fetched");
        c.due_ms.store(u64::MAX, Ordering::Release);
        c.announce("W/\"a\"");
        assert!(c.is_due(), "no attempt yet: a new ETag makes it due");
        c.due_ms.store(u64::MAX, Ordering::Release);
        c.attempted_ms.store(c.now_ms() + 1, Ordering::Release);
        c.announce("W/\"b\"");
        assert!(!c.is_due(), "just tried: wait for the retry interval");
        if let Ok(mut e) = c.etag.lock() {
            *e = Some("W/\"b\"".into());
        }
        c.attempted_ms.store(0, Ordering::Release);
        c.announce("W/\"b\"");
        assert!(!c.is_due(), "the ETag we hold changes nothing");
        assert!(!c.is_live());
        assert!(
            c.current().find("gpt-5.5").is_some(),
            "built-in until fetched"
        );
    }
}
