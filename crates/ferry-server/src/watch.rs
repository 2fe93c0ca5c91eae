//! Polling and schedules: the triggers that come from time rather than from a request.
//!
//! Every tick, repositories with a polling interval that is due are checked with
//! `git ls-remote`; each head that moved (or appeared) on a branch or tag starts a run,
//! the first poll only records a baseline. Cron entries of `on.schedule` in the default
//! branch's `.ferry.yml` start `schedule` runs; the store records when each last fired,
//! so a restart neither repeats nor floods: after downtime, one run for the latest
//! missed occurrence. Repositories are watched each on their own (a few at once), so a
//! remote that never answers holds up only its own repository.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ferry_plan::EventKind;
use ferry_source::git;
use ferry_store::{Repository, now_ms};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::trigger::{TriggerRequest, trigger};

/// How often the default branch is checked for new schedules (`git ls-remote`: a fetch
/// only when it moved).
const SCHEDULE_REFRESH: Duration = Duration::from_secs(60);

/// What a refresh of a repository's schedules has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The default branch has not moved: the schedules read last time stand.
    Keep,
    /// It has no default branch (yet): no schedules.
    Clear,
    /// It moved to a commit the mirror has (a webhook fetched it): read it.
    Read,
    /// It moved to a commit the mirror lacks: fetch, then read.
    FetchAndRead,
}

/// Pure: what to do, from the head read last time, the head now and whether the mirror
/// has it.
pub(crate) fn refresh(last: Option<&str>, now: Option<&str>, mirror_has_it: bool) -> Refresh {
    match now {
        None => Refresh::Clear,
        Some(head) if last == Some(head) => Refresh::Keep,
        Some(_) if mirror_has_it => Refresh::Read,
        Some(_) => Refresh::FetchAndRead,
    }
}

/// The schedules of one repository as last read: when, at which head of its default
/// branch, and the cron entries.
struct Schedules {
    at: Instant,
    head: Option<String>,
    exprs: Vec<String>,
}

/// What the watcher keeps of one repository between passes.
#[derive(Default)]
struct Watched {
    next_poll: Option<Instant>,
    schedules: Option<Schedules>,
}

/// How many repositories are polled or refreshed at once.
const AT_ONCE: usize = 8;

pub(crate) async fn watch(state: AppState, stop: CancellationToken, tick: Duration) {
    // Each repository's state, and whether its work of the last pass is still going:
    // a remote that never answers holds up only its own repository (until its git
    // timeout), never the others' polls and schedules, and never the server's stop.
    let mut watched: HashMap<String, Arc<tokio::sync::Mutex<Watched>>> = HashMap::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut work = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        while work.try_join_next().is_some() {}
        let repos = match state.store.repositories().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("watch: cannot list repositories: {e}");
                continue;
            }
        };
        watched.retain(|id, _| repos.iter().any(|r| r.id == *id));
        for repo in repos {
            let entry = watched.entry(repo.id.clone()).or_default().clone();
            // Still busy with an earlier pass: this one leaves it alone.
            let Ok(mut mine) = entry.try_lock_owned() else {
                continue;
            };
            let (state, slots) = (state.clone(), slots.clone());
            work.spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                watch_one(&state, &repo, &mut mine).await;
            });
        }
    }
    // The work in flight is dropped: its git processes are killed.
    work.shutdown().await;
}

/// One pass over one repository: its poll when due, its schedules' refresh when
/// stale, and the schedules that are due.
async fn watch_one(state: &AppState, repo: &Repository, mine: &mut Watched) {
    if let Some(every) = repo.poll_interval_s.filter(|s| *s > 0) {
        let due = mine.next_poll.is_none_or(|t| Instant::now() >= t);
        if due {
            mine.next_poll = Some(Instant::now() + Duration::from_secs(every as u64));
            if let Err(e) = poll(state, repo).await {
                tracing::warn!("polling {}: {e}", repo.name);
            }
        }
    }
    let stale = mine
        .schedules
        .as_ref()
        .is_none_or(|s| s.at.elapsed() >= SCHEDULE_REFRESH);
    if stale {
        let last = mine.schedules.take();
        let last_head = last.as_ref().and_then(|s| s.head.clone());
        let known = match read_schedules(state, repo, last_head.as_deref()).await {
            Ok((head, Some(exprs))) => Schedules {
                at: Instant::now(),
                head,
                exprs,
            },
            Ok((head, None)) => Schedules {
                at: Instant::now(),
                head,
                exprs: last.map(|s| s.exprs).unwrap_or_default(),
            },
            Err(e) => {
                tracing::warn!("schedules of {}: {e}", repo.name);
                Schedules {
                    at: Instant::now(),
                    head: last_head,
                    exprs: last.map(|s| s.exprs).unwrap_or_default(),
                }
            }
        };
        mine.schedules = Some(known);
    }
    if let Some(known) = &mine.schedules {
        for expr in &known.exprs {
            if let Err(e) = fire_if_due(state, repo, expr).await {
                tracing::warn!("schedule `{expr}` of {}: {e}", repo.name);
            }
        }
    }
}

async fn poll(state: &AppState, repo: &Repository) -> Result<(), String> {
    let heads = git::ls_remote(&repo.url).await?;
    let known = state
        .store
        .heads(&repo.id)
        .await
        .map_err(|e| e.to_string())?;
    let baseline = known.is_empty();
    for (name, _) in &known {
        if !heads.iter().any(|(n, _)| n == name) {
            let _ = state.store.remove_head(&repo.id, name).await;
        }
    }
    for (name, sha) in heads {
        let moved = state
            .store
            .update_head(&repo.id, &name, &sha)
            .await
            .map_err(|e| e.to_string())?;
        if !moved || baseline {
            continue;
        }
        let event = if name.starts_with("refs/tags/") {
            EventKind::Tag
        } else {
            EventKind::Push
        };
        let req = TriggerRequest {
            git_ref: name.clone(),
            sha: Some(sha),
            variables: Vec::new(),
            event,
            trust: ferry_plan::Trust::trusted(format!("{name} of the repository, polled")),
            triggered_by: "poll".into(),
            pull: None,
        };
        match trigger(state, repo, &req).await {
            Ok(run) => tracing::info!("poll: {} {name} started run {}", repo.name, run.number),
            Err(e) => tracing::info!("poll: {} {name}: {e}", repo.name),
        }
    }
    Ok(())
}

/// The cron entries of the default branch's pipeline, read again only when the branch
/// moved since `last_head` (`None` for them: unchanged), with the head they were read
/// at.
async fn read_schedules(
    state: &AppState,
    repo: &Repository,
    last_head: Option<&str>,
) -> Result<(Option<String>, Option<Vec<String>>), String> {
    let branch = repo.default_branch.clone().unwrap_or_else(|| "main".into());
    let head = git::ls_remote_ref(&repo.url, &format!("refs/heads/{branch}")).await?;
    let mirror = state.mirror_path(&repo.id);
    let has_it = match head.as_deref() {
        Some(sha) if last_head != Some(sha) => {
            let _reading = state.read_mirror(&repo.id).await?;
            git::has_commit(&mirror, sha).await
        }
        _ => false,
    };
    let sha = match (refresh(last_head, head.as_deref(), has_it), head.as_deref()) {
        (Refresh::Keep, _) => return Ok((head, None)),
        (Refresh::Clear, _) | (_, None) => return Ok((head, Some(Vec::new()))),
        (Refresh::Read, Some(sha)) => sha.to_string(),
        (Refresh::FetchAndRead, Some(sha)) => {
            state.sync_mirror(repo).await?;
            sha.to_string()
        }
    };
    let _reading = state.read_mirror(&repo.id).await?;
    let Some(source) = git::show_file(&mirror, &sha, ferry_config::FILE_NAME).await? else {
        return Ok((head, Some(Vec::new())));
    };
    let text = String::from_utf8_lossy(&source);
    let exprs = ferry_config::load(&text)
        .map(|l| l.pipeline.on.schedule)
        .unwrap_or_default();
    Ok((head, Some(exprs)))
}

/// The latest occurrence of `expr` after `after_ms` and no later than `now_ms`.
pub fn latest_due(expr: &str, after_ms: i64, now_ms: i64) -> Result<Option<i64>, String> {
    let cron = croner::Cron::new(expr)
        .parse()
        .map_err(|e| format!("invalid cron expression: {e}"))?;
    let mut at = Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or("bad time")?;
    let mut latest = None;
    // Bounded: a minutely schedule after a long downtime does not loop for ever.
    for _ in 0..100_000 {
        let next = match cron.find_next_occurrence(&at, false) {
            Ok(n) => n,
            Err(_) => break,
        };
        if next.timestamp_millis() > now_ms {
            break;
        }
        latest = Some(next.timestamp_millis());
        at = next;
    }
    Ok(latest)
}

async fn fire_if_due(state: &AppState, repo: &Repository, expr: &str) -> Result<(), String> {
    let now = now_ms();
    let last = state
        .store
        .schedule_last_fired(&repo.id, expr, now)
        .await
        .map_err(|e| e.to_string())?;
    let Some(due) = latest_due(expr, last, now)? else {
        return Ok(());
    };
    if !state
        .store
        .schedule_fired(&repo.id, expr, last, due)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(()); // another server fired it
    }
    let branch = repo.default_branch.clone().unwrap_or_else(|| "main".into());
    let req = TriggerRequest {
        git_ref: branch,
        sha: None,
        variables: Vec::new(),
        event: EventKind::Schedule,
        trust: ferry_plan::Trust::trusted(format!("the schedule `{expr}` of the default branch")),
        triggered_by: format!("schedule:{expr}"),
        pull: None,
    };
    match trigger(state, repo, &req).await {
        Ok(run) => tracing::info!(
            "schedule `{expr}` of {} started run {}",
            repo.name,
            run.number
        ),
        Err(e) => tracing::warn!("schedule `{expr}` of {}: {e}", repo.name),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn schedules_are_fetched_only_when_the_branch_moved() {
        let table = [
            (Some("a"), Some("a"), false, Refresh::Keep),
            (Some("a"), Some("a"), true, Refresh::Keep),
            (Some("a"), Some("b"), true, Refresh::Read),
            (Some("a"), Some("b"), false, Refresh::FetchAndRead),
            (None, Some("b"), false, Refresh::FetchAndRead),
            (Some("a"), None, false, Refresh::Clear),
            (None, None, false, Refresh::Clear),
        ];
        for (last, now, has, want) in table {
            assert_eq!(
                refresh(last, now, has),
                want,
                "{last:?} -> {now:?}, mirror has it: {has}"
            );
        }
    }

    #[test]
    fn latest_due_occurrence() {
        let after = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            latest_due("0 3 * * *", after, ms("2026-01-01T02:59:00Z")),
            Ok(None)
        );
        assert_eq!(
            latest_due("0 3 * * *", after, ms("2026-01-01T03:00:00Z")),
            Ok(Some(ms("2026-01-01T03:00:00Z")))
        );
        // After three days down: one occurrence, the latest.
        assert_eq!(
            latest_due("0 3 * * *", after, ms("2026-01-04T05:00:00Z")),
            Ok(Some(ms("2026-01-04T03:00:00Z")))
        );
        assert!(latest_due("61 * * * *", after, after).is_err());
    }
}
