//! Key generation, CSRs and credential files.

use std::io::Write;
use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

/// Key types `bsn` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (default).
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

/// Generates a key pair.
pub fn generate_key(t: KeyType) -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(match t {
        KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    })
}

/// Loads a PKCS#8 PEM key written by `bsn` (or `openssl genpkey`).
pub fn load_key(pem: &str) -> Result<KeyPair, rcgen::Error> {
    KeyPair::from_pem(pem)
}

/// A PEM CSR for `key`. The CA takes only the public key from it.
pub fn csr_pem(key: &KeyPair) -> Result<String, rcgen::Error> {
    CertificateParams::default().serialize_request(key)?.pem()
}

/// Writes a file atomically with the given mode.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `key.pem` (0600), `cert.pem` (leaf then chain, ready for `curl --cert`) and
/// `chain.pem` (the intermediates) into `dir`. The key is written only when given.
pub fn write_credentials(dir: &Path, key_pem: Option<&str>, leaf_pem: &str, chain_pem: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Some(k) = key_pem {
        write_file(&dir.join("key.pem"), k.as_bytes(), 0o600)?;
    }
    write_file(
        &dir.join("cert.pem"),
        format!("{leaf_pem}{chain_pem}").as_bytes(),
        0o644,
    )?;
    write_file(&dir.join("chain.pem"), chain_pem.as_bytes(), 0o644)
}
