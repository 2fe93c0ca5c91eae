//! From "run this ref of this repository" to a queued run: fetch the mirror, resolve
//! the ref, read the commit's `.ferry.yml`, plan it, and queue it.

use ferry_plan::{Event, EventKind};
use ferry_source::git;
use ferry_store::{Repository, Run};
use tracing::Instrument as _;

use crate::AppState;

/// A request for a run.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    /// A branch, a tag, a full ref or a commit sha.
    pub git_ref: String,
    /// The commit, when the caller knows it (a webhook); `git_ref` is then its full ref.
    pub sha: Option<String>,
    /// Variables for every job (set after the pipeline's `env:`), stored in the plan.
    pub variables: Vec<(String, String)>,
    pub event: EventKind,
    /// Who or what asks (`user:ada`, `webhook:github`, …).
    pub triggered_by: String,
    /// How far the run is trusted (decided by the caller from facts the code cannot
    /// forge; see `intake::trust`).
    pub trust: ferry_plan::Trust,
    /// A pull request's facts, for a `pull_request` delivery.
    pub pull: Option<ferry_store::PullRequest>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("cannot fetch the repository: {0}")]
    Fetch(String),
    /// The mirror could not be read (worth trying again).
    #[error("{0}")]
    Git(String),
    #[error("{0}")]
    Ref(String),
    #[error("the commit has no .ferry.yml")]
    NoPipeline,
    #[error("invalid .ferry.yml:\n{0}")]
    Config(String),
    #[error("the pipeline does not run for this event: {0}")]
    NotTriggered(String),
    #[error(transparent)]
    Store(#[from] ferry_store::Error),
}

/// Queues a run; wakes the dispatcher.
#[tracing::instrument(level = "debug", skip_all, fields(repo = %repo.name))]
pub async fn trigger(
    state: &AppState,
    repo: &Repository,
    req: &TriggerRequest,
) -> Result<Run, TriggerError> {
    let mirror = state.mirror_path(&repo.id);
    let named = req.sha.as_deref().filter(|s| !s.is_empty());
    // A ref named by the caller (a delivery) is a name git would accept, or nothing
    // runs: it becomes the run's branch or tag, and a tag becomes a release's name.
    if named.is_some() && req.git_ref.starts_with("refs/") {
        git::check_ref_name(&req.git_ref).map_err(TriggerError::Ref)?;
    }
    // A delivery names its commit: when the mirror has it already, no fetch is needed.
    // The commit is read at once and fetched only when git says it has no such commit
    // (a mirror that cannot be read is not fetched over: that error is retried).
    let mut fetched = false;
    if named.is_none() || !mirror.join("HEAD").is_file() {
        state.sync_mirror(repo).await.map_err(TriggerError::Fetch)?;
        fetched = true;
    }
    let (_reading, sha, full_ref, commit, source) = loop {
        // Everything below reads the mirror: no fetch may write to it meanwhile.
        let reading = state
            .read_mirror(&repo.id)
            .await
            .map_err(TriggerError::Git)?;
        let (sha, full_ref) = match named {
            Some(sha) => (
                sha.to_string(),
                Some(req.git_ref.clone()).filter(|r| r.starts_with("refs/")),
            ),
            None => git::resolve(&mirror, &req.git_ref)
                .await
                .map_err(TriggerError::Ref)?,
        };
        if let Some(known) = state.known_commit(&repo.id, &sha) {
            let read = crate::ReadCommit::clone(&known);
            break (reading, sha, full_ref, read.commit, Ok(read.pipeline));
        }
        // Two git processes at once: the commit and its pipeline.
        let (commit, source) = tokio::join!(
            git::read_commit(&mirror, &sha),
            git::show_file(&mirror, &sha, ferry_config::FILE_NAME)
        );
        match commit {
            Ok(commit) => {
                // Remembered by its full id only: a short one or a ref may name
                // another commit later.
                if let Ok(pipeline) = &source
                    && commit.sha == sha
                {
                    state.remember_commit(
                        &repo.id,
                        crate::ReadCommit {
                            commit: commit.clone(),
                            pipeline: pipeline.clone(),
                        },
                    );
                }
                break (reading, sha, full_ref, commit, source);
            }
            Err(git::CommitError::NotFound(_)) if !fetched => {
                drop(reading);
                state.sync_mirror(repo).await.map_err(TriggerError::Fetch)?;
                fetched = true;
            }
            Err(git::CommitError::NotFound(m)) => return Err(TriggerError::Ref(m)),
            Err(git::CommitError::Unreadable(m)) => return Err(TriggerError::Git(m)),
        }
    };
    let source = source
        .map_err(TriggerError::Git)?
        .ok_or(TriggerError::NoPipeline)?;
    let source = String::from_utf8(source)
        .map_err(|_| TriggerError::Config("the file is not valid UTF-8".into()))?;
    let pipeline = ferry_config::load(&source)
        .map_err(|d| {
            TriggerError::Config(ferry_config::render_all(
                &d,
                ferry_config::FILE_NAME,
                &source,
                false,
            ))
        })?
        .pipeline;
    let branch = full_ref
        .as_deref()
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .map(str::to_string);
    let tag = full_ref
        .as_deref()
        .and_then(|r| r.strip_prefix("refs/tags/"))
        .map(str::to_string);
    let event = Event {
        kind: req.event,
        branch,
        tag,
        git_ref: full_ref.unwrap_or_else(|| sha.clone()),
        sha: commit.sha.clone(),
        author: commit.author.clone(),
        message: commit.message.clone(),
        changed_files: Some(commit.changed_files.clone()),
        pull_request: req.pull.as_ref().map(|p| ferry_plan::PullRequestEvent {
            number: p.number,
            base: p.base.clone(),
            head: p.head.clone(),
            fork: p.fork,
        }),
    };
    let plan = ferry_plan::plan(&pipeline, &event, &Default::default())
        .map_err(|e| TriggerError::Config(e.to_string()))?;
    let mut plan = plan;
    plan.env.extend(req.variables.iter().cloned());
    plan.trust = req.trust.clone();
    // Code that no branch or tag names (a pull request's ref, `refs/for/…`) is
    // untrusted whoever asks for it: it may be a fork's.
    if plan.trust.is_trusted()
        && req.event != EventKind::PullRequest
        && let Some(r) = plan.event.git_ref.strip_prefix("refs/")
        && !(r.starts_with("heads/") || r.starts_with("tags/"))
    {
        plan.trust = ferry_plan::Trust::untrusted(format!(
            "{} is neither a branch nor a tag (asked for by {})",
            plan.event.git_ref, req.triggered_by
        ));
    }
    if !plan.trust.is_trusted() {
        // An untrusted run has a concurrency group of its own kind: it never cancels
        // or queues behind a trusted run, whatever group its file names.
        if let Some(c) = &mut plan.concurrency {
            c.group = format!("untrusted/{}", c.group);
        }
    }
    if let Some(reason) = &plan.not_triggered {
        return Err(TriggerError::NotTriggered(reason.clone()));
    }
    let (run, _) = state
        .engine
        .create_run(&repo.id, &plan, false, Some(req.triggered_by.clone()))
        .instrument(tracing::debug_span!("create_run"))
        .await?;
    tracing::info!(
        repository = %repo.name,
        run = run.number,
        git_ref = %run.git_ref,
        commit = %run.commit_sha,
        triggered_by = %req.triggered_by,
        "run queued"
    );
    queued(state, &repo.id, &plan, &run).await?;
    crate::status::report_to(
        state,
        repo,
        &run.commit_sha,
        crate::status::State::Pending,
        crate::status::RUN_CONTEXT,
        format!("Run #{} is queued", run.number),
        state.notifier.link(&format!("/api/v1/runs/{}", run.id)),
    )
    .await;
    Ok(run)
}

/// After a run is queued: it supersedes older runs of its concurrency group (queued
/// ones are cancelled; running ones too with `cancel_in_progress`), and the dispatcher
/// wakes up.
pub(crate) async fn queued(
    state: &AppState,
    repository_id: &str,
    plan: &ferry_plan::Plan,
    run: &Run,
) -> Result<(), ferry_store::Error> {
    if let Some(c) = &plan.concurrency {
        let running = state.store.supersede(repository_id, &c.group, run).await?;
        if c.cancel_in_progress {
            for id in running {
                // A run executing on another server is left to finish there.
                crate::queue::cancel(state, &id);
            }
        }
    }
    state.wake.notify_one();
    Ok(())
}
