//! Bounded waits: poll a condition until it holds, with a deadline, and fail with what
//! was last seen. Tests wait for the state they expect, never for a fixed time.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::Server;

/// The longest a wait lasts before the test fails. Far longer than anything takes on a
/// loaded machine; the per-test timeout (`.config/nextest.toml`) is longer still.
pub const WAIT: Duration = Duration::from_secs(60);

/// How often a condition is checked again.
const EVERY: Duration = Duration::from_millis(25);

/// Runs `probe` until it returns `Ok` (the value is returned); after [`WAIT`] fails the
/// test with `what` and the last `Err`, which says what the probe saw.
pub async fn wait_for<T, S: Debug>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, S>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not reached in {WAIT:?}; last seen: {seen:#?}")
            }
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

impl Server {
    /// Waits until the run has finished; returns its detail.
    pub async fn finished(&self, run_id: &str) -> Value {
        let path = format!("/api/v1/runs/{run_id}");
        wait_for(&format!("run {run_id} finished"), async || {
            let (_, detail) = self.admin("GET", &path, None).await;
            match detail["run"]["status"].as_str() {
                Some("queued" | "running") => Err(detail),
                _ => Ok(detail),
            }
        })
        .await
    }

    /// Waits until the repository has a run; returns its runs.
    pub async fn first_runs(&self, repo: &str) -> Vec<ferry_store::Run> {
        wait_for(&format!("a run of {repo}"), async || {
            let runs = self.runs_of(repo).await;
            if runs.is_empty() { Err(runs) } else { Ok(runs) }
        })
        .await
    }

    /// Waits until the repository has `n` releases; returns them, newest first.
    pub async fn releases_of(&self, repo: &str, n: usize) -> Vec<Value> {
        let path = format!("/api/v1/repos/{repo}/releases");
        wait_for(&format!("{n} release(s) of {repo}"), async || {
            let (_, body) = self.admin("GET", &path, None).await;
            match body["releases"].as_array() {
                Some(list) if list.len() >= n => Ok(list.clone()),
                _ => Err(body),
            }
        })
        .await
    }

    /// Polls `GET path` until `done` says yes; returns that answer. On failure, also
    /// shows the repository's deployments (for a path under `/api/v1/repos/NAME/`).
    pub async fn wait_until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, body) = self.admin("GET", path, None).await;
            if done(&body) {
                return body;
            }
            if tokio::time::Instant::now() >= deadline {
                let repo = path
                    .strip_prefix("/api/v1/repos/")
                    .and_then(|p| p.split(['/', '?']).next())
                    .unwrap_or_default();
                let (_, deployments) = self
                    .admin("GET", &format!("/api/v1/repos/{repo}/deployments"), None)
                    .await;
                panic!(
                    "{what}: not reached in {WAIT:?}; last answer: {body}\ndeployments: {deployments}"
                );
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}

/// Waits until a step has written `n` lines (at least) to `path`; returns what it wrote.
pub async fn wait_for_lines(path: &Path, n: usize) -> String {
    wait_for(&format!("{n} line(s) in {}", path.display()), async || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
}

/// Waits until process `pid` has ended (a zombie counts as ended); `what` says why it
/// should.
pub async fn wait_for_exit(pid: i32, what: &str) {
    wait_for(what, async || {
        if crate::alive(pid) {
            Err(format!("process {pid} is alive"))
        } else {
            Ok(())
        }
    })
    .await
}

/// Waits until a step has written something to `path`; returns what it wrote.
pub async fn wait_for_file(path: &Path) -> String {
    wait_for(
        &format!("{} written", path.display()),
        async || match std::fs::read_to_string(path) {
            Ok(text) if !text.is_empty() => Ok(text),
            other => Err(other),
        },
    )
    .await
}
