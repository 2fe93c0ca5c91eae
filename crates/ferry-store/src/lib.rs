//! Ferry's store: runs, jobs, steps, logs and reports (and, as later features land,
//! repositories' triggers, releases, environments, deployments, users).
//!
//! Methods of [`Store`] are grouped by aggregate, one module each: `runs` (repositories'
//! runs, jobs, steps and built images), `writes` (their state changes, batched), `logs`,
//! `repos` (repositories, polled heads, schedules, webhook intake), `users` (users,
//! tokens, approver groups), `registries` (registry logins), `releases`, `deployments`
//! (and approvals), `settings` (variables and secrets), `audit`; `secrets` is the key
//! that seals secrets. Each module reads its rows with one `*_COLUMNS` list and one
//! `*_from_row` function per record type.
//!
//! SQL is portable between SQLite (the embedded default) and PostgreSQL: `$1`
//! placeholders, integer times and booleans, no database-specific functions. Migrations
//! are versioned files in `migrations/` (`common/`, or `sqlite/` and `postgres/` where
//! the backends differ), embedded in the binary (`migrate`).
//!
//! Log *text* lives in append-only files in the data directory (`logs/<run>/<job>.log`);
//! the database holds their index. Writing a log is then as fast as writing a file.

mod audit;
mod deliveries;
mod deployments;
mod health;
mod infra;
pub mod logs;
mod migrate;
mod notifications;
pub use migrate::LATEST as SCHEMA_VERSION;
mod model;
mod registries;
mod releases;
mod repos;
mod row;
mod runs;
pub mod secrets;
mod sessions;
mod settings;
mod users;
pub use repos::AWAITING_APPROVAL;
pub use sessions::Session;
pub use users::{FORGES, forge_identity};
mod writes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Executor as _;
use sqlx::any::AnyPoolOptions;

pub use audit::AuditEntry;
pub use deliveries::{DeliveryRecord, DeliveryStatus};
pub use deployments::{Approval, Deployment, DeploymentKind, DeploymentStatus};
pub use health::{EnvironmentHealth, Health, HealthChange};
pub use infra::{InfraGrant, InfraPlan, InfraVersion, NewPlan, NewState, SealedPlan, SealedState};
pub use logs::{
    Found, LogFile, LogIndexEntry, LogLine, LogReader, LogWriter, line_offset, open_log,
    packed_path, search_log, tail_offset, tail_offset_within,
};
pub use model::*;
pub use notifications::{
    Attempt, AttemptOutcome, NewNotification, Notification, NotificationStatus,
};
pub use registries::RegistryLogin;
pub use releases::{NewRelease, Release, ReleaseArtifact, ReleaseImage};
pub use secrets::SecretKey;
pub use settings::{SecretInfo, Variable};
pub use writes::{Write, Writer};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("unsupported database URL `{0}`: use sqlite:PATH or postgres://…")]
    Url(String),
    /// A secret key or sealed value that does not work.
    #[error("{0}")]
    Invalid(String),
}

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a file in the data directory.
    Sqlite,
    Postgres,
}

/// Who opens the store, which decides how many database connections it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// A server: several connections, so that requests read while a run writes.
    #[default]
    Shared,
    /// A command that does one thing and exits (`ferry run`, `ferry logs`): one
    /// connection, its queries in turn. Each SQLite connection reads and parses the
    /// schema when it opens, a cost a one-step run would otherwise pay twice.
    ///
    /// An SQLite connection opened so is never closed: it ends with the process.
    /// Closing the last connection checkpoints the WAL into the database (two fsyncs),
    /// which a command about to exit would start and then cut short; instead the WAL is
    /// checkpointed once it holds [`COMMAND_CHECKPOINT_PAGES`] pages, in the commit that
    /// passes them, so that it stays small for the next command to read.
    Single,
}

/// Pages of WAL after which a command's commit checkpoints it (SQLite's own default,
/// for a server's long-lived connections, is 1,000). A one-step `ferry run` adds about
/// eight; every connection that opens first reads the whole WAL back.
pub const COMMAND_CHECKPOINT_PAGES: u32 = 64;

/// The pools of [`Pooling::Single`] SQLite stores: a static is never dropped, so their
/// connections stay open until the process exits.
static OPEN_UNTIL_EXIT: std::sync::Mutex<Vec<sqlx::AnyPool>> = std::sync::Mutex::new(Vec::new());

/// The store: a database pool and the data directory that holds log files.
#[derive(Debug, Clone)]
pub struct Store {
    pool: sqlx::AnyPool,
    backend: Backend,
    data_dir: PathBuf,
    /// SQLite's writers take turns here (see [`Store::turn`]); none for PostgreSQL.
    writers: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// A unique-key violation is a [`Error::Conflict`] about `what`; anything else a database error.
pub(crate) fn conflict(e: sqlx::Error, what: String) -> Error {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::Conflict(what),
        _ => Error::Db(e),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the embedded SQLite store in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        Self::open_with(data_dir, None, Pooling::Shared).await
    }

    /// Opens the store at a database URL (`sqlite:…` or `postgres://…`), with log files
    /// in `data_dir`, and applies migrations.
    pub async fn open_url(url: &str, data_dir: &Path) -> Result<Store> {
        Self::open_with(data_dir, Some(url), Pooling::Shared).await
    }

    /// Opens the store at `url`, or the embedded one in `data_dir` without one.
    pub async fn open_with(data_dir: &Path, url: Option<&str>, pooling: Pooling) -> Result<Store> {
        match url {
            Some(url) => Self::connect(url, data_dir, pooling).await,
            None => Self::connect(&Self::embedded_url(data_dir)?, data_dir, pooling).await,
        }
    }

    /// The URL of the embedded SQLite store in `data_dir` (created if needed).
    fn embedded_url(data_dir: &Path) -> Result<String> {
        std::fs::create_dir_all(data_dir)?;
        // `?`, `#` and `%` in the path would end it early in a URL: percent-encode them.
        let path = data_dir.join("ferry.db").display().to_string();
        let path = path
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        Ok(format!("sqlite://{path}?mode=rwc"))
    }

    /// Connects and applies migrations.
    #[tracing::instrument(level = "debug", name = "store.open", skip_all)]
    async fn connect(url: &str, data_dir: &Path, pooling: Pooling) -> Result<Store> {
        sqlx::any::install_default_drivers();
        std::fs::create_dir_all(data_dir)?;
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::Url(url.to_string()));
        };
        // An SQLite file is created when missing unless the URL says otherwise.
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let options = AnyPoolOptions::new()
            .max_connections(match (pooling, backend) {
                (Pooling::Single, _) => 1,
                (Pooling::Shared, Backend::Sqlite) => 4,
                (Pooling::Shared, Backend::Postgres) => 10,
            })
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30));
        let options = match backend {
            // WAL lets readers work while a run writes; NORMAL sync is safe with WAL.
            Backend::Sqlite => {
                let mut pragmas = String::from(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                );
                if pooling == Pooling::Single {
                    pragmas += &format!(" PRAGMA wal_autocheckpoint = {COMMAND_CHECKPOINT_PAGES};");
                }
                let pragmas: std::sync::Arc<str> = pragmas.into();
                options.after_connect(move |conn, _| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        conn.execute(&*pragmas).await?;
                        Ok(())
                    })
                })
            }
            Backend::Postgres => options,
        };
        let pool = options.connect(&url).await?;
        migrate::run(&pool, backend).await?;
        if pooling == Pooling::Single && backend == Backend::Sqlite {
            OPEN_UNTIL_EXIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(pool.clone());
        }
        Ok(Store {
            pool,
            backend,
            data_dir: data_dir.to_path_buf(),
            writers: (backend == Backend::Sqlite).then(Default::default),
        })
    }

    /// Waits for this process's turn to write to an SQLite store, held until the write
    /// commits. SQLite lets one connection write at a time and makes the others sleep
    /// and retry (its busy handler: 1, 2, 5 … 100 ms naps) while they cannot: writers
    /// queued here instead go one after another without sleeping. Every write takes
    /// its turn, and none asks for a second one while it holds one. Another process on
    /// the same file (a `ferry` command) still meets the busy handler.
    pub(crate) async fn turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writers {
            Some(w) => Some(w.lock().await),
            None => None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Closes the pool, waiting for pending writes.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers to an SQLite store wait for their turn (asynchronously) instead of
    /// meeting SQLite's busy handler, which naps 1–100 ms at a time: while one holds the
    /// turn, no other write gets through, and all do once it is given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writers_take_turns() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let store = Store::open(dir.path()).await.expect("the store opens");
        let held = store.turn().await.expect("SQLite has turns");
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..8 {
            let s = store.clone();
            writes.spawn(async move {
                s.audit(None, "test", "turn", &i.to_string(), None)
                    .await
                    .expect("the write lands")
            });
        }
        let s = store.clone();
        writes.spawn(async move {
            s.ensure_repository("/x", "x")
                .await
                .map(drop)
                .expect("the write lands")
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(writes.len(), 9);
        assert!(
            writes.try_join_next().is_none(),
            "a write went past the turn"
        );
        assert!(
            store
                .audit_log(None, 10)
                .await
                .expect("the log reads")
                .is_empty()
        );
        drop(held);
        while let Some(w) = writes.join_next().await {
            w.expect("the task ends");
        }
        assert_eq!(
            store
                .audit_log(None, 10)
                .await
                .expect("the log reads")
                .len(),
            8
        );
    }
}
