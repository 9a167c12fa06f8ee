//! The issuance log's read path for auditors: the C2SP tlog-tiles layout under `/log/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::problem::ApiError;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/log/checkpoint", get(checkpoint))
        .route("/log/vkey", get(vkey))
        .route("/log/tile/{*path}", get(tile))
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
    let data = crate::log::read_tile(&mut conn, s.db.backend, tile)
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
