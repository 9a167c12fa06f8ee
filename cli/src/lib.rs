//! The `bsn` command line's library: an HTTPS client of the CA (mTLS with a participant's
//! certificate when it acts as one), key and CSR generation, and file output.
//!
//! Features: enroll, renew (same key or rekey), revoke, register, list identities and
//! certificates. Keys are generated locally (ring, through rcgen) and never sent anywhere.
//!
//! Non-features: no key storage beyond PEM files (no OS keychain, no PKCS#11), no RSA key
//! generation (bring an RSA CSR made with openssl instead).
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod audit;
pub mod client;
pub mod files;
