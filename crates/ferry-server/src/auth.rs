//! Tokens and roles. A token is `ferry_` and 40 random hex digits; only its SHA-256 is
//! stored, so a leaked database does not leak tokens.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// What a user may do. Each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read repositories, runs and logs.
    Viewer,
    /// Also trigger, cancel and re-run, promote and roll back.
    Developer,
    /// Also approve or reject deployments (where the environment's rule allows).
    Approver,
    /// Also manage repositories, users, variables and secrets.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ferry_{hex}")
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a user with a first token; returns the token (shown once, never stored).
pub async fn create_user_with_token(
    store: &ferry_store::Store,
    name: &str,
    role: Role,
) -> Result<(ferry_store::User, String), ferry_store::Error> {
    let user = store.create_user(name, role.as_str()).await?;
    let token = new_token();
    store
        .create_token(&user.id, "initial", &hash_token(&token))
        .await?;
    Ok((user, token))
}

/// The caller of an API request, authenticated by its bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: ferry_store::User,
    pub role: Role,
    /// Authenticated by a web session's cookie (not a token): minting a token then
    /// needs one of the user's tokens again (a stolen cookie must not outlive its
    /// session).
    pub session: bool,
}

impl Caller {
    /// Refuses the request (403) unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(role.as_str()))
        }
    }

    /// How runs record who asked for them.
    pub fn label(&self) -> String {
        format!("user:{}", self.user.name)
    }
}

/// The cookie that carries a web session's secret.
pub const SESSION_COOKIE: &str = "ferry_session";
/// Its name where the server is reached over HTTPS: a `__Host-` cookie is `Secure`, of
/// this host alone and of every path, so no sibling domain or plain-HTTP answer can set
/// one of its own in its place.
pub const SECURE_SESSION_COOKIE: &str = "__Host-ferry_session";
/// A web session ends after this long unused.
pub const SESSION_IDLE_MS: i64 = 12 * 3_600_000;
/// A web session ends this long after sign-in, however much it is used.
pub const SESSION_MAX_MS: i64 = 7 * 24 * 3_600_000;

/// The header (or form field `csrf`) a session's changes carry: proof that the page
/// that sends them was Ferry's own.
pub const CSRF_HEADER: &str = "x-ferry-csrf";

/// A web session's secret, as the request's cookies carry it (the `__Host-` cookie
/// first).
pub fn session_secret(headers: &axum::http::HeaderMap) -> Option<String> {
    let cookies = || {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
    };
    [SECURE_SESSION_COOKIE, SESSION_COOKIE]
        .iter()
        .find_map(|want| {
            cookies()
                .find(|(name, _)| name == want)
                .map(|(_, value)| value.trim().to_string())
                .filter(|v| !v.is_empty())
        })
}

/// The bearer token of a request, if its `Authorization` is one (another scheme, e.g.
/// a proxy's Basic credentials, is not Ferry's and leaves the session in charge).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// The CSRF token of the session whose secret is `secret`: only a page given it by the
/// server, or a holder of the cookie, has it (the cookie is `HttpOnly`).
pub fn csrf_token(secret: &str) -> String {
    hash_token(&format!("ferry-csrf\0{secret}"))
}

/// Whether a request that changes something came from Ferry's own pages, as the
/// browser says: `Sec-Fetch-Site` is `same-origin` or `none` (typed by the user); a
/// browser that sends none must send an `Origin` of this host. Why not, if not.
pub fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err("a cross-site request may not change anything"),
        };
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            if origin_host == Some(host) {
                Ok(())
            } else {
                Err("a request from another origin may not change anything")
            }
        }
        // No browser header at all: not a browser's cross-site request (the
        // synchronizer token is still required).
        (None, _) => Ok(()),
        (Some(_), None) => Err("a request without a Host may not change anything"),
    }
}

impl Caller {
    /// The caller of a request that carries a web session's cookie (and no bearer
    /// token): the session must live, and a request that may change something must
    /// come from this origin with the session's CSRF token in [`CSRF_HEADER`].
    async fn by_session(parts: &Parts, state: &AppState, secret: &str) -> Result<Caller, ApiError> {
        let (user, _) = state
            .store
            .session_by_hash(&hash_token(secret), SESSION_IDLE_MS)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    crate::error::ErrorCode::Unauthorized,
                    "the session has ended: sign in again",
                )
            })?;
        let safe = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        );
        if !safe {
            let refuse = |why: &str| {
                ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    crate::error::ErrorCode::Forbidden,
                    why.to_string(),
                )
            };
            same_origin(&parts.headers).map_err(refuse)?;
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let want = csrf_token(secret);
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                sent.as_bytes(),
                want.as_bytes(),
            )) {
                return Err(refuse(
                    "a change made with a session needs its CSRF token (header X-Ferry-CSRF)",
                ));
            }
        }
        let role = Role::parse(&user.role)
            .ok_or_else(|| ApiError::internal(format!("user {} has an unknown role", user.name)))?;
        Ok(Caller {
            user,
            role,
            session: true,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers);
        if token.is_none()
            && let Some(secret) = session_secret(&parts.headers)
        {
            return Caller::by_session(parts, state, &secret).await;
        }
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let (user, _) = state
            .store
            .user_by_token_hash(&hash_token(token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let role = Role::parse(&user.role)
            .ok_or_else(|| ApiError::internal(format!("user {} has an unknown role", user.name)))?;
        Ok(Caller {
            user,
            role,
            session: false,
        })
    }
}

/// A caller with at least the role `R`: checked while extracting, before the body is
/// read, so a weak token gets 403 whatever it sends.
#[derive(Debug, Clone)]
pub struct Need<R>(pub Caller, pub std::marker::PhantomData<R>);

pub trait MinRole {
    const ROLE: Role;
}

#[derive(Debug, Clone)]
pub struct AsViewer;
#[derive(Debug, Clone)]
pub struct AsDeveloper;
#[derive(Debug, Clone)]
pub struct AsApprover;
#[derive(Debug, Clone)]
pub struct AsAdmin;

impl MinRole for AsViewer {
    const ROLE: Role = Role::Viewer;
}
impl MinRole for AsDeveloper {
    const ROLE: Role = Role::Developer;
}
impl MinRole for AsApprover {
    const ROLE: Role = Role::Approver;
}
impl MinRole for AsAdmin {
    const ROLE: Role = Role::Admin;
}

impl<R: MinRole + Send + Sync> FromRequestParts<AppState> for Need<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let anonymous =
            bearer(&parts.headers).is_none() && session_secret(&parts.headers).is_none();
        // Only reads: creating or revoking tokens also needs no more than the viewer
        // role, but always a token.
        let read = parts.method == axum::http::Method::GET;
        if anonymous && read && state.config.public_reads && R::ROLE == Role::Viewer {
            let user = ferry_store::User {
                id: String::new(),
                name: "anonymous".into(),
                role: "viewer".into(),
                created_at: 0,
            };
            return Ok(Need(
                Caller {
                    user,
                    role: Role::Viewer,
                    session: false,
                },
                std::marker::PhantomData,
            ));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::ROLE)?;
        Ok(Need(caller, std::marker::PhantomData))
    }
}

/// The repository the route's `{repo}` names (by name or id), for a caller with at
/// least the role `R` (checked first, as [`Need`] does): most routes under
/// `/api/v1/repos/{repo}` start with both.
#[derive(Debug, Clone)]
pub struct InRepo<R>(
    pub ferry_store::Repository,
    pub Caller,
    pub std::marker::PhantomData<R>,
);

impl<R: MinRole + Send + Sync> FromRequestParts<AppState> for InRepo<R> {
    type Rejection = ApiError;

    async fn from_request_parts(p: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let (parts, state) = (p, s);
        let Need(caller, _) = Need::<R>::from_request_parts(parts, state).await?;
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::not_found(e.body_text()))?;
        let name = params
            .get("repo")
            .ok_or_else(|| ApiError::internal("InRepo on a route without {repo}"))?;
        let repo = state.store.repository(name).await?;
        Ok(InRepo(repo, caller, std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        assert!(a.starts_with("ferry_") && a.len() == 46);
        assert_ne!(a, new_token());
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Developer && Role::Developer > Role::Viewer);
        assert_eq!(Role::parse("developer"), Some(Role::Developer));
        assert_eq!(Role::parse("root"), None);
    }

    use axum::http::HeaderMap;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; ferry_session=s3cret ; b=2")]);
        assert_eq!(session_secret(&h).as_deref(), Some("s3cret"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "ferry_session=x")]);
        assert_eq!(session_secret(&h).as_deref(), Some("x"));
        assert_eq!(
            session_secret(&headers(&[("cookie", "ferry_session_old=x")])),
            None
        );
        assert_eq!(
            session_secret(&headers(&[("cookie", "ferry_session=")])),
            None
        );
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_ne!(
            csrf_token("a"),
            hash_token("a"),
            "not the session's own hash"
        );
    }

    #[test]
    fn changes_must_come_from_this_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        let h = headers(&[
            ("origin", "https://ferry.example.com"),
            ("host", "ferry.example.com"),
        ]);
        assert!(same_origin(&h).is_ok());
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("host", "ferry.example.com"),
        ]);
        assert!(same_origin(&h).is_err());
        let h = headers(&[("origin", "null"), ("host", "ferry.example.com")]);
        assert!(same_origin(&h).is_err());
        assert!(
            same_origin(&headers(&[])).is_ok(),
            "no browser: the token decides"
        );
    }
}
