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
    /// The forge accounts the user is, `PROVIDER:LOGIN` (`github:alice`): approval
    /// rules' `not: [author, triggerer]` know the user by them.
    #[serde(default)]
    pub forge: Vec<String>,
    /// With a web session (not a token): one of the caller's tokens, again (the new
    /// user's token is one a stolen session could otherwise keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
}

/// The new user and its first token (shown only this once).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedUser {
    pub user: User,
    pub token: String,
    /// Its forge accounts, as stored (lower case).
    pub forge: Vec<String>,
}

/// `POST /api/v1/users/{user}/forge`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkForge {
    /// `PROVIDER:LOGIN`, PROVIDER one of github, gitlab, gitea.
    pub identity: String,
}

/// A user's forge accounts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ForgeIdentities {
    pub user: String,
    pub forge: Vec<String>,
}

/// The forge identities in `asked`, checked and in their stored form; none may be
/// another user's than `owner`'s.
pub async fn checked_forge(
    store: &ferry_store::Store,
    asked: &[String],
    owner: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for text in asked {
        let identity = ferry_store::forge_identity(text).map_err(ApiError::invalid)?;
        if let Some(other) = store.user_of_forge_identity(&identity).await?
            && Some(other.as_str()) != owner
        {
            return Err(ferry_store::Error::Conflict(format!(
                "forge identity `{identity}` (another user's)"
            ))
            .into());
        }
        out.push(identity);
    }
    Ok(out)
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
    /// With a web session (not a token): one of the caller's tokens, again. A stolen
    /// session cookie alone cannot mint a token that would outlive the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
}

/// Refuses an anonymous reader (`--public-reads`): what is one's own needs a caller.
fn signed_in(caller: &crate::auth::Caller) -> Result<(), ApiError> {
    if caller.user.id.is_empty() {
        return Err(ApiError::unauthorized());
    }
    Ok(())
}

/// A caller with a web session proves it holds one of its tokens (`confirm`) before
/// anything that mints one; a bearer caller has just shown one.
pub(crate) async fn confirmed(
    s: &AppState,
    caller: &crate::auth::Caller,
    confirm: Option<&str>,
) -> Result<(), ApiError> {
    if !caller.session {
        return Ok(());
    }
    let shown = match confirm.map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => s.store.user_by_token_hash(&hash_token(token)).await?,
        None => None,
    };
    match shown {
        Some((user, _)) if user.id == caller.user.id => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            crate::error::ErrorCode::Forbidden,
            "with a web session, making a token needs one of your tokens again (`confirm`)",
        )),
    }
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
    Need(caller, _): Need<AsAdmin>,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    confirmed(&s, &caller, body.confirm.as_deref()).await?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::invalid("`role` must be viewer, developer, approver or admin"))?;
    if body.name.is_empty() || body.name.len() > 100 || body.name.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            "`name` must be 1-100 characters without spaces",
        ));
    }
    let forge = checked_forge(&s.store, &body.forge, None).await?;
    let (user, token) = create_user_with_token(&s.store, &body.name, role).await?;
    for group in &body.groups {
        s.store.add_group_member(group, &user.id).await?;
    }
    for identity in &forge {
        s.store.link_forge_identity(&user.id, identity).await?;
    }
    let forge = s.store.forge_identities_of(&user.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser { user, token, forge }),
    ))
}

/// Links a user to a forge account (admin).
pub(crate) async fn link_forge(
    State(s): State<AppState>,
    Need(caller, _): Need<AsAdmin>,
    Path(name): Path<String>,
    Body(body): Body<LinkForge>,
) -> Result<Json<ForgeIdentities>, ApiError> {
    let user = s.store.user_by_name(&name).await?;
    let forge = checked_forge(
        &s.store,
        std::slice::from_ref(&body.identity),
        Some(&user.id),
    )
    .await?;
    for identity in &forge {
        s.store.link_forge_identity(&user.id, identity).await?;
    }
    s.store
        .audit(
            None,
            &format!("user:{}", caller.user.name),
            "user.forge",
            &user.name,
            Some(&forge.join(", ")),
        )
        .await?;
    Ok(Json(ForgeIdentities {
        forge: s.store.forge_identities_of(&user.id).await?,
        user: user.name,
    }))
}

pub(crate) async fn tokens(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
) -> Result<Json<TokenList>, ApiError> {
    signed_in(&caller)?;
    Ok(Json(TokenList {
        tokens: s.store.tokens(&caller.user.id).await?,
    }))
}

pub(crate) async fn create_token(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Body(body): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    confirmed(&s, &caller, body.confirm.as_deref()).await?;
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

/// A web session of the caller's (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: ferry_store::Session,
    /// The session this request came with.
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `GET /api/v1/sessions`: the caller's web sessions that have not ended.
pub(crate) async fn sessions(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    headers: axum::http::HeaderMap,
) -> Result<Json<SessionList>, ApiError> {
    signed_in(&caller)?;
    let current = match crate::auth::session_secret(&headers) {
        Some(secret) => s
            .store
            .session_by_hash(&hash_token(&secret), crate::auth::SESSION_IDLE_MS)
            .await?
            .map(|(_, session)| session.id),
        None => None,
    };
    // Those that have not ended by time either (they are swept later).
    let now = ferry_store::now_ms();
    let sessions = s
        .store
        .sessions(&caller.user.id)
        .await?
        .into_iter()
        .filter(|x| x.expires_at > now && x.seen_at > now - crate::auth::SESSION_IDLE_MS)
        .map(|session| SessionView {
            current: current.as_deref() == Some(session.id.as_str()),
            session,
        })
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// `DELETE /api/v1/sessions/{session}`: ends one of the caller's web sessions (its
/// cookie is worth nothing after, wherever a copy of it is).
pub(crate) async fn end_session(
    State(s): State<AppState>,
    Need(caller, _): Need<AsViewer>,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    signed_in(&caller)?;
    if !s.store.revoke_session(&caller.user.id, &session).await? {
        return Err(ApiError::not_found(format!("session {session} not found")));
    }
    Ok(StatusCode::NO_CONTENT)
}
