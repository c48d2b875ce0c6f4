//! `Meter`: what is learnt about one proxied request while it runs — the client's and the
//! backend's model, the upstream token usage of the terminal event, the account and its
//! queue wait, the attempts, the error that ended it. The pipeline and the translating body
//! record into it; the request log (`server::reqlog`) reads it when the response ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::upstream::events::{Delta, Usage};

/// What is learnt about one proxied request while it runs.
#[derive(Debug)]
pub struct Meter {
    pub(crate) client_model: String,
    pub(crate) backend_model: String,
    pub(crate) input: AtomicU64,
    pub(crate) output: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) usage_seen: AtomicBool,
    pub(crate) error: OnceLock<String>,
    /// Which account served it, and where its conversation moved from (if it did).
    pub(crate) account: std::sync::Mutex<Option<(String, Option<String>)>>,
    pub(crate) queued_us: AtomicU64,
    pub(crate) attempts: AtomicU64,
}

impl Meter {
    pub fn new(client_model: &str, backend_model: &str) -> Arc<Meter> {
        Arc::new(Meter {
            client_model: client_model.to_owned(),
            backend_model: backend_model.to_owned(),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            usage_seen: AtomicBool::new(false),
            error: OnceLock::new(),
            account: std::sync::Mutex::new(None),
            queued_us: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        })
    }

    /// One upstream attempt on `account`, after waiting `queued` for its window; `moved_from`
    /// names the account the conversation left (its reasoning items were dropped).
    pub fn record_attempt(&self, account: &str, moved_from: Option<&str>, queued: Duration) {
        if let Ok(mut a) = self.account.lock() {
            let moved = moved_from
                .map(str::to_owned)
                .or_else(|| a.as_ref().and_then(|p| p.1.clone()));
            *a = Some((account.to_owned(), moved));
        }
        self.queued_us
            .fetch_add(queued.as_micros() as u64, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Upstream attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn record_usage(&self, u: &Usage) {
        self.input.store(u.input, Ordering::Relaxed);
        self.output.store(u.output, Ordering::Relaxed);
        self.cached.store(u.cached, Ordering::Relaxed);
        self.usage_seen.store(true, Ordering::Relaxed);
    }

    /// The usage a terminal event carries.
    pub fn record_delta(&self, d: &Delta<'_>) {
        match d {
            Delta::Completed { usage }
            | Delta::Incomplete { usage, .. }
            | Delta::Failed { usage, .. } => self.record_usage(usage),
            _ => {}
        }
    }

    /// The first error that ended the request (later ones are consequences).
    pub fn record_error(&self, err: &Error) {
        let _ = self.error.set(error_name(err));
    }
}

pub(crate) fn error_name(err: &Error) -> String {
    match &err.code {
        Some(c) => c.clone(),
        None => format!("{:?}", err.kind),
    }
}
