//! When to rotate: the schedule, manual requests, resumption and retry backoff.

use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, Utc};
use std::time::Duration;

pub use crate::api::Trigger;

/// A validated schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    /// UTC time of day (hours, minutes) at which a due rotation happens.
    pub at_utc: Option<(u8, u8)>,
    pub auto: bool,
}

/// What the decision needs to know about the resource, its Secret and the clock.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub now: DateTime<Utc>,
    pub has_active: bool,
    pub in_flight: bool,
    pub target_complete: bool,
    pub last_rotated_at: Option<DateTime<Utc>>,
    pub last_attempted_at: Option<DateTime<Utc>>,
    pub failed_attempts: u32,
    pub rotate_token: Option<&'a str>,
    pub handled_token: Option<&'a str>,
    pub revoke_token: Option<&'a str>,
    pub handled_revoke_token: Option<&'a str>,
    /// The revoke token of an emergency already attempted and not complete.
    pub emergency_token: Option<&'a str>,
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Rotate(Trigger),
    /// Nothing to do before this instant.
    WaitUntil(DateTime<Utc>),
    /// Nothing to do until something changes (manual rotation only).
    Idle,
}

/// The first instant at or after `last_rotated + interval` that falls on `at_utc`
/// (or exactly `last_rotated + interval` without a time of day).
pub fn next_rotation_at(
    last_rotated: DateTime<Utc>,
    interval: Duration,
    at_utc: Option<(u8, u8)>,
) -> DateTime<Utc> {
    let interval = ChronoDuration::from_std(interval).unwrap_or(ChronoDuration::MAX);
    let earliest = last_rotated
        .checked_add_signed(interval)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let Some((h, m)) = at_utc else {
        return earliest;
    };
    let Some(time) = NaiveTime::from_hms_opt(u32::from(h), u32::from(m), 0) else {
        return earliest;
    };
    let same_day = earliest.date_naive().and_time(time).and_utc();
    if same_day >= earliest {
        same_day
    } else {
        same_day
            .checked_add_signed(ChronoDuration::days(1))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// How long to wait after the `failed_attempts`-th failure in a row: 30 s, doubling,
/// at most one hour. Deterministic, so that status shows the real retry time.
pub fn retry_backoff(failed_attempts: u32) -> Duration {
    let exp = failed_attempts.saturating_sub(1).min(7);
    Duration::from_secs(30u64 << exp).min(Duration::from_secs(3_600))
}

/// When the retry after the `failed_attempts`-th failure in a row, attempted at
/// `last`, is due. Saturates: `last` comes from status, which a user can write.
pub fn retry_at(last: DateTime<Utc>, failed_attempts: u32) -> DateTime<Utc> {
    ChronoDuration::from_std(retry_backoff(failed_attempts))
        .ok()
        .and_then(|backoff| last.checked_add_signed(backoff))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Decides whether to rotate now. The order matters: a failing rotation waits for its
/// backoff unless a person asks again (so a persistent failure never becomes a retry
/// storm); then a started rotation is finished before anything else.
pub fn decide(o: &Observed<'_>, schedule: &Schedule) -> Decision {
    let new_token = o.rotate_token.is_some_and(|t| Some(t) != o.handled_token);
    // An emergency goes first: a leaked credential must not wait for a backoff. An
    // emergency that was attempted and is not complete (the vendor failed) stays an
    // emergency, retried with the backoff of a failed rotation.
    if let Some(token) = o
        .revoke_token
        .filter(|t| Some(*t) != o.handled_revoke_token)
        && o.has_active
    {
        if o.failed_attempts > 0 && o.emergency_token == Some(token) {
            let last = o.last_attempted_at.unwrap_or(o.now);
            let retry_at = retry_at(last, o.failed_attempts);
            if o.now < retry_at {
                return Decision::WaitUntil(retry_at);
            }
        }
        return Decision::Rotate(Trigger::Emergency);
    }
    if o.failed_attempts > 0 {
        if new_token {
            return Decision::Rotate(Trigger::Manual);
        }
        let last = o.last_attempted_at.unwrap_or(o.now);
        let retry_at = retry_at(last, o.failed_attempts);
        return if o.now >= retry_at {
            Decision::Rotate(Trigger::Retry)
        } else {
            Decision::WaitUntil(retry_at)
        };
    }
    if o.in_flight {
        return Decision::Rotate(Trigger::Resume);
    }
    if !o.has_active {
        return Decision::Rotate(Trigger::Initial);
    }
    if new_token {
        return Decision::Rotate(Trigger::Manual);
    }
    if !o.target_complete {
        return Decision::Rotate(Trigger::TargetMissing);
    }
    if !schedule.auto {
        return Decision::Idle;
    }
    let last = o.last_rotated_at.unwrap_or(o.now);
    let due = next_rotation_at(last, schedule.interval, schedule.at_utc);
    if o.now >= due {
        Decision::Rotate(Trigger::Schedule)
    } else {
        Decision::WaitUntil(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};
    use proptest::prelude::*;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0).unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn observed(now: DateTime<Utc>) -> Observed<'static> {
        Observed {
            now,
            has_active: true,
            in_flight: false,
            target_complete: true,
            last_rotated_at: Some(t(3, 0)),
            last_attempted_at: Some(t(3, 0)),
            failed_attempts: 0,
            rotate_token: None,
            handled_token: None,
            revoke_token: None,
            handled_revoke_token: None,
            emergency_token: None,
        }
    }

    #[test]
    fn an_incomplete_emergency_is_retried_as_an_emergency_after_its_backoff() {
        let o = Observed {
            revoke_token: Some("leak"),
            emergency_token: Some("leak"),
            failed_attempts: 1,
            last_attempted_at: Some(t(4, 0)),
            ..observed(t(4, 0))
        };
        // No hot loop: the failed attempt's backoff (30s) first.
        assert!(matches!(decide(&o, &sched(true)), Decision::WaitUntil(_)));
        let later = Observed {
            now: t(4, 1),
            ..o.clone()
        };
        assert_eq!(
            decide(&later, &sched(true)),
            Decision::Rotate(Trigger::Emergency)
        );
        // A new token during a failing emergency goes at once.
        let new_token = Observed {
            revoke_token: Some("leak-2"),
            ..o
        };
        assert_eq!(
            decide(&new_token, &sched(true)),
            Decision::Rotate(Trigger::Emergency)
        );
    }

    #[test]
    fn emergency_revoke_goes_first_and_once() {
        let o = Observed {
            revoke_token: Some("leak"),
            failed_attempts: 2,
            ..observed(t(4, 0))
        };
        assert_eq!(
            decide(&o, &sched(true)),
            Decision::Rotate(Trigger::Emergency)
        );
        let handled = Observed {
            handled_revoke_token: Some("leak"),
            failed_attempts: 0,
            ..o
        };
        assert!(matches!(
            decide(&handled, &sched(true)),
            Decision::WaitUntil(_)
        ));
    }

    fn sched(auto: bool) -> Schedule {
        Schedule {
            interval: DAY,
            at_utc: Some((3, 0)),
            auto,
        }
    }

    #[test]
    fn interval_then_time_of_day() {
        // Rotated at 10:00; one day later is 10:00, the next 03:00 after that is the day after.
        let next = next_rotation_at(t(10, 0), DAY, Some((3, 0)));
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 12, 3, 0, 0).unwrap());
        // Rotated at 02:00; one day later is 02:00, 03:00 the same day follows.
        let next = next_rotation_at(t(2, 0), DAY, Some((3, 0)));
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 11, 3, 0, 0).unwrap());
        // No time of day: exactly the interval.
        assert_eq!(
            next_rotation_at(t(2, 0), DAY, None),
            t(2, 0) + ChronoDuration::days(1)
        );
    }

    #[test]
    fn first_reconcile_rotates() {
        let o = Observed {
            has_active: false,
            last_rotated_at: None,
            ..observed(t(5, 0))
        };
        assert_eq!(
            decide(&o, &sched(false)),
            Decision::Rotate(Trigger::Initial)
        );
    }

    #[test]
    fn waits_until_due_then_rotates() {
        let before = observed(t(23, 0));
        let due = Utc.with_ymd_and_hms(2026, 3, 11, 3, 0, 0).unwrap();
        assert_eq!(decide(&before, &sched(true)), Decision::WaitUntil(due));
        let after = Observed { now: due, ..before };
        assert_eq!(
            decide(&after, &sched(true)),
            Decision::Rotate(Trigger::Schedule)
        );
    }

    #[test]
    fn manual_token_rotates_once() {
        let o = Observed {
            rotate_token: Some("a"),
            handled_token: None,
            ..observed(t(4, 0))
        };
        assert_eq!(decide(&o, &sched(false)), Decision::Rotate(Trigger::Manual));
        let handled = Observed {
            handled_token: Some("a"),
            ..o
        };
        assert_eq!(decide(&handled, &sched(false)), Decision::Idle);
    }

    #[test]
    fn resume_wins_and_failures_back_off() {
        let o = Observed {
            in_flight: true,
            ..observed(t(4, 0))
        };
        assert_eq!(decide(&o, &sched(true)), Decision::Rotate(Trigger::Resume));
        let failing = Observed {
            in_flight: true,
            failed_attempts: 3,
            last_attempted_at: Some(t(4, 0)),
            ..o
        };
        assert_eq!(decide(&failing, &sched(true)), Decision::WaitUntil(t(4, 2)));
        let failed = Observed {
            failed_attempts: 2,
            last_attempted_at: Some(t(4, 0)),
            ..observed(t(4, 0))
        };
        assert_eq!(decide(&failed, &sched(true)), Decision::WaitUntil(t(4, 1)));
        let later = Observed {
            now: t(4, 1),
            ..failed.clone()
        };
        assert_eq!(
            decide(&later, &sched(true)),
            Decision::Rotate(Trigger::Retry)
        );
        let asked = Observed {
            rotate_token: Some("x"),
            ..failed
        };
        assert_eq!(
            decide(&asked, &sched(true)),
            Decision::Rotate(Trigger::Manual)
        );
    }

    #[test]
    fn missing_target_refills() {
        let o = Observed {
            target_complete: false,
            ..observed(t(4, 0))
        };
        assert_eq!(
            decide(&o, &sched(false)),
            Decision::Rotate(Trigger::TargetMissing)
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_backoff(1), Duration::from_secs(30));
        assert_eq!(retry_backoff(2), Duration::from_secs(60));
        assert_eq!(retry_backoff(5), Duration::from_secs(480));
        assert_eq!(retry_backoff(40), Duration::from_secs(3_600));
    }

    proptest! {
        #[test]
        fn next_rotation_respects_interval_and_time_of_day(
            start in 0i64..4_000_000_000,
            interval_s in 10u64..(400 * 86_400),
            hours in 0u8..24,
            minutes in 0u8..60,
        ) {
            let last = DateTime::from_timestamp(start, 0).unwrap();
            let interval = Duration::from_secs(interval_s);
            let earliest = last + ChronoDuration::from_std(interval).unwrap();
            let next = next_rotation_at(last, interval, Some((hours, minutes)));
            prop_assert!(next >= earliest);
            prop_assert!(next < earliest + ChronoDuration::days(1));
            prop_assert_eq!((next.hour(), next.minute(), next.second()), (u32::from(hours), u32::from(minutes), 0));
        }

        #[test]
        fn next_rotation_is_monotonic(
            a in 0i64..4_000_000_000,
            delta in 0i64..10_000_000,
            interval_s in 10u64..(90 * 86_400),
            at in proptest::option::of((0u8..24, 0u8..60)),
        ) {
            let interval = Duration::from_secs(interval_s);
            let first = DateTime::from_timestamp(a, 0).unwrap();
            let second = DateTime::from_timestamp(a + delta, 0).unwrap();
            prop_assert!(next_rotation_at(first, interval, at) <= next_rotation_at(second, interval, at));
        }

        #[test]
        fn never_rotates_on_schedule_before_due(
            last in 0i64..4_000_000_000,
            elapsed in 0i64..(40 * 86_400),
            interval_days in 1u64..30,
        ) {
            let last_rotated = DateTime::from_timestamp(last, 0).unwrap();
            let now = last_rotated + ChronoDuration::seconds(elapsed);
            let schedule = Schedule { interval: Duration::from_secs(interval_days * 86_400), at_utc: Some((3, 0)), auto: true };
            let o = Observed { now, last_rotated_at: Some(last_rotated), ..observed(now) };
            // Due, computed here without the function under test: the first 03:00 UTC at
            // or after `last + interval`.
            let earliest = last_rotated + ChronoDuration::days(i64::try_from(interval_days).unwrap());
            let mut due = earliest.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
            if due < earliest {
                due += ChronoDuration::days(1);
            }
            match decide(&o, &schedule) {
                Decision::Rotate(Trigger::Schedule) => prop_assert!(now >= due),
                Decision::WaitUntil(at) => { prop_assert!(now < due); prop_assert_eq!(at, due); }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
