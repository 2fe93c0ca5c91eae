//! The intake: turns accepted webhook deliveries into runs in the background, so a
//! webhook is answered as soon as it is verified and stored. Each repository's
//! deliveries are handled in order by a worker of its own, so a remote that hangs holds
//! up only its repository. A burst of deliveries for one repository costs one fetch:
//! the first fetches every new commit, the others find theirs in the mirror already.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_plan::EventKind;
use ferry_store::Intake;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::trigger::{TriggerError, TriggerRequest, trigger};

/// How long to wait before each further attempt at a delivery that failed for a reason
/// that may pass (bounded: about 7 s in all).
const RETRIES: &[Duration] = &[
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

pub(crate) async fn intake(state: AppState, stop: CancellationToken) {
    // One worker per repository, each taking its deliveries in the order they came:
    // a repository whose remote hangs holds up only its own deliveries.
    let mut workers: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    let busy: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    loop {
        while workers.try_join_next().is_some() {}
        // Which repositories have deliveries waiting (one small query), and only for
        // those without a worker, what they wait with: a burst of deliveries for a busy
        // repository wakes this loop many times, and must not read them all each time.
        let repos = match state
            .store
            .pending_repositories(MAX_INTAKE_WORKERS as i64 * 4)
            .await
        {
            Ok(repos) => repos,
            Err(e) => {
                tracing::error!("intake: {e}");
                Vec::new()
            }
        };
        for repo in repos {
            if workers.len() >= MAX_INTAKE_WORKERS {
                break; // the rest waits for a worker to end
            }
            let started = busy
                .lock()
                .map(|mut b| b.insert(repo.clone()))
                .unwrap_or(false);
            if !started {
                continue; // its worker is still on earlier deliveries
            }
            // Servers sharing the database take turns: one handles a repository's
            // deliveries at a time.
            let owner = state.config.server_id.clone();
            let claimed = state
                .store
                .claim_intake(&repo, &owner, lease_until(&state))
                .await;
            if !matches!(claimed, Ok(true)) {
                if let Err(e) = claimed {
                    tracing::error!("intake: {e}");
                }
                if let Ok(mut b) = busy.lock() {
                    b.remove(&repo);
                }
                continue;
            }
            let items = match state.store.pending_intake_of(&repo, 500).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!("intake: {e}");
                    let _ = state.store.release_intake(&repo, &owner).await;
                    if let Ok(mut b) = busy.lock() {
                        b.remove(&repo);
                    }
                    continue;
                }
            };
            let (state, stop, busy, done) =
                (state.clone(), stop.clone(), busy.clone(), done.clone());
            workers.spawn(async move {
                for item in items {
                    if stop.is_cancelled() {
                        break; // what is left stays stored for the next start
                    }
                    // Still this server's turn (renewed for each delivery): a server
                    // that stalled past its lease leaves the rest to the one that took
                    // over.
                    match state
                        .store
                        .claim_intake(&repo, &owner, lease_until(&state))
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            tracing::error!("intake: {e}");
                            break;
                        }
                    }
                    // Renewed while the delivery is handled (a slow fetch may take
                    // longer than the lease).
                    let renew = async {
                        loop {
                            tokio::time::sleep(state.config.lease / 3).await;
                            let _ = state
                                .store
                                .claim_intake(&repo, &owner, lease_until(&state))
                                .await;
                        }
                    };
                    tokio::select! {
                        _ = handle(&state, &item) => {}
                        _ = renew => {}
                    }
                }
                if let Err(e) = state.store.release_intake(&repo, &owner).await {
                    tracing::error!("intake: {e}");
                }
                if let Ok(mut b) = busy.lock() {
                    b.remove(&repo);
                }
                done.notify_one();
            });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = state.intake_wake.notified() => {}
            _ = done.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // Deliveries being handled are finished (each worker stops after its current one);
    // one still going after a while stays stored, handled again at the next start, and
    // its git process ends with its task.
    let finishing = async { while workers.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), finishing).await;
    workers.shutdown().await;
}

/// Until when a claim of a repository's deliveries taken now lasts.
fn lease_until(state: &AppState) -> i64 {
    ferry_store::now_ms() + i64::try_from(state.config.lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Repositories whose deliveries are handled at once, at most.
const MAX_INTAKE_WORKERS: usize = 16;

#[tracing::instrument(level = "debug", name = "intake", skip_all, fields(delivery = %item.id))]
async fn handle(state: &AppState, item: &Intake) {
    let finish = |run: Option<String>, outcome: String, retry: bool| async move {
        if let Err(e) = state
            .store
            .finish_intake(item, run.as_deref(), &outcome, retry)
            .await
        {
            tracing::error!("intake: cannot record delivery {}: {e}", item.id);
        }
    };
    let repo = match state.store.repository(&item.repository_id).await {
        Ok(r) => r,
        Err(e) => return finish(None, e.to_string(), false).await,
    };
    let trust = match trust(&repo, item) {
        Ok(trust) => trust,
        Err(declined) => return finish(None, declined, false).await,
    };
    let req = TriggerRequest {
        git_ref: item.git_ref.clone(),
        sha: Some(item.sha.clone()),
        variables: Vec::new(),
        event: EventKind::parse(&item.event).unwrap_or(EventKind::Push),
        triggered_by: triggered_by(item),
        trust,
        pull: item.pull.clone(),
    };
    // A fetch that fails or a mirror that cannot be read may be passing trouble: try
    // again a few times, waiting longer each time, before giving up on the delivery.
    let mut result = trigger(state, &repo, &req).await;
    for wait in RETRIES {
        match &result {
            Err(TriggerError::Fetch(e) | TriggerError::Git(e)) => {
                tracing::warn!("intake: {}: {e}; trying again in {wait:?}", repo.name);
                tokio::time::sleep(*wait).await;
                result = trigger(state, &repo, &req).await;
            }
            _ => break,
        }
    }
    match result {
        Ok(run) => {
            finish(
                Some(run.id.clone()),
                format!("started run {}", run.number),
                false,
            )
            .await
        }
        // Given up: the delivery id is forgotten, so the forge's redelivery is
        // accepted once the repository can be read again.
        Err(e @ (TriggerError::Fetch(_) | TriggerError::Git(_))) => {
            let why = format!("{e} (after {} attempts)", RETRIES.len() + 1);
            tracing::error!("intake: {}: {why}", repo.name);
            finish(None, why, true).await
        }
        Err(e) => finish(None, e.to_string(), false).await,
    }
}

/// Who triggered a delivery's run: the forge account the signed delivery names
/// (`github:alice`, the pusher or the pull request's author), so that approval rules
/// compare people, not git author strings; `webhook:PROVIDER` when it names none (or
/// for the generic webhook, whose sender is no forge account).
pub(crate) fn triggered_by(item: &Intake) -> String {
    item.sender
        .as_deref()
        .filter(|_| ferry_store::FORGES.contains(&item.provider.as_str()))
        .and_then(|sender| ferry_store::forge_identity(&format!("{}:{sender}", item.provider)).ok())
        .unwrap_or_else(|| format!("webhook:{}", item.provider))
}

/// How far a delivery's run is trusted, from what the forge says (never from the
/// commit): a pull request from another repository (a fork) is untrusted, and runs only
/// when the repository says `fork_prs: run`; `Err` says why it starts no run.
pub(crate) fn trust(
    repo: &ferry_store::Repository,
    item: &Intake,
) -> Result<ferry_plan::Trust, String> {
    let by = item
        .sender
        .as_deref()
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    let Some(pull) = &item.pull else {
        // A pull request whose facts were not kept (accepted before trust levels
        // existed) is not run: nothing says where it comes from.
        if item.event == "pull_request" {
            return Err(
                "a pull request delivery without its facts (where it comes from): \
                 not run; redeliver it from the forge"
                    .into(),
            );
        }
        return Ok(ferry_plan::Trust::trusted(format!(
            "{} of {}{by}, signed with the repository's webhook secret",
            item.event, item.git_ref
        )));
    };
    if !pull.fork {
        return Ok(ferry_plan::Trust::trusted(format!(
            "pull request #{} from branch {} of this repository{by}",
            pull.number, pull.head
        )));
    }
    let from = pull
        .from
        .as_deref()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    let what = format!("pull request #{} from a fork{from}{by}", pull.number);
    match (repo.fork_prs.as_str(), &item.approved_by) {
        ("run", _) => Ok(ferry_plan::Trust::untrusted(what)),
        ("approve", Some(by)) => Ok(ferry_plan::Trust::untrusted(format!(
            "{what}, approved by {by}"
        ))),
        ("approve", None) => Err(format!(
            "{}{what}: a developer lets it run, untrusted, with `ferry deliveries \
             --approve {}` (POST …/deliveries/{}/approve)",
            ferry_store::AWAITING_APPROVAL,
            item.id,
            item.id
        )),
        _ => Err(format!(
            "{what}: the repository does not run pull requests from forks \
             (fork_prs is `{}`; `approve` runs them once a developer approves, `run` \
             runs them untrusted)",
            repo.fork_prs
        )),
    }
}
