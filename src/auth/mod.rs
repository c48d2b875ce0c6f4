//! ChatGPT credentials: the [`TokenStore`] every upstream request takes its headers from.
//!
//! Owns: loading `auth.json` (written by `codex login`), the prebuilt sensitive header values
//! ([`AuthHeaders`]) kept in an `ArcSwap`, proactive and 401-driven refresh against the OAuth
//! token endpoint, and the atomic write-back of rotated tokens. Submodules: `claims` (JWT
//! payloads), `file` (the file format, atomic write, lock file, RFC 3339), `refresh` (the
//! token endpoint call and its failure classes).
//!
//! Does not own: retrying the upstream request after a 401 (the caller runs the §12.6
//! sequence: `reload`, retry, `refresh_after_unauthorized`, retry), or the login flows.
//!
//! Design:
//! - **Hot path**: `headers()` is one `ArcSwap` load, one clock read and two atomics. No lock.
//! - **Single-flight**: everything that may call the token endpoint or touch the file runs
//!   under one `tokio::sync::Mutex`. A caller remembers the generation it saw; once it holds
//!   the mutex, a changed generation means someone refreshed meanwhile and it returns that
//!   result. Waiters that queued behind a failed attempt share that failure instead of
//!   repeating the call, so a burst of requests never becomes a burst of token calls.
//! - **Cross-process**: "re-read → refresh → write" runs under an exclusive `flock` on
//!   `<auth.json>.lock`, the lock file the Codex CLI uses. After the lock is ours the file is
//!   re-read: tokens written by another process (the Codex CLI, a second proxy) are adopted
//!   and the refresh is skipped, because a refresh token is redeemable only once.
//! - **Ordering**: rotated tokens are saved to disk before the new headers are published, so
//!   a crash can never lose the only valid refresh token.
//! - **Failure memory**: a 401 from the token endpoint is permanent for that token set. It is
//!   remembered with the file's stamp (inode, mtime, length) and no further token call is
//!   made until `auth.json` changes on disk (e.g. after `codex login`). Other failures are
//!   transient: the tokens are kept and the error is retryable.
//! - **Secrets**: tokens never reach `Debug`, `Display`, logs or error messages; the
//!   `Authorization` value is marked sensitive.

pub mod claims;
pub(crate) mod file;
mod refresh;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock (the same as std's unless a test pauses it).
use tokio::time::Instant;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::error::{Error, ErrorKind};
use crate::upstream::client::HttpClient;
use claims::Claims;
use file::{Stamp, Tokens, Unusable};
use refresh::{Failure, Reason};

pub use refresh::{CLIENT_ID, ORIGINATOR, user_agent, user_agent_for};

/// Refresh before use when the access token expires in less than this (§12.4).
const REFRESH_MARGIN_SECS: i64 = 5 * 60;
/// When `exp` cannot be read: refresh when `last_refresh` is older than this (§12.4).
const STALE_AFTER_SECS: i64 = 8 * 24 * 3600;
/// After a transient failure, callers within this window share it instead of calling again.
const TRANSIENT_COOLDOWN: Duration = Duration::from_secs(2);
/// A token that failed to refresh transiently is still used while it has this much life left.
const STILL_USABLE_SECS: i64 = 30;
/// A token we just obtained is not refreshed proactively again this soon, whatever its `exp`
/// says, so an odd token endpoint cannot drive a refresh per request.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Prebuilt per-credential header values; replaced as a whole on refresh/reload.
pub struct AuthHeaders {
    /// `Bearer <access token>`, marked sensitive.
    pub authorization: HeaderValue,
    /// The `chatgpt-account-id` value: `tokens.account_id`, else the id/access token claim.
    pub account_id: HeaderValue,
    /// The access token's `exp` (unix seconds), when readable.
    pub expires_at: Option<i64>,
    pub plan: Option<String>,
    pub email: Option<String>,
    /// Increases on every change of the credentials this store serves.
    pub generation: u64,
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("authorization", &"Bearer <redacted>")
            .field("account_id", &self.account_id)
            .field("expires_at", &self.expires_at)
            .field("plan", &self.plan)
            .field("email", &self.email)
            .field("generation", &self.generation)
            .finish()
    }
}

/// The credentials of one `auth.json`, shared by every request of the process.
pub struct TokenStore {
    path: PathBuf,
    lock_path: PathBuf,
    token_url: String,
    client: HttpClient,
    current: ArcSwapOption<AuthHeaders>,
    /// Unix second at which credentials without a readable `exp` are due for a refresh.
    stale_at: AtomicI64,
    /// Set while a permanent failure is remembered: sends the hot path to the slow path,
    /// which answers from memory until the file changes.
    blocked: AtomicBool,
    generation: AtomicU64,
    /// Refresh attempts started; lets a waiter tell that an attempt ran while it queued.
    attempts: AtomicU64,
    token_calls: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

/// What only refreshers touch (under the mutex).
#[derive(Default)]
struct State {
    /// The token set `current` was built from (with the refresh token).
    tokens: Option<Tokens>,
    /// The file as we last read or wrote it; `None` when it was missing.
    seen: Option<Stamp>,
    /// Why there are no credentials (names the path).
    unavailable: Option<String>,
    /// A remembered permanent failure for `tokens`.
    failure: Option<Error>,
    transient: Option<Transient>,
    refreshed_at: Option<Instant>,
}

struct Transient {
    at: Instant,
    attempt: u64,
    error: Error,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("auth_path", &self.path)
            .field("token_url", &self.token_url)
            .field("available", &self.available())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("token_calls", &self.token_calls())
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Load `auth_path` now. A missing or unusable file is not an error: the store is
    /// unavailable, remembers why, and picks the file up once it appears or changes.
    pub fn new(auth_path: PathBuf, token_url: String, client: HttpClient) -> Arc<TokenStore> {
        let store = TokenStore {
            lock_path: file::lock_path(&auth_path),
            path: auth_path,
            token_url,
            client,
            current: ArcSwapOption::empty(),
            stale_at: AtomicI64::new(i64::MAX),
            blocked: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            token_calls: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(State::default()),
        };
        // Nobody else can hold the mutex of a store that does not exist yet.
        if let Ok(mut st) = store.state.try_lock() {
            let read = file::read(&store.path);
            match store.load(&mut st, read) {
                Ok(h) => tracing::info!(
                    path = %store.path.display(),
                    plan = h.plan.as_deref().unwrap_or("unknown"),
                    expires_at = h.expires_at,
                    "loaded ChatGPT credentials"
                ),
                Err(e) => tracing::warn!("{}", e.message),
            }
        }
        Arc::new(store)
    }

    /// The headers now in use, without refreshing (lock-free).
    pub fn current(&self) -> Option<Arc<AuthHeaders>> {
        self.current.load_full()
    }

    /// Whether credentials are loaded and not known to be unrefreshable.
    pub fn available(&self) -> bool {
        self.current.load().is_some() && !self.blocked.load(Ordering::Acquire)
    }

    /// Why the credentials are unusable (names the path), `None` while they are usable.
    pub fn problem(&self) -> Option<String> {
        if self.available() {
            return None;
        }
        let Ok(st) = self.state.try_lock() else {
            return Some(format!(
                "credentials at {} are being reloaded",
                self.path.display()
            ));
        };
        st.unavailable
            .clone()
            .or_else(|| st.failure.as_ref().map(|e| e.message.clone()))
            .or_else(|| Some(format!("no usable credentials at {}", self.path.display())))
    }

    pub fn auth_path(&self) -> &Path {
        &self.path
    }

    /// How many HTTP calls this store made to the token endpoint.
    pub fn token_calls(&self) -> u64 {
        self.token_calls.load(Ordering::Relaxed)
    }

    /// Headers for the next upstream request, refreshed first (reason `proactive_expiry`)
    /// when the access token expires within 5 minutes (or, `exp` unknown, when the last
    /// refresh is older than 8 days).
    pub async fn headers(&self) -> Result<Arc<AuthHeaders>, Error> {
        let seen_attempt = self.attempts.load(Ordering::Acquire);
        let seen = self.current.load_full();
        if let Some(h) = &seen
            && !self.blocked.load(Ordering::Acquire)
            && !self.due(h, file::now().0)
        {
            return Ok(Arc::clone(h));
        }
        // Boxed: the refresh it may run would otherwise size every request's future.
        Box::pin(self.headers_slow(seen, seen_attempt)).await
    }

    /// 401 recovery step 2: re-read `auth.json`. `Some(new)` when it holds an access token
    /// other than the one in `failed` (for example another process refreshed); `None` when
    /// it holds the same one. An account change is refused with an error.
    pub async fn reload(&self, failed: &AuthHeaders) -> Result<Option<Arc<AuthHeaders>>, Error> {
        // Boxed (like the other rare paths here): only the requests that take it pay for
        // its state, instead of every request future carrying room for it.
        Box::pin(self.reload_inner(failed)).await
    }

    async fn reload_inner(&self, failed: &AuthHeaders) -> Result<Option<Arc<AuthHeaders>>, Error> {
        let mut st = self.state.lock().await;
        let read = self.read_blocking().await?;
        let loaded = match read {
            Ok(l) => l,
            // Possibly a half-written file from an in-place writer: no news yet.
            Err(Unusable::Malformed(why)) => {
                tracing::warn!(path = %self.path.display(), "reload skipped: {why}");
                return Ok(None);
            }
            Err(u) => return Err(self.make_unavailable(&mut st, &u)),
        };
        if account_of(&loaded.tokens).is_some_and(|a| a.as_bytes() != failed.account_id.as_bytes())
        {
            return Err(self.remember_account_change(&mut st, loaded.stamp));
        }
        if bearer_is(&failed.authorization, &loaded.tokens.access_token) {
            return Ok(None);
        }
        if let Some(cur) = self.current.load_full()
            && bearer_is(&cur.authorization, &loaded.tokens.access_token)
        {
            // Already serving what the file holds (we refreshed since `failed` was taken).
            // A failure remembered for it stays remembered: the file did not change.
            return match &st.failure {
                Some(e) => Err(e.clone()),
                None => Ok(Some(cur)),
            };
        }
        let h = self.adopt(&mut st, loaded.tokens, Some(loaded.stamp))?;
        tracing::info!(
            path = %self.path.display(),
            generation = h.generation,
            "reloaded ChatGPT credentials from disk after a 401"
        );
        Ok(Some(h))
    }

    /// 401 recovery step 4: refresh with reason `unauthorized_recovery`, unless the headers
    /// already moved past `failed` (then those are returned without a token call).
    pub async fn refresh_after_unauthorized(
        &self,
        failed: &AuthHeaders,
    ) -> Result<Arc<AuthHeaders>, Error> {
        Box::pin(self.refresh_after_unauthorized_inner(failed)).await
    }

    async fn refresh_after_unauthorized_inner(
        &self,
        failed: &AuthHeaders,
    ) -> Result<Arc<AuthHeaders>, Error> {
        let seen_attempt = self.attempts.load(Ordering::Acquire);
        let mut st = self.state.lock().await;
        self.recheck_disk(&mut st).await?;
        let Some(cur) = self.current.load_full() else {
            return Err(self.unavailable_error(&st));
        };
        if cur.authorization != failed.authorization {
            return Ok(cur);
        }
        if let Some(t) = &st.transient
            && (t.attempt > seen_attempt || t.at.elapsed() < TRANSIENT_COOLDOWN)
        {
            return Err(t.error.clone());
        }
        self.refresh(
            &mut st,
            Reason::UnauthorizedRecovery,
            Some(&failed.authorization),
        )
        .await
    }

    fn due(&self, h: &AuthHeaders, now: i64) -> bool {
        match h.expires_at {
            Some(exp) => exp.saturating_sub(now) < REFRESH_MARGIN_SECS,
            None => now >= self.stale_at.load(Ordering::Acquire),
        }
    }

    async fn headers_slow(
        &self,
        seen: Option<Arc<AuthHeaders>>,
        seen_attempt: u64,
    ) -> Result<Arc<AuthHeaders>, Error> {
        let mut st = self.state.lock().await;
        self.recheck_disk(&mut st).await?;
        let Some(cur) = self.current.load_full() else {
            return Err(self.unavailable_error(&st));
        };
        let now = file::now().0;
        let unchanged = seen.as_ref().map(|h| h.generation) == Some(cur.generation);
        let just_refreshed = st
            .refreshed_at
            .is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL);
        if !unchanged || !self.due(&cur, now) || just_refreshed {
            return Ok(cur);
        }
        if let Some(t) = &st.transient
            && (t.attempt > seen_attempt || t.at.elapsed() < TRANSIENT_COOLDOWN)
        {
            return still_usable(cur, now, t.error.clone());
        }
        match self.refresh(&mut st, Reason::ProactiveExpiry, None).await {
            Err(e) if e.retryable => still_usable(cur, now, e),
            other => other,
        }
    }

    /// While unavailable or failed, look at the file (one `stat`) and pick up a change.
    async fn recheck_disk(&self, st: &mut State) -> Result<(), Error> {
        if st.unavailable.is_none() && st.failure.is_none() {
            return Ok(());
        }
        if file::stamp(&self.path) == st.seen {
            return Err(self.blocked_error(st));
        }
        let read = self.read_blocking().await?;
        if st.unavailable.is_some() {
            return self.load(st, read).map(|_| ());
        }
        match read {
            Ok(l) => {
                let differs = st.tokens.as_ref().is_none_or(|t| t.differs(&l.tokens));
                if !differs {
                    // Touched, same tokens: still failed, but do not re-read for this stamp.
                    st.seen = Some(l.stamp);
                    return Err(self.blocked_error(st));
                }
                self.ensure_same_account(st, &l.tokens, l.stamp)?;
                let h = self.adopt(st, l.tokens, Some(l.stamp))?;
                tracing::info!(
                    path = %self.path.display(),
                    generation = h.generation,
                    "auth.json changed on disk; using the new ChatGPT credentials"
                );
                Ok(())
            }
            Err(Unusable::Malformed(_)) => Err(self.blocked_error(st)),
            Err(u) => Err(self.make_unavailable(st, &u)),
        }
    }

    /// One refresh attempt under the mutex; records a transient failure for waiters.
    async fn refresh(
        &self,
        st: &mut State,
        reason: Reason,
        failed: Option<&HeaderValue>,
    ) -> Result<Arc<AuthHeaders>, Error> {
        let attempt = self.attempts.fetch_add(1, Ordering::AcqRel) + 1;
        let result = self.refresh_under_file_lock(st, reason, failed).await;
        if let Err(e) = &result
            && e.retryable
        {
            st.transient = Some(Transient {
                at: Instant::now(),
                attempt,
                error: e.clone(),
            });
        }
        result
    }

    async fn refresh_under_file_lock(
        &self,
        st: &mut State,
        reason: Reason,
        failed: Option<&HeaderValue>,
    ) -> Result<Arc<AuthHeaders>, Error> {
        let (path, lock_path) = (self.path.clone(), self.lock_path.clone());
        let (guard, read) = tokio::task::spawn_blocking(move || {
            let guard = file::lock(&lock_path);
            (guard, file::read(&path))
        })
        .await
        .map_err(|e| Error::internal(format!("auth file task failed: {e}")))?;
        // Held until this function returns: across the token call and the write-back.
        let _guard = match guard {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(
                    lock = %self.lock_path.display(),
                    "cannot take the auth lock ({e}); refreshing without it"
                );
                None
            }
        };
        let loaded = match read {
            Ok(l) => l,
            Err(Unusable::Malformed(why)) => {
                let mut e = Error::new(
                    ErrorKind::RefreshFailed,
                    format!(
                        "Cannot refresh the ChatGPT access token: {} cannot be read ({why}).",
                        self.path.display()
                    ),
                );
                e.retryable = true;
                return Err(e);
            }
            Err(u) => return Err(self.make_unavailable(st, &u)),
        };
        let Some(held) = st.tokens.clone() else {
            return Err(self.unavailable_error(st));
        };
        let mut tokens = held;
        if loaded.tokens.differs(&tokens) {
            // Another process refreshed (or signed in) while we waited for the lock.
            self.ensure_same_account(st, &loaded.tokens, loaded.stamp)?;
            let h = self.adopt(st, loaded.tokens.clone(), Some(loaded.stamp))?;
            tracing::info!(
                reason = reason.as_str(),
                generation = h.generation,
                "adopted ChatGPT tokens another process saved; no refresh needed"
            );
            let still_needed = match reason {
                Reason::ProactiveExpiry => self.due(&h, file::now().0),
                Reason::UnauthorizedRecovery => failed == Some(&h.authorization),
            };
            if !still_needed {
                return Ok(h);
            }
            tokens = loaded.tokens.clone();
        } else {
            st.seen = Some(loaded.stamp);
        }
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            let err = Error::new(
                ErrorKind::RefreshFailed,
                format!(
                    "{} holds no refresh token, so the access token cannot be refreshed. Run `codex login` to sign in again.",
                    self.path.display()
                ),
            );
            return Err(self.remember_failure(st, err));
        };

        self.token_calls.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            reason = reason.as_str(),
            path = %self.path.display(),
            "refreshing the ChatGPT access token"
        );
        match refresh::call(&self.client, &self.token_url, &refresh_token, reason).await {
            Ok(r) => {
                let now = file::now();
                let mut doc = loaded.doc;
                file::apply_refresh(
                    &mut doc,
                    r.id_token.as_deref(),
                    r.access_token.as_deref(),
                    r.refresh_token.as_deref(),
                    now,
                );
                let fresh = Tokens {
                    id_token: r.id_token.or(tokens.id_token),
                    access_token: r.access_token.unwrap_or(tokens.access_token),
                    refresh_token: r.refresh_token.or(tokens.refresh_token),
                    account_id: tokens.account_id,
                    last_refresh: Some(now.0),
                };
                // Persist the rotated refresh token before anything uses the new access token.
                let path = self.path.clone();
                let written = tokio::task::spawn_blocking(move || file::write_atomic(&path, &doc))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r);
                let stamp = match written {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // The old refresh token is spent; keep the new one in memory at least.
                        tracing::error!(
                            path = %self.path.display(),
                            "could not save the refreshed ChatGPT tokens ({e}); using them in memory only"
                        );
                        Some(loaded.stamp)
                    }
                };
                let h = self.adopt(st, fresh, stamp)?;
                st.refreshed_at = Some(Instant::now());
                tracing::info!(
                    reason = reason.as_str(),
                    generation = h.generation,
                    expires_at = h.expires_at,
                    "refreshed the ChatGPT access token"
                );
                Ok(h)
            }
            Err(Failure::Transient(e)) => {
                tracing::warn!(
                    reason = reason.as_str(),
                    "token refresh failed, keeping the current tokens: {}",
                    e.message
                );
                Err(e)
            }
            Err(Failure::Permanent { code }) => {
                if code.as_deref() == Some(refresh::REUSED) {
                    // Almost always another process redeemed it first and saved the result.
                    if let Ok(l) = self.read_blocking().await?
                        && l.tokens.differs(&tokens)
                    {
                        self.ensure_same_account(st, &l.tokens, l.stamp)?;
                        let h = self.adopt(st, l.tokens, Some(l.stamp))?;
                        tracing::info!(
                            generation = h.generation,
                            "refresh token already used by another process; adopted the tokens it saved"
                        );
                        return Ok(h);
                    }
                }
                let mut err = Error::new(
                    ErrorKind::RefreshFailed,
                    refresh::permanent_message(code.as_deref()),
                );
                if let Some(c) = &code {
                    err = err.with_code(c.clone());
                }
                tracing::warn!(
                    code = code.as_deref().unwrap_or("unknown"),
                    path = %self.path.display(),
                    "token refresh failed permanently; waiting for auth.json to change"
                );
                Err(self.remember_failure(st, err))
            }
        }
    }

    async fn read_blocking(&self) -> Result<Result<file::Loaded, Unusable>, Error> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || file::read(&path))
            .await
            .map_err(|e| Error::internal(format!("auth file task failed: {e}")))
    }

    /// Publish a read (or an unusable file) as the store's state.
    fn load(
        &self,
        st: &mut State,
        read: Result<file::Loaded, Unusable>,
    ) -> Result<Arc<AuthHeaders>, Error> {
        match read {
            Ok(l) => self.adopt(st, l.tokens, Some(l.stamp)),
            Err(u) => Err(self.make_unavailable(st, &u)),
        }
    }

    /// Make `tokens` the served credentials; clears every remembered failure.
    fn adopt(
        &self,
        st: &mut State,
        tokens: Tokens,
        stamp: Option<Stamp>,
    ) -> Result<Arc<AuthHeaders>, Error> {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let headers = match build_headers(&tokens, generation) {
            Ok(h) => Arc::new(h),
            Err(why) => {
                let reason = format!("{} {why}", self.path.display());
                return Err(self.set_unavailable(st, reason, stamp));
            }
        };
        let stale_at = tokens
            .last_refresh
            .map_or(i64::MIN, |t| t.saturating_add(STALE_AFTER_SECS));
        // Stored before the headers so a reader that sees them also sees their deadline.
        self.stale_at.store(stale_at, Ordering::Release);
        st.tokens = Some(tokens);
        st.seen = stamp;
        st.unavailable = None;
        st.failure = None;
        st.transient = None;
        self.current.store(Some(Arc::clone(&headers)));
        self.blocked.store(false, Ordering::Release);
        Ok(headers)
    }

    fn make_unavailable(&self, st: &mut State, why: &Unusable) -> Error {
        let stamp = file::stamp(&self.path);
        self.set_unavailable(st, why.describe(&self.path), stamp)
    }

    fn set_unavailable(&self, st: &mut State, reason: String, stamp: Option<Stamp>) -> Error {
        tracing::warn!("no usable ChatGPT credentials: {reason}");
        st.tokens = None;
        st.seen = stamp;
        st.failure = None;
        st.transient = None;
        st.unavailable = Some(reason);
        self.current.store(None);
        self.blocked.store(false, Ordering::Release);
        self.unavailable_error(st)
    }

    fn remember_failure(&self, st: &mut State, err: Error) -> Error {
        st.failure = Some(err.clone());
        st.seen = file::stamp(&self.path);
        self.blocked.store(true, Ordering::Release);
        err
    }

    fn ensure_same_account(
        &self,
        st: &mut State,
        tokens: &Tokens,
        stamp: Stamp,
    ) -> Result<(), Error> {
        let Some(cur) = self.current.load_full() else {
            return Ok(());
        };
        match account_of(tokens) {
            Some(a) if a.as_bytes() != cur.account_id.as_bytes() => {
                Err(self.remember_account_change(st, stamp))
            }
            _ => Ok(()),
        }
    }

    fn remember_account_change(&self, st: &mut State, stamp: Stamp) -> Error {
        let err = Error::new(
            ErrorKind::RefreshFailed,
            format!(
                "The ChatGPT credentials in {} belong to another account than the one in use: you have since logged out or signed in to another account. Restart codex-as-api to use the new account, or run `codex login` to sign in again.",
                self.path.display()
            ),
        );
        let err = self.remember_failure(st, err);
        st.seen = Some(stamp);
        err
    }

    fn blocked_error(&self, st: &State) -> Error {
        match &st.failure {
            Some(e) => e.clone(),
            None => self.unavailable_error(st),
        }
    }

    fn unavailable_error(&self, st: &State) -> Error {
        let reason = st
            .unavailable
            .clone()
            .unwrap_or_else(|| format!("{} was not loaded", self.path.display()));
        Error::new(
            ErrorKind::AuthUnavailable,
            format!(
                "No ChatGPT credentials: {reason}. Run `codex login` to sign in; codex-as-api reads {}.",
                self.path.display()
            ),
        )
    }
}

/// A transient failure still leaves the current token usable while it has life left.
fn still_usable(cur: Arc<AuthHeaders>, now: i64, err: Error) -> Result<Arc<AuthHeaders>, Error> {
    if cur
        .expires_at
        .is_some_and(|exp| exp.saturating_sub(now) > STILL_USABLE_SECS)
    {
        Ok(cur)
    } else {
        Err(err)
    }
}

fn bearer_is(authorization: &HeaderValue, access_token: &str) -> bool {
    authorization.as_bytes().strip_prefix(b"Bearer ") == Some(access_token.as_bytes())
}

/// `tokens.account_id`, else the id-token claim, else the access-token claim (§3.2).
fn account_of(tokens: &Tokens) -> Option<String> {
    tokens.account_id.clone().or_else(|| {
        tokens
            .id_token
            .as_deref()
            .and_then(|t| Claims::decode(t).account_id)
            .or_else(|| Claims::decode(&tokens.access_token).account_id)
    })
}

/// Build the header values. The error text (never a token) completes "<path> …".
fn build_headers(tokens: &Tokens, generation: u64) -> Result<AuthHeaders, &'static str> {
    let access = Claims::decode(&tokens.access_token);
    let id = tokens
        .id_token
        .as_deref()
        .map(Claims::decode)
        .unwrap_or_default();
    let account = account_of(tokens)
        .ok_or("has no ChatGPT account id (neither tokens.account_id nor a token claim)")?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {}", tokens.access_token))
        .map_err(|_| "holds an access token with characters not allowed in an HTTP header")?;
    authorization.set_sensitive(true);
    let account_id = HeaderValue::from_str(&account)
        .map_err(|_| "holds an account id with characters not allowed in an HTTP header")?;
    Ok(AuthHeaders {
        authorization,
        account_id,
        expires_at: access.exp,
        plan: id.plan.or(access.plan),
        email: id.email.or(access.email),
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tokens(access: &str, account: Option<&str>) -> Tokens {
        Tokens {
            id_token: None,
            access_token: access.to_owned(),
            refresh_token: Some("rt-secret".into()),
            account_id: account.map(str::to_owned),
            last_refresh: None,
        }
    }

    #[test]
    fn headers_debug_redacts_the_token_and_marks_it_sensitive() {
        let h = build_headers(&tokens("secret-access-token", Some("acc-1")), 3).unwrap();
        assert!(h.authorization.is_sensitive());
        assert_eq!(h.authorization, "Bearer secret-access-token");
        let dbg = format!("{h:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(
            dbg.contains("acc-1") && dbg.contains("generation: 3"),
            "{dbg}"
        );
    }

    #[test]
    fn account_id_prefers_file_then_id_token_then_access_token() {
        let id = claims::fake_jwt(
            &json!({"https://api.openai.com/auth": {"chatgpt_account_id": "from-id", "chatgpt_plan_type": "pro"}, "email": "e@x"}),
        );
        let access = claims::fake_jwt(
            &json!({"exp": 42, "https://api.openai.com/auth": {"chatgpt_account_id": "from-access", "chatgpt_plan_type": "plus"}}),
        );
        let mut t = tokens(&access, Some("from-file"));
        t.id_token = Some(id);
        assert_eq!(account_of(&t).as_deref(), Some("from-file"));
        t.account_id = None;
        assert_eq!(account_of(&t).as_deref(), Some("from-id"));
        let h = build_headers(&t, 1).unwrap();
        assert_eq!(h.account_id, "from-id");
        assert_eq!(h.expires_at, Some(42));
        assert_eq!(h.plan.as_deref(), Some("pro"));
        assert_eq!(h.email.as_deref(), Some("e@x"));
        t.id_token = None;
        assert_eq!(account_of(&t).as_deref(), Some("from-access"));
        assert!(build_headers(&tokens("opaque", None), 1).is_err());
        assert!(build_headers(&tokens("bad\ntoken", Some("a")), 1).is_err());
    }

    #[test]
    fn still_usable_only_with_life_left() {
        let mut h = build_headers(&tokens("a", Some("b")), 1).unwrap();
        h.expires_at = Some(1_000);
        let h = Arc::new(h);
        let err = Error::new(ErrorKind::BadGateway, "x");
        assert!(still_usable(Arc::clone(&h), 900, err.clone()).is_ok());
        assert!(still_usable(Arc::clone(&h), 990, err.clone()).is_err());
    }
}
