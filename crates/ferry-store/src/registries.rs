//! Registry credentials per repository: who to log in as on an image registry. The
//! password is sealed with the [`SecretKey`]; listing never returns it.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Error, Result, SecretKey, Store, now_ms};

/// A registry login as listed (never with its password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegistryLogin {
    pub host: String,
    pub username: String,
    pub updated_at: i64,
    pub updated_by: Option<String>,
}

// The columns [`registry_login_from_row`] reads (of `registry_credentials`): never the
// password.
#[rustfmt::skip]
crate::row::record!(REGISTRY_LOGIN_COLUMNS, registry_login_from_row, RegistryLogin {
    host, username, updated_at, updated_by
});

fn context(repository_id: &str, host: &str) -> String {
    format!("registry:{repository_id}:{host}")
}

impl Store {
    /// Sets (or replaces) the login of `repository_id` on `host`.
    pub async fn set_registry_login(
        &self,
        key: &SecretKey,
        repository_id: &str,
        host: &str,
        username: &str,
        password: &str,
        by: Option<&str>,
    ) -> Result<()> {
        let _turn = self.turn().await;
        let sealed = key.seal(password.as_bytes(), &context(repository_id, host))?;
        sqlx::query(
            "INSERT INTO registry_credentials (repository_id, host, username, sealed_password, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id, host) DO UPDATE SET username = excluded.username,
               sealed_password = excluded.sealed_password, updated_at = excluded.updated_at,
               updated_by = excluded.updated_by",
        )
        .bind(repository_id)
        .bind(host)
        .bind(username)
        .bind(&sealed)
        .bind(now_ms())
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The repository's logins, by host, without passwords.
    pub async fn registry_logins(&self, repository_id: &str) -> Result<Vec<RegistryLogin>> {
        let rows = sqlx::query(&format!(
            "SELECT {REGISTRY_LOGIN_COLUMNS} FROM registry_credentials
             WHERE repository_id = $1 ORDER BY host"
        ))
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registry_login_from_row).collect()
    }

    /// Every login of the repository with its opened password: (host, user, password).
    pub async fn registry_credentials(
        &self,
        key: &SecretKey,
        repository_id: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT host, username, sealed_password FROM registry_credentials WHERE repository_id = $1",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let host: String = row.try_get("host")?;
            let sealed: String = row.try_get("sealed_password")?;
            let password = key.open(&sealed, &context(repository_id, &host))?;
            let password = String::from_utf8(password)
                .map_err(|_| Error::Corrupt(format!("the password for {host} is not text")))?;
            out.push((host, row.try_get("username")?, password));
        }
        Ok(out)
    }

    /// Removes the login on `host`; false when there was none.
    pub async fn delete_registry_login(&self, repository_id: &str, host: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let done =
            sqlx::query("DELETE FROM registry_credentials WHERE repository_id = $1 AND host = $2")
                .bind(repository_id)
                .bind(host)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}
