//! The little Ferry needs from git, through the `git` command (worktrees, submodules and
//! every URL scheme just work), except for reading a local working tree, which
//! [`snapshot`] does in-process where it can (see `in_process`).

use std::path::{Path, PathBuf};

use tokio::process::Command;
use tracing::Instrument as _;

/// A commit's identity and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub message: String,
    /// Files the commit changed against its first parent (all files for a root commit).
    pub changed_files: Vec<String>,
}

/// The state of a working tree.
#[derive(Debug, Clone)]
pub struct WorkingTree {
    pub root: PathBuf,
    /// `refs/heads/<branch>`, or `HEAD` when detached.
    pub head_ref: String,
    /// Whether there are uncommitted changes (including untracked, non-ignored files).
    pub dirty: bool,
    /// Files that differ from HEAD (modified, added, deleted, untracked).
    pub changed_files: Vec<String>,
}

/// What `ferry run` reads of a working tree before it starts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// HEAD's commit; `None` before the first commit.
    pub commit: Option<Commit>,
    pub tree: WorkingTree,
    /// The files a job's workspace gets: tracked and untracked, not ignored, sorted.
    pub files: Vec<PathBuf>,
}

/// Reads the working tree at `root` (its top level): in-process when gitoxide reads it
/// as `git` would, else through [`commit`], [`working_tree`] and [`working_tree_files`]
/// (three `git` processes, at once).
pub async fn snapshot(root: &Path) -> Result<Snapshot, String> {
    let owned = root.to_path_buf();
    let span = tracing::debug_span!("snapshot.in_process");
    let read =
        tokio::task::spawn_blocking(move || span.in_scope(|| crate::in_process::snapshot(&owned)))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    match read {
        Ok(snapshot) => return Ok(snapshot),
        Err(why) => tracing::debug!(%why, "read by git instead"),
    }
    let (commit, tree, files) = tokio::join!(
        commit(root, "HEAD"),
        working_tree(root),
        working_tree_files(root)
    );
    let mut files = files?;
    files.sort();
    files.dedup();
    Ok(Snapshot {
        commit: commit.ok(),
        tree: tree?,
        files,
    })
}

/// `git` as this process's PATH finds it, looked up once: a spawned child searching
/// PATH tries (and fails to exec) each directory before the right one while the
/// spawning thread waits. If it is not found, the child searches (and reports) itself.
fn program() -> &'static Path {
    static GIT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    GIT.get_or_init(|| which::which("git").unwrap_or_else(|_| "git".into()))
}

/// How long one git command may take before it is stopped (ten minutes unless
/// [`set_timeout`] says otherwise): a remote that never answers holds nothing for good.
static TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(600_000);

/// Sets how long one git command may take (`ferry serve --git-timeout`).
pub fn set_timeout(limit: std::time::Duration) {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `cmd` (which kills its process when dropped) to its end, or stops it once it
/// has taken longer than the timeout.
async fn bounded(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    let limit =
        std::time::Duration::from_millis(TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed));
    match tokio::time::timeout(limit, cmd.kill_on_drop(true).output()).await {
        Ok(out) => out.map_err(|e| format!("cannot run git: {e}")),
        Err(_) => Err(format!(
            "git {what} took longer than {} s and was stopped",
            limit.as_secs_f64()
        )),
    }
}

async fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    git_with(dir, args, &[]).await
}

/// [`git`] with more environment variables.
async fn git_with(dir: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Result<Vec<u8>, String> {
    let what = args.first().copied().unwrap_or_default();
    let span = tracing::debug_span!("git", cmd = what);
    let mut cmd = Command::new(program());
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(envs.iter().copied());
    let out = bounded(&mut cmd, what).instrument(span).await?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.trim().trim_start_matches("fatal: ").to_string());
    }
    Ok(out.stdout)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

fn split_z(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The root of the repository holding `dir`: found by looking for `.git` upwards when
/// that is unambiguous (saving a git process on every command), else asked of git.
pub async fn toplevel(dir: &Path) -> Result<PathBuf, String> {
    let steered = DISCOVERY_VARS.iter().any(|v| std::env::var_os(v).is_some());
    if !steered && let Some(root) = discover(dir) {
        return Ok(root);
    }
    let out = git(dir, &["rev-parse", "--show-toplevel"]).await?;
    Ok(PathBuf::from(text(out)))
}

/// Variables that change where git finds a repository: with any of them set, git is
/// asked.
const DISCOVERY_VARS: [&str; 5] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_COMMON_DIR",
];

/// The nearest directory from `dir` upwards (symbolic links resolved, as git does) that
/// holds a `.git` repository directory or a `.git` file (`gitdir: …`, a worktree or a
/// submodule). `None` whenever git might answer differently, so that git decides: no
/// `.git` found, `dir` inside a `.git` directory, a `.git` that is neither, one owned
/// by another user (git's `safe.directory` check), or a config naming a `worktree`.
pub fn discover(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut here = std::fs::canonicalize(dir).ok()?;
    if here.components().any(|c| c.as_os_str() == ".git") {
        return None;
    }
    let uid = nix::unistd::geteuid().as_raw();
    loop {
        let dotgit = here.join(".git");
        if let Ok(meta) = std::fs::symlink_metadata(&dotgit) {
            if meta.uid() != uid {
                return None;
            }
            // `core.worktree` in the repository's config moves the root elsewhere.
            let moved = || {
                std::fs::read(dotgit.join("config"))
                    .is_ok_and(|c| c.to_ascii_lowercase().windows(8).any(|w| w == b"worktree"))
            };
            let ok = if meta.is_dir() {
                dotgit.join("HEAD").is_file() && dotgit.join("objects").is_dir() && !moved()
            } else if meta.is_file() {
                std::fs::read(&dotgit).is_ok_and(|b| b.starts_with(b"gitdir: "))
            } else {
                false
            };
            return ok.then_some(here);
        }
        if !here.pop() {
            return None;
        }
    }
}

/// Checks that `name` is a full ref name (`refs/…`) that git accepts, by the rules of
/// `git check-ref-format`: no component starting with `.` or ending with `.lock`, no
/// `..`, `@{`, control characters, spaces or any of `~^:?*[\`. A ref name that passes
/// cannot climb out of a directory (no `..` component) but may hold `/`: paths are made
/// of ref names only through an encoding (see `ferry_deliver::layout`).
pub fn check_ref_name(name: &str) -> Result<(), String> {
    let shown = name.escape_debug();
    if !name.starts_with("refs/") {
        return Err(format!("`{shown}` is not a full ref name (refs/…)"));
    }
    gix::validate::reference::name(name.as_bytes().into())
        .map(|_| ())
        .map_err(|e| {
            let why = e.to_string();
            let why = why.strip_prefix("Reference name ").unwrap_or(&why);
            format!("`{shown}` is not a valid ref name: it {why}")
        })
}

/// Resolves `rev` to a commit and describes it, in one `git log` call.
pub async fn commit(root: &Path, rev: &str) -> Result<Commit, String> {
    read_commit(root, rev).await.map_err(|e| e.to_string())
}

/// Why a commit could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Git has no such commit.
    #[error("{0}")]
    NotFound(String),
    /// The repository could not be read (a fetch writing to it, a broken object): worth
    /// trying again.
    #[error("{0}")]
    Unreadable(String),
}

/// [`commit`], telling a missing commit from a repository that cannot be read.
pub async fn read_commit(root: &Path, rev: &str) -> Result<Commit, CommitError> {
    let not_a_commit =
        || CommitError::NotFound(format!("`{rev}` is not a commit in {}", root.display()));
    if rev.starts_with('-') {
        return Err(not_a_commit());
    }
    let spec = format!("{rev}^{{commit}}");
    // Only a commit git does not have is "not a commit": a repository that cannot be
    // read (a fetch writing to it, a broken object) is a failure to say as it is.
    let read_failed = |e: String| {
        CommitError::Unreadable(format!(
            "cannot read commit `{rev}` in {}: {e}",
            root.display()
        ))
    };
    let out = git(
        root,
        &[
            "log",
            "-1",
            "-z",
            "--format=%H%x00%an <%ae>%x00%B%x00",
            "--name-only",
            "--no-renames",
            "--diff-merges=first-parent",
            &spec,
            "--",
        ],
    )
    .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            return Err(match commit_exists(root, rev).await {
                Ok(false) => not_a_commit(),
                Ok(true) => read_failed(e),
                Err(check) => read_failed(check),
            });
        }
    };
    let mut parts = out.split(|b| *b == 0);
    let sha = String::from_utf8_lossy(parts.next().unwrap_or_default())
        .trim()
        .to_string();
    if sha.len() < 40 {
        return Err(not_a_commit());
    }
    let author = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let message = String::from_utf8_lossy(parts.next().unwrap_or_default())
        .trim()
        .to_string();
    let changed_files = parts
        .map(|s| {
            String::from_utf8_lossy(s)
                .trim_start_matches('\n')
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect();
    Ok(Commit {
        sha,
        author,
        message,
        changed_files,
    })
}

/// The working tree at `root`: its HEAD ref and uncommitted changes, in one call.
pub async fn working_tree(root: &Path) -> Result<WorkingTree, String> {
    let status = git(
        root,
        &[
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=all",
            "--no-renames",
        ],
    )
    .await?;
    let mut head_ref = "HEAD".to_string();
    let mut changed_files = Vec::new();
    for entry in split_z(&status) {
        let mut fields = entry.splitn(2, ' ');
        let kind = fields.next().unwrap_or("");
        let rest = fields.next().unwrap_or("");
        match kind {
            "#" => {
                if let Some(branch) = rest.strip_prefix("branch.head ")
                    && branch != "(detached)"
                {
                    head_ref = format!("refs/heads/{branch}");
                }
            }
            // Ordinary changes: 8 fields before the path; unmerged: 10.
            "1" => changed_files.extend(rest.splitn(8, ' ').nth(7).map(str::to_string)),
            "u" => changed_files.extend(rest.splitn(10, ' ').nth(9).map(str::to_string)),
            "?" => changed_files.push(rest.to_string()),
            _ => {}
        }
    }
    Ok(WorkingTree {
        root: root.to_path_buf(),
        head_ref,
        dirty: !changed_files.is_empty(),
        changed_files,
    })
}

/// Files of the working tree a job's workspace gets: tracked and untracked, not ignored.
pub async fn working_tree_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let out = git(
        root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    )
    .await?;
    let mut files: Vec<PathBuf> = split_z(&out).into_iter().map(PathBuf::from).collect();
    files.dedup();
    Ok(files)
}

/// Writes the tree of commit `sha` into `dest`, without touching the repository's index
/// or working tree; works for bare repositories (server mirrors) too.
pub async fn export(root: &Path, sha: &str, dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let index = dest.with_extension("index");
    // One process: read the tree into the empty temporary index and (`-u`) write its
    // files out to the work tree.
    let envs = [("GIT_INDEX_FILE", index.as_path()), ("GIT_WORK_TREE", dest)];
    let result = git_with(root, &["read-tree", "--reset", "-u", sha], &envs).await;
    let _ = std::fs::remove_file(&index);
    result.map(|_| ())
}

/// A file of a commit's tree (see [`files_under`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Its path from the repository's root.
    pub path: String,
    /// `0o755` for an executable, else `0o644`.
    pub mode: u32,
    pub content: Vec<u8>,
}

/// The files under directory `dir` (from the repository's root) at commit `sha`, in
/// path order: regular files only (links and submodules are left out). `None` when the
/// commit has no such directory.
pub async fn files_under(
    root: &Path,
    sha: &str,
    dir: &str,
) -> Result<Option<Vec<TreeFile>>, String> {
    let dir = dir.trim_end_matches('/');
    let spec = format!("{sha}:{dir}");
    match git(root, &["cat-file", "-t", &spec]).await {
        Ok(kind) if kind.trim_ascii() == b"tree" => {}
        _ => return Ok(None),
    }
    let listing = git(
        root,
        &[
            "ls-tree",
            "-r",
            "-z",
            "--full-tree",
            sha,
            "--",
            &format!("{dir}/"),
        ],
    )
    .await?;
    let mut files = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        // `<mode> SP <type> SP <object> TAB <path>`
        let text = String::from_utf8_lossy(entry);
        let Some((meta, path)) = text.split_once('\t') else {
            continue;
        };
        let mut parts = meta.split(' ');
        let (mode, kind, oid) = (parts.next(), parts.next(), parts.next());
        let (Some(mode), Some("blob"), Some(oid)) = (mode, kind, oid) else {
            continue; // a submodule
        };
        let mode = match mode {
            "100755" => 0o755,
            "100644" => 0o644,
            _ => continue, // a link
        };
        let content = git(root, &["cat-file", "blob", oid]).await?;
        files.push(TreeFile {
            path: path.to_string(),
            mode,
            content,
        });
    }
    Ok(Some(files))
}

/// The content of `path` at commit `sha`, or `None` when the commit has no such file.
pub async fn show_file(root: &Path, sha: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
    let spec = format!("{sha}:{path}");
    match git(root, &["cat-file", "blob", &spec]).await {
        Ok(content) => Ok(Some(content)),
        // Asked again only when the read failed: is the file missing, or the read?
        Err(e) => match git(root, &["cat-file", "-e", &spec]).await {
            Ok(_) => Err(e),
            Err(_) => Ok(None),
        },
    }
}

/// Keeps a bare mirror of `url` at `mirror`: cloned on first use, fetched after.
pub async fn sync_mirror(url: &str, mirror: &Path) -> Result<(), String> {
    if mirror.join("HEAD").is_file() {
        git(mirror, &["remote", "update", "--prune"])
            .await
            .map(|_| ())
    } else {
        if let Some(parent) = mirror.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        // Cloned beside it, then moved into place: a mirror that exists is complete.
        let parent = mirror.parent().unwrap_or(Path::new("."));
        let partial = mirror.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let target = partial.display().to_string();
        git(
            parent,
            &["clone", "--mirror", "--quiet", "--", url, &target],
        )
        .await?;
        std::fs::rename(&partial, mirror)
            .map_err(|e| format!("cannot move the new mirror into place: {e}"))
    }
}

/// Resolves a ref name (`main`, `v1.0`, `refs/heads/x`, a sha) in `root`: the commit and
/// the full ref it came from, when it is a branch or a tag.
pub async fn resolve(root: &Path, name: &str) -> Result<(String, Option<String>), String> {
    if name.starts_with('-') {
        return Err(format!("`{name}` is not a ref"));
    }
    let candidates = if name.starts_with("refs/") {
        vec![name.to_string()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    };
    for full in candidates {
        let spec = format!("{full}^{{commit}}");
        if let Ok(out) = git(root, &["rev-parse", "--verify", "--quiet", &spec]).await {
            return Ok((text(out), Some(full)));
        }
    }
    let spec = format!("{name}^{{commit}}");
    let out = git(root, &["rev-parse", "--verify", "--quiet", &spec])
        .await
        .map_err(|_| format!("`{name}` is not a branch, tag or commit"))?;
    Ok((text(out), None))
}

/// The commit a branch or tag points at, read from the repository's ref files (a loose
/// ref, else `packed-refs`) without running git: `None` when it is not there that way
/// (a symbolic ref, an annotated tag's object, a ref that does not exist), and the
/// caller asks git ([`resolve`]).
pub fn read_ref(root: &Path, full: &str) -> Option<String> {
    let valid =
        |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !full.starts_with("refs/heads/") || full.contains("..") {
        return None;
    }
    if let Ok(text) = std::fs::read_to_string(root.join(full)) {
        let id = text.trim();
        return valid(id).then(|| id.to_string());
    }
    let packed = std::fs::read_to_string(root.join("packed-refs")).ok()?;
    packed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .filter_map(|l| l.split_once(' '))
        .find(|(_, name)| *name == full)
        .map(|(id, _)| id.to_string())
        .filter(|id| valid(id))
}

/// Whether `root` (a mirror) already has commit `sha`.
/// Whether `rev` names a commit in `root`: `Ok(false)` only when git says it has no such
/// commit; `Err` when the repository cannot be read.
pub async fn commit_exists(root: &Path, rev: &str) -> Result<bool, String> {
    if rev.is_empty() || rev.starts_with('-') {
        return Ok(false);
    }
    let spec = format!("{rev}^{{commit}}");
    // `--verify --quiet`: exit 1 and nothing said for an unknown name.
    git_answers(root, &["rev-parse", "--verify", "--quiet", &spec]).await
}

/// A git command that answers yes (exit 0) or no (exit 1, nothing on stderr); anything
/// else is an error, with git's message.
async fn git_answers(root: &Path, args: &[&str]) -> Result<bool, String> {
    let mut cmd = Command::new(program());
    cmd.arg("-C")
        .arg(root)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0");
    let out = bounded(&mut cmd, args.first().copied().unwrap_or_default()).await?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) if out.stderr.is_empty() => Ok(false),
        _ => Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .trim_start_matches("fatal: ")
            .to_string()),
    }
}

/// Whether commit `ancestor` is `descendant` or one of its ancestors in `root`; `Err`
/// when git cannot tell (a commit it does not have).
pub async fn is_ancestor(root: &Path, ancestor: &str, descendant: &str) -> Result<bool, String> {
    if [ancestor, descendant]
        .iter()
        .any(|c| c.is_empty() || c.starts_with('-'))
    {
        return Err("not a commit".into());
    }
    git_answers(root, &["merge-base", "--is-ancestor", ancestor, descendant]).await
}

pub async fn has_commit(root: &Path, sha: &str) -> bool {
    if sha.is_empty() || sha.starts_with('-') || !root.join("HEAD").is_file() {
        return false;
    }
    let spec = format!("{sha}^{{commit}}");
    git(root, &["cat-file", "-e", &spec]).await.is_ok()
}

/// `git ls-remote` of `url`: `(full ref, commit)` of every branch and tag, sorted, with
/// annotated tags peeled to their commit.
pub async fn ls_remote(url: &str) -> Result<Vec<(String, String)>, String> {
    let out = git(
        Path::new("."),
        &["ls-remote", "--heads", "--tags", "--", url],
    )
    .await?;
    let mut heads: std::collections::BTreeMap<String, String> = Default::default();
    for line in String::from_utf8_lossy(&out).lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        match name.strip_suffix("^{}") {
            Some(tag) => {
                heads.insert(tag.to_string(), sha.to_string());
            }
            None => {
                heads
                    .entry(name.to_string())
                    .or_insert_with(|| sha.to_string());
            }
        }
    }
    Ok(heads.into_iter().collect())
}

/// The commit `full_ref` (e.g. `refs/heads/main`) names at `url` now, without fetching
/// anything (`None`: no such ref).
pub async fn ls_remote_ref(url: &str, full_ref: &str) -> Result<Option<String>, String> {
    let out = git(Path::new("."), &["ls-remote", "--", url, full_ref]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(_, name)| *name == full_ref)
        .map(|(sha, _)| sha.to_string()))
}

/// One commit in a range: sha, author and subject.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct LogEntry {
    pub sha: String,
    pub author: String,
    pub subject: String,
}

/// The commits reachable from `to` but not from `from` (`from..to`), newest first, at
/// most `limit`; with no `from`, the history of `to`.
pub async fn log_range(
    root: &Path,
    from: Option<&str>,
    to: &str,
    limit: usize,
) -> Result<Vec<LogEntry>, String> {
    let range = match from {
        Some(f) => format!("{f}..{to}"),
        None => to.to_string(),
    };
    let max = format!("--max-count={limit}");
    let out = git(
        root,
        &[
            "log",
            "-z",
            &max,
            "--format=%H%x1f%an <%ae>%x1f%s",
            &range,
            "--",
        ],
    )
    .await?;
    Ok(split_z(&out)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.splitn(3, '\u{1f}');
            Some(LogEntry {
                sha: parts.next()?.trim().to_string(),
                author: parts.next()?.to_string(),
                subject: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect())
}

/// The commits of `from..to` (all of `to`'s history without `from`), newest first, at
/// most `limit`: each with its committer time (seconds since the epoch).
pub async fn commit_times(
    root: &Path,
    from: Option<&str>,
    to: &str,
    limit: usize,
) -> Result<Vec<(String, i64)>, String> {
    let range = match from {
        Some(f) => format!("{f}..{to}"),
        None => to.to_string(),
    };
    let max = format!("--max-count={limit}");
    let out = git(root, &["log", "-z", &max, "--format=%H %ct", &range, "--"]).await?;
    Ok(split_z(&out)
        .into_iter()
        .filter_map(|entry| {
            let (sha, time) = entry.trim().split_once(' ')?;
            Some((sha.to_string(), time.trim().parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote that accepts the connection and never answers stops nothing but its
    /// own fetch: the clone is stopped at the timeout, with a message saying so.
    #[tokio::test]
    async fn a_remote_that_never_answers_is_given_up_on() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("git://{}/app.git", silent.local_addr().expect("addr"));
        let tmp = tempfile::tempdir().expect("tmp");
        set_timeout(std::time::Duration::from_millis(800));
        let started = std::time::Instant::now();
        let err = sync_mirror(&url, &tmp.path().join("app.git"))
            .await
            .expect_err("no answer");
        assert!(
            err.contains("took longer than 0.8 s and was stopped"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(!tmp.path().join("app.git").exists(), "no partial mirror");
        drop(silent);
    }

    /// Ref names as `git check-ref-format` takes or refuses them; what a delivery may
    /// name before anything reaches git or a path.
    #[test]
    fn ref_names_follow_git_check_ref_format() {
        for good in [
            "refs/heads/main",
            "refs/heads/feature/login-page",
            "refs/tags/v1.2.3",
            "refs/tags/release/2026-12",
            "refs/heads/ünïcode",
        ] {
            assert_eq!(check_ref_name(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("main", "is not a full ref name"),
            ("refs/tags/../../../../home/u/victim", "it cannot"),
            ("refs/heads/.hidden", "it cannot start with a dot"),
            ("refs/heads/a..b", "it cannot contain repeated dots"),
            ("refs/heads/x.lock", "it cannot end with '.lock'"),
            ("refs/heads/a b", "invalid byte"),
            ("refs/heads/a\u{1}b", "invalid byte"),
            ("refs/heads/a~1", "invalid byte"),
            ("refs/heads/x@{1}", "'@{'"),
            ("refs/heads/a//b", "repeated slashes"),
            ("refs/heads/", "it cannot end with a slash"),
            ("refs/heads/*", "'*'"),
        ] {
            let err = check_ref_name(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn git_in(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The files under a directory of a commit: regular files with their mode, in path
    /// order, links left out; a missing directory (or a file) is `None`.
    #[tokio::test]
    async fn files_under_a_directory_of_a_commit() {
        let tmp = tempfile::tempdir().expect("tmp");
        let repo = tmp.path();
        git_in(repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(repo.join("infra/modules")).expect("mkdir");
        std::fs::write(repo.join("infra/main.tf"), "x\n").expect("write");
        std::fs::write(repo.join("infra/modules/run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::write(repo.join("infrastructure.txt"), "not under infra/\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            repo.join("infra/modules/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("/etc/passwd", repo.join("infra/link")).expect("link");
        git_in(repo, &["add", "-A"]);
        git_in(repo, &["commit", "-q", "-m", "infra"]);
        let sha = git_in(repo, &["rev-parse", "HEAD"]);
        let files = files_under(repo, &sha, "infra/")
            .await
            .expect("read")
            .expect("a dir");
        let listed: Vec<(&str, u32, &[u8])> = files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.content.as_slice()))
            .collect();
        assert_eq!(
            listed,
            [
                ("infra/main.tf", 0o644, &b"x\n"[..]),
                ("infra/modules/run.sh", 0o755, &b"#!/bin/sh\n"[..]),
            ]
        );
        assert_eq!(files_under(repo, &sha, "nope").await.expect("read"), None);
        assert_eq!(
            files_under(repo, &sha, "infrastructure.txt")
                .await
                .expect("read"),
            None
        );
    }

    /// A commit git does not have is "not a commit"; a commit whose tree cannot be read
    /// (as in a mirror a fetch is writing to) is a failure to read, worth trying again.
    #[tokio::test]
    async fn a_missing_commit_is_told_from_an_unreadable_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let repo = tmp.path();
        git_in(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("a"), "a\n").expect("write");
        git_in(repo, &["add", "a"]);
        git_in(repo, &["commit", "-q", "-m", "first"]);
        let sha = git_in(repo, &["rev-parse", "HEAD"]);
        assert_eq!(commit_exists(repo, &sha).await, Ok(true));
        assert!(read_commit(repo, &sha).await.is_ok());
        let missing = "0123456789abcdef0123456789abcdef01234567";
        assert!(matches!(
            read_commit(repo, missing).await,
            Err(CommitError::NotFound(m)) if m.contains("is not a commit")
        ));
        // Remove the commit's tree object: the commit is there, its content is not.
        let tree = git_in(repo, &["rev-parse", "HEAD^{tree}"]);
        let object = repo.join(".git/objects").join(&tree[..2]).join(&tree[2..]);
        std::fs::remove_file(&object).expect("remove the tree");
        match read_commit(repo, &sha).await {
            Err(CommitError::Unreadable(m)) => assert!(m.contains("cannot read commit"), "{m}"),
            other => panic!("expected a read failure, got {other:?}"),
        }
    }

    /// Finding the root by looking for `.git` gives git's own answer wherever it answers,
    /// and leaves to git every case where it might not.
    #[tokio::test]
    async fn the_root_is_found_as_git_finds_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let base = std::fs::canonicalize(tmp.path()).expect("canonical");
        let repo = base.join("repo");
        std::fs::create_dir_all(repo.join("a/b")).expect("mkdir");
        git_in(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("a/f"), "f\n").expect("write");
        git_in(&repo, &["add", "a/f"]);
        git_in(&repo, &["commit", "-q", "-m", "first"]);
        // A worktree has a `.git` file; a link into the repository resolves to it.
        let worktree = base.join("wt");
        git_in(
            &repo,
            &[
                "worktree",
                "add",
                "-q",
                worktree.to_str().expect("utf-8"),
                "-b",
                "other",
            ],
        );
        std::fs::create_dir_all(worktree.join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink(repo.join("a"), base.join("link")).expect("symlink");
        for (dir, root) in [
            (repo.clone(), repo.clone()),
            (repo.join("a/b"), repo.clone()),
            (worktree.join("a/b"), worktree.clone()),
            (base.join("link/b"), repo.clone()),
        ] {
            assert_eq!(
                discover(&dir).as_deref(),
                Some(root.as_path()),
                "{}",
                dir.display()
            );
            let git_says = git_in(&dir, &["rev-parse", "--show-toplevel"]);
            assert_eq!(PathBuf::from(git_says), root, "{}", dir.display());
            assert_eq!(toplevel(&dir).await, Ok(root));
        }
        // Inside `.git`, outside any repository, a `.git` that is not one, or a root
        // moved by `core.worktree`: git decides.
        let plain = base.join("plain");
        std::fs::create_dir_all(plain.join("x")).expect("mkdir");
        std::fs::write(plain.join(".git"), "not a pointer\n").expect("write");
        let moved = base.join("moved");
        std::fs::create_dir_all(&moved).expect("mkdir");
        git_in(&moved, &["init", "-q"]);
        git_in(
            &moved,
            &["config", "core.worktree", base.to_str().expect("utf-8")],
        );
        for dir in [
            repo.join(".git"),
            repo.join(".git/refs"),
            plain.join("x"),
            plain.clone(),
            moved.clone(),
        ] {
            assert_eq!(discover(&dir), None, "{}", dir.display());
        }
        let git_says = git_in(&moved, &["rev-parse", "--show-toplevel"]);
        assert_eq!(PathBuf::from(git_says), base);
        assert_eq!(toplevel(&moved).await, Ok(base.clone()));
        assert_eq!(discover(&base.join("missing")), None);
    }
}
