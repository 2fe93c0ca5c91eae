//! The server's outbound calls over https:// — a verification probe, a notification
//! webhook, a forge's status API and an e-mail over smtps:// — trust the system's roots
//! plus the CA given to the server (`--ca-file`): with a CA the test generates, all four
//! get through; a receiver whose certificate no trusted CA signed is refused (and
//! retried, never sent in clear).

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_server::notify::NotifyConfig;
use ferry_testkit::server::{Options, Server, free_port, push_version, smtp_sink, wait_for};
use serde_json::json;

/// What an HTTPS receiver got: the paths POSTed to.
type Got = Arc<Mutex<Vec<String>>>;

/// An HTTPS receiver with the certificate in `dir`: `GET /healthz` answers `ok`; every
/// POST is kept (201).
async fn https_receiver(dir: &Path) -> (u16, Got) {
    let config =
        ferry_server::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got: Got = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move |uri: axum::http::Uri| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push(uri.path().to_string());
                axum::http::StatusCode::CREATED
            }
        });
    let listener = ferry_server::tls::TlsListener::new(listener, config).expect("listener");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

#[tokio::test]
async fn probes_notifications_and_forge_calls_trust_the_given_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (trusted, stranger) = (tmp.path().join("trusted"), tmp.path().join("stranger"));
    ferry_testkit::pki(&trusted);
    ferry_testkit::pki(&stranger); // its own CA, which the server does not trust
    let (port, got) = https_receiver(&trusted).await;
    let (other, refused) = https_receiver(&stranger).await;
    // An SMTP relay speaking TLS from the start (smtps://) with the trusted CA's
    // certificate.
    let smtps_port = free_port();
    let maildir = tmp.path().join("maildir");
    let cert = trusted.join("cert.pem").display().to_string();
    let key = trusted.join("key.pem").display().to_string();
    let _sink = smtp_sink(
        &maildir,
        smtps_port,
        &["--smtpscert", &cert, "--smtpskey", &key],
    )
    .await;
    let s = Server::start_with(Options {
        notify: NotifyConfig {
            ca_pem: Some(std::fs::read(trusted.join("ca.pem")).expect("ca")),
            smtp_url: Some(format!("smtps://127.0.0.1:{smtps_port}")),
            smtp_from: Some("Ferry <ferry@example.com>".into()),
            ..NotifyConfig::default()
        },
        ..Options::default()
    })
    .await;
    let pipeline = format!(
        "jobs:
  build:
    run: mkdir -p app && printf '#!/bin/sh\\nexec sleep 600\\n' > app/run && chmod +x app/run
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox: {{ auto: true }}
deploy:
  target: {{ process: {{ command: cd app && exec ./run }} }}
  verify: {{ http: \"https://127.0.0.1:{port}/healthz\", for: 500ms, interval: 100ms }}
  watch: false
notify:
  - webhook: https://127.0.0.1:{port}/hook
    on: [deployment.live]
  - webhook: https://127.0.0.1:{other}/stranger
    on: [deployment.live]
  - email: [ops@example.com]
    on: [deployment.live]
"
    );
    let bare = s.repository("shop", Some(&pipeline));
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    let (status, body) = s
        .admin(
            "PUT",
            "/api/v1/repos/shop/commit-status",
            Some(json!({ "forge": "github", "api_url": format!("https://127.0.0.1:{port}/forge"), "project": "acme/shop", "token": "t" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = s.trigger("shop").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    // The https:// probe passed: the release is live.
    s.wait_for_live("shop", "sandbox").await;
    wait_for("the webhook and the forge over https", async || {
        let paths = got.lock().expect("lock").clone();
        let hook = paths.iter().any(|p| p == "/hook");
        let forge = paths
            .iter()
            .filter(|p| p.starts_with("/forge/repos/acme/shop/statuses/"))
            .count();
        if hook && forge >= 2 {
            Ok(())
        } else {
            Err(paths)
        }
    })
    .await;
    // The e-mail went through the SMTPS relay, verified against the given CA.
    let mail = wait_for("the e-mail over smtps://", async || {
        let new = maildir.join("new");
        let first = std::fs::read_dir(&new)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok);
        match first {
            Some(f) => Ok(std::fs::read_to_string(f.path()).expect("mail")),
            None => Err("no mail yet"),
        }
    })
    .await;
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("deployment"), "{mail}");
    // The receiver whose certificate no trusted CA signed got nothing; the attempt says
    // why, and is tried again.
    let stranger = wait_for("the refused attempt", async || {
        let log = s.get("/api/v1/repos/shop/notifications").await;
        let n = log["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| {
                n["target"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("/stranger"))
            })
            .cloned();
        match n {
            Some(n) if n["attempts"].as_array().is_some_and(|a| !a.is_empty()) => Ok(n),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(stranger["status"], "pending", "{stranger}");
    let error = stranger["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    assert!(refused.lock().expect("lock").is_empty());
    s.stop().await;
}
