//! The web portal's static files (`web/`), embedded at compile time, served with a strict
//! Content-Security-Policy (scripts, styles and connections from this origin only, no inline
//! code, no framing).
//!
//! Pages: `/` (home), `/register`, `/signin`, `/account` (my identity: enroll with a key made
//! in the browser, my certificates), `/subchains` (directory, joining, publishing, managing),
//! `/admin` (registrations, invitations, identities, revocation) and `/audit` (the issuance log,
//! verified in the browser).

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::problem::ApiError;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

macro_rules! embed {
    ($($path:literal => $media:expr),* $(,)?) => {
        &[$(($path, $media, include_bytes!(concat!("../../web/", $path)) as &[u8])),*]
    };
}

/// (path under `web/`, media type, bytes).
const FILES: &[(&str, &str, &[u8])] = embed![
    "index.html" => HTML,
    "audit.html" => HTML,
    "register.html" => HTML,
    "signin.html" => HTML,
    "account.html" => HTML,
    "subchains.html" => HTML,
    "admin.html" => HTML,
    "favicon.svg" => "image/svg+xml",
    "css/portal.css" => "text/css; charset=utf-8",
    "js/api.js" => JS,
    "js/ui.js" => JS,
    "js/usage.js" => JS,
    "js/tlog.js" => JS,
    "js/audit.js" => JS,
    "js/session.js" => JS,
    "js/keys.js" => JS,
    "js/nav.js" => JS,
    "js/register.js" => JS,
    "js/signin.js" => JS,
    "js/account.js" => JS,
    "js/subchains.js" => JS,
    "js/admin.js" => JS,
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The portal's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route("/audit", get(|| async { file("audit.html") }))
        .route("/register", get(|| async { file("register.html") }))
        .route("/signin", get(|| async { file("signin.html") }))
        .route("/account", get(|| async { file("account.html") }))
        .route("/subchains", get(|| async { file("subchains.html") }))
        .route("/admin", get(|| async { file("admin.html") }))
        .route("/favicon.ico", get(|| async { file("favicon.svg") }))
        .route("/static/{*path}", get(|Path(p): Path<String>| async move { file(&p) }))
}

fn file(path: &str) -> Response {
    let Some((_, media, bytes)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return ApiError::NotFound(format!("no portal file '{path}'")).into_response();
    };
    let mut resp = (StatusCode::OK, *bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    /// Every file in web/ (but the tests and README) is embedded, and every script or stylesheet
    /// a page refers to exists.
    #[test]
    fn every_portal_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut on_disk = Vec::new();
        for dir in ["", "css", "js"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().to_string();
                if e.file_type().unwrap().is_file() && name != "README.md" {
                    on_disk.push(if dir.is_empty() { name } else { format!("{dir}/{name}") });
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = super::FILES.iter().map(|(p, _, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for (_, _, bytes) in super::FILES {
            let text = String::from_utf8_lossy(bytes);
            for part in text.split("/static/").skip(1) {
                let path = part.split(['"', '\'']).next().unwrap();
                assert!(
                    super::FILES.iter().any(|(p, _, _)| *p == path),
                    "{path} is referred to but not embedded"
                );
            }
        }
    }
}
