//! Executing one run: the run's bookkeeping and the scheduler of its jobs (what one
//! job does is in `job.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ferry_exec::{
    DockerExecutor, Executor, ExecutorKind, Executors, ImageBuilder, Logins, ServiceRunner,
};
use ferry_plan::Plan;
use ferry_store::{JobEnd, NewJob, NewRun, Run, SecretKey, Status, Store, Write, Writer};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cache::CacheStore;
use crate::events::{EngineEvent, EventSink};
use crate::job::run_job;
use crate::schedule::{Action, Scheduler, settled};
use crate::workspace;

/// How the engine runs jobs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The most jobs running at once.
    pub concurrency: usize,
    /// Where workspaces are made: `<work_root>/<run id>/<NNN-job>`.
    pub work_root: PathBuf,
    /// Keep workspaces after the run (for debugging).
    pub keep_workspaces: bool,
    /// The size limit of all `cache:` entries together (least recently used go first).
    pub cache_max_bytes: u64,
    /// The most bytes of output a job's log takes; past it the job fails ("log limit
    /// of N exceeded", the log's last line). `None`: no limit.
    pub log_limit: Option<u64>,
    /// The timeout of jobs that set none (`timeout:`). `None`: they run until done.
    pub job_timeout: Option<std::time::Duration>,
}

/// The default [`EngineConfig::log_limit`]: 256 MiB.
pub const DEFAULT_LOG_LIMIT: u64 = 256 << 20;

/// Where a run's source comes from: a directory, and optionally the files of it to use
/// (for a working tree: tracked and untracked files, not ignored ones).
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    pub files: Option<Arc<Vec<PathBuf>>>,
}

/// The engine. Cheap to clone; all clones share the store and the executor.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Engine {
    #[educe(Debug(ignore))]
    store: Store,
    /// The executor of each kind of job (host; containers when Docker is available).
    #[educe(Debug(ignore))]
    executors: Executors,
    /// Starts jobs' `services:` (`None`: jobs with services fail with the reason).
    #[educe(Debug(ignore))]
    services: Option<Arc<dyn ServiceRunner>>,
    /// Builds jobs' `build_image:` (`None`: such jobs fail with the reason).
    #[educe(Debug(ignore))]
    builder: Option<Arc<dyn ImageBuilder>>,
    /// The image of jobs that name none; `None`: they run on the host.
    #[educe(Debug(ignore))]
    default_image: Option<String>,
    /// Opens the repositories' sealed registry logins.
    #[educe(Debug(ignore))]
    secret_key: Option<SecretKey>,
    config: EngineConfig,
}

/// How one job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run: Run,
    pub status: Status,
    pub jobs: Vec<JobResult>,
}

/// Everything a job task needs, shared by the jobs of one run.
pub(crate) struct RunCtx {
    pub(crate) store: Store,
    pub(crate) executors: Executors,
    pub(crate) services: Option<Arc<dyn ServiceRunner>>,
    pub(crate) builder: Option<Arc<dyn ImageBuilder>>,
    pub(crate) caches: CacheStore,
    /// The repository's registry logins, or why they cannot be opened.
    pub(crate) logins: Result<Logins, String>,
    /// Masks the repository's secret values in job output.
    pub(crate) masker: ferry_exec::mask::Masker,
    pub(crate) default_image: Option<String>,
    /// State changes go through the batching writer: the engine never waits on the DB.
    pub(crate) writer: Writer,
    pub(crate) plan: Plan,
    pub(crate) run: Run,
    pub(crate) job_ids: Vec<String>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) cancel: CancellationToken,
    pub(crate) source: Source,
    pub(crate) work_dir: PathBuf,
    pub(crate) artifacts_dir: PathBuf,
    pub(crate) keep: bool,
    pub(crate) log_limit: Option<u64>,
    pub(crate) job_timeout: Option<std::time::Duration>,
}

impl Engine {
    /// An engine whose host jobs run with `executor`.
    pub fn new(store: Store, executor: Arc<dyn Executor>, config: EngineConfig) -> Self {
        Self {
            store,
            executors: Executors::new(executor),
            services: None,
            builder: None,
            default_image: None,
            secret_key: None,
            config,
        }
    }

    /// Runs jobs that have an `image:`, their services and their image builds with
    /// Docker.
    pub fn with_containers(self, docker: Arc<DockerExecutor>) -> Self {
        self.with_executor(ExecutorKind::Container, docker.clone())
            .with_services(docker.clone())
            .with_builder(docker)
    }

    /// Runs jobs of `kind` with `executor`.
    pub fn with_executor(mut self, kind: ExecutorKind, executor: Arc<dyn Executor>) -> Self {
        self.executors = self.executors.with(kind, executor);
        self
    }

    /// Starts jobs' services with `runner`.
    pub fn with_services(mut self, runner: Arc<dyn ServiceRunner>) -> Self {
        self.services = Some(runner);
        self
    }

    /// Builds jobs' images with `builder`.
    pub fn with_builder(mut self, builder: Arc<dyn ImageBuilder>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Runs jobs without an `image:` in containers of `image` too (a server-wide
    /// default), instead of on the host.
    pub fn with_default_image(mut self, image: Option<String>) -> Self {
        self.default_image = image;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Opens sealed secrets (registry logins) with `key`.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    pub fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_ref()
    }

    /// The `cache:` entries of every repository (in the store's data directory).
    pub fn caches(&self) -> CacheStore {
        CacheStore::new(
            self.store.data_dir().join("caches"),
            self.config.cache_max_bytes,
        )
    }

    /// Records a run for `plan` (queued, with its jobs and steps).
    pub async fn create_run(
        &self,
        repository_id: &str,
        plan: &Plan,
        dirty: bool,
        triggered_by: Option<String>,
    ) -> ferry_store::Result<(Run, Vec<String>)> {
        let new = NewRun {
            repository_id: repository_id.to_string(),
            event: plan.event.kind.as_str().to_string(),
            git_ref: plan.event.git_ref.clone(),
            branch: plan.event.branch.clone(),
            tag: plan.event.tag.clone(),
            commit_sha: plan.event.sha.clone(),
            dirty,
            author: plan.event.author.clone(),
            message: plan.event.message.clone(),
            triggered_by,
            concurrency_group: plan.concurrency.as_ref().map(|c| c.group.clone()),
            plan: serde_json::to_string(plan)
                .map_err(|e| ferry_store::Error::Corrupt(e.to_string()))?,
            jobs: plan
                .jobs
                .iter()
                .map(|j| NewJob {
                    name: j.name.clone(),
                    allow_failure: j.allow_failure,
                    settled: settled(&j.decision)
                        .map(|(status, reason)| (status, reason.unwrap_or_default())),
                    steps: j.steps.iter().map(|s| s.display_name()).collect(),
                })
                .collect(),
        };
        self.store.create_run(&new).await
    }

    /// Executes a created run to its end. Cancelling `cancel` stops running steps (their
    /// whole process trees), marks the rest cancelled, and returns promptly.
    pub async fn execute(
        &self,
        run: Run,
        job_ids: Vec<String>,
        plan: Plan,
        source: Source,
        sink: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> ferry_store::Result<RunOutcome> {
        let started = Instant::now();
        let work_dir = self.config.work_root.join(&run.id);
        let artifacts_dir = self.store.data_dir().join("artifacts").join(&run.id);
        let writer = self.store.writer();
        writer.send(Write::start_run(&run.id));
        // A working tree is copied once, now, so that edits made while the run goes on
        // do not leak into jobs that start later.
        let snapshot = match &source.files {
            Some(files) => {
                let (root, files) = (source.root.clone(), files.clone());
                let dest = work_dir.join("source");
                let made = dest.clone();
                tokio::task::spawn_blocking(move || {
                    workspace::materialize(&root, Some(&files), &made)
                })
                .instrument(tracing::debug_span!("snapshot"))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map(|_| Source {
                    root: dest,
                    files: None,
                })
                .map_err(|e| {
                    format!(
                        "cannot copy the working tree {}: {e}",
                        source.root.display()
                    )
                })
            }
            None => Ok(source),
        };
        let logins = match &self.secret_key {
            // An untrusted run gets no registry logins.
            _ if !plan.trust.is_trusted() => Ok(Logins::default()),
            Some(key) if self.uses_registries() => self
                .store
                .registry_credentials(key, &run.repository_id)
                .await
                .map(Logins::new)
                .map_err(|e| format!("cannot open the repository's registry logins: {e}")),
            _ => Ok(Logins::default()),
        };
        let masker = match &self.secret_key {
            Some(key) => match self.store.open_all_secrets(key, &run.repository_id).await {
                Ok(values) => ferry_exec::mask::Masker::new(values.iter().map(Vec::as_slice)),
                Err(e) => {
                    tracing::warn!("cannot open the repository's secrets to mask them: {e}");
                    ferry_exec::mask::Masker::default()
                }
            },
            None => ferry_exec::mask::Masker::default(),
        };
        sink.event(&EngineEvent::RunStarted {
            run_id: &run.id,
            number: run.number,
            jobs: plan.jobs.len(),
        });
        let ctx = Arc::new(RunCtx {
            store: self.store.clone(),
            executors: self.executors.clone(),
            services: self.services.clone(),
            builder: self.builder.clone(),
            caches: self.caches(),
            logins,
            masker,
            default_image: self.default_image.clone(),
            writer,
            plan,
            run,
            job_ids,
            sink,
            cancel,
            source: snapshot.as_ref().cloned().unwrap_or_else(|_| Source {
                root: work_dir.join("source"),
                files: None,
            }),
            work_dir: work_dir.clone(),
            artifacts_dir,
            keep: self.config.keep_workspaces,
            log_limit: self.config.log_limit,
            job_timeout: self.config.job_timeout,
        });
        let jobs = &ctx.plan.jobs;
        let mut schedule = Scheduler::new(&ctx.plan, self.config.concurrency);
        // Reused jobs bring their artifacts from the earlier run.
        for (i, job) in jobs.iter().enumerate() {
            if let ferry_plan::Decision::Reuse { run, .. } = &job.decision {
                let from = workspace::job_dir(
                    &self.store.data_dir().join("artifacts").join(run),
                    i,
                    &job.name,
                );
                let to = workspace::job_dir(&ctx.artifacts_dir, i, &job.name);
                if from.is_dir() {
                    let copied =
                        tokio::task::spawn_blocking(move || workspace::copy_dir(&from, &to)).await;
                    if !matches!(copied, Ok(Ok(()))) {
                        schedule.finished(
                            i,
                            Status::Failed,
                            Some("cannot reuse the earlier run's artifacts".into()),
                        );
                    }
                }
            }
        }
        if let Err(reason) = &snapshot {
            for i in schedule.unsettled() {
                self.end_unstarted(&ctx, i, Status::Failed, reason).await?;
                schedule.settle(i, Status::Failed, reason.clone());
            }
        }
        let mut set: JoinSet<(usize, Status, Option<String>)> = JoinSet::new();
        loop {
            if !ctx.cancel.is_cancelled() {
                for action in schedule.poll() {
                    match action {
                        Action::Skip { job, reason } => {
                            self.end_unstarted(&ctx, job, Status::Skipped, &reason)
                                .await?;
                        }
                        Action::Start(i) => {
                            let ctx = ctx.clone();
                            let span = tracing::debug_span!("job", name = %ctx.plan.jobs[i].name);
                            set.spawn(
                                async move {
                                    let (status, reason) = run_job(&ctx, i).await;
                                    (i, status, reason)
                                }
                                .instrument(span),
                            );
                        }
                    }
                }
            }
            if set.is_empty() {
                break;
            }
            tokio::select! {
                joined = set.join_next() => match joined {
                    Some(Ok((i, status, reason))) => schedule.finished(i, status, reason),
                    Some(Err(e)) => return Err(ferry_store::Error::Corrupt(format!("a job task failed: {e}"))),
                    None => {}
                },
                _ = ctx.cancel.cancelled() => {
                    // Running jobs see the same token; wait for them to wind down.
                    while let Some(joined) = set.join_next().await {
                        if let Ok((i, status, reason)) = joined {
                            schedule.finished(i, status, reason);
                        }
                    }
                }
            }
        }

        for i in schedule.unsettled() {
            let reason = "the run was cancelled before it started".to_string();
            self.end_unstarted(&ctx, i, Status::Cancelled, &reason)
                .await?;
            schedule.settle(i, Status::Cancelled, reason);
        }
        let results: Vec<JobResult> = jobs
            .iter()
            .zip(schedule.results())
            .map(|(j, (status, reason))| JobResult {
                name: j.name.clone(),
                status,
                reason,
            })
            .collect();
        let status = schedule.outcome(ctx.cancel.is_cancelled());
        ctx.writer
            .send(Write::finish_run(&ctx.run.id, status, snapshot.err()));
        // The workspace goes while the last writes are stored: neither waits for the other.
        let removed = (!ctx.keep).then(|| {
            let dir = work_dir.clone();
            tokio::task::spawn_blocking(move || workspace::remove(&dir))
                .instrument(tracing::debug_span!("workspace.remove"))
        });
        let flushed = ctx
            .writer
            .flush()
            .instrument(tracing::debug_span!("store.flush"))
            .await;
        if let Some(removed) = removed {
            let _ = removed.await;
        }
        flushed?;
        ctx.sink.event(&EngineEvent::RunFinished {
            status,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        let mut run = ctx.run.clone();
        run.status = status;
        Ok(RunOutcome {
            run,
            status,
            jobs: results,
        })
    }

    /// Whether jobs may pull or push images (so the registry logins are opened).
    fn uses_registries(&self) -> bool {
        self.executors.get(ExecutorKind::Container).is_some()
            || self.services.is_some()
            || self.builder.is_some()
    }

    async fn end_unstarted(
        &self,
        ctx: &RunCtx,
        i: usize,
        status: Status,
        reason: &str,
    ) -> ferry_store::Result<()> {
        let job = &ctx.plan.jobs[i];
        ctx.writer.send(Write::finish_job(
            &ctx.job_ids[i],
            JobEnd {
                status,
                reason: Some(reason.to_string()),
                exit_code: None,
                attempts: 0,
                log_bytes: 0,
                log_lines: 0,
                tests: None,
            },
        ));
        ctx.sink.event(&EngineEvent::JobFinished {
            job: &job.name,
            status,
            reason: Some(reason),
            duration_ms: 0,
            tests: None,
        });
        Ok(())
    }
}
