//! Job workspaces: each job gets a fresh copy of the source, so jobs cannot trample
//! each other or the user's tree.

use std::io;
use std::path::{Path, PathBuf};

/// Copies one file or symlink, creating parent directories. A file listed but missing
/// (deleted in the working tree) is skipped: its deletion is part of the snapshot.
pub(crate) fn copy_entry(from: &Path, to: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(from) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(target, to)
    } else if meta.is_dir() {
        copy_dir(from, to)
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Copies a directory recursively (symlinks as symlinks).
pub(crate) fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in walkdir::WalkDir::new(from).min_depth(1).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(from).map_err(io::Error::other)?;
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else {
            copy_entry(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Fills `dest` with `files` (relative to `root`), or with all of `root` when `None`.
pub(crate) fn materialize(root: &Path, files: Option<&[PathBuf]>, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    match files {
        Some(files) => {
            for f in files {
                copy_entry(&root.join(f), &dest.join(f))?;
            }
            Ok(())
        }
        None => copy_dir(root, dest),
    }
}

/// Removes a directory tree, making read-only directories writable first (tools such as
/// Go's module cache leave them behind).
pub(crate) fn remove(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    // By directory handle, never by path: a process the job left could swap a
    // directory for a link to a file of the host's while this runs.
    let _ = ferry_exec::sandbox::open_up(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A file-system-safe name for a job: `test (db=16)` → `test-db-16`.
pub(crate) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "job".into() } else { out }
}

pub(crate) fn job_dir(root: &Path, position: usize, name: &str) -> PathBuf {
    root.join(format!("{position:03}-{}", slug(name)))
}

/// Every file under `root` (relative to it) except the `.git` and `.ferry` directories at
/// its top: the source of a run in a directory that is not a git repository.
pub fn directory_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() == 1 && (e.file_name() == ".git" || e.file_name() == ".ferry"))
        });
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_dir() {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(root) {
            files.push(rel.to_path_buf());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(super::slug("test (db=16, os=a)"), "test-db-16-os-a");
        assert_eq!(super::slug("((("), "job");
    }
}
