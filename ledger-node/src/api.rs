//! The gateway API. Every route but health and metrics needs a member of the subchain (the
//! connection's client certificate names it): `reader` for queries and streams, `writer` to
//! submit, `admin` for the subchain's membership as signed by the CA. Errors are RFC 9457
//! problem documents with a stable `type` (`urn:bsn:problem:<slug>`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bsn_api::node::{
    BlockEntry, BlockPage, BlockView, BlocksQuery, Committed, HostedSubchain, HostedSubchains, RangeQuery, RawBlocks,
    StatePage, StateValue, SubchainInfo, SubmitRequest, Tips, TipsQuery, TxOp, TxProof, TxResult, TxView,
};
use bsn_api::problem::Problem;
use identity::ledger::{Block, BlockKind, SignedTx, check_entry, entry_hashes, prove_entry};
use identity::membership::{Role, SubchainId};
use serde_json::{Value, json};

use crate::chain::Outcome;
use crate::clock::now_ms;
use crate::directory::Directory;
use crate::quota::RateRefusal;
use crate::server::Peer;
use crate::subchain::{Refusal, Subchain, Subchains};

/// Most transactions in one submit request.
pub const MAX_BATCH: usize = 1000;
/// Largest submit body: a batch of up to [`MAX_BATCH`] transactions in at most 8 MiB (a
/// typical signed transaction is about 1 KiB; one of the largest, 128 KiB, fits many times).
pub const MAX_SUBMIT_BODY: usize = 8 * 1024 * 1024;
/// Largest Raft message (append-entries and snapshot requests carry whole blocks).
pub const MAX_RAFT_BODY: usize = 64 * 1024 * 1024;
/// Largest forwarded proposal (a follower forwards one checked submit batch).
pub const MAX_PROPOSE_BODY: usize = 16 * 1024 * 1024;
/// Largest vote request.
pub const MAX_VOTE_BODY: usize = 64 * 1024;
/// Largest body of any other route (they take none).
pub const MAX_OTHER_BODY: usize = 64 * 1024;
/// Request body bytes read at once on this node, across every request (in MiB): past it,
/// submissions are refused with 503 rather than buffered.
pub const BODY_BUDGET_MIB: u32 = 256;
/// Submissions one identity may have being read at once.
pub const SUBMITS_PER_IDENTITY: usize = 8;
/// Block streams one identity may hold open at once.
pub const STREAMS_PER_IDENTITY: usize = 8;
/// Block streams open at once on this node.
pub const MAX_STREAMS: usize = 2048;

/// Shared state of the routes.
pub struct AppState {
    /// What the CA said.
    pub directory: Arc<Directory>,
    /// The hosted subchains.
    pub subchains: Arc<Subchains>,
    /// Writes are refused when the CA has been silent longer than this (fail closed).
    pub stale_after_ms: i64,
    /// Whether any client may read `/metrics` (else node identities only).
    pub metrics_public: bool,
    /// The connection layer's counters.
    pub connections: Arc<bsn_transport::Stats>,
    /// Request body bytes being read, in MiB.
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Submissions being read, per identity.
    pub submits: Arc<bsn_transport::KeyedSlots<String>>,
    /// Open block streams, per identity.
    pub streams: Arc<bsn_transport::KeyedSlots<String>>,
    /// Each hosted subchain's rate under its plan.
    pub quotas: Arc<crate::quota::Quotas>,
    /// What each subchain used here (metering) and its bandwidth pacing.
    pub usage: Arc<crate::usage::Usage>,
}

impl AppState {
    /// The state for the given directory and subchains, with default bounds.
    pub fn new(
        directory: Arc<Directory>,
        subchains: Arc<Subchains>,
        stale_after_ms: i64,
        metrics_public: bool,
        connections: Arc<bsn_transport::Stats>,
        usage: Arc<crate::usage::Usage>,
    ) -> Self {
        Self {
            directory,
            subchains,
            stale_after_ms,
            metrics_public,
            connections,
            body_budget: Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_MIB as usize)),
            submits: bsn_transport::KeyedSlots::new(SUBMITS_PER_IDENTITY, 4096),
            streams: bsn_transport::KeyedSlots::new(STREAMS_PER_IDENTITY, MAX_STREAMS),
            quotas: Arc::new(crate::quota::Quotas::default()),
            usage,
        }
    }
}

/// The node's one error type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Not hosted here.
    #[error("subchain {0} is not hosted on this node")]
    NotHosted(String),
    /// Not a member.
    #[error("{0} is not a member of subchain {1}")]
    NotMember(String, String),
    /// A member without the role the call needs.
    #[error("{who} is a {has} of subchain {subchain}; this needs {needs}")]
    Role {
        /// Caller.
        who: String,
        /// Subchain.
        subchain: String,
        /// Its role.
        has: &'static str,
        /// The role needed.
        needs: &'static str,
    },
    /// A node-to-node call from a node that does not host the subchain.
    #[error("{0} is not a host of subchain {1}")]
    NotHost(String, String),
    /// The CA has been silent too long (for so many seconds; `None`: not once since this node
    /// started): membership may be out of date.
    #[error("{}", stale_text(*.0))]
    Stale(Option<i64>),
    /// A transaction was refused before ordering.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The body is larger than the route takes.
    #[error("the request body is larger than this call takes ({0} bytes at most)")]
    TooLarge(usize),
    /// Too many open streams or concurrent submissions for this identity.
    #[error("{0}")]
    TooMany(String),
    /// The subchain holds its plan's storage allowance: writes refused, reads served.
    #[error(
        "subchain {subchain} holds {used} bytes here, its plan's storage allowance is {allowance}; writes are refused until its publisher chooses a larger plan (reads are still served)"
    )]
    StorageQuota {
        /// The subchain.
        subchain: String,
        /// Bytes it takes here.
        used: u64,
        /// Its plan's allowance.
        allowance: u64,
    },
    /// The subchain is over its plan's transaction rate: retry after so many seconds.
    #[error("subchain {subchain} is over its plan's rate of {rate} transactions per second; retry in {secs} s")]
    RateQuota {
        /// The subchain.
        subchain: String,
        /// The plan's rate.
        rate: u64,
        /// Seconds until the submission would pass.
        secs: u64,
    },
    /// This node's request-body budget is in use; retry shortly.
    #[error("this node is reading too many request bodies; retry shortly")]
    Busy,
    /// Only operators (node identities) may do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Ordered, but not every transaction committed.
    #[error("not every transaction committed")]
    Partial(Vec<TxResult>),
    /// Ordering is unavailable right now.
    #[error("{0}")]
    Unavailable(String),
    /// A fault here.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            NotHosted(_) => (StatusCode::NOT_FOUND, "not-hosted", "Subchain not hosted here"),
            NotMember(..) => (StatusCode::FORBIDDEN, "not-a-member", "Not a member of this subchain"),
            Role { .. } => (StatusCode::FORBIDDEN, "role-required", "Your role does not allow this"),
            NotHost(..) => (StatusCode::FORBIDDEN, "not-a-host", "Not a host of this subchain"),
            Stale(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "membership-stale",
                "Membership may be out of date",
            ),
            Refused(r) => match r {
                Refusal::Malformed { .. } => (
                    StatusCode::BAD_REQUEST,
                    "malformed-transaction",
                    "Malformed transaction",
                ),
                Refusal::WrongSubchain { .. } => (
                    StatusCode::BAD_REQUEST,
                    "wrong-subchain",
                    "Transaction for another subchain",
                ),
                Refusal::Creator { .. } => (StatusCode::FORBIDDEN, "creator-refused", "Creator certificate refused"),
                Refusal::BadSignature { .. } => (StatusCode::BAD_REQUEST, "bad-signature", "Signature does not verify"),
                Refusal::NotWriter { .. } => (StatusCode::FORBIDDEN, "not-a-writer", "Creator may not write"),
                Refusal::Duplicate { .. } => (
                    StatusCode::CONFLICT,
                    "duplicate-transaction",
                    "Transaction already submitted",
                ),
            },
            Invalid(_) => (StatusCode::BAD_REQUEST, "invalid-request", "Invalid request"),
            TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many at once"),
            RateQuota { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-quota",
                "Over the plan's transaction rate",
            ),
            StorageQuota { .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage-quota",
                "At the plan's storage allowance",
            ),
            Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", "Node busy"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Partial(_) => (
                StatusCode::CONFLICT,
                "not-all-committed",
                "Not every transaction committed",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ordering-unavailable",
                "Ordering unavailable",
            ),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(m) => {
                tracing::error!(error = m, "internal error");
                "an internal error occurred; see the node's log".to_string()
            }
            e => e.to_string(),
        };
        let mut problem = Problem::new(status.as_u16(), slug, title, detail);
        if let ApiError::Refused(r) = &self {
            let index = match r {
                Refusal::Malformed { index, .. }
                | Refusal::WrongSubchain { index, .. }
                | Refusal::Creator { index, .. }
                | Refusal::BadSignature { index }
                | Refusal::NotWriter { index, .. }
                | Refusal::Duplicate { index, .. } => *index,
            };
            problem = problem.with("index", json!(index));
        }
        if let ApiError::Partial(results) = &self {
            problem = problem.with("results", json!(results));
        }
        let retry_after = match &self {
            ApiError::RateQuota { secs, subchain, .. } => {
                problem = problem.with("subchain", json!(subchain));
                Some(*secs)
            }
            ApiError::StorageQuota { subchain, .. } => {
                problem = problem.with("subchain", json!(subchain));
                None
            }
            _ => (status == StatusCode::TOO_MANY_REQUESTS).then_some(1),
        };
        problem.into_response_with_retry(retry_after)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Query string whose rejection is a problem document.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::Invalid(e.body_text()))
    }
}

/// Reads a JSON body of at most `limit` bytes, after the caller was authorised: refused at
/// once when its declared length is over the limit, read under this node's body budget (so
/// concurrent large bodies cannot take more memory than the budget), and cut off as soon as it
/// grows past the limit.
async fn read_json<T: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let mib = declared.unwrap_or(limit).div_ceil(1024 * 1024).max(1) as u32;
    let _budget = s.body_budget.try_acquire_many(mib).map_err(|_| ApiError::Busy)?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|c| c.is::<http_body_util::LengthLimitError>()) {
            ApiError::TooLarge(limit)
        } else {
            ApiError::Invalid(format!("the request body could not be read: {e}"))
        }
    })?;
    if !headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return Err(ApiError::Invalid(
            "the body must be JSON (Content-Type: application/json)".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let subchain = Router::new()
        .route("/api/v1/subchains", get(list))
        .route("/api/v1/subchains/{id}", get(info))
        .route("/api/v1/subchains/{id}/membership", get(membership))
        .route("/api/v1/subchains/{id}/transactions", post(submit))
        .route("/api/v1/subchains/{id}/transactions/{tx}", get(transaction))
        .route("/api/v1/subchains/{id}/state", get(state_range))
        .route("/api/v1/subchains/{id}/state/{*key}", get(state_get))
        .route("/api/v1/subchains/{id}/blocks", get(blocks_page))
        .route("/api/v1/subchains/{id}/blocks/stream", get(blocks_stream))
        .route("/api/v1/subchains/{id}/blocks/{height}", get(block_by_height))
        .route("/api/v1/subchains/{id}/blocks/by-hash/{hash}", get(block_by_hash))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), meter));
    let raft = Router::new()
        .route("/raft/v1/{id}/append", post(raft_append))
        .route("/raft/v1/{id}/vote", post(raft_vote))
        .route("/raft/v1/{id}/snapshot", post(raft_snapshot))
        .route("/raft/v1/{id}/propose", post(raft_propose))
        .route("/raft/v1/{id}/blocks", get(raft_blocks))
        .route("/raft/v1/tips", get(raft_tips));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(raft)
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(subchain)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::Invalid("this route does not take that method".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OTHER_BODY))
        .with_state(state)
}

/// Counts the bytes of every successful response about a subchain as served for it, and paces
/// them to its plan's bandwidth (frames wait; nothing is dropped).
async fn meter(State(s): State<Arc<AppState>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let subchain = req
        .uri()
        .path()
        .strip_prefix("/api/v1/subchains/")
        .and_then(|rest| rest.split('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    let resp = next.run(req).await;
    let Some(id) = subchain.filter(|_| resp.status().is_success()) else {
        return resp;
    };
    let bandwidth = s.directory.plan(&id).map(|p| p.bandwidth);
    let usage = s.usage.clone();
    let (parts, body) = resp.into_parts();
    let counted = futures_util::StreamExt::then(body.into_data_stream(), move |chunk| {
        let (usage, id) = (usage.clone(), id.clone());
        async move {
            if let Ok(bytes) = &chunk {
                let n = bytes.len() as u64;
                if let Some(bandwidth) = bandwidth {
                    usage.pace(&id, bandwidth, n).await;
                }
                usage.served(&id, n);
            }
            chunk
        }
    });
    Response::from_parts(parts, axum::body::Body::from_stream(counted))
}

/// This API's OpenAPI document (its body schemas come from `bsn_api::node`; see
/// `bsn_api::contract`).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Prometheus text: for node identities (operators) unless `metrics_access = "public"`.
async fn metrics(State(s): State<Arc<AppState>>, Extension(peer): Extension<Peer>) -> Result<String, ApiError> {
    if !s.metrics_public && !peer.kind.is_network_node() {
        return Err(ApiError::Forbidden(
            "metrics are for operators (node identities) on this node".into(),
        ));
    }
    Ok(crate::metrics::render(&s.connections))
}

/// Ready means the node would accept a write now: it has caught up with the CA's change feed
/// and has heard from the CA within `stale_after_secs` (otherwise `submit` refuses writes, and a
/// load balancer should send writers elsewhere). Reads go on either way.
async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if !s.directory.synced() {
        return ApiError::Unavailable("not yet caught up with the CA's change feed".into()).into_response();
    }
    let silent = s.directory.silent_for_ms();
    if silent > s.stale_after_ms {
        return ApiError::Stale(s.directory.heard().then_some(silent / 1000)).into_response();
    }
    (StatusCode::OK, "ready").into_response()
}

/// Checks the caller's role in a subchain this node takes part in.
fn check_role(s: &AppState, peer: &Peer, id: &str, needs: Role) -> Result<(), ApiError> {
    let Some(known) = s
        .directory
        .statement(id)
        .filter(|k| k.statement.involves(&s.directory.node))
    else {
        return Err(ApiError::NotHosted(id.to_string()));
    };
    let Some(role) = known.statement.role_of(&peer.id) else {
        return Err(ApiError::NotMember(peer.id.clone(), id.to_string()));
    };
    if !role.allows(needs) {
        return Err(ApiError::Role {
            who: peer.id.clone(),
            subchain: id.to_string(),
            has: role.name(),
            needs: needs.name(),
        });
    }
    Ok(())
}

/// Checks the caller's role in a hosted subchain and returns the subchain, woken if it
/// hibernates (only after the caller is authorised).
async fn authorize(s: &AppState, peer: &Peer, id: &str, needs: Role) -> Result<Arc<Subchain>, ApiError> {
    check_role(s, peer, id, needs)?;
    s.subchains.acquire(id).await.map_err(ApiError::Unavailable)
}

async fn list(State(s): State<Arc<AppState>>, Extension(peer): Extension<Peer>) -> axum::Json<HostedSubchains> {
    let mut subchains = Vec::new();
    for k in s.directory.hosted() {
        if let Some(role) = k.statement.role_of(&peer.id) {
            let id = &k.statement.subchain;
            let height = s.subchains.height(id.as_str());
            subchains.push(HostedSubchain {
                id: id.clone(),
                role,
                height,
            });
        }
    }
    axum::Json(HostedSubchains { subchains })
}

/// The subchain id in a path, parsed once (a malformed id cannot be hosted here).
fn subchain_id(id: &str) -> Result<SubchainId, ApiError> {
    SubchainId::parse(id).map_err(|_| ApiError::NotHosted(id.to_string()))
}

async fn info(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<axum::Json<SubchainInfo>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let tip = c.store.tip();
    let role = s.directory.role_of(&id, &peer.id);
    let leader_id = c.raft().and_then(|r| r.raft().metrics().borrow().current_leader);
    // Raft ids are hashes of names: named from the node directory (a leader the statement no
    // longer lists is still named).
    let name = |id: u64| s.directory.name_of(id).unwrap_or_else(|| format!("raft-{id:016x}"));
    let leader = leader_id.map(name);
    let mut voters: Vec<String> = c
        .raft()
        .map(|r| r.voter_ids().into_iter().map(name).collect())
        .unwrap_or_default();
    voters.sort();
    Ok(axum::Json(SubchainInfo {
        leader,
        id: subchain_id(&id)?,
        height: tip.last.map(|(h, _)| h),
        tip: tip.last.map(|(_, h)| hex::encode(h)),
        timestamp_ms: Some(tip.timestamp_ms),
        membership_revision: Some(tip.revision()),
        transactions: c.store.tx_count().map_err(internal)?,
        role,
        node: s.directory.node.clone(),
        plan: s.directory.plan(&id),
        stored_bytes: c.store.bytes_on_disk(),
        voters,
    }))
}

async fn membership(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_role(&s, &peer, &id, Role::Admin)?;
    let known = s
        .directory
        .statement(&id)
        .ok_or_else(|| ApiError::NotHosted(id.clone()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], known.envelope).into_response())
}

async fn submit(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::Json<Committed>, ApiError> {
    // Who is asking, for what, before a byte of the body is read.
    let c = authorize(&s, &peer, &id, Role::Writer).await?;
    let silent = s.directory.silent_for_ms();
    if silent > s.stale_after_ms {
        return Err(ApiError::Stale(s.directory.heard().then_some(silent / 1000)));
    }
    let _slot = s.submits.try_take(&peer.id).ok_or_else(|| {
        ApiError::TooMany(format!(
            "{} has {SUBMITS_PER_IDENTITY} submissions in progress already",
            peer.id
        ))
    })?;
    let req: SubmitRequest = read_json(&s, &headers, body, MAX_SUBMIT_BODY).await?;
    if req.transactions.is_empty() || req.transactions.len() > MAX_BATCH {
        return Err(ApiError::Invalid(format!("send 1 to {MAX_BATCH} transactions")));
    }
    // The plan's storage allowance and rate, before any signature is checked (the work a flood
    // would cost).
    let plan = s.directory.plan(&id);
    if let Some(p) = &plan {
        let used = c.store.bytes_on_disk();
        if used >= p.storage {
            s.usage.refused(&id);
            return Err(ApiError::StorageQuota {
                subchain: id.clone(),
                used,
                allowance: p.storage,
            });
        }
    }
    match s.quotas.take(&id, plan.as_ref(), req.transactions.len() as u64) {
        Ok(()) => {}
        Err(RateRefusal::Wait { secs, rate }) => {
            s.usage.refused(&id);
            return Err(ApiError::RateQuota {
                subchain: id.clone(),
                rate,
                secs,
            });
        }
        Err(RateRefusal::TooBig { burst }) => {
            s.usage.refused(&id);
            return Err(ApiError::Invalid(format!(
                "subchain {id}'s plan lets at most {burst} transactions through at once; send smaller batches"
            )));
        }
    }
    let mut raw = Vec::with_capacity(req.transactions.len());
    for (index, t) in req.transactions.iter().enumerate() {
        raw.push(B64.decode(t).map_err(|_| {
            ApiError::Refused(Refusal::Malformed {
                index,
                reason: "not base64".into(),
            })
        })?);
    }
    let sizes: Vec<u64> = raw.iter().map(|t| t.len() as u64).collect();
    let txs = s.subchains.validate(&c, raw, now_ms() / 1000).await?;
    let ids: Vec<String> = txs.iter().map(|t| hex::encode(t.id)).collect();
    let outcomes = c.order(txs).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let (count, bytes) = outcomes
        .iter()
        .zip(&sizes)
        .filter(|(o, _)| matches!(o, Outcome::Committed { .. }))
        .fold((0, 0), |(n, b), (_, size)| (n + 1, b + size));
    if count > 0 {
        s.usage.committed(&id, count, bytes);
    }
    let mut all = true;
    let results: Vec<TxResult> = ids
        .into_iter()
        .zip(&outcomes)
        .map(|(id, o)| match o {
            Outcome::Committed { height, index } => TxResult {
                id,
                height: Some(*height),
                index: Some(*index),
                refused: None,
            },
            other => {
                all = false;
                TxResult {
                    id,
                    height: None,
                    index: None,
                    refused: Some(format!("{other:?}")),
                }
            }
        })
        .collect();
    if !all {
        return Err(ApiError::Partial(results));
    }
    Ok(axum::Json(Committed { results }))
}

fn parse_hash(s: &str, what: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ApiError::Invalid(format!("{what} must be 64 hex digits")))
}

/// A committed transaction, decoded (it was checked before ordering, so it parses).
fn tx_view(bytes: &[u8]) -> Result<TxView, ApiError> {
    let tx = SignedTx::parse(bytes.to_vec()).map_err(internal)?;
    let creator = identity::profile::check_leaf(&tx.body.creator_cert)
        .map(|l| l.spiffe_id.id.as_str().to_string())
        .unwrap_or_default();
    let ops = tx
        .body
        .ops
        .iter()
        .map(|op| match op {
            identity::ledger::Op::Put { key, value } => TxOp::Put {
                put: key.clone(),
                value: B64.encode(value),
            },
            identity::ledger::Op::Delete { key } => TxOp::Delete { delete: key.clone() },
        })
        .collect();
    Ok(TxView {
        id: hex::encode(tx.id),
        creator,
        ops,
        signed: B64.encode(bytes),
    })
}

fn block_view(bytes: &[u8], full: bool) -> Result<BlockView, ApiError> {
    let b = Block::decode(bytes).map_err(internal)?;
    let h = &b.header;
    let entries = if full {
        let entries = match h.kind {
            BlockKind::Transactions => b
                .entries
                .iter()
                .map(|e| tx_view(e).map(BlockEntry::Transaction))
                .collect::<Result<Vec<_>, _>>()?,
            BlockKind::Config => b
                .entries
                .iter()
                .map(|e| BlockEntry::Config(serde_json::from_slice(e).unwrap_or(Value::Null)))
                .collect(),
        };
        Some(entries)
    } else {
        None
    };
    Ok(BlockView {
        height: h.height,
        hash: hex::encode(h.hash()),
        previous: hex::encode(h.previous),
        entries_root: hex::encode(h.entries_root),
        kind: match h.kind {
            BlockKind::Config => bsn_api::node::BlockKind::Config,
            BlockKind::Transactions => bsn_api::node::BlockKind::Transactions,
        },
        membership_revision: h.membership_revision,
        timestamp_ms: h.timestamp_ms,
        entry_count: h.entry_count,
        encoded: B64.encode(bytes),
        entries,
    })
}

async fn transaction(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((id, tx)): Path<(String, String)>,
) -> Result<axum::Json<TxProof>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let txid = parse_hash(&tx, "a transaction id")?;
    let (height, index) = c
        .store
        .tx_position(&txid)
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no transaction {tx} on subchain {id}")))?;
    let bytes = c
        .store
        .block(height)
        .map_err(internal)?
        .ok_or_else(|| internal("indexed block missing"))?;
    let block = Block::decode(&bytes).map_err(internal)?;
    let hashes = entry_hashes(&block.entries);
    let proof = prove_entry(&hashes, index as usize).map_err(internal)?;
    debug_assert!(check_entry(
        &proof,
        hashes.len() as u64,
        block.header.entries_root,
        index as u64,
        &hashes[index as usize]
    ));
    Ok(axum::Json(TxProof {
        transaction: tx_view(&block.entries[index as usize])?,
        height,
        index,
        block_hash: hex::encode(block.header.hash()),
        header: B64.encode(block.header.encode()),
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

fn value_view(v: crate::store::StateValue) -> StateValue {
    StateValue {
        value: B64.encode(&v.value),
        text: String::from_utf8(v.value).ok(),
        key: v.key,
        height: v.height,
    }
}

async fn state_get(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((id, key)): Path<(String, String)>,
) -> Result<axum::Json<StateValue>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let v = c
        .store
        .get(&key)
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no key '{key}' in subchain {id}")))?;
    Ok(axum::Json(value_view(v)))
}

async fn state_range(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<axum::Json<StatePage>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid("limit must be from 1 to 1000".into()));
    }
    if !q.end.is_empty() && q.end < q.start {
        return Err(ApiError::Invalid("end must not be before start".into()));
    }
    let values = c.store.range(&q.start, &q.end, limit + 1).map_err(internal)?;
    let more = values.len() > limit;
    let items = values.into_iter().take(limit).map(value_view).collect();
    Ok(axum::Json(StatePage { items, more }))
}

async fn block_by_height(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((id, height)): Path<(String, String)>,
) -> Result<axum::Json<BlockView>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let h: u64 = height
        .parse()
        .map_err(|_| ApiError::Invalid("a block height is a non-negative integer".into()))?;
    let bytes = c
        .store
        .block(h)
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no block {h} on subchain {id}")))?;
    Ok(axum::Json(block_view(&bytes, true)?))
}

async fn block_by_hash(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path((id, hash)): Path<(String, String)>,
) -> Result<axum::Json<BlockView>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let hash = parse_hash(&hash, "a block hash")?;
    let h = c
        .store
        .height_of(&hash)
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no block with that hash on subchain {id}")))?;
    let bytes = c
        .store
        .block(h)
        .map_err(internal)?
        .ok_or_else(|| internal("indexed block missing"))?;
    Ok(axum::Json(block_view(&bytes, true)?))
}

async fn blocks_page(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(q): Query<BlocksQuery>,
) -> Result<axum::Json<BlockPage>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid("limit must be from 1 to 1000".into()));
    }
    let blocks = c.store.blocks_from(q.from, limit).map_err(internal)?;
    let blocks = blocks
        .iter()
        .map(|b| block_view(b, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(BlockPage { blocks }))
}

async fn blocks_stream(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(q): Query<BlocksQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let c = authorize(&s, &peer, &id, Role::Reader).await?;
    // Resume after the last block a reconnecting client saw (Last-Event-ID), else from `from`.
    let mut next = match headers.get("last-event-id") {
        None => q.from,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|h| h.checked_add(1))
            .ok_or_else(|| ApiError::Invalid("Last-Event-ID must be a block height the stream sent".into()))?,
    };
    let slot = s.streams.try_take(&peer.id).ok_or_else(|| {
        ApiError::TooMany(format!(
            "{} has {STREAMS_PER_IDENTITY} block streams open already; close one first",
            peer.id
        ))
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    let state = s.clone();
    let peer_id = peer.id.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let mut applied = c.applied.clone();
        loop {
            // A member removed (or demoted below reader) stops receiving blocks.
            if state.directory.role_of(&c.id, &peer_id).is_none() {
                return;
            }
            let blocks = match c.store.blocks_from(next, 64) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "block stream read failed");
                    return;
                }
            };
            let n = blocks.len();
            for b in blocks {
                let Ok(v) = block_view(&b, true) else { return };
                let Ok(data) = serde_json::to_string(&v) else { return };
                let ev = Event::default().event("block").id(next.to_string()).data(data);
                if tx.send(ev).await.is_err() {
                    return;
                }
                next += 1;
            }
            if n < 64 {
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                    _ = tx.closed() => return,
                }
            }
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Node-to-node calls: only from a node or orderer the statement in force lists (and only for a
/// subchain this node takes part in too).
fn check_peer(s: &AppState, peer: &Peer, id: &str) -> Result<(), ApiError> {
    let known = s
        .directory
        .statement(id)
        .filter(|k| k.statement.involves(&s.directory.node))
        .ok_or_else(|| ApiError::NotHosted(id.to_string()))?;
    if !peer.kind.is_network_node() || !known.statement.involves(&peer.id) {
        return Err(ApiError::NotHost(peer.id.clone(), id.to_string()));
    }
    Ok(())
}

/// [`check_peer`], then the subchain, woken if it hibernates (a Raft message or a block fetch
/// from a peer of its group wakes it).
async fn authorize_peer(s: &AppState, peer: &Peer, id: &str) -> Result<Arc<Subchain>, ApiError> {
    check_peer(s, peer, id)?;
    s.subchains.wake(id).await.map_err(ApiError::Unavailable)
}

/// Raft messages: only between the subchain's voters (its orderers, or its city nodes when it
/// names none).
async fn authorize_voter(s: &AppState, peer: &Peer, id: &str) -> Result<Arc<Subchain>, ApiError> {
    check_peer(s, peer, id)?;
    let voter = s.directory.statement(id).is_some_and(|k| k.statement.orders(&peer.id));
    if !voter
        || !s
            .directory
            .statement(id)
            .is_some_and(|k| k.statement.orders(&s.directory.node))
    {
        return Err(ApiError::NotHost(peer.id.clone(), id.to_string()));
    }
    let c = s.subchains.wake(id).await.map_err(ApiError::Unavailable)?;
    if c.raft().is_none() {
        return Err(ApiError::NotHost(peer.id.clone(), id.to_string()));
    }
    Ok(c)
}

fn raft_of(c: &Subchain) -> &openraft::Raft<crate::group::TypeConfig> {
    c.raft()
        .expect("authorize_voter checked that this node is a voter")
        .raft()
}

type RaftResult<T, E = openraft::error::RaftError<u64>> = axum::Json<Result<T, E>>;

async fn raft_append(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<RaftResult<openraft::raft::AppendEntriesResponse<u64>>, ApiError> {
    let c = authorize_voter(&s, &peer, &id).await?;
    let rpc: openraft::raft::AppendEntriesRequest<crate::group::TypeConfig> =
        read_json(&s, &headers, body, MAX_RAFT_BODY).await?;
    c.heard_from_leader();
    Ok(axum::Json(raft_of(&c).append_entries(rpc).await))
}

async fn raft_vote(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<RaftResult<openraft::raft::VoteResponse<u64>>, ApiError> {
    let c = authorize_voter(&s, &peer, &id).await?;
    let rpc: openraft::raft::VoteRequest<u64> = read_json(&s, &headers, body, MAX_VOTE_BODY).await?;
    let answer = raft_of(&c).vote(rpc.clone()).await;
    if let Ok(v) = &answer
        && !v.vote_granted
    {
        c.refused_vote(&rpc, v);
    }
    Ok(axum::Json(answer))
}

async fn raft_snapshot(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<
    RaftResult<
        openraft::raft::InstallSnapshotResponse<u64>,
        openraft::error::RaftError<u64, openraft::error::InstallSnapshotError>,
    >,
    ApiError,
> {
    let c = authorize_voter(&s, &peer, &id).await?;
    let rpc: openraft::raft::InstallSnapshotRequest<crate::group::TypeConfig> =
        read_json(&s, &headers, body, MAX_RAFT_BODY).await?;
    Ok(axum::Json(raft_of(&c).install_snapshot(rpc).await))
}

async fn raft_propose(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::Json<crate::chain::Applied>, ApiError> {
    let c = authorize_peer(&s, &peer, &id).await?;
    let p: crate::chain::Proposal = read_json(&s, &headers, body, MAX_PROPOSE_BODY).await?;
    // A write forwarded here: the group's timers run until it is answered (a follower whose
    // leader died elects one meanwhile).
    let _writing = c.writing();
    let voter = s.directory.statement(&id).is_some_and(|k| k.statement.orders(&peer.id));
    match c.raft() {
        // A voter forwarding to this node takes it as the leader: no second hop.
        Some(r) if voter => match r.raft().client_write(p).await {
            Ok(r) => Ok(axum::Json(crate::chain::Applied {
                leader: Some(s.directory.node.clone()),
                ..r.data
            })),
            Err(e) => Err(ApiError::Unavailable(format!("not ordered here: {e}"))),
        },
        // A city node asks any orderer: it forwards to the leader and answers once applied.
        Some(r) => crate::raft::Orderer::propose(r, p)
            .await
            .map(axum::Json)
            .map_err(|e| ApiError::Unavailable(e.to_string())),
        None => Err(ApiError::NotHost(peer.id.clone(), id.clone())),
    }
}

async fn raft_blocks(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
    Query(q): Query<BlocksQuery>,
) -> Result<axum::Json<RawBlocks>, ApiError> {
    let c = authorize_peer(&s, &peer, &id).await?;
    // A fellow voter reads blocks only when it knows no leader (`RaftOrderer::wake_others`):
    // a leader it woke announces itself at once, instead of leaving it to an election timeout.
    if let Some(r) = c.raft()
        && r.is_leader()
        && s.directory.statement(&id).is_some_and(|k| k.statement.orders(&peer.id))
    {
        let _ = r.raft().trigger().heartbeat().await;
    }
    let limit = q.limit.unwrap_or(500).clamp(1, 1000);
    if let Some(wait) = q.wait_ms.filter(|w| *w > 0) {
        // Long-poll: a follower asking for the next block waits for it here.
        let mut applied = c.applied.clone();
        let _ = tokio::time::timeout(
            Duration::from_millis(wait.min(10_000)),
            applied.wait_for(|a| a.is_some_and(|h| h >= q.from)),
        )
        .await;
    }
    let blocks = c.store.blocks_from(q.from, limit).map_err(internal)?;
    Ok(axum::Json(RawBlocks {
        blocks: blocks.iter().map(|b| B64.encode(b)).collect(),
    }))
}

/// The heights this node's subchains reached (see [`crate::tips`]): for a network node, only
/// the subchains it hosts; long-polls up to `wait_ms` when nothing changed after `after`.
async fn raft_tips(
    State(s): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<TipsQuery>,
) -> Result<axum::Json<Tips>, ApiError> {
    if !peer.kind.is_network_node() {
        return Err(ApiError::Forbidden(format!(
            "{} is not a city node or an orderer: the tip feed is for nodes only",
            peer.id
        )));
    }
    let feed = s.subchains.tips();
    let mut changed = feed.subscribe();
    let hosts = |id: &str| {
        s.directory
            .statement(id)
            .is_some_and(|k| k.statement.hosted_by(&peer.id))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(10_000));
    loop {
        changed.borrow_and_update();
        let t = feed.since(q.epoch, q.after, hosts);
        if t.reset || !t.tips.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(axum::Json(t));
        }
        // Nothing for this caller yet: wait for the next change, or the deadline.
        tokio::select! {
            r = changed.changed() => if r.is_err() { return Ok(axum::Json(t)) },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// What a node that refuses writes for want of news from the CA says.
fn stale_text(silent_secs: Option<i64>) -> String {
    match silent_secs {
        Some(secs) => format!("this node has not heard from the CA for {secs} s; writes are refused until it does"),
        None => "this node has not heard from the CA since it started (its change feed is connecting); writes are \
                 refused until it does"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// A node that has not heard from the CA since it started says so, instead of counting the
    /// seconds since 1970 (seen in CI as "for 1796613705 s").
    #[test]
    fn a_node_that_never_heard_from_the_ca_says_so() {
        let never = super::ApiError::Stale(None).to_string();
        assert!(never.contains("since it started") && !never.contains(" s;"), "{never}");
        let late = super::ApiError::Stale(Some(42)).to_string();
        assert!(late.contains("for 42 s"), "{late}");
    }

    fn doc() -> Value {
        serde_json::from_str(super::OPENAPI).unwrap()
    }

    /// The OpenAPI document lists exactly the routes the router serves.
    #[test]
    fn openapi_covers_every_route() {
        let src = include_str!("api.rs");
        let router = &src[src.find("pub fn router").unwrap()..src.find("/// This API's OpenAPI").unwrap()];
        let routed = bsn_api::contract::routed_paths(router);
        assert_eq!(bsn_api::contract::documented_paths(&doc()), routed);
        assert_eq!(
            routed.len(),
            21,
            "17 API routes, 3 health routes and the document itself"
        );
    }

    /// The document lists exactly the problem types the node answers with.
    #[test]
    fn openapi_lists_every_problem_type() {
        let documented = bsn_api::contract::documented_problem_types(&doc());
        let src = include_str!("api.rs");
        let parts = &src[src.find("fn parts(&self)").unwrap()..src.find("impl IntoResponse for ApiError").unwrap()];
        let mut answered: Vec<String> = parts
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .map(str::to_string)
            .collect();
        answered.sort();
        answered.dedup();
        assert_eq!(documented, answered);
    }

    /// The body schemas are the `bsn_api::node` types' own, and every JSON body refers to one.
    /// `BSN_BLESS_OPENAPI=1` rewrites them after a type changed.
    #[test]
    fn openapi_schemas_are_the_types() {
        let schemas = bsn_api::contract::node();
        if std::env::var_os("BSN_BLESS_OPENAPI").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/openapi.json");
            bsn_api::contract::bless(&path, &schemas).unwrap();
            return;
        }
        let wrong = bsn_api::contract::check(&doc(), &schemas);
        assert!(
            wrong.is_empty(),
            "the document has drifted from the types (BSN_BLESS_OPENAPI=1 cargo test rewrites it):\n{}",
            wrong.join("\n")
        );
    }
}
