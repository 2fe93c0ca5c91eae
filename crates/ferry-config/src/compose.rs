//! Compose files for the `swarm` deploy target: the part of the Compose specification a
//! Docker Swarm stack uses (what `docker stack deploy` reads), loaded strictly.
//!
//! Loading goes in two passes over the YAML tree: first every value (never a key) has
//! its `${VAR}` references replaced from the environment's variables
//! ([`interpolate`]), then the tree becomes a [`Compose`]. Every error names the
//! line and column it comes from. Keys Swarm cannot honour but `docker stack deploy`
//! ignores (`build`, `depends_on`, `container_name`, `restart`...) are ignored the same
//! way and listed in [`Compose::ignored`]; any other unknown key is an error.

use std::time::Duration;

use crate::diagnostic::{Diagnostic, Span};
use crate::load::Loader;
use crate::model::Spanned;
use crate::yaml::{Kind, Node};

/// Top-level keys.
pub const TOP_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "configs", "secrets",
];
/// Keys of a service.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "labels",
    "ports",
    "networks",
    "volumes",
    "configs",
    "secrets",
    "deploy",
    "healthcheck",
    "hostname",
    "user",
    "working_dir",
    "stop_grace_period",
    "stop_signal",
    "init",
    "read_only",
    "tty",
    "stdin_open",
    "extra_hosts",
    "dns",
    "dns_search",
    "cap_add",
    "cap_drop",
    "sysctls",
    "tmpfs",
    "logging",
];
/// Keys of a service that `docker stack deploy` ignores, and so does Ferry (with a
/// line in the deployment's log).
pub const IGNORED_SERVICE_KEYS: &[&str] = &[
    "build",
    "depends_on",
    "container_name",
    "restart",
    "links",
    "external_links",
    "expose",
    "network_mode",
    "pid",
    "ipc",
    "devices",
    "privileged",
    "security_opt",
    "cgroup_parent",
    "userns_mode",
    "shm_size",
    "profiles",
    "pull_policy",
    "env_file",
];
pub const DEPLOY_KEYS: &[&str] = &[
    "mode",
    "replicas",
    "labels",
    "update_config",
    "rollback_config",
    "restart_policy",
    "resources",
    "placement",
    "endpoint_mode",
];
pub const UPDATE_KEYS: &[&str] = &[
    "parallelism",
    "delay",
    "failure_action",
    "monitor",
    "max_failure_ratio",
    "order",
];
pub const RESTART_KEYS: &[&str] = &["condition", "delay", "max_attempts", "window"];
pub const RESOURCES_KEYS: &[&str] = &["limits", "reservations"];
pub const LIMIT_KEYS: &[&str] = &["cpus", "memory", "pids"];
pub const PLACEMENT_KEYS: &[&str] = &["constraints", "preferences", "max_replicas_per_node"];
pub const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
    "disable",
];
pub const PORT_KEYS: &[&str] = &["target", "published", "protocol", "mode", "host_ip", "name"];
pub const VOLUME_MOUNT_KEYS: &[&str] =
    &["type", "source", "target", "read_only", "volume", "tmpfs"];
pub const OBJECT_REF_KEYS: &[&str] = &["source", "target", "uid", "gid", "mode"];
pub const NETWORK_KEYS: &[&str] = &[
    "driver",
    "driver_opts",
    "attachable",
    "internal",
    "external",
    "name",
    "labels",
];
pub const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "external", "name", "labels"];
pub const CONFIG_KEYS: &[&str] = &[
    "file",
    "environment",
    "content",
    "external",
    "name",
    "labels",
];
pub const SECRET_KEYS: &[&str] = &["file", "environment", "external", "name", "labels"];

/// A compose file, loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compose {
    pub services: Vec<Service>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
    pub configs: Vec<Object>,
    pub secrets: Vec<Object>,
    /// `service: key` for every key ignored (see [`IGNORED_SERVICE_KEYS`]).
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    pub name: String,
    pub image: Spanned<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`, in order.
    pub environment: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<Port>,
    /// Networks with their aliases; empty: the stack's `default` network.
    pub networks: Vec<(Spanned<String>, Vec<String>)>,
    pub volumes: Vec<Mount>,
    pub configs: Vec<ObjectRef>,
    pub secrets: Vec<ObjectRef>,
    pub deploy: Deploy,
    pub healthcheck: Option<Healthcheck>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_grace_period: Option<Duration>,
    pub stop_signal: Option<String>,
    pub init: Option<bool>,
    pub read_only: Option<bool>,
    pub tty: Option<bool>,
    pub stdin_open: Option<bool>,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    pub tmpfs: Vec<String>,
    pub logging: Option<Logging>,
    pub span: Span,
}

/// `logging:` of a service: the driver and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logging {
    pub driver: Option<String>,
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub target: u16,
    pub published: Option<u16>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `ingress` (Swarm's routing mesh, the default) or `host`.
    pub mode: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub kind: MountKind,
    /// A volume's name (of the stack's `volumes:`), a host path, or nothing (an
    /// anonymous volume, a tmpfs).
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub no_copy: bool,
    pub tmpfs_size: Option<i64>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The name in the stack's `configs:` or `secrets:`.
    pub source: Spanned<String>,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deploy {
    /// `replicated` (default) or `global`.
    pub global: bool,
    pub replicas: Option<u64>,
    pub labels: Vec<(String, String)>,
    pub update: Option<UpdateConfig>,
    pub rollback: Option<UpdateConfig>,
    pub restart: Option<RestartPolicy>,
    pub limits: Resources,
    pub reservations: Resources,
    pub constraints: Vec<String>,
    /// `spread` descriptors.
    pub preferences: Vec<String>,
    pub max_replicas_per_node: Option<u64>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<Duration>,
    /// `continue`, `rollback` or `pause`.
    pub failure_action: Option<String>,
    pub monitor: Option<Duration>,
    pub max_failure_ratio: Option<f64>,
    /// `stop-first` or `start-first`.
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    pub condition: Option<String>,
    pub delay: Option<Duration>,
    pub max_attempts: Option<u64>,
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory: Option<i64>,
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Option<Vec<String>>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u64>,
    pub disable: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    pub name: String,
    /// An existing network (of that name, or `name:`), not created by the stack.
    pub external: bool,
    /// `name:`: the network's own name instead of `STACK_NAME`.
    pub real_name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Vec<(String, String)>,
    pub attachable: bool,
    pub internal: bool,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Volume {
    pub name: String,
    pub external: bool,
    pub real_name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
}

/// The capabilities a Docker container has by default: adding them is allowed (it changes
/// nothing); any other is refused.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];

const OWN_HELP: &str = "a stack's networks, volumes, configs and secrets are its own (`STACK_NAME`): \
    naming another (`external`, `name`) would reach another environment's, or the host's";

const PORT_HELP: &str =
    "publish a port from 1024 up (Swarm publishes on every address of the node)";

/// A config or a secret of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub source: ObjectSource,
    pub labels: Vec<(String, String)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSource {
    /// A file beside the compose file (sealed into the release).
    File(Spanned<String>),
    /// The environment's variable (configs) or secret (secrets) of that name.
    Environment(Spanned<String>),
    /// The text itself (configs only), interpolated.
    Content(String),
}

/// What a `${NAME}` in a compose file finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Value(String),
    /// A secret: its value must not be written into a service's definition.
    Secret,
    Missing,
}

/// `text` with its `${NAME}`, `$NAME`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:?message}`, `${NAME?message}`, `${NAME:+other}`, `${NAME+other}` replaced
/// as Compose does, and `$$` as `$`. The error says which reference failed.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Lookup) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(|| {
                format!("`${{{body}` has no closing `}}`: write `$${{` for a literal `${{`")
            })?;
            out.push_str(&substitute(&body[..end], lookup)?);
            rest = &body[end + 1..];
        } else {
            let len = after
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
                })
                .map_or(after.len(), |(i, _)| i);
            if len == 0 {
                // A lone `$` is kept, as Compose keeps it.
                out.push('$');
                rest = after;
                continue;
            }
            out.push_str(&value_of(&after[..len], lookup)?.unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the `}` closing a `${` is, counting nested `${ }` in defaults.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn value_of(name: &str, lookup: &dyn Fn(&str) -> Lookup) -> Result<Option<String>, String> {
    match lookup(name) {
        Lookup::Value(v) => Ok(Some(v)),
        Lookup::Missing => Ok(None),
        Lookup::Secret => Err(format!(
            "`{name}` is a secret, and a secret is not written into a service's definition: \
             give it to the service with `secrets:` (a top-level secret with `environment: {name}`)"
        )),
    }
}

fn substitute(body: &str, lookup: &dyn Fn(&str) -> Lookup) -> Result<String, String> {
    let len = body
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    let (name, op) = body.split_at(len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`${{{body}}}` does not start with a variable's name"
        ));
    }
    let value = value_of(name, lookup)?;
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let arg = |skip: usize| interpolate(&op[skip..], lookup);
    Ok(match op {
        "" => value.unwrap_or_default(),
        _ if op.starts_with(":-") => {
            if non_empty {
                value.unwrap_or_default()
            } else {
                arg(2)?
            }
        }
        _ if op.starts_with('-') => {
            if set {
                value.unwrap_or_default()
            } else {
                arg(1)?
            }
        }
        _ if op.starts_with(":?") || op.starts_with('?') => {
            let ok = if op.starts_with(':') { non_empty } else { set };
            if !ok {
                let msg = arg(if op.starts_with(':') { 2 } else { 1 })?;
                return Err(if msg.is_empty() {
                    format!("`{name}` is required and is not set for this environment")
                } else {
                    format!("`{name}` is not set for this environment: {msg}")
                });
            }
            value.unwrap_or_default()
        }
        _ if op.starts_with(":+") => {
            if non_empty {
                arg(2)?
            } else {
                String::new()
            }
        }
        _ if op.starts_with('+') => {
            if set {
                arg(1)?
            } else {
                String::new()
            }
        }
        _ => return Err(format!("`${{{body}}}`: unknown operator after `{name}`")),
    })
}

/// Loads a compose file, its `${VAR}`s replaced through `lookup`.
pub fn load(source: &str, lookup: &dyn Fn(&str) -> Lookup) -> Result<Compose, Vec<Diagnostic>> {
    let root = match crate::yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(vec![
                Diagnostic::error(Span::default_at_start(), "the compose file is empty")
                    .with_help("describe the stack's `services:`"),
            ]);
        }
        Err(d) => return Err(vec![d]),
    };
    let mut diags = Vec::new();
    let root = interpolated(root, lookup, &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    let mut l = Loader::new();
    let compose = l.compose(&root);
    if l.diags.iter().any(Diagnostic::is_error) {
        Err(l.diags)
    } else {
        Ok(compose)
    }
}

/// The tree with every scalar value interpolated (keys are left as written).
fn interpolated(node: Node, lookup: &dyn Fn(&str) -> Lookup, diags: &mut Vec<Diagnostic>) -> Node {
    let kind = match node.kind {
        Kind::Scalar(s, style) => match interpolate(&s, lookup) {
            Ok(v) => Kind::Scalar(v, style),
            Err(msg) => {
                diags.push(
                    Diagnostic::error(node.span, msg)
                        .with_help("set the variable for the environment (`ferry vars set`), or give a default: `${NAME:-default}`"),
                );
                Kind::Scalar(s, style)
            }
        },
        Kind::Seq(items) => Kind::Seq(
            items
                .into_iter()
                .map(|n| interpolated(n, lookup, diags))
                .collect(),
        ),
        Kind::Map(items) => Kind::Map(
            items
                .into_iter()
                .map(|(k, v)| {
                    let v = if k.as_str().is_some_and(|k| k.starts_with("x-")) {
                        v
                    } else {
                        interpolated(v, lookup, diags)
                    };
                    (k, v)
                })
                .collect(),
        ),
    };
    Node {
        kind,
        span: node.span,
    }
}

/// `512m`, `1g`, `1.5G`, `1024`, `100kb`: bytes.
pub fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1i64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as i64)
}

/// Compose durations: `10s`, `1m30s`, `500ms`, `1h`, and Go's `1.5s`, `2us`.
fn parse_compose_duration(text: &str) -> Option<Duration> {
    if let Ok(d) = crate::duration::parse_duration(text) {
        return Some(d);
    }
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(Duration::from_secs_f64(total))
}

impl Loader {
    fn compose(&mut self, root: &Node) -> Compose {
        let mut c = Compose::default();
        let example = "`services: { web: { image: registry/app } }`";
        let top = self.entries_x(root, "the compose file", TOP_KEYS, example);
        let mut saw_services = false;
        for (k, _, v) in top {
            match k {
                "version" | "name" => {}
                "services" => {
                    saw_services = true;
                    for (name, key, s) in self.entries(v, "`services`", None, example) {
                        if let Some(svc) = self.service(name, key, s, &mut c.ignored) {
                            c.services.push(svc);
                        }
                    }
                }
                "networks" => {
                    for (name, _, n) in
                        self.entries(v, "`networks`", None, "`networks: { back: {} }`")
                    {
                        c.networks.push(self.network(name, n));
                    }
                }
                "volumes" => {
                    for (name, _, n) in
                        self.entries(v, "`volumes`", None, "`volumes: { data: {} }`")
                    {
                        c.volumes.push(self.volume(name, n));
                    }
                }
                "configs" => {
                    for (name, key, n) in self.entries(
                        v,
                        "`configs`",
                        None,
                        "`configs: { app_conf: { file: ./app.conf } }`",
                    ) {
                        if let Some(o) = self.object(name, key, n, true) {
                            c.configs.push(o);
                        }
                    }
                }
                _ => {
                    for (name, key, n) in self.entries(
                        v,
                        "`secrets`",
                        None,
                        "`secrets: { token: { environment: TOKEN } }`",
                    ) {
                        if let Some(o) = self.object(name, key, n, false) {
                            c.secrets.push(o);
                        }
                    }
                }
            }
        }
        if !saw_services || c.services.is_empty() && self.diags.is_empty() {
            self.error(
                root.span.start_only(),
                "the compose file has no services",
                "describe them under `services:`, e.g. `services: { web: { image: registry/app } }`",
            );
        }
        self.references(&c);
        c
    }

    /// Like `entries`, accepting `x-` extension keys (and leaving them out).
    fn entries_x<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
        example: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let Kind::Map(items) = &node.kind else {
            self.type_error(node, what, "a mapping", example);
            return Vec::new();
        };
        let filtered = Node {
            kind: Kind::Map(
                items
                    .iter()
                    .filter(|(k, _)| !k.as_str().is_some_and(|k| k.starts_with("x-")))
                    .cloned()
                    .collect(),
            ),
            span: node.span,
        };
        let keys: Vec<(String, usize)> = self
            .entries(&filtered, what, Some(allowed), example)
            .into_iter()
            .map(|(k, key, _)| {
                (
                    k.to_string(),
                    key.span.start.line * 100_000 + key.span.start.col,
                )
            })
            .collect();
        // Point back into the original tree (entries borrowed the filtered copy).
        keys.into_iter()
            .filter_map(|(k, at)| {
                items
                    .iter()
                    .find(|(key, _)| {
                        key.as_str() == Some(k.as_str())
                            && key.span.start.line * 100_000 + key.span.start.col == at
                    })
                    .map(|(key, v)| (key.as_str().unwrap_or_default(), key, v))
            })
            .collect()
    }

    fn service(
        &mut self,
        name: &str,
        key: &Node,
        node: &Node,
        ignored: &mut Vec<String>,
    ) -> Option<Service> {
        let what = format!("service `{name}`");
        let mut allowed: Vec<&str> = SERVICE_KEYS.to_vec();
        allowed.extend(IGNORED_SERVICE_KEYS);
        if !valid_name(name) {
            self.error(
                key.span,
                format!("`{name}` is not a valid service name"),
                "use letters, digits, `-` and `_`",
            );
        }
        let mut s = Service {
            name: name.to_string(),
            span: key.span,
            ..Service::default()
        };
        let mut image = None;
        for (k, kn, v) in self.entries_x(node, &what, &allowed, "`{ image: registry/app }`") {
            let w = format!("`{k}` of {what}");
            if IGNORED_SERVICE_KEYS.contains(&k) {
                ignored.push(format!("{name}: {k}"));
                continue;
            }
            let _ = kn;
            match k {
                "image" => {
                    image = self
                        .string(v, &w, "`image: registry/app`")
                        .map(|i| Spanned::new(i, v.span))
                }
                "command" => s.command = self.argv(v, &w),
                "entrypoint" => s.entrypoint = self.argv(v, &w),
                "environment" => s.environment = self.pairs(v, &w, true),
                "labels" => s.labels = self.labels(v, &w),
                "ports" => s.ports = self.compose_ports(v, &w),
                "networks" => s.networks = self.service_networks(v, &w),
                "volumes" => s.volumes = self.mounts(v, &w),
                "configs" => s.configs = self.object_refs(v, &w),
                "secrets" => s.secrets = self.object_refs(v, &w),
                "deploy" => s.deploy = self.service_deploy(v, &w),
                "healthcheck" => s.healthcheck = self.healthcheck(v, &w),
                "hostname" => s.hostname = self.string(v, &w, "`hostname: web`"),
                "user" => s.user = self.scalar(v, &w),
                "working_dir" => s.working_dir = self.string(v, &w, "`working_dir: /app`"),
                "stop_grace_period" => s.stop_grace_period = self.compose_duration(v, &w),
                "stop_signal" => s.stop_signal = self.string(v, &w, "`stop_signal: SIGTERM`"),
                "init" => s.init = self.bool(v, &w),
                "read_only" => s.read_only = self.bool(v, &w),
                "tty" => s.tty = self.bool(v, &w),
                "stdin_open" => s.stdin_open = self.bool(v, &w),
                "extra_hosts" => {
                    s.extra_hosts = match &v.kind {
                        Kind::Map(_) => self
                            .pairs(v, &w, false)
                            .into_iter()
                            .map(|(h, ip)| format!("{ip} {h}"))
                            .collect(),
                        _ => self
                            .strings(v, &w, "`[\"db:10.0.0.2\"]`")
                            .into_iter()
                            .filter_map(|e| {
                                e.value
                                    .split_once(['=', ':'])
                                    .map(|(h, ip)| format!("{ip} {h}"))
                            })
                            .collect(),
                    }
                }
                "dns" => s.dns = self.values(v, &w),
                "dns_search" => s.dns_search = self.values(v, &w),
                "cap_add" => {
                    s.cap_add = self.values(v, &w);
                    if let Some(extra) = s.cap_add.iter().find(|c| {
                        let c = c.trim_start_matches("CAP_").to_ascii_uppercase();
                        !DEFAULT_CAPS.contains(&c.as_str())
                    }) {
                        self.error(
                            v.span,
                            format!("{w}: `{extra}` is more than a container has by default"),
                            "a deployed service gets Docker's default capabilities only; an added one (SYS_ADMIN, DAC_READ_SEARCH, NET_ADMIN...) could reach the host",
                        );
                    }
                }
                "cap_drop" => s.cap_drop = self.values(v, &w),
                "sysctls" => s.sysctls = self.pairs(v, &w, false),
                "tmpfs" => s.tmpfs = self.values(v, &w),
                _ => {
                    let (mut driver, mut options) = (None, Vec::new());
                    for (lk, _, lv) in self.entries(
                        v,
                        &w,
                        Some(&["driver", "options"]),
                        "`{ driver: json-file }`",
                    ) {
                        if lk == "driver" {
                            driver =
                                self.string(lv, &format!("`driver` of {w}"), "`driver: json-file`");
                        } else {
                            options = self.pairs(lv, &format!("`options` of {w}"), false);
                        }
                    }
                    s.logging = Some(Logging { driver, options });
                }
            }
        }
        match image {
            Some(i) => s.image = i,
            None => {
                self.error(
                    key.span,
                    format!("{what} has no `image`"),
                    "name the image, e.g. `image: registry.example/app` (a release image is pinned to its digest)",
                );
                return None;
            }
        }
        Some(s)
    }

    fn values(&mut self, node: &Node, what: &str) -> Vec<String> {
        self.strings(node, what, "`[\"a\", \"b\"]`")
            .into_iter()
            .map(|s| s.value)
            .collect()
    }

    /// `{ NAME: value }` or `["NAME=value"]`. `bare`: a `NAME` without a value (the
    /// environment's variable of that name) is allowed, and kept out when unset.
    fn pairs(&mut self, node: &Node, what: &str, bare: bool) -> Vec<(String, String)> {
        match &node.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|item| {
                    let text =
                        self.string(item, &format!("each item of {what}"), "`NAME=value`")?;
                    match text.split_once('=') {
                        Some((k, v)) => Some((k.to_string(), v.to_string())),
                        None if bare => None,
                        None => Some((text, String::new())),
                    }
                })
                .collect(),
            _ => self
                .entries(node, what, None, "`{ NAME: value }`")
                .into_iter()
                .filter_map(|(k, _, v)| {
                    let value = self.value(v, &format!("`{k}` in {what}"), "`NAME: value`")?;
                    Some((k.to_string(), value))
                })
                .collect(),
        }
    }

    fn compose_duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = self.scalar(node, what)?;
        let d = parse_compose_duration(&text);
        if d.is_none() {
            self.error(
                node.span,
                format!("{what}: `{text}` is not a duration"),
                "write a number and a unit: `500ms`, `10s`, `1m30s`",
            );
        }
        d
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<u64> {
        let text = self.scalar(node, what)?;
        let n = text.parse::<u64>().ok();
        if n.is_none() {
            self.type_error(node, what, "a whole number", "`replicas: 2`");
        }
        n
    }

    fn float(&mut self, node: &Node, what: &str) -> Option<f64> {
        let text = self.scalar(node, what)?;
        let n = text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0);
        if n.is_none() {
            self.type_error(node, what, "a number", "`cpus: \"0.5\"`");
        }
        n
    }

    fn choice(&mut self, node: &Node, what: &str, allowed: &[&str]) -> Option<String> {
        let text = self.string(node, what, &format!("`{}`", allowed[0]))?;
        if allowed.contains(&text.as_str()) {
            Some(text)
        } else {
            self.error(
                node.span,
                format!("{what} is `{text}`"),
                format!("choose one of: {}", allowed.join(", ")),
            );
            None
        }
    }

    fn compose_ports(&mut self, node: &Node, what: &str) -> Vec<Port> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(node, what, "a list", "`ports: [\"8080:80\"]`");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let iw = format!("a port of {what}");
            if let Kind::Map(_) = item.kind {
                let mut p = Port {
                    target: 0,
                    published: None,
                    protocol: "tcp".into(),
                    mode: "ingress".into(),
                };
                for (k, _, v) in self.entries(
                    item,
                    &iw,
                    Some(PORT_KEYS),
                    "`{ target: 80, published: 8080, mode: host }`",
                ) {
                    let w = format!("`{k}` of {iw}");
                    match k {
                        "target" => p.target = self.port_number(v, &w).unwrap_or(0),
                        "published" => {
                            p.published = self.port_number(v, &w);
                            if p.published.is_some_and(|p| p < 1024) {
                                self.error(
                                    v.span,
                                    format!("{w}: a port below 1024 is the host's"),
                                    PORT_HELP,
                                );
                            }
                        }
                        "protocol" => {
                            p.protocol = self
                                .choice(v, &w, &["tcp", "udp", "sctp"])
                                .unwrap_or_default()
                        }
                        "mode" => {
                            p.mode = self.choice(v, &w, &["ingress", "host"]).unwrap_or_default()
                        }
                        "host_ip" => {
                            self.error(
                                v.span,
                                format!("{w}: a Swarm service publishes on every address of the node"),
                                "remove `host_ip` (Swarm cannot bind one address); put a firewall or a proxy in front",
                            );
                        }
                        _ => {}
                    }
                }
                if p.target == 0 {
                    self.error(
                        item.span,
                        format!("{iw} has no `target`"),
                        "`{ target: 80, published: 8080 }`",
                    );
                    continue;
                }
                out.push(p);
                continue;
            }
            let Some(text) = self.scalar(item, &iw) else {
                continue;
            };
            match short_port(&text) {
                Ok(ports) if ports.iter().any(|p| p.published.is_some_and(|p| p < 1024)) => self
                    .error(
                        item.span,
                        format!("{iw}: a port below 1024 is the host's"),
                        PORT_HELP,
                    ),
                Ok(ports) => out.extend(ports),
                Err(msg) => self.error(
                    item.span,
                    format!("{iw}: {msg}"),
                    "write `PUBLISHED:TARGET[/PROTOCOL]`, e.g. `8080:80`",
                ),
            }
        }
        out
    }

    fn port_number(&mut self, node: &Node, what: &str) -> Option<u16> {
        let text = self.scalar(node, what)?;
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(
                    node.span,
                    format!("{what}: `{text}` is not a port"),
                    "a number from 1 to 65535",
                );
                None
            }
        }
    }

    fn service_networks(&mut self, node: &Node, what: &str) -> Vec<(Spanned<String>, Vec<String>)> {
        match &node.kind {
            Kind::Seq(_) => self
                .strings(node, what, "`networks: [back]`")
                .into_iter()
                .map(|n| (n, Vec::new()))
                .collect(),
            _ => {
                let mut out = Vec::new();
                for (name, key, v) in
                    self.entries(node, what, None, "`networks: { back: { aliases: [api] } }`")
                {
                    let mut aliases = Vec::new();
                    for (k, _, a) in self.entries(
                        v,
                        &format!("network `{name}` of {what}"),
                        Some(&["aliases"]),
                        "`{ aliases: [api] }`",
                    ) {
                        let _ = k;
                        aliases = self.values(a, &format!("`aliases` of network `{name}`"));
                    }
                    out.push((Spanned::new(name.to_string(), key.span), aliases));
                }
                out
            }
        }
    }

    fn mounts(&mut self, node: &Node, what: &str) -> Vec<Mount> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(node, what, "a list", "`volumes: [\"data:/var/lib/app\"]`");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let iw = format!("a volume of {what}");
            if let Kind::Map(_) = item.kind {
                let mut m = Mount {
                    kind: MountKind::Volume,
                    source: None,
                    target: String::new(),
                    read_only: false,
                    no_copy: false,
                    tmpfs_size: None,
                    span: item.span,
                };
                for (k, _, v) in self.entries(
                    item,
                    &iw,
                    Some(VOLUME_MOUNT_KEYS),
                    "`{ type: volume, source: data, target: /data }`",
                ) {
                    let w = format!("`{k}` of {iw}");
                    match k {
                        "type" => {
                            m.kind =
                                match self.choice(v, &w, &["volume", "bind", "tmpfs"]).as_deref() {
                                    Some("bind") => MountKind::Bind,
                                    Some("tmpfs") => MountKind::Tmpfs,
                                    _ => MountKind::Volume,
                                }
                        }
                        "source" => m.source = self.string(v, &w, "`source: data`"),
                        "target" => {
                            m.target = self.string(v, &w, "`target: /data`").unwrap_or_default()
                        }
                        "read_only" => m.read_only = self.bool(v, &w).unwrap_or(false),
                        "volume" => {
                            for (_, _, nc) in
                                self.entries(v, &w, Some(&["nocopy"]), "`{ nocopy: true }`")
                            {
                                m.no_copy =
                                    self.bool(nc, &format!("`nocopy` of {w}")).unwrap_or(false);
                            }
                        }
                        _ => {
                            for (_, _, size) in
                                self.entries(v, &w, Some(&["size"]), "`{ size: 64m }`")
                            {
                                let text = self
                                    .scalar(size, &format!("`size` of {w}"))
                                    .unwrap_or_default();
                                m.tmpfs_size = parse_bytes(&text);
                                if m.tmpfs_size.is_none() {
                                    self.error(
                                        size.span,
                                        format!("`{text}` is not a size"),
                                        "e.g. `64m`",
                                    );
                                }
                            }
                        }
                    }
                }
                if m.target.is_empty() {
                    self.error(
                        item.span,
                        format!("{iw} has no `target`"),
                        "`target: /data`",
                    );
                    continue;
                }
                out.push(m);
                continue;
            }
            let Some(text) = self.string(item, &iw, "`data:/var/lib/app`") else {
                continue;
            };
            let parts: Vec<&str> = text.split(':').collect();
            let (source, target, opts) = match parts.as_slice() {
                [t] => (None, *t, ""),
                [s, t] => (Some(*s), *t, ""),
                [s, t, o] => (Some(*s), *t, *o),
                _ => {
                    self.error(
                        item.span,
                        format!("{iw}: `{text}` is not `SOURCE:TARGET[:ro]`"),
                        "e.g. `data:/var/lib/app:ro`",
                    );
                    continue;
                }
            };
            let kind = match source {
                Some(s) if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') => {
                    MountKind::Bind
                }
                _ => MountKind::Volume,
            };
            let opts: Vec<&str> = opts.split(',').filter(|o| !o.is_empty()).collect();
            if let Some(bad) = opts
                .iter()
                .find(|o| !matches!(**o, "ro" | "rw" | "nocopy" | "z" | "Z"))
            {
                self.error(
                    item.span,
                    format!("{iw}: unknown option `{bad}`"),
                    "options are `ro`, `rw` and `nocopy`",
                );
                continue;
            }
            out.push(Mount {
                kind,
                source: source.map(str::to_string),
                target: target.to_string(),
                read_only: opts.contains(&"ro"),
                no_copy: opts.contains(&"nocopy"),
                tmpfs_size: None,
                span: item.span,
            });
        }
        out
    }

    fn object_refs(&mut self, node: &Node, what: &str) -> Vec<ObjectRef> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(
                node,
                what,
                "a list",
                "`[app_conf]` or `[{ source: app_conf, target: /etc/app.conf }]`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let iw = format!("an item of {what}");
            if let Kind::Map(_) = item.kind {
                let mut r = ObjectRef {
                    source: Spanned::new(String::new(), item.span),
                    target: None,
                    uid: None,
                    gid: None,
                    mode: None,
                };
                for (k, _, v) in self.entries(
                    item,
                    &iw,
                    Some(OBJECT_REF_KEYS),
                    "`{ source: app_conf, target: /etc/app.conf }`",
                ) {
                    let w = format!("`{k}` of {iw}");
                    match k {
                        "source" => {
                            if let Some(s) = self.string(v, &w, "`source: app_conf`") {
                                r.source = Spanned::new(s, v.span);
                            }
                        }
                        "target" => r.target = self.string(v, &w, "`target: /etc/app.conf`"),
                        "uid" => r.uid = self.scalar(v, &w),
                        "gid" => r.gid = self.scalar(v, &w),
                        _ => {
                            let text = self.scalar(v, &w).unwrap_or_default();
                            // YAML 1.1 readers take `0440` as octal; so does Compose.
                            let parsed = if let Some(oct) = text.strip_prefix("0o") {
                                u32::from_str_radix(oct, 8).ok()
                            } else if text.starts_with('0') && text.len() > 1 {
                                u32::from_str_radix(&text[1..], 8).ok()
                            } else {
                                text.parse().ok()
                            };
                            match parsed.filter(|m| *m <= 0o7777) {
                                Some(m) => r.mode = Some(m),
                                None => self.error(
                                    v.span,
                                    format!("{w}: `{text}` is not a file mode"),
                                    "e.g. `0440`",
                                ),
                            }
                        }
                    }
                }
                if r.source.value.is_empty() {
                    self.error(
                        item.span,
                        format!("{iw} has no `source`"),
                        "`source: app_conf`",
                    );
                    continue;
                }
                out.push(r);
            } else if let Some(s) = self.string(item, &iw, "`app_conf`") {
                out.push(ObjectRef {
                    source: Spanned::new(s, item.span),
                    target: None,
                    uid: None,
                    gid: None,
                    mode: None,
                });
            }
        }
        out
    }

    fn service_deploy(&mut self, node: &Node, what: &str) -> Deploy {
        let dw = format!("`deploy` of {what}");
        let mut d = Deploy::default();
        for (k, _, v) in self.entries(node, &dw, Some(DEPLOY_KEYS), "`{ replicas: 2 }`") {
            let w = format!("`{k}` in {dw}");
            match k {
                "mode" => {
                    d.global =
                        self.choice(v, &w, &["replicated", "global"]).as_deref() == Some("global")
                }
                "replicas" => d.replicas = self.number(v, &w),
                "labels" => d.labels = self.labels(v, &w),
                "update_config" => d.update = Some(self.update_config(v, &w)),
                "rollback_config" => d.rollback = Some(self.update_config(v, &w)),
                "restart_policy" => {
                    let mut r = RestartPolicy::default();
                    for (rk, _, rv) in
                        self.entries(v, &w, Some(RESTART_KEYS), "`{ condition: on-failure }`")
                    {
                        let rw = format!("`{rk}` in {w}");
                        match rk {
                            "condition" => {
                                r.condition = self.choice(rv, &rw, &["none", "on-failure", "any"])
                            }
                            "delay" => r.delay = self.compose_duration(rv, &rw),
                            "max_attempts" => r.max_attempts = self.number(rv, &rw),
                            _ => r.window = self.compose_duration(rv, &rw),
                        }
                    }
                    d.restart = Some(r);
                }
                "resources" => {
                    for (rk, _, rv) in self.entries(
                        v,
                        &w,
                        Some(RESOURCES_KEYS),
                        "`{ limits: { memory: 256m } }`",
                    ) {
                        let rw = format!("`{rk}` in {w}");
                        let mut r = Resources::default();
                        for (lk, _, lv) in self.entries(
                            rv,
                            &rw,
                            Some(LIMIT_KEYS),
                            "`{ cpus: \"0.5\", memory: 256m }`",
                        ) {
                            let lw = format!("`{lk}` in {rw}");
                            match lk {
                                "cpus" => r.cpus = self.float(lv, &lw),
                                "memory" => {
                                    let text = self.scalar(lv, &lw).unwrap_or_default();
                                    r.memory = parse_bytes(&text);
                                    if r.memory.is_none() {
                                        self.error(
                                            lv.span,
                                            format!("{lw}: `{text}` is not a size"),
                                            "e.g. `256m` or `1g`",
                                        );
                                    }
                                }
                                _ => r.pids = self.number(lv, &lw).map(|n| n as i64),
                            }
                        }
                        if rk == "limits" {
                            d.limits = r;
                        } else {
                            d.reservations = r;
                        }
                    }
                }
                "placement" => {
                    for (pk, _, pv) in self.entries(
                        v,
                        &w,
                        Some(PLACEMENT_KEYS),
                        "`{ constraints: [node.role == manager] }`",
                    ) {
                        let pw = format!("`{pk}` in {w}");
                        match pk {
                            "constraints" => d.constraints = self.values(pv, &pw),
                            "max_replicas_per_node" => {
                                d.max_replicas_per_node = self.number(pv, &pw)
                            }
                            _ => {
                                let Kind::Seq(items) = &pv.kind else {
                                    self.type_error(
                                        pv,
                                        &pw,
                                        "a list",
                                        "`[{ spread: node.labels.zone }]`",
                                    );
                                    continue;
                                };
                                for item in items {
                                    for (_, _, s) in self.entries(
                                        item,
                                        &pw,
                                        Some(&["spread"]),
                                        "`{ spread: node.labels.zone }`",
                                    ) {
                                        if let Some(s) =
                                            self.string(s, &pw, "`spread: node.labels.zone`")
                                        {
                                            d.preferences.push(s);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ => d.endpoint_mode = self.choice(v, &w, &["vip", "dnsrr"]),
            }
        }
        if d.global && d.replicas.is_some() {
            self.error(
                node.span,
                format!("{dw}: a `global` service has no `replicas`"),
                "remove `replicas` or `mode: global`",
            );
        }
        d
    }

    fn update_config(&mut self, node: &Node, what: &str) -> UpdateConfig {
        let mut u = UpdateConfig::default();
        for (k, _, v) in self.entries(
            node,
            what,
            Some(UPDATE_KEYS),
            "`{ parallelism: 1, order: start-first }`",
        ) {
            let w = format!("`{k}` in {what}");
            match k {
                "parallelism" => u.parallelism = self.number(v, &w),
                "delay" => u.delay = self.compose_duration(v, &w),
                "failure_action" => {
                    u.failure_action = self.choice(v, &w, &["rollback", "pause", "continue"])
                }
                "monitor" => u.monitor = self.compose_duration(v, &w),
                "max_failure_ratio" => u.max_failure_ratio = self.float(v, &w),
                _ => u.order = self.choice(v, &w, &["stop-first", "start-first"]),
            }
        }
        u
    }

    fn healthcheck(&mut self, node: &Node, what: &str) -> Option<Healthcheck> {
        let hw = format!("`healthcheck` of {what}");
        let mut h = Healthcheck::default();
        for (k, _, v) in self.entries(
            node,
            &hw,
            Some(HEALTHCHECK_KEYS),
            "`{ test: [\"CMD\", \"true\"] }`",
        ) {
            let w = format!("`{k}` in {hw}");
            match k {
                "test" => {
                    h.test = match &v.kind {
                        Kind::Seq(_) => Some(self.values(v, &w)),
                        _ => self
                            .string(v, &w, "`test: curl -f http://localhost/`")
                            .map(|t| vec!["CMD-SHELL".into(), t]),
                    };
                    if let Some(first) = h.test.as_ref().and_then(|t| t.first())
                        && !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE")
                    {
                        self.error(
                            v.span,
                            format!("{w} starts with `{first}`"),
                            "start the list with `CMD`, `CMD-SHELL` or `NONE`",
                        );
                    }
                }
                "interval" => h.interval = self.compose_duration(v, &w),
                "timeout" => h.timeout = self.compose_duration(v, &w),
                "start_period" => h.start_period = self.compose_duration(v, &w),
                "start_interval" => h.start_interval = self.compose_duration(v, &w),
                "retries" => h.retries = self.number(v, &w),
                _ => h.disable = self.bool(v, &w).unwrap_or(false),
            }
        }
        Some(h)
    }

    fn network(&mut self, name: &str, node: &Node) -> Network {
        let what = format!("network `{name}`");
        let mut n = Network {
            name: name.to_string(),
            ..Network::default()
        };
        for (k, _, v) in self.entries(node, &what, Some(NETWORK_KEYS), "`{ driver: overlay }`") {
            let w = format!("`{k}` of {what}");
            match k {
                "driver" => {
                    n.driver = self.string(v, &w, "`driver: overlay`");
                    if n.driver.as_deref().is_some_and(|d| d != "overlay") {
                        self.error(
                            v.span,
                            format!("{w}: a stack's networks are `overlay` networks"),
                            "remove `driver`",
                        );
                    }
                }
                "driver_opts" => self.refuse(
                    v,
                    &w,
                    "a stack's networks are plain overlay networks; remove `driver_opts`",
                ),
                "attachable" => n.attachable = self.bool(v, &w).unwrap_or(false),
                "internal" => n.internal = self.bool(v, &w).unwrap_or(false),
                "external" | "name" => self.refuse(v, &w, OWN_HELP),
                _ => n.labels = self.labels(v, &w),
            }
        }
        n
    }

    fn volume(&mut self, name: &str, node: &Node) -> Volume {
        let what = format!("volume `{name}`");
        let mut n = Volume {
            name: name.to_string(),
            ..Volume::default()
        };
        for (k, _, v) in self.entries(node, &what, Some(VOLUME_KEYS), "`{ driver: local }`") {
            let w = format!("`{k}` of {what}");
            match k {
                "driver" => {
                    n.driver = self.string(v, &w, "`driver: local`");
                    if n.driver.as_deref().is_some_and(|d| d != "local") {
                        self.error(v.span, format!("{w}: a stack's volumes are `local` volumes"), "remove `driver` (a volume plugin could mount anything)");
                    }
                }
                "driver_opts" => self.refuse(v, &w, "driver options can mount any path of the host (`o: bind`) or a share of the network; remove them"),
                "external" | "name" => self.refuse(v, &w, OWN_HELP),
                _ => n.labels = self.labels(v, &w),
            }
        }
        n
    }

    /// A key the swarm target does not take, for the reason given.
    fn refuse(&mut self, node: &Node, what: &str, why: &str) {
        self.error(node.span, format!("{what} is not allowed"), why);
    }

    /// `labels:`: Ferry's and Docker's stack labels are not the user's to set.
    fn labels(&mut self, node: &Node, what: &str) -> Vec<(String, String)> {
        let pairs = self.pairs(node, what, false);
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| k.starts_with("ferry.") || k.starts_with("com.docker.stack."))
        {
            self.error(
                node.span,
                format!("{what}: `{k}` is a label Ferry sets"),
                "labels starting with `ferry.` or `com.docker.stack.` say which environment a stack belongs to; choose another name",
            );
        }
        pairs
    }

    fn object(&mut self, name: &str, key: &Node, node: &Node, config: bool) -> Option<Object> {
        let kind = if config { "config" } else { "secret" };
        let what = format!("{kind} `{name}`");
        let keys = if config { CONFIG_KEYS } else { SECRET_KEYS };
        let example = if config {
            "`{ file: ./app.conf }`, `{ environment: APP_CONF }` or `{ content: \"...\" }`"
        } else {
            "`{ environment: DB_PASSWORD }` or `{ file: ./token.txt }`"
        };
        if !valid_name(name) {
            self.error(
                key.span,
                format!("`{name}` is not a valid {kind} name"),
                "use letters, digits, `-`, `_` and `.`",
            );
        }
        let (mut sources, mut labels) = (Vec::new(), Vec::new());
        for (k, _, v) in self.entries(node, &what, Some(keys), example) {
            let w = format!("`{k}` of {what}");
            match k {
                "file" => {
                    if let Some(f) = self.string(v, &w, "`file: ./app.conf`") {
                        let escapes = f.starts_with('/')
                            || std::path::Path::new(&f)
                                .components()
                                .any(|c| matches!(c, std::path::Component::ParentDir));
                        if escapes {
                            self.error(v.span, format!("{w} must be beside the compose file, found `{f}`"), "name a file in the compose file's directory or below it (it is sealed into the release)");
                        } else {
                            sources.push(ObjectSource::File(Spanned::new(f, v.span)));
                        }
                    }
                }
                "environment" => {
                    if let Some(e) = self.string(v, &w, "`environment: DB_PASSWORD`") {
                        sources.push(ObjectSource::Environment(Spanned::new(e, v.span)));
                    }
                }
                "content" => {
                    if let Some(c) = self.value(v, &w, "`content: |`") {
                        sources.push(ObjectSource::Content(c));
                    }
                }
                "external" | "name" => self.refuse(v, &w, OWN_HELP),
                _ => labels = self.labels(v, &w),
            }
        }
        if sources.len() != 1 {
            let msg = if sources.is_empty() {
                format!("{what} says nowhere where its value comes from")
            } else {
                format!("{what} has {} sources", sources.len())
            };
            self.error(key.span, msg, format!("give one of: {example}"));
            return None;
        }
        Some(Object {
            name: name.to_string(),
            source: sources.remove(0),
            labels,
            span: key.span,
        })
    }

    /// Networks, volumes, configs and secrets that services name must be declared.
    fn references(&mut self, c: &Compose) {
        for s in &c.services {
            for (n, _) in &s.networks {
                if n.value != "default" && !c.networks.iter().any(|x| x.name == n.value) {
                    self.error(
                        n.span,
                        format!(
                            "service `{}` uses network `{}`, which is not declared",
                            s.name, n.value
                        ),
                        "declare it under the top-level `networks:`",
                    );
                }
            }
            for m in &s.volumes {
                if m.kind == MountKind::Volume
                    && let Some(src) = &m.source
                    && !c.volumes.iter().any(|v| &v.name == src)
                {
                    self.error(
                        m.span,
                        format!(
                            "service `{}` uses volume `{src}`, which is not declared",
                            s.name
                        ),
                        "declare it under the top-level `volumes:`",
                    );
                }
                if m.kind == MountKind::Bind {
                    self.error(m.span, format!("service `{}` mounts a path of the host", s.name), "a stack's services get files through `configs:` and `secrets:`, and data through named volumes");
                }
            }
            for (refs, declared, kind) in [
                (&s.configs, &c.configs, "config"),
                (&s.secrets, &c.secrets, "secret"),
            ] {
                for r in refs {
                    if !declared.iter().any(|o| o.name == r.source.value) {
                        self.error(
                            r.source.span,
                            format!(
                                "service `{}` uses {kind} `{}`, which is not declared",
                                s.name, r.source.value
                            ),
                            format!("declare it under the top-level `{kind}s:`"),
                        );
                    }
                }
            }
        }
    }
}

/// A name Docker takes as part of an object's name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// `80`, `8080:80`, `8080:80/udp`, `8000-8001:80-81`.
fn short_port(text: &str) -> Result<Vec<Port>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) if matches!(p, "tcp" | "udp" | "sctp") => (s, p),
        Some((_, p)) => return Err(format!("unknown protocol `{p}`")),
        None => (text, "tcp"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [t] => (None, *t),
        [p, t] => (Some(*p), *t),
        [_, _, _] => {
            return Err(
                "a Swarm service publishes on every address of the node: remove the host IP".into(),
            );
        }
        _ => return Err(format!("`{text}` is not a port mapping")),
    };
    let range = |r: &str| -> Result<(u16, u16), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u16 = a.parse().map_err(|_| format!("`{r}` is not a port"))?;
        let b: u16 = b.parse().map_err(|_| format!("`{r}` is not a port"))?;
        if a == 0 || b < a {
            return Err(format!("`{r}` is not a port range"));
        }
        Ok((a, b))
    };
    let (t0, t1) = range(target)?;
    let published = published.map(range).transpose()?;
    if let Some((p0, p1)) = published
        && p1 - p0 != t1 - t0
    {
        return Err("the published and target ranges differ in length".into());
    }
    Ok((0..=(t1 - t0))
        .map(|i| Port {
            target: t0 + i,
            published: published.map(|(p0, _)| p0 + i),
            protocol: protocol.to_string(),
            mode: "ingress".into(),
        })
        .collect())
}

/// The files a compose file reads (its configs' and secrets' `file:`), relative to
/// its directory; for sealing them with it. Best effort: a file that does not load
/// names none (the deployment reports why).
pub fn files_of(source: &str) -> Vec<String> {
    let Ok(c) = load(source, &|_| Lookup::Value("1".into())) else {
        return Vec::new();
    };
    let mut out: Vec<String> = c
        .configs
        .iter()
        .chain(&c.secrets)
        .filter_map(|o| match &o.source {
            ObjectSource::File(f) => Some(f.value.trim_start_matches("./").to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Lookup {
        match name {
            "GREETING" => Lookup::Value("hello".into()),
            "EMPTY" => Lookup::Value(String::new()),
            "TOKEN" => Lookup::Secret,
            _ => Lookup::Missing,
        }
    }

    #[test]
    fn variables_are_replaced_as_compose_replaces_them() {
        let table = [
            ("plain", Ok("plain")),
            ("${GREETING} world", Ok("hello world")),
            ("$GREETING-x", Ok("hello-x")),
            ("$$GREETING", Ok("$GREETING")),
            ("${NOPE:-d}", Ok("d")),
            ("${EMPTY:-d}", Ok("d")),
            ("${EMPTY-d}", Ok("")),
            ("${NOPE-${GREETING}}", Ok("hello")),
            ("${GREETING:+set}", Ok("set")),
            ("${NOPE:+set}", Ok("")),
            ("${GREETING+set}", Ok("set")),
            ("cost: 5$", Ok("cost: 5$")),
            ("${NOPE}", Ok("")),
            (
                "${NOPE:?needs a greeting}",
                Err("`NOPE` is not set for this environment: needs a greeting"),
            ),
            (
                "${EMPTY:?}",
                Err("`EMPTY` is required and is not set for this environment"),
            ),
            ("${EMPTY?}", Ok("")),
            (
                "${GREETING",
                Err("`${GREETING` has no closing `}`: write `$${` for a literal `${`"),
            ),
            (
                "${1X}",
                Err("`${1X}` does not start with a variable's name"),
            ),
            (
                "${GREETING/x}",
                Err("`${GREETING/x}`: unknown operator after `GREETING`"),
            ),
        ];
        for (text, want) in table {
            let got = interpolate(text, &vars);
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{text}");
        }
        let secret = interpolate("${TOKEN}", &vars).expect_err("a secret");
        assert!(secret.contains("`TOKEN` is a secret"), "{secret}");
    }

    const STACK: &str = r#"
version: "3.8"
x-common: &common
  labels: { team: shop }
services:
  web:
    <<: *common
    image: 127.0.0.1:5000/shop/web:${TAG:-latest}
    command: ["httpd", "-f"]
    environment:
      GREETING: ${GREETING}
    ports:
      - target: 8080
        published: 18080
        mode: host
      - "9000:90/udp"
    configs:
      - source: app_conf
        target: /etc/app.conf
        mode: 0440
    secrets: [token]
    volumes: ["data:/data:ro"]
    networks: { back: { aliases: [api] } }
    deploy:
      replicas: 2
      update_config: { parallelism: 1, order: start-first, monitor: 1m30s }
      resources: { limits: { cpus: "0.5", memory: 256M } }
      restart_policy: { condition: on-failure, max_attempts: 3 }
    healthcheck: { test: wget -q -O- localhost:8080, interval: 2s, retries: 3 }
    build: .
    depends_on: [db]
  db:
    image: postgres:16
networks:
  back: { driver: overlay }
volumes:
  data: {}
configs:
  app_conf: { file: ./conf/app.conf }
secrets:
  token: { environment: TOKEN }
"#;

    #[test]
    fn a_stack_loads_with_what_swarm_honours() {
        let c = load(STACK, &vars).expect("loads");
        assert_eq!(c.services.len(), 2);
        let web = &c.services[0];
        assert_eq!(web.image.value, "127.0.0.1:5000/shop/web:latest");
        assert_eq!(web.environment, vec![("GREETING".into(), "hello".into())]);
        assert_eq!(web.labels, vec![("team".into(), "shop".into())]);
        assert_eq!(
            web.ports,
            vec![
                Port {
                    target: 8080,
                    published: Some(18080),
                    protocol: "tcp".into(),
                    mode: "host".into()
                },
                Port {
                    target: 90,
                    published: Some(9000),
                    protocol: "udp".into(),
                    mode: "ingress".into()
                },
            ]
        );
        assert_eq!(web.configs[0].mode, Some(0o440));
        assert_eq!(web.secrets[0].source.value, "token");
        assert!(web.volumes[0].read_only);
        assert_eq!(web.deploy.replicas, Some(2));
        assert_eq!(web.deploy.limits.memory, Some(256 << 20));
        assert_eq!(
            web.deploy.update.as_ref().and_then(|u| u.monitor),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            web.healthcheck.as_ref().and_then(|h| h.test.clone()),
            Some(vec![
                "CMD-SHELL".into(),
                "wget -q -O- localhost:8080".into()
            ])
        );
        assert_eq!(c.ignored, vec!["web: build", "web: depends_on"]);
        assert_eq!(files_of(STACK), vec!["conf/app.conf"]);
    }

    fn errors(source: &str) -> Vec<String> {
        load(source, &vars)
            .expect_err("refused")
            .iter()
            .map(|d| {
                d.render("compose.yml", source, false)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn bad_compose_files_are_refused_where_they_are_wrong() {
        let unknown = errors("services:\n  web:\n    image: x\n    replica: 2\n");
        assert!(
            unknown[0].contains("compose.yml:4:5") && unknown[0].contains("unknown key `replica`"),
            "{unknown:?}"
        );
        let undeclared = errors("services:\n  web:\n    image: x\n    secrets: [nope]\n");
        assert!(
            undeclared[0].contains("compose.yml:4:15")
                && undeclared[0].contains("secret `nope`, which is not declared"),
            "{undeclared:?}"
        );
        let secret =
            errors("services:\n  web:\n    image: x\n    environment: { T: \"${TOKEN}\" }\n");
        assert!(
            secret[0].contains("compose.yml:4:23") && secret[0].contains("is a secret"),
            "{secret:?}"
        );
        let host = errors("services:\n  web:\n    image: x\n    volumes: [\"/etc:/host\"]\n");
        assert!(host[0].contains("mounts a path of the host"), "{host:?}");
        let noimage = errors("services:\n  web: { command: x }\n");
        assert!(noimage[0].contains("has no `image`"), "{noimage:?}");
        let none = errors("version: \"3\"\n");
        assert!(none[0].contains("no services"), "{none:?}");
        let two =
            errors("services: { web: { image: x } }\nsecrets:\n  s: { file: a, environment: B }\n");
        assert!(two[0].contains("has 2 sources"), "{two:?}");
        // What would reach the host or another environment is refused.
        for (source, want) in [
            (
                "services: { web: { image: x, volumes: [\"root:/host\"] } }\nvolumes:\n  root: { driver_opts: { type: none, o: bind, device: / } }\n",
                "`driver_opts` of volume `root` is not allowed",
            ),
            (
                "services: { web: { image: x } }\nvolumes:\n  d: { driver: nfs-plugin }\n",
                "a stack's volumes are `local` volumes",
            ),
            (
                "services: { web: { image: x } }\nvolumes:\n  d: { name: shop-production_data }\n",
                "`name` of volume `d` is not allowed",
            ),
            (
                "services: { web: { image: x } }\nnetworks:\n  p: { external: true, name: host }\n",
                "`external` of network `p` is not allowed",
            ),
            (
                "services: { web: { image: x } }\nsecrets:\n  s: { external: true }\n",
                "`external` of secret `s` is not allowed",
            ),
            (
                "services: { web: { image: x, cap_add: [SYS_ADMIN] } }\n",
                "`SYS_ADMIN` is more than a container has by default",
            ),
            (
                "services: { web: { image: x, deploy: { labels: { ferry.scope: other/production } } } }\n",
                "`ferry.scope` is a label Ferry sets",
            ),
            (
                "services: { web: { image: x, labels: [com.docker.stack.namespace=prod] } }\n",
                "is a label Ferry sets",
            ),
            (
                "services: { web: { image: x, ports: [\"443:8080\"] } }\n",
                "a port below 1024 is the host's",
            ),
            (
                "services:\n  web:\n    image: x\n    ports: [{ target: 80, published: 22 }]\n",
                "a port below 1024 is the host's",
            ),
        ] {
            let got = errors(source);
            assert!(got.iter().any(|e| e.contains(want)), "{source}: {got:?}");
        }
        assert!(
            load(
                "services: { web: { image: x, cap_add: [NET_BIND_SERVICE] } }\n",
                &vars
            )
            .is_ok()
        );
        let escape =
            errors("services: { web: { image: x } }\nconfigs:\n  c: { file: ../../etc/passwd }\n");
        assert!(
            escape[0].contains("must be beside the compose file"),
            "{escape:?}"
        );
    }

    #[test]
    fn sizes_and_durations_read_as_compose_writes_them() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("100kb"), Some(102_400));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(
            parse_compose_duration("1m30s"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_compose_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_compose_duration("soon"), None);
    }
}
