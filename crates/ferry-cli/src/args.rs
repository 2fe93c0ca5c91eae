//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Ferry: build, test, package, deploy — one fast binary.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline file and report every problem in it.
    Lint(LintArgs),
    /// Run the pipeline of a repository locally.
    Run(RunArgs),
    /// Show what `ferry run` would run, in which order, and what it would skip and why.
    Plan(RunArgs),
    /// Print the JSON Schema of `.ferry.yml`.
    Schema,
    /// List earlier local runs.
    Runs(RunsArgs),
    /// Show the logs of a run, or of one of its jobs.
    Logs(LogsArgs),
    /// Run the CI server: web UI, API, triggers, queue.
    Serve(Box<crate::serve::ServeArgs>),
    /// Ferry's whole loop on this machine: a server on a temporary directory, DIR's
    /// pipeline run, its release deployed to the environments that deploy on their
    /// own, the rest waiting; prints the web UI's and each environment's address.
    Up(crate::up::UpArgs),
    /// Ask a server to run a ref of a repository.
    Trigger {
        /// The repository's name on the server.
        repo: String,
        /// A branch, tag or commit (default: main).
        #[arg(default_value = "main")]
        git_ref: String,
        /// Stream the run's logs until it ends; exit with its outcome.
        #[arg(short, long)]
        follow: bool,
        /// A variable for every job, `NAME=value` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        server: crate::client::ServerArgs,
    },
    /// Cancel a run on a server.
    Cancel {
        run: String,
        #[command(flatten)]
        server: crate::client::ServerArgs,
    },
    /// Run a finished run again on a server.
    Rerun {
        run: String,
        /// Only the jobs that did not succeed.
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        server: crate::client::ServerArgs,
    },
    /// Manage the users of a server's store (run where the server's data lives).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// A server's repositories.
    Repos {
        #[command(subcommand)]
        command: crate::client::RepoCommand,
        #[command(flatten)]
        server: crate::client::ServerArgs,
    },
    /// List or clear the `cache:` entries of a repository.
    Cache(crate::cache::CacheArgs),
    /// Registry logins of a repository, for pulling and pushing images.
    Registry(crate::registry::RegistryArgs),
    /// A repository's releases, or one release with its digests (on a server).
    Releases {
        release: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Deploy RELEASE to an environment (waits for approval where the rule asks).
    Promote {
        release: String,
        #[arg(long = "to", value_name = "ENV")]
        to: String,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Approve a deployment (`ENV#N`) that waits for approval.
    Approve {
        deployment: String,
        #[arg(long)]
        comment: Option<String>,
        /// The Terraform plan decided on (SHA-256, or its first 12 hex digits, as `ferry
        /// deployment` shows it): refused if the deployment applies another plan now.
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Reject a deployment (`ENV#N`) that waits for approval.
    Reject {
        deployment: String,
        #[arg(long)]
        comment: Option<String>,
        /// The Terraform plan decided on (SHA-256, or its first 12 hex digits, as `ferry
        /// deployment` shows it): refused if the deployment applies another plan now.
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// An environment's Terraform state kept by the server: its versions, or one
    /// version's state (`--version N`, admins).
    Infra {
        #[command(subcommand)]
        command: InfraCommand,
    },
    /// Each environment: its live release, since when, who deployed and approved it;
    /// `ferry envs destroy ENV` destroys what its Terraform made.
    Envs {
        #[command(subcommand)]
        command: Option<EnvsCommand>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// DORA's four keys: deployment frequency, lead time for changes, change failure
    /// rate, time to restore (definitions in docs/delivery.md).
    Dora {
        /// One environment (default: every environment).
        #[arg(long)]
        env: Option<String>,
        /// The window: from this long ago until now (`30d`, `12h`).
        #[arg(long, default_value = "30d")]
        since: String,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Notifications of the repository: what was sent where, and every attempt.
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
    /// One environment: its live release, its health now and how its health changed.
    Status {
        env: String,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Deployments, newest first (of ENV when given).
    Deployments {
        env: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// One deployment: commits, digests and config changes against the live release.
    Deployment {
        deployment: String,
        /// Print what the deployment did instead (its log).
        #[arg(long)]
        log: bool,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// The output of ENV's process (process target), secrets masked.
    Output {
        env: String,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Deploy an earlier release to ENV again (default: the one live before).
    Rollback {
        env: String,
        #[arg(long = "to", value_name = "RELEASE")]
        to: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Variables of a repository or (with --env) an environment.
    Vars {
        #[command(subcommand)]
        command: crate::deliver::VarCommand,
        #[arg(long = "env", global = true, value_name = "ENV")]
        env: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Secrets of a repository or (with --env) an environment: names only are shown.
    Secrets {
        #[command(subcommand)]
        command: crate::deliver::SecretCommand,
        #[arg(long = "env", global = true, value_name = "ENV")]
        env: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// Webhook deliveries and what became of each (a run, or why none), newest first;
    /// `--redeliver ID` queues a failed or declined one again; `--approve ID` lets a
    /// fork's pull request awaiting approval run, untrusted.
    Deliveries {
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
        /// Deliver this delivery (a failed or declined one) again.
        #[arg(long, value_name = "ID", conflicts_with = "approve")]
        redeliver: Option<String>,
        /// Let this fork's pull request (awaiting approval) run, untrusted.
        #[arg(long, value_name = "ID")]
        approve: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
    /// The audit log: deployments, approvals, rollbacks, variable and secret changes.
    Audit {
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// A repository directory (its `.ferry.yml` is checked) or a pipeline file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Print diagnostics as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the store is: shared by the commands that read or write runs.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The data directory (default: `.ferry/` at the repository root).
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database (default: SQLite in the data directory); `postgres://…` for PostgreSQL.
    /// Log files stay in the data directory.
    #[arg(long, env = "FERRY_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The repository (any directory inside it).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Run a committed revision instead of the working tree.
    #[arg(long, value_name = "REF")]
    pub commit: Option<String>,
    /// The event to behave as: push, tag, pull_request, schedule, manual, api.
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// The branch (default: the current branch).
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// A tag (implies `--event tag` unless `--event` is given).
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,
    /// Run only this job and the jobs it needs (repeatable).
    #[arg(long = "job", value_name = "NAME")]
    pub jobs_only: Vec<String>,
    /// How many jobs may run at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: Option<u32>,
    /// Keep the jobs' workspaces after the run.
    #[arg(long)]
    pub keep: bool,
    /// Print the plan and do not run it (same as `ferry plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON event per line instead of text.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// How long a step gets after SIGTERM (timeout, Ctrl-C) before SIGKILL
    /// [default: 5s]; a second Ctrl-C kills at once.
    #[arg(long, env = "FERRY_KILL_GRACE", value_name = "DURATION", value_parser = ferry_config::duration::parse_duration)]
    pub kill_grace: Option<std::time::Duration>,
    /// The most output a job's log takes, e.g. `1g` [default: 256m]; past it the job
    /// fails. `0`: no limit.
    #[arg(long, env = "FERRY_LOG_LIMIT", value_name = "SIZE", value_parser = crate::serve::parse_limit)]
    pub log_limit: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The repository (any directory inside it).
    #[arg(short = 'C', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// How many runs to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// With a server: only this repository's runs.
    #[arg(long)]
    pub repo: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// List a server's runs instead of local ones.
    #[command(flatten)]
    pub server: crate::client::ServerArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's number (as `ferry runs` shows it), or `last`; with a server, its id.
    pub run: String,
    /// One job (its full name, or its name in the file for a single job).
    pub job: Option<String>,
    /// The repository (any directory inside it).
    #[arg(short = 'C', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// Prefix each line with the time it was written.
    #[arg(short, long)]
    pub timestamps: bool,
    /// With a server: stream the logs live until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each job's log (read from the end: as fast for a log of
    /// a gigabyte as of a kilobyte).
    #[arg(short = 'n', long, value_name = "N", conflicts_with_all = ["follow", "timestamps"])]
    pub tail: Option<u64>,
    /// Only lines FROM to TO of each job's log (1-based, both included; `FROM:` runs to
    /// the end, `N` is one line). Found from the log's index: as fast deep in a big log
    /// as at its start.
    #[arg(long, value_name = "FROM:TO", value_parser = parse_line_range, conflicts_with_all = ["follow", "tail"])]
    pub range: Option<LineRange>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Show a server's run (RUN is then its id) instead of a local one.
    #[command(flatten)]
    pub server: crate::client::ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print its first token (once).
    Add {
        name: String,
        /// viewer, developer, approver or admin.
        #[arg(long, default_value = "developer")]
        role: String,
        /// An approver group the user belongs to (`approval.from` can name it); repeat.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// A forge account the user is, `PROVIDER:LOGIN` (`github:alice`): approval
        /// rules' `not: [author, triggerer]` know the user by it; repeat.
        #[arg(long = "forge", value_name = "PROVIDER:LOGIN")]
        forge: Vec<String>,
        /// The server's data directory (default: as `ferry serve`).
        #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "FERRY_DATABASE_URL", value_name = "URL")]
        database_url: Option<String>,
    },
}

/// Which repository a command is about: the local one (`-C DIR`), or `--repo` on the
/// server given with `--server`.
#[derive(Debug, Args)]
pub struct RepoScope {
    /// The repository's directory (local mode).
    #[arg(short = 'C', long = "dir", default_value = ".", global = true)]
    pub dir: PathBuf,
    /// The repository on the server (with --server).
    #[arg(long, env = "FERRY_REPO", global = true)]
    pub repo: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub server: crate::client::ServerArgs,
}

impl RepoScope {
    pub fn remote(&self) -> bool {
        self.server.server.is_some()
    }

    /// A client of the server and the repository's name there.
    pub fn client(&self) -> Result<(crate::client::Client, String), crate::Failure> {
        let repo = self.repo.clone().ok_or_else(|| {
            crate::Failure::usage("with --server, name the repository with --repo")
        })?;
        Ok((crate::client::Client::new(&self.server)?, repo))
    }
}

/// Lines `first` to `last` of a log (1-based, both included; no `last`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub first: u64,
    pub last: Option<u64>,
}

impl LineRange {
    /// How many lines it takes (`None`: all to the end).
    pub fn count(&self) -> Option<u64> {
        self.last.map(|last| last - self.first + 1)
    }

    pub fn contains(&self, line: u64) -> bool {
        line >= self.first && self.last.is_none_or(|last| line <= last)
    }
}

/// `FROM:TO`, `FROM:` or `N`.
pub fn parse_line_range(text: &str) -> Result<LineRange, String> {
    let number = |part: &str, what: &str| -> Result<u64, String> {
        match part.trim().parse::<u64>() {
            Ok(0) => Err(format!("{what} must be 1 or more (lines count from 1)")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "`{part}` is not a line number (write FROM:TO, FROM: or N, e.g. 100:200)"
            )),
        }
    };
    let range = match text.split_once(':') {
        None => {
            let n = number(text, "the line")?;
            LineRange {
                first: n,
                last: Some(n),
            }
        }
        Some((first, "")) => LineRange {
            first: number(first, "FROM")?,
            last: None,
        },
        Some((first, last)) => LineRange {
            first: number(first, "FROM")?,
            last: Some(number(last, "TO")?),
        },
    };
    match range.last {
        Some(last) if last < range.first => {
            Err(format!("TO ({last}) comes before FROM ({})", range.first))
        }
        _ => Ok(range),
    }
}

#[cfg(test)]
mod tests {
    use super::{LineRange, parse_line_range};

    #[test]
    fn line_ranges() {
        let r = |first, last| Ok(LineRange { first, last });
        assert_eq!(parse_line_range("100:200"), r(100, Some(200)));
        assert_eq!(parse_line_range("7:"), r(7, None));
        assert_eq!(parse_line_range("42"), r(42, Some(42)));
        assert_eq!(parse_line_range("5:5"), r(5, Some(5)));
        for (bad, says) in [
            ("0:3", "FROM must be 1 or more"),
            ("3:0", "TO must be 1 or more"),
            ("9:3", "TO (3) comes before FROM (9)"),
            ("a:3", "`a` is not a line number"),
            (":3", "`` is not a line number"),
            ("", "`` is not a line number"),
        ] {
            let e = parse_line_range(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(r(3, Some(5)).map(|r| r.count()), Ok(Some(3)));
        assert!(
            LineRange {
                first: 3,
                last: None
            }
            .contains(1_000_000)
        );
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum NotificationsCommand {
    /// Notifications, newest first, with each attempt.
    Log {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Destroy what ENV's Terraform (`infra:`) made: a deployment that plans the
    /// destroy, waits for approval of that plan (`ferry approve ENV#N`), applies it and
    /// stops what is live.
    Destroy { env: String },
}

#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// The versions of ENV's Terraform state, newest first; `--version N` (or
    /// `latest`) prints that version's state.
    State {
        env: String,
        #[arg(long, value_name = "N|latest")]
        version: Option<String>,
        #[command(flatten)]
        args: crate::deliver::DeliverArgs,
    },
}
