//! Removing what a crashed Ferry left in Docker. A test binary of its own: it removes
//! every container with Ferry's label, so it must not run beside the other container
//! tests (cargo runs test binaries one after another).

use ferry_exec::DockerExecutor;

mod common;
use common::{containers_of, docker, image, networks_of};

/// After a crash, the next start removes every container, network and volume Ferry made.
#[tokio::test]
async fn leftovers_of_a_crash_are_removed() {
    let Some(image) = image() else { return };
    let job = format!("crashed-{}", std::process::id());
    let label = format!("ferry.job={job}");
    let (ok, text) = docker(&[
        "network",
        "create",
        "--label",
        "ferry=true",
        "--label",
        &label,
        &job,
    ]);
    assert!(ok, "{text}");
    let (ok, text) = docker(&[
        "volume",
        "create",
        "--label",
        "ferry=true",
        "--label",
        &label,
        &job,
    ]);
    assert!(ok, "{text}");
    let (ok, text) = docker(&[
        "run",
        "-d",
        "--label",
        "ferry=true",
        "--label",
        &label,
        "--network",
        &job,
        "-v",
        &format!("{job}:/data"),
        &image,
        "sleep",
        "300",
    ]);
    assert!(ok, "{text}");
    let mut unrelated = docker(&["run", "-d", &image, "sleep", "300"]).1;
    unrelated.truncate(12);
    let executor = DockerExecutor::connect().await.expect("docker");
    assert!(executor.remove_leftovers().await >= 1);
    assert_eq!(containers_of(&job), "");
    assert_eq!(networks_of(&job), "");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &format!("label={label}")]).1;
    assert_eq!(volumes, "");
    let (still, _) = docker(&["inspect", &unrelated]);
    assert!(still, "containers without Ferry's label are not touched");
    docker(&["rm", "-f", &unrelated]);
}
