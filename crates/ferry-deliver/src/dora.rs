//! DORA's four keys, computed from what the store records (pure: the facts in, the
//! figures out; the definitions are in docs/delivery.md, "DORA's four keys").
//!
//! Over a window `[since, until)` of one environment (or several, each counted on its
//! own and summed):
//!
//! - **Deployment frequency**: changes (deployments that are not rollbacks) that went
//!   live in the window.
//! - **Lead time for changes**: for every commit a change brought (in its release and
//!   not in the release live before it in that environment), from the commit's time to
//!   the change going live; median and 90th percentile.
//! - **Change failure rate**: of the changes that ended in the window (went live, or
//!   failed before going live), the share that failed: failed before going live, or went
//!   live and then went `down` or was rolled back.
//! - **Time to restore**: for every incident that began in the window — a change that
//!   failed, or the environment going `down` — the time until the environment was
//!   healthy again: a later release going live (a rollback, a fix) or the health watch
//!   seeing it `healthy`. Median; incidents not restored by `until` are counted apart.

use ferry_store::{DeploymentKind, DeploymentStatus, Health};
use serde::{Deserialize, Serialize};

/// One deployment, as DORA looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFact {
    pub id: String,
    pub environment: String,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    /// When it ended (went live, or failed), ms.
    pub finished_at: Option<i64>,
    /// When it went live (none: it never did).
    pub live_at: Option<i64>,
    /// The times (ms) of the commits it brought.
    pub commit_times: Vec<i64>,
}

/// One change of an environment's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFact {
    pub environment: String,
    pub deployment_id: String,
    pub to: Health,
    pub at: i64,
}

/// Median and 90th percentile of durations, in seconds, and how many there were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Spread {
    pub count: usize,
    pub median_seconds: f64,
    pub p90_seconds: f64,
}

impl Spread {
    /// `None` for no durations; nearest-rank percentiles otherwise.
    pub fn of(mut ms: Vec<i64>) -> Option<Spread> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_unstable();
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2] as f64
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) as f64 / 2.0
        };
        let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
        Some(Spread {
            count: n,
            median_seconds: median / 1000.0,
            p90_seconds: ms[rank - 1] as f64 / 1000.0,
        })
    }
}

/// The four keys of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Dora {
    pub since: i64,
    pub until: i64,
    /// Changes that went live in the window.
    pub deployments: usize,
    /// `deployments` per day of the window.
    pub deployments_per_day: f64,
    /// Commit → live, over every commit the changes brought.
    pub lead_time: Option<Spread>,
    /// Changes that ended in the window (went live or failed before).
    pub changes: usize,
    /// Of those, the ones that failed (before or after going live).
    pub failed_changes: usize,
    /// `failed_changes / changes` (none: no change ended).
    pub change_failure_rate: Option<f64>,
    /// Failure or down → healthy again, over the incidents restored.
    pub time_to_restore: Option<Spread>,
    /// Incidents of the window not restored by its end.
    pub open_incidents: usize,
}

/// The four keys of `[since, until)` from the deployments and health changes of the
/// environments looked at (facts outside the window are used only to see an incident
/// end).
pub fn compute(
    deployments: &[DeploymentFact],
    health: &[HealthFact],
    since: i64,
    until: i64,
) -> Dora {
    let inside = |t: i64| t >= since && t < until;
    let changes: Vec<&DeploymentFact> = deployments
        .iter()
        .filter(|d| d.kind != DeploymentKind::Rollback)
        .collect();
    let went_live: Vec<&&DeploymentFact> = changes
        .iter()
        .filter(|d| d.live_at.is_some_and(inside))
        .collect();
    let lead: Vec<i64> = went_live
        .iter()
        .flat_map(|d| {
            let live = d.live_at.unwrap_or_default();
            d.commit_times.iter().map(move |c| (live - c).max(0))
        })
        .collect();
    let went_down = |d: &DeploymentFact| {
        health
            .iter()
            .any(|h| h.deployment_id == d.id && h.to == Health::Down)
    };
    let failed_before_live = |d: &DeploymentFact| {
        d.live_at.is_none()
            && matches!(
                d.status,
                DeploymentStatus::Failed | DeploymentStatus::RolledBack
            )
    };
    let ended: Vec<&&DeploymentFact> = changes
        .iter()
        .filter(|d| {
            d.live_at.is_some_and(inside)
                || (failed_before_live(d) && d.finished_at.is_some_and(inside))
        })
        .collect();
    let failed = ended
        .iter()
        .filter(|d| {
            failed_before_live(d) || d.status == DeploymentStatus::RolledBack || went_down(d)
        })
        .count();
    // Incidents: (environment, began).
    let mut incidents: Vec<(&str, i64)> = changes
        .iter()
        .filter(|d| failed_before_live(d))
        .filter_map(|d| {
            d.finished_at
                .filter(|t| inside(*t))
                .map(|t| (d.environment.as_str(), t))
        })
        .collect();
    incidents.extend(
        health
            .iter()
            .filter(|h| h.to == Health::Down && inside(h.at))
            .map(|h| (h.environment.as_str(), h.at)),
    );
    let mut restore = Vec::new();
    let mut open = 0;
    for (env, began) in incidents {
        let live_again = deployments
            .iter()
            .filter(|d| d.environment == env)
            .filter_map(|d| d.live_at)
            .filter(|t| *t > began);
        let healthy_again = health
            .iter()
            .filter(|h| h.environment == env && h.to == Health::Healthy && h.at > began)
            .map(|h| h.at);
        match live_again.chain(healthy_again).filter(|t| *t < until).min() {
            Some(end) => restore.push(end - began),
            None => open += 1,
        }
    }
    let days = (until - since).max(1) as f64 / 86_400_000.0;
    Dora {
        since,
        until,
        deployments: went_live.len(),
        deployments_per_day: went_live.len() as f64 / days,
        lead_time: Spread::of(lead),
        changes: ended.len(),
        failed_changes: failed,
        change_failure_rate: (!ended.is_empty()).then(|| failed as f64 / ended.len() as f64),
        time_to_restore: Spread::of(restore),
        open_incidents: open,
    }
}

/// Commits a change may bring at most (a first release brings its whole history).
const MAX_COMMITS: usize = 1000;

/// The four keys of a repository's environment (all of them when `None`) over
/// `[since, until)`, from the store and the repository's mirror (commit times).
pub async fn of_repository(
    store: &ferry_store::Store,
    mirror: &std::path::Path,
    repository_id: &str,
    environment: Option<&str>,
    since: i64,
    until: i64,
) -> ferry_store::Result<Dora> {
    let deployments = store
        .deployments_since(repository_id, environment, since)
        .await?;
    let mut releases: std::collections::HashMap<String, String> = Default::default();
    let mut facts = Vec::with_capacity(deployments.len());
    for d in deployments {
        let mut commit_times = Vec::new();
        if d.kind != DeploymentKind::Rollback && d.live_at.is_some_and(|t| t >= since && t < until)
        {
            for id in std::iter::once(&d.release_id).chain(d.previous_release_id.as_ref()) {
                if !releases.contains_key(id) {
                    let sha = store.release(repository_id, id).await?.commit_sha;
                    releases.insert(id.clone(), sha);
                }
            }
            let to = &releases[&d.release_id];
            let from = d.previous_release_id.as_ref().map(|p| releases[p].as_str());
            commit_times = ferry_source::git::commit_times(mirror, from, to, MAX_COMMITS)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(_, secs)| secs * 1000)
                .collect();
        }
        facts.push(DeploymentFact {
            id: d.id,
            environment: d.environment,
            kind: d.kind,
            status: d.status,
            finished_at: d.finished_at,
            live_at: d.live_at,
            commit_times,
        });
    }
    let health: Vec<HealthFact> = store
        .health_changes_since(repository_id, environment, since)
        .await?
        .into_iter()
        .map(|c| HealthFact {
            environment: c.environment,
            deployment_id: c.deployment_id,
            to: c.to_state,
            at: c.at,
        })
        .collect();
    Ok(compute(&facts, &health, since, until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeploymentKind as K;
    use DeploymentStatus as S;

    const H: i64 = 3_600_000;
    const DAY: i64 = 24 * H;

    fn dep(
        id: &str,
        kind: K,
        status: S,
        finished: i64,
        live: Option<i64>,
        commits: &[i64],
    ) -> DeploymentFact {
        DeploymentFact {
            id: id.into(),
            environment: "production".into(),
            kind,
            status,
            finished_at: Some(finished),
            live_at: live,
            commit_times: commits.to_vec(),
        }
    }

    fn health(dep: &str, to: Health, at: i64) -> HealthFact {
        HealthFact {
            environment: "production".into(),
            deployment_id: dep.into(),
            to,
            at,
        }
    }

    /// A week of production with known answers:
    ///
    /// - d1 (day 1): live 2 h and 4 h after its commits; stays healthy.
    /// - d2 (day 2): fails verification at 10:00; rollback r1 is live at 10:30.
    /// - d3 (day 3): live after 1 h; goes down at day 4 00:00; recovers at 02:00.
    /// - d4 (day 5): live after 6 h; goes down at 12:00; rolled back, r2 live at 12:15.
    /// - d5 (day 6): live after 3 h; healthy.
    /// - d0 (before the window): live, not counted; d6 (after): not counted.
    #[test]
    fn a_known_week() {
        let w0 = 100 * DAY;
        let t = |day: i64, hour: i64| w0 + day * DAY + hour * H;
        let deployments = vec![
            dep(
                "d0",
                K::Auto,
                S::Replaced,
                t(-1, 0),
                Some(t(-1, 0)),
                &[t(-1, -5)],
            ),
            dep(
                "d1",
                K::Promotion,
                S::Replaced,
                t(1, 0),
                Some(t(1, 0)),
                &[t(1, -2), t(1, -4)],
            ),
            dep(
                "d2",
                K::Promotion,
                S::RolledBack,
                t(2, 10),
                None,
                &[t(2, 8)],
            ),
            dep(
                "r1",
                K::Rollback,
                S::Replaced,
                t(2, 10) + H / 2,
                Some(t(2, 10) + H / 2),
                &[],
            ),
            dep(
                "d3",
                K::Promotion,
                S::Replaced,
                t(3, 0),
                Some(t(3, 0)),
                &[t(3, -1)],
            ),
            dep(
                "d4",
                K::Promotion,
                S::RolledBack,
                t(5, 0),
                Some(t(5, 0)),
                &[t(5, -6)],
            ),
            dep(
                "r2",
                K::Rollback,
                S::Replaced,
                t(5, 12) + H / 4,
                Some(t(5, 12) + H / 4),
                &[],
            ),
            dep(
                "d5",
                K::Promotion,
                S::Live,
                t(6, 0),
                Some(t(6, 0)),
                &[t(6, -3)],
            ),
            dep(
                "d6",
                K::Promotion,
                S::Live,
                t(8, 0),
                Some(t(8, 0)),
                &[t(8, -1)],
            ),
        ];
        let health = vec![
            health("d1", Health::Healthy, t(1, 0)),
            health("r1", Health::Healthy, t(2, 10) + H / 2),
            health("d3", Health::Healthy, t(3, 0)),
            health("d3", Health::Down, t(4, 0)),
            health("d3", Health::Healthy, t(4, 2)),
            health("d4", Health::Healthy, t(5, 0)),
            health("d4", Health::Down, t(5, 12)),
            health("r2", Health::Healthy, t(5, 12) + H / 4),
            health("d5", Health::Healthy, t(6, 0)),
        ];
        let dora = compute(&deployments, &health, t(0, 0), t(7, 0));
        // d1, d3, d4, d5 went live (d2 never did; rollbacks are not changes).
        assert_eq!(dora.deployments, 4);
        assert!((dora.deployments_per_day - 4.0 / 7.0).abs() < 1e-9);
        // Lead times: d1 2 h, 4 h; d3 1 h; d4 6 h; d5 3 h → median 3 h, p90 6 h.
        assert_eq!(
            dora.lead_time,
            Some(Spread {
                count: 5,
                median_seconds: 3.0 * 3600.0,
                p90_seconds: 6.0 * 3600.0
            })
        );
        // Changes ended: d1, d2 (failed), d3, d4, d5; failed: d2, d3 (down), d4.
        assert_eq!((dora.changes, dora.failed_changes), (5, 3));
        assert_eq!(dora.change_failure_rate, Some(0.6));
        // Incidents: d2 30 min, d3 down 2 h, d4 down 15 min → median 30 min.
        assert_eq!(
            dora.time_to_restore,
            Some(Spread {
                count: 3,
                median_seconds: 1800.0,
                p90_seconds: 7200.0
            })
        );
        assert_eq!(dora.open_incidents, 0);
    }

    #[test]
    fn an_incident_not_restored_by_the_end_is_open() {
        let deployments = vec![dep("d1", K::Auto, S::Live, 10, Some(10), &[5])];
        let health = vec![
            health("d1", Health::Healthy, 10),
            health("d1", Health::Down, 20),
            health("d1", Health::Healthy, 200),
        ];
        let dora = compute(&deployments, &health, 0, 100);
        assert_eq!((dora.open_incidents, dora.time_to_restore), (1, None));
        assert_eq!(dora.change_failure_rate, Some(1.0));
        let later = compute(&deployments, &health, 0, 300);
        assert_eq!(later.time_to_restore.map(|s| s.median_seconds), Some(0.18));
    }

    #[test]
    fn nothing_happened() {
        let dora = compute(&[], &[], 0, DAY);
        assert_eq!(dora.deployments, 0);
        assert_eq!(dora.lead_time, None);
        assert_eq!(dora.change_failure_rate, None);
        assert_eq!(dora.time_to_restore, None);
    }
}
