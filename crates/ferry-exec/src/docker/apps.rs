//! Containers that deployments run (the `docker` deploy target): one per release and
//! environment, labelled `ferry.deploy=<scope>` and `ferry.release=<name>` — and not
//! `ferry=true`, so that the clean-up of job containers never touches them. They restart
//! by Docker's policy (`unless-stopped`) when they crash or the engine restarts.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountType, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, StopContainerOptionsBuilder,
};

use super::DockerExecutor;
use super::build::Logins;

/// What an application container uses (see [`DockerExecutor::app_usage`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AppUsage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub restarts: u64,
    pub started_at: Option<i64>,
}

pub const DEPLOY_LABEL: &str = "ferry.deploy";
pub const RELEASE_LABEL: &str = "ferry.release";

/// One application container to run.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct AppSpec {
    /// `name@sha256:…`
    pub image: String,
    /// The container's name.
    pub name: String,
    /// Which environment it belongs to (`<repository id>/<environment>`).
    #[educe(Debug(ignore))]
    pub scope: String,
    #[educe(Debug(ignore))]
    pub release: String,
    #[educe(Debug(ignore))]
    pub env: Vec<(String, String)>,
    /// (host ip, host port, container port)
    pub ports: Vec<(String, u16, u16)>,
    #[educe(Debug(ignore))]
    pub volumes: Vec<String>,
    /// Files of the host mounted read-only in the container: (host path, container
    /// path). A missing host file fails the container's start (it is never made into
    /// a directory, as a `volumes` bind would).
    #[educe(Debug(ignore))]
    pub files: Vec<(String, String)>,
    #[educe(Debug(ignore))]
    pub command: Option<Vec<String>>,
}

/// An application container as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub release: String,
    pub running: bool,
}

/// The container of an application: pure, so that it is unit-tested.
pub fn app_config(spec: &AppSpec) -> ContainerCreateBody {
    let labels: HashMap<String, String> = [
        (DEPLOY_LABEL.to_string(), spec.scope.clone()),
        (RELEASE_LABEL.to_string(), spec.release.clone()),
    ]
    .into();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for (ip, host, container) in &spec.ports {
        bindings
            .entry(format!("{container}/tcp"))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(ip.clone()),
                host_port: Some(host.to_string()),
            });
    }
    let exposed: Vec<String> = spec
        .ports
        .iter()
        .map(|(_, _, c)| format!("{c}/tcp"))
        .collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: spec.command.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            mounts: (!spec.files.is_empty()).then(|| {
                spec.files
                    .iter()
                    .map(|(host, container)| Mount {
                        target: Some(container.clone()),
                        source: Some(host.clone()),
                        typ: Some(MountType::BIND),
                        read_only: Some(true),
                        bind_options: Some(MountBindOptions {
                            create_mountpoint: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl DockerExecutor {
    /// The application containers of `scope`, newest first.
    pub async fn apps(&self, scope: &str) -> Result<Vec<App>, String> {
        let filters: HashMap<String, Vec<String>> =
            [("label".to_string(), vec![format!("{DEPLOY_LABEL}={scope}")])].into();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {e}"))?;
        let mut apps: Vec<(i64, App)> = list
            .into_iter()
            .filter_map(|c| {
                let release = c.labels.as_ref()?.get(RELEASE_LABEL)?.clone();
                let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
                Some((
                    c.created.unwrap_or(0),
                    App {
                        id: c.id?,
                        release,
                        running,
                    },
                ))
            })
            .collect();
        apps.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
        Ok(apps.into_iter().map(|(_, a)| a).collect())
    }

    /// Creates and starts an application container (pulling its image when needed).
    pub async fn run_app(&self, spec: &AppSpec, logins: &Logins) -> Result<String, String> {
        self.ensure_image(&spec.image, logins).await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), app_config(spec))
            .await
            .map_err(|e| format!("cannot create the container: {e}"))?;
        self.start_app(&created.id).await?;
        Ok(created.id)
    }

    pub async fn start_app(&self, id: &str) -> Result<(), String> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| format!("cannot start the container: {e}"))
    }

    /// Stops it (kept, for an instant rollback).
    pub async fn stop_app(&self, id: &str) {
        let options = StopContainerOptionsBuilder::default().t(5).build();
        let _ = self.docker.stop_container(id, Some(options)).await;
    }

    pub async fn remove_app(&self, id: &str) {
        self.remove(id).await;
    }

    /// `None` while it runs; how it ended otherwise.
    pub async fn app_exit(&self, id: &str) -> Option<String> {
        match self.inspect(id).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                if state.running == Some(true) && state.restarting != Some(true) {
                    None
                } else {
                    Some(format!(
                        "the container exited with code {}",
                        state.exit_code.unwrap_or(-1)
                    ))
                }
            }
            Err(e) => Some(format!("the container is gone: {e}")),
        }
    }

    /// What an application container uses now (one-shot statistics and an inspect):
    /// CPU seconds since it started, memory, restarts, when it (last) started
    /// (milliseconds since the epoch); `None` when Docker cannot say.
    pub async fn app_usage(&self, id: &str) -> Option<AppUsage> {
        use futures_util::StreamExt;
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self.docker.stats(id, Some(options)).next().await?.ok()?;
        let info = self.inspect(id).await.ok()?;
        let started_at = info
            .state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        Some(AppUsage {
            cpu_seconds: stats
                .cpu_stats
                .and_then(|c| c.cpu_usage)
                .and_then(|u| u.total_usage)
                .unwrap_or(0) as f64
                / 1e9,
            memory_bytes: stats.memory_stats.and_then(|m| m.usage).unwrap_or(0),
            restarts: info.restart_count.unwrap_or(0).max(0) as u64,
            started_at,
        })
    }

    /// The application's output (for the deployment's log).
    pub async fn app_logs(&self, id: &str) -> Vec<u8> {
        use futures_util::StreamExt;
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut out = Vec::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.extend_from_slice(&chunk.into_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_containers_publish_on_loopback_and_restart() {
        let spec = AppSpec {
            image: "127.0.0.1:5000/app@sha256:abc".into(),
            name: "ferry-staging-r1".into(),
            scope: "repo/staging".into(),
            release: "r1".into(),
            env: vec![("PORT".into(), "8080".into())],
            ports: vec![("127.0.0.1".into(), 18080, 8080)],
            volumes: vec!["data:/data".into()],
            files: vec![("/dev/shm/x/TOKEN".into(), "/run/secrets/TOKEN".into())],
            command: None,
        };
        let c = app_config(&spec);
        let host = c.host_config.expect("host");
        let binding = &host.port_bindings.expect("ports")["8080/tcp"]
            .clone()
            .expect("binding")[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("18080"));
        assert_eq!(host.binds, Some(vec!["data:/data".to_string()]));
        let mount = &host.mounts.expect("mounts")[0];
        assert_eq!(
            (
                mount.source.as_deref(),
                mount.target.as_deref(),
                mount.read_only,
                mount.typ
            ),
            (
                Some("/dev/shm/x/TOKEN"),
                Some("/run/secrets/TOKEN"),
                Some(true),
                Some(MountType::BIND)
            )
        );
        assert_eq!(
            host.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let labels = c.labels.expect("labels");
        assert_eq!(labels[DEPLOY_LABEL], "repo/staging");
        assert!(
            !labels.contains_key("ferry"),
            "job clean-up never removes it"
        );
    }
}
