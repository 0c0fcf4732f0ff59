//! The vault: every credential rotor issues is stored, encrypted, the moment it exists
//! — before it is tested, written to the target Secret or reported.
//!
//! - KEKs live in one Secret in the operator's namespace (`rotor-kek`, keys `v1`,
//!   `v2`, …; the highest is current), created on first start, together with the
//!   fingerprint key (`fingerprint`, never rotated).
//! - Entries for a SecretRotation live in the Secret `rotor-vault-<name>` in its
//!   namespace, owned by it (garbage-collected with it), labelled `rotor.dev/vault`.
//!   Each entry is keyed by the credential's deterministic name, so a restarted
//!   operator finds what a dead one issued. rotor never reads, writes or adopts a
//!   Secret of that name that it did not create for this very resource (owner uid).
//! - The same Secret holds the audit trail (bounded). Every write drops expired
//!   entries and keeps the entry count and size bounded.

pub mod envelope;
mod pause;

use crate::api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_LABEL, SecretRotation};
use crate::rotation::Credential;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use envelope::{Keyring, OpenError, Sealed};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The KEK Secret's name, in the operator's namespace.
pub const KEK_SECRET: &str = "rotor-kek";
/// The key of the KEK Secret that holds the fingerprint key (32 bytes, never rotated).
pub const FINGERPRINT_KEY: &str = "fingerprint";
/// Label on every vault Secret.
pub const VAULT_LABEL: &str = "rotor.dev/vault";
/// Label on every vault Secret: the namespace of the KEK Secret whose keys wrap it.
pub const KEK_NAMESPACE_LABEL: &str = "rotor.dev/kek-namespace";
/// Prefix of every vault Secret's name.
pub const VAULT_PREFIX: &str = "rotor-vault-";
/// Records kept in a resource's audit trail.
pub const AUDIT_LIMIT: usize = 200;
/// Entries a vault keeps at most: beyond it the oldest revoked entries go first, then
/// the oldest that are in no slot; the live slots' and the in-flight entry never.
pub const MAX_ENTRIES: usize = 32;
/// Bytes of entries a vault keeps at most (the same order of dropping); a Secret
/// cannot exceed 1 MiB.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
const AUDIT_KEY: &str = "audit";
/// Longest audit detail kept (errors can be long).
const DETAIL_LIMIT: usize = 512;
/// Read-modify-write attempts before a contended vault write gives up.
const WRITE_ATTEMPTS: usize = 5;

/// What can go wrong with the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the KEK Secret {namespace}/{KEK_SECRET} has no key v<N>")]
    NoKek { namespace: String },
    #[error(
        "the KEK Secret {namespace}/{KEK_SECRET} does not exist; `rotor keys rotate` does not create it (the operator does, on first start)"
    )]
    KekMissing { namespace: String },
    #[error(
        "the KEK Secret {namespace}/{KEK_SECRET} changed while rotor was writing it (another `rotor keys rotate`?); nothing was changed, run it again"
    )]
    KekChanged { namespace: String },
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error(
        "the KEK Secret {namespace}/{KEK_SECRET} already has version v{max}: no higher version can be added",
        max = u32::MAX
    )]
    KekVersionsExhausted { namespace: String },
    #[error("vault entry {0} is malformed")]
    Malformed(String),
    #[error(
        "Secret {namespace}/{name} exists and was not created by rotor for SecretRotation {resource:?} (no owner reference with its uid); rotor will not read, write or adopt it: delete or rename that Secret"
    )]
    Foreign {
        namespace: String,
        name: String,
        resource: String,
    },
    #[error(
        "the vault Secret {0} kept changing while rotor wrote it; retried {WRITE_ATTEMPTS} times"
    )]
    Contended(String),
}

/// The Secret name of a resource's vault.
pub fn vault_secret_name(resource: &str) -> String {
    format!("{VAULT_PREFIX}{resource}")
}

fn entry_key(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    format!("e.{}", hex::encode(&digest[..10]))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The keyring of a KEK Secret (and installs its fingerprint key for this process).
fn ring_of(secret: &Secret, namespace: &str) -> Result<Keyring, VaultError> {
    let mut ring = Keyring {
        origin: namespace.into(),
        ..Keyring::default()
    };
    for (k, v) in secret.data.iter().flatten() {
        if k == FINGERPRINT_KEY
            && let Ok(key) = <[u8; 32]>::try_from(v.0.as_slice())
        {
            crate::rotation::set_fingerprint_key(&key);
            continue;
        }
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

/// Loads the keyring, creating the KEK Secret with `v1` and the fingerprint key when
/// it does not exist (and adding the fingerprint key to a KEK Secret from before it
/// existed). Installs the fingerprint key for this process.
pub async fn load_keyring(client: &Client, namespace: &str) -> Result<Keyring, VaultError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..WRITE_ATTEMPTS {
        let secret = match api.get_opt(KEK_SECRET).await? {
            Some(s) => s,
            None => {
                let first = Keyring::generate();
                let fingerprint = Keyring::generate();
                let kek = Secret {
                    metadata: ObjectMeta {
                        name: Some(KEK_SECRET.into()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY_LABEL.into(),
                            MANAGED_BY_VALUE.into(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([
                        ("v1".into(), ByteString(first.to_vec())),
                        (FINGERPRINT_KEY.into(), ByteString(fingerprint.to_vec())),
                    ])),
                    ..Secret::default()
                };
                match api.create(&PostParams::default(), &kek).await {
                    Ok(s) => {
                        tracing::info!(
                            namespace,
                            "created the vault key Secret {KEK_SECRET} with v1 and the fingerprint key"
                        );
                        s
                    }
                    // Another replica was first.
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let has_fingerprint_key = secret
            .data
            .as_ref()
            .and_then(|d| d.get(FINGERPRINT_KEY))
            .is_some_and(|v| v.0.len() == 32);
        if has_fingerprint_key {
            return ring_of(&secret, namespace);
        }
        // A KEK Secret from before fingerprints were keyed: add the key, once, with a
        // precondition so that two replicas cannot each add a different one.
        let key = Keyring::generate();
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": secret.resource_version() },
            "data": { FINGERPRINT_KEY: B64.encode(&key[..]) },
        });
        match api
            .patch(KEK_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(s) => {
                tracing::info!(namespace, "added the fingerprint key to {KEK_SECRET}");
                return ring_of(&s, namespace);
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(VaultError::Contended(format!("{namespace}/{KEK_SECRET}")))
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

/// A credential as a slot in status records it: provider id and fingerprint. With
/// PostgreSQL the id is a user name shared by every credential of that slot, so the
/// pair — not the id — is the credential's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRef {
    pub id: String,
    pub fingerprint: String,
}

/// The entries that must survive every bound: the live slots and the in-flight one.
#[derive(Clone, Debug, Default)]
struct Live {
    known: bool,
    slots: Vec<SlotRef>,
    in_flight: Option<String>,
}

impl Live {
    fn holds(&self, entry: &Entry) -> bool {
        !self.known
            || self.in_flight.as_deref() == Some(entry.name.as_str())
            || self
                .slots
                .iter()
                .any(|s| s.id == entry.id && s.fingerprint == entry.fingerprint)
    }
}

/// A resource's vault.
pub struct Vault {
    api: Api<Secret>,
    ring: Keyring,
    namespace: String,
    resource: String,
    owner: Option<OwnerReference>,
    live: Live,
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
            live: Live::default(),
        }
    }

    /// Tells the vault which entries are live (the slots in status and the in-flight
    /// credential's name): only with it may the entry bound drop unrevoked entries.
    pub fn with_live(mut self, slots: Vec<SlotRef>, in_flight: Option<String>) -> Self {
        self.live = Live {
            known: true,
            slots,
            in_flight,
        };
        self
    }

    /// Also keeps the entry named `name` (the credential a rotation is issuing now).
    pub fn with_in_flight(mut self, name: &str) -> Self {
        self.live.in_flight = Some(name.into());
        self
    }

    fn name(&self) -> String {
        vault_secret_name(&self.resource)
    }

    fn aad(&self, slot: u8, name: &str) -> Vec<u8> {
        format!(
            "rotor/v1|{}|{}|{slot}|{name}",
            self.namespace, self.resource
        )
        .into_bytes()
    }

    /// Whether `secret` is this resource's vault: it carries an owner reference with
    /// this resource's uid — or it carries no owner reference at all (an older
    /// `rotor keys rotate` removed them) and rotor's three vault labels for this
    /// resource; the next write puts the owner reference back.
    fn is_ours(&self, secret: &Secret) -> bool {
        let Some(owner) = &self.owner else {
            return false;
        };
        let refs = secret.owner_references();
        if refs.iter().any(|r| r.uid == owner.uid) {
            return true;
        }
        let labels = secret.labels();
        refs.is_empty()
            && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
            && labels.get(VAULT_LABEL).map(String::as_str) == Some("true")
            && labels.get(OWNER_LABEL) == Some(&self.resource)
    }

    fn foreign(&self) -> VaultError {
        VaultError::Foreign {
            namespace: self.namespace.clone(),
            name: self.name(),
            resource: self.resource.clone(),
        }
    }

    /// The vault Secret, when it exists and is ours.
    async fn load(&self) -> Result<Option<Secret>, VaultError> {
        match self.api.get_opt(&self.name()).await? {
            Some(s) if !self.is_ours(&s) => Err(self.foreign()),
            other => Ok(other),
        }
    }

    fn decode(secret: Option<&Secret>) -> BTreeMap<String, String> {
        secret
            .and_then(|s| s.data.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    }

    async fn data(&self) -> Result<BTreeMap<String, String>, VaultError> {
        Ok(Self::decode(self.load().await?.as_ref()))
    }

    /// Writes `data` as the vault: created (never adopted) when it did not exist, else
    /// patched to exactly `data` with the resourceVersion that was read as a
    /// precondition — not an apply: an apply would keep keys another field manager
    /// wrote, and the bound could not drop them. (RBAC: create and patch only.)
    async fn save(
        &self,
        existing: Option<Secret>,
        data: BTreeMap<String, String>,
    ) -> Result<(), kube::Error> {
        let Some(owner) = self.owner.clone() else {
            return Err(kube::Error::Api(
                kube::core::Status::failure("the SecretRotation has no uid", "Invalid")
                    .with_code(422)
                    .boxed(),
            ));
        };
        let Some(existing) = existing else {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(self.name()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(self.labels()),
                    owner_references: Some(vec![owner]),
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
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            self.api.create(&params, &secret).await?;
            return Ok(());
        };
        // A merge patch that makes the data exactly `data` (keys rotor dropped are
        // deleted, whoever wrote them), keeps other owners and adds ours, with the
        // resourceVersion that was read as a precondition.
        let mut patch_data = serde_json::Map::new();
        for key in existing.data.iter().flatten().map(|(k, _)| k) {
            if !data.contains_key(key) {
                patch_data.insert(key.clone(), serde_json::Value::Null);
            }
        }
        for (k, v) in data {
            patch_data.insert(k, B64.encode(v.as_bytes()).into());
        }
        let mut refs = existing.owner_references().to_vec();
        if !refs.iter().any(|r| r.uid == owner.uid) {
            refs.push(owner);
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": existing.resource_version(),
                "labels": self.labels(),
                "ownerReferences": refs,
            },
            "data": patch_data,
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name(), &params, &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
            (OWNER_LABEL.into(), self.resource.clone()),
            (VAULT_LABEL.into(), "true".into()),
        ]);
        if !self.ring.origin.is_empty() {
            labels.insert(KEK_NAMESPACE_LABEL.into(), self.ring.origin.clone());
        }
        labels
    }

    /// Read, change, write — with expired entries dropped and the bounds kept on every
    /// write, retried when the Secret changed in between (or appeared: then it is
    /// checked for ownership again).
    async fn modify<T>(
        &self,
        mut change: impl FnMut(&mut BTreeMap<String, String>) -> T,
    ) -> Result<(T, usize), VaultError> {
        for _ in 0..WRITE_ATTEMPTS {
            let existing = self.load().await?;
            let has_owner = existing.as_ref().is_some_and(|s| {
                s.owner_references()
                    .iter()
                    .any(|r| Some(&r.uid) == self.owner.as_ref().map(|o| &o.uid))
            });
            let mut data = Self::decode(existing.as_ref());
            let before = data.clone();
            let out = change(&mut data);
            let removed = housekeep(&mut data, &self.live, Utc::now());
            if existing.is_some() && has_owner && data == before {
                return Ok((out, removed));
            }
            pause::point("vault_write").await;
            match self.save(existing, data).await {
                Ok(()) => return Ok((out, removed)),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Contended(self.name()))
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
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&outputs).map_err(|_| VaultError::Malformed(name.into()))?,
        );
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
        let json = serde_json::to_string(&entry).map_err(|_| VaultError::Malformed(name.into()))?;
        let key = entry_key(name);
        self.modify(|data| {
            data.insert(key.clone(), json.clone());
        })
        .await
        .map(|_| ())
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
        self.open_in(&self.ring, entry, outputs, secret_output)
    }

    fn open_in(
        &self,
        ring: &Keyring,
        entry: &Entry,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Credential, OpenError> {
        let plaintext = envelope::open(ring, &entry.sealed, &self.aad(entry.slot, &entry.name))?;
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

    /// Marks the entries of revoked credentials — each by its own identity (id and
    /// fingerprint), never every entry that shares a provider id; they expire after
    /// `retention`.
    pub async fn mark_revoked(
        &self,
        revoked: &[SlotRef],
        retention: chrono::Duration,
    ) -> Result<(), VaultError> {
        if revoked.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        self.modify(|data| {
            for value in data.values_mut().filter(|v| v.starts_with('{')) {
                let Ok(mut entry) = serde_json::from_str::<Entry>(value) else {
                    continue;
                };
                let this = revoked
                    .iter()
                    .any(|r| r.id == entry.id && r.fingerprint == entry.fingerprint);
                if this && entry.revoked_at.is_none() {
                    entry.revoked_at = Some(now);
                    entry.expires_at = Some(
                        now.checked_add_signed(retention)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC),
                    );
                    if let Ok(json) = serde_json::to_string(&entry) {
                        *value = json;
                    }
                }
            }
        })
        .await
        .map(|_| ())
    }

    /// Deletes expired entries (and keeps the bounds); returns how many entries went.
    pub async fn cleanup(&self) -> Result<usize, VaultError> {
        self.modify(|_| ()).await.map(|((), removed)| removed)
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
                    // The AEAD vouches for the bytes; the fingerprint (in whichever
                    // form it was recorded) for the slot.
                    let value = c.outputs.get(c.secret_output).map(|v| v.expose_secret());
                    if value.is_some_and(|v| {
                        crate::rotation::fingerprint_matches(&entry.fingerprint, v)
                    }) {
                        Ok(c)
                    } else {
                        Err(OpenError::Malformed)
                    }
                })
            }))
    }

    /// How many entries there are, and what status should say about the vault: the
    /// first unrevoked entry that cannot be opened, or a vault at its bounds — from
    /// one read of the vault Secret.
    pub async fn summary(
        &self,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<(usize, Option<String>), VaultError> {
        let data = self.data().await?;
        let entries: Vec<Entry> = data
            .iter()
            .filter(|(k, _)| k.starts_with("e."))
            .map(|(k, v)| serde_json::from_str(v).map_err(|_| VaultError::Malformed(k.clone())))
            .collect::<Result<_, _>>()?;
        // An entry wrapped by a KEK version newer than this ring knows (`keys rotate`
        // added it after the ring was loaded) is checked against the KEKs as they are
        // now, instead of being reported as needing a version that is gone.
        let newer = entries.iter().any(|e| {
            self.ring
                .current()
                .is_none_or(|(current, _)| e.sealed.kek_version > current)
        });
        let fresh = if newer {
            self.reload_ring().await
        } else {
            None
        };
        let ring = fresh.as_ref().unwrap_or(&self.ring);
        let unopenable = entries
            .iter()
            .filter(|e| e.revoked_at.is_none())
            .find_map(|entry| {
                self.open_in(ring, entry, outputs, secret_output)
                    .err()
                    .map(|e| format!("vault entry {} (slot {}): {e}", entry.name, entry.slot))
            });
        let bytes = entry_bytes(&data);
        let crowded = (entries.len() * 4 > MAX_ENTRIES * 3 || bytes * 4 > MAX_ENTRY_BYTES * 3)
            .then(|| {
                format!(
                    "the vault holds {} entries ({} KiB); rotor keeps at most {MAX_ENTRIES} entries and {} KiB, dropping the oldest revoked entries first and never the live slots or the in-flight credential — more unrevoked entries than that mean credentials rotor could not revoke (see the audit trail)",
                    entries.len(),
                    bytes / 1024,
                    MAX_ENTRY_BYTES / 1024
                )
            });
        Ok((entries.len(), unopenable.or(crowded)))
    }

    /// The KEKs as they are now, read again from where this ring came from; `None` when
    /// that is unknown or cannot be read (the ring in hand is used then).
    async fn reload_ring(&self) -> Option<Keyring> {
        if self.ring.origin.is_empty() {
            return None;
        }
        let api: Api<Secret> = Api::namespaced(self.api.clone().into_client(), &self.ring.origin);
        let kek = api.get_opt(KEK_SECRET).await.ok()??;
        ring_of(&kek, &self.ring.origin).ok()
    }

    /// Appends to the audit trail (and logs the record).
    pub async fn audit(&self, mut record: AuditRecord) -> Result<(), VaultError> {
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
        if let Some(detail) = record.detail.as_mut() {
            truncate(detail, DETAIL_LIMIT);
        }
        self.modify(|data| append_audit(data, record.clone()))
            .await
            .map(|_| ())
    }
}

fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

fn append_audit(data: &mut BTreeMap<String, String>, record: AuditRecord) {
    let mut trail: Vec<AuditRecord> = data
        .get(AUDIT_KEY)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    trail.push(record);
    if trail.len() > AUDIT_LIMIT {
        trail.drain(..trail.len() - AUDIT_LIMIT);
    }
    if let Ok(json) = serde_json::to_string(&trail) {
        data.insert(AUDIT_KEY.into(), json);
    }
}

fn entry_bytes(data: &BTreeMap<String, String>) -> usize {
    data.iter()
        .filter(|(k, _)| k.starts_with("e."))
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// Drops expired entries, then — while the vault is over [`MAX_ENTRIES`] or
/// [`MAX_ENTRY_BYTES`] — unreadable entries, the oldest revoked ones, and (when the
/// live entries are known) the oldest unrevoked ones that are in no slot and not in
/// flight. Returns how many entries went.
fn housekeep(data: &mut BTreeMap<String, String>, live: &Live, now: DateTime<Utc>) -> usize {
    let before = data.len();
    data.retain(|k, v| {
        !k.starts_with("e.")
            || serde_json::from_str::<Entry>(v)
                .ok()
                .and_then(|e| e.expires_at)
                .is_none_or(|t| t > now)
    });
    let over = |data: &BTreeMap<String, String>| {
        data.keys().filter(|k| k.starts_with("e.")).count() > MAX_ENTRIES
            || entry_bytes(data) > MAX_ENTRY_BYTES
    };
    if over(data) {
        // (rank, created) per droppable entry: 0 unreadable, 1 revoked, 2 unrevoked
        // and not live.
        let mut droppable: Vec<(u8, Option<DateTime<Utc>>, String)> = data
            .iter()
            .filter(|(k, _)| k.starts_with("e."))
            .filter_map(|(k, v)| match serde_json::from_str::<Entry>(v) {
                Err(_) => Some((0, None, k.clone())),
                Ok(e) if e.revoked_at.is_some() => Some((1, Some(e.created_at), k.clone())),
                Ok(e) if !live.holds(&e) => Some((2, Some(e.created_at), k.clone())),
                Ok(_) => None,
            })
            .collect();
        droppable.sort();
        for (_, _, key) in droppable {
            if !over(data) {
                break;
            }
            data.remove(&key);
        }
    }
    before - data.len()
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

/// What `rotor keys rotate` did.
#[derive(Debug, Default)]
pub struct KeyRotation {
    /// The KEK version added.
    pub version: u32,
    /// Data keys re-wrapped with it.
    pub rewrapped: usize,
    /// Every entry or vault that could not be re-wrapped, and why (never a value).
    pub failures: Vec<String>,
}

/// `rotor keys rotate`: adds a KEK version (with the KEK Secret's resourceVersion as a
/// precondition, so two concurrent runs cannot both add `v<N+1>`) and re-wraps every
/// DEK in every vault Secret (ciphertexts untouched), keeping each vault's owner
/// reference. Never creates the KEK Secret. Failures are returned, not logged away.
pub async fn rotate_keys(
    client: &Client,
    operator_namespace: &str,
) -> Result<KeyRotation, VaultError> {
    let kek_api: Api<Secret> = Api::namespaced(client.clone(), operator_namespace);
    let Some(kek) = kek_api.get_opt(KEK_SECRET).await? else {
        return Err(VaultError::KekMissing {
            namespace: operator_namespace.into(),
        });
    };
    let mut ring = ring_of(&kek, operator_namespace)?;
    // A version at u32::MAX has no successor: overwriting it would lose every entry it wraps.
    let next = match ring.current() {
        None => 1,
        Some((v, _)) => v.checked_add(1).ok_or(VaultError::KekVersionsExhausted {
            namespace: operator_namespace.into(),
        })?,
    };
    let key = Keyring::generate();
    pause::point("kek_write").await;
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": kek.resource_version() },
        "data": { format!("v{next}"): B64.encode(&key[..]) },
    });
    match kek_api
        .patch(KEK_SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {
            return Err(VaultError::KekChanged {
                namespace: operator_namespace.into(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    ring.keys.insert(next, key);
    let mut report = KeyRotation {
        version: next,
        ..KeyRotation::default()
    };
    // The vaults wrapped by this namespace's KEKs, and those from before the label
    // (one operator per cluster then).
    let vaults: Api<Secret> = Api::all(client.clone());
    let mut listed = Vec::new();
    for selector in [
        format!("{VAULT_LABEL}=true,{KEK_NAMESPACE_LABEL}={operator_namespace}"),
        format!("{VAULT_LABEL}=true,!{KEK_NAMESPACE_LABEL}"),
    ] {
        listed.extend(
            vaults
                .list(&ListParams::default().labels(&selector))
                .await?,
        );
    }
    for secret in listed {
        let (Some(ns), Some(name)) = (secret.namespace(), secret.metadata.name.clone()) else {
            continue;
        };
        let Some(resource) = name.strip_prefix(VAULT_PREFIX).map(str::to_string) else {
            report.failures.push(format!(
                "{ns}/{name}: labelled {VAULT_LABEL} but not named {VAULT_PREFIX}<name>; left alone"
            ));
            continue;
        };
        // The owner: the SecretRotation of that name, when it still exists (this also
        // puts back an owner reference an older `keys rotate` removed).
        let owner = match Api::<SecretRotation>::namespaced(client.clone(), &ns)
            .get_opt(&resource)
            .await
        {
            Ok(Some(sr)) => sr.controller_owner_ref(&()).map(|mut r| {
                r.controller = Some(false);
                r.block_owner_deletion = None;
                r
            }),
            Ok(None) => secret
                .owner_references()
                .iter()
                .find(|r| r.kind == "SecretRotation" && r.name == resource)
                .cloned(),
            Err(e) => {
                report.failures.push(format!(
                    "{ns}/{name}: reading SecretRotation {resource:?} failed: {e}"
                ));
                continue;
            }
        };
        if owner.is_none() {
            report.failures.push(format!(
                "{ns}/{name}: no SecretRotation {resource:?} owns it; left alone"
            ));
            continue;
        }
        let vault = Vault {
            api: Api::namespaced(client.clone(), &ns),
            ring: ring.clone(),
            namespace: ns.clone(),
            resource: resource.clone(),
            owner,
            live: Live::default(),
        };
        let result = vault
            .modify(|data| {
                let mut rewrapped = 0;
                let mut failures = Vec::new();
                for (k, v) in data.iter_mut().filter(|(k, _)| k.starts_with("e.")) {
                    let Ok(mut entry) = serde_json::from_str::<Entry>(v) else {
                        failures.push(format!("{ns}/{name} entry {k}: malformed"));
                        continue;
                    };
                    // Expired: this very write drops it (housekeeping), so it is
                    // neither re-wrapped nor counted.
                    if entry.expires_at.is_some_and(|t| t <= Utc::now()) {
                        continue;
                    }
                    match envelope::rewrap(
                        &vault.ring,
                        &entry.sealed,
                        &vault.aad(entry.slot, &entry.name),
                    ) {
                        Ok(sealed) => {
                            entry.sealed = sealed;
                            if let Ok(json) = serde_json::to_string(&entry) {
                                *v = json;
                                rewrapped += 1;
                            }
                        }
                        Err(e) => failures.push(format!("{ns}/{name} entry {}: {e}", entry.name)),
                    }
                }
                append_audit(
                    data,
                    AuditRecord {
                        time: Utc::now(),
                        actor: "keys-rotate".into(),
                        action: "key-rotation".into(),
                        credential: None,
                        old_fingerprint: None,
                        new_fingerprint: None,
                        detail: Some(format!(
                            "DEKs re-wrapped with KEK v{next}: {rewrapped} re-wrapped, {} failed",
                            failures.len()
                        )),
                    },
                );
                (rewrapped, failures)
            })
            .await;
        match result {
            Ok(((rewrapped, failures), _)) => {
                report.rewrapped += rewrapped;
                report.failures.extend(failures);
            }
            Err(e) => report.failures.push(format!("{ns}/{name}: {e}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, id: &str, fp: &str, revoked: bool, age: i64, size: usize) -> Entry {
        let t = Utc::now() - chrono::Duration::seconds(age);
        Entry {
            name: name.into(),
            id: id.into(),
            slot: 0,
            fingerprint: fp.into(),
            sealed: Sealed {
                kek_version: 1,
                wrapped_dek: String::new(),
                ciphertext: "x".repeat(size),
                kek_id: None,
            },
            created_at: t,
            revoked_at: revoked.then_some(t),
            expires_at: None,
        }
    }

    fn put(data: &mut BTreeMap<String, String>, e: &Entry) {
        data.insert(entry_key(&e.name), serde_json::to_string(e).unwrap());
    }

    fn names(data: &BTreeMap<String, String>) -> Vec<String> {
        let mut n: Vec<String> = data
            .values()
            .filter_map(|v| serde_json::from_str::<Entry>(v).ok())
            .map(|e| e.name)
            .collect();
        n.sort();
        n
    }

    #[test]
    fn the_bound_drops_revoked_then_stray_entries_and_never_live_ones() {
        let live = Live {
            known: true,
            slots: vec![
                SlotRef {
                    id: "app_a".into(),
                    fingerprint: "fa".into(),
                },
                SlotRef {
                    id: "app_b".into(),
                    fingerprint: "fb".into(),
                },
            ],
            in_flight: Some("flight".into()),
        };
        let mut data = BTreeMap::new();
        // The live ones are the oldest of all.
        put(
            &mut data,
            &entry("live-a", "app_a", "fa", false, 10_000, 10),
        );
        put(&mut data, &entry("live-b", "app_b", "fb", false, 9_999, 10));
        put(
            &mut data,
            &entry("flight", "app_a", "fnew", false, 9_998, 10),
        );
        for i in 0..MAX_ENTRIES {
            put(
                &mut data,
                &entry(
                    &format!("stray-{i:02}"),
                    "app_a",
                    &format!("s{i}"),
                    false,
                    1_000 - i as i64,
                    10,
                ),
            );
            put(
                &mut data,
                &entry(
                    &format!("revoked-{i:02}"),
                    "app_a",
                    &format!("r{i}"),
                    true,
                    5_000 - i as i64,
                    10,
                ),
            );
        }
        let removed = housekeep(&mut data, &live, Utc::now());
        let left = names(&data);
        assert_eq!(left.len(), MAX_ENTRIES);
        assert_eq!(removed, 2 * MAX_ENTRIES + 3 - MAX_ENTRIES);
        for keep in ["live-a", "live-b", "flight"] {
            assert!(left.contains(&keep.to_string()), "{keep}: {left:?}");
        }
        assert!(left.iter().all(|n| !n.starts_with("revoked")), "{left:?}");
        // The newest strays survive.
        assert!(left.contains(&format!("stray-{:02}", MAX_ENTRIES - 1)));

        // Without knowing what is live, unrevoked entries are never dropped.
        let mut data = BTreeMap::new();
        for i in 0..MAX_ENTRIES + 5 {
            put(
                &mut data,
                &entry(&format!("u{i}"), "x", &format!("f{i}"), false, 0, 10),
            );
        }
        assert_eq!(housekeep(&mut data, &Live::default(), Utc::now()), 0);

        // Size: a few huge revoked entries go, small live ones stay.
        let mut data = BTreeMap::new();
        put(&mut data, &entry("live-a", "app_a", "fa", false, 0, 10));
        for i in 0..4 {
            put(
                &mut data,
                &entry(
                    &format!("big-{i}"),
                    "app_a",
                    &format!("b{i}"),
                    true,
                    100 - i,
                    MAX_ENTRY_BYTES / 3,
                ),
            );
        }
        assert!(
            entry_bytes(&data) > MAX_ENTRY_BYTES,
            "the case is over the bound"
        );
        let removed = housekeep(&mut data, &live, Utc::now());
        assert!(entry_bytes(&data) <= MAX_ENTRY_BYTES);
        // The two oldest big ones go (one is not enough: each entry is a third of the
        // bound plus its JSON), the live one stays.
        assert_eq!(removed, 2);
        assert_eq!(names(&data), vec!["big-2", "big-3", "live-a"]);
    }

    #[test]
    fn expired_entries_go_on_every_write() {
        let mut data = BTreeMap::new();
        let mut e = entry("old", "app_a", "f", true, 100, 10);
        e.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        put(&mut data, &e);
        put(&mut data, &entry("new", "app_a", "g", false, 0, 10));
        assert_eq!(housekeep(&mut data, &Live::default(), Utc::now()), 1);
        assert_eq!(names(&data), vec!["new".to_string()]);
    }
}
