//! Who may call what: every route walked without a token and with too weak a role,
//! public reads, and tokens (created, listed without their secrets, revoked).

use ferry_server::{Access, ROUTES, Role};
use ferry_testkit::server::{Options, Server};
use serde_json::json;

/// A route's path with its parameters filled in (what is not filled in stays a literal
/// `{name}`, which is still one path segment).
fn concrete(path: &str) -> String {
    path.replace("{provider}", "github")
        .replace("{repo}", "r")
        .replace("{run}", "x")
        .replace("{job}", "j")
        .replace("{token}", "t")
}

/// Every route refuses a request without a token (401) and one with too weak a role (403).
#[tokio::test]
async fn every_route_checks_the_token_and_the_role() {
    let s = Server::start().await;
    let viewer = s.user("vic", "viewer").await;
    let dev = s.user("dee", "developer").await;
    let bare = s.repository("r", Some("jobs:\n  a:\n    run: 'true'\n"));
    let (status, _) = s
        .admin(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": "r", "url": bare.display().to_string(), "webhook_secret": "k" })),
        )
        .await;
    assert_eq!(status, 201);
    for route in ROUTES {
        let (method, access) = (&route.method, &route.access);
        let path = concrete(route.path);
        let (status, body) = s.call(method, &path, None, None).await;
        match access {
            Access::Public => assert_eq!(status, 200, "{method} {path} is public"),
            Access::Signed | Access::Token(_) => {
                assert_eq!(
                    status, 401,
                    "{method} {path} without a token or signature: {body}"
                );
                assert_eq!(body["code"], "unauthorized");
            }
        }
        let Access::Token(needed) = access else {
            continue;
        };
        let (status, _) = s
            .call(method, &path, Some("ferry_not_a_real_token"), None)
            .await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        for (token, has) in [(&viewer, Role::Viewer), (&dev, Role::Developer)] {
            if has < *needed {
                let (status, body) = s.call(method, &path, Some(token), None).await;
                assert_eq!(status, 403, "{method} {path} as {has:?}: {body}");
                assert_eq!(body["code"], "forbidden");
            }
        }
    }
    s.stop().await;
}

/// Tokens can be listed and revoked; a listing never shows a secret; a revoked token
/// stops working.
#[tokio::test]
async fn tokens_are_listed_without_secrets_and_revoked() {
    let s = Server::start().await;
    let viewer = s.user("vic", "viewer").await;
    let (status, created) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&viewer),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(status, 201);
    let secret = created["secret"].as_str().expect("secret").to_string();
    let id = created["token"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some(&secret), None).await.0,
        200
    );
    let (_, listed) = s.call("GET", "/api/v1/tokens", Some(&viewer), None).await;
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are never listed"
    );
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&viewer),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some(&secret), None).await.0,
        401
    );
    s.stop().await;
}

/// With public reads, reads need no token; changes still do.
#[tokio::test]
async fn public_reads_open_reads_only() {
    let s = Server::start_with(Options {
        public_reads: true,
        ..Options::default()
    })
    .await;
    for route in ROUTES {
        let (method, access) = (&route.method, &route.access);
        let path = concrete(route.path);
        let (status, _) = s.call(method, &path, None, None).await;
        match access {
            // One's own tokens and sessions: there is no one to own them.
            Access::Token(Role::Viewer)
                if *method == "GET"
                    && ["/api/v1/tokens", "/api/v1/sessions"].contains(&route.path) =>
            {
                assert_eq!(status, 401, "{method} {path} needs a caller")
            }
            Access::Token(Role::Viewer) if *method == "GET" => {
                assert_ne!(status, 401, "{method} {path} is readable")
            }
            Access::Token(_) => assert_eq!(status, 401, "{method} {path} still needs a token"),
            _ => {}
        }
    }
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some("ferry_bad"), None)
            .await
            .0,
        401,
        "a wrong token is still refused"
    );
    s.stop().await;
}

/// A web session (its secret in the `ferry_session` cookie) is a caller like a token:
/// reads need nothing more; a change needs this origin and the session's CSRF token;
/// the session ends with its token.
#[tokio::test]
async fn a_session_cookie_reads_and_changes_only_with_its_csrf_token_from_this_origin() {
    let s = Server::start().await;
    let (user, token) = s
        .store
        .user_by_token_hash(&ferry_server::auth::hash_token(&s.admin))
        .await
        .expect("lookup")
        .expect("the admin's token");
    let secret = "web-session-secret-1";
    s.store
        .create_session(
            &user.id,
            &token.id,
            &ferry_server::auth::hash_token(secret),
            ferry_store::now_ms() + 3_600_000,
        )
        .await
        .expect("session");
    let cookie = format!("theme=dark; ferry_session={secret}");
    let csrf = ferry_server::auth::csrf_token(secret);
    let read = s
        .send(s.request("GET", "/api/v1/repos").header("cookie", &cookie))
        .await;
    assert_eq!(read.status, 200, "{}", read.text);
    let bare = s.repository("web", Some("jobs:\n  a:\n    run: 'true'\n"));
    let body = json!({ "name": "web", "url": bare.display().to_string() });
    let create = |extra: Vec<(&'static str, String)>| {
        let mut r = s
            .request("POST", "/api/v1/repos")
            .header("cookie", &cookie)
            .json(&body);
        for (k, v) in extra {
            r = r.header(k, v);
        }
        r
    };
    let no_token = s.send(create(vec![])).await;
    assert_eq!(no_token.status, 403, "{}", no_token.text);
    assert!(no_token.text.contains("CSRF"), "{}", no_token.text);
    let wrong = s.send(create(vec![("x-ferry-csrf", "0".repeat(64))])).await;
    assert_eq!(wrong.status, 403);
    let cross_site = s
        .send(create(vec![
            ("x-ferry-csrf", csrf.clone()),
            ("sec-fetch-site", "cross-site".into()),
        ]))
        .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text);
    let other_origin = s
        .send(create(vec![
            ("x-ferry-csrf", csrf.clone()),
            ("origin", "http://evil.example".into()),
        ]))
        .await;
    assert_eq!(other_origin.status, 403, "{}", other_origin.text);
    let made = s
        .send(create(vec![
            ("x-ferry-csrf", csrf.clone()),
            ("sec-fetch-site", "same-origin".into()),
        ]))
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    // The token revoked: its sessions end with it.
    s.store.revoke_token(&token.id).await.expect("revoke");
    let ended = s
        .send(s.request("GET", "/api/v1/repos").header("cookie", &cookie))
        .await;
    assert_eq!(ended.status, 401);
    assert!(ended.text.contains("session has ended"), "{}", ended.text);
}
