//! Secrets at rest: values are sealed with XChaCha20-Poly1305 (an AEAD cipher) under a
//! 256-bit key that Ferry generates on first start (`<data dir>/secret.key`, mode 0600)
//! or that is given in `FERRY_SECRET_KEY` (64 hex digits). Each sealed value is bound to
//! where it belongs (the associated data), so a value copied into another row does not
//! open. The store only ever holds sealed values; the API and logs never see them.

use std::io::Write as _;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{Error, Result};

/// The key that seals and opens secrets.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    /// Keys [`fingerprint`](SecretKey::fingerprint), derived from the key.
    mac: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

fn invalid(message: String) -> Error {
    Error::Invalid(message)
}

impl SecretKey {
    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| invalid(format!("the secret key is not hex: {e}")))?;
        if bytes.len() != 32 {
            return Err(invalid(format!(
                "the secret key has {} bytes; it needs 32 (64 hex digits)",
                bytes.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|e| invalid(format!("bad secret key: {e}")))?;
        let mac = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(b"ferry fingerprint key\0");
            h.update(&bytes);
            h.finalize().into()
        };
        Ok(Self { cipher, mac })
    }

    /// `FERRY_SECRET_KEY` when set; else `<data_dir>/secret.key`, made on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        if let Ok(text) = std::env::var("FERRY_SECRET_KEY") {
            return Self::from_hex(&text);
        }
        let path = data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(invalid(format!("cannot read {}: {e}", path.display()))),
        }
        std::fs::create_dir_all(data_dir)?;
        let key: [u8; 32] = rand::random();
        let text = hex::encode(key);
        // Created with 0600 and only if absent: two processes starting at once agree.
        let created = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        };
        match created {
            Ok(mut f) => {
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                Self::from_hex(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_hex(&std::fs::read_to_string(&path)?)
            }
            Err(e) => Err(invalid(format!("cannot create {}: {e}", path.display()))),
        }
    }

    /// A keyed digest of `data` (HMAC-SHA-256 under a key derived from this one), as 64
    /// hex digits: tells whether secret values changed without telling anything about
    /// them to whoever sees the digest and not the key.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.mac)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seals `plain` for the place `context` (e.g. `registry:<repo id>:<host>`): hex of
    /// a random 24-byte nonce followed by the ciphertext and tag.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<String> {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| invalid("cannot seal the secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(hex::encode(out))
    }

    /// Opens what [`seal`](Self::seal) made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>> {
        let bytes =
            hex::decode(sealed).map_err(|_| invalid("a sealed secret is damaged".into()))?;
        if bytes.len() < 24 + 16 {
            return Err(invalid("a sealed secret is damaged".into()));
        }
        let (nonce, data) = bytes.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: data,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                invalid(
                    "a secret cannot be opened: wrong key (FERRY_SECRET_KEY or secret.key) or damaged data"
                        .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let a = SecretKey::from_hex(&"11".repeat(32)).expect("key");
        let b = SecretKey::from_hex(&"22".repeat(32)).expect("key");
        let f = a.fingerprint(b"hunter2");
        assert_eq!(f.len(), 64);
        assert_eq!(f, a.fingerprint(b"hunter2"), "stable under one key");
        assert_ne!(f, a.fingerprint(b"hunter3"));
        assert_ne!(f, b.fingerprint(b"hunter2"), "another key, another digest");
        use sha2::Digest as _;
        assert_ne!(
            f,
            hex::encode(sha2::Sha256::digest(b"hunter2")),
            "not a bare hash"
        );
    }

    #[test]
    fn seal_open_and_bindings() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = SecretKey::load_or_create(dir.path()).expect("key");
        let again = SecretKey::load_or_create(dir.path()).expect("same key");
        let sealed = key.seal(b"hunter2", "registry:r:h").expect("seal");
        assert!(!sealed.contains(&hex::encode("hunter2")));
        assert_ne!(
            sealed,
            key.seal(b"hunter2", "registry:r:h").expect("seal"),
            "random nonces"
        );
        assert_eq!(
            again.open(&sealed, "registry:r:h").expect("open"),
            b"hunter2"
        );
        assert!(
            key.open(&sealed, "registry:r:other").is_err(),
            "bound to its place"
        );
        let other = SecretKey::from_hex(&"11".repeat(32)).expect("key");
        assert!(
            other.open(&sealed, "registry:r:h").is_err(),
            "another key cannot open it"
        );
        assert!(SecretKey::from_hex("abcd").is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
