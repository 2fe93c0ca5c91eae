//! `cache:` — directories kept between runs by key, per repository.
//!
//! Layout: `<root>/<repository id>/<sha256(key)>.tar` with a `.json` beside it holding
//! the key, paths, size and times. An entry is written to a temporary file and renamed
//! into place, so a crash never leaves half an entry behind, and two jobs saving the
//! same key at once each write a whole one. The total size is kept under a limit by
//! removing the least recently used entries (restoring an entry counts as a use).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The default size limit of all caches together.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// One stored cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CacheEntry {
    /// The repository it belongs to.
    pub repository_id: String,
    pub key: String,
    pub paths: Vec<String>,
    /// Size of the archive in bytes.
    pub size: u64,
    pub created_ms: i64,
    pub last_used_ms: i64,
}

/// The cache directory and its size limit.
#[derive(Debug, Clone)]
pub struct CacheStore {
    root: PathBuf,
    max_bytes: u64,
}

/// How a save went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Stored: the archive's size, and how many older entries were evicted for it.
    Stored { size: u64, evicted: usize },
    /// Larger than the whole limit: not stored.
    TooLarge { size: u64 },
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn key_file(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How deep a cached tree may nest (a bound on the walk, whatever the job did).
const MAX_DEPTH: usize = 256;

/// `p` as a path inside the workspace: relative, no `..`.
fn inside(p: &str) -> io::Result<PathBuf> {
    use std::path::Component;
    let rel: PathBuf = Path::new(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("cache path `{p}` leads out of the workspace"),
            )),
        })
        .collect::<io::Result<_>>()?;
    Ok(rel)
}

/// Appends `name` of `dir` (a directory handle beneath the workspace) to the archive as
/// `path`: a file, a symbolic link *as a link*, or a directory with its contents. Every
/// open is beneath the workspace (`cap-std`): a link on the way that leads out (`d ->
/// ../../..` with `d/secret.key` cached) is refused; an entry swapped for another
/// between its look and its open (by a process the job left running) is refused too,
/// so nothing is read through a link the job slipped in.
fn append_beneath<W: io::Write>(
    archive: &mut tar::Builder<W>,
    dir: &cap_std::fs::Dir,
    name: &Path,
    path: &Path,
    depth: usize,
) -> io::Result<()> {
    use cap_std::fs::MetadataExt as _;
    let changed = || io::Error::other(format!("`{}` changed while it was saved", path.display()));
    let meta = dir.symlink_metadata(name)?;
    let same = |m: &cap_std::fs::Metadata| (m.dev(), m.ino()) == (meta.dev(), meta.ino());
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(0);
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = dir.read_link_contents(name)?;
        header.set_entry_type(tar::EntryType::Symlink);
        archive.append_link(&mut header, path, target)
    } else if kind.is_dir() {
        if depth > MAX_DEPTH {
            return Err(io::Error::other(format!(
                "`{}` nests more than {MAX_DEPTH} directories deep",
                path.display()
            )));
        }
        let sub = dir.open_dir(name)?;
        if !same(&sub.dir_metadata()?) {
            return Err(changed());
        }
        header.set_entry_type(tar::EntryType::Directory);
        archive.append_data(&mut header, path, io::empty())?;
        let mut names: Vec<_> = sub
            .entries()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for entry in names {
            append_beneath(
                archive,
                &sub,
                Path::new(&entry),
                &path.join(&entry),
                depth + 1,
            )?;
        }
        Ok(())
    } else if kind.is_file() {
        let Some((file, opened)) =
            crate::artifacts::open_seen(dir, name, (meta.dev(), meta.ino()))?
        else {
            return Err(changed());
        };
        let size = opened.len();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        // Exactly `size` bytes, whatever the file does meanwhile: the archive stays whole.
        let data = io::Read::take(
            io::Read::chain(io::Read::take(file, size), io::repeat(0)),
            size,
        );
        archive.append_data(&mut header, path, data)
    } else {
        Err(io::Error::other(format!(
            "`{}` is not a file, a directory or a symbolic link",
            path.display()
        )))
    }
}

/// Writes `data` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("no parent"))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl CacheStore {
    pub fn new(root: PathBuf, max_bytes: u64) -> Self {
        Self { root, max_bytes }
    }

    fn paths(&self, repository_id: &str, key: &str) -> (PathBuf, PathBuf) {
        let base = self.root.join(repository_id).join(key_file(key));
        (base.with_extension("tar"), base.with_extension("json"))
    }

    fn read_meta(path: &Path) -> Option<CacheEntry> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Unpacks the entry for `key` into `workspace`. `Ok(false)` when there is none.
    pub fn restore(&self, repository_id: &str, key: &str, workspace: &Path) -> io::Result<bool> {
        let (tar, meta) = self.paths(repository_id, key);
        let Some(mut entry) = Self::read_meta(&meta) else {
            return Ok(false);
        };
        let file = match std::fs::File::open(&tar) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        // `unpack` refuses entries that would land outside the workspace.
        archive.unpack(workspace)?;
        entry.last_used_ms = now_ms();
        let _ = write_atomic(&meta, &serde_json::to_vec(&entry).unwrap_or_default());
        Ok(true)
    }

    /// Archives `paths` (relative to `workspace`; missing ones are skipped and returned)
    /// as the entry for `key`, then evicts old entries down to the limit.
    pub fn save(
        &self,
        repository_id: &str,
        key: &str,
        paths: &[String],
        workspace: &Path,
    ) -> io::Result<(Saved, Vec<String>)> {
        let (tar_path, meta_path) = self.paths(repository_id, key);
        let dir = tar_path
            .parent()
            .ok_or_else(|| io::Error::other("no parent"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let mut missing = Vec::new();
        {
            let ws = cap_std::fs::Dir::open_ambient_dir(workspace, cap_std::ambient_authority())?;
            let mut builder = tar::Builder::new(io::BufWriter::new(tmp.as_file()));
            for p in paths {
                let rel = inside(p)?;
                if rel.as_os_str().is_empty() {
                    // The workspace itself: its entries.
                    for entry in ws.entries()? {
                        let name = PathBuf::from(entry?.file_name());
                        append_beneath(&mut builder, &ws, &name, &name, 1)?;
                    }
                    continue;
                }
                match append_beneath(&mut builder, &ws, &rel, &rel, 1) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.clone()),
                    // cap-std's refusal of a path that escapes.
                    Err(e)
                        if e.kind() == io::ErrorKind::PermissionDenied
                            && e.to_string().contains("outside") =>
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("cache path `{p}` leads out of the workspace"),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            builder.into_inner()?;
        }
        let size = tmp.as_file().metadata()?.len();
        if size > self.max_bytes {
            return Ok((Saved::TooLarge { size }, missing));
        }
        tmp.persist(&tar_path).map_err(|e| e.error)?;
        let now = now_ms();
        let entry = CacheEntry {
            repository_id: repository_id.to_string(),
            key: key.to_string(),
            paths: paths.to_vec(),
            size,
            created_ms: now,
            last_used_ms: now,
        };
        write_atomic(
            &meta_path,
            &serde_json::to_vec(&entry).map_err(io::Error::other)?,
        )?;
        let evicted = self.evict(&tar_path);
        Ok((Saved::Stored { size, evicted }, missing))
    }

    /// Whether an entry for `key` exists.
    pub fn contains(&self, repository_id: &str, key: &str) -> bool {
        let (tar, meta) = self.paths(repository_id, key);
        tar.is_file() && meta.is_file()
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Vec<CacheEntry> {
        let mut out: Vec<CacheEntry> = self.files().into_iter().map(|(_, e)| e).collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.last_used_ms));
        out
    }

    fn files(&self) -> Vec<(PathBuf, CacheEntry)> {
        let mut out = Vec::new();
        let Ok(repos) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for repo in repos.flatten() {
            let Ok(files) = std::fs::read_dir(repo.path()) else {
                continue;
            };
            for f in files.flatten() {
                let path = f.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Some(entry) = Self::read_meta(&path)
                {
                    out.push((path, entry));
                }
            }
        }
        out
    }

    /// Removes the entries of `repository_id` (all repositories when `None`) whose key
    /// is `key` (all keys when `None`). Returns how many.
    pub fn clear(&self, repository_id: Option<&str>, key: Option<&str>) -> usize {
        let mut removed = 0;
        for (meta, entry) in self.files() {
            if repository_id.is_some_and(|r| r != entry.repository_id)
                || key.is_some_and(|k| k != entry.key)
            {
                continue;
            }
            let _ = std::fs::remove_file(meta.with_extension("tar"));
            if std::fs::remove_file(&meta).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Removes least recently used entries until the total fits; never `keep`.
    fn evict(&self, keep: &Path) -> usize {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|(_, e)| e.size).sum();
        files.sort_by_key(|(_, e)| e.last_used_ms);
        let mut evicted = 0;
        for (meta, entry) in files {
            if total <= self.max_bytes {
                break;
            }
            let tar = meta.with_extension("tar");
            if tar == keep {
                continue;
            }
            let _ = std::fs::remove_file(&tar);
            let _ = std::fs::remove_file(&meta);
            total = total.saturating_sub(entry.size);
            evicted += 1;
        }
        evicted
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `hash_files(patterns...)`: the sha256 of the files under `dir` that match any of
/// the glob patterns (paths and contents, in path order); empty when none match.
pub fn hash_files(dir: &Path, patterns: &[String]) -> Result<String, String> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        set.add(globset::Glob::new(p).map_err(|e| format!("invalid pattern `{p}`: {e}"))?);
    }
    let set = set.build().map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(dir).ok().map(Path::to_path_buf))
        .filter(|rel| set.is_match(rel))
        .collect();
    if files.is_empty() {
        return Ok(String::new());
    }
    files.sort();
    let mut hasher = Sha256::new();
    for rel in files {
        let data = std::fs::read(dir.join(&rel))
            .map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&data));
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {

    /// A cache path through a link out of the workspace is refused, not followed.
    #[test]
    fn a_cache_path_through_a_link_out_of_the_workspace_is_refused() {
        let root = tempfile::tempdir().expect("tmp");
        let store = CacheStore::new(root.path().join("caches"), DEFAULT_MAX_BYTES);
        let ws = root.path().join("ws");
        std::fs::create_dir_all(&ws).expect("ws");
        std::fs::write(root.path().join("secret.key"), "hush").expect("secret");
        std::os::unix::fs::symlink("..", ws.join("d")).expect("link");
        for p in ["d/secret.key", "../secret.key", "/etc/passwd"] {
            let err = store.save("repo", "k", &[p.to_string()], &ws).expect_err(p);
            assert!(
                err.to_string().contains("leads out of the workspace"),
                "{p}: {err}"
            );
        }
        // The link itself is kept as a link.
        let (saved, _) = store
            .save("repo", "k", &["d".to_string()], &ws)
            .expect("link");
        assert!(matches!(saved, Saved::Stored { .. }));
        let other = root.path().join("other");
        std::fs::create_dir_all(&other).expect("other");
        assert!(store.restore("repo", "k", &other).expect("restore"));
        assert!(
            std::fs::symlink_metadata(other.join("d"))
                .expect("d")
                .file_type()
                .is_symlink()
        );
    }
    use super::*;

    /// What a job leaves in a cached directory cannot make the save hang or loop: a FIFO
    /// is refused, a link to the directory itself is kept as a link.
    #[test]
    fn a_fifo_or_a_looping_link_in_a_cache_neither_hangs_nor_loops() {
        let root = tempfile::tempdir().expect("tmp");
        let store = CacheStore::new(root.path().join("caches"), DEFAULT_MAX_BYTES);
        let ws = workspace(&[("d/a", "a")]);
        std::os::unix::fs::symlink(".", ws.path().join("d/again")).expect("link");
        let (saved, _) = store
            .save("repo", "k", &["d".to_string()], ws.path())
            .expect("a looping link is a link");
        assert!(matches!(saved, Saved::Stored { .. }));
        nix::unistd::mkfifo(
            &ws.path().join("d/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("fifo");
        let err = store
            .save("repo", "k2", &["d".to_string()], ws.path())
            .expect_err("a fifo");
        assert!(err.to_string().contains("is not a file"), "{err}");
    }

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    #[test]
    fn save_restore_and_missing_paths() {
        let root = tempfile::tempdir().expect("tmp");
        let store = CacheStore::new(root.path().to_path_buf(), DEFAULT_MAX_BYTES);
        let ws = workspace(&[("target/a/b.txt", "built"), ("deps.lock", "1")]);
        let (saved, missing) = store
            .save("repo", "k1", &["target".into(), "nope".into()], ws.path())
            .expect("save");
        assert!(matches!(saved, Saved::Stored { evicted: 0, .. }));
        assert_eq!(missing, vec!["nope".to_string()]);
        assert!(store.contains("repo", "k1"));
        assert!(!store.contains("other", "k1"), "caches are per repository");
        let fresh = tempfile::tempdir().expect("tmp");
        assert!(store.restore("repo", "k1", fresh.path()).expect("restore"));
        assert_eq!(
            std::fs::read_to_string(fresh.path().join("target/a/b.txt")).expect("read"),
            "built"
        );
        assert!(!store.restore("repo", "k2", fresh.path()).expect("miss"));
        let list = store.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].key, "k1");
        assert_eq!(store.clear(Some("repo"), None), 1);
        assert!(store.list().is_empty());
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let root = tempfile::tempdir().expect("tmp");
        let big = "x".repeat(40_000);
        let ws = workspace(&[("d/f", &big)]);
        // Room for two entries of ~40 KB, not three.
        let store = CacheStore::new(root.path().to_path_buf(), 100_000);
        store.save("r", "a", &["d".into()], ws.path()).expect("a");
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.save("r", "b", &["d".into()], ws.path()).expect("b");
        std::thread::sleep(std::time::Duration::from_millis(5));
        // Using `a` makes `b` the least recently used.
        let out = tempfile::tempdir().expect("tmp");
        assert!(store.restore("r", "a", out.path()).expect("restore"));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (saved, _) = store.save("r", "c", &["d".into()], ws.path()).expect("c");
        assert!(
            matches!(saved, Saved::Stored { evicted: 1, .. }),
            "{saved:?}"
        );
        let keys: Vec<String> = store.list().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["c".to_string(), "a".to_string()]);
        let tiny = CacheStore::new(root.path().to_path_buf(), 1000);
        let (saved, _) = tiny.save("r", "d", &["d".into()], ws.path()).expect("d");
        assert!(matches!(saved, Saved::TooLarge { .. }));
        assert!(!tiny.contains("r", "d"));
    }

    #[test]
    fn hashes_files_by_pattern() {
        let ws = workspace(&[("Cargo.lock", "v1"), ("a/Cargo.lock", "v2"), ("x", "y")]);
        let h1 = hash_files(ws.path(), &["**/Cargo.lock".into()]).expect("hash");
        assert_eq!(h1.len(), 64);
        let only_root = hash_files(ws.path(), &["Cargo.lock".into()]).expect("hash");
        assert_ne!(h1, only_root);
        std::fs::write(ws.path().join("a/Cargo.lock"), "v3").expect("w");
        assert_ne!(
            hash_files(ws.path(), &["**/Cargo.lock".into()]).expect("h"),
            h1
        );
        assert_eq!(hash_files(ws.path(), &["*.none".into()]).expect("h"), "");
    }
}
