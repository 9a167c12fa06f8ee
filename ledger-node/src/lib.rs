//! The BSN city node.
//!
//! Not built yet: this crate exists so the workspace has its final shape. The open issues
//! describe it (an mTLS gateway admitting clients per subchain by the CA's membership
//! statements, signed transactions, hash-chained blocks in redb, one openraft group per
//! subchain). It depends on `identity` only and never on `ca-server`.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
