//! Settings of a repository (`environment` empty) or of one of its environments:
//! variables, stored as they are, and secrets, sealed with the [`SecretKey`] (see
//! `secrets.rs`) and bound to their place. The two tables have the same key
//! (repository, environment, name); an environment's entry wins over the repository's.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, SecretKey, Store, now_ms};

/// A variable of a repository (`environment` empty) or of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Variable {
    pub environment: String,
    pub name: String,
    pub value: String,
    pub updated_at: i64,
    pub updated_by: Option<String>,
}

/// A secret as listed: its name and when it changed, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretInfo {
    pub environment: String,
    pub name: String,
    pub updated_at: i64,
    pub updated_by: Option<String>,
}

// The columns [`variable_from_row`] reads (of `variables`).
#[rustfmt::skip]
crate::row::record!(VARIABLE_COLUMNS, variable_from_row, Variable {
    environment, name, value, updated_at, updated_by
});

// The columns [`secret_info_from_row`] reads (of `secrets`): never the sealed value.
#[rustfmt::skip]
crate::row::record!(SECRET_INFO_COLUMNS, secret_info_from_row, SecretInfo {
    environment, name, updated_at, updated_by
});

/// The columns [`open_secret_row`] reads (of `secrets`).
const SEALED_COLUMNS: &str = "environment, name, sealed";

/// A secret's name and opened value.
fn open_secret_row(
    key: &SecretKey,
    repository_id: &str,
    row: &AnyRow,
) -> Result<(String, Vec<u8>)> {
    let environment: String = row.try_get("environment")?;
    let name: String = row.try_get("name")?;
    let sealed: String = row.try_get("sealed")?;
    let value = key.open(&sealed, &secret_context(repository_id, &environment, &name))?;
    Ok((name, value))
}

/// One of the two tables of settings, and the column that holds an entry's value.
struct Table {
    name: &'static str,
    value: &'static str,
}

const VARIABLES: Table = Table {
    name: "variables",
    value: "value",
};
const SECRETS: Table = Table {
    name: "secrets",
    value: "sealed",
};

/// The associated data a secret is sealed with: where it belongs.
fn secret_context(repository_id: &str, environment: &str, name: &str) -> String {
    format!("secret:{repository_id}:{environment}:{name}")
}

/// What the key check seals, and where.
const KEY_CHECK: (&[u8], &str) = (b"ferry key check", "key-check");

impl Store {
    /// Whether `key` is the key the store's sealed values were sealed with: the first
    /// server to open the store seals a check value with its key; a server with
    /// another key is refused here, with what to do, before it fails on secrets.
    pub async fn check_key(&self, key: &SecretKey) -> Result<()> {
        let read = async || -> Result<Option<String>> {
            Ok(sqlx::query("SELECT sealed FROM key_check WHERE id = 'key'")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("sealed"))
                .transpose()?)
        };
        let sealed = match read().await? {
            Some(sealed) => sealed,
            None => {
                let _turn = self.turn().await;
                sqlx::query(
                    "INSERT INTO key_check (id, sealed) VALUES ('key', $1) ON CONFLICT (id) DO NOTHING",
                )
                .bind(key.seal(KEY_CHECK.0, KEY_CHECK.1)?)
                .execute(&self.pool)
                .await?;
                // Another server may have written its own first.
                read().await?.unwrap_or_default()
            }
        };
        match key.open(&sealed, KEY_CHECK.1) {
            Ok(plain) if plain == KEY_CHECK.0 => Ok(()),
            _ => Err(crate::Error::Invalid(
                "this server's secret key is not the one the database's secrets were sealed \
                 with: every server sharing a database needs the same key (FERRY_SECRET_KEY, \
                 or the same <data dir>/secret.key)"
                    .into(),
            )),
        }
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
        self.put_setting(&VARIABLES, repository_id, environment, name, value, by)
            .await
    }

    /// Variables of the repository and one environment (every environment when `None`),
    /// by environment and name.
    pub async fn variables(
        &self,
        repository_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Variable>> {
        let rows = self
            .setting_rows(&VARIABLES, VARIABLE_COLUMNS, repository_id, environment)
            .await?;
        rows.iter().map(variable_from_row).collect()
    }

    pub async fn delete_variable(
        &self,
        repository_id: &str,
        environment: &str,
        name: &str,
    ) -> Result<bool> {
        self.delete_setting(&VARIABLES, repository_id, environment, name)
            .await
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
        self.put_setting(&SECRETS, repository_id, environment, name, &sealed, by)
            .await
    }

    /// The names of the repository's secrets and one environment's (every environment's
    /// when `None`).
    pub async fn secret_names(
        &self,
        repository_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<SecretInfo>> {
        let rows = self
            .setting_rows(&SECRETS, SECRET_INFO_COLUMNS, repository_id, environment)
            .await?;
        rows.iter().map(secret_info_from_row).collect()
    }

    /// The opened secrets for a deployment to `environment`: the environment's win over
    /// the repository's of the same name. (name, value)
    pub async fn open_secrets(
        &self,
        key: &SecretKey,
        repository_id: &str,
        environment: &str,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = self
            .setting_rows(&SECRETS, SEALED_COLUMNS, repository_id, Some(environment))
            .await?;
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for row in &rows {
            let (name, value) = open_secret_row(key, repository_id, row)?;
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
        let rows = sqlx::query(&format!(
            "SELECT {SEALED_COLUMNS} FROM secrets WHERE repository_id = $1"
        ))
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(open_secret_row(key, repository_id, row)?.1))
            .collect()
    }

    pub async fn delete_secret(
        &self,
        repository_id: &str,
        environment: &str,
        name: &str,
    ) -> Result<bool> {
        self.delete_setting(&SECRETS, repository_id, environment, name)
            .await
    }

    /// `columns` of the entries of `table` that belong to the repository and to
    /// `environment` (to any environment when `None`: a listing hides no scope), by
    /// environment (the repository's, '', first) and name.
    async fn setting_rows(
        &self,
        table: &Table,
        columns: &str,
        repository_id: &str,
        environment: Option<&str>,
    ) -> Result<Vec<AnyRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM {}
             WHERE repository_id = $1 AND (environment = '' OR environment = $2 OR $3 = 1)
             ORDER BY environment, name",
            table.name
        ))
        .bind(repository_id)
        .bind(environment.unwrap_or(""))
        .bind(i64::from(environment.is_none()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Inserts or replaces an entry of `table`.
    async fn put_setting(
        &self,
        table: &Table,
        repository_id: &str,
        environment: &str,
        name: &str,
        value: &str,
        by: Option<&str>,
    ) -> Result<()> {
        let _turn = self.turn().await;
        let (table, column) = (table.name, table.value);
        sqlx::query(&format!(
            "INSERT INTO {table} (repository_id, environment, name, {column}, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id, environment, name) DO UPDATE SET {column} = excluded.{column},
               updated_at = excluded.updated_at, updated_by = excluded.updated_by"
        ))
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

    /// Removes an entry of `table`; false when there was none.
    async fn delete_setting(
        &self,
        table: &Table,
        repository_id: &str,
        environment: &str,
        name: &str,
    ) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE repository_id = $1 AND environment = $2 AND name = $3",
            table.name
        ))
        .bind(repository_id)
        .bind(environment)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
