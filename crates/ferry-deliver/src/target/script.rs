//! The `script` target: commands with the release in context (Terraform, Helm, kubectl,
//! cloud CLIs), on the host or in a container, with their output in the deployment's
//! log.

use std::path::Path;
use std::sync::Arc;

use ferry_exec::{
    ContainerJob, DockerExecutor, Executor, JobSpec, LocalExecutor, OutputSink, StepIo,
    StepOutcome, StepSpec,
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
        let local = LocalExecutor::default();
        let executor: &dyn Executor = match (&self.image, &self.docker) {
            (None, _) => &local,
            (Some(_), Some(d)) => d.as_ref(),
            (Some(i), None) => {
                return Err(format!(
                    "the script needs image `{i}`, but Docker is not available here"
                ));
            }
        };
        let name = ctx.environment().to_string();
        let (env, dir) = (ctx.env.clone(), ctx.release_dir.clone());
        let result = run_script(
            executor,
            &name,
            self.image.clone(),
            &script,
            env,
            &dir,
            &mut *ctx.log,
        )
        .await;
        ctx.log.flush();
        result
    }
}

/// Runs `script` with `env` in `dir`, on the host or (with `image`) in a container of
/// it with `dir` mounted at `/workspace`; its output goes to `output`.
pub async fn run_script(
    executor: &dyn Executor,
    name: &str,
    image: Option<String>,
    script: &str,
    env: Vec<(String, String)>,
    dir: &Path,
    output: &mut dyn OutputSink,
) -> Result<(), String> {
    let job = JobSpec {
        name: format!("deploy-{name}"),
        workspace: dir.to_path_buf(),
        container: image.map(|image| ContainerJob {
            image,
            ..Default::default()
        }),
    };
    let prepared = executor.prepare(&job).await.map_err(|e| e.to_string())?;
    let step = StepSpec {
        script: script.to_string(),
        env,
        cwd: dir.to_path_buf(),
        timeout: None,
        clear_env: true,
    };
    let outcome = executor
        .run_step(
            &prepared,
            &step,
            StepIo::new(output, &CancellationToken::new()),
        )
        .await;
    executor.cleanup(&prepared).await;
    match outcome {
        StepOutcome::Exited(0) => Ok(()),
        StepOutcome::Exited(code) => Err(format!("the script exited with code {code}")),
        StepOutcome::TimedOut(_) => Err("the script timed out".into()),
        StepOutcome::Cancelled => Err("cancelled".into()),
        StepOutcome::Error(e) => Err(e),
    }
}
