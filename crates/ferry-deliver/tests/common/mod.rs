//! A deliverer over a real store in a temporary data directory, releases made the way
//! sealing makes them (files in the content-addressed store, the delivery configuration
//! of a `.ferry.yml` serialised into the release), and bounded waits on the store.
//!
//! Shared by the deliverer's test files, one a concern: `entering.rs`, `approvals.rs`,
//! `promotion.rs`, `failures.rs`, `rollback.rs`, `recovery.rs`, `secrets.rs`, `audit.rs`.

#![allow(dead_code)] // each test uses a part

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_deliver::cas::Cas;
use ferry_deliver::deliverer::{Actor, DeliverError, Deliverer, Vote};
use ferry_store::{
    AuditEntry, Deployment, DeploymentStatus, NewRelease, NewRepository, NewRun, Release,
    ReleaseArtifact, SecretKey, Store,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The git author of every release's commit (who pushed it is [`TRIGGERER`]).
pub const AUTHOR: &str = "Ada Lovelace <ada@example.com>";
/// Who triggered every release's run: `not: [author]` and `not: [triggerer]` exclude
/// tess.
pub const TRIGGERER: &str = "user:tess";
/// How long a wait on the store may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Quick verification: a command probe that passes, over a short window.
pub const VERIFY_OK: &str = "verify: { command: \"true\", for: 100ms, interval: 25ms }";

/// A file of a release: path, content, mode.
pub type File<'a> = (&'a str, &'a str, u32);

/// The files of an ordinary release.
pub const APP: &[File<'static>] = &[("app.sh", "#!/bin/sh\necho app\n", 0o755)];

/// A release that passes its verification.
pub const GOOD: &[File<'static>] = &[
    ("app.sh", "#!/bin/sh\necho app\n", 0o755),
    ("check.sh", "#!/bin/sh\nexit 0\n", 0o755),
];

/// A release whose verification fails (`check.sh` exits 1).
pub const BAD: &[File<'static>] = &[
    ("app.sh", "#!/bin/sh\necho app\n", 0o755),
    ("check.sh", "#!/bin/sh\nexit 1\n", 0o755),
];

/// Why a release with [`BAD`] fails.
pub const UNHEALTHY: &str = "not healthy within 0.1s: `./check.sh`: exited with exit status: 1";

/// Freezes that last the whole test: from 2000 to 2100.
pub const FROZEN: &str = "freeze: { from: \"2000-01-01T00:00:00Z\", to: \"2100-01-01T00:00:00Z\" }";

/// The default deploy: a script that records what it deployed where (`$OUT/deploys`),
/// verified by the release's own `check.sh`.
pub const SCRIPT: &str = "deploy:
  target:
    script:
      run: echo \"$FERRY_ENVIRONMENT $FERRY_RELEASE\" >> \"$OUT/deploys\"; echo \"script sees $FERRY_COMMIT_SHA in $PWD\"
  verify: { command: ./check.sh, for: 100ms, interval: 25ms }
";

/// A pipeline with these `environments:` (their lines, indented), all deployed by
/// [`SCRIPT`].
pub fn scripted(environments: &str) -> String {
    format!("environments:\n{environments}{SCRIPT}")
}

/// One auto environment, `sandbox`, the default deploy.
pub fn sandbox_only() -> String {
    scripted("  sandbox: { auto: true }\n")
}

/// sandbox (auto) → production, approved as `approval` (a flow mapping) says.
pub fn gated(approval: &str) -> String {
    scripted(&format!(
        "  sandbox: {{ auto: true }}\n  production:\n    after: sandbox\n    approval: {approval}\n"
    ))
}

/// sandbox (auto) → production (two approvals, never the commit's author).
pub fn approvals() -> String {
    gated("{ required: 2, not: [author] }")
}

/// One environment `web` running a supervised process that records its pid in
/// `$OUT/web.pids`, verified by the release's `check.sh`; `on_failure` as given.
pub fn process(on_failure: &str) -> String {
    format!(
        "environments:
  web: {{ auto: true }}
deploy:
  target:
    process:
      command: echo $$ >> \"$OUT/web.pids\"; exec sleep 300
  verify: {{ command: ./check.sh, for: 100ms, interval: 25ms }}
  on_failure: {on_failure}
"
    )
}

/// A person; `may_approve`: holds the approver role.
pub fn actor(name: &str, may_approve: bool) -> Actor {
    Actor {
        user_id: format!("id-{name}"),
        name: name.into(),
        may_approve,
        forge: Vec::new(),
        groups: Vec::new(),
    }
}

/// Dave, a developer: he may promote and roll back, not approve.
pub fn dave() -> Actor {
    actor("dave", false)
}

/// What a person asks of the deliverer.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// Approve deployment `ENV#N`.
    Approve(&'a str),
    /// Reject deployment `ENV#N`.
    Reject(&'a str),
    /// Promote release `.0` to environment `.1`.
    Promote(&'a str, &'a str),
    /// Roll environment `.0` back: to the release live before, or to release `.1`.
    Rollback(&'a str, Option<&'a str>),
}

/// How the deliverer refuses a request (a [`DeliverError`] other than the store's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    Invalid,
    Conflict,
    Forbidden,
}

/// The refusal and its message, if `result` is one.
pub fn refusal<T>(result: &Result<T, DeliverError>) -> Option<(Refusal, &str)> {
    match result {
        Err(DeliverError::NotFound(m)) => Some((Refusal::NotFound, m)),
        Err(DeliverError::Invalid(m)) => Some((Refusal::Invalid, m)),
        Err(DeliverError::Conflict(m)) => Some((Refusal::Conflict, m)),
        Err(DeliverError::Forbidden(m)) => Some((Refusal::Forbidden, m)),
        _ => None,
    }
}

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
    /// The working copy whose `main` is pushed to [`mirror`](Self::mirror).
    pub work: PathBuf,
    /// The server's mirror of the repository.
    pub mirror: PathBuf,
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
        // The server's mirror of the repository, where the rules come from: its
        // default branch's head. Each release is a commit on it (see `release`).
        let work = tmp.path().join("shop-work");
        std::fs::create_dir_all(&work).expect("work");
        let mirror = data.join("mirrors").join(format!("{repo}.git"));
        ferry_testkit::git(
            tmp.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &mirror.display().to_string(),
            ],
        );
        ferry_testkit::git(&work, &["init", "-q", "-b", "main"]);
        let deliverer = Deliverer::new(store.clone(), &data, key.clone());
        Self {
            work,
            mirror,
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

    /// [`new`](Self::new), with the loop running.
    pub async fn started() -> Self {
        let mut h = Self::new().await;
        h.start();
        h
    }

    /// A running harness whose sandbox ([`sandbox_only`]) ran each of `releases` in
    /// turn, each with [`GOOD`] files: the last one is live, the ones before replaced.
    pub async fn with_history(releases: &[&str]) -> Self {
        let h = Self::started().await;
        for (i, name) in releases.iter().enumerate() {
            h.seal(name, &sandbox_only(), GOOD).await;
            h.wait_audit("deployment.live", &format!("sandbox#{}", i + 1))
                .await;
        }
        h
    }

    /// A running harness that sealed v1 ([`GOOD`]) with `config`: production#1 awaits
    /// approval and its request is in the audit log.
    pub async fn awaiting(config: &str) -> Self {
        let h = Self::started().await;
        h.seal("v1", config, GOOD).await;
        h.wait_production_awaits().await;
        h
    }

    /// Waits (bounded) until production#1 awaits approval and its request is in the
    /// audit log.
    pub async fn wait_production_awaits(&self) {
        self.wait_status("production", 1, DeploymentStatus::AwaitingApproval)
            .await;
        self.wait_audit("deployment.request", "production#1").await;
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

    /// Commits a `.ferry.yml` whose other sections are `delivery` to `main` and pushes
    /// it to the mirror: the repository's rules from now on. The commit's id.
    pub fn commit(&self, delivery: &str, message: &str) -> String {
        self.commit_file(&pipeline(delivery), message)
    }

    /// The commit at the head of `main`.
    pub fn head(&self) -> String {
        ferry_testkit::git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Commits `content` as `.ferry.yml` to `main` and pushes it to the mirror.
    pub fn commit_file(&self, content: &str, message: &str) -> String {
        std::fs::write(self.work.join(".ferry.yml"), content).expect("write");
        ferry_testkit::git(&self.work, &["add", "-A"]);
        ferry_testkit::git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        let mirror = self.mirror.display().to_string();
        ferry_testkit::git(&self.work, &["push", "-q", &mirror, "main"]);
        ferry_testkit::git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Creates release `name` as sealing does: a run of a new commit on `main` whose
    /// `.ferry.yml` has `delivery` (environments and deploy) as its other sections (so
    /// they become the repository's rules too), `files` in the content-addressed store,
    /// and that delivery configuration in the release.
    pub async fn release(&self, name: &str, delivery: &str, files: &[File<'_>]) -> Release {
        let sha = self.commit(delivery, &format!("release {name}"));
        self.release_of(name, &sha, delivery, files).await
    }

    /// Creates release `name` of commit `sha` as sealing does, with `delivery` as its
    /// configuration, without changing the repository's rules.
    pub async fn release_of(
        &self,
        name: &str,
        sha: &str,
        delivery: &str,
        files: &[File<'_>],
    ) -> Release {
        let sha = sha.to_string();
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

    /// `who` asks the deliverer for `ask` (approvals and rejections with no groups
    /// and no comment).
    pub async fn ask(&self, who: &Actor, ask: Ask<'_>) -> Result<Deployment, DeliverError> {
        let (d, repo) = (&self.deliverer, self.repo.as_str());
        match ask {
            Ask::Approve(key) => d.decide(repo, key, who, &[], None, Vote::Approve).await,
            Ask::Reject(key) => d.decide(repo, key, who, &[], None, Vote::Reject).await,
            Ask::Promote(release, env) => d.promote(repo, release, env, who).await,
            Ask::Rollback(env, to) => d.rollback(repo, env, to, who).await,
        }
    }

    /// Fails unless `who` is refused each `(request, refusal, message)` exactly so, and
    /// unless the refusals change no deployment and add nothing to the audit log.
    pub async fn refuses(&self, who: &Actor, requests: &[(Ask<'_>, Refusal, &str)]) {
        let before = self.snapshot().await;
        for (ask, want, message) in requests {
            let got = self.ask(who, *ask).await;
            assert_eq!(
                refusal(&got),
                Some((*want, *message)),
                "{} asked for {ask:?}; the deliverer answered {got:#?}",
                who.name
            );
        }
        assert_eq!(self.snapshot().await, before, "a refusal changes nothing");
    }

    /// [`refuses`](Self::refuses) for one request.
    pub async fn refuses_one(&self, who: &Actor, ask: Ask<'_>, want: Refusal, message: &str) {
        self.refuses(who, &[(ask, want, message)]).await;
    }

    /// `name`, an approver, approves deployment `key` (`ENV#N` or `ENV.N`), which
    /// must be accepted; the deployment after the decision.
    pub async fn approve(&self, key: &str, name: &str, comment: Option<&str>) -> Deployment {
        self.vote(key, name, comment, Vote::Approve).await
    }

    /// `name`, an approver, rejects deployment `key`, which must be accepted.
    pub async fn reject(&self, key: &str, name: &str, comment: Option<&str>) -> Deployment {
        self.vote(key, name, comment, Vote::Reject).await
    }

    async fn vote(&self, key: &str, name: &str, comment: Option<&str>, vote: Vote) -> Deployment {
        let who = actor(name, true);
        self.deliverer
            .decide(&self.repo, key, &who, &[], comment, vote)
            .await
            .unwrap_or_else(|e| panic!("{name}: {vote:?} {key}: {e:?}"))
    }

    /// `name`, a developer (no approver role), promotes `release` to `env`; it must
    /// be accepted.
    pub async fn promote(&self, release: &str, env: &str, name: &str) -> Deployment {
        self.ask(&actor(name, false), Ask::Promote(release, env))
            .await
            .unwrap_or_else(|e| panic!("{name} promotes {release} to {env}: {e:?}"))
    }

    /// `name`, a developer, rolls `env` back (to release `to`, if named); it must be
    /// accepted.
    pub async fn rollback(&self, env: &str, to: Option<&str>, name: &str) -> Deployment {
        self.ask(&actor(name, false), Ask::Rollback(env, to))
            .await
            .unwrap_or_else(|e| panic!("{name} rolls {env} back to {to:?}: {e:?}"))
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
        let mut last = None;
        let found = poll(async || {
            last = self.find(env, number).await;
            last.clone().filter(&ok)
        })
        .await;
        match found {
            Some(d) => d,
            None => panic!(
                "{env}#{number} did not become {what} within {DEADLINE:?}; last seen: {last:#?}\nall: {:#?}",
                self.summary().await
            ),
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

    /// The lines a file under `$OUT` holds (none when it does not exist).
    pub fn lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.out.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `<data>/deploy/<repo>/<env>`.
    pub fn env_dir(&self, env: &str) -> PathBuf {
        self.data.join("deploy").join(&self.repo).join(env)
    }

    /// The pid the supervisor runs for `env`, once it runs release `release`.
    pub async fn process_pid(&self, env: &str, release: &str) -> i32 {
        let mut state = None;
        let pid = poll(async || {
            state = self.deliverer.supervisor().state(&self.repo, env).await;
            state.as_ref().filter(|s| s.release == release)?.pid
        })
        .await;
        pid.unwrap_or_else(|| {
            panic!("no process of release {release} runs in `{env}`; last state: {state:?}")
        })
    }

    /// Waits (bounded) until `file` (under `$OUT`) holds a pid; returns it.
    pub async fn pid_in(&self, file: &str) -> i32 {
        let path = self.out.join(file);
        let pid = poll(async || ferry_testkit::pids_in(&path).last().copied()).await;
        pid.unwrap_or_else(|| panic!("{} holds no pid", path.display()))
    }

    /// Waits (bounded) until `file` (under `$OUT`) holds at least `n` pids; returns them.
    pub async fn pids(&self, file: &str, n: usize) -> Vec<i32> {
        let path = self.out.join(file);
        let mut pids = Vec::new();
        let enough = poll(async || {
            pids = ferry_testkit::pids_in(&path);
            (pids.len() >= n).then(|| pids.clone())
        })
        .await;
        enough.unwrap_or_else(|| panic!("{} holds {pids:?}, not {n} pids", path.display()))
    }

    /// Waits (bounded) until the audit log has an entry `action` on `target`.
    pub async fn wait_audit(&self, action: &str, target: &str) -> AuditEntry {
        let mut log = Vec::new();
        let entry = poll(async || {
            log = self.audit().await;
            log.iter()
                .find(|e| e.action == action && e.target == target)
                .cloned()
        })
        .await;
        entry.unwrap_or_else(|| panic!("no `{action}` of {target} in the audit log: {log:#?}"))
    }

    /// What a refused request must leave unchanged: every deployment and the audit log.
    pub async fn snapshot(&self) -> (Vec<String>, usize) {
        (self.summary().await, self.audit().await.len())
    }
}

/// Calls `probe` every 20 ms until it answers, for at most [`DEADLINE`]: its answer,
/// or `None` when time ran out.
pub async fn poll<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(answer) = probe().await {
            return Some(answer);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the file at `path` contains `text`; returns its content.
pub async fn wait_contains(path: &Path, text: &str) -> String {
    let mut content = String::new();
    let found = poll(async || {
        content = std::fs::read_to_string(path).unwrap_or_default();
        content.contains(text).then(|| content.clone())
    })
    .await;
    found.unwrap_or_else(|| panic!("{} does not contain `{text}`: {content}", path.display()))
}

/// Waits (bounded, without blocking the runtime) until `pid` is gone, then confirms
/// it with `ferry_testkit::gone`.
pub async fn wait_gone(pid: i32) -> bool {
    poll(async || (!ferry_testkit::alive(pid)).then_some(())).await;
    ferry_testkit::gone(pid)
}

/// The serialised delivery configuration of a pipeline with a `build` job whose
/// artifacts are released, and these `environments:`/`deploy:` sections — loaded and
/// checked by `ferry_config::load` as a `.ferry.yml`.
pub fn delivery_json(sections: &str) -> String {
    let source = pipeline(sections);
    let loaded = ferry_config::load(&source).unwrap_or_else(|diags| {
        panic!(
            "invalid pipeline:\n{source}\n{}",
            ferry_config::render_all(&diags, ".ferry.yml", &source, false)
        )
    });
    serde_json::to_string(&loaded.pipeline.delivery).expect("json")
}

/// The whole `.ferry.yml` of a release whose other sections are `sections`.
pub fn pipeline(sections: &str) -> String {
    format!(
        "jobs:\n  build:\n    run: \"true\"\n    artifacts: [app.sh]\nrelease:\n  artifacts: [build]\n{sections}"
    )
}
