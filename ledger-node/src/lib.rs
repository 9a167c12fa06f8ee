//! The BSN city node.
//!
//! Features:
//! - `ledger-node init`: enrolls the node with the CA (a node identity, serverAuth+clientAuth) and
//!   pins the CA's trust bundle and membership key; `ledger-node serve` runs it.
//! - [`directory`]: follows the CA's change feed over mTLS: membership statements of the
//!   subchains this node hosts (verified with the pinned key) and every revocation; fails closed
//!   for writes when the CA has been silent longer than a bound.
//! - [`server`]: the mTLS gateway (rustls + ring): client certificates must chain to the bundle,
//!   follow the BSN profile, be valid and unrevoked; no session resumption; connections whose
//!   certificate is revoked are cut within a second. Connections are bounded in count (in all,
//!   per address, with capacity reserved for node identities) and time by `bsn_transport`.
//! - [`api`]: per-request authorisation by the subchain's membership (reader: queries and
//!   streams; writer: submit; admin: membership), submit-and-wait, state, chain info, blocks,
//!   transactions with inclusion proofs, a resumable block stream. A body is read only after the
//!   caller is authorised, within a per-route limit and a node-wide budget; block streams and
//!   concurrent submissions are capped per identity; `/metrics` is for node identities.
//! - [`subchain`]: leader-side validation (creator certificate, signature, role, new id) and the
//!   block cutter; [`chain`]: the deterministic block rules; [`raft`]: one openraft group per
//!   subchain behind the [`raft::Orderer`] trait; [`store`]: one redb database per subchain.
//!
//! - [`peers`]: node-to-node mTLS: a subchain hosted on several nodes runs one Raft group across
//!   them; submissions on a follower are forwarded to the leader; a node far behind installs a
//!   snapshot by fetching the missing blocks; the leader follows the CA's host list one node at
//!   a time.
//!
//! - Hibernation ([`subchain::Subchains`]): a subchain nobody uses for a while closes (no
//!   file, task or timer) and wakes on its first request, peer message, newer statement, or (on
//!   a city node) an orderer's [`tips`] feed saying it has newer blocks.
//! - [`warn_once`]: a repeated warning is logged at most once a minute per key.
//! - [`credential`]: the node's certificate, renewed over mTLS (same key) when a third of its
//!   lifetime is left and swapped into every TLS configuration in place.
//!
//! Non-features (for now): no chaincode: transactions are put/delete operations on a key-value
//! state; peer addresses come from the CA's signed node directory (`[peers]` in `node.toml`
//! overrides them), never discovered otherwise.
//!
//! It depends on `identity` (and the `bsn` client library for talking to the CA), never on
//! `ca-server`.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod api;
pub mod chain;
pub mod clock;
pub mod credential;
pub mod directory;
pub mod group;
pub mod metrics;
pub mod peers;
pub mod quota;
pub mod raft;
pub mod relay;
pub mod server;
pub mod store;
pub mod subchain;
pub mod tips;
pub mod usage;
pub mod warn_once;
