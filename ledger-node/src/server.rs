//! The mTLS gateway's transport: rustls with a client-certificate verifier that adds the CA's
//! revocations and the BSN leaf profile to webpki's chain check, no session resumption (no
//! tickets, no session cache: every connection is a full handshake that sees the current
//! revocation set), and the admission of connections to `bsn_transport`'s accept loop, which
//! cuts a connection as soon as its client certificate is revoked or expires.

use std::sync::Arc;
use std::time::Duration;

use rustls::CertificateError;
use rustls_pki_types::CertificateDer;

use crate::directory::Directory;

/// The authenticated client of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its identity id.
    pub id: String,
    /// Participant, city node or orderer.
    pub kind: identity::IdentityKind,
    /// Its certificate's serial, lowercase hex.
    pub serial: String,
    /// End of its certificate's validity, Unix seconds.
    pub not_after: i64,
}

/// What the node asks of every client leaf (and of every peer's server leaf, with the kind
/// too): this trust domain, not revoked.
pub fn leaf_policy(directory: Arc<Directory>, trust_domain: &str) -> bsn_transport::verify::LeafPolicy {
    let trust_domain = trust_domain.to_string();
    Arc::new(move |leaf: &identity::profile::Leaf| {
        if leaf.spiffe_id.trust_domain.as_str() != trust_domain {
            return Err(CertificateError::UnknownIssuer);
        }
        if directory.is_revoked(&leaf.serial_hex) {
            return Err(CertificateError::Revoked);
        }
        Ok(())
    })
}

/// The server's TLS configuration.
pub fn tls_config(
    bundle: &identity::verify::TrustBundle,
    credential: Arc<crate::credential::Credential>,
    directory: Arc<Directory>,
    trust_domain: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    // A client that sends only its leaf is verified with this node's own intermediates and
    // those the CA announced (a rotation's new one verifies before this node's certificate is
    // renewed under it).
    let own: Vec<CertificateDer<'static>> = credential.chain().into_iter().skip(1).collect();
    let announced = directory.clone();
    let provider = bsn_transport::server_crypto();
    let verifier = bsn_transport::verify::ClientCerts::builder(bundle.roots(), provider.clone())
        .policy(leaf_policy(directory, trust_domain))
        .fallback_intermediates(Arc::new(move || {
            let mut all = own.clone();
            all.extend(announced.intermediates());
            all
        }))
        .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(credential);
    // Every connection is a full handshake checked against the current revocation set: a
    // resumed session would skip the client-certificate check.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    Ok(cfg)
}

fn peer_of(certs: Option<&[CertificateDer<'static>]>) -> Option<Peer> {
    let leaf = identity::profile::check_leaf(certs?.first()?).ok()?;
    Some(Peer {
        id: leaf.spiffe_id.id.as_str().to_string(),
        kind: leaf.spiffe_id.kind,
        serial: leaf.serial_hex,
        not_after: leaf.not_after,
    })
}

/// Admits a handshake-verified connection: requests carry its [`Peer`]; node identities use
/// the reserved capacity (Raft and block transfer keep working while the public gateway is
/// full); the connection is cut as soon as its certificate is revoked or expires.
pub struct Admission {
    /// Revocations, as the CA's feed reports them.
    pub directory: Arc<Directory>,
}

impl bsn_transport::Admit for Admission {
    type Ext = Peer;
    fn admit(
        &self,
        _remote: std::net::SocketAddr,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Option<bsn_transport::Admitted<Peer>> {
        let peer = peer_of(certs)?;
        let class = if peer.kind.is_network_node() {
            bsn_transport::Class::Reserved
        } else {
            bsn_transport::Class::Public
        };
        let serial = peer.serial.clone();
        let directory = self.directory.clone();
        let expiry = Duration::from_secs((peer.not_after - crate::clock::now_ms() / 1000).max(0) as u64);
        let cut = async move {
            let mut revocations = directory.revocations();
            let expired = tokio::time::sleep(expiry);
            tokio::pin!(expired);
            loop {
                tokio::select! {
                    r = revocations.changed() => {
                        if r.is_err() || directory.is_revoked(&serial) {
                            return "client certificate revoked";
                        }
                    }
                    _ = &mut expired => return "client certificate expired",
                }
            }
        };
        Some(bsn_transport::Admitted {
            class,
            ext: peer,
            cut: Some(Box::pin(cut)),
        })
    }
}
