//! The web UI, served by `ferry serve` next to the API (see `docs/design.md`, "Web UI"
//! and `docs/ui.md`).
//!
//! Pages are HTML rendered on the server by askama templates (`templates/`), which
//! escape every value they are given. Pages read through the API's own handlers, so a
//! page shows exactly what the API answers and refuses what it refuses. Every change a
//! page makes is a form posted to [`act`], which checks the session's CSRF token and
//! then sends the change to the API router itself, in process: the same route, the same
//! role and approval checks, the same audit entry as the CLI's request.

pub mod ansi;
mod assets;
pub mod dag;
mod log;
mod pages;
pub mod queue;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::auth::{Caller, Role};
use crate::{ApiError, AppState};

/// Every page's Content-Security-Policy: no inline script or style, nothing from
/// elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the UI's handlers share: the state, the API router (changes go through it)
/// and whether the server speaks TLS (the session cookie is then `Secure`).
#[derive(Clone, educe::Educe)]
#[educe(Debug)]
pub(crate) struct Ui {
    #[educe(Debug(ignore))]
    pub(crate) app: AppState,
    #[educe(Debug(ignore))]
    api: Router,
    secure: bool,
}

impl axum::extract::FromRef<Ui> for AppState {
    fn from_ref(ui: &Ui) -> AppState {
        ui.app.clone()
    }
}

/// The UI's routes, merged with the API's `api` router (which answers what these do
/// not).
pub(crate) fn router(app: AppState, api: Router, secure: bool) -> Router {
    let ui = Ui {
        app,
        api: api.clone(),
        secure,
    };
    let pages = Router::new()
        .route("/", get(pages::dashboard))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/act", post(act))
        .route("/ui/account", get(pages::account))
        .route("/ui/users", get(pages::users))
        .route("/ui/repos/{repo}", get(pages::repository))
        .route("/ui/repos/{repo}/environments", get(pages::environments))
        .route("/ui/repos/{repo}/deployments", get(pages::deployments))
        .route(
            "/ui/repos/{repo}/deployments/{deployment}",
            get(pages::deployment),
        )
        .route("/ui/repos/{repo}/releases", get(pages::releases))
        .route("/ui/repos/{repo}/releases/{release}", get(pages::release))
        .route("/ui/repos/{repo}/audit", get(pages::audit))
        .route("/ui/repos/{repo}/settings", get(pages::settings))
        .route(
            "/ui/repos/{repo}/webhook-secret",
            post(pages::webhook_secret),
        )
        .route("/ui/runs/{run}", get(pages::run))
        .route("/ui/runs/{run}/jobs/{job}", get(log::page))
        .route("/ui/runs/{run}/jobs/{job}/lines", get(log::lines))
        .route("/ui/runs/{run}/jobs/{job}/raw", get(log::raw))
        .layer(axum::middleware::map_response(page_headers))
        .route("/ui/assets/{name}", get(assets::serve))
        .layer(axum::middleware::from_fn(crate::api::log_request))
        .with_state(ui);
    pages.merge(api)
}

/// The headers of every page: a strict CSP, no sniffing, no framing, no caching (a page
/// holds the session's CSRF token), the referrer kept to this origin.
async fn page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Who looks at a page: a signed-in user (session cookie, or a bearer token), or with
/// `--public-reads` anyone, as a viewer. Anyone else is sent to the sign-in page.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub caller: Caller,
    /// The session's secret (its CSRF token is made from it); none: not signed in with
    /// a session, so no form is offered.
    secret: Option<String>,
    /// The path and query asked for, to come back to after signing in.
    path: String,
}

impl Viewer {
    pub(crate) fn may(&self, role: Role) -> bool {
        self.secret.is_some() && self.caller.role >= role
    }

    /// The frame every page shares.
    pub(crate) fn chrome(&self, nav: Nav) -> Chrome {
        Chrome {
            user: self.caller.user.name.clone(),
            role: self.caller.role.as_str(),
            signed_in: self.secret.is_some(),
            csrf: self
                .secret
                .as_deref()
                .map(crate::auth::csrf_token)
                .unwrap_or_default(),
            may_develop: self.may(Role::Developer),
            may_approve: self.may(Role::Approver),
            admin: self.may(Role::Admin),
            css: assets::href("app.css"),
            js: assets::href("app.js"),
            nav,
            here: self.path.clone(),
            now: ferry_store::now_ms(),
        }
    }
}

/// Where a page belongs in the navigation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nav {
    /// The repository the page is about.
    pub repo: Option<String>,
    /// Which of the repository's tabs: `runs`, `environments`, `deployments`,
    /// `releases`, `audit`, `settings`.
    pub tab: &'static str,
}

impl Nav {
    pub(crate) fn repo(name: &str, tab: &'static str) -> Self {
        Nav {
            repo: Some(name.to_string()),
            tab,
        }
    }
}

/// The frame of every page: who is signed in, what they may do, the assets' names.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub user: String,
    pub role: &'static str,
    pub signed_in: bool,
    pub csrf: String,
    pub may_develop: bool,
    pub may_approve: bool,
    pub admin: bool,
    pub css: &'static str,
    pub js: &'static str,
    pub nav: Nav,
    pub here: String,
    /// When the page was made (ms): live pages tell later changes from it.
    pub now: i64,
}

impl Chrome {
    /// `aria-current="page"` on the tab that is shown.
    pub(crate) fn current(&self, tab: &str) -> &'static str {
        if self.nav.tab == tab { "page" } else { "false" }
    }
}

impl FromRequestParts<Ui> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Response> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let secret = crate::auth::session_secret(&parts.headers);
        let bearer = crate::auth::bearer(&parts.headers).is_some();
        if secret.is_none() && !bearer {
            if ui.app.config.public_reads && parts.method == Method::GET {
                let user = ferry_store::User {
                    id: String::new(),
                    name: "anonymous".into(),
                    role: "viewer".into(),
                    created_at: 0,
                };
                return Ok(Viewer {
                    caller: Caller {
                        user,
                        role: Role::Viewer,
                        session: false,
                    },
                    secret: None,
                    path,
                });
            }
            // A link followed from another site (chat, a forge, an e-mail) comes without
            // the `SameSite=Strict` cookie: the page is asked for again from this site,
            // which sends it, before anyone is told to sign in.
            let cross_site = parts
                .headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"cross-site");
            if cross_site && parts.method == Method::GET {
                return Err(pages::again_from_here(&path));
            }
            return Err(to_sign_in(&path, None));
        }
        match Caller::from_request_parts(parts, &ui.app).await {
            Ok(caller) => Ok(Viewer {
                caller,
                secret: if bearer { None } else { secret },
                path,
            }),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                Err(to_sign_in(&path, Some(ui.cookie_name())))
            }
            Err(e) => Err(pages::error_page(e)),
        }
    }
}

impl Ui {
    /// The session cookie's name: `__Host-` where browsers reach the server over HTTPS.
    fn cookie_name(&self) -> &'static str {
        if self.secure {
            crate::auth::SECURE_SESSION_COOKIE
        } else {
            crate::auth::SESSION_COOKIE
        }
    }

    /// The session cookie's attributes.
    fn cookie(&self, value: &str, max_age: i64) -> String {
        format!(
            "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// A redirect to the sign-in page, which sends the user back to `path` afterwards;
/// `stale`: the name of a session cookie that no longer works, removed.
pub(crate) fn to_sign_in(path: &str, stale: Option<&str>) -> Response {
    let next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let mut resp = Redirect::to(&format!("/ui/sign-in?next={next}")).into_response();
    if let Some(name) = stale
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
            if name.starts_with("__Host-") {
                "; Secure"
            } else {
                ""
            }
        ))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A path of this site to go back to: `/…`, never `//host` or `/\host` (which a
/// browser reads as another site), else `/`.
pub(crate) fn local_path(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local { next } else { "/" }
}

#[derive(Debug, serde::Deserialize)]
struct SignInQuery {
    next: Option<String>,
}

async fn sign_in_page(axum::extract::Query(q): axum::extract::Query<SignInQuery>) -> Response {
    pages::sign_in(
        local_path(q.next.as_deref().unwrap_or("/")),
        None,
        StatusCode::OK,
    )
}

#[derive(Debug, serde::Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/sign-in`: an API token (in the form, never in a URL) becomes a session.
/// Only from this site's own page (a sign-in forced from elsewhere would sign the
/// victim in as the attacker).
async fn sign_in(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignIn>,
) -> Response {
    let next = local_path(&form.next).to_string();
    if let Err(why) = crate::auth::same_origin(&headers) {
        return pages::sign_in(&next, Some(why.to_string()), StatusCode::FORBIDDEN);
    }
    let token = form.token.trim();
    let found = match ui
        .app
        .store
        .user_by_token_hash(&crate::auth::hash_token(token))
        .await
    {
        Ok(found) => found,
        Err(e) => return pages::error_page(e.into()),
    };
    let Some((user, token)) = found.filter(|_| !token.is_empty()) else {
        return pages::sign_in(
            &next,
            Some("That token is not valid (or has been revoked).".into()),
            StatusCode::UNAUTHORIZED,
        );
    };
    // Signing in again ends the session the browser had.
    if let Some(old) = crate::auth::session_secret(&headers)
        && let Err(e) = ui
            .app
            .store
            .revoke_session(&user.id, &crate::auth::hash_token(&old))
            .await
    {
        return pages::error_page(e.into());
    }
    let secret = crate::auth::new_token();
    let expires = ferry_store::now_ms() + crate::auth::SESSION_MAX_MS;
    if let Err(e) = ui
        .app
        .store
        .create_session(
            &user.id,
            &token.id,
            &crate::auth::hash_token(&secret),
            expires,
        )
        .await
    {
        return pages::error_page(e.into());
    }
    let cookie = ui.cookie(&secret, crate::auth::SESSION_MAX_MS / 1000);
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A form that carries only the session's CSRF token.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /ui/sign-out`: ends the session (in the store: the cookie is worth nothing
/// after, wherever a copy of it is).
async fn sign_out(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let Some(secret) = crate::auth::session_secret(&headers) else {
        return to_sign_in("/", None);
    };
    if let Err(e) = check_form(&headers, &secret, &form.csrf) {
        return pages::error_page(e);
    }
    let hash = crate::auth::hash_token(&secret);
    match ui
        .app
        .store
        .session_by_hash(&hash, crate::auth::SESSION_IDLE_MS)
        .await
    {
        Ok(Some((user, _))) => {
            if let Err(e) = ui.app.store.revoke_session(&user.id, &hash).await {
                return pages::error_page(e.into());
            }
        }
        Ok(None) => {}
        Err(e) => return pages::error_page(e.into()),
    }
    to_sign_in("/", Some(ui.cookie_name()))
}

/// A form's change is this site's own: from this origin, with the session's CSRF token.
pub(crate) fn check_form(headers: &HeaderMap, secret: &str, sent: &str) -> Result<(), ApiError> {
    let refuse = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            crate::error::ErrorCode::Forbidden,
            why.to_string(),
        )
    };
    crate::auth::same_origin(headers).map_err(refuse)?;
    let want = crate::auth::csrf_token(secret);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        sent.as_bytes(),
        want.as_bytes(),
    )) {
        return Err(refuse(
            "the form's CSRF token is missing or wrong: reload the page and try again",
        ));
    }
    Ok(())
}

/// `POST /ui/act`: a change asked for by a page's form. The form names the API
/// route (`method`, `path`), the page to go back to (`back`), the session's CSRF token
/// (`csrf`), and the JSON body's fields, each typed by its prefix: `s:name` a string,
/// `o:name` a string left out when empty, `i:name` an integer, `b:name` a boolean
/// (`true`, or a checkbox's `on`); `{name}` in the path is the field `p:name`'s value, and
/// `reveal` names a field of the answer to show (a new token's secret) instead of going
/// back. The change is then the API's: the request goes to
/// the API router with the session's cookie and CSRF header, so its route, its roles,
/// its approval rules and its audit entry are the same as the CLI's.
async fn act(
    State(ui): State<Ui>,
    headers: HeaderMap,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let Some(secret) = crate::auth::session_secret(&headers) else {
        return to_sign_in("/", None);
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if let Err(e) = check_form(&headers, &secret, field("csrf")) {
        return pages::error_page(e);
    }
    let built = (|| -> Result<(Method, String, Option<serde_json::Value>), ApiError> {
        let method = match field("method") {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            other => return Err(ApiError::invalid(format!("a form may not {other:?}"))),
        };
        // `{name}` in the path: the value of the form's field `p:name`, as one path
        // segment; nothing else is put in a path.
        let mut path = field("path").to_string();
        for (key, value) in &fields {
            if let Some(name) = key.strip_prefix("p:") {
                path = path.replace(&format!("{{{name}}}"), &pages::seg(value));
            }
        }
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let decoded = percent_encoding::percent_decode_str(route).decode_utf8_lossy();
        let valid = route.starts_with("/api/v1/")
            && !route.contains(['{', '}', '#', '\\'])
            && !decoded.split('/').any(|seg| seg == ".." || seg == ".")
            && !path.chars().any(char::is_control)
            && !query.contains('#');
        if !valid {
            return Err(ApiError::invalid("a form may only ask the API"));
        }
        let mut body = serde_json::Map::new();
        for (key, value) in &fields {
            let Some((kind, name)) = key.split_once(':') else {
                continue;
            };
            let value = match kind {
                "s" => serde_json::Value::String(value.clone()),
                "o" if value.trim().is_empty() => continue,
                "o" => serde_json::Value::String(value.clone()),
                "i" => value
                    .trim()
                    .parse::<i64>()
                    .map(Into::into)
                    .map_err(|_| ApiError::invalid(format!("`{name}` must be a number")))?,
                "b" => serde_json::Value::Bool(value == "true" || value == "on"),
                _ => continue,
            };
            body.insert(name.to_string(), value);
        }
        let body = (method != Method::DELETE || !body.is_empty())
            .then_some(serde_json::Value::Object(body));
        Ok((method, path, body))
    })();
    let (method, path, body) = match built {
        Ok(b) => b,
        Err(e) => return pages::error_page(e),
    };
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(&path)
        .header(
            header::COOKIE,
            format!("{}={secret}", crate::auth::SESSION_COOKIE),
        )
        .header(crate::auth::CSRF_HEADER, crate::auth::csrf_token(&secret));
    // The browser's own word on where the form came from, checked again by the API.
    for name in ["sec-fetch-site", "origin", "host"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let req = match body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_string())),
        None => req.body(axum::body::Body::empty()),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => return pages::error_page(ApiError::invalid(e.to_string())),
    };
    let resp = match tower::ServiceExt::oneshot(ui.api.clone(), req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    if status.is_success() {
        let back = local_path(field("back"));
        // A new token's secret is in the answer only: shown once, not lost to the
        // redirect.
        let reveal = field("reveal");
        if !reveal.is_empty()
            && let Some(secret) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get(reveal).and_then(|s| s.as_str()).map(str::to_string))
        {
            return pages::revealed(secret, back);
        }
        return Redirect::to(back).into_response();
    }
    let message = serde_json::from_slice::<crate::error::ErrorBody>(&body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    pages::error_page(ApiError::new(
        status,
        crate::error::ErrorCode::Unknown,
        message,
    ))
}
