//! Image builds: what to build and what was built. [`crate::ImageBuilder`] does it (the
//! Docker executor, through the Engine API).

use std::path::PathBuf;

use crate::registry::Logins;

/// One image build, resolved.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The build context (a directory on this host).
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    pub labels: Vec<(String, String)>,
    /// The repository, e.g. `127.0.0.1:5000/team/app`.
    pub name: String,
    /// Its tags (the commit's sha first).
    pub tags: Vec<String>,
    pub push: bool,
    /// Registry logins of the job's repository.
    pub logins: Logins,
}

/// What a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The local image id (`sha256:…`).
    pub id: String,
    /// `name:tag` for every tag.
    pub references: Vec<String>,
    /// The registry's digest of the pushed image (`sha256:…`), when pushed.
    pub digest: Option<String>,
}
