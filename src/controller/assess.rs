//! One assessment of a SecretRotation, shared by every reconcile and by `rotor plan`,
//! so what plan prints is what the controller does:
//! prepare (validate the spec, resolve its Secrets) → classify the target Secret →
//! foreign check (and its immutable type) → observe → decide.

use super::credentials::{self, Unresolved};
use super::secret::Target;
use super::validate::{SpecError, ValidSpec, check_type_change};
use crate::api::{REVOKE_ANNOTATION, ROTATE_ANNOTATION, SecretRotation, SecretRotationStatus};
use crate::providers::HttpClient;
use crate::rotation::{self, Decision, Observed, Trigger};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

/// What to do with a SecretRotation.
pub enum Assessment {
    /// rotor cannot act on it: the reason says what to fix.
    Stop(Stop),
    /// Act on `decision`.
    Act(Box<Act>),
}

/// Why rotor cannot act on a SecretRotation.
#[derive(Debug)]
pub enum Stop {
    /// A spec rotor cannot act on (waits for a change).
    InvalidSpec(SpecError),
    /// Admin credentials that may still appear (looked for again).
    CredentialsMissing(String),
    /// The target Secret exists and is not this resource's.
    Conflict,
}

/// A SecretRotation rotor can act on.
pub struct Act {
    pub spec: ValidSpec,
    pub target: Target,
    pub decision: Decision,
}

impl Act {
    /// A deleted or incomplete target Secret gets the credentials it had back from the
    /// vault first; only when the vault cannot give them does the rotation refill it.
    pub fn restore_first(&self) -> bool {
        self.decision == Decision::Rotate(Trigger::TargetMissing)
    }
}

/// Assesses `sr` as it is now: reads its Secrets (admin credentials, the target —
/// unless `target` holds it as read already in this reconcile).
pub async fn assess(
    sr: &SecretRotation,
    status: &SecretRotationStatus,
    secrets: &Api<Secret>,
    http: &HttpClient,
    now: DateTime<Utc>,
    target: Option<Option<Secret>>,
) -> Result<Assessment, kube::Error> {
    let spec = match credentials::prepare(sr, secrets, http).await {
        Ok(spec) => spec,
        Err(Unresolved::Spec(e)) => return Ok(Assessment::Stop(Stop::InvalidSpec(e))),
        Err(Unresolved::Missing(why)) => {
            return Ok(Assessment::Stop(Stop::CredentialsMissing(why)));
        }
        Err(Unresolved::Kube(e)) => return Err(e),
    };
    let existing = match target {
        Some(read) => read,
        None => secrets.get_opt(&sr.spec.target.name).await?,
    };
    Ok(judge(sr, status, spec, existing, now))
}

/// The assessment of a prepared spec and the target Secret as read: no I/O.
pub fn judge(
    sr: &SecretRotation,
    status: &SecretRotationStatus,
    spec: ValidSpec,
    existing: Option<Secret>,
    now: DateTime<Utc>,
) -> Assessment {
    let target = Target::classify(existing, sr);
    if matches!(target, Target::Foreign) {
        return Assessment::Stop(Stop::Conflict);
    }
    // A Secret's type is immutable: refuse before any credential is issued.
    if let Target::Ours(existing) = &target {
        let wanted = sr
            .spec
            .target
            .template
            .as_ref()
            .and_then(|t| t.type_.as_deref());
        if let Err(e) = check_type_change(existing.type_.as_deref(), wanted) {
            return Assessment::Stop(Stop::InvalidSpec(e));
        }
    }
    let observed = observe(sr, status, target.is_complete(&spec), now);
    let decision = rotation::decide(&observed, &spec.schedule);
    Assessment::Act(Box::new(Act {
        spec,
        target,
        decision,
    }))
}

/// What the decision needs, from the resource, its status and its target Secret.
pub fn observe<'a>(
    sr: &'a SecretRotation,
    status: &'a SecretRotationStatus,
    target_complete: bool,
    now: DateTime<Utc>,
) -> Observed<'a> {
    let annotation = |key: &str| sr.annotations().get(key).map(String::as_str);
    Observed {
        now,
        has_active: !status.slots.is_empty(),
        in_flight: status.in_flight.is_some(),
        target_complete,
        last_rotated_at: status.last_rotated_at,
        last_attempted_at: status.last_rotation_attempted_at,
        failed_attempts: status.failed_attempts,
        rotate_token: annotation(ROTATE_ANNOTATION),
        handled_token: status.last_handled_rotate_token.as_deref(),
        revoke_token: annotation(REVOKE_ANNOTATION),
        handled_revoke_token: status.last_handled_revoke_token.as_deref(),
        emergency_token: status.emergency_token.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{self, RANDOM, UID};
    use crate::controller::status;
    use chrono::TimeDelta;

    /// What an assessment says, in one word (and the trigger or the stop).
    fn verdict(a: &Assessment) -> String {
        match a {
            Assessment::Stop(Stop::Conflict) => "stop: conflict".into(),
            Assessment::Stop(Stop::InvalidSpec(e)) => format!("stop: invalid spec: {e}"),
            Assessment::Stop(Stop::CredentialsMissing(why)) => format!("stop: missing: {why}"),
            Assessment::Act(act) => match act.decision {
                Decision::Rotate(t) if act.restore_first() => {
                    format!("restore, else rotate ({})", t.as_str())
                }
                Decision::Rotate(t) => format!("rotate ({})", t.as_str()),
                Decision::WaitUntil(_) => "wait".into(),
                Decision::Idle => "idle".into(),
            },
        }
    }

    #[test]
    fn one_assessment_for_every_case() {
        let now = chrono::DateTime::UNIX_EPOCH + TimeDelta::days(20_000);
        // A resource that rotated an hour ago, its Secret holding the active value.
        let mut rotated = SecretRotationStatus::default();
        status::set_slots(
            &mut rotated,
            &fixtures::slots(1, [Some("old"), Some("new")]),
        );
        rotated.rotation_count = 2;
        rotated.last_rotated_at = Some(now - TimeDelta::hours(1));
        let fresh = SecretRotationStatus::default();
        let ours = |data: &[(&str, &str)]| Some(fixtures::secret(Some(UID), Some("Opaque"), data));
        let complete = || ours(&[("TOKEN", "new"), ("TOKEN_PREVIOUS", "old")]);
        let tls = "provider: {random: {length: 16}}\nsecretsMapping: {value: TOKEN}\ntarget: {name: shop-token, template: {type: kubernetes.io/tls}}\n";
        // (case, spec, annotations, status, target Secret, verdict)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a SecretRotationStatus,
            Option<Secret>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "a new resource",
                RANDOM,
                &[],
                &fresh,
                None,
                "rotate (initial)",
            ),
            (
                "settled and not due",
                RANDOM,
                &[],
                &rotated,
                complete(),
                "wait",
            ),
            (
                "a new rotate token",
                RANDOM,
                &[(ROTATE_ANNOTATION, "t1")],
                &rotated,
                complete(),
                "rotate (manual)",
            ),
            (
                "a new revoke token",
                RANDOM,
                &[(REVOKE_ANNOTATION, "leak")],
                &rotated,
                complete(),
                "rotate (emergency)",
            ),
            // The Secret is gone or lost a key: the vault gives it back first.
            (
                "the target deleted",
                RANDOM,
                &[],
                &rotated,
                None,
                "restore, else rotate (targetMissing)",
            ),
            (
                "the target lost a key",
                RANDOM,
                &[],
                &rotated,
                ours(&[("OTHER", "x")]),
                "restore, else rotate (targetMissing)",
            ),
            // Someone else's Secret is never written, whatever the schedule says.
            (
                "a foreign Secret of the name",
                RANDOM,
                &[(ROTATE_ANNOTATION, "t1")],
                &rotated,
                Some(fixtures::owned_by_someone_else(true)),
                "stop: conflict",
            ),
            (
                "a human's Secret of the name",
                RANDOM,
                &[],
                &fresh,
                Some(fixtures::secret(None, None, &[])),
                "stop: conflict",
            ),
            // A Secret's type is immutable: refused before anything is issued.
            (
                "the template changes the type",
                tls,
                &[],
                &rotated,
                complete(),
                "stop: invalid spec",
            ),
            (
                "autoRotation off, nothing asked",
                "provider: {random: {length: 16}}\nsecretsMapping: {value: TOKEN}\ntarget: {name: shop-token}\nschedule: {autoRotation: false}\n",
                &[],
                &rotated,
                complete(),
                "idle",
            ),
        ];
        for (case, spec, annotations, status, existing, want) in cases {
            let sr = fixtures::resource(spec, annotations);
            let a = judge(&sr, status, fixtures::valid(&sr), existing, now);
            let got = verdict(&a);
            assert!(got.starts_with(want), "{case}: {got}");
        }
    }
}
