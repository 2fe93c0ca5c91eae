//! Reading a local working tree without starting `git`: HEAD's commit, the tree's
//! changes and the files a job's workspace gets, through gitoxide (`gix`), in about a
//! millisecond where three `git` processes cost several times that in CPU.
//!
//! Only what gix answers exactly as `git` would is read here; anything else (a
//! repository steered by `GIT_*` variables, one owned by another user, submodules, a
//! sparse or split index, a nested repository among the untracked files, a shallow
//! history) is refused with the reason, and the caller asks `git` itself.

use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice as _;

use crate::git::{Commit, Snapshot, WorkingTree};

/// Variables (by prefix) with which `git` finds, reads or configures a repository
/// otherwise: set by a hook or a script steering git, and not sure to be read by gix the
/// same way. With any of them set, `git` is asked. (Variables for the network, the
/// pager or an identity change nothing here.)
const STEERING_VARS: [&str; 17] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_CONFIG",
    "GIT_GRAFT_FILE",
    "GIT_REPLACE_REF_BASE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_SHALLOW_FILE",
    "GIT_QUARANTINE_PATH",
    "GIT_DEFAULT_HASH",
    "GIT_ICASE_PATHSPECS",
];

fn steered() -> Option<String> {
    std::env::vars_os().find_map(|(name, _)| {
        let name = name.to_string_lossy();
        STEERING_VARS
            .iter()
            .any(|v| name.starts_with(v))
            .then(|| format!("{name} is set"))
    })
}

fn lossy(path: &gix::bstr::BStr) -> String {
    path.to_str_lossy().into_owned()
}

/// Reads the working tree at `root` (its top level) as `git log -1 HEAD`, `git status
/// --untracked-files=all --no-renames` and `git ls-files -co --exclude-standard` would,
/// or says why it will not.
pub(crate) fn snapshot(root: &Path) -> Result<Snapshot, String> {
    if let Some(why) = steered() {
        return Err(why);
    }
    let repo = gix::open(root).map_err(|e| e.to_string())?;
    if repo.git_dir_trust() != gix::sec::Trust::Full {
        return Err("the repository is owned by another user".into());
    }
    let workdir = repo.workdir().ok_or("a bare repository")?;
    if std::fs::canonicalize(workdir).ok() != std::fs::canonicalize(root).ok() {
        return Err("the work tree is elsewhere".into());
    }
    let index = repo.index_or_empty().map_err(|e| e.to_string())?;
    if index.is_sparse() || index.link().is_some() {
        return Err("a sparse or split index".into());
    }
    if index
        .entries()
        .iter()
        .any(|e| e.mode == gix::index::entry::Mode::COMMIT)
    {
        return Err("submodules".into());
    }
    let head = repo.head().map_err(|e| e.to_string())?;
    let head_ref = head
        .referent_name()
        .map_or_else(|| "HEAD".to_string(), |n| n.as_bstr().to_string());
    let commit = match head.id() {
        Some(id) => Some(commit(&repo, id.detach())?),
        None => None,
    };

    let mut changed_files = Vec::new();
    let mut untracked = Vec::new();
    if commit.is_none() {
        // No HEAD: everything in the index is a change (`git status` shows it added).
        changed_files.extend(index.entries().iter().map(|e| lossy(e.path(&index))));
    }
    let status = repo
        .status(gix::progress::Discard)
        .map_err(|e| e.to_string())?
        .untracked_files(gix::status::UntrackedFiles::Files)
        .index_worktree_rewrites(None)
        .tree_index_track_renames(gix::status::tree_index::TrackRenames::Disabled)
        .into_iter(None)
        .map_err(|e| e.to_string())?;
    for item in status {
        use gix::status::Item;
        use gix::status::index_worktree::Item as Worktree;
        match item.map_err(|e| e.to_string())? {
            Item::TreeIndex(change) => changed_files.push(lossy(change.location())),
            Item::IndexWorktree(Worktree::Modification { rela_path, .. }) => {
                changed_files.push(lossy(rela_path.as_ref()));
            }
            Item::IndexWorktree(Worktree::DirectoryContents { entry, .. }) => {
                use gix::dir::entry::{Kind, Status};
                match (entry.status, entry.disk_kind) {
                    (Status::Untracked, Some(Kind::File | Kind::Symlink)) => {
                        let path = lossy(entry.rela_path.as_ref());
                        changed_files.push(path.clone());
                        untracked.push(path);
                    }
                    (Status::Untracked, kind) => {
                        return Err(format!(
                            "untracked {} is a {kind:?}",
                            entry.rela_path.to_str_lossy()
                        ));
                    }
                    _ => {}
                }
            }
            Item::IndexWorktree(Worktree::Rewrite { .. }) => {
                return Err("a rename was tracked".into());
            }
        }
    }
    changed_files.sort();
    changed_files.dedup();

    let mut files: Vec<PathBuf> = index
        .entries()
        .iter()
        .map(|e| PathBuf::from(lossy(e.path(&index))))
        .chain(untracked.into_iter().map(PathBuf::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(Snapshot {
        commit,
        tree: WorkingTree {
            root: root.to_path_buf(),
            head_ref,
            dirty: !changed_files.is_empty(),
            changed_files,
        },
        files,
    })
}

/// Commit `id` as `git log -1 --name-only --no-renames --diff-merges=first-parent`
/// describes it: the files it changed against its first parent (all for a root commit).
fn commit(repo: &gix::Repository, id: gix::ObjectId) -> Result<Commit, String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot read commit {id}: {e}");
    let commit = repo.find_commit(id).map_err(|e| failed(&e))?;
    let author = commit.author().map_err(|e| failed(&e))?;
    let author = format!(
        "{} <{}>",
        author.name.to_str_lossy(),
        author.email.to_str_lossy()
    );
    let message = commit
        .message_raw_sloppy()
        .to_str_lossy()
        .trim()
        .to_string();
    let tree = commit.tree().map_err(|e| failed(&e))?;
    let parent = match commit.parent_ids().next() {
        // A missing parent (a shallow clone's boundary) is not read as a root commit
        // here: `git` decides.
        Some(parent) => Some(
            repo.find_commit(parent)
                .and_then(|p| p.tree())
                .map_err(|e| failed(&e))?,
        ),
        None => None,
    };
    let options = gix::diff::Options::default().with_rewrites(None);
    let changes = repo
        .diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(options))
        .map_err(|e| failed(&e))?;
    let mut changed_files: Vec<String> = changes
        .iter()
        .filter(|c| !c.entry_mode().is_tree())
        .map(|c| lossy(c.location()))
        .collect();
    changed_files.sort();
    changed_files.dedup();
    Ok(Commit {
        sha: id.to_string(),
        author,
        message,
        changed_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git;

    /// Runs `script` in `dir` with `sh`, a fixed identity and clock.
    fn sh(dir: &Path, script: &str) {
        let out = std::process::Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Ann Example")
            .env("GIT_AUTHOR_EMAIL", "ann@example.com")
            .env("GIT_COMMITTER_NAME", "Ann Example")
            .env("GIT_COMMITTER_EMAIL", "ann@example.com")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("sh");
        assert!(out.status.success(), "{script}: {out:?}");
    }

    /// What `git` itself says: the three commands the in-process read replaces.
    async fn by_git(root: &Path) -> Snapshot {
        let (commit, tree, files) = tokio::join!(
            git::commit(root, "HEAD"),
            git::working_tree(root),
            git::working_tree_files(root)
        );
        let mut tree = tree.expect("git status");
        tree.changed_files.sort();
        tree.changed_files.dedup();
        let mut files = files.expect("git ls-files");
        files.sort();
        files.dedup();
        Snapshot {
            commit: commit.ok(),
            tree,
            files,
        }
    }

    fn same(case: &str, ours: &Snapshot, git: &Snapshot) {
        assert_eq!(ours.commit, git.commit, "{case}: commit");
        assert_eq!(ours.tree.head_ref, git.tree.head_ref, "{case}: head ref");
        assert_eq!(ours.tree.dirty, git.tree.dirty, "{case}: dirty");
        assert_eq!(
            ours.tree.changed_files, git.tree.changed_files,
            "{case}: changes"
        );
        assert_eq!(ours.files, git.files, "{case}: files");
    }

    const SETUP: &str = "git init -q -b main . && mkdir -p b/c && echo a > a && echo c > b/c/d \
        && printf '*.log\\nbuild/\\n' > .gitignore && git add -A && git commit -qm 'first line\n\nbody'";

    /// Every working-tree state a user runs `ferry run` in reads exactly as `git` reads
    /// it; a test that fails when gitoxide and git disagree on any of them.
    #[tokio::test]
    async fn the_working_tree_reads_as_git_reads_it() {
        let cases: &[(&str, &str)] = &[
            ("clean", SETUP),
            (
                "changed, staged, deleted, untracked, ignored",
                "echo more >> a && echo s > staged && git add staged && rm b/c/d \
                 && mkdir -p new/deep build && echo n > new/deep/file && echo l > x.log \
                 && echo o > build/out",
            ),
            (
                "stat changed, content not",
                "sleep 0.01 && touch a b/c/d && cp a a2 && mv a2 a",
            ),
            (
                "a merge, against its first parent",
                "git checkout -qb side && echo s > side && git add side && git commit -qm side \
                 && git checkout -q main && echo m > mainfile && git add mainfile \
                 && git commit -qm main && git merge -q --no-edit side",
            ),
            (
                "a directory replaced by a file",
                "git rm -rq b && echo b > b && git add b && git commit -qm 'b is a file'",
            ),
            (
                "a directory deleted",
                "git rm -rq b && git commit -qm 'no b'",
            ),
            (
                "mode and symlink",
                "chmod +x a && ln -s a link && git add -A && git commit -qm modes \
                 && chmod -x a && rm link && ln -s b link",
            ),
            ("intent to add", "echo i > intent && git add -N intent"),
            ("detached", "git checkout -q --detach HEAD"),
            (
                "a conflict",
                "git checkout -qb other && echo o > a && git commit -qam o \
                 && git checkout -q main && echo m > a && git commit -qam m \
                 && ! git merge -q other >/dev/null 2>&1",
            ),
            (
                "a data directory that ignores itself",
                "mkdir -p .ferry/logs && echo '*' > .ferry/.gitignore && echo x > .ferry/logs/1",
            ),
        ];
        for (case, script) in cases {
            let tmp = tempfile::tempdir().expect("tmp");
            let root = tmp.path();
            if *case != "clean" {
                sh(root, SETUP);
            }
            sh(root, script);
            let ours = snapshot(root).unwrap_or_else(|why| panic!("{case}: refused: {why}"));
            same(case, &ours, &by_git(root).await);
        }
    }

    /// Before the first commit: no commit, and everything staged is a change.
    #[tokio::test]
    async fn an_unborn_branch_reads_as_git_reads_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        sh(
            root,
            "git init -q -b trunk . && echo a > a && git add a && echo u > u",
        );
        let ours = snapshot(root).expect("read");
        assert_eq!(ours.commit, None);
        assert_eq!(ours.tree.head_ref, "refs/heads/trunk");
        same("unborn", &ours, &by_git(root).await);
    }

    /// What gitoxide might read differently is left to `git`, and `git::snapshot` then
    /// answers as `git` does.
    #[tokio::test]
    async fn what_git_must_read_is_left_to_git() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        sh(root, SETUP);
        sh(
            root,
            "mkdir nested && cd nested && git init -q && echo x > x && git add x && git commit -qm x",
        );
        let why = snapshot(root).expect_err("a nested repository");
        assert!(why.contains("nested"), "{why}");
        let via = git::snapshot(root).await.expect("git");
        same("nested", &via, &by_git(root).await);

        sh(
            root,
            "git -c protocol.file.allow=always submodule add -q ./nested sub >/dev/null 2>&1 \
            || git update-index --add --cacheinfo 160000,$(git -C nested rev-parse HEAD),sub",
        );
        let why = snapshot(root).expect_err("a submodule");
        assert!(why.contains("submodule"), "{why}");

        let shallow = tmp.path().join("shallow");
        sh(
            root,
            "echo two >> a && git commit -qam two && git clone -q --depth 1 \"file://$PWD\" shallow",
        );
        assert!(
            snapshot(&shallow).is_err(),
            "a shallow clone's boundary commit"
        );
        let via = git::snapshot(&shallow).await.expect("git");
        same("shallow", &via, &by_git(&shallow).await);
    }
}
