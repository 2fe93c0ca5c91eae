//! Notifications, end to end, against receivers the test starts on 127.0.0.1: a JSON
//! webhook (its HMAC-SHA256 signature checked), a Slack-compatible incoming webhook, a
//! webhook that fails twice before it answers (retried, every attempt recorded), and an
//! SMTP sink (Debian's `python3-aiosmtpd`, which scripts/test.sh installs) for e-mail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_server::notify::NotifyConfig;
use ferry_testkit::server::{Options, Server, free_port, push_version, smtp_sink, wait_for};
use hmac::Mac as _;
use serde_json::Value;

/// What a receiver got: (path, headers, body).
type Got = Arc<Mutex<Vec<(String, axum::http::HeaderMap, String)>>>;

/// An HTTP receiver: every request is kept; `/flaky` answers 500 twice, then 200.
async fn receiver() -> (u16, Got) {
    let got: Got = Arc::default();
    let flaky = Arc::new(Mutex::new(0u32));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let keep = got.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let (keep, flaky) = (keep.clone(), flaky.clone());
            async move {
                let path = uri.path().to_string();
                keep.lock()
                    .expect("lock")
                    .push((path.clone(), headers, body));
                if path == "/flaky" {
                    let mut n = flaky.lock().expect("lock");
                    *n += 1;
                    if *n <= 2 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                }
                axum::http::StatusCode::OK
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

fn pipeline(port: u16) -> String {
    format!(
        "jobs:
  build:
    run: |
      test \"$(cat version)\" != broken
      mkdir -p app && printf '#!/bin/sh\\nexec sleep 600\\n' > app/run && chmod +x app/run
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox: {{ auto: true }}
  staging:
    after: sandbox
    approval: {{ required: 1 }}
deploy:
  target: {{ process: {{ command: cd app && exec ./run }} }}
  watch: false
notify:
  - webhook: {{ url: \"http://127.0.0.1:{port}/hook?key=in-the-url\", secret: HOOK_SECRET }}
  - slack: SLACK_URL
    on: [run.failed, run.fixed]
  - email: [ops@example.com, dev@example.com]
    on: [approval.waiting]
  - webhook: http://127.0.0.1:{port}/flaky
    on: [run.failed]
  - webhook: http://127.0.0.1:{port}/production-only
    environments: [production]
"
    )
}

/// The bodies a path of the receiver got, as JSON.
fn bodies(got: &Got, path: &str) -> Vec<Value> {
    got.lock()
        .expect("lock")
        .iter()
        .filter(|(p, ..)| p == path)
        .map(|(_, _, b)| serde_json::from_str(b).expect("JSON"))
        .collect()
}

#[tokio::test]
async fn events_reach_webhooks_slack_and_email_with_retries() {
    let (port, got) = receiver().await;
    let mail_dir = tempfile::tempdir().expect("tmp");
    let smtp_port = free_port();
    // A maildir it makes (the sink creates it when it does not exist).
    let maildir = mail_dir.path().join("maildir");
    let _sink = smtp_sink(&maildir, smtp_port, &[]).await;
    let s = Server::start_with(Options {
        notify: NotifyConfig {
            public_url: Some("https://ferry.example.com/".into()),
            smtp_url: Some(format!("smtp://127.0.0.1:{smtp_port}")),
            smtp_from: Some("Ferry <ferry@example.com>".into()),
            ca_pem: None,
        },
        ..Options::default()
    })
    .await;
    let bare = s.repository("shop", Some(&pipeline(port)));
    push_version(&s, "shop", "broken");
    s.register("shop", &bare).await;
    let hook_secret = "hmac-key-5b1e";
    let slack_url = format!("http://127.0.0.1:{port}/slack");
    s.set_secret("shop", "HOOK_SECRET", hook_secret, None).await;
    s.set_secret("shop", "SLACK_URL", &slack_url, None).await;

    // A failed run: the webhook (signed), Slack, and the flaky webhook hear of it.
    let failed = s.trigger("shop").await;
    assert_eq!(s.finished(&failed).await["run"]["status"], "failed");
    let hook = wait_for("the webhook told of run.failed", async || {
        match bodies(&got, "/hook")
            .into_iter()
            .find(|b| b["event"] == "run.failed")
        {
            Some(b) => Ok(b),
            None => Err(bodies(&got, "/hook")),
        }
    })
    .await;
    assert_eq!(hook["repository"], "shop");
    assert_eq!(
        hook["url"],
        format!("https://ferry.example.com/api/v1/runs/{failed}")
    );
    let summary = hook["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("shop: run #1 failed on refs/heads/main (")
            && summary.ends_with(": build"),
        "{summary}"
    );
    assert_eq!(hook["facts"]["failed_jobs"], serde_json::json!(["build"]));
    {
        let all = got.lock().expect("lock");
        let (_, headers, body) = all
            .iter()
            .find(|(p, _, b)| p == "/hook" && b.contains("run.failed"))
            .expect("the request");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-ferry-event"], "run.failed");
        assert!(headers.contains_key("x-ferry-delivery"));
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(hook_secret.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-ferry-signature-256"], want.as_str());
    }
    let slack = wait_for("Slack told of run.failed", async || {
        match bodies(&got, "/slack").first() {
            Some(b) => Ok(b.clone()),
            None => Err("nothing yet"),
        }
    })
    .await;
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.starts_with("shop: run #1 failed on refs/heads/main")
            && text.ends_with(&format!(
                "<https://ferry.example.com/api/v1/runs/{failed}|details>"
            )),
        "{text}"
    );

    // The flaky webhook: 500, 500, then 200 — three attempts, each recorded.
    let log = wait_for("the flaky webhook delivered", async || {
        let log = s.get("/api/v1/repos/shop/notifications").await;
        let flaky = log["notifications"]
            .as_array()
            .expect("list")
            .iter()
            .find(|n| n["target"] == format!("webhook http://127.0.0.1:{port}/flaky"))
            .cloned();
        match flaky {
            Some(n) if n["status"] == "delivered" => Ok(n),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(log["attempts"].as_array().map(Vec::len), Some(3), "{log}");
    // What the CLI reads: the answer as the typed list (each key once).
    let answer = s
        .send(
            s.request("GET", "/api/v1/repos/shop/notifications")
                .bearer_auth(&s.admin),
        )
        .await;
    let typed: ferry_server::api::delivery::NotificationList =
        serde_json::from_str(&answer.text).expect("the CLI reads the answer");
    assert!(
        typed
            .notifications
            .iter()
            .any(|n| n.attempts.len() == 3 && n.notification.attempts == 3)
    );
    let details: Vec<&str> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["detail"].as_str())
        .collect();
    assert_eq!(details, ["HTTP 500", "HTTP 500", "HTTP 200"]);

    // Fixed: Slack hears of it; the release goes live in sandbox and waits for
    // approval in staging, which is e-mailed with the change preview's summary.
    push_version(&s, "shop", "v1");
    let fixed = s.trigger("shop").await;
    assert_eq!(s.finished(&fixed).await["run"]["status"], "success");
    wait_for("Slack told of run.fixed", async || {
        let texts: Vec<String> = bodies(&got, "/slack")
            .iter()
            .filter_map(|b| b["text"].as_str().map(str::to_string))
            .collect();
        if texts
            .iter()
            .any(|t| t.starts_with("shop: run #2 passed on refs/heads/main again"))
        {
            Ok(())
        } else {
            Err(texts)
        }
    })
    .await;
    let mail = wait_for("the approval e-mail", async || {
        let new = maildir.join("new");
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        match files.first() {
            Some(f) => Ok(std::fs::read_to_string(f).expect("mail")),
            None => {
                let log = s.get("/api/v1/repos/shop/notifications?limit=100").await;
                let email: Vec<Value> = log["notifications"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["target"].as_str().is_some_and(|t| t.starts_with("email")))
                    .cloned()
                    .collect();
                Err(email)
            }
        }
    })
    .await;
    // Folded headers unfolded, quoted-printable soft breaks joined.
    let mail = mail
        .replace("\n ", " ")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(mail.contains("From: Ferry <ferry@example.com>"), "{mail}");
    assert!(
        mail.contains("X-RcptTo: ops@example.com, dev@example.com"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: [ferry] shop: staging#1 (release ")
            && mail.contains("waits for approval: first release in the environment"),
        "{mail}"
    );
    assert!(
        mail.contains("https://ferry.example.com/api/v1/repos/shop/deployments/staging.1"),
        "{mail}"
    );
    let events: Vec<String> = wait_for("the webhook told of deployment.live", async || {
        let events: Vec<String> = bodies(&got, "/hook")
            .iter()
            .filter_map(|b| b["event"].as_str().map(str::to_string))
            .collect();
        if events.iter().any(|e| e == "deployment.live")
            && events.iter().any(|e| e == "approval.waiting")
        {
            Ok(events)
        } else {
            Err(events)
        }
    })
    .await;
    assert!(events.contains(&"run.fixed".to_string()), "{events:?}");
    // A channel for production only heard nothing; no answer holds a secret.
    assert!(bodies(&got, "/production-only").is_empty());
    let log = s
        .get("/api/v1/repos/shop/notifications?limit=100")
        .await
        .to_string();
    for secret in [hook_secret, slack_url.as_str(), "in-the-url"] {
        assert!(!log.contains(secret), "{secret} in {log}");
    }
    s.stop().await;
}

/// A channel that is down does not hold anything up; it is tried again until it
/// answers, and a channel that can never work (no such secret) is given up at once.
#[tokio::test]
async fn a_channel_that_is_down_gets_it_later_and_a_broken_one_is_given_up() {
    let port = free_port();
    let s = Server::start().await;
    let pipeline = format!(
        "jobs:\n  build:\n    run: 'false'\nnotify:\n  - webhook: http://127.0.0.1:{port}/late\n  - slack: NO_SUCH_SECRET\n"
    );
    let bare = s.repository("app", Some(&pipeline));
    s.register("app", &bare).await;
    let run = s.trigger("app").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "failed");
    let first = wait_for("two attempts at the missing receiver", async || {
        let log = s.get("/api/v1/repos/app/notifications").await;
        let list = log["notifications"].as_array().cloned().unwrap_or_default();
        let late = list
            .iter()
            .find(|n| n["target"].as_str().is_some_and(|t| t.ends_with("/late")));
        match late {
            Some(n) if n["attempts"].as_array().is_some_and(|a| a.len() >= 2) => Ok(list),
            _ => Err(list),
        }
    })
    .await;
    let slack = first
        .iter()
        .find(|n| n["target"] == "slack (secret NO_SUCH_SECRET)")
        .expect("slack");
    assert_eq!(slack["status"], "failed", "{slack}");
    assert_eq!(
        slack["last_error"],
        "the repository has no secret NO_SUCH_SECRET"
    );
    // The receiver comes up: the next attempt gets through.
    let (_, got) = {
        let got: Got = Arc::default();
        let keep = got.clone();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver's port");
        let app = axum::Router::new().fallback(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock()
                    .expect("lock")
                    .push(("/late".into(), Default::default(), body));
                axum::http::StatusCode::NO_CONTENT
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, got)
    };
    wait_for("the late receiver got it", async || {
        if got.lock().expect("lock").is_empty() {
            Err("nothing yet")
        } else {
            Ok(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = s.get("/api/v1/repos/app/notifications").await;
    let late = log["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .find(|n| n["target"].as_str().is_some_and(|t| t.ends_with("/late")))
        .cloned()
        .expect("late");
    assert_eq!(late["status"], "delivered", "{late}");
    assert_eq!(
        late["attempts"]
            .as_array()
            .and_then(|a| a.last())
            .map(|a| a["detail"].clone()),
        Some(Value::from("HTTP 204"))
    );
    s.stop().await;
}
