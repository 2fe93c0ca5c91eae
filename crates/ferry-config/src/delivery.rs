//! The delivery half of `.ferry.yml`: `release:` (what a successful run seals),
//! `environments:` (the stages a release goes through, with their policies) and
//! `deploy:` (how a release is deployed, verified and rolled back).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Span;
use crate::model::{EnvVars, Spanned};

/// Everything about delivery in one pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `None`: runs never seal releases.
    pub release: Option<ReleaseSpec>,
    /// In file order; `after:` gives the promotion order.
    pub environments: Vec<EnvironmentSpec>,
    /// The default deploy of every environment.
    pub deploy: Option<DeploySpec>,
    /// Where Ferry tells what happened (`notify:`; read from the default branch).
    #[serde(default)]
    pub notify: Vec<Channel>,
}

/// One entry of `notify:`: where to, and of what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub to: ChannelKind,
    /// The events it is told of (empty: all of them).
    #[serde(default)]
    pub on: Vec<NotifyEvent>,
    /// Only the deployment, approval and health events of these environments (empty:
    /// every event; set, run events are not told).
    #[serde(default)]
    pub environments: Vec<String>,
    /// Where its parts are written (for the file's checks; not kept in releases).
    #[serde(skip)]
    pub spans: ChannelSpans,
}

/// Where a channel's `on:` and each of its `environments:` are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSpans {
    pub on: Span,
    pub environments: Vec<Span>,
}

impl NotifyEvent {
    /// Whether it is of a run (not of a deployment, approval or environment).
    pub fn of_run(self) -> bool {
        matches!(self, NotifyEvent::RunFailed | NotifyEvent::RunFixed)
    }
}

impl Channel {
    /// Whether it is told of `event` (of `environment`, for deployment, approval and
    /// health events).
    pub fn wants(&self, event: NotifyEvent, environment: Option<&str>) -> bool {
        (self.on.is_empty() || self.on.contains(&event))
            && (self.environments.is_empty()
                || environment.is_some_and(|env| self.environments.iter().any(|e| e == env)))
    }
}

/// How a channel is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A JSON POST to `url`, signed with HMAC-SHA256 under the repository secret named
    /// `secret` (`X-Ferry-Signature-256: sha256=…`).
    Webhook { url: String, secret: Option<String> },
    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): its URL,
    /// a credential, is the repository secret named `secret`.
    Slack { secret: String },
    /// E-mail over the server's SMTP relay (`ferry serve --smtp-url`).
    Email { to: Vec<String> },
}

impl ChannelKind {
    pub const KINDS: &[&str] = &["webhook", "slack", "email"];

    pub fn kind(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Email { .. } => "email",
        }
    }
}

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotifyEvent {
    /// A run failed.
    #[serde(rename = "run.failed")]
    RunFailed,
    /// A run passed where the run before it on the same branch had failed.
    #[serde(rename = "run.fixed")]
    RunFixed,
    /// A deployment waits for approval.
    #[serde(rename = "approval.waiting")]
    ApprovalWaiting,
    #[serde(rename = "deployment.live")]
    DeploymentLive,
    #[serde(rename = "deployment.failed")]
    DeploymentFailed,
    #[serde(rename = "deployment.rolled_back")]
    DeploymentRolledBack,
    /// The health watch saw the environment go down.
    #[serde(rename = "environment.unhealthy")]
    EnvironmentUnhealthy,
    /// It is healthy again after being down.
    #[serde(rename = "environment.recovered")]
    EnvironmentRecovered,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 8] = [
        NotifyEvent::RunFailed,
        NotifyEvent::RunFixed,
        NotifyEvent::ApprovalWaiting,
        NotifyEvent::DeploymentLive,
        NotifyEvent::DeploymentFailed,
        NotifyEvent::DeploymentRolledBack,
        NotifyEvent::EnvironmentUnhealthy,
        NotifyEvent::EnvironmentRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RunFailed => "run.failed",
            NotifyEvent::RunFixed => "run.fixed",
            NotifyEvent::ApprovalWaiting => "approval.waiting",
            NotifyEvent::DeploymentLive => "deployment.live",
            NotifyEvent::DeploymentFailed => "deployment.failed",
            NotifyEvent::DeploymentRolledBack => "deployment.rolled_back",
            NotifyEvent::EnvironmentUnhealthy => "environment.unhealthy",
            NotifyEvent::EnvironmentRecovered => "environment.recovered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl Delivery {
    pub fn environment(&self, name: &str) -> Option<&EnvironmentSpec> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The deploy of `environment`: its own, else the file's.
    pub fn deploy_of(&self, environment: &str) -> Option<&DeploySpec> {
        self.environment(environment)
            .and_then(|e| e.deploy.as_ref())
            .or(self.deploy.as_ref())
    }
}

/// `release:` — which runs seal a release, and what goes in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// Pushes to these branches are releasable (`None`: the default branch).
    pub branches: Option<Vec<String>>,
    /// Tags matching these are releasable (`None`: every tag).
    pub tags: Option<Vec<String>>,
    /// Jobs whose artifacts are sealed.
    pub artifacts: Vec<Spanned<String>>,
    /// Jobs whose built images are sealed.
    pub images: Vec<Spanned<String>>,
}

/// One entry of `environments:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    /// The environment a release must be live and verified in first.
    pub after: Option<Spanned<String>>,
    pub policy: Policy,
    pub freeze: Vec<Freeze>,
    /// Replaces the file's `deploy:` for this environment.
    pub deploy: Option<DeploySpec>,
    /// The Terraform code that provisions the environment before each deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra: Option<InfraSpec>,
}

/// `infra:` of an environment: Terraform code of the repository, sealed into the
/// release with everything else, planned and applied on each promotion (issue 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfraSpec {
    /// The module's directory, relative to the repository's root.
    pub dir: Spanned<String>,
    /// Terraform variables of this environment (`TF_VAR_name`).
    pub vars: Vec<(String, String)>,
    /// Whether a plan that destroys anything waits for an approval even where
    /// promotion is automatic (`destroy: approval`, the default; `allow` lets it go).
    pub destroy_needs_approval: bool,
}

/// How a release enters an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// As soon as it is live and verified in the environment before (or sealed, for the
    /// first environment).
    Auto,
    /// Only when someone promotes it (`ferry promote`), without approvals.
    Manual,
    /// After approvals.
    Approval(ApprovalRule),
}

/// `approval:` — how many approvals, from whom, and who may not approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub required: u32,
    /// Users or groups (by name) who may approve; empty: anyone with the approver role.
    pub from: Vec<String>,
    /// Who may not approve, though allowed otherwise.
    pub not: Vec<Excluded>,
    /// An approval older than this no longer counts.
    #[serde(with = "crate::model::opt_millis")]
    pub expires: Option<Duration>,
}

/// People who may not approve a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Excluded {
    /// The author of the release's commit.
    Author,
    /// Whoever triggered the run that made the release.
    Triggerer,
    /// Whoever asked for this deployment.
    Requester,
}

impl Excluded {
    pub const NAMES: &[&str] = &["author", "triggerer", "requester"];
}

/// A time during which nothing is deployed to the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freeze {
    /// From one instant to another (RFC 3339, e.g. `2026-12-24T00:00:00Z`).
    Window { from: String, to: String },
    /// Starting at each time the cron expression matches (UTC), for a duration.
    Recurring {
        cron: String,
        #[serde(with = "crate::model::opt_millis")]
        duration: Option<Duration>,
    },
}

/// `deploy:` — target, verification and what a failure does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub target: Target,
    pub verify: Option<Verify>,
    pub on_failure: OnFailure,
    /// The health watch once the release is live (`watch:`).
    #[serde(default)]
    pub watch: Watch,
    /// What the environment going `down` does (`on_unhealthy:`).
    #[serde(default)]
    pub on_unhealthy: OnUnhealthy,
    /// Configuration made for each environment at deploy time (`config:`), outside the
    /// release's image and files.
    #[serde(default, skip_serializing_if = "ConfigSpec::is_empty")]
    pub config: ConfigSpec,
}

/// `config:` of a deploy (process and docker targets): what is written for each
/// environment when a release is deployed there, so that one image (or one set of
/// files) runs everywhere with each environment's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpec {
    /// Where the environment's variables go as a dotenv file (`NAME=value` lines): a
    /// path in the container (docker), or under the environment's config directory
    /// (process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// Files rendered for each environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ConfigFile>,
    /// docker: the directory of the container where each secret of the environment is
    /// a read-only file (default `/run/secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<String>,
    /// docker: named volumes of the environment (name, path in the container), kept
    /// across releases and never shared with another environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<(String, String)>,
}

impl ConfigSpec {
    pub fn is_empty(&self) -> bool {
        self.env_file.is_none()
            && self.files.is_empty()
            && self.secrets_dir.is_none()
            && self.volumes.is_empty()
    }
}

/// One file of `config.files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Where it goes (see [`ConfigSpec::env_file`] for what a path means).
    pub path: String,
    pub source: ConfigSource,
}

/// What a config file holds: `${{ vars.* }}`, `${{ release.* }}`,
/// `${{ environment.name }}` and `${{ infra.outputs.* }}` replaced in either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// The text given.
    Content(String),
    /// A file of the release, as a template.
    Template(String),
}

/// Where a release goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A supervised long-running process per environment, run from the release's files.
    Process {
        /// Shell command, run in the release's directory; `${{ vars.* }}` etc.
        command: String,
        /// Variables for the process (besides the environment's vars and secrets).
        env: EnvVars,
    },
    /// A container of the release's image per environment.
    Docker {
        /// The release image to run: the name of the job that built it (default: the
        /// only image of the release).
        image: Option<String>,
        /// `HOST_PORT:CONTAINER_PORT` or `IP:HOST_PORT:CONTAINER_PORT` (IP default
        /// 127.0.0.1).
        ports: Vec<String>,
        env: EnvVars,
        /// `VOLUME_OR_HOST_PATH:CONTAINER_PATH[:ro]`.
        volumes: Vec<String>,
        command: Option<Vec<String>>,
    },
    /// Commands with the release in context (Terraform, Helm, kubectl, cloud CLIs).
    Script {
        run: String,
        /// Run in a container of this image (default: on the host).
        image: Option<String>,
    },
    /// Manifests with the release's image digest substituted, applied with kubectl.
    Kubernetes {
        /// Files or directories of YAML manifests, relative to the release's files.
        manifests: Vec<String>,
        /// The secret holding the kubeconfig.
        kubeconfig: String,
        namespace: Option<String>,
        /// Deployments to wait for (`kubectl rollout status`); default: every
        /// Deployment, StatefulSet and DaemonSet in the manifests.
        rollout: Vec<String>,
        #[serde(with = "crate::model::opt_millis")]
        timeout: Option<Duration>,
        /// A ConfigMap of the environment's variables, applied before the manifests.
        config_map: Option<KubeObject>,
        /// A Secret of the environment's secrets (never the kubeconfig), applied before
        /// the manifests from memory: never written to a file.
        secret: Option<KubeObject>,
    },
    /// The release's manifests rendered for the environment, committed to an environment
    /// repository and pushed (a GitOps controller applies them).
    Gitops {
        /// The environment repository: any URL `git` takes (or a path on the server).
        repo: String,
        /// Its branch (default `main`).
        branch: Option<String>,
        /// The directory the manifests go to (default: the environment's name);
        /// `${{ }}` allowed.
        path: Option<String>,
        /// Files or directories of YAML manifests, relative to the release's files.
        manifests: Vec<String>,
        /// The secret holding a token for an `https` repository (sent as HTTP basic
        /// authentication, user `x-access-token`).
        token: Option<String>,
    },
    /// A compose file deployed as a Docker Swarm stack through the Engine API.
    Swarm {
        /// The compose file, in the repository at the release's commit (sealed into
        /// the release with the files its configs and secrets name).
        compose: String,
        /// The stack's name; `${{ }}` allowed (default: `ENV-<hash of the repository
        /// and environment>`, see the target).
        stack: Option<String>,
        /// How long the services may take to converge (default 5 minutes).
        #[serde(with = "crate::model::opt_millis")]
        timeout: Option<Duration>,
    },
}

/// A ConfigMap or Secret the `kubernetes` target makes from the environment's variables
/// or secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeObject {
    /// Its name (`${{ }}` allowed).
    pub name: String,
    /// The variables or secrets it holds (empty: all of them).
    pub keys: Vec<String>,
}

impl Target {
    pub const KINDS: &[&str] = &[
        "process",
        "docker",
        "script",
        "kubernetes",
        "swarm",
        "gitops",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Process { .. } => "process",
            Target::Docker { .. } => "docker",
            Target::Script { .. } => "script",
            Target::Kubernetes { .. } => "kubernetes",
            Target::Swarm { .. } => "swarm",
            Target::Gitops { .. } => "gitops",
        }
    }
}

/// `verify:` — probes that must pass for the whole window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    pub probes: Vec<Probe>,
    /// How long every probe must keep passing (`for:`).
    #[serde(with = "crate::model::opt_millis")]
    pub window: Option<Duration>,
    #[serde(with = "crate::model::opt_millis")]
    pub interval: Option<Duration>,
}

impl Verify {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
}

/// One health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Http {
        url: String,
        /// The expected status (default 200).
        status: u16,
        /// Text the body must contain.
        body: Option<String>,
    },
    Tcp {
        address: String,
    },
    Command {
        run: String,
    },
}

/// `watch:` — after a release went live, its probes keep running every `interval`;
/// `failures` failed checks in a row make the environment `down`. `watch: false` turns
/// it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub enabled: bool,
    #[serde(with = "crate::model::opt_millis")]
    pub interval: Option<Duration>,
    pub failures: Option<u32>,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: None,
            failures: None,
        }
    }
}

impl Watch {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_FAILURES: u32 = 3;
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    pub const MAX_FAILURES: u32 = 1000;

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    pub fn failures(&self) -> u32 {
        self.failures.unwrap_or(Self::DEFAULT_FAILURES)
    }
}

/// What an environment going `down` (under the health watch) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnhealthy {
    /// Tell the people who listen (notifications); the release stays (the default).
    #[default]
    Notify,
    /// Deploy the release that was live before again, and tell them.
    Rollback,
}

/// What a failed deployment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Deploy the release that was live before again (the default).
    #[default]
    Rollback,
    /// Leave it as it is (failed).
    Stop,
}
