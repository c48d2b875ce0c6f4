//! The HTTP server: state, accept loop, graceful shutdown.
//!
//! Owns: `State` (config, the pooled upstream client, the token store, the catalog, live
//! stream count, the latest rate-limit snapshot), binding with the safety rule for
//! non-loopback addresses, the accept loop (hyper-util auto builder: HTTP/1.1 and h2, header
//! read timeout, header size limit, back-off on accept errors) and graceful shutdown (stop
//! accepting, drain in-flight streams for a bounded time).
//!
//! Does not own: routing and guards (`route`), running one proxied request (`pipeline`).

pub mod pipeline;
pub mod ratelimit;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::TokenStore;
use crate::body::StreamCounter;
use crate::config::Config;
use crate::error::Error;
use crate::upstream::catalog::Catalog;
use crate::upstream::client::{self, HttpClient};
use crate::upstream::conn::Pool;

/// Everything a request handler needs; shared by all connections.
pub struct State {
    pub config: Config,
    pub client: HttpClient,
    /// Driven HTTP/1.1 connections for the streaming `/responses` calls.
    pub pool: Arc<Pool>,
    pub tokens: Arc<TokenStore>,
    pub catalog: Catalog,
    pub streams: Arc<StreamCounter>,
    pub started: Instant,
    pub rate_limits: ArcSwapOption<ratelimit::Snapshot>,
}

impl State {
    pub fn new(config: Config) -> Result<State, Error> {
        let client = client::build(config.ca_file.as_deref())?;
        let pool = Pool::new(config.ca_file.as_deref(), client.clone())?;
        let tokens = TokenStore::new(
            config.auth_path.clone(),
            config.token_url.clone(),
            client.clone(),
        );
        Ok(State {
            config,
            client,
            pool,
            tokens,
            catalog: Catalog::builtin(),
            streams: Arc::new(StreamCounter::default()),
            started: Instant::now(),
            rate_limits: ArcSwapOption::empty(),
        })
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Refuse to expose the proxy without a key on a non-loopback address.
pub fn check_bind_safety(config: &Config) -> Result<(), String> {
    if config.host.is_loopback() || config.api_key.is_some() {
        return Ok(());
    }
    if config.insecure_no_auth {
        tracing::warn!(
            host = %config.host,
            "serving on a non-loopback address WITHOUT an API key (--insecure-no-auth): anyone who can reach this port can use your ChatGPT subscription"
        );
        return Ok(());
    }
    Err(format!(
        "refusing to bind {} without an API key: anyone on the network could use your ChatGPT subscription. Set CODEX_AS_API_API_KEY (or --api-key), bind 127.0.0.1, or pass --insecure-no-auth to override.",
        config.host
    ))
}

impl Server {
    /// Bind and start serving in the background.
    pub async fn start(config: Config) -> Result<Server, Error> {
        check_bind_safety(&config).map_err(Error::internal)?;
        let listener = TcpListener::bind((config.host, config.port))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "cannot listen on {}:{}: {e}",
                    config.host, config.port
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("listener address: {e}")))?;
        let state = Arc::new(State::new(config)?);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state), rx));
        Ok(Server {
            addr,
            state,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stop accepting, let in-flight requests finish within the drain time, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(256 * 1024)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(256 * 1024);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning or exiting.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let st = Arc::clone(&state);
        let service = hyper::service::service_fn(move |req| {
            let st = Arc::clone(&st);
            async move { Ok::<_, std::convert::Infallible>(route::handle(st, req, peer).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = state.config.drain;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(secs = drain.as_secs(), "drain time over; closing remaining connections"),
    }
}

/// Run until SIGINT/SIGTERM, then shut down gracefully.
pub async fn run_until_signal(server: Server) {
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; draining in-flight streams");
    server.shutdown().await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
