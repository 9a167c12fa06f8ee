//! The BSN API contract and its Rust client, shared by the CA, the ledger node, the `bsn`
//! command line, the tests and the benchmarks.
//!
//! Features:
//! - [`problem`]: the RFC 9457 problem document both servers answer errors with, its stable
//!   `urn:bsn:problem:<slug>` types, and (feature `server`) its one axum rendering.
//! - [`client`]: an HTTPS client (rustls with the ring provider, HTTP/2, optional mTLS) of the
//!   CA and of ledger nodes that turns problem documents into [`client::ClientError`], and a
//!   server-sent event reader.
//! - [`files`]: key generation (P-256, P-384, Ed25519), PKCS#10 CSRs, and the one durable file
//!   write (write a temporary file, fsync it, rename it over the target, fsync the directory)
//!   used for credentials and every other file the system writes.
//! - [`ca`] and [`node`]: the request and response bodies of the CA's API and of a ledger
//!   node's gateway; [`contract`]: the OpenAPI schemas generated from them, and the check that
//!   each server's document carries them unchanged.
//! - [`tx`]: building and signing ledger transactions with a participant's credentials.
//! - [`gateway`]: a participant's client of a city node with every answer that can be checked
//!   checked (transaction proofs, blocks, the hash chain, a resuming block stream): the Rust
//!   SDK, the same surface as `sdk/python` and `sdk/js`, and what `bsn tx` and `bsn query` use.
//!
//! Non-features: no server logic (the servers own their rules), no key storage beyond PEM files
//! (no OS keychain; PKCS#11 is the CA's own business), no RSA key generation.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod ca;
pub mod client;
pub mod contract;
pub mod files;
pub mod gateway;
pub mod node;
pub mod problem;
pub mod tx;
