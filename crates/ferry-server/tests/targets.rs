//! The script, kubernetes (with a recording stand-in for kubectl) and docker deploy
//! targets, each with the release in its context.

use std::time::Duration;

use ferry_testkit::server::{Options, Server, env_of, health_page, push_version, set_ports};

#[tokio::test]
async fn script_and_kubernetes_targets_run_with_the_release_in_context() {
    let s = Server::start().await;
    let pipeline = "jobs:
  build:
    run: |
      mkdir -p k8s
      printf 'kind: Deployment\\nmetadata:\\n  name: web\\nspec:\\n  template:\\n    spec:\\n      containers:\\n        - image: busybox:1\\n' > k8s/web.yaml
    artifacts: [k8s]
release: { artifacts: [build] }
environments:
  ops:
    auto: true
    deploy:
      target:
        script:
          run: echo \"deploying ${{ release.id }} to ${{ environment.name }} in $REGION with $API_KEY\"; test -f k8s/web.yaml
  cluster:
    after: ops
    auto: true
    deploy:
      target: { kubernetes: { manifests: [k8s], kubeconfig: KUBECONFIG, namespace: \"shop-${{ environment.name }}\" } }
";
    s.add_repository("targets", pipeline).await;
    s.set_variable("targets", "REGION", "eu-1", None).await;
    s.set_secret("targets", "API_KEY", "script-secret-55", None)
        .await;
    let kubeconfig = "apiVersion: v1\nkind: Config\n";
    s.set_secret("targets", "KUBECONFIG", kubeconfig, Some("cluster"))
        .await;
    let run_id = s.trigger("targets").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let envs = s.wait_for_live("targets", "cluster").await;
    let release = env_of(&envs, "ops")["live"]["release"]
        .as_str()
        .expect("release")
        .to_string();
    let log = s.get("/api/v1/repos/targets/deployments/ops.1/log").await;
    let log = log.as_str().expect("text").to_string();
    assert!(
        log.contains(&format!("deploying {release} to ops in eu-1 with ***\n")),
        "{log}"
    );
    assert!(!log.contains("script-secret-55"));
    // kubectl: apply the rendered manifests, then wait for the rollout, with the
    // environment's kubeconfig secret as a file and the namespace resolved.
    let calls = std::fs::read_to_string(s.dir().join("kubectl.calls")).expect("calls");
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(
        lines[0].starts_with("--kubeconfig /")
            && lines[0].contains(
                "/cluster/secrets/KUBECONFIG --namespace shop-cluster apply --filename /"
            ),
        "{calls}"
    );
    assert!(
        lines[0].ends_with(&format!("/cluster/rendered/{release}")),
        "{calls}"
    );
    assert!(
        lines[1].ends_with("rollout status deployment/web --timeout=300s"),
        "{calls}"
    );
    let applied = std::fs::read_to_string(s.dir().join("kubectl.applied")).expect("applied");
    assert!(
        applied.contains("kind: Deployment") && applied.contains("image: busybox:1"),
        "{applied}"
    );
    let klog = s
        .get("/api/v1/repos/targets/deployments/cluster.1/log")
        .await;
    assert!(
        klog.as_str()
            .expect("text")
            .contains("deployment \"web\" successfully rolled out"),
        "{klog}"
    );
    s.stop().await;
}

/// The `kubernetes` target's ConfigMap and Secret: made from the environment's variables
/// and secrets, the Secret given to kubectl on its standard input and never written to
/// a file of the server; a changed value changes the pod template's fingerprint, an
/// unchanged one keeps it (no needless rollout).
#[tokio::test]
async fn kubernetes_config_map_and_secret_come_from_the_environment() {
    use base64::Engine as _;
    let s = Server::start().await;
    let pipeline = "jobs:
  build:
    run: |
      mkdir -p k8s
      printf 'kind: Deployment\\nmetadata:\\n  name: web\\n  labels: { env: \"%s{{ environment.name }}\" }\\nspec: {}\\n' '$' > k8s/web.yaml
    artifacts: [k8s]
release: { artifacts: [build] }
environments:
  cluster:
    auto: true
    deploy:
      target:
        kubernetes:
          manifests: [k8s]
          kubeconfig: KUBECONFIG
          config_map: \"app-${{ environment.name }}\"
          secret: { name: app-secrets, keys: [DB_PASSWORD] }
";
    s.add_repository("kcfg", pipeline).await;
    s.set_variable("kcfg", "LOG_LEVEL", "debug", None).await;
    let secret = "k8s-db-password-4417";
    s.set_secret("kcfg", "DB_PASSWORD", secret, None).await;
    s.set_secret("kcfg", "OTHER", "not-for-the-cluster-9", None)
        .await;
    s.set_secret(
        "kcfg",
        "KUBECONFIG",
        "apiVersion: v1\nkind: Config\n",
        Some("cluster"),
    )
    .await;
    let deploy = async |n: usize| {
        let run_id = s.trigger("kcfg").await;
        assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
        s.wait_for_deployments("kcfg", "cluster", &format!("cluster#{n} live"), |l| {
            l.len() == n && l[0]["status"] == "live"
        })
        .await;
    };
    deploy(1).await;
    let calls = std::fs::read_to_string(s.dir().join("kubectl.calls")).expect("calls");
    let verbs: Vec<String> = calls
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(2)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        verbs,
        [
            "apply --server-side",
            "apply --filename",
            "patch deployment/web",
            "rollout status"
        ],
        "{calls}"
    );
    assert!(
        calls
            .lines()
            .next()
            .expect("first")
            .ends_with(" --filename -")
    );
    let fingerprint = |calls: &str, n: usize| -> String {
        let line = calls
            .lines()
            .filter(|l| l.contains(" patch "))
            .nth(n)
            .expect("patch");
        let v: serde_json::Value =
            serde_json::from_str(line.rsplit_once(" --patch ").expect("patch").1).expect("json");
        v["spec"]["template"]["metadata"]["annotations"]["ferry.dev/config"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    };
    // kubectl reads no configuration of the release's: a home of its own, no kuberc.
    let env = std::fs::read_to_string(s.dir().join("kubectl.env")).expect("env");
    assert!(
        env.lines()
            .all(|l| l.contains("/cluster/kubectl-home KUBERC=off") && !l.contains("releases")),
        "{env}"
    );
    let first = fingerprint(&calls, 0);
    assert_eq!(first.len(), 16, "{calls}");
    // What kubectl read: the ConfigMap of the variables, the Secret of the one secret
    // named (not the kubeconfig, not the others).
    let stdin = std::fs::read_to_string(s.dir().join("kubectl.stdin")).expect("stdin");
    let list: serde_json::Value =
        serde_json::from_str(stdin.lines().next().expect("line")).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "ConfigMap");
    assert_eq!(list["items"][0]["metadata"]["name"], "app-cluster");
    assert_eq!(
        list["items"][0]["data"],
        serde_json::json!({ "LOG_LEVEL": "debug" })
    );
    assert_eq!(list["items"][1]["kind"], "Secret");
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    assert_eq!(
        list["items"][1]["data"],
        serde_json::json!({ "DB_PASSWORD": b64 })
    );
    // The manifests' `${{ }}` were replaced.
    let applied = std::fs::read_to_string(s.dir().join("kubectl.applied")).expect("applied");
    assert!(
        applied.contains("labels: { env: \"cluster\" }"),
        "{applied}"
    );
    // The log names the objects and keys, never a value; no file of the server holds
    // the secret or its encoding.
    let log = s.get("/api/v1/repos/kcfg/deployments/cluster.1/log").await;
    let log = log.as_str().expect("text");
    assert!(
        log.contains("ConfigMap app-cluster: LOG_LEVEL\n")
            && log.contains("Secret app-secrets: DB_PASSWORD\n"),
        "{log}"
    );
    assert!(!log.contains(secret) && !log.contains(&b64), "{log}");
    let shm = ferry_deliver::layout::secrets_root(&s.dir().join("data"));
    for needle in [secret, b64.as_str()] {
        let mut holding = ferry_testkit::files_holding(&s.dir().join("data"), needle);
        holding.extend(ferry_testkit::files_holding(&shm, needle));
        assert!(holding.is_empty(), "{holding:?} hold the secret");
    }

    // Nothing changed: the same fingerprint (the workload does not roll for nothing).
    deploy(2).await;
    let calls = std::fs::read_to_string(s.dir().join("kubectl.calls")).expect("calls");
    assert_eq!(fingerprint(&calls, 1), first, "{calls}");
    // A new secret value: a new fingerprint, so the pods roll with it.
    s.set_secret("kcfg", "DB_PASSWORD", "k8s-db-password-5528", None)
        .await;
    deploy(3).await;
    let calls = std::fs::read_to_string(s.dir().join("kubectl.calls")).expect("calls");
    let third = fingerprint(&calls, 2);
    assert_ne!(third, first, "{calls}");
    // A new variable value too.
    s.set_variable("kcfg", "LOG_LEVEL", "info", None).await;
    deploy(4).await;
    let calls = std::fs::read_to_string(s.dir().join("kubectl.calls")).expect("calls");
    assert_ne!(fingerprint(&calls, 3), third, "{calls}");
    s.stop().await;
}

/// The delivery pipeline with the `docker` target: the image is built and pushed by the
/// pipeline to the local registry, then run by digest in each environment.
fn docker_delivery(image: &str, name: &str) -> String {
    format!(
        "jobs:
  image:
    run: |
      mkdir -p ctx/www && echo \"ok $(cat version)\" > ctx/www/healthz
      printf 'FROM {image}\\nCOPY www /www\\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\\n' > ctx/Dockerfile
    build_image: {{ name: {name}, context: ctx }}
release:
  images: [image]
environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox, auto: true }}
  production:
    after: staging
    approval: {{ required: 1, not: [author] }}
deploy:
  target:
    docker: {{ ports: [\"${{{{ vars.PORT }}}}:8080\"] }}
  verify:
    http: {{ url: \"http://127.0.0.1:${{{{ vars.PORT }}}}/healthz\", body: ok v }}
    for: 1s
    interval: 100ms
"
    )
}

/// The base test image and the local registry (scripts/test.sh), or `None` where the
/// Docker tests are skipped on purpose (`FERRY_SKIP_DOCKER`).
fn docker_images() -> Option<(String, String)> {
    let (Ok(image), Ok(registry)) = (
        std::env::var("FERRY_TEST_IMAGE"),
        std::env::var("FERRY_TEST_REGISTRY"),
    ) else {
        assert!(
            std::env::var_os("FERRY_SKIP_DOCKER").is_some(),
            "set FERRY_TEST_IMAGE and FERRY_TEST_REGISTRY (scripts/test.sh) or FERRY_SKIP_DOCKER=1"
        );
        return None;
    };
    Some((image, registry))
}

fn docker_ps(filter: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.State}}",
            "--filter",
            filter,
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_docker_target_runs_the_release_image_by_digest_and_rolls_back() {
    let Some((image, registry)) = docker_images() else {
        return;
    };
    let mut docker = ferry_exec::DockerExecutor::connect().await.expect("docker");
    docker.kill_grace = Duration::from_millis(500);
    let s = Server::start_with(Options {
        docker: Some(docker),
        ..Options::default()
    })
    .await;
    let name = format!("{registry}/ferry-test/deployed-{}", std::process::id());
    let bare = s.repository("boxed", Some(&docker_delivery(&image, &name)));
    push_version(&s, "boxed", "v1");
    s.register("boxed", &bare).await;
    let ports = set_ports(&s, "boxed", &["sandbox", "staging", "production"]).await;
    let bob = s.user("bob", "approver").await;
    let run_id = s.trigger("boxed").await;
    assert_eq!(
        s.finished(&run_id).await["run"]["status"],
        "success",
        "{}",
        s.log(&run_id, "image").await
    );
    s.wait_until("/api/v1/repos/boxed/environments", "staging live", |b| {
        !env_of(b, "staging")["live"].is_null()
            && env_of(b, "production")["pending"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
    })
    .await;
    let production = s.deployment("boxed", "production#1");
    // The admin asked for the run: it is the commit's author here.
    let (status, _) = production.approve(&s.admin, None).await;
    assert_eq!(status, 403, "the author may not approve");
    let (status, body) = production.approve(&bob, None).await;
    assert_eq!(status, 200, "{body}");
    let envs = s.wait_for_live("boxed", "production").await;
    let digest = env_of(&envs, "production")["live"]["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert!(digest.starts_with("sha256:"));
    // The container's statistics: memory in use, no restart, since when it runs.
    let w = &env_of(&envs, "production")["workload"];
    assert!(w["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{w}");
    assert_eq!(w["restarts"], 0, "{w}");
    assert!(w["started_at"].as_i64().is_some_and(|t| t > 0), "{w}");
    // And on /metrics, sampled from Docker (a scrape never waits for it).
    let text =
        ferry_testkit::server::wait_for("the container's workload on /metrics", async || {
            let text = s
                .send(s.request("GET", "/metrics").bearer_auth(&s.admin))
                .await
                .text;
            let want = [
                "ferry_workload_memory_bytes{environment=\"production\",repository=\"boxed\"}",
                "ferry_workload_restarts{environment=\"production\",repository=\"boxed\"} 0",
                "ferry_workload_uptime_seconds{environment=\"sandbox\",repository=\"boxed\"}",
                "ferry_workload_cpu_seconds{environment=\"staging\",repository=\"boxed\"}",
            ];
            match want.iter().find(|w| !text.contains(*w)) {
                None => Ok(text),
                Some(missing) => Err(format!("{missing} not in:\n{text}")),
            }
        })
        .await;
    ferry_testkit::server::promtool(&text);
    for (env, port) in ["sandbox", "staging", "production"].iter().zip(&ports) {
        assert_eq!(
            env_of(&envs, env)["live"]["images"][0]["digest"],
            digest.as_str(),
            "{env}"
        );
        assert_eq!(
            health_page(port).await,
            "ok v1\n",
            "{env} serves the release on 127.0.0.1:{port}"
        );
    }
    let sandbox_apps = docker_ps("label=ferry.release");
    assert!(sandbox_apps.contains("ferry-sandbox-r1-"), "{sandbox_apps}");
    // A broken release: sandbox rolls back to the kept v1 container at once.
    push_version(&s, "boxed", "broken");
    let run_id = s.trigger("boxed").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_for_deployments("boxed", "sandbox", "rolled back", |l| {
        l.iter().any(|d| d["status"] == "rolled_back")
            && l.iter()
                .any(|d| d["kind"] == "rollback" && d["status"] == "live")
    })
    .await;
    assert_eq!(
        health_page(ports[0]).await,
        "ok v1\n",
        "v1 serves sandbox again"
    );
    let envs = s.environments("boxed").await;
    assert_eq!(
        env_of(&envs, "staging")["live"]["images"][0]["digest"],
        digest.as_str(),
        "the broken release went no further"
    );
    let repo = s.get("/api/v1/repos/boxed").await;
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    s.stop().await;
    // The deployed containers are the application's, not jobs': they stay up with Docker
    // (restart policy) until removed. This test removes its own.
    for env in ["sandbox", "staging", "production"] {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=ferry.deploy={repo_id}/{env}"),
            ])
            .output()
            .expect("docker ps");
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
    }
}

/// A release's `volumes:` cannot mount the host: a host path outside the directories
/// the server allows (`--deploy-mount`, none here) fails the deployment before any
/// container starts.
#[tokio::test]
async fn a_docker_deployment_mounts_no_host_path_the_server_does_not_allow() {
    let Some((image, registry)) = docker_images() else {
        return;
    };
    let docker = ferry_exec::DockerExecutor::connect().await.expect("docker");
    let s = Server::start_with(Options {
        docker: Some(docker),
        ..Options::default()
    })
    .await;
    let name = format!("{registry}/ferry-test/mounting-{}", std::process::id());
    let pipeline = format!(
        "jobs:
  image:
    run: mkdir -p ctx && printf 'FROM {image}\\nCMD [\"sleep\", \"300\"]\\n' > ctx/Dockerfile
    build_image: {{ name: {name}, context: ctx }}
release:
  images: [image]
environments:
  sandbox: {{ auto: true }}
deploy:
  target:
    docker: {{ volumes: [\"/:/host\"] }}
  on_failure: stop
"
    );
    s.add_repository("mounting", &pipeline).await;
    let run_id = s.trigger("mounting").await;
    assert_eq!(
        s.finished(&run_id).await["run"]["status"],
        "success",
        "{}",
        s.log(&run_id, "image").await
    );
    let failed = s
        .wait_for_deployments("mounting", "sandbox", "sandbox#1 failed", |l| {
            l.iter().any(|d| d["status"] == "failed")
        })
        .await;
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("volume `/:/host`: the host path `/` is not a directory the server allows"),
        "{reason}"
    );
    let repo = s.get("/api/v1/repos/mounting").await;
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        docker_ps(&format!("label=ferry.deploy={repo_id}/sandbox")),
        "",
        "no container started"
    );
    s.stop().await;
}

/// `deploy.config` for the docker target: one image (the same digest everywhere) runs
/// in two environments, each with its own env file, config file rendered from a
/// release template, secrets as read-only files, and a named volume of its own kept
/// across releases.
#[tokio::test]
async fn one_image_runs_everywhere_with_each_environments_config() {
    let Some((image, registry)) = docker_images() else {
        return;
    };
    let mut docker = ferry_exec::DockerExecutor::connect().await.expect("docker");
    docker.kill_grace = Duration::from_millis(500);
    let s = Server::start_with(Options {
        docker: Some(docker),
        ..Options::default()
    })
    .await;
    let name = format!("{registry}/ferry-test/configured-{}", std::process::id());
    let start = "cat /etc/app.env > /www/env.txt; cat /run/secrets/TOKEN > /www/token.txt; \
                 cp /etc/app/app.conf /www/conf.txt; date >> /data/starts; \
                 wc -l < /data/starts > /www/starts.txt; exec httpd -f -p 8080 -h /www";
    let pipeline = format!(
        "jobs:
  image:
    run: |
      mkdir -p ctx/www && echo \"ok $(cat version)\" > ctx/www/healthz
      printf 'FROM {image}\\nCOPY www /www\\nCMD [\"sh\", \"-c\", \"{start}\"]\\n' > ctx/Dockerfile
    build_image: {{ name: {name}, context: ctx }}
  config:
    run: mkdir -p out && cp app.conf.tmpl out/
    artifacts: [out]
release:
  images: [image]
  artifacts: [config]
environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox, auto: true }}
deploy:
  target:
    docker: {{ ports: [\"${{{{ vars.PORT }}}}:8080\"] }}
  config:
    env_file: /etc/app.env
    files:
      /etc/app/app.conf: {{ template: out/app.conf.tmpl }}
    volumes: {{ data: /data }}
  verify:
    http: {{ url: \"http://127.0.0.1:${{{{ vars.PORT }}}}/healthz\", body: ok v }}
    for: 500ms
    interval: 100ms
"
    );
    let bare = s.repository("boxed", Some(&pipeline));
    s.push_file(
        "boxed",
        "app.conf.tmpl",
        "greeting = ${{ vars.GREETING }} in ${{ environment.name }}\n",
        "template",
    );
    push_version(&s, "boxed", "v1");
    s.register("boxed", &bare).await;
    let ports = set_ports(&s, "boxed", &["sandbox", "staging"]).await;
    for env in ["sandbox", "staging"] {
        s.set_variable("boxed", "GREETING", &format!("hello {env}"), Some(env))
            .await;
        s.set_secret("boxed", "TOKEN", &format!("token-of-{env}"), Some(env))
            .await;
    }
    let run_id = s.trigger("boxed").await;
    assert_eq!(
        s.finished(&run_id).await["run"]["status"],
        "success",
        "{}",
        s.log(&run_id, "image").await
    );
    let envs = s.wait_for_live("boxed", "staging").await;
    let page = |port: u16, file: &'static str| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/{file}"))
            .await
            .expect("up")
            .text()
            .await
            .expect("text")
    };
    for (env, port) in ["sandbox", "staging"]
        .into_iter()
        .zip(ports.iter().copied())
    {
        assert_eq!(
            page(port, "conf.txt").await,
            format!("greeting = hello {env} in {env}\n"),
            "{env}'s config file"
        );
        let dotenv = page(port, "env.txt").await;
        assert!(
            dotenv.contains(&format!("GREETING=\"hello {env}\"\n"))
                && dotenv.contains(&format!("PORT={port}\n")),
            "{env}'s env file: {dotenv}"
        );
        assert!(!dotenv.contains("token-of"), "no secret in the env file");
        assert_eq!(page(port, "token.txt").await, format!("token-of-{env}"));
        // Each environment's own volume: a shared one would count 2 here.
        assert_eq!(page(port, "starts.txt").await.trim(), "1", "{env}");
    }
    assert_eq!(
        env_of(&envs, "sandbox")["live"]["images"][0]["digest"],
        env_of(&envs, "staging")["live"]["images"][0]["digest"],
        "the same image everywhere"
    );
    // The next release finds the environment's volume as it was.
    push_version(&s, "boxed", "v2");
    let run_id = s.trigger("boxed").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_for_deployments("boxed", "sandbox", "v2 live", |l| {
        l.first()
            .is_some_and(|d| d["number"] == 2 && d["status"] == "live")
    })
    .await;
    assert_eq!(health_page(ports[0]).await, "ok v2\n");
    assert_eq!(page(ports[0], "starts.txt").await.trim(), "2", "kept");
    let repo = s.get("/api/v1/repos/boxed").await;
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    s.stop().await;
    for env in ["sandbox", "staging"] {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=ferry.deploy={repo_id}/{env}"),
            ])
            .output()
            .expect("docker ps");
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
    }
    let dep = |env: &str| ferry_store::Deployment {
        id: String::new(),
        repository_id: repo_id.clone(),
        environment: env.into(),
        number: 1,
        release_id: String::new(),
        kind: ferry_store::DeploymentKind::Auto,
        status: ferry_store::DeploymentStatus::Live,
        reason: None,
        requested_by: None,
        previous_release_id: None,
        config: None,
        created_at: 0,
        started_at: None,
        finished_at: None,
        verification_started_at: None,
        verification_finished_at: None,
        live_at: None,
        target_ref: None,
    };
    for env in ["sandbox", "staging"] {
        let volume = ferry_deliver::target::docker::volume_name(&dep(env), "data");
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &volume])
            .output();
    }
}
