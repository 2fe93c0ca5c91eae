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
