//! Users and their tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ferry_store::{Token, User};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Body;
use crate::auth::{AsAdmin, AsViewer, Need, Role, create_user_with_token, hash_token, new_token};
use crate::{ApiError, AppState};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1-100 characters without spaces.
    pub name: String,
    /// `viewer`, `developer`, `approver` or `admin`.
    pub role: String,
    /// Approver groups (`approval.from` can name them).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The new user and its first token (shown only this once).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedUser {
    pub user: User,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1-100 characters.
    pub name: String,
}

/// The new token's record and its secret (shown only this once; only its hash is kept).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    pub token: Token,
    pub secret: String,
}

pub(crate) async fn list(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: s.store.users().await?,
    }))
}

pub(crate) async fn create(
    State(s): State<AppState>,
    _: Need<AsAdmin>,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("`role` must be viewer, developer, approver or admin"))?;
    if body.name.is_empty() || body.name.len() > 100 || body.name.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            "`name` must be 1-100 characters without spaces",
        ));
    }
    let (user, token) = create_user_with_token(&s.store, &body.name, role).await?;
    for group in &body.groups {
        s.store.add_group_member(group, &user.id).await?;
    }
    Ok((StatusCode::CREATED, Json(CreatedUser { user, token })))
}

pub(crate) async fn tokens(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList {
        tokens: s.store.tokens(&caller.user.id).await?,
    }))
}

pub(crate) async fn create_token(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Body(body): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid("`name` must be 1-100 characters"));
    }
    let secret = new_token();
    let token = s
        .store
        .create_token(&caller.user.id, &body.name, &hash_token(&secret))
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

pub(crate) async fn revoke_token(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    let own = s
        .store
        .tokens(&caller.user.id)
        .await?
        .iter()
        .any(|t| t.id == token);
    if !own && caller.role < Role::Admin {
        return Err(ApiError::not_found(format!("token {token} not found")));
    }
    s.store.revoke_token(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}
