//! Deployments (one release going to one environment) and their approvals. State
//! changes are compare-and-set, so that two servers (or two requests) never move one
//! deployment twice; partial unique indexes keep one deployment in progress and one live
//! release per environment.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store, conflict, now_ms};

/// What is deployed, and how the deployment came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// Asked for with `ferry promote` or the API.
    Promotion,
    /// Started by the environment's `auto` policy.
    Auto,
    /// Back to an earlier release (by `ferry rollback` or after a failed verification).
    Rollback,
    /// `ferry envs destroy`: the environment's Terraform destroys what it made, and what
    /// was live stops.
    Destroy,
}

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Waits for its turn (another deployment of the environment is in progress).
    Queued,
    AwaitingApproval,
    Deploying,
    Verifying,
    /// The release running in the environment now.
    Live,
    /// Was live; a later deployment replaced it.
    Replaced,
    Failed,
    /// Failed, and the release before it was deployed again.
    RolledBack,
    Rejected,
    Cancelled,
    /// A destroy that was carried out: nothing is live in the environment after it.
    Destroyed,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Deploying => "deploying",
            Self::Verifying => "verifying",
            Self::Live => "live",
            Self::Replaced => "replaced",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "awaiting_approval" => Self::AwaitingApproval,
            "deploying" => Self::Deploying,
            "verifying" => Self::Verifying,
            "live" => Self::Live,
            "replaced" => Self::Replaced,
            "failed" => Self::Failed,
            "rolled_back" => Self::RolledBack,
            "rejected" => Self::Rejected,
            "cancelled" => Self::Cancelled,
            "destroyed" => Self::Destroyed,
            _ => return None,
        })
    }

    /// Ended: it will not change any more (`Live` changes to `Replaced` later).
    pub fn finished(self) -> bool {
        matches!(
            self,
            Self::Replaced
                | Self::Failed
                | Self::RolledBack
                | Self::Rejected
                | Self::Cancelled
                | Self::Destroyed
        )
    }
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promotion => "promotion",
            Self::Auto => "auto",
            Self::Rollback => "rollback",
            Self::Destroy => "destroy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "promotion" => Self::Promotion,
            "auto" => Self::Auto,
            "rollback" => Self::Rollback,
            "destroy" => Self::Destroy,
            _ => return None,
        })
    }
}

/// One release going to one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deployment {
    pub id: String,
    pub repository_id: String,
    pub environment: String,
    /// Counts the environment's deployments: 1, 2, …
    pub number: i64,
    pub release_id: String,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    /// The release that was live when it started (what a rollback returns to).
    pub previous_release_id: Option<String>,
    /// What configuration it used: variable and secret names with their update times.
    pub config: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When its health checks started (it entered `verifying`) and when they ended (it
    /// went live or failed); none when it never got that far.
    pub verification_started_at: Option<i64>,
    pub verification_finished_at: Option<i64>,
    /// When it went live (none: it never did).
    pub live_at: Option<i64>,
    /// What it made where its target keeps things: the commit the `gitops` target
    /// pushed (none for other targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<String>,
}

/// One approval or rejection of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    pub deployment_id: String,
    pub user_id: String,
    pub user_name: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: Option<String>,
    pub created_at: i64,
    /// The SHA-256 of the Terraform plan approved, for a deployment that runs one: an
    /// approval counts for that plan only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_sha256: Option<String>,
}

// The columns [`deployment_from_row`] reads (of `deployments`).
#[rustfmt::skip]
crate::row::record!(DEPLOYMENT_COLUMNS, deployment_from_row, Deployment {
    id, repository_id, environment, number, release_id, kind, status, reason,
    requested_by, previous_release_id, config, created_at, started_at, finished_at,
    verification_started_at, verification_finished_at, live_at, target_ref
});

// The columns [`approval_from_row`] reads (of `approvals`).
#[rustfmt::skip]
crate::row::record!(APPROVAL_COLUMNS, approval_from_row, Approval {
    deployment_id, user_id, user_name, decision, comment, created_at, plan_sha256
});

/// `'queued', 'live'`: statuses as an SQL list for `IN (…)` (they are fixed words).
fn status_list(statuses: &[DeploymentStatus]) -> String {
    let quoted: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    quoted.join(", ")
}

impl Store {
    /// Records what the deployment made where its target keeps things (a commit).
    pub async fn set_target_ref(&self, deployment_id: &str, target_ref: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE deployments SET target_ref = $1 WHERE id = $2")
            .bind(target_ref)
            .bind(deployment_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a deployment request (its number is the environment's next).
    pub async fn create_deployment(
        &self,
        repository_id: &str,
        environment: &str,
        release_id: &str,
        kind: DeploymentKind,
        status: DeploymentStatus,
        requested_by: Option<&str>,
    ) -> Result<Deployment> {
        let _turn = self.turn().await;
        let id = uuid::Uuid::now_v7().to_string();
        // The number comes from the table in the same statement; a concurrent insert
        // that takes the same number fails on the unique key and is retried.
        for _ in 0..20 {
            let done = sqlx::query(
                "INSERT INTO deployments (id, repository_id, environment, number, release_id, kind,
                   status, requested_by, created_at)
                 SELECT $1, $2, $3, COALESCE(MAX(number), 0) + 1, $4, $5, $6, $7, $8
                 FROM deployments WHERE repository_id = $2 AND environment = $3",
            )
            .bind(&id)
            .bind(repository_id)
            .bind(environment)
            .bind(release_id)
            .bind(kind.as_str())
            .bind(status.as_str())
            .bind(requested_by)
            .bind(now_ms())
            .execute(&self.pool)
            .await;
            match done {
                Ok(_) => return self.deployment(&id).await,
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "a deployment number of environment `{environment}`"
        )))
    }

    pub async fn deployment(&self, id: &str) -> Result<Deployment> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("deployment `{id}`")))?;
        deployment_from_row(&row)
    }

    /// A deployment by id, or by `ENV#NUMBER` within the repository.
    pub async fn find_deployment(&self, repository_id: &str, key: &str) -> Result<Deployment> {
        // `ENV#N`, or `ENV.N` where a `#` does not fit (a URL path).
        let split = key.rsplit_once('#').or_else(|| key.rsplit_once('.'));
        if let Some((env, number)) = split
            && let Ok(number) = number.parse::<i64>()
        {
            let row = sqlx::query(&format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
                 WHERE repository_id = $1 AND environment = $2 AND number = $3"
            ))
            .bind(repository_id)
            .bind(env)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("deployment `{key}`")))?;
            return deployment_from_row(&row);
        }
        let d = self.deployment(key).await?;
        if d.repository_id != repository_id {
            return Err(Error::NotFound(format!("deployment `{key}`")));
        }
        Ok(d)
    }

    /// An environment's deployments, newest first.
    pub async fn deployments(
        &self,
        repository_id: &str,
        environment: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
             WHERE repository_id = $1 AND ($2 = '' OR environment = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// The repository's deployments (of `environment` when given) that ended at or
    /// after `since`, or have not ended; oldest first (what DORA's figures read).
    pub async fn deployments_since(
        &self,
        repository_id: &str,
        environment: Option<&str>,
        since: i64,
    ) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
             WHERE repository_id = $1 AND ($2 = '' OR environment = $2)
               AND (finished_at >= $3 OR finished_at IS NULL)
             ORDER BY created_at, id"
        ))
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// Deployments in any of `statuses`, oldest first (all repositories).
    pub async fn deployments_in(&self, statuses: &[DeploymentStatus]) -> Result<Vec<Deployment>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN ({}) ORDER BY created_at, id",
            status_list(statuses)
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// Where every environment of a repository stands: its live deployment and those in
    /// progress or waiting, oldest first, read in one statement so that the picture is
    /// of one moment (a deployment that went live and the next environment's deployment
    /// it started are never seen one without the other).
    pub async fn current_deployments(&self, repository_id: &str) -> Result<Vec<Deployment>> {
        let current = [
            DeploymentStatus::Live,
            DeploymentStatus::Queued,
            DeploymentStatus::AwaitingApproval,
            DeploymentStatus::Deploying,
            DeploymentStatus::Verifying,
        ];
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
             WHERE repository_id = $1 AND status IN ({})
             ORDER BY created_at, id",
            status_list(&current)
        ))
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// The live deployment of an environment.
    pub async fn live_deployment(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Option<Deployment>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments
             WHERE repository_id = $1 AND environment = $2 AND status = 'live'"
        ))
        .bind(repository_id)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    /// Moves a deployment from one of `from` to `to` (compare-and-set). False when it
    /// was not in `from` — someone else moved it first.
    pub async fn move_deployment(
        &self,
        id: &str,
        from: &[DeploymentStatus],
        to: DeploymentStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let now = now_ms();
        let started = matches!(to, DeploymentStatus::Deploying);
        let finished = to.finished() || to == DeploymentStatus::Live;
        let verifying = to == DeploymentStatus::Verifying;
        // Leaving `verifying` (`status` on the right is the old one) ends verification.
        let sql = format!(
            "UPDATE deployments SET status = $1, reason = COALESCE($2, reason),
               started_at = CASE WHEN $3 = 1 THEN $4 ELSE started_at END,
               finished_at = CASE WHEN $5 = 1 THEN $4 ELSE finished_at END,
               verification_started_at =
                 CASE WHEN $7 = 1 THEN $4 ELSE verification_started_at END,
               verification_finished_at =
                 CASE WHEN status = 'verifying' AND $7 = 0 THEN $4 ELSE verification_finished_at END
             WHERE id = $6 AND status IN ({})",
            status_list(from)
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(reason)
            .bind(started as i64)
            .bind(now)
            .bind(finished as i64)
            .bind(id)
            .bind(verifying as i64)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, "a deployment in progress in this environment".into()))?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes `id` from queued (or approved) to deploying, recording what was live; false
    /// when another deployment of the environment is in progress or it moved already.
    pub async fn start_deployment(
        &self,
        id: &str,
        from: DeploymentStatus,
        previous_release_id: Option<&str>,
        config: &str,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "UPDATE deployments SET status = 'deploying', started_at = $1, previous_release_id = $2,
               config = $3
             WHERE id = $4 AND status = $5",
        )
        .bind(now_ms())
        .bind(previous_release_id)
        .bind(config)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await;
        match done {
            Ok(d) => Ok(d.rows_affected() == 1),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes `id` the live deployment of its environment: the one live before becomes
    /// `replaced`, in one transaction.
    pub async fn make_live(&self, id: &str) -> Result<bool> {
        self.make_live_rolling_back(id, None).await
    }

    /// [`Store::make_live`]; with `rolled_back`, the deployment live before becomes
    /// `rolled_back` with that reason instead (a rollback of one that went down), in
    /// the same transaction: nobody sees the rollback live and the other `replaced`.
    pub async fn make_live_rolling_back(
        &self,
        id: &str,
        rolled_back: Option<(&str, &str)>,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let d = self.deployment(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE deployments SET status = 'replaced'
             WHERE repository_id = $1 AND environment = $2 AND status = 'live' AND id <> $3",
        )
        .bind(&d.repository_id)
        .bind(&d.environment)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if let Some((was, reason)) = rolled_back {
            sqlx::query(
                "UPDATE deployments SET status = 'rolled_back', reason = $1
                 WHERE id = $2 AND status = 'replaced'",
            )
            .bind(reason)
            .bind(was)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query(
            "UPDATE deployments SET status = 'live', finished_at = $1, live_at = $1,
               verification_finished_at =
                 CASE WHEN status = 'verifying' THEN $1 ELSE verification_finished_at END
             WHERE id = $2 AND status IN ('deploying', 'verifying')",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A destroy deployment (in `deploying`) was carried out: it is `destroyed`, and the
    /// environment's live deployment `replaced` (one transaction). `false` when it
    /// moved meanwhile (nothing changes then).
    pub async fn finish_destroy(&self, id: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let d = self.deployment(id).await?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE deployments SET status = 'destroyed', finished_at = $1
             WHERE id = $2 AND status = 'deploying'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE deployments SET status = 'replaced'
             WHERE repository_id = $1 AND environment = $2 AND status = 'live'",
        )
        .bind(&d.repository_id)
        .bind(&d.environment)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records an approval or a rejection (of the Terraform plan `plan`, by its SHA-256,
    /// for a deployment that runs one; `false`, nothing recorded, when that is not the
    /// deployment's latest plan); a second decision of the same user conflicts.
    pub async fn add_approval(
        &self,
        deployment_id: &str,
        user_id: &str,
        user_name: &str,
        decision: &str,
        comment: Option<&str>,
        plan: Option<&str>,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        // A decision on a plan is recorded only while that plan is the deployment's
        // latest (one statement: a new plan in between makes it record nothing).
        let done = sqlx::query(
            "INSERT INTO approvals (deployment_id, user_id, user_name, decision, comment,
               created_at, plan_sha256)
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE $7 IS NULL OR $7 = (SELECT sha256 FROM infra_plans WHERE deployment_id = $1
                                       ORDER BY created_at DESC, id DESC LIMIT 1)",
        )
        .bind(deployment_id)
        .bind(user_id)
        .bind(user_name)
        .bind(decision)
        .bind(comment)
        .bind(now_ms())
        .bind(plan)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("a decision of {user_name} on this deployment")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a user's approval of a deployment made before `before` (ms): one that has
    /// expired, so that the user may approve again.
    pub async fn forget_expired_approval(
        &self,
        deployment_id: &str,
        user_id: &str,
        before: i64,
    ) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "DELETE FROM approvals WHERE deployment_id = $1 AND user_id = $2
               AND decision = 'approve' AND created_at < $3",
        )
        .bind(deployment_id)
        .bind(user_id)
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn approvals(&self, deployment_id: &str) -> Result<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE deployment_id = $1
             ORDER BY created_at, user_name"
        ))
        .bind(deployment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }
}
