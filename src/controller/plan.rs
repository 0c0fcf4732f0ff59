//! `rotor plan`: what the controller would do for each SecretRotation, computed by
//! the same assessment every reconcile makes ([`super::assess`]), changing nothing.

use super::assess::{Assessment, Stop, assess};
use super::guard::{Guarded, unreadable_message};

use crate::api::{RotationPhase, SecretRotation};
use crate::providers::{HttpClient, HttpSettings};
use crate::rotation::Decision;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// One line of the plan (`rotor plan -o json` prints these, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    pub namespace: String,
    pub name: String,
    pub provider: String,
    /// status.rotationStatus.
    pub phase: RotationPhase,
    pub next_rotation_at: Option<DateTime<Utc>>,
    /// What the controller would do now, in words.
    pub action: String,
}

/// Plans every SecretRotation in `namespace` (all namespaces when `None`), or only
/// `only` when given.
pub async fn plan(
    client: Client,
    namespace: Option<&str>,
    only: Option<&str>,
) -> Result<Vec<PlanRow>, kube::Error> {
    // Read through the guard: one object that no longer parses gets its own row
    // instead of failing the whole plan.
    let api: Api<Guarded> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = match only {
        Some(name) => vec![api.get(name).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    items.sort_by_key(|g| (g.namespace(), g.name_any()));
    // Endpoint checks belong to the running operator's flags; plan judges the rest.
    let http = HttpClient::new(HttpSettings {
        allow_private_endpoints: true,
        ..HttpSettings::default()
    });
    let mut rows = Vec::new();
    for guarded in items {
        let sr = match guarded.object() {
            Ok(sr) => sr,
            Err(unreadable) => {
                let status = unreadable.status.clone().unwrap_or_default();
                rows.push(PlanRow {
                    namespace: guarded.metadata.namespace.clone().unwrap_or_default(),
                    name: guarded.metadata.name.clone().unwrap_or_default(),
                    provider: status.provider.clone().unwrap_or_else(|| "-".into()),
                    phase: status.rotation_status,
                    next_rotation_at: None,
                    action: format!("nothing: {}", unreadable_message(&unreadable.error)),
                });
                continue;
            }
        };
        let ns = sr.namespace().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let status = sr.status.clone().unwrap_or_default();
        let action = describe(&sr, &status, &secrets, &http).await?;
        rows.push(PlanRow {
            namespace: ns,
            name: sr.name_any(),
            provider: sr.spec.provider.kind().into(),
            phase: status.rotation_status,
            next_rotation_at: status.next_rotation_at,
            action,
        });
    }
    Ok(rows)
}

async fn describe(
    sr: &SecretRotation,
    status: &crate::api::SecretRotationStatus,
    secrets: &Api<Secret>,
    http: &HttpClient,
) -> Result<String, kube::Error> {
    let act = match assess(sr, status, secrets, http, Utc::now(), None).await? {
        Assessment::Act(act) => act,
        Assessment::Stop(stop) => return Ok(describe_stop(sr, &stop)),
    };
    let mut slot = status.slot_target_description(act.spec.strategy);
    // The retry of an incomplete emergency only revokes what is still pending.
    if !status.pending_revocations.is_empty()
        && status.emergency_token.as_deref()
            == sr
                .annotations()
                .get(crate::api::REVOKE_ANNOTATION)
                .map(String::as_str)
    {
        let ids: Vec<&str> = status
            .pending_revocations
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        slot = format!(
            "revoke {} (emergency incomplete; nothing is issued)",
            ids.join(", ")
        );
    }
    Ok(match act.decision {
        Decision::Rotate(_) if act.restore_first() => format!(
            "restore Secret {:?} from the escrow (rotate now, targetMissing, if the escrow lacks the active credential): {slot}",
            sr.spec.target.name
        ),
        Decision::Rotate(trigger) => format!("rotate now ({}): {slot}", trigger.as_str()),
        Decision::WaitUntil(at) if status.failed_attempts > 0 => {
            format!(
                "retry at {} (after {} failed attempts): {slot}",
                at.to_rfc3339(),
                status.failed_attempts
            )
        }
        Decision::WaitUntil(at) => format!("rotate at {}: {slot}", at.to_rfc3339()),
        Decision::Idle => "nothing until a rotor.dev/rotate token (autoRotation: false)".into(),
    })
}

/// What plan says of a SecretRotation rotor cannot act on.
fn describe_stop(sr: &SecretRotation, stop: &Stop) -> String {
    match stop {
        Stop::InvalidSpec(e) => format!("nothing: invalid spec: {e}"),
        Stop::CredentialsMissing(why) => format!("nothing until the credentials exist: {why}"),
        Stop::Conflict => format!(
            "nothing: Secret {:?} exists and is not rotor's",
            sr.spec.target.name
        ),
    }
}

impl crate::api::SecretRotationStatus {
    /// "issue into slot N, revoking <id>" for the next rotation.
    fn slot_target_description(&self, strategy: crate::api::Strategy) -> String {
        let plan = super::status::slot_pair(self).plan(strategy);
        match (&plan.revoke_before_issue, &plan.replaces) {
            (Some(id), _) => format!("issue into slot {}, revoking {id}", plan.target),
            (None, Some(id)) => format!("replace {id} in place (single-phase)"),
            (None, None) => format!("issue into slot {}", plan.target),
        }
    }
}
