//! Releases: sealed from a successful run of the default branch (and only then), and
//! pruned by the retention policy unless an environment runs them.

use ferry_testkit::server::{
    Options, Server, audit_actions, head, promote, push_version, run_id_in,
};
use serde_json::{Value, json};

#[tokio::test]
async fn a_successful_run_of_the_default_branch_seals_a_release() {
    let s = Server::start().await;
    let pipeline = "jobs:
  build:
    run: mkdir -p bin && printf 'app v1' > bin/app && chmod +x bin/app
    artifacts: [bin/app]
  test:
    needs: build
    run: test -x bin/app
release:
  artifacts: [build]
";
    let bare = s.add_repository("sealed", pipeline).await;
    let run_id = s.trigger("sealed").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let releases = s.releases_of("sealed", 1).await;
    let name = releases[0]["name"].as_str().expect("name").to_string();
    let sha = head(&bare);
    assert_eq!(name, format!("r1-{}", &sha[..7]));
    let body = s
        .get(&format!("/api/v1/repos/sealed/releases/{name}"))
        .await;
    let release = &body["release"];
    assert_eq!(release["commit_sha"], sha);
    assert_eq!(release["run_number"], 1);
    assert_eq!(release["ferry_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        release["plan_hash"]
            .as_str()
            .expect("hash")
            .starts_with("sha256:")
    );
    // The list shows each release as the detail does, files and images included.
    assert_eq!(releases[0]["artifacts"], release["artifacts"]);
    assert_eq!(releases[0]["images"], release["images"]);
    let artifact = &release["artifacts"][0];
    assert_eq!(artifact["path"], "bin/app");
    assert_eq!(artifact["job"], "build");
    assert_eq!(artifact["mode"], 0o755);
    let digest = ferry_deliver::cas::digest_of(b"app v1");
    assert_eq!(artifact["digest"], digest.as_str());
    // The run names its release; the audit log records the sealing.
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["release"]["name"], name.as_str());
    let (_, audit) = s.admin("GET", "/api/v1/repos/sealed/audit", None).await;
    assert_eq!(audit["audit"][0]["action"], "release.seal");
    assert_eq!(audit["audit"][0]["target"], name.as_str());
    // A run of another branch seals nothing.
    let (status, body) = s.trigger_with("sealed", json!({ "ref": sha })).await;
    assert_eq!(status, 201, "{body}");
    let other = run_id_in(&body);
    s.finished(&other).await;
    // Sealing follows the run's end in the run's task; stopping the server waits for
    // every run task, so after a restart the decision has been made.
    let s = s.restart().await;
    let detail = s.get(&format!("/api/v1/runs/{other}")).await;
    assert_eq!(
        detail["release"],
        Value::Null,
        "a detached commit is not releasable"
    );
    assert_eq!(s.releases_of("sealed", 1).await.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn the_retention_policy_prunes_releases_no_environment_runs() {
    let s = Server::start_with(Options {
        keep_releases: Some(1),
        ..Options::default()
    })
    .await;
    let pipeline = "jobs:
  build:
    run: mkdir -p out && cat version > out/v
    artifacts: [out/v]
release: { artifacts: [build] }
environments:
  demo: {}
deploy:
  target: { process: { command: exec sleep 300 } }
";
    let bare = s.repository("kept", Some(pipeline));
    push_version(&s, "kept", "v1");
    s.register("kept", &bare).await;
    let v1 = s.seal_release("kept", 1).await;
    push_version(&s, "kept", "v2");
    let names = [v1, s.seal_release("kept", 2).await];
    // v1 is beyond the newest one and runs nowhere: pruned, and it cannot be deployed.
    s.wait_until(
        &format!("/api/v1/repos/kept/releases/{}", names[0]),
        "v1 pruned",
        |b| b["release"]["pruned_at"].is_i64(),
    )
    .await;
    assert!(pruned_at(&s, &names[1]).await.is_null());
    let (status, body) = promote(&s, "kept", &names[0], "demo").await;
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!(
            "release {} was pruned by the retention policy: its files are gone",
            names[0]
        )
    );
    // A release an environment runs is kept however old.
    let (status, _) = promote(&s, "kept", &names[1], "demo").await;
    assert_eq!(status, 201);
    s.wait_for_live("kept", "demo").await;
    push_version(&s, "kept", "v3");
    let run_id = s.trigger("kept").await;
    s.finished(&run_id).await;
    s.releases_of("kept", 3).await;
    assert!(
        pruned_at(&s, &names[1]).await.is_null(),
        "live in demo: kept"
    );
    let actions = audit_actions(&s, "kept").await;
    assert!(actions.iter().any(|a| a == "release.prune"), "{actions:?}");
    s.stop().await;
}

/// When a release of `kept` was pruned (null: it was not).
async fn pruned_at(s: &Server, release: &str) -> Value {
    let path = format!("/api/v1/repos/kept/releases/{release}");
    s.get(&path).await["release"]["pruned_at"].clone()
}

/// An automatic promotion never replaces a live release with one whose commit does not
/// descend from the live one's (a branch reset to another line of history): the new
/// release is sealed, the environment keeps what it runs, and the audit log says why.
#[tokio::test]
async fn automatic_promotion_never_goes_to_a_non_descendant() {
    let s = Server::start().await;
    let pipeline = "jobs:\n  build:\n    run: echo built\nrelease: {}\nenvironments:\n  ops:\n    auto: true\n    deploy:\n      target: { script: { run: 'true' } }\n";
    let bare = s.add_repository("lines", pipeline).await;
    let first = s.trigger("lines").await;
    assert_eq!(s.finished(&first).await["run"]["status"], "success");
    s.wait_for_live("lines", "ops").await;
    let live = s.releases_of("lines", 1).await[0]["name"]
        .as_str()
        .expect("name")
        .to_string();

    // main is reset to a commit of another line of history.
    let work = s.work("lines");
    ferry_testkit::git(&work, &["checkout", "-q", "--orphan", "other"]);
    ferry_testkit::git(&work, &["commit", "-q", "-m", "another line"]);
    ferry_testkit::git(
        &work,
        &[
            "push",
            "-q",
            "-f",
            &bare.display().to_string(),
            "other:main",
        ],
    );
    let second = s.trigger("lines").await;
    assert_eq!(s.finished(&second).await["run"]["status"], "success");
    let releases = s.releases_of("lines", 2).await;
    let new = releases[0]["name"].as_str().expect("name").to_string();
    assert_ne!(new, live);
    let why = ferry_testkit::server::wait_for("the refusal in the audit log", async || {
        let (_, audit) = s.admin("GET", "/api/v1/repos/lines/audit", None).await;
        audit["audit"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["action"] == "deployment.not_promoted"))
            .and_then(|e| e["detail"].as_str().map(str::to_string))
            .ok_or(audit)
    })
    .await;
    assert!(
        why.contains(&format!("release {new}")) && why.contains("does not descend from"),
        "{why}"
    );
    let envs = s.environments("lines").await;
    assert_eq!(
        ferry_testkit::server::env_of(&envs, "ops")["live"]["release"],
        live.as_str(),
        "ops keeps what it runs: {envs}"
    );
    s.stop().await;
}

/// What may be released, and where a release goes, is the default branch's to say: a
/// branch that writes `release: { branches: ["**"] }` and an automatic production into
/// its own `.ferry.yml` releases nothing, and once main lets every branch release, the
/// branch's release still follows main's environments and approvals.
#[tokio::test]
async fn a_branch_cannot_release_itself_or_write_its_own_environment_rules() {
    let s = Server::start().await;
    let rules = |release: &str, production: &str| {
        format!(
            "jobs:\n  build:\n    run: mkdir -p out && echo built > out/app\n    artifacts: [out/app]\n\
             release: {release}\nenvironments:\n  sandbox: {{ auto: true }}\n  production: {production}\n\
             deploy:\n  target: {{ script: {{ run: 'true' }} }}\n"
        )
    };
    let main = rules(
        "{ artifacts: [build] }",
        "{ after: sandbox, approval: { required: 1 } }",
    );
    let bare = s.add_repository("guarded", &main).await;
    // A branch that would release itself straight into production.
    let work = s.work("guarded");
    ferry_testkit::git(&work, &["checkout", "-q", "-b", "sneaky"]);
    std::fs::write(
        work.join(".ferry.yml"),
        rules("{ branches: ['**'], artifacts: [build] }", "{ auto: true }"),
    )
    .expect("write");
    ferry_testkit::git(&work, &["commit", "-qam", "let me in"]);
    let bare_path = bare.display().to_string();
    ferry_testkit::git(&work, &["push", "-q", &bare_path, "sneaky"]);
    let (status, body) = s.trigger_with("guarded", json!({ "ref": "sneaky" })).await;
    assert_eq!(status, 201, "{body}");
    let run = run_id_in(&body);
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    let s = s.restart().await; // the sealing decision is made by now
    let (_, releases) = s.admin("GET", "/api/v1/repos/guarded/releases", None).await;
    assert_eq!(releases["releases"], json!([]), "main releases only main");

    // main lets every branch release; its environments still hold.
    ferry_testkit::git(&work, &["checkout", "-q", "main"]);
    std::fs::write(
        work.join(".ferry.yml"),
        rules(
            "{ branches: ['**'], artifacts: [build] }",
            "{ after: sandbox, approval: { required: 1 } }",
        ),
    )
    .expect("write");
    ferry_testkit::git(&work, &["commit", "-qam", "every branch releases"]);
    ferry_testkit::git(&work, &["push", "-q", &bare_path, "main"]);
    let (status, body) = s.trigger_with("guarded", json!({ "ref": "sneaky" })).await;
    assert_eq!(status, 201, "{body}");
    let run = run_id_in(&body);
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    let release = s.releases_of("guarded", 1).await[0]["name"]
        .as_str()
        .expect("name")
        .to_string();
    s.wait_for_live("guarded", "sandbox").await;
    let production = "/api/v1/repos/guarded/deployments?environment=production";
    let waiting = s
        .wait_until(production, "production awaits approval", |b| {
            b["deployments"][0]["status"] == "awaiting_approval"
        })
        .await;
    assert_eq!(
        waiting["deployments"][0]["release"],
        release.as_str(),
        "{waiting}"
    );
    s.stop().await;
}
