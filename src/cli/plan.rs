//! `rotor plan [NAME] [-n NS | -A]`: what the controller would do for each
//! SecretRotation ([`crate::controller::plan`]), as a table, JSON or YAML.

use super::output::{self, Output};
use super::{Error, Scope};
use crate::controller::plan::PlanRow;
use chrono::{DateTime, Utc};
use kube::Client;

/// The plan of every SecretRotation in `scope`, or of `name` only.
pub async fn rows(
    client: Client,
    scope: &Scope,
    name: Option<&str>,
) -> Result<Vec<PlanRow>, Error> {
    match crate::controller::plan::plan(client, scope.namespace(), name).await {
        Ok(rows) => Ok(rows),
        Err(kube::Error::Api(status)) if status.code == 404 && name.is_some() => {
            Err(Error::NotFound {
                kind: "SecretRotation",
                name: name.unwrap_or_default().into(),
                namespace: scope.namespace().unwrap_or_default().into(),
            })
        }
        Err(e) => Err(Error::listing(e)),
    }
}

/// `rows` printed as `output` asks; the table has a NAMESPACE column only for `-A`.
pub fn render(
    rows: &[PlanRow],
    output: Output,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Result<String, Error> {
    if let Some(done) = output::without_table(rows, output) {
        return done;
    }
    let all = *scope == Scope::All;
    let mut header = vec!["NAME", "PROVIDER", "PHASE", "NEXT ROTATION", "ACTION"];
    if all {
        header.insert(0, "NAMESPACE");
    }
    let lines = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.provider.clone(),
                format!("{:?}", r.phase),
                output::until(r.next_rotation_at, now),
                r.action.clone(),
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
    use crate::api::RotationPhase;

    #[test]
    fn json_is_a_list_of_camel_case_objects() {
        let rows = vec![PlanRow {
            namespace: "shop".into(),
            name: "db".into(),
            provider: "random".into(),
            phase: RotationPhase::Success,
            next_rotation_at: Some("2026-01-03T00:00:00Z".parse().unwrap()),
            action: "rotate at 2026-01-03T00:00:00+00:00: issue into slot 1".into(),
        }];
        let now = Utc::now();
        let text = render(&rows, Output::Json, &Scope::All, now).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{
                "namespace": "shop",
                "name": "db",
                "provider": "random",
                "phase": "Success",
                "nextRotationAt": "2026-01-03T00:00:00Z",
                "action": "rotate at 2026-01-03T00:00:00+00:00: issue into slot 1"
            }])
        );
        let yaml: serde_json::Value =
            serde_yaml::from_str(&render(&rows, Output::Yaml, &Scope::All, now).unwrap()).unwrap();
        assert_eq!(yaml, parsed);
    }
}
