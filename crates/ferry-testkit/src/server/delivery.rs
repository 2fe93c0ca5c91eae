//! What the delivery tests share: a pipeline with five environments, its repository
//! with a first release live, and the ports its apps listen on.

use serde_json::{Value, json};

use super::Server;

/// The delivery pipeline of the process-target tests: the app is busybox httpd serving
/// `www/` (its health page says which release it is) and printing its secret `TOKEN`.
/// `sandbox` and `staging` deploy on their own, `production` needs an approval by
/// someone other than the author, `frozen` is frozen, `broken` cannot start.
pub const DELIVERY: &str = "jobs:
  build:
    run: |
      mkdir -p app/www
      echo \"ok $(cat version)\" > app/www/healthz
      printf '#!/bin/sh\\necho \"starting with token $TOKEN\"\\nexec busybox httpd -f -p 127.0.0.1:$PORT -h www\\n' > app/run
      chmod +x app/run
    artifacts: [app]
release:
  artifacts: [build]
environments:
  sandbox: { auto: true }
  staging: { after: sandbox, auto: true }
  production:
    after: staging
    approval: { required: 1, not: [author] }
  frozen:
    freeze: { from: \"2000-01-01T00:00:00Z\", to: \"2100-01-01T00:00:00Z\" }
  broken:
    deploy:
      target: { process: { command: ./no-such-program } }
deploy:
  target:
    process: { command: cd app && exec ./run }
  verify:
    http: { url: \"http://127.0.0.1:${{ vars.PORT }}/healthz\", body: ok v }
    for: 1s
    interval: 100ms
";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sets the variable `PORT` of each environment to a free port; returns the ports.
pub async fn set_ports(s: &Server, repo: &str, envs: &[&str]) -> Vec<u16> {
    let mut ports = Vec::new();
    for env in envs {
        let port = free_port();
        let (status, body) = s
            .admin(
                "PUT",
                &format!("/api/v1/repos/{repo}/variables/PORT"),
                Some(json!({ "value": port.to_string(), "environment": env })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ports.push(port);
    }
    ports
}

/// The environment `name` in a `GET …/environments` answer (null when absent).
pub fn env_of<'a>(envs: &'a Value, name: &str) -> &'a Value {
    envs["environments"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Pushes a commit that sets `version` (the file the delivery pipelines serve).
pub fn push_version(s: &Server, name: &str, version: &str) {
    s.push_file(name, "version", &format!("{version}\n"), version);
}

/// A repository with the [`DELIVERY`] pipeline, its ports, and a first release live in
/// sandbox and staging (production waits for approval).
pub async fn shop_with_v1(s: &Server, name: &str) {
    let bare = s.repository(name, Some(DELIVERY));
    push_version(s, name, "v1");
    s.register(name, &bare).await;
    set_ports(s, name, &["sandbox", "staging", "production"]).await;
    let run_id = s.trigger(name).await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    s.wait_until(
        &format!("/api/v1/repos/{name}/environments"),
        "v1 in staging",
        |b| !env_of(b, "staging")["live"].is_null(),
    )
    .await;
}

/// The name of the release live in an environment.
pub async fn live_release(s: &Server, repo: &str, env: &str) -> String {
    let (_, envs) = s
        .admin("GET", &format!("/api/v1/repos/{repo}/environments"), None)
        .await;
    env_of(&envs, env)["live"]["release"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing live in {env}: {envs}"))
        .to_string()
}

/// Asks for `release` to be deployed to `env` (`POST …/deployments`).
pub async fn promote(s: &Server, repo: &str, release: &str, env: &str) -> (u16, Value) {
    s.admin(
        "POST",
        &format!("/api/v1/repos/{repo}/deployments"),
        Some(json!({ "release": release, "environment": env })),
    )
    .await
}

/// The actions of the repository's audit log, newest first (the last 100).
pub async fn audit_actions(s: &Server, repo: &str) -> Vec<String> {
    let (_, audit) = s
        .admin(
            "GET",
            &format!("/api/v1/repos/{repo}/audit?limit=100"),
            None,
        )
        .await;
    audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_string))
        .collect()
}

/// The files below `dir` that hold `needle` (in plain text) anywhere.
pub fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}
