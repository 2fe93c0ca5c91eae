//! Releases entering environments: a sealed release enters the first ones, each auto
//! environment follows the one before once it is live, an approval environment waits
//! for its approvals, and a manual one waits for `promote`.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{FROZEN, GOOD, Harness, sandbox_only, scripted};
use ferry_store::{DeploymentKind as Kind, DeploymentStatus as S};

/// sandbox (auto) → staging (auto) → production (one approval); demo (manual) after
/// sandbox.
fn pipeline() -> String {
    scripted(
        "  sandbox: { auto: true }
  staging: { after: sandbox, auto: true }
  production:
    after: staging
    approval: { required: 1 }
  demo: { after: sandbox }
",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_release_enters_the_first_environment_and_goes_live() {
    let mut h = Harness::new().await;
    let v1 = h.release("v1", &sandbox_only(), GOOD).await;
    let made = h.deliverer.on_release(&v1).await.expect("on_release");
    assert_eq!(made.len(), 1, "{made:#?}");
    let d = &made[0];
    assert_eq!(
        (d.environment.as_str(), d.number, d.kind, d.status),
        ("sandbox", 1, Kind::Auto, S::Queued)
    );
    assert_eq!(d.requested_by, None);
    h.start();
    let live = h.wait_status("sandbox", 1, S::Live).await;
    assert_eq!(live.release_id, v1.id);
    assert_eq!(live.previous_release_id, None, "nothing was live before");
    assert_eq!(live.reason, None);
    assert!(live.started_at.is_some() && live.finished_at.is_some());
    // Verification (`for: 100ms`) is timed: it starts after the deploy and ends with it.
    let (from, to) = (live.verification_started_at, live.verification_finished_at);
    assert!(
        from >= live.started_at && to == live.finished_at,
        "{live:?}"
    );
    assert!(to.zip(from).is_some_and(|(t, f)| t - f >= 100), "{live:?}");
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    // The script ran in the release's files (copied out of the store, with their
    // modes), with the release in its environment.
    assert_eq!(h.lines("deploys"), ["sandbox v1"]);
    let dir = h.env_dir("sandbox").join("releases").join("v1");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.sh")).expect("app.sh"),
        "#!/bin/sh\necho app\n"
    );
    let mode = std::fs::metadata(dir.join("app.sh"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let log = h.log_of(&live);
    for want in [
        &format!(
            "deploying release v1 (commit {}) to `sandbox`",
            v1.commit_sha
        ),
        "running the deploy script",
        &format!("script sees {} in {}", v1.commit_sha, dir.display()),
        "verifying for 0.1s",
        "verified",
        " live\n",
    ] {
        assert!(log.contains(want), "`{want}` is not in the log:\n{log}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_auto_environment_follows_and_an_approval_one_awaits_approval() {
    let mut h = Harness::started().await;
    let v1 = h.seal("v1", &pipeline(), GOOD).await;
    let staging = h.wait_status("staging", 1, S::Live).await;
    assert_eq!((staging.kind, &staging.release_id), (Kind::Auto, &v1.id));
    assert_eq!(staging.requested_by, None);
    let production = h.wait_status("production", 1, S::AwaitingApproval).await;
    assert_eq!(production.kind, Kind::Auto);
    assert_eq!(production.release_id, v1.id);
    assert_eq!(
        production.started_at, None,
        "nothing deploys before approval"
    );
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    assert_eq!(h.live("production").await, None);
    // `demo` (neither auto nor approval) was passed over when sandbox went live.
    assert!(h.deployments("demo").await.is_empty());
    assert_eq!(h.lines("deploys"), ["sandbox v1", "staging v1"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_environment_waits_for_promote() {
    let mut h = Harness::started().await;
    let v1 = h.seal("v1", &pipeline(), GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    assert!(h.deployments("demo").await.is_empty());
    let d = h.promote("v1", "demo", "dave").await;
    assert_eq!(
        (d.environment.as_str(), d.number, d.kind, d.status),
        ("demo", 1, Kind::Promotion, S::Queued)
    );
    assert_eq!(d.requested_by.as_deref(), Some("user:dave"));
    let live = h.wait_status("demo", 1, S::Live).await;
    assert_eq!(live.release_id, v1.id);
    assert_eq!(h.live("demo").await.as_deref(), Some("v1"));
    let request = h.wait_audit("deployment.request", "demo#1").await;
    assert_eq!(request.actor, "user:dave");
    assert_eq!(request.detail.as_deref(), Some("release v1 (queued)"));
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// A freeze holds automatic deployments too (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_environment_does_not_deploy_during_its_freeze() {
    let config = scripted(&format!(
        "  frozen:\n    auto: true\n    {FROZEN}\n  open: {{ auto: true }}\n"
    ));
    let mut h = Harness::started().await;
    h.seal("v1", &config, GOOD).await;
    // `frozen` was entered first and the loop starts the oldest first: had it been
    // deployed, it would have started by the time `open` is live.
    h.wait_status("open", 1, S::Live).await;
    let started: Vec<_> = h
        .deployments("frozen")
        .await
        .into_iter()
        .filter(|d| d.started_at.is_some())
        .collect();
    h.stop().await;
    assert!(started.is_empty(), "deployed during a freeze: {started:#?}");
}
