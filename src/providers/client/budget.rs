//! A vendor's announced rate-limit budget, kept per endpoint and credential and spent
//! before sending.

use super::wait::reset_wait;
use reqwest::header::HeaderMap;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What rotor knows of one caller's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// One request is out to learn the budget; the others wait for its answer.
    Probe,
    /// The vendor announced no budget: nothing is held back until `reset_at`, then
    /// one request asks again.
    Unlimited,
    /// What the vendor announced (or a 429 asked for) for the window ending at
    /// `reset_at`.
    Announced,
    /// A window rotor refilled with the last known limit at `since`, assuming it lasts
    /// as long as the last one: the first answer to a request sent in it says when it
    /// really ends.
    Refilled { since: Instant },
    /// A 429 asked every caller to wait until `reset_at`; answers to requests sent
    /// before it do not lengthen (or end) the pause.
    Paused,
}

/// What a vendor's rate-limit headers announced to one caller (an endpoint and the
/// credential it sent): requests left in the current window and when it resets.
#[derive(Debug)]
struct Budget {
    kind: Kind,
    remaining: u64,
    limit: Option<u64>,
    reset_at: Instant,
    /// The longest wait announced in the last window (a fresh one is assumed to last
    /// as long).
    window: Duration,
    /// When a request last took from it or an answer spoke of it: a full map gives
    /// up the least recently used.
    touched: Instant,
    /// A spent window longer than `--http-max-wait` lets one request through (a
    /// probe) at this time at the earliest: nothing else is sent into it, so only a
    /// probe's answer can tell that the vendor recovered early.
    probe_due: Instant,
    /// When the last such probe went: its answer (and only an answer to a request sent
    /// after it) replaces what rotor knew of the window.
    probe_sent: Option<Instant>,
}

/// The budgets of every caller, by a keyed hash of scheme, host, port, query string
/// and every request header that may carry a credential (never the credential
/// itself). At most [`Budgets::MAX`] callers are remembered; past that, expired and
/// unlimited entries go first, then the least recently used.
#[derive(Default)]
pub(super) struct Budgets {
    hasher: std::hash::RandomState,
    map: Mutex<HashMap<u64, Budget>>,
}

impl Budget {
    /// One request is out to learn the budget; the others wait for its answer.
    fn probe(now: Instant) -> Self {
        Self {
            kind: Kind::Probe,
            remaining: 0,
            limit: None,
            reset_at: now + Budgets::PROBE,
            window: Duration::ZERO,
            touched: now,
            probe_due: now,
            probe_sent: None,
        }
    }

    /// The vendor announced no budget: nothing is held back.
    fn unlimited(now: Instant) -> Self {
        Self {
            kind: Kind::Unlimited,
            remaining: u64::MAX,
            limit: None,
            reset_at: now + Duration::from_secs(60),
            window: Duration::ZERO,
            touched: now,
            probe_due: now,
            probe_sent: None,
        }
    }

    /// Whether the entry holds anything back: a live window or a probe. An expired
    /// or unlimited entry can go without throttling anyone (its caller probes again).
    fn holds_back(&self, now: Instant) -> bool {
        now < self.reset_at && self.kind != Kind::Unlimited
    }
}

/// Request headers that say nothing about who is calling: left out of the key.
const NOT_A_CALLER: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "host",
    "user-agent",
];

/// Whether a query parameter's name says it carries a credential.
fn credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key", "token", "auth", "secret", "sig", "pass", "cred", "session",
    ]
    .iter()
    .any(|part| name.contains(part))
}

impl Budgets {
    const MAX: usize = 4096;
    /// The longest the first answer is waited for before another request goes.
    pub(super) const PROBE: Duration = Duration::from_secs(2);
    /// The shortest window rotor counts in, whatever the vendor announces.
    const MIN_WINDOW: Duration = Duration::from_secs(1);
    /// The longest window rotor tracks: a longer one (or "forever") is counted as a
    /// day, after which one request asks again.
    pub(super) const TRACK_CEILING: Duration = Duration::from_secs(24 * 3600);
    /// How often a spent window longer than `--http-max-wait` lets one request through
    /// to ask whether the vendor recovered (per caller).
    pub(super) const PROBE_EVERY: Duration = Duration::from_secs(5 * 60);

    /// The caller a request belongs to: scheme, host and port, every header but the
    /// few that never identify a caller, and the query parameters that may carry a
    /// credential (a name like `api_key` or `token`, or a value that looks like a key;
    /// not `reveal=true`, so one token's requests share a budget). `provider.http`
    /// lets a credential go in any header (`X-API-Key`, `apikey`) or the query, so
    /// tenants sharing a host only share a budget when they send the same credential.
    /// Only a keyed hash is kept. A header or credential-like query value that
    /// changes per request (`{{id}}`) makes a budget per request, which the map's
    /// bound absorbs.
    pub(super) fn key(&self, request: &reqwest::Request) -> u64 {
        let mut h = self.hasher.build_hasher();
        let url = request.url();
        (url.scheme(), url.host_str(), url.port_or_known_default()).hash(&mut h);
        let mut query: Vec<_> = url
            .query_pairs()
            .filter(|(name, value)| credential_name(name) || super::looks_like_a_token(value))
            .collect();
        query.sort_unstable();
        query.hash(&mut h);
        let mut headers: Vec<(&str, &[u8])> = request
            .headers()
            .iter()
            .filter(|(name, _)| !NOT_A_CALLER.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        headers.sort_unstable();
        headers.hash(&mut h);
        h.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Budget>> {
        // The map holds no invariant a panicking holder could break.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more caller: expired and unlimited entries go first (they hold
    /// nothing back), then, when every entry is a live window, the least recently
    /// used — whoever fills the map, a new caller is still probed and counted.
    fn make_room(map: &mut HashMap<u64, Budget>, now: Instant) {
        if map.len() < Self::MAX {
            return;
        }
        map.retain(|_, b| b.holds_back(now));
        // Bounded: each turn removes one entry.
        while map.len() >= Self::MAX {
            let Some(oldest) = map.iter().min_by_key(|(_, b)| b.touched).map(|(k, _)| *k) else {
                return;
            };
            map.remove(&oldest);
        }
    }

    /// Takes one request: `None` if it may go now, else how long to wait before
    /// asking again. A caller rotor knows nothing about sends one request first and
    /// the others wait for its answer (at most [`Budgets::PROBE`]): a burst of
    /// resources sharing a token must not spend more than the vendor allows before
    /// the vendor could say how much that is. A spent window longer than `max_wait`
    /// (`--http-max-wait`, which the caller fails at once instead of waiting) still
    /// lets one request through every [`Budgets::PROBE_EVERY`]: its answer may reopen
    /// the window.
    pub(super) fn take(&self, key: u64, max_wait: Duration) -> Option<Duration> {
        self.take_at(key, max_wait, Instant::now())
    }

    fn take_at(&self, key: u64, max_wait: Duration, now: Instant) -> Option<Duration> {
        let mut map = self.lock();
        let Some(budget) = map.get_mut(&key) else {
            Self::make_room(&mut map, now);
            map.insert(key, Budget::probe(now));
            return None;
        };
        budget.touched = now;
        if now >= budget.reset_at {
            let Some(limit) = budget.limit else {
                // Not announced (or the probe's answer never came): probe again.
                *budget = Budget::probe(now);
                return None;
            };
            // A fresh window: its real reset comes with the first answers in it. A
            // vendor announcing a zero-length window gets one of a second, so a
            // spent budget is a wait, never a loop that spins until the timeout.
            budget.kind = Kind::Refilled { since: now };
            budget.remaining = limit;
            budget.reset_at = now + budget.window.max(Self::MIN_WINDOW);
            budget.probe_sent = None;
        }
        if budget.remaining == 0 {
            let wait = budget.reset_at - now;
            if wait > max_wait && now >= budget.probe_due {
                // Bounded: the next probe is PROBE_EVERY away.
                budget.probe_due = now + Self::PROBE_EVERY;
                budget.probe_sent = Some(now);
                return None;
            }
            return Some(wait);
        }
        budget.remaining -= 1;
        None
    }

    /// Records what an answer's headers announce (`X-RateLimit-Remaining` with
    /// `X-RateLimit-Reset`; either missing or unreadable: nothing) for a request sent
    /// at `sent`. A window longer than `--http-max-wait` is tracked too (up to
    /// [`Budgets::TRACK_CEILING`]): the next request then fails at once instead of
    /// being sent into a budget the vendor said is spent, except for one probe every
    /// [`Budgets::PROBE_EVERY`], whose answer replaces the window.
    pub(super) fn update(&self, key: u64, headers: &HeaderMap, sent: Instant) {
        self.update_at(key, headers, sent, Instant::now());
    }

    fn update_at(&self, key: u64, headers: &HeaderMap, sent: Instant, now: Instant) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let announced = number("x-ratelimit-remaining").zip(reset_wait(headers));
        let mut map = self.lock();
        let Some((remaining, reset)) = announced else {
            // No budget announced: requests go freely, asked again in a while — unless
            // a window is live (a 502 without headers in the middle of it says
            // nothing about the budget).
            if let Some(b) = map.get_mut(&key) {
                b.touched = now;
                let settled = matches!(b.kind, Kind::Probe | Kind::Unlimited)
                    || (now >= b.reset_at && b.limit.is_none());
                if settled {
                    *b = Budget::unlimited(now);
                }
            }
            return;
        };
        let wait = reset.wait.min(Self::TRACK_CEILING);
        let reset_at = now + wait;
        // A limit of 0 says nothing a window could be refilled with.
        let limit = number("x-ratelimit-limit").filter(|l| *l > 0);
        let fresh = Budget {
            kind: Kind::Announced,
            remaining,
            limit,
            reset_at,
            window: wait,
            touched: now,
            probe_due: now + Self::PROBE_EVERY,
            probe_sent: None,
        };
        match map.get_mut(&key) {
            // The answer to a probe sent into a spent window longer than
            // --http-max-wait: what the vendor says now replaces what rotor knew (it
            // may have recovered early).
            Some(b) if now < b.reset_at && b.probe_sent.is_some_and(|p| sent >= p) => {
                *b = fresh;
            }
            // An answer to a request sent before that probe: the probe's answer is
            // awaited, this one neither reopens nor lengthens the window.
            Some(b) if now < b.reset_at && b.probe_sent.is_some() => {
                b.touched = now;
            }
            Some(b) if now < b.reset_at && b.kind == Kind::Paused => {
                b.touched = now;
                b.limit = limit.or(b.limit);
            }
            Some(b) if now < b.reset_at && b.kind == Kind::Announced => {
                b.touched = now;
                // Answers arrive out of order, and the reset is given in whole
                // seconds: one that resets well before the window rotor counts in
                // belongs to an earlier window.
                if reset_at + Duration::from_millis(1500) < b.reset_at {
                    return;
                }
                b.remaining = b.remaining.min(remaining);
                b.reset_at = b.reset_at.max(reset_at);
                b.limit = limit.or(b.limit);
                b.window = b.window.max(wait);
            }
            // An answer to a request sent before rotor refilled the window speaks of
            // the window before.
            Some(b)
                if now < b.reset_at
                    && matches!(b.kind, Kind::Refilled { since } if sent < since) =>
            {
                b.touched = now;
            }
            Some(b) if now < b.reset_at && matches!(b.kind, Kind::Refilled { .. }) => {
                b.touched = now;
                // The first answer in a window rotor refilled: the vendor's reset
                // replaces rotor's guess (a window once announced long — a penalty —
                // is not assumed for ever); what rotor spent in it stays spent.
                b.kind = Kind::Announced;
                b.remaining = b.remaining.min(remaining);
                b.reset_at = reset_at;
                b.limit = limit.or(b.limit);
                b.window = wait;
            }
            Some(b) => {
                let window = b.window.max(wait);
                *b = Budget { window, ..fresh };
            }
            None => {
                Self::make_room(&mut map, now);
                map.insert(key, fresh);
            }
        }
    }

    /// A 429 asked for `wait` (and rotor accepted it): nothing goes for this caller
    /// until then, so the others wait instead of sending into it. Then the window
    /// rotor knew is refilled (or one request probes): the 429 said when to come back,
    /// not that the rest of a longer window is lost.
    pub(super) fn exhaust(&self, key: u64, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        let now = Instant::now();
        let reset_at = now + wait.min(Self::TRACK_CEILING);
        let mut map = self.lock();
        match map.get_mut(&key) {
            Some(b) => {
                let reset_at = if b.kind == Kind::Paused && now < b.reset_at {
                    b.reset_at.max(reset_at)
                } else {
                    reset_at
                };
                *b = Budget {
                    kind: Kind::Paused,
                    remaining: 0,
                    limit: b.limit,
                    reset_at,
                    window: b.window,
                    touched: now,
                    probe_due: now + Self::PROBE_EVERY,
                    probe_sent: None,
                };
            }
            None => {
                Self::make_room(&mut map, now);
                map.insert(
                    key,
                    Budget {
                        kind: Kind::Paused,
                        remaining: 0,
                        limit: None,
                        reset_at,
                        window: Duration::ZERO,
                        touched: now,
                        probe_due: now + Self::PROBE_EVERY,
                        probe_sent: None,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// `--http-max-wait` in these tests.
    const MAX_WAIT: Duration = Duration::from_secs(60);

    fn headers(limit: &str, remaining: &str, reset: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from_str(limit).unwrap());
        h.insert(
            "x-ratelimit-remaining",
            HeaderValue::from_str(remaining).unwrap(),
        );
        h.insert("x-ratelimit-reset", HeaderValue::from_str(reset).unwrap());
        h
    }

    fn entry<T>(budgets: &Budgets, key: u64, f: impl FnOnce(&mut Budget) -> T) -> T {
        f(budgets.lock().get_mut(&key).expect("the key is tracked"))
    }

    #[tokio::test]
    async fn an_announced_budget_is_spent_before_sending() {
        let budgets = Budgets::default();
        let sent = Instant::now();
        // Unknown caller: one request goes, the next waits for its answer.
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        assert!(
            budgets
                .take(1, MAX_WAIT)
                .is_some_and(|w| w <= Budgets::PROBE)
        );
        budgets.update(1, &headers("2", "1", "30"), sent);
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        let wait = budgets.take(1, MAX_WAIT).expect("the budget is spent");
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
        // A stale answer from an earlier window (another limit, a short reset) changes
        // nothing of the window rotor counts in.
        budgets.update(1, &headers("9", "5", "1"), sent);
        assert!(budgets.take(1, MAX_WAIT).is_some());
        entry(&budgets, 1, |b| {
            assert_eq!((b.limit, b.remaining), (Some(2), 0));
            assert_eq!(b.window, Duration::from_secs(30));
        });
        // No headers: nothing is held back.
        assert_eq!(budgets.take(2, MAX_WAIT), None);
        budgets.update(2, &HeaderMap::new(), sent);
        for _ in 0..100 {
            assert_eq!(budgets.take(2, MAX_WAIT), None);
        }
        // A window longer than --http-max-wait is tracked: rotor knows the vendor
        // has nothing left for an hour (`spend` fails at once without sending).
        assert_eq!(budgets.take(3, MAX_WAIT), None);
        budgets.update(3, &headers("10", "0", "3600"), sent);
        let wait = budgets
            .take(3, MAX_WAIT)
            .expect("the hour-long window is tracked");
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
        // "Forever" is tracked as a day, then one request asks again.
        assert_eq!(budgets.take(6, MAX_WAIT), None);
        budgets.update(6, &headers("10", "0", "1e300"), sent);
        let wait = budgets.take(6, MAX_WAIT).expect("tracked");
        assert!(wait <= Budgets::TRACK_CEILING && wait > Duration::from_secs(23 * 3600));
        // A hostile vendor announcing a zero-length window and nothing left: every
        // take is a wait of a real length, never a zero wait to spin on.
        assert_eq!(budgets.take(4, MAX_WAIT), None);
        budgets.update(4, &headers("1", "0", "0"), sent);
        let mut waits = 0;
        for _ in 0..10 {
            if let Some(w) = budgets.take(4, MAX_WAIT) {
                assert!(w >= Duration::from_millis(900), "a {w:?} wait spins");
                waits += 1;
            }
        }
        assert!(waits >= 9, "the one-request window is spent at once");
        // A limit of 0: the window is not refilled with nothing for ever.
        assert_eq!(budgets.take(5, MAX_WAIT), None);
        budgets.update(5, &headers("0", "0", "0"), sent);
        for _ in 0..10 {
            if let Some(w) = budgets.take(5, MAX_WAIT) {
                assert!(w >= Duration::from_millis(900), "a {w:?} wait spins");
            }
        }
    }

    #[tokio::test]
    async fn a_day_long_spent_window_is_probed_and_a_recovered_vendor_reopens_it() {
        let budgets = Budgets::default();
        let t0 = Instant::now();
        assert_eq!(budgets.take_at(1, MAX_WAIT, t0), None);
        budgets.update_at(1, &headers("10", "0", "86400"), t0, t0);
        // Longer than --http-max-wait: calls fail without sending...
        for s in [0, 1, 60, 299] {
            let at = t0 + Duration::from_secs(s);
            let wait = budgets.take_at(1, MAX_WAIT, at).expect("spent");
            assert!(wait > Duration::from_secs(23 * 3600), "{wait:?}");
        }
        // ...until one goes as a probe, alone.
        let probe = t0 + Budgets::PROBE_EVERY;
        assert_eq!(budgets.take_at(1, MAX_WAIT, probe), None, "no probe");
        let next = probe + Duration::from_millis(10);
        assert!(
            budgets.take_at(1, MAX_WAIT, next).is_some(),
            "a second probe"
        );
        // A stale answer (sent before the probe) neither reopens nor lengthens it.
        budgets.update_at(1, &headers("10", "0", "90000"), t0, next);
        budgets.update_at(1, &headers("10", "5", "60"), t0, next);
        entry(&budgets, 1, |b| {
            assert_eq!(b.remaining, 0);
            assert!(b.reset_at <= t0 + Duration::from_secs(86400));
        });
        // The probe's answer: the vendor recovered; the key is open again.
        budgets.update_at(1, &headers("10", "5", "60"), probe, next);
        assert_eq!(budgets.take_at(1, MAX_WAIT, next), None, "still closed");
        entry(&budgets, 1, |b| {
            assert_eq!(b.remaining, 4);
            assert!(b.reset_at <= next + Duration::from_secs(60));
        });
        // A window within --http-max-wait is waited for, never probed.
        assert_eq!(budgets.take_at(2, MAX_WAIT, t0), None);
        budgets.update_at(2, &headers("10", "0", "30"), t0, t0);
        assert!(
            budgets
                .take_at(2, MAX_WAIT, t0 + Budgets::PROBE_EVERY / 100)
                .is_some()
        );
    }

    #[tokio::test]
    async fn within_a_live_window_answers_only_ever_lower_what_is_left() {
        let budgets = Budgets::default();
        let sent = Instant::now();
        // No limit announced: a later answer saying more is left (out of order) does
        // not raise what rotor counts.
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        let mut no_limit = headers("1", "1", "30");
        no_limit.remove("x-ratelimit-limit");
        budgets.update(1, &no_limit, sent);
        let mut more = headers("1", "50", "30");
        more.remove("x-ratelimit-limit");
        budgets.update(1, &more, sent);
        entry(&budgets, 1, |b| assert_eq!(b.remaining, 1));
        // A header-less answer (a 502) in the middle of the window: the window stays.
        budgets.update(1, &HeaderMap::new(), sent);
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        let wait = budgets
            .take(1, MAX_WAIT)
            .expect("the window is still counted");
        assert!(wait > Duration::from_secs(28), "{wait:?}");
    }

    #[tokio::test]
    async fn a_refilled_window_takes_the_vendors_reset_from_its_first_answer() {
        let budgets = Budgets::default();
        let before = Instant::now();
        // A penalty: nothing left for an hour.
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        budgets.update(1, &headers("5", "0", "3600"), before);
        // The hour is over (moved into the past here): rotor refills the window and
        // assumes it lasts an hour.
        entry(&budgets, 1, |b| b.reset_at = Instant::now());
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        entry(&budgets, 1, |b| {
            assert!(b.reset_at > Instant::now() + Duration::from_secs(3500));
        });
        // A late answer to a request sent before the refill speaks of the old window.
        budgets.update(1, &headers("5", "0", "1"), before);
        entry(&budgets, 1, |b| assert_eq!(b.remaining, 4));
        // The first answer in the new window: the vendor's 60 s window, not an hour.
        budgets.update(1, &headers("5", "3", "60"), Instant::now());
        entry(&budgets, 1, |b| {
            assert_eq!(b.remaining, 3);
            assert!(b.reset_at <= Instant::now() + Duration::from_secs(60));
            assert_eq!(b.window, Duration::from_secs(60));
        });
    }

    #[tokio::test]
    async fn a_429s_wait_holds_every_caller_of_the_key() {
        let budgets = Budgets::default();
        assert_eq!(budgets.take(1, MAX_WAIT), None);
        budgets.update(1, &HeaderMap::new(), Instant::now());
        assert_eq!(budgets.take(1, MAX_WAIT), None, "no budget announced");
        budgets.exhaust(1, Duration::from_secs(20));
        let wait = budgets.take(1, MAX_WAIT).expect("the 429's wait is kept");
        assert!(wait > Duration::from_secs(18), "{wait:?}");
        // A caller rotor knew nothing of.
        budgets.exhaust(2, Duration::from_secs(20));
        assert!(budgets.take(2, MAX_WAIT).is_some());
        // A 429 asking for 2 s in the middle of a minute-long window: a pause of 2 s,
        // which a late answer about that window does not lengthen.
        let sent = Instant::now();
        assert_eq!(budgets.take(3, MAX_WAIT), None);
        budgets.update(3, &headers("10", "5", "60"), sent);
        budgets.exhaust(3, Duration::from_secs(2));
        budgets.update(3, &headers("10", "3", "55"), sent);
        let wait = budgets.take(3, MAX_WAIT).expect("paused");
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
        entry(&budgets, 3, |b| assert_eq!(b.limit, Some(10)));
    }

    #[test]
    fn keys_tell_credentials_in_any_header_or_the_query_apart() {
        let budgets = Budgets::default();
        let key = |url: &str, headers: &[(&'static str, &str)]| {
            let mut r = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
            for (n, v) in headers {
                r.headers_mut()
                    .append(*n, HeaderValue::from_str(v).unwrap());
            }
            budgets.key(&r)
        };
        let a = key("https://api.example.com/keys", &[("x-api-key", "tenant-a")]);
        let b = key("https://api.example.com/keys", &[("x-api-key", "tenant-b")]);
        assert_ne!(a, b, "two tenants' X-API-Key values share a budget");
        assert_ne!(
            key("https://api.example.com/keys", &[("apikey", "tenant-a")]),
            key("https://api.example.com/keys", &[("apikey", "tenant-b")])
        );
        assert_ne!(
            key("https://api.example.com/keys?api_key=a", &[]),
            key("https://api.example.com/keys?api_key=b", &[])
        );
        assert_ne!(
            key(
                "https://api.example.com/keys?x=sk_live_0123456789abcdef",
                &[]
            ),
            key(
                "https://api.example.com/keys?x=sk_live_fedcba9876543210",
                &[]
            )
        );
        // A query that carries no credential does not split one token's budget.
        assert_eq!(
            key(
                "https://api.example.com/keys?reveal=true",
                &[("authorization", "Bearer t")]
            ),
            key(
                "https://api.example.com/keys/7?reveal=false",
                &[("authorization", "Bearer t")]
            )
        );
        // One credential: one budget, whatever the path, the header order or the
        // content type.
        assert_eq!(
            key(
                "https://api.example.com/keys",
                &[("x-api-key", "tenant-a"), ("x-org", "7")]
            ),
            key(
                "https://api.example.com/keys/42",
                &[
                    ("x-org", "7"),
                    ("content-type", "application/json"),
                    ("x-api-key", "tenant-a")
                ]
            )
        );
        assert_ne!(
            a,
            key(
                "https://other.example.com/keys",
                &[("x-api-key", "tenant-a")]
            )
        );
    }

    #[tokio::test]
    async fn a_full_map_still_probes_a_new_caller() {
        let budgets = Budgets::default();
        let sent = Instant::now();
        // One tenant fills the map with live windows (a header rendered per request).
        for key in 0..Budgets::MAX as u64 {
            assert_eq!(budgets.take(key, MAX_WAIT), None);
            budgets.update(key, &headers("10", "5", "3600"), sent);
        }
        assert_eq!(budgets.lock().len(), Budgets::MAX);
        // Another caller is still probed: one request goes, the next waits for it.
        let new = u64::MAX;
        assert_eq!(budgets.take(new, MAX_WAIT), None);
        assert!(
            budgets.take(new, MAX_WAIT).is_some(),
            "the new caller is not tracked"
        );
        budgets.update(new, &headers("1", "0", "30"), sent);
        assert!(
            budgets.take(new, MAX_WAIT).is_some(),
            "its budget is not kept"
        );
        assert!(budgets.lock().len() <= Budgets::MAX);
        // Expired and unlimited entries go before any live window.
        let budgets = Budgets::default();
        for key in 0..Budgets::MAX as u64 {
            assert_eq!(budgets.take(key, MAX_WAIT), None);
            budgets.update(key, &HeaderMap::new(), sent);
        }
        budgets.update(0, &headers("10", "0", "600"), sent);
        assert_eq!(budgets.take(new, MAX_WAIT), None);
        assert!(
            budgets.take(0, MAX_WAIT).is_some(),
            "a live window was dropped"
        );
        assert!(budgets.lock().len() < 10);
    }
}
