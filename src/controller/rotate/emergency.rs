//! Emergency revoke (`rotor.dev/revoke`): a new credential goes in as in any rotation,
//! then every older credential is revoked (step 6). What the vendor does not revoke is
//! kept as pending, the resource is Degraded (EmergencyIncomplete), and the retry only
//! revokes — it never issues again.

use super::{RotateError, Rotation};
use crate::api::{PendingRevocation, ProviderSpec, REVOKE_ANNOTATION, SecretRotationStatus};
use crate::controller::Error;
use crate::controller::audit::{self, Audit};
use crate::controller::reconcile::Run;
use crate::controller::status::{self, Reason};
use crate::controller::validate::ValidSpec;
use crate::rotation::{self, Credential, Revocation, SlotPair, Trigger};
use crate::vault::{SlotRef, Vault};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::warn;

impl Run {
    /// Before an emergency issues anything: refused when the provider cannot revoke
    /// (the leaked credential would stay valid); only the revoking is retried when the
    /// new credential is in place already. `None`: go on and rotate.
    pub(super) async fn emergency_first(&self, spec: &ValidSpec) -> Result<Option<Action>, Error> {
        if !can_revoke(&self.sr.spec.provider) {
            let message = format!(
                "emergency revoke refused: the {} provider cannot revoke (spec.provider.http has no revoke request), so the leaked credential would stay valid; revoke {} by hand at the vendor, or configure revoke and ask again",
                spec.provider.kind(),
                describe_slots(&status::slot_pair(&self.old))
            );
            self.stop_with(Reason::EmergencyIncomplete, message).await?;
            return Ok(Some(Action::await_change()));
        }
        let token = self.sr.annotations().get(REVOKE_ANNOTATION);
        if !self.old.pending_revocations.is_empty() && self.old.emergency_token.as_ref() == token {
            return self.finish_emergency(spec).await.map(Some);
        }
        Ok(None)
    }

    /// Step 6: with the new credential in the target Secret, the active slot's
    /// credential and whatever an earlier emergency left are revoked. Those revoked are
    /// added to `revoked`; those still valid at the vendor are returned.
    pub(super) async fn revoke_older(
        &self,
        r: &Rotation<'_>,
        credential: &Credential,
        audit: &Audit<'_>,
        revoked: &mut Vec<SlotRef>,
    ) -> Vec<PendingRevocation> {
        let mut olds: Vec<(String, String)> = r
            .before
            .active_slot()
            .map(|s| (s.id.clone(), s.fingerprint.clone()))
            .into_iter()
            .collect();
        for p in &self.old.pending_revocations {
            if !olds.iter().any(|(id, _)| *id == p.id) {
                olds.push((p.id.clone(), p.fingerprint.clone()));
            }
        }
        let mut pending = Vec::new();
        for (id, fingerprint) in olds {
            if id == credential.id {
                // The new credential took this id (a PostgreSQL user names a slot):
                // issuing it already replaced the leaked one in place. Revoking the id
                // now would revoke the credential just activated.
                let detail = Some("emergency: replaced in place by the new credential".into());
                let old = Some(fingerprint.clone());
                audit.record("revoke", Some(&id), old, None, detail).await;
                revoked.push(SlotRef { id, fingerprint });
                continue;
            }
            match self
                .revoke_for_emergency(r.spec, audit, &id, &fingerprint)
                .await
            {
                Ok(()) => revoked.push(SlotRef { id, fingerprint }),
                Err(reason) => pending.push(PendingRevocation {
                    id,
                    fingerprint,
                    reason,
                }),
            }
        }
        pending
    }

    /// Revokes `id` for an emergency; `Err` says why it is still valid.
    async fn revoke_for_emergency(
        &self,
        spec: &ValidSpec,
        audit: &Audit<'_>,
        id: &str,
        fingerprint: &str,
    ) -> Result<(), String> {
        let old = Some(fingerprint.to_string());
        let why = match spec.provider.revoke(id).await {
            Ok(Revocation::Revoked | Revocation::AlreadyGone) => {
                let detail = Some("emergency".into());
                audit.record("revoke", Some(id), old, None, detail).await;
                return Ok(());
            }
            Ok(Revocation::Unsupported) => "the provider cannot revoke".to_string(),
            Err(e) => e.to_string(),
        };
        let detail = Some(format!(
            "emergency revoke failed: {why}; still valid at the vendor"
        ));
        audit.record("failure", Some(id), old, None, detail).await;
        warn!(credential = %id, %fingerprint, error = %why, "emergency revoke failed; the credential is still valid at the vendor");
        Err(why)
    }

    /// An emergency whose new credential is in place and whose older credentials are
    /// not all revoked: Degraded (EmergencyIncomplete), retried as an emergency.
    pub(super) async fn emergency_incomplete(
        &self,
        mut status: SecretRotationStatus,
        vault: &Vault,
        spec: &ValidSpec,
    ) -> Result<Action, Error> {
        status.failed_attempts = self.old.failed_attempts.saturating_add(1);
        let retry_in = rotation::retry_backoff(status.failed_attempts);
        let retry_at = rotation::retry_at(self.now, status.failed_attempts);
        status.next_rotation_at = Some(retry_at);
        status.last_rotation_attempted_at = Some(self.now);
        let live: Vec<String> = status
            .pending_revocations
            .iter()
            .map(|p| format!("{} ({}): {}", p.id, p.fingerprint, p.reason))
            .collect();
        let active = status::slot_pair(&status);
        let active = active
            .active_slot()
            .map(|s| format!("slot {} ({})", active.active.unwrap_or(0), s.fingerprint))
            .unwrap_or_else(|| "no credential".into());
        let message = format!(
            "emergency revoke incomplete (attempt {}): still valid at the vendor: {}; the new credential is active in {active}; retrying at {}",
            status.failed_attempts,
            live.join("; "),
            retry_at.to_rfc3339()
        );
        status::set_phase(
            &mut status,
            Reason::EmergencyIncomplete,
            message.clone(),
            self.generation(),
            self.now,
        );
        status.escrow = self.vault_status(vault, spec).await;
        self.write_status(&status).await?;
        self.export_schedule(&status);
        warn!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), %message, "emergency incomplete");
        self.publish(EventType::Warning, "EmergencyIncomplete", "Rotate", message)
            .await;
        Ok(Action::requeue(retry_in))
    }

    /// The retry of an emergency whose new credential is already active: revoke what
    /// is still pending, and only then call the emergency done.
    async fn finish_emergency(&self, spec: &ValidSpec) -> Result<Action, Error> {
        let mut status = self.base_status();
        status.last_rotation_attempted_at = Some(self.now);
        let vault = match self.vault().await {
            Ok(v) => v,
            Err(e) => {
                let error = RotateError::VaultUnavailable(e);
                return self.fail(spec, status, Trigger::Emergency, &error).await;
            }
        };
        let actor = audit::actor(Trigger::Emergency, self.sr.annotations());
        let audit = Audit::new(&vault, actor, None);
        let mut still = Vec::new();
        let mut revoked = Vec::new();
        for p in &self.old.pending_revocations {
            match self
                .revoke_for_emergency(spec, &audit, &p.id, &p.fingerprint)
                .await
            {
                Ok(()) => revoked.push(SlotRef {
                    id: p.id.clone(),
                    fingerprint: p.fingerprint.clone(),
                }),
                Err(reason) => still.push(PendingRevocation {
                    reason,
                    ..p.clone()
                }),
            }
        }
        if let Err(e) = vault.mark_revoked(&revoked, self.retention()).await {
            warn!(error = %e, "marking revoked escrow entries failed");
        }
        status.pending_revocations = still;
        if !status.pending_revocations.is_empty() {
            return self.emergency_incomplete(status, &vault, spec).await;
        }
        status.failed_attempts = 0;
        status.last_handled_revoke_token = status.emergency_token.take();
        status.next_rotation_at = spec.schedule.auto.then(|| {
            rotation::next_rotation_at(
                status.last_rotated_at.unwrap_or(self.now),
                spec.schedule.interval,
                spec.schedule.at_utc,
            )
        });
        let pair = status::slot_pair(&status);
        let ids: Vec<&str> = revoked.iter().map(|r| r.id.as_str()).collect();
        let message = format!(
            "emergency revoke: slot {} active ({}); every older credential revoked ({})",
            pair.active.unwrap_or(0),
            pair.active_slot()
                .map(|s| s.fingerprint.as_str())
                .unwrap_or_default(),
            ids.join(", ")
        );
        let (status, stale_at) = self
            .commit_rotated(status, message.clone(), &vault, spec)
            .await?;
        let note = format!("{message} (trigger: emergency)");
        self.publish(EventType::Normal, "EmergencyRevoked", "Rotate", note)
            .await;
        Ok(self.next_look([status.next_rotation_at, stale_at]))
    }
}

/// Whether the provider a spec names can revoke at all (an http provider needs a
/// revoke request). Known from the spec alone, before anything is issued.
pub(super) fn can_revoke(spec: &ProviderSpec) -> bool {
    match spec {
        ProviderSpec::Http(h) => h.revoke.is_some(),
        _ => true,
    }
}

/// The slots' ids and fingerprints, for messages.
fn describe_slots(pair: &SlotPair) -> String {
    let slots: Vec<String> = pair
        .slots
        .iter()
        .flatten()
        .map(|s| format!("{} ({})", s.id, s.fingerprint))
        .collect();
    if slots.is_empty() {
        "nothing".into()
    } else {
        slots.join(", ")
    }
}
