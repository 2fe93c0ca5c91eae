//! Failed deployments: a verification or a deploy script that fails rolls back to the
//! release live before (`on_failure: rollback`, the default) or leaves the deployment
//! failed (`on_failure: stop`); a failing process stops and the live one runs again.

mod common;

use common::{BAD, File, GOOD, Harness, UNHEALTHY, process, sandbox_only, scripted, wait_gone};
use ferry_store::{DeploymentKind as Kind, DeploymentStatus as S, Release};

/// sandbox (auto) → staging (auto), the default deploy, `on_failure` as given.
fn checked(on_failure: &str) -> String {
    let environments = "  sandbox: { auto: true }\n  staging: { after: sandbox, auto: true }\n";
    format!("{}  on_failure: {on_failure}\n", scripted(environments))
}

/// A running harness where v1 ([`GOOD`]) went live in `env` with `config`, after which
/// v2 ([`BAD`]) was sealed with it; returns v1.
async fn v2_fails_after_v1(config: &str, env: &str) -> (Harness, Release) {
    let h = Harness::started().await;
    let v1 = h.seal("v1", config, GOOD).await;
    h.wait_status(env, 1, S::Live).await;
    h.seal("v2", config, BAD).await;
    (h, v1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_verification_rolls_back_to_the_release_live_before() {
    let (mut h, v1) = v2_fails_after_v1(&checked("rollback"), "staging").await;
    let failed = h.wait_status("sandbox", 2, S::RolledBack).await;
    assert_eq!(
        failed.reason.as_deref(),
        Some(format!("{UNHEALTHY} (rolled back to release v1)").as_str())
    );
    assert_eq!(failed.previous_release_id.as_deref(), Some(v1.id.as_str()));
    assert!(
        failed.verification_started_at.is_some()
            && failed.verification_finished_at <= failed.finished_at
            && failed.verification_finished_at >= failed.verification_started_at,
        "a failed verification is timed too: {failed:?}"
    );
    let back = h.deployment("sandbox", 3).await;
    assert_eq!(
        (back.kind, back.status, &back.release_id),
        (Kind::Rollback, S::Live, &v1.id)
    );
    assert_eq!(back.requested_by.as_deref(), Some("ferry"));
    assert_eq!(h.deployment("sandbox", 1).await.status, S::Replaced);
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    // v2 went nowhere else; the rollback entered no next environment.
    assert_eq!(
        h.deployments("staging").await.len(),
        1,
        "{:#?}",
        h.summary().await
    );
    assert_eq!(
        h.lines("deploys"),
        ["sandbox v1", "staging v1", "sandbox v2", "sandbox v1"]
    );
    let log = h.log_of(&failed);
    assert!(log.contains(&format!("failed: {UNHEALTHY}")), "{log}");
    assert!(log.contains("rolling back to release v1"), "{log}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_verification_with_on_failure_stop_stays_failed() {
    let (mut h, _) = v2_fails_after_v1(&checked("stop"), "staging").await;
    h.wait_audit("deployment.failed", "sandbox#2").await;
    let failed = h.deployment("sandbox", 2).await;
    assert_eq!(failed.status, S::Failed);
    assert_eq!(failed.reason.as_deref(), Some(UNHEALTHY));
    assert!(h.find("sandbox", 3).await.is_none(), "no rollback");
    assert_eq!(h.deployment("sandbox", 1).await.status, S::Live);
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    assert_eq!(h.deployments("staging").await.len(), 1);
    h.stop().await;
}

/// The files of a release whose `deploy.sh` is `script` and whose `check.sh` passes.
fn deploying(script: &'static str) -> [File<'static>; 2] {
    [
        ("deploy.sh", script, 0o755),
        ("check.sh", "#!/bin/sh\nexit 0\n", 0o755),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deploy_script_rolls_back_to_the_release_live_before() {
    // A deploy script from the release: v1's works, v2's exits 3.
    let config = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: ./deploy.sh
  verify: { command: ./check.sh, for: 100ms, interval: 25ms }
";
    let works = deploying("#!/bin/sh\necho \"deploying $FERRY_RELEASE\"\n");
    let breaks = deploying("#!/bin/sh\necho \"broken $FERRY_RELEASE\" >&2\nexit 3\n");
    let mut h = Harness::started().await;
    let v1 = h.seal("v1", config, &works).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    h.seal("v2", config, &breaks).await;
    let failed = h.wait_status("sandbox", 2, S::RolledBack).await;
    assert_eq!(
        failed.reason.as_deref(),
        Some("the script exited with code 3 (rolled back to release v1)")
    );
    let back = h.deployment("sandbox", 3).await;
    assert_eq!(
        (back.kind, back.status, &back.release_id),
        (Kind::Rollback, S::Live, &v1.id)
    );
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    let log = h.log_of(&failed);
    assert!(
        log.contains("broken v2"),
        "the script's output is logged:\n{log}"
    );
    assert!(
        !log.contains("verifying"),
        "no verification after a failed deploy:\n{log}"
    );
    assert_eq!(
        (
            failed.verification_started_at,
            failed.verification_finished_at
        ),
        (None, None)
    );
    assert!(h.log_of(&back).contains("deploying v1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_process_deployment_stops_its_process() {
    let mut h = Harness::started().await;
    h.seal("v1", &process("rollback"), BAD).await;
    h.wait_audit("deployment.failed", "web#1").await;
    let failed = h.deployment("web", 1).await;
    assert_eq!(failed.status, S::Failed, "nothing to roll back to");
    assert_eq!(failed.reason.as_deref(), Some(UNHEALTHY));
    let pid = h.pids("web.pids", 1).await[0];
    assert!(wait_gone(pid).await, "the failed process was stopped");
    assert!(h.find("web", 2).await.is_none());
    assert_eq!(h.live("web").await, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_process_rolls_back_and_the_release_before_runs_again() {
    let mut h = Harness::started().await;
    h.seal("v1", &process("rollback"), GOOD).await;
    h.wait_status("web", 1, S::Live).await;
    let first = h.process_pid("web", "v1").await;
    h.seal("v2", &process("rollback"), BAD).await;
    h.wait_status("web", 2, S::RolledBack).await;
    let back = h.deployment("web", 3).await;
    assert_eq!((back.kind, back.status), (Kind::Rollback, S::Live));
    let pids = h.pids("web.pids", 3).await;
    assert_eq!(pids[0], first);
    let again = h.process_pid("web", "v1").await;
    assert_eq!(again, pids[2], "{pids:?}");
    assert!(wait_gone(pids[0]).await && wait_gone(pids[1]).await);
    assert!(ferry_testkit::alive(again));
    h.stop().await;
    assert!(
        ferry_testkit::gone(again),
        "the loop's end stops the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_process_with_on_failure_stop_starts_the_live_release_again() {
    let (mut h, _) = v2_fails_after_v1(&process("stop"), "web").await;
    let failed = h.wait_status("web", 2, S::Failed).await;
    assert_eq!(failed.reason.as_deref(), Some(UNHEALTHY));
    let pids = h.pids("web.pids", 3).await;
    let again = h.process_pid("web", "v1").await;
    assert_eq!(again, pids[2], "{pids:?}");
    assert!(wait_gone(pids[0]).await && wait_gone(pids[1]).await);
    assert_eq!(h.deployment("web", 1).await.status, S::Live);
    assert!(h.find("web", 3).await.is_none(), "no rollback deployment");
    let log = h.log_of(&failed);
    assert!(log.contains("starting the live release v1 again"), "{log}");
    h.stop().await;
    assert!(ferry_testkit::gone(again));
}

// ---------------------------------------------------------------------------------
// A rollback that fails too does not count as one (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_automatic_rollback_leaves_the_deployment_failed() {
    let mut h = Harness::started().await;
    // v1 is healthy until `$OUT/break` exists.
    let fragile: &[File] = &[("check.sh", "#!/bin/sh\ntest ! -e \"$OUT/break\"\n", 0o755)];
    h.seal("v1", &sandbox_only(), fragile).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    std::fs::write(h.out.join("break"), "").expect("break");
    h.seal("v2", &sandbox_only(), BAD).await;
    h.wait_status("sandbox", 3, S::Failed).await; // the rollback to v1
    // v3 waits for the environment, so sandbox#2 has its final state once v3 is live.
    h.seal("v3", &sandbox_only(), GOOD).await;
    h.wait_status("sandbox", 4, S::Live).await;
    let failed = h.deployment("sandbox", 2).await;
    h.stop().await;
    assert_eq!(failed.status, S::Failed, "{:#?}", h.summary().await);
    let error = failed.reason.unwrap_or_default();
    assert!(
        error.contains("the rollback to release v1 failed too"),
        "{error}"
    );
}

/// A deployment moved while it verified (another server recovered it as interrupted)
/// is not made live at the end of its verification, and nothing follows from it: the
/// environment after it is not entered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_moved_during_its_verification_is_not_made_live() {
    let config = "environments:
  sandbox: { auto: true }
  production: { auto: true, after: sandbox }
deploy:
  target:
    script:
      run: \"true\"
  verify: { command: \"true\", for: 1s, interval: 25ms }
";
    let mut h = Harness::started().await;
    h.seal("v1", config, GOOD).await;
    let verifying = h.wait_status("sandbox", 1, S::Verifying).await;
    assert!(
        h.store
            .move_deployment(
                &verifying.id,
                &[S::Verifying],
                S::Failed,
                Some("interrupted")
            )
            .await
            .expect("move")
    );
    let log = common::wait_contains(
        &h.deliverer.deployment_log(&verifying),
        "not made live: the deployment is failed now",
    )
    .await;
    h.stop().await;
    assert!(!log.lines().any(|l| l.ends_with(" live")), "{log}");
    assert_eq!(h.deployment("sandbox", 1).await.status, S::Failed);
    assert!(
        h.deployments("production").await.is_empty(),
        "{:#?}",
        h.summary().await
    );
}

/// A deploy script that never ends, or prints without end, fails its deployment at the
/// server's limits (`--job-timeout`, `--log-limit`) instead of holding the environment
/// or filling the disk; the log ends saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_script_stops_at_the_servers_timeout_and_log_limit() {
    let mut h = Harness::new().await;
    h.deliverer = h
        .deliverer
        .clone()
        .with_limits(Some(std::time::Duration::from_secs(1)), Some(64 << 10));
    h.start();
    let script = |run: &str| {
        format!(
            "environments:\n  sandbox: {{ auto: true }}\ndeploy:\n  target: {{ script: {{ run: \"{run}\" }} }}\n  on_failure: stop\n"
        )
    };
    h.seal("v1", &script("exec sleep 300"), GOOD).await;
    let slow = h.wait_status("sandbox", 1, S::Failed).await;
    assert_eq!(
        slow.reason.as_deref(),
        Some("the script timed out after 1s")
    );
    h.seal("v2", &script("yes flood"), GOOD).await;
    let loud = h.wait_status("sandbox", 2, S::Failed).await;
    assert_eq!(
        loud.reason.as_deref(),
        Some("log limit of 64.0 KiB exceeded")
    );
    let log = std::fs::read_to_string(h.deliverer.deployment_log(&loud)).expect("log");
    assert!(log.len() < (64 << 10) + 1024, "{}", log.len());
    assert!(
        log.ends_with("ferry: error: log limit of 64.0 KiB exceeded\n"),
        "{}",
        &log[log.len() - 200..]
    );
    h.stop().await;
}
