//! Delivery commands, as a client of a server: releases, environments, deployments,
//! promotion, approvals, rollback, variables, secrets and the audit log.

use std::io::Read as _;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
    /// Variables of the repository and, with --env, of an environment.
    List,
    /// Set NAME to VALUE.
    Set { name: String, value: String },
    /// Remove NAME.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Names and update times (never values).
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
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn short(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(h) => format!("sha256:{}", &h[..h.len().min(12)]),
        None => digest.to_string(),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
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
        let v = c.get(&format!("/repos/{repo}/releases/{r}")).await?;
        if args.json {
            print_json(&v);
            return Ok(exit::OK);
        }
        let r = &v["release"];
        println!("release   {}", r["name"].as_str().unwrap_or(""));
        println!("commit    {}", r["commit_sha"].as_str().unwrap_or(""));
        println!("run       {}", r["run_number"]);
        println!("sealed    {}", when(r["created_at"].as_i64()));
        println!("plan      {}", short(r["plan_hash"].as_str().unwrap_or("")));
        println!("ferry     {}", r["ferry_version"].as_str().unwrap_or(""));
        for a in r["artifacts"].as_array().into_iter().flatten() {
            println!(
                "artifact  {}  {}  ({} bytes)",
                a["path"].as_str().unwrap_or(""),
                a["digest"].as_str().unwrap_or(""),
                a["size"]
            );
        }
        for i in r["images"].as_array().into_iter().flatten() {
            println!(
                "image     {}@{}",
                i["name"].as_str().unwrap_or(""),
                i["digest"].as_str().unwrap_or("")
            );
        }
        return Ok(exit::OK);
    }
    let v = c.get(&format!("/repos/{repo}/releases")).await?;
    if args.json {
        print_json(&v);
        return Ok(exit::OK);
    }
    println!(
        "{:<24}  {:<10}  {:>5}  {:<19}  REF",
        "RELEASE", "COMMIT", "RUN", "SEALED"
    );
    for r in v["releases"].as_array().into_iter().flatten() {
        println!(
            "{:<24}  {:<10}  {:>5}  {:<19}  {}",
            r["name"].as_str().unwrap_or(""),
            &r["commit_sha"].as_str().unwrap_or("")
                [..10.min(r["commit_sha"].as_str().unwrap_or("").len())],
            r["run_number"],
            when(r["created_at"].as_i64()),
            r["git_ref"].as_str().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

pub async fn envs(args: DeliverArgs) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let v = c.get(&format!("/repos/{repo}/environments")).await?;
    if args.json {
        print_json(&v);
        return Ok(exit::OK);
    }
    println!(
        "{:<14}  {:<24}  {:<19}  {:<16}  {:<16}  PENDING",
        "ENVIRONMENT", "LIVE RELEASE", "SINCE", "DEPLOYED BY", "APPROVED BY"
    );
    for e in v["environments"].as_array().into_iter().flatten() {
        let live = &e["live"];
        let approved: Vec<&str> = live["approved_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let pending: Vec<String> = e["pending"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} ({})",
                    p["deployment"].as_str().unwrap_or(""),
                    p["status"].as_str().unwrap_or("")
                )
            })
            .collect();
        println!(
            "{:<14}  {:<24}  {:<19}  {:<16}  {:<16}  {}",
            e["name"].as_str().unwrap_or(""),
            live["release"].as_str().unwrap_or("-"),
            when(live["since"].as_i64()),
            live["deployed_by"].as_str().unwrap_or("-"),
            if approved.is_empty() {
                "-".to_string()
            } else {
                approved.join(",")
            },
            pending.join(", ")
        );
    }
    Ok(exit::OK)
}

pub async fn deployments(args: DeliverArgs, env: Option<String>) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let query = env.map(|e| format!("?environment={e}")).unwrap_or_default();
    let v = c.get(&format!("/repos/{repo}/deployments{query}")).await?;
    if args.json {
        print_json(&v);
        return Ok(exit::OK);
    }
    println!(
        "{:<18}  {:<24}  {:<9}  {:<17}  {:<19}  REASON",
        "DEPLOYMENT", "RELEASE", "KIND", "STATUS", "STARTED"
    );
    for d in v["deployments"].as_array().into_iter().flatten() {
        println!(
            "{:<18}  {:<24}  {:<9}  {:<17}  {:<19}  {}",
            d["label"].as_str().unwrap_or(""),
            d["release"].as_str().unwrap_or(""),
            d["kind"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            when(d["started_at"].as_i64()),
            d["reason"].as_str().unwrap_or("")
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
    let v = c
        .get(&format!("/repos/{repo}/deployments/{}", key(deployment)))
        .await?;
    if args.json {
        print_json(&v);
        return Ok(exit::OK);
    }
    let d = &v["deployment"];
    let ch = &v["changes"];
    println!(
        "deployment  {} ({}, {})",
        d["label"].as_str().unwrap_or(""),
        d["kind"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or("")
    );
    println!(
        "release     {} → replaces {}",
        d["release"].as_str().unwrap_or(""),
        ch["live_release"].as_str().unwrap_or("nothing")
    );
    if let Some(r) = d["reason"].as_str() {
        println!("reason      {r}");
    }
    println!("\ncommits:");
    for commit in ch["commits"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}  ({})",
            &commit["sha"].as_str().unwrap_or("")
                [..10.min(commit["sha"].as_str().unwrap_or("").len())],
            commit["subject"].as_str().unwrap_or(""),
            commit["author"].as_str().unwrap_or("")
        );
    }
    println!("\nartifacts:");
    for a in ch["artifacts"].as_array().into_iter().flatten() {
        println!(
            "  {}  {} → {}",
            a["path"].as_str().unwrap_or(""),
            a["old"]
                .as_str()
                .map(short)
                .unwrap_or_else(|| "(new)".into()),
            a["new"]
                .as_str()
                .map(short)
                .unwrap_or_else(|| "(removed)".into())
        );
    }
    for i in ch["images"].as_array().into_iter().flatten() {
        println!(
            "  image {}  {} → {}",
            i["job"].as_str().unwrap_or(""),
            i["old"].as_str().unwrap_or("(new)"),
            i["new"].as_str().unwrap_or("")
        );
    }
    for (what, key) in [("variables", "variables"), ("secrets", "secrets")] {
        let changed: Vec<String> = ch[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{} {}/{}",
                    x["change"].as_str().unwrap_or(""),
                    x["scope"].as_str().unwrap_or(""),
                    x["name"].as_str().unwrap_or("")
                )
            })
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
    println!("\napprovals:");
    for a in v["approvals"].as_array().into_iter().flatten() {
        println!(
            "  {} {}  {}",
            a["user_name"].as_str().unwrap_or(""),
            a["decision"].as_str().unwrap_or(""),
            a["comment"].as_str().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

fn print_deployment(v: &Value, json: bool) {
    if json {
        print_json(v);
        return;
    }
    let d = &v["deployment"];
    println!(
        "{}: release {} ({})",
        d["label"].as_str().unwrap_or(""),
        d["release"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or("")
    );
}

pub async fn promote(args: DeliverArgs, release: &str, env: &str) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let v = c
        .post(
            &format!("/repos/{repo}/deployments"),
            json!({ "release": release, "environment": env }),
        )
        .await?;
    print_deployment(&v, args.json);
    Ok(exit::OK)
}

pub async fn decide(
    args: DeliverArgs,
    deployment: &str,
    comment: Option<String>,
    approve: bool,
) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let verb = if approve { "approve" } else { "reject" };
    let v = c
        .post(
            &format!("/repos/{repo}/deployments/{}/{verb}", key(deployment)),
            json!({ "comment": comment }),
        )
        .await?;
    print_deployment(&v, args.json);
    Ok(exit::OK)
}

pub async fn rollback(args: DeliverArgs, env: &str, to: Option<String>) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let v = c
        .post(
            &format!("/repos/{repo}/environments/{env}/rollback"),
            json!({ "release": to }),
        )
        .await?;
    print_deployment(&v, args.json);
    Ok(exit::OK)
}

pub async fn vars(args: DeliverArgs, env: Option<String>, cmd: VarCommand) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    match cmd {
        VarCommand::List => {
            let query = env.map(|e| format!("?environment={e}")).unwrap_or_default();
            let v = c.get(&format!("/repos/{repo}/variables{query}")).await?;
            if args.json {
                print_json(&v);
            } else {
                for x in v["variables"].as_array().into_iter().flatten() {
                    let scope = x["environment"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .unwrap_or("repository");
                    println!(
                        "{:<14}  {}={}",
                        scope,
                        x["name"].as_str().unwrap_or(""),
                        x["value"].as_str().unwrap_or("")
                    );
                }
            }
        }
        VarCommand::Set { name, value } => {
            c.put(
                &format!("/repos/{repo}/variables/{name}"),
                json!({ "value": value, "environment": env }),
            )
            .await?;
            println!("set {name}");
        }
        VarCommand::Rm { name } => {
            let query: Vec<(&str, String)> = env.into_iter().map(|e| ("environment", e)).collect();
            c.delete(&format!("/repos/{repo}/variables/{name}"), &query)
                .await?;
            println!("removed {name}");
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
    match cmd {
        SecretCommand::List => {
            let query = env.map(|e| format!("?environment={e}")).unwrap_or_default();
            let v = c.get(&format!("/repos/{repo}/secrets{query}")).await?;
            if args.json {
                print_json(&v);
            } else {
                for x in v["secrets"].as_array().into_iter().flatten() {
                    let scope = x["environment"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .unwrap_or("repository");
                    println!(
                        "{:<14}  {:<24}  updated {} by {}",
                        scope,
                        x["name"].as_str().unwrap_or(""),
                        when(x["updated_at"].as_i64()),
                        x["updated_by"].as_str().unwrap_or("-")
                    );
                }
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
            c.put(
                &format!("/repos/{repo}/secrets/{name}"),
                json!({ "value": value, "environment": env }),
            )
            .await?;
            println!("set secret {name}");
        }
        SecretCommand::Rm { name } => {
            let query: Vec<(&str, String)> = env.into_iter().map(|e| ("environment", e)).collect();
            c.delete(&format!("/repos/{repo}/secrets/{name}"), &query)
                .await?;
            println!("removed secret {name}");
        }
    }
    Ok(exit::OK)
}

pub async fn audit(args: DeliverArgs, limit: u32) -> Result<u8, Failure> {
    let (c, repo) = client(&args)?;
    let v = c.get(&format!("/repos/{repo}/audit?limit={limit}")).await?;
    if args.json {
        print_json(&v);
        return Ok(exit::OK);
    }
    for e in v["audit"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<16}  {:<20}  {:<20}  {}",
            when(e["at"].as_i64()),
            e["actor"].as_str().unwrap_or(""),
            e["action"].as_str().unwrap_or(""),
            e["target"].as_str().unwrap_or(""),
            e["detail"].as_str().unwrap_or("")
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
