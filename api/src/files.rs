//! Key generation, CSRs, credential files, and the one durable file write.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::CertificateParams;
pub use rcgen::KeyPair;

/// Key types the client can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Signs `message` with `key` (ECDSA: DER with SHA-256 for P-256, SHA-384 for P-384;
/// Ed25519), as transactions and usage reports are signed.
pub fn sign(key: &KeyPair, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
    rcgen::SigningKey::sign(key, message)
}

/// A PEM CSR for `key`. The CA takes only the public key from it.
pub fn csr_pem(key: &KeyPair) -> Result<String, rcgen::Error> {
    CertificateParams::default().serialize_request(key)?.pem()
}

/// Writes a file durably and atomically with the given mode: the data goes to a temporary file
/// beside the target, which is fsynced, renamed over the target, and then the directory is
/// fsynced so that the rename itself survives a power cut. A reader sees the old file or the new
/// one, never a mix; once this returns, the new one is on disk.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = temporary_beside(path);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("writing {}: {e}", path.display()),
        ));
    }
    sync_dir(
        path.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Fsyncs a directory, so that the entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| std::io::Error::new(e.kind(), format!("syncing the directory {}: {e}", dir.display())))
}

/// `<name>.tmp` in the same directory (so that the rename stays within one file system).
fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_file_replaces_with_mode_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("bsn-api-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key.pem");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_file_into_a_missing_directory_says_which_file() {
        let e = write_file(Path::new("/nonexistent-bsn/dir/cert.pem"), b"x", 0o644).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-bsn/dir/cert.pem"), "{e}");
    }
}
