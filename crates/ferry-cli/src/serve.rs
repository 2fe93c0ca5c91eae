//! `ferry serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use ferry_engine::{Engine, EngineConfig};
use ferry_exec::LocalExecutor;
use ferry_server::{AppState, Config};
use ferry_store::Store;

use crate::logging::LogFormat;
use crate::{Failure, exit};

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to listen on [default: 127.0.0.1:7340].
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where mirrors, logs, artifacts and the SQLite database live
    /// (default: $XDG_DATA_HOME/ferry, else /var/lib/ferry for root, else
    /// ~/.local/share/ferry).
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database: SQLite in the data directory by default, or `postgres://…`.
    #[arg(long, env = "FERRY_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// The most runs executing at once [default: 2].
    #[arg(long, env = "FERRY_MAX_RUNS", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_runs: Option<u32>,
    /// The most jobs of one run at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,
    /// On SIGTERM or Ctrl-C, let running runs finish instead of cancelling them
    /// (a second signal cancels them).
    #[arg(long)]
    pub drain: bool,
    /// The most runs of one repository at once (default: --max-runs).
    #[arg(long, env = "FERRY_MAX_RUNS_PER_REPO", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_runs_per_repo: Option<u32>,
    /// Run jobs that name no `image:` in containers of this image (default: on the host).
    #[arg(long, env = "FERRY_DEFAULT_IMAGE", value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// Let requests without a token read repositories, runs and logs.
    #[arg(long, env = "FERRY_PUBLIC_READS")]
    pub public_reads: bool,
    /// The size limit of all `cache:` entries together, e.g. `20g` [default: 10g];
    /// the least recently used entries are removed first.
    #[arg(long, env = "FERRY_CACHE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// The most output a job's (or a deployment's) log takes, e.g. `1g` [default: 256m];
    /// past it the job or deployment fails ("log limit of … exceeded"). `0`: no limit.
    #[arg(long, env = "FERRY_LOG_LIMIT", value_name = "SIZE", value_parser = parse_limit)]
    pub log_limit: Option<u64>,
    /// The timeout of jobs that set no `timeout:`, of image builds and of deploy
    /// scripts [default: 60m]. `0s`: none.
    #[arg(long, env = "FERRY_JOB_TIMEOUT", value_name = "DURATION", value_parser = ferry_config::duration::parse_duration)]
    pub job_timeout: Option<std::time::Duration>,
    /// Keep the files of the newest N releases of each repository (and of every release
    /// an environment runs); older ones are pruned [default: keep all].
    #[arg(long, env = "FERRY_KEEP_RELEASES", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_releases: Option<u32>,
    /// Keep the newest N runs of each repository (and every run a release was sealed
    /// from); older finished runs are deleted with their logs and artifacts [default:
    /// keep all].
    #[arg(long, env = "FERRY_KEEP_RUNS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_runs: Option<u32>,
    /// Delete finished runs older than D days (but those a release was sealed from)
    /// [default: keep all].
    #[arg(long, env = "FERRY_KEEP_DAYS", value_name = "D", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_days: Option<u32>,
    /// How the server's own log is written to standard error: `human` or `json`
    /// [default: human]; levels come from FERRY_LOG (default `info`).
    #[arg(long, env = "FERRY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Host jobs' sandbox (Linux Landlock): `on` (the default) lets a host step read the
    /// system's directories and write only its workspace and temporary directory, with
    /// a scrubbed environment; the server refuses to start when the kernel cannot
    /// enforce it. `off` runs host steps with the server's rights (trusted code only).
    #[arg(long, env = "FERRY_HOST_SANDBOX", value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    pub host_sandbox: String,
    /// The sandbox of releases' code on the host (deploy scripts without an image,
    /// `process` targets, `command` probes): `on` (the default, with --host-sandbox on)
    /// gives it what host steps get, with their user, plus the release's directory and
    /// the environment's secret files; `off` runs it with the server's rights (for
    /// deploy scripts that need the host's tools and credentials: release only from
    /// branches trusted people push to).
    #[arg(long, env = "FERRY_DEPLOY_SANDBOX", value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    pub deploy_sandbox: String,
    /// A directory sandboxed host steps may also read (and run programs from), e.g. a
    /// toolchain outside /usr; repeat. Never one holding the data directory.
    #[arg(
        long = "sandbox-read",
        env = "FERRY_SANDBOX_READ",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub sandbox_read: Vec<PathBuf>,
    /// A directory sandboxed host steps may also write, shared by every job (e.g. a
    /// build cache); repeat. Never one holding the data directory.
    #[arg(
        long = "sandbox-write",
        env = "FERRY_SANDBOX_WRITE",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub sandbox_write: Vec<PathBuf>,
    /// How long one git command (a fetch, a clone, a read of the mirror) may take
    /// before it is stopped [default: 10m]: a remote that never answers holds up only
    /// its own repository's deliveries, and not for good.
    #[arg(long, env = "FERRY_GIT_TIMEOUT", value_name = "DURATION", value_parser = ferry_config::duration::parse_duration)]
    pub git_timeout: Option<std::time::Duration>,
    /// How long a run this server executes stays its own without a heartbeat
    /// [default: 30s; at least 3s]: renewed every third of it; when a server dies,
    /// another sharing the database ends its runs once their lease ran out.
    #[arg(long, env = "FERRY_RUN_LEASE", value_name = "DURATION", value_parser = ferry_config::duration::parse_duration)]
    pub run_lease: Option<std::time::Duration>,
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
    /// needs --tls-key.
    #[arg(
        long,
        env = "FERRY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "FERRY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Certificates (PEM) trusted besides the system's for the server's own outbound
    /// calls over https:// and smtps:// (verification and health probes,
    /// notifications), e.g. a private CA.
    #[arg(long, env = "FERRY_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The server's address as people reach it (`https://ferry.example.com`): the links
    /// in notifications.
    #[arg(long, env = "FERRY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The SMTP relay of e-mail notifications: `smtp://[USER:PASSWORD@]HOST[:PORT]`
    /// (plain; `?tls=starttls` to require STARTTLS) or `smtps://…` (TLS). Better given
    /// in the environment or the config file than on the command line (a password).
    #[arg(
        long,
        env = "FERRY_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// The sender of e-mail notifications (`Ferry <ferry@example.com>`).
    #[arg(long, env = "FERRY_SMTP_FROM", value_name = "ADDRESS")]
    pub smtp_from: Option<String>,
    /// Export each run and deployment as an OpenTelemetry trace to this OTLP/HTTP
    /// endpoint (`http://collector:4318`: traces go to `/v1/traces` under it).
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, when set, is the full traces URL instead.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub otlp_endpoint: Option<String>,
    /// Headers of each trace export, `NAME=VALUE,NAME2=VALUE2` (values
    /// percent-encoded), e.g. a tracing backend's API key.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        value_name = "LIST",
        hide_env_values = true
    )]
    pub otlp_headers: Option<String>,
    /// One user for every sandboxed host step and deployment of a server running as
    /// root: a user `NAME`, `UID` or `UID:GID`, without the server's groups; `none` runs
    /// them as root. Without it, each job and deployment gets a uid of its own from
    /// --sandbox-uids. A server that is not root runs them as its own user.
    #[arg(
        long,
        env = "FERRY_SANDBOX_USER",
        value_name = "USER",
        conflicts_with = "sandbox_uids"
    )]
    pub sandbox_user: Option<String>,
    /// The uids (and gids of the same numbers) a server running as root gives its jobs
    /// and deployments, one each, while they run: `FIRST-LAST`, used by no user, group
    /// or subordinate id range of the host [default: 2000000000-2000065535].
    #[arg(long, env = "FERRY_SANDBOX_UIDS", value_name = "FIRST-LAST")]
    pub sandbox_uids: Option<String>,
    /// A host directory `docker` deployments may mount through `volumes:`, exactly (a
    /// release's own configuration says what it mounts); repeat, never one inside
    /// another. Without one, only named volumes are mounted.
    #[arg(
        long = "deploy-mount",
        env = "FERRY_DEPLOY_MOUNT",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub deploy_mount: Vec<PathBuf>,
    /// A directory on the server `gitops` deployments' environment repositories may
    /// lie in (repeat). Without one, their `repo` must be a URL (https://, ssh://,
    /// user@host:path).
    #[arg(
        long = "gitops-local",
        env = "FERRY_GITOPS_LOCAL",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub gitops_local: Vec<PathBuf>,
}

/// The timeout of a server's jobs that set none.
const DEFAULT_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// A byte count: a number, optionally with `k`, `m` or `g` (powers of 1024); `0` is 0.
pub(crate) fn parse_limit(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix("ib").or(t.strip_suffix('b')).unwrap_or(&t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => 0,
    };
    num.parse::<u64>()
        .ok()
        .filter(|_| scale > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size: write a number and `k`, `m` or `g`"))
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    ferry_config::parse_memory(text)
        .ok_or_else(|| format!("`{text}` is not a size: write a number and `k`, `m` or `g`"))
}

/// The optional configuration file: the same settings as the flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    max_runs: Option<u32>,
    max_runs_per_repo: Option<u32>,
    jobs: Option<u32>,
    drain: Option<bool>,
    public_reads: Option<bool>,
    default_image: Option<String>,
    cache_size: Option<String>,
    log_limit: Option<String>,
    job_timeout: Option<String>,
    keep_releases: Option<u32>,
    keep_runs: Option<u32>,
    keep_days: Option<u32>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    deploy_mount: Vec<PathBuf>,
    #[serde(default)]
    gitops_local: Vec<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    git_timeout: Option<String>,
    run_lease: Option<String>,
    public_url: Option<String>,
    smtp_url: Option<String>,
    smtp_from: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_headers: Option<String>,
}

fn read_config(path: &std::path::Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// Flags (and their environment variables) win over the file, the file over defaults.
fn merge(mut args: ServeArgs) -> Result<ServeArgs, Failure> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    args.listen = args
        .listen
        .or(file.listen)
        .or(Some(SocketAddr::from(([127, 0, 0, 1], 7340))));
    args.data_dir = args.data_dir.or(file.data_dir);
    args.database_url = args.database_url.or(file.database_url);
    args.max_runs = Some(args.max_runs.or(file.max_runs).unwrap_or(2).clamp(1, 256));
    args.max_runs_per_repo = args.max_runs_per_repo.or(file.max_runs_per_repo);
    args.jobs = args.jobs.or(file.jobs);
    args.drain = args.drain || file.drain.unwrap_or(false);
    args.public_reads = args.public_reads || file.public_reads.unwrap_or(false);
    args.default_image = args.default_image.or(file.default_image);
    args.keep_releases = args.keep_releases.or(file.keep_releases);
    args.keep_runs = args.keep_runs.or(file.keep_runs);
    args.keep_days = args.keep_days.or(file.keep_days);
    args.log_format = args.log_format.or(file.log_format);
    if args.deploy_mount.is_empty() {
        args.deploy_mount = file.deploy_mount;
    }
    if args.gitops_local.is_empty() {
        args.gitops_local = file.gitops_local;
    }
    if args.tls_cert.is_none() && args.tls_key.is_none() {
        (args.tls_cert, args.tls_key) = (file.tls_cert, file.tls_key);
    }
    args.ca_file = args.ca_file.or(file.ca_file);
    args.public_url = args.public_url.or(file.public_url);
    args.smtp_url = args.smtp_url.or(file.smtp_url);
    args.smtp_from = args.smtp_from.or(file.smtp_from);
    args.otlp_endpoint = args.otlp_endpoint.or(file.otlp_endpoint);
    args.otlp_headers = args.otlp_headers.or(file.otlp_headers);
    if args.git_timeout.is_none()
        && let Some(duration) = &file.git_timeout
    {
        args.git_timeout =
            Some(ferry_config::duration::parse_duration(duration).map_err(Failure::usage)?);
    }
    if args.run_lease.is_none()
        && let Some(duration) = &file.run_lease
    {
        args.run_lease =
            Some(ferry_config::duration::parse_duration(duration).map_err(Failure::usage)?);
    }
    if args
        .run_lease
        .is_some_and(|d| d < std::time::Duration::from_secs(3))
    {
        return Err(Failure::usage(
            "--run-lease: at least 3s (a heartbeat renews it every third)",
        ));
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err(Failure::usage(
            "tls_cert and tls_key go together: give both or neither",
        ));
    }
    if args.cache_size.is_none()
        && let Some(size) = &file.cache_size
    {
        args.cache_size = Some(parse_size(size).map_err(Failure::usage)?);
    }
    if args.log_limit.is_none()
        && let Some(size) = &file.log_limit
    {
        args.log_limit = Some(parse_limit(size).map_err(Failure::usage)?);
    }
    if args.job_timeout.is_none()
        && let Some(duration) = &file.job_timeout
    {
        args.job_timeout =
            Some(ferry_config::duration::parse_duration(duration).map_err(Failure::usage)?);
    }
    Ok(args)
}

/// Who host steps run as: `--sandbox-user` (one user for all), else for a server running
/// as root a uid per job and deployment from `--sandbox-uids` (or its default range),
/// else nobody else (the server's own user).
fn step_users(
    user: Option<&str>,
    uids: Option<&str>,
) -> Result<Option<ferry_exec::sandbox::StepUsers>, Failure> {
    use ferry_exec::sandbox::{StepUser, StepUsers, UidRange};
    let root = nix::unistd::geteuid().is_root();
    if !root && let Some(asked) = user.filter(|u| *u != "none").or(uids) {
        return Err(Failure::usage(format!(
            "{asked}: only a server running as root runs steps as other users"
        )));
    }
    match user {
        Some("none") => return Ok(None),
        Some(user) => {
            return StepUser::parse(user)
                .map(|u| Some(StepUsers::One(u)))
                .map_err(|e| Failure::usage(format!("--sandbox-user: {e}")));
        }
        None if !root => return Ok(None),
        None => {}
    }
    let range = UidRange::parse(uids.unwrap_or(UidRange::DEFAULT))
        .map_err(|e| Failure::usage(format!("--sandbox-uids: {e}")))?;
    if let Some(clash) = range.clashes() {
        return Err(Failure::usage(format!(
            "--sandbox-uids {}: the range is in use ({clash}); choose a range no one uses, \
             or one user for every job with --sandbox-user",
            uids.unwrap_or(UidRange::DEFAULT)
        )));
    }
    let range = range
        .with_sweeper(std::env::current_exe().ok())
        .with_locks(std::path::Path::new("/run/ferry"))
        .map_err(|e| Failure::usage(format!("--sandbox-uids: {e}")))?;
    Ok(Some(StepUsers::Range(std::sync::Arc::new(range))))
}

/// The Docker engine's socket (`DOCKER_HOST`'s `unix://` path, else
/// `/var/run/docker.sock`), if this process's user may connect to it.
fn reachable_docker_socket() -> Option<PathBuf> {
    use nix::unistd::{AccessFlags, access};
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => PathBuf::from(host.strip_prefix("unix://")?),
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    let meta = std::fs::metadata(&socket).ok()?;
    use std::os::unix::fs::FileTypeExt;
    (meta.file_type().is_socket() && access(&socket, AccessFlags::R_OK | AccessFlags::W_OK).is_ok())
        .then_some(socket)
}

/// `--gitops-local` directories are absolute and not in the data directory.
fn check_gitops_local(dirs: &[PathBuf], data: &std::path::Path) -> Result<(), Failure> {
    let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    for dir in dirs {
        if !dir.is_absolute() {
            return Err(Failure::usage(format!(
                "--gitops-local {}: write an absolute path",
                dir.display()
            )));
        }
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if real.starts_with(&data) {
            return Err(Failure::usage(format!(
                "--gitops-local {}: it lies in the data directory {}",
                dir.display(),
                data.display()
            )));
        }
    }
    Ok(())
}

/// `--deploy-mount` directories are absolute and never hold or lie in the data
/// directory (a deployment mounting it would read the key and every secret).
fn check_deploy_mounts(dirs: &[PathBuf], data: &std::path::Path) -> Result<(), Failure> {
    let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    for dir in dirs {
        if !dir.is_absolute() {
            return Err(Failure::usage(format!(
                "--deploy-mount {}: write an absolute path",
                dir.display()
            )));
        }
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        if data.starts_with(&real) || real.starts_with(&data) {
            return Err(Failure::usage(format!(
                "--deploy-mount {}: deployments may not mount the data directory {} or \
                 anything in it",
                dir.display(),
                data.display()
            )));
        }
        // A container that mounts one could swap a directory on the other's path for a
        // link, and Docker resolves the path again when it starts a container.
        for other in dirs.iter().filter(|o| *o != dir) {
            let other_real = std::fs::canonicalize(other).unwrap_or_else(|_| other.clone());
            if real.starts_with(&other_real) {
                return Err(Failure::usage(format!(
                    "--deploy-mount {}: it lies in --deploy-mount {}, and a container that \
                     mounts that one could swap a part of its path for a link; allow one \
                     or the other",
                    dir.display(),
                    other.display()
                )));
            }
        }
    }
    Ok(())
}

/// `$XDG_DATA_HOME/ferry`; else, for root, `/var/lib/ferry` (a system service's place,
/// which the users that run host steps can pass through; `/root` is closed to them);
/// else `~/.local/share/ferry`.
fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ferry");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ferry");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/ferry"),
        None => PathBuf::from(".ferry-server"),
    }
}

/// This data directory's server identity, kept across restarts so that a restarted
/// server recognises the runs it was executing.
fn server_id(data: &std::path::Path) -> Result<String, Failure> {
    let file = data.join("server-id");
    match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("ferry-{}", uuid::Uuid::now_v7().simple());
            std::fs::write(&file, &id)
                .map_err(|e| Failure::failed(format!("cannot write {}: {e}", file.display())))?;
            Ok(id)
        }
    }
}

impl ServeArgs {
    /// `ferry up`'s server: the defaults, read from no flag, file or variable (a
    /// FERRY_DATABASE_URL set for a real server must not receive a demo), with the
    /// user's own code run with the user's rights, as `ferry run` runs it.
    pub(crate) fn for_up() -> ServeArgs {
        ServeArgs {
            host_sandbox: "off".into(),
            deploy_sandbox: "off".into(),
            ..ServeArgs::default()
        }
    }
}

/// A server made ready to serve: its state, bound to its address.
pub(crate) struct Ready {
    pub state: AppState,
    pub store: Store,
    pub listener: tokio::net::TcpListener,
    pub tls: Option<Arc<ferry_server::tls::ServerConfig>>,
    pub addr: SocketAddr,
    pub data: PathBuf,
    /// The first admin's token, when this start created it.
    pub admin_token: Option<String>,
    pub drain: bool,
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ready({})", self.addr)
    }
}

pub async fn serve(args: ServeArgs) -> Result<u8, Failure> {
    let ready = ready(args, "info").await?;
    if let Some(token) = &ready.admin_token {
        eprintln!(
            "ferry: created the user `admin`; its token is shown only this once:\n\n    {token}\n"
        );
    }
    let scheme = if ready.tls.is_some() { "https" } else { "http" };
    eprintln!(
        "ferry: serving {scheme}://{addr}/api/v1 (the web UI at {scheme}://{addr}/; data in {})",
        ready.data.display(),
        addr = ready.addr,
    );
    let Ready {
        state,
        store,
        listener,
        tls,
        drain,
        ..
    } = ready;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let forced = state.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!(
            "ferry: stopping: {}",
            if drain {
                "waiting for running runs (again to cancel them)"
            } else {
                "cancelling running runs"
            }
        );
        let _ = stop_tx.send(());
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("ferry: cancelling running runs");
        forced.force_stop();
    });
    ferry_server::serve(listener, tls, state, async move {
        let _ = stop_rx.await;
    })
    .await
    .map_err(|e| Failure::failed(format!("the server failed: {e}")))?;
    store.close().await;
    eprintln!("ferry: stopped");
    Ok(exit::OK)
}

/// Everything `ferry serve` does before it serves: settings merged, the log set up
/// (at `log_level` unless FERRY_LOG or RUST_LOG say), the store, the engine, the
/// deliverer, the listener bound.
pub(crate) async fn ready(args: ServeArgs, log_level: &str) -> Result<Ready, Failure> {
    let args = merge(args)?;
    crate::logging::init_or(args.log_format.unwrap_or_default(), log_level)
        .map_err(Failure::usage)?;
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7340)));
    let max_runs = args.max_runs.unwrap_or(2);
    if let Some(limit) = args.git_timeout.filter(|d| !d.is_zero()) {
        ferry_source::git::set_timeout(limit);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(ferry_server::tls::server_config(cert, key).map_err(Failure::usage)?)
        }
        _ => None,
    };
    let ca = match &args.ca_file {
        Some(file) => Some(crate::client::read_ca(file)?),
        None => None,
    };
    // Who host steps run as, checked before anything is written.
    let users = match args.host_sandbox.as_str() {
        "off" => None,
        _ => step_users(args.sandbox_user.as_deref(), args.sandbox_uids.as_deref())?,
    };
    if args.host_sandbox != "off"
        && users.is_none()
        && let Some(socket) = reachable_docker_socket()
    {
        return Err(Failure::usage(format!(
            "host steps and releases' host code would run as this server's user, which may \
             use the Docker socket {} (and through it the whole host; Landlock does not \
             govern connecting to it): run the server as root (steps then run as uids of \
             their own), or as a user without access to Docker, or --host-sandbox off for \
             trusted code only",
            socket.display()
        )));
    }
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data)
        .map_err(|e| Failure::failed(format!("cannot create {}: {e}", data.display())))?;
    let store = match &args.database_url {
        Some(url) => Store::open_url(url, &data).await,
        None => Store::open(&data).await,
    }
    .map_err(|e| match e {
        ferry_store::Error::Url(_) => Failure::usage(e.to_string()),
        e => Failure::failed(format!("cannot open the store: {e}")),
    })?;
    let jobs = args.jobs.map(|n| n as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let mut work_root = data.join("work");
    let mut config = Config {
        data_dir: data.clone(),
        work_root: work_root.clone(),
        max_runs: max_runs as usize,
        jobs_per_run: jobs,
        server_id: server_id(&data)?,
        lease: args.run_lease.unwrap_or(std::time::Duration::from_secs(30)),
        drain: args.drain,
        watch_tick: std::time::Duration::from_secs(1),
        public_reads: args.public_reads,
        max_runs_per_repo: args
            .max_runs_per_repo
            .map(|n| n as usize)
            .unwrap_or(max_runs as usize),
        keep_runs: args.keep_runs.map(|n| n as usize),
        keep_for: args
            .keep_days
            .map(|d| std::time::Duration::from_secs(u64::from(d) * 86_400)),
    };
    // Checked before anything is written for users (the first admin's token).
    check_deploy_mounts(&args.deploy_mount, &data)?;
    check_gitops_local(&args.gitops_local, &data)?;
    let sandbox = match args.host_sandbox.as_str() {
        "off" => {
            eprintln!("ferry: host jobs are not sandboxed (--host-sandbox off)");
            None
        }
        _ => {
            if let Some(u) = users.as_ref().map(ferry_exec::sandbox::StepUsers::probe) {
                ferry_exec::sandbox::share_work_only(&data).map_err(Failure::failed)?;
                // A data directory the step user cannot pass through (under /root, or
                // in a private temporary directory): workspaces go where it can.
                if let Some(why) = u.cannot_reach(&work_root) {
                    // The server id's random end: not guessed by another local user.
                    let sid = &config.server_id;
                    let id = &sid[sid.len().saturating_sub(16)..];
                    work_root =
                        ferry_exec::sandbox::private_work_root(id).map_err(Failure::failed)?;
                    config.work_root = work_root.clone();
                    eprintln!("ferry: workspaces go to {} ({why})", work_root.display());
                }
            }
            let sandbox = ferry_exec::sandbox::Sandbox::default()
                .with_read(args.sandbox_read.iter().cloned())
                .with_write(args.sandbox_write.iter().cloned())
                .with_users(users)
                // Each job's processes start from a helper process of its own, never
                // from a thread of the server (see `ferry_exec::helper`).
                .with_helper(std::env::current_exe().ok());
            match sandbox.check(&data, &work_root) {
                Ok(ferry_exec::sandbox::Enforced::Fully) => {}
                Ok(ferry_exec::sandbox::Enforced::Partially(why)) => {
                    eprintln!("ferry: the host-job sandbox is partly enforced: {why}");
                }
                Err(why) => {
                    return Err(Failure::usage(format!(
                        "host jobs cannot be sandboxed: {why} (--host-sandbox off runs them unsandboxed)"
                    )));
                }
            }
            Some(sandbox)
        }
    };
    let deploy_sandbox = match (&sandbox, args.deploy_sandbox.as_str()) {
        (None, _) | (_, "off") => {
            eprintln!(
                "ferry: releases' host code (deploy scripts, processes, command probes) \
                 runs with the server's rights"
            );
            None
        }
        (Some(sandbox), _) => {
            if let Some(user) = sandbox
                .user
                .as_ref()
                .map(ferry_exec::sandbox::StepUsers::probe)
                && let Some(why) = user.cannot_reach(&data.join("deploy"))
            {
                eprintln!(
                    "ferry: deploy scripts and processes on the host will fail: they run as \
                     uid {} ({why}); choose a --data-dir it can reach or --deploy-sandbox off",
                    user.uid
                );
            }
            Some(sandbox.clone())
        }
    };
    // The key that seals secrets, registry logins and webhook secrets.
    let key = ferry_store::SecretKey::load_or_create(&data)
        .map_err(|e| Failure::failed(format!("cannot load the secret key: {e}")))?;
    let admin_token = ferry_server::prepare(&store, &config, &key)
        .await
        .map_err(|e| Failure::failed(format!("cannot prepare the store: {e}")))?;
    // Jobs' limits, and deploy scripts' and deployment logs' too.
    let log_limit = match args.log_limit {
        Some(0) => None,
        limit => Some(limit.unwrap_or(ferry_engine::DEFAULT_LOG_LIMIT)),
    };
    let job_timeout = match args.job_timeout {
        Some(d) if d.is_zero() => None,
        timeout => Some(timeout.unwrap_or(DEFAULT_JOB_TIMEOUT)),
    };
    let engine = Engine::new(
        store.clone(),
        Arc::new(LocalExecutor {
            tracker: Some(ferry_exec::orphans::Tracker::new(
                ferry_exec::orphans::tracker_dir(&data),
            )),
            sandbox,
            ..LocalExecutor::default()
        }),
        EngineConfig {
            concurrency: jobs,
            work_root,
            keep_workspaces: false,
            cache_max_bytes: args
                .cache_size
                .unwrap_or(ferry_engine::cache::DEFAULT_MAX_BYTES),
            log_limit,
            job_timeout,
        },
    );
    let engine = engine.with_secret_key(key.clone());
    // Docker is optional: without it, jobs with an `image:` and `docker` targets fail
    // with the reason.
    let docker = match ferry_exec::DockerExecutor::connect().await {
        Ok(docker) => {
            let removed = docker.remove_leftovers().await;
            if removed > 0 {
                eprintln!("ferry: removed {removed} container(s) left by an earlier server");
            }
            Some(Arc::new(docker))
        }
        Err(e) => {
            eprintln!("ferry: {e}; jobs with an `image:` will fail");
            None
        }
    };
    let engine = match &docker {
        Some(docker) => engine
            .with_containers(docker.clone())
            .with_default_image(args.default_image.clone()),
        None => engine,
    };
    let keep = args.keep_releases.map(|n| n as usize);
    let state = AppState::new(store.clone(), engine, config, key).map_deliverer(|d| {
        d.with_retention(keep)
            .with_docker(docker)
            .with_mounts(args.deploy_mount.clone())
            .with_gitops_local(args.gitops_local.clone())
            .with_sandbox(deploy_sandbox)
            .with_limits(job_timeout, log_limit)
            .with_ca(ca)
    });
    let ca_pem = match &args.ca_file {
        Some(file) => Some(
            std::fs::read(file).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?,
        ),
        None => None,
    };
    let state = state
        .with_notifications(ferry_server::notify::NotifyConfig {
            public_url: args.public_url.clone(),
            smtp_url: args.smtp_url.clone(),
            smtp_from: args.smtp_from.clone(),
            ca_pem: ca_pem.clone(),
        })
        .map_err(Failure::usage)?;
    let state = match trace_config(&args, ca_pem)? {
        Some(config) => state.with_traces(config),
        None => state,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::failed(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::failed(e.to_string()))?;
    Ok(Ready {
        state,
        store,
        listener,
        tls,
        addr,
        data,
        admin_token,
        drain: args.drain,
    })
}

/// `ferry user add`: a user and its first token, straight into a server's store.
pub async fn user_add(
    name: &str,
    role: &str,
    groups: &[String],
    forge: &[String],
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
) -> Result<u8, Failure> {
    let role = ferry_server::Role::parse(role)
        .ok_or_else(|| Failure::usage("--role must be viewer, developer, approver or admin"))?;
    let forge = forge
        .iter()
        .map(|f| {
            ferry_store::forge_identity(f).map_err(|e| Failure::usage(format!("--forge: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = data_dir.unwrap_or_else(default_data_dir);
    let store = match &database_url {
        Some(url) => Store::open_url(url, &data).await,
        None => Store::open(&data).await,
    }
    .map_err(|e| Failure::failed(format!("cannot open the store: {e}")))?;
    for identity in &forge {
        if store.user_of_forge_identity(identity).await?.is_some() {
            store.close().await;
            return Err(Failure::usage(format!(
                "--forge {identity}: another user is that account"
            )));
        }
    }
    let (user, token) = ferry_server::auth::create_user_with_token(&store, name, role)
        .await
        .map_err(|e| match e {
            ferry_store::Error::Conflict(what) => Failure::usage(format!("{what} already exists")),
            e => Failure::failed(e.to_string()),
        })?;
    for group in groups {
        store.add_group_member(group, &user.id).await?;
    }
    for identity in &forge {
        store.link_forge_identity(&user.id, identity).await?;
    }
    store.close().await;
    eprintln!(
        "ferry: created the {} `{}`; its token is shown only this once:",
        role.as_str(),
        user.name
    );
    println!("{token}");
    Ok(exit::OK)
}

/// Where traces go, from `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// the full URL) and `--otlp-headers`; none without an endpoint.
fn trace_config(
    args: &ServeArgs,
    ca_pem: Option<Vec<u8>>,
) -> Result<Option<ferry_server::traces::TraceConfig>, Failure> {
    let full = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let url = match (full, &args.otlp_endpoint) {
        (Some(full), _) => {
            ferry_server::traces::traces_url(&full)
                .map_err(|e| Failure::usage(format!("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: {e}")))?;
            full
        }
        (None, Some(base)) => ferry_server::traces::traces_url(base)
            .map_err(|e| Failure::usage(format!("--otlp-endpoint: {e}")))?,
        (None, None) => return Ok(None),
    };
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var)
            && !p.is_empty()
            && p != "http/protobuf"
        {
            return Err(Failure::usage(format!(
                "{var}={p}: Ferry exports traces over OTLP/HTTP with protobuf (`http/protobuf`)"
            )));
        }
    }
    let headers = match &args.otlp_headers {
        Some(list) => ferry_server::traces::parse_headers(list).map_err(Failure::usage)?,
        None => Vec::new(),
    };
    Ok(Some(ferry_server::traces::TraceConfig {
        url,
        headers,
        ca_pem,
    }))
}
