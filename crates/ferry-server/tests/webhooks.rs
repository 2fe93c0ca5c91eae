//! Webhooks: parsing and verification on the payloads the forges document (one table),
//! then deliveries to a running server: signed, deduplicated, turned into runs.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ferry_plan::EventKind;
use ferry_server::webhook::{self, Hook, Outcome, Provider};
use ferry_testkit::server::{Answer, Server, files_holding, head, log_text, wait_for};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

fn payload(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/webhooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn trigger(event: EventKind, git_ref: &str, sha: &str) -> Outcome {
    Outcome::Trigger(Hook {
        event,
        git_ref: git_ref.into(),
        sha: sha.into(),
        ..Hook::default()
    })
}

fn ignore(reason: &str) -> Outcome {
    Outcome::Ignore(reason.into())
}

#[test]
fn forge_payloads_parse() {
    let cases: Vec<(Provider, &str, &str, Outcome)> = vec![
        (
            Provider::Github,
            "push",
            "github-push.json",
            trigger(
                EventKind::Push,
                "refs/heads/main",
                "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            ),
        ),
        (
            Provider::Github,
            "push",
            "github-tag.json",
            trigger(
                EventKind::Tag,
                "refs/tags/v1.0.0",
                "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            ),
        ),
        (
            Provider::Github,
            "push",
            "github-new-branch.json",
            trigger(
                EventKind::Push,
                "refs/heads/feature/login",
                "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            ),
        ),
        (
            Provider::Github,
            "push",
            "github-delete.json",
            ignore("refs/heads/feature/login was deleted"),
        ),
        (
            Provider::Github,
            "push",
            "github-skip-ci.json",
            ignore("[skip ci] in the commit message"),
        ),
        (
            Provider::Github,
            "pull_request",
            "github-pull-request.json",
            trigger(
                EventKind::PullRequest,
                "refs/pull/2/head",
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            ),
        ),
        (Provider::Github, "ping", "github-ping.json", ignore("pong")),
        (
            Provider::Github,
            "issues",
            "github-ping.json",
            ignore("event `issues` is not handled"),
        ),
        (
            Provider::Gitlab,
            "Push Hook",
            "gitlab-push.json",
            trigger(
                EventKind::Push,
                "refs/heads/master",
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            ),
        ),
        (
            Provider::Gitlab,
            "Tag Push Hook",
            "gitlab-tag-push.json",
            trigger(
                EventKind::Tag,
                "refs/tags/v1.0.0",
                "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            ),
        ),
        (
            Provider::Gitlab,
            "Merge Request Hook",
            "gitlab-merge-request.json",
            trigger(
                EventKind::PullRequest,
                "refs/merge-requests/1/head",
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            ),
        ),
        (
            Provider::Gitlab,
            "Note Hook",
            "gitlab-push.json",
            ignore("event `Note Hook` is not handled"),
        ),
        (
            Provider::Gitea,
            "push",
            "gitea-push.json",
            trigger(
                EventKind::Push,
                "refs/heads/develop",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
            ),
        ),
        (
            Provider::Gitea,
            "pull_request",
            "gitea-pull-request.json",
            trigger(
                EventKind::PullRequest,
                "refs/pull/7/head",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
            ),
        ),
        (
            Provider::Generic,
            "",
            "generic.json",
            trigger(
                EventKind::Push,
                "refs/heads/main",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
            ),
        ),
    ];
    for (provider, event, file, expected) in cases {
        let header = match provider {
            Provider::Github => "x-github-event",
            Provider::Gitlab => "x-gitlab-event",
            Provider::Gitea => "x-gitea-event",
            Provider::Generic => "x-ferry-event",
        };
        let got = webhook::parse(provider, &headers(&[(header, event)]), &payload(file));
        assert_eq!(got.map(bare), Ok(expected), "{provider:?} {event} {file}");
    }
}

/// The table above compares what to run; who sent it and a pull request's facts are
/// checked below.
fn bare(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Trigger(hook) => Outcome::Trigger(Hook {
            sender: None,
            pull: None,
            ..hook
        }),
        other => other,
    }
}

fn hook_of(p: Provider, event: &str, body: &serde_json::Value) -> Hook {
    let header = match p {
        Provider::Github => "x-github-event",
        Provider::Gitlab => "x-gitlab-event",
        _ => "x-gitea-event",
    };
    match webhook::parse(p, &headers(&[(header, event)]), body.to_string().as_bytes()) {
        Ok(Outcome::Trigger(hook)) => hook,
        other => panic!("{p:?} {event}: {other:?}"),
    }
}

/// Where a pull request comes from is decided by the forge's repository ids, never by
/// names; its ref is the forge's ref of it, so a fork's branch called `main` does not
/// look like `main`; the sender is the forge's account.
#[test]
fn pull_requests_say_whether_they_come_from_a_fork() {
    let json =
        |f: &str| -> serde_json::Value { serde_json::from_slice(&payload(f)).expect("json") };

    let same = hook_of(
        Provider::Github,
        "pull_request",
        &json("github-pull-request.json"),
    );
    let pull = same.pull.clone().expect("pull");
    assert_eq!(
        (
            pull.number,
            pull.fork,
            pull.head.as_str(),
            pull.base.as_str()
        ),
        (2, false, "changes", "master")
    );
    assert_eq!(pull.from.as_deref(), Some("Codertocat/Hello-World"));
    assert_eq!(same.sender.as_deref(), Some("Codertocat"));

    let mut fork = json("github-pull-request.json");
    fork["pull_request"]["head"]["ref"] = "main".into();
    fork["pull_request"]["head"]["repo"]["id"] = 999.into();
    fork["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
    // Even a head repository with the base's name is another repository.
    let hook = hook_of(Provider::Github, "pull_request", &fork);
    assert_eq!(hook.git_ref, "refs/pull/2/head", "not refs/heads/main");
    assert!(hook.pull.as_ref().expect("pull").fork);
    fork["pull_request"]["head"]["repo"] = serde_json::Value::Null;
    let hook = hook_of(Provider::Github, "pull_request", &fork);
    assert!(hook.pull.expect("pull").fork, "a deleted fork is a fork");

    let gitea = hook_of(
        Provider::Gitea,
        "pull_request",
        &json("gitea-pull-request.json"),
    );
    assert!(!gitea.pull.expect("pull").fork);
    let mut fork = json("gitea-pull-request.json");
    fork["pull_request"]["head"]["repo_id"] = 141.into();
    assert!(
        hook_of(Provider::Gitea, "pull_request", &fork)
            .pull
            .expect("pull")
            .fork
    );
    // Gitea's AGit flow names the base repository as the head: still not trusted.
    let mut agit = json("gitea-pull-request.json");
    agit["pull_request"]["flow"] = 1.into();
    assert!(
        hook_of(Provider::Gitea, "pull_request", &agit)
            .pull
            .expect("pull")
            .fork
    );
    let mut agit = json("gitea-pull-request.json");
    agit["pull_request"]["head"]["ref"] = "refs/for/master/topic".into();
    assert!(
        hook_of(Provider::Gitea, "pull_request", &agit)
            .pull
            .expect("pull")
            .fork
    );
    // A generic delivery names branches and tags only, never a pull request's ref.
    assert_eq!(
        webhook::parse(
            Provider::Generic,
            &headers(&[]),
            br#"{"ref": "refs/pull/5/head"}"#
        ),
        Ok(ignore("refs/pull/5/head is neither a branch nor a tag"))
    );

    let gitlab = hook_of(
        Provider::Gitlab,
        "Merge Request Hook",
        &json("gitlab-merge-request.json"),
    );
    let pull = gitlab.pull.expect("pull");
    assert_eq!(
        (pull.number, pull.fork, pull.base.as_str()),
        (1, false, "master")
    );
    assert_eq!(gitlab.sender.as_deref(), Some("root"));
    let mut fork = json("gitlab-merge-request.json");
    fork["object_attributes"]["source_project_id"] = 15.into();
    let hook = hook_of(Provider::Gitlab, "Merge Request Hook", &fork);
    assert!(hook.pull.expect("pull").fork);
    assert_eq!(hook.git_ref, "refs/merge-requests/1/head");

    let push = hook_of(Provider::Gitlab, "Push Hook", &json("gitlab-push.json"));
    assert_eq!(push.sender.as_deref(), Some("jsmith"));
    assert!(push.pull.is_none());
}

#[test]
fn gitlab_deleted_branch_and_description_edits_start_nothing() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&payload("gitlab-push.json")).expect("json");
    v["after"] = "0000000000000000000000000000000000000000".into();
    v["checkout_sha"] = serde_json::Value::Null;
    let h = headers(&[("x-gitlab-event", "Push Hook")]);
    assert_eq!(
        webhook::parse(Provider::Gitlab, &h, v.to_string().as_bytes()),
        Ok(ignore("refs/heads/master was deleted"))
    );
    let mut mr: serde_json::Value =
        serde_json::from_slice(&payload("gitlab-merge-request.json")).expect("json");
    mr["object_attributes"]["action"] = "update".into();
    let h = headers(&[("x-gitlab-event", "Merge Request Hook")]);
    assert_eq!(
        webhook::parse(Provider::Gitlab, &h, mr.to_string().as_bytes()),
        Ok(ignore("the merge request changed, not its commits"))
    );
    mr["object_attributes"]["oldrev"] = "95790bf891e76fee5e1747ab589903a6a1f80f22".into();
    assert!(matches!(
        webhook::parse(Provider::Gitlab, &h, mr.to_string().as_bytes()),
        Ok(Outcome::Trigger(_))
    ));
}

#[test]
fn malformed_bodies_are_errors() {
    let h = headers(&[("x-github-event", "push")]);
    assert!(webhook::parse(Provider::Github, &h, b"{not json").is_err());
    assert_eq!(
        webhook::parse(Provider::Github, &h, b"{}"),
        Err("the push payload has no `ref`".to_string())
    );
}

/// A ref name git would refuse, or a commit that is not an object id, is a bad payload
/// from every forge: it never reaches git, a run's tag or a release's directory.
#[test]
fn ref_names_and_commits_are_checked() {
    let sha = "a".repeat(40);
    let github = headers(&[("x-github-event", "push")]);
    let generic = headers(&[]);
    let body = |git_ref: &str, sha: &str| {
        serde_json::json!({ "ref": git_ref, "after": sha, "sha": sha }).to_string()
    };
    for (git_ref, commit, says) in [
        (
            "refs/tags/../../../../home/u/victim",
            sha.as_str(),
            "is not a valid ref name",
        ),
        ("refs/heads/.git", sha.as_str(), "cannot start with a dot"),
        ("refs/heads/a\u{7f}", sha.as_str(), "invalid byte"),
        (
            "refs/heads/main",
            "--upload-pack=touch /tmp/x",
            "is not a commit id",
        ),
        ("refs/heads/main", "HEAD~3", "is not a commit id"),
    ] {
        for (provider, h) in [(Provider::Github, &github), (Provider::Generic, &generic)] {
            let err =
                webhook::parse(provider, h, body(git_ref, commit).as_bytes()).expect_err(git_ref);
            assert!(err.contains(says), "{provider:?} {git_ref} {commit}: {err}");
        }
    }
    // A generic delivery of a ref alone names it whole, or as a branch.
    let err = webhook::parse(Provider::Generic, &generic, br#"{"ref": "a..b"}"#).expect_err("a..b");
    assert!(err.contains("refs/heads/a..b"), "{err}");
    assert_eq!(
        webhook::parse(
            Provider::Github,
            &github,
            body("refs/tags/v1.0", &sha).as_bytes()
        ),
        Ok(trigger(EventKind::Tag, "refs/tags/v1.0", &sha))
    );
}

#[test]
fn signatures_are_checked() {
    let body = payload("github-push.json");
    let good = format!("sha256={}", sign("s3cret", &body));
    let gh = |sig: &str| headers(&[("x-hub-signature-256", sig)]);
    assert!(webhook::verify(Provider::Github, &gh(&good), &body, "s3cret").is_ok());
    assert!(webhook::verify(Provider::Github, &gh(&good), &body, "other").is_err());
    assert!(webhook::verify(Provider::Github, &gh("sha256=00"), &body, "s3cret").is_err());
    assert!(
        webhook::verify(
            Provider::Github,
            &gh(&sign("s3cret", &body)),
            &body,
            "s3cret"
        )
        .is_err(),
        "the prefix is required"
    );
    assert!(webhook::verify(Provider::Github, &HeaderMap::new(), &body, "s3cret").is_err());
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(webhook::verify(Provider::Github, &gh(&good), &tampered, "s3cret").is_err());
    let gitea = headers(&[("x-gitea-signature", &sign("k", &body))]);
    assert!(webhook::verify(Provider::Gitea, &gitea, &body, "k").is_ok());
    let gitlab = headers(&[("x-gitlab-token", "k")]);
    assert!(webhook::verify(Provider::Gitlab, &gitlab, &body, "k").is_ok());
    assert!(webhook::verify(Provider::Gitlab, &gitlab, &body, "kk").is_err());
    let generic = headers(&[("x-ferry-signature", &format!("sha256={}", sign("k", &body)))]);
    assert!(webhook::verify(Provider::Generic, &generic, &body, "k").is_ok());
}

#[test]
fn delivery_ids() {
    let id = |p: Provider, pairs: &[(&str, &str)], body: &[u8]| {
        webhook::delivery_id(p, &headers(pairs), body)
    };
    let github = [("x-github-delivery", "72d3162e")];
    assert_eq!(id(Provider::Github, &github, b""), Some("72d3162e".into()));
    assert_eq!(id(Provider::Github, &[], b""), None);
    let uuid = [("x-gitlab-event-uuid", "u-1")];
    assert_eq!(id(Provider::Gitlab, &uuid, b""), Some("u-1".into()));
    // GitLab's "Resend request" keeps the Idempotency-Key and sends a new event UUID:
    // the key decides, so the resent delivery is the same delivery.
    let first = [("idempotency-key", "k-1"), ("x-gitlab-event-uuid", "u-1")];
    let resent = [("idempotency-key", "k-1"), ("x-gitlab-event-uuid", "u-2")];
    assert_eq!(
        id(Provider::Gitlab, &first, b""),
        id(Provider::Gitlab, &resent, b"")
    );
    assert_eq!(id(Provider::Gitlab, &resent, b""), Some("k-1".into()));
    // Gitea's "Redeliver": the same payload under a new X-Gitea-Delivery is the same
    // delivery; another push (here: the repository's updated_at moved) is not.
    let push = payload("gitea-push.json");
    let again = id(Provider::Gitea, &[("x-gitea-delivery", "g-2")], &push);
    assert_eq!(
        id(Provider::Gitea, &[("x-gitea-delivery", "g-1")], &push),
        again
    );
    let other = String::from_utf8(push.clone()).expect("utf8").replacen(
        "\"full_name\":",
        "\"updated_at\": \"2026-12-02T08:00:00Z\", \"full_name\":",
        1,
    );
    assert_ne!(id(Provider::Gitea, &[], other.as_bytes()), again);
}

/// GitHub's default content type is `application/x-www-form-urlencoded`, the JSON in a
/// `payload` field; Gitea can send the same. Both forms read alike.
#[test]
fn form_encoded_payloads_parse_like_json() {
    let json = payload("github-push.json");
    let form = format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(
            std::str::from_utf8(&json).expect("utf8"),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let as_json = headers(&[
        ("x-github-event", "push"),
        ("content-type", "application/json"),
    ]);
    let as_form = headers(&[
        ("x-github-event", "push"),
        ("content-type", "application/x-www-form-urlencoded"),
    ]);
    let parsed = webhook::parse(Provider::Github, &as_form, form.as_bytes()).expect("form");
    assert_eq!(
        parsed,
        webhook::parse(Provider::Github, &as_json, &json).expect("json")
    );
    assert_eq!(
        webhook::parse(Provider::Github, &as_form, b"other=1"),
        Err("the form-encoded body has no `payload` field".to_string())
    );
}

/// Sends a GitHub delivery of `event` with a `sha256=` signature to the repository.
async fn github(
    s: &Server,
    repo: &str,
    signature: &str,
    delivery: &str,
    event: &str,
    body: &str,
) -> Answer {
    s.send(
        s.request("POST", &format!("/api/v1/hooks/github/{repo}"))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

fn signed(secret: &str, body: &str) -> String {
    format!("sha256={}", sign(secret, body.as_bytes()))
}

/// A server with the repository `hooked` (holding `pipeline`), its webhook secret
/// `s3cret`; the server and the repository's bare origin.
async fn hooked_server(pipeline: &str) -> (Server, std::path::PathBuf) {
    let s = Server::start().await;
    let bare = s.repository("hooked", Some(pipeline));
    let body =
        json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": "s3cret" });
    let (status, answer) = s.admin("POST", "/api/v1/repos", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    (s, bare)
}

/// [`github`] to the repository `hooked`, signed with its secret `s3cret`.
async fn hooked(s: &Server, delivery: &str, event: &str, body: &str) -> Answer {
    github(s, "hooked", &signed("s3cret", body), delivery, event, body).await
}

/// Waits until the intake worker has handled every accepted delivery (it deletes each
/// from the intake queue once it has started its run or declined it).
async fn intake_done(s: &Server) {
    wait_for("every delivery handled", async || {
        let pending = s.store.pending_intake(10).await.expect("intake");
        if pending.is_empty() {
            Ok(())
        } else {
            Err(pending.len())
        }
    })
    .await;
}

/// A signed GitHub push webhook starts a run of the pushed commit, once per delivery.
#[tokio::test]
async fn signed_webhooks_start_runs_once() {
    let (s, bare) = hooked_server("on:\n  push: { branches: [main] }\njobs:\n  built:\n    run: echo built $FERRY_EVENT $FERRY_BRANCH\n").await;
    let sha = head(&bare);
    let body = json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "deleted": false,
        "head_commit": { "id": sha, "message": "first" }, "repository": { "full_name": "ada/hooked" }
    })
    .to_string();
    // Bad or missing signatures: 401 and nothing created.
    let answer = github(&s, "hooked", &signed("wrong", &body), "d-0", "push", &body).await;
    assert_eq!(answer.status, 401);
    let answer = github(&s, "hooked", "", "d-0", "push", &body).await;
    assert_eq!(answer.status, 401);
    assert!(s.all_runs().await.is_empty());
    // A good one is accepted at once, and becomes a run of that commit.
    let answer = hooked(&s, "d-1", "push", &body).await;
    assert_eq!(answer.status, 202);
    let runs = s.first_runs("hooked").await;
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].id.clone();
    assert_eq!(runs[0].commit_sha, sha);
    assert_eq!(runs[0].triggered_by.as_deref(), Some("webhook:github"));
    // Its logs stream live over Server-Sent Events until it ends.
    let events = s.events(&run_id).await;
    let streamed = log_text(&events);
    assert_eq!(streamed, "built push main\n");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    let log = s.log(&run_id, "built").await;
    assert_eq!(log, "built push main\n");
    // The same delivery again starts nothing.
    let answer = hooked(&s, "d-1", "push", &body).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text.contains("already handled"), "{}", answer.text);
    // A ping, an unhandled event, a deleted branch and a push `on:` does not list: 200, nothing.
    let ping = json!({ "zen": "Keep it logically awesome.", "hook_id": 1 }).to_string();
    let answer = hooked(&s, "d-2", "ping", &ping).await;
    assert_eq!(answer.status, 200);
    let answer = hooked(&s, "d-3", "star", &ping).await;
    assert_eq!(answer.status, 200);
    let deleted =
        json!({ "ref": "refs/heads/old", "before": sha, "after": "0".repeat(40), "deleted": true })
            .to_string();
    let answer = hooked(&s, "d-4", "push", &deleted).await;
    assert_eq!(answer.status, 200);
    let other =
        json!({ "ref": "refs/heads/other", "after": sha, "head_commit": { "message": "x" } })
            .to_string();
    // Accepted, then declined by the intake (`on:` lists only main): no run.
    let answer = hooked(&s, "d-5", "push", &other).await;
    assert_eq!(answer.status, 202);
    // Malformed and oversized bodies.
    let bad = "{not json";
    let answer = hooked(&s, "d-6", "push", bad).await;
    assert_eq!(answer.status, 400);
    let huge = "x".repeat(6 << 20);
    let answer = hooked(&s, "d-7", "push", &huge).await;
    assert_eq!(answer.status, 413);
    intake_done(&s).await;
    assert_eq!(s.all_runs().await.len(), 1, "exactly one run was created");
    s.stop().await;
}

/// A form-encoded delivery is verified over its raw body, as GitHub signs it, and runs.
#[tokio::test]
async fn form_encoded_github_deliveries_are_verified_and_run() {
    let (s, bare) = hooked_server("jobs:\n  built:\n    run: echo built\n").await;
    let sha = head(&bare);
    let json =
        json!({ "ref": "refs/heads/main", "after": sha, "head_commit": { "message": "first" } })
            .to_string();
    let body = format!(
        "payload={}",
        percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC)
    );
    let send = |signature: String| {
        s.send(
            s.request("POST", "/api/v1/hooks/github/hooked")
                .header("x-github-event", "push")
                .header("x-github-delivery", "form-1")
                .header("x-hub-signature-256", signature)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone()),
        )
    };
    // Signed over the JSON inside instead of the body sent: refused.
    assert_eq!(send(signed("s3cret", &json)).await.status, 401);
    assert_eq!(send(signed("s3cret", &body)).await.status, 202);
    let runs = s.first_runs("hooked").await;
    assert_eq!(runs[0].commit_sha, sha);
    s.stop().await;
}

/// A delivery to a repository that does not exist is answered exactly like one with a
/// bad signature: nobody can list repository names through the webhook URL.
#[tokio::test]
async fn unknown_repositories_answer_like_a_bad_signature() {
    let (s, _) = hooked_server("jobs:\n  a:\n    run: 'true'\n").await;
    let bare = s.repository("open", Some("jobs:\n  a:\n    run: 'true'\n"));
    s.register("open", &bare).await; // no webhook secret
    let body = json!({ "ref": "refs/heads/main", "after": head(&bare) }).to_string();
    let bad = github(&s, "hooked", &signed("wrong", &body), "x-1", "push", &body).await;
    let unknown = github(&s, "nosuch", &signed("wrong", &body), "x-2", "push", &body).await;
    let no_secret = github(&s, "open", &signed("wrong", &body), "x-3", "push", &body).await;
    for answer in [&bad, &unknown, &no_secret] {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.text, bad.text);
    }
    assert!(
        bad.text.contains("missing or invalid signature"),
        "{}",
        bad.text
    );
    s.stop().await;
}

#[tokio::test]
async fn webhook_secrets_are_stored_sealed_and_still_verify() {
    let s = Server::start().await;
    let bare = s.repository("hooked", Some("jobs:\n  a:\n    run: 'true'\n"));
    let secret = "whsec-plain-6d2f";
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": secret })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains(secret));
    let holding = files_holding(&s.dir().join("data"), secret);
    assert!(holding.is_empty(), "{holding:?} hold the webhook secret");
    let sha = head(&bare);
    let payload = json!({ "ref": "refs/heads/main", "after": sha, "head_commit": { "id": sha, "message": "m" } })
        .to_string();
    let answer = s
        .send(
            s.request("POST", "/api/v1/hooks/github/hooked")
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", "sealed-1")
                .header("X-Hub-Signature-256", signed(secret, &payload))
                .body(payload),
        )
        .await;
    assert_eq!(answer.status, 202, "the sealed secret still verifies");
    s.stop().await;
}

/// Gitea's "Redeliver" (the same payload under a new `X-Gitea-Delivery`) starts nothing
/// more; another push does.
#[tokio::test]
async fn a_gitea_redelivery_is_recognised_by_its_payload() {
    let (s, bare) = hooked_server("jobs:\n  a:\n    run: 'true'\n").await;
    let sha = head(&bare);
    let deliver = |id: &'static str, body: String| {
        s.send(
            s.request("POST", "/api/v1/hooks/gitea/hooked")
                .header("x-gitea-event", "push")
                .header("x-gitea-delivery", id)
                .header("x-gitea-signature", sign("s3cret", body.as_bytes()))
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let push = |updated: &str| {
        json!({ "ref": "refs/heads/main", "after": sha, "commits": [{ "message": "m" }],
                "repository": { "full_name": "ada/hooked", "updated_at": updated } })
        .to_string()
    };
    assert_eq!(
        deliver("g-1", push("2026-12-02T08:00:00Z")).await.status,
        202
    );
    let again = deliver("g-2", push("2026-12-02T08:00:00Z")).await;
    assert_eq!(again.status, 200);
    assert!(again.text.contains("already handled"), "{}", again.text);
    assert_eq!(
        deliver("g-3", push("2026-12-02T09:00:00Z")).await.status,
        202
    );
    s.stop().await;
}

/// Every delivery is listed with what became of it, like the forges' own "recent
/// deliveries" pages; a declined one can be delivered again, a started one cannot.
#[tokio::test]
async fn deliveries_are_listed_with_their_outcome_and_can_be_delivered_again() {
    let s = Server::start().await;
    let bare = s.repository(
        "hooked",
        Some("on:\n  push: { branches: [main] }\njobs:\n  built:\n    run: echo built\n"),
    );
    s.admin("POST", "/api/v1/repos", Some(json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": "s3cret" }))).await;
    let sha = head(&bare);
    let main = json!({ "ref": "refs/heads/main", "after": sha, "head_commit": { "message": "m" } })
        .to_string();
    let other =
        json!({ "ref": "refs/heads/other", "after": sha, "head_commit": { "message": "m" } })
            .to_string();
    let ping = json!({ "zen": "hi" }).to_string();
    assert_eq!(hooked(&s, "l-1", "push", &main).await.status, 202);
    assert_eq!(hooked(&s, "l-1", "push", &main).await.status, 200); // the same again
    assert_eq!(hooked(&s, "l-2", "ping", &ping).await.status, 200);
    assert_eq!(hooked(&s, "l-3", "push", &other).await.status, 202); // `on:` declines it
    intake_done(&s).await;
    let list = s.get("/api/v1/repos/hooked/deliveries").await;
    let deliveries = list["deliveries"].as_array().expect("deliveries");
    let by = |id: &str, status: &str| {
        deliveries
            .iter()
            .find(|d| d["delivery_id"] == id && d["status"] == status)
            .unwrap_or_else(|| panic!("no {status} delivery {id} in {list}"))
    };
    let started = by("l-1", "started");
    assert_eq!(started["sha"], sha.as_str());
    assert_eq!(started["git_ref"], "refs/heads/main");
    assert!(started["run_id"].is_string());
    assert!(
        by("l-1", "ignored")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already handled"))
    );
    assert_eq!(by("l-2", "ignored")["event"], "ping");
    let declined = by("l-3", "declined");
    assert!(declined["run_id"].is_null());
    assert!(
        declined["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{declined}"
    );
    // A started delivery is not delivered again; a declined one is.
    let path = |d: &serde_json::Value| {
        format!(
            "/api/v1/repos/hooked/deliveries/{}/redeliver",
            d["id"].as_str().expect("id")
        )
    };
    let (status, body) = s.admin("POST", &path(started), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "invalid_state");
    let (status, body) = s.admin("POST", &path(declined), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["delivery"]["redelivery_of"], declined["id"]);
    assert_eq!(body["delivery"]["provider"], "ferry");
    intake_done(&s).await;
    let list = s.get("/api/v1/repos/hooked/deliveries").await;
    let redelivered = list["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["redelivery_of"] == declined["id"])
        .expect("the redelivery is listed");
    assert_eq!(redelivered["status"], "declined", "{redelivered}");
    s.stop().await;
}

/// A GitHub `pull_request` delivery of `sha` from branch `head`, opened by `sender`;
/// `head_repo` is the id of the repository it comes from (the base is 1).
fn pull_body(sha: &str, head: &str, head_repo: u64, sender: &str) -> String {
    json!({
        "action": "opened", "number": 5,
        "pull_request": {
            "number": 5,
            "head": { "ref": head, "sha": sha, "repo": { "id": head_repo, "full_name": format!("{sender}/app") } },
            "base": { "ref": "main", "sha": sha, "repo": { "id": 1, "full_name": "ada/app" } }
        },
        "sender": { "login": sender }
    })
    .to_string()
}

/// A pull request from a fork is declined unless the repository runs them
/// (`fork_prs: run`), and then runs untrusted: a job that would run on the host (and
/// could read the server's files) is refused before it starts, nothing is released
/// whatever `release:` says, and a fork's branch called `main` is not `main`. A pull
/// request from a branch of the repository itself is trusted.
#[tokio::test]
async fn fork_pull_requests_are_declined_or_run_untrusted() {
    let pipeline = "on:\n  push: {}\n  pull_request: {}\nconcurrency: { group: deploys, cancel_in_progress: true }\nrelease:\n  branches: [\"**\"]\njobs:\n  work:\n    run: cat ../../../secret.key; echo branch=$FERRY_BRANCH\n";
    let (s, bare) = hooked_server(pipeline).await;
    let sha = head(&bare);
    ferry_testkit::git(&bare, &["update-ref", "refs/pull/5/head", &sha]);
    let fork = pull_body(&sha, "main", 666, "mallory");

    // The default: declined, and the delivery says why.
    assert_eq!(hooked(&s, "pr-1", "pull_request", &fork).await.status, 202);
    intake_done(&s).await;
    assert!(s.all_runs().await.is_empty(), "no run of a fork's code");
    let (_, list) = s
        .admin("GET", "/api/v1/repos/hooked/deliveries", None)
        .await;
    let reason = list["deliveries"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("pull request #5 from a fork (mallory/app) by mallory")
            && reason.contains("does not run pull requests from forks"),
        "{list}"
    );

    // An admin may change it later (audited); only the two words are taken.
    let (status, bad) = s
        .admin(
            "PUT",
            "/api/v1/repos/hooked/fork-prs",
            Some(json!({ "fork_prs": "yes" })),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let (status, set) = s
        .admin(
            "PUT",
            "/api/v1/repos/hooked/fork-prs",
            Some(json!({ "fork_prs": "run" })),
        )
        .await;
    assert_eq!(
        (status, &set["repository"]["fork_prs"]),
        (200, &json!("run")),
        "{set}"
    );
    let (_, audit) = s.admin("GET", "/api/v1/repos/hooked/audit", None).await;
    assert_eq!(
        audit["audit"][0]["action"], "repository.fork_prs",
        "{audit}"
    );
    assert_eq!(audit["audit"][0]["detail"], "ignore -> run");
    s.admin(
        "PUT",
        "/api/v1/repos/hooked/fork-prs",
        Some(json!({ "fork_prs": "ignore" })),
    )
    .await;

    // A repository that runs them: untrusted.
    let open = s.repository("open", Some(pipeline));
    // Its own commit: made in another second, it is not `sha`.
    let sha = head(&open);
    let fork = pull_body(&sha, "main", 666, "mallory");
    ferry_testkit::git(&open, &["update-ref", "refs/pull/5/head", &sha]);
    let body = json!({ "name": "open", "url": open.display().to_string(),
        "webhook_secret": "s3cret", "fork_prs": "run" });
    let (status, answer) = s.admin("POST", "/api/v1/repos", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["repository"]["fork_prs"], "run");
    let answer = github(
        &s,
        "open",
        &signed("s3cret", &fork),
        "pr-2",
        "pull_request",
        &fork,
    )
    .await;
    assert_eq!(answer.status, 202);
    let runs = s.first_runs("open").await;
    assert_eq!(runs[0].git_ref, "refs/pull/5/head");
    assert_eq!(runs[0].branch, None, "a fork's `main` is not main");
    let detail = s.finished(&runs[0].id).await;
    assert_eq!(detail["trust"]["level"], "untrusted", "{detail}");
    assert_eq!(
        detail["plan"]["concurrency"]["group"], "untrusted/deploys",
        "never the group of trusted runs"
    );
    assert_eq!(detail["run"]["status"], "failed", "{detail}");
    let why = detail["jobs"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("would run on the host") && why.contains("this run is untrusted"),
        "{detail}"
    );
    let log = s.log(&runs[0].id, "work").await;
    assert!(!log.contains("branch="), "the job never started: {log}");
    let (_, releases) = s.admin("GET", "/api/v1/repos/open/releases", None).await;
    assert_eq!(releases["releases"], json!([]), "{releases}");

    // The same pull request from a branch of the repository itself: trusted.
    let own = pull_body(&sha, "feature", 1, "ada");
    let answer = github(
        &s,
        "open",
        &signed("s3cret", &own),
        "pr-3",
        "pull_request",
        &own,
    )
    .await;
    assert_eq!(answer.status, 202);
    intake_done(&s).await;
    let runs = s.runs_of("open").await;
    assert_eq!(runs.len(), 2, "newest first");
    let detail = s.finished(&runs[0].id).await;
    assert_eq!(detail["trust"]["level"], "trusted", "{detail}");
    // Asked for through the API, a pull request's ref is still not trusted.
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/open/runs",
            Some(json!({ "ref": "refs/pull/5/head" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let asked = s.finished(body["run"]["id"].as_str().expect("id")).await;
    assert_eq!(asked["trust"]["level"], "untrusted", "{asked}");
    assert!(
        detail["trust"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("pull request #5 from branch feature of this repository by ada"),
        "{detail}"
    );
    s.stop().await;
}

/// A push delivery of `sha` to main.
fn push_body(sha: &str, message: &str) -> String {
    json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "deleted": false,
        "head_commit": { "id": sha, "message": message }, "sender": { "login": "ada" }
    })
    .to_string()
}

/// A replayed push (an old push's body, signature and all, under a new delivery id)
/// still runs, but its commit is no longer its branch's head after a fetch, so it
/// seals no release and moves no environment back; the audit log says why.
#[tokio::test]
async fn a_replayed_push_seals_no_release() {
    let pipeline = "jobs:\n  build:\n    run: echo built\nrelease: {}\n";
    let (s, bare) = hooked_server(pipeline).await;
    let old = head(&bare);
    let first = push_body(&old, "first");
    assert_eq!(hooked(&s, "d-1", "push", &first).await.status, 202);
    let releases = s.releases_of("hooked", 1).await;
    assert_eq!(releases[0]["commit_sha"], old.as_str());

    s.push_commit("hooked", "second.txt");
    let new = head(&bare);
    assert_eq!(
        hooked(&s, "d-2", "push", &push_body(&new, "second"))
            .await
            .status,
        202
    );
    s.releases_of("hooked", 2).await;

    // The captured first delivery, again, as a new delivery.
    assert_eq!(hooked(&s, "d-3", "push", &first).await.status, 202);
    intake_done(&s).await;
    let runs = s.runs_of("hooked").await;
    assert_eq!(runs.len(), 3);
    let detail = s.finished(&runs[0].id).await;
    assert_eq!(
        detail["run"]["status"], "success",
        "CI still runs: {detail}"
    );
    assert_eq!(detail["run"]["commit_sha"], old.as_str());
    // Sealing follows the run's end in its task; stopping waits for it.
    let s = s.restart().await;
    let (_, list) = s.admin("GET", "/api/v1/repos/hooked/releases", None).await;
    assert_eq!(list["releases"].as_array().map(Vec::len), Some(2), "{list}");
    let (_, audit) = s.admin("GET", "/api/v1/repos/hooked/audit", None).await;
    let not_sealed = audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .find(|a| a["action"] == "release.not_sealed")
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    let why = not_sealed["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "commit {} is no longer the head of main",
            &old[..12]
        )),
        "{why}"
    );
    s.stop().await;
}

/// Approval rules know people by the forge account a signed delivery names, not by the
/// git author string a committer writes: Mallory, an approver, pushes a commit that
/// says it is Ada's; she may not approve it (she pushed it); Bob may.
#[tokio::test]
async fn approval_rules_know_people_by_their_forge_accounts() {
    let pipeline = "jobs:\n  build:\n    run: echo built\nrelease: {}\nenvironments:\n  production:\n    approval: { required: 1, not: [author, triggerer] }\ndeploy:\n  target: { script: { run: 'true' } }\n";
    let (s, bare) = hooked_server(pipeline).await;
    let user = |name: &str, forge: serde_json::Value| json!({ "name": name, "role": "approver", "forge": forge });
    let (status, mallory) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(user("mallory", json!(["GitHub:Mallory"]))),
        )
        .await;
    assert_eq!(status, 201, "{mallory}");
    assert_eq!(mallory["forge"], json!(["github:mallory"]));
    let mallory = mallory["token"].as_str().expect("token").to_string();
    let bob = s.user("bob", "approver").await;
    // Linking: checked, one user per account.
    for (identity, want) in [
        ("gitlab:mallory.m", 200),
        ("bitbucket:mallory", 422),
        ("github:", 422),
    ] {
        let (status, body) = s
            .admin(
                "POST",
                "/api/v1/users/mallory/forge",
                Some(json!({ "identity": identity })),
            )
            .await;
        assert_eq!(status, want, "{identity}: {body}");
    }
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/users/bob/forge",
            Some(json!({ "identity": "github:mallory" })),
        )
        .await;
    assert_eq!(status, 409, "another user's account: {body}");

    let sha = head(&bare); // authored by "Ada Lovelace <ada@example.com>"
    let push = push_body(&sha, "first").replace("\"login\":\"ada\"", "\"login\":\"Mallory\"");
    assert!(push.contains("Mallory"), "{push}");
    assert_eq!(hooked(&s, "d-1", "push", &push).await.status, 202);
    intake_done(&s).await;
    let runs = s.runs_of("hooked").await;
    assert_eq!(runs[0].triggered_by.as_deref(), Some("github:mallory"));
    let production = "/api/v1/repos/hooked/deployments?environment=production";
    s.wait_until(production, "production#1 awaits approval", |b| {
        b["deployments"][0]["status"] == "awaiting_approval"
    })
    .await;
    let deployment = s.deployment("hooked", "production#1");
    let (status, body) = deployment.approve(&mallory, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is the commit's author"),
        "{body}"
    );
    let (status, body) = deployment.approve(&bob, None).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}

/// Each repository's deliveries have a worker of their own: while a delivery for a
/// repository whose remote accepts connections and never answers is stuck in its fetch,
/// another repository's delivery runs at once.
#[tokio::test]
async fn a_silent_remote_holds_up_only_its_own_repository() {
    let pipeline = "jobs:\n  build:\n    run: echo built\n";
    let (s, bare) = hooked_server(pipeline).await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("git://{}/stuck.git", silent.local_addr().expect("addr"));
    let body = json!({ "name": "stuck", "url": url, "webhook_secret": "s3cret" });
    let (status, answer) = s.admin("POST", "/api/v1/repos", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let stuck = push_body(&"a".repeat(40), "never fetched");
    let signature = signed("s3cret", &stuck);
    let answer = github(&s, "stuck", &signature, "s-1", "push", &stuck).await;
    assert_eq!(answer.status, 202);
    // Give the stuck delivery's worker time to be in its fetch.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sha = head(&bare);
    assert_eq!(
        hooked(&s, "h-1", "push", &push_body(&sha, "first"))
            .await
            .status,
        202
    );
    let runs = s.first_runs("hooked").await;
    assert_eq!(runs[0].commit_sha, sha);
    assert!(
        s.runs_of("stuck").await.is_empty(),
        "the stuck repository's delivery is still in its fetch"
    );
    drop(silent);
    s.stop().await;
}

/// `fork_prs: approve`: a fork's pull request waits, with no run, until a developer
/// approves that delivery; it then runs untrusted, saying who approved it, and an
/// approval counts once.
#[tokio::test]
async fn a_forks_pull_request_runs_once_a_developer_approves_it() {
    let pipeline =
        "on:\n  pull_request: {}\njobs:\n  work:\n    image: busybox\n    run: echo hi\n";
    let (s, bare) = hooked_server(pipeline).await;
    let (status, set) = s
        .admin(
            "PUT",
            "/api/v1/repos/hooked/fork-prs",
            Some(json!({ "fork_prs": "approve" })),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let sha = head(&bare);
    ferry_testkit::git(&bare, &["update-ref", "refs/pull/5/head", &sha]);
    let fork = pull_body(&sha, "main", 666, "mallory");
    assert_eq!(hooked(&s, "pr-1", "pull_request", &fork).await.status, 202);
    intake_done(&s).await;
    assert!(
        s.all_runs().await.is_empty(),
        "nothing runs before approval"
    );
    let (_, list) = s
        .admin("GET", "/api/v1/repos/hooked/deliveries", None)
        .await;
    let waiting = &list["deliveries"][0];
    assert_eq!(waiting["status"], "awaiting_approval", "{list}");
    let id = waiting["id"].as_str().expect("id").to_string();
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("ferry deliveries --approve {id}")),
        "{waiting}"
    );
    // A viewer may not approve; a developer may.
    let viewer = s.user("vera", "viewer").await;
    let approve = format!("/api/v1/repos/hooked/deliveries/{id}/approve");
    let (status, _) = s.call("POST", &approve, Some(&viewer), None).await;
    assert_eq!(status, 403);
    let dev = s.user("dev", "developer").await;
    let (status, body) = s.call("POST", &approve, Some(&dev), None).await;
    assert_eq!(status, 202, "{body}");
    let runs = s.first_runs("hooked").await;
    let detail = s.finished(&runs[0].id).await;
    assert_eq!(detail["trust"]["level"], "untrusted", "{detail}");
    assert!(
        detail["trust"]["reason"]
            .as_str()
            .unwrap_or_default()
            .ends_with("approved by user:dev"),
        "{detail}"
    );
    let (status, body) = s.call("POST", &approve, Some(&dev), None).await;
    assert_eq!(status, 409, "once: {body}");
    let (_, audit) = s.admin("GET", "/api/v1/repos/hooked/audit", None).await;
    assert_eq!(audit["audit"][0]["action"], "delivery.approve", "{audit}");
    s.stop().await;
}
