//! `rotor audit NAME [-n NS]`: a SecretRotation's audit trail (ids, fingerprints and
//! actions, never values), oldest first.

use super::Error;
use super::output::{self, Output};
use crate::vault::AuditRecord;
use chrono::{DateTime, Utc};
use kube::Client;
use serde::Serialize;

/// One audit record, as `-o json|yaml` prints it: every key always present.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub time: DateTime<Utc>,
    /// schedule, annotation, cli, operator, keys-rotate, ...
    pub actor: String,
    /// issue, test, activate, revoke, failure, key-rotation, restore, ...
    pub action: String,
    /// The credential's id at the provider.
    pub credential: Option<String>,
    pub old_fingerprint: Option<String>,
    pub new_fingerprint: Option<String>,
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditRow {
    fn from(r: AuditRecord) -> Self {
        Self {
            time: r.time,
            actor: r.actor,
            action: r.action,
            credential: r.credential,
            old_fingerprint: r.old_fingerprint,
            new_fingerprint: r.new_fingerprint,
            detail: r.detail,
        }
    }
}

/// The trail of SecretRotation `name` in `namespace` (empty when it has none).
pub async fn rows(client: &Client, namespace: &str, name: &str) -> Result<Vec<AuditRow>, Error> {
    let records = crate::vault::read_audit(client, namespace, name).await?;
    Ok(records.into_iter().map(AuditRow::from).collect())
}

/// `rows` printed as `output` asks.
pub fn render(rows: &[AuditRow], output: Output) -> Result<String, Error> {
    if let Some(done) = output::without_table(rows, output) {
        return done;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let lines = rows
        .iter()
        .map(|r| {
            vec![
                r.time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                r.actor.clone(),
                r.action.clone(),
                dash(&r.credential),
                dash(&r.old_fingerprint),
                dash(&r.new_fingerprint),
                r.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Ok(output::table(
        &[
            "TIME",
            "ACTOR",
            "ACTION",
            "CREDENTIAL",
            "OLD",
            "NEW",
            "DETAIL",
        ],
        lines,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_present_in_json() {
        let row = AuditRow::from(AuditRecord {
            time: "2026-01-02T00:00:00Z".parse().unwrap(),
            actor: "schedule".into(),
            action: "issue".into(),
            credential: Some("key-1".into()),
            old_fingerprint: None,
            new_fingerprint: Some("sha256:11111111".into()),
            detail: None,
        });
        let text = render(&[row], Output::Json).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{
                "time": "2026-01-02T00:00:00Z",
                "actor": "schedule",
                "action": "issue",
                "credential": "key-1",
                "oldFingerprint": null,
                "newFingerprint": "sha256:11111111",
                "detail": null
            }])
        );
        assert_eq!(render(&[], Output::Table).unwrap(), "");
        assert_eq!(render(&[], Output::Json).unwrap(), "[]\n");
    }
}
