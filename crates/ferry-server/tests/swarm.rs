//! The `swarm` deploy target on a real single-node swarm (scripts/test.sh runs `docker
//! swarm init --advertise-addr 127.0.0.1` on the test engine): a compose file deployed
//! as a stack per environment, with the environment's variables, configs and secrets,
//! the release's image by digest, updates, and a failing update rolled back.

use std::time::Duration;

use ferry_testkit::server::{Options, Server, env_of, health_page, push_version, set_ports};

/// The base test image and the registry, or `None` where the Docker tests are skipped
/// on purpose; panics when the engine is not a swarm (scripts/test.sh makes it one).
fn swarm() -> Option<(String, String)> {
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
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(
        state, "active",
        "the test engine is not a swarm: run `docker swarm init --advertise-addr 127.0.0.1` (scripts/test.sh does)"
    );
    Some((image, registry))
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes what the environments' stacks left when dropped (the services outlive the
/// server, and a failed test leaves them too).
struct Stacks(Vec<String>);

impl Drop for Stacks {
    fn drop(&mut self) {
        for scope in &self.0 {
            let filter = format!("label=ferry.scope={scope}");
            for id in docker(&["service", "ls", "-q", "--filter", &filter]).split_whitespace() {
                docker(&["service", "rm", id]);
            }
        }
        // Networks go once the services' tasks let go of them.
        for _ in 0..40 {
            let mut left = 0;
            for scope in &self.0 {
                let filter = format!("label=ferry.scope={scope}");
                for kind in ["config", "secret", "network"] {
                    for id in docker(&[kind, "ls", "-q", "--filter", &filter]).split_whitespace() {
                        docker(&[kind, "rm", id]);
                        left += 1;
                    }
                }
            }
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

const COMPOSE: &str = r#"version: "3.8"
services:
  web:
    image: NAME:latest
    command: ["sh", "-c", "cp /etc/app.conf /www/conf.txt; cat /run/secrets/token > /www/token.txt; echo \"$$GREETING\" > /www/greeting.txt; exec httpd -f -p 8080 -h /www"]
    environment:
      GREETING: "${GREETING}"
    ports:
      - target: 8080
        published: ${PORT}
        mode: host
    configs:
      - source: app_conf
        target: /etc/app.conf
    secrets: [token]
    stop_grace_period: 1s
    deploy:
      update_config:
        monitor: 1s
    build: .
configs:
  app_conf:
    content: "greeting = ${GREETING} in ${FERRY_ENVIRONMENT}\n"
secrets:
  token:
    environment: TOKEN
"#;

#[tokio::test]
async fn a_stack_runs_one_image_everywhere_with_each_environments_configs_and_secrets() {
    let Some((image, registry)) = swarm() else {
        return;
    };
    let mut docker_exec = ferry_exec::DockerExecutor::connect().await.expect("docker");
    docker_exec.kill_grace = Duration::from_millis(500);
    let s = Server::start_with(Options {
        docker: Some(docker_exec),
        ..Options::default()
    })
    .await;
    let name = format!("{registry}/ferry-test/stacked-{}", std::process::id());
    let pipeline = format!(
        "jobs:
  image:
    run: |
      mkdir -p ctx/www && echo \"ok $(cat version)\" > ctx/www/healthz
      printf 'FROM {image}\\nCOPY www /www\\n' > ctx/Dockerfile
    build_image: {{ name: {name}, context: ctx }}
release:
  images: [image]
environments:
  sandbox: {{ auto: true }}
  staging: {{ after: sandbox, auto: true }}
deploy:
  target:
    swarm: {{ compose: deploy/compose.yml, timeout: 2m }}
  verify:
    http: {{ url: \"http://127.0.0.1:${{{{ vars.PORT }}}}/healthz\", body: ok v }}
    for: 1s
    interval: 100ms
"
    );
    let bare = s.repository("stacked", Some(&pipeline));
    s.push_file(
        "stacked",
        "deploy/compose.yml",
        &COMPOSE.replace("NAME", &name),
        "the stack",
    );
    push_version(&s, "stacked", "v1");
    s.register("stacked", &bare).await;
    let ports = set_ports(&s, "stacked", &["sandbox", "staging"]).await;
    for env in ["sandbox", "staging"] {
        s.set_variable("stacked", "GREETING", &format!("hello {env}"), Some(env))
            .await;
        s.set_secret("stacked", "TOKEN", &format!("token-of-{env}"), Some(env))
            .await;
    }
    let repo = s.get("/api/v1/repos/stacked").await;
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    let _stacks = Stacks(
        ["sandbox", "staging"]
            .iter()
            .map(|e| format!("{repo_id}/{e}"))
            .collect(),
    );
    let run_id = s.trigger("stacked").await;
    assert_eq!(
        s.finished(&run_id).await["run"]["status"],
        "success",
        "{}",
        s.log(&run_id, "image").await
    );
    s.wait_for_live("stacked", "sandbox").await;
    let envs = s.wait_for_live("stacked", "staging").await;
    let page = |port: u16, file: &'static str| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/{file}"))
            .await
            .expect("up")
            .text()
            .await
            .expect("text")
    };
    let digest = env_of(&envs, "sandbox")["live"]["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    for (env, port) in ["sandbox", "staging"]
        .into_iter()
        .zip(ports.iter().copied())
    {
        assert_eq!(health_page(port).await, "ok v1\n", "{env}");
        assert_eq!(
            page(port, "conf.txt").await,
            format!("greeting = hello {env} in {env}\n"),
            "{env}'s config"
        );
        assert_eq!(page(port, "token.txt").await, format!("token-of-{env}"));
        assert_eq!(page(port, "greeting.txt").await, format!("hello {env}\n"));
        assert_eq!(
            env_of(&envs, env)["live"]["images"][0]["digest"],
            digest.as_str(),
            "the same image everywhere"
        );
        // The service runs the release's image by digest; the secret is not in its
        // definition.
        let filter = format!("label=ferry.scope={repo_id}/{env}");
        let ids = docker(&["service", "ls", "-q", "--filter", &filter]);
        assert_eq!(ids.lines().count(), 1, "{env}: {ids}");
        let spec = docker(&["service", "inspect", ids.trim()]);
        assert!(spec.contains(&format!("{name}@{digest}")), "{spec}");
        assert!(
            !spec.contains("token-of"),
            "no secret in the service: {spec}"
        );
    }
    let log = s
        .get("/api/v1/repos/stacked/deployments/sandbox.1/log")
        .await;
    let log = log.as_str().unwrap_or_default().to_string();
    assert!(log.contains("web: build"), "the ignored key is said: {log}");
    assert!(
        log.contains("service ") && log.contains(": running"),
        "{log}"
    );

    // New values for sandbox: a new config and a new secret (new objects, since
    // Swarm's are immutable); the old ones go once the new release is live.
    s.set_variable("stacked", "GREETING", "hi sandbox", Some("sandbox"))
        .await;
    s.set_secret("stacked", "TOKEN", "token-2", Some("sandbox"))
        .await;
    push_version(&s, "stacked", "v2");
    let run_id = s.trigger("stacked").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_for_deployments("stacked", "sandbox", "v2 live", |l| {
        l.first()
            .is_some_and(|d| d["number"] == 2 && d["status"] == "live")
    })
    .await;
    assert_eq!(health_page(ports[0]).await, "ok v2\n");
    assert_eq!(
        page(ports[0], "conf.txt").await,
        "greeting = hi sandbox in sandbox\n"
    );
    assert_eq!(page(ports[0], "token.txt").await, "token-2");
    let sandbox = format!("label=ferry.scope={repo_id}/sandbox");
    // Tidied once the release went live (just after it is recorded live).
    for kind in ["config", "secret"] {
        let mut left = String::new();
        for _ in 0..100 {
            left = docker(&[kind, "ls", "-q", "--filter", &sandbox]);
            if left.lines().count() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            left.lines().count(),
            1,
            "only the live {kind} is kept: {left}"
        );
    }

    // A release that fails verification: Ferry deploys the live one again.
    push_version(&s, "stacked", "broken");
    let run_id = s.trigger("stacked").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("stacked", "sandbox", "rolled back", |l| {
            l.iter().any(|d| d["status"] == "rolled_back")
                && l.iter()
                    .any(|d| d["kind"] == "rollback" && d["status"] == "live")
        })
        .await;
    assert_eq!(health_page(ports[0]).await, "ok v2\n", "{list:?}");
    let envs = s.environments("stacked").await;
    let v2 = env_of(&envs, "sandbox")["live"]["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let ids = docker(&["service", "ls", "-q", "--filter", &sandbox]);
    let spec = docker(&["service", "inspect", ids.trim()]);
    assert!(
        spec.contains(&format!("{name}@{v2}")),
        "v2 runs again: {spec}"
    );
    s.stop().await;
}

/// A compose file Ferry cannot read fails the deployment with the place it is wrong,
/// before anything in the swarm changes.
#[tokio::test]
async fn a_bad_compose_file_changes_nothing() {
    if swarm().is_none() {
        return;
    }
    let docker_exec = ferry_exec::DockerExecutor::connect().await.expect("docker");
    let s = Server::start_with(Options {
        docker: Some(docker_exec),
        ..Options::default()
    })
    .await;
    let pipeline = "jobs:
  build:
    run: mkdir -p out && echo built > out/built
    artifacts: [out]
release: { artifacts: [build] }
environments:
  sandbox: { auto: true }
deploy:
  target:
    swarm: { compose: stack.yml }
";
    let bare = s.repository("badstack", Some(pipeline));
    s.push_file(
        "badstack",
        "stack.yml",
        "services:\n  web:\n    image: busybox\n    replica: 2\n",
        "a typo",
    );
    s.register("badstack", &bare).await;
    let run_id = s.trigger("badstack").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let list = s
        .wait_for_deployments("badstack", "sandbox", "failed", |l| {
            l.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
    let reason = list[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("stack.yml:4:5") && reason.contains("unknown key `replica`"),
        "{reason}"
    );
    let repo = s.get("/api/v1/repos/badstack").await;
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    let filter = format!("label=ferry.scope={repo_id}/sandbox");
    for kind in ["service", "config", "secret", "network"] {
        assert_eq!(
            docker(&[kind, "ls", "-q", "--filter", &filter]),
            "",
            "no {kind}"
        );
    }
    // A compose file missing from the commit seals no release.
    let pipeline2 = pipeline.replace("stack.yml", "missing.yml");
    s.push_file("badstack", ".ferry.yml", &pipeline2, "points nowhere");
    let run_id = s.trigger("badstack").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let audit = s
        .wait_until("/api/v1/repos/badstack/audit", "the seal failed", |b| {
            b.to_string().contains("release.seal_failed")
        })
        .await;
    assert!(
        audit
            .to_string()
            .contains("the compose file missing.yml is not in the repository at commit"),
        "{audit}"
    );
    let (_, releases) = s
        .admin("GET", "/api/v1/repos/badstack/releases", None)
        .await;
    assert_eq!(releases["releases"].as_array().map(Vec::len), Some(1));
    s.stop().await;
}
