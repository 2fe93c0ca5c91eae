//! Running one shell command in its own process group, with its output on one pipe.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{OutputSink, StepOutcome, StepSpec};

/// How long output may keep arriving after the step's main process exited (from
/// processes it left in the background) before the step is considered finished.
const DRAIN: Duration = Duration::from_millis(25);
const READ_BUFFER: usize = 1 << 20;

/// Signals a whole process group; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Kills a step's process group if the step is dropped before it ends (its caller
/// gave up on it: a server stopping, a task aborted). `kill_on_drop` reaches only the
/// step's `sh`; what the script started in the background would live on.
struct GroupGuard(i32);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = 0;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // A larger pipe means fewer wake-ups for chatty steps; not fatal if refused.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(READ_BUFFER as i32));
    Ok((r, w))
}

/// `sh` as the step's PATH finds it, looked up here rather than by the spawned child:
/// a child searching PATH tries (and fails to exec) every directory before the right
/// one while the spawning thread waits, on every step. The server's own PATH is looked
/// up once per process; a step that sets PATH gets a lookup of its own. If `sh` is not
/// found, the child searches (and reports) as before.
/// Variables of Ferry's own environment a step never gets, even unsandboxed: the key
/// that opens every secret, the SMTP relay's URL (its password), and the OpenTelemetry
/// exporter's settings (a tracing backend's API key; an instrumented tool in a build
/// would also send its own traces to Ferry's backend with it).
pub fn withheld(name: &str) -> bool {
    matches!(name, "FERRY_SECRET_KEY" | "FERRY_SMTP_URL") || name.starts_with("OTEL_EXPORTER_OTLP_")
}

fn shell(spec: &StepSpec) -> std::path::PathBuf {
    static OURS: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let find = |path: Option<&std::ffi::OsStr>| which::which_in("sh", path, &spec.cwd).ok();
    let found = match spec.env.iter().find(|(k, _)| k.as_str() == "PATH") {
        Some((_, path)) => find(Some(std::ffi::OsStr::new(path))),
        None if spec.clear_env => None,
        None => OURS
            .get_or_init(|| find(std::env::var_os("PATH").as_deref()))
            .clone(),
    };
    found.unwrap_or_else(|| "sh".into())
}

/// Runs `spec` with `sh -e -c`, streaming output to `sink`. `on_spawn` receives the
/// process group id as soon as it exists, so the caller can kill it even if this
/// future is dropped. `grace` is how long SIGTERM is given before SIGKILL, unless
/// `force` is cancelled, which sends SIGKILL at once.
pub async fn run(
    spec: &StepSpec,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
    grace: Duration,
    force: &CancellationToken,
    on_spawn: impl FnOnce(i32),
) -> StepOutcome {
    run_in(spec, None, sink, cancel, grace, force, on_spawn).await
}

/// [`run`], started by `spawner` (a sandboxed job's thread) when given.
pub async fn run_in(
    spec: &StepSpec,
    spawner: Option<&crate::sandbox::Spawner>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
    grace: Duration,
    force: &CancellationToken,
    on_spawn: impl FnOnce(i32),
) -> StepOutcome {
    let (read, write) = match pipe() {
        Ok(p) => p,
        Err(e) => return StepOutcome::Error(format!("cannot create a pipe: {e}")),
    };
    let write2 = match write.try_clone() {
        Ok(w) => w,
        Err(e) => return StepOutcome::Error(format!("cannot create a pipe: {e}")),
    };
    let spawned = match spawner {
        Some(spawner) => {
            use tracing::Instrument as _;
            // The whole environment, as the process is to have it.
            let mut env: Vec<(String, String)> = if spec.clear_env {
                Vec::new()
            } else {
                std::env::vars().filter(|(k, _)| !withheld(k)).collect()
            };
            env.extend(spec.env.iter().cloned());
            let start = crate::helper::Start {
                program: shell(spec),
                args: vec!["-e".into(), "-c".into(), spec.script.clone()],
                env,
                cwd: spec.cwd.clone(),
                group: true,
                fds: 2,
            };
            spawner
                .start_process(start, vec![write, write2])
                .instrument(tracing::debug_span!("spawn"))
                .await
        }
        None => {
            let mut cmd = tokio::process::Command::new(shell(spec));
            if spec.clear_env {
                cmd.env_clear();
            }
            for (k, _) in std::env::vars().filter(|(k, _)| withheld(k)) {
                cmd.env_remove(k);
            }
            cmd.arg("-e")
                .arg("-c")
                .arg(&spec.script)
                .current_dir(&spec.cwd)
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(write))
                .stderr(Stdio::from(write2))
                .process_group(0)
                .kill_on_drop(true);
            let spawned = tracing::debug_span!("spawn").in_scope(|| cmd.spawn());
            // Drop our copies of the write end, or we would never see end-of-file.
            drop(cmd);
            spawned.map(Proc::Local)
        }
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return StepOutcome::Error(format!("cannot start `sh` in {}: {e}", spec.cwd.display()));
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let guard = GroupGuard(pgid);
    on_spawn(pgid);

    let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(read) {
        Ok(r) => r,
        Err(e) => {
            signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            guard.disarm();
            return StepOutcome::Error(format!("cannot read the step's output: {e}"));
        }
    };
    // Capacity, not zeroed memory: most steps print little, and zeroing (and faulting
    // in) a megabyte on every step cost more than some steps take.
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUFFER);
    let started = Instant::now();
    let deadline = spec.timeout.map(|t| started + t);
    let far = started + Duration::from_secs(86_400 * 365);
    let mut eof = false;
    let mut status: Option<i32> = None;
    let mut ended: Option<StepOutcome> = None;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;

    loop {
        if status.is_some() && (eof || drain_until.is_some_and(|d| Instant::now() >= d)) {
            break;
        }
        tokio::select! {
            biased;
            r = rx.read_buf(&mut buf), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(_) => {
                    // Take whatever else is already in the pipe, so a chatty step costs
                    // a few large log writes rather than many small ones; never waits.
                    while buf.len() < buf.capacity() {
                        match rx.try_read_buf(&mut buf) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    sink.chunk(&buf);
                    buf.clear();
                }
            },
            st = child.wait(), if status.is_none() => {
                status = Some(st.unwrap_or(-1));
                drain_until = Some(Instant::now() + DRAIN);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && ended.is_none() && status.is_none() => {
                ended = Some(StepOutcome::TimedOut(spec.timeout.unwrap_or_default()));
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            _ = cancel.cancelled(), if ended.is_none() && status.is_none() => {
                ended = Some(StepOutcome::Cancelled);
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                signal_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
            // A second interrupt: no more grace.
            _ = force.cancelled(), if kill_at.is_some() => {
                signal_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && !eof => {}
        }
    }
    if ended.is_some() {
        // Whatever the step left running goes with it.
        signal_group(pgid, Signal::SIGKILL);
    }
    guard.disarm();
    match ended {
        Some(o) => o,
        None => StepOutcome::Exited(status.unwrap_or(-1)),
    }
}

/// A started process: a child of the server's, or one a sandbox helper started for it
/// (see [`crate::helper`]).
#[derive(Debug)]
pub enum Proc {
    Local(tokio::process::Child),
    Helper {
        pid: u32,
        exit: tokio::sync::oneshot::Receiver<i32>,
    },
}

impl Proc {
    pub fn id(&self) -> Option<u32> {
        match self {
            Proc::Local(c) => c.id(),
            Proc::Helper { pid, .. } => Some(*pid),
        }
    }

    /// Waits for its end: its exit code (128 + the signal for one killed by a signal).
    pub async fn wait(&mut self) -> std::io::Result<i32> {
        match self {
            Proc::Local(c) => c.wait().await.map(exit_code),
            Proc::Helper { exit, .. } => exit
                .await
                .map_err(|_| std::io::Error::other("the sandbox helper ended")),
        }
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::{shell, withheld};

    #[test]
    fn the_servers_own_secrets_are_withheld_from_steps() {
        for name in [
            "FERRY_SECRET_KEY",
            "FERRY_SMTP_URL",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            assert!(withheld(name), "{name}");
        }
        for name in ["PATH", "HOME", "FERRY_RUN_ID", "OTEL_SERVICE_NAME"] {
            assert!(!withheld(name), "{name}");
        }
    }
    use crate::StepSpec;

    /// `sh` is found where the step's own PATH says, once per PATH; a PATH without it
    /// leaves the search (and its error) to the spawn, as before.
    #[test]
    fn the_shell_is_found_on_the_steps_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let spec = |env: Vec<(String, String)>, clear_env| StepSpec {
            script: "true".into(),
            env,
            cwd: dir.path().to_path_buf(),
            timeout: None,
            clear_env,
        };
        let path = |p: &str| vec![("PATH".to_string(), p.to_string())];
        let ours = shell(&spec(Vec::new(), false));
        assert!(ours.is_absolute() && ours.ends_with("sh"), "{ours:?}");
        // A directory of the step's own, first on its PATH, wins.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::os::unix::fs::symlink(&ours, bin.join("sh")).expect("link");
        let mine = format!("{}:/usr/bin:/bin", bin.display());
        assert_eq!(shell(&spec(path(&mine), false)), bin.join("sh"));
        assert_eq!(
            shell(&spec(path("/nonexistent"), false)),
            std::path::Path::new("sh")
        );
        assert_eq!(shell(&spec(Vec::new(), true)), std::path::Path::new("sh"));
    }
}
