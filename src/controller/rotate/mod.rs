//! One rotation, as named steps. Each step is idempotent and recorded before the next,
//! so a rotation that dies anywhere is resumed, never repeated:
//!
//! 1. [`record_intent`](Run::record_intent): the slot and the credential's name in
//!    status, compare-and-swap on the object, before anything external happens;
//! 2. [`open_vault`](Run::open_vault) and [`resume`](Run::resume): a credential a dead
//!    rotation issued and kept is taken up, never issued twice;
//! 3. [`provider_calls`](Run::provider_calls): revoke the target slot's old credential,
//!    issue (kept in the vault the moment it exists), test;
//! 4. [`promote_admin`](Run::promote_admin): a single-phase provider's new admin key;
//! 5. [`write_secret`](Run::write_secret): the target Secret;
//! 6. [`revoke_older`](Run::revoke_older): an emergency revokes every older credential;
//! 7. [`flip`]: the new slot becomes active, in status;
//! 8. [`housekeeping`](Run::housekeeping): revoked entries expire, the orphan sweep.
//!
//! Crash points (tests only) stand between the steps, in [`Run::rotate`] and
//! [`Run::issue_and_deliver`]; those inside the provider calls are an observer of the
//! core's steps ([`super::failpoint::Checkpoints`]).

mod activate;
mod emergency;
mod issue;

use emergency::can_revoke;

use super::Error;
use super::audit;
use super::failpoint;
use super::reconcile::Run;
use super::secret::Target;
use super::status::{self, Reason};
use super::validate::ValidSpec;
use crate::api::SecretRotationStatus;
use crate::notify::NotifyEvent;
use crate::rotation::{
    self, Credential, NameParts, RotationError, RotationPlan, SlotPair, Trigger,
};
use crate::vault::{SlotRef, Vault, VaultError};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{info, warn};

/// Writes `records`, then every audit record `vault` holds, to the escrow; a failure
/// is logged (the records stay held).
async fn write_trail(vault: &Vault, records: Vec<crate::vault::AuditRecord>) {
    vault.hold_audit_with(records);
    if let Err(e) = vault.flush_audit().await {
        warn!(error = %e, "writing the audit trail failed");
    }
}

/// What one rotation is, decided before any step runs.
pub(super) struct Rotation<'a> {
    pub spec: &'a ValidSpec,
    pub trigger: Trigger,
    /// Who asked, as the audit trail names it.
    pub actor: &'static str,
    /// The slots before this rotation.
    pub before: SlotPair,
    pub plan: RotationPlan,
    /// The number of this rotation (status `rotationCount` once it completes).
    pub sequence: u64,
    /// The credential's deterministic name: a resumed rotation issues under the same.
    pub credential_name: String,
    pub started_at: DateTime<Utc>,
    /// Whether this takes up a rotation into the same slot that did not complete.
    pub resuming: bool,
    /// The SecretRotation's uid and name.
    pub uid: String,
    pub resource: String,
}

impl Rotation<'_> {
    /// The active credential's fingerprint before this rotation.
    fn old_fingerprint(&self) -> Option<String> {
        self.before.active_slot().map(|s| s.fingerprint.clone())
    }
}

/// Why a step failed. The active credential is untouched in every case; what differs is
/// whether the rotation stays in flight, so that its retry takes up what was done.
#[derive(Debug, thiserror::Error)]
pub(super) enum RotateError {
    /// The vault cannot be opened: nothing was issued yet.
    #[error("the escrow is unavailable: {0}")]
    VaultUnavailable(#[source] VaultError),
    /// The vault cannot be read for the credential a dead rotation kept.
    #[error("the escrow is unavailable: {0}")]
    VaultUnreadable(#[source] VaultError),
    /// A provider call failed. A single-phase provider may have replaced the credential
    /// before failing (`replaced_in_place`): the retry resumes it.
    #[error("{source}")]
    Provider {
        source: RotationError,
        replaced_in_place: bool,
    },
    #[error("recording the new admin credential in Secret {secret:?} failed: {reason}")]
    AdminPromotion { secret: String, reason: String },
    #[error("writing Secret {secret:?} failed: {source}")]
    SecretWrite { secret: String, source: kube::Error },
}

impl RotateError {
    /// Whether the rotation stays in flight: something was issued that the retry must
    /// take up rather than issue again.
    pub(super) fn resumable(&self) -> bool {
        match self {
            Self::VaultUnavailable(_) => false,
            Self::Provider {
                replaced_in_place, ..
            } => *replaced_in_place,
            Self::VaultUnreadable(_) | Self::AdminPromotion { .. } | Self::SecretWrite { .. } => {
                true
            }
        }
    }
}

/// A credential that is issued, tested, kept and handed to consumers, not yet active.
struct Delivered {
    vault: Vault,
    credential: Credential,
    /// The credentials this rotation took out of the target slot, and the one a
    /// provider that cannot revoke left valid instead.
    revoked: (Vec<SlotRef>, Option<SlotRef>),
}

impl Run {
    /// Rotates: the steps in their order (see the module's documentation).
    pub(super) async fn rotate(
        &self,
        spec: &ValidSpec,
        target: &Target,
        trigger: Trigger,
    ) -> Result<Action, Error> {
        if trigger == Trigger::Emergency
            && let Some(done) = self.emergency_first(spec).await?
        {
            return Ok(done);
        }
        let r = self.plan_rotation(spec, trigger);
        info!(namespace = %self.sr.namespace().unwrap_or_default(), name = %r.resource, trigger = trigger.as_str(), slot = r.plan.target, credential = %r.credential_name, "rotating");
        let intent = self.record_intent(&r).await?;
        failpoint::reached("after_intent", r.sequence).await;
        match self.issue_and_deliver(&r, target).await {
            Ok(delivered) => self.activate(&r, intent, delivered).await,
            Err(e) => self.fail(spec, intent, trigger, &e).await,
        }
    }

    /// Steps 2–5: everything up to the moment consumers hold the new credential.
    async fn issue_and_deliver(
        &self,
        r: &Rotation<'_>,
        target: &Target,
    ) -> Result<Delivered, RotateError> {
        let vault = self.open_vault(r).await?;
        // The rotation's audit records go with its vault write (the credential's
        // entry) or, after it, with the flip in status (`auditTail`), instead of one
        // write each. The last rotation's records status still carries go first.
        vault.hold_status_tail(&self.old.audit_tail);
        let revoked = self.dropped_from_target_slot(r);
        match self.deliver(r, target, &vault, &revoked.0).await {
            Ok(credential) => Ok(Delivered {
                vault,
                credential,
                revoked,
            }),
            Err(e) => {
                write_trail(&vault, Vec::new()).await;
                Err(e)
            }
        }
    }

    async fn deliver(
        &self,
        r: &Rotation<'_>,
        target: &Target,
        vault: &Vault,
        revoked: &[SlotRef],
    ) -> Result<Credential, RotateError> {
        let kept = self.resume(r, vault).await?;
        // A resumed credential's rotation retired _PREVIOUS before its revoke already
        // (and may have written the Secret since): nothing to take out again.
        if kept.is_none() {
            self.retire_previous(r, target).await?;
        }
        let credential = self.provider_calls(r, vault, kept, revoked).await?;
        self.promote_admin(r, &credential).await?;
        self.write_secret(r, target, &credential).await?;
        failpoint::reached("after_secret", r.sequence).await;
        Ok(credential)
    }

    /// What this rotation is: the slot it fills, its number, and the name of the
    /// credential it issues (the in-flight one's, when a dead rotation is resumed).
    fn plan_rotation<'a>(&self, spec: &'a ValidSpec, trigger: Trigger) -> Rotation<'a> {
        let before = status::slot_pair(&self.old);
        let plan = before.plan(spec.strategy);
        let sequence = self.old.rotation_count.saturating_add(1);
        let uid = self.sr.uid().unwrap_or_default();
        let resumed = self
            .old
            .in_flight
            .as_ref()
            .filter(|f| f.target_index == plan.target);
        // Millisecond precision: providers name credentials after it (Convex).
        let started_at = resumed.map_or_else(Utc::now, |f| f.started_at);
        let credential_name = match resumed {
            Some(f) => f.credential_name.clone(),
            None => spec.provider.credential_name(&NameParts {
                uid: &uid,
                sequence,
                started_at,
            }),
        };
        Rotation {
            spec,
            trigger,
            actor: audit::actor(trigger, self.sr.annotations()),
            before,
            plan,
            sequence,
            credential_name,
            started_at,
            resuming: resumed.is_some(),
            uid,
            resource: self.sr.name_any(),
        }
    }

    /// A failed step: the active credential stays, the retry is scheduled with
    /// backoff, and status, the log and an Event say why.
    pub(super) async fn fail(
        &self,
        spec: &ValidSpec,
        mut status: SecretRotationStatus,
        trigger: Trigger,
        error: &RotateError,
    ) -> Result<Action, Error> {
        if !error.resumable() {
            status.in_flight = None;
        }
        status.failed_attempts = self.old.failed_attempts.saturating_add(1);
        let retry_in = rotation::retry_backoff(status.failed_attempts);
        let retry_at = rotation::retry_at(self.now, status.failed_attempts);
        status.next_rotation_at = Some(retry_at);
        self.export_rotation(false);
        self.export_schedule(&status);
        let pair = status::slot_pair(&status);
        let still = match pair.active {
            Some(a) => format!("the credential in slot {a} stays active"),
            None => "no credential has been issued yet".into(),
        };
        let message = format!(
            "rotation failed ({}, attempt {}): {error}; {still}; retrying at {}",
            trigger.as_str(),
            status.failed_attempts,
            retry_at.to_rfc3339()
        );
        status::set_phase(
            &mut status,
            Reason::RotationFailed,
            message.clone(),
            self.generation(),
            self.now,
        );
        self.write_status(&status).await?;
        warn!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), trigger = trigger.as_str(), attempt = status.failed_attempts, %message, "rotation failed");
        self.publish(
            EventType::Warning,
            "RotationFailed",
            "Rotate",
            message.clone(),
        )
        .await;
        self.notify(spec, NotifyEvent::RotationFailed, message, None)
            .await;
        Ok(Action::requeue(retry_in))
    }
}
