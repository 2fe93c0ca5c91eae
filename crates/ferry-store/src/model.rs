//! What the store holds, as plain records.

use serde::{Deserialize, Serialize};

/// The state of a run, a job or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "success" => Status::Success,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            "skipped" => Status::Skipped,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A new run, before it has a number.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub repository_id: String,
    pub event: String,
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: String,
    pub dirty: bool,
    pub author: String,
    pub message: String,
    /// The plan, serialised as JSON.
    pub plan: String,
    /// Who or what asked for the run (`user:NAME`, `webhook:github`, …); `None` locally.
    pub triggered_by: Option<String>,
    /// The `concurrency:` group, if the pipeline has one.
    pub concurrency_group: Option<String>,
    /// The jobs of the plan, in order: (name, allow_failure, skip reason if skipped).
    pub jobs: Vec<NewJob>,
}

/// A queued or running run, with what the queue decides by.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub run: Run,
    /// Its `concurrency:` group.
    pub group: Option<String>,
    /// The server executing it (its id), when it runs.
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub allow_failure: bool,
    /// Set for a job that will not run: skipped (with the reason), or reused from an
    /// earlier run (success, with the reason).
    pub settled: Option<(Status, String)>,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Run {
    pub id: String,
    pub repository_id: String,
    pub number: i64,
    pub event: String,
    pub git_ref: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub commit_sha: String,
    pub dirty: bool,
    pub author: String,
    pub message: String,
    pub status: Status,
    pub error: Option<String>,
    pub triggered_by: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Job {
    pub id: String,
    pub run_id: String,
    pub position: i64,
    pub name: String,
    pub status: Status,
    /// Why it was skipped, failed or cancelled.
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub attempts: i64,
    pub allow_failure: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub log_bytes: i64,
    pub log_lines: i64,
    pub tests: Option<TestSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    pub job_id: String,
    pub position: i64,
    pub name: String,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub attempt: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Counts from a job's test reports, and the failures' messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TestSummary {
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub failures: Vec<TestFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TestFailure {
    /// `suite › case` (classname and name).
    pub name: String,
    pub message: String,
}

/// How a job ended, written in one update.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub status: Status,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub attempts: i64,
    pub log_bytes: i64,
    pub log_lines: i64,
    pub tests: Option<TestSummary>,
}

/// A person or machine that uses the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    /// `viewer`, `developer` or `admin` (checked by the server).
    pub role: String,
    pub created_at: i64,
}

/// An API token, without its secret (only a hash of it is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Token {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A git repository a server watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Repository {
    pub id: String,
    pub name: String,
    /// Any URL git accepts, or a local path.
    pub url: String,
    pub default_branch: Option<String>,
    /// Never serialised: API responses must not carry it.
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    pub poll_interval_s: Option<i64>,
    pub created_at: i64,
    /// What a pull request from a fork gets: `ignore` (no run, the default) or `run`
    /// (an untrusted run; see docs/security.md).
    pub fork_prs: String,
    /// Where runs and deployments report commit statuses (JSON with a sealed token).
    /// Never serialised: `GET …/commit-status` shows it without the token.
    #[serde(skip)]
    pub commit_status: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NewRepository {
    pub name: String,
    pub url: String,
    pub default_branch: Option<String>,
    pub webhook_secret: Option<String>,
    pub poll_interval_s: Option<i64>,
    /// `None`: `ignore`.
    pub fork_prs: Option<String>,
}

/// What a repository does with a pull request from a fork.
pub const FORK_PRS: [&str; 3] = ["ignore", "approve", "run"];

/// A pull (merge) request's facts, from the forge's payload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PullRequest {
    /// Its number (GitLab's `iid`).
    pub number: u64,
    /// The forge's ref of its head (`refs/pull/4/head`, `refs/merge-requests/4/head`).
    pub git_ref: String,
    /// Its branch, in the repository it comes from.
    pub head: String,
    /// The branch it would merge into.
    pub base: String,
    /// Whether it comes from another repository than this one, by the forge's
    /// repository ids (a head repository the payload does not name counts as another).
    pub fork: bool,
    /// The repository it comes from, when the payload names it (`alice/app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The forge account that opened or updated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// Which runs to list. Runs come newest first; `before` is the cursor (a run id).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub repository_id: Option<String>,
    pub branch: Option<String>,
    pub status: Option<Status>,
    pub before: Option<String>,
    pub limit: i64,
}

/// A webhook delivery waiting to be turned into a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Intake {
    pub id: String,
    pub repository_id: String,
    pub provider: String,
    pub delivery_id: Option<String>,
    /// The event kind (`push`, `tag`, `pull_request`).
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub received_at: i64,
    /// The forge account that caused the delivery, when the payload names one.
    pub sender: Option<String>,
    pub pull: Option<PullRequest>,
    /// Who let this fork's pull request run (`user:NAME`; `fork_prs: approve`).
    #[serde(default)]
    pub approved_by: Option<String>,
}

/// An image a job built with `build_image:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Image {
    pub id: String,
    pub run_id: String,
    pub job_id: String,
    /// The repository, e.g. `127.0.0.1:5000/team/app`.
    pub name: String,
    pub tags: Vec<String>,
    /// The engine's image id (`sha256:…`).
    pub image_id: String,
    /// The registry's manifest digest (`sha256:…`), when pushed.
    pub digest: Option<String>,
    pub created_at: i64,
}
