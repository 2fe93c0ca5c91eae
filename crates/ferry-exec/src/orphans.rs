//! Remembering the process groups of running steps on disk, so that the next Ferry
//! process can end what a crashed one (`kill -9`, power loss) left running.
//!
//! Each [`Tracker`] keeps one journal, `<dir>/<owner pid>.<n>`: a first line with the
//! owner's start time, then a line `<pgid>` for each group started and `-<pgid>` for
//! each group ended, appended (no file is made or removed per step). A journal is only
//! acted on when its owner is gone; then every group it lists as started and not ended
//! is killed, each process only if it is in that group and started no earlier than the
//! owner did (a group's id is its leader's pid, which the kernel does not hand out while
//! the group exists, so a process of that group that started before the owner belongs
//! to another, earlier group and is left alone).
//!
//! Records in the form of earlier versions (`<owner pid>-<pgid>` holding the owner's
//! and the leader's start times) are still reaped.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A journal is rewritten to only its live groups when it grows past this.
const COMPACT_AT: u64 = 64 * 1024;

/// The start time (clock ticks since boot) and process group of a live process.
fn stat(pid: i32) -> Option<(u64, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); pgrp is field 5, starttime field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, pgrp))
}

/// This process's start time, read once.
fn own_start() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| stat(std::process::id() as i32).map(|(start, _)| start))
}

/// Records the live process groups of one owner (this process) in its journal.
#[derive(Debug, Clone)]
pub struct Tracker {
    dir: PathBuf,
    journal: Arc<Mutex<Journal>>,
}

#[derive(Debug, Default)]
struct Journal {
    /// `<owner pid>.<n>`, named when first written.
    path: Option<PathBuf>,
    file: Option<File>,
    /// The length of the header line.
    header: u64,
    written: u64,
    live: HashSet<i32>,
}

impl Journal {
    fn open(&mut self, dir: &Path) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            static N: AtomicUsize = AtomicUsize::new(0);
            let own = own_start().ok_or_else(|| std::io::Error::other("no own start time"))?;
            let path = dir.join(format!(
                "{}.{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let header = format!("{own}\n");
            let file = write_new(dir, &path, header.as_bytes())?;
            self.header = header.len() as u64;
            self.written = self.header;
            self.path = Some(path);
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened"))
    }

    fn append(&mut self, dir: &Path, line: &str) -> std::io::Result<()> {
        self.open(dir)?.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// With no group live, the journal is cut back to its header; grown large, it is
    /// replaced (written aside, then renamed) by one listing only the live groups.
    fn compact(&mut self, dir: &Path) -> std::io::Result<()> {
        let (Some(file), Some(path)) = (&self.file, &self.path) else {
            return Ok(());
        };
        if self.live.is_empty() {
            if self.written > self.header {
                file.set_len(self.header)?;
                self.written = self.header;
            }
            return Ok(());
        }
        if self.written < COMPACT_AT {
            return Ok(());
        }
        let mut content = format!("{}\n", own_start().unwrap_or_default());
        for pgid in &self.live {
            content.push_str(&format!("{pgid}\n"));
        }
        let aside = path.with_extension("new");
        write_new(dir, &aside, content.as_bytes())?;
        std::fs::rename(&aside, path)?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(path)?);
        self.written = content.len() as u64;
        Ok(())
    }
}

/// Creates `path` (and `dir` when missing) holding `content`, open for appending.
fn write_new(dir: &Path, path: &Path, content: &[u8]) -> std::io::Result<File> {
    let create = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            create()?
        }
        other => other?,
    };
    file.set_len(0)?;
    file.write_all(content)?;
    Ok(file)
}

impl Tracker {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            journal: Arc::default(),
        }
    }

    /// Records a new group (its leader is `pgid`): one line appended to the journal.
    pub fn started(&self, pgid: i32) {
        let Ok(mut journal) = self.journal.lock() else {
            return;
        };
        if journal.live.insert(pgid) {
            let _ = journal.append(&self.dir, &format!("{pgid}\n"));
        }
    }

    /// Forgets a group whose processes have been ended.
    pub fn ended(&self, pgid: i32) {
        let Ok(mut journal) = self.journal.lock() else {
            return;
        };
        if journal.live.remove(&pgid) {
            let _ = journal.append(&self.dir, &format!("-{pgid}\n"));
            let _ = journal.compact(&self.dir);
        }
    }

    /// The journal's path, once something was recorded.
    pub fn journal(&self) -> Option<PathBuf> {
        self.journal.lock().ok()?.path.clone()
    }

    /// Kills what dead owners left behind; returns how many processes were killed.
    pub fn reap(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some((owner, _)) = name.split_once('.') {
                // A journal (or one being rewritten, `.new`).
                let Ok(owner) = owner.parse::<i32>() else {
                    continue;
                };
                let mut lines = content.lines();
                let Some(Ok(owner_start)) = lines.next().map(str::parse::<u64>) else {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                };
                if stat(owner).is_some_and(|(start, _)| start == owner_start) {
                    continue; // its owner still runs it
                }
                let mut live = Vec::new();
                for line in lines {
                    match line.strip_prefix('-').map(str::parse::<i32>) {
                        Some(Ok(gone)) => live.retain(|g| *g != gone),
                        Some(Err(_)) => {}
                        None => live.extend(line.parse::<i32>().ok()),
                    }
                }
                for pgid in live {
                    killed += kill_group(pgid, owner_start);
                }
                let _ = std::fs::remove_file(entry.path());
            } else if let Some((owner, pgid)) = name.split_once('-') {
                // The form of earlier versions: one file per group.
                let (Ok(owner), Ok(pgid)) = (owner.parse::<i32>(), pgid.parse::<i32>()) else {
                    continue;
                };
                let mut parts = content.split_whitespace().map(|p| p.parse::<u64>().ok());
                let (Some(Some(owner_start)), Some(Some(pg_start))) = (parts.next(), parts.next())
                else {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                };
                if stat(owner).is_some_and(|(start, _)| start == owner_start) {
                    continue;
                }
                killed += kill_group(pgid, pg_start);
                let _ = std::fs::remove_file(entry.path());
            }
        }
        killed
    }
}

/// SIGKILLs every process in group `pgid` that started no earlier than the group.
fn kill_group(pgid: i32, pg_start: u64) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((start, pgrp)) = stat(pid)
            && pgrp == pgid
            && start >= pg_start
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// Where a data directory keeps its records.
pub fn tracker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("processes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id() as i32;
        let (start, pgrp) = stat(me).expect("own stat");
        assert!(start > 0 && pgrp > 0);
    }

    #[test]
    fn live_owners_are_left_alone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let t = Tracker::new(tmp.path().to_path_buf());
        let me = std::process::id() as i32;
        t.started(me);
        assert_eq!(t.reap(), 0, "our own record is not reaped while we live");
        let journal = t.journal().expect("a journal");
        let lines = std::fs::read_to_string(&journal).expect("journal");
        assert_eq!(lines.lines().nth(1), Some(me.to_string().as_str()));
        t.ended(me);
        let lines = std::fs::read_to_string(&journal).expect("journal");
        assert_eq!(
            lines.lines().count(),
            1,
            "cut back to its header: {lines:?}"
        );
    }

    /// A dead owner's journal: the groups it started and did not end are killed, the
    /// ended ones and processes older than the owner are left alone, and the journal
    /// goes.
    #[test]
    fn a_dead_owners_live_groups_are_killed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spawn = || {
            use std::os::unix::process::CommandExt as _;
            std::process::Command::new("sleep")
                .arg("30")
                .process_group(0)
                .spawn()
                .expect("sleep")
        };
        let (mut left, mut ended) = (spawn(), spawn());
        let (left_pid, ended_pid) = (left.id() as i32, ended.id() as i32);
        // An owner that is gone: a pid with another start time than recorded. Its start
        // time is ours, so the sleeps (started after it) count as its own.
        let start = own_start().expect("own start");
        let journal = tmp.path().join(format!("{}.0", std::process::id()));
        std::fs::write(
            &journal,
            format!("{}\n{left_pid}\n{ended_pid}\n-{ended_pid}\n", start),
        )
        .expect("write");
        // Pretend the owner is dead: rename to a pid that does not run.
        let dead = tmp.path().join("999999999.3");
        std::fs::rename(&journal, &dead).expect("rename");
        let t = Tracker::new(tmp.path().to_path_buf());
        assert_eq!(t.reap(), 1, "one live group of one process");
        assert!(left.wait().expect("wait").code().is_none(), "killed");
        assert!(
            ended.try_wait().expect("try_wait").is_none(),
            "an ended group is left"
        );
        assert!(!dead.exists(), "the journal is removed");
        let _ = ended.kill();
        let _ = ended.wait();
    }

    /// A long-lived owner's journal stays small: rewritten to its live groups.
    #[test]
    fn a_journal_is_compacted() {
        let tmp = tempfile::tempdir().expect("tmp");
        let t = Tracker::new(tmp.path().to_path_buf());
        t.started(1);
        for pgid in 2..20_000 {
            t.started(pgid);
            t.ended(pgid);
        }
        let journal = t.journal().expect("journal");
        let len = std::fs::metadata(&journal).expect("meta").len();
        assert!(len < COMPACT_AT + 32, "{len} bytes");
        let content = std::fs::read_to_string(&journal).expect("read");
        assert!(content.lines().any(|l| l == "1"), "the live group is kept");
        assert!(
            !content.lines().any(|l| l == "2"),
            "ended groups are dropped"
        );
    }
}
