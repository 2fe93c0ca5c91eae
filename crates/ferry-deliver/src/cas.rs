//! The content-addressed store of release files: `<root>/sha256/<2 hex>/<62 hex>`.
//! A file is written once (to a temporary file, then renamed), shared by every release
//! that holds the same bytes, and checked against its digest whenever it is read.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The store's directory.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Cas {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, digest: &str) -> io::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| io::Error::other(format!("`{digest}` is not a sha256 digest")))?;
        Ok(self.root.join("sha256").join(&hex[..2]).join(&hex[2..]))
    }

    /// Stores the file at `from`; returns its digest and size.
    pub fn put_file(&self, from: &Path) -> io::Result<(String, u64)> {
        let mut file = std::fs::File::open(from)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        // Hash first: a file already stored is not copied again.
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let dest = self.path(&digest)?;
        if !dest.exists() {
            let dir = dest.parent().ok_or_else(|| io::Error::other("no parent"))?;
            std::fs::create_dir_all(dir)?;
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::fs::copy(from, tmp.path())?;
            // The copy is read back and checked: what is stored is what was hashed.
            if self.digest_file(tmp.path())? != digest {
                return Err(io::Error::other(format!(
                    "{} changed while it was stored",
                    from.display()
                )));
            }
            tmp.persist(&dest).map_err(|e| e.error)?;
        }
        Ok((digest, size))
    }

    /// Stores `bytes`; returns their digest and size.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<(String, u64)> {
        use std::io::Write as _;
        let digest = digest_of(bytes);
        let dest = self.path(&digest)?;
        if !dest.exists() {
            let dir = dest.parent().ok_or_else(|| io::Error::other("no parent"))?;
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&dest).map_err(|e| e.error)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    fn digest_file(&self, path: &Path) -> io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher)?;
        Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// Copies the content with `digest` to `to`, verifying it on the way: a damaged
    /// file is an error, never a deployment of the wrong bytes.
    pub fn read_to(&self, digest: &str, to: &Path) -> io::Result<()> {
        let from = self.path(digest)?;
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&from, to)?;
        let found = self.digest_file(to)?;
        if found != digest {
            let _ = std::fs::remove_file(to);
            return Err(io::Error::other(format!(
                "the stored content of {digest} is damaged (it hashes to {found})"
            )));
        }
        Ok(())
    }

    /// Removes stored files whose digest is not in `keep` and that are older than
    /// `min_age` (a file just stored may belong to a release being sealed). Returns how
    /// many were removed.
    pub fn remove_unreferenced(
        &self,
        keep: &std::collections::HashSet<String>,
        min_age: std::time::Duration,
    ) -> usize {
        let mut removed = 0;
        let root = self.root.join("sha256");
        for entry in walkdir::WalkDir::new(&root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
        {
            if !entry.file_type().is_file() {
                continue;
            }
            let (Some(dir), Some(rest)) = (
                entry.path().parent().and_then(|p| p.file_name()),
                entry.file_name().to_str(),
            ) else {
                continue;
            };
            let digest = format!("sha256:{}{rest}", dir.to_string_lossy());
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if old && !keep.contains(&digest) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_once_and_verifies_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let cas = Cas::new(dir.path().join("cas"));
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"same bytes").expect("w");
        std::fs::write(&b, b"same bytes").expect("w");
        let (da, size) = cas.put_file(&a).expect("put");
        let (db, _) = cas.put_file(&b).expect("put");
        assert_eq!((da.as_str(), size), (digest_of(b"same bytes").as_str(), 10));
        assert_eq!(da, db, "deduplicated");
        let files = walkdir::WalkDir::new(dir.path().join("cas"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(files, 1);
        let out = dir.path().join("out/x");
        cas.read_to(&da, &out).expect("read");
        assert_eq!(std::fs::read(&out).expect("r"), b"same bytes");
        // Damage the stored file: reading it is refused.
        let stored = cas.path(&da).expect("path");
        std::fs::write(&stored, b"other bytes").expect("w");
        let err = cas.read_to(&da, &out).expect_err("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(!out.exists());
        assert!(cas.read_to("sha256:zz", &out).is_err());
        // Garbage: unreferenced files go, referenced and young ones stay.
        std::fs::write(&a, b"other").expect("w");
        let (other, _) = cas.put_file(&a).expect("put");
        let keep: std::collections::HashSet<String> = [other.clone()].into();
        assert_eq!(
            cas.remove_unreferenced(&keep, std::time::Duration::from_secs(3600)),
            0,
            "too young"
        );
        assert_eq!(cas.remove_unreferenced(&keep, std::time::Duration::ZERO), 1);
        assert!(cas.contains(&other) && !cas.contains(&da));
    }
}
