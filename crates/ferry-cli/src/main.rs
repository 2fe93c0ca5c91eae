//! `ferry`: the command-line front end. Thin: it parses arguments, calls the crates
//! that do the work, and turns results into output and exit codes.

mod args;
mod cache;
mod client;
mod deliver;
mod lint;
mod local;
mod logging;
mod logs;
mod output;
mod registry;
mod run;
mod serve;
mod style;
mod up;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (documented in docs/pipeline.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// A job failed (or lint found problems is 2, see below).
    pub const FAILED: u8 = 1;
    /// Invalid configuration or usage.
    pub const USAGE: u8 = 2;
    /// Interrupted by Ctrl-C or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

/// An error that ends the command: a message and the exit code that goes with it.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILED,
            message: message.into(),
        }
    }
    /// Already reported (e.g. diagnostics were printed): exit quietly with `code`.
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            message: String::new(),
        }
    }
}

impl From<ferry_store::Error> for Failure {
    fn from(e: ferry_store::Error) -> Self {
        Failure::failed(e.to_string())
    }
}

fn main() -> ExitCode {
    // A sandboxed job's helper (see `ferry_exec::helper`): nothing else of Ferry runs.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(ferry_exec::helper::ARG))
    {
        ferry_exec::helper::run();
    }
    // The end of a job's own uid: every process of it is killed (see `UidRange`).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(ferry_exec::helper::SWEEP_ARG))
    {
        ferry_exec::helper::sweep_uid_main();
    }
    let cli = args::Cli::parse();
    let serving = matches!(cli.command, args::Command::Serve(_) | args::Command::Up(_));
    // Commands other than `serve` log only when asked (FERRY_LOG), so that they start
    // fast; `FERRY_LOG=debug` shows each phase's span with its time.
    if !serving
        && std::env::var_os("FERRY_LOG").is_some()
        && let Err(e) = logging::init(logging::LogFormat::Human)
    {
        eprintln!("{}", style::error_line(&e));
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    if serving {
        // The server has stopped its work and closed its store; do not wait for
        // blocking tasks still reading (e.g. a stuck stdin).
        runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    } else {
        // A command's work is done and stored: its runtime ends with the process.
        // Shutting it down would drop the task that returns the store's connection to
        // its pool, closing the connection, and closing the last SQLite connection
        // checkpoints the WAL (two fsyncs), which the exit would then cut short.
        std::mem::forget(runtime);
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", style::error_line(&f.message));
            }
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: args::Cli) -> Result<u8, Failure> {
    use args::Command;
    match cli.command {
        Command::Lint(a) => lint::lint(a),
        Command::Schema => {
            let schema = ferry_config::schema::schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(exit::OK)
        }
        Command::Plan(a) => run::plan(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Runs(a) => logs::runs(a).await,
        Command::Logs(a) => logs::logs(a).await,
        Command::Serve(a) => serve::serve(*a).await,
        Command::Up(a) => up::up(a).await,
        Command::Trigger {
            repo,
            git_ref,
            follow,
            vars,
            server,
        } => client::trigger(&server, &repo, &git_ref, &vars, follow).await,
        Command::Cancel { run, server } => client::cancel(&server, &run).await,
        Command::Rerun {
            run,
            failed,
            server,
        } => client::rerun(&server, &run, failed).await,
        Command::Repos { command, server } => client::repos(&server, command).await,
        Command::Cache(a) => cache::cache(a).await,
        Command::Registry(a) => registry::registry(a).await,
        Command::Releases { release, args } => deliver::releases(args, release).await,
        Command::Promote { release, to, args } => deliver::promote(args, &release, &to).await,
        Command::Approve {
            deployment,
            comment,
            plan,
            args,
        } => deliver::decide(args, &deployment, comment, plan, true).await,
        Command::Reject {
            deployment,
            comment,
            plan,
            args,
        } => deliver::decide(args, &deployment, comment, plan, false).await,
        Command::Envs {
            command: None,
            args,
        } => deliver::envs(args).await,
        Command::Envs {
            command: Some(args::EnvsCommand::Destroy { env }),
            args,
        } => deliver::destroy(args, &env).await,
        Command::Infra {
            command: args::InfraCommand::State { env, version, args },
        } => deliver::infra_state(args, &env, version).await,
        Command::Status { env, args } => deliver::status(args, &env).await,
        Command::Dora { env, since, args } => deliver::dora(args, env, since).await,
        Command::Notifications {
            command: args::NotificationsCommand::Log { limit, args },
        } => deliver::notifications(args, limit).await,
        Command::Deployments { env, args } => deliver::deployments(args, env).await,
        Command::Deployment {
            deployment,
            log,
            args,
        } => deliver::deployment(args, &deployment, log).await,
        Command::Output { env, args } => deliver::output(args, &env).await,
        Command::Rollback { env, to, args } => deliver::rollback(args, &env, to).await,
        Command::Vars { command, env, args } => deliver::vars(args, env, command).await,
        Command::Secrets { command, env, args } => deliver::secrets(args, env, command).await,
        Command::Audit { limit, args } => deliver::audit(args, limit).await,
        Command::Deliveries {
            limit,
            redeliver,
            approve,
            args,
        } => deliver::deliveries(args, limit, redeliver, approve).await,
        Command::User {
            command:
                args::UserCommand::Add {
                    name,
                    role,
                    groups,
                    forge,
                    data_dir,
                    database_url,
                },
        } => serve::user_add(&name, &role, &groups, &forge, data_dir, database_url).await,
    }
}
