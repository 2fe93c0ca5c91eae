//! The health watch's record: each watched environment's state now, and every change
//! of it (see `ferry_deliver::health`).

use serde::{Deserialize, Serialize};

use crate::{Result, Store, now_ms};

/// How a live environment is, as its health watch last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The last check passed.
    Healthy,
    /// The last check failed, fewer times in a row than the watch's `failures`.
    Degraded,
    /// `failures` checks in a row failed.
    Down,
}

impl Health {
    pub const ALL: [Health; 3] = [Health::Healthy, Health::Degraded, Health::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "healthy" => Self::Healthy,
            "degraded" => Self::Degraded,
            "down" => Self::Down,
            _ => return None,
        })
    }
}

/// An environment's health now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnvironmentHealth {
    pub repository_id: String,
    pub environment: String,
    /// The live deployment it was last seen with.
    pub deployment_id: String,
    pub state: Health,
    /// Since when (milliseconds since the epoch).
    pub since: i64,
    /// What failed (none when healthy).
    pub reason: Option<String>,
}

/// One change of an environment's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthChange {
    pub id: String,
    pub repository_id: String,
    pub environment: String,
    pub deployment_id: String,
    /// None: the first state the environment was seen in.
    pub from_state: Option<Health>,
    pub to_state: Health,
    pub reason: Option<String>,
    pub at: i64,
}

#[rustfmt::skip]
crate::row::record!(HEALTH_COLUMNS, health_from_row, EnvironmentHealth {
    repository_id, environment, deployment_id, state, since, reason
});

#[rustfmt::skip]
crate::row::record!(CHANGE_COLUMNS, change_from_row, HealthChange {
    id, repository_id, environment, deployment_id, from_state, to_state, reason, at
});

impl Store {
    /// Records that the environment, running deployment `deployment_id`, is `state`:
    /// the change, when it is one (another state, or the first state of another
    /// deployment); `None` when it was so already.
    pub async fn set_health(
        &self,
        repository_id: &str,
        environment: &str,
        deployment_id: &str,
        state: Health,
        reason: Option<&str>,
    ) -> Result<Option<HealthChange>> {
        let _turn = self.turn().await;
        let mut tx = self.pool.begin().await?;
        // A write first, so that the transaction holds the write lock before it reads:
        // SQLite refuses (without waiting) a read transaction's later write when
        // another connection wrote in between; PostgreSQL locks the row.
        sqlx::query(
            "UPDATE environment_health SET since = since
             WHERE repository_id = $1 AND environment = $2",
        )
        .bind(repository_id)
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        let now: Option<EnvironmentHealth> = sqlx::query(&format!(
            "SELECT {HEALTH_COLUMNS} FROM environment_health
             WHERE repository_id = $1 AND environment = $2"
        ))
        .bind(repository_id)
        .bind(environment)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(health_from_row)
        .transpose()?;
        if now
            .as_ref()
            .is_some_and(|h| h.deployment_id == deployment_id && h.state == state)
        {
            return Ok(None);
        }
        let at = now_ms();
        sqlx::query(
            "INSERT INTO environment_health
               (repository_id, environment, deployment_id, state, since, reason)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id, environment) DO UPDATE SET
               deployment_id = excluded.deployment_id, state = excluded.state,
               since = excluded.since, reason = excluded.reason",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(deployment_id)
        .bind(state.as_str())
        .bind(at)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let change = HealthChange {
            id: uuid::Uuid::now_v7().to_string(),
            repository_id: repository_id.to_string(),
            environment: environment.to_string(),
            deployment_id: deployment_id.to_string(),
            from_state: now.map(|h| h.state),
            to_state: state,
            reason: reason.map(str::to_string),
            at,
        };
        sqlx::query(&format!(
            "INSERT INTO health_changes ({CHANGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&change.id)
        .bind(repository_id)
        .bind(environment)
        .bind(deployment_id)
        .bind(change.from_state.map(Health::as_str))
        .bind(state.as_str())
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(change))
    }

    /// The environment's health now (none: it was never watched).
    pub async fn health(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Option<EnvironmentHealth>> {
        sqlx::query(&format!(
            "SELECT {HEALTH_COLUMNS} FROM environment_health
             WHERE repository_id = $1 AND environment = $2"
        ))
        .bind(repository_id)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(health_from_row)
        .transpose()
    }

    /// Every watched environment's health whose deployment is still live (the
    /// repository's when `repository_id` is given), by repository and name.
    pub async fn healths(&self, repository_id: Option<&str>) -> Result<Vec<EnvironmentHealth>> {
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM environment_health h
             JOIN deployments d ON d.id = h.deployment_id AND d.status = 'live'
             WHERE ($1 = '' OR h.repository_id = $1)
             ORDER BY h.repository_id, h.environment",
            cols = HEALTH_COLUMNS
                .split(", ")
                .map(|c| format!("h.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(repository_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(health_from_row).collect()
    }

    /// The repository's health changes (of `environment` when given) at or after
    /// `since`, oldest first.
    pub async fn health_changes_since(
        &self,
        repository_id: &str,
        environment: Option<&str>,
        since: i64,
    ) -> Result<Vec<HealthChange>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM health_changes
             WHERE repository_id = $1 AND ($2 = '' OR environment = $2) AND at >= $3
             ORDER BY at, id"
        ))
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    /// The environment's health changes, newest first.
    pub async fn health_changes(
        &self,
        repository_id: &str,
        environment: &str,
        limit: i64,
    ) -> Result<Vec<HealthChange>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM health_changes
             WHERE repository_id = $1 AND environment = $2
             ORDER BY at DESC, id DESC LIMIT $3"
        ))
        .bind(repository_id)
        .bind(environment)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }
}
