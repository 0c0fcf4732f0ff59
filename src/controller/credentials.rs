//! The Secrets a provider reads (admin credentials, header values, CAs), resolved in
//! the SecretRotation's own namespace only, and the admin credential a single-phase
//! provider replaces (kept under `<key>.pending` until the rotation is recorded).
//!
//! Sharing is opt-in on the Secret's side: rotor reads a Secret only when its
//! annotation [`ALLOW_READ_ANNOTATION`] lists the SecretRotation (or is `*`), and
//! writes one only when [`ALLOW_WRITE_ANNOTATION`] does — so whoever may create a
//! SecretRotation cannot have rotor send or overwrite any other Secret of the namespace.

use super::validate::SpecError;
use crate::api::{SecretKeyRef, SecretRotation};
use crate::providers::{Secrets, pending_key};
use crate::rotation::{Credential, Stash, StashError};
use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use secrecy::{ExposeSecret, SecretString};

/// Annotation on a Secret a provider reads: the SecretRotations (comma-separated
/// names, or `*` for every one in the namespace) that may read it.
pub const ALLOW_READ_ANNOTATION: &str = "rotor.dev/allow-read";
/// Annotation on an admin Secret a single-phase provider replaces (Convox): the
/// SecretRotations (comma-separated names, or `*`) that may write it.
pub const ALLOW_WRITE_ANNOTATION: &str = "rotor.dev/allow-write";

/// Whether the annotation `annotation` of `secret` lists `resource` (or is `*`).
pub fn shared_with(secret: &Secret, annotation: &str, resource: &str) -> bool {
    secret.annotations().get(annotation).is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|n| n == "*" || n == resource)
    })
}

fn not_shared(secret: &str, annotation: &str, resource: &str, what: &str) -> String {
    format!(
        "SecretNotShared: Secret {secret:?} does not allow SecretRotation {resource:?} to {what} it; rotor {what}s a Secret only when it opts in: set the annotation {annotation}: \"{resource}\" on Secret {secret:?} (a comma-separated list of SecretRotation names, or \"*\" for every SecretRotation in the namespace)"
    )
}

/// Why the provider's Secrets could not be read.
pub enum Unresolved {
    Spec(SpecError),
    /// A Secret or key that may still appear (rechecked later).
    Missing(String),
    Kube(kube::Error),
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spec(e) => write!(f, "invalid spec: {e}"),
            Self::Missing(why) => f.write_str(why),
            Self::Kube(e) => write!(f, "Kubernetes API: {e}"),
        }
    }
}

/// The first step of every reconcile, of `rotor plan` and of revoke-on-delete:
/// resolve the provider's Secrets and validate the spec into a checked value.
pub async fn prepare(
    sr: &SecretRotation,
    secrets: &Api<Secret>,
    http: &crate::providers::HttpClient,
) -> Result<super::validate::ValidSpec, Unresolved> {
    let resolved = resolve(sr, secrets).await?;
    let uid = sr.uid().unwrap_or_default();
    let build = crate::providers::BuildContext {
        secrets: &resolved,
        http,
        uid: &uid,
    };
    let spec = super::validate::validate(&sr.spec, &build).map_err(Unresolved::Spec)?;
    // A provider that replaces its admin credential writes that Secret: it must have
    // opted in to that too, before any credential is issued.
    if let Some(admin) = spec.provider.replaces_admin_credential() {
        writable(secrets, admin, &sr.name_any())
            .await
            .map_err(|e| match e {
                WriteRefused::Kube(e) => Unresolved::Kube(e),
                WriteRefused::NotShared(why) => Unresolved::Missing(why),
            })?;
    }
    Ok(spec)
}

enum WriteRefused {
    NotShared(String),
    Kube(kube::Error),
}

impl std::fmt::Display for WriteRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotShared(why) => f.write_str(why),
            Self::Kube(e) => write!(f, "Kubernetes API: {e}"),
        }
    }
}

/// The resourceVersion of the admin Secret, when it allows `resource` to write it.
async fn writable(
    secrets: &Api<Secret>,
    admin: &SecretKeyRef,
    resource: &str,
) -> Result<Option<String>, WriteRefused> {
    let secret = secrets
        .get_opt(&admin.name)
        .await
        .map_err(WriteRefused::Kube)?
        .ok_or_else(|| {
            WriteRefused::NotShared(format!(
                "Secret {:?} (admin credentials) does not exist",
                admin.name
            ))
        })?;
    if !shared_with(&secret, ALLOW_WRITE_ANNOTATION, resource) {
        return Err(WriteRefused::NotShared(not_shared(
            &admin.name,
            ALLOW_WRITE_ANNOTATION,
            resource,
            "write",
        )));
    }
    Ok(secret.resource_version())
}

/// Reads every Secret key the provider names.
pub async fn resolve(sr: &SecretRotation, secrets: &Api<Secret>) -> Result<Secrets, Unresolved> {
    // Names go into API paths: never request one that is not a Secret name.
    super::validate::check_names(&sr.spec).map_err(Unresolved::Spec)?;
    let ns = sr.namespace().unwrap_or_default();
    let mut out = Secrets::default();
    let webhook_ref = sr
        .spec
        .notify
        .as_ref()
        .and_then(|n| n.webhook.as_ref())
        .map(|w| &w.signing_secret_ref);
    if let Some(other) = webhook_ref.and_then(|r| r.namespace.as_ref().filter(|n| **n != ns)) {
        return Err(Unresolved::Spec(SpecError::CrossNamespace {
            field: "spec.notify.webhook.signingSecretRef".into(),
            namespace: other.clone(),
        }));
    }
    for r in sr.spec.provider.secret_refs() {
        if let Some(other) = r.namespace.as_ref().filter(|n| **n != ns) {
            return Err(Unresolved::Spec(SpecError::CrossNamespace {
                field: format!("the reference to Secret {:?}", r.name),
                namespace: other.clone(),
            }));
        }
        if r.name == sr.spec.target.name {
            return Err(Unresolved::Spec(SpecError::RefIsTarget(format!(
                "Secret {:?}",
                r.name
            ))));
        }
        let secret = secrets.get_opt(&r.name).await.map_err(Unresolved::Kube)?;
        let Some(secret) = secret else {
            return Err(Unresolved::Missing(format!(
                "Secret {:?} (admin credentials) does not exist in namespace {ns:?}",
                r.name
            )));
        };
        let resource = sr.name_any();
        if !shared_with(&secret, ALLOW_READ_ANNOTATION, &resource) {
            return Err(Unresolved::Missing(not_shared(
                &r.name,
                ALLOW_READ_ANNOTATION,
                &resource,
                "read",
            )));
        }
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|b| SecretString::from(String::from_utf8_lossy(&b.0).into_owned()))
        };
        let value = text(&r.key).ok_or_else(|| {
            Unresolved::Missing(format!("Secret {:?} has no key {:?}", r.name, r.key))
        })?;
        out.0.insert((r.name.clone(), r.key.clone()), value);
        if let Some(pending) = text(&pending_key(&r.key)) {
            out.0.insert((r.name.clone(), pending_key(&r.key)), pending);
        }
    }
    Ok(out)
}

/// Keeps a single-phase provider's new admin credential under `<key>.pending` in its
/// Secret before the provider applies it.
pub struct PendingAdminKey<'a> {
    pub secrets: &'a Api<Secret>,
    pub admin: &'a SecretKeyRef,
    /// The SecretRotation's name, which the Secret's allow-write annotation must list.
    pub resource: &'a str,
}

#[async_trait]
impl Stash for PendingAdminKey<'_> {
    async fn keep(&self, credential: &Credential) -> Result<(), StashError> {
        let value = credential
            .outputs
            .get(credential.secret_output)
            .ok_or_else(|| StashError::AdminSecret("no secret output".into()))?;
        let mut data = serde_json::Map::new();
        data.insert(pending_key(&self.admin.key), encoded(value));
        patch_data(self.secrets, self.admin, self.resource, data)
            .await
            .map_err(|e| StashError::AdminSecret(e.to_string()))
    }
}

/// Makes the new credential the admin credential and drops the pending copy.
pub async fn promote_admin(
    secrets: &Api<Secret>,
    admin: &SecretKeyRef,
    resource: &str,
    value: &SecretString,
) -> Result<(), impl std::fmt::Display> {
    let mut data = serde_json::Map::new();
    data.insert(admin.key.clone(), encoded(value));
    data.insert(pending_key(&admin.key), serde_json::Value::Null);
    patch_data(secrets, admin, resource, data).await
}

fn encoded(value: &SecretString) -> serde_json::Value {
    serde_json::to_value(ByteString(value.expose_secret().as_bytes().to_vec())).unwrap_or_default()
}

/// Patches the admin Secret's data — only when it allows `resource` to write it, and
/// only the version that was checked (resourceVersion precondition).
async fn patch_data(
    secrets: &Api<Secret>,
    admin: &SecretKeyRef,
    resource: &str,
    data: serde_json::Map<String, serde_json::Value>,
) -> Result<(), WriteRefused> {
    let version = writable(secrets, admin, resource).await?;
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": version },
        "data": data,
    });
    secrets
        .patch(&admin.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(WriteRefused::Kube)
}
