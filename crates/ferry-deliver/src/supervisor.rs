//! The supervisor of the `process` target: one long-running process per environment.
//!
//! The process runs `sh -c COMMAND` in the release's directory, in
//! a process group of its own, with an empty environment plus the variables, secrets and
//! release variables it is given. When it exits it is started again after a back-off
//! (0.5 s doubling to 30 s; reset after a minute of running), until it is stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_exec::mask::{FileSink, Masked, Masker};
use ferry_exec::orphans::Tracker;
use ferry_exec::{StepOutcome, StepSpec};
use tokio_util::sync::CancellationToken;

/// How long a process gets after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);

/// What to run for an environment.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct ProcessSpec {
    #[educe(Debug(ignore))]
    pub repository_id: String,
    pub environment: String,
    pub release: String,
    #[educe(Debug(ignore))]
    pub dir: PathBuf,
    pub command: String,
    /// The whole environment of the process.
    #[educe(Debug(ignore))]
    pub env: Vec<(String, String)>,
    #[educe(Debug(ignore))]
    pub log: PathBuf,
    /// The size past which `log` becomes `log.1` and a new one starts.
    pub log_limit: u64,
    #[educe(Debug(ignore))]
    pub masker: Masker,
    /// Starts it (each time) in the deployment's sandbox (see [`crate::jail`]).
    #[educe(Debug(ignore))]
    pub spawner: Option<Arc<ferry_exec::sandbox::Spawner>>,
}

/// How big a process's output log grows before it is rotated (one older file is kept).
pub const OUTPUT_LIMIT: u64 = 64 << 20;

/// What the supervisor knows of one environment's process.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessState {
    pub release: String,
    pub pid: Option<i32>,
    /// Times it was started again after exiting.
    pub restarts: u32,
    /// How it last ended, e.g. `exited with code 3`.
    pub last_exit: Option<String>,
    /// When it was last started (milliseconds since the epoch).
    pub started_at: Option<i64>,
}

/// What a deployed workload uses now (process target: its process group; Docker:
/// its container).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Workload {
    /// CPU time used since it (last) started, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
    /// Times it was started again after exiting.
    pub restarts: u64,
    /// When it (last) started, milliseconds since the epoch.
    pub started_at: Option<i64>,
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<ProcessState>>,
}

/// Keeps one process per environment running.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Supervisor {
    #[educe(Debug(ignore))]
    running: Arc<tokio::sync::Mutex<HashMap<(String, String), Running>>>,
    #[educe(Debug(ignore))]
    tracker: Option<Tracker>,
}

impl Supervisor {
    pub fn new(tracker: Option<Tracker>) -> Self {
        Self {
            running: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
            tracker,
        }
    }

    /// The record of started process groups, for reaping after a crash.
    pub fn tracker(&self) -> Option<Tracker> {
        self.tracker.clone()
    }

    /// Stops the environment's process (if any) and starts `spec` in its place.
    pub async fn start(&self, spec: ProcessSpec) -> Result<(), String> {
        let key = (spec.repository_id.clone(), spec.environment.clone());
        self.stop(&key.0, &key.1).await;
        if let Some(dir) = spec.log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&spec.log)
            .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))?;
        let file = FileSink::new(file).rotated(&spec.log, spec.log_limit);
        let mut sink = Masked::new(file, spec.masker.clone());
        sink.note(&format!(
            "starting release {}: {}",
            spec.release, spec.command
        ));
        let stop = CancellationToken::new();
        let state = Arc::new(Mutex::new(ProcessState {
            release: spec.release.clone(),
            ..Default::default()
        }));
        let task = tokio::spawn(supervise(
            spec,
            sink,
            stop.clone(),
            state.clone(),
            self.tracker.clone(),
        ));
        self.running
            .lock()
            .await
            .insert(key, Running { stop, task, state });
        Ok(())
    }

    /// Stops the environment's process: SIGTERM to its group, SIGKILL after a grace.
    pub async fn stop(&self, repository_id: &str, environment: &str) {
        let key = (repository_id.to_string(), environment.to_string());
        let running = self.running.lock().await.remove(&key);
        if let Some(r) = running {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// The process's state, if one is supervised for the environment.
    pub async fn state(&self, repository_id: &str, environment: &str) -> Option<ProcessState> {
        let key = (repository_id.to_string(), environment.to_string());
        let running = self.running.lock().await;
        running
            .get(&key)
            .and_then(|r| r.state.lock().ok().map(|s| s.clone()))
    }

    /// The environments with a supervised process: (repository id, environment).
    pub async fn supervised(&self) -> Vec<(String, String)> {
        self.running.lock().await.keys().cloned().collect()
    }

    /// What each supervised environment's process group uses now: (repository id,
    /// environment, workload), from one reading of `/proc`.
    pub async fn workloads(&self) -> Vec<(String, String, Workload)> {
        let states: Vec<((String, String), ProcessState)> = {
            let running = self.running.lock().await;
            running
                .iter()
                .filter_map(|(k, r)| r.state.lock().ok().map(|s| (k.clone(), s.clone())))
                .collect()
        };
        let groups: Vec<i32> = states.iter().filter_map(|(_, s)| s.pid).collect();
        let usage = tokio::task::spawn_blocking(move || group_usage(&groups))
            .await
            .unwrap_or_default();
        states
            .into_iter()
            .map(|((repo, env), s)| {
                let (ticks, pages) = s.pid.and_then(|p| usage.get(&p).copied()).unwrap_or((0, 0));
                let w = Workload {
                    cpu_seconds: ticks as f64 / clock_ticks() as f64,
                    memory_bytes: pages * page_size(),
                    restarts: u64::from(s.restarts),
                    started_at: s.pid.and(s.started_at),
                };
                (repo, env, w)
            })
            .collect()
    }

    /// A function telling whether the process has exited since it started (for
    /// verification: a process that dies fails it).
    pub async fn exit_watch(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> impl Fn() -> Option<String> + use<> {
        let key = (repository_id.to_string(), environment.to_string());
        let state = self.running.lock().await.get(&key).map(|r| r.state.clone());
        move || {
            let s = state.as_ref()?.lock().ok()?;
            s.last_exit.as_ref().map(|e| format!("the process {e}"))
        }
    }

    /// Stops every process (when the server stops).
    pub async fn shutdown(&self) {
        let all: Vec<Running> = self.running.lock().await.drain().map(|(_, r)| r).collect();
        for r in &all {
            r.stop.cancel();
        }
        for r in all {
            let _ = r.task.await;
        }
    }
}

/// CPU ticks (user + system) and resident pages of every process in each of
/// `groups`, from `/proc/*/stat`.
fn group_usage(groups: &[i32]) -> HashMap<i32, (u64, u64)> {
    let mut out: HashMap<i32, (u64, u64)> = HashMap::new();
    if groups.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's `)`: state, ppid, pgrp, … utime (12th), stime, … rss (22nd).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let Some(pgrp) = f.get(2).and_then(|v| v.parse::<i32>().ok()) else {
            continue;
        };
        if groups.contains(&pgrp) {
            let e = out.entry(pgrp).or_default();
            e.0 += num(11) + num(12);
            e.1 += num(21);
        }
    }
    out
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v as u64)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

async fn supervise(
    spec: ProcessSpec,
    mut sink: Masked<FileSink>,
    stop: CancellationToken,
    state: Arc<Mutex<ProcessState>>,
    tracker: Option<Tracker>,
) {
    let step = StepSpec {
        script: spec.command.clone(),
        env: spec.env.clone(),
        cwd: spec.dir.clone(),
        timeout: None,
        clear_env: true,
    };
    let force = CancellationToken::new();
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let mut pgid = 0;
        let outcome = ferry_exec::process::run_in(
            &step,
            spec.spawner.as_deref(),
            &mut sink,
            &stop,
            GRACE,
            &force,
            |p| {
                pgid = p;
                if let Ok(mut s) = state.lock() {
                    s.pid = Some(p);
                    s.started_at = Some(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64),
                    );
                }
                if let Some(t) = &tracker {
                    t.started(p);
                }
            },
        )
        .await;
        // Whatever it left in the background goes with it (in its sandbox, even what
        // left its process group).
        ferry_exec::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        if let Some(spawner) = &spec.spawner {
            spawner.sweep().await;
        }
        if let Some(t) = &tracker {
            t.ended(pgid);
        }
        if stop.is_cancelled() {
            sink.note("stopped");
            return;
        }
        let how = match outcome {
            StepOutcome::Exited(code) => format!("exited with code {code}"),
            StepOutcome::Error(e) => format!("could not start: {e}"),
            other => format!("ended: {other:?}"),
        };
        if started.elapsed() > STABLE {
            backoff = BACKOFF_FIRST;
        }
        sink.note(&format!(
            "the process {how}; starting it again in {:.1}s",
            backoff.as_secs_f32()
        ));
        if let Ok(mut s) = state.lock() {
            s.pid = None;
            s.last_exit = Some(how);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => {
                sink.note("stopped");
                return;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if let Ok(mut s) = state.lock() {
            s.restarts += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, command: &str) -> ProcessSpec {
        ProcessSpec {
            repository_id: "repo".into(),
            environment: "sandbox".into(),
            release: "r1".into(),
            dir: dir.to_path_buf(),
            command: command.into(),
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                ("TOKEN".into(), "tok-secret-1".into()),
            ],
            log: dir.join("output.log"),
            log_limit: OUTPUT_LIMIT,
            masker: Masker::new([b"tok-secret-1".as_slice()]),
            spawner: None,
        }
    }

    #[tokio::test]
    async fn restarts_after_a_crash_and_stops_for_good() {
        let dir = tempfile::tempdir().expect("tmp");
        let sup = Supervisor::new(None);
        // Counts its starts; prints its secret (masked in the log); crashes once.
        let cmd = "echo start >> starts; echo \"token $TOKEN\"; [ $(wc -l < starts) -ge 2 ] && exec sleep 300; exit 3";
        sup.start(spec(dir.path(), cmd)).await.expect("start");
        let mut state = None;
        for _ in 0..100 {
            state = sup.state("repo", "sandbox").await;
            if state
                .as_ref()
                .is_some_and(|s| s.restarts == 1 && s.pid.is_some())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let state = state.expect("state");
        assert_eq!(state.restarts, 1);
        assert_eq!(state.last_exit.as_deref(), Some("exited with code 3"));
        let pid = state.pid.expect("pid");
        let watch = sup.exit_watch("repo", "sandbox").await;
        assert_eq!(watch().as_deref(), Some("the process exited with code 3"));
        sup.stop("repo", "sandbox").await;
        assert!(ferry_testkit::gone(pid), "stopped for good");
        let log = std::fs::read_to_string(dir.path().join("output.log")).expect("log");
        assert!(log.contains("token ***"), "{log}");
        assert!(!log.contains("tok-secret-1"));
        assert!(
            log.contains("ferry: the process exited with code 3; starting it again in 0.5s"),
            "{log}"
        );
        assert!(log.ends_with("ferry: stopped\n"), "{log}");
    }

    /// A process that prints without end fills at most about twice its log limit: the
    /// log is rotated to `output.log.1`, the newest output always in `output.log`.
    #[tokio::test]
    async fn a_chatty_process_output_is_rotated_by_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let sup = Supervisor::new(None);
        let mut s = spec(
            dir.path(),
            "i=0; while [ $i -lt 20000 ]; do echo \"line $i of a chatty process\"; i=$((i+1)); done; echo done; exec sleep 300",
        );
        s.log_limit = 64 << 10;
        sup.start(s).await.expect("start");
        let log = dir.path().join("output.log");
        for _ in 0..200 {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("done\n")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sup.stop("repo", "sandbox").await;
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let older = dir.path().join("output.log.1");
        assert!(size(&log) <= (64 << 10) + 4096, "{}", size(&log));
        assert!(
            size(&older) > 32 << 10 && size(&older) <= (64 << 10) + 4096,
            "{} {}",
            size(&older),
            size(&log)
        );
        let newest = std::fs::read_to_string(&log).expect("log");
        assert!(
            newest.ends_with("ferry: stopped\n"),
            "the newest is in output.log"
        );
        let before = std::fs::read_to_string(&older).expect("older");
        assert!(
            format!("{before}{newest}").contains("line 19999 of a chatty process\ndone\n"),
            "nothing of the end is lost"
        );
        assert!(
            before.starts_with("line ") && before.ends_with('\n'),
            "cut at whole lines"
        );
    }
}
