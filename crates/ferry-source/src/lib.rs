//! Where Ferry's code comes from: a local working tree (`ferry run`), or a repository's
//! bare mirror kept by the server (commits, files at a commit, remote heads, ranges of
//! history for an approver). Everything goes through the `git` command but the reading of
//! a local working tree, done in-process where gitoxide reads it exactly as `git` would.

pub mod git;
mod in_process;

pub use git::{Commit, LogEntry, Snapshot, WorkingTree};
