//! What every request handler shares: [`State`].
//!
//! Owns: the state's parts and how they are built from a `Config`: the config, the pooled
//! upstream client and the driven connections, the upstream WebSockets kept between turns
//! next to them, the accounts with their credentials, windows and rate-limit snapshots,
//! the live catalog, the live stream count, the exchange store, the connection count.
//!
//! Does not own: what each part does (their modules), serving (`server`).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::catalog::LiveCatalog;
use super::history::History;
use crate::accounts::Accounts;
use crate::body::StreamCounter;
use crate::config::Config;
use crate::error::Error;
use crate::upstream::client::{self, HttpClient};
use crate::upstream::conn::Pool;
use crate::upstream::ws::Sockets;

/// Everything a request handler needs; shared by all connections.
pub struct State {
    pub config: Config,
    pub client: HttpClient,
    /// Driven HTTP/1.1 connections for the streaming `/responses` calls.
    pub pool: Arc<Pool>,
    /// Responses WebSockets kept between turns (they connect through `pool`).
    pub sockets: Arc<Sockets>,
    /// The ChatGPT accounts, each with its credentials and admission window.
    pub accounts: Accounts,
    /// The live model catalog (built-in until the backend's is fetched).
    pub catalog: LiveCatalog,
    pub streams: Arc<StreamCounter>,
    pub started: Instant,
    /// Recent exchanges for `previous_response_id`.
    pub history: History,
    /// Client connections open now (at most `config.max_connections`).
    pub connections: AtomicUsize,
    /// `config.responses_ws_url()`, computed once.
    pub ws_url: String,
    /// Client WebSocket sessions accepted since start (`server::ws`).
    pub ws_sessions: std::sync::atomic::AtomicU64,
}

impl State {
    pub fn new(config: Config) -> Result<State, Error> {
        let proxy = config.upstream_proxy.as_deref();
        let client = client::build(config.ca_file.as_deref(), proxy)?;
        let h2 = crate::upstream::h2pool::Limits {
            max_connections: config.upstream_max_connections,
            idle: config.upstream_idle,
        };
        let pool = Pool::new(config.ca_file.as_deref(), proxy, h2, client.clone())?;
        let accounts = Accounts::new(
            &config.account_specs(),
            &config.token_url,
            &client,
            config.account_limits,
        );
        Ok(State {
            client,
            pool,
            sockets: Sockets::new(config.upstream_idle),
            accounts,
            catalog: LiveCatalog::default(),
            streams: Arc::new(StreamCounter::default()),
            started: Instant::now(),
            history: History::new(config.history_max_entries, config.history_max_bytes),
            connections: AtomicUsize::new(0),
            ws_url: config.responses_ws_url(),
            ws_sessions: std::sync::atomic::AtomicU64::new(0),
            config,
        })
    }
}
