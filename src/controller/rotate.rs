//! One rotation, step by step, each step idempotent and recorded before the next:
//! intent in status → revoke the target slot's old credential → issue (kept in the
//! vault at once) → test → admin credential (single-phase) → target Secret → flip →
//! mark revoked entries, clean up, sweep orphans.

use super::Error;
use super::credentials::{self, PendingAdminKey};
use super::failpoint;
use super::reconcile::{Run, describe_active, requeue_at};
use super::secret::{self, Target};
use super::status::{self, Reason};
use super::validate::ValidSpec;
use crate::api::{
    InFlightRotation, REVOKE_ANNOTATION, ROTATE_ANNOTATION, ROTATE_TOKEN_PREFIX, Strategy,
};
use crate::rotation::{self, Observer, Slot, Step, Trigger};
use crate::rotation::{Credential, NameParts, Revocation, Stash, StashError};
use crate::vault::{AuditRecord, SlotRef, Vault};
use async_trait::async_trait;
use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use tracing::{info, warn};

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

/// Writes the audit trail as the steps happen, and hosts the crash points between them.
pub(super) struct Audit<'a> {
    vault: &'a Vault,
    actor: &'a str,
    sequence: u64,
    old_fingerprint: Option<String>,
    /// How long the entry of a credential that failed its test is kept.
    retention: chrono::Duration,
}

impl<'a> Audit<'a> {
    /// Records the operator's own work outside a rotation (sweeps, restores).
    pub(super) fn operator(vault: &'a Vault) -> Self {
        Self {
            vault,
            actor: "operator",
            sequence: 0,
            old_fingerprint: None,
            retention: chrono::Duration::zero(),
        }
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
            time: Utc::now(),
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
                self.record(
                    "revoke",
                    Some(id),
                    None,
                    None,
                    Some("issued two rotations ago".into()),
                )
                .await;
                failpoint::reached("after_revoke_old", self.sequence).await;
            }
            Step::NotRevoked(id) => {
                warn!(credential = %id, "the provider cannot revoke; the credential issued two rotations ago stays valid at the vendor");
                self.record(
                    "revoke-unsupported",
                    Some(id),
                    None,
                    None,
                    Some("the provider cannot revoke: still valid at the vendor".into()),
                )
                .await;
            }
            Step::Issued(c) => {
                self.record("issue", Some(&c.id), None, Some(c.fingerprint()), None)
                    .await
            }
            Step::Resumed(c) => {
                self.record(
                    "issue",
                    Some(&c.id),
                    None,
                    Some(c.fingerprint()),
                    Some("resumed from the vault".into()),
                )
                .await;
            }
            Step::Tested(c) => {
                self.record(
                    "test",
                    Some(&c.id),
                    None,
                    Some(c.fingerprint()),
                    Some("passed".into()),
                )
                .await;
                failpoint::reached("after_test", self.sequence).await;
            }
            Step::TestFailed(c) => {
                let detail = Some("failed; the new credential is revoked".into());
                self.record(
                    "test",
                    Some(&c.id),
                    self.old_fingerprint.clone(),
                    Some(c.fingerprint()),
                    detail,
                )
                .await;
                // The engine revokes it next: its entry expires like any revoked one.
                let this = SlotRef {
                    id: c.id.clone(),
                    fingerprint: c.fingerprint(),
                };
                if let Err(e) = self.vault.mark_revoked(&[this], self.retention).await {
                    warn!(error = %e, "marking the failed credential's vault entry revoked failed");
                }
            }
        }
    }
}

/// Who asked: a schedule, a person (annotation, or the CLI's token), or the operator.
fn actor(trigger: Trigger, token: Option<&str>) -> &'static str {
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

impl Run {
    /// How long a revoked credential's vault entry is kept.
    fn retention(&self) -> chrono::Duration {
        // An out-of-range --vault-retention means "keep for ever", never "drop now".
        chrono::Duration::from_std(self.ctx.settings.vault_retention)
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Opens this resource's vault (loading the current KEKs), knowing which entries
    /// are live (the slots and the in-flight credential in status).
    pub(super) async fn vault(&self) -> Result<Vault, crate::vault::VaultError> {
        let ring =
            crate::vault::load_keyring(&self.ctx.client, &self.ctx.settings.operator_namespace)
                .await?;
        let live = status::slot_pair(&self.old)
            .slots
            .iter()
            .flatten()
            .map(|s| SlotRef {
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
            })
            .collect();
        let in_flight = self
            .old
            .in_flight
            .as_ref()
            .map(|f| f.credential_name.clone());
        Ok(Vault::new(&self.ctx.client, &self.sr, ring).with_live(live, in_flight))
    }

    pub(super) async fn rotate(
        &self,
        spec: &ValidSpec,
        target: &Target,
        trigger: Trigger,
    ) -> Result<Action, Error> {
        if trigger == Trigger::Emergency {
            if !can_revoke(&self.sr.spec.provider) {
                let message = format!(
                    "emergency revoke refused: the {} provider cannot revoke (spec.provider.http has no revoke request), so the leaked credential would stay valid; revoke {} by hand at the vendor, or configure revoke and ask again",
                    spec.provider.kind(),
                    describe_slots(&status::slot_pair(&self.old))
                );
                self.stop_with(Reason::EmergencyIncomplete, message).await?;
                return Ok(Action::await_change());
            }
            // The new credential is in place already; what is left is revoking.
            if !self.old.pending_revocations.is_empty()
                && self.old.emergency_token.as_deref()
                    == self
                        .sr
                        .annotations()
                        .get(REVOKE_ANNOTATION)
                        .map(String::as_str)
            {
                return self.finish_emergency(spec).await;
            }
        }
        let mut pair = status::slot_pair(&self.old);
        let plan = pair.plan(spec.strategy);
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
        let annotations = self.sr.annotations();
        let token = match trigger {
            Trigger::Emergency => annotations.get(REVOKE_ANNOTATION),
            _ => annotations.get(ROTATE_ANNOTATION),
        };
        let actor = actor(trigger, token.map(String::as_str));
        let ns = self.sr.namespace().unwrap_or_default();
        info!(namespace = %ns, name = %self.sr.name_any(), trigger = trigger.as_str(), slot = plan.target, credential = %credential_name, "rotating");

        // 1. Intent, before anything external happens (compare-and-swap on the object).
        let mut status = self.base_status();
        status.strategy = Some(spec.strategy);
        status.in_flight = Some(InFlightRotation {
            target_index: plan.target,
            credential_name: credential_name.clone(),
            trigger: trigger.as_str().into(),
            started_at,
        });
        status.last_rotation_attempted_at = Some(self.now);
        // Any rotation satisfies a pending request: one token, at most one rotation.
        if let Some(t) = annotations.get(ROTATE_ANNOTATION) {
            status.last_handled_rotate_token = Some(t.clone());
        }
        // An emergency is handled only once every older credential is gone; until
        // then its token is remembered so that a retry is an emergency again.
        status.emergency_token = match trigger {
            Trigger::Emergency => annotations.get(REVOKE_ANNOTATION).cloned(),
            // A withdrawn emergency that never got past its issue: forgotten.
            _ => None,
        };
        let message = format!(
            "rotating ({}): issuing a credential into slot {}",
            trigger.as_str(),
            plan.target
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
        failpoint::reached("before_intent", sequence).await;
        self.write_status(&status).await?;
        failpoint::reached("after_intent", sequence).await;

        let vault = match self.vault().await {
            Ok(v) => v.with_in_flight(&credential_name),
            Err(e) => {
                return self
                    .fail(
                        status,
                        trigger,
                        format!("the vault is unavailable: {e}"),
                        false,
                    )
                    .await;
            }
        };
        // 2. A credential a dead rotation issued and kept is resumed, never issued
        // twice. Dual-phase: the vendor made it, so it is ours. Single-phase: it may not
        // have been applied yet, so it counts only if it works (else the provider's own
        // pending-key logic decides).
        let mut existing = None;
        if resumed.is_some() {
            match vault
                .get(
                    &credential_name,
                    spec.provider.outputs(),
                    spec.provider.secret_output(),
                )
                .await
            {
                Ok(Some((_, Ok(kept)))) => {
                    let usable = spec.strategy == Strategy::DualPhase
                        || spec.provider.test(&kept).await.is_ok();
                    if usable {
                        existing = Some(kept);
                    }
                }
                Ok(Some((entry, Err(e)))) => {
                    warn!(credential = %entry.name, error = %e, "the kept credential cannot be opened; revoking it and issuing anew");
                    if spec.strategy == Strategy::DualPhase {
                        let _ = spec.provider.revoke(&entry.id).await;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return self
                        .fail(
                            status,
                            trigger,
                            format!("the vault is unavailable: {e}"),
                            true,
                        )
                        .await;
                }
            }
        }
        let admin = spec.provider.replaces_admin_credential();
        let resource = self.sr.name_any();
        let stash = KeepInVault {
            vault: &vault,
            name: &credential_name,
            slot: plan.target,
            sequence,
            next: admin.map(|admin| PendingAdminKey {
                secrets: &self.secrets,
                admin,
                resource: &resource,
            }),
        };
        let active_before = pair.active_slot().cloned();
        let audit = Audit {
            vault: &vault,
            actor,
            sequence,
            old_fingerprint: active_before.as_ref().map(|s| s.fingerprint.clone()),
            retention: self.retention(),
        };
        // 3–5. Revoke the target slot's old credential, issue, keep, test.
        let credential = match rotation::execute(
            spec.provider.as_ref(),
            &plan,
            &credential_name,
            &stash,
            existing,
            &audit,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                audit
                    .record("failure", None, None, None, Some(e.to_string()))
                    .await;
                // A single-phase provider may have replaced the credential before
                // failing: keep the rotation in flight so the retry resumes it.
                return self
                    .fail(status, trigger, e.to_string(), admin.is_some())
                    .await;
            }
        };
        // Revoked entries by their own identity (id and fingerprint): a PostgreSQL
        // user name is the id of every credential of its slot, the new one included.
        let mut revoked: Vec<SlotRef> = pair.slots[usize::from(plan.target)]
            .iter()
            .filter(|_| plan.revoke_before_issue.is_some() || plan.replaces.is_some())
            .map(|s| SlotRef {
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
            })
            .collect();
        if !can_revoke(&self.sr.spec.provider) {
            // Nothing was revoked: the dropped credential stays valid at the vendor.
            // Allowed for ordinary rotations, and said once (at the first one that
            // drops a credential), besides the audit trail's record every time.
            if let Some(dropped) = revoked.pop()
                && self.old.rotation_count == 2
            {
                self.publish(
                    EventType::Warning,
                    "RevokeUnsupported",
                    "Rotate",
                    format!("the {} provider has no revoke request: credential {}, dropped from its slot, stays valid at the vendor; every later rotation leaves one more (configure spec.provider.http.revoke)", spec.provider.kind(), dropped.id),
                )
                .await;
            }
        }
        // 6. The admin credential a single-phase provider replaced.
        if let (Some(admin), Some(value)) =
            (admin, credential.outputs.get(credential.secret_output))
            && let Err(e) = credentials::promote_admin(&self.secrets, admin, &resource, value).await
        {
            let why = format!(
                "recording the new admin credential in Secret {:?} failed: {e}",
                admin.name
            );
            return self.fail(status, trigger, why, true).await;
        }
        // 7. The target Secret.
        let fingerprint = credential.fingerprint();
        let previous = match (spec.strategy, trigger) {
            (Strategy::DualPhase, Trigger::Emergency) | (Strategy::SinglePhase, _) => {
                BTreeMap::new()
            }
            (Strategy::DualPhase, _) => target.active_values(
                spec,
                spec.provider.secret_output(),
                active_before.as_ref().map(|s| s.fingerprint.as_str()),
            ),
        };
        let values = secret::values_of(&credential, spec);
        if let Err(e) = self
            .apply_secret(spec, &values, &previous, plan.target, &fingerprint)
            .await
        {
            let why = format!("writing Secret {:?} failed: {e}", self.sr.spec.target.name);
            return self.fail(status, trigger, why, true).await;
        }
        drop(values);
        failpoint::reached("after_secret", sequence).await;

        // 8. Emergency: the other slot goes too, now that nobody is handed it. It leaves
        // the slots either way (never handed out as _PREVIOUS again); what the vendor
        // did not revoke is recorded as pending and retried as an emergency.
        let mut pending = Vec::new();
        if trigger == Trigger::Emergency {
            // The active slot's credential, and whatever an earlier emergency left.
            let mut olds: Vec<(String, String)> = pair
                .active_slot()
                .map(|s| (s.id.clone(), s.fingerprint.clone()))
                .into_iter()
                .collect();
            for p in &self.old.pending_revocations {
                if !olds.iter().any(|(id, _)| *id == p.id) {
                    olds.push((p.id.clone(), p.fingerprint.clone()));
                }
            }
            for (id, fingerprint) in olds {
                if id == credential.id {
                    // The new credential took this id (a PostgreSQL user names a slot):
                    // issuing it already replaced the leaked one in place. Revoking the
                    // id now would revoke the credential just activated.
                    audit
                        .record(
                            "revoke",
                            Some(&id),
                            Some(fingerprint.clone()),
                            None,
                            Some("emergency: replaced in place by the new credential".into()),
                        )
                        .await;
                    revoked.push(SlotRef { id, fingerprint });
                    continue;
                }
                match self
                    .revoke_for_emergency(spec, &audit, &id, &fingerprint)
                    .await
                {
                    Ok(()) => revoked.push(SlotRef { id, fingerprint }),
                    Err(reason) => pending.push(crate::api::PendingRevocation {
                        id,
                        fingerprint,
                        reason,
                    }),
                }
            }
            if let Some(active) = pair.active {
                pair.slots[usize::from(active)] = None;
            }
            status.pending_revocations.clear();
        }
        // 9. Flip.
        pair.complete(
            &plan,
            Slot {
                id: credential.id.clone(),
                fingerprint: fingerprint.clone(),
                issued_at: self.now,
            },
        );
        status::set_slots(&mut status, &pair);
        status.in_flight = None;
        status.failed_attempts = 0;
        status.rotation_count = sequence;
        status.issued_by = Some(super::status::provider_identity(&self.sr.spec.provider));
        if trigger == Trigger::Emergency && pending.is_empty() {
            status.last_handled_revoke_token = status.emergency_token.take();
        }
        status.last_rotated_at = Some(self.now);
        status.next_rotation_at = spec.schedule.auto.then(|| {
            rotation::next_rotation_at(self.now, spec.schedule.interval, spec.schedule.at_utc)
        });
        if !pending.is_empty() {
            status.pending_revocations = pending;
            let retention = self.retention();
            if let Err(e) = vault.mark_revoked(&revoked, retention).await {
                warn!(error = %e, "marking revoked vault entries failed");
            }
            self.export_rotation(true);
            return self.emergency_incomplete(status, &vault, spec).await;
        }
        let message = match trigger {
            Trigger::Emergency => format!(
                "emergency revoke: slot {} active ({fingerprint}); every older credential revoked",
                plan.target
            ),
            _ => describe_active(&pair, spec.strategy),
        };
        status::set_phase(
            &mut status,
            Reason::Rotated,
            message.clone(),
            self.generation(),
            self.now,
        );
        let vault_status = self.vault_status(&vault, spec).await;
        status.vault = vault_status;
        self.write_status(&status).await?;
        self.export_rotation(true);
        self.export_schedule(&status);
        audit
            .record(
                "activate",
                Some(&credential.id),
                audit.old_fingerprint.clone(),
                Some(fingerprint.clone()),
                Some(format!("slot {}", plan.target)),
            )
            .await;
        failpoint::reached("after_flip", sequence).await;
        info!(namespace = %ns, name = %self.sr.name_any(), trigger = trigger.as_str(), slot = plan.target, %fingerprint, rotation = sequence, "rotated");
        let reason = if trigger == Trigger::Emergency {
            "EmergencyRevoked"
        } else {
            "Rotated"
        };
        self.publish(
            EventType::Normal,
            reason,
            "Rotate",
            format!("{message} (trigger: {})", trigger.as_str()),
        )
        .await;
        if spec.strategy == Strategy::SinglePhase {
            self.publish(
                EventType::Warning,
                "SinglePhaseRotation",
                "Rotate",
                "the previous credential stopped working at this rotation; consumers fail until they reload the Secret".into(),
            )
            .await;
        }
        // 10. Housekeeping: expiry of revoked entries, and the orphan sweep.
        if let Err(e) = vault.mark_revoked(&revoked, self.retention()).await {
            warn!(error = %e, "marking revoked vault entries failed");
        }
        if let Err(e) = vault.cleanup().await {
            warn!(error = %e, "vault cleanup failed");
        }
        // The slots changed: what earlier sweeps revoked may be in one now.
        if let Some(swept) = self
            .ctx
            .swept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&uid)
        {
            swept.revoked.clear();
        }
        self.sweep(spec, &pair, &vault, &uid).await;
        Ok(requeue_at(status.next_rotation_at, self.now))
    }

    /// The orphan sweep: revokes credentials rotor created at the provider that are in
    /// no slot, and notes when it ran.
    pub(super) async fn sweep(
        &self,
        spec: &ValidSpec,
        pair: &crate::rotation::SlotPair,
        vault: &Vault,
        uid: &str,
    ) {
        let already = {
            let mut book = self
                .ctx
                .swept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let swept = book.entry(uid.to_string()).or_default();
            swept.at = Some(Utc::now());
            swept.revoked.clone()
        };
        let revoked = self.revoke_orphans(spec, pair, vault, uid, &already).await;
        if let Some(swept) = self
            .ctx
            .swept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(uid)
        {
            swept.revoked.extend(revoked);
        }
        crate::metrics::count(&self.ctx.metrics.sweeps, spec.provider.kind());
    }

    async fn revoke_orphans(
        &self,
        spec: &ValidSpec,
        pair: &crate::rotation::SlotPair,
        vault: &Vault,
        uid: &str,
        already: &std::collections::BTreeSet<String>,
    ) -> Vec<String> {
        let prefix = spec.provider.name_prefix(uid);
        let keep: Vec<&str> = pair.slots.iter().flatten().map(|s| s.id.as_str()).collect();
        let listed = match spec.provider.list_own(&prefix).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "listing credentials for the orphan sweep failed");
                return Vec::new();
            }
        };
        let mut revoked = Vec::new();
        let audit = Audit::operator(vault);
        let orphans = listed
            .iter()
            .filter(|id| !keep.contains(&id.as_str()) && !already.contains(*id));
        for orphan in orphans {
            match spec.provider.revoke(orphan).await {
                Ok(Revocation::Unsupported) => {
                    warn!(credential = %orphan, "the provider cannot revoke an orphaned credential; it stays valid at the vendor");
                }
                Ok(_) => {
                    info!(credential = %orphan, "revoked an orphaned credential");
                    audit
                        .record(
                            "revoke",
                            Some(orphan),
                            None,
                            None,
                            Some("orphan sweep".into()),
                        )
                        .await;
                    crate::metrics::count(&self.ctx.metrics.orphans_swept, spec.provider.kind());
                    revoked.push(orphan.clone());
                }
                Err(e) => warn!(credential = %orphan, error = %e, "revoking an orphan failed"),
            }
        }
        revoked
    }

    /// Revokes `id` for an emergency; `Err` says why it is still valid.
    async fn revoke_for_emergency(
        &self,
        spec: &ValidSpec,
        audit: &Audit<'_>,
        id: &str,
        fingerprint: &str,
    ) -> Result<(), String> {
        let why = match spec.provider.revoke(id).await {
            Ok(Revocation::Revoked | Revocation::AlreadyGone) => {
                audit
                    .record(
                        "revoke",
                        Some(id),
                        Some(fingerprint.to_string()),
                        None,
                        Some("emergency".into()),
                    )
                    .await;
                return Ok(());
            }
            Ok(Revocation::Unsupported) => "the provider cannot revoke".to_string(),
            Err(e) => e.to_string(),
        };
        audit
            .record(
                "failure",
                Some(id),
                Some(fingerprint.to_string()),
                None,
                Some(format!(
                    "emergency revoke failed: {why}; still valid at the vendor"
                )),
            )
            .await;
        warn!(credential = %id, %fingerprint, error = %why, "emergency revoke failed; the credential is still valid at the vendor");
        Err(why)
    }

    /// An emergency whose new credential is in place and whose older credentials are
    /// not all revoked: Degraded (EmergencyIncomplete), retried as an emergency.
    async fn emergency_incomplete(
        &self,
        mut status: crate::api::SecretRotationStatus,
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
        status.vault = self.vault_status(vault, spec).await;
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
                return self
                    .fail(
                        status,
                        Trigger::Emergency,
                        format!("the vault is unavailable: {e}"),
                        false,
                    )
                    .await;
            }
        };
        let token = self.sr.annotations().get(REVOKE_ANNOTATION).cloned();
        let actor = actor(Trigger::Emergency, token.as_deref());
        let audit = Audit {
            vault: &vault,
            actor,
            sequence: self.old.rotation_count,
            old_fingerprint: None,
            retention: self.retention(),
        };
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
                Err(reason) => still.push(crate::api::PendingRevocation {
                    reason,
                    ..p.clone()
                }),
            }
        }
        if let Err(e) = vault.mark_revoked(&revoked, self.retention()).await {
            warn!(error = %e, "marking revoked vault entries failed");
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
        let message = format!(
            "emergency revoke: slot {} active ({}); every older credential revoked ({})",
            pair.active.unwrap_or(0),
            pair.active_slot()
                .map(|s| s.fingerprint.as_str())
                .unwrap_or_default(),
            revoked
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        status::set_phase(
            &mut status,
            Reason::Rotated,
            message.clone(),
            self.generation(),
            self.now,
        );
        status.vault = self.vault_status(&vault, spec).await;
        self.write_status(&status).await?;
        self.export_schedule(&status);
        self.publish(
            EventType::Normal,
            "EmergencyRevoked",
            "Rotate",
            format!("{message} (trigger: emergency)"),
        )
        .await;
        Ok(requeue_at(status.next_rotation_at, self.now))
    }

    /// What status says about the vault.
    pub(super) async fn vault_status(
        &self,
        vault: &Vault,
        spec: &ValidSpec,
    ) -> Option<crate::api::VaultStatus> {
        let (entries, problem) = vault
            .summary(spec.provider.outputs(), spec.provider.secret_output())
            .await
            .ok()?;
        Some(crate::api::VaultStatus {
            entries: u32::try_from(entries).unwrap_or(u32::MAX),
            problem,
        })
    }
}

/// Whether the provider a spec names can revoke at all (an http provider needs a
/// revoke request). Known from the spec alone, before anything is issued.
pub(super) fn can_revoke(spec: &crate::api::ProviderSpec) -> bool {
    match spec {
        crate::api::ProviderSpec::Http(h) => h.revoke.is_some(),
        _ => true,
    }
}

/// The slots' ids and fingerprints, for messages.
pub(super) fn describe_slots(pair: &crate::rotation::SlotPair) -> String {
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
