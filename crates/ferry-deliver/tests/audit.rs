//! The audit log: every decision (requests, approvals, rejections, rollbacks) and every
//! transition (live, failed) is an entry, with who made it; a refusal is none.

mod common;

use common::Ask::Promote;
use common::{BAD, GOOD, Harness, UNHEALTHY, dave, gated};
use ferry_store::DeploymentStatus as S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_and_transition_is_in_the_audit_log() {
    let config = gated("{ required: 1 }");
    let mut h = Harness::started().await;
    h.seal("v1", &config, GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    h.approve("production#1", "bob", Some("ship it")).await;
    h.wait_audit("deployment.live", "production#1").await;
    h.seal("v2", &config, GOOD).await;
    h.wait_status("production", 2, S::AwaitingApproval).await;
    h.reject("production#2", "carol", Some("not now")).await;
    h.rollback("sandbox", None, "dave").await;
    h.wait_audit("deployment.live", "sandbox#3").await;
    h.seal("v3", &config, BAD).await;
    h.wait_status("sandbox", 4, S::RolledBack).await;
    h.wait_audit("deployment.live", "sandbox#5").await;
    // A refusal is not an entry.
    let refused = h.ask(&dave(), Promote("v3", "production")).await;
    assert!(refused.is_err(), "{refused:#?}");
    // Each entry as `ACTOR ACTION TARGET: DETAIL`.
    let log: Vec<String> = h
        .audit()
        .await
        .into_iter()
        .map(|e| {
            let detail = e.detail.unwrap_or_default();
            format!("{} {} {}: {detail}", e.actor, e.action, e.target)
        })
        .collect();
    let want = format!(
        "\
ferry deployment.request sandbox#1: release v1 (queued)
ferry deployment.live sandbox#1: release v1
ferry deployment.request production#1: release v1 (awaiting_approval)
user:bob deployment.approve production#1: ship it
ferry deployment.live production#1: release v1
ferry deployment.request sandbox#2: release v2 (queued)
ferry deployment.live sandbox#2: release v2
ferry deployment.request production#2: release v2 (awaiting_approval)
user:carol deployment.reject production#2: not now
user:dave deployment.rollback sandbox#3: back to release v1
ferry deployment.live sandbox#3: release v1
ferry deployment.request sandbox#4: release v3 (queued)
ferry deployment.failed sandbox#4: {UNHEALTHY}
ferry deployment.rollback sandbox#5: after sandbox#4 failed: back to release v1
ferry deployment.live sandbox#5: release v1"
    );
    assert_eq!(log, want.lines().collect::<Vec<_>>());
    h.stop().await;
}
