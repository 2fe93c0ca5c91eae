//! The `script` target: commands with the release in context (Terraform, Helm, kubectl,
//! cloud CLIs), on the host or in a container, with their output in the deployment's
//! log.

use std::sync::Arc;
use std::time::Duration;

use ferry_exec::sandbox::Spawner;
use ferry_exec::{
    ContainerJob, DockerExecutor, Executor, JobSpec, OutputSink, StepIo, StepOutcome, StepSpec,
    process,
};
use tokio_util::sync::CancellationToken;

use super::{DeployContext, Target};

#[derive(Debug)]
pub struct ScriptTarget {
    pub run: String,
    /// Run in a container of this image (default: on the host).
    pub image: Option<String>,
    pub docker: Option<Arc<DockerExecutor>>,
}

#[async_trait::async_trait]
impl Target for ScriptTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let script = ctx.eval(&self.run)?;
        ctx.log.line(&format!(
            "running the deploy script{}",
            match &self.image {
                Some(i) => format!(" in a container of {i}"),
                None => String::new(),
            }
        ));
        let name = ctx.environment().to_string();
        let step = StepSpec {
            script,
            env: ctx.env.clone(),
            cwd: ctx.release_dir.clone(),
            timeout: ctx.timeout,
            clear_env: true,
        };
        // The log's limit stops the script too.
        let stop = ctx.log.stop();
        let result = match (&self.image, &self.docker) {
            (None, _) => run_on_host(ctx.spawner.as_deref(), &step, &mut *ctx.log, &stop).await,
            (Some(_), Some(d)) => {
                run_script(
                    d.as_ref(),
                    &name,
                    self.image.clone(),
                    &step,
                    &mut *ctx.log,
                    &stop,
                )
                .await
            }
            (Some(i), None) => {
                return Err(format!(
                    "the script needs image `{i}`, but Docker is not available here"
                ));
            }
        };
        ctx.log.flush();
        match ctx.log.exceeded() {
            Some(why) => Err(why),
            None => result,
        }
    }

    fn runs_host_code(&self) -> bool {
        self.image.is_none()
    }
}

/// Runs `script` with only `env` in `dir` on this host, started by `spawner` (the
/// deployment's sandbox) when there is one; whatever it leaves running in its process
/// group is killed when it ends.
async fn run_on_host(
    spawner: Option<&Spawner>,
    step: &StepSpec,
    output: &mut dyn OutputSink,
    stop: &CancellationToken,
) -> Result<(), String> {
    let force = CancellationToken::new();
    let mut group = 0;
    let outcome = process::run_in(
        step,
        spawner,
        output,
        stop,
        Duration::from_secs(5),
        &force,
        |pgid| group = pgid,
    )
    .await;
    process::signal_group(group, nix::sys::signal::Signal::SIGKILL);
    if let Some(spawner) = spawner {
        // What it left outside its process group too (`setsid`).
        spawner.sweep().await;
    }
    outcome_of(outcome)
}

fn outcome_of(outcome: StepOutcome) -> Result<(), String> {
    match outcome {
        StepOutcome::Exited(0) => Ok(()),
        StepOutcome::Exited(code) => Err(format!("the script exited with code {code}")),
        StepOutcome::TimedOut(after) => {
            Err(format!("the script timed out after {}s", after.as_secs()))
        }
        StepOutcome::Cancelled => Err("cancelled".into()),
        StepOutcome::Error(e) => Err(e),
    }
}

/// Runs `step` in a container of `image` (the executor's, Docker) with its directory
/// mounted at `/workspace`; its output goes to `output`; `stop` stops it.
pub async fn run_script(
    executor: &dyn Executor,
    name: &str,
    image: Option<String>,
    step: &StepSpec,
    output: &mut dyn OutputSink,
    stop: &CancellationToken,
) -> Result<(), String> {
    let job = JobSpec {
        name: format!("deploy-{name}"),
        workspace: step.cwd.clone(),
        container: image.map(|image| ContainerJob {
            image,
            ..Default::default()
        }),
    };
    let prepared = executor.prepare(&job).await.map_err(|e| e.to_string())?;
    let outcome = executor
        .run_step(&prepared, step, StepIo::new(output, stop))
        .await;
    executor.cleanup(&prepared).await;
    outcome_of(outcome)
}
