//! Secrets in deployments: an environment's secrets reach its deploy script and its
//! process (as variables and as files), are masked in logs and output, and their files
//! go once they are no longer used.

mod common;

use common::{GOOD, Harness, wait_contains};
use ferry_deliver::layout;
use ferry_store::DeploymentStatus as S;

const SECRET: &str = "tok-4f9a-planted-secret";

/// sandbox: a deploy script that shows where `API_TOKEN` reaches it.
const SCRIPT_USES_SECRETS: &str = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: |
        echo \"token is $API_TOKEN\"
        printf %s \"$API_TOKEN\" > \"$OUT/from-env\"
        cp \"$FERRY_SECRETS_DIR/API_TOKEN\" \"$OUT/from-file\"
        stat -c %a \"$FERRY_SECRETS_DIR/API_TOKEN\" > \"$OUT/mode\"
        printf %s \"$FERRY_SECRETS_DIR\" > \"$OUT/secrets-dir\"
        echo \"other: ${OTHER:-unset}\"
  verify: { command: \"true\", for: 100ms, interval: 25ms }
";

/// web: a process that prints `API_TOKEN`, verified by its file.
const PROCESS_USES_SECRETS: &str = "environments:
  web: { auto: true }
deploy:
  target:
    process:
      command: echo \"token $API_TOKEN\"; exec sleep 300
  verify: { command: test -f \"$FERRY_SECRETS_DIR/API_TOKEN\", for: 100ms, interval: 25ms }
";

/// Sets secret `name` of `env` (`""`: every environment) to `value`, as `by`.
async fn set_secret(h: &Harness, env: &str, name: &str, value: &[u8], by: Option<&str>) {
    h.store
        .set_secret(&h.key, &h.repo, env, name, value, by)
        .await
        .expect("secret");
}

/// The content of `file` under `$OUT`, which must exist.
fn out_file(h: &Harness, file: &str) -> String {
    std::fs::read_to_string(h.out.join(file)).unwrap_or_else(|e| panic!("$OUT/{file}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_script_and_its_file_and_is_masked_in_the_log() {
    let mut h = Harness::new().await;
    set_secret(&h, "sandbox", "API_TOKEN", SECRET.as_bytes(), Some("admin")).await;
    // Another environment's secret does not reach sandbox.
    set_secret(&h, "production", "OTHER", b"other-env-secret", None).await;
    h.start();
    h.seal("v1", SCRIPT_USES_SECRETS, GOOD).await;
    let live = h.wait_status("sandbox", 1, S::Live).await;
    assert_eq!(out_file(&h, "from-env"), SECRET);
    assert_eq!(out_file(&h, "from-file"), SECRET);
    assert_eq!(out_file(&h, "mode").trim(), "600");
    let dir = std::path::PathBuf::from(out_file(&h, "secrets-dir"));
    assert!(
        dir.starts_with(layout::secrets_root(&h.data)),
        "{}",
        dir.display()
    );
    assert!(!dir.starts_with(&h.data), "never in the data directory");
    assert!(
        !dir.exists(),
        "a script's secret files go once it has used them"
    );
    let log = h.log_of(&live);
    assert!(log.contains("token is ***"), "{log}");
    assert!(log.contains("other: unset"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    // The deployment records the secret's name, never its value.
    let config = live.config.as_deref().expect("config snapshot");
    assert!(
        config.contains("API_TOKEN") && !config.contains(SECRET),
        "{config}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_a_process_and_is_masked_in_its_output() {
    let mut h = Harness::new().await;
    set_secret(&h, "", "API_TOKEN", SECRET.as_bytes(), None).await;
    h.start();
    h.seal("v1", PROCESS_USES_SECRETS, GOOD).await;
    h.wait_status("web", 1, S::Live).await;
    let pid = h.process_pid("web", "v1").await;
    let output = wait_contains(&h.env_dir("web").join("output.log"), "token ").await;
    assert!(output.contains("token ***"), "{output}");
    assert!(!output.contains(SECRET), "{output}");
    // A running process keeps its secret files.
    let files =
        layout::environment_dir(&layout::secrets_root(&h.data), &h.repo, "web").join("secrets");
    assert_eq!(
        std::fs::read_to_string(files.join("API_TOKEN")).expect("secret file"),
        SECRET
    );
    h.stop().await;
    assert!(ferry_testkit::gone(pid));
    assert!(
        !layout::secrets_root(&h.data).exists(),
        "the server's secret files go when it stops"
    );
}

/// A `command` probe runs with the deployment's environment only, never the server's
/// (whose variables may hold a database URL or the secret key): it writes what it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_probe_sees_the_deployments_environment_not_the_servers() {
    // The test process stands for the server: it has this variable, and so would any
    // child that inherited its environment.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let config = "environments:
  sandbox: { auto: true }
deploy:
  target:
    script:
      run: \"true\"
  verify:
    command: 'echo \"server: ${CARGO_MANIFEST_DIR:-unset} out: ${OUT:+set}\" > \"$OUT/probe\"'
    for: 100ms
    interval: 25ms
";
    let mut h = Harness::started().await;
    h.seal("v1", config, GOOD).await;
    h.wait_status("sandbox", 1, S::Live).await;
    h.stop().await;
    assert_eq!(out_file(&h, "probe").trim(), "server: unset out: set");
}

/// `deploy.config` for a process: the environment's variables as an env file and a
/// config file rendered from a release template, under `$FERRY_CONFIG_DIR`, different
/// in each environment for the same release files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_reads_its_environments_config_files() {
    let mut h = Harness::new().await;
    for env in ["a", "b"] {
        h.store
            .set_variable(&h.repo, env, "GREETING", &format!("hello {env}"), None)
            .await
            .expect("variable");
    }
    h.start();
    let delivery = "environments:
  a: { auto: true }
  b: { auto: true }
deploy:
  target:
    process:
      command: cat \"$FERRY_CONFIG_DIR/app.env\" \"$FERRY_CONFIG_DIR/conf/app.conf\"; exec sleep 300
  config:
    env_file: app.env
    files:
      conf/app.conf: { template: app.conf.tmpl }
";
    let files: &[common::File<'_>] = &[
        ("app.sh", "#!/bin/sh\necho app\n", 0o755),
        (
            "app.conf.tmpl",
            "greeting = ${{ vars.GREETING }} (${{ environment.name }}, ${{ release.id }})\n",
            0o644,
        ),
    ];
    h.seal("v1", delivery, files).await;
    for env in ["a", "b"] {
        h.wait_status(env, 1, S::Live).await;
        let output = wait_contains(&h.env_dir(env).join("output.log"), "greeting").await;
        assert!(
            output.contains(&format!("GREETING=\"hello {env}\"\n")),
            "{output}"
        );
        assert!(
            output.contains(&format!("greeting = hello {env} ({env}, v1)")),
            "{output}"
        );
    }
    h.stop().await;
}
