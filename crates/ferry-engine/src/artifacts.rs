//! Artifacts: files a job leaves for the jobs that need it.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, PermissionsExt as _};
use globset::Glob;

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

/// Copies what `patterns` match in `workspace` into `store_dir`, keeping relative paths.
/// A pattern that matches nothing is an error. Every path is opened beneath the
/// workspace (`cap-std`): a symbolic link on the way that points outside it (`ln -s
/// ../../.. d` with `artifacts: [d/secret.key]`) is an error, never a copy of that place.
pub(crate) fn collect(
    workspace: &Path,
    patterns: &[String],
    store_dir: &Path,
) -> Result<usize, String> {
    let ws = Dir::open_ambient_dir(workspace, ambient_authority())
        .map_err(|e| format!("cannot open the workspace {}: {e}", workspace.display()))?;
    let mut copied = 0;
    for pattern in patterns {
        let mut matched = 0;
        let keep = |rel: &Path| {
            copy_out(&ws, rel, &store_dir.join(rel)).map_err(|e| {
                format!(
                    "cannot keep artifact {}: {}",
                    rel.display(),
                    explain(&e, "the workspace")
                )
            })
        };
        if !is_glob(pattern) {
            let rel = Path::new(pattern);
            match ws.symlink_metadata(rel) {
                Ok(_) => {
                    keep(rel)?;
                    matched += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "artifact `{pattern}`: {}",
                        explain(&e, "the workspace")
                    ));
                }
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
                    keep(rel)?;
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

/// What an I/O error means to the user; the escape cap-std refuses is named as such.
fn explain(e: &io::Error, root: &str) -> String {
    if e.kind() == io::ErrorKind::PermissionDenied && e.to_string().contains("outside") {
        format!("it leads out of {root} (through a symbolic link or `..`)")
    } else {
        e.to_string()
    }
}

/// Copies `rel` beneath `from` to `to` (a path of Ferry's own): a file, a symlink *as
/// a symlink*, or a directory with its contents, never following a link. Anything
/// else (a FIFO, a socket, a device) is refused: reading it could block or never end.
fn copy_out(from: &Dir, rel: &Path, to: &Path) -> io::Result<()> {
    let meta = from.symlink_metadata(rel)?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = from.read_link_contents(rel)?;
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(target, to)
    } else if kind.is_dir() {
        let sub = from.open_dir(rel)?;
        std::fs::create_dir_all(to)?;
        for entry in sub.entries()? {
            let name = entry?.file_name();
            copy_out(&sub, Path::new(&name), &to.join(&name))?;
        }
        Ok(())
    } else if kind.is_file() {
        let mut source = from.open(rel)?.into_std();
        let mut copy = std::fs::File::create(to)?;
        std::io::copy(&mut source, &mut copy)?;
        copy.set_permissions(std::fs::Permissions::from_mode(meta.permissions().mode()))
    } else {
        Err(io::Error::other(
            "not a file, a directory or a symbolic link",
        ))
    }
}

/// Restores the artifacts in `dirs` into a workspace (later directories win). Every
/// path is created beneath the workspace: a symbolic link of the source (a committed
/// `out -> ../../..`) where an artifact's file or directory goes is replaced by it,
/// never written through; a path that would still lead out is an error.
pub(crate) fn restore(dirs: &[PathBuf], workspace: &Path) -> Result<(), String> {
    let ws = Dir::open_ambient_dir(workspace, ambient_authority())
        .map_err(|e| format!("cannot open the workspace {}: {e}", workspace.display()))?;
    for dir in dirs {
        if dir.is_dir() {
            copy_in(dir, &ws).map_err(|(rel, e)| {
                format!(
                    "cannot restore artifact {} from {}: {}",
                    rel.display(),
                    dir.display(),
                    explain(&e, "the workspace")
                )
            })?;
        }
    }
    Ok(())
}

fn copy_in(from: &Path, ws: &Dir) -> Result<(), (PathBuf, io::Error)> {
    for entry in walkdir::WalkDir::new(from).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| (PathBuf::new(), io::Error::other(e)))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let fail = |e: io::Error| (rel.to_path_buf(), e);
        let kind = entry.file_type();
        if kind.is_dir() {
            // A link (or a file) of the source where the artifact has a directory goes,
            // as it went in the job that made the artifact.
            if let Ok(there) = ws.symlink_metadata(rel)
                && !there.is_dir()
            {
                ws.remove_file(rel).map_err(fail)?;
            }
            ws.create_dir_all(rel).map_err(fail)?;
            continue;
        }
        // What stands there now (a file or a link of the source) is replaced.
        if let Ok(there) = ws.symlink_metadata(rel)
            && !there.is_dir()
        {
            ws.remove_file(rel).map_err(fail)?;
        }
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(fail)?;
            ws.symlink_contents(target, rel).map_err(fail)?;
        } else {
            let mut source = std::fs::File::open(entry.path()).map_err(fail)?;
            let mode = source.metadata().map_err(fail)?.permissions().mode();
            let mut copy = ws.create(rel).map_err(fail)?.into_std();
            std::io::copy(&mut source, &mut copy).map_err(fail)?;
            copy.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// Opens `name` beneath `dir` without blocking (a FIFO put in a file's place must not
/// hold the caller) if it is still the regular file the caller's walk saw (`seen`:
/// device and inode); `None` when it is something else now.
pub(crate) fn open_seen(
    dir: &Dir,
    name: &Path,
    seen: (u64, u64),
) -> io::Result<Option<(cap_std::fs::File, cap_std::fs::Metadata)>> {
    use cap_std::fs::{MetadataExt as _, OpenOptionsExt as _};
    let mut options = cap_std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    let file = dir.open_with(name, &options)?;
    let meta = file.metadata()?;
    if !meta.is_file() || (meta.dev(), meta.ino()) != seen {
        return Ok(None);
    }
    Ok(Some((file, meta)))
}
