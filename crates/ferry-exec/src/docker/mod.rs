//! The Docker executor: each step runs in a fresh container of the job's image, through
//! the Docker Engine API (bollard, over the local socket), with the job's workspace
//! mounted at [`WORKSPACE`]. One container per step matches `docker run --rm IMAGE cmd`,
//! which is what the container benchmark compares with.
//!
//! Services next to a job are in [`services`]; image builds and pushes in [`build`].

pub mod apps;
pub mod build;
pub mod services;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    BuildSpec, BuiltImage, ExecError, Executor, ImageBuilder, JobSpec, Logins, OutputSink,
    Prepared, ServiceJob, ServiceRunner, Services, StepIo, StepOutcome, StepSpec,
};

/// The containers one job's steps ran in (removed at cleanup).
#[derive(Debug, Default)]
struct Containers(std::sync::Mutex<Vec<String>>);

/// Where the job's workspace is mounted in its containers (and their working directory).
pub const WORKSPACE: &str = "/workspace";
/// Every container Ferry makes carries this label (`true`), and `ferry.job` = the job.
pub const LABEL: &str = "ferry";
pub const JOB_LABEL: &str = "ferry.job";

/// Runs steps in containers.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct DockerExecutor {
    #[educe(Debug(ignore))]
    docker: Docker,
    /// How long a container may take to stop after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// Where registry credentials for pulls and pushes come from.
    #[educe(Debug(ignore))]
    pub credentials: std::sync::Arc<dyn build::Credentials>,
}

impl DockerExecutor {
    /// The engine's API client.
    pub fn engine(&self) -> &Docker {
        &self.docker
    }

    /// Connects to the local Docker engine (`DOCKER_HOST` or `/var/run/docker.sock`)
    /// and checks that it answers.
    pub async fn connect() -> Result<Self, String> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?;
        docker
            .ping()
            .await
            .map_err(|e| format!("Docker does not answer: {e}"))?;
        Ok(Self {
            docker,
            kill_grace: Duration::from_secs(5),
            credentials: std::sync::Arc::new(build::DockerConfigCredentials),
        })
    }

    /// The image, pulled (with the registry's credentials) when it is not here yet.
    pub async fn ensure_image(&self, image: &str, logins: &Logins) -> Result<(), ExecError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let credentials = self.credentials_for(image, logins);
        let mut pull = self.docker.create_image(Some(options), None, credentials);
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                return Err(ExecError::Pull {
                    image: image.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Removes every container, network and volume Ferry left behind (after a crash).
    /// Returns how many containers.
    pub async fn remove_leftovers(&self) -> usize {
        let filters: HashMap<String, Vec<String>> =
            [("label".to_string(), vec![format!("{LABEL}=true")])].into();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(list) = self.docker.list_containers(Some(options)).await else {
            return 0;
        };
        let mut removed = 0;
        for c in list {
            if let Some(id) = c.id
                && self.remove(&id).await
            {
                removed += 1;
            }
        }
        let networks = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        for n in self
            .docker
            .list_networks(Some(networks))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = n.id {
                let _ = self.docker.remove_network(&id).await;
            }
        }
        let volumes = bollard::query_parameters::ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        if let Ok(list) = self.docker.list_volumes(Some(volumes)).await {
            for v in list.volumes.unwrap_or_default() {
                let _ = self
                    .docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
        }
        removed
    }

    async fn remove(&self, id: &str) -> bool {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        self.docker
            .remove_container(id, Some(options))
            .await
            .is_ok()
    }
}

/// The container of one step: pure, so that it is unit-tested.
pub fn container_config(job: &JobSpec, step: &StepSpec) -> Result<ContainerCreateBody, ExecError> {
    let container = job
        .container
        .as_ref()
        .ok_or_else(|| ExecError::Invalid("the job has no image".into()))?;
    // The step's directory inside the workspace, as seen from the container.
    let rel = step
        .cwd
        .strip_prefix(&job.workspace)
        .map_err(|_| ExecError::Invalid("the step's directory is outside the workspace".into()))?;
    let mut cwd = WORKSPACE.to_string();
    if !rel.as_os_str().is_empty() {
        cwd = format!("{WORKSPACE}/{}", rel.display());
    }
    let mut env: Vec<String> = step
        .env
        .iter()
        // The host's view of the workspace means nothing inside the container.
        .map(|(k, v)| {
            if k == "FERRY_WORKSPACE" {
                format!("{k}={WORKSPACE}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    env.push("HOME=/root".into());
    let labels: HashMap<String, String> = [
        (LABEL.to_string(), "true".to_string()),
        (JOB_LABEL.to_string(), job.name.clone()),
    ]
    .into();
    let limits = &container.settings;
    Ok(ContainerCreateBody {
        image: Some(container.image.clone()),
        user: limits.user.clone(),
        entrypoint: limits.entrypoint.clone(),
        cmd: Some(vec![
            "sh".into(),
            "-e".into(),
            "-c".into(),
            step.script.clone(),
        ]),
        env: Some(env),
        working_dir: Some(cwd),
        labels: Some(labels),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{WORKSPACE}", job.workspace.display())]),
            network_mode: container.network.clone(),
            nano_cpus: limits.cpus_milli.map(|m| (m * 1_000_000) as i64),
            memory: limits.memory.map(|b| b as i64),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, ExecError> {
        let container = job
            .container
            .as_ref()
            .ok_or_else(|| ExecError::Invalid("the job has no image".into()))?;
        self.ensure_image(&container.image, &container.logins)
            .await?;
        Ok(Prepared::new(job.clone(), Containers::default()))
    }

    async fn run_step(&self, job: &Prepared, step: &StepSpec, io: StepIo<'_>) -> StepOutcome {
        let StepIo { output, cancel } = io;
        let config = match container_config(&job.spec, step) {
            Ok(c) => c,
            Err(e) => return StepOutcome::Error(e.to_string()),
        };
        let name = format!("ferry-{}", unique_suffix());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(options), config).await {
            Ok(c) => c,
            Err(e) => return StepOutcome::Error(format!("cannot create the container: {e}")),
        };
        if let Some(Ok(mut ids)) = job.state::<Containers>().map(|c| c.0.lock()) {
            ids.push(created.id.clone());
        }
        let outcome = self.run_container(&created.id, step, output, cancel).await;
        self.remove(&created.id).await;
        outcome
    }

    async fn cleanup(&self, job: &Prepared) {
        let ids = match job.state::<Containers>().map(|c| c.0.lock()) {
            Some(Ok(mut ids)) => std::mem::take(&mut *ids),
            _ => return,
        };
        for id in ids {
            self.remove(&id).await;
        }
    }
}

#[async_trait::async_trait]
impl ServiceRunner for DockerExecutor {
    async fn start(&self, job: ServiceJob<'_>, set: &mut Services) -> Result<(), ExecError> {
        self.start_services(job, set)
            .await
            .map_err(ExecError::Backend)
    }

    async fn stop(&self, set: &mut Services, out: Option<&mut dyn OutputSink>) {
        self.stop_services(set, out).await;
    }
}

#[async_trait::async_trait]
impl ImageBuilder for DockerExecutor {
    async fn build(
        &self,
        spec: &BuildSpec,
        out: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<BuiltImage, ExecError> {
        self.build_image(spec, out, cancel)
            .await
            .map_err(ExecError::Backend)
    }
}

impl DockerExecutor {
    /// What the engine knows of a container now.
    pub(crate) async fn inspect(
        &self,
        id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, bollard::errors::Error> {
        self.docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
    }

    async fn run_container(
        &self,
        id: &str,
        step: &StepSpec,
        output: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> StepOutcome {
        if let Err(e) = self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            return StepOutcome::Error(format!("cannot start the container: {e}"));
        }
        let logs_options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(id, Some(logs_options));
        let deadline = step.timeout.map(|t| tokio::time::Instant::now() + t);
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut ended: Option<StepOutcome> = None;
        loop {
            tokio::select! {
                next = logs.next() => match next {
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message })) => output.chunk(&message),
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    // The stream ends when the container has stopped.
                    Some(Err(_)) | None => break,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && ended.is_none() => {
                    ended = Some(StepOutcome::TimedOut(step.timeout.unwrap_or_default()));
                    self.stop(id).await;
                }
                _ = cancel.cancelled(), if ended.is_none() => {
                    ended = Some(StepOutcome::Cancelled);
                    self.stop(id).await;
                }
            }
        }
        if let Some(o) = ended {
            return o;
        }
        match self.inspect(id).await {
            Ok(info) => {
                let code = info.state.and_then(|s| s.exit_code).unwrap_or(-1);
                StepOutcome::Exited(code as i32)
            }
            Err(e) => StepOutcome::Error(format!("cannot read how the container ended: {e}")),
        }
    }

    /// SIGTERM to the container's processes, SIGKILL after the grace period.
    async fn stop(&self, id: &str) {
        let term = KillContainerOptionsBuilder::default()
            .signal("SIGTERM")
            .build();
        let _ = self.docker.kill_container(id, Some(term)).await;
        let docker = self.docker.clone();
        let id = id.to_string();
        let grace = self.kill_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let kill = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            let _ = docker.kill_container(&id, Some(kill)).await;
        });
    }
}

/// A unique enough container name suffix (time and a counter; no extra dependency).
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{}-{n}", t, std::process::id())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn step_to_container() {
        let job = JobSpec {
            name: "test (db=16)".into(),
            workspace: PathBuf::from("/tmp/ws/001-test"),
            container: Some(crate::ContainerJob {
                image: "busybox:latest".into(),
                network: Some("ferry-net".into()),
                ..Default::default()
            }),
        };
        let step = StepSpec {
            script: "make test".into(),
            env: vec![
                ("A".into(), "1".into()),
                ("FERRY_WORKSPACE".into(), "/tmp/ws/001-test".into()),
            ],
            cwd: PathBuf::from("/tmp/ws/001-test/app"),
            timeout: None,
            clear_env: false,
        };
        let c = container_config(&job, &step).expect("config");
        assert_eq!(c.image.as_deref(), Some("busybox:latest"));
        assert_eq!(
            c.cmd,
            Some(vec![
                "sh".into(),
                "-e".into(),
                "-c".into(),
                "make test".into()
            ])
        );
        assert_eq!(c.working_dir.as_deref(), Some("/workspace/app"));
        let env = c.env.unwrap_or_default();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"FERRY_WORKSPACE=/workspace".to_string()));
        let binds = c
            .host_config
            .as_ref()
            .and_then(|h| h.binds.clone())
            .unwrap_or_default();
        assert_eq!(binds, vec!["/tmp/ws/001-test:/workspace".to_string()]);
        assert_eq!(
            c.host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref()),
            Some("ferry-net"),
            "on the network of the job's services"
        );
        let labels = c.labels.unwrap_or_default();
        assert_eq!(labels.get("ferry").map(String::as_str), Some("true"));
        assert_eq!(
            labels.get("ferry.job").map(String::as_str),
            Some("test (db=16)")
        );
        let outside = StepSpec {
            cwd: PathBuf::from("/etc"),
            ..step
        };
        assert!(container_config(&job, &outside).is_err());
    }
}
