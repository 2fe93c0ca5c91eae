//! The `ferry` CLI as a client of `ferry serve`.
//!
//! The server and token come from `--server`/`--token`, else `FERRY_SERVER`/`FERRY_TOKEN`,
//! else `$XDG_CONFIG_HOME/ferry/config.json` (`{"server": "...", "token": "..."}`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::{Failure, exit, style};

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The server, e.g. http://127.0.0.1:7340.
    #[arg(long, env = "FERRY_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// An API token (prefer FERRY_TOKEN or the config file: arguments show in `ps`).
    #[arg(
        long,
        env = "FERRY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

fn config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferry/config.json"))
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &ServerArgs) -> Result<Client, Failure> {
        let file: Value = config_file()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let server = args
            .server
            .clone()
            .or_else(|| file["server"].as_str().map(str::to_string))
            .ok_or_else(|| Failure::usage("no server: pass --server URL, set FERRY_SERVER, or write ~/.config/ferry/config.json"))?;
        let token = args
            .token
            .clone()
            .or_else(|| file["token"].as_str().map(str::to_string))
            .ok_or_else(|| {
                Failure::usage(
                    "no token: set FERRY_TOKEN, pass --token, or write ~/.config/ferry/config.json",
                )
            })?;
        if !server.starts_with("http://") {
            return Err(Failure::usage(format!(
                "`{server}`: only http:// servers are supported by this build (put TLS in front of the server and reach it over a tunnel)"
            )));
        }
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::failed(format!("cannot reach the server {}: {e}", self.base)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        let code = if status.is_client_error() {
            exit::USAGE
        } else {
            exit::FAILED
        };
        Err(Failure {
            code,
            message: format!("{message} ({status})"),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.json()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }

    /// A text answer (logs).
    pub async fn get_text(&self, path: &str) -> Result<String, Failure> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.text()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let resp = self
            .send(self.request(reqwest::Method::DELETE, path).query(query))
            .await?;
        resp.json()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, Failure> {
        let resp = self
            .send(self.request(reqwest::Method::PUT, path).json(&body))
            .await?;
        resp.json()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path).json(&body))
            .await?;
        resp.json()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// List the server's repositories.
    List,
    /// Register a repository (admin).
    Add {
        name: String,
        /// Any URL git accepts, or a path on the server.
        url: String,
        #[arg(long)]
        default_branch: Option<String>,
        /// Read the webhook secret from this file (never from an argument).
        #[arg(long, value_name = "FILE")]
        webhook_secret_file: Option<PathBuf>,
        /// Poll for new commits every N seconds.
        #[arg(long, value_name = "SECONDS")]
        poll: Option<i64>,
    },
}

pub async fn repos(server: &ServerArgs, cmd: RepoCommand) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    match cmd {
        RepoCommand::List => {
            let v = c.get("/repos").await?;
            for r in v["repositories"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {}",
                    r["name"].as_str().unwrap_or(""),
                    r["url"].as_str().unwrap_or("")
                );
            }
        }
        RepoCommand::Add {
            name,
            url,
            default_branch,
            webhook_secret_file,
            poll,
        } => {
            let secret = match webhook_secret_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let body = json!({ "name": name, "url": url, "default_branch": default_branch, "webhook_secret": secret, "poll_interval_s": poll });
            let v = c.post("/repos", body).await?;
            println!(
                "added {} ({})",
                v["repository"]["name"].as_str().unwrap_or(""),
                v["repository"]["id"].as_str().unwrap_or("")
            );
        }
    }
    Ok(exit::OK)
}

/// `ferry runs --server …`
pub async fn runs(
    server: &ServerArgs,
    repo: Option<String>,
    limit: u32,
    json_out: bool,
) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    let mut path = format!("/runs?limit={}", limit.clamp(1, 200));
    if let Some(r) = repo {
        path.push_str(&format!("&repo={r}"));
    }
    let v = c.get(&path).await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&v["runs"]).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    println!(
        "{:<36}  {:>4}  {:<9}  {:<12}  {:<20}  COMMIT",
        "RUN", "#", "STATUS", "EVENT", "REF"
    );
    for r in v["runs"].as_array().into_iter().flatten() {
        let reference = r["tag"]
            .as_str()
            .or(r["branch"].as_str())
            .unwrap_or(r["git_ref"].as_str().unwrap_or(""));
        println!(
            "{:<36}  {:>4}  {:<9}  {:<12}  {:<20}  {}",
            r["id"].as_str().unwrap_or(""),
            r["number"],
            r["status"].as_str().unwrap_or(""),
            r["event"].as_str().unwrap_or(""),
            reference,
            &r["commit_sha"].as_str().unwrap_or("")
                [..8.min(r["commit_sha"].as_str().unwrap_or("").len())]
        );
    }
    Ok(exit::OK)
}

/// Prints a run's logs; with `follow`, streams them live until the run ends and exits
/// with the run's outcome (0 success, 1 failed, 130 cancelled).
pub async fn logs(
    server: &ServerArgs,
    run: &str,
    job: Option<&str>,
    follow: bool,
) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    if !follow {
        let detail = c.get(&format!("/runs/{run}")).await?;
        let jobs: Vec<String> = detail["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["name"].as_str().map(str::to_string))
            .filter(|n| job.is_none_or(|want| n == want || n.split(" (").next() == Some(want)))
            .collect();
        for name in &jobs {
            let resp = c
                .send(c.request(
                    reqwest::Method::GET,
                    &format!("/runs/{run}/jobs/{name}/log"),
                ))
                .await?;
            let text = resp
                .text()
                .await
                .map_err(|e| Failure::failed(e.to_string()))?;
            print_log(name, &text, jobs.len() > 1);
        }
        return Ok(exit::OK);
    }
    let mut resp = c
        .send(c.request(reqwest::Method::GET, &format!("/runs/{run}/events")))
        .await?;
    let mut buf = String::new();
    let mut status = String::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::failed(format!("the stream broke: {e}")))?
    {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let kind = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            match kind {
                "log" => {
                    let name = v["job"].as_str().unwrap_or("");
                    if job.is_none_or(|want| name == want || name.split(" (").next() == Some(want))
                    {
                        print_log(name, v["text"].as_str().unwrap_or(""), job.is_none());
                    }
                }
                "job" if v["status"] != "running" && v["status"] != "queued" => {
                    eprintln!(
                        "{} {}",
                        v["job"].as_str().unwrap_or(""),
                        v["status"].as_str().unwrap_or("")
                    );
                }
                "end" => status = v["status"].as_str().unwrap_or("").to_string(),
                _ => {}
            }
        }
    }
    Ok(match status.as_str() {
        "success" => exit::OK,
        "cancelled" => exit::INTERRUPTED,
        _ => exit::FAILED,
    })
}

fn print_log(job: &str, text: &str, prefix: bool) {
    let mut out = std::io::stdout().lock();
    if prefix {
        for line in text.lines() {
            let _ = writeln!(out, "{job} │ {line}");
        }
    } else {
        let _ = out.write_all(text.as_bytes());
    }
    let _ = out.flush();
}

pub async fn trigger(
    server: &ServerArgs,
    repo: &str,
    git_ref: &str,
    vars: &[String],
    follow: bool,
) -> Result<u8, Failure> {
    let mut variables = serde_json::Map::new();
    for v in vars {
        let (name, value) = v
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--var `{v}`: write NAME=value")))?;
        variables.insert(name.to_string(), Value::String(value.to_string()));
    }
    let c = Client::new(server)?;
    let body = json!({ "ref": git_ref, "variables": variables });
    let v = c.post(&format!("/repos/{repo}/runs"), body).await?;
    let id = v["run"]["id"].as_str().unwrap_or("").to_string();
    eprintln!("queued run {} of {repo} ({id})", v["run"]["number"]);
    println!("{id}");
    if follow {
        return logs(server, &id, None, true).await;
    }
    Ok(exit::OK)
}

pub async fn cancel(server: &ServerArgs, run: &str) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    c.post(&format!("/runs/{run}/cancel"), json!({})).await?;
    eprintln!("{}", style::paint("cancelled", "33", style::stderr_color()));
    Ok(exit::OK)
}

pub async fn rerun(server: &ServerArgs, run: &str, failed_only: bool) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    let v = c
        .post(
            &format!("/runs/{run}/rerun"),
            json!({ "failed_only": failed_only }),
        )
        .await?;
    eprintln!("queued run {}", v["run"]["number"]);
    println!("{}", v["run"]["id"].as_str().unwrap_or(""));
    Ok(exit::OK)
}
