//! `deploy.config`: what is written for each environment when a release is deployed
//! there (see [`ferry_config::delivery::ConfigSpec`]), so that one image or one set of
//! release files runs in every environment with that environment's settings. The
//! rendering is pure ([`render`], [`dotenv`]); the process and docker targets put the
//! result where their workload reads it.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_config::delivery::{ConfigSource, ConfigSpec};

use super::DeployContext;

/// The directory of a process's config files under its release's directory (the
/// process reads it: `$FERRY_CONFIG_DIR`).
pub const PROCESS_DIR: &str = ".ferry-config";

/// The default directory of a container's secret files.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The variables as a dotenv file: one `NAME=value` line each, in name order; a value
/// other than plain words is double-quoted, with `\`, `"`, `$` and new lines escaped
/// (as Compose, python-dotenv and Node's dotenv read it).
pub fn dotenv(vars: &BTreeMap<String, String>) -> String {
    let plain = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/@+,%".contains(c))
    };
    let mut out = String::new();
    for (name, value) in vars {
        if plain(value) {
            out.push_str(&format!("{name}={value}\n"));
        } else {
            let mut quoted = String::with_capacity(value.len() + 2);
            for c in value.chars() {
                match c {
                    '\\' => quoted.push_str("\\\\"),
                    '"' => quoted.push_str("\\\""),
                    '$' => quoted.push_str("\\$"),
                    '\n' => quoted.push_str("\\n"),
                    '\r' => quoted.push_str("\\r"),
                    c => quoted.push(c),
                }
            }
            out.push_str(&format!("{name}=\"{quoted}\"\n"));
        }
    }
    out
}

/// Each file of `spec` for the deployment: (path as `spec` gives it, content), the
/// env file first. A template is a file of the release; both kinds have their
/// `${{ }}` replaced.
pub fn render(
    spec: &ConfigSpec,
    ctx: &DeployContext<'_>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    if let Some(path) = &spec.env_file {
        out.push((path.clone(), dotenv(&ctx.vars).into_bytes()));
    }
    for f in &spec.files {
        let text = match &f.source {
            ConfigSource::Content(t) => t.clone(),
            ConfigSource::Template(rel) => read_template(&ctx.release_dir, rel)?,
        };
        let rendered = ctx
            .eval(&text)
            .map_err(|e| format!("`config.files` {}: {e}", f.path))?;
        out.push((f.path.clone(), rendered.into_bytes()));
    }
    Ok(out)
}

/// A template of the release, read without following a link out of its files.
fn read_template(release_dir: &Path, rel: &str) -> Result<String, String> {
    let path = release_dir.join(rel);
    let real = std::fs::canonicalize(&path)
        .map_err(|e| format!("`config.files`: template {rel} is not a file of the release: {e}"))?;
    let root = std::fs::canonicalize(release_dir).map_err(|e| e.to_string())?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(format!(
            "`config.files`: template {rel} is not a file of the release"
        ));
    }
    std::fs::read_to_string(&real)
        .map_err(|e| format!("`config.files`: template {rel} cannot be read as text: {e}"))
}

/// Writes `files` (paths relative, checked by the loader) under `root`/`sub`,
/// replacing what an earlier deployment wrote there. `root` is the release's directory,
/// which the release's code may change: nothing is followed out of it.
pub fn write_under(root: &Path, sub: &str, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    use std::io::Write as _;
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
    let _ = dir.remove_dir_all(sub);
    let _ = dir.remove_file(sub);
    dir.create_dir_all(sub)
        .map_err(|e| format!("cannot create {sub}: {e}"))?;
    let sub = dir
        .open_dir(sub)
        .map_err(|e| format!("cannot open {sub}: {e}"))?;
    for (path, content) in files {
        if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(format!(
                "`{path}` is not a place under the config directory"
            ));
        }
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            sub.create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let _ = sub.remove_file(path);
        let mut f = sub
            .open_with(
                path,
                cap_std::fs::OpenOptions::new().write(true).create_new(true),
            )
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        f.write_all(content)
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_a_dotenv_file_that_reads_back() {
        let vars = BTreeMap::from([
            ("PLAIN".to_string(), "eu-west-1".to_string()),
            ("URL".to_string(), "http://127.0.0.1:8080/x".to_string()),
            ("SPACED".to_string(), "two words".to_string()),
            ("TRICKY".to_string(), "a\"b\\c$HOME\nnext".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]);
        assert_eq!(
            dotenv(&vars),
            "EMPTY=\nPLAIN=eu-west-1\nSPACED=\"two words\"\nTRICKY=\"a\\\"b\\\\c\\$HOME\\nnext\"\nURL=http://127.0.0.1:8080/x\n"
        );
    }

    #[test]
    fn files_go_under_their_directory_only() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("cfg");
        write_under(
            tmp.path(),
            "cfg",
            &[
                ("app.env".into(), b"A=1\n".to_vec()),
                ("conf/app.yml".into(), b"x: 1\n".to_vec()),
            ],
        )
        .expect("written");
        assert_eq!(
            std::fs::read_to_string(dir.join("conf/app.yml")).expect("read"),
            "x: 1\n"
        );
        assert!(write_under(tmp.path(), "cfg", &[("../out".into(), Vec::new())]).is_err());
        assert!(!dir.join("app.env").exists(), "replaced, not added to");
        // A link the release's code left where the directory goes is not followed.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        let _ = std::fs::remove_dir_all(&dir);
        std::os::unix::fs::symlink(&elsewhere, &dir).expect("link");
        write_under(tmp.path(), "cfg", &[("a".into(), b"x".to_vec())]).expect("written");
        assert!(
            !elsewhere.join("a").exists(),
            "nothing written through the link"
        );
        assert!(dir.is_dir() && dir.join("a").is_file());
        let release = tmp.path().join("release");
        std::fs::create_dir_all(&release).expect("mkdir");
        std::fs::write(tmp.path().join("outside.txt"), "secret").expect("write");
        std::os::unix::fs::symlink(tmp.path().join("outside.txt"), release.join("link"))
            .expect("link");
        assert!(
            read_template(&release, "link").is_err(),
            "a link out of the release"
        );
        assert!(read_template(&release, "missing").is_err());
    }
}
