//! The dispatcher: claims queued runs up to the limit and executes them with the engine.

use std::sync::Arc;
use std::time::Duration;

use ferry_engine::Source;
use ferry_source::git;
use ferry_store::{JobEnd, Run, Status, Write, now_ms};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::AppState;

/// Why a run whose server stopped renewing its lease is ended by another.
pub const LEASE_LOST: &str =
    "interrupted: the server executing it stopped (its lease ran out without a heartbeat)";

/// The lease's length in milliseconds.
fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// One heartbeat: renews the leases of the runs this server executes (a run whose lease
/// was taken from it is cancelled here: another server ended it), and ends the runs
/// of any server whose lease ran out.
async fn heartbeat(state: &AppState) {
    match state
        .store
        .renew_run_leases(&state.config.server_id, now_ms() + lease_ms(state))
        .await
    {
        Ok(held) => {
            let unheld: Vec<(String, CancellationToken)> = match state.running.lock() {
                Ok(running) => running
                    .iter()
                    .filter(|(id, t)| !held.contains(id) && !t.is_cancelled())
                    .map(|(id, t)| (id.clone(), t.clone()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            // Not held: just finished (nothing to do), or ended by another server.
            for (id, token) in unheld {
                if let Ok(run) = state.store.run_by_id(&id).await
                    && run.error.as_deref() == Some(LEASE_LOST)
                {
                    tracing::warn!(
                        "run {id} is no longer this server's (its lease ran out): stopping it"
                    );
                    token.cancel();
                }
            }
        }
        Err(e) => tracing::error!("cannot renew the leases of this server's runs: {e}"),
    }
    match state.store.interrupt_runs(None, LEASE_LOST).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("ended {n} run(s) whose server stopped renewing its lease"),
        Err(e) => tracing::error!("cannot end runs whose lease ran out: {e}"),
    }
}

pub(crate) async fn dispatch(state: AppState, stop: CancellationToken) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut beat = tokio::time::interval((state.config.lease / 3).max(Duration::from_millis(100)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while tasks.len() < state.config.max_runs.max(1) {
            match state
                .store
                .claim_next_run(
                    &state.config.server_id,
                    now_ms() + lease_ms(&state),
                    state.config.max_runs_per_repo.max(1) as i64,
                )
                .instrument(tracing::debug_span!("claim"))
                .await
            {
                Ok(Some(run)) => {
                    let state = state.clone();
                    let span = tracing::debug_span!("run", number = run.number);
                    tasks.spawn(async move { execute(state, run).await }.instrument(span));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("cannot claim a run: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = state.wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = beat.tick() => heartbeat(&state).await,
            // Other servers sharing the database queue runs too.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    // Shutting down: stop what runs (unless draining), and wait until it is recorded.
    let cancel_all = || {
        if let Ok(running) = state.running.lock() {
            for token in running.values() {
                token.cancel();
            }
        }
    };
    if !state.config.drain {
        cancel_all();
    }
    let mut forced = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            // Draining runs stay this server's.
            _ = beat.tick() => heartbeat(&state).await,
            _ = state.force.cancelled(), if !forced => {
                forced = true;
                cancel_all();
            }
        }
    }
}

async fn execute(state: AppState, run: Run) {
    let cancel = CancellationToken::new();
    if let Ok(mut running) = state.running.lock() {
        running.insert(run.id.clone(), cancel.clone());
    }
    if let Err(e) = execute_inner(&state, run.clone(), cancel).await {
        tracing::error!("run {} failed to execute: {e}", run.id);
        fail_run(&state, &run, &e).await;
    }
    if let Ok(mut running) = state.running.lock() {
        running.remove(&run.id);
    }
}

async fn execute_inner(
    state: &AppState,
    run: Run,
    cancel: CancellationToken,
) -> Result<(), String> {
    let plan: ferry_plan::Plan = serde_json::from_str(
        &state
            .store
            .run_plan(&run.id)
            .await
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("the stored plan does not read back: {e}"))?;
    let job_ids: Vec<String> = state
        .store
        .jobs(&run.id)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|j| j.id)
        .collect();
    let checkout = state.config.work_root.join(format!("{}-checkout", run.id));
    let mirror = state.mirror_path(&run.repository_id);
    git::export(&mirror, &run.commit_sha, &checkout)
        .instrument(tracing::debug_span!("export"))
        .await
        .map_err(|e| format!("cannot check out {}: {e}", run.commit_sha))?;

    let source = Source {
        root: checkout.clone(),
        files: None,
    };
    // Not pruned until its release (if any) is sealed from it.
    let _finishing = state.finishing.hold(&run.id);
    let repo_name = match state.store.repository(&run.repository_id).await {
        Ok(r) => r.name,
        Err(_) => run.repository_id.clone(),
    };
    let live: Arc<dyn ferry_engine::EventSink> = Arc::new(crate::live::BroadcastSink {
        run: run.id.clone(),
        tx: state.live.clone(),
    });
    // With traces on, the run's trace sees each event first (see `traces`).
    let trace = state.tracer.as_ref().map(|tracer| {
        Arc::new(crate::traces::RunTrace::new(
            tracer.clone(),
            &run,
            &repo_name,
            state.notifier.link(&format!("/api/v1/runs/{}", run.id)),
        ))
    });
    let inner: Arc<dyn ferry_engine::EventSink> = match &trace {
        Some(trace) => Arc::new(crate::traces::Traced {
            trace: trace.clone(),
            inner: live,
        }),
        None => live,
    };
    let sink = Arc::new(crate::metrics::RunSink {
        inner,
        metrics: state.metrics.clone(),
        repository: repo_name.clone(),
        steps: Default::default(),
    });
    let m = &state.metrics;
    m.runs_started.with_label_values(&[&repo_name]).inc();
    let waited = (ferry_store::now_ms() - run.created_at).max(0) as f64 / 1000.0;
    m.queue_wait
        .with_label_values(&[&repo_name])
        .observe(waited);
    let number = run.number;
    tracing::info!(repository = %repo_name, run = number, waited_s = waited, "run started");
    let began = std::time::Instant::now();
    let result = state
        .engine
        .execute(run, job_ids, plan.clone(), source, sink, cancel)
        .await
        .map_err(|e| e.to_string());
    if let (Some(trace), Err(e)) = (&trace, &result) {
        trace.close(e);
    }
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&checkout)).await;
    let result_label = match &result {
        Ok(outcome) => outcome.status.as_str(),
        Err(_) => "error",
    };
    tracing::info!(
        repository = %repo_name,
        run = number,
        result = result_label,
        duration_s = began.elapsed().as_secs_f64(),
        "run finished"
    );
    m.runs_finished
        .with_label_values(&[&repo_name, result_label])
        .inc();
    m.run_duration
        .with_label_values(&[&repo_name])
        .observe(began.elapsed().as_secs_f64());
    let outcome = result?;
    crate::notify::after_run(state, &outcome.run.id).await;
    if let Ok(run) = state.store.run_by_id(&outcome.run.id).await {
        crate::status::run_ended(state, &run, Some(began.elapsed().as_secs_f64())).await;
    }
    // `after_success` asks `releasable`, which an untrusted run never is.
    if outcome.status == ferry_store::Status::Success && plan.delivery.release.is_some() {
        crate::release::after_success(state, &outcome.run.id, &plan).await;
    }
    // A finished run may take an older one past the retention policy.
    if state.config.keep_runs.is_some()
        && let Err(e) = crate::retention::prune(state, state.config.keep_runs, None).await
    {
        tracing::warn!("retention: {e}");
    }
    Ok(())
}

/// Records a run that could not be executed at all.
async fn fail_run(state: &AppState, run: &Run, error: &str) {
    let mut writes = Vec::new();
    if let Ok(jobs) = state.store.jobs(&run.id).await {
        for job in jobs.iter().filter(|j| !j.status.is_finished()) {
            writes.push(Write::finish_job(
                &job.id,
                JobEnd {
                    status: Status::Failed,
                    reason: Some(error.to_string()),
                    exit_code: None,
                    attempts: 0,
                    log_bytes: 0,
                    log_lines: 0,
                    tests: None,
                },
            ));
        }
    }
    writes.push(Write::finish_run(
        &run.id,
        Status::Failed,
        Some(error.to_string()),
    ));
    if let Err(e) = state.store.apply(&writes).await {
        tracing::error!("cannot record the failure of run {}: {e}", run.id);
    }
    if let Ok(run) = state.store.run_by_id(&run.id).await {
        crate::status::run_ended(state, &run, None).await;
    }
}

/// Cancels a run this server is executing; `false` when it is not running here.
pub(crate) fn cancel(state: &AppState, run_id: &str) -> bool {
    match state.running.lock() {
        Ok(running) => match running.get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}
