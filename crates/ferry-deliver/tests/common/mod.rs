//! A deliverer over a real store in a temporary data directory, releases made the way
//! sealing makes them (files in the content-addressed store, the delivery configuration
//! of a `.ferry.yml` serialised into the release), and bounded waits on the store.

#![allow(dead_code)] // each test uses a part

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_deliver::cas::Cas;
use ferry_deliver::deliverer::{Actor, Deliverer};
use ferry_store::{
    AuditEntry, Deployment, DeploymentStatus, NewRelease, NewRepository, NewRun, Release,
    ReleaseArtifact, SecretKey, Store,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The author of every release's commit (`not: [author]` excludes `ada`).
pub const AUTHOR: &str = "Ada Lovelace <ada@example.com>";
/// Who triggered every release's run.
pub const TRIGGERER: &str = "user:tess";
/// How long a wait on the store may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Quick verification: a command probe that passes, over a short window.
pub const VERIFY_OK: &str = "verify: { command: \"true\", for: 100ms, interval: 25ms }";

/// A file of a release: path, content, mode.
pub type File<'a> = (&'a str, &'a str, u32);

/// The files of an ordinary release.
pub const APP: &[File<'static>] = &[("app.sh", "#!/bin/sh\necho app\n", 0o755)];

pub struct Harness {
    pub tmp: tempfile::TempDir,
    /// The server's data directory.
    pub data: PathBuf,
    /// A directory for what scripts and processes write (`$OUT`).
    pub out: PathBuf,
    pub store: Store,
    pub key: SecretKey,
    pub repo: String,
    pub deliverer: Deliverer,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Harness {
    /// A store with one repository and its variable `OUT`; the loop is not running.
    pub async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        let store = Store::open(&data).await.expect("store");
        let key = SecretKey::load_or_create(&data).expect("key");
        let repo = store
            .create_repository(&NewRepository {
                name: "shop".into(),
                url: tmp.path().join("shop.git").display().to_string(),
                ..Default::default()
            })
            .await
            .expect("repository")
            .id;
        store
            .set_variable(&repo, "", "OUT", &out.display().to_string(), Some("admin"))
            .await
            .expect("variable");
        let deliverer = Deliverer::new(store.clone(), &data, key.clone());
        Self {
            tmp,
            data,
            out,
            store,
            key,
            repo,
            deliverer,
            running: None,
        }
    }

    /// Runs the deliverer's loop in a task of its own.
    pub fn start(&mut self) {
        assert!(self.running.is_none(), "the loop runs already");
        let stop = CancellationToken::new();
        let d = self.deliverer.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move { d.run(token).await });
        self.running = Some((stop, task));
    }

    /// Stops the loop and waits for it (deployments in flight stop, supervised
    /// processes end); without a loop, stops the supervisor's processes.
    pub async fn stop(&mut self) {
        match self.running.take() {
            Some((stop, task)) => {
                stop.cancel();
                task.await.expect("the loop ended cleanly");
            }
            None => self.deliverer.supervisor().shutdown().await,
        }
    }

    /// A "restart" as `ferry serve` does it: the loop stops; a new deliverer on the
    /// same store, data directory and key recovers, then its loop starts.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.deliverer = Deliverer::new(self.store.clone(), &self.data, self.key.clone());
        self.deliverer.recover().await.expect("recover");
        self.start();
    }

    /// Creates release `name` as sealing does: a run, `files` in the content-addressed
    /// store, and the delivery configuration of a pipeline whose other sections are
    /// `delivery` (environments and deploy).
    pub async fn release(&self, name: &str, delivery: &str, files: &[File<'_>]) -> Release {
        let sha = format!("{:0>40}", hex_of(name));
        let (run, _) = self
            .store
            .create_run(&NewRun {
                repository_id: self.repo.clone(),
                event: "push".into(),
                git_ref: "refs/heads/main".into(),
                branch: Some("main".into()),
                tag: None,
                commit_sha: sha.clone(),
                dirty: false,
                author: AUTHOR.into(),
                message: format!("release {name}"),
                plan: "{}".into(),
                triggered_by: Some(TRIGGERER.into()),
                concurrency_group: None,
                jobs: Vec::new(),
            })
            .await
            .expect("run");
        let cas = Cas::new(self.data.join("cas"));
        let staging = self.tmp.path().join("staging").join(name);
        let mut artifacts = Vec::new();
        for (path, content, mode) in files {
            let file = staging.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, content).expect("write");
            let (digest, size) = cas.put_file(&file).expect("cas");
            artifacts.push(ReleaseArtifact {
                job: "build".into(),
                path: path.to_string(),
                digest,
                size: size as i64,
                mode: i64::from(*mode),
            });
        }
        self.store
            .create_release(&NewRelease {
                repository_id: self.repo.clone(),
                name: name.into(),
                run_id: run.id.clone(),
                run_number: run.number,
                commit_sha: sha,
                git_ref: run.git_ref.clone(),
                tag: None,
                author: AUTHOR.into(),
                triggered_by: Some(TRIGGERER.into()),
                plan_hash: format!("sha256:{:0>64}", run.number),
                ferry_version: "test".into(),
                delivery: delivery_json(delivery),
                artifacts,
                images: Vec::new(),
            })
            .await
            .expect("release")
    }

    /// [`release`](Self::release), then the deliverer hears of it.
    pub async fn seal(&self, name: &str, delivery: &str, files: &[File<'_>]) -> Release {
        let release = self.release(name, delivery, files).await;
        self.deliverer
            .on_release(&release)
            .await
            .expect("on_release");
        release
    }

    /// Deployment `ENV#N`, if it exists.
    pub async fn find(&self, env: &str, number: i64) -> Option<Deployment> {
        self.store
            .find_deployment(&self.repo, &format!("{env}#{number}"))
            .await
            .ok()
    }

    /// Deployment `ENV#N`, which must exist.
    pub async fn deployment(&self, env: &str, number: i64) -> Deployment {
        self.find(env, number)
            .await
            .unwrap_or_else(|| panic!("there is no deployment {env}#{number}"))
    }

    /// Waits (bounded) until deployment `ENV#N` exists and `ok` holds of it; fails with
    /// the last state seen.
    pub async fn wait_for(
        &self,
        env: &str,
        number: i64,
        what: &str,
        ok: impl Fn(&Deployment) -> bool,
    ) -> Deployment {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let last = self.find(env, number).await;
            if let Some(d) = &last
                && ok(d)
            {
                return d.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{env}#{number} did not become {what} within {DEADLINE:?}; last seen: {last:#?}\nall: {:#?}",
                    self.summary().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until deployment `ENV#N` has `status`.
    pub async fn wait_status(
        &self,
        env: &str,
        number: i64,
        status: DeploymentStatus,
    ) -> Deployment {
        self.wait_for(env, number, status.as_str(), |d| d.status == status)
            .await
    }

    /// The environment's deployments, oldest first.
    pub async fn deployments(&self, env: &str) -> Vec<Deployment> {
        let mut all = self
            .store
            .deployments(&self.repo, Some(env), 1000)
            .await
            .expect("deployments");
        all.sort_by_key(|d| d.number);
        all
    }

    /// Every deployment as `ENV#N RELEASE KIND STATUS (reason)`, for failure messages.
    pub async fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut all = self
            .store
            .deployments(&self.repo, None, 1000)
            .await
            .unwrap_or_default();
        all.reverse();
        for d in all {
            out.push(format!(
                "{}#{} {} {} {} ({})",
                d.environment,
                d.number,
                self.release_name(&d.release_id).await,
                d.kind.as_str(),
                d.status.as_str(),
                d.reason.as_deref().unwrap_or("")
            ));
        }
        out
    }

    pub async fn release_name(&self, id: &str) -> String {
        self.store
            .release(&self.repo, id)
            .await
            .map(|r| r.name)
            .unwrap_or_else(|_| format!("<unknown release {id}>"))
    }

    /// The name of the release live in `env`.
    pub async fn live(&self, env: &str) -> Option<String> {
        let live = self
            .store
            .live_deployment(&self.repo, env)
            .await
            .expect("live")?;
        Some(self.release_name(&live.release_id).await)
    }

    /// The repository's audit log, oldest first.
    pub async fn audit(&self) -> Vec<AuditEntry> {
        let mut log = self
            .store
            .audit_log(Some(&self.repo), 10_000)
            .await
            .expect("audit");
        log.reverse();
        log
    }

    /// The log of a deployment, as written.
    pub fn log_of(&self, d: &Deployment) -> String {
        std::fs::read_to_string(self.deliverer.deployment_log(d)).unwrap_or_default()
    }

    /// `<data>/deploy/<repo>/<env>`.
    pub fn env_dir(&self, env: &str) -> PathBuf {
        self.data.join("deploy").join(&self.repo).join(env)
    }

    /// The pid the supervisor runs for `env`, once it runs release `release`.
    pub async fn process_pid(&self, env: &str, release: &str) -> i32 {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let state = self.deliverer.supervisor().state(&self.repo, env).await;
            if let Some(s) = &state
                && s.release == release
                && let Some(pid) = s.pid
            {
                return pid;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no process of release {release} runs in `{env}`; last state: {state:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `file` (under `$OUT`) holds a pid; returns it.
    pub async fn pid_in(&self, file: &str) -> i32 {
        let path = self.out.join(file);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(pid) = ferry_testkit::pids_in(&path).last() {
                return *pid;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} holds no pid", path.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `file` (under `$OUT`) holds at least `n` pids; returns them.
    pub async fn pids(&self, file: &str, n: usize) -> Vec<i32> {
        let path = self.out.join(file);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let pids = ferry_testkit::pids_in(&path);
            if pids.len() >= n {
                return pids;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{} holds {pids:?}, not {n} pids", path.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the audit log has an entry `action` on `target`.
    pub async fn wait_audit(&self, action: &str, target: &str) -> AuditEntry {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let log = self.audit().await;
            if let Some(e) = log
                .iter()
                .find(|e| e.action == action && e.target == target)
            {
                return e.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no `{action}` of {target} in the audit log: {log:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What a refused request must leave unchanged: every deployment and the audit log.
    pub async fn snapshot(&self) -> (Vec<String>, usize) {
        (self.summary().await, self.audit().await.len())
    }
}

/// Waits (bounded) until the file at `path` contains `text`; returns its content.
pub async fn wait_contains(path: &Path, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{} does not contain `{text}`: {content}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded, without blocking the runtime) until `pid` is gone, then confirms
/// it with `ferry_testkit::gone`.
pub async fn wait_gone(pid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ferry_testkit::alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ferry_testkit::gone(pid)
}

/// A person; `may_approve`: holds the approver role.
pub fn actor(name: &str, may_approve: bool) -> Actor {
    Actor {
        user_id: format!("id-{name}"),
        name: name.into(),
        may_approve,
    }
}

/// The serialised delivery configuration of a pipeline with a `build` job whose
/// artifacts are released, and these `environments:`/`deploy:` sections — loaded and
/// checked by `ferry_config::load` as a `.ferry.yml`.
pub fn delivery_json(sections: &str) -> String {
    let source = format!(
        "jobs:\n  build:\n    run: \"true\"\n    artifacts: [app.sh]\nrelease:\n  artifacts: [build]\n{sections}"
    );
    let loaded = ferry_config::load(&source).unwrap_or_else(|diags| {
        panic!(
            "invalid pipeline:\n{source}\n{}",
            ferry_config::render_all(&diags, ".ferry.yml", &source, false)
        )
    });
    serde_json::to_string(&loaded.pipeline.delivery).expect("json")
}

fn hex_of(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}
