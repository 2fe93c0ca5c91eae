//! Ferry's store: runs, jobs, steps, logs and reports (and, as later features land,
//! repositories' triggers, releases, environments, deployments, users).
//!
//! Methods are grouped by aggregate in modules (`runs`, `logs`). SQL is portable between
//! SQLite (the embedded default) and PostgreSQL: `$1` placeholders, integer times and
//! booleans, no database-specific functions. Migrations are versioned files in
//! `migrations/`, embedded in the binary.
//!
//! Log *text* lives in append-only files in the data directory (`logs/<run>/<job>.log`);
//! the database holds their index. Writing a log is then as fast as writing a file.

mod logs;
mod migrate;
mod model;
mod runs;
mod writes;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use logs::{LogIndexEntry, LogLine, LogReader, LogWriter};
pub use model::*;
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
}

/// The store: a database pool and the data directory that holds log files.
#[derive(Debug, Clone)]
pub struct Store {
    pool: sqlx::SqlitePool,
    data_dir: PathBuf,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir)?;
        let db = data_dir.join("ferry.db");
        let url = format!("sqlite://{}", db.display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .connect_with(options)
            .await?;
        migrate::run(&pool).await?;
        Ok(Store {
            pool,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Closes the pool, waiting for pending writes.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
