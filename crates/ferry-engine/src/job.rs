//! One job of a run: its attempts, each in a fresh workspace, its steps, reports and
//! artifacts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_config::RetryWhen;
use ferry_config::duration::format_duration;
use ferry_config::expr;
use ferry_exec::{Executor, JobSpec, OutputSink, StepOutcome, StepSpec};
use ferry_plan::{Plan, PlanJob};
use ferry_store::{JobEnd, LogWriter, Status, TestSummary, Write};

use crate::events::{EngineEvent, EventSink};
use crate::run::RunCtx;
use crate::{artifacts, junit, workspace};

/// The result of one attempt of a job.
enum Attempt {
    Success,
    Failed {
        reason: String,
        exit_code: Option<i32>,
        kind: RetryWhen,
    },
    Cancelled,
}

/// Feeds a step's output to the job's log and to the sink.
struct JobOutput<'a> {
    log: &'a mut LogWriter,
    sink: &'a dyn EventSink,
    job: &'a str,
    error: Option<std::io::Error>,
}

impl OutputSink for JobOutput<'_> {
    fn chunk(&mut self, data: &[u8]) {
        let offset = self.log.bytes() as u64;
        if let Err(e) = self.log.write(data)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self.sink.event(&EngineEvent::Output {
            job: self.job,
            offset,
            data,
        });
    }
}

impl JobOutput<'_> {
    /// A line from Ferry itself, in the job's log.
    fn say(&mut self, message: &str) {
        let line = format!("ferry: {message}\n");
        self.chunk(line.as_bytes());
    }
}

/// Runs job `i` through all its attempts and records how it ended.
pub(crate) async fn run_job(ctx: &RunCtx, i: usize) -> (Status, Option<String>) {
    let job = &ctx.plan.jobs[i];
    let job_id = &ctx.job_ids[i];
    let started = Instant::now();
    let mut log = match ctx.store.log_writer(&ctx.run.id, job_id) {
        Ok(l) => l,
        Err(e) => {
            return finish(
                ctx,
                i,
                started,
                None,
                Status::Failed,
                Some(format!("cannot open the log: {e}")),
                None,
                1,
                None,
            )
            .await;
        }
    };
    let dir = workspace::job_dir(&ctx.work_dir, i, &job.name);
    let max_attempts = job.retry.max + 1;
    let mut attempt = 0;
    let mut tests: Option<TestSummary>;
    let result = loop {
        attempt += 1;
        ctx.writer.send(Write::start_job(job_id, attempt as i64));
        ctx.sink.event(&EngineEvent::JobStarted {
            job: &job.name,
            attempt,
        });
        let mut out = JobOutput {
            log: &mut log,
            sink: ctx.sink.as_ref(),
            job: &job.name,
            error: None,
        };
        if attempt > 1 {
            out.say(&format!("attempt {attempt} of {max_attempts}"));
        }
        let (result, summary) = run_attempt(ctx, i, attempt, &dir, &mut out).await;
        tests = summary;
        if let Some(e) = out.error.take() {
            break Attempt::Failed {
                reason: format!("cannot write the log: {e}"),
                exit_code: None,
                kind: RetryWhen::Failure,
            };
        }
        if !ctx.keep {
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || workspace::remove(&d)).await;
        }
        match &result {
            Attempt::Failed {
                reason,
                exit_code,
                kind,
            } if attempt < max_attempts
                && retryable(job, *kind, *exit_code)
                && !ctx.cancel.is_cancelled() =>
            {
                out.say(&format!("{reason}; retrying"));
                continue;
            }
            _ => break result,
        }
    };
    let index = log.take_index();
    ctx.writer.send(Write::LogIndex {
        job_id: job_id.clone(),
        entries: index,
    });
    let (status, reason, exit) = match result {
        Attempt::Success => (Status::Success, None, Some(0)),
        Attempt::Failed {
            reason, exit_code, ..
        } => (Status::Failed, Some(reason), exit_code),
        Attempt::Cancelled => (Status::Cancelled, Some("cancelled".to_string()), None),
    };
    finish(
        ctx,
        i,
        started,
        Some(&log),
        status,
        reason,
        exit,
        attempt,
        tests,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &RunCtx,
    i: usize,
    started: Instant,
    log: Option<&LogWriter>,
    status: Status,
    reason: Option<String>,
    exit: Option<i32>,
    attempts: u32,
    tests: Option<TestSummary>,
) -> (Status, Option<String>) {
    let job = &ctx.plan.jobs[i];
    let reason = match (status, job.allow_failure, reason) {
        (Status::Failed, true, Some(r)) => Some(format!("{r} (failure allowed)")),
        (_, _, r) => r,
    };
    ctx.writer.send(Write::finish_job(
        &ctx.job_ids[i],
        JobEnd {
            status,
            reason: reason.clone(),
            exit_code: exit.map(i64::from),
            attempts: attempts as i64,
            log_bytes: log.map(|l| l.bytes()).unwrap_or(0),
            log_lines: log.map(|l| l.lines()).unwrap_or(0),
            tests: tests.clone(),
        },
    ));
    ctx.sink.event(&EngineEvent::JobFinished {
        job: &job.name,
        status,
        reason: reason.as_deref(),
        duration_ms: started.elapsed().as_millis() as u64,
        tests: tests.as_ref(),
    });
    (status, reason)
}

fn retryable(job: &PlanJob, kind: RetryWhen, exit_code: Option<i32>) -> bool {
    if !job.retry.when.contains(&kind) {
        return false;
    }
    match (kind, exit_code) {
        (RetryWhen::Failure, Some(code)) if !job.retry.exit_codes.is_empty() => {
            job.retry.exit_codes.contains(&code)
        }
        _ => true,
    }
}

/// One attempt: a fresh workspace, the steps in order, then reports and artifacts.
async fn run_attempt(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    dir: &Path,
    out: &mut JobOutput<'_>,
) -> (Attempt, Option<TestSummary>) {
    let job = &ctx.plan.jobs[i];
    let failed = |reason: String| Attempt::Failed {
        reason,
        exit_code: None,
        kind: RetryWhen::Failure,
    };
    // The workspace: the source, then the artifacts of the jobs this one needs.
    let source = ctx.source.clone();
    let target = dir.to_path_buf();
    let restore: Vec<PathBuf> = ancestors(&ctx.plan, i)
        .into_iter()
        .map(|d| workspace::job_dir(&ctx.artifacts_dir, d, &ctx.plan.jobs[d].name))
        .collect();
    let prepared = tokio::task::spawn_blocking(move || {
        workspace::remove(&target);
        workspace::materialize(
            &source.root,
            source.files.as_deref().map(|v| v.as_slice()),
            &target,
        )
        .map_err(|e| format!("cannot make the workspace {}: {e}", target.display()))?;
        artifacts::restore(&restore, &target)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = prepared {
        out.say(&e);
        return (failed(e), None);
    }
    let image = job.image.clone().or_else(|| ctx.default_image.clone());
    let spec = JobSpec {
        name: job.name.clone(),
        workspace: dir.to_path_buf(),
        image: image.clone(),
        container: ferry_exec::ContainerSettings {
            user: job.container.user.clone(),
            entrypoint: job.container.entrypoint.clone(),
            cpus_milli: job.container.cpus_milli,
            memory: job.container.memory,
        },
    };
    // A job with an image runs in containers; the others on the host.
    let executor = match (&image, &ctx.containers) {
        (None, _) => ctx.executor.clone(),
        (Some(_), Some(c)) => c.clone(),
        (Some(image), None) => {
            let e = format!(
                "job `{}` needs image `{image}`, but Docker is not available here",
                job.name
            );
            out.say(&format!("error: {e}"));
            return (failed(e), None);
        }
    };
    let prepared = match executor.prepare(&spec).await {
        Ok(p) => p,
        Err(e) => {
            out.say(&e);
            return (failed(e), None);
        }
    };
    let result = run_steps(ctx, i, attempt, dir, executor.as_ref(), &prepared, out).await;
    executor.cleanup(&prepared).await;

    let tests = if matches!(result, Attempt::Cancelled) || job.junit.is_empty() {
        None
    } else {
        Some(read_reports(dir, &job.junit, out))
    };
    let result = match result {
        Attempt::Success if !job.artifacts.is_empty() => {
            let from = dir.to_path_buf();
            let patterns = job.artifacts.clone();
            let to = workspace::job_dir(&ctx.artifacts_dir, i, &job.name);
            let kept = tokio::task::spawn_blocking(move || {
                workspace::remove(&to);
                artifacts::collect(&from, &patterns, &to)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match kept {
                Ok(_) => Attempt::Success,
                Err(e) => {
                    out.say(&format!("error: {e}"));
                    failed(e)
                }
            }
        }
        other => other,
    };
    (result, tests)
}

fn read_reports(dir: &Path, patterns: &[String], out: &mut JobOutput<'_>) -> TestSummary {
    let mut summary = TestSummary::default();
    for pattern in patterns {
        let matcher = match globset::Glob::new(pattern) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                out.say(&format!("warning: invalid report pattern `{pattern}`: {e}"));
                continue;
            }
        };
        let mut found = 0;
        for entry in walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .flatten()
        {
            let Ok(rel) = entry.path().strip_prefix(dir) else {
                continue;
            };
            if !entry.file_type().is_file() || !matcher.is_match(rel) {
                continue;
            }
            found += 1;
            match std::fs::read_to_string(entry.path()) {
                Ok(xml) => {
                    if let Err(e) = junit::parse_junit(&xml, &mut summary) {
                        out.say(&format!(
                            "warning: cannot read report {}: {e}",
                            rel.display()
                        ));
                    }
                }
                Err(e) => out.say(&format!(
                    "warning: cannot read report {}: {e}",
                    rel.display()
                )),
            }
        }
        if found == 0 {
            out.say(&format!("warning: report `{pattern}` matched no files"));
        }
    }
    summary
}

async fn run_steps(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    dir: &Path,
    executor: &dyn Executor,
    prepared: &ferry_exec::Prepared,
    out: &mut JobOutput<'_>,
) -> Attempt {
    let job = &ctx.plan.jobs[i];
    let job_id = &ctx.job_ids[i];
    let deadline = job.timeout.map(|t| Instant::now() + t);
    let extra: Vec<(&str, String)> = vec![
        ("FERRY_RUN_ID", ctx.run.id.clone()),
        ("FERRY_RUN_NUMBER", ctx.run.number.to_string()),
        ("FERRY_JOB", job.name.clone()),
        ("FERRY_JOB_ATTEMPT", attempt.to_string()),
        ("FERRY_WORKSPACE", dir.display().to_string()),
    ];
    let env_engine = expr::environment();
    let mut base_env: Vec<(String, String)> = ferry_plan::builtins(&ctx.plan.event)
        .into_iter()
        .chain(extra.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // Keep git from finding a repository above the workspace (e.g. the user's).
    if let Some(parent) = dir.parent() {
        base_env.push((
            "GIT_CEILING_DIRECTORIES".into(),
            parent.display().to_string(),
        ));
    }
    let mut visible: ferry_config::EnvVars = Vec::new();
    for (k, v) in ctx.plan.env.iter().chain(&job.env) {
        match interpolate(&env_engine, ctx, job, &visible, &extra, v) {
            Ok(v) => visible.push((k.clone(), v)),
            Err(e) => {
                let reason = format!("in env `{k}`: {e}");
                out.say(&format!("error: {reason}"));
                return Attempt::Failed {
                    reason,
                    exit_code: None,
                    kind: RetryWhen::Failure,
                };
            }
        }
    }
    for (s, step) in job.steps.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Attempt::Cancelled;
        }
        let name = step.display_name();
        ctx.writer
            .send(Write::start_step(job_id, s as i64, attempt as i64));
        ctx.sink.event(&EngineEvent::StepStarted {
            job: &job.name,
            step: s,
            name: &name,
        });
        let mut env = visible.clone();
        let mut script = Err(String::new());
        let mut step_error = None;
        for (k, v) in &step.env {
            match interpolate(&env_engine, ctx, job, &env, &extra, v) {
                Ok(v) => env.push((k.clone(), v)),
                Err(e) => step_error = Some(format!("in env `{k}`: {e}")),
            }
        }
        if step_error.is_none() {
            script = interpolate(&env_engine, ctx, job, &env, &extra, &step.run);
            if let Err(e) = &script {
                step_error = Some(format!("in `run`: {e}"));
            }
        }
        let now = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        let (timeout, job_limit) = match (step.timeout, remaining) {
            (Some(s), Some(r)) if r < s => (Some(r), true),
            (Some(s), _) => (Some(s), false),
            (None, r) => (r, r.is_some()),
        };
        let outcome = match (step_error, script) {
            (Some(e), _) => {
                out.say(&format!("error: {e}"));
                StepOutcome::Error(e)
            }
            (None, Ok(script)) => {
                let mut cwd = dir.to_path_buf();
                if let Some(w) = &job.working_directory {
                    cwd.push(w);
                }
                if let Some(w) = &step.working_directory {
                    cwd.push(w);
                }
                let mut full_env = base_env.clone();
                full_env.extend(env);
                if timeout == Some(Duration::ZERO) {
                    StepOutcome::TimedOut(job.timeout.unwrap_or_default())
                } else {
                    let spec = StepSpec {
                        script,
                        env: full_env,
                        cwd,
                        timeout,
                    };
                    executor.run_step(prepared, &spec, out, &ctx.cancel).await
                }
            }
            (None, Err(e)) => StepOutcome::Error(e),
        };
        let (status, exit) = match &outcome {
            StepOutcome::Exited(0) => (Status::Success, Some(0)),
            StepOutcome::Exited(c) => (Status::Failed, Some(*c)),
            StepOutcome::Cancelled => (Status::Cancelled, None),
            StepOutcome::TimedOut(_) | StepOutcome::Error(_) => (Status::Failed, None),
        };
        ctx.writer.send(Write::finish_step(
            job_id,
            s as i64,
            status,
            exit.map(i64::from),
        ));
        let entries = out.log.take_index();
        if !entries.is_empty() {
            ctx.writer.send(Write::LogIndex {
                job_id: job_id.clone(),
                entries,
            });
        }
        ctx.sink.event(&EngineEvent::StepFinished {
            job: &job.name,
            step: s,
            status,
            exit_code: exit,
        });
        let label = format!("step {} `{name}`", s + 1);
        match outcome {
            StepOutcome::Exited(0) => continue,
            StepOutcome::Exited(code) => {
                let reason = format!("{label} exited with code {code}");
                return Attempt::Failed {
                    reason,
                    exit_code: Some(code),
                    kind: RetryWhen::Failure,
                };
            }
            StepOutcome::TimedOut(d) => {
                let reason = if job_limit {
                    format!(
                        "the job timed out after {}",
                        format_duration(job.timeout.unwrap_or(d))
                    )
                } else {
                    format!("{label} timed out after {}", format_duration(d))
                };
                out.say(&format!("error: {reason}"));
                return Attempt::Failed {
                    reason,
                    exit_code: None,
                    kind: RetryWhen::Timeout,
                };
            }
            StepOutcome::Cancelled => return Attempt::Cancelled,
            StepOutcome::Error(e) => {
                out.say(&format!("error: {e}"));
                return Attempt::Failed {
                    reason: format!("{label}: {e}"),
                    exit_code: None,
                    kind: RetryWhen::Failure,
                };
            }
        }
    }
    Attempt::Success
}

fn interpolate(
    env: &minijinja::Environment<'_>,
    ctx: &RunCtx,
    job: &PlanJob,
    visible: &ferry_config::EnvVars,
    extra: &[(&str, String)],
    text: &str,
) -> Result<String, String> {
    if !text.contains("${{") {
        return Ok(text.to_string());
    }
    let value = ferry_plan::context(&ctx.plan.event, &job.matrix, visible, extra);
    expr::interpolate(env, text, &value)
}

/// Every job `i` needs, directly or not, in plan order: their artifacts are restored in
/// that order, so a nearer job's file wins over an earlier one's at the same path.
fn ancestors(plan: &Plan, i: usize) -> Vec<usize> {
    let mut seen = vec![false; plan.jobs.len()];
    let mut todo: Vec<usize> = vec![i];
    while let Some(j) = todo.pop() {
        for need in &plan.jobs[j].needs {
            if let Some(d) = plan.jobs.iter().position(|o| &o.name == need)
                && !seen[d]
            {
                seen[d] = true;
                todo.push(d);
            }
        }
    }
    (0..plan.jobs.len()).filter(|d| seen[*d]).collect()
}
