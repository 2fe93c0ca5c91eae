//! Commit statuses on the forge: each run reports `pending` when queued and its result
//! when it ends (context `ferry/run`), each deployment `pending` when it starts and
//! `success` or `failure` on the release's commit (context `ferry/deploy/ENV`), to
//! GitHub (commit statuses), GitLab (commit status API) or Gitea/Forgejo (statuses API),
//! with the repository's forge token, stored sealed.
//!
//! An update goes through the notifications' store and sender (see [`crate::notify`]):
//! written when it happens, retried with back-off, never in the way of the run; an
//! update is not sent when a newer one of the same commit and context exists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;

/// Which forge's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Gitlab,
    /// Gitea and Forgejo.
    Gitea,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    /// The API's address when none is given (GitHub.com, GitLab.com; Gitea has none).
    pub fn default_api(self) -> Option<&'static str> {
        match self {
            Forge::Github => Some("https://api.github.com"),
            Forge::Gitlab => Some("https://gitlab.com/api/v4"),
            Forge::Gitea => None,
        }
    }
}

/// Where a repository reports (what `GET …/commit-status` shows: never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatusTarget {
    pub forge: Forge,
    /// `https://api.github.com`, `https://gitlab.example.com/api/v4`,
    /// `https://gitea.example.com/api/v1`.
    pub api_url: String,
    /// `owner/name` (GitHub, Gitea), or the project's path or numeric id (GitLab).
    pub project: String,
}

/// What the store keeps: the target and the sealed token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    #[serde(flatten)]
    pub target: StatusTarget,
    pub token: String,
}

/// The state of a commit's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    /// Ended without a verdict (cancelled).
    Error,
}

impl State {
    /// The word GitHub and Gitea use for it (GitLab has its own).
    fn word(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// One status to set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    #[serde(flatten)]
    pub target: StatusTarget,
    /// The token, sealed (opened when sending).
    pub token: String,
    pub sha: String,
    pub state: State,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

/// The HTTP request a forge's API documents for a status: method POST, the URL, the
/// headers (with the opened token) and the JSON body.
pub fn request(
    u: &StatusUpdate,
    token: &str,
) -> (String, Vec<(String, String)>, serde_json::Value) {
    let api = u.target.api_url.trim_end_matches('/');
    // At most 140 characters (GitHub's limit; the others take it).
    let description: String = u.description.chars().take(140).collect();
    match u.target.forge {
        Forge::Github => (
            format!("{api}/repos/{}/statuses/{}", u.target.project, u.sha),
            vec![
                ("authorization".into(), format!("Bearer {token}")),
                ("accept".into(), "application/vnd.github+json".into()),
                ("x-github-api-version".into(), "2022-11-28".into()),
            ],
            serde_json::json!({
                "state": u.state.word(),
                "target_url": u.target_url,
                "description": description,
                "context": u.context,
            }),
        ),
        Forge::Gitlab => {
            let project: String = percent_encoding::utf8_percent_encode(
                &u.target.project,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .collect();
            (
                format!("{api}/projects/{project}/statuses/{}", u.sha),
                vec![("private-token".into(), token.to_string())],
                serde_json::json!({
                    "state": match u.state {
                        State::Pending => "pending",
                        State::Success => "success",
                        State::Failure => "failed",
                        State::Error => "canceled",
                    },
                    "name": u.context,
                    "target_url": u.target_url,
                    "description": description,
                }),
            )
        }
        Forge::Gitea => (
            format!("{api}/repos/{}/statuses/{}", u.target.project, u.sha),
            vec![("authorization".into(), format!("token {token}"))],
            serde_json::json!({
                "state": u.state.word(),
                "target_url": u.target_url,
                "description": description,
                "context": u.context,
            }),
        ),
    }
}

/// The context of a run's status.
pub const RUN_CONTEXT: &str = "ferry/run";

/// Reports how a run ended (`Success` → success, `Failed` → failure, anything else →
/// error).
pub(crate) async fn run_ended(state: &AppState, run: &ferry_store::Run, took: Option<f64>) {
    let (status, what) = match run.status {
        ferry_store::Status::Success => (State::Success, "passed".to_string()),
        ferry_store::Status::Failed => (State::Failure, "failed".to_string()),
        other => (State::Error, format!("ended {}", other.as_str())),
    };
    let took = took.map_or(String::new(), |s| format!(" in {s:.0}s"));
    report(
        state,
        &run.repository_id,
        &run.commit_sha,
        status,
        RUN_CONTEXT,
        format!("Run #{} {what}{took}", run.number),
        state.notifier.link(&format!("/api/v1/runs/{}", run.id)),
    )
    .await;
}

/// Reports a deployment's change on its release's commit (context `ferry/deploy/ENV`):
/// pending when it starts, success when live, failure when it failed.
pub(crate) async fn deployment_changed(state: &AppState, d: &ferry_store::Deployment, repo: &str) {
    use ferry_store::DeploymentStatus as S;
    let label = format!("{}#{}", d.environment, d.number);
    let (status, description) = match d.status {
        S::Deploying => (
            State::Pending,
            format!("Deploying to {} ({label})", d.environment),
        ),
        S::Live => (
            State::Success,
            format!("Live in {} ({label})", d.environment),
        ),
        S::Failed | S::RolledBack => (
            State::Failure,
            format!(
                "{label} {}: {}",
                d.status.as_str().replace('_', " "),
                d.reason.as_deref().unwrap_or("")
            ),
        ),
        _ => return,
    };
    let Ok(release) = state.store.release(&d.repository_id, &d.release_id).await else {
        return;
    };
    report(
        state,
        &d.repository_id,
        &release.commit_sha,
        status,
        &format!("ferry/deploy/{}", d.environment),
        description,
        state.notifier.link(&format!(
            "/api/v1/repos/{repo}/deployments/{}.{}",
            d.environment, d.number
        )),
    )
    .await;
}

/// The sealing context of a repository's forge token.
pub(crate) fn token_context(repository_id: &str) -> String {
    format!("forge-token:{repository_id}")
}

/// Reports a status of `sha` to the repository's forge, if it has one (written to the
/// store; the notifier sends it).
pub(crate) async fn report(
    state: &AppState,
    repository_id: &str,
    sha: &str,
    status: State,
    context: &str,
    description: String,
    target_url: Option<String>,
) {
    let Ok(repo) = state.store.repository(repository_id).await else {
        return;
    };
    report_to(state, &repo, sha, status, context, description, target_url).await;
}

/// [`report`] for a repository already read (the trigger has it: no second read on
/// the path of every run, and nothing at all when it reports nowhere).
pub(crate) async fn report_to(
    state: &AppState,
    repo: &ferry_store::Repository,
    sha: &str,
    status: State,
    context: &str,
    description: String,
    target_url: Option<String>,
) {
    let repository_id = repo.id.as_str();
    let Some(stored) = repo
        .commit_status
        .as_deref()
        .and_then(|s| serde_json::from_str::<Stored>(s).ok())
    else {
        return;
    };
    let short = &sha[..sha.len().min(7)];
    let update = StatusUpdate {
        target: stored.target.clone(),
        token: stored.token,
        sha: sha.to_string(),
        state: status,
        context: context.to_string(),
        description,
        target_url,
    };
    let channel = serde_json::json!({ "commit_status": update }).to_string();
    let n = ferry_store::NewNotification {
        repository_id: repository_id.to_string(),
        event: "commit.status".into(),
        channel,
        // The same for every update of one commit and context (see `newer_exists`).
        target: format!(
            "{} status {context} @{short} ({})",
            stored.target.forge.as_str(),
            stored.target.project
        ),
        payload: serde_json::json!({ "state": status, "description": update.description })
            .to_string(),
    };
    match state.store.enqueue_notifications(&[n]).await {
        Ok(_) => state.notifier.wake.notify_one(),
        Err(e) => tracing::error!("cannot write a commit status of {}: {e}", repo.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(forge: Forge, api: &str, project: &str) -> StatusUpdate {
        StatusUpdate {
            target: StatusTarget {
                forge,
                api_url: api.into(),
                project: project.into(),
            },
            token: String::new(),
            sha: "abc123".into(),
            state: State::Failure,
            context: "ferry/run".into(),
            description: "x".repeat(200),
            target_url: Some("https://ferry.example.com/api/v1/runs/1".into()),
        }
    }

    /// Each forge's documented request: path, auth header, state word, context field.
    #[test]
    fn each_forge_gets_its_documented_request() {
        let (url, headers, body) = request(
            &update(Forge::Github, "https://api.github.com/", "o/r"),
            "T",
        );
        assert_eq!(url, "https://api.github.com/repos/o/r/statuses/abc123");
        assert_eq!(headers[0], ("authorization".into(), "Bearer T".into()));
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "ferry/run");
        assert_eq!(
            body["description"].as_str().map(|d| d.chars().count()),
            Some(140)
        );
        let (url, headers, body) = request(
            &update(Forge::Gitlab, "https://gitlab.com/api/v4", "group/sub/app"),
            "T",
        );
        assert_eq!(
            url,
            "https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/abc123"
        );
        assert_eq!(headers, [("private-token".to_string(), "T".to_string())]);
        assert_eq!(body["state"], "failed");
        assert_eq!(body["name"], "ferry/run");
        let (url, headers, body) = request(
            &update(Forge::Gitea, "https://git.example.com/api/v1", "o/r"),
            "T",
        );
        assert_eq!(
            url,
            "https://git.example.com/api/v1/repos/o/r/statuses/abc123"
        );
        assert_eq!(
            headers,
            [("authorization".to_string(), "token T".to_string())]
        );
        assert_eq!(body["state"], "failure");
    }
}
