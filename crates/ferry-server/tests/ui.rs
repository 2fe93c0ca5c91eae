//! The web UI on the server's side: signing in and out, every page's status for each
//! role, its headers, escaping of user text, changes through forms (CSRF, roles, the
//! API's rules), and logs built for size. (The browser tests are in `browser.rs`.)

use ferry_testkit::server::{Server, http, shop_with_v1};
use serde_json::json;

/// Whether `html` holds `text` escaped (askama writes `&#60;`, the log view `&lt;`).
fn holds_escaped(html: &str, text: &str) -> bool {
    let named = text.replace('<', "&lt;").replace('>', "&gt;");
    let numeric = text.replace('<', "&#60;").replace('>', "&#62;");
    html.contains(&named) || html.contains(&numeric)
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[tokio::test]
async fn signing_in_makes_a_strict_session_cookie_and_signing_out_ends_it() {
    let s = Server::start().await;
    let base = s.client().base().to_string();
    let http = http();
    // Not signed in: to the sign-in page, and back afterwards.
    let home = http
        .get(format!("{base}/ui/repos/x?a=1"))
        .send()
        .await
        .expect("get");
    assert_eq!(home.status(), 303);
    assert_eq!(
        home.headers()["location"],
        "/ui/sign-in?next=%2Fui%2Frepos%2Fx%3Fa%3D1"
    );
    let page = http
        .get(format!("{base}/ui/sign-in?next=/x"))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-security-policy"], CSP);
    let sign_in = |token: &str, site: &str, next: &str| {
        http.post(format!("{base}/ui/sign-in"))
            .header("sec-fetch-site", site)
            .form(&[("token", token.to_string()), ("next", next.to_string())])
            .send()
    };
    let wrong = sign_in("not-a-token", "same-origin", "/")
        .await
        .expect("post");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.expect("text").contains("not valid"));
    // A sign-in forced from another site would sign the victim in as the attacker.
    let forced = sign_in(&s.admin, "cross-site", "/").await.expect("post");
    assert_eq!(forced.status(), 403);
    assert!(forced.headers().get("set-cookie").is_none());
    // `next` stays on this site.
    for evil in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let r = sign_in(&s.admin, "same-origin", evil).await.expect("post");
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/", "{evil}");
    }
    let ok = sign_in(&s.admin, "same-origin", "/ui/account")
        .await
        .expect("post");
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/ui/account");
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    assert!(!cookie.contains(&s.admin), "the token is not the cookie");

    let web = s.web(&s.admin).await;
    let account = web.get("/ui/account").await;
    assert_eq!(account.status, 200, "{}", account.text);
    assert!(account.text.contains("(this one)"), "{}", account.text);
    // Sign-out needs the CSRF token.
    let no_csrf = web.post("/ui/sign-out", &[]).await;
    assert_eq!(no_csrf.status, 403);
    assert_eq!(web.get("/").await.status, 200, "still signed in");
    let out = web.post("/ui/sign-out", &[("csrf", &web.csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let after = web.get("/").await;
    assert_eq!(after.status, 303, "the session has ended");
    assert!(after.location().starts_with("/ui/sign-in"));
    // And so has the API's answer to its cookie.
    let api = http
        .get(format!("{base}/api/v1/repos"))
        .header("cookie", &web.cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(api.status(), 401);
}

#[tokio::test]
async fn a_session_ends_with_its_token_and_can_be_ended_from_the_account_page() {
    let s = Server::start().await;
    let token = s.user("dora", "developer").await;
    let web = s.web(&token).await;
    let other = s.web(&token).await;
    let (_, sessions) = s.call("GET", "/api/v1/sessions", Some(&token), None).await;
    let list = sessions["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 2, "{sessions}");
    assert!(list.iter().all(|x| x.get("hash").is_none()), "{sessions}");
    // End the other session from this one's account page.
    let page = web.get("/ui/account").await;
    let theirs = list
        .iter()
        .map(|x| x["id"].as_str().expect("id"))
        .find(|id| {
            // The current one is marked; the form of the other names it.
            page.text.contains(&format!("/api/v1/sessions/{id}\""))
        })
        .expect("a session's end button");
    let ended = web
        .act("DELETE", &format!("/api/v1/sessions/{theirs}"), &[])
        .await;
    assert_eq!(ended.status, 303, "{}", ended.text);
    let alive = [web.get("/").await.status, other.get("/").await.status];
    assert!(alive.contains(&200) && alive.contains(&303), "{alive:?}");
    // Revoking the token ends every session made from it.
    let (_, tokens) = s.call("GET", "/api/v1/tokens", Some(&token), None).await;
    let id = tokens["tokens"][0]["id"].as_str().expect("id").to_string();
    let (status, _) = s
        .admin("DELETE", &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(web.get("/").await.status, 303);
}

/// Every page of a repository with a release live and one waiting, for each role.
#[tokio::test]
async fn every_page_answers_each_role_with_strict_headers_and_only_the_buttons_it_may_use() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let run = s.runs_of("shop").await.remove(0);
    let (_, detail) = s
        .admin("GET", &format!("/api/v1/runs/{}", run.id), None)
        .await;
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    let release = s.releases_of("shop", 1).await[0]["name"]
        .as_str()
        .expect("release")
        .to_string();
    let pages = [
        "/".to_string(),
        "/ui/repos/shop".into(),
        "/ui/repos/shop/environments".into(),
        "/ui/repos/shop/deployments".into(),
        "/ui/repos/shop/deployments/production%231".into(),
        "/ui/repos/shop/releases".into(),
        format!("/ui/repos/shop/releases/{release}"),
        "/ui/repos/shop/audit".into(),
        "/ui/repos/shop/settings".into(),
        format!("/ui/runs/{}", run.id),
        format!("/ui/runs/{}/jobs/{job}", run.id),
        format!("/ui/runs/{}/jobs/{job}/lines?before=100", run.id),
        format!("/ui/runs/{}/jobs/{job}?line=1", run.id),
        format!("/ui/runs/{}/jobs/{job}?q=mkdir", run.id),
        "/ui/account".into(),
        "/ui/users".into(),
    ];
    for (name, role) in [
        ("vic", "viewer"),
        ("dev", "developer"),
        ("apu", "approver"),
        ("adm", "admin"),
    ] {
        let token = s.user(name, role).await;
        let web = s.web(&token).await;
        for path in &pages {
            let page = web.get(path).await;
            let refused = (path.ends_with("/settings") && role == "viewer")
                || (path == "/ui/users" && role != "admin");
            let want = if refused { 403 } else { 200 };
            assert_eq!(page.status, want, "{role} {path}: {}", page.text);
            assert_eq!(page.headers["content-security-policy"], CSP, "{path}");
            assert_eq!(page.headers["x-content-type-options"], "nosniff");
            assert_eq!(page.headers["x-frame-options"], "DENY");
            assert_eq!(page.headers["cache-control"], "no-store");
            assert!(
                page.headers["content-type"]
                    .to_str()
                    .expect("ascii")
                    .starts_with("text/html"),
                "{path}"
            );
            if !path.contains("/lines") {
                assert!(!page.text.contains(" style=\""), "{path}: an inline style");
                assert!(!page.text.contains("<script>"), "{path}: an inline script");
            }
        }
        // Buttons: a viewer has none but signing out; approving is for approvers.
        let board = web.get("/ui/repos/shop/environments").await.text;
        let forms = board.matches("action=\"/ui/act\"").count();
        match role {
            "viewer" => assert_eq!(forms, 0, "{board}"),
            "developer" => {
                assert!(board.contains("Promote to production"), "{board}");
                assert!(!board.contains(">Approve<"), "{board}");
            }
            _ => assert!(board.contains(">Approve<"), "{role}: {board}"),
        }
        let run_page = web.get(&format!("/ui/runs/{}", run.id)).await.text;
        assert_eq!(run_page.contains("Run again"), role != "viewer", "{role}");
    }
    // The board shows what production waits for, with the change preview.
    let web = s.web(&s.admin).await;
    let board = web.get("/ui/repos/shop/environments").await.text;
    for want in [
        "production#1",
        "awaiting approval",
        "first release in the environment",
    ] {
        assert!(board.contains(want), "{want}: {board}");
    }
    // Assets: by their hashed names, kept for a year.
    let css = board
        .split("href=\"")
        .find_map(|rest| rest.split('"').next().filter(|h| h.ends_with(".css")))
        .expect("a stylesheet")
        .to_string();
    let base = s.client().base().to_string();
    let asset = http()
        .get(format!("{base}{css}"))
        .send()
        .await
        .expect("get");
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/css")
    );
    let missing = http()
        .get(format!("{base}/ui/assets/app.css"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404, "only hashed names are served");
}

#[tokio::test]
async fn public_reads_show_pages_without_a_session_but_no_forms() {
    let s = Server::start_with(ferry_testkit::server::Options {
        public_reads: true,
        ..Default::default()
    })
    .await;
    s.add_repository("open", "jobs:\n  a:\n    run: echo hi\n")
        .await;
    let run_id = s.trigger("open").await;
    s.finished(&run_id).await;
    let base = s.client().base().to_string();
    for path in ["/", "/ui/repos/open", &format!("/ui/runs/{run_id}")] {
        let page = http()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(page.status(), 200, "{path}");
        let text = page.text().await.expect("text");
        assert!(!text.contains("action=\"/ui/act\""), "{path}: {text}");
        assert!(text.contains("Sign in"), "{path}");
    }
    let settings = http()
        .get(format!("{base}/ui/repos/open/settings"))
        .send()
        .await
        .expect("get");
    assert_eq!(settings.status(), 403);
}

#[tokio::test]
async fn user_text_is_escaped_on_every_page() {
    let s = Server::start().await;
    const XSS: &str = "<script>alert(1)</script>";
    // In a log, a step's name and a job's name (a matrix value is part of it).
    let pipeline = format!(
        "jobs:\n  build:\n    matrix:\n      who: ['{XSS}']\n    steps:\n      - name: '{XSS} step'\n        run: |\n          echo '{XSS}'\n          printf '\\033[31m<b>red</b>\\033[0m\\n'\n          exit 3\n"
    );
    let bare = s.repository("xss", Some(&pipeline));
    s.push_file("xss", "notes", "x", &format!("{XSS} in a commit message"));
    s.register("xss", &bare).await;
    s.set_variable("xss", "GREETING", XSS, None).await;
    let run_id = s.trigger("xss").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "failed");
    let (_, detail) = s
        .admin("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    let web = s.web(&s.admin).await;
    let (status, _) = s
        .admin("POST", "/api/v1/tokens", Some(json!({ "name": XSS })))
        .await;
    assert_eq!(status, 201);
    for path in [
        "/".to_string(),
        "/ui/repos/xss".into(),
        format!("/ui/runs/{run_id}"),
        format!("/ui/runs/{run_id}/jobs/{job}"),
        format!("/ui/runs/{run_id}/jobs/{job}?q=script"),
        format!("/ui/runs/{run_id}/jobs/{job}/lines?from=0"),
        "/ui/repos/xss/settings".into(),
        "/ui/account".into(),
        format!(
            "/ui/sign-in?next={}",
            "%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
        ),
    ] {
        let page = web.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert!(
            !page.text.contains("<script>alert"),
            "{path}: {}",
            page.text
        );
        assert!(!page.text.contains("<b>red"), "{path}");
    }
    let log = web.get(&format!("/ui/runs/{run_id}/jobs/{job}")).await.text;
    assert!(holds_escaped(&log, XSS), "{log}");
    assert!(
        log.contains("<span class=\"fg1\">&lt;b&gt;red&lt;/b&gt;</span>"),
        "{log}"
    );
    let run = web.get(&format!("/ui/runs/{run_id}")).await.text;
    assert!(
        holds_escaped(&run, &format!("{XSS} in a commit message")),
        "{run}"
    );
}

#[tokio::test]
async fn forms_change_things_through_the_api_with_its_rules_and_only_with_the_csrf_token() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let approver = s.user("ann", "approver").await;
    let viewer = s.user("vic", "viewer").await;
    let path = "/api/v1/repos/shop/deployments/production%231/approve";

    // The author (the admin triggered the run) may not approve: the API's rule.
    let author = s.web(&s.admin).await;
    let refused = author.act("POST", path, &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("author"), "{}", refused.text);

    let web = s.web(&approver).await;
    // Without the CSRF token, from another site, or to a path outside the API: no.
    let mut no_csrf = vec![("method", "POST"), ("path", path), ("back", "/")];
    assert_eq!(web.post("/ui/act", &no_csrf).await.status, 403);
    no_csrf.push(("csrf", &web.csrf));
    let cross = web.post_from("/ui/act", &no_csrf, "cross-site").await;
    assert_eq!(cross.status, 403);
    let other = web.act("POST", "/ui/sign-out", &[]).await;
    assert_eq!(other.status, 422, "{}", other.text);
    let sneaky = web.act("POST", "/api/v1/../ui/sign-out", &[]).await;
    assert_eq!(sneaky.status, 422);
    // A viewer's form is refused by the API's role check.
    let vic = s.web(&viewer).await;
    assert_eq!(vic.act("POST", path, &[]).await.status, 403);

    // The approver's approval, with a comment: the API's answer, the audit log.
    let done = web
        .act("POST", path, &[("o:comment", "ship it <b>now</b>")])
        .await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(done.location(), "/");
    s.wait_for_live("shop", "production").await;
    let audit = web.get("/ui/repos/shop/audit").await.text;
    assert!(audit.contains("deployment.approve"), "{audit}");
    let page = web
        .get("/ui/repos/shop/deployments/production%231")
        .await
        .text;
    assert!(holds_escaped(&page, "ship it <b>now</b>"), "{page}");

    // A variable through the settings form (`{name}` in the path).
    let admin = s.web(&s.admin).await;
    let set = admin
        .act(
            "PUT",
            "/api/v1/repos/shop/variables/{name}",
            &[
                ("p:name", "COLOUR"),
                ("s:value", "teal"),
                ("o:environment", ""),
            ],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.text);
    let settings = admin.get("/ui/repos/shop/settings").await.text;
    assert!(
        settings.contains("COLOUR") && settings.contains("teal"),
        "{settings}"
    );
    // A session alone cannot mint a token: one of the user's tokens is asked again.
    let bare = admin
        .act(
            "POST",
            "/api/v1/tokens",
            &[("s:name", "stolen"), ("reveal", "secret")],
        )
        .await;
    assert_eq!(bare.status, 403, "{}", bare.text);
    assert!(bare.text.contains("tokens again"), "{}", bare.text);
    let other = admin
        .act(
            "POST",
            "/api/v1/tokens",
            &[
                ("s:name", "x"),
                ("o:confirm", approver.as_str()),
                ("reveal", "secret"),
            ],
        )
        .await;
    assert_eq!(other.status, 403, "another user's token confirms nothing");
    // A new token's secret is shown once, on the page the form leads to.
    let made = admin
        .act(
            "POST",
            "/api/v1/tokens",
            &[
                ("s:name", "laptop"),
                ("o:confirm", s.admin.as_str()),
                ("reveal", "secret"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let secret = made
        .text
        .split("<code id=\"secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the secret")
        .to_string();
    let (status, _) = s.call("GET", "/api/v1/repos", Some(&secret), None).await;
    assert_eq!(status, 200);
    // A bad value is the API's error, on a page.
    let bad = admin
        .act(
            "PUT",
            "/api/v1/repos/shop/variables/{name}",
            &[("p:name", "1-bad"), ("s:value", "x")],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

#[tokio::test]
async fn a_big_log_opens_at_its_end_pages_back_finds_lines_and_downloads_whole() {
    let s = Server::start().await;
    s.add_repository(
        "big",
        "jobs:\n  spew:\n    run: seq 1 300000 | sed 's/^/line /'\n",
    )
    .await;
    let run_id = s.trigger("big").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let (_, detail) = s
        .admin("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    let web = s.web(&s.admin).await;
    let base = format!("/ui/runs/{run_id}/jobs/{job}");
    let page = web.get(&base).await;
    assert_eq!(page.status, 200);
    // The end, numbered right, and no more than a window.
    let lines = page.text.matches(" id=\"L").count();
    assert!(lines <= 1000, "{lines} lines in the page");
    assert!(page.text.contains("id=\"L300000\""), "the last line");
    assert!(page.text.contains(">line 300000<"), "its text");
    assert!(
        page.text.contains("id=\"L299001\""),
        "the window's first line"
    );
    assert!(!page.text.contains("id=\"L299000\""));
    assert!(page.text.len() < 400 << 10, "{} bytes", page.text.len());
    // Never a silent cut: what is not shown is said, with a way to it.
    assert!(page.text.contains("Lines 1–299000"), "the cut is said");
    let start = ferry_testkit::server::input_value(
        &page.text.replace("data-start=", "name=\"start\" value="),
        "start",
    );
    let start = start.expect("data-start");
    let earlier = web.get(&format!("{base}/lines?before={start}")).await;
    assert_eq!(earlier.status, 200);
    assert!(earlier.text.contains("id=\"L299000\"") && earlier.text.contains("id=\"L298001\""));
    assert!(!earlier.text.contains("id=\"L299001\""));
    let next_start: u64 = earlier.headers["x-ferry-log-start"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!(next_start < start.parse::<u64>().expect("number"));
    // A line by its number (a permanent link), from the index.
    let first = web.get(&format!("{base}?line=1")).await.text;
    assert!(first.contains("id=\"L1\"") && first.contains(">line 1<"));
    let middle = web.get(&format!("{base}?line=123456")).await.text;
    assert!(
        middle.contains("class=\"l hit\" id=\"L123456\""),
        "the line is marked"
    );
    assert!(middle.contains(">line 123456<"));
    // Search reads the whole log on the server.
    let found = web.get(&format!("{base}?q=LINE%204242")).await.text;
    assert!(
        found.contains("?line=4242#L4242"),
        "{}",
        &found[..2000.min(found.len())]
    );
    assert!(found.contains("?line=42420#L42420"));
    // Times on demand.
    let timed = web.get(&format!("{base}?ts=1")).await.text;
    assert!(timed.contains("<span class=\"t\">"), "times shown");
    assert!(
        !page.text.contains("<span class=\"t\">"),
        "not unless asked"
    );
    // The whole log, as written.
    let raw = web.get(&format!("{base}/raw")).await;
    assert_eq!(raw.status, 200);
    assert!(
        raw.headers["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("attachment")
    );
    let whole: String = (1..=300_000).map(|i| format!("line {i}\n")).collect();
    assert!(raw.text == whole, "the download is not the log as written");
}

#[tokio::test]
async fn pages_of_things_that_do_not_exist_say_so() {
    let s = Server::start().await;
    let web = s.web(&s.admin).await;
    for path in [
        "/ui/repos/nope",
        "/ui/repos/nope/environments",
        "/ui/runs/nope",
        "/ui/runs/nope/jobs/x",
        "/ui/repos/nope/releases/r1",
    ] {
        let page = web.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(page.text.contains("not found"), "{path}: {}", page.text);
        assert_eq!(page.headers["content-security-policy"], CSP);
    }
}

#[tokio::test]
async fn a_proxys_basic_credentials_links_from_other_sites_and_https_keep_the_session_working() {
    let s = Server::start_with(ferry_testkit::server::Options {
        notify: ferry_server::notify::NotifyConfig {
            public_url: Some("https://ferry.example".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let base = s.client().base().to_string();
    // Behind an HTTPS proxy: a `__Host-` cookie, `Secure`.
    let signed = http()
        .post(format!("{base}/ui/sign-in"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", s.admin.as_str()), ("next", "/")])
        .send()
        .await
        .expect("post");
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cookie.starts_with("__Host-ferry_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let pair = cookie.split(';').next().expect("pair").to_string();
    // A proxy's Basic credentials are not Ferry's: the session still counts.
    let page = http()
        .get(format!("{base}/"))
        .header("cookie", &pair)
        .header("authorization", "Basic cHJveHk6cHc=")
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), 200);
    // Webhook addresses are the public ones.
    let web = s.web(&s.admin).await;
    assert!(web.cookie.starts_with("__Host-ferry_session="));
    s.add_repository("app", "jobs:\n  a:\n    run: 'true'\n")
        .await;
    let settings = web.get("/ui/repos/app/settings").await.text;
    assert!(
        settings.contains("https://ferry.example/api/v1/hooks/github/app"),
        "{settings}"
    );
    // A link followed from another site comes without the cookie: the page asks for
    // itself again from this site rather than sending the user to sign in.
    let followed = http()
        .get(format!("{base}/ui/repos/app"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(followed.status(), 200);
    let text = followed.text().await.expect("text");
    assert!(
        text.contains("http-equiv=\"refresh\" content=\"0;url=/ui/repos/app\""),
        "{text}"
    );
    let again = http()
        .get(format!("{base}/ui/repos/app"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("get");
    assert_eq!(
        again.status(),
        303,
        "no session at all: to the sign-in page"
    );
}

#[tokio::test]
async fn the_webhook_secret_is_shown_only_when_an_admin_asks_and_is_audited() {
    let s = Server::start().await;
    let bare = s.repository("hooked", Some("jobs:\n  a:\n    run: 'true'\n"));
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": "s3cret-hook" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let admin = s.web(&s.admin).await;
    let page = admin.get("/ui/repos/hooked/settings").await.text;
    assert!(
        !page.contains("s3cret-hook"),
        "a page that is read never holds it"
    );
    let no_csrf = admin.post("/ui/repos/hooked/webhook-secret", &[]).await;
    assert_eq!(no_csrf.status, 403);
    let shown = admin
        .post("/ui/repos/hooked/webhook-secret", &[("csrf", &admin.csrf)])
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(shown.text.contains("s3cret-hook"));
    let dev = s.user("dev", "developer").await;
    let dev = s.web(&dev).await;
    let refused = dev
        .post("/ui/repos/hooked/webhook-secret", &[("csrf", &dev.csrf)])
        .await;
    assert_eq!(refused.status, 403);
    assert!(!refused.text.contains("s3cret-hook"));
    let audit = admin.get("/ui/repos/hooked/audit").await.text;
    assert!(audit.contains("repository.webhook_secret.shown"), "{audit}");
    // A form's path takes only `p:` fields: the CSRF token is never put in one.
    let sneaky = admin
        .act(
            "PUT",
            "/api/v1/repos/hooked/variables/{csrf}",
            &[("s:value", "x")],
        )
        .await;
    assert_eq!(sneaky.status, 422);
    assert!(!sneaky.text.contains(&admin.csrf));
    let dots = admin.act("POST", "/api/v1/%2e%2e/ui/sign-out", &[]).await;
    assert_eq!(dots.status, 422);
}

#[tokio::test]
async fn a_log_of_few_long_lines_is_read_a_window_at_a_time_and_every_cut_is_said() {
    let s = Server::start().await;
    // Two lines of 3 MB each: a window holds part of the last one.
    s.add_repository(
        "wide",
        "jobs:\n  wide:\n    run: |\n      head -c 3000000 /dev/zero | tr '\\0' a; echo\n      head -c 3000000 /dev/zero | tr '\\0' b; echo\n",
    )
    .await;
    let run_id = s.trigger("wide").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let (_, detail) = s
        .admin("GET", &format!("/api/v1/runs/{run_id}"), None)
        .await;
    let job = detail["jobs"][0]["id"].as_str().expect("job").to_string();
    let web = s.web(&s.admin).await;
    let base = format!("/ui/runs/{run_id}/jobs/{job}");
    let page = web.get(&base).await;
    assert_eq!(page.status, 200);
    assert!(page.text.len() < 700 << 10, "{} bytes", page.text.len());
    assert!(
        page.text.contains("this line started earlier"),
        "the cut is said"
    );
    assert!(page.text.contains("id=\"L2\""));
    // Past the end: the last lines, not an empty window.
    let past = web.get(&format!("{base}?from=999999999")).await.text;
    assert!(past.contains("id=\"L2\""), "the end");
    assert!(!past.contains("Lines 1–0"));
    let beyond = web.get(&format!("{base}?line=99")).await.text;
    assert!(beyond.contains("id=\"L2\""));
    // A search needs two characters.
    let short = web.get(&format!("{base}?q=a")).await.text;
    assert!(short.contains("at least two characters"));
    // The API's tail reads at most its limit back, too.
    let tail = s
        .send(
            s.request(
                "GET",
                &format!("/api/v1/runs/{run_id}/jobs/wide/log?tail=10&limit=1000"),
            )
            .bearer_auth(&s.admin),
        )
        .await;
    assert_eq!(tail.status, 200);
    assert!(tail.text.len() <= 1000);
    assert!(tail.text.ends_with("bbb\n"), "the end of the log");
}
