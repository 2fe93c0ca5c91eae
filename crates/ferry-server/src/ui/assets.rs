//! The UI's assets (`assets/`), embedded with content-hashed names by `build.rs`.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name in `assets/`.
    pub name: &'static str,
    /// The name it is served under: the content's hash in it.
    pub hashed: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The URL of asset `name` (`app.css` → `/ui/assets/app.0123456789abcdef.css`).
pub(crate) fn href(name: &str) -> &'static str {
    static HREFS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    let hrefs = HREFS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| (a.name, format!("/ui/assets/{}", a.hashed)))
            .collect()
    });
    hrefs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| h.as_str())
        .unwrap_or("/ui/assets/missing")
}

/// `GET /ui/assets/{name}`: by its hashed name only, kept by browsers for a year.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.hashed == name) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
