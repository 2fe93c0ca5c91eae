//! Every invalid fixture's rendered diagnostics are pinned exactly; every valid fixture
//! loads. Set `FERRY_BLESS=1` to rewrite the expected `.out` files after a deliberate
//! change, then review the diff.

use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn invalid_fixtures_render_exactly() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 40,
        "at least 40 invalid fixtures, found {}",
        files.len()
    );
    let bless = std::env::var_os("FERRY_BLESS").is_some();
    let mut mismatches = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read fixture");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let diags = match ferry_config::load(&source) {
            Ok(_) => {
                mismatches.push(format!("{name}: loaded without errors"));
                continue;
            }
            Err(d) => d,
        };
        let rendered = ferry_config::render_all(&diags, &name, &source, false);
        let expected_path = file.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &rendered).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if rendered != expected {
            mismatches.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{rendered}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn valid_fixtures_load() {
    for file in fixtures("valid") {
        let source = std::fs::read_to_string(&file).expect("read fixture");
        if let Err(diags) = ferry_config::load(&source) {
            panic!(
                "{}:\n{}",
                file.display(),
                ferry_config::render_all(&diags, "f", &source, false)
            );
        }
    }
}

/// `notify:` channels that would tell nothing are warned of, where they are written.
#[test]
fn notify_channels_that_tell_nothing_are_warned_of() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/warning-notify.yml"),
    )
    .expect("read");
    let loaded = ferry_config::load(&source).expect("valid");
    let rendered = ferry_config::render_all(&loaded.warnings, "n.yml", &source, false);
    assert_eq!(
        rendered,
        "n.yml:11:20: warning: `environments` in item 1 of `notify` names `prodution`, which is no environment: nothing of it is told
   |
11 |     environments: [prodution, staging]
   |                    ^^^^^^^^^
   = help: did you mean `production`?

n.yml:13:9: warning: item 2 of `notify` is told nothing: a channel limited to `environments` is told no run events
   |
13 |     on: [run.failed, run.fixed]
   |         ^^^^^^^^^^^^^^^^^^^^^^^
   = help: tell run events on a channel of their own, without `environments`

2 warnings
"
    );
}

#[test]
fn warnings_do_not_fail() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/warning-never-runs.yml"),
    )
    .expect("read");
    let loaded = ferry_config::load(&source).expect("valid");
    let rendered = ferry_config::render_all(&loaded.warnings, "w.yml", &source, false);
    assert_eq!(
        rendered,
        "w.yml:5:9: warning: job `disabled` can never run: its condition is always false
  |
5 |     if: false
  |         ^^^^^
  = help: remove the job, or the condition

w.yml:7:20: warning: `build` is listed twice in `needs`
  |
7 |     needs: [build, build]
  |                    ^^^^^
  = help: remove the second one

2 warnings
"
    );
}

#[test]
fn merge_keys_apply() {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/anchors.yml"),
    )
    .expect("read");
    let p = ferry_config::load(&source).expect("valid").pipeline;
    let build = p.job("build").expect("build");
    let test = p.job("test").expect("test");
    assert_eq!(build.timeout, Some(std::time::Duration::from_secs(300)));
    assert_eq!(build.retry.max, 1);
    assert_eq!(test.timeout, Some(std::time::Duration::from_secs(600)));
}

#[test]
fn the_health_watch_loads_with_its_defaults() {
    use ferry_config::delivery::{OnUnhealthy, Watch};
    use std::time::Duration;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/delivery.yml");
    let source = std::fs::read_to_string(path).expect("read fixture");
    let pipeline = ferry_config::load(&source).expect("loads").pipeline;
    let d = &pipeline.delivery;
    let infra = d
        .environment("production")
        .and_then(|e| e.infra.as_ref())
        .expect("production's infra");
    assert_eq!(infra.dir.value, "deploy/terraform");
    assert_eq!(
        infra.vars,
        [
            ("region".to_string(), "eu-west".to_string()),
            ("replicas".to_string(), "3".to_string()),
            ("public".to_string(), "true".to_string())
        ]
    );
    assert!(!infra.destroy_needs_approval);
    assert!(d.environment("sandbox").is_some_and(|e| e.infra.is_none()));
    let staging = d.deploy_of("staging").expect("staging deploys");
    assert_eq!(
        staging.watch,
        Watch {
            enabled: true,
            interval: Some(Duration::from_secs(30)),
            failures: Some(5)
        }
    );
    assert_eq!(staging.on_unhealthy, OnUnhealthy::Rollback);
    let cluster = d.deploy_of("cluster").expect("cluster deploys");
    assert!(!cluster.watch.enabled);
    // The top-level `deploy:` watches every 10 s, 3 failures in a row, and notifies.
    let sandbox = d.deploy_of("sandbox").expect("sandbox deploys");
    assert!(sandbox.watch.enabled);
    assert_eq!(sandbox.watch.interval(), Duration::from_secs(10));
    assert_eq!(sandbox.watch.failures(), 3);
    assert_eq!(sandbox.on_unhealthy, OnUnhealthy::Notify);
}

#[test]
fn notification_channels_load() {
    use ferry_config::delivery::{ChannelKind, NotifyEvent};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/delivery.yml");
    let source = std::fs::read_to_string(path).expect("read fixture");
    let notify = ferry_config::load(&source)
        .expect("loads")
        .pipeline
        .delivery
        .notify;
    assert_eq!(notify.len(), 3);
    assert_eq!(
        notify[0].to,
        ChannelKind::Webhook {
            url: "https://hooks.example.com/ferry".into(),
            secret: Some("HOOK_SECRET".into())
        }
    );
    assert!(notify[0].wants(NotifyEvent::EnvironmentRecovered, Some("staging")));
    assert_eq!(
        notify[1].to,
        ChannelKind::Slack {
            secret: "SLACK_WEBHOOK_URL".into()
        }
    );
    assert!(
        !notify[1].wants(NotifyEvent::RunFailed, None),
        "runs are of no environment"
    );
    assert!(notify[0].wants(NotifyEvent::RunFailed, None));
    assert!(notify[1].wants(NotifyEvent::DeploymentFailed, Some("production")));
    assert!(!notify[1].wants(NotifyEvent::DeploymentFailed, Some("staging")));
    assert!(!notify[1].wants(NotifyEvent::DeploymentLive, Some("production")));
    assert_eq!(
        notify[2].to,
        ChannelKind::Email {
            to: vec!["ops@example.com".into()]
        }
    );
    assert_eq!(notify[2].on, [NotifyEvent::ApprovalWaiting]);
}
