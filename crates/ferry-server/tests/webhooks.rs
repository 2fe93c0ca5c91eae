//! Webhook parsing and verification on the payloads the forges document, one table.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ferry_plan::EventKind;
use ferry_server::webhook::{self, Hook, Outcome, Provider};
use hmac::{Hmac, Mac};
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
                "refs/heads/changes",
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
                "refs/heads/ms-viewport",
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
                "refs/heads/feature",
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
        assert_eq!(got, Ok(expected), "{provider:?} {event} {file}");
    }
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
    assert_eq!(
        webhook::delivery_id(
            Provider::Github,
            &headers(&[("x-github-delivery", "72d3162e")])
        ),
        Some("72d3162e".into())
    );
    assert_eq!(
        webhook::delivery_id(
            Provider::Gitlab,
            &headers(&[("x-gitlab-event-uuid", "u-1")])
        ),
        Some("u-1".into())
    );
    assert_eq!(
        webhook::delivery_id(Provider::Gitea, &headers(&[("x-gitea-delivery", "g-1")])),
        Some("g-1".into())
    );
    assert_eq!(
        webhook::delivery_id(Provider::Github, &HeaderMap::new()),
        None
    );
}
