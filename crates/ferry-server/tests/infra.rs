//! Terraform's `http` state backend served by Ferry, driven by the real `terraform`
//! (the built-in `terraform_data` resource: no provider is downloaded).

use std::path::Path;

use ferry_testkit::server::Server;

/// The `terraform` binary, or `None` when the tests are told to skip it.
fn terraform() -> Option<String> {
    match std::env::var("FERRY_TEST_TERRAFORM") {
        Ok(t) => Some(t),
        Err(_) => {
            assert!(
                std::env::var_os("FERRY_SKIP_TERRAFORM").is_some(),
                "set FERRY_TEST_TERRAFORM (scripts/test.sh) or FERRY_SKIP_TERRAFORM=1"
            );
            None
        }
    }
}

fn module(dir: &Path, address: &str) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("main.tf"),
        format!(
            r#"terraform {{
  backend "http" {{
    address        = "{address}"
    lock_address   = "{address}"
    unlock_address = "{address}"
    username       = "ferry"
  }}
}}
variable "name" {{ type = string }}
resource "terraform_data" "app" {{ input = var.name }}
output "url" {{ value = "http://127.0.0.1/${{terraform_data.app.output}}" }}
"#
        ),
    )
    .expect("main.tf");
}

async fn tf(bin: &str, dir: &Path, password: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("TF_HTTP_PASSWORD", password)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .env("HOME", dir)
        .output()
        .await
        .expect("terraform");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn terraform_keeps_its_state_in_ferry_sealed_versioned_and_locked() {
    let Some(bin) = terraform() else {
        return;
    };
    let s = Server::start().await;
    s.add_repository("infra", "jobs:\n  a:\n    run: 'true'\n")
        .await;
    let repo = s.store.repository("infra").await.expect("repo");
    let grant = |env: &str| ferry_store::InfraGrant {
        repository_id: repo.id.clone(),
        environment: env.into(),
        deployment_id: None,
    };
    let later = ferry_store::now_ms() + 600_000;
    for (env, pw) in [("sandbox", "pw-sandbox"), ("production", "pw-production")] {
        s.store
            .create_infra_credential(&ferry_server::auth::hash_token(pw), &grant(env), later)
            .await
            .expect("credential");
    }
    let address = format!("{}/api/v1/infra/infra/sandbox/state", s.client().base());
    let dir = s.dir().join("module");
    module(&dir, &address);
    let (ok, out) = tf(
        &bin,
        &dir,
        "pw-sandbox",
        &["init", "-input=false", "-no-color"],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = tf(
        &bin,
        &dir,
        "pw-sandbox",
        &[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var",
            "name=one",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("url = \"http://127.0.0.1/one\""), "{out}");

    // Kept by Ferry, sealed: the store holds no plain state.
    let versions = s
        .store
        .infra_versions(&repo.id, "sandbox")
        .await
        .expect("versions");
    assert!(!versions.is_empty());
    let latest = s
        .store
        .infra_state(&repo.id, "sandbox", None)
        .await
        .expect("state")
        .expect("a state");
    assert!(!latest.sealed.contains("terraform_data"), "sealed");
    let key = ferry_store::SecretKey::load_or_create(&s.dir().join("data")).expect("key");
    let plain = key.open(&latest.sealed, "infra-state").expect("opens");
    let state: serde_json::Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(state["outputs"]["url"]["value"], "http://127.0.0.1/one");
    assert_eq!(latest.info.serial, state["serial"].as_i64());

    // Someone else holds the lock: Terraform is refused, and goes on once it is let go.
    s.store
        .lock_infra(
            &repo.id,
            "sandbox",
            "someone-else",
            r#"{"ID":"someone-else","Who":"x"}"#,
        )
        .await
        .expect("lock");
    let apply_two = [
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-lock-timeout=0s",
        "-var",
        "name=two",
    ];
    let (ok, out) = tf(&bin, &dir, "pw-sandbox", &apply_two).await;
    assert!(
        !ok && out.contains("Error acquiring the state lock"),
        "{out}"
    );
    s.store
        .unlock_infra(&repo.id, "sandbox", None)
        .await
        .expect("unlock");
    let (ok, out) = tf(&bin, &dir, "pw-sandbox", &apply_two).await;
    assert!(ok, "{out}");
    let after = s
        .store
        .infra_versions(&repo.id, "sandbox")
        .await
        .expect("versions");
    assert!(after.len() > versions.len(), "every version is kept");
    assert!(
        s.store
            .infra_lock(&repo.id, "sandbox")
            .await
            .expect("lock")
            .is_none(),
        "Terraform let go of its lock"
    );

    // Listed through the API (developers: versions; admins: the content, audited).
    let (status, list) = s
        .admin(
            "GET",
            "/api/v1/repos/infra/environments/sandbox/infra/states",
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["versions"].as_array().map(Vec::len), Some(after.len()));
    let (status, latest) = s
        .admin(
            "GET",
            "/api/v1/repos/infra/environments/sandbox/infra/states/latest",
            None,
        )
        .await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["outputs"]["url"]["value"], "http://127.0.0.1/two");
    let (status, one) = s
        .admin(
            "GET",
            "/api/v1/repos/infra/environments/sandbox/infra/states/1",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(one["serial"].as_i64().is_some());
    let dev = s.user("dev", "developer").await;
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/repos/infra/environments/sandbox/infra/states",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            "GET",
            "/api/v1/repos/infra/environments/sandbox/infra/states/latest",
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(status, 403, "a state holds secrets: admins only");
    let (_, audit) = s.admin("GET", "/api/v1/repos/infra/audit", None).await;
    assert!(audit.to_string().contains("infra.state.read"), "{audit}");

    // A wrong password, or another environment's credential: refused.
    let (ok, out) = tf(&bin, &dir, "wrong", &["plan", "-input=false", "-no-color"]).await;
    assert!(!ok && out.contains("requires auth"), "{out}");
    let (ok, out) = tf(
        &bin,
        &dir,
        "pw-production",
        &["plan", "-input=false", "-no-color"],
    )
    .await;
    assert!(
        !ok && (out.contains("403") || out.contains("invalid auth")),
        "{out}"
    );

    // Destroyed: the state says so, and the versions before are still there.
    let (ok, out) = tf(
        &bin,
        &dir,
        "pw-sandbox",
        &[
            "destroy",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var",
            "name=two",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let last = s
        .store
        .infra_state(&repo.id, "sandbox", None)
        .await
        .expect("state")
        .expect("a state");
    let plain = key.open(&last.sealed, "infra-state").expect("opens");
    let state: serde_json::Value = serde_json::from_slice(&plain).expect("json");
    assert_eq!(state["resources"].as_array().map(Vec::len), Some(0));
    let first = s
        .store
        .infra_state(&repo.id, "sandbox", Some(1))
        .await
        .expect("state")
        .expect("version 1");
    assert_eq!(first.info.version, 1);
}
