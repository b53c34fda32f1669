//! The controller's HTTP face, served by `proto run --listen` from the same process and the
//! same store as the engine: the JSON API under `/api/v1` (with a Server-Sent Events stream
//! of the store's typed events), the kill switch and the other mutations, git webhooks that
//! wake the engine at once, Prometheus metrics, health probes and the dashboard.
//!
//! ```text
//! GET  /                         the dashboard (one page, its script and style embedded)
//! GET  /healthz  /readyz         alive; ready once the first revision is applied
//! GET  /metrics                  Prometheus text
//! GET  /api/v1/...               company, products, computers, agents, goals, tasks,
//!                                approvals, spend, events (?watch=true), events/stream
//! POST /api/v1/stop|resume       the kill switch; goals/{name}/retry;
//!                                approvals/{id}/approve|deny
//! POST /hooks/github|gitea|gitlab  a push to the watched branch refreshes at once
//! ```
//!
//! Every `/api` request carries `Authorization: Bearer <token>` (see [`auth`]); webhooks
//! carry their forge's signature instead. No CORS headers are sent, so browsers keep other
//! origins out.

pub mod api;
pub mod auth;
mod dashboard;
pub mod goal_list;
pub mod hooks;
pub mod listing;
pub mod metrics;
pub mod sse;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::AppliedRevision;
use crate::store::{Store, StoreError};

pub use auth::Token;
pub use hooks::WebhookSecret;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: empty; it must hold the token (or the secret) on its first line")]
    Empty { path: PathBuf },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Where the company comes from, as the webhooks and the approval answers need it.
#[derive(Clone, Debug)]
pub struct Watched {
    /// The remote's URL, or the local repository's path.
    pub label: String,
    /// The branch tracked.
    pub branch: String,
    /// The local repository (the source itself, or a remote's cache clone).
    pub repository: PathBuf,
    /// The folder of the repository holding the declaration.
    pub subpath: String,
    /// Whether the company repository is remote (answers are then given on its forge).
    pub remote: bool,
}

impl Watched {
    pub fn of(source: &crate::source::GitSource) -> Watched {
        Watched {
            label: source.url().map_or_else(
                || source.repository_path().display().to_string(),
                String::from,
            ),
            branch: source.branch().to_string(),
            repository: source.repository_path().to_path_buf(),
            subpath: source.subpath().to_string(),
            remote: source.is_remote(),
        }
    }
}

/// How the server is configured.
#[derive(Clone, Debug)]
pub struct Config {
    pub token: Token,
    /// Reads without a token (only honoured on a loopback address).
    pub public_read: bool,
    pub webhook_secret: Option<WebhookSecret>,
}

/// What the server takes from the process that runs the engine.
pub struct Wiring {
    pub watched: Watched,
    /// The engine's [`crate::engine::Engine::applied_revision`].
    pub applied: watch::Receiver<Option<AppliedRevision>>,
    /// The engine's trigger channel.
    pub trigger: mpsc::Sender<()>,
    pub metrics: Arc<metrics::Metrics>,
    /// The engine's store handle (its writes are what changes the shared answers).
    pub store: Arc<Store>,
    /// Stops the server.
    pub shutdown: CancellationToken,
}

/// What every handler shares.
pub struct App {
    /// The server's own connection to the state database: its reads never wait behind the
    /// engine's handle.
    pub store: Arc<Store>,
    pub watched: Watched,
    /// The revision that runs (from the engine).
    pub applied: watch::Receiver<Option<AppliedRevision>>,
    /// Wakes the engine to fetch the source now (the channel its watcher and poller use).
    pub trigger: mpsc::Sender<()>,
    pub metrics: Arc<metrics::Metrics>,
    /// The newest event id seen in the store; SSE clients wait on it.
    pub newest_event: watch::Receiver<i64>,
    /// The latest activity line of each agent, from the event log.
    pub doing: Arc<std::sync::Mutex<std::collections::HashMap<String, sse::Doing>>>,
    /// The events the tail read last, which caught-up streams read from memory.
    pub recent: sse::RecentEvents,
    /// Whether reads need no token: `--public-read` on a loopback address.
    pub public_read: bool,
    pub token: Token,
    pub webhook_secret: Option<WebhookSecret>,
    /// Fires when the server stops: open event streams end with it.
    pub shutdown: CancellationToken,
    /// Store reads run off the async threads, this many at once: a burst of requests
    /// queues here (cheaply) rather than as hundreds of blocking threads each holding a
    /// parsed company.
    pub reads: tokio::sync::Semaphore,
    /// A second connection for the long reads of the shared lists, so the short reads on
    /// [`App::store`] do not queue behind them.
    pub lists: Arc<Store>,
    /// The engine's store handle: its count of writes tells the shared views that the store
    /// changed.
    pub engine_store: Arc<Store>,
    /// The answers shared by every request (see [`views`]).
    pub views: Views,
}

/// The answers shared by every request.
#[derive(Default)]
pub struct Views {
    /// Every goal, with its status, spend and task ids.
    pub goals: Arc<views::View<goal_list::GoalList>>,
    /// Every task, with its spend.
    pub tasks: Arc<views::View<listing::Listing>>,
}

/// Store reads the API runs at once (its connection serializes them anyway).
const READS_AT_ONCE: usize = 2;

/// The routes, as a table of contents.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/company", get(api::company))
        .route("/products", get(api::products))
        .route("/computers", get(api::computers))
        .route("/agents", get(api::agents))
        .route("/goals", get(api::goals))
        .route("/goals/{name}", get(api::goal))
        .route("/goals/{name}/retry", post(api::retry))
        .route("/tasks", get(api::tasks))
        .route("/tasks/{id}", get(api::task))
        .route("/approvals", get(api::approvals))
        .route("/approvals/{id}/approve", post(api::approve))
        .route("/approvals/{id}/deny", post(api::deny))
        .route("/spend", get(api::spend))
        .route("/events", get(api::events))
        .route("/events/stream", get(sse::stream))
        .route("/stop", post(api::stop))
        .route("/resume", post(api::resume))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        // Prometheus sends the token as a scrape's bearer credentials.
        .route(
            "/metrics",
            get(metrics::scrape).route_layer(axum::middleware::from_fn_with_state(
                app.clone(),
                auth::require,
            )),
        )
        .route("/hooks/{forge}", post(hooks::receive))
        .nest("/api/v1", api)
        .with_state(app)
}

/// A server bound to its address, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    tail: sse::Tail,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and opens the server's connection to the
    /// store. `state_dir` is the engine's.
    pub async fn bind(
        addr: SocketAddr,
        state_dir: &std::path::Path,
        wiring: Wiring,
        config: Config,
    ) -> Result<Server, ServerError> {
        let Wiring {
            watched,
            applied,
            trigger,
            metrics,
            store: engine_store,
            shutdown,
        } = wiring;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        let store = Arc::new(Store::open(state_dir)?);
        let lists = Arc::new(Store::open_reader(state_dir)?);
        let (tail, newest_event, doing, recent) = sse::Tail::new(store.clone(), metrics.clone())?;
        let public_read = config.public_read && addr.ip().is_loopback();
        if config.public_read && !public_read {
            tracing::warn!(%addr, "--public-read is honoured on a loopback address only; reads need the token");
        }
        let app = Arc::new(App {
            store,
            watched,
            applied,
            trigger,
            metrics,
            newest_event,
            doing,
            recent,
            public_read,
            token: config.token,
            webhook_secret: config.webhook_secret,
            shutdown,
            reads: tokio::sync::Semaphore::new(READS_AT_ONCE),
            lists,
            engine_store,
            views: Views::default(),
        });
        Ok(Server {
            listener,
            app,
            tail,
        })
    }

    /// The address it listens on (the port chosen, when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the shutdown token of its [`Wiring`] fires; open SSE streams
    /// end with it.
    pub async fn serve(self) -> std::io::Result<()> {
        let shutdown = self.app.shutdown.clone();
        let tail = tokio::spawn(self.tail.run(shutdown.clone()));
        let router = router(self.app);
        let result = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        tail.abort();
        result
    }
}
