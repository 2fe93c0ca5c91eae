//! Approvals: who may approve or reject a deployment waiting for approval, how many
//! approvals it takes, and what a rejection or a second decision does.

mod common;

use common::Ask::{Approve, Reject};
use common::Refusal::{Conflict, Forbidden, Invalid, NotFound};
use common::{FROZEN, GOOD, Harness, actor, approvals, dave, gated, scripted};
use ferry_deliver::deliverer::Vote;
use ferry_store::DeploymentStatus as S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_takes_the_required_number_of_approvals() {
    let mut h = Harness::awaiting(&approvals()).await;
    let d = h.approve("production#1", "bob", Some("lgtm")).await;
    assert_eq!(d.status, S::AwaitingApproval, "one of two approvals");
    // `ENV.N` names a deployment too.
    let d = h.approve("production.1", "carol", None).await;
    assert!(
        matches!(d.status, S::Queued | S::Deploying | S::Verifying | S::Live),
        "{d:#?}"
    );
    h.wait_status("production", 1, S::Live).await;
    assert_eq!(h.live("production").await.as_deref(), Some("v1"));
    let approvals = h.store.approvals(&d.id).await.expect("approvals");
    let decisions: Vec<_> = approvals
        .iter()
        .map(|a| {
            (
                a.user_name.as_str(),
                a.decision.as_str(),
                a.comment.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [("bob", "approve", Some("lgtm")), ("carol", "approve", None)]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_author_and_users_without_the_approver_role_may_not_approve() {
    let mut h = Harness::awaiting(&approvals()).await;
    // The author is who pushed: tess, who triggered the run; not `ada`, whom the git
    // author string names (a committer writes what they like there).
    let author = "tess may not approve this deployment: tess is the commit's author";
    let requests = [Approve("production#1"), Reject("production#1")];
    h.refuses(
        &actor("tess", true),
        &requests.map(|r| (r, Forbidden, author)),
    )
    .await;
    let role = "dave may not approve deployments: it takes the approver or admin role";
    h.refuses_one(&dave(), requests[0], Forbidden, role).await;
    let d = h.deployment("production", 1).await;
    let recorded = h.store.approvals(&d.id).await.expect("approvals");
    assert!(recorded.is_empty(), "{recorded:#?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_come_only_from_the_users_and_groups_named() {
    let config = gated("{ required: 1, from: [release-managers, alice] }");
    let mut h = Harness::awaiting(&config).await;
    let bob = actor("bob", true);
    let why = "bob may not approve here: approvals come from release-managers, alice";
    h.refuses_one(&bob, Approve("production#1"), Forbidden, why)
        .await;
    let managers = ["release-managers".to_string()];
    h.deliverer
        .decide(
            &h.repo,
            "production#1",
            &bob,
            &managers,
            None,
            Vote::Approve,
        )
        .await
        .expect("a release manager approves");
    h.wait_status("production", 1, S::Live).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejection_stops_the_deployment() {
    let mut h = Harness::awaiting(&approvals()).await;
    h.approve("production#1", "bob", None).await;
    let d = h.reject("production#1", "carol", Some("not today")).await;
    assert_eq!(d.status, S::Rejected);
    assert_eq!(d.reason.as_deref(), Some("rejected by carol"));
    assert!(d.finished_at.is_some());
    assert_eq!(d.started_at, None, "it never deployed");
    let why = "deployment production#1 is not waiting for approval (it is rejected)";
    h.refuses(
        &actor("dave", true),
        &[(Approve("production#1"), Invalid, why)],
    )
    .await;
    let reject = h.wait_audit("deployment.reject", "production#1").await;
    assert_eq!(reject.actor, "user:carol");
    assert_eq!(reject.detail.as_deref(), Some("not today"));
    assert_eq!(h.live("production").await, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_twice_on_a_deployment_is_a_conflict() {
    let mut h = Harness::awaiting(&approvals()).await;
    h.approve("production#1", "bob", None).await;
    let twice = "bob has already decided on deployment production#1";
    let requests = [Approve("production#1"), Reject("production#1")];
    h.refuses(&actor("bob", true), &requests.map(|r| (r, Conflict, twice)))
        .await;
    let d = h.deployment("production", 1).await;
    assert_eq!(d.status, S::AwaitingApproval);
    assert_eq!(h.store.approvals(&d.id).await.expect("approvals").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_what_does_not_wait_for_approval_is_invalid() {
    let mut h = Harness::awaiting(&approvals()).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    let live = "deployment sandbox#1 is not waiting for approval (it is live)";
    let absent = "there is no deployment `production#7`";
    h.refuses(
        &actor("bob", true),
        &[
            (Approve("sandbox#1"), Invalid, live),
            (Reject("sandbox#1"), Invalid, live),
            (Approve("production#7"), NotFound, absent),
        ],
    )
    .await;
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// A freeze holds approved deployments too (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_deployment_does_not_deploy_during_a_freeze() {
    let config = scripted(&format!(
        "  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 1 }}
    {FROZEN}
  demo: {{ after: sandbox }}
"
    ));
    let mut h = Harness::awaiting(&config).await;
    let approved = h.ask(&actor("bob", true), Approve("production#1")).await;
    // Something queued later in another environment: once it is live, the loop has had
    // its turn at production#1.
    h.promote("v1", "demo", "dave").await;
    h.wait_status("demo", 1, S::Live).await;
    let production = h.deployment("production", 1).await;
    h.stop().await;
    assert_eq!(
        production.started_at, None,
        "deployed during a freeze (approve said {approved:?}): {production:#?}"
    );
}

/// An approved deployment held by a freeze must still have its approvals when the
/// freeze ends: approvals that expired meanwhile send it back to awaiting approval
/// (its log says why), and the approver may approve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_that_expire_while_a_freeze_holds_are_asked_for_again() {
    let h = Harness::started().await;
    let rule = "approval: { required: 1, expires: 2s }";
    let frozen = scripted(&format!("  production:\n    {rule}\n    {FROZEN}\n"));
    h.seal("v1", &frozen, GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    let approved = h.approve("production#1", "ann", None).await;
    assert_eq!(
        approved.status,
        S::Queued,
        "approved, then held by the freeze"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // main lifts the freeze; ann's approval has expired by now.
    h.commit(&scripted(&format!("  production:\n    {rule}\n")), "thaw");
    let back = h.wait_status("production", 1, S::AwaitingApproval).await;
    assert!(
        back.reason
            .as_deref()
            .unwrap_or_default()
            .contains("it has 0 valid approval(s) of the 1 `production` asks for now"),
        "{back:?}"
    );
    h.approve("production#1", "ann", None).await;
    h.wait_status("production", 1, S::Live).await;
}
