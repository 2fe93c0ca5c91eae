//! The server's outbound calls over https:// — a verification probe, a notification
//! webhook and a forge's status API — trust the system's roots plus the CA given to the
//! server (`--ca-file`): with a CA the test generates, all three get through; a receiver
//! whose certificate no trusted CA signed is refused (and retried, never sent in clear).

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_server::notify::NotifyConfig;
use ferry_testkit::server::{Options, Server, push_version, wait_for};
use serde_json::json;

/// A CA, and a certificate for 127.0.0.1 it signs, in `dir`: `ca.pem`, `cert.pem`,
/// `key.pem`.
fn pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Ferry outbound test CA");
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
}

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
    pki(&trusted);
    pki(&stranger); // its own CA, which the server does not trust
    let (port, got) = https_receiver(&trusted).await;
    let (other, refused) = https_receiver(&stranger).await;
    let s = Server::start_with(Options {
        notify: NotifyConfig {
            ca_pem: Some(std::fs::read(trusted.join("ca.pem")).expect("ca")),
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
