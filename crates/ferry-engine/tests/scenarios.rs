//! Engine scenarios on the dummy executor (no process, no container): each is a pipeline
//! and the status every job must end with, plus what the dummy saw. They run in
//! milliseconds, so they cover the engine's rules (order, concurrency, skips, retries,
//! timeouts, cancellation, failed preparation) case by case.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use ferry_exec::DummyExecutor;
use ferry_store::Status;
use tokio_util::sync::CancellationToken;

async fn fixture(concurrency: usize, dummy: &DummyExecutor) -> Fixture {
    Fixture::with_executor(concurrency, Arc::new(dummy.clone())).await
}

/// Runs `yaml` and checks every job's status: `(job, status)`.
async fn scenario(
    concurrency: usize,
    dummy: &DummyExecutor,
    yaml: &str,
    run: Status,
    jobs: &[(&str, Status)],
) -> (Fixture, ferry_engine::RunOutcome) {
    let f = fixture(concurrency, dummy).await;
    let outcome = f.run(yaml).await;
    for (job, want) in jobs {
        assert_eq!(
            Fixture::status(&outcome, job),
            *want,
            "job `{job}`: {}",
            Fixture::reason(&outcome, job)
        );
    }
    assert_eq!(outcome.status, run, "the run");
    (f, outcome)
}

#[tokio::test]
async fn a_chain_runs_in_order_and_output_reaches_the_log() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  build:
    steps:
      - run: echo compiled
      - run: echo linked
  test:
    needs: [build]
    run: echo tested
";
    let (f, outcome) = scenario(
        4,
        &dummy,
        yaml,
        Status::Success,
        &[("build", Status::Success), ("test", Status::Success)],
    )
    .await;
    let order: Vec<String> = dummy.steps().iter().map(|s| s.script.clone()).collect();
    assert_eq!(order, ["echo compiled", "echo linked", "echo tested"]);
    assert_eq!(f.log(&outcome, "build").await, "compiled\nlinked\n");
    let mut cleaned = dummy.cleaned();
    cleaned.sort();
    assert_eq!(cleaned, ["build", "test"], "every job cleaned up once");
}

#[tokio::test]
async fn independent_jobs_overlap_up_to_the_limit() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  a: { run: sleep 0.2 }
  b: { run: sleep 0.2 }
  c: { run: sleep 0.2 }
";
    scenario(
        2,
        &dummy,
        yaml,
        Status::Success,
        &[
            ("a", Status::Success),
            ("b", Status::Success),
            ("c", Status::Success),
        ],
    )
    .await;
    let steps = dummy.steps();
    let at_once = |s: &ferry_exec::dummy::DummyStep| {
        steps
            .iter()
            .filter(|o| o.started < s.ended && s.started < o.ended)
            .count()
    };
    let most = steps.iter().map(at_once).max().unwrap_or(0);
    assert_eq!(most, 2, "two at a time, never three");
}

#[tokio::test]
async fn a_failure_skips_what_needs_it_and_allowed_failures_do_not() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  lint:
    run: exit 2
    allow_failure: true
  build:
    run: exit 1
  test:
    needs: [build]
    run: echo never
  docs:
    needs: [lint]
    run: echo still
";
    let (_, outcome) = scenario(
        4,
        &dummy,
        yaml,
        Status::Failed,
        &[
            ("lint", Status::Failed),
            ("build", Status::Failed),
            ("test", Status::Skipped),
            ("docs", Status::Success),
        ],
    )
    .await;
    assert_eq!(
        Fixture::reason(&outcome, "test"),
        "needs `build`, which failed"
    );
    assert!(dummy.steps().iter().all(|s| s.script != "echo never"));
}

#[tokio::test]
async fn retries_run_again_only_for_the_exit_codes_named() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  flaky:
    run: exit 75
    retry: { max: 2, exit_codes: [75] }
  broken:
    run: exit 1
    retry: { max: 2, exit_codes: [75] }
";
    scenario(
        4,
        &dummy,
        yaml,
        Status::Failed,
        &[("flaky", Status::Failed), ("broken", Status::Failed)],
    )
    .await;
    let tries = |job: &str| dummy.steps().iter().filter(|s| s.job == job).count();
    assert_eq!(tries("flaky"), 3, "first try and two retries");
    assert_eq!(tries("broken"), 1, "exit 1 is not retried");
}

#[tokio::test]
async fn a_job_timeout_ends_its_step() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  slow:
    run: sleep 30
    timeout: 100ms
";
    let (_, outcome) = scenario(1, &dummy, yaml, Status::Failed, &[("slow", Status::Failed)]).await;
    assert!(
        Fixture::reason(&outcome, "slow").contains("timed out"),
        "{}",
        Fixture::reason(&outcome, "slow")
    );
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
    let trigger = {
        let (cancel, dummy) = (cancel.clone(), dummy.clone());
        tokio::spawn(async move {
            // Cancel once the dummy is inside `long` (bounded: 10 s).
            for _ in 0..1000 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if !dummy.begun().is_empty() {
                    cancel.cancel();
                    return;
                }
            }
        })
    };
    let outcome = f.run_with(yaml, cancel).await;
    trigger.await.expect("join");
    assert_eq!(outcome.status, Status::Cancelled);
    assert_eq!(Fixture::status(&outcome, "long"), Status::Cancelled);
    assert_eq!(Fixture::status(&outcome, "after"), Status::Cancelled);
    assert!(dummy.steps().iter().all(|s| s.script != "echo never"));
}

#[tokio::test]
async fn a_job_that_cannot_be_prepared_fails_with_the_reason() {
    let dummy = DummyExecutor::failing_prepare(&["setup"]);
    let yaml = "jobs:
  setup:
    run: echo never
  other:
    run: echo fine
";
    let (f, outcome) = scenario(
        2,
        &dummy,
        yaml,
        Status::Failed,
        &[("setup", Status::Failed), ("other", Status::Success)],
    )
    .await;
    assert!(
        f.log(&outcome, "setup")
            .await
            .contains("the dummy refuses to prepare `setup`")
    );
    assert!(dummy.steps().iter().all(|s| s.job != "setup"));
}

#[tokio::test]
async fn matrix_jobs_each_run_with_their_values() {
    let dummy = DummyExecutor::default();
    let yaml = "jobs:
  test:
    matrix: { db: ['15', '16'] }
    env: { DB: '${{ matrix.db }}' }
    run: echo testing
";
    scenario(
        4,
        &dummy,
        yaml,
        Status::Success,
        &[
            ("test (db=15)", Status::Success),
            ("test (db=16)", Status::Success),
        ],
    )
    .await;
    let mut dbs: Vec<String> = dummy
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
