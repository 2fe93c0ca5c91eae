//! What `terraform init` made, kept for the environment's next deployments.
//!
//! Each release is a new directory, so every deployment used to run `init` afresh:
//! Terraform's backend set up again and every provider and module downloaded again.
//! After an `init`, the server copies what it made (the module's `.terraform/` and
//! `.terraform.lock.hcl`) to `<environment dir>/infra-init/<fingerprint>/`, a directory
//! the release's code cannot write (its sandbox writes the release's directory and
//! the temporary one only), taken before `plan` runs any of the release's code. A later
//! deployment whose fingerprint is the same gets a copy of it instead of an `init`.
//!
//! The fingerprint covers everything `init` reads: every file of the module's
//! directory and the directories beneath it (the lock file, test files and an implied
//! provider mirror `terraform.d/` among them), what it reads in `HOME` (the release's
//! directory: `.terraformrc`, `terraform.rc`, `.terraform.d/`), the file
//! `TF_CLI_CONFIG_FILE` names, Ferry's backend override, the Terraform program (path,
//! size, modification time) and the `TF_*` variables of its environment but the
//! variables of the module (`TF_VAR_*`) and the backend's credential (`TF_HTTP_*`). It
//! is keyed with the server's secret key ([`ferry_store::SecretKey::fingerprint`]),
//! since a `TF_TOKEN_*` registry credential is among its inputs. A `.terraform/` the
//! release brings is removed before `init` (it is never used), and a tree holding a
//! link is never fingerprinted (nothing is kept or used then). A local module outside
//! the module's directory is read by `plan`, not by `init`; if it asks for a provider
//! the kept copy lacks, the plan fails, the kept copy is forgotten, and `init` runs and
//! the plan is made again.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _, PermissionsExt as _};
use ferry_store::SecretKey;

/// Where an environment keeps what `init` made, and the key of its fingerprints.
#[derive(Clone)]
pub struct InitCache {
    /// `<environment dir>/infra-init`.
    pub dir: PathBuf,
    pub key: SecretKey,
}

impl std::fmt::Debug for InitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The files of `init`'s work in a module's directory.
pub const TERRAFORM_DIR: &str = ".terraform";
const LOCK_FILE: &str = ".terraform.lock.hcl";
/// Names of a kept copy (the first is the `.terraform/` directory).
const KEPT_DIR: &str = "terraform";
const KEPT_LOCK: &str = "lock.hcl";

/// Files by path (relative, `/`-separated) with their contents, sorted.
pub type Files = Vec<(String, Vec<u8>)>;

/// Opens `name` in `dir` for reading if it is a regular file now (not a link, not a
/// FIFO swapped in meanwhile: the open never blocks).
fn open_regular(dir: &Dir, name: &std::ffi::OsStr) -> std::io::Result<cap_std::fs::File> {
    let f = dir.open_with(
        name,
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW),
    )?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a file",
            name.to_string_lossy()
        )));
    }
    Ok(f)
}

/// Every file of the tree `dir`, by path under `prefix`, with its contents; `None` if
/// the tree holds a link (or anything but files and directories). `.terraform/` at its
/// top is left out (it is `init`'s work, and removed before `init`).
pub fn tree_inputs(dir: &Dir, prefix: &str) -> std::io::Result<Option<Files>> {
    let mut out = Vec::new();
    let mut pending = vec![(prefix.to_string(), dir.try_clone()?)];
    while let Some((prefix, dir)) = pending.pop() {
        for entry in dir.entries()? {
            let entry = entry?;
            let name = entry.file_name();
            let kind = entry.file_type()?;
            let path = format!("{prefix}{}", name.to_string_lossy());
            if kind.is_dir() {
                if path != TERRAFORM_DIR {
                    pending.push((format!("{path}/"), entry.open_dir()?));
                }
            } else if kind.is_file() {
                let mut bytes = Vec::new();
                open_regular(&dir, &name)?.read_to_end(&mut bytes)?;
                out.push((path, bytes));
            } else {
                return Ok(None);
            }
        }
    }
    out.sort();
    Ok(Some(out))
}

/// What `init` reads in `HOME` (the release's directory `root`): the CLI
/// configuration (`.terraformrc`, `terraform.rc`) and `.terraform.d/` (an implied
/// provider mirror among it), by path under `~/`; `None` if one is a link.
pub fn home_inputs(root: &Dir) -> std::io::Result<Option<Files>> {
    let mut out = Vec::new();
    for name in [".terraformrc", "terraform.rc", ".terraform.d"] {
        let Ok(meta) = root.symlink_metadata(name) else {
            continue;
        };
        if meta.is_dir() {
            match tree_inputs(&root.open_dir(name)?, &format!("~/{name}/"))? {
                Some(files) => out.extend(files),
                None => return Ok(None),
            }
        } else if meta.is_file() {
            let mut bytes = Vec::new();
            open_regular(root, name.as_ref())?.read_to_end(&mut bytes)?;
            out.push((format!("~/{name}"), bytes));
        } else {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The contents of a file on the host (`TF_CLI_CONFIG_FILE` naming one outside the
/// release), at most 1 MiB of a regular file; nothing for anything else.
pub fn host_file(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    else {
        return Vec::new();
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut bytes);
    bytes
}

/// The fingerprint of one `init`: its inputs (see the module's documentation), keyed.
pub fn fingerprint(
    key: &SecretKey,
    program: &Path,
    backend: &str,
    files: &[(String, Vec<u8>)],
    env: &[(String, String)],
) -> String {
    let mut data = b"ferry terraform init 1\0".to_vec();
    let mut field = |bytes: &[u8]| {
        data.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        data.extend_from_slice(bytes);
    };
    field(program.as_os_str().as_encoded_bytes());
    if let Ok(meta) = std::fs::metadata(program) {
        use std::os::unix::fs::MetadataExt as _;
        field(&meta.size().to_le_bytes());
        field(&meta.mtime().to_le_bytes());
        field(&meta.mtime_nsec().to_le_bytes());
    }
    field(backend.as_bytes());
    for (path, bytes) in files {
        field(path.as_bytes());
        field(bytes);
    }
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            k.starts_with("TF_") && !k.starts_with("TF_VAR_") && !k.starts_with("TF_HTTP_")
        })
        .collect();
    vars.sort();
    for (k, v) in vars {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    key.fingerprint(&data)
}

/// Gives `name` in `dir` (never a link it is) to `owner` (uid, gid), if any.
fn chown(dir: &Dir, name: &std::ffi::OsStr, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchownat(
            dir,
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Copies the tree `from` into `to`, keeping each file's mode; a link is an error.
/// What it makes is owned by `owner` (uid, gid) when given.
fn copy_tree(from: &Dir, to: &Dir, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    for entry in from.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            to.create_dir(&name)?;
            chown(to, &name, owner)?;
            copy_tree(&entry.open_dir()?, &to.open_dir(&name)?, owner)?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            let mut src = open_regular(from, &name)?;
            let mut dst = to.open_with(
                &name,
                OpenOptions::new().write(true).create_new(true).mode(mode),
            )?;
            std::io::copy(&mut src, &mut dst)?;
            dst.flush()?;
            chown(to, &name, owner)?;
            // The mode asked for is cut by the umask: set it as it was.
            dst.set_permissions(cap_std::fs::Permissions::from_mode(mode))?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is not a file or a directory",
                name.to_string_lossy()
            )));
        }
    }
    Ok(())
}

impl InitCache {
    fn open(&self) -> std::io::Result<Dir> {
        std::fs::create_dir_all(&self.dir)?;
        Dir::open_ambient_dir(&self.dir, cap_std::ambient_authority())
    }

    /// Puts the kept copy for `fingerprint` into `module` in place of what `init` would
    /// make. `Ok(false)`: nothing is kept for it.
    pub fn restore(&self, fingerprint: &str, module: &Dir) -> std::io::Result<bool> {
        let cache = self.open()?;
        let Ok(kept) = cache.open_dir(fingerprint) else {
            return Ok(false);
        };
        let owner = {
            use cap_std::fs::MetadataExt as _;
            let meta = module.dir_metadata()?;
            (nix::unistd::geteuid().is_root() && meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
        };
        // What the release brought under these names is replaced, never followed.
        let _ = module.remove_dir_all(TERRAFORM_DIR);
        let _ = module.remove_file(TERRAFORM_DIR);
        module.create_dir(TERRAFORM_DIR)?;
        chown(module, TERRAFORM_DIR.as_ref(), owner)?;
        copy_tree(
            &kept.open_dir(KEPT_DIR)?,
            &module.open_dir(TERRAFORM_DIR)?,
            owner,
        )?;
        if kept.symlink_metadata(KEPT_LOCK).is_ok() {
            let _ = module.remove_file(LOCK_FILE);
            let _ = module.remove_dir_all(LOCK_FILE);
            let bytes = kept.read(KEPT_LOCK)?;
            let mut f = module.open_with(
                LOCK_FILE,
                OpenOptions::new().write(true).create_new(true).mode(0o644),
            )?;
            f.write_all(&bytes)?;
            chown(module, LOCK_FILE.as_ref(), owner)?;
        }
        Ok(true)
    }

    /// Forgets every kept copy (one led to a failed plan).
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Keeps what `init` just made in `module` for `fingerprint`, in place of what was
    /// kept before. Nothing is kept if it holds a link.
    pub fn keep(&self, fingerprint: &str, module: &Dir) -> std::io::Result<()> {
        let cache = self.open()?;
        if cache.symlink_metadata(fingerprint).is_ok() {
            return Ok(());
        }
        let tmp = format!(".new-{}", hex::encode(rand::random::<[u8; 8]>()));
        cache.create_dir(&tmp)?;
        let made = (|| {
            let staging = cache.open_dir(&tmp)?;
            staging.create_dir(KEPT_DIR)?;
            copy_tree(
                &module.open_dir(TERRAFORM_DIR)?,
                &staging.open_dir(KEPT_DIR)?,
                None,
            )?;
            if module
                .symlink_metadata(LOCK_FILE)
                .is_ok_and(|m| m.is_file())
            {
                staging.write(KEPT_LOCK, module.read(LOCK_FILE)?)?;
            }
            cache.rename(&tmp, &cache, fingerprint)
        })();
        if let Err(e) = made {
            let _ = cache.remove_dir_all(&tmp);
            return Err(e);
        }
        // One copy per environment: the newest.
        for entry in cache.entries()?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy() != fingerprint {
                let _ = cache.remove_dir_all(&name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &Path) -> Dir {
        Dir::open_ambient_dir(path, cap_std::ambient_authority()).expect("dir")
    }

    #[test]
    fn the_fingerprint_follows_what_init_reads() {
        let key = SecretKey::from_hex(&"33".repeat(32)).expect("key");
        let tmp = tempfile::tempdir().expect("tmp");
        let m = tmp.path();
        std::fs::write(m.join("main.tf"), "resource \"terraform_data\" \"a\" {}\n").expect("w");
        std::fs::create_dir_all(m.join("modules/net")).expect("mk");
        std::fs::write(m.join("modules/net/main.tf"), "# net\n").expect("w");
        std::fs::create_dir_all(m.join(".terraform")).expect("mk");
        std::fs::write(m.join(".terraform/terraform.tfstate"), "{}").expect("w");
        let program = Path::new("/bin/sh");
        let env = vec![
            ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
            ("TF_VAR_rev".to_string(), "1".to_string()),
            ("TF_HTTP_PASSWORD".to_string(), "p1".to_string()),
            ("FERRY_RELEASE".to_string(), "r1".to_string()),
        ];
        let fp = |env: &[(String, String)]| {
            let files = tree_inputs(&dir(m), "").expect("walk").expect("no link");
            fingerprint(&key, program, "backend", &files, env)
        };
        let first = fp(&env);
        let files = tree_inputs(&dir(m), "").expect("walk").expect("no link");
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["main.tf", "modules/net/main.tf"]);

        // Neither the module's variables, the credential, Ferry's own variables nor
        // `.terraform/` change it.
        let mut other = env.clone();
        other[1].1 = "2".into();
        other[2].1 = "p2".into();
        other[3].1 = "r2".into();
        std::fs::write(m.join(".terraform/terraform.tfstate"), "{ }").expect("w");
        assert_eq!(fp(&other), first);

        // A TF_ setting, a module file, any other file of the module (an implied
        // provider mirror), a new lock file: a new fingerprint each.
        other.push(("TF_CLI_CONFIG_FILE".into(), "/x".into()));
        assert_ne!(fp(&other), first);
        let mut seen = vec![first];
        for (path, text) in [
            ("modules/net/main.tf", "# net 2\n"),
            (
                "terraform.d/plugins/example.com/x/y/1.0.0/linux_amd64/p",
                "bin",
            ),
            (LOCK_FILE, "# lock\n"),
        ] {
            let at = m.join(path);
            std::fs::create_dir_all(at.parent().expect("parent")).expect("mk");
            std::fs::write(at, text).expect("w");
            let now = fp(&env);
            assert!(!seen.contains(&now), "{path}");
            seen.push(now);
        }

        // A link or a FIFO anywhere in the module: never fingerprinted.
        nix::unistd::mkfifo(&m.join("modules/pipe"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        assert!(tree_inputs(&dir(m), "").expect("walk").is_none());
        std::fs::remove_file(m.join("modules/pipe")).expect("rm");
        std::os::unix::fs::symlink("/etc", m.join("modules/etc")).expect("link");
        assert!(tree_inputs(&dir(m), "").expect("walk").is_none());
    }

    #[test]
    fn what_init_reads_in_home() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        assert_eq!(home_inputs(&dir(root)).expect("read"), Some(Vec::new()));
        std::fs::write(root.join(".terraformrc"), "plugin_cache_dir = \"/x\"\n").expect("w");
        std::fs::create_dir_all(root.join(".terraform.d/plugins")).expect("mk");
        std::fs::write(root.join(".terraform.d/plugins/p"), "bin").expect("w");
        std::fs::write(root.join("app.bin"), "not read by init").expect("w");
        let files = home_inputs(&dir(root)).expect("read").expect("no link");
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["~/.terraformrc", "~/.terraform.d/plugins/p"]);
        std::fs::remove_file(root.join(".terraformrc")).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", root.join(".terraformrc")).expect("link");
        assert!(home_inputs(&dir(root)).expect("read").is_none());
        // A host file: a regular file's bytes, nothing of anything else.
        assert!(host_file(Path::new("/dev/zero")).is_empty());
        assert_eq!(host_file(&root.join("app.bin")), b"not read by init");
    }

    #[test]
    fn what_init_made_is_kept_and_put_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tmp");
        let key = SecretKey::from_hex(&"44".repeat(32)).expect("key");
        let cache = InitCache {
            dir: tmp.path().join("env/infra-init"),
            key,
        };
        let first = tmp.path().join("r1");
        let plugin = first.join(".terraform/providers/x/linux_amd64");
        std::fs::create_dir_all(&plugin).expect("mk");
        std::fs::write(plugin.join("terraform-provider-x"), "#!/bin/sh\n").expect("w");
        std::fs::set_permissions(
            plugin.join("terraform-provider-x"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(first.join(".terraform/terraform.tfstate"), "{\"b\":1}").expect("w");
        std::fs::write(first.join(LOCK_FILE), "# lock\n").expect("w");
        cache.keep("fp1", &dir(&first)).expect("kept");

        // The next release's directory gets a copy; what it brought there is replaced.
        let second = tmp.path().join("r2");
        std::fs::create_dir_all(second.join(".terraform")).expect("mk");
        std::fs::write(second.join(".terraform/planted"), "x").expect("w");
        let root = nix::unistd::geteuid().is_root();
        if root {
            // The release's directory belongs to the deployment's step user.
            std::os::unix::fs::chown(&second, Some(54321), Some(54322)).expect("chown");
        }
        assert!(!cache.restore("fp2", &dir(&second)).expect("none"));
        assert!(cache.restore("fp1", &dir(&second)).expect("restored"));
        if root {
            use std::os::unix::fs::MetadataExt as _;
            for p in [
                ".terraform",
                ".terraform/providers/x/linux_amd64",
                ".terraform/providers/x/linux_amd64/terraform-provider-x",
                LOCK_FILE,
            ] {
                let meta = std::fs::metadata(second.join(p)).expect("meta");
                assert_eq!((meta.uid(), meta.gid()), (54321, 54322), "{p}");
            }
        }
        assert!(!second.join(".terraform/planted").exists());
        let copy = second.join(".terraform/providers/x/linux_amd64/terraform-provider-x");
        assert_eq!(std::fs::read_to_string(&copy).expect("r"), "#!/bin/sh\n");
        let mode = std::fs::metadata(&copy).expect("m").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(second.join(LOCK_FILE)).expect("r"),
            "# lock\n"
        );
        // Writing the copy does not touch what is kept.
        std::fs::write(&copy, "changed").expect("w");
        assert!(
            cache
                .restore("fp1", &dir(&tmp.path().join("r1")))
                .expect("again")
        );
        assert_eq!(
            std::fs::read_to_string(
                first.join(".terraform/providers/x/linux_amd64/terraform-provider-x")
            )
            .expect("r"),
            "#!/bin/sh\n"
        );

        // A newer fingerprint replaces the older; a `.terraform/` with a link is not kept.
        cache.keep("fp3", &dir(&second)).expect("kept");
        let kept: Vec<String> = std::fs::read_dir(&cache.dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["fp3"]);
        std::os::unix::fs::symlink("/etc", second.join(".terraform/etc")).expect("link");
        assert!(cache.keep("fp4", &dir(&second)).is_err());
        let kept: Vec<String> = std::fs::read_dir(&cache.dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["fp3"], "no half-made copy is left");
    }
}
