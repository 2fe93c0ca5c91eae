//! The deliverer's state machine, driven directly (no HTTP): a real SQLite store in a
//! temporary data directory, releases whose files are in the content-addressed store
//! and whose delivery configuration is a loaded `.ferry.yml`, `script` and `process`
//! targets on the host, and `command` probes over short verification windows. Every
//! wait is a bounded poll of the store.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{File, Harness, actor, wait_contains, wait_gone};
use ferry_deliver::deliverer::DeliverError;
use ferry_deliver::layout;
use ferry_store::{DeploymentKind as Kind, DeploymentStatus as S};

/// Fails unless `$result` is `Err(DeliverError::$variant(message))`.
macro_rules! assert_refused {
    ($result:expr, $variant:ident, $message:expr $(,)?) => {
        match $result {
            Err(DeliverError::$variant(m)) => assert_eq!(m, $message),
            other => panic!(
                "expected {}({:?}), got {other:?}",
                stringify!($variant),
                $message
            ),
        }
    };
}

/// The default deploy: a script that records what it deployed where, verified by the
/// release's own `check.sh`.
const SCRIPT: &str = "deploy:
  target:
    script:
      run: echo \"$FERRY_ENVIRONMENT $FERRY_RELEASE\" >> \"$OUT/deploys\"; echo \"script sees $FERRY_COMMIT_SHA in $PWD\"
  verify: { command: ./check.sh, for: 100ms, interval: 25ms }
";

/// A release that passes its verification.
const GOOD: &[File<'static>] = &[
    ("app.sh", "#!/bin/sh\necho app\n", 0o755),
    ("check.sh", "#!/bin/sh\nexit 0\n", 0o755),
];

/// A release whose verification fails (`check.sh` exits 1).
const BAD: &[File<'static>] = &[
    ("app.sh", "#!/bin/sh\necho app\n", 0o755),
    ("check.sh", "#!/bin/sh\nexit 1\n", 0o755),
];

/// Why a release with [`BAD`] fails.
const UNHEALTHY: &str = "not healthy within 0.1s: `./check.sh`: exited with exit status: 1";

/// sandbox (auto) → staging (auto) → production (one approval); demo (manual) after
/// sandbox.
fn pipeline() -> String {
    format!(
        "environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox, auto: true }}
  production:
    after: staging
    approval: {{ required: 1 }}
  demo: {{ after: sandbox }}
{SCRIPT}"
    )
}

/// sandbox (auto) → production (two approvals, never the commit's author).
fn approvals() -> String {
    format!(
        "environments:
  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 2, not: [author] }}
{SCRIPT}"
    )
}

/// sandbox (auto) → staging (manual) → production (approval); frozen (manual, frozen
/// from 2000 to 2100).
fn promotions() -> String {
    format!(
        "environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox }}
  production:
    after: staging
    approval: {{ required: 1 }}
  frozen:
    freeze: {{ from: \"2000-01-01T00:00:00Z\", to: \"2100-01-01T00:00:00Z\" }}
{SCRIPT}"
    )
}

/// sandbox (auto) → staging (auto), the default deploy, `on_failure` as given.
fn checked(on_failure: &str) -> String {
    format!(
        "environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox, auto: true }}
{SCRIPT}  on_failure: {on_failure}
"
    )
}

/// One environment `web` running a supervised process that records its pid, verified
/// by the release's `check.sh`.
fn process(on_failure: &str) -> String {
    format!(
        "environments:
  web: {{ auto: true }}
deploy:
  target:
    process:
      command: echo $$ >> \"$OUT/web.pids\"; exec sleep 300
  verify: {{ command: ./check.sh, for: 100ms, interval: 25ms }}
  on_failure: {on_failure}
"
    )
}

/// The lines a file under `$OUT` holds.
fn lines(h: &Harness, file: &str) -> Vec<String> {
    std::fs::read_to_string(h.out.join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------
// Entering environments

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_release_enters_the_first_environment_and_goes_live() {
    let mut h = Harness::new().await;
    let config = format!("environments:\n  sandbox: {{ auto: true }}\n{SCRIPT}");
    let v1 = h.release("v1", &config, GOOD).await;
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
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    // The script ran in the release's files (copied out of the store, with their
    // modes), with the release in its environment.
    assert_eq!(lines(&h, "deploys"), ["sandbox v1"]);
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
    let mut h = Harness::new().await;
    h.start();
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
    assert_eq!(lines(&h, "deploys"), ["sandbox v1", "staging v1"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_environment_waits_for_promote() {
    let mut h = Harness::new().await;
    h.start();
    let v1 = h.seal("v1", &pipeline(), GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    assert!(h.deployments("demo").await.is_empty());
    let d = h
        .deliverer
        .promote(&h.repo, "v1", "demo", &actor("dave", false))
        .await
        .expect("promote");
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
// Approvals

/// Seals v1 with `config` and waits for production#1 to await approval.
async fn awaiting(config: &str) -> Harness {
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", config, GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    h.wait_audit("deployment.request", "production#1").await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_takes_the_required_number_of_approvals() {
    let mut h = awaiting(&approvals()).await;
    let d = h
        .deliverer
        .approve(
            &h.repo,
            "production#1",
            &actor("bob", true),
            &[],
            Some("lgtm"),
        )
        .await
        .expect("bob approves");
    assert_eq!(d.status, S::AwaitingApproval, "one of two approvals");
    // `ENV.N` names a deployment too.
    let d = h
        .deliverer
        .approve(&h.repo, "production.1", &actor("carol", true), &[], None)
        .await
        .expect("carol approves");
    assert!(
        matches!(d.status, S::Queued | S::Deploying | S::Verifying | S::Live),
        "{d:#?}"
    );
    h.wait_status("production", 1, S::Live).await;
    assert_eq!(h.live("production").await.as_deref(), Some("v1"));
    let approvals: Vec<(String, String, Option<String>)> = h
        .store
        .approvals(&d.id)
        .await
        .expect("approvals")
        .into_iter()
        .map(|a| (a.user_name, a.decision, a.comment))
        .collect();
    assert_eq!(
        approvals,
        [
            (
                "bob".to_string(),
                "approve".to_string(),
                Some("lgtm".to_string())
            ),
            ("carol".to_string(), "approve".to_string(), None),
        ]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_author_and_users_without_the_approver_role_may_not_approve() {
    let mut h = awaiting(&approvals()).await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#1", &actor("ada", true), &[], None)
            .await,
        Forbidden,
        "ada may not approve this deployment: ada is the commit's author",
    );
    assert_refused!(
        h.deliverer
            .reject(&h.repo, "production#1", &actor("ada", true), &[], None)
            .await,
        Forbidden,
        "ada may not approve this deployment: ada is the commit's author",
    );
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#1", &actor("dave", false), &[], None)
            .await,
        Forbidden,
        "dave may not approve deployments: it takes the approver or admin role",
    );
    assert_eq!(h.snapshot().await, before, "a refusal changes nothing");
    let d = h.deployment("production", 1).await;
    assert!(
        h.store
            .approvals(&d.id)
            .await
            .expect("approvals")
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_come_only_from_the_users_and_groups_named() {
    let config = format!(
        "environments:
  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 1, from: [release-managers, alice] }}
{SCRIPT}"
    );
    let mut h = awaiting(&config).await;
    let bob = actor("bob", true);
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#1", &bob, &[], None)
            .await,
        Forbidden,
        "bob may not approve here: approvals come from release-managers, alice",
    );
    let managers = ["release-managers".to_string()];
    h.deliverer
        .approve(&h.repo, "production#1", &bob, &managers, None)
        .await
        .expect("a release manager approves");
    h.wait_status("production", 1, S::Live).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rejection_stops_the_deployment() {
    let mut h = awaiting(&approvals()).await;
    h.deliverer
        .approve(&h.repo, "production#1", &actor("bob", true), &[], None)
        .await
        .expect("bob approves");
    let d = h
        .deliverer
        .reject(
            &h.repo,
            "production#1",
            &actor("carol", true),
            &[],
            Some("not today"),
        )
        .await
        .expect("carol rejects");
    assert_eq!(d.status, S::Rejected);
    assert_eq!(d.reason.as_deref(), Some("rejected by carol"));
    assert!(d.finished_at.is_some());
    assert_eq!(d.started_at, None, "it never deployed");
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#1", &actor("dave", true), &[], None)
            .await,
        Invalid,
        "deployment production#1 is not waiting for approval (it is rejected)",
    );
    let reject = h.wait_audit("deployment.reject", "production#1").await;
    assert_eq!(reject.actor, "user:carol");
    assert_eq!(reject.detail.as_deref(), Some("not today"));
    assert_eq!(h.live("production").await, None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_twice_on_a_deployment_is_a_conflict() {
    let mut h = awaiting(&approvals()).await;
    let bob = actor("bob", true);
    h.deliverer
        .approve(&h.repo, "production#1", &bob, &[], None)
        .await
        .expect("bob approves");
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#1", &bob, &[], None)
            .await,
        Conflict,
        "bob has already decided on deployment production#1",
    );
    assert_refused!(
        h.deliverer
            .reject(&h.repo, "production#1", &bob, &[], None)
            .await,
        Conflict,
        "bob has already decided on deployment production#1",
    );
    assert_eq!(h.snapshot().await, before);
    let d = h.deployment("production", 1).await;
    assert_eq!(d.status, S::AwaitingApproval);
    assert_eq!(h.store.approvals(&d.id).await.expect("approvals").len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_what_does_not_wait_for_approval_is_invalid() {
    let mut h = awaiting(&approvals()).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    let bob = actor("bob", true);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "sandbox#1", &bob, &[], None)
            .await,
        Invalid,
        "deployment sandbox#1 is not waiting for approval (it is live)",
    );
    assert_refused!(
        h.deliverer
            .reject(&h.repo, "sandbox#1", &bob, &[], None)
            .await,
        Invalid,
        "deployment sandbox#1 is not waiting for approval (it is live)",
    );
    assert_refused!(
        h.deliverer
            .approve(&h.repo, "production#7", &bob, &[], None)
            .await,
        NotFound,
        "there is no deployment `production#7`",
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// Promotion refusals: each with its reason, and nothing changes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_an_unknown_release_or_environment() {
    let h = Harness::new().await;
    h.seal("v1", &promotions(), GOOD).await;
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v9", "staging", &dave).await,
        NotFound,
        "there is no release `v9`",
    );
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "moon", &dave).await,
        Invalid,
        "release v1 has no environment `moon`; its environments are: sandbox, staging, production, frozen",
    );
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_not_live_in_the_environment_before() {
    let mut h = Harness::new().await;
    h.seal("v1", &promotions(), GOOD).await;
    let dave = actor("dave", false);
    // Queued in sandbox, not live yet.
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "staging", &dave).await,
        Invalid,
        "release v1 is not live in `sandbox`, which comes before `staging`",
    );
    assert_refused!(
        h.deliverer
            .promote(&h.repo, "v1", "production", &dave)
            .await,
        Invalid,
        "release v1 is not live in `staging`, which comes before `production`",
    );
    assert_eq!(h.snapshot().await, before);
    // Live once, but replaced since.
    h.start();
    h.wait_audit("deployment.live", "sandbox#1").await;
    h.seal("v2", &promotions(), GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    assert_eq!(h.deployment("sandbox", 1).await.status, S::Replaced);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "staging", &dave).await,
        Invalid,
        "release v1 is not live in `sandbox`, which comes before `staging`",
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_already_live_there() {
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", &promotions(), GOOD).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "sandbox", &dave).await,
        Conflict,
        "release v1 is already live in `sandbox`",
    );
    assert_eq!(h.snapshot().await, before);
    h.deliverer
        .promote(&h.repo, "v1", "staging", &dave)
        .await
        .expect("promote to staging");
    h.wait_status("production", 1, S::AwaitingApproval).await;
    h.wait_audit("deployment.request", "production#1").await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "staging", &dave).await,
        Conflict,
        "release v1 is already live in `staging`",
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_a_release_already_on_its_way_there() {
    let mut h = Harness::new().await;
    h.seal("v1", &promotions(), GOOD).await;
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "sandbox", &dave).await,
        Conflict,
        "release v1 is already on its way to `sandbox` (deployment sandbox#1, queued)",
    );
    assert_eq!(h.snapshot().await, before);
    h.start();
    h.wait_status("sandbox", 1, S::Live).await;
    h.deliverer
        .promote(&h.repo, "v1", "staging", &dave)
        .await
        .expect("promote to staging");
    h.wait_status("production", 1, S::AwaitingApproval).await;
    h.wait_audit("deployment.request", "production#1").await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .promote(&h.repo, "v1", "production", &dave)
            .await,
        Conflict,
        "release v1 is already on its way to `production` (deployment production#1, awaiting_approval)",
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_refuses_an_environment_in_a_freeze() {
    let h = Harness::new().await;
    h.seal("v1", &promotions(), GOOD).await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .promote(&h.repo, "v1", "frozen", &actor("dave", false))
            .await,
        Invalid,
        "`frozen` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; nothing deploys there now",
    );
    assert_eq!(h.snapshot().await, before);
    assert!(h.deployments("frozen").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_failed_somewhere_is_never_promoted_further() {
    let mut h = Harness::new().await;
    let config = format!(
        "environments:\n  sandbox: {{ auto: true }}\n  staging: {{ after: sandbox }}\n{SCRIPT}"
    );
    h.start();
    // Failed with nothing live before: it stays failed.
    h.seal("v1", &config, BAD).await;
    h.wait_audit("deployment.failed", "sandbox#1").await;
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    for env in ["staging", "sandbox"] {
        assert_refused!(
            h.deliverer.promote(&h.repo, "v1", env, &dave).await,
            Invalid,
            "release v1 failed in `sandbox` and is never promoted further",
        );
    }
    assert_eq!(h.snapshot().await, before);
    // Failed and rolled back: the same.
    h.seal("v2", &config, GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    h.seal("v3", &config, BAD).await;
    h.wait_status("sandbox", 3, S::RolledBack).await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.promote(&h.repo, "v3", "staging", &dave).await,
        Invalid,
        "release v3 failed in `sandbox` and is never promoted further",
    );
    assert_eq!(h.snapshot().await, before);
    assert!(h.deployments("staging").await.is_empty());
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// Failures: rollback or stop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_verification_rolls_back_to_the_release_live_before() {
    let mut h = Harness::new().await;
    h.start();
    let v1 = h.seal("v1", &checked("rollback"), GOOD).await;
    h.wait_status("staging", 1, S::Live).await;
    h.seal("v2", &checked("rollback"), BAD).await;
    let failed = h.wait_status("sandbox", 2, S::RolledBack).await;
    assert_eq!(
        failed.reason.as_deref(),
        Some(format!("{UNHEALTHY} (rolled back to release v1)").as_str())
    );
    assert_eq!(failed.previous_release_id.as_deref(), Some(v1.id.as_str()));
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
        lines(&h, "deploys"),
        ["sandbox v1", "staging v1", "sandbox v2", "sandbox v1"]
    );
    let log = h.log_of(&failed);
    assert!(log.contains(&format!("failed: {UNHEALTHY}")), "{log}");
    assert!(log.contains("rolling back to release v1"), "{log}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_verification_with_on_failure_stop_stays_failed() {
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", &checked("stop"), GOOD).await;
    h.wait_status("staging", 1, S::Live).await;
    h.seal("v2", &checked("stop"), BAD).await;
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

/// A deploy script from the release: v1's works, v2's exits 3.
fn deploy_script() -> String {
    "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: ./deploy.sh
  verify: { command: ./check.sh, for: 100ms, interval: 25ms }
"
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_deploy_script_rolls_back_to_the_release_live_before() {
    let mut h = Harness::new().await;
    let works: &[File] = &[
        (
            "deploy.sh",
            "#!/bin/sh\necho \"deploying $FERRY_RELEASE\"\n",
            0o755,
        ),
        ("check.sh", "#!/bin/sh\nexit 0\n", 0o755),
    ];
    let breaks: &[File] = &[
        (
            "deploy.sh",
            "#!/bin/sh\necho \"broken $FERRY_RELEASE\" >&2\nexit 3\n",
            0o755,
        ),
        ("check.sh", "#!/bin/sh\nexit 0\n", 0o755),
    ];
    h.start();
    let v1 = h.seal("v1", &deploy_script(), works).await;
    h.wait_audit("deployment.live", "sandbox#1").await;
    h.seal("v2", &deploy_script(), breaks).await;
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
    assert!(h.log_of(&back).contains("deploying v1"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_process_deployment_stops_its_process() {
    let mut h = Harness::new().await;
    h.start();
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
    let mut h = Harness::new().await;
    h.start();
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
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", &process("stop"), GOOD).await;
    h.wait_status("web", 1, S::Live).await;
    h.seal("v2", &process("stop"), BAD).await;
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
// Rollback by hand

/// One auto environment, the default deploy.
fn sandbox_only() -> String {
    format!("environments:\n  sandbox: {{ auto: true }}\n{SCRIPT}")
}

/// A harness whose sandbox ran each of `releases` in turn (the last one live).
async fn with_history(releases: &[&str]) -> Harness {
    let mut h = Harness::new().await;
    h.start();
    for (i, name) in releases.iter().enumerate() {
        h.seal(name, &sandbox_only(), GOOD).await;
        h.wait_audit("deployment.live", &format!("sandbox#{}", i + 1))
            .await;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_back_to_the_release_live_before() {
    let mut h = with_history(&["v1", "v2"]).await;
    let d = h
        .deliverer
        .rollback(&h.repo, "sandbox", None, &actor("dave", false))
        .await
        .expect("rollback");
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
    let mut h = with_history(&["v1", "v2", "v3"]).await;
    h.deliverer
        .rollback(&h.repo, "sandbox", Some("v1"), &actor("dave", false))
        .await
        .expect("rollback");
    h.wait_status("sandbox", 4, S::Live).await;
    assert_eq!(h.live("sandbox").await.as_deref(), Some("v1"));
    assert_eq!(
        lines(&h, "deploys"),
        ["sandbox v1", "sandbox v2", "sandbox v3", "sandbox v1"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_refused_to_the_live_release_or_when_there_is_nothing_earlier() {
    let mut h = with_history(&["v1"]).await;
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer.rollback(&h.repo, "sandbox", None, &dave).await,
        Invalid,
        "`sandbox` has no earlier release to go back to",
    );
    assert_refused!(
        h.deliverer
            .rollback(&h.repo, "sandbox", Some("v1"), &dave)
            .await,
        Conflict,
        "release v1 is already live in `sandbox`",
    );
    assert_refused!(
        h.deliverer
            .rollback(&h.repo, "sandbox", Some("v9"), &dave)
            .await,
        NotFound,
        "there is no release `v9`",
    );
    assert_eq!(h.snapshot().await, before);
    h.seal("v2", &sandbox_only(), GOOD).await;
    h.wait_audit("deployment.live", "sandbox#2").await;
    let before = h.snapshot().await;
    assert_refused!(
        h.deliverer
            .rollback(&h.repo, "sandbox", Some("v2"), &dave)
            .await,
        Conflict,
        "release v2 is already live in `sandbox`",
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_release_is_neither_rolled_back_to_nor_promoted() {
    let mut h = with_history(&["v1", "v2"]).await;
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
    let dave = actor("dave", false);
    let before = h.snapshot().await;
    let why = "release v1 was pruned by the retention policy: its files are gone";
    assert_refused!(
        h.deliverer.rollback(&h.repo, "sandbox", None, &dave).await,
        Invalid,
        why,
    );
    assert_refused!(
        h.deliverer
            .rollback(&h.repo, "sandbox", Some("v1"), &dave)
            .await,
        Invalid,
        why,
    );
    assert_refused!(
        h.deliverer.promote(&h.repo, "v1", "sandbox", &dave).await,
        Invalid,
        why,
    );
    assert_eq!(h.snapshot().await, before);
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// Recovery after a restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_runs_a_live_process_environment_again() {
    let mut h = Harness::new().await;
    h.start();
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
async fn recover_fails_deployments_left_deploying_or_verifying() {
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
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", &config("100ms", "\"true\""), GOOD).await;
    h.wait_audit("deployment.live", "web#1").await;
    h.wait_audit("deployment.live", "ops#1").await;
    let web1 = h.process_pid("web", "v1").await;
    h.seal(
        "v2",
        &config("300s", "echo $$ > \"$OUT/ops.pid\"; exec sleep 300"),
        GOOD,
    )
    .await;
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
        assert_eq!(d.status, S::Failed, "{env}");
        assert_eq!(d.reason.as_deref(), Some(reason));
        assert!(d.finished_at.is_some());
        let entry = h.wait_audit("deployment.failed", &format!("{env}#2")).await;
        assert_eq!(
            (entry.actor.as_str(), entry.detail.as_deref()),
            ("ferry", Some(reason))
        );
        assert_eq!(h.deployment(env, 1).await.status, S::Live);
    }
    // The live release of the process environment runs again.
    let again = h.process_pid("web", "v1").await;
    assert!(ferry_testkit::alive(again));
    h.stop().await;
    assert!(ferry_testkit::gone(again));
}

// ---------------------------------------------------------------------------------
// Secrets

const SECRET: &str = "tok-4f9a-planted-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_script_and_its_file_and_is_masked_in_the_log() {
    let mut h = Harness::new().await;
    let config = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: |
        echo \"token is $API_TOKEN\"
        printf %s \"$API_TOKEN\" > \"$OUT/from-env\"
        cp \"$FERRY_SECRETS_DIR/API_TOKEN\" \"$OUT/from-file\"
        stat -c %a \"$FERRY_SECRETS_DIR/API_TOKEN\" > \"$OUT/mode\"
        printf %s \"$FERRY_SECRETS_DIR\" > \"$OUT/secrets-dir\"
        echo \"other: ${OTHER:-unset}\"
  verify: { command: \"true\", for: 100ms, interval: 25ms }
";
    h.store
        .set_secret(
            &h.key,
            &h.repo,
            "sandbox",
            "API_TOKEN",
            SECRET.as_bytes(),
            Some("admin"),
        )
        .await
        .expect("secret");
    // Another environment's secret does not reach sandbox.
    h.store
        .set_secret(
            &h.key,
            &h.repo,
            "production",
            "OTHER",
            b"other-env-secret",
            None,
        )
        .await
        .expect("secret");
    h.start();
    h.seal("v1", config, GOOD).await;
    let live = h.wait_status("sandbox", 1, S::Live).await;
    assert_eq!(
        std::fs::read_to_string(h.out.join("from-env")).expect("env"),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(h.out.join("from-file")).expect("file"),
        SECRET
    );
    assert_eq!(
        std::fs::read_to_string(h.out.join("mode"))
            .expect("mode")
            .trim(),
        "600"
    );
    let dir =
        std::path::PathBuf::from(std::fs::read_to_string(h.out.join("secrets-dir")).expect("dir"));
    assert!(
        dir.starts_with(layout::secrets_root(&h.data)),
        "{}",
        dir.display()
    );
    assert!(!dir.starts_with(&h.data), "never in the data directory");
    assert!(
        !dir.exists(),
        "a script's secret files go once it has used them"
    );
    let log = h.log_of(&live);
    assert!(log.contains("token is ***"), "{log}");
    assert!(log.contains("other: unset"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    // The deployment records the secret's name, never its value.
    let config = live.config.as_deref().expect("config snapshot");
    assert!(
        config.contains("API_TOKEN") && !config.contains(SECRET),
        "{config}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_a_process_and_is_masked_in_its_output() {
    let mut h = Harness::new().await;
    let config = "environments:
  web: { auto: true }
deploy:
  target:
    process:
      command: echo \"token $API_TOKEN\"; exec sleep 300
  verify: { command: test -f \"$FERRY_SECRETS_DIR/API_TOKEN\", for: 100ms, interval: 25ms }
";
    h.store
        .set_secret(&h.key, &h.repo, "", "API_TOKEN", SECRET.as_bytes(), None)
        .await
        .expect("secret");
    h.start();
    h.seal("v1", config, GOOD).await;
    h.wait_status("web", 1, S::Live).await;
    let pid = h.process_pid("web", "v1").await;
    let output = wait_contains(&h.env_dir("web").join("output.log"), "token ").await;
    assert!(output.contains("token ***"), "{output}");
    assert!(!output.contains(SECRET), "{output}");
    // A running process keeps its secret files.
    let files =
        layout::environment_dir(&layout::secrets_root(&h.data), &h.repo, "web").join("secrets");
    assert_eq!(
        std::fs::read_to_string(files.join("API_TOKEN")).expect("secret file"),
        SECRET
    );
    h.stop().await;
    assert!(ferry_testkit::gone(pid));
    assert!(
        !layout::secrets_root(&h.data).exists(),
        "the server's secret files go when it stops"
    );
}

// ---------------------------------------------------------------------------------
// The audit log

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_and_transition_is_in_the_audit_log() {
    let config = format!(
        "environments:
  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 1 }}
{SCRIPT}"
    );
    let mut h = Harness::new().await;
    h.start();
    h.seal("v1", &config, GOOD).await;
    h.wait_status("production", 1, S::AwaitingApproval).await;
    h.deliverer
        .approve(
            &h.repo,
            "production#1",
            &actor("bob", true),
            &[],
            Some("ship it"),
        )
        .await
        .expect("approve");
    h.wait_audit("deployment.live", "production#1").await;
    h.seal("v2", &config, GOOD).await;
    h.wait_status("production", 2, S::AwaitingApproval).await;
    h.deliverer
        .reject(
            &h.repo,
            "production#2",
            &actor("carol", true),
            &[],
            Some("not now"),
        )
        .await
        .expect("reject");
    h.deliverer
        .rollback(&h.repo, "sandbox", None, &actor("dave", false))
        .await
        .expect("rollback");
    h.wait_audit("deployment.live", "sandbox#3").await;
    h.seal("v3", &config, BAD).await;
    h.wait_status("sandbox", 4, S::RolledBack).await;
    h.wait_audit("deployment.live", "sandbox#5").await;
    // A refusal is not an entry.
    assert!(
        h.deliverer
            .promote(&h.repo, "v3", "production", &actor("dave", false))
            .await
            .is_err()
    );
    let log: Vec<(String, String, String, String)> = h
        .audit()
        .await
        .into_iter()
        .map(|e| (e.actor, e.action, e.target, e.detail.unwrap_or_default()))
        .collect();
    let want = [
        (
            "ferry",
            "deployment.request",
            "sandbox#1",
            "release v1 (queued)",
        ),
        ("ferry", "deployment.live", "sandbox#1", "release v1"),
        (
            "ferry",
            "deployment.request",
            "production#1",
            "release v1 (awaiting_approval)",
        ),
        ("user:bob", "deployment.approve", "production#1", "ship it"),
        ("ferry", "deployment.live", "production#1", "release v1"),
        (
            "ferry",
            "deployment.request",
            "sandbox#2",
            "release v2 (queued)",
        ),
        ("ferry", "deployment.live", "sandbox#2", "release v2"),
        (
            "ferry",
            "deployment.request",
            "production#2",
            "release v2 (awaiting_approval)",
        ),
        ("user:carol", "deployment.reject", "production#2", "not now"),
        (
            "user:dave",
            "deployment.rollback",
            "sandbox#3",
            "back to release v1",
        ),
        ("ferry", "deployment.live", "sandbox#3", "release v1"),
        (
            "ferry",
            "deployment.request",
            "sandbox#4",
            "release v3 (queued)",
        ),
        ("ferry", "deployment.failed", "sandbox#4", UNHEALTHY),
        (
            "ferry",
            "deployment.rollback",
            "sandbox#5",
            "after sandbox#4 failed: back to release v1",
        ),
        ("ferry", "deployment.live", "sandbox#5", "release v1"),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(log, want);
    h.stop().await;
}

// ---------------------------------------------------------------------------------
// Behaviour that looks wrong: the tests say what should happen

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: `rollback --to` deploys any release, one never live in the environment, \
            skipping its approvals, freezes and `after:` (deliverer.rs `rollback`)"]
async fn rollback_to_a_release_never_live_in_the_environment_is_refused() {
    let h = Harness::new().await;
    h.seal("v1", &approvals(), GOOD).await;
    // v1 was never approved for production, nor live in sandbox; a developer asks for
    // a "rollback" of production to it.
    let before = h.snapshot().await;
    let result = h
        .deliverer
        .rollback(&h.repo, "production", Some("v1"), &actor("dave", false))
        .await;
    assert!(
        matches!(result, Err(DeliverError::Invalid(_))),
        "{result:#?}"
    );
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: freezes are checked only by `promote`; `enter` (auto environments on \
            sealing and after the environment before) ignores them"]
async fn an_auto_environment_does_not_deploy_during_its_freeze() {
    let config = format!(
        "environments:
  frozen:
    auto: true
    freeze: {{ from: \"2000-01-01T00:00:00Z\", to: \"2100-01-01T00:00:00Z\" }}
  open: {{ auto: true }}
{SCRIPT}"
    );
    let mut h = Harness::new().await;
    h.start();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: an approval during a freeze queues the deployment and it deploys at once \
            (`decide` does not check `freeze`)"]
async fn an_approved_deployment_does_not_deploy_during_a_freeze() {
    let config = format!(
        "environments:
  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 1 }}
    freeze: {{ from: \"2000-01-01T00:00:00Z\", to: \"2100-01-01T00:00:00Z\" }}
  demo: {{ after: sandbox }}
{SCRIPT}"
    );
    let mut h = awaiting(&config).await;
    let approved = h
        .deliverer
        .approve(&h.repo, "production#1", &actor("bob", true), &[], None)
        .await;
    // Something queued later in another environment: once it is live, the loop has had
    // its turn at production#1.
    h.deliverer
        .promote(&h.repo, "v1", "demo", &actor("dave", false))
        .await
        .expect("promote");
    h.wait_status("demo", 1, S::Live).await;
    let production = h.deployment("production", 1).await;
    h.stop().await;
    assert_eq!(
        production.started_at, None,
        "deployed during a freeze (approve said {approved:?}): {production:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "suspicious: when the automatic rollback fails too, the failed deployment is \
            still marked `rolled_back` (`after_failure` ignores the rollback's outcome)"]
async fn a_failed_automatic_rollback_leaves_the_deployment_failed() {
    let mut h = Harness::new().await;
    // v1 is healthy until `$OUT/break` exists.
    let fragile: &[File] = &[("check.sh", "#!/bin/sh\ntest ! -e \"$OUT/break\"\n", 0o755)];
    h.start();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bug: stopping the loop during a deploy script kills only its `sh`; what the \
            script started keeps running (no group kill, no orphan tracker for scripts)"]
async fn stopping_the_loop_ends_what_a_deploy_script_started() {
    let config = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: sleep 300 & echo $! > \"$OUT/child.pid\"; wait
";
    let mut h = Harness::new().await;
    h.start();
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
