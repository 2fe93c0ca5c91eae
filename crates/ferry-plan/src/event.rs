//! Why a run exists: the trigger and the commit it is about.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    #[default]
    Push,
    Tag,
    PullRequest,
    Schedule,
    Manual,
    Api,
}

impl EventKind {
    pub const ALL: &[EventKind] = &[
        EventKind::Push,
        EventKind::Tag,
        EventKind::PullRequest,
        EventKind::Schedule,
        EventKind::Manual,
        EventKind::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Tag => "tag",
            EventKind::PullRequest => "pull_request",
            EventKind::Schedule => "schedule",
            EventKind::Manual => "manual",
            EventKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event a plan is made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The full ref, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub author: String,
    pub message: String,
    /// Files the event changed; `None` when not known, and then every `changed()` is true.
    pub changed_files: Option<Vec<String>>,
    /// A pull request's facts (`pull_request` events from a forge). Its run has no
    /// `branch`: the branch it comes from is named by whoever opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestEvent>,
}

/// What `if:`, `on:` and the built-in variables know of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestEvent {
    pub number: u64,
    /// The branch it would merge into (what `on.pull_request.branches` matches).
    pub base: String,
    /// Its own branch, in the repository it comes from.
    pub head: String,
    /// Whether it comes from another repository.
    pub fork: bool,
}

impl Event {
    pub fn short_sha(&self) -> &str {
        &self.sha[..self.sha.len().min(8)]
    }
}
