//! Delivery: releases, environments, deployments (promote, approve, reject, roll back),
//! their logs, and the audit log. The rules live in `ferry_deliver`; these handlers
//! authenticate, call it and answer.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_deliver::deliverer::{Actor, DeliverError, Vote};
use ferry_deliver::diff::ReleaseDiff;
use ferry_deliver::events::DeliveryEvent;
use ferry_store::{
    Approval, AuditEntry, Deployment, DeploymentStatus, EnvironmentHealth, HealthChange, Release,
    ReleaseArtifact, ReleaseImage,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Body;
use super::settings::check_environment;
use crate::auth::{AsAdmin, AsApprover, AsDeveloper, AsViewer, Caller, InRepo, Role};
use crate::error::ErrorCode;
use crate::{ApiError, AppState};

impl From<DeliverError> for ApiError {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::NotFound(m) => ApiError::not_found(m),
            DeliverError::Invalid(m) => ApiError::conflict(ErrorCode::InvalidState, m),
            DeliverError::Conflict(m) => ApiError::conflict(ErrorCode::Conflict, m),
            DeliverError::Forbidden(m) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m)
            }
            DeliverError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// The most entries (default 50, at most 500).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseList {
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseOne {
    pub release: Release,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AuditList {
    pub audit: Vec<AuditEntry>,
}

/// A deployment as the API shows it: with its label and its release's name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub deployment: Deployment,
    /// `ENV#N`, for people.
    pub label: String,
    /// The release's name.
    pub release: Option<String>,
}

impl DeploymentView {
    fn new(deployment: Deployment, release: Option<&Release>) -> Self {
        Self {
            label: label(&deployment),
            release: release.map(|r| r.name.clone()),
            deployment,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentOne {
    pub deployment: DeploymentView,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentList {
    pub deployments: Vec<DeploymentView>,
}

/// What an approver sees.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentDetail {
    pub deployment: DeploymentView,
    pub release: Release,
    pub approvals: Vec<Approval>,
    /// What changes against the release live in the environment.
    pub changes: ReleaseDiff,
    /// The Terraform plan the deployment applies (or applied), for an environment with
    /// `infra:`: an approval is of this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_plan: Option<InfraPlanView>,
}

/// A Terraform plan as an approver sees it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InfraPlanView {
    /// The plan file's SHA-256: what `approve --plan` names.
    pub sha256: String,
    /// What it changes, by resource address.
    pub summary: ferry_deliver::infra::PlanSummary,
    /// The state version it was made against (none: there was no state).
    pub base_version: Option<i64>,
    /// A plan that destroys the environment.
    pub destroy: bool,
    pub created_at: i64,
    pub applied_at: Option<i64>,
}

impl From<ferry_store::InfraPlan> for InfraPlanView {
    fn from(p: ferry_store::InfraPlan) -> Self {
        Self {
            summary: serde_json::from_str(&p.summary).unwrap_or_default(),
            sha256: p.sha256,
            base_version: p.base_version,
            destroy: p.destroy,
            created_at: p.created_at,
            applied_at: p.applied_at,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentsQuery {
    pub environment: Option<String>,
    /// The most entries (default 50, at most 500).
    pub limit: Option<i64>,
}

/// `POST …/deployments`: promote a release.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The release's name or id.
    pub release: String,
    pub environment: String,
}

/// `POST …/approve` and `…/reject`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The Terraform plan decided on (its SHA-256, or at least its first 12 hex
    /// digits): the decision is refused if the deployment applies another plan now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// `POST …/environments/{environment}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The release to go back to (default: the one live before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// How a release enters an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Auto,
    Manual,
    Approval,
}

/// What runs in an environment now.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LiveRelease {
    /// `ENV#N` of the deployment that made it live.
    pub deployment: String,
    pub release: String,
    pub commit_sha: String,
    pub artifacts: Vec<ReleaseArtifact>,
    pub images: Vec<ReleaseImage>,
    /// When it went live (milliseconds since the epoch).
    pub since: Option<i64>,
    pub deployed_by: String,
    pub approved_by: Vec<String>,
}

/// A deployment on its way.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Pending {
    pub deployment: String,
    pub status: DeploymentStatus,
}

/// One environment, in promotion order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentView {
    pub name: String,
    /// The environment a release must be live in first.
    pub after: Option<String>,
    pub policy: PolicyKind,
    pub live: Option<LiveRelease>,
    /// The live release's health, as the health watch last saw it (none: not watched,
    /// or nothing live).
    pub health: Option<EnvironmentHealth>,
    /// What the live release's workload uses now (process target).
    pub workload: Option<ferry_deliver::supervisor::Workload>,
    pub pending: Vec<Pending>,
}

/// `GET …/environments/{environment}/health`: the health now and its changes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthView {
    pub environment: String,
    /// The live release's health now (none: not watched, or nothing live).
    pub health: Option<EnvironmentHealth>,
    /// Changes, newest first.
    pub history: Vec<HealthChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

fn actor(c: &Caller) -> Actor {
    Actor {
        user_id: c.user.id.clone(),
        name: c.user.name.clone(),
        may_approve: c.role >= Role::Approver,
        forge: Vec::new(),
        groups: Vec::new(),
    }
}

/// `ENV#N` for people.
fn label(d: &Deployment) -> String {
    format!("{}#{}", d.environment, d.number)
}

/// A deployment with its release's name.
async fn view(s: &AppState, d: Deployment) -> DeploymentView {
    let release = s.store.release(&d.repository_id, &d.release_id).await.ok();
    DeploymentView::new(d, release.as_ref())
}

pub(crate) async fn releases(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<ReleaseList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(ReleaseList {
        releases: s.store.releases(&repo.id, limit).await?,
    }))
}

pub(crate) async fn release(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Path((_, release)): Path<(String, String)>,
) -> Result<Json<ReleaseOne>, ApiError> {
    Ok(Json(ReleaseOne {
        release: s.store.release(&repo.id, &release).await?,
    }))
}

pub(crate) async fn audit(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(AuditList {
        audit: s.store.audit_log(Some(&repo.id), limit).await?,
    }))
}

pub(crate) async fn environments(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
) -> Result<Json<EnvironmentList>, ApiError> {
    // The environments of the repository's rules (its default branch), in order.
    let d = s.deliverer.rules(&repo.id).await?;
    // One read for every environment, so that the view is of one moment.
    let current = s.store.current_deployments(&repo.id).await?;
    let healths = s.store.healths(Some(&repo.id)).await?;

    let mut environments = Vec::new();
    for env in &d.environments {
        let here = || current.iter().filter(|x| x.environment == env.name);
        let workload = match here().find(|x| x.status == DeploymentStatus::Live) {
            Some(live) => s.deliverer.workload(live).await,
            None => None,
        };
        let live = match here().find(|x| x.status == DeploymentStatus::Live) {
            Some(live) => {
                let release = s.store.release(&repo.id, &live.release_id).await?;
                let approvals = s.store.approvals(&live.id).await?;
                Some(LiveRelease {
                    deployment: label(live),
                    release: release.name,
                    commit_sha: release.commit_sha,
                    artifacts: release.artifacts,
                    images: release.images,
                    since: live.finished_at,
                    deployed_by: live
                        .requested_by
                        .clone()
                        .unwrap_or_else(|| "ferry (auto)".into()),
                    approved_by: approvals
                        .into_iter()
                        .filter(|a| a.decision == "approve")
                        .map(|a| a.user_name)
                        .collect(),
                })
            }
            None => None,
        };
        // Newest first, as the deployments listing shows them.
        let pending = here()
            .rev()
            .filter(|x| x.status != DeploymentStatus::Live)
            .map(|x| Pending {
                deployment: label(x),
                status: x.status,
            })
            .collect();
        environments.push(EnvironmentView {
            name: env.name.clone(),
            after: env.after.as_ref().map(|a| a.value.clone()),
            policy: match &env.policy {
                ferry_config::delivery::Policy::Auto => PolicyKind::Auto,
                ferry_config::delivery::Policy::Manual => PolicyKind::Manual,
                ferry_config::delivery::Policy::Approval(_) => PolicyKind::Approval,
            },
            health: healths.iter().find(|h| h.environment == env.name).cloned(),
            workload,
            live,
            pending,
        });
    }
    Ok(Json(EnvironmentList { environments }))
}

pub(crate) async fn deployments(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<DeploymentsQuery>,
) -> Result<Json<DeploymentList>, ApiError> {
    let list = s
        .store
        .deployments(
            &repo.id,
            q.environment.as_deref(),
            q.limit.unwrap_or(50).clamp(1, 500),
        )
        .await?;
    let mut deployments = Vec::new();
    for d in list {
        deployments.push(view(&s, d).await);
    }
    Ok(Json(DeploymentList { deployments }))
}

pub(crate) async fn promote(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Body(body): Body<Promote>,
) -> Result<(StatusCode, Json<DeploymentOne>), ApiError> {
    let d = s
        .deliverer
        .promote(&repo.id, &body.release, &body.environment, &actor(&caller))
        .await?;
    let deployment = view(&s, d).await;
    Ok((StatusCode::CREATED, Json(DeploymentOne { deployment })))
}

pub(crate) async fn deployment(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Path((_, key)): Path<(String, String)>,
) -> Result<Json<DeploymentDetail>, ApiError> {
    let d = s.store.find_deployment(&repo.id, &key).await?;
    let release = s.store.release(&repo.id, &d.release_id).await?;
    let approvals = s.store.approvals(&d.id).await?;
    let changes =
        ferry_deliver::diff::release_diff(&s.store, &s.mirror_path(&repo.id), &d, &release).await?;
    let infra_plan = s.store.infra_plan(&d.id).await?.map(|p| p.info.into());
    Ok(Json(DeploymentDetail {
        deployment: DeploymentView::new(d, Some(&release)),
        release,
        approvals,
        changes,
        infra_plan,
    }))
}

/// `POST …/approve` (`APPROVE == true`) and `…/reject`.
pub(crate) async fn decide<const APPROVE: bool>(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsApprover>,
    Path((_, key)): Path<(String, String)>,
    Body(body): Body<Decision>,
) -> Result<Json<DeploymentOne>, ApiError> {
    let groups = s.store.groups_of(&caller.user.id).await?;
    let mut a = actor(&caller);
    a.forge = s.store.forge_identities_of(&caller.user.id).await?;
    let comment = body.comment.as_deref();
    let vote = if APPROVE { Vote::Approve } else { Vote::Reject };
    let d = s
        .deliverer
        .decide_on_plan(
            &repo.id,
            &key,
            &a,
            &groups,
            comment,
            vote,
            body.plan.as_deref(),
        )
        .await?;
    Ok(Json(DeploymentOne {
        deployment: view(&s, d).await,
    }))
}

/// `POST …/environments/{environment}/destroy`.
pub(crate) async fn destroy(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Path((_, env)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeploymentOne>), ApiError> {
    let d = s.deliverer.destroy(&repo.id, &env, &actor(&caller)).await?;
    let deployment = view(&s, d).await;
    Ok((StatusCode::CREATED, Json(DeploymentOne { deployment })))
}

pub(crate) async fn rollback(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsDeveloper>,
    Path((_, env)): Path<(String, String)>,
    Body(body): Body<Rollback>,
) -> Result<(StatusCode, Json<DeploymentOne>), ApiError> {
    let mut a = actor(&caller);
    a.groups = s.store.groups_of(&caller.user.id).await?;
    let d = s
        .deliverer
        .rollback(&repo.id, &env, body.release.as_deref(), &a)
        .await?;
    let deployment = view(&s, d).await;
    Ok((StatusCode::CREATED, Json(DeploymentOne { deployment })))
}

async fn text_file(path: std::path::PathBuf) -> Response {
    let data = tokio::fs::read(&path).await.unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        data,
    )
        .into_response()
}

pub(crate) async fn deployment_log(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Path((_, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let d = s.store.find_deployment(&repo.id, &key).await?;
    Ok(text_file(s.deliverer.deployment_log(&d)).await)
}

pub(crate) async fn output(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Path((_, env)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_environment(&env)?;
    Ok(text_file(s.deliverer.output_log(&repo.id, &env)).await)
}

pub use ferry_deliver::dora::{Dora, Spread};

/// `GET …/dora`: which environment, over how long.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DoraQuery {
    /// One environment (default: every environment, summed).
    pub environment: Option<String>,
    /// How far back the window starts: a duration such as `30d`, `12h` (default `30d`).
    pub since: Option<String>,
}

/// DORA's four keys of a repository over a window (definitions: docs/delivery.md).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DoraView {
    /// The environment (none: every environment).
    pub environment: Option<String>,
    #[serde(flatten)]
    pub dora: ferry_deliver::dora::Dora,
}

pub(crate) async fn dora(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<DoraQuery>,
) -> Result<Json<DoraView>, ApiError> {
    if let Some(env) = &q.environment {
        check_environment(env)?;
        // An environment the rules name, or one with deployments (since removed from
        // the rules): anything else is a typo, not an environment with no figures.
        let deployed = !s
            .store
            .deployments(&repo.id, Some(env), 1)
            .await?
            .is_empty();
        if !deployed {
            let names: Vec<String> = match s.deliverer.rules(&repo.id).await {
                Ok(rules) => rules.environments.iter().map(|e| e.name.clone()).collect(),
                Err(_) => Vec::new(),
            };
            if !names.contains(env) {
                return Err(ApiError::not_found(if names.is_empty() {
                    format!(
                        "there is no environment `{env}`: nothing was deployed to it and the default branch names none"
                    )
                } else {
                    format!(
                        "there is no environment `{env}`; the default branch names: {}",
                        names.join(", ")
                    )
                }));
            }
        }
    }
    let window =
        ferry_config::duration::parse_duration_up_to(q.since.as_deref().unwrap_or("30d"), 3660)
            .map_err(|e| ApiError::invalid(format!("since: {e}")))?;
    let until = ferry_store::now_ms();
    let since = until.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    let dora = ferry_deliver::dora::of_repository(
        &s.store,
        &s.mirror_path(&repo.id),
        &repo.id,
        q.environment.as_deref(),
        since,
        until,
    )
    .await?;
    Ok(Json(DoraView {
        environment: q.environment,
        dora,
    }))
}

/// One notification with its attempts (oldest first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NotificationView {
    #[serde(flatten)]
    pub notification: ferry_store::Notification,
    pub attempts: Vec<ferry_store::Attempt>,
}

/// `GET …/notifications`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NotificationList {
    pub notifications: Vec<NotificationView>,
}

pub(crate) async fn notifications(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<NotificationList>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let notifications = s
        .store
        .notifications(&repo.id, limit)
        .await?
        .into_iter()
        .map(|(notification, attempts)| NotificationView {
            notification,
            attempts,
        })
        .collect();
    Ok(Json(NotificationList { notifications }))
}

pub(crate) async fn health(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
    Path((_, env)): Path<(String, String)>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<HealthView>, ApiError> {
    check_environment(&env)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let health = s
        .store
        .healths(Some(&repo.id))
        .await?
        .into_iter()
        .find(|h| h.environment == env);
    let history = s.store.health_changes(&repo.id, &env, limit).await?;
    Ok(Json(HealthView {
        environment: env,
        health,
        history,
    }))
}

/// Server-Sent Events of a repository's delivery: first its newest deployments as they
/// are (`deployment` events, oldest first), then every change as it happens
/// (`deployment`, `approval`; `lagged` when the client fell too far behind and should
/// read the state again). Subscribed before reading the store, so nothing in
/// between is missed (a change may arrive twice; the later one is current). Ends when
/// the client goes away or the server stops.
pub(crate) async fn events(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsViewer>,
) -> Result<impl IntoResponse, ApiError> {
    // Counted with the runs' streams (see `live`); a client that takes nothing is let go.
    let place = s
        .subscribers
        .join(&format!("repo:{}", repo.id), &caller.user.id)
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, why))?;
    let mut rx = s.deliverer.subscribe();
    let stored = s.store.deployments(&repo.id, None, 50).await?;
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(256);
    let stopping = s.stopping.clone();
    tokio::spawn(async move {
        let _place = place;
        let tx = crate::live::Slow(tx);
        let send = |e: &DeliveryEvent| {
            let kind = match e {
                DeliveryEvent::Deployment { .. } => "deployment",
                DeliveryEvent::Approval { .. } => "approval",
                DeliveryEvent::Health { .. } => "health",
            };
            Ok(Event::default()
                .event(kind)
                .data(serde_json::to_string(e).unwrap_or_default()))
        };
        for deployment in stored.into_iter().rev() {
            if tx
                .send(send(&DeliveryEvent::Deployment { deployment }))
                .await
                .is_err()
            {
                return;
            }
        }
        // What was stored has been sent: from here on, every event is a change.
        let synced = Ok(Event::default().event("synced").data("{}"));
        if tx.send(synced).await.is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = tx.0.closed() => return,
                _ = stopping.cancelled() => return,
            };
            match event {
                Ok(e) if e.repository_id() == repo.id => {
                    if tx.send(send(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to keep up: the client reads the current state again.
                    let lagged = Ok(Event::default().event("lagged").data("{}"));
                    if tx.send(lagged).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(out)).keep_alive(KeepAlive::default()))
}

/// `GET …/environments/{environment}/infra/states`: every version of the
/// environment's Terraform state, newest first (never their content).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InfraVersionList {
    pub versions: Vec<ferry_store::InfraVersion>,
}

pub(crate) async fn infra_versions(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsDeveloper>,
    Path((_, env)): Path<(String, String)>,
) -> Result<Json<InfraVersionList>, ApiError> {
    Ok(Json(InfraVersionList {
        versions: s.store.infra_versions(&repo.id, &env).await?,
    }))
}

/// `GET …/environments/{environment}/infra/states/{version}` (admins: a state holds
/// what Terraform knows, secrets included): one version's state as Terraform wrote it
/// (`latest`: the newest); each read is in the audit log.
pub(crate) async fn infra_state(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Path((_, env, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let wanted = match version.as_str() {
        "latest" => None,
        v => Some(v.parse::<i64>().map_err(|_| {
            ApiError::invalid(format!("`{v}` is not a version: a number, or `latest`"))
        })?),
    };
    let state = s
        .store
        .infra_state(&repo.id, &env, wanted)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{env} has no such Terraform state")))?;
    if state.info.deleted {
        return Err(ApiError::not_found(format!(
            "{env}'s Terraform state was deleted at version {}",
            state.info.version
        )));
    }
    let plain = s
        .key
        .open(&state.sealed, crate::infra::CONTEXT)
        .map_err(ApiError::internal)?;
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            "infra.state.read",
            &format!("{env} v{}", state.info.version),
            None,
        )
        .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        plain,
    )
        .into_response())
}
