//! Plans: DAG order and stages, matrix expansion, conditions, skip reasons, narrowing
//! to one job, trigger matching. Each case renders the plan compactly and compares.

use ferry_plan::{Decision, Event, EventKind, Options, Plan, plan};

fn event(
    kind: EventKind,
    branch: Option<&str>,
    tag: Option<&str>,
    changed: Option<&[&str]>,
) -> Event {
    Event {
        kind,
        branch: branch.map(str::to_string),
        tag: tag.map(str::to_string),
        git_ref: match (tag, branch) {
            (Some(t), _) => format!("refs/tags/{t}"),
            (None, Some(b)) => format!("refs/heads/{b}"),
            _ => "HEAD".into(),
        },
        sha: "feedc0de00000000000000000000000000000000".into(),
        author: "Dev <dev@example.com>".into(),
        message: "change things".into(),
        changed_files: changed.map(|c| c.iter().map(|s| s.to_string()).collect()),
        pull_request: None,
    }
}

fn push(branch: &str) -> Event {
    event(EventKind::Push, Some(branch), None, None)
}

fn make(yaml: &str, ev: &Event, only: &[&str]) -> Plan {
    let p = ferry_config::load(yaml)
        .unwrap_or_else(|d| panic!("{d:?}"))
        .pipeline;
    plan(
        &p,
        ev,
        &Options {
            only: only.iter().map(|s| s.to_string()).collect(),
        },
    )
    .expect("plan")
}

/// `stage: name [needs] (skip: reason)` per job, in plan order.
fn render(p: &Plan) -> Vec<String> {
    p.jobs
        .iter()
        .map(|j| {
            let mut s = format!("{}: {}", j.stage, j.name);
            if !j.needs.is_empty() {
                s.push_str(&format!(" [{}]", j.needs.join(", ")));
            }
            if let Decision::Skip { reason } = &j.decision {
                s.push_str(&format!(" (skip: {reason})"));
            }
            s
        })
        .collect()
}

const DIAMOND: &str = "
jobs:
  deploy: { needs: [test, lint], run: d }
  test: { needs: build, run: t }
  lint: { run: l }
  build: { run: b }
";

#[test]
fn dag_order_is_topological_then_file_order() {
    let p = make(DIAMOND, &push("main"), &[]);
    assert_eq!(
        render(&p),
        [
            "0: lint",
            "0: build",
            "1: test [build]",
            "2: deploy [test, lint]"
        ]
    );
    let stages: Vec<Vec<&str>> = p
        .stages()
        .iter()
        .map(|s| s.iter().map(|j| j.name.as_str()).collect())
        .collect();
    assert_eq!(
        stages,
        [vec!["lint", "build"], vec!["test"], vec!["deploy"]]
    );
}

#[test]
fn plans_are_deterministic() {
    let a = serde_json::to_string(&make(DIAMOND, &push("main"), &[])).expect("json");
    let b = serde_json::to_string(&make(DIAMOND, &push("main"), &[])).expect("json");
    assert_eq!(a, b);
    let back: Plan = serde_json::from_str(&a).expect("a stored plan reads back");
    assert_eq!(serde_json::to_string(&back).expect("json"), a);
}

#[test]
fn matrix_expands_with_readable_names_and_needs_all_expansions() {
    let yaml = "
jobs:
  test:
    matrix: { db: [\"15\", \"16\"], os: [linux] }
    run: t
  report:
    needs: test
    run: r
";
    let p = make(yaml, &push("main"), &[]);
    assert_eq!(
        render(&p),
        [
            "0: test (db=15, os=linux)",
            "0: test (db=16, os=linux)",
            "1: report [test (db=15, os=linux), test (db=16, os=linux)]",
        ]
    );
    assert_eq!(
        p.jobs[1].matrix,
        [
            ("db".to_string(), "16".to_string()),
            ("os".into(), "linux".into())
        ]
    );
}

#[test]
fn conditions_and_skip_reasons() {
    let yaml = "
jobs:
  build: { run: b }
  deploy:
    needs: build
    if: event.branch == 'main'
    run: d
  smoke: { needs: deploy, run: s }
  tagged:
    if: ${{ event.tag != '' }}
    run: t
  docs:
    if: changed('docs/**')
    run: d
  per-db:
    matrix: { db: [\"15\", \"16\"] }
    if: matrix.db == '16'
    run: x
";
    let p = make(
        yaml,
        &event(
            EventKind::Push,
            Some("feature"),
            None,
            Some(&["src/lib.rs"]),
        ),
        &[],
    );
    assert_eq!(
        render(&p),
        [
            "0: build",
            "1: deploy [build] (skip: condition `event.branch == 'main'` is false)",
            "2: smoke [deploy] (skip: needs `deploy`, which is skipped)",
            "0: tagged (skip: condition `event.tag != ''` is false)",
            "0: docs (skip: condition `changed('docs/**')` is false)",
            "0: per-db (db=15) (skip: condition `matrix.db == '16'` is false)",
            "0: per-db (db=16)",
        ]
    );
    let main = make(
        yaml,
        &event(EventKind::Tag, None, Some("v1"), Some(&["docs/a.md"])),
        &[],
    );
    let running: Vec<&str> = main
        .jobs
        .iter()
        .filter(|j| j.runs())
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(running, ["build", "tagged", "docs", "per-db (db=16)"]);
    // Unknown changed files: `changed()` is true (better to run than to miss a change).
    let unknown = make(yaml, &event(EventKind::Push, Some("x"), None, None), &[]);
    assert!(unknown.job("docs").is_some_and(|j| j.runs()));
}

#[test]
fn only_keeps_the_job_and_what_it_needs() {
    let p = make(DIAMOND, &push("main"), &["test"]);
    assert_eq!(render(&p), ["0: build", "1: test [build]"]);
    let yaml = "jobs:\n  t:\n    matrix: { n: [a, b] }\n    run: x\n  u: { run: y }\n";
    assert_eq!(
        render(&make(yaml, &push("main"), &["t (n=b)"])),
        ["0: t (n=b)"]
    );
    assert_eq!(
        render(&make(yaml, &push("main"), &["t"])),
        ["0: t (n=a)", "0: t (n=b)"]
    );
    let p = ferry_config::load(DIAMOND).expect("valid").pipeline;
    let err = plan(
        &p,
        &push("main"),
        &Options {
            only: vec!["tset".into()],
        },
    )
    .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "there is no job `tset` (did you mean `test`?)"
    );
}

#[test]
fn condition_errors_are_typed() {
    let p = ferry_config::load("jobs:\n  a:\n    if: event.branch + 1\n    run: x\n")
        .expect("lint passes")
        .pipeline;
    let err = plan(&p, &push("main"), &Options::default()).expect_err("runtime type error");
    assert!(
        err.to_string()
            .starts_with("job `a`: cannot evaluate `if`:"),
        "{err}"
    );
}

#[test]
fn triggers() {
    let yaml = "
on:
  push: { branches: [main, \"release/*\"], paths: [\"src/**\"] }
  tag: [\"v*\"]
  manual: false
jobs:
  a: { run: x }
";
    let cases: Vec<(Event, Option<&str>)> = vec![
        (push("main"), None),
        (push("release/1.0"), None),
        (
            push("feature"),
            Some("branch `feature` is not in `branches` (main, release/*)"),
        ),
        (
            event(EventKind::Push, Some("main"), None, Some(&["README.md"])),
            Some("no changed file matches `paths`"),
        ),
        (
            event(EventKind::Push, Some("main"), None, Some(&["src/a.rs"])),
            None,
        ),
        (event(EventKind::Tag, None, Some("v2"), None), None),
        (
            event(EventKind::Tag, None, Some("nightly"), None),
            Some("tag `nightly` is not in `on.tag` (v*)"),
        ),
        (
            event(EventKind::PullRequest, Some("main"), None, None),
            Some("`on:` does not list `pull_request`"),
        ),
        (
            event(EventKind::Manual, Some("main"), None, None),
            Some("`on.manual` is false"),
        ),
    ];
    for (ev, expected) in cases {
        let p = make(yaml, &ev, &[]);
        assert_eq!(p.not_triggered.as_deref(), expected, "{ev:?}");
    }
    // Without `on:`, pushes, tags and manual triggers run; pull requests do not.
    let default = "jobs:\n  a: { run: x }\n";
    assert_eq!(make(default, &push("any"), &[]).not_triggered, None);
    assert_eq!(
        make(default, &event(EventKind::Manual, None, None, None), &[]).not_triggered,
        None
    );
    assert!(
        make(
            default,
            &event(EventKind::PullRequest, Some("x"), None, None),
            &[]
        )
        .not_triggered
        .is_some()
    );
}

#[test]
fn concurrency_group_is_rendered() {
    let yaml = "concurrency:\n  group: deploy-${{ event.branch }}-${{ env.REGION }}\n  cancel_in_progress: true\nenv:\n  REGION: eu\njobs:\n  a: { run: x }\n";
    let p = make(yaml, &push("main"), &[]);
    assert_eq!(
        p.concurrency,
        Some(ferry_plan::PlanConcurrency {
            group: "deploy-main-eu".into(),
            cancel_in_progress: true
        })
    );
    assert_eq!(
        make("concurrency: ci\njobs:\n  a: { run: x }\n", &push("x"), &[])
            .concurrency
            .map(|c| c.cancel_in_progress),
        Some(false)
    );
}
