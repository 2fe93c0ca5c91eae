//! The sandbox helper (`ferry __ferry-sandbox-helper`): a sandboxed job's processes
//! start from a process of their own, restricted and (for a root server) already the
//! step user, never from a thread of the server, so that nothing a step does to its
//! starter reaches the server.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ferry_exec::helper::Start;
use ferry_exec::sandbox::{Sandbox, Spawner, StepUser};

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// A step started by the helper runs as the step user in the job's sandbox; it can
/// signal no thread of the server (this test process stands for it), and what it
/// detached ends with the job's sweep, while the server lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helpers_steps_reach_no_thread_of_the_server() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let own = tmp.path().join("ws");
    std::fs::create_dir_all(&own).expect("mkdir");
    let root = nix::unistd::geteuid().is_root();
    let user = root.then(|| StepUser::parse("nobody").expect("nobody"));
    let sandbox = Sandbox::default()
        .with_user(user)
        .with_helper(Some(env!("CARGO_BIN_EXE_ferry").into()));
    let spawner = Spawner::start(&sandbox, vec![own.clone()]).expect("helper");
    // Every thread of this process now, the spawner's own among them (if it had one).
    let tasks: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    let script = format!(
        "id -u; for t in {}; do kill -0 $t 2>/dev/null && echo LEAK-signal-$t; done; \
         echo mine > f && cat f; cat /etc/hostname >/dev/null && echo system; \
         setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $! > pid",
        tasks.join(" ")
    );
    let (read, write) = nix::unistd::pipe().expect("pipe");
    let start = Start {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: own.clone(),
        group: true,
        fds: 1,
    };
    let mut child = spawner
        .start_process(start, vec![write])
        .await
        .expect("started");
    let code = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("ended")
        .expect("status");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).expect("read");
    let uid = if root {
        "65534".to_string()
    } else {
        nix::unistd::geteuid().to_string()
    };
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("{uid}\nmine\nsystem\n"));
    // What the step detached ends with the sweep.
    let detached: i32 = std::fs::read_to_string(own.join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(detached), "detached and running");
    assert!(
        spawner.sweep().await,
        "signals are scoped here (Landlock ABI 6)"
    );
    for _ in 0..100 {
        if !alive(detached) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(detached), "the sweep ended {detached}");
    drop(spawner);
    assert!(alive(std::process::id() as i32));
}

/// A job with a uid of its own cannot outlive its uid: a step that detaches a process
/// and then kills its helper (so that the job's own sweep cannot run) still loses that
/// process when the job ends, before the uid serves again; the job's directory is the
/// server's again, and the uid is not handed out while its processes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_job_leaves_dies_with_its_uid_even_if_it_killed_its_helper() {
    use ferry_exec::sandbox::{StepUsers, UidRange};
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return; // only root switches users
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let own = tmp.path().join("ws");
    std::fs::create_dir_all(&own).expect("mkdir");
    let ferry: std::path::PathBuf = env!("CARGO_BIN_EXE_ferry").into();
    let range = UidRange::parse("2100000300-2100000300")
        .expect("range")
        .with_sweeper(Some(ferry.clone()))
        .with_locks(&tmp.path().join("locks"))
        .expect("locks");
    let users = StepUsers::Range(std::sync::Arc::new(range));
    let sandbox = Sandbox::default()
        .with_users(Some(users))
        .with_helper(Some(ferry));
    let spawner = Spawner::start(&sandbox, vec![own.clone()]).expect("helper");
    let start = Start {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $! > pid; kill -9 $PPID".into(),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: own.clone(),
        group: true,
        fds: 0,
    };
    let _ = spawner.start_process(start, Vec::new()).await;
    let mut detached = None;
    for _ in 0..200 {
        detached = std::fs::read_to_string(own.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if detached.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let detached = detached.expect("the step wrote its pid");
    assert!(alive(detached), "detached and running");
    assert!(
        !spawner.sweep().await,
        "the helper is dead: no sweep from it"
    );
    assert!(alive(detached), "so it still runs");
    drop(spawner);
    assert_eq!(
        std::fs::metadata(&own).expect("meta").uid(),
        0,
        "the job's directory is the server's again"
    );
    for _ in 0..300 {
        if !alive(detached) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(detached), "{detached} outlived its job's uid");
    // The range's one uid serves again (after its sweep).
    let mut again = None;
    for _ in 0..300 {
        if let Ok(s) = Spawner::start(&sandbox, vec![own.clone()]) {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "the uid came back to the range");
}

/// The usual end: the job's helper, its uid the job's own, kills everything of that uid
/// when the server's end closes, and says so (then the server need not sweep the uid
/// itself: here it could not, it has no sweeper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_with_a_uid_of_its_own_leaves_nothing_of_its_job() {
    use ferry_exec::sandbox::{StepUsers, UidRange};
    if !nix::unistd::geteuid().is_root() {
        return; // only root switches users
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let own = tmp.path().join("ws");
    std::fs::create_dir_all(&own).expect("mkdir");
    let range = UidRange::parse("2100000301-2100000301").expect("range");
    let sandbox = Sandbox::default()
        .with_users(Some(StepUsers::Range(std::sync::Arc::new(range))))
        .with_helper(Some(env!("CARGO_BIN_EXE_ferry").into()));
    let spawner = Spawner::start(&sandbox, vec![own.clone()]).expect("helper");
    let start = Start {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "setsid sh -c 'sleep 300 & sleep 300' >/dev/null 2>&1 < /dev/null & echo $! > pid"
                .into(),
        ],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: own.clone(),
        group: true,
        fds: 0,
    };
    let mut child = spawner
        .start_process(start, Vec::new())
        .await
        .expect("started");
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let detached: i32 = std::fs::read_to_string(own.join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    assert!(alive(detached));
    drop(spawner);
    for _ in 0..300 {
        if !alive(detached) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(detached), "{detached} outlived its job");
}
