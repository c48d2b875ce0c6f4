//! The HTTP server: accept loop, graceful shutdown, and the ways to run it (`Server`,
//! `Service`).
//!
//! Owns: the start-up safety rules (without an API key: no non-loopback bind, no CORS allow-list
//! of `*`), the accept loop (back-off on accept errors; the connection limit, beyond which
//! a connection gets a 503 and is closed at once; the first head of each connection goes
//! through `head` so a slow or huge one gets a protocol-shaped 408/431; then HTTP/1.x
//! connections are served by `h1` and h2 ones by hyper with its header limit, keep-alive
//! pings that drop a client reading nothing for the write stall time, and the request body
//! bounded as `h1` bounds it) and graceful
//! shutdown (stop accepting, drain in-flight streams for a bounded time).
//!
//! Does not own: what requests share (`state`), routing and guards (`route`), an h2
//! client's body bounds and stalled streams (`h2`), running one proxied request
//! (`pipeline`), unary backend calls (`backend`), the live catalog (`catalog`), the
//! non-protocol endpoints (`endpoints`), the exchange store for `previous_response_id`
//! (`history`), the per-request log line (`reqlog`).
//!
//! Dependencies point down: this file uses its children; they use each other and `state`,
//! never this file.

pub mod admit;
pub mod backend;
pub mod catalog;
pub mod endpoints;
pub mod h1;
pub mod h2;
pub mod head;
pub mod history;
pub mod pipeline;
pub mod reqlog;
pub mod respond;
pub mod route;
pub mod state;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use state::State;

use crate::config::Config;
use crate::error::{Error, ErrorKind};

/// A running server: bound, serving in the background until [`Server::shutdown`].
///
/// ```no_run
/// # async fn run() -> Result<(), codex_as_api::Error> {
/// use codex_as_api::{Config, Server};
///
/// let server = Server::bind(Config::builder().port(8080u16).build()?).await?;
/// println!("listening on http://{}", server.addr());
/// server.wait_for_signal().await; // Ctrl-C or SIGTERM: drain, then return
/// # Ok(()) }
/// ```
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    _demo: Option<crate::emulator::Demo>,
}

/// Refuse to expose the proxy without a key: on a non-loopback address, or to every web
/// page (a CORS allow-list of `*`).
pub fn check_bind_safety(config: &Config) -> Result<(), String> {
    if config.api_key.is_none() && config.cors_origins.iter().any(|o| o == "*") {
        return Err(
            "refusing to start with --cors-allow-origin '*' and no API key: every web page you visit could call this server and spend your ChatGPT subscription. Set CODEX_AS_API_API_KEY (or --api-key), or list the origins you trust instead of '*'."
                .to_owned(),
        );
    }
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
    /// Bind `config.host:config.port` and start serving in the background (with `--demo`,
    /// the built-in emulator starts first and serves as the backend).
    pub async fn bind(config: Config) -> Result<Server, Error> {
        check_bind_safety(&config).map_err(Error::internal)?;
        let listener = TcpListener::bind((config.host, config.port))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "cannot listen on {}:{}: {e}",
                    config.host, config.port
                ))
            })?;
        Server::serve(config, listener).await
    }

    /// Serve on a listener the caller bound (`config.host` and `config.port` are not used).
    pub async fn serve(mut config: Config, listener: TcpListener) -> Result<Server, Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("listener address: {e}")))?;
        let demo = crate::emulator::Demo::start_if(&mut config).await?;
        let state = Arc::new(State::new(config)?);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state), rx));
        Ok(Server {
            addr,
            state,
            shutdown,
            task,
            _demo: demo,
        })
    }

    /// The server as a hyper service, to mount in an existing server instead of binding
    /// one: every endpoint, with the same guards, on `config`'s accounts.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), codex_as_api::Error> {
    /// use hyper_util::rt::{TokioExecutor, TokioIo};
    ///
    /// let service = codex_as_api::Server::service(codex_as_api::Config::from_env()?).await?;
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let (stream, _) = listener.accept().await.unwrap();
    /// hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
    ///     .serve_connection(TokioIo::new(stream), service)
    ///     .await
    ///     .ok();
    /// # Ok(()) }
    /// ```
    pub async fn service(mut config: Config) -> Result<Service, Error> {
        let demo = crate::emulator::Demo::start_if(&mut config).await?;
        Ok(Service {
            state: Arc::new(State::new(config)?),
            _demo: demo.map(Arc::new),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's shared state (for the crate's own tests).
    #[doc(hidden)]
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stop accepting, let in-flight requests finish within the drain time, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Serve until SIGINT or SIGTERM, then shut down gracefully.
    pub async fn wait_for_signal(self) {
        self.run_until(shutdown_signal()).await;
    }

    /// Serve until `stop` resolves (for example [`shutdown_signal`], made before the
    /// server announces itself), then shut down gracefully.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        tracing::info!("shutting down: no new connections; draining in-flight streams");
        self.shutdown().await;
    }
}

/// Every endpoint as a hyper service ([`Server::service`]); cheap to clone (one per
/// connection).
#[derive(Clone)]
pub struct Service {
    state: Arc<State>,
    _demo: Option<Arc<crate::emulator::Demo>>,
}

impl<B> hyper::service::Service<http::Request<B>> for Service
where
    B: route::ReqBody + 'static,
{
    type Response = http::Response<respond::RespBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: http::Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        // The peer is not known here; the guards do not use it.
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        Box::pin(async move { Ok(route::handle(state, req, peer).await) })
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every `h1` connection holds a sender; all dropped = all drained.
    let (open, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // An h2 client that reads nothing (not even a ping) for the write stall time is dropped
    // with all its streams: a ping after half of it, its answer due within the other half.
    let half_stall = (state.config.write_stall / 2).max(Duration::from_secs(1));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(4 * head::MAX_HEAD_BYTES as u32)
        .keep_alive_interval(half_stall)
        .keep_alive_timeout(half_stall);
    let builder = Arc::new(builder);
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
        let max = state.config.max_connections;
        // Only this loop adds, so the check and the add cannot race past the limit.
        if state.connections.load(Ordering::Acquire) >= max {
            refuse_busy(&stream, max);
            continue;
        }
        state.connections.fetch_add(1, Ordering::AcqRel);
        let _ = stream.set_nodelay(true);
        let st = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let open = open.clone();
        let mut stopping = stop.clone();
        tokio::spawn(async move {
            let _slot = Slot(Arc::clone(&st));
            let mut stream = stream;
            let limit = h1::head_timeout(&st.config);
            // A connection still sending its first head when shutdown starts is not in flight.
            let first = tokio::select! {
                first = Box::pin(head::read_first(&mut stream, limit, head::MAX_HEAD_BYTES)) => first,
                _ = stopping.changed() => return,
            };
            let (prefix, started) = match first {
                head::FirstHead::Ready(prefix, since) => (prefix, since),
                head::FirstHead::Gone | head::FirstHead::Refused => return,
            };
            if !prefix.starts_with(b"PRI * HTTP/2.0") {
                drop(watcher);
                // Boxed too: a connection still sending its first head holds only this task.
                Box::pin(h1::serve(
                    stream,
                    Vec::from(prefix),
                    st,
                    peer,
                    stopping,
                    open,
                    started,
                ))
                .await;
                return;
            }
            drop(open);
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let st = Arc::clone(&st);
                    async move {
                        // The h1 rules: the request's body has a read deadline at a minimum
                        // rate and bounded trailers; a stream the client stops taking is
                        // dropped.
                        let req = req.map(|body| h2::Bounded::new(body, &st.config));
                        let stall = st.config.write_stall;
                        let resp = route::handle(st, req, peer).await;
                        Ok::<_, std::convert::Infallible>(resp.map(|b| h2::Watched::wrap(b, stall)))
                    }
                });
            let io = TokioIo::new(head::rewind(prefix, stream));
            let conn = builder.serve_connection_with_upgrades(io, service);
            // Boxed so that the (rarer) h2 connection does not size every connection's task.
            if let Err(e) = Box::pin(watcher.watch(conn.into_owned())).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(open);
    let drain = state.config.drain;
    let all = async {
        graceful.shutdown().await;
        let _ = drained.recv().await;
    };
    tokio::select! {
        _ = all => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(secs = drain.as_secs(), "drain time over; closing remaining connections"),
    }
}

/// A connection's place under `--max-connections`, given back when its task ends.
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection beyond `--max-connections`: a 503 (in the shape its first bytes suggest, if
/// any have arrived) written without waiting, then closed. Nothing is spawned or read for
/// it, so a flood of connections costs the accept loop only this.
fn refuse_busy(stream: &tokio::net::TcpStream, max: usize) {
    let mut seen = [0u8; 1024];
    let n = stream.try_read(&mut seen).unwrap_or(0);
    let protocol = head::protocol_guess(seen.get(..n).unwrap_or_default());
    let err = Error::new(
        ErrorKind::Overloaded,
        format!(
            "too many connections: this server holds at most {max} at once (--max-connections); retry shortly"
        ),
    )
    .with_retry_after(1);
    let _ = stream.try_write(&head::answer_bytes(&err, protocol));
    tracing::debug!(max, "refused a connection over the connection limit");
}

/// SIGINT or SIGTERM (Ctrl-C elsewhere), as a future. The handlers are installed by this
/// call, not when the future is first polled: a signal that arrives after it is never the
/// default action (which would kill the process before it drains).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
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
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
