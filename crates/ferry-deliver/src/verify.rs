//! Verification after a deploy: probes run every `interval` for the window (`for:`).
//! Failures before the first time every probe passes are the application starting up
//! and are tolerated; once all have passed, any failure fails the verification at once;
//! and they must all have passed by the end of the window. A target that reports its
//! workload gone (a process that exited) fails it at once too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_exec::sandbox::Spawner;

use tokio_util::sync::CancellationToken;

/// What a probe checks: the `verify:` entry of `.ferry.yml`, with its expressions
/// resolved.
pub use ferry_config::delivery::Probe as Check;

/// A probe ready to run: what it checks, and where, with what environment and in which
/// sandbox a command probe runs.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Probe {
    pub check: Check,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Starts a command probe in the deployment's sandbox (see [`crate::jail`]).
    #[educe(Debug(ignore))]
    pub spawner: Option<Arc<Spawner>>,
}

impl Probe {
    /// `check`, with commands run in `dir` with only `env`.
    pub fn new(check: Check, dir: PathBuf, env: Vec<(String, String)>) -> Self {
        Self {
            check,
            dir,
            env,
            spawner: None,
        }
    }

    /// Command probes start in `spawner`'s sandbox.
    pub fn jailed(mut self, spawner: Option<Arc<Spawner>>) -> Self {
        self.spawner = spawner;
        self
    }

    fn describe(&self) -> String {
        match &self.check {
            Check::Http { url, .. } => format!("GET {url}"),
            Check::Tcp { address } => format!("TCP {address}"),
            Check::Command { run } => format!("`{run}`"),
        }
    }

    /// One check: `Ok` or what was wrong.
    pub async fn check(&self, http: &reqwest::Client) -> Result<(), String> {
        let (dir, env) = (&self.dir, &self.env);
        match &self.check {
            Check::Http { url, status, body } => {
                let resp = http
                    .get(url)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| format!("{}: {}", self.describe(), root_cause(&e)))?;
                let got = resp.status().as_u16();
                if got != *status {
                    return Err(format!(
                        "{}: status {got}, expected {status}",
                        self.describe()
                    ));
                }
                if let Some(want) = body {
                    let text = resp
                        .text()
                        .await
                        .map_err(|e| format!("{}: {e}", self.describe()))?;
                    if !text.contains(want.as_str()) {
                        return Err(format!(
                            "{}: the body does not contain `{want}`",
                            self.describe()
                        ));
                    }
                } else {
                    // Read to its end (up to 64 KiB) so that the connection is kept
                    // for the next check, as a health watch probes every few seconds.
                    let mut resp = resp;
                    let mut read = 0usize;
                    while let Ok(Some(chunk)) = resp.chunk().await {
                        read += chunk.len();
                        if read > 64 << 10 {
                            break;
                        }
                    }
                }
                Ok(())
            }
            Check::Tcp { address } => tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(address),
            )
            .await
            .map_err(|_| format!("{}: timed out", self.describe()))?
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", self.describe())),
            Check::Command { run } => {
                let child = match &self.spawner {
                    Some(spawner) => {
                        let start = ferry_exec::helper::Start {
                            program: "sh".into(),
                            args: vec!["-c".into(), run.clone()],
                            env: env.clone(),
                            cwd: dir.clone(),
                            // Its own group: what it leaves in the background ends
                            // with it.
                            group: true,
                            fds: 0,
                        };
                        spawner.start_process(start, Vec::new()).await
                    }
                    None => {
                        let mut cmd = tokio::process::Command::new("sh");
                        cmd.args(["-c", run])
                            .current_dir(dir)
                            // The deployment's environment (with its PATH and HOME),
                            // never the server's.
                            .env_clear()
                            .envs(env.iter().map(|(k, v)| (k, v)))
                            .stdin(std::process::Stdio::null())
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .process_group(0)
                            .kill_on_drop(true);
                        cmd.spawn().map(ferry_exec::process::Proc::Local)
                    }
                };
                let mut child = child.map_err(|e| format!("{}: {e}", self.describe()))?;
                let group = child.id().map(|p| p as i32).unwrap_or(0);
                let out = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
                ferry_exec::process::signal_group(group, nix::sys::signal::Signal::SIGKILL);
                let code = out
                    .map_err(|_| format!("{}: timed out after 30s", self.describe()))?
                    .map_err(|e| format!("{}: {e}", self.describe()))?;
                if code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: exited with exit status: {code}",
                        self.describe()
                    ))
                }
            }
        }
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

/// Runs the probes for `window`; `gone` tells whether the workload died (with why).
pub async fn verify(
    probes: &[Probe],
    window: Duration,
    interval: Duration,
    ca: &[reqwest::Certificate],
    gone: impl Fn() -> Option<String>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    // https:// probes trust the system's certificates and `ca`.
    let http = ca
        .iter()
        .fold(reqwest::Client::builder().no_proxy(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + window;
    let mut passed_once = false;
    let mut last_error = String::from("no probe ran");
    loop {
        if let Some(why) = gone() {
            return Err(why);
        }
        let mut failure = None;
        for p in probes {
            if let Err(e) = p.check(&http).await {
                failure = Some(e);
                break;
            }
        }
        match failure {
            None => passed_once = true,
            Some(e) if passed_once => return Err(format!("{e} (after it had passed)")),
            Some(e) => last_error = e,
        }
        if tokio::time::Instant::now() >= deadline {
            return if passed_once {
                Ok(())
            } else {
                Err(format!(
                    "not healthy within {}s: {last_error}",
                    window.as_secs_f32()
                ))
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.min(deadline.saturating_duration_since(tokio::time::Instant::now()))) => {}
            _ = cancel.cancelled() => return Err("cancelled".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passing_failing_and_flapping() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cancel = CancellationToken::new();
        let tcp = vec![Probe::new(
            Check::Tcp {
                address: addr.clone(),
            },
            PathBuf::new(),
            Vec::new(),
        )];
        let quick = Duration::from_millis(300);
        let every = Duration::from_millis(50);
        assert!(
            verify(&tcp, quick, every, &[], || None, &cancel)
                .await
                .is_ok()
        );
        drop(listener);
        let err = verify(&tcp, quick, every, &[], || None, &cancel)
            .await
            .expect_err("closed");
        assert!(
            err.starts_with(&format!("not healthy within 0.3s: TCP {addr}")),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tmp");
        // Passes twice, then fails: a failure after passing fails at once.
        let run = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -lt 2 ]";
        let flap = vec![Probe::new(
            Check::Command { run: run.into() },
            dir.path().to_path_buf(),
            Vec::new(),
        )];
        let err = verify(&flap, Duration::from_secs(5), every, &[], || None, &cancel)
            .await
            .expect_err("flaps");
        assert!(err.ends_with("(after it had passed)"), "{err}");
        let gone = verify(
            &tcp,
            quick,
            every,
            &[],
            || Some("the process exited with code 3".into()),
            &cancel,
        )
        .await
        .expect_err("gone");
        assert_eq!(gone, "the process exited with code 3");
    }
}
