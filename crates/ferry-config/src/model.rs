//! The typed pipeline: what a valid `.ferry.yml` means, with the places of the values
//! that later stages may need to point at.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Span;

/// A value and where it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spanned<T> {
    pub value: T,
    #[serde(skip)]
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

/// Ordered `NAME: value` pairs (order is kept so that later entries can refer to earlier).
pub type EnvVars = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub on: Triggers,
    pub env: EnvVars,
    pub jobs: Vec<Job>,
    pub concurrency: Option<Concurrency>,
    /// `release:`, `environments:` and `deploy:`.
    pub delivery: crate::delivery::Delivery,
}

/// `concurrency:` — runs of a repository in the same group run one at a time; a newer
/// run supersedes older queued ones (and running ones with `cancel_in_progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// May use `${{ }}` with the event and the pipeline's `env`, e.g. `deploy-${{ event.branch }}`.
    pub group: Spanned<String>,
    pub cancel_in_progress: bool,
}

impl Pipeline {
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// The `on:` section: which events start a run on a server. `None` means "not listed".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Triggers {
    /// True when the file has no `on:` section: every push and manual trigger runs.
    pub default: bool,
    pub push: Option<RefFilter>,
    pub tag: Option<Vec<String>>,
    pub pull_request: Option<RefFilter>,
    pub schedule: Vec<String>,
    /// `Some(false)` refuses manual and API triggers; they are allowed otherwise.
    pub manual: Option<bool>,
}

/// Branch and path filters (glob patterns; empty means any).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefFilter {
    pub branches: Vec<String>,
    pub paths: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// The span of the job's key in `jobs:`.
    pub span: Span,
    pub steps: Vec<Step>,
    pub needs: Vec<Spanned<String>>,
    pub condition: Option<Spanned<String>>,
    pub matrix: Option<Matrix>,
    pub env: EnvVars,
    pub working_directory: Option<String>,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub allow_failure: bool,
    pub artifacts: Vec<String>,
    pub junit: Vec<String>,
    /// Run the steps in containers of this image; `None`: on the host.
    pub image: Option<String>,
    /// How the containers of a job with an image run.
    pub container: ContainerOptions,
    /// Containers started next to the job (a database for the tests, ...).
    pub services: Vec<Service>,
    /// Directories restored before the job and saved after it, by key.
    pub caches: Vec<Cache>,
    /// An image built (and pushed) after the job's steps.
    pub build_image: Option<BuildImage>,
}

/// One entry of `services:`: a container on the job's own network, reachable by `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// May use `${{ }}` (e.g. `postgres:${{ matrix.pg }}`).
    pub image: String,
    pub env: EnvVars,
    /// Replaces the image's command (argv).
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint (argv).
    pub entrypoint: Option<Vec<String>>,
    /// TCP ports the service listens on: the job waits until each accepts connections.
    pub ports: Vec<u16>,
    /// A shell command run inside the service as its health check; the job waits
    /// until it succeeds.
    pub health: Option<String>,
    /// How long to wait for the service to be ready (default [`Service::DEFAULT_WAIT`]).
    #[serde(with = "opt_millis")]
    pub wait: Option<Duration>,
}

impl Service {
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
}

/// One entry of `cache:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// May use `${{ }}`, e.g. `deps-${{ hash_files('Cargo.lock') }}`.
    pub key: String,
    /// Directories or files inside the workspace.
    pub paths: Vec<String>,
}

/// `build_image:` — build an image from the workspace after the steps, tag and push it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildImage {
    /// The image repository, e.g. `registry.example.com/team/app` (may use `${{ }}`).
    pub name: String,
    /// The build context, relative to the workspace (default `.`).
    pub context: String,
    /// The Dockerfile, relative to the context (default `Dockerfile`).
    pub dockerfile: String,
    pub args: EnvVars,
    /// The stage of a multi-stage Dockerfile to build.
    pub target: Option<String>,
    pub labels: EnvVars,
    /// Tags besides the commit's sha (may use `${{ }}`).
    pub tags: Vec<String>,
    /// Push every tag to the registry (default true).
    pub push: bool,
}

/// `image: { user, entrypoint }` and `resources: { cpus, memory }` of a container job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOptions {
    /// `user` or `user:group` (names or ids) to run as, instead of the image's.
    pub user: Option<String>,
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// CPU limit in thousandths of a CPU (`cpus: 1.5` → 1500).
    pub cpus_milli: Option<u64>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    pub name: Option<String>,
    pub run: String,
    pub env: EnvVars,
    pub working_directory: Option<String>,
    #[serde(with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// Where `run` is written, to point into its `${{ }}` expressions.
    #[serde(skip)]
    pub run_span: Span,
}

impl Step {
    /// The name shown for the step: its `name`, or the first line of its command.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                let first = self
                    .run
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                let first = first.trim();
                if first.chars().count() > 60 {
                    format!("{}…", first.chars().take(59).collect::<String>())
                } else {
                    first.to_string()
                }
            }
        }
    }
}

/// `matrix:` — each key with its values; `include` adds combinations, `exclude` removes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matrix {
    pub axes: Vec<(String, Vec<String>)>,
    pub include: Vec<Vec<(String, String)>>,
    pub exclude: Vec<Vec<(String, String)>>,
}

impl Matrix {
    /// Every key a combination can have.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.axes.iter().map(|(k, _)| k.clone()).collect();
        for combo in &self.include {
            for (k, _) in combo {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        keys
    }
}

/// Which failures a job is retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryWhen {
    /// A step exited with a non-zero status.
    Failure,
    /// A step or the job ran out of time.
    Timeout,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Extra attempts after the first (0: no retry).
    pub max: u32,
    pub when: Vec<RetryWhen>,
    /// If not empty, only these exit codes are retried.
    pub exit_codes: Vec<i32>,
}

pub mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
