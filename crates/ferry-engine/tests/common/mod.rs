//! The engine fixture shared by the engine's integration tests: a store, a source
//! directory and an engine over real processes (and, when given, real containers).

#![allow(dead_code)] // each test binary uses its own part of it

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{Engine, EngineConfig, NullSink, RunOutcome, Source};
use ferry_exec::{DockerExecutor, Executor, LocalExecutor};
use ferry_plan::{Event, EventKind};
use ferry_store::{Job, Status, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub engine: Engine,
    pub store: Store,
    pub repo: String,
}

impl Fixture {
    /// An engine running `concurrency` jobs at once; jobs with `image:` go to `containers`.
    pub async fn build(concurrency: usize, containers: Option<DockerExecutor>) -> Self {
        let host = Arc::new(LocalExecutor {
            kill_grace: Duration::from_millis(500),
            ..Default::default()
        });
        let mut fixture = Self::with_executor(concurrency, host).await;
        if let Some(docker) = containers {
            fixture.engine = fixture.engine.with_containers(Arc::new(docker));
        }
        fixture
    }

    /// An engine whose host jobs run with `executor` (e.g. the dummy).
    pub async fn with_executor(concurrency: usize, executor: Arc<dyn Executor>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("src")).expect("src");
        std::fs::write(dir.join("src/input.txt"), "from the source\n").expect("write");
        let store = Store::open(&dir.join("data")).await.expect("store");
        let repo = store
            .ensure_repository("test://repo", "repo")
            .await
            .expect("repo");
        let engine = Engine::new(
            store.clone(),
            executor,
            EngineConfig {
                concurrency,
                work_root: dir.join("work"),
                keep_workspaces: false,
                cache_max_bytes: ferry_engine::cache::DEFAULT_MAX_BYTES,
                log_limit: Some(ferry_engine::DEFAULT_LOG_LIMIT),
                job_timeout: None,
            },
        );
        Fixture {
            _tmp: tmp,
            dir,
            engine,
            store,
            repo,
        }
    }

    pub fn event() -> Event {
        Event {
            kind: EventKind::Push,
            branch: Some("main".into()),
            tag: None,
            git_ref: "refs/heads/main".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            author: "A U Thor <a@example.com>".into(),
            message: "test".into(),
            changed_files: None,
            pull_request: None,
        }
    }

    pub async fn run_with(&self, yaml: &str, cancel: CancellationToken) -> RunOutcome {
        self.run_trusted(yaml, ferry_plan::Trust::default(), cancel)
            .await
    }

    /// A run of `yaml` with the trust the server would have given it.
    pub async fn run_as(&self, yaml: &str, trust: ferry_plan::Trust) -> RunOutcome {
        self.run_trusted(yaml, trust, CancellationToken::new())
            .await
    }

    async fn run_trusted(
        &self,
        yaml: &str,
        trust: ferry_plan::Trust,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let pipeline = ferry_config::load(yaml)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .pipeline;
        let mut plan =
            ferry_plan::plan(&pipeline, &Self::event(), &Default::default()).expect("plan");
        plan.trust = trust;
        let (run, ids) = self
            .engine
            .create_run(&self.repo, &plan, false, None)
            .await
            .expect("create");
        let source = Source {
            root: self.dir.join("src"),
            files: None,
        };
        self.engine
            .execute(run, ids, plan, source, Arc::new(NullSink), cancel)
            .await
            .expect("execute")
    }

    pub async fn run(&self, yaml: &str) -> RunOutcome {
        self.run_with(yaml, CancellationToken::new()).await
    }

    /// [`run_with`](Self::run_with), which must end within `limit`.
    pub async fn run_within(
        &self,
        limit: Duration,
        yaml: &str,
        cancel: CancellationToken,
    ) -> RunOutcome {
        tokio::time::timeout(limit, self.run_with(yaml, cancel))
            .await
            .unwrap_or_else(|_| panic!("the run did not stop within {limit:?}"))
    }

    /// Fails unless the run succeeded; the message is `job`'s log.
    pub async fn assert_success(&self, outcome: &RunOutcome, job: &str) {
        assert_eq!(
            outcome.status,
            Status::Success,
            "{}",
            self.log(outcome, job).await
        );
    }

    /// The run's jobs as the store has them.
    pub async fn jobs(&self, outcome: &RunOutcome) -> Vec<Job> {
        self.store.jobs(&outcome.run.id).await.expect("jobs")
    }

    /// Job `job` of the run as the store has it.
    pub async fn stored_job(&self, outcome: &RunOutcome, job: &str) -> Job {
        let jobs = self.jobs(outcome).await;
        jobs.into_iter()
            .find(|j| j.name == job)
            .unwrap_or_else(|| panic!("the run has no job `{job}`"))
    }

    pub fn status(outcome: &RunOutcome, job: &str) -> Status {
        outcome
            .jobs
            .iter()
            .find(|j| j.name == job)
            .map(|j| j.status)
            .expect("job")
    }

    /// The statuses of `jobs`, in that order.
    pub fn statuses(outcome: &RunOutcome, jobs: &[&str]) -> Vec<Status> {
        jobs.iter().map(|job| Self::status(outcome, job)).collect()
    }

    /// How `job` ended: its status and why (`None` when it gave no reason).
    pub fn ended<'a>(outcome: &'a RunOutcome, job: &str) -> (Status, Option<&'a str>) {
        let j = outcome
            .jobs
            .iter()
            .find(|j| j.name == job)
            .unwrap_or_else(|| panic!("the run has no job `{job}`"));
        (j.status, j.reason.as_deref())
    }

    /// Why `job` ended as it did (empty when it gave no reason).
    pub fn reason(outcome: &RunOutcome, job: &str) -> String {
        outcome
            .jobs
            .iter()
            .find(|j| j.name == job)
            .and_then(|j| j.reason.clone())
            .unwrap_or_default()
    }

    pub async fn log(&self, outcome: &RunOutcome, job: &str) -> String {
        let jobs = self.store.jobs(&outcome.run.id).await.expect("jobs");
        let j = jobs.iter().find(|j| j.name == job).expect("job");
        self.store
            .read_log(&outcome.run.id, &j.id)
            .await
            .expect("log")
            .map(|l| String::from_utf8_lossy(&l.expect("line").text).into_owned() + "\n")
            .collect()
    }
}

/// The base image scripts/test.sh builds (`FERRY_TEST_IMAGE`); `None` (skip) only when
/// `FERRY_SKIP_DOCKER` says so.
pub fn image() -> Option<String> {
    match std::env::var("FERRY_TEST_IMAGE") {
        Ok(i) => Some(i),
        Err(_) => {
            assert!(
                std::env::var_os("FERRY_SKIP_DOCKER").is_some(),
                "set FERRY_TEST_IMAGE (scripts/test.sh builds it and starts Docker) or FERRY_SKIP_DOCKER=1"
            );
            None
        }
    }
}

/// Runs the docker CLI (to look at what Ferry did from the outside): success and output.
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.trim().to_string())
}

/// Containers Ferry made for `job` (empty when all are removed).
pub fn containers_of(job: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=ferry.job={job}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Networks Ferry made for `job` (empty when all are removed).
pub fn networks_of(job: &str) -> String {
    docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=ferry.job={job}"),
    ])
    .1
}

/// Cancels `cancel` `settle` after `ready` holds, asking every 25 ms; when it has not
/// held within `within`, cancels anyway. The task answers whether it held.
pub fn cancel_when(
    cancel: &CancellationToken,
    within: Duration,
    settle: Duration,
    ready: impl Fn() -> bool + Send + 'static,
) -> JoinHandle<bool> {
    let trigger = cancel.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        let mut held = ready();
        while !held && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            held = ready();
        }
        tokio::time::sleep(settle).await;
        trigger.cancel();
        held
    })
}

/// Fails unless every process whose id a step wrote to `pidfile` has ended (and, when
/// `count` is given, there are that many); `what` is what they must not outlive.
pub fn assert_ended(pidfile: &Path, count: Option<usize>, what: &str) {
    let pids = ferry_testkit::pids_in(pidfile);
    if let Some(n) = count {
        assert_eq!(pids.len(), n, "{pids:?}");
    }
    for pid in pids {
        assert!(ferry_testkit::gone(pid), "process {pid} outlived {what}");
    }
}

/// Fails unless no container and no network Ferry made for any of `jobs` is left.
pub fn assert_nothing_left(jobs: &[&str]) {
    for job in jobs {
        assert_eq!(containers_of(job), "", "a container of `{job}` is left");
        assert_eq!(networks_of(job), "", "a network of `{job}` is left");
    }
}

/// `docker COMMAND… --label ferry=true --label ferry.job=JOB ARGS…`: makes something
/// as Ferry does for `job`; it must succeed.
pub fn docker_as_ferry(command: &[&str], job: &str, args: &[&str]) {
    let label = format!("ferry.job={job}");
    let labels = ["--label", "ferry=true", "--label", &label];
    let all: Vec<&str> = [command, &labels[..], args].concat();
    let (ok, text) = docker(&all);
    assert!(ok, "docker {all:?}: {text}");
}
