//! Sealing a release when a run succeeds on a releasable event: the files of the jobs
//! `release.artifacts` names go into the content-addressed store, the digests of the
//! images `release.images` names are taken from what the run pushed, and one release
//! row records them with the commit and how it was made.

use std::path::Path;

use ferry_config::delivery::{Delivery, ReleaseSpec};
use ferry_plan::{EventKind, Plan};
use ferry_store::{NewRelease, Release, ReleaseArtifact, ReleaseImage, Run, Status, Store};
use sha2::{Digest, Sha256};

use crate::cas::Cas;

/// Why a run seals no release under the release rules `spec`, or `Ok` when it does.
pub fn releasable(spec: &ReleaseSpec, plan: &Plan, default_branch: &str) -> Result<(), String> {
    if !plan.trust.is_trusted() {
        return Err(format!(
            "an untrusted run makes no release ({})",
            plan.trust.reason
        ));
    }
    let event = &plan.event;
    match event.kind {
        EventKind::Tag => {
            let tag = event.tag.as_deref().unwrap_or("");
            match &spec.tags {
                None => Ok(()),
                Some(globs) if matches_any(globs, tag) => Ok(()),
                Some(_) => Err(format!("tag `{tag}` is not in `release.tags`")),
            }
        }
        EventKind::Push | EventKind::Manual | EventKind::Api => {
            let branch = event.branch.as_deref().unwrap_or("");
            match &spec.branches {
                None if branch == default_branch => Ok(()),
                None => Err(format!(
                    "`{branch}` is not the default branch `{default_branch}` (set `release.branches`)"
                )),
                Some(globs) if matches_any(globs, branch) => Ok(()),
                Some(_) => Err(format!("branch `{branch}` is not in `release.branches`")),
            }
        }
        EventKind::PullRequest | EventKind::Schedule => {
            Err(format!("{} runs do not make releases", event.kind.as_str()))
        }
    }
}

fn matches_any(globs: &[String], value: &str) -> bool {
    globs.iter().any(|g| {
        globset::Glob::new(g)
            .map(|g| g.compile_matcher().is_match(value))
            .unwrap_or(false)
    })
}

/// The release's name: the tag where there is one, else `r<run number>-<short sha>`.
pub fn release_name(run: &Run) -> String {
    match &run.tag {
        Some(tag) => tag.clone(),
        None => format!(
            "r{}-{}",
            run.number,
            &run.commit_sha[..run.commit_sha.len().min(7)]
        ),
    }
}

/// Why `run` of `plan` seals no release, or the `release:` of its own pipeline (what
/// goes in the release) when it does. Whether it may be released at all is decided by
/// `rules`, the repository's rules from its default branch (see [`crate::rules`]),
/// never by the run's own commit.
pub fn sealable<'a>(
    run: &Run,
    plan: &'a Plan,
    rules: &Delivery,
    default_branch: &str,
) -> Result<&'a ReleaseSpec, String> {
    let Some(spec) = &plan.delivery.release else {
        return Err("the pipeline has no `release:`".into());
    };
    if run.status != Status::Success {
        return Err(format!("the run {}", run.status.as_str()));
    }
    if run.dirty {
        return Err("the run was of uncommitted changes".into());
    }
    let Some(allowed) = &rules.release else {
        return Err(format!(
            "the default branch `{default_branch}`'s {} has no `release:`",
            ferry_config::FILE_NAME
        ));
    };
    releasable(allowed, plan, default_branch)?;
    Ok(spec)
}

/// Seals the release of `run` (which succeeded) when [`sealable`] says it may; the
/// Terraform code of its environments (`infra.dir`) is read from `mirror`, the
/// repository's mirror, at the run's commit.
/// `Ok(Err(why))`: not releasable (with the reason logged by the caller).
pub async fn seal(
    store: &Store,
    cas: &Cas,
    mirror: &Path,
    run: &Run,
    plan: &Plan,
    rules: &Delivery,
    default_branch: &str,
) -> Result<Result<Release, String>, String> {
    let spec = match sealable(run, plan, rules, default_branch) {
        Ok(spec) => spec,
        Err(why) => return Ok(Err(why)),
    };
    let stored_plan = store.run_plan(&run.id).await.map_err(|e| e.to_string())?;
    let plan_hash = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(stored_plan.as_bytes()))
    );
    // Artifacts: every plan job of each named job (a matrix makes several; their files
    // then go under the plan job's name).
    let mut jobs = Vec::new();
    for name in &spec.artifacts {
        let expanded: Vec<(usize, &ferry_plan::PlanJob)> = plan
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.base == name.value)
            .collect();
        let several = expanded.len() > 1;
        for (position, job) in expanded {
            let dir = ferry_engine::artifact_dir(store.data_dir(), &run.id, position, &job.name);
            let prefix = several.then(|| job.name.clone());
            jobs.push((job.name.clone(), dir, prefix));
        }
    }
    let cas2 = cas.clone();
    let mut artifacts = tokio::task::spawn_blocking(move || collect(&cas2, &jobs))
        .await
        .map_err(|e| e.to_string())??;
    artifacts.extend(infra_files(cas, mirror, &run.commit_sha, &plan.delivery).await?);
    artifacts.extend(swarm_files(cas, mirror, &run.commit_sha, &plan.delivery).await?);
    let built = store.images(&run.id).await.map_err(|e| e.to_string())?;
    let names = store.jobs(&run.id).await.map_err(|e| e.to_string())?;
    let mut images = Vec::new();
    for name in &spec.images {
        for job in plan.jobs.iter().filter(|j| j.base == name.value) {
            let job_id = names
                .iter()
                .find(|j| j.name == job.name)
                .map(|j| j.id.clone());
            let image = built
                .iter()
                .rev()
                .find(|i| Some(&i.job_id) == job_id.as_ref())
                .ok_or_else(|| format!("job `{}` pushed no image", job.name))?;
            let digest = image.digest.clone().ok_or_else(|| {
                format!(
                    "job `{}` built its image without pushing it (`push: false`)",
                    job.name
                )
            })?;
            images.push(ReleaseImage {
                job: job.name.clone(),
                name: image.name.clone(),
                digest,
            });
        }
    }
    let new = NewRelease {
        repository_id: run.repository_id.clone(),
        name: release_name(run),
        run_id: run.id.clone(),
        run_number: run.number,
        commit_sha: run.commit_sha.clone(),
        git_ref: run.git_ref.clone(),
        tag: run.tag.clone(),
        author: run.author.clone(),
        triggered_by: run.triggered_by.clone(),
        plan_hash,
        ferry_version: env!("CARGO_PKG_VERSION").to_string(),
        delivery: serde_json::to_string(&plan.delivery).map_err(|e| e.to_string())?,
        artifacts,
        images,
    };
    match store.create_release(&new).await {
        Ok(r) => Ok(Ok(r)),
        Err(ferry_store::Error::Conflict(what)) => Ok(Err(format!("{what} already exists"))),
        Err(e) => Err(e.to_string()),
    }
}

/// The Terraform code of every environment with `infra:` (each directory once), read
/// at `sha` and stored under [`crate::infra::SEALED_UNDER`].
async fn infra_files(
    cas: &Cas,
    mirror: &Path,
    sha: &str,
    delivery: &Delivery,
) -> Result<Vec<ReleaseArtifact>, String> {
    let mut dirs: Vec<&str> = delivery
        .environments
        .iter()
        .filter_map(|e| e.infra.as_ref())
        .map(|i| i.dir.value.as_str())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut out = Vec::new();
    for dir in dirs {
        let short = &sha[..sha.len().min(12)];
        let files = ferry_source::git::files_under(mirror, sha, dir)
            .await
            .map_err(|e| format!("cannot read `infra.dir` {dir} at commit {short}: {e}"))?
            .ok_or_else(|| format!("`infra.dir` {dir} is not a directory at commit {short}"))?;
        let prefix = dir.trim_matches('/');
        for f in files {
            let rel = f.path.strip_prefix(prefix).unwrap_or(&f.path);
            let path = format!(
                "{}/{}",
                crate::infra::sealed_path(dir),
                rel.trim_start_matches('/')
            );
            let (digest, size) = cas
                .put_bytes(&f.content)
                .map_err(|e| format!("cannot store {path}: {e}"))?;
            out.push(ReleaseArtifact {
                job: crate::infra::SEALED_JOB.to_string(),
                path,
                digest,
                size: size as i64,
                mode: i64::from(f.mode),
            });
        }
    }
    Ok(out)
}

/// The compose file of every `swarm` target, and the files its configs and secrets
/// name, read at `sha` and stored under [`crate::target::swarm::SEALED_UNDER`].
async fn swarm_files(
    cas: &Cas,
    mirror: &Path,
    sha: &str,
    delivery: &Delivery,
) -> Result<Vec<ReleaseArtifact>, String> {
    let mut composes: Vec<&str> = delivery
        .deploy
        .iter()
        .chain(
            delivery
                .environments
                .iter()
                .filter_map(|e| e.deploy.as_ref()),
        )
        .filter_map(|d| match &d.target {
            ferry_config::delivery::Target::Swarm { compose, .. } => Some(compose.as_str()),
            _ => None,
        })
        .collect();
    composes.sort();
    composes.dedup();
    let short = &sha[..sha.len().min(12)];
    let mut paths: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for compose in composes {
        let compose = compose.trim_start_matches("./");
        let content = ferry_source::git::show_file(mirror, sha, compose)
            .await
            .map_err(|e| format!("cannot read the compose file {compose} at commit {short}: {e}"))?
            .ok_or_else(|| {
                format!("the compose file {compose} is not in the repository at commit {short}")
            })?;
        let dir = std::path::Path::new(compose)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = vec![(compose.to_string(), content.clone())];
        for f in ferry_config::compose::files_of(&String::from_utf8_lossy(&content)) {
            let path = if dir.is_empty() {
                f
            } else {
                format!("{dir}/{f}")
            };
            let content = ferry_source::git::show_file(mirror, sha, &path)
                .await
                .map_err(|e| format!("cannot read {path} at commit {short}: {e}"))?
                .ok_or_else(|| {
                    format!("{path}, which the compose file {compose} names, is not in the repository at commit {short}")
                })?;
            files.push((path, content));
        }
        for (path, content) in files {
            if paths.contains(&path) {
                continue;
            }
            let sealed = crate::target::swarm::sealed_path(&path);
            let (digest, size) = cas
                .put_bytes(&content)
                .map_err(|e| format!("cannot store {sealed}: {e}"))?;
            out.push(ReleaseArtifact {
                job: crate::target::swarm::SEALED_JOB.to_string(),
                path: sealed,
                digest,
                size: size as i64,
                mode: 0o644,
            });
            paths.push(path);
        }
    }
    Ok(out)
}

/// Stores every file of the jobs' artifact directories; symlinks are kept out (a
/// release holds files only).
fn collect(
    cas: &Cas,
    jobs: &[(String, std::path::PathBuf, Option<String>)],
) -> Result<Vec<ReleaseArtifact>, String> {
    let mut out: Vec<ReleaseArtifact> = Vec::new();
    for (job, dir, prefix) in jobs {
        if !dir.is_dir() {
            continue;
        }
        for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(|e| format!("cannot read the artifacts of `{job}`: {e}"))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let path = match prefix {
                Some(p) => Path::new(p).join(rel),
                None => rel.to_path_buf(),
            }
            .to_string_lossy()
            .into_owned();
            if let Some(other) = out.iter().find(|a| a.path == path) {
                return Err(format!(
                    "jobs `{}` and `{job}` both keep `{path}`; a release holds one file per path",
                    other.job
                ));
            }
            let (digest, size) = cas
                .put_file(entry.path())
                .map_err(|e| format!("cannot store {path}: {e}"))?;
            use std::os::unix::fs::PermissionsExt;
            let mode = entry
                .metadata()
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o644);
            out.push(ReleaseArtifact {
                job: job.clone(),
                path,
                digest,
                size: size as i64,
                mode: mode as i64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_plan::Event;

    fn plan(kind: EventKind, branch: Option<&str>, tag: Option<&str>) -> Plan {
        Plan {
            version: 1,
            event: Event {
                kind,
                branch: branch.map(str::to_string),
                tag: tag.map(str::to_string),
                git_ref: String::new(),
                sha: "0123456789".into(),
                author: String::new(),
                message: String::new(),
                changed_files: None,
                pull_request: None,
            },
            env: Vec::new(),
            not_triggered: None,
            concurrency: None,
            jobs: Vec::new(),
            delivery: Default::default(),
            trust: Default::default(),
        }
    }

    fn spec(branches: Option<&[&str]>, tags: Option<&[&str]>) -> ReleaseSpec {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ReleaseSpec {
            branches: branches.map(owned),
            tags: tags.map(owned),
            artifacts: Vec::new(),
            images: Vec::new(),
        }
    }

    #[test]
    fn which_events_are_releasable() {
        let default = spec(None, None);
        let push = |b| plan(EventKind::Push, Some(b), None);
        let mut untrusted = push("main");
        untrusted.trust = ferry_plan::Trust::untrusted("pull request #5 from a fork");
        let any = spec(Some(&["**"]), Some(&["**"]));
        assert_eq!(
            releasable(&any, &untrusted, "main"),
            Err("an untrusted run makes no release (pull request #5 from a fork)".into())
        );
        assert!(releasable(&default, &push("main"), "main").is_ok());
        assert_eq!(
            releasable(&default, &push("feature"), "main"),
            Err("`feature` is not the default branch `main` (set `release.branches`)".into())
        );
        assert!(releasable(&default, &plan(EventKind::Tag, None, Some("v1")), "main").is_ok());
        assert!(
            releasable(
                &default,
                &plan(EventKind::Manual, Some("main"), None),
                "main"
            )
            .is_ok()
        );
        assert!(
            releasable(
                &default,
                &plan(EventKind::Schedule, Some("main"), None),
                "main"
            )
            .is_err()
        );
        assert!(
            releasable(
                &default,
                &plan(EventKind::PullRequest, Some("main"), None),
                "main"
            )
            .is_err()
        );
        let custom = spec(Some(&["release/*"]), Some(&["v*"]));
        assert!(releasable(&custom, &push("release/2.0"), "main").is_ok());
        assert!(releasable(&custom, &push("main"), "main").is_err());
        assert!(
            releasable(
                &custom,
                &plan(EventKind::Tag, None, Some("nightly")),
                "main"
            )
            .is_err()
        );
    }
}
