//! `ferry run` and `ferry plan`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_engine::{Engine, EngineConfig, Source};
use ferry_exec::LocalExecutor;
use ferry_plan::{Decision, Event, EventKind, Plan};
use ferry_source::git;
use ferry_store::Status;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::args::RunArgs;
use crate::output::{Mode, Terminal};
use crate::{Failure, exit, lint, local, style};

/// What a run is about: the event, the pipeline, and where its source is.
struct Prepared {
    root: PathBuf,
    plan: Plan,
    source: Source,
    dirty: bool,
    /// A directory to remove after the run (an exported commit).
    export: Option<PathBuf>,
}

const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// The stand-in commit of a repository without commits, or of a plain directory.
fn no_commit() -> git::Commit {
    git::Commit {
        sha: NO_COMMIT.into(),
        author: String::new(),
        message: String::new(),
        changed_files: Vec::new(),
    }
}

fn branch_of(head_ref: &str) -> Option<String> {
    head_ref.strip_prefix("refs/heads/").map(str::to_string)
}

/// The directory of the pipeline: the nearest one from `dir` up to the repository root
/// that holds a `.ferry.yml` (so `ferry run examples/hello` runs that example), else
/// the root. Returned relative to the root.
fn project_prefix(root: &Path, dir: &Path) -> PathBuf {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let root_c = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut here = dir.as_path();
    while let Ok(rel) = here.strip_prefix(&root_c) {
        if here.join(ferry_config::FILE_NAME).is_file() {
            return rel.to_path_buf();
        }
        match here.parent() {
            Some(p) => here = p,
            None => break,
        }
    }
    PathBuf::new()
}

#[tracing::instrument(level = "debug", skip_all)]
async fn prepare(args: &RunArgs, root: local::Root) -> Result<Prepared, Failure> {
    let git_repo = root.git;
    let root = root.path;
    let prefix = project_prefix(&root, &args.dir);
    let kind = match &args.event {
        Some(e) => EventKind::parse(e).ok_or_else(|| {
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            Failure::usage(format!(
                "unknown event `{e}`; events are: {}",
                names.join(", ")
            ))
        })?,
        None if args.tag.is_some() => EventKind::Tag,
        None => EventKind::Push,
    };
    let (commit, wt, files, export) = match &args.commit {
        _ if !git_repo => {
            if args.commit.is_some() {
                return Err(Failure::usage(format!(
                    "--commit needs a git repository, and {} is not in one",
                    root.display()
                )));
            }
            let files = ferry_engine::directory_files(&root.join(&prefix))
                .map_err(|e| Failure::failed(format!("cannot list {}: {e}", root.display())))?;
            (no_commit(), None, Some(Arc::new(files)), None)
        }
        Some(rev) => {
            let (commit, wt) = tokio::join!(git::commit(&root, rev), git::working_tree(&root));
            let commit = commit.map_err(Failure::usage)?;
            let dir = local::work_root().join(format!("source-{}", uuid::Uuid::now_v7()));
            git::export(&root, &commit.sha, &dir)
                .await
                .map_err(|e| Failure::failed(format!("cannot check out {rev}: {e}")))?;
            (commit, wt.ok(), None, Some(dir))
        }
        None => {
            let snapshot = git::snapshot(&root).await.map_err(Failure::failed)?;
            let files: Vec<PathBuf> = snapshot
                .files
                .into_iter()
                .filter_map(|f| f.strip_prefix(&prefix).ok().map(Path::to_path_buf))
                .collect();
            (
                snapshot.commit.unwrap_or_else(no_commit),
                Some(snapshot.tree),
                Some(Arc::new(files)),
                None,
            )
        }
    };
    let source_root = export.clone().unwrap_or_else(|| root.clone()).join(&prefix);
    let result = async {
        let file = source_root.join(ferry_config::FILE_NAME);
        let display = match &args.commit {
            Some(rev) => format!(
                "{} (at {rev})",
                prefix.join(ferry_config::FILE_NAME).display()
            ),
            None => display_path(&source_root.join(ferry_config::FILE_NAME)),
        };
        let pipeline = lint::load(&file, &display)?;
        let dirty = args.commit.is_none() && wt.as_ref().is_some_and(|w| w.dirty);
        let mut changed = commit.changed_files.clone();
        if args.commit.is_none()
            && let Some(w) = &wt
        {
            changed.extend(w.changed_files.iter().cloned());
            changed.sort();
            changed.dedup();
        }
        let branch = args.branch.clone().or_else(|| {
            if args.tag.is_some() {
                None
            } else {
                wt.as_ref().and_then(|w| branch_of(&w.head_ref))
            }
        });
        let git_ref = match (&args.tag, &branch) {
            (Some(t), _) => format!("refs/tags/{t}"),
            (None, Some(b)) => format!("refs/heads/{b}"),
            (None, None) => "HEAD".into(),
        };
        let event = Event {
            kind,
            branch,
            tag: args.tag.clone(),
            git_ref,
            sha: commit.sha.clone(),
            author: commit.author.clone(),
            message: commit.message.clone(),
            changed_files: if commit.sha == NO_COMMIT {
                None
            } else {
                Some(changed)
            },
            pull_request: None,
        };
        let options = ferry_plan::Options {
            only: args.jobs_only.clone(),
        };
        let plan = ferry_plan::plan(&pipeline, &event, &options)
            .map_err(|e| Failure::usage(e.to_string()))?;
        Ok::<_, Failure>((plan, dirty))
    }
    .await;
    match result {
        Ok((plan, dirty)) => Ok(Prepared {
            root,
            plan,
            source: Source {
                root: source_root,
                files,
            },
            dirty,
            export,
        }),
        Err(e) => {
            if let Some(dir) = &export {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e)
        }
    }
}

/// A path as the user would like to read it: relative to the current directory if inside.
fn display_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}

pub async fn plan(args: RunArgs) -> Result<u8, Failure> {
    let root = local::repo_root(&args.dir).await?;
    let prepared = prepare(&args, root).await?;
    if let Some(dir) = &prepared.export {
        let _ = std::fs::remove_dir_all(dir);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&prepared.plan).unwrap_or_default()
        );
    } else {
        print!(
            "{}",
            render_plan(
                &prepared.plan,
                prepared.dirty,
                style::color_enabled(std::io::stdout().is_terminal())
            )
        );
    }
    Ok(exit::OK)
}

/// The plan as text: stages in order, parallel jobs together, skips with reasons.
pub fn render_plan(plan: &Plan, dirty: bool, color: bool) -> String {
    let ev = &plan.event;
    let mut out = String::new();
    let at = match (&ev.tag, &ev.branch) {
        (Some(t), _) => format!("tag {t}"),
        (None, Some(b)) => format!("branch {b}"),
        (None, None) => "a detached HEAD".into(),
    };
    out.push_str(&format!(
        "Plan for {} on {at} at {}{}\n",
        ev.kind,
        ev.short_sha(),
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    ));
    if let Some(reason) = &plan.not_triggered {
        out.push_str(&format!("note: a server would not run this: {reason}\n"));
    }
    let width = plan
        .jobs
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(0);
    for (n, stage) in plan.stages().iter().enumerate() {
        let running = stage.iter().filter(|j| j.runs()).count();
        let parallel = if running > 1 {
            format!(" — {running} jobs in parallel")
        } else {
            String::new()
        };
        out.push_str(&format!("\nstage {}{parallel}\n", n + 1));
        for job in stage {
            let needs = if job.needs.is_empty() {
                String::new()
            } else {
                format!("  needs: {}", job.needs.join(", "))
            };
            match &job.decision {
                Decision::Run => {
                    let line = format!(
                        "  {} {:<width$}{needs}",
                        style::paint("run ", "32", color),
                        job.name
                    );
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
                Decision::Skip { reason } => out.push_str(&format!(
                    "  {} {:<width$}  {}\n",
                    style::paint("skip", "90", color),
                    job.name,
                    style::paint(&format!("skipped: {reason}"), "90", color)
                )),
                Decision::Reuse { number, .. } => out.push_str(&format!(
                    "  {} {:<width$}  reused from run {number}\n",
                    style::paint("keep", "90", color),
                    job.name
                )),
            }
        }
    }
    let runs = plan.jobs.iter().filter(|j| j.runs()).count();
    out.push_str(&format!("\n{runs} of {} jobs will run\n", plan.jobs.len()));
    out
}

pub async fn run(args: RunArgs) -> Result<u8, Failure> {
    if args.dry_run {
        return plan(args).await;
    }
    let root = local::repo_root(&args.dir).await?;
    let (prepared, opened) = tokio::join!(
        prepare(&args, root.clone()),
        local::open_root(root.path.clone(), &args.store)
    );
    let prepared = prepared?;
    let local = match opened {
        Ok(l) => l,
        Err(e) => {
            if let Some(dir) = &prepared.export {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    debug_assert_eq!(local.root, prepared.root);
    let result = execute(&args, &prepared, &local).await;
    if let Some(dir) = &prepared.export {
        let _ = std::fs::remove_dir_all(dir);
    }
    // The store is not closed: every write is committed (the writer was flushed), and
    // closing would checkpoint the SQLite WAL into the database with two fsyncs (~2 ms
    // of a one-step run). The WAL stays for the next command, which SQLite reads as
    // usual; a command's commits checkpoint it once it holds 64 pages
    // (`ferry_store::COMMAND_CHECKPOINT_PAGES`), so it stays small.
    result
}

#[tracing::instrument(level = "debug", skip_all)]
async fn execute(args: &RunArgs, prepared: &Prepared, local: &local::Local) -> Result<u8, Failure> {
    let plan = &prepared.plan;
    let mode = if args.json {
        Mode::Json
    } else if args.quiet {
        Mode::Quiet
    } else {
        Mode::Text
    };
    let tty = std::io::stdout().is_terminal();
    if mode == Mode::Text
        && let Some(reason) = &plan.not_triggered
    {
        eprintln!(
            "note: a server would not run this event ({reason}); running it because you asked"
        );
    }
    let concurrency = args.concurrency.map(|n| n as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    // What an earlier `ferry run` killed with -9 left running ends now.
    let tracker =
        ferry_exec::orphans::Tracker::new(ferry_exec::orphans::tracker_dir(local.store.data_dir()));
    let reaper = tracker.clone();
    let _ = tokio::task::spawn_blocking(move || reaper.reap())
        .instrument(tracing::debug_span!("reap"))
        .await;
    let mut executor = LocalExecutor {
        tracker: Some(tracker),
        ..LocalExecutor::default()
    };
    if let Some(grace) = args.kill_grace {
        executor.kill_grace = grace;
    }
    let force = executor.force.clone();
    let mut engine = Engine::new(
        local.store.clone(),
        Arc::new(executor),
        EngineConfig {
            concurrency,
            work_root: local::work_root(),
            keep_workspaces: args.keep,
            cache_max_bytes: ferry_engine::cache::DEFAULT_MAX_BYTES,
            log_limit: match args.log_limit {
                Some(0) => None,
                limit => Some(limit.unwrap_or(ferry_engine::DEFAULT_LOG_LIMIT)),
            },
            job_timeout: None,
        },
    );
    // Docker only when some job has an image, services or an image build; without
    // Docker those jobs fail clearly.
    let uses_docker = |j: &ferry_plan::PlanJob| {
        j.image.is_some() || !j.services.is_empty() || j.build_image.is_some()
    };
    if plan.jobs.iter().any(|j| uses_docker(j) && j.runs()) {
        match ferry_exec::DockerExecutor::connect().await {
            Ok(docker) => engine = engine.with_containers(Arc::new(docker)),
            Err(e) => eprintln!("ferry: {e}; jobs with an `image:` cannot run"),
        }
        // Registry logins saved with `ferry registry login` are sealed with this key.
        match ferry_store::SecretKey::load_or_create(local.store.data_dir()) {
            Ok(key) => engine = engine.with_secret_key(key),
            Err(e) => eprintln!("ferry: cannot load the secret key: {e}"),
        }
    }
    let (run, job_ids) = engine
        .create_run(&local.repository_id, plan, prepared.dirty, None)
        .instrument(tracing::debug_span!("create_run"))
        .await?;
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let runnable = plan.jobs.iter().filter(|j| j.runs()).count();
    let terminal = Arc::new(Terminal::new(mode, &names, runnable, tty));
    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone(), force));
    let outcome = engine
        .execute(
            run,
            job_ids,
            plan.clone(),
            prepared.source.clone(),
            terminal.clone(),
            cancel.clone(),
        )
        .await;
    signals.abort();
    terminal.finish();
    let outcome = outcome?;
    if mode != Mode::Json {
        print_summary(local, &outcome.run, tty, args.keep).await?;
    }
    Ok(match outcome.status {
        Status::Success => exit::OK,
        Status::Cancelled => exit::INTERRUPTED,
        _ => exit::FAILED,
    })
}

/// Cancels the run on Ctrl-C or SIGTERM; a second one kills the steps without waiting
/// for them to exit gracefully.
async fn watch_signals(cancel: CancellationToken, force: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    let Ok(mut int) = signal(SignalKind::interrupt()) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("\nferry: interrupted, stopping running jobs (again to kill them at once)…");
    cancel.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("ferry: killing running jobs");
    force.cancel();
}

#[tracing::instrument(level = "debug", skip_all)]
async fn print_summary(
    local: &local::Local,
    run: &ferry_store::Run,
    tty: bool,
    keep: bool,
) -> Result<(), Failure> {
    let color = style::color_enabled(tty);
    let jobs = local.store.jobs(&run.id).await?;
    let run = local
        .store
        .run_by_number(&local.repository_id, run.number)
        .await?;
    let width = jobs
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(3);
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<width$}  {:<9}  {:>8}  TESTS\n",
        "JOB", "STATUS", "DURATION"
    ));
    for j in &jobs {
        let duration = match (j.started_at, j.finished_at) {
            (Some(s), Some(f)) if j.status != Status::Skipped => {
                style::duration((f - s).max(0) as u64)
            }
            _ => "-".into(),
        };
        let tests = match &j.tests {
            Some(t) => format!(
                "{} passed, {} failed{}",
                t.passed,
                t.failed,
                if t.skipped > 0 {
                    format!(", {} skipped", t.skipped)
                } else {
                    String::new()
                }
            ),
            None => "-".into(),
        };
        let status = format!("{:<9}", j.status.as_str());
        out.push_str(&format!(
            "{:<width$}  {}  {:>8}  {tests}\n",
            j.name,
            style::paint(&status, style::status_code(j.status), color),
            duration
        ));
    }
    for j in &jobs {
        if let Some(t) = &j.tests {
            for f in &t.failures {
                let first = f.message.lines().next().unwrap_or("");
                out.push_str(&format!(
                    "{} {}: {}: {first}\n",
                    style::paint("✗", "31", color),
                    j.name,
                    f.name
                ));
            }
        }
    }
    let cancelled: Vec<&str> = jobs
        .iter()
        .filter(|j| j.status == Status::Cancelled)
        .map(|j| j.name.as_str())
        .collect();
    if !cancelled.is_empty() {
        out.push_str(&format!("cancelled: {}\n", cancelled.join(", ")));
    }
    let took = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => style::duration((f - s).max(0) as u64),
        _ => "-".into(),
    };
    let verdict = match run.status {
        Status::Success => "succeeded",
        Status::Cancelled => "was cancelled",
        _ => "failed",
    };
    out.push_str(&format!(
        "\nrun {} {} in {took}{}\n",
        run.number,
        style::paint(verdict, style::status_code(run.status), color),
        if keep {
            format!(
                " (workspaces kept in {})",
                local::work_root().join(&run.id).display()
            )
        } else {
            String::new()
        }
    ));
    print!("{out}");
    Ok(())
}
