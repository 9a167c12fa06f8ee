//! Building and signing ledger transactions: the one place a client assembles them (the
//! encoding itself, and the node's check, are in `identity::ledger`).
//!
//! A transaction names its subchain, carries a nonce (16 random bytes unless given), the
//! creator's certificate and the operations; the creator's key signs the body's signing
//! message. Its id is the SHA-256 of the body, in lowercase hex.

use std::path::Path;

use identity::ledger::{Op, TxBody, assemble, sha256, signing_message};
use identity::membership::SubchainId;
use rcgen::{KeyPair, SigningKey};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::client::ClientError;

/// A signed transaction, ready to submit.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The encoded transaction.
    pub bytes: Vec<u8>,
    /// Its id: SHA-256 of the body, lowercase hex.
    pub id: String,
}

/// Signs transactions as one participant: its certificate (the leaf) and its key.
pub struct TxSigner {
    creator_cert: Vec<u8>,
    key: KeyPair,
}

impl TxSigner {
    /// A signer from the leaf certificate (DER) and its key.
    pub fn new(creator_cert: Vec<u8>, key: KeyPair) -> Self {
        Self { creator_cert, key }
    }

    /// A signer from credential files: `cert.pem` (the leaf first, as `bsn enroll` writes it)
    /// and `key.pem` (PKCS#8).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let local = |p: &Path, e: &dyn std::fmt::Display| ClientError::Local(format!("{}: {e}", p.display()));
        let cert_pem = std::fs::read(cert).map_err(|e| local(cert, &e))?;
        let leaf = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or_else(|| local(cert, &"holds no certificate"))?
            .map_err(|e| local(cert, &e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| local(key, &e))?;
        let key_pair = crate::files::load_key(&key_pem).map_err(|e| local(key, &e))?;
        Ok(Self::new(leaf.to_vec(), key_pair))
    }

    /// Signs `ops` for `subchain` with a fresh random nonce.
    pub fn sign(&self, subchain: &SubchainId, ops: Vec<Op>) -> Result<Signed, ClientError> {
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| ClientError::Local("the system random generator failed".into()))?;
        self.sign_with_nonce(subchain, nonce.to_vec(), ops)
    }

    /// Signs `ops` for `subchain` with the given nonce (a repeated nonce makes a repeated
    /// transaction, which the node refuses: only for reproducible test data).
    pub fn sign_with_nonce(&self, subchain: &SubchainId, nonce: Vec<u8>, ops: Vec<Op>) -> Result<Signed, ClientError> {
        let body = TxBody {
            subchain: subchain.clone(),
            nonce,
            creator_cert: self.creator_cert.clone(),
            ops,
        }
        .encode()
        .map_err(|e| ClientError::Local(format!("transaction: {e}")))?;
        let sig = self
            .key
            .sign(&signing_message(&body))
            .map_err(|e| ClientError::Local(format!("signing: {e}")))?;
        Ok(Signed {
            bytes: assemble(&body, &sig),
            id: hex_lower(&sha256(&body)),
        })
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::ledger::SignedTx;

    #[test]
    fn signed_transactions_parse_and_verify_with_the_creator_key() {
        let key = crate::files::generate_key(crate::files::KeyType::P256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["tx.example".into()]).unwrap();
        params.is_ca = rcgen::IsCa::NoCa;
        let cert = params.self_signed(&key).unwrap();
        let signer = TxSigner::new(cert.der().to_vec(), key);
        let subchain = SubchainId::parse("supply").unwrap();
        let ops = vec![Op::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        }];
        let a = signer.sign(&subchain, ops.clone()).unwrap();
        let b = signer.sign(&subchain, ops.clone()).unwrap();
        assert_ne!(a.id, b.id, "fresh nonces make distinct transactions");
        let same = signer.sign_with_nonce(&subchain, vec![7; 16], ops.clone()).unwrap();
        let again = signer.sign_with_nonce(&subchain, vec![7; 16], ops).unwrap();
        assert_eq!(same.id, again.id);
        let parsed = SignedTx::parse(a.bytes.clone()).unwrap();
        assert_eq!(hex_lower(&parsed.id), a.id);
        use x509_parser::prelude::FromDer;
        let (_, x509) = x509_parser::certificate::X509Certificate::from_der(&parsed.body.creator_cert).unwrap();
        let creator = identity::ledger::CreatorKey::from_certificate(&x509).unwrap();
        parsed.verify(&creator).unwrap();
    }
}
