//! Rollback by hand (`ferry rollback ENV [--to RELEASE]`): back to the release live
//! before or to a named one, what is refused, and releases pruned by retention.

mod common;

use common::Ask::{Promote, Rollback};
use common::Refusal::{Conflict, Invalid, NotFound};
use common::{GOOD, Harness, approvals, dave, refusal, sandbox_only};
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
// Behaviour that looks wrong: the test says what should happen

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: `rollback --to` deploys any release, one never live in the environment, \
            skipping its approvals, freezes and `after:` (deliverer.rs `rollback`)"]
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
