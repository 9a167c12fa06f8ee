//! The BSN CA and identity service.
//!
//! Features:
//! - CA initialisation: root and issuing intermediate (ECDSA P-256, path length 0), keys sealed
//!   at rest with an argon2id-derived key and ChaCha20-Poly1305, the server's own certificate,
//!   a bootstrap administrator ([`init`]).
//! - Registration of participants and nodes by administrators and registrars with one-time,
//!   expiring, use-limited enrollment secrets stored as argon2id hashes ([`api`], [`secrets`]).
//! - Enrollment with a PKCS#10 CSR and a secret; renewal over mTLS (rekey allowed) ([`issuance`]).
//!   Every leaf follows the SPIFFE X509-SVID profile whatever the CSR asks for ([`pki`], [`csr`]).
//! - Revocation by the holder or an administrator with an RFC 5280 reason ([`revocation`]); the
//!   CRL is re-signed in the same transaction and served as DER and PEM, with the trust bundle in PEM and as a
//!   SPIFFE bundle. The root has its own CRL (signed with the root key at init and re-signed at
//!   start-up when due, or by `ca-server root crl`); both come in one PEM file for relying parties
//!   that check every CA in the chain; every certificate names its issuer's CRL (distribution
//!   point under the configured public URL).
//! - Backups while serving and restores into a new directory that refuse to fork a published
//!   log ([`backup`]).
//! - Group commit of issuances: concurrent requests share one durable transaction ([`commit`]).
//! - The issuance log ([`log`]): every issuance and revocation is a leaf of an RFC 6962 tree written
//!   in the same transaction, with Ed25519 C2SP checkpoints, receipts, C2SP tiles, proofs and
//!   entry search for auditors, and a start-up self-check.
//! - The subchain registry ([`registry`]): subchains, hosting nodes, members with roles, join
//!   requests and approval; every membership change is a revision with a statement signed by the
//!   CA's membership key (Ed25519) and a leaf in the issuance log; a change feed for ledger nodes
//!   (membership statements of the subchains a node hosts, and every revocation) as pages or
//!   server-sent events with signed heartbeats.
//! - SQLite by default, PostgreSQL for production; several replicas may share one PostgreSQL ([`db`]).
//! - Portal accounts ([`accounts`], rules in [`portal`]): self-registration approved by an administrator or an
//!   invitation code, argon2id passwords, session cookies (HttpOnly, Secure, SameSite=Strict)
//!   with CSRF tokens, and enrollment with a key
//!   made in the browser (proof of possession over a one-time challenge).
//! - The web portal's static pages, embedded, with a strict CSP ([`web`]); so far the audit
//!   page, which verifies checkpoints and inclusion proofs in the browser.
//! - Limits on what strangers can make it do ([`limits`]): sign-in keyed so failures from
//!   elsewhere never lock an owner out, registrations per address, failed enrollments per
//!   source; argon2id slots shared round-robin between sources ([`secrets`]).
//! - Rotation of the issuing intermediate ([`intermediates`]) and of the root through a
//!   cross-certificate ([`roots`]), and handover of the log's checkpoint key and of the
//!   membership key ([`handover`]), without an outage, each step an issuance-log event.
//! - Placement of subchains on city nodes by plan and declared capacity ([`placement`], a pure
//!   core; not yet wired to the registry, the API or the directory).
//! - Errors as RFC 9457 problem documents with stable types ([`problem`]).
//!
//! Non-features (today): no OCSP responder (CRLs only; rustls does not check OCSP for client
//! certificates), no certificateHold (every revocation is final), no ACME; every CA key may live
//! in a PKCS#11 token ([`hsm`]) and rotates inside it; a node's pinned bundle does not follow a root rotation (it trusts the new root through
//! the cross-certificate); no witness cosignatures on checkpoints yet; membership statements are full snapshots (no
//! deltas), so a change to a very large subchain ships its whole member list to its nodes.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod commit;
pub mod config;
pub mod csr;
pub mod db;
pub mod handover;
pub mod hsm;
pub mod init;
pub mod intermediates;
pub mod issuance;
pub mod keystore;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod nodes;
pub mod pki;
pub mod placement;
pub mod portal;
pub mod problem;
pub mod registry;
pub mod revocation;
pub mod root;
pub mod roots;
pub mod rotation;
pub mod secrets;
pub mod serve;
pub mod usage;
pub mod web;
