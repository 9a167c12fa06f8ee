//! The `bsn` command line's library: the auditor's verification of the CA's issuance log.
//!
//! Features: [`audit`] downloads the log's tiles, recomputes its root, checks the signed
//! checkpoint, every certificate and the log's invariants, and follows new checkpoints
//! (consistency with the last verified one). The CA and node client, keys, CSRs and credential
//! files are in `bsn-api`; the commands are in the binary.
//!
//! Non-features: no server code; nothing here writes to the CA.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod audit;
