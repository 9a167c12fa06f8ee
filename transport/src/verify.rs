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
//! Non-features: no OCSP (revocation comes from the CA's change feed, through the policy), no
//! name constraints beyond webpki's.

use std::sync::Arc;
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

/// A server's verifier of client certificates.
pub struct ClientCerts {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Option<LeafPolicy>,
    intermediates: Vec<CertificateDer<'static>>,
    expired_to_application: bool,
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
    intermediates: Vec<CertificateDer<'static>>,
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
            intermediates: Vec::new(),
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

    /// Intermediates to verify with when a client sends only its leaf.
    pub fn fallback_intermediates(mut self, intermediates: Vec<CertificateDer<'static>>) -> Self {
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
        let mut b = WebPkiClientVerifier::builder_with_provider(roots(&self.roots)?, self.provider);
        if self.optional {
            b = b.allow_unauthenticated();
        }
        let inner = b.build().map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Arc::new(ClientCerts {
            inner,
            policy: self.policy,
            intermediates: self.intermediates,
            expired_to_application: self.expired_to_application,
        }))
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
        let intermediates = if intermediates.is_empty() {
            &self.intermediates[..]
        } else {
            intermediates
        };
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
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
