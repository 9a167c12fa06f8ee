//! The issuance core: CA hierarchy generation, leaf issuance by the leaf profile, CRL signing.
//!
//! Pure: no I/O. The signing key sits behind [`CaSigner`], so an HSM or KMS backend can be added
//! by implementing rcgen's `SigningKey` without touching issuance.

use std::net::IpAddr;
use std::sync::Arc;

use identity::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm, SigningKey,
};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::csr::CheckedKey;

/// Errors of the issuance core. Each one is a bug or a broken CA, never bad client input.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused to build or sign.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// A CA signing key: anything rcgen can sign with. Today a software key decrypted at start-up.
#[derive(Clone)]
pub struct CaSigner(Arc<dyn SigningKey + Send + Sync>);

impl CaSigner {
    /// Wraps a software key pair.
    pub fn software(key: KeyPair) -> Self {
        Self(Arc::new(key))
    }

    /// A key in a PKCS#11 token.
    pub fn token(key: crate::hsm::TokenKey) -> Self {
        Self(Arc::new(key))
    }
}

impl PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// Validity and other knobs of issuance.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Lifetime of participant certificates.
    pub participant_validity: Duration,
    /// Lifetime of node certificates.
    pub node_validity: Duration,
    /// Lifetime of each CRL (nextUpdate - thisUpdate); it is re-signed at half of this.
    pub crl_validity: Duration,
    /// Lifetime of the root's CRL; re-signed at half of this where the root key is at hand.
    pub root_crl_validity: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            participant_validity: Duration::days(90),
            node_validity: Duration::days(30),
            crl_validity: Duration::hours(24),
            root_crl_validity: Duration::days(365),
        }
    }
}

/// Certificates are back-dated this much to tolerate clock skew between CA and verifiers.
pub const BACKDATE: Duration = Duration::seconds(60);

/// What a leaf is issued for; all of it comes from the CA's records, never from the request.
#[derive(Debug)]
pub struct LeafSubject<'a> {
    /// The identity named by the one URI SAN.
    pub spiffe_id: &'a SpiffeId,
    /// DNS SANs (nodes only).
    pub dns_names: &'a [String],
    /// IP SANs (nodes only).
    pub ip_addresses: &'a [IpAddr],
    /// Lifetime.
    pub validity: Duration,
}

/// A freshly signed certificate and the facts about it that the database keeps.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The SPIFFE ID it names.
    pub spiffe_id: String,
    /// Serial, lowercase hex without leading zeros.
    pub serial_hex: String,
    /// The DER certificate.
    pub der: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the subject public key info, lowercase hex.
    pub key_sha256: String,
    /// The number of the intermediate that signed it.
    pub issuer: i64,
}

/// A revoked certificate as listed in a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial, lowercase hex.
    pub serial_hex: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 reason.
    pub reason: Reason,
}

/// RFC 5280 CRL reason codes that a revocation request may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// unspecified (0)
    Unspecified,
    /// keyCompromise (1)
    KeyCompromise,
    /// cACompromise (2)
    CaCompromise,
    /// affiliationChanged (3)
    AffiliationChanged,
    /// superseded (4)
    Superseded,
    /// cessationOfOperation (5)
    CessationOfOperation,
    /// privilegeWithdrawn (9)
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every accepted reason with its RFC 5280 name.
    pub const ALL: [(Reason, &'static str); 7] = [
        (Reason::Unspecified, "unspecified"),
        (Reason::KeyCompromise, "keyCompromise"),
        (Reason::CaCompromise, "cACompromise"),
        (Reason::AffiliationChanged, "affiliationChanged"),
        (Reason::Superseded, "superseded"),
        (Reason::CessationOfOperation, "cessationOfOperation"),
        (Reason::PrivilegeWithdrawn, "privilegeWithdrawn"),
    ];

    /// Parses an RFC 5280 reason name (case-insensitive, so `keycompromise` works too).
    /// certificateHold is refused: holds are not supported, every revocation is final.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(r, _)| *r)
    }

    /// The RFC 5280 name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, n)| *n)
            .unwrap_or("unspecified")
    }

    /// The RFC 5280 reason code.
    pub fn code(self) -> u8 {
        self.rcgen() as u8
    }

    fn rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::CaCompromise => RevocationReason::CaCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// The issuing side of the CA: the active intermediate and the roots above it.
pub struct Ca {
    /// Root certificates (the trust bundle).
    pub roots: Vec<CertificateDer<'static>>,
    /// The active issuing intermediate.
    pub intermediate: CertificateDer<'static>,
    issuer: Issuer<'static, CaSigner>,
    signer: CaSigner,
    /// The last readiness probe: when, and whether the key signed.
    probed: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// Issuance policy.
    pub policy: Policy,
    /// Where the issuing CA's CRL is published: every leaf names it (CRL distribution point).
    crl_url: Option<String>,
    /// Its number at this CA (1: the intermediate made at initialisation).
    pub number: i64,
    /// Cross-certificates that lead from its root to roots still trusted before it (while a
    /// root rotation is under way): sent after the intermediate, so a verifier that trusts only
    /// the old root still verifies the chain.
    cross: Vec<CertificateDer<'static>>,
}

impl Ca {
    /// Builds the issuing CA from its stored certificate and its signing key.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        intermediate: CertificateDer<'static>,
        signer: CaSigner,
        policy: Policy,
    ) -> Result<Self, PkiError> {
        let issuer = Issuer::from_ca_cert_der(&intermediate, signer.clone())?;
        Ok(Self {
            roots,
            intermediate,
            issuer,
            signer,
            probed: std::sync::Mutex::new(None),
            policy,
            crl_url: None,
            number: 1,
            cross: Vec::new(),
        })
    }

    /// The same CA, whose chain carries `cross` after the intermediate.
    pub fn with_cross(mut self, cross: Vec<CertificateDer<'static>>) -> Self {
        self.cross = cross;
        self
    }

    /// The same CA as intermediate number `number` (its CRL's URL is numbered).
    pub fn numbered(mut self, number: i64) -> Self {
        self.number = number;
        self
    }

    /// Its signing key.
    pub fn signer(&self) -> CaSigner {
        self.signer.clone()
    }

    /// Whether the signing key signs now (a token may be gone): a signature over a fixed
    /// message, made and thrown away, at most once a second (callers in between get the last
    /// answer). Blocking.
    pub fn signer_works(&self) -> bool {
        let mut last = self.probed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, ok)) = *last
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return ok;
        }
        let ok = self.signer.sign(b"bsn readiness probe").is_ok();
        *last = Some((std::time::Instant::now(), ok));
        ok
    }

    /// Names the CA's public base URL: leaves issued from now on carry
    /// `<base>/api/v1/crls/<number>` as their CRL distribution point.
    pub fn set_public_url(&mut self, base: &str) {
        self.crl_url = Some(issuing_crl_url(base, self.number));
    }

    /// The CRL distribution point its leaves name, once the public URL is set.
    pub fn crl_url(&self) -> Option<&str> {
        self.crl_url.as_deref()
    }

    /// Issues a leaf by the BSN leaf profile for `key`, at `now`.
    pub fn issue_leaf(
        &self,
        subject: &LeafSubject<'_>,
        key: &CheckedKey,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let mut p = CertificateParams::default();
        let not_before = now - BACKDATE;
        let not_after = now + subject.validity;
        p.not_before = not_before;
        p.not_after = not_after;
        let serial = leaf_serial(now)?;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, subject.spiffe_id.trust_domain.as_str());
        dn.push(DnType::OrganizationalUnitName, subject.spiffe_id.kind.as_str());
        dn.push(DnType::CommonName, subject.spiffe_id.id.as_str());
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        let mut sans = vec![SanType::URI(subject.spiffe_id.to_string().try_into()?)];
        for d in subject.dns_names {
            sans.push(SanType::DnsName(d.as_str().try_into()?));
        }
        sans.extend(subject.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        p.subject_alt_names = sans;
        if let Some(url) = &self.crl_url {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        let cert = p.signed_by(&key.rcgen_spki, &self.issuer)?;
        Ok(IssuedCert {
            spiffe_id: subject.spiffe_id.to_string(),
            serial_hex: identity::profile::hex_lower(strip_zeros(&serial)),
            der: cert.der().to_vec(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
            key_sha256: sha256_hex(&key.spki_der),
            issuer: self.number,
        })
    }

    /// Signs a full CRL with the given number over `revoked`.
    pub fn sign_crl(
        &self,
        number: i64,
        this_update: OffsetDateTime,
        revoked: &[RevokedEntry],
    ) -> Result<Vec<u8>, PkiError> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&r.serial_hex).map_err(|_| PkiError::Random)?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at).unwrap_or(this_update),
                    reason_code: Some(r.reason.rcgen()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update,
            next_update: this_update + self.policy.crl_validity,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }

    /// The chain a leaf holder presents after its leaf: the intermediate, then during a root
    /// rotation the cross-certificates from its root back to the old root.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        let mut chain = vec![self.intermediate.clone()];
        chain.extend(self.cross.iter().cloned());
        chain
    }
}

/// Where issuing intermediate `number`'s CRL is published under a CA's public base URL.
pub fn issuing_crl_url(base: &str, number: i64) -> String {
    format!("{base}/api/v1/crls/{number}")
}

/// Where the root's CRL is published under a CA's public base URL.
pub fn root_crl_url(base: &str) -> String {
    format!("{base}/api/v1/crl/root")
}

/// Where root `number`'s CRL is published (the first root's at its historical address, which
/// the intermediates it certified name).
pub fn numbered_root_crl_url(base: &str, number: u32) -> String {
    if number <= 1 {
        root_crl_url(base)
    } else {
        format!("{base}/api/v1/crl/root/{number}")
    }
}

/// Signs the root's CRL (no intermediate has ever been revoked: the list is empty), numbered by
/// the signing time in Unix milliseconds so that any holder of the root key (a replica, or the
/// offline root's operator) makes increasing numbers without coordinating.
pub fn sign_root_crl(
    root_der: &[u8],
    root_key: impl SigningKey,
    this_update: OffsetDateTime,
    validity: Duration,
) -> Result<Vec<u8>, PkiError> {
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(root_der), root_key)?;
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update + validity,
        crl_number: SerialNumber::from_slice(&((this_update.unix_timestamp_nanos() / 1_000_000) as i64).to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&issuer)?.der().to_vec())
}

/// A new CA hierarchy, made once at initialisation.
pub struct NewHierarchy {
    /// Root certificate.
    pub root_der: Vec<u8>,
    /// Root key, PKCS#8 DER (none when it lives in a token).
    pub root_key_pkcs8: Option<Vec<u8>>,
    /// Intermediate certificate.
    pub intermediate_der: Vec<u8>,
    /// Intermediate key, PKCS#8 DER (none when it lives in a token).
    pub intermediate_key_pkcs8: Option<Vec<u8>>,
}

/// Generates a root (10 years) and an issuing intermediate (path length 0, 5 years), ECDSA P-256;
/// the intermediate names the root's CRL under `public_url` when one is given.
pub fn new_hierarchy(
    trust_domain: &str,
    now: OffsetDateTime,
    public_url: Option<&str>,
) -> Result<NewHierarchy, PkiError> {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut h = new_hierarchy_for(trust_domain, now, public_url, &root_key, &inter_key)?;
    h.root_key_pkcs8 = Some(root_key.serialize_der());
    h.intermediate_key_pkcs8 = Some(inter_key.serialize_der());
    Ok(h)
}

/// [`new_hierarchy`] with keys made elsewhere (in a token): the root's signs here, and only the
/// intermediate's public half is needed.
pub fn new_hierarchy_for(
    trust_domain: &str,
    now: OffsetDateTime,
    public_url: Option<&str>,
    root_key: &impl SigningKey,
    inter_key: &impl PublicKeyData,
) -> Result<NewHierarchy, PkiError> {
    let root_der = self_signed_root(trust_domain, now, root_key)?;
    let intermediate = IntermediateRequest {
        trust_domain,
        number: 1,
        now,
        validity: INTERMEDIATE_VALIDITY,
        public_url,
        root: 1,
    };
    let intermediate_der = issue_intermediate(&intermediate, &root_der, root_key, inter_key)?;
    Ok(NewHierarchy {
        root_key_pkcs8: None,
        root_der,
        intermediate_key_pkcs8: None,
        intermediate_der,
    })
}

/// How long a root lasts.
pub const ROOT_VALIDITY: Duration = Duration::days(3650);
/// How long an issuing intermediate lasts, unless asked otherwise (never past its root).
pub const INTERMEDIATE_VALIDITY: Duration = Duration::days(1825);

/// A self-signed root for `trust_domain` (10 years, no path length constraint, like public
/// roots: a root must be able to certify its successor, so that root, cross-certificate,
/// intermediate, leaf is a valid path during a root rotation; the intermediates' path length 0
/// still keeps every leaf from acting as a CA), signed by `root_key`.
pub fn self_signed_root(
    trust_domain: &str,
    now: OffsetDateTime,
    root_key: &impl SigningKey,
) -> Result<Vec<u8>, PkiError> {
    let mut root = ca_params(trust_domain, "Root CA", now, ROOT_VALIDITY)?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok(root.self_signed(root_key)?.der().to_vec())
}

/// The common name of root `number` after the trust domain: `Root CA`, then `Root CA <n>`.
fn root_cn(number: u32) -> String {
    if number <= 1 {
        "Root CA".into()
    } else {
        format!("Root CA {number}")
    }
}

/// A later root, number `number`, for `new_key`: its self-signed certificate (10 years, like
/// the first) and its cross-certificate, the same subject and key certified by
/// the root before it (`old_der`, whose key is `old_key`), which ends with the earlier of the
/// two. A verifier that trusts the old root trusts the new one through the cross-certificate.
pub fn next_root(
    trust_domain: &str,
    number: u32,
    now: OffsetDateTime,
    new_key: &impl SigningKey,
    old_der: &[u8],
    old_key: &impl SigningKey,
) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let mut root = ca_params(trust_domain, &root_cn(number), now, ROOT_VALIDITY)?;
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_der = root.self_signed(new_key)?.der().to_vec();
    let old_issuer = Issuer::from_ca_cert_der(&CertificateDer::from(old_der), old_key)?;
    let mut cross = ca_params(trust_domain, &root_cn(number), now, ROOT_VALIDITY)?;
    cross.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cross.use_authority_key_identifier_extension = true;
    if let Ok((_, old)) = x509_parser::parse_x509_certificate(old_der) {
        let old_end = old.validity().not_after.to_datetime();
        if cross.not_after > old_end {
            cross.not_after = old_end;
        }
    }
    let cross_der = cross.signed_by(new_key, &old_issuer)?.der().to_vec();
    Ok((root_der, cross_der))
}

/// Checks a later root made elsewhere (by the offline root's operator) before the CA publishes
/// it: `root_der` a self-signed CA certificate valid at `now`; `cross_der` a CA certificate for
/// exactly the same subject and key, signed by `trusted_der` (the root it succeeds), valid at
/// `now`; and `crl_der` a current CRL signed by the new root.
pub fn check_next_root(
    root_der: &[u8],
    cross_der: &[u8],
    crl_der: &[u8],
    trusted_der: &[u8],
    now: OffsetDateTime,
) -> Result<(), HierarchyError> {
    use HierarchyError::{Malformed, Refused};
    let (_, root) = x509_parser::parse_x509_certificate(root_der)
        .map_err(|e| Malformed("the new root certificate", e.to_string()))?;
    let (_, cross) = x509_parser::parse_x509_certificate(cross_der)
        .map_err(|e| Malformed("the cross-certificate", e.to_string()))?;
    let (_, old) = x509_parser::parse_x509_certificate(trusted_der)
        .map_err(|e| Malformed("the current root certificate", e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(crl_der).map_err(|e| Malformed("the new root's CRL", e.to_string()))?;
    let at = x509_parser::time::ASN1Time::from_timestamp(now.unix_timestamp()).map_err(|e| Refused(e.to_string()))?;
    if !root.is_ca() || root.verify_signature(None).is_err() || root.subject() != root.issuer() {
        return Err(Refused("the new root is not a self-signed CA certificate".into()));
    }
    if !root.validity().is_valid_at(at) {
        return Err(Refused(
            "the new root is not valid now (check its dates and the clock)".into(),
        ));
    }
    if root.public_key().raw == old.public_key().raw {
        return Err(Refused(
            "the new root has the current root's key: a rotation needs a new key".into(),
        ));
    }
    if cross.public_key().raw != root.public_key().raw {
        return Err(Refused(
            "the cross-certificate certifies another key than the new root's: it was made for a different root".into(),
        ));
    }
    if cross.subject().as_raw() != root.subject().as_raw() {
        return Err(Refused(format!(
            "the cross-certificate's subject ({}) is not the new root's ({})",
            cross.subject(),
            root.subject()
        )));
    }
    if !cross.is_ca() {
        return Err(Refused("the cross-certificate is not a CA certificate".into()));
    }
    if cross.issuer().as_raw() != old.subject().as_raw() || cross.verify_signature(Some(old.public_key())).is_err() {
        return Err(Refused(format!(
            "the cross-certificate was not signed by the current root ({}): sign it with the root the CA trusts now",
            old.subject()
        )));
    }
    if !cross.validity().is_valid_at(at) {
        return Err(Refused(
            "the cross-certificate is not valid now (check its dates and the clock)".into(),
        ));
    }
    if crl.issuer() != root.subject() || crl.verify_signature(root.public_key()).is_err() {
        return Err(Refused("the CRL was not signed by the new root".into()));
    }
    if crl.next_update().is_none_or(|n| n.timestamp() <= now.unix_timestamp()) {
        return Err(Refused("the new root's CRL has expired".into()));
    }
    Ok(())
}

/// What an issuing intermediate is made with.
#[derive(Debug, Clone, Copy)]
pub struct IntermediateRequest<'a> {
    /// The trust domain (its organisation name).
    pub trust_domain: &'a str,
    /// Its number under the root: the common name is `<td> Issuing CA <number>`.
    pub number: u32,
    /// When it is signed.
    pub now: OffsetDateTime,
    /// How long it lasts (cut at the root's own end).
    pub validity: Duration,
    /// The CA's public base URL, under which it names the root's CRL.
    pub public_url: Option<&'a str>,
    /// The number of the root that signs it (whose CRL it names).
    pub root: u32,
}

/// Signs an issuing intermediate (path length 0) for `inter_key` under the root `root_der`,
/// whose key is `root_key`. It never outlives the root.
pub fn issue_intermediate(
    r: &IntermediateRequest<'_>,
    root_der: &[u8],
    root_key: &impl SigningKey,
    inter_key: &impl PublicKeyData,
) -> Result<Vec<u8>, PkiError> {
    let root_issuer = Issuer::from_ca_cert_der(&CertificateDer::from(root_der), root_key)?;
    let mut inter = ca_params(r.trust_domain, &format!("Issuing CA {}", r.number), r.now, r.validity)?;
    if let Ok((_, root)) = x509_parser::parse_x509_certificate(root_der) {
        let root_end = root.validity().not_after.to_datetime();
        if inter.not_after > root_end {
            inter.not_after = root_end;
        }
    }
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.use_authority_key_identifier_extension = true;
    if let Some(base) = r.public_url {
        inter.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![numbered_root_crl_url(base, r.root)],
        }];
    }
    Ok(inter.signed_by(inter_key, &root_issuer)?.der().to_vec())
}

/// A CSR for an issuing intermediate's key (`ca-server init --offline-root`): the offline root
/// takes only its public key from it.
pub fn intermediate_csr(trust_domain: &str, key: &impl SigningKey) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, format!("{trust_domain} Issuing CA"));
    p.distinguished_name = dn;
    Ok(p.serialize_request(key)?.pem()?)
}

/// Why an offline-signed hierarchy was refused by [`check_hierarchy`].
#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    /// A certificate or CRL does not parse.
    #[error("{0} does not parse: {1}")]
    Malformed(&'static str, String),
    /// A check failed; the text says which.
    #[error("{0}")]
    Refused(String),
}

/// Checks a hierarchy made elsewhere before a CA adopts it: `root_der` a self-signed CA
/// certificate valid at `now`; `inter_der` a CA certificate with path length 0 and
/// keyCertSign, signed by the root, valid at `now`, for exactly the key `key_spki_der`; and
/// `root_crl_der` a CRL signed by the root that has not expired and does not list the
/// intermediate.
pub fn check_hierarchy(
    root_der: &[u8],
    inter_der: &[u8],
    key_spki_der: &[u8],
    root_crl_der: &[u8],
    now: OffsetDateTime,
) -> Result<(), HierarchyError> {
    use HierarchyError::{Malformed, Refused};
    let (_, root) =
        x509_parser::parse_x509_certificate(root_der).map_err(|e| Malformed("the root certificate", e.to_string()))?;
    let (_, inter) = x509_parser::parse_x509_certificate(inter_der)
        .map_err(|e| Malformed("the intermediate certificate", e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(root_crl_der).map_err(|e| Malformed("the root CRL", e.to_string()))?;
    let t = now.unix_timestamp();
    if !root.is_ca() || root.verify_signature(None).is_err() || root.subject() != root.issuer() {
        return Err(Refused(
            "the root certificate is not a self-signed CA certificate".into(),
        ));
    }
    if !root
        .validity()
        .is_valid_at(x509_parser::time::ASN1Time::from_timestamp(t).map_err(|e| Refused(e.to_string()))?)
    {
        return Err(Refused(
            "the root certificate is not valid now (check its dates and the clock)".into(),
        ));
    }
    if inter.issuer() != root.subject() || inter.verify_signature(Some(root.public_key())).is_err() {
        return Err(Refused(format!(
            "the intermediate ({}) was not signed by this root ({}): sign its CSR with this root",
            inter.subject(),
            root.subject()
        )));
    }
    let constraints = inter
        .basic_constraints()
        .ok()
        .flatten()
        .map(|b| (b.value.ca, b.value.path_len_constraint));
    if constraints != Some((true, Some(0))) {
        return Err(Refused(
            "the intermediate is not a CA certificate with path length 0".into(),
        ));
    }
    if !inter
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|k| k.value.key_cert_sign() && k.value.crl_sign())
    {
        return Err(Refused(
            "the intermediate's key usage lacks keyCertSign or cRLSign".into(),
        ));
    }
    let at = x509_parser::time::ASN1Time::from_timestamp(t).map_err(|e| Refused(e.to_string()))?;
    if !inter.validity().is_valid_at(at) {
        return Err(Refused(
            "the intermediate is not valid now (check its dates and the clock)".into(),
        ));
    }
    if inter.public_key().raw != key_spki_der {
        return Err(Refused(
            "the intermediate certifies another key than this CA's issuing key: it was signed for a different CSR"
                .into(),
        ));
    }
    if crl.issuer() != root.subject() || crl.verify_signature(root.public_key()).is_err() {
        return Err(Refused("the root CRL was not signed by this root".into()));
    }
    if crl.next_update().is_none_or(|n| n.timestamp() <= t) {
        return Err(Refused(
            "the root CRL has expired: sign a new one with `ca-server root crl --root-dir`".into(),
        ));
    }
    if crl
        .iter_revoked_certificates()
        .any(|r| r.raw_serial() == inter.raw_serial())
    {
        return Err(Refused("the root CRL revokes this intermediate".into()));
    }
    Ok(())
}

fn ca_params(
    trust_domain: &str,
    cn: &str,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, format!("{trust_domain} {cn}"));
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

/// A random positive 128-bit serial (16 random bytes behind a zero byte, so it is positive).
fn random_serial() -> Result<[u8; 17], PkiError> {
    let mut s = [0u8; 17];
    ring::rand::SystemRandom::new()
        .fill(&mut s[1..])
        .map_err(|_| PkiError::Random)?;
    if s[1..].iter().all(|&b| b == 0) {
        s[16] = 1;
    }
    Ok(s)
}

/// A leaf's positive 128-bit serial: the issuance time in milliseconds since 1970 (6 bytes,
/// big-endian) and then 10 random bytes (80 bits from the system's CSPRNG, more than the 64 the
/// CA/Browser Forum baseline requires), behind a zero byte.
///
/// Time-ordered serials are appended at the end of the serial indexes (the certificates' and
/// the log's) instead of at random places: a batch of certificates dirties a few index pages
/// rather than one per certificate, which was most of the database's work per issuance.
fn leaf_serial(now: OffsetDateTime) -> Result<[u8; 17], PkiError> {
    let mut s = [0u8; 17];
    let millis = (now.unix_timestamp_nanos() / 1_000_000).clamp(1, (1 << 48) - 1) as u64;
    s[1..7].copy_from_slice(&millis.to_be_bytes()[2..]);
    ring::rand::SystemRandom::new()
        .fill(&mut s[7..])
        .map_err(|_| PkiError::Random)?;
    Ok(s)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    &b[b.iter().take_while(|&&x| x == 0).count()..]
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// PEM of one DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::check_spki_der;
    use identity::profile::check_leaf;
    use rcgen::PublicKeyData;

    fn test_ca() -> Ca {
        let now = OffsetDateTime::now_utc();
        let h = new_hierarchy("example.org", now, None).unwrap();
        let key = KeyPair::try_from(h.intermediate_key_pkcs8.unwrap().as_slice()).unwrap();
        Ca::new(
            vec![h.root_der.into()],
            h.intermediate_der.into(),
            CaSigner::software(key),
            Policy::default(),
        )
        .unwrap()
    }

    #[test]
    fn leaves_follow_the_profile_and_verify() {
        let ca = test_ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let checked = check_spki_der(&key.subject_public_key_info()).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/node/n1").unwrap();
        let dns = vec!["n1.example.org".to_string()];
        let ips = vec!["127.0.0.1".parse().unwrap()];
        let now = OffsetDateTime::now_utc();
        let subj = LeafSubject {
            spiffe_id: &id,
            dns_names: &dns,
            ip_addresses: &ips,
            validity: Duration::days(30),
        };
        let leaf = ca.issue_leaf(&subj, &checked, now).unwrap();
        let info = check_leaf(&leaf.der).unwrap();
        assert_eq!(info.spiffe_id, id);
        assert_eq!(info.serial_hex, leaf.serial_hex);
        assert_eq!(info.not_after - info.not_before, 30 * 86400 + 60);
        // The SPKI in the certificate is exactly the requested key (rcgen#448 guard: P-384).
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
        assert_eq!(parsed.public_key().raw, key.subject_public_key_info().as_slice());
        let bundle = identity::verify::TrustBundle::from_der(ca.roots.clone()).unwrap();
        let chain = [leaf.der.clone().into(), ca.intermediate.clone()];
        bundle.verify_client(&chain, now.unix_timestamp() as u64, &[]).unwrap();
    }

    #[test]
    fn leaf_serials_are_time_ordered_positive_and_carry_80_random_bits() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = leaf_serial(t).unwrap();
        let b = leaf_serial(t + Duration::milliseconds(1)).unwrap();
        let c = leaf_serial(t).unwrap();
        // Positive, 16 significant bytes, so the lowercase hex of every serial has 32 digits and
        // text order is time order.
        for s in [a, b, c] {
            assert_eq!(s[0], 0);
            assert!(s[1] != 0 && s[1] < 0x80);
            assert_eq!(identity::profile::hex_lower(strip_zeros(&s)).len(), 32);
        }
        assert_eq!(&a[1..7], &c[1..7], "the same millisecond");
        assert_eq!(
            u64::from_be_bytes([0, 0, a[1], a[2], a[3], a[4], a[5], a[6]]),
            1_800_000_000_000
        );
        assert!(identity::profile::hex_lower(&a[1..]) < identity::profile::hex_lower(&b[1..]));
        // The random part differs between two serials of the same millisecond.
        assert_ne!(&a[7..], &c[7..]);
    }

    #[test]
    fn the_batch_verifier_agrees_with_webpki() {
        let ca = test_ca();
        let other = test_ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let checked = check_spki_der(&key.subject_public_key_info()).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/participant/p").unwrap();
        let subj = LeafSubject {
            spiffe_id: &id,
            dns_names: &[],
            ip_addresses: &[],
            validity: Duration::days(1),
        };
        let now = OffsetDateTime::now_utc();
        let at = now.unix_timestamp() + 60;
        let bundle = identity::verify::TrustBundle::from_der(ca.roots.clone()).unwrap();
        let chain = [ca.intermediate.clone()];
        let mut v = identity::verify::LeafVerifier::new(&bundle, &chain).unwrap();
        // The first leaf goes through webpki, the rest through the fast path: same answers.
        for _ in 0..3 {
            let leaf = ca.issue_leaf(&subj, &checked, now).unwrap();
            let fast = v.verify(&leaf.der, at).unwrap();
            let full = bundle
                .verify_client(&[leaf.der.clone().into(), ca.intermediate.clone()], at as u64, &[])
                .unwrap();
            assert_eq!(fast, full);
        }
        let leaf = ca.issue_leaf(&subj, &checked, now).unwrap();
        let mut forged = leaf.der.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(v.verify(&forged, at).is_err(), "a bad signature must be refused");
        assert!(
            v.verify(&leaf.der, at + 3 * 86400).is_err(),
            "an expired leaf must be refused"
        );
        let foreign = other.issue_leaf(&subj, &checked, now).unwrap();
        assert!(v.verify(&foreign.der, at).is_err(), "another CA's leaf must be refused");
        // A leaf from another hierarchy whose intermediate is offered is still refused (webpki).
        let chain2 = [ca.intermediate.clone(), other.intermediate.clone()];
        let mut v2 = identity::verify::LeafVerifier::new(&bundle, &chain2).unwrap();
        assert!(v2.verify(&foreign.der, at).is_err());
        assert!(
            v2.verify(&foreign.der, at).is_err(),
            "a failed first check must not mark the issuer verified"
        );
        assert!(v2.verify(b"not a certificate", at).is_err());
    }

    #[test]
    fn serials_are_random_positive_and_unique() {
        let ca = test_ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let checked = check_spki_der(&key.subject_public_key_info()).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/participant/p").unwrap();
        let subj = LeafSubject {
            spiffe_id: &id,
            dns_names: &[],
            ip_addresses: &[],
            validity: Duration::days(1),
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            // Same key every time: rcgen's default would derive the same serial from it.
            let leaf = ca.issue_leaf(&subj, &checked, OffsetDateTime::now_utc()).unwrap();
            assert!(leaf.serial_hex.len() >= 20);
            assert!(seen.insert(leaf.serial_hex));
        }
    }

    #[test]
    fn crl_lists_revoked_serials() {
        let ca = test_ca();
        let now = OffsetDateTime::now_utc();
        let entry = RevokedEntry {
            serial_hex: "0badc0de".into(),
            revoked_at: now.unix_timestamp(),
            reason: Reason::KeyCompromise,
        };
        let der = ca.sign_crl(7, now, &[entry]).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec!["0badc0de".to_string()]);
        let (_, inter) = x509_parser::parse_x509_certificate(&ca.intermediate).unwrap();
        crl.verify_signature(inter.public_key()).unwrap();
    }

    #[test]
    fn reasons_parse_by_rfc5280_name() {
        assert_eq!(Reason::parse("keyCompromise"), Some(Reason::KeyCompromise));
        assert_eq!(Reason::parse("KEYCOMPROMISE"), Some(Reason::KeyCompromise));
        assert_eq!(Reason::parse("certificateHold"), None);
        assert_eq!(Reason::parse("removeFromCRL"), None);
        for (r, n) in Reason::ALL {
            assert_eq!(Reason::parse(n), Some(r));
        }
    }
}
