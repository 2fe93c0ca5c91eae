//! Where rules come from: the environments, their policies, approvals and freezes are
//! those of the default branch's head, whatever the release's own commit says; the
//! release says only how it is deployed.

mod common;

use common::Ask::{Promote, Rollback};
use common::Refusal::{Invalid, NotFound};
use common::{FROZEN, GOOD, Harness, dave, sandbox_only, scripted};
use ferry_store::DeploymentStatus as S;

/// main's rules: sandbox (auto) → production (two approvals).
fn strict() -> String {
    scripted(
        "  sandbox: { auto: true }
  production:
    after: sandbox
    approval: { required: 2 }
",
    )
}

/// What a branch's author would like: straight to production, no approvals.
fn permissive() -> String {
    scripted("  production: { auto: true }\n  sandbox: { auto: true }\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_cannot_write_its_own_way_into_production() {
    let h = Harness::started().await;
    let main = h.commit(&strict(), "rules");
    // The release's configuration says production is automatic; main says otherwise.
    let v1 = h.release_of("v1", &main, &permissive(), GOOD).await;
    let made = h.deliverer.on_release(&v1).await.expect("on_release");
    let entered: Vec<&str> = made.iter().map(|d| d.environment.as_str()).collect();
    assert_eq!(entered, ["sandbox"], "main's first environment only");
    h.wait_status("sandbox", 1, S::Live).await;
    // main's rule for production: two approvals, not automatic.
    h.wait_production_awaits().await;
    let after_one = h.approve("production#1", "ann", None).await;
    assert_eq!(after_one.status, S::AwaitingApproval, "main asks for two");
    h.approve("production#1", "bob", None).await;
    h.wait_status("production", 1, S::Live).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_on_the_default_branch_holds_a_release_that_has_none() {
    let h = Harness::started().await;
    let frozen_rules = scripted(&format!(
        "  sandbox: {{ auto: true }}\n  production:\n    after: sandbox\n    {FROZEN}\n"
    ));
    let main = h.commit(&frozen_rules, "rules");
    // The release's own configuration drops the freeze.
    let unfrozen = scripted("  sandbox: { auto: true }\n  production: { after: sandbox }\n");
    let v1 = h.release_of("v1", &main, &unfrozen, GOOD).await;
    h.deliverer.on_release(&v1).await.expect("on_release");
    h.wait_status("sandbox", 1, S::Live).await;
    h.refuses_one(
        &dave(),
        Promote("v1", "production"),
        Invalid,
        "`production` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; \
         nothing deploys there now",
    )
    .await;
    // An environment only the release names does not exist.
    let own = scripted("  sandbox: { auto: true }\n  private: { after: sandbox }\n");
    let v2 = h.release_of("v2", &main, &own, GOOD).await;
    let _ = v2;
    h.refuses_one(
        &dave(),
        Promote("v2", "private"),
        NotFound,
        "there is no environment `private`; the default branch's .ferry.yml names: \
         sandbox, production",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_added_on_main_later_holds_rollbacks_and_queued_deployments() {
    let h = Harness::with_history(&["v1", "v2"]).await;
    // main now freezes sandbox; v1 and v2 themselves say nothing of it.
    h.commit(
        &scripted(&format!("  sandbox:\n    auto: true\n    {FROZEN}\n")),
        "freeze",
    );
    h.refuses_one(
        &dave(),
        Rollback("sandbox", None),
        Invalid,
        "`sandbox` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; \
         during a freeze only an approver may roll back",
    )
    .await;
    // A promotion queued before the freeze came waits for its end.
    let v3 = h.release_of("v3", &h.head(), &sandbox_only(), GOOD).await;
    let made = h.deliverer.on_release(&v3).await.expect("on_release");
    assert_eq!(made.len(), 1);
    let log = h.deliverer.deployment_log(&made[0]);
    common::wait_contains(&log, "waiting: `sandbox` is frozen").await;
    assert_eq!(h.deployment("sandbox", 3).await.status, S::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_do_not_load_stop_every_deployment_and_say_why() {
    let h = Harness::with_history(&["v1", "v2"]).await;
    h.commit_file("environments: [\n", "broken");
    let why = "the delivery rules of `shop` (its default branch's .ferry.yml) cannot be \
               read: .ferry.yml on main does not load:";
    for ask in [Promote("v1", "sandbox"), Rollback("sandbox", None)] {
        let got = h.ask(&dave(), ask).await;
        let (refusal, message) = common::refusal(&got).expect("refused");
        assert_eq!(refusal, Invalid);
        assert!(message.starts_with(why), "{message}");
    }
    // A release sealed now enters nothing.
    let v3 = h.release_of("v3", &h.head(), &sandbox_only(), GOOD).await;
    assert!(h.deliverer.on_release(&v3).await.is_err());
    assert_eq!(h.deployments("sandbox").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_deployment_to_an_environment_main_dropped_is_cancelled() {
    let h = Harness::started().await;
    let with = scripted(&format!(
        "  sandbox: {{ auto: true }}\n  production:\n    after: sandbox\n    auto: true\n    {FROZEN}\n"
    ));
    h.seal("v1", &with, GOOD).await;
    h.wait_status("sandbox", 1, S::Live).await;
    let held = h.wait_status("production", 1, S::Queued).await;
    common::wait_contains(&h.deliverer.deployment_log(&held), "waiting: `production`").await;
    // main drops production while the freeze holds its deployment.
    h.commit(&sandbox_only(), "no production");
    let gone = h.wait_status("production", 1, S::Cancelled).await;
    assert_eq!(
        gone.reason.as_deref(),
        Some("`production` is no longer an environment of the default branch's .ferry.yml")
    );
}

/// During a freeze only the environment's own approvers may roll it back: those its
/// approval rule's `from:` names, not every approver of the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_freeze_only_the_environments_approvers_may_roll_it_back() {
    let h = Harness::with_history(&["v1", "v2"]).await;
    h.commit(
        &scripted(&format!(
            "  sandbox:\n    approval: {{ required: 1, from: [release-managers] }}\n    {FROZEN}\n"
        )),
        "freeze, and only release managers approve",
    );
    h.refuses_one(
        &common::actor("bob", true),
        Rollback("sandbox", None),
        Invalid,
        "`sandbox` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; \
         during a freeze only its approvers (release-managers) may roll back",
    )
    .await;
    let carol = ferry_deliver::deliverer::Actor {
        groups: vec!["release-managers".into()],
        ..common::actor("carol", true)
    };
    let back = h
        .ask(&carol, Rollback("sandbox", None))
        .await
        .expect("a release manager rolls back");
    assert_eq!(back.number, 3);
    h.wait_status("sandbox", 3, S::Live).await;
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
}

/// A rollback is checked again when it would start: a release that failed in the
/// environment after the rollback to it was asked for is not deployed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_rollback_to_a_release_that_failed_since_is_cancelled() {
    let mut h = Harness::with_history(&["v1", "v2"]).await;
    h.stop().await;
    let back = h
        .ask(&dave(), Rollback("sandbox", None))
        .await
        .expect("rollback");
    assert_eq!(back.number, 3);
    // Meanwhile v1 failed in sandbox (a deployment the rollback queued behind).
    deployed_by_hand(&h, &back.release_id, S::Failed).await;
    h.start();
    let cancelled = h.wait_status("sandbox", 3, S::Cancelled).await;
    assert_eq!(
        cancelled.reason.as_deref(),
        Some("release v1 failed in `sandbox` after the rollback to it was asked for")
    );
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v2"));
}

/// A rollback a developer asked for before a freeze began does not start during it: it
/// waits for the end, saying why (an approver may ask for one during the freeze).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_asked_for_before_a_freeze_waits_for_its_end() {
    let mut h = Harness::with_history(&["v1", "v2"]).await;
    h.stop().await;
    let back = h
        .ask(&dave(), Rollback("sandbox", None))
        .await
        .expect("rollback");
    assert_eq!(back.number, 3);
    // main freezes sandbox from a moment after the rollback was asked for.
    let from = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    h.commit(
        &scripted(&format!(
            "  sandbox:\n    auto: true\n    freeze: {{ from: \"{}\", to: \"2100-01-01T00:00:00Z\" }}\n",
            from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        "freeze",
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    h.start();
    let log = common::wait_contains(
        &h.deliverer.deployment_log(&back),
        "this rollback was asked for before the freeze began",
    )
    .await;
    assert!(log.contains("starts when the freeze ends"), "{log}");
    assert_eq!(h.deployment("sandbox", 3).await.status, S::Queued);
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v2"));
}

/// An automatic promotion is checked again when it would start: if the live release
/// moved on meanwhile to a commit it does not descend from, it is cancelled, saying
/// why, and the environment keeps what it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_automatic_promotion_that_no_longer_descends_is_cancelled() {
    let mut h = Harness::with_history(&["v1"]).await;
    h.stop().await;
    let c2 = h.commit(&sandbox_only(), "two");
    let v2 = h.release_of("v2", &c2, &sandbox_only(), GOOD).await;
    let made = h.deliverer.on_release(&v2).await.expect("on_release");
    assert_eq!(made.len(), 1, "v2 descends from v1: queued");
    let queued = made[0].clone();
    // Meanwhile v3, a later commit, went live.
    let c3 = h.commit(&sandbox_only(), "three");
    let v3 = h.release_of("v3", &c3, &sandbox_only(), GOOD).await;
    let first = h.deployment("sandbox", 1).await;
    assert!(
        h.store
            .move_deployment(&first.id, &[S::Live], S::Replaced, None)
            .await
            .expect("replace")
    );
    deployed_by_hand(&h, &v3.id, S::Live).await;
    h.start();
    let cancelled = h.wait_status("sandbox", queued.number, S::Cancelled).await;
    let why = cancelled.reason.unwrap_or_default();
    assert!(
        why.starts_with("release v2 (commit ") && why.contains("does not descend from release v3"),
        "{why}"
    );
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v3"));
}

/// A deployment of `release_id` to sandbox that Dave asked for and that ended `how`
/// (written to the store while the loop is stopped).
async fn deployed_by_hand(h: &Harness, release_id: &str, how: S) {
    let dep = h
        .store
        .create_deployment(
            &h.repo,
            "sandbox",
            release_id,
            ferry_store::DeploymentKind::Promotion,
            S::Deploying,
            Some("user:dave"),
        )
        .await
        .expect("deployment");
    let reason = (how == S::Failed).then_some("not healthy");
    assert!(
        h.store
            .move_deployment(&dep.id, &[S::Deploying], how, reason)
            .await
            .expect("move")
    );
}
