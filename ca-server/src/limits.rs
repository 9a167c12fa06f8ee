//! Rate limits on what strangers can make the CA do: sign-in attempts, public registrations and
//! failed enrollments. Counted per replica, in memory, with `governor`'s keyed limiters.
//!
//! **Sign-in** is keyed so that nobody can lock an owner out from elsewhere:
//! - per (account, address) pair: 5 at once, then one a minute: a guesser at one address is
//!   slowed on that account without touching anyone else's attempts;
//! - per address: 20 at once, then one every 3 seconds, whatever the accounts;
//! - per account, only for addresses that have **never signed in to it successfully**: 50 at
//!   once, then 10 a minute, which bounds a guesser spread over many addresses. An address the
//!   owner signed in from before is never refused by failures made from other addresses.
//!
//! **Registration** (public, each one hashes a password): per address 10 at once, then one
//! every 30 seconds.
//!
//! **Enrollment with a secret** (public, each one hashes): per source, failures only: 10 at
//! once, then one every 6 seconds. Past that the source's attempts are refused before any
//! hashing until it may try again, so a wrong-secret flood costs one hash per 6 seconds.
//! Successful enrollments are never counted, so bulk enrollment from one address is not slowed.
//!
//! **Demerits**: a source with a failed sign-in, claim or enrollment in the last 10 minutes is
//! not clean; the hasher serves clean sources first ([`crate::secrets`]).
//!
//! **Tarpit**: a refusal for going over a limit is answered after a second (at most 4,096 such
//! answers wait at once; past that they are immediate), so a client that floods one request at a
//! time is slowed to a request a second per connection instead of costing the CA thousands.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::secrets::Source;

type Keyed<K> = RateLimiter<K, governor::state::keyed::HashMapStateStore<K>, DefaultClock>;

/// Most keys a limiter keeps before forgetting the ones that are back to full allowance.
const MAX_KEYS: usize = 100_000;
/// Addresses remembered per account as ones it signed in from.
const KNOWN_PER_ACCOUNT: usize = 16;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn quota(period: Duration, burst: u32) -> Quota {
    Quota::with_period(period).map_or_else(|| Quota::per_minute(nz(1)), |q| q.allow_burst(nz(burst)))
}

/// Takes one cell for `key`, or says how many seconds to wait.
fn take<K: Hash + Eq + Clone>(limiter: &Keyed<K>, key: &K) -> Result<(), u64> {
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    limiter
        .check_key(key)
        .map_err(|e| e.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
}

/// Sign-in and registration limits (see the module docs).
pub struct PortalLimits {
    per_pair: Keyed<(String, IpAddr)>,
    per_address: Keyed<IpAddr>,
    per_account_elsewhere: Keyed<String>,
    known: Mutex<HashMap<String, Vec<IpAddr>>>,
    registrations: Keyed<IpAddr>,
}

impl Default for PortalLimits {
    fn default() -> Self {
        Self {
            per_pair: RateLimiter::hashmap(Quota::per_minute(nz(1)).allow_burst(nz(5))),
            per_address: RateLimiter::hashmap(quota(Duration::from_secs(3), 20)),
            per_account_elsewhere: RateLimiter::hashmap(Quota::per_minute(nz(10)).allow_burst(nz(50))),
            known: Mutex::new(HashMap::new()),
            registrations: RateLimiter::hashmap(quota(Duration::from_secs(30), 10)),
        }
    }
}

impl PortalLimits {
    /// Takes one sign-in attempt for the account from this address, or says how many seconds to
    /// wait.
    pub fn sign_in(&self, account: &str, address: IpAddr) -> Result<(), u64> {
        let account = account.to_ascii_lowercase();
        take(&self.per_address, &address)?;
        take(&self.per_pair, &(account.clone(), address))?;
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&account)
            .is_some_and(|a| a.contains(&address));
        if !known {
            take(&self.per_account_elsewhere, &account)?;
        }
        Ok(())
    }

    /// Remembers that the account signed in from this address.
    pub fn signed_in(&self, account: &str, address: IpAddr) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_KEYS {
            known.clear();
        }
        let list = known.entry(account.to_ascii_lowercase()).or_default();
        if !list.contains(&address) {
            if list.len() >= KNOWN_PER_ACCOUNT {
                list.remove(0);
            }
            list.push(address);
        }
    }

    /// Takes one public registration for this address, or says how many seconds to wait.
    pub fn register(&self, address: IpAddr) -> Result<(), u64> {
        take(&self.registrations, &address)
    }
}

/// Failed-enrollment limits per source (see the module docs).
pub struct EnrollLimits {
    failures: Keyed<Source>,
    blocked: Mutex<HashMap<Source, Instant>>,
}

impl Default for EnrollLimits {
    fn default() -> Self {
        Self {
            failures: RateLimiter::hashmap(quota(Duration::from_secs(6), 10)),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

impl EnrollLimits {
    /// Fails with the seconds to wait while the source is over its failure limit.
    pub fn check(&self, source: &Source) -> Result<(), u64> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match blocked.get(source) {
            Some(until) if *until > now => Err((*until - now).as_secs() + 1),
            Some(_) => {
                blocked.remove(source);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a failed enrollment (wrong secret or unknown id) from the source.
    pub fn failed(&self, source: &Source) {
        if let Err(wait) = take(&self.failures, source) {
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.len() >= MAX_KEYS {
                let now = Instant::now();
                blocked.retain(|_, until| *until > now);
            }
            blocked.insert(source.clone(), Instant::now() + Duration::from_secs(wait));
        }
    }
}

/// How long a failure keeps a source from being clean.
const DEMERIT: Duration = Duration::from_secs(600);

/// Sources with recent failures (see the module docs).
#[derive(Default)]
pub struct Demerits {
    last: Mutex<HashMap<Source, Instant>>,
}

impl Demerits {
    /// Records a failure of the source.
    pub fn record(&self, source: &Source) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= MAX_KEYS {
            last.retain(|_, at| at.elapsed() < DEMERIT);
        }
        last.insert(source.clone(), Instant::now());
    }

    /// Whether the source has no failure in the last 10 minutes.
    pub fn clean(&self, source: &Source) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(source).is_none_or(|at| at.elapsed() >= DEMERIT)
    }
}

/// Delays refusals (see the module docs).
pub struct Tarpit(tokio::sync::Semaphore);

impl Default for Tarpit {
    fn default() -> Self {
        Self(tokio::sync::Semaphore::new(4096))
    }
}

impl Tarpit {
    /// Waits a second before a refusal is answered, unless too many refusals wait already.
    pub async fn hold(&self) {
        if let Ok(_permit) = self.0.try_acquire() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_limits() {
        let l = PortalLimits::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            l.sign_in("ann", ip).unwrap();
        }
        let wait = l.sign_in("ann", ip).unwrap_err();
        assert!((1..=61).contains(&wait), "{wait}");
        // Another account from the same address still may, up to the address's limit.
        for _ in 0..14 {
            l.sign_in("bob", ip).ok();
        }
        assert!(l.sign_in("carol", ip).is_err(), "the address is limited too");
        assert!(l.sign_in("dave", "192.0.2.2".parse().unwrap()).is_ok());
    }

    /// Regression: five failures from anywhere locked the owner out for a minute.
    #[test]
    fn failures_elsewhere_never_lock_the_owner_out() {
        let l = PortalLimits::default();
        let owner: IpAddr = "192.0.2.10".parse().unwrap();
        l.sign_in("ann", owner).unwrap();
        l.signed_in("ann", owner);
        // A guesser spread over 200 addresses, 5 tries each.
        let mut refused = 0;
        for i in 0..200u32 {
            let ip = IpAddr::from([198, 51, (i / 250) as u8, (i % 250) as u8]);
            for _ in 0..5 {
                refused += usize::from(l.sign_in("ann", ip).is_err());
            }
        }
        assert!(
            refused >= 900,
            "the spread guesser is bounded per account: {refused} of 1000 refused"
        );
        // The owner's own address keeps its own allowance (5 at once; one was used above).
        for _ in 0..4 {
            l.sign_in("ann", owner).expect("the owner's own address is not refused");
        }
        // A new address of the owner's, during the attack, is refused: that is the price.
        assert!(l.sign_in("ann", "192.0.2.11".parse().unwrap()).is_err());
    }

    #[test]
    fn enrollment_failures_block_only_their_source() {
        let l = EnrollLimits::default();
        let a = Source::address("192.0.2.1".parse().unwrap());
        let b = Source::address("192.0.2.2".parse().unwrap());
        for _ in 0..10 {
            l.check(&a).unwrap();
            l.failed(&a);
        }
        l.check(&a).unwrap();
        l.failed(&a);
        let wait = l.check(&a).unwrap_err();
        assert!((1..=7).contains(&wait), "{wait}");
        l.check(&b).unwrap();
    }

    #[test]
    fn demerits_make_a_source_unclean() {
        let d = Demerits::default();
        let a = Source::address("192.0.2.1".parse().unwrap());
        assert!(d.clean(&a));
        d.record(&a);
        assert!(!d.clean(&a));
        assert!(d.clean(&Source::address("192.0.2.2".parse().unwrap())));
    }

    #[test]
    fn registrations_per_address() {
        let l = PortalLimits::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            l.register(ip).unwrap();
        }
        assert!(l.register(ip).is_err());
        assert!(l.register("192.0.2.2".parse().unwrap()).is_ok());
    }
}
