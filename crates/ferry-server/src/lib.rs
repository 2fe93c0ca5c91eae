//! `ferry serve`: the CI server. Repositories are mirrored, triggers become queued runs,
//! a dispatcher hands queued runs to the same engine `ferry run` uses, and a REST API
//! (token-authenticated, role-checked) shows and steers it all.
//!
//! [`serve`] takes its listener and its shutdown signal as arguments, so tests bind
//! `127.0.0.1:0` and stop it cleanly.

pub mod api;
pub mod auth;
pub mod error;
mod infra;
mod intake;
pub mod live;
pub mod metrics;
pub mod notify;
mod queue;
mod release;
mod retention;
pub mod status;
pub mod tls;
pub mod traces;
mod trigger;
pub mod ui;
mod watch;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferry_engine::Engine;
use ferry_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use api::{Access, ROUTES, Route, openapi_document};
pub use auth::Role;
pub use error::{ApiError, ErrorBody};
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
    /// How long a claimed run stays this server's without a heartbeat: renewed every
    /// third of it; another server ends a run whose lease ran out.
    pub lease: std::time::Duration,
    /// On shutdown, let running runs finish instead of cancelling them.
    pub drain: bool,
    /// How often polling and schedules are checked.
    pub watch_tick: std::time::Duration,
    /// Let requests without a token read (the viewer role); changes still need tokens.
    pub public_reads: bool,
    /// The most runs of one repository executing at once.
    pub max_runs_per_repo: usize,
    /// Keep the newest this many runs of each repository (and every run a release was
    /// sealed from); older finished ones are deleted with their logs and artifacts.
    pub keep_runs: Option<usize>,
    /// Delete finished runs older than this (but those a release was sealed from).
    pub keep_for: Option<std::time::Duration>,
}

/// How many commits [`AppState::known_commit`] remembers.
const KNOWN_COMMITS: usize = 256;

/// Commits read lately, by repository id and full commit id.
type KnownCommits = hashlink::LruCache<(String, String), Arc<ReadCommit>>;

/// A commit as a mirror has it: its description and its pipeline file (if any).
#[derive(Debug, Clone)]
pub(crate) struct ReadCommit {
    pub commit: ferry_source::git::Commit,
    pub pipeline: Option<Vec<u8>>,
}

/// Shared by every request handler and the dispatcher.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct AppState {
    #[educe(Debug(ignore))]
    pub store: Store,
    #[educe(Debug(ignore))]
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Cancel tokens of the runs this server is executing.
    #[educe(Debug(ignore))]
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// Wakes the dispatcher when a run is queued.
    #[educe(Debug(ignore))]
    pub(crate) wake: Arc<Notify>,
    /// Wakes the intake worker when a delivery is accepted.
    #[educe(Debug(ignore))]
    pub(crate) intake_wake: Arc<Notify>,
    /// Cancelled to stop running runs at once, even when draining.
    #[educe(Debug(ignore))]
    force: CancellationToken,
    /// Cancelled when the server starts to stop: endless streams (delivery events)
    /// end, so that the HTTP server's graceful shutdown does not wait for them.
    #[educe(Debug(ignore))]
    pub(crate) stopping: CancellationToken,
    /// One lock per repository mirror: a clone or fetch holds it alone; reading commits
    /// and files holds it shared, so nothing reads a mirror while git writes to it.
    #[educe(Debug(ignore))]
    mirror_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>>,
    /// Runs this server is executing or sealing a release from: never pruned by the
    /// retention policy meanwhile (see [`retention::Finishing`]).
    #[educe(Debug(ignore))]
    pub(crate) finishing: retention::Finishing,
    /// What `GET /metrics` shows.
    #[educe(Debug(ignore))]
    pub metrics: metrics::Metrics,
    /// Commits read from mirrors lately (see [`AppState::known_commit`]).
    #[educe(Debug(ignore))]
    commits: Arc<Mutex<KnownCommits>>,
    /// Live events of every run, for Server-Sent Events streams.
    #[educe(Debug(ignore))]
    pub(crate) live: tokio::sync::broadcast::Sender<Arc<live::Live>>,
    /// Who streams which run's events (limits: [`live::Subscribers`]).
    pub(crate) subscribers: live::Subscribers,
    /// Seals secrets, registry logins and webhook secrets (owned by whoever starts the
    /// server, which gives the engine the same key).
    #[educe(Debug(ignore))]
    pub key: ferry_store::SecretKey,
    /// Releases, environments and deployments.
    #[educe(Debug(ignore))]
    pub deliverer: ferry_deliver::deliverer::Deliverer,
    /// Sends notifications (see [`notify`]).
    pub notifier: notify::Notifier,
    /// Hands trace spans to the exporter, when traces are on (see [`traces`]).
    pub(crate) tracer: Option<traces::Tracer>,
    /// The exporter's configuration and queue, until [`serve`] starts it.
    #[educe(Debug(ignore))]
    traces: Arc<Mutex<Option<traces::Waiting>>>,
}

impl AppState {
    pub fn new(store: Store, engine: Engine, config: Config, key: ferry_store::SecretKey) -> Self {
        // Docker, for `docker` targets and deploy scripts with an image, is given with
        // `map_deliverer(|d| d.with_docker(..))`.
        let mut deliverer =
            ferry_deliver::deliverer::Deliverer::new(store.clone(), &config.data_dir, key.clone());
        if let Some(kubectl) = std::env::var_os("FERRY_KUBECTL") {
            deliverer = deliverer.with_kubectl(kubectl.into());
        }
        if let Some(terraform) = std::env::var_os("FERRY_TERRAFORM") {
            deliverer = deliverer.with_terraform(terraform.into());
        }
        Self {
            deliverer,
            key,
            store,
            engine,
            config: Arc::new(config),
            running: Arc::default(),
            wake: Arc::default(),
            intake_wake: Arc::default(),
            force: CancellationToken::new(),
            stopping: CancellationToken::new(),
            live: tokio::sync::broadcast::channel(4096).0,
            subscribers: live::Subscribers::default(),
            mirror_locks: Arc::default(),
            commits: Arc::new(Mutex::new(hashlink::LruCache::new(KNOWN_COMMITS))),
            finishing: retention::Finishing::default(),
            metrics: metrics::Metrics::new(),
            notifier: notify::Notifier::new(notify::NotifyConfig::default())
                .expect("a notifier without SMTP or certificates"),
            tracer: None,
            traces: Arc::default(),
        }
    }

    /// Exports each run and deployment as an OpenTelemetry trace to `config.url` (see
    /// [`traces`]).
    pub fn with_traces(mut self, config: traces::TraceConfig) -> Self {
        let (tracer, rx) = traces::Tracer::new(self.metrics.trace_spans_dropped.clone());
        self.tracer = Some(tracer);
        if let Ok(mut t) = self.traces.lock() {
            *t = Some((config, rx));
        }
        self
    }

    /// Notifications link to `public_url`, send e-mail through an SMTP relay and trust
    /// extra certificates (see [`notify::NotifyConfig`]); why not, if they cannot.
    pub fn with_notifications(mut self, config: notify::NotifyConfig) -> Result<Self, String> {
        self.notifier = notify::Notifier::new(config)?;
        Ok(self)
    }

    /// What the mirror of `repo` said of commit `sha` (a full object id) when it was
    /// last read: a commit never changes, so a burst of deliveries of one commit (a
    /// branch and a tag pushed together, a forge's redelivery, a replay) reads git once.
    pub(crate) fn known_commit(&self, repo: &str, sha: &str) -> Option<Arc<ReadCommit>> {
        let mut known = self.commits.lock().ok()?;
        known.get(&(repo.to_string(), sha.to_string())).cloned()
    }

    /// Remembers what the mirror of `repo` says of a commit (see [`Self::known_commit`]).
    pub(crate) fn remember_commit(&self, repo: &str, read: ReadCommit) {
        if let Ok(mut known) = self.commits.lock() {
            known.insert((repo.to_string(), read.commit.sha.clone()), Arc::new(read));
        }
    }

    /// Changes the deliverer (e.g. which `kubectl` it runs).
    pub fn map_deliverer(
        mut self,
        f: impl FnOnce(ferry_deliver::deliverer::Deliverer) -> ferry_deliver::deliverer::Deliverer,
    ) -> Self {
        self.deliverer = f(self.deliverer);
        self
    }

    /// Cancels every running run now (a second Ctrl-C while draining).
    pub fn force_stop(&self) {
        self.force.cancel();
    }

    /// Fetches a repository into its mirror, one fetch at a time per mirror.
    pub(crate) async fn sync_mirror(
        &self,
        repo: &ferry_store::Repository,
    ) -> Result<PathBuf, String> {
        let _writing = self.mirror_lock(&repo.id)?.write_owned().await;
        let mirror = self.mirror_path(&repo.id);
        ferry_source::git::sync_mirror(&repo.url, &mirror).await?;
        Ok(mirror)
    }

    /// Holds a repository's mirror for reading: no fetch writes to it until the guard
    /// is dropped.
    pub(crate) async fn read_mirror(
        &self,
        repository_id: &str,
    ) -> Result<tokio::sync::OwnedRwLockReadGuard<()>, String> {
        Ok(self.mirror_lock(repository_id)?.read_owned().await)
    }

    fn mirror_lock(&self, repository_id: &str) -> Result<Arc<tokio::sync::RwLock<()>>, String> {
        let mut locks = self
            .mirror_locks
            .lock()
            .map_err(|_| "mirror lock poisoned".to_string())?;
        Ok(locks.entry(repository_id.to_string()).or_default().clone())
    }

    /// The bare mirror of a repository.
    pub fn mirror_path(&self, repository_id: &str) -> PathBuf {
        self.config
            .data_dir
            .join("mirrors")
            .join(format!("{repository_id}.git"))
    }
}

/// Gets a server's store ready: kills the step processes and ends the runs this server
/// was executing when it last stopped without recording them (they fail with a clear reason; queued runs stay
/// queued), and on first start creates the `admin` user. Returns that user's token,
/// to be shown once.
pub async fn prepare(
    store: &ferry_store::Store,
    config: &Config,
    key: &ferry_store::SecretKey,
) -> Result<Option<String>, ferry_store::Error> {
    // A key that cannot open what the store holds sealed stops the start here.
    store.check_key(key).await?;
    // Step processes a crashed server left running end first.
    let tracker =
        ferry_exec::orphans::Tracker::new(ferry_exec::orphans::tracker_dir(&config.data_dir));
    let killed = tokio::task::spawn_blocking(move || tracker.reap())
        .await
        .unwrap_or(0);
    if killed > 0 {
        tracing::warn!("ended {killed} step process(es) left by a server that stopped");
    }
    let interrupted = store
        .interrupt_runs(
            Some(&config.server_id),
            "interrupted: the server stopped before the run finished",
        )
        .await?;
    if interrupted > 0 {
        tracing::warn!("marked {interrupted} interrupted run(s) as failed");
    }
    // Webhook secrets stored in plain text by an older version are sealed now.
    for repo in store.repositories().await? {
        if let Some(plain) = repo
            .webhook_secret
            .as_deref()
            .filter(|w| !w.starts_with(api::hooks::SEALED))
        {
            let sealed = api::hooks::seal_with(key, plain);
            store.set_webhook_secret(&repo.id, Some(&sealed?)).await?;
        }
    }
    if store.users().await?.is_empty() {
        let (_, token) = auth::create_user_with_token(store, "admin", Role::Admin).await?;
        return Ok(Some(token));
    }
    Ok(None)
}

/// Serves the API on `listener` (over TLS with `tls`) and runs queued runs until
/// `shutdown` resolves; then stops taking work, cancels running runs (or, with `drain`,
/// lets them finish unless [`AppState::force_stop`] is called) and waits until they are
/// recorded.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let dispatcher = tokio::spawn(queue::dispatch(state.clone(), stop.clone()));
    let watcher = tokio::spawn(watch::watch(
        state.clone(),
        stop.clone(),
        state.config.watch_tick,
    ));
    let intake_worker = tokio::spawn(intake::intake(state.clone(), stop.clone()));
    let retention = tokio::spawn(retention::retain(state.clone(), stop.clone()));
    // Subscribed before the deliverer starts, so that it sees every change.
    let counting = tokio::spawn(metrics::follow_deliveries(
        state.clone(),
        state.deliverer.observe(),
        stop.clone(),
    ));
    let notifier = tokio::spawn(notify::run(state.clone(), stop.clone()));
    let dora = tokio::spawn(metrics::refresh_dora(state.clone(), stop.clone()));
    let sampler = tokio::spawn(metrics::sample_workloads(state.clone(), stop.clone()));
    // The exporter stops after everything else, so that the last runs' spans go out.
    let stop_traces = CancellationToken::new();
    let exporter = state
        .traces
        .lock()
        .ok()
        .and_then(|mut t| t.take())
        .map(|(config, rx)| {
            tokio::spawn(traces::export(
                config,
                rx,
                state.metrics.clone(),
                stop_traces.clone(),
            ))
        });
    let deliver_worker = {
        let (d, stop) = (state.deliverer.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = d.recover().await {
                tracing::error!("delivery: cannot recover: {e}");
            }
            d.run(stop).await;
        })
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving");
        // Terraform reaches the state backend on the server's own port, on this host.
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        state
            .deliverer
            .set_infra_endpoint(ferry_deliver::infra::Endpoint {
                base: format!("{scheme}://{}", std::net::SocketAddr::new(ip, addr.port())),
                skip_verify: tls.is_some(),
            });
    }
    // Session cookies are `Secure` when browsers reach the server over HTTPS: its own
    // TLS, or a proxy's in front of it (`--public-url https://…`).
    let secure = tls.is_some()
        || state
            .notifier
            .public_url()
            .is_some_and(|u| u.starts_with("https://"));
    let app = ui::router(state.clone(), api::router(state.clone()), secure)
        .merge(infra::router(state.clone()));
    let (stop_http, stopping) = (stop.clone(), state.stopping.clone());
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
        stop_http.cancel();
    };
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    stop.cancel();
    let _ = watcher.await;
    let _ = intake_worker.await;
    let _ = retention.await;
    let _ = dispatcher.await;
    let _ = deliver_worker.await;
    let _ = counting.await;
    let _ = notifier.await;
    let _ = dora.await;
    let _ = sampler.await;
    stop_traces.cancel();
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    result
}
