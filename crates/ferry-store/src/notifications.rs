//! Notifications: written when their event happens (one per channel), then sent by the
//! server's notifier, which claims each one due, records every attempt and schedules
//! the next with back-off until it is delivered or given up.

use serde::{Deserialize, Serialize};

use crate::{Result, Store, now_ms};

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Not delivered yet: tried at `next_at`.
    Pending,
    Delivered,
    /// Given up after its last attempt.
    Failed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub repository_id: String,
    /// `run.failed`, `deployment.live`, …
    pub event: String,
    /// How to reach the channel (JSON; secret names, never their values).
    pub channel: String,
    /// What it goes to, for people (`slack SLACK_URL`, `email ops@example.com`).
    pub target: String,
    /// What happened (JSON).
    pub payload: String,
}

/// A notification and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Notification {
    pub id: String,
    pub repository_id: String,
    pub event: String,
    /// How the channel is reached (JSON). Never in an answer: a webhook's URL may hold
    /// a key (`target` says where it went).
    #[serde(skip)]
    pub channel: String,
    pub target: String,
    /// What happened (JSON).
    pub payload: String,
    pub status: NotificationStatus,
    /// Attempts so far (`attempt_count` in answers, beside the list of attempts).
    #[serde(rename = "attempt_count")]
    pub attempts: i64,
    /// When it is (next) tried, milliseconds since the epoch.
    pub next_at: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
}

/// One attempt at sending a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    pub notification_id: String,
    /// 1, 2, …
    pub attempt: i64,
    pub at: i64,
    pub ok: bool,
    /// What the channel answered (`HTTP 200`, `250 OK`) or what went wrong.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: i64,
}

#[rustfmt::skip]
crate::row::record!(NOTIFICATION_COLUMNS, notification_from_row, Notification {
    id, repository_id, event, channel, target, payload, status, attempts, next_at,
    created_at, finished_at, last_error
});

#[rustfmt::skip]
crate::row::record!(ATTEMPT_COLUMNS, attempt_from_row, Attempt {
    notification_id, attempt, at, ok, detail, ms
});

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Tried again at this time.
    RetryAt(i64),
    /// Given up.
    Failed,
}

impl Store {
    /// Writes notifications to send (in one transaction): their ids.
    pub async fn enqueue_notifications(&self, all: &[NewNotification]) -> Result<Vec<String>> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut ids = Vec::with_capacity(all.len());
        for n in all {
            let id = uuid::Uuid::now_v7().to_string();
            sqlx::query(&format!(
                "INSERT INTO notifications ({NOTIFICATION_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, NULL, NULL)"
            ))
            .bind(&id)
            .bind(&n.repository_id)
            .bind(&n.event)
            .bind(&n.channel)
            .bind(&n.target)
            .bind(&n.payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Pending notifications due by `now`, the longest waiting first.
    pub async fn due_notifications(&self, now: i64, limit: i64) -> Result<Vec<Notification>> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications
             WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(notification_from_row).collect()
    }

    /// When the next pending notification is due (none: nothing is pending).
    pub async fn next_notification_at(&self) -> Result<Option<i64>> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT MIN(next_at) FROM notifications WHERE status = 'pending'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|r| r.0))
    }

    /// Takes a due notification for sending until `until` (compare-and-set on the
    /// `next_at` it was read with): whether this caller has it. A sender that dies
    /// with it leaves it to be taken again at `until`.
    pub async fn claim_notification(&self, n: &Notification, until: i64) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "UPDATE notifications SET next_at = $1
             WHERE id = $2 AND status = 'pending' AND next_at = $3",
        )
        .bind(until)
        .bind(&n.id)
        .bind(n.next_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an attempt at a claimed notification and what follows from it.
    pub async fn record_attempt(
        &self,
        id: &str,
        ok: bool,
        detail: &str,
        ms: i64,
        outcome: AttemptOutcome,
    ) -> Result<()> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let (status, next_at, finished) = match outcome {
            AttemptOutcome::Delivered => ("delivered", now, Some(now)),
            AttemptOutcome::RetryAt(at) => ("pending", at, None),
            AttemptOutcome::Failed => ("failed", now, Some(now)),
        };
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, status = $1, next_at = $2,
               finished_at = $3, last_error = $4 WHERE id = $5",
        )
        .bind(status)
        .bind(next_at)
        .bind(finished)
        .bind((!ok).then_some(detail))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO notification_attempts ({ATTEMPT_COLUMNS})
             SELECT id, attempts, $1, $2, $3, $4 FROM notifications WHERE id = $5"
        ))
        .bind(now)
        .bind(i64::from(ok))
        .bind(detail)
        .bind(ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a notification to the same target was written after `n` (a newer
    /// commit status of the same commit and context makes `n` moot).
    pub async fn newer_notification_exists(&self, n: &Notification) -> Result<bool> {
        let row = sqlx::query(
            "SELECT id FROM notifications
             WHERE repository_id = $1 AND target = $2 AND id > $3 LIMIT 1",
        )
        .bind(&n.repository_id)
        .bind(&n.target)
        .bind(&n.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The repository's notifications, newest first, with their attempts (oldest
    /// first).
    pub async fn notifications(
        &self,
        repository_id: &str,
        limit: i64,
    ) -> Result<Vec<(Notification, Vec<Attempt>)>> {
        let rows = sqlx::query(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE repository_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let n = notification_from_row(row)?;
            let attempts = sqlx::query(&format!(
                "SELECT {ATTEMPT_COLUMNS} FROM notification_attempts
                 WHERE notification_id = $1 ORDER BY attempt"
            ))
            .bind(&n.id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>>>()?;
            out.push((n, attempts));
        }
        Ok(out)
    }
}
