//! The target Secret: reading what it holds, and writing it by server-side apply.

use super::validate::{ValidSpec, previous_key};
use crate::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_LABEL, SecretRotation};
use crate::rotation;
use crate::rotation::Credential;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;

/// Annotation on the target Secret: the active slot.
pub const ACTIVE_SLOT_ANNOTATION: &str = "rotor.dev/active-slot";
/// Annotation on the target Secret: the active credential's fingerprint.
pub const FINGERPRINT_ANNOTATION: &str = "rotor.dev/fingerprint";

/// What exists under the target name.
pub enum Target {
    Missing,
    /// A Secret controlled by this SecretRotation.
    Ours(Box<Secret>),
    /// A Secret rotor must not touch.
    Foreign,
}

impl Target {
    pub fn classify(secret: Option<Secret>, owner: &SecretRotation) -> Self {
        let Some(secret) = secret else {
            return Self::Missing;
        };
        let uid = owner.uid();
        let controlled = secret
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == uid.as_ref());
        if controlled {
            Self::Ours(Box::new(secret))
        } else {
            Self::Foreign
        }
    }

    fn value(&self, key: &str) -> Option<SecretString> {
        let Self::Ours(secret) = self else {
            return None;
        };
        let bytes = secret.data.as_ref()?.get(key)?;
        String::from_utf8(bytes.0.clone())
            .ok()
            .map(SecretString::from)
    }

    /// Whether every mapped key is present.
    pub fn is_complete(&self, spec: &ValidSpec) -> bool {
        spec.mapping
            .iter()
            .all(|(_, key)| self.value(key).is_some())
    }

    /// The values consumers hold now, by Secret key: the mapped keys, or — when a
    /// rotation died after writing the Secret but before recording it — the
    /// `_PREVIOUS` keys, whichever matches the active slot's fingerprint.
    pub fn active_values(
        &self,
        spec: &ValidSpec,
        secret_output: &str,
        active_fingerprint: Option<&str>,
    ) -> BTreeMap<String, SecretString> {
        let read = |suffixed: bool| -> BTreeMap<String, SecretString> {
            spec.mapping
                .iter()
                .filter_map(|(_, key)| {
                    let from = if suffixed {
                        previous_key(key)
                    } else {
                        key.clone()
                    };
                    self.value(&from).map(|v| (key.clone(), v))
                })
                .collect()
        };
        let Some(expected) = active_fingerprint else {
            return read(false);
        };
        let Some((_, secret_key)) = spec.mapping.iter().find(|(o, _)| o == secret_output) else {
            return read(false);
        };
        for suffixed in [false, true] {
            let values = read(suffixed);
            if values
                .get(secret_key)
                .is_some_and(|v| rotation::fingerprint_matches(expected, v.expose_secret()))
            {
                return values;
            }
        }
        BTreeMap::new()
    }

    /// The `_PREVIOUS` values the Secret holds now, by mapped key.
    pub fn previous_values(&self, spec: &ValidSpec) -> BTreeMap<String, SecretString> {
        spec.mapping
            .iter()
            .filter_map(|(_, key)| self.value(&previous_key(key)).map(|v| (key.clone(), v)))
            .collect()
    }
}

/// The values to write, by Secret key, from a freshly issued credential.
pub fn values_of(credential: &Credential, spec: &ValidSpec) -> BTreeMap<String, SecretString> {
    spec.mapping
        .iter()
        .filter_map(|(output, key)| {
            credential
                .outputs
                .get(output.as_str())
                .map(|v| (key.clone(), v.clone()))
        })
        .collect()
}

/// The whole desired Secret: the active values under the mapped keys and, with
/// keepPrevious, the previous ones under `<KEY>_PREVIOUS`.
/// Whether `existing` already is what applying `desired` would make it: every label
/// and annotation rotor sets, the type, rotor's owner reference, and — for every key
/// rotor may write (each mapped key and its `_PREVIOUS`) — the same value, or absent
/// when rotor would not write it (a revoked previous credential stays out).
pub fn holds(existing: &Secret, desired: &Secret, spec: &ValidSpec) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let owned = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|want| {
            existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == want.uid && r.controller == want.controller)
        });
    let empty = BTreeMap::new();
    let have = existing.data.as_ref().unwrap_or(&empty);
    let want = desired.data.as_ref().unwrap_or(&empty);
    let data = spec
        .mapping
        .iter()
        .flat_map(|(_, key)| [key.clone(), previous_key(key)])
        .all(|key| have.get(&key) == want.get(&key));
    subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
        && existing.type_ == desired.type_
        && owned
        && data
        && nothing_more_of_rotors(existing, desired)
}

/// Whether every data key, label and annotation rotor's own apply last set on
/// `existing` (its managedFields entry) is still one rotor would set: a key dropped
/// from the mapping or a label dropped from the template needs an apply to go.
fn nothing_more_of_rotors(existing: &Secret, desired: &Secret) -> bool {
    let Some(fields) = existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| {
            m.manager.as_deref() == Some(crate::api::FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
        })
        .and_then(|m| m.fields_v1.as_ref())
    else {
        // Nothing known of rotor's fields: apply, which settles it.
        return false;
    };
    let owned = |pointer: &str| -> Vec<String> {
        fields
            .0
            .pointer(pointer)
            .and_then(serde_json::Value::as_object)
            .map(|o| {
                o.keys()
                    .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let data = desired.data.as_ref();
    let labels = desired.metadata.labels.as_ref();
    let annotations = desired.metadata.annotations.as_ref();
    owned("/f:data")
        .iter()
        .all(|k| data.is_some_and(|d| d.contains_key(k)))
        && owned("/f:metadata/f:labels")
            .iter()
            .all(|k| labels.is_some_and(|l| l.contains_key(k)))
        && owned("/f:metadata/f:annotations")
            .iter()
            .all(|k| annotations.is_some_and(|a| a.contains_key(k)))
}

pub fn desired(
    owner: &SecretRotation,
    spec: &ValidSpec,
    active: &BTreeMap<String, SecretString>,
    previous: &BTreeMap<String, SecretString>,
    active_slot: u8,
    fingerprint: &str,
) -> Secret {
    let template = owner.spec.target.template.clone().unwrap_or_default();
    let mut labels = template.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(OWNER_LABEL.into(), rotation::label_value(&owner.name_any()));
    let mut annotations = template.annotations;
    annotations.insert(ACTIVE_SLOT_ANNOTATION.into(), active_slot.to_string());
    annotations.insert(FINGERPRINT_ANNOTATION.into(), fingerprint.into());

    let mut data = BTreeMap::new();
    for (key, value) in active {
        data.insert(
            key.clone(),
            ByteString(value.expose_secret().as_bytes().to_vec()),
        );
    }
    if spec.keep_previous {
        for (key, value) in previous {
            data.insert(
                previous_key(key),
                ByteString(value.expose_secret().as_bytes().to_vec()),
            );
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(owner.spec.target.name.clone()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some(template.type_.unwrap_or_else(|| "Opaque".into())),
        data: Some(data),
        ..Secret::default()
    }
}

/// Overwrites the value bytes of a Secret built by [`desired`] once it is sent.
pub fn scrub(secret: &mut Secret) {
    use zeroize::Zeroize;
    if let Some(data) = secret.data.as_mut() {
        for v in data.values_mut() {
            v.0.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{self, RANDOM, UID};
    use crate::rotation::legacy_fingerprint;

    #[test]
    fn a_secret_holds_what_rotor_would_write_or_it_is_written() {
        let sr = fixtures::resource(
            &RANDOM.replace(
                "target: {name: shop-token}",
                "target: {name: shop-token, keepPrevious: true, template: {labels: {team: a}}}",
            ),
            &[],
        );
        let spec = fixtures::valid(&sr);
        let v = |s: &str| BTreeMap::from([("TOKEN".to_string(), SecretString::from(s))]);
        let want_both = desired(&sr, &spec, &v("new"), &v("old"), 1, "fp-new");
        let no_previous = desired(&sr, &spec, &v("new"), &BTreeMap::new(), 1, "fp-new");
        let desired = want_both;
        // As the API server returns it: with rotor's managedFields entry.
        let managed = |fields: serde_json::Value| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                    manager: Some(crate::api::FIELD_MANAGER.into()),
                    operation: Some("Apply".into()),
                    fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                        fields,
                    )),
                    ..Default::default()
                },
            ]
        };
        let rotors = serde_json::json!({
            "f:data": {"f:TOKEN": {}, "f:TOKEN_PREVIOUS": {}},
            "f:metadata": {"f:labels": {"f:team": {}}, "f:annotations": {}},
        });
        let mut as_written = desired.clone();
        as_written.metadata.managed_fields = Some(managed(rotors.clone()));
        let written = || as_written.clone();
        let mut dropped = written();
        let mut more = rotors.clone();
        more["f:data"]["f:OLD_KEY"] = serde_json::json!({});
        dropped.metadata.managed_fields = Some(managed(more));
        assert!(
            !holds(&dropped, &desired, &spec),
            "a key rotor wrote that the mapping dropped"
        );
        let mut unknown = written();
        unknown.metadata.managed_fields = None;
        assert!(!holds(&unknown, &desired, &spec), "rotor's fields unknown");
        assert!(holds(&written(), &desired, &spec), "as written");
        let mut extra = written();
        extra
            .data
            .as_mut()
            .unwrap()
            .insert("OTHER".into(), ByteString(b"x".to_vec()));
        extra
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("more".into(), "y".into());
        assert!(
            holds(&extra, &desired, &spec),
            "keys and labels of others are theirs"
        );
        type Change = fn(&mut Secret);
        let cases: [(&str, Change); 6] = [
            ("another value", |s| {
                s.data
                    .as_mut()
                    .unwrap()
                    .insert("TOKEN".into(), ByteString(b"x".to_vec()));
            }),
            ("a previous value rotor would drop", |s| {
                s.data
                    .as_mut()
                    .unwrap()
                    .insert("TOKEN_PREVIOUS".into(), ByteString(b"revoked".to_vec()));
            }),
            ("a key missing", |s| {
                s.data.as_mut().unwrap().remove("TOKEN");
            }),
            ("a template label changed", |s| {
                s.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("team".into(), "b".into());
            }),
            ("the fingerprint annotation", |s| {
                s.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .insert(FINGERPRINT_ANNOTATION.into(), "fp-old".into());
            }),
            ("no owner reference", |s| s.metadata.owner_references = None),
        ];
        for (case, change) in cases {
            let mut s = if case.starts_with("a previous") {
                let mut s = no_previous.clone();
                s.metadata.managed_fields = Some(managed(rotors.clone()));
                s
            } else {
                written()
            };
            change(&mut s);
            let want = if case.starts_with("a previous") {
                &no_previous
            } else {
                &desired
            };
            assert!(!holds(&s, want, &spec), "{case}");
        }
    }

    #[test]
    fn only_a_secret_this_resource_controls_is_ours() {
        let sr = fixtures::resource(RANDOM, &[]);
        let ours = || fixtures::secret(Some(UID), None, &[("TOKEN", "v")]);
        let cases: [(&str, Option<Secret>, &str); 5] = [
            ("no Secret", None, "missing"),
            ("controlled by this resource", Some(ours()), "ours"),
            (
                "controlled by another resource",
                Some(fixtures::owned_by_someone_else(true)),
                "foreign",
            ),
            // An owner reference without controller=true is no claim to overwrite it.
            (
                "owned, not controlled, by this resource",
                Some(fixtures::owned_by_someone_else(false)),
                "foreign",
            ),
            (
                "no owner (a human's Secret of the same name)",
                Some(fixtures::secret(None, None, &[("TOKEN", "v")])),
                "foreign",
            ),
        ];
        for (case, secret, want) in cases {
            let got = match Target::classify(secret, &sr) {
                Target::Missing => "missing",
                Target::Ours(_) => "ours",
                Target::Foreign => "foreign",
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn active_values_are_those_whose_fingerprint_matches() {
        let sr = fixtures::resource(RANDOM, &[]);
        let spec = fixtures::valid(&sr);
        let active = legacy_fingerprint("new-value");
        let target =
            |data: &[(&str, &str)]| Target::Ours(Box::new(fixtures::secret(Some(UID), None, data)));
        let cases: [(&str, Target, Option<&str>, Option<&str>); 6] = [
            (
                "the mapped key holds the active credential",
                target(&[("TOKEN", "new-value"), ("TOKEN_PREVIOUS", "old-value")]),
                Some(&active),
                Some("new-value"),
            ),
            // A rotation died after writing the Secret but before its flip: the
            // credential status calls active is in _PREVIOUS now.
            (
                "only _PREVIOUS holds it",
                target(&[("TOKEN", "newer-value"), ("TOKEN_PREVIOUS", "new-value")]),
                Some(&active),
                Some("new-value"),
            ),
            (
                "edited by someone else: nothing matches",
                target(&[("TOKEN", "edited"), ("TOKEN_PREVIOUS", "also-edited")]),
                Some(&active),
                None,
            ),
            (
                "no active credential yet: what the Secret holds",
                target(&[("TOKEN", "whatever")]),
                None,
                Some("whatever"),
            ),
            (
                "missing key",
                target(&[("OTHER", "new-value")]),
                Some(&active),
                None,
            ),
            ("no Secret", Target::Missing, Some(&active), None),
        ];
        for (case, target, fingerprint, want) in cases {
            let got = target.active_values(&spec, "value", fingerprint);
            let got = got.get("TOKEN").map(|v| v.expose_secret().to_string());
            assert_eq!(got.as_deref(), want, "{case}");
            if want.is_none() {
                assert!(
                    target.active_values(&spec, "value", fingerprint).is_empty(),
                    "{case}"
                );
            }
        }
    }
}
