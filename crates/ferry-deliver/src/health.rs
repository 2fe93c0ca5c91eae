//! The health watch: once a release is live, its environment's probes (`deploy.verify`)
//! keep running every `watch.interval`, with one look at the workload (is the process or
//! the container running). A check passes when the workload runs and every probe
//! passes. The environment is
//!
//! - `healthy` while the last check passed,
//! - `degraded` once a check failed, fewer than `watch.failures` times in a row,
//! - `down` after `watch.failures` failed checks in a row,
//!
//! and each change is recorded (`ferry status ENV` shows the history) and told to
//! listeners. Going `down` with `on_unhealthy: rollback` deploys the release that was
//! live before. While a deployment of the environment is under way the watch pauses (the
//! workload is being replaced); it ends when another release goes live or nothing is
//! live any more.

use std::sync::Arc;
use std::time::Duration;

use ferry_store::{Deployment, Health};

use crate::target::Target;
use crate::verify::Probe;

/// The state after `failed_in_a_row` failed checks (0: the last one passed), when
/// `limit` in a row make the environment `down`.
pub fn judge(failed_in_a_row: u32, limit: u32) -> Health {
    match failed_in_a_row {
        0 => Health::Healthy,
        n if n >= limit.max(1) => Health::Down,
        _ => Health::Degraded,
    }
}

/// When a watch of `interval` checks first: the next multiple of `interval` since the
/// process's first watch, at least one interval away. Watches of one interval check
/// together, so that the server wakes once per beat for all of them rather than once
/// for each (50 environments at 1 s: one wake-up a second, not fifty).
pub fn next_beat(interval: Duration) -> tokio::time::Instant {
    static ANCHOR: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let anchor = *ANCHOR.get_or_init(tokio::time::Instant::now);
    let now = tokio::time::Instant::now();
    let every = interval.as_nanos().max(1);
    let since = now.saturating_duration_since(anchor).as_nanos();
    let beats = since / every + 2; // the next beat but one: a full interval at least
    let at = u64::try_from(beats * every).unwrap_or(u64::MAX);
    anchor + Duration::from_nanos(at)
}

/// What one watch looks at: the live deployment, its resolved probes and its target.
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub struct Watched {
    pub deployment: Deployment,
    pub release: String,
    #[educe(Debug(ignore))]
    pub probes: Vec<Probe>,
    #[educe(Debug(ignore))]
    pub target: Arc<dyn Target>,
    pub interval: Duration,
    pub failures: u32,
    pub rollback: bool,
}

impl Watched {
    /// One check: the workload runs and every probe passes (all at once), or what
    /// failed.
    pub async fn check(&self, http: &reqwest::Client) -> Result<(), String> {
        if let Some(why) = self.target.alive(&self.deployment, &self.release).await {
            return Err(why);
        }
        let results =
            futures_util::future::join_all(self.probes.iter().map(|p| p.check(http))).await;
        let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// An HTTP client for probes: no proxy, the system's roots plus `ca`.
pub fn client(ca: &[reqwest::Certificate]) -> Result<reqwest::Client, String> {
    ca.iter()
        .fold(reqwest::Client::builder().no_proxy(), |b, c| {
            b.add_root_certificate(c.clone())
        })
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watches_of_one_interval_beat_together() {
        let every = Duration::from_millis(100);
        let first = next_beat(every);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let asked = tokio::time::Instant::now();
        let later = next_beat(every);
        // On the same beats, and a full interval away at least from when it asked.
        assert_eq!((later - first).as_nanos() % every.as_nanos(), 0);
        assert!(later >= asked + every);
        assert!(later <= asked + 2 * every);
    }

    #[test]
    fn states_follow_failures_in_a_row() {
        let table = [
            (0, 3, Health::Healthy),
            (1, 3, Health::Degraded),
            (2, 3, Health::Degraded),
            (3, 3, Health::Down),
            (9, 3, Health::Down),
            (0, 1, Health::Healthy),
            (1, 1, Health::Down),
            // A limit of 0 is read as 1: one failure is down.
            (1, 0, Health::Down),
        ];
        for (n, limit, want) in table {
            assert_eq!(judge(n, limit), want, "{n} failed of {limit}");
        }
    }
}
