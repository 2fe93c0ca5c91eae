//! The sandbox of a release's host code: a `script` target without an image, a
//! `process` target and `command` probes run the released commit's code on this host.
//! With a sandbox (`ferry serve`'s host sandbox, unless `--deploy-sandbox off`), that
//! code gets what host steps get (see [`ferry_exec::sandbox`]): it reads the system (and
//! `--sandbox-read`) and the environment's secret files, reads and writes the release's
//! directory and the environment's temporary directory (and `--sandbox-write`), and
//! nothing else: not the server's key or database, not other environments' releases or
//! secrets. Where the server runs as root it runs as a step user (by default a uid of
//! the deployment's own, see [`ferry_exec::sandbox::StepUsers`]), which owns just the
//! release's directory and the temporary one for as long as the deployment's code runs
//! (the secret files stay the server's, readable by that user's group); the directories
//! above the release's are made passable (`0711`) and nothing more.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_exec::sandbox::{Sandbox, Spawner, StepUsers};

/// Where one deployment's host code may write.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The release's files (the working directory and `HOME`).
    pub release_dir: PathBuf,
    /// The environment's secret files.
    pub secrets_dir: PathBuf,
    /// `TMPDIR`: `<environment dir>/tmp`, made afresh for each deployment.
    pub tmp: PathBuf,
}

/// A spawner for the deployment's host code, restricted to `cell`; for a step user, the
/// directories from `root` (`<data>/deploy`) down to the release's are made passable.
/// Blocking (it walks the release's files to give them to the step user).
pub fn lock(sandbox: &Sandbox, root: &Path, cell: &Cell) -> Result<Arc<Spawner>, String> {
    // Fresh for each deployment: what earlier code left there is neither kept nor
    // walked again (`remove_dir_all` never follows a link).
    let _ = std::fs::remove_dir_all(&cell.tmp);
    std::fs::create_dir_all(&cell.tmp)
        .map_err(|e| format!("cannot create {}: {e}", cell.tmp.display()))?;
    if !cell.release_dir.starts_with(root) {
        return Err(format!(
            "{} is not under {}",
            cell.release_dir.display(),
            root.display()
        ));
    }
    if let Some(user) = sandbox.user.as_ref().map(StepUsers::probe) {
        let passable = std::fs::Permissions::from_mode(0o711);
        // `<data>/deploy`, the repository's, the environment's, `releases/`.
        let mut dir = cell.release_dir.parent();
        while let Some(d) = dir {
            std::fs::set_permissions(d, passable.clone())
                .map_err(|e| format!("cannot set the mode of {}: {e}", d.display()))?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
        for own in [&cell.release_dir, &cell.secrets_dir] {
            if let Some(why) = user.cannot_reach(own) {
                return Err(format!(
                    "the release's host code runs as uid {} and cannot reach its files: \
                     {why}; choose a --data-dir it can reach (e.g. /var/lib/ferry), or \
                     --deploy-sandbox off",
                    user.uid
                ));
            }
        }
    }
    // The secret files are read, never owned: the server's, readable by the step
    // user's group only (`0750`/`0640`), so that no step of that user can open them to
    // others with a `chmod` (which Landlock does not govern).
    let own = vec![cell.release_dir.clone(), cell.tmp.clone()];
    let spawner = Spawner::start_sharing(sandbox, own, vec![cell.secrets_dir.clone()])?;
    Ok(Arc::new(spawner))
}
