//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4): what the server
//! counts as things happen (runs, jobs, steps, webhook deliveries, deployments) and what
//! it reads at each scrape (the queue, environments' health, the process). Names follow Prometheus' conventions: a `ferry_` prefix,
//! `_total` for counters, `_seconds` for durations; label values are bounded (a
//! repository's name, a result, a provider), never a run id or a commit.

use ferry_engine::{EngineEvent, EventSink};
use ferry_store::{Deployment, DeploymentKind, DeploymentStatus, Health};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets of run and job durations, in seconds: 0.1 s to about 55 minutes.
const DURATION_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 1800.0, 2700.0,
    3300.0,
];

/// Buckets of step durations, in seconds: 10 ms to about 55 minutes.
const STEP_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3300.0,
];

/// Buckets of deployment durations (start to live or failed), in seconds.
const DEPLOY_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
];

/// Buckets of queue waits, in seconds: 10 ms to 10 minutes.
const WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 600.0,
];

/// The server's metrics and the registry they are gathered from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Runs that began executing, by repository.
    pub runs_started: IntCounterVec,
    /// Runs that ended, by repository and result (`success`, `failure`, `cancelled`…).
    pub runs_finished: IntCounterVec,
    /// How long runs took, from start to end, by repository.
    pub run_duration: HistogramVec,
    /// How long runs waited in the queue before they started, by repository.
    pub queue_wait: HistogramVec,
    /// Webhook deliveries by provider and outcome (`accepted`, `ignored`, `duplicate`,
    /// `refused`, `bad_payload`).
    pub deliveries: IntCounterVec,
    /// Jobs that ended, by repository and result.
    pub jobs_finished: IntCounterVec,
    /// How long jobs took (all attempts), by repository.
    pub job_duration: HistogramVec,
    /// Steps that began, by repository.
    pub steps_started: IntCounterVec,
    /// Steps that ended, by repository and result.
    pub steps_finished: IntCounterVec,
    /// How long steps took, by repository.
    pub step_duration: HistogramVec,
    /// Deployments that ended (went live, failed, were cancelled or rejected), by
    /// repository, environment and result.
    pub deployments_finished: IntCounterVec,
    /// How long deployments took from start to live or failed.
    pub deployment_duration: HistogramVec,
    /// Deployments that failed their verification.
    pub verification_failures: IntCounterVec,
    /// Rollbacks asked for, by repository, environment and cause (`automatic`: after a
    /// failure or the environment going down; `manual`: someone asked).
    pub rollbacks: IntCounterVec,
    /// Each environment's health (1 for its state now), set at each scrape.
    health: IntGaugeVec,
    /// What each environment's workload uses, set at each scrape.
    workload_cpu: GaugeVec,
    workload_memory: GaugeVec,
    workload_restarts: GaugeVec,
    workload_uptime: GaugeVec,
    /// DORA's four keys of each environment over the last 30 days (see [`refresh_dora`]).
    dora_deployments: IntGaugeVec,
    dora_lead_time: [GaugeVec; 2],
    dora_change_failure_rate: GaugeVec,
    dora_time_to_restore: [GaugeVec; 2],
    /// Set when a deployment changed: the DORA gauges are computed again soon.
    pub(crate) dora_dirty: std::sync::Arc<tokio::sync::Notify>,
    /// Workloads Ferry does not supervise itself (containers), sampled by
    /// [`sample_workloads`]: (repository id, environment, what it uses).
    pub(crate) sampled: std::sync::Arc<std::sync::Mutex<Vec<Sampled>>>,
    /// Set when a deployment went live: the workloads are sampled again soon.
    pub(crate) workloads_dirty: std::sync::Arc<tokio::sync::Notify>,
    /// Runs waiting and running now (set at each scrape).
    runs_now: IntGaugeVec,
    /// 1, labelled with the version.
    build_info: IntGauge,
    /// Trace spans the OTLP endpoint accepted, and those dropped (queue full, refused,
    /// or not sent after every retry).
    pub trace_spans_exported: IntCounter,
    pub trace_spans_dropped: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["repository"],
            )
            .expect("a valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let env_histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["repository", "environment"],
            )
            .expect("a valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let runs_started = counter(
            "ferry_runs_started_total",
            "Runs that began executing.",
            &["repository"],
        );
        let runs_finished = counter(
            "ferry_runs_finished_total",
            "Runs that ended, by result.",
            &["repository", "result"],
        );
        let run_duration = histogram(
            "ferry_run_duration_seconds",
            "How long runs took, from start to end.",
            &DURATION_BUCKETS,
        );
        let queue_wait = histogram(
            "ferry_run_queue_wait_seconds",
            "How long runs waited in the queue before they started.",
            &WAIT_BUCKETS,
        );
        let deliveries = counter(
            "ferry_webhook_deliveries_total",
            "Webhook deliveries, by provider and outcome.",
            &["provider", "outcome"],
        );
        let jobs_finished = counter(
            "ferry_jobs_finished_total",
            "Jobs that ended, by result.",
            &["repository", "result"],
        );
        let job_duration = histogram(
            "ferry_job_duration_seconds",
            "How long jobs took (every attempt).",
            &DURATION_BUCKETS,
        );
        let steps_started = counter(
            "ferry_steps_started_total",
            "Steps that began.",
            &["repository"],
        );
        let steps_finished = counter(
            "ferry_steps_finished_total",
            "Steps that ended, by result.",
            &["repository", "result"],
        );
        let step_duration = histogram(
            "ferry_step_duration_seconds",
            "How long steps took.",
            &STEP_BUCKETS,
        );
        let deployments_finished = counter(
            "ferry_deployments_finished_total",
            "Deployments that ended: live, failed, cancelled or rejected.",
            &["repository", "environment", "result"],
        );
        let deployment_duration = env_histogram(
            "ferry_deployment_duration_seconds",
            "How long deployments took, from start to live or failed.",
            &DEPLOY_BUCKETS,
        );
        let verification_failures = counter(
            "ferry_verification_failures_total",
            "Deployments that failed their verification.",
            &["repository", "environment"],
        );
        let rollbacks = counter(
            "ferry_rollbacks_total",
            "Rollbacks asked for, by cause (automatic or manual).",
            &["repository", "environment", "cause"],
        );
        let health = IntGaugeVec::new(
            Opts::new(
                "ferry_environment_health",
                "Each watched environment's health: 1 for its state now (healthy, degraded, down).",
            ),
            &["repository", "environment", "state"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(health.clone()))
            .expect("registered once");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let env_labels = ["repository", "environment"];
        let workload_cpu = gauge(
            "ferry_workload_cpu_seconds",
            "CPU time the environment's workload used since it (last) started (process target: its process group; docker target: its container).",
            &env_labels,
        );
        let workload_memory = gauge(
            "ferry_workload_memory_bytes",
            "Memory of the environment's workload (process target: its process group's resident memory; docker target: its container's usage).",
            &env_labels,
        );
        let workload_restarts = gauge(
            "ferry_workload_restarts",
            "Times the environment's workload was started again after exiting.",
            &env_labels,
        );
        let workload_uptime = gauge(
            "ferry_workload_uptime_seconds",
            "How long the environment's workload has run since it (last) started.",
            &env_labels,
        );
        let dora_deployments = IntGaugeVec::new(
            Opts::new(
                "ferry_dora_deployments",
                "DORA deployment frequency: changes that went live in the last 30 days.",
            ),
            &["repository", "environment"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(dora_deployments.clone()))
            .expect("registered once");
        // Median and 90th percentile as metrics of their own: a `quantile` label is for
        // summaries only.
        let dora_lead_time = [
            gauge(
                "ferry_dora_lead_time_median_seconds",
                "DORA lead time for changes (commit to live) over the last 30 days: the median.",
                &env_labels,
            ),
            gauge(
                "ferry_dora_lead_time_p90_seconds",
                "DORA lead time for changes over the last 30 days: the 90th percentile.",
                &env_labels,
            ),
        ];
        let dora_change_failure_rate = gauge(
            "ferry_dora_change_failure_rate",
            "DORA change failure rate over the last 30 days (0 to 1).",
            &["repository", "environment"],
        );
        let dora_time_to_restore = [
            gauge(
                "ferry_dora_time_to_restore_median_seconds",
                "DORA time to restore over the last 30 days: the median.",
                &env_labels,
            ),
            gauge(
                "ferry_dora_time_to_restore_p90_seconds",
                "DORA time to restore over the last 30 days: the 90th percentile.",
                &env_labels,
            ),
        ];
        let runs_now = IntGaugeVec::new(
            Opts::new("ferry_runs", "Runs now, by state (queued, running)."),
            &["state"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(runs_now.clone()))
            .expect("registered once");
        let build_info = IntGauge::with_opts(
            Opts::new("ferry_build_info", "Which Ferry this is (always 1).")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("a valid metric");
        build_info.set(1);
        registry
            .register(Box::new(build_info.clone()))
            .expect("registered once");
        let plain_counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help)).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let trace_spans_exported = plain_counter(
            "ferry_trace_spans_exported_total",
            "Trace spans the OTLP endpoint accepted.",
        );
        let trace_spans_dropped = plain_counter(
            "ferry_trace_spans_dropped_total",
            "Trace spans dropped: the export queue was full, or the endpoint refused them or could not be reached.",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");
        Metrics {
            registry,
            runs_started,
            runs_finished,
            run_duration,
            queue_wait,
            deliveries,
            jobs_finished,
            job_duration,
            steps_started,
            steps_finished,
            step_duration,
            deployments_finished,
            deployment_duration,
            verification_failures,
            rollbacks,
            health,
            workload_cpu,
            workload_memory,
            workload_restarts,
            workload_uptime,
            dora_deployments,
            dora_lead_time,
            dora_change_failure_rate,
            dora_time_to_restore,
            dora_dirty: std::sync::Arc::default(),
            sampled: std::sync::Arc::default(),
            workloads_dirty: std::sync::Arc::default(),
            runs_now,
            build_info,
            trace_spans_exported,
            trace_spans_dropped,
        }
    }

    /// Sets the DORA gauges to `all` (repository name, environment, figures), dropping
    /// environments no longer in it.
    pub fn set_dora(&self, all: &[(String, String, ferry_deliver::dora::Dora)]) {
        self.dora_deployments.reset();
        self.dora_change_failure_rate.reset();
        for g in self.dora_lead_time.iter().chain(&self.dora_time_to_restore) {
            g.reset();
        }
        for (repo, env, d) in all {
            let labels = [repo.as_str(), env.as_str()];
            self.dora_deployments
                .with_label_values(&labels)
                .set(d.deployments as i64);
            for (spread, [median, p90]) in [
                (&d.lead_time, &self.dora_lead_time),
                (&d.time_to_restore, &self.dora_time_to_restore),
            ] {
                if let Some(s) = spread {
                    median.with_label_values(&labels).set(s.median_seconds);
                    p90.with_label_values(&labels).set(s.p90_seconds);
                }
            }
            if let Some(rate) = d.change_failure_rate {
                self.dora_change_failure_rate
                    .with_label_values(&labels)
                    .set(rate);
            }
        }
    }

    /// Counts a webhook delivery.
    pub fn delivery(&self, provider: &str, outcome: &str) {
        self.deliveries
            .with_label_values(&[provider, outcome])
            .inc();
    }

    /// Counts what a deployment's change tells, once per deployment (`seen` remembers
    /// what was counted); `repository` is its repository's name.
    pub fn deployment(&self, d: &Deployment, repository: &str, seen: &mut Seen) {
        let env = d.environment.as_str();
        if d.kind == DeploymentKind::Rollback && seen.first(&d.id, "created") {
            let cause = if d.requested_by.as_deref() == Some("ferry") {
                "automatic"
            } else {
                "manual"
            };
            self.rollbacks
                .with_label_values(&[repository, env, cause])
                .inc();
        }
        let result = match d.status {
            DeploymentStatus::Live => "live",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
            DeploymentStatus::Rejected => "rejected",
            _ => return,
        };
        if !seen.first(&d.id, "ended") {
            return;
        }
        self.deployments_finished
            .with_label_values(&[repository, env, result])
            .inc();
        if let (Some(start), Some(end)) = (d.started_at, d.finished_at) {
            self.deployment_duration
                .with_label_values(&[repository, env])
                .observe((end - start).max(0) as f64 / 1000.0);
        }
        if d.status == DeploymentStatus::Failed && d.verification_started_at.is_some() {
            self.verification_failures
                .with_label_values(&[repository, env])
                .inc();
        }
    }

    /// The text of every metric, with the queue's counts and the environments' health
    /// (repository name, environment, state) as of now.
    pub fn render(
        &self,
        queued: i64,
        running: i64,
        health: &[(String, String, Health)],
        workloads: &[(String, String, ferry_deliver::supervisor::Workload)],
    ) -> Result<String, String> {
        for g in [
            &self.workload_cpu,
            &self.workload_memory,
            &self.workload_restarts,
            &self.workload_uptime,
        ] {
            g.reset();
        }
        let now = ferry_store::now_ms();
        for (repo, env, w) in workloads {
            let labels = [repo.as_str(), env.as_str()];
            self.workload_cpu
                .with_label_values(&labels)
                .set(w.cpu_seconds);
            self.workload_memory
                .with_label_values(&labels)
                .set(w.memory_bytes as f64);
            self.workload_restarts
                .with_label_values(&labels)
                .set(w.restarts as f64);
            if let Some(at) = w.started_at {
                self.workload_uptime
                    .with_label_values(&labels)
                    .set((now - at).max(0) as f64 / 1000.0);
            }
        }
        // Environments no longer watched (nothing live, or removed) drop out.
        self.health.reset();
        for (repo, env, state) in health {
            for s in Health::ALL {
                self.health
                    .with_label_values(&[repo, env, s.as_str()])
                    .set(i64::from(s == *state));
            }
        }
        self.runs_now.with_label_values(&["queued"]).set(queued);
        self.runs_now.with_label_values(&["running"]).set(running);
        let _ = &self.build_info;
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// The deployments whose changes were counted: what was counted of each (a change may
/// be told twice). Bounded: the oldest are forgotten.
#[derive(Debug)]
pub struct Seen(hashlink::LruCache<(String, &'static str), ()>);

impl Default for Seen {
    fn default() -> Self {
        Self(hashlink::LruCache::new(4096))
    }
}

impl Seen {
    /// Whether this is the first time deployment `id` is seen in `status`.
    fn first_status(&mut self, id: &str, status: DeploymentStatus) -> bool {
        self.first(id, status.as_str())
    }

    /// Whether this is the first time `what` is seen of deployment `id`.
    fn first(&mut self, id: &str, what: &'static str) -> bool {
        self.0.insert((id.to_string(), what), ()).is_none()
    }
}

/// The engine's events of one run, counted (jobs, steps) and passed on.
#[derive(educe::Educe)]
#[educe(Debug)]
pub struct RunSink {
    #[educe(Debug(ignore))]
    pub inner: std::sync::Arc<dyn EventSink>,
    pub metrics: Metrics,
    /// The run's repository's name.
    pub repository: String,
    /// When each running step (job, index) began.
    pub steps: std::sync::Mutex<std::collections::HashMap<(String, usize), std::time::Instant>>,
}

impl EventSink for RunSink {
    fn event(&self, event: &EngineEvent<'_>) {
        let repo = self.repository.as_str();
        match event {
            EngineEvent::StepStarted { job, step, .. } => {
                self.metrics.steps_started.with_label_values(&[repo]).inc();
                if let Ok(mut steps) = self.steps.lock() {
                    steps.insert((job.to_string(), *step), std::time::Instant::now());
                }
            }
            EngineEvent::StepFinished {
                job, step, status, ..
            } => {
                self.metrics
                    .steps_finished
                    .with_label_values(&[repo, status.as_str()])
                    .inc();
                let began = self
                    .steps
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&(job.to_string(), *step)));
                if let Some(began) = began {
                    self.metrics
                        .step_duration
                        .with_label_values(&[repo])
                        .observe(began.elapsed().as_secs_f64());
                }
            }
            EngineEvent::JobFinished {
                status,
                duration_ms,
                ..
            } => {
                self.metrics
                    .jobs_finished
                    .with_label_values(&[repo, status.as_str()])
                    .inc();
                self.metrics
                    .job_duration
                    .with_label_values(&[repo])
                    .observe(*duration_ms as f64 / 1000.0);
            }
            _ => {}
        }
        self.inner.event(event);
    }
}

/// Follows the deliverer's changes until `stop`: counts deployments, logs each status a
/// deployment reaches, and writes the notifications they call for.
pub(crate) async fn follow_deliveries(
    state: crate::AppState,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<
        std::sync::Arc<ferry_deliver::events::DeliveryEvent>,
    >,
    stop: tokio_util::sync::CancellationToken,
) {
    use ferry_deliver::events::DeliveryEvent;
    let mut seen = Seen::default();
    let mut names: std::collections::HashMap<String, String> = Default::default();
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = stop.cancelled() => None,
        };
        let Some(event) = event else { return };
        let id = event.repository_id().to_string();
        if !names.contains_key(&id) {
            let name = match state.store.repository(&id).await {
                Ok(r) => r.name,
                Err(_) => id.clone(),
            };
            names.insert(id.clone(), name);
        }
        let repo = &names[&id];
        match &*event {
            DeliveryEvent::Deployment { deployment } => {
                // The server's log: one line per state a deployment reaches.
                if seen.first_status(&deployment.id, deployment.status) {
                    tracing::info!(
                        repository = %repo,
                        environment = %deployment.environment,
                        deployment = deployment.number,
                        kind = deployment.kind.as_str(),
                        status = deployment.status.as_str(),
                        reason = deployment.reason.as_deref(),
                        "deployment {}",
                        deployment.status.as_str()
                    );
                    crate::notify::after_deployment(&state, deployment, repo).await;
                    crate::status::deployment_changed(&state, deployment, repo).await;
                    crate::traces::deployment_changed(&state, deployment, repo).await;
                }
                state.metrics.deployment(deployment, repo, &mut seen);
                if deployment.status.finished() || deployment.status == DeploymentStatus::Live {
                    state.metrics.dora_dirty.notify_one();
                    state.metrics.workloads_dirty.notify_one();
                }
            }
            DeliveryEvent::Health { change } => {
                crate::notify::after_health(&state, change, repo).await;
                state.metrics.dora_dirty.notify_one();
            }
            DeliveryEvent::Approval { .. } => {}
        }
    }
}

/// One sampled workload: (repository id, environment, what it uses).
pub(crate) type Sampled = (String, String, ferry_deliver::supervisor::Workload);

/// How often containers' statistics are read for `/metrics`.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads what each live workload Ferry does not supervise itself uses (a `docker`
/// target's container: one-shot statistics and an inspect, at most 5 s each), every
/// 15 s and a moment after a deployment goes live, until `stop`. `/metrics` shows the
/// last sample: a scrape never waits for Docker. Supervised processes are read from
/// `/proc` at each scrape instead.
pub(crate) async fn sample_workloads(
    state: crate::AppState,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let supervised: std::collections::HashSet<(String, String)> = state
            .deliverer
            .supervisor()
            .supervised()
            .await
            .into_iter()
            .collect();
        let live = state
            .store
            .deployments_in(&[DeploymentStatus::Live])
            .await
            .unwrap_or_default();
        let mut sampled = Vec::new();
        for d in live {
            if supervised.contains(&(d.repository_id.clone(), d.environment.clone())) {
                continue;
            }
            let read = state.deliverer.workload(&d);
            if let Ok(Some(w)) = tokio::time::timeout(std::time::Duration::from_secs(5), read).await
            {
                sampled.push((d.repository_id, d.environment, w));
            }
            if stop.is_cancelled() {
                return;
            }
        }
        if let Ok(mut s) = state.metrics.sampled.lock() {
            *s = sampled;
        }
        tokio::select! {
            _ = state.metrics.workloads_dirty.notified() => {}
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        // A deployment going live starts the next environment's: one sample for both.
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The DORA window of `/metrics`.
const DORA_WINDOW_MS: i64 = 30 * 86_400_000;

/// Computes the DORA gauges of every repository's environments over the last 30 days:
/// at start, a moment after deployments or health change (at most every 2 s), and every
/// 10 minutes (the window moves), until `stop`.
pub(crate) async fn refresh_dora(
    state: crate::AppState,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let until = ferry_store::now_ms();
        let since = until - DORA_WINDOW_MS;
        let mut all = Vec::new();
        for repo in state.store.repositories().await.unwrap_or_default() {
            let envs: std::collections::BTreeSet<String> = state
                .store
                .deployments_since(&repo.id, None, since)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.environment)
                .collect();
            let mirror = state.mirror_path(&repo.id);
            for env in envs {
                match ferry_deliver::dora::of_repository(
                    &state.store,
                    &mirror,
                    &repo.id,
                    Some(&env),
                    since,
                    until,
                )
                .await
                {
                    Ok(d) => all.push((repo.name.clone(), env, d)),
                    Err(e) => tracing::warn!("DORA of {} `{env}`: {e}", repo.name),
                }
            }
        }
        state.metrics.set_dora(&all);
        tokio::select! {
            _ = state.metrics.dora_dirty.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = stop.cancelled() => return,
        }
        // Changes come in bursts (a deployment, its rollback, the next environment).
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fresh server exposes, and how counts show: names, types and labels as
    /// Prometheus expects them.
    #[test]
    fn metrics_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.runs_started.with_label_values(&["app"]).inc();
        m.runs_finished.with_label_values(&["app", "success"]).inc();
        m.run_duration.with_label_values(&["app"]).observe(1.5);
        m.delivery("github", "accepted");
        let mut seen = Seen::default();
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "id": "d1", "repository_id": "r", "environment": "prod", "number": 1,
            "release_id": "rel", "kind": "rollback", "status": "verifying", "reason": null,
            "requested_by": "ferry", "previous_release_id": null, "config": null,
            "created_at": 0, "started_at": 1000, "finished_at": null,
            "verification_started_at": 2000, "verification_finished_at": null
        }))
        .expect("a deployment");
        m.deployment(&d, "app", &mut seen);
        d.status = DeploymentStatus::Failed;
        d.finished_at = Some(4000);
        // Told twice: counted once.
        m.deployment(&d, "app", &mut seen);
        m.deployment(&d, "app", &mut seen);
        let health = [("app".to_string(), "prod".to_string(), Health::Down)];
        let text = m.render(3, 1, &health, &[]).expect("render");
        for want in [
            "# TYPE ferry_runs_started_total counter",
            "ferry_runs_started_total{repository=\"app\"} 1",
            "ferry_runs_finished_total{repository=\"app\",result=\"success\"} 1",
            "# TYPE ferry_run_duration_seconds histogram",
            "ferry_run_duration_seconds_bucket{repository=\"app\",le=\"2.5\"} 1",
            "ferry_run_duration_seconds_sum{repository=\"app\"} 1.5",
            "ferry_webhook_deliveries_total{outcome=\"accepted\",provider=\"github\"} 1",
            "ferry_runs{state=\"queued\"} 3",
            "ferry_rollbacks_total{cause=\"automatic\",environment=\"prod\",repository=\"app\"} 1",
            "ferry_deployments_finished_total{environment=\"prod\",repository=\"app\",result=\"failed\"} 1",
            "ferry_deployment_duration_seconds_sum{environment=\"prod\",repository=\"app\"} 3",
            "ferry_verification_failures_total{environment=\"prod\",repository=\"app\"} 1",
            "ferry_environment_health{environment=\"prod\",repository=\"app\",state=\"down\"} 1",
            "ferry_environment_health{environment=\"prod\",repository=\"app\",state=\"healthy\"} 0",
            "ferry_runs{state=\"running\"} 1",
            &format!(
                "ferry_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(text.contains(want), "{want} in:\n{text}");
        }
    }
}
