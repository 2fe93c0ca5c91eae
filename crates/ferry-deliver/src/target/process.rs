//! The `process` target: one supervised long-running process per environment, run from
//! the release's files (see [`crate::supervisor`]).

use ferry_config::model::EnvVars;
use ferry_store::Deployment;

use super::{DeployContext, Target, WorkloadCheck};
use crate::layout;
use crate::supervisor::{ProcessSpec, Supervisor};

#[derive(Debug)]
pub struct ProcessTarget {
    /// Shell command, run in the release's directory.
    pub command: String,
    /// Variables for the process besides the environment's.
    pub env: EnvVars,
    pub supervisor: Supervisor,
}

#[async_trait::async_trait]
impl Target for ProcessTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let command = ctx.eval(&self.command)?;
        let mut env = ctx.env.clone();
        // `config:`: written for this environment under the release's directory.
        if !ctx.config.is_empty() {
            let files = super::config::render(&ctx.config, ctx)?;
            let dir = ctx.release_dir.join(super::config::PROCESS_DIR);
            super::config::write_under(&ctx.release_dir, super::config::PROCESS_DIR, &files)?;
            ctx.log.line(&format!(
                "config: {} file(s) in $FERRY_CONFIG_DIR ({})",
                files.len(),
                dir.display()
            ));
            env.push(("FERRY_CONFIG_DIR".into(), dir.display().to_string()));
        }
        for (k, v) in &self.env {
            env.push((k.clone(), ctx.eval(v)?));
        }
        layout::point_current(&ctx.env_dir, &ctx.release_dir)?;
        ctx.log.line(&format!(
            "starting `{command}` in {}",
            ctx.release_dir.display()
        ));
        self.supervisor
            .start(ProcessSpec {
                repository_id: ctx.deployment.repository_id.clone(),
                environment: ctx.deployment.environment.clone(),
                release: ctx.release.name.clone(),
                dir: ctx.release_dir.clone(),
                command,
                env,
                log: ctx.env_dir.join("output.log"),
                log_limit: crate::supervisor::OUTPUT_LIMIT,
                masker: ctx.log.masker(),
                spawner: ctx.spawner.clone(),
            })
            .await
    }

    async fn watch(&self, dep: &Deployment, _release: &str) -> WorkloadCheck {
        let f = self
            .supervisor
            .exit_watch(&dep.repository_id, &dep.environment)
            .await;
        std::sync::Arc::new(f)
    }

    async fn alive(&self, dep: &Deployment, _release: &str) -> Option<String> {
        match self
            .supervisor
            .state(&dep.repository_id, &dep.environment)
            .await
        {
            None => Some("no process is supervised for the environment".into()),
            Some(s) if s.pid.is_none() => Some(match s.last_exit {
                Some(e) => format!("the process is not running (it {e})"),
                None => "the process is not running".into(),
            }),
            Some(_) => None,
        }
    }

    async fn workload(
        &self,
        dep: &Deployment,
        _release: &str,
    ) -> Option<crate::supervisor::Workload> {
        self.supervisor
            .workloads()
            .await
            .into_iter()
            .find(|(r, e, _)| *r == dep.repository_id && *e == dep.environment)
            .map(|(.., w)| w)
    }

    async fn stop(&self, dep: &Deployment) {
        self.supervisor
            .stop(&dep.repository_id, &dep.environment)
            .await;
    }

    fn supervised(&self) -> bool {
        true
    }

    fn replaces_live(&self) -> bool {
        true
    }

    fn runs_host_code(&self) -> bool {
        true
    }
}
