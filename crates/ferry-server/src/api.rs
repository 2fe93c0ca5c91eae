//! The REST API under `/api/v1`. Handlers authenticate, validate, call the domain and
//! map errors; nothing else.

use std::io::{Read, Seek, SeekFrom};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use ferry_plan::EventKind;

use crate::delivery;
use ferry_store::{NewRepository, RunFilter, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{
    AsAdmin, AsDeveloper, AsViewer, Need, Role, create_user_with_token, hash_token, new_token,
};
use crate::trigger::{TriggerError, TriggerRequest, trigger};
use crate::webhook::{self, Outcome, Provider};
use crate::{ApiError, AppState, queue};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Authenticated by the delivery's signature, not a token.
    Signed,
    Token(Role),
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
    }
}

const VIEWER: Access = Access::Token(Role::Viewer);
const DEVELOPER: Access = Access::Token(Role::Developer);
const APPROVER: Access = Access::Token(Role::Approver);
const ADMIN: Access = Access::Token(Role::Admin);

/// Every route, who may call it and what it does. The router and the OpenAPI document
/// are both built from this list, so neither can miss a route; a test walks it without
/// a token and with too weak ones.
pub const ROUTES: &[Route] = &[
    r(
        "GET",
        "/api/v1/health",
        Access::Public,
        "Health and version",
    ),
    r(
        "GET",
        "/api/v1/openapi.json",
        Access::Public,
        "This API's OpenAPI document",
    ),
    r(
        "POST",
        "/api/v1/hooks/{provider}/{repo}",
        Access::Signed,
        "A webhook delivery from GitHub, GitLab, Gitea/Forgejo or a generic sender",
    ),
    r("GET", "/api/v1/repos", VIEWER, "List repositories"),
    r("POST", "/api/v1/repos", ADMIN, "Register a repository"),
    r("GET", "/api/v1/repos/{repo}", VIEWER, "One repository"),
    r(
        "POST",
        "/api/v1/repos/{repo}/runs",
        DEVELOPER,
        "Trigger a run of a ref",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/caches",
        VIEWER,
        "A repository's `cache:` entries",
    ),
    r(
        "DELETE",
        "/api/v1/repos/{repo}/caches",
        DEVELOPER,
        "Remove a repository's cache entries (all, or `?key=`)",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/registries",
        DEVELOPER,
        "A repository's registry logins (hosts and users, never passwords)",
    ),
    r(
        "PUT",
        "/api/v1/repos/{repo}/registries/{host}",
        ADMIN,
        "Set the repository's login on a registry (the password is sealed)",
    ),
    r(
        "DELETE",
        "/api/v1/repos/{repo}/registries/{host}",
        ADMIN,
        "Remove the repository's login on a registry",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/releases",
        VIEWER,
        "A repository's releases, newest first",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/releases/{release}",
        VIEWER,
        "One release with its artifact and image digests",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/audit",
        VIEWER,
        "The repository's audit log, newest first",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/environments",
        VIEWER,
        "Each environment with its live release, since when, who deployed and approved it",
    ),
    r(
        "POST",
        "/api/v1/repos/{repo}/environments/{environment}/rollback",
        DEVELOPER,
        "Deploy an earlier release again (`release`, default: the one live before)",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/environments/{environment}/output",
        VIEWER,
        "The output of the environment's process (process target)",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/deployments",
        VIEWER,
        "Deployments, newest first (`?environment=`)",
    ),
    r(
        "POST",
        "/api/v1/repos/{repo}/deployments",
        DEVELOPER,
        "Promote a release to an environment",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/deployments/{deployment}",
        VIEWER,
        "A deployment with its approvals and what changes against the live release",
    ),
    r(
        "POST",
        "/api/v1/repos/{repo}/deployments/{deployment}/approve",
        APPROVER,
        "Approve a deployment that waits for approval",
    ),
    r(
        "POST",
        "/api/v1/repos/{repo}/deployments/{deployment}/reject",
        APPROVER,
        "Reject a deployment that waits for approval",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/deployments/{deployment}/log",
        VIEWER,
        "What the deployment did, as text",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/variables",
        DEVELOPER,
        "Variables of the repository and (`?environment=`) an environment",
    ),
    r(
        "PUT",
        "/api/v1/repos/{repo}/variables/{name}",
        ADMIN,
        "Set a variable (`{value, environment?}`)",
    ),
    r(
        "DELETE",
        "/api/v1/repos/{repo}/variables/{name}",
        ADMIN,
        "Remove a variable (`?environment=`)",
    ),
    r(
        "GET",
        "/api/v1/repos/{repo}/secrets",
        DEVELOPER,
        "Names and update times of secrets (never values)",
    ),
    r(
        "PUT",
        "/api/v1/repos/{repo}/secrets/{name}",
        ADMIN,
        "Set a secret (`{value, environment?}`; sealed, never returned)",
    ),
    r(
        "DELETE",
        "/api/v1/repos/{repo}/secrets/{name}",
        ADMIN,
        "Remove a secret (`?environment=`)",
    ),
    r("GET", "/api/v1/runs", VIEWER, "List runs (filters, cursor)"),
    r(
        "GET",
        "/api/v1/runs/{run}",
        VIEWER,
        "A run with its plan, jobs and steps",
    ),
    r(
        "GET",
        "/api/v1/runs/{run}/jobs/{job}/log",
        VIEWER,
        "A byte range of a job's log",
    ),
    r(
        "POST",
        "/api/v1/runs/{run}/cancel",
        DEVELOPER,
        "Cancel a run",
    ),
    r(
        "GET",
        "/api/v1/runs/{run}/events",
        VIEWER,
        "Live updates of a run (Server-Sent Events)",
    ),
    r(
        "POST",
        "/api/v1/runs/{run}/rerun",
        DEVELOPER,
        "Run a finished run again, whole or its failed jobs",
    ),
    r("GET", "/api/v1/users", ADMIN, "List users"),
    r(
        "POST",
        "/api/v1/users",
        ADMIN,
        "Create a user and a first token",
    ),
    r("GET", "/api/v1/tokens", VIEWER, "The caller's tokens"),
    r(
        "POST",
        "/api/v1/tokens",
        VIEWER,
        "Create a token for the caller",
    ),
    r("DELETE", "/api/v1/tokens/{token}", VIEWER, "Revoke a token"),
];

/// The handler of one route of [`ROUTES`].
fn handler(route: &Route) -> MethodRouter<AppState> {
    match (route.method, route.path) {
        ("GET", "/api/v1/health") => get(health),
        ("GET", "/api/v1/openapi.json") => get(openapi),
        ("POST", "/api/v1/hooks/{provider}/{repo}") => {
            post(webhook).layer(axum::extract::DefaultBodyLimit::max(WEBHOOK_LIMIT))
        }
        ("GET", "/api/v1/repos") => get(list_repos),
        ("POST", "/api/v1/repos") => post(create_repo),
        ("GET", "/api/v1/repos/{repo}") => get(get_repo),
        ("POST", "/api/v1/repos/{repo}/runs") => post(trigger_run),
        ("GET", "/api/v1/repos/{repo}/caches") => get(list_caches),
        ("DELETE", "/api/v1/repos/{repo}/caches") => delete(clear_caches),
        ("GET", "/api/v1/repos/{repo}/registries") => get(list_registries),
        ("PUT", "/api/v1/repos/{repo}/registries/{host}") => put(set_registry),
        ("DELETE", "/api/v1/repos/{repo}/registries/{host}") => delete(delete_registry),
        ("GET", "/api/v1/repos/{repo}/releases") => get(list_releases),
        ("GET", "/api/v1/repos/{repo}/releases/{release}") => get(get_release),
        ("GET", "/api/v1/repos/{repo}/audit") => get(audit_log),
        ("GET", "/api/v1/repos/{repo}/environments") => get(delivery::environments),
        ("POST", "/api/v1/repos/{repo}/environments/{environment}/rollback") => {
            post(delivery::rollback)
        }
        ("GET", "/api/v1/repos/{repo}/environments/{environment}/output") => get(delivery::output),
        ("GET", "/api/v1/repos/{repo}/deployments") => get(delivery::deployments),
        ("POST", "/api/v1/repos/{repo}/deployments") => post(delivery::promote),
        ("GET", "/api/v1/repos/{repo}/deployments/{deployment}") => get(delivery::deployment),
        ("POST", "/api/v1/repos/{repo}/deployments/{deployment}/approve") => {
            post(delivery::approve)
        }
        ("POST", "/api/v1/repos/{repo}/deployments/{deployment}/reject") => post(delivery::reject),
        ("GET", "/api/v1/repos/{repo}/deployments/{deployment}/log") => {
            get(delivery::deployment_log)
        }
        ("GET", "/api/v1/repos/{repo}/variables") => get(delivery::variables),
        ("PUT", "/api/v1/repos/{repo}/variables/{name}") => put(delivery::set_variable),
        ("DELETE", "/api/v1/repos/{repo}/variables/{name}") => delete(delivery::delete_variable),
        ("GET", "/api/v1/repos/{repo}/secrets") => get(delivery::secrets),
        ("PUT", "/api/v1/repos/{repo}/secrets/{name}") => put(delivery::set_secret),
        ("DELETE", "/api/v1/repos/{repo}/secrets/{name}") => delete(delivery::delete_secret),
        ("GET", "/api/v1/runs") => get(list_runs),
        ("GET", "/api/v1/runs/{run}") => get(get_run),
        ("GET", "/api/v1/runs/{run}/jobs/{job}/log") => get(job_log),
        ("POST", "/api/v1/runs/{run}/cancel") => post(cancel_run),
        ("GET", "/api/v1/runs/{run}/events") => get(run_events),
        ("POST", "/api/v1/runs/{run}/rerun") => post(rerun),
        ("GET", "/api/v1/users") => get(list_users),
        ("POST", "/api/v1/users") => post(create_user),
        ("GET", "/api/v1/tokens") => get(list_tokens),
        ("POST", "/api/v1/tokens") => post(create_token),
        ("DELETE", "/api/v1/tokens/{token}") => delete(revoke_token),
        // A route listed without a handler answers 405; the route walk test catches it.
        _ => MethodRouter::new(),
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.sort_unstable();
    paths.dedup();
    let mut router = Router::new();
    for path in paths {
        let methods = ROUTES
            .iter()
            .filter(|r| r.path == path)
            .fold(MethodRouter::new(), |m, r| m.merge(handler(r)));
        router = router.route(path, methods);
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "parameters": params,
            "responses": {
                "200": { "description": "OK" },
                "default": {
                    "description": "An error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        });
        match route.access {
            Access::Public => op["security"] = json!([]),
            Access::Signed => {
                op["security"] = json!([]);
                op["description"] = json!(
                    "Authenticated by the delivery's signature (see docs/server.md), not a token."
                );
            }
            Access::Token(role) => {
                op["security"] = json!([{ "bearer": [] }]);
                op["description"] = json!(format!("Needs the {} role.", role.as_str()));
            }
        }
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Ferry API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
                }
            }
        },
        "security": [{ "bearer": [] }]
    })
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// A JSON body whose rejection is an [`ApiError`] (422 with the reason), not plain text.
pub(crate) struct Body<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError::new(e.status(), "invalid_body", e.body_text())),
        }
    }
}

/// The largest webhook body accepted (GitHub's own limit is 25 MB; pushes are far smaller).
const WEBHOOK_LIMIT: usize = 5 << 20;

/// Webhook ingress: verify, parse, enqueue. Events Ferry does not handle get 200.
async fn webhook(
    State(s): State<AppState>,
    Path((provider, repo)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = Provider::parse(&provider)
        .ok_or_else(|| ApiError::not_found(format!("no webhook provider `{provider}`")))?;
    let repo = s.store.repository(&repo).await?;
    let secret = repo
        .webhook_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this repository has no webhook secret",
            )
        })?;
    let secret = crate::delivery::open_webhook_secret(&s, secret)?;
    webhook::verify(p, &headers, &body, &secret)
        .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m))?;
    let outcome = webhook::parse(p, &headers, &body)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_payload", m))?;
    let hook = match outcome {
        Outcome::Ignore(reason) => return Ok((StatusCode::OK, Json(json!({ "ignored": reason })))),
        Outcome::Trigger(hook) => hook,
    };
    let item = ferry_store::Intake {
        id: String::new(),
        repository_id: repo.id.clone(),
        provider: p.as_str().to_string(),
        delivery_id: webhook::delivery_id(p, &headers),
        event: hook.event.as_str().to_string(),
        git_ref: hook.git_ref,
        sha: hook.sha,
        received_at: ferry_store::now_ms(),
    };
    // Stored, then answered: fetching, planning and queueing happen in the background
    // (see `intake`), and the commit's `on:` may still decline the run there.
    match s.store.enqueue_intake(&item).await? {
        Some(id) => {
            s.intake_wake.notify_one();
            Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": id }))))
        }
        None => {
            let reason = format!(
                "delivery {} was already handled",
                item.delivery_id.unwrap_or_default()
            );
            Ok((StatusCode::OK, Json(json!({ "ignored": reason }))))
        }
    }
}

fn trigger_error(e: TriggerError) -> ApiError {
    match e {
        TriggerError::Store(e) => e.into(),
        TriggerError::Fetch(e) => ApiError::new(StatusCode::BAD_GATEWAY, "fetch_failed", e),
        e @ TriggerError::NotTriggered(_) => {
            ApiError::new(StatusCode::CONFLICT, "not_triggered", e.to_string())
        }
        e => ApiError::invalid(e.to_string()),
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn list_repos(State(s): State<AppState>, _: Need<AsViewer>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "repositories": s.store.repositories().await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRepo {
    name: String,
    url: String,
    default_branch: Option<String>,
    webhook_secret: Option<String>,
    poll_interval_s: Option<i64>,
}

async fn create_repo(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
    Body(body): Body<CreateRepo>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 100
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(ApiError::invalid(
            "`name` must be 1-100 letters, digits, `-`, `_` or `.`",
        ));
    }
    if body.url.trim().is_empty() || body.url.starts_with('-') {
        return Err(ApiError::invalid("`url` must be a git URL or a path"));
    }
    if body.poll_interval_s.is_some_and(|p| p < 10) {
        return Err(ApiError::invalid("`poll_interval_s` must be at least 10"));
    }
    let repo = s
        .store
        .create_repository(&NewRepository {
            name: body.name,
            url: body.url,
            default_branch: body.default_branch,
            webhook_secret: body
                .webhook_secret
                .map(|w| crate::delivery::seal_webhook_secret(&s, &w))
                .transpose()?,
            poll_interval_s: body.poll_interval_s,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "repository": repo }))))
}

async fn get_repo(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "repository": s.store.repository(&repo).await? }),
    ))
}

async fn list_caches(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let caches = s.engine.caches();
    let entries = tokio::task::spawn_blocking(move || caches.list())
        .await
        .map_err(ApiError::internal)?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| e.repository_id == repo.id)
        .collect();
    Ok(Json(json!({ "caches": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    /// The most entries (default 50, at most 500).
    limit: Option<i64>,
}

async fn list_releases(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(
        json!({ "releases": s.store.releases(&repo.id, limit).await? }),
    ))
}

async fn get_release(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((repo, release)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    Ok(Json(
        json!({ "release": s.store.release(&repo.id, &release).await? }),
    ))
}

async fn audit_log(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(repo): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(
        json!({ "audit": s.store.audit_log(Some(&repo.id), limit).await? }),
    ))
}

async fn list_registries(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(repo): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let logins = s.store.registry_logins(&repo.id).await?;
    Ok(Json(json!({ "registries": logins })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryBody {
    username: String,
    password: String,
}

async fn set_registry(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path((repo, host)): Path<(String, String)>,
    Body(body): Body<RegistryBody>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(ApiError::invalid(format!(
            "`{host}` is not a registry host (e.g. registry.example.com or 127.0.0.1:5000)"
        )));
    }
    if body.username.is_empty() || body.password.is_empty() {
        return Err(ApiError::invalid("username and password must not be empty"));
    }
    s.store
        .set_registry_login(
            &s.key,
            &repo.id,
            &host,
            &body.username,
            &body.password,
            Some(&caller.label()),
        )
        .await?;
    let logins = s.store.registry_logins(&repo.id).await?;
    let login = logins.into_iter().find(|l| l.host == host);
    Ok(Json(json!({ "registry": login })))
}

async fn delete_registry(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
    Path((repo, host)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    if !s.store.delete_registry_login(&repo.id, &host).await? {
        return Err(ApiError::not_found(format!(
            "repository `{}` has no login on {host}",
            repo.name
        )));
    }
    Ok(Json(json!({ "removed": host })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheQuery {
    /// Only the entry with this key.
    key: Option<String>,
}

async fn clear_caches(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(repo): Path<String>,
    Query(q): Query<CacheQuery>,
) -> Result<Json<Value>, ApiError> {
    let repo = s.store.repository(&repo).await?;
    let caches = s.engine.caches();
    let removed =
        tokio::task::spawn_blocking(move || caches.clear(Some(&repo.id), q.key.as_deref()))
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(json!({ "removed": removed })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(rename = "ref")]
    git_ref: String,
    /// `manual` (the default) or `api`.
    event: Option<String>,
    /// Variables for every job of this run (like the pipeline's `env:`, set last).
    #[serde(default)]
    variables: std::collections::BTreeMap<String, String>,
}

async fn trigger_run(
    State(s): State<AppState>,
    Need(caller, _): Need<AsDeveloper>,
    Path(repo): Path<String>,
    Body(body): Body<TriggerBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let repo = s.store.repository(&repo).await?;
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
        triggered_by: caller.label(),
    };
    match trigger(&s, &repo, &req).await {
        Ok(run) => Ok((StatusCode::CREATED, Json(json!({ "run": run })))),
        Err(e) => Err(trigger_error(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    repo: Option<String>,
    branch: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

async fn list_runs(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "runs": runs, "next": next })))
}

#[derive(Debug, Serialize)]
struct JobView {
    #[serde(flatten)]
    job: ferry_store::Job,
    steps: Vec<ferry_store::Step>,
}

async fn get_run(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    let plan: Value =
        serde_json::from_str(&s.store.run_plan(&run.id).await?).map_err(ApiError::internal)?;
    let mut jobs = Vec::new();
    for job in s.store.jobs(&run.id).await? {
        let steps = s.store.steps(&job.id).await?;
        jobs.push(JobView { job, steps });
    }
    let images = s.store.images(&run.id).await?;
    let release = s.store.release_of_run(&run.id).await?;
    Ok(Json(
        json!({ "run": run, "plan": plan, "jobs": jobs, "images": images, "release": release }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// Byte offset to start from.
    offset: Option<u64>,
    /// The most bytes to return (default and maximum 1 MiB).
    limit: Option<u64>,
}

/// A range of a job's log, as text. `X-Ferry-Log-Next` is the offset to ask for next;
/// `X-Ferry-Log-Complete: true` once the job has finished and the end was reached.
async fn job_log(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path((run, job)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    let jobs = s.store.jobs(&run.id).await?;
    let job = jobs
        .iter()
        .find(|j| j.id == job || j.name == job)
        .ok_or_else(|| ApiError::not_found(format!("run {} has no job `{job}`", run.number)))?;
    let path = s.store.log_path(&run.id, &job.id);
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(1 << 20).clamp(1, 1 << 20);
    let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        file.take(limit).read_to_end(&mut buf)?;
        Ok(buf)
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

async fn cancel_run(
    State(s): State<AppState>,
    _: Need<AsDeveloper>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    if run.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "finished",
            format!("run {} has already finished", run.number),
        ));
    }
    let cancelled = queue::cancel(&s, &run.id) || s.store.cancel_queued_run(&run.id).await?;
    if !cancelled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_here",
            "the run is executing on another server",
        ));
    }
    Ok(Json(json!({ "cancelled": run.id })))
}

async fn list_users(State(s): State<AppState>, _: Need<AsAdmin>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "users": s.store.users().await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
    role: String,
    /// Approver groups (`approval.from` can name them).
    #[serde(default)]
    groups: Vec<String>,
}

async fn create_user(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("`role` must be viewer, developer, approver or admin"))?;
    if body.name.is_empty() || body.name.len() > 100 || body.name.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            "`name` must be 1-100 characters without spaces",
        ));
    }
    let (user, token) = create_user_with_token(&s.store, &body.name, role).await?;
    for group in &body.groups {
        s.store.add_group_member(group, &user.id).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user, "token": token })),
    ))
}

async fn list_tokens(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "tokens": s.store.tokens(&caller.user.id).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
}

async fn create_token(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Body(body): Body<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid("`name` must be 1-100 characters"));
    }
    let secret = new_token();
    let token = s
        .store
        .create_token(&caller.user.id, &body.name, &hash_token(&secret))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "secret": secret })),
    ))
}

async fn revoke_token(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    let own = s
        .store
        .tokens(&caller.user.id)
        .await?
        .iter()
        .any(|t| t.id == token);
    if !own && caller.role < Role::Admin {
        return Err(ApiError::not_found(format!("token {token} not found")));
    }
    s.store.revoke_token(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Server-Sent Events of one run: `run`, `job` and `log` events (see `live`), then
/// `end` when the run has finished.
async fn run_events(
    State(s): State<AppState>,
    _: Need<AsViewer>,
    Path(run): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let run = s.store.run_by_id(&run).await?;
    // Subscribe before reading what is stored: see `live`.
    let rx = s.live.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(256);
    tokio::spawn(crate::live::stream(s.clone(), run, rx, tx));
    Ok(Sse::new(ReceiverStream::new(out)).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    /// Only the jobs that did not succeed (and what depends on them); the others keep
    /// their result and artifacts.
    #[serde(default)]
    failed_only: bool,
}

/// Queues a new run of a finished run's stored plan (the same commit and event).
async fn rerun(
    State(s): State<AppState>,
    Need(caller, _): Need<AsDeveloper>,
    Path(run): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The body is optional: none means a whole re-run.
    let options: RerunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RerunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.to_string(),
            )
        })?
    };
    let failed_only = options.failed_only;
    let old = s.store.run_by_id(&run).await?;
    if !old.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!("run {} has not finished", old.number),
        ));
    }
    let mut plan: ferry_plan::Plan =
        serde_json::from_str(&s.store.run_plan(&old.id).await?).map_err(ApiError::internal)?;
    if !failed_only {
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
                "nothing_failed",
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
    Ok((StatusCode::CREATED, Json(json!({ "run": run }))))
}
