//! `ferry serve` in process, for `crates/ferry-server/tests/`: a real store in a
//! temporary directory, the real router on 127.0.0.1, the real engine and processes,
//! and a client ([`Client`]) whose every JSON answer is checked against the server's
//! OpenAPI document.
//!
//! No test sleeps to let something happen: it waits, bounded, for the state it expects
//! ([`wait_for`] and the helpers built on it), and a wait that runs out fails with what
//! it last saw.

mod client;
mod delivery;
mod openapi;
mod wait;
mod web;
pub use web::{Page, Web, http, input_value};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{Engine, EngineConfig};
use ferry_exec::{DockerExecutor, LocalExecutor};
use ferry_server::{AppState, Config, Role, auth};
use ferry_store::Store;
use serde_json::{Value, json};

use crate::git;

pub use crate::files_holding;
pub use client::{Answer, Client, log_text, read_sse};
pub use delivery::{
    DELIVERY, DeploymentRef, audit_actions, env_of, free_port, health_page, live_release, promote,
    push_version, set_ports, shop_with_v1,
};
pub use openapi::{check_answer, compile_schema, route_of, standalone};
pub use wait::{WAIT, wait_for, wait_for_exit, wait_for_file, wait_for_lines};

/// Prometheus' own check of a `/metrics` text (`promtool check metrics`, from Debian's
/// `prometheus`, which scripts/test.sh installs): panics with what it says.
pub fn promtool(text: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; scripts/test.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How a [`Server`] is set up; `Options::default()` is what most tests want.
#[derive(Clone, Default)]
pub struct Options {
    /// Requests without a token may read (`Config::public_reads`).
    pub public_reads: bool,
    /// Jobs with an `image:` and `docker` deploy targets use this Docker engine.
    pub docker: Option<DockerExecutor>,
    /// The retention policy keeps this many releases per repository.
    pub keep_releases: Option<usize>,
    /// Keep the newest this many runs of each repository (`Config::keep_runs`).
    pub keep_runs: Option<usize>,
    /// Where notifications go out from (links, SMTP relay, certificates).
    pub notify: ferry_server::notify::NotifyConfig,
    /// Where traces go (none: traces off).
    pub traces: Option<ferry_server::traces::TraceConfig>,
    /// The `terraform` of environments with `infra:` (none: `terraform` on the PATH).
    pub terraform: Option<PathBuf>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("public_reads", &self.public_reads)
            .field("docker", &self.docker.is_some())
            .field("keep_releases", &self.keep_releases)
            .field("keep_runs", &self.keep_runs)
            .field("notify", &self.notify)
            .field("traces", &self.traces)
            .field("terraform", &self.terraform)
            .finish()
    }
}

/// A running server with its own data directory, and an `admin` token.
#[derive(Debug)]
pub struct Server {
    tmp: tempfile::TempDir,
    /// The store the server uses (tests may read it, or seed what no route sets).
    pub store: Store,
    /// The `admin` user's token.
    pub admin: String,
    client: Client,
    options: Options,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// A server with a fresh store and the default options.
    pub async fn start() -> Server {
        Self::start_with(Options::default()).await
    }

    /// A server with a fresh store.
    pub async fn start_with(options: Options) -> Server {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(&tmp.path().join("data")).await.expect("store");
        let (_, admin) = auth::create_user_with_token(&store, "admin", Role::Admin)
            .await
            .expect("admin");
        Self::boot(tmp, store, admin, options).await
    }

    async fn boot(tmp: tempfile::TempDir, store: Store, admin: String, options: Options) -> Server {
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
                log_limit: Some(ferry_engine::DEFAULT_LOG_LIMIT),
                job_timeout: None,
            },
        )
        .with_secret_key(key.clone());
        let docker = options.docker.clone().map(Arc::new);
        let engine = match docker.clone() {
            Some(d) => engine.with_containers(d),
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
                lease: Duration::from_secs(30),
                drain: false,
                watch_tick: Duration::from_millis(100),
                public_reads: options.public_reads,
                max_runs_per_repo: 2,
                keep_runs: options.keep_runs,
                keep_for: None,
            },
            key,
        );
        let kubectl = fake_kubectl(tmp.path());
        // The tests' environment repositories are bare repositories in the test's directory.
        let tmp_root = tmp.path().to_path_buf();
        let keep = options.keep_releases;
        let terraform = options.terraform.clone();
        // One CA option, as `ferry serve --ca-file`: probes and notifications trust it.
        let ca = options
            .notify
            .ca_pem
            .as_ref()
            .map(|pem| reqwest::Certificate::from_pem_bundle(pem).expect("CA certificates"));
        let state = state
            .map_deliverer(|d| {
                let d = d
                    .with_kubectl(kubectl)
                    .with_gitops_local(vec![tmp_root.clone()])
                    .with_retention(keep)
                    .with_docker(docker)
                    .with_ca(ca);
                match terraform {
                    Some(t) => d.with_terraform(t),
                    None => d,
                }
            })
            .with_notifications(options.notify.clone())
            .expect("notifications");
        let state = match &options.traces {
            Some(config) => state.with_traces(config.clone()),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferry_server::serve(listener, None, state, async move {
            let _ = rx.await;
        }));
        Server {
            tmp,
            store,
            client: Client::new(base, admin.clone()),
            admin,
            options,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and starts a new one on the same data directory and store, with
    /// the same options. Stopping waits until every run the server was executing has
    /// ended, sealing included, so a restart is also a point where nothing is in flight.
    pub async fn restart(mut self) -> Server {
        self.shut_down().await;
        let placeholder = tempfile::tempdir().expect("placeholder");
        let tmp = std::mem::replace(&mut self.tmp, placeholder);
        let options = self.options.clone();
        Self::boot(tmp, self.store.clone(), self.admin.clone(), options).await
    }

    /// Stops the server and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }

    /// The server's temporary directory: `data/` (the data directory), `work/`, the
    /// repositories made by [`Server::repository`], and whatever a test puts there.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A client of this server (cheap to clone, e.g. into spawned tasks).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `METHOD path` with a bearer `token` and a JSON `body`: the status and the JSON
    /// answer (a text answer as a JSON string), checked against the OpenAPI document.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.client.call(method, path, token, body).await
    }

    /// [`Server::call`] with the admin's token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.client.admin(method, path, body).await
    }

    /// A request to build further (headers, a raw body); send it with [`Server::send`].
    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, path)
    }

    /// Sends a request, checking the answer against the OpenAPI document.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.client.send(request).await
    }

    /// A job's stored log, as text.
    pub async fn log(&self, run_id: &str, job: &str) -> String {
        self.client.log(run_id, job).await
    }

    /// A run's Server-Sent Events, read until `end`, as (kind, data).
    pub async fn events(&self, run_id: &str) -> Vec<(String, serde_json::Value)> {
        self.client.events(run_id).await
    }

    /// A bare repository `<dir>/<name>.git` with one commit holding `pipeline` as
    /// `.ferry.yml` (or only a README), made from the working copy `<dir>/<name>-work`.
    pub fn repository(&self, name: &str, pipeline: Option<&str>) -> PathBuf {
        crate::bare_repository(self.dir(), name, pipeline)
    }

    /// A repository made by [`Server::repository`] with `pipeline`, registered under
    /// `name` (see [`Server::register`]); its bare path.
    pub async fn add_repository(&self, name: &str, pipeline: &str) -> PathBuf {
        let bare = self.repository(name, Some(pipeline));
        self.register(name, &bare).await;
        bare
    }

    /// The bare repository made by [`Server::repository`].
    pub fn bare(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.git"))
    }

    /// The working copy of a repository made by [`Server::repository`].
    pub fn work(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}-work"))
    }

    /// Commits `content` as `file` in the repository's working copy, with `message`,
    /// and pushes it to `main`.
    pub fn push_file(&self, name: &str, file: &str, content: &str, message: &str) {
        let work = self.work(name);
        if let Some(dir) = work.join(file).parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(work.join(file), content).expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(
            &work,
            &["push", "-q", &self.bare(name).display().to_string(), "main"],
        );
    }

    /// Pushes a commit that adds `file` to the repository.
    pub fn push_commit(&self, name: &str, file: &str) {
        self.push_file(name, file, "change\n", "change");
    }

    /// Registers a repository by its bare path (no webhook secret).
    pub async fn register(&self, name: &str, bare: &Path) {
        let body = json!({ "name": name, "url": bare.display().to_string() });
        let (status, body) = self.admin("POST", "/api/v1/repos", Some(body)).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Creates a user with `role` through the API; returns its first token.
    pub async fn user(&self, name: &str, role: &str) -> String {
        let (status, body) = self
            .admin(
                "POST",
                "/api/v1/users",
                Some(json!({ "name": name, "role": role })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// Triggers `main` of a repository; the run's id.
    pub async fn trigger(&self, repo: &str) -> String {
        let (status, body) = self.trigger_with(repo, json!({ "ref": "main" })).await;
        assert_eq!(status, 201, "{body}");
        run_id_in(&body)
    }

    /// Asks for a run of a repository with `body` (`POST …/runs`, as admin): the answer.
    pub async fn trigger_with(&self, repo: &str, body: Value) -> (u16, Value) {
        let path = format!("/api/v1/repos/{repo}/runs");
        self.admin("POST", &path, Some(body)).await
    }

    /// Asks for a re-run of a run, of its failed jobs only or of all (`POST …/rerun`).
    pub async fn rerun(&self, run_id: &str, failed_only: bool) -> (u16, Value) {
        let body = failed_only.then(|| json!({ "failed_only": true }));
        let path = format!("/api/v1/runs/{run_id}/rerun");
        self.admin("POST", &path, body).await
    }

    /// Asks for a run to be cancelled (`POST …/cancel`).
    pub async fn cancel(&self, run_id: &str) -> (u16, Value) {
        let path = format!("/api/v1/runs/{run_id}/cancel");
        self.admin("POST", &path, None).await
    }

    /// `GET path` as admin: the answer's body, whatever its status (still checked
    /// against the OpenAPI document).
    pub async fn get(&self, path: &str) -> Value {
        self.admin("GET", path, None).await.1
    }

    /// The runs of a repository, newest first (at most 50).
    pub async fn runs_of(&self, repo: &str) -> Vec<ferry_store::Run> {
        let id = self.store.repository(repo).await.expect("repo").id;
        self.store
            .find_runs(&ferry_store::RunFilter {
                repository_id: Some(id),
                limit: 50,
                ..Default::default()
            })
            .await
            .expect("runs")
    }

    /// Every run of every repository (at most 10).
    pub async fn all_runs(&self) -> Vec<ferry_store::Run> {
        self.store
            .find_runs(&ferry_store::RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("runs")
    }
}

/// The id of the run an answer holds (`{"run": {"id": …}}`).
pub fn run_id_in(body: &Value) -> String {
    body["run"]["id"].as_str().expect("id").to_string()
}

/// The `message` of an error answer ("" when it has none).
pub fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or("")
}

/// The commit `main` of a repository points at.
pub fn head(repo: &Path) -> String {
    git(repo, &["rev-parse", "main"])
}

/// A stand-in for kubectl (no cluster can run here): it records its arguments in
/// `<dir>/kubectl.calls` (its `HOME` and `KUBERC` in `<dir>/kubectl.env`), what it was asked to apply from a directory in
/// `<dir>/kubectl.applied` and from its standard input in `<dir>/kubectl.stdin` (one
/// line each), and answers as kubectl does.
fn fake_kubectl(dir: &Path) -> PathBuf {
    let kubectl = dir.join("kubectl");
    std::fs::write(
        &kubectl,
        r#"#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/kubectl.calls"
echo "HOME=$HOME KUBERC=$KUBERC" >> "$d/kubectl.env"
for last; do :; done
if [ "$last" = "-" ]; then cat >> "$d/kubectl.stdin"; echo >> "$d/kubectl.stdin"; echo 'configmap/app serverside-applied'; fi
if [ -d "$last" ]; then cat "$last"/* >> "$d/kubectl.applied"; echo deployment.apps/web configured; fi
case "$*" in
  *" patch "*) echo 'deployment.apps/web patched';;
  *"rollout status"*) echo 'deployment "web" successfully rolled out';;
esac
"#,
    )
    .expect("stub");
    std::fs::set_permissions(
        &kubectl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    kubectl
}

/// Ends the SMTP sink when the test ends.
#[derive(Debug)]
pub struct Sink(std::process::Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An SMTP sink (Debian's `python3-aiosmtpd`, which scripts/test.sh installs) on
/// 127.0.0.1:`port` keeping each message in the maildir `dir`; `extra` are more of its
/// options (`--smtpscert FILE --smtpskey FILE` for SMTPS).
pub async fn smtp_sink(dir: &Path, port: u16, extra: &[&str]) -> Sink {
    let child = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(extra)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3-aiosmtpd (scripts/test.sh installs it)");
    let sink = Sink(child);
    wait_for("the SMTP sink listening", async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    sink
}
