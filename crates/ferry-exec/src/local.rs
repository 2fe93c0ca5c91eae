//! The local executor: each step is a `sh` process on this host, in the job's workspace.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::process::{self, signal_group};
use crate::{ExecError, Executor, JobSpec, Prepared, StepIo, StepOutcome, StepSpec};

/// The process groups one job started (killed at cleanup).
#[derive(Debug, Default)]
struct Groups(std::sync::Mutex<Vec<i32>>);

/// Runs steps as host processes. Each step gets its own process group, so a timeout,
/// a cancel or the end of the job kills everything the step started.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// How long a step may take to exit after SIGTERM before it gets SIGKILL.
    pub kill_grace: Duration,
    /// Cancelled to cut the grace short (e.g. on a second Ctrl-C).
    pub force: CancellationToken,
    /// Records live process groups on disk, for [`crate::orphans::Tracker::reap`] after a crash.
    pub tracker: Option<crate::orphans::Tracker>,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            force: CancellationToken::new(),
            tracker: None,
        }
    }
}

#[async_trait::async_trait]
impl Executor for LocalExecutor {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, ExecError> {
        if !job.workspace.is_dir() {
            return Err(ExecError::NoWorkspace(job.workspace.clone()));
        }
        Ok(Prepared::new(job.clone(), Groups::default()))
    }

    async fn run_step(&self, job: &Prepared, step: &StepSpec, io: StepIo<'_>) -> StepOutcome {
        let StepIo { output, cancel } = io;
        process::run(step, output, cancel, self.kill_grace, &self.force, |pgid| {
            if let Some(t) = &self.tracker {
                t.started(pgid);
            }
            if let Some(Ok(mut g)) = job.state::<Groups>().map(|g| g.0.lock()) {
                g.push(pgid);
            }
        })
        .await
    }

    async fn cleanup(&self, job: &Prepared) {
        let groups = match job.state::<Groups>().map(|g| g.0.lock()) {
            Some(Ok(mut g)) => std::mem::take(&mut *g),
            _ => return,
        };
        for pgid in groups {
            signal_group(pgid, Signal::SIGKILL);
            if let Some(t) = &self.tracker {
                t.ended(pgid);
            }
        }
    }
}
