//! Repositories and their `cache:` entries.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use ferry_engine::cache::CacheEntry;
use ferry_store::{NewRepository, Repository};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Body;
use crate::auth::{AsAdmin, AsDeveloper, AsViewer, InRepo, Need};
use crate::{ApiError, AppState};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RepositoryList {
    pub repositories: Vec<Repository>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RepositoryOne {
    pub repository: Repository,
}

/// `POST /api/v1/repos`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRepository {
    /// 1-100 letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// A git URL or a path on the server.
    pub url: String,
    /// Default: what the remote's HEAD names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// The secret webhooks are signed with (stored sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Poll the remote every this many seconds (at least 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_s: Option<i64>,
    /// What a pull request from a fork gets: `ignore` (the default: no run) or `run`
    /// (an untrusted run: containers only, no registry logins, no cache writes to
    /// trusted keys, no release; see docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_prs: Option<String>,
}

/// `PUT /api/v1/repos/{repo}/fork-prs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkPrs {
    /// `ignore` (no run) or `run` (an untrusted run).
    pub fork_prs: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CacheList {
    pub caches: Vec<CacheEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheQuery {
    /// Only the entry with this key.
    pub key: Option<String>,
}

/// How many cache entries were removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CachesRemoved {
    pub removed: usize,
}

pub(crate) async fn list(
    State(s): State<AppState>,
    _: Need<AsViewer>,
) -> Result<Json<RepositoryList>, ApiError> {
    Ok(Json(RepositoryList {
        repositories: s.store.repositories().await?,
    }))
}

pub(crate) async fn create(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
    Body(body): Body<CreateRepository>,
) -> Result<(StatusCode, Json<RepositoryOne>), ApiError> {
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
    if let Some(f) = &body.fork_prs {
        check_fork_prs(f)?;
    }
    let webhook_secret = match body.webhook_secret {
        Some(w) => Some(super::hooks::seal_with(&s.key, &w)?),
        None => None,
    };
    let repository = s
        .store
        .create_repository(&NewRepository {
            name: body.name,
            url: body.url,
            default_branch: body.default_branch,
            webhook_secret,
            poll_interval_s: body.poll_interval_s,
            fork_prs: body.fork_prs,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(RepositoryOne { repository })))
}

fn check_fork_prs(f: &str) -> Result<(), ApiError> {
    if ferry_store::FORK_PRS.contains(&f) {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "`fork_prs` must be one of {}, not `{}`",
        ferry_store::FORK_PRS.join(", "),
        f.escape_debug()
    )))
}

/// Sets what the repository does with pull requests from forks (admin; audited).
pub(crate) async fn set_fork_prs(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Body(body): Body<ForkPrs>,
) -> Result<Json<RepositoryOne>, ApiError> {
    check_fork_prs(&body.fork_prs)?;
    s.store.set_fork_prs(&repo.id, &body.fork_prs).await?;
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            "repository.fork_prs",
            &repo.name,
            Some(&format!("{} -> {}", repo.fork_prs, body.fork_prs)),
        )
        .await?;
    let repository = s.store.repository(&repo.id).await?;
    Ok(Json(RepositoryOne { repository }))
}

pub(crate) async fn one(
    InRepo(repository, ..): InRepo<AsViewer>,
) -> Result<Json<RepositoryOne>, ApiError> {
    Ok(Json(RepositoryOne { repository }))
}

pub(crate) async fn caches(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsViewer>,
) -> Result<Json<CacheList>, ApiError> {
    let caches = s.engine.caches();
    let entries = tokio::task::spawn_blocking(move || caches.list())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CacheList {
        caches: entries
            .into_iter()
            .filter(|e| e.repository_id == repo.id)
            .collect(),
    }))
}

pub(crate) async fn clear_caches(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsDeveloper>,
    Query(q): Query<CacheQuery>,
) -> Result<Json<CachesRemoved>, ApiError> {
    let caches = s.engine.caches();
    let removed =
        tokio::task::spawn_blocking(move || caches.clear(Some(&repo.id), q.key.as_deref()))
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(CachesRemoved { removed }))
}

/// `PUT /api/v1/repos/{repo}/commit-status`: where runs and deployments report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCommitStatus {
    pub forge: crate::status::Forge,
    /// The API's address (default: `https://api.github.com`, `https://gitlab.com/api/v4`;
    /// required for Gitea and Forgejo, e.g. `https://git.example.com/api/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// `owner/name` (GitHub, Gitea), or the project's path or numeric id (GitLab).
    pub project: String,
    /// A token allowed to set commit statuses (stored sealed, never shown again).
    pub token: String,
}

/// Where a repository reports commit statuses (none: it does not).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommitStatusOne {
    pub commit_status: Option<crate::status::StatusTarget>,
}

pub(crate) async fn commit_status(
    InRepo(repo, ..): InRepo<AsViewer>,
) -> Result<Json<CommitStatusOne>, ApiError> {
    let commit_status = repo
        .commit_status
        .as_deref()
        .and_then(|s| serde_json::from_str::<crate::status::Stored>(s).ok())
        .map(|s| s.target);
    Ok(Json(CommitStatusOne { commit_status }))
}

/// Sets where the repository reports commit statuses (admin; audited, without the
/// token).
pub(crate) async fn set_commit_status(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Body(body): Body<SetCommitStatus>,
) -> Result<Json<CommitStatusOne>, ApiError> {
    let api_url = match body.api_url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => u.trim_end_matches('/').to_string(),
        _ => body
            .forge
            .default_api()
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::invalid(
                    "`api_url` is required for gitea (e.g. https://git.example.com/api/v1)",
                )
            })?,
    };
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ApiError::invalid(format!(
            "`api_url` must be an http:// or https:// URL, not `{api_url}`"
        )));
    }
    let project = body.project.trim();
    let well_formed = match body.forge {
        crate::status::Forge::Gitlab => !project.is_empty(),
        _ => project
            .split_once('/')
            .is_some_and(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/')),
    };
    if !well_formed
        || project
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(ApiError::invalid(format!(
            "`project` must be `owner/name` (or a GitLab project's path or id), not `{project}`"
        )));
    }
    if body.token.trim().is_empty() {
        return Err(ApiError::invalid("`token` is empty"));
    }
    let target = crate::status::StatusTarget {
        forge: body.forge,
        api_url,
        project: project.to_string(),
    };
    let token = s.key.seal(
        body.token.trim().as_bytes(),
        &crate::status::token_context(&repo.id),
    )?;
    let stored = crate::status::Stored {
        target: target.clone(),
        token,
    };
    let json = serde_json::to_string(&stored).map_err(ApiError::internal)?;
    s.store.set_commit_status(&repo.id, Some(&json)).await?;
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            "repository.commit_status",
            &repo.name,
            Some(&format!(
                "{} {} {}",
                target.forge.as_str(),
                target.api_url,
                target.project
            )),
        )
        .await?;
    Ok(Json(CommitStatusOne {
        commit_status: Some(target),
    }))
}

/// Stops reporting commit statuses (admin; audited).
pub(crate) async fn clear_commit_status(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
) -> Result<Json<CommitStatusOne>, ApiError> {
    s.store.set_commit_status(&repo.id, None).await?;
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            "repository.commit_status",
            &repo.name,
            Some("off"),
        )
        .await?;
    Ok(Json(CommitStatusOne {
        commit_status: None,
    }))
}
