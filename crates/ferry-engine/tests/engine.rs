//! The engine with real processes: statuses, parallelism, timeouts, retries,
//! cancellation without orphans, artifacts, allowed failures, reports and logs.

use std::time::Duration;

use ferry_store::Status;
use ferry_testkit::pids_in;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Fixture, assert_ended, cancel_when};
use ferry_engine::RunOutcome;

/// The engine over real processes, four jobs at a time.
async fn fixture() -> Fixture {
    Fixture::build(4, None).await
}

/// Runs `yaml` on a new [`fixture`]; `{dir}` in it stands for the fixture's directory
/// (outside the workspace, and kept after the run).
async fn run_fresh(yaml: &str) -> (Fixture, RunOutcome) {
    let f = fixture().await;
    let out = f
        .run(&yaml.replace("{dir}", &f.dir.display().to_string()))
        .await;
    (f, out)
}

#[tokio::test]
async fn success_and_failure() {
    let (f, out) = run_fresh("jobs:\n  ok:\n    run: cat input.txt\n  bad:\n    steps:\n      - run: echo before\n      - run: exit 3\n      - run: echo never\n").await;
    assert_eq!(out.status, Status::Failed);
    let statuses = Fixture::statuses(&out, &["ok", "bad"]);
    assert_eq!(statuses, [Status::Success, Status::Failed]);
    assert_eq!(f.log(&out, "ok").await, "from the source\n");
    assert_eq!(f.log(&out, "bad").await, "before\n");
    let bad = f.stored_job(&out, "bad").await;
    assert_eq!(bad.exit_code, Some(3));
    assert_eq!(
        bad.reason.as_deref(),
        Some("step 2 `exit 3` exited with code 3")
    );
    let steps = f.store.steps(&bad.id).await.expect("steps");
    let statuses: Vec<Status> = steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [Status::Success, Status::Failed, Status::Skipped]);
}

#[tokio::test]
async fn independent_jobs_run_in_parallel() {
    let (f, out) = run_fresh("jobs:\n  a: { run: sleep 0.4 }\n  b: { run: sleep 0.4 }\n  c: { run: sleep 0.4 }\n  d: { run: sleep 0.4 }\n").await;
    assert_eq!(out.status, Status::Success);
    let jobs = f.jobs(&out).await;
    let latest_start = jobs
        .iter()
        .filter_map(|j| j.started_at)
        .max()
        .expect("start");
    let earliest_end = jobs
        .iter()
        .filter_map(|j| j.finished_at)
        .min()
        .expect("end");
    assert!(
        latest_start < earliest_end,
        "all four intervals overlap: {jobs:#?}"
    );
}

#[tokio::test]
async fn needs_order_and_skip_after_failure() {
    let (_f, out) = run_fresh("jobs:\n  first: { run: 'sleep 0.2; exit 1' }\n  second: { needs: first, run: echo no }\n  third: { needs: second, run: echo no }\n  other: { run: echo yes }\n").await;
    let second = (Status::Skipped, Some("needs `first`, which failed"));
    assert_eq!(Fixture::ended(&out, "second"), second);
    let third = (Status::Skipped, Some("needs `second`, which is skipped"));
    assert_eq!(Fixture::ended(&out, "third"), third);
    assert_eq!(Fixture::status(&out, "other"), Status::Success);
}

#[tokio::test]
async fn timeouts_kill_the_step() {
    let (f, out) = run_fresh("jobs:\n  slow:\n    timeout: 1s\n    run: |\n      sleep 300 & echo $! >> {dir}/pids\n      echo $$ >> {dir}/pids\n      sleep 300\n  step:\n    steps:\n      - run: sleep 300\n        timeout: 300ms\n").await;
    let slow = (Status::Failed, Some("the job timed out after 1s"));
    assert_eq!(Fixture::ended(&out, "slow"), slow);
    assert_eq!(
        Fixture::reason(&out, "step"),
        "step 1 `sleep 300` timed out after 300ms"
    );
    assert_ended(&f.dir.join("pids"), Some(2), "its timed-out step");
}

#[tokio::test]
async fn retries_until_success_and_only_when_asked() {
    let (f, out) = run_fresh("jobs:\n  flaky:\n    retry: 3\n    run: |\n      echo x >> {dir}/count\n      [ $(wc -l < {dir}/count) -ge 3 ]\n  strict:\n    retry: { max: 2, exit_codes: [75] }\n    run: echo once; exit 4\n").await;
    assert_eq!(Fixture::status(&out, "flaky"), Status::Success);
    assert_eq!(f.stored_job(&out, "flaky").await.attempts, 3);
    let strict = f.stored_job(&out, "strict").await;
    assert_eq!(strict.attempts, 1, "exit code 4 is not in exit_codes");
    let log = f.log(&out, "flaky").await;
    assert!(log.contains("ferry: attempt 3 of 4"), "{log}");
}

#[tokio::test]
async fn cancel_kills_every_process_and_marks_jobs() {
    let f = fixture().await;
    let pidfile = f.dir.join("pids");
    let yaml = format!(
        "jobs:\n  long:\n    run: |\n      sleep 300 & echo $! >> {p}\n      (sleep 300; echo never) & echo $! >> {p}\n      echo $$ >> {p}\n      sleep 300\n  later:\n    needs: long\n    run: echo never\n",
        p = pidfile.display()
    );
    let cancel = CancellationToken::new();
    let watched = pidfile.clone();
    let all_started = move || pids_in(&watched).len() == 3;
    cancel_when(&cancel, Duration::from_secs(5), Duration::ZERO, all_started);
    let out = f.run_within(Duration::from_secs(20), &yaml, cancel).await;
    assert_eq!(out.status, Status::Cancelled);
    for job in ["long", "later"] {
        assert_eq!(Fixture::status(&out, job), Status::Cancelled, "{job}");
    }
    assert_ended(&pidfile, Some(3), "the cancelled run");
}

#[tokio::test]
async fn background_processes_end_with_their_job() {
    let (f, out) = run_fresh("jobs:\n  leaves:\n    steps:\n      - run: sleep 300 > /dev/null 2>&1 & echo $! >> {dir}/pids\n      - run: echo second step still sees it; kill -0 $(cat {dir}/pids)\n").await;
    f.assert_success(&out, "leaves").await;
    assert_ended(&f.dir.join("pids"), None, "its job (in the background)");
}

#[tokio::test]
async fn artifacts_flow_to_jobs_that_need_them() {
    let f = fixture().await;
    let yaml = "jobs:
  build:
    run: mkdir -p out/sub && echo bin > out/app && echo lib > out/sub/lib.so && echo x > other.txt
    artifacts: [out/app, \"out/**/*.so\"]
  package:
    needs: build
    run: cat out/app out/sub/lib.so && test ! -e other.txt
  release:
    needs: package
    run: cat out/app
  missing:
    run: 'true'
    artifacts: [nothing/here]
";
    let out = f.run(yaml).await;
    assert_eq!(
        Fixture::status(&out, "package"),
        Status::Success,
        "{}",
        f.log(&out, "package").await
    );
    assert_eq!(f.log(&out, "package").await, "bin\nlib\n");
    assert_eq!(
        f.log(&out, "release").await,
        "bin\n",
        "artifacts of indirect needs arrive too"
    );
    let missing = (
        Status::Failed,
        Some("artifact `nothing/here` matched no files"),
    );
    assert_eq!(Fixture::ended(&out, "missing"), missing);
}

#[tokio::test]
async fn allowed_failures_do_not_fail_the_run() {
    let (_f, out) = run_fresh("jobs:\n  optional:\n    allow_failure: true\n    run: exit 1\n  after:\n    needs: optional\n    run: echo ran\n").await;
    assert_eq!(out.status, Status::Success, "an allowed failure");
    let statuses = Fixture::statuses(&out, &["optional", "after"]);
    assert_eq!(statuses, [Status::Failed, Status::Success]);
}

#[tokio::test]
async fn junit_reports_are_recorded() {
    let f = fixture().await;
    let yaml = r#"jobs:
  test:
    run: |
      mkdir -p reports
      printf '<testsuite><testcase classname="a" name="one"/><testcase classname="a" name="two"><failure message="2 != 3"/></testcase><testcase name="three"><skipped/></testcase></testsuite>' > reports/a.xml
      exit 1
    reports: { junit: "reports/*.xml" }
"#;
    let out = f.run(yaml).await;
    let tests = f.jobs(&out).await[0]
        .tests
        .clone()
        .expect("tests recorded even when the job fails");
    assert_eq!((tests.passed, tests.failed, tests.skipped), (1, 1, 1));
    assert_eq!(tests.failures[0].name, "a › two");
    assert_eq!(tests.failures[0].message, "2 != 3");
}

#[tokio::test]
async fn variables_and_interpolation() {
    let f = fixture().await;
    let yaml = r#"env:
  GREETING: hi
jobs:
  show:
    matrix: { n: ["1", "2"] }
    env:
      WHO: job-${{ matrix.n }}
    steps:
      - run: echo "$GREETING $WHO $FERRY_JOB $FERRY_BRANCH $CI ${{ event.short_sha }} ${{ env.WHO }}"
        env: { STEP: "${{ FERRY_RUN_NUMBER }}" }
      - run: echo "step=$STEP attempt=$FERRY_JOB_ATTEMPT"
        env: { STEP: "two" }
      - run: pwd
        working_directory: sub
"#;
    std::fs::create_dir_all(f.dir.join("src/sub")).expect("sub");
    let out = f.run(yaml).await;
    assert_eq!(out.status, Status::Success);
    let log = f.log(&out, "show (n=2)").await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "hi job-2 show (n=2) main true 01234567 job-2");
    assert_eq!(lines[1], "step=two attempt=1");
    assert!(lines[2].ends_with("/sub"), "{log}");
}

#[tokio::test]
async fn workspaces_are_fresh_copies_and_removed() {
    let f = fixture().await;
    let yaml = "jobs:\n  a: { run: echo changed > input.txt && rm -f never }\n  b: { needs: a, run: cat input.txt }\n";
    let out = f.run(yaml).await;
    assert_eq!(f.log(&out, "b").await, "from the source\n");
    assert_eq!(
        std::fs::read_to_string(f.dir.join("src/input.txt")).expect("read"),
        "from the source\n",
        "the source is never touched"
    );
    assert!(
        !f.dir.join("work").join(&out.run.id).exists(),
        "workspaces removed"
    );
}

#[tokio::test]
async fn large_output_is_stored_whole() {
    let (f, out) = run_fresh("jobs:\n  big:\n    run: yes | head -c 5000000\n").await;
    assert_eq!(out.status, Status::Success);
    let jobs = f.jobs(&out).await;
    assert_eq!(jobs[0].log_bytes, 5_000_000);
    assert_eq!(jobs[0].log_lines, 2_500_000);
    let reader = f
        .store
        .read_log(&out.run.id, &jobs[0].id)
        .await
        .expect("log");
    let mut count = 0;
    for line in reader {
        let line = line.expect("line");
        assert_eq!(line.text, b"y");
        assert!(line.ts > 0);
        count += 1;
    }
    assert_eq!(count, 2_500_000);
}

#[tokio::test]
async fn artifact_symlinks_stay_links() {
    let f = fixture().await;
    let outside = f.dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("host-secret"), "do not copy\n").expect("write");
    let yaml = format!(
        "jobs:\n  build:\n    run: ln -s {} link\n    artifacts: [link]\n  use:\n    needs: build\n    run: readlink link\n",
        outside.display()
    );
    let out = f.run(&yaml).await;
    f.assert_success(&out, "build").await;
    assert_eq!(f.log(&out, "use").await, format!("{}\n", outside.display()));
    let kept = f.dir.join("data/artifacts").join(&out.run.id);
    let copied_secret = walkdir::WalkDir::new(&kept)
        .into_iter()
        .flatten()
        .any(|e| e.file_name() == "host-secret");
    assert!(
        !copied_secret,
        "the link's target was not copied into the artifacts"
    );
}

#[tokio::test]
async fn caches_are_restored_by_key_and_saved_when_new() {
    let f = Fixture::build(1, None).await;
    let yaml = "jobs:
  deps:
    cache:
      key: deps-${{ hash_files('input.txt') }}
      paths: [vendor, missing]
    run: if [ -f vendor/x ]; then echo hit $(cat vendor/x); else echo miss; mkdir -p vendor; echo $FERRY_RUN_NUMBER > vendor/x; fi
";
    let first = f.run(yaml).await;
    let log = f.log(&first, "deps").await;
    // A miss, and the missing path is reported.
    for want in [
        "not found; it is saved if the job succeeds\nmiss\n",
        "warning: cache `deps-",
    ] {
        assert!(log.contains(want), "`{want}` is not in the log:\n{log}");
    }
    let second = f.run(yaml).await;
    let log = f.log(&second, "deps").await;
    assert!(
        log.contains("restored\nhit 1\n"),
        "the first run's files: {log}"
    );
    assert!(!log.contains("saved"), "a hit is not saved again: {log}");
    // A changed input file makes a new key.
    std::fs::write(f.dir.join("src/input.txt"), "changed\n").expect("write");
    let third = f.run(yaml).await;
    assert!(f.log(&third, "deps").await.contains("miss\n"));
    let caches = ferry_engine::cache::CacheStore::new(f.dir.join("data/caches"), u64::MAX);
    let keys: Vec<String> = caches.list().into_iter().map(|e| e.key).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // A failed job saves nothing.
    let failing = "jobs:\n  f:\n    cache: { key: never, paths: [x] }\n    run: mkdir x; exit 1\n";
    f.run(failing).await;
    assert!(!caches.contains(&f.repo, "never"));
}

#[tokio::test]
async fn the_repository_secrets_are_masked_in_job_logs() {
    let mut f = Fixture::build(1, None).await;
    let key = ferry_store::SecretKey::from_hex(&"42".repeat(32)).expect("key");
    f.engine = f.engine.clone().with_secret_key(key.clone());
    f.store
        .set_secret(
            &key,
            &f.repo,
            "production",
            "TOKEN",
            b"job-secret-31337",
            None,
        )
        .await
        .expect("secret");
    let yaml = "jobs:\n  leak:\n    run: |\n      echo \"plain job-secret-31337\"\n      printf 'job-sec'; printf 'ret-31337 split\\n'\n      printf job-secret-31337 | base64\n";
    let out = f.run(yaml).await;
    let log = f.log(&out, "leak").await;
    assert!(!log.contains("job-secret-31337"), "{log}");
    assert!(
        log.contains("plain ***\n") && log.contains("*** split\n"),
        "{log}"
    );
    assert!(
        !log.contains("am9iLXNlY3JldC0zMTMzNw"),
        "the base64 form is masked too: {log}"
    );
}
