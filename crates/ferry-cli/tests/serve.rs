//! The real `ferry serve` binary: first start, the API over HTTP, a run from a real
//! bare repository, graceful stop, and a restart after `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{alive, bare_repository, expect_exit, git, gone, pids_in};
use serde_json::{Value, json};

/// The `ferry` binary with `args`.
fn ferry(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args);
    cmd
}

/// A bare repository `<tmp>/origin.git` whose `main` holds `pipeline`.
fn bare_repo(tmp: &Path, pipeline: &str) -> PathBuf {
    bare_repository(tmp, "origin", Some(pipeline))
}

/// A running `ferry serve`; dropping it kills the process.
struct Serve {
    child: Child,
    base: String,
    token: Option<String>,
    /// What it writes to stderr after it started listening, line by line.
    log: std::sync::mpsc::Receiver<String>,
}

/// Starts `ferry serve` on a free port and reads what it prints until it listens.
fn start(data: &Path, extra: &[&str]) -> Serve {
    let data = data.display().to_string();
    let mut args = vec!["--max-runs", "1", "--data-dir", &data];
    args.extend_from_slice(extra);
    start_with(&args)
}

/// `ferry serve` with `extra`; host jobs unsandboxed unless `extra` says otherwise
/// (these tests' steps write markers beside their data directory).
fn start_with(extra: &[&str]) -> Serve {
    start_with_envs(extra, &[])
}

/// [`start_with`], with variables set in the server's environment.
fn start_with_envs(extra: &[&str], envs: &[(&str, &str)]) -> Serve {
    let sandbox: &[&str] = if extra.contains(&"--host-sandbox") {
        &[]
    } else {
        &["--host-sandbox", "off"]
    };
    let mut child = ferry(&["serve", "--listen", "127.0.0.1:0"])
        .args(sandbox)
        .args(extra)
        .envs(envs.iter().copied())
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
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Serve {
        child,
        base,
        token,
        log,
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Waits (60 s at most) for a line of the server's log holding `needle`.
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the server did not log `{needle}` within 60 s"),
            }
        }
    }

    /// The admin token the first start of a store printed.
    fn admin_token(&self) -> String {
        self.token
            .clone()
            .expect("the first start prints the admin token")
    }

    /// `METHOD path` with a bearer `token` and a JSON `body`: the status and the text.
    async fn call_text(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.base),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("text"))
    }

    /// [`Serve::call_text`] with the answer as JSON (a text that is not, as a string).
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(token, method, path, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers `bare` as the repository `app`; it must succeed.
    async fn add_app(&self, token: &str, bare: &Path) {
        let body = json!({ "name": "app", "url": bare.display().to_string() });
        let (status, answer) = self.call(token, "POST", "/api/v1/repos", Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }

    /// Triggers `main` of `app`; the run's id.
    async fn trigger_app(&self, token: &str) -> String {
        let body = Some(json!({ "ref": "main" }));
        let (status, answer) = self
            .call(token, "POST", "/api/v1/repos/app/runs", body)
            .await;
        assert_eq!(status, 201, "{answer}");
        answer["run"]["id"].as_str().expect("id").to_string()
    }

    /// Polls `GET path` (for 15 s at most) until `done` says yes: that answer, or `None`.
    async fn poll(&self, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Option<Value> {
        for _ in 0..600 {
            let (_, answer) = self.call(token, "GET", path, None).await;
            if done(&answer) {
                return Some(answer);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    /// Polls `GET path` as text (for 15 s at most) until `done` says yes; the last answer.
    async fn poll_text(&self, token: &str, path: &str, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        for _ in 0..600 {
            (_, text) = self.call_text(token, "GET", path, None).await;
            if done(&text) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        text
    }

    /// Waits until `done` says yes of the run's detail; returns it.
    async fn wait_for_run(&self, token: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/runs/{run}");
        let detail = self.poll(token, &path, done).await;
        detail.unwrap_or_else(|| panic!("run {run} did not get there"))
    }

    /// Stops the server with SIGTERM and waits: deployed processes stop with it; it must
    /// exit cleanly.
    fn stop(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "a SIGTERM ends the server cleanly");
    }

    /// Crashes the server (`kill -9`) and reaps it.
    fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

/// A host job of a server with its default sandbox reads the system and writes its
/// workspace and temporary directory, and nothing else: not the server's key or
/// database, not the data directory's listing, not a file beside it; it sees none of
/// the server's environment.
#[tokio::test]
async fn host_jobs_cannot_reach_the_servers_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    // A private parent (0700), which a root server's step user cannot pass: its
    // workspaces then go to a directory of its own in /tmp.
    let mode = std::fs::Permissions::from_mode(0o700);
    std::fs::set_permissions(tmp.path(), mode).expect("chmod");
    let data = tmp.path().join("data");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let (sockets, socket, _listener) = server_only_socket(tmp.path());
    let my_uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("id");
    let my_uid = String::from_utf8_lossy(&my_uid.stdout).trim().to_string();
    let root = my_uid == "0";
    let pipeline = format!(
        "jobs:\n  probe:\n    run: |\n      \
         cat {d}/secret.key >/dev/null 2>&1 && echo LEAK-key || echo no-key\n      \
         cat {d}/ferry.db >/dev/null 2>&1 && echo LEAK-db || echo no-db\n      \
         ls {d} >/dev/null 2>&1 && echo LEAK-list || echo no-list\n      \
         (echo x > {o}/written) 2>/dev/null && echo LEAK-write || echo no-write\n      \
         env | grep -q FERRY_TEST_SERVER_ONLY && echo LEAK-env || echo no-env\n      \
         echo in-workspace > here && cat here\n      \
         echo in-tmp > \"$TMPDIR/t\" && cat \"$TMPDIR/t\"\n      \
         ls /usr/bin/env >/dev/null && echo system-readable\n      \
         perl -MIO::Socket::UNIX -e 'print IO::Socket::UNIX->new(Peer => shift) ? \"LEAK-socket\\n\" : \"no-socket\\n\"' {s}\n      \
         echo uid=$(id -u)\n",
        d = data.display(),
        o = outside.display(),
        s = socket.display()
    );
    let bare = bare_repo(tmp.path(), &pipeline);
    let server = start_sandboxed(&data, &sockets);
    let token = server.admin_token();
    server.add_app(&token, &bare).await;
    let run = server.trigger_app(&token).await;
    let detail = server
        .wait_for_run(&token, &run, |d| {
            d["run"]["status"] != "running" && d["run"]["status"] != "queued"
        })
        .await;
    let (_, log) = server
        .call_text(
            &token,
            "GET",
            &format!("/api/v1/runs/{run}/jobs/probe/log"),
            None,
        )
        .await;
    assert_eq!(detail["run"]["status"], "success", "{detail}\n{log}");
    // A server running as root runs each job as a uid of its own from its range: the
    // socket is out of reach.
    let (socket_line, uid) = if root {
        let uid = uid_in(&log);
        assert!(DEFAULT_UIDS.contains(&uid), "{log}");
        ("no-socket", uid.to_string())
    } else {
        ("LEAK-socket", my_uid)
    };
    assert_eq!(
        log,
        format!(
            "no-key\nno-db\nno-list\nno-write\nno-env\nin-workspace\nin-tmp\nsystem-readable\n{socket_line}\nuid={uid}\n"
        )
    );
    assert!(!outside.join("written").exists());
    if root {
        // The workspaces went to the server's own directory in the temporary directory.
        let id = std::fs::read_to_string(data.join("server-id")).expect("server id");
        let id = id.trim();
        let dir = std::env::temp_dir().join(format!("ferry-work-{}", &id[id.len() - 16..]));
        assert!(dir.is_dir(), "{}", dir.display());
        drop(server);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A release's code on the host (a deploy script, a process, a command probe) runs in
/// the server's sandbox like a host step: it cannot read the server's key or database,
/// list the data directory, write beside it, see the server's environment or use a
/// socket only the server's user may; a root server runs it as the step user.
#[tokio::test]
async fn a_releases_host_code_cannot_reach_the_servers_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    // Passable, so that a root server's step user reaches its deployments.
    let mode = std::fs::Permissions::from_mode(0o711);
    std::fs::set_permissions(tmp.path(), mode).expect("chmod");
    let data = tmp.path().join("data");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (sockets, socket, _listener) = server_only_socket(tmp.path());
    let root = nix::unistd::geteuid().is_root();
    let pipeline = format!(
        "jobs:
  build:
    run: |
      mkdir -p out
      cat > out/app.sh <<'EOF'
      cat {d}/secret.key >/dev/null 2>&1 && echo LEAK-key || echo no-key
      cat {d}/ferry.db >/dev/null 2>&1 && echo LEAK-db || echo no-db
      ls {d} >/dev/null 2>&1 && echo LEAK-list || echo no-list
      (echo x > {o}/written) 2>/dev/null && echo LEAK-write || echo no-write
      env | grep -q FERRY_TEST_SERVER_ONLY && echo LEAK-env || echo no-env
      perl -MIO::Socket::UNIX -e 'print IO::Socket::UNIX->new(Peer => shift) ? \"LEAK-socket\\n\" : \"no-socket\\n\"' {s}
      echo uid=$(id -u)
      if [ \"$1\" = serve ]; then exec sleep 300; fi
      EOF
    artifacts: [out/app.sh]
release: {{ artifacts: [build] }}
environments:
  sandbox:
    auto: true
    deploy:
      target: {{ script: {{ run: sh out/app.sh }} }}
  web:
    auto: true
    deploy:
      target: {{ process: {{ command: exec sh out/app.sh serve }} }}
      verify: {{ command: sh out/app.sh > probe.txt, for: 100ms, interval: 50ms }}
",
        d = data.display(),
        o = outside.display(),
        s = socket.display()
    );
    let bare = bare_repo(tmp.path(), &pipeline);
    let server = start_sandboxed(&data, &sockets);
    let token = server.admin_token();
    server.add_app(&token, &bare).await;
    server.trigger_app(&token).await;
    let live = server
        .poll(&token, "/api/v1/repos/app/environments", |envs| {
            let envs = envs["environments"].as_array().cloned().unwrap_or_default();
            envs.len() == 2 && envs.iter().all(|e| !e["live"].is_null())
        })
        .await;
    let (_, deployments) = server
        .call_text(&token, "GET", "/api/v1/repos/app/deployments", None)
        .await;
    assert!(live.is_some(), "both environments go live: {deployments}");
    let (_, script) = server
        .call_text(
            &token,
            "GET",
            "/api/v1/repos/app/deployments/sandbox.1/log",
            None,
        )
        .await;
    let output = server
        .poll_text(&token, "/api/v1/repos/app/environments/web/output", |t| {
            t.contains("uid=")
        })
        .await;
    // A root server runs each deployment's code as a uid of its own.
    let want = |text: &str| {
        let (socket_line, uid) = if root {
            let uid = uid_in(text);
            assert!(DEFAULT_UIDS.contains(&uid), "{text}");
            ("no-socket", uid.to_string())
        } else {
            ("LEAK-socket", nix::unistd::geteuid().to_string())
        };
        format!("no-key\nno-db\nno-list\nno-write\nno-env\n{socket_line}\nuid={uid}\n")
    };
    assert!(
        script.contains(&want(&script)),
        "the deploy script:\n{script}"
    );
    let want = want(&output);
    assert!(output.contains(&want), "the process:\n{output}");
    if root {
        assert_ne!(uid_in(&script), uid_in(&output), "one uid per deployment");
    }
    let repo_dir = std::fs::read_dir(data.join("deploy"))
        .expect("deploy dir")
        .flatten()
        .next()
        .expect("the repository's deployments")
        .path();
    let probed = std::fs::read_to_string(
        repo_dir
            .join("web/releases")
            .join(
                std::fs::read_dir(repo_dir.join("web/releases"))
                    .expect("releases")
                    .flatten()
                    .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .expect("a release")
                    .file_name(),
            )
            .join("probe.txt"),
    )
    .expect("the probe's report");
    assert_eq!(probed, want, "the command probe");
    assert!(!outside.join("written").exists());
}

/// A release's Terraform runs with the rights of the release's host code: in the
/// deployment's sandbox (as a uid of its own where the server is root), where its
/// provisioners cannot read the server's key or write outside the release, while it
/// still reaches the server's state backend; the environment is provisioned and goes
/// live with the outputs.
#[tokio::test]
async fn a_releases_terraform_runs_in_its_sandbox() {
    use std::os::unix::fs::PermissionsExt;
    let Ok(terraform) = std::env::var("FERRY_TEST_TERRAFORM") else {
        assert!(
            std::env::var_os("FERRY_SKIP_TERRAFORM").is_some(),
            "set FERRY_TEST_TERRAFORM (scripts/test.sh) or FERRY_SKIP_TERRAFORM=1"
        );
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let data = tmp.path().join("data");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (sockets, _socket, _listener) = server_only_socket(tmp.path());
    let pipeline = "jobs:
  build:
    run: mkdir -p out && echo app > out/app.txt
    artifacts: [out]
release: { artifacts: [build] }
environments:
  sandbox:
    auto: true
    infra: { dir: infra }
    deploy:
      target: { script: { run: 'echo \"deployed to ${{ infra.outputs.where }}\"' } }
";
    let bare = bare_repo(tmp.path(), pipeline);
    let work = tmp.path().join("origin-work");
    std::fs::create_dir_all(work.join("infra")).expect("mkdir");
    let probe = format!(
        "cat {d}/secret.key >/dev/null 2>&1 && echo LEAK-key || echo no-key; \
         (echo x > {o}/written) 2>/dev/null && echo LEAK-write || echo no-write; \
         echo tf-uid=$(id -u)",
        d = data.display(),
        o = outside.display()
    );
    std::fs::write(
        work.join("infra/main.tf"),
        format!(
            r#"resource "terraform_data" "probe" {{
  provisioner "local-exec" {{
    command = "{probe}"
  }}
}}
output "where" {{ value = "sandbox-${{terraform_data.probe.id}}" }}
"#
        ),
    )
    .expect("main.tf");
    git(&work, &["add", "-A"]);
    git(
        &work,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "-m",
            "infra",
        ],
    );
    git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
    let data_s = data.display().to_string();
    let sockets_s = sockets.display().to_string();
    let server = start_with_envs(
        &[
            "--max-runs",
            "1",
            "--data-dir",
            &data_s,
            "--host-sandbox",
            "on",
            "--sandbox-read",
            &sockets_s,
        ],
        &[("FERRY_TERRAFORM", terraform.as_str())],
    );
    let token = server.admin_token();
    server.add_app(&token, &bare).await;
    server.trigger_app(&token).await;
    let live = server
        .poll(&token, "/api/v1/repos/app/environments", |envs| {
            envs["environments"][0]["live"].is_object()
        })
        .await;
    let (_, log) = server
        .call_text(
            &token,
            "GET",
            "/api/v1/repos/app/deployments/sandbox.1/log",
            None,
        )
        .await;
    assert!(live.is_some(), "sandbox goes live: {log}");
    assert!(log.contains("(local-exec): no-key"), "{log}");
    assert!(log.contains("(local-exec): no-write"), "{log}");
    assert!(log.contains("deployed to sandbox-"), "{log}");
    if nix::unistd::geteuid().is_root() {
        // The last one: the first is in the command Terraform says it executes.
        let uid = log
            .rsplit("tf-uid=")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .expect("the provisioner's uid");
        assert!(DEFAULT_UIDS.contains(&uid), "{log}");
    }
    assert!(!outside.join("written").exists());

    // `ferry envs destroy`, the plan in `ferry deployment`, `ferry approve --plan`.
    let cli = Cli {
        repo: Some("app"),
        ..Cli::new(&server, &token, tmp.path())
    };
    let out = cli.run(&["envs", "destroy", "sandbox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("sandbox#2"), "{text}");
    let shown = cli
        .poll(&["deployment", "sandbox#2"], |t| {
            t.contains("terraform plan")
        })
        .await;
    assert!(shown.contains(", a destroy (0 to add"), "{shown}");
    assert!(shown.contains("  - terraform_data.probe"), "{shown}");
    let sha = shown
        .split("terraform plan ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("the plan's hash")
        .to_string();
    let wrong = cli.run(&["approve", "sandbox#2", "--plan", "000000000000"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("look at the plan again"),
        "{}",
        stderr(&wrong)
    );
    let out = cli.run(&["approve", "sandbox#2", "--plan", &sha]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gone = server
        .poll(&token, "/api/v1/repos/app/deployments/sandbox.2", |d| {
            d["deployment"]["status"] == "destroyed"
        })
        .await;
    assert!(gone.is_some(), "destroyed");
}

/// A uid range that the host's users or subordinate ids use, or that is not a range,
/// is refused at start with the reason, before anything is written.
#[test]
fn a_uid_range_in_use_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let serve = |uids: &str| {
        ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--sandbox-uids", uids])
            .output()
            .expect("ferry serve")
    };
    let root = nix::unistd::geteuid().is_root();
    // uid 1 is `daemon` (or some system user) on every Debian.
    let clash = serve("1-100");
    assert_eq!(clash.status.code(), Some(2), "{}", stderr(&clash));
    let want = if root {
        "the range is in use (/etc/passwd: `"
    } else {
        "only a server running as root runs steps as other users"
    };
    assert!(stderr(&clash).contains(want), "{}", stderr(&clash));
    if root {
        let bad = serve("10-5");
        assert_eq!(bad.status.code(), Some(2));
        assert!(
            stderr(&bad).contains("--sandbox-uids: `10-5`"),
            "{}",
            stderr(&bad)
        );
    }
    let both = ferry(&[
        "serve",
        "--sandbox-uids",
        "2000-3000",
        "--sandbox-user",
        "nobody",
    ])
    .output()
    .expect("ferry serve");
    assert_eq!(both.status.code(), Some(2), "one or the other");
    assert!(!data.join("ferry.db").exists(), "nothing written");
}

/// Allowed mount directories inside one another are refused at start: a container
/// mounting the outer one could swap a part of the inner one's path for a link.
#[test]
fn nested_deploy_mounts_are_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let outer = tmp.path().join("srv");
    std::fs::create_dir_all(outer.join("uploads")).expect("mkdir");
    let out = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--deploy-mount")
        .arg(&outer)
        .arg("--deploy-mount")
        .arg(outer.join("uploads"))
        .output()
        .expect("ferry serve");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uploads: it lies in --deploy-mount"),
        "{}",
        stderr(&out)
    );
}

/// `--gitops-local` directories are absolute and outside the data directory.
#[test]
fn gitops_local_directories_are_checked_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    for (dir, want) in [
        ("srv/git".to_string(), "srv/git: write an absolute path"),
        (
            data.join("mirrors").display().to_string(),
            "mirrors: it lies in the data directory",
        ),
    ] {
        let out = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--gitops-local", &dir])
            .output()
            .expect("ferry serve");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
}

/// The server's log levels come from `FERRY_LOG`, else `RUST_LOG`: a filter that does
/// not read stops the start, naming the variable.
#[test]
fn log_levels_come_from_ferry_log_or_rust_log() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (envs, want) in [
        (
            vec![("RUST_LOG", "ferry_server=loud")],
            "RUST_LOG=`ferry_server=loud`",
        ),
        (
            vec![("FERRY_LOG", "x=loud"), ("RUST_LOG", "info")],
            "FERRY_LOG=`x=loud`",
        ),
    ] {
        let out = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .env_remove("FERRY_LOG")
            .env_remove("RUST_LOG")
            .envs(envs)
            .output()
            .expect("ferry serve");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

/// A trace exporter that cannot work is refused at start, naming what is wrong and
/// never echoing a header's value (an API key).
#[test]
fn bad_trace_settings_are_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["--otlp-endpoint", "grpc://127.0.0.1:4317"],
            &[],
            "--otlp-endpoint: `grpc://127.0.0.1:4317`: an OTLP/HTTP endpoint is http:// or https://",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"],
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: Ferry exports traces over OTLP/HTTP with protobuf",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
            "OTLP headers: `api-key` is not name=value",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"],
            &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=sk%0Ahunter2")],
            "OTLP headers: the value of `api-key` is not a header value",
        ),
    ];
    for (args, envs, want) in cases {
        let out = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(*args)
            .envs(envs.iter().copied())
            .output()
            .expect("ferry serve");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A server that is not root runs host steps as its own user: where that user may use
/// the Docker socket (it is in the `docker` group), its steps could too, and through it
/// the whole host. Such a server refuses to start sandboxed, and says what to do.
#[test]
fn a_server_whose_user_may_use_docker_does_not_run_host_steps() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return; // the test runs the server as another user
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    // A Docker socket this user may use (as the `docker` group's members may).
    let socket = home.join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::os::unix::fs::chown(&socket, Some(65534), Some(65534)).expect("chown");
    let serve = |extra: &[&str]| {
        ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(home.join("data"))
            .args(extra)
            .env("HOME", &home)
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .uid(65534)
            .gid(65534)
            .output()
            .expect("ferry serve")
    };
    let refused = serve(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!(
            "which may use the Docker socket {}",
            socket.display()
        )),
        "{}",
        stderr(&refused)
    );
    assert!(!home.join("data/ferry.db").exists(), "nothing written");
}

/// The uids a root server gives its jobs and deployments by default.
const DEFAULT_UIDS: std::ops::RangeInclusive<u32> = 2_000_000_000..=2_000_065_535;

/// The uid a job's or deployment's code printed (`uid=N`).
fn uid_in(text: &str) -> u32 {
    text.lines()
        .find_map(|l| l.strip_prefix("uid="))
        .and_then(|u| u.trim().parse().ok())
        .unwrap_or_else(|| panic!("no uid in:\n{text}"))
}

/// A UNIX socket only the server's user may use (as the Docker socket is for root or
/// the `docker` group): Landlock does not govern connecting to it; the step's own uid
/// and groups do. Its directory, its path and its listener.
fn server_only_socket(dir: &Path) -> (PathBuf, PathBuf, std::os::unix::net::UnixListener) {
    use std::os::unix::fs::PermissionsExt;
    let sockets = dir.join("sockets");
    std::fs::create_dir_all(&sockets).expect("mkdir");
    std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = sockets.join("engine.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    (sockets, socket, listener)
}

/// A server with its host sandbox on, which may also read `sockets`.
fn start_sandboxed(data: &Path, sockets: &Path) -> Serve {
    let sockets = sockets.display().to_string();
    start_with_env(data, &["--host-sandbox", "on", "--sandbox-read", &sockets])
}

/// [`start`] with a variable in the server's environment that no step may see.
fn start_with_env(data: &Path, extra: &[&str]) -> Serve {
    let data = data.display().to_string();
    let mut args = vec!["--max-runs", "1", "--data-dir", &data];
    args.extend_from_slice(extra);
    start_with_envs(&args, &[("FERRY_TEST_SERVER_ONLY", "hush")])
}

/// Starts `ferry serve` on a new store in `data` and registers `bare` as `app`; the
/// server and its admin token.
async fn serve_app(data: &Path, bare: &Path) -> (Serve, String) {
    let server = start(data, &[]);
    let token = server.admin_token();
    server.add_app(&token, bare).await;
    (server, token)
}

/// Waits (30 s at most) until steps have written `n` process ids to `file`; returns them.
async fn wait_for_pids(file: &Path, n: usize, what: &str) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let pids = pids_in(file);
        if pids.len() >= n {
            return pids;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `ferry` CLI as a client of a server: its address and a token in the environment,
/// its configuration under `config` (as `XDG_CONFIG_HOME`).
struct Cli<'a> {
    base: &'a str,
    token: &'a str,
    config: PathBuf,
    repo: Option<&'a str>,
}

impl<'a> Cli<'a> {
    fn new(server: &'a Serve, token: &'a str, tmp: &Path) -> Self {
        Cli {
            base: &server.base,
            token,
            config: tmp.join("config"),
            repo: None,
        }
    }

    /// The same client with another user's token.
    fn as_user(&self, token: &'a str) -> Self {
        Cli {
            token,
            config: self.config.clone(),
            ..*self
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = ferry(args);
        cmd.env("FERRY_SERVER", self.base)
            .env("FERRY_TOKEN", self.token)
            .env("XDG_CONFIG_HOME", &self.config)
            .env("NO_COLOR", "1");
        if let Some(repo) = self.repo {
            cmd.env("FERRY_REPO", repo);
        }
        cmd
    }

    /// `ferry args…`, finished.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ferry")
    }

    /// `ferry args…`, with `input` on its standard input, finished.
    fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ferry");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).expect("write");
        }
        child.wait_with_output().expect("wait")
    }

    /// `ferry args…`, which must succeed: its standard output.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        expect_exit(&self.run(args), 0)
    }

    /// `ferry args…`, which must fail as a usage error (exit 2) with `says` in its stderr.
    #[track_caller]
    fn refuses(&self, args: &[&str], says: &str) {
        let out = self.run(args);
        expect_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(says), "{err}");
    }

    /// The standard output of `ferry args…`, whatever its exit code.
    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).into_owned()
    }

    /// Runs `ferry args…` (at most 200 times, 50 ms apart) until `done` says yes of its
    /// standard output; the last output.
    async fn poll(&self, args: &[&str], done: impl Fn(&str) -> bool) -> String {
        let mut out = String::new();
        for _ in 0..200 {
            out = self.stdout(args);
            if done(&out) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    }
}

/// `ferry user add args… --data-dir data`: a user in the store of a server.
fn user_add(data: &Path, args: &[&str]) -> Output {
    ferry(&["user", "add"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("FERRY_DATABASE_URL")
        .output()
        .expect("user add")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn serve_runs_a_pushed_commit_and_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  hi:\n    run: echo hi from serve\n");
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.admin_token();
    let (status, health) = server.call("", "GET", "/api/v1/health", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    server.add_app(&token, &bare).await;
    let run = server.trigger_app(&token).await;
    let detail = server
        .wait_for_run(&token, &run, |d| d["run"]["status"] == "success")
        .await;
    assert_eq!(detail["jobs"][0]["status"], "success");
    server.stop();
    // A second start keeps the users: no new admin token is printed.
    let again = start(&data, &[]);
    assert!(again.token.is_none());
    let (status, _) = again.call(&token, "GET", "/api/v1/runs", None).await;
    assert_eq!(status, 200, "the token still works after a restart");
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
    let (mut server, token) = serve_app(&data, &bare).await;
    let first = server.trigger_app(&token).await;
    let second = server.trigger_app(&token).await;
    wait_for_pids(&pids, 1, "the first run did not start").await;
    // Let the log line reach the file, then crash the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill_9();
    std::fs::write(&marker, "").expect("marker");

    let again = start(&data, &[]);
    let detail = again
        .wait_for_run(&token, &first, |d| d["run"]["status"] != "running")
        .await;
    assert_eq!(detail["run"]["status"], "failed");
    assert_eq!(
        detail["run"]["error"],
        "interrupted: the server stopped before the run finished"
    );
    let log_path = format!("/api/v1/runs/{first}/jobs/work/log");
    let (_, log) = again.call_text(&token, "GET", &log_path, None).await;
    assert_eq!(log, "started\n", "the log written before the kill is kept");
    let detail = again
        .wait_for_run(&token, &second, |d| d["run"]["status"] == "success")
        .await;
    assert_eq!(
        detail["jobs"][0]["status"], "success",
        "the queued run ran after the restart"
    );
    for pid in pids_in(&pids) {
        assert!(
            gone(pid),
            "step process {pid} of the crashed server is still running"
        );
    }
}

/// A database of its own on the test PostgreSQL server (`None`: the tests that need one
/// are skipped on purpose, `FERRY_SKIP_POSTGRES`).
fn postgres_database(prefix: &str) -> Option<String> {
    let Ok(admin_url) = std::env::var("FERRY_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("FERRY_SKIP_POSTGRES").is_some(),
            "set FERRY_TEST_POSTGRES (scripts/test.sh starts a server) or FERRY_SKIP_POSTGRES=1"
        );
        return None;
    };
    Some(ferry_testkit::fresh_postgres_database(&admin_url, prefix))
}

/// Two servers on one PostgreSQL: a run of server A stays A's while A renews its lease
/// (B ends nothing it should not), and when A dies (`kill -9`) B ends A's run once its
/// lease ran out, with a clear reason, without a restart of A.
#[tokio::test]
async fn a_dead_servers_runs_are_ended_by_another_once_their_lease_runs_out() {
    let Some(url) = postgres_database("ferry_lease") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let pids = tmp.path().join("pids");
    let pipeline = format!(
        "jobs:\n  work:\n    run: |\n      echo started; echo $$ >> {p}\n      sleep 300\n",
        p = pids.display()
    );
    let bare = bare_repo(tmp.path(), &pipeline);
    let key = "ab".repeat(32);
    let flags = ["--database-url", url.as_str(), "--run-lease", "3s"];
    let envs = [("FERRY_SECRET_KEY", key.as_str())];
    let data_a = tmp.path().join("a").display().to_string();
    let mut a = start_with_envs(
        &[&["--max-runs", "1", "--data-dir", &data_a][..], &flags[..]].concat(),
        &envs,
    );
    let token = a.admin_token();
    a.add_app(&token, &bare).await;
    let run = a.trigger_app(&token).await;
    wait_for_pids(&pids, 1, "the run did not start on A").await;
    let data_b = tmp.path().join("b").display().to_string();
    let b = start_with_envs(
        &[&["--max-runs", "1", "--data-dir", &data_b][..], &flags[..]].concat(),
        &envs,
    );
    // Longer than the lease: A's heartbeat keeps its run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, detail) = b
        .call(&token, "GET", &format!("/api/v1/runs/{run}"), None)
        .await;
    assert_eq!(detail["run"]["status"], "running", "{detail}");
    a.kill_9();
    let started = Instant::now();
    let mut detail = Value::Null;
    while started.elapsed() < Duration::from_secs(20) {
        (_, detail) = b
            .call(&token, "GET", &format!("/api/v1/runs/{run}"), None)
            .await;
        if detail["run"]["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(detail["run"]["status"], "failed", "{detail}");
    assert!(
        detail["run"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("its lease ran out")),
        "{detail}"
    );
    assert_eq!(detail["jobs"][0]["status"], "failed", "{detail}");
    // Within the lease and a heartbeat or two, not at some later start.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for pid in pids_in(&pids) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A server given another secret key than the one the shared database's secrets were
/// sealed with stops at its start and says why.
#[tokio::test]
async fn a_server_with_another_key_stops_at_start_and_says_why() {
    let Some(url) = postgres_database("ferry_keys") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let data_a = tmp.path().join("a").display().to_string();
    let key_a = "0a".repeat(32);
    let _a = start_with_envs(
        &["--data-dir", &data_a, "--database-url", &url],
        &[("FERRY_SECRET_KEY", key_a.as_str())],
    );
    let mut b = ferry(&["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .arg("--data-dir")
        .arg(tmp.path().join("b"))
        .env("FERRY_SECRET_KEY", "0b".repeat(32))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = b.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = b.kill();
            panic!("the server with another key did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut b.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("every server sharing a database needs the same key"),
        "{err}"
    );
}

/// Two servers on one PostgreSQL take signed webhook deliveries in turn: each delivery
/// starts exactly one run (one server at a time handles a repository's deliveries).
#[tokio::test]
async fn deliveries_spread_over_two_servers_start_each_run_once() {
    use hmac::Mac as _;
    let Some(url) = postgres_database("ferry_intake") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  ok:\n    run: \"true\"\n");
    let sha = git(&bare, &["rev-parse", "main"]);
    let key = "cd".repeat(32);
    let envs = [("FERRY_SECRET_KEY", key.as_str())];
    let server = |name: &str| {
        let data = tmp.path().join(name).display().to_string();
        start_with_envs(
            &[
                "--max-runs",
                "1",
                "--data-dir",
                &data,
                "--database-url",
                &url,
            ],
            &envs,
        )
    };
    let a = server("a");
    let token = a.admin_token();
    let b = server("b");
    let secret = "hook-secret-31";
    let body =
        json!({ "name": "app", "url": bare.display().to_string(), "webhook_secret": secret });
    let (status, answer) = a.call(&token, "POST", "/api/v1/repos", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let payload = json!({
        "ref": "refs/heads/main",
        "after": sha,
        "head_commit": { "id": sha, "message": "push" },
    })
    .to_string();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(payload.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    const DELIVERIES: usize = 40;
    let client = reqwest::Client::new();
    for i in 0..DELIVERIES {
        let to = if i % 2 == 0 { &a } else { &b };
        let resp = client
            .post(format!("{}/api/v1/hooks/github/app", to.base))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("delivery-{i}"))
            .header("X-Hub-Signature-256", &signature)
            .header("Content-Type", "application/json")
            .body(payload.clone())
            .send()
            .await
            .expect("delivery");
        assert_eq!(resp.status().as_u16(), 202, "delivery {i}");
    }
    // Every delivery handled: as many runs as deliveries, and no more afterwards.
    let count = async || {
        let (_, runs) = a
            .call(&token, "GET", "/api/v1/runs?repo=app&limit=200", None)
            .await;
        runs["runs"].as_array().map(Vec::len).unwrap_or(0)
    };
    let started = Instant::now();
    while count().await < DELIVERIES && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, DELIVERIES, "one run per delivery");
}

/// The `ferry` CLI as a client: repositories, trigger and follow, runs, logs, re-run.
#[tokio::test]
async fn the_cli_drives_a_server() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(
        tmp.path(),
        "jobs:\n  one:\n    run: echo first job\n  two:\n    needs: one\n    run: echo second job; exit 3\n  big:\n    run: seq 1 200000\n",
    );
    let data = tmp.path().join("data");
    let server = start(&data, &[]);
    let token = server.admin_token();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "hush\n").expect("secret");
    let cli = Cli::new(&server, &token, tmp.path());
    cli.ok(&[
        "repos",
        "add",
        "app",
        &bare.display().to_string(),
        "--webhook-secret-file",
        &secret.display().to_string(),
    ]);
    assert!(cli.stdout(&["repos", "list"]).starts_with("app "));
    assert_eq!(
        cli.stdout(&["repos", "set", "app", "--fork-prs", "run"]),
        "app: fork pull requests: run\n"
    );
    assert!(
        cli.stdout(&["repos", "list"])
            .contains("(fork pull requests: run)")
    );
    // Trigger and follow: the logs stream, and the exit code is the run's outcome.
    let out = cli.run(&["trigger", "app", "main", "--follow"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "job two fails: {stdout}");
    assert!(
        stdout.contains("one │ first job") && stdout.contains("two │ second job"),
        "{stdout}"
    );
    let run_id = stdout.lines().next().expect("the run id first").to_string();
    let runs = cli.stdout(&["runs"]);
    assert!(runs.contains(&run_id) && runs.contains("failed"), "{runs}");
    assert_eq!(cli.stdout(&["logs", &run_id, "two"]), "second job\n");
    // A log bigger than one page (1 MiB) comes whole, page by page; --tail reads the end.
    let big = cli.stdout(&["logs", &run_id, "big"]);
    assert_eq!(big.len(), 1_288_895, "all 200000 lines");
    assert!(big.ends_with("\n199999\n200000\n"));
    let tail = cli.stdout(&["logs", &run_id, "big", "--tail", "2"]);
    assert_eq!(tail, "199999\n200000\n");
    // Any lines, found from the index (the log is stored compressed once the job ends).
    let some = cli.stdout(&["logs", &run_id, "big", "--range", "150000:150002"]);
    assert_eq!(some, "150000\n150001\n150002\n");
    let to_end = cli.stdout(&["logs", &run_id, "big", "--range", "199999:"]);
    assert_eq!(to_end, "199999\n200000\n");
    let across = cli.stdout(&["logs", &run_id, "big", "--range", "1000:190000"]);
    assert_eq!(across.lines().count(), 189_001, "across 1 MiB pages");
    assert!(across.starts_with("1000\n1001\n") && across.ends_with("\n190000\n"));
    assert_eq!(
        cli.stdout(&["logs", &run_id, "big", "--range", "300000:"]),
        ""
    );
    cli.ok(&["rerun", &run_id, "--failed"]);
    // Errors: a missing run is a usage error with the server's message; no token, no call.
    let missing = cli.run(&["cancel", "no-such-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("not found"));
    let no_token = ferry(&["cancel", "x", "--server", &server.base])
        .env_remove("FERRY_TOKEN")
        .env("XDG_CONFIG_HOME", &cli.config)
        .output()
        .expect("ferry");
    assert_eq!(no_token.status.code(), Some(2));
    assert!(stderr(&no_token).contains("no token"));
    // The config file works as well as the environment.
    std::fs::create_dir_all(cli.config.join("ferry")).expect("mkdir");
    std::fs::write(
        cli.config.join("ferry/config.json"),
        json!({ "server": server.base, "token": token }).to_string(),
    )
    .expect("write");
    let from_file = ferry(&["repos", "list"])
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_SERVER")
        .env("XDG_CONFIG_HOME", &cli.config)
        .output()
        .expect("ferry");
    expect_exit(&from_file, 0);
}

/// `ferry user add` writes a user into the server's store; a config file sets the server.
#[tokio::test]
async fn users_from_the_cli_and_a_config_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let out = user_add(&data, &["dee", "--role", "developer"]);
    let token = expect_exit(&out, 0).trim().to_string();
    assert!(token.starts_with("ferry_"));
    let again = user_add(&data, &["dee"]);
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
    let server = start_with(&["--config", &config.display().to_string()]);
    assert!(
        server.token.is_none(),
        "the store already has a user: no admin is created"
    );
    let (status, _) = server.call(&token, "GET", "/api/v1/tokens", None).await;
    assert_eq!(status, 200, "the CLI-made user's token works");
    let status = reqwest::get(format!("{}/api/v1/repos", server.base))
        .await
        .expect("request")
        .status()
        .as_u16();
    assert_eq!(status, 200, "public reads from the config file");
    drop(server);
    std::fs::write(&config, "listen = \"nonsense\"\n").expect("write");
    let bad = ferry(&["serve", "--config", &config.display().to_string()])
        .output()
        .expect("ferry");
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(err.contains("ferry.toml"), "{err}");
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
  watch: { interval: 200ms }
",
    );
    let data = tmp.path().join("data");
    let mut server = start(&data, &[]);
    let token = server.admin_token();
    let cli = Cli {
        repo: Some("app"),
        ..Cli::new(&server, &token, tmp.path())
    };
    cli.ok(&["repos", "add", "app", &bare.display().to_string()]);
    cli.ok(&["vars", "set", "GREETING", "hello", "--env", "sandbox"]);
    let set = cli.run_with_input(&["secrets", "set", "TOKEN"], "cli-secret-42\n");
    expect_exit(&set, 0);
    let staged = cli.run_with_input(&["secrets", "set", "SIGNING", "--env", "sandbox"], "s\n");
    expect_exit(&staged, 0);
    // Without --env the listing shows every scope; with it, what that environment gets.
    let listed = cli.stdout(&["secrets", "list"]);
    assert!(
        listed.contains("TOKEN") && !listed.contains("cli-secret-42"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("sandbox") && l.contains("SIGNING")),
        "{listed}"
    );
    let production = cli.stdout(&["secrets", "list", "--env", "production"]);
    assert!(
        production.contains("TOKEN") && !production.contains("SIGNING"),
        "{production}"
    );
    cli.ok(&["trigger", "app", "main", "--follow"]);
    // Sandbox goes live on its own; production waits for an approval.
    let envs = cli
        .poll(&["envs"], |envs| envs.contains("awaiting_approval"))
        .await;
    let releases = cli.stdout(&["releases"]);
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
    let detail = cli.stdout(&["deployment", "production#1"]);
    assert!(
        detail.contains("commits:") && detail.contains("first"),
        "{detail}"
    );
    assert!(detail.contains("out/app.sh  (new) → sha256:"), "{detail}");
    assert!(!detail.contains("verified"), "not deployed yet: {detail}");
    let sandbox = cli.stdout(&["deployment", "sandbox#1"]);
    assert!(sandbox.contains("\nverified    from "), "{sandbox}");
    // A "rollback" to a release never live in production is no way around its approval.
    cli.refuses(
        &["rollback", "production", "--to", &release],
        &format!("release {release} was never live in `production`"),
    );
    // An approver approves; production goes live.
    let add = user_add(&data, &["bob", "--role", "approver"]);
    let bob = String::from_utf8_lossy(&add.stdout).trim().to_string();
    let out = cli
        .as_user(&bob)
        .ok(&["approve", "production#1", "--comment", "looks good"]);
    assert!(out.starts_with("production#1: release "), "{out}");
    let live = cli
        .poll(&["envs"], |live| {
            live.lines()
                .any(|l| l.starts_with("production") && l.contains("bob"))
        })
        .await;
    assert!(
        live.lines()
            .any(|l| l.starts_with("production") && l.contains(&release) && l.contains("bob")),
        "{live}"
    );
    let output = cli.stdout(&["output", "sandbox"]);
    assert!(output.contains("app says hello with ***"), "{output}");
    // `ferry status`: the live release, its health and the history of it, each change
    // naming its deployment as people do (`sandbox#1`).
    let status = cli
        .poll(&["status", "sandbox"], |st| st.contains("→ healthy"))
        .await;
    assert!(
        status.contains(&format!("live         {release} (sandbox#1")),
        "{status}"
    );
    assert!(status.contains("health       healthy since "), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.contains("- → healthy") && l.contains("sandbox#1")),
        "{status}"
    );
    let log = cli.stdout(&["deployment", "sandbox#1", "--log"]);
    assert!(
        log.contains("deploying release") && log.contains("live"),
        "{log}"
    );
    let audit = cli.stdout(&["audit"]);
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
    cli.refuses(
        &["rollback", "sandbox"],
        "`sandbox` has no earlier release to go back to",
    );
    cli.refuses(
        &["promote", "nope", "--to", "production"],
        "there is no release `nope`",
    );
    let no_repo = ferry(&["envs"])
        .env_remove("FERRY_REPO")
        .env_remove("FERRY_SERVER")
        .output()
        .expect("ferry");
    assert_eq!(no_repo.status.code(), Some(2));
    server.stop();
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
    let (mut server, token) = serve_app(&data, &bare).await;
    server.trigger_app(&token).await;
    let first = wait_for_pids(&pids, 1, "the release was not deployed").await[0];
    // Wait until sandbox is live, then crash the server: its process is left behind.
    server
        .poll(&token, "/api/v1/repos/app/environments", |envs| {
            !envs["environments"][0]["live"].is_null()
        })
        .await;
    server.kill_9();
    assert!(alive(first), "the process outlives a killed server");
    let mut again = start(&data, &[]);
    let second = wait_for_pids(&pids, 2, "sandbox did not run again").await[1];
    assert!(gone(first), "the orphan was ended");
    assert!(alive(second));
    again.stop();
    assert!(gone(second), "a stopped server stops its processes");
}

/// The server's own `tracing` events reach standard error: JSON with `--log-format
/// json`, filtered by `FERRY_LOG`; a filter that cannot be read is a usage error.
#[test]
fn the_server_log_follows_ferry_log_and_log_format() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data").display().to_string();
    let bad = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
        .env("FERRY_LOG", "ferry_server=loud")
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("FERRY_LOG=`ferry_server=loud`"), "{stderr}");

    let mut child = ferry(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
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

/// The server logs one line per request (method, route template, status, time; never
/// the token) and one per state change of a run, as JSON with `--log-format json`.
#[tokio::test]
async fn the_server_logs_each_request_and_each_run_change() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  build:\n    run: echo hi\n");
    let data = tmp.path().join("data").display().to_string();
    let server = start_with_envs(
        &["--data-dir", &data, "--log-format", "json"],
        &[("FERRY_LOG", "info")],
    );
    let token = server.admin_token();
    server.add_app(&token, &bare).await;
    let run = server.trigger_app(&token).await;
    server
        .wait_for_run(&token, &run, |r| r["run"]["status"] == "success")
        .await;
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.iter().any(|l: &String| l.contains("run finished")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.log.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no `run finished` line; saw: {lines:#?}"),
        }
    }
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let request = events
        .iter()
        .find(|e| e["fields"]["route"] == "/api/v1/repos/{repo}/runs")
        .unwrap_or_else(|| panic!("a request line in {lines:#?}"));
    assert_eq!(request["fields"]["method"], "POST", "{request}");
    assert_eq!(request["fields"]["status"], 201, "{request}");
    assert!(request["fields"]["ms"].as_f64().is_some(), "{request}");
    assert_eq!(request["target"], "ferry_server::request");
    let message = |m: &str| {
        events
            .iter()
            .find(|e| e["fields"]["message"] == m)
            .unwrap_or_else(|| panic!("`{m}` in {lines:#?}"))
            .clone()
    };
    assert_eq!(message("run queued")["fields"]["repository"], "app");
    assert_eq!(message("run started")["fields"]["run"], 1);
    assert_eq!(message("run finished")["fields"]["result"], "success");
    let secret = token.trim_start_matches("ferry_");
    assert!(
        !lines.iter().any(|l| l.contains(secret)),
        "a token in the log: {lines:#?}"
    );
}

/// A server gives jobs that set no `timeout:` its own (`--job-timeout`, 60 minutes by
/// default), so that a job that never ends does not hold a runner for good; a job's own
/// `timeout:` still wins.
#[tokio::test]
async fn jobs_without_a_timeout_get_the_servers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(
        tmp.path(),
        "jobs:\n  stuck:\n    run: sleep 60\n  own:\n    timeout: 30s\n    run: sleep 2\n",
    );
    let server = start(&tmp.path().join("data"), &["--job-timeout", "1s"]);
    let token = server.admin_token();
    server.add_app(&token, &bare).await;
    let run = server.trigger_app(&token).await;
    let detail = server
        .wait_for_run(&token, &run, |r| r["run"]["status"] == "failed")
        .await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let job = |name: &str| {
        jobs.iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {detail}"))
    };
    assert_eq!(
        job("stuck")["reason"],
        "the job timed out after 1s",
        "{detail}"
    );
    assert_eq!(job("own")["status"], "success", "{detail}");
}

/// A delivery naming a tag that climbs out of the data directory (as a release's
/// name it would become a path that deploys remove and replace) is refused as a bad
/// payload, whatever its signature: nothing runs, nothing outside is touched.
#[tokio::test]
async fn a_tag_that_climbs_out_of_the_data_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  hi:\n    run: echo hi\n");
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(&victim).expect("victim");
    std::fs::write(victim.join("keep"), "mine").expect("keep");
    let server = start(&tmp.path().join("data"), &[]);
    let token = server.admin_token();
    let body =
        json!({ "name": "app", "url": bare.display().to_string(), "webhook_secret": "s3cret" });
    let (status, _) = server
        .call(&token, "POST", "/api/v1/repos", Some(body))
        .await;
    assert_eq!(status, 201);
    let sha = git(&bare, &["rev-parse", "main"]);
    for (n, tag) in [
        "refs/tags/../../../../../../victim",
        "refs/tags/..",
        "refs/tags/v1/../../x",
    ]
    .into_iter()
    .enumerate()
    {
        let push = json!({ "ref": tag, "after": sha, "commits": [{ "message": "tag" }] });
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v1/hooks/gitlab/app", server.base))
            .header("x-gitlab-event", "Tag Push Hook")
            .header("x-gitlab-token", "s3cret")
            .header("idempotency-key", format!("tag-{n}"))
            .json(&push)
            .send()
            .await
            .expect("deliver");
        assert_eq!(answer.status(), 400, "{tag}");
        let error: Value = answer.json().await.expect("json");
        assert_eq!(error["code"], "bad_payload", "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("is not a valid ref name"), "{message}");
    }
    let (_, runs) = server
        .call(&token, "GET", "/api/v1/runs?repo=app", None)
        .await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).expect("still there"),
        "mine"
    );
}

/// A delivery that arrives while the mirror cannot be read (as when a fetch is writing
/// it; here one object of the pushed commit is missing) is tried again once the mirror
/// is whole, not recorded as "not a commit" and lost.
#[tokio::test]
async fn a_delivery_while_the_mirror_cannot_be_read_is_retried_not_lost() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bare = bare_repo(tmp.path(), "jobs:\n  hi:\n    run: echo hi\n");
    let server = start(&tmp.path().join("data"), &[]);
    let token = server.admin_token();
    let body =
        json!({ "name": "app", "url": bare.display().to_string(), "webhook_secret": "s3cret" });
    let (status, repo) = server
        .call(&token, "POST", "/api/v1/repos", Some(body))
        .await;
    assert_eq!(status, 201, "{repo}");
    let repo_id = repo["repository"]["id"].as_str().expect("id").to_string();
    let first = server.trigger_app(&token).await;
    server
        .wait_for_run(&token, &first, |r| r["run"]["status"] == "success")
        .await;
    // A second commit, fetched into the mirror (as the watcher's refresh does) but not
    // read by the server yet (a commit it has read whole, it remembers).
    let work = tmp.path().join("origin-work");
    std::fs::write(work.join("second"), "2\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second"]);
    git(&work, &["push", "-q", &bare.display().to_string(), "main"]);
    let mirror = tmp
        .path()
        .join("data/mirrors")
        .join(format!("{repo_id}.git"));
    git(
        &mirror,
        &[
            "fetch",
            "-q",
            &bare.display().to_string(),
            "+refs/heads/*:refs/heads/*",
        ],
    );
    let sha = git(&bare, &["rev-parse", "main"]);
    // Its tree goes missing from the mirror, as mid-fetch.
    let tree = git(&bare, &["rev-parse", &format!("{sha}^{{tree}}")]);
    let object = mirror.join("objects").join(&tree[..2]).join(&tree[2..]);
    let aside = tmp.path().join("tree-object");
    std::fs::rename(&object, &aside)
        .unwrap_or_else(|e| panic!("the mirror keeps {tree} loose at {}: {e}", object.display()));
    let push =
        json!({ "ref": "refs/heads/main", "after": sha, "commits": [{ "message": "second" }] });
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/hooks/gitlab/app", server.base))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", "s3cret")
        .header("idempotency-key", "push-2")
        .json(&push)
        .send()
        .await
        .expect("deliver");
    assert_eq!(answer.status(), 202);
    // The intake says it will try again; then the mirror is whole again.
    let said = server.wait_for_log("trying again");
    assert!(said.contains("cannot read commit"), "{said}");
    std::fs::rename(&aside, &object).expect("restore the object");
    let runs = server
        .poll(&token, "/api/v1/runs?repo=app", |r| {
            r["runs"].as_array().is_some_and(|runs| {
                runs.iter().any(|run| {
                    run["triggered_by"] == "webhook:gitlab" && run["status"] == "success"
                })
            })
        })
        .await;
    let runs = runs.expect("the delivery ran once the mirror could be read");
    let by_hook: Vec<&Value> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["triggered_by"] == "webhook:gitlab")
        .collect();
    assert_eq!(by_hook.len(), 1);
    assert_eq!(by_hook[0]["commit_sha"], sha.as_str());
    // `ferry deliveries` shows it, started, with its commit; a started one is not
    // delivered again.
    let mut cli = Cli::new(&server, &token, tmp.path());
    cli.repo = Some("app");
    let listed = cli.ok(&["deliveries"]);
    let line = listed
        .lines()
        .find(|l| l.contains("Push Hook") || l.contains("push"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains("started") && line.contains(&sha[..8]),
        "{listed}"
    );
    let id = line.split_whitespace().nth(2).expect("id");
    cli.refuses(
        &["deliveries", "--redeliver", id],
        "only a failed or declined delivery",
    );
}

/// `ferry serve --tls-cert/--tls-key` speaks HTTPS only: the CLI reaches it over
/// https:// trusting the CA in `--ca-file`, refuses it without (the certificate cannot
/// be verified, so no token is sent), and a plain-HTTP request gets no answer. Bad
/// certificate files stop the start with the file's name.
#[tokio::test]
async fn the_server_speaks_tls_and_the_cli_verifies_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    ferry_testkit::pki(tmp.path());
    let file = |name: &str| tmp.path().join(name).display().to_string();
    let server = start(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            &file("cert.pem"),
            "--tls-key",
            &file("key.pem"),
        ],
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let token = server.admin_token();
    let cli = Cli::new(&server, &token, tmp.path());
    let trusted = cli
        .command(&["repos", "list"])
        .env("FERRY_CA_FILE", file("ca.pem"))
        .output()
        .expect("ferry");
    expect_exit(&trusted, 0);
    let untrusted = cli.run(&["repos", "list"]);
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(said.contains("cannot reach the server"), "{said}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = server.base.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{plain}/api/v1/repos"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(answer.is_err(), "{answer:?}");
    // A CLI pointed at something else than a URL says so.
    let odd = cli
        .command(&["repos", "list"])
        .env("FERRY_SERVER", "ftp://example.com")
        .output()
        .expect("ferry");
    assert_eq!(odd.status.code(), Some(2), "{odd:?}");

    // Files that hold no certificate or no fitting key.
    for (cert, key, says) in [
        ("key.pem", "key.pem", "key.pem: no certificate"),
        (
            "cert.pem",
            "cert.pem",
            "cert.pem: cannot read a private key",
        ),
        ("ca.pem", "key.pem", "the key does not fit the certificate"),
        (
            "missing.pem",
            "key.pem",
            "missing.pem: cannot read certificates",
        ),
    ] {
        let out = ferry(&["serve", "--listen", "127.0.0.1:0", "--host-sandbox", "off"])
            .args(["--data-dir", &file("data2"), "--tls-cert", &file(cert)])
            .args(["--tls-key", &file(key)])
            .env_remove("FERRY_DATABASE_URL")
            .output()
            .expect("ferry");
        assert_eq!(out.status.code(), Some(2), "{cert} {key}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{cert} {key}: {stderr}");
    }
    assert!(
        !tmp.path().join("data2").exists(),
        "nothing is written before the files are checked"
    );
}

/// `ferry infra state ENV`: the versions of an environment's Terraform state, and one
/// version's content, as the server keeps them.
#[tokio::test]
async fn the_cli_lists_and_reads_terraform_states() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let bare = bare_repo(tmp.path(), "jobs:\n  a:\n    run: 'true'\n");
    let (server, token) = serve_app(&data, &bare).await;
    // A deployment's credential, straight into the store (as the deliverer makes one).
    let store = ferry_store::Store::open(&data).await.expect("store");
    let repo = store.repository("app").await.expect("repo");
    store
        .create_infra_credential(
            &ferry_server::auth::hash_token("pw"),
            &ferry_store::InfraGrant {
                repository_id: repo.id.clone(),
                environment: "sandbox".into(),
                deployment_id: None,
                may_write: true,
            },
            ferry_store::now_ms() + 600_000,
        )
        .await
        .expect("credential");
    // What Terraform's http backend sends.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/infra/app/sandbox/state", server.base);
    for serial in [1, 2] {
        let state = json!({ "version": 4, "serial": serial, "lineage": "l-1", "outputs": {} });
        let r = http
            .post(&url)
            .basic_auth("ferry", Some("pw"))
            .json(&state)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
    }
    let cli = Cli {
        repo: Some("app"),
        ..Cli::new(&server, &token, tmp.path())
    };
    let out = cli.run(&["infra", "state", "sandbox"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("VERSION"), "{text}");
    assert_eq!(text.lines().count(), 3, "two versions: {text}");
    let out = cli.run(&["infra", "state", "sandbox", "--version", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("\"serial\": 1") && text.contains("\"lineage\": \"l-1\""),
        "{text}"
    );
    let none = cli.run(&["infra", "state", "staging"]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no Terraform state yet"));
}
