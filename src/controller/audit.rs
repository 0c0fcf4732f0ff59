//! The audit trail: who did what to which credential, written to the resource's vault
//! as it happens. Records only; the crash points between steps are their own observer
//! ([`super::failpoint::Checkpoints`]).

use crate::api::{REVOKE_ANNOTATION, ROTATE_ANNOTATION, ROTATE_TOKEN_PREFIX};
use crate::rotation::{Observer, Step, Trigger};
use crate::vault::{AuditRecord, Vault};
use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use std::collections::BTreeMap;
use tracing::warn;

/// Writes audit records for one actor.
pub(super) struct Audit<'a> {
    vault: &'a Vault,
    actor: &'static str,
    /// The active credential's fingerprint before this rotation (shown as the old one).
    old_fingerprint: Option<String>,
}

impl<'a> Audit<'a> {
    /// Records the work of `actor` (see [`actor`]); `old_fingerprint` is the active
    /// credential's before a rotation.
    pub(super) fn new(
        vault: &'a Vault,
        actor: &'static str,
        old_fingerprint: Option<String>,
    ) -> Self {
        Self {
            vault,
            actor,
            old_fingerprint,
        }
    }

    /// Records the operator's own work outside a rotation (sweeps, restores).
    pub(super) fn operator(vault: &'a Vault) -> Self {
        Self::new(vault, "operator", None)
    }

    /// The active credential's fingerprint before this rotation.
    pub(super) fn old_fingerprint(&self) -> Option<String> {
        self.old_fingerprint.clone()
    }

    pub(super) async fn record(
        &self,
        action: &str,
        credential: Option<&str>,
        old: Option<String>,
        new: Option<String>,
        detail: Option<String>,
    ) {
        let record = AuditRecord {
            // Milliseconds: what `rotor audit` shows, and fewer bytes in status.
            time: Utc::now().trunc_subsecs(3),
            actor: self.actor.into(),
            action: action.into(),
            credential: credential.map(str::to_string),
            old_fingerprint: old,
            new_fingerprint: new,
            detail,
        };
        if let Err(e) = self.vault.audit(record).await {
            warn!(error = %e, action, "writing the audit trail failed");
        }
    }
}

#[async_trait]
impl Observer for Audit<'_> {
    async fn step(&self, step: Step<'_>) {
        match step {
            Step::RevokedOld(id) => {
                let detail = Some("issued two rotations ago".into());
                self.record("revoke", Some(id), None, None, detail).await;
            }
            Step::NotRevoked(id) => {
                warn!(credential = %id, "the provider cannot revoke; the credential issued two rotations ago stays valid at the vendor");
                let detail = Some("the provider cannot revoke: still valid at the vendor".into());
                self.record("revoke-unsupported", Some(id), None, None, detail)
                    .await;
            }
            Step::Issued(c) => {
                self.record("issue", Some(&c.id), None, Some(c.fingerprint()), None)
                    .await;
            }
            Step::Resumed(c) => {
                let detail = Some("resumed from the escrow".into());
                self.record("issue", Some(&c.id), None, Some(c.fingerprint()), detail)
                    .await;
            }
            Step::Tested(c) => {
                let detail = Some("passed".into());
                self.record("test", Some(&c.id), None, Some(c.fingerprint()), detail)
                    .await;
            }
            Step::TestFailed(c) => {
                let detail = Some("failed; the new credential is revoked".into());
                let old = self.old_fingerprint.clone();
                self.record("test", Some(&c.id), old, Some(c.fingerprint()), detail)
                    .await;
            }
        }
    }
}

/// Who asked for a rotation, as the audit trail names it: a schedule, a person (the
/// annotation by hand, or the CLI, whose tokens start with [`ROTATE_TOKEN_PREFIX`]),
/// or the operator itself (the first fill, a missing Secret, a resume or a retry).
pub(super) fn actor(trigger: Trigger, annotations: &BTreeMap<String, String>) -> &'static str {
    let token = match trigger {
        Trigger::Emergency => annotations.get(REVOKE_ANNOTATION),
        _ => annotations.get(ROTATE_ANNOTATION),
    };
    match trigger {
        Trigger::Schedule => "schedule",
        Trigger::Manual | Trigger::Emergency
            if token.is_some_and(|t| t.starts_with(ROTATE_TOKEN_PREFIX)) =>
        {
            "cli"
        }
        Trigger::Manual | Trigger::Emergency => "annotation",
        _ => "operator",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_is_who_asked() {
        let none = BTreeMap::new();
        let annotated = |key: &str, token: &str| BTreeMap::from([(key.into(), token.into())]);
        let cli_rotate = annotated(ROTATE_ANNOTATION, "cli-1700000000");
        let hand_rotate = annotated(ROTATE_ANNOTATION, "2024-05-01");
        let cli_revoke = annotated(REVOKE_ANNOTATION, "cli-1700000000");
        let hand_revoke = annotated(REVOKE_ANNOTATION, "leak-42");
        let cases: &[(Trigger, &BTreeMap<String, String>, &str)] = &[
            (Trigger::Schedule, &none, "schedule"),
            // A schedule is the schedule even with a token lying around.
            (Trigger::Schedule, &cli_rotate, "schedule"),
            (Trigger::Manual, &cli_rotate, "cli"),
            (Trigger::Manual, &hand_rotate, "annotation"),
            // A manual rotation reads the rotate token, never the revoke token.
            (Trigger::Manual, &cli_revoke, "annotation"),
            (Trigger::Emergency, &cli_revoke, "cli"),
            (Trigger::Emergency, &hand_revoke, "annotation"),
            (Trigger::Emergency, &cli_rotate, "annotation"),
            (Trigger::Initial, &none, "operator"),
            (Trigger::TargetMissing, &cli_rotate, "operator"),
            // A resumed or retried rotation is the operator's doing.
            (Trigger::Resume, &cli_rotate, "operator"),
            (Trigger::Retry, &hand_rotate, "operator"),
        ];
        for (trigger, annotations, want) in cases {
            assert_eq!(
                actor(*trigger, annotations),
                *want,
                "{trigger:?} with {annotations:?}"
            );
        }
    }
}
