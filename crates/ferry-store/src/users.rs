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

/// The forges whose accounts users can be linked to.
pub const FORGES: [&str; 3] = ["github", "gitlab", "gitea"];

/// `PROVIDER:LOGIN` in its stored form (lower case), or why it is not one: the provider
/// one of [`FORGES`], the login 1-100 letters, digits, `.`, `_` or `-`.
pub fn forge_identity(text: &str) -> std::result::Result<String, String> {
    let bad = || {
        format!(
            "`{text}` is not a forge identity: write PROVIDER:LOGIN, PROVIDER one of {}",
            FORGES.join(", ")
        )
    };
    let (provider, login) = text.split_once(':').ok_or_else(bad)?;
    let provider = provider.to_ascii_lowercase();
    let login_ok = !login.is_empty()
        && login.len() <= 100
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !FORGES.contains(&provider.as_str()) || !login_ok {
        return Err(bad());
    }
    Ok(format!("{provider}:{}", login.to_ascii_lowercase()))
}

impl Store {
    pub async fn create_user(&self, name: &str, role: &str) -> Result<User> {
        let _turn = self.turn().await;
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
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn create_token(&self, user_id: &str, name: &str, hash: &str) -> Result<Token> {
        let _turn = self.turn().await;
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
        // When it was last used, to the minute: a request does not write (and wait for
        // the writers' turn) when the token was used in the last minute already.
        let now = now_ms();
        if token.last_used_at.is_none_or(|at| now - at >= 60_000) {
            let _turn = self.turn().await;
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token.id)
                .execute(&self.pool)
                .await?;
        }
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
        let _turn = self.turn().await;
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
        let _turn = self.turn().await;
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

    /// Records that the user is forge account `identity` (see [`forge_identity`]);
    /// a conflict when another user is.
    pub async fn link_forge_identity(&self, user_id: &str, identity: &str) -> Result<()> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "INSERT INTO forge_identities (identity, user_id) VALUES ($1, $2)
             ON CONFLICT (identity) DO NOTHING",
        )
        .bind(identity)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let owner: String =
                sqlx::query("SELECT user_id FROM forge_identities WHERE identity = $1")
                    .bind(identity)
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("user_id")?;
            if owner != user_id {
                return Err(Error::Conflict(format!(
                    "forge identity `{identity}` (another user's)"
                )));
            }
        }
        Ok(())
    }

    /// The user who is forge account `identity`, if one is.
    pub async fn user_of_forge_identity(&self, identity: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_id FROM forge_identities WHERE identity = $1")
            .bind(identity)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("user_id")?),
            None => None,
        })
    }

    /// The forge accounts a user is (`github:alice`), sorted.
    pub async fn forge_identities_of(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT identity FROM forge_identities WHERE user_id = $1 ORDER BY identity",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("identity")?)).collect()
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
