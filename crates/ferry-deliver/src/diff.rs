//! What an approver needs to see: what changes when a deployment's release replaces the
//! live one. Commits, artifact and image digests old → new, and which variables and
//! secrets were added, changed or removed since the live deployment used them (names
//! only, never values).

use std::path::Path;

use ferry_source::LogEntry;
use ferry_store::{Deployment, Release, Store};
use serde::{Deserialize, Serialize};

/// At most this many commits are listed.
pub const MAX_COMMITS: usize = 200;

type CommitKey = (std::path::PathBuf, Option<String>, String);

/// The commits between two commits of a mirror, as git listed them.
static COMMITS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<CommitKey, Vec<LogEntry>>>,
> = std::sync::LazyLock::new(Default::default);

/// The names and update times of the variables and secrets a deployment was started
/// with, stored with it (`deployments.config`), so that a later diff can tell what
/// changed since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    pub variables: Vec<ConfigEntry>,
    pub secrets: Vec<ConfigEntry>,
}

/// One variable or secret, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// `repository` or the environment's name.
    pub scope: String,
    pub name: String,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

impl ConfigSnapshot {
    /// Reads a stored snapshot; one that cannot be read counts as empty.
    pub fn parse(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The snapshot of what the environment uses now.
    pub async fn current(
        store: &Store,
        repository_id: &str,
        environment: &str,
    ) -> ferry_store::Result<Self> {
        let entry = |environment: &str, name: String, updated_at: i64| ConfigEntry {
            scope: scope(environment).to_string(),
            name,
            updated_at,
        };
        let variables = store.variables(repository_id, Some(environment)).await?;
        let secrets = store.secret_names(repository_id, Some(environment)).await?;
        Ok(Self {
            variables: variables
                .into_iter()
                .map(|v| entry(&v.environment, v.name, v.updated_at))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|v| entry(&v.environment, v.name, v.updated_at))
                .collect(),
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A variable or secret stored for the whole repository has the empty environment.
fn scope(environment: &str) -> &str {
    if environment.is_empty() {
        "repository"
    } else {
        environment
    }
}

/// What a deployment changes, as the approver's view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleaseDiff {
    /// The release live in the environment now (`None`: nothing is live).
    pub live_release: Option<String>,
    /// Commits in the candidate that the live release lacks, newest first.
    pub commits: Vec<LogEntry>,
    /// Artifacts whose digest differs, added (`old` none) or removed (`new` none).
    pub artifacts: Vec<ArtifactChange>,
    /// Every image of the candidate, with the live release's image of the same job.
    pub images: Vec<ImageChange>,
    pub variables: Vec<NameChange>,
    pub secrets: Vec<NameChange>,
}

impl ReleaseDiff {
    /// One line saying what changes: `first release`, or e.g. `3 commits, 2 artifacts,
    /// 1 image, variables: 1 added, secrets: 1 changed` (nothing: `no change`).
    pub fn summary(&self) -> String {
        if self.live_release.is_none() {
            return "first release in the environment".into();
        }
        let plural = |n: usize, one: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {one}s")
            }
        };
        let mut parts = Vec::new();
        if !self.commits.is_empty() {
            parts.push(plural(self.commits.len(), "commit"));
        }
        if !self.artifacts.is_empty() {
            parts.push(format!(
                "{} changed",
                plural(self.artifacts.len(), "artifact")
            ));
        }
        let images = self
            .images
            .iter()
            .filter(|i| i.old.as_deref() != Some(i.new.as_str()))
            .count();
        if images > 0 {
            parts.push(format!("{} changed", plural(images, "image")));
        }
        for (what, list) in [("variables", &self.variables), ("secrets", &self.secrets)] {
            let mut counts = Vec::new();
            for (c, word) in [
                (Change::Added, "added"),
                (Change::Changed, "changed"),
                (Change::Removed, "removed"),
            ] {
                let n = list.iter().filter(|x| x.change == c).count();
                if n > 0 {
                    counts.push(format!("{n} {word}"));
                }
            }
            if !counts.is_empty() {
                parts.push(format!("{what}: {}", counts.join(", ")));
            }
        }
        if parts.is_empty() {
            "no change".into()
        } else {
            parts.join(", ")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactChange {
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageChange {
    pub job: String,
    /// `name@digest` of the live release's image.
    pub old: Option<String>,
    pub new: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NameChange {
    pub scope: String,
    pub name: String,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Changed,
    Removed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
        }
    }
}

/// The live side of a diff: the release live now and the configuration it was
/// deployed with.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    pub release: &'a Release,
    pub config: &'a ConfigSnapshot,
}

impl ReleaseDiff {
    /// The diff between what is live and `candidate` with the configuration `now`.
    pub fn between(
        live: Option<Live<'_>>,
        candidate: &Release,
        now: &ConfigSnapshot,
        commits: Vec<LogEntry>,
    ) -> Self {
        let old = live.map(|l| l.release);
        let mut artifacts = Vec::new();
        for a in &candidate.artifacts {
            let before = old.and_then(|o| o.artifacts.iter().find(|x| x.path == a.path));
            if before.map(|b| &b.digest) != Some(&a.digest) {
                artifacts.push(ArtifactChange {
                    path: a.path.clone(),
                    old: before.map(|b| b.digest.clone()),
                    new: Some(a.digest.clone()),
                });
            }
        }
        for b in old.iter().flat_map(|o| &o.artifacts) {
            if !candidate.artifacts.iter().any(|a| a.path == b.path) {
                artifacts.push(ArtifactChange {
                    path: b.path.clone(),
                    old: Some(b.digest.clone()),
                    new: None,
                });
            }
        }
        let images = candidate
            .images
            .iter()
            .map(|i| ImageChange {
                job: i.job.clone(),
                old: old
                    .and_then(|o| o.images.iter().find(|x| x.job == i.job))
                    .map(|b| b.reference()),
                new: i.reference(),
            })
            .collect();
        let empty = ConfigSnapshot::default();
        let before = live.map(|l| l.config).unwrap_or(&empty);
        // With nothing live, everything is new: "added" would say nothing.
        let report_added = live.is_some();
        Self {
            live_release: old.map(|o| o.name.clone()),
            commits,
            artifacts,
            images,
            variables: names(&before.variables, &now.variables, report_added),
            secrets: names(&before.secrets, &now.secrets, report_added),
        }
    }
}

fn names(before: &[ConfigEntry], now: &[ConfigEntry], report_added: bool) -> Vec<NameChange> {
    let change = |e: &ConfigEntry, change| NameChange {
        scope: e.scope.clone(),
        name: e.name.clone(),
        change,
    };
    let mut out = Vec::new();
    for e in now {
        match before
            .iter()
            .find(|b| b.scope == e.scope && b.name == e.name)
        {
            None if report_added => out.push(change(e, Change::Added)),
            Some(b) if b.updated_at != e.updated_at => out.push(change(e, Change::Changed)),
            _ => {}
        }
    }
    for b in before {
        if !now.iter().any(|e| e.scope == b.scope && e.name == b.name) {
            out.push(change(b, Change::Removed));
        }
    }
    out
}

/// The diff a deployment would make in its environment now. `mirror` is the
/// repository's git mirror (for the commits; none are listed when it cannot answer).
pub async fn release_diff(
    store: &Store,
    mirror: &Path,
    dep: &Deployment,
    candidate: &Release,
) -> ferry_store::Result<ReleaseDiff> {
    let live = store
        .live_deployment(&dep.repository_id, &dep.environment)
        .await?
        .filter(|l| l.id != dep.id);
    let old = match &live {
        Some(l) => Some(store.release(&dep.repository_id, &l.release_id).await?),
        None => None,
    };
    let from = old.as_ref().map(|o| o.commit_sha.clone());
    let key = (
        mirror.to_path_buf(),
        from.clone(),
        candidate.commit_sha.clone(),
    );
    // The commits between two commits never change: git is asked once per pair.
    let known = COMMITS.lock().ok().and_then(|k| k.get(&key).cloned());
    let commits = match known {
        Some(commits) => commits,
        None => match ferry_source::git::log_range(
            mirror,
            from.as_deref(),
            &candidate.commit_sha,
            MAX_COMMITS,
        )
        .await
        {
            Ok(commits) => {
                if let Ok(mut k) = COMMITS.lock() {
                    if k.len() >= 1024 {
                        k.clear();
                    }
                    k.insert(key, commits.clone());
                }
                commits
            }
            Err(_) => Vec::new(),
        },
    };
    let before = ConfigSnapshot::parse(live.as_ref().and_then(|l| l.config.as_deref()));
    let now = ConfigSnapshot::current(store, &dep.repository_id, &dep.environment).await?;
    let live = old.as_ref().map(|release| Live {
        release,
        config: &before,
    });
    Ok(ReleaseDiff::between(live, candidate, &now, commits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_store::{ReleaseArtifact, ReleaseImage};

    fn release(name: &str, files: &[(&str, &str)], image: &str) -> Release {
        Release {
            id: format!("id-{name}"),
            repository_id: "repo".into(),
            name: name.into(),
            run_id: "run".into(),
            run_number: 1,
            commit_sha: "c0ffee".into(),
            git_ref: "refs/heads/main".into(),
            tag: None,
            author: "Ann <ann@example.com>".into(),
            triggered_by: None,
            plan_hash: String::new(),
            ferry_version: String::new(),
            delivery: String::new(),
            created_at: 0,
            pruned_at: None,
            artifacts: files
                .iter()
                .map(|(path, digest)| ReleaseArtifact {
                    job: "build".into(),
                    path: path.to_string(),
                    digest: digest.to_string(),
                    size: 1,
                    mode: 0o644,
                })
                .collect(),
            images: vec![ReleaseImage {
                job: "image".into(),
                name: "127.0.0.1:5000/app".into(),
                digest: image.into(),
            }],
        }
    }

    fn entry(scope: &str, name: &str, at: i64) -> ConfigEntry {
        ConfigEntry {
            scope: scope.into(),
            name: name.into(),
            updated_at: at,
        }
    }

    #[test]
    fn digests_and_names_old_to_new() {
        let old = release(
            "r1",
            &[("app", "sha256:a1"), ("gone", "sha256:g")],
            "sha256:i1",
        );
        let new = release(
            "r2",
            &[("app", "sha256:a2"), ("same", "sha256:s")],
            "sha256:i2",
        );
        let mut old_same = old.clone();
        old_same.artifacts.push(new.artifacts[1].clone());
        let before = ConfigSnapshot {
            variables: vec![entry("repository", "PORT", 1), entry("prod", "GONE", 1)],
            secrets: vec![entry("prod", "TOKEN", 5)],
        };
        let now = ConfigSnapshot {
            variables: vec![entry("repository", "PORT", 1), entry("prod", "NEW", 2)],
            secrets: vec![entry("prod", "TOKEN", 6)],
        };
        let live = Live {
            release: &old_same,
            config: &before,
        };
        let diff = ReleaseDiff::between(Some(live), &new, &now, vec![]);
        assert_eq!(diff.live_release.as_deref(), Some("r1"));
        assert_eq!(
            diff.artifacts,
            vec![
                ArtifactChange {
                    path: "app".into(),
                    old: Some("sha256:a1".into()),
                    new: Some("sha256:a2".into())
                },
                ArtifactChange {
                    path: "gone".into(),
                    old: Some("sha256:g".into()),
                    new: None
                },
            ]
        );
        assert_eq!(
            diff.images,
            vec![ImageChange {
                job: "image".into(),
                old: Some("127.0.0.1:5000/app@sha256:i1".into()),
                new: "127.0.0.1:5000/app@sha256:i2".into()
            }]
        );
        let changes = |v: &[NameChange]| -> Vec<(String, Change)> {
            v.iter().map(|c| (c.name.clone(), c.change)).collect()
        };
        assert_eq!(
            changes(&diff.variables),
            vec![
                ("NEW".into(), Change::Added),
                ("GONE".into(), Change::Removed)
            ]
        );
        assert_eq!(
            changes(&diff.secrets),
            vec![("TOKEN".into(), Change::Changed)]
        );
        assert_eq!(
            diff.summary(),
            "2 artifacts changed, 1 image changed, variables: 1 added, 1 removed, secrets: 1 changed"
        );
        // The wire form the CLI and API clients read.
        let json = serde_json::to_value(&diff).expect("json");
        assert_eq!(json["secrets"][0]["change"], "changed");
        assert_eq!(json["artifacts"][1]["new"], serde_json::Value::Null);
    }

    #[test]
    fn with_nothing_live_nothing_is_reported_added() {
        let new = release("r1", &[("app", "sha256:a")], "sha256:i");
        let first = ReleaseDiff::between(None, &new, &ConfigSnapshot::default(), vec![]);
        assert_eq!(first.summary(), "first release in the environment");
        let now = ConfigSnapshot {
            variables: vec![entry("repository", "PORT", 1)],
            secrets: vec![],
        };
        let diff = ReleaseDiff::between(None, &new, &now, vec![]);
        assert_eq!(diff.live_release, None);
        assert!(diff.variables.is_empty());
        assert_eq!(diff.artifacts[0].old, None);
        assert_eq!(diff.images[0].old, None);
    }

    #[test]
    fn snapshots_round_trip_and_tolerate_garbage() {
        let s = ConfigSnapshot {
            variables: vec![entry("repository", "A", 1)],
            secrets: vec![entry("prod", "B", 2)],
        };
        assert_eq!(ConfigSnapshot::parse(Some(&s.to_json())), s);
        // The form written before the snapshot was typed.
        let old = r#"{"secrets":[{"name":"B","scope":"prod","updated_at":2}],"variables":[{"name":"A","scope":"repository","updated_at":1}]}"#;
        assert_eq!(ConfigSnapshot::parse(Some(old)), s);
        assert_eq!(
            ConfigSnapshot::parse(Some("not json")),
            ConfigSnapshot::default()
        );
        assert_eq!(ConfigSnapshot::parse(None), ConfigSnapshot::default());
    }
}
