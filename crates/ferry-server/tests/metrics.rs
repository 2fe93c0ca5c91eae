//! `GET /metrics`: Prometheus' text format, checked by Prometheus' own `promtool`
//! (Debian's `prometheus` package, which scripts/test.sh installs), with what a run and
//! webhook deliveries count.

use ferry_testkit::server::Server;

#[tokio::test]
async fn metrics_count_runs_and_deliveries_and_pass_promtool() {
    let s = Server::start().await;
    s.add_repository("app", "jobs:\n  build:\n    run: echo hi\n")
        .await;
    let run = s.trigger("app").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    // A delivery to a repository that does not exist is refused (and counted).
    let refused = s
        .send(
            s.request("POST", "/api/v1/hooks/github/nope")
                .header("x-github-event", "push")
                .body("{}"),
        )
        .await;
    assert_eq!(refused.status, 401);
    // Without a token: refused like every other route.
    let anonymous = s.send(s.request("GET", "/metrics")).await;
    assert_eq!(anonymous.status, 401);
    let answer = s
        .send(s.request("GET", "/metrics").bearer_auth(&s.admin))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.text;
    for want in [
        "ferry_runs_started_total{repository=\"app\"} 1",
        "ferry_runs_finished_total{repository=\"app\",result=\"success\"} 1",
        "ferry_run_duration_seconds_count{repository=\"app\"} 1",
        "ferry_run_queue_wait_seconds_count{repository=\"app\"} 1",
        "ferry_jobs_finished_total{repository=\"app\",result=\"success\"} 1",
        "ferry_job_duration_seconds_count{repository=\"app\"} 1",
        "ferry_steps_started_total{repository=\"app\"} 1",
        "ferry_steps_finished_total{repository=\"app\",result=\"success\"} 1",
        "ferry_step_duration_seconds_count{repository=\"app\"} 1",
        "ferry_webhook_deliveries_total{outcome=\"refused\",provider=\"github\"} 1",
        "ferry_runs{state=\"queued\"} 0",
        "ferry_runs{state=\"running\"} 0",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains(&run), "no run id as a label");
    // Prometheus' own check of the format and its naming conventions.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; scripts/test.sh installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}
