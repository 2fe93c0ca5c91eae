//! `services:` — containers started next to a job, on a network of the job's own, where
//! the job's containers reach them by name; published on 127.0.0.1 for host jobs.
//!
//! Readiness: a service with a health check (its own `health:` or the image's
//! HEALTHCHECK) is ready when Docker reports it healthy; a service with `ports:` when
//! each port is listening inside its network namespace (read from
//! `/proc/<pid>/net/tcp{,6}` of the service's process, so the check talks to no
//! container address and needs no tool inside the image); otherwise when it runs.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{DockerExecutor, JOB_LABEL, LABEL, unique_suffix};
use crate::OutputSink;

pub use crate::services::{ServiceJob, ServiceSpec, Services, env_prefix};

/// The container of one service: pure, so that it is unit-tested.
/// `publish`: also publish its ports on 127.0.0.1 (for jobs on the host).
pub fn service_config(
    job: &str,
    network: &str,
    service: &ServiceSpec,
    publish: bool,
) -> ContainerCreateBody {
    let labels: HashMap<String, String> = [
        (LABEL.to_string(), "true".to_string()),
        (JOB_LABEL.to_string(), job.to_string()),
        ("ferry.service".to_string(), service.name.clone()),
    ]
    .into();
    let endpoint = EndpointSettings {
        aliases: Some(vec![service.name.clone()]),
        ..Default::default()
    };
    let port_bindings = publish.then(|| {
        service
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{p}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect::<HashMap<_, _>>()
    });
    let exposed = (!service.ports.is_empty()).then(|| {
        service
            .ports
            .iter()
            .map(|p| format!("{p}/tcp"))
            .collect::<Vec<_>>()
    });
    ContainerCreateBody {
        image: Some(service.image.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        labels: Some(labels),
        exposed_ports: exposed,
        healthcheck: service.health.as_ref().map(|cmd| HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), cmd.clone()]),
            interval: Some(Duration::from_millis(250).as_nanos() as i64),
            timeout: Some(Duration::from_secs(10).as_nanos() as i64),
            retries: Some(1_000_000),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            port_bindings,
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some([(network.to_string(), endpoint)].into()),
        }),
        ..Default::default()
    }
}

/// Whether `port` is listening in the network namespace of process `pid`.
fn listening(pid: i64, port: u16) -> std::io::Result<bool> {
    let mut any = false;
    for table in ["tcp", "tcp6"] {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(t) => t,
            // The process may have just exited (the next inspect says how), or the
            // kernel has no IPv6.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        any |= listens_in(&text, port);
    }
    Ok(any)
}

/// Parses a `/proc/net/tcp` table: is a socket on `port` in state LISTEN (0A)?
fn listens_in(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let state = fields.nth(1).unwrap_or("");
        let local_port = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        state == "0A" && local_port == Some(port)
    })
}

impl DockerExecutor {
    /// Starts `services` for job `job` into `set` and waits until each is ready.
    /// On error, what was made is in `set`: pass it to [`Self::stop_services`] anyway.
    pub async fn start_services(
        &self,
        job: ServiceJob<'_>,
        set: &mut Services,
    ) -> Result<(), String> {
        let ServiceJob {
            job,
            services,
            publish,
            logins,
            cancel,
        } = job;
        if services.is_empty() {
            return Ok(());
        }
        let network = format!("ferry-{}", unique_suffix());
        let labels: HashMap<String, String> = [
            (LABEL.to_string(), "true".to_string()),
            (JOB_LABEL.to_string(), job.to_string()),
        ]
        .into();
        self.docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the services' network: {e}"))?;
        set.network = Some(network.clone());
        for service in services {
            self.ensure_image(&service.image, logins)
                .await
                .map_err(|e| format!("service `{}`: {e}", service.name))?;
            let config = service_config(job, &network, service, publish);
            let name = format!("ferry-{}-{}", service.name, unique_suffix());
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            let created = self
                .docker
                .create_container(Some(options), config)
                .await
                .map_err(|e| format!("cannot create service `{}`: {e}", service.name))?;
            set.containers
                .push((service.name.clone(), created.id.clone()));
            self.docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| format!("cannot start service `{}`: {e}", service.name))?;
        }
        // All are started first, so waiting for each in turn takes as long as the slowest.
        for (service, (_, id)) in services.iter().zip(set.containers.clone()) {
            self.wait_ready(service, &id, cancel).await?;
            let prefix = env_prefix(&service.name);
            let info = self
                .inspect(&id)
                .await
                .map_err(|e| format!("cannot inspect service `{}`: {e}", service.name))?;
            let bound = info.network_settings.and_then(|n| n.ports);
            let host = if publish { "127.0.0.1" } else { &service.name };
            set.env.push((format!("{prefix}_HOST"), host.to_string()));
            for (i, port) in service.ports.iter().enumerate() {
                let value = if publish {
                    bound
                        .as_ref()
                        .and_then(|b| b.get(&format!("{port}/tcp")))
                        .and_then(|b| b.as_ref())
                        .and_then(|b| b.iter().find_map(|p| p.host_port.clone()))
                        .ok_or_else(|| {
                            format!("service `{}`: port {port} was not published", service.name)
                        })?
                } else {
                    port.to_string()
                };
                if i == 0 {
                    set.env.push((format!("{prefix}_PORT"), value.clone()));
                }
                set.env.push((format!("{prefix}_PORT_{port}"), value));
            }
        }
        Ok(())
    }

    async fn wait_ready(
        &self,
        service: &ServiceSpec,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + service.wait;
        let name = &service.name;
        let mut last = String::from("it has not started");
        loop {
            let info = self
                .inspect(id)
                .await
                .map_err(|e| format!("cannot inspect service `{name}`: {e}"))?;
            let state = info.state.unwrap_or_default();
            if state.running != Some(true) {
                use bollard::models::ContainerStateStatusEnum as S;
                if matches!(state.status, Some(S::EXITED | S::DEAD)) {
                    return Err(format!(
                        "service `{name}` exited with code {} before it was ready",
                        state.exit_code.unwrap_or(-1)
                    ));
                }
            } else {
                let health = state.health.and_then(|h| h.status);
                match health {
                    Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                    Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => {
                        last = "its health check has not passed".into();
                    }
                    _ => {
                        let pid = state.pid.unwrap_or(0);
                        let mut waiting = None;
                        for port in &service.ports {
                            match listening(pid, *port) {
                                Ok(true) => {}
                                Ok(false) => {
                                    waiting = Some(format!("port {port} is not listening"));
                                    break;
                                }
                                Err(e) => {
                                    return Err(format!(
                                        "service `{name}`: cannot check port {port}: {e}"
                                    ));
                                }
                            }
                        }
                        match waiting {
                            None => return Ok(()),
                            Some(w) => last = w,
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "service `{name}` was not ready after {}s: {last}",
                    service.wait.as_secs_f32()
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }

    /// Writes each service's log to `out` (when given), then removes the services and
    /// their network. Safe to call twice.
    pub async fn stop_services(&self, set: &mut Services, out: Option<&mut dyn OutputSink>) {
        let containers = std::mem::take(&mut set.containers);
        if let Some(out) = out {
            for (name, id) in &containers {
                out.chunk(format!("ferry: --- log of service `{name}` ---\n").as_bytes());
                let options = LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build();
                let mut logs = self.docker.logs(id, Some(options));
                let mut ends_with_newline = true;
                while let Some(Ok(chunk)) = logs.next().await {
                    let bytes = chunk.into_bytes();
                    if let Some(last) = bytes.last() {
                        ends_with_newline = *last == b'\n';
                    }
                    out.chunk(&bytes);
                }
                if !ends_with_newline {
                    out.chunk(b"\n");
                }
            }
        }
        for (_, id) in &containers {
            self.remove(id).await;
        }
        if let Some(network) = set.network.take() {
            let _ = self.docker.remove_network(&network).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ServiceSpec {
        ServiceSpec {
            name: "db".into(),
            image: "postgres:16".into(),
            env: vec![("POSTGRES_PASSWORD".into(), "x".into())],
            command: Some(vec!["postgres".into(), "-c".into(), "fsync=off".into()]),
            entrypoint: None,
            ports: vec![5432],
            health: Some("pg_isready".into()),
            wait: Duration::from_secs(30),
        }
    }

    #[test]
    fn service_to_container() {
        let c = service_config("test", "ferry-net", &service(), false);
        assert_eq!(c.image.as_deref(), Some("postgres:16"));
        assert_eq!(c.env, Some(vec!["POSTGRES_PASSWORD=x".to_string()]));
        assert_eq!(c.cmd.as_ref().map(Vec::len), Some(3));
        let host = c.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("ferry-net"));
        assert!(
            host.port_bindings.is_none(),
            "not published for container jobs"
        );
        let endpoints = c
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(
            endpoints["ferry-net"].aliases,
            Some(vec!["db".to_string()]),
            "reachable by its name"
        );
        let health = c.healthcheck.expect("health");
        assert_eq!(
            health.test,
            Some(vec!["CMD-SHELL".to_string(), "pg_isready".to_string()])
        );
        let labels = c.labels.expect("labels");
        assert_eq!(labels["ferry"], "true");
        assert_eq!(labels["ferry.job"], "test");
        assert_eq!(labels["ferry.service"], "db");
    }

    #[test]
    fn host_jobs_get_ports_on_loopback() {
        let c = service_config("test", "n", &service(), true);
        let bindings = c.host_config.and_then(|h| h.port_bindings).expect("ports");
        let b = bindings["5432/tcp"].as_ref().expect("binding");
        assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(env_prefix("my-db"), "FERRY_SERVICE_MY_DB");
    }

    #[test]
    fn reads_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";
        assert!(listens_in(table, 5432), "0x1538 = 5432 in LISTEN");
        assert!(
            !listens_in(table, 80),
            "port 80 is only an established connection"
        );
        assert!(!listens_in(table, 8080));
    }
}
