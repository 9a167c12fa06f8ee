//! Trust bundles and verification of a client or server certificate chain against one.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use std::time::Duration;
use webpki::{EndEntityCert, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy};

use crate::profile::{Leaf, ProfileError, check_leaf};

/// Why a certificate chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The trust bundle has no usable root certificate.
    #[error("trust bundle holds no usable root certificate")]
    EmptyBundle,
    /// A PEM or DER input could not be read.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The chain does not verify (unknown issuer, bad signature, expired, wrong usage, revoked...).
    #[error("certificate chain rejected: {0}")]
    Chain(String),
    /// The chain verifies but the leaf does not follow the BSN leaf profile.
    #[error("leaf does not follow the BSN profile: {0}")]
    Profile(#[from] ProfileError),
}

/// The set of root certificates a participant, node or auditor trusts.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Reads a bundle of PEM `CERTIFICATE` blocks.
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        Self::from_der(roots)
    }

    /// Builds a bundle from DER root certificates.
    pub fn from_der(roots: Vec<CertificateDer<'static>>) -> Result<Self, VerifyError> {
        let anchors = roots
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if anchors.is_empty() {
            return Err(VerifyError::EmptyBundle);
        }
        Ok(Self { roots, anchors })
    }

    /// The root certificates.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Checks that `der` is a CA certificate signed by one of the bundle's roots, issued to a
    /// different key (an issuing intermediate, as the issuance log announces them).
    pub fn verify_intermediate(&self, der: &[u8]) -> Result<(), VerifyError> {
        use x509_parser::prelude::FromDer;
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|_| VerifyError::Malformed("not a DER X.509 certificate".into()))?;
        if !rest.is_empty() {
            return Err(VerifyError::Malformed("trailing bytes after the certificate".into()));
        }
        if !cert.is_ca() {
            return Err(VerifyError::Chain("not a CA certificate".into()));
        }
        for root in &self.roots {
            let Ok((_, r)) = x509_parser::certificate::X509Certificate::from_der(root) else {
                continue;
            };
            if r.subject().as_raw() == cert.issuer().as_raw()
                && r.public_key().raw != cert.public_key().raw
                && cert.verify_signature(Some(r.public_key())).is_ok()
            {
                return Ok(());
            }
        }
        Err(VerifyError::Chain("not signed by a root of the bundle".into()))
    }

    /// Verifies `chain` (leaf first, then intermediates) for client authentication at
    /// `now_unix`, checks the leaf profile, and, when `crls` is not empty, checks the leaf
    /// against them (a leaf whose issuer has no CRL in the set is refused).
    pub fn verify_client(
        &self,
        chain: &[CertificateDer<'_>],
        now_unix: u64,
        crls: &[CertificateRevocationListDer<'_>],
    ) -> Result<Leaf, VerifyError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(VerifyError::Malformed("empty chain".into()))?;
        let ee = EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let parsed: Vec<webpki::CertRevocationList<'_>> = crls
            .iter()
            .map(|c| webpki::BorrowedCertRevocationList::from_der(c).map(Into::into))
            .collect::<Result<_, _>>()
            .map_err(|e| VerifyError::Malformed(format!("CRL: {e}")))?;
        let refs: Vec<&webpki::CertRevocationList<'_>> = parsed.iter().collect();
        let revocation = if refs.is_empty() {
            None
        } else {
            Some(
                RevocationOptionsBuilder::new(&refs)
                    .map_err(|e| VerifyError::Malformed(format!("CRL: {e:?}")))?
                    .with_depth(RevocationCheckDepth::EndEntity)
                    .with_status_policy(UnknownStatusPolicy::Deny)
                    .build(),
            )
        };
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(now_unix)),
            KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map_err(|e| VerifyError::Chain(format!("{e:?}")))?;
        Ok(check_leaf(leaf)?)
    }
}

/// Verifies many leaves signed by the same few issuing intermediates, as an auditor does for a
/// whole issuance log. The first leaf under each intermediate is verified in full with webpki
/// (so that intermediate is known to chain to the bundle); every later leaf under it costs one
/// signature check with the intermediate's key, a validity check and the profile check. The
/// result is the same as [`TrustBundle::verify_client`] without CRLs, at about half the cost.
pub struct LeafVerifier<'a> {
    bundle: &'a TrustBundle,
    chain: &'a [CertificateDer<'static>],
    issuers: Vec<x509_parser::certificate::X509Certificate<'a>>,
    verified: Vec<bool>,
}

impl<'a> LeafVerifier<'a> {
    /// A verifier for leaves issued by the intermediates in `chain`.
    pub fn new(bundle: &'a TrustBundle, chain: &'a [CertificateDer<'static>]) -> Result<Self, VerifyError> {
        use x509_parser::prelude::FromDer;
        let issuers = chain
            .iter()
            .map(|c| {
                x509_parser::certificate::X509Certificate::from_der(c.as_ref())
                    .map(|(_, cert)| cert)
                    .map_err(|e| VerifyError::Malformed(format!("CA chain: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let verified = vec![false; issuers.len()];
        Ok(Self {
            bundle,
            chain,
            issuers,
            verified,
        })
    }

    /// Verifies `leaf` for client authentication at `at_unix` and checks its profile.
    pub fn verify(&mut self, leaf: &[u8], at_unix: i64) -> Result<Leaf, VerifyError> {
        self.verify_issued(leaf, at_unix).map(|(leaf, _)| leaf)
    }

    /// [`LeafVerifier::verify`], also saying which intermediate of the chain issued the leaf
    /// (its index in the chain given to [`LeafVerifier::new`]).
    pub fn verify_issued(&mut self, leaf: &[u8], at_unix: i64) -> Result<(Leaf, usize), VerifyError> {
        use x509_parser::prelude::FromDer;
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(leaf)
            .map_err(|_| VerifyError::Malformed("not a DER X.509 certificate".into()))?;
        if !rest.is_empty() {
            return Err(VerifyError::Malformed("trailing bytes after the certificate".into()));
        }
        // Old and new intermediates may share a subject: the issuer is the one whose key verifies.
        let mut refused = VerifyError::Chain("UnknownIssuer".into());
        let mut found = None;
        for i in 0..self.issuers.len() {
            if self.issuers[i].subject().as_raw() != cert.issuer().as_raw() {
                continue;
            }
            if !self.verified[i] {
                let full = [CertificateDer::from(leaf), self.chain[i].clone()];
                match self.bundle.verify_client(&full, at_unix.max(0) as u64, &[]) {
                    Ok(checked) => {
                        self.verified[i] = true;
                        return Ok((checked, i));
                    }
                    Err(e) => refused = e,
                }
            } else if cert.verify_signature(Some(self.issuers[i].public_key())).is_ok() {
                found = Some(i);
                break;
            } else {
                refused = VerifyError::Chain("BadSignature".into());
            }
        }
        let Some(issuer) = found else {
            return Err(refused);
        };
        let intermediate = &self.issuers[issuer];
        for (what, validity) in [("leaf", cert.validity()), ("issuer", intermediate.validity())] {
            if at_unix < validity.not_before.timestamp() || at_unix > validity.not_after.timestamp() {
                return Err(VerifyError::Chain(format!("{what} is not valid at {at_unix}")));
            }
        }
        if let Some(ext) = cert.extensions().iter().find(|e| {
            e.critical
                && matches!(
                    e.parsed_extension(),
                    x509_parser::extensions::ParsedExtension::UnsupportedExtension { .. }
                )
        }) {
            return Err(VerifyError::Chain(format!(
                "unsupported critical extension {}",
                ext.oid
            )));
        }
        Ok((crate::profile::check_parsed_leaf(&cert)?, issuer))
    }
}
