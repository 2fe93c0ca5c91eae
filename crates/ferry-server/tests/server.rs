//! `ferry serve` end to end, in process: a real bare git repository, the real router on
//! 127.0.0.1, the real engine and processes; requests with a real HTTP client.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{Engine, EngineConfig};
use ferry_exec::LocalExecutor;
use ferry_server::{Access, AppState, Config, ROUTES, Role, auth};
use ferry_store::Store;
use ferry_testkit::git;
use serde_json::{Value, json};

struct Server {
    tmp: tempfile::TempDir,
    base: String,
    admin: String,
    store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(&tmp.path().join("data")).await.expect("store");
        let (_, admin) = auth::create_user_with_token(&store, "admin", Role::Admin)
            .await
            .expect("admin");
        Self::start_with(tmp, store, admin, false).await
    }

    /// A server on an existing store and data directory (a restart).
    async fn start_with(
        tmp: tempfile::TempDir,
        store: Store,
        admin: String,
        public_reads: bool,
    ) -> Server {
        Self::start_full(tmp, store, admin, public_reads, None, None).await
    }

    /// A server whose retention policy keeps `keep` releases per repository.
    async fn start_retaining(keep: usize) -> Server {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(&tmp.path().join("data")).await.expect("store");
        let (_, admin) = auth::create_user_with_token(&store, "admin", Role::Admin)
            .await
            .expect("admin");
        Self::start_full(tmp, store, admin, false, None, Some(keep)).await
    }

    /// A server whose jobs and deployments can use a real Docker engine.
    async fn start_docker(docker: ferry_exec::DockerExecutor) -> Server {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(&tmp.path().join("data")).await.expect("store");
        let (_, admin) = auth::create_user_with_token(&store, "admin", Role::Admin)
            .await
            .expect("admin");
        Self::start_full(tmp, store, admin, false, Some(docker), None).await
    }

    async fn start_full(
        tmp: tempfile::TempDir,
        store: Store,
        admin: String,
        public_reads: bool,
        docker: Option<ferry_exec::DockerExecutor>,
        keep: Option<usize>,
    ) -> Server {
        let data = tmp.path().join("data");
        let key = ferry_store::SecretKey::load_or_create(&data).expect("key");
        let engine = Engine::new(
            store.clone(),
            Arc::new(LocalExecutor {
                kill_grace: Duration::from_millis(500),
                ..Default::default()
            }),
            EngineConfig {
                concurrency: 2,
                work_root: tmp.path().join("work"),
                keep_workspaces: false,
                cache_max_bytes: ferry_engine::cache::DEFAULT_MAX_BYTES,
            },
        )
        .with_secret_key(key.clone());
        let engine = match docker {
            Some(d) => engine.with_containers(Arc::new(d)),
            None => engine,
        };
        let state = AppState::new(
            store.clone(),
            engine,
            Config {
                data_dir: data,
                work_root: tmp.path().join("work"),
                max_runs: 2,
                jobs_per_run: 2,
                server_id: "test".into(),
                drain: false,
                watch_tick: Duration::from_millis(100),
                public_reads,
                max_runs_per_repo: 2,
            },
            key,
        );
        // A stand-in for kubectl (no cluster can run here): it records its arguments
        // and what it was asked to apply, and answers as kubectl does.
        let kubectl = tmp.path().join("kubectl");
        std::fs::write(
            &kubectl,
            "#!/bin/sh\nd=$(dirname \"$0\")\necho \"$*\" >> \"$d/kubectl.calls\"\nfor last; do :; done\nif [ -d \"$last\" ]; then cat \"$last\"/* >> \"$d/kubectl.applied\"; echo deployment.apps/web configured; fi\ncase \"$*\" in *\"rollout status\"*) echo 'deployment \"web\" successfully rolled out';; esac\n",
        )
        .expect("stub");
        std::fs::set_permissions(
            &kubectl,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let state = state.map_deliverer(|d| d.with_kubectl(kubectl).with_retention(keep));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Server {
            tmp,
            base,
            admin,
            store,
            stop: Some(tx),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    async fn restart(mut self) -> Server {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
        let tmp = tempfile::tempdir().expect("placeholder");
        let tmp = std::mem::replace(&mut self.tmp, tmp);
        Self::start_with(tmp, self.store.clone(), self.admin.clone(), false).await
    }

    /// A bare repository with one commit holding `pipeline` as `.ferry.yml`.
    fn repository(&self, name: &str, pipeline: Option<&str>) -> PathBuf {
        let bare = self.tmp.path().join(format!("{name}.git"));
        let work = self.tmp.path().join(format!("{name}-work"));
        std::fs::create_dir_all(&work).expect("mkdir");
        git(
            self.tmp.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.display().to_string(),
            ],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        match pipeline {
            Some(p) => std::fs::write(work.join(".ferry.yml"), p).expect("write"),
            None => std::fs::write(work.join("README"), "no pipeline\n").expect("write"),
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
        bare
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().expect("method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin.clone()), body)
            .await
    }

    /// Waits (bounded) until the run has finished; returns its detail.
    async fn finished(&self, run_id: &str) -> Value {
        for _ in 0..400 {
            let (_, detail) = self
                .admin("GET", &format!("/api/v1/runs/{run_id}"), None)
                .await;
            let status = detail["run"]["status"].as_str().unwrap_or("");
            if !matches!(status, "queued" | "running") {
                return detail;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run_id} did not finish");
    }

    /// Registers a repository (no webhook secret).
    async fn register(&self, name: &str, bare: &Path) {
        let body = json!({ "name": name, "url": bare.display().to_string() });
        let (status, body) = self.admin("POST", "/api/v1/repos", Some(body)).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Triggers `main` of a repository; the run's id.
    async fn trigger(&self, repo: &str) -> String {
        let path = format!("/api/v1/repos/{repo}/runs");
        let (status, body) = self
            .admin("POST", &path, Some(json!({ "ref": "main" })))
            .await;
        assert_eq!(status, 201, "{body}");
        body["run"]["id"].as_str().expect("id").to_string()
    }

    /// A run's Server-Sent Events, read until `end`.
    async fn events(&self, run_id: &str) -> Vec<(String, Value)> {
        let resp = self
            .http
            .get(format!("{}/api/v1/runs/{run_id}/events", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("events");
        read_sse(resp).await
    }

    /// A job's stored log, as text.
    async fn log(&self, run_id: &str, job: &str) -> String {
        self.http
            .get(format!("{}/api/v1/runs/{run_id}/jobs/{job}/log", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("log")
            .text()
            .await
            .expect("text")
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

#[tokio::test]
async fn a_triggered_run_executes_and_its_log_is_served() {
    let s = Server::start().await;
    let bare = s.repository("app", Some("jobs:\n  hello:\n    run: echo \"hello from $FERRY_BRANCH at $FERRY_COMMIT_SHORT_SHA\"\n"));
    let (status, body) = s
        .admin("POST", "/api/v1/repos", Some(json!({ "name": "app", "url": bare.display().to_string(), "webhook_secret": "hush" })))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !body.to_string().contains("hush"),
        "the webhook secret is not returned"
    );
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/app/runs",
            Some(json!({ "ref": "main" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let run_id = body["run"]["id"].as_str().expect("id").to_string();
    assert_eq!(body["run"]["triggered_by"], "user:admin");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    assert_eq!(detail["jobs"][0]["name"], "hello");
    assert_eq!(detail["jobs"][0]["steps"][0]["status"], "success");
    assert_eq!(detail["plan"]["event"]["kind"], "manual");
    let log = s
        .http
        .get(format!("{}/api/v1/runs/{run_id}/jobs/hello/log", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .expect("log");
    assert_eq!(log.headers()["x-ferry-log-complete"], "true");
    let text = log.text().await.expect("text");
    assert!(text.starts_with("hello from main at "), "{text}");
    let (_, list) = s
        .admin("GET", "/api/v1/runs?repo=app&status=success", None)
        .await;
    assert_eq!(list["runs"].as_array().map(Vec::len), Some(1), "{list}");
    s.stop().await;
}

#[tokio::test]
async fn trigger_errors_are_clear() {
    let s = Server::start().await;
    let bare = s.repository("bad", Some("jobs:\n  x:\n    runn: make\n"));
    let empty = s.repository("empty", None);
    for (name, url) in [("bad", &bare), ("empty", &empty)] {
        let (status, _) = s
            .admin(
                "POST",
                "/api/v1/repos",
                Some(json!({ "name": name, "url": url.display().to_string() })),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/bad/runs",
            Some(json!({ "ref": "main" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains(".ferry.yml:3:5: error: unknown key `runn`"),
        "{body}"
    );
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/empty/runs",
            Some(json!({ "ref": "main" })),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (422, Some("the commit has no .ferry.yml"))
    );
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/bad/runs",
            Some(json!({ "ref": "nope" })),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "`nope` is not a branch, tag or commit");
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/bad/runs",
            Some(json!({ "reff": "main" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_body");
    let (status, _) = s
        .admin(
            "POST",
            "/api/v1/repos/missing/runs",
            Some(json!({ "ref": "main" })),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        s.store
            .find_runs(&ferry_store::RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("runs")
            .is_empty(),
        "nothing was queued"
    );
    s.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_running_run() {
    let s = Server::start().await;
    let pidfile = s.tmp.path().join("pids");
    let bare = s.repository(
        "slow",
        Some(&format!(
            "jobs:\n  slow:\n    run: echo $$ >> {}; sleep 300\n",
            pidfile.display()
        )),
    );
    s.register("slow", &bare).await;
    let run_id = s.trigger("slow").await;
    wait_for_file(&pidfile).await;
    let (status, body) = s
        .admin("POST", &format!("/api/v1/runs/{run_id}/cancel"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "cancelled");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    let mut gone = false;
    for _ in 0..250 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the step outlived the cancel");
    let (status, _) = s
        .admin("POST", &format!("/api/v1/runs/{run_id}/cancel"), None)
        .await;
    assert_eq!(status, 409, "a finished run cannot be cancelled");
    s.stop().await;
}

/// Every route refuses a request without a token (401) and one with too weak a role (403).
#[tokio::test]
async fn every_route_checks_the_token_and_the_role() {
    let s = Server::start().await;
    let (_, viewer) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "vic", "role": "viewer" })),
        )
        .await;
    let (_, dev) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "dee", "role": "developer" })),
        )
        .await;
    let viewer = viewer["token"].as_str().expect("token").to_string();
    let dev = dev["token"].as_str().expect("token").to_string();
    let bare = s.repository("r", Some("jobs:\n  a:\n    run: 'true'\n"));
    let (status, _) = s
        .admin(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": "r", "url": bare.display().to_string(), "webhook_secret": "k" })),
        )
        .await;
    assert_eq!(status, 201);
    for route in ROUTES {
        let (method, path, access) = (&route.method, route.path, &route.access);
        let path = path
            .replace("{provider}", "github")
            .replace("{repo}", "r")
            .replace("{run}", "x")
            .replace("{job}", "j")
            .replace("{token}", "t");
        let (status, body) = s.call(method, &path, None, None).await;
        match access {
            Access::Public => assert_eq!(status, 200, "{method} {path} is public"),
            Access::Signed | Access::Token(_) => {
                assert_eq!(
                    status, 401,
                    "{method} {path} without a token or signature: {body}"
                );
                assert_eq!(body["code"], "unauthorized");
            }
        }
        let Access::Token(needed) = access else {
            continue;
        };
        let (status, _) = s
            .call(method, &path, Some("ferry_not_a_real_token"), None)
            .await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        for (token, has) in [(&viewer, Role::Viewer), (&dev, Role::Developer)] {
            if has < *needed {
                let (status, body) = s.call(method, &path, Some(token), None).await;
                assert_eq!(status, 403, "{method} {path} as {has:?}: {body}");
                assert_eq!(body["code"], "forbidden");
            }
        }
    }
    // Tokens can be listed and revoked; a revoked token stops working.
    let (status, created) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&viewer),
            Some(json!({ "name": "ci" })),
        )
        .await;
    assert_eq!(status, 201);
    let secret = created["secret"].as_str().expect("secret").to_string();
    let id = created["token"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some(&secret), None).await.0,
        200
    );
    let (_, listed) = s.call("GET", "/api/v1/tokens", Some(&viewer), None).await;
    assert!(
        !listed.to_string().contains(&secret),
        "secrets are never listed"
    );
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&viewer),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some(&secret), None).await.0,
        401
    );
    s.stop().await;
}

fn head(bare: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["rev-parse", "main"])
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A signed GitHub push webhook starts a run of the pushed commit, once per delivery.
#[tokio::test]
async fn signed_webhooks_start_runs_once() {
    let s = Server::start().await;
    let bare = s.repository("hooked", Some("on:\n  push: { branches: [main] }\njobs:\n  built:\n    run: echo built $FERRY_EVENT $FERRY_BRANCH\n"));
    s.admin("POST", "/api/v1/repos", Some(json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": "s3cret" }))).await;
    let sha = head(&bare);
    let body = json!({
        "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "deleted": false,
        "head_commit": { "id": sha, "message": "first" }, "repository": { "full_name": "ada/hooked" }
    })
    .to_string();
    let send = |signature: String, delivery: &'static str, event: &'static str, body: String| {
        s.http
            .post(format!("{}/api/v1/hooks/github/hooked", s.base))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Bad or missing signatures: 401 and nothing created.
    let resp = send(sign("wrong", body.as_bytes()), "d-0", "push", body.clone())
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = send(String::new(), "d-0", "push", body.clone())
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(
        s.store
            .find_runs(&ferry_store::RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("runs")
            .is_empty()
    );
    // A good one is accepted at once, and becomes a run of that commit.
    let resp = send(sign("s3cret", body.as_bytes()), "d-1", "push", body.clone())
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 202);
    let runs = first_runs(&s, "hooked").await;
    assert_eq!(runs.len(), 1);
    let run_id = runs[0].id.clone();
    assert_eq!(runs[0].commit_sha, sha);
    assert_eq!(runs[0].triggered_by.as_deref(), Some("webhook:github"));
    // Its logs stream live over Server-Sent Events until it ends.
    let events = s.events(&run_id).await;
    let streamed = log_text(&events);
    assert_eq!(streamed, "built push main\n");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    let log = s.log(&run_id, "built").await;
    assert_eq!(log, "built push main\n");
    // The same delivery again starts nothing.
    let resp = send(sign("s3cret", body.as_bytes()), "d-1", "push", body.clone())
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.expect("text").contains("already handled"));
    // A ping, an unhandled event, a deleted branch and a push `on:` does not list: 200, nothing.
    let ping = json!({ "zen": "Keep it logically awesome.", "hook_id": 1 }).to_string();
    assert_eq!(
        send(sign("s3cret", ping.as_bytes()), "d-2", "ping", ping.clone())
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        send(sign("s3cret", ping.as_bytes()), "d-3", "star", ping)
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    let deleted =
        json!({ "ref": "refs/heads/old", "before": sha, "after": "0".repeat(40), "deleted": true })
            .to_string();
    assert_eq!(
        send(sign("s3cret", deleted.as_bytes()), "d-4", "push", deleted)
            .await
            .expect("send")
            .status()
            .as_u16(),
        200
    );
    let other =
        json!({ "ref": "refs/heads/other", "after": sha, "head_commit": { "message": "x" } })
            .to_string();
    // Accepted, then declined by the intake (`on:` lists only main): no run.
    let resp = send(sign("s3cret", other.as_bytes()), "d-5", "push", other)
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 202);
    // Malformed and oversized bodies.
    let bad = "{not json".to_string();
    assert_eq!(
        send(sign("s3cret", bad.as_bytes()), "d-6", "push", bad)
            .await
            .expect("send")
            .status()
            .as_u16(),
        400
    );
    let huge = "x".repeat(6 << 20);
    assert_eq!(
        send(sign("s3cret", huge.as_bytes()), "d-7", "push", huge)
            .await
            .expect("send")
            .status()
            .as_u16(),
        413
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = s
        .store
        .find_runs(&ferry_store::RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1, "exactly one run was created");
    s.stop().await;
}

/// The text of the `log` events, in order.
fn log_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(k, _)| k == "log")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reads a Server-Sent Events stream until `end`: the events as (kind, data).
async fn read_sse(resp: reqwest::Response) -> Vec<(String, Value)> {
    let mut resp = resp;
    let mut buf = String::new();
    let mut events = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
            .await
            .expect("the stream goes on")
            .expect("chunk");
        let Some(chunk) = chunk else { return events };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if kind.is_empty() {
                continue; // a keep-alive comment
            }
            let done = kind == "end";
            events.push((kind, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if done {
                return events;
            }
        }
    }
}

/// A client that connects while a step prints gets every line once, in order.
#[tokio::test]
async fn live_logs_have_no_gap_and_no_duplicate() {
    let s = Server::start().await;
    let pipeline = "jobs:\n  chatty:\n    run: |\n      i=0\n      while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); case $i in *0) sleep 0.02;; esac; done\n";
    let bare = s.repository("chatty", Some(pipeline));
    s.register("chatty", &bare).await;
    let run_id = s.trigger("chatty").await;
    // Connect in the middle: once some lines are stored, before the step has finished.
    let mut mid = false;
    for _ in 0..400 {
        let resp = s
            .http
            .get(format!("{}/api/v1/runs/{run_id}/jobs/chatty/log", s.base))
            .bearer_auth(&s.admin)
            .send()
            .await
            .expect("log");
        let text = resp.text().await.expect("text");
        if text.lines().count() >= 20 {
            mid = !text.contains("line 299");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = s
        .http
        .get(format!("{}/api/v1/runs/{run_id}/events", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_sse(resp).await;
    let text = log_text(&events);
    let expected: String = (0..300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, expected, "every line once, in order");
    assert!(mid, "the client connected while the step was printing");
    let (kind, last) = events.last().expect("events");
    assert_eq!(
        (kind.as_str(), last["status"].as_str()),
        ("end", Some("success"))
    );
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "job" && d["status"] == "success")
    );
    // A finished run streams its stored state and ends at once.
    let again = s.events(&run_id).await;
    let text = log_text(&again);
    assert_eq!(text, expected);
    s.stop().await;
}

/// Re-running only the failed jobs keeps the others' results and artifacts.
#[tokio::test]
async fn rerun_whole_or_only_failed_jobs() {
    let s = Server::start().await;
    let counter = s.tmp.path().join("builds");
    let fixed = s.tmp.path().join("fixed");
    let pipeline = format!(
        "jobs:\n  build:\n    run: echo x >> {c}; mkdir -p out; echo artifact > out/bin\n    artifacts: [out/bin]\n  flaky:\n    run: test -e {f}\n  after:\n    needs: [build, flaky]\n    run: cat out/bin\n",
        c = counter.display(),
        f = fixed.display()
    );
    let bare = s.repository("rr", Some(&pipeline));
    s.register("rr", &bare).await;
    let first = s.trigger("rr").await;
    let detail = s.finished(&first).await;
    assert_eq!(detail["run"]["status"], "failed");
    std::fs::write(&fixed, "").expect("fix");
    let (status, body) = s
        .admin(
            "POST",
            &format!("/api/v1/runs/{first}/rerun"),
            Some(json!({ "failed_only": true })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let second = body["run"]["id"].as_str().expect("id").to_string();
    let detail = s.finished(&second).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    let jobs = detail["jobs"].as_array().expect("jobs");
    let build = jobs.iter().find(|j| j["name"] == "build").expect("build");
    assert_eq!(build["status"], "success");
    assert_eq!(build["reason"], "succeeded in run 1; reused");
    assert_eq!(
        std::fs::read_to_string(&counter)
            .expect("count")
            .lines()
            .count(),
        1,
        "build did not run again"
    );
    let log = s.log(&second, "after").await;
    assert_eq!(
        log, "artifact\n",
        "the reused job's artifacts reach the jobs that need them"
    );
    assert_eq!(
        detail["run"]["commit_sha"],
        s.store.run_by_id(&first).await.expect("run").commit_sha
    );
    // A whole re-run runs everything again; nothing failed now, so failed-only refuses.
    let (status, body) = s
        .admin("POST", &format!("/api/v1/runs/{second}/rerun"), None)
        .await;
    assert_eq!(status, 201, "{body}");
    let third = body["run"]["id"].as_str().expect("id").to_string();
    assert_eq!(s.finished(&third).await["run"]["status"], "success");
    assert_eq!(
        std::fs::read_to_string(&counter)
            .expect("count")
            .lines()
            .count(),
        2
    );
    let (status, body) = s
        .admin(
            "POST",
            &format!("/api/v1/runs/{third}/rerun"),
            Some(json!({ "failed_only": true })),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("nothing_failed"))
    );
    s.stop().await;
}

fn push_commit(s: &Server, name: &str, file: &str) {
    let work = s.tmp.path().join(format!("{name}-work"));
    std::fs::write(work.join(file), "change\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "change"]);
    git(
        &work,
        &[
            "push",
            "-q",
            &s.tmp
                .path()
                .join(format!("{name}.git"))
                .display()
                .to_string(),
            "main",
        ],
    );
}

async fn runs_of(s: &Server, repo: &str) -> Vec<ferry_store::Run> {
    let id = s.store.repository(repo).await.expect("repo").id;
    s.store
        .find_runs(&ferry_store::RunFilter {
            repository_id: Some(id),
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("runs")
}

/// Waits (bounded, 10 s) until the repository has at least one run; returns its runs.
async fn first_runs(s: &Server, repo: &str) -> Vec<ferry_store::Run> {
    for _ in 0..200 {
        let runs = runs_of(s, repo).await;
        if !runs.is_empty() {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

/// Waits (bounded, 10 s) until a step has written something to `path`.
async fn wait_for_file(path: &Path) {
    for _ in 0..400 {
        if std::fs::read_to_string(path).is_ok_and(|p| !p.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A polled repository: the first poll is a baseline; a new commit starts one run.
#[tokio::test]
async fn polling_starts_a_run_for_each_new_head() {
    let s = Server::start().await;
    let bare = s.repository("polled", Some("jobs:\n  a:\n    run: echo polled\n"));
    s.store
        .create_repository(&ferry_store::NewRepository {
            name: "polled".into(),
            url: bare.display().to_string(),
            poll_interval_s: Some(1),
            ..Default::default()
        })
        .await
        .expect("repo");
    // The baseline poll records the heads and starts nothing.
    let id = s.store.repository("polled").await.expect("repo").id;
    for _ in 0..100 {
        if !s.store.heads(&id).await.expect("heads").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !s.store.heads(&id).await.expect("heads").is_empty(),
        "the first poll ran"
    );
    assert!(
        runs_of(&s, "polled").await.is_empty(),
        "a baseline starts nothing"
    );
    push_commit(&s, "polled", "new.txt");
    let runs = first_runs(&s, "polled").await;
    assert_eq!(runs.len(), 1, "the new commit started one run");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("poll"));
    assert_eq!(runs[0].branch.as_deref(), Some("main"));
    assert_eq!(s.finished(&runs[0].id).await["run"]["status"], "success");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        runs_of(&s, "polled").await.len(),
        1,
        "an unchanged head starts nothing more"
    );
    s.stop().await;
}

/// A due schedule starts one run, and a restarted server does not start it again.
#[tokio::test]
async fn schedules_fire_once_even_across_restarts() {
    let s = Server::start().await;
    let pipeline =
        "on:\n  schedule: [\"0 3 * * *\"]\njobs:\n  a:\n    run: echo scheduled $FERRY_EVENT\n";
    let bare = s.repository("nightly", Some(pipeline));
    let body =
        json!({ "name": "nightly", "url": bare.display().to_string(), "default_branch": "main" });
    s.admin("POST", "/api/v1/repos", Some(body)).await;
    let id = s.store.repository("nightly").await.expect("repo").id;
    // Pretend it last fired 25 hours ago: one daily occurrence is due now, the next is
    // hours away. (The watcher may have recorded "now" first: move it back.)
    let now = ferry_store::now_ms();
    let current = s
        .store
        .schedule_last_fired(&id, "0 3 * * *", now)
        .await
        .expect("read");
    let seeded = s
        .store
        .schedule_fired(&id, "0 3 * * *", current, now - 25 * 3_600_000)
        .await
        .expect("seed");
    assert!(seeded);
    let runs = first_runs(&s, "nightly").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].event, "schedule");
    assert_eq!(runs[0].triggered_by.as_deref(), Some("schedule:0 3 * * *"));
    assert_eq!(s.finished(&runs[0].id).await["run"]["status"], "success");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs_of(&s, "nightly").await.len(),
        1,
        "fired once, not once per tick"
    );
    let s = s.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        runs_of(&s, "nightly").await.len(),
        1,
        "the restart did not start it again"
    );
    s.stop().await;
}

/// With public reads, reads need no token; changes still do.
#[tokio::test]
async fn public_reads_open_reads_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = Store::open(&tmp.path().join("data")).await.expect("store");
    let (_, admin) = auth::create_user_with_token(&store, "admin", Role::Admin)
        .await
        .expect("admin");
    let s = Server::start_with(tmp, store, admin, true).await;
    for route in ROUTES {
        let (method, path, access) = (&route.method, route.path, &route.access);
        let path = path
            .replace("{provider}", "github")
            .replace("{repo}", "r")
            .replace("{run}", "x")
            .replace("{job}", "j")
            .replace("{token}", "t");
        let (status, _) = s.call(method, &path, None, None).await;
        match access {
            Access::Token(Role::Viewer) if *method == "GET" => {
                assert_ne!(status, 401, "{method} {path} is readable")
            }
            Access::Token(_) => assert_eq!(status, 401, "{method} {path} still needs a token"),
            _ => {}
        }
    }
    assert_eq!(
        s.call("GET", "/api/v1/repos", Some("ferry_bad"), None)
            .await
            .0,
        401,
        "a wrong token is still refused"
    );
    s.stop().await;
}

/// Variables given with a trigger reach every job; bad names are refused.
#[tokio::test]
async fn trigger_variables_reach_the_jobs() {
    let s = Server::start().await;
    let bare = s.repository(
        "vars",
        Some("env:\n  GREETING: hello\njobs:\n  show:\n    run: echo \"$GREETING $TARGET\"\n"),
    );
    s.register("vars", &bare).await;
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/vars/runs",
            Some(json!({ "ref": "main", "variables": { "TARGET": "staging", "GREETING": "hi" } })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let run_id = body["run"]["id"].as_str().expect("id").to_string();
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success");
    let log = s.log(&run_id, "show").await;
    assert_eq!(
        log, "hi staging\n",
        "trigger variables come after the pipeline's env"
    );
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/vars/runs",
            Some(json!({ "ref": "main", "variables": { "FERRY_JOB": "x" } })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    s.stop().await;
}

/// A newer run of a concurrency group with `cancel_in_progress` cancels the running one.
#[tokio::test]
async fn concurrency_groups_supersede_older_runs() {
    let s = Server::start().await;
    let pidfile = s.tmp.path().join("pids");
    let pipeline = format!(
        "concurrency:\n  group: deploy-${{{{ event.branch }}}}\n  cancel_in_progress: true\njobs:\n  deploy:\n    run: echo $$ >> {}; sleep 300\n",
        pidfile.display()
    );
    let bare = s.repository("deploys", Some(&pipeline));
    s.register("deploys", &bare).await;
    let first = s.trigger("deploys").await;
    wait_for_file(&pidfile).await;
    let second = s.trigger("deploys").await;
    let detail = s.finished(&first).await;
    assert_eq!(
        detail["run"]["status"], "cancelled",
        "the newer run superseded it"
    );
    // The second now runs (and sleeps): cancel it to end the test.
    for _ in 0..400 {
        if std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, d) = s
        .admin("GET", &format!("/api/v1/runs/{second}"), None)
        .await;
    assert_eq!(d["run"]["status"], "running");
    s.admin("POST", &format!("/api/v1/runs/{second}/cancel"), None)
        .await;
    assert_eq!(s.finished(&second).await["run"]["status"], "cancelled");
    s.stop().await;
}

/// The served OpenAPI document lists every route with its method and security.
#[tokio::test]
async fn openapi_lists_every_route() {
    let s = Server::start().await;
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is in the document",
            route.method,
            route.path
        );
        assert_eq!(op["summary"], route.summary);
        let secured = op["security"].as_array().is_some_and(|a| !a.is_empty());
        assert_eq!(
            secured,
            matches!(route.access, Access::Token(_)),
            "{} {}",
            route.method,
            route.path
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "nothing documented that is not a route"
    );
    s.stop().await;
}

#[tokio::test]
async fn caches_are_listed_and_cleared_through_the_api() {
    let s = Server::start().await;
    let bare = s.repository(
        "cached",
        Some("jobs:\n  deps:\n    cache: { key: deps-v1, paths: [vendor] }\n    run: mkdir -p vendor && echo x > vendor/f\n"),
    );
    s.register("cached", &bare).await;
    let run_id = s.trigger("cached").await;
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success");
    assert_eq!(detail["images"], json!([]), "the run lists its images");
    let (status, body) = s.admin("GET", "/api/v1/repos/cached/caches", None).await;
    assert_eq!(status, 200, "{body}");
    let caches = body["caches"].as_array().expect("caches");
    assert_eq!(caches.len(), 1, "{body}");
    assert_eq!(caches[0]["key"], "deps-v1");
    assert_eq!(caches[0]["paths"], json!(["vendor"]));
    let (status, body) = s
        .admin("DELETE", "/api/v1/repos/cached/caches?key=other", None)
        .await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(0)));
    let (status, body) = s
        .admin("DELETE", "/api/v1/repos/cached/caches?key=deps-v1", None)
        .await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)));
    let (_, body) = s.admin("GET", "/api/v1/repos/cached/caches", None).await;
    assert_eq!(body["caches"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn registry_logins_are_set_listed_without_passwords_and_removed() {
    let s = Server::start().await;
    let bare = s.repository("reg", Some("jobs:\n  a:\n    run: 'true'\n"));
    s.register("reg", &bare).await;
    let password = "pw-5d1c-only-sealed";
    let path = "/api/v1/repos/reg/registries/127.0.0.1:5000";
    let (status, body) = s
        .admin(
            "PUT",
            path,
            Some(json!({ "username": "ci", "password": password })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["registry"]["username"], "ci");
    assert!(!body.to_string().contains(password));
    let (status, body) = s.admin("GET", "/api/v1/repos/reg/registries", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["registries"][0]["host"], "127.0.0.1:5000");
    assert_eq!(body["registries"][0]["updated_by"], "user:admin");
    assert!(!body.to_string().contains(password), "never returned");
    let (status, body) = s
        .admin(
            "PUT",
            path,
            Some(json!({ "username": "ci", "password": "" })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = s.admin("DELETE", path, None).await;
    assert_eq!(status, 200);
    let (status, body) = s.admin("DELETE", path, None).await;
    assert_eq!(status, 404, "{body}");
    s.stop().await;
}

/// Waits (bounded) until the repository has `n` releases; returns them, newest first.
async fn releases_of(s: &Server, repo: &str, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let (_, body) = s
            .admin("GET", &format!("/api/v1/repos/{repo}/releases"), None)
            .await;
        let list = body["releases"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("repository {repo} did not get {n} release(s)");
}

#[tokio::test]
async fn a_successful_run_of_the_default_branch_seals_a_release() {
    let s = Server::start().await;
    let pipeline = "jobs:
  build:
    run: mkdir -p bin && printf 'app v1' > bin/app && chmod +x bin/app
    artifacts: [bin/app]
  test:
    needs: build
    run: test -x bin/app
release:
  artifacts: [build]
";
    let bare = s.repository("sealed", Some(pipeline));
    s.register("sealed", &bare).await;
    let run_id = s.trigger("sealed").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let releases = releases_of(&s, "sealed", 1).await;
    let name = releases[0]["name"].as_str().expect("name").to_string();
    let sha = head(&bare);
    assert_eq!(name, format!("r1-{}", &sha[..7]));
    let (_, body) = s
        .admin(
            "GET",
            &format!("/api/v1/repos/sealed/releases/{name}"),
            None,
        )
        .await;
    let release = &body["release"];
    assert_eq!(release["commit_sha"], sha);
    assert_eq!(release["run_number"], 1);
    assert_eq!(release["ferry_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        release["plan_hash"]
            .as_str()
            .expect("hash")
            .starts_with("sha256:")
    );
    let artifact = &release["artifacts"][0];
    assert_eq!(artifact["path"], "bin/app");
    assert_eq!(artifact["job"], "build");
    assert_eq!(artifact["mode"], 0o755);
    let digest = ferry_deliver::cas::digest_of(b"app v1");
    assert_eq!(artifact["digest"], digest.as_str());
    // The run names its release; the audit log records the sealing.
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["release"]["name"], name.as_str());
    let (_, audit) = s.admin("GET", "/api/v1/repos/sealed/audit", None).await;
    assert_eq!(audit["audit"][0]["action"], "release.seal");
    assert_eq!(audit["audit"][0]["target"], name.as_str());
    // A run of another branch seals nothing.
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/sealed/runs",
            Some(json!({ "ref": sha })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let other = body["run"]["id"].as_str().expect("id").to_string();
    s.finished(&other).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, detail) = s.admin("GET", &format!("/api/v1/runs/{other}"), None).await;
    assert_eq!(
        detail["release"],
        Value::Null,
        "a detached commit is not releasable"
    );
    assert_eq!(releases_of(&s, "sealed", 1).await.len(), 1);
    s.stop().await;
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sets the variable `PORT` of each environment to a free port; returns the ports.
async fn set_ports(s: &Server, repo: &str, envs: &[&str]) -> Vec<u16> {
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

/// Polls `GET path` until `done` says yes (bounded); returns the last body.
async fn wait_until(s: &Server, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, body) = s.admin("GET", path, None).await;
        if done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, deployments) = s.admin("GET", "/api/v1/repos/shop/deployments", None).await;
    let (_, output) = s
        .admin(
            "GET",
            "/api/v1/repos/shop/environments/sandbox/output",
            None,
        )
        .await;
    let (_, log) = s
        .admin("GET", "/api/v1/repos/shop/deployments/sandbox.1/log", None)
        .await;
    panic!(
        "{what}: not reached; last answer: {last}\ndeployments: {deployments}\nsandbox output: {output}\nlog: {log}"
    );
}

fn env_of<'a>(envs: &'a Value, name: &str) -> &'a Value {
    envs["environments"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The delivery pipeline of the process-target tests: the app is busybox httpd serving
/// `www/` (its health page says which release it is) and printing its secret.
const DELIVERY: &str = "jobs:
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

#[tokio::test]
async fn a_release_goes_through_sandbox_and_staging_and_waits_for_approval() {
    let s = Server::start().await;
    let bare = s.repository("shop", Some(DELIVERY));
    // version 1 of the app
    let work = s.tmp.path().join("shop-work");
    std::fs::write(work.join("version"), "v1\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
    s.register("shop", &bare).await;
    let secret = "planted-secret-7c9e2a41";
    set_ports(&s, "shop", &["sandbox", "staging", "production"]).await;
    let (status, body) = s
        .admin(
            "PUT",
            "/api/v1/repos/shop/secrets/TOKEN",
            Some(json!({ "value": secret })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Approvers: ada wrote the commit; bob did not.
    let (_, ada) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "ada", "role": "approver" })),
        )
        .await;
    let (_, bob) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "bob", "role": "approver" })),
        )
        .await;
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    // Sandbox, then staging, go live on their own; production waits.
    let envs = wait_until(&s, "/api/v1/repos/shop/environments", "staging live", |b| {
        !env_of(b, "staging")["live"].is_null()
            && !env_of(b, "production")["pending"]
                .as_array()
                .is_none_or(|p| p.is_empty())
    })
    .await;
    let release = env_of(&envs, "sandbox")["live"]["release"]
        .as_str()
        .expect("release")
        .to_string();
    assert_eq!(
        env_of(&envs, "staging")["live"]["release"],
        release.as_str()
    );
    assert_eq!(env_of(&envs, "production")["live"], Value::Null);
    assert_eq!(
        env_of(&envs, "production")["pending"][0]["status"],
        "awaiting_approval"
    );
    let waiting = env_of(&envs, "production")["pending"][0]["deployment"]
        .as_str()
        .expect("label")
        .to_string();
    assert_eq!(waiting, "production#1");
    // The staging app answers on its port with the release's page.
    let staging_port = {
        let (_, vars) = s
            .admin(
                "GET",
                "/api/v1/repos/shop/variables?environment=staging",
                None,
            )
            .await;
        vars["variables"][0]["value"]
            .as_str()
            .expect("port")
            .to_string()
    };
    let page = reqwest::get(format!("http://127.0.0.1:{staging_port}/healthz"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert_eq!(page, "ok v1\n");
    // What the approver sees.
    let (status, detail) = s
        .admin("GET", "/api/v1/repos/shop/deployments/production.1", None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["changes"]["live_release"], Value::Null);
    assert_eq!(detail["changes"]["commits"][0]["subject"], "v1");
    assert_eq!(
        detail["changes"]["artifacts"].as_array().map(Vec::len),
        Some(2)
    );
    // The author may not approve; bob may; approving twice is refused.
    let approve = "/api/v1/repos/shop/deployments/production.1/approve";
    let ada_token = ada["token"].as_str().expect("token").to_string();
    let bob_token = bob["token"].as_str().expect("token").to_string();
    let (status, body) = s
        .call("POST", approve, Some(&ada_token), Some(json!({})))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("the commit's author"),
        "{body}"
    );
    let (status, body) = s
        .call(
            "POST",
            approve,
            Some(&bob_token),
            Some(json!({ "comment": "ship it" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .call("POST", approve, Some(&bob_token), Some(json!({})))
        .await;
    assert_eq!(status, 409, "{body}");
    let envs = wait_until(
        &s,
        "/api/v1/repos/shop/environments",
        "production live",
        |b| !env_of(b, "production")["live"].is_null(),
    )
    .await;
    let prod = &env_of(&envs, "production")["live"];
    assert_eq!(prod["release"], release.as_str());
    assert_eq!(prod["approved_by"], json!(["bob"]));
    for env in ["sandbox", "staging"] {
        assert_eq!(
            env_of(&envs, env)["live"]["artifacts"],
            prod["artifacts"],
            "the same digests everywhere"
        );
    }
    // The secret reached the process and is masked in its output; it is nowhere in
    // plain text: not in the data directory, not in any API answer.
    let (_, output) = s
        .admin(
            "GET",
            "/api/v1/repos/shop/environments/production/output",
            None,
        )
        .await;
    let output = output.as_str().unwrap_or_default().to_string();
    assert!(output.contains("starting with token ***"), "{output}");
    let (_, audit) = s
        .admin("GET", "/api/v1/repos/shop/audit?limit=100", None)
        .await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "release.seal",
        "deployment.request",
        "deployment.live",
        "deployment.approve",
        "secret.set",
        "variable.set",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    let mut answers = String::new();
    for path in [
        "/api/v1/repos/shop/secrets".to_string(),
        "/api/v1/repos/shop/environments".into(),
        "/api/v1/repos/shop/deployments".into(),
        "/api/v1/repos/shop/deployments/production.1".into(),
        "/api/v1/repos/shop/deployments/production.1/log".into(),
        "/api/v1/repos/shop/audit".into(),
        format!("/api/v1/runs/{run_id}"),
    ] {
        answers.push_str(&s.admin("GET", &path, None).await.1.to_string());
    }
    assert!(!answers.contains(secret), "an API answer holds the secret");
    for entry in walkdir::WalkDir::new(s.tmp.path().join("data"))
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            let plain = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!plain, "{} holds the secret", entry.path().display());
        }
    }
    // The process's own secret files live in memory, outside the data directory, and
    // go when the server stops.
    let shm = {
        use sha2::Digest as _;
        let data = s.tmp.path().join("data").display().to_string();
        let id = hex::encode(&sha2::Sha256::digest(data.as_bytes())[..6]);
        std::path::Path::new("/dev/shm").join(format!("ferry-{id}"))
    };
    let files: Vec<_> = walkdir::WalkDir::new(&shm)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "TOKEN")
        .collect();
    assert!(
        !files.is_empty() || !std::path::Path::new("/dev/shm").is_dir(),
        "secret files in {}",
        shm.display()
    );
    s.stop().await;
    assert!(
        !shm.exists(),
        "{} is removed with the server",
        shm.display()
    );
}

/// Pushes a commit that sets `version` in the `shop`-like repository `name`.
fn push_version(s: &Server, name: &str, version: &str) {
    let work = s.tmp.path().join(format!("{name}-work"));
    std::fs::write(work.join("version"), format!("{version}\n")).expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", version]);
    let bare = s.tmp.path().join(format!("{name}.git"));
    git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
}

/// A repository with the delivery pipeline, its ports, and a first release live in
/// sandbox and staging (production waits for approval).
async fn shop_with_v1(s: &Server, name: &str) {
    let bare = s.repository(name, Some(DELIVERY));
    let _ = bare;
    push_version(s, name, "v1");
    s.register(name, &s.tmp.path().join(format!("{name}.git")))
        .await;
    set_ports(s, name, &["sandbox", "staging", "production"]).await;
    let run_id = s.trigger(name).await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    wait_until(
        s,
        &format!("/api/v1/repos/{name}/environments"),
        "v1 in staging",
        |b| !env_of(b, "staging")["live"].is_null(),
    )
    .await;
}

#[tokio::test]
async fn a_release_that_fails_its_health_check_is_rolled_back_and_goes_no_further() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let envs = s
        .admin("GET", "/api/v1/repos/shop/environments", None)
        .await
        .1;
    let v1 = env_of(&envs, "sandbox")["live"]["release"]
        .as_str()
        .expect("v1")
        .to_string();
    push_version(&s, "shop", "broken");
    let run_id = s.trigger("shop").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let deployments = wait_until(
        &s,
        "/api/v1/repos/shop/deployments?environment=sandbox",
        "rolled back",
        |b| {
            b["deployments"]
                .as_array()
                .is_some_and(|l| l.iter().any(|d| d["status"] == "rolled_back"))
        },
    )
    .await;
    let list = deployments["deployments"].as_array().expect("list");
    let failed = list
        .iter()
        .find(|d| d["status"] == "rolled_back")
        .expect("failed");
    let v2 = failed["release"].as_str().expect("v2").to_string();
    assert_ne!(v2, v1);
    assert!(
        failed["reason"]
            .as_str()
            .expect("reason")
            .contains("the body does not contain `ok v`"),
        "{failed}"
    );
    let back = list
        .iter()
        .find(|d| d["kind"] == "rollback")
        .expect("rollback");
    assert_eq!(back["release"], v1.as_str());
    assert_eq!(back["status"], "live");
    let envs = s
        .admin("GET", "/api/v1/repos/shop/environments", None)
        .await
        .1;
    assert_eq!(
        env_of(&envs, "sandbox")["live"]["release"],
        v1.as_str(),
        "v1 serves again"
    );
    assert_eq!(
        env_of(&envs, "staging")["live"]["release"],
        v1.as_str(),
        "v2 never reached staging"
    );
    // Promoting the failed release by hand is refused, and changes nothing.
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/deployments",
            Some(json!({ "release": v2, "environment": "staging" })),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["message"],
        format!("release {v2} failed in `sandbox` and is never promoted further")
    );
    let (_, audit) = s
        .admin("GET", "/api/v1/repos/shop/audit?limit=100", None)
        .await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"deployment.failed") && actions.contains(&"deployment.rollback"),
        "{actions:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_delivery_requests_are_refused_and_change_nothing() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let before = s
        .admin("GET", "/api/v1/repos/shop/deployments", None)
        .await
        .1;
    let envs = s
        .admin("GET", "/api/v1/repos/shop/environments", None)
        .await
        .1;
    let v1 = env_of(&envs, "sandbox")["live"]["release"]
        .as_str()
        .expect("v1")
        .to_string();
    let promote = |release: &str, env: &str| json!({ "release": release, "environment": env });
    let cases = [
        (
            promote("r99-nope", "staging"),
            404,
            "there is no release `r99-nope`".to_string(),
        ),
        (
            promote(&v1, "moon"),
            409,
            format!(
                "release {v1} has no environment `moon`; its environments are: sandbox, staging, production, frozen, broken"
            ),
        ),
        (
            promote(&v1, "frozen"),
            409,
            "`frozen` is frozen from 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z; nothing deploys there now".to_string(),
        ),
        (
            promote(&v1, "sandbox"),
            409,
            format!("release {v1} is already live in `sandbox`"),
        ),
        (
            promote(&v1, "production"),
            409,
            format!(
                "release {v1} is already on its way to `production` (deployment production#1, awaiting_approval)"
            ),
        ),
    ];
    for (body, status, message) in cases {
        let (got, answer) = s
            .admin("POST", "/api/v1/repos/shop/deployments", Some(body))
            .await;
        assert_eq!(
            (got, answer["message"].as_str().unwrap_or("")),
            (status, message.as_str()),
            "{answer}"
        );
    }
    // Approving what does not wait for approval.
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/deployments/sandbox.1/approve",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["message"],
        "deployment sandbox#1 is not waiting for approval (it is live)"
    );
    // A developer may not approve at all.
    let (_, dev) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "dev", "role": "developer" })),
        )
        .await;
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/repos/shop/deployments/production.1/approve",
            dev["token"].as_str(),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);
    let after = s
        .admin("GET", "/api/v1/repos/shop/deployments", None)
        .await
        .1;
    assert_eq!(before, after, "no deployment changed");
    // A target that cannot start: the deployment fails with the reason; nothing is live.
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/shop/deployments",
            Some(promote(&v1, "broken")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let failed = wait_until(
        &s,
        "/api/v1/repos/shop/deployments/broken.1",
        "broken failed",
        |b| b["deployment"]["status"] == "failed",
    )
    .await;
    assert_eq!(
        failed["deployment"]["reason"],
        "the process exited with code 127"
    );
    let envs = s
        .admin("GET", "/api/v1/repos/shop/environments", None)
        .await
        .1;
    assert_eq!(env_of(&envs, "broken")["live"], Value::Null);
    // A rejection stops the deployment for good.
    let (_, carol) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "carol", "role": "approver" })),
        )
        .await;
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/repos/shop/deployments/production.1/reject",
            carol["token"].as_str(),
            Some(json!({ "comment": "not today" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["status"], "rejected");
    assert_eq!(body["deployment"]["reason"], "rejected by carol");
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/repos/shop/deployments/production.1/approve",
            carol["token"].as_str(),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "a rejected deployment takes no more decisions");
    s.stop().await;
}

#[tokio::test]
async fn concurrent_promotions_deploy_one_at_a_time() {
    let s = Server::start().await;
    let pipeline = DELIVERY.replace("environments:\n", "environments:\n  demo: {}\n");
    let bare = s.repository("demoshop", Some(&pipeline));
    push_version(&s, "demoshop", "v1");
    s.register("demoshop", &bare).await;
    set_ports(
        &s,
        "demoshop",
        &["sandbox", "staging", "production", "demo"],
    )
    .await;
    let mut releases = Vec::new();
    for (i, version) in ["v1", "v2"].iter().enumerate() {
        if i > 0 {
            push_version(&s, "demoshop", version);
        }
        let run_id = s.trigger("demoshop").await;
        assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
        releases.push(
            releases_of(&s, "demoshop", i + 1).await[0]["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
    }
    // Six requests at once, three for each release.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let body = json!({ "release": releases[i % 2], "environment": "demo" });
        let http = s.http.clone();
        let url = format!("{}/api/v1/repos/demoshop/deployments", s.base);
        let token = s.admin.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("send");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("join");
        match status {
            201 => created += 1,
            409 => assert!(body.contains("already"), "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(created >= 2, "each release is accepted once at least");
    let done = wait_until(
        &s,
        "/api/v1/repos/demoshop/deployments?environment=demo",
        "demo settled",
        |b| {
            b["deployments"].as_array().is_some_and(|l| {
                l.len() == created
                    && l.iter()
                        .all(|d| d["status"] == "live" || d["status"] == "replaced")
            })
        },
    )
    .await;
    let list = done["deployments"].as_array().expect("list");
    assert_eq!(
        list.iter().filter(|d| d["status"] == "live").count(),
        1,
        "one live release"
    );
    let mut spans: Vec<(i64, i64)> = list
        .iter()
        .map(|d| {
            (
                d["started_at"].as_i64().expect("started"),
                d["finished_at"].as_i64().expect("finished"),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "deployments overlapped: {spans:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn live_environments_run_again_after_a_restart() {
    let s = Server::start().await;
    shop_with_v1(&s, "shop").await;
    let (_, vars) = s
        .admin(
            "GET",
            "/api/v1/repos/shop/variables?environment=sandbox",
            None,
        )
        .await;
    let port = vars["variables"][0]["value"]
        .as_str()
        .expect("port")
        .to_string();
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(
        reqwest::get(&url)
            .await
            .expect("up")
            .text()
            .await
            .expect("text"),
        "ok v1\n"
    );
    let s = s.restart().await;
    let mut answer = None;
    for _ in 0..200 {
        if let Ok(resp) = reqwest::get(&url).await {
            answer = resp.text().await.ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer.as_deref(), Some("ok v1\n"), "sandbox serves again");
    let (_, output) = s
        .admin(
            "GET",
            "/api/v1/repos/shop/environments/sandbox/output",
            None,
        )
        .await;
    let output = output.as_str().unwrap_or_default().to_string();
    assert_eq!(
        output.matches("ferry: starting release").count(),
        2,
        "{output}"
    );
    assert!(
        output.contains("ferry: stopped\n"),
        "stopped with the server: {output}"
    );
    s.stop().await;
}

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
    let bare = s.repository("targets", Some(pipeline));
    s.register("targets", &bare).await;
    s.admin(
        "PUT",
        "/api/v1/repos/targets/variables/REGION",
        Some(json!({ "value": "eu-1" })),
    )
    .await;
    s.admin(
        "PUT",
        "/api/v1/repos/targets/secrets/API_KEY",
        Some(json!({ "value": "script-secret-55" })),
    )
    .await;
    s.admin(
        "PUT",
        "/api/v1/repos/targets/secrets/KUBECONFIG",
        Some(json!({ "value": "apiVersion: v1\nkind: Config\n", "environment": "cluster" })),
    )
    .await;
    let run_id = s.trigger("targets").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let envs = wait_until(
        &s,
        "/api/v1/repos/targets/environments",
        "cluster live",
        |b| !env_of(b, "cluster")["live"].is_null(),
    )
    .await;
    let release = env_of(&envs, "ops")["live"]["release"]
        .as_str()
        .expect("release")
        .to_string();
    let (_, log) = s
        .admin("GET", "/api/v1/repos/targets/deployments/ops.1/log", None)
        .await;
    let log = log.as_str().expect("text").to_string();
    assert!(
        log.contains(&format!("deploying {release} to ops in eu-1 with ***\n")),
        "{log}"
    );
    assert!(!log.contains("script-secret-55"));
    // kubectl: apply the rendered manifests, then wait for the rollout, with the
    // environment's kubeconfig secret as a file and the namespace resolved.
    let calls = std::fs::read_to_string(s.tmp.path().join("kubectl.calls")).expect("calls");
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
    let applied = std::fs::read_to_string(s.tmp.path().join("kubectl.applied")).expect("applied");
    assert!(
        applied.contains("kind: Deployment") && applied.contains("image: busybox:1"),
        "{applied}"
    );
    let (_, klog) = s
        .admin(
            "GET",
            "/api/v1/repos/targets/deployments/cluster.1/log",
            None,
        )
        .await;
    assert!(
        klog.as_str()
            .expect("text")
            .contains("deployment \"web\" successfully rolled out"),
        "{klog}"
    );
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
    let (Ok(image), Ok(registry)) = (
        std::env::var("FERRY_TEST_IMAGE"),
        std::env::var("FERRY_TEST_REGISTRY"),
    ) else {
        assert!(
            std::env::var_os("FERRY_SKIP_DOCKER").is_some(),
            "set FERRY_TEST_IMAGE and FERRY_TEST_REGISTRY (scripts/test.sh) or FERRY_SKIP_DOCKER=1"
        );
        return;
    };
    let mut docker = ferry_exec::DockerExecutor::connect().await.expect("docker");
    docker.kill_grace = Duration::from_millis(500);
    let s = Server::start_docker(docker).await;
    let name = format!("{registry}/ferry-test/deployed-{}", std::process::id());
    let bare = s.repository("boxed", Some(&docker_delivery(&image, &name)));
    push_version(&s, "boxed", "v1");
    s.register("boxed", &bare).await;
    let ports = set_ports(&s, "boxed", &["sandbox", "staging", "production"]).await;
    let (_, bob) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "bob", "role": "approver" })),
        )
        .await;
    let (_, ada) = s
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({ "name": "ada", "role": "approver" })),
        )
        .await;
    let run_id = s.trigger("boxed").await;
    assert_eq!(
        s.finished(&run_id).await["run"]["status"],
        "success",
        "{}",
        s.log(&run_id, "image").await
    );
    wait_until(
        &s,
        "/api/v1/repos/boxed/environments",
        "staging live",
        |b| {
            !env_of(b, "staging")["live"].is_null()
                && env_of(b, "production")["pending"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
        },
    )
    .await;
    let approve = "/api/v1/repos/boxed/deployments/production.1/approve";
    let (status, _) = s
        .call("POST", approve, ada["token"].as_str(), Some(json!({})))
        .await;
    assert_eq!(status, 403, "the author may not approve");
    let (status, body) = s
        .call("POST", approve, bob["token"].as_str(), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    let envs = wait_until(
        &s,
        "/api/v1/repos/boxed/environments",
        "production live",
        |b| !env_of(b, "production")["live"].is_null(),
    )
    .await;
    let digest = env_of(&envs, "production")["live"]["images"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    assert!(digest.starts_with("sha256:"));
    for (env, port) in ["sandbox", "staging", "production"].iter().zip(&ports) {
        assert_eq!(
            env_of(&envs, env)["live"]["images"][0]["digest"],
            digest.as_str(),
            "{env}"
        );
        let page = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .expect("up")
            .text()
            .await
            .expect("text");
        assert_eq!(
            page, "ok v1\n",
            "{env} serves the release on 127.0.0.1:{port}"
        );
    }
    let sandbox_apps = docker_ps("label=ferry.release");
    assert!(sandbox_apps.contains("ferry-sandbox-r1-"), "{sandbox_apps}");
    // A broken release: sandbox rolls back to the kept v1 container at once.
    push_version(&s, "boxed", "broken");
    let run_id = s.trigger("boxed").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let deps = wait_until(
        &s,
        "/api/v1/repos/boxed/deployments?environment=sandbox",
        "rolled back",
        |b| {
            b["deployments"]
                .as_array()
                .is_some_and(|l| l.iter().any(|d| d["status"] == "rolled_back"))
                && b["deployments"].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|d| d["kind"] == "rollback" && d["status"] == "live")
                })
        },
    )
    .await;
    let _ = deps;
    let page = reqwest::get(format!("http://127.0.0.1:{}/healthz", ports[0]))
        .await
        .expect("up")
        .text()
        .await
        .expect("text");
    assert_eq!(page, "ok v1\n", "v1 serves sandbox again");
    let envs = s
        .admin("GET", "/api/v1/repos/boxed/environments", None)
        .await
        .1;
    assert_eq!(
        env_of(&envs, "staging")["live"]["images"][0]["digest"],
        digest.as_str(),
        "the broken release went no further"
    );
    let (_, repo) = s.admin("GET", "/api/v1/repos/boxed", None).await;
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

#[tokio::test]
async fn webhook_secrets_are_stored_sealed_and_still_verify() {
    let s = Server::start().await;
    let bare = s.repository("hooked", Some("jobs:\n  a:\n    run: 'true'\n"));
    let secret = "whsec-plain-6d2f";
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": "hooked", "url": bare.display().to_string(), "webhook_secret": secret })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains(secret));
    for entry in walkdir::WalkDir::new(s.tmp.path().join("data"))
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the webhook secret",
                entry.path().display()
            );
        }
    }
    let sha = head(&bare);
    let payload = json!({ "ref": "refs/heads/main", "after": sha, "head_commit": { "id": sha, "message": "m" } })
        .to_string();
    let resp = s
        .http
        .post(format!("{}/api/v1/hooks/github/hooked", s.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "sealed-1")
        .header("X-Hub-Signature-256", sign(secret, payload.as_bytes()))
        .body(payload)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status().as_u16(),
        202,
        "the sealed secret still verifies"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_retention_policy_prunes_releases_no_environment_runs() {
    let s = Server::start_retaining(1).await;
    let pipeline = "jobs:
  build:
    run: mkdir -p out && cat version > out/v
    artifacts: [out/v]
release: { artifacts: [build] }
environments:
  demo: {}
deploy:
  target: { process: { command: exec sleep 300 } }
";
    let bare = s.repository("kept", Some(pipeline));
    push_version(&s, "kept", "v1");
    s.register("kept", &bare).await;
    let mut names = Vec::new();
    for (i, v) in ["v1", "v2"].iter().enumerate() {
        if i > 0 {
            push_version(&s, "kept", v);
        }
        let run_id = s.trigger("kept").await;
        assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
        names.push(
            releases_of(&s, "kept", i + 1).await[0]["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
    }
    // v1 is beyond the newest one and runs nowhere: pruned, and it cannot be deployed.
    wait_until(
        &s,
        &format!("/api/v1/repos/kept/releases/{}", names[0]),
        "v1 pruned",
        |b| b["release"]["pruned_at"].is_i64(),
    )
    .await;
    let (_, r2) = s
        .admin(
            "GET",
            &format!("/api/v1/repos/kept/releases/{}", names[1]),
            None,
        )
        .await;
    assert!(r2["release"]["pruned_at"].is_null());
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/repos/kept/deployments",
            Some(json!({ "release": names[0], "environment": "demo" })),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!(
            "release {} was pruned by the retention policy: its files are gone",
            names[0]
        )
    );
    // A release an environment runs is kept however old.
    let (status, _) = s
        .admin(
            "POST",
            "/api/v1/repos/kept/deployments",
            Some(json!({ "release": names[1], "environment": "demo" })),
        )
        .await;
    assert_eq!(status, 201);
    wait_until(&s, "/api/v1/repos/kept/environments", "demo live", |b| {
        !env_of(b, "demo")["live"].is_null()
    })
    .await;
    push_version(&s, "kept", "v3");
    let run_id = s.trigger("kept").await;
    s.finished(&run_id).await;
    releases_of(&s, "kept", 3).await;
    let (_, r2) = s
        .admin(
            "GET",
            &format!("/api/v1/repos/kept/releases/{}", names[1]),
            None,
        )
        .await;
    assert!(r2["release"]["pruned_at"].is_null(), "live in demo: kept");
    let (_, audit) = s
        .admin("GET", "/api/v1/repos/kept/audit?limit=100", None)
        .await;
    assert!(audit.to_string().contains("release.prune"));
    s.stop().await;
}

#[tokio::test]
async fn hostile_names_in_delivery_requests_are_refused() {
    let s = Server::start().await;
    let bare = s.repository("hostile", Some("jobs:\n  a:\n    run: 'true'\n"));
    s.register("hostile", &bare).await;
    // A path out of the data directory through the environment's name.
    let (status, body) = s
        .admin(
            "GET",
            "/api/v1/repos/hostile/environments/..%2F..%2F..%2Fetc/output",
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    for (path, value) in [
        (
            "/api/v1/repos/hostile/variables/..%2Fx",
            json!({ "value": "v" }),
        ),
        (
            "/api/v1/repos/hostile/variables/FERRY_X",
            json!({ "value": "v" }),
        ),
        (
            "/api/v1/repos/hostile/secrets/A",
            json!({ "value": "v", "environment": "../prod" }),
        ),
        (
            "/api/v1/repos/hostile/secrets/A",
            json!({ "value": "v", "environment": "Prod" }),
        ),
    ] {
        let (status, body) = s.admin("PUT", path, Some(value)).await;
        assert_eq!(status, 422, "{path}: {body}");
    }
    // A huge value is refused by the body limit, an unknown field by the schema.
    let huge = "x".repeat(3 << 20);
    let (status, _) = s
        .admin(
            "PUT",
            "/api/v1/repos/hostile/secrets/BIG",
            Some(json!({ "value": huge })),
        )
        .await;
    assert_eq!(status, 413);
    let (status, _) = s
        .admin(
            "PUT",
            "/api/v1/repos/hostile/secrets/A",
            Some(json!({ "value": "v", "scope": "x" })),
        )
        .await;
    assert_eq!(status, 422);
    let (_, listed) = s.admin("GET", "/api/v1/repos/hostile/secrets", None).await;
    assert_eq!(listed["secrets"], json!([]), "nothing was stored");
    s.stop().await;
}
