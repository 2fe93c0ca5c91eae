//! Web UI sessions: made from an API token, kept as the SHA-256 of the cookie's secret,
//! ended by sign-out, by expiry (idle or absolute), or with the token they came from.

use serde::{Deserialize, Serialize};

use crate::{Result, Store, User, now_ms};

/// A session, without its secret (only a hash of it is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    /// The API token it was made from.
    pub token_id: String,
    pub created_at: i64,
    /// When it was last used (to the minute): it ends after a while unused.
    pub seen_at: i64,
    /// When it ends however much it is used.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

// The columns [`session_from_row`] reads (of `sessions`): never the hash.
#[rustfmt::skip]
crate::row::record!(SESSION_COLUMNS, session_from_row, Session {
    id, user_id, token_id, created_at, seen_at, expires_at, revoked_at
});

/// How often a session's use is written (at most): a page's requests do not each write.
const SEEN_EVERY_MS: i64 = 60_000;

impl Store {
    /// A new session of `user_id` made from token `token_id`, found again by `hash` (of
    /// the cookie's secret) until `expires_at`.
    pub async fn create_session(
        &self,
        user_id: &str,
        token_id: &str,
        hash: &str,
        expires_at: i64,
    ) -> Result<Session> {
        let _turn = self.turn().await;
        let now = now_ms();
        let row = sqlx::query(&format!(
            "INSERT INTO sessions (id, hash, user_id, token_id, created_at, seen_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING {SESSION_COLUMNS}"
        ))
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(hash)
        .bind(user_id)
        .bind(token_id)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await?;
        session_from_row(&row)
    }

    /// The live session whose secret hashes to `hash`, with its user: not revoked, not
    /// past `expires_at`, used within `idle_ms`, and its token not revoked. Its use is
    /// recorded (at most once a minute).
    pub async fn session_by_hash(
        &self,
        hash: &str,
        idle_ms: i64,
    ) -> Result<Option<(User, Session)>> {
        let now = now_ms();
        let Some(row) = sqlx::query(&format!(
            "SELECT {} FROM sessions s JOIN tokens t ON t.id = s.token_id
             WHERE s.hash = $1 AND s.revoked_at IS NULL AND t.revoked_at IS NULL
               AND s.expires_at > $2 AND s.seen_at > $3",
            SESSION_COLUMNS
                .split(", ")
                .map(|c| format!("s.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(hash)
        .bind(now)
        .bind(now - idle_ms)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let session = session_from_row(&row)?;
        let Some(user) = self.user_by_id(&session.user_id).await? else {
            return Ok(None);
        };
        if now - session.seen_at >= SEEN_EVERY_MS {
            let _turn = self.turn().await;
            sqlx::query("UPDATE sessions SET seen_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&session.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some((user, session)))
    }

    /// The user's sessions that have not ended (by revocation; expired ones are listed
    /// until they are swept), newest first.
    pub async fn sessions(&self, user_id: &str) -> Result<Vec<Session>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Ends a session of `user_id` (by id, or by the hash of its secret when signing
    /// out): whether one ended.
    pub async fn revoke_session(&self, user_id: &str, id_or_hash: &str) -> Result<bool> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1
             WHERE user_id = $2 AND (id = $3 OR hash = $3) AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(user_id)
        .bind(id_or_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes sessions that ended before `before` (revoked or expired): their rows
    /// serve nobody. How many.
    pub async fn sweep_sessions(&self, before: i64) -> Result<u64> {
        let _turn = self.turn().await;
        let done = sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
