//! The server's side of delivery: sealing a release when a run succeeds, and handing it
//! to the deliverer.

use ferry_deliver::cas::Cas;
use ferry_plan::Plan;

use crate::AppState;

impl AppState {
    /// The content-addressed store of release files.
    pub fn cas(&self) -> Cas {
        Cas::new(self.config.data_dir.join("cas"))
    }
}

/// After a successful run: seal its release when the run is releasable.
pub(crate) async fn after_success(state: &AppState, run_id: &str, plan: &Plan) {
    let result = async {
        let run = state
            .store
            .run_by_id(run_id)
            .await
            .map_err(|e| e.to_string())?;
        let repo = state
            .store
            .repository(&run.repository_id)
            .await
            .map_err(|e| e.to_string())?;
        let default_branch = ferry_deliver::rules::default_branch(&repo).to_string();
        // What may be released is the default branch's to say, as of now.
        let rules = if plan.delivery.release.is_some() {
            let _reading = state.read_mirror(&repo.id).await?;
            ferry_deliver::rules::read(&state.mirror_path(&repo.id), &default_branch)
                .await
                .map_err(|e| format!("the release rules cannot be read: {e}"))
        } else {
            Ok(Default::default())
        };
        let not_sealed = match &rules {
            Err(e) => Some(e.clone()),
            Ok(rules) => match ferry_deliver::seal::sealable(&run, plan, rules, &default_branch) {
                Ok(_) => not_the_head(state, &repo, &run, plan).await?,
                Err(_) => None, // said below, as every run that makes no release
            },
        };
        if let Some(why) = not_sealed {
            tracing::info!("run {} seals no release: {why}", run.number);
            state
                .store
                .audit(
                    Some(&run.repository_id),
                    "ferry",
                    "release.not_sealed",
                    &format!("run {}", run.number),
                    Some(&why),
                )
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        let rules = rules?;
        let _reading = state.read_mirror(&repo.id).await?;
        let sealed = ferry_deliver::seal::seal(
            &state.store,
            &state.cas(),
            &state.mirror_path(&repo.id),
            &run,
            plan,
            &rules,
            &default_branch,
        )
        .await;
        drop(_reading);
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                // Recorded where people look: the audit log of the repository.
                let _ = state
                    .store
                    .audit(
                        Some(&run.repository_id),
                        "ferry",
                        "release.seal_failed",
                        &format!("run {}", run.number),
                        Some(&e),
                    )
                    .await;
                return Err(e);
            }
        };
        match sealed {
            Ok(release) => {
                tracing::info!("run {} sealed release {}", run.number, release.name);
                let detail = format!(
                    "commit {}, {} artifact(s), {} image(s)",
                    release.commit_sha,
                    release.artifacts.len(),
                    release.images.len()
                );
                state
                    .store
                    .audit(
                        Some(&run.repository_id),
                        "ferry",
                        "release.seal",
                        &release.name,
                        Some(&detail),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                state
                    .deliverer
                    .on_release(&release)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(why) => tracing::info!("run {} seals no release: {why}", run.number),
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!("sealing the release of run {run_id} failed: {e}");
    }
}

/// Why a push's run seals no release although it succeeded: its commit is no longer its
/// branch's head after a fetch (a newer push releases instead, and a replayed delivery
/// of an old push releases nothing). `None` for a run that may seal (not a push, or the
/// head); `Err` when the remote cannot be read (nothing is sealed then either).
async fn not_the_head(
    state: &AppState,
    repo: &ferry_store::Repository,
    run: &ferry_store::Run,
    plan: &Plan,
) -> Result<Option<String>, String> {
    let (ferry_plan::EventKind::Push, Some(branch)) = (plan.event.kind, &plan.event.branch) else {
        return Ok(None);
    };
    let mirror = state
        .sync_mirror(repo)
        .await
        .map_err(|e| format!("cannot fetch to check the branch's head: {e}"))?;
    let _reading = state.read_mirror(&repo.id).await?;
    let full = format!("refs/heads/{branch}");
    Ok(match ferry_source::git::resolve(&mirror, &full).await {
        Ok((head, _)) if head == run.commit_sha => None,
        Ok((head, _)) => Some(format!(
            "commit {} is no longer the head of {branch} ({} is, after a fetch)",
            &run.commit_sha[..run.commit_sha.len().min(12)],
            &head[..head.len().min(12)]
        )),
        Err(_) => Some(format!("the branch {branch} no longer exists")),
    })
}
