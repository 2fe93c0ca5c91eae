//! The local executor: each step is a `sh` process on this host, in the job's workspace.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::process::{self, signal_group};
use crate::{ExecError, Executor, JobSpec, Prepared, StepIo, StepOutcome, StepSpec};

/// The process groups one job started (killed at cleanup).
#[derive(Debug, Default)]
struct Groups(std::sync::Mutex<Vec<i32>>);

/// A job's state: its groups, and when sandboxed its spawner and temporary directory.
#[derive(Debug, Default)]
struct JobState {
    groups: Groups,
    sandboxed: Option<(crate::sandbox::Spawner, std::path::PathBuf)>,
}

/// Variables of Ferry's environment a sandboxed step gets (besides its own, `PATH`,
/// `HOME` and `TMPDIR`): none that could carry a secret.
const PASSED: [&str; 5] = ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"];

/// Runs steps as host processes. Each step gets its own process group, so a timeout,
/// a cancel or the end of the job kills everything the step started.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// How long a step may take to exit after SIGTERM before it gets SIGKILL.
    pub kill_grace: Duration,
    /// Cancelled to cut the grace short (e.g. on a second Ctrl-C).
    pub force: CancellationToken,
    /// Records live process groups on disk, for [`crate::orphans::Tracker::reap`] after a crash.
    pub tracker: Option<crate::orphans::Tracker>,
    /// Runs each job's steps in a sandbox (see [`crate::sandbox`]) with a scrubbed
    /// environment: `PATH`, `HOME` and `TMPDIR` (the job's temporary directory, beside
    /// its workspace), the locale and terminal variables, and the step's own.
    pub sandbox: Option<crate::sandbox::Sandbox>,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(5),
            force: CancellationToken::new(),
            tracker: None,
            sandbox: None,
        }
    }
}

#[async_trait::async_trait]
impl Executor for LocalExecutor {
    async fn prepare(&self, job: &JobSpec) -> Result<Prepared, ExecError> {
        if !job.workspace.is_dir() {
            return Err(ExecError::NoWorkspace(job.workspace.clone()));
        }
        let sandboxed = match &self.sandbox {
            None => None,
            Some(sandbox) => {
                let mut tmp = job.workspace.clone().into_os_string();
                tmp.push(".tmp");
                let tmp = std::path::PathBuf::from(tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| {
                    ExecError::Unavailable(format!("cannot create {}: {e}", tmp.display()))
                })?;
                let spawner = crate::sandbox::Spawner::start(
                    sandbox,
                    vec![job.workspace.clone(), tmp.clone()],
                )
                .map_err(ExecError::Unavailable)?;
                Some((spawner, tmp))
            }
        };
        Ok(Prepared::new(
            job.clone(),
            JobState {
                groups: Groups::default(),
                sandboxed,
            },
        ))
    }

    async fn run_step(&self, job: &Prepared, step: &StepSpec, io: StepIo<'_>) -> StepOutcome {
        let StepIo { output, cancel } = io;
        let state = job.state::<JobState>();
        let sandboxed = state.and_then(|s| s.sandboxed.as_ref());
        let scrubbed;
        let (step, spawner) = match sandboxed {
            None => (step, None),
            Some((spawner, tmp)) => {
                scrubbed = scrub(step, tmp);
                (&scrubbed, Some(spawner))
            }
        };
        process::run_in(
            step,
            spawner,
            output,
            cancel,
            self.kill_grace,
            &self.force,
            |pgid| {
                if let Some(t) = &self.tracker {
                    t.started(pgid);
                }
                if let Some(Ok(mut g)) = state.map(|s| s.groups.0.lock()) {
                    g.push(pgid);
                }
            },
        )
        .await
    }

    async fn cleanup(&self, job: &Prepared) {
        let state = job.state::<JobState>();
        if let Some((spawner, tmp)) = state.and_then(|s| s.sandboxed.as_ref()) {
            // What the steps left, even outside their process groups (`setsid`).
            spawner.sweep().await;
            let _ = std::fs::remove_dir_all(tmp);
        }
        let groups = match state.map(|s| s.groups.0.lock()) {
            Some(Ok(mut g)) => std::mem::take(&mut *g),
            _ => return,
        };
        for pgid in groups {
            signal_group(pgid, Signal::SIGKILL);
            if let Some(t) = &self.tracker {
                t.ended(pgid);
            }
        }
    }
}

/// `step` with a scrubbed environment: nothing of Ferry's but `PATH` and the locale,
/// `HOME` and `TMPDIR` the job's temporary directory, then the step's own variables.
fn scrub(step: &StepSpec, tmp: &std::path::Path) -> StepSpec {
    let tmp = tmp.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("HOME".into(), tmp.clone()),
        ("TMPDIR".into(), tmp),
    ];
    env.extend(
        PASSED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
    );
    env.extend(step.env.iter().cloned());
    StepSpec {
        env,
        clear_env: true,
        ..step.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutputSink;

    #[derive(Default)]
    struct Collect(Vec<u8>);
    impl OutputSink for Collect {
        fn chunk(&mut self, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
    }

    fn alive(pid: i32) -> bool {
        // A zombie is as good as gone: read its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    /// The end of a sandboxed job kills what its steps left running, even what left
    /// their process group (`setsid`, a double fork), and nothing outside the job: a
    /// process the server started itself lives on.
    #[tokio::test]
    async fn a_sandboxed_jobs_end_kills_what_its_steps_detached() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        let workspace = tmp.path().join("ws");
        std::fs::create_dir_all(&workspace).expect("mkdir");
        let user = nix::unistd::geteuid()
            .is_root()
            .then(|| crate::sandbox::StepUser::parse("nobody").expect("nobody"));
        let executor = LocalExecutor {
            sandbox: Some(crate::sandbox::Sandbox::default().with_user(user)),
            ..LocalExecutor::default()
        };
        let job = JobSpec {
            name: "detach".into(),
            workspace: workspace.clone(),
            container: None,
        };
        let mut bystander = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep");
        let prepared = executor.prepare(&job).await.expect("prepare");
        let step = StepSpec {
            script: "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!; \
                     (setsid sh -c 'sleep 300 & echo $!' > pid2 &) ; sleep 0.2; cat pid2"
                .into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: workspace.clone(),
            timeout: None,
            clear_env: false,
        };
        let mut out = Collect::default();
        let cancel = CancellationToken::new();
        let outcome = executor
            .run_step(&prepared, &step, StepIo::new(&mut out, &cancel))
            .await;
        assert_eq!(outcome, StepOutcome::Exited(0));
        let text = String::from_utf8_lossy(&out.0).to_string();
        let pids: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(pids.len(), 2, "{text}");
        assert!(pids.iter().all(|p| alive(*p)), "detached and running");
        executor.cleanup(&prepared).await;
        for _ in 0..100 {
            if pids.iter().all(|p| !alive(*p)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(pids.iter().all(|p| !alive(*p)), "{pids:?} outlived the job");
        assert!(
            alive(bystander.id() as i32),
            "a process outside the job lives on"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
