//! What the rotation of the CA's certificates shares: the keys rotation opens and makes
//! ([`Keys`]) and why a step was refused or failed ([`RotationError`]). The rules are in
//! [`crate::intermediates`] (the issuing intermediate) and [`crate::roots`] (the root).

use std::collections::BTreeMap;

use crate::hsm::InToken;
use crate::pki::{CaSigner, Policy};

/// Why a rotation step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The step does not fit the current state; the text says what to do.
    #[error("{0}")]
    Refused(String),
    /// No intermediate (or root) with this number.
    #[error("no {0} number {1}")]
    Unknown(&'static str, i64),
    /// Storage, sealing or signing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::db::DbError> for RotationError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<crate::log::LogError> for RotationError {
    fn from(e: crate::log::LogError) -> Self {
        Self::Internal(e.into())
    }
}

/// What the CA needs to open and make its intermediates' and roots' keys.
pub struct Keys {
    /// The passphrase that seals the CA's keys.
    pub passphrase: String,
    /// Number 1's signer (a sealed file or a token key, opened at start-up).
    pub first: CaSigner,
    /// Issuance policy.
    pub policy: Policy,
    /// The CA's public base URL (CRL distribution points).
    pub public_url: String,
    /// The trust domain.
    pub trust_domain: String,
    /// The data directory's files (the root's certificate and sealed key).
    pub paths: crate::config::Paths,
    /// The CA's PKCS#11 token, when its keys are there.
    pub token: Option<InToken>,
    /// Keys of later intermediates, each opened once (argon2id makes opening slow on purpose).
    pub opened: std::sync::Mutex<BTreeMap<i64, CaSigner>>,
}
