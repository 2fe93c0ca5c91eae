//! Executors: where a job's steps run.
//!
//! The engine decides *what* runs and in which order; an [`Executor`] only knows *how*
//! to run one step of one job somewhere (a host process, a container; remote agents
//! later) and stream its output back. [`Executors`] routes a job to the executor of its
//! [`ExecutorKind`]; what only a job in containers has is in [`ContainerJob`]. Services
//! and image builds are behind [`ServiceRunner`] and [`ImageBuilder`]; the Docker
//! executor implements all three. [`DummyExecutor`] runs nothing and is steered by step
//! variables, for fast engine tests.

/// The Docker Engine API client, for targets that speak to the engine beyond what the
/// executor does (Swarm stacks).
pub use bollard;
pub mod docker;
pub mod dummy;
pub mod helper;
pub mod images;
mod local;
pub mod mask;
pub mod orphans;
pub mod process;
pub mod registry;
pub mod sandbox;
pub mod services;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use docker::DockerExecutor;
pub use dummy::DummyExecutor;
pub use images::{BuildSpec, BuiltImage};
pub use local::LocalExecutor;
pub use registry::Logins;
pub use services::{ServiceJob, ServiceSpec, Services};
use tokio_util::sync::CancellationToken;

/// One step, ready to run: everything is resolved (expressions, env, directories).
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The script, given to the shell as its `-c` argument.
    pub script: String,
    /// Variables added to (or replacing) the inherited environment.
    pub env: Vec<(String, String)>,
    /// The working directory (inside the job's workspace).
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
    /// Start from an empty environment instead of Ferry's (deployed processes get only
    /// what they are given). Ferry's secret key never reaches a child either way.
    pub clear_env: bool,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The process exited with this code (128 + N when killed by signal N).
    Exited(i32),
    /// It ran out of time and was killed with its whole process tree.
    TimedOut(Duration),
    /// It was cancelled and killed with its whole process tree.
    Cancelled,
    /// It could not be started.
    Error(String),
}

impl StepOutcome {
    pub fn success(&self) -> bool {
        *self == StepOutcome::Exited(0)
    }
}

/// Receives a step's output (stdout and stderr interleaved, as written) in chunks.
/// Called from the executor's read loop: it must not block for long.
pub trait OutputSink: Send {
    fn chunk(&mut self, data: &[u8]);
}

/// Where a running step's output goes, and what stops it.
pub struct StepIo<'a> {
    pub output: &'a mut dyn OutputSink,
    /// Cancelled: the step's whole process tree stops, and `run_step` returns
    /// [`StepOutcome::Cancelled`] promptly.
    pub cancel: &'a CancellationToken,
}

impl std::fmt::Debug for StepIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepIo")
    }
}

impl<'a> StepIo<'a> {
    pub fn new(output: &'a mut dyn OutputSink, cancel: &'a CancellationToken) -> Self {
        Self { output, cancel }
    }
}

/// One job, ready to prepare: its name, its workspace, and how it runs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's unique name in its run (for labels and messages).
    pub name: String,
    /// The job's workspace, already holding the source and restored artifacts.
    pub workspace: PathBuf,
    /// In containers of an image; `None`: on the host.
    pub container: Option<ContainerJob>,
}

impl JobSpec {
    /// Which kind of executor runs it.
    pub fn kind(&self) -> ExecutorKind {
        match self.container {
            Some(_) => ExecutorKind::Container,
            None => ExecutorKind::Host,
        }
    }
}

/// What only a job in containers has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerJob {
    pub image: String,
    /// User, entrypoint and resource limits.
    pub settings: ContainerSettings,
    /// The network its containers join (that of its services).
    pub network: Option<String>,
    /// Registry logins for pulling its image.
    pub logins: Logins,
}

/// User, entrypoint and resource limits of a job's containers (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSettings {
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    /// Thousandths of a CPU.
    pub cpus_milli: Option<u64>,
    /// Bytes.
    pub memory: Option<u64>,
}

/// The kinds of executor a job can be routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecutorKind {
    /// Processes on this host ([`LocalExecutor`]).
    Host,
    /// Containers of the job's image ([`DockerExecutor`]).
    Container,
}

impl ExecutorKind {
    /// What it needs, as a user reads it.
    pub fn needs(self) -> &'static str {
        match self {
            ExecutorKind::Host => "a host executor",
            ExecutorKind::Container => "Docker",
        }
    }
}

/// Why an executor (or a service runner, an image builder) could not do its part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// This server has nothing that can do it (e.g. no Docker for a job with an image).
    #[error("{0}")]
    Unavailable(String),
    /// The job's workspace is missing.
    #[error("workspace {} does not exist", .0.display())]
    NoWorkspace(PathBuf),
    /// The image is not here and cannot be pulled.
    #[error("image `{image}` is not here and cannot be pulled: {reason}")]
    Pull { image: String, reason: String },
    /// The spec cannot run (e.g. a step's directory outside the workspace).
    #[error("{0}")]
    Invalid(String),
    /// The backend (the container engine, a registry) refused or failed.
    #[error("{0}")]
    Backend(String),
}

impl From<String> for ExecError {
    fn from(e: String) -> Self {
        ExecError::Backend(e)
    }
}

impl From<ExecError> for String {
    fn from(e: ExecError) -> Self {
        e.to_string()
    }
}

/// Runs the steps of jobs.
///
/// Lifecycle, for each job: [`prepare`](Executor::prepare) once, then
/// [`run_step`](Executor::run_step) for each step in order (never two steps of the same
/// job at once), then [`cleanup`](Executor::cleanup). Steps of *different* jobs run
/// concurrently, so implementations are `Send + Sync` and keep per-job state in the
/// [`Prepared`] handle.
///
/// `cleanup` must be safe to call twice and after a failed `prepare`: it ends every
/// process (or container) the job left behind, so that nothing outlives the job.
/// Cancelling the token in [`StepIo`] stops the step's whole process tree and makes
/// `run_step` return [`StepOutcome::Cancelled`] promptly.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, ExecError>;
    async fn run_step(&self, job: &Prepared, step: &StepSpec, io: StepIo<'_>) -> StepOutcome;
    async fn cleanup(&self, job: &Prepared);
}

/// A prepared job: its spec and what its executor keeps to clean it up (process groups,
/// containers), which only that executor reads.
#[derive(educe::Educe)]
#[educe(Debug)]
pub struct Prepared {
    pub spec: JobSpec,
    #[educe(Debug(ignore))]
    state: Box<dyn std::any::Any + Send + Sync>,
}

impl Prepared {
    pub fn new(spec: JobSpec, state: impl std::any::Any + Send + Sync) -> Self {
        Self {
            spec,
            state: Box::new(state),
        }
    }

    /// The executor's own state for this job (`None` if another executor prepared it).
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.state.downcast_ref()
    }
}

/// The executors of one server, by kind: the engine routes each job to the one of its
/// kind ([`JobSpec::kind`]).
#[derive(Clone)]
pub struct Executors {
    by_kind: std::collections::BTreeMap<ExecutorKind, Arc<dyn Executor>>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_kind.keys()).finish()
    }
}

impl Executors {
    /// Host jobs run with `host`; nothing else can run yet.
    pub fn new(host: Arc<dyn Executor>) -> Self {
        Self {
            by_kind: [(ExecutorKind::Host, host)].into(),
        }
    }

    /// Jobs of `kind` run with `executor`.
    pub fn with(mut self, kind: ExecutorKind, executor: Arc<dyn Executor>) -> Self {
        self.by_kind.insert(kind, executor);
        self
    }

    pub fn get(&self, kind: ExecutorKind) -> Option<&Arc<dyn Executor>> {
        self.by_kind.get(&kind)
    }

    /// The executor of `job`'s kind, or why there is none.
    pub fn for_job(&self, job: &JobSpec) -> Result<Arc<dyn Executor>, ExecError> {
        let kind = job.kind();
        self.by_kind.get(&kind).cloned().ok_or_else(|| {
            let what = match &job.container {
                Some(c) => format!("image `{}`", c.image),
                None => "the host".to_string(),
            };
            ExecError::Unavailable(format!(
                "job `{}` needs {what}, but {} is not available here",
                job.name,
                kind.needs()
            ))
        })
    }
}

/// Starts a job's services and removes them again.
///
/// `start` records everything it makes in `set` as it goes; the caller always hands
/// `set` to `stop` afterwards, also when `start` failed, so nothing is left behind.
#[async_trait::async_trait]
pub trait ServiceRunner: Send + Sync {
    /// Starts a job's services and waits until each is ready.
    async fn start(&self, job: ServiceJob<'_>, set: &mut Services) -> Result<(), ExecError>;

    /// Removes what `start` made, copying the services' logs to `out` first.
    async fn stop(&self, set: &mut Services, out: Option<&mut dyn OutputSink>);
}

/// Builds, tags and pushes images.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Builds `spec`, streaming the builder's output to `out`, tags it and pushes it.
    async fn build(
        &self,
        spec: &BuildSpec,
        out: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<BuiltImage, ExecError>;
}
