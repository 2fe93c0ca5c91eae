//! Deploy targets: where a release goes.
//!
//! The deliverer owns the state machine (queued → deploying → verifying → live, or
//! failed and rolled back); a [`Target`] only knows how to put one release in place in
//! one environment, how to tell that it died, and what to tidy afterwards. Everything a
//! target needs arrives in one [`DeployContext`]: the deployment, the release's files,
//! the environment's variables and secrets, the process environment built from them,
//! and the deployment's masked log.
//!
//! Adding a target: a section in `ferry_config::delivery::Target` (with its loader and
//! schema), one file here implementing [`Target`], and one arm in [`Targets::get`].
//! See "Adding a deploy target" in `docs/development.md`.

pub mod config;
pub mod docker;
pub mod gitops;
pub mod kubernetes;
pub mod mounts;
pub mod process;
pub mod script;
pub mod swarm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_config::delivery::Target as Spec;
use ferry_exec::DockerExecutor;
use ferry_store::{Deployment, Release, SecretKey, Store};

use crate::log::DeployLog;
use crate::supervisor::Supervisor;

/// Tells whether the deployed workload died since it started, and how (`None`: it is
/// still up). Called often during verification: it must not block.
pub type WorkloadCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// A check that never sees the workload die (targets whose work is done once `deploy`
/// returns: scripts, Kubernetes).
pub fn never_dies() -> WorkloadCheck {
    Arc::new(|| None)
}

/// One kind of deploy target, configured by its section of `deploy.target`.
///
/// Lifecycle of one deployment: [`deploy`](Target::deploy); the deliverer then verifies
/// with the probes of `deploy.verify`, asking [`watch`](Target::watch) whether the
/// workload died; then [`tidy`](Target::tidy) with the outcome. After a failure with
/// nothing left live, [`stop`](Target::stop). Deployments of one environment never run
/// concurrently; different environments' do, so implementations are `Send + Sync` and
/// keep per-environment state keyed by repository and environment.
#[async_trait::async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// Puts the release in place and starts it. An error is the reason the deployment
    /// failed, shown to the user: say what and where.
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String>;

    /// A check telling whether the workload of `release`, just deployed, died.
    async fn watch(&self, _dep: &Deployment, _release: &str) -> WorkloadCheck {
        never_dies()
    }

    /// Whether the live workload of `release` runs now, for the health watch: one quick
    /// look, taken every interval (`None`: it runs, or the target cannot tell).
    async fn alive(&self, _dep: &Deployment, _release: &str) -> Option<String> {
        None
    }

    /// What the live workload of `release` uses now (`None`: the target cannot tell).
    async fn workload(
        &self,
        _dep: &Deployment,
        _release: &str,
    ) -> Option<crate::supervisor::Workload> {
        None
    }

    /// After `release` went live (`failed == false`) or failed in the deployment's
    /// environment: remove or keep what earlier deployments left.
    async fn tidy(&self, _dep: &Deployment, _release: &str, _failed: bool, _log: &mut DeployLog) {}

    /// Nothing is live in the environment any more: stop what runs there.
    async fn stop(&self, _dep: &Deployment) {}

    /// The server starts, and `ctx.deployment` is live with a workload that runs on its
    /// own (a container): put back what the server keeps for it and lost (files in
    /// memory, gone with a reboot), and start it if it stopped for want of them.
    async fn restore(&self, _ctx: &mut DeployContext<'_>) -> Result<(), String> {
        Ok(())
    }

    /// The workload runs under this server (a supervised process): it stops when the
    /// server stops, so a live deployment is deployed again when the server starts, and
    /// its secret files are kept while it runs (they are removed after `deploy` for
    /// every other target).
    fn supervised(&self) -> bool {
        false
    }

    /// Deploying replaces the live workload before verification (a process, a
    /// container): after a failure without rollback, the live release is deployed again.
    fn replaces_live(&self) -> bool {
        false
    }

    /// It runs the release's own code on this host (a script without an image, a
    /// process): in the deployment's sandbox when the server has one (see
    /// [`crate::jail`]).
    fn runs_host_code(&self) -> bool {
        false
    }
}

/// The deployment being carried out, with everything resolved for its environment.
pub struct DeployContext<'a> {
    pub deployment: &'a Deployment,
    pub release: &'a Release,
    /// `<data>/deploy/<repository id>/<environment>`.
    pub env_dir: PathBuf,
    /// The release's files, verified against their digests.
    pub release_dir: PathBuf,
    /// The environment's secrets as files (0600), in memory where possible.
    pub secrets_dir: PathBuf,
    /// The repository's variables, overridden by the environment's.
    pub vars: BTreeMap<String, String>,
    /// The repository's and the environment's secrets (name, value).
    pub secrets: Vec<(String, Vec<u8>)>,
    /// The whole environment of anything the target runs: `PATH`, `HOME`, the
    /// `FERRY_*` release variables, the variables and the secrets.
    pub env: Vec<(String, String)>,
    /// The outputs of the environment's Terraform, applied for this deployment (empty
    /// without `infra:`); sensitive ones are masked in the log.
    pub infra_outputs: BTreeMap<String, String>,
    /// What the deploy's `config:` writes for the environment (see [`config`]).
    pub config: ferry_config::delivery::ConfigSpec,
    /// The deployment's log, masking the secrets.
    pub log: &'a mut DeployLog,
    /// Starts the release's host code in the deployment's sandbox (see [`crate::jail`]);
    /// `None`: the server has none, or the target runs no code on the host.
    pub spawner: Option<Arc<ferry_exec::sandbox::Spawner>>,
    /// How long a script the target runs may take (`None`: no limit).
    pub timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for DeployContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployContext")
            .field("deployment", &self.deployment.id)
            .field("release", &self.release.name)
            .field("release_dir", &self.release_dir)
            .finish_non_exhaustive()
    }
}

impl DeployContext<'_> {
    pub fn environment(&self) -> &str {
        &self.deployment.environment
    }

    /// `repository id/environment`: what labels a workload as this environment's.
    pub fn scope(&self) -> String {
        scope(self.deployment)
    }

    /// `text` with its `${{ vars.* }}`, `${{ release.* }}`, `${{ environment.* }}` and
    /// `${{ infra.outputs.* }}` expressions replaced.
    pub fn eval(&self, text: &str) -> Result<String, String> {
        eval(
            text,
            &Scope {
                vars: &self.vars,
                release: self.release,
                release_dir: &self.release_dir,
                environment: self.environment(),
                outputs: &self.infra_outputs,
            },
        )
    }
}

/// What `${{ }}` in `deploy:` (and `infra.vars`) sees.
#[derive(Debug)]
pub struct Scope<'a> {
    pub vars: &'a BTreeMap<String, String>,
    pub release: &'a Release,
    pub release_dir: &'a std::path::Path,
    pub environment: &'a str,
    pub outputs: &'a BTreeMap<String, String>,
}

/// `text` with its `${{ vars.* }}`, `${{ release.* }}`, `${{ environment.* }}` and
/// `${{ infra.outputs.* }}` expressions replaced.
pub fn eval(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    if !text.contains("${{") {
        return Ok(text.to_string());
    }
    let image = scope
        .release
        .images
        .first()
        .map(|i| i.reference())
        .unwrap_or_default();
    let value = minijinja::context! {
        vars => scope.vars,
        release => minijinja::context! {
            id => scope.release.name,
            commit => scope.release.commit_sha,
            tag => scope.release.tag,
            image => image,
            dir => scope.release_dir.display().to_string(),
        },
        environment => minijinja::context! { name => scope.environment },
        infra => minijinja::context! { outputs => scope.outputs },
    };
    ferry_config::expr::interpolate(&ferry_config::expr::environment(), text, &value)
}

/// `repository id/environment` of a deployment.
pub fn scope(dep: &Deployment) -> String {
    format!("{}/{}", dep.repository_id, dep.environment)
}

/// What targets may use: the process supervisor, Docker, `kubectl`, and the store and
/// key to open registry logins with.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Targets {
    #[educe(Debug(ignore))]
    pub(crate) supervisor: Supervisor,
    /// `<data>/deploy`: environments' directories.
    pub(crate) root: PathBuf,
    /// Where secret files go (see [`crate::layout::secrets_root`]).
    pub(crate) secrets_root: PathBuf,
    #[educe(Debug(ignore))]
    pub(crate) docker: Option<Arc<DockerExecutor>>,
    pub(crate) kubectl: PathBuf,
    /// Directories whose paths deployments may mount (`ferry serve --deploy-mount`).
    pub(crate) mounts: Arc<Vec<mounts::Allowed>>,
    /// Directories on the server `gitops` repositories may lie in
    /// (`ferry serve --gitops-local`).
    pub(crate) gitops_local: Arc<Vec<PathBuf>>,
    #[educe(Debug(ignore))]
    pub(crate) store: Store,
    #[educe(Debug(ignore))]
    pub(crate) key: SecretKey,
}

impl Targets {
    /// The target a `deploy.target` section describes.
    pub fn get(&self, spec: &Spec) -> Box<dyn Target> {
        match spec {
            Spec::Process { command, env } => Box::new(process::ProcessTarget {
                command: command.clone(),
                env: env.clone(),
                supervisor: self.supervisor.clone(),
            }),
            Spec::Docker {
                image,
                ports,
                env,
                volumes,
                command,
            } => Box::new(docker::DockerTarget {
                image: image.clone(),
                ports: ports.clone(),
                env: env.clone(),
                volumes: volumes.clone(),
                command: command.clone(),
                mounts: self.mounts.clone(),
                root: self.root.clone(),
                secrets_root: self.secrets_root.clone(),
                docker: self.docker.clone(),
                store: self.store.clone(),
                key: self.key.clone(),
            }),
            Spec::Script { run, image } => Box::new(script::ScriptTarget {
                run: run.clone(),
                image: image.clone(),
                docker: self.docker.clone(),
            }),
            Spec::Kubernetes {
                manifests,
                kubeconfig,
                namespace,
                rollout,
                timeout,
                config_map,
                secret,
            } => Box::new(kubernetes::KubernetesTarget {
                manifests: manifests.clone(),
                kubeconfig: kubeconfig.clone(),
                namespace: namespace.clone(),
                rollout: rollout.clone(),
                timeout: *timeout,
                config_map: config_map.clone(),
                secret: secret.clone(),
                kubectl: self.kubectl.clone(),
                key: self.key.clone(),
            }),
            Spec::Gitops {
                repo,
                branch,
                path,
                manifests,
                token,
            } => Box::new(gitops::GitopsTarget {
                repo: repo.clone(),
                branch: branch.clone(),
                path: path.clone(),
                manifests: manifests.clone(),
                token: token.clone(),
                root: self.root.clone(),
                local: self.gitops_local.clone(),
                store: self.store.clone(),
                key: self.key.clone(),
            }),
            Spec::Swarm {
                compose,
                stack,
                timeout,
            } => Box::new(swarm::SwarmTarget {
                compose: compose.clone(),
                stack: stack.clone(),
                timeout: *timeout,
                docker: self.docker.clone(),
                store: self.store.clone(),
                key: self.key.clone(),
            }),
        }
    }
}
