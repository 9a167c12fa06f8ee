//! The issuance log's read path for auditors: the C2SP tlog-tiles layout under `/log/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bsn_api::ca::{ConsistencyProof, InclusionProof, LogEntries, LogEntry};

use crate::app::AppState;
use crate::problem::{ApiError, Query};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/vkey", get(vkey))
        .route("/log/tile/{*path}", get(tile))
        .route("/api/v1/log/proof/inclusion", get(inclusion))
        .route("/api/v1/log/proof/consistency", get(consistency))
        .route("/api/v1/log/entries", get(entries))
}

fn b64(h: &tlog_tiles::Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

fn log_err(e: crate::log::LogError) -> ApiError {
    ApiError::Internal(e.into())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    /// The leaf's index, or:
    index: Option<u64>,
    /// the leaf's RFC 6962 hash, base64.
    leaf_hash: Option<String>,
    /// Tree size (default: the latest).
    size: Option<u64>,
}

/// An inclusion proof by leaf index or leaf hash, in the latest tree or one of a given size.
async fn inclusion(
    State(s): State<Arc<AppState>>,
    Query(q): Query<InclusionQuery>,
) -> Result<axum::Json<InclusionProof>, ApiError> {
    let mut conn = s.db.acquire().await?;
    let (latest, _) = crate::log::latest(&mut conn).await.map_err(log_err)?;
    let size = q.size.unwrap_or(latest);
    if size == 0 || size > latest {
        return Err(ApiError::InvalidField(format!(
            "size must be from 1 to the log's size {latest}"
        )));
    }
    let index = match (q.index, q.leaf_hash) {
        (Some(i), None) => i,
        (None, Some(h)) => {
            use base64::Engine;
            let hash = base64::engine::general_purpose::STANDARD
                .decode(&h)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| ApiError::InvalidField("leaf_hash must be a base64 SHA-256 hash".into()))?;
            crate::log::index_of(&mut conn, &hash)
                .await
                .map_err(log_err)?
                .ok_or_else(|| ApiError::NotFound("no leaf with that hash".into()))?
        }
        _ => return Err(ApiError::InvalidField("give exactly one of index and leaf_hash".into())),
    };
    if index >= size {
        return Err(ApiError::InvalidField(format!(
            "index {index} is not in a tree of size {size}"
        )));
    }
    let (proof, root) = crate::log::prove_inclusion(&mut conn, s.db.backend, &s.log_hashes, size, index)
        .await
        .map_err(log_err)?;
    Ok(axum::Json(InclusionProof {
        leaf_index: index,
        tree_size: size,
        root: b64(&root),
        inclusion_proof: proof.iter().map(b64).collect(),
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    first: u64,
    /// Default: the latest size.
    second: Option<u64>,
}

/// A consistency proof between two tree sizes.
async fn consistency(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<axum::Json<ConsistencyProof>, ApiError> {
    let mut conn = s.db.acquire().await?;
    let (latest, _) = crate::log::latest(&mut conn).await.map_err(log_err)?;
    let second = q.second.unwrap_or(latest);
    if q.first == 0 || q.first > second || second > latest {
        return Err(ApiError::InvalidField(format!(
            "need 1 <= first <= second <= {latest} (the log's size)"
        )));
    }
    let proof = crate::log::prove_consistency(&mut conn, s.db.backend, &s.log_hashes, q.first, second)
        .await
        .map_err(log_err)?;
    Ok(axum::Json(ConsistencyProof {
        first: q.first,
        second,
        consistency_proof: proof.iter().map(b64).collect(),
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    identity: Option<String>,
    serial: Option<String>,
    /// RFC 3339; entries at or after.
    since: Option<String>,
    /// RFC 3339; entries before.
    until: Option<String>,
    /// Entries with a larger index (cursor).
    after: Option<u64>,
    limit: Option<i64>,
}

/// Entries by holder, serial and time, in log order (each with its leaf, to verify).
async fn entries(
    State(s): State<Arc<AppState>>,
    Query(q): Query<EntriesQuery>,
) -> Result<axum::Json<LogEntries>, ApiError> {
    let time = |name: &str, v: Option<String>| {
        v.map(|t| {
            crate::app::parse_rfc3339(&t)
                .ok_or_else(|| ApiError::InvalidField(format!("{name} must be an RFC 3339 time")))
        })
        .transpose()
    };
    let (since, until) = (time("since", q.since)?, time("until", q.until)?);
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidField("limit must be from 1 to 1000".into()));
    }
    let serial = q
        .serial
        .map(|s| super::normalize_serial(&s).ok_or_else(|| ApiError::InvalidField("serial must be hex".into())))
        .transpose()?;
    let filter = crate::log::EntryFilter {
        identity: q.identity.as_deref(),
        serial: serial.as_deref(),
        since,
        until,
        after: q.after,
        limit,
    };
    let rows = crate::log::entries(&mut *s.db.acquire().await?, &filter)
        .await
        .map_err(log_err)?;
    use base64::Engine;
    let items: Vec<LogEntry> = rows
        .into_iter()
        .map(|r| {
            // A membership entry's subject is in its leaf, not in the indexed columns.
            let (subchain, revision) = match identity::logleaf::LogLeaf::decode(&r.leaf) {
                Ok(identity::logleaf::LogLeaf::Membership { subchain, revision, .. }) => {
                    (Some(subchain), Some(revision))
                }
                _ => (None, None),
            };
            LogEntry {
                index: r.index,
                kind: r.kind,
                serial: r.serial,
                identity: r.identity,
                at: crate::app::rfc3339(r.at),
                leaf: base64::engine::general_purpose::STANDARD.encode(&r.leaf),
                subchain,
                revision,
            }
        })
        .collect();
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.index))
        .flatten();
    Ok(axum::Json(LogEntries { items, next_after }))
}

/// The latest signed checkpoint (changes with every batch; not cacheable for long).
async fn checkpoint(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let (_, note) = crate::log::latest(&mut *s.db.acquire().await?)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        note,
    )
        .into_response())
}

/// The checkpoint verifier key (signed-note vkey).
async fn vkey(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", s.log.vkey()),
    )
        .into_response()
}

/// A hash tile or an entry bundle; immutable once served.
async fn tile(State(s): State<Arc<AppState>>, Path(path): Path<String>) -> Result<Response, ApiError> {
    let mut conn = s.db.acquire().await?;
    let (size, _) = crate::log::latest(&mut conn)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let tile = crate::log::parse_tile_path(&format!("tile/{path}"), size)
        .ok_or_else(|| ApiError::NotFound(format!("no tile 'tile/{path}' in a tree of size {size}")))?;
    let data = crate::log::read_tile(&mut conn, s.db.backend, &s.log_hashes, tile)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        data,
    )
        .into_response())
}
