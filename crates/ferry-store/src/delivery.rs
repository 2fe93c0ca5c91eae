//! Delivery in the store: releases (immutable once sealed), deployments and their
//! approvals, per-environment variables and sealed secrets, approver groups, and the
//! audit log. State changes of deployments are compare-and-set, so that two servers (or
//! two requests) never move one deployment twice; partial unique indexes keep one
//! deployment in progress and one live release per environment.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Error, Result, SecretKey, Store, conflict, now_ms};

/// A file of a release, kept in the content-addressed store by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseArtifact {
    pub job: String,
    /// Relative path inside the release.
    pub path: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub size: i64,
    /// Unix permission bits.
    pub mode: i64,
}

/// An image of a release, by the registry's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseImage {
    pub job: String,
    /// The repository, e.g. `127.0.0.1:5000/team/app`.
    pub name: String,
    pub digest: String,
}

impl ReleaseImage {
    /// `name@digest`: what a pull or a container uses.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.digest)
    }
}

/// A sealed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub repository_id: String,
    /// The tag where there is one, else `r<run number>-<short sha>`.
    pub name: String,
    pub run_id: String,
    pub run_number: i64,
    pub commit_sha: String,
    pub git_ref: String,
    pub tag: Option<String>,
    pub author: String,
    pub triggered_by: Option<String>,
    /// sha256 of the stored plan the run executed.
    pub plan_hash: String,
    pub ferry_version: String,
    /// The `release`/`environments`/`deploy` configuration of the release's commit.
    pub delivery: String,
    pub created_at: i64,
    /// When a retention policy removed its files (the record stays).
    pub pruned_at: Option<i64>,
    pub artifacts: Vec<ReleaseArtifact>,
    pub images: Vec<ReleaseImage>,
}

/// What is deployed, and how the deployment came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    /// Asked for with `ferry promote` or the API.
    Promotion,
    /// Started by the environment's `auto` policy.
    Auto,
    /// Back to an earlier release (by `ferry rollback` or after a failed verification).
    Rollback,
}

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
            _ => return None,
        })
    }

    /// Ended: it will not change any more (`Live` changes to `Replaced` later).
    pub fn finished(self) -> bool {
        matches!(
            self,
            Self::Replaced | Self::Failed | Self::RolledBack | Self::Rejected | Self::Cancelled
        )
    }
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promotion => "promotion",
            Self::Auto => "auto",
            Self::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "promotion" => Self::Promotion,
            "auto" => Self::Auto,
            "rollback" => Self::Rollback,
            other => return Err(Error::Corrupt(format!("deployment kind `{other}`"))),
        })
    }
}

/// One release going to one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One approval or rejection of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub deployment_id: String,
    pub user_id: String,
    pub user_name: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: Option<String>,
    pub created_at: i64,
}

/// An entry of the audit log: who did what to what, and when (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub repository_id: Option<String>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
}

/// A variable of a repository (`environment` empty) or of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub environment: String,
    pub name: String,
    pub value: String,
    pub updated_at: i64,
    pub updated_by: Option<String>,
}

/// A secret as listed: its name and when it changed, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub environment: String,
    pub name: String,
    pub updated_at: i64,
    pub updated_by: Option<String>,
}

/// What [`Store::create_release`] needs.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub repository_id: String,
    pub name: String,
    pub run_id: String,
    pub run_number: i64,
    pub commit_sha: String,
    pub git_ref: String,
    pub tag: Option<String>,
    pub author: String,
    pub triggered_by: Option<String>,
    pub plan_hash: String,
    pub ferry_version: String,
    pub delivery: String,
    pub artifacts: Vec<ReleaseArtifact>,
    pub images: Vec<ReleaseImage>,
}

fn release_from(row: &AnyRow) -> Result<Release> {
    Ok(Release {
        id: row.try_get("id")?,
        repository_id: row.try_get("repository_id")?,
        name: row.try_get("name")?,
        run_id: row.try_get("run_id")?,
        run_number: row.try_get("run_number")?,
        commit_sha: row.try_get("commit_sha")?,
        git_ref: row.try_get("git_ref")?,
        tag: row.try_get("tag")?,
        author: row.try_get("author")?,
        triggered_by: row.try_get("triggered_by")?,
        plan_hash: row.try_get("plan_hash")?,
        ferry_version: row.try_get("ferry_version")?,
        delivery: row.try_get("delivery")?,
        created_at: row.try_get("created_at")?,
        pruned_at: row.try_get("pruned_at")?,
        artifacts: Vec::new(),
        images: Vec::new(),
    })
}

fn deployment_from(row: &AnyRow) -> Result<Deployment> {
    let status: String = row.try_get("status")?;
    let kind: String = row.try_get("kind")?;
    Ok(Deployment {
        id: row.try_get("id")?,
        repository_id: row.try_get("repository_id")?,
        environment: row.try_get("environment")?,
        number: row.try_get("number")?,
        release_id: row.try_get("release_id")?,
        kind: DeploymentKind::parse(&kind)?,
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("deployment status `{status}`")))?,
        reason: row.try_get("reason")?,
        requested_by: row.try_get("requested_by")?,
        previous_release_id: row.try_get("previous_release_id")?,
        config: row.try_get("config")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn secret_context(repository_id: &str, environment: &str, name: &str) -> String {
    format!("secret:{repository_id}:{environment}:{name}")
}

impl Store {
    /// Seals a release: one row and its artifacts and images, in one transaction.
    /// A second release of the same run, or a second one with the same name, conflicts.
    pub async fn create_release(&self, new: &NewRelease) -> Result<Release> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO releases (id, repository_id, name, run_id, run_number, commit_sha, git_ref, tag,
               author, triggered_by, plan_hash, ferry_version, delivery, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&id)
        .bind(&new.repository_id)
        .bind(&new.name)
        .bind(&new.run_id)
        .bind(new.run_number)
        .bind(&new.commit_sha)
        .bind(&new.git_ref)
        .bind(&new.tag)
        .bind(&new.author)
        .bind(&new.triggered_by)
        .bind(&new.plan_hash)
        .bind(&new.ferry_version)
        .bind(&new.delivery)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("release `{}`", new.name)))?;
        for a in &new.artifacts {
            sqlx::query(
                "INSERT INTO release_artifacts (release_id, path, job, digest, size, mode)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(&a.path)
            .bind(&a.job)
            .bind(&a.digest)
            .bind(a.size)
            .bind(a.mode)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("release artifact `{}`", a.path)))?;
        }
        for i in &new.images {
            sqlx::query(
                "INSERT INTO release_images (release_id, job, name, digest) VALUES ($1, $2, $3, $4)",
            )
            .bind(&id)
            .bind(&i.job)
            .bind(&i.name)
            .bind(&i.digest)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.release(&new.repository_id, &id).await
    }

    /// A release of the repository by id or name, with its artifacts and images.
    pub async fn release(&self, repository_id: &str, id_or_name: &str) -> Result<Release> {
        let row = sqlx::query(
            "SELECT * FROM releases WHERE repository_id = $1 AND (id = $2 OR name = $2)",
        )
        .bind(repository_id)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("release `{id_or_name}`")))?;
        let mut release = release_from(&row)?;
        self.fill_release(&mut release).await?;
        Ok(release)
    }

    /// The release a run sealed, if any.
    pub async fn release_of_run(&self, run_id: &str) -> Result<Option<Release>> {
        let row = sqlx::query("SELECT * FROM releases WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => {
                let mut release = release_from(&row)?;
                self.fill_release(&mut release).await?;
                Ok(Some(release))
            }
            None => Ok(None),
        }
    }

    async fn fill_release(&self, release: &mut Release) -> Result<()> {
        let rows =
            sqlx::query("SELECT * FROM release_artifacts WHERE release_id = $1 ORDER BY job, path")
                .bind(&release.id)
                .fetch_all(&self.pool)
                .await?;
        release.artifacts = rows
            .iter()
            .map(|r| {
                Ok(ReleaseArtifact {
                    job: r.try_get("job")?,
                    path: r.try_get("path")?,
                    digest: r.try_get("digest")?,
                    size: r.try_get("size")?,
                    mode: r.try_get("mode")?,
                })
            })
            .collect::<Result<_>>()?;
        let rows = sqlx::query("SELECT * FROM release_images WHERE release_id = $1 ORDER BY job")
            .bind(&release.id)
            .fetch_all(&self.pool)
            .await?;
        release.images = rows
            .iter()
            .map(|r| {
                Ok(ReleaseImage {
                    job: r.try_get("job")?,
                    name: r.try_get("name")?,
                    digest: r.try_get("digest")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The repository's releases, newest first (without artifacts and images).
    pub async fn releases(&self, repository_id: &str, limit: i64) -> Result<Vec<Release>> {
        let rows = sqlx::query(
            "SELECT * FROM releases WHERE repository_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(release_from).collect()
    }

    /// Releases of the repository beyond the newest `keep` that no environment runs or
    /// is about to run, not pruned yet: what a retention policy may remove.
    pub async fn prunable_releases(&self, repository_id: &str, keep: i64) -> Result<Vec<Release>> {
        let rows = sqlx::query(
            "SELECT * FROM releases r WHERE repository_id = $1 AND pruned_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.release_id = r.id
                 AND d.status IN ('queued', 'awaiting_approval', 'deploying', 'verifying', 'live'))
             ORDER BY created_at DESC, id DESC",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        let newest: Vec<String> = sqlx::query(
            "SELECT id FROM releases WHERE repository_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(repository_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<std::result::Result<_, _>>()?;
        rows.iter()
            .map(release_from)
            .filter(|r| r.as_ref().map(|r| !newest.contains(&r.id)).unwrap_or(true))
            .collect()
    }

    /// Marks a release pruned (its files may go).
    pub async fn mark_pruned(&self, release_id: &str) -> Result<()> {
        sqlx::query("UPDATE releases SET pruned_at = $1 WHERE id = $2 AND pruned_at IS NULL")
            .bind(now_ms())
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The digests of every file a release that is not pruned holds.
    pub async fn kept_digests(&self) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.digest FROM release_artifacts a JOIN releases r ON r.id = a.release_id
             WHERE r.pruned_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("digest")?)).collect()
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
        let row = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("deployment `{id}`")))?;
        deployment_from(&row)
    }

    /// A deployment by id, or by `ENV#NUMBER` within the repository.
    pub async fn find_deployment(&self, repository_id: &str, key: &str) -> Result<Deployment> {
        // `ENV#N`, or `ENV.N` where a `#` does not fit (a URL path).
        let split = key.rsplit_once('#').or_else(|| key.rsplit_once('.'));
        if let Some((env, number)) = split
            && let Ok(number) = number.parse::<i64>()
        {
            let row = sqlx::query(
                "SELECT * FROM deployments WHERE repository_id = $1 AND environment = $2 AND number = $3",
            )
            .bind(repository_id)
            .bind(env)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("deployment `{key}`")))?;
            return deployment_from(&row);
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
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE repository_id = $1 AND ($2 = '' OR environment = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from).collect()
    }

    /// Deployments in any of `statuses`, oldest first (all repositories).
    pub async fn deployments_in(&self, statuses: &[DeploymentStatus]) -> Result<Vec<Deployment>> {
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let sql = format!(
            "SELECT * FROM deployments WHERE status IN ({}) ORDER BY created_at, id",
            list.join(", ")
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(deployment_from).collect()
    }

    /// The live deployment of an environment.
    pub async fn live_deployment(
        &self,
        repository_id: &str,
        environment: &str,
    ) -> Result<Option<Deployment>> {
        let row = sqlx::query(
            "SELECT * FROM deployments WHERE repository_id = $1 AND environment = $2 AND status = 'live'",
        )
        .bind(repository_id)
        .bind(environment)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment_from).transpose()
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
        let list: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let now = now_ms();
        let started = matches!(to, DeploymentStatus::Deploying);
        let finished = to.finished() || to == DeploymentStatus::Live;
        let sql = format!(
            "UPDATE deployments SET status = $1, reason = COALESCE($2, reason),
               started_at = CASE WHEN $3 = 1 THEN $4 ELSE started_at END,
               finished_at = CASE WHEN $5 = 1 THEN $4 ELSE finished_at END
             WHERE id = $6 AND status IN ({})",
            list.join(", ")
        );
        let done = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(reason)
            .bind(started as i64)
            .bind(now)
            .bind(finished as i64)
            .bind(id)
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
        let done = sqlx::query(
            "UPDATE deployments SET status = 'live', finished_at = $1
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

    /// Records an approval or a rejection; a second decision of the same user conflicts.
    pub async fn add_approval(
        &self,
        deployment_id: &str,
        user_id: &str,
        user_name: &str,
        decision: &str,
        comment: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO approvals (deployment_id, user_id, user_name, decision, comment, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(deployment_id)
        .bind(user_id)
        .bind(user_name)
        .bind(decision)
        .bind(comment)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("a decision of {user_name} on this deployment")))?;
        Ok(())
    }

    pub async fn approvals(&self, deployment_id: &str) -> Result<Vec<Approval>> {
        let rows = sqlx::query(
            "SELECT * FROM approvals WHERE deployment_id = $1 ORDER BY created_at, user_name",
        )
        .bind(deployment_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Approval {
                    deployment_id: r.try_get("deployment_id")?,
                    user_id: r.try_get("user_id")?,
                    user_name: r.try_get("user_name")?,
                    decision: r.try_get("decision")?,
                    comment: r.try_get("comment")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Appends to the audit log.
    pub async fn audit(
        &self,
        repository_id: Option<&str>,
        actor: &str,
        action: &str,
        target: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (id, repository_id, at, actor, action, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(repository_id)
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit log of a repository (all when `None`), newest first.
    pub async fn audit_log(
        &self,
        repository_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit WHERE ($1 = '' OR repository_id = $1) ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(repository_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    repository_id: r.try_get("repository_id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Sets a variable of the repository (`environment` empty) or of an environment.
    pub async fn set_variable(
        &self,
        repository_id: &str,
        environment: &str,
        name: &str,
        value: &str,
        by: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO variables (repository_id, environment, name, value, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id, environment, name) DO UPDATE SET value = excluded.value,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(name)
        .bind(value)
        .bind(now_ms())
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Variables of the repository and (when given) one environment, by environment and name.
    pub async fn variables(
        &self,
        repository_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Variable>> {
        let rows = sqlx::query(
            "SELECT * FROM variables WHERE repository_id = $1 AND (environment = '' OR environment = $2)
             ORDER BY environment, name",
        )
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Variable {
                    environment: r.try_get("environment")?,
                    name: r.try_get("name")?,
                    value: r.try_get("value")?,
                    updated_at: r.try_get("updated_at")?,
                    updated_by: r.try_get("updated_by")?,
                })
            })
            .collect()
    }

    pub async fn delete_variable(
        &self,
        repository_id: &str,
        environment: &str,
        name: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM variables WHERE repository_id = $1 AND environment = $2 AND name = $3",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a secret: its value is sealed with `key` and bound to its place.
    pub async fn set_secret(
        &self,
        key: &SecretKey,
        repository_id: &str,
        environment: &str,
        name: &str,
        value: &[u8],
        by: Option<&str>,
    ) -> Result<()> {
        let sealed = key.seal(value, &secret_context(repository_id, environment, name))?;
        sqlx::query(
            "INSERT INTO secrets (repository_id, environment, name, sealed, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id, environment, name) DO UPDATE SET sealed = excluded.sealed,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(name)
        .bind(&sealed)
        .bind(now_ms())
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The names of the repository's and (when given) one environment's secrets.
    pub async fn secret_names(
        &self,
        repository_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT environment, name, updated_at, updated_by FROM secrets
             WHERE repository_id = $1 AND (environment = '' OR environment = $2) ORDER BY environment, name",
        )
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretInfo {
                    environment: r.try_get("environment")?,
                    name: r.try_get("name")?,
                    updated_at: r.try_get("updated_at")?,
                    updated_by: r.try_get("updated_by")?,
                })
            })
            .collect()
    }

    /// The opened secrets for a deployment to `environment`: the environment's win over
    /// the repository's of the same name. (name, value)
    pub async fn open_secrets(
        &self,
        key: &SecretKey,
        repository_id: &str,
        environment: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT environment, name, sealed FROM secrets
             WHERE repository_id = $1 AND (environment = '' OR environment = $2) ORDER BY environment, name",
        )
        .bind(repository_id)
        .bind(environment)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for r in rows {
            let env: String = r.try_get("environment")?;
            let name: String = r.try_get("name")?;
            let sealed: String = r.try_get("sealed")?;
            let value = key.open(&sealed, &secret_context(repository_id, &env, &name))?;
            // Repository-level rows come first ('' sorts first): the environment's replace them.
            out.retain(|(n, _)| *n != name);
            out.push((name, value));
        }
        Ok(out)
    }

    /// Every secret value of the repository, of every environment (to mask them).
    pub async fn open_all_secrets(
        &self,
        key: &SecretKey,
        repository_id: &str,
    ) -> Result<Vec<Vec<u8>>> {
        let rows =
            sqlx::query("SELECT environment, name, sealed FROM secrets WHERE repository_id = $1")
                .bind(repository_id)
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::new();
        for r in rows {
            let env: String = r.try_get("environment")?;
            let name: String = r.try_get("name")?;
            let sealed: String = r.try_get("sealed")?;
            out.push(key.open(&sealed, &secret_context(repository_id, &env, &name))?);
        }
        Ok(out)
    }

    pub async fn delete_secret(
        &self,
        repository_id: &str,
        environment: &str,
        name: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM secrets WHERE repository_id = $1 AND environment = $2 AND name = $3",
        )
        .bind(repository_id)
        .bind(environment)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds a user to an approver group.
    pub async fn add_group_member(&self, group: &str, user_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO group_members (group_name, user_id) VALUES ($1, $2)
             ON CONFLICT (group_name, user_id) DO NOTHING",
        )
        .bind(group)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The groups a user belongs to.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT group_name FROM group_members WHERE user_id = $1 ORDER BY group_name",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("group_name")?)).collect()
    }
}
