use super::*;
use ferry_config::compose::{Lookup, load};

const COMPOSE: &str = r#"
services:
  web:
    image: 127.0.0.1:5000/shop/web:latest
    command: ["httpd", "-f"]
    environment: { GREETING: hello }
    ports:
      - target: 8080
        published: 18080
        mode: host
    configs:
      - source: app_conf
        target: /etc/app.conf
    secrets: [token]
    volumes: ["data:/data"]
    deploy:
      replicas: 2
      resources: { limits: { cpus: "0.5", memory: 64m } }
  cache:
    image: redis:7
    networks: [back]
networks:
  back: {}
volumes:
  data: {}
configs:
  app_conf: { content: "greeting = hello" }
secrets:
  token: { environment: TOKEN }
"#;

fn loaded() -> Compose {
    load(COMPOSE, &|_| Lookup::Missing).expect("loads")
}

#[test]
fn objects_are_named_by_their_content() {
    let c = loaded();
    let content: BTreeMap<(bool, String), Vec<u8>> = [
        (
            (false, "app_conf".to_string()),
            b"greeting = hello".to_vec(),
        ),
        ((true, "token".to_string()), b"s3cret".to_vec()),
    ]
    .into();
    let objects = objects("shop", &c, &content);
    assert_eq!(objects.len(), 2);
    assert_eq!(
        objects[0].name,
        object_name("shop", "app_conf", b"greeting = hello")
    );
    assert!(
        objects[0].name.starts_with("shop_app_conf_")
            && objects[0].name.len() == "shop_app_conf_".len() + 10
    );
    assert!(objects[1].secret);
    assert_ne!(
        object_name("shop", "token", b"a"),
        object_name("shop", "token", b"b"),
        "new content, new object"
    );
    assert!(
        !format!("{:?}", objects[1]).contains("s3cret"),
        "no secret in debug output"
    );
}

#[test]
fn a_compose_service_becomes_a_swarm_service() {
    let c = loaded();
    let pins: BTreeMap<String, String> = [(
        "127.0.0.1:5000/shop/web:latest".to_string(),
        "127.0.0.1:5000/shop/web@sha256:abc".to_string(),
    )]
    .into();
    let ids: BTreeMap<(bool, String), (String, String)> = [
        (
            (false, "app_conf".to_string()),
            ("shop_app_conf_1".to_string(), "cid".to_string()),
        ),
        (
            (true, "token".to_string()),
            ("shop_token_2".to_string(), "sid".to_string()),
        ),
    ]
    .into();
    let input = SpecInput {
        stack: "shop",
        scope: "repo/production",
        release: "r7",
        pins: &pins,
        ids: &ids,
    };
    let spec = service_spec(&c, &c.services[0], &input);
    assert_eq!(spec.name.as_deref(), Some("shop_web"));
    let labels = spec.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(NAMESPACE).map(String::as_str), Some("shop"));
    assert_eq!(
        labels.get(SCOPE).map(String::as_str),
        Some("repo/production")
    );
    assert_eq!(labels.get(RELEASE).map(String::as_str), Some("r7"));
    let task = spec.task_template.clone().unwrap_or_default();
    let container = task.container_spec.clone().unwrap_or_default();
    assert_eq!(
        container.image.as_deref(),
        Some("127.0.0.1:5000/shop/web@sha256:abc"),
        "pinned"
    );
    assert_eq!(
        container.args,
        Some(vec!["httpd".to_string(), "-f".to_string()])
    );
    assert_eq!(container.command, None, "the image's entrypoint stays");
    assert_eq!(container.env, Some(vec!["GREETING=hello".to_string()]));
    let secret = &container.secrets.clone().unwrap_or_default()[0];
    assert_eq!(secret.secret_id.as_deref(), Some("sid"));
    let file = secret.file.clone().unwrap_or_default();
    assert_eq!(
        (file.name.as_deref(), file.mode),
        (Some("token"), Some(0o444))
    );
    let config = &container.configs.clone().unwrap_or_default()[0];
    assert_eq!(
        config.file.as_ref().and_then(|f| f.name.as_deref()),
        Some("/etc/app.conf")
    );
    let mount = &container.mounts.clone().unwrap_or_default()[0];
    assert_eq!(
        mount.source.as_deref(),
        Some("shop_data"),
        "the stack's own volume"
    );
    assert_eq!(
        task.resources
            .and_then(|r| r.limits)
            .map(|l| (l.nano_cpus, l.memory_bytes)),
        Some((Some(500_000_000), Some(64 << 20)))
    );
    assert_eq!(
        task.networks.unwrap_or_default()[0].target.as_deref(),
        Some("shop_default")
    );
    assert_eq!(
        spec.mode
            .and_then(|m| m.replicated)
            .and_then(|r| r.replicas),
        Some(2)
    );
    let update = spec.update_config.unwrap_or_default();
    assert_eq!(
        update.failure_action,
        Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
    );
    let port = &spec.endpoint_spec.and_then(|e| e.ports).unwrap_or_default()[0];
    assert_eq!(
        (port.target_port, port.published_port, port.publish_mode),
        (
            Some(8080),
            Some(18080),
            Some(EndpointPortConfigPublishModeEnum::HOST)
        )
    );
    // The second service is on its network only, and its image is left as written
    // when no pin is known.
    let cache = service_spec(&c, &c.services[1], &input);
    let task = cache.task_template.unwrap_or_default();
    assert_eq!(
        task.container_spec.and_then(|c| c.image).as_deref(),
        Some("redis:7")
    );
    assert_eq!(
        task.networks.unwrap_or_default()[0].target.as_deref(),
        Some("shop_back")
    );
    let nets: Vec<String> = networks("shop", &c, &HashMap::new())
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(nets, vec!["shop_default", "shop_back"]);
}

#[test]
fn names_and_pins() {
    assert_eq!(
        repository_of("127.0.0.1:5000/shop/web:1.2"),
        "127.0.0.1:5000/shop/web"
    );
    assert_eq!(
        repository_of("127.0.0.1:5000/shop/web"),
        "127.0.0.1:5000/shop/web"
    );
    assert_eq!(repository_of("web@sha256:abc"), "web");
    assert!(check_stack("shop-prod").is_ok());
    assert!(check_stack("-x").is_err());
    assert!(check_stack("a/b").is_err());
    assert!(
        check_stack("shop_production").is_err(),
        "`_` would let two stacks' objects meet"
    );
    assert_eq!(
        sealed_path("./deploy/compose.yml"),
        ".ferry/swarm/deploy/compose.yml"
    );
}

fn task(spec: &TaskSpec, state: TaskState, desired: TaskState) -> Task {
    Task {
        spec: Some(spec.clone()),
        desired_state: Some(desired),
        created_at: Some("2030-01-01T00:00:00Z".into()),
        status: Some(ferry_exec::bollard::models::TaskStatus {
            state: Some(state),
            err: (state == TaskState::FAILED).then(|| "task: non-zero exit (1)".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_service_converges_when_its_new_tasks_run() {
    let new = TaskSpec {
        force_update: Some(1),
        ..Default::default()
    };
    let old = TaskSpec {
        force_update: Some(0),
        ..Default::default()
    };
    let service = Service {
        spec: Some(ServiceSpec {
            task_template: Some(new.clone()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(2) }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let since = chrono::DateTime::parse_from_rfc3339("2029-01-01T00:00:00Z")
        .expect("date")
        .to_utc();
    let running = task(&new, TaskState::RUNNING, TaskState::RUNNING);
    let starting = task(&new, TaskState::STARTING, TaskState::RUNNING);
    let old_running = task(&old, TaskState::RUNNING, TaskState::RUNNING);
    assert_eq!(
        converged(&service, &[running.clone(), running.clone()], since),
        Ok(true)
    );
    assert_eq!(
        converged(&service, &[running.clone(), starting], since),
        Ok(false)
    );
    assert_eq!(
        converged(
            &service,
            &[running.clone(), running.clone(), old_running],
            since
        ),
        Ok(false),
        "an old task still runs"
    );
    let failed = task(&new, TaskState::FAILED, TaskState::SHUTDOWN);
    let err = converged(&service, &[running.clone(), failed], since).expect_err("fails");
    assert!(err.contains("non-zero exit"), "{err}");
    let mut rolled = service.clone();
    rolled.update_status = Some(ferry_exec::bollard::models::ServiceUpdateStatus {
        state: Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED),
        started_at: Some("2030-01-01T00:00:00Z".into()),
        message: Some("rollback completed".into()),
        ..Default::default()
    });
    assert!(
        converged(&rolled, &[running], since)
            .expect_err("rolled back")
            .contains("rolled the update back")
    );
}
