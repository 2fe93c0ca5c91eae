//! The store's behaviour, written against the public API and run against every backend:
//! each test below exists as `name::sqlite` and `name::postgres`. The PostgreSQL server
//! comes from `FERRY_TEST_POSTGRES` (an admin URL; `scripts/test.sh` starts one); each
//! test gets a database of its own.

use ferry_store::{
    JobEnd, NewJob, NewRepository, NewRun, RunFilter, Status, Store, TestFailure, TestSummary,
    Write,
};
use sqlx::Connection;

#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

/// A fresh store, and what it needs to reopen: its temp dir and URL.
struct Fixture {
    tmp: tempfile::TempDir,
    url: String,
}

impl Fixture {
    async fn new(db: Db) -> Option<Fixture> {
        let tmp = tempfile::tempdir().expect("tmp");
        let url = match db {
            Db::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                tmp.path().join("ferry.db").display()
            ),
            Db::Postgres => postgres_database().await?,
        };
        Some(Fixture { tmp, url })
    }

    async fn open(&self) -> Store {
        Store::open_url(&self.url, &self.tmp.path().join("data"))
            .await
            .expect("open")
    }
}

/// A new, empty PostgreSQL database on the test server; `None` (skip) only when
/// `FERRY_SKIP_POSTGRES=1` says so.
async fn postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var("FERRY_TEST_POSTGRES") else {
        if std::env::var_os("FERRY_SKIP_POSTGRES").is_some() {
            eprintln!("skipped: FERRY_SKIP_POSTGRES is set");
            return None;
        }
        panic!(
            "set FERRY_TEST_POSTGRES to an admin URL (scripts/test.sh starts a server), or FERRY_SKIP_POSTGRES=1"
        );
    };
    sqlx::any::install_default_drivers();
    let name = format!("ferry_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// Runs `$test(store, fixture)` against SQLite and PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                if let Some(f) = super::Fixture::new(super::Db::Sqlite).await {
                    super::$name(&f).await;
                }
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(f) = super::Fixture::new(super::Db::Postgres).await {
                    super::$name(&f).await;
                }
            }
        }
    )*};
}

both!(
    runs_are_numbered_per_repository,
    job_and_step_lifecycle,
    logs_keep_bytes_lines_and_times,
    finished_logs_are_compressed_and_read_anywhere,
    reopening_keeps_everything,
    the_writer_batches_in_order_and_reports_failures,
    concurrent_runs_get_distinct_numbers,
    users_and_tokens,
    repositories,
    the_queue_hands_each_run_to_one_claimer,
    runs_filter_and_paginate,
    interrupted_runs_end_clearly,
    leases_are_renewed_and_taken_over_only_when_they_run_out,
    one_server_at_a_time_handles_a_repositorys_deliveries,
    a_second_key_is_refused,
    polled_heads_and_schedules,
    per_repository_limits_hold_runs_back,
    concurrency_groups_run_one_at_a_time,
    built_images_are_kept_with_their_digest,
    registry_logins_are_sealed,
    releases_are_sealed_once,
    deployments_move_by_compare_and_set,
    one_deployment_in_progress_per_environment,
    approvals_audit_variables_and_secrets,
    retention_spares_what_environments_run,
    the_delivery_log_follows_each_delivery,
    old_finished_runs_are_prunable_but_released_ones,
    health_changes_are_recorded_once,
    notifications_are_claimed_once_and_keep_every_attempt,
    sessions_end_by_sign_out_expiry_idleness_and_their_token,
    infra_states_are_versioned_locked_and_granted,
    a_new_plan_voids_the_approvals_of_the_one_before,
);

/// A deployment's plans: the latest is the one it applies; a new plan takes away the
/// approvals of any other plan (an approval is of one plan, by its hash), but keeps
/// the approvals already given to that very plan and every rejection; outputs are kept
/// once applied.
async fn a_new_plan_voids_the_approvals_of_the_one_before(f: &Fixture) {
    use ferry_store::{DeploymentKind as K, DeploymentStatus as S, NewPlan};
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let d = s
        .create_deployment(
            &repo,
            "production",
            &r1.id,
            K::Promotion,
            S::AwaitingApproval,
            None,
        )
        .await
        .expect("d");
    assert!(s.infra_plan(&d.id).await.expect("none").is_none());
    assert_eq!(
        s.latest_infra_version(&repo, "production")
            .await
            .expect("v"),
        None
    );
    let plan = |sha: &'static str, base| NewPlan {
        deployment_id: &d.id,
        repository_id: &repo,
        environment: "production",
        sha256: sha,
        sealed: "sealed-plan",
        summary: "{}",
        base_version: base,
        destroy: false,
    };
    let first = s.put_infra_plan(&plan("aaa", None)).await.expect("plan");
    assert_eq!((first.sha256.as_str(), first.base_version), ("aaa", None));
    s.add_approval(&d.id, "u1", "bob", "approve", None, Some("aaa"))
        .await
        .expect("approve");
    s.add_approval(&d.id, "u2", "cy", "reject", None, Some("aaa"))
        .await
        .expect("reject");
    // The same plan again keeps its approvals.
    s.put_infra_plan(&plan("aaa", None)).await.expect("same");
    assert_eq!(s.approvals(&d.id).await.expect("a").len(), 2);
    // Another plan: the approval of the first goes, the rejection stays.
    let second = s.put_infra_plan(&plan("bbb", Some(4))).await.expect("plan");
    let left = s.approvals(&d.id).await.expect("a");
    assert_eq!(
        left.iter().map(|a| a.decision.as_str()).collect::<Vec<_>>(),
        ["reject"]
    );
    assert_eq!(left[0].plan_sha256.as_deref(), Some("aaa"));
    // A decision on a plan that is no longer the latest records nothing.
    assert!(
        !s.add_approval(&d.id, "u3", "di", "approve", None, Some("aaa"))
            .await
            .expect("not recorded")
    );
    assert_eq!(s.approvals(&d.id).await.expect("a").len(), 1);
    let latest = s.infra_plan(&d.id).await.expect("p").expect("some");
    assert_eq!(latest.info, second);
    assert_eq!((latest.info.base_version, latest.outputs), (Some(4), None));
    s.infra_plan_applied(&second.id, "sealed-outputs")
        .await
        .expect("applied");
    let applied = s.infra_plan(&d.id).await.expect("p").expect("some");
    assert!(applied.info.applied_at.is_some());
    assert_eq!(applied.outputs.as_deref(), Some("sealed-outputs"));
    let all = s.infra_plans(&repo, "production", 10).await.expect("all");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, second.id);
    s.put_infra_state(
        &repo,
        "production",
        &ferry_store::NewState {
            sealed: "x",
            serial: Some(1),
            lineage: None,
            size: 1,
            sha256: "s",
            deployment_id: None,
        },
    )
    .await
    .expect("state");
    assert_eq!(
        s.latest_infra_version(&repo, "production")
            .await
            .expect("v"),
        Some(1)
    );
}

/// Terraform's states: every version kept (a deletion too), one lock per environment
/// (taken again by its holder, refused to another, let go by its id or by force), and
/// credentials of one environment that end with their deployment or their time.
async fn infra_states_are_versioned_locked_and_granted(f: &Fixture) {
    let s = f.open().await;
    let r = s
        .create_repository(&NewRepository {
            name: "infra".into(),
            url: "/srv/git/infra.git".into(),
            default_branch: None,
            webhook_secret: None,
            poll_interval_s: None,
            fork_prs: None,
        })
        .await
        .expect("repo");
    assert!(
        s.infra_state(&r.id, "sandbox", None)
            .await
            .expect("none")
            .is_none()
    );
    let state = |sealed: &'static str, serial| ferry_store::NewState {
        sealed,
        serial,
        lineage: Some("l-1"),
        size: sealed.len() as i64,
        sha256: "abc",
        deployment_id: Some("d-1"),
    };
    assert_eq!(
        s.put_infra_state(&r.id, "sandbox", &state("one", Some(1)))
            .await
            .expect("put"),
        1
    );
    assert_eq!(
        s.put_infra_state(&r.id, "sandbox", &state("two", Some(2)))
            .await
            .expect("put"),
        2
    );
    assert_eq!(
        s.put_infra_state(&r.id, "staging", &state("x", Some(1)))
            .await
            .expect("put"),
        1
    );
    assert_eq!(
        s.put_infra_state(&r.id, "sandbox", &state("", None))
            .await
            .expect("put"),
        3
    );
    let latest = s
        .infra_state(&r.id, "sandbox", None)
        .await
        .expect("get")
        .expect("some");
    assert!(latest.info.deleted && latest.info.version == 3);
    let two = s
        .infra_state(&r.id, "sandbox", Some(2))
        .await
        .expect("get")
        .expect("v2");
    assert_eq!((two.sealed.as_str(), two.info.serial), ("two", Some(2)));
    let versions = s.infra_versions(&r.id, "sandbox").await.expect("list");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );

    assert_eq!(
        s.lock_infra(&r.id, "sandbox", "a", "{}")
            .await
            .expect("lock"),
        None
    );
    assert_eq!(
        s.lock_infra(&r.id, "sandbox", "a", "{}")
            .await
            .expect("again"),
        None
    );
    let held = s
        .lock_infra(&r.id, "sandbox", "b", "{}")
        .await
        .expect("refused");
    assert_eq!(held.map(|(id, _)| id).as_deref(), Some("a"));
    assert!(
        !s.unlock_infra(&r.id, "sandbox", Some("b"))
            .await
            .expect("not b's")
    );
    assert!(
        s.unlock_infra(&r.id, "sandbox", Some("a"))
            .await
            .expect("a's")
    );
    s.lock_infra(&r.id, "sandbox", "c", "{}")
        .await
        .expect("lock");
    assert!(
        s.unlock_infra(&r.id, "sandbox", None)
            .await
            .expect("forced")
    );
    assert!(
        s.infra_lock(&r.id, "sandbox")
            .await
            .expect("none")
            .is_none()
    );

    // A lock taken by a deployment's credential goes with that deployment.
    s.lock_infra_for(&r.id, "staging", "tf-1", "{}", Some("d-9"))
        .await
        .expect("lock");
    assert_eq!(s.unlock_infra_of(Some("d-8")).await.expect("none"), 0);
    assert_eq!(s.unlock_infra_of(Some("d-9")).await.expect("one"), 1);
    assert!(
        s.infra_lock(&r.id, "staging")
            .await
            .expect("none")
            .is_none()
    );

    let grant = ferry_store::InfraGrant {
        repository_id: r.id.clone(),
        environment: "sandbox".into(),
        deployment_id: Some("d-1".into()),
        may_write: true,
    };
    let now = ferry_store::now_ms();
    s.create_infra_credential("h-live", &grant, now + 60_000)
        .await
        .expect("cred");
    s.create_infra_credential("h-old", &grant, now - 1)
        .await
        .expect("cred");
    assert_eq!(
        s.infra_credential("h-live").await.expect("get"),
        Some(grant.clone())
    );
    assert_eq!(
        s.infra_credential("h-old").await.expect("get"),
        None,
        "expired"
    );
    s.end_infra_credentials("d-1").await.expect("end");
    assert_eq!(
        s.infra_credential("h-live").await.expect("get"),
        None,
        "ended"
    );
}

/// A web session is found by the hash of its secret while it lives: not after sign-out,
/// expiry, a long idle time, or its token's revocation; ended ones are swept.
async fn sessions_end_by_sign_out_expiry_idleness_and_their_token(f: &Fixture) {
    let s = f.open().await;
    let ada = s.create_user("ada", "developer").await.expect("user");
    let bob = s.create_user("bob", "viewer").await.expect("user");
    let t = s
        .create_token(&ada.id, "web", "token-hash")
        .await
        .expect("token");
    let t2 = s
        .create_token(&ada.id, "other", "token-hash-2")
        .await
        .expect("token");
    let later = ferry_store::now_ms() + 3_600_000;
    let hour = 3_600_000;
    let first = s
        .create_session(&ada.id, &t.id, "s1", later)
        .await
        .expect("session");
    assert_eq!(
        (first.user_id.as_str(), first.token_id.as_str()),
        (ada.id.as_str(), t.id.as_str())
    );
    let (user, found) = s
        .session_by_hash("s1", hour)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(
        (user.name.as_str(), found.id.as_str()),
        ("ada", first.id.as_str())
    );
    assert!(
        s.session_by_hash("nope", hour)
            .await
            .expect("read")
            .is_none()
    );
    // Idle for longer than allowed (0 ms here): ended.
    assert!(s.session_by_hash("s1", 0).await.expect("read").is_none());
    // Expired.
    s.create_session(&ada.id, &t.id, "s2", ferry_store::now_ms() - 1)
        .await
        .expect("session");
    assert!(s.session_by_hash("s2", hour).await.expect("read").is_none());
    // Signed out: by the hash of its secret, and only by its own user.
    let other = s
        .create_session(&ada.id, &t2.id, "s3", later)
        .await
        .expect("session");
    assert!(
        !s.revoke_session(&bob.id, "s3").await.expect("revoke"),
        "not bob's"
    );
    assert!(s.revoke_session(&ada.id, "s3").await.expect("revoke"));
    assert!(s.session_by_hash("s3", hour).await.expect("read").is_none());
    assert!(
        !s.revoke_session(&ada.id, &other.id).await.expect("revoke"),
        "once"
    );
    // Listed (not revoked ones), then ended with the token it came from.
    let listed: Vec<String> = s
        .sessions(&ada.id)
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert!(
        listed.contains(&first.id) && !listed.contains(&other.id),
        "{listed:?}"
    );
    s.revoke_token(&t.id).await.expect("revoke token");
    assert!(s.session_by_hash("s1", hour).await.expect("read").is_none());
    // Ended sessions are swept.
    assert_eq!(
        s.sweep_sessions(ferry_store::now_ms() + 1)
            .await
            .expect("sweep"),
        2
    );
}

/// A due notification is claimed by one sender; each attempt is kept with what it
/// led to (a retry later, delivered, or given up); the log lists them newest first.
async fn notifications_are_claimed_once_and_keep_every_attempt(f: &Fixture) {
    use ferry_store::{AttemptOutcome, NewNotification, NotificationStatus as N};
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let new = |event: &str| NewNotification {
        repository_id: repo.clone(),
        event: event.into(),
        channel: r#"{"slack":{"secret":"SLACK"}}"#.into(),
        target: "slack SLACK".into(),
        payload: "{}".into(),
    };
    let ids = s
        .enqueue_notifications(&[new("run.failed"), new("deployment.live")])
        .await
        .expect("enqueue");
    assert_eq!(ids.len(), 2);
    let far = ferry_store::now_ms() + 60_000;
    let due = s.due_notifications(far, 10).await.expect("due");
    assert_eq!(due.len(), 2);
    assert!(s.next_notification_at().await.expect("next").is_some());
    // Two senders, one claim each wins.
    let first = &due[0];
    let claims = join_all([1, 2].map(|n| {
        let (s, first) = (s.clone(), first.clone());
        async move { s.claim_notification(&first, far + n).await }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|c| matches!(c, Ok(true))).count(),
        1,
        "{claims:?}"
    );
    s.record_attempt(
        &first.id,
        false,
        "HTTP 500",
        12,
        AttemptOutcome::RetryAt(far),
    )
    .await
    .expect("attempt 1");
    s.record_attempt(&first.id, true, "HTTP 200", 3, AttemptOutcome::Delivered)
        .await
        .expect("attempt 2");
    s.record_attempt(&due[1].id, false, "refused", 1, AttemptOutcome::Failed)
        .await
        .expect("given up");
    assert!(
        s.due_notifications(far * 2, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(s.next_notification_at().await.expect("next"), None);
    let log = s.notifications(&repo, 10).await.expect("log");
    let by_event: std::collections::BTreeMap<String, _> = log
        .into_iter()
        .map(|(n, a)| (n.event.clone(), (n, a)))
        .collect();
    let (failed_run, attempts) = &by_event["run.failed"];
    assert_eq!((failed_run.status, failed_run.attempts), (N::Delivered, 2));
    assert_eq!(failed_run.last_error, None);
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.attempt, a.ok, a.detail.as_str()))
            .collect::<Vec<_>>(),
        [(1, false, "HTTP 500"), (2, true, "HTTP 200")]
    );
    let (live, attempts) = &by_event["deployment.live"];
    assert_eq!(
        (live.status, live.last_error.as_deref()),
        (N::Failed, Some("refused"))
    );
    assert_eq!(attempts.len(), 1);
}

/// The health watch records a change only when there is one, with the state before it;
/// a new deployment's first state is a change too; only live deployments' health is
/// listed; the history is newest first.
async fn health_changes_are_recorded_once(f: &Fixture) {
    use ferry_store::Health as H;
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let d1 = queued_promotion(&s, &repo, "prod", &r1.id).await;
    assert!(start_queued(&s, &d1.id).await);
    assert!(s.make_live(&d1.id).await.expect("live"));
    let first = s
        .set_health(&repo, "prod", &d1.id, H::Healthy, None)
        .await
        .expect("set")
        .expect("a change");
    assert_eq!((first.from_state, first.to_state), (None, H::Healthy));
    assert_eq!(
        s.set_health(&repo, "prod", &d1.id, H::Healthy, None)
            .await
            .expect("set"),
        None,
        "no change, nothing recorded"
    );
    let down = s
        .set_health(&repo, "prod", &d1.id, H::Down, Some("GET /: status 500"))
        .await
        .expect("set")
        .expect("a change");
    assert_eq!(
        (down.from_state, down.to_state),
        (Some(H::Healthy), H::Down)
    );
    let now = s
        .health(&repo, "prod")
        .await
        .expect("read")
        .expect("health");
    assert_eq!(
        (now.state, now.reason.as_deref()),
        (H::Down, Some("GET /: status 500"))
    );
    assert_eq!(
        each::<_, _, Vec<_>>(s.healths(None).await, |h| h.state),
        vec![H::Down]
    );
    assert!(s.healths(Some("nope")).await.expect("list").is_empty());
    // A later deployment going live: its first state follows the last one's.
    let d2 = queued_promotion(&s, &repo, "prod", &r1.id).await;
    assert!(start_queued(&s, &d2.id).await);
    assert!(s.make_live(&d2.id).await.expect("live"));
    assert!(
        s.healths(None).await.expect("list").is_empty(),
        "d1 is no longer live"
    );
    let back = s
        .set_health(&repo, "prod", &d2.id, H::Healthy, None)
        .await
        .expect("set")
        .expect("a change");
    assert_eq!(
        (back.from_state, back.to_state),
        (Some(H::Down), H::Healthy)
    );
    let history = s.health_changes(&repo, "prod", 10).await.expect("history");
    assert_eq!(
        history
            .iter()
            .map(|c| (c.deployment_id.as_str(), c.to_state))
            .collect::<Vec<_>>(),
        vec![
            (d2.id.as_str(), H::Healthy),
            (d1.id.as_str(), H::Down),
            (d1.id.as_str(), H::Healthy)
        ]
    );
    assert!(
        s.health_changes(&repo, "staging", 10)
            .await
            .expect("none")
            .is_empty()
    );
}

/// Runs beyond the newest `keep` of their repository, or finished before a time, may
/// be deleted (with their jobs and steps); a run not finished, or one a release was
/// sealed from, never.
async fn old_finished_runs_are_prunable_but_released_ones(f: &Fixture) {
    let s = &f.open().await;
    let repo = s.ensure_repository("/p", "p").await.expect("repo");
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(s.create_run(&new_run(&repo)).await.expect("run").0);
    }
    for run in &runs[..4] {
        s.write(Write::finish_run(&run.id, Status::Success, None))
            .await
            .expect("finish");
    }
    s.create_release(&new_release(&repo, &runs[0], "r1"))
        .await
        .expect("release");
    // Newest two kept: runs 3 (finished, beyond) and 2 go; 1 made a release; 5 runs.
    let by_count = s.prunable_runs(Some(2), None).await.expect("prunable");
    assert_eq!(by_count, vec![runs[1].id.clone(), runs[2].id.clone()]);
    let now = chrono::Utc::now().timestamp_millis() + 1;
    let by_age = s.prunable_runs(None, Some(now)).await.expect("prunable");
    let ids = |from: &[ferry_store::Run]| from.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        by_age,
        ids(&runs[1..4]),
        "every finished one but the released"
    );
    assert_eq!(
        s.prunable_runs(None, Some(0)).await.expect("none"),
        Vec::<String>::new()
    );
    assert!(s.delete_run(&runs[1].id).await.expect("delete"));
    assert!(s.run_by_id(&runs[1].id).await.is_err(), "gone");
    assert!(
        s.jobs(&runs[1].id).await.expect("jobs").is_empty(),
        "with its jobs"
    );
    assert!(
        !s.delete_run(&runs[0].id).await.expect("kept"),
        "a release's run"
    );
    assert!(
        !s.delete_run(&runs[4].id).await.expect("kept"),
        "not finished"
    );
}

/// Accepted, finished, ignored and redelivered deliveries are each logged with what
/// became of them.
async fn the_delivery_log_follows_each_delivery(f: &Fixture) {
    use ferry_store::{DeliveryStatus, Intake};
    let s = f.open().await;
    let repo = s
        .ensure_repository("test://hooks", "hooks")
        .await
        .expect("repo");
    let item = |id: &str, at: i64| Intake {
        id: String::new(),
        repository_id: repo.clone(),
        provider: "github".into(),
        delivery_id: Some(id.into()),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        sha: "abc".into(),
        received_at: at,
        sender: None,
        pull: None,
        approved_by: None,
    };
    let first = s
        .enqueue_intake(&item("d-1", 1))
        .await
        .expect("enqueue")
        .expect("new");
    let second = s
        .enqueue_intake(&item("d-2", 2))
        .await
        .expect("enqueue")
        .expect("new");
    assert_eq!(
        s.enqueue_intake(&item("d-1", 3)).await.expect("again"),
        None
    );
    s.log_ignored(&item("d-1", 3), "delivery d-1 was already handled")
        .await
        .expect("ignored");
    let pending = s.pending_intake(10).await.expect("pending");
    let logged = s.deliveries(&repo, 10).await.expect("log");
    assert_eq!(logged.len(), 3);
    assert_eq!(logged[0].status, DeliveryStatus::Ignored);
    assert!(
        logged[1..]
            .iter()
            .all(|d| d.status == DeliveryStatus::Pending)
    );
    s.finish_intake(&pending[0], Some("run-1"), "started run 1", false)
        .await
        .expect("finish");
    s.finish_intake(
        &pending[1],
        None,
        "the pipeline does not run for this event",
        false,
    )
    .await
    .expect("finish");
    let one = s.delivery(&repo, &first).await.expect("one");
    assert_eq!(
        (one.status, one.run_id.as_deref()),
        (DeliveryStatus::Started, Some("run-1"))
    );
    let two = s.delivery(&repo, &second).await.expect("two");
    assert_eq!(two.status, DeliveryStatus::Declined);
    assert!(two.finished_at.is_some());
    let again = s.redeliver(&repo, &second).await.expect("redeliver");
    assert_eq!(again.status, DeliveryStatus::Pending);
    assert_eq!(again.redelivery_of.as_deref(), Some(second.as_str()));
    assert_eq!(
        (again.request.git_ref.as_str(), again.request.sha.as_str()),
        ("refs/heads/main", "abc")
    );
    assert_eq!(s.pending_intake(10).await.expect("pending").len(), 1);
}

fn new_run(repo: &str) -> NewRun {
    NewRun {
        repository_id: repo.into(),
        event: "push".into(),
        git_ref: "refs/heads/main".into(),
        branch: Some("main".into()),
        tag: None,
        commit_sha: "abc".into(),
        dirty: true,
        author: "A <a@b>".into(),
        message: "m".into(),
        plan: "{}".into(),
        triggered_by: Some("user:ada".into()),
        concurrency_group: None,
        jobs: vec![
            NewJob {
                name: "build".into(),
                allow_failure: false,
                settled: None,
                steps: vec!["make".into(), "ls".into()],
            },
            NewJob {
                name: "deploy".into(),
                allow_failure: false,
                settled: Some((Status::Skipped, "condition false".into())),
                steps: vec!["d".into()],
            },
        ],
    }
}

/// `n` runs of `repo`, queued in order.
async fn create_runs(s: &Store, repo: &str, n: usize) {
    for _ in 0..n {
        s.create_run(&new_run(repo)).await.expect("run");
    }
}

/// The run `owner` claims next (its lease never runs out), with at most `max_per_repo`
/// runs of a repository running at once.
async fn claim(s: &Store, owner: &str, max_per_repo: i64) -> Option<ferry_store::Run> {
    s.claim_next_run(owner, i64::MAX, max_per_repo)
        .await
        .expect("claim")
}

/// What `field` says of each item a store call listed, in order.
fn each<T, U, C: FromIterator<U>>(
    listed: ferry_store::Result<Vec<T>>,
    field: impl FnMut(T) -> U,
) -> C {
    listed.expect("list").into_iter().map(field).collect()
}

async fn built_images_are_kept_with_their_digest(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    let image = |n: i64, digest: Option<&str>| ferry_store::Image {
        id: format!("img-{n}"),
        run_id: run.id.clone(),
        job_id: ids[0].clone(),
        name: "127.0.0.1:5000/team/app".into(),
        tags: vec!["abc".into(), "latest".into()],
        image_id: format!("sha256:{n:064}"),
        digest: digest.map(str::to_string),
        created_at: 1_000 + n,
    };
    let pushed = image(2, Some("sha256:feed"));
    let local = image(1, None);
    s.apply(&[Write::Image(pushed.clone()), Write::Image(local.clone())])
        .await
        .expect("write");
    assert_eq!(
        s.images(&run.id).await.expect("images"),
        vec![local, pushed],
        "in the order they were made, tags and digest intact"
    );
    let (other, _) = s.create_run(&new_run(&repo)).await.expect("run");
    assert!(s.images(&other.id).await.expect("images").is_empty());
}

async fn registry_logins_are_sealed(f: &Fixture) {
    let s = f.open().await;
    let key = ferry_store::SecretKey::from_hex(&"ab".repeat(32)).expect("key");
    let a = s.ensure_repository("/a", "a").await.expect("repo");
    let b = s.ensure_repository("/b", "b").await.expect("repo");
    s.set_registry_login(
        &key,
        &a,
        "reg.example:5000",
        "ci",
        "pw-one",
        Some("user:ada"),
    )
    .await
    .expect("set");
    s.set_registry_login(&key, &a, "reg.example:5000", "bot", "pw-two", None)
        .await
        .expect("replace");
    let logins = s.registry_logins(&a).await.expect("list");
    assert_eq!(logins.len(), 1);
    assert_eq!(
        (logins[0].host.as_str(), logins[0].username.as_str()),
        ("reg.example:5000", "bot")
    );
    assert_eq!(
        s.registry_credentials(&key, &a).await.expect("open"),
        vec![(
            "reg.example:5000".to_string(),
            "bot".to_string(),
            "pw-two".to_string()
        )]
    );
    assert!(
        s.registry_logins(&b).await.expect("list").is_empty(),
        "per repository"
    );
    let wrong = ferry_store::SecretKey::from_hex(&"cd".repeat(32)).expect("key");
    assert!(
        s.registry_credentials(&wrong, &a).await.is_err(),
        "another key opens nothing"
    );
    assert!(
        s.delete_registry_login(&a, "reg.example:5000")
            .await
            .expect("delete")
    );
    assert!(
        !s.delete_registry_login(&a, "reg.example:5000")
            .await
            .expect("again")
    );
}

fn new_release(repo: &str, run: &ferry_store::Run, name: &str) -> ferry_store::NewRelease {
    ferry_store::NewRelease {
        repository_id: repo.into(),
        name: name.into(),
        run_id: run.id.clone(),
        run_number: run.number,
        commit_sha: "abc".into(),
        git_ref: "refs/heads/main".into(),
        tag: None,
        author: "A <a@b>".into(),
        triggered_by: Some("user:ada".into()),
        plan_hash: "sha256:00".into(),
        ferry_version: "0.1.0".into(),
        delivery: "{}".into(),
        artifacts: vec![ferry_store::ReleaseArtifact {
            job: "build".into(),
            path: "bin/app".into(),
            digest: "sha256:aa".into(),
            size: 3,
            mode: 0o755,
        }],
        images: vec![ferry_store::ReleaseImage {
            job: "image".into(),
            name: "127.0.0.1:5000/app".into(),
            digest: "sha256:bb".into(),
        }],
    }
}

/// A repository with one run and a release `r1` of it.
async fn released(s: &Store) -> (String, ferry_store::Release) {
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, _) = s.create_run(&new_run(&repo)).await.expect("run");
    let release = s
        .create_release(&new_release(&repo, &run, "r1"))
        .await
        .expect("release");
    (repo, release)
}

/// A promotion of `release` to `env`, queued, requested by no one in particular.
async fn queued_promotion(
    s: &Store,
    repo: &str,
    env: &str,
    release: &str,
) -> ferry_store::Deployment {
    use ferry_store::{DeploymentKind as K, DeploymentStatus as S};
    s.create_deployment(repo, env, release, K::Promotion, S::Queued, None)
        .await
        .expect("deployment")
}

/// Starts a queued deployment with no release before it: whether it won the environment.
async fn start_queued(s: &Store, id: &str) -> bool {
    use ferry_store::DeploymentStatus as S;
    s.start_deployment(id, S::Queued, None, "{}")
        .await
        .expect("start")
}

async fn releases_are_sealed_once(f: &Fixture) {
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    assert_eq!(r1.artifacts.len(), 1);
    assert_eq!(r1.images[0].reference(), "127.0.0.1:5000/app@sha256:bb");
    assert_eq!(s.release(&repo, "r1").await.expect("by name"), r1);
    assert_eq!(s.release(&repo, &r1.id).await.expect("by id"), r1);
    assert_eq!(
        s.release_of_run(&r1.run_id).await.expect("of run"),
        Some(r1.clone())
    );
    // The same run cannot be sealed twice, nor a name reused.
    let run = s.run_by_id(&r1.run_id).await.expect("run");
    let again = s.create_release(&new_release(&repo, &run, "r2")).await;
    assert!(
        matches!(again, Err(ferry_store::Error::Conflict(_))),
        "{again:?}"
    );
    let (run2, _) = s.create_run(&new_run(&repo)).await.expect("run");
    let same_name = s.create_release(&new_release(&repo, &run2, "r1")).await;
    assert!(matches!(same_name, Err(ferry_store::Error::Conflict(_))));
    assert!(
        s.release_of_run(&run2.id).await.expect("none").is_none(),
        "nothing half-written"
    );
    let r2 = s
        .create_release(&new_release(&repo, &run2, "r2"))
        .await
        .expect("r2");
    let names: Vec<String> = each(s.releases(&repo, 10).await, |r| r.name);
    assert_eq!(names, ["r2", "r1"]);
    assert!(s.release(&repo, "nope").await.is_err());
    // A release named like another's id never stands in for it: an id is an id.
    let (run3, _) = s.create_run(&new_run(&repo)).await.expect("run");
    s.create_release(&new_release(&repo, &run3, &r2.id))
        .await
        .expect("named like r2's id");
    for _ in 0..3 {
        let got = s.release(&repo, &r2.id).await.expect("by id");
        assert_eq!(got.name, "r2");
    }
}

async fn deployments_move_by_compare_and_set(f: &Fixture) {
    use ferry_store::{DeploymentKind as K, DeploymentStatus as S};
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let d1 = s
        .create_deployment(&repo, "sandbox", &r1.id, K::Auto, S::Queued, Some("ferry"))
        .await
        .expect("d1");
    assert_eq!((d1.number, d1.status), (1, S::Queued));
    assert!(start_queued(&s, &d1.id).await);
    assert!(!start_queued(&s, &d1.id).await, "only once");
    assert!(
        s.move_deployment(&d1.id, &[S::Deploying], S::Verifying, None)
            .await
            .expect("verify")
    );
    assert!(s.make_live(&d1.id).await.expect("live"));
    let live = s
        .live_deployment(&repo, "sandbox")
        .await
        .expect("live")
        .expect("some");
    assert!(
        live.verification_started_at.is_some() && live.verification_finished_at == live.finished_at,
        "verification is timed: {live:?}"
    );
    assert_eq!(live.id, d1.id);
    assert!(live.started_at.is_some() && live.finished_at.is_some());
    let d2 = s
        .create_deployment(
            &repo,
            "sandbox",
            &r1.id,
            K::Promotion,
            S::Queued,
            Some("user:ada"),
        )
        .await
        .expect("d2");
    assert_eq!(d2.number, 2);
    assert!(
        s.start_deployment(&d2.id, S::Queued, Some(&r1.id), "{\"vars\":[]}")
            .await
            .expect("start")
    );
    assert!(s.make_live(&d2.id).await.expect("live"));
    assert_eq!(
        s.deployment(&d1.id).await.expect("d1").status,
        S::Replaced,
        "one live release"
    );
    assert_eq!(
        s.find_deployment(&repo, "sandbox#2")
            .await
            .expect("by number")
            .id,
        d2.id
    );
    assert_eq!(
        s.deployment(&d2.id).await.expect("d2").previous_release_id,
        Some(r1.id.clone())
    );
    assert!(
        !s.move_deployment(&d2.id, &[S::AwaitingApproval], S::Rejected, None)
            .await
            .expect("cas")
    );
    let envs: Vec<String> = each(s.deployments(&repo, Some("sandbox"), 10).await, |d| {
        d.environment
    });
    assert_eq!(envs.len(), 2);
    assert_eq!(s.deployments_in(&[S::Live]).await.expect("live").len(), 1);
    let waiting = s
        .create_deployment(
            &repo,
            "production",
            &r1.id,
            K::Auto,
            S::AwaitingApproval,
            None,
        )
        .await
        .expect("production");
    let current: Vec<(String, S)> = each(s.current_deployments(&repo).await, |d| {
        (d.environment, d.status)
    });
    assert_eq!(
        current,
        [
            ("sandbox".to_string(), S::Live),
            ("production".to_string(), S::AwaitingApproval)
        ],
        "the live one and the waiting one, not the replaced: {waiting:?}"
    );
}

async fn one_deployment_in_progress_per_environment(f: &Fixture) {
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(queued_promotion(&s, &repo, "staging", &r1.id).await.id);
    }
    // Six concurrent starts: exactly one wins while the others are queued.
    let starts = ids.iter().map(|id| {
        let s = s.clone();
        let id = id.clone();
        async move { start_queued(&s, &id).await }
    });
    let won = join_all(starts).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let numbers: std::collections::BTreeSet<i64> =
        each(s.deployments(&repo, Some("staging"), 10).await, |d| {
            d.number
        });
    assert_eq!(numbers.len(), 6, "distinct numbers");
    // Another environment is independent.
    let other = queued_promotion(&s, &repo, "prod", &r1.id).await;
    assert!(start_queued(&s, &other.id).await);
}

/// Runs the futures at once on the runtime and collects their outputs in order.
async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

async fn approvals_audit_variables_and_secrets(f: &Fixture) {
    use ferry_store::{DeploymentKind as K, DeploymentStatus as S};
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let d = s
        .create_deployment(
            &repo,
            "production",
            &r1.id,
            K::Promotion,
            S::AwaitingApproval,
            Some("user:ada"),
        )
        .await
        .expect("d");
    s.add_approval(&d.id, "u1", "bob", "approve", Some("lgtm"), None)
        .await
        .expect("approve");
    let twice = s
        .add_approval(&d.id, "u1", "bob", "approve", None, None)
        .await;
    assert!(matches!(twice, Err(ferry_store::Error::Conflict(_))));
    let approvals = s.approvals(&d.id).await.expect("approvals");
    assert_eq!(
        (approvals.len(), approvals[0].comment.as_deref()),
        (1, Some("lgtm"))
    );

    s.audit(
        Some(&repo),
        "user:ada",
        "secret.set",
        "production/TOKEN",
        None,
    )
    .await
    .expect("audit");
    s.audit(
        Some(&repo),
        "user:bob",
        "deployment.approve",
        "production#1",
        Some("lgtm"),
    )
    .await
    .expect("audit");
    let log = s.audit_log(Some(&repo), 10).await.expect("log");
    assert_eq!(log[0].action, "deployment.approve", "newest first");
    assert_eq!(log.len(), 2);

    s.set_variable(&repo, "", "PORT", "8000", Some("user:ada"))
        .await
        .expect("var");
    s.set_variable(&repo, "production", "PORT", "9000", None)
        .await
        .expect("var");
    s.set_variable(&repo, "staging", "PORT", "7000", None)
        .await
        .expect("var");
    let vars = s.variables(&repo, Some("production")).await.expect("vars");
    let seen: Vec<(&str, &str)> = vars
        .iter()
        .map(|v| (v.environment.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(seen, [("", "8000"), ("production", "9000")]);
    let every = s.variables(&repo, None).await.expect("vars");
    assert_eq!(
        every.len(),
        3,
        "a listing without an environment hides no scope"
    );
    assert!(
        s.delete_variable(&repo, "staging", "PORT")
            .await
            .expect("delete")
    );

    let key = ferry_store::SecretKey::from_hex(&"01".repeat(32)).expect("key");
    s.set_secret(&key, &repo, "", "TOKEN", b"repo-level", None)
        .await
        .expect("secret");
    s.set_secret(
        &key,
        &repo,
        "production",
        "TOKEN",
        b"prod-level",
        Some("user:ada"),
    )
    .await
    .expect("secret");
    s.set_secret(&key, &repo, "", "OTHER", b"o", None)
        .await
        .expect("secret");
    let opened = s
        .open_secrets(&key, &repo, "production")
        .await
        .expect("open");
    assert_eq!(
        opened,
        vec![
            ("OTHER".to_string(), b"o".to_vec()),
            ("TOKEN".to_string(), b"prod-level".to_vec())
        ]
    );
    let names = s
        .secret_names(&repo, Some("production"))
        .await
        .expect("names");
    assert_eq!(names.len(), 3);
    s.set_secret(&key, &repo, "staging", "STAGED", b"s", None)
        .await
        .expect("secret");
    let scopes: Vec<String> = (s.secret_names(&repo, None).await.expect("names"))
        .iter()
        .map(|n| format!("{}/{}", n.environment, n.name))
        .collect();
    assert_eq!(
        scopes,
        ["/OTHER", "/TOKEN", "production/TOKEN", "staging/STAGED"]
    );
    assert!(
        s.delete_secret(&repo, "production", "TOKEN")
            .await
            .expect("delete")
    );
    assert_eq!(
        s.open_secrets(&key, &repo, "production")
            .await
            .expect("open")[1]
            .1,
        b"repo-level"
    );

    let user = s.create_user("carol", "approver").await.expect("user");
    s.add_group_member("release-managers", &user.id)
        .await
        .expect("group");
    s.add_group_member("release-managers", &user.id)
        .await
        .expect("idempotent");
    assert_eq!(
        s.groups_of(&user.id).await.expect("groups"),
        ["release-managers"]
    );
}

async fn retention_spares_what_environments_run(f: &Fixture) {
    let s = f.open().await;
    let (repo, r1) = released(&s).await;
    let mut names = vec![r1.clone()];
    for n in 2..=4 {
        let (run, _) = s.create_run(&new_run(&repo)).await.expect("run");
        let mut new = new_release(&repo, &run, &format!("r{n}"));
        new.artifacts[0].digest = format!("sha256:{n:02}");
        names.push(s.create_release(&new).await.expect("release"));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // r1 runs in production: kept however old. Keep the newest 2: r3 and r4.
    let d = queued_promotion(&s, &repo, "production", &r1.id).await;
    assert!(start_queued(&s, &d.id).await);
    assert!(s.make_live(&d.id).await.expect("live"));
    let prunable: Vec<String> = each(s.prunable_releases(&repo, 2).await, |r| r.name);
    assert_eq!(prunable, ["r2"]);
    s.mark_pruned(&names[1].id).await.expect("prune");
    assert!(
        s.release(&repo, "r2")
            .await
            .expect("r2")
            .pruned_at
            .is_some()
    );
    let kept = s.kept_digests().await.expect("kept");
    assert!(
        kept.contains("sha256:aa") && kept.contains("sha256:03") && !kept.contains("sha256:02")
    );
    assert!(
        s.prunable_releases(&repo, 2)
            .await
            .expect("again")
            .is_empty()
    );
}

async fn runs_are_numbered_per_repository(f: &Fixture) {
    let s = f.open().await;
    let a = s.ensure_repository("/a", "a").await.expect("repo");
    assert_eq!(
        s.ensure_repository("/a", "a").await.expect("again"),
        a,
        "idempotent"
    );
    let b = s.ensure_repository("/b", "b").await.expect("repo");
    let (r1, _) = s.create_run(&new_run(&a)).await.expect("run");
    let (r2, _) = s.create_run(&new_run(&a)).await.expect("run");
    let (rb, _) = s.create_run(&new_run(&b)).await.expect("run");
    assert_eq!((r1.number, r2.number, rb.number), (1, 2, 1));
    let listed: Vec<i64> = each(s.list_runs(&a, 10).await, |r| r.number);
    assert_eq!(listed, [2, 1]);
    assert!(s.run_by_number(&a, 3).await.is_err());
}

async fn job_and_step_lifecycle(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    assert_eq!(run.status, Status::Queued);
    assert!(run.dirty);
    let jobs = s.jobs(&run.id).await.expect("jobs");
    assert_eq!(jobs[1].status, Status::Skipped);
    assert_eq!(jobs[1].reason.as_deref(), Some("condition false"));

    s.apply(&[
        Write::start_run(&run.id),
        Write::start_job(&ids[0], 1),
        Write::start_step(&ids[0], 0, 1),
        Write::finish_step(&ids[0], 0, Status::Failed, Some(2)),
    ])
    .await
    .expect("start");
    let tests = TestSummary {
        passed: 3,
        failed: 1,
        skipped: 0,
        failures: vec![TestFailure {
            name: "a › b".into(),
            message: "boom".into(),
        }],
    };
    s.write(Write::finish_job(
        &ids[0],
        JobEnd {
            status: Status::Failed,
            reason: Some("step 1 failed".into()),
            exit_code: Some(2),
            attempts: 1,
            log_bytes: 10,
            log_lines: 2,
            tests: Some(tests.clone()),
        },
    ))
    .await
    .expect("finish");
    s.write(Write::finish_run(&run.id, Status::Failed, None))
        .await
        .expect("finish run");

    let job = &s.jobs(&run.id).await.expect("jobs")[0];
    assert_eq!(job.status, Status::Failed);
    assert_eq!(job.tests, Some(tests));
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    let steps = s.steps(&ids[0]).await.expect("steps");
    assert_eq!(steps[0].exit_code, Some(2));
    assert_eq!(
        steps[1].status,
        Status::Skipped,
        "a step never reached is skipped"
    );
    let run = s.run_by_number(&repo, 1).await.expect("run");
    assert_eq!(run.status, Status::Failed);
    assert_eq!(s.run_plan(&run.id).await.expect("plan"), "{}");
}

async fn logs_keep_bytes_lines_and_times(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    let mut w = s.log_writer(&run.id, &ids[0]).expect("writer");
    w.write(b"one\ntw").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(3));
    w.write(b"o\nthree").expect("write");
    assert_eq!((w.bytes(), w.lines()), (13, 3));
    let index = w.take_index();
    assert_eq!(index.len(), 2);
    let save = || Write::LogIndex {
        job_id: ids[0].clone(),
        entries: index.clone(),
    };
    s.write(save()).await.expect("index");
    s.write(save()).await.expect("saving twice is harmless");
    let lines: Vec<_> = s
        .read_log(&run.id, &ids[0])
        .await
        .expect("read")
        .map(|l| l.expect("line"))
        .collect();
    let texts: Vec<&[u8]> = lines.iter().map(|l| l.text.as_slice()).collect();
    assert_eq!(texts, [b"one".as_slice(), b"two", b"three"]);
    assert_eq!(lines[0].ts, index[0].ts);
    assert_eq!(
        lines[1].ts, index[0].ts,
        "a line's time is when its first byte arrived"
    );
    assert_eq!(lines[2].ts, index[1].ts);
    assert_eq!(
        lines.iter().map(|l| l.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // A job that wrote nothing has an empty log.
    assert_eq!(s.read_log(&run.id, &ids[1]).await.expect("read").count(), 0);
    // A retry appends, and counts on from the earlier attempt.
    let mut again = s.log_writer(&run.id, &ids[0]).expect("writer");
    assert_eq!((again.bytes(), again.lines()), (13, 3));
    again.write(b"!\nfour\n").expect("write");
    assert_eq!((again.bytes(), again.lines()), (20, 4));
    assert_eq!(
        again.take_index()[0].first_line,
        2,
        "in the unfinished `three`"
    );
}

async fn reopening_keeps_everything(f: &Fixture) {
    let repo;
    {
        let s = f.open().await;
        repo = s.ensure_repository("/a", "a").await.expect("repo");
        s.create_run(&new_run(&repo)).await.expect("run");
        s.close().await;
    }
    let s = f.open().await;
    assert_eq!(
        s.list_runs(&repo, 5).await.expect("list").len(),
        1,
        "no migration applied twice, nothing lost"
    );
}

async fn the_writer_batches_in_order_and_reports_failures(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    let writer = s.writer();
    writer.send(Write::start_run(&run.id));
    for attempt in 1..=50 {
        writer.send(Write::start_job(&ids[0], attempt));
    }
    writer.send(Write::finish_run(&run.id, Status::Success, None));
    writer.flush().await.expect("flush");
    assert_eq!(
        s.jobs(&run.id).await.expect("jobs")[0].attempts,
        50,
        "applied in order"
    );
    assert_eq!(
        s.run_by_number(&repo, 1).await.expect("run").status,
        Status::Success
    );
    // A change the database refuses is reported by the next flush, and the others land.
    writer.send(Write::LogIndex {
        job_id: "no-such-job".into(),
        entries: vec![ferry_store::LogIndexEntry {
            byte_offset: 0,
            first_line: 0,
            ts: 1,
        }],
    });
    writer.send(Write::finish_run(&run.id, Status::Failed, None));
    assert!(writer.flush().await.is_err());
    assert_eq!(
        s.run_by_number(&repo, 1).await.expect("run").status,
        Status::Failed
    );
    writer.close().await.expect("close");
}

async fn concurrent_runs_get_distinct_numbers(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (s, repo) = (s.clone(), repo.clone());
        tasks.spawn(async move { s.create_run(&new_run(&repo)).await.expect("run").0.number });
    }
    let mut numbers: Vec<i64> = tasks.join_all().await;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<i64>>());
}

async fn users_and_tokens(f: &Fixture) {
    let s = f.open().await;
    let ada = s.create_user("ada", "admin").await.expect("user");
    assert!(matches!(
        s.create_user("ada", "viewer").await,
        Err(ferry_store::Error::Conflict(_))
    ));
    let t = s
        .create_token(&ada.id, "laptop", "hash-1")
        .await
        .expect("token");
    let (user, token) = s
        .user_by_token_hash("hash-1")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (user.name.as_str(), token.id.as_str()),
        ("ada", t.id.as_str())
    );
    assert!(
        s.user_by_token_hash("hash-2")
            .await
            .expect("lookup")
            .is_none()
    );
    let used = s.tokens(&ada.id).await.expect("list")[0].last_used_at;
    assert!(used.is_some(), "use is recorded");
    // Used again within the minute: not written again (no write per request).
    s.user_by_token_hash("hash-1")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        s.tokens(&ada.id).await.expect("list")[0].last_used_at,
        used,
        "recorded to the minute"
    );
    s.revoke_token(&t.id).await.expect("revoke");
    assert!(
        s.user_by_token_hash("hash-1")
            .await
            .expect("lookup")
            .is_none(),
        "revoked"
    );
    assert!(
        s.revoke_token(&t.id).await.is_err(),
        "revoking twice is an error"
    );
    assert_eq!(s.users().await.expect("users").len(), 1);
}

async fn repositories(f: &Fixture) {
    let s = f.open().await;
    let new = NewRepository {
        name: "app".into(),
        url: "/srv/git/app.git".into(),
        default_branch: Some("main".into()),
        webhook_secret: Some("s3cret".into()),
        poll_interval_s: Some(60),
        fork_prs: None,
    };
    let r = s.create_repository(&new).await.expect("create");
    assert!(matches!(
        s.create_repository(&new).await,
        Err(ferry_store::Error::Conflict(_))
    ));
    assert_eq!(s.repository("app").await.expect("by name").id, r.id);
    assert_eq!(
        s.repository(&r.id)
            .await
            .expect("by id")
            .webhook_secret
            .as_deref(),
        Some("s3cret")
    );
    let json = serde_json::to_string(&r).expect("json");
    assert!(
        !json.contains("s3cret"),
        "the webhook secret never leaves in JSON: {json}"
    );
    assert!(s.repository("nope").await.is_err());
}

async fn the_queue_hands_each_run_to_one_claimer(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    create_runs(&s, &repo, 10).await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            while let Some(run) = claim(&s, &format!("worker-{w}"), 100).await {
                got.push(run.number);
            }
            got
        });
    }
    let mut all: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=10).collect::<Vec<i64>>(),
        "every run claimed exactly once"
    );
    let run = s.run_by_number(&repo, 1).await.expect("run");
    assert_eq!(run.status, Status::Running);
    assert_eq!(run.triggered_by.as_deref(), Some("user:ada"));
}

async fn runs_filter_and_paginate(f: &Fixture) {
    let s = f.open().await;
    let a = s.ensure_repository("/a", "a").await.expect("repo");
    let b = s.ensure_repository("/b", "b").await.expect("repo");
    create_runs(&s, &a, 5).await;
    let mut other = new_run(&b);
    other.branch = Some("dev".into());
    s.create_run(&other).await.expect("run");
    let all = s
        .find_runs(&RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("all");
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].repository_id, b, "newest first");
    let page1 = s
        .find_runs(&RunFilter {
            repository_id: Some(a.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page");
    let numbers = |runs: &[ferry_store::Run]| runs.iter().map(|r| r.number).collect::<Vec<_>>();
    assert_eq!(numbers(&page1), [5, 4]);
    let page2 = s
        .find_runs(&RunFilter {
            repository_id: Some(a.clone()),
            before: Some(page1[1].id.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(numbers(&page2), [3, 2]);
    let dev = s
        .find_runs(&RunFilter {
            branch: Some("dev".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("dev");
    assert_eq!(dev.len(), 1);
    let queued = s
        .find_runs(&RunFilter {
            status: Some(Status::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("queued");
    assert_eq!(queued.len(), 6);
}

async fn interrupted_runs_end_clearly(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (mine, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    let (queued, _) = s.create_run(&new_run(&repo)).await.expect("run");
    assert_eq!(
        claim(&s, "server-1", 100).await.map(|r| r.id),
        Some(mine.id.clone())
    );
    s.apply(&[
        Write::start_job(&ids[0], 1),
        Write::start_step(&ids[0], 0, 1),
    ])
    .await
    .expect("start");
    assert_eq!(
        s.interrupt_runs(Some("server-2"), "gone")
            .await
            .expect("other server"),
        0,
        "a live lease of another server is kept"
    );
    assert_eq!(
        s.interrupt_runs(Some("server-1"), "the server stopped")
            .await
            .expect("mine"),
        1
    );
    let run = s.run_by_id(&mine.id).await.expect("run");
    assert_eq!(
        (run.status, run.error.as_deref()),
        (Status::Failed, Some("the server stopped"))
    );
    let jobs = s.jobs(&mine.id).await.expect("jobs");
    assert_eq!(jobs[0].status, Status::Failed);
    assert_eq!(
        s.steps(&ids[0]).await.expect("steps")[0].status,
        Status::Failed
    );
    assert_eq!(
        s.run_by_id(&queued.id).await.expect("queued").status,
        Status::Queued,
        "queued runs stay queued"
    );
}

async fn leases_are_renewed_and_taken_over_only_when_they_run_out(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (a, _) = s.create_run(&new_run(&repo)).await.expect("run");
    let (b, _) = s.create_run(&new_run(&repo)).await.expect("run");
    let soon = ferry_store::now_ms() + 60_000;
    let got = s.claim_next_run("server-a", soon, 10).await.expect("claim");
    assert_eq!(got.map(|r| r.id), Some(a.id.clone()));
    // b's lease has already run out when claimed: its server stopped renewing it.
    let got = s
        .claim_next_run("server-b", ferry_store::now_ms() - 1, 10)
        .await
        .expect("claim");
    assert_eq!(got.map(|r| r.id), Some(b.id.clone()));
    // Renewing extends only the owner's own running runs.
    assert_eq!(
        s.renew_run_leases("server-a", soon + 1)
            .await
            .expect("renew"),
        vec![a.id.clone()]
    );
    assert!(
        s.renew_run_leases("server-c", soon)
            .await
            .expect("renew")
            .is_empty()
    );
    // Any server ends what ran out (b), and keeps what is renewed (a).
    let ended = s
        .interrupt_runs(None, "interrupted: its server stopped")
        .await
        .expect("reap");
    assert_eq!(ended, 1);
    let run_b = s.run_by_id(&b.id).await.expect("b");
    assert_eq!(
        (run_b.status, run_b.error.as_deref()),
        (Status::Failed, Some("interrupted: its server stopped"))
    );
    assert_eq!(s.run_by_id(&a.id).await.expect("a").status, Status::Running);
    // b's server, alive after all, finds at its next heartbeat that b is no longer its.
    assert!(
        s.renew_run_leases("server-b", soon)
            .await
            .expect("renew")
            .is_empty()
    );
    // Nothing is ended twice.
    assert_eq!(s.interrupt_runs(None, "again").await.expect("reap"), 0);
}

async fn one_server_at_a_time_handles_a_repositorys_deliveries(f: &Fixture) {
    let s = f.open().await;
    let later = ferry_store::now_ms() + 60_000;
    assert!(s.claim_intake("r1", "a", later).await.expect("claim"));
    assert!(
        !s.claim_intake("r1", "b", later).await.expect("claim"),
        "a holds it"
    );
    assert!(
        s.claim_intake("r2", "b", later).await.expect("claim"),
        "another repository"
    );
    assert!(
        s.claim_intake("r1", "a", later + 1).await.expect("renew"),
        "a renews"
    );
    // Only the owner lets go.
    s.release_intake("r1", "b").await.expect("release");
    assert!(!s.claim_intake("r1", "b", later).await.expect("claim"));
    s.release_intake("r1", "a").await.expect("release");
    assert!(
        s.claim_intake("r1", "b", later).await.expect("claim"),
        "free again"
    );
    // A claim whose lease ran out is taken over.
    assert!(
        s.claim_intake("r3", "a", ferry_store::now_ms() - 1)
            .await
            .expect("claim")
    );
    assert!(s.claim_intake("r3", "b", later).await.expect("taken over"));
    assert!(
        !s.claim_intake("r3", "a", later).await.expect("claim"),
        "b's now"
    );
}

async fn a_second_key_is_refused(f: &Fixture) {
    let s = f.open().await;
    let first = ferry_store::SecretKey::from_hex(&"01".repeat(32)).expect("key");
    let other = ferry_store::SecretKey::from_hex(&"02".repeat(32)).expect("key");
    s.check_key(&first)
        .await
        .expect("the first key is the store's");
    s.check_key(&first).await.expect("again");
    let err = s.check_key(&other).await.expect_err("another key");
    assert!(err.to_string().contains("FERRY_SECRET_KEY"), "{err}");
}

async fn polled_heads_and_schedules(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    assert!(
        s.update_head(&repo, "refs/heads/main", "aaa")
            .await
            .expect("new"),
        "a new head"
    );
    assert!(
        !s.update_head(&repo, "refs/heads/main", "aaa")
            .await
            .expect("same"),
        "unchanged"
    );
    assert!(
        s.update_head(&repo, "refs/heads/main", "bbb")
            .await
            .expect("moved"),
        "moved"
    );
    s.remove_head(&repo, "refs/heads/main")
        .await
        .expect("remove");
    assert!(s.heads(&repo).await.expect("heads").is_empty());
    let first = s
        .schedule_last_fired(&repo, "0 3 * * *", 1000)
        .await
        .expect("first sight");
    assert_eq!(first, 1000);
    assert_eq!(
        s.schedule_last_fired(&repo, "0 3 * * *", 5000)
            .await
            .expect("again"),
        1000,
        "kept"
    );
    assert!(
        s.schedule_fired(&repo, "0 3 * * *", 1000, 2000)
            .await
            .expect("fire")
    );
    assert!(
        !s.schedule_fired(&repo, "0 3 * * *", 1000, 2000)
            .await
            .expect("twice"),
        "only once"
    );
}

async fn per_repository_limits_hold_runs_back(f: &Fixture) {
    let s = f.open().await;
    let a = s.ensure_repository("/a", "a").await.expect("repo");
    let b = s.ensure_repository("/b", "b").await.expect("repo");
    create_runs(&s, &a, 2).await;
    create_runs(&s, &b, 1).await;
    let first = claim(&s, "w", 1).await.expect("a run");
    assert_eq!(first.repository_id, a);
    let second = claim(&s, "w", 1).await.expect("a run");
    assert_eq!(
        second.repository_id, b,
        "a's second run waits for its first"
    );
    assert!(claim(&s, "w", 1).await.is_none());
}

async fn concurrency_groups_run_one_at_a_time(f: &Fixture) {
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let grouped = || {
        let mut r = new_run(&repo);
        r.concurrency_group = Some("deploy-main".into());
        r
    };
    let (first, _) = s.create_run(&grouped()).await.expect("run");
    let (second, _) = s.create_run(&grouped()).await.expect("run");
    let (other, _) = s.create_run(&new_run(&repo)).await.expect("run");
    assert_eq!(
        claim(&s, "w", 10).await.map(|r| r.id),
        Some(first.id.clone())
    );
    let next = claim(&s, "w", 10).await.map(|r| r.id);
    assert_eq!(
        next,
        Some(other.id.clone()),
        "the group's second run waits; another run goes ahead"
    );
    assert!(claim(&s, "w", 10).await.is_none());
    let (third, _) = s.create_run(&grouped()).await.expect("run");
    let running = s
        .supersede(&repo, "deploy-main", &third)
        .await
        .expect("supersede");
    assert_eq!(
        running,
        vec![first.id.clone()],
        "running runs are for the caller to cancel"
    );
    let second = s.run_by_id(&second.id).await.expect("run");
    assert_eq!(
        (second.status, second.error.as_deref()),
        (Status::Cancelled, Some("superseded by run 4"))
    );
    assert_eq!(
        s.run_by_id(&third.id).await.expect("run").status,
        Status::Queued
    );
}

/// A command's store keeps the WAL small (it checkpoints in the commit that passes
/// `COMMAND_CHECKPOINT_PAGES`, where SQLite's default waits for 1,000 pages), and its
/// connection stays open when the store is let go: closing it would start a checkpoint
/// that the command's exit cuts short.
#[test]
fn a_commands_store_keeps_a_small_wal_and_stays_open_until_exit() {
    use ferry_store::{COMMAND_CHECKPOINT_PAGES, Pooling};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let wal = data.join("ferry.db-wal");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let command = runtime();
    let repo = command.block_on(async {
        let store = Store::open_with(&data, None, Pooling::Single)
            .await
            .expect("open");
        let repo = store.ensure_repository("/a", "a").await.expect("repo");
        for _ in 0..200 {
            store.create_run(&new_run(&repo)).await.expect("run");
        }
        repo
    });
    let frame = 4096 + 24;
    let len = std::fs::metadata(&wal).expect("a WAL").len();
    assert!(
        len <= (u64::from(COMMAND_CHECKPOINT_PAGES) + 32) * frame,
        "the WAL grew to {len} bytes"
    );
    // The command ends as `main` ends it: its runtime is left to end with the process.
    std::mem::forget(command);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(wal.exists(), "the connection was closed and checkpointed");
    let next = runtime();
    let runs = next.block_on(async {
        let again = Store::open_with(&data, None, Pooling::Single)
            .await
            .expect("open again");
        again.list_runs(&repo, 500).await.expect("runs").len()
    });
    assert_eq!(runs, 200);
}

/// An SQLite store records the newest migration it has in `user_version`: one at this
/// build's newest opens without the migrator (so a store whose migration table was
/// lost still opens), and one recorded lower is migrated and recorded again.
#[tokio::test]
async fn sqlite_records_its_schema_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let url = format!("sqlite://{}", data.join("ferry.db").display());
    sqlx::any::install_default_drivers();
    let sql = |statement: &'static str| {
        let url = url.clone();
        async move {
            let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
            let version: i64 = sqlx::query_scalar(statement)
                .fetch_optional(&mut conn)
                .await
                .expect(statement)
                .unwrap_or_default();
            conn.close().await.expect("close");
            version
        }
    };
    let store = Store::open(&data).await.expect("open");
    store.ensure_repository("/a", "a").await.expect("write");
    store.close().await;
    assert_eq!(
        sql("PRAGMA user_version").await,
        ferry_store::SCHEMA_VERSION
    );
    // Recorded lower, with every migration applied: the migrator finds nothing to do,
    // and the version is recorded again.
    sql("PRAGMA user_version = 3").await;
    Store::open(&data).await.expect("open").close().await;
    assert_eq!(
        sql("PRAGMA user_version").await,
        ferry_store::SCHEMA_VERSION
    );
    // At the newest version the migrator is not asked.
    sql("DROP TABLE _sqlx_migrations").await;
    let store = Store::open(&data).await.expect("open without the migrator");
    assert_eq!(store.repositories().await.expect("repos").len(), 1);
    store.close().await;
    // Recorded lower: the migrator runs (and finds nothing recorded: every migration
    // would be applied again, which the existing tables refuse).
    sql("PRAGMA user_version = 3").await;
    assert!(Store::open(&data).await.is_err());
}

#[tokio::test]
async fn a_data_directory_with_url_characters_opens() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("we#ird?dir %20 100%");
    let store = Store::open(&dir).await.expect("open");
    store.ensure_repository("/a", "a").await.expect("write");
    assert!(
        dir.join("ferry.db").is_file(),
        "the file is where it was asked for"
    );
}

/// A finished log is kept as seekable zstd, much smaller than the text; reading it from
/// the start, from its end and from any line gives back exactly what was written.
async fn finished_logs_are_compressed_and_read_anywhere(f: &Fixture) {
    use std::io::{Read, Seek, SeekFrom};
    let s = f.open().await;
    let repo = s.ensure_repository("/a", "a").await.expect("repo");
    let (run, ids) = s.create_run(&new_run(&repo)).await.expect("run");
    let plain = s.log_path(&run.id, &ids[0]);
    let packed = ferry_store::packed_path(&plain);
    // 3 frames and a bit, in writes of assorted sizes, with a pause between some so
    // that the time index has entries all along.
    let line = |i: u64| format!("line {i} of a build log: compiling crate {}\n", i % 97);
    let text: Vec<u8> = (0..120_000).flat_map(|i| line(i).into_bytes()).collect();
    let mut w = s.log_writer(&run.id, &ids[0]).expect("writer");
    for (n, piece) in text.chunks(70_001).enumerate() {
        w.write(piece).expect("write");
        if n % 10 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let index = w.take_index();
    assert!(index.len() >= 4, "{index:?}");
    s.write(Write::LogIndex {
        job_id: ids[0].clone(),
        entries: index,
    })
    .await
    .expect("index");
    // While the job runs, the log can be followed from the files: what was written
    // is there within a second. Only the first frame was written plain.
    std::thread::sleep(ferry_store::logs::IDLE + std::time::Duration::from_millis(300));
    let mut live = ferry_store::open_log(&plain).expect("open").expect("a log");
    assert!(!live.is_packed());
    assert_eq!(live.len().expect("len"), text.len() as u64);
    let plain_size = std::fs::metadata(&plain).expect("plain").len();
    assert!(
        plain_size < 2 * ferry_store::logs::FRAME as u64,
        "{plain_size}"
    );
    let mut middle = vec![0u8; 100];
    live.seek(SeekFrom::Start(3_000_000)).expect("seek");
    live.read_exact(&mut middle).expect("read");
    assert_eq!(middle, text[3_000_000..3_000_100]);
    live.seek(SeekFrom::Start(0)).expect("seek");
    w.finish().expect("finish");
    assert!(!plain.exists(), "the plain log is gone");
    let stored = std::fs::metadata(&packed).expect("packed").len();
    assert!(
        stored * 10 < text.len() as u64,
        "{stored} bytes stored for {} of log",
        text.len()
    );
    // A reader that opened the plain log before it was compressed reads on.
    let mut before = Vec::new();
    live.read_to_end(&mut before).expect("read");
    assert_eq!(before, text);
    // Whole, through any zstd decoder and through Ferry.
    let mut log = s.open_log(&run.id, &ids[0]).expect("open").expect("a log");
    assert!(log.is_packed());
    assert_eq!(log.len().expect("len"), text.len() as u64);
    let mut all = Vec::new();
    log.read_to_end(&mut all).expect("read");
    assert_eq!(all, text);
    // Its end.
    let at = ferry_store::tail_offset(&mut log, 3).expect("tail");
    log.seek(SeekFrom::Start(at)).expect("seek");
    let mut end = String::new();
    log.read_to_string(&mut end).expect("read");
    assert_eq!(end, line(119_997) + &line(119_998) + &line(119_999));
    // Past its end: nothing, as with a file.
    assert_eq!(
        log.seek(SeekFrom::Start(1 << 40)).expect("seek"),
        text.len() as u64
    );
    assert_eq!(log.read(&mut [0u8; 8]).expect("read"), 0);
    // Any line, found from the index.
    for number in [1u64, 2, 777, 60_001, 119_999, 120_000] {
        let (at, mut log) = s
            .log_at_line(&run.id, &ids[0], number)
            .await
            .expect("line")
            .expect("a log");
        let want = line(number - 1);
        assert!(
            text[at as usize..].starts_with(want.as_bytes()),
            "line {number} at {at}"
        );
        let mut first = vec![0u8; want.len()];
        log.read_exact(&mut first).expect("read");
        assert_eq!(first, want.as_bytes());
    }
    let (at, _) = s
        .log_at_line(&run.id, &ids[0], 120_001)
        .await
        .expect("line")
        .expect("a log");
    assert_eq!(at, text.len() as u64, "past the last line: the end");
    // A job that wrote nothing: an empty log.
    let empty = s.log_writer(&run.id, &ids[1]).expect("writer");
    empty.finish().expect("finish");
    let mut log = s.open_log(&run.id, &ids[1]).expect("open").expect("a log");
    assert_eq!(log.len().expect("len"), 0);
    assert_eq!(s.read_log(&run.id, &ids[1]).await.expect("read").count(), 0);
    // A retry reopens a finished log: it is made plain again and appended to.
    let mut again = s.log_writer(&run.id, &ids[0]).expect("writer");
    assert_eq!(again.lines(), 120_000);
    again.write(b"retried\n").expect("write");
    again.finish().expect("finish");
    let mut log = s.open_log(&run.id, &ids[0]).expect("open").expect("a log");
    let at = ferry_store::tail_offset(&mut log, 2).expect("tail");
    log.seek(SeekFrom::Start(at)).expect("seek");
    let mut end = String::new();
    log.read_to_string(&mut end).expect("read");
    assert_eq!(end, line(119_999) + "retried\n");
    // A log of a few blocks stays plain; one bigger than that but under a frame is
    // compressed when it ends, on the spot.
    let (run2, ids2) = s.create_run(&new_run(&repo)).await.expect("run");
    let mut small = s.log_writer(&run2.id, &ids2[0]).expect("writer");
    small.write(b"hello\n").expect("write");
    small.finish().expect("finish");
    let small_path = s.log_path(&run2.id, &ids2[0]);
    assert!(small_path.exists() && !ferry_store::packed_path(&small_path).exists());
    let lines: Vec<_> = s
        .read_log(&run2.id, &ids2[0])
        .await
        .expect("read")
        .map(|l| l.expect("line").text)
        .collect();
    assert_eq!(lines, [b"hello".to_vec()]);
    let mut medium = s.log_writer(&run2.id, &ids2[1]).expect("writer");
    let some = &text[..100_000];
    medium.write(some).expect("write");
    medium.finish().expect("finish");
    let medium_path = s.log_path(&run2.id, &ids2[1]);
    assert!(!medium_path.exists() && ferry_store::packed_path(&medium_path).exists());
    let mut all = Vec::new();
    s.open_log(&run2.id, &ids2[1])
        .expect("open")
        .expect("a log")
        .read_to_end(&mut all)
        .expect("read");
    assert_eq!(all, some);
}
