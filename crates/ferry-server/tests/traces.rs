//! Traces, end to end: the server exports runs and deployments over OTLP/HTTP to a
//! receiver the test starts on 127.0.0.1, which decodes the protobuf requests (the
//! OpenTelemetry collector's own message types) and checks the span trees. The
//! receiver refuses the first request with 503, as a collector under load does: the
//! export is tried again and nothing is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_server::traces::TraceConfig;
use ferry_testkit::server::{Options, Server, push_version, shop_with_v1, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Default)]
struct Got {
    requests: u32,
    spans: Vec<Span>,
    headers: Vec<axum::http::HeaderMap>,
    resources: Vec<Vec<(String, String)>>,
}

type Shared = Arc<Mutex<Got>>;

async fn receiver() -> (u16, Shared) {
    let got: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/otlp/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    let mut got = keep.lock().expect("lock");
                    got.requests += 1;
                    if got.requests == 1 {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            Vec::new(),
                        );
                    }
                    let req = ExportTraceServiceRequest::decode(body.as_ref())
                        .expect("an OTLP protobuf request");
                    for rs in req.resource_spans {
                        let attrs = rs
                            .resource
                            .map(|r| r.attributes)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value))))
                            .collect();
                        got.resources.push(attrs);
                        for ss in rs.scope_spans {
                            got.spans.extend(ss.spans);
                        }
                    }
                    got.headers.push(headers);
                    (
                        axum::http::StatusCode::OK,
                        [("x-receiver", "ok")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

fn text(v: Option<Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.clone().and_then(|v| v.value)))
}

fn code(s: &Span) -> i32 {
    s.status.as_ref().map(|s| s.code).unwrap_or(0)
}

const OK: i32 = 1;
const ERROR: i32 = 2;

/// Every span is inside its parent's time, and every parent is in the trace.
fn check_tree(spans: &[Span]) {
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    for s in spans {
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{}", s.name);
        if s.parent_span_id.is_empty() {
            continue;
        }
        let parent = by_id
            .get(s.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("the parent of {} is in the trace", s.name));
        assert_eq!(parent.trace_id, s.trace_id);
        assert!(
            parent.start_time_unix_nano <= s.start_time_unix_nano
                && s.end_time_unix_nano <= parent.end_time_unix_nano,
            "{} lies within {}",
            s.name,
            parent.name
        );
    }
}

const PIPELINE: &str = "jobs:
  build:
    steps:
      - name: compile
        run: echo compiling
      - name: link
        run: echo linking
  flaky:
    needs: [build]
    retry: 1
    steps:
      - name: prepare
        run: 'true'
      - name: check
        run: exit 3
  publish:
    needs: [flaky]
    run: echo never
";

#[tokio::test]
async fn runs_and_deployments_are_exported_as_traces() {
    let (port, got) = receiver().await;
    let s = Server::start_with(Options {
        traces: Some(TraceConfig {
            url: format!("http://127.0.0.1:{port}/otlp/v1/traces"),
            headers: vec![("x-api-key".into(), "trace-key-77".into())],
            ca_pem: None,
        }),
        ..Options::default()
    })
    .await;

    // A run: two steps that pass, a job that fails twice (one retry), a job skipped.
    let bare = s.repository("app", Some(PIPELINE));
    push_version(&s, "app", "v1");
    s.register("app", &bare).await;
    let run_id = s.trigger("app").await;
    assert_eq!(s.finished(&run_id).await["run"]["status"], "failed");
    let run = wait_for("the run's root span", async || {
        let got = got.lock().expect("lock");
        let spans: Vec<Span> = got
            .spans
            .iter()
            .filter(|s| attr(s, "cicd.pipeline.run.id").as_deref() == Some(run_id.as_str()))
            .cloned()
            .collect();
        match spans.first() {
            Some(root) => Ok(root.trace_id.clone()),
            None => Err(got.spans.len()),
        }
    })
    .await;
    let spans: Vec<Span> = {
        let got = got.lock().expect("lock");
        assert!(got.requests >= 2, "the 503 was followed by another try");
        for h in &got.headers {
            assert_eq!(h["content-type"], "application/x-protobuf");
            assert_eq!(h["x-api-key"], "trace-key-77");
        }
        let resource = &got.resources[0];
        assert!(
            resource.contains(&("service.name".into(), "ferry".into())),
            "{resource:?}"
        );
        got.spans
            .iter()
            .filter(|s| s.trace_id == run)
            .cloned()
            .collect()
    };
    check_tree(&spans);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let one = |name: &str| -> &Span {
        let all: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(all.len(), 1, "one span {name} in {names:?}");
        all[0]
    };
    let root = one("run app");
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        attr(root, "cicd.pipeline.result").as_deref(),
        Some("failure")
    );
    assert_eq!(attr(root, "ferry.run.number").as_deref(), Some("1"));
    assert_eq!(
        attr(root, "vcs.ref.head.name").as_deref(),
        Some("refs/heads/main")
    );
    assert_eq!(code(root), ERROR);
    assert!(attr(root, "ferry.queue_wait_ms").is_some());
    let queued = one("queued");
    assert_eq!(queued.parent_span_id, root.span_id);
    assert_eq!(queued.start_time_unix_nano, root.start_time_unix_nano);

    let build = one("job build");
    assert_eq!(build.parent_span_id, root.span_id);
    assert_eq!(code(build), OK);
    assert_eq!(attr(build, "ferry.job.attempts").as_deref(), Some("1"));
    for step in ["step compile", "step link"] {
        let st = one(step);
        assert_eq!(st.parent_span_id, build.span_id);
        assert_eq!(code(st), OK);
    }
    assert!(one("step compile").end_time_unix_nano <= one("step link").start_time_unix_nano);

    let flaky = one("job flaky");
    assert_eq!(code(flaky), ERROR);
    assert_eq!(
        attr(flaky, "cicd.pipeline.task.run.result").as_deref(),
        Some("failure")
    );
    assert_eq!(attr(flaky, "ferry.job.attempts").as_deref(), Some("2"));
    assert_eq!(flaky.events.len(), 1, "one retry");
    assert_eq!(flaky.events[0].name, "retry");
    assert!(
        build.end_time_unix_nano <= flaky.start_time_unix_nano,
        "flaky needs build"
    );
    let checks: Vec<&Span> = spans.iter().filter(|s| s.name == "step check").collect();
    assert_eq!(checks.len(), 2, "one check per attempt");
    let mut attempts: Vec<String> = checks
        .iter()
        .map(|c| attr(c, "ferry.job.attempt").expect("attempt"))
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["1", "2"]);
    for c in &checks {
        assert_eq!(c.parent_span_id, flaky.span_id);
        assert_eq!(code(c), ERROR);
        assert_eq!(attr(c, "process.exit.code").as_deref(), Some("3"));
    }

    let publish = one("job publish");
    assert_eq!(
        attr(publish, "cicd.pipeline.task.run.result").as_deref(),
        Some("skip")
    );
    assert_eq!(attr(publish, "ferry.job.attempts").as_deref(), Some("0"));
    assert!(attr(publish, "ferry.job.reason").is_some());
    assert_eq!(spans.len(), 2 + 3 + 2 + 4, "{names:?}");

    // Deployments: sandbox and staging go live through their verification; the
    // `broken` environment's process cannot start.
    shop_with_v1(&s, "shop").await;
    let release = ferry_testkit::server::live_release(&s, "shop", "sandbox").await;
    let (status, body) = ferry_testkit::server::promote(&s, "shop", &release, "broken").await;
    assert_eq!(status, 201, "{body}");
    s.wait_until(
        "/api/v1/repos/shop/deployments?environment=broken",
        "broken#1 failed",
        |b| b["deployments"][0]["status"] == "failed",
    )
    .await;
    let deploy = |env: &'static str| {
        let got = got.clone();
        async move {
            wait_for(&format!("the trace of deploy {env}"), async || {
                let got = got.lock().expect("lock");
                let Some(root) = got.spans.iter().find(|s| s.name == format!("deploy {env}"))
                else {
                    return Err(got.spans.len());
                };
                let spans: Vec<Span> = got
                    .spans
                    .iter()
                    .filter(|s| s.trace_id == root.trace_id)
                    .cloned()
                    .collect();
                Ok(spans)
            })
            .await
        }
    };
    let staging = deploy("staging").await;
    check_tree(&staging);
    let by = |spans: &[Span], name: &str| -> Span {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in {spans:?}"))
            .clone()
    };
    let root = by(&staging, "deploy staging");
    assert_eq!(code(&root), OK);
    assert_eq!(
        attr(&root, "deployment.environment.name").as_deref(),
        Some("staging")
    );
    assert_eq!(attr(&root, "ferry.target").as_deref(), Some("process"));
    assert_eq!(
        attr(&root, "ferry.deployment.status").as_deref(),
        Some("live")
    );
    let rollout = by(&staging, "rollout");
    let verify = by(&staging, "verify");
    assert_eq!(rollout.parent_span_id, root.span_id);
    assert_eq!(verify.parent_span_id, root.span_id);
    assert_eq!(code(&verify), OK);
    assert!(rollout.end_time_unix_nano <= verify.start_time_unix_nano);
    // The verification window is 2 s.
    assert!(verify.end_time_unix_nano - verify.start_time_unix_nano >= 1_900_000_000);
    by(&staging, "waiting");
    assert_eq!(staging.len(), 4);

    let broken = deploy("broken").await;
    check_tree(&broken);
    let root = by(&broken, "deploy broken");
    assert_eq!(code(&root), ERROR);
    assert_eq!(
        attr(&root, "ferry.deployment.status").as_deref(),
        Some("failed")
    );
    assert!(!root.status.as_ref().expect("status").message.is_empty());
    assert!(broken.iter().all(|s| s.name != "deploy staging"));
    s.stop().await;
}
