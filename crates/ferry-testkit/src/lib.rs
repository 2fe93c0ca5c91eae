//! Helpers shared by Ferry's integration tests (a dev-dependency only).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Runs `git -C dir args…` with a fixed author and committer; panics with git's
/// stderr when it fails. Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `<dir>/<name>.git` with one commit ("first") on `main` holding
/// `pipeline` as `.ferry.yml` (or, without one, only a README), made from the working
/// copy `<dir>/<name>-work`. Returns the bare repository's path.
pub fn bare_repository(dir: &Path, name: &str, pipeline: Option<&str>) -> PathBuf {
    let bare = dir.join(format!("{name}.git"));
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).expect("mkdir");
    let bare_path = bare.display().to_string();
    git(dir, &["init", "-q", "--bare", "-b", "main", &bare_path]);
    git(&work, &["init", "-q", "-b", "main"]);
    match pipeline {
        Some(p) => std::fs::write(work.join(".ferry.yml"), p).expect("write"),
        None => std::fs::write(work.join("README"), "no pipeline\n").expect("write"),
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", &bare_path, "main"]);
    bare
}

/// Asserts that a finished process exited with `code`, showing what it printed when it
/// did not; returns its standard output.
#[track_caller]
pub fn expect_exit(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether `pid` is alive. Zombies count as gone: they are dead, only not yet
/// reaped by their parent.
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Whether `pid` is dead, allowing the kernel a moment (at most 5 s) to finish a SIGKILL.
pub fn gone(pid: i32) -> bool {
    for _ in 0..250 {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The process ids a test step wrote to `file`, whitespace-separated.
pub fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(feature = "server")]
pub mod server;

/// A new, empty database on the PostgreSQL server of `admin_url` (which names its
/// `postgres` database), made with `psql`; its URL. Tests that store in PostgreSQL use
/// one of their own, so no earlier run's schema is in their way.
pub fn fresh_postgres_database(admin_url: &str, prefix: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let name = format!("{prefix}_{}_{stamp}", std::process::id());
    let sql = format!("CREATE DATABASE {name}");
    let psql = Command::new("psql")
        .args([admin_url, "-q", "-c", &sql])
        .status();
    assert!(psql.is_ok_and(|s| s.success()), "psql cannot create {name}");
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// The files below `dir` that hold `needle` (in plain text) anywhere.
pub fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// A CA and a certificate for 127.0.0.1 it signs, written to `dir` (created if needed)
/// as `ca.pem`, `cert.pem` and `key.pem`: for servers and receivers that speak TLS to
/// a client given the CA (`--ca-file`).
pub fn pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Ferry test CA");
    let ca = ca.self_signed(&ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
}
