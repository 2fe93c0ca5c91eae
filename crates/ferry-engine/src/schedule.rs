//! The scheduler: which job starts next, which is skipped and why, and how the run ends.
//! Pure: the engine's loop asks it what to do, does it, and tells it how each job ended.
//!
//! Rules: a job starts once every job it needs has finished, in plan order, while fewer
//! than `concurrency` jobs run. A job whose need failed (without `allow_failure`), was
//! cancelled or skipped is skipped with the reason (at once, even when the concurrency
//! limit is reached, so that what depends on it is skipped in the same pass). A run
//! fails when a job failed without `allow_failure` or was cancelled; it is cancelled
//! when it was cancelled.

use std::collections::HashMap;

use ferry_plan::{Decision, Plan};
use ferry_store::Status;

/// What the engine should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start job `i`.
    Start(usize),
    /// Record job `i` as skipped, for this reason.
    Skip { job: usize, reason: String },
}

/// How each job of a run stands.
#[derive(Debug, Clone)]
pub struct Scheduler {
    names: Vec<String>,
    needs: Vec<Vec<usize>>,
    allow_failure: Vec<bool>,
    /// `None`: not finished.
    done: Vec<Option<(Status, Option<String>)>>,
    started: Vec<bool>,
    running: usize,
    concurrency: usize,
}

impl Scheduler {
    /// Jobs that will not run (skipped, reused) are settled from the start.
    pub fn new(plan: &Plan, concurrency: usize) -> Self {
        let index: HashMap<&str, usize> = plan
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        Self {
            names: plan.jobs.iter().map(|j| j.name.clone()).collect(),
            needs: plan
                .jobs
                .iter()
                .map(|j| {
                    j.needs
                        .iter()
                        .filter_map(|n| index.get(n.as_str()).copied())
                        .collect()
                })
                .collect(),
            allow_failure: plan.jobs.iter().map(|j| j.allow_failure).collect(),
            done: plan.jobs.iter().map(|j| settled(&j.decision)).collect(),
            started: vec![false; plan.jobs.len()],
            running: 0,
            concurrency: concurrency.max(1),
        }
    }

    /// What to do now: jobs to start (counted as running) and jobs to skip (counted as
    /// finished), in plan order.
    pub fn poll(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.names.len() {
            if self.started[i] || self.done[i].is_some() {
                continue;
            }
            if self.needs[i].iter().any(|d| self.done[*d].is_none()) {
                continue;
            }
            if let Some(reason) = self.blocked(i) {
                self.done[i] = Some((Status::Skipped, Some(reason.clone())));
                actions.push(Action::Skip { job: i, reason });
                continue;
            }
            if self.running >= self.concurrency {
                continue;
            }
            self.started[i] = true;
            self.running += 1;
            actions.push(Action::Start(i));
        }
        actions
    }

    /// Why job `i` cannot run, when one of its needs did not succeed.
    fn blocked(&self, i: usize) -> Option<String> {
        self.needs[i].iter().find_map(|d| {
            let (status, _) = self.done[*d].as_ref()?;
            let ok =
                *status == Status::Success || (*status == Status::Failed && self.allow_failure[*d]);
            (!ok).then(|| {
                let what = match status {
                    Status::Failed => "failed",
                    Status::Cancelled => "was cancelled",
                    _ => "is skipped",
                };
                format!("needs `{}`, which {what}", self.names[*d])
            })
        })
    }

    /// A started job ended.
    pub fn finished(&mut self, i: usize, status: Status, reason: Option<String>) {
        if self.started[i] && self.done[i].is_none() {
            self.running = self.running.saturating_sub(1);
        }
        self.done[i] = Some((status, reason));
    }

    /// Settles a job that never started (it could not be prepared, or the run ended).
    pub fn settle(&mut self, i: usize, status: Status, reason: String) {
        if self.done[i].is_none() {
            self.done[i] = Some((status, Some(reason)));
        }
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Jobs neither finished nor settled.
    pub fn unsettled(&self) -> Vec<usize> {
        (0..self.done.len())
            .filter(|i| self.done[*i].is_none())
            .collect()
    }

    /// How each job ended (unsettled jobs count as cancelled).
    pub fn results(&self) -> Vec<(Status, Option<String>)> {
        self.done
            .iter()
            .map(|d| d.clone().unwrap_or((Status::Cancelled, None)))
            .collect()
    }

    /// How the run ends.
    pub fn outcome(&self, cancelled: bool) -> Status {
        let results = self.results();
        let failed = results
            .iter()
            .zip(&self.allow_failure)
            .any(|((s, _), allowed)| *s == Status::Failed && !allowed);
        if cancelled {
            Status::Cancelled
        } else if failed || results.iter().any(|(s, _)| *s == Status::Cancelled) {
            Status::Failed
        } else {
            Status::Success
        }
    }
}

/// How a job that will not run is settled from the start: skipped, or reused.
pub(crate) fn settled(decision: &Decision) -> Option<(Status, Option<String>)> {
    match decision {
        Decision::Run => None,
        Decision::Skip { reason } => Some((Status::Skipped, Some(reason.clone()))),
        Decision::Reuse { number, .. } => Some((
            Status::Success,
            Some(format!("succeeded in run {number}; reused")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan from `name: needs…` lines; a name ending in `?` may fail, `-` is skipped.
    fn plan(spec: &str) -> Plan {
        let mut yaml = String::from("jobs:\n");
        for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (name, needs) = line.split_once(':').unwrap_or((line, ""));
            let name = name.trim();
            let (name, allow, skip) = match name.chars().last() {
                Some('?') => (&name[..name.len() - 1], true, false),
                Some('-') => (&name[..name.len() - 1], false, true),
                _ => (name, false, false),
            };
            yaml.push_str(&format!("  {name}:\n    run: 'true'\n"));
            if allow {
                yaml.push_str("    allow_failure: true\n");
            }
            if skip {
                yaml.push_str("    if: ${{ event.branch == 'nowhere' }}\n");
            }
            let needs: Vec<&str> = needs.split_whitespace().collect();
            if !needs.is_empty() {
                yaml.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
            }
        }
        let loaded = ferry_config::load(&yaml).expect("pipeline");
        let event = ferry_plan::Event {
            kind: ferry_plan::EventKind::Push,
            branch: Some("main".into()),
            tag: None,
            git_ref: "refs/heads/main".into(),
            sha: "0123456789abcdef".into(),
            author: "Ann".into(),
            message: "m".into(),
            changed_files: None,
            pull_request: None,
        };
        ferry_plan::plan(&loaded.pipeline, &event, &Default::default()).expect("plan")
    }

    fn names(p: &Plan, actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Start(i) => format!("start {}", p.jobs[*i].name),
                Action::Skip { job, reason } => format!("skip {}: {reason}", p.jobs[*job].name),
            })
            .collect()
    }

    /// A scheduler over `spec` with `limit`, whose first poll starts `first`.
    fn started(spec: &str, limit: usize, first: &[&str]) -> (Plan, Scheduler) {
        let p = plan(spec);
        let mut s = Scheduler::new(&p, limit);
        let want: Vec<String> = first.iter().map(|j| format!("start {j}")).collect();
        assert_eq!(names(&p, &s.poll()), want);
        (p, s)
    }

    fn index(p: &Plan, name: &str) -> usize {
        p.jobs.iter().position(|j| j.name == name).expect("job")
    }

    #[test]
    fn starts_in_plan_order_within_the_limit() {
        let (p, mut s) = started("a:\nb:\nc:\nd: a b", 2, &["a", "b"]);
        assert!(s.poll().is_empty(), "the limit holds");
        s.finished(index(&p, "a"), Status::Success, None);
        assert_eq!(names(&p, &s.poll()), ["start c"]);
        s.finished(index(&p, "b"), Status::Success, None);
        assert_eq!(names(&p, &s.poll()), ["start d"]);
        assert_eq!(s.running(), 2);
    }

    #[test]
    fn a_failed_need_skips_the_chain_in_one_pass() {
        let (p, mut s) = started("a:\nb: a\nc: b\nd:", 1, &["a"]);
        s.finished(index(&p, "a"), Status::Failed, Some("exit 1".into()));
        assert_eq!(
            names(&p, &s.poll()),
            [
                "skip b: needs `a`, which failed",
                "skip c: needs `b`, which is skipped",
                "start d"
            ]
        );
        s.finished(index(&p, "d"), Status::Success, None);
        assert!(s.unsettled().is_empty());
        assert_eq!(s.outcome(false), Status::Failed);
    }

    #[test]
    fn allowed_failures_and_plan_skips() {
        // The plan skipped `x` and what needs it: settled before anything runs.
        let (p, mut s) = started("lint?:\nx-:\nbuild: lint\nafter: x", 4, &["lint"]);
        assert_eq!(s.results()[index(&p, "after")].0, Status::Skipped);
        s.finished(index(&p, "lint"), Status::Failed, None);
        assert_eq!(names(&p, &s.poll()), ["start build"]);
        s.finished(index(&p, "build"), Status::Success, None);
        assert_eq!(s.outcome(false), Status::Success, "lint may fail");
    }

    #[test]
    fn cancellation_ends_the_run_cancelled_and_leaves_the_rest_unsettled() {
        let (p, mut s) = started("a:\nb: a", 2, &["a"]);
        s.finished(index(&p, "a"), Status::Cancelled, Some("cancelled".into()));
        let b = index(&p, "b");
        // The engine stops asking once cancelled; `b` never started.
        assert_eq!(s.unsettled(), [b]);
        s.settle(
            b,
            Status::Cancelled,
            "the run was cancelled before it started".into(),
        );
        assert_eq!(s.outcome(true), Status::Cancelled);
        assert_eq!(
            s.outcome(false),
            Status::Failed,
            "a cancelled job fails a run"
        );
        assert_eq!(s.results()[b].0, Status::Cancelled);
    }
}
