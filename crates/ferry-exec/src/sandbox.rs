//! The host-job sandbox: a job's steps may read (and run) the system's directories and
//! read and write their own workspace and temporary directory, and nothing else on the
//! filesystem: not the server's data directory (its key, its database), not other
//! jobs' workspaces, not the home directory. Enforced with Linux Landlock.
//!
//! Landlock restricts the thread that asks and everything that thread starts
//! afterwards, so each sandboxed job gets a [`Spawner`]: a thread of its own that
//! restricts itself once, with the job's paths, and then starts every step of the job.
//! The restriction costs a few system calls per job and nothing per step; the server's
//! own threads are never restricted.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, path_beneath_rules,
};

/// The newest Landlock ABI Ferry knows; older kernels enforce what they can, and
/// [`Sandbox::check`] says what.
const NEWEST: ABI = ABI::V5;

/// Directories a sandboxed step may read and run from by default: the system, not
/// `/home`, `/root`, `/tmp`, `/var` or `/proc` (where the server's own environment
/// is readable by its user).
pub const SYSTEM_READ: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Files a sandboxed step may read and write besides its own directories: the devices
/// every program expects. Not `/dev` as a whole: `/dev/shm` holds deployments' secret
/// files (owned by the server's user).
pub const SYSTEM_WRITE: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What sandboxed host steps may reach besides their own workspace and temporary
/// directory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            read: SYSTEM_READ.iter().map(PathBuf::from).collect(),
            write: SYSTEM_WRITE.iter().map(PathBuf::from).collect(),
        }
    }
}

/// What the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforced {
    /// Every filesystem access right Ferry asks for.
    Fully,
    /// Some rights only (an older Landlock ABI): the description says which ABI.
    Partially(String),
}

impl Sandbox {
    /// With `extra` also readable (e.g. a toolchain under `/home`).
    pub fn with_read(mut self, extra: impl IntoIterator<Item = PathBuf>) -> Self {
        self.read.extend(extra);
        self
    }

    /// With `extra` also writable (a directory every job shares, e.g. a build cache).
    pub fn with_write(mut self, extra: impl IntoIterator<Item = PathBuf>) -> Self {
        self.write.extend(extra);
        self
    }

    /// Checks, in a throwaway thread, that the kernel enforces Landlock, and how fully;
    /// `Err` says why it cannot (the kernel has no Landlock, or it is disabled).
    /// `data_dir` must not be readable through the allowed directories.
    pub fn check(&self, data_dir: &Path) -> Result<Enforced, String> {
        let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        for allowed in self.read.iter().chain(&self.write) {
            let allowed = std::fs::canonicalize(allowed).unwrap_or_else(|_| allowed.clone());
            if data.starts_with(&allowed) || allowed.starts_with(&data) {
                return Err(format!(
                    "the data directory {} and {}, which sandboxed jobs may reach, overlap",
                    data.display(),
                    allowed.display()
                ));
            }
        }
        let me = self.clone();
        std::thread::spawn(move || me.restrict(&[]))
            .join()
            .map_err(|_| "the sandbox check panicked".to_string())?
    }

    /// Restricts the calling thread (and what it starts from now on) to this sandbox
    /// plus `own` (read and write).
    fn restrict(&self, own: &[PathBuf]) -> Result<Enforced, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot set up the sandbox: {e}");
        let existing = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths.iter().filter(|p| p.exists()).cloned().collect()
        };
        let status = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(NEWEST))
            .map_err(|e| fail(&e))?
            .create()
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                existing(&self.read),
                AccessFs::from_read(NEWEST),
            ))
            .map_err(|e| fail(&e))?
            .add_rules(path_beneath_rules(
                existing(&self.write).into_iter().chain(own.iter().cloned()),
                AccessFs::from_all(NEWEST),
            ))
            .map_err(|e| fail(&e))?
            .restrict_self()
            .map_err(|e| fail(&e))?;
        match status.ruleset {
            RulesetStatus::FullyEnforced => Ok(Enforced::Fully),
            RulesetStatus::PartiallyEnforced => Ok(Enforced::Partially(
                "the kernel's Landlock is older than ABI 5: some rights are not enforced".into(),
            )),
            RulesetStatus::NotEnforced => {
                Err("the kernel does not enforce Landlock (not built in, or disabled)".into())
            }
        }
    }
}

type Request = (
    tokio::process::Command,
    tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
);

/// A thread restricted to a job's sandbox that starts the job's processes; it ends
/// when the spawner is dropped.
#[derive(Debug)]
pub struct Spawner {
    tx: std::sync::mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the thread and restricts it to `sandbox` plus `own` (read and write); must
    /// be called within a Tokio runtime (the children are reaped by it).
    pub fn start(sandbox: &Sandbox, own: Vec<PathBuf>) -> Result<Spawner, String> {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sandbox = sandbox.clone();
        std::thread::Builder::new()
            .name("ferry-sandbox".into())
            .spawn(move || {
                let restricted = sandbox.restrict(&own);
                let ok = restricted.is_ok();
                let _ = ready_tx.send(restricted);
                if !ok {
                    return;
                }
                let _entered = runtime.enter();
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let child = cmd.spawn();
                    // Our copies of the child's pipe ends go before the answer.
                    drop(cmd);
                    let _ = reply.send(child);
                }
            })
            .map_err(|e| format!("cannot start the sandbox thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(_)) => Ok(Spawner { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the sandbox thread ended".into()),
        }
    }

    /// Starts `cmd` from the restricted thread.
    pub async fn spawn(
        &self,
        cmd: tokio::process::Command,
    ) -> std::io::Result<tokio::process::Child> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((cmd, reply))
            .map_err(|_| std::io::Error::other("the sandbox thread ended"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the sandbox thread ended"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process started by a job's spawner reads the system and reads and writes its
    /// own directories; it cannot read or write another directory, while the rest of
    /// the process (this test) still can.
    #[tokio::test]
    async fn a_spawned_process_reaches_only_the_system_and_its_own() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (own, other) = (tmp.path().join("own"), tmp.path().join("other"));
        std::fs::create_dir_all(&own).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::fs::write(other.join("secret"), "hush").expect("write");
        let spawner = Spawner::start(&Sandbox::default(), vec![own.clone()]).expect("sandbox");
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "cat {o}/secret 2>/dev/null || echo no-read; (echo x > {o}/new) 2>/dev/null || echo no-write; \
                 echo mine > {m}/f && cat {m}/f; test -r /etc/passwd && echo system; \
                 echo quiet > /dev/null && echo devnull; ls /dev/shm >/dev/null 2>&1 || echo no-shm",
                o = other.display(),
                m = own.display()
            ))
            .stdout(std::process::Stdio::piped());
        let out = spawner
            .spawn(cmd)
            .await
            .expect("spawn")
            .wait_with_output()
            .await
            .expect("wait");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "no-read\nno-write\nmine\nsystem\ndevnull\nno-shm\n"
        );
        assert_eq!(
            std::fs::read_to_string(other.join("secret")).expect("us"),
            "hush"
        );
        assert!(!other.join("new").exists());
    }

    /// A data directory the sandbox would let jobs read is refused at start.
    #[test]
    fn a_data_directory_jobs_could_read_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let sandbox = Sandbox::default().with_read([tmp.path().to_path_buf()]);
        let err = sandbox
            .check(&tmp.path().join("data"))
            .expect_err("beneath");
        assert!(
            err.contains("which sandboxed jobs may reach, overlap"),
            "{err}"
        );
        let inside = Sandbox::default().with_read([tmp.path().join("data/caches")]);
        assert!(
            inside.check(&tmp.path().join("data")).is_err(),
            "a directory inside it"
        );
        assert_eq!(
            Sandbox::default().check(&tmp.path().join("data")),
            Ok(Enforced::Fully)
        );
    }
}
