//! The audit log: who did what to what, and when (never a secret's value).

use serde::{Deserialize, Serialize};

use crate::{Result, Store, now_ms};

/// An entry of the audit log: who did what to what, and when (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: String,
    pub repository_id: Option<String>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Option<String>,
}

// The columns [`audit_entry_from_row`] reads (of `audit`).
#[rustfmt::skip]
crate::row::record!(AUDIT_COLUMNS, audit_entry_from_row, AuditEntry {
    id, repository_id, at, actor, action, target, detail
});

impl Store {
    /// Appends to the audit log.
    pub async fn audit(
        &self,
        repository_id: Option<&str>,
        actor: &str,
        action: &str,
        target: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let _turn = self.turn().await;
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
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE ($1 = '' OR repository_id = $1)
             ORDER BY at DESC, id DESC LIMIT $2"
        ))
        .bind(repository_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_entry_from_row).collect()
    }
}
