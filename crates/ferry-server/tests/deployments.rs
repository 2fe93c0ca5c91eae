//! Deployments of releases with the process target: promotion through environments,
//! approvals, secrets reaching the app (masked), health checks and rollback, refused
//! requests, concurrent promotions, and live environments after a restart.

use ferry_testkit::server::{
    DELIVERY, Server, audit_actions, env_of, files_holding, health_page, live_release, message,
    promote, push_version, set_ports, shop_with_v1, wait_for,
};
use serde_json::{Value, json};

#[tokio::test]
async fn a_release_goes_through_sandbox_and_staging_and_waits_for_approval() {
    let s = Server::start().await;
    let bare = s.repository("shop", Some(DELIVERY));
    push_version(&s, "shop", "v1"); // version 1 of the app
    s.register("shop", &bare).await;
    let secret = "planted-secret-7c9e2a41";
    set_ports(&s, "shop", &["sandbox", "staging", "production"]).await;
    s.set_secret("shop", "TOKEN", secret, None).await;
    // Approvers: ada wrote the commit; bob did not.
    let bob_token = s.user("bob", "approver").await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    // Sandbox, then staging, go live on their own; production waits.
    let envs = s
        .wait_until("/api/v1/repos/shop/environments", "staging live", |b| {
            !env_of(b, "staging")["live"].is_null()
                && !env_of(b, "production")["pending"]
                    .as_array()
                    .is_none_or(|p| p.is_empty())
        })
        .await;
    let release = env_of(&envs, "sandbox")["live"]["release"]
        .as_str()
        .expect("release")
        .to_string();
    assert_eq!(
        env_of(&envs, "staging")["live"]["release"],
        release.as_str()
    );
    assert_eq!(env_of(&envs, "production")["live"], Value::Null);
    assert_eq!(
        env_of(&envs, "production")["pending"][0]["status"],
        "awaiting_approval"
    );
    let waiting = env_of(&envs, "production")["pending"][0]["deployment"]
        .as_str()
        .expect("label")
        .to_string();
    assert_eq!(waiting, "production#1");
    // The staging app answers on its port with the release's page.
    let staging_port = port_of(&s, "staging").await;
    assert_eq!(health_page(staging_port).await, "ok v1\n");
    // What the approver sees.
    let (status, detail) = s
        .admin("GET", "/api/v1/repos/shop/deployments/production.1", None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["changes"]["live_release"], Value::Null);
    assert_eq!(detail["changes"]["commits"][0]["subject"], "v1");
    assert_eq!(
        detail["changes"]["artifacts"].as_array().map(Vec::len),
        Some(2)
    );
    // The author (who pushed: the admin asked for the run) may not approve; bob may;
    // approving twice is refused.
    let production = s.deployment("shop", "production#1");
    let (status, body) = production.approve(&s.admin, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("the commit's author"), "{body}");
    let (status, body) = production.approve(&bob_token, Some("ship it")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = production.approve(&bob_token, None).await;
    assert_eq!(status, 409, "{body}");
    let envs = s.wait_for_live("shop", "production").await;
    let prod = &env_of(&envs, "production")["live"];
    assert_eq!(prod["release"], release.as_str());
    assert_eq!(prod["approved_by"], json!(["bob"]));
    for env in ["sandbox", "staging"] {
        assert_eq!(
            env_of(&envs, env)["live"]["artifacts"],
            prod["artifacts"],
            "the same digests everywhere"
        );
    }
    // The secret reached the process and is masked in its output; it is nowhere in
    // plain text: not in the data directory, not in any API answer.
    let output = s.output("shop", "production").await;
    assert!(output.contains("starting with token ***"), "{output}");
    let actions = audit_actions(&s, "shop").await;
    for a in [
        "release.seal",
        "deployment.request",
        "deployment.live",
        "deployment.approve",
        "secret.set",
        "variable.set",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    let mut answers = String::new();
    for path in [
        "/api/v1/repos/shop/secrets".to_string(),
        "/api/v1/repos/shop/environments".into(),
        "/api/v1/repos/shop/deployments".into(),
        "/api/v1/repos/shop/deployments/production.1".into(),
        "/api/v1/repos/shop/deployments/production.1/log".into(),
        "/api/v1/repos/shop/audit".into(),
        format!("/api/v1/runs/{run_id}"),
    ] {
        answers.push_str(&s.get(&path).await.to_string());
    }
    assert!(!answers.contains(secret), "an API answer holds the secret");
    let holding = files_holding(&s.dir().join("data"), secret);
    assert!(holding.is_empty(), "{holding:?} hold the secret");
    // The process's own secret files live in memory, outside the data directory, and
    // go when the server stops.
    let shm = {
        use sha2::Digest as _;
        let data = s.dir().join("data").display().to_string();
        let id = hex::encode(&sha2::Sha256::digest(data.as_bytes())[..6]);
        std::path::Path::new("/dev/shm").join(format!("ferry-{id}"))
    };
    let files: Vec<_> = walkdir::WalkDir::new(&shm)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "TOKEN")
        .collect();
    assert!(
        !files.is_empty() || !std::path::Path::new("/dev/shm").is_dir(),
        "secret files in {}",
        shm.display()
    );
    s.stop().await;
    assert!(
        !shm.exists(),
        "{} is removed with the server",
        shm.display()
    );
}

#[tokio::test]
async fn a_release_that_fails_its_health_check_is_rolled_back_and_goes_no_further() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let v1 = live_release(&s, "shop", "sandbox").await;
    push_version(&s, "shop", "broken");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "rolled back", |l| {
            l.iter().any(|d| d["status"] == "rolled_back")
        })
        .await;
    let failed = list
        .iter()
        .find(|d| d["status"] == "rolled_back")
        .expect("failed");
    let v2 = failed["release"].as_str().expect("v2").to_string();
    assert_ne!(v2, v1);
    assert!(
        failed["reason"]
            .as_str()
            .expect("reason")
            .contains("the body does not contain `ok v`"),
        "{failed}"
    );
    let back = list
        .iter()
        .find(|d| d["kind"] == "rollback")
        .expect("rollback");
    assert_eq!(back["release"], v1.as_str());
    assert_eq!(back["status"], "live");
    let envs = s.environments("shop").await;
    assert_eq!(
        env_of(&envs, "sandbox")["live"]["release"],
        v1.as_str(),
        "v1 serves again"
    );
    assert_eq!(
        env_of(&envs, "staging")["live"]["release"],
        v1.as_str(),
        "v2 never reached staging"
    );
    // Promoting the failed release by hand is refused, and changes nothing.
    let (status, body) = promote(&s, "shop", &v2, "staging").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["message"],
        format!("release {v2} failed in `sandbox` and is never promoted further")
    );
    let actions = audit_actions(&s, "shop").await;
    assert!(
        actions.iter().any(|a| a == "deployment.failed")
            && actions.iter().any(|a| a == "deployment.rollback"),
        "{actions:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_delivery_requests_are_refused_and_change_nothing() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let before = s.get("/api/v1/repos/shop/deployments").await;
    let v1 = live_release(&s, "shop", "sandbox").await;
    let cases = [
        (
            ("r99-nope", "staging"),
            404,
            "there is no release `r99-nope`".to_string(),
        ),
        (
            (&v1, "moon"),
            404,
            "there is no environment `moon`; the default branch's .ferry.yml names: sandbox, staging, production, frozen, broken".to_string(),
        ),
        (
            (&v1, "frozen"),
            409,
            "`frozen` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; nothing deploys there now".to_string(),
        ),
        (
            (&v1, "sandbox"),
            409,
            format!("release {v1} is already live in `sandbox`"),
        ),
        (
            (&v1, "production"),
            409,
            format!(
                "release {v1} is already on its way to `production` (deployment production#1, awaiting_approval)"
            ),
        ),
    ];
    for ((release, env), status, message) in cases {
        let (got, answer) = promote(&s, "shop", release, env).await;
        assert_eq!(
            (got, answer["message"].as_str().unwrap_or("")),
            (status, message.as_str()),
            "{answer}"
        );
    }
    // Approving what does not wait for approval.
    let sandbox = s.deployment("shop", "sandbox#1");
    let (status, body) = sandbox.approve(&s.admin, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["message"],
        "deployment sandbox#1 is not waiting for approval (it is live)"
    );
    // A developer may not approve at all.
    let dev = s.user("dev", "developer").await;
    let production = s.deployment("shop", "production#1");
    let (status, _) = production.approve(&dev, None).await;
    assert_eq!(status, 403);
    let after = s.get("/api/v1/repos/shop/deployments").await;
    assert_eq!(before, after, "no deployment changed");
    // A target that cannot start: the deployment fails with the reason; nothing is live.
    let (status, body) = promote(&s, "shop", &v1, "broken").await;
    assert_eq!(status, 201, "{body}");
    let failed = s
        .wait_until(
            "/api/v1/repos/shop/deployments/broken.1",
            "broken failed",
            |b| b["deployment"]["status"] == "failed",
        )
        .await;
    assert_eq!(
        failed["deployment"]["reason"],
        "the process exited with code 127"
    );
    let envs = s.environments("shop").await;
    assert_eq!(env_of(&envs, "broken")["live"], Value::Null);
    // A rejection stops the deployment for good.
    let carol = s.user("carol", "approver").await;
    let (status, body) = production.reject(&carol, Some("not today")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["status"], "rejected");
    assert_eq!(body["deployment"]["reason"], "rejected by carol");
    let (status, _) = production.approve(&carol, None).await;
    assert_eq!(status, 409, "a rejected deployment takes no more decisions");
    s.stop().await;
}

#[tokio::test]
async fn concurrent_promotions_deploy_one_at_a_time() {
    let s = Server::start().await;
    let pipeline = DELIVERY.replace("environments:\n", "environments:\n  demo: {}\n");
    let bare = s.repository("demoshop", Some(&pipeline));
    push_version(&s, "demoshop", "v1");
    s.register("demoshop", &bare).await;
    set_ports(
        &s,
        "demoshop",
        &["sandbox", "staging", "production", "demo"],
    )
    .await;
    let v1 = s.seal_release("demoshop", 1).await;
    push_version(&s, "demoshop", "v2");
    let releases = [v1, s.seal_release("demoshop", 2).await];
    // Six requests at once, three for each release.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let body = json!({ "release": releases[i % 2], "environment": "demo" });
        let client = s.client();
        tasks.push(tokio::spawn(async move {
            client
                .admin("POST", "/api/v1/repos/demoshop/deployments", Some(body))
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("join");
        match status {
            201 => created += 1,
            409 => assert!(body.to_string().contains("already"), "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(created >= 2, "each release is accepted once at least");
    let list = s
        .wait_for_deployments("demoshop", "demo", "demo settled", |l| {
            l.len() == created
                && l.iter()
                    .all(|d| d["status"] == "live" || d["status"] == "replaced")
        })
        .await;
    assert_eq!(
        list.iter().filter(|d| d["status"] == "live").count(),
        1,
        "one live release"
    );
    let mut spans: Vec<(i64, i64)> = list
        .iter()
        .map(|d| {
            (
                d["started_at"].as_i64().expect("started"),
                d["finished_at"].as_i64().expect("finished"),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "deployments overlapped: {spans:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn live_environments_run_again_after_a_restart() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let port = port_of(&s, "sandbox").await;
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(health_page(&port).await, "ok v1\n");
    let s = s.restart().await;
    let answer = wait_for("sandbox listening again", async || {
        match reqwest::get(&url).await {
            Ok(resp) => Ok(resp.text().await.ok()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(answer.as_deref(), Some("ok v1\n"), "sandbox serves again");
    let output = s.output("shop", "sandbox").await;
    assert_eq!(
        output.matches("ferry: starting release").count(),
        2,
        "{output}"
    );
    assert!(
        output.contains("ferry: stopped\n"),
        "stopped with the server: {output}"
    );
    s.stop().await;
}

/// The port the `shop` app of an environment listens on (its variable `PORT`).
async fn port_of(s: &Server, env: &str) -> String {
    let vars = s
        .get(&format!("/api/v1/repos/shop/variables?environment={env}"))
        .await;
    vars["variables"][0]["value"]
        .as_str()
        .expect("port")
        .to_string()
}

/// Reads a stream's events until `done` says so (bounded: 60 s without an event fails).
async fn read_until(
    resp: &mut reqwest::Response,
    buf: &mut String,
    seen: &mut Vec<(String, Value)>,
    done: impl Fn(&[(String, Value)]) -> bool,
) {
    while !done(seen) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no event for 60 s; so far: {seen:#?}"))
            .expect("chunk")
            .unwrap_or_else(|| panic!("the stream ended; so far: {seen:#?}"));
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if let Some(kind) = kind {
                seen.push((
                    kind.to_string(),
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ));
            }
        }
    }
}

/// Statuses of one environment's deployments, in the order the stream told them. A
/// change may be told twice (once stored, once live: the stream subscribes before it
/// reads the store), so a repeat of the status before is dropped.
fn statuses(seen: &[(String, Value)], env: &str) -> Vec<String> {
    let mut out: Vec<String> = seen
        .iter()
        .filter(|(k, d)| k == "deployment" && d["deployment"]["environment"] == env)
        .filter_map(|(_, d)| d["deployment"]["status"].as_str().map(str::to_string))
        .collect();
    out.dedup();
    out
}

/// The repository's delivery stream tells every deployment change and decision as it
/// happens, after the state as it was when the client connected.
#[tokio::test]
async fn deployment_changes_and_approvals_stream_live() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let bob = s.user("bob", "approver").await;
    let mut resp = s.client().connect_repo_events("shop").await;
    assert_eq!(resp.status(), 200);
    let (mut buf, mut seen) = (String::new(), Vec::new());
    // First what is stored: production waits for approval.
    read_until(&mut resp, &mut buf, &mut seen, |seen| {
        statuses(seen, "production").contains(&"awaiting_approval".to_string())
    })
    .await;
    assert_eq!(statuses(&seen, "staging"), ["live"]);
    let production = s.deployment("shop", "production#1");
    let (status, body) = production.approve(&bob, Some("ship it")).await;
    assert_eq!(status, 200, "{body}");
    read_until(&mut resp, &mut buf, &mut seen, |seen| {
        statuses(seen, "production").last().map(String::as_str) == Some("live")
    })
    .await;
    assert_eq!(
        statuses(&seen, "production"),
        [
            "awaiting_approval",
            "queued",
            "deploying",
            "verifying",
            "live"
        ],
        "{seen:#?}"
    );
    let approval = seen
        .iter()
        .find(|(k, _)| k == "approval")
        .map(|(_, d)| d.clone())
        .expect("an approval event");
    assert_eq!(approval["approval"]["user_name"], "bob");
    assert_eq!(approval["approval"]["decision"], "approve");
    assert_eq!(approval["approval"]["comment"], "ship it");
    drop(resp);
    // An open stream does not hold the server's stop.
    let mut resp = s.client().connect_repo_events("shop").await;
    let _ = resp.chunk().await;
    s.stop().await;
}

/// One token holds no more than its share of live streams: the repository's delivery
/// stream counts with the runs' (a 33rd stream of one caller is `busy`, 503), while
/// another caller still gets one; a closed stream gives its place back.
#[tokio::test]
async fn one_caller_cannot_hold_every_live_stream() {
    let s = Server::start().await;
    s.add_repository("shop", "jobs:\n  a:\n    run: \"true\"\n")
        .await;
    let mut held = Vec::new();
    for _ in 0..32 {
        let resp = s.client().connect_repo_events("shop").await;
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let refused = s.client().connect_repo_events("shop").await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "busy", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("32 live streams open")),
        "{body}"
    );
    let viewer = s.user("vera", "viewer").await;
    let other = s
        .request("GET", "/api/v1/repos/shop/events")
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("events");
    assert_eq!(other.status(), 200, "another caller's share");
    drop(held.pop());
    let mut again = None;
    for _ in 0..200 {
        let resp = s.client().connect_repo_events("shop").await;
        if resp.status() == 200 {
            again = Some(resp);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(again.is_some(), "a closed stream gives its place back");
}
