//! Commit statuses, against a stand-in forge on 127.0.0.1 that checks each request as
//! the forge's API documents it (method, path, headers, JSON fields and state words)
//! and refuses anything else: GitHub's commit statuses, GitLab's commit status API,
//! Gitea's (and Forgejo's) statuses API. No real forge is reached from the tests.

use std::sync::{Arc, Mutex};

use ferry_server::notify::NotifyConfig;
use ferry_testkit::server::{Options, Server, free_port, push_version, wait_for};
use serde_json::{Value, json};

/// A status the stand-in accepted: (forge, commit, context, state, description).
type Seen = Arc<Mutex<Vec<(String, String, String, String, String)>>>;
/// What it refused, and why.
type Refused = Arc<Mutex<Vec<String>>>;

/// The stand-in: `/github/repos/acme/shop/statuses/SHA`,
/// `/gitlab/api/v4/projects/acme%2Fshop/statuses/SHA`,
/// `/gitea/api/v1/repos/acme/shop/statuses/SHA`.
async fn forge() -> (u16, Seen, Refused) {
    let (seen, refused): (Seen, Refused) = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (keep, no) = (seen.clone(), refused.clone());
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: String| {
            let (keep, no) = (keep.clone(), no.clone());
            async move {
                match check(&method, uri.path(), &headers, &body) {
                    Ok(status) => {
                        keep.lock().expect("lock").push(status);
                        axum::http::StatusCode::CREATED
                    }
                    Err(why) => {
                        no.lock().expect("lock").push(why);
                        axum::http::StatusCode::BAD_REQUEST
                    }
                }
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen, refused)
}

/// The request each forge documents, or what is wrong with it.
fn check(
    method: &axum::http::Method,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &str,
) -> Result<(String, String, String, String, String), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if method != axum::http::Method::POST {
        return Err(format!("{method} {path}: statuses are POSTed"));
    }
    if !header("content-type").starts_with("application/json") {
        return Err(format!("{path}: content-type {}", header("content-type")));
    }
    let json: Value = serde_json::from_str(body).map_err(|e| format!("{path}: {e}"))?;
    let keys = |want: &[&str]| -> Result<(), String> {
        let mut got: Vec<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        got.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        if got == want {
            Ok(())
        } else {
            Err(format!("{path}: fields {got:?}, documented {want:?}"))
        }
    };
    let text = |k: &str| json[k].as_str().unwrap_or_default().to_string();
    let (forge, sha, context, states): (&str, &str, String, &[&str]) = if let Some(sha) =
        path.strip_prefix("/github/repos/acme/shop/statuses/")
    {
        if header("authorization") != "Bearer gh-token"
            || header("accept") != "application/vnd.github+json"
            || header("x-github-api-version") != "2022-11-28"
            || header("user-agent").is_empty()
        {
            return Err(format!("github headers: {headers:?}"));
        }
        keys(&["state", "target_url", "description", "context"])?;
        (
            "github",
            sha,
            text("context"),
            &["pending", "success", "failure", "error"],
        )
    } else if let Some(sha) = path.strip_prefix("/gitlab/api/v4/projects/acme%2Fshop/statuses/") {
        if header("private-token") != "gl-token" {
            return Err(format!("gitlab headers: {headers:?}"));
        }
        keys(&["state", "name", "target_url", "description"])?;
        (
            "gitlab",
            sha,
            text("name"),
            &["pending", "running", "success", "failed", "canceled"],
        )
    } else if let Some(sha) = path.strip_prefix("/gitea/api/v1/repos/acme/shop/statuses/") {
        if header("authorization") != "token gt-token" {
            return Err(format!("gitea headers: {headers:?}"));
        }
        keys(&["state", "target_url", "description", "context"])?;
        (
            "gitea",
            sha,
            text("context"),
            &["pending", "success", "error", "failure", "warning"],
        )
    } else {
        return Err(format!("no such API: {path}"));
    };
    if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{path}: not a commit id"));
    }
    let state = text("state");
    if !states.contains(&state.as_str()) {
        return Err(format!("{forge}: state `{state}`"));
    }
    if text("description").chars().count() > 140 {
        return Err(format!("{forge}: description over 140 characters"));
    }
    Ok((
        forge.into(),
        sha.into(),
        context,
        state,
        text("description"),
    ))
}

const PIPELINE: &str = "jobs:
  build:
    run: |
      test \"$(cat version)\" != broken
      mkdir -p app && printf '#!/bin/sh\\nexec sleep 600\\n' > app/run && chmod +x app/run
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox: { auto: true }
deploy:
  target: { process: { command: cd app && exec ./run } }
  watch: false
";

/// The states one forge got for a commit and context, in order.
fn states(seen: &Seen, forge: &str, sha: &str, context: &str) -> Vec<String> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(f, s, c, ..)| f == forge && s == sha && c == context)
        .map(|(.., state, _)| state.clone())
        .collect()
}

#[tokio::test]
async fn runs_and_deployments_report_to_github_gitlab_and_gitea() {
    let (port, seen, refused) = forge().await;
    let s = Server::start_with(Options {
        notify: NotifyConfig {
            public_url: Some("https://ferry.example.com".into()),
            ..NotifyConfig::default()
        },
        ..Options::default()
    })
    .await;
    let forges = [
        (
            "github",
            format!("http://127.0.0.1:{port}/github"),
            "gh-token",
        ),
        (
            "gitlab",
            format!("http://127.0.0.1:{port}/gitlab/api/v4"),
            "gl-token",
        ),
        (
            "gitea",
            format!("http://127.0.0.1:{port}/gitea/api/v1"),
            "gt-token",
        ),
    ];
    for (forge, api, token) in &forges {
        let name = format!("shop-{forge}");
        let bare = s.repository(&name, Some(PIPELINE));
        push_version(&s, &name, "v1");
        s.register(&name, &bare).await;
        let (status, body) = s
            .admin(
                "PUT",
                &format!("/api/v1/repos/{name}/commit-status"),
                Some(json!({ "forge": forge, "api_url": api, "project": "acme/shop", "token": token })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["commit_status"]["project"], "acme/shop");
        let shown = s.get(&format!("/api/v1/repos/{name}/commit-status")).await;
        assert!(!shown.to_string().contains(token), "{shown}");
    }
    let mut commits = Vec::new();
    for (forge, ..) in &forges {
        let run = s.trigger(&format!("shop-{forge}")).await;
        let detail = s.finished(&run).await;
        assert_eq!(detail["run"]["status"], "success");
        commits.push(
            detail["run"]["commit_sha"]
                .as_str()
                .expect("sha")
                .to_string(),
        );
    }
    for ((forge, ..), sha) in forges.iter().zip(&commits) {
        let got = wait_for(
            &format!("{forge}: the run's and the deployment's statuses"),
            async || {
                let run = states(&seen, forge, sha, "ferry/run");
                let deploy = states(&seen, forge, sha, "ferry/deploy/sandbox");
                let done = run.last().is_some_and(|s| s == "success")
                    && deploy.last().is_some_and(|s| s == "success");
                if done {
                    Ok((run, deploy))
                } else {
                    Err((run, deploy, refused.lock().expect("lock").clone()))
                }
            },
        )
        .await;
        assert_eq!(got.0[0], "pending", "{forge}: {got:?}");
        assert_eq!(got.1[0], "pending", "{forge}: {got:?}");
    }
    // A failed run is a failure (GitLab says `failed`), with a link back.
    push_version(&s, "shop-gitlab", "broken");
    let run = s.trigger("shop-gitlab").await;
    let detail = s.finished(&run).await;
    let sha = detail["run"]["commit_sha"]
        .as_str()
        .expect("sha")
        .to_string();
    wait_for("gitlab: failed", async || {
        let got = states(&seen, "gitlab", &sha, "ferry/run");
        if got.last().is_some_and(|s| s == "failed") {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;
    let description = seen
        .lock()
        .expect("lock")
        .iter()
        .rev()
        .find(|(f, s, ..)| f == "gitlab" && *s == sha)
        .map(|(.., d)| d.clone())
        .expect("description");
    assert!(
        description.starts_with("Run #2 failed in "),
        "{description}"
    );
    assert!(
        refused.lock().expect("lock").is_empty(),
        "{:?}",
        refused.lock()
    );
    // Settings that cannot work are refused; turning it off stops reports.
    for (body, says) in [
        (
            json!({ "forge": "gitea", "project": "acme/shop", "token": "t" }),
            "`api_url` is required",
        ),
        (
            json!({ "forge": "github", "project": "acme", "token": "t" }),
            "`project` must be",
        ),
        (
            json!({ "forge": "github", "project": "a/b", "token": " " }),
            "`token` is empty",
        ),
        (
            json!({ "forge": "bitbucket", "project": "a/b", "token": "t" }),
            "forge",
        ),
    ] {
        let (status, answer) = s
            .admin("PUT", "/api/v1/repos/shop-github/commit-status", Some(body))
            .await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer.to_string().contains(says), "{says} in {answer}");
    }
    let (status, _) = s
        .admin("DELETE", "/api/v1/repos/shop-github/commit-status", None)
        .await;
    assert_eq!(status, 200);
    let shown = s.get("/api/v1/repos/shop-github/commit-status").await;
    assert_eq!(shown["commit_status"], Value::Null);
    s.stop().await;
}

/// A forge that is down changes nothing for the run; its statuses wait and are tried
/// again.
#[tokio::test]
async fn a_forge_that_is_down_does_not_touch_the_run() {
    let port = free_port();
    let s = Server::start().await;
    s.add_repository("app", "jobs:\n  build:\n    run: echo hi\n")
        .await;
    let (status, body) = s
        .admin(
            "PUT",
            "/api/v1/repos/app/commit-status",
            Some(json!({ "forge": "github", "api_url": format!("http://127.0.0.1:{port}"), "project": "acme/app", "token": "t" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = s.trigger("app").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    let log = wait_for("a failed attempt", async || {
        let log = s.get("/api/v1/repos/app/notifications").await;
        let tried = log["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["attempts"].as_array().is_some_and(|a| !a.is_empty()));
        if tried { Ok(log) } else { Err(log) }
    })
    .await;
    let list = log["notifications"].as_array().expect("list");
    assert!(
        list.iter().all(|n| n["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("github status ferry/run @"))),
        "{log}"
    );
    assert!(
        list.iter().any(|n| n["status"] == "pending"
            && n["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("onnect"))),
        "{log}"
    );
    s.stop().await;
}
