//! The real `ferry` binary in temporary git repositories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{expect_exit, files_holding, gone, pids_in};

struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    fn new(pipeline: &str) -> Repo {
        let repo = Repo {
            tmp: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(repo.root()).expect("mkdir");
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(".ferry.yml", pipeline);
        repo
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn write(&self, path: &str, content: &str) {
        let p = self.root().join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap_or_default()
    }

    fn git(&self, args: &[&str]) -> String {
        ferry_testkit::git(&self.root(), args)
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args)
            .current_dir(self.root())
            .env("FERRY_WORK_DIR", self.tmp.path().join("work"))
            .env_remove("FERRY_DATA_DIR")
            .env("NO_COLOR", "1");
        cmd
    }

    fn ferry(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ferry")
    }

    /// `ferry args…`, which must succeed: its stdout.
    #[track_caller]
    fn ferry_ok(&self, args: &[&str]) -> String {
        expect_exit(&self.ferry(args), 0)
    }

    /// `ferry args…`, which must exit with `code`: its stderr.
    #[track_caller]
    fn ferry_fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.ferry(args);
        expect_exit(&out, code);
        stderr(&out)
    }

    /// `ferry args…`, which must fail as a usage error (exit 2) with `says` in its stderr.
    #[track_caller]
    fn refuses(&self, args: &[&str], says: &str) {
        assert_holds(&self.ferry_fails(2, args), says);
    }

    /// A repository whose pipeline writes process ids to [`Repo::pidfile`]: `{pids}` in
    /// `pipeline` stands for its path.
    fn recording_pids(pipeline: &str) -> Repo {
        let repo = Repo::new("");
        let pids = repo.pidfile().display().to_string();
        repo.write(".ferry.yml", &pipeline.replace("{pids}", &pids));
        repo
    }

    /// Where the steps of a [`Repo::recording_pids`] pipeline write their process ids.
    fn pidfile(&self) -> PathBuf {
        self.tmp.path().join("pids")
    }

    /// Starts `ferry run` (with `env` added) and waits until its steps have written
    /// `count` pids to [`Repo::pidfile`].
    fn start_run(&self, count: usize, env: &[(&str, &str)]) -> std::process::Child {
        let child = self
            .command(&["run"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let start = Instant::now();
        while pids_in(&self.pidfile()).len() < count {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "steps did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that `text` holds `part`, showing `text` when it does not.
#[track_caller]
fn assert_holds(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}

const SIMPLE: &str =
    "jobs:\n  build:\n    run: echo built\n  test:\n    needs: build\n    run: echo tested\n";

#[test]
fn lint_valid_and_invalid() {
    let repo = Repo::new(SIMPLE);
    assert_eq!(repo.ferry_ok(&["lint"]), ".ferry.yml: ok\n");

    repo.write(
        ".ferry.yml",
        "jobs:\n  build:\n    runn: make\n  test:\n    needs: [bild]\n    run: x\n",
    );
    assert_eq!(
        repo.ferry_fails(2, &["lint"]),
        ".ferry.yml:2:3: error: job `build` has nothing to run
  |
2 |   build:
  |   ^^^^^
  = help: add `run: <command>`, a list of `steps`, or `build_image`

.ferry.yml:3:5: error: unknown key `runn` in job `build`
  |
3 |     runn: make
  |     ^^^^
  = help: did you mean `run`?

.ferry.yml:5:13: error: job `test` needs `bild`, which is not a job
  |
5 |     needs: [bild]
  |             ^^^^
  = help: did you mean `build`?

3 errors in .ferry.yml
"
    );
    // A file path works too, and JSON output is available for tools.
    let json = repo.ferry(&["lint", "--json", ".ferry.yml"]);
    assert_eq!(json.status.code(), Some(2));
    let diags: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(diags[0]["span"]["start"]["line"], 2);
}

#[test]
fn run_succeeds_and_is_recorded() {
    let repo = Repo::new(SIMPLE);
    repo.commit("first");
    let text = repo.ferry_ok(&["run"]);
    assert!(text.contains("build │ built\n"), "{text}");
    assert!(text.contains("test  │ tested\n"), "{text}");
    assert!(text.contains("run 1 succeeded"), "{text}");
    assert!(
        text.contains("\nJOB    STATUS     DURATION  TESTS\n"),
        "{text}"
    );

    let runs = stdout(&repo.ferry(&["runs"]));
    assert!(
        runs.lines()
            .nth(1)
            .is_some_and(|l| l.contains("success") && l.contains("push") && l.contains("main")),
        "{runs}"
    );
    assert_eq!(stdout(&repo.ferry(&["logs", "1", "test"])), "tested\n");
    let all = stdout(&repo.ferry(&["logs", "last"]));
    assert_eq!(all, "build │ built\ntest  │ tested\n");
    let tail = stdout(&repo.ferry(&["logs", "last", "--tail", "1"]));
    assert_eq!(tail, all, "each job's last line");
    assert_eq!(stdout(&repo.ferry(&["logs", "1", "test", "-n", "0"])), "");
    assert_eq!(stdout(&repo.ferry(&["logs", "last", "--range", "1"])), all);
    assert_eq!(
        stdout(&repo.ferry(&["logs", "1", "test", "--range", "2:"])),
        ""
    );
    let stamped_range = stdout(&repo.ferry(&["logs", "1", "test", "--range", "1:1", "-t"]));
    assert!(stamped_range.ends_with("Z tested\n"), "{stamped_range}");
    let backwards = repo.ferry(&["logs", "1", "--range", "5:2"]);
    assert_eq!(backwards.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&backwards.stderr).contains("TO (2) comes before FROM (5)"),
        "{backwards:?}"
    );
    let stamped = stdout(&repo.ferry(&["logs", "1", "build", "--timestamps"]));
    assert!(
        stamped.ends_with("Z built\n") && stamped.starts_with("20"),
        "{stamped}"
    );
    assert_eq!(repo.ferry(&["logs", "9"]).status.code(), Some(2));
    assert!(
        repo.read(".ferry/.gitignore").contains('*'),
        "the store is kept out of git"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "running leaves the tree clean"
    );
}

#[test]
fn failing_job_exits_1_and_invalid_config_exits_2() {
    let repo = Repo::new("jobs:\n  bad:\n    run: echo oops; exit 7\n");
    let text = expect_exit(&repo.ferry(&["run"]), 1);
    assert_holds(&text, "bad ✗ failed");
    assert_holds(&text, "step 1 `echo oops; exit 7` exited with code 7");

    repo.write(".ferry.yml", "jobs:\n  bad:\n    run: [x\n");
    let err = repo.ferry_fails(2, &["run"]);
    assert!(
        err.starts_with(".ferry.yml:4:1: error: invalid YAML"),
        "{err}"
    );
    // Nothing half-written: the failed load recorded no run.
    let runs = stdout(&repo.ferry(&["runs"]));
    assert_eq!(runs.lines().count(), 2, "only the first run: {runs}");
}

#[test]
fn usage_errors_exit_2() {
    let repo = Repo::new(SIMPLE);
    repo.refuses(&["run", "--event", "nope"], "unknown event `nope`");
    repo.refuses(
        &["run", "--job", "tset"],
        "there is no job `tset` (did you mean `test`?)",
    );
    let elsewhere = tempfile::tempdir().expect("tmp");
    repo.refuses(
        &["run", &elsewhere.path().display().to_string()],
        ".ferry.yml not found",
    );
    repo.refuses(&["run", "/no/such/dir"], "/no/such/dir is not a directory");
    assert_eq!(repo.ferry(&["run", "--jobs", "0"]).status.code(), Some(2));
}

#[test]
fn dirty_working_tree_is_what_runs() {
    let repo =
        Repo::new("jobs:\n  show:\n    run: cat a.txt new.txt; echo changed > a.txt; rm new.txt\n");
    repo.write("a.txt", "committed\n");
    repo.write("ignored.log", "secret\n");
    repo.write(".gitignore", "*.log\n");
    repo.commit("first");
    repo.write("a.txt", "uncommitted\n");
    repo.write("new.txt", "untracked\n");
    repo.write(".ferry.yml", "jobs:\n  show:\n    run: cat a.txt new.txt; test ! -e ignored.log; echo changed > a.txt; rm new.txt\n");
    let text = repo.ferry_ok(&["run"]);
    assert_holds(&text, "show │ uncommitted\nshow │ untracked\n");
    assert_eq!(
        repo.read("a.txt"),
        "uncommitted\n",
        "the job ran in its own copy"
    );
    assert_eq!(repo.read("new.txt"), "untracked\n");
    let runs = stdout(&repo.ferry(&["runs"]));
    assert!(runs.contains("+ "), "a dirty run is marked: {runs}");
}

#[test]
fn commit_flag_runs_a_committed_revision() {
    let repo = Repo::new("jobs:\n  show:\n    run: cat a.txt; echo \"$FERRY_COMMIT_SHA\"\n");
    repo.write("a.txt", "one\n");
    let first = repo.commit("first");
    repo.write("a.txt", "two\n");
    repo.write(".ferry.yml", "jobs:\n  other:\n    run: echo other\n");
    repo.commit("second");
    repo.write("a.txt", "dirty\n");
    let text = repo.ferry_ok(&["run", "--commit", "HEAD~1"]);
    assert_holds(&text, &format!("show │ one\nshow │ {first}\n"));
    let no_such_ref = ["run", "--commit", "no-such-ref"];
    repo.refuses(&no_such_ref, "`no-such-ref` is not a commit");
}

#[test]
fn plan_and_dry_run() {
    let repo = Repo::new(
        "jobs:\n  build: { run: b }\n  lint: { run: l }\n  test:\n    needs: build\n    matrix: { v: [\"1\", \"2\"] }\n    run: t\n  deploy:\n    needs: test\n    if: event.tag != ''\n    run: d\n",
    );
    let sha = repo.commit("c");
    assert_eq!(
        repo.ferry_ok(&["plan"]),
        format!(
            "Plan for push on branch main at {}

stage 1 — 2 jobs in parallel
  run  build
  run  lint

stage 2 — 2 jobs in parallel
  run  test (v=1)  needs: build
  run  test (v=2)  needs: build

stage 3
  skip deploy      skipped: condition `event.tag != ''` is false

4 of 5 jobs will run
",
            &sha[..8]
        )
    );
    let tagged = stdout(&repo.ferry(&["run", "--dry-run", "--tag", "v1", "--job", "deploy"]));
    assert!(
        tagged.starts_with(&format!("Plan for tag on tag v1 at {}", &sha[..8])),
        "{tagged}"
    );
    assert!(
        tagged.contains("  run  deploy") && !tagged.contains("lint"),
        "{tagged}"
    );
    assert!(
        repo.ferry(&["runs"]).stdout.starts_with(b"no runs yet"),
        "a dry run records nothing"
    );
}

#[test]
fn json_and_quiet_output() {
    let repo = Repo::new(SIMPLE);
    let events: Vec<serde_json::Value> = repo
        .ferry_ok(&["run", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(
        events.first().map(|e| e["event"].clone()),
        Some("run_started".into())
    );
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some("success".into())
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["data"] == "tested\n")
    );

    let quiet = stdout(&repo.ferry(&["run", "--quiet"]));
    assert!(!quiet.contains("│"), "{quiet}");
    assert!(quiet.contains("run 2 succeeded"), "{quiet}");
}

/// `FERRY_LOG=debug` shows where a run's time went: each phase's span as it ends, with
/// its time; without it a command logs nothing of its own.
#[test]
fn ferry_log_times_each_phase_of_a_run() {
    let repo = Repo::new(SIMPLE);
    let out = repo
        .command(&["run", "--quiet"])
        .env("FERRY_LOG", "debug,sqlx=warn")
        .output()
        .expect("run ferry");
    expect_exit(&out, 0);
    let err = stderr(&out);
    for phase in [
        "prepare:snapshot.in_process",
        "open_root:store.open",
        "execute:create_run",
        "step{n=1}:spawn",
        "execute:store.flush",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(phase) && l.contains("close"))
            .unwrap_or_else(|| panic!("no span {phase} in:\n{err}"));
        assert!(
            line.contains("time.busy=") && line.contains("time.idle="),
            "{line}"
        );
    }
    let quiet = repo
        .command(&["run", "--quiet"])
        .env_remove("FERRY_LOG")
        .output();
    let quiet = quiet.expect("run ferry");
    assert_eq!(stderr(&quiet), "", "nothing is logged unless asked");
}

/// A command exits with the store's connection open: closing it would checkpoint the
/// WAL into the database (two fsyncs), or start to and be cut short by the exit. The
/// WAL stays for the next command to read; commands that only read leave the database
/// file as it was.
#[test]
fn a_command_exits_without_checkpointing_the_store() {
    let repo = Repo::new(SIMPLE);
    let (db, wal) = (
        repo.root().join(".ferry/ferry.db"),
        repo.root().join(".ferry/ferry.db-wal"),
    );
    repo.ferry_ok(&["run", "--quiet"]);
    let before = std::fs::read(&db).expect("the database");
    for _ in 0..3 {
        let runs = repo.ferry_ok(&["runs"]);
        assert_eq!(runs.lines().count(), 2, "{runs}");
        assert!(wal.is_file(), "`ferry runs` checkpointed the WAL away");
        assert!(
            std::fs::read(&db).expect("the database") == before,
            "`ferry runs` wrote to the database file"
        );
    }
}

/// A job whose output passes its log limit is stopped and fails, and its log ends
/// with the line that says why: never a silent cut, never a full disk.
#[test]
fn a_job_past_its_log_limit_is_stopped_and_says_so() {
    let repo = Repo::new(
        "jobs:\n  loud:\n    run: yes | head -c 50000000; touch \"$MARK\"\n  after:\n    needs: loud\n    run: echo never\n",
    );
    let mark = repo.tmp.path().join("finished");
    let out = repo
        .command(&["run", "--log-limit", "64k"])
        .env("MARK", &mark)
        .output()
        .expect("run ferry");
    expect_exit(&out, 1);
    let said = stdout(&out);
    assert!(said.contains("log limit of 64.0 KiB exceeded"), "{said}");
    assert!(!mark.exists(), "the step ran on past the limit");
    let log = repo.ferry_ok(&["logs", "last", "loud"]);
    assert!(
        log.ends_with("\nferry: error: log limit of 64.0 KiB exceeded\n"),
        "{}",
        &log[log.len().saturating_sub(200)..]
    );
    assert!(log.len() <= (64 << 10) + 100, "{} bytes", log.len());
    // 0 lifts the limit; a size that is not one is a usage error.
    repo.refuses(&["run", "--log-limit", "lots"], "`lots` is not a size");
}

/// Artifacts are read beneath the workspace: a symbolic link that leads out of it is
/// an error, never a copy of what it points at (issue 11, case 2).
#[test]
fn an_artifact_through_a_link_out_of_the_workspace_is_refused() {
    let repo =
        Repo::new("jobs:\n  leak:\n    run: ln -s \"$OUTSIDE\" d\n    artifacts: [d/secret.key]\n");
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(outside.join("secret.key"), "TOP-SECRET-KEY").expect("key");
    let out = repo
        .command(&["run"])
        .env("OUTSIDE", &outside)
        .output()
        .expect("run ferry");
    expect_exit(&out, 1);
    let said = stdout(&out);
    assert!(said.contains("leads out of the workspace"), "{said}");
    let copies = files_holding(&repo.root().join(".ferry"), "TOP-SECRET-KEY");
    assert!(copies.is_empty(), "copied: {copies:?}");
}

/// Artifacts are restored beneath the workspace: a symbolic link of the source where
/// the artifact's directory goes is replaced, never written through (issue 11, case 2).
#[test]
fn restoring_an_artifact_never_writes_through_a_link_of_the_source() {
    let repo = Repo::new(
        "jobs:\n  make:\n    run: rm out && mkdir out && echo pwned > out/x\n    artifacts: [out/x]\n  use:\n    needs: make\n    run: cat out/x\n",
    );
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, repo.root().join("out")).expect("link");
    repo.commit("a link out of the tree");
    // The artifact's directory replaces the link, as it did in the job that made it.
    let said = repo.ferry_ok(&["run"]);
    assert!(said.contains("use  │ pwned"), "{said}");
    assert!(!outside.join("x").exists(), "written through the link");
}

#[test]
fn run_one_job_with_its_needs() {
    let repo = Repo::new(
        "jobs:\n  a: { run: echo a }\n  b: { needs: a, run: echo b }\n  c: { run: echo c }\n",
    );
    let out = stdout(&repo.ferry(&["run", "--job", "b"]));
    assert!(
        out.contains("a │ a") && out.contains("b │ b") && !out.contains("c │"),
        "{out}"
    );
}

#[test]
fn example_pipeline_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let tmp = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "--quiet"])
        .arg(&root)
        .env("FERRY_DATA_DIR", tmp.path().join("data"))
        .env("FERRY_WORK_DIR", tmp.path().join("work"))
        .output()
        .expect("ferry");
    assert_holds(&expect_exit(&out, 0), "2 passed, 0 failed");
}

#[test]
fn schema_is_json_schema() {
    let repo = Repo::new(SIMPLE);
    let out = repo.ferry(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

fn interrupt(child: &std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("signal");
}

#[test]
fn interrupt_stops_everything_and_exits_130() {
    let repo = Repo::recording_pids(
        "jobs:\n  long:\n    run: |\n      sleep 300 & echo $! >> {pids}\n      echo $$ >> {pids}\n      sleep 300\n  other:\n    run: sleep 300 & echo $! >> {pids}; wait\n  after:\n    needs: long\n    run: echo never\n",
    );
    let child = repo.start_run(3, &[]);
    interrupt(&child);
    let text = expect_exit(&child.wait_with_output().expect("wait"), 130);
    assert!(text.contains("cancelled: long, other, after"), "{text}");
    assert!(text.contains("run 1 was cancelled"), "{text}");
    for pid in pids_in(&repo.pidfile()) {
        assert!(gone(pid), "process {pid} outlived the run");
    }
}

#[test]
fn keep_leaves_workspaces_and_default_removes_them() {
    let repo = Repo::new("jobs:\n  a:\n    run: echo made > made.txt\n");
    let work = repo.tmp.path().join("work");
    repo.ferry(&["run", "--quiet"]);
    let leftovers = std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "workspaces are removed after a run");
    let out = stdout(&repo.ferry(&["run", "--keep"]));
    assert!(out.contains("workspaces kept in"), "{out}");
    let kept: Vec<PathBuf> = std::fs::read_dir(&work)
        .expect("work dir")
        .flat_map(|run| std::fs::read_dir(run.expect("run").path()).expect("jobs"))
        .map(|job| job.expect("job").path())
        .filter(|p| !p.ends_with("source"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(kept[0].join("made.txt")).expect("kept file"),
        "made\n"
    );
}

#[test]
fn jobs_flag_limits_parallelism() {
    let repo = Repo::new(
        "jobs:\n  a: { run: sleep 0.3 }\n  b: { run: sleep 0.3 }\n  c: { run: sleep 0.3 }\n",
    );
    let out = repo.ferry(&["run", "--jobs", "1", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    // With one job at a time, each job starts after the previous one finished.
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "job_started" || e["event"] == "job_finished")
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "job_started",
            "job_finished",
            "job_started",
            "job_finished",
            "job_started",
            "job_finished"
        ]
    );
}

/// Runs `ferry run` on a pseudo-terminal (util-linux `script`), as a person would.
fn run_on_tty(repo: &Repo, no_color: bool) -> String {
    let cmd = format!("{} run", env!("CARGO_BIN_EXE_ferry"));
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo.root())
        .env("FERRY_WORK_DIR", repo.tmp.path().join("work"))
        .env_remove("NO_COLOR");
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.output().expect("script");
    assert_eq!(out.status.code(), Some(0));
    stdout(&out)
}

#[test]
fn colours_and_status_line_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let repo = Repo::new("jobs:\n  a:\n    run: echo hi\n");
    let tty = run_on_tty(&repo, false);
    assert!(
        tty.contains("\x1b[36ma\x1b[0m \x1b[90m│\x1b[0m hi"),
        "{tty:?}"
    );
    assert!(
        tty.contains("1 done · 0 running · 0 pending"),
        "a status line: {tty:?}"
    );
    let plain = run_on_tty(&repo, true);
    assert!(plain.contains("a │ hi"), "{plain:?}");
    assert!(
        !plain.contains("\x1b[3"),
        "NO_COLOR turns colours off: {plain:?}"
    );
}

#[test]
fn a_second_interrupt_kills_stubborn_steps() {
    let repo = Repo::recording_pids(
        "jobs:\n  stubborn:\n    run: |\n      trap '' TERM\n      echo $$ >> {pids}\n      while true; do sleep 0.05; done\n",
    );
    // The grace is an hour: only the second interrupt can end the step in time.
    let mut child = repo.start_run(1, &[("FERRY_KILL_GRACE", "1h")]);
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second interrupt did not end the run (its step ignores SIGTERM)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    for pid in pids_in(&repo.pidfile()) {
        assert!(gone(pid), "the stubborn step {pid} was killed");
    }
}

#[test]
fn a_plain_directory_runs_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("plain");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::write(
        dir.join(".ferry.yml"),
        "jobs:\n  a:\n    run: cat src/x; echo $FERRY_COMMIT_SHORT_SHA\n",
    )
    .expect("write");
    std::fs::write(dir.join("src/x"), "plain file\n").expect("write");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(&dir)
            .env("FERRY_WORK_DIR", tmp.path().join("work"))
            .env("NO_COLOR", "1")
            .output()
            .expect("ferry")
    };
    assert_holds(
        &expect_exit(&run(&["run"]), 0),
        "a │ plain file\na │ 00000000\n",
    );
    // The second run does not copy the first run's store into its workspace.
    expect_exit(&run(&["run", "--quiet"]), 0);
    let out = run(&["run", "--commit", "HEAD"]);
    expect_exit(&out, 2);
    assert_holds(&stderr(&out), "--commit needs a git repository");
}

#[test]
fn edits_during_a_run_do_not_reach_later_jobs() {
    let repo = Repo::recording_pids(
        "jobs:\n  first:\n    run: echo $$ >> {pids}; sleep 1\n  second:\n    needs: first\n    run: cat data.txt\n",
    );
    repo.write("data.txt", "before\n");
    let child = repo.start_run(1, &[]);
    repo.write("data.txt", "edited while running\n");
    let text = expect_exit(&child.wait_with_output().expect("wait"), 0);
    assert_holds(&text, "second │ before\n");
}

#[test]
fn runs_can_be_stored_in_postgresql() {
    let Ok(url) = std::env::var("FERRY_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("FERRY_SKIP_POSTGRES").is_some(),
            "set FERRY_TEST_POSTGRES (scripts/test.sh starts a server) or FERRY_SKIP_POSTGRES=1"
        );
        return;
    };
    let url = ferry_testkit::fresh_postgres_database(&url, "ferry_cli");
    let repo = Repo::new(SIMPLE);
    repo.ferry_ok(&["run", "--quiet", "--database-url", &url]);
    let runs = stdout(&repo.ferry(&["runs", "--database-url", &url]));
    assert!(
        runs.lines().nth(1).is_some_and(|l| l.contains("success")),
        "{runs}"
    );
    let logs = stdout(&repo.ferry(&["logs", "last", "test", "--database-url", &url]));
    assert_eq!(logs, "tested\n");
    repo.refuses(
        &["runs", "--database-url", "mysql://nope"],
        "unsupported database URL",
    );
}

#[test]
fn cache_list_and_clear() {
    let repo = Repo::new(
        "jobs:\n  deps:\n    cache: { key: \"deps-${{ hash_files('lock') }}\", paths: [vendor] }\n    run: if [ -d vendor ]; then echo hit; else echo miss; mkdir vendor; echo x > vendor/f; fi\n",
    );
    repo.write("lock", "v1\n");
    assert_eq!(stdout(&repo.ferry(&["cache", "list"])), "no caches\n");
    let first = repo.ferry(&["run"]);
    assert!(stdout(&first).contains("miss"), "{}", stdout(&first));
    let second = repo.ferry(&["run"]);
    assert!(stdout(&second).contains("hit"), "{}", stdout(&second));
    let list = stdout(&repo.ferry(&["cache", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("KEY"), "{list}");
    assert!(
        lines[1].starts_with("deps-") && lines[1].ends_with("vendor"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&repo.ferry(&["cache", "list", "--json"]))).expect("json");
    let key = json[0]["key"].as_str().expect("key").to_string();
    repo.refuses(&["cache", "clear", "nope"], "there is no cache `nope`");
    let cleared = repo.ferry(&["cache", "clear", &key]);
    assert_eq!(stdout(&cleared), format!("removed cache `{key}`\n"));
    assert!(stdout(&repo.ferry(&["run"])).contains("miss"));
    assert_eq!(
        stdout(&repo.ferry(&["cache", "clear", "--all"])),
        "removed 1 cache entry\n"
    );
}

#[test]
fn registry_logins_read_the_password_from_stdin() {
    let repo = Repo::new(SIMPLE);
    let no_stdin_flag = repo.ferry(&["registry", "login", "reg.example:5000", "-u", "ci"]);
    assert_eq!(
        no_stdin_flag.status.code(),
        Some(2),
        "the password never comes from an argument"
    );
    let mut login = repo
        .command(&[
            "registry",
            "login",
            "reg.example:5000",
            "-u",
            "ci",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = login.stdin.take().expect("stdin");
        stdin.write_all(b"pw-cli-3b7e\n").expect("write");
    }
    let out = login.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "saved the login of ci on reg.example:5000\n");
    let list = stdout(&repo.ferry(&["registry", "list"]));
    assert_eq!(
        list,
        format!("{:<40}  USER\n{:<40}  ci\n", "HOST", "reg.example:5000")
    );
    let key = std::fs::metadata(repo.root().join(".ferry/secret.key")).expect("key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        stdout(&repo.ferry(&["registry", "logout", "reg.example:5000"])),
        "removed the login on reg.example:5000\n"
    );
    assert_eq!(
        stdout(&repo.ferry(&["registry", "list"])),
        "no registry logins\n"
    );
}
