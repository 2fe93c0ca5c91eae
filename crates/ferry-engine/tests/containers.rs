//! Jobs with `image:` run in containers of a real Docker engine (started by
//! scripts/test.sh, with the base image `FERRY_TEST_IMAGE` built locally from busybox).

use std::time::Duration;

use ferry_exec::DockerExecutor;
use ferry_store::Status;
use tokio_util::sync::CancellationToken;

fn image() -> Option<String> {
    match std::env::var("FERRY_TEST_IMAGE") {
        Ok(i) => Some(i),
        Err(_) => {
            assert!(
                std::env::var_os("FERRY_SKIP_DOCKER").is_some(),
                "set FERRY_TEST_IMAGE (scripts/test.sh builds it and starts Docker) or FERRY_SKIP_DOCKER=1"
            );
            None
        }
    }
}

mod common;
use common::Fixture;

/// The engine with a real Docker engine for jobs with `image:`, two jobs at a time.
async fn fixture() -> Fixture {
    let mut docker = DockerExecutor::connect().await.expect("docker");
    docker.kill_grace = Duration::from_millis(500);
    Fixture::build(2, Some(docker)).await
}

fn containers_of(job: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=ferry.job={job}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn steps_run_in_containers_and_mix_with_host_jobs() {
    let Some(image) = image() else { return };
    let f = fixture().await;
    let yaml = format!(
        "jobs:
  inside:
    image: {image}
    steps:
      - run: echo \"in $FERRY_JOB at $(pwd) with $FERRY_WORKSPACE\"; cat input.txt
      - run: mkdir -p out && echo built-in-container > out/bin && test ! -e /etc/hostname-from-host
    artifacts: [out/bin]
  outside:
    needs: inside
    run: cat out/bin
  failing:
    image: {image}
    run: echo about to fail; exit 4
"
    );
    let out = f.run(&yaml).await;
    let inside = f.log(&out, "inside").await;
    assert_eq!(
        inside,
        "in inside at /workspace with /workspace\nfrom the source\n"
    );
    assert_eq!(
        f.log(&out, "outside").await,
        "built-in-container\n",
        "artifacts cross from container to host"
    );
    let failing = out
        .jobs
        .iter()
        .find(|j| j.name == "failing")
        .expect("failing");
    assert_eq!(failing.status, Status::Failed);
    assert_eq!(
        failing.reason.as_deref(),
        Some("step 1 `echo about to fail; exit 4` exited with code 4")
    );
    assert_eq!(containers_of("inside"), "", "containers are removed");
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    if image().is_none() {
        return;
    }
    let f = fixture().await;
    let out = f
        .run("jobs:\n  nope:\n    image: 127.0.0.1:1/ferry-test/absent:1\n    run: 'true'\n")
        .await;
    let job = &out.jobs[0];
    assert_eq!(job.status, Status::Failed);
    let reason = job.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with(
            "image `127.0.0.1:1/ferry-test/absent:1` is not here and cannot be pulled"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn cancel_removes_the_containers() {
    let Some(image) = image() else { return };
    let f = fixture().await;
    let yaml =
        format!("jobs:\n  sleeper-cancel:\n    image: {image}\n    run: echo started; sleep 300\n");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        for _ in 0..400 {
            if !containers_of("sleeper-cancel").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let out = tokio::time::timeout(Duration::from_secs(60), f.run_with(&yaml, cancel))
        .await
        .expect("stops");
    assert_eq!(out.status, Status::Cancelled);
    assert_eq!(
        containers_of("sleeper-cancel"),
        "",
        "nothing is left after a cancel"
    );
}

#[tokio::test]
async fn user_and_resource_limits_apply() {
    let Some(image) = image() else { return };
    let f = fixture().await;
    let yaml = format!(
        "jobs:
  limited:
    image: {{ name: {image}, user: \"1000:1000\" }}
    resources: {{ cpus: 0.5, memory: 64m }}
    run: |
      id -u
      cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
      cat input.txt
"
    );
    let out = f.run(&yaml).await;
    assert_eq!(
        out.status,
        Status::Success,
        "{}",
        f.log(&out, "limited").await
    );
    assert_eq!(
        f.log(&out, "limited").await,
        "1000\n67108864\nfrom the source\n"
    );
}

#[tokio::test]
async fn a_default_image_takes_jobs_without_one() {
    let Some(image) = image() else { return };
    let mut f = fixture().await;
    f.engine = f.engine.clone().with_default_image(Some(image));
    let out = f.run("jobs:\n  anywhere:\n    run: pwd\n").await;
    assert_eq!(
        f.log(&out, "anywhere").await,
        "/workspace\n",
        "ran in a container"
    );
}
