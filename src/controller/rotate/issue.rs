//! Steps 1–3: record the intent, open the vault and take up what a dead rotation kept,
//! then the provider calls (revoke the target slot's old credential, issue, keep, test).

use super::{RotateError, Rotation};
use crate::api::{
    InFlightRotation, REVOKE_ANNOTATION, ROTATE_ANNOTATION, SecretRotationStatus, Strategy,
};
use crate::controller::Error;
use crate::controller::audit::Audit;
use crate::controller::credentials::PendingAdminKey;
use crate::controller::failpoint::{self, Checkpoints};
use crate::controller::reconcile::Run;
use crate::controller::secret::Target;
use crate::controller::status::{self, Reason};
use crate::rotation::{self, Credential, Observer, Stash, StashError, Step, Trigger};
use crate::vault::{SlotRef, Vault};
use async_trait::async_trait;
use kube::ResourceExt;
use tracing::warn;

/// Every how many rotations the vault's entry write reads the vault (see
/// [`Run::open_vault`]).
const FOLD_EVERY: u64 = 8;

impl Run {
    /// Step 1: the intent — which slot, which credential name, why — in status, written
    /// with the resourceVersion this reconcile read (compare-and-swap), before anything
    /// external happens. Returns the status the later steps build on.
    pub(super) async fn record_intent(
        &self,
        r: &Rotation<'_>,
    ) -> Result<SecretRotationStatus, Error> {
        let annotations = self.sr.annotations();
        let mut status = self.base_status();
        status.strategy = Some(r.spec.strategy);
        status.in_flight = Some(InFlightRotation {
            target_index: r.plan.target,
            credential_name: r.credential_name.clone(),
            trigger: r.trigger,
            started_at: r.started_at,
        });
        status.last_rotation_attempted_at = Some(self.now);
        // The credential this rotation revokes is never handed out again, whether the
        // rotation completes or not (a failed one must not leave it in _PREVIOUS or
        // have it restored).
        if r.plan.revoke_before_issue.is_some() {
            let mut pair = status::slot_pair(&status);
            if let Some(slot) = pair.slots[usize::from(r.plan.target)].as_mut() {
                slot.revoked_at.get_or_insert(self.now);
            }
            status::set_slots(&mut status, &pair);
        }
        // Any rotation satisfies a pending request: one token, at most one rotation.
        if let Some(t) = annotations.get(ROTATE_ANNOTATION) {
            status.last_handled_rotate_token = Some(t.clone());
        }
        // An emergency is handled only once every older credential is gone; until
        // then its token is remembered so that a retry is an emergency again.
        status.emergency_token = match r.trigger {
            Trigger::Emergency => annotations.get(REVOKE_ANNOTATION).cloned(),
            // A withdrawn emergency that never got past its issue: forgotten.
            _ => None,
        };
        let message = format!(
            "rotating ({}): issuing a credential into slot {}",
            r.trigger.as_str(),
            r.plan.target
        );
        status::set_phase(
            &mut status,
            Reason::Rotating,
            message,
            self.generation(),
            self.now,
        );
        // Between the read this decision rests on and its compare-and-swap: a test
        // lets a second writer act here.
        failpoint::reached("before_intent", r.sequence).await;
        self.write_status(&status).await?;
        Ok(status)
    }

    /// Step 2a: this resource's vault, which keeps the in-flight credential's entry
    /// through every bound.
    pub(super) async fn open_vault(&self, r: &Rotation<'_>) -> Result<Vault, RotateError> {
        // Nothing stored yet (a first rotation, not a resumed one): its vault is
        // created without being looked for.
        let fresh = self.old.slots.is_empty() && self.old.in_flight.is_none() && !r.resuming;
        self.vault()
            .await
            .map(|v| v.with_in_flight(&r.credential_name))
            .map(|v| if fresh { v.expect_new() } else { v })
            // Entries go in blind, their audit records as a batch key; every eighth
            // rotation reads the vault and folds those batches into the trail (they
            // stay few), besides every write that reads it anyway.
            .map(|v| {
                if r.sequence.is_multiple_of(FOLD_EVERY) {
                    v.with_full_write()
                } else {
                    v
                }
            })
            .map_err(RotateError::VaultUnavailable)
    }

    /// Step 2b: a credential a dead rotation issued and kept is taken up, never issued
    /// twice. Dual-phase: the vendor made it, so it is ours. Single-phase: it may not
    /// have been applied yet, so it counts only if it works (else the provider's own
    /// pending-key logic decides).
    pub(super) async fn resume(
        &self,
        r: &Rotation<'_>,
        vault: &Vault,
    ) -> Result<Option<Credential>, RotateError> {
        if !r.resuming {
            return Ok(None);
        }
        let provider = &r.spec.provider;
        let kept = vault
            .get(
                &r.credential_name,
                provider.outputs(),
                provider.secret_output(),
            )
            .await
            .map_err(RotateError::VaultUnreadable)?;
        match kept {
            Some((_, Ok(kept))) => {
                let usable =
                    r.spec.strategy == Strategy::DualPhase || provider.test(&kept).await.is_ok();
                Ok(usable.then_some(kept))
            }
            Some((entry, Err(e))) => {
                warn!(credential = %entry.name, error = %e, "the kept credential cannot be opened; revoking it and issuing anew");
                if r.spec.strategy == Strategy::DualPhase {
                    let _ = provider.revoke(&entry.id).await;
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Step 2c: the credential the provider calls revoke leaves the target Secret first
    /// (its `_PREVIOUS` keys), so a Secret never hands out a revoked credential.
    pub(super) async fn retire_previous(
        &self,
        r: &Rotation<'_>,
        target: &Target,
    ) -> Result<(), RotateError> {
        let (Some(index), Some(active)) = (r.before.active, r.before.active_slot()) else {
            return Ok(());
        };
        if r.plan.revoke_before_issue.is_none() {
            return Ok(());
        }
        // A Secret that does not hold the active credential is rewritten by this
        // rotation anyway: then nothing is written here.
        self.drop_previous_keys(r.spec, target, index, &active.fingerprint)
            .await
            .map(|_| ())
            .map_err(|source| RotateError::SecretWrite {
                secret: self.sr.spec.target.name.clone(),
                source,
            })
    }

    /// Step 3: the provider calls in the core's safe order — revoke what the target
    /// slot still holds, issue (kept in the vault, and for a single-phase provider in
    /// its admin Secret as pending, before the provider lets anything use it), test.
    pub(super) async fn provider_calls(
        &self,
        r: &Rotation<'_>,
        vault: &Vault,
        kept: Option<Credential>,
        dropped: &[SlotRef],
    ) -> Result<Credential, RotateError> {
        let admin = r.spec.provider.replaces_admin_credential();
        let stash = KeepInVault {
            vault,
            name: &r.credential_name,
            slot: r.plan.target,
            sequence: r.sequence,
            next: admin.map(|admin| PendingAdminKey {
                secrets: &self.secrets,
                admin,
                resource: &r.resource,
            }),
        };
        let audit = Audit::new(vault, r.actor, r.old_fingerprint());
        let expire = Marks {
            vault,
            retention: self.retention(),
            dropped,
        };
        let observers = (
            &audit,
            (
                expire,
                Checkpoints {
                    sequence: r.sequence,
                },
            ),
        );
        let provider = r.spec.provider.as_ref();
        let name = &r.credential_name;
        match rotation::execute(provider, &r.plan, name, &stash, kept, &observers).await {
            Ok(credential) => Ok(credential),
            Err(e) => {
                let detail = Some(e.to_string());
                audit.record("failure", None, None, None, detail).await;
                Err(RotateError::Provider {
                    source: e,
                    replaced_in_place: admin.is_some(),
                })
            }
        }
    }
}

/// Keeps every issued credential in the vault, then in the next stash (Convox's
/// pending admin key), before the provider lets anything use it.
struct KeepInVault<'a> {
    vault: &'a Vault,
    name: &'a str,
    slot: u8,
    sequence: u64,
    next: Option<PendingAdminKey<'a>>,
}

#[async_trait]
impl Stash for KeepInVault<'_> {
    async fn keep(&self, credential: &Credential) -> Result<(), StashError> {
        failpoint::reached("before_vault", self.sequence).await;
        self.vault
            .put(self.name, self.slot, credential)
            .await
            .map_err(|e| StashError::Vault(e.to_string()))?;
        failpoint::reached("after_vault", self.sequence).await;
        match &self.next {
            Some(next) => next.keep(credential).await,
            None => Ok(()),
        }
    }
}

/// The vault entries of what the core revoked: a credential that failed its test
/// (revoked right away) expires like any revoked one's; the target slot's old
/// credential, revoked before the issue, is marked with the vault's next write — the
/// new entry's — instead of a write of its own.
struct Marks<'a> {
    vault: &'a Vault,
    retention: chrono::Duration,
    /// The credentials this rotation takes out of the target slot.
    dropped: &'a [SlotRef],
}

#[async_trait]
impl Observer for Marks<'_> {
    async fn step(&self, step: Step<'_>) {
        match step {
            Step::TestFailed(c) => {
                let this = SlotRef {
                    id: c.id.clone(),
                    fingerprint: c.fingerprint(),
                };
                if let Err(e) = self.vault.mark_revoked(&[this], self.retention).await {
                    warn!(error = %e, "marking the failed credential's escrow entry revoked failed");
                }
            }
            // Only once the vendor said so: a failed revoke marks nothing.
            Step::RevokedOld(id) => {
                let revoked: Vec<SlotRef> = self
                    .dropped
                    .iter()
                    .filter(|d| d.id == id)
                    .cloned()
                    .collect();
                self.vault.mark_with_next_write(&revoked, self.retention);
            }
            _ => {}
        }
    }
}
