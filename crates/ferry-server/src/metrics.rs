//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4): what the server
//! counts as things happen (runs, webhook deliveries) and what it reads at each scrape
//! (the queue, the process). Names follow Prometheus' conventions: a `ferry_` prefix,
//! `_total` for counters, `_seconds` for durations; label values are bounded (a
//! repository's name, a result, a provider), never a run id or a commit.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets of run and job durations, in seconds: 0.1 s to about 55 minutes.
const DURATION_BUCKETS: [f64; 16] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 1800.0, 2700.0,
    3300.0,
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
    /// Runs waiting and running now (set at each scrape).
    runs_now: IntGaugeVec,
    /// 1, labelled with the version.
    build_info: IntGauge,
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
            runs_now,
            build_info,
        }
    }

    /// Counts a webhook delivery.
    pub fn delivery(&self, provider: &str, outcome: &str) {
        self.deliveries
            .with_label_values(&[provider, outcome])
            .inc();
    }

    /// The text of every metric, with the queue's counts as of now.
    pub fn render(&self, queued: i64, running: i64) -> Result<String, String> {
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
        let text = m.render(3, 1).expect("render");
        for want in [
            "# TYPE ferry_runs_started_total counter",
            "ferry_runs_started_total{repository=\"app\"} 1",
            "ferry_runs_finished_total{repository=\"app\",result=\"success\"} 1",
            "# TYPE ferry_run_duration_seconds histogram",
            "ferry_run_duration_seconds_bucket{repository=\"app\",le=\"2.5\"} 1",
            "ferry_run_duration_seconds_sum{repository=\"app\"} 1.5",
            "ferry_webhook_deliveries_total{outcome=\"accepted\",provider=\"github\"} 1",
            "ferry_runs{state=\"queued\"} 3",
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
