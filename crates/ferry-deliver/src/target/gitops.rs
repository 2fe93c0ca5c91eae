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
use std::time::Duration;

use ferry_store::{Approval, Deployment, Release, Store};

use super::{DeployContext, Target};

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
    #[educe(Debug(ignore))]
    pub store: Store,
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

/// What drifted: the commits to `path` not made by Ferry, said in one line.
pub fn drift(commits: &[Commit], path: &str) -> Option<String> {
    let outside: Vec<&Commit> = commits
        .iter()
        .filter(|c| {
            !c.body
                .lines()
                .any(|l| l.starts_with(&format!("{TRAILER}: ")))
        })
        .collect();
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
        if let Some(token) = token {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
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
            self.git(dir, &["remote", "add", "origin", &self.repo], None)
                .await?;
        }
        let branch = self.branch();
        let heads = self
            .git(dir, &["ls-remote", "--heads", "origin", branch], token)
            .await
            .map_err(|e| format!("cannot reach the environment repository {}: {e}", self.repo))?;
        if heads.trim().is_empty() {
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
        self.git(dir, &["fetch", "-q", "origin", branch], token)
            .await
            .map_err(|e| format!("cannot fetch {} from {}: {e}", branch, self.repo))?;
        self.git(
            dir,
            &[
                "checkout",
                "-q",
                "-B",
                &format!("ferry-{branch}"),
                "FETCH_HEAD",
            ],
            None,
        )
        .await?;
        self.git(dir, &["reset", "-q", "--hard", "FETCH_HEAD"], None)
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
            .any(|c| c == ".." || c == ".git" || c.is_empty())
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
        let dir = self.clone_dir(ctx.deployment);
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
        let since = recorded.as_str();
        let dir = self.clone_dir(dep);
        // The path as the last deployment resolved it (it may hold `${{ }}`).
        let path = std::fs::read_to_string(dir.join(".git").join(PATH_FILE)).ok()?;
        let path = checked_path(path.trim()).ok()?;
        // The token is a secret the watch does not hold: a repository that needs one is
        // checked at the next deployment.
        self.git(&dir, &["fetch", "-q", "origin", self.branch()], None)
            .await
            .ok()?;
        let log = self
            .git(
                &dir,
                &[
                    "log",
                    "--format=%H%x1f%an%x1f%s%x1f%b%x1e",
                    &format!("{since}..FETCH_HEAD"),
                    "--",
                    &path,
                ],
                None,
            )
            .await
            .ok()?;
        drift(&parse_log(&log), &path)
    }
}

#[cfg(test)]
mod tests;
