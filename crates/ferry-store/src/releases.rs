//! Releases: immutable once sealed, each with the files (artifacts, kept in the
//! content-addressed store by digest) and the images it holds; and what a retention
//! policy may prune.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Error, Result, Store, conflict, now_ms};

/// A file of a release, kept in the content-addressed store by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

// The columns [`release_from_row`] reads (of `releases`).
// A release without its artifacts and images ([`Store::fill_release`] adds them).
#[rustfmt::skip]
crate::row::record!(RELEASE_COLUMNS, release_from_row, Release {
    id, repository_id, name, run_id, run_number, commit_sha, git_ref, tag, author,
    triggered_by, plan_hash, ferry_version, delivery, created_at, pruned_at
} + { artifacts: Vec::new(), images: Vec::new(), });

// The columns [`artifact_from_row`] reads (of `release_artifacts`).
crate::row::record!(
    ARTIFACT_COLUMNS,
    artifact_from_row,
    ReleaseArtifact {
        job,
        path,
        digest,
        size,
        mode
    }
);

// The columns [`release_image_from_row`] reads (of `release_images`).
#[rustfmt::skip]
crate::row::record!(RELEASE_IMAGE_COLUMNS, release_image_from_row, ReleaseImage {
    job, name, digest
});

impl Store {
    /// Seals a release: one row and its artifacts and images, in one transaction.
    /// A second release of the same run, or a second one with the same name, conflicts.
    pub async fn create_release(&self, new: &NewRelease) -> Result<Release> {
        let _turn = self.turn().await;
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
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE repository_id = $1 AND (id = $2 OR name = $2)
             ORDER BY CASE WHEN id = $2 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(repository_id)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("release `{id_or_name}`")))?;
        let mut release = release_from_row(&row)?;
        self.fill_release(&mut release).await?;
        Ok(release)
    }

    /// The release a run sealed, if any.
    pub async fn release_of_run(&self, run_id: &str) -> Result<Option<Release>> {
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE run_id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => {
                let mut release = release_from_row(&row)?;
                self.fill_release(&mut release).await?;
                Ok(Some(release))
            }
            None => Ok(None),
        }
    }

    /// Reads a release's artifacts and images.
    async fn fill_release(&self, release: &mut Release) -> Result<()> {
        let rows = sqlx::query(&format!(
            "SELECT {ARTIFACT_COLUMNS} FROM release_artifacts WHERE release_id = $1 ORDER BY job, path"
        ))
        .bind(&release.id)
        .fetch_all(&self.pool)
        .await?;
        release.artifacts = rows.iter().map(artifact_from_row).collect::<Result<_>>()?;
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_IMAGE_COLUMNS} FROM release_images WHERE release_id = $1 ORDER BY job"
        ))
        .bind(&release.id)
        .fetch_all(&self.pool)
        .await?;
        release.images = rows
            .iter()
            .map(release_image_from_row)
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The repository's releases, newest first (without artifacts and images).
    pub async fn releases(&self, repository_id: &str, limit: i64) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE repository_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut releases = rows
            .iter()
            .map(release_from_row)
            .collect::<Result<Vec<_>>>()?;
        // Listed as shown one by one: with their files and images.
        for release in &mut releases {
            self.fill_release(release).await?;
        }
        Ok(releases)
    }

    /// Releases of the repository beyond the newest `keep` that no environment runs or
    /// is about to run, not pruned yet: what a retention policy may remove.
    pub async fn prunable_releases(&self, repository_id: &str, keep: i64) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases r WHERE repository_id = $1 AND pruned_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.release_id = r.id
                 AND d.status IN ('queued', 'awaiting_approval', 'deploying', 'verifying', 'live'))
             ORDER BY created_at DESC, id DESC"
        ))
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
            .map(release_from_row)
            .filter(|r| r.as_ref().map(|r| !newest.contains(&r.id)).unwrap_or(true))
            .collect()
    }

    /// Marks a release pruned (its files may go).
    pub async fn mark_pruned(&self, release_id: &str) -> Result<()> {
        let _turn = self.turn().await;
        sqlx::query("UPDATE releases SET pruned_at = $1 WHERE id = $2 AND pruned_at IS NULL")
            .bind(now_ms())
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The digests of every file a release that is not pruned holds.
    pub async fn kept_digests(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT a.digest FROM release_artifacts a JOIN releases r ON r.id = a.release_id
             WHERE r.pruned_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("digest")?)).collect()
    }
}
