//! CA private keys at rest: a key derived from the CA passphrase with argon2id seals the PKCS#8
//! DER with ChaCha20-Poly1305. The file names its KDF parameters, so they can be raised later.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The passphrase `--insecure-dev-passphrase` uses. Anyone can read it here: development only.
pub const DEV_PASSPHRASE: &str = "bsn-insecure-development-passphrase";

/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;

/// Why a key could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Wrong passphrase, or the file was altered.
    #[error("cannot decrypt the CA key: wrong passphrase or the key file was altered")]
    Decrypt,
    /// The file is not a sealed key of a known version.
    #[error("not a sealed CA key file: {0}")]
    Format(String),
    /// The KDF failed (parameters out of range).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    version: u32,
    kdf: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    aead: String,
    nonce: String,
    ciphertext: String,
}

fn derive(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<LessSafeKey, KeystoreError> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    a2.hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| KeystoreError::Kdf("aead key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals `secret` under `passphrase`; `label` (such as `intermediate`) is bound as associated
/// data, so one sealed key cannot be swapped in for another.
pub fn seal(passphrase: &str, label: &str, secret: &[u8]) -> Result<String, KeystoreError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill(&mut salt).map_err(|_| KeystoreError::Kdf("random".into()))?;
    rng.fill(&mut nonce).map_err(|_| KeystoreError::Kdf("random".into()))?;
    let (m, t, p) = (65536, 3, 1);
    let key = derive(passphrase, &salt, m, t, p)?;
    let mut buf = secret.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(label)), &mut buf)
        .map_err(|_| KeystoreError::Kdf("seal".into()))?;
    let sealed = Sealed {
        version: 1,
        kdf: "argon2id".into(),
        m_cost: m,
        t_cost: t,
        p_cost: p,
        salt: B64.encode(salt),
        aead: "chacha20-poly1305".into(),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(buf),
    };
    serde_json::to_string_pretty(&sealed).map_err(|e| KeystoreError::Format(e.to_string()))
}

/// Opens a sealed key.
pub fn open(passphrase: &str, label: &str, sealed: &str) -> Result<Vec<u8>, KeystoreError> {
    let s: Sealed = serde_json::from_str(sealed).map_err(|e| KeystoreError::Format(e.to_string()))?;
    if s.version != 1 || s.kdf != "argon2id" || s.aead != "chacha20-poly1305" {
        return Err(KeystoreError::Format(format!(
            "version {} {}/{}",
            s.version, s.kdf, s.aead
        )));
    }
    let dec = |v: &str| B64.decode(v).map_err(|e| KeystoreError::Format(e.to_string()));
    let salt = dec(&s.salt)?;
    let nonce: [u8; 12] = dec(&s.nonce)?
        .try_into()
        .map_err(|_| KeystoreError::Format("nonce length".into()))?;
    let mut buf = dec(&s.ciphertext)?;
    let key = derive(passphrase, &salt, s.m_cost, s.t_cost, s.p_cost)?;
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(label)), &mut buf)
        .map_err(|_| KeystoreError::Decrypt)?;
    Ok(plain.to_vec())
}

fn aad(label: &str) -> Vec<u8> {
    format!("bsn-ca-key/v1/{label}").into_bytes()
}

/// Runs slow key work (argon2id, key generation, signing) without holding up the async workers.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let sealed = seal("correct horse battery", "intermediate", b"secret key").unwrap();
        assert!(!sealed.contains("secret key"));
        assert_eq!(
            open("correct horse battery", "intermediate", &sealed).unwrap(),
            b"secret key"
        );
        assert!(matches!(
            open("wrong passphrase!", "intermediate", &sealed),
            Err(KeystoreError::Decrypt)
        ));
        assert!(matches!(
            open("correct horse battery", "root", &sealed),
            Err(KeystoreError::Decrypt)
        ));
        let tampered = sealed.replace("\"ciphertext\": \"", "\"ciphertext\": \"AAAA");
        assert!(open("correct horse battery", "intermediate", &tampered).is_err());
    }
}
