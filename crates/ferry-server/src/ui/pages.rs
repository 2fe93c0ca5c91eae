//! The pages. Each reads through the API's handlers (the same answer the JSON API
//! gives, with the same role checks), turns it into a small view model of strings and
//! numbers, and renders an askama template (`templates/`), which escapes every value.

use std::marker::PhantomData;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_store::{Job, Repository, Run, RunFilter, Status, Step, TestSummary};

use super::{Chrome, Nav, Ui, Viewer};
use crate::ApiError;
use crate::api::{delivery, runs, settings, users};
use crate::auth::{InRepo, MinRole, Need, Role};

/// A rendered template as an HTML answer.
pub(crate) struct Html<T>(pub T);

impl<T: Template> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => (
                [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            Err(e) => {
                tracing::error!("rendering a page: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

/// An error as a page, with the API's status and message.
pub(crate) fn error_page(e: ApiError) -> Response {
    let page = ErrorPage {
        status: e.status.as_u16(),
        reason: e.status.canonical_reason().unwrap_or("Error").to_string(),
        message: e.message,
    };
    (e.status, Html(page)).into_response()
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    next: String,
    error: Option<String>,
    css: &'static str,
}

pub(crate) fn sign_in(next: &str, error: Option<String>, status: StatusCode) -> Response {
    let page = SignInPage {
        next: next.to_string(),
        error,
        css: super::assets::href("app.css"),
    };
    (status, Html(page)).into_response()
}

#[derive(Template)]
#[template(path = "revealed.html")]
struct RevealedPage {
    secret: String,
    back: String,
    css: &'static str,
}

/// A new token's secret, shown this once.
pub(crate) fn revealed(secret: String, back: &str) -> Response {
    Html(RevealedPage {
        secret,
        back: back.to_string(),
        css: super::assets::href("app.css"),
    })
    .into_response()
}

#[derive(Template)]
#[template(path = "again.html")]
struct AgainPage {
    path: String,
}

/// A page that asks for `path` again, from this site (a link followed from another
/// site came without the `SameSite=Strict` session cookie; this request sends it).
pub(crate) fn again_from_here(path: &str) -> Response {
    Html(AgainPage {
        path: super::local_path(path).to_string(),
    })
    .into_response()
}

// ---- Formatting for people ----

/// `2026-12-03 14:03:22 UTC`.
pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// How long from `start` to `end` (or to now, when it has not ended): `850ms`, `42s`,
/// `3m 07s`, `2h 05m`.
pub(crate) fn took(start: Option<i64>, end: Option<i64>) -> String {
    let Some(start) = start else {
        return String::new();
    };
    let end = end.unwrap_or_else(ferry_store::now_ms);
    duration((end - start).max(0))
}

pub(crate) fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A path segment, percent-encoded (a repository's name may hold `/`).
pub(crate) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn short(sha: &str) -> String {
    sha.chars().take(10).collect()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

// ---- View models ----

/// A run in a list.
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub id: String,
    pub number: i64,
    pub repo: String,
    pub status: &'static str,
    pub title: String,
    pub git_ref: String,
    pub sha: String,
    pub event: String,
    pub when: String,
    pub took: String,
    pub by: String,
}

impl RunRow {
    fn new(run: &Run, repo: &str) -> Self {
        RunRow {
            id: run.id.clone(),
            number: run.number,
            repo: repo.to_string(),
            status: run.status.as_str(),
            title: first_line(&run.message),
            git_ref: run
                .branch
                .clone()
                .or_else(|| run.tag.clone())
                .unwrap_or_else(|| run.git_ref.clone()),
            sha: short(&run.commit_sha),
            event: run.event.clone(),
            when: when(run.created_at),
            took: took(run.started_at, run.finished_at),
            by: run.triggered_by.clone().unwrap_or_default(),
        }
    }
}

/// An environment in brief.
#[derive(Debug, Clone)]
pub(crate) struct EnvChip {
    pub name: String,
    /// `live`, `none`, or the pending deployment's state.
    pub state: String,
    pub release: String,
    pub health: String,
}

fn chips(list: &delivery::EnvironmentList) -> Vec<EnvChip> {
    list.environments
        .iter()
        .map(|e| EnvChip {
            name: e.name.clone(),
            state: match (&e.live, e.pending.first()) {
                (_, Some(p)) => p.status.as_str().to_string(),
                (Some(_), None) => "live".into(),
                (None, None) => "none".into(),
            },
            release: e
                .live
                .as_ref()
                .map(|l| l.release.clone())
                .unwrap_or_default(),
            health: e
                .health
                .as_ref()
                .map(|h| h.state.as_str().to_string())
                .unwrap_or_default(),
        })
        .collect()
}

/// A repository's environments, in promotion order (each after the one it follows,
/// else as the file lists them).
async fn environments_of(
    ui: &Ui,
    viewer: &Viewer,
    repo: &Repository,
) -> Result<delivery::EnvironmentList, ApiError> {
    let Json(mut list) =
        delivery::environments(State(ui.app.clone()), in_repo(viewer, repo)?).await?;
    let order = promotion_order(
        &list
            .environments
            .iter()
            .map(|e| (e.name.as_str(), e.after.as_deref()))
            .collect::<Vec<_>>(),
    );
    list.environments
        .sort_by_key(|e| order.iter().position(|n| *n == e.name));
    Ok(list)
}

/// Environments (name, the one it comes after) in promotion order: by how many steps
/// from a first environment, ties in the file's order.
pub(crate) fn promotion_order(envs: &[(&str, Option<&str>)]) -> Vec<String> {
    let depth = |name: &str| {
        let mut at = name;
        let mut n = 0;
        while let Some(Some(after)) = envs.iter().find(|(e, _)| *e == at).map(|(_, a)| *a) {
            n += 1;
            at = after;
            if n > envs.len() {
                break; // a loop (the loader refuses one): stop counting
            }
        }
        n
    };
    let mut names: Vec<(usize, usize, &str)> = envs
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (depth(name), i, *name))
        .collect();
    names.sort();
    names.into_iter().map(|(_, _, n)| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn environments_go_in_promotion_order() {
        let order = super::promotion_order(&[
            ("production", Some("staging")),
            ("staging", Some("sandbox")),
            ("preview", None),
            ("sandbox", None),
        ]);
        assert_eq!(order, ["preview", "sandbox", "staging", "production"]);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(super::duration(850), "850ms");
        assert_eq!(super::duration(42_000), "42s");
        assert_eq!(super::duration(187_000), "3m 07s");
        assert_eq!(super::duration(7_500_000), "2h 05m");
    }
}

/// The caller as a handler's extractor would make it: only with the role it needs.
fn need<R: MinRole>(viewer: &Viewer) -> Result<Need<R>, ApiError> {
    viewer.caller.require(R::ROLE)?;
    Ok(Need(viewer.caller.clone(), PhantomData))
}

/// The caller and the repository, as [`InRepo`] would make them: only with the role.
fn in_repo<R: MinRole>(viewer: &Viewer, repo: &Repository) -> Result<InRepo<R>, ApiError> {
    viewer.caller.require(R::ROLE)?;
    Ok(InRepo(repo.clone(), viewer.caller.clone(), PhantomData))
}

/// Runs a page's body; its error becomes the error page.
async fn page<F>(f: F) -> Response
where
    F: std::future::Future<Output = Result<Response, ApiError>>,
{
    match f.await {
        Ok(r) => r,
        Err(e) => error_page(e),
    }
}

// ---- Dashboard ----

#[derive(Debug)]
pub(crate) struct RepoCard {
    pub name: String,
    pub path: String,
    pub runs: Vec<RunRow>,
    pub envs: Vec<EnvChip>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    c: Chrome,
    repos: Vec<RepoCard>,
    /// Running and queued runs, each with where it runs or why it waits.
    queue: Vec<(RunRow, String)>,
    running: usize,
}

/// `GET /`: every repository with its last runs and its environments, and the queue.
pub(crate) async fn dashboard(State(ui): State<Ui>, viewer: Viewer) -> Response {
    page(async {
        let repos = ui.app.store.repositories().await?;
        let names: std::collections::HashMap<String, String> = repos
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect();
        let name = |id: &str| names.get(id).cloned().unwrap_or_default();
        let mut cards = Vec::new();
        for repo in &repos {
            let runs = ui
                .app
                .store
                .find_runs(&RunFilter {
                    repository_id: Some(repo.id.clone()),
                    limit: 5,
                    ..Default::default()
                })
                .await?;
            // A repository whose rules cannot be read yet (never fetched) has none.
            let envs = environments_of(&ui, &viewer, repo)
                .await
                .map(|l| chips(&l))
                .unwrap_or_default();
            cards.push(RepoCard {
                name: repo.name.clone(),
                path: format!("/ui/repos/{}", seg(&repo.name)),
                runs: runs.iter().map(|r| RunRow::new(r, &repo.name)).collect(),
                envs,
            });
        }
        let entries = ui.app.store.queue().await?;
        let why = super::queue::explain(
            &entries,
            &ui.app.config.server_id,
            super::queue::Limits {
                max_runs: ui.app.config.max_runs,
                max_per_repo: ui.app.config.max_runs_per_repo,
            },
        );
        let running = entries
            .iter()
            .filter(|e| e.run.status == Status::Running)
            .count();
        let queue = entries
            .iter()
            .zip(why)
            .map(|(e, why)| (RunRow::new(&e.run, &name(&e.run.repository_id)), why))
            .collect();
        Ok(Html(Dashboard {
            c: viewer.chrome(Nav::default()),
            repos: cards,
            queue,
            running,
        })
        .into_response())
    })
    .await
}

// ---- A repository's runs ----

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RunsQuery {
    before: Option<String>,
    branch: Option<String>,
    status: Option<String>,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    c: Chrome,
    repo: String,
    api: String,
    runs: Vec<RunRow>,
    envs: Vec<EnvChip>,
    next: Option<String>,
    branch: String,
    status: String,
}

/// `GET /ui/repos/{repo}`: its runs (filters, pages) and its environments.
pub(crate) async fn repository(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let Json(list) = runs::list(
            State(ui.app.clone()),
            need(&viewer)?,
            Query(runs::RunQuery {
                repo: Some(repo.id.clone()),
                branch: q.branch.clone().filter(|b| !b.is_empty()),
                status: q.status.clone().filter(|s| !s.is_empty()),
                before: q.before.clone(),
                limit: Some(50),
            }),
        )
        .await?;
        let envs = environments_of(&ui, &viewer, &repo)
            .await
            .map(|l| chips(&l))
            .unwrap_or_default();
        Ok(Html(RepositoryPage {
            c: viewer.chrome(Nav::repo(&repo.name, "runs")),
            api: format!("/api/v1/repos/{}", seg(&repo.name)),
            runs: list
                .runs
                .iter()
                .map(|r| RunRow::new(r, &repo.name))
                .collect(),
            repo: repo.name,
            envs,
            next: list.next,
            branch: q.branch.unwrap_or_default(),
            status: q.status.unwrap_or_default(),
        })
        .into_response())
    })
    .await
}

// ---- A run ----

/// A job on the run page.
#[derive(Debug)]
pub(crate) struct JobRow {
    pub id: String,
    pub name: String,
    pub status: &'static str,
    pub reason: String,
    pub took: String,
    pub attempts: i64,
    pub exit_code: String,
    pub allow_failure: bool,
    pub steps: Vec<StepRow>,
    pub tests: Option<TestSummary>,
}

#[derive(Debug)]
pub(crate) struct StepRow {
    pub name: String,
    pub status: &'static str,
    pub took: String,
    pub attempt: i64,
    pub exit_code: String,
}

fn step_rows(steps: &[Step]) -> Vec<StepRow> {
    steps
        .iter()
        .map(|s| StepRow {
            name: s.name.clone(),
            status: s.status.as_str(),
            took: took(s.started_at, s.finished_at),
            attempt: s.attempt,
            exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        })
        .collect()
}

fn job_row(job: &Job, steps: &[Step]) -> JobRow {
    JobRow {
        id: job.id.clone(),
        name: job.name.clone(),
        status: job.status.as_str(),
        reason: job.reason.clone().unwrap_or_default(),
        took: took(job.started_at, job.finished_at),
        attempts: job.attempts,
        exit_code: job.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        allow_failure: job.allow_failure,
        steps: step_rows(steps),
        tests: job.tests.clone(),
    }
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    c: Chrome,
    repo: String,
    run: RunRow,
    finished: bool,
    message: String,
    error: String,
    trust: String,
    trust_reason: String,
    started: String,
    dag: String,
    jobs: Vec<JobRow>,
    /// Failed tests first: (job, test, message).
    failures: Vec<(String, String, String)>,
    images: Vec<(String, String, String)>,
    release: Option<(String, String)>,
    any_failed: bool,
    names_json: String,
}

/// `GET /ui/runs/{run}`: the plan as a graph, the jobs with their steps and tests.
pub(crate) async fn run(State(ui): State<Ui>, viewer: Viewer, Path(id): Path<String>) -> Response {
    page(async {
        let Json(detail) = runs::one(State(ui.app.clone()), need(&viewer)?, Path(id)).await?;
        let repo = ui.app.store.repository(&detail.run.repository_id).await?;
        let plan: Option<ferry_plan::Plan> = serde_json::from_value(detail.plan.clone()).ok();
        let dag_jobs: Vec<super::dag::DagJob> = plan
            .as_ref()
            .map(|p| {
                p.jobs
                    .iter()
                    .map(|pj| {
                        let stored = detail.jobs.iter().find(|j| j.job.name == pj.name);
                        let status = stored.map_or("pending", |j| j.job.status.as_str());
                        let reason =
                            stored.and_then(|j| j.job.reason.clone()).or_else(|| {
                                match &pj.decision {
                                    ferry_plan::Decision::Skip { reason } => {
                                        Some(reason.to_string())
                                    }
                                    _ => None,
                                }
                            });
                        super::dag::DagJob {
                            name: pj.name.clone(),
                            base: pj.base.clone(),
                            matrix: !pj.matrix.is_empty(),
                            needs: pj.needs.clone(),
                            status: status.to_string(),
                            reason,
                            took: stored
                                .map(|j| took(j.job.started_at, j.job.finished_at))
                                .unwrap_or_default(),
                            href: stored
                                .map(|j| format!("/ui/runs/{}/jobs/{}", detail.run.id, j.job.id))
                                .unwrap_or_default(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dag = super::dag::layout(&dag_jobs)
            .render()
            .map_err(ApiError::internal)?;
        let jobs: Vec<JobRow> = detail
            .jobs
            .iter()
            .map(|j| job_row(&j.job, &j.steps))
            .collect();
        let failures = detail
            .jobs
            .iter()
            .flat_map(|j| {
                j.job.tests.iter().flat_map(move |t| {
                    t.failures
                        .iter()
                        .map(move |f| (j.job.name.clone(), f.name.clone(), f.message.clone()))
                })
            })
            .collect();
        let names: Vec<&str> = detail.jobs.iter().map(|j| j.job.name.as_str()).collect();
        let run = &detail.run;
        Ok(Html(RunPage {
            c: viewer.chrome(Nav::repo(&repo.name, "runs")),
            run: RunRow::new(run, &repo.name),
            finished: run.status.is_finished(),
            message: run.message.clone(),
            error: run.error.clone().unwrap_or_default(),
            trust: format!("{:?}", detail.trust.level).to_lowercase(),
            trust_reason: detail.trust.reason.clone(),
            started: run.started_at.map(when).unwrap_or_default(),
            dag,
            any_failed: jobs
                .iter()
                .any(|j| matches!(j.status, "failed" | "cancelled")),
            jobs,
            failures,
            images: detail
                .images
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        i.tags.join(", "),
                        i.digest.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            release: detail.release.as_ref().map(|r| {
                (
                    r.name.clone(),
                    format!("/ui/repos/{}/releases/{}", seg(&repo.name), seg(&r.name)),
                )
            }),
            names_json: serde_json::to_string(&names).unwrap_or_default(),
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

// ---- Environments ----

#[derive(Debug)]
pub(crate) struct EnvColumn {
    pub name: String,
    pub policy: String,
    pub after: String,
    pub live: Option<LiveBox>,
    pub health: String,
    pub health_reason: String,
    pub workload: String,
    pub pending: Vec<PendingBox>,
    /// Releases a developer may promote here (newest first).
    pub candidates: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct LiveBox {
    pub deployment: String,
    pub deployment_path: String,
    pub release: String,
    pub release_path: String,
    pub sha: String,
    pub since: String,
    pub deployed_by: String,
    pub approved_by: String,
    pub images: Vec<String>,
    pub artifacts: usize,
}

#[derive(Debug)]
pub(crate) struct PendingBox {
    pub label: String,
    pub number: i64,
    pub status: &'static str,
    pub path: String,
    pub api: String,
    pub release: String,
    pub summary: String,
    pub preview: Option<ferry_deliver::diff::ReleaseDiff>,
    pub plan: Option<PlanBox>,
    pub approvals: Vec<String>,
}

/// A deployment's Terraform plan, as the approver's preview shows it.
#[derive(Debug)]
pub(crate) struct PlanBox {
    pub sha256: String,
    pub short: String,
    pub destroy: bool,
    pub counts: String,
    /// (class, action, address), in the order create, update, replace, delete.
    pub rows: Vec<(&'static str, &'static str, String)>,
    pub outputs: String,
    pub applied: bool,
}

impl From<&delivery::InfraPlanView> for PlanBox {
    fn from(p: &delivery::InfraPlanView) -> Self {
        let s = &p.summary;
        let mut rows = Vec::new();
        for (class, action, list) in [
            ("diff-new", "create", &s.create),
            ("", "update", &s.update),
            ("diff-old", "replace", &s.replace),
            ("diff-old", "destroy", &s.delete),
        ] {
            rows.extend(list.iter().map(|a| (class, action, a.clone())));
        }
        Self {
            short: p.sha256.chars().take(12).collect(),
            sha256: p.sha256.clone(),
            destroy: p.destroy,
            counts: s.counts(),
            rows,
            outputs: s.outputs.join(", "),
            applied: p.applied_at.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    c: Chrome,
    repo: String,
    api: String,
    here: String,
    columns: Vec<EnvColumn>,
}

/// `GET /ui/repos/{repo}/environments`: the board, one column per environment in
/// promotion order, with what waits for approval and its change preview.
pub(crate) async fn environments(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let list = environments_of(&ui, &viewer, &repo).await?;
        let releases = ui.app.store.releases(&repo.id, 20).await?;
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        let api = format!("/api/v1/repos/{}", seg(&repo.name));
        let mut columns = Vec::new();
        for e in &list.environments {
            let mut pending = Vec::new();
            for p in &e.pending {
                let number = p
                    .deployment
                    .rsplit_once('#')
                    .and_then(|(_, n)| n.parse::<i64>().ok())
                    .unwrap_or_default();
                let Json(detail) = delivery::deployment(
                    State(ui.app.clone()),
                    in_repo(&viewer, &repo)?,
                    Path((repo.name.clone(), p.deployment.clone())),
                )
                .await?;
                pending.push(PendingBox {
                    label: p.deployment.clone(),
                    number,
                    status: p.status.as_str(),
                    path: format!("{rp}/deployments/{}", seg(&p.deployment)),
                    api: format!("{api}/deployments/{}", seg(&p.deployment)),
                    release: detail.release.name.clone(),
                    summary: detail.changes.summary(),
                    preview: (p.status == ferry_store::DeploymentStatus::AwaitingApproval)
                        .then(|| detail.changes.clone()),
                    plan: detail.infra_plan.as_ref().map(PlanBox::from),
                    approvals: detail
                        .approvals
                        .iter()
                        .map(|a| format!("{} ({})", a.user_name, a.decision))
                        .collect(),
                });
            }
            columns.push(EnvColumn {
                name: e.name.clone(),
                policy: format!("{:?}", e.policy).to_lowercase(),
                after: e.after.clone().unwrap_or_default(),
                live: e.live.as_ref().map(|l| LiveBox {
                    deployment_path: format!("{rp}/deployments/{}", seg(&l.deployment)),
                    deployment: l.deployment.clone(),
                    release_path: format!("{rp}/releases/{}", seg(&l.release)),
                    release: l.release.clone(),
                    sha: short(&l.commit_sha),
                    since: l.since.map(when).unwrap_or_default(),
                    deployed_by: l.deployed_by.clone(),
                    approved_by: l.approved_by.join(", "),
                    images: l.images.iter().map(|i| i.reference()).collect(),
                    artifacts: l.artifacts.len(),
                }),
                health: e
                    .health
                    .as_ref()
                    .map(|h| h.state.as_str().to_string())
                    .unwrap_or_default(),
                health_reason: e
                    .health
                    .as_ref()
                    .and_then(|h| h.reason.clone())
                    .unwrap_or_default(),
                workload: e
                    .workload
                    .as_ref()
                    .map(|w| {
                        format!(
                            "{:.1} MiB, {:.1} s CPU, {} restarts",
                            w.memory_bytes as f64 / 1048576.0,
                            w.cpu_seconds,
                            w.restarts
                        )
                    })
                    .unwrap_or_default(),
                pending,
                candidates: releases.iter().map(|r| r.name.clone()).collect(),
            });
        }
        Ok(Html(EnvironmentsPage {
            c: viewer.chrome(Nav::repo(&repo.name, "environments")),
            here: format!("{rp}/environments"),
            repo: repo.name,
            api,
            columns,
        })
        .into_response())
    })
    .await
}

// ---- Deployments ----

#[derive(Debug)]
pub(crate) struct DeploymentRow {
    pub label: String,
    pub path: String,
    pub status: &'static str,
    pub release: String,
    pub kind: String,
    pub by: String,
    pub when: String,
    pub took: String,
    pub reason: String,
}

fn deployment_row(rp: &str, v: &delivery::DeploymentView) -> DeploymentRow {
    let d = &v.deployment;
    DeploymentRow {
        label: v.label.clone(),
        path: format!("{rp}/deployments/{}", seg(&v.label)),
        status: d.status.as_str(),
        release: v.release.clone().unwrap_or_default(),
        kind: format!("{:?}", d.kind).to_lowercase(),
        by: d
            .requested_by
            .clone()
            .unwrap_or_else(|| "ferry (auto)".into()),
        when: when(d.created_at),
        took: took(d.started_at, d.finished_at),
        reason: d.reason.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsPage {
    c: Chrome,
    repo: String,
    api: String,
    environment: String,
    rows: Vec<DeploymentRow>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EnvQuery {
    environment: Option<String>,
}

/// `GET /ui/repos/{repo}/deployments`: the deployment log (the page follows the
/// repository's delivery events).
pub(crate) async fn deployments(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let environment = q.environment.filter(|e| !e.is_empty());
        let Json(list) = delivery::deployments(
            State(ui.app.clone()),
            in_repo(&viewer, &repo)?,
            Query(delivery::DeploymentsQuery {
                environment: environment.clone(),
                limit: Some(200),
            }),
        )
        .await?;
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        Ok(Html(DeploymentsPage {
            c: viewer.chrome(Nav::repo(&repo.name, "deployments")),
            api: format!("/api/v1/repos/{}", seg(&repo.name)),
            rows: list
                .deployments
                .iter()
                .map(|d| deployment_row(&rp, d))
                .collect(),
            repo: repo.name,
            environment: environment.unwrap_or_default(),
        })
        .into_response())
    })
    .await
}

#[derive(Template)]
#[template(path = "deployment.html")]
struct DeploymentPage {
    c: Chrome,
    repo: String,
    api: String,
    here: String,
    row: DeploymentRow,
    waiting: bool,
    release_path: String,
    sha: String,
    changes: ferry_deliver::diff::ReleaseDiff,
    plan: Option<PlanBox>,
    approvals: Vec<(String, String, String, String)>,
    log: String,
}

/// `GET /ui/repos/{repo}/deployments/{deployment}`: what it changes, who decided,
/// and what it did.
pub(crate) async fn deployment(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path((name, key)): Path<(String, String)>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let Json(detail) = delivery::deployment(
            State(ui.app.clone()),
            in_repo(&viewer, &repo)?,
            Path((repo.name.clone(), key)),
        )
        .await?;
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        let d = &detail.deployment.deployment;
        // At most the log's last 256 KiB, read from there.
        let log_path = ui.app.deliverer.deployment_log(d);
        let (cut, log) = tokio::task::spawn_blocking(move || tail_of(&log_path, 256 << 10))
            .await
            .map_err(ApiError::internal)?;
        Ok(Html(DeploymentPage {
            c: viewer.chrome(Nav::repo(&repo.name, "deployments")),
            api: format!(
                "/api/v1/repos/{}/deployments/{}",
                seg(&repo.name),
                seg(&detail.deployment.label)
            ),
            here: format!("{rp}/deployments/{}", seg(&detail.deployment.label)),
            row: deployment_row(&rp, &detail.deployment),
            waiting: d.status == ferry_store::DeploymentStatus::AwaitingApproval,
            release_path: format!("{rp}/releases/{}", seg(&detail.release.name)),
            sha: short(&detail.release.commit_sha),
            plan: detail.infra_plan.as_ref().map(PlanBox::from),
            changes: detail.changes,
            approvals: detail
                .approvals
                .iter()
                .map(|a| {
                    (
                        a.user_name.clone(),
                        a.decision.clone(),
                        a.comment.clone().unwrap_or_default(),
                        when(a.created_at),
                    )
                })
                .collect(),
            log: if cut > 0 {
                format!(
                    "[{cut} earlier bytes not shown]\n{}",
                    super::ansi::strip(&log)
                )
            } else {
                super::ansi::strip(&log)
            },
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

/// The last `n` bytes of a file and how many came before them (none: an empty file).
fn tail_of(path: &std::path::Path, n: u64) -> (u64, Vec<u8>) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (0, Vec::new());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(n);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_ok() {
        let _ = f.take(n).read_to_end(&mut buf);
    }
    (from, buf)
}

// ---- Releases ----

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    c: Chrome,
    repo: String,
    rows: Vec<(String, String, String, String, String, usize, usize)>,
}

/// `GET /ui/repos/{repo}/releases`.
pub(crate) async fn releases(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let Json(list) = delivery::releases(
            State(ui.app.clone()),
            in_repo(&viewer, &repo)?,
            Query(delivery::LimitQuery { limit: Some(200) }),
        )
        .await?;
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        Ok(Html(ReleasesPage {
            c: viewer.chrome(Nav::repo(&repo.name, "releases")),
            rows: list
                .releases
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        format!("{rp}/releases/{}", seg(&r.name)),
                        short(&r.commit_sha),
                        r.git_ref.clone(),
                        when(r.created_at),
                        r.artifacts.len(),
                        r.images.len(),
                    )
                })
                .collect(),
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

#[derive(Template)]
#[template(path = "release.html")]
struct ReleasePage {
    c: Chrome,
    repo: String,
    api: String,
    here: String,
    release: ferry_store::Release,
    run_path: String,
    created: String,
    pruned: String,
    live_in: Vec<String>,
    environments: Vec<String>,
}

/// `GET /ui/repos/{repo}/releases/{release}`: its files and images with digests, and
/// where it is live.
pub(crate) async fn release(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path((name, key)): Path<(String, String)>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let Json(one) = delivery::release(
            State(ui.app.clone()),
            in_repo(&viewer, &repo)?,
            Path((repo.name.clone(), key)),
        )
        .await?;
        let envs = environments_of(&ui, &viewer, &repo).await.ok();
        let live_in = envs
            .iter()
            .flat_map(|l| l.environments.iter())
            .filter(|e| {
                e.live
                    .as_ref()
                    .is_some_and(|l| l.release == one.release.name)
            })
            .map(|e| e.name.clone())
            .collect();
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        let r = one.release;
        Ok(Html(ReleasePage {
            c: viewer.chrome(Nav::repo(&repo.name, "releases")),
            api: format!("/api/v1/repos/{}", seg(&repo.name)),
            here: format!("{rp}/releases/{}", seg(&r.name)),
            run_path: format!("/ui/runs/{}", r.run_id),
            created: when(r.created_at),
            pruned: r.pruned_at.map(when).unwrap_or_default(),
            live_in,
            environments: envs
                .iter()
                .flat_map(|l| l.environments.iter())
                .map(|e| e.name.clone())
                .collect(),
            release: r,
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

// ---- Audit ----

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    repo: String,
    rows: Vec<(String, String, String, String, String)>,
}

/// `GET /ui/repos/{repo}/audit`.
pub(crate) async fn audit(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    page(async {
        let repo = ui.app.store.repository(&name).await?;
        let Json(list) = delivery::audit(
            State(ui.app.clone()),
            in_repo(&viewer, &repo)?,
            Query(delivery::LimitQuery { limit: Some(500) }),
        )
        .await?;
        Ok(Html(AuditPage {
            c: viewer.chrome(Nav::repo(&repo.name, "audit")),
            rows: list
                .audit
                .iter()
                .map(|a| {
                    (
                        when(a.at),
                        a.actor.clone(),
                        a.action.clone(),
                        a.target.clone(),
                        a.detail.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

// ---- Settings ----

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    c: Chrome,
    repo: String,
    api: String,
    here: String,
    variables: Vec<ferry_store::Variable>,
    secrets: Vec<ferry_store::SecretInfo>,
    registries: Vec<ferry_store::RegistryLogin>,
    fork_prs: String,
    url: String,
    hooks: Vec<(String, String)>,
    has_secret: bool,
}

/// `GET /ui/repos/{repo}/settings` (developers; the webhook secret to admins):
/// variables, secret names, registry logins, webhooks.
pub(crate) async fn settings(
    State(ui): State<Ui>,
    viewer: Viewer,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    page(async {
        viewer.caller.require(Role::Developer)?;
        let repo = ui.app.store.repository(&name).await?;
        let all = Query(settings::ScopeQuery { environment: None });
        let Json(variables) =
            settings::variables(State(ui.app.clone()), in_repo(&viewer, &repo)?, all).await?;
        let all = Query(settings::ScopeQuery { environment: None });
        let Json(secrets) =
            settings::secrets(State(ui.app.clone()), in_repo(&viewer, &repo)?, all).await?;
        let Json(registries) =
            settings::registries(State(ui.app.clone()), in_repo(&viewer, &repo)?).await?;
        // The server's public address (`--public-url`), else the one this page came by.
        let origin = match ui.app.notifier.public_url() {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let host = headers
                    .get(axum::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("HOST");
                format!("{}://{host}", if ui.secure { "https" } else { "http" })
            }
        };
        let hooks = ["github", "gitlab", "gitea", "generic"]
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    format!("{origin}/api/v1/hooks/{p}/{}", seg(&repo.name)),
                )
            })
            .collect();
        let rp = format!("/ui/repos/{}", seg(&repo.name));
        Ok(Html(SettingsPage {
            c: viewer.chrome(Nav::repo(&repo.name, "settings")),
            api: format!("/api/v1/repos/{}", seg(&repo.name)),
            here: format!("{rp}/settings"),
            variables: variables.variables,
            secrets: secrets.secrets,
            registries: registries.registries,
            fork_prs: repo.fork_prs.clone(),
            url: repo.url.clone(),
            hooks,
            has_secret: repo.webhook_secret.is_some(),
            repo: repo.name,
        })
        .into_response())
    })
    .await
}

/// `POST /ui/repos/{repo}/webhook-secret` (admins, with the session's CSRF token): the
/// repository's webhook secret, to paste into the forge, shown on a page of its own
/// (never on a page that is read) and recorded in the audit log.
pub(crate) async fn webhook_secret(
    State(ui): State<Ui>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    page(async {
        let Some(secret) = crate::auth::session_secret(&headers) else {
            return Ok(super::to_sign_in("/", None));
        };
        super::check_form(&headers, &secret, &form.csrf)?;
        let (user, _) = ui
            .app
            .store
            .session_by_hash(
                &crate::auth::hash_token(&secret),
                crate::auth::SESSION_IDLE_MS,
            )
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if Role::parse(&user.role) != Some(Role::Admin) {
            return Err(ApiError::forbidden("admin"));
        }
        let repo = ui.app.store.repository(&name).await?;
        let Some(stored) = repo.webhook_secret.as_deref().filter(|v| !v.is_empty()) else {
            return Err(ApiError::not_found("the repository has no webhook secret"));
        };
        let value = crate::api::hooks::open_secret(&ui.app, stored)?;
        ui.app
            .store
            .audit(
                Some(&repo.id),
                &format!("user:{}", user.name),
                "repository.webhook_secret.shown",
                &repo.name,
                None,
            )
            .await?;
        Ok(revealed(
            value,
            &format!("/ui/repos/{}/settings", seg(&repo.name)),
        ))
    })
    .await
}

// ---- Account and users ----

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    c: Chrome,
    tokens: Vec<(String, String, String, String)>,
    sessions: Vec<(String, String, String, bool)>,
}

/// `GET /ui/account`: the user's tokens and web sessions.
pub(crate) async fn account(
    State(ui): State<Ui>,
    viewer: Viewer,
    headers: axum::http::HeaderMap,
) -> Response {
    page(async {
        if viewer.caller.user.id.is_empty() {
            return Ok(super::to_sign_in("/ui/account", None));
        }
        let Json(tokens) = users::tokens(State(ui.app.clone()), need(&viewer)?).await?;
        let Json(sessions) =
            users::sessions(State(ui.app.clone()), need(&viewer)?, headers).await?;
        Ok(Html(AccountPage {
            c: viewer.chrome(Nav::default()),
            tokens: tokens
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.id.clone(),
                        t.name.clone(),
                        when(t.created_at),
                        t.last_used_at.map(when).unwrap_or_default(),
                    )
                })
                .collect(),
            sessions: sessions
                .sessions
                .iter()
                .map(|s| {
                    (
                        s.session.id.clone(),
                        when(s.session.created_at),
                        when(s.session.seen_at),
                        s.current,
                    )
                })
                .collect(),
        })
        .into_response())
    })
    .await
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    users: Vec<(String, String, String)>,
}

/// `GET /ui/users` (admins): users, and a form to add one.
pub(crate) async fn users(State(ui): State<Ui>, viewer: Viewer) -> Response {
    page(async {
        let Json(list) = users::list(State(ui.app.clone()), need(&viewer)?).await?;
        Ok(Html(UsersPage {
            c: viewer.chrome(Nav::default()),
            users: list
                .users
                .iter()
                .map(|u| (u.name.clone(), u.role.clone(), when(u.created_at)))
                .collect(),
        })
        .into_response())
    })
    .await
}
