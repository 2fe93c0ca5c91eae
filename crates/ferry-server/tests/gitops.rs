//! The `gitops` deploy target against a real git remote: each deployment a commit to
//! the environment repository naming release, run, deployment and approvals; the commit
//! recorded on the deployment; a rollback a new commit restoring the previous content;
//! drift (a commit to the path made outside Ferry) reported by the health watch; an
//! unreachable remote a clear error that changes nothing.

use ferry_testkit::git;
use ferry_testkit::server::{Server, env_of, push_version};

const TEMPLATE: &str = "kind: ConfigMap\nmetadata:\n  name: web\ndata:\n  version: VERSION\n  where: \"${{ environment.name }}\"\n  greeting: \"${{ vars.GREETING }}\"\n";

fn pipeline(repo: &str) -> String {
    format!(
        "jobs:
  build:
    run: mkdir -p out/k8s && sed \"s/VERSION/$(cat version)/\" web.tmpl > out/k8s/web.yaml
    artifacts: [out]
release: {{ artifacts: [build] }}
environments:
  sandbox: {{ auto: true }}
  production:
    after: sandbox
    approval: {{ required: 1, not: [author] }}
deploy:
  target:
    gitops: {{ repo: \"{repo}\", manifests: [out/k8s], path: \"envs/${{{{ environment.name }}}}\" }}
  watch: {{ interval: 200ms, failures: 1 }}
"
    )
}

#[tokio::test]
async fn releases_are_commits_to_the_environment_repository() {
    let s = Server::start().await;
    // The environment repository: a bare remote with a first commit on main.
    let remote = s.dir().join("env.git");
    let seed = s.dir().join("env-seed");
    std::fs::create_dir_all(&seed).expect("seed");
    git(
        s.dir(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &remote.display().to_string(),
        ],
    );
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "environments\n").expect("readme");
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "start"]);
    git(
        &seed,
        &["push", "-q", &remote.display().to_string(), "main"],
    );
    let bare = s.repository("shop", Some(&pipeline(&remote.display().to_string())));
    s.push_file("shop", "web.tmpl", TEMPLATE, "the manifest");
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    s.set_variable("shop", "GREETING", "hello", None).await;
    let bob = s.user("bob", "approver").await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let envs = s.wait_for_live("shop", "sandbox").await;
    let release = env_of(&envs, "sandbox")["live"]["release"]
        .as_str()
        .expect("release")
        .to_string();
    let head = git(&remote, &["rev-parse", "main"]);
    let message = git(&remote, &["log", "-1", "--format=%B", "main"]);
    assert!(
        message.starts_with(&format!("Deploy release {release} to sandbox\n"))
            && message.contains("Deployment: sandbox#1")
            && message.contains("run #1")
            && message.contains("Ferry-Deployment: "),
        "{message}"
    );
    let manifest = git(&remote, &["show", "main:envs/sandbox/web.yaml"]);
    assert_eq!(
        manifest,
        "kind: ConfigMap\nmetadata:\n  name: web\ndata:\n  version: v1\n  where: \"sandbox\"\n  greeting: \"hello\""
    );
    assert_eq!(
        git(&remote, &["show", "main:README.md"]),
        "environments",
        "the rest is kept"
    );
    let dep = s.get("/api/v1/repos/shop/deployments/sandbox.1").await;
    assert_eq!(dep["deployment"]["target_ref"], head.as_str(), "{dep}");

    // Production waits for an approver; the commit names them.
    let production = s.deployment("shop", "production#1");
    s.wait_until(
        "/api/v1/repos/shop/deployments?environment=production",
        "production awaits approval",
        |b| b["deployments"][0]["status"] == "awaiting_approval",
    )
    .await;
    let (status, body) = production.approve(&bob, None).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for_live("shop", "production").await;
    let message = git(&remote, &["log", "-1", "--format=%B", "main"]);
    assert!(
        message.contains("Approved by: bob") && message.contains("Deployment: production#1"),
        "{message}"
    );
    assert!(
        git(&remote, &["show", "main:envs/production/web.yaml"]).contains("where: \"production\"")
    );

    // v2, then a rollback: a new commit putting v1's rendering back.
    push_version(&s, "shop", "v2");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_for_deployments("shop", "sandbox", "v2 live", |l| {
        l.first()
            .is_some_and(|d| d["number"] == 2 && d["status"] == "live")
    })
    .await;
    assert!(git(&remote, &["show", "main:envs/sandbox/web.yaml"]).contains("version: v2"));
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/environments/sandbox/rollback",
            Some(serde_json::json!({})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    s.wait_for_deployments("shop", "sandbox", "rolled back", |l| {
        l.first()
            .is_some_and(|d| d["kind"] == "rollback" && d["status"] == "live")
    })
    .await;
    assert!(git(&remote, &["show", "main:envs/sandbox/web.yaml"]).contains("version: v1"));
    let message = git(&remote, &["log", "-1", "--format=%B", "main"]);
    assert!(
        message.starts_with(&format!("Roll sandbox back to release {release}\n")),
        "{message}"
    );
    let commits = git(&remote, &["rev-list", "--count", "main"]);
    assert_eq!(
        commits, "5",
        "start, sandbox v1, production v1, sandbox v2, rollback"
    );

    // Drift: someone changes sandbox's manifests by hand.
    let work = s.dir().join("env-work");
    git(
        s.dir(),
        &[
            "clone",
            "-q",
            &remote.display().to_string(),
            &work.display().to_string(),
        ],
    );
    std::fs::write(work.join("envs/sandbox/web.yaml"), "kind: ConfigMap\n").expect("edit");
    git(&work, &["commit", "-qam", "quick fix in sandbox"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let envs = s
        .wait_until("/api/v1/repos/shop/environments", "sandbox drifted", |b| {
            env_of(b, "sandbox").to_string().contains("drift: commit")
        })
        .await;
    let said = env_of(&envs, "sandbox").to_string();
    assert!(
        said.contains("by Ada Lovelace") && said.contains("quick fix in sandbox"),
        "{said}"
    );
    assert!(
        !env_of(&envs, "production").to_string().contains("drift"),
        "production's path did not change"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_environment_repository_fails_the_deployment_clearly() {
    let s = Server::start().await;
    let missing = s.dir().join("no-such-repo.git");
    let bare = s.repository("shop", Some(&pipeline(&missing.display().to_string())));
    s.push_file("shop", "web.tmpl", TEMPLATE, "the manifest");
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "failed", |l| {
            l.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot reach the environment repository")
            && reason.contains("no-such-repo.git"),
        "{reason}"
    );
    assert!(!missing.exists(), "nothing made where the remote should be");
    s.stop().await;
}

/// A rendering that would carry a secret's value into the environment repository fails
/// the deployment before anything is pushed.
#[tokio::test]
async fn no_secret_value_is_committed() {
    let s = Server::start().await;
    let remote = s.dir().join("env.git");
    git(
        s.dir(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &remote.display().to_string(),
        ],
    );
    let bare = s.repository("shop", Some(&pipeline(&remote.display().to_string())));
    s.push_file("shop", "web.tmpl", TEMPLATE, "the manifest");
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    s.set_secret("shop", "TOKEN", "s3cr3t-value-42", None).await;
    s.set_variable("shop", "GREETING", "s3cr3t-value-42", None)
        .await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "failed", |l| {
            l.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("would hold a secret value"), "{reason}");
    assert!(!reason.contains("s3cr3t-value-42"));
    let heads = git(&remote, &["for-each-ref", "refs/heads"]);
    assert_eq!(heads, "", "nothing pushed");
    s.stop().await;
}
