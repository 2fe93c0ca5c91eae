//! Jobs with `image:` run in containers of a real Docker engine (started by
//! scripts/test.sh, with the base image `FERRY_TEST_IMAGE` built locally from busybox).

use std::time::Duration;

use ferry_engine::RunOutcome;
use ferry_exec::DockerExecutor;
use ferry_store::Status;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Fixture, assert_nothing_left, cancel_when, containers_of, docker, image};

/// How long a cancel waits after the containers it waits for are up.
const SETTLE: Duration = Duration::from_millis(300);

/// The engine with a real Docker engine for jobs with `image:`, two jobs at a time, and
/// the base image; `None` (skip) without one.
async fn fixture() -> Option<(Fixture, String)> {
    let image = image()?;
    let mut docker = DockerExecutor::connect().await.expect("docker");
    docker.kill_grace = Duration::from_millis(500);
    Some((Fixture::build(2, Some(docker)).await, image))
}

/// Runs [`pipeline`] `yaml` on a new [`fixture`]; `None` (skip) without a base image.
async fn run_in_containers(yaml: &str) -> Option<(Fixture, RunOutcome)> {
    let (f, image) = fixture().await?;
    let out = f.run(&pipeline(yaml, &image)).await;
    Some((f, out))
}

/// `yaml` with `{web}` replaced by [`WEB`] and then `{image}` by `image`.
fn pipeline(yaml: &str, image: &str) -> String {
    yaml.replace("{web}", WEB).replace("{image}", image)
}

/// Steps in a container (its workspace, an artifact), a host job that needs it, and a
/// container job that fails.
const MIXED: &str = "jobs:
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
";

#[tokio::test]
async fn steps_run_in_containers_and_mix_with_host_jobs() {
    let Some((f, out)) = run_in_containers(MIXED).await else {
        return;
    };
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
    let failing = "step 1 `echo about to fail; exit 4` exited with code 4";
    assert_eq!(
        Fixture::ended(&out, "failing"),
        (Status::Failed, Some(failing))
    );
    assert_eq!(containers_of("inside"), "", "containers are removed");
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let Some((f, _)) = fixture().await else {
        return;
    };
    let out = f
        .run("jobs:\n  nope:\n    image: 127.0.0.1:1/ferry-test/absent:1\n    run: 'true'\n")
        .await;
    let (status, reason) = Fixture::ended(&out, "nope");
    assert_eq!(status, Status::Failed);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "image `127.0.0.1:1/ferry-test/absent:1` is not here and cannot be pulled"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn cancel_removes_the_containers() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml =
        format!("jobs:\n  sleeper-cancel:\n    image: {image}\n    run: echo started; sleep 300\n");
    let cancel = CancellationToken::new();
    let started = || !containers_of("sleeper-cancel").is_empty();
    cancel_when(&cancel, Duration::from_secs(10), SETTLE, started);
    let out = f.run_within(Duration::from_secs(60), &yaml, cancel).await;
    assert_eq!(out.status, Status::Cancelled);
    assert_eq!(
        containers_of("sleeper-cancel"),
        "",
        "nothing is left after a cancel"
    );
}

#[tokio::test]
async fn user_and_resource_limits_apply() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml = pipeline(
        "jobs:
  limited:
    image: { name: {image}, user: \"1000:1000\" }
    resources: { cpus: 0.5, memory: 64m }
    run: |
      id -u
      cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
      cat input.txt
",
        &image,
    );
    let out = f.run(&yaml).await;
    f.assert_success(&out, "limited").await;
    assert_eq!(
        f.log(&out, "limited").await,
        "1000\n67108864\nfrom the source\n"
    );
}

#[tokio::test]
async fn a_default_image_takes_jobs_without_one() {
    let Some((mut f, image)) = fixture().await else {
        return;
    };
    f.engine = f.engine.clone().with_default_image(Some(image));
    let out = f.run("jobs:\n  anywhere:\n    run: pwd\n").await;
    assert_eq!(
        f.log(&out, "anywhere").await,
        "/workspace\n",
        "ran in a container"
    );
}

/// A busybox httpd service serving `hello-from-service`, on port 8080 (`{web}` in a
/// [`pipeline`], under `services:`).
const WEB: &str = "web:
        image: {image}
        command: [sh, -c, 'echo web starting; mkdir -p /www && echo hello-from-service > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [8080]";

/// A container job and a host job, each with the [`WEB`] service; the container job
/// also waits for a slow one.
const REACHABLE: &str = "jobs:
  svc-inside:
    image: {image}
    services:
      {web}
      slow:
        image: {image}
        command: sh -c 'sleep 1; touch /ready; exec sleep 300'
        health: test -f /ready
    run: wget -q -O - http://web:8080/ && echo \"$FERRY_SERVICE_WEB_HOST:$FERRY_SERVICE_WEB_PORT\"
  svc-host:
    services:
      {web}
    run: busybox wget -q -O - \"http://$FERRY_SERVICE_WEB_HOST:$FERRY_SERVICE_WEB_PORT_8080/\"
";

#[tokio::test]
async fn services_are_reachable_by_name_and_from_the_host() {
    let Some((f, out)) = run_in_containers(REACHABLE).await else {
        return;
    };
    assert_eq!(out.status, Status::Success, "{:?}", out.jobs);
    let inside = f.log(&out, "svc-inside").await;
    assert!(
        inside.starts_with("hello-from-service\nweb:8080\n"),
        "{inside}"
    );
    assert!(
        inside.contains("ferry: --- log of service `web` ---\nweb starting\n"),
        "the service's log is kept: {inside}"
    );
    let host = f.log(&out, "svc-host").await;
    assert!(host.starts_with("hello-from-service\n"), "{host}");
    // Services and their networks are removed.
    assert_nothing_left(&["svc-inside", "svc-host"]);
}

/// A service that never listens on its port, and one that exits before it is ready.
const NEVER_READY: &str = "jobs:
  svc-deaf:
    image: {image}
    services:
      deaf:
        image: {image}
        command: sleep 300
        ports: [9999]
        wait: 1s
    run: echo never runs
  svc-crash:
    services:
      crash:
        image: {image}
        command: sh -c 'echo crashing now; exit 3'
        ports: [5432]
    run: echo never runs
";

#[tokio::test]
async fn services_that_never_get_ready_fail_the_job_clearly() {
    let Some((f, out)) = run_in_containers(NEVER_READY).await else {
        return;
    };
    let reason = |job: &str| Fixture::reason(&out, job);
    assert_eq!(
        reason("svc-deaf"),
        "service `deaf` was not ready after 1s: port 9999 is not listening"
    );
    assert_eq!(
        reason("svc-crash"),
        "service `crash` exited with code 3 before it was ready"
    );
    let crash = f.log(&out, "svc-crash").await;
    assert!(crash.contains("crashing now"), "its log is shown: {crash}");
    assert!(!crash.contains("never runs"));
    assert_nothing_left(&["svc-deaf", "svc-crash"]);
}

/// A container job `name` with the [`WEB`] service that runs (`sleep 300`) until
/// something stops it; `more` are more of its keys, as lines.
fn serving(name: &str, more: &str) -> String {
    format!(
        "jobs:\n  {name}:\n    image: {{image}}\n{more}    services:\n      {{web}}\n    run: echo started; sleep 300\n"
    )
}

#[tokio::test]
async fn cancel_removes_services_and_their_network() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml = pipeline(&serving("svc-cancel", ""), &image);
    let cancel = CancellationToken::new();
    // Both the service and the step's container are up: two containers.
    let both_up = || containers_of("svc-cancel").lines().count() >= 2;
    cancel_when(&cancel, Duration::from_secs(15), SETTLE, both_up);
    let out = f.run_within(Duration::from_secs(60), &yaml, cancel).await;
    assert_eq!(out.status, Status::Cancelled);
    assert_nothing_left(&["svc-cancel"]);
}

fn registry() -> Option<String> {
    std::env::var("FERRY_TEST_REGISTRY").ok()
}

#[tokio::test]
async fn build_push_and_pull_by_digest() {
    let (Some((f, image)), Some(registry)) = (fixture().await, registry()) else {
        return;
    };
    let app = f.dir.join("src/app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(
        app.join("Dockerfile"),
        // Two stages: `target` builds the first; the second would fail if it were built.
        format!(
            "FROM {image} AS app\nARG GREETING\nCOPY input.txt /input.txt\nRUN echo \"$GREETING\" > /greeting\n\
             FROM app AS broken\nRUN exit 9\n"
        ),
    )
    .expect("write");
    std::fs::write(app.join("input.txt"), "packaged\n").expect("write");
    std::fs::write(app.join(".dockerignore"), "secret.txt\n").expect("write");
    std::fs::write(app.join("secret.txt"), "not in the image\n").expect("write");
    let name = format!("{registry}/ferry-test/built-{}", std::process::id());
    let yaml = format!(
        "jobs:
  package:
    build_image:
      name: {name}
      context: app
      target: app
      args: {{ GREETING: \"hi from ${{{{ event.branch }}}}\" }}
      labels: {{ team: core }}
      tags: [latest]
"
    );
    let out = f.run(&yaml).await;
    f.assert_success(&out, "package").await;
    let images = f.store.images(&out.run.id).await.expect("images");
    assert_eq!(images.len(), 1);
    let built = &images[0];
    let sha = Fixture::event().sha;
    assert_eq!(built.name, name);
    assert_eq!(built.tags, vec![sha.clone(), "latest".to_string()]);
    let digest = built.digest.clone().expect("pushed with a digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The second build of the same context reuses the layer cache (the local image and
    // its parents are still here).
    let again = f.run(&yaml).await;
    assert_eq!(again.status, Status::Success);
    let log = f.log(&again, "package").await;
    assert!(log.contains("Using cache"), "{log}");
    // Forget the local image, pull it back by digest: the same image.
    let by_digest = format!("{name}@{digest}");
    for tag in [&sha, "latest"] {
        docker(&["rmi", "-f", &format!("{name}:{tag}")]);
    }
    let (ok, text) = docker(&["pull", "-q", &by_digest]);
    assert!(ok, "{text}");
    let (_, id) = docker(&["image", "inspect", "-f", "{{.Id}}", &by_digest]);
    assert_eq!(id, built.image_id, "the pulled image is the built one");
    let (_, content) = docker(&["run", "--rm", &by_digest, "cat", "/input.txt", "/greeting"]);
    assert_eq!(content, "packaged\nhi from main");
    let (_, secret) = docker(&["run", "--rm", &by_digest, "ls", "/"]);
    assert!(!secret.contains("secret.txt"));
    let (_, labels) = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &by_digest,
    ]);
    assert!(
        labels.contains(&format!("\"org.opencontainers.image.revision\":\"{sha}\"")),
        "{labels}"
    );
    assert!(labels.contains("\"team\":\"core\""), "{labels}");
    docker(&["rmi", "-f", &by_digest]);
}

#[tokio::test]
async fn build_and_push_failures_carry_the_message() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    std::fs::write(
        f.dir.join("src/Dockerfile"),
        format!("FROM {image}\nFRM nothing\n"),
    )
    .expect("write");
    std::fs::create_dir_all(f.dir.join("src/ok")).expect("mkdir");
    std::fs::write(f.dir.join("src/ok/Dockerfile"), format!("FROM {image}\n")).expect("write");
    let yaml = "jobs:
  bad-dockerfile:
    build_image: { name: ferry-test/broken, push: false }
  no-dockerfile:
    build_image: { name: ferry-test/none, context: nowhere }
  refused:
    build_image: { name: 127.0.0.1:1/ferry-test/refused, context: ok }
";
    let out = f.run(yaml).await;
    let reason = |job: &str| Fixture::reason(&out, job);
    let bad = reason("bad-dockerfile");
    assert!(
        bad.starts_with("the build failed:") && bad.contains("FRM"),
        "{bad}"
    );
    assert_eq!(
        reason("no-dockerfile"),
        "there is no Dockerfile at nowhere/Dockerfile"
    );
    let refused = reason("refused");
    assert!(
        refused.starts_with("the registry refused 127.0.0.1:1/ferry-test/refused:"),
        "{refused}"
    );
    assert!(
        f.store
            .images(&out.run.id)
            .await
            .expect("images")
            .is_empty()
    );
}

/// An image build is bound by its job's timeout: a build that would take longer is
/// stopped and the job fails saying so.
#[tokio::test]
async fn an_image_build_stops_at_its_jobs_timeout() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    std::fs::create_dir_all(f.dir.join("src/slow")).expect("mkdir");
    std::fs::write(
        f.dir.join("src/slow/Dockerfile"),
        format!("FROM {image}\nRUN sleep 60\n"),
    )
    .expect("write");
    let yaml = "jobs:
  slow:
    timeout: 2s
    build_image: { name: ferry-test/slow, context: slow, push: false }
";
    let started = std::time::Instant::now();
    let out = f.run(yaml).await;
    let reason = Fixture::reason(&out, "slow");
    assert!(
        reason.starts_with("the image build timed out after 2"),
        "{reason}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(45));
}

/// A container job that restores `deps` from its cache, or makes it.
const CACHED: &str = "jobs:
  cached:
    image: {image}
    cache: { key: \"c-${{ hash_files('input.txt') }}\", paths: [deps] }
    run: if [ -f deps/x ]; then echo hit; else echo miss; mkdir -p deps; echo 1 > deps/x; fi
";

#[tokio::test]
async fn container_jobs_restore_caches() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml = pipeline(CACHED, &image);
    let first = f.run(&yaml).await;
    assert!(f.log(&first, "cached").await.contains("miss\n"));
    let second = f.run(&yaml).await;
    let log = f.log(&second, "cached").await;
    assert!(log.contains("restored\nhit\n"), "{log}");
}

/// An untrusted run reads trusted cache entries but writes only its own kind, which
/// trusted runs never read; it runs nothing on the host and builds no image.
#[tokio::test]
async fn untrusted_runs_read_caches_but_write_only_their_own() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml = pipeline(CACHED, &image);
    let untrusted = ferry_plan::Trust::untrusted("pull request #1 from a fork");
    // Nothing cached: the untrusted run makes an entry of its own kind...
    let first = f.run_as(&yaml, untrusted.clone()).await;
    f.assert_success(&first, "cached").await;
    assert!(f.log(&first, "cached").await.contains("miss\n"));
    // ...which a trusted run does not read: it makes the trusted entry,
    let trusted = f.run(&yaml).await;
    let log = f.log(&trusted, "cached").await;
    assert!(
        log.contains("miss\n"),
        "a trusted run read an untrusted entry: {log}"
    );
    // which the next untrusted run reads (its own entry comes first, and holds the same).
    let again = f.run_as(&yaml, untrusted.clone()).await;
    assert!(f.log(&again, "cached").await.contains("hit\n"));
    let keys: Vec<String> = f
        .engine
        .caches()
        .list()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert!(
        keys.iter().any(|k| k.starts_with("untrusted:c-")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.starts_with("c-")), "{keys:?}");

    let host = f
        .run_as(
            "jobs:\n  host:\n    run: cat /etc/hostname\n",
            untrusted.clone(),
        )
        .await;
    let why = Fixture::reason(&host, "host");
    assert!(
        why.contains("would run on the host") && why.contains("untrusted"),
        "{why}"
    );
    let build = "jobs:\n  build:\n    build_image: { name: ferry-test/untrusted, push: false }\n";
    let built = f.run_as(build, untrusted).await;
    let why = Fixture::reason(&built, "build");
    assert!(why.contains("builds an image"), "{why}");
}

/// A registry of the test's own that wants a login (htpasswd), stopped when dropped.
struct AuthRegistry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl AuthRegistry {
    fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().expect("tmp");
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: ferry-test\n    path: {root}/htpasswd\n",
                root = dir.path().display()
            ),
        )
        .expect("write");
        let child = std::process::Command::new("docker-registry")
            .args([
                "serve",
                &dir.path().join("config.yml").display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/test.sh installs it)");
        let registry = AuthRegistry {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the registry did not start");
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn registry_logins_from_sealed_secrets_push_and_pull() {
    let (Some((mut f, image)), Some(_)) = (fixture().await, registry()) else {
        return;
    };
    let password = "pw-9f3a7c1e-never-in-logs";
    let reg = AuthRegistry::start("ci", password);
    let key = ferry_store::SecretKey::load_or_create(&f.dir.join("data")).expect("key");
    f.engine = f.engine.clone().with_secret_key(key.clone());
    std::fs::write(
        f.dir.join("src/Dockerfile"),
        format!("FROM {image}\nCOPY input.txt /\n"),
    )
    .expect("write");
    let name = format!("{}/ferry-test/private", reg.addr);
    let yaml = format!("jobs:\n  ship:\n    build_image: {{ name: {name} }}\n");
    // Without a login the registry refuses the push.
    let refused = f.run(&yaml).await;
    let reason = refused.jobs[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("the registry refused {name}:")),
        "{reason}"
    );
    f.store
        .set_registry_login(&key, &f.repo, &reg.addr, "ci", password, None)
        .await
        .expect("login");
    let pushed = f.run(&yaml).await;
    f.assert_success(&pushed, "ship").await;
    let digest = f.store.images(&pushed.run.id).await.expect("images")[0]
        .digest
        .clone()
        .expect("digest");
    // A job whose image is on that registry pulls it with the same login.
    let sha = Fixture::event().sha;
    docker(&["rmi", "-f", &format!("{name}:{sha}")]);
    let pull = format!("jobs:\n  use:\n    image: {name}@{digest}\n    run: cat /input.txt\n");
    let used = f.run(&pull).await;
    assert_eq!(used.status, Status::Success, "{:?}", used.jobs);
    assert_eq!(f.log(&used, "use").await, "from the source\n");
    // The password is nowhere in plain text: not in logs, not in the store.
    for out in [&refused, &pushed, &used] {
        for job in &out.jobs {
            assert!(!f.log(out, &job.name).await.contains(password));
        }
    }
    for entry in walkdir::WalkDir::new(f.dir.join("data"))
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).expect("read");
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{} holds the password",
                entry.path().display()
            );
        }
    }
    docker(&["rmi", "-f", &format!("{name}@{digest}")]);
}

#[tokio::test]
async fn a_timeout_removes_services_and_their_network() {
    let Some((f, image)) = fixture().await else {
        return;
    };
    let yaml = pipeline(&serving("svc-timeout", "    timeout: 2s\n"), &image);
    let out = f
        .run_within(Duration::from_secs(60), &yaml, CancellationToken::new())
        .await;
    assert_eq!(
        out.jobs[0].reason.as_deref(),
        Some("the job timed out after 2s")
    );
    assert_nothing_left(&["svc-timeout"]);
}
