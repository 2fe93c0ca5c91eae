//! Engine scenarios on the dummy executor (no process, no container): each is a pipeline
//! and the status every job must end with, plus what the dummy saw. They run in
//! milliseconds, so they cover the engine's rules (order, concurrency, skips, retries,
//! timeouts, cancellation, failed preparation) case by case.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, cancel_when};
use ferry_engine::RunOutcome;
use ferry_exec::DummyExecutor;
use ferry_store::Status;
use tokio_util::sync::CancellationToken;

async fn fixture(concurrency: usize, dummy: &DummyExecutor) -> Fixture {
    Fixture::with_executor(concurrency, Arc::new(dummy.clone())).await
}

/// What a scenario left: its fixture, the run's outcome and the dummy that ran it.
struct Ran {
    f: Fixture,
    outcome: RunOutcome,
    dummy: DummyExecutor,
}

/// Runs `yaml` on `dummy`, `concurrency` jobs at a time, and checks that the run ends
/// `run` and every job as the comment on its line in `yaml` says (`  build:  # success`;
/// for a matrix job, each of its instances).
async fn scenario(dummy: DummyExecutor, concurrency: usize, yaml: &str, run: Status) -> Ran {
    let f = fixture(concurrency, &dummy).await;
    let outcome = f.run(yaml).await;
    let expected = expected_statuses(yaml);
    let base = |job: &str| job.split(" (").next().unwrap_or(job).to_string();
    for job in &outcome.jobs {
        let name = base(&job.name);
        let want = expected
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("`{}` has no `# STATUS` in:\n{yaml}", job.name))
            .1;
        assert_eq!(
            job.status,
            want,
            "job `{}`: {}",
            job.name,
            Fixture::reason(&outcome, &job.name)
        );
    }
    for (name, _) in &expected {
        let ran = outcome.jobs.iter().any(|j| base(&j.name) == *name);
        assert!(ran, "job `{name}` is not in the run: {:?}", outcome.jobs);
    }
    assert_eq!(outcome.status, run, "the run");
    Ran { f, outcome, dummy }
}

/// The `# STATUS` comments on the job lines (indented by two) of `yaml`.
fn expected_statuses(yaml: &str) -> Vec<(&str, Status)> {
    let expected: Vec<_> = yaml
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_once("# "))
        .map(|(head, status)| {
            let name = head.split(':').next().unwrap_or(head).trim();
            let status = Status::parse(status.trim())
                .unwrap_or_else(|| panic!("`{status}` is not a status (job `{name}`)"));
            (name, status)
        })
        .collect();
    assert!(!expected.is_empty(), "no job has a `# STATUS`:\n{yaml}");
    expected
}

#[tokio::test]
async fn a_chain_runs_in_order_and_output_reaches_the_log() {
    let yaml = "jobs:
  build:  # success
    steps:
      - run: echo compiled
      - run: echo linked
  test:  # success
    needs: [build]
    run: echo tested
";
    let Ran { f, outcome, dummy } =
        scenario(DummyExecutor::default(), 4, yaml, Status::Success).await;
    let order: Vec<String> = dummy.steps().iter().map(|s| s.script.clone()).collect();
    assert_eq!(order, ["echo compiled", "echo linked", "echo tested"]);
    assert_eq!(f.log(&outcome, "build").await, "compiled\nlinked\n");
    let mut cleaned = dummy.cleaned();
    cleaned.sort();
    assert_eq!(cleaned, ["build", "test"], "every job cleaned up once");
}

#[tokio::test]
async fn independent_jobs_overlap_up_to_the_limit() {
    let yaml = "jobs:
  a: { run: sleep 0.2 }  # success
  b: { run: sleep 0.2 }  # success
  c: { run: sleep 0.2 }  # success
";
    let steps = scenario(DummyExecutor::default(), 2, yaml, Status::Success)
        .await
        .dummy
        .steps();
    // How many run at the moment `s` starts (counting the steps that overlap `s` at
    // any time would count two that each overlap it at different times).
    let at_once = |s: &ferry_exec::dummy::DummyStep| {
        steps
            .iter()
            .filter(|o| o.started <= s.started && s.started < o.ended)
            .count()
    };
    let most = steps.iter().map(at_once).max().unwrap_or(0);
    assert_eq!(most, 2, "two at a time, never three");
}

#[tokio::test]
async fn a_failure_skips_what_needs_it_and_allowed_failures_do_not() {
    let yaml = "jobs:
  lint:  # failed
    run: exit 2
    allow_failure: true
  build:  # failed
    run: exit 1
  test:  # skipped
    needs: [build]
    run: echo never
  docs:  # success
    needs: [lint]
    run: echo still
";
    let ran = scenario(DummyExecutor::default(), 4, yaml, Status::Failed).await;
    assert_eq!(
        Fixture::reason(&ran.outcome, "test"),
        "needs `build`, which failed"
    );
    assert!(ran.dummy.steps().iter().all(|s| s.script != "echo never"));
}

#[tokio::test]
async fn retries_run_again_only_for_the_exit_codes_named() {
    let yaml = "jobs:
  flaky:  # failed
    run: exit 75
    retry: { max: 2, exit_codes: [75] }
  broken:  # failed
    run: exit 1
    retry: { max: 2, exit_codes: [75] }
";
    let dummy = scenario(DummyExecutor::default(), 4, yaml, Status::Failed)
        .await
        .dummy;
    let tries = |job: &str| dummy.steps().iter().filter(|s| s.job == job).count();
    assert_eq!(tries("flaky"), 3, "first try and two retries");
    assert_eq!(tries("broken"), 1, "exit 1 is not retried");
}

#[tokio::test]
async fn a_job_timeout_ends_its_step() {
    let yaml = "jobs:\n  slow:  # failed\n    run: sleep 30\n    timeout: 100ms\n";
    let ran = scenario(DummyExecutor::default(), 1, yaml, Status::Failed).await;
    let reason = Fixture::reason(&ran.outcome, "slow");
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn cancelling_stops_running_jobs_and_never_starts_the_rest() {
    let dummy = DummyExecutor::default();
    let f = fixture(1, &dummy).await;
    let yaml = "jobs:
  long:
    run: sleep 30
  after:
    needs: [long]
    run: echo never
";
    let cancel = CancellationToken::new();
    // Cancel once the dummy is inside `long` (bounded: 10 s).
    let watched = dummy.clone();
    let inside = move || !watched.begun().is_empty();
    let trigger = cancel_when(&cancel, Duration::from_secs(10), Duration::ZERO, inside);
    let outcome = f.run_with(yaml, cancel).await;
    assert!(trigger.await.expect("join"), "the dummy never began `long`");
    assert_eq!(outcome.status, Status::Cancelled);
    let statuses = Fixture::statuses(&outcome, &["long", "after"]);
    assert_eq!(statuses, [Status::Cancelled, Status::Cancelled]);
    assert!(dummy.steps().iter().all(|s| s.script != "echo never"));
}

#[tokio::test]
async fn a_job_that_cannot_be_prepared_fails_with_the_reason() {
    let dummy = DummyExecutor::failing_prepare(&["setup"]);
    let yaml = "jobs:
  setup:  # failed
    run: echo never
  other:  # success
    run: echo fine
";
    let Ran { f, outcome, dummy } = scenario(dummy, 2, yaml, Status::Failed).await;
    assert!(
        f.log(&outcome, "setup")
            .await
            .contains("the dummy refuses to prepare `setup`")
    );
    assert!(dummy.steps().iter().all(|s| s.job != "setup"));
}

#[tokio::test]
async fn matrix_jobs_each_run_with_their_values() {
    let yaml = "jobs:
  test:  # success
    matrix: { db: ['15', '16'] }
    env: { DB: '${{ matrix.db }}' }
    run: echo testing
";
    let ran = scenario(DummyExecutor::default(), 4, yaml, Status::Success).await;
    let jobs = Fixture::statuses(&ran.outcome, &["test (db=15)", "test (db=16)"]);
    assert_eq!(jobs, [Status::Success, Status::Success]);
    let mut dbs: Vec<String> = ran
        .dummy
        .steps()
        .iter()
        .filter_map(|s| {
            s.env
                .iter()
                .find(|(k, _)| k == "DB")
                .map(|(_, v)| v.clone())
        })
        .collect();
    dbs.sort();
    assert_eq!(dbs, ["15", "16"]);
}
