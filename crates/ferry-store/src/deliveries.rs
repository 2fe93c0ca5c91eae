//! The delivery log: every webhook delivery a repository received and what became of
//! it, as the forges' own "recent deliveries" pages show them. The intake queue
//! (`repos.rs`) holds what is still to do; this keeps the record after it is done.

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

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
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Started => "started",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "started" => Self::Started,
            "declined" => Self::Declined,
            "failed" => Self::Failed,
            "ignored" => Self::Ignored,
            _ => return None,
        })
    }
}

/// One delivery and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryRecord {
    pub id: String,
    pub repository_id: String,
    /// `github`, `gitlab`, `gitea`, `generic`, or `ferry` for a redelivery asked of Ferry.
    pub provider: String,
    /// The forge's id of the delivery (or the payload's digest for Gitea).
    pub delivery_id: Option<String>,
    /// `push`, `tag`, `pull_request`, or the forge's event name when ignored.
    pub event: String,
    pub git_ref: String,
    pub sha: String,
    pub received_at: i64,
    pub status: DeliveryStatus,
    /// The run it started.
    pub run_id: Option<String>,
    /// Why it started no run (or the run's number when it did).
    pub reason: Option<String>,
    pub finished_at: Option<i64>,
    /// The delivery this one delivers again.
    pub redelivery_of: Option<String>,
}

#[rustfmt::skip]
crate::row::record!(DELIVERY_COLUMNS, delivery_from_row, DeliveryRecord {
    id, repository_id, provider, delivery_id, event, git_ref, sha, received_at, status,
    run_id, reason, finished_at, redelivery_of
});

impl crate::row::Column for DeliveryStatus {
    fn read(row: &sqlx::any::AnyRow, name: &str) -> Result<Self> {
        use sqlx::Row as _;
        let s: String = row.try_get(name)?;
        Self::parse(&s).ok_or_else(|| Error::Corrupt(format!("unknown {name} `{s}`")))
    }
}

/// Records an accepted delivery as pending (inside the intake's transaction).
pub(crate) async fn log_accepted(
    conn: &mut AnyConnection,
    item: &Intake,
    id: &str,
    redelivery_of: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO delivery_log (id, repository_id, provider, delivery_id, event, git_ref, sha, \
         received_at, status, redelivery_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
    )
    .bind(id)
    .bind(&item.repository_id)
    .bind(&item.provider)
    .bind(&item.delivery_id)
    .bind(&item.event)
    .bind(&item.git_ref)
    .bind(&item.sha)
    .bind(item.received_at)
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
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO delivery_log (id, repository_id, provider, delivery_id, event, git_ref, sha, \
             received_at, status, reason, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'ignored', $9, $8)",
        )
        .bind(&id)
        .bind(&item.repository_id)
        .bind(&item.provider)
        .bind(&item.delivery_id)
        .bind(&item.event)
        .bind(&item.git_ref)
        .bind(&item.sha)
        .bind(item.received_at)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The repository's deliveries, newest first.
    pub async fn deliveries(&self, repository_id: &str, limit: i64) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM delivery_log WHERE repository_id = $1 \
             ORDER BY received_at DESC, id DESC LIMIT $2"
        ))
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// One delivery of the repository.
    pub async fn delivery(&self, repository_id: &str, id: &str) -> Result<DeliveryRecord> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM delivery_log WHERE repository_id = $1 AND id = $2"
        ))
        .bind(repository_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
        delivery_from_row(&row)
    }

    /// Queues a failed or declined delivery again (no dedupe: it is asked for); the new
    /// delivery's record.
    pub async fn redeliver(&self, repository_id: &str, id: &str) -> Result<DeliveryRecord> {
        let old = self.delivery(repository_id, id).await?;
        let item = Intake {
            id: String::new(),
            repository_id: old.repository_id.clone(),
            provider: "ferry".into(),
            delivery_id: None,
            event: old.event.clone(),
            git_ref: old.git_ref.clone(),
            sha: old.sha.clone(),
            received_at: now_ms(),
        };
        let new_id = self.enqueue(&item, Some(&old.id)).await?;
        self.delivery(repository_id, &new_id).await
    }
}
