//! Terraform's state of each environment, kept by Ferry through Terraform's `http`
//! backend (issue 14): every version (sealed by the server before it gets here), the
//! lock Terraform takes around a change, and the short-lived credentials of the
//! deployments that run Terraform.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Result, Store, now_ms};

/// One version of an environment's state, without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InfraVersion {
    pub version: i64,
    /// Terraform's own counter and lineage of the state, when it says.
    pub serial: Option<i64>,
    pub lineage: Option<String>,
    /// The state's size in bytes (0: deleted at this version).
    pub size: i64,
    pub sha256: String,
    pub deployment_id: Option<String>,
    pub created_at: i64,
    pub deleted: bool,
}

/// What a version holds, sealed.
#[derive(Debug, Clone)]
pub struct SealedState {
    pub info: InfraVersion,
    pub sealed: String,
}

/// A new version of a state.
#[derive(Debug, Clone)]
pub struct NewState<'a> {
    /// Empty: the state is deleted.
    pub sealed: &'a str,
    pub serial: Option<i64>,
    pub lineage: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a str,
    pub deployment_id: Option<&'a str>,
}

/// Who may use an environment's backend, as a credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraGrant {
    pub repository_id: String,
    pub environment: String,
    pub deployment_id: Option<String>,
    /// It may write (and delete) the state; a plan's may only read and lock it.
    pub may_write: bool,
}

const VERSION_COLUMNS: &str =
    "version, serial, lineage, size, sha256, deployment_id, created_at, sealed";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<SealedState> {
    let sealed: String = row.try_get("sealed")?;
    Ok(SealedState {
        info: InfraVersion {
            version: row.try_get("version")?,
            serial: row.try_get("serial")?,
            lineage: row.try_get("lineage")?,
            size: row.try_get("size")?,
            sha256: row.try_get("sha256")?,
            deployment_id: row.try_get("deployment_id")?,
            created_at: row.try_get("created_at")?,
            deleted: sealed.is_empty(),
        },
        sealed,
    })
}

impl Store {
    /// Keeps a new version of an environment's state; its number.
    pub async fn put_infra_state(
        &self,
        repository_id: &str,
        environment: &str,
        state: &NewState<'_>,
    ) -> Result<i64> {
        let _turn = self.turn().await;
        let row = sqlx::query(
            "INSERT INTO infra_states (repository_id, environment, version, sealed, serial, \
             lineage, size, sha256, deployment_id, created_at) \
             SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5, $6, $7, $8, $9 \
             FROM infra_states WHERE repository_id = $1 AND environment = $2 \
             RETURNING version",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(state.sealed)
        .bind(state.serial)
        .bind(state.lineage)
        .bind(state.size)
        .bind(state.sha256)
        .bind(state.deployment_id)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("version")?)
    }

    /// A version of an environment's state (the latest when `version` is `None`).
    pub async fn infra_state(
        &self,
        repository_id: &str,
        environment: &str,
        version: Option<i64>,
    ) -> Result<Option<SealedState>> {
        let row = match version {
            Some(v) => {
                sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM infra_states \
                     WHERE repository_id = $1 AND environment = $2 AND version = $3"
                ))
                .bind(repository_id)
                .bind(environment)
                .bind(v)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM infra_states \
                     WHERE repository_id = $1 AND environment = $2 ORDER BY version DESC LIMIT 1"
                ))
                .bind(repository_id)
                .bind(environment)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.as_ref().map(version_from_row).transpose()
    }

    /// Every version of an environment's state, newest first.
    pub async fn infra_versions(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Vec<InfraVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM infra_states \
             WHERE repository_id = $1 AND environment = $2 ORDER BY version DESC"
        ))
        .bind(repository_id)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| version_from_row(r).map(|s| s.info))
            .collect()
    }

    /// Takes the environment's state lock for `lock_id`: `None` when taken (or already
    /// held by this id), else the holder's id and info.
    pub async fn lock_infra(
        &self,
        repository_id: &str,
        environment: &str,
        lock_id: &str,
        info: &str,
    ) -> Result<Option<(String, String)>> {
        self.lock_infra_for(repository_id, environment, lock_id, info, None)
            .await
    }

    /// [`Self::lock_infra`] by a credential of `deployment_id` (the lock is let go with
    /// [`Self::unlock_infra_of`]).
    pub async fn lock_infra_for(
        &self,
        repository_id: &str,
        environment: &str,
        lock_id: &str,
        info: &str,
        deployment_id: Option<&str>,
    ) -> Result<Option<(String, String)>> {
        let _turn = self.turn().await;
        sqlx::query(
            "INSERT INTO infra_locks (repository_id, environment, lock_id, info, created_at, \
             deployment_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(lock_id)
        .bind(info)
        .bind(now_ms())
        .bind(deployment_id)
        .execute(&self.pool)
        .await?;
        let held = self.infra_lock(repository_id, environment).await?;
        Ok(held.filter(|(id, _)| id != lock_id))
    }

    /// Who holds the environment's state lock: its id and info.
    pub async fn infra_lock(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT lock_id, info FROM infra_locks WHERE repository_id = $1 AND environment = $2",
        )
        .bind(repository_id)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("lock_id")?, r.try_get("info")?)),
            None => None,
        })
    }

    /// Lets go of the lock if `lock_id` holds it (any holder with `None`, as
    /// `terraform force-unlock` may): whether it was let go.
    pub async fn unlock_infra(
        &self,
        repository_id: &str,
        environment: &str,
        lock_id: Option<&str>,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "DELETE FROM infra_locks WHERE repository_id = $1 AND environment = $2 \
             AND ($3 IS NULL OR lock_id = $3)",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(lock_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Lets go of the locks taken by credentials of `deployment_id` (`None`: of any
    /// deployment, as a starting server does: no deployment runs Terraform then); how
    /// many.
    pub async fn unlock_infra_of(&self, deployment_id: Option<&str>) -> Result<u64> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "DELETE FROM infra_locks WHERE deployment_id IS NOT NULL \
             AND ($1 IS NULL OR deployment_id = $1)",
        )
        .bind(deployment_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ends every credential made for a deployment (a starting server's: no deployment
    /// runs Terraform then).
    pub async fn end_all_deployment_credentials(&self) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("DELETE FROM infra_credentials WHERE deployment_id IS NOT NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A credential of an environment's backend, found again by `hash` (of its password)
    /// until `expires_at`.
    pub async fn create_infra_credential(
        &self,
        hash: &str,
        grant: &InfraGrant,
        expires_at: i64,
    ) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query(
            "INSERT INTO infra_credentials (hash, repository_id, environment, deployment_id, \
             expires_at, may_write) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(&grant.repository_id)
        .bind(&grant.environment)
        .bind(grant.deployment_id.as_deref())
        .bind(expires_at)
        .bind(i64::from(grant.may_write))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the credential whose password hashes to `hash` grants, if it lives.
    pub async fn infra_credential(&self, hash: &str) -> Result<Option<InfraGrant>> {
        let row = sqlx::query(
            "SELECT repository_id, environment, deployment_id, may_write FROM \
             infra_credentials WHERE hash = $1 AND expires_at > $2",
        )
        .bind(hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(InfraGrant {
                repository_id: r.try_get("repository_id")?,
                environment: r.try_get("environment")?,
                deployment_id: r.try_get("deployment_id")?,
                may_write: r.try_get::<i64, _>("may_write")? != 0,
            }),
            None => None,
        })
    }

    /// Ends a deployment's credentials (it has finished), and every expired one.
    pub async fn end_infra_credentials(&self, deployment_id: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("DELETE FROM infra_credentials WHERE deployment_id = $1 OR expires_at <= $2")
            .bind(deployment_id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A Terraform plan made for a deployment, without the plan file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InfraPlan {
    pub id: String,
    pub deployment_id: String,
    pub repository_id: String,
    pub environment: String,
    /// The SHA-256 of the plan file: what an approval approves.
    pub sha256: String,
    /// What the plan changes (JSON, see `ferry_deliver::infra::PlanSummary`).
    pub summary: String,
    /// The state version it was made against (`None`: there was no state).
    pub base_version: Option<i64>,
    /// A plan that destroys the environment (`ferry envs destroy`).
    pub destroy: bool,
    pub created_at: i64,
    /// When it was applied (`None`: not yet).
    pub applied_at: Option<i64>,
}

/// A plan with its file and, once applied, the module's outputs, both sealed.
#[derive(Debug, Clone)]
pub struct SealedPlan {
    pub info: InfraPlan,
    pub sealed: String,
    pub outputs: Option<String>,
}

/// A new plan of a deployment.
#[derive(Debug, Clone)]
pub struct NewPlan<'a> {
    pub deployment_id: &'a str,
    pub repository_id: &'a str,
    pub environment: &'a str,
    pub sha256: &'a str,
    pub sealed: &'a str,
    pub summary: &'a str,
    pub base_version: Option<i64>,
    pub destroy: bool,
}

const PLAN_COLUMNS: &str = "id, deployment_id, repository_id, environment, sha256, summary, \
     base_version, destroy, created_at, applied_at, sealed, outputs";

fn plan_from_row(row: &sqlx::any::AnyRow) -> Result<SealedPlan> {
    let destroy: i64 = row.try_get("destroy")?;
    Ok(SealedPlan {
        info: InfraPlan {
            id: row.try_get("id")?,
            deployment_id: row.try_get("deployment_id")?,
            repository_id: row.try_get("repository_id")?,
            environment: row.try_get("environment")?,
            sha256: row.try_get("sha256")?,
            summary: row.try_get("summary")?,
            base_version: row.try_get("base_version")?,
            destroy: destroy != 0,
            created_at: row.try_get("created_at")?,
            applied_at: row.try_get("applied_at")?,
        },
        sealed: row.try_get("sealed")?,
        outputs: row.try_get("outputs")?,
    })
}

impl Store {
    /// The number of the environment's latest state version (`None`: it has none).
    pub async fn latest_infra_version(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(version) AS version FROM infra_states \
             WHERE repository_id = $1 AND environment = $2",
        )
        .bind(repository_id)
        .bind(environment)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("version")?)
    }

    /// Records a new plan of a deployment, which replaces the one before: approvals of
    /// any other plan of the deployment no longer count, and go (one transaction).
    pub async fn put_infra_plan(&self, plan: &NewPlan<'_>) -> Result<InfraPlan> {
        let _turn = self.turn().await;
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO infra_plans (id, deployment_id, repository_id, environment, sha256, \
             sealed, summary, base_version, destroy, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&id)
        .bind(plan.deployment_id)
        .bind(plan.repository_id)
        .bind(plan.environment)
        .bind(plan.sha256)
        .bind(plan.sealed)
        .bind(plan.summary)
        .bind(plan.base_version)
        .bind(i64::from(plan.destroy))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM approvals WHERE deployment_id = $1 AND decision = 'approve' \
             AND (plan_sha256 IS NULL OR plan_sha256 <> $2)",
        )
        .bind(plan.deployment_id)
        .bind(plan.sha256)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        drop(_turn);
        self.infra_plan(plan.deployment_id)
            .await?
            .map(|p| p.info)
            .ok_or_else(|| crate::Error::NotFound("the plan just made".into()))
    }

    /// The deployment's latest plan (the one it applies, or applied).
    pub async fn infra_plan(&self, deployment_id: &str) -> Result<Option<SealedPlan>> {
        let row = sqlx::query(&format!(
            "SELECT {PLAN_COLUMNS} FROM infra_plans WHERE deployment_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(deployment_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(plan_from_row).transpose()
    }

    /// Every plan of an environment, newest first (at most `limit`).
    pub async fn infra_plans(
        &self,
        repository_id: &str,
        environment: &str,
        limit: i64,
    ) -> Result<Vec<InfraPlan>> {
        let rows = sqlx::query(&format!(
            "SELECT {PLAN_COLUMNS} FROM infra_plans WHERE repository_id = $1 \
             AND environment = $2 ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(repository_id)
        .bind(environment)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| plan_from_row(r).map(|p| p.info))
            .collect()
    }

    /// The plan was applied; the module's outputs then (sealed).
    pub async fn infra_plan_applied(&self, plan_id: &str, outputs: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE infra_plans SET applied_at = $1, outputs = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(outputs)
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
