//! The server's side of delivery: sealing a release when a run succeeds.

use ferry_deliver::cas::Cas;
use ferry_plan::Plan;

use crate::AppState;

impl AppState {
    /// The content-addressed store of release files.
    pub fn cas(&self) -> Cas {
        Cas::new(self.config.data_dir.join("cas"))
    }
}

/// Webhook secrets are stored sealed, like every other secret: `sealed:<hex>`.
pub(crate) const SEALED: &str = "sealed:";
const WEBHOOK_CONTEXT: &str = "webhook";

/// The stored form of a webhook secret.
pub(crate) fn seal_with(key: &ferry_store::SecretKey, secret: &str) -> ferry_store::Result<String> {
    Ok(format!(
        "{SEALED}{}",
        key.seal(secret.as_bytes(), WEBHOOK_CONTEXT)?
    ))
}

pub(crate) fn seal_webhook_secret(
    s: &AppState,
    secret: &str,
) -> Result<String, crate::error::ApiError> {
    Ok(seal_with(&s.key, secret)?)
}

pub(crate) fn open_webhook_secret(
    s: &AppState,
    stored: &str,
) -> Result<String, crate::error::ApiError> {
    let Some(sealed) = stored.strip_prefix(SEALED) else {
        return Ok(stored.to_string()); // stored before secrets were sealed
    };
    let plain = s.key.open(sealed, WEBHOOK_CONTEXT)?;
    String::from_utf8(plain).map_err(crate::error::ApiError::internal)
}

/// After a successful run: seal its release when the run is releasable.
pub(crate) async fn after_success(state: &AppState, run_id: &str, plan: &Plan) {
    let result = async {
        let run = state
            .store
            .run_by_id(run_id)
            .await
            .map_err(|e| e.to_string())?;
        let repo = state
            .store
            .repository(&run.repository_id)
            .await
            .map_err(|e| e.to_string())?;
        let default_branch = repo.default_branch.clone().unwrap_or_else(|| "main".into());
        let sealed =
            ferry_deliver::seal::seal(&state.store, &state.cas(), &run, plan, &default_branch)
                .await;
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                // Recorded where people look: the audit log of the repository.
                let _ = state
                    .store
                    .audit(
                        Some(&run.repository_id),
                        "ferry",
                        "release.seal_failed",
                        &format!("run {}", run.number),
                        Some(&e),
                    )
                    .await;
                return Err(e);
            }
        };
        match sealed {
            Ok(release) => {
                tracing::info!("run {} sealed release {}", run.number, release.name);
                let detail = format!(
                    "commit {}, {} artifact(s), {} image(s)",
                    release.commit_sha,
                    release.artifacts.len(),
                    release.images.len()
                );
                state
                    .store
                    .audit(
                        Some(&run.repository_id),
                        "ferry",
                        "release.seal",
                        &release.name,
                        Some(&detail),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                state
                    .deliverer
                    .on_release(&release)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(why) => tracing::info!("run {} seals no release: {why}", run.number),
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!("sealing the release of run {run_id} failed: {e}");
    }
}

// ---- API handlers (routes are listed in api.rs) ----

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_deliver::deliverer::{Actor, DeliverError, Deliverer, delivery_of};
use ferry_store::{Deployment, DeploymentStatus, Release};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Body;
use crate::auth::{AsAdmin, AsApprover, AsDeveloper, AsViewer, Caller, Need, Role};
use crate::error::ApiError;

impl From<DeliverError> for ApiError {
    fn from(e: DeliverError) -> Self {
        match e {
            DeliverError::NotFound(m) => ApiError::not_found(m),
            DeliverError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "invalid_state", m),
            DeliverError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            DeliverError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            DeliverError::Store(e) => e.into(),
        }
    }
}

fn deliverer(s: &AppState) -> Result<&Deliverer, ApiError> {
    Ok(&s.deliverer)
}

fn actor(c: &Caller) -> Actor {
    Actor {
        user_id: c.user.id.clone(),
        name: c.user.name.clone(),
        may_approve: c.role >= Role::Approver,
    }
}

/// `ENV#N` for people.
fn label(d: &Deployment) -> String {
    format!("{}#{}", d.environment, d.number)
}

/// A deployment as the API shows it: with its label and its release's name.
fn view(d: &Deployment, release: Option<&Release>) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["label"] = json!(label(d));
    v["release"] = json!(release.map(|r| r.name.clone()));
    v
}

pub(crate) async fn environments(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    // The environments of the newest release's configuration, in order.
    let newest = s.store.releases(&repo.id, 1).await?;
    let Some(newest) = newest.first() else {
        return Ok(Json(json!({ "environments": [] })));
    };
    let d = delivery_of(newest)?;
    let mut out = Vec::new();
    for env in &d.environments {
        let live = s.store.live_deployment(&repo.id, &env.name).await?;
        let mut entry = json!({
            "name": env.name,
            "after": env.after.as_ref().map(|a| a.value.clone()),
            "policy": match &env.policy {
                ferry_config::delivery::Policy::Auto => "auto",
                ferry_config::delivery::Policy::Manual => "manual",
                ferry_config::delivery::Policy::Approval(_) => "approval",
            },
            "live": Value::Null,
        });
        if let Some(live) = live {
            let release = s.store.release(&repo.id, &live.release_id).await?;
            let approvals = s.store.approvals(&live.id).await?;
            entry["live"] = json!({
                "deployment": label(&live),
                "release": release.name,
                "commit_sha": release.commit_sha,
                "artifacts": release.artifacts,
                "images": release.images,
                "since": live.finished_at,
                "deployed_by": live.requested_by.clone().unwrap_or_else(|| "ferry (auto)".into()),
                "approved_by": approvals.iter().filter(|a| a.decision == "approve").map(|a| a.user_name.clone()).collect::<Vec<_>>(),
            });
        }
        let pending: Vec<Value> = s
            .store
            .deployments(&repo.id, Some(&env.name), 50)
            .await?
            .into_iter()
            .filter(|x| {
                matches!(
                    x.status,
                    DeploymentStatus::Queued
                        | DeploymentStatus::AwaitingApproval
                        | DeploymentStatus::Deploying
                        | DeploymentStatus::Verifying
                )
            })
            .map(|x| json!({ "deployment": label(&x), "status": x.status }))
            .collect();
        entry["pending"] = json!(pending);
        out.push(entry);
    }
    Ok(Json(json!({ "environments": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeploymentsQuery {
    environment: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn deployments(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
    Query(q): Query<DeploymentsQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let list = s
        .store
        .deployments(
            &repo.id,
            q.environment.as_deref(),
            q.limit.unwrap_or(50).clamp(1, 500),
        )
        .await?;
    let mut out = Vec::new();
    for d in &list {
        let release = s.store.release(&repo.id, &d.release_id).await.ok();
        out.push(view(d, release.as_ref()));
    }
    Ok(Json(json!({ "deployments": out })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteBody {
    release: String,
    environment: String,
}

pub(crate) async fn promote(
    State(s): State<AppState>,
    Need(caller, _): Need<AsDeveloper>,
    Path(repo): Path<String>,
    Body(body): Body<PromoteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let repo = s.store.repository(&repo).await?;
    let d = deliverer(&s)?
        .promote(&repo.id, &body.release, &body.environment, &actor(&caller))
        .await?;
    let release = s.store.release(&repo.id, &d.release_id).await.ok();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "deployment": view(&d, release.as_ref()) })),
    ))
}

pub(crate) async fn deployment(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((repo, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let d = s.store.find_deployment(&repo.id, &key).await?;
    let release = s.store.release(&repo.id, &d.release_id).await?;
    let approvals = s.store.approvals(&d.id).await?;
    let changes =
        ferry_deliver::diff::release_diff(&s.store, &s.mirror_path(&repo.id), &d, &release).await?;
    Ok(Json(json!({
        "deployment": view(&d, Some(&release)),
        "release": release,
        "approvals": approvals,
        "changes": changes,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    comment: Option<String>,
}

async fn decide(
    s: &AppState,
    caller: &Caller,
    repo: &str,
    key: &str,
    comment: Option<String>,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(repo).await?;
    let groups = s.store.groups_of(&caller.user.id).await?;
    let deliver = deliverer(s)?;
    let a = actor(caller);
    let d = if approve {
        deliver
            .approve(&repo.id, key, &a, &groups, comment.as_deref())
            .await?
    } else {
        deliver
            .reject(&repo.id, key, &a, &groups, comment.as_deref())
            .await?
    };
    let release = s.store.release(&repo.id, &d.release_id).await.ok();
    Ok(Json(json!({ "deployment": view(&d, release.as_ref()) })))
}

pub(crate) async fn approve(
    State(s): State<AppState>,
    Need(caller, _): Need<AsApprover>,
    Path((repo, key)): Path<(String, String)>,
    Body(body): Body<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    decide(&s, &caller, &repo, &key, body.comment, true).await
}

pub(crate) async fn reject(
    State(s): State<AppState>,
    Need(caller, _): Need<AsApprover>,
    Path((repo, key)): Path<(String, String)>,
    Body(body): Body<DecisionBody>,
) -> Result<Json<Value>, ApiError> {
    decide(&s, &caller, &repo, &key, body.comment, false).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackBody {
    release: Option<String>,
}

pub(crate) async fn rollback(
    State(s): State<AppState>,
    Need(caller, _): Need<AsDeveloper>,
    Path((repo, env)): Path<(String, String)>,
    Body(body): Body<RollbackBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let repo = s.store.repository(&repo).await?;
    let d = deliverer(&s)?
        .rollback(&repo.id, &env, body.release.as_deref(), &actor(&caller))
        .await?;
    let release = s.store.release(&repo.id, &d.release_id).await.ok();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "deployment": view(&d, release.as_ref()) })),
    ))
}

async fn text_file(path: std::path::PathBuf) -> Result<Response, ApiError> {
    let data = tokio::fs::read(&path).await.unwrap_or_default();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        data,
    )
        .into_response())
}

pub(crate) async fn deployment_log(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((repo, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let d = s.store.find_deployment(&repo.id, &key).await?;
    text_file(deliverer(&s)?.deployment_log(&d)).await
}

pub(crate) async fn output(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((repo, env)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_environment(&env)?;
    let repo = s.store.repository(&repo).await?;
    text_file(deliverer(&s)?.output_log(&repo.id, &env)).await
}

/// An environment named in a request must be a valid name (it becomes part of paths).
fn check_environment(env: &str) -> Result<(), ApiError> {
    if env.is_empty() || ferry_config::is_environment_name(env) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{env}` is not an environment name"
        )))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopeQuery {
    /// An environment; none: the repository's own.
    environment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueBody {
    value: String,
    environment: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if ferry_config::is_env_name(name) && !name.starts_with("FERRY_") {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{name}` is not a variable name: letters, digits and `_`, not starting with a digit or FERRY_"
        )))
    }
}

pub(crate) async fn variables(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(repo): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    Ok(Json(
        json!({ "variables": s.store.variables(&repo.id, q.environment.as_deref()).await? }),
    ))
}

/// How the audit log names a variable or secret: `ENV/NAME`, or `NAME` for the
/// repository's own.
fn scoped(env: &str, name: &str) -> String {
    if env.is_empty() {
        name.to_string()
    } else {
        format!("{env}/{name}")
    }
}

/// Which of the two kinds of configuration a request is about.
#[derive(Clone, Copy)]
enum Setting {
    Variable,
    Secret,
}

impl Setting {
    fn word(self) -> &'static str {
        match self {
            Setting::Variable => "variable",
            Setting::Secret => "secret",
        }
    }
}

async fn set_setting(
    s: AppState,
    caller: Caller,
    repo: String,
    name: String,
    body: ValueBody,
    kind: Setting,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let env = body.environment.unwrap_or_default();
    check_environment(&env)?;
    let repo = s.store.repository(&repo).await?;
    let by = caller.label();
    match kind {
        Setting::Variable => {
            s.store
                .set_variable(&repo.id, &env, &name, &body.value, Some(&by))
                .await?
        }
        Setting::Secret => {
            s.store
                .set_secret(
                    &s.key,
                    &repo.id,
                    &env,
                    &name,
                    body.value.as_bytes(),
                    Some(&by),
                )
                .await?
        }
    }
    let action = format!("{}.set", kind.word());
    s.store
        .audit(Some(&repo.id), &by, &action, &scoped(&env, &name), None)
        .await?;
    Ok(Json(
        json!({ kind.word(): { "environment": env, "name": name } }),
    ))
}

async fn delete_setting(
    s: AppState,
    caller: Caller,
    repo: String,
    name: String,
    env: String,
    kind: Setting,
) -> Result<Json<Value>, ApiError> {
    check_environment(&env)?;
    let repo = s.store.repository(&repo).await?;
    let removed = match kind {
        Setting::Variable => s.store.delete_variable(&repo.id, &env, &name).await?,
        Setting::Secret => s.store.delete_secret(&repo.id, &env, &name).await?,
    };
    if !removed {
        return Err(ApiError::not_found(format!(
            "there is no {} `{name}` here",
            kind.word()
        )));
    }
    let action = format!("{}.delete", kind.word());
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            &action,
            &scoped(&env, &name),
            None,
        )
        .await?;
    Ok(Json(json!({ "removed": name })))
}

pub(crate) async fn set_variable(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path((repo, name)): Path<(String, String)>,
    Body(body): Body<ValueBody>,
) -> Result<Json<Value>, ApiError> {
    set_setting(s, caller, repo, name, body, Setting::Variable).await
}

pub(crate) async fn delete_variable(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path((repo, name)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let env = q.environment.unwrap_or_default();
    delete_setting(s, caller, repo, name, env, Setting::Variable).await
}

pub(crate) async fn secrets(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(repo): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    Ok(Json(
        json!({ "secrets": s.store.secret_names(&repo.id, q.environment.as_deref()).await? }),
    ))
}

pub(crate) async fn set_secret(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path((repo, name)): Path<(String, String)>,
    Body(body): Body<ValueBody>,
) -> Result<Json<Value>, ApiError> {
    set_setting(s, caller, repo, name, body, Setting::Secret).await
}

pub(crate) async fn delete_secret(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path((repo, name)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let env = q.environment.unwrap_or_default();
    delete_setting(s, caller, repo, name, env, Setting::Secret).await
}
