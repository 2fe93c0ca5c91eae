//! Repositories a server watches.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Error, NewRepository, Repository, Result, Store, now_ms};

fn repo_from(row: &AnyRow) -> Result<Repository> {
    Ok(Repository {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        default_branch: row.try_get("default_branch")?,
        webhook_secret: row.try_get("webhook_secret")?,
        poll_interval_s: row.try_get("poll_interval_s")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub async fn create_repository(&self, new: &NewRepository) -> Result<Repository> {
        let id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(
            "INSERT INTO repositories (id, name, url, default_branch, webhook_secret, poll_interval_s, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.url)
        .bind(&new.default_branch)
        .bind(&new.webhook_secret)
        .bind(new.poll_interval_s)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                Error::Conflict(format!("repository {}", new.url))
            }
            _ => Error::Db(e),
        })?;
        repo_from(&row)
    }

    pub async fn repositories(&self) -> Result<Vec<Repository>> {
        let rows = sqlx::query("SELECT * FROM repositories ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(repo_from).collect()
    }

    /// A repository by id or by name.
    pub async fn repository(&self, id_or_name: &str) -> Result<Repository> {
        let row = sqlx::query(
            "SELECT * FROM repositories WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1",
        )
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("repository `{id_or_name}`")))?;
        repo_from(&row)
    }
}

impl Store {
    /// Records a webhook delivery; `false` when this delivery was already recorded.
    pub async fn record_delivery(
        &self,
        provider: &str,
        delivery_id: &str,
        repository_id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO deliveries (provider, delivery_id, repository_id, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (provider, delivery_id) DO NOTHING",
        )
        .bind(provider)
        .bind(delivery_id)
        .bind(repository_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Links a recorded delivery to the run it started.
    pub async fn delivery_started(
        &self,
        provider: &str,
        delivery_id: &str,
        run_id: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE deliveries SET run_id = $1 WHERE provider = $2 AND delivery_id = $3")
            .bind(run_id)
            .bind(provider)
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a delivery whose handling failed, so that a redelivery can try again.
    pub async fn forget_delivery(&self, provider: &str, delivery_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM deliveries WHERE provider = $1 AND delivery_id = $2")
            .bind(provider)
            .bind(delivery_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
