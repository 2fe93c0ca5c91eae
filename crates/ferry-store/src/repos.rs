//! Repositories a server watches.

use sqlx::Row;

use crate::deliveries::DeliveryStatus;
use crate::{Error, Intake, NewRepository, Repository, Result, Store, conflict, now_ms};

// The columns [`repository_from_row`] reads (of `repositories`).
#[rustfmt::skip]
crate::row::record!(REPOSITORY_COLUMNS, repository_from_row, Repository {
    id, name, url, default_branch, webhook_secret, poll_interval_s, created_at, fork_prs,
    commit_status
});

// The columns [`intake_from_row`] reads (of `intake`).
#[rustfmt::skip]
crate::row::record!(INTAKE_COLUMNS, pub(crate) intake_from_row, Intake {
    id, repository_id, provider, delivery_id, event, git_ref, sha, received_at, sender, pull,
    approved_by
});

impl Store {
    pub async fn create_repository(&self, new: &NewRepository) -> Result<Repository> {
        let _turn = self.turn().await;
        let id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(&format!(
            "INSERT INTO repositories (id, name, url, default_branch, webhook_secret, poll_interval_s, created_at, fork_prs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {REPOSITORY_COLUMNS}"
        ))
        .bind(&id)
        .bind(&new.name)
        .bind(&new.url)
        .bind(&new.default_branch)
        .bind(&new.webhook_secret)
        .bind(new.poll_interval_s)
        .bind(now_ms())
        .bind(new.fork_prs.as_deref().unwrap_or("ignore"))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("repository {}", new.url)))?;
        repository_from_row(&row)
    }

    /// Sets what a repository does with pull requests from forks (one of
    /// [`crate::FORK_PRS`]).
    pub async fn set_fork_prs(&self, repository_id: &str, fork_prs: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE repositories SET fork_prs = $1 WHERE id = $2")
            .bind(fork_prs)
            .bind(repository_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets (or, with `None`, removes) where the repository reports commit statuses
    /// (JSON holding a sealed token).
    pub async fn set_commit_status(&self, repository_id: &str, stored: Option<&str>) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE repositories SET commit_status = $1 WHERE id = $2")
            .bind(stored)
            .bind(repository_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces a repository's stored webhook secret (e.g. with its sealed form).
    pub async fn set_webhook_secret(
        &self,
        repository_id: &str,
        stored: Option<&str>,
    ) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE repositories SET webhook_secret = $1 WHERE id = $2")
            .bind(stored)
            .bind(repository_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn repositories(&self) -> Result<Vec<Repository>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPOSITORY_COLUMNS} FROM repositories ORDER BY name, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(repository_from_row).collect()
    }

    /// A repository by id or by name.
    pub async fn repository(&self, id_or_name: &str) -> Result<Repository> {
        let row = sqlx::query(&format!(
            "SELECT {REPOSITORY_COLUMNS} FROM repositories WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("repository `{id_or_name}`")))?;
        repository_from_row(&row)
    }
}

impl Store {
    /// The heads last seen by polling a repository: `(ref, sha)`.
    pub async fn heads(&self, repository_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT git_ref, sha FROM repo_heads WHERE repository_id = $1 ORDER BY git_ref",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("git_ref")?, r.try_get("sha")?)))
            .collect()
    }

    /// Records a head; `true` when it is new or moved (so it should start a run). Two
    /// pollers seeing the same change: only one gets `true`.
    pub async fn update_head(&self, repository_id: &str, git_ref: &str, sha: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let inserted = sqlx::query(
            "INSERT INTO repo_heads (repository_id, git_ref, sha) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id, git_ref) DO NOTHING",
        )
        .bind(repository_id)
        .bind(git_ref)
        .bind(sha)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(true);
        }
        let moved = sqlx::query("UPDATE repo_heads SET sha = $1 WHERE repository_id = $2 AND git_ref = $3 AND sha <> $1")
            .bind(sha)
            .bind(repository_id)
            .bind(git_ref)
            .execute(&self.pool)
            .await?;
        Ok(moved.rows_affected() == 1)
    }

    /// Forgets heads that no longer exist.
    pub async fn remove_head(&self, repository_id: &str, git_ref: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("DELETE FROM repo_heads WHERE repository_id = $1 AND git_ref = $2")
            .bind(repository_id)
            .bind(git_ref)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When a schedule last fired; the first time it is seen, `now` is recorded, so a
    /// new schedule starts counting from now rather than firing for the past.
    pub async fn schedule_last_fired(
        &self,
        repository_id: &str,
        expression: &str,
        now: i64,
    ) -> Result<i64> {
        let _turn = self.turn().await;
        sqlx::query(
            "INSERT INTO schedules (repository_id, expression, last_fired) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id, expression) DO NOTHING",
        )
        .bind(repository_id)
        .bind(expression)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT last_fired FROM schedules WHERE repository_id = $1 AND expression = $2",
        )
        .bind(repository_id)
        .bind(expression)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("last_fired")?)
    }

    /// Moves a schedule from `previous` to `fired`; `false` if someone else already did
    /// (another server, or this one before a restart), so each occurrence starts once.
    pub async fn schedule_fired(
        &self,
        repository_id: &str,
        expression: &str,
        previous: i64,
        fired: i64,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "UPDATE schedules SET last_fired = $1 WHERE repository_id = $2 AND expression = $3 AND last_fired = $4",
        )
        .bind(fired)
        .bind(repository_id)
        .bind(expression)
        .bind(previous)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Accepts a delivery: records its id (if any) and queues it for the intake worker,
    /// in one transaction. `None` when the delivery id was already handled.
    pub async fn enqueue_intake(&self, item: &Intake) -> Result<Option<String>> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        if let Some(delivery) = &item.delivery_id {
            let done = sqlx::query(
                "INSERT INTO deliveries (provider, delivery_id, repository_id, received_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (provider, delivery_id) DO NOTHING",
            )
            .bind(&item.provider)
            .bind(delivery)
            .bind(&item.repository_id)
            .bind(item.received_at)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let id = insert_intake(&mut tx, item, None).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Queues `item` without looking for an earlier delivery of it (a redelivery asked
    /// for); its id.
    pub(crate) async fn enqueue(
        &self,
        item: &Intake,
        redelivery_of: Option<&str>,
    ) -> Result<String> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        let id = insert_intake(&mut tx, item, redelivery_of).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The repositories with waiting deliveries, the one waiting longest first.
    pub async fn pending_repositories(&self, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT repository_id FROM intake GROUP BY repository_id ORDER BY MIN(id) LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(r,)| r).collect())
    }

    /// Takes (or keeps) the handling of `repository`'s waiting deliveries for `owner`
    /// until `until`: `true` if it is `owner`'s now. Another server's claim is taken
    /// over only once its lease ran out.
    pub async fn claim_intake(&self, repository: &str, owner: &str, until: i64) -> Result<bool> {
        let _turn = self.turn().await;
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO intake_claims (repository_id, owner, lease_until) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id) DO UPDATE SET owner = $2, lease_until = $3 \
             WHERE intake_claims.owner = $2 OR intake_claims.lease_until < $4",
        )
        .bind(repository)
        .bind(owner)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `owner` is done with `repository`'s deliveries for now.
    pub async fn release_intake(&self, repository: &str, owner: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("DELETE FROM intake_claims WHERE repository_id = $1 AND owner = $2")
            .bind(repository)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest waiting deliveries of one repository.
    pub async fn pending_intake_of(&self, repository: &str, limit: i64) -> Result<Vec<Intake>> {
        let rows = sqlx::query(&format!(
            "SELECT {INTAKE_COLUMNS} FROM intake WHERE repository_id = $1 ORDER BY id LIMIT $2"
        ))
        .bind(repository)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(intake_from_row).collect()
    }

    /// The oldest waiting deliveries.
    pub async fn pending_intake(&self, limit: i64) -> Result<Vec<Intake>> {
        let rows = sqlx::query(&format!(
            "SELECT {INTAKE_COLUMNS} FROM intake ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(intake_from_row).collect()
    }

    /// A delivery was handled: its outcome is a run id, or why no run was started.
    /// With `retry`, its delivery id is forgotten so that a redelivery is accepted.
    pub async fn finish_intake(
        &self,
        item: &Intake,
        run_id: Option<&str>,
        outcome: &str,
        retry: bool,
    ) -> Result<()> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM intake WHERE id = $1")
            .bind(&item.id)
            .execute(&mut *tx)
            .await?;
        let status = match (run_id, retry) {
            (Some(_), _) => DeliveryStatus::Started,
            (None, true) => DeliveryStatus::Failed,
            (None, false) if outcome.starts_with(AWAITING_APPROVAL) => {
                DeliveryStatus::AwaitingApproval
            }
            (None, false) => DeliveryStatus::Declined,
        };
        crate::deliveries::log_finished(&mut tx, &item.id, status, run_id, outcome).await?;
        if let Some(delivery) = &item.delivery_id {
            if retry {
                sqlx::query("DELETE FROM deliveries WHERE provider = $1 AND delivery_id = $2")
                    .bind(&item.provider)
                    .bind(delivery)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query("UPDATE deliveries SET run_id = $1, outcome = $2 WHERE provider = $3 AND delivery_id = $4")
                    .bind(run_id)
                    .bind(outcome)
                    .bind(&item.provider)
                    .bind(delivery)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// How an intake outcome that waits for a developer's approval begins (the delivery is
/// then `awaiting_approval`, not `declined`).
pub const AWAITING_APPROVAL: &str = "awaiting approval: ";

/// Inserts a delivery into the intake queue and the delivery log; its id.
async fn insert_intake(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    item: &Intake,
    redelivery_of: Option<&str>,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let sql = format!(
        "INSERT INTO intake ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        crate::deliveries::INTAKE_INSERT
    );
    crate::deliveries::bind_intake(sqlx::query(&sql), &id, item)
        .execute(&mut **tx)
        .await?;
    crate::deliveries::log_accepted(tx, item, &id, redelivery_of).await?;
    Ok(id)
}
