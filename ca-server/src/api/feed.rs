//! The change feed for ledger nodes: membership statements of the subchains a node hosts and
//! every revocation, in commit order, resumable from a cursor (the last `seq` seen).
//!
//! - `GET /api/v1/feed?cursor=N[&limit=]`: one page (JSON) and a signed heartbeat.
//! - `POST /api/v1/feed/ack` `{"cursor": N}`: the node has durably processed everything up to
//!   `N` (activating a new issuing intermediate waits for the nodes that report).
//! - `GET /api/v1/feed/stream?cursor=N`: server-sent events (`membership`, `revocation`), pushed
//!   as they commit, and a signed `heartbeat` every few seconds, so a node can tell "nothing
//!   changed" from "cut off".
//!
//! Only node identities may follow it; a cursor ahead of the feed is refused.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::{ApiError, Json, Query};
use bsn_api::ca::{FeedAck, FeedEvent, FeedPage};

use crate::registry::{feed_head, feed_page, record_ack};

/// Events per page or per push.
const PAGE: i64 = 500;
/// Feed streams one node identity may hold open at once.
pub const STREAMS_PER_NODE: usize = 4;
/// Feed streams one replica serves at once.
pub const MAX_STREAMS: usize = 4096;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/feed", get(page))
        .route("/api/v1/feed/stream", get(stream))
        .route("/api/v1/feed/ack", post(ack))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    #[serde(default)]
    cursor: String,
    limit: Option<i64>,
}

fn now_ms() -> i64 {
    (crate::app::now().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A cursor as a query gives it (empty: the start).
fn parse_cursor(cursor: &str) -> Result<i64, ApiError> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor
        .parse()
        .map_err(|_| ApiError::InvalidCursor("cursor must be a feed position (a non-negative integer)".into()))
}

/// The node calling, and its cursor (as parsed) checked against the feed's head; the caller is
/// checked first.
async fn node_and_cursor(
    s: &AppState,
    caller: &Caller,
    cursor: Result<i64, ApiError>,
) -> Result<(String, i64), ApiError> {
    if !caller.identity.kind.is_network_node() {
        return Err(ApiError::Forbidden(
            "only city nodes and orderers follow the change feed".into(),
        ));
    }
    let cursor = cursor?;
    if cursor < 0 {
        return Err(ApiError::InvalidCursor(
            "cursor must be a feed position (a non-negative integer)".into(),
        ));
    }
    let head = feed_head(&s.db).await?;
    if cursor > head {
        return Err(ApiError::InvalidCursor(format!(
            "cursor {cursor} is ahead of the feed (at {head}): it was not handed out by this CA; resume from your last seq"
        )));
    }
    Ok((caller.identity.id.clone(), cursor))
}

async fn page(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<FeedQuery>,
) -> Result<axum::Json<FeedPage>, ApiError> {
    let (node, cursor) = node_and_cursor(&s, &caller, parse_cursor(&q.cursor)).await?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=PAGE).contains(&limit) {
        return Err(ApiError::InvalidField(format!("limit must be from 1 to {PAGE}")));
    }
    let events = feed_page(&s.db, &node, cursor, limit).await?;
    let next = events.last().map_or(cursor, FeedEvent::seq);
    let more = events.len() as i64 == limit;
    Ok(axum::Json(FeedPage {
        events,
        cursor: next,
        more,
        heartbeat: s
            .membership
            .heartbeat(&node, next as u64, now_ms())
            .map_err(|e| ApiError::Internal(e.into()))?,
    }))
}

/// A node reports how far it has durably processed the feed.
async fn ack(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<FeedAck>,
) -> Result<StatusCode, ApiError> {
    let (node, cursor) = node_and_cursor(&s, &caller, Ok(body.cursor)).await?;
    record_ack(&s.db, &node, cursor, crate::app::now().unix_timestamp()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stream(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<FeedQuery>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (node, mut cursor) = node_and_cursor(&s, &caller, parse_cursor(&q.cursor)).await?;
    // One node identity cannot take every stream: a few each (reconnects overlap), and a bound
    // in all.
    let permit = match s.feed_streams.try_take(&node) {
        Some(p) => p,
        None if s.feed_streams.held(&node) >= STREAMS_PER_NODE => {
            return Err(ApiError::SlowDown("open feed streams", 1));
        }
        None => return Err(ApiError::Busy),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let mut changed = s.feed_wakeup.subscribe();
    let state = s.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let every = state.feed_heartbeat;
        let mut beat = tokio::time::interval(every);
        loop {
            // Everything after the cursor first, then wait for a change or the next heartbeat.
            loop {
                let events = match feed_page(&state.db, &node, cursor, PAGE).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, node, "feed read failed; closing the stream");
                        return;
                    }
                };
                let n = events.len() as i64;
                for e in events {
                    cursor = e.seq();
                    let kind = match e {
                        FeedEvent::Membership { .. } => "membership",
                        FeedEvent::Revocation { .. } => "revocation",
                        FeedEvent::Directory { .. } => "directory",
                        FeedEvent::Intermediate { .. } => "intermediate",
                        FeedEvent::Root { .. } => "root",
                        FeedEvent::Key { .. } => "key",
                    };
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    if tx
                        .send(Event::default().event(kind).id(cursor.to_string()).data(data))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if n < PAGE {
                    break;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = beat.tick() => {
                    // Without a signature there is no heartbeat: the node's staleness bound then
                    // fails its writes closed, as it should while the CA cannot sign.
                    let Ok(hb) = state.membership.heartbeat(&node, cursor as u64, now_ms()) else { continue };
                    let data = serde_json::to_string(&hb).unwrap_or_default();
                    if tx.send(Event::default().event("heartbeat").data(data)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
