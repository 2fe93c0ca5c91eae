//! Loading `release:`, `environments:` and `deploy:` (the model is in `delivery.rs`),
//! and the checks that need the whole file: jobs they name, the order of environments,
//! and the names deploy expressions may use.

use crate::delivery::*;
use crate::diagnostic::{Diagnostic, Span, did_you_mean};
use crate::load::{Loader, is_env_name};
use crate::model::{Pipeline, Spanned};
use crate::yaml::{Kind, Node};

pub const RELEASE_KEYS: &[&str] = &["branches", "tags", "artifacts", "images"];
pub const ENVIRONMENT_KEYS: &[&str] = &["after", "auto", "approval", "freeze", "deploy", "infra"];
pub const INFRA_KEYS: &[&str] = &["dir", "vars", "destroy"];
pub const APPROVAL_KEYS: &[&str] = &["required", "from", "not", "expires"];
pub const FREEZE_KEYS: &[&str] = &["from", "to", "cron", "for"];
pub const DEPLOY_KEYS: &[&str] = &[
    "target",
    "verify",
    "on_failure",
    "watch",
    "on_unhealthy",
    "config",
];
/// Keys of `deploy.config`.
pub const CONFIG_KEYS: &[&str] = &["env_file", "files", "secrets_dir", "volumes"];
pub const WATCH_KEYS: &[&str] = &["interval", "failures"];
pub const PROCESS_KEYS: &[&str] = &["command", "env"];
pub const DOCKER_KEYS: &[&str] = &["image", "ports", "env", "volumes", "command"];
pub const SCRIPT_KEYS: &[&str] = &["run", "image"];
pub const KUBERNETES_KEYS: &[&str] = &[
    "manifests",
    "kubeconfig",
    "namespace",
    "rollout",
    "timeout",
    "config_map",
    "secret",
];
pub const KUBE_OBJECT_KEYS: &[&str] = &["name", "keys"];
pub const GITOPS_KEYS: &[&str] = &["repo", "branch", "path", "manifests", "token"];
pub const SWARM_KEYS: &[&str] = &["compose", "stack", "timeout"];
pub const VERIFY_KEYS: &[&str] = &["http", "tcp", "command", "for", "interval"];
pub const HTTP_KEYS: &[&str] = &["url", "status", "body"];
pub const NOTIFY_KEYS: &[&str] = &["webhook", "slack", "email", "on", "environments"];
pub const WEBHOOK_KEYS: &[&str] = &["url", "secret"];

/// `local@domain`, roughly: what an SMTP relay will take (it checks the rest).
fn valid_address(a: &str) -> bool {
    a.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !a
                .chars()
                .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == ',')
    })
}

const GLOB_HELP: &str = "check the brackets and braces of the pattern";

impl Loader {
    pub(crate) fn release(&mut self, node: &Node) -> Option<ReleaseSpec> {
        let example = "`release: { artifacts: [build], images: [image] }`";
        if !matches!(node.kind, Kind::Map(_)) && !node.is_null() {
            self.type_error(node, "`release`", "a mapping", example);
            return None;
        }
        let mut r = ReleaseSpec {
            branches: None,
            tags: None,
            artifacts: Vec::new(),
            images: Vec::new(),
        };
        for (k, _, v) in self.entries(node, "`release`", Some(RELEASE_KEYS), example) {
            let what = format!("`{k}` in `release`");
            match k {
                "branches" => r.branches = Some(self.globs(v, &what, GLOB_HELP)),
                "tags" => r.tags = Some(self.globs(v, &what, GLOB_HELP)),
                "artifacts" => r.artifacts = self.strings(v, &what, "`artifacts: [build]`"),
                _ => r.images = self.strings(v, &what, "`images: [image]`"),
            }
        }
        Some(r)
    }

    pub(crate) fn environments(&mut self, node: &Node) -> Vec<EnvironmentSpec> {
        let mut out = Vec::new();
        let example = "`environments: { staging: { auto: true } }`";
        for (name, k, v) in self.entries(node, "`environments`", None, example) {
            if !is_environment_name(name) {
                self.error(
                    k.span,
                    format!("invalid environment name `{name}`"),
                    "environment names are lower-case letters, digits, `-` and `_`, starting with a letter",
                );
                continue;
            }
            let what = format!("environment `{name}`");
            let mut env = EnvironmentSpec {
                name: name.to_string(),
                span: k.span,
                after: None,
                policy: Policy::Manual,
                freeze: Vec::new(),
                deploy: None,
                infra: None,
            };
            let mut auto: Option<(bool, Span)> = None;
            let mut approval: Option<(ApprovalRule, Span)> = None;
            for (key, kn, val) in self.entries(
                v,
                &what,
                Some(ENVIRONMENT_KEYS),
                "`{ after: staging, auto: true }`",
            ) {
                let kwhat = format!("`{key}` in {what}");
                match key {
                    "after" => {
                        env.after = self
                            .string(val, &kwhat, "`after: staging`")
                            .map(|s| Spanned::new(s, val.span))
                    }
                    "auto" => auto = self.bool(val, &kwhat).map(|b| (b, kn.span)),
                    "approval" => approval = self.approval(val, &what).map(|a| (a, kn.span)),
                    "freeze" => env.freeze = self.freezes(val, &what),
                    "infra" => env.infra = self.infra(val, &format!("`infra` in {what}")),
                    _ => env.deploy = self.deploy(val, &format!("`deploy` in {what}")),
                }
            }
            env.policy = match (auto, approval) {
                (Some((true, _)), Some((_, span))) => {
                    self.error(
                        span,
                        format!("{what} has both `auto: true` and `approval`"),
                        "an environment is either promoted automatically or after approvals",
                    );
                    Policy::Manual
                }
                (_, Some((rule, _))) => Policy::Approval(rule),
                (Some((true, _)), None) => Policy::Auto,
                _ => Policy::Manual,
            };
            out.push(env);
        }
        out
    }

    /// `infra: { dir: infra, vars: { region: eu }, destroy: approval }`.
    fn infra(&mut self, node: &Node, what: &str) -> Option<InfraSpec> {
        let example = "`infra: { dir: infra, vars: { region: eu-west } }`";
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, what, "a mapping", example);
            return None;
        }
        let (mut dir, mut vars, mut destroy_needs_approval) = (None, Vec::new(), true);
        let mut dir_given = false;
        for (k, _, v) in self.entries(node, what, Some(INFRA_KEYS), example) {
            let kwhat = format!("`{k}` in {what}");
            match k {
                "dir" => {
                    dir_given = true;
                    let Some(path) = self.string(v, &kwhat, "`dir: infra`") else {
                        continue;
                    };
                    let inside = !path.is_empty()
                        && !path.starts_with('/')
                        && !path.split('/').any(|part| part == "..");
                    if inside {
                        dir = Some(Spanned::new(path, v.span));
                    } else {
                        self.error(
                            v.span,
                            format!("{kwhat} must be a directory inside the repository"),
                            "a relative path such as `infra` or `deploy/terraform`, without `..`",
                        );
                    }
                }
                "vars" => {
                    for (name, value) in self.map(v, &kwhat) {
                        let valid = name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                        if valid {
                            vars.push((name, value));
                        } else {
                            self.error(
                                v.span,
                                format!("{kwhat}: `{name}` is not a Terraform variable name"),
                                "names are letters, digits, `_` and `-`, starting with a letter or `_`",
                            );
                        }
                    }
                }
                _ => match self.string(v, &kwhat, "`destroy: approval`").as_deref() {
                    Some("approval") => destroy_needs_approval = true,
                    Some("allow") => destroy_needs_approval = false,
                    Some(other) => self.error(
                        v.span,
                        format!("{kwhat} must be `approval` or `allow`, not `{other}`"),
                        "`approval` (the default) holds a plan that destroys anything for an approval",
                    ),
                    None => {}
                },
            }
        }
        let Some(dir) = dir else {
            if !dir_given {
                self.error(
                    node.span,
                    format!("{what} has no `dir`"),
                    "name the Terraform module's directory, e.g. `dir: infra`",
                );
            }
            return None;
        };
        Some(InfraSpec {
            dir,
            vars,
            destroy_needs_approval,
        })
    }

    fn approval(&mut self, node: &Node, what: &str) -> Option<ApprovalRule> {
        let awhat = format!("`approval` in {what}");
        let example = "`approval: { required: 1, from: [release-managers], not: [author] }`";
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, &awhat, "a mapping", example);
            return None;
        }
        let mut rule = ApprovalRule {
            required: 1,
            from: Vec::new(),
            not: Vec::new(),
            expires: None,
        };
        for (k, _, v) in self.entries(node, &awhat, Some(APPROVAL_KEYS), example) {
            let kwhat = format!("`{k}` in {awhat}");
            match k {
                "required" => match self.count(v, &kwhat) {
                    Some(0) => self.error(
                        v.span,
                        format!("{kwhat} must be at least 1"),
                        "remove `approval` for an environment that needs none",
                    ),
                    Some(n) => rule.required = n,
                    None => {}
                },
                "from" => {
                    rule.from = self
                        .strings(v, &kwhat, "`from: [release-managers, alice]`")
                        .into_iter()
                        .map(|s| s.value)
                        .collect()
                }
                "not" => {
                    for s in self.strings(v, &kwhat, "`not: [author, triggerer]`") {
                        match s.value.as_str() {
                            "author" => rule.not.push(Excluded::Author),
                            "triggerer" => rule.not.push(Excluded::Triggerer),
                            "requester" => rule.not.push(Excluded::Requester),
                            other => {
                                let help =
                                    match did_you_mean(other, Excluded::NAMES.iter().copied()) {
                                        Some(s) => format!("did you mean `{s}`?"),
                                        None => {
                                            format!("`not` takes: {}", Excluded::NAMES.join(", "))
                                        }
                                    };
                                self.error(s.span, format!("{kwhat}: unknown `{other}`"), help);
                            }
                        }
                    }
                }
                _ => rule.expires = self.duration(v, &kwhat),
            }
        }
        Some(rule)
    }

    fn freezes(&mut self, node: &Node, what: &str) -> Vec<Freeze> {
        let fwhat = format!("`freeze` in {what}");
        let example = "`freeze: [{ from: \"2026-12-24T00:00:00Z\", to: \"2026-12-27T00:00:00Z\" }, { cron: \"0 18 * * 5\", for: 60h }]`";
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            if !matches!(item.kind, Kind::Map(_)) {
                self.type_error(item, &fwhat, "a mapping", example);
                continue;
            }
            let (mut from, mut to, mut cron, mut dur) = (None, None, None, None);
            let before = self.diags.len();
            for (k, _, v) in self.entries(item, &fwhat, Some(FREEZE_KEYS), example) {
                let kwhat = format!("`{k}` in {fwhat}");
                match k {
                    "from" | "to" => {
                        let Some(text) = self.string(v, &kwhat, "`2026-12-24T00:00:00Z`") else {
                            continue;
                        };
                        if chrono::DateTime::parse_from_rfc3339(&text).is_err() {
                            self.error(
                                v.span,
                                format!("{kwhat} must be a date and time, found `{text}`"),
                                "write RFC 3339 with a zone, e.g. `2026-12-24T00:00:00Z`",
                            );
                            continue;
                        }
                        if k == "from" {
                            from = Some(text);
                        } else {
                            to = Some(text);
                        }
                    }
                    "cron" => {
                        let Some(text) = self.string(v, &kwhat, "`cron: \"0 18 * * 5\"`") else {
                            continue;
                        };
                        if text.split_whitespace().count() != 5
                            || croner::Cron::new(&text).parse().is_err()
                        {
                            self.error(
                                v.span,
                                format!("invalid cron expression `{text}`"),
                                "write minute hour day-of-month month day-of-week (UTC), e.g. `0 18 * * 5`",
                            );
                            continue;
                        }
                        cron = Some(text);
                    }
                    _ => dur = self.duration(v, &kwhat),
                }
            }
            if self.diags.len() > before {
                continue;
            }
            match (from, to, cron, dur) {
                (Some(from), Some(to), None, None) => {
                    if to <= from
                        && chrono::DateTime::parse_from_rfc3339(&to).ok()
                            <= chrono::DateTime::parse_from_rfc3339(&from).ok()
                    {
                        self.error(
                            item.span,
                            format!("{fwhat} ends before it starts"),
                            "`to` must be later than `from`",
                        );
                    } else {
                        out.push(Freeze::Window { from, to });
                    }
                }
                (None, None, Some(cron), Some(d)) => out.push(Freeze::Recurring {
                    cron,
                    duration: Some(d),
                }),
                _ => self.error(
                    item.span,
                    format!("{fwhat} needs either `from` and `to`, or `cron` and `for`"),
                    format!("for example: {example}"),
                ),
            }
        }
        out
    }

    pub(crate) fn deploy(&mut self, node: &Node, what: &str) -> Option<DeploySpec> {
        let example = "`deploy: { target: { process: { command: ./app } } }`";
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, what, "a mapping", example);
            return None;
        }
        let mut target = None;
        let mut verify = None;
        let mut on_failure = OnFailure::Rollback;
        let mut watch = Watch::default();
        let mut on_unhealthy = OnUnhealthy::Notify;
        let mut saw_target = false;
        let mut config = None;
        for (k, _, v) in self.entries(node, what, Some(DEPLOY_KEYS), example) {
            match k {
                "target" => {
                    saw_target = true;
                    target = self.target(v, what);
                }
                "config" => config = Some(v),
                "verify" => verify = self.verify(v, what),
                "watch" => watch = self.watch(v, what),
                "on_unhealthy" => {
                    match self.string(v, &format!("`on_unhealthy` in {what}"), "`on_unhealthy: rollback`") {
                        Some(s) if s == "notify" => on_unhealthy = OnUnhealthy::Notify,
                        Some(s) if s == "rollback" => on_unhealthy = OnUnhealthy::Rollback,
                        Some(s) => self.error(
                            v.span,
                            format!("`on_unhealthy` in {what} must be `notify` or `rollback`, found `{s}`"),
                            "`notify` tells whoever listens; `rollback` also deploys the release that was live before",
                        ),
                        None => {}
                    }
                }
                _ => {
                    match self.string(v, &format!("`on_failure` in {what}"), "`on_failure: rollback`") {
                        Some(s) if s == "rollback" => on_failure = OnFailure::Rollback,
                        Some(s) if s == "stop" => on_failure = OnFailure::Stop,
                        Some(s) => self.error(
                            v.span,
                            format!("`on_failure` in {what} must be `rollback` or `stop`, found `{s}`"),
                            "`rollback` deploys the release that was live before; `stop` leaves the failure",
                        ),
                        None => {}
                    }
                }
            }
        }
        if !saw_target {
            self.error(
                node.span,
                format!("{what} has no `target`"),
                format!("for example: {example}"),
            );
        }
        let config = match (config, &target) {
            (Some(c), Some(t)) => self.config(c, what, t),
            _ => ConfigSpec::default(),
        };
        target.map(|target| DeploySpec {
            target,
            verify,
            on_failure,
            watch,
            on_unhealthy,
            config,
        })
    }

    /// `config: { env_file, files, secrets_dir, volumes }` of a deploy to `target`:
    /// paths in the container for docker (absolute), under the environment's config
    /// directory for a process (relative, inside it).
    fn config(&mut self, node: &Node, what: &str, target: &Target) -> ConfigSpec {
        let cwhat = format!("`config` in {what}");
        let example =
            "`config: { env_file: /app/.env, files: { /etc/app.conf: { template: app.conf } } }`";
        let docker = match target {
            Target::Docker { .. } => true,
            Target::Process { .. } => false,
            other => {
                self.error(
                    node.span,
                    format!("{cwhat}: the `{}` target takes no `config`", other.kind()),
                    "`config` is for the `process` and `docker` targets; a script reads the \
                     environment's variables and secret files itself, and a swarm stack \
                     declares `configs:` and `secrets:` in its compose file",
                );
                return ConfigSpec::default();
            }
        };
        let mut out = ConfigSpec::default();
        let mut seen: Vec<String> = Vec::new();
        for (k, _, v) in self.entries(node, &cwhat, Some(CONFIG_KEYS), example) {
            let kwhat = format!("`{k}` in {cwhat}");
            match k {
                "env_file" => {
                    if let Some(p) = self.string(v, &kwhat, "`env_file: /app/.env`")
                        && self.config_path(&p, v.span, &kwhat, docker, &mut seen)
                    {
                        out.env_file = Some(p);
                    }
                }
                "files" => {
                    let fexample = "`files: { /etc/app.conf: { template: config/app.conf } }`";
                    for (path, key, val) in self.entries(v, &kwhat, None, fexample) {
                        let pwhat = format!("`{path}` in {kwhat}");
                        let source = match &val.kind {
                            Kind::Map(_) => {
                                let mut source = None;
                                for (sk, _, sv) in self.entries(
                                    val,
                                    &pwhat,
                                    Some(&["template", "content"]),
                                    "`{ template: config/app.conf }`",
                                ) {
                                    let text = self.string(
                                        sv,
                                        &format!("`{sk}` in {pwhat}"),
                                        "`template: config/app.conf`",
                                    );
                                    source = match (sk, text) {
                                        ("template", Some(t)) => {
                                            let inside = !t.is_empty()
                                                && !t.starts_with('/')
                                                && !t.split('/').any(|part| part == "..");
                                            if !inside {
                                                self.error(
                                                    sv.span,
                                                    format!("`template` in {pwhat} must be a file of the release"),
                                                    "a path relative to the release's files, without `..`",
                                                );
                                                continue;
                                            }
                                            Some(ConfigSource::Template(t))
                                        }
                                        (_, Some(t)) => Some(ConfigSource::Content(t)),
                                        _ => None,
                                    };
                                }
                                source
                            }
                            _ => self
                                .string(val, &pwhat, "`/etc/motd: \"hello\"`")
                                .map(ConfigSource::Content),
                        };
                        if let Some(source) = source
                            && self.config_path(path, key.span, &pwhat, docker, &mut seen)
                        {
                            out.files.push(ConfigFile {
                                path: path.to_string(),
                                source,
                            });
                        }
                    }
                }
                "secrets_dir" => {
                    if !docker {
                        self.error(
                            v.span,
                            format!(
                                "{kwhat}: a process finds its secret files in `$FERRY_SECRETS_DIR`"
                            ),
                            "`secrets_dir` is for the docker target",
                        );
                        continue;
                    }
                    if let Some(p) = self.string(v, &kwhat, "`secrets_dir: /run/secrets`")
                        && self.config_path(&p, v.span, &kwhat, true, &mut seen)
                    {
                        out.secrets_dir = Some(p);
                    }
                }
                _ => {
                    if !docker {
                        self.error(
                            v.span,
                            format!("{kwhat}: named volumes are for the docker target"),
                            "a process keeps its data where its command says",
                        );
                        continue;
                    }
                    for (name, key, val) in
                        self.entries(v, &kwhat, None, "`volumes: { data: /var/lib/app }`")
                    {
                        let valid = !name.is_empty()
                            && name.len() <= 64
                            && name
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                            && name
                                .chars()
                                .next()
                                .is_some_and(|c| c.is_ascii_alphanumeric());
                        if !valid {
                            self.error(
                                key.span,
                                format!("{kwhat}: `{name}` is not a volume name"),
                                "letters, digits, `_` and `-`, starting with a letter or digit",
                            );
                            continue;
                        }
                        let vwhat = format!("`{name}` in {kwhat}");
                        if let Some(p) = self.string(val, &vwhat, "`data: /var/lib/app`")
                            && self.config_path(&p, val.span, &vwhat, true, &mut seen)
                        {
                            out.volumes.push((name.to_string(), p));
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether `path` may be a place of `config` (absolute in a container, relative
    /// and inside for a process, never twice); says why not.
    fn config_path(
        &mut self,
        path: &str,
        span: Span,
        what: &str,
        docker: bool,
        seen: &mut Vec<String>,
    ) -> bool {
        let climbs = path.split('/').any(|part| part == "..");
        let ok = if docker {
            path.starts_with('/') && !climbs && path != "/"
        } else {
            !path.is_empty() && !path.starts_with('/') && !climbs
        };
        if !ok {
            let help = if docker {
                "an absolute path in the container, without `..`, e.g. `/etc/app/app.conf`"
            } else {
                "a path relative to the environment's config directory (`$FERRY_CONFIG_DIR`), without `..`"
            };
            self.error(
                span,
                format!("{what}: `{path}` is not a place for it"),
                help,
            );
            return false;
        }
        let normal = path.trim_end_matches('/').to_string();
        if seen.contains(&normal) {
            self.error(
                span,
                format!("{what}: `{path}` is used twice"),
                "give each its own path",
            );
            return false;
        }
        seen.push(normal);
        true
    }

    fn target(&mut self, node: &Node, what: &str) -> Option<Target> {
        let twhat = format!("`target` in {what}");
        let example = "`target: { process: { command: ./app } }`";
        let entries = self.entries(node, &twhat, Some(Target::KINDS), example);
        if entries.len() != 1 {
            if entries.len() > 1 {
                self.error(
                    node.span,
                    format!("{twhat} names {} targets", entries.len()),
                    format!("choose one of: {}", Target::KINDS.join(", ")),
                );
            } else if matches!(&node.kind, Kind::Map(m) if m.is_empty()) {
                self.error(
                    node.span,
                    format!("{twhat} is empty"),
                    format!("choose one of: {}", Target::KINDS.join(", ")),
                );
            }
            return None;
        }
        let (kind, _, v) = entries[0];
        let kwhat = format!("the `{kind}` target in {what}");
        let before = self.diags.len();
        let target = match kind {
            "process" => {
                let (mut command, mut env) = (None, Vec::new());
                for (k, _, val) in
                    self.entries(v, &kwhat, Some(PROCESS_KEYS), "`{ command: ./app }`")
                {
                    match k {
                        "command" => {
                            command = self.string(
                                val,
                                &format!("`command` in {kwhat}"),
                                "`command: ./app --port 8080`",
                            )
                        }
                        _ => env = self.env(val, &format!("the `env` of {kwhat}")),
                    }
                }
                command.map(|command| Target::Process { command, env })
            }
            "docker" => {
                let (mut image, mut ports, mut env, mut volumes, mut command) =
                    (None, Vec::new(), Vec::new(), Vec::new(), None);
                for (k, _, val) in
                    self.entries(v, &kwhat, Some(DOCKER_KEYS), "`{ ports: [\"8080:8080\"] }`")
                {
                    let w = format!("`{k}` in {kwhat}");
                    match k {
                        "image" => image = self.string(val, &w, "`image: package`"),
                        "ports" => {
                            for p in self.strings(val, &w, "`ports: [\"8080:80\"]`") {
                                if p.value.contains("${{") || port_mapping(&p.value).is_some() {
                                    ports.push(p.value);
                                } else {
                                    self.error(
                                        p.span,
                                        format!("{w}: `{}` is not a port mapping", p.value),
                                        "write HOST_PORT:CONTAINER_PORT or IP:HOST_PORT:CONTAINER_PORT, e.g. `8080:80`",
                                    );
                                }
                            }
                        }
                        "env" => env = self.env(val, &format!("the `env` of {kwhat}")),
                        "volumes" => {
                            volumes = self
                                .strings(val, &w, "`volumes: [\"data:/var/lib/app\"]`")
                                .into_iter()
                                .map(|s| s.value)
                                .collect()
                        }
                        _ => command = self.argv(val, &w),
                    }
                }
                Some(Target::Docker {
                    image,
                    ports,
                    env,
                    volumes,
                    command,
                })
            }
            "script" => {
                let (mut run, mut image) = (None, None);
                for (k, _, val) in
                    self.entries(v, &kwhat, Some(SCRIPT_KEYS), "`{ run: ./deploy.sh }`")
                {
                    match k {
                        "run" => {
                            run = self.string(
                                val,
                                &format!("`run` in {kwhat}"),
                                "`run: terraform apply -auto-approve`",
                            )
                        }
                        _ => {
                            image = self.string(
                                val,
                                &format!("`image` in {kwhat}"),
                                "`image: hashicorp/terraform:1.9`",
                            )
                        }
                    }
                }
                run.map(|run| Target::Script { run, image })
            }
            "gitops" => {
                let (mut repo, mut branch, mut path, mut manifests, mut token) =
                    (None, None, None, Vec::new(), None);
                for (k, _, val) in self.entries(
                    v,
                    &kwhat,
                    Some(GITOPS_KEYS),
                    "`{ repo: https://git.example/env.git, manifests: [k8s/] }`",
                ) {
                    let w = format!("`{k}` in {kwhat}");
                    match k {
                        "repo" => {
                            repo = self.string(val, &w, "`repo: https://git.example/env.git`")
                        }
                        "branch" => {
                            branch = self.string(val, &w, "`branch: main`");
                            if let Some(b) = &branch
                                && (b.starts_with('-') || b.contains("..") || b.contains(' '))
                            {
                                self.error(
                                    val.span,
                                    format!("{w}: `{b}` is not a branch name"),
                                    "`branch: main`",
                                );
                            }
                        }
                        "path" => {
                            path = self.string(val, &w, "`path: envs/production`");
                            if let Some(p) = &path
                                && (p.starts_with('/')
                                    || p.split('/').any(|c| c == "..")
                                    || p == ".git"
                                    || p.starts_with(".git/"))
                            {
                                self.error(
                                    val.span,
                                    format!("{w}: `{p}` must be a directory inside the repository"),
                                    "a relative path without `..`, e.g. `envs/production`",
                                );
                            }
                        }
                        "manifests" => manifests = self.paths(val, &w, "`manifests: [k8s/]`"),
                        _ => token = self.string(val, &w, "`token: ENV_REPO_TOKEN`"),
                    }
                }
                match repo {
                    Some(repo) if !manifests.is_empty() => Some(Target::Gitops {
                        repo,
                        branch,
                        path,
                        manifests,
                        token,
                    }),
                    _ => None,
                }
            }
            "swarm" => {
                let (mut compose, mut stack, mut timeout) = (None, None, None);
                for (k, _, val) in self.entries(
                    v,
                    &kwhat,
                    Some(SWARM_KEYS),
                    "`{ compose: deploy/compose.yml }`",
                ) {
                    let w = format!("`{k}` in {kwhat}");
                    match k {
                        "compose" => {
                            compose = self
                                .paths(val, &w, "`compose: deploy/compose.yml`")
                                .into_iter()
                                .next();
                            if matches!(val.kind, Kind::Seq(_)) {
                                self.type_error(val, &w, "a path", "`compose: deploy/compose.yml`");
                            }
                        }
                        "stack" => {
                            stack = self.string(val, &w, "`stack: shop-${{ environment.name }}`")
                        }
                        _ => timeout = self.duration(val, &w),
                    }
                }
                compose.map(|compose| Target::Swarm {
                    compose,
                    stack,
                    timeout,
                })
            }
            _ => {
                let (mut manifests, mut kubeconfig, mut namespace, mut rollout, mut timeout) =
                    (Vec::new(), None, None, Vec::new(), None);
                let (mut config_map, mut secret) = (None, None);
                for (k, _, val) in self.entries(
                    v,
                    &kwhat,
                    Some(KUBERNETES_KEYS),
                    "`{ manifests: [k8s/], kubeconfig: KUBECONFIG }`",
                ) {
                    let w = format!("`{k}` in {kwhat}");
                    match k {
                        "manifests" => manifests = self.paths(val, &w, "`manifests: [k8s/]`"),
                        "kubeconfig" => {
                            kubeconfig = self.string(val, &w, "`kubeconfig: KUBECONFIG`")
                        }
                        "namespace" => namespace = self.string(val, &w, "`namespace: shop`"),
                        "rollout" => {
                            for t in self.strings(val, &w, "`rollout: [deployment/web]`") {
                                if is_rollout_target(&t.value) {
                                    rollout.push(t.value);
                                } else {
                                    self.error(
                                        t.span,
                                        format!("{w}: `{}` is not KIND/NAME", t.value),
                                        "a workload kubectl waits for: `deployment/web`, `statefulset/db`",
                                    );
                                }
                            }
                        }
                        "config_map" => config_map = self.kube_object(val, &w, "shop-config"),
                        "secret" => secret = self.kube_object(val, &w, "shop-secrets"),
                        _ => timeout = self.duration(val, &w),
                    }
                }
                match kubeconfig {
                    Some(kubeconfig) if !manifests.is_empty() => Some(Target::Kubernetes {
                        manifests,
                        kubeconfig,
                        namespace,
                        rollout,
                        timeout,
                        config_map,
                        secret,
                    }),
                    _ => None,
                }
            }
        };
        if target.is_none() && self.diags.len() == before {
            let needs = match kind {
                "process" => "`command`",
                "script" => "`run`",
                "swarm" => "`compose` (the compose file, in the repository)",
                "gitops" => "`repo` (the environment repository) and `manifests`",
                _ => "`manifests` and `kubeconfig` (the name of the secret that holds it)",
            };
            let example = match kind {
                "swarm" => "`target: { swarm: { compose: deploy/compose.yml } }`",
                "gitops" => {
                    "`target: { gitops: { repo: https://git.example/env.git, manifests: [k8s/] } }`"
                }
                "script" => "`target: { script: { run: ./deploy.sh } }`",
                "kubernetes" => {
                    "`target: { kubernetes: { manifests: [k8s/], kubeconfig: KUBECONFIG } }`"
                }
                _ => example,
            };
            self.error(
                v.span,
                format!("{kwhat} needs {needs}"),
                format!("for example: {example}"),
            );
        }
        target
    }

    /// `notify:` — a list of channels, each with one of `webhook`, `slack`, `email`.
    pub(crate) fn notify(&mut self, node: &Node) -> Vec<Channel> {
        let example = "`notify: [{ slack: SLACK_WEBHOOK_URL, on: [run.failed] }]`";
        let Kind::Seq(items) = &node.kind else {
            if !node.is_null() {
                self.type_error(node, "`notify`", "a list of channels", example);
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let what = format!("item {} of `notify`", i + 1);
            if !matches!(item.kind, Kind::Map(_)) {
                self.type_error(item, &what, "a mapping", example);
                continue;
            }
            let (mut to, mut kinds, mut on, mut environments) = (None, 0, Vec::new(), Vec::new());
            let mut spans = crate::delivery::ChannelSpans::default();
            for (k, _, v) in self.entries(item, &what, Some(NOTIFY_KEYS), example) {
                let kw = format!("`{k}` in {what}");
                match k {
                    "webhook" => {
                        kinds += 1;
                        to = self.webhook(v, &kw);
                    }
                    "slack" => {
                        kinds += 1;
                        to = self
                            .secret_name(
                                v,
                                &kw,
                                "`slack: SLACK_WEBHOOK_URL` (the secret holding the URL)",
                            )
                            .map(|secret| ChannelKind::Slack { secret });
                    }
                    "email" => {
                        kinds += 1;
                        let mut to_all = Vec::new();
                        for a in self.strings(v, &kw, "`email: [ops@example.com]`") {
                            if valid_address(&a.value) {
                                to_all.push(a.value);
                            } else {
                                self.error(
                                    a.span,
                                    format!("{kw}: `{}` is not an e-mail address", a.value),
                                    "for example `ops@example.com`",
                                );
                            }
                        }
                        to = (!to_all.is_empty()).then_some(ChannelKind::Email { to: to_all });
                    }
                    "on" => {
                        spans.on = v.span;
                        for e in self.strings(v, &kw, "`on: [run.failed, deployment.failed]`") {
                            match NotifyEvent::parse(&e.value) {
                                Some(ev) => on.push(ev),
                                None => {
                                    let names = NotifyEvent::ALL.map(NotifyEvent::as_str);
                                    let help = match did_you_mean(&e.value, names) {
                                        Some(s) => format!("did you mean `{s}`?"),
                                        None => format!("events: {}", names.join(", ")),
                                    };
                                    self.error(
                                        e.span,
                                        format!("{kw}: unknown event `{}`", e.value),
                                        help,
                                    );
                                }
                            }
                        }
                    }
                    _ => {
                        for e in self.strings(v, &kw, "`environments: [production]`") {
                            spans.environments.push(e.span);
                            environments.push(e.value);
                        }
                    }
                }
            }
            if kinds != 1 {
                self.error(
                    item.span,
                    format!("{what} must have exactly one of `webhook`, `slack`, `email`"),
                    format!("for example {example}"),
                );
                continue;
            }
            if let Some(to) = to {
                out.push(Channel {
                    to,
                    on,
                    environments,
                    spans,
                });
            }
        }
        out
    }

    /// `webhook: URL` or `webhook: { url: URL, secret: NAME }`.
    fn webhook(&mut self, node: &Node, what: &str) -> Option<ChannelKind> {
        let example = "`webhook: { url: https://hooks.example.com/ferry, secret: HOOK_SECRET }`";
        let (url, secret) = if let Kind::Scalar(..) = node.kind {
            (Some((self.string(node, what, example)?, node.span)), None)
        } else {
            let (mut url, mut secret) = (None, None);
            for (k, _, v) in self.entries(node, what, Some(WEBHOOK_KEYS), example) {
                let kw = format!("`{k}` in {what}");
                if k == "url" {
                    url = self.string(v, &kw, example).map(|u| (u, v.span));
                } else {
                    secret = self.secret_name(v, &kw, "`secret: HOOK_SECRET`");
                }
            }
            (url, secret)
        };
        let Some((url, span)) = url else {
            self.error(
                node.span,
                format!("{what} has no `url`"),
                format!("for example {example}"),
            );
            return None;
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains("${{") {
            self.error(
                span,
                format!("{what}: `{url}` is not an http:// or https:// URL"),
                "for example `https://hooks.example.com/ferry`",
            );
            return None;
        }
        Some(ChannelKind::Webhook { url, secret })
    }

    /// The name of a repository secret (`SLACK_WEBHOOK_URL`).
    fn secret_name(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        let name = self.string(node, what, example)?;
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok && name.contains("://") {
            // A pasted URL is the credential itself: said without repeating it.
            self.masked_error(
                node.span,
                format!("{what}: a URL here is a credential in the repository"),
                format!(
                    "store the URL as a repository secret (`ferry secrets set`) and name the secret: {example}"
                ),
            );
            return None;
        }
        if !ok {
            // Not repeated: what is written here may be the secret itself (a token).
            self.masked_error(
                node.span,
                format!("{what}: this is not a secret's name"),
                format!("name a repository secret (letters, digits, `_`): {example}"),
            );
            return None;
        }
        Some(name)
    }

    /// `config_map:` or `secret:` of the `kubernetes` target: `NAME` (every variable or
    /// secret) or `{ name: NAME, keys: [A, B] }`.
    fn kube_object(&mut self, node: &Node, what: &str, example: &str) -> Option<KubeObject> {
        let forms = format!("`{example}` or `{{ name: {example}, keys: [LOG_LEVEL] }}`");
        let (name, keys) = match &node.kind {
            Kind::Map(_) => {
                let (mut name, mut keys) = (None, Vec::new());
                for (k, _, val) in self.entries(node, what, Some(KUBE_OBJECT_KEYS), &forms) {
                    let w = format!("`{k}` in {what}");
                    if k == "name" {
                        name = self
                            .string(val, &w, &format!("`name: {example}`"))
                            .map(|n| (n, val.span));
                    } else {
                        for key in self.strings(val, &w, "`keys: [LOG_LEVEL, API_URL]`") {
                            if is_env_name(&key.value) {
                                keys.push(key.value);
                            } else {
                                self.error(
                                    key.span,
                                    format!("{w}: `{}` is not a variable or secret name", key.value),
                                    "names are letters, digits and `_`, and do not start with a digit",
                                );
                            }
                        }
                    }
                }
                let Some(name) = name else {
                    self.error(node.span, format!("{what} needs `name`"), forms);
                    return None;
                };
                (name, keys)
            }
            _ => (
                self.string(node, what, &forms).map(|n| (n, node.span))?,
                Vec::new(),
            ),
        };
        let (name, span) = name;
        if !name.contains("${{") && !is_dns_subdomain(&name) {
            self.error(
                span,
                format!("{what}: `{name}` is not a Kubernetes object name"),
                "lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters",
            );
            return None;
        }
        Some(KubeObject { name, keys })
    }

    /// `watch: false`, `watch: true` or `watch: { interval: 10s, failures: 3 }`.
    fn watch(&mut self, node: &Node, what: &str) -> Watch {
        let wwhat = format!("`watch` in {what}");
        let example = "`watch: { interval: 10s, failures: 3 }` (or `watch: false`)";
        let mut w = Watch::default();
        if let Kind::Scalar(..) = node.kind {
            if let Some(on) = self.bool(node, &wwhat) {
                w.enabled = on;
            }
            return w;
        }
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, &wwhat, "a mapping or a boolean", example);
            return w;
        }
        for (k, _, val) in self.entries(node, &wwhat, Some(WATCH_KEYS), example) {
            let kw = format!("`{k}` in {wwhat}");
            if k == "interval" {
                match self.duration(val, &kw) {
                    Some(d) if d < Watch::MIN_INTERVAL => self.error(
                        val.span,
                        format!("{kw} must be at least 100ms"),
                        "for example `interval: 10s`",
                    ),
                    d => w.interval = d.or(w.interval),
                }
            } else {
                match self.scalar(val, &kw).map(|s| s.parse::<u32>()) {
                    Some(Ok(n)) if (1..=Watch::MAX_FAILURES).contains(&n) => w.failures = Some(n),
                    Some(_) => self.error(
                        val.span,
                        format!(
                            "{kw} must be a whole number from 1 to {}",
                            Watch::MAX_FAILURES
                        ),
                        "for example `failures: 3`",
                    ),
                    None => {}
                }
            }
        }
        w
    }

    fn verify(&mut self, node: &Node, what: &str) -> Option<Verify> {
        let vwhat = format!("`verify` in {what}");
        let example = "`verify: { http: http://127.0.0.1:8080/healthz, for: 30s }`";
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, &vwhat, "a mapping", example);
            return None;
        }
        let before = self.diags.len();
        let mut v = Verify {
            probes: Vec::new(),
            window: None,
            interval: None,
        };
        for (k, _, val) in self.entries(node, &vwhat, Some(VERIFY_KEYS), example) {
            let w = format!("`{k}` in {vwhat}");
            let items: Vec<&Node> = match &val.kind {
                Kind::Seq(items) if k != "for" && k != "interval" => items.iter().collect(),
                _ => vec![val],
            };
            match k {
                "http" => {
                    for item in items {
                        if let Some(p) = self.http_probe(item, &w) {
                            v.probes.push(p);
                        }
                    }
                }
                "tcp" => {
                    for item in items {
                        if let Some(address) = self.string(item, &w, "`tcp: 127.0.0.1:5432`") {
                            if address.contains("${{")
                                || address
                                    .rsplit_once(':')
                                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                            {
                                v.probes.push(Probe::Tcp { address });
                            } else {
                                self.error(
                                    item.span,
                                    format!("{w}: `{address}` is not HOST:PORT"),
                                    "for example `127.0.0.1:5432`",
                                );
                            }
                        }
                    }
                }
                "command" => {
                    for item in items {
                        if let Some(run) = self.string(item, &w, "`command: ./healthcheck.sh`") {
                            v.probes.push(Probe::Command { run });
                        }
                    }
                }
                "for" => v.window = self.duration(val, &w),
                _ => v.interval = self.duration(val, &w),
            }
        }
        if v.probes.is_empty() {
            if self.diags.len() == before {
                self.error(
                    node.span,
                    format!("{vwhat} has no probe"),
                    "add `http`, `tcp` or `command`",
                );
            }
            return None;
        }
        Some(v)
    }

    fn http_probe(&mut self, node: &Node, what: &str) -> Option<Probe> {
        let (url, status, body) = if let Kind::Scalar(..) = node.kind {
            (
                self.string(node, what, "`http: http://127.0.0.1:8080/healthz`")?,
                200,
                None,
            )
        } else {
            let (mut url, mut status, mut body) = (None, 200u16, None);
            for (k, _, v) in self.entries(
                node,
                what,
                Some(HTTP_KEYS),
                "`{ url: http://127.0.0.1:8080/, status: 200, body: ok }`",
            ) {
                let w = format!("`{k}` in {what}");
                match k {
                    "url" => url = self.string(v, &w, "`url: http://127.0.0.1:8080/healthz`"),
                    "status" => match self.scalar(v, &w).and_then(|s| s.parse::<u16>().ok()) {
                        Some(s) if (100..=599).contains(&s) => status = s,
                        _ => self.error(
                            v.span,
                            format!("{w} must be an HTTP status code"),
                            "for example `status: 200`",
                        ),
                    },
                    _ => body = self.string(v, &w, "`body: ok`"),
                }
            }
            (url?, status, body)
        };
        let is_url = url.starts_with("http://") || url.starts_with("https://");
        if !(url.contains("${{") || is_url) {
            self.error(
                node.span,
                format!("{what}: `{url}` is not an http:// or https:// URL"),
                "for example `http://127.0.0.1:8080/healthz`",
            );
            return None;
        }
        Some(Probe::Http { url, status, body })
    }
}

/// `HOST_PORT:CONTAINER_PORT` or `IP:HOST_PORT:CONTAINER_PORT` → (ip, host, container).
pub fn port_mapping(text: &str) -> Option<(String, u16, u16)> {
    let parts: Vec<&str> = text.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c, h] => (c, h, "127.0.0.1"),
        [c, h, ip] if !ip.is_empty() => (c, h, *ip),
        _ => return None,
    };
    Some((ip.to_string(), host.parse().ok()?, container.parse().ok()?))
}

/// An environment's name: lower-case letters, digits, `-` and `_`, starting with a letter.
pub fn is_environment_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Checks across sections: jobs named by `release`, the order of environments, that
/// every environment can deploy, and docker targets that have an image to run.
pub(crate) fn check(p: &Pipeline, diags: &mut Vec<Diagnostic>) {
    let d = &p.delivery;
    check_notify(d, diags);
    if let Some(r) = &d.release {
        for name in &r.artifacts {
            match p.job(&name.value) {
                None => diags.push(unknown_job(p, name, "release.artifacts")),
                Some(j) if j.artifacts.is_empty() => diags.push(
                    Diagnostic::error(
                        name.span,
                        format!("job `{}` keeps no artifacts", name.value),
                    )
                    .with_help(
                        "add `artifacts:` to the job, or remove it from `release.artifacts`",
                    ),
                ),
                _ => {}
            }
        }
        for name in &r.images {
            match p.job(&name.value) {
                None => diags.push(unknown_job(p, name, "release.images")),
                Some(j) if j.build_image.is_none() => diags.push(
                    Diagnostic::error(name.span, format!("job `{}` builds no image", name.value))
                        .with_help(
                            "add `build_image:` to the job, or remove it from `release.images`",
                        ),
                ),
                _ => {}
            }
        }
    }
    if d.environments.is_empty() {
        return;
    }
    if d.release.is_none() {
        diags.push(
            Diagnostic::error(d.environments[0].span, "environments need a `release:` section")
                .with_help("add `release:` naming what a successful run seals, e.g. `release: { artifacts: [build] }`"),
        );
    }
    for env in &d.environments {
        if let Some(after) = &env.after {
            if after.value == env.name {
                diags.push(
                    Diagnostic::error(
                        after.span,
                        format!("environment `{}` comes after itself", env.name),
                    )
                    .with_help("name another environment"),
                );
            } else if d.environment(&after.value).is_none() {
                let help = match did_you_mean(
                    &after.value,
                    d.environments.iter().map(|e| e.name.as_str()),
                ) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the environments are: {}",
                        d.environments
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                diags.push(
                    Diagnostic::error(
                        after.span,
                        format!(
                            "environment `{}` comes after `{}`, which is not an environment",
                            env.name, after.value
                        ),
                    )
                    .with_help(help),
                );
            }
        }
        if d.deploy_of(&env.name).is_none() && !diags.iter().any(|x| x.message.contains("`deploy`"))
        {
            diags.push(
                Diagnostic::error(
                    env.span,
                    format!("environment `{}` has no deploy", env.name),
                )
                .with_help("add a top-level `deploy:` (or one in the environment) with a `target`"),
            );
        }
        if let Some(DeploySpec {
            target: Target::Docker { image, .. },
            ..
        }) = d.deploy_of(&env.name)
        {
            let images: Vec<&str> = d
                .release
                .iter()
                .flat_map(|r| r.images.iter().map(|i| i.value.as_str()))
                .collect();
            let ok = match image {
                Some(i) => images.contains(&i.as_str()),
                None => images.len() == 1,
            };
            if !ok && d.release.is_some() {
                diags.push(
                    Diagnostic::error(
                        env.span,
                        format!(
                            "environment `{}` deploys a container, but the release has {}",
                            env.name,
                            match image {
                                Some(i) => format!("no image from job `{i}`"),
                                None if images.is_empty() => "no image".to_string(),
                                None => "several images: name one with `image:`".to_string(),
                            }
                        ),
                    )
                    .with_help("list the job that builds it in `release.images`"),
                );
            }
        }
    }
    // Cycles through `after:`.
    let position = |name: &str| d.environments.iter().position(|e| e.name == name);
    for (i, env) in d.environments.iter().enumerate() {
        let mut seen = vec![env.name.as_str()];
        let mut at = env;
        while let Some(after) = &at.after {
            let Some(next) = d.environment(&after.value) else {
                break;
            };
            if next.name == at.name {
                break; // "comes after itself", reported above
            }
            if next.name == env.name {
                // Each cycle once: from its member that comes first in the file.
                if seen.iter().any(|n| position(n).is_some_and(|p| p < i)) {
                    break;
                }
                diags.push(
                    Diagnostic::error(
                        env.span,
                        format!(
                            "environments come after each other in a cycle: {} → {}",
                            seen.join(" → "),
                            env.name
                        ),
                    )
                    .with_help("remove one `after:` of the cycle"),
                );
                break;
            }
            if seen.contains(&next.name.as_str()) {
                break;
            }
            seen.push(&next.name);
            at = next;
        }
    }
}

/// `notify:` channels that would never be told what their author meant: an
/// environment that is not one, or only run events on a channel limited to
/// environments (which is told no run events).
fn check_notify(d: &crate::delivery::Delivery, diags: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = d.environments.iter().map(|e| e.name.as_str()).collect();
    for (i, c) in d.notify.iter().enumerate() {
        for (env, span) in c.environments.iter().zip(&c.spans.environments) {
            if names.contains(&env.as_str()) {
                continue;
            }
            let help = match did_you_mean(env, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => "this file names no environment".to_string(),
                None => format!("environments: {}", names.join(", ")),
            };
            diags.push(
                Diagnostic::warning(
                    *span,
                    format!(
                        "`environments` in item {} of `notify` names `{env}`, which is no environment: nothing of it is told",
                        i + 1
                    ),
                )
                .with_help(help),
            );
        }
        if !c.environments.is_empty() && !c.on.is_empty() && c.on.iter().all(|e| e.of_run()) {
            diags.push(
                Diagnostic::warning(
                    c.spans.on,
                    format!(
                        "item {} of `notify` is told nothing: a channel limited to `environments` is told no run events",
                        i + 1
                    ),
                )
                .with_help("tell run events on a channel of their own, without `environments`"),
            );
        }
    }
}

fn unknown_job(p: &Pipeline, name: &Spanned<String>, what: &str) -> Diagnostic {
    let help = match did_you_mean(&name.value, p.jobs.iter().map(|j| j.name.as_str())) {
        Some(s) => format!("did you mean `{s}`?"),
        None => "name a job of this file".to_string(),
    };
    Diagnostic::error(
        name.span,
        format!("`{what}` names `{}`, which is not a job", name.value),
    )
    .with_help(help)
}

/// A Kubernetes object name (RFC 1123 subdomain): what ConfigMaps and Secrets are
/// called.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// What `kubectl rollout status` is given: `kind/name` (`deployment/web`,
/// `deployments.apps/web`), never anything kubectl would read as a flag.
pub fn is_rollout_target(t: &str) -> bool {
    t.split_once('/').is_some_and(|(kind, name)| {
        kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
            && is_dns_subdomain(name)
    })
}
