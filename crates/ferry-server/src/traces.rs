//! Traces: each run and each deployment exported as an OpenTelemetry trace over
//! OTLP/HTTP (protobuf), to the endpoint `ferry serve --otlp-endpoint` names.
//!
//! A run is one trace: the run's span (from the moment it was queued), a `queued` span
//! for its wait, one span per job (retries are events on it and each attempt's steps
//! say which attempt they belong to), one span per step. A deployment is another: its
//! span, then `waiting` (queue and approvals), `rollout` (the target's work) and
//! `verify` (health verification), and a `rolled back` span when a live deployment
//! goes down and is rolled back. Ids come from the run's or deployment's id (a
//! SHA-256), so the same run always has the same trace id.
//!
//! Spans are made where things happen ([`RunTrace`], [`deployment`]) and handed to an
//! exporter task through a bounded queue: a tracing backend that is slow or down never
//! holds up a run; what cannot be queued or sent is counted
//! (`ferry_trace_spans_dropped_total`).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_engine::{EngineEvent, EventSink};
use ferry_store::Status;
use ferry_store::{Deployment, DeploymentStatus};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, span::Event, span::SpanKind, status::StatusCode,
};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where traces go.
#[derive(Clone, Default, educe::Educe)]
#[educe(Debug)]
pub struct TraceConfig {
    /// The OTLP/HTTP traces URL (`http://collector:4318/v1/traces`).
    pub url: String,
    /// Headers sent with each export (an API key: never logged).
    #[educe(Debug(ignore))]
    pub headers: Vec<(String, String)>,
    /// Extra trusted certificates (PEM), beside the system's.
    #[educe(Debug(ignore))]
    pub ca_pem: Option<Vec<u8>>,
}

/// The traces URL of an OTLP endpoint given as `OTEL_EXPORTER_OTLP_ENDPOINT` is (a
/// base: `/v1/traces` is added), or why it is not one.
pub fn traces_url(base: &str) -> Result<String, String> {
    // Messages show the URL without a user, password or query (credentials).
    let shown = match reqwest::Url::parse(base) {
        Ok(u) => without_secrets(&u),
        Err(_) if base.contains('@') || base.contains('?') => "the endpoint".to_string(),
        Err(_) => base.to_string(),
    };
    let url = reqwest::Url::parse(base).map_err(|e| format!("`{shown}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{shown}`: an OTLP/HTTP endpoint is http:// or https://"
        ));
    }
    Ok(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// Headers as `OTEL_EXPORTER_OTLP_HEADERS` lists them: `name=value,name2=value2`,
/// values percent-encoded.
pub fn parse_headers(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!(
                "OTLP headers: `{}` is not name=value",
                item.split('=').next().unwrap_or(item)
            ));
        };
        let name = name.trim();
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("OTLP headers: `{name}` is not a header name"))?;
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("OTLP headers: the value of `{name}` is not UTF-8"))?
            .into_owned();
        reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| format!("OTLP headers: the value of `{name}` is not a header value"))?;
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Spans waiting to be sent, at most (beyond it they are dropped and counted).
const QUEUE: usize = 8192;
/// Spans per export request, at most.
const BATCH: usize = 512;
/// How long a span may wait for others to fill its batch.
const LINGER: Duration = Duration::from_millis(500);
/// Waits before each further attempt at a batch the backend refused for now.
const RETRIES: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// The exporter's configuration and the queue it will read, until it starts.
pub(crate) type Waiting = (TraceConfig, mpsc::Receiver<Span>);

/// Hands spans to the exporter task (cheap to clone; see [`export`]).
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: mpsc::Sender<Span>,
    dropped: prometheus::IntCounter,
}

impl Tracer {
    /// A tracer and the queue its exporter reads.
    pub fn new(dropped: prometheus::IntCounter) -> (Tracer, mpsc::Receiver<Span>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Tracer { tx, dropped }, rx)
    }

    fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// Sends queued spans in batches until `stop`, then what is left (for at most 5 s).
pub(crate) async fn export(
    config: TraceConfig,
    mut rx: mpsc::Receiver<Span>,
    metrics: crate::metrics::Metrics,
    stop: CancellationToken,
) {
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("traces: {e}");
            return;
        }
    };
    let mut batch: Vec<Span> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            s = rx.recv() => s,
        };
        let Some(first) = first else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        send(
            &client,
            &config,
            std::mem::take(&mut batch),
            &metrics,
            &stop,
        )
        .await;
    }
    // Stopping: what is queued goes out once, briefly.
    rx.close();
    while let Ok(s) = rx.try_recv() {
        batch.push(s);
    }
    let last = async {
        for chunk in batch.chunks(BATCH) {
            send(
                &client,
                &config,
                chunk.to_vec(),
                &metrics,
                &CancellationToken::new(),
            )
            .await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), last)
        .await
        .is_err()
    {
        tracing::warn!("traces: stopped before every span was sent");
    }
}

fn client(config: &TraceConfig) -> Result<reqwest::Client, String> {
    // No redirects: one would carry the headers (an API key) to wherever it points.
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Ferry/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &config.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
            http = http.add_root_certificate(cert);
        }
    }
    http.build().map_err(|e| e.to_string())
}

/// One export request of `spans`, tried again (per the OTLP spec: on 429, 502, 503,
/// 504 and failed connections, after `Retry-After` when the backend says) until it
/// lands or [`RETRIES`] run out.
async fn send(
    client: &reqwest::Client,
    config: &TraceConfig,
    spans: Vec<Span>,
    metrics: &crate::metrics::Metrics,
    stop: &CancellationToken,
) {
    let n = spans.len() as u64;
    let body = request(spans).encode_to_vec();
    let mut waits = RETRIES.iter();
    loop {
        let mut req = client
            .post(&config.url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        for (name, value) in &config.headers {
            req = req.header(name, value);
        }
        let (why, after) = match req.send().await {
            Ok(r) if r.status().is_success() => {
                let bytes = read_at_most(r, 64 * 1024).await;
                let rejected = ExportTraceServiceResponse::decode(bytes.as_slice())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .filter(|p| p.rejected_spans > 0);
                match rejected {
                    Some(p) => {
                        let why: String = p.error_message.chars().take(256).collect();
                        tracing::warn!(
                            "traces: the backend rejected {} of {n} spans: {why:?}",
                            p.rejected_spans,
                        );
                        metrics.trace_spans_dropped.inc_by(p.rejected_spans as u64);
                        metrics
                            .trace_spans_exported
                            .inc_by(n.saturating_sub(p.rejected_spans as u64));
                    }
                    None => metrics.trace_spans_exported.inc_by(n),
                }
                return;
            }
            Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60)));
                (format!("{}", r.status()), after)
            }
            Ok(r) => {
                tracing::warn!(
                    "traces: {} refused {n} spans: {}",
                    config.url_without_secrets(),
                    r.status()
                );
                metrics.trace_spans_dropped.inc_by(n);
                return;
            }
            Err(e) => (root_cause(&e), None),
        };
        let Some(wait) = waits.next() else {
            tracing::warn!(
                "traces: {n} spans not sent to {}: {why}",
                config.url_without_secrets()
            );
            metrics.trace_spans_dropped.inc_by(n);
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(after.unwrap_or(*wait)) => {}
            _ = stop.cancelled() => {
                metrics.trace_spans_dropped.inc_by(n);
                return;
            }
        }
    }
}

/// The first `limit` bytes of an answer's body (a backend's answer is small; a hostile
/// one is not read whole).
async fn read_at_most(mut r: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    out
}

/// What went wrong at the bottom of `e` (without the URL, which reqwest's message
/// has).
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

impl TraceConfig {
    /// The URL without a user, password or query in it, for messages.
    fn url_without_secrets(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(u) => without_secrets(&u),
            Err(_) => "the OTLP endpoint".into(),
        }
    }
}

/// `url` without its user, password and query (credentials), for messages.
fn without_secrets(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

/// Text that leaves for the tracing backend (a reason, an error): credentials in URLs
/// (`user:password@`, a query) are cut out, and it is at most 512 bytes.
fn scrubbed(text: &str) -> String {
    let mut out = text
        .split(' ')
        .map(scrub_word)
        .collect::<Vec<_>>()
        .join(" ");
    if out.len() > 512 {
        let mut cut = 509;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// A word, or the URL in it without its credentials.
fn scrub_word(word: &str) -> String {
    let Some(at) = word.find("://") else {
        return word.to_string();
    };
    // The scheme begins after the last character no scheme has (`(`, `"`, `=` …).
    let start = word[..at]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |p| p + 1);
    match reqwest::Url::parse(&word[start..]) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() || u.query().is_some() => {
            format!("{}{}", &word[..start], without_secrets(&u))
        }
        _ => word.to_string(),
    }
}

/// The export request of `spans`: one resource (this server), one scope (Ferry).
pub fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "ferry"),
                    kv("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ferry".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// An attribute.
fn kv(key: &str, value: impl Into<Attr>) -> KeyValue {
    let value = match value.into() {
        Attr::S(s) => Value::StringValue(s),
        Attr::I(i) => Value::IntValue(i),
        Attr::B(b) => Value::BoolValue(b),
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

enum Attr {
    S(String),
    I(i64),
    B(bool),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Attr {
        Attr::S(s.into())
    }
}
impl From<String> for Attr {
    fn from(s: String) -> Attr {
        Attr::S(s)
    }
}
impl From<&String> for Attr {
    fn from(s: &String) -> Attr {
        Attr::S(s.clone())
    }
}
impl From<i64> for Attr {
    fn from(i: i64) -> Attr {
        Attr::I(i)
    }
}
impl From<bool> for Attr {
    fn from(b: bool) -> Attr {
        Attr::B(b)
    }
}

/// A trace id (16 bytes) for `what` (`run:ID`, `deployment:ID`).
pub fn trace_id(what: &str) -> Vec<u8> {
    Sha256::digest(what.as_bytes())[..16].to_vec()
}

/// A span id (8 bytes) for `what` within a trace.
pub fn span_id(trace: &[u8], what: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(trace);
    h.update(what.as_bytes());
    h.finalize()[..8].to_vec()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

/// A span's status: Ok, or an error with what went wrong.
fn status(
    ok: bool,
    message: Option<&str>,
) -> Option<opentelemetry_proto::tonic::trace::v1::Status> {
    Some(opentelemetry_proto::tonic::trace::v1::Status {
        message: if ok {
            String::new()
        } else {
            scrubbed(message.unwrap_or_default())
        },
        code: if ok {
            StatusCode::Ok
        } else {
            StatusCode::Error
        } as i32,
    })
}

/// The OpenTelemetry CI/CD word for how a run or job ended.
fn result_word(status: Status) -> &'static str {
    match status {
        Status::Success => "success",
        Status::Failed => "failure",
        Status::Cancelled => "cancellation",
        Status::Skipped => "skip",
        _ => "error",
    }
}

fn span(trace: &[u8], id: Vec<u8>, parent: &[u8], name: String, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id,
        parent_span_id: parent.to_vec(),
        name,
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        ..Default::default()
    }
}

/// The trace of one run, made from the engine's events as they come (an
/// [`EventSink`] in front of the run's other sinks).
pub struct RunTrace {
    tracer: Tracer,
    trace: Vec<u8>,
    root: Vec<u8>,
    /// The root span's name (`run REPO`) and attributes.
    root_name: String,
    root_attrs: Vec<KeyValue>,
    queued_at: u64,
    state: Mutex<RunState>,
}

impl std::fmt::Debug for RunTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTrace").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct RunState {
    started_at: Option<u64>,
    jobs: std::collections::HashMap<String, JobSpan>,
    done: bool,
}

struct JobSpan {
    id: Vec<u8>,
    start: u64,
    attempt: u32,
    events: Vec<Event>,
    steps: std::collections::HashMap<usize, (Vec<u8>, String, u64)>,
}

impl RunTrace {
    /// The trace of `run` (of repository `repository`), whose root span starts when the
    /// run was queued.
    pub fn new(
        tracer: Tracer,
        run: &ferry_store::Run,
        repository: &str,
        link: Option<String>,
    ) -> Self {
        let trace = trace_id(&format!("run:{}", run.id));
        let root = span_id(&trace, "run");
        let mut root_attrs = vec![
            kv("cicd.pipeline.name", repository),
            kv("cicd.pipeline.run.id", &run.id),
            kv("ferry.run.number", run.number),
            kv("ferry.run.event", &run.event),
            kv("vcs.repository.name", repository),
            kv("vcs.ref.head.revision", &run.commit_sha),
            kv("vcs.ref.head.name", run.git_ref.clone()),
        ];
        if let Some(by) = &run.triggered_by {
            root_attrs.push(kv("ferry.run.triggered_by", by));
        }
        if let Some(link) = link {
            root_attrs.push(kv("cicd.pipeline.run.url.full", link));
        }
        RunTrace {
            tracer,
            trace,
            root,
            root_name: format!("run {repository}"),
            root_attrs,
            queued_at: ms_to_ns(run.created_at),
            state: Mutex::default(),
        }
    }

    /// Ends the run's span (and any still open) when the engine did not: the run
    /// ended in an error before it finished. Does nothing after `RunFinished`.
    pub fn close(&self, error: &str) {
        self.finish(Status::Failed, Some(error), "error");
    }

    fn finish(&self, status: Status, error: Option<&str>, result: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.done {
            return;
        }
        st.done = true;
        let now = now_ns();
        let started = st.started_at.unwrap_or(now);
        // Anything still open ends with the run.
        for (name, job) in st.jobs.drain() {
            for (_, (id, step, start)) in job.steps {
                let mut s = span(&self.trace, id, &job.id, format!("step {step}"), start, now);
                s.status = status_of(Status::Cancelled, Some("the run ended"));
                self.tracer.send(s);
            }
            let mut s = span(
                &self.trace,
                job.id,
                &self.root,
                format!("job {name}"),
                job.start,
                now,
            );
            s.events = job.events;
            s.status = status_of(Status::Cancelled, Some("the run ended"));
            self.tracer.send(s);
        }
        let mut q = span(
            &self.trace,
            span_id(&self.trace, "queued"),
            &self.root,
            "queued".into(),
            self.queued_at,
            started,
        );
        let waited = kv(
            "ferry.queue_wait_ms",
            ((started.saturating_sub(self.queued_at)) / 1_000_000) as i64,
        );
        q.attributes.push(waited.clone());
        self.tracer.send(q);
        let mut root = span(
            &self.trace,
            self.root.clone(),
            &[],
            self.root_name.clone(),
            self.queued_at,
            now,
        );
        root.kind = SpanKind::Server as i32;
        root.attributes = self.root_attrs.clone();
        root.attributes.push(kv("cicd.pipeline.result", result));
        root.attributes.push(waited);
        root.status = status_of(status, error);
        self.tracer.send(root);
    }
}

fn status_of(
    s: Status,
    why: Option<&str>,
) -> Option<opentelemetry_proto::tonic::trace::v1::Status> {
    match s {
        Status::Success | Status::Skipped => status(true, None),
        _ => status(false, Some(why.unwrap_or(s.as_str()))),
    }
}

impl EventSink for RunTrace {
    fn event(&self, event: &EngineEvent<'_>) {
        let now = now_ns();
        match event {
            EngineEvent::RunStarted { .. } => {
                if let Ok(mut st) = self.state.lock() {
                    st.started_at = Some(now);
                }
            }
            EngineEvent::JobStarted { job, attempt } => {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                match st.jobs.get_mut(*job) {
                    Some(open) => {
                        open.attempt = *attempt;
                        open.events.push(Event {
                            time_unix_nano: now,
                            name: "retry".into(),
                            attributes: vec![kv("ferry.job.attempt", *attempt as i64)],
                            ..Default::default()
                        });
                    }
                    None => {
                        let id = span_id(&self.trace, &format!("job/{job}"));
                        st.jobs.insert(
                            job.to_string(),
                            JobSpan {
                                id,
                                start: now,
                                attempt: *attempt,
                                events: Vec::new(),
                                steps: Default::default(),
                            },
                        );
                    }
                }
            }
            EngineEvent::StepStarted { job, step, name } => {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                if let Some(open) = st.jobs.get_mut(*job) {
                    let id = span_id(
                        &self.trace,
                        &format!("job/{job}/attempt/{}/step/{step}", open.attempt),
                    );
                    open.steps.insert(*step, (id, name.to_string(), now));
                }
            }
            EngineEvent::StepFinished {
                job,
                step,
                status,
                exit_code,
            } => {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                let Some(open) = st.jobs.get_mut(*job) else {
                    return;
                };
                let Some((id, name, start)) = open.steps.remove(step) else {
                    return;
                };
                let mut s = span(
                    &self.trace,
                    id,
                    &open.id,
                    format!("step {name}"),
                    start,
                    now,
                );
                s.attributes = vec![
                    kv("ferry.step.name", name),
                    kv("ferry.step.index", *step as i64),
                    kv("ferry.job.attempt", open.attempt as i64),
                    kv("ferry.step.result", status.as_str()),
                ];
                if let Some(code) = exit_code {
                    s.attributes.push(kv("process.exit.code", *code as i64));
                }
                let why = exit_code.map(|c| format!("exit code {c}"));
                s.status = status_of(*status, why.as_deref());
                self.tracer.send(s);
            }
            EngineEvent::JobFinished {
                job,
                status,
                reason,
                tests,
                ..
            } => {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                let (id, start, attempts, events) = match st.jobs.remove(*job) {
                    Some(open) => (open.id, open.start, open.attempt, open.events),
                    // Never started (skipped, or cancelled while waiting).
                    None => (
                        span_id(&self.trace, &format!("job/{job}")),
                        now,
                        0,
                        Vec::new(),
                    ),
                };
                let mut s = span(
                    &self.trace,
                    id,
                    &self.root,
                    format!("job {job}"),
                    start,
                    now,
                );
                s.events = events;
                s.attributes = vec![
                    kv("cicd.pipeline.task.name", *job),
                    kv("cicd.pipeline.task.run.result", result_word(*status)),
                    kv("ferry.job.attempts", attempts as i64),
                ];
                if let Some(reason) = reason {
                    s.attributes.push(kv("ferry.job.reason", scrubbed(reason)));
                }
                if let Some(t) = tests {
                    s.attributes.push(kv("ferry.tests.passed", t.passed));
                    s.attributes.push(kv("ferry.tests.failed", t.failed));
                    s.attributes.push(kv("ferry.tests.skipped", t.skipped));
                }
                s.status = status_of(*status, *reason);
                self.tracer.send(s);
            }
            EngineEvent::RunFinished { status, .. } => {
                self.finish(*status, None, result_word(*status))
            }
            EngineEvent::Output { .. } => {}
        }
    }
}

/// A sink that passes every event to the run's trace, then on.
pub(crate) struct Traced {
    pub trace: std::sync::Arc<RunTrace>,
    pub inner: std::sync::Arc<dyn EventSink>,
}

impl std::fmt::Debug for Traced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced").finish_non_exhaustive()
    }
}

impl EventSink for Traced {
    fn event(&self, event: &EngineEvent<'_>) {
        self.trace.event(event);
        self.inner.event(event);
    }
}

/// The spans of a deployment that reached `status` (first seen now): the whole
/// deployment when it went live or ended, a `rolled back` span when a live one was
/// rolled back; nothing for other states.
pub fn deployment(
    d: &Deployment,
    repository: &str,
    target: Option<&str>,
    approvals: &[ferry_store::Approval],
) -> Vec<Span> {
    let trace = trace_id(&format!("deployment:{}", d.id));
    let root = span_id(&trace, "deployment");
    let now = now_ns();
    if d.status == DeploymentStatus::RolledBack && d.live_at.is_some() {
        // It went live (its trace is out) and went down: the rollback is told apart.
        let mut s = span(
            &trace,
            span_id(&trace, "rolled back"),
            &root,
            "rolled back".into(),
            now,
            now,
        );
        s.attributes.push(kv(
            "ferry.deployment.reason",
            scrubbed(d.reason.as_deref().unwrap_or_default()),
        ));
        s.status = status(false, d.reason.as_deref());
        return vec![s];
    }
    if !traced(d.status) {
        return Vec::new();
    }
    let start = ms_to_ns(d.created_at);
    let end = d.live_at.or(d.finished_at).map(ms_to_ns).unwrap_or(now);
    let ok = d.status == DeploymentStatus::Live;
    let mut spans = Vec::new();
    let started = d.started_at.map(ms_to_ns);
    let mut waiting = span(
        &trace,
        span_id(&trace, "waiting"),
        &root,
        "waiting".into(),
        start,
        started.unwrap_or(end),
    );
    waiting.events = approvals
        .iter()
        .map(|a| Event {
            time_unix_nano: ms_to_ns(a.created_at),
            name: a.decision.clone(),
            attributes: vec![kv("ferry.approval.user", &a.user_name)],
            ..Default::default()
        })
        .collect();
    spans.push(waiting);
    if let Some(started) = started {
        let verify_start = d.verification_started_at.map(ms_to_ns);
        let mut rollout = span(
            &trace,
            span_id(&trace, "rollout"),
            &root,
            "rollout".into(),
            started,
            verify_start.unwrap_or(end),
        );
        if let Some(t) = target {
            rollout.attributes.push(kv("ferry.target", t));
        }
        if verify_start.is_none() && !ok {
            rollout.status = status(false, d.reason.as_deref());
        }
        spans.push(rollout);
        if let Some(vs) = verify_start {
            let ve = d.verification_finished_at.map(ms_to_ns).unwrap_or(end);
            let mut verify = span(
                &trace,
                span_id(&trace, "verify"),
                &root,
                "verify".into(),
                vs,
                ve,
            );
            verify.status = if ok || d.status == DeploymentStatus::Cancelled {
                status(true, None)
            } else {
                status(false, d.reason.as_deref())
            };
            spans.push(verify);
        }
    }
    let mut r = span(
        &trace,
        root,
        &[],
        format!("deploy {}", d.environment),
        start,
        end,
    );
    r.kind = SpanKind::Server as i32;
    r.attributes = vec![
        kv("cicd.pipeline.name", repository),
        kv("deployment.environment.name", &d.environment),
        kv("deployment.id", &d.id),
        kv("ferry.deployment.number", d.number),
        kv("ferry.deployment.kind", d.kind.as_str()),
        kv("ferry.deployment.status", d.status.as_str()),
        kv("ferry.release.id", &d.release_id),
        kv(
            "ferry.rollback",
            d.status == DeploymentStatus::RolledBack || d.kind.as_str() == "rollback",
        ),
    ];
    if let Some(t) = target {
        r.attributes.push(kv("ferry.target", t));
    }
    if let Some(prev) = &d.previous_release_id {
        r.attributes.push(kv("ferry.previous_release.id", prev));
    }
    if let Some(by) = &d.requested_by {
        r.attributes.push(kv("ferry.requested_by", by));
    }
    r.status = if ok {
        status(true, None)
    } else {
        status(false, d.reason.as_deref().or(Some(d.status.as_str())))
    };
    spans.push(r);
    spans
}

/// Whether a deployment in `status` has (had) its trace sent: it went live or ended.
fn traced(status: DeploymentStatus) -> bool {
    matches!(
        status,
        DeploymentStatus::Live
            | DeploymentStatus::Failed
            | DeploymentStatus::RolledBack
            | DeploymentStatus::Rejected
            | DeploymentStatus::Cancelled
    )
}

/// Sends the spans of deployment `d` that reached its status just now (see
/// [`deployment`]), when traces are on.
pub(crate) async fn deployment_changed(state: &crate::AppState, d: &Deployment, repository: &str) {
    let Some(tracer) = &state.tracer else { return };
    // Only a deployment that went live or ended has spans: nothing to read before.
    if !traced(d.status) {
        return;
    }
    let target = match state.store.release(&d.repository_id, &d.release_id).await {
        Ok(release) => ferry_deliver::deliverer::delivery_of(&release)
            .ok()
            .and_then(|delivery| {
                let env = delivery
                    .environments
                    .iter()
                    .find(|e| e.name == d.environment)?;
                let deploy = env.deploy.as_ref().or(delivery.deploy.as_ref())?;
                Some(deploy.target.kind())
            }),
        Err(_) => None,
    };
    let approvals = state.store.approvals(&d.id).await.unwrap_or_default();
    for s in deployment(d, repository, target, &approvals) {
        tracer.send(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_store::DeploymentKind;

    #[test]
    fn credentials_in_urls_never_leave_in_spans_or_messages() {
        assert_eq!(
            scrubbed(
                "verification failed: GET https://ops:pw@app.example.com/healthz?token=s3 answered 503"
            ),
            "verification failed: GET https://app.example.com/healthz answered 503"
        );
        assert_eq!(scrubbed("(http://u:p@h/x)"), "(http://h/x)");
        assert_eq!(scrubbed("exit code 3"), "exit code 3");
        let long = "x".repeat(2000);
        assert_eq!(scrubbed(&long).len(), 512);
        let err = traces_url("ftp://user:hunter2@collector/?key=k2").expect_err("ftp");
        assert!(!err.contains("hunter2") && !err.contains("k2"), "{err}");
        let err = traces_url("http://user:hunter2@[bad/").expect_err("bad");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// A redirect is not followed: it would carry the headers (an API key) along.
    #[tokio::test]
    async fn an_export_does_not_follow_redirects() {
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = hits.clone();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(|| async {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", "/elsewhere")],
                    )
                }),
            )
            .route(
                "/elsewhere",
                axum::routing::post(move || {
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { axum::http::StatusCode::OK }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = TraceConfig {
            url: format!("http://127.0.0.1:{port}/v1/traces"),
            headers: vec![("api-key".into(), "k".into())],
            ca_pem: None,
        };
        let metrics = crate::metrics::Metrics::new();
        let spans = deployment(&deployment_at(DeploymentStatus::Failed), "shop", None, &[]);
        send(
            &client(&config).expect("client"),
            &config,
            spans,
            &metrics,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(metrics.trace_spans_dropped.get(), 4);
    }

    #[test]
    fn endpoints_and_headers_read_as_the_otlp_variables_say() {
        assert_eq!(
            traces_url("http://collector:4318").as_deref(),
            Ok("http://collector:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://otlp.example.com/base/").as_deref(),
            Ok("https://otlp.example.com/base/v1/traces")
        );
        assert!(traces_url("grpc://collector:4317").is_err());
        assert!(traces_url("collector:4318/x").is_err());
        assert_eq!(
            parse_headers("api-key=secret%3D1, x-team = ops ,").expect("headers"),
            vec![
                ("api-key".to_string(), "secret=1".to_string()),
                ("x-team".to_string(), "ops".to_string())
            ]
        );
        let err = parse_headers("api-key").expect_err("no value");
        assert_eq!(err, "OTLP headers: `api-key` is not name=value");
        // A bad header names the header, never its value.
        let err = parse_headers("bad name=hunter2").expect_err("bad name");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_headers("k=line%0Abreak-hunter2").expect_err("bad value");
        assert!(!err.contains("hunter2"), "{err}");
    }

    fn deployment_at(status: DeploymentStatus) -> Deployment {
        Deployment {
            id: "d1".into(),
            repository_id: "r".into(),
            environment: "production".into(),
            number: 3,
            release_id: "rel".into(),
            kind: DeploymentKind::Promotion,
            status,
            reason: Some("verification failed: 503".into()),
            requested_by: Some("user:ann".into()),
            previous_release_id: Some("rel0".into()),
            config: None,
            created_at: 1_000,
            started_at: Some(5_000),
            finished_at: Some(9_000),
            verification_started_at: Some(6_000),
            verification_finished_at: Some(9_000),
            live_at: None,
            target_ref: None,
        }
    }

    #[test]
    fn a_deployment_is_waiting_rollout_and_verify_under_its_span() {
        let approval = ferry_store::Approval {
            deployment_id: "d1".into(),
            user_id: "u".into(),
            user_name: "ann".into(),
            decision: "approve".into(),
            comment: None,
            created_at: 4_000,
            plan_sha256: None,
        };
        let spans = deployment(
            &deployment_at(DeploymentStatus::Failed),
            "shop",
            Some("docker"),
            std::slice::from_ref(&approval),
        );
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["waiting", "rollout", "verify", "deploy production"]);
        let root = &spans[3];
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.trace_id, trace_id("deployment:d1"));
        assert_eq!(
            (root.start_time_unix_nano, root.end_time_unix_nano),
            (1_000_000_000, 9_000_000_000)
        );
        for s in &spans[..3] {
            assert_eq!(s.parent_span_id, root.span_id);
        }
        let times: Vec<(u64, u64)> = spans[..3]
            .iter()
            .map(|s| {
                (
                    s.start_time_unix_nano / 1_000_000,
                    s.end_time_unix_nano / 1_000_000,
                )
            })
            .collect();
        assert_eq!(times, [(1_000, 5_000), (5_000, 6_000), (6_000, 9_000)]);
        assert_eq!(spans[0].events[0].name, "approve");
        let failed = StatusCode::Error as i32;
        assert_eq!(spans[2].status.as_ref().map(|s| s.code), Some(failed));
        assert_eq!(
            spans[2].status.as_ref().map(|s| s.message.as_str()),
            Some("verification failed: 503")
        );
        assert_eq!(root.status.as_ref().map(|s| s.code), Some(failed));

        // Still going: nothing yet. Live, then rolled back when it went down: the whole
        // trace once, then a `rolled back` span in the same trace.
        assert!(
            deployment(
                &deployment_at(DeploymentStatus::Verifying),
                "shop",
                None,
                &[]
            )
            .is_empty()
        );
        let mut live = deployment_at(DeploymentStatus::Live);
        live.live_at = Some(9_000);
        let spans = deployment(&live, "shop", None, &[]);
        assert_eq!(spans.len(), 4);
        assert!(
            spans
                .iter()
                .all(|s| s.status.as_ref().map(|s| s.code) != Some(failed))
        );
        let ok = StatusCode::Ok as i32;
        assert_eq!(spans[3].status.as_ref().map(|s| s.code), Some(ok));
        live.status = DeploymentStatus::RolledBack;
        let later = deployment(&live, "shop", None, &[]);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].name, "rolled back");
        assert_eq!(later[0].trace_id, spans[3].trace_id);
        assert_eq!(later[0].parent_span_id, spans[3].span_id);
    }
}
