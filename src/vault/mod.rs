//! The vault: every credential rotor issues is stored, encrypted, the moment it exists
//! — before it is tested, written to the target Secret or reported.
//!
//! - KEKs live in one Secret in the operator's namespace (`rotor-kek`, keys `v1`,
//!   `v2`, …; the highest is current), created on first start.
//! - Entries for a SecretRotation live in the Secret `rotor-vault-<name>` in its
//!   namespace, owned by it (garbage-collected with it), labelled `rotor.dev/vault`.
//!   Each entry is keyed by the credential's deterministic name, so a restarted
//!   operator finds what a dead one issued.
//! - The same Secret holds the audit trail (bounded).

pub mod envelope;

use crate::api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_LABEL, SecretRotation};
use crate::providers::Credential;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use envelope::{Keyring, OpenError, Sealed};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The KEK Secret's name, in the operator's namespace.
pub const KEK_SECRET: &str = "rotor-kek";
/// Label on every vault Secret.
pub const VAULT_LABEL: &str = "rotor.dev/vault";
/// Records kept in a resource's audit trail.
pub const AUDIT_LIMIT: usize = 200;
const AUDIT_KEY: &str = "audit";

/// What can go wrong with the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the KEK Secret {namespace}/{KEK_SECRET} has no key v<N>")]
    NoKek { namespace: String },
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("vault entry {0} is malformed")]
    Malformed(String),
}

/// The Secret name of a resource's vault.
pub fn vault_secret_name(resource: &str) -> String {
    format!("rotor-vault-{resource}")
}

fn entry_key(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    format!("e.{}", hex::encode(&digest[..10]))
}

/// Loads the keyring, creating the KEK Secret with `v1` when it does not exist.
pub async fn load_keyring(client: &Client, namespace: &str) -> Result<Keyring, VaultError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(KEK_SECRET).await? {
        Some(s) => s,
        None => {
            let first = Keyring::generate();
            let kek = Secret {
                metadata: ObjectMeta {
                    name: Some(KEK_SECRET.into()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_LABEL.into(),
                        MANAGED_BY_VALUE.into(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("v1".into(), ByteString(first.to_vec()))])),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &kek).await {
                Ok(s) => {
                    tracing::info!(
                        namespace,
                        "created the vault key Secret {KEK_SECRET} with v1"
                    );
                    s
                }
                // Another replica was first.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(KEK_SECRET).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut ring = Keyring::default();
    for (k, v) in secret.data.unwrap_or_default() {
        let (Some(version), true) = (
            k.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()),
            v.0.len() == 32,
        ) else {
            continue;
        };
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&v.0);
        ring.keys.insert(version, key);
    }
    if ring.keys.is_empty() {
        return Err(VaultError::NoKek {
            namespace: namespace.into(),
        });
    }
    Ok(ring)
}

/// One stored credential (the JSON under `e.<hash of name>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    pub id: String,
    pub slot: u8,
    pub fingerprint: String,
    pub sealed: Sealed,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// One audit record: never a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    /// schedule, annotation, cli, operator (resume, sweep, initial), keys-rotate.
    pub actor: String,
    /// issue, test, activate, revoke, failure, key-rotation, restore.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A resource's vault.
pub struct Vault {
    api: Api<Secret>,
    ring: Keyring,
    namespace: String,
    resource: String,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
}

impl Vault {
    pub fn new(client: &Client, sr: &SecretRotation, ring: Keyring) -> Self {
        let namespace = sr.namespace().unwrap_or_default();
        // An owner, not the controller: vault writes must not trigger reconciles.
        let owner = sr.controller_owner_ref(&()).map(|mut r| {
            r.controller = Some(false);
            r.block_owner_deletion = None;
            r
        });
        Self {
            api: Api::namespaced(client.clone(), &namespace),
            ring,
            namespace,
            resource: sr.name_any(),
            owner,
        }
    }

    fn aad(&self, slot: u8, name: &str) -> Vec<u8> {
        format!(
            "rotor/v1|{}|{}|{slot}|{name}",
            self.namespace, self.resource
        )
        .into_bytes()
    }

    async fn data(&self) -> Result<BTreeMap<String, String>, VaultError> {
        let secret = self.api.get_opt(&vault_secret_name(&self.resource)).await?;
        Ok(secret
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }

    async fn save(&self, data: BTreeMap<String, String>) -> Result<(), VaultError> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(vault_secret_name(&self.resource)),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
                    (OWNER_LABEL.into(), self.resource.clone()),
                    (VAULT_LABEL.into(), "true".into()),
                ])),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        self.api
            .patch(
                &vault_secret_name(&self.resource),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// Stores a credential under its deterministic name.
    pub async fn put(
        &self,
        name: &str,
        slot: u8,
        credential: &Credential,
    ) -> Result<(), VaultError> {
        let outputs: BTreeMap<&str, &str> = credential
            .outputs
            .iter()
            .map(|(k, v)| (*k, v.expose_secret()))
            .collect();
        let plaintext =
            Zeroizing::new(serde_json::to_vec(&outputs).expect("a map of strings serializes"));
        let sealed = envelope::seal(&self.ring, &plaintext, &self.aad(slot, name)).ok_or(
            VaultError::NoKek {
                namespace: String::new(),
            },
        )?;
        let entry = Entry {
            name: name.into(),
            id: credential.id.clone(),
            slot,
            fingerprint: credential.fingerprint(),
            sealed,
            created_at: Utc::now(),
            revoked_at: None,
            expires_at: None,
        };
        let mut data = self.data().await?;
        data.insert(
            entry_key(name),
            serde_json::to_string(&entry).expect("entries serialize"),
        );
        self.save(data).await
    }

    /// Every entry.
    pub async fn entries(&self) -> Result<Vec<Entry>, VaultError> {
        let data = self.data().await?;
        data.iter()
            .filter(|(k, _)| k.starts_with("e."))
            .map(|(k, v)| serde_json::from_str(v).map_err(|_| VaultError::Malformed(k.clone())))
            .collect()
    }

    /// The entry named `name`, and its credential when it can be opened.
    pub async fn get(
        &self,
        name: &str,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Option<(Entry, Result<Credential, OpenError>)>, VaultError> {
        let data = self.data().await?;
        let Some(raw) = data.get(&entry_key(name)) else {
            return Ok(None);
        };
        let entry: Entry =
            serde_json::from_str(raw).map_err(|_| VaultError::Malformed(name.into()))?;
        let opened = self.open(&entry, outputs, secret_output);
        Ok(Some((entry, opened)))
    }

    fn open(
        &self,
        entry: &Entry,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Credential, OpenError> {
        let plaintext = envelope::open(
            &self.ring,
            &entry.sealed,
            &self.aad(entry.slot, &entry.name),
        )?;
        let values: BTreeMap<String, String> =
            serde_json::from_slice(&plaintext).map_err(|_| OpenError::Malformed)?;
        let outputs = values
            .into_iter()
            .filter_map(|(k, v)| {
                outputs
                    .iter()
                    .find(|o| **o == k)
                    .map(|o| (*o, SecretString::from(v)))
            })
            .collect();
        Ok(Credential {
            id: entry.id.clone(),
            outputs,
            secret_output,
        })
    }

    /// Marks the entries of revoked credentials; they expire after `retention`.
    pub async fn mark_revoked(
        &self,
        ids: &[String],
        retention: chrono::Duration,
    ) -> Result<(), VaultError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut data = self.data().await?;
        let mut changed = false;
        for value in data.values_mut().filter(|v| v.starts_with('{')) {
            let Ok(mut entry) = serde_json::from_str::<Entry>(value) else {
                continue;
            };
            if ids.contains(&entry.id) && entry.revoked_at.is_none() {
                entry.revoked_at = Some(now);
                entry.expires_at = Some(now + retention);
                *value = serde_json::to_string(&entry).expect("entries serialize");
                changed = true;
            }
        }
        if changed {
            self.save(data).await
        } else {
            Ok(())
        }
    }

    /// Deletes expired entries; returns how many.
    pub async fn cleanup(&self, now: DateTime<Utc>) -> Result<usize, VaultError> {
        let mut data = self.data().await?;
        let before = data.len();
        data.retain(|k, v| {
            !k.starts_with("e.")
                || serde_json::from_str::<Entry>(v)
                    .ok()
                    .and_then(|e| e.expires_at)
                    .is_none_or(|t| t > now)
        });
        let removed = before - data.len();
        if removed > 0 {
            self.save(data).await?;
        }
        Ok(removed)
    }

    /// The unrevoked credential with provider id `id` and fingerprint `fingerprint`
    /// (a slot as status records it), opened. `Ok(None)` when the vault has no such
    /// entry; the error when it has one that cannot be opened.
    pub async fn find(
        &self,
        id: &str,
        fingerprint: &str,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Option<Result<Credential, OpenError>>, VaultError> {
        let entries = self.entries().await?;
        Ok(entries
            .iter()
            .find(|e| e.id == id && e.fingerprint == fingerprint && e.revoked_at.is_none())
            .map(|entry| {
                self.open(entry, outputs, secret_output).and_then(|c| {
                    // The AEAD vouches for the bytes; the fingerprint for the slot.
                    if c.fingerprint() == entry.fingerprint {
                        Ok(c)
                    } else {
                        Err(OpenError::Malformed)
                    }
                })
            }))
    }

    /// How many entries there are, and the first unrevoked one that cannot be opened
    /// (as status should say it) — from one read of the vault Secret.
    pub async fn summary(
        &self,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<(usize, Option<String>), VaultError> {
        let entries = self.entries().await?;
        let problem = entries
            .iter()
            .filter(|e| e.revoked_at.is_none())
            .find_map(|entry| {
                self.open(entry, outputs, secret_output)
                    .err()
                    .map(|e| format!("vault entry {} (slot {}): {e}", entry.name, entry.slot))
            });
        Ok((entries.len(), problem))
    }

    /// Appends to the audit trail (and logs the record).
    pub async fn audit(&self, record: AuditRecord) -> Result<(), VaultError> {
        tracing::info!(
            target: "rotor::audit",
            namespace = %self.namespace,
            name = %self.resource,
            actor = %record.actor,
            action = %record.action,
            credential = record.credential.as_deref().unwrap_or(""),
            old_fingerprint = record.old_fingerprint.as_deref().unwrap_or(""),
            new_fingerprint = record.new_fingerprint.as_deref().unwrap_or(""),
            detail = record.detail.as_deref().unwrap_or(""),
            "audit"
        );
        let mut data = self.data().await?;
        let mut trail: Vec<AuditRecord> = data
            .get(AUDIT_KEY)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        trail.push(record);
        if trail.len() > AUDIT_LIMIT {
            trail.drain(..trail.len() - AUDIT_LIMIT);
        }
        data.insert(
            AUDIT_KEY.into(),
            serde_json::to_string(&trail).expect("records serialize"),
        );
        self.save(data).await
    }
}

/// The audit trail of `resource` in `namespace`.
pub async fn read_audit(
    client: &Client,
    namespace: &str,
    resource: &str,
) -> Result<Vec<AuditRecord>, VaultError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(&vault_secret_name(resource)).await? else {
        return Ok(Vec::new());
    };
    let raw = secret
        .data
        .unwrap_or_default()
        .remove(AUDIT_KEY)
        .map(|b| b.0)
        .unwrap_or_default();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&raw).map_err(|_| VaultError::Malformed(AUDIT_KEY.into()))
}

/// `rotor keys rotate`: adds a KEK version and re-wraps every DEK in every vault Secret
/// (ciphertexts untouched). Returns the new version and how many entries were re-wrapped.
pub async fn rotate_keys(
    client: &Client,
    operator_namespace: &str,
) -> Result<(u32, usize), VaultError> {
    let mut ring = load_keyring(client, operator_namespace).await?;
    let next = ring.current().map_or(1, |(v, _)| v + 1);
    let key = Keyring::generate();
    let patch = serde_json::json!({ "data": { format!("v{next}"): B64.encode(&key[..]) } });
    Api::<Secret>::namespaced(client.clone(), operator_namespace)
        .patch(KEK_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ring.keys.insert(next, key);
    let vaults: Api<Secret> = Api::all(client.clone());
    let mut rewrapped = 0;
    for secret in vaults
        .list(&ListParams::default().labels(&format!("{VAULT_LABEL}=true")))
        .await?
    {
        let (Some(ns), Some(name)) = (secret.namespace(), secret.metadata.name.clone()) else {
            continue;
        };
        let resource = name.trim_start_matches("rotor-vault-").to_string();
        let mut patch_data = serde_json::Map::new();
        for (k, v) in secret.data.unwrap_or_default() {
            if !k.starts_with("e.") {
                continue;
            }
            let Ok(mut entry) = serde_json::from_slice::<Entry>(&v.0) else {
                continue;
            };
            let aad =
                format!("rotor/v1|{ns}|{resource}|{}|{}", entry.slot, entry.name).into_bytes();
            match envelope::rewrap(&ring, &entry.sealed, &aad) {
                Ok(sealed) => {
                    entry.sealed = sealed;
                    let json = serde_json::to_vec(&entry).expect("entries serialize");
                    patch_data.insert(k, serde_json::Value::String(B64.encode(json)));
                    rewrapped += 1;
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, vault = %name, entry = %entry.name, error = %e, "could not re-wrap")
                }
            }
        }
        if !patch_data.is_empty() {
            let patch = serde_json::json!({ "data": patch_data });
            Api::<Secret>::namespaced(client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let vault = Vault {
            api: Api::namespaced(client.clone(), &ns),
            ring: Keyring::default(),
            namespace: ns,
            resource,
            owner: None,
        };
        let record = AuditRecord {
            time: Utc::now(),
            actor: "keys-rotate".into(),
            action: "key-rotation".into(),
            credential: None,
            old_fingerprint: None,
            new_fingerprint: None,
            detail: Some(format!("DEKs re-wrapped with KEK v{next}")),
        };
        vault.audit(record).await?;
    }
    Ok((next, rewrapped))
}
