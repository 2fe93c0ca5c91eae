//! Runs: triggering, listing, one run's detail, job logs, live events, cancel, re-run.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_plan::EventKind;
use ferry_store::{Image, Job, Release, Run, RunFilter, Status, Step};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;

use super::Body;
use crate::auth::{AsDeveloper, AsViewer, InRepo, Need};
use crate::error::ErrorCode;
use crate::trigger::{TriggerError, TriggerRequest, trigger as trigger_run};
use crate::{ApiError, AppState, queue};

/// `POST /api/v1/repos/{repo}/runs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// A branch, a tag or a commit.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `manual` (the default) or `api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Variables for every job of this run (like the pipeline's `env:`, set last).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunOne {
    pub run: Run,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// A repository's name or id.
    pub repo: Option<String>,
    pub branch: Option<String>,
    /// `queued`, `running`, `success`, `failed`, `cancelled` or `skipped`.
    pub status: Option<String>,
    /// Runs older than this run id (the previous page's `next`).
    pub before: Option<String>,
    /// The most runs (default 50, at most 200).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Ask with `before=` this for the next page; none on the last page.
    pub next: Option<String>,
}

/// A job with its steps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunDetail {
    pub run: Run,
    /// The plan the run executes (jobs, order, decisions and skip reasons), as stored.
    pub plan: serde_json::Value,
    /// How far the run is trusted, and why (also in the plan).
    pub trust: ferry_plan::Trust,
    pub jobs: Vec<JobView>,
    /// Images its jobs built and pushed, with their digests.
    pub images: Vec<Image>,
    /// The release it sealed, if any.
    pub release: Option<Release>,
}

/// `GET /api/v1/runs/{run}/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// What the client has of each job's log already, as a JSON object of job names and
    /// byte counts (`{"build": 1024}`): a client whose stream ended reconnects with it
    /// and gets the rest, nothing twice.
    pub offsets: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to start from.
    pub offset: Option<u64>,
    /// The most bytes to return (default and maximum 1 MiB).
    pub limit: Option<u64>,
    /// Start where the last this many lines start (`offset` is then ignored), or `limit`
    /// bytes before the end when they are longer; found from the end of the log, so it
    /// costs the same whatever the log's size.
    pub tail: Option<u64>,
    /// Start where this line starts (1-based; `offset` is then ignored); found from the
    /// log's time index, so it costs about the same wherever the line is.
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Cancelled {
    /// The run's id.
    pub cancelled: String,
}

/// `POST /api/v1/runs/{run}/rerun` (the body may be left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    /// Only the jobs that did not succeed (and what depends on them); the others keep
    /// their result and artifacts.
    #[serde(default)]
    pub failed_only: bool,
}

fn trigger_error(e: TriggerError) -> ApiError {
    match e {
        TriggerError::Store(e) => e.into(),
        TriggerError::Fetch(e) => ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::FetchFailed, e),
        TriggerError::Git(e) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::GitFailed, e)
        }
        e @ TriggerError::NotTriggered(_) => {
            ApiError::conflict(ErrorCode::NotTriggered, e.to_string())
        }
        e => ApiError::invalid(e.to_string()),
    }
}

pub(crate) async fn trigger(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Body(body): Body<TriggerRun>,
) -> Result<(StatusCode, Json<RunOne>), ApiError> {
    let event = match body.event.as_deref() {
        None | Some("manual") => EventKind::Manual,
        Some("api") => EventKind::Api,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`event` must be `manual` or `api`, not `{other}`"
            )));
        }
    };
    for name in body.variables.keys() {
        let valid = ferry_config::is_env_name(name) && !name.starts_with("FERRY_") && name != "CI";
        if !valid {
            return Err(ApiError::invalid(format!(
                "variable `{name}`: names are letters, digits and `_`, and `FERRY_*` and `CI` are built in"
            )));
        }
    }
    let req = TriggerRequest {
        git_ref: body.git_ref,
        sha: None,
        variables: body.variables.into_iter().collect(),
        event,
        trust: ferry_plan::Trust::trusted(format!("asked for by {}", caller.label())),
        triggered_by: caller.label(),
        pull: None,
    };
    match trigger_run(&s, &repo, &req).await {
        Ok(run) => Ok((StatusCode::CREATED, Json(RunOne { run }))),
        Err(e) => Err(trigger_error(e)),
    }
}

pub(crate) async fn list(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Query(q): Query<RunQuery>,
) -> Result<Json<RunList>, ApiError> {
    let repository_id = match &q.repo {
        Some(r) => Some(s.store.repository(r).await?.id),
        None => None,
    };
    let status = match &q.status {
        Some(st) => Some(
            Status::parse(st).ok_or_else(|| ApiError::invalid(format!("unknown status `{st}`")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let runs = s
        .store
        .find_runs(&RunFilter {
            repository_id,
            branch: q.branch,
            status,
            before: q.before,
            limit,
        })
        .await?;
    let next = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(RunList { runs, next }))
}

pub(crate) async fn one(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(run): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    let plan: serde_json::Value =
        serde_json::from_str(&s.store.run_plan(&run.id).await?).map_err(ApiError::internal)?;
    let trust = plan
        .get("trust")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let mut jobs = Vec::new();
    for job in s.store.jobs(&run.id).await? {
        let steps = s.store.steps(&job.id).await?;
        jobs.push(JobView { job, steps });
    }
    let images = s.store.images(&run.id).await?;
    let release = s.store.release_of_run(&run.id).await?;
    Ok(Json(RunDetail {
        run,
        plan,
        trust,
        jobs,
        images,
        release,
    }))
}

/// A range of a job's log, as text. `X-Ferry-Log-Offset` is where it starts,
/// `X-Ferry-Log-Next` the offset to ask for next; `X-Ferry-Log-Complete: true` once the
/// job has finished and the end was reached.
pub(crate) async fn job_log(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((run, job)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let (run, job) = run_job(&s, &run, &job).await?;
    let job = &job;
    if q.tail.is_some() && q.line.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`tail` and `line` cannot be used together",
        ));
    }
    let limit = q.limit.unwrap_or(1 << 20).clamp(1, 1 << 20);
    let at_line = match q.line {
        Some(line) => s.store.log_at_line(&run.id, &job.id, line).await?,
        None => None,
    };
    let path = s.store.log_path(&run.id, &job.id);
    let (offset, data) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Vec<u8>)> {
        let (offset, log) = match at_line {
            Some(found) => found,
            None => {
                let Some(mut log) = ferry_store::open_log(&path)? else {
                    return Ok((0, Vec::new()));
                };
                let offset = match q.tail {
                    // At most `limit` bytes back, whatever the log holds.
                    Some(lines) => ferry_store::tail_offset_within(&mut log, lines, limit)?,
                    None => q.offset.unwrap_or(0),
                };
                log.seek(SeekFrom::Start(offset))?;
                (offset, log)
            }
        };
        let mut buf = Vec::new();
        log.take(limit).read_to_end(&mut buf)?;
        Ok((offset, buf))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let next = offset + data.len() as u64;
    let complete = job.status.is_finished() && (data.len() as u64) < limit;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-ferry-log-offset"),
                offset.to_string(),
            ),
            (
                header::HeaderName::from_static("x-ferry-log-next"),
                next.to_string(),
            ),
            (
                header::HeaderName::from_static("x-ferry-log-complete"),
                complete.to_string(),
            ),
        ],
        data,
    )
        .into_response())
}

/// A run and one of its jobs (by id or name), or 404 saying which is missing.
pub(crate) async fn run_job(s: &AppState, run: &str, job: &str) -> Result<(Run, Job), ApiError> {
    let run = s.store.run_by_id(run).await?;
    let job = s
        .store
        .jobs(&run.id)
        .await?
        .into_iter()
        .find(|j| j.id == job || j.name == job)
        .ok_or_else(|| ApiError::not_found(format!("run {} has no job `{job}`", run.number)))?;
    Ok((run, job))
}

pub(crate) async fn cancel(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(run): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    if run.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Finished,
            format!("run {} has already finished", run.number),
        ));
    }
    let cancelled = queue::cancel(&s, &run.id) || s.store.cancel_queued_run(&run.id).await?;
    if !cancelled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotHere,
            "the run is executing on another server",
        ));
    }
    Ok(Json(Cancelled { cancelled: run.id }))
}

/// Server-Sent Events of one run: `run`, `job` and `log` events (see `live`), then
/// `end` when the run has finished.
pub(crate) async fn events(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Path(run): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    let offsets: std::collections::HashMap<String, u64> = match &q.offsets {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::invalid(format!(
                "`offsets` must be a JSON object of job names and byte counts: {e}"
            ))
        })?,
        None => Default::default(),
    };
    let place = s
        .subscribers
        .join(&run.id, &caller.user.id)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, why))?;
    // Subscribe before reading what is stored: see `live`.
    let rx = s.live.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(256);
    tokio::spawn(crate::live::stream(s.clone(), run, rx, tx, offsets, place));
    Ok(Sse::new(ReceiverStream::new(out)).keep_alive(KeepAlive::default()))
}

/// Queues a new run of a finished run's stored plan (the same commit and event).
pub(crate) async fn rerun(
    State(s): State<AppState>,
    Need(caller, _): Need<AsDeveloper>,
    Path(run): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RunOne>), ApiError> {
    // The body is optional: none means a whole re-run.
    let options: Rerun = if body.iter().all(u8::is_ascii_whitespace) {
        Rerun::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidBody,
                e.to_string(),
            )
        })?
    };
    let old = s.store.run_by_id(&run).await?;
    if !old.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotFinished,
            format!("run {} has not finished", old.number),
        ));
    }
    let mut plan: ferry_plan::Plan =
        serde_json::from_str(&s.store.run_plan(&old.id).await?).map_err(ApiError::internal)?;
    if !options.failed_only {
        // A whole re-run runs again what an earlier failed-only re-run reused.
        for job in &mut plan.jobs {
            if matches!(job.decision, ferry_plan::Decision::Reuse { .. }) {
                job.decision = ferry_plan::Decision::Run;
            }
        }
    } else {
        let jobs = s.store.jobs(&old.id).await?;
        for job in &mut plan.jobs {
            let before = jobs.iter().find(|j| j.name == job.name);
            let succeeded = before.is_some_and(|j| j.status == Status::Success);
            match &job.decision {
                ferry_plan::Decision::Skip { .. } => {}
                ferry_plan::Decision::Reuse { .. } if succeeded => {}
                _ if succeeded => {
                    job.decision = ferry_plan::Decision::Reuse {
                        run: old.id.clone(),
                        number: old.number,
                    };
                }
                _ => job.decision = ferry_plan::Decision::Run,
            }
        }
        if plan.jobs.iter().all(|j| !j.runs()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NothingFailed,
                format!("no job of run {} failed", old.number),
            ));
        }
    }
    let (run, _) = s
        .engine
        .create_run(
            &old.repository_id,
            &plan,
            false,
            Some(format!("{} (re-run of {})", caller.label(), old.number)),
        )
        .await?;
    crate::trigger::queued(&s, &old.repository_id, &plan, &run).await?;
    Ok((StatusCode::CREATED, Json(RunOne { run })))
}
