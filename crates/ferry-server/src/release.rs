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
        let default_branch = repo.default_branch.clone().unwrap_or_else(|| "main".into());
        let releasable = plan.delivery.release.as_ref().is_some_and(|spec| {
            ferry_deliver::seal::releasable(spec, plan, &default_branch).is_ok()
        });
        if releasable && let Some(why) = not_the_head(state, &repo, &run, plan).await? {
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
        let sealed =
            ferry_deliver::seal::seal(&state.store, &state.cas(), &run, plan, &default_branch)
                .await;
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
