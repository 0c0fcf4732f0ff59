//! `rotor status [NAME] [-n NS | -A]`: each SecretRotation's status in one line, the
//! columns of `kubectl get srot -o wide` and what a user asks next (ready? how many
//! rotations? what went wrong?). Read from status only, which holds no value.

use super::output::{self, Output};
use super::{Error, Scope};
use crate::api::{ConditionType, SecretRotation, SecretRotationStatus};
use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

/// How many characters of the message the table shows (JSON and YAML carry it whole).
pub const MESSAGE_WIDTH: usize = 60;

/// One SecretRotation's status, as `-o json|yaml` prints it: every key always present
/// (null when unknown), camelCase, never a value.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub namespace: String,
    pub name: String,
    /// random, supabase, convex, convox, http, postgres, mysql, redis or awsIam.
    pub provider: Option<String>,
    /// Pending, Rotating, Success or Failed; Unknown when status does not parse.
    pub phase: String,
    /// The Ready condition: True, False or Unknown; null before rotor looked.
    pub ready: Option<String>,
    /// The slot (0 or 1) whose credential is in the target Secret; null before the
    /// first credential.
    pub active_slot: Option<u8>,
    /// Completed rotations.
    pub rotations: u64,
    /// Failed attempts since the last successful rotation.
    pub failed_attempts: u32,
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// The next rotation (or retry); null when only manual rotation is on.
    pub next_rotation_at: Option<DateTime<Utc>>,
    /// The Secret rotor writes.
    pub target_secret: Option<String>,
    /// What happened last, in words.
    pub message: String,
}

/// The SecretRotations in `scope` (or only `name`), sorted by namespace and name.
pub async fn rows(
    client: &Client,
    scope: &Scope,
    name: Option<&str>,
) -> Result<Vec<StatusRow>, Error> {
    // Untyped: one object whose spec no longer parses still shows its status.
    let resource = ApiResource::erase::<SecretRotation>(&());
    let api: Api<DynamicObject> = match scope.namespace() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let objects = match name {
        Some(name) => match api.get_opt(name).await? {
            Some(object) => vec![object],
            None => {
                return Err(Error::NotFound {
                    kind: "SecretRotation",
                    name: name.into(),
                    namespace: scope.namespace().unwrap_or_default().into(),
                });
            }
        },
        None => {
            api.list(&ListParams::default())
                .await
                .map_err(Error::listing)?
                .items
        }
    };
    let mut rows: Vec<StatusRow> = objects.iter().map(row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(rows)
}

/// The row of one object as the API server holds it.
pub fn row(object: &DynamicObject) -> StatusRow {
    let mut row = StatusRow {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        provider: None,
        phase: "Pending".into(),
        ready: None,
        active_slot: None,
        rotations: 0,
        failed_attempts: 0,
        last_rotated_at: None,
        next_rotation_at: None,
        target_secret: None,
        message: String::new(),
    };
    // The spec's provider until status names one: `spec.provider` has one key.
    row.provider = object
        .data
        .pointer("/spec/provider")
        .and_then(|p| p.as_object())
        .and_then(|p| p.keys().next().cloned());
    let status = match object.data.get("status") {
        None => return row,
        Some(raw) => match serde_json::from_value::<SecretRotationStatus>(raw.clone()) {
            Ok(status) => status,
            Err(e) => {
                row.phase = "Unknown".into();
                row.message = format!("status does not parse: {e}");
                return row;
            }
        },
    };
    row.provider = status.provider.clone().or(row.provider);
    row.phase = format!("{:?}", status.rotation_status);
    row.ready = status
        .condition(ConditionType::Ready)
        .map(|c| c.status.as_str().to_string());
    row.active_slot = (!status.slots.is_empty()).then_some(status.active_index);
    row.rotations = status.rotation_count;
    row.failed_attempts = status.failed_attempts;
    row.last_rotated_at = status.last_rotated_at;
    row.next_rotation_at = status.next_rotation_at;
    row.target_secret = status.target_secret.clone();
    row.message = status.last_rotation_message.clone();
    row
}

/// `rows` printed as `output` asks; the table has a NAMESPACE column only for `-A`.
pub fn render(
    rows: &[StatusRow],
    output: Output,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    if let Some(done) = output::without_table(rows, output) {
        return done;
    }
    let all = *scope == Scope::All;
    let mut header = vec![
        "NAME",
        "PROVIDER",
        "PHASE",
        "READY",
        "ACTIVE",
        "ROTATIONS",
        "LAST ROTATED",
        "NEXT ROTATION",
        "MESSAGE",
    ];
    if all {
        header.insert(0, "NAMESPACE");
    }
    let lines = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.provider.clone().unwrap_or_else(|| "-".into()),
                r.phase.clone(),
                r.ready.clone().unwrap_or_else(|| "-".into()),
                r.active_slot.map_or_else(|| "-".into(), |s| s.to_string()),
                r.rotations.to_string(),
                output::age(r.last_rotated_at, now),
                output::until(r.next_rotation_at, now),
                output::truncate(&r.message, MESSAGE_WIDTH),
            ];
            if all {
                cells.insert(0, r.namespace.clone());
            }
            cells
        })
        .collect();
    Ok(output::table(&header, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn rotated() -> DynamicObject {
        object(json!({
            "apiVersion": "rotor.dev/v1alpha1",
            "kind": "SecretRotation",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"provider": {"random": {}}},
            "status": {
                "rotationStatus": "Success",
                "provider": "random",
                "activeIndex": 1,
                "slots": [
                    {"index": 0, "id": "a", "fingerprint": "sha256:00000000",
                     "issuedAt": "2026-01-01T00:00:00Z", "state": "previous"},
                    {"index": 1, "id": "b", "fingerprint": "sha256:11111111",
                     "issuedAt": "2026-01-02T00:00:00Z", "state": "active"}
                ],
                "lastRotatedAt": "2026-01-02T00:00:00Z",
                "nextRotationAt": "2026-01-03T00:00:00Z",
                "lastRotationMessage": "rotated into slot 1",
                "rotationCount": 2,
                "targetSecret": "db-secret",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Rotated",
                                "message": "", "lastTransitionTime": "2026-01-02T00:00:00Z"}]
            }
        }))
    }

    #[test]
    fn a_row_carries_what_status_says() {
        let row = row(&rotated());
        assert_eq!(row.phase, "Success");
        assert_eq!(row.ready.as_deref(), Some("True"));
        assert_eq!(row.active_slot, Some(1));
        assert_eq!(row.rotations, 2);
        assert_eq!(row.target_secret.as_deref(), Some("db-secret"));
        let json = serde_json::to_value(&row).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut documented = vec![
            "namespace",
            "name",
            "provider",
            "phase",
            "ready",
            "activeSlot",
            "rotations",
            "failedAttempts",
            "lastRotatedAt",
            "nextRotationAt",
            "targetSecret",
            "message",
        ];
        documented.sort();
        assert_eq!(keys, documented);
        assert_eq!(json["nextRotationAt"], "2026-01-03T00:00:00Z");
    }

    #[test]
    fn an_object_without_status_or_with_a_broken_one_still_has_a_row() {
        let fresh = row(&object(json!({
            "apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
            "metadata": {"name": "new", "namespace": "shop"},
            "spec": {"provider": {"supabase": {}}}
        })));
        assert_eq!(
            (
                fresh.phase.as_str(),
                fresh.provider.as_deref(),
                fresh.active_slot
            ),
            ("Pending", Some("supabase"), None)
        );
        let broken = row(&object(json!({
            "apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
            "metadata": {"name": "odd", "namespace": "shop"},
            "spec": "not an object",
            "status": {"rotationCount": "many"}
        })));
        assert_eq!(broken.phase, "Unknown");
        assert!(
            broken.message.starts_with("status does not parse"),
            "{}",
            broken.message
        );
    }

    #[test]
    fn the_table_has_a_namespace_column_only_for_all_namespaces() {
        let rows = vec![row(&rotated())];
        let now = "2026-01-02T05:00:00Z".parse().unwrap();
        let one = render(&rows, Output::Table, &Scope::Namespace("shop".into()), now).unwrap();
        let lines: Vec<&str> = one.lines().collect();
        assert!(lines[0].starts_with("NAME "), "{one}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "db", "random", "Success", "True", "1", "2", "5h", "in", "19h", "rotated", "into",
                "slot", "1"
            ]
        );
        let all = render(&rows, Output::Table, &Scope::All, now).unwrap();
        assert!(all.starts_with("NAMESPACE "), "{all}");
        assert!(all.lines().nth(1).unwrap().starts_with("shop "), "{all}");
    }
}
