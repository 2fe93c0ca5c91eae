//! Artifacts: files a job leaves for the jobs that need it.

use std::path::{Path, PathBuf};

use globset::Glob;

use crate::workspace;

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

/// Copies what `patterns` match in `workspace` into `store_dir`, keeping relative paths.
/// A pattern that matches nothing is an error.
pub(crate) fn collect(
    workspace: &Path,
    patterns: &[String],
    store_dir: &Path,
) -> Result<usize, String> {
    let mut copied = 0;
    for pattern in patterns {
        let mut matched = 0;
        if !is_glob(pattern) {
            let from = workspace.join(pattern);
            if from.symlink_metadata().is_ok() {
                copy(&from, &store_dir.join(pattern))?;
                matched += 1;
            }
        } else {
            let glob = Glob::new(pattern)
                .map_err(|e| format!("invalid pattern `{pattern}`: {e}"))?
                .compile_matcher();
            for entry in walkdir::WalkDir::new(workspace)
                .min_depth(1)
                .into_iter()
                .flatten()
            {
                if entry.file_type().is_dir() {
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(workspace) else {
                    continue;
                };
                if glob.is_match(rel) {
                    copy(entry.path(), &store_dir.join(rel))?;
                    matched += 1;
                }
            }
        }
        if matched == 0 {
            return Err(format!("artifact `{pattern}` matched no files"));
        }
        copied += matched;
    }
    Ok(copied)
}

/// Copies a file, a directory or a symlink *as a symlink*: an artifact that is a link to
/// somewhere outside the workspace must not copy that place.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    workspace::copy_entry(from, to)
        .map_err(|e| format!("cannot keep artifact {}: {e}", from.display()))
}

/// Restores the artifacts in `dirs` into a workspace (later directories win).
pub(crate) fn restore(dirs: &[PathBuf], workspace: &Path) -> Result<(), String> {
    for dir in dirs {
        if dir.is_dir() {
            workspace::copy_dir(dir, workspace)
                .map_err(|e| format!("cannot restore artifacts from {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}
