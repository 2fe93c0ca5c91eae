//! The `gitops` target: the release's manifests (Kubernetes or compose files), rendered
//! for the environment and pinned to the release's digests, committed to an environment
//! repository under `path` and pushed; a GitOps controller (Argo CD, Flux) applies them.
//!
//! A deployment clones (once) and fetches the repository into the environment's
//! directory, replaces everything under `path` with the rendered files, commits with a
//! message naming the release, its run and commit, the deployment and its approvals
//! (and a `Ferry-Deployment:` trailer), and pushes; the commit is recorded on the
//! deployment (`target_ref`). A push refused because the branch moved is tried again on
//! top of it (three times). A rollback is a new commit restoring the previous release's
//! rendering. The health watch fetches the branch and reports commits to `path` made
//! outside Ferry since its last one (drift). The pure parts ([`render`], [`message`],
//! [`drift`]) are unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_store::{Approval, Deployment, Release, Store};

use super::{DeployContext, Target};

/// Where a deployment fetches the branch to, and where the drift check does (never
/// `FETCH_HEAD`, which both would write).
const HEAD_REF: &str = "refs/ferry/head";
const WATCH_REF: &str = "refs/ferry/watch";

/// One deployment or drift check at a time in a clone.
fn clone_lock(dir: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// Refuses a `repo` that is not an environment repository: an option, a remote helper
/// (`ext::`), a relative path, a path on the server outside the directories its
/// administrator allowed (`ferry serve --gitops-local`), or one inside Ferry's data
/// directory (its mirrors) even there.
pub fn check_repo(repo: &str, data: &Path, allowed: &[PathBuf]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`repo` {repo}: {why}"));
    if repo.starts_with('-') || repo.trim() != repo || repo.is_empty() {
        return bad("not a repository URL");
    }
    if repo.contains("::") {
        return bad("a remote helper (`transport::address`) is not allowed");
    }
    let ssh_to_this_host = "ssh to this very host reaches the server's own disk: name a \
        directory under `ferry serve --gitops-local` instead";
    let local = if let Some(p) = repo.strip_prefix("file://") {
        // git decodes `%XX` and drops a host: neither is judged here.
        if p.contains('%') {
            return bad("a `file://` URL with `%` escapes is not allowed");
        }
        if !p.starts_with('/') {
            return bad("write `file:///path` (no host)");
        }
        Some(PathBuf::from(p))
    } else if let Some((scheme, rest)) = repo.split_once("://") {
        if scheme.contains("ssh") && loopback(url_host(rest)) {
            return bad(ssh_to_this_host);
        }
        None
    } else if repo.starts_with('/') {
        Some(PathBuf::from(repo))
    } else if let Some(host) = repo
        .split('/')
        .next()
        .and_then(|first| first.rsplit_once(':'))
        .map(|(host, _)| host)
    {
        // `user@host:path`, git's ssh shorthand.
        if loopback(host.rsplit('@').next().unwrap_or(host)) {
            return bad(ssh_to_this_host);
        }
        None
    } else {
        return bad("use an absolute path, or a URL (https://, ssh://, user@host:path)");
    };
    if let Some(path) = local {
        let real = match path.canonicalize() {
            Ok(real) => real,
            // Not there (git will say so): judged as written, without climbing.
            Err(_)
                if path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir) =>
            {
                return bad("a path with `..` is not allowed");
            }
            Err(_) => path,
        };
        let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
        if real.starts_with(&data) {
            return bad("a repository in Ferry's data directory is not an environment repository");
        }
        let inside = allowed.iter().any(|dir| {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            real.starts_with(dir)
        });
        if !inside {
            return bad(
                "a repository on the server must lie in a directory its administrator allowed \
                 (`ferry serve --gitops-local DIR`); or use a URL (https://, ssh://, user@host:path)",
            );
        }
    }
    Ok(())
}

/// The host of a URL's rest (`user@host:port/path` → `host`; `[::1]:22/x` → `::1`).
fn url_host(rest: &str) -> &str {
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    }
}

/// This very host, by name or address.
fn loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.is_empty()
        || host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Refuses a `path` that passes through a link or a file in the clone (a repository can
/// hold `x -> /`: writing `x/etc/...` would write the host's files).
fn no_links(clone: &Path, path: &str) -> Result<(), String> {
    let mut at = clone.to_path_buf();
    for part in path.split('/') {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "`path` {path} passes through a link in the environment repository ({part}): refused"
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "`path` {path}: {part} is a file in the environment repository"
                ));
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // Made by Ferry from here on.
        }
    }
    Ok(())
}

/// Where the clone keeps the path its last deployment wrote (for the drift check).
const PATH_FILE: &str = "FERRY_PATH";

/// The trailer naming the deployment a commit comes from.
pub const TRAILER: &str = "Ferry-Deployment";

#[derive(educe::Educe)]
#[educe(Debug)]
pub struct GitopsTarget {
    pub repo: String,
    pub branch: Option<String>,
    pub path: Option<String>,
    pub manifests: Vec<String>,
    /// The secret holding a token for an https repository.
    pub token: Option<String>,
    /// `<data>/deploy`: where the environment repository's clone is kept.
    pub root: PathBuf,
    /// Directories on the server an environment repository may lie in
    /// (`ferry serve --gitops-local`).
    pub local: Arc<Vec<PathBuf>>,
    #[educe(Debug(ignore))]
    pub store: Store,
    /// Opens the token for the drift check, which runs outside any deployment.
    #[educe(Debug(ignore))]
    pub key: ferry_store::SecretKey,
}

/// The rendered files: path under `path` → content. Each manifest file keeps its path
/// relative to the `manifests` entry that found it (a file entry: its name).
pub fn render(
    release_dir: &Path,
    manifests: &[String],
    release: &Release,
    eval: &dyn Fn(&str) -> Result<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in manifests {
        let base = release_dir.join(entry);
        for file in super::kubernetes::manifest_files(release_dir, std::slice::from_ref(entry))? {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let name = if base.is_dir() {
                file.strip_prefix(&base).unwrap_or(&file).to_path_buf()
            } else {
                PathBuf::from(file.file_name().unwrap_or_default())
            };
            let rendered = eval(&super::kubernetes::render_manifest(&text, &release.images))
                .map_err(|e| format!("{}: {e}", name.display()))?;
            out.insert(name.to_string_lossy().into_owned(), rendered);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no manifest (.yaml, .yml) in {} of release {}",
            manifests.join(", "),
            release.name
        ));
    }
    Ok(out)
}

/// The commit message of a deployment.
pub fn message(
    dep: &Deployment,
    release: &Release,
    approvals: &[Approval],
    rollback: bool,
) -> String {
    let label = format!("{}#{}", dep.environment, dep.number);
    let mut m = if rollback {
        format!(
            "Roll {} back to release {}\n\n",
            dep.environment, release.name
        )
    } else {
        format!("Deploy release {} to {}\n\n", release.name, dep.environment)
    };
    m.push_str(&format!(
        "Release: {} (commit {}, run #{})\nDeployment: {label}\n",
        release.name, release.commit_sha, release.run_number
    ));
    if let Some(by) = &dep.requested_by {
        m.push_str(&format!("Requested by: {by}\n"));
    }
    let approved: Vec<&str> = approvals
        .iter()
        .filter(|a| a.decision == "approve")
        .map(|a| a.user_name.as_str())
        .collect();
    if !approved.is_empty() {
        m.push_str(&format!("Approved by: {}\n", approved.join(", ")));
    }
    m.push_str(&format!("\n{TRAILER}: {}\n", dep.id));
    m
}

/// One commit as `git log --format=%H%x1f%an%x1f%s%x1f%b%x1e` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub subject: String,
    pub body: String,
}

/// Parses `git log --format=%H%x1f%an%x1f%s%x1f%b%x1e`.
pub fn parse_log(text: &str) -> Vec<Commit> {
    text.split('\x1e')
        .filter_map(|c| {
            let mut f = c.trim_start_matches('\n').split('\x1f');
            let sha = f.next()?.trim().to_string();
            if sha.is_empty() {
                return None;
            }
            Some(Commit {
                sha,
                author: f.next().unwrap_or_default().to_string(),
                subject: f.next().unwrap_or_default().to_string(),
                body: f.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The deployment a commit's `Ferry-Deployment:` trailer names.
pub fn trailer(body: &str) -> Option<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(TRAILER)?.strip_prefix(": "))
        .map(str::trim)
        .next_back()
}

/// What drifted: the commits to `path` other than Ferry's own (`ours`: their SHAs, whose
/// trailers were checked against the store), said in one line.
pub fn drift(commits: &[Commit], path: &str, ours: &[String]) -> Option<String> {
    let outside: Vec<&Commit> = commits.iter().filter(|c| !ours.contains(&c.sha)).collect();
    let first = outside.first()?;
    let more = match outside.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    Some(format!(
        "drift: commit {} by {} (\"{}\"){more} changed {path} outside Ferry",
        &first.sha[..first.sha.len().min(12)],
        first.author,
        first.subject
    ))
}

impl GitopsTarget {
    fn branch(&self) -> &str {
        self.branch.as_deref().unwrap_or("main")
    }

    fn clone_dir(&self, dep: &Deployment) -> PathBuf {
        crate::layout::environment_dir(&self.root, &dep.repository_id, &dep.environment)
            .join("gitops")
    }

    /// Runs git in `dir` with the token (if any) as an HTTP header given through the
    /// environment (never on a command line), no prompt, and a time limit.
    async fn git(&self, dir: &Path, args: &[&str], token: Option<&str>) -> Result<String, String> {
        use base64::Engine as _;
        let mut cmd = tokio::process::Command::new("git");
        // Only what git needs of the server's environment (no GIT_TRACE_*, no
        // GIT_DIR...); never a hook, an fsmonitor or the `ext::` transport, whatever the
        // clone's config says.
        cmd.env_clear();
        for keep in [
            "PATH",
            "HOME",
            "LANG",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "SSH_AUTH_SOCK",
        ] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        let mut config: Vec<(&str, String)> = vec![
            ("core.hooksPath", "/dev/null".into()),
            ("core.fsmonitor", "false".into()),
            ("protocol.ext.allow", "never".into()),
            ("protocol.fd.allow", "never".into()),
        ];
        if let Some(token) = token {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            config.push(("http.extraHeader", format!("Authorization: Basic {basic}")));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.into_iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd.arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Ferry")
            .env("GIT_AUTHOR_EMAIL", "ferry@localhost")
            .env("GIT_COMMITTER_NAME", "Ferry")
            .env("GIT_COMMITTER_EMAIL", "ferry@localhost")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .map_err(|_| format!("git {} took more than 120s", args.join(" ")))?
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The clone, at the branch's latest commit (`None`: the branch does not exist yet).
    async fn fresh(&self, dir: &Path, token: Option<&str>) -> Result<Option<String>, String> {
        if !dir.join(".git").is_dir() {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            self.git(dir, &["init", "-q"], None).await?;
        }
        // The configured repository, every time: a release naming another must not
        // leave it behind for the next.
        let _ = self.git(dir, &["remote", "remove", "origin"], None).await;
        self.git(dir, &["remote", "add", "origin", &self.repo], None)
            .await?;
        let branch = self.branch();
        let heads = self
            .git(
                dir,
                &["ls-remote", "origin", &format!("refs/heads/{branch}")],
                token,
            )
            .await
            .map_err(|e| format!("cannot reach the environment repository {}: {e}", self.repo))?;
        let exists = heads
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(format!("refs/heads/{branch}").as_str()));
        if !exists {
            self.git(
                dir,
                &["checkout", "-q", "--orphan", &format!("ferry-{branch}")],
                None,
            )
            .await
            .ok();
            let _ = self
                .git(dir, &["rm", "-rqf", "--ignore-unmatch", "."], None)
                .await;
            return Ok(None);
        }
        self.git(
            dir,
            &[
                "fetch",
                "-q",
                "origin",
                &format!("+refs/heads/{branch}:{HEAD_REF}"),
            ],
            token,
        )
        .await
        .map_err(|e| format!("cannot fetch {} from {}: {e}", branch, self.repo))?;
        self.git(
            dir,
            &["checkout", "-q", "-B", &format!("ferry-{branch}"), HEAD_REF],
            None,
        )
        .await?;
        self.git(dir, &["reset", "-q", "--hard", HEAD_REF], None)
            .await?;
        self.git(dir, &["clean", "-qfdx"], None).await?;
        Ok(Some(self.git(dir, &["rev-parse", "HEAD"], None).await?))
    }

    fn token<'a>(&self, ctx: &'a DeployContext<'_>) -> Result<Option<&'a str>, String> {
        let Some(name) = &self.token else {
            return Ok(None);
        };
        ctx.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).map(str::trim))
            .transpose()
            .map_err(|_| format!("the secret {name} is not text"))?
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "the `gitops` target's `token` names the secret {name}, which environment {} does not have",
                    ctx.environment()
                )
            })
    }
}

/// `path` made safe: relative, without `..`.
fn checked_path(path: &str) -> Result<String, String> {
    let p = path.trim_matches('/');
    if p.is_empty()
        || p.split('/')
            .any(|c| c == ".." || c == "." || c == ".git" || c.is_empty())
    {
        return Err(format!(
            "`path` {path} must be a directory inside the repository"
        ));
    }
    Ok(p.to_string())
}

#[async_trait::async_trait]
impl Target for GitopsTarget {
    async fn deploy(&self, ctx: &mut DeployContext<'_>) -> Result<(), String> {
        let path = checked_path(&match &self.path {
            Some(p) => ctx.eval(p)?,
            None => ctx.environment().to_string(),
        })?;
        let files = render(&ctx.release_dir, &self.manifests, ctx.release, &|t| {
            ctx.eval(t)
        })?;
        let token = self.token(ctx)?.map(str::to_string);
        let token = token.as_deref();
        // Nothing secret goes into the repository: a rendering the log would mask holds
        // a secret's value or a sensitive Terraform output.
        for (name, content) in &files {
            if ctx.log.masker().mask(content.as_bytes()) != content.as_bytes() {
                return Err(format!(
                    "{name} would hold a secret value (a secret or a sensitive Terraform output): secrets are not written into the environment repository"
                ));
            }
        }
        let data = self.root.parent().unwrap_or(&self.root);
        check_repo(&self.repo, data, &self.local)?;
        let dir = self.clone_dir(ctx.deployment);
        let lock = clone_lock(&dir);
        let _held = lock.lock().await;
        let approvals = self
            .store
            .approvals(&ctx.deployment.id)
            .await
            .map_err(|e| e.to_string())?;
        let rollback = ctx.deployment.kind == ferry_store::DeploymentKind::Rollback;
        let message = message(ctx.deployment, ctx.release, &approvals, rollback);
        let branch = self.branch().to_string();
        for attempt in 1..=3 {
            self.fresh(&dir, token).await?;
            no_links(&dir, &path)?;
            let target = dir.join(&path);
            let _ = std::fs::remove_dir_all(&target);
            for (name, content) in &files {
                let file = target.join(name);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                std::fs::write(&file, content).map_err(|e| format!("{}: {e}", file.display()))?;
            }
            std::fs::write(dir.join(".git").join(PATH_FILE), &path).map_err(|e| e.to_string())?;
            self.git(&dir, &["add", "-A", "--", &path], None).await?;
            let unchanged = self
                .git(&dir, &["diff", "--cached", "--quiet"], None)
                .await
                .is_ok()
                && self
                    .git(&dir, &["rev-parse", "-q", "--verify", "HEAD"], None)
                    .await
                    .is_ok();
            if unchanged {
                let head = self.git(&dir, &["rev-parse", "HEAD"], None).await?;
                ctx.log.line(&format!(
                    "{path} in {} already holds this rendering (commit {head})",
                    self.repo
                ));
                self.store
                    .set_target_ref(&ctx.deployment.id, &head)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            let msg = dir.join(".git").join("FERRY_MSG");
            std::fs::write(&msg, &message).map_err(|e| e.to_string())?;
            self.git(
                &dir,
                &["commit", "-q", "-F", &msg.display().to_string()],
                None,
            )
            .await?;
            let head = self.git(&dir, &["rev-parse", "HEAD"], None).await?;
            match self
                .git(
                    &dir,
                    &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")],
                    token,
                )
                .await
            {
                Ok(_) => {
                    ctx.log.line(&format!(
                        "pushed commit {head} to {} ({branch}): {} file(s) under {path}",
                        self.repo,
                        files.len()
                    ));
                    self.store
                        .set_target_ref(&ctx.deployment.id, &head)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(());
                }
                Err(e) if attempt < 3 => {
                    ctx.log.line(&format!(
                        "the push was refused ({e}); trying again on the branch as it is now"
                    ));
                }
                Err(e) => return Err(format!("cannot push to {} ({branch}): {e}", self.repo)),
            }
        }
        Err(format!("cannot push to {} ({branch})", self.repo))
    }

    /// Drift: commits to `path` after the live deployment's, not made by Ferry.
    async fn alive(&self, dep: &Deployment, _release: &str) -> Option<String> {
        // The watch may hold the deployment as it was before its commit was recorded.
        let recorded = match &dep.target_ref {
            Some(r) => r.clone(),
            None => self.store.deployment(&dep.id).await.ok()?.target_ref?,
        };
        let dir = self.clone_dir(dep);
        let lock = clone_lock(&dir);
        let _held = lock.try_lock().ok()?; // A deployment is under way: next time.
        // The path as the last deployment resolved it (it may hold `${{ }}`).
        let path = std::fs::read_to_string(dir.join(".git").join(PATH_FILE)).ok()?;
        let path = checked_path(path.trim()).ok()?;
        // The token, as the environment has it now (opened for this fetch only).
        let token = match &self.token {
            Some(name) => {
                let secrets = self
                    .store
                    .open_secrets(&self.key, &dep.repository_id, &dep.environment)
                    .await
                    .ok()?;
                let (_, value) = secrets.into_iter().find(|(n, _)| n == name)?;
                Some(String::from_utf8(value).ok()?.trim().to_string())
            }
            None => None,
        };
        let fetch = format!("+refs/heads/{}:{WATCH_REF}", self.branch());
        self.git(&dir, &["fetch", "-q", "origin", &fetch], token.as_deref())
            .await
            .ok()?;
        let log = self
            .git(
                &dir,
                &[
                    "log",
                    "--format=%H%x1f%an%x1f%s%x1f%b%x1e",
                    &format!("{recorded}..{WATCH_REF}"),
                    "--",
                    &path,
                ],
                None,
            )
            .await
            .ok()?;
        let commits = parse_log(&log);
        // A trailer is Ferry's only when it names a deployment of this environment
        // whose recorded commit it is (anyone can write the words).
        let mut ours = Vec::new();
        for c in &commits {
            if let Some(id) = trailer(&c.body)
                && let Ok(d) = self.store.deployment(id).await
                && d.repository_id == dep.repository_id
                && d.environment == dep.environment
                && d.target_ref.as_deref() == Some(c.sha.as_str())
            {
                ours.push(c.sha.clone());
            }
        }
        drift(&commits, &path, &ours)
    }
}

#[cfg(test)]
mod tests;
