//! One job of a run: its attempts, each in a fresh workspace, its steps, reports and
//! artifacts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_config::RetryWhen;
use ferry_config::duration::format_duration;
use ferry_config::expr;
use ferry_exec::mask::Masked;
use ferry_exec::{
    BuildSpec, ContainerJob, Executor, ExecutorKind, ImageBuilder, JobSpec, Logins, OutputSink,
    ServiceJob, ServiceSpec, Services, StepIo, StepOutcome, StepSpec,
};
use ferry_plan::{Plan, PlanJob};
use ferry_store::{JobEnd, LogWriter, Status, TestSummary, Write};
use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use crate::events::{EngineEvent, EventSink};
use crate::run::RunCtx;
use crate::{artifacts, junit, workspace};

/// The prefix of the cache keys an untrusted run writes.
pub const UNTRUSTED_CACHE: &str = "untrusted:";

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

/// Feeds a step's (already masked) output to the job's log and to the sink.
struct JobOutput<'a> {
    log: &'a mut LogWriter,
    sink: &'a dyn EventSink,
    job: &'a str,
    error: Option<std::io::Error>,
    /// The most bytes the log takes ([`crate::EngineConfig::log_limit`]).
    limit: Option<u64>,
    /// Set once the log reached `limit`: what follows is dropped.
    exceeded: Option<u64>,
    /// Cancels this attempt's steps (a child of the run's token): the log's limit stops
    /// the step that passes it.
    stop: CancellationToken,
}

impl OutputSink for JobOutput<'_> {
    fn chunk(&mut self, data: &[u8]) {
        if data.is_empty() || self.exceeded.is_some() {
            return;
        }
        if let Some(limit) = self.limit {
            let written = self.log.bytes() as u64;
            if written.saturating_add(data.len() as u64) > limit {
                // Up to the limit, then a last line that says why the log ends there.
                let room = limit.saturating_sub(written) as usize;
                self.append(&data[..room.min(data.len())]);
                let end = format!(
                    "\nferry: error: log limit of {} exceeded\n",
                    crate::cache::human_bytes(limit)
                );
                self.append(end.as_bytes());
                self.exceeded = Some(limit);
                self.stop.cancel();
                return;
            }
        }
        self.append(data);
    }
}

impl JobOutput<'_> {
    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
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

/// A job's output with the repository's secret values masked; `note` writes Ferry's own
/// lines (`ferry: …`).
type Out<'a> = Masked<JobOutput<'a>>;

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
        let mut out = Masked::new(
            JobOutput {
                log: &mut log,
                sink: ctx.sink.as_ref(),
                job: &job.name,
                error: None,
                limit: ctx.log_limit,
                exceeded: None,
                stop: ctx.cancel.child_token(),
            },
            ctx.masker.clone(),
        );
        if attempt > 1 {
            out.note(&format!("attempt {attempt} of {max_attempts}"));
        }
        let (result, summary) = run_attempt(ctx, i, attempt, &dir, &mut out).await;
        out.flush();
        tests = summary;
        if let Some(e) = out.inner_mut().error.take() {
            break Attempt::Failed {
                reason: format!("cannot write the log: {e}"),
                exit_code: None,
                kind: RetryWhen::Failure,
            };
        }
        // Not retried: another attempt would start past the limit.
        if let Some(limit) = out.inner().exceeded {
            break Attempt::Failed {
                reason: format!("log limit of {} exceeded", crate::cache::human_bytes(limit)),
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
                out.note(&format!("{reason}; retrying"));
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
    let size = (log.bytes(), log.lines());
    // The log is compressed before the job is told finished, so that a finished job's
    // log is always the compressed one (a failure keeps it plain, whole and readable).
    match tokio::task::spawn_blocking(move || log.finish())
        .instrument(tracing::debug_span!("log.finish"))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the log of job {job_id} stays uncompressed: {e}"),
        Err(e) => tracing::warn!("the log of job {job_id} stays uncompressed: {e}"),
    }
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
        Some(size),
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
    // The log's size: bytes and lines.
    log: Option<(i64, i64)>,
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
            log_bytes: log.map(|l| l.0).unwrap_or(0),
            log_lines: log.map(|l| l.1).unwrap_or(0),
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

/// A failure that is not a step's exit code (retried on `failure`).
fn failed(reason: String) -> Attempt {
    Attempt::Failed {
        reason,
        exit_code: None,
        kind: RetryWhen::Failure,
    }
}

/// One attempt: a fresh workspace, the steps in order, then reports and artifacts.
async fn run_attempt(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    dir: &Path,
    out: &mut Out<'_>,
) -> (Attempt, Option<TestSummary>) {
    let job = &ctx.plan.jobs[i];
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
    .instrument(tracing::debug_span!("workspace"))
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = prepared {
        out.note(&e);
        return (failed(e), None);
    }
    let env = match JobEnv::new(ctx, i, attempt, dir) {
        Ok(e) => e,
        Err(e) => {
            out.note(&format!("error: {e}"));
            return (failed(e), None);
        }
    };
    // An untrusted run runs only in containers and builds no image (it would be
    // pushed with the repository's name on it).
    let trusted = ctx.plan.trust.is_trusted();
    let image = job.image.clone().or_else(|| ctx.default_image.clone());
    if !trusted {
        let refused = if job.build_image.is_some() {
            Some("builds an image")
        } else if image.is_none() && !job.steps.is_empty() {
            Some("has no `image:` (and the server no default image), so it would run on the host")
        } else {
            None
        };
        if let Some(why) = refused {
            let e = format!(
                "job `{}` {why}: this run is untrusted ({}), and untrusted runs run only \
                 in containers and build no images",
                job.name, ctx.plan.trust.reason
            );
            out.note(&format!("error: {e}"));
            return (failed(e), None);
        }
    }
    // Caches: restored now, saved after a successful attempt when their key was new.
    // An untrusted run reads trusted entries but writes only its own kind
    // (`untrusted:KEY`), which trusted runs never read.
    let mut new_caches = Vec::new();
    for cache in &job.caches {
        let key = match env.eval(ctx, job, &env.visible, &cache.key) {
            Ok(k) if trusted => k,
            Ok(k) => format!("{UNTRUSTED_CACHE}{k}"),
            Err(e) => {
                let e = format!("in `cache.key`: {e}");
                out.note(&format!("error: {e}"));
                return (failed(e), None);
            }
        };
        let (store, repo, ws, k) = (
            ctx.caches.clone(),
            ctx.run.repository_id.clone(),
            dir.to_path_buf(),
            key.clone(),
        );
        let restored = tokio::task::spawn_blocking(move || match store.restore(&repo, &k, &ws) {
            Ok(false) if k.starts_with(UNTRUSTED_CACHE) => {
                store.restore(&repo, &k[UNTRUSTED_CACHE.len()..], &ws)
            }
            other => other,
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match restored {
            Ok(true) => out.note(&format!("cache `{key}` restored")),
            Ok(false) => {
                out.note(&format!(
                    "cache `{key}` not found; it is saved if the job succeeds"
                ));
                new_caches.push((key, cache.paths.clone()));
            }
            Err(e) => {
                out.note(&format!(
                    "warning: cache `{key}` could not be restored: {e}"
                ));
                new_caches.push((key, cache.paths.clone()));
            }
        }
    }
    let containers = ctx.executors.get(ExecutorKind::Container).is_some();
    let runner = ctx.services.clone().filter(|_| !job.services.is_empty());
    let builder = ctx.builder.clone().filter(|_| job.build_image.is_some());
    let missing = match &image {
        Some(image) if !containers => Some(format!("image `{image}`")),
        _ if !job.services.is_empty() && runner.is_none() => Some("services".to_string()),
        _ if job.build_image.is_some() && builder.is_none() => Some("an image build".to_string()),
        _ => None,
    };
    if let Some(what) = missing {
        let e = format!(
            "job `{}` needs {what}, but {} is not available here",
            job.name,
            ExecutorKind::Container.needs()
        );
        out.note(&format!("error: {e}"));
        return (failed(e), None);
    }
    let needs_logins = image.is_some() || runner.is_some() || builder.is_some();
    let logins = match (&ctx.logins, needs_logins) {
        (Err(e), true) => {
            out.note(&format!("error: {e}"));
            return (failed(e.clone()), None);
        }
        (Ok(l), _) => l.clone(),
        (Err(_), false) => Default::default(),
    };
    let mut services = Services::default();
    let mut result = None;
    if let Some(runner) = &runner {
        match resolve_services(ctx, job, &env) {
            Ok(specs) => {
                let publish = image.is_none();
                let start = ServiceJob {
                    job: &job.name,
                    services: &specs,
                    publish,
                    logins: &logins,
                    cancel: &ctx.cancel,
                };
                if let Err(e) = runner.start(start, &mut services).await {
                    result = Some(if ctx.cancel.is_cancelled() {
                        Attempt::Cancelled
                    } else {
                        out.note(&format!("error: {e}"));
                        failed(e.to_string())
                    });
                }
            }
            Err(e) => {
                out.note(&format!("error: {e}"));
                result = Some(failed(e));
            }
        }
    }
    let result = match result {
        Some(r) => r,
        None => {
            let r = run_executor(ctx, i, attempt, dir, image, &env, &services, &logins, out).await;
            match (r, &builder) {
                (Attempt::Success, Some(builder)) => {
                    build_image(ctx, i, dir, &env, builder.as_ref(), &logins, out).await
                }
                (r, _) => r,
            }
        }
    };
    if let Some(runner) = &runner {
        // The services' logs go to the job's log, after its steps.
        runner.stop(&mut services, Some(out)).await;
    }
    if matches!(result, Attempt::Success) {
        for (key, paths) in new_caches {
            let (store, repo, ws, k) = (
                ctx.caches.clone(),
                ctx.run.repository_id.clone(),
                dir.to_path_buf(),
                key.clone(),
            );
            let saved = tokio::task::spawn_blocking(move || store.save(&repo, &k, &paths, &ws))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match saved {
                Ok((crate::cache::Saved::Stored { size, evicted }, missing)) => {
                    for m in missing {
                        out.note(&format!("warning: cache `{key}`: `{m}` does not exist"));
                    }
                    let mut line =
                        format!("cache `{key}` saved ({})", crate::cache::human_bytes(size));
                    if evicted > 0 {
                        line.push_str(&format!(
                            "; {evicted} older cache(s) evicted to stay within the limit"
                        ));
                    }
                    out.note(&line);
                }
                Ok((crate::cache::Saved::TooLarge { size }, _)) => out.note(&format!(
                    "warning: cache `{key}` is {}, more than the cache limit; not saved",
                    crate::cache::human_bytes(size)
                )),
                Err(e) => out.note(&format!("warning: cache `{key}` could not be saved: {e}")),
            }
        }
    }

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
                    out.note(&format!("error: {e}"));
                    failed(e)
                }
            }
        }
        other => other,
    };
    (result, tests)
}

/// How big a test report may be (larger ones are not read).
const REPORT_LIMIT: u64 = 64 << 20;

/// Reads `rel` beneath the workspace `ws` (`cap-std`: never through a link out of it),
/// if it is still the regular file `seen` (the walk's look at it) and not too large.
fn read_report(ws: &cap_std::fs::Dir, rel: &Path, seen: (u64, u64)) -> std::io::Result<String> {
    let Some((file, meta)) = crate::artifacts::open_seen(ws, rel, seen)? else {
        return Err(std::io::Error::other("it changed while it was read"));
    };
    if meta.len() > REPORT_LIMIT {
        return Err(std::io::Error::other(format!(
            "it is larger than {} MiB",
            REPORT_LIMIT >> 20
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, REPORT_LIMIT), &mut text)?;
    Ok(text)
}

/// How many entries of a workspace the search for reports looks at, at most.
const REPORT_WALK_LIMIT: usize = 200_000;

/// The regular files beneath `dir` (at `prefix` in the workspace), with their device
/// and inode: every directory opened by handle and checked to be the one listed.
fn workspace_files(
    dir: &cap_std::fs::Dir,
    prefix: &Path,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<(PathBuf, (u64, u64))>,
) -> std::io::Result<()> {
    use cap_std::fs::MetadataExt as _;
    if depth > 128 {
        return Ok(());
    }
    for entry in dir.entries()? {
        if *budget == 0 {
            return Err(std::io::Error::other(format!(
                "the workspace has more than {REPORT_WALK_LIMIT} entries: the rest were \
                 not searched"
            )));
        }
        *budget -= 1;
        let entry = entry?;
        let name = PathBuf::from(entry.file_name());
        let meta = dir.symlink_metadata(&name)?;
        let kind = meta.file_type();
        if kind.is_file() {
            out.push((prefix.join(&name), (meta.dev(), meta.ino())));
        } else if kind.is_dir() {
            let sub = dir.open_dir(&name)?;
            let opened = sub.dir_metadata()?;
            if (opened.dev(), opened.ino()) == (meta.dev(), meta.ino()) {
                workspace_files(&sub, &prefix.join(&name), depth + 1, budget, out)?;
            }
        }
    }
    Ok(())
}

fn read_reports(dir: &Path, patterns: &[String], out: &mut Out<'_>) -> TestSummary {
    let mut summary = TestSummary::default();
    let ws = match cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()) {
        Ok(ws) => ws,
        Err(e) => {
            out.note(&format!("warning: cannot read the reports: {e}"));
            return summary;
        }
    };
    // The workspace's files, walked by directory handle beneath it (a directory swapped
    // for a link while the walk runs is not followed), within bounds.
    let mut files = Vec::new();
    let mut budget = REPORT_WALK_LIMIT;
    if let Err(e) = workspace_files(&ws, Path::new(""), 0, &mut budget, &mut files) {
        out.note(&format!("warning: reports: {e}"));
    }
    for pattern in patterns {
        let matcher = match globset::Glob::new(pattern) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                out.note(&format!("warning: invalid report pattern `{pattern}`: {e}"));
                continue;
            }
        };
        let mut found = 0;
        for (rel, seen) in &files {
            let rel = rel.as_path();
            if !matcher.is_match(rel) {
                continue;
            }
            found += 1;
            let read = read_report(&ws, rel, *seen);
            match read {
                Ok(xml) => {
                    if let Err(e) = junit::parse_junit(&xml, &mut summary) {
                        out.note(&format!(
                            "warning: cannot read report {}: {e}",
                            rel.display()
                        ));
                    }
                }
                Err(e) => out.note(&format!(
                    "warning: cannot read report {}: {e}",
                    rel.display()
                )),
            }
        }
        if found == 0 {
            out.note(&format!("warning: report `{pattern}` matched no files"));
        }
    }
    summary
}

/// The variables and expression environment of one attempt of a job.
struct JobEnv {
    engine: minijinja::Environment<'static>,
    /// Run-time built-ins (`FERRY_RUN_ID`, ...), also visible to expressions.
    extra: Vec<(&'static str, String)>,
    /// Every step's base environment: the built-ins.
    base: Vec<(String, String)>,
    /// The pipeline's and job's `env:`, interpolated.
    visible: ferry_config::EnvVars,
}

impl JobEnv {
    fn new(ctx: &RunCtx, i: usize, attempt: u32, dir: &Path) -> Result<Self, String> {
        let job = &ctx.plan.jobs[i];
        let extra: Vec<(&'static str, String)> = vec![
            ("FERRY_RUN_ID", ctx.run.id.clone()),
            ("FERRY_RUN_NUMBER", ctx.run.number.to_string()),
            ("FERRY_JOB", job.name.clone()),
            ("FERRY_JOB_ATTEMPT", attempt.to_string()),
            ("FERRY_WORKSPACE", dir.display().to_string()),
        ];
        let mut engine = expr::environment();
        let root = dir.to_path_buf();
        engine.add_function(
            "hash_files",
            move |patterns: minijinja::value::Rest<String>| -> Result<String, minijinja::Error> {
                crate::cache::hash_files(&root, &patterns)
                    .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
            },
        );
        let mut base: Vec<(String, String)> = ferry_plan::builtins(&ctx.plan.event)
            .into_iter()
            .chain(extra.iter().cloned())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // Keep git from finding a repository above the workspace (e.g. the user's).
        if let Some(parent) = dir.parent() {
            base.push((
                "GIT_CEILING_DIRECTORIES".into(),
                parent.display().to_string(),
            ));
        }
        let mut env = JobEnv {
            engine,
            extra,
            base,
            visible: Vec::new(),
        };
        for (k, v) in ctx.plan.env.iter().chain(&job.env) {
            let value = env
                .eval(ctx, job, &env.visible, v)
                .map_err(|e| format!("in env `{k}`: {e}"))?;
            env.visible.push((k.clone(), value));
        }
        Ok(env)
    }

    /// Interpolates the `${{ }}` of `text`, with `visible` as `env.*`.
    fn eval(
        &self,
        ctx: &RunCtx,
        job: &PlanJob,
        visible: &ferry_config::EnvVars,
        text: &str,
    ) -> Result<String, String> {
        if !text.contains("${{") {
            return Ok(text.to_string());
        }
        let value = ferry_plan::context(&ctx.plan.event, &job.matrix, visible, &self.extra);
        expr::interpolate(&self.engine, text, &value)
    }
}

/// The job's services with their expressions resolved.
fn resolve_services(ctx: &RunCtx, job: &PlanJob, env: &JobEnv) -> Result<Vec<ServiceSpec>, String> {
    job.services
        .iter()
        .map(|s| {
            let what =
                |field: &str, e: String| format!("in `{field}` of service `{}`: {e}", s.name);
            let image = env
                .eval(ctx, job, &env.visible, &s.image)
                .map_err(|e| what("image", e))?;
            let mut vars = Vec::new();
            for (k, v) in &s.env {
                vars.push((
                    k.clone(),
                    env.eval(ctx, job, &env.visible, v)
                        .map_err(|e| what("env", e))?,
                ));
            }
            Ok(ServiceSpec {
                name: s.name.clone(),
                image,
                env: vars,
                command: s.command.clone(),
                entrypoint: s.entrypoint.clone(),
                ports: s.ports.clone(),
                health: s.health.clone(),
                wait: s.wait.unwrap_or(ferry_config::Service::DEFAULT_WAIT),
            })
        })
        .collect()
}

/// Prepares the job in its executor, runs its steps and cleans up.
#[allow(clippy::too_many_arguments)]
async fn run_executor(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    dir: &Path,
    image: Option<String>,
    env: &JobEnv,
    services: &Services,
    logins: &Logins,
    out: &mut Out<'_>,
) -> Attempt {
    let job = &ctx.plan.jobs[i];
    let spec = JobSpec {
        name: job.name.clone(),
        workspace: dir.to_path_buf(),
        container: image.map(|image| ContainerJob {
            image,
            settings: ferry_exec::ContainerSettings {
                user: job.container.user.clone(),
                entrypoint: job.container.entrypoint.clone(),
                cpus_milli: job.container.cpus_milli,
                memory: job.container.memory,
            },
            network: services.network.clone(),
            logins: logins.clone(),
        }),
    };
    if job.steps.is_empty() {
        return Attempt::Success;
    }
    // Each job runs with the executor of its kind (a job with an image in containers).
    let executor = match ctx.executors.for_job(&spec) {
        Ok(e) => e,
        Err(e) => {
            let e = e.to_string();
            out.note(&format!("error: {e}"));
            return failed(e);
        }
    };
    let prepared = match executor.prepare(&spec).await {
        Ok(p) => p,
        Err(e) => {
            let e = e.to_string();
            out.note(&e);
            return failed(e);
        }
    };
    let result = run_steps(
        ctx,
        i,
        attempt,
        dir,
        env,
        &services.env,
        executor.as_ref(),
        &prepared,
        out,
    )
    .await;
    executor.cleanup(&prepared).await;
    result
}

/// `build_image:` after the steps: build, tag with the commit and the tags, push, and
/// record the image (with the registry's digest) on the run.
async fn build_image(
    ctx: &RunCtx,
    i: usize,
    dir: &Path,
    env: &JobEnv,
    builder: &dyn ImageBuilder,
    logins: &Logins,
    out: &mut Out<'_>,
) -> Attempt {
    let job = &ctx.plan.jobs[i];
    let Some(build) = &job.build_image else {
        return Attempt::Success;
    };
    let eval = |field: &str, text: &str| {
        env.eval(ctx, job, &env.visible, text)
            .map_err(|e| format!("in `build_image.{field}`: {e}"))
    };
    let resolved = (|| {
        let name = eval("name", &build.name)?;
        let mut tags = vec![ctx.plan.event.sha.clone()];
        for t in &build.tags {
            let t = eval("tags", t)?;
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let mut args = Vec::new();
        for (k, v) in &build.args {
            args.push((k.clone(), eval("args", v)?));
        }
        let mut labels = vec![
            (
                "org.opencontainers.image.revision".to_string(),
                ctx.plan.event.sha.clone(),
            ),
            ("dev.ferry.run".to_string(), ctx.run.id.clone()),
            (
                "dev.ferry.run-number".to_string(),
                ctx.run.number.to_string(),
            ),
            ("dev.ferry.job".to_string(), job.name.clone()),
        ];
        for (k, v) in &build.labels {
            labels.push((k.clone(), eval("labels", v)?));
        }
        Ok::<_, String>(BuildSpec {
            context: dir.join(&build.context),
            dockerfile: build.dockerfile.clone(),
            args,
            target: build.target.clone(),
            labels,
            name,
            tags,
            push: build.push,
            logins: logins.clone(),
        })
    })();
    let spec = match resolved {
        Ok(s) => s,
        Err(e) => {
            out.note(&format!("error: {e}"));
            return failed(e);
        }
    };
    let dockerfile = Path::new(&build.context).join(&build.dockerfile);
    if !dir.join(&dockerfile).is_file() {
        let e = format!("there is no Dockerfile at {}", dockerfile.display());
        out.note(&format!("error: {e}"));
        return failed(e);
    }
    out.note(&format!("building image {}:{}", spec.name, spec.tags[0]));
    // The attempt's token: the log's limit stops the build too; so does the job's
    // timeout (the whole of it, for the build alone).
    let stop = out.inner().stop.clone();
    let timeout = job.timeout.or(ctx.job_timeout);
    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = timeout.map(|t| {
        let (stop, timed_out) = (stop.clone(), timed_out.clone());
        tokio::spawn(async move {
            tokio::time::sleep(t).await;
            timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
            stop.cancel();
        })
    });
    let built = builder.build(&spec, out, &stop).await;
    if let Some(timer) = timer {
        timer.abort();
    }
    if built.is_err() && timed_out.load(std::sync::atomic::Ordering::SeqCst) {
        let e = format!(
            "the image build timed out after {}",
            format_duration(timeout.unwrap_or_default())
        );
        out.note(&format!("error: {e}"));
        return Attempt::Failed {
            reason: e,
            exit_code: None,
            kind: RetryWhen::Timeout,
        };
    }
    match built {
        Ok(built) => {
            match &built.digest {
                Some(d) => out.note(&format!("pushed {}@{d}", spec.name)),
                None => out.note(&format!("built {} (not pushed)", built.id)),
            }
            ctx.writer.send(Write::Image(ferry_store::Image {
                id: uuid::Uuid::now_v7().to_string(),
                run_id: ctx.run.id.clone(),
                job_id: ctx.job_ids[i].clone(),
                name: spec.name.clone(),
                tags: spec.tags.clone(),
                image_id: built.id,
                digest: built.digest,
                created_at: ferry_store::now_ms(),
            }));
            Attempt::Success
        }
        Err(_) if ctx.cancel.is_cancelled() => Attempt::Cancelled,
        Err(e) => {
            out.note(&format!("error: {e}"));
            failed(e.to_string())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_steps(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    dir: &Path,
    job_env: &JobEnv,
    service_env: &[(String, String)],
    executor: &dyn Executor,
    prepared: &ferry_exec::Prepared,
    out: &mut Out<'_>,
) -> Attempt {
    let job = &ctx.plan.jobs[i];
    let job_id = &ctx.job_ids[i];
    // A job without `timeout:` gets the engine's default, if any.
    let job_timeout = job.timeout.or(ctx.job_timeout);
    let deadline = job_timeout.map(|t| Instant::now() + t);
    let stop = out.inner().stop.clone();
    let mut base_env = job_env.base.clone();
    base_env.extend(service_env.iter().cloned());
    let visible = &job_env.visible;
    for (s, step) in job.steps.iter().enumerate() {
        if stop.is_cancelled() {
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
            match job_env.eval(ctx, job, &env, v) {
                Ok(v) => env.push((k.clone(), v)),
                Err(e) => step_error = Some(format!("in env `{k}`: {e}")),
            }
        }
        if step_error.is_none() {
            script = job_env.eval(ctx, job, &env, &step.run);
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
                out.note(&format!("error: {e}"));
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
                    StepOutcome::TimedOut(job_timeout.unwrap_or_default())
                } else {
                    let spec = StepSpec {
                        script,
                        env: full_env,
                        cwd,
                        timeout,
                        clear_env: false,
                    };
                    let outcome = executor
                        .run_step(prepared, &spec, StepIo::new(out, &stop))
                        .instrument(tracing::debug_span!("step", n = s + 1))
                        .await;
                    out.flush();
                    outcome
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
        let entries = out.inner_mut().log.take_index();
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
                        format_duration(job_timeout.unwrap_or(d))
                    )
                } else {
                    format!("{label} timed out after {}", format_duration(d))
                };
                out.note(&format!("error: {reason}"));
                return Attempt::Failed {
                    reason,
                    exit_code: None,
                    kind: RetryWhen::Timeout,
                };
            }
            StepOutcome::Cancelled => return Attempt::Cancelled,
            StepOutcome::Error(e) => {
                out.note(&format!("error: {e}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A report is read only beneath the workspace, and only if it is still the file the
    /// walk saw: one swapped for a link to a file outside (by a process the job left
    /// running) between the look and the read is not read.
    #[test]
    fn a_report_through_a_link_out_of_the_workspace_is_not_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let ws_path = tmp.path().join("ws");
        std::fs::create_dir_all(ws_path.join("reports")).expect("mkdir");
        let outside = tmp.path().join("secret.xml");
        std::fs::write(
            &outside,
            "<testsuite><testcase name=\"secret\"/></testsuite>",
        )
        .expect("write");
        let report = ws_path.join("reports/a.xml");
        std::fs::write(&report, "<testsuite/>").expect("write");
        let ws =
            cap_std::fs::Dir::open_ambient_dir(&ws_path, cap_std::ambient_authority()).expect("ws");
        let rel = Path::new("reports/a.xml");
        let seen = {
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::symlink_metadata(&report).expect("meta");
            (meta.dev(), meta.ino())
        };
        assert_eq!(read_report(&ws, rel, seen).expect("read"), "<testsuite/>");
        // Swapped for a link out of the workspace after the walk looked (the file kept
        // elsewhere, so that no new file takes its inode number).
        std::fs::rename(&report, ws_path.join("kept.xml")).expect("mv");
        std::os::unix::fs::symlink(&outside, &report).expect("link");
        let err = read_report(&ws, rel, seen).expect_err("a link out");
        assert!(err.to_string().contains("outside"), "{err}");
        // Swapped for a link within the workspace: not the file that was seen.
        std::fs::write(ws_path.join("other.xml"), "<testsuite/>").expect("write");
        std::fs::remove_file(&report).expect("rm");
        std::os::unix::fs::symlink("../other.xml", &report).expect("link");
        let err = read_report(&ws, rel, seen).expect_err("another file");
        assert!(err.to_string().contains("changed"), "{err}");
    }
}
