//! Where deployments keep their files.
//!
//! Under `<data>/deploy/<repository id>/<environment>/`: `releases/<name>/` holds each
//! deployed release's files (copied out of the content-addressed store and checked
//! against their digests), `current` points at the live one (process target),
//! `deployments/<n>.log` each deployment's log, `output.log` the process's output with
//! secret values masked, `rendered/` the rendered Kubernetes manifests. Secret files go
//! elsewhere: [`secrets_root`] is in memory where the machine has it, never in the data
//! directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ferry_store::Release;

use crate::cas::Cas;

/// The directory of one environment.
pub fn environment_dir(root: &Path, repository_id: &str, environment: &str) -> PathBuf {
    root.join(repository_id).join(environment)
}

/// A name (a release's: a tag, which may hold `/`, or `r<N>-<sha>`) as one path
/// component: bytes other than letters, digits and `-_.+` are percent-encoded, and so
/// is a leading `.`, so that no name is `..`, climbs, nests or hides. The one way a
/// name becomes part of a path.
pub fn component(name: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'+');
    let encoded = utf8_percent_encode(name, ENCODED).to_string();
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None if encoded.is_empty() => "%".into(),
        None => encoded,
    }
}

/// The directory of release `name`'s files under an environment's directory.
pub fn release_dir(env_dir: &Path, name: &str) -> PathBuf {
    env_dir.join("releases").join(component(name))
}

/// Copies the release's files into `dir` (once; verified against their digests) and
/// returns it.
pub fn materialize(cas: &Cas, release: &Release, env_dir: &Path) -> Result<PathBuf, String> {
    let dir = release_dir(env_dir, &release.name);
    let done = dir.join(".ferry-complete");
    if done.exists() {
        return Ok(dir);
    }
    let tmp = env_dir
        .join("releases")
        .join(format!(".{}.partial", component(&release.name)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot make {}: {e}", tmp.display()))?;
    for a in &release.artifacts {
        let to = tmp.join(&a.path);
        cas.read_to(&a.digest, &to)
            .map_err(|e| format!("release {}: {}: {e}", release.name, a.path))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(a.mode as u32))
            .map_err(|e| format!("{}: {e}", a.path))?;
    }
    std::fs::write(tmp.join(".ferry-complete"), &release.id).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| format!("cannot place the release: {e}"))?;
    Ok(dir)
}

/// Points `<env dir>/current` at the release's directory (replaced atomically).
pub fn point_current(env_dir: &Path, release_dir: &Path) -> Result<(), String> {
    let link = env_dir.join("current");
    let tmp = env_dir.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(release_dir, &tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &link).map_err(|e| e.to_string())
}

/// Writes the secrets as files (0600, in a 0700 directory) into `<dir>/secrets/`,
/// replacing what was there.
pub fn write_secret_files(
    env_dir: &Path,
    secrets: &[(String, Vec<u8>)],
) -> Result<PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = env_dir.join("secrets");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    for (name, value) in secrets {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))
            .map_err(|e| format!("cannot write secret {name}: {e}"))?;
        f.write_all(value).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// Removes the secret files written for processes (`<root>/<repo>/<env>/secrets`),
/// leaving those of containers that run on (`…/containers/`), and the directories
/// left empty.
pub fn clear_process_secrets(root: &Path) {
    let Ok(repos) = std::fs::read_dir(root) else {
        return;
    };
    for repo in repos.flatten() {
        let Ok(envs) = std::fs::read_dir(repo.path()) else {
            continue;
        };
        for env in envs.flatten() {
            let _ = std::fs::remove_dir_all(env.path().join("secrets"));
            let _ = std::fs::remove_dir(env.path()); // when nothing else is left
        }
        let _ = std::fs::remove_dir(repo.path());
    }
    let _ = std::fs::remove_dir(root);
}

/// Makes `root` (see [`secrets_root`]) the server's own directory, `0711`: one that is
/// there already must be a directory of the server's user, not a link or another
/// user's (a local user could make `/dev/shm/ferry-…` first, to be handed the secrets).
pub fn own_secrets_root(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    let made = std::fs::DirBuilder::new().mode(0o711).create(root);
    if let Err(e) = made
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {e}", root.display()));
    }
    let meta = std::fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{} is not a directory of this server's own: secrets are not written there \
             (remove it)",
            root.display()
        ));
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("{}: {e}", root.display()))
}

/// `/dev/shm/ferry-<hash of the data dir>` (or the temporary directory): the secret
/// files of one server, kept off the disk where possible and out of the data directory.
pub fn secrets_root(data_dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    let id = hex::encode(&sha2::Sha256::digest(data_dir.display().to_string().as_bytes())[..6]);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("ferry-{id}"))
}

#[cfg(test)]
mod tests {
    use super::component;

    /// A secrets root that is a link, or not the server's, is refused; the server's own
    /// is kept and made `0711`.
    #[test]
    fn a_secrets_root_someone_else_made_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("ferry-x");
        super::own_secrets_root(&root).expect("made");
        super::own_secrets_root(&root).expect("kept");
        let mode = std::fs::metadata(&root).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        let link = tmp.path().join("ferry-link");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("link");
        let err = super::own_secrets_root(&link).expect_err("a link");
        assert!(
            err.contains("not a directory of this server's own"),
            "{err}"
        );
        if nix::unistd::geteuid().is_root() {
            let theirs = tmp.path().join("ferry-theirs");
            std::fs::create_dir_all(&theirs).expect("mkdir");
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
            assert!(super::own_secrets_root(&theirs).is_err(), "another user's");
        }
    }

    /// Every release name is one path component that cannot climb, nest or hide.
    #[test]
    fn names_become_one_harmless_path_component() {
        for (name, component_of) in [
            ("v1.2.3", "v1.2.3"),
            ("r12-abc1234", "r12-abc1234"),
            ("release/2026-12", "release%2F2026-12"),
            ("..", "%2E."),
            (
                "../../../../home/u/victim",
                "%2E.%2F..%2F..%2F..%2Fhome%2Fu%2Fvictim",
            ),
            (".hidden", "%2Ehidden"),
            ("a%2Fb", "a%252Fb"),
            ("ünï", "%C3%BCn%C3%AF"),
            ("", "%"),
        ] {
            assert_eq!(component(name), component_of, "{name}");
        }
    }
}
