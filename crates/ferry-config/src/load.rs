//! From the YAML tree to the typed [`Pipeline`], collecting every problem on the way.
//!
//! Each section has a list of the keys it accepts; the schema test checks that
//! `ferry schema` lists exactly these.

use std::time::Duration;

use crate::diagnostic::{Diagnostic, Span, did_you_mean};
use crate::duration::parse_duration;
use crate::model::*;
use crate::yaml::{Kind, Node, Style};

pub const TOP_KEYS: &[&str] = &[
    "on",
    "env",
    "concurrency",
    "jobs",
    "release",
    "environments",
    "deploy",
    "notify",
];
pub const CONCURRENCY_KEYS: &[&str] = &["group", "cancel_in_progress"];
pub const JOB_KEYS: &[&str] = &[
    "image",
    "resources",
    "steps",
    "run",
    "needs",
    "if",
    "matrix",
    "env",
    "working_directory",
    "timeout",
    "retry",
    "allow_failure",
    "artifacts",
    "reports",
    "services",
    "cache",
    "build_image",
];
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "env",
    "command",
    "entrypoint",
    "ports",
    "health",
    "wait",
];
pub const CACHE_KEYS: &[&str] = &["key", "paths"];
pub const BUILD_KEYS: &[&str] = &[
    "name",
    "context",
    "dockerfile",
    "args",
    "target",
    "labels",
    "tags",
    "push",
];
pub const IMAGE_KEYS: &[&str] = &["name", "user", "entrypoint"];
pub const RESOURCE_KEYS: &[&str] = &["cpus", "memory"];
pub const STEP_KEYS: &[&str] = &["name", "run", "env", "working_directory", "timeout"];
pub const ON_KEYS: &[&str] = &["push", "tag", "pull_request", "schedule", "manual"];
pub const FILTER_KEYS: &[&str] = &["branches", "paths"];
pub const RETRY_KEYS: &[&str] = &["max", "when", "exit_codes"];
pub const REPORT_KEYS: &[&str] = &["junit"];
pub const MATRIX_SPECIAL: &[&str] = &["include", "exclude"];

/// The most attempts `retry` may ask for.
pub const MAX_RETRY: u32 = 10;

pub struct Loader {
    pub diags: Vec<Diagnostic>,
}

impl Loader {
    pub fn new() -> Self {
        Self { diags: Vec::new() }
    }

    pub(crate) fn error(
        &mut self,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(span, message).with_help(help));
    }

    /// An error whose excerpt hides what the span covers (it may be a credential).
    pub(crate) fn masked_error(
        &mut self,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(span, message).with_help(help).masked());
    }

    pub(crate) fn type_error(&mut self, node: &Node, what: &str, expected: &str, example: &str) {
        self.error(
            node.span,
            format!("{what} must be {expected}, found {}", node.type_name()),
            format!("for example: {example}"),
        );
    }

    /// The entries of a mapping, with unknown and duplicate keys reported.
    /// `allowed: None` accepts any key (names chosen by the user).
    pub(crate) fn entries<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: Option<&[&str]>,
        example: &str,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let Kind::Map(items) = &node.kind else {
            if !node.is_null() {
                self.type_error(node, what, "a mapping", example);
            }
            return Vec::new();
        };
        let mut out: Vec<(&str, &Node, &Node)> = Vec::new();
        for (k, v) in items {
            let Some(key) = k
                .as_str()
                .filter(|_| !matches!(k.kind, Kind::Scalar(_, Style::Block)))
            else {
                self.error(
                    k.span,
                    format!(
                        "keys in {what} must be plain names, found {}",
                        k.type_name()
                    ),
                    "write the key as a simple word",
                );
                continue;
            };
            if let Some(allowed) = allowed
                && !allowed.contains(&key)
            {
                let help = match did_you_mean(key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if what == "the pipeline" => format!(
                        "the pipeline accepts: {} (and `x-` keys for anchors)",
                        allowed.join(", ")
                    ),
                    None => format!("{what} accepts: {}", allowed.join(", ")),
                };
                self.error(k.span, format!("unknown key `{key}` in {what}"), help);
                continue;
            }
            if let Some((_, first, _)) = out.iter().find(|(name, _, _)| *name == key) {
                let line = first.span.start.line;
                let message = if what == "`jobs`" {
                    format!("duplicate job name `{key}`")
                } else {
                    format!("duplicate key `{key}` in {what}")
                };
                self.error(
                    k.span,
                    message,
                    format!("`{key}` is already defined on line {line}; remove or rename one"),
                );
                continue;
            }
            out.push((key, k, v));
        }
        out
    }

    /// A scalar as text (numbers and booleans as written). Null and collections are errors.
    pub(crate) fn string(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s, _) if !node.is_null() => Some(s.clone()),
            _ => {
                self.type_error(node, what, "a string", example);
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar(s, Style::Plain) if s == "true" => Some(true),
            Kind::Scalar(s, Style::Plain) if s == "false" => Some(false),
            _ => {
                self.error(
                    node.span,
                    format!(
                        "{what} must be `true` or `false`, found {}",
                        node.type_name()
                    ),
                    "write `true` or `false` (words such as `yes` or `on` are strings here)",
                );
                None
            }
        }
    }

    pub(crate) fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = match &node.kind {
            Kind::Scalar(s, _) if !node.is_null() => s,
            _ => {
                self.type_error(node, what, "a duration", "`timeout: 10m`");
                return None;
            }
        };
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(
                    node.span,
                    format!("invalid duration for {what}: {msg}"),
                    "write a number and a unit: `500ms`, `90s`, `20m`, `1h30m`",
                );
                None
            }
        }
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub(crate) fn strings(
        &mut self,
        node: &Node,
        what: &str,
        example: &str,
    ) -> Vec<Spanned<String>> {
        match &node.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|item| {
                    self.string(item, &format!("each item of {what}"), example)
                        .map(|s| Spanned::new(s, item.span))
                })
                .collect(),
            Kind::Scalar(..) if !node.is_null() => self
                .string(node, what, example)
                .map(|s| vec![Spanned::new(s, node.span)])
                .unwrap_or_default(),
            _ => {
                self.type_error(node, what, "a list of strings", example);
                Vec::new()
            }
        }
    }

    pub(crate) fn env(&mut self, node: &Node, what: &str) -> EnvVars {
        let mut out = Vec::new();
        for (name, key, value) in self.entries(node, what, None, "`env: { RUST_LOG: debug }`") {
            if !is_env_name(name) {
                self.error(
                    key.span,
                    format!("invalid variable name `{name}` in {what}"),
                    "names are letters, digits and `_`, and do not start with a digit",
                );
                continue;
            }
            if name.starts_with("FERRY_") || name == "CI" {
                self.error(
                    key.span,
                    format!("`{name}` is a built-in variable and cannot be set in {what}"),
                    "choose another name; built-ins are listed in docs/pipeline.md",
                );
                continue;
            }
            if let Some(v) = self.value(value, &format!("`{name}` in {what}"), "`PORT: \"8080\"`") {
                out.push((name.to_string(), v));
            }
        }
        out
    }

    /// The value of a `NAME: value` entry: a scalar as text, null as empty.
    pub(crate) fn value(&mut self, node: &Node, what: &str, example: &str) -> Option<String> {
        match &node.kind {
            _ if node.is_null() => Some(String::new()),
            Kind::Scalar(s, _) => Some(s.clone()),
            _ => {
                self.type_error(node, what, "a string", example);
                None
            }
        }
    }

    pub(crate) fn relative_dir(&mut self, node: &Node, what: &str) -> Option<String> {
        let dir = self.string(node, what, "`working_directory: app`")?;
        let escapes = dir.starts_with('/')
            || std::path::Path::new(&dir)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if escapes {
            self.error(
                node.span,
                format!("{what} must stay inside the workspace, found `{dir}`"),
                "use a path relative to the repository root, without `..`",
            );
            return None;
        }
        Some(dir)
    }

    pub fn pipeline(&mut self, root: Option<&Node>) -> Pipeline {
        let mut pipeline = Pipeline::default();
        let Some(root) = root.filter(|r| !r.is_null()) else {
            self.error(
                Span::default_at_start(),
                "the pipeline is empty",
                "add a `jobs:` section, e.g. `jobs: { build: { run: make } }`",
            );
            return pipeline;
        };
        if !matches!(root.kind, Kind::Map(_)) {
            self.type_error(
                root,
                "the pipeline",
                "a mapping",
                "`jobs: { build: { run: make } }`",
            );
            return pipeline;
        }
        let mut saw_jobs = false;
        pipeline.on.default = true;
        // `x-` keys hold YAML anchors for reuse (as in Compose files) and are ignored.
        let own = match &root.kind {
            Kind::Map(items) => Node {
                kind: Kind::Map(
                    items
                        .iter()
                        .filter(|(k, _)| !k.as_str().is_some_and(|s| s.starts_with("x-")))
                        .cloned()
                        .collect(),
                ),
                span: root.span,
            },
            _ => root.clone(),
        };
        for (key, k, v) in self.entries(&own, "the pipeline", Some(TOP_KEYS), "") {
            match key {
                "on" => pipeline.on = self.triggers(v),
                "concurrency" => pipeline.concurrency = self.concurrency(v),
                "env" => pipeline.env = self.env(v, "the pipeline's `env`"),
                "jobs" => {
                    saw_jobs = true;
                    pipeline.jobs = self.jobs(k, v);
                }
                "release" => pipeline.delivery.release = self.release(v),
                "environments" => pipeline.delivery.environments = self.environments(v),
                "deploy" => pipeline.delivery.deploy = self.deploy(v, "`deploy`"),
                "notify" => pipeline.delivery.notify = self.notify(v),
                _ => {}
            }
        }
        let top_typo = self
            .diags
            .iter()
            .any(|d| d.message.ends_with("in the pipeline"));
        if !saw_jobs && !top_typo {
            self.error(
                root.span.start_only(),
                "the pipeline has no `jobs:` section",
                "add one, e.g. `jobs: { build: { run: make } }`",
            );
        }
        pipeline
    }

    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        let what = "`concurrency`";
        // A string is the group alone.
        if let Kind::Scalar(s, _) = &node.kind
            && !node.is_null()
        {
            return Some(Concurrency {
                group: Spanned::new(s.clone(), node.span),
                cancel_in_progress: false,
            });
        }
        let example =
            "`concurrency: { group: \"deploy-${{ event.branch }}\", cancel_in_progress: true }`";
        let mut group = None;
        let mut cancel_in_progress = false;
        let before = self.diags.len();
        for (k, _, v) in self.entries(node, what, Some(CONCURRENCY_KEYS), example) {
            match k {
                "group" => {
                    group = self
                        .string(
                            v,
                            "`group` in `concurrency`",
                            "`group: ci-${{ event.branch }}`",
                        )
                        .map(|g| Spanned::new(g, v.span))
                }
                _ => {
                    cancel_in_progress = self
                        .bool(v, "`cancel_in_progress` in `concurrency`")
                        .unwrap_or(false)
                }
            }
        }
        // A misspelt `group` was reported already.
        if group.is_none() && matches!(node.kind, Kind::Map(_)) && self.diags.len() == before {
            self.error(
                node.span,
                "`concurrency` has no `group`",
                format!("for example: {example}"),
            );
        }
        group.map(|group| Concurrency {
            group,
            cancel_in_progress,
        })
    }

    fn triggers(&mut self, node: &Node) -> Triggers {
        let mut t = Triggers::default();
        for (key, _, v) in self.entries(
            node,
            "`on`",
            Some(ON_KEYS),
            "`on: { push: { branches: [main] } }`",
        ) {
            match key {
                "push" => t.push = Some(self.filter(v, "`on.push`")),
                "pull_request" => t.pull_request = Some(self.filter(v, "`on.pull_request`")),
                "tag" => {
                    t.tag = Some(if v.is_null() {
                        Vec::new()
                    } else {
                        self.strings(v, "`on.tag`", "`tag: [\"v*\"]`")
                            .into_iter()
                            .map(|s| s.value)
                            .collect()
                    })
                }
                "schedule" => {
                    for cron in self.strings(v, "`on.schedule`", "`schedule: [\"0 3 * * *\"]`") {
                        let fields = cron.value.split_whitespace().count();
                        if fields != 5 {
                            self.error(
                                cron.span,
                                format!("invalid cron expression `{}`: expected 5 fields, found {fields}", cron.value),
                                "write minute hour day-of-month month day-of-week, e.g. `0 3 * * *`",
                            );
                        } else {
                            t.schedule.push(cron.value);
                        }
                    }
                }
                "manual" => {
                    t.manual = if matches!(v.kind, Kind::Map(_)) || v.is_null() {
                        let _ = self.entries(v, "`on.manual`", Some(&[]), "");
                        Some(true)
                    } else {
                        self.bool(v, "`on.manual`")
                    }
                }
                _ => {}
            }
        }
        t
    }

    pub(crate) fn filter(&mut self, node: &Node, what: &str) -> RefFilter {
        let mut f = RefFilter::default();
        for (key, _, v) in self.entries(node, what, Some(FILTER_KEYS), "`{ branches: [main] }`") {
            let list = self.globs(
                v,
                &format!("`{key}` in {what}"),
                "use `*` for any characters within a name and `**` across `/`",
            );
            match key {
                "branches" => f.branches = list,
                _ => f.paths = list,
            }
        }
        f
    }

    /// A list of glob patterns, each checked (`help` says how to fix a bad one).
    pub(crate) fn globs(&mut self, node: &Node, what: &str, help: &str) -> Vec<String> {
        self.strings(node, what, "`[main, \"release/*\"]`")
            .into_iter()
            .filter_map(|s| match globset::Glob::new(&s.value) {
                Ok(_) => Some(s.value),
                Err(e) => {
                    self.error(s.span, format!("invalid pattern `{}`: {e}", s.value), help);
                    None
                }
            })
            .collect()
    }

    fn jobs(&mut self, key: &Node, node: &Node) -> Vec<Job> {
        if node.is_null() || matches!(&node.kind, Kind::Map(m) if m.is_empty()) {
            self.error(
                key.span,
                "the pipeline has no jobs",
                "add a job, e.g. `jobs: { build: { run: make } }`",
            );
            return Vec::new();
        }
        let mut jobs = Vec::new();
        for (name, k, v) in self.entries(node, "`jobs`", None, "`jobs: { build: { run: make } }`") {
            if !is_job_name(name) {
                self.error(
                    k.span,
                    format!("invalid job name `{name}`"),
                    "job names are letters, digits, `-`, `_` and `.`, starting with a letter or digit",
                );
                continue;
            }
            if let Some(job) = self.job(name, k, v) {
                jobs.push(job);
            }
        }
        jobs
    }

    fn job(&mut self, name: &str, key: &Node, node: &Node) -> Option<Job> {
        let what = format!("job `{name}`");
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, &what, "a mapping", "`build: { run: make }`");
            return None;
        }
        let mut job = Job {
            name: name.to_string(),
            span: key.span,
            steps: Vec::new(),
            needs: Vec::new(),
            condition: None,
            matrix: None,
            env: Vec::new(),
            working_directory: None,
            timeout: None,
            retry: Retry::default(),
            allow_failure: false,
            artifacts: Vec::new(),
            junit: Vec::new(),
            image: None,
            container: ContainerOptions::default(),
            services: Vec::new(),
            caches: Vec::new(),
            build_image: None,
        };
        let mut run_key: Option<&Node> = None;
        let mut steps_key: Option<&Node> = None;
        let mut has_build = false;
        for (k, knode, v) in self.entries(node, &what, Some(JOB_KEYS), "") {
            match k {
                "run" => {
                    run_key = Some(knode);
                    if let Some(run) =
                        self.string(v, &format!("`run` in {what}"), "`run: make test`")
                    {
                        job.steps.push(Step {
                            name: None,
                            run,
                            env: Vec::new(),
                            working_directory: None,
                            timeout: None,
                            run_span: v.span,
                        });
                    }
                }
                "steps" => {
                    steps_key = Some(knode);
                    job.steps.extend(self.steps(v, &what));
                }
                "image" => self.image(v, &what, &mut job),
                "resources" => self.resources(v, &what, &mut job.container),
                "services" => job.services = self.services(v, &what),
                "cache" => job.caches = self.caches(v, &what),
                "build_image" => {
                    has_build = true;
                    job.build_image = self.build_image(v, &what)
                }
                "needs" => {
                    job.needs = self.strings(v, &format!("`needs` in {what}"), "`needs: [build]`")
                }
                "if" => {
                    job.condition = match &v.kind {
                        Kind::Scalar(s, _) if !v.is_null() => Some(Spanned::new(s.clone(), v.span)),
                        _ => {
                            self.type_error(
                                v,
                                &format!("`if` in {what}"),
                                "an expression",
                                "`if: event.branch == 'main'`",
                            );
                            None
                        }
                    }
                }
                "matrix" => job.matrix = self.matrix(v, &what),
                "env" => job.env = self.env(v, &format!("the `env` of {what}")),
                "working_directory" => {
                    job.working_directory =
                        self.relative_dir(v, &format!("`working_directory` in {what}"))
                }
                "timeout" => job.timeout = self.duration(v, &format!("`timeout` in {what}")),
                "retry" => job.retry = self.retry(v, &what),
                "allow_failure" => {
                    job.allow_failure = self
                        .bool(v, &format!("`allow_failure` in {what}"))
                        .unwrap_or(false)
                }
                "artifacts" => {
                    job.artifacts = self.paths(
                        v,
                        &format!("`artifacts` in {what}"),
                        "`artifacts: [target/release/app]`",
                    )
                }
                "reports" => {
                    for (rk, _, rv) in self.entries(
                        v,
                        &format!("`reports` in {what}"),
                        Some(REPORT_KEYS),
                        "`reports: { junit: junit.xml }`",
                    ) {
                        if rk == "junit" {
                            job.junit = self.paths(
                                rv,
                                &format!("`reports.junit` in {what}"),
                                "`junit: target/junit.xml`",
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        match (run_key, steps_key) {
            (Some(r), Some(_)) => self.error(
                r.span,
                format!("{what} has both `run` and `steps`"),
                "use `run` for a single command or `steps` for several, not both",
            ),
            (None, None) if !has_build => self.error(
                key.span,
                format!("{what} has nothing to run"),
                "add `run: <command>`, a list of `steps`, or `build_image`",
            ),
            _ => {}
        }
        Some(job)
    }

    /// Relative paths or globs inside the workspace.
    pub(crate) fn paths(&mut self, node: &Node, what: &str, example: &str) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.strings(node, what, example) {
            let bad = p.value.starts_with('/')
                || p.value.split('/').any(|c| c == "..")
                || p.value.trim().is_empty();
            if bad {
                self.error(
                    p.span,
                    format!("{what}: `{}` must be a path inside the workspace", p.value),
                    "use a path relative to the workspace root, without `..`",
                );
            } else if let Err(e) = globset::Glob::new(&p.value) {
                self.error(
                    p.span,
                    format!("invalid pattern `{}`: {e}", p.value),
                    "check the brackets and braces of the pattern",
                );
            } else {
                out.push(p.value);
            }
        }
        out
    }

    /// `image: NAME` or `image: { name, user, entrypoint }`.
    fn image(&mut self, node: &Node, what: &str, job: &mut Job) {
        let iwhat = format!("`image` in {what}");
        if let Kind::Scalar(..) = node.kind {
            job.image = self
                .string(node, &iwhat, "`image: rust:1.80`")
                .filter(|i| !i.trim().is_empty());
            return;
        }
        let example = "`image: { name: rust:1.80, user: \"1000\" }`";
        let before = self.diags.len();
        for (k, _, v) in self.entries(node, &iwhat, Some(IMAGE_KEYS), example) {
            match k {
                "name" => {
                    job.image = self.string(v, &format!("`name` in {iwhat}"), "`name: rust:1.80`")
                }
                "user" => {
                    job.container.user =
                        self.string(v, &format!("`user` in {iwhat}"), "`user: \"1000:1000\"`")
                }
                _ => {
                    let parts = self.strings(
                        v,
                        &format!("`entrypoint` in {iwhat}"),
                        "`entrypoint: [\"/bin/sh\", \"-c\"]`",
                    );
                    job.container.entrypoint = Some(parts.into_iter().map(|p| p.value).collect());
                }
            }
        }
        // A misspelt `name` was reported already.
        if job.image.is_none() && matches!(node.kind, Kind::Map(_)) && self.diags.len() == before {
            self.error(
                node.span,
                format!("{iwhat} has no `name`"),
                format!("for example: {example}"),
            );
        }
    }

    /// `resources: { cpus: 1.5, memory: 512m }`.
    fn resources(&mut self, node: &Node, what: &str, c: &mut ContainerOptions) {
        let rwhat = format!("`resources` in {what}");
        for (k, _, v) in self.entries(
            node,
            &rwhat,
            Some(RESOURCE_KEYS),
            "`resources: { cpus: 2, memory: 1g }`",
        ) {
            let text = match &v.kind {
                Kind::Scalar(s, _) if !v.is_null() => s.clone(),
                _ => {
                    self.type_error(v, &format!("`{k}` in {rwhat}"), "a number", "`cpus: 1.5`");
                    continue;
                }
            };
            if k == "cpus" {
                match text.parse::<f64>() {
                    Ok(n) if n > 0.0 && n <= 1024.0 => {
                        c.cpus_milli = Some((n * 1000.0).round() as u64)
                    }
                    _ => self.error(
                        v.span,
                        format!("`cpus` in {rwhat} must be a number of CPUs, found `{text}`"),
                        "for example `cpus: 1.5`",
                    ),
                }
            } else {
                match parse_memory(&text) {
                    Some(bytes) => c.memory = Some(bytes),
                    None => self.error(
                        v.span,
                        format!("`memory` in {rwhat} must be a size such as `512m` or `2g`, found `{text}`"),
                        "write a number and a unit: `k`, `m` or `g` (powers of 1024)",
                    ),
                }
            }
        }
    }

    /// `services: { db: postgres:16, web: { image: ..., ports: [80] } }`.
    fn services(&mut self, node: &Node, what: &str) -> Vec<Service> {
        let swhat = format!("`services` in {what}");
        let mut out = Vec::new();
        for (name, k, v) in self.entries(node, &swhat, None, "`services: { db: postgres:16 }`") {
            if !is_service_name(name) {
                self.error(
                    k.span,
                    format!("invalid service name `{name}` in {what}"),
                    "service names are host names: lower-case letters, digits and `-`, starting with a letter",
                );
                continue;
            }
            let what = format!("service `{name}` in {what}");
            let mut service = Service {
                name: name.to_string(),
                image: String::new(),
                env: Vec::new(),
                command: None,
                entrypoint: None,
                ports: Vec::new(),
                health: None,
                wait: None,
            };
            if let Kind::Scalar(..) = v.kind {
                if let Some(image) = self.string(v, &what, "`db: postgres:16`") {
                    service.image = image;
                    out.push(service);
                }
                continue;
            }
            let example = "`db: { image: postgres:16, ports: [5432] }`";
            let before = self.diags.len();
            for (sk, _, sv) in self.entries(v, &what, Some(SERVICE_KEYS), example) {
                let kwhat = format!("`{sk}` in {what}");
                match sk {
                    "image" => {
                        service.image = self
                            .string(sv, &kwhat, "`image: postgres:16`")
                            .unwrap_or_default()
                    }
                    "env" => service.env = self.env(sv, &format!("the `env` of {what}")),
                    "command" => service.command = self.argv(sv, &kwhat),
                    "entrypoint" => service.entrypoint = self.argv(sv, &kwhat),
                    "ports" => service.ports = self.ports(sv, &kwhat),
                    "health" => service.health = self.string(sv, &kwhat, "`health: pg_isready`"),
                    _ => service.wait = self.duration(sv, &kwhat),
                }
            }
            if service.image.trim().is_empty() {
                if self.diags.len() == before {
                    self.error(
                        v.span,
                        format!("{what} has no `image`"),
                        format!("for example: {example}"),
                    );
                }
                continue;
            }
            out.push(service);
        }
        out
    }

    /// A command: a list of words, or a string split like a shell would.
    pub(crate) fn argv(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        if let Kind::Seq(_) = node.kind {
            return Some(
                self.strings(node, what, "`[\"httpd\", \"-f\"]`")
                    .into_iter()
                    .map(|s| s.value)
                    .collect(),
            );
        }
        let text = self.string(node, what, "`httpd -f -p 8080`")?;
        match shell_words::split(&text) {
            Ok(words) if !words.is_empty() => Some(words),
            Ok(_) => {
                self.error(
                    node.span,
                    format!("{what} is empty"),
                    "write the command, e.g. `httpd -f -p 8080`",
                );
                None
            }
            Err(e) => {
                self.error(
                    node.span,
                    format!("{what} cannot be split into words: {e}"),
                    "close the quotes, or write a list of words",
                );
                None
            }
        }
    }

    fn ports(&mut self, node: &Node, what: &str) -> Vec<u16> {
        let mut out = Vec::new();
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Scalar(..) if !node.is_null() => vec![node],
            _ => {
                self.type_error(node, what, "a list of port numbers", "`ports: [5432]`");
                return out;
            }
        };
        for item in items {
            match &item.kind {
                Kind::Scalar(s, _) => match s.parse::<u16>() {
                    Ok(p) if p > 0 => out.push(p),
                    _ => self.error(
                        item.span,
                        format!("{what}: `{s}` is not a TCP port"),
                        "a port is a number from 1 to 65535",
                    ),
                },
                _ => self.type_error(
                    item,
                    &format!("each item of {what}"),
                    "a port number",
                    "`5432`",
                ),
            }
        }
        out
    }

    /// `cache: { key, paths }` or a list of them.
    fn caches(&mut self, node: &Node, what: &str) -> Vec<Cache> {
        let cwhat = format!("`cache` in {what}");
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let example = "`cache: { key: \"deps-${{ hash_files('Cargo.lock') }}\", paths: [target] }`";
        let mut out = Vec::new();
        for item in items {
            if !matches!(item.kind, Kind::Map(_)) {
                self.type_error(item, &cwhat, "a mapping with `key` and `paths`", example);
                continue;
            }
            let (mut key, mut paths) = (None, None);
            let before = self.diags.len();
            for (k, _, v) in self.entries(item, &cwhat, Some(CACHE_KEYS), example) {
                if k == "key" {
                    key = self.string(v, &format!("`key` in {cwhat}"), "`key: deps-v1`");
                } else {
                    paths =
                        Some(self.paths(v, &format!("`paths` in {cwhat}"), "`paths: [target]`"));
                }
            }
            match (key, paths) {
                (Some(key), Some(paths)) if !key.trim().is_empty() && !paths.is_empty() => {
                    out.push(Cache { key, paths })
                }
                _ if self.diags.len() > before => {}
                _ => self.error(
                    item.span,
                    format!("{cwhat} needs a `key` and at least one path in `paths`"),
                    format!("for example: {example}"),
                ),
            }
        }
        out
    }

    /// `build_image: { name, context, dockerfile, args, target, labels, tags, push }`.
    fn build_image(&mut self, node: &Node, what: &str) -> Option<BuildImage> {
        let bwhat = format!("`build_image` in {what}");
        let example = "`build_image: { name: 127.0.0.1:5000/app, context: . }`";
        if !matches!(node.kind, Kind::Map(_)) {
            self.type_error(node, &bwhat, "a mapping", example);
            return None;
        }
        let mut build = BuildImage {
            name: String::new(),
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
            args: Vec::new(),
            target: None,
            labels: Vec::new(),
            tags: Vec::new(),
            push: true,
        };
        let before = self.diags.len();
        for (k, _, v) in self.entries(node, &bwhat, Some(BUILD_KEYS), example) {
            let kwhat = format!("`{k}` in {bwhat}");
            match k {
                "name" => build.name = self.string(v, &kwhat, "`name: 127.0.0.1:5000/app`").unwrap_or_default(),
                "context" => {
                    if let Some(dir) = self.relative_dir(v, &kwhat) {
                        build.context = dir;
                    }
                }
                "dockerfile" => {
                    if let Some(file) = self.relative_dir(v, &kwhat) {
                        build.dockerfile = file;
                    }
                }
                "args" => build.args = self.map(v, &kwhat),
                "labels" => build.labels = self.map(v, &kwhat),
                "target" => build.target = self.string(v, &kwhat, "`target: runtime`"),
                "tags" => {
                    build.tags = self
                        .strings(v, &kwhat, "`tags: [latest]`")
                        .into_iter()
                        .filter_map(|t| {
                            if t.value.contains("${{") || is_tag(&t.value) {
                                Some(t.value)
                            } else {
                                self.error(
                                    t.span,
                                    format!("`{}` is not a valid image tag", t.value),
                                    "tags are up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
                                );
                                None
                            }
                        })
                        .collect()
                }
                _ => build.push = self.bool(v, &kwhat).unwrap_or(true),
            }
        }
        if build.name.trim().is_empty() {
            if self.diags.len() == before {
                self.error(
                    node.span,
                    format!("{bwhat} has no `name`"),
                    format!("for example: {example}"),
                );
            }
            return None;
        }
        if !build.name.contains("${{") && !is_repository(&build.name) {
            self.error(
                node.span,
                format!("{bwhat}: `{}` is not a valid image name", build.name),
                "write a repository without a tag, e.g. `127.0.0.1:5000/team/app` (tags go in `tags`)",
            );
            return None;
        }
        Some(build)
    }

    /// `NAME: value` pairs with any names (build args, labels).
    pub(crate) fn map(&mut self, node: &Node, what: &str) -> EnvVars {
        let mut out = Vec::new();
        for (name, _, value) in self.entries(node, what, None, "`{ VERSION: \"1.2\" }`") {
            let example = "`VERSION: \"1.2\"`";
            if let Some(v) = self.value(value, &format!("`{name}` in {what}"), example) {
                out.push((name.to_string(), v));
            }
        }
        out
    }

    fn steps(&mut self, node: &Node, what: &str) -> Vec<Step> {
        let Kind::Seq(items) = &node.kind else {
            self.type_error(
                node,
                &format!("`steps` in {what}"),
                "a list",
                "`steps: [{ run: make }]`",
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(
                node.span,
                format!("`steps` in {what} is empty"),
                "add at least one step, e.g. `- run: make`",
            );
        }
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let swhat = format!("step {} of {what}", i + 1);
            if let Kind::Scalar(s, _) = &item.kind
                && !item.is_null()
            {
                steps.push(Step {
                    name: None,
                    run: s.clone(),
                    env: Vec::new(),
                    working_directory: None,
                    timeout: None,
                    run_span: item.span,
                });
                continue;
            }
            if !matches!(item.kind, Kind::Map(_)) {
                self.type_error(
                    item,
                    &swhat,
                    "a command or a mapping with `run`",
                    "`- run: make`",
                );
                continue;
            }
            let mut step = Step {
                name: None,
                run: String::new(),
                env: Vec::new(),
                working_directory: None,
                timeout: None,
                run_span: item.span,
            };
            let mut has_run = false;
            for (k, _, v) in self.entries(item, &swhat, Some(STEP_KEYS), "") {
                match k {
                    "name" => {
                        step.name =
                            self.string(v, &format!("`name` in {swhat}"), "`name: Unit tests`")
                    }
                    "run" => {
                        has_run = true;
                        step.run_span = v.span;
                        step.run = self
                            .string(v, &format!("`run` in {swhat}"), "`run: make test`")
                            .unwrap_or_default();
                    }
                    "env" => step.env = self.env(v, &format!("the `env` of {swhat}")),
                    "working_directory" => {
                        step.working_directory =
                            self.relative_dir(v, &format!("`working_directory` in {swhat}"))
                    }
                    "timeout" => step.timeout = self.duration(v, &format!("`timeout` in {swhat}")),
                    _ => {}
                }
            }
            if !has_run {
                self.error(
                    item.span,
                    format!("{swhat} has no `run`"),
                    "add `run: <command>` to the step",
                );
            }
            steps.push(step);
        }
        steps
    }

    fn matrix(&mut self, node: &Node, what: &str) -> Option<Matrix> {
        let mwhat = format!("`matrix` in {what}");
        let mut m = Matrix::default();
        let entries = self.entries(node, &mwhat, None, "`matrix: { db: [\"15\", \"16\"] }`");
        for (key, knode, v) in entries {
            match key {
                "include" | "exclude" => {
                    let Kind::Seq(items) = &v.kind else {
                        self.type_error(
                            v,
                            &format!("`{key}` in {mwhat}"),
                            "a list of mappings",
                            &format!("`{key}: [{{ db: \"15\" }}]`"),
                        );
                        continue;
                    };
                    for item in items {
                        let mut combo = Vec::new();
                        for (ck, _, cv) in self.entries(
                            item,
                            &format!("an item of `{key}`"),
                            None,
                            "`{ db: \"15\" }`",
                        ) {
                            if let Some(s) = self.scalar(cv, &format!("`{ck}` in `{key}`")) {
                                combo.push((ck.to_string(), s));
                            }
                        }
                        if key == "include" {
                            m.include.push(combo)
                        } else {
                            m.exclude.push(combo)
                        }
                    }
                }
                _ => {
                    if !is_env_name(key) {
                        self.error(
                            knode.span,
                            format!("invalid matrix key `{key}`"),
                            "matrix keys are letters, digits and `_`",
                        );
                        continue;
                    }
                    let Kind::Seq(items) = &v.kind else {
                        self.type_error(
                            v,
                            &format!("`{key}` in {mwhat}"),
                            "a list of values",
                            &format!("`{key}: [a, b]`"),
                        );
                        continue;
                    };
                    if items.is_empty() {
                        self.error(
                            v.span,
                            format!("`{key}` in {mwhat} has no values"),
                            "list at least one value",
                        );
                        continue;
                    }
                    let values: Vec<String> = items
                        .iter()
                        .filter_map(|i| self.scalar(i, &format!("a value of `{key}` in {mwhat}")))
                        .collect();
                    m.axes.push((key.to_string(), values));
                }
            }
        }
        let _ = MATRIX_SPECIAL;
        if m.axes.is_empty() && m.include.is_empty() {
            if matches!(&node.kind, Kind::Map(items) if items.is_empty()) {
                self.error(
                    node.span,
                    format!("{mwhat} has no keys"),
                    "add a key with a list of values, e.g. `db: [\"15\", \"16\"]`",
                );
            }
            return None;
        }
        Some(m)
    }

    pub(crate) fn scalar(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s, _) if !node.is_null() => Some(s.clone()),
            _ => {
                self.type_error(node, what, "a string, number or boolean", "`\"16\"`");
                None
            }
        }
    }

    fn retry(&mut self, node: &Node, what: &str) -> Retry {
        let rwhat = format!("`retry` in {what}");
        let mut r = Retry {
            max: 0,
            when: vec![RetryWhen::Failure, RetryWhen::Timeout],
            exit_codes: Vec::new(),
        };
        if let Kind::Scalar(..) = node.kind {
            r.max = self.count(node, &rwhat).unwrap_or(0);
            return r;
        }
        for (k, _, v) in self.entries(
            node,
            &rwhat,
            Some(RETRY_KEYS),
            "`retry: { max: 2, when: [failure] }`",
        ) {
            match k {
                "max" => r.max = self.count(v, &format!("`max` in {rwhat}")).unwrap_or(0),
                "when" => {
                    r.when = Vec::new();
                    for w in self.strings(
                        v,
                        &format!("`when` in {rwhat}"),
                        "`when: [failure, timeout]`",
                    ) {
                        match w.value.as_str() {
                            "failure" => r.when.push(RetryWhen::Failure),
                            "timeout" => r.when.push(RetryWhen::Timeout),
                            other => {
                                let help = match did_you_mean(other, ["failure", "timeout"]) {
                                    Some(s) => format!("did you mean `{s}`?"),
                                    None => "`when` accepts: failure, timeout".into(),
                                };
                                self.error(
                                    w.span,
                                    format!("unknown retry condition `{other}`"),
                                    help,
                                );
                            }
                        }
                    }
                }
                "exit_codes" => {
                    for c in self.strings(
                        v,
                        &format!("`exit_codes` in {rwhat}"),
                        "`exit_codes: [137]`",
                    ) {
                        match c.value.parse::<i32>() {
                            Ok(n) if (0..=255).contains(&n) => r.exit_codes.push(n),
                            _ => self.error(
                                c.span,
                                format!("`{}` is not an exit code", c.value),
                                "exit codes are whole numbers from 0 to 255",
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }

    pub(crate) fn count(&mut self, node: &Node, what: &str) -> Option<u32> {
        let text = match &node.kind {
            Kind::Scalar(s, Style::Plain) => s,
            _ => {
                self.type_error(node, what, "a whole number", "`retry: 2`");
                return None;
            }
        };
        match text.parse::<u32>() {
            Ok(n) if n <= MAX_RETRY => Some(n),
            Ok(n) => {
                self.error(
                    node.span,
                    format!("{what} is {n}, more than the limit of {MAX_RETRY}"),
                    format!("use a number from 0 to {MAX_RETRY}"),
                );
                None
            }
            Err(_) => {
                self.type_error(node, what, "a whole number", "`retry: 2`");
                None
            }
        }
    }
}

/// A name a variable may have: letters, digits and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A host name label: what Docker's DNS answers for on the job's network.
fn is_service_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An image tag as the registry API accepts it.
fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An image repository without tag or digest: `[host[:port]/]path`, lower-case path.
fn is_repository(name: &str) -> bool {
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains([':', '.']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return false;
        }
    }
    !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && p.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        })
}

fn is_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `512m`, `2g`, `1024k`: a size in bytes (powers of 1024); at least 4 MiB (Docker's floor).
pub fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let bytes = n.checked_mul(match unit {
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    })?;
    (bytes >= 4 << 20).then_some(bytes)
}
