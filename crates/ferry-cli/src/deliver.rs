//! Delivery commands, as a client of a server: releases, environments, deployments,
//! promotion, approvals, rollback, variables, secrets and the audit log.

use std::io::Read as _;

use clap::{Args, Subcommand};
use ferry_server::api::{Removed, delivery, hooks, settings};

use crate::client::{abbrev, print_json};
use crate::{Failure, exit};

#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// The repository on the server.
    #[arg(long, env = "FERRY_REPO", global = true)]
    pub repo: Option<String>,
    #[command(flatten)]
    pub server: crate::client::ServerArgs,
    /// Print the server's JSON answer.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum VarCommand {
    /// Variables of every scope; with --env, the repository's and that environment's.
    List,
    /// Set NAME to VALUE.
    Set { name: String, value: String },
    /// Remove NAME.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Names and update times (never values) of every scope; with --env, the
    /// repository's and that environment's.
    List,
    /// Set NAME; the value is read from --from-file, else standard input (never an argument).
    Set {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
    },
    /// Remove NAME.
    Rm { name: String },
}

/// `ENV#N` → `ENV.N` (a `#` does not fit in a URL path).
fn key(deployment: &str) -> String {
    deployment.replacen('#', ".", 1)
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(crate::logs::local_time)
        .unwrap_or_else(|| "-".into())
}

fn short(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(h) => format!("sha256:{}", &h[..h.len().min(12)]),
        None => digest.to_string(),
    }
}

/// Where a variable or secret applies: an environment, or the repository itself.
fn scope(environment: &str) -> &str {
    if environment.is_empty() {
        "repository"
    } else {
        environment
    }
}

/// The word the API uses for a value (`added`, `awaiting_approval`, …).
fn word(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn client(args: &DeliverArgs) -> Result<(crate::client::Client, String), Failure> {
    let (Some(_), Some(repo)) = (&args.server.server, &args.repo) else {
        return Err(Failure::usage(
            "releases and deployments live on a server: give --server URL and --repo NAME (or FERRY_SERVER and FERRY_REPO)",
        ));
    };
    Ok((crate::client::Client::new(&args.server)?, repo.clone()))
}

pub async fn releases(args: DeliverArgs, release: Option<String>) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    if let Some(r) = release {
        let one: delivery::ReleaseOne = c.get(&format!("/repos/{repo}/releases/{r}")).await?;
        if args.json {
            print_json(&one);
            return Ok(exit::OK);
        }
        let r = &one.release;
        println!("release   {}", r.name);
        println!("commit    {}", r.commit_sha);
        println!("run       {}", r.run_number);
        println!("sealed    {}", when(Some(r.created_at)));
        println!("plan      {}", short(&r.plan_hash));
        println!("ferry     {}", r.ferry_version);
        for a in &r.artifacts {
            println!("artifact  {}  {}  ({} bytes)", a.path, a.digest, a.size);
        }
        for i in &r.images {
            println!("image     {}@{}", i.name, i.digest);
        }
        return Ok(exit::OK);
    }
    let list: delivery::ReleaseList = c.get(&format!("/repos/{repo}/releases")).await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    println!(
        "{:<24}  {:<10}  {:>5}  {:<19}  REF",
        "RELEASE", "COMMIT", "RUN", "SEALED"
    );
    for r in &list.releases {
        // The run number is not padded to its column: it never was.
        println!(
            "{:<24}  {:<10}  {}  {:<19}  {}",
            r.name,
            abbrev(&r.commit_sha, 10),
            r.run_number,
            when(Some(r.created_at)),
            r.git_ref
        );
    }
    Ok(exit::OK)
}

/// `ferry infra state ENV [--version N]`.
pub async fn infra_state(
    args: DeliverArgs,
    env: &str,
    version: Option<String>,
) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let base = format!("/repos/{repo}/environments/{env}/infra/states");
    if let Some(v) = version {
        let state: serde_json::Value = c.get(&format!("{base}/{v}")).await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&state).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    let list: delivery::InfraVersionList = c.get(&base).await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    if list.versions.is_empty() {
        println!("{env} has no Terraform state yet");
        return Ok(exit::OK);
    }
    println!(
        "{:>7}  {:>7}  {:<19}  {:>10}  {:<12}  DEPLOYMENT",
        "VERSION", "SERIAL", "WRITTEN", "BYTES", "SHA256"
    );
    for v in &list.versions {
        println!(
            "{:>7}  {:>7}  {:<19}  {:>10}  {:<12}  {}",
            v.version,
            v.serial
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            when(Some(v.created_at)),
            if v.deleted {
                "deleted".to_string()
            } else {
                v.size.to_string()
            },
            &v.sha256[..v.sha256.len().min(12)],
            v.deployment_id.as_deref().unwrap_or("-")
        );
    }
    Ok(exit::OK)
}

pub async fn envs(args: DeliverArgs) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let list: delivery::EnvironmentList = c.get(&format!("/repos/{repo}/environments")).await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    println!(
        "{:<14}  {:<24}  {:<19}  {:<9}  {:<16}  {:<16}  PENDING",
        "ENVIRONMENT", "LIVE RELEASE", "SINCE", "HEALTH", "DEPLOYED BY", "APPROVED BY"
    );
    for e in &list.environments {
        let live = e.live.as_ref();
        let approved = live.map(|l| l.approved_by.join(",")).unwrap_or_default();
        let pending: Vec<String> = e
            .pending
            .iter()
            .map(|p| format!("{} ({})", p.deployment, p.status.as_str()))
            .collect();
        println!(
            "{:<14}  {:<24}  {:<19}  {:<9}  {:<16}  {:<16}  {}",
            e.name,
            live.map_or("-", |l| l.release.as_str()),
            when(live.and_then(|l| l.since)),
            e.health.as_ref().map_or("-", |h| h.state.as_str()),
            live.map_or("-", |l| l.deployed_by.as_str()),
            if approved.is_empty() {
                "-"
            } else {
                approved.as_str()
            },
            pending.join(", ")
        );
    }
    Ok(exit::OK)
}

/// One environment: its live release, its health now and the changes of it.
pub async fn status(args: DeliverArgs, env: &str) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let list: delivery::EnvironmentList = c.get(&format!("/repos/{repo}/environments")).await?;
    let Some(view) = list.environments.into_iter().find(|e| e.name == env) else {
        return Err(Failure::usage(format!(
            "there is no environment `{env}` (see `ferry envs`)"
        )));
    };
    let health: delivery::HealthView = c
        .get(&format!("/repos/{repo}/environments/{}/health", key(env)))
        .await?;
    if args.json {
        print_json(&serde_json::json!({ "environment": view, "health": health }));
        return Ok(exit::OK);
    }
    println!("environment  {}", view.name);
    match &view.live {
        Some(l) => {
            println!(
                "live         {} ({}, commit {})",
                l.release,
                l.deployment,
                prefix(&l.commit_sha)
            );
            println!("since        {} by {}", when(l.since), l.deployed_by);
        }
        None => println!("live         -"),
    }
    match &health.health {
        Some(h) => {
            println!(
                "health       {} since {}",
                h.state.as_str(),
                when(Some(h.since))
            );
            if let Some(why) = &h.reason {
                println!("             {why}");
            }
        }
        None => println!("health       - (not watched)"),
    }
    if let Some(w) = &view.workload {
        println!(
            "workload     cpu {:.2}s, memory {:.1} MiB, {} restart(s), up since {}",
            w.cpu_seconds,
            w.memory_bytes as f64 / (1 << 20) as f64,
            w.restarts,
            when(w.started_at)
        );
    }
    for p in &view.pending {
        println!("pending      {} ({})", p.deployment, p.status.as_str());
    }
    if !health.history.is_empty() {
        // Deployments by their `ENV#N` labels, as people name them.
        let query = delivery::DeploymentsQuery {
            environment: Some(env.to_string()),
            limit: Some(500),
        };
        let labels: std::collections::HashMap<String, String> = c
            .get_with::<_, delivery::DeploymentList>(&format!("/repos/{repo}/deployments"), &query)
            .await
            .map(|l| {
                l.deployments
                    .into_iter()
                    .map(|d| (d.deployment.id, d.label))
                    .collect()
            })
            .unwrap_or_default();
        println!();
        println!(
            "{:<19}  {:<22}  {:<20}  REASON",
            "AT", "CHANGE", "DEPLOYMENT"
        );
        for c in &health.history {
            let change = format!(
                "{} → {}",
                c.from_state.map_or("-", |s| s.as_str()),
                c.to_state.as_str()
            );
            println!(
                "{:<19}  {:<22}  {:<20}  {}",
                when(Some(c.at)),
                change,
                labels
                    .get(&c.deployment_id)
                    .map_or_else(|| prefix(&c.deployment_id), String::as_str),
                c.reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(exit::OK)
}

/// DORA's four keys of the repository (or one environment) over a window.
pub async fn dora(args: DeliverArgs, env: Option<String>, since: String) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let query = delivery::DoraQuery {
        environment: env,
        since: Some(since.clone()),
    };
    let view: delivery::DoraView = c.get_with(&format!("/repos/{repo}/dora"), &query).await?;
    if args.json {
        print_json(&view);
        return Ok(exit::OK);
    }
    let d = &view.dora;
    let spread = |s: &Option<delivery::Spread>| match s {
        Some(s) => format!(
            "median {}, p90 {} ({} measured)",
            human(s.median_seconds),
            human(s.p90_seconds),
            s.count
        ),
        None => "-".into(),
    };
    println!(
        "{} over the last {since} ({} … {})",
        view.environment
            .as_deref()
            .map_or("every environment".to_string(), |e| format!("`{e}`")),
        when(Some(d.since)),
        when(Some(d.until))
    );
    println!(
        "deployment frequency   {} ({:.2} a day)",
        d.deployments, d.deployments_per_day
    );
    println!("lead time for changes  {}", spread(&d.lead_time));
    println!(
        "change failure rate    {}",
        match d.change_failure_rate {
            Some(r) => format!(
                "{:.1}% ({} of {} changes)",
                r * 100.0,
                d.failed_changes,
                d.changes
            ),
            None => "- (no change ended)".into(),
        }
    );
    println!(
        "time to restore        {}{}",
        spread(&d.time_to_restore),
        if d.open_incidents > 0 {
            format!("; {} not restored yet", d.open_incidents)
        } else {
            String::new()
        }
    );
    Ok(exit::OK)
}

/// `3h 20m`, `45s`, `2d 4h`: a duration for people.
fn human(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The repository's notifications, newest first, each attempt under it.
pub async fn notifications(args: DeliverArgs, limit: i64) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let query = delivery::LimitQuery { limit: Some(limit) };
    let list: delivery::NotificationList = c
        .get_with(&format!("/repos/{repo}/notifications"), &query)
        .await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    println!(
        "{:<19}  {:<22}  {:<9}  {:<8}  TO",
        "AT", "EVENT", "STATUS", "ATTEMPTS"
    );
    for view in &list.notifications {
        let n = &view.notification;
        println!(
            "{:<19}  {:<22}  {:<9}  {:<8}  {}",
            when(Some(n.created_at)),
            n.event,
            n.status.as_str(),
            n.attempts,
            n.target
        );
        for a in &view.attempts {
            println!(
                "    #{} {}  {}  {} ms  {}",
                a.attempt,
                when(Some(a.at)),
                if a.ok { "ok    " } else { "failed" },
                a.ms,
                a.detail
            );
        }
    }
    Ok(exit::OK)
}

fn prefix(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub async fn deployments(args: DeliverArgs, env: Option<String>) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let query = delivery::DeploymentsQuery {
        environment: env,
        limit: None,
    };
    let list: delivery::DeploymentList = c
        .get_with(&format!("/repos/{repo}/deployments"), &query)
        .await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    println!(
        "{:<18}  {:<24}  {:<9}  {:<17}  {:<19}  REASON",
        "DEPLOYMENT", "RELEASE", "KIND", "STATUS", "STARTED"
    );
    for view in &list.deployments {
        let d = &view.deployment;
        println!(
            "{:<18}  {:<24}  {:<9}  {:<17}  {:<19}  {}",
            view.label,
            view.release.as_deref().unwrap_or(""),
            d.kind.as_str(),
            d.status.as_str(),
            when(d.started_at),
            d.reason.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

/// One deployment: what an approver looks at before approving (or, with `log`, what
/// it did).
pub async fn deployment(args: DeliverArgs, deployment: &str, log: bool) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    if log {
        let text = c
            .get_text(&format!(
                "/repos/{repo}/deployments/{}/log",
                key(deployment)
            ))
            .await?;
        print!("{text}");
        return Ok(exit::OK);
    }
    let detail: delivery::DeploymentDetail = c
        .get(&format!("/repos/{repo}/deployments/{}", key(deployment)))
        .await?;
    if args.json {
        print_json(&detail);
        return Ok(exit::OK);
    }
    let view = &detail.deployment;
    let d = &view.deployment;
    let ch = &detail.changes;
    println!(
        "deployment  {} ({}, {})",
        view.label,
        d.kind.as_str(),
        d.status.as_str()
    );
    println!(
        "release     {} → replaces {}",
        view.release.as_deref().unwrap_or(""),
        ch.live_release.as_deref().unwrap_or("nothing")
    );
    if let Some(r) = &d.reason {
        println!("reason      {r}");
    }
    if let Some(start) = d.verification_started_at {
        let took = d.verification_finished_at.map_or_else(
            || "running".into(),
            |end| format!("{:.1} s", (end - start) as f64 / 1e3),
        );
        println!("verified    from {} ({took})", when(Some(start)));
    }
    println!("\ncommits:");
    for commit in &ch.commits {
        println!(
            "  {}  {}  ({})",
            abbrev(&commit.sha, 10),
            commit.subject,
            commit.author
        );
    }
    println!("\nartifacts:");
    for a in &ch.artifacts {
        println!(
            "  {}  {} → {}",
            a.path,
            a.old.as_deref().map_or_else(|| "(new)".into(), short),
            a.new.as_deref().map_or_else(|| "(removed)".into(), short)
        );
    }
    for i in &ch.images {
        println!(
            "  image {}  {} → {}",
            i.job,
            i.old.as_deref().unwrap_or("(new)"),
            i.new
        );
    }
    for (what, list) in [("variables", &ch.variables), ("secrets", &ch.secrets)] {
        let changed: Vec<String> = list
            .iter()
            .map(|x| format!("{} {}/{}", word(&x.change), x.scope, x.name))
            .collect();
        println!(
            "\n{what} changed: {}",
            if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join(", ")
            }
        );
    }
    if let Some(p) = &detail.infra_plan {
        let s = &p.summary;
        println!(
            "\nterraform plan {}{} ({}){}",
            abbrev(&p.sha256, 12),
            if p.destroy { ", a destroy" } else { "" },
            s.counts(),
            if p.applied_at.is_some() {
                ", applied"
            } else {
                ""
            }
        );
        for (sign, list) in [
            ("+", &s.create),
            ("~", &s.update),
            ("-/+", &s.replace),
            ("-", &s.delete),
        ] {
            for address in list {
                println!("  {sign:>3} {address}");
            }
        }
        if !s.outputs.is_empty() {
            println!("  outputs changed: {}", s.outputs.join(", "));
        }
    }
    println!("\napprovals:");
    for a in &detail.approvals {
        let of_plan = match (&a.plan_sha256, &detail.infra_plan) {
            (Some(mine), Some(p)) if mine != &p.sha256 => {
                format!(" (of plan {}, no longer current)", abbrev(mine, 12))
            }
            (Some(mine), _) => format!(" (of plan {})", abbrev(mine, 12)),
            _ => String::new(),
        };
        println!(
            "  {} {}{of_plan}  {}",
            a.user_name,
            a.decision,
            a.comment.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

fn print_deployment(one: &delivery::DeploymentOne, json: bool) {
    if json {
        print_json(one);
        return;
    }
    let view = &one.deployment;
    println!(
        "{}: release {} ({})",
        view.label,
        view.release.as_deref().unwrap_or(""),
        view.deployment.status.as_str()
    );
}

pub async fn promote(args: DeliverArgs, release: &str, env: &str) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let body = delivery::Promote {
        release: release.to_string(),
        environment: env.to_string(),
    };
    let one = c.post(&format!("/repos/{repo}/deployments"), &body).await?;
    print_deployment(&one, args.json);
    Ok(exit::OK)
}

pub async fn decide(
    args: DeliverArgs,
    deployment: &str,
    comment: Option<String>,
    plan: Option<String>,
    approve: bool,
) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let verb = if approve { "approve" } else { "reject" };
    let one = c
        .post(
            &format!("/repos/{repo}/deployments/{}/{verb}", key(deployment)),
            &delivery::Decision { comment, plan },
        )
        .await?;
    print_deployment(&one, args.json);
    Ok(exit::OK)
}

/// `ferry envs destroy ENV`.
pub async fn destroy(args: DeliverArgs, env: &str) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let one: delivery::DeploymentOne = c
        .post(
            &format!("/repos/{repo}/environments/{env}/destroy"),
            &serde_json::json!({}),
        )
        .await?;
    print_deployment(&one, args.json);
    if !args.json {
        println!(
            "it plans the destroy, then waits: `ferry deployment {0}` shows the plan, \
             `ferry approve {0} --plan SHA` lets it go",
            one.deployment.label
        );
    }
    Ok(exit::OK)
}

pub async fn rollback(args: DeliverArgs, env: &str, to: Option<String>) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let one = c
        .post(
            &format!("/repos/{repo}/environments/{env}/rollback"),
            &delivery::Rollback { release: to },
        )
        .await?;
    print_deployment(&one, args.json);
    Ok(exit::OK)
}

/// `GET path` of variables or secrets in the scope of `query`: printed as JSON with
/// `--json` (and `None`), else handed back to be printed.
async fn listed<T: serde::de::DeserializeOwned + serde::Serialize>(
    c: &crate::client::Client,
    path: &str,
    query: &settings::ScopeQuery,
    json: bool,
) -> Result<Option<T>, Failure> {
    let list: T = c.get_with(path, query).await?;
    if json {
        print_json(&list);
        return Ok(None);
    }
    Ok(Some(list))
}

/// `PUT path` with a variable's or secret's value, for the scope of `query`.
async fn put_value<T: serde::de::DeserializeOwned>(
    c: &crate::client::Client,
    path: &str,
    value: String,
    query: settings::ScopeQuery,
) -> Result<(), Failure> {
    let body = settings::SetValue {
        value,
        environment: query.environment,
    };
    let _: T = c.put(path, &body).await?;
    Ok(())
}

/// `DELETE path` of a variable or secret, in the scope of `query`; says `done`.
async fn remove(
    c: &crate::client::Client,
    path: &str,
    query: &settings::ScopeQuery,
    done: &str,
) -> Result<u8, Failure> {
    let _: Removed = c.delete(path, query).await?;
    println!("{done}");
    Ok(exit::OK)
}

pub async fn vars(args: DeliverArgs, env: Option<String>, cmd: VarCommand) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let scope_query = settings::ScopeQuery { environment: env };
    match cmd {
        VarCommand::List => {
            let path = format!("/repos/{repo}/variables");
            let list: Option<settings::VariableList> =
                listed(&c, &path, &scope_query, args.json).await?;
            for x in list.iter().flat_map(|l| &l.variables) {
                println!("{:<14}  {}={}", scope(&x.environment), x.name, x.value);
            }
        }
        VarCommand::Set { name, value } => {
            let path = format!("/repos/{repo}/variables/{name}");
            put_value::<settings::VariableSet>(&c, &path, value, scope_query).await?;
            println!("set {name}");
        }
        VarCommand::Rm { name } => {
            let path = format!("/repos/{repo}/variables/{name}");
            return remove(&c, &path, &scope_query, &format!("removed {name}")).await;
        }
    }
    Ok(exit::OK)
}

pub async fn secrets(
    args: DeliverArgs,
    env: Option<String>,
    cmd: SecretCommand,
) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let scope_query = settings::ScopeQuery { environment: env };
    match cmd {
        SecretCommand::List => {
            let path = format!("/repos/{repo}/secrets");
            let list: Option<settings::SecretList> =
                listed(&c, &path, &scope_query, args.json).await?;
            for x in list.iter().flat_map(|l| &l.secrets) {
                println!(
                    "{:<14}  {:<24}  updated {} by {}",
                    scope(&x.environment),
                    x.name,
                    when(Some(x.updated_at)),
                    x.updated_by.as_deref().unwrap_or("-")
                );
            }
        }
        SecretCommand::Set { name, from_file } => {
            let value = match from_file {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
                    text.strip_suffix('\n').map(str::to_string).unwrap_or(text)
                }
            };
            if value.is_empty() {
                return Err(Failure::usage("the secret's value is empty"));
            }
            let path = format!("/repos/{repo}/secrets/{name}");
            put_value::<settings::SecretSet>(&c, &path, value, scope_query).await?;
            println!("set secret {name}");
        }
        SecretCommand::Rm { name } => {
            let path = format!("/repos/{repo}/secrets/{name}");
            return remove(&c, &path, &scope_query, &format!("removed secret {name}")).await;
        }
    }
    Ok(exit::OK)
}

pub async fn audit(args: DeliverArgs, limit: u32) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let query = delivery::LimitQuery {
        limit: Some(limit.into()),
    };
    let list: delivery::AuditList = c.get_with(&format!("/repos/{repo}/audit"), &query).await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    for e in &list.audit {
        println!(
            "{}  {:<16}  {:<20}  {:<20}  {}",
            when(Some(e.at)),
            e.actor,
            e.action,
            e.target,
            e.detail.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

/// `ferry deliveries`: the repository's webhook deliveries, or `--redeliver ID`.
pub async fn deliveries(
    args: DeliverArgs,
    limit: u32,
    redeliver: Option<String>,
    approve: Option<String>,
) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    if let Some(id) = approve {
        let runs: hooks::DeliveryOne = c
            .post(&format!("/repos/{repo}/deliveries/{id}/approve"), &())
            .await?;
        if args.json {
            print_json(&runs);
        } else {
            println!("approved {id}: it runs as {}", runs.delivery.request.id);
        }
        return Ok(exit::OK);
    }
    if let Some(id) = redeliver {
        let again: hooks::DeliveryOne = c
            .post(&format!("/repos/{repo}/deliveries/{id}/redeliver"), &())
            .await?;
        if args.json {
            print_json(&again);
        } else {
            println!("delivering {id} again as {}", again.delivery.request.id);
        }
        return Ok(exit::OK);
    }
    let query = delivery::LimitQuery {
        limit: Some(limit.into()),
    };
    let list: hooks::DeliveryList = c
        .get_with(&format!("/repos/{repo}/deliveries"), &query)
        .await?;
    if args.json {
        print_json(&list);
        return Ok(exit::OK);
    }
    for record in &list.deliveries {
        let d = &record.request;
        let run = record
            .run_id
            .as_deref()
            .map(|r| abbrev(r, 8))
            .unwrap_or("-");
        println!(
            "{}  {:<36}  {:<8}  {:<12}  {:<24}  {:<8}  {:<9}  {:<8}  {}",
            when(Some(d.received_at)),
            d.id,
            d.provider,
            d.event,
            d.git_ref.strip_prefix("refs/heads/").unwrap_or(&d.git_ref),
            abbrev(&d.sha, 8),
            record.status.as_str(),
            run,
            record.reason.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

/// The output of an environment's process (process target).
pub async fn output(args: DeliverArgs, env: &str) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let text = c
        .get_text(&format!("/repos/{repo}/environments/{env}/output"))
        .await?;
    print!("{text}");
    Ok(exit::OK)
}
