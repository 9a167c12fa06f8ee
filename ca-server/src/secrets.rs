//! Enrollment secrets: generated at random, stored as argon2id hashes (OWASP parameters, the
//! argon2 crate's defaults), verified in constant time on a blocking thread, with bounded
//! concurrency so a flood of attempts cannot exhaust CPU or memory (each hash holds 19 MiB).

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use ring::rand::SecureRandom;
use tokio::sync::Semaphore;

/// Hashing is refused with "busy" once this many requests are waiting.
pub const MAX_WAITING: usize = 256;

/// The hasher: a semaphore of running hashes and a bound on waiting ones.
#[derive(Clone)]
pub struct Hasher {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    dummy: Arc<String>,
}

/// The hasher is saturated; the caller should retry later.
#[derive(Debug, thiserror::Error)]
#[error("too many secret checks in progress")]
pub struct Busy;

impl Hasher {
    /// A hasher running at most `parallel` hashes at once.
    pub fn new(parallel: usize) -> Self {
        let dummy = hash_blocking(&new_secret());
        Self {
            running: Arc::new(Semaphore::new(parallel.max(1))),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            dummy: Arc::new(dummy),
        }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let _queued = self.waiting.clone().try_acquire_owned().map_err(|_| Busy)?;
        let _running = self.running.clone().acquire_owned().await.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(f).await.map_err(|_| Busy)
    }

    /// Hashes a secret.
    pub async fn hash(&self, secret: String) -> Result<String, Busy> {
        self.run(move || hash_blocking(&secret)).await
    }

    /// Verifies a secret against a stored hash. With no hash (unknown identity, or none issued)
    /// it verifies against a dummy hash and returns false, so timing does not tell the two apart.
    pub async fn verify(&self, secret: String, hash: Option<String>) -> Result<bool, Busy> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| (*self.dummy).clone());
        let ok = self
            .run(move || {
                PasswordHash::new(&hash)
                    .map(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && known)
    }
}

fn hash_blocking(secret: &str) -> String {
    argon2::Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Length of a secret: 43 characters of 62 give 256 bits.
pub const SECRET_LEN: usize = 43;

/// A new random secret of letters and digits only, so it can never be mistaken for a command
/// line flag (a base64url secret may start with `-`) and survives copy and paste intact.
pub fn new_secret() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(SECRET_LEN);
    while out.len() < SECRET_LEN {
        let mut buf = [0u8; 64];
        rng.fill(&mut buf).expect("system random generator failed");
        // 248 = 4 * 62: rejecting larger bytes keeps every character equally likely.
        for b in buf.into_iter().filter(|&b| b < 248) {
            if out.len() < SECRET_LEN {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: base64url secrets starting with '-' were read as flags by `bsn enroll --secret`.
    #[test]
    fn secrets_are_alphanumeric_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            let s = new_secret();
            assert_eq!(s.len(), SECRET_LEN);
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()), "{s}");
            assert!(seen.insert(s));
        }
    }
}
