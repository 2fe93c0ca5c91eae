//! Where each run of the queue is and why a queued one waits, as the dispatcher decides
//! (`Store::claim_next_run`): pure, from the queue's entries and the server's limits.

use std::collections::HashMap;

use ferry_store::{QueueEntry, Status};

/// The queue's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Runs this server executes at once (`--max-runs`).
    pub max_runs: usize,
    /// Runs of one repository at once (`--max-runs-per-repo`).
    pub max_per_repo: usize,
}

/// For each entry: where it runs (running) or why it waits (queued), for people.
pub fn explain(entries: &[QueueEntry], here: &str, limits: Limits) -> Vec<String> {
    let running: Vec<&QueueEntry> = entries
        .iter()
        .filter(|e| e.run.status == Status::Running)
        .collect();
    let mut per_repo: HashMap<&str, usize> = HashMap::new();
    for e in &running {
        *per_repo.entry(e.run.repository_id.as_str()).or_default() += 1;
    }
    let mut ahead = 0usize;
    entries
        .iter()
        .map(|e| {
            if e.run.status == Status::Running {
                return match e.owner.as_deref() {
                    Some(owner) if owner == here => "on this server".to_string(),
                    Some(owner) => format!("on server {owner}"),
                    None => "starting".to_string(),
                };
            }
            let repo = e.run.repository_id.as_str();
            if let Some(group) = &e.group
                && let Some(holder) = running.iter().find(|r| {
                    r.run.repository_id == repo && r.group.as_deref() == Some(group.as_str())
                })
            {
                return format!(
                    "waits for run #{} of its concurrency group `{group}`",
                    holder.run.number
                );
            }
            let here_running = per_repo.get(repo).copied().unwrap_or(0);
            if here_running >= limits.max_per_repo {
                return format!(
                    "its repository has {here_running} runs running, the most at once (--max-runs-per-repo)"
                );
            }
            if running.len() >= limits.max_runs {
                return format!(
                    "every place is taken: {} runs running (--max-runs {})",
                    running.len(),
                    limits.max_runs
                );
            }
            ahead += 1;
            match ahead {
                1 => "next: about to start".to_string(),
                n => format!("behind {} queued run(s)", n - 1),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        number: i64,
        repo: &str,
        status: Status,
        group: Option<&str>,
        owner: Option<&str>,
    ) -> QueueEntry {
        QueueEntry {
            run: ferry_store::Run {
                id: format!("r{number}"),
                repository_id: repo.into(),
                number,
                event: "push".into(),
                git_ref: "main".into(),
                branch: Some("main".into()),
                tag: None,
                commit_sha: "0".repeat(40),
                dirty: false,
                author: "a".into(),
                message: "m".into(),
                status,
                error: None,
                triggered_by: None,
                created_at: number,
                started_at: None,
                finished_at: None,
            },
            group: group.map(str::to_string),
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn each_queued_run_says_why_it_waits() {
        use Status::{Queued, Running};
        let limits = Limits {
            max_runs: 3,
            max_per_repo: 2,
        };
        let entries = [
            entry(1, "a", Running, Some("deploy"), Some("srv-1")),
            entry(2, "a", Running, None, Some("srv-2")),
            entry(3, "a", Queued, Some("deploy"), None),
            entry(4, "a", Queued, None, None),
            entry(5, "b", Queued, None, None),
            entry(6, "b", Queued, None, None),
        ];
        let why = explain(&entries, "srv-1", limits);
        assert_eq!(
            why,
            [
                "on this server",
                "on server srv-2",
                "waits for run #1 of its concurrency group `deploy`",
                "its repository has 2 runs running, the most at once (--max-runs-per-repo)",
                "next: about to start",
                "behind 1 queued run(s)",
            ]
        );
        let full = [
            entry(1, "a", Running, None, Some("srv-1")),
            entry(2, "b", Running, None, Some("srv-1")),
            entry(3, "c", Running, None, Some("srv-1")),
            entry(4, "d", Queued, None, None),
        ];
        assert_eq!(
            explain(&full, "srv-1", limits)[3],
            "every place is taken: 3 runs running (--max-runs 3)"
        );
    }
}
