//! Checks that need the whole pipeline: `needs` and cycles, expressions and their names,
//! and jobs that can never run.

use crate::diagnostic::{Diagnostic, Pos, Span, did_you_mean};
use crate::expr::{self, Scope};
use crate::model::{Job, Pipeline};

pub(crate) fn check(p: &Pipeline, source: &str, diags: &mut Vec<Diagnostic>) {
    for job in &p.jobs {
        let c = &job.container;
        let container_only = c.cpus_milli.is_some()
            || c.memory.is_some()
            || c.user.is_some()
            || c.entrypoint.is_some();
        // Only for otherwise valid files: a malformed `image:` was reported already.
        if job.image.is_none() && container_only && !diags.iter().any(Diagnostic::is_error) {
            diags.push(
                Diagnostic::warning(job.span, format!("job `{}` has container settings but no image; they are ignored on the host", job.name))
                    .with_help("add `image:` to run the job in containers, or remove the settings"),
            );
        }
    }
    crate::load_delivery::check(p, diags);
    check_needs(p, diags);
    check_cycles(p, diags);
    check_expressions(p, source, diags);
}

fn check_needs(p: &Pipeline, diags: &mut Vec<Diagnostic>) {
    for job in &p.jobs {
        let mut seen: Vec<&str> = Vec::new();
        for need in &job.needs {
            let name = need.value.as_str();
            if name == job.name {
                diags.push(
                    Diagnostic::error(need.span, format!("job `{name}` needs itself"))
                        .with_help("remove it from its own `needs`"),
                );
            } else if p.job(name).is_none() {
                let help = match did_you_mean(name, p.jobs.iter().map(|j| j.name.as_str())) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "the jobs are: {}",
                        p.jobs
                            .iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                diags.push(
                    Diagnostic::error(
                        need.span,
                        format!("job `{}` needs `{name}`, which is not a job", job.name),
                    )
                    .with_help(help),
                );
            } else if seen.contains(&name) {
                diags.push(
                    Diagnostic::warning(need.span, format!("`{name}` is listed twice in `needs`"))
                        .with_help("remove the second one"),
                );
            }
            seen.push(name);
        }
    }
}

/// Reports each dependency cycle once, naming its jobs in order.
fn check_cycles(p: &Pipeline, diags: &mut Vec<Diagnostic>) {
    let index = |name: &str| p.jobs.iter().position(|j| j.name == name);
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; p.jobs.len()];
    let mut reported: Vec<Vec<usize>> = Vec::new();
    for start in 0..p.jobs.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (job, next need to look at)
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let needs = &p.jobs[node].needs;
            if *next >= needs.len() {
                state[node] = 2;
                stack.pop();
                continue;
            }
            let need = &needs[*next];
            *next += 1;
            let Some(target) = index(&need.value) else {
                continue;
            };
            if target == node {
                continue; // reported as "needs itself"
            }
            match state[target] {
                0 => {
                    state[target] = 1;
                    stack.push((target, 0));
                }
                1 => {
                    let pos = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    let cycle: Vec<usize> = stack[pos..].iter().map(|(n, _)| *n).collect();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported.contains(&key) {
                        continue;
                    }
                    reported.push(key);
                    // Start the story at the job written first in the file.
                    let first = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, j)| **j)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    let ordered: Vec<usize> = cycle[first..]
                        .iter()
                        .chain(&cycle[..first])
                        .copied()
                        .collect();
                    let names: Vec<&str> =
                        ordered.iter().map(|j| p.jobs[*j].name.as_str()).collect();
                    let second = names.get(1).copied().unwrap_or(names[0]);
                    let span = p.jobs[ordered[0]]
                        .needs
                        .iter()
                        .find(|n| n.value == second)
                        .map(|n| n.span)
                        .unwrap_or(p.jobs[ordered[0]].span);
                    diags.push(
                        Diagnostic::error(
                            span,
                            format!("dependency cycle: {} → {}", names.join(" → "), names[0]),
                        )
                        .with_help("remove one of these `needs` to break the cycle"),
                    );
                }
                _ => {}
            }
        }
    }
}

fn check_expressions(p: &Pipeline, source: &str, diags: &mut Vec<Diagnostic>) {
    let lines = LineIndex::new(source);
    let pipeline_env: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
    // The concurrency group is decided with the plan: the event and the pipeline's env.
    if let Some(c) = &p.concurrency {
        let scope = Scope::pipeline(pipeline_env.clone(), true);
        check_text(&c.group.value, Some(c.group.span), &scope, &lines, diags);
    }
    // The pipeline's env cannot see matrix values or job env.
    for (_, value) in &p.env {
        check_text(
            value,
            Some(Span::default_at_start()),
            &Scope::pipeline(pipeline_env.clone(), false),
            &lines,
            diags,
        );
    }
    check_deploy_expressions(p, &lines, diags);
    for job in &p.jobs {
        let keys = job.matrix.as_ref().map(|m| m.keys()).unwrap_or_default();
        let mut env_names = pipeline_env.clone();
        env_names.extend(job.env.iter().map(|(k, _)| k.as_str()));
        if let Some(cond) = &job.condition {
            let scope = Scope::job(&keys, env_names.clone(), true);
            check_condition(job, &cond.value, cond.span, &scope, diags);
        }
        let scope = Scope::job(&keys, env_names.clone(), false);
        for (_, value) in &job.env {
            check_text(value, Some(job.span), &scope, &lines, diags);
        }
        for step in &job.steps {
            let mut names = env_names.clone();
            names.extend(step.env.iter().map(|(k, _)| k.as_str()));
            let scope = Scope::job(&keys, names, false);
            for (_, value) in &step.env {
                check_text(value, Some(job.span), &scope, &lines, diags);
            }
            check_text(&step.run, Some(step.run_span), &scope, &lines, diags);
        }
        // Services, caches and image builds see the job's env and matrix.
        let mut texts: Vec<&str> = Vec::new();
        for service in &job.services {
            texts.push(&service.image);
            texts.extend(service.env.iter().map(|(_, v)| v.as_str()));
        }
        texts.extend(job.caches.iter().map(|c| c.key.as_str()));
        if let Some(b) = &job.build_image {
            texts.push(&b.name);
            texts.extend(b.tags.iter().map(String::as_str));
            texts.extend(b.args.iter().chain(&b.labels).map(|(_, v)| v.as_str()));
        }
        for text in texts {
            check_text(text, Some(job.span), &scope, &lines, diags);
        }
    }
}

/// `${{ }}` in `deploy:` (and `infra.vars`) may use `vars.*`, `release.*`,
/// `environment.name` and `infra.outputs.*`.
fn check_deploy_expressions(p: &Pipeline, lines: &LineIndex<'_>, diags: &mut Vec<Diagnostic>) {
    use crate::delivery::{Probe, Target};
    let scope = Scope {
        deploy: true,
        ..Default::default()
    };
    let d = &p.delivery;
    let deploys = d
        .deploy
        .iter()
        .chain(d.environments.iter().filter_map(|e| e.deploy.as_ref()));
    for deploy in deploys {
        let mut texts: Vec<&str> = Vec::new();
        match &deploy.target {
            Target::Process { command, env } => {
                texts.push(command);
                texts.extend(env.iter().map(|(_, v)| v.as_str()));
            }
            Target::Docker {
                env,
                command,
                volumes,
                ..
            } => {
                texts.extend(env.iter().map(|(_, v)| v.as_str()));
                texts.extend(command.iter().flatten().map(String::as_str));
                texts.extend(volumes.iter().map(String::as_str));
            }
            Target::Script { run, .. } => texts.push(run),
            Target::Kubernetes {
                namespace,
                config_map,
                secret,
                ..
            } => {
                texts.extend(namespace.as_deref());
                texts.extend(config_map.iter().chain(secret).map(|o| o.name.as_str()));
            }
            Target::Swarm { stack, .. } => texts.extend(stack.as_deref()),
            Target::Gitops { path, .. } => texts.extend(path.as_deref()),
        }
        for f in &deploy.config.files {
            if let crate::delivery::ConfigSource::Content(text) = &f.source {
                texts.push(text);
            }
        }
        for probe in deploy.verify.iter().flat_map(|v| &v.probes) {
            texts.push(match probe {
                Probe::Http { url, .. } => url,
                Probe::Tcp { address } => address,
                Probe::Command { run } => run,
            });
        }
        for text in texts {
            check_text(text, Some(Span::default_at_start()), &scope, lines, diags);
        }
    }
    for infra in d.environments.iter().filter_map(|e| e.infra.as_ref()) {
        for (name, value) in &infra.vars {
            if value.contains("infra.outputs") {
                diags.push(
                    Diagnostic::error(
                        infra.dir.span,
                        format!("`infra.vars.{name}` uses `infra.outputs`, which exist only after the apply"),
                    )
                    .with_help("Terraform's outputs are for the deploy and its probes; pass values between modules in Terraform"),
                );
                continue;
            }
            check_text(value, Some(infra.dir.span), &scope, lines, diags);
        }
    }
}

fn check_condition(
    job: &Job,
    text: &str,
    span: Span,
    scope: &Scope<'_>,
    diags: &mut Vec<Diagnostic>,
) {
    let inner = expr::condition_text(text);
    if let Err(e) = expr::check(inner, scope) {
        diags.push(
            Diagnostic::error(
                span,
                format!("in `if` of job `{}`: {}", job.name, e.message),
            )
            .with_help(e.help),
        );
        return;
    }
    if matches!(inner, "false" | "False") {
        diags.push(
            Diagnostic::warning(
                span,
                format!(
                    "job `{}` can never run: its condition is always false",
                    job.name
                ),
            )
            .with_help("remove the job, or the condition"),
        );
    }
}

/// Checks each `${{ }}` of `text`; `at` is where the text is written when known.
fn check_text(
    text: &str,
    at: Option<Span>,
    scope: &Scope<'_>,
    lines: &LineIndex<'_>,
    diags: &mut Vec<Diagnostic>,
) {
    let fallback = at.unwrap_or_default();
    let found = match expr::find(text) {
        Ok(f) => f,
        Err(offset) => {
            let span = at
                .map(|s| lines.locate(s, &text[offset..offset + 3]))
                .unwrap_or(fallback);
            diags.push(
                Diagnostic::error(span, "unclosed `${{`")
                    .with_help("close the expression with `}}`"),
            );
            return;
        }
    };
    for f in found {
        if let Err(e) = expr::check(f.inner, scope) {
            let span = at
                .map(|s| lines.locate(s, &text[f.start..f.end]))
                .unwrap_or(fallback);
            diags.push(Diagnostic::error(span, e.message).with_help(e.help));
        }
    }
}

/// Maps line/column places to byte offsets, to find a piece of text inside a value.
struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self { source, starts }
    }

    fn offset(&self, p: Pos) -> usize {
        let line_start = self
            .starts
            .get(p.line.saturating_sub(1))
            .copied()
            .unwrap_or(self.source.len());
        let line = &self.source[line_start..];
        line.char_indices()
            .nth(p.col.saturating_sub(1))
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.source.len())
    }

    fn pos(&self, offset: usize) -> Pos {
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        Pos {
            line,
            col: self.source[start..offset].chars().count() + 1,
        }
    }

    /// The span of `needle` written at or after the start of `within`, else `within`.
    fn locate(&self, within: Span, needle: &str) -> Span {
        let from = self.offset(within.start);
        match self.source[from..].find(needle) {
            Some(i) => {
                let start = from + i;
                let end_pos = self.pos(start + needle.len());
                let start_pos = self.pos(start);
                Span {
                    start: start_pos,
                    end: if end_pos.line == start_pos.line {
                        end_pos
                    } else {
                        start_pos
                    },
                }
            }
            None => within,
        }
    }
}
