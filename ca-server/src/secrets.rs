//! Enrollment secrets: generated at random, stored as argon2id hashes (OWASP parameters, the
//! argon2 crate's defaults), verified in constant time on a blocking thread, with bounded
//! concurrency so a flood of attempts cannot exhaust CPU or memory (each hash holds 19 MiB).

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use base64::Engine;
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

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _queued = self.waiting.clone().try_acquire_owned().map_err(|_| Busy)?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
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
                    .map(|h| {
                        argon2::Argon2::default()
                            .verify_password(secret.as_bytes(), &h)
                            .is_ok()
                    })
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

/// A new random secret: 256 bits, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
