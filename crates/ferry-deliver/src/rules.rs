//! Where a repository's delivery rules come from.
//!
//! What may be released (`release:`'s `branches` and `tags`) and how a release moves
//! through the environments (which environments there are, `after:`, `auto:`, manual or
//! `approval:`, `freeze:`) are read from the head of the repository's **default
//! branch** in the server's mirror, each time they are applied — never from the commit
//! being released, whose author could otherwise write a branch that releases itself
//! and walks into production. The release's own configuration still says what is
//! deployed and how (`deploy:`: target, verification, what a failure does), within what
//! the server allows (host mounts: [`crate::target::mounts`]).

use std::path::Path;

use ferry_config::delivery::Delivery;
use ferry_store::Repository;

/// The branch whose head holds a repository's rules (`main` when none is set).
pub fn default_branch(repo: &Repository) -> &str {
    repo.default_branch.as_deref().unwrap_or("main")
}

/// The delivery rules in `.ferry.yml` at the head of `branch` in the bare repository
/// `mirror`. A branch without the file has no rules (nothing is released, there are
/// no environments); a mirror or branch that cannot be read, or a file that does not
/// load, is an error saying so.
pub async fn read(mirror: &Path, branch: &str) -> Result<Delivery, String> {
    if !mirror.join("HEAD").is_file() {
        return Err("the server has no copy of the repository yet".into());
    }
    let full = format!("refs/heads/{branch}");
    let head = match ferry_source::git::read_ref(mirror, &full) {
        Some(head) => head,
        None => {
            ferry_source::git::resolve(mirror, &full)
                .await
                .map_err(|e| format!("the default branch `{branch}` cannot be read: {e}"))?
                .0
        }
    };
    // The rules of a commit never change: read (and loaded) once per head.
    let key = (mirror.to_path_buf(), head.clone());
    if let Some(rules) = KNOWN.lock().ok().and_then(|k| k.get(&key).cloned()) {
        return Ok(rules);
    }
    let rules = read_at(mirror, branch, &head).await?;
    if let Ok(mut known) = KNOWN.lock() {
        if known.len() >= 1024 {
            known.clear();
        }
        known.insert(key, rules.clone());
    }
    Ok(rules)
}

/// The rules each mirror's default branch held at a head, as read.
static KNOWN: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(std::path::PathBuf, String), Delivery>>,
> = std::sync::LazyLock::new(Default::default);

/// The rules in `.ferry.yml` of commit `head` (the head of `branch`).
async fn read_at(mirror: &Path, branch: &str, head: &str) -> Result<Delivery, String> {
    let Some(source) = ferry_source::git::show_file(mirror, head, ferry_config::FILE_NAME)
        .await
        .map_err(|e| {
            format!(
                "`{branch}`'s {} cannot be read: {e}",
                ferry_config::FILE_NAME
            )
        })?
    else {
        return Ok(Delivery::default());
    };
    let file = format!("{} on {branch}", ferry_config::FILE_NAME);
    let source = String::from_utf8(source).map_err(|_| format!("{file} is not UTF-8"))?;
    ferry_config::load(&source)
        .map(|loaded| loaded.pipeline.delivery)
        .map_err(|d| {
            format!(
                "{file} does not load:\n{}",
                ferry_config::render_all(&d, &file, &source, false)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_testkit::git;

    /// A whole pipeline whose release and environments are `rules`.
    fn pipeline(rules: &str) -> String {
        format!(
            "jobs: {{ build: {{ run: 'true', artifacts: [out] }} }}\ndeploy: {{ target: {{ script: {{ run: 'true' }} }} }}\n{rules}"
        )
    }

    #[tokio::test]
    async fn rules_are_read_from_the_default_branchs_head() {
        let tmp = tempfile::tempdir().expect("tmp");
        let strict = pipeline(
            "release: { artifacts: [build] }\nenvironments:\n  production: { approval: { required: 2 } }\n",
        );
        let strict = strict.as_str();
        let bare = ferry_testkit::bare_repository(tmp.path(), "app", Some(strict));
        // A branch that would let itself in.
        let work = tmp.path().join("app-work");
        git(&work, &["checkout", "-q", "-b", "sneaky"]);
        std::fs::write(
            work.join(".ferry.yml"),
            pipeline(
                "release: { branches: ['**'], artifacts: [build] }\nenvironments:\n  production: { auto: true }\n",
            ),
        )
        .expect("write");
        git(&work, &["commit", "-qam", "let me in"]);
        git(
            &work,
            &["push", "-q", &bare.display().to_string(), "sneaky"],
        );

        let rules = read(&bare, "main").await.expect("rules");
        assert_eq!(rules.release.as_ref().expect("release").branches, None);
        let production = rules.environment("production").expect("production");
        assert!(matches!(
            production.policy,
            ferry_config::delivery::Policy::Approval(_)
        ));
        let sneaky = read(&bare, "sneaky").await.expect("rules").release;
        assert_eq!(sneaky.expect("release").branches, Some(vec!["**".into()]));
    }

    #[tokio::test]
    async fn a_new_head_is_read_again_loose_or_packed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let one = pipeline("release: { artifacts: [build] }\nenvironments:\n  a: { auto: true }\n");
        let bare = ferry_testkit::bare_repository(tmp.path(), "app", Some(&one));
        let names = |d: &Delivery| {
            d.environments
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&read(&bare, "main").await.expect("rules")), ["a"]);
        // The refs packed: the head is found there.
        git(&bare, &["pack-refs", "--all"]);
        assert!(!bare.join("refs/heads/main").exists());
        assert_eq!(names(&read(&bare, "main").await.expect("rules")), ["a"]);
        // A new head: new rules, not the remembered ones.
        let work = tmp.path().join("app-work");
        std::fs::write(
            work.join(".ferry.yml"),
            pipeline("release: { artifacts: [build] }\nenvironments:\n  b: { auto: true }\n"),
        )
        .expect("write");
        git(&work, &["commit", "-qam", "b"]);
        git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
        assert_eq!(names(&read(&bare, "main").await.expect("rules")), ["b"]);
        let head = git(&bare, &["rev-parse", "refs/heads/main"]);
        assert_eq!(
            ferry_source::git::read_ref(&bare, "refs/heads/main").as_deref(),
            Some(head.trim())
        );
        assert_eq!(
            ferry_source::git::read_ref(&bare, "refs/heads/../../x"),
            None
        );
    }

    #[tokio::test]
    async fn what_cannot_be_read_says_why() {
        let tmp = tempfile::tempdir().expect("tmp");
        let none = read(&tmp.path().join("nothing.git"), "main").await;
        assert_eq!(
            none.expect_err("no mirror"),
            "the server has no copy of the repository yet"
        );
        let bare = ferry_testkit::bare_repository(tmp.path(), "app", Some("environments: [\n"));
        let broken = read(&bare, "main").await.expect_err("broken");
        assert!(
            broken.starts_with(".ferry.yml on main does not load:\n"),
            "{broken}"
        );
        assert!(broken.contains(".ferry.yml on main:2:1: error"), "{broken}");
        let missing = read(&bare, "trunk").await.expect_err("no trunk");
        assert!(
            missing.starts_with("the default branch `trunk` cannot be read"),
            "{missing}"
        );
        let empty = ferry_testkit::bare_repository(tmp.path(), "empty", None);
        assert_eq!(read(&empty, "main").await, Ok(Delivery::default()));
    }
}
