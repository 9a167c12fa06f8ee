//! Checking what a client asks to be certified: a PKCS#10 CSR or a bare public key.
//!
//! Pure functions: only the public key is taken from a request; everything else a CSR asks for
//! (subject, extensions, CA flag) is ignored by construction, because issuance builds its own
//! parameters.

use ring::agreement;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Why a request's key or CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST`, or the DER inside does not parse.
    #[error("malformed CSR: {0}")]
    Malformed(String),
    /// The CSR's self-signature does not verify with its own public key.
    #[error("the CSR signature does not verify with the CSR's public key")]
    BadSignature,
    /// The CSR is signed with an algorithm we do not accept (SHA-1, MD5, unknown).
    #[error(
        "CSR signature algorithm {0} is not accepted (use ECDSA with SHA-256/384, Ed25519, or RSA with SHA-256 or stronger)"
    )]
    WeakSignature(String),
    /// The key type, size or curve is not accepted, or the key itself is invalid.
    #[error("unsupported or invalid public key: {0}")]
    UnsupportedKey(String),
}

/// The kind of a checked public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with the given modulus size in bits.
    Rsa(usize),
}

/// A public key that passed policy; the only thing issuance takes from a request.
#[derive(Debug, Clone)]
pub struct CheckedKey {
    /// The DER SubjectPublicKeyInfo, as the client sent it.
    pub spki_der: Vec<u8>,
    /// Its kind.
    pub kind: KeyKind,
    pub(crate) rcgen_spki: rcgen::SubjectPublicKeyInfo,
}

/// Largest CSR accepted, in bytes of PEM (an RSA-8192 CSR is about 3 KiB of PEM).
pub const MAX_CSR_PEM: usize = 16 * 1024;

/// Parses a PEM CSR, verifies its self-signature and checks its key against policy.
pub fn check_csr_pem(pem: &str) -> Result<CheckedKey, CsrError> {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    if pem.len() > MAX_CSR_PEM {
        return Err(CsrError::Malformed(format!("CSR is larger than {MAX_CSR_PEM} bytes")));
    }
    // Exactly one PEM block of any kind: a second CSR (or a key, a certificate) after it is
    // refused, not silently ignored.
    let blocks = <(rustls_pki_types::pem::SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()).count();
    if blocks != 1 {
        return Err(CsrError::Malformed(format!(
            "expected exactly one PEM 'CERTIFICATE REQUEST' block, found {blocks} PEM blocks"
        )));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CsrError::Malformed(format!("expected one PEM 'CERTIFICATE REQUEST' block ({e})")))?;
    check_csr_der(der.as_ref())
}

/// [`check_csr_pem`] for DER input.
pub fn check_csr_der(der: &[u8]) -> Result<CheckedKey, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Malformed(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("trailing bytes after the CSR".into()));
    }
    let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
    if !ACCEPTED_CSR_SIGNATURES.contains(&sig_oid.as_str()) {
        return Err(CsrError::WeakSignature(sig_oid));
    }
    let spki = &csr.certification_request_info.subject_pki;
    // ring's signature verification rejects an off-curve point, so a valid signature proves the
    // key valid; only when it fails do we pay for the explicit point check, to name the cause.
    let key = check_spki_parsed(spki, false)?;
    if csr.verify_signature().is_err() {
        check_spki_parsed(spki, true)?;
        return Err(CsrError::BadSignature);
    }
    Ok(key)
}

/// Parses and checks a DER SubjectPublicKeyInfo (for keys made in a browser).
pub fn check_spki_der(der: &[u8]) -> Result<CheckedKey, CsrError> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| CsrError::Malformed(format!("not a SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("trailing bytes after the public key".into()));
    }
    check_spki_parsed(&spki, true)
}

const ACCEPTED_CSR_SIGNATURES: &[&str] = &[
    "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
    "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
    "1.3.101.112",           // Ed25519
    "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
    "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
    "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
    "1.2.840.113549.1.1.10", // RSASSA-PSS
];

fn check_spki_parsed(spki: &SubjectPublicKeyInfo<'_>, validate_point: bool) -> Result<CheckedKey, CsrError> {
    let alg = &spki.algorithm.algorithm;
    let point = spki.subject_public_key.data.as_ref();
    let kind = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::UnsupportedKey("EC key without a named curve".into()))?;
        let (kind, ecdh, len) = if curve == OID_EC_P256 {
            (KeyKind::EcdsaP256, &agreement::ECDH_P256, 65)
        } else if curve == OID_NIST_EC_P384 {
            (KeyKind::EcdsaP384, &agreement::ECDH_P384, 97)
        } else {
            return Err(CsrError::UnsupportedKey(format!(
                "EC curve {} (accepted: P-256, P-384)",
                curve.to_id_string()
            )));
        };
        if point.len() != len || point[0] != 4 {
            return Err(CsrError::UnsupportedKey("EC point must be uncompressed".into()));
        }
        if validate_point && !ec_point_is_valid(ecdh, point) {
            return Err(CsrError::UnsupportedKey("EC point is not on the curve".into()));
        }
        kind
    } else if *alg == OID_SIG_ED25519 {
        if point.len() != 32 {
            return Err(CsrError::UnsupportedKey("Ed25519 key must be 32 bytes".into()));
        }
        KeyKind::Ed25519
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::UnsupportedKey("RSA key does not parse".into()));
        };
        let bits = rsa.key_size();
        if !(2048..=8192).contains(&bits) {
            return Err(CsrError::UnsupportedKey(format!(
                "RSA key of {bits} bits (accepted: 2048 to 8192)"
            )));
        }
        let e = rsa
            .try_exponent()
            .map_err(|_| CsrError::UnsupportedKey("RSA exponent too large".into()))?;
        if e < 65537 || e % 2 == 0 {
            return Err(CsrError::UnsupportedKey(
                "RSA exponent must be odd and at least 65537".into(),
            ));
        }
        KeyKind::Rsa(bits)
    } else {
        return Err(CsrError::UnsupportedKey(format!(
            "key algorithm {}",
            alg.to_id_string()
        )));
    };
    let rcgen_spki = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::UnsupportedKey(format!("key encoding: {e}")))?;
    Ok(CheckedKey {
        spki_der: spki.raw.to_vec(),
        kind,
        rcgen_spki,
    })
}

/// Whether `point` is a valid public point of the curve: ring validates the peer key of an
/// ECDH agreement (on the curve, not the identity) before using it, which is exactly the check.
fn ec_point_is_valid(alg: &'static agreement::Algorithm, point: &[u8]) -> bool {
    let rng = ring::rand::SystemRandom::new();
    let Ok(ours) = agreement::EphemeralPrivateKey::generate(alg, &rng) else {
        return false;
    };
    agreement::agree_ephemeral(ours, &agreement::UnparsedPublicKey::new(alg, point), |_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: two concatenated CSR blocks were accepted (the first was used).
    #[test]
    fn exactly_one_pem_block() {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        assert!(check_csr_pem(&csr).is_ok());
        let two = format!("{csr}{csr}");
        assert!(matches!(check_csr_pem(&two), Err(CsrError::Malformed(m)) if m.contains("found 2")));
        let with_key = format!("{csr}{}", key.serialize_pem());
        assert!(check_csr_pem(&with_key).is_err());
    }
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};

    fn csr_for(key: &KeyPair) -> String {
        let mut p = CertificateParams::new(vec!["ignored.example".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_supported_keys() {
        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyKind::EcdsaP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let checked = check_csr_pem(&csr_for(&key)).unwrap();
            assert_eq!(checked.kind, kind);
            assert_eq!(checked.spki_der, key.subject_public_key_info());
        }
    }

    #[test]
    fn refuses_garbage_and_tampering() {
        assert!(matches!(check_csr_pem("hello"), Err(CsrError::Malformed(_))));
        let cert_pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(matches!(check_csr_pem(cert_pem), Err(CsrError::Malformed(_))));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "aaaa");
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        let pos = der.windows(4).position(|w| w == b"aaaa").unwrap();
        let mut tampered = der.clone();
        tampered[pos] = b'b';
        assert_eq!(check_csr_der(&tampered).unwrap_err(), CsrError::BadSignature);
        assert!(check_csr_der(&der).is_ok());
    }

    #[test]
    fn refuses_off_curve_points() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut spki = key.subject_public_key_info();
        let n = spki.len();
        spki[n - 1] ^= 1; // change y: the point leaves the curve
        assert_eq!(
            check_spki_der(&spki).unwrap_err(),
            CsrError::UnsupportedKey("EC point is not on the curve".into())
        );
    }
}
