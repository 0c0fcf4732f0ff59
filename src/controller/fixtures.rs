//! Test fixtures: resources, specs and Secrets as data, so the pure controller
//! functions are tested as tables without a server.

use super::validate::{ValidSpec, validate};
use crate::api::SecretRotation;
use crate::providers::{BuildContext, HttpClient, HttpSettings, Secrets};
use crate::rotation::{Slot, SlotPair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const UID: &str = "5f0c3a9e-1b2c-4d5e-8f90-0123456789ab";

/// A SecretRotation `shop` with `spec` (YAML), uid [`UID`] and `annotations`.
pub fn resource(spec: &str, annotations: &[(&str, &str)]) -> SecretRotation {
    let spec: serde_json::Value = serde_yaml::from_str(spec).unwrap();
    let mut sr = SecretRotation::new("shop", serde_json::from_value(spec).unwrap());
    sr.metadata.namespace = Some("team-a".into());
    sr.metadata.uid = Some(UID.into());
    sr.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    sr
}

/// A random provider filling `TOKEN`, keeping the previous value.
pub const RANDOM: &str = "provider: {random: {length: 16}}\nsecretsMapping: {value: TOKEN}\ntarget: {name: shop-token}\n";

/// `sr`'s spec, validated as a reconcile would (random needs no Secret and no network).
pub fn valid(sr: &SecretRotation) -> ValidSpec {
    let http = HttpClient::new(HttpSettings::default());
    let secrets = Secrets::default();
    let ctx = BuildContext {
        secrets: &secrets,
        http: &http,
        uid: UID,
    };
    validate(&sr.spec, &ctx).unwrap()
}

/// A Secret named `shop-token` whose controller (if any) has uid `controller`, of
/// `type_`, holding `data`.
pub fn secret(controller: Option<&str>, type_: Option<&str>, data: &[(&str, &str)]) -> Secret {
    let owner = |uid: &str, controller: bool| OwnerReference {
        api_version: "rotor.dev/v1alpha1".into(),
        kind: "SecretRotation".into(),
        name: "shop".into(),
        uid: uid.into(),
        controller: Some(controller),
        block_owner_deletion: None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some("shop-token".into()),
            namespace: Some("team-a".into()),
            owner_references: controller.map(|uid| vec![owner(uid, true)]),
            ..ObjectMeta::default()
        },
        type_: type_.map(str::to_string),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A Secret that this resource does not control but another does (or merely owns).
pub fn owned_by_someone_else(controller: bool) -> Secret {
    let mut s = secret(Some("another-uid"), None, &[("TOKEN", "x")]);
    if let Some(refs) = s.metadata.owner_references.as_mut() {
        refs[0].controller = Some(controller);
        if !controller {
            refs[0].uid = UID.into();
        }
    }
    s
}

/// Slots as status records them: `active` active, each credential's value given
/// (fingerprinted in the legacy form, which needs no key).
pub fn slots(active: u8, values: [Option<&str>; 2]) -> SlotPair {
    let slot = |i: usize| {
        values[i].map(|v| Slot {
            id: format!("rotor-5f0c3a9e-{}", i + 1),
            fingerprint: crate::rotation::legacy_fingerprint(v),
            issued_at: chrono::DateTime::UNIX_EPOCH,
            revoked_at: None,
        })
    };
    SlotPair {
        active: Some(active),
        slots: [slot(0), slot(1)],
    }
}
