//! One reconcile: finalizer → provider change → restore → assess (validate, read the
//! target, decide) → rotate or settle → status.

use super::assess::{Act, Assessment, Stop, assess};
use super::restore::Damage;
use super::secret::{self, Target};
use super::status::{self, Reason};
use super::validate::{SpecError, ValidSpec};
use super::{Context, Error};
use crate::api::{SecretRotation, SecretRotationStatus, Strategy};
use crate::rotation::Decision;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How often a conflict with a foreign Secret is looked at again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);
/// How often missing admin credentials are looked for again.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// When a restored Secret is looked at again (its own watch event usually comes first).
const RESTORED_RECHECK: Duration = Duration::from_secs(1);
/// The longest Event note the API server takes (events.k8s.io/v1: 1 KiB).
pub(super) const EVENT_NOTE_LIMIT: usize = 1024;

pub async fn reconcile(cached: Arc<SecretRotation>, ctx: Arc<Context>) -> Result<Action, Error> {
    match reconcile_fresh(cached, ctx).await {
        // Someone wrote the object after we read it: the watch brings the new one.
        Err(Error::Stale) => Ok(Action::requeue(Duration::from_millis(500))),
        other => other,
    }
}

async fn reconcile_fresh(cached: Arc<SecretRotation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cached.namespace().ok_or(Error::NoNamespace)?;
    let rotations: Api<SecretRotation> = Api::namespaced(ctx.client.clone(), &ns);
    // Never decide on a cache that lags behind rotor's own last write (it would
    // restore or rotate from the status before it): such an object is read again.
    // Any other lag is caught by the first status write, which needs the
    // resourceVersion decided on (409: reconcile again).
    let sr = if ctx.is_current(&cached.metadata) {
        (*cached).clone()
    } else {
        ctx.metrics.cache_misses.inc();
        match rotations.get_opt(&cached.name_any()).await? {
            Some(sr) => {
                // Known as it is now: a cache at least this new is current.
                ctx.wrote(&sr.metadata, sr.metadata.resource_version.as_deref());
                sr
            }
            None => return Ok(Action::await_change()),
        }
    };
    let run = Run {
        rotations,
        secrets: Api::namespaced(ctx.client.clone(), &ns),
        old: sr.status.clone().unwrap_or_default(),
        now: Utc::now()
            .duration_trunc(TimeDelta::seconds(1))
            .unwrap_or_else(|_| Utc::now()),
        resource_version: std::sync::Mutex::new(sr.resource_version()),
        tail_dropped: Default::default(),
        sr: Arc::new(sr),
        ctx,
    };
    if let Some(done) = run.sync_finalizer().await? {
        return Ok(done);
    }
    if let Some(forgotten) = run.forget_old_provider().await? {
        return Ok(forgotten);
    }
    // The target Secret as restore_first read it (nothing was written since).
    let target = match run.restore_first().await {
        super::restore::First::Restored(action) => return Ok(action),
        super::restore::First::GoOn(read) => read.map(|s| s.map(|b| *b)),
    };
    let assessment = assess(
        &run.sr,
        &run.old,
        &run.secrets,
        &run.ctx.http,
        run.now,
        target,
    )
    .await?;
    let act = match assessment {
        Assessment::Act(act) => act,
        Assessment::Stop(Stop::InvalidSpec(e)) => return run.invalid_spec(e).await,
        Assessment::Stop(Stop::CredentialsMissing(why)) => {
            return run.credentials_missing(why).await;
        }
        Assessment::Stop(Stop::Conflict) => return run.conflict().await,
    };
    if act.restore_first() && run.restore(&act.spec, Damage::Missing).await? {
        return Ok(Action::requeue(RESTORED_RECHECK));
    }
    let Act {
        spec,
        target,
        decision,
    } = *act;
    match decision {
        Decision::Rotate(trigger) => match run.rotation_hold(&spec, trigger).await {
            // The rotation would revoke a credential something may still use.
            Some((why, until, stuck)) => {
                let hold = Hold {
                    why: format!("rotation due ({}) is held: {why}", trigger.as_str()),
                    stuck,
                };
                run.settle(&spec, &target, Some(until), Some(hold)).await
            }
            None => run.rotate(&spec, &target, trigger).await,
        },
        Decision::WaitUntil(at) => run.settle(&spec, &target, Some(at), None).await,
        Decision::Idle => run.settle(&spec, &target, None, None).await,
    }
}

/// A due rotation that waits for the previous credential's revocation gates.
pub(super) struct Hold {
    pub why: String,
    /// Waiting passed maxWait (`onTimeout: Keep`).
    pub stuck: bool,
}

/// The state of one reconcile.
pub(super) struct Run {
    pub(super) sr: Arc<SecretRotation>,
    pub(super) ctx: Arc<Context>,
    pub(super) rotations: Api<SecretRotation>,
    pub(super) secrets: Api<Secret>,
    pub(super) old: SecretRotationStatus,
    pub(super) now: DateTime<Utc>,
    /// The resourceVersion the first status write must find (compare-and-swap);
    /// `None` once that write has committed the reconcile's decision.
    resource_version: std::sync::Mutex<Option<String>>,
    /// A status write lost `auditTail` (the CRD in the cluster is older than rotor).
    pub(super) tail_dropped: std::sync::atomic::AtomicBool,
}

impl Run {
    /// The next look at this resource: at the earliest of `times`, and within
    /// `--resync-interval` in any case — the safety net for a change no watch event
    /// told of.
    pub(super) fn next_look(
        &self,
        times: impl IntoIterator<Item = Option<DateTime<Utc>>>,
    ) -> Action {
        let resync = TimeDelta::from_std(self.ctx.settings.resync_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .and_then(|d| self.now.checked_add_signed(d));
        let at = times.into_iter().chain([resync]).flatten().min();
        // A far look waits in rotor's own timer (see looks.rs), a near one in
        // kube-runtime's scheduler.
        self.ctx.looks.look(
            self.sr.metadata.namespace.as_deref().unwrap_or_default(),
            self.sr.metadata.name.as_deref().unwrap_or_default(),
            at.map(|at| wait_until(at, self.now)),
        )
    }

    pub(super) fn generation(&self) -> Option<i64> {
        self.sr.meta().generation
    }

    pub(super) fn base_status(&self) -> SecretRotationStatus {
        let mut s = self.old.clone();
        s.provider = Some(self.sr.spec.provider.kind().into());
        s.target_secret = Some(self.sr.spec.target.name.clone());
        s
    }

    pub(super) async fn write_status(&self, status: &SecretRotationStatus) -> Result<(), Error> {
        if *status == self.old {
            // Also after a restart: the gauges start from what status says.
            self.export_conditions(status);
            return Ok(());
        }
        let expected = self
            .resource_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match status::write(&self.rotations, &self.sr, expected.as_deref(), status).await {
            Ok(written) => {
                self.ctx.wrote(
                    &self.sr.metadata,
                    written.metadata.resource_version.as_deref(),
                );
                // An API server whose CRD predates `auditTail` drops it (a warning,
                // not an error): the records must then go to the escrow.
                let kept = written.status.map(|s| s.audit_tail.len()).unwrap_or(0);
                if kept < status.audit_tail.len() {
                    self.tail_dropped
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.export_conditions(status);
                // The decision is committed: this reconcile owns what follows, and a
                // user's edit meanwhile must not fail its later writes.
                *self
                    .resource_version
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!(name = %self.sr.name_any(), "object changed since it was read; reconciling again");
                Err(Error::Stale)
            }
            Err(e) => {
                // It may have been written even so (a reply lost on the way).
                self.ctx.unknown(&self.sr.metadata);
                Err(e.into())
            }
        }
    }

    /// Publishes an Event about the resource (its note cut to what the API takes).
    pub(super) async fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            // The API server refuses a longer note, and the Event with it.
            note: Some(crate::rotation::clipped(&note, EVENT_NOTE_LIMIT)),
            action: action.into(),
            secondary: None,
        };
        // Off the reconcile's path, so that the worker moves on to the next resource
        // while the API server takes the Event; at most EVENTS_IN_FLIGHT at once (then
        // this waits for a free one: Events are never dropped).
        let Ok(permit) = self.ctx.events.clone().acquire_owned().await else {
            return;
        };
        let (ctx, reference) = (self.ctx.clone(), self.sr.object_ref(&()));
        let reason = reason.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = ctx.publish(&event, &reference).await {
                warn!(error = %e, %reason, "publishing an Event failed");
            }
        });
    }

    /// A spec rotor cannot act on: say what to fix, once, and wait for a change.
    async fn invalid_spec(&self, error: SpecError) -> Result<Action, Error> {
        let message = format!("invalid spec: {error}");
        self.stop_with(Reason::InvalidSpec, message).await?;
        Ok(Action::await_change())
    }

    async fn conflict(&self) -> Result<Action, Error> {
        let message = format!(
            "target Secret {:?} exists and is not managed by this SecretRotation; rotor will not overwrite it: delete it or choose another spec.target.name",
            self.sr.spec.target.name
        );
        self.stop_with(Reason::TargetConflict, message).await?;
        Ok(Action::requeue(CONFLICT_RECHECK))
    }

    async fn credentials_missing(&self, why: String) -> Result<Action, Error> {
        let message =
            format!("provider credentials unavailable: {why}; rotor looks again every 30s");
        self.stop_with(Reason::CredentialsMissing, message).await?;
        Ok(Action::requeue(CREDENTIALS_RECHECK))
    }

    pub(super) async fn stop_with(&self, reason: Reason, message: String) -> Result<(), Error> {
        let mut status = self.base_status();
        status.next_rotation_at = None;
        let first_time = self.old.last_rotation_message != message;
        status::set_phase(
            &mut status,
            reason,
            message.clone(),
            self.generation(),
            self.now,
        );
        self.write_status(&status).await?;
        if first_time {
            warn!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), reason = reason.as_str(), %message);
            self.publish(EventType::Warning, reason.as_str(), "Validate", message)
                .await;
        }
        Ok(())
    }

    /// Nothing to rotate: keep the Secret in its desired shape (labels, keys) with the
    /// values it has, and record when the next rotation is due.
    async fn settle(
        &self,
        spec: &ValidSpec,
        target: &Target,
        next: Option<DateTime<Utc>>,
        hold: Option<Hold>,
    ) -> Result<Action, Error> {
        let mut status = self.base_status();
        status.strategy = Some(spec.strategy);
        // A held rotation stays due: status keeps the time it fell due.
        status.next_rotation_at = match &hold {
            Some(_) => self.old.next_rotation_at.or(next),
            None => next,
        };
        // Slots issued before issuedBy was recorded: the kind matched (else the
        // provider change was handled), so they are the current provider's.
        if status.issued_by.is_none() && !status.slots.is_empty() {
            status.issued_by = Some(status::provider_identity(&self.sr.spec.provider));
        }
        let pair = status::slot_pair(&self.old);
        let mut write_failed = None;
        // A keyed fingerprint can only be compared with the key: load it first (once per
        // process), and if it still cannot be had, judge nothing rather than "restore"
        // a Secret that may be fine.
        let keyed = |fp: &str| fp.starts_with(crate::rotation::FINGERPRINT_PREFIX);
        if pair.active_slot().is_some_and(|a| keyed(&a.fingerprint))
            && !crate::rotation::has_fingerprint_key()
            && let Err(e) = self.vault().await
        {
            warn!(error = %e, "the fingerprint key cannot be loaded; the target Secret is not checked this time");
        }
        let can_compare = pair
            .active_slot()
            .is_some_and(|a| !keyed(&a.fingerprint) || crate::rotation::has_fingerprint_key());
        if let (Some(active), Target::Ours(_), true) = (pair.active_slot(), target, can_compare) {
            let values = target.active_values(
                spec,
                spec.provider.secret_output(),
                Some(&active.fingerprint),
            );
            let written = if values.is_empty() {
                // Edited by someone else: put the active credential back.
                match self.restore(spec, Damage::Changed).await {
                    Ok(_) => Ok(()),
                    Err(Error::Kube(e)) => Err(e),
                    Err(other) => return Err(other),
                }
            } else {
                // A revoked (or condemned) previous credential is never handed out.
                let previous = match pair.previous_slot() {
                    Some(_) => target.previous_values(spec),
                    None => BTreeMap::new(),
                };
                let mut desired = secret::desired(
                    &self.sr,
                    spec,
                    &values,
                    &previous,
                    pair.active.unwrap_or(0),
                    &active.fingerprint,
                );
                // Already as rotor would write it, and the spec (its template) is the
                // one rotor last acted on: no write, which would change nothing.
                let current = self.old.observed_generation == self.generation()
                    && matches!(target, Target::Ours(existing) if secret::holds(existing, &desired, spec));
                if current {
                    secret::scrub(&mut desired);
                    Ok(())
                } else {
                    self.apply_desired(desired).await
                }
            };
            write_failed = written.err();
        }
        if let Some(e) = write_failed {
            return self.secret_write_failed(status, e).await;
        }
        let followed = self.follow_consumers(spec, target, &mut status).await?;
        let pair = status::slot_pair(&status);
        // The revoke annotation was removed (or replaced) while an emergency was
        // incomplete: rotor stops retrying it, and says once what stays valid.
        if !status.pending_revocations.is_empty()
            && (status.emergency_token.is_none()
                || status.emergency_token.as_deref()
                    != self
                        .sr
                        .annotations()
                        .get(crate::api::REVOKE_ANNOTATION)
                        .map(String::as_str))
        {
            let named: Vec<String> = status
                .pending_revocations
                .iter()
                .map(|p| format!("{} ({})", p.id, p.fingerprint))
                .collect();
            let note = format!(
                "the emergency revoke was withdrawn before it completed: still valid at the vendor: {}; revoke by hand",
                named.join(", ")
            );
            warn!(name = %self.sr.name_any(), %note, "emergency withdrawn");
            status.pending_revocations.clear();
            status.emergency_token = None;
            status.failed_attempts = 0;
            status.next_rotation_at = next;
            status::set_phase(
                &mut status,
                Reason::Rotated,
                note.clone(),
                self.generation(),
                self.now,
            );
            self.write_status(&status).await?;
            self.publish(EventType::Warning, "EmergencyWithdrawn", "Rotate", note)
                .await;
            return Ok(Action::requeue(RESTORED_RECHECK));
        }
        let (reason, message) = match self.old.rotation_status {
            // An emergency waiting for its retry: keep naming what is still valid.
            _ if !self.old.pending_revocations.is_empty() => (
                Reason::EmergencyIncomplete,
                self.old.last_rotation_message.clone(),
            ),
            // A failed rotation waits for its retry: keep saying why.
            _ if self.old.failed_attempts > 0 => (
                Reason::RotationFailed,
                self.old.last_rotation_message.clone(),
            ),
            _ if pair.active.is_none() => (
                Reason::Pending,
                "waiting for the first rotation".to_string(),
            ),
            _ if hold.is_some() => (
                Reason::Rotated,
                hold.as_ref().map(|h| h.why.clone()).unwrap_or_default(),
            ),
            _ if followed.message.is_some() => (
                Reason::Rotated,
                format!(
                    "{}; {}",
                    describe_active(&pair, spec.strategy),
                    followed.message.clone().unwrap_or_default()
                ),
            ),
            crate::api::RotationPhase::Success => {
                (Reason::Rotated, self.old.last_rotation_message.clone())
            }
            _ => (Reason::Rotated, describe_active(&pair, spec.strategy)),
        };
        status::set_phase(&mut status, reason, message, self.generation(), self.now);
        let stuck = hold.as_ref().is_some_and(|h| h.stuck)
            || status
                .consumers
                .as_ref()
                .is_some_and(|c| c.phase == crate::api::ConsumerPhase::Stuck);
        if stuck {
            let why = match &hold {
                Some(h) => h.why.clone(),
                None => "consumers did not roll out within revocation.maxWait".into(),
            };
            status::set_condition(
                &mut status,
                crate::api::ConditionType::Degraded,
                Some((true, "ConsumerRolloutStuck", why)),
                self.generation(),
                self.now,
            );
        }
        let stale_at = self.judge_staleness(spec, &mut status).await;
        let vault = self.vault().await.ok();
        if let Some(vault) = &vault {
            status.escrow = self.vault_status(vault, spec).await;
        }
        self.write_status(&status).await?;
        self.export_schedule(&status);
        // The periodic orphan sweep, while the provider works and a credential is active.
        let mut sweep_at = None;
        if let (Some(due), Some(vault), Some(uid)) = (self.sweep_due(spec), &vault, self.sr.uid())
            && pair.active.is_some()
            && self.old.failed_attempts == 0
            && self.old.in_flight.is_none()
        {
            sweep_at = Some(due);
            if due <= self.now {
                self.sweep(spec, &pair, vault, &uid).await;
                // None when periodic sweeps are off: the one at start is done.
                sweep_at = self.sweep_due(spec);
            }
        }
        Ok(self.next_look([next, followed.wake, stale_at, sweep_at]))
    }

    /// The target Secret cannot be written (immutable, a changed type, an admission
    /// webhook): Degraded, never Ready, one Warning Event per distinct failure.
    async fn secret_write_failed(
        &self,
        mut status: SecretRotationStatus,
        error: kube::Error,
    ) -> Result<Action, Error> {
        let message = format!(
            "writing target Secret {:?} failed: {error}; consumers keep the values it holds; fix the Secret (or delete it: rotor restores it from the escrow)",
            self.sr.spec.target.name
        );
        let first_time = self.old.last_rotation_message != message;
        status::set_phase(
            &mut status,
            Reason::SecretWriteFailed,
            message.clone(),
            self.generation(),
            self.now,
        );
        self.write_status(&status).await?;
        if first_time {
            warn!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), %message, "target Secret write failed");
            self.publish(
                EventType::Warning,
                Reason::SecretWriteFailed.as_str(),
                "WriteSecret",
                message,
            )
            .await;
        }
        Ok(Action::requeue(CONFLICT_RECHECK))
    }

    pub(super) fn export_schedule(&self, status: &SecretRotationStatus) {
        let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp() as f64);
        self.ctx.metrics.schedule(
            &self.sr.namespace().unwrap_or_default(),
            &self.sr.name_any(),
            ts(status.next_rotation_at),
            ts(status.last_rotated_at),
        );
        let pair = status::slot_pair(status);
        let max_age = self
            .sr
            .spec
            .max_age
            .as_ref()
            .and_then(|s| s.duration().ok())
            .map(|d| d.as_secs_f64());
        self.ctx.metrics.credential(
            &self.sr.namespace().unwrap_or_default(),
            &self.sr.name_any(),
            ts(pair.active_slot().map(|s| s.issued_at)),
            max_age,
            status.failed_attempts,
        );
    }

    /// `rotor_resource_condition` and `rotor_consumer_rollout_stuck`, from the status
    /// rotor holds (written, or unchanged).
    fn export_conditions(&self, status: &SecretRotationStatus) {
        status::export_conditions(
            &self.ctx.metrics,
            &self.sr.namespace().unwrap_or_default(),
            &self.sr.name_any(),
            status,
        );
    }

    pub(super) fn export_rotation(&self, success: bool) {
        let elapsed = (Utc::now() - self.now).num_milliseconds().max(0) as f64 / 1000.0;
        self.ctx
            .metrics
            .rotation(self.sr.spec.provider.kind(), success, elapsed);
    }

    /// Takes the `_PREVIOUS` keys out of the target Secret, the active credential
    /// (slot `active_index`, `active_fingerprint`) staying under the mapped keys: done
    /// before the credential `_PREVIOUS` held is revoked. `Ok(false)` when the Secret
    /// does not hold the active credential, so nothing was written (an empty write
    /// would only drop what consumers have); `Ok(true)` when no `_PREVIOUS` is left.
    pub(super) async fn drop_previous_keys(
        &self,
        spec: &ValidSpec,
        target: &Target,
        active_index: u8,
        active_fingerprint: &str,
    ) -> Result<bool, kube::Error> {
        if !spec.keep_previous || target.previous_values(spec).is_empty() {
            return Ok(true);
        }
        let values = target.active_values(
            spec,
            spec.provider.secret_output(),
            Some(active_fingerprint),
        );
        if values.is_empty() {
            return Ok(false);
        }
        self.apply_secret(
            spec,
            &values,
            &BTreeMap::new(),
            active_index,
            active_fingerprint,
        )
        .await?;
        Ok(true)
    }

    pub(super) async fn apply_secret(
        &self,
        spec: &ValidSpec,
        values: &BTreeMap<String, SecretString>,
        previous: &BTreeMap<String, SecretString>,
        active_slot: u8,
        fingerprint: &str,
    ) -> Result<(), kube::Error> {
        self.apply_desired(secret::desired(
            &self.sr,
            spec,
            values,
            previous,
            active_slot,
            fingerprint,
        ))
        .await
    }

    /// Applies `desired` (from [`secret::desired`]) as the target Secret, noting the
    /// write as rotor's own; the values are scrubbed from both copies.
    async fn apply_desired(&self, mut desired: Secret) -> Result<(), kube::Error> {
        let params = PatchParams::apply(crate::api::FIELD_MANAGER).force();
        let namespace = self.sr.namespace().unwrap_or_default();
        // Its watch event may come before the reply: judged by the reply.
        let writing = self
            .ctx
            .own_writes
            .writing(&namespace, &self.sr.spec.target.name);
        let result = self
            .secrets
            .patch(&self.sr.spec.target.name, &params, &Patch::Apply(&desired))
            .await;
        secret::scrub(&mut desired);
        // (Tests: the watch event of this write comes before rotor reads the reply.)
        super::failpoint::reached("target_reply", self.old.rotation_count.saturating_add(1)).await;
        result.map(|mut written| {
            writing.done(written.metadata.resource_version.as_deref());
            secret::scrub(&mut written)
        })
    }
}

pub(super) fn describe_active(pair: &crate::rotation::SlotPair, strategy: Strategy) -> String {
    let Some(active) = pair.active else {
        return "waiting for the first rotation".into();
    };
    let fp = pair
        .active_slot()
        .map(|s| s.fingerprint.as_str())
        .unwrap_or_default();
    match (strategy, pair.previous_slot()) {
        (Strategy::DualPhase, Some(_)) => format!(
            "rotated: slot {active} active ({fp}), slot {} kept valid until the next rotation",
            1 - active
        ),
        _ => format!("rotated: slot {active} active ({fp})"),
    }
}

/// How long from `now` until `at`: at least a second, at most a year.
fn wait_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let wait = (at - now).to_std().unwrap_or_default();
    wait.clamp(Duration::from_secs(1), Duration::from_secs(365 * 86_400))
}
