//! Repeated warnings, logged at most once per interval per key (a CA that stays unreachable, a
//! host without an address) so that a fault does not flood the log while it lasts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same warning may be logged.
pub const EVERY: Duration = Duration::from_secs(60);

/// Keys remembered at most; past this the oldest are forgotten (a key is a call site plus a
/// subchain or node name, so this bounds memory whatever peers do).
const MAX_KEYS: usize = 4096;

static SEEN: Mutex<Option<HashMap<String, (Instant, u64)>>> = Mutex::new(None);

/// `Some(n)` when the warning under `key` should be logged now, `n` being how many were held
/// back since it last was; `None` when it was logged less than `every` ago (it is counted).
pub fn due(key: &str, every: Duration) -> Option<u64> {
    let now = Instant::now();
    let mut g = SEEN.lock().expect("warn_once");
    let seen = g.get_or_insert_with(HashMap::new);
    if let Some((at, held)) = seen.get_mut(key) {
        if now.duration_since(*at) < every {
            *held += 1;
            return None;
        }
        let n = *held;
        *at = now;
        *held = 0;
        return Some(n);
    }
    if seen.len() >= MAX_KEYS {
        seen.retain(|_, (at, _)| now.duration_since(*at) < every);
        if seen.len() >= MAX_KEYS {
            seen.clear();
        }
    }
    seen.insert(key.to_string(), (now, 0));
    Some(0)
}

/// `tracing::warn!` at most once per [`EVERY`] for the same key; the next line that gets through
/// says how many were held back (`held_back`).
#[macro_export]
macro_rules! warn_every {
    ($key:expr, $($arg:tt)+) => {
        if let Some(held_back) = $crate::warn_once::due(&$key, $crate::warn_once::EVERY) {
            tracing::warn!(held_back, $($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_repeats_only_after_the_interval_and_counts_what_it_held_back() {
        let every = Duration::from_millis(200);
        assert_eq!(due("t1", every), Some(0));
        assert_eq!(due("t1", every), None);
        assert_eq!(due("t1", every), None);
        assert_eq!(due("t2", every), Some(0), "keys are separate");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(due("t1", every), Some(2));
        assert_eq!(due("t1", every), None);
    }
}
