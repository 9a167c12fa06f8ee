//! The one certificate verifier of both servers and of node-to-node clients: webpki's chain
//! check with the network's roots, plus the BSN leaf profile and a caller's policy on the leaf
//! (trust domain, identity kind, revocation), checked before the chain.
//!
//! - [`ClientCerts`]: a server's check of client certificates. Options: client certificates
//!   optional (the CA: public routes and the portal take none), fallback intermediates for
//!   clients that send only their leaf (`openssl s_client -cert`), and expired leaves let
//!   through to the application (the CA answers them with a problem document telling the user
//!   to enroll again, rather than a bare TLS alert; the chain must still verify at the leaf's own
//!   notAfter).
//! - [`ServerCerts`]: a client's check of a server's certificate (a node reaching its peers).
//!
//! Known intermediates: once a client chain of one intermediate has verified in full (leaf to
//! intermediate to root), later leaves under that same intermediate (the same DER bytes), while
//! it is in date, are checked against it as their anchor: one signature per handshake instead of
//! two, the intermediate's own checks (signature by the root, CA constraints, key usage) having
//! passed on those very bytes. A leaf that fails this short check gets the full check (and its
//! error). At most [`KNOWN_INTERMEDIATES`] are kept per verifier, which lives as long as its
//! roots; none is kept when a root carries name constraints (an anchor's constraints would not
//! apply to the short check).
//!
//! Non-features: no OCSP (revocation comes from the CA's change feed, through the policy), no
//! name constraints beyond webpki's.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use identity::profile::{Leaf, check_leaf};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a verifier asks of a leaf that passed the profile, before the chain is checked.
pub type LeafPolicy = Arc<dyn Fn(&Leaf) -> Result<(), CertificateError> + Send + Sync>;

/// A root store from DER roots.
fn roots(roots: &[CertificateDer<'static>]) -> Result<Arc<rustls::RootCertStore>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// With a policy: parses the leaf against the profile and applies the policy. Without one the
/// leaf is left to webpki alone (so a foreign certificate gets webpki's own error).
fn check(end_entity: &CertificateDer<'_>, policy: Option<&LeafPolicy>) -> Result<Option<Leaf>, rustls::Error> {
    let Some(p) = policy else { return Ok(None) };
    let leaf = check_leaf(end_entity)
        .map_err(|e| rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e)))))?;
    p(&leaf).map_err(rustls::Error::InvalidCertificate)?;
    Ok(Some(leaf))
}

/// The most intermediates a [`ClientCerts`] remembers as verified.
pub const KNOWN_INTERMEDIATES: usize = 16;

/// An intermediate that verified to the roots, as the anchor of later leaves.
struct Known {
    der: CertificateDer<'static>,
    anchor: rustls_pki_types::TrustAnchor<'static>,
    not_before: u64,
    not_after: u64,
}

/// The intermediates to verify with when a client sends only its leaf, asked for at each such
/// handshake (a node learns new ones from the CA while it runs).
pub type Fallback = Arc<dyn Fn() -> Vec<CertificateDer<'static>> + Send + Sync>;

/// A server's verifier of client certificates.
pub struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Option<LeafPolicy>,
    intermediates: Fallback,
    expired_to_application: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    /// `None` when a root has name constraints.
    known: Option<RwLock<Vec<Known>>>,
}

impl std::fmt::Debug for ClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCerts")
            .field("expired_to_application", &self.expired_to_application)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ClientCerts`].
pub struct ClientCertsBuilder {
    roots: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    optional: bool,
    policy: Option<LeafPolicy>,
    intermediates: Fallback,
    expired_to_application: bool,
}

impl ClientCerts {
    /// A verifier trusting `roots`; client certificates are mandatory unless
    /// [`ClientCertsBuilder::optional`].
    pub fn builder(roots: &[CertificateDer<'static>], provider: Arc<CryptoProvider>) -> ClientCertsBuilder {
        ClientCertsBuilder {
            roots: roots.to_vec(),
            provider,
            optional: false,
            policy: None,
            intermediates: Arc::new(Vec::new),
            expired_to_application: false,
        }
    }
}

impl ClientCertsBuilder {
    /// Connections without a client certificate are accepted (the application decides).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Checks each leaf with `policy` (after the profile, before the chain).
    pub fn policy(mut self, policy: LeafPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Intermediates to verify with when a client sends only its leaf, asked for at each
    /// handshake that needs them.
    pub fn fallback_intermediates(mut self, intermediates: Fallback) -> Self {
        self.intermediates = intermediates;
        self
    }

    /// Lets an expired leaf through when its chain verifies at the leaf's own notAfter.
    pub fn expired_to_application(mut self) -> Self {
        self.expired_to_application = true;
        self
    }

    /// The verifier.
    pub fn build(self) -> Result<Arc<ClientCerts>, rustls::Error> {
        let algorithms = self.provider.signature_verification_algorithms;
        let mut b = WebPkiClientVerifier::builder_with_provider(roots(&self.roots)?, self.provider);
        if self.optional {
            b = b.allow_unauthenticated();
        }
        let inner = b.build().map_err(|e| rustls::Error::General(e.to_string()))?;
        let constrained = self
            .roots
            .iter()
            .any(|r| webpki::anchor_from_trusted_cert(r).map_or(true, |a| a.name_constraints.is_some()));
        Ok(Arc::new(ClientCerts {
            inner,
            policy: self.policy,
            intermediates: self.intermediates,
            expired_to_application: self.expired_to_application,
            algorithms,
            known: (!constrained).then(|| RwLock::new(Vec::new())),
        }))
    }
}

impl ClientCerts {
    /// Whether `leaf` verifies under `intermediate`, a known intermediate in date at `now`.
    fn verifies_under_known(
        &self,
        leaf: &CertificateDer<'_>,
        intermediate: &CertificateDer<'_>,
        now: UnixTime,
    ) -> bool {
        let Some(known) = &self.known else { return false };
        let known = known.read().unwrap_or_else(|e| e.into_inner());
        let Some(k) = known.iter().find(|k| k.der.as_ref() == intermediate.as_ref()) else {
            return false;
        };
        let t = now.as_secs();
        t >= k.not_before && t <= k.not_after && self.verifies_under(leaf, &k.anchor, now)
    }

    /// Whether `leaf` verifies for client authentication with `anchor` as its issuer.
    fn verifies_under(
        &self,
        leaf: &CertificateDer<'_>,
        anchor: &rustls_pki_types::TrustAnchor<'_>,
        now: UnixTime,
    ) -> bool {
        let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        ee.verify_for_usage(
            self.algorithms.all,
            std::slice::from_ref(anchor),
            &[],
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
    }

    /// Remembers `intermediate` after `leaf` has verified in full with it as its only
    /// intermediate, if the leaf was signed by it (the full check may also have found the leaf
    /// signed by a root directly; then nothing is learnt about the intermediate).
    fn remember(&self, leaf: &CertificateDer<'_>, intermediate: &CertificateDer<'_>, now: UnixTime) {
        let Some(known) = &self.known else { return };
        if known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|k| k.der.as_ref() == intermediate.as_ref())
        {
            return;
        }
        let der = CertificateDer::from(intermediate.as_ref().to_vec());
        let Ok(anchor) = webpki::anchor_from_trusted_cert(&der).map(|a| a.to_owned()) else {
            return;
        };
        if !self.verifies_under(leaf, &anchor, now) {
            return;
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
            return;
        };
        let validity = cert.validity();
        let (Ok(not_before), Ok(not_after)) = (
            u64::try_from(validity.not_before.timestamp()),
            u64::try_from(validity.not_after.timestamp()),
        ) else {
            return;
        };
        let mut known = known.write().unwrap_or_else(|e| e.into_inner());
        if known.len() < KNOWN_INTERMEDIATES && !known.iter().any(|k| k.der == der) {
            known.push(Known {
                der,
                anchor,
                not_before,
                not_after,
            });
        }
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let leaf = check(end_entity, self.policy.as_ref())?;
        let fallback;
        let intermediates = if intermediates.is_empty() {
            fallback = (self.intermediates)();
            &fallback[..]
        } else {
            intermediates
        };
        if let [one] = intermediates
            && self.verifies_under_known(end_entity, one, now)
        {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now);
        if let (Ok(_), [one]) = (&verified, intermediates) {
            self.remember(end_entity, one, now);
        }
        match verified {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) if self.expired_to_application => {
                let not_after = match leaf {
                    Some(l) => l.not_after,
                    None => {
                        check_leaf(end_entity)
                            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
                            .not_after
                    }
                };
                let at = UnixTime::since_unix_epoch(Duration::from_secs(not_after.saturating_sub(1).max(0) as u64));
                self.inner.verify_client_cert(end_entity, intermediates, at)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's verifier of server certificates.
pub struct ServerCerts {
    inner: Arc<WebPkiServerVerifier>,
    policy: Option<LeafPolicy>,
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCerts")
    }
}

impl ServerCerts {
    /// A verifier trusting `roots`, checking each server leaf with `policy`.
    pub fn new(
        roots: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
        policy: Option<LeafPolicy>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let inner = WebPkiServerVerifier::builder_with_provider(self::roots(roots)?, provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Arc::new(Self { inner, policy }))
    }
}

impl ServerCertVerifier for ServerCerts {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check(end_entity, self.policy.as_ref())?;
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn ca_params(name: &str, days: (i64, i64)) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(days.0);
        p.not_after = now + time::Duration::days(days.1);
        p
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "leaf");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key(), issuer).unwrap().der().clone()
    }

    struct Pki {
        root: CertificateDer<'static>,
        root_issuer: Issuer<'static, KeyPair>,
        intermediate: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn pki(intermediate_days: (i64, i64)) -> Pki {
        let root_key = key();
        let root_params = ca_params("root", (-1, 365));
        let root = root_params.self_signed(&root_key).unwrap().der().clone();
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = key();
        let int_params = ca_params("issuing", intermediate_days);
        let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap().der().clone();
        Pki {
            root,
            root_issuer,
            intermediate,
            issuer: Issuer::new(int_params, int_key),
        }
    }

    fn verifier(root: &CertificateDer<'static>) -> Arc<ClientCerts> {
        ClientCerts::builder(
            std::slice::from_ref(root),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    }

    fn known(v: &ClientCerts) -> usize {
        v.known.as_ref().unwrap().read().unwrap().len()
    }

    #[test]
    fn a_leaf_under_a_known_intermediate_is_checked_against_it_alone() {
        let p = pki((-1, 100));
        let v = verifier(&p.root);
        let now = UnixTime::now();
        let ints = [p.intermediate.clone()];
        v.verify_client_cert(&leaf(&p.issuer), &ints, now).unwrap();
        assert_eq!(known(&v), 1, "the intermediate is known after a full check");
        v.verify_client_cert(&leaf(&p.issuer), &ints, now).unwrap();
        assert!(v.verifies_under_known(&leaf(&p.issuer), &p.intermediate, now));
        // An impostor with the same name and another key: refused, and not remembered.
        let impostor = pki((-1, 100));
        let forged = leaf(&impostor.issuer);
        assert!(v.verify_client_cert(&forged, &ints, now).is_err());
        assert!(
            v.verify_client_cert(&forged, std::slice::from_ref(&impostor.intermediate), now)
                .is_err()
        );
        assert_eq!(known(&v), 1);
        // The same intermediate is remembered once.
        v.verify_client_cert(&leaf(&p.issuer), &ints, now).unwrap();
        assert_eq!(known(&v), 1);
    }

    #[test]
    fn an_intermediate_is_learnt_only_from_a_leaf_it_signed() {
        let p = pki((-1, 100));
        let v = verifier(&p.root);
        let now = UnixTime::now();
        // A leaf the root signed itself, sent with a stranger's CA certificate beside it:
        // accepted through the root, and the stranger is not learnt.
        let stranger = pki((-1, 100));
        let direct = leaf(&p.root_issuer);
        v.verify_client_cert(&direct, std::slice::from_ref(&stranger.intermediate), now)
            .unwrap();
        assert_eq!(known(&v), 0);
        assert!(
            v.verify_client_cert(
                &leaf(&stranger.issuer),
                std::slice::from_ref(&stranger.intermediate),
                now
            )
            .is_err()
        );
    }

    #[test]
    fn a_known_intermediate_out_of_date_gets_the_full_check() {
        let p = pki((-1, 100));
        let v = verifier(&p.root);
        let ints = [p.intermediate.clone()];
        v.verify_client_cert(&leaf(&p.issuer), &ints, UnixTime::now()).unwrap();
        assert_eq!(known(&v), 1);
        let later = UnixTime::since_unix_epoch(Duration::from_secs(UnixTime::now().as_secs() + 200 * 86400));
        assert!(!v.verifies_under_known(&leaf(&p.issuer), &p.intermediate, later));
        assert!(v.verify_client_cert(&leaf(&p.issuer), &ints, later).is_err());
    }
}
