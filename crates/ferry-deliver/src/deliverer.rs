//! The deliverer: turns releases into deployments under each environment's policy,
//! executes them one at a time per environment (deploy → verify → live), rolls back
//! failures, and records every step in the audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_config::delivery::{Delivery, OnFailure, OnUnhealthy, Policy};
use ferry_exec::mask::Masker;
use ferry_store::{
    Deployment, DeploymentKind as Kind, DeploymentStatus as S, Health, Release, SecretKey, Store,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cas::Cas;
use crate::diff::ConfigSnapshot;
use crate::events::DeliveryEvent;
use crate::health::{self, Watched};
use crate::infra::{self, Terraform};
use crate::jail;
use crate::layout;
use crate::log::DeployLog;
use crate::policy::{self, Approver, Decision, Parties, Verdict};
use crate::supervisor::Supervisor;
use crate::target::{DeployContext, Target, Targets};
use crate::verify::{self, Check};

/// Why a request about a deployment is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the state (nothing changes).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Store(#[from] ferry_store::Error),
}

type Result<T> = std::result::Result<T, DeliverError>;

/// An approver's decision on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    Reject,
}

/// The person asking.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: String,
    pub name: String,
    /// Holds the approver (or admin) role.
    pub may_approve: bool,
    /// The forge accounts the person is (`github:alice`).
    pub forge: Vec<String>,
    /// The groups the person is in (approval rules' `from:` may name them).
    pub groups: Vec<String>,
}

impl Actor {
    pub fn label(&self) -> String {
        format!("user:{}", self.name)
    }
}

/// Delivery for one server.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Deliverer {
    #[educe(Debug(ignore))]
    store: Store,
    #[educe(Debug(ignore))]
    cas: Cas,
    /// `<data>/deploy`
    root: PathBuf,
    /// `<data>/mirrors`: the server's git mirrors, `<repository id>.git`.
    mirrors: PathBuf,
    /// Where secret files for processes go: memory (`/dev/shm`) where there is one,
    /// never the data directory.
    #[educe(Debug(ignore))]
    secrets_root: PathBuf,
    /// Opens the repository's and environments' secrets.
    #[educe(Debug(ignore))]
    key: SecretKey,
    /// What deploy targets use (supervisor, Docker, kubectl).
    #[educe(Debug(ignore))]
    targets: Targets,
    #[educe(Debug(ignore))]
    wake: Arc<Notify>,
    /// Keep the files of this many newest releases per repository (and of every release
    /// an environment runs); `None`: keep everything.
    #[educe(Debug(ignore))]
    keep_releases: Option<usize>,
    /// Every deployment change and decision, for whoever listens.
    #[educe(Debug(ignore))]
    events: tokio::sync::broadcast::Sender<Arc<DeliveryEvent>>,
    /// Listeners that must not miss a change (metrics, notifications): unbounded, so
    /// they never lag behind and lose one.
    #[educe(Debug(ignore))]
    observers: Arc<std::sync::Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Arc<DeliveryEvent>>>>>,
    /// Held while a change is read and sent, so that listeners get changes in the order
    /// the store took them (two publishers could otherwise read in one order and send
    /// in the other).
    #[educe(Debug(ignore))]
    publishing: Arc<tokio::sync::Mutex<()>>,
    /// Environments (repository id, name) whose deployment this server is executing.
    #[educe(Debug(ignore))]
    busy: Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
    /// Deployments held by a freeze whose log says so already.
    #[educe(Debug(ignore))]
    held: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Extra trusted certificates for probes (see [`Deliverer::with_ca`]).
    #[educe(Debug(ignore))]
    ca: Arc<Vec<reqwest::Certificate>>,
    /// The sandbox of releases' host code (see [`crate::jail`]); `None`: it runs with
    /// the server's rights.
    #[educe(Debug(ignore))]
    sandbox: Option<ferry_exec::sandbox::Sandbox>,
    /// How long a deploy script may run (`None`: no limit).
    script_timeout: Option<Duration>,
    /// How big a deployment's log may grow (`None`: no limit).
    log_limit: Option<u64>,
    /// The health watch of each live environment this server watches (see
    /// [`crate::health`]).
    #[educe(Debug(ignore))]
    watches: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Watching>>>,
    /// Each live deployment's last workload sample and when it was taken: a page or a
    /// scrape within [`WORKLOAD_FRESH`] of it reads it again rather than `/proc`.
    #[educe(Debug(ignore))]
    sampled: Arc<std::sync::Mutex<Samples>>,
    /// The `terraform` of environments with `infra:`, and where it finds the state.
    terraform: Terraform,
    /// Deployments waiting for approval, by id, as far as planning goes (see
    /// [`Deliverer::plan_waiting`]).
    #[educe(Debug(ignore))]
    planned: Arc<std::sync::Mutex<std::collections::HashMap<String, Planned>>>,
}

/// Where a deployment waiting for approval is with its Terraform plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planned {
    /// Its environment has no `infra:` in its release.
    NoInfra,
    /// Planned against this state version (`None`: no state).
    At(Option<i64>),
}

/// What deploying a release needs, resolved (see [`Deliverer::prepare`]).
struct Prepared {
    env_dir: PathBuf,
    release_dir: PathBuf,
    secrets_dir: PathBuf,
    vars: BTreeMap<String, String>,
    secrets: Vec<(String, Vec<u8>)>,
    env: Vec<(String, String)>,
    spawner: Option<Arc<ferry_exec::sandbox::Spawner>>,
}

/// What secret files [`Deliverer::prepare`] writes are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The deployment's workload: the environment's `secrets/`.
    Deploy,
    /// Terraform: `infra/secrets/`, removed when it is done.
    Infra,
}

/// What [`Deliverer::deploy_prepared`] does with the target.
#[derive(Clone, Copy)]
enum Action<'a> {
    /// Deploys the release.
    Deploy(&'a dyn Target),
    /// Puts back what a workload that runs on its own needs (see [`Target::restore`]).
    Restore(&'a dyn Target),
    /// Nothing (the probes only).
    Nothing,
}

/// What provisioning a deployment's environment came to.
enum Provisioned {
    /// Applied (or nothing to apply): the deployment goes on.
    Applied,
    /// The plan waits for approvals: why.
    Waits(String),
}

/// Why provisioning failed, and whether the environment's infrastructure may have
/// changed (an apply that failed half way) or not (a failed plan).
struct InfraFailure {
    reason: String,
    touched: bool,
}

impl InfraFailure {
    fn untouched(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            touched: false,
        }
    }
}

/// One environment's health watch: the live deployment it watches, and its end.
struct Watching {
    deployment_id: String,
    stop: CancellationToken,
}

/// The release's own delivery configuration.
pub fn delivery_of(release: &Release) -> Result<Delivery> {
    serde_json::from_str(&release.delivery).map_err(|e| {
        DeliverError::Invalid(format!(
            "release {} has no readable delivery configuration: {e}",
            release.name
        ))
    })
}

/// Workload samples by deployment id, with when each was taken.
type Samples = std::collections::HashMap<String, (Instant, Option<crate::supervisor::Workload>)>;

/// How long a workload sample is reused (see [`Deliverer::workload`]).
const WORKLOAD_FRESH: Duration = Duration::from_secs(1);

/// How long a workload must stay up when no verification is configured.
const SETTLE: Duration = Duration::from_millis(750);

const ACTIVE: &[S] = &[S::Queued, S::AwaitingApproval, S::Deploying, S::Verifying];

impl Deliverer {
    pub fn new(store: Store, data_dir: &std::path::Path, key: SecretKey) -> Self {
        let tracker = ferry_exec::orphans::Tracker::new(data_dir.join("deploy-processes"));
        Self {
            targets: Targets {
                supervisor: Supervisor::new(Some(tracker)),
                root: data_dir.join("deploy"),
                secrets_root: layout::secrets_root(data_dir),
                docker: None,
                kubectl: PathBuf::from("kubectl"),
                mounts: Arc::default(),
                gitops_local: Arc::default(),
                store: store.clone(),
                key: key.clone(),
            },
            store,
            cas: Cas::new(data_dir.join("cas")),
            root: data_dir.join("deploy"),
            mirrors: data_dir.join("mirrors"),
            secrets_root: layout::secrets_root(data_dir),
            key,
            wake: Arc::new(Notify::new()),
            keep_releases: None,
            events: tokio::sync::broadcast::channel(1024).0,
            observers: Arc::default(),
            publishing: Arc::default(),
            busy: Arc::default(),
            held: Arc::default(),
            ca: Arc::default(),
            sandbox: None,
            script_timeout: None,
            log_limit: None,
            watches: Arc::default(),
            sampled: Arc::default(),
            terraform: Terraform::default(),
            planned: Arc::default(),
        }
    }

    /// Deploy scripts stop after `script_timeout`, and a deployment's log stops at
    /// `log_limit` bytes, stopping what the deployment runs (`ferry serve`'s
    /// `--job-timeout` and `--log-limit`).
    pub fn with_limits(mut self, script_timeout: Option<Duration>, log_limit: Option<u64>) -> Self {
        self.script_timeout = script_timeout;
        self.log_limit = log_limit;
        self
    }

    /// Runs releases' host code (scripts without an image, processes, command probes)
    /// in `sandbox` (see [`crate::jail`]); `None`: with the server's rights.
    pub fn with_sandbox(mut self, sandbox: Option<ferry_exec::sandbox::Sandbox>) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Certificates trusted besides the system's by verification probes over https://
    /// (`ferry serve --ca-file`).
    pub fn with_ca(mut self, certs: Option<Vec<reqwest::Certificate>>) -> Self {
        self.ca = Arc::new(certs.unwrap_or_default());
        self
    }

    /// Directories `docker` deployments may mount (none by default; see
    /// [`crate::target::mounts`]), where they lead now.
    pub fn with_mounts(mut self, dirs: Vec<PathBuf>) -> Self {
        let allowed = dirs.into_iter().map(crate::target::mounts::Allowed::new);
        self.targets.mounts = Arc::new(allowed.collect());
        self
    }

    /// Directories on the server `gitops` environment repositories may lie in (none by
    /// default: only URLs).
    pub fn with_gitops_local(mut self, dirs: Vec<PathBuf>) -> Self {
        self.targets.gitops_local = Arc::new(dirs);
        self
    }

    /// The retention policy: keep the files of the newest `keep` releases of each
    /// repository, and of any release an environment runs or is about to run.
    pub fn with_retention(mut self, keep: Option<usize>) -> Self {
        self.keep_releases = keep;
        self
    }

    /// Applies the retention policy: older releases no environment runs are marked
    /// pruned, their deployed copies and unreferenced stored files removed.
    pub async fn prune(&self) -> Result<usize> {
        let Some(keep) = self.keep_releases else {
            return Ok(0);
        };
        let mut pruned = 0;
        for repo in self.store.repositories().await? {
            for release in self.store.prunable_releases(&repo.id, keep as i64).await? {
                self.store.mark_pruned(&release.id).await?;
                self.store
                    .audit(
                        Some(&repo.id),
                        "ferry",
                        "release.prune",
                        &release.name,
                        Some(&format!("beyond the newest {keep}")),
                    )
                    .await?;
                let repo_dir = self.root.join(&repo.id);
                if let Ok(envs) = std::fs::read_dir(&repo_dir) {
                    for env in envs.flatten() {
                        let _ = std::fs::remove_dir_all(layout::release_dir(
                            &env.path(),
                            &release.name,
                        ));
                    }
                }
                pruned += 1;
            }
        }
        let kept = self.store.kept_digests().await?;
        let cas = self.cas.clone();
        let _ = tokio::task::spawn_blocking(move || {
            cas.remove_unreferenced(&kept, Duration::from_secs(600))
        })
        .await;
        Ok(pruned)
    }

    /// Lets deployments use Docker (`docker` targets, scripts with an image).
    pub fn with_docker(mut self, docker: Option<Arc<ferry_exec::DockerExecutor>>) -> Self {
        self.targets.docker = docker;
        self
    }

    /// The `kubectl` to run for `kubernetes` targets (default: `kubectl` on the PATH).
    /// Runs `program` for environments with `infra:` (`terraform` on the `PATH` by
    /// default).
    pub fn with_terraform(mut self, program: PathBuf) -> Self {
        self.terraform = self.terraform.with_program(program);
        self
    }

    /// Tells where Terraform finds the server's state backend (once the server listens).
    pub fn set_infra_endpoint(&self, endpoint: crate::infra::Endpoint) {
        self.terraform.set_endpoint(endpoint);
    }

    pub fn with_kubectl(mut self, kubectl: PathBuf) -> Self {
        self.targets.kubectl = kubectl;
        self
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.targets.supervisor
    }

    /// Deployment changes and decisions from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<DeliveryEvent>> {
        self.events.subscribe()
    }

    /// Every change from now on, none missed (an unbounded channel: read it steadily).
    pub fn observe(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<DeliveryEvent>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut all) = self.observers.lock() {
            all.push(tx);
        }
        rx
    }

    /// Sends a change to every subscriber and observer.
    fn tell(&self, event: DeliveryEvent) {
        let event = Arc::new(event);
        if let Ok(mut all) = self.observers.lock() {
            all.retain(|o| o.send(event.clone()).is_ok());
        }
        let _ = self.events.send(event);
    }

    fn anyone_listens(&self) -> bool {
        self.events.receiver_count() > 0 || self.observers.lock().is_ok_and(|o| !o.is_empty())
    }

    /// Tells listeners how deployment `id` is now (nobody listening is fine).
    async fn publish(&self, id: &str) {
        if !self.anyone_listens() {
            return;
        }
        let _order = self.publishing.lock().await;
        if let Ok(deployment) = self.store.deployment(id).await {
            self.tell(DeliveryEvent::Deployment { deployment });
        }
    }

    /// The log of one deployment.
    pub fn deployment_log(&self, d: &Deployment) -> PathBuf {
        layout::environment_dir(&self.root, &d.repository_id, &d.environment)
            .join("deployments")
            .join(format!("{}.log", d.number))
    }

    /// The output of an environment's process.
    pub fn output_log(&self, repository_id: &str, environment: &str) -> PathBuf {
        layout::environment_dir(&self.root, repository_id, environment).join("output.log")
    }

    /// The repository's delivery rules as of now: `release:` and the environments with
    /// their policies and freezes, from the head of its default branch (see
    /// [`crate::rules`]), never from a release's own commit.
    pub async fn rules(&self, repository_id: &str) -> Result<Delivery> {
        let repo = self.store.repository(repository_id).await?;
        let branch = crate::rules::default_branch(&repo);
        let mirror = self.mirrors.join(format!("{}.git", repo.id));
        crate::rules::read(&mirror, branch).await.map_err(|e| {
            DeliverError::Invalid(format!(
                "the delivery rules of `{}` (its default branch's {}) cannot be read: {e}",
                repo.name,
                ferry_config::FILE_NAME
            ))
        })
    }

    /// A release was sealed: it enters the first environments by their policies.
    pub async fn on_release(&self, release: &Release) -> Result<Vec<Deployment>> {
        let d = self.rules(&release.repository_id).await?;
        let mut made = Vec::new();
        if let Err(e) = self.prune().await {
            tracing::warn!("retention: {e}");
        }
        for env in policy::first_environments(&d) {
            if let Some(dep) = self.enter(release, &d, &env.name, Kind::Auto, None).await? {
                made.push(dep);
            }
        }
        Ok(made)
    }

    /// Creates the deployment that the environment's policy (in `rules`) calls for
    /// (`None` for a manual environment when nobody asked).
    async fn enter(
        &self,
        release: &Release,
        rules: &Delivery,
        env: &str,
        kind: Kind,
        requested_by: Option<&str>,
    ) -> Result<Option<Deployment>> {
        let spec = rules
            .environment(env)
            .ok_or_else(|| DeliverError::Invalid(format!("no environment `{env}`")))?;
        let status = match (&spec.policy, kind) {
            (Policy::Approval(_), _) => S::AwaitingApproval,
            (Policy::Manual, Kind::Auto) => return Ok(None),
            _ => S::Queued,
        };
        // The rules let it in; the release itself must say how it is deployed there.
        let undeployable = delivery_of(release)?.deploy_of(env).is_none().then(|| {
            format!(
                "release {} has no `deploy:` for `{env}` in its {}",
                release.name,
                ferry_config::FILE_NAME
            )
        });
        if let Some(why) = &undeployable
            && kind != Kind::Auto
        {
            return Err(DeliverError::Invalid(why.clone()));
        }
        let skipped = match undeployable {
            Some(why) => Some(why),
            None if kind == Kind::Auto => self.not_a_descendant(release, env).await?,
            None => None,
        };
        if let Some(why) = skipped {
            self.store
                .audit(
                    Some(&release.repository_id),
                    "ferry",
                    "deployment.not_promoted",
                    env,
                    Some(&why),
                )
                .await?;
            return Ok(None);
        }
        let dep = self
            .store
            .create_deployment(
                &release.repository_id,
                env,
                &release.id,
                kind,
                status,
                requested_by,
            )
            .await?;
        let actor = requested_by.unwrap_or("ferry");
        self.store
            .audit(
                Some(&release.repository_id),
                actor,
                "deployment.request",
                &format!("{env}#{}", dep.number),
                Some(&format!("release {} ({})", release.name, status.as_str())),
            )
            .await?;
        self.publish(&dep.id).await;
        self.wake.notify_one();
        Ok(Some(dep))
    }

    /// Why `release` may not replace `env`'s live release automatically: its commit does
    /// not descend from the live one's (an older commit, or another line of history),
    /// or git cannot tell. A promotion by hand may still deploy it.
    async fn not_a_descendant(&self, release: &Release, env: &str) -> Result<Option<String>> {
        let Some(live) = self
            .store
            .live_deployment(&release.repository_id, env)
            .await?
        else {
            return Ok(None);
        };
        let live = self
            .store
            .release(&release.repository_id, &live.release_id)
            .await?;
        let mirror = self.mirrors.join(format!("{}.git", release.repository_id));
        if live.commit_sha == release.commit_sha {
            return Ok(None);
        }
        let short = |sha: &str| sha[..sha.len().min(12)].to_string();
        let why = |how: &str| {
            format!(
                "release {} (commit {}) {how} release {} (commit {}), live in {env}: not \
                 promoted automatically (promote it by hand to deploy it)",
                release.name,
                short(&release.commit_sha),
                live.name,
                short(&live.commit_sha)
            )
        };
        Ok(
            match ferry_source::git::is_ancestor(&mirror, &live.commit_sha, &release.commit_sha)
                .await
            {
                Ok(true) => None,
                Ok(false) => Some(why("does not descend from")),
                Err(e) => Some(why(&format!("cannot be told to descend ({e}) from"))),
            },
        )
    }

    /// `ferry promote RELEASE --to ENV`.
    pub async fn promote(
        &self,
        repository_id: &str,
        release: &str,
        env: &str,
        actor: &Actor,
    ) -> Result<Deployment> {
        let release = self
            .store
            .release(repository_id, release)
            .await
            .map_err(|_| DeliverError::NotFound(format!("there is no release `{release}`")))?;
        if release.pruned_at.is_some() {
            return Err(DeliverError::Invalid(format!(
                "release {} was pruned by the retention policy: its files are gone",
                release.name
            )));
        }
        let d = self.rules(repository_id).await?;
        let spec = environment(&d, env)?;
        let history = self.store.deployments(repository_id, None, 10_000).await?;
        let of_release: Vec<&Deployment> = history
            .iter()
            .filter(|x| x.release_id == release.id)
            .collect();
        if let Some(bad) = of_release
            .iter()
            .find(|x| matches!(x.status, S::Failed | S::RolledBack) && x.kind != Kind::Rollback)
        {
            return Err(DeliverError::Invalid(format!(
                "release {} failed in `{}` and is never promoted further",
                release.name, bad.environment
            )));
        }
        if let Some(after) = &spec.after {
            let live = self
                .store
                .live_deployment(repository_id, &after.value)
                .await?;
            if live.as_ref().map(|l| &l.release_id) != Some(&release.id) {
                return Err(DeliverError::Invalid(format!(
                    "release {} is not live in `{}`, which comes before `{env}`",
                    release.name, after.value
                )));
            }
        }
        if let Some(why) = policy::frozen(&spec.freeze, Utc::now()) {
            return Err(DeliverError::Invalid(format!(
                "`{env}` is {why}; nothing deploys there now"
            )));
        }
        if let Some(open) = of_release
            .iter()
            .find(|x| x.environment == env && ACTIVE.contains(&x.status))
        {
            return Err(DeliverError::Conflict(format!(
                "release {} is already on its way to `{env}` (deployment {env}#{}, {})",
                release.name,
                open.number,
                open.status.as_str()
            )));
        }
        if let Some(live) = self.store.live_deployment(repository_id, env).await?
            && live.release_id == release.id
        {
            return Err(DeliverError::Conflict(format!(
                "release {} is already live in `{env}`",
                release.name
            )));
        }
        let label = actor.label();
        let dep = self
            .enter(&release, &d, env, Kind::Promotion, Some(&label))
            .await?;
        dep.ok_or_else(|| DeliverError::Invalid("the environment takes no deployments".into()))
    }

    /// `ferry envs destroy ENV`: a deployment that plans the destroy of what the
    /// environment's Terraform made (with the code of the release live there, or last
    /// provisioned there), waits for approval, applies it and stops what was live.
    pub async fn destroy(
        &self,
        repository_id: &str,
        env: &str,
        actor: &Actor,
    ) -> Result<Deployment> {
        let d = self.rules(repository_id).await?;
        let spec = environment(&d, env)?;
        if let Some(why) = policy::frozen(&spec.freeze, Utc::now()) {
            return Err(DeliverError::Invalid(format!(
                "`{env}` is {why}; nothing deploys there now"
            )));
        }
        let history = self
            .store
            .deployments(repository_id, Some(env), 10_000)
            .await?;
        if let Some(open) = history.iter().find(|x| ACTIVE.contains(&x.status)) {
            return Err(DeliverError::Conflict(format!(
                "deployment {env}#{} is {} in `{env}`: destroy it once that is done",
                open.number,
                open.status.as_str()
            )));
        }
        // Something to destroy: the latest state holds resources.
        let holds = match self.store.infra_state(repository_id, env, None).await? {
            Some(st) if !st.info.deleted => {
                let plain = self.key.open(&st.sealed, "infra-state").map_err(|e| {
                    DeliverError::Invalid(format!("the state cannot be opened: {e}"))
                })?;
                serde_json::from_slice::<serde_json::Value>(&plain)
                    .ok()
                    .and_then(|v| {
                        v.get("resources")
                            .and_then(|r| r.as_array())
                            .map(|r| !r.is_empty())
                    })
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !holds {
            return Err(DeliverError::Invalid(format!(
                "the Terraform state of `{env}` holds no resources: there is nothing to destroy"
            )));
        }
        // The code that made what is there: the live release's, else that of the last
        // deployment that planned there.
        let mut source = self.store.live_deployment(repository_id, env).await?;
        if source.is_none() {
            for x in &history {
                if self.store.infra_plan(&x.id).await?.is_some() && x.kind != Kind::Destroy {
                    source = Some(x.clone());
                    break;
                }
            }
        }
        let Some(source) = source else {
            return Err(DeliverError::Invalid(format!(
                "no release planned Terraform in `{env}`: Ferry cannot tell which code made \
                 what its state holds"
            )));
        };
        let release = self
            .store
            .release(repository_id, &source.release_id)
            .await?;
        if release.pruned_at.is_some() {
            return Err(DeliverError::Invalid(format!(
                "release {} was pruned by the retention policy: its Terraform is gone",
                release.name
            )));
        }
        if Self::infra_of(&delivery_of(&release)?, env).is_none() {
            return Err(DeliverError::Invalid(format!(
                "release {}, live in `{env}`, has no `infra:` there: Ferry provisioned \
                 nothing to destroy",
                release.name
            )));
        }
        let label = actor.label();
        let dep = self
            .store
            .create_deployment(
                repository_id,
                env,
                &release.id,
                Kind::Destroy,
                S::AwaitingApproval,
                Some(&label),
            )
            .await?;
        self.store
            .audit(
                Some(repository_id),
                &label,
                "deployment.request",
                &format!("{env}#{}", dep.number),
                Some(&format!(
                    "destroy of `{env}` with release {}'s Terraform (awaiting_approval)",
                    release.name
                )),
            )
            .await?;
        self.publish(&dep.id).await;
        self.wake.notify_one();
        Ok(dep)
    }

    /// Records an approval (the deployment is queued once it has enough) or a
    /// rejection (the deployment stops).
    pub async fn decide(
        &self,
        repository_id: &str,
        key: &str,
        actor: &Actor,
        groups: &[String],
        comment: Option<&str>,
        vote: Vote,
    ) -> Result<Deployment> {
        self.decide_on_plan(repository_id, key, actor, groups, comment, vote, None)
            .await
    }

    /// [`Self::decide`], naming the Terraform plan decided on (its SHA-256, or a prefix
    /// of at least 12 hex digits): refused when the deployment applies another plan now.
    /// A decision on a deployment that runs Terraform is always of its current plan,
    /// and counts for that plan only.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_on_plan(
        &self,
        repository_id: &str,
        key: &str,
        actor: &Actor,
        groups: &[String],
        comment: Option<&str>,
        vote: Vote,
        plan_seen: Option<&str>,
    ) -> Result<Deployment> {
        let approve = vote == Vote::Approve;
        let dep = self
            .store
            .find_deployment(repository_id, key)
            .await
            .map_err(|_| DeliverError::NotFound(format!("there is no deployment `{key}`")))?;
        let name = format!("{}#{}", dep.environment, dep.number);
        if dep.status != S::AwaitingApproval {
            return Err(DeliverError::Invalid(format!(
                "deployment {name} is not waiting for approval (it is {})",
                dep.status.as_str()
            )));
        }
        let release = self.store.release(repository_id, &dep.release_id).await?;
        let d = self.rules(repository_id).await?;
        let policy = d.environment(&dep.environment).map(|e| e.policy.clone());
        let infra_spec = delivery_of(&release)
            .ok()
            .and_then(|own| Self::infra_of(&own, &dep.environment));
        let plan = match &infra_spec {
            Some(_) => match self.store.infra_plan(&dep.id).await? {
                Some(p) => Some(p.info),
                None => {
                    return Err(DeliverError::Invalid(format!(
                        "the Terraform plan of deployment {name} is not made yet: decide \
                         once it is shown"
                    )));
                }
            },
            None => None,
        };
        if let (None, Some(p), true) = (plan_seen, &plan, approve) {
            return Err(DeliverError::Conflict(format!(
                "deployment {name} applies Terraform plan {}: name the plan you approve \
                 (`ferry approve {name} --plan {}` once `ferry deployment {name}` has shown \
                 it; the web UI sends the plan it shows)",
                &p.sha256[..12],
                &p.sha256[..12]
            )));
        }
        if let (Some(seen), Some(p)) = (plan_seen, &plan)
            && (seen.len() < 12 || !p.sha256.starts_with(&seen.to_ascii_lowercase()))
        {
            return Err(DeliverError::Conflict(format!(
                "deployment {name} applies Terraform plan {} now, not {seen}: look at the \
                 plan again",
                &p.sha256[..12]
            )));
        }
        let rule = match (&plan, &policy) {
            (Some(p), Some(policy)) => {
                let summary: infra::PlanSummary =
                    serde_json::from_str(&p.summary).unwrap_or_default();
                infra::gate(
                    policy,
                    dep.kind,
                    &summary,
                    p.destroy,
                    destroy_needs_approval(&d, &dep.environment),
                )
            }
            (_, Some(Policy::Approval(rule))) => Some(rule.clone()),
            _ => None,
        };
        let Some(rule) = rule else {
            return Err(DeliverError::Invalid(format!(
                "`{}` takes no approvals",
                dep.environment
            )));
        };
        let rule = &rule;
        let parties = Parties {
            author: release.author.clone(),
            triggered_by: release.triggered_by.clone(),
            requested_by: dep.requested_by.clone(),
        };
        let approver = Approver {
            user: &actor.name,
            groups,
            forge: &actor.forge,
            may_approve: actor.may_approve,
        };
        policy::may_approve(rule, &approver, &parties).map_err(DeliverError::Forbidden)?;
        // An approval that has expired may be given again.
        if let Some(expires) = rule.expires {
            let before = Utc::now().timestamp_millis()
                - i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            self.store
                .forget_expired_approval(&dep.id, &actor.user_id, before)
                .await?;
        }
        let decision = if approve { "approve" } else { "reject" };
        let recorded = self
            .store
            .add_approval(
                &dep.id,
                &actor.user_id,
                &actor.name,
                decision,
                comment,
                plan.as_ref().map(|p| p.sha256.as_str()),
            )
            .await
            .map_err(|e| match e {
                ferry_store::Error::Conflict(_) => DeliverError::Conflict(format!(
                    "{} has already decided on deployment {name}",
                    actor.name
                )),
                e => e.into(),
            })?;
        if !recorded {
            return Err(DeliverError::Conflict(format!(
                "deployment {name} was planned again meanwhile: look at the plan again"
            )));
        }
        let action = if approve {
            "deployment.approve"
        } else {
            "deployment.reject"
        };
        // The audit names the plan decided on.
        let detail = match &plan {
            Some(p) => Some(match comment {
                Some(c) => format!("plan {}: {c}", &p.sha256[..12]),
                None => format!("plan {}", &p.sha256[..12]),
            }),
            None => comment.map(str::to_string),
        };
        self.store
            .audit(
                Some(repository_id),
                &actor.label(),
                action,
                &name,
                detail.as_deref(),
            )
            .await?;
        let approvals = self.store.approvals(&dep.id).await?;
        if let Some(mine) = approvals.iter().find(|a| a.user_id == actor.user_id) {
            self.tell(DeliveryEvent::Approval {
                repository_id: repository_id.to_string(),
                approval: mine.clone(),
            });
        }
        let counted = match &plan {
            Some(p) => self.decisions_of_plan(&dep, &p.sha256).await?,
            None => self.decisions_of(&dep).await?,
        };
        match policy::verdict(rule, &counted, Utc::now()) {
            Verdict::Approved => {
                self.store
                    .move_deployment(&dep.id, &[S::AwaitingApproval], S::Queued, None)
                    .await?;
                // Told before the deliverer is woken, so that `queued` comes before
                // `deploying`.
                self.publish(&dep.id).await;
                self.wake.notify_one();
                return Ok(self.store.deployment(&dep.id).await?);
            }
            Verdict::Rejected { by } => {
                self.store
                    .move_deployment(
                        &dep.id,
                        &[S::AwaitingApproval],
                        S::Rejected,
                        Some(&format!("rejected by {by}")),
                    )
                    .await?;
            }
            Verdict::Waiting { .. } => {}
        }
        self.publish(&dep.id).await;
        Ok(self.store.deployment(&dep.id).await?)
    }

    /// `ferry rollback ENV [--to RELEASE]`: deploys again a release that was live in
    /// the environment and has not failed there since, as a deployment of its own. It
    /// asks for no approvals (the release had them when it went live); during a freeze
    /// only an approver may ask for it. Anything else is a promotion.
    pub async fn rollback(
        &self,
        repository_id: &str,
        env: &str,
        to: Option<&str>,
        actor: &Actor,
    ) -> Result<Deployment> {
        let live = self.store.live_deployment(repository_id, env).await?;
        let history = self
            .store
            .deployments(repository_id, Some(env), 10_000)
            .await?;
        let current = live.as_ref().map(|l| l.release_id.as_str());
        // A rollback goes only to a release that was live here (so it passed this
        // environment's approvals and verification) and never failed here since.
        let was_live = |release_id: &str| {
            history
                .iter()
                .any(|x| x.release_id == release_id && matches!(x.status, S::Replaced | S::Live))
        };
        let failed_here = |release_id: &str| {
            history.iter().any(|x| {
                x.release_id == release_id && matches!(x.status, S::Failed | S::RolledBack)
            })
        };
        let target = match to {
            Some(t) => self
                .store
                .release(repository_id, t)
                .await
                .map_err(|_| DeliverError::NotFound(format!("there is no release `{t}`")))?,
            None => {
                // The newest release that was live here before the current one.
                let earlier = history
                    .iter()
                    .filter(|x| matches!(x.status, S::Replaced | S::Live))
                    .map(|x| x.release_id.as_str())
                    .find(|r| Some(*r) != current && !failed_here(r))
                    .ok_or_else(|| {
                        DeliverError::Invalid(format!(
                            "`{env}` has no earlier release to go back to"
                        ))
                    })?;
                self.store.release(repository_id, earlier).await?
            }
        };
        if target.pruned_at.is_some() {
            return Err(DeliverError::Invalid(format!(
                "release {} was pruned by the retention policy: its files are gone",
                target.name
            )));
        }
        if current == Some(target.id.as_str()) {
            return Err(DeliverError::Conflict(format!(
                "release {} is already live in `{env}`",
                target.name
            )));
        }
        if !was_live(&target.id) {
            return Err(DeliverError::Invalid(format!(
                "release {} was never live in `{env}`: a rollback only goes back to a \
                 release that was; deploying it there is a promotion, with its approvals \
                 (`ferry promote {} --to {env}`)",
                target.name, target.name
            )));
        }
        if failed_here(&target.id) {
            return Err(DeliverError::Invalid(format!(
                "release {} failed in `{env}` since it was live there: going back to it is \
                 a promotion, with its approvals",
                target.name
            )));
        }
        let d = self.rules(repository_id).await?;
        let spec = environment(&d, env)?;
        // A freeze holds every deployment but a rollback an approver of the environment
        // asks for (one its approval rule's `from:` names, if it names any).
        if let Some(why) = policy::frozen(&spec.freeze, Utc::now()) {
            if !actor.may_approve {
                return Err(DeliverError::Invalid(format!(
                    "`{env}` is {why}; during a freeze only an approver may roll back"
                )));
            }
            if let Policy::Approval(rule) = &spec.policy
                && !rule.from.is_empty()
                && !rule
                    .from
                    .iter()
                    .any(|f| *f == actor.name || actor.groups.contains(f))
            {
                return Err(DeliverError::Invalid(format!(
                    "`{env}` is {why}; during a freeze only its approvers ({}) may roll back",
                    rule.from.join(", ")
                )));
            }
        }
        let label = actor.label();
        let dep = self
            .store
            .create_deployment(
                repository_id,
                env,
                &target.id,
                Kind::Rollback,
                S::Queued,
                Some(&label),
            )
            .await?;
        self.store
            .audit(
                Some(repository_id),
                &label,
                "deployment.rollback",
                &format!("{env}#{}", dep.number),
                Some(&format!("back to release {}", target.name)),
            )
            .await?;
        self.publish(&dep.id).await;
        self.wake.notify_one();
        Ok(dep)
    }

    /// After a restart: deployments the old server left in progress fail, and the live
    /// process environments run again.
    pub async fn recover(&self) -> Result<()> {
        // Processes of a server that was killed end first (their pids are recorded).
        if let Some(tracker) = self.targets.supervisor.tracker() {
            let killed = tokio::task::spawn_blocking(move || tracker.reap())
                .await
                .unwrap_or(0);
            if killed > 0 {
                tracing::warn!("ended {killed} deployed process(es) left by a server that stopped");
            }
        }
        // A server that was killed left its processes' secret files: none is in use
        // any more (containers' stay: they run on).
        layout::clear_process_secrets(&self.secrets_root);
        // No deployment runs Terraform now: its credentials end, the locks they took go,
        // and what a killed Terraform left in the releases (saved plans hold the
        // variables' values) is removed.
        self.store.end_all_deployment_credentials().await?;
        let unlocked = self.store.unlock_infra_of(None).await?;
        if unlocked > 0 {
            tracing::warn!(
                "let go of {unlocked} Terraform state lock(s) of interrupted deployments"
            );
        }
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || infra::sweep(&root)).await;
        for dep in self
            .store
            .deployments_in(&[S::Deploying, S::Verifying])
            .await?
        {
            // Cancelled, not failed: the release did not fail here (a failed release is
            // never promoted further), the server stopped under it.
            let reason = "interrupted: the server stopped during the deployment";
            if self
                .store
                .move_deployment(
                    &dep.id,
                    &[S::Deploying, S::Verifying],
                    S::Cancelled,
                    Some(reason),
                )
                .await?
            {
                self.audit_by_ferry(&dep, "deployment.interrupted", Some(reason))
                    .await?;
                self.publish(&dep.id).await;
            }
        }
        for dep in self.store.deployments_in(&[S::Live]).await? {
            let release = self
                .store
                .release(&dep.repository_id, &dep.release_id)
                .await?;
            let d = delivery_of(&release)?;
            let Ok(target) = self.target(&d, &dep.environment) else {
                continue;
            };
            let mut log = self.open_log(&dep);
            // A supervised process is started again; what runs elsewhere (a container,
            // what a script deployed) is only watched again.
            let supervised = target.supervised();
            let action = if supervised {
                Action::Deploy(target.as_ref())
            } else {
                Action::Restore(target.as_ref())
            };
            let prepared = self
                .prepare(
                    &dep,
                    &release,
                    &d,
                    supervised && target.runs_host_code(),
                    Purpose::Deploy,
                    &mut log,
                )
                .await;
            let deployed = match prepared {
                Ok(p) => {
                    self.deploy_prepared(&dep, &release, &d, action, p, &mut log)
                        .await
                }
                Err(e) => Err(e),
            };
            match deployed {
                Ok(probes) => {
                    if let Some(w) = self.watched(&dep, &release, &d, &target, probes) {
                        self.start_watch(w);
                    }
                }
                Err(e) if supervised => {
                    tracing::error!("cannot restart `{}`: {e}", dep.environment);
                }
                Err(e) => tracing::warn!("cannot watch `{}` again: {e}", dep.environment),
            }
            if !supervised {
                let dir = layout::environment_dir(
                    &self.secrets_root,
                    &dep.repository_id,
                    &dep.environment,
                );
                let _ = std::fs::remove_dir_all(dir.join("secrets"));
            }
        }
        Ok(())
    }

    /// Executes queued deployments until `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        let mut last_prune = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.step(&mut tasks).await {
                tracing::error!("delivery: {e}");
            }
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = std::time::Instant::now();
                if let Err(e) = self.prune().await {
                    tracing::warn!("retention: {e}");
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => break,
            }
        }
        // Deployments in flight stop here; the next start records them as interrupted.
        tasks.shutdown().await;
        if let Ok(mut all) = self.watches.lock() {
            for (_, w) in all.drain() {
                w.stop.cancel();
            }
        }
        self.targets.supervisor.shutdown().await;
        // No process runs any more: its secret files go (they are written again on
        // start); containers run on, with theirs.
        layout::clear_process_secrets(&self.secrets_root);
    }

    /// Starts every queued deployment whose environment is free, oldest first.
    async fn step(&self, tasks: &mut tokio::task::JoinSet<()>) -> Result<()> {
        self.plan_waiting(tasks).await?;
        let queued = self.store.deployments_in(&[S::Queued]).await?;
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut frozen: Vec<(String, String)> = Vec::new();
        // Each repository's rules, read once a pass.
        let mut rules: BTreeMap<String, Result<Delivery>> = BTreeMap::new();
        for dep in queued {
            let env = (dep.repository_id.clone(), dep.environment.clone());
            if seen.contains(&env) {
                continue; // older ones of this environment go first
            }
            let release = self
                .store
                .release(&dep.repository_id, &dep.release_id)
                .await?;
            if !rules.contains_key(&dep.repository_id) {
                let read = self.rules(&dep.repository_id).await;
                rules.insert(dep.repository_id.clone(), read);
            }
            // A freeze holds every deployment but a rollback (which only an approver
            // may ask for during one, or which follows a failure): they wait, queued,
            // for its end. A rollback queued behind them goes first.
            if dep.kind != Kind::Rollback {
                if frozen.contains(&env) {
                    continue;
                }
                let spec = match &rules[&dep.repository_id] {
                    // Whether a freeze holds cannot be told: nothing starts.
                    Err(e) => {
                        self.note_held(&dep, &format!("{e}; the deployment starts once they can"));
                        frozen.push(env);
                        continue;
                    }
                    Ok(d) => d.environment(&dep.environment),
                };
                // An environment the rules no longer name takes no deployments.
                let Some(spec) = spec else {
                    let why = format!(
                        "`{}` is no longer an environment of the default branch's {}",
                        dep.environment,
                        ferry_config::FILE_NAME
                    );
                    self.set_aside(&dep, S::Cancelled, &format!("cancelled: {why}"), &why)
                        .await?;
                    continue;
                };
                if let Some(why) = policy::frozen(&spec.freeze, Utc::now()) {
                    let why = format!(
                        "`{}` is {why}; the deployment starts when the freeze ends",
                        dep.environment
                    );
                    self.note_held(&dep, &why);
                    frozen.push(env);
                    continue;
                }
                // An automatic promotion queued behind others: the live release may have
                // moved on meanwhile, and it must still descend from it.
                if dep.kind == Kind::Auto
                    && let Some(why) = self.not_a_descendant(&release, &dep.environment).await?
                {
                    self.set_aside(&dep, S::Cancelled, &format!("cancelled: {why}"), &why)
                        .await?;
                    continue;
                }
                // Approved, then held (by a freeze, or behind others): its approvals must
                // still hold now, under the rules of now.
                if let Policy::Approval(rule) = &spec.policy
                    && let Some(why) = self.approvals_lapsed(&dep, rule).await?
                {
                    let line = format!("waiting again: {why}");
                    self.set_aside(&dep, S::AwaitingApproval, &line, &why)
                        .await?;
                    continue;
                }
            } else {
                if let Some(why) = self.rollback_lapsed(&dep, &release).await? {
                    self.set_aside(&dep, S::Cancelled, &format!("cancelled: {why}"), &why)
                        .await?;
                    continue;
                }
                // A rollback someone asked for before a freeze began was not asked of the
                // freeze's approvers: it waits for the end like the rest. (One asked for
                // during the freeze was checked then; the one after a failure goes.)
                if dep.requested_by.as_deref() != Some("ferry") {
                    let asked = DateTime::from_timestamp_millis(dep.created_at).unwrap_or_default();
                    if let Ok(d) = &rules[&dep.repository_id]
                        && let Some(spec) = d.environment(&dep.environment)
                        && let Some(why) = policy::frozen(&spec.freeze, Utc::now())
                        && policy::frozen(&spec.freeze, asked).is_none()
                    {
                        let why = format!(
                            "`{}` is {why}; this rollback was asked for before the freeze \
                             began: it starts when the freeze ends (an approver may ask for \
                             one now)",
                            dep.environment
                        );
                        self.note_held(&dep, &why);
                        continue;
                    }
                }
            }
            seen.push(env.clone());
            // An environment whose deployment (or its rollback) is being executed here
            // is left alone until that is done.
            if !self
                .busy
                .lock()
                .map(|mut b| b.insert(env.clone()))
                .unwrap_or(false)
            {
                continue;
            }
            let free = |me: &Self| {
                if let Ok(mut b) = me.busy.lock() {
                    b.remove(&env);
                }
            };
            let previous = self
                .store
                .live_deployment(&dep.repository_id, &dep.environment)
                .await;
            let config = self.config_snapshot(&dep).await;
            let (previous, config) = match (previous, config) {
                (Ok(p), Ok(c)) => (p, c),
                (Err(e), _) => {
                    free(self);
                    return Err(e.into());
                }
                (_, Err(e)) => {
                    free(self);
                    return Err(e);
                }
            };
            let started = self
                .store
                .start_deployment(
                    &dep.id,
                    S::Queued,
                    previous.as_ref().map(|p| p.release_id.as_str()),
                    &config,
                )
                .await;
            if !matches!(started, Ok(true)) {
                free(self); // another server holds the environment, or it moved
                started?;
                continue;
            }
            self.publish(&dep.id).await;
            let me = self.clone();
            tasks.spawn(async move {
                match me.store.deployment(&dep.id).await {
                    Ok(d) => {
                        if let Err(e) = me.execute(d, release).await {
                            tracing::error!("delivery: {e}");
                        }
                    }
                    Err(e) => tracing::error!("{e}"),
                }
                if let Ok(mut b) = me.busy.lock() {
                    b.remove(&env);
                }
                me.wake.notify_one();
            });
        }
        Ok(())
    }

    /// Moves a queued deployment that may not start to `to` with `why`, saying `line` in
    /// its log (once: when another server moved it first, nothing is said).
    async fn set_aside(&self, dep: &Deployment, to: S, line: &str, why: &str) -> Result<()> {
        if self
            .store
            .move_deployment(&dep.id, &[S::Queued], to, Some(why))
            .await?
        {
            self.open_log(dep).line(line);
            self.publish(&dep.id).await;
        }
        Ok(())
    }

    /// Why a queued deployment no longer has the approvals `rule` asks for (they
    /// expired while it waited, or the rule asks for more now), if it does not.
    async fn approvals_lapsed(
        &self,
        dep: &Deployment,
        rule: &ferry_config::delivery::ApprovalRule,
    ) -> Result<Option<String>> {
        let decisions = self.decisions_of(dep).await?;
        Ok(match policy::verdict(rule, &decisions, Utc::now()) {
            Verdict::Approved => None,
            Verdict::Rejected { by } => Some(format!("rejected by {by}")),
            Verdict::Waiting { have, need } => Some(format!(
                "it has {have} valid approval(s) of the {need} `{}` asks for now (an \
                 approval older than `expires` no longer counts): approve it again",
                dep.environment
            )),
        })
    }

    /// Says once, in the deployment's log, why it waits.
    fn note_held(&self, dep: &Deployment, why: &str) {
        let first = self
            .held
            .lock()
            .map(|mut h| h.insert(dep.id.clone()))
            .unwrap_or(false);
        if first {
            let mut log = self.open_log(dep);
            log.line(&format!("waiting: {why}"));
        }
    }

    /// Names and update times of the variables and secrets a deployment uses.
    async fn config_snapshot(&self, dep: &Deployment) -> Result<String> {
        let snapshot =
            ConfigSnapshot::current(&self.store, &dep.repository_id, &dep.environment).await?;
        Ok(snapshot.to_json())
    }

    fn open_log(&self, dep: &Deployment) -> DeployLog {
        DeployLog::open(&self.deployment_log(dep)).with_limit(self.log_limit)
    }

    /// The target of the release's deploy for the deployment's environment.
    fn target(&self, d: &Delivery, env: &str) -> std::result::Result<Arc<dyn Target>, String> {
        d.deploy_of(env)
            .map(|spec| Arc::from(self.targets.get(&spec.target)))
            .ok_or_else(|| format!("`{env}` has no deploy"))
    }

    /// Why a queued rollback may no longer go back to its release, if it may not: the
    /// release was pruned, or failed in the environment after the rollback was asked
    /// for (queued behind that deployment).
    async fn rollback_lapsed(&self, dep: &Deployment, release: &Release) -> Result<Option<String>> {
        if release.pruned_at.is_some() {
            return Ok(Some(format!(
                "release {} was pruned by the retention policy: its files are gone",
                release.name
            )));
        }
        let history = self
            .store
            .deployments(&dep.repository_id, Some(&dep.environment), 10_000)
            .await?;
        let failed_since = history.iter().any(|x| {
            x.id != dep.id
                && x.release_id == dep.release_id
                && matches!(x.status, S::Failed | S::RolledBack)
                && x.finished_at.is_some_and(|f| f >= dep.created_at)
        });
        Ok(failed_since.then(|| {
            format!(
                "release {} failed in `{}` after the rollback to it was asked for",
                release.name, dep.environment
            )
        }))
    }

    async fn execute(&self, dep: Deployment, release: Release) -> Result<()> {
        if dep.kind == Kind::Destroy {
            return self.execute_destroy(dep, release).await;
        }
        let name = format!("{}#{}", dep.environment, dep.number);
        let mut log = self.open_log(&dep);
        log.line(&format!(
            "deploying release {} (commit {}) to `{}`",
            release.name, release.commit_sha, dep.environment
        ));
        let d = delivery_of(&release)?;
        let target = self.target(&d, &dep.environment);
        let outcome = match (&target, Self::infra_of(&d, &dep.environment)) {
            (Ok(t), None) => {
                self.deploy(&dep, &release, &d, Some(t.as_ref()), &mut log)
                    .await
            }
            // The environment is provisioned first, with the release's Terraform.
            (Ok(t), Some(spec)) => {
                let provisioned = match self
                    .prepare(&dep, &release, &d, true, Purpose::Infra, &mut log)
                    .await
                {
                    Err(e) => Err(InfraFailure::untouched(e)),
                    Ok(prepared) => {
                        self.provision(&dep, &release, &spec, &prepared, &mut log)
                            .await
                    }
                };
                self.drop_infra_secret_files(&dep);
                match provisioned {
                    Ok(Provisioned::Applied) => {
                        self.deploy(&dep, &release, &d, Some(t.as_ref()), &mut log)
                            .await
                    }
                    Ok(Provisioned::Waits(why)) => {
                        return self.wait_for_approval(&dep, &why, &mut log).await;
                    }
                    Err(f) if !f.touched => {
                        return self.fail_untouched(&dep, &f.reason, &mut log).await;
                    }
                    Err(f) => Err(f.reason),
                }
            }
            (Err(e), _) => Err(e.clone()),
        };
        // Only a supervised process reads its secret files later; the other targets have
        // used them (or hold them in the container's environment) by now.
        if !target.as_ref().is_ok_and(|t| t.supervised()) {
            self.drop_secret_files(&dep);
        }
        let mut watched = None;
        let outcome = match (outcome, &target) {
            (Ok(probes), Ok(t)) => {
                self.store
                    .move_deployment(&dep.id, &[S::Deploying], S::Verifying, None)
                    .await?;
                self.publish(&dep.id).await;
                let verified = self
                    .verify(&dep, &d, t.as_ref(), &probes, &release.name, &mut log)
                    .await;
                watched = self.watched(&dep, &release, &d, t, probes);
                verified
            }
            (Ok(_), Err(e)) => Err(e.clone()),
            (Err(e), _) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let replaced = self
                    .store
                    .live_deployment(&dep.repository_id, &dep.environment)
                    .await?;
                // A rollback of a deployment that went down marks it rolled back as it
                // goes live (one transaction).
                let down = match (&replaced, dep.kind) {
                    (Some(r), Kind::Rollback) => self.went_down(r, &release.name).await?,
                    _ => None,
                };
                let rolled_back = replaced
                    .as_ref()
                    .zip(down.as_deref())
                    .map(|(r, why)| (r.id.as_str(), why));
                if !self
                    .store
                    .make_live_rolling_back(&dep.id, rolled_back)
                    .await?
                {
                    // Moved meanwhile (another server recovered it as interrupted): it
                    // is not live, and nothing follows from it.
                    let now = self.store.deployment(&dep.id).await?.status;
                    log.line(&format!(
                        "not made live: the deployment is {} now",
                        now.as_str()
                    ));
                    if let Ok(t) = &target {
                        t.tidy(&dep, &release.name, true, &mut log).await;
                    }
                    self.publish(&dep.id).await;
                    return Ok(());
                }
                log.line("live");
                if let Some(r) = replaced {
                    self.publish(&r.id).await;
                }
                self.publish(&dep.id).await;
                // Verified: healthy, and watched from now on.
                let live = self.store.deployment(&dep.id).await?;
                self.record_health(&live, Health::Healthy, None, &mut log)
                    .await;
                match watched {
                    Some(w) => self.start_watch(w),
                    None => self.stop_watch(&dep.repository_id, &dep.environment),
                }
                if let Ok(t) = &target {
                    t.tidy(&dep, &release.name, false, &mut log).await;
                }
                self.store
                    .audit(
                        Some(&dep.repository_id),
                        "ferry",
                        "deployment.live",
                        &name,
                        Some(&format!("release {}", release.name)),
                    )
                    .await?;
                if dep.kind != Kind::Rollback {
                    let rules = self.rules(&dep.repository_id).await?;
                    for next in policy::next_environments(&rules, &dep.environment) {
                        self.enter(&release, &rules, &next.name, Kind::Auto, None)
                            .await?;
                    }
                }
                Ok(())
            }
            Err(reason) => {
                // The reason is shown and audited: what it quotes (a probe's URL made
                // of a sensitive output, Terraform's error) is masked like the log.
                let reason =
                    String::from_utf8_lossy(&log.masker().mask(reason.as_bytes())).into_owned();
                log.line(&format!("failed: {reason}"));
                if let Ok(t) = &target {
                    t.tidy(&dep, &release.name, true, &mut log).await;
                }
                self.store
                    .move_deployment(
                        &dep.id,
                        &[S::Deploying, S::Verifying],
                        S::Failed,
                        Some(&reason),
                    )
                    .await?;
                self.publish(&dep.id).await;
                self.store
                    .audit(
                        Some(&dep.repository_id),
                        "ferry",
                        "deployment.failed",
                        &name,
                        Some(&reason),
                    )
                    .await?;
                let on_failure = d
                    .deploy_of(&dep.environment)
                    .map(|s| s.on_failure)
                    .unwrap_or_default();
                self.after_failure(&dep, &reason, on_failure, target.ok(), &mut log)
                    .await
            }
        }
    }

    /// An entry of the audit log by Ferry itself about `dep`.
    async fn audit_by_ferry(
        &self,
        dep: &Deployment,
        action: &str,
        detail: Option<&str>,
    ) -> ferry_store::Result<()> {
        let label = format!("{}#{}", dep.environment, dep.number);
        self.store
            .audit(Some(&dep.repository_id), "ferry", action, &label, detail)
            .await
    }

    /// Carries out a destroy (see [`Self::destroy`]): the destroy plan approved is
    /// applied, then what was live stops and the environment has nothing live.
    async fn execute_destroy(&self, dep: Deployment, release: Release) -> Result<()> {
        let mut log = self.open_log(&dep);
        log.line(&format!(
            "destroying `{}` with release {}'s Terraform",
            dep.environment, release.name
        ));
        let d = delivery_of(&release)?;
        let outcome = match Self::infra_of(&d, &dep.environment) {
            None => Err(InfraFailure::untouched(format!(
                "release {} has no `infra:` for `{}`",
                release.name, dep.environment
            ))),
            Some(spec) => match self
                .prepare(&dep, &release, &d, true, Purpose::Infra, &mut log)
                .await
            {
                Err(e) => Err(InfraFailure::untouched(e)),
                Ok(prepared) => {
                    self.provision(&dep, &release, &spec, &prepared, &mut log)
                        .await
                }
            },
        };
        self.drop_infra_secret_files(&dep);
        match outcome {
            Ok(Provisioned::Waits(why)) => self.wait_for_approval(&dep, &why, &mut log).await,
            Err(f) if !f.touched => self.fail_untouched(&dep, &f.reason, &mut log).await,
            Err(f) => {
                log.line(&format!("failed: {}", f.reason));
                self.store
                    .move_deployment(&dep.id, &[S::Deploying], S::Failed, Some(&f.reason))
                    .await?;
                self.publish(&dep.id).await;
                self.audit_by_ferry(&dep, "deployment.failed", Some(&f.reason))
                    .await?;
                Ok(())
            }
            Ok(Provisioned::Applied) => {
                let live = self
                    .store
                    .live_deployment(&dep.repository_id, &dep.environment)
                    .await?;
                self.stop_watch(&dep.repository_id, &dep.environment);
                if let Ok(target) = self.target(&d, &dep.environment) {
                    log.line("stopping what was live");
                    target.stop(&dep).await;
                }
                self.drop_secret_files(&dep);
                if self.store.finish_destroy(&dep.id).await? {
                    log.line("destroyed: nothing is live here now");
                    self.audit_by_ferry(
                        &dep,
                        "environment.destroy",
                        Some(&format!("release {}'s Terraform", release.name)),
                    )
                    .await?;
                }
                if let Some(l) = live {
                    self.publish(&l.id).await;
                }
                self.publish(&dep.id).await;
                Ok(())
            }
        }
    }

    /// Removes the secret files written for Terraform.
    fn drop_infra_secret_files(&self, dep: &Deployment) {
        let dir = layout::environment_dir(&self.secrets_root, &dep.repository_id, &dep.environment);
        let _ = std::fs::remove_dir_all(dir.join("infra"));
    }

    /// Removes the environment's secret files (written for the deployment).
    fn drop_secret_files(&self, dep: &Deployment) {
        let dir = layout::environment_dir(&self.secrets_root, &dep.repository_id, &dep.environment);
        let _ = std::fs::remove_dir_all(dir.join("secrets"));
    }

    /// A deployment whose Terraform plan needs approvals goes back to waiting for them.
    async fn wait_for_approval(
        &self,
        dep: &Deployment,
        why: &str,
        log: &mut DeployLog,
    ) -> Result<()> {
        log.line(&format!("waiting: {why}"));
        if self
            .store
            .move_deployment(&dep.id, &[S::Deploying], S::AwaitingApproval, Some(why))
            .await?
        {
            self.audit_by_ferry(dep, "deployment.awaiting_approval", Some(why))
                .await?;
        }
        self.publish(&dep.id).await;
        Ok(())
    }

    /// A deployment that failed before it changed anything (its Terraform plan, or the
    /// apply refused outright): failed, with what is live left as it is.
    async fn fail_untouched(
        &self,
        dep: &Deployment,
        reason: &str,
        log: &mut DeployLog,
    ) -> Result<()> {
        log.line(&format!("failed: {reason}"));
        log.line("nothing was changed: what is live stays");
        self.store
            .move_deployment(&dep.id, &[S::Deploying], S::Failed, Some(reason))
            .await?;
        self.publish(&dep.id).await;
        self.audit_by_ferry(dep, "deployment.failed", Some(reason))
            .await?;
        Ok(())
    }

    /// A failed deployment: back to the release that was live before, or stop.
    async fn after_failure(
        &self,
        dep: &Deployment,
        reason: &str,
        on_failure: OnFailure,
        target: Option<Arc<dyn Target>>,
        log: &mut DeployLog,
    ) -> Result<()> {
        let previous = match (&dep.previous_release_id, on_failure, dep.kind) {
            (Some(p), OnFailure::Rollback, kind) if kind != Kind::Rollback => p.clone(),
            _ => {
                // Nothing to go back to: the failed workload does not keep running.
                if self
                    .store
                    .live_deployment(&dep.repository_id, &dep.environment)
                    .await?
                    .is_none()
                {
                    self.stop_watch(&dep.repository_id, &dep.environment);
                    if let Some(t) = target {
                        t.stop(dep).await;
                    }
                } else {
                    self.restore_live(dep, log).await?;
                }
                return Ok(());
            }
        };
        let release = self.store.release(&dep.repository_id, &previous).await?;
        log.line(&format!("rolling back to release {}", release.name));
        let detail = format!(
            "after {}#{} failed: back to release {}",
            dep.environment, dep.number, release.name
        );
        let back = self.queue_rollback(dep, &release, &detail).await?;
        self.publish(&back.id).await;
        let config = self.config_snapshot(&back).await?;
        if self
            .store
            .start_deployment(&back.id, S::Queued, Some(&release.id), &config)
            .await?
        {
            self.publish(&back.id).await;
            let back = self.store.deployment(&back.id).await?;
            let release_name = release.name.clone();
            let back_id = back.id.clone();
            Box::pin(self.execute(back, release)).await?;
            // Only a rollback that went live rolled the failure back; one that failed
            // too leaves the deployment failed, and says so.
            let went_live = self.store.deployment(&back_id).await?.status == S::Live;
            let (status, detail) = if went_live {
                (
                    S::RolledBack,
                    format!("rolled back to release {release_name}"),
                )
            } else {
                (
                    S::Failed,
                    format!("the rollback to release {release_name} failed too"),
                )
            };
            self.store
                .move_deployment(
                    &dep.id,
                    &[S::Failed],
                    status,
                    Some(&format!("{reason} ({detail})")),
                )
                .await?;
            self.publish(&dep.id).await;
        }
        Ok(())
    }

    /// The live release's workload runs again (after a failed deployment without
    /// rollback to a target that replaced it).
    async fn restore_live(&self, dep: &Deployment, log: &mut DeployLog) -> Result<()> {
        if let Some(live) = self
            .store
            .live_deployment(&dep.repository_id, &dep.environment)
            .await?
        {
            let release = self
                .store
                .release(&dep.repository_id, &live.release_id)
                .await?;
            let d = delivery_of(&release)?;
            if let Ok(target) = self.target(&d, &dep.environment)
                && target.replaces_live()
            {
                log.line(&format!("starting the live release {} again", release.name));
                match self
                    .deploy(&live, &release, &d, Some(target.as_ref()), log)
                    .await
                {
                    Ok(probes) => {
                        if let Some(w) = self.watched(&live, &release, &d, &target, probes) {
                            self.start_watch(w);
                        }
                    }
                    Err(e) => log.line(&format!("cannot start it again: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Resolves the deployment's context (release files, variables, secrets) and deploys
    /// to the target (`None`: deploys nothing, e.g. to watch what runs already); returns
    /// the probes to verify with.
    async fn deploy(
        &self,
        dep: &Deployment,
        release: &Release,
        d: &Delivery,
        target: Option<&dyn Target>,
        log: &mut DeployLog,
    ) -> std::result::Result<Vec<verify::Probe>, String> {
        let host = target.is_some_and(|t| t.runs_host_code());
        let prepared = self
            .prepare(dep, release, d, host, Purpose::Deploy, log)
            .await?;
        let action = match target {
            Some(t) => Action::Deploy(t),
            None => Action::Nothing,
        };
        self.deploy_prepared(dep, release, d, action, prepared, log)
            .await
    }

    /// What deploying a release to an environment needs, resolved: its files, the
    /// environment's variables and secrets (masked in `log` from now on), the
    /// environment of what runs, and the sandbox of host code (when `host_code`, or the
    /// probes run commands).
    async fn prepare(
        &self,
        dep: &Deployment,
        release: &Release,
        d: &Delivery,
        host_code: bool,
        purpose: Purpose,
        log: &mut DeployLog,
    ) -> std::result::Result<Prepared, String> {
        let spec = d
            .deploy_of(&dep.environment)
            .ok_or_else(|| format!("`{}` has no deploy", dep.environment))?;
        let env_dir = layout::environment_dir(&self.root, &dep.repository_id, &dep.environment);
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for v in self
            .store
            .variables(&dep.repository_id, Some(&dep.environment))
            .await
            .map_err(|e| e.to_string())?
        {
            vars.insert(v.name, v.value); // the environment's come after the repository's
        }
        let secrets = self
            .store
            .open_secrets(&self.key, &dep.repository_id, &dep.environment)
            .await
            .map_err(|e| e.to_string())?;
        log.set_masker(Masker::new(secrets.iter().map(|(_, v)| v.as_slice())));
        let cas = self.cas.clone();
        let (rel, dir_env) = (release.clone(), env_dir.clone());
        let release_dir =
            tokio::task::spawn_blocking(move || layout::materialize(&cas, &rel, &dir_env))
                .await
                .map_err(|e| e.to_string())??;
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
            ("HOME".into(), release_dir.display().to_string()),
            ("FERRY_RELEASE".into(), release.name.clone()),
            (
                "FERRY_RELEASE_DIR".into(),
                release_dir.display().to_string(),
            ),
            ("FERRY_COMMIT_SHA".into(), release.commit_sha.clone()),
            ("FERRY_ENVIRONMENT".into(), dep.environment.clone()),
        ];
        env.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        layout::own_secrets_root(&self.secrets_root)?;
        // Terraform's secret files are its own: the live process keeps reading the
        // environment's while a new release is planned.
        let secrets_base =
            layout::environment_dir(&self.secrets_root, &dep.repository_id, &dep.environment);
        let secrets_base = match purpose {
            Purpose::Deploy => secrets_base,
            Purpose::Infra => secrets_base.join("infra"),
        };
        let secrets_dir = layout::write_secret_files(&secrets_base, &secrets)?;
        env.push((
            "FERRY_SECRETS_DIR".into(),
            secrets_dir.display().to_string(),
        ));
        for (name, value) in &secrets {
            env.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
        }
        let probes_run_commands = spec
            .verify
            .iter()
            .flat_map(|v| &v.probes)
            .any(|p| matches!(p, Check::Command { .. }));
        let spawner = match &self.sandbox {
            Some(sandbox) if host_code || probes_run_commands => {
                let cell = jail::Cell {
                    release_dir: release_dir.clone(),
                    secrets_dir: secrets_dir.clone(),
                    tmp: env_dir.join("tmp"),
                };
                env.push(("TMPDIR".into(), cell.tmp.display().to_string()));
                let (sandbox, root) = (sandbox.clone(), self.root.clone());
                let spawner =
                    tokio::task::spawn_blocking(move || jail::lock(&sandbox, &root, &cell))
                        .await
                        .map_err(|e| e.to_string())??;
                Some(spawner)
            }
            _ => None,
        };
        Ok(Prepared {
            env_dir,
            release_dir,
            secrets_dir,
            vars,
            secrets,
            env,
            spawner,
        })
    }

    /// [`Self::deploy`] with its context resolved.
    async fn deploy_prepared(
        &self,
        dep: &Deployment,
        release: &Release,
        d: &Delivery,
        action: Action<'_>,
        prepared: Prepared,
        log: &mut DeployLog,
    ) -> std::result::Result<Vec<verify::Probe>, String> {
        let spec = d
            .deploy_of(&dep.environment)
            .ok_or_else(|| format!("`{}` has no deploy", dep.environment))?;
        // The outputs of the Terraform applied for this deployment, if any.
        let outputs = self.infra_outputs(dep).await?;
        if !outputs.sensitive.is_empty() {
            log.set_masker(Masker::new(
                prepared
                    .secrets
                    .iter()
                    .map(|(_, v)| v.as_slice())
                    .chain(outputs.secret_values().map(str::as_bytes)),
            ));
        }
        let Prepared {
            env_dir,
            release_dir,
            secrets_dir,
            vars,
            secrets,
            env,
            spawner,
        } = prepared;
        let mut ctx = DeployContext {
            deployment: dep,
            release,
            env_dir,
            release_dir,
            secrets_dir,
            vars,
            secrets,
            env,
            infra_outputs: outputs.values,
            config: spec.config.clone(),
            log,
            spawner,
            timeout: self.script_timeout,
        };
        match action {
            Action::Deploy(target) => target.deploy(&mut ctx).await?,
            Action::Restore(target) => target.restore(&mut ctx).await?,
            Action::Nothing => {}
        }
        let mut probes = Vec::new();
        for p in spec.verify.iter().flat_map(|v| &v.probes) {
            let check = match p {
                Check::Http { url, status, body } => Check::Http {
                    url: ctx.eval(url)?,
                    status: *status,
                    body: body.clone(),
                },
                Check::Tcp { address } => Check::Tcp {
                    address: ctx.eval(address)?,
                },
                Check::Command { run } => Check::Command {
                    run: ctx.eval(run)?,
                },
            };
            probes.push(
                verify::Probe::new(check, ctx.release_dir.clone(), ctx.env.clone())
                    .jailed(ctx.spawner.clone()),
            );
        }
        Ok(probes)
    }

    /// The `infra:` of the deployment's environment in its release, if any.
    fn infra_of(d: &Delivery, env: &str) -> Option<ferry_config::delivery::InfraSpec> {
        d.environment(env).and_then(|e| e.infra.clone())
    }

    /// The outputs of the Terraform applied for `dep` (none without `infra:`).
    async fn infra_outputs(&self, dep: &Deployment) -> std::result::Result<infra::Outputs, String> {
        let plan = self
            .store
            .infra_plan(&dep.id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(sealed) = plan
            .filter(|p| p.info.applied_at.is_some() && !p.info.destroy)
            .and_then(|p| p.outputs)
        else {
            return Ok(infra::Outputs::default());
        };
        let plain = self
            .key
            .open(&sealed, infra::OUTPUTS_CONTEXT)
            .map_err(|e| {
                format!("the Terraform outputs of this deployment cannot be opened: {e}")
            })?;
        serde_json::from_slice(&plain).map_err(|e| e.to_string())
    }

    /// A Terraform session in the release's copy of the module `spec.dir`, with a new
    /// credential of the deployment for its environment's state (ended by
    /// `end_infra_credentials`).
    async fn terraform_session<'a>(
        &'a self,
        dep: &Deployment,
        release: &Release,
        spec: &ferry_config::delivery::InfraSpec,
        prepared: &'a Prepared,
        log: &mut DeployLog,
    ) -> std::result::Result<infra::Session<'a>, String> {
        let endpoint = self
            .terraform
            .endpoint()
            .ok_or("this server does not know its own address for Terraform's state backend yet")?;
        let module = PathBuf::from(infra::sealed_path(&spec.dir.value));
        if !prepared.release_dir.join(&module).is_dir() {
            return Err(format!(
                "release {} holds no Terraform code for `infra.dir` {} (releases sealed \
                 before `infra:` was added hold none: promote a newer release)",
                release.name, spec.dir.value
            ));
        }
        let no_outputs = BTreeMap::new();
        let scope = crate::target::Scope {
            vars: &prepared.vars,
            release,
            release_dir: &prepared.release_dir,
            environment: &dep.environment,
            outputs: &no_outputs,
        };
        let mut infra_vars = Vec::new();
        for (name, value) in &spec.vars {
            let value = crate::target::eval(value, &scope)
                .map_err(|e| format!("`infra.vars.{name}`: {e}"))?;
            infra_vars.push((name.clone(), value));
        }
        // Two credentials of this deployment for this environment: one that reads and
        // locks the state (plans), one that may write it (the apply of the plan
        // approved). Long enough for a slow apply; ended as soon as the deployment is
        // done with Terraform (and by a starting server).
        let (read, read_hash) = infra::new_credential();
        let (write, write_hash) = infra::new_credential();
        let lasts = self
            .script_timeout
            .map(|t| 4 * t + Duration::from_secs(600))
            .unwrap_or(Duration::from_secs(6 * 3600));
        let expires =
            ferry_store::now_ms() + i64::try_from(lasts.as_millis()).unwrap_or(i64::MAX / 2);
        for (hash, may_write) in [(&read_hash, false), (&write_hash, true)] {
            let grant = ferry_store::InfraGrant {
                repository_id: dep.repository_id.clone(),
                environment: dep.environment.clone(),
                deployment_id: Some(dep.id.clone()),
                may_write,
            };
            self.store
                .create_infra_credential(hash, &grant, expires)
                .await
                .map_err(|e| e.to_string())?;
        }
        let masker = Masker::new(
            prepared
                .secrets
                .iter()
                .map(|(_, v)| v.as_slice())
                .chain([read.as_bytes(), write.as_bytes()]),
        );
        log.set_masker(masker.clone());
        let mut env = prepared.env.clone();
        env.extend([
            ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
            ("TF_INPUT".to_string(), "0".to_string()),
            ("CHECKPOINT_DISABLE".to_string(), "1".to_string()),
        ]);
        env.extend(infra::tf_vars(
            &prepared.vars,
            &prepared.secrets,
            &infra_vars,
        ));
        let mut apply_env = env.clone();
        env.extend(infra::backend_env(
            endpoint,
            &dep.repository_id,
            &dep.environment,
            &read,
        ));
        let backend = infra::backend_env(endpoint, &dep.repository_id, &dep.environment, &write);
        let address = backend
            .iter()
            .find(|(k, _)| k == "TF_HTTP_ADDRESS")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        apply_env.extend(backend);
        Ok(infra::Session {
            program: &self.terraform.program,
            root: prepared.release_dir.clone(),
            module,
            source: spec.dir.value.clone(),
            env,
            apply_env,
            spawner: prepared.spawner.as_deref(),
            timeout: self.script_timeout,
            stop: log.stop(),
            masker,
            address,
            initialized: Default::default(),
            restored: Default::default(),
            init_cache: Some(infra::InitCache {
                dir: prepared.env_dir.join("infra-init"),
                key: self.key.clone(),
            }),
        })
    }

    /// The deployment is done with Terraform: its credentials end, and a lock they
    /// left (Terraform killed on a time-out or a cancel) is let go.
    async fn done_with_terraform(&self, dep: &Deployment) {
        if let Err(e) = self.store.end_infra_credentials(&dep.id).await {
            tracing::warn!("cannot end the Terraform credentials of {}: {e}", dep.id);
        }
        match self.store.unlock_infra_of(Some(&dep.id)).await {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "let go of the state lock of `{}` that deployment {}#{} left",
                dep.environment,
                dep.environment,
                dep.number
            ),
            Err(e) => tracing::warn!("cannot let go of the locks of {}: {e}", dep.id),
        }
    }

    /// Plans the deployment's Terraform (a destroy with `destroy`) and records the plan;
    /// says in the log what it changes.
    async fn make_plan(
        &self,
        dep: &Deployment,
        session: &infra::Session<'_>,
        destroy: bool,
        log: &mut DeployLog,
    ) -> std::result::Result<ferry_store::InfraPlan, String> {
        let base = self
            .store
            .latest_infra_version(&dep.repository_id, &dep.environment)
            .await
            .map_err(|e| e.to_string())?;
        log.line(if destroy {
            "terraform: planning the destroy of the environment"
        } else {
            "terraform: planning"
        });
        session.init(log).await.map_err(|f| f.reason)?;
        let (bytes, summary) = session.plan(destroy, log).await.map_err(|f| f.reason)?;
        use sha2::Digest as _;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let sealed = self
            .key
            .seal(&bytes, infra::PLAN_CONTEXT)
            .map_err(|e| e.to_string())?;
        let summary_json = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        let plan = self
            .store
            .put_infra_plan(&ferry_store::NewPlan {
                deployment_id: &dep.id,
                repository_id: &dep.repository_id,
                environment: &dep.environment,
                sha256: &sha,
                sealed: &sealed,
                summary: &summary_json,
                base_version: base,
                destroy,
            })
            .await
            .map_err(|e| e.to_string())?;
        log.line(&format!(
            "terraform: plan {} ({}){}",
            &sha[..12],
            summary.counts(),
            if summary.destroys() {
                format!(
                    "; it destroys {}",
                    summary
                        .delete
                        .iter()
                        .chain(&summary.replace)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        ));
        Ok(plan)
    }

    /// Provisions the deployment's environment with the release's Terraform: plans (or
    /// takes the plan made while it waited, if the state has not moved since), asks for
    /// the approvals the plan needs, and applies exactly the plan approved.
    async fn provision(
        &self,
        dep: &Deployment,
        release: &Release,
        spec: &ferry_config::delivery::InfraSpec,
        prepared: &Prepared,
        log: &mut DeployLog,
    ) -> std::result::Result<Provisioned, InfraFailure> {
        let outcome = match self
            .terraform_session(dep, release, spec, prepared, log)
            .await
        {
            Ok(session) => {
                self.provision_in(dep, &session, &prepared.secrets, log)
                    .await
            }
            Err(e) => Err(InfraFailure::untouched(e)),
        };
        self.done_with_terraform(dep).await;
        outcome
    }

    async fn provision_in(
        &self,
        dep: &Deployment,
        session: &infra::Session<'_>,
        secrets: &[(String, Vec<u8>)],
        log: &mut DeployLog,
    ) -> std::result::Result<Provisioned, InfraFailure> {
        let store = |e: ferry_store::Error| InfraFailure::untouched(e.to_string());
        let rules = self
            .rules(&dep.repository_id)
            .await
            .map_err(|e| InfraFailure::untouched(e.to_string()))?;
        let policy = rules
            .environment(&dep.environment)
            .map(|e| e.policy.clone())
            .unwrap_or(Policy::Auto);
        let mut replanned = false;
        loop {
            let base_now = self
                .store
                .latest_infra_version(&dep.repository_id, &dep.environment)
                .await
                .map_err(store)?;
            let current = self.store.infra_plan(&dep.id).await.map_err(store)?;
            let plan = match current {
                Some(p) if p.info.applied_at.is_none() && p.info.base_version == base_now => p,
                other => {
                    if let Some(p) = other.filter(|p| p.info.applied_at.is_none()) {
                        log.line(&format!(
                            "terraform: the state changed since plan {} was made (version \
                             {} then, {} now): planning again",
                            &p.info.sha256[..12.min(p.info.sha256.len())],
                            version_text(p.info.base_version),
                            version_text(base_now)
                        ));
                    }
                    let destroy = dep.kind == Kind::Destroy;
                    self.make_plan(dep, session, destroy, log)
                        .await
                        .map_err(InfraFailure::untouched)?;
                    self.store
                        .infra_plan(&dep.id)
                        .await
                        .map_err(store)?
                        .ok_or_else(|| InfraFailure::untouched("the plan just made is gone"))?
                }
            };
            let summary: infra::PlanSummary =
                serde_json::from_str(&plan.info.summary).unwrap_or_default();
            if let Some(rule) = infra::gate(
                &policy,
                dep.kind,
                &summary,
                plan.info.destroy,
                destroy_needs_approval(&rules, &dep.environment),
            ) {
                let decisions = self
                    .decisions_of_plan(dep, &plan.info.sha256)
                    .await
                    .map_err(store)?;
                match policy::verdict(&rule, &decisions, Utc::now()) {
                    Verdict::Approved => {}
                    Verdict::Rejected { by } => {
                        return Err(InfraFailure::untouched(format!("rejected by {by}")));
                    }
                    Verdict::Waiting { have, need } => {
                        let what = if plan.info.destroy {
                            "destroys the environment".to_string()
                        } else if summary.destroys() && !matches!(policy, Policy::Approval(_)) {
                            format!(
                                "destroys {}",
                                summary
                                    .delete
                                    .iter()
                                    .chain(&summary.replace)
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        } else {
                            summary.counts()
                        };
                        return Ok(Provisioned::Waits(format!(
                            "the Terraform plan {} {what}: it has {have} of the {need} \
                             approval(s) it needs",
                            &plan.info.sha256[..12]
                        )));
                    }
                }
            }
            let bytes = self
                .key
                .open(&plan.sealed, infra::PLAN_CONTEXT)
                .map_err(|e| InfraFailure::untouched(format!("the plan cannot be opened: {e}")))?;
            use sha2::Digest as _;
            if hex::encode(sha2::Sha256::digest(&bytes)) != plan.info.sha256 {
                return Err(InfraFailure::untouched(
                    "the saved plan is not the plan approved (its SHA-256 differs)",
                ));
            }
            log.line(&format!(
                "terraform: applying plan {}",
                &plan.info.sha256[..12]
            ));
            if let Err(f) = session.init(log).await {
                return Err(InfraFailure::untouched(f.reason));
            }
            match session.apply(&bytes, log).await {
                Ok(()) => {
                    // The outputs, from the state the apply wrote to Ferry.
                    let outputs = match self
                        .store
                        .infra_state(&dep.repository_id, &dep.environment, None)
                        .await
                        .map_err(store)?
                    {
                        Some(st) if !st.info.deleted => {
                            let plain = self
                                .key
                                .open(&st.sealed, infra::STATE_CONTEXT)
                                .map_err(|e| InfraFailure::untouched(e.to_string()))?;
                            serde_json::from_slice::<serde_json::Value>(&plain)
                                .map(|v| infra::state_outputs(&v))
                                .unwrap_or_default()
                        }
                        _ => infra::Outputs::default(),
                    };
                    if !outputs.sensitive.is_empty() {
                        log.set_masker(Masker::new(
                            secrets
                                .iter()
                                .map(|(_, v)| v.as_slice())
                                .chain(outputs.secret_values().map(str::as_bytes)),
                        ));
                    }
                    let json = serde_json::to_vec(&outputs)
                        .map_err(|e| InfraFailure::untouched(e.to_string()))?;
                    let sealed = self
                        .key
                        .seal(&json, infra::OUTPUTS_CONTEXT)
                        .map_err(store)?;
                    self.store
                        .infra_plan_applied(&plan.info.id, &sealed)
                        .await
                        .map_err(store)?;
                    log.line(&format!(
                        "terraform: applied; outputs: {}",
                        if outputs.values.is_empty() {
                            "none".to_string()
                        } else {
                            outputs
                                .values
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ));
                    return Ok(Provisioned::Applied);
                }
                Err(f) if f.stale_plan() && !replanned => {
                    // The state moved under the plan: plan again (and ask again, where
                    // the plan needs approvals).
                    replanned = true;
                    let destroy = plan.info.destroy;
                    log.line("terraform: the saved plan is stale: planning again");
                    self.make_plan(dep, session, destroy, log)
                        .await
                        .map_err(InfraFailure::untouched)?;
                }
                Err(f) => {
                    // Refused the lock: the apply changed nothing.
                    let touched = !f.lock_refused();
                    return Err(InfraFailure {
                        reason: f.reason,
                        touched,
                    });
                }
            }
        }
    }

    /// The decisions on `dep` that count: for a deployment with a Terraform plan, only
    /// those of its current plan.
    async fn decisions_of(&self, dep: &Deployment) -> ferry_store::Result<Vec<Decision>> {
        match self.store.infra_plan(&dep.id).await? {
            Some(p) => self.decisions_of_plan(dep, &p.info.sha256).await,
            None => Ok(decisions(self.store.approvals(&dep.id).await?)),
        }
    }

    /// The decisions on `dep` of the plan `sha256` (the one about to be applied).
    async fn decisions_of_plan(
        &self,
        dep: &Deployment,
        sha256: &str,
    ) -> ferry_store::Result<Vec<Decision>> {
        let approvals = self.store.approvals(&dep.id).await?;
        Ok(decisions(
            approvals
                .into_iter()
                .filter(|a| a.plan_sha256.as_deref() == Some(sha256))
                .collect(),
        ))
    }

    /// Plans the Terraform of each deployment waiting for approval in an environment
    /// with `infra:`, so that approvers see what it changes; plans again when the state
    /// moved since (approvals of the old plan no longer count). A plan that fails fails
    /// the deployment (nothing was changed).
    async fn plan_waiting(&self, tasks: &mut tokio::task::JoinSet<()>) -> Result<()> {
        let waiting = self.store.deployments_in(&[S::AwaitingApproval]).await?;
        if let Ok(mut planned) = self.planned.lock() {
            planned.retain(|id, _| waiting.iter().any(|w| &w.id == id));
        }
        for dep in waiting {
            let mark = self
                .planned
                .lock()
                .ok()
                .and_then(|p| p.get(&dep.id).copied());
            if mark == Some(Planned::NoInfra) {
                continue;
            }
            let env = (dep.repository_id.clone(), dep.environment.clone());
            if self.is_busy(&env.0, &env.1) {
                continue;
            }
            let base_now = self
                .store
                .latest_infra_version(&dep.repository_id, &dep.environment)
                .await?;
            if mark == Some(Planned::At(base_now)) {
                continue;
            }
            let release = self
                .store
                .release(&dep.repository_id, &dep.release_id)
                .await?;
            let d = delivery_of(&release)?;
            let Some(spec) = Self::infra_of(&d, &dep.environment) else {
                if let Ok(mut p) = self.planned.lock() {
                    p.insert(dep.id.clone(), Planned::NoInfra);
                }
                continue;
            };
            // A plan made earlier (before a restart) against this state still holds.
            if let Some(p) = self.store.infra_plan(&dep.id).await?
                && p.info.applied_at.is_none()
                && p.info.base_version == base_now
            {
                if let Ok(mut planned) = self.planned.lock() {
                    planned.insert(dep.id.clone(), Planned::At(base_now));
                }
                continue;
            }
            if !self
                .busy
                .lock()
                .map(|mut b| b.insert(env.clone()))
                .unwrap_or(false)
            {
                continue;
            }
            let me = self.clone();
            tasks.spawn(async move {
                let mut log = me.open_log(&dep);
                let planned = async {
                    let prepared = me
                        .prepare(&dep, &release, &d, true, Purpose::Infra, &mut log)
                        .await?;
                    let session = me
                        .terraform_session(&dep, &release, &spec, &prepared, &mut log)
                        .await?;
                    let destroy = dep.kind == Kind::Destroy;
                    me.make_plan(&dep, &session, destroy, &mut log).await
                }
                .await;
                me.done_with_terraform(&dep).await;
                me.drop_infra_secret_files(&dep);
                match planned {
                    Ok(plan) => {
                        if let Ok(mut p) = me.planned.lock() {
                            p.insert(dep.id.clone(), Planned::At(plan.base_version));
                        }
                        log.line("waiting for approval of this plan");
                    }
                    Err(why) => {
                        let reason = format!("the Terraform plan failed: {why}");
                        log.line(&format!("failed: {reason}"));
                        let moved = me
                            .store
                            .move_deployment(
                                &dep.id,
                                &[S::AwaitingApproval],
                                S::Failed,
                                Some(&reason),
                            )
                            .await;
                        if matches!(moved, Ok(true)) {
                            let _ = me
                                .audit_by_ferry(&dep, "deployment.failed", Some(&reason))
                                .await;
                        }
                    }
                }
                me.publish(&dep.id).await;
                if let Ok(mut b) = me.busy.lock() {
                    b.remove(&env);
                }
                me.wake.notify_one();
            });
        }
        Ok(())
    }

    /// What the health watch of a deployment that went live looks at (`None`: its
    /// environment's `watch` is off).
    fn watched(
        &self,
        dep: &Deployment,
        release: &Release,
        d: &Delivery,
        target: &Arc<dyn Target>,
        probes: Vec<verify::Probe>,
    ) -> Option<Watched> {
        let spec = d.deploy_of(&dep.environment)?;
        spec.watch.enabled.then(|| Watched {
            deployment: dep.clone(),
            release: release.name.clone(),
            probes,
            target: target.clone(),
            interval: spec.watch.interval(),
            failures: spec.watch.failures(),
            rollback: spec.on_unhealthy == OnUnhealthy::Rollback,
        })
    }

    /// Watches the environment's live deployment from now on (in place of what watched
    /// it before).
    fn start_watch(&self, w: Watched) {
        let key = (
            w.deployment.repository_id.clone(),
            w.deployment.environment.clone(),
        );
        let stop = CancellationToken::new();
        let Ok(mut all) = self.watches.lock() else {
            return;
        };
        let watching = Watching {
            deployment_id: w.deployment.id.clone(),
            stop: stop.clone(),
        };
        if let Some(old) = all.insert(key, watching) {
            old.stop.cancel();
        }
        let me = self.clone();
        tokio::spawn(async move { me.watch(w, stop).await });
    }

    /// What the workload of a live deployment uses now (`None`: its target cannot
    /// tell, or its release does not read).
    pub async fn workload(&self, dep: &Deployment) -> Option<crate::supervisor::Workload> {
        let fresh = self.sampled.lock().ok().and_then(|s| {
            s.get(&dep.id)
                .filter(|(at, _)| at.elapsed() < WORKLOAD_FRESH)
                .map(|(_, w)| w.clone())
        });
        if let Some(w) = fresh {
            return w;
        }
        let w = self.sample_workload(dep).await;
        if let Ok(mut s) = self.sampled.lock() {
            s.retain(|_, (at, _)| at.elapsed() < WORKLOAD_FRESH);
            s.insert(dep.id.clone(), (Instant::now(), w.clone()));
        }
        w
    }

    async fn sample_workload(&self, dep: &Deployment) -> Option<crate::supervisor::Workload> {
        let release = self
            .store
            .release(&dep.repository_id, &dep.release_id)
            .await
            .ok()?;
        let d = delivery_of(&release).ok()?;
        let target = self.target(&d, &dep.environment).ok()?;
        target.workload(dep, &release.name).await
    }

    /// The environment's health watch ends (nothing is live there any more).
    fn stop_watch(&self, repository_id: &str, environment: &str) {
        if let Ok(mut all) = self.watches.lock()
            && let Some(w) = all.remove(&(repository_id.to_string(), environment.to_string()))
        {
            w.stop.cancel();
        }
    }

    /// The deployment each environment's health watch looks at (repository id,
    /// environment, deployment id).
    pub fn watched_deployments(&self) -> Vec<(String, String, String)> {
        self.watches
            .lock()
            .map(|all| {
                all.iter()
                    .map(|((r, e), w)| (r.clone(), e.clone(), w.deployment_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_busy(&self, repository_id: &str, environment: &str) -> bool {
        self.busy
            .lock()
            .is_ok_and(|b| b.contains(&(repository_id.to_string(), environment.to_string())))
    }

    /// The health watch of one live deployment: a check every interval until `stop`.
    async fn watch(&self, w: Watched, stop: CancellationToken) {
        let (repo, env) = (&w.deployment.repository_id, &w.deployment.environment);
        let http = match health::client(&self.ca) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot watch `{env}`: {e}");
                return;
            }
        };
        let mut ticker = tokio::time::interval_at(health::next_beat(w.interval), w.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut failed, mut last, mut acted) = (0u32, None::<Health>, false);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            // A deployment of the environment is under way: it replaces the workload.
            if self.is_busy(repo, env) {
                continue;
            }
            let result = tokio::select! {
                r = w.check(&http) => r,
                _ = stop.cancelled() => return,
            };
            if self.is_busy(repo, env) {
                continue;
            }
            failed = if result.is_ok() {
                0
            } else {
                failed.saturating_add(1)
            };
            let state = health::judge(failed, w.failures);
            let reason = result.err();
            if last != Some(state) {
                let mut log = self.open_log(&w.deployment);
                if !self
                    .record_health(&w.deployment, state, reason.as_deref(), &mut log)
                    .await
                {
                    continue; // not recorded: tried again at the next check
                }
                last = Some(state);
            }
            match state {
                Health::Down if !acted => {
                    acted = true;
                    if w.rollback
                        && let Err(e) = self
                            .roll_back_unhealthy(&w.deployment, reason.as_deref().unwrap_or(""))
                            .await
                    {
                        tracing::error!("cannot roll `{env}` back: {e}");
                    }
                }
                Health::Healthy => acted = false,
                _ => {}
            }
        }
    }

    /// Records the deployment's environment as `state`; a change is written to the
    /// deployment's log, logged and told to listeners. Whether it was recorded.
    async fn record_health(
        &self,
        dep: &Deployment,
        state: Health,
        reason: Option<&str>,
        log: &mut DeployLog,
    ) -> bool {
        let (repo, env) = (&dep.repository_id, &dep.environment);
        match self
            .store
            .set_health(repo, env, &dep.id, state, reason)
            .await
        {
            Ok(Some(change)) => {
                let line = match reason {
                    Some(why) => format!("health: {}: {why}", state.as_str()),
                    None => format!("health: {}", state.as_str()),
                };
                log.line(&line);
                tracing::info!(
                    repository = %repo,
                    environment = %env,
                    deployment = dep.number,
                    from = change.from_state.map(Health::as_str),
                    to = state.as_str(),
                    reason,
                    "environment health changed"
                );
                self.tell(DeliveryEvent::Health { change });
                true
            }
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("cannot record the health of `{env}`: {e}");
                false
            }
        }
    }

    /// The environment of `dep`, live, went down under `on_unhealthy: rollback`: a
    /// rollback to the release before it is queued (unless it is a rollback itself,
    /// there is nothing before it, or a rollback is already on its way).
    async fn roll_back_unhealthy(&self, dep: &Deployment, reason: &str) -> Result<()> {
        let dep = self.store.deployment(&dep.id).await?;
        if dep.status != S::Live {
            return Ok(());
        }
        let mut log = self.open_log(&dep);
        let previous = match (&dep.previous_release_id, dep.kind) {
            (_, Kind::Rollback) => {
                log.line("down: it is a rollback itself, so it is not rolled back");
                return Ok(());
            }
            (None, _) => {
                log.line("down: there is no earlier release to roll back to");
                return Ok(());
            }
            (Some(p), _) => p.clone(),
        };
        let pending = self.store.deployments_in(ACTIVE).await?;
        if pending.iter().any(|p| {
            p.repository_id == dep.repository_id
                && p.environment == dep.environment
                && p.kind == Kind::Rollback
        }) {
            return Ok(());
        }
        let release = self.store.release(&dep.repository_id, &previous).await?;
        if release.pruned_at.is_some() {
            log.line(&format!(
                "down: release {} is pruned, so it cannot be rolled back to",
                release.name
            ));
            return Ok(());
        }
        log.line(&format!(
            "down: {reason}; rolling back to release {}",
            release.name
        ));
        let detail = format!(
            "`{}` went down with {}#{} live ({reason}): back to release {}",
            dep.environment, dep.environment, dep.number, release.name
        );
        let back = self.queue_rollback(&dep, &release, &detail).await?;
        self.publish(&back.id).await;
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a rollback of `dep`'s environment to `release`, asked for by Ferry, with
    /// why in the audit log.
    async fn queue_rollback(
        &self,
        dep: &Deployment,
        release: &Release,
        detail: &str,
    ) -> Result<Deployment> {
        let back = self
            .store
            .create_deployment(
                &dep.repository_id,
                &dep.environment,
                &release.id,
                Kind::Rollback,
                S::Queued,
                Some("ferry"),
            )
            .await?;
        self.store
            .audit(
                Some(&dep.repository_id),
                "ferry",
                "deployment.rollback",
                &format!("{}#{}", back.environment, back.number),
                Some(detail),
            )
            .await?;
        Ok(back)
    }

    /// A rollback to release `to` is about to replace `live`: if `live` is down, why it
    /// is rolled back (a failed change, for DORA).
    async fn went_down(&self, live: &Deployment, to: &str) -> Result<Option<String>> {
        let h = self
            .store
            .health(&live.repository_id, &live.environment)
            .await?;
        Ok(
            h.filter(|h| h.deployment_id == live.id && h.state == Health::Down)
                .map(|h| {
                    format!(
                        "went down: {} (rolled back to release {to})",
                        h.reason.as_deref().unwrap_or("its checks failed")
                    )
                }),
        )
    }

    async fn verify(
        &self,
        dep: &Deployment,
        d: &Delivery,
        target: &dyn Target,
        probes: &[verify::Probe],
        release: &str,
        log: &mut DeployLog,
    ) -> std::result::Result<(), String> {
        let watch = target.watch(dep, release).await;
        let gone = move || watch();
        let Some(v) = d
            .deploy_of(&dep.environment)
            .and_then(|s| s.verify.as_ref())
        else {
            // Without probes, the workload still has to stay up for a moment.
            log.line("no verification configured: checking that the workload stays up");
            tokio::time::sleep(SETTLE).await;
            return match gone() {
                Some(why) => Err(why),
                None => Ok(()),
            };
        };
        let window = v
            .window
            .unwrap_or(ferry_config::delivery::Verify::DEFAULT_WINDOW);
        let interval = v
            .interval
            .unwrap_or(ferry_config::delivery::Verify::DEFAULT_INTERVAL);
        log.line(&format!("verifying for {}s", window.as_secs_f32()));
        let cancel = CancellationToken::new();
        let result = verify::verify(probes, window, interval, &self.ca, gone, &cancel).await;
        // What command probes left running, even outside their groups, ends with the
        // verification (a supervised process shares their sandbox: it is left alone).
        if !target.supervised()
            && let Some(spawner) = probes.iter().find_map(|p| p.spawner.as_ref())
        {
            spawner.sweep().await;
        }
        if result.is_ok() {
            log.line("verified");
        }
        result
    }
}

/// Stored approvals as the policy weighs them.
/// Whether a plan that destroys waits for an approval in `env` where promotion is
/// automatic: the rules' say (the default branch's `infra.destroy`, never the
/// release's own), and yes where they say nothing.
fn destroy_needs_approval(rules: &Delivery, env: &str) -> bool {
    rules
        .environment(env)
        .and_then(|e| e.infra.as_ref())
        .is_none_or(|i| i.destroy_needs_approval)
}

/// A state version for people.
fn version_text(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

fn decisions(approvals: Vec<ferry_store::Approval>) -> Vec<Decision> {
    approvals
        .into_iter()
        .map(|a| Decision {
            user: a.user_name,
            approve: a.decision == "approve",
            at: DateTime::from_timestamp_millis(a.created_at).unwrap_or_default(),
        })
        .collect()
}

/// Environment `env` of the repository's rules, or why there is none.
fn environment<'a>(
    rules: &'a Delivery,
    env: &str,
) -> Result<&'a ferry_config::delivery::EnvironmentSpec> {
    rules.environment(env).ok_or_else(|| {
        let names: Vec<&str> = rules.environments.iter().map(|e| e.name.as_str()).collect();
        DeliverError::NotFound(if names.is_empty() {
            format!(
                "there is no environment `{env}`: the default branch's {} names none",
                ferry_config::FILE_NAME
            )
        } else {
            format!(
                "there is no environment `{env}`; the default branch's {} names: {}",
                ferry_config::FILE_NAME,
                names.join(", ")
            )
        })
    })
}
