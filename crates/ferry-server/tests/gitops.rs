//! The `gitops` deploy target against a real git remote: each deployment a commit to
//! the environment repository naming release, run, deployment and approvals; the commit
//! recorded on the deployment; a rollback a new commit restoring the previous content;
//! drift (a commit to the path made outside Ferry) reported by the health watch; an
//! unreachable remote a clear error that changes nothing.

use ferry_testkit::git;
use ferry_testkit::server::{Server, env_of, push_version};

const TEMPLATE: &str = "kind: ConfigMap\nmetadata:\n  name: web\ndata:\n  version: VERSION\n  where: \"${{ environment.name }}\"\n  greeting: \"${{ vars.GREETING }}\"\n";

/// Makes `remote` a bare repository with a first commit on `main` (seeded from a
/// working copy beside it in `dir`).
fn environment_repository(dir: &std::path::Path, remote: &std::path::Path) {
    let seed = dir.join("env-seed");
    std::fs::create_dir_all(&seed).expect("seed");
    let url = remote.display().to_string();
    git(dir, &["init", "-q", "--bare", "-b", "main", &url]);
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "environments\n").expect("readme");
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "start"]);
    git(&seed, &["push", "-q", &url, "main"]);
}

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
    environment_repository(s.dir(), &remote);
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

/// Serves the bare repositories under `root` over smart HTTP (`git http-backend` as a
/// CGI program), answering 401 to any request without `Authorization: Basic
/// x-access-token:TOKEN`. Returns its base URL.
async fn git_http_server(root: std::path::PathBuf, token: &str) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::Response;
    use base64::Engine as _;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (root, want) = (root.clone(), want.clone());
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            if header("authorization") != want {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("WWW-Authenticate", "Basic realm=\"git\"")
                    .body(Body::empty())
                    .expect("response");
            }
            let mut child = tokio::process::Command::new("git")
                .arg("http-backend")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REMOTE_USER", "x-access-token")
                .env("REQUEST_METHOD", method.as_str())
                .env("PATH_INFO", uri.path())
                .env("QUERY_STRING", uri.query().unwrap_or(""))
                .env("CONTENT_TYPE", header("content-type"))
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
                .env("GIT_PROTOCOL", header("git-protocol"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("git http-backend");
            let mut stdin = child.stdin.take().expect("stdin");
            tokio::io::AsyncWriteExt::write_all(&mut stdin, &body)
                .await
                .expect("body");
            drop(stdin);
            let out = child.wait_with_output().await.expect("output");
            let text = out.stdout;
            let split = text
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| text.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
                .expect("CGI headers");
            let mut response = Response::builder();
            for line in String::from_utf8_lossy(&text[..split.0]).lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                if k.eq_ignore_ascii_case("status") {
                    let code: u16 = v.trim()[..3].parse().expect("status");
                    response = response.status(code);
                } else {
                    response = response.header(k.trim(), v.trim());
                }
            }
            response
                .body(Body::from(text[split.0 + split.1..].to_vec()))
                .expect("response")
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// An environment repository that needs the token (behind HTTP basic authentication):
/// deployments push with it, and the health watch's drift check fetches with it too.
#[tokio::test]
async fn a_repository_that_needs_the_token_is_pushed_and_checked_for_drift_with_it() {
    let s = Server::start().await;
    let token = "env-repo-token-7781";
    let root = s.dir().join("served");
    let remote = root.join("env.git");
    environment_repository(s.dir(), &remote);
    let base = git_http_server(root, token).await;
    let url = format!("{base}/env.git");
    let pipeline = pipeline(&url).replace("path: \"envs/", "token: ENV_REPO_TOKEN, path: \"envs/");
    let bare = s.repository("shop", Some(&pipeline));
    s.push_file("shop", "web.tmpl", TEMPLATE, "the manifest");
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    s.set_variable("shop", "GREETING", "hello", None).await;
    s.set_secret("shop", "ENV_REPO_TOKEN", token, None).await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_for_live("shop", "sandbox").await;
    assert!(git(&remote, &["show", "main:envs/sandbox/web.yaml"]).contains("version: v1"));
    let log = s.get("/api/v1/repos/shop/deployments/sandbox.1/log").await;
    assert!(!log.to_string().contains(token), "{log}");

    // Drift, by hand on the server that holds the repository.
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
    git(&work, &["commit", "-qam", "hotfix behind the token"]);
    git(&work, &["push", "-q", "origin", "main"]);
    s.wait_until("/api/v1/repos/shop/environments", "sandbox drifted", |b| {
        env_of(b, "sandbox")
            .to_string()
            .contains("hotfix behind the token")
    })
    .await;
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
