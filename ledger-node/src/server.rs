//! The mTLS gateway's transport: rustls with a client-certificate verifier that adds the CA's
//! revocations and the BSN leaf profile to webpki's chain check, no session resumption (no
//! tickets, no session cache: every connection is a full handshake that sees the current
//! revocation set), and an accept loop that cuts a connection as soon as its client certificate
//! is revoked or expires.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::directory::Directory;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 8192;
/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The authenticated client of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its identity id.
    pub id: String,
    /// `participant` or `node`.
    pub kind: &'static str,
    /// Its certificate's serial, lowercase hex.
    pub serial: String,
    /// End of its certificate's validity, Unix seconds.
    pub not_after: i64,
}

/// Webpki's client verification plus revocation and the leaf profile.
struct Verifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The CA's issuing intermediates, for clients that send only their leaf (as `openssl
    /// s_client -cert` does).
    intermediates: Vec<CertificateDer<'static>>,
    directory: Arc<Directory>,
    trust_domain: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
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
        let leaf = identity::profile::check_leaf(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e)))))?;
        if leaf.spiffe_id.trust_domain.as_str() != self.trust_domain {
            return Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        if self.directory.is_revoked(&leaf.serial_hex) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        let intermediates = if intermediates.is_empty() {
            &self.intermediates[..]
        } else {
            intermediates
        };
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server's TLS configuration.
pub fn tls_config(
    bundle: &identity::verify::TrustBundle,
    credential: Arc<crate::credential::Credential>,
    directory: Arc<Directory>,
    trust_domain: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let chain = credential.chain();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in bundle.roots() {
        roots.add(r.clone())?;
    }
    let inner =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let verifier = Arc::new(Verifier {
        inner,
        intermediates: chain.iter().skip(1).cloned().collect(),
        directory,
        trust_domain: trust_domain.to_string(),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(credential);
    // Every connection is a full handshake checked against the current revocation set: a
    // resumed session would skip the client-certificate check.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn peer_of(certs: Option<&[CertificateDer<'static>]>) -> Option<Peer> {
    let leaf = identity::profile::check_leaf(certs?.first()?).ok()?;
    Some(Peer {
        id: leaf.spiffe_id.id.as_str().to_string(),
        kind: leaf.spiffe_id.kind.as_str(),
        serial: leaf.serial_hex,
        not_after: leaf.not_after,
    })
}

/// Serves `app` on `listener` with `tls` until `shutdown` fires. Each request carries the
/// connection's [`Peer`] as an extension.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    directory: Arc<Directory>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(tcp); // over the connection limit: refuse at once rather than queue
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let directory = directory.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "handshake refused");
                    crate::metrics::HANDSHAKES_REFUSED.inc();
                    return;
                }
                Err(_) => return,
            };
            let Some(peer) = peer_of(tls.get_ref().1.peer_certificates()) else {
                return;
            };
            crate::metrics::HANDSHAKES.inc();
            let serial = peer.serial.clone();
            let expiry = Duration::from_secs((peer.not_after - crate::api::now_ms() / 1000).max(0) as u64);
            let svc = TowerToHyperService::new(app.layer(axum::Extension(peer)));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let mut revocations = directory.revocations();
            let expired = tokio::time::sleep(expiry);
            tokio::pin!(expired);
            loop {
                tokio::select! {
                    _ = &mut conn => return,
                    r = revocations.changed() => {
                        if r.is_err() || directory.is_revoked(&serial) {
                            tracing::info!(serial, "client certificate revoked: closing its connection");
                            crate::metrics::CONNECTIONS_CUT.inc();
                            return;
                        }
                    }
                    _ = &mut expired => {
                        tracing::info!(serial, "client certificate expired: closing its connection");
                        return;
                    }
                    _ = shutdown.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
                        return;
                    }
                }
            }
        });
    }
}
