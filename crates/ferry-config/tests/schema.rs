//! `ferry schema` agrees with the loader: an independent validator accepts the valid
//! fixtures, the examples and Ferry's own pipeline, and the schema lists the same keys.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// YAML → JSON for the validator: straight from the YAML parser's events, not through
/// Ferry's loader, so the schema is checked independently of the code it describes.
fn yaml_to_json(text: &str) -> Value {
    saphyr_json::convert(text)
}

mod saphyr_json {
    use saphyr_parser::{Event, Parser, ScalarStyle};
    use serde_json::{Map, Value};

    enum Frame {
        Seq(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }

    fn scalar(v: &str, style: ScalarStyle) -> Value {
        if style != ScalarStyle::Plain {
            return Value::String(v.to_string());
        }
        match v {
            "~" | "null" | "" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| v.parse::<f64>().map(Value::from))
                .unwrap_or_else(|_| Value::String(v.to_string())),
        }
    }

    pub fn convert(text: &str) -> Value {
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut anchors: std::collections::HashMap<usize, Value> = Default::default();
        let mut root = Value::Null;
        while let Some(Ok((ev, _))) = parser.next_event() {
            let (value, anchor) = match ev {
                Event::Scalar(v, style, a, _) => (scalar(&v, style), a),
                Event::Alias(a) => (anchors.get(&a).cloned().unwrap_or(Value::Null), 0),
                Event::SequenceStart(_, _) => {
                    stack.push(Frame::Seq(Vec::new()));
                    continue;
                }
                Event::MappingStart(_, _) => {
                    stack.push(Frame::Map(Map::new(), None));
                    continue;
                }
                Event::SequenceEnd => match stack.pop() {
                    Some(Frame::Seq(v)) => (Value::Array(v), 0),
                    _ => continue,
                },
                Event::MappingEnd => match stack.pop() {
                    Some(Frame::Map(mut m, _)) => {
                        if let Some(Value::Object(merged)) = m.remove("<<") {
                            for (k, v) in merged {
                                m.entry(k).or_insert(v);
                            }
                        }
                        (Value::Object(m), 0)
                    }
                    _ => continue,
                },
                _ => continue,
            };
            if anchor != 0 {
                anchors.insert(anchor, value.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(v)) => v.push(value),
                Some(Frame::Map(m, key)) => match key.take() {
                    Some(k) => {
                        m.insert(k, value);
                    }
                    None => {
                        *key = Some(match value {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                    }
                },
                None => root = value,
            }
        }
        root
    }
}

fn pipelines() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join(".ferry.yml")];
    for dir in ["crates/ferry-config/tests/fixtures/valid", "examples"] {
        for entry in walk(&root.join(dir)) {
            if entry.extension().is_some_and(|e| e == "yml") {
                files.push(entry);
            }
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn valid_pipelines_validate_against_the_schema() {
    let schema = ferry_config::schema::schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let files = pipelines();
    assert!(files.len() >= 5, "found {files:?}");
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        ferry_config::load(&text).unwrap_or_else(|d| panic!("{}: {d:?}", file.display()));
        let json = yaml_to_json(&text);
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn schema_rejects_what_the_loader_rejects() {
    let schema = ferry_config::schema::schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for text in [
        "jbos: {}",
        "jobs: { build: { run: make, neds: [a] } }",
        "jobs: { build: { timeout: 5m } }",
        "jobs: { build: { run: make, timeout: 10x } }",
        "jobs: { build: { run: make, allow_failure: yes } }",
        "jobs: {}",
    ] {
        assert!(ferry_config::load(text).is_err(), "loader accepts {text}");
        assert!(
            !validator.is_valid(&yaml_to_json(text)),
            "schema accepts {text}"
        );
    }
}

/// The keys the schema lists are exactly the keys the loader accepts.
#[test]
fn schema_keys_match_the_loader() {
    let schema = ferry_config::schema::schema();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let sorted = |s: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        v.sort();
        v
    };
    use ferry_config::keys::*;
    let job = &schema["properties"]["jobs"]["additionalProperties"];
    let jp = &job["properties"];
    let props = &schema["properties"];
    let env = &props["environments"]["additionalProperties"];
    let deploy = &props["deploy"];
    let target = &deploy["properties"]["target"]["properties"];
    let verify = &deploy["properties"]["verify"];
    let sections: [(&str, &Value, &[&str]); 32] = [
        ("top", &schema, TOP_KEYS),
        ("job", job, JOB_KEYS),
        ("step", &jp["steps"]["items"]["oneOf"][1], STEP_KEYS),
        ("on", &props["on"], ON_KEYS),
        ("on.push", &props["on"]["properties"]["push"], FILTER_KEYS),
        ("retry", &jp["retry"]["oneOf"][1], RETRY_KEYS),
        ("reports", &jp["reports"], REPORT_KEYS),
        (
            "concurrency",
            &props["concurrency"]["oneOf"][1],
            CONCURRENCY_KEYS,
        ),
        ("image", &jp["image"]["oneOf"][1], IMAGE_KEYS),
        ("resources", &jp["resources"], RESOURCE_KEYS),
        (
            "service",
            &jp["services"]["additionalProperties"]["oneOf"][1],
            SERVICE_KEYS,
        ),
        ("cache", &jp["cache"]["oneOf"][0], CACHE_KEYS),
        ("build_image", &jp["build_image"], BUILD_KEYS),
        ("release", &props["release"], RELEASE_KEYS),
        ("environment", env, ENVIRONMENT_KEYS),
        ("approval", &env["properties"]["approval"], APPROVAL_KEYS),
        (
            "freeze",
            &env["properties"]["freeze"]["oneOf"][0],
            FREEZE_KEYS,
        ),
        ("infra", &env["properties"]["infra"], INFRA_KEYS),
        ("deploy", deploy, DEPLOY_KEYS),
        ("config", &deploy["properties"]["config"], CONFIG_KEYS),
        ("process", &target["process"], PROCESS_KEYS),
        ("docker", &target["docker"], DOCKER_KEYS),
        ("script", &target["script"], SCRIPT_KEYS),
        ("kubernetes", &target["kubernetes"], KUBERNETES_KEYS),
        (
            "config_map",
            &target["kubernetes"]["properties"]["config_map"]["oneOf"][1],
            KUBE_OBJECT_KEYS,
        ),
        ("gitops", &target["gitops"], GITOPS_KEYS),
        ("swarm", &target["swarm"], SWARM_KEYS),
        ("verify", verify, VERIFY_KEYS),
        (
            "watch",
            &deploy["properties"]["watch"]["oneOf"][1],
            WATCH_KEYS,
        ),
        ("notify", &props["notify"]["items"], NOTIFY_KEYS),
        (
            "webhook",
            &props["notify"]["items"]["properties"]["webhook"]["oneOf"][1],
            WEBHOOK_KEYS,
        ),
        (
            "http",
            &verify["properties"]["http"]["oneOf"][0]["oneOf"][1],
            HTTP_KEYS,
        ),
    ];
    for (name, node, loader) in sections {
        assert_eq!(keys(node), sorted(loader), "the keys of `{name}`");
    }
}
