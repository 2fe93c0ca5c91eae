//! Terraform's `http` state backend, served by Ferry for each environment (issue 14):
//! `/api/v1/infra/{repo}/{environment}/state` answers `GET` (the state), `POST` (a new
//! version, `?ID=` the lock it is written under), `DELETE`, `LOCK` and `UNLOCK`, as
//! Terraform's backend asks them. Each deployment that runs Terraform gets a credential
//! of its own for its environment only (HTTP Basic: any user name, the password), which
//! ends with the deployment; states are sealed with the server's key like secrets, and
//! every version is kept.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::hash_token;

/// The context states are sealed under.
pub(crate) const CONTEXT: &str = ferry_deliver::infra::STATE_CONTEXT;
/// The largest state accepted.
pub const MAX_STATE: usize = 64 << 20;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/infra/{repo}/{environment}/state",
            axum::routing::any(backend).layer(axum::extract::DefaultBodyLimit::max(MAX_STATE)),
        )
        .with_state(state)
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct LockQuery {
    #[serde(rename = "ID")]
    id: Option<String>,
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

/// The password of a Basic `Authorization`.
fn password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

async fn backend(
    State(s): State<AppState>,
    Path((repo, environment)): Path<(String, String)>,
    Query(q): Query<LockQuery>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(&s, &repo, &environment, &q, &method, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("infra state of {repo}/{environment}: {e}");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn serve(
    s: &AppState,
    repo: &str,
    environment: &str,
    q: &LockQuery,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    // Who: a live credential of this very environment.
    let unauthorized = || {
        let mut r = answer(
            StatusCode::UNAUTHORIZED,
            "a deployment's credentials are required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"ferry infra\""),
        );
        r
    };
    let Some(pass) = password(headers) else {
        return Ok(unauthorized());
    };
    let Some(grant) = s
        .store
        .infra_credential(&hash_token(&pass))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(unauthorized());
    };
    let repository = match s.store.repository(repo).await {
        Ok(r) => r,
        Err(ferry_store::Error::NotFound(_)) => return Ok(unauthorized()),
        Err(e) => return Err(e.to_string()),
    };
    if grant.repository_id != repository.id || grant.environment != environment {
        return Ok(answer(
            StatusCode::FORBIDDEN,
            "these credentials are another environment's",
        ));
    }
    let (repo_id, env) = (repository.id.as_str(), environment);
    match method.as_str() {
        "GET" => {
            let state = s
                .store
                .infra_state(repo_id, env, None)
                .await
                .map_err(|e| e.to_string())?;
            match state.filter(|st| !st.info.deleted) {
                None => Ok(StatusCode::NO_CONTENT.into_response()),
                Some(st) => {
                    let plain = s.key.open(&st.sealed, CONTEXT).map_err(|e| e.to_string())?;
                    Ok((
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        plain,
                    )
                        .into_response())
                }
            }
        }
        "POST" | "DELETE" if !grant.may_write => Ok(answer(
            StatusCode::FORBIDDEN,
            "these credentials are a plan's: they read and lock the state, never write it",
        )),
        "POST" | "DELETE" => {
            // Written under the lock, when one is held.
            if let Some((held, info)) = s
                .store
                .infra_lock(repo_id, env)
                .await
                .map_err(|e| e.to_string())?
                && q.id.as_deref() != Some(held.as_str())
            {
                return Ok((
                    StatusCode::LOCKED,
                    [(header::CONTENT_TYPE, "application/json")],
                    info,
                )
                    .into_response());
            }
            let deleting = method == Method::DELETE;
            let (serial, lineage) = if deleting {
                (None, None)
            } else {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return Ok(answer(StatusCode::BAD_REQUEST, "a state is JSON"));
                };
                (
                    v.get("serial").and_then(|x| x.as_i64()),
                    v.get("lineage")
                        .and_then(|x| x.as_str())
                        .map(str::to_string),
                )
            };
            let sealed = if deleting {
                String::new()
            } else {
                s.key.seal(&body, CONTEXT).map_err(|e| e.to_string())?
            };
            let sha = hex::encode(Sha256::digest(&body));
            s.store
                .put_infra_state(
                    repo_id,
                    env,
                    &ferry_store::NewState {
                        sealed: &sealed,
                        serial,
                        lineage: lineage.as_deref(),
                        size: if deleting { 0 } else { body.len() as i64 },
                        sha256: &sha,
                        deployment_id: grant.deployment_id.as_deref(),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(StatusCode::OK.into_response())
        }
        "LOCK" => {
            let info: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, "lock info is JSON")),
            };
            let Some(id) = info.get("ID").and_then(|x| x.as_str()) else {
                return Ok(answer(StatusCode::BAD_REQUEST, "lock info has an `ID`"));
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            match s
                .store
                .lock_infra_for(repo_id, env, id, &text, grant.deployment_id.as_deref())
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(StatusCode::OK.into_response()),
                Some((_, held)) => Ok((
                    StatusCode::LOCKED,
                    [(header::CONTENT_TYPE, "application/json")],
                    held,
                )
                    .into_response()),
            }
        }
        "UNLOCK" => {
            let id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("ID").and_then(|x| x.as_str()).map(str::to_string));
            match s
                .store
                .infra_lock(repo_id, env)
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(StatusCode::OK.into_response()),
                // Letting go of another's lock by force is a writer's right.
                Some((_, info)) if id.is_none() && !grant.may_write => Ok((
                    StatusCode::FORBIDDEN,
                    [(header::CONTENT_TYPE, "application/json")],
                    info,
                )
                    .into_response()),
                Some((held, info)) if id.as_deref().is_some_and(|i| i != held) => Ok((
                    StatusCode::CONFLICT,
                    [(header::CONTENT_TYPE, "application/json")],
                    info,
                )
                    .into_response()),
                Some(_) => {
                    s.store
                        .unlock_infra(repo_id, env, id.as_deref())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(StatusCode::OK.into_response())
                }
            }
        }
        other => Ok(answer(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("the state backend does not answer {other}"),
        )),
    }
}
