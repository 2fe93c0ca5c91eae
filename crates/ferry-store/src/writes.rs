//! State changes of runs, jobs and steps, and the batching writer that applies them.
//!
//! The engine sends changes as they happen and never waits for the database: a writer
//! task applies whatever has queued up in one transaction, in order. Each change carries
//! the time it happened, so batching does not blur the recorded times.

use sqlx::{Any, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, JobEnd, LogIndexEntry, Result, Status, Store, now_ms};

/// One state change.
#[derive(Debug, Clone)]
pub enum Write {
    StartRun {
        run_id: String,
        at: i64,
    },
    FinishRun {
        run_id: String,
        status: Status,
        error: Option<String>,
        at: i64,
    },
    StartJob {
        job_id: String,
        attempt: i64,
        at: i64,
    },
    /// Ends a job; steps still running take its status, steps never reached are skipped
    /// (cancelled when the job was).
    FinishJob {
        job_id: String,
        end: JobEnd,
        at: i64,
    },
    StartStep {
        job_id: String,
        position: i64,
        attempt: i64,
        at: i64,
    },
    FinishStep {
        job_id: String,
        position: i64,
        status: Status,
        exit_code: Option<i64>,
        at: i64,
    },
    LogIndex {
        job_id: String,
        entries: Vec<LogIndexEntry>,
    },
    /// An image the job built (and pushed).
    Image(crate::Image),
}

impl Write {
    pub fn start_run(run_id: &str) -> Write {
        Write::StartRun {
            run_id: run_id.into(),
            at: now_ms(),
        }
    }
    pub fn finish_run(run_id: &str, status: Status, error: Option<String>) -> Write {
        Write::FinishRun {
            run_id: run_id.into(),
            status,
            error,
            at: now_ms(),
        }
    }
    pub fn start_job(job_id: &str, attempt: i64) -> Write {
        Write::StartJob {
            job_id: job_id.into(),
            attempt,
            at: now_ms(),
        }
    }
    pub fn finish_job(job_id: &str, end: JobEnd) -> Write {
        Write::FinishJob {
            job_id: job_id.into(),
            end,
            at: now_ms(),
        }
    }
    pub fn start_step(job_id: &str, position: i64, attempt: i64) -> Write {
        Write::StartStep {
            job_id: job_id.into(),
            position,
            attempt,
            at: now_ms(),
        }
    }
    pub fn finish_step(
        job_id: &str,
        position: i64,
        status: Status,
        exit_code: Option<i64>,
    ) -> Write {
        Write::FinishStep {
            job_id: job_id.into(),
            position,
            status,
            exit_code,
            at: now_ms(),
        }
    }
}

async fn apply(tx: &mut Transaction<'_, Any>, w: &Write) -> Result<()> {
    match w {
        Write::StartRun { run_id, at } => {
            sqlx::query("UPDATE runs SET status = $1, started_at = $2 WHERE id = $3")
                .bind(Status::Running.as_str())
                .bind(at)
                .bind(run_id)
                .execute(&mut **tx)
                .await?;
        }
        Write::FinishRun {
            run_id,
            status,
            error,
            at,
        } => {
            sqlx::query("UPDATE runs SET status = $1, finished_at = $2, error = $3 WHERE id = $4")
                .bind(status.as_str())
                .bind(at)
                .bind(error)
                .bind(run_id)
                .execute(&mut **tx)
                .await?;
        }
        Write::StartJob {
            job_id,
            attempt,
            at,
        } => {
            sqlx::query(
                "UPDATE jobs SET status = $1, started_at = COALESCE(started_at, $2), attempts = $3 WHERE id = $4",
            )
            .bind(Status::Running.as_str())
            .bind(at)
            .bind(attempt)
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        }
        Write::FinishJob { job_id, end, at } => {
            let failures = match &end.tests {
                Some(t) => Some(
                    serde_json::to_string(&t.failures)
                        .map_err(|e| Error::Corrupt(e.to_string()))?,
                ),
                None => None,
            };
            sqlx::query(
                "UPDATE jobs SET status = $1, reason = COALESCE($2, reason), exit_code = $3, attempts = $4, \
                 finished_at = $5, \
                 started_at = CASE WHEN $1 = 'skipped' THEN started_at ELSE COALESCE(started_at, $5) END, \
                 log_bytes = $6, log_lines = $7, \
                 tests_passed = $8, tests_failed = $9, tests_skipped = $10, test_failures = $11 WHERE id = $12",
            )
            .bind(end.status.as_str())
            .bind(&end.reason)
            .bind(end.exit_code)
            .bind(end.attempts)
            .bind(at)
            .bind(end.log_bytes)
            .bind(end.log_lines)
            .bind(end.tests.as_ref().map(|t| t.passed))
            .bind(end.tests.as_ref().map(|t| t.failed))
            .bind(end.tests.as_ref().map(|t| t.skipped))
            .bind(failures)
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
            let unreached = match end.status {
                Status::Cancelled => Status::Cancelled,
                _ => Status::Skipped,
            };
            sqlx::query(
                "UPDATE steps SET status = CASE WHEN status = 'running' THEN $1 ELSE $2 END \
                 WHERE job_id = $3 AND status IN ('queued', 'running')",
            )
            .bind(end.status.as_str())
            .bind(unreached.as_str())
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        }
        Write::StartStep {
            job_id,
            position,
            attempt,
            at,
        } => {
            sqlx::query(
                "UPDATE steps SET status = $1, started_at = $2, finished_at = NULL, exit_code = NULL, attempt = $3 \
                 WHERE job_id = $4 AND position = $5",
            )
            .bind(Status::Running.as_str())
            .bind(at)
            .bind(attempt)
            .bind(job_id)
            .bind(position)
            .execute(&mut **tx)
            .await?;
        }
        Write::FinishStep {
            job_id,
            position,
            status,
            exit_code,
            at,
        } => {
            sqlx::query(
                "UPDATE steps SET status = $1, exit_code = $2, finished_at = $3 WHERE job_id = $4 AND position = $5",
            )
            .bind(status.as_str())
            .bind(exit_code)
            .bind(at)
            .bind(job_id)
            .bind(position)
            .execute(&mut **tx)
            .await?;
        }
        Write::LogIndex { job_id, entries } => {
            // Multi-row inserts, within SQLite's limit on bound parameters.
            for chunk in entries.chunks(200) {
                let mut sql = String::from(
                    "INSERT INTO log_chunks (job_id, byte_offset, first_line, ts) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 4;
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
                }
                sql.push_str(" ON CONFLICT (job_id, byte_offset) DO NOTHING");
                let mut q = sqlx::query(&sql);
                for e in chunk {
                    q = q
                        .bind(job_id)
                        .bind(e.byte_offset)
                        .bind(e.first_line)
                        .bind(e.ts);
                }
                q.execute(&mut **tx).await?;
            }
        }
        Write::Image(image) => {
            sqlx::query(
                "INSERT INTO images (id, run_id, job_id, name, tags, image_id, digest, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&image.id)
            .bind(&image.run_id)
            .bind(&image.job_id)
            .bind(&image.name)
            .bind(serde_json::to_string(&image.tags).unwrap_or_default())
            .bind(&image.image_id)
            .bind(&image.digest)
            .bind(image.created_at)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

impl Store {
    /// Applies changes in one transaction, in order.
    pub async fn apply(&self, writes: &[Write]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        for w in writes {
            apply(&mut tx, w).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies one change now.
    pub async fn write(&self, w: Write) -> Result<()> {
        self.apply(std::slice::from_ref(&w)).await
    }

    /// Starts a writer task on the current Tokio runtime.
    pub fn writer(&self) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_writer(self.clone(), rx));
        Writer {
            tx,
            task: Some(task),
        }
    }
}

enum Msg {
    Write(Write),
    Flush(oneshot::Sender<Result<()>>),
}

/// Queues state changes for the writer task. Dropping it lets the task finish what is
/// queued; [`Writer::flush`] waits until everything sent so far is in the database.
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Write(w) => w.fmt(f),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Writer {
    /// Queues a change; never blocks.
    pub fn send(&self, w: Write) {
        let _ = self.tx.send(Msg::Write(w));
    }

    /// Waits until every change sent before is written; returns the first error since
    /// the last flush, if a batch failed.
    pub async fn flush(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Flush(ack))
            .map_err(|_| Error::Corrupt("the store writer has stopped".into()))?;
        done.await
            .map_err(|_| Error::Corrupt("the store writer has stopped".into()))?
    }

    /// Flushes and stops the task.
    pub async fn close(mut self) -> Result<()> {
        let result = self.flush().await;
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }
}

/// Batches at most this many changes in one transaction.
const MAX_BATCH: usize = 512;

/// How long the writer gathers changes after the first of a batch before it writes
/// them (unless a flush asks sooner): a job of quick steps then costs a transaction
/// every few steps rather than two per step, and what the database shows lags what
/// happened by at most this much. The times recorded are those of the changes.
pub const WINDOW: std::time::Duration = std::time::Duration::from_millis(10);

async fn run_writer(store: Store, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut failure: Option<Error> = None;
    while let Some(first) = rx.recv().await {
        let until = tokio::time::Instant::now() + WINDOW;
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(w) => batch.push(w),
                Msg::Flush(ack) => acks.push(ack),
            }
            // A flush is waited on: write now. Otherwise take what is queued, then
            // what comes within the window.
            if batch.len() < MAX_BATCH && acks.is_empty() {
                next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                        msg = rx.recv() => msg,
                        _ = tokio::time::sleep_until(until) => None,
                    },
                };
            }
        }
        if let Err(e) = store.apply(&batch).await {
            // Apply one by one so that one bad change does not lose the others.
            for w in batch {
                if let Err(e) = store.write(w).await
                    && failure.is_none()
                {
                    failure = Some(e);
                }
            }
            if failure.is_none() {
                failure = Some(e);
            }
        }
        for ack in acks {
            let _ = ack.send(match failure.take() {
                Some(e) => Err(e),
                None => Ok(()),
            });
        }
    }
}
