//! Where Ferry's code comes from: a local working tree (`ferry run`), or a repository's
//! bare mirror kept by the server (commits, files at a commit, remote heads, ranges of
//! history for an approver). Everything goes through the `git` command.

pub mod git;

pub use git::{Commit, LogEntry, WorkingTree};
