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
    for: 2s
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
        s.set_variable(repo, "PORT", &port.to_string(), Some(env))
            .await;
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
    s.wait_for_live(name, "staging").await;
    // Staging's going live asks production for approval next: wait for that too.
    let production = format!("/api/v1/repos/{name}/deployments?environment=production");
    s.wait_until(&production, "production#1 awaits approval", |b| {
        b["deployments"][0]["status"] == "awaiting_approval"
    })
    .await;
}

/// The name of the release live in an environment.
pub async fn live_release(s: &Server, repo: &str, env: &str) -> String {
    let envs = s.environments(repo).await;
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
    let audit = s
        .get(&format!("/api/v1/repos/{repo}/audit?limit=100"))
        .await;
    audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str().map(str::to_string))
        .collect()
}

/// The page an app serves at `/healthz` on 127.0.0.1:`port` (the [`DELIVERY`] app says
/// which release it is).
pub async fn health_page(port: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("up")
        .text()
        .await
        .expect("text")
}

impl Server {
    /// Sets a variable of a repository (of one environment, or of all); it must succeed.
    pub async fn set_variable(&self, repo: &str, name: &str, value: &str, env: Option<&str>) {
        self.set_setting(repo, "variables", name, value, env).await;
    }

    /// Sets a secret of a repository (of one environment, or of all); it must succeed.
    pub async fn set_secret(&self, repo: &str, name: &str, value: &str, env: Option<&str>) {
        self.set_setting(repo, "secrets", name, value, env).await;
    }

    async fn set_setting(
        &self,
        repo: &str,
        kind: &str,
        name: &str,
        value: &str,
        env: Option<&str>,
    ) {
        let body = match env {
            Some(env) => json!({ "value": value, "environment": env }),
            None => json!({ "value": value }),
        };
        let path = format!("/api/v1/repos/{repo}/{kind}/{name}");
        let (status, body) = self.admin("PUT", &path, Some(body)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    /// Runs `main` of a repository, which must succeed, and waits for the release it
    /// seals, the repository's `nth`; that release's name.
    pub async fn seal_release(&self, repo: &str, nth: usize) -> String {
        let run_id = self.trigger(repo).await;
        assert_eq!(self.finished(&run_id).await["run"]["status"], "success");
        self.releases_of(repo, nth).await[0]["name"]
            .as_str()
            .expect("name")
            .to_string()
    }

    /// The environments of a repository (`GET …/environments`); see [`env_of`].
    pub async fn environments(&self, repo: &str) -> Value {
        self.get(&format!("/api/v1/repos/{repo}/environments"))
            .await
    }

    /// What the app running in an environment has printed (`GET …/output`).
    pub async fn output(&self, repo: &str, env: &str) -> String {
        let path = format!("/api/v1/repos/{repo}/environments/{env}/output");
        self.get(&path)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the deployments to `env` (newest first) satisfy `done`; returns them.
    pub async fn wait_for_deployments(
        &self,
        repo: &str,
        env: &str,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let path = format!("/api/v1/repos/{repo}/deployments?environment={env}");
        let answer = self
            .wait_until(&path, what, |b| {
                b["deployments"].as_array().is_some_and(|l| done(l))
            })
            .await;
        answer["deployments"].as_array().expect("list").clone()
    }

    /// A deployment of a repository by its label (`production#1`), to decide on.
    pub fn deployment<'a>(&'a self, repo: &str, label: &str) -> DeploymentRef<'a> {
        let label = label.replace('#', ".");
        DeploymentRef {
            server: self,
            path: format!("/api/v1/repos/{repo}/deployments/{label}"),
        }
    }

    /// Waits until a release is live in `env`; returns the repository's environments.
    /// On time-out it says what each deployment to `env` became, and why.
    pub async fn wait_for_live(&self, repo: &str, env: &str) -> Value {
        let envs = format!("/api/v1/repos/{repo}/environments");
        let deployments = format!("/api/v1/repos/{repo}/deployments?environment={env}");
        super::wait_for(&format!("{env} live"), async || {
            let (_, answer) = self.admin("GET", &envs, None).await;
            if !env_of(&answer, env)["live"].is_null() {
                return Ok(answer);
            }
            let (_, list) = self.admin("GET", &deployments, None).await;
            let seen: Vec<String> = list["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{} {} {}", d["label"], d["status"], d["reason"]))
                .collect();
            Err(seen)
        })
        .await
    }
}

/// One deployment of a repository (see [`Server::deployment`]): the decisions on it.
#[derive(Debug)]
pub struct DeploymentRef<'a> {
    server: &'a Server,
    path: String,
}

impl DeploymentRef<'_> {
    /// The user with `token` approves it, with an optional comment: the answer.
    pub async fn approve(&self, token: &str, comment: Option<&str>) -> (u16, Value) {
        self.decide("approve", token, comment).await
    }

    /// The user with `token` rejects it, with an optional comment: the answer.
    pub async fn reject(&self, token: &str, comment: Option<&str>) -> (u16, Value) {
        self.decide("reject", token, comment).await
    }

    /// The user with `token` approves it, naming the Terraform plan approved.
    pub async fn approve_plan(&self, token: &str, plan: &str) -> (u16, Value) {
        let path = format!("{}/approve", self.path);
        self.server
            .call("POST", &path, Some(token), Some(json!({ "plan": plan })))
            .await
    }

    /// What an approver sees (`GET` of the deployment).
    pub async fn detail(&self) -> Value {
        self.server.get(&self.path).await
    }

    async fn decide(&self, decision: &str, token: &str, comment: Option<&str>) -> (u16, Value) {
        let body = match comment {
            Some(comment) => json!({ "comment": comment }),
            None => json!({}),
        };
        let path = format!("{}/{decision}", self.path);
        self.server
            .call("POST", &path, Some(token), Some(body))
            .await
    }
}
