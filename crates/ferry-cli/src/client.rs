//! The `ferry` CLI as a client of `ferry serve`.
//!
//! The server and token come from `--server`/`--token`, else `FERRY_SERVER`/`FERRY_TOKEN`,
//! else `$XDG_CONFIG_HOME/ferry/config.json` (`{"server": "...", "token": "..."}`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_server::api::{repos, runs};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Failure, exit, style};

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The server, e.g. https://ferry.example.com or http://127.0.0.1:7340.
    #[arg(long, env = "FERRY_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Certificates (PEM) trusted besides the system's for an https:// server, e.g. a
    /// private CA's.
    #[arg(long, env = "FERRY_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// An API token (prefer FERRY_TOKEN or the config file: arguments show in `ps`).
    #[arg(
        long,
        env = "FERRY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A server URL the token may be sent to: `https://` anywhere, `http://` only to this
/// machine (a loopback address or `localhost`), where nothing on the wire can read it.
pub fn check_server_url(server: &str) -> Result<(), Failure> {
    let url = reqwest::Url::parse(server).map_err(|e| {
        Failure::usage(format!(
            "`{server}`: not a URL ({e}); write https://HOST[:PORT]"
        ))
    })?;
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        "http" => Err(Failure::usage(format!(
            "`{server}`: a token is sent over http:// only to this machine; use https:// \
             (with --ca-file for a private CA)"
        ))),
        _ => Err(Failure::usage(format!(
            "`{server}`: write the server's URL, https://HOST[:PORT]"
        ))),
    }
}

/// The certificates in a PEM file (`--ca-file`); an error names the file.
pub fn read_ca(file: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Failure> {
    let pem =
        std::fs::read(file).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Failure::usage(format!("{}: not PEM certificates: {e}", file.display())))?;
    if certs.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no certificate (a PEM `CERTIFICATE` block)",
            file.display()
        )));
    }
    Ok(certs)
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
        check_server_url(&server)?;
        let ca = args
            .ca_file
            .clone()
            .or_else(|| file["ca_file"].as_str().map(PathBuf::from));
        // A token never follows a redirect (to another host, or down to http://).
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &ca {
            for cert in read_ca(ca)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| Failure::failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            http,
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
        let message = resp
            .json::<ferry_server::ErrorBody>()
            .await
            .map(|e| e.message)
            .unwrap_or_else(|_| "request failed".to_string());
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

    /// Sends `method path` with what `with` adds (a query, a body) and reads the answer
    /// as the `T` the server writes for that route (see `ferry_server::ROUTES`).
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<T, Failure> {
        let resp = self.send(with(self.request(method.clone(), path))).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| {
            Failure::failed(format!(
                "the server answered something this ferry cannot read: {e} ({method} /api/v1{path}; is the server another version of Ferry?)"
            ))
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.call(reqwest::Method::GET, path, |r| r).await
    }

    /// A GET with a query string (one of the server's `*Query` types).
    pub async fn get_with<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, Failure> {
        self.call(reqwest::Method::GET, path, |r| r.query(query))
            .await
    }

    /// A job's whole log (or a part of it), page by page as the server serves it
    /// (1 MiB at a time), never cut.
    pub async fn job_log(&self, run: &str, job: &str, part: LogPart) -> Result<Vec<u8>, Failure> {
        let path = format!("/runs/{run}/jobs/{job}/log");
        let mut data = Vec::new();
        let mut query = runs::LogQuery::default();
        let mut wanted_lines = None;
        match part {
            LogPart::All => {}
            LogPart::Tail(n) => query.tail = Some(n),
            LogPart::Lines(range) => {
                query.line = Some(range.first);
                wanted_lines = range.count();
            }
        }
        loop {
            let resp = self
                .send(self.request(reqwest::Method::GET, &path).query(&query))
                .await?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let next = header("x-ferry-log-next").and_then(|n| n.parse::<u64>().ok());
            let complete = header("x-ferry-log-complete").as_deref() == Some("true");
            let page = resp
                .bytes()
                .await
                .map_err(|e| Failure::failed(format!("bad response: {e}")))?;
            data.extend_from_slice(&page);
            // Enough lines: cut after the last one wanted.
            if let Some(lines) = wanted_lines
                && let Some(end) = memchr::memchr_iter(b'\n', &data).nth(lines as usize - 1)
            {
                data.truncate(end + 1);
                return Ok(data);
            }
            match next {
                Some(next) if !complete && !page.is_empty() => {
                    query = runs::LogQuery {
                        offset: Some(next),
                        ..Default::default()
                    };
                }
                _ => return Ok(data),
            }
        }
    }

    /// A text answer (logs).
    pub async fn get_text(&self, path: &str) -> Result<String, Failure> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.text()
            .await
            .map_err(|e| Failure::failed(format!("bad response: {e}")))
    }

    pub async fn delete<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, Failure> {
        self.call(reqwest::Method::DELETE, path, |r| r.query(query))
            .await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(reqwest::Method::PUT, path, |r| r.json(body))
            .await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        self.call(reqwest::Method::POST, path, |r| r.json(body))
            .await
    }
}

/// Prints an answer (or part of one) as pretty JSON. Through a `Value`, so that keys
/// come sorted, as they always have, whatever the order of the type's fields.
pub fn print_json<T: Serialize + ?Sized>(answer: &T) {
    let text = serde_json::to_value(answer).and_then(|v| serde_json::to_string_pretty(&v));
    println!("{}", text.unwrap_or_default());
}

/// The first `n` characters of a commit id (all of a shorter one).
pub fn abbrev(sha: &str, n: usize) -> &str {
    sha.get(..n).unwrap_or(sha)
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
        /// What a pull request from a fork gets: `ignore` (no run), `approve` (an
        /// untrusted run once a developer approves it: `ferry deliveries --approve ID`)
        /// or `run` (an untrusted run: containers only, no registry logins, no release).
        #[arg(long, value_name = "ignore|approve|run", default_value = "ignore")]
        fork_prs: String,
    },
    /// Change a repository's settings (admin).
    Set {
        name: String,
        /// What a pull request from a fork gets: `ignore`, `approve` (a developer lets
        /// each run, untrusted) or `run` (untrusted).
        #[arg(long, value_name = "ignore|approve|run")]
        fork_prs: String,
    },
}

pub async fn repos(server: &ServerArgs, cmd: RepoCommand) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    match cmd {
        RepoCommand::List => {
            let list: repos::RepositoryList = c.get("/repos").await?;
            for r in &list.repositories {
                println!(
                    "{:<20} {}  (fork pull requests: {})",
                    r.name, r.url, r.fork_prs
                );
            }
        }
        RepoCommand::Add {
            name,
            url,
            default_branch,
            webhook_secret_file,
            poll,
            fork_prs,
        } => {
            let webhook_secret = match webhook_secret_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", f.display())))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let body = repos::CreateRepository {
                name,
                url,
                default_branch,
                webhook_secret,
                poll_interval_s: poll,
                fork_prs: Some(fork_prs),
            };
            let added: repos::RepositoryOne = c.post("/repos", &body).await?;
            println!("added {} ({})", added.repository.name, added.repository.id);
        }
        RepoCommand::Set { name, fork_prs } => {
            let body = repos::ForkPrs { fork_prs };
            let set: repos::RepositoryOne =
                c.put(&format!("/repos/{name}/fork-prs"), &body).await?;
            println!(
                "{}: fork pull requests: {}",
                set.repository.name, set.repository.fork_prs
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
    let query = runs::RunQuery {
        repo,
        limit: Some(limit.clamp(1, 200).into()),
        ..runs::RunQuery::default()
    };
    let list: runs::RunList = c.get_with("/runs", &query).await?;
    if json_out {
        print_json(&list.runs);
        return Ok(exit::OK);
    }
    println!(
        "{:<36}  {:>4}  {:<9}  {:<12}  {:<20}  COMMIT",
        "RUN", "#", "STATUS", "EVENT", "REF"
    );
    for r in &list.runs {
        let reference = r
            .tag
            .as_deref()
            .or(r.branch.as_deref())
            .unwrap_or(&r.git_ref);
        // The number is not padded to its column: it never was.
        println!(
            "{:<36}  {}  {:<9}  {:<12}  {:<20}  {}",
            r.id,
            r.number,
            r.status.as_str(),
            r.event,
            reference,
            abbrev(&r.commit_sha, 8)
        );
    }
    Ok(exit::OK)
}

/// Which part of a job's log to show.
#[derive(Debug, Clone, Copy)]
pub enum LogPart {
    All,
    /// The last N lines.
    Tail(u64),
    Lines(crate::args::LineRange),
}

/// Prints a run's logs; with `follow`, streams them live until the run ends and exits
/// with the run's outcome (0 success, 1 failed, 130 cancelled).
pub async fn logs(
    server: &ServerArgs,
    run: &str,
    job: Option<&str>,
    follow: bool,
    part: LogPart,
) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    if !follow {
        let detail: runs::RunDetail = c.get(&format!("/runs/{run}")).await?;
        if !detail.trust.is_trusted() {
            eprintln!("run {run} is untrusted: {}", detail.trust.reason);
        }
        let jobs: Vec<&str> = detail
            .jobs
            .iter()
            .map(|j| j.job.name.as_str())
            .filter(|n| wanted(job, n))
            .collect();
        for name in &jobs {
            let data = c.job_log(run, name, part).await?;
            print_log(name, &String::from_utf8_lossy(&data), jobs.len() > 1);
        }
        return Ok(exit::OK);
    }
    // The live events (`ferry_server::live::Live`) have no type the client can read
    // yet: their fields are read from JSON.
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
                    if wanted(job, name) {
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

/// Whether the job `name` is the one asked for: all are without `--job`; `test` names
/// `test` and each of its matrix jobs `test (…)`.
fn wanted(job: Option<&str>, name: &str) -> bool {
    job.is_none_or(|want| name == want || name.split(" (").next() == Some(want))
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
    let mut variables = BTreeMap::new();
    for v in vars {
        let (name, value) = v
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--var `{v}`: write NAME=value")))?;
        variables.insert(name.to_string(), value.to_string());
    }
    let c = Client::new(server)?;
    let body = runs::TriggerRun {
        git_ref: git_ref.to_string(),
        event: None,
        variables,
    };
    let queued: runs::RunOne = c.post(&format!("/repos/{repo}/runs"), &body).await?;
    let run = &queued.run;
    eprintln!("queued run {} of {repo} ({})", run.number, run.id);
    println!("{}", run.id);
    if follow {
        return logs(server, &run.id, None, true, LogPart::All).await;
    }
    Ok(exit::OK)
}

pub async fn cancel(server: &ServerArgs, run: &str) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    // No body: the route takes none.
    let _: runs::Cancelled = c
        .call(reqwest::Method::POST, &format!("/runs/{run}/cancel"), |r| r)
        .await?;
    eprintln!("{}", style::paint("cancelled", "33", style::stderr_color()));
    Ok(exit::OK)
}

pub async fn rerun(server: &ServerArgs, run: &str, failed_only: bool) -> Result<u8, Failure> {
    let c = Client::new(server)?;
    let queued: runs::RunOne = c
        .post(&format!("/runs/{run}/rerun"), &runs::Rerun { failed_only })
        .await?;
    eprintln!("queued run {}", queued.run.number);
    println!("{}", queued.run.id);
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers one request with 200 and `body`; returns the server's URL.
    fn answer_once(body: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    fn client(server: String) -> Client {
        Client::new(&ServerArgs {
            server: Some(server),
            token: Some("t".into()),
            ca_file: None,
        })
        .expect("client")
    }

    #[test]
    fn tokens_go_over_http_only_to_this_machine() {
        for ok in [
            "https://ferry.example.com",
            "https://10.0.0.5:7340/",
            "http://127.0.0.1:7340",
            "http://localhost:7340",
            "http://[::1]:7340",
        ] {
            assert!(check_server_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://ferry.example.com",
            "http://10.0.0.5:7340",
            "http://127.0.0.1.example.com",
            "ftp://example.com",
            "ferry.example.com",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_answer_of_another_shape_is_an_error_not_a_panic() {
        let c = client(answer_once(r#"{"runs": [{"id": 7}], "next": null}"#));
        let err = c
            .get::<runs::RunList>("/runs")
            .await
            .expect_err("not a run list");
        assert_eq!(err.code, exit::FAILED);
        assert!(
            err.message
                .starts_with("the server answered something this ferry cannot read: "),
            "{}",
            err.message
        );
        assert!(err.message.contains("GET /api/v1/runs"), "{}", err.message);
    }

    #[tokio::test]
    async fn answers_are_read_into_their_types() {
        let c = client(answer_once(r#"{"removed": "reg.example:5000"}"#));
        let removed: ferry_server::api::Removed = c
            .delete("/repos/app/registries/reg.example:5000", &())
            .await
            .expect("removed");
        assert_eq!(removed.removed, "reg.example:5000");
    }
}
