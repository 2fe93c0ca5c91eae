//! The `swarm` target: the release's compose file deployed as a Docker Swarm stack
//! through the Engine API (what `docker stack deploy` does, without the CLI).
//!
//! A deployment: the compose file (sealed into the release from the repository, see
//! [`SEALED_UNDER`]) is loaded with the environment's variables ([`compose::load`]);
//! images are pinned (a release image to the release's digest, any other to the digest
//! its registry gives now); configs and secrets are created from the environment's
//! settings under names holding a hash of their content (Swarm's are immutable, so new
//! content is a new object); networks are created when missing; then every service is
//! created or updated, with `failure_action: rollback` unless the file says otherwise,
//! and Ferry waits until each service runs its new tasks (or Swarm rolled it back). Pure
//! parts — names, [`objects`], [`service_spec`] — are unit-tested; the rest talks to the
//! engine.
//!
//! Everything the stack holds is labelled with the stack
//! (`com.docker.stack.namespace`, so `docker stack ps` shows it) and with Ferry's scope
//! (`ferry.scope` = repository id/environment); a stack of that name holding another
//! scope's services is refused. After a release goes live, services it no longer has are
//! removed, and configs and secrets no service's spec uses are deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_config::compose::{self, Compose, Lookup, MountKind, ObjectSource};
use ferry_exec::DockerExecutor;
use ferry_exec::bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit,
    Mount, MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    NetworkAttachmentConfig, NetworkCreateRequest, ResourceObject, SecretSpec, Service,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecDnsConfig,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use ferry_exec::bollard::query_parameters::{
    ListConfigsOptions, ListSecretsOptions, ListServicesOptions, ListTasksOptions,
    UpdateServiceOptions,
};
use ferry_store::{Deployment, Release, SecretKey, Store};

use super::{DeployContext, Target, WorkloadCheck, scope};
use crate::log::DeployLog;

/// Where compose files (and the files their configs and secrets name) are sealed in a
/// release: `.ferry/swarm/<path in the repository>`.
pub const SEALED_UNDER: &str = ".ferry/swarm";
/// The job the sealed compose files are listed under in a release.
pub const SEALED_JOB: &str = "swarm";
/// Docker's own stack label: `docker stack ls/ps/rm` see Ferry's stacks.
pub const NAMESPACE: &str = "com.docker.stack.namespace";
/// The repository id/environment a stack object belongs to.
pub const SCOPE: &str = "ferry.scope";
/// The release a service runs.
pub const RELEASE: &str = "ferry.release";
/// How long services may take to converge, unless `timeout:` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where `path` of the repository is in a release.
pub fn sealed_path(path: &str) -> String {
    format!("{SEALED_UNDER}/{}", path.trim_start_matches("./"))
}

#[derive(educe::Educe)]
#[educe(Debug)]
pub struct SwarmTarget {
    pub compose: String,
    pub stack: Option<String>,
    pub timeout: Option<Duration>,
    #[educe(Debug(ignore))]
    pub docker: Option<Arc<DockerExecutor>>,
    #[educe(Debug(ignore))]
    pub store: Store,
    #[educe(Debug(ignore))]
    pub key: SecretKey,
}

/// The stack of an environment when `stack:` does not name one: `ENV-<hash of the
/// repository and environment>` (two repositories' `production` never share a stack).
pub fn default_stack(dep: &Deployment) -> String {
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(scope(dep).as_bytes())[..4]);
    let env: String = dep
        .environment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{env}-{hash}")
}

/// What Docker takes as a stack's name (it prefixes every object's name).
fn check_stack(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot name a stack: use up to 40 letters, digits and `-`, starting with a letter or digit (`_` separates a stack's name from its objects')"
        ))
    }
}

/// A config or a secret the stack creates: its compose name, its name in Swarm
/// (`STACK_NAME_<hash of the content>`), its content.
#[derive(Clone, PartialEq, Eq)]
pub struct Object {
    pub secret: bool,
    pub key: String,
    pub name: String,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("secret", &self.secret)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `STACK_KEY_<first 10 hex digits of the SHA-256 of the content>`.
pub fn object_name(stack: &str, key: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(data)[..5]);
    format!("{stack}_{key}_{hash}")
}

/// The configs and secrets of `compose` the stack creates, with their content given by
/// `content` (compose key, secret?) → bytes.
pub fn objects(
    stack: &str,
    compose: &Compose,
    content: &BTreeMap<(bool, String), Vec<u8>>,
) -> Vec<Object> {
    let mut out = Vec::new();
    for (secret, list) in [(false, &compose.configs), (true, &compose.secrets)] {
        for o in list {
            if let Some(data) = content.get(&(secret, o.name.clone())) {
                out.push(Object {
                    secret,
                    key: o.name.clone(),
                    name: object_name(stack, &o.name, data),
                    data: data.clone(),
                });
            }
        }
    }
    out
}

/// The networks of the stack Ferry creates (`STACK_default` for services naming none).
pub fn networks(
    stack: &str,
    compose: &Compose,
    labels: &HashMap<String, String>,
) -> Vec<NetworkCreateRequest> {
    let mut out = Vec::new();
    let uses_default = compose
        .services
        .iter()
        .any(|s| s.networks.is_empty() || s.networks.iter().any(|(n, _)| n.value == "default"));
    if uses_default && !compose.networks.iter().any(|n| n.name == "default") {
        out.push(NetworkCreateRequest {
            name: format!("{stack}_default"),
            driver: Some("overlay".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        });
    }
    for n in compose.networks.iter().filter(|n| !n.external) {
        let mut l: HashMap<String, String> = n.labels.iter().cloned().collect();
        l.extend(labels.clone());
        out.push(NetworkCreateRequest {
            name: network_name(stack, compose, &n.name),
            driver: Some(n.driver.clone().unwrap_or_else(|| "overlay".into())),
            attachable: Some(n.attachable),
            internal: Some(n.internal),
            options: (!n.driver_opts.is_empty()).then(|| n.driver_opts.iter().cloned().collect()),
            labels: Some(l),
            ..Default::default()
        });
    }
    out
}

fn network_name(stack: &str, compose: &Compose, name: &str) -> String {
    match compose.networks.iter().find(|n| n.name == name) {
        Some(n) if n.real_name.is_some() => n.real_name.clone().unwrap_or_default(),
        Some(n) if n.external => n.name.clone(),
        _ => format!("{stack}_{name}"),
    }
}

fn volume_source(stack: &str, compose: &Compose, name: &str) -> String {
    match compose.volumes.iter().find(|v| v.name == name) {
        Some(v) if v.real_name.is_some() => v.real_name.clone().unwrap_or_default(),
        Some(v) if v.external => v.name.clone(),
        _ => format!("{stack}_{name}"),
    }
}

fn nanos(d: Option<Duration>) -> Option<i64> {
    d.map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// What [`service_spec`] needs beyond the compose file.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub stack: &'a str,
    pub scope: &'a str,
    pub release: &'a str,
    /// Image as written → the reference to run (pinned to a digest where known).
    pub pins: &'a BTreeMap<String, String>,
    /// (secret?, compose key) → (name in Swarm, id).
    pub ids: &'a BTreeMap<(bool, String), (String, String)>,
}

/// The Swarm service of compose service `svc`.
pub fn service_spec(
    compose: &Compose,
    svc: &compose::Service,
    input: &SpecInput<'_>,
) -> ServiceSpec {
    let stack = input.stack;
    let stack_labels: HashMap<String, String> = [
        (NAMESPACE.to_string(), stack.to_string()),
        (SCOPE.to_string(), input.scope.to_string()),
    ]
    .into();
    // Ferry's labels last: they say which environment a service is, whatever the
    // file says (the loader refuses such labels too).
    let mut service_labels: HashMap<String, String> = svc.deploy.labels.iter().cloned().collect();
    service_labels.extend(stack_labels.clone());
    service_labels.insert(RELEASE.into(), input.release.to_string());
    service_labels.insert("com.docker.stack.image".into(), svc.image.value.clone());
    let mut container_labels: HashMap<String, String> = svc.labels.iter().cloned().collect();
    container_labels.extend(stack_labels.clone());
    let image = input
        .pins
        .get(&svc.image.value)
        .cloned()
        .unwrap_or_else(|| svc.image.value.clone());
    let file = |target: &Option<String>, default: String, r: &compose::ObjectRef| {
        TaskSpecContainerSpecFile {
            name: Some(target.clone().unwrap_or(default)),
            uid: Some(r.uid.clone().unwrap_or_else(|| "0".into())),
            gid: Some(r.gid.clone().unwrap_or_else(|| "0".into())),
            mode: Some(r.mode.unwrap_or(0o444)),
        }
    };
    let secrets: Vec<TaskSpecContainerSpecSecrets> = svc
        .secrets
        .iter()
        .filter_map(|r| {
            let (name, id) = input.ids.get(&(true, r.source.value.clone()))?;
            Some(TaskSpecContainerSpecSecrets {
                file: Some(file(&r.target, r.source.value.clone(), r)),
                secret_id: Some(id.clone()),
                secret_name: Some(name.clone()),
            })
        })
        .collect();
    let configs: Vec<TaskSpecContainerSpecConfigs> = svc
        .configs
        .iter()
        .filter_map(|r| {
            let (name, id) = input.ids.get(&(false, r.source.value.clone()))?;
            let f = file(&r.target, format!("/{}", r.source.value), r);
            Some(TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: f.name,
                    uid: f.uid,
                    gid: f.gid,
                    mode: f.mode,
                }),
                config_id: Some(id.clone()),
                config_name: Some(name.clone()),
                ..Default::default()
            })
        })
        .collect();
    let mounts: Vec<Mount> = svc
        .volumes
        .iter()
        .map(|m| match m.kind {
            MountKind::Tmpfs => Mount {
                target: Some(m.target.clone()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: m.tmpfs_size.map(|s| MountTmpfsOptions {
                    size_bytes: Some(s),
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => {
                let declared = m
                    .source
                    .as_ref()
                    .and_then(|s| compose.volumes.iter().find(|v| &v.name == s));
                let mut labels: HashMap<String, String> = declared
                    .map(|v| v.labels.iter().cloned().collect())
                    .unwrap_or_default();
                labels.extend(stack_labels.clone());
                Mount {
                    target: Some(m.target.clone()),
                    source: m.source.as_ref().map(|s| volume_source(stack, compose, s)),
                    typ: Some(if m.kind == MountKind::Bind {
                        MountType::BIND
                    } else {
                        MountType::VOLUME
                    }),
                    read_only: Some(m.read_only),
                    volume_options: (m.kind == MountKind::Volume).then(|| MountVolumeOptions {
                        no_copy: Some(m.no_copy),
                        labels: Some(labels),
                        driver_config: declared.and_then(|v| v.driver.clone()).map(|d| {
                            MountVolumeOptionsDriverConfig {
                                name: Some(d),
                                options: declared.map(|v| v.driver_opts.iter().cloned().collect()),
                            }
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
        })
        .chain(svc.tmpfs.iter().map(|t| Mount {
            target: Some(t.clone()),
            typ: Some(MountType::TMPFS),
            ..Default::default()
        }))
        .collect();
    let health = svc.healthcheck.as_ref().map(|h| HealthConfig {
        test: if h.disable {
            Some(vec!["NONE".into()])
        } else {
            h.test.clone()
        },
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        retries: h.retries.map(|r| r as i64),
        start_period: nanos(h.start_period),
        start_interval: nanos(h.start_interval),
    });
    let dns = (!svc.dns.is_empty() || !svc.dns_search.is_empty()).then(|| {
        TaskSpecContainerSpecDnsConfig {
            nameservers: Some(svc.dns.clone()),
            search: Some(svc.dns_search.clone()),
            options: None,
        }
    });
    let container = TaskSpecContainerSpec {
        image: Some(image),
        labels: Some(container_labels),
        command: svc.entrypoint.clone(),
        args: svc.command.clone(),
        hostname: svc.hostname.clone(),
        env: Some(
            svc.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        dir: svc.working_dir.clone(),
        user: svc.user.clone(),
        tty: svc.tty,
        open_stdin: svc.stdin_open,
        read_only: svc.read_only,
        mounts: Some(mounts),
        stop_signal: svc.stop_signal.clone(),
        stop_grace_period: nanos(svc.stop_grace_period),
        health_check: health,
        hosts: (!svc.extra_hosts.is_empty()).then(|| svc.extra_hosts.clone()),
        dns_config: dns,
        secrets: Some(secrets),
        configs: Some(configs),
        init: svc.init,
        sysctls: (!svc.sysctls.is_empty()).then(|| svc.sysctls.iter().cloned().collect()),
        capability_add: (!svc.cap_add.is_empty()).then(|| svc.cap_add.clone()),
        capability_drop: (!svc.cap_drop.is_empty()).then(|| svc.cap_drop.clone()),
        ..Default::default()
    };
    let d = &svc.deploy;
    let resources = |r: &compose::Resources| (r.cpus.map(|c| (c * 1e9) as i64), r.memory);
    let (lc, lm) = resources(&d.limits);
    let (rc, rm) = resources(&d.reservations);
    let restart = d.restart.as_ref().map(|r| TaskSpecRestartPolicy {
        condition: r
            .condition
            .as_deref()
            .and_then(|c| c.parse::<TaskSpecRestartPolicyConditionEnum>().ok()),
        delay: nanos(r.delay),
        max_attempts: r.max_attempts.map(|n| n as i64),
        window: nanos(r.window),
    });
    let mut networks: Vec<NetworkAttachmentConfig> = svc
        .networks
        .iter()
        .map(|(n, aliases)| NetworkAttachmentConfig {
            target: Some(network_name(stack, compose, &n.value)),
            aliases: Some(
                std::iter::once(svc.name.clone())
                    .chain(aliases.iter().cloned())
                    .collect(),
            ),
            ..Default::default()
        })
        .collect();
    if networks.is_empty() {
        networks.push(NetworkAttachmentConfig {
            target: Some(network_name(stack, compose, "default")),
            aliases: Some(vec![svc.name.clone()]),
            ..Default::default()
        });
    }
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: (lc.is_some() || lm.is_some() || d.limits.pids.is_some()).then_some(Limit {
                nano_cpus: lc,
                memory_bytes: lm,
                pids: d.limits.pids,
            }),
            reservations: (rc.is_some() || rm.is_some()).then_some(ResourceObject {
                nano_cpus: rc,
                memory_bytes: rm,
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: restart,
        placement: Some(TaskSpecPlacement {
            constraints: (!d.constraints.is_empty()).then(|| d.constraints.clone()),
            preferences: (!d.preferences.is_empty()).then(|| {
                d.preferences
                    .iter()
                    .map(|p| TaskSpecPlacementPreferences {
                        spread: Some(TaskSpecPlacementSpread {
                            spread_descriptor: Some(p.clone()),
                        }),
                    })
                    .collect()
            }),
            max_replicas: d.max_replicas_per_node.map(|n| n as i64),
            ..Default::default()
        }),
        networks: Some(networks),
        log_driver: svc.logging.as_ref().and_then(|l| {
            l.driver.clone().map(|name| TaskSpecLogDriver {
                name: Some(name),
                options: Some(l.options.iter().cloned().collect()),
            })
        }),
        ..Default::default()
    };
    let u = d.update.clone().unwrap_or_default();
    let r = d.rollback.clone().unwrap_or_default();
    ServiceSpec {
        name: Some(format!("{stack}_{}", svc.name)),
        labels: Some(service_labels),
        task_template: Some(task),
        mode: Some(if d.global {
            ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            }
        } else {
            ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(d.replicas.unwrap_or(1) as i64),
                }),
                ..Default::default()
            }
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(u.parallelism.unwrap_or(1) as i64),
            delay: nanos(u.delay),
            // Ferry's default: a failing update goes back to what ran.
            failure_action: Some(
                u.failure_action
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            ),
            monitor: nanos(u.monitor),
            max_failure_ratio: u.max_failure_ratio,
            order: Some(
                u.order
                    .as_deref()
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            ),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(r.parallelism.unwrap_or(1) as i64),
            delay: nanos(r.delay),
            failure_action: Some(
                r.failure_action
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            ),
            monitor: nanos(r.monitor),
            max_failure_ratio: r.max_failure_ratio,
            order: Some(
                r.order
                    .as_deref()
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST),
            ),
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(if d.endpoint_mode.as_deref() == Some("dnsrr") {
                EndpointSpecModeEnum::DNSRR
            } else {
                EndpointSpecModeEnum::VIP
            }),
            ports: Some(
                svc.ports
                    .iter()
                    .map(|p| EndpointPortConfig {
                        protocol: p.protocol.parse::<EndpointPortConfigProtocolEnum>().ok(),
                        target_port: Some(i64::from(p.target)),
                        published_port: p.published.map(i64::from),
                        publish_mode: Some(if p.mode == "host" {
                            EndpointPortConfigPublishModeEnum::HOST
                        } else {
                            EndpointPortConfigPublishModeEnum::INGRESS
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    }
}

/// The release image `image` (as a compose file names it: any tag) stands for, pinned.
pub fn release_pin(release: &Release, image: &str) -> Option<String> {
    let repo = repository_of(image);
    release
        .images
        .iter()
        .find(|i| repository_of(&i.name) == repo)
        .map(|i| i.reference())
}

/// `registry/name` of `registry/name:tag@digest`.
fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

fn engine_error(e: ferry_exec::bollard::errors::Error) -> String {
    match e {
        ferry_exec::bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

fn label_filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    [(
        "label".to_string(),
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )]
    .into()
}

impl SwarmTarget {
    fn docker(&self) -> Result<&Arc<DockerExecutor>, String> {
        self.docker
            .as_ref()
            .ok_or_else(|| "the `swarm` target needs Docker, which is not available here".into())
    }

    /// The compose file of the release, loaded for the environment.
    fn load(&self, ctx: &DeployContext<'_>) -> Result<(Compose, std::path::PathBuf), String> {
        let sealed = ctx.release_dir.join(sealed_path(&self.compose));
        let source = std::fs::read_to_string(&sealed).map_err(|e| {
            format!(
                "the compose file {} is not in release {}: {e}",
                self.compose, ctx.release.name
            )
        })?;
        let secrets: Vec<&str> = ctx.secrets.iter().map(|(n, _)| n.as_str()).collect();
        let lookup = |name: &str| {
            if secrets.contains(&name) {
                return Lookup::Secret;
            }
            if let Some(v) = ctx.vars.get(name) {
                return Lookup::Value(v.clone());
            }
            match ctx
                .env
                .iter()
                .find(|(k, _)| k == name && k.starts_with("FERRY_"))
            {
                Some((_, v)) if name != "FERRY_RELEASE_DIR" && name != "FERRY_SECRETS_DIR" => {
                    Lookup::Value(v.clone())
                }
                _ => Lookup::Missing,
            }
        };
        let compose = compose::load(&source, &lookup).map_err(|diags| {
            ferry_config::diagnostic::render_all(&diags, &self.compose, &source, false)
                .trim_end()
                .to_string()
        })?;
        let dir = sealed
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Ok((compose, dir))
    }

    /// The content of every config and secret the stack creates.
    fn contents(
        &self,
        ctx: &DeployContext<'_>,
        compose: &Compose,
        dir: &std::path::Path,
    ) -> Result<BTreeMap<(bool, String), Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (secret, list) in [(false, &compose.configs), (true, &compose.secrets)] {
            let kind = if secret { "secret" } else { "config" };
            for o in list {
                let data = match &o.source {
                    ObjectSource::Content(text) => text.clone().into_bytes(),
                    ObjectSource::File(f) => {
                        let path = dir.join(f.value.trim_start_matches("./"));
                        std::fs::read(&path).map_err(|e| {
                            format!("{}:{}:{}: the {kind} `{}` reads {}: {e}", self.compose, f.span.start.line, f.span.start.col, o.name, f.value)
                        })?
                    }
                    ObjectSource::Environment(name) if secret => ctx
                        .secrets
                        .iter()
                        .find(|(n, _)| *n == name.value)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| {
                            format!(
                                "{}:{}:{}: the secret `{}` takes the secret {} of environment {}, which is not set (`ferry secrets set {} --env {}`)",
                                self.compose, name.span.start.line, name.span.start.col, o.name, name.value, ctx.environment(), name.value, ctx.environment()
                            )
                        })?,
                    ObjectSource::Environment(name) => ctx
                        .vars
                        .get(&name.value)
                        .map(|v| v.clone().into_bytes())
                        .ok_or_else(|| {
                            format!(
                                "{}:{}:{}: the config `{}` takes the variable {} of environment {}, which is not set",
                                self.compose, name.span.start.line, name.span.start.col, o.name, name.value, ctx.environment()
                            )
                        })?,
                };
                out.insert((secret, o.name.clone()), data);
            }
        }
        Ok(out)
    }

    /// The stack's services (by the Ferry scope label).
    async fn services_of(docker: &DockerExecutor, scope: &str) -> Result<Vec<Service>, String> {
        docker
            .engine()
            .list_services(Some(ListServicesOptions {
                filters: Some(label_filter(&[(SCOPE, scope)])),
                ..Default::default()
            }))
            .await
            .map_err(engine_error)
    }

    async fn tasks_of(docker: &DockerExecutor, service_id: &str) -> Vec<Task> {
        docker
            .engine()
            .list_tasks(Some(ListTasksOptions {
                filters: Some([("service".to_string(), vec![service_id.to_string()])].into()),
            }))
            .await
            .unwrap_or_default()
    }

    async fn ensure_object(
        docker: &DockerExecutor,
        o: &Object,
        labels: &HashMap<String, String>,
    ) -> Result<String, String> {
        use base64::Engine as _;
        let engine = docker.engine();
        let found = Self::find_object(docker, o.secret, &o.name).await?;
        if let Some(id) = found {
            return Ok(id);
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&o.data);
        let created = if o.secret {
            engine
                .create_secret(SecretSpec {
                    name: Some(o.name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(data),
                    ..Default::default()
                })
                .await
        } else {
            engine
                .create_config(ConfigSpec {
                    name: Some(o.name.clone()),
                    labels: Some(labels.clone()),
                    data: Some(data),
                    ..Default::default()
                })
                .await
        };
        created
            .map(|r| r.id)
            .map_err(|e| format!("cannot create {}: {}", o.name, engine_error(e)))
    }

    /// The id of the config or secret called `name`, if the swarm has one.
    async fn find_object(
        docker: &DockerExecutor,
        secret: bool,
        name: &str,
    ) -> Result<Option<String>, String> {
        let engine = docker.engine();
        let by_name: HashMap<String, Vec<String>> =
            [("name".to_string(), vec![name.to_string()])].into();
        // The engine's name filter matches prefixes: the exact name is picked out.
        let found: Vec<(Option<String>, Option<String>)> = if secret {
            engine
                .list_secrets(Some(ListSecretsOptions {
                    filters: Some(by_name),
                }))
                .await
                .map_err(engine_error)?
                .into_iter()
                .map(|s| (s.spec.and_then(|s| s.name), s.id))
                .collect()
        } else {
            engine
                .list_configs(Some(ListConfigsOptions {
                    filters: Some(by_name),
                }))
                .await
                .map_err(engine_error)?
                .into_iter()
                .map(|c| (c.spec.and_then(|s| s.name), c.id))
                .collect()
        };
        Ok(found
            .into_iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .and_then(|(_, id)| id))
    }

    /// Waits until every service runs its current spec, Swarm rolled one back, a new
    /// task failed, or the time is up.
    async fn converge(
        docker: &DockerExecutor,
        names: &[String],
        since: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
        log: &mut DeployLog,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut done: Vec<String> = Vec::new();
        loop {
            let mut waiting = Vec::new();
            let pending: Vec<String> = names
                .iter()
                .filter(|n| !done.contains(n))
                .cloned()
                .collect();
            for name in &pending {
                let service = docker
                    .engine()
                    .inspect_service(name, None)
                    .await
                    .map_err(|e| format!("service {name}: {}", engine_error(e)))?;
                match converged(
                    &service,
                    &Self::tasks_of(docker, service.id.as_deref().unwrap_or(name)).await,
                    since,
                ) {
                    Ok(true) => {
                        log.line(&format!("service {name}: running"));
                        done.push(name.clone());
                    }
                    Ok(false) => waiting.push(name.clone()),
                    Err(why) => return Err(format!("service {name}: {why}")),
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not run the new release within {}s",
                    waiting.join(", "),
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes every service, network, config and secret of the environment's stack.
    async fn remove_all(docker: &DockerExecutor, scope: &str) {
        let engine = docker.engine();
        for s in Self::services_of(docker, scope).await.unwrap_or_default() {
            if let Some(id) = s.id {
                let _ = engine.delete_service(&id).await;
            }
        }
        // Networks and objects go once the tasks holding them are gone.
        for _ in 0..40 {
            let left = engine
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(label_filter(&[(SCOPE, scope)])),
                }))
                .await
                .map(|t| t.len())
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Self::remove_unused(docker, scope, &[]).await;
        if let Ok(nets) = engine
            .list_networks(Some(
                ferry_exec::bollard::query_parameters::ListNetworksOptions {
                    filters: Some(label_filter(&[(SCOPE, scope)])),
                },
            ))
            .await
        {
            for n in nets {
                if let Some(id) = n.id {
                    let _ = engine.remove_network(&id).await;
                }
            }
        }
    }

    /// Deletes the scope's configs and secrets that no service in `services` uses. (Swarm's
    /// own rollback of a later update goes back to these specs, whose objects are kept;
    /// Ferry's rollback deploys a release again, creating what it needs.)
    async fn remove_unused(docker: &DockerExecutor, scope: &str, services: &[Service]) {
        let engine = docker.engine();
        let mut used = Vec::new();
        for s in services {
            if let Some(spec) = s.spec.as_ref() {
                let c = spec
                    .task_template
                    .as_ref()
                    .and_then(|t| t.container_spec.as_ref());
                for x in c.and_then(|c| c.secrets.as_ref()).into_iter().flatten() {
                    used.extend(x.secret_id.clone());
                }
                for x in c.and_then(|c| c.configs.as_ref()).into_iter().flatten() {
                    used.extend(x.config_id.clone());
                }
            }
        }
        let filters = label_filter(&[(SCOPE, scope)]);
        for s in engine
            .list_secrets(Some(ListSecretsOptions {
                filters: Some(filters.clone()),
            }))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = s.id.filter(|id| !used.contains(id)) {
                let _ = engine.delete_secret(&id).await;
            }
        }
        for c in engine
            .list_configs(Some(ListConfigsOptions {
                filters: Some(filters),
            }))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = c.id.filter(|id| !used.contains(id)) {
                let _ = engine.delete_config(&id).await;
            }
        }
    }

    /// Why a service of the environment's stack does not run as it should (`None`: all
    /// run).
    async fn trouble(
        docker: &DockerExecutor,
        scope: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Option<String> {
        let services = Self::services_of(docker, scope).await.ok()?;
        if services.is_empty() {
            return Some("the stack has no services any more".into());
        }
        for s in services {
            let name = s
                .spec
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default();
            let tasks = Self::tasks_of(docker, s.id.as_deref().unwrap_or_default()).await;
            let current = current_tasks(&s, &tasks);
            if let Some(since) = since
                && let Some(t) = current
                    .iter()
                    .find(|t| failed(t) && created(t) >= Some(since))
            {
                return Some(format!("service {name}: {}", task_error(t)));
            }
            if let Some(want) = replicas(&s) {
                let running = current
                    .iter()
                    .filter(|t| state(t) == Some(TaskState::RUNNING))
                    .count() as i64;
                if running < want {
                    return Some(format!("service {name}: {running} of {want} tasks running"));
                }
            }
        }
        None
    }
}

fn state(t: &Task) -> Option<TaskState> {
    t.status.as_ref().and_then(|s| s.state)
}

fn failed(t: &Task) -> bool {
    matches!(
        state(t),
        Some(TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED)
    )
}

fn created(t: &Task) -> Option<chrono::DateTime<chrono::Utc>> {
    t.created_at
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.to_utc())
}

fn task_error(t: &Task) -> String {
    let status = t.status.clone().unwrap_or_default();
    let code = status
        .container_status
        .and_then(|c| c.exit_code)
        .filter(|c| *c != 0);
    let mut why = status
        .err
        .or(status.message)
        .unwrap_or_else(|| "failed".into());
    if let Some(code) = code {
        why = format!("{why} (exit code {code})");
    }
    format!(
        "task {}: {why}",
        t.slot.map(|s| s.to_string()).unwrap_or_default()
    )
}

fn replicas(s: &Service) -> Option<i64> {
    s.spec
        .as_ref()?
        .mode
        .as_ref()?
        .replicated
        .as_ref()?
        .replicas
}

/// The service's tasks of its current spec.
fn current_tasks<'t>(s: &Service, tasks: &'t [Task]) -> Vec<&'t Task> {
    tasks.iter().filter(|t| of_current_spec(s, t)).collect()
}

/// Whether task `t` was made from the service's current spec. (The engine fills in the
/// service's `Runtime`, which its tasks do not carry: it is left out.)
fn of_current_spec(s: &Service, t: &Task) -> bool {
    let normal = |spec: Option<&TaskSpec>| {
        spec.cloned().map(|mut spec| {
            spec.runtime = None;
            spec
        })
    };
    normal(t.spec.as_ref()) == normal(s.spec.as_ref().and_then(|s| s.task_template.as_ref()))
}

/// Whether `service` runs its current spec everywhere (`Err`: it will not): every
/// replica a running task of the current spec, no task of an older spec meant to run.
/// (Swarm's update may still be monitoring the new tasks: a task that fails then is
/// seen by Ferry's verification, and a rollback Swarm makes, by the health watch.)
fn converged(
    service: &Service,
    tasks: &[Task],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<bool, String> {
    if let Some(u) = &service.update_status {
        let started = u
            .started_at
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.to_utc());
        if started.is_none_or(|s| s >= since) {
            match u.state {
                Some(
                    ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                ) => {
                    return Err(format!(
                        "Swarm rolled the update back: {}",
                        u.message.clone().unwrap_or_default()
                    ));
                }
                Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                    return Err(format!(
                        "the update is paused: {}",
                        u.message.clone().unwrap_or_default()
                    ));
                }
                _ => {}
            }
        }
    }
    let current = current_tasks(service, tasks);
    if let Some(t) = current
        .iter()
        .find(|t| failed(t) && created(t).is_some_and(|c| c >= since))
    {
        return Err(task_error(t));
    }
    let running = current
        .iter()
        .filter(|t| {
            state(t) == Some(TaskState::RUNNING) && t.desired_state == Some(TaskState::RUNNING)
        })
        .count() as i64;
    let others = tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING) && !of_current_spec(service, t))
        .count();
    Ok(match replicas(service) {
        Some(want) => running >= want && others == 0,
        None => {
            running > 0
                && others == 0
                && current.iter().all(|t| {
                    t.desired_state != Some(TaskState::RUNNING)
                        || state(t) == Some(TaskState::RUNNING)
                })
        }
    })
}

#[async_trait::async_trait]
impl Target for SwarmTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let docker = self.docker()?.clone();
        let engine = docker.engine();
        let swarm = engine.inspect_swarm().await.map_err(|e| {
            format!(
                "the Docker engine is not a swarm manager ({}): run `docker swarm init` on it",
                engine_error(e)
            )
        })?;
        let _ = swarm;
        let stack = match &self.stack {
            Some(s) => ctx.eval(s)?,
            None => default_stack(ctx.deployment),
        };
        check_stack(&stack)?;
        let scope = ctx.scope();
        let (compose, dir) = self.load(ctx)?;
        if !compose.ignored.is_empty() {
            ctx.log.line(&format!(
                "ignoring what a Swarm stack does not use (as `docker stack deploy` does): {}",
                compose.ignored.join(", ")
            ));
        }
        let contents = self.contents(ctx, &compose, &dir)?;
        // The stack's name must not hold another environment's services.
        let held = engine
            .list_services(Some(ListServicesOptions {
                filters: Some(label_filter(&[(NAMESPACE, &stack)])),
                ..Default::default()
            }))
            .await
            .map_err(engine_error)?;
        if let Some(other) = held.iter().find(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(SCOPE))
                != Some(&scope)
        }) {
            return Err(format!(
                "stack {stack} already holds service {}, which this environment did not deploy: choose another `stack:`",
                other
                    .spec
                    .as_ref()
                    .and_then(|s| s.name.clone())
                    .unwrap_or_default()
            ));
        }
        // Nor its networks or volumes: a destroyed environment's volumes stay, and are
        // not another's to take.
        let foreign = |labels: Option<&HashMap<String, String>>| {
            labels.and_then(|l| l.get(SCOPE)) != Some(&scope)
        };
        let on_stack = label_filter(&[(NAMESPACE, &stack)]);
        let volumes = engine
            .list_volumes(Some(
                ferry_exec::bollard::query_parameters::ListVolumesOptions {
                    filters: Some(on_stack.clone()),
                },
            ))
            .await
            .map_err(engine_error)?;
        if let Some(v) = volumes
            .volumes
            .iter()
            .flatten()
            .find(|v| foreign(Some(&v.labels)))
        {
            return Err(format!(
                "stack {stack} has volume {}, which is not this environment's: choose another `stack:`",
                v.name
            ));
        }
        let labels_for = |name: String| async move {
            engine
                .inspect_network(
                    &name,
                    None::<ferry_exec::bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .ok()
                .map(|n| (name, n.labels))
        };
        for net in networks(&stack, &compose, &HashMap::new()) {
            if let Some((name, labels)) = labels_for(net.name).await
                && foreign(labels.as_ref())
            {
                return Err(format!(
                    "network {name} exists and is not this environment's: choose another `stack:`"
                ));
            }
        }
        let logins = self
            .store
            .registry_credentials(&self.key, &ctx.deployment.repository_id)
            .await
            .map_err(|e| format!("cannot open the registry logins: {e}"))?;
        let logins = ferry_exec::Logins::new(logins);
        // Images: a release image by the release's digest; any other by the digest its
        // registry has for it now (as `docker stack deploy` does).
        let mut pins = BTreeMap::new();
        for svc in &compose.services {
            let image = &svc.image.value;
            if pins.contains_key(image) {
                continue;
            }
            if let Some(pinned) = release_pin(ctx.release, image) {
                pins.insert(image.clone(), pinned);
            } else if !image.contains('@') {
                match engine
                    .inspect_registry_image(image, docker.credentials_for(image, &logins))
                    .await
                {
                    Ok(d) => {
                        if let Some(digest) = d.descriptor.digest {
                            pins.insert(image.clone(), format!("{image}@{digest}"));
                        }
                    }
                    Err(e) => ctx.log.line(&format!(
                        "{image}: not pinned to a digest ({}); each node pulls it by its tag",
                        engine_error(e)
                    )),
                }
            }
        }
        let labels: HashMap<String, String> = [
            (NAMESPACE.to_string(), stack.clone()),
            (SCOPE.to_string(), scope.clone()),
        ]
        .into();
        for net in networks(&stack, &compose, &labels) {
            if engine
                .inspect_network(
                    &net.name,
                    None::<ferry_exec::bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .is_err()
            {
                ctx.log.line(&format!("creating network {}", net.name));
                let name = net.name.clone();
                engine
                    .create_network(net)
                    .await
                    .map_err(|e| format!("cannot create network {name}: {}", engine_error(e)))?;
            }
        }
        let mut ids = BTreeMap::new();
        for o in objects(&stack, &compose, &contents) {
            let id = Self::ensure_object(&docker, &o, &labels).await?;
            ids.insert((o.secret, o.key.clone()), (o.name.clone(), id));
        }
        ctx.log.line(&format!(
            "stack {stack}: {} service(s), {} config(s), {} secret(s)",
            compose.services.len(),
            compose.configs.len(),
            compose.secrets.len()
        ));
        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        let input = SpecInput {
            stack: &stack,
            scope: &scope,
            release: &ctx.release.name,
            pins: &pins,
            ids: &ids,
        };
        let mut names = Vec::new();
        for svc in &compose.services {
            let spec = service_spec(&compose, svc, &input);
            let name = spec.name.clone().unwrap_or_default();
            let image = spec
                .task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let creds = docker.credentials_for(&image, &logins);
            match held
                .iter()
                .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(&name))
            {
                Some(existing) => {
                    let version = existing.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                    ctx.log.line(&format!("updating service {name} to {image}"));
                    engine
                        .update_service(
                            &name,
                            spec,
                            UpdateServiceOptions {
                                version: version as i32,
                                ..Default::default()
                            },
                            creds,
                        )
                        .await
                        .map_err(|e| {
                            format!("cannot update service {name}: {}", engine_error(e))
                        })?;
                }
                None => {
                    ctx.log
                        .line(&format!("creating service {name} with {image}"));
                    engine.create_service(spec, creds).await.map_err(|e| {
                        format!("cannot create service {name}: {}", engine_error(e))
                    })?;
                }
            }
            names.push(name);
        }
        Self::converge(
            &docker,
            &names,
            since,
            self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            ctx.log,
        )
        .await
    }

    async fn alive(&self, dep: &Deployment, _release: &str) -> Option<String> {
        let docker = self.docker.as_ref()?;
        Self::trouble(docker, &scope(dep), None).await
    }

    async fn watch(&self, dep: &Deployment, _release: &str) -> WorkloadCheck {
        let Some(docker) = self.docker.clone() else {
            return super::never_dies();
        };
        let state: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let watch = Arc::downgrade(&state);
        let scope = scope(dep);
        let since = chrono::Utc::now();
        tokio::spawn(async move {
            loop {
                let trouble = Self::trouble(&docker, &scope, Some(since)).await;
                let Some(watch) = watch.upgrade() else { break };
                if let Ok(mut w) = watch.lock() {
                    *w = trouble;
                }
                drop(watch);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        Arc::new(move || state.lock().ok().and_then(|s| s.clone()))
    }

    /// After a release goes live: the services it no longer has go, and so do configs
    /// and secrets no service uses.
    async fn tidy(&self, dep: &Deployment, release: &str, failed: bool, log: &mut DeployLog) {
        let Some(docker) = &self.docker else { return };
        let scope = scope(dep);
        if failed {
            // Services the failed release added go (the rollback puts back those it
            // changed): nothing it brought keeps running.
            let started = dep
                .started_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t - chrono::Duration::seconds(1));
            for s in Self::services_of(docker, &scope).await.unwrap_or_default() {
                let of = s
                    .spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(RELEASE));
                let created = s
                    .created_at
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                    .map(|d| d.to_utc());
                if of.map(String::as_str) == Some(release)
                    && started.is_some_and(|t| created.is_some_and(|c| c >= t))
                    && let Some(id) = &s.id
                {
                    log.line(&format!(
                        "removing service {}, which the failed release added",
                        s.spec
                            .as_ref()
                            .and_then(|s| s.name.clone())
                            .unwrap_or_default()
                    ));
                    let _ = docker.engine().delete_service(id).await;
                }
            }
            return;
        }
        let Ok(services) = Self::services_of(docker, &scope).await else {
            return;
        };
        let mut kept = Vec::new();
        for s in services {
            let of = s
                .spec
                .as_ref()
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(RELEASE))
                .cloned();
            if of.as_deref() == Some(release) {
                kept.push(s);
            } else if let Some(id) = &s.id {
                log.line(&format!(
                    "removing service {}, which release {release} no longer has",
                    s.spec
                        .as_ref()
                        .and_then(|s| s.name.clone())
                        .unwrap_or_default()
                ));
                let _ = docker.engine().delete_service(id).await;
            }
        }
        Self::remove_unused(docker, &scope, &kept).await;
    }

    async fn stop(&self, dep: &Deployment) {
        let Some(docker) = &self.docker else { return };
        Self::remove_all(docker, &scope(dep)).await;
    }

    fn replaces_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
