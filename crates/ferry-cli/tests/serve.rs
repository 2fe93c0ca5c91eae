//! The real `ferry serve` binary: first start, the API over HTTP, a run from a real
//! bare repository, graceful stop, and a restart after `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{alive, git};
use serde_json::{Value, json};

/// A bare repository whose `main` holds `pipeline`.
fn bare_repo(tmp: &Path, pipeline: &str) -> PathBuf {
    let bare = tmp.join("origin.git");
    let work = tmp.join("work-tree");
    std::fs::create_dir_all(&work).expect("mkdir");
    git(
        tmp,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &bare.display().to_string(),
        ],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join(".ferry.yml"), pipeline).expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
    bare
}

struct Serve {
    child: Child,
    base: String,
    token: Option<String>,
}

/// Starts `ferry serve` on a free port and reads what it prints until it listens.
fn start(data: &Path, extra: &[&str]) -> Serve {
    let data = data.display().to_string();
    let mut args = vec!["--max-runs", "1", "--data-dir", &data];
    args.extend_from_slice(extra);
    start_with(&args)
}

fn start_with(extra: &[&str]) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("FERRY_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut token = None;
    let start = Instant::now();
    let base = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(t) = line.trim().strip_prefix("ferry_") {
            token = Some(format!("ferry_{t}"));
        }
        if let Some(rest) = line.strip_prefix("ferry: serving ") {
            break rest.split("/api/v1").next().expect("url").to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Serve { child, base, token }
}

async fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("method"), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wait_for(base: &str, token: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let (_, detail) = call(base, token, "GET", &format!("/api/v1/runs/{run}"), None).await;
        if done(&detail) {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {run} did not get there");
}

#[tokio::test]
async fn serve_runs_a_pushed_commit_and_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  hi:\n    run: echo hi from serve\n");
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server
        .token
        .clone()
        .expect("the first start prints the admin token");
    let (status, health) = call(&server.base, "", "GET", "/api/v1/health", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, _) = call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos",
        Some(json!({ "name": "app", "url": bare.display().to_string() })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos/app/runs",
        Some(json!({ "ref": "main" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = body["run"]["id"].as_str().expect("id").to_string();
    let detail = wait_for(&server.base, &token, &run, |d| {
        d["run"]["status"] == "success"
    })
    .await;
    assert_eq!(detail["jobs"][0]["status"], "success");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("term");
    let status = server.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "a SIGTERM ends the server cleanly");
    // A second start keeps the users: no new admin token is printed.
    let mut again = start(&data, &[]);
    assert!(again.token.is_none());
    let (status, _) = call(&again.base, &token, "GET", "/api/v1/runs", None).await;
    assert_eq!(status, 200, "the token still works after a restart");
    let _ = again.child.kill();
    let _ = again.child.wait();
}

#[tokio::test]
async fn after_kill_9_interrupted_runs_fail_clearly_and_queued_runs_still_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let marker = tmp.path().join("restarted");
    let pids = tmp.path().join("pids");
    let pipeline = format!(
        "jobs:\n  work:\n    run: |\n      if [ -e {m} ]; then echo quick; exit 0; fi\n      echo started; echo $$ >> {p}\n      sleep 300\n",
        m = marker.display(),
        p = pids.display()
    );
    let bare = bare_repo(tmp.path(), &pipeline);
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.token.clone().expect("token");
    call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos",
        Some(json!({ "name": "app", "url": bare.display().to_string() })),
    )
    .await;
    let (_, first) = call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos/app/runs",
        Some(json!({ "ref": "main" })),
    )
    .await;
    let (_, second) = call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos/app/runs",
        Some(json!({ "ref": "main" })),
    )
    .await;
    let first = first["run"]["id"].as_str().expect("id").to_string();
    let second = second["run"]["id"].as_str().expect("id").to_string();
    let start_wait = Instant::now();
    while std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "the first run did not start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let the log line reach the file, then crash the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.child.kill().expect("kill -9");
    server.child.wait().expect("wait");
    std::fs::write(&marker, "").expect("marker");

    let mut again = start(&data, &[]);
    let detail = wait_for(&again.base, &token, &first, |d| {
        d["run"]["status"] != "running"
    })
    .await;
    assert_eq!(detail["run"]["status"], "failed");
    assert_eq!(
        detail["run"]["error"],
        "interrupted: the server stopped before the run finished"
    );
    let log = reqwest::Client::new()
        .get(format!("{}/api/v1/runs/{first}/jobs/work/log", again.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert_eq!(log, "started\n", "the log written before the kill is kept");
    let detail = wait_for(&again.base, &token, &second, |d| {
        d["run"]["status"] == "success"
    })
    .await;
    assert_eq!(
        detail["jobs"][0]["status"], "success",
        "the queued run ran after the restart"
    );
    for pid in std::fs::read_to_string(&pids)
        .unwrap_or_default()
        .split_whitespace()
    {
        let pid: i32 = pid.parse().expect("pid");
        let mut gone = false;
        for _ in 0..250 {
            if !alive(pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            gone,
            "step process {pid} of the crashed server is still running"
        );
    }
    let _ = again.child.kill();
    let _ = again.child.wait();
}

/// The `ferry` CLI as a client: repositories, trigger and follow, runs, logs, re-run.
#[tokio::test]
async fn the_cli_drives_a_server() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(
        tmp.path(),
        "jobs:\n  one:\n    run: echo first job\n  two:\n    needs: one\n    run: echo second job; exit 3\n",
    );
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.token.clone().expect("token");
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "hush\n").expect("secret");
    let ferry = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .env("FERRY_SERVER", &server.base)
            .env("FERRY_TOKEN", &token)
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .env("NO_COLOR", "1");
        cmd.output().expect("ferry")
    };
    let out = ferry(&[
        "repos",
        "add",
        "app",
        &bare.display().to_string(),
        "--webhook-secret-file",
        &secret.display().to_string(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ferry(&["repos", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).starts_with("app "));
    // Trigger and follow: the logs stream, and the exit code is the run's outcome.
    let out = ferry(&["trigger", "app", "main", "--follow"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "job two fails: {stdout}");
    assert!(
        stdout.contains("one │ first job") && stdout.contains("two │ second job"),
        "{stdout}"
    );
    let run_id = stdout.lines().next().expect("the run id first").to_string();
    let runs = String::from_utf8_lossy(&ferry(&["runs"]).stdout).to_string();
    assert!(runs.contains(&run_id) && runs.contains("failed"), "{runs}");
    let logs = ferry(&["logs", &run_id, "two"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "second job\n");
    let again = ferry(&["rerun", &run_id, "--failed"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Errors: a missing run is a usage error with the server's message; no token, no call.
    let missing = ferry(&["cancel", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let no_token = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["cancel", "x", "--server", &server.base])
        .env_remove("FERRY_TOKEN")
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .output()
        .expect("ferry");
    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no token"));
    // The config file works as well as the environment.
    std::fs::create_dir_all(tmp.path().join("config/ferry")).expect("mkdir");
    std::fs::write(
        tmp.path().join("config/ferry/config.json"),
        json!({ "server": server.base, "token": token }).to_string(),
    )
    .expect("write");
    let from_file = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["repos", "list"])
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_SERVER")
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .output()
        .expect("ferry");
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// `ferry user add` writes a user into the server's store; a config file sets the server.
#[tokio::test]
async fn users_from_the_cli_and_a_config_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["user", "add", "dee", "--role", "developer", "--data-dir"])
        .arg(&data)
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .expect("ferry");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("ferry_"));
    let again = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["user", "add", "dee", "--data-dir"])
        .arg(&data)
        .output()
        .expect("ferry");
    assert_eq!(again.status.code(), Some(2), "a duplicate name is refused");
    // The config file sets the data directory; the listen flag still wins.
    let config = tmp.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nmax_runs = 3\npublic_reads = true\n",
            data.display().to_string()
        ),
    )
    .expect("write");
    let mut server = start_with(&["--config", &config.display().to_string()]);
    assert!(
        server.token.is_none(),
        "the store already has a user: no admin is created"
    );
    let (status, _) = call(&server.base, &token, "GET", "/api/v1/tokens", None).await;
    assert_eq!(status, 200, "the CLI-made user's token works");
    let status = reqwest::get(format!("{}/api/v1/repos", server.base))
        .await
        .expect("request")
        .status()
        .as_u16();
    assert_eq!(status, 200, "public reads from the config file");
    let _ = server.child.kill();
    let _ = server.child.wait();
    std::fs::write(&config, "listen = \"nonsense\"\n").expect("write");
    let bad = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config", &config.display().to_string()])
        .output()
        .expect("ferry");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ferry.toml"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Stops the server with SIGTERM and waits: deployed processes stop with it.
fn stop(server: &mut Serve) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = server.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_cli_delivers_a_release() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(
        tmp.path(),
        "jobs:
  build:
    run: mkdir -p out && echo 'echo \"app says $GREETING with $TOKEN\"; exec sleep 300' > out/app.sh
    artifacts: [out/app.sh]
release: { artifacts: [build] }
environments:
  sandbox: { auto: true }
  production: { after: sandbox, approval: { required: 1 } }
deploy:
  target: { process: { command: sh out/app.sh } }
",
    );
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.token.clone().expect("token");
    let base = server.base.clone();
    let run = |token: &str, args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .env("FERRY_SERVER", &base)
            .env("FERRY_TOKEN", token)
            .env("FERRY_REPO", "app")
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("ferry");
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ferry = |args: &[&str]| run(&token, args, None);
    assert_eq!(
        ferry(&["repos", "add", "app", &bare.display().to_string()]).0,
        Some(0)
    );
    assert_eq!(
        ferry(&["vars", "set", "GREETING", "hello", "--env", "sandbox"]).0,
        Some(0)
    );
    let (code, out, err) = run(
        &token,
        &["secrets", "set", "TOKEN"],
        Some("cli-secret-42\n"),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let (_, listed, _) = ferry(&["secrets", "list"]);
    assert!(
        listed.contains("TOKEN") && !listed.contains("cli-secret-42"),
        "{listed}"
    );
    let (code, out, _) = ferry(&["trigger", "app", "main", "--follow"]);
    assert_eq!(code, Some(0), "{out}");
    // Sandbox goes live on its own; production waits for an approval.
    let mut envs = String::new();
    for _ in 0..200 {
        envs = ferry(&["envs"]).1;
        if envs.contains("awaiting_approval") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, releases, _) = ferry(&["releases"]);
    let release = releases
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a release")
        .to_string();
    let sandbox = envs
        .lines()
        .find(|l| l.starts_with("sandbox"))
        .expect("sandbox row")
        .to_string();
    assert!(
        sandbox.contains(&release) && sandbox.contains("ferry (auto)"),
        "{envs}"
    );
    assert!(envs.contains("production#1 (awaiting_approval)"), "{envs}");
    let (_, detail, _) = ferry(&["deployment", "production#1"]);
    assert!(
        detail.contains("commits:") && detail.contains("first"),
        "{detail}"
    );
    assert!(detail.contains("out/app.sh  (new) → sha256:"), "{detail}");
    // An approver approves; production goes live.
    let add = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "user",
            "add",
            "bob",
            "--role",
            "approver",
            "--data-dir",
            &data.display().to_string(),
        ])
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .expect("user add");
    let bob = String::from_utf8_lossy(&add.stdout).trim().to_string();
    let (code, out, err) = run(
        &bob,
        &["approve", "production#1", "--comment", "looks good"],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("production#1: release "), "{out}");
    let mut live = String::new();
    for _ in 0..200 {
        live = ferry(&["envs"]).1;
        if live
            .lines()
            .any(|l| l.starts_with("production") && l.contains("bob"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        live.lines()
            .any(|l| l.starts_with("production") && l.contains(&release) && l.contains("bob")),
        "{live}"
    );
    let (_, output, _) = ferry(&["output", "sandbox"]);
    assert!(output.contains("app says hello with ***"), "{output}");
    let (_, log, _) = ferry(&["deployment", "sandbox#1", "--log"]);
    assert!(
        log.contains("deploying release") && log.contains("live"),
        "{log}"
    );
    let (_, audit, _) = ferry(&["audit"]);
    for action in [
        "release.seal",
        "deployment.approve",
        "deployment.live",
        "secret.set",
        "variable.set",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    assert!(!audit.contains("cli-secret-42"));
    // Errors are clear and exit 2.
    let (code, _, err) = ferry(&["rollback", "sandbox"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`sandbox` has no earlier release to go back to"),
        "{err}"
    );
    let (code, _, err) = ferry(&["promote", "nope", "--to", "production"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("there is no release `nope`"), "{err}");
    let no_repo = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["envs"])
        .env_remove("FERRY_REPO")
        .env_remove("FERRY_SERVER")
        .output()
        .expect("ferry");
    assert_eq!(no_repo.status.code(), Some(2));
    stop(&mut server);
}

/// After `kill -9` of the server, the deployed process it left is ended and the live
/// environment runs again under the restarted server.
#[tokio::test]
async fn after_kill_9_live_environments_run_again_without_orphans() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pids = tmp.path().join("pids");
    let pipeline = format!(
        "jobs:
  build:
    run: mkdir -p out && echo 'echo $$ >> {p}; exec sleep 300' > out/app.sh
    artifacts: [out/app.sh]
release: {{ artifacts: [build] }}
environments:
  sandbox: {{ auto: true }}
deploy:
  target: {{ process: {{ command: exec sh out/app.sh }} }}
",
        p = pids.display()
    );
    let bare = bare_repo(tmp.path(), &pipeline);
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.token.clone().expect("token");
    call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos",
        Some(json!({ "name": "app", "url": bare.display().to_string() })),
    )
    .await;
    call(
        &server.base,
        &token,
        "POST",
        "/api/v1/repos/app/runs",
        Some(json!({ "ref": "main" })),
    )
    .await;
    let read_pids = || -> Vec<i32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let waited = Instant::now();
    while read_pids().is_empty() {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the release was not deployed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first = read_pids()[0];
    // Wait until sandbox is live, then crash the server: its process is left behind.
    for _ in 0..400 {
        let (_, envs) = call(
            &server.base,
            &token,
            "GET",
            "/api/v1/repos/app/environments",
            None,
        )
        .await;
        if !envs["environments"][0]["live"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.child.kill().expect("kill -9");
    server.child.wait().expect("wait");
    assert!(alive(first), "the process outlives a killed server");
    let mut again = start(&data, &[]);
    let waited = Instant::now();
    while read_pids().len() < 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "sandbox did not run again"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ferry_testkit::gone(first), "the orphan was ended");
    let second = read_pids()[1];
    assert!(alive(second));
    stop(&mut again);
    assert!(
        ferry_testkit::gone(second),
        "a stopped server stops its processes"
    );
}

/// The server's own `tracing` events reach standard error: JSON with `--log-format
/// json`, filtered by `FERRY_LOG`; a filter that cannot be read is a usage error.
#[test]
fn the_server_log_follows_ferry_log_and_log_format() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data").display().to_string();
    let bad = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
        .env("FERRY_LOG", "ferry_server=loud")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("FERRY_LOG=`ferry_server=loud`"), "{stderr}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
        .args(["--log-format", "json"])
        .env("FERRY_LOG", "info")
        .env_remove("FERRY_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let event = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no `serving` event on stderr; saw: {seen:#?}");
        };
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == "serving"
        {
            break v;
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["target"], "ferry_server");
    assert!(
        event["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{event}"
    );
}
