//! Users, their API tokens, and the groups of approvers they belong to.

use sqlx::Row;

use crate::{Error, Result, Store, Token, User, conflict, now_ms};

// The columns [`user_from_row`] reads (of `users`).
#[rustfmt::skip]
crate::row::record!(USER_COLUMNS, user_from_row, User {
    id, name, role, created_at
});

// The columns [`token_from_row`] reads (of `tokens`): never the hash.
#[rustfmt::skip]
crate::row::record!(TOKEN_COLUMNS, token_from_row, Token {
    id, user_id, name, created_at, last_used_at, revoked_at
});

impl Store {
    pub async fn create_user(&self, name: &str, role: &str) -> Result<User> {
        let id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(&format!(
            "INSERT INTO users (id, name, role, created_at) VALUES ($1, $2, $3, $4)
             RETURNING {USER_COLUMNS}"
        ))
        .bind(&id)
        .bind(name)
        .bind(role)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("user `{name}`")))?;
        user_from_row(&row)
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user_by_name(&self, name: &str) -> Result<User> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user `{name}`")))?;
        user_from_row(&row)
    }

    /// Stores a token by the hash of its secret.
    pub async fn create_token(&self, user_id: &str, name: &str, hash: &str) -> Result<Token> {
        let id = uuid::Uuid::now_v7().to_string();
        let row = sqlx::query(&format!(
            "INSERT INTO tokens (id, user_id, name, hash, created_at) VALUES ($1, $2, $3, $4, $5)
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(&id)
        .bind(user_id)
        .bind(name)
        .bind(hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict(e, "token".into()))?;
        token_from_row(&row)
    }

    /// The user of a live (not revoked) token, by the hash of its secret; records the use.
    pub async fn user_by_token_hash(&self, hash: &str) -> Result<Option<(User, Token)>> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let token = token_from_row(&row)?;
        let user = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(&token.user_id)
            .fetch_one(&self.pool)
            .await?;
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&token.id)
            .execute(&self.pool)
            .await?;
        Ok(Some((user_from_row(&user)?, token)))
    }

    pub async fn tokens(&self, user_id: &str) -> Result<Vec<Token>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = $1 ORDER BY id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("live token {id}")));
        }
        Ok(())
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
