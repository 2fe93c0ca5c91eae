//! The local repository and its embedded store.

use std::path::{Path, PathBuf};

use ferry_source::git;
use ferry_store::{Pooling, Store};

use crate::Failure;
use crate::args::StoreArgs;

/// A repository on this machine and the store that records its local runs.
#[derive(Debug)]
pub struct Local {
    pub root: PathBuf,
    pub store: Store,
    pub repository_id: String,
}

/// Where a pipeline's files come from: the root of the git repository holding the
/// directory, or, outside any repository, the directory itself.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
    pub git: bool,
}

pub async fn repo_root(dir: &Path) -> Result<Root, Failure> {
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    match git::toplevel(dir).await {
        Ok(path) => Ok(Root { path, git: true }),
        Err(e) if e.contains("not a git repository") => {
            let path = std::fs::canonicalize(dir)
                .map_err(|e| Failure::usage(format!("{}: {e}", dir.display())))?;
            Ok(Root { path, git: false })
        }
        Err(e) => Err(Failure::usage(format!("{}: {e}", dir.display()))),
    }
}

/// The data directory: the flag or `FERRY_DATA_DIR`, else `.ferry/` at the root.
pub fn data_dir(root: &Path, args: &StoreArgs) -> PathBuf {
    args.data_dir.clone().unwrap_or_else(|| root.join(".ferry"))
}

pub async fn open(dir: &Path, args: &StoreArgs) -> Result<Local, Failure> {
    open_root(repo_root(dir).await?.path, args).await
}

/// Opens the store of the repository whose root is `root`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn open_root(root: PathBuf, args: &StoreArgs) -> Result<Local, Failure> {
    let data = data_dir(&root, args);
    let fresh = !data.exists();
    let store = Store::open_with(&data, args.database_url.as_deref(), Pooling::Single)
        .await
        .map_err(|e| match e {
            ferry_store::Error::Url(_) => Failure::usage(e.to_string()),
            e => Failure::failed(format!("cannot open the store in {}: {e}", data.display())),
        })?;
    if fresh && data.starts_with(&root) {
        // Keep the store out of git without touching the user's .gitignore.
        let _ = std::fs::write(data.join(".gitignore"), "*\n");
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let repository_id = store
        .ensure_repository(&root.display().to_string(), &name)
        .await?;
    Ok(Local {
        root,
        store,
        repository_id,
    })
}

/// Where workspaces go: `FERRY_WORK_DIR`, else `ferry-work` in the temp directory.
/// Outside the repository, so that tools walking up from a workspace (git, cargo) do
/// not find the user's tree.
pub fn work_root() -> PathBuf {
    std::env::var_os("FERRY_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-work"))
}
