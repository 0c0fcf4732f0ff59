//! `spec.maxAge`: a credential older than it (rotation paused, failing or manual) is
//! Stale — a condition, a Warning Event and the webhook when it becomes so, and the
//! `rotor_credential_age_seconds` gauge all along.

use super::reconcile::Run;
use super::status;
use super::validate::ValidSpec;
use crate::api::{ConditionStatus, ConditionType, SecretRotationStatus};
use crate::notify::NotifyEvent;
use chrono::{DateTime, TimeDelta, Utc};
use kube::runtime::events::EventType;

impl Run {
    /// Sets the Stale condition; returns when the active credential turns stale.
    pub(super) async fn judge_staleness(
        &self,
        spec: &ValidSpec,
        status: &mut SecretRotationStatus,
    ) -> Option<DateTime<Utc>> {
        let pair = status::slot_pair(status);
        let (Some(max_age), Some(active)) = (spec.max_age, pair.active_slot()) else {
            status::set_condition(status, ConditionType::Stale, None, None, self.now);
            return None;
        };
        let limit = TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX);
        let stale_at = active
            .issued_at
            .checked_add_signed(limit)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let stale = self.now >= stale_at;
        let was = self
            .old
            .condition(ConditionType::Stale)
            .is_some_and(|c| c.status == ConditionStatus::True);
        let max = humantime::format_duration(max_age);
        let message = if stale {
            format!(
                "the active credential ({}) was issued at {} and is older than spec.maxAge ({max}); {}",
                active.fingerprint,
                active.issued_at.to_rfc3339(),
                if spec.schedule.auto {
                    "rotation is failing or held: see lastRotationMessage"
                } else {
                    "autoRotation is off: rotate it (rotor rotate)"
                }
            )
        } else {
            format!("the active credential is younger than spec.maxAge ({max})")
        };
        let reason = if stale {
            "MaxAgeExceeded"
        } else {
            "WithinMaxAge"
        };
        status::set_condition(
            status,
            ConditionType::Stale,
            Some((stale, reason, message.clone())),
            self.generation(),
            self.now,
        );
        if stale && !was {
            self.publish(EventType::Warning, "Stale", "Check", message.clone())
                .await;
            self.notify(
                spec,
                NotifyEvent::Stale,
                message,
                Some(active.fingerprint.clone()),
            )
            .await;
        }
        (!stale).then_some(stale_at)
    }
}
