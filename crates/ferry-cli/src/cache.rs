//! `ferry cache list|clear`: the `cache:` entries of a repository, in the local data
//! directory or (with `--server`) on a server.

use clap::{Args, Subcommand};
use ferry_engine::cache::{CacheEntry, CacheStore, DEFAULT_MAX_BYTES};
use ferry_server::api::repos::{CacheList, CacheQuery, CachesRemoved};

use crate::args::RepoScope;
use crate::{Failure, exit, local};

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
    #[command(flatten)]
    pub scope: RepoScope,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the entries, most recently used first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the entry with KEY, or every entry with --all.
    Clear {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn cache(args: CacheArgs) -> Result<u8, Failure> {
    if args.scope.remote() {
        return remote(args).await;
    }
    let local = local::open(&args.scope.dir, &args.scope.store).await?;
    let caches = CacheStore::new(local.store.data_dir().join("caches"), DEFAULT_MAX_BYTES);
    match args.command {
        CacheCommand::List { json } => {
            let entries: Vec<CacheEntry> = caches
                .list()
                .into_iter()
                .filter(|e| e.repository_id == local.repository_id)
                .collect();
            print_entries(&entries, json);
        }
        CacheCommand::Clear { key, .. } => {
            let n = caches.clear(Some(&local.repository_id), key.as_deref());
            report_cleared(n, key.as_deref())?;
        }
    }
    Ok(exit::OK)
}

async fn remote(args: CacheArgs) -> Result<u8, Failure> {
    let (c, repo) = args.scope.client()?;
    let path = format!("/repos/{repo}/caches");
    match args.command {
        CacheCommand::List { json } => {
            let list: CacheList = c.get(&path).await?;
            print_entries(&list.caches, json);
        }
        CacheCommand::Clear { key, .. } => {
            let query = CacheQuery { key };
            let cleared: CachesRemoved = c.delete(&path, &query).await?;
            report_cleared(cleared.removed, query.key.as_deref())?;
        }
    }
    Ok(exit::OK)
}

fn report_cleared(n: usize, key: Option<&str>) -> Result<(), Failure> {
    match key {
        Some(k) if n == 0 => Err(Failure::usage(format!("there is no cache `{k}`"))),
        Some(k) => {
            println!("removed cache `{k}`");
            Ok(())
        }
        None => {
            println!("removed {n} cache entr{}", if n == 1 { "y" } else { "ies" });
            Ok(())
        }
    }
}

fn print_entries(entries: &[CacheEntry], json: bool) {
    if json {
        crate::client::print_json(entries);
        return;
    }
    if entries.is_empty() {
        println!("no caches");
        return;
    }
    println!("{:<50}  {:>10}  {:<19}  PATHS", "KEY", "SIZE", "LAST USED");
    for e in entries {
        println!(
            "{:<50}  {:>10}  {:<19}  {}",
            e.key,
            ferry_engine::cache::human_bytes(e.size),
            crate::logs::local_time(e.last_used_ms).unwrap_or_default(),
            e.paths.join(" ")
        );
    }
}
