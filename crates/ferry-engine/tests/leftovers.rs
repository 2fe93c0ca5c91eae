//! Removing what a crashed Ferry left in Docker. A test binary of its own: it removes
//! every container with Ferry's label, so it must not run beside the other container
//! tests (cargo runs test binaries one after another).

use ferry_exec::DockerExecutor;

mod common;
use common::{assert_nothing_left, docker, docker_as_ferry, image};

/// After a crash, the next start removes every container, network and volume Ferry made.
#[tokio::test]
async fn leftovers_of_a_crash_are_removed() {
    let Some(image) = image() else { return };
    let job = format!("crashed-{}", std::process::id());
    let label = format!("ferry.job={job}");
    docker_as_ferry(&["network", "create"], &job, &[&job]);
    docker_as_ferry(&["volume", "create"], &job, &[&job]);
    let volume = format!("{job}:/data");
    let sleeper = ["--network", &job, "-v", &volume, &image, "sleep", "300"];
    docker_as_ferry(&["run", "-d"], &job, &sleeper);
    let mut unrelated = docker(&["run", "-d", &image, "sleep", "300"]).1;
    unrelated.truncate(12);
    let executor = DockerExecutor::connect().await.expect("docker");
    assert!(executor.remove_leftovers().await >= 1);
    assert_nothing_left(&[&job]);
    let volumes = docker(&["volume", "ls", "-q", "--filter", &format!("label={label}")]).1;
    assert_eq!(volumes, "");
    let (still, _) = docker(&["inspect", &unrelated]);
    assert!(still, "containers without Ferry's label are not touched");
    docker(&["rm", "-f", &unrelated]);
}
