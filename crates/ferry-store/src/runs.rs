//! Repositories, runs, jobs and steps.

use sqlx::Row;

use crate::QueueEntry;
use sqlx::any::AnyRow;

use crate::{
    Error, Image, Job, NewRun, Result, Run, RunFilter, Status, Step, Store, TestSummary, now_ms,
};

fn status(row: &AnyRow, col: &str) -> Result<Status> {
    let s: String = row.try_get(col)?;
    Status::parse(&s).ok_or_else(|| Error::Corrupt(format!("unknown status `{s}`")))
}

// The columns [`run_from_row`] reads (of `runs`; not the plan, which [`Store::run_plan`]
// reads).
#[rustfmt::skip]
crate::row::record!(RUN_COLUMNS, run_from_row, Run {
    id, repository_id, number, event, git_ref, branch, tag, commit_sha, dirty, author,
    message, status, error, triggered_by, created_at, started_at, finished_at
});

/// The columns [`job_from_row`] reads (of `jobs`).
const JOB_COLUMNS: &str = "id, run_id, position, name, status, reason, exit_code, attempts, \
     allow_failure, started_at, finished_at, log_bytes, log_lines, tests_passed, tests_failed, \
     tests_skipped, test_failures";

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let passed: Option<i64> = row.try_get("tests_passed")?;
    let tests = match passed {
        None => None,
        Some(passed) => {
            let failures: Option<String> = row.try_get("test_failures")?;
            Some(TestSummary {
                passed,
                failed: row.try_get::<Option<i64>, _>("tests_failed")?.unwrap_or(0),
                skipped: row.try_get::<Option<i64>, _>("tests_skipped")?.unwrap_or(0),
                failures: match failures {
                    Some(f) => {
                        serde_json::from_str(&f).map_err(|e| Error::Corrupt(e.to_string()))?
                    }
                    None => Vec::new(),
                },
            })
        }
    };
    Ok(Job {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        position: row.try_get("position")?,
        name: row.try_get("name")?,
        status: status(row, "status")?,
        reason: row.try_get("reason")?,
        exit_code: row.try_get("exit_code")?,
        attempts: row.try_get("attempts")?,
        allow_failure: row.try_get::<i64, _>("allow_failure")? != 0,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        log_bytes: row.try_get("log_bytes")?,
        log_lines: row.try_get("log_lines")?,
        tests,
    })
}

// The columns [`step_from_row`] reads (of `steps`).
#[rustfmt::skip]
crate::row::record!(STEP_COLUMNS, step_from_row, Step {
    job_id, position, name, status, exit_code, attempt, started_at, finished_at
});

/// The columns [`image_from_row`] reads (of `images`).
const IMAGE_COLUMNS: &str = "id, run_id, job_id, name, tags, image_id, digest, created_at";

fn image_from_row(row: &AnyRow) -> Result<Image> {
    let tags: String = row.try_get("tags")?;
    Ok(Image {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        job_id: row.try_get("job_id")?,
        name: row.try_get("name")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        image_id: row.try_get("image_id")?,
        digest: row.try_get("digest")?,
        created_at: row.try_get("created_at")?,
    })
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Store {
    /// Finished runs a retention policy may delete: of each repository, those beyond
    /// its newest `keep` runs (when given) or finished before `before_ms` (when given);
    /// never a run a release was sealed from. Their ids, oldest first.
    /// How many runs are queued and running now.
    pub async fn run_counts(&self) -> Result<(i64, i64)> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let count = |s: &str| rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
        Ok((count("queued"), count("running")))
    }

    pub async fn prunable_runs(
        &self,
        keep: Option<usize>,
        before_ms: Option<i64>,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id, repository_id, finished_at,
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM releases r WHERE r.run_id = runs.id)
                         THEN 1 ELSE 0 END AS BIGINT) AS released
             FROM runs ORDER BY repository_id, number DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        let (mut repo, mut nth) = (String::new(), 0usize);
        for row in &rows {
            let repository: String = row.try_get("repository_id")?;
            if repository != repo {
                (repo, nth) = (repository, 0);
            }
            nth += 1;
            let finished: Option<i64> = row.try_get("finished_at")?;
            let released = row.try_get::<i64, _>("released")? != 0;
            let Some(finished) = finished else { continue };
            let old = keep.is_some_and(|k| nth > k) || before_ms.is_some_and(|b| finished < b);
            if old && !released {
                out.push(row.try_get("id")?);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes a finished run that no release was sealed from, with its jobs, steps and
    /// images; `false` when it is not such a run. Its log and artifact files are the
    /// caller's to remove.
    pub async fn delete_run(&self, run_id: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "DELETE FROM runs WHERE id = $1 AND finished_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM releases r WHERE r.run_id = $1)",
        )
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The id of the repository at `url` (a path or URL), registering it on first use.
    pub async fn ensure_repository(&self, url: &str, name: &str) -> Result<String> {
        let _turn = self.turn().await;
        if let Some(row) = sqlx::query("SELECT id FROM repositories WHERE url = $1")
            .bind(url)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(row.try_get("id")?);
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO repositories (id, name, url, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (url) DO NOTHING",
        )
        .bind(&id)
        .bind(name)
        .bind(url)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id FROM repositories WHERE url = $1")
            .bind(url)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Records a run with its jobs and steps in one transaction, numbered after the
    /// repository's last run. Returns the run and its jobs' ids in plan order.
    ///
    /// Two runs created at once may pick the same number on PostgreSQL; the loser's
    /// transaction fails on the unique key and is retried.
    pub async fn create_run(&self, new: &NewRun) -> Result<(Run, Vec<String>)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_create_run(new).await {
                Err(Error::Db(sqlx::Error::Database(e)))
                    if e.is_unique_violation() && attempt < 20 =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(attempt * 2)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_create_run(&self, new: &NewRun) -> Result<(Run, Vec<String>)> {
        let _turn = self.turn().await;
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO runs (id, repository_id, number, event, git_ref, branch, tag, commit_sha, \
             dirty, author, message, status, plan, created_at, triggered_by, concurrency_group) \
             SELECT $1, $2, COALESCE(MAX(number), 0) + 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
             FROM runs WHERE repository_id = $2 \
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(&id)
        .bind(&new.repository_id)
        .bind(&new.event)
        .bind(&new.git_ref)
        .bind(&new.branch)
        .bind(&new.tag)
        .bind(&new.commit_sha)
        .bind(new.dirty as i64)
        .bind(&new.author)
        .bind(&new.message)
        .bind(Status::Queued.as_str())
        .bind(&new.plan)
        .bind(now)
        .bind(&new.triggered_by)
        .bind(&new.concurrency_group)
        .fetch_one(&mut *tx)
        .await?;
        let run = run_from_row(&row)?;
        let mut job_ids = Vec::with_capacity(new.jobs.len());
        for (i, job) in new.jobs.iter().enumerate() {
            let job_id = new_id();
            let (status, reason) = match &job.settled {
                Some((status, reason)) => (*status, Some(reason.as_str())),
                None => (Status::Queued, None),
            };
            sqlx::query(
                "INSERT INTO jobs (id, run_id, position, name, status, reason, allow_failure) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&job_id)
            .bind(&id)
            .bind(i as i64)
            .bind(&job.name)
            .bind(status.as_str())
            .bind(reason)
            .bind(job.allow_failure as i64)
            .execute(&mut *tx)
            .await?;
            for (s, name) in job.steps.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO steps (job_id, position, name, status) VALUES ($1, $2, $3, $4)",
                )
                .bind(&job_id)
                .bind(s as i64)
                .bind(name)
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?;
            }
            job_ids.push(job_id);
        }
        tx.commit().await?;
        Ok((run, job_ids))
    }

    /// Runs of a repository, newest first.
    pub async fn list_runs(&self, repository_id: &str, limit: i64) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE repository_id = $1 ORDER BY number DESC LIMIT $2"
        ))
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn run_by_number(&self, repository_id: &str, number: i64) -> Result<Run> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE repository_id = $1 AND number = $2"
        ))
        .bind(repository_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("run {number}")))?;
        run_from_row(&row)
    }

    /// The newest run of the same repository and git ref before run `number` that
    /// passed or failed (what `run.fixed` compares with).
    pub async fn previous_finished_run(
        &self,
        repository_id: &str,
        git_ref: &str,
        number: i64,
    ) -> Result<Option<Run>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE repository_id = $1 AND number < $2 AND git_ref = $3
               AND status IN ('success', 'failed')
             ORDER BY number DESC LIMIT 1"
        ))
        .bind(repository_id)
        .bind(number)
        .bind(git_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    pub async fn run_by_id(&self, id: &str) -> Result<Run> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("run {id}")))?;
        run_from_row(&row)
    }

    /// Runs matching `filter`, newest first (ids are time-ordered UUIDv7).
    pub async fn find_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        let mut push = |clause: &str, value: String, sql: &mut String| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        if let Some(r) = &filter.repository_id {
            push("repository_id =", r.clone(), &mut sql);
        }
        if let Some(b) = &filter.branch {
            push("branch =", b.clone(), &mut sql);
        }
        if let Some(s) = filter.status {
            push("status =", s.as_str().to_string(), &mut sql);
        }
        if let Some(c) = &filter.before {
            push("id <", c.clone(), &mut sql);
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            filter.limit.clamp(1, 500)
        ));
        let mut q = sqlx::query(&sql);
        for a in &args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Takes the oldest queued run for `owner` until `lease_until`, or `None`. Safe
    /// with several servers: the update only succeeds while the run is still queued.
    ///
    /// Runs of a repository that already has `max_per_repo` running runs wait.
    pub async fn claim_next_run(
        &self,
        owner: &str,
        lease_until: i64,
        max_per_repo: i64,
    ) -> Result<Option<Run>> {
        let _turn = self.turn().await;
        for _ in 0..10 {
            let candidate = sqlx::query(
                "SELECT id FROM runs r WHERE status = 'queued' AND \
                 (SELECT COUNT(*) FROM runs x WHERE x.repository_id = r.repository_id AND x.status = 'running') < $1 \
                 AND (r.concurrency_group IS NULL OR NOT EXISTS (SELECT 1 FROM runs y \
                      WHERE y.repository_id = r.repository_id AND y.concurrency_group = r.concurrency_group \
                      AND y.status = 'running')) \
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(max_per_repo)
            .fetch_optional(&self.pool)
            .await?;
            let Some(candidate) = candidate else {
                return Ok(None);
            };
            let id: String = candidate.try_get("id")?;
            let row = sqlx::query(&format!(
                "UPDATE runs SET status = 'running', lease_owner = $1, lease_until = $2 \
                 WHERE id = $3 AND status = 'queued' RETURNING {RUN_COLUMNS}"
            ))
            .bind(owner)
            .bind(lease_until)
            .bind(&id)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return Ok(Some(run_from_row(&row)?));
            }
            // Another server took it first: look again.
        }
        Ok(None)
    }

    /// The queue as the dispatcher sees it: every queued and running run, oldest
    /// first, with its concurrency group and (running) the server that holds it.
    pub async fn queue(&self) -> Result<Vec<QueueEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS}, concurrency_group, lease_owner FROM runs \
             WHERE status IN ('queued', 'running') ORDER BY created_at, id LIMIT 1000"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueEntry {
                    run: run_from_row(row)?,
                    group: row.try_get("concurrency_group")?,
                    owner: row.try_get("lease_owner")?,
                })
            })
            .collect()
    }

    /// A newer run of `group` supersedes the older ones: queued runs of the group are
    /// cancelled now; returns the ids of the group's running runs, which the caller
    /// cancels when `cancel_in_progress` asks for it.
    pub async fn supersede(
        &self,
        repository_id: &str,
        group: &str,
        newer: &Run,
    ) -> Result<Vec<String>> {
        let older = sqlx::query(
            "SELECT id, status FROM runs WHERE repository_id = $1 AND concurrency_group = $2 \
             AND id <> $3 AND status IN ('queued', 'running') AND created_at <= $4",
        )
        .bind(repository_id)
        .bind(group)
        .bind(&newer.id)
        .bind(newer.created_at)
        .fetch_all(&self.pool)
        .await?;
        let mut running = Vec::new();
        for row in older {
            let id: String = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            if status == "queued" {
                self.cancel_queued_run_with(&id, &format!("superseded by run {}", newer.number))
                    .await?;
            } else {
                running.push(id);
            }
        }
        Ok(running)
    }

    /// Cancels a run that no server has claimed yet; `false` if it is not queued.
    pub async fn cancel_queued_run(&self, id: &str) -> Result<bool> {
        self.cancel_queued_run_with(id, "cancelled before it started")
            .await
    }

    async fn cancel_queued_run_with(&self, id: &str, why: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, error = $3 \
             WHERE id = $2 AND status = 'queued'",
        )
        .bind(now)
        .bind(id)
        .bind(why)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', reason = 'the run was cancelled before it started', \
             finished_at = $1 WHERE run_id = $2 AND status = 'queued'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE steps SET status = 'cancelled' WHERE status = 'queued' \
             AND job_id IN (SELECT id FROM jobs WHERE run_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Extends to `until` the lease `owner` holds on each of its running runs; returns
    /// the ids of those runs. A run `owner` executes that is not among them is no longer
    /// its own (its lease ran out and another server ended it).
    pub async fn renew_run_leases(&self, owner: &str, until: i64) -> Result<Vec<String>> {
        let _turn = self.turn().await;
        let rows = sqlx::query(
            "UPDATE runs SET lease_until = $1 WHERE lease_owner = $2 AND status = 'running' \
             RETURNING id",
        )
        .bind(until)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get("id")?))
            .collect::<Result<Vec<String>>>()
    }

    /// Ends the runs a server was executing when it stopped without recording their end
    /// (a crash, `kill -9`): those it leased as `owner` (`None`: no server's in
    /// particular), and any whose lease ran out. They fail with `reason`; their
    /// unfinished jobs and steps too. Returns how many.
    pub async fn interrupt_runs(&self, owner: Option<&str>, reason: &str) -> Result<u64> {
        let _turn = self.turn().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM runs WHERE status = 'running' AND (lease_owner = $1 OR lease_until < $2)",
        )
        .bind(owner.unwrap_or(""))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<std::result::Result<_, _>>()?;
        let mut count = 0;
        for id in &ids {
            // Still as it was when read: a lease renewed meanwhile keeps its run.
            let ended = sqlx::query(
                "UPDATE runs SET status = 'failed', error = $1, finished_at = $2, lease_owner = NULL \
                 WHERE id = $3 AND status = 'running' AND (lease_owner = $4 OR lease_until < $2)",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .bind(owner.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            if ended.rows_affected() == 0 {
                continue;
            }
            count += 1;
            sqlx::query(
                "UPDATE steps SET status = CASE WHEN status = 'running' THEN 'failed' ELSE 'skipped' END \
                 WHERE status IN ('queued', 'running') AND job_id IN (SELECT id FROM jobs WHERE run_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET status = 'failed', reason = $1, finished_at = $2 \
                 WHERE run_id = $3 AND status IN ('queued', 'running')",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// The stored plan of a run, as JSON.
    pub async fn run_plan(&self, run_id: &str) -> Result<String> {
        let row = sqlx::query("SELECT plan FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("plan")?)
    }

    pub async fn jobs(&self, run_id: &str) -> Result<Vec<Job>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE run_id = $1 ORDER BY position"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn steps(&self, job_id: &str) -> Result<Vec<Step>> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE job_id = $1 ORDER BY position"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(step_from_row).collect()
    }

    /// The images a run's jobs built, in the order they were made.
    pub async fn images(&self, run_id: &str) -> Result<Vec<Image>> {
        let rows = sqlx::query(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE run_id = $1 ORDER BY created_at, id"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(image_from_row).collect()
    }
}
