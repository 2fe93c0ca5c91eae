//! Remembering the process groups of running steps on disk, so that the next Ferry
//! process can end what a crashed one (`kill -9`, power loss) left running.
//!
//! Each live group has a file `<dir>/<owner pid>-<pgid>` holding the owner's and the
//! group leader's start times. A file is only acted on when its owner is gone; a
//! process is only killed when it is in the recorded group and started no earlier than
//! the group did, so a reused pid is never mistaken for a step.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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

/// The record of one step's process group.
#[derive(Debug, Clone)]
pub struct Tracker {
    dir: PathBuf,
}

impl Tracker {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn file(&self, pgid: i32) -> PathBuf {
        self.dir.join(format!("{}-{pgid}", std::process::id()))
    }

    /// Records a new group (its leader is `pgid`).
    pub fn started(&self, pgid: i32) {
        let (Some(own_start), Some((pg_start, _))) = (own_start(), stat(pgid)) else {
            return;
        };
        // The directory is made when the first write finds it missing.
        let (file, record) = (self.file(pgid), format!("{own_start} {pg_start}\n"));
        if let Err(e) = std::fs::write(&file, &record)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            let _ = std::fs::create_dir_all(&self.dir);
            let _ = std::fs::write(&file, &record);
        }
    }

    /// Forgets a group whose processes have been ended.
    pub fn ended(&self, pgid: i32) {
        let _ = std::fs::remove_file(self.file(pgid));
    }

    /// Kills what dead owners left behind; returns how many processes were killed.
    pub fn reap(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((owner, pgid)) = name.split_once('-') else {
                continue;
            };
            let (Ok(owner), Ok(pgid)) = (owner.parse::<i32>(), pgid.parse::<i32>()) else {
                continue;
            };
            let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut parts = content.split_whitespace().map(|p| p.parse::<u64>().ok());
            let (Some(Some(owner_start)), Some(Some(pg_start))) = (parts.next(), parts.next())
            else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            if stat(owner).is_some_and(|(start, _)| start == owner_start) {
                continue; // its owner still runs it
            }
            killed += kill_group(pgid, pg_start);
            let _ = std::fs::remove_file(entry.path());
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
        assert!(t.file(me).exists());
        t.ended(me);
        assert!(!t.file(me).exists());
    }
}
