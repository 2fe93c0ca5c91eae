//! A release's host code (a deploy script without an image, a process, a command probe)
//! runs in the server's sandbox: it reads the system, its release's files and its
//! environment's secret files, writes its release's directory and temporary directory,
//! and reaches nothing else: not the server's key or database, not another
//! environment's release or secrets, not a directory beside the data directory; where
//! the server is root it runs as a step user: by default a uid of the deployment's own,
//! so that it cannot even change the modes of another environment's files or the limits
//! of its processes (which Landlock does not govern).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{GOOD, Harness, wait_contains};
use ferry_exec::sandbox::{Sandbox, StepUser, StepUsers, UidRange};
use ferry_store::DeploymentStatus as S;

/// What the release's code tries, as shell lines appending to `$OUT/$1`.
const PROBE: &str = r#"probe() {
  o="$OUT/$1"
  cat "$DATA/secret.key" >/dev/null 2>&1 && echo LEAK-key >> "$o" || echo no-key >> "$o"
  cat "$DATA/ferry.db" >/dev/null 2>&1 && echo LEAK-db >> "$o" || echo no-db >> "$o"
  ls "$DATA/deploy" >/dev/null 2>&1 && echo LEAK-list >> "$o" || echo no-list >> "$o"
  cat "$OTHER_RELEASE/app.sh" >/dev/null 2>&1 && echo LEAK-other-release >> "$o" || echo no-other-release >> "$o"
  (echo x > "$BESIDE/written") 2>/dev/null && echo LEAK-write >> "$o" || echo no-write >> "$o"
  kill -0 "$SERVER_PID" 2>/dev/null && echo LEAK-signal >> "$o" || echo no-signal >> "$o"
  cat "$FERRY_SECRETS_DIR/API_TOKEN" >/dev/null 2>&1 && echo secret-file >> "$o"
  chmod 644 "$FERRY_SECRETS_DIR/API_TOKEN" 2>/dev/null && echo chmod-secret >> "$o"
  echo mine > "mine-$1" && echo release-dir >> "$o"
  echo t > "$TMPDIR/t-$1" && echo tmp >> "$o"
  echo "uid=$(id -u)" >> "$o"
}
"#;

/// What a deploy script tries against the other environment (web): as its owner would,
/// what Landlock does not govern.
const ATTACK: &str = r#"attack() {
  o="$OUT/attack"
  chmod 777 "$OTHER_RELEASE" 2>/dev/null && echo LEAK-chmod >> "$o" || echo no-chmod >> "$o"
  prlimit --pid "$(cat "$OUT/pid-web")" --nofile=7:7 2>/dev/null && echo LEAK-prlimit >> "$o" || echo no-prlimit >> "$o"
}
"#;

/// web: a process; then sandbox: a deploy script and a command probe (web's release is
/// what its code must not read).
fn config() -> String {
    let indent = |text: &str, by: &str| {
        text.lines()
            .map(|l| format!("{by}{l}\n"))
            .collect::<String>()
    };
    let probe = indent(PROBE, "            ");
    let attack = indent(ATTACK, "            ");
    format!(
        "environments:
  sandbox:
    after: web
    auto: true
    deploy:
      target:
        script:
          run: |
{probe}{attack}            probe script
            attack
      verify:
        command: |
{probe}            test -s \"$OUT/probe\" || probe probe
        for: 100ms
        interval: 25ms
  web:
    auto: true
    deploy:
      target:
        process:
          command: |
{probe}            probe process
            echo $$ > \"$OUT/pid-web\"
            exec sleep 300
      verify: {{ command: \"true\", for: 100ms, interval: 25ms }}
"
    )
}

/// What the code tries to reach: the data directory, a directory beside it, this
/// process (standing for the server), as the repository's variables.
async fn set_targets(h: &Harness, beside: &std::path::Path) {
    for (name, value) in [
        ("DATA", h.data.display().to_string()),
        ("BESIDE", beside.display().to_string()),
        ("SERVER_PID", std::process::id().to_string()),
    ] {
        h.store
            .set_variable(&h.repo, "", name, &value, None)
            .await
            .expect("variable");
    }
}

fn lines(h: &Harness, file: &str) -> String {
    std::fs::read_to_string(h.out.join(file)).unwrap_or_else(|e| panic!("$OUT/{file}: {e}"))
}

/// The step users of a root server: a uid per deployment, as `ferry serve` has them by
/// default.
fn uid_range() -> StepUsers {
    StepUsers::Range(std::sync::Arc::new(
        UidRange::parse("2100000000-2100000099").expect("range"),
    ))
}

/// The uid the code of `file` ran as.
fn uid_in(h: &Harness, file: &str) -> u32 {
    lines(h, file)
        .lines()
        .find_map(|l| l.strip_prefix("uid="))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no uid in $OUT/{file}"))
}

/// The open-files limit of process `pid`.
fn nofile(pid: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim())).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_releases_host_code_reaches_only_its_own_files() {
    let root = nix::unistd::geteuid().is_root();
    let mut h = jailed(root.then(uid_range)).await;
    if root {
        let (script, process) = (uid_in(&h, "script"), uid_in(&h, "process"));
        assert!(
            (2_100_000_000..2_100_000_100).contains(&script)
                && (2_100_000_000..2_100_000_100).contains(&process)
                && script != process,
            "a uid of each deployment's own: {script}, {process}"
        );
        assert_eq!(
            uid_in(&h, "probe"),
            script,
            "a deployment's probes are its own"
        );
        assert_eq!(
            lines(&h, "attack"),
            "no-chmod\nno-prlimit\n",
            "nothing of another environment's, not even as an owner"
        );
        assert!(!nofile(&lines(&h, "pid-web")).contains(" 7 "));
    }
    h.stop().await;
}

/// With one step user for all (`--sandbox-user nobody`), Landlock keeps environments'
/// files apart, but not what an owner may do besides reading and writing: this is
/// what a uid per deployment takes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_user_for_all_lets_a_deployment_chmod_another() {
    if !nix::unistd::geteuid().is_root() {
        return; // only root switches users
    }
    let nobody = StepUser::parse("nobody").expect("nobody");
    let mut h = jailed(Some(StepUsers::One(nobody))).await;
    assert_eq!(uid_in(&h, "script"), 65534);
    assert_eq!(uid_in(&h, "process"), 65534);
    assert_eq!(lines(&h, "attack"), "LEAK-chmod\nLEAK-prlimit\n");
    h.stop().await;
}

/// Seals a release whose code probes what it may reach (see [`PROBE`]), deployed to
/// web then sandbox with `users`, and checks what every user set has in common.
async fn jailed(users: Option<StepUsers>) -> Harness {
    let root = nix::unistd::geteuid().is_root();
    let mut h = Harness::new().await;
    // What a server does at start: the data directory passable for the step user only
    // as far as its workspaces and deployments.
    let user = users.as_ref().map(StepUsers::probe);
    let open = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    open(h.tmp.path(), 0o711);
    if user.is_some() {
        ferry_exec::sandbox::share_work_only(&h.data).expect("share");
    }
    // Where the code reports (the one directory besides its own it may write) and a
    // directory beside the data directory it must not.
    open(&h.out, 0o777);
    let beside = h.tmp.path().join("beside");
    std::fs::create_dir_all(&beside).expect("mkdir");
    open(&beside, 0o777);
    let sandbox = Sandbox::default()
        .with_write([h.out.clone()])
        .with_users(users);
    h.deliverer = h.deliverer.clone().with_sandbox(Some(sandbox));
    set_targets(&h, &beside).await;
    for env in ["sandbox", "web"] {
        h.store
            .set_secret(&h.key, &h.repo, env, "API_TOKEN", b"tok-jail", None)
            .await
            .expect("secret");
    }
    let web_release = ferry_deliver::layout::release_dir(&h.env_dir("web"), "v1");
    h.store
        .set_variable(
            &h.repo,
            "sandbox",
            "OTHER_RELEASE",
            &web_release.display().to_string(),
            None,
        )
        .await
        .expect("variable");
    h.start();
    h.seal("v1", &config(), GOOD).await;
    let web = h.wait_status("web", 1, S::Live).await;
    let sandbox = h.wait_status("sandbox", 1, S::Live).await;
    // A step user reads the secret files but cannot open them to others (they stay
    // the server's); a server that is not root shares its user with them.
    let chmod = if root { "" } else { "chmod-secret\n" };
    let want = |file: &str| {
        let uid = if root {
            uid_in(&h, file).to_string()
        } else {
            nix::unistd::geteuid().to_string()
        };
        format!(
            "no-key\nno-db\nno-list\nno-other-release\nno-write\nno-signal\nsecret-file\n{chmod}release-dir\ntmp\nuid={uid}\n"
        )
    };
    assert_eq!(
        lines(&h, "script"),
        want("script"),
        "{}",
        h.log_of(&sandbox)
    );
    // A script's secret files go once it has run, before verification.
    let probe = want("probe")
        .replace("secret-file\n", "")
        .replace("chmod-secret\n", "");
    assert_eq!(lines(&h, "probe"), probe, "{}", h.log_of(&sandbox));
    wait_contains(&h.out.join("process"), "uid=").await;
    assert_eq!(lines(&h, "process"), want("process"), "{}", h.log_of(&web));
    assert!(
        web_release.join("app.sh").exists(),
        "what sandbox could not read"
    );
    assert!(!beside.join("written").exists());
    // The code's own files are in its release's directory.
    let release = ferry_deliver::layout::release_dir(&h.env_dir("sandbox"), "v1");
    assert!(release.join("mine-script").exists());
    h
}

/// Without a sandbox (`--deploy-sandbox off`), the same code runs with the server's
/// rights: what the test above refuses is what the sandbox takes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_a_releases_host_code_has_the_servers_rights() {
    let mut h = Harness::new().await;
    let beside = h.tmp.path().join("beside");
    std::fs::create_dir_all(&beside).expect("mkdir");
    set_targets(&h, &beside).await;
    h.store
        .set_secret(&h.key, &h.repo, "sandbox", "API_TOKEN", b"tok-jail", None)
        .await
        .expect("secret");
    h.start();
    h.seal("v1", &config(), GOOD).await;
    let sandbox = h.wait_status("sandbox", 1, S::Live).await;
    let script = lines(&h, "script");
    assert!(
        script.starts_with("LEAK-key\nLEAK-db\nLEAK-list\n"),
        "{script}\n{}",
        h.log_of(&sandbox)
    );
    h.stop().await;
}
