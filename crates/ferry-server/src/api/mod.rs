//! The REST API under `/api/v1`. Handlers authenticate, validate, call the domain and
//! map errors; nothing else.
//!
//! [`ROUTES`] is the one route table: method, path, who may call it, what it does, its
//! query, body and answer types, and its handler. The router, the OpenAPI document
//! (`openapi.rs`) and the route-walking tests are all built from it. The request and
//! answer types live with their resource's handlers (`repos`, `runs`, `delivery`,
//! `settings`, `users`, `hooks`) and are public, so the CLI (and later the web UI)
//! reads the same types the server writes.

pub mod delivery;
pub mod hooks;
mod openapi;
pub mod repos;
pub mod runs;
pub mod settings;
pub mod users;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Json, Router};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::{ApiError, AppState};

pub use openapi::openapi_document;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Authenticated by the delivery's signature, not a token.
    Signed,
    Token(Role),
}

/// Makes the JSON Schema of a type (in the OpenAPI document's components).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a route answers when it succeeds (errors are always [`ApiError`]s).
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Json {
        status: u16,
        schema: SchemaFn,
    },
    /// 204, no body.
    NoContent,
    /// `text/plain` (logs).
    Text,
    /// `text/event-stream` (Server-Sent Events), with the type of each event's data.
    Events(SchemaFn),
}

/// One route of the API.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The query string's parameters, as one object type.
    pub query: Option<SchemaFn>,
    /// The JSON body.
    pub body: Option<SchemaFn>,
    /// The body may be left out.
    pub body_optional: bool,
    pub reply: Reply,
    /// A second success status answered with the same type (a webhook: 202 accepted,
    /// 200 ignored).
    pub also: Option<u16>,
    handler: fn() -> MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl Route {
    const fn new(
        method: &'static str,
        path: &'static str,
        access: Access,
        summary: &'static str,
        handler: fn() -> MethodRouter<AppState>,
    ) -> Self {
        Self {
            method,
            path,
            access,
            summary,
            query: None,
            body: None,
            body_optional: false,
            reply: Reply::NoContent,
            also: None,
            handler,
        }
    }

    /// Answers 200 with a `T`.
    const fn ok<T: JsonSchema>(mut self) -> Self {
        self.reply = Reply::Json {
            status: 200,
            schema: schema_of::<T>,
        };
        self
    }

    /// Answers 201 with a `T`.
    const fn created<T: JsonSchema>(mut self) -> Self {
        self.reply = Reply::Json {
            status: 201,
            schema: schema_of::<T>,
        };
        self
    }

    /// Also answers `status` with the same type.
    const fn also(mut self, status: u16) -> Self {
        self.also = Some(status);
        self
    }

    /// Answers 202 (queued) with a `T`.
    const fn accepted<T: JsonSchema>(mut self) -> Self {
        self.reply = Reply::Json {
            status: 202,
            schema: schema_of::<T>,
        };
        self
    }

    const fn text(mut self) -> Self {
        self.reply = Reply::Text;
        self
    }

    const fn events_of<T: JsonSchema>(mut self) -> Self {
        self.reply = Reply::Events(schema_of::<T>);
        self
    }

    const fn query<Q: JsonSchema>(mut self) -> Self {
        self.query = Some(schema_of::<Q>);
        self
    }

    const fn body<B: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<B>);
        self
    }

    const fn optional_body<B: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<B>);
        self.body_optional = true;
        self
    }
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Token(Role::Viewer);
const DEVELOPER: Access = Access::Token(Role::Developer);
const APPROVER: Access = Access::Token(Role::Approver);
const ADMIN: Access = Access::Token(Role::Admin);

const GET: &str = "GET";
const POST: &str = "POST";
const PUT: &str = "PUT";
const DELETE: &str = "DELETE";

/// Every route: who may call it, what it takes and answers, and its handler. The router
/// and the OpenAPI document are both built from this list, so neither can miss a route;
/// tests walk it without a token and with too weak ones, and check real answers against
/// the document.
pub const ROUTES: &[Route] = &[
    Route::new(GET, "/api/v1/health", PUBLIC, "Health and version", || {
        get(health)
    })
    .ok::<Health>(),
    Route::new(
        GET,
        "/api/v1/openapi.json",
        PUBLIC,
        "This API's OpenAPI document",
        || get(openapi::serve),
    )
    .ok::<serde_json::Value>(),
    Route::new(
        GET,
        "/metrics",
        VIEWER,
        "Prometheus metrics (text exposition format 0.0.4)",
        || get(metrics),
    )
    .text(),
    Route::new(
        POST,
        "/api/v1/hooks/{provider}/{repo}",
        Access::Signed,
        "A webhook delivery from GitHub, GitLab, Gitea/Forgejo or a generic sender",
        || post(hooks::receive).layer(axum::extract::DefaultBodyLimit::max(hooks::LIMIT)),
    )
    .ok::<hooks::HookAnswer>()
    .also(202),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/deliveries",
        VIEWER,
        "Webhook deliveries and what became of each (run, or why none), newest first",
        || get(hooks::deliveries),
    )
    .query::<delivery::LimitQuery>()
    .ok::<hooks::DeliveryList>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/deliveries/{delivery}/redeliver",
        DEVELOPER,
        "Queue a failed or declined delivery again",
        || post(hooks::redeliver),
    )
    .accepted::<hooks::DeliveryOne>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/deliveries/{delivery}/approve",
        DEVELOPER,
        "Let a fork's pull request awaiting approval run, untrusted (fork_prs: approve)",
        || post(hooks::approve),
    )
    .accepted::<hooks::DeliveryOne>(),
    // Repositories
    Route::new(GET, "/api/v1/repos", VIEWER, "List repositories", || {
        get(repos::list)
    })
    .ok::<repos::RepositoryList>(),
    Route::new(
        POST,
        "/api/v1/repos",
        ADMIN,
        "Register a repository",
        || post(repos::create),
    )
    .body::<repos::CreateRepository>()
    .created::<repos::RepositoryOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}",
        VIEWER,
        "One repository",
        || get(repos::one),
    )
    .ok::<repos::RepositoryOne>(),
    Route::new(
        PUT,
        "/api/v1/repos/{repo}/fork-prs",
        ADMIN,
        "Set what the repository does with pull requests from forks",
        || put(repos::set_fork_prs),
    )
    .body::<repos::ForkPrs>()
    .ok::<repos::RepositoryOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/commit-status",
        VIEWER,
        "Where runs and deployments report commit statuses (never the token)",
        || get(repos::commit_status),
    )
    .ok::<repos::CommitStatusOne>(),
    Route::new(
        PUT,
        "/api/v1/repos/{repo}/commit-status",
        ADMIN,
        "Report commit statuses to GitHub, GitLab or Gitea with a token (stored sealed)",
        || put(repos::set_commit_status),
    )
    .body::<repos::SetCommitStatus>()
    .ok::<repos::CommitStatusOne>(),
    Route::new(
        DELETE,
        "/api/v1/repos/{repo}/commit-status",
        ADMIN,
        "Stop reporting commit statuses",
        || delete(repos::clear_commit_status),
    )
    .ok::<repos::CommitStatusOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/caches",
        VIEWER,
        "A repository's `cache:` entries",
        || get(repos::caches),
    )
    .ok::<repos::CacheList>(),
    Route::new(
        DELETE,
        "/api/v1/repos/{repo}/caches",
        DEVELOPER,
        "Remove a repository's cache entries (all, or `?key=`)",
        || delete(repos::clear_caches),
    )
    .query::<repos::CacheQuery>()
    .ok::<repos::CachesRemoved>(),
    // Runs
    Route::new(
        POST,
        "/api/v1/repos/{repo}/runs",
        DEVELOPER,
        "Trigger a run of a ref",
        || post(runs::trigger),
    )
    .body::<runs::TriggerRun>()
    .created::<runs::RunOne>(),
    Route::new(
        GET,
        "/api/v1/runs",
        VIEWER,
        "List runs (filters, cursor)",
        || get(runs::list),
    )
    .query::<runs::RunQuery>()
    .ok::<runs::RunList>(),
    Route::new(
        GET,
        "/api/v1/runs/{run}",
        VIEWER,
        "A run with its plan, jobs and steps",
        || get(runs::one),
    )
    .ok::<runs::RunDetail>(),
    Route::new(
        GET,
        "/api/v1/runs/{run}/jobs/{job}/log",
        VIEWER,
        "A byte range of a job's log (`X-Ferry-Log-Next`, `X-Ferry-Log-Complete`)",
        || get(runs::job_log),
    )
    .query::<runs::LogQuery>()
    .text(),
    Route::new(
        POST,
        "/api/v1/runs/{run}/cancel",
        DEVELOPER,
        "Cancel a run",
        || post(runs::cancel),
    )
    .ok::<runs::Cancelled>(),
    Route::new(
        GET,
        "/api/v1/runs/{run}/events",
        VIEWER,
        "Live updates of a run (Server-Sent Events)",
        || get(runs::events),
    )
    .query::<runs::EventsQuery>()
    .events_of::<crate::live::Live>(),
    Route::new(
        POST,
        "/api/v1/runs/{run}/rerun",
        DEVELOPER,
        "Run a finished run again, whole or its failed jobs",
        || post(runs::rerun),
    )
    .optional_body::<runs::Rerun>()
    .created::<runs::RunOne>(),
    // Releases, environments, deployments, audit
    Route::new(
        GET,
        "/api/v1/repos/{repo}/releases",
        VIEWER,
        "A repository's releases, newest first",
        || get(delivery::releases),
    )
    .query::<delivery::LimitQuery>()
    .ok::<delivery::ReleaseList>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/releases/{release}",
        VIEWER,
        "One release with its artifact and image digests",
        || get(delivery::release),
    )
    .ok::<delivery::ReleaseOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/audit",
        VIEWER,
        "The repository's audit log, newest first",
        || get(delivery::audit),
    )
    .query::<delivery::LimitQuery>()
    .ok::<delivery::AuditList>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/environments",
        VIEWER,
        "Each environment with its live release, since when, who deployed and approved it",
        || get(delivery::environments),
    )
    .ok::<delivery::EnvironmentList>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/environments/{environment}/rollback",
        DEVELOPER,
        "Deploy an earlier release again (`release`, default: the one live before)",
        || post(delivery::rollback),
    )
    .body::<delivery::Rollback>()
    .created::<delivery::DeploymentOne>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/environments/{environment}/destroy",
        DEVELOPER,
        "Destroy what the environment's Terraform made (a deployment that waits for approval of its destroy plan, then stops what is live)",
        || post(delivery::destroy),
    )
    .created::<delivery::DeploymentOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/dora",
        VIEWER,
        "DORA's four keys of the repository (`environment`, `since`: default 30d)",
        || get(delivery::dora),
    )
    .query::<delivery::DoraQuery>()
    .ok::<delivery::DoraView>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/notifications",
        VIEWER,
        "Notifications sent (or being sent) and every attempt, newest first (`limit`)",
        || get(delivery::notifications),
    )
    .query::<delivery::LimitQuery>()
    .ok::<delivery::NotificationList>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/environments/{environment}/health",
        VIEWER,
        "The environment's health now and its changes, newest first (`limit`)",
        || get(delivery::health),
    )
    .query::<delivery::LimitQuery>()
    .ok::<delivery::HealthView>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/environments/{environment}/infra/states",
        DEVELOPER,
        "Every version of the environment's Terraform state, newest first (not their content)",
        || get(delivery::infra_versions),
    )
    .ok::<delivery::InfraVersionList>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/environments/{environment}/infra/states/{version}",
        ADMIN,
        "One version of the environment's Terraform state (`latest`: the newest); audited",
        || get(delivery::infra_state),
    )
    .ok::<serde_json::Value>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/environments/{environment}/output",
        VIEWER,
        "The output of the environment's process (process target)",
        || get(delivery::output),
    )
    .text(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/deployments",
        VIEWER,
        "Deployments, newest first (`?environment=`)",
        || get(delivery::deployments),
    )
    .query::<delivery::DeploymentsQuery>()
    .ok::<delivery::DeploymentList>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/deployments",
        DEVELOPER,
        "Promote a release to an environment",
        || post(delivery::promote),
    )
    .body::<delivery::Promote>()
    .created::<delivery::DeploymentOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/deployments/{deployment}",
        VIEWER,
        "A deployment with its approvals and what changes against the live release",
        || get(delivery::deployment),
    )
    .ok::<delivery::DeploymentDetail>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/deployments/{deployment}/approve",
        APPROVER,
        "Approve a deployment that waits for approval",
        || post(delivery::decide::<true>),
    )
    .body::<delivery::Decision>()
    .ok::<delivery::DeploymentOne>(),
    Route::new(
        POST,
        "/api/v1/repos/{repo}/deployments/{deployment}/reject",
        APPROVER,
        "Reject a deployment that waits for approval",
        || post(delivery::decide::<false>),
    )
    .body::<delivery::Decision>()
    .ok::<delivery::DeploymentOne>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/events",
        VIEWER,
        "Live updates of the repository's deployments and approvals (Server-Sent Events)",
        || get(delivery::events),
    )
    .events_of::<ferry_deliver::events::DeliveryEvent>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/deployments/{deployment}/log",
        VIEWER,
        "What the deployment did, as text",
        || get(delivery::deployment_log),
    )
    .text(),
    // Settings: variables, secrets, registry logins
    Route::new(
        GET,
        "/api/v1/repos/{repo}/variables",
        DEVELOPER,
        "Variables of the repository and (`?environment=`) an environment",
        || get(settings::variables),
    )
    .query::<settings::ScopeQuery>()
    .ok::<settings::VariableList>(),
    Route::new(
        PUT,
        "/api/v1/repos/{repo}/variables/{name}",
        ADMIN,
        "Set a variable (`{value, environment?}`)",
        || put(settings::set_variable),
    )
    .body::<settings::SetValue>()
    .ok::<settings::VariableSet>(),
    Route::new(
        DELETE,
        "/api/v1/repos/{repo}/variables/{name}",
        ADMIN,
        "Remove a variable (`?environment=`)",
        || delete(settings::delete::<false>),
    )
    .query::<settings::ScopeQuery>()
    .ok::<Removed>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/secrets",
        DEVELOPER,
        "Names and update times of secrets (never values)",
        || get(settings::secrets),
    )
    .query::<settings::ScopeQuery>()
    .ok::<settings::SecretList>(),
    Route::new(
        PUT,
        "/api/v1/repos/{repo}/secrets/{name}",
        ADMIN,
        "Set a secret (`{value, environment?}`; sealed, never returned)",
        || put(settings::set_secret),
    )
    .body::<settings::SetValue>()
    .ok::<settings::SecretSet>(),
    Route::new(
        DELETE,
        "/api/v1/repos/{repo}/secrets/{name}",
        ADMIN,
        "Remove a secret (`?environment=`)",
        || delete(settings::delete::<true>),
    )
    .query::<settings::ScopeQuery>()
    .ok::<Removed>(),
    Route::new(
        GET,
        "/api/v1/repos/{repo}/registries",
        DEVELOPER,
        "A repository's registry logins (hosts and users, never passwords)",
        || get(settings::registries),
    )
    .ok::<settings::RegistryList>(),
    Route::new(
        PUT,
        "/api/v1/repos/{repo}/registries/{host}",
        ADMIN,
        "Set the repository's login on a registry (the password is sealed)",
        || put(settings::set_registry),
    )
    .body::<settings::SetRegistry>()
    .ok::<settings::RegistryOne>(),
    Route::new(
        DELETE,
        "/api/v1/repos/{repo}/registries/{host}",
        ADMIN,
        "Remove the repository's login on a registry",
        || delete(settings::delete_registry),
    )
    .ok::<Removed>(),
    // Users and tokens
    Route::new(GET, "/api/v1/users", ADMIN, "List users", || {
        get(users::list)
    })
    .ok::<users::UserList>(),
    Route::new(
        POST,
        "/api/v1/users",
        ADMIN,
        "Create a user and a first token",
        || post(users::create),
    )
    .body::<users::CreateUser>()
    .created::<users::CreatedUser>(),
    Route::new(
        POST,
        "/api/v1/users/{user}/forge",
        ADMIN,
        "Link a user to a forge account (approval rules know the user by it)",
        || post(users::link_forge),
    )
    .body::<users::LinkForge>()
    .ok::<users::ForgeIdentities>(),
    Route::new(GET, "/api/v1/tokens", VIEWER, "The caller's tokens", || {
        get(users::tokens)
    })
    .ok::<users::TokenList>(),
    Route::new(
        POST,
        "/api/v1/tokens",
        VIEWER,
        "Create a token for the caller",
        || post(users::create_token),
    )
    .body::<users::CreateToken>()
    .created::<users::CreatedToken>(),
    Route::new(
        DELETE,
        "/api/v1/tokens/{token}",
        VIEWER,
        "Revoke a token",
        || delete(users::revoke_token),
    ),
    Route::new(
        GET,
        "/api/v1/sessions",
        VIEWER,
        "The caller's web sessions (never their secrets)",
        || get(users::sessions),
    )
    .ok::<users::SessionList>(),
    Route::new(
        DELETE,
        "/api/v1/sessions/{session}",
        VIEWER,
        "End one of the caller's web sessions",
        || delete(users::end_session),
    ),
];

pub(crate) fn router(state: AppState) -> Router {
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.sort_unstable();
    paths.dedup();
    let mut router = Router::new();
    for path in paths {
        let methods = ROUTES
            .iter()
            .filter(|r| r.path == path)
            .fold(MethodRouter::new(), |m, r| m.merge((r.handler)()));
        router = router.route(path, methods);
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// The server's log: one line per request, with its method, its route (the template,
/// e.g. `/api/v1/runs/{id}`: never a query string, so never a token in one), the status
/// and how long the answer took (to its headers; a stream goes on after).
pub(crate) async fn log_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let began = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "ferry_server::request",
        method = %method,
        route = route.as_deref().unwrap_or("(no route)"),
        status = resp.status().as_u16(),
        ms = began.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The server's Ferry version.
    pub version: String,
}

/// `GET /metrics`: every metric, with the queue counted now.
async fn metrics(
    axum::extract::State(s): axum::extract::State<AppState>,
    _: crate::auth::Need<crate::auth::AsViewer>,
) -> Result<axum::response::Response, ApiError> {
    let (queued, running) = s.store.run_counts().await?;
    let healths = s.store.healths(None).await?;
    let mut health = Vec::with_capacity(healths.len());
    let mut supervised = s.deliverer.supervisor().workloads().await;
    // Containers: the last sample (`metrics::sample_workloads`), for environments no
    // supervised process stands for.
    if let Ok(sampled) = s.metrics.sampled.lock() {
        for (repo, env, w) in sampled.iter() {
            if !supervised.iter().any(|(r, e, _)| r == repo && e == env) {
                supervised.push((repo.clone(), env.clone(), w.clone()));
            }
        }
    }
    let mut workloads = Vec::with_capacity(supervised.len());
    if !healths.is_empty() || !supervised.is_empty() {
        let names: std::collections::HashMap<String, String> = s
            .store
            .repositories()
            .await?
            .into_iter()
            .map(|r| (r.id, r.name))
            .collect();
        let name = |id: String| names.get(&id).cloned().unwrap_or(id);
        for h in healths {
            health.push((name(h.repository_id), h.environment, h.state));
        }
        for (repo, env, w) in supervised {
            workloads.push((name(repo), env, w));
        }
    }
    let text = s
        .metrics
        .render(queued, running, &health, &workloads)
        .map_err(ApiError::internal)?;
    Ok(axum::response::IntoResponse::into_response((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )))
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
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
            Err(e) => Err(ApiError::new(
                e.status(),
                crate::error::ErrorCode::InvalidBody,
                e.body_text(),
            )),
        }
    }
}

/// `{"removed": NAME}`: what a DELETE took away.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    pub removed: String,
}
