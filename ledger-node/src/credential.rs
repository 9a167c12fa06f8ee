//! The node's own certificate and key, shared by every TLS configuration that presents them
//! (the gateway's server side, the client side towards peers and towards the CA), and renewed
//! over mTLS with the same key when a third of its lifetime is left. A renewal swaps the
//! certificate in place: new handshakes present the new one, open connections are untouched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The node's credential.
pub struct Credential {
    dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("dir", &self.dir).finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(chain: Vec<CertificateDer<'static>>, key: &PrivateKeyDer<'static>) -> anyhow::Result<CertifiedKey> {
    let signer = provider().key_provider.load_private_key(key.clone_key())?;
    Ok(CertifiedKey::new(chain, signer))
}

impl Credential {
    /// Loads `cert.pem` (leaf then chain) and `key.pem` from the node's data directory.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<Self>> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("cert.pem"))?.collect::<Result<_, _>>()?;
        anyhow::ensure!(
            !chain.is_empty(),
            "{} holds no certificate",
            dir.join("cert.pem").display()
        );
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(certified(chain, &key)?)),
        }))
    }

    /// The certificate chain presented now (leaf first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.read().expect("credential").cert.clone()
    }

    /// Validity of the current leaf, Unix seconds.
    fn validity(&self) -> Option<(i64, i64)> {
        let leaf = identity::profile::check_leaf(self.chain().first()?).ok()?;
        Some((leaf.not_before, leaf.not_after))
    }

    /// A client configuration that trusts `bundle` and presents this credential.
    pub fn client_config(
        self: &Arc<Self>,
        bundle: &identity::verify::TrustBundle,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for r in bundle.roots() {
            roots.add(r.clone())?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Renews the certificate at the CA (same key) and swaps it in.
    pub async fn renew(&self, ca: &bsn_api::client::Api) -> anyhow::Result<()> {
        let key_pem = std::fs::read_to_string(self.dir.join("key.pem"))?;
        let key = bsn_api::files::load_key(&key_pem)?;
        let csr = bsn_api::files::csr_pem(&key)?;
        let v = ca
            .post("/api/v1/renew", &serde_json::json!({ "csr": csr }))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (leaf, chain) = (
            v["certificate"].as_str().unwrap_or_default(),
            v["chain"].as_str().unwrap_or_default(),
        );
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(format!("{leaf}{chain}").as_bytes()).collect::<Result<_, _>>()?;
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let new = certified(certs, &key_der)?;
        bsn_api::files::write_credentials(&self.dir, None, leaf, chain)?;
        *self.current.write().expect("credential") = Arc::new(new);
        tracing::info!(
            serial = v["serial"].as_str(),
            not_after = v["not_after"].as_str(),
            "node certificate renewed"
        );
        Ok(())
    }

    /// Renews whenever a third of the certificate's lifetime is left; retries every minute on failure.
    pub async fn keep_fresh(self: Arc<Self>, ca: bsn_api::client::Api) {
        loop {
            let now = crate::clock::now_ms() / 1000;
            let wait = match self.validity() {
                Some((nb, na)) => (na - (na - nb) / 3 - now).max(0),
                None => 60,
            };
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            if let Err(e) = self.renew(&ca).await {
                tracing::warn!(error = %e, "node certificate renewal failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

impl ResolvesServerCert for Credential {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("credential").clone())
    }
}

impl ResolvesClientCert for Credential {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("credential").clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
