//! Host paths a deployment may mount into its container.
//!
//! A `docker` target's `volumes:` come from the release's own configuration, which the
//! author of its commit wrote; a bind mount of `/` (or of the Docker socket) would hand
//! them the host. So a host path is mounted only when it is a directory the server's
//! administrator allows (`ferry serve --deploy-mount DIR`), exactly; named volumes are
//! Docker's own storage and always allowed.
//!
//! Exactly, not a path below one: Docker resolves a bind mount's source when it starts
//! the container, after Ferry's check, and a container that mounts an allowed directory
//! may write into it — a link swapped in for a subdirectory between the check and the
//! start would lead the mount anywhere. An allowed directory's own path runs through
//! directories no container mounts (`ferry serve` refuses allowed directories inside one
//! another), so no container can change where it leads.

use std::path::{Component, Path, PathBuf};

/// A directory deployments may mount: as its administrator wrote it, and where it led
/// when the server started (a link swapped in for it later is not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub dir: PathBuf,
    real: PathBuf,
}

impl Allowed {
    pub fn new(dir: PathBuf) -> Allowed {
        let real = resolved(&dir);
        Allowed { dir, real }
    }
}

/// Why the volume `spec` (`SOURCE:TARGET[:OPTIONS]`, after expressions are evaluated)
/// may not be mounted, or `Ok` when it may.
pub fn check(spec: &str, allowed: &[Allowed]) -> Result<(), String> {
    let Some((source, _)) = spec.split_once(':') else {
        return Err(format!(
            "volume `{spec}`: write `SOURCE:TARGET` (a volume name or an absolute host path)"
        ));
    };
    if is_volume_name(source) {
        return Ok(());
    }
    let path = Path::new(source);
    if !path.is_absolute() {
        return Err(format!(
            "volume `{spec}`: `{source}` is neither a volume name nor an absolute host path"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "volume `{spec}`: the host path `{source}` may not use `.` or `..`"
        ));
    }
    // Docker follows links in the host path: what counts is where it leads.
    let real = resolved(path);
    if allowed
        .iter()
        .any(|a| path == a.dir.as_path() && real == a.real)
    {
        return Ok(());
    }
    Err(format!(
        "volume `{spec}`: the host path `{source}` is not a directory the server allows \
         deployments to mount ({}), and a path below one is not mounted: its \
         administrator allows one, exactly, with `ferry serve --deploy-mount DIR`",
        if allowed.is_empty() {
            "it allows none".to_string()
        } else {
            allowed
                .iter()
                .map(|a| a.dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))
}

/// `path` with its links resolved: the nearest existing ancestor's real path, then the
/// rest (Docker creates what does not exist).
fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_volumes_and_allowed_host_paths_are_mounted() {
        let allowed = [Allowed::new(PathBuf::from("/srv/app-data"))];
        let table: &[(&str, Option<&str>)] = &[
            ("data:/var/lib/app", None),
            ("app_data.v2-x:/data:ro", None),
            ("/srv/app-data:/data", None),
            ("/srv/app-data/:/data:ro", None),
            (
                "/srv/app-data/uploads:/uploads:ro",
                Some("a path below one is not mounted"),
            ),
            ("/:/host", Some("is not a directory the server allows")),
            (
                "/var/run/docker.sock:/var/run/docker.sock",
                Some("is not a directory the server allows"),
            ),
            ("/srv/app-data-other:/x", Some("is not a directory")),
            (
                "/srv/app-data/../../etc:/etc",
                Some("may not use `.` or `..`"),
            ),
            ("./here:/x", Some("neither a volume name nor")),
            ("~/x:/x", Some("neither a volume name nor")),
            ("-v:/x", Some("neither a volume name nor")),
            ("/data", Some("write `SOURCE:TARGET`")),
        ];
        for (spec, want) in table {
            let got = check(spec, &allowed);
            match want {
                None => assert_eq!(got, Ok(()), "{spec}"),
                Some(part) => {
                    let e = got.expect_err(spec);
                    assert!(e.contains(part), "{spec}: {e}");
                }
            }
        }
        let none = check("/srv/app-data:/d", &[]).expect_err("none allowed");
        assert!(none.contains("(it allows none)"), "{none}");
    }

    /// Nothing below an allowed directory is mounted, a real directory or a link a
    /// container left there (which could be swapped in after the check), and an
    /// allowed directory that became a link is not mounted either.
    #[test]
    fn a_link_in_an_allowed_directory_does_not_lead_out_of_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let allowed = tmp.path().join("data");
        std::fs::create_dir_all(allowed.join("real")).expect("mkdir");
        std::os::unix::fs::symlink("/", allowed.join("escape")).expect("link");
        let dirs = [Allowed::new(allowed.clone())];
        assert_eq!(check(&format!("{}:/d", allowed.display()), &dirs), Ok(()));
        for spec in [
            format!("{}:/d", allowed.join("real").display()),
            format!("{}:/d", allowed.join("new/deeper").display()),
            format!("{}:/host", allowed.join("escape").display()),
            format!("{}:/host", allowed.join("escape/etc").display()),
        ] {
            let e = check(&spec, &dirs).expect_err(&spec);
            assert!(e.contains("a path below one is not mounted"), "{e}");
        }
        let swapped = tmp.path().join("swapped");
        std::fs::create_dir_all(&swapped).expect("mkdir");
        let dirs = [Allowed::new(swapped.clone())];
        std::fs::remove_dir(&swapped).expect("rmdir");
        std::os::unix::fs::symlink("/", &swapped).expect("link");
        let e = check(&format!("{}:/host", swapped.display()), &dirs).expect_err("a link now");
        assert!(e.contains("is not a directory the server allows"), "{e}");
    }
}
