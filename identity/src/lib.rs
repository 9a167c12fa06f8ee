//! The shared identity library of the BSN network.
//!
//! Features:
//! - [`names`]: SPIFFE-style identity names (`spiffe://<trust-domain>/participant/<id>` and
//!   `spiffe://<trust-domain>/node/<name>`), built only through parsers, so a value of these
//!   types is always valid.
//! - [`profile`]: checks that a certificate follows the BSN leaf profile (the SPIFFE X509-SVID
//!   profile: one URI SAN, not a CA, digitalSignature, clientAuth and serverAuth) and reads the
//!   identity and serial out of it.
//! - [`verify`]: a trust bundle and chain verification of a leaf against it (rustls-webpki), with
//!   an optional set of revoked serials.
//! - [`logleaf`]: the issuance log's canonical leaf encoding (issuance, revocation and
//!   membership events).
//! - [`membership`]: subchain ids, roles, membership statements and feed heartbeats signed by the
//!   CA's membership key, and their offline verification; the key's handovers, followed from a
//!   pinned key (`MembershipKeys`).
//! - [`plan`]: resource plans of shared city nodes and the capacity a node declares.
//! - [`usage`]: the usage reports city nodes sign and send the CA (counts per subchain and hour).
//! - [`ledger`]: the ledger's canonical encodings: signed transactions (and the creator-key
//!   signature check), blocks and their hash chain, and inclusion proofs of a block's entries.
//! - [`tree`]: replaying the issuance log's RFC 6962 tree leaf by leaf (`CompactRange`).
//!
//! Non-features: this crate does no I/O (no files, sockets or clocks: the caller passes the
//! time), issues nothing (issuance lives in `ca-server`), and has no server code.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod ledger;
pub mod logleaf;
pub mod membership;
pub mod names;
pub mod plan;
pub mod profile;
pub mod tree;
pub mod usage;
pub mod verify;

pub use names::{CaRole, IdentityId, IdentityKind, IdentityStatus, SpiffeId, TrustDomain};
