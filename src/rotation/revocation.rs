//! When a credential that stopped being active may be revoked: the gates every
//! revocation passes but an emergency's (minValidity, the consumers' rollout, the
//! provider's word on usage, maxWait). Pure: the caller gathers what it judges.

use super::Usage;
use crate::api::{OnTimeout, RevokeAfter};
use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// `spec.revocation` with its defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationPolicy {
    pub after: RevokeAfter,
    pub max_wait: Duration,
    pub on_timeout: OnTimeout,
    pub min_validity: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        Self {
            after: RevokeAfter::NextRotation,
            max_wait: crate::api::DEFAULT_MAX_WAIT,
            on_timeout: OnTimeout::Keep,
            min_validity: crate::api::DEFAULT_MIN_VALIDITY,
        }
    }
}

/// What the consumers of the rotation that retired the credential are doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerState {
    /// The resource names no consumers.
    None,
    /// These consumers (`Kind/name`) still run pods started before the rotation.
    Waiting(Vec<String>),
    /// Every consumer has rolled out.
    RolledOut,
}

/// What a revocation may do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Revoke. `forced`: maxWait passed with `onTimeout: Revoke` while something still
    /// waited (said in the Event).
    Revoke { forced: Option<String> },
    /// Not yet: `why` in words; look again at `until` (or sooner when consumers move).
    Wait {
        why: String,
        until: DateTime<Utc>,
        /// maxWait has passed (`onTimeout: Keep`): the credential stays valid until a
        /// person acts or the consumers finish.
        stuck: bool,
        /// Whether what it waits for changes by itself (consumers rolling out, the
        /// provider's usage): look before `until`. Not for minValidity, which ends at
        /// `until` exactly.
        poll: bool,
    },
}

/// Judges revoking a credential that stopped being active at `since`. `usage` is the
/// provider's answer, or why it gave none: no answer waits like "in use".
pub fn judge(
    policy: &RevocationPolicy,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    consumers: &ConsumerState,
    usage: Result<&Usage, &str>,
) -> Verdict {
    let after = |d: Duration| {
        TimeDelta::from_std(d)
            .ok()
            .and_then(|d| since.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    let valid_until = after(policy.min_validity);
    if now < valid_until {
        return Verdict::Wait {
            why: format!(
                "revocation.minValidity: it stopped being active at {}, so it stays valid until {}",
                since.to_rfc3339(),
                valid_until.to_rfc3339()
            ),
            until: valid_until,
            stuck: false,
            poll: false,
        };
    }
    let mut waiting = Vec::new();
    if let ConsumerState::Waiting(names) = consumers {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = names.len().saturating_sub(shown.len());
        let mut list = shown.join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        waiting.push(format!("consumers still rolling out: {list}"));
    }
    match usage {
        Ok(u @ Usage::InUse { .. }) => waiting.push(format!("the provider reports it {u}")),
        Ok(_) => {}
        Err(e) => waiting.push(format!(
            "the provider could not say whether it is in use ({e})"
        )),
    }
    if waiting.is_empty() {
        return Verdict::Revoke { forced: None };
    }
    let why = waiting.join("; ");
    let deadline = after(policy.max_wait);
    if now < deadline {
        return Verdict::Wait {
            why,
            until: deadline,
            stuck: false,
            poll: true,
        };
    }
    match policy.on_timeout {
        OnTimeout::Revoke => Verdict::Revoke {
            forced: Some(format!(
                "revocation.maxWait ({}) passed with {why}; onTimeout: Revoke",
                humantime::format_duration(policy.max_wait)
            )),
        },
        OnTimeout::Keep => Verdict::Wait {
            why: format!(
                "revocation.maxWait ({}) passed with {why}; onTimeout: Keep keeps it valid",
                humantime::format_duration(policy.max_wait)
            ),
            until: deadline,
            stuck: true,
            poll: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::minutes(min)
    }

    #[test]
    fn every_gate_in_its_order() {
        let policy = RevocationPolicy::default(); // minValidity 10m, maxWait 1h, Keep
        let revoke = RevocationPolicy {
            on_timeout: OnTimeout::Revoke,
            ..policy
        };
        let zero = RevocationPolicy {
            min_validity: Duration::ZERO,
            ..policy
        };
        let web = ConsumerState::Waiting(vec!["Deployment/web".into()]);
        let sessions = Usage::InUse {
            count: Some(2),
            last_used: None,
        };
        let none = ConsumerState::None;
        let done = ConsumerState::RolledOut;
        let unknown = Usage::Unknown;
        // (case, policy, minutes since it stopped being active, consumers, usage, verdict)
        let failed = "HTTP 503";
        type Case<'a> = (
            &'a str,
            &'a RevocationPolicy,
            i64,
            &'a ConsumerState,
            Result<&'a Usage, &'a str>,
            &'a str,
        );
        let cases: [Case; 13] = [
            (
                "the provider cannot answer",
                &policy,
                11,
                &done,
                Err(failed),
                "wait: the provider could not say whether it is in use (HTTP 503)",
            ),
            (
                "the provider cannot answer, Keep",
                &policy,
                61,
                &done,
                Err(failed),
                "stuck: revocation.maxWait (1h) passed with the provider could not say",
            ),
            (
                "the provider cannot answer, Revoke",
                &revoke,
                61,
                &none,
                Err(failed),
                "forced: revocation.maxWait (1h) passed with the provider could not say",
            ),
            (
                "a minute after",
                &policy,
                1,
                &none,
                Ok(&unknown),
                "wait: revocation.minValidity",
            ),
            // Two `rotor rotate` a minute apart: even consumers that rolled out wait.
            (
                "rolled out, a minute after",
                &policy,
                1,
                &done,
                Ok(&unknown),
                "wait: revocation.minValidity",
            ),
            ("minValidity 0s", &zero, 0, &none, Ok(&unknown), "revoke"),
            (
                "after minValidity",
                &policy,
                10,
                &none,
                Ok(&unknown),
                "revoke",
            ),
            (
                "after minValidity, rolled out",
                &policy,
                11,
                &done,
                Ok(&unknown),
                "revoke",
            ),
            (
                "a consumer rolling out",
                &policy,
                11,
                &web,
                Ok(&unknown),
                "wait: consumers still rolling out: Deployment/web",
            ),
            (
                "in use",
                &policy,
                11,
                &done,
                Ok(&sessions),
                "wait: the provider reports it in use (2 sessions)",
            ),
            (
                "stuck, Keep",
                &policy,
                61,
                &web,
                Ok(&unknown),
                "stuck: revocation.maxWait (1h) passed",
            ),
            (
                "stuck, Revoke",
                &revoke,
                61,
                &web,
                Ok(&unknown),
                "forced: revocation.maxWait (1h) passed with consumers",
            ),
            (
                "unused after maxWait",
                &revoke,
                61,
                &none,
                Ok(&Usage::Unused),
                "revoke",
            ),
        ];
        for (case, policy, minutes, consumers, usage, want) in cases {
            let got = match judge(policy, at(0), at(minutes), consumers, usage) {
                Verdict::Revoke { forced: None } => "revoke".to_string(),
                Verdict::Revoke { forced: Some(why) } => format!("forced: {why}"),
                Verdict::Wait {
                    why, stuck: true, ..
                } => format!("stuck: {why}"),
                Verdict::Wait { why, .. } => format!("wait: {why}"),
            };
            assert!(got.starts_with(want), "{case}: {got}");
        }
    }

    #[test]
    fn waits_until_the_next_gate_opens() {
        let policy = RevocationPolicy::default();
        let Verdict::Wait { until, poll, .. } = judge(
            &policy,
            at(0),
            at(3),
            &ConsumerState::None,
            Ok(&Usage::Unknown),
        ) else {
            panic!("waits");
        };
        assert_eq!(until, at(10));
        assert!(
            !poll,
            "minValidity ends at its time: nothing to look at before"
        );
        let web = ConsumerState::Waiting(vec!["Deployment/web".into()]);
        let Verdict::Wait { until, poll, .. } =
            judge(&policy, at(0), at(12), &web, Ok(&Usage::Unknown))
        else {
            panic!("waits");
        };
        assert_eq!(until, at(60), "the stuck check comes at maxWait");
        assert!(
            poll,
            "consumers move by themselves: looked at before maxWait"
        );
    }

    #[test]
    fn a_long_list_of_consumers_is_cut() {
        let many = ConsumerState::Waiting((0..40).map(|i| format!("Deployment/w{i}")).collect());
        let policy = RevocationPolicy::default();
        let Verdict::Wait { why, .. } = judge(&policy, at(0), at(20), &many, Ok(&Usage::Unknown))
        else {
            panic!("waits");
        };
        assert!(why.ends_with("and 35 more"), "{why}");
    }
}
