//! Status: slots, phase, conditions, and the one server-side apply that writes them.

use crate::api::{
    Condition, ConditionStatus, ConditionType, FIELD_MANAGER, RotationPhase, SecretRotation,
    SecretRotationStatus, SlotState, SlotStatus,
};
use crate::rotation::{Slot, SlotPair};
use chrono::{DateTime, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

/// The slot pair recorded in status.
pub fn slot_pair(status: &SecretRotationStatus) -> SlotPair {
    let mut pair = SlotPair::default();
    for s in &status.slots {
        if s.index < 2 {
            pair.slots[usize::from(s.index)] = Some(Slot {
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
                issued_at: s.issued_at,
                revoked_at: s.revoked_at,
            });
        }
    }
    if pair.slots[usize::from(status.active_index.min(1))].is_some() {
        pair.active = Some(status.active_index.min(1));
    }
    pair
}

/// Writes a slot pair into status.
pub fn set_slots(status: &mut SecretRotationStatus, pair: &SlotPair) {
    status.active_index = pair.active.unwrap_or(0);
    status.slots = (0u8..2)
        .filter_map(|i| {
            pair.slots[usize::from(i)].as_ref().map(|s| SlotStatus {
                index: i,
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
                issued_at: s.issued_at,
                state: if pair.active == Some(i) {
                    SlotState::Active
                } else if s.is_live() {
                    SlotState::Previous
                } else {
                    SlotState::Revoked
                },
                revoked_at: s.revoked_at,
            })
        })
        .collect();
}

/// Why the resource is in its phase, for the conditions' reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Pending,
    Rotating,
    Rotated,
    RotationFailed,
    InvalidSpec,
    TargetConflict,
    CredentialsMissing,
    /// An emergency revoke whose older credentials are not all gone at the vendor.
    EmergencyIncomplete,
    /// Writing the target Secret failed (e.g. it was made immutable).
    SecretWriteFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Rotating => "Rotating",
            Self::Rotated => "Rotated",
            Self::RotationFailed => "RotationFailed",
            Self::InvalidSpec => "InvalidSpec",
            Self::TargetConflict => "TargetConflict",
            Self::CredentialsMissing => "CredentialsMissing",
            Self::EmergencyIncomplete => "EmergencyIncomplete",
            Self::SecretWriteFailed => "SecretWriteFailed",
        }
    }
}

/// Sets phase, message and the Ready / Progressing / Degraded conditions together, so
/// they never disagree. A condition keeps its lastTransitionTime while its status holds.
pub fn set_phase(
    status: &mut SecretRotationStatus,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let has_active = !status.slots.is_empty();
    status.rotation_status = match reason {
        Reason::Pending => RotationPhase::Pending,
        Reason::Rotating => RotationPhase::Rotating,
        Reason::Rotated => RotationPhase::Success,
        Reason::RotationFailed
        | Reason::InvalidSpec
        | Reason::TargetConflict
        | Reason::CredentialsMissing
        | Reason::EmergencyIncomplete
        | Reason::SecretWriteFailed => RotationPhase::Failed,
    };
    // Stopped: rotor cannot manage the credential until something changes.
    let stopped = matches!(
        reason,
        Reason::InvalidSpec
            | Reason::TargetConflict
            | Reason::CredentialsMissing
            | Reason::SecretWriteFailed
    );
    let ready = has_active && !stopped;
    let ready_reason = match reason {
        // The new credential is active; Degraded says what an emergency left.
        _ if ready && matches!(reason, Reason::Rotated | Reason::EmergencyIncomplete) => {
            "CredentialActive"
        }
        _ if ready => "PreviousCredentialActive",
        Reason::InvalidSpec
        | Reason::TargetConflict
        | Reason::RotationFailed
        | Reason::CredentialsMissing
        | Reason::SecretWriteFailed => reason.as_str(),
        _ => "NoCredentialYet",
    };
    let progressing = reason == Reason::Rotating;
    let degraded =
        stopped || reason == Reason::RotationFailed || reason == Reason::EmergencyIncomplete;
    // Ready always says what happened; Progressing and Degraded only while True (else
    // a few words instead of the same message three times in every write).
    let wanted = [
        (ConditionType::Ready, ready, ready_reason, None),
        (
            ConditionType::Progressing,
            progressing,
            if progressing { "Rotating" } else { "Idle" },
            Some("no rotation in progress"),
        ),
        (
            ConditionType::Degraded,
            degraded,
            if degraded {
                reason.as_str()
            } else {
                "AsExpected"
            },
            Some("no failure"),
        ),
    ];
    let previous = std::mem::take(&mut status.conditions);
    // Conditions set elsewhere (Stale) or by another tool are kept as they are.
    let others: Vec<Condition> = previous
        .iter()
        .filter(|c| {
            ![
                ConditionType::Ready,
                ConditionType::Progressing,
                ConditionType::Degraded,
            ]
            .iter()
            .any(|t| c.type_ == t.as_str())
        })
        .cloned()
        .collect();
    status.conditions = wanted
        .into_iter()
        .map(|(type_, on, why, when_false)| {
            let status = ConditionStatus::from_bool(on);
            let message = match when_false {
                Some(words) if !on => words.to_string(),
                _ => message.clone(),
            };
            let since = previous
                .iter()
                .find(|c| c.type_ == type_.as_str() && c.status == status)
                .map_or(now, |c| c.last_transition_time);
            Condition {
                type_: type_.as_str().into(),
                status,
                reason: why.into(),
                message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .chain(others)
        .collect();
    status.last_rotation_message = message;
    status.observed_generation = generation;
}

/// `rotor_resource_condition`, `rotor_consumer_rollout_stuck` and `rotor_escrow_problem`
/// of one resource, from
/// the status rotor wrote (or found unchanged).
pub fn export_conditions(
    metrics: &crate::metrics::Metrics,
    namespace: &str,
    name: &str,
    status: &SecretRotationStatus,
) {
    metrics.conditions(
        namespace,
        name,
        status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status == ConditionStatus::True)),
        status
            .consumers
            .as_ref()
            .map(|c| c.phase == crate::api::ConsumerPhase::Stuck),
        status.escrow.as_ref().is_some_and(|e| e.problem.is_some()),
    );
}

/// Sets one condition (keeping its lastTransitionTime while its status holds), or
/// removes it with `None`.
pub fn set_condition(
    status: &mut SecretRotationStatus,
    type_: ConditionType,
    wanted: Option<(bool, &str, String)>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let old = status
        .conditions
        .iter()
        .position(|c| c.type_ == type_.as_str())
        .map(|i| status.conditions.remove(i));
    let Some((on, reason, message)) = wanted else {
        return;
    };
    let on = ConditionStatus::from_bool(on);
    let since = old
        .filter(|c| c.status == on)
        .map_or(now, |c| c.last_transition_time);
    status.conditions.push(Condition {
        type_: type_.as_str().into(),
        status: on,
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    });
}

/// Which provider a spec names: its kind and where it issues (endpoint, project,
/// database). Credentials issued by one identity are never revoked against another.
pub fn provider_identity(spec: &crate::api::ProviderSpec) -> String {
    use crate::api::ProviderSpec as P;
    match spec {
        P::Random(_) => "random".into(),
        P::Supabase(s) => format!(
            "supabase:{}/{}",
            s.base_url.as_deref().unwrap_or("https://api.supabase.com"),
            s.project_ref
        ),
        P::Convex(s) => format!("convex:{}", s.base_url.as_deref().unwrap_or_default()),
        P::Convox(s) => format!("convox:{}", s.rack_url),
        P::Http(s) => format!("http:{}", origin(&s.issue.url)),
        P::Postgres(s) => format!("postgres:{}:{}/{}", s.host, s.port, s.database),
        P::Redis(s) => format!("redis:{}:{}", s.host, s.port),
        P::AwsIam(s) => format!(
            "awsIam:{}/{}",
            s.endpoint_url
                .as_deref()
                .unwrap_or("https://iam.amazonaws.com"),
            s.user_name
        ),
        P::Mysql(s) => format!("mysql:{}:{}/{}", s.host, s.port, s.database),
    }
}

/// `scheme://authority` of a URL template (placeholders and all), without its path.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(end) => &url[..after_scheme + end],
        None => url,
    }
}

/// Replaces the whole status (server-side apply, rotor's field manager). With
/// `resource_version`, only if the object is still at that version: a writer that
/// decided on an older object gets 409 Conflict and must not act.
pub async fn write(
    api: &Api<SecretRotation>,
    sr: &SecretRotation,
    resource_version: Option<&str>,
    status: &SecretRotationStatus,
) -> Result<SecretRotation, kube::Error> {
    let mut patch = json!({
        "apiVersion": SecretRotation::api_version(&()),
        "kind": SecretRotation::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    api.patch_status(
        &sr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn with_active() -> SecretRotationStatus {
        let mut status = SecretRotationStatus::default();
        let mut pair = SlotPair::default();
        pair.slots[0] = Some(Slot {
            id: "k1".into(),
            fingerprint: "sha256:00000000".into(),
            issued_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            revoked_at: None,
        });
        pair.active = Some(0);
        set_slots(&mut status, &pair);
        status
    }

    fn cond(s: &SecretRotationStatus, t: ConditionType) -> (&'static str, &str) {
        let c = s.condition(t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    /// The contract the Argo CD health check (config/argocd/health.lua) and
    /// `kubectl wait --for=condition=Ready` read: for every reason, with and without an
    /// active credential, the phase and the three conditions (status, reason).
    #[test]
    fn every_reason_sets_phase_and_conditions_together() {
        use Reason as R;
        use RotationPhase as P;
        type Row = (
            R,
            bool,
            P,
            (&'static str, &'static str),
            &'static str,
            (&'static str, &'static str),
        );
        // (reason, has an active slot, phase, Ready, Progressing, Degraded)
        let table: [Row; 18] = [
            (
                R::Pending,
                false,
                P::Pending,
                ("False", "NoCredentialYet"),
                "False",
                ("False", "AsExpected"),
            ),
            (
                R::Pending,
                true,
                P::Pending,
                ("True", "PreviousCredentialActive"),
                "False",
                ("False", "AsExpected"),
            ),
            (
                R::Rotating,
                false,
                P::Rotating,
                ("False", "NoCredentialYet"),
                "True",
                ("False", "AsExpected"),
            ),
            (
                R::Rotating,
                true,
                P::Rotating,
                ("True", "PreviousCredentialActive"),
                "True",
                ("False", "AsExpected"),
            ),
            (
                R::Rotated,
                false,
                P::Success,
                ("False", "NoCredentialYet"),
                "False",
                ("False", "AsExpected"),
            ),
            (
                R::Rotated,
                true,
                P::Success,
                ("True", "CredentialActive"),
                "False",
                ("False", "AsExpected"),
            ),
            (
                R::RotationFailed,
                false,
                P::Failed,
                ("False", "RotationFailed"),
                "False",
                ("True", "RotationFailed"),
            ),
            (
                R::RotationFailed,
                true,
                P::Failed,
                ("True", "PreviousCredentialActive"),
                "False",
                ("True", "RotationFailed"),
            ),
            (
                R::InvalidSpec,
                false,
                P::Failed,
                ("False", "InvalidSpec"),
                "False",
                ("True", "InvalidSpec"),
            ),
            (
                R::InvalidSpec,
                true,
                P::Failed,
                ("False", "InvalidSpec"),
                "False",
                ("True", "InvalidSpec"),
            ),
            (
                R::TargetConflict,
                false,
                P::Failed,
                ("False", "TargetConflict"),
                "False",
                ("True", "TargetConflict"),
            ),
            (
                R::TargetConflict,
                true,
                P::Failed,
                ("False", "TargetConflict"),
                "False",
                ("True", "TargetConflict"),
            ),
            (
                R::CredentialsMissing,
                false,
                P::Failed,
                ("False", "CredentialsMissing"),
                "False",
                ("True", "CredentialsMissing"),
            ),
            (
                R::CredentialsMissing,
                true,
                P::Failed,
                ("False", "CredentialsMissing"),
                "False",
                ("True", "CredentialsMissing"),
            ),
            (
                R::EmergencyIncomplete,
                false,
                P::Failed,
                ("False", "NoCredentialYet"),
                "False",
                ("True", "EmergencyIncomplete"),
            ),
            (
                R::EmergencyIncomplete,
                true,
                P::Failed,
                ("True", "CredentialActive"),
                "False",
                ("True", "EmergencyIncomplete"),
            ),
            (
                R::SecretWriteFailed,
                false,
                P::Failed,
                ("False", "SecretWriteFailed"),
                "False",
                ("True", "SecretWriteFailed"),
            ),
            (
                R::SecretWriteFailed,
                true,
                P::Failed,
                ("False", "SecretWriteFailed"),
                "False",
                ("True", "SecretWriteFailed"),
            ),
        ];
        let now = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        for (reason, active, phase, ready, progressing, degraded) in table {
            let mut s = if active {
                with_active()
            } else {
                SecretRotationStatus::default()
            };
            set_phase(&mut s, reason, "the message".into(), Some(7), now);
            let case = format!("{reason:?}, active: {active}");
            assert_eq!(s.rotation_status, phase, "{case}");
            assert_eq!(cond(&s, ConditionType::Ready), ready, "{case}");
            assert_eq!(
                cond(&s, ConditionType::Progressing).0,
                progressing,
                "{case}"
            );
            let idle = if progressing == "True" {
                "Rotating"
            } else {
                "Idle"
            };
            assert_eq!(cond(&s, ConditionType::Progressing).1, idle, "{case}");
            assert_eq!(cond(&s, ConditionType::Degraded), degraded, "{case}");
            assert_eq!(s.conditions.len(), 3, "{case}");
            // Ready carries the message; the others only while True.
            for c in &s.conditions {
                let expected = match (c.type_.as_str(), c.status) {
                    ("Ready", _) | (_, ConditionStatus::True) => "the message",
                    ("Progressing", _) => "no rotation in progress",
                    _ => "no failure",
                };
                assert_eq!(
                    (c.message.as_str(), c.observed_generation),
                    (expected, Some(7)),
                    "{case}: {}",
                    c.type_
                );
            }
            assert_eq!(s.last_rotation_message, "the message");
            assert_eq!(s.observed_generation, Some(7));
        }
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let t0 = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        let t1 = t0 + chrono::Duration::hours(1);
        let mut s = with_active();
        set_phase(&mut s, Reason::Rotated, "a".into(), None, t0);
        set_phase(&mut s, Reason::RotationFailed, "b".into(), None, t1);
        let since = |t| s.condition(t).unwrap().last_transition_time;
        // Ready stayed True (another reason): its time holds; Degraded flipped.
        assert_eq!(since(ConditionType::Ready), t0);
        assert_eq!(since(ConditionType::Degraded), t1);
        assert_eq!(since(ConditionType::Progressing), t0);
    }

    #[test]
    fn provider_identity_names_kind_and_endpoint() {
        assert_eq!(
            origin("https://api.example.com/admin/keys"),
            "https://api.example.com"
        );
        assert_eq!(origin("http://{{id}}:8080?x=1"), "http://{{id}}:8080");
        assert_eq!(origin("no-scheme/path"), "no-scheme");
    }
}
