//! The HTTP API: one router per feature, merged here. Handlers extract, call the core, map.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::app::AppState;
use crate::problem::problem;

mod bundle;
mod certificates;
mod enroll;
mod feed;
mod health;
mod identities;
mod intermediates;
mod keys;
mod log;
mod nodes;
mod plans;
mod portal;
mod roots;
mod subchains;
mod usage;

pub use feed::{MAX_STREAMS as MAX_FEED_STREAMS, STREAMS_PER_NODE as FEED_STREAMS_PER_NODE};

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The whole API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(health::router())
        .merge(bundle::router())
        .merge(enroll::router())
        .merge(identities::router())
        .merge(intermediates::router())
        .merge(roots::router())
        .merge(keys::router())
        .merge(certificates::router())
        .merge(log::router())
        .merge(subchains::router())
        .merge(nodes::router())
        .merge(plans::router())
        .merge(usage::router())
        .merge(feed::router())
        .merge(portal::router())
        .merge(crate::web::router())
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "not-found", "Not found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(read_whole_body))
        .layer(axum::middleware::map_response(hsts))
        .with_state(state)
}

/// The CA is served only over HTTPS: browsers are told to keep it that way (two years).
async fn hsts(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=63072000"),
    );
    resp
}

/// Reads the whole request body (up to [`MAX_BODY`]) before routing. Handlers often answer
/// without reading the body (a refused client certificate, a wrong content type); over HTTP/2
/// hyper then resets the unread stream, and clients such as curl may report that reset
/// ("stream error") instead of the problem document. Bodies here are small, so reading them
/// first costs one copy.
async fn read_whole_body(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) if std::error::Error::source(&e).is_some_and(|c| c.is::<std::io::Error>()) => {
            crate::problem::ApiError::InvalidRequest("the request body did not arrive in time".into()).into_response()
        }
        Err(_) => crate::problem::ApiError::PayloadTooLarge.into_response(),
    }
}

/// A PEM response with the given media type.
fn pem_response(media_type: &'static str, body: String) -> axum::response::Response {
    ([(axum::http::header::CONTENT_TYPE, media_type)], body).into_response()
}

/// Normalises a serial as people paste it (`0A:1B`, `0x0a1b`, `0A1B`) to lowercase hex
/// without leading zero bytes.
pub(crate) fn normalize_serial(s: &str) -> Option<String> {
    let s = s
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .replace(':', "")
        .to_ascii_lowercase();
    if s.is_empty() || s.len() > 42 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let s = s.trim_start_matches('0');
    if s.is_empty() {
        return None;
    }
    Some(if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    })
}

/// The subchain registry over this replica's store, keys and feed (shared by the handlers of
/// subchains and of the node directory, which moves subchains off a draining node).
fn registry(s: &crate::app::AppState) -> crate::registry::Registry<'_> {
    crate::registry::Registry {
        db: &s.db,
        signer: &s.membership,
        log: &s.log,
        feed: &s.feed_wakeup,
    }
}

/// The node directory over this replica's store, membership key and feed.
fn directory(s: &crate::app::AppState) -> crate::nodes::Directory<'_> {
    crate::nodes::Directory {
        db: &s.db,
        signer: &s.membership,
        feed: &s.feed_wakeup,
    }
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document lists exactly the routes the router serves.
    #[test]
    fn openapi_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::health::OPENAPI).unwrap();
        let files = [
            "health.rs",
            "bundle.rs",
            "enroll.rs",
            "identities.rs",
            "intermediates.rs",
            "roots.rs",
            "keys.rs",
            "certificates.rs",
            "log.rs",
            "subchains.rs",
            "feed.rs",
            "nodes.rs",
            "plans.rs",
            "usage.rs",
            "portal.rs",
        ];
        let src: String = files
            .iter()
            .map(|f| std::fs::read_to_string(format!("{}/src/api/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap())
            .collect();
        assert_eq!(
            bsn_api::contract::documented_paths(&doc),
            bsn_api::contract::routed_paths(&src)
        );
    }

    /// The body schemas are the `bsn_api::ca` types' own, and every JSON body refers to one.
    /// `BSN_BLESS_OPENAPI=1` rewrites them after a type changed.
    #[test]
    fn openapi_schemas_are_the_types() {
        let schemas = bsn_api::contract::ca();
        if std::env::var_os("BSN_BLESS_OPENAPI").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
            bsn_api::contract::bless(&path, &schemas).unwrap();
            return;
        }
        let doc: serde_json::Value = serde_json::from_str(super::health::OPENAPI).unwrap();
        let wrong = bsn_api::contract::check(&doc, &schemas);
        assert!(
            wrong.is_empty(),
            "the document has drifted from the types (BSN_BLESS_OPENAPI=1 cargo test rewrites it):\n{}",
            wrong.join("\n")
        );
    }

    /// The document lists exactly the problem types the CA answers with, and every operation
    /// declares that any other status is a problem document.
    #[test]
    fn openapi_lists_every_problem_type() {
        let doc: serde_json::Value = serde_json::from_str(super::health::OPENAPI).unwrap();
        let documented = bsn_api::contract::documented_problem_types(&doc);
        let mut answered: Vec<String> = Vec::new();
        for f in ["problem.rs", "api/mod.rs"] {
            let src = std::fs::read_to_string(format!("{}/src/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let src: String = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            // `(S::STATUS, "slug", "Title")` in `parts`, and `problem(StatusCode::..., "slug", ...)`.
            for (i, _) in src.match_indices("S::").chain(src.match_indices("StatusCode::")) {
                let rest = &src[i..];
                let Some(comma) = rest.find(',') else { continue };
                let after = rest[comma + 1..].trim_start();
                if let Some(lit) = after.strip_prefix('"')
                    && let Some(end) = lit.find('"')
                    && lit[..end].chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && rest[..comma]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    answered.push(lit[..end].to_string());
                }
            }
        }
        answered.sort();
        answered.dedup();
        assert_eq!(documented, answered);
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"].get("default").is_some(),
                    "{method} {path} does not declare its problem documents"
                );
            }
        }
    }

    #[test]
    fn serials_normalise() {
        use super::normalize_serial as n;
        assert_eq!(n("00A1:B2").as_deref(), Some("a1b2"));
        assert_eq!(n("0x0abc").as_deref(), Some("0abc"));
        assert_eq!(n("ABC").as_deref(), Some("0abc"));
        assert_eq!(n("00"), None);
        assert_eq!(n("xyz"), None);
        assert_eq!(n(""), None);
    }
}
