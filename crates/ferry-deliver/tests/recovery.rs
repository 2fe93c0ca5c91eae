//! Stopping and restarting the server: what runs again after a restart (`recover`),
//! what a stop leaves failed, and what must not outlive the server.

mod common;

use common::{GOOD, Harness, process};
use ferry_store::DeploymentStatus as S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_runs_a_live_process_environment_again() {
    let mut h = Harness::started().await;
    h.seal("v1", &process("rollback"), GOOD).await;
    h.wait_audit("deployment.live", "web#1").await;
    let before = h.process_pid("web", "v1").await;
    h.restart().await;
    assert!(
        ferry_testkit::gone(before),
        "the stopped server's process ended"
    );
    let after = h.process_pid("web", "v1").await;
    assert_ne!(after, before);
    assert!(ferry_testkit::alive(after));
    assert_eq!(h.deployment("web", 1).await.status, S::Live);
    assert!(h.find("web", 2).await.is_none(), "no new deployment");
    let output = std::fs::read_to_string(h.env_dir("web").join("output.log")).expect("output");
    assert_eq!(
        output.matches("ferry: starting release v1").count(),
        2,
        "{output}"
    );
    h.stop().await;
    assert!(ferry_testkit::gone(after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_cancels_deployments_left_deploying_or_verifying() {
    // `web` runs a process; `ops` runs a script. v2 holds web in verification (a long
    // window) and ops in its deploy script when the server stops.
    let config = |window: &str, script: &str| {
        format!(
            "environments:
  web:
    auto: true
    deploy:
      target:
        process:
          command: exec sleep 300
      verify: {{ command: \"true\", for: {window}, interval: 25ms }}
  ops:
    auto: true
    deploy:
      target:
        script:
          run: {script}
      verify: {{ command: \"true\", for: 100ms, interval: 25ms }}
"
        )
    };
    let mut h = Harness::started().await;
    h.seal("v1", &config("100ms", "\"true\""), GOOD).await;
    h.wait_audit("deployment.live", "web#1").await;
    h.wait_audit("deployment.live", "ops#1").await;
    let web1 = h.process_pid("web", "v1").await;
    let hold = config("300s", "echo $$ > \"$OUT/ops.pid\"; exec sleep 300");
    h.seal("v2", &hold, GOOD).await;
    h.wait_status("web", 2, S::Verifying).await;
    h.wait_status("ops", 2, S::Deploying).await;
    let web2 = h.process_pid("web", "v2").await;
    let script = h.pid_in("ops.pid").await;
    h.restart().await;
    for pid in [web1, web2, script] {
        assert!(ferry_testkit::gone(pid), "{pid} ended with the server");
    }
    let reason = "interrupted: the server stopped during the deployment";
    for env in ["web", "ops"] {
        let d = h.deployment(env, 2).await;
        // Cancelled, not failed: the release did not fail, the server stopped.
        assert_eq!(d.status, S::Cancelled, "{env}");
        assert_eq!(d.reason.as_deref(), Some(reason));
        assert!(d.finished_at.is_some());
        let entry = h
            .wait_audit("deployment.interrupted", &format!("{env}#2"))
            .await;
        assert_eq!(
            (entry.actor.as_str(), entry.detail.as_deref()),
            ("ferry", Some(reason))
        );
        assert_eq!(h.deployment(env, 1).await.status, S::Live);
    }
    // The live release of the process environment runs again.
    let again = h.process_pid("web", "v1").await;
    assert!(ferry_testkit::alive(again));
    // The interrupted release may be deployed again: it never failed.
    let retry = h.promote("v2", "ops", "dave").await;
    assert_eq!(retry.number, 3);
    h.stop().await;
    assert!(ferry_testkit::gone(again));
}

// ---------------------------------------------------------------------------------
// What a deploy script started ends with it (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_loop_ends_what_a_deploy_script_started() {
    let config = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: sleep 300 & echo $! > \"$OUT/child.pid\"; wait
";
    let mut h = Harness::started().await;
    h.seal("v1", config, GOOD).await;
    h.wait_status("sandbox", 1, S::Deploying).await;
    let child = h.pid_in("child.pid").await;
    h.stop().await;
    let ended = ferry_testkit::gone(child);
    if !ended {
        // Do not leave it behind.
        let _ = std::process::Command::new("kill")
            .args(["-9", &child.to_string()])
            .status();
    }
    assert!(
        ended,
        "the deploy script's child {child} outlived the server"
    );
}
