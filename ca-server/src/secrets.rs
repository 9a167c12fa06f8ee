//! Enrollment secrets: generated at random, stored as argon2id hashes (OWASP parameters, the
//! argon2 crate's defaults), verified in constant time on a blocking thread, with bounded
//! concurrency so a flood of attempts cannot exhaust CPU or memory (each hash holds 19 MiB).
//!
//! The hashing slots are shared **fairly between sources** (a client address, or an
//! authenticated identity): waiting hashes queue per source and are served round-robin, and the
//! whole queue is bounded by [`MAX_WAITING`]. When it is full, a newcomer takes the place of the
//! newest waiter of the source with the longest queue (that waiter is told "busy"), so a flood
//! can fill the queue but never keep another source out of it. A flood of wrong secrets from
//! one address therefore delays another address's enrollment by at most one hash per slot,
//! however deep the flood.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use ring::rand::SecureRandom;
use tokio::sync::oneshot;

/// Requests waiting for a hashing slot at most.
pub const MAX_WAITING: usize = 256;

/// On whose behalf a hash runs: the unit of fairness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// An unauthenticated client, by address (IPv6 by its /64, which one host usually holds).
    Address(IpAddr),
    /// An authenticated identity (a registrar making secrets).
    Identity(String),
}

impl Source {
    /// The source for a client address (an IPv6 client by its /64).
    pub fn address(ip: IpAddr) -> Self {
        Source::Address(bsn_transport::address_key(ip))
    }
}

/// The hasher: a fair scheduler of hashing slots and a bound on waiting requests.
#[derive(Clone)]
pub struct Hasher {
    slots: Arc<Mutex<Slots>>,
    dummy: Arc<String>,
}

struct Slots {
    free: usize,
    waiting: usize,
    queues: HashMap<Source, VecDeque<oneshot::Sender<()>>>,
    /// Sources with someone waiting, in round-robin order.
    turn: VecDeque<Source>,
}

/// A running hash's slot; dropping it hands the slot to the next source in turn.
struct Slot(Arc<Mutex<Slots>>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(source) = s.turn.pop_front() {
            let Some(q) = s.queues.get_mut(&source) else { continue };
            let next = q.pop_front();
            let empty = q.is_empty();
            if empty {
                s.queues.remove(&source);
            } else {
                s.turn.push_back(source);
            }
            if let Some(tx) = next {
                s.waiting -= 1;
                if tx.send(()).is_ok() {
                    return; // the slot moves on without being freed
                }
            }
        }
        s.free += 1;
    }
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
            slots: Arc::new(Mutex::new(Slots {
                free: parallel.max(1),
                waiting: 0,
                queues: HashMap::new(),
                turn: VecDeque::new(),
            })),
            dummy: Arc::new(dummy),
        }
    }

    async fn slot(&self, source: &Source) -> Result<Slot, Busy> {
        let rx = {
            let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if s.free > 0 && s.waiting == 0 {
                s.free -= 1;
                return Ok(Slot(self.slots.clone()));
            }
            let queued = s.queues.get(source).map_or(0, VecDeque::len);
            if s.waiting >= MAX_WAITING {
                // Longest queue drop: the source with the most waiting gives up its newest.
                let longest = s
                    .queues
                    .iter()
                    .max_by_key(|(_, q)| q.len())
                    .map(|(k, q)| (k.clone(), q.len()));
                match longest {
                    Some((victim, len)) if len > queued + 1 => {
                        if let Some(q) = s.queues.get_mut(&victim) {
                            q.pop_back(); // its sender drops: that waiter gets "busy"
                        }
                        s.waiting -= 1;
                    }
                    _ => return Err(Busy),
                }
            }
            let (tx, rx) = oneshot::channel();
            if queued == 0 {
                s.turn.push_back(source.clone());
            }
            s.queues.entry(source.clone()).or_default().push_back(tx);
            s.waiting += 1;
            rx
        };
        // A waiter that gives up (its request was dropped) is skipped when its turn comes.
        rx.await.map_err(|_| Busy)?;
        Ok(Slot(self.slots.clone()))
    }

    async fn run<T: Send + 'static>(&self, source: &Source, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let _slot = self.slot(source).await?;
        tokio::task::spawn_blocking(f).await.map_err(|_| Busy)
    }

    /// Hashes a secret.
    pub async fn hash(&self, source: &Source, secret: String) -> Result<String, Busy> {
        self.run(source, move || hash_blocking(&secret)).await
    }

    /// Verifies a secret against a stored hash. With no hash (unknown identity, or none issued)
    /// it verifies against a dummy hash and returns false, so timing does not tell the two apart.
    pub async fn verify(&self, source: &Source, secret: String, hash: Option<String>) -> Result<bool, Busy> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| (*self.dummy).clone());
        let ok = self
            .run(source, move || {
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

    /// One source flooding the hasher gets no more than its turn: when the queue is full, another
    /// source still gets in (the flood's newest waiter is dropped), and its hash runs after at
    /// most one of the flood's per slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_are_shared_round_robin_between_sources() {
        let h = Hasher::new(1);
        let flood = Source::address("192.0.2.1".parse().unwrap());
        let other = Source::address("192.0.2.2".parse().unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = h.slot(&flood).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..MAX_WAITING {
            let (hc, order, flood) = (h.clone(), order.clone(), flood.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok(_s) = hc.slot(&flood).await {
                    order.lock().unwrap().push(format!("flood{i}"));
                    true
                } else {
                    false
                }
            }));
            while h.slots.lock().unwrap().waiting < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert!(
            h.slot(&flood).await.is_err(),
            "a full queue refuses the longest queue's source"
        );
        let (h2, order2) = (h.clone(), order.clone());
        let legit = tokio::spawn(async move {
            let _s = h2.slot(&other).await.expect("another source always gets in");
            order2.lock().unwrap().push("other".to_string());
        });
        while h.slots.lock().unwrap().queues.len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(h.slots.lock().unwrap().waiting, MAX_WAITING);
        drop(first);
        legit.await.unwrap();
        let mut dropped = 0;
        for t in tasks {
            dropped += usize::from(!t.await.unwrap());
        }
        assert_eq!(dropped, 1, "exactly the flood's newest waiter was dropped");
        let order = order.lock().unwrap().clone();
        let pos = order.iter().position(|o| o == "other").unwrap();
        assert!(
            pos <= 1,
            "the other source waited behind at most one flood hash: {:?}",
            &order[..4]
        );
        assert_eq!(h.slots.lock().unwrap().free, 1, "every slot came back");
    }

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a = Source::address("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::address("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Source::address("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Source::address("::ffff:192.0.2.1".parse().unwrap()),
            Source::address("192.0.2.1".parse().unwrap())
        );
    }

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
