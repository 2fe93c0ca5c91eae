//! `ferry serve`: the CI server. Repositories are mirrored, triggers become queued runs,
//! a dispatcher hands queued runs to the same engine `ferry run` uses, and a REST API
//! (token-authenticated, role-checked) shows and steers it all.
//!
//! [`serve`] takes its listener and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and stop it cleanly.

mod api;
pub mod auth;
mod error;
mod queue;
mod trigger;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferry_engine::Engine;
use ferry_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use api::ROUTES;
pub use auth::Role;
pub use error::ApiError;
pub use trigger::{TriggerError, TriggerRequest};

/// What the server is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where mirrors, logs and artifacts live.
    pub data_dir: PathBuf,
    /// Where job workspaces are made.
    pub work_root: PathBuf,
    /// The most runs executing at once (each runs its jobs with `jobs_per_run`).
    pub max_runs: usize,
    /// The most jobs of one run at once.
    pub jobs_per_run: usize,
    /// An identity for queue leases (several servers may share a database).
    pub server_id: String,
}

/// Shared by every request handler and the dispatcher.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Cancel tokens of the runs this server is executing.
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Wakes the dispatcher when a run is queued.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish()
    }
}

impl AppState {
    pub fn new(store: Store, engine: Engine, config: Config) -> Self {
        Self {
            store,
            engine,
            config: Arc::new(config),
            running: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// The bare mirror of a repository.
    pub fn mirror_path(&self, repository_id: &str) -> PathBuf {
        self.config
            .data_dir
            .join("mirrors")
            .join(format!("{repository_id}.git"))
    }
}

/// Serves the API on `listener` and runs queued runs until `shutdown` resolves; then
/// stops taking work, cancels running runs and waits for them to be recorded.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(queue::dispatch(state.clone(), stop.clone()));
    let app = api::router(state.clone());
    let stop_http = stop.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop_http.cancel();
        })
        .await;
    stop.cancel();
    let _ = dispatcher.await;
    result
}
