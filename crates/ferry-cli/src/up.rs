//! `ferry up DIR`: Ferry's whole loop on one machine, on the embedded defaults. A server
//! on a temporary data directory (SQLite, the local executor, the process target),
//! DIR's pipeline registered as a repository, a run of it, its release deployed to the
//! environments that deploy on their own (each with a port and a greeting of its own),
//! and the rest left waiting (for an approval, or for a promotion); then the addresses
//! of the web UI and of each environment, and how to approve. Ctrl-C stops the server
//! and everything it started, and removes the temporary data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::{Failure, exit};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The directory whose `.ferry.yml` to run (its files become the repository).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Keep the server's data here (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to listen on (default: a free port on 127.0.0.1).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// The longest the run, and then the deployments, may take before `up` stops waiting.
const RUN_WAIT: Duration = Duration::from_secs(15 * 60);
const DEPLOY_WAIT: Duration = Duration::from_secs(120);

pub async fn up(args: UpArgs) -> Result<u8, Failure> {
    // Ctrl-C is ours from the start: the apps it deploys must not outlive it.
    let mut interrupted = Interrupt::new()?;
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| Failure::usage(format!("{}: {e}", args.dir.display())))?;
    let file = dir.join(ferry_config::FILE_NAME);
    let source = std::fs::read_to_string(&file)
        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    let pipeline = match ferry_config::load(&source) {
        Ok(loaded) => loaded.pipeline,
        Err(diags) => {
            let name = file.display().to_string();
            eprint!(
                "{}",
                ferry_config::render_all(&diags, &name, &source, false)
            );
            return Ok(exit::USAGE);
        }
    };
    let name = repo_name(&dir);
    let envs: Vec<String> = pipeline
        .delivery
        .environments
        .iter()
        .map(|e| e.name.clone())
        .collect();

    // The data: kept where asked, else in a temporary directory removed at the end.
    let tmp = match &args.data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("ferry-up-")
                .tempdir()
                .map_err(|e| Failure::failed(format!("cannot make a temporary directory: {e}")))?,
        ),
    };
    let data = match (&args.data_dir, &tmp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory was made"),
    };
    std::fs::create_dir_all(&data)
        .map_err(|e| Failure::failed(format!("cannot create {}: {e}", data.display())))?;
    let repo_dir = data.join("up").join(&name);
    snapshot(&dir, &repo_dir)?;

    // The server: `ferry serve`'s defaults, but quiet, and running this directory's
    // own code with the user's rights, as `ferry run` does (see docs/ui.md).
    let mut serve = crate::serve::ServeArgs::for_up();
    serve.listen = Some(
        args.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
    );
    serve.data_dir = Some(data.join("server"));
    let ready = crate::serve::ready(serve, "warn").await?;
    let base = format!("http://{}", ready.addr);
    let token = match ready.admin_token.clone() {
        Some(t) => t,
        None => {
            // A data directory used before: a new token of its admin.
            let admin = ready
                .store
                .user_by_name("admin")
                .await
                .map_err(|e| Failure::failed(format!("no admin in the store: {e}")))?;
            let token = ferry_server::auth::new_token();
            ready
                .store
                .create_token(
                    &admin.id,
                    "ferry up",
                    &ferry_server::auth::hash_token(&token),
                )
                .await
                .map_err(|e| Failure::failed(e.to_string()))?;
            token
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let crate::serve::Ready {
        state,
        store,
        listener,
        tls,
        ..
    } = ready;
    let server = tokio::spawn(ferry_server::serve(listener, tls, state, async move {
        let _ = stop_rx.await;
    }));
    let stop = async move {
        let _ = stop_tx.send(());
        let _ = server.await;
        store.close().await;
    };

    let code = tokio::select! {
        outcome = drive(&base, &token, &name, &repo_dir, &envs) => {
            let code = match outcome {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("{}", crate::style::error_line(&e));
                    exit::FAILED
                }
            };
            println!("\nCtrl-C stops Ferry and everything it started.");
            interrupted.recv().await;
            code
        }
        _ = interrupted.recv() => exit::INTERRUPTED,
    };
    println!("ferry up: stopping");
    stop.await;
    drop(tmp);
    Ok(code)
}

/// What `up` does on its server: register, configure, run, wait, tell.
async fn drive(
    base: &str,
    token: &str,
    name: &str,
    repo_dir: &Path,
    envs: &[String],
) -> Result<(), String> {
    let api = Api::new(base, token);
    let (status, body) = api
        .send(
            "POST",
            "/api/v1/repos",
            Some(json!({ "name": name, "url": repo_dir.display().to_string() })),
        )
        .await?;
    if status != 201 && status != 409 {
        return Err(format!("cannot register {name}: {body}"));
    }
    // Each environment's configuration: a port of its own and a greeting.
    const GREETINGS: [&str; 5] = ["hello", "bonjour", "hallo", "hola", "ciao"];
    let mut ports = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        for (var, value) in [
            ("PORT", port.to_string()),
            ("GREETING", GREETINGS[i % GREETINGS.len()].to_string()),
        ] {
            let path = format!("/api/v1/repos/{name}/variables/{var}");
            let (status, body) = api
                .send(
                    "PUT",
                    &path,
                    Some(json!({ "value": value, "environment": env })),
                )
                .await?;
            if status != 200 {
                return Err(format!("cannot set {var} of {env}: {body}"));
            }
        }
        ports.push((env.clone(), port));
    }
    let data = repo_dir
        .parent()
        .and_then(Path::parent)
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    println!("ferry up: serving {base}/ (data in {data}; a temporary one goes at the end)");
    println!("  web UI    {base}/   sign in with the token {token}");
    let (status, body) = api
        .send(
            "POST",
            &format!("/api/v1/repos/{name}/runs"),
            Some(json!({ "ref": "main" })),
        )
        .await?;
    if status != 201 {
        return Err(format!("cannot start a run: {body}"));
    }
    let run_id = body["run"]["id"].as_str().unwrap_or_default().to_string();
    let number = &body["run"]["number"];
    println!("  run #{number}    {base}/ui/runs/{run_id}");
    let detail = wait_for(RUN_WAIT, "the run", async || {
        let (_, d) = api
            .send("GET", &format!("/api/v1/runs/{run_id}"), None)
            .await?;
        let finished = !matches!(d["run"]["status"].as_str(), Some("queued" | "running"));
        Ok(finished.then_some(d))
    })
    .await?;
    for job in detail["jobs"].as_array().into_iter().flatten() {
        println!(
            "    {:<24} {}",
            job["name"].as_str().unwrap_or_default(),
            job["status"].as_str().unwrap_or_default()
        );
    }
    if detail["run"]["status"] != "success" {
        return Err(format!(
            "run #{number} did not succeed ({}): see {base}/ui/runs/{run_id}",
            detail["run"]["status"].as_str().unwrap_or_default()
        ));
    }
    if envs.is_empty() {
        println!("  (the pipeline has no `environments:`: nothing to deploy)");
        return Ok(());
    }
    let release = wait_for(DEPLOY_WAIT, "the release", async || {
        let (_, r) = api
            .send("GET", &format!("/api/v1/repos/{name}/releases"), None)
            .await?;
        Ok(r["releases"][0]["name"].as_str().map(str::to_string))
    })
    .await?;
    println!("  release   {release}   {base}/ui/repos/{name}/releases/{release}");
    // Settled: every environment live with this release, waiting for a decision, or
    // idle (deployed only when someone promotes to it).
    let list = wait_for(DEPLOY_WAIT, "the deployments", async || {
        let (_, l) = api
            .send("GET", &format!("/api/v1/repos/{name}/environments"), None)
            .await?;
        let settled = l["environments"].as_array().is_some_and(|all| {
            all.iter().all(|e| {
                let pending = e["pending"].as_array().cloned().unwrap_or_default();
                let busy = pending.iter().any(|p| p["status"] != "awaiting_approval");
                !busy
                    && (e["live"]["release"] == release.as_str()
                        || !pending.is_empty()
                        || e["policy"] != "auto")
            })
        });
        Ok(settled.then_some(l))
    })
    .await?;
    println!("  environments   {base}/ui/repos/{name}/environments");
    for e in list["environments"].as_array().into_iter().flatten() {
        let env = e["name"].as_str().unwrap_or_default();
        let port = ports
            .iter()
            .find(|(n, _)| n == env)
            .map(|(_, p)| *p)
            .unwrap_or_default();
        let waiting = e["pending"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["status"] == "awaiting_approval"))
            .and_then(|p| p["deployment"].as_str());
        match (e["live"]["release"].as_str(), waiting) {
            (Some(live), None) => {
                println!("    {env:<12} live ({live})   http://127.0.0.1:{port}/");
            }
            (_, Some(label)) => {
                println!(
                    "    {env:<12} waiting for approval ({label}); once approved: http://127.0.0.1:{port}/"
                );
                println!(
                    "                 approve it on the board, or:  FERRY_SERVER={base} FERRY_TOKEN={token} ferry approve {label} --repo {name}"
                );
            }
            (None, None) => println!(
                "    {env:<12} nothing deployed (promote: ferry promote {release} --to {env} --repo {name})"
            ),
        }
    }
    Ok(())
}

/// Polls `step` until it gives a value, at most `limit`.
async fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut step: impl AsyncFnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = step().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what} after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's API, with the admin's token.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str, token: &str) -> Self {
        Api {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let method: reqwest::Method = method.parse().map_err(|_| "a bad method".to_string())?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// The repository's name: the directory's, in the letters a name may have.
fn repo_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app")
        .to_string();
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "app".into() } else { name }
}

/// A port nobody listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Makes `repo` a git repository whose `main` holds `dir`'s files as they are now
/// (what git would add: ignored files and `.git`/`.ferry` stay out), one commit more
/// each time.
fn snapshot(dir: &Path, repo: &Path) -> Result<(), Failure> {
    let fail = |what: &str, e: String| Failure::failed(format!("{what}: {e}"));
    std::fs::create_dir_all(repo)
        .map_err(|e| fail("cannot create the repository", e.to_string()))?;
    let git = |args: &[&str], cwd: &Path| -> Result<String, Failure> {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .env("GIT_AUTHOR_NAME", "ferry up")
            .env("GIT_AUTHOR_EMAIL", "up@ferry.invalid")
            .env("GIT_COMMITTER_NAME", "ferry up")
            .env("GIT_COMMITTER_EMAIL", "up@ferry.invalid")
            .output()
            .map_err(|e| fail("cannot run git", e.to_string()))?;
        if !out.status.success() {
            return Err(fail(
                &format!("git {}", args.join(" ")),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if !repo.join(".git").exists() {
        git(&["init", "-q", "-b", "main"], repo)?;
    }
    // The files: git's own list where DIR is in a work tree, else every file.
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            ".",
        ])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success());
    let files: Vec<PathBuf> = match listed {
        Some(out) => out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect(),
        None => walk(dir, dir),
    };
    // Start from an empty tree, so a file removed in DIR is removed in the snapshot.
    for entry in std::fs::read_dir(repo).map_err(|e| fail("cannot read", e.to_string()))? {
        let path = entry
            .map_err(|e| fail("cannot read", e.to_string()))?
            .path();
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| fail("cannot clean the snapshot", e.to_string()))?;
    }
    for rel in files {
        let from = dir.join(&rel);
        if !from.is_file() {
            continue;
        }
        let to = repo.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("cannot copy", e.to_string()))?;
        }
        std::fs::copy(&from, &to)
            .map_err(|e| fail(&format!("cannot copy {}", from.display()), e.to_string()))?;
    }
    git(&["add", "-A"], repo)?;
    git(
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "ferry up: the directory as it is",
        ],
        repo,
    )?;
    Ok(())
}

/// Every file under `dir` (relative to `root`), but `.git` and `.ferry`.
fn walk(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let skip = path
            .file_name()
            .is_some_and(|n| n == ".git" || n == ".ferry");
        if skip {
            continue;
        }
        if path.is_dir() {
            out.extend(walk(root, &path));
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    out
}

/// SIGINT and SIGTERM, listened to.
struct Interrupt {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| signal(kind).map_err(|e| Failure::failed(format!("signals: {e}")));
        Ok(Interrupt {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! { _ = self.term.recv() => {}, _ = self.int.recv() => {} }
    }
}
