//! Rollback by hand (`ferry rollback ENV [--to RELEASE]`): back to the release live
//! before or to a named one, what is refused, and releases pruned by retention.

mod common;

use common::Ask::{Promote, Rollback};
use common::Refusal::{Conflict, Invalid, NotFound};
use common::{BAD, GOOD, Harness, actor, approvals, dave, refusal, sandbox_only, scripted};
use ferry_store::{DeploymentKind as Kind, DeploymentStatus as S};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_back_to_the_release_live_before() {
    let mut h = Harness::with_history(&["v1", "v2"]).await;
    let d = h.rollback("sandbox", None, "dave").await;
    assert_eq!((d.number, d.kind, d.status), (3, Kind::Rollback, S::Queued));
    assert_eq!(d.requested_by.as_deref(), Some("user:dave"));
    h.wait_status("sandbox", 3, S::Live).await;
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    assert_eq!(h.deployment("sandbox", 2).await.status, S::Replaced);
    let entry = h.wait_audit("deployment.rollback", "sandbox#3").await;
    assert_eq!(entry.actor, "user:dave");
    assert_eq!(entry.detail.as_deref(), Some("back to release v1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_named_release() {
    let mut h = Harness::with_history(&["v1", "v2", "v3"]).await;
    h.rollback("sandbox", Some("v1"), "dave").await;
    h.wait_status("sandbox", 4, S::Live).await;
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    assert_eq!(
        h.lines("deploys"),
        ["sandbox v1", "sandbox v2", "sandbox v3", "sandbox v1"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_refused_to_the_live_release_or_when_there_is_nothing_earlier() {
    let mut h = Harness::with_history(&["v1"]).await;
    let nothing_earlier = "`sandbox` has no earlier release to go back to";
    let live = |release: &str| format!("release {release} is already live in `sandbox`");
    h.refuses(
        &dave(),
        &[
            (Rollback("sandbox", None), Invalid, nothing_earlier),
            (Rollback("sandbox", Some("v1")), Conflict, &live("v1")),
            (
                Rollback("sandbox", Some("v9")),
                NotFound,
                "there is no release `v9`",
            ),
        ],
    )
    .await;
    h.seal("v2", &sandbox_only(), GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    let v2_live = live("v2");
    h.refuses_one(&dave(), Rollback("sandbox", Some("v2")), Conflict, &v2_live)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_release_is_neither_rolled_back_to_nor_promoted() {
    let mut h = Harness::with_history(&["v1", "v2"]).await;
    let pruned = h
        .deliverer
        .clone()
        .with_retention(Some(1))
        .prune()
        .await
        .expect("prune");
    assert_eq!(pruned, 1, "{:#?}", h.summary().await);
    let v1 = h.store.release(&h.repo, "v1").await.expect("v1");
    assert!(v1.pruned_at.is_some());
    let releases = h.env_dir("sandbox").join("releases");
    assert!(!releases.join("v1").exists(), "its deployed copy is gone");
    assert!(releases.join("v2").exists());
    let entry = h.wait_audit("release.prune", "v1").await;
    assert_eq!(entry.actor, "ferry");
    let why = "release v1 was pruned by the retention policy: its files are gone";
    let requests = [
        Rollback("sandbox", None),
        Rollback("sandbox", Some("v1")),
        Promote("v1", "sandbox"),
    ];
    h.refuses(&dave(), &requests.map(|r| (r, Invalid, why)))
        .await;
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// A rollback goes back only where the environment has been (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_release_never_live_in_the_environment_is_refused() {
    let h = Harness::new().await;
    h.seal("v1", &approvals(), GOOD).await;
    // v1 was never approved for production, nor live in sandbox; a developer asks for
    // a "rollback" of production to it.
    let before = h.snapshot().await;
    let result = h.ask(&dave(), Rollback("production", Some("v1"))).await;
    assert_eq!(
        refusal(&result).map(|(kind, _)| kind),
        Some(Invalid),
        "{result:#?}"
    );
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_release_that_failed_in_the_environment_is_refused() {
    let mut h = Harness::with_history(&["v1"]).await;
    // v2 fails its verification in sandbox and is rolled back: it was never live.
    h.seal("v2", &sandbox_only(), BAD).await;
    h.wait_audit("deployment.failed", "sandbox#2").await;
    h.wait_status("sandbox", 3, S::Live).await;
    // Marked rolled back once its rollback is live (a moment after).
    h.wait_status("sandbox", 2, S::RolledBack).await;
    let before = h.snapshot().await;
    let result = h.ask(&dave(), Rollback("sandbox", Some("v2"))).await;
    let (kind, why) = refusal(&result).expect("refused");
    assert_eq!(kind, Invalid, "{why}");
    assert!(why.contains("was never live in `sandbox`"), "{why}");
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

/// A freeze holds every deployment, automatic or approved, until it ends; an approver
/// (and only an approver) may still roll back, and the rollback goes ahead of what the
/// freeze holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_freeze_only_an_approvers_rollback_deploys() {
    // The freeze begins a few seconds from now: time for two releases to go live.
    let from = chrono::Utc::now() + chrono::Duration::seconds(4);
    let config = scripted(&format!(
        "  sandbox:\n    auto: true\n    freeze: {{ from: \"{}\", to: \"2100-01-01T00:00:00Z\" }}\n",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let mut h = Harness::started().await;
    h.seal("v1", &config, GOOD).await;
    h.wait_status("sandbox", 1, S::Live).await;
    h.seal("v2", &config, GOOD).await;
    h.wait_status("sandbox", 2, S::Live).await;
    let now = chrono::Utc::now();
    assert!(
        now < from,
        "two deployments took more than 4 s: cannot test the freeze"
    );
    tokio::time::sleep(
        (from - now).to_std().expect("ahead") + std::time::Duration::from_millis(200),
    )
    .await;
    // Frozen: a new release's automatic deployment waits, and says why.
    h.seal("v3", &config, GOOD).await;
    let held = h.deployment("sandbox", 3).await;
    assert_eq!(held.status, S::Queued);
    let log = common::wait_contains(
        &h.deliverer.deployment_log(&held),
        "waiting: `sandbox` is frozen",
    )
    .await;
    assert!(log.contains("starts when the freeze ends"), "{log}");
    let result = h.ask(&dave(), Rollback("sandbox", None)).await;
    let (kind, why) = refusal(&result).expect("a developer is refused");
    assert_eq!(kind, Invalid, "{why}");
    assert!(why.contains("only an approver may roll back"), "{why}");
    let back = h
        .ask(&actor("bob", true), Rollback("sandbox", None))
        .await
        .expect("an approver rolls back");
    assert_eq!(back.number, 4);
    h.wait_status("sandbox", 4, S::Live).await;
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    let held = h.deployment("sandbox", 3).await;
    h.stop().await;
    assert_eq!((held.status, held.started_at), (S::Queued, None));
}
