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
    let wants = [
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
    ];
    // The counters follow the run's events, which may land just after the run is
    // recorded finished: read again for a while.
    let mut text = String::new();
    for _ in 0..100 {
        let answer = s
            .send(s.request("GET", "/metrics").bearer_auth(&s.admin))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        text = answer.text;
        if wants.iter().all(|w| text.contains(w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for want in wants {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains(&run), "no run id as a label");
    // Prometheus' own check of the format and its naming conventions.
    ferry_testkit::server::promtool(&text);
    s.stop().await;
}

/// Ends a child process when dropped (a test that fails leaves nothing behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real Prometheus (Debian's `prometheus`, which scripts/test.sh installs), started
/// on 127.0.0.1 with the scrape job docs/server.md shows, scrapes the server with a
/// viewer's token: the target is up and a run's count is in its database.
#[tokio::test]
async fn a_real_prometheus_scrapes_the_server() {
    let s = Server::start().await;
    s.add_repository("app", "jobs:\n  build:\n    run: echo hi\n")
        .await;
    let run = s.trigger("app").await;
    assert_eq!(s.finished(&run).await["run"]["status"], "success");
    let viewer = s.user("grafana", "viewer").await;
    let dir = s.dir().join("prometheus");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("ferry-token"), &viewer).expect("token");
    let target = s.client().base().trim_start_matches("http://").to_string();
    let config = format!(
        "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}
scrape_configs:
  - job_name: ferry
    metrics_path: /metrics
    authorization: {{ credentials_file: {token} }}
    static_configs: [{{ targets: [\"{target}\"] }}]
",
        token = dir.join("ferry-token").display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let port = ferry_testkit::server::free_port();
    let _prometheus = Child(
        std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("prometheus (Debian's `prometheus` package; scripts/test.sh installs it)"),
    );
    let query = async |q: &str| -> Option<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    };
    let log = || std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let up = ferry_testkit::server::wait_for("Prometheus scraped Ferry", async || {
        match query("up{job=\"ferry\"}").await {
            Some(v) if v == "1" => Ok(v),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(up, "1", "{}", log());
    let runs = query("ferry_runs_finished_total{repository=\"app\",result=\"success\"}").await;
    assert_eq!(runs.as_deref(), Some("1"), "{}", log());
    let samples = query("scrape_samples_post_metric_relabeling{job=\"ferry\"}").await;
    assert!(
        samples.is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 10)),
        "{}",
        log()
    );
    s.stop().await;
}
