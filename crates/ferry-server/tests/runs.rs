//! Runs through the API: triggering, trigger errors and variables, cancelling, logs,
//! live events, re-runs and concurrency groups.

use std::path::PathBuf;

use ferry_testkit::server::{
    Options, Server, log_text, message, read_sse, run_id_in, wait_for, wait_for_exit,
    wait_for_file, wait_for_lines,
};
use serde_json::json;

#[tokio::test]
async fn a_triggered_run_executes_and_its_log_is_served() {
    let s = Server::start().await;
    let bare = s.repository("app", Some("jobs:\n  hello:\n    run: echo \"hello from $FERRY_BRANCH at $FERRY_COMMIT_SHORT_SHA\"\n"));
    let (status, body) = s
        .admin("POST", "/api/v1/repos", Some(json!({ "name": "app", "url": bare.display().to_string(), "webhook_secret": "hush" })))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        !body.to_string().contains("hush"),
        "the webhook secret is not returned"
    );
    let (status, body) = s.trigger_with("app", json!({ "ref": "main" })).await;
    assert_eq!(status, 201, "{body}");
    let run_id = run_id_in(&body);
    assert_eq!(body["run"]["triggered_by"], "user:admin");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    assert_eq!(detail["jobs"][0]["name"], "hello");
    assert_eq!(detail["jobs"][0]["steps"][0]["status"], "success");
    assert_eq!(detail["plan"]["event"]["kind"], "manual");
    let log = s
        .send(
            s.request("GET", &format!("/api/v1/runs/{run_id}/jobs/hello/log"))
                .bearer_auth(&s.admin),
        )
        .await;
    assert_eq!(log.headers["x-ferry-log-complete"], "true");
    assert!(log.text.starts_with("hello from main at "), "{}", log.text);
    let (_, list) = s
        .admin("GET", "/api/v1/runs?repo=app&status=success", None)
        .await;
    assert_eq!(list["runs"].as_array().map(Vec::len), Some(1), "{list}");
    s.stop().await;
}

/// A log is served in pages of at most 1 MiB that say where they start and where the
/// next starts; `tail` starts at the last lines, however long the log.
#[tokio::test]
async fn logs_are_paged_and_tailed() {
    let s = Server::start().await;
    let bare = s.repository("app", Some("jobs:\n  big:\n    run: seq 1 200000\n"));
    s.register("app", &bare).await;
    let (_, body) = s.trigger_with("app", json!({ "ref": "main" })).await;
    let run_id = run_id_in(&body);
    assert_eq!(s.finished(&run_id).await["run"]["status"], "success");
    let path = format!("/api/v1/runs/{run_id}/jobs/big/log");
    let page = |query: &'static str| {
        let request = s
            .request("GET", &format!("{path}?{query}"))
            .bearer_auth(&s.admin);
        s.send(request)
    };
    let first = page("").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text.len(), 1 << 20, "one page");
    assert_eq!(first.headers["x-ferry-log-offset"], "0");
    assert_eq!(first.headers["x-ferry-log-next"], "1048576");
    assert_eq!(first.headers["x-ferry-log-complete"], "false");
    let rest = page("offset=1048576").await;
    assert_eq!(rest.text.len(), 1_288_895 - (1 << 20));
    assert_eq!(rest.headers["x-ferry-log-complete"], "true");
    let tail = page("tail=2").await;
    assert_eq!(tail.text, "199999\n200000\n");
    assert_eq!(tail.headers["x-ferry-log-offset"], "1288881");
    assert_eq!(tail.headers["x-ferry-log-complete"], "true");
    let bad = page("tail=many").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    // From any line, found from the log's time index.
    let at = page("line=150000&limit=21").await;
    assert_eq!(at.text, "150000\n150001\n150002\n");
    assert_eq!(at.headers["x-ferry-log-offset"], "938888");
    assert_eq!(at.headers["x-ferry-log-complete"], "false");
    let past = page("line=300000").await;
    assert_eq!((past.status, past.text.as_str()), (200, ""));
    assert_eq!(past.headers["x-ferry-log-complete"], "true");
    let far = page("line=18446744073709551615").await;
    assert_eq!((far.status, far.text.as_str()), (200, ""));
    assert_eq!(far.headers["x-ferry-log-offset"], "1288895", "the end");
    let both = page("line=3&tail=2").await;
    assert_eq!(both.status, 400, "{}", both.text);
    assert!(
        both.text
            .contains("`tail` and `line` cannot be used together")
    );
    // Finished, the log is stored compressed: seekable zstd, smaller than the text.
    let logs = s.dir().join("data").join("logs").join(&run_id);
    let stored: Vec<_> = std::fs::read_dir(&logs)
        .expect("logs")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].to_string_lossy().ends_with(".log.zst"),
        "{stored:?}"
    );
    let size = std::fs::metadata(&stored[0]).expect("size").len();
    assert!(
        size * 2 < 1_288_895,
        "{size} bytes (numbers compress less than text)"
    );
    s.stop().await;
}

#[tokio::test]
async fn trigger_errors_are_clear() {
    let s = Server::start().await;
    let bare = s.repository("bad", Some("jobs:\n  x:\n    runn: make\n"));
    let empty = s.repository("empty", None);
    for (name, url) in [("bad", &bare), ("empty", &empty)] {
        s.register(name, url).await;
    }
    let (status, body) = s.trigger_with("bad", json!({ "ref": "main" })).await;
    assert_eq!(status, 422, "{body}");
    let unknown_key = ".ferry.yml:3:5: error: unknown key `runn`";
    assert!(message(&body).contains(unknown_key), "{body}");
    let (status, body) = s.trigger_with("empty", json!({ "ref": "main" })).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (422, Some("the commit has no .ferry.yml"))
    );
    let (status, body) = s.trigger_with("bad", json!({ "ref": "nope" })).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "`nope` is not a branch, tag or commit");
    let (status, body) = s.trigger_with("bad", json!({ "reff": "main" })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "invalid_body");
    let (status, _) = s.trigger_with("missing", json!({ "ref": "main" })).await;
    assert_eq!(status, 404);
    assert!(s.all_runs().await.is_empty(), "nothing was queued");
    s.stop().await;
}

/// Variables given with a trigger reach every job; bad names are refused.
#[tokio::test]
async fn trigger_variables_reach_the_jobs() {
    let s = Server::start().await;
    let pipeline = "env:\n  GREETING: hello\njobs:\n  show:\n    run: echo \"$GREETING $TARGET\"\n";
    s.add_repository("vars", pipeline).await;
    let variables = json!({ "TARGET": "staging", "GREETING": "hi" });
    let (status, body) = s
        .trigger_with("vars", json!({ "ref": "main", "variables": variables }))
        .await;
    assert_eq!(status, 201, "{body}");
    let run_id = run_id_in(&body);
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "success");
    let log = s.log(&run_id, "show").await;
    assert_eq!(
        log, "hi staging\n",
        "trigger variables come after the pipeline's env"
    );
    let reserved = json!({ "ref": "main", "variables": { "FERRY_JOB": "x" } });
    let (status, body) = s.trigger_with("vars", reserved).await;
    assert_eq!(status, 422, "{body}");
    s.stop().await;
}

/// Registers `repo`, whose job `job` writes its process id to the file returned, then
/// sleeps 300 s; `head` is what the pipeline says before `jobs:`.
async fn sleeper(s: &Server, repo: &str, head: &str, job: &str) -> PathBuf {
    let pidfile = s.dir().join("pids");
    let pipeline = format!(
        "{head}jobs:\n  {job}:\n    run: echo $$ >> {}; sleep 300\n",
        pidfile.display()
    );
    s.add_repository(repo, &pipeline).await;
    pidfile
}

#[tokio::test]
async fn cancel_stops_a_running_run() {
    let s = Server::start().await;
    let pidfile = sleeper(&s, "slow", "", "slow").await;
    let run_id = s.trigger("slow").await;
    let pid: i32 = wait_for_file(&pidfile).await.trim().parse().expect("pid");
    let (status, body) = s.cancel(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let detail = s.finished(&run_id).await;
    assert_eq!(detail["run"]["status"], "cancelled");
    wait_for_exit(pid, "the step ended by the cancel").await;
    let (status, _) = s.cancel(&run_id).await;
    assert_eq!(status, 409, "a finished run cannot be cancelled");
    s.stop().await;
}

/// A client that connects while a step prints gets every line once, in order.
#[tokio::test]
async fn live_logs_have_no_gap_and_no_duplicate() {
    let s = Server::start().await;
    // The step prints half its lines, then waits (bounded) for the test to open the
    // gate: the client connects in the middle by construction, not by timing.
    let gate = s.dir().join("gate");
    let pipeline = format!(
        "jobs:
  chatty:
    run: |
      i=0
      while [ $i -lt 300 ]; do
        if [ $i -eq 150 ]; then
          n=0; while [ ! -e {gate} ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done
        fi
        echo \"line $i\"; i=$((i+1))
      done
",
        gate = gate.display()
    );
    s.add_repository("chatty", &pipeline).await;
    let run_id = s.trigger("chatty").await;
    let stored = wait_for("the first half of the log stored", async || {
        let text = s.log(&run_id, "chatty").await;
        if text.lines().count() >= 150 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert!(!stored.contains("line 150"), "the step waits at the gate");
    let resp = s.client().connect_events(&run_id).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    std::fs::write(&gate, "").expect("open the gate");
    let events = read_sse(resp).await;
    let text = log_text(&events);
    let expected: String = (0..300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, expected, "every line once, in order");
    let (kind, last) = events.last().expect("events");
    assert_eq!(
        (kind.as_str(), last["status"].as_str()),
        ("end", Some("success"))
    );
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "job" && d["status"] == "success")
    );
    // A finished run streams its stored state and ends at once.
    let again = s.events(&run_id).await;
    let text = log_text(&again);
    assert_eq!(text, expected);
    // A client whose stream ended comes back with what it has: it gets the rest only.
    let had: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let query = format!("offsets=%7B%22chatty%22%3A{}%7D", had.len());
    let resumed = read_sse(s.client().connect_events_with(&run_id, &query).await).await;
    assert_eq!(format!("{had}{}", log_text(&resumed)), expected);
    let bad = s
        .client()
        .connect_events_with(&run_id, "offsets=%7Bnope")
        .await;
    assert_eq!(bad.status().as_u16(), 422);
    s.stop().await;
}

/// The same for a log too big to stay plain: its newest output may still wait in
/// memory to be compressed when the client connects, and the stream waits for it
/// rather than leave a hole.
#[tokio::test]
async fn live_logs_of_a_compressed_log_have_no_gap() {
    let s = Server::start().await;
    let gate = s.dir().join("gate");
    // Waits (bounded) for the test to create the gate file.
    let wait = format!(
        "n=0; while [ ! -e {} ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done",
        gate.display()
    );
    let pipeline = format!(
        "jobs:\n  big:\n    run: |\n      seq 1 400000\n      {wait}\n      echo after\n      sleep 1.5\n"
    );
    s.add_repository("big", &pipeline).await;
    let run_id = s.trigger("big").await;
    // The first 2 MiB are compressed frames in the files; the last 0.6 MB of the first
    // part wait in memory for a second: the client connects then.
    let path = format!("/api/v1/runs/{run_id}/jobs/big/log?tail=1");
    let stored = wait_for("two frames of the log stored", async || {
        let last = s.send(s.request("GET", &path).bearer_auth(&s.admin)).await;
        let end: u64 = last.headers["x-ferry-log-next"]
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if end >= 2 << 20 {
            Ok(last.text)
        } else {
            Err(end)
        }
    })
    .await;
    assert_ne!(
        stored, "300000\n",
        "the end of the first part is not in the files yet"
    );
    let resp = s.client().connect_events(&run_id).await;
    std::fs::write(&gate, "").expect("open the gate");
    let events = read_sse(resp).await;
    let text = log_text(&events);
    let expected = (1..=400_000).map(|i| format!("{i}\n")).collect::<String>() + "after\n";
    assert!(
        text == expected,
        "every line once, in order ({} bytes of {})",
        text.len(),
        expected.len()
    );
    s.stop().await;
}

/// Re-running only the failed jobs keeps the others' results and artifacts.
#[tokio::test]
async fn rerun_whole_or_only_failed_jobs() {
    let s = Server::start().await;
    // Each build adds a line to `builds`; `flaky` fails until `fixed` exists.
    let pipeline = format!(
        "jobs:\n  build:\n    run: echo x >> {dir}/builds; mkdir -p out; echo artifact > out/bin\n    artifacts: [out/bin]\n  flaky:\n    run: test -e {dir}/fixed\n  after:\n    needs: [build, flaky]\n    run: cat out/bin\n",
        dir = s.dir().display()
    );
    let (counter, fixed) = (s.dir().join("builds"), s.dir().join("fixed"));
    s.add_repository("rr", &pipeline).await;
    let first = s.trigger("rr").await;
    let detail = s.finished(&first).await;
    assert_eq!(detail["run"]["status"], "failed");
    std::fs::write(&fixed, "").expect("fix");
    let (status, body) = s.rerun(&first, true).await;
    assert_eq!(status, 201, "{body}");
    let second = run_id_in(&body);
    let detail = s.finished(&second).await;
    assert_eq!(detail["run"]["status"], "success", "{detail}");
    let jobs = detail["jobs"].as_array().expect("jobs");
    let build = jobs.iter().find(|j| j["name"] == "build").expect("build");
    assert_eq!(build["status"], "success");
    assert_eq!(build["reason"], "succeeded in run 1; reused");
    let builds = || {
        std::fs::read_to_string(&counter)
            .expect("count")
            .lines()
            .count()
    };
    assert_eq!(builds(), 1, "build did not run again");
    let log = s.log(&second, "after").await;
    assert_eq!(
        log, "artifact\n",
        "the reused job's artifacts reach the jobs that need them"
    );
    assert_eq!(
        detail["run"]["commit_sha"],
        s.store.run_by_id(&first).await.expect("run").commit_sha
    );
    // A whole re-run runs everything again; nothing failed now, so failed-only refuses.
    let (status, body) = s.rerun(&second, false).await;
    assert_eq!(status, 201, "{body}");
    let third = run_id_in(&body);
    assert_eq!(s.finished(&third).await["run"]["status"], "success");
    assert_eq!(builds(), 2);
    let (status, body) = s.rerun(&third, true).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("nothing_failed"))
    );
    s.stop().await;
}

/// A newer run of a concurrency group with `cancel_in_progress` cancels the running one.
#[tokio::test]
async fn concurrency_groups_supersede_older_runs() {
    let s = Server::start().await;
    let group = "concurrency:\n  group: deploy-${{ event.branch }}\n  cancel_in_progress: true\n";
    let pidfile = sleeper(&s, "deploys", group, "deploy").await;
    let first = s.trigger("deploys").await;
    wait_for_file(&pidfile).await;
    let second = s.trigger("deploys").await;
    let detail = s.finished(&first).await;
    assert_eq!(
        detail["run"]["status"], "cancelled",
        "the newer run superseded it"
    );
    // The second now runs (and sleeps): cancel it to end the test.
    wait_for_lines(&pidfile, 2).await; // the second run's step started
    let d = s.get(&format!("/api/v1/runs/{second}")).await;
    assert_eq!(d["run"]["status"], "running");
    s.cancel(&second).await;
    assert_eq!(s.finished(&second).await["run"]["status"], "cancelled");
    s.stop().await;
}

/// With `keep_runs`, a repository keeps its newest runs (and any run a release was
/// sealed from): older finished runs go with their logs and artifacts once a newer run
/// ends.
#[tokio::test]
async fn old_runs_are_deleted_by_the_retention_policy() {
    let s = Server::start_with(Options {
        keep_runs: Some(2),
        ..Options::default()
    })
    .await;
    let pipeline = "jobs:\n  build:\n    run: mkdir -p out && echo built > out/file && echo hello\n    artifacts: [out/file]\n";
    s.add_repository("kept", pipeline).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = s.trigger("kept").await;
        assert_eq!(s.finished(&id).await["run"]["status"], "success");
        ids.push(id);
    }
    // The last run's end applied the policy: runs 1 and 2 are gone, with their files.
    s.wait_until("/api/v1/runs?repo=kept", "two runs left", |b| {
        b["runs"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    for gone in &ids[..2] {
        let (status, _) = s.admin("GET", &format!("/api/v1/runs/{gone}"), None).await;
        assert_eq!(status, 404, "run {gone}");
        for dir in ["logs", "artifacts"] {
            assert!(
                !s.dir().join("data").join(dir).join(gone).exists(),
                "{dir} of {gone}"
            );
        }
    }
    for kept in &ids[2..] {
        assert!(s.dir().join("data/logs").join(kept).exists());
        assert_eq!(s.log(kept, "build").await, "hello\n");
    }
    s.stop().await;
}
