//! The delivery log: every webhook delivery a repository received and what became of
//! it, as the forges' own "recent deliveries" pages show them. The intake queue
//! (`repos.rs`) holds what is still to do; this keeps the record after it is done.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::row::Column;
use crate::{Error, Intake, Result, Store, now_ms};

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Accepted; not turned into a run yet.
    Pending,
    /// It started a run.
    Started,
    /// Its pipeline declined it (`on:`), or it named something that cannot run (no
    /// `.ferry.yml`, an invalid one, no such commit).
    Declined,
    /// It could not be handled (the repository could not be fetched or read); it can be
    /// delivered again.
    Failed,
    /// Answered 200 and not queued: an event Ferry does not handle, a deleted branch,
    /// `[skip ci]`, or a redelivery of one already handled.
    Ignored,
    /// A fork's pull request waiting for a developer's approval (`fork_prs: approve`).
    AwaitingApproval,
    /// Approved: the delivery that redelivers it runs it.
    Approved,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Approved => "approved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "started" => Self::Started,
            "declined" => Self::Declined,
            "failed" => Self::Failed,
            "ignored" => Self::Ignored,
            "awaiting_approval" => Self::AwaitingApproval,
            "approved" => Self::Approved,
            _ => return None,
        })
    }
}

/// One delivery and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryRecord {
    /// What it asked for (`provider` is `ferry` for a redelivery asked of Ferry;
    /// `event` the forge's event name when it was ignored).
    #[serde(flatten)]
    pub request: Intake,
    pub status: DeliveryStatus,
    /// The run it started.
    pub run_id: Option<String>,
    /// Why it started no run (or the run's number when it did).
    pub reason: Option<String>,
    pub finished_at: Option<i64>,
    /// The delivery this one delivers again.
    pub redelivery_of: Option<String>,
}

const DELIVERY_COLUMNS: &str = "id, repository_id, provider, delivery_id, event, git_ref, sha, \
     received_at, sender, pull, approved_by, status, run_id, reason, finished_at, redelivery_of";

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        request: crate::repos::intake_from_row(row)?,
        status: Column::read(row, "status")?,
        run_id: Column::read(row, "run_id")?,
        reason: Column::read(row, "reason")?,
        finished_at: Column::read(row, "finished_at")?,
        redelivery_of: Column::read(row, "redelivery_of")?,
    })
}

impl Column for DeliveryStatus {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        use sqlx::Row as _;
        let s: String = row.try_get(name)?;
        Self::parse(&s).ok_or_else(|| Error::Corrupt(format!("unknown {name} `{s}`")))
    }
}

/// `query` with the ten columns of an intake entry bound from `$1` on (its id first,
/// which the caller gives).
pub(crate) fn bind_intake<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    id: &'q str,
    item: &'q Intake,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(id)
        .bind(&item.repository_id)
        .bind(&item.provider)
        .bind(&item.delivery_id)
        .bind(&item.event)
        .bind(&item.git_ref)
        .bind(&item.sha)
        .bind(item.received_at)
        .bind(&item.sender)
        .bind(
            item.pull
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok()),
        )
        .bind(&item.approved_by)
}

/// The intake columns, as [`bind_intake`] binds them.
pub(crate) const INTAKE_INSERT: &str = "id, repository_id, provider, delivery_id, event, git_ref, sha, received_at, sender, pull, \
     approved_by";

/// Records an accepted delivery as pending (inside the intake's transaction).
pub(crate) async fn log_accepted(
    conn: &mut AnyConnection,
    item: &Intake,
    id: &str,
    redelivery_of: Option<&str>,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO delivery_log ({INTAKE_INSERT}, status, redelivery_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12)"
    );
    bind_intake(sqlx::query(&sql), id, item)
        .bind(redelivery_of)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records how an accepted delivery ended.
pub(crate) async fn log_finished(
    conn: &mut AnyConnection,
    id: &str,
    status: DeliveryStatus,
    run_id: Option<&str>,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE delivery_log SET status = $1, run_id = $2, reason = $3, finished_at = $4 WHERE id = $5",
    )
    .bind(status.as_str())
    .bind(run_id)
    .bind(reason)
    .bind(now_ms())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records a delivery answered without being queued (status `ignored`).
    pub async fn log_ignored(&self, item: &Intake, reason: &str) -> Result<()> {
        let _turn = self.turn().await;
        let id = uuid::Uuid::now_v7().to_string();
        let sql = format!(
            "INSERT INTO delivery_log ({INTAKE_INSERT}, status, reason, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'ignored', $12, $8)"
        );
        bind_intake(sqlx::query(&sql), &id, item)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The repository's deliveries, newest first.
    pub async fn deliveries(&self, repository_id: &str, limit: i64) -> Result<Vec<DeliveryRecord>> {
        self.delivery_rows(repository_id, None, limit).await
    }

    /// One delivery of the repository.
    pub async fn delivery(&self, repository_id: &str, id: &str) -> Result<DeliveryRecord> {
        self.delivery_rows(repository_id, Some(id), 1)
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("delivery {id}")))
    }

    async fn delivery_rows(
        &self,
        repository_id: &str,
        id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM delivery_log \
             WHERE repository_id = $1 AND ($2 IS NULL OR id = $2) \
             ORDER BY received_at DESC, id DESC LIMIT $3"
        ))
        .bind(repository_id)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Queues a failed or declined delivery again (no dedupe: it is asked for); the new
    /// delivery's record.
    pub async fn redeliver(&self, repository_id: &str, id: &str) -> Result<DeliveryRecord> {
        let old = self.delivery(repository_id, id).await?.request;
        let item = Intake {
            provider: "ferry".into(),
            delivery_id: None,
            received_at: now_ms(),
            ..old.clone()
        };
        let new_id = self.enqueue(&item, Some(&old.id)).await?;
        self.delivery(repository_id, &new_id).await
    }

    /// A developer (`by`, `user:NAME`) lets a fork's pull request that awaits approval
    /// run: it becomes `approved` (once: a conflict when it no longer awaits) and a
    /// redelivery of it, recording who approved, is queued; the new delivery's record.
    pub async fn approve_delivery(
        &self,
        repository_id: &str,
        id: &str,
        by: &str,
    ) -> Result<DeliveryRecord> {
        let old = self.delivery(repository_id, id).await?;
        let turn = self.turn().await;
        let moved = sqlx::query(
            "UPDATE delivery_log SET status = 'approved', reason = $1
             WHERE id = $2 AND repository_id = $3 AND status = 'awaiting_approval'",
        )
        .bind(format!("approved by {by}"))
        .bind(id)
        .bind(repository_id)
        .execute(&self.pool)
        .await?;
        drop(turn); // `enqueue` takes its own
        if moved.rows_affected() == 0 {
            return Err(Error::Conflict(format!("an approval of delivery {id}")));
        }
        let item = Intake {
            provider: "ferry".into(),
            delivery_id: None,
            received_at: now_ms(),
            approved_by: Some(by.to_string()),
            ..old.request
        };
        let new_id = self.enqueue(&item, Some(id)).await?;
        self.delivery(repository_id, &new_id).await
    }
}
