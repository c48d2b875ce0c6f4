//! `codex-as-api login`: ChatGPT sign-in, writing the Codex CLI's own `auth.json`.
//!
//! Owns the two flows of §13:
//! * **Browser** (default): PKCE (64-byte verifier, S256 challenge, 32-byte state), a
//!   one-shot HTTP server on `127.0.0.1:<callback port>` (1455 like the Codex CLI) that
//!   takes `/auth/callback`, checks `state`, exchanges the code (form-encoded) and sends
//!   the browser to `/success`. The authorize URL is printed, and opened in a browser
//!   when the machine has one.
//! * **Device code** (`--device`, for headless machines): ask for a user code, tell the
//!   user where to enter it, poll every `interval` seconds (403/404 = pending), then
//!   exchange the returned code with the returned verifier.
//!
//! Both end in `save`: `auth_mode: "chatgpt"`, the three tokens, `account_id` from the id
//! token, `last_refresh` = now, written atomically with mode 0600 under the Codex lock
//! file, keeping every other key an existing file has. Tokens are never printed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use super::{fetch, form_encode, parse_query, random_b64url};
use crate::auth::claims::Claims;
use crate::auth::{CLIENT_ID, ORIGINATOR, user_agent};
use crate::upstream::client::HttpClient;

/// The whole sign-in must finish within this long (device codes expire after 15 min).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// One call to the issuer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const SCOPE: &str = "openid profile email offline_access api.connectors.read api.connectors.invoke";

/// What `login` needs.
#[derive(Clone, Debug)]
pub struct LoginOptions {
    /// The issuer root, `https://auth.openai.com` (the emulator's origin in tests).
    pub auth_base: String,
    /// Where auth.json goes.
    pub auth_path: PathBuf,
    /// Port of the local callback server (0 = any free port).
    pub callback_port: u16,
    /// Try to open a browser on the authorize URL.
    pub open_browser: bool,
    /// Device-code flow instead of the browser flow.
    pub device: bool,
}

/// The token set the issuer returned. `Debug` never shows a token.
struct Issued {
    id_token: String,
    access_token: String,
    refresh_token: String,
}

/// What was saved, safe to show.
#[derive(Debug)]
pub struct Saved {
    pub email: Option<String>,
    pub plan: Option<String>,
}

/// Run the chosen flow and save the credentials.
pub async fn run(client: &HttpClient, opts: &LoginOptions) -> Result<Saved, String> {
    let base = opts.auth_base.trim_end_matches('/').to_owned();
    let issued = tokio::time::timeout(LOGIN_TIMEOUT, async {
        if opts.device {
            device_flow(client, &base).await
        } else {
            browser_flow(client, &base, opts).await
        }
    })
    .await
    .map_err(|_| {
        format!(
            "sign-in did not finish within {} minutes",
            LOGIN_TIMEOUT.as_secs() / 60
        )
    })??;
    let path = opts.auth_path.clone();
    let saved = tokio::task::spawn_blocking(move || save(&path, &issued))
        .await
        .map_err(|e| format!("saving credentials: {e}"))??;
    println!(
        "Signed in{}{}. Credentials saved to {} (shared with the Codex CLI).",
        saved
            .email
            .as_deref()
            .map(|e| format!(" as {e}"))
            .unwrap_or_default(),
        saved
            .plan
            .as_deref()
            .map(|p| format!(" (plan: {p})"))
            .unwrap_or_default(),
        opts.auth_path.display()
    );
    Ok(saved)
}

/// Write auth.json (§12.1) atomically, 0600, keeping unknown keys of an existing file.
fn save(path: &Path, t: &Issued) -> Result<Saved, String> {
    use crate::auth::file;
    let claims = Claims::decode(&t.id_token);
    let access = Claims::decode(&t.access_token);
    let account_id = claims.account_id.clone().or(access.account_id.clone());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Same lock as a refresh, so a running server or Codex CLI never interleaves with us.
    let _lock = file::lock(&file::lock_path(path))
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    let mut doc = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let (secs, nanos) = file::now();
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("auth_mode".into(), json!("chatgpt"));
        obj.insert("OPENAI_API_KEY".into(), Value::Null);
        obj.insert(
            "tokens".into(),
            json!({
                "id_token": t.id_token,
                "access_token": t.access_token,
                "refresh_token": t.refresh_token,
                "account_id": account_id,
            }),
        );
        obj.insert(
            "last_refresh".into(),
            json!(file::format_rfc3339(secs, nanos)),
        );
    }
    file::write_atomic(path, &doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Saved {
        email: claims.email.or(access.email),
        plan: claims.plan.or(access.plan),
    })
}

/// The error text of an issuer answer: `error.message`/`error_description`, code, status.
fn issuer_error(what: &str, status: StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = v.get("error");
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .or_else(|| err.and_then(Value::as_str))
        .or_else(|| v.get("code").and_then(Value::as_str));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .or_else(|| v.get("error_description").and_then(Value::as_str));
    let mut s = format!("{what} failed (HTTP {})", status.as_u16());
    if let Some(c) = code {
        s.push_str(&format!(" [{c}]"));
    }
    if let Some(m) = message {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

fn post(
    url: &str,
    content_type: &'static str,
    body: String,
) -> Result<Request<Full<Bytes>>, String> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, "application/json")
        .header("originator", ORIGINATOR)
        .header(header::USER_AGENT, user_agent())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("invalid URL {url:?}: {e}"))
}

/// §13.1 step 5: the form-encoded code exchange.
async fn exchange(
    client: &HttpClient,
    base: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Issued, String> {
    let form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
        form_encode(code),
        form_encode(redirect_uri),
        form_encode(CLIENT_ID),
        form_encode(verifier)
    );
    let req = post(
        &format!("{base}/oauth/token"),
        "application/x-www-form-urlencoded",
        form,
    )?;
    let (status, _, body) = fetch(client, req, CALL_TIMEOUT).await?;
    if !status.is_success() {
        return Err(issuer_error("the code exchange", status, &body));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| "the token endpoint answered with something that is not JSON".to_owned())?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("the token endpoint's answer has no {k}"))
    };
    Ok(Issued {
        id_token: field("id_token")?,
        access_token: field("access_token")?,
        refresh_token: field("refresh_token")?,
    })
}

fn pkce() -> Result<(String, String), String> {
    use base64::Engine;
    let verifier = random_b64url(64)?;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Ok((verifier, challenge))
}

/// §13.1 step 3.
fn authorize_url(base: &str, redirect_uri: &str, challenge: &str, state: &str) -> String {
    format!(
        "{base}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}\
         &code_challenge={challenge}&code_challenge_method=S256&state={state}&scope={}\
         &id_token_add_organizations=true&codex_cli_simplified_flow=true&originator={ORIGINATOR}",
        form_encode(CLIENT_ID),
        form_encode(redirect_uri),
        SCOPE.replace(' ', "+"),
    )
}

/// Whether a browser can be opened here, and the command that does it.
fn browser_command() -> Option<&'static str> {
    if cfg!(target_os = "macos") {
        return Some("open");
    }
    let graphical = std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty());
    graphical.then_some("xdg-open")
}

fn open_browser(url: &str) -> bool {
    let Some(cmd) = browser_command() else {
        return false;
    };
    std::process::Command::new(cmd)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// State of one browser sign-in, shared by the callback server's connections.
struct Flow {
    client: HttpClient,
    base: String,
    redirect_uri: String,
    state: String,
    verifier: String,
    done: Mutex<Option<oneshot::Sender<Result<Issued, String>>>>,
    success_served: Notify,
}

impl Flow {
    fn finish(&self, result: Result<Issued, String>) {
        let sender = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = sender {
            let _ = tx.send(result);
        }
    }
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <body style=\"font-family:sans-serif;margin:4em\"><h1>{title}</h1><p>{text}</p></body>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn callback(flow: Arc<Flow>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let q: HashMap<String, String> = parse_query(req.uri().query().unwrap_or(""));
    match req.uri().path() {
        "/auth/callback" => {
            // Checked first, so no other page can end (or answer) this sign-in.
            if q.get("state").map(String::as_str) != Some(flow.state.as_str()) {
                // Not our request (or a forged one): refuse it and keep waiting.
                return page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The state parameter does not match this sign-in. Start again from the terminal.",
                );
            }
            if let Some(err) = q.get("error") {
                let why = q.get("error_description").unwrap_or(err);
                flow.finish(Err(format!("the sign-in was refused: {why}")));
                return page(StatusCode::BAD_REQUEST, "Sign-in failed", &html_escape(why));
            }
            let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "No code received.",
                );
            };
            match exchange(
                &flow.client,
                &flow.base,
                code,
                &flow.redirect_uri,
                &flow.verifier,
            )
            .await
            {
                Ok(issued) => {
                    flow.finish(Ok(issued));
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::FOUND;
                    resp.headers_mut()
                        .insert(header::LOCATION, http::HeaderValue::from_static("/success"));
                    resp
                }
                Err(e) => {
                    let shown = html_escape(&e);
                    flow.finish(Err(e));
                    page(StatusCode::BAD_GATEWAY, "Sign-in failed", &shown)
                }
            }
        }
        "/success" => {
            flow.success_served.notify_one();
            page(
                StatusCode::OK,
                "Signed in to codex-as-api",
                "Your ChatGPT credentials are saved. You can close this window and return to the terminal.",
            )
        }
        "/cancel" => {
            flow.finish(Err("the sign-in was cancelled".to_owned()));
            page(
                StatusCode::OK,
                "Sign-in cancelled",
                "You can close this window.",
            )
        }
        _ => page(StatusCode::NOT_FOUND, "Not found", ""),
    }
}

/// Bind the callback port. When an earlier sign-in (ours or the Codex CLI's) still holds
/// it, ask that one to stop through its `/cancel` page, as the Codex CLI does, and retry.
async fn bind_callback(client: &HttpClient, port: u16) -> Result<TcpListener, String> {
    let mut cancelled = false;
    let mut attempts = 0;
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 10 => {
                if !cancelled {
                    cancelled = true;
                    if let Ok(req) = Request::builder()
                        .uri(format!("http://127.0.0.1:{port}/cancel"))
                        .body(Full::new(Bytes::new()))
                    {
                        let _ = fetch(client, req, Duration::from_secs(2)).await;
                    }
                }
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen on 127.0.0.1:{port} for the sign-in callback ({e}); use --callback-port, or --device on machines without a browser."
                ));
            }
        }
    }
}

async fn browser_flow(
    client: &HttpClient,
    base: &str,
    opts: &LoginOptions,
) -> Result<Issued, String> {
    let listener = bind_callback(client, opts.callback_port).await?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("callback server: {e}"))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/auth/callback");
    let (verifier, challenge) = pkce()?;
    let state = random_b64url(32)?;
    let url = authorize_url(base, &redirect_uri, &challenge, &state);
    let (tx, rx) = oneshot::channel();
    let flow = Arc::new(Flow {
        client: client.clone(),
        base: base.to_owned(),
        redirect_uri,
        state,
        verifier,
        done: Mutex::new(Some(tx)),
        success_served: Notify::new(),
    });
    println!("Sign in to ChatGPT in your browser:\n\n  {url}\n");
    if opts.open_browser && open_browser(&url) {
        println!("(A browser window should have opened; if not, open the link above.)");
    } else {
        println!(
            "Open the link above on this machine. No browser here? Run `codex-as-api login --device`."
        );
    }
    println!("Waiting for the sign-in to finish on 127.0.0.1:{port} …");

    let server = {
        let flow = flow.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let flow = flow.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let flow = flow.clone();
                        async move { Ok::<_, Infallible>(callback(flow, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        })
    };
    let result = rx
        .await
        .unwrap_or_else(|_| Err("the callback server stopped".to_owned()));
    if result.is_ok() {
        // Let the browser load the success page before the server goes away.
        let _ = tokio::time::timeout(Duration::from_secs(3), flow.success_served.notified()).await;
    }
    server.abort();
    result
}

/// §13.2.
async fn device_flow(client: &HttpClient, base: &str) -> Result<Issued, String> {
    let body = json!({ "client_id": CLIENT_ID }).to_string();
    let req = post(
        &format!("{base}/api/accounts/deviceauth/usercode"),
        "application/json",
        body,
    )?;
    let (status, _, bytes) = fetch(client, req, CALL_TIMEOUT).await?;
    if status == StatusCode::NOT_FOUND {
        return Err("device-code sign-in is not enabled for this account: enable it in ChatGPT's security settings, or sign in with the browser flow (`codex-as-api login`)".to_owned());
    }
    if !status.is_success() {
        return Err(issuer_error("requesting a device code", status, &bytes));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
        "the device-code endpoint answered with something that is not JSON".to_owned()
    })?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let device_auth_id =
        text("device_auth_id").ok_or("the device-code answer has no device_auth_id")?;
    let user_code = text("user_code")
        .or_else(|| text("usercode"))
        .ok_or("the device-code answer has no user_code")?;
    // `interval` is a string on the wire; accept a number too.
    let interval = v
        .get("interval")
        .and_then(|i| {
            i.as_str()
                .and_then(|s| s.trim().parse().ok())
                .or(i.as_u64())
        })
        .unwrap_or(5u64)
        .clamp(1, 60);
    println!(
        "To sign in, open this page in a browser on any device:\n\n  {base}/codex/device\n\nand enter the code:\n\n  {user_code}\n\n(The code expires in 15 minutes.) Waiting …"
    );
    let poll_body = json!({ "device_auth_id": device_auth_id, "user_code": user_code }).to_string();
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let req = post(
            &format!("{base}/api/accounts/deviceauth/token"),
            "application/json",
            poll_body.clone(),
        )?;
        let (status, _, bytes) = match fetch(client, req, CALL_TIMEOUT).await {
            Ok(r) => r,
            // A network blip while waiting is not the end of the sign-in.
            Err(e) => {
                tracing::debug!("device poll failed: {e}");
                continue;
            }
        };
        if status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND {
            continue;
        }
        if !status.is_success() {
            return Err(issuer_error(
                "waiting for the device sign-in",
                status,
                &bytes,
            ));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            "the device token endpoint answered with something that is not JSON".to_owned()
        })?;
        let code = v
            .get("authorization_code")
            .and_then(Value::as_str)
            .ok_or("the device sign-in answer has no authorization_code")?;
        let verifier = v
            .get("code_verifier")
            .and_then(Value::as_str)
            .ok_or("the device sign-in answer has no code_verifier")?;
        let redirect_uri = format!("{base}/deviceauth/callback");
        return exchange(client, base, code, &redirect_uri, verifier).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_has_every_parameter_of_the_codex_cli() {
        let u = authorize_url(
            "https://auth.openai.com",
            "http://127.0.0.1:1455/auth/callback",
            "CH",
            "ST",
        );
        assert!(u.starts_with("https://auth.openai.com/oauth/authorize?response_type=code&client_id=app_EMoamEEZ73f0CkXaXp7hrann&redirect_uri=http%3A%2F%2F127.0.0.1%3A1455%2Fauth%2Fcallback&code_challenge=CH&code_challenge_method=S256&state=ST&scope=openid+profile+email+offline_access+api.connectors.read+api.connectors.invoke&id_token_add_organizations=true&codex_cli_simplified_flow=true&originator=codex_cli_rs"), "{u}");
    }

    #[test]
    fn pkce_pair_has_the_right_lengths() {
        let (v, c) = pkce().unwrap();
        assert_eq!(v.len(), 86);
        assert_eq!(c.len(), 43);
    }

    #[test]
    #[cfg(unix)]
    fn save_keeps_unknown_keys_and_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/auth.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"OPENAI_API_KEY":"sk-old","future_key":{"x":1}}"#).unwrap();
        let jwt = crate::auth::claims::fake_jwt(&json!({
            "email": "u@example.com",
            "https://api.openai.com/auth": {"chatgpt_account_id": "acc-1", "chatgpt_plan_type": "pro"}
        }));
        let saved = save(
            &path,
            &Issued {
                id_token: jwt.clone(),
                access_token: jwt,
                refresh_token: "rt_1".into(),
            },
        )
        .unwrap();
        assert_eq!(saved.plan.as_deref(), Some("pro"));
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["auth_mode"], "chatgpt");
        assert_eq!(doc["OPENAI_API_KEY"], Value::Null);
        assert_eq!(doc["future_key"]["x"], 1);
        assert_eq!(doc["tokens"]["account_id"], "acc-1");
        assert_eq!(doc["tokens"]["refresh_token"], "rt_1");
        assert!(doc["last_refresh"].as_str().unwrap().ends_with('Z'));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
