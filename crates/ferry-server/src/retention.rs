//! Run retention (`ferry serve --keep-runs N`, `--keep-days D`): finished runs beyond a
//! repository's newest N, or older than D days, are deleted with their logs and
//! artifacts, at start and every minute; a run a release was sealed from is kept (the
//! release names it). Web sessions that ended a day ago or more are swept at the same
//! pace.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AppState;

/// How often the policy is applied (and ended sessions swept).
const EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn retain(state: AppState, stop: CancellationToken) {
    let (keep, keep_for) = (state.config.keep_runs, state.config.keep_for);
    loop {
        if keep.is_some() || keep_for.is_some() {
            match prune(&state, keep, keep_for).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("retention: deleted {n} old run(s)"),
                Err(e) => tracing::warn!("retention: {e}"),
            }
        }
        // Web sessions that ended a day ago or more serve nobody.
        if let Err(e) = state
            .store
            .sweep_sessions(ferry_store::now_ms() - 86_400_000)
            .await
        {
            tracing::warn!("retention: sessions: {e}");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// The runs this server is executing or sealing a release from: a run is recorded as
/// finished before its release is sealed from its artifacts, and must not be deleted in
/// between (by another run's end applying a small `--keep-runs`, or the periodic pass).
#[derive(Debug, Clone, Default)]
pub(crate) struct Finishing(Arc<Mutex<HashSet<String>>>);

impl Finishing {
    /// Holds `run` until the guard goes.
    pub(crate) fn hold(&self, run: &str) -> Held {
        if let Ok(mut runs) = self.0.lock() {
            runs.insert(run.to_string());
        }
        Held(self.clone(), run.to_string())
    }

    fn holds(&self, run: &str) -> bool {
        self.0.lock().is_ok_and(|runs| runs.contains(run))
    }
}

/// See [`Finishing::hold`].
pub(crate) struct Held(Finishing, String);

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut runs) = (self.0).0.lock() {
            runs.remove(&self.1);
        }
    }
}

/// Deletes what the policy says may go; how many runs.
pub(crate) async fn prune(
    state: &AppState,
    keep: Option<usize>,
    keep_for: Option<Duration>,
) -> Result<usize, ferry_store::Error> {
    let before = keep_for.map(|d| {
        let now = chrono::Utc::now().timestamp_millis();
        now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(now)
    });
    let mut deleted = 0;
    for id in state.store.prunable_runs(keep, before).await? {
        if state.finishing.holds(&id) || !state.store.delete_run(&id).await? {
            continue;
        }
        // The record goes first: nothing points at files that are gone.
        let data = &state.config.data_dir;
        for dir in [
            data.join("logs").join(&id),
            data.join("artifacts").join(&id),
        ] {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_held_until_its_guard_goes() {
        let finishing = Finishing::default();
        let held = finishing.hold("r1");
        let also = finishing.clone().hold("r2");
        assert!(finishing.holds("r1") && finishing.holds("r2"));
        drop(held);
        assert!(!finishing.holds("r1"));
        assert!(finishing.holds("r2"));
        drop(also);
        assert!(!finishing.holds("r2"));
    }
}
