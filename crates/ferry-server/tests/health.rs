//! The health watch: a live environment's probes keep running; it goes `degraded`,
//! then `down`, and back to `healthy`, with each change recorded; `on_unhealthy:
//! rollback` deploys the release before, `notify` leaves it; the watch resumes after a
//! restart; `/metrics` shows each environment's state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ferry_testkit::server::{Server, env_of, live_release, promtool, push_version, wait_for};
use serde_json::Value;

/// The app is a process that sleeps; its health is what a server of the test answers
/// at `/health/RELEASE` (503 for the releases in its `failing` set), so that the test
/// decides which release is unhealthy.
const PIPELINE: &str = "jobs:
  build:
    run: |
      mkdir -p app
      printf '#!/bin/sh\\nexec sleep 600\\n' > app/run
      chmod +x app/run
      cp version app/
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox:
    auto: true
    deploy:
      target: { process: { command: cd app && exec ./run } }
      verify:
        http: http://127.0.0.1:${{ vars.HEALTH_PORT }}/health/${{ release.id }}
        for: 500ms
        interval: 100ms
      watch: { interval: 200ms, failures: 3 }
      on_unhealthy: rollback
  staging:
    after: sandbox
    auto: true
    deploy:
      target: { process: { command: cd app && exec ./run } }
      verify:
        http: http://127.0.0.1:${{ vars.HEALTH_PORT }}/health/${{ release.id }}
        for: 500ms
        interval: 100ms
      watch: { interval: 200ms, failures: 2 }
";

/// Events the `notify:` webhook (`POST /notify`) got, in order.
type Told = Arc<Mutex<Vec<Value>>>;

/// A health endpoint the test controls (503 for the releases in the set), which also
/// takes the repository's notifications.
async fn health_server() -> (u16, Arc<Mutex<HashSet<String>>>, Told) {
    let failing: Arc<Mutex<HashSet<String>>> = Arc::default();
    let told: Told = Arc::default();
    let keep = told.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let set = failing.clone();
    let app = axum::Router::new()
        .route(
            "/health/{release}",
            axum::routing::get(
                move |axum::extract::Path(release): axum::extract::Path<String>| {
                    let set = set.clone();
                    async move {
                        if set.lock().expect("lock").contains(&release) {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "sick")
                        } else {
                            (axum::http::StatusCode::OK, "ok")
                        }
                    }
                },
            ),
        )
        .route(
            "/notify",
            axum::routing::post(move |body: String| {
                let keep = keep.clone();
                async move {
                    keep.lock()
                        .expect("lock")
                        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, failing, told)
}

/// `(event, environment)` of what the webhook was told, in order.
fn told_of(told: &Told) -> Vec<(String, String)> {
    told.lock()
        .expect("lock")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["environment"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The environment's health view (`GET …/environments/ENV/health`).
async fn health_of(s: &Server, env: &str) -> Value {
    s.get(&format!("/api/v1/repos/shop/environments/{env}/health"))
        .await
}

/// Waits until the environment's health is `state`; returns the view.
async fn wait_for_health(s: &Server, env: &str, state: &str) -> Value {
    wait_for(&format!("{env} {state}"), async || {
        let view = health_of(s, env).await;
        if view["health"]["state"] == state {
            Ok(view)
        } else {
            Err(view)
        }
    })
    .await
}

/// The changes of an environment's health, oldest first: `from→to`.
fn changes(view: &Value) -> Vec<String> {
    let mut out: Vec<String> = view["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|c| {
            format!(
                "{}→{}",
                c["from_state"].as_str().unwrap_or("-"),
                c["to_state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    out.reverse();
    out
}

async fn metrics(s: &Server) -> String {
    s.send(s.request("GET", "/metrics").bearer_auth(&s.admin))
        .await
        .text
}

#[tokio::test]
async fn environments_are_watched_and_go_down_roll_back_and_recover() {
    let (port, failing, told) = health_server().await;
    let s = Server::start().await;
    let pipeline = format!(
        "{PIPELINE}notify:\n  - webhook: http://127.0.0.1:{port}/notify\n    on: [deployment.rolled_back, environment.unhealthy, environment.recovered]\n"
    );
    let bare = s.repository("shop", Some(&pipeline));
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    s.set_variable("shop", "HEALTH_PORT", &port.to_string(), None)
        .await;
    let run = s.trigger("shop").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    s.wait_for_live("shop", "staging").await;
    let v1 = live_release(&s, "shop", "sandbox").await;
    // Verified and live: healthy, in the environments' view too.
    wait_for_health(&s, "staging", "healthy").await;
    let envs = s.environments("shop").await;
    assert_eq!(env_of(&envs, "sandbox")["health"]["state"], "healthy");
    assert_eq!(changes(&health_of(&s, "sandbox").await), ["-→healthy"]);
    // The process's workload: its memory, no restart, since when it runs.
    let w = &env_of(&envs, "sandbox")["workload"];
    assert!(w["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{w}");
    assert_eq!(w["restarts"], 0, "{w}");
    assert!(w["started_at"].as_i64().is_some(), "{w}");
    let text = metrics(&s).await;
    for want in [
        "ferry_workload_memory_bytes{environment=\"sandbox\",repository=\"shop\"} ",
        "ferry_workload_restarts{environment=\"staging\",repository=\"shop\"} 0",
        "ferry_workload_uptime_seconds{environment=\"sandbox\",repository=\"shop\"} ",
        "ferry_workload_cpu_seconds{environment=\"sandbox\",repository=\"shop\"} ",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }

    // v2 goes live everywhere, then turns sick: sandbox (rollback) goes back to v1;
    // staging (notify) stays down on v2.
    push_version(&s, "shop", "v2");
    let run = s.trigger("shop").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    let v2 = wait_for("v2 live in staging", async || {
        let envs = s.environments("shop").await;
        let live = env_of(&envs, "staging")["live"]["release"].clone();
        match live.as_str() {
            Some(r) if r != v1 => Ok(r.to_string()),
            _ => Err(live),
        }
    })
    .await;
    wait_for_health(&s, "staging", "healthy").await;
    failing.lock().expect("lock").insert(v2.clone());
    let list = s
        .wait_for_deployments("shop", "sandbox", "v2 rolled back", |l| {
            l.iter()
                .any(|d| d["kind"] == "rollback" && d["status"] == "live")
        })
        .await;
    let gone = list
        .iter()
        .find(|d| d["release"] == v2.as_str())
        .expect("v2's deployment");
    assert_eq!(gone["status"], "rolled_back", "{gone}");
    let reason = gone["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("went down: GET http://127.0.0.1:")
            && reason.contains("status 503, expected 200")
            && reason.ends_with(&format!("(rolled back to release {v1})")),
        "{reason}"
    );
    assert_eq!(live_release(&s, "shop", "sandbox").await, v1);
    let sandbox = wait_for_health(&s, "sandbox", "healthy").await;
    assert_eq!(
        changes(&sandbox),
        [
            "-→healthy",
            "healthy→healthy",
            "healthy→degraded",
            "degraded→down",
            "down→healthy"
        ],
        "{sandbox}"
    );
    let log = s
        .get(&format!(
            "/api/v1/repos/shop/deployments/{}/log",
            gone["label"].as_str().expect("label").replace('#', ".")
        ))
        .await;
    let log = log.as_str().unwrap_or_default();
    assert!(log.contains("health: degraded: GET"), "{log}");
    assert!(
        log.contains(&format!("rolling back to release {v1}")),
        "{log}"
    );
    // Staging says so and stays on v2.
    let staging = wait_for_health(&s, "staging", "down").await;
    assert!(
        staging["health"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("status 503")),
        "{staging}"
    );
    assert_eq!(live_release(&s, "shop", "staging").await, v2);
    let text = metrics(&s).await;
    for want in [
        "ferry_environment_health{environment=\"staging\",repository=\"shop\",state=\"down\"} 1",
        "ferry_environment_health{environment=\"staging\",repository=\"shop\",state=\"healthy\"} 0",
        "ferry_environment_health{environment=\"sandbox\",repository=\"shop\",state=\"healthy\"} 1",
        "ferry_rollbacks_total{cause=\"automatic\",environment=\"sandbox\",repository=\"shop\"} 1",
        "ferry_deployments_finished_total{environment=\"sandbox\",repository=\"shop\",result=\"live\"} 3",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    let audit = s.get("/api/v1/repos/shop/audit?limit=100").await;
    assert!(
        audit["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .any(|e| e["action"] == "deployment.rollback"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("went down"))),
        "{audit}"
    );

    // It recovers; after a restart the watch resumes and sees it go down again.
    failing.lock().expect("lock").clear();
    wait_for_health(&s, "staging", "healthy").await;
    let seen = wait_for("the notifications", async || {
        let seen = told_of(&told);
        if seen
            .iter()
            .any(|(e, env)| e == "environment.recovered" && env == "staging")
        {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await;
    for want in [
        ("environment.unhealthy", "sandbox"),
        ("deployment.rolled_back", "sandbox"),
        ("environment.recovered", "sandbox"),
        ("environment.unhealthy", "staging"),
    ] {
        assert!(
            seen.iter()
                .any(|(e, env)| (e.as_str(), env.as_str()) == want),
            "{want:?} in {seen:?}"
        );
    }
    // DORA's four keys of this history (known answers: docs/delivery.md).
    for (env, failed_changes) in [("sandbox", 1), ("staging", 1)] {
        let dora = s
            .get(&format!(
                "/api/v1/repos/shop/dora?environment={env}&since=1h"
            ))
            .await;
        assert_eq!(dora["environment"], env, "{dora}");
        assert_eq!(
            dora["deployments"], 2,
            "v1 and v2 went live (a rollback is no change): {dora}"
        );
        // v1 brought the first commit and its own; v2 one more.
        assert_eq!(dora["lead_time"]["count"], 3, "{dora}");
        assert_eq!(dora["changes"], 2, "{dora}");
        assert_eq!(dora["failed_changes"], failed_changes, "{dora}");
        assert_eq!(dora["change_failure_rate"], 0.5, "{dora}");
        assert_eq!(dora["time_to_restore"]["count"], 1, "{dora}");
        assert_eq!(dora["open_incidents"], 0, "{dora}");
    }
    // And on /metrics (computed again a moment after each change).
    wait_for("DORA on /metrics", async || {
        let text = metrics(&s).await;
        let want = [
            "ferry_dora_deployments{environment=\"sandbox\",repository=\"shop\"} 2",
            "ferry_dora_change_failure_rate{environment=\"staging\",repository=\"shop\"} 0.5",
            "ferry_dora_time_to_restore_median_seconds{environment=\"sandbox\",repository=\"shop\"}",
            "ferry_dora_lead_time_p90_seconds{environment=\"staging\",repository=\"shop\"}",
        ];
        match want.iter().find(|w| !text.contains(*w)) {
            None => Ok(()),
            Some(missing) => Err(format!("{missing} not in:\n{text}")),
        }
    })
    .await;
    promtool(&metrics(&s).await);
    // A name that is no environment is said to be one, not answered with zeros.
    let (status, body) = s
        .admin("GET", "/api/v1/repos/shop/dora?environment=prodution", None)
        .await;
    assert_eq!(status, 404, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("there is no environment `prodution`; the default branch names: "),
        "{body}"
    );
    let all = s.get("/api/v1/repos/shop/dora").await;
    assert_eq!(
        (all["deployments"].as_u64(), all["changes"].as_u64()),
        (Some(4), Some(4)),
        "{all}"
    );
    let (status, bad) = s
        .admin("GET", "/api/v1/repos/shop/dora?since=soon", None)
        .await;
    assert_eq!(status, 422, "{bad}");
    let s = s.restart().await;
    failing.lock().expect("lock").insert(v2.clone());
    let staging = wait_for_health(&s, "staging", "down").await;
    assert_eq!(
        changes(&staging),
        [
            "-→healthy",
            "healthy→healthy",
            "healthy→degraded",
            "degraded→down",
            "down→healthy",
            "healthy→degraded",
            "degraded→down"
        ],
        "{staging}"
    );
    s.stop().await;
}
