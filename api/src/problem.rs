//! RFC 9457 problem documents: what every error of the CA's and the ledger node's APIs looks
//! like on the wire, read by clients and (feature `server`) rendered by both servers.
//!
//! Every `type` is `urn:bsn:problem:<slug>`; the slugs are part of the API and never change.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:bsn:problem:";

/// The media type of a problem document.
pub const MEDIA_TYPE: &str = "application/problem+json";

/// A problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:bsn:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type (the same for every occurrence).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, and what to do about it.
    #[serde(default)]
    pub detail: String,
    /// Members a problem type adds (the ledger node's `index` of a refused transaction, the
    /// `results` of a partly committed batch).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of type `urn:bsn:problem:<slug>`.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_string(),
            status,
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.to_string(), value);
        self
    }

    /// The stable slug: the part of `type` after `urn:bsn:problem:` (the whole `type` if it is
    /// not one of ours).
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix(TYPE_PREFIX).unwrap_or(&self.kind)
    }
}

#[cfg(feature = "server")]
mod render {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    use super::{MEDIA_TYPE, Problem};

    impl Problem {
        /// The HTTP response: the document as `application/problem+json`, with `Retry-After`
        /// (seconds, at least 1) when given, and `Retry-After: 1` on every 503 without one.
        pub fn into_response_with_retry(self, retry_after: Option<u64>) -> Response {
            let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::to_vec(&self).unwrap_or_default();
            let mut resp = (status, body).into_response();
            let headers = resp.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
            let retry = retry_after.or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
            if let Some(secs) = retry
                && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
            {
                headers.insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            self.into_response_with_retry(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_extensions() {
        let p = Problem::new(409, "not-all-committed", "Not every transaction committed", "2 of 3")
            .with("index", Value::from(1));
        let text = serde_json::to_string(&p).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "urn:bsn:problem:not-all-committed");
        assert_eq!(v["status"], 409);
        assert_eq!(v["index"], 1);
        let back: Problem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.slug(), "not-all-committed");
    }

    #[test]
    fn foreign_type_keeps_its_whole_type_as_slug() {
        let p: Problem = serde_json::from_str(r#"{"type":"about:blank","title":"x","status":400}"#).unwrap();
        assert_eq!(p.slug(), "about:blank");
        assert_eq!(p.detail, "");
    }
}
