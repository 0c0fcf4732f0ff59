//! A vendor's announced rate-limit budget, kept per endpoint and credential and spent
//! before sending.

use super::wait::reset_wait;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What a vendor's rate-limit headers announced to one caller (an endpoint and the
/// credential it sent): requests left in the current window and when it resets.
#[derive(Debug)]
struct Budget {
    remaining: u64,
    limit: Option<u64>,
    reset_at: Instant,
    /// The longest window seen (a fresh window is assumed to last as long).
    window: Duration,
}

/// The budgets of every caller, by a keyed hash of scheme, host, port and
/// `Authorization` (never the credential itself). At most [`Budgets::MAX`] callers are
/// remembered; past that, callers without a budget are simply not throttled.
#[derive(Default)]
pub(super) struct Budgets {
    hasher: std::hash::RandomState,
    map: Mutex<HashMap<u64, Budget>>,
}

impl Budget {
    /// One request is out to learn the budget; the others wait for its answer.
    fn probe(now: Instant) -> Self {
        Self {
            remaining: 0,
            limit: None,
            reset_at: now + Budgets::PROBE,
            window: Duration::ZERO,
        }
    }

    /// The vendor announced no budget: nothing is held back.
    fn unlimited(now: Instant) -> Self {
        Self {
            remaining: u64::MAX,
            limit: None,
            reset_at: now + Duration::from_secs(60),
            window: Duration::ZERO,
        }
    }
}

impl Budgets {
    const MAX: usize = 4096;
    /// The longest the first answer is waited for before another request goes.
    const PROBE: Duration = Duration::from_secs(2);
    /// The shortest window rotor counts in, whatever the vendor announces.
    const MIN_WINDOW: Duration = Duration::from_secs(1);

    pub(super) fn key(&self, request: &reqwest::Request) -> u64 {
        let mut h = self.hasher.build_hasher();
        let url = request.url();
        (url.scheme(), url.host_str(), url.port_or_known_default()).hash(&mut h);
        request
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .hash(&mut h);
        h.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Budget>> {
        // The map holds no invariant a panicking holder could break.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one request: `None` if it may go now, else how long to wait before
    /// asking again. A caller rotor knows nothing about sends one request first and
    /// the others wait for its answer (at most [`Budgets::PROBE`]): a burst of
    /// resources sharing a token must not spend more than the vendor allows before
    /// the vendor could say how much that is.
    pub(super) fn take(&self, key: u64) -> Option<Duration> {
        let mut map = self.lock();
        let now = Instant::now();
        if !map.contains_key(&key) {
            if map.len() >= Self::MAX {
                map.retain(|_, b| b.reset_at > now);
                if map.len() >= Self::MAX {
                    return None;
                }
            }
            map.insert(key, Budget::probe(now));
            return None;
        }
        let budget = map.get_mut(&key)?;
        if now >= budget.reset_at {
            let Some(limit) = budget.limit else {
                // Not announced (or the probe's answer never came): probe again.
                *budget = Budget::probe(now);
                return None;
            };
            // A fresh window: its real reset comes with the first answers in it. A
            // vendor announcing a zero-length window gets one of a second, so a
            // spent budget is a wait, never a loop that spins until the timeout.
            budget.remaining = limit;
            budget.reset_at = now + budget.window.max(Self::MIN_WINDOW);
        }
        if budget.remaining == 0 {
            return Some(budget.reset_at - now);
        }
        budget.remaining -= 1;
        None
    }

    /// Records what an answer's headers announce (`X-RateLimit-Remaining` with
    /// `X-RateLimit-Reset`; either missing or unreadable: nothing).
    pub(super) fn update(&self, key: u64, headers: &HeaderMap, max_wait: Duration) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let now = Instant::now();
        let announced = number("x-ratelimit-remaining")
            .zip(reset_wait(headers))
            // A window longer than rotor would wait for is not tracked (the 429 path
            // reports it if the vendor insists).
            .filter(|(_, reset)| reset.wait <= max_wait);
        let Some((remaining, reset)) = announced else {
            // No budget announced: requests go freely; asked again in a while.
            if let Some(b) = self.lock().get_mut(&key)
                && b.limit.is_none()
            {
                *b = Budget::unlimited(now);
            }
            return;
        };
        let reset_at = now + reset.wait;
        let mut map = self.lock();
        if map.len() >= Self::MAX && !map.contains_key(&key) {
            map.retain(|_, b| b.reset_at > now);
            if map.len() >= Self::MAX {
                return;
            }
        }
        let fresh = Budget {
            remaining,
            // A limit of 0 says nothing a window could be refilled with.
            limit: number("x-ratelimit-limit").filter(|l| *l > 0),
            reset_at,
            window: reset.wait,
        };
        match map.get_mut(&key) {
            Some(b) if now < b.reset_at && b.limit.is_some() => {
                // Answers arrive out of order, and the reset is given in whole
                // seconds: one that resets well before the window rotor counts in
                // belongs to an earlier window.
                if reset_at + Duration::from_millis(1500) < b.reset_at {
                    return;
                }
                b.remaining = b.remaining.min(remaining);
                b.reset_at = b.reset_at.max(reset_at);
                b.limit = fresh.limit.or(b.limit);
                b.window = b.window.max(reset.wait);
            }
            Some(b) => {
                let window = b.window.max(reset.wait);
                *b = Budget { window, ..fresh };
            }
            None => {
                map.insert(key, fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test]
    async fn an_announced_budget_is_spent_before_sending() {
        let budgets = Budgets::default();
        let max = Duration::from_secs(60);
        let headers = |remaining: &str, reset: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-ratelimit-limit", HeaderValue::from_static("2"));
            h.insert(
                "x-ratelimit-remaining",
                HeaderValue::from_str(remaining).unwrap(),
            );
            h.insert("x-ratelimit-reset", HeaderValue::from_str(reset).unwrap());
            h
        };
        // Unknown caller: one request goes, the next waits for its answer.
        assert_eq!(budgets.take(1), None);
        assert!(budgets.take(1).is_some_and(|w| w <= Budgets::PROBE));
        budgets.update(1, &headers("1", "30"), max);
        assert_eq!(budgets.take(1), None);
        let wait = budgets.take(1).expect("the budget is spent");
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
        // A stale answer from an earlier window does not refill it.
        budgets.update(1, &headers("5", "1"), max);
        assert!(budgets.take(1).is_some());
        // No headers: nothing is held back.
        assert_eq!(budgets.take(2), None);
        budgets.update(2, &HeaderMap::new(), max);
        for _ in 0..100 {
            assert_eq!(budgets.take(2), None);
        }
        // A window longer than --http-max-wait is not tracked.
        assert_eq!(budgets.take(3), None);
        budgets.update(3, &headers("0", "3600"), max);
        assert_eq!(budgets.take(3), None);
        // A hostile vendor announcing a zero-length window and nothing left: every
        // take is a wait of a real length, never a zero wait to spin on.
        let mut zero = HeaderMap::new();
        zero.insert("x-ratelimit-limit", HeaderValue::from_static("1"));
        zero.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        zero.insert("x-ratelimit-reset", HeaderValue::from_static("0"));
        assert_eq!(budgets.take(4), None);
        budgets.update(4, &zero, max);
        let mut waits = 0;
        for _ in 0..10 {
            if let Some(w) = budgets.take(4) {
                assert!(w >= Duration::from_millis(900), "a {w:?} wait spins");
                waits += 1;
            }
        }
        assert!(waits >= 9, "the one-request window is spent at once");
        // A limit of 0: the window is not refilled with nothing for ever.
        let mut none = zero.clone();
        none.insert("x-ratelimit-limit", HeaderValue::from_static("0"));
        assert_eq!(budgets.take(5), None);
        budgets.update(5, &none, max);
        for _ in 0..10 {
            if let Some(w) = budgets.take(5) {
                assert!(w >= Duration::from_millis(900), "a {w:?} wait spins");
            }
        }
    }
}
