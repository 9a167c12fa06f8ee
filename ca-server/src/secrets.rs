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
//! however deep the flood. Sources the caller vouches for as **clean** (no recent failures) are
//! served before the others, so a flood from many addresses, each demoted after its first
//! failure, cannot make a clean client wait behind it.
//!
//! Hashes run on `parallel` dedicated threads, each reusing its allocator arena for argon2id's
//! 19 MiB: memory stays at `parallel` times that, however many hashes run over time.

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

/// The hasher: a fair scheduler of hashing slots, a bound on waiting requests, and the threads
/// that hash.
#[derive(Clone)]
pub struct Hasher {
    slots: Arc<Mutex<Slots>>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    dummy: Arc<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Waiters of one priority class, per source, served round-robin.
#[derive(Default)]
struct Ring {
    queues: HashMap<Source, VecDeque<oneshot::Sender<()>>>,
    /// Sources with someone waiting, in round-robin order.
    turn: VecDeque<Source>,
}

impl Ring {
    /// The next waiter in turn that still waits, if any.
    fn next(&mut self, waiting: &mut usize) -> Option<oneshot::Sender<()>> {
        while let Some(source) = self.turn.pop_front() {
            let Some(q) = self.queues.get_mut(&source) else {
                continue;
            };
            let next = q.pop_front();
            if q.is_empty() {
                self.queues.remove(&source);
            } else {
                self.turn.push_back(source);
            }
            if let Some(tx) = next {
                *waiting -= 1;
                if !tx.is_closed() {
                    return Some(tx);
                }
            }
        }
        None
    }

    fn push(&mut self, source: &Source, tx: oneshot::Sender<()>) {
        let q = self.queues.entry(source.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(source.clone());
        }
        q.push_back(tx);
    }

    /// Drops the newest waiter of the longest queue if it is longer than `than`.
    fn drop_longest(&mut self, than: usize) -> bool {
        let longest = self
            .queues
            .iter()
            .max_by_key(|(_, q)| q.len())
            .map(|(k, q)| (k.clone(), q.len()));
        match longest {
            Some((victim, len)) if len > than => {
                if let Some(q) = self.queues.get_mut(&victim) {
                    q.pop_back(); // its sender drops: that waiter gets "busy"
                }
                true
            }
            _ => false,
        }
    }
}

struct Slots {
    free: usize,
    waiting: usize,
    /// Sources vouched clean, served first.
    clean: Ring,
    /// Everyone else.
    rest: Ring,
}

/// A running hash's slot; dropping it hands the slot to the next waiter in turn.
struct Slot(Arc<Mutex<Slots>>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Slots {
            waiting, clean, rest, ..
        } = &mut *s;
        loop {
            let Some(tx) = clean.next(waiting).or_else(|| rest.next(waiting)) else {
                break;
            };
            if tx.send(()).is_ok() {
                return; // the slot moves on without being freed
            }
        }
        s.free += 1;
    }
}

/// The hasher is saturated; the caller should retry later.
#[derive(Debug, thiserror::Error)]
#[error("too many secret checks in progress")]
pub struct Busy;

/// Who asks for a hash, for the argon2id queue: its source, and whether it has no recent
/// failures (clean sources are served first).
pub struct Asker<'a> {
    /// Address or identity.
    pub source: &'a Source,
    /// No recent failures.
    pub clean: bool,
}

impl Hasher {
    /// A hasher running at most `parallel` hashes at once, on as many threads.
    pub fn new(parallel: usize) -> Self {
        let parallel = parallel.max(1);
        let dummy = hash_blocking(&new_secret());
        // Unbounded, but never longer than `parallel`: only a slot holder sends.
        let (jobs, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..parallel {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2id-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).blocking_recv() {
                            Some(job) => job,
                            None => return, // the hasher is gone
                        };
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self {
            slots: Arc::new(Mutex::new(Slots {
                free: parallel,
                waiting: 0,
                clean: Ring::default(),
                rest: Ring::default(),
            })),
            jobs,
            dummy: Arc::new(dummy),
        }
    }

    async fn slot(&self, source: &Source, clean: bool) -> Result<Slot, Busy> {
        let rx = {
            let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let s = &mut *guard;
            if s.free > 0 && s.waiting == 0 {
                s.free -= 1;
                return Ok(Slot(self.slots.clone()));
            }
            let ring = if clean { &s.clean } else { &s.rest };
            let queued = ring.queues.get(source).map_or(0, VecDeque::len);
            if s.waiting >= MAX_WAITING {
                // The longest queue gives up its newest: of the others first when this one is
                // clean, then of its own class.
                let made_room = (clean && s.rest.drop_longest(0))
                    || if clean {
                        s.clean.drop_longest(queued + 1)
                    } else {
                        s.rest.drop_longest(queued + 1)
                    };
                if !made_room {
                    return Err(Busy);
                }
                s.waiting -= 1;
            }
            let (tx, rx) = oneshot::channel();
            if clean {
                s.clean.push(source, tx);
            } else {
                s.rest.push(source, tx);
            }
            s.waiting += 1;
            rx
        };
        // A waiter that gives up (its request was dropped) is skipped when its turn comes.
        rx.await.map_err(|_| Busy)?;
        Ok(Slot(self.slots.clone()))
    }

    async fn run<T: Send + 'static>(
        &self,
        source: &Source,
        clean: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _slot = self.slot(source, clean).await?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        rx.await.map_err(|_| Busy)
    }

    /// Hashes a secret (`clean`: see [`Hasher::verify`]).
    pub async fn hash(&self, source: &Source, clean: bool, secret: String) -> Result<String, Busy> {
        self.run(source, clean, move || hash_blocking(&secret)).await
    }

    /// Verifies a secret against a stored hash. With no hash (unknown identity, or none issued)
    /// it verifies against a dummy hash and returns false, so timing does not tell the two apart.
    /// `clean` says the source has no recent failures: such sources are served first.
    pub async fn verify(
        &self,
        source: &Source,
        clean: bool,
        secret: String,
        hash: Option<String>,
    ) -> Result<bool, Busy> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| (*self.dummy).clone());
        let ok = self
            .run(source, clean, move || {
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
        let first = h.slot(&flood, false).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..MAX_WAITING {
            let (hc, order, flood) = (h.clone(), order.clone(), flood.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok(_s) = hc.slot(&flood, false).await {
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
            h.slot(&flood, false).await.is_err(),
            "a full queue refuses the longest queue's source"
        );
        let (h2, order2) = (h.clone(), order.clone());
        let legit = tokio::spawn(async move {
            let _s = h2.slot(&other, false).await.expect("another source always gets in");
            order2.lock().unwrap().push("other".to_string());
        });
        while h.slots.lock().unwrap().rest.queues.len() < 2 {
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

    /// A clean source (no recent failures) is served before every waiting failing source.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clean_sources_go_first() {
        let h = Hasher::new(1);
        let first = h.slot(&Source::Identity("x".into()), false).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let (hc, order) = (h.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _s = hc
                    .slot(&Source::address(IpAddr::from([192, 0, 2, i])), false)
                    .await
                    .unwrap();
                order.lock().unwrap().push(format!("flood{i}"));
            }));
            while h.slots.lock().unwrap().waiting < usize::from(i) + 1 {
                tokio::task::yield_now().await;
            }
        }
        let (hc, o) = (h.clone(), order.clone());
        let clean = tokio::spawn(async move {
            let _s = hc
                .slot(&Source::address("198.51.100.1".parse().unwrap()), true)
                .await
                .unwrap();
            o.lock().unwrap().push("clean".to_string());
        });
        while h.slots.lock().unwrap().waiting < 21 {
            tokio::task::yield_now().await;
        }
        drop(first);
        clean.await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(order.lock().unwrap()[0], "clean");
    }

    /// The hashing threads reuse their memory: many hashes do not grow the process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_on_the_dedicated_threads() {
        let h = Hasher::new(2);
        let src = Source::Identity("t".into());
        let hash = h.hash(&src, true, "s3cret".into()).await.unwrap();
        assert!(h.verify(&src, true, "s3cret".into(), Some(hash.clone())).await.unwrap());
        assert!(!h.verify(&src, false, "wrong".into(), Some(hash)).await.unwrap());
        assert!(!h.verify(&src, true, "s3cret".into(), None).await.unwrap());
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
