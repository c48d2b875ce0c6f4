//! TokenStore against a mock OAuth token endpoint on 127.0.0.1:0: single-flight refresh,
//! atomic write-back, the 401 recovery steps, permanent failures and cross-process adoption.

// Test helpers may panic: a panic is a test failure with a location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use codex_as_api::error::ErrorKind;
use codex_as_api::internals::auth::TokenStore;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const ACCOUNT: &str = "acc-test-1";
const REUSED_BODY: &str = r#"{"error":{"message":"Your refresh token has already been used to generate a new access token. Please try signing in again.","type":"invalid_request_error","param":null,"code":"refresh_token_reused"}}"#;
const REUSED_MESSAGE: &str = "Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again. Run `codex login` to sign in again.";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt(payload: Value) -> String {
    format!(
        "{}.{}.sig",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

/// An access token for `account` expiring at `exp`; `tag` makes it unique.
fn access_token(tag: &str, exp: i64, account: &str) -> String {
    jwt(json!({
        "exp": exp,
        "jti": tag,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": account,
            "chatgpt_plan_type": "plus",
            "chatgpt_user_id": "user-1"
        }
    }))
}

fn id_token(tag: &str) -> String {
    jwt(json!({
        "email": "u@example.com",
        "jti": tag,
        "https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT, "chatgpt_plan_type": "plus"}
    }))
}

fn auth_doc(access: &str, refresh: &str) -> Value {
    json!({
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": id_token("initial"),
            "access_token": access,
            "refresh_token": refresh,
            "account_id": ACCOUNT
        },
        "last_refresh": "2026-01-01T00:00:00.000000000Z"
    })
}

fn write_json(path: &Path, doc: &Value) {
    // Like the Codex CLI: write a temp file and rename it over auth.json.
    let tmp = path.with_extension("other-process.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `auth.json` for `ACCOUNT` with an access token (`tag`, expiring at `exp`) and
/// `refresh`, written the way another process would.
fn write_tokens(path: &Path, tag: &str, exp: i64, refresh: &str) {
    write_json(path, &auth_doc(&access_token(tag, exp, ACCOUNT), refresh));
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn bearer(access: &str) -> String {
    format!("Bearer {access}")
}

type Hook = Box<dyn FnOnce() + Send>;

/// The mock token endpoint: rotating refresh tokens, reuse detection, counters.
#[derive(Default)]
struct MockState {
    calls: AtomicU64,
    serial: AtomicU64,
    valid: Mutex<HashSet<String>>,
    used: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
    fail_status: Mutex<Option<u16>>,
    requests: Mutex<Vec<(HeaderMap, Value)>>,
    issued_access: Mutex<Vec<String>>,
    issued_refresh: Mutex<Vec<String>>,
    on_reused: Mutex<Option<Hook>>,
}

struct Mock {
    url: String,
    state: Arc<MockState>,
}

impl Mock {
    async fn start() -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
        let state = Arc::new(MockState::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&st), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Mock { url, state }
    }

    fn accept(&self, refresh: &str) {
        self.state.valid.lock().unwrap().insert(refresh.to_owned());
    }

    fn mark_used(&self, refresh: &str) {
        self.state.used.lock().unwrap().insert(refresh.to_owned());
    }

    fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn reasons(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["refresh_reason"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn last_access(&self) -> String {
        self.state
            .issued_access
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    }

    fn last_refresh(&self) -> String {
        self.state
            .issued_refresh
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    }

    fn store(&self, path: &Path) -> Arc<TokenStore> {
        let client = codex_as_api::internals::upstream::client::build(None, None).unwrap();
        TokenStore::new(path.to_path_buf(), self.url.clone(), client)
    }
}

async fn handle(
    st: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.calls.fetch_add(1, Ordering::SeqCst);
    let delay = *st.delay.lock().unwrap();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    tokio::time::sleep(delay).await;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.requests.lock().unwrap().push((headers, body.clone()));
    let reply = |status: u16, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    };
    if let Some(status) = *st.fail_status.lock().unwrap() {
        return reply(status, r#"{"error":"temporarily_unavailable"}"#.into());
    }
    let rt = body["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if st.valid.lock().unwrap().remove(&rt) {
        st.used.lock().unwrap().insert(rt);
        let n = st.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let access = access_token(&format!("issued-{n}"), now() + 3600, ACCOUNT);
        let refresh = format!("rt_issued_{n}");
        st.valid.lock().unwrap().insert(refresh.clone());
        st.issued_access.lock().unwrap().push(access.clone());
        st.issued_refresh.lock().unwrap().push(refresh.clone());
        let out = json!({
            "id_token": id_token(&format!("issued-{n}")),
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": 3600,
            "token_type": "Bearer",
            "scope": "openid profile email"
        });
        return reply(200, out.to_string());
    }
    if st.used.lock().unwrap().contains(&rt) {
        let hook = st.on_reused.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        return reply(401, REUSED_BODY.into());
    }
    reply(401, r#"{"error":"refresh_token_invalidated"}"#.into())
}

struct Home {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn home() -> Home {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    Home { _dir: dir, path }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_and_50_concurrent_callers_make_one_token_call() {
    let mock = Mock::start().await;
    *mock.state.delay.lock().unwrap() = Duration::from_millis(200);
    mock.accept("rt_initial");
    let home = home();
    let old = access_token("old", now() - 10, ACCOUNT);
    write_json(&home.path, &auth_doc(&old, "rt_initial"));
    let store = mock.store(&home.path);
    assert!(store.available());

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = Arc::clone(&store);
        tasks.push(tokio::spawn(async move { s.headers().await }));
    }
    let new = bearer(&mock.last_access_after(&mut tasks).await);
    assert_eq!(mock.calls(), 1);
    assert_eq!(store.token_calls(), 1);
    assert_eq!(store.current().unwrap().authorization, new.as_str());

    // The request is exactly §12.3.
    let (headers, body) = mock.state.requests.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        json!({"client_id":"app_EMoamEEZ73f0CkXaXp7hrann","grant_type":"refresh_token","refresh_reason":"proactive_expiry","refresh_token":"rt_initial"})
    );
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["client_id", "grant_type", "refresh_reason", "refresh_token"]
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["originator"], "codex_cli_rs");
    assert_eq!(headers["accept"], "*/*");
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("codex_cli_rs/0.169.0 (")
    );
    assert!(headers.get("authorization").is_none());

    // Fresh now: the next call is a plain load.
    let again = store.headers().await.unwrap();
    assert_eq!(again.authorization, new.as_str());
    assert_eq!(mock.calls(), 1);
}

impl Mock {
    /// Await every task, check they all got the same, newly issued token, return it.
    async fn last_access_after(
        &self,
        tasks: &mut Vec<
            tokio::task::JoinHandle<
                Result<Arc<codex_as_api::internals::auth::AuthHeaders>, codex_as_api::error::Error>,
            >,
        >,
    ) -> String {
        let mut seen = HashSet::new();
        for t in tasks.drain(..) {
            let h = t.await.unwrap().unwrap();
            seen.insert(h.authorization.to_str().unwrap().to_owned());
        }
        let access = self.last_access();
        assert_eq!(seen, HashSet::from([bearer(&access)]));
        access
    }
}

#[tokio::test]
async fn refresh_rewrites_auth_json_atomically_keeping_unknown_fields() {
    let mock = Mock::start().await;
    mock.accept("rt_initial");
    let home = home();
    let old = access_token("old", now() + 60, ACCOUNT);
    let mut doc = auth_doc(&old, "rt_initial");
    doc["tokens"]["future_nested"] = json!({"kept": [1, {"deep": true}]});
    doc["agent_identity"] = json!({"id": "agent-1", "scopes": ["a", "b"]});
    doc["zz_last_unknown"] = json!(7);
    write_json(&home.path, &doc);
    let inode_before = std::fs::metadata(&home.path).unwrap().ino();
    let store = mock.store(&home.path);

    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&mock.last_access()).as_str());
    assert!(h.authorization.is_sensitive());
    assert_eq!(h.account_id, ACCOUNT);
    assert_eq!(h.plan.as_deref(), Some("plus"));
    assert_eq!(h.email.as_deref(), Some("u@example.com"));

    let meta = std::fs::metadata(&home.path).unwrap();
    assert_ne!(meta.ino(), inode_before, "replaced by rename");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&home.path).unwrap();
    assert!(text.starts_with("{\n  \"auth_mode\": \"chatgpt\",\n  \"OPENAI_API_KEY\": null,"));
    let saved: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = saved
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "auth_mode",
            "OPENAI_API_KEY",
            "tokens",
            "last_refresh",
            "agent_identity",
            "zz_last_unknown"
        ]
    );
    assert_eq!(saved["agent_identity"], doc["agent_identity"]);
    assert_eq!(saved["zz_last_unknown"], 7);
    assert_eq!(
        saved["tokens"]["future_nested"],
        doc["tokens"]["future_nested"]
    );
    assert_eq!(saved["tokens"]["account_id"], ACCOUNT);
    assert_eq!(
        saved["tokens"]["refresh_token"],
        mock.last_refresh().as_str()
    );
    assert_eq!(saved["tokens"]["access_token"], mock.last_access().as_str());
    assert_ne!(saved["tokens"]["id_token"], doc["tokens"]["id_token"]);
    let last = saved["last_refresh"].as_str().unwrap();
    assert!(last.ends_with('Z') && last.len() == 30, "{last}");
    assert!(last > "2026-01-01T00:00:00.000000000Z", "{last}");

    for shown in [format!("{h:?}"), format!("{store:?}")] {
        assert!(!shown.contains(&mock.last_access()), "{shown}");
        assert!(!shown.contains(&mock.last_refresh()), "{shown}");
    }

    let lock = std::fs::metadata(home.path.with_extension("json.lock")).unwrap();
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
    let names: Vec<String> = std::fs::read_dir(home.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temp files left: {names:?}");

    // The saved rotated token is what the next refresh sends.
    let rt = mock.last_refresh();
    let again = store.refresh_after_unauthorized(&h).await.unwrap();
    assert_ne!(again.generation, h.generation);
    let reqs = mock.state.requests.lock().unwrap();
    assert_eq!(reqs[1].1["refresh_token"], rt.as_str());
}

#[tokio::test]
async fn reload_adopts_token_written_by_another_process() {
    let mock = Mock::start().await;
    let home = home();
    let a = access_token("a", now() + 3600, ACCOUNT);
    write_json(&home.path, &auth_doc(&a, "rt_a"));
    let store = mock.store(&home.path);
    let failed = store.headers().await.unwrap();

    // Nothing new on disk yet.
    assert!(store.reload(&failed).await.unwrap().is_none());

    let b = access_token("b", now() + 3600, ACCOUNT);
    write_json(&home.path, &auth_doc(&b, "rt_b"));
    let fresh = store.reload(&failed).await.unwrap().unwrap();
    assert_eq!(fresh.authorization, bearer(&b).as_str());
    assert!(fresh.generation > failed.generation);
    assert_eq!(
        store.headers().await.unwrap().authorization,
        bearer(&b).as_str()
    );
    assert_eq!(mock.calls(), 0);
    assert_eq!(store.token_calls(), 0);
}

#[tokio::test]
async fn reload_refuses_credentials_of_another_account() {
    let mock = Mock::start().await;
    let home = home();
    write_tokens(&home.path, "a", now() + 3600, "rt_a");
    let store = mock.store(&home.path);
    let failed = store.headers().await.unwrap();
    let mut other = auth_doc(&access_token("o", now() + 3600, "acc-other"), "rt_o");
    other["tokens"]["account_id"] = json!("acc-other");
    write_json(&home.path, &other);
    let err = store.reload(&failed).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RefreshFailed);
    assert!(
        err.message.contains("signed in to another account"),
        "{}",
        err.message
    );
    // Remembered: requests fail with the same message, no token call.
    let err = store.headers().await.unwrap_err();
    assert!(err.message.contains("signed in to another account"));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn refresh_after_unauthorized_sends_unauthorized_recovery() {
    let mock = Mock::start().await;
    mock.accept("rt_a");
    let home = home();
    // Far from expiry: only the 401 path refreshes it.
    write_tokens(&home.path, "a", now() + 3600, "rt_a");
    let store = mock.store(&home.path);
    let failed = store.headers().await.unwrap();
    assert_eq!(mock.calls(), 0);

    let fresh = store.refresh_after_unauthorized(&failed).await.unwrap();
    assert_eq!(fresh.authorization, bearer(&mock.last_access()).as_str());
    assert_eq!(mock.reasons(), ["unauthorized_recovery"]);
    assert_eq!(
        read_json(&home.path)["tokens"]["refresh_token"],
        mock.last_refresh().as_str()
    );

    // A second request that failed with the same old token gets the new one, no new call.
    let again = store.refresh_after_unauthorized(&failed).await.unwrap();
    assert_eq!(again.authorization, fresh.authorization);
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn reused_refresh_token_is_permanent_with_exact_message_and_no_retry() {
    let mock = Mock::start().await;
    mock.mark_used("rt_spent");
    let home = home();
    write_tokens(&home.path, "old", now() - 10, "rt_spent");
    let before = std::fs::read(&home.path).unwrap();
    let store = mock.store(&home.path);

    let err = store.headers().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::RefreshFailed);
    assert!(!err.retryable);
    assert_eq!(err.message, REUSED_MESSAGE);
    assert_eq!(mock.calls(), 1);
    assert!(!store.available());

    // Remembered for this token set: no retry storm.
    for _ in 0..5 {
        assert_eq!(store.headers().await.unwrap_err().message, REUSED_MESSAGE);
    }
    let current = store.current().unwrap();
    let err = store
        .refresh_after_unauthorized(&current)
        .await
        .unwrap_err();
    assert_eq!(err.message, REUSED_MESSAGE);
    assert_eq!(mock.calls(), 1);
    assert_eq!(store.token_calls(), 1);
    assert_eq!(
        std::fs::read(&home.path).unwrap(),
        before,
        "auth.json untouched"
    );

    // `codex login` writes new tokens: picked up without a restart.
    let fresh = access_token("login", now() + 3600, ACCOUNT);
    write_json(&home.path, &auth_doc(&fresh, "rt_login"));
    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&fresh).as_str());
    assert!(store.available());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn reused_refresh_token_adopts_tokens_another_process_saved() {
    let mock = Mock::start().await;
    mock.mark_used("rt_raced");
    let home = home();
    write_tokens(&home.path, "old", now() - 10, "rt_raced");
    let store = mock.store(&home.path);

    // Another process (not honouring the lock) redeemed the token and saved the result
    // while our call was in flight.
    let winner = access_token("winner", now() + 3600, ACCOUNT);
    let (path, saved) = (home.path.clone(), auth_doc(&winner, "rt_winner"));
    *mock.state.on_reused.lock().unwrap() = Some(Box::new(move || write_json(&path, &saved)));

    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&winner).as_str());
    assert!(store.available());
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        store.headers().await.unwrap().authorization,
        bearer(&winner).as_str()
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn missing_file_is_unavailable_and_names_path_and_codex_login() {
    let mock = Mock::start().await;
    let home = home();
    let store = mock.store(&home.path);
    assert!(!store.available());
    assert!(store.current().is_none());
    assert_eq!(store.auth_path(), home.path.as_path());
    let err = store.headers().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::AuthUnavailable);
    assert!(err.message.contains("codex login"), "{}", err.message);
    assert!(
        err.message.contains(&home.path.display().to_string()),
        "{}",
        err.message
    );

    // API-key mode is not ChatGPT credentials.
    write_json(
        &home.path,
        &json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}),
    );
    let err = store.headers().await.unwrap_err();
    assert!(err.message.contains("API key"), "{}", err.message);
    assert!(err.message.contains("codex login"));

    // After `codex login` the file is picked up on the next request.
    let a = access_token("a", now() + 3600, ACCOUNT);
    write_json(&home.path, &auth_doc(&a, "rt_a"));
    assert_eq!(
        store.headers().await.unwrap().authorization,
        bearer(&a).as_str()
    );
    assert!(store.available());
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_store_on_same_file_adopts_refresh_without_second_call() {
    let mock = Mock::start().await;
    *mock.state.delay.lock().unwrap() = Duration::from_millis(300);
    mock.accept("rt_shared");
    let home = home();
    write_tokens(&home.path, "old", now() - 10, "rt_shared");
    // Two processes sharing one auth.json.
    let first = mock.store(&home.path);
    let second = mock.store(&home.path);

    let (a, b) = tokio::join!(
        {
            let s = Arc::clone(&first);
            tokio::spawn(async move { s.headers().await })
        },
        {
            let s = Arc::clone(&second);
            tokio::spawn(async move { s.headers().await })
        }
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a.authorization, b.authorization);
    assert_eq!(a.authorization, bearer(&mock.last_access()).as_str());
    assert_eq!(mock.calls(), 1);
    assert_eq!(first.token_calls() + second.token_calls(), 1);
    assert_eq!(
        read_json(&home.path)["tokens"]["refresh_token"],
        mock.last_refresh().as_str()
    );
}

#[tokio::test]
async fn transient_failure_keeps_tokens_and_is_retryable() {
    let mock = Mock::start().await;
    mock.accept("rt_a");
    *mock.state.fail_status.lock().unwrap() = Some(503);
    let home = home();
    let expired = access_token("old", now() - 10, ACCOUNT);
    write_json(&home.path, &auth_doc(&expired, "rt_a"));
    let before = std::fs::read(&home.path).unwrap();
    let store = mock.store(&home.path);

    let err = store.headers().await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert_ne!(err.kind, ErrorKind::AuthUnavailable);
    assert_ne!(err.kind, ErrorKind::RefreshFailed);
    assert!(store.available(), "not poisoned");
    assert_eq!(std::fs::read(&home.path).unwrap(), before);
    // Callers right after share the failure instead of calling again.
    assert!(store.headers().await.unwrap_err().retryable);
    assert_eq!(mock.calls(), 1);

    *mock.state.fail_status.lock().unwrap() = None;
    // Past the 2 s in which callers share a transient failure (the store reads tokio's
    // clock: advanced here, not slept).
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(2100)).await;
    tokio::time::resume();
    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&mock.last_access()).as_str());
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn transient_failure_before_expiry_keeps_serving_the_current_token() {
    let mock = Mock::start().await;
    mock.accept("rt_a");
    *mock.state.fail_status.lock().unwrap() = Some(500);
    let home = home();
    // Due for a proactive refresh (2 min left) but still valid.
    let soon = access_token("soon", now() + 120, ACCOUNT);
    write_json(&home.path, &auth_doc(&soon, "rt_a"));
    let store = mock.store(&home.path);
    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&soon).as_str());
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.reasons(), ["proactive_expiry"]);
}

#[tokio::test]
async fn opaque_token_is_refreshed_only_when_last_refresh_is_older_than_8_days() {
    let mock = Mock::start().await;
    mock.accept("rt_a");
    let home = home();
    // An access token without readable claims: exp unknown, account id from the file.
    let mut doc = auth_doc("opaque-access-token", "rt_a");
    doc["last_refresh"] = json!("2999-01-01T00:00:00Z");
    write_json(&home.path, &doc);
    let store = mock.store(&home.path);
    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, "Bearer opaque-access-token");
    assert_eq!(h.expires_at, None);
    assert_eq!(mock.calls(), 0);

    doc["last_refresh"] = json!("2000-01-01T00:00:00Z");
    write_json(&home.path, &doc);
    let store = mock.store(&home.path);
    let h = store.headers().await.unwrap();
    assert_eq!(h.authorization, bearer(&mock.last_access()).as_str());
    assert_eq!(mock.reasons(), ["proactive_expiry"]);
}
