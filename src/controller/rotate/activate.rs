//! Steps 4–8: hand the new credential to consumers (admin Secret, target Secret), then
//! make it active (the flip, in status) and clean up after it.

use super::{Delivered, RotateError, Rotation, can_revoke, write_trail};
use crate::api::{AUDIT_TAIL_LIMIT, PendingRevocation, SecretRotationStatus, Strategy};
use crate::controller::Error;
use crate::controller::audit::Audit;
use crate::controller::credentials;
use crate::controller::failpoint;
use crate::controller::reconcile::{Run, describe_active};
use crate::controller::secret::{self, Target};
use crate::controller::status::{self, Reason};
use crate::controller::validate::ValidSpec;
use crate::notify::NotifyEvent;
use crate::rotation::{self, Credential, Slot, SlotPair, Trigger};
use crate::vault::{SlotRef, Vault};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use tracing::{info, warn};

impl Run {
    /// Step 4: the admin credential a single-phase provider replaced with the new one.
    pub(super) async fn promote_admin(
        &self,
        r: &Rotation<'_>,
        credential: &Credential,
    ) -> Result<(), RotateError> {
        let admin = r.spec.provider.replaces_admin_credential();
        let value = credential.outputs.get(credential.secret_output);
        let (Some(admin), Some(value)) = (admin, value) else {
            return Ok(());
        };
        credentials::promote_admin(&self.secrets, admin, &r.resource, value)
            .await
            .map_err(|e| RotateError::AdminPromotion {
                secret: admin.name.clone(),
                reason: e.to_string(),
            })
    }

    /// Step 5: the target Secret gets the new credential; with dual-phase it keeps the
    /// active one as `_PREVIOUS` (an emergency hands out only the new one).
    pub(super) async fn write_secret(
        &self,
        r: &Rotation<'_>,
        target: &Target,
        credential: &Credential,
    ) -> Result<(), RotateError> {
        let spec = r.spec;
        let previous = match (spec.strategy, r.trigger) {
            (Strategy::DualPhase, Trigger::Emergency) | (Strategy::SinglePhase, _) => {
                BTreeMap::new()
            }
            (Strategy::DualPhase, _) => target.active_values(
                spec,
                spec.provider.secret_output(),
                r.before.active_slot().map(|s| s.fingerprint.as_str()),
            ),
        };
        let values = secret::values_of(credential, spec);
        let fingerprint = credential.fingerprint();
        self.apply_secret(spec, &values, &previous, r.plan.target, &fingerprint)
            .await
            .map_err(|source| RotateError::SecretWrite {
                secret: self.sr.spec.target.name.clone(),
                source,
            })
    }

    /// Steps 6–8 once consumers hold the new credential: an emergency revokes every
    /// older one, the flip makes the new one active, then housekeeping.
    pub(super) async fn activate(
        &self,
        r: &Rotation<'_>,
        mut status: SecretRotationStatus,
        delivered: Delivered,
    ) -> Result<Action, Error> {
        let Delivered {
            vault,
            credential,
            revoked: (mut revoked, unrevoked),
        } = delivered;
        let audit = Audit::new(&vault, r.actor, r.old_fingerprint());
        self.warn_unrevoked(r, unrevoked.as_ref()).await;
        let pending = match r.trigger {
            Trigger::Emergency => {
                self.revoke_older(r, &credential, &audit, &mut revoked)
                    .await
            }
            _ => Vec::new(),
        };
        let pair = flip(r, &mut status, &credential, pending, self.now);
        status.issued_by = Some(status::provider_identity(&self.sr.spec.provider));
        // Consumers hold a credential that stopped working (single-phase, emergency):
        // restarted at once; else after the restart delay, so rotations of one
        // workload's Secrets close together cause one rollout.
        let at_once = r.spec.strategy == Strategy::SinglePhase || r.trigger == Trigger::Emergency;
        status.consumers = self
            .start_consumers(r.spec, r.sequence, &credential.fingerprint(), at_once)
            .await;
        if !status.pending_revocations.is_empty() {
            // With the held audit records.
            if let Err(e) = vault.mark_revoked(&revoked, self.retention()).await {
                warn!(error = %e, "marking revoked escrow entries failed");
            }
            write_trail(&vault, Vec::new()).await;
            self.export_rotation(true);
            return self.emergency_incomplete(status, &vault, r.spec).await;
        }
        let fingerprint = credential.fingerprint();
        let message = match r.trigger {
            Trigger::Emergency => format!(
                "emergency revoke: slot {} active ({fingerprint}); every older credential revoked",
                r.plan.target
            ),
            _ => describe_active(&pair, r.spec.strategy),
        };
        // The activation is in the audit trail when status says it: the records held
        // since the vault's entry write (issue, test, activate) go into this very
        // status write (`auditTail`), and into the vault with its next write. A crash
        // before it resumes the rotation, which records them again — a trail may
        // repeat a step, never miss one.
        let detail = Some(format!("slot {}", r.plan.target));
        let new = Some(fingerprint.clone());
        audit
            .record(
                "activate",
                Some(&credential.id),
                audit.old_fingerprint(),
                new,
                detail,
            )
            .await;
        // What this rotation revoked was marked with the entry's write; a resumed
        // rotation (no entry write) or a single-phase replacement marks it here.
        if let Err(e) = vault.mark_revoked(&revoked, self.retention()).await {
            warn!(error = %e, "marking revoked escrow entries failed");
        }
        let mut tail = vault.take_unwritten();
        if tail.len() > AUDIT_TAIL_LIMIT {
            // More than status carries (writes of the vault failed, resumes): written.
            write_trail(&vault, std::mem::take(&mut tail)).await;
            tail = vault.take_unwritten();
            let over = tail.len().saturating_sub(AUDIT_TAIL_LIMIT);
            tail.drain(..over);
        }
        status.audit_tail = tail.clone();
        // Expired entries go and the bounds hold before status reports the escrow: a
        // blind entry write applied neither (nothing to write in the usual case; the
        // held records are in `tail` already, so they do not make one).
        if let Err(e) = vault.cleanup().await {
            warn!(error = %e, "escrow cleanup failed");
        }
        let (status, stale_at) = match self
            .commit_rotated(status, message.clone(), &vault, r.spec)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                // Not in status: into the vault, so no record is lost — but the flip
                // did not happen (the retry resumes the rotation and records it).
                tail.retain(|r| r.action != "activate");
                write_trail(&vault, tail).await;
                return Err(e);
            }
        };
        if self.tail_dropped.load(std::sync::atomic::Ordering::Relaxed) {
            warn!(namespace = %self.sr.namespace().unwrap_or_default(), name = %r.resource, "status.auditTail was dropped by the API server: the SecretRotation CRD in the cluster is older than this rotor (apply crds/); the audit records go to the escrow with a write of their own");
            write_trail(&vault, tail).await;
        }
        self.export_rotation(true);
        failpoint::reached("after_flip", r.sequence).await;
        info!(namespace = %self.sr.namespace().unwrap_or_default(), name = %r.resource, trigger = r.trigger.as_str(), slot = r.plan.target, %fingerprint, rotation = r.sequence, "rotated");
        self.announce_rotated(r, message.clone()).await;
        self.notify(r.spec, NotifyEvent::Rotated, message, Some(fingerprint))
            .await;
        self.housekeeping(r, &vault, &revoked, &pair).await;
        // What housekeeping recorded (revokes, a sweep) and did not write with its own.
        write_trail(&vault, Vec::new()).await;
        // No reconcile follows this status write by itself (rotor's own writes wake
        // nothing): ask for the next look — the next rotation, staleness, the sweep.
        // Consumers: the restart (after its delay), the rollout, an early revocation.
        let soon = (status.consumers.is_some()
            || r.spec.revocation.after == crate::api::RevokeAfter::Rollout)
            .then(|| self.now + chrono::TimeDelta::seconds(1));
        Ok(self.next_look([
            status.next_rotation_at,
            stale_at,
            self.sweep_due(r.spec),
            soon,
        ]))
    }

    /// The credentials this rotation takes out of the target slot (each by its own
    /// identity: a PostgreSQL user name is the id of every credential of its slot, the
    /// new one included), and — for a provider that cannot revoke — the one it leaves
    /// valid at the vendor instead.
    pub(super) fn dropped_from_target_slot(
        &self,
        r: &Rotation<'_>,
    ) -> (Vec<SlotRef>, Option<SlotRef>) {
        let takes_out = r.plan.revoke_before_issue.is_some() || r.plan.replaces.is_some();
        let mut dropped: Vec<SlotRef> = r.before.slots[usize::from(r.plan.target)]
            .iter()
            .filter(|_| takes_out)
            .map(|s| SlotRef {
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
            })
            .collect();
        let kept = if can_revoke(&self.sr.spec.provider) {
            None
        } else {
            dropped.pop()
        };
        (dropped, kept)
    }

    /// A provider that cannot revoke leaves what a rotation drops from its slot valid
    /// at the vendor: allowed for ordinary rotations, said once (at the first rotation
    /// that drops a credential), besides the audit trail's record every time.
    async fn warn_unrevoked(&self, r: &Rotation<'_>, kept: Option<&SlotRef>) {
        let Some(kept) = kept.filter(|_| self.old.rotation_count == 2) else {
            return;
        };
        self.publish(
            EventType::Warning,
            "RevokeUnsupported",
            "Rotate",
            format!("the {} provider has no revoke request: credential {}, dropped from its slot, stays valid at the vendor; every later rotation leaves one more (configure spec.provider.http.revoke)", r.spec.provider.kind(), kept.id),
        )
        .await;
    }

    /// Writes a completed rotation (or emergency) to status: phase Rotated with
    /// `message`, the vault's state, the schedule metrics.
    pub(super) async fn commit_rotated(
        &self,
        mut status: SecretRotationStatus,
        message: String,
        vault: &Vault,
        spec: &ValidSpec,
    ) -> Result<(SecretRotationStatus, Option<DateTime<Utc>>), Error> {
        status::set_phase(
            &mut status,
            Reason::Rotated,
            message,
            self.generation(),
            self.now,
        );
        let stale_at = self.judge_staleness(spec, &mut status).await;
        status.escrow = self.vault_status(vault, spec).await;
        self.write_status(&status).await?;
        self.export_schedule(&status);
        Ok((status, stale_at))
    }

    /// The Events of a completed rotation: Rotated (or EmergencyRevoked), and for a
    /// single-phase provider the warning that the old credential stopped working.
    async fn announce_rotated(&self, r: &Rotation<'_>, message: String) {
        let reason = match r.trigger {
            Trigger::Emergency => "EmergencyRevoked",
            _ => "Rotated",
        };
        let note = format!("{message} (trigger: {})", r.trigger.as_str());
        self.publish(EventType::Normal, reason, "Rotate", note)
            .await;
        if r.spec.strategy == Strategy::SinglePhase {
            self.publish(
                EventType::Warning,
                "SinglePhaseRotation",
                "Rotate",
                "the previous credential stopped working at this rotation; consumers fail until they reload the Secret".into(),
            )
            .await;
        }
    }

    /// Step 8: revoked entries expire after `--vault-retention`, the bounds are kept,
    /// and the orphan sweep runs (the slots changed, so it looks at everything again).
    async fn housekeeping(
        &self,
        r: &Rotation<'_>,
        vault: &Vault,
        revoked: &[SlotRef],
        pair: &SlotPair,
    ) {
        if let Err(e) = vault.mark_revoked(revoked, self.retention()).await {
            warn!(error = %e, "marking revoked escrow entries failed");
        }
        if let Err(e) = vault.cleanup().await {
            warn!(error = %e, "escrow cleanup failed");
        }
        self.slots_changed(&r.uid);
        self.sweep(r.spec, pair, vault, &r.uid).await;
    }
}

/// Step 7, the flip: the new credential becomes the active slot in `status` (an
/// emergency also empties the slot it replaced, and records what the vendor did not
/// revoke as `pending`); the schedule moves on. Returns the slots after it.
pub(super) fn flip(
    r: &Rotation<'_>,
    status: &mut SecretRotationStatus,
    credential: &Credential,
    pending: Vec<PendingRevocation>,
    now: chrono::DateTime<chrono::Utc>,
) -> SlotPair {
    let mut pair = r.before.clone();
    if r.trigger == Trigger::Emergency {
        // Never handed out as _PREVIOUS again, revoked or not.
        if let Some(active) = pair.active {
            pair.slots[usize::from(active)] = None;
        }
        status.pending_revocations.clear();
    }
    pair.complete(
        &r.plan,
        Slot {
            id: credential.id.clone(),
            fingerprint: credential.fingerprint(),
            issued_at: now,
            revoked_at: None,
        },
    );
    status::set_slots(status, &pair);
    status.in_flight = None;
    status.failed_attempts = 0;
    status.rotation_count = r.sequence;
    if r.trigger == Trigger::Emergency && pending.is_empty() {
        status.last_handled_revoke_token = status.emergency_token.take();
    }
    status.last_rotated_at = Some(now);
    status.next_rotation_at =
        r.spec.schedule.auto.then(|| {
            rotation::next_rotation_at(now, r.spec.schedule.interval, r.spec.schedule.at_utc)
        });
    if !pending.is_empty() {
        status.pending_revocations = pending;
    }
    pair
}
