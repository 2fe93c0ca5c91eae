//! The engine fixture shared by the engine's integration tests: a store, a source
//! directory and an engine over real processes (and, when given, real containers).

#![allow(dead_code)] // each test binary uses its own part of it

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{Engine, EngineConfig, NullSink, RunOutcome, Source};
use ferry_exec::{DockerExecutor, Executor, LocalExecutor};
use ferry_plan::{Event, EventKind};
use ferry_store::{Status, Store};
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
        }
    }

    pub async fn run_with(&self, yaml: &str, cancel: CancellationToken) -> RunOutcome {
        let pipeline = ferry_config::load(yaml)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .pipeline;
        let plan = ferry_plan::plan(&pipeline, &Self::event(), &Default::default()).expect("plan");
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

    pub fn status(outcome: &RunOutcome, job: &str) -> Status {
        outcome
            .jobs
            .iter()
            .find(|j| j.name == job)
            .map(|j| j.status)
            .expect("job")
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
