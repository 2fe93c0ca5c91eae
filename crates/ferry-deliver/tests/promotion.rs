//! Promotion refusals: each with its reason, and nothing changes — an unknown release
//! or environment, a release not live in the environment before, one live or on its
//! way there already, a freeze, a release that failed somewhere.

mod common;

use common::Ask::Promote;
use common::Refusal::{Conflict, Invalid, NotFound};
use common::{BAD, FROZEN, GOOD, Harness, dave, scripted};
use ferry_store::DeploymentStatus as S;

/// sandbox (auto) → staging (manual) → production (approval); frozen (manual, frozen
/// from 2000 to 2100).
fn promotions() -> String {
    scripted(&format!(
        "  sandbox: {{ auto: true }}
  staging: {{ after: sandbox }}
  production:
    after: staging
    approval: {{ required: 1 }}
  frozen:
    {FROZEN}
"
    ))
}

/// Why nothing is promoted to `frozen` of [`promotions`].
const FROZEN_NOW: &str = "`frozen` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; nothing deploys there now";

/// A harness that sealed v1 with [`promotions`]; the loop is not running, so v1 stays
/// queued in sandbox.
async fn sealed() -> Harness {
    let h = Harness::new().await;
    h.seal("v1", &promotions(), GOOD).await;
    h
}

/// Dave promotes v1 (live in sandbox) to staging; once it is live there, production#1
/// awaits approval.
async fn promote_v1_to_staging(h: &Harness) {
    h.promote("v1", "staging", "dave").await;
    h.wait_production_awaits().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_an_unknown_release_or_environment() {
    let h = sealed().await;
    let moon = "there is no environment `moon`; the default branch's .ferry.yml names: sandbox, staging, production, frozen";
    h.refuses(
        &dave(),
        &[
            (
                Promote("v9", "staging"),
                NotFound,
                "there is no release `v9`",
            ),
            (Promote("v1", "moon"), NotFound, moon),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_not_live_in_the_environment_before() {
    let mut h = sealed().await;
    let not_in_sandbox = "release v1 is not live in `sandbox`, which comes before `staging`";
    let not_in_staging = "release v1 is not live in `staging`, which comes before `production`";
    // Queued in sandbox, not live yet.
    h.refuses(
        &dave(),
        &[
            (Promote("v1", "staging"), Invalid, not_in_sandbox),
            (Promote("v1", "production"), Invalid, not_in_staging),
        ],
    )
    .await;
    // Live once, but replaced since.
    h.start();
    h.wait_audit("deployment.live", "sandbox#1").await;
    h.seal("v2", &promotions(), GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    assert_eq!(h.deployment("sandbox", 1).await.status, S::Replaced);
    h.refuses_one(&dave(), Promote("v1", "staging"), Invalid, not_in_sandbox)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_already_live_there() {
    let mut h = sealed().await;
    h.start();
    h.wait_audit("deployment.live", "sandbox#1").await;
    let live = |env: &str| format!("release v1 is already live in `{env}`");
    let (in_sandbox, in_staging) = (live("sandbox"), live("staging"));
    h.refuses_one(&dave(), Promote("v1", "sandbox"), Conflict, &in_sandbox)
        .await;
    promote_v1_to_staging(&h).await;
    h.refuses_one(&dave(), Promote("v1", "staging"), Conflict, &in_staging)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_already_on_its_way_there() {
    let mut h = sealed().await;
    let queued = "release v1 is already on its way to `sandbox` (deployment sandbox#1, queued)";
    h.refuses_one(&dave(), Promote("v1", "sandbox"), Conflict, queued)
        .await;
    h.start();
    h.wait_status("sandbox", 1, S::Live).await;
    promote_v1_to_staging(&h).await;
    let awaiting = "release v1 is already on its way to `production` (deployment production#1, awaiting_approval)";
    h.refuses_one(&dave(), Promote("v1", "production"), Conflict, awaiting)
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_an_environment_in_a_freeze() {
    let h = sealed().await;
    h.refuses_one(&dave(), Promote("v1", "frozen"), Invalid, FROZEN_NOW)
        .await;
    assert!(h.deployments("frozen").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_failed_somewhere_is_never_promoted_further() {
    let mut h = Harness::started().await;
    let config = scripted("  sandbox: { auto: true }\n  staging: { after: sandbox }\n");
    let failed = |release: &str| {
        format!("release {release} failed in `sandbox` and is never promoted further")
    };
    // Failed with nothing live before: it stays failed.
    h.seal("v1", &config, BAD).await;
    h.wait_audit("deployment.failed", "sandbox#1").await;
    let v1 = failed("v1");
    h.refuses(
        &dave(),
        &[
            (Promote("v1", "staging"), Invalid, &v1),
            (Promote("v1", "sandbox"), Invalid, &v1),
        ],
    )
    .await;
    // Failed and rolled back: the same.
    h.seal("v2", &config, GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    h.seal("v3", &config, BAD).await;
    h.wait_status("sandbox", 3, S::RolledBack).await;
    h.refuses_one(&dave(), Promote("v3", "staging"), Invalid, &failed("v3"))
        .await;
    assert!(h.deployments("staging").await.is_empty());
    h.stop().await;
}
