//! Executors: where a job's steps run.
//!
//! The engine decides *what* runs and in which order; an [`Executor`] only knows *how*
//! to run one step of one job somewhere (a host process here; containers and remote
//! agents later) and stream its output back.

pub mod docker;
mod local;
pub mod mask;
pub mod orphans;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

pub use docker::DockerExecutor;
pub use local::LocalExecutor;
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

/// The identity of one prepared job inside an executor.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's unique name in its run (for labels and messages).
    pub name: String,
    /// The job's workspace, already holding the source and restored artifacts.
    pub workspace: PathBuf,
    /// The container image, for executors that run containers.
    pub image: Option<String>,
    /// How its containers run.
    pub container: ContainerSettings,
    /// The Docker network its containers join (that of its services).
    pub network: Option<String>,
    /// Registry logins for pulling its image.
    pub logins: docker::build::Logins,
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
/// Cancelling the token passed to `run_step` stops the step's whole process tree and
/// makes `run_step` return [`StepOutcome::Cancelled`] promptly.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, String>;
    async fn run_step(
        &self,
        job: &Prepared,
        step: &StepSpec,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> StepOutcome;
    async fn cleanup(&self, job: &Prepared);
}

/// A prepared job: its spec and what the executor needs to clean it up.
#[derive(Debug)]
pub struct Prepared {
    pub spec: JobSpec,
    /// Process groups started for this job (the local executor kills them at cleanup).
    pub groups: std::sync::Mutex<Vec<i32>>,
    /// Containers created for this job (the Docker executor removes them at cleanup).
    pub containers: std::sync::Mutex<Vec<String>>,
}

impl Prepared {
    pub fn new(spec: JobSpec) -> Self {
        Self {
            spec,
            groups: std::sync::Mutex::new(Vec::new()),
            containers: std::sync::Mutex::new(Vec::new()),
        }
    }
}
