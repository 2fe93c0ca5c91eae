//! API errors: an HTTP status, a stable code and a message, as JSON. Every error the
//! API answers has this shape, including the framework's own rejections (a body too
//! large, a query that does not parse, a method a route does not have), which
//! [`json_errors`] rewrites.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// What went wrong, for programs: stable words, listed in `docs/server.md` and in the
/// OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token, a wrong one, or a webhook delivery without a valid signature (401).
    Unauthorized,
    /// The caller's role (or an approval rule) does not allow it (403).
    Forbidden,
    /// No such route, repository, run, release, deployment, … (404).
    NotFound,
    /// A value in the request is not acceptable (422).
    Invalid,
    /// The body is not the JSON the route takes (400, 415 or 422).
    InvalidBody,
    /// The request line or query does not parse (400).
    BadRequest,
    /// The body is larger than the route accepts (413).
    TooLarge,
    /// The route has no such method (405).
    MethodNotAllowed,
    /// A webhook body is not what the forge sends (400).
    BadPayload,
    /// It exists already, or someone else holds it (409).
    Conflict,
    /// The request does not fit the deployment's or release's state (409).
    InvalidState,
    /// The commit's pipeline does not run for this event (409).
    NotTriggered,
    /// The run has finished already (409).
    Finished,
    /// The run has not finished yet (409).
    NotFinished,
    /// A re-run of failed jobs when none failed (409).
    NothingFailed,
    /// The run executes on another server (409).
    NotHere,
    /// The repository could not be fetched (502).
    FetchFailed,
    /// The repository's mirror could not be read; try again (503).
    GitFailed,
    /// Too many live streams (of the run, or in all); try again later (503).
    Busy,
    /// Something went wrong inside Ferry; the server's log says what (500).
    Internal,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code of a framework rejection with this status.
    fn of_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
                Self::InvalidBody
            }
            StatusCode::CONFLICT => Self::Conflict,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid token is required: send `Authorization: Bearer <token>`",
        )
    }
    pub fn forbidden(needed: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this needs the {needed} role"),
        )
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Invalid,
            message,
        )
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the server log",
        )
    }
}

impl From<ferry_store::Error> for ApiError {
    fn from(e: ferry_store::Error) -> Self {
        match e {
            ferry_store::Error::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            ferry_store::Error::Conflict(what) => {
                ApiError::conflict(ErrorCode::Conflict, format!("{what} already exists"))
            }
            e => ApiError::internal(e),
        }
    }
}

/// Every error's body, as clients read it: a stable code for programs and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Rewrites an error the framework answered as text (a rejected body, query or method)
/// as an [`ErrorBody`], so that every error of the API has one shape.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, ErrorCode::of_status(status), message).into_response()
}
