use super::*;

fn release() -> Release {
    serde_json::from_value(serde_json::json!({
        "id": "rel1", "repository_id": "repo", "name": "r3-abc1234", "run_id": "run",
        "run_number": 12, "commit_sha": "abc1234def", "git_ref": "refs/heads/main",
        "tag": null, "author": "alice", "triggered_by": "push", "plan_hash": "sha256:0",
        "ferry_version": "0", "delivery": "{}", "created_at": 0,
        "artifacts": [], "images": [{ "job": "image", "name": "127.0.0.1:5000/shop/web", "digest": "sha256:feed" }]
    }))
    .expect("a release")
}

fn deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "id": "dep-1", "repository_id": "repo", "environment": "production", "number": 4,
        "release_id": "rel1", "kind": "promotion", "status": "deploying", "reason": null,
        "requested_by": "bob", "previous_release_id": null, "config": null, "created_at": 0,
        "started_at": null, "finished_at": null, "verification_started_at": null,
        "verification_finished_at": null, "live_at": null
    }))
    .expect("a deployment")
}

#[test]
fn manifests_are_rendered_pinned_and_per_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("k8s/apps")).expect("dirs");
    std::fs::write(
        dir.path().join("k8s/apps/web.yaml"),
        "kind: Deployment\nspec:\n  image: 127.0.0.1:5000/shop/web:latest\n  env: ${{ environment.name }}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("k8s/README.md"), "not a manifest").expect("write");
    let eval = |t: &str| Ok(t.replace("${{ environment.name }}", "production"));
    let files = render(dir.path(), &["k8s".to_string()], &release(), &eval).expect("renders");
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["apps/web.yaml"]);
    let web = &files["apps/web.yaml"];
    assert!(
        web.contains("image: 127.0.0.1:5000/shop/web@sha256:feed"),
        "{web}"
    );
    assert!(web.contains("env: production"), "{web}");
    std::fs::create_dir_all(dir.path().join("empty")).expect("dir");
    let none = render(dir.path(), &["empty".to_string()], &release(), &eval);
    assert!(none.is_err(), "no manifest is an error");
}

#[test]
fn the_commit_message_names_release_run_deployment_and_approvers() {
    let approvals: Vec<Approval> = serde_json::from_value(serde_json::json!([
        { "deployment_id": "dep-1", "user_id": "u1", "user_name": "carol", "decision": "approve", "comment": null, "created_at": 0 },
        { "deployment_id": "dep-1", "user_id": "u2", "user_name": "dave", "decision": "reject", "comment": null, "created_at": 0 }
    ]))
    .expect("approvals");
    let m = message(&deployment(), &release(), &approvals, false);
    assert_eq!(
        m,
        "Deploy release r3-abc1234 to production\n\nRelease: r3-abc1234 (commit abc1234def, run #12)\n\
         Deployment: production#4\nRequested by: bob\nApproved by: carol\n\nFerry-Deployment: dep-1\n"
    );
    assert!(
        message(&deployment(), &release(), &[], true)
            .starts_with("Roll production back to release r3-abc1234\n")
    );
}

#[test]
fn drift_is_a_commit_to_the_path_not_made_by_ferry() {
    let log = "aaaa1111\x1fFerry\x1fDeploy release r4 to production\x1fRelease: r4\n\nFerry-Deployment: dep-2\n\x1e\n\
               bbbb2222\x1falice\x1fbump replicas by hand\x1f\x1e\n";
    let commits = parse_log(log);
    assert_eq!(commits.len(), 2);
    assert_eq!(trailer(&commits[0].body), Some("dep-2"));
    assert_eq!(trailer(&commits[1].body), None);
    let ours = vec!["aaaa1111".to_string()];
    assert_eq!(
        drift(&commits, "production", &ours).as_deref(),
        Some(
            "drift: commit bbbb2222 by alice (\"bump replicas by hand\") changed production outside Ferry"
        )
    );
    assert_eq!(
        drift(&commits[..1], "production", &ours),
        None,
        "Ferry's own commits are no drift"
    );
    assert_eq!(drift(&[], "production", &ours), None);
}

#[test]
fn paths_stay_inside_the_repository() {
    assert_eq!(
        checked_path("envs/production/").as_deref(),
        Ok("envs/production")
    );
    for bad in [
        "",
        "/",
        "../x",
        "a/../../b",
        ".git",
        "a/.git/hooks",
        "a//b",
        ".",
        "a/./b",
    ] {
        assert!(checked_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn only_remote_repositories_or_paths_the_administrator_allowed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("ferry");
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(data.join("mirrors/x.git")).expect("mk");
    std::fs::create_dir_all(srv.join("env.git")).expect("mk");
    std::fs::create_dir_all(tmp.path().join("other/env.git")).expect("mk");
    // A link in the allowed directory to a repository outside it.
    std::os::unix::fs::symlink(tmp.path().join("other/env.git"), srv.join("out.git"))
        .expect("link");
    let allowed = vec![srv.clone()];
    let at = |p: &str| format!("{}/{p}", tmp.path().display());
    for ok in [
        "https://git.example/env.git".to_string(),
        "ssh://git@git.example/env.git".into(),
        "git@git.example:team/env.git".into(),
        at("srv/env.git"),
        format!("file://{}", at("srv/env.git")),
        at("srv/new.git"),
    ] {
        assert_eq!(check_repo(&ok, &data, &allowed), Ok(()), "{ok}");
    }
    for (bad, why) in [
        (
            "--upload-pack=touch /tmp/x".to_string(),
            "not a repository URL",
        ),
        ("ext::sh -c touch% /tmp/x".into(), "remote helper"),
        (at("ferry/mirrors/x.git"), "data directory"),
        (
            format!("file://{}", at("ferry/mirrors/x.git")),
            "data directory",
        ),
        (at("other/env.git"), "--gitops-local"),
        (at("srv/out.git"), "--gitops-local"),
        (at("srv/../other/new.git"), "`..`"),
        ("relative/env.git".into(), "absolute path"),
        (
            format!("file://{}", at("srv/%2e%2e/%2e%2e/other/env.git")),
            "`%` escapes",
        ),
        (format!("file://host{}", at("srv/env.git")), "no host"),
        ("ssh://git@localhost/srv/x.git".into(), "this very host"),
        (
            "ssh://[0:0:0:0:0:0:0:1]:22/srv/x.git".into(),
            "this very host",
        ),
        ("ssh://[::1]:22/srv/x.git".into(), "remote helper"),
        ("git+ssh://127.0.0.2/srv/x.git".into(), "this very host"),
        ("git@localhost:srv/x.git".into(), "this very host"),
        ("[0:0:0:0:0:0:0:1]:/srv/x.git".into(), "this very host"),
        ("localhost:/srv/x.git".into(), "this very host"),
        (String::new(), "not a repository URL"),
    ] {
        let err = check_repo(&bad, &data, &allowed).expect_err(&bad);
        assert!(err.contains(why), "{bad}: {err}");
    }
    // Without an allowed directory, only URLs.
    let err = check_repo(&at("srv/env.git"), &data, &[]).expect_err("refused");
    assert!(err.contains("--gitops-local"), "{err}");
    // An allowed directory never opens the data directory.
    let err = check_repo(
        &at("ferry/mirrors/x.git"),
        &data,
        &[tmp.path().to_path_buf()],
    )
    .expect_err("refused");
    assert!(err.contains("data directory"), "{err}");
}

#[test]
fn a_path_through_a_link_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    std::os::unix::fs::symlink("/", dir.path().join("x")).expect("link");
    std::fs::create_dir_all(dir.path().join("envs")).expect("dir");
    std::fs::write(dir.path().join("file"), "x").expect("file");
    assert!(no_links(dir.path(), "x/etc/cron.d").is_err());
    assert!(no_links(dir.path(), "file/sub").is_err());
    assert!(no_links(dir.path(), "envs/production").is_ok());
}
