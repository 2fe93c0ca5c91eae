//! Terraform's `http` state backend served by Ferry, driven by the real `terraform`
//! (the built-in `terraform_data` resource: no provider is downloaded).

use std::path::Path;

use ferry_testkit::server::{Server, message};

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
        may_write: true,
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

    // A plan's credential reads and locks, never writes nor unlocks another's lock.
    s.store
        .create_infra_credential(
            &ferry_server::auth::hash_token("pw-plan"),
            &ferry_store::InfraGrant {
                repository_id: repo.id.clone(),
                environment: "sandbox".into(),
                deployment_id: None,
                may_write: false,
            },
            later,
        )
        .await
        .expect("credential");
    let http = reqwest::Client::new();
    let call = |method: &str, body: &'static str| {
        http.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            &address,
        )
        .basic_auth("ferry", Some("pw-plan"))
        .body(body)
        .send()
    };
    assert_eq!(call("GET", "").await.expect("get").status().as_u16(), 200);
    let write = call("POST", r#"{"serial": 99}"#).await.expect("post");
    assert_eq!(
        write.status().as_u16(),
        403,
        "a plan never writes the state"
    );
    assert_eq!(
        call("DELETE", "").await.expect("delete").status().as_u16(),
        403
    );
    let lock = call("LOCK", r#"{"ID":"plan-lock"}"#).await.expect("lock");
    assert_eq!(lock.status().as_u16(), 200);
    let forced = call("UNLOCK", "{}").await.expect("force");
    assert_eq!(
        forced.status().as_u16(),
        403,
        "no force-unlock with a plan's credential"
    );
    let own = call("UNLOCK", r#"{"ID":"plan-lock"}"#)
        .await
        .expect("unlock");
    assert_eq!(own.status().as_u16(), 200);

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

/// The pipeline of the deliverer's Terraform tests: the app (busybox httpd) prints the
/// URL Terraform gave it; sandbox provisions and deploys on its own, production after
/// two approvals of its plan.
const PROVISIONED: &str = "jobs:
  build:
    run: |
      mkdir -p app/www
      echo \"ok $(cat version)\" > app/www/healthz
      printf '#!/bin/sh\\necho \"url $APP_URL\"\\nexec busybox httpd -f -p 127.0.0.1:$PORT -h www\\n' > app/run
      chmod +x app/run
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox:
    auto: true
    infra: { dir: infra, vars: { name: \"sandbox-${{ vars.PORT }}\" } }
  production:
    after: sandbox
    approval: { required: 2 }
    infra: { dir: infra }
deploy:
  target:
    process:
      command: cd app && exec ./run
      env: { APP_URL: \"${{ infra.outputs.url }}\" }
  verify:
    http: { url: \"http://127.0.0.1:${{ vars.PORT }}/healthz\", body: ok v }
    for: 1s
    interval: 100ms
";

/// The module of [`PROVISIONED`]: `replace` forces a replacement when it changes.
fn infra_module(replace: &str) -> String {
    format!(
        r#"variable "name" {{
  type    = string
  default = "prod"
}}
variable "token" {{
  type      = string
  sensitive = true
}}
resource "terraform_data" "app" {{
  input            = var.name
  triggers_replace = "{replace}"
}}
output "url" {{ value = "http://127.0.0.1/${{terraform_data.app.output}}" }}
output "token" {{
  value     = var.token
  sensitive = true
}}
"#
    )
}

/// A server whose deliverer runs `bin`, with the [`PROVISIONED`] repository `shop`
/// at version v1, its ports and secret set, and its first run finished.
async fn provisioned_shop(bin: &str) -> ferry_testkit::server::Server {
    use ferry_testkit::server::{push_version, set_ports};
    let s = Server::start_with(ferry_testkit::server::Options {
        terraform: Some(bin.into()),
        ..Default::default()
    })
    .await;
    let bare = s.repository("shop", Some(PROVISIONED));
    s.push_file("shop", "infra/main.tf", &infra_module("one"), "infra");
    push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    set_ports(&s, "shop", &["sandbox", "production"]).await;
    s.set_secret("shop", "token", "tf-secret-4e1c9b", None)
        .await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s
}

/// A text answer of the API.
async fn text(s: &Server, path: &str) -> String {
    s.get(path).await.as_str().unwrap_or_default().to_string()
}

/// The Terraform plan of a deployment, once it is made.
async fn plan_of(s: &Server, label: &str, not: Option<&str>) -> serde_json::Value {
    let path = format!("/api/v1/repos/shop/deployments/{}", label.replace('#', "."));
    s.wait_until(&path, &format!("a plan of {label}"), |b| {
        b["infra_plan"]["sha256"].is_string() && not.is_none_or(|n| b["infra_plan"]["sha256"] != n)
    })
    .await
}

/// Terraform provisions each environment before the release is deployed there, with
/// its own state kept by Ferry: sandbox plans and applies on its own, production shows
/// its plan to the approvers, and an approval is of that plan only: when the state
/// moves, the plan is made again and asked for again. Outputs reach the app; sensitive
/// ones and secrets never reach the log.
#[tokio::test]
async fn environments_are_provisioned_with_the_plan_their_approvers_saw() {
    let Some(bin) = terraform() else {
        return;
    };
    let s = provisioned_shop(&bin).await;
    let repo = s.store.repository("shop").await.expect("repo");
    // Sandbox: planned, applied, deployed with the outputs.
    s.wait_for_live("shop", "sandbox").await;
    let port: String = s
        .get("/api/v1/repos/shop/variables?environment=sandbox")
        .await["variables"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "PORT"))
        .and_then(|v| v["value"].as_str())
        .expect("port")
        .to_string();
    let output = s.output("shop", "sandbox").await;
    assert!(
        output.contains(&format!("url http://127.0.0.1/sandbox-{port}")),
        "{output}"
    );
    let log = text(&s, "/api/v1/repos/shop/deployments/sandbox.1/log").await;
    for said in [
        "terraform: planning",
        "terraform: plan ",
        "1 to add, 0 to change, 0 to replace, 0 to destroy",
        "terraform: applying plan",
        "terraform: applied; outputs: token, url",
        "Apply complete! Resources: 1 added",
    ] {
        assert!(log.contains(said), "{said} in {log}");
    }
    assert!(!log.contains("tf-secret-4e1c9b"), "masked: {log}");
    let versions = s
        .store
        .infra_versions(&repo.id, "sandbox")
        .await
        .expect("versions");
    assert!(!versions.is_empty(), "sandbox's state is Ferry's");
    assert!(
        s.store
            .infra_lock(&repo.id, "sandbox")
            .await
            .expect("lock")
            .is_none()
    );

    // Production: the plan is made while it waits, and shown to the approvers.
    let detail = plan_of(&s, "production#1", None).await;
    let plan1 = detail["infra_plan"]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    assert_eq!(
        detail["infra_plan"]["summary"]["create"],
        serde_json::json!(["terraform_data.app"])
    );
    assert_eq!(detail["deployment"]["status"], "awaiting_approval");
    let bob = s.user("bob", "approver").await;
    let carol = s.user("carol", "approver").await;
    let production = s.deployment("shop", "production#1");
    let (status, body) = production.approve(&bob, None).await;
    assert_eq!(
        status, 409,
        "an approval names the plan it approves: {body}"
    );
    let (status, body) = production.approve_plan(&bob, &plan1[..12]).await;
    assert_eq!(status, 200, "{body}");
    // The state moves (someone applies outside the deployment, with a credential of
    // production's): the plan is made again, and bob's approval no longer counts.
    let outside = s.dir().join("outside");
    let address = format!("{}/api/v1/infra/shop/production/state", s.client().base());
    module(&outside, &address);
    s.store
        .create_infra_credential(
            &ferry_server::auth::hash_token("pw-outside"),
            &ferry_store::InfraGrant {
                repository_id: repo.id.clone(),
                environment: "production".into(),
                deployment_id: None,
                may_write: true,
            },
            ferry_store::now_ms() + 600_000,
        )
        .await
        .expect("credential");
    let (ok, out) = tf(
        &bin,
        &outside,
        "pw-outside",
        &["init", "-input=false", "-no-color"],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = tf(
        &bin,
        &outside,
        "pw-outside",
        &[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var",
            "name=x",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let detail = plan_of(&s, "production#1", Some(&plan1)).await;
    let plan2 = detail["infra_plan"]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    // The resource made outside has no `triggers_replace`: it is replaced.
    assert_eq!(
        detail["infra_plan"]["summary"]["replace"],
        serde_json::json!(["terraform_data.app"]),
        "{detail}"
    );
    let approvals = detail["approvals"].as_array().expect("approvals");
    assert!(
        approvals.is_empty(),
        "bob's approval was of the old plan: {detail}"
    );
    // An approval of the old plan is refused; of the new one, counted.
    let (status, body) = production.approve_plan(&carol, &plan1).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("look at the plan again"), "{body}");
    let (status, body) = production.approve_plan(&carol, &plan2).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["status"], "awaiting_approval");
    // Bob approves again from the web UI's board, which shows the plan and sends it.
    let web = s.web(&bob).await;
    let board = web.get("/ui/repos/shop/environments").await;
    assert_eq!(board.status, 200);
    assert!(board.text.contains("Terraform plan"), "{}", board.text);
    assert!(board.text.contains("terraform_data.app"), "{}", board.text);
    assert_eq!(
        ferry_testkit::server::input_value(&board.text, "s:plan").as_deref(),
        Some(plan2.as_str())
    );
    let page = web.get("/ui/repos/shop/deployments/production%231").await;
    assert!(page.text.contains(&plan2[..12]), "{}", page.text);
    let done = web
        .act(
            "POST",
            "/api/v1/repos/shop/deployments/production.1/approve",
            &[("s:plan", &plan2), ("o:comment", "again")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text);
    s.wait_for_live("shop", "production").await;
    let output = s.output("shop", "production").await;
    assert!(output.contains("url http://127.0.0.1/prod"), "{output}");
    let detail = production.detail().await;
    assert_eq!(
        detail["infra_plan"]["sha256"],
        plan2.as_str(),
        "applied as approved"
    );
    assert!(detail["infra_plan"]["applied_at"].is_i64());
    for a in detail["approvals"].as_array().expect("approvals") {
        assert_eq!(a["plan_sha256"], plan2.as_str());
    }
    let state = s
        .admin(
            "GET",
            "/api/v1/repos/shop/environments/production/infra/states/latest",
            None,
        )
        .await
        .1;
    assert_eq!(state["outputs"]["url"]["value"], "http://127.0.0.1/prod");
    let log = text(&s, "/api/v1/repos/shop/deployments/production.1/log").await;
    assert!(!log.contains("tf-secret-4e1c9b"), "masked: {log}");
    assert!(
        log.contains(&format!("terraform: applying plan {}", &plan2[..12])),
        "{log}"
    );
    let (_, audit) = s.admin("GET", "/api/v1/repos/shop/audit", None).await;
    assert!(
        audit
            .to_string()
            .contains(&format!("plan {}", &plan2[..12])),
        "approvals name their plan: {audit}"
    );
    // `ferry envs destroy sandbox`: the destroy is planned, waits for an approval
    // (though sandbox is automatic), then destroys and stops what was live.
    let sandbox_port: u16 = port.parse().expect("port");
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/environments/sandbox/destroy",
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["deployment"]["kind"], "destroy");
    let label = body["deployment"]["label"]
        .as_str()
        .expect("label")
        .to_string();
    let detail = plan_of(&s, &label, None).await;
    assert_eq!(detail["infra_plan"]["destroy"], true, "{detail}");
    let log = text(
        &s,
        &format!(
            "/api/v1/repos/shop/deployments/{}/log",
            label.replace('#', ".")
        ),
    )
    .await;
    assert!(
        log.contains("terraform: init skipped"),
        "the same module in the same environment: {log}"
    );
    assert_eq!(
        detail["infra_plan"]["summary"]["delete"],
        serde_json::json!(["terraform_data.app"])
    );
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/environments/sandbox/destroy",
            None,
        )
        .await;
    assert_eq!(status, 409, "one at a time: {body}");
    let destroy_plan = detail["infra_plan"]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let (status, body) = s.deployment("shop", &label).approve(&bob, None).await;
    assert_eq!(status, 409, "an approval names its plan: {body}");
    assert!(
        message(&body).contains("name the plan you approve"),
        "{body}"
    );
    let (status, body) = s
        .deployment("shop", &label)
        .approve_plan(&bob, &destroy_plan)
        .await;
    assert_eq!(status, 200, "{body}");
    let list = s
        .wait_for_deployments("shop", "sandbox", "the destroy", |l| {
            l.first().is_some_and(|d| d["status"] == "destroyed")
        })
        .await;
    assert_eq!(list[1]["status"], "replaced", "{list:?}");
    let envs = s.environments("shop").await;
    assert!(
        ferry_testkit::server::env_of(&envs, "sandbox")["live"].is_null(),
        "{envs}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", sandbox_port)).is_err(),
        "sandbox's app stopped"
    );
    let state = s
        .admin(
            "GET",
            "/api/v1/repos/shop/environments/sandbox/infra/states/latest",
            None,
        )
        .await
        .1;
    assert_eq!(state["resources"], serde_json::json!([]), "{state}");
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/environments/sandbox/destroy",
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("nothing to destroy"), "{body}");
    let actions = ferry_testkit::server::audit_actions(&s, "shop").await;
    assert!(
        actions.iter().any(|a| a == "environment.destroy"),
        "{actions:?}"
    );

    // Every credential of a deployment ended with it.
    let pw_rows = s
        .store
        .infra_credential(&ferry_server::auth::hash_token("pw-outside"))
        .await
        .expect("read");
    assert!(
        pw_rows.is_some(),
        "the test's own credential is not a deployment's"
    );
    s.stop().await;
}

/// A plan that destroys waits for an approval even where promotion is automatic; a
/// Terraform error fails the deployment and changes nothing; a held state lock refuses
/// the apply.
#[tokio::test]
async fn destroying_plans_wait_and_terraform_errors_change_nothing() {
    use ferry_testkit::server::{live_release, push_version};
    let Some(bin) = terraform() else {
        return;
    };
    let s = provisioned_shop(&bin).await;
    let repo = s.store.repository("shop").await.expect("repo");
    s.wait_for_live("shop", "sandbox").await;
    let v1 = live_release(&s, "shop", "sandbox").await;

    // v2 replaces the resource: sandbox waits for an approval of that.
    s.push_file("shop", "infra/main.tf", &infra_module("two"), "replace");
    push_version(&s, "shop", "v2");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "sandbox#2 waits", |l| {
            l.first()
                .is_some_and(|d| d["status"] == "awaiting_approval")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("destroys terraform_data.app"), "{reason}");
    assert_eq!(
        live_release(&s, "shop", "sandbox").await,
        v1,
        "v1 stays live"
    );
    // Planning sandbox#2 left the live process's secret files alone.
    let shm = {
        use sha2::Digest as _;
        let data = s.dir().join("data").display().to_string();
        let id = hex::encode(&sha2::Sha256::digest(data.as_bytes())[..6]);
        std::path::Path::new("/dev/shm").join(format!("ferry-{id}"))
    };
    if std::path::Path::new("/dev/shm").is_dir() {
        let token = shm.join(&repo.id).join("sandbox/secrets/token");
        assert_eq!(
            std::fs::read_to_string(&token).expect("the live process's secret file"),
            "tf-secret-4e1c9b"
        );
        assert!(
            !shm.join(&repo.id).join("sandbox/infra").exists(),
            "Terraform's went"
        );
    }
    let bob = s.user("bob", "approver").await;
    let plan = plan_of(&s, "sandbox#2", None).await["infra_plan"]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let (status, body) = s
        .deployment("shop", "sandbox#2")
        .approve_plan(&bob, &plan)
        .await;
    assert_eq!(status, 200, "{body}");
    s.wait_for_deployments("shop", "sandbox", "sandbox#2 live", |l| {
        l.first().is_some_and(|d| d["status"] == "live")
    })
    .await;

    // v3 has a Terraform error: failed, nothing changed, v2 still live and running.
    s.push_file(
        "shop",
        "infra/main.tf",
        "resource \"terraform_data\" {\n",
        "broken",
    );
    push_version(&s, "shop", "v3");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "sandbox#3 failed", |l| {
            l.first()
                .is_some_and(|d| d["label"] == "sandbox#3" && d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("terraform init failed"), "{reason}");
    assert!(
        reason.contains("infra/main.tf:1: Unclosed configuration block"),
        "the file and line of the error: {reason}"
    );
    let v2 = list[1]["release"].as_str().expect("v2").to_string();
    assert_eq!(live_release(&s, "shop", "sandbox").await, v2);
    // v2 changed the module: `init` ran again for its plan (what it made for v1 was
    // not used); the apply, after the approval, used what that `init` made.
    let log2 = text(&s, "/api/v1/repos/shop/deployments/sandbox.2/log").await;
    let planned = log2.find("Initializing the backend").expect("init ran");
    let skipped = log2.find("terraform: init skipped").expect("then skipped");
    assert!(planned < skipped, "{log2}");
    let log = text(&s, "/api/v1/repos/shop/deployments/sandbox.3/log").await;
    assert!(
        log.contains("nothing was changed: what is live stays"),
        "{log}"
    );

    // The state is locked by someone else: v4's apply is refused, v2 stays.
    s.push_file("shop", "infra/main.tf", &infra_module("two"), "fixed");
    push_version(&s, "shop", "v4");
    s.store
        .lock_infra(
            &repo.id,
            "sandbox",
            "someone-else",
            r#"{"ID":"someone-else"}"#,
        )
        .await
        .expect("lock");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "sandbox#4 failed", |l| {
            l.first()
                .is_some_and(|d| d["label"] == "sandbox#4" && d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("state lock"), "{reason}");
    assert_eq!(live_release(&s, "shop", "sandbox").await, v2);
    // v4's module is v2's again: what `init` made for v2 was used, not made again
    // (v3's failed init kept nothing).
    let log4 = text(&s, "/api/v1/repos/shop/deployments/sandbox.4/log").await;
    assert!(
        log4.contains("terraform: init skipped") && !log4.contains("Initializing the backend"),
        "{log4}"
    );
    let kept =
        ferry_deliver::layout::environment_dir(&s.dir().join("data/deploy"), &repo.id, "sandbox")
            .join("infra-init");
    assert_eq!(
        std::fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0),
        1,
        "one copy kept per environment"
    );
    s.store
        .unlock_infra(&repo.id, "sandbox", None)
        .await
        .expect("unlock");

    // v5 names another backend in an override file: refused, v2 stays.
    s.push_file(
        "shop",
        "infra/local_override.tf",
        "terraform {\n  backend \"local\" {}\n}\n",
        "elsewhere",
    );
    push_version(&s, "shop", "v5");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("shop", "sandbox", "sandbox#5 failed", |l| {
            l.first()
                .is_some_and(|d| d["label"] == "sandbox#5" && d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("infra/local_override.tf may name a `backend`"),
        "{reason}"
    );
    assert_eq!(live_release(&s, "shop", "sandbox").await, v2);
    s.stop().await;
}

/// An `infra.dir` the commit does not have seals no release, and says why.
#[tokio::test]
async fn a_missing_infra_dir_seals_no_release() {
    let Some(bin) = terraform() else {
        return;
    };
    let s = Server::start_with(ferry_testkit::server::Options {
        terraform: Some(bin.into()),
        ..Default::default()
    })
    .await;
    let pipeline = PROVISIONED.replace("dir: infra", "dir: deploy/tf");
    let bare = s.repository("shop", Some(&pipeline));
    ferry_testkit::server::push_version(&s, "shop", "v1");
    s.register("shop", &bare).await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let audit = s
        .wait_until("/api/v1/repos/shop/audit", "the seal failed", |b| {
            b.to_string().contains("release.seal_failed")
        })
        .await;
    assert!(
        audit
            .to_string()
            .contains("`infra.dir` deploy/tf is not a directory at commit"),
        "{audit}"
    );
    let (_, releases) = s.admin("GET", "/api/v1/repos/shop/releases", None).await;
    assert_eq!(releases["releases"].as_array().map(Vec::len), Some(0));
    s.stop().await;
}
