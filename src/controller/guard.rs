//! A SecretRotation as the watch sees it: read whatever the API server holds, even an
//! object whose spec no longer parses (stored before a schema change, or admitted by
//! an older CRD). Deserializing a [`Guarded`] never fails on the object's content, so
//! one unreadable object cannot fail a watch and blind rotor to every other resource
//! in scope; it is reconciled into a `Failed`/`InvalidSpec` status instead.

use super::status::{self, Reason};
use super::{Context, Error};
use crate::api::{SecretRotation, SecretRotationStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::sync::Arc;

/// A watched SecretRotation: its metadata always, its typed form when it parses.
#[derive(Clone, Debug)]
pub struct Guarded {
    pub metadata: ObjectMeta,
    pub object: Result<Arc<SecretRotation>, Unreadable>,
}

/// An object whose spec cannot be read.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// Where and why deserializing failed (a field path and serde's message).
    pub error: String,
    /// Its status, when that part still parses (rotor wrote it).
    pub status: Option<SecretRotationStatus>,
}

impl<'de> Deserialize<'de> for Guarded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only malformed JSON fails here; the API server never sends that.
        let value = serde_json::Value::deserialize(d)?;
        let metadata = value
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let object = match serde_path_to_error::deserialize::<_, SecretRotation>(&value) {
            Ok(sr) => Ok(Arc::new(sr)),
            Err(e) => Err(Unreadable {
                error: format!("{}: {}", e.path(), e.inner()),
                status: value
                    .get("status")
                    .and_then(|s| SecretRotationStatus::deserialize(s).ok()),
            }),
        };
        Ok(Self { metadata, object })
    }
}

impl Resource for Guarded {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        SecretRotation::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        SecretRotation::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        SecretRotation::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        SecretRotation::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The message a user sees on an object rotor cannot read.
pub fn unreadable_message(error: &str) -> String {
    // Bounded: a serde message quotes the offending value, which the schema bounds,
    // but an object admitted by an older CRD may hold anything.
    let error: String = error.chars().take(512).collect();
    format!(
        "invalid spec: rotor cannot read this SecretRotation ({error}); fix the field (kubectl edit) and rotor picks it up"
    )
}

/// Marks an object rotor cannot read (or whose names it refuses before any API call)
/// Failed/InvalidSpec with a merge patch of the status alone: it needs no typed spec,
/// and keeps what the status said about issued credentials. A Warning Event says the
/// same. An API server without CRD validation ratcheting (before Kubernetes 1.30)
/// refuses any write to an object whose stored spec fails the current schema; then
/// the Event (and the log) is all rotor can say.
pub async fn stop_invalid(
    ctx: &Context,
    obj: &Guarded,
    old: Option<&SecretRotationStatus>,
    message: String,
) -> Result<Action, Error> {
    let metadata = &obj.metadata;
    let ns = metadata.namespace.as_deref().ok_or(Error::NoNamespace)?;
    let name = metadata.name.as_deref().unwrap_or_default();
    let old = old.cloned().unwrap_or_default();
    if old.last_rotation_message == message && old.observed_generation == metadata.generation {
        return Ok(Action::await_change());
    }
    let mut status = old;
    status.next_rotation_at = None;
    status::set_phase(
        &mut status,
        Reason::InvalidSpec,
        message.clone(),
        metadata.generation,
        chrono::Utc::now(),
    );
    let api: Api<Guarded> = Api::namespaced(ctx.client.clone(), ns);
    let written = api
        .patch_status(
            name,
            &PatchParams {
                field_manager: Some(crate::api::FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await;
    let note = match written {
        Ok(_) => message,
        Err(kube::Error::Api(e)) if e.code == 422 => format!(
            "{message} (the status cannot be written: the stored object fails the CRD's current schema)"
        ),
        Err(e) => return Err(e.into()),
    };
    tracing::warn!(
        namespace = ns,
        name,
        reason = Reason::InvalidSpec.as_str(),
        message = %note,
        "SecretRotation stopped"
    );
    let event = Event {
        type_: EventType::Warning,
        reason: Reason::InvalidSpec.as_str().into(),
        note: Some(note),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder().publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(interval: &str) -> serde_json::Value {
        serde_json::from_str(&format!(
            r#"{{"apiVersion":"rotor.dev/v1alpha1","kind":"SecretRotation",
                "metadata":{{"name":"x","namespace":"ns","uid":"u"}},
                "spec":{{"provider":{{"random":{{}}}},"secretsMapping":{{"value":"V"}},
                         "target":{{"name":"t"}},"schedule":{{"rotationInterval":{interval}}}}},
                "status":{{"rotationCount":3}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn an_unreadable_object_keeps_its_metadata_status_and_the_reason() {
        let g: Guarded = serde_json::from_value(object("4294967296")).unwrap();
        assert_eq!(g.metadata.name.as_deref(), Some("x"));
        let e = g.object.unwrap_err();
        assert!(
            e.error
                .starts_with("spec.schedule.rotationInterval: 4294967296 is out of range"),
            "{}",
            e.error
        );
        assert_eq!(e.status.unwrap().rotation_count, 3);
    }

    #[test]
    fn an_unknown_value_of_a_closed_set_names_the_field_and_the_allowed_values() {
        let cases = [
            (
                r#"{"random":{"charset":"klingon"}}"#,
                "spec.provider.random.charset: unknown variant `klingon`",
                "expected one of `alphanumeric`, `alphabetic`, `numeric`, `hex`, `base64url`, `printable`",
            ),
            (
                r#"{"supabase":{"projectRef":"abcdefghijklmnopqrst","keyType":"anon","credentialsRef":{"name":"s","key":"k"}}}"#,
                "spec.provider.supabase.keyType: unknown variant `anon`",
                "expected `secret` or `publishable`",
            ),
            (
                r#"{"postgres":{"host":"db","database":"app","sslMode":"prefer","credentialsRef":{"name":"s","key":"k"},"username":"app"}}"#,
                "spec.provider.postgres.sslMode: unknown variant `prefer`",
                "expected one of `disable`, `require`, `verify-full`",
            ),
            (
                r#"{"http":{"issue":{"url":"https://x.test/keys","method":"get"},"valuePath":"$.key"}}"#,
                "spec.provider.http.issue.method: unknown variant `get`",
                "expected one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE`",
            ),
        ];
        for (provider, field, allowed) in cases {
            let mut value = object("\"12h\"");
            value["spec"]["provider"] = serde_json::from_str(provider).unwrap();
            let g: Guarded = serde_json::from_value(value).unwrap();
            let e = g.object.unwrap_err();
            assert!(e.error.starts_with(field), "{}", e.error);
            assert!(e.error.ends_with(allowed), "{}", e.error);
        }
    }

    #[test]
    fn a_readable_object_parses_as_usual() {
        let g: Guarded = serde_json::from_value(object("\"12h\"")).unwrap();
        assert_eq!(g.object.unwrap().spec.target.name, "t");
    }
}
