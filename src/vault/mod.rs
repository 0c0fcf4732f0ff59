//! The vault — called the **escrow** wherever a user sees it (Secret names, labels,
//! status, messages): every credential rotor issues is stored, encrypted, the moment
//! it exists — before it is tested, written to the target Secret or reported.
//!
//! - KEKs live in one Secret in the operator's namespace (`rotor-kek`, keys `v1`,
//!   `v2`, …; the highest is current), created on first start, together with the
//!   fingerprint key (`fingerprint`, never rotated).
//! - Entries for a SecretRotation live in the Secret `rotor-escrow-<name>` (for a name
//!   too long for that, its start and a hash of the name) in its namespace, owned by it
//!   (garbage-collected with it), labelled `rotor.dev/escrow`.
//!   Each entry is keyed by the credential's deterministic name, so a restarted
//!   operator finds what a dead one issued. rotor never reads, writes or adopts a
//!   Secret of that name that it did not create for this very resource (owner uid).
//! - Before the escrow the Secret was `rotor-vault-<name>`, labelled `rotor.dev/vault`.
//!   Such a Secret of this resource's own is moved when the store is next opened: a
//!   complete copy is created under the new name (marked with where it came from),
//!   then the old one is deleted with its uid and resourceVersion as preconditions,
//!   then the mark is removed. A crash in between leaves the marked copy, which wins;
//!   the next open deletes the old one. A foreign Secret of the old name is never
//!   read, copied or deleted.
//! - The same Secret holds the audit trail (bounded). Every write drops expired
//!   entries and keeps the entry count and size bounded.

//!
//! The module's files: `format` owns the storage format (the vault Secret's name, entry
//! keys and encoding, the associated data), `keys` the KEKs and `rotor keys rotate`,
//! `bounds` what a vault keeps, `envelope` the encryption; this file is the vault as
//! the controller uses it.

mod bounds;
pub mod envelope;
pub mod format;
mod keys;
mod pause;

pub use bounds::{AUDIT_LIMIT, MAX_ENTRIES, MAX_ENTRY_BYTES};
pub use format::{AuditRecord, Entry, LEGACY_PREFIX, VAULT_PREFIX};
pub use keys::{FINGERPRINT_KEY, KEK_SECRET, KeyCache, KeyRotation, load_keyring, rotate_keys};

use crate::api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_LABEL, SecretRotation};
use crate::rotation::Credential;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bounds::{Live, append_audit, entry_bytes, fold_audit, housekeep};
use chrono::{DateTime, Utc};
use envelope::{Keyring, OpenError};
use format::{AUDIT_KEY, Layout, entry_key, raw_entries, raw_entries_mut};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;

/// Label on every vault Secret (`rotor.dev/escrow=true`).
pub const VAULT_LABEL: &str = "rotor.dev/escrow";
/// The label vault Secrets carried before the escrow (`rotor.dev/vault=true`).
pub const LEGACY_LABEL: &str = "rotor.dev/vault";
/// Annotation on an escrow Secret copied from its `rotor-vault-` predecessor while that
/// one may still exist: `<uid>/<resourceVersion>` of the copied Secret. Removed once
/// the old Secret is gone.
pub const MOVED_FROM_ANNOTATION: &str = "rotor.dev/moved-from";
/// Label on every vault Secret: the namespace of the KEK Secret whose keys wrap it.
pub const KEK_NAMESPACE_LABEL: &str = "rotor.dev/kek-namespace";
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
    #[error("escrow entry {0} is malformed")]
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
        "the escrow Secret {0} kept changing while rotor wrote it; retried {WRITE_ATTEMPTS} times"
    )]
    Contended(String),
    #[error("SecretRotation {namespace}/{resource} does not exist")]
    NoResource { namespace: String, resource: String },
}

/// The Secret name of a resource's vault: `rotor-escrow-<name>`, bounded to 253
/// characters with a hash when the name is long.
pub fn vault_secret_name(resource: &str) -> String {
    format::secret_name(resource)
}

/// The name a resource's vault Secret had before the escrow: `rotor-vault-<name>`.
pub fn legacy_secret_name(resource: &str) -> String {
    format::legacy_secret_name(resource)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A credential as a slot in status records it: provider id and fingerprint. With
/// PostgreSQL the id is a user name shared by every credential of that slot, so the
/// pair — not the id — is the credential's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRef {
    pub id: String,
    pub fingerprint: String,
}

/// A resource's vault.
pub struct Vault {
    api: Api<Secret>,
    ring: Keyring,
    layout: Layout,
    owner: Option<OwnerReference>,
    live: Live,
    /// The vault Secret as this instance last read or wrote it: later reads and writes
    /// of the same reconcile start from it instead of reading it again (a write still
    /// carries its resourceVersion: a 409 reads it afresh).
    seen: std::sync::Mutex<Option<Secret>>,
    /// Audit records held for the next write (`None`: each is written at once).
    held: std::sync::Mutex<Option<Vec<AuditRecord>>>,
    /// Revoked marks (and their retention) for the next write.
    marks: std::sync::Mutex<(Vec<SlotRef>, chrono::Duration)>,
    /// Never write blind: every write reads the vault (and folds the audit batches).
    full_write: bool,
    /// Where this vault's writes are noted (so their watch events wake nothing).
    writes: Option<std::sync::Arc<crate::kube_client::OwnWrites>>,
    /// The resource has never stored anything: the first write creates the vault
    /// Secret without looking for it first (a create never adopts: one that exists
    /// answers 409, and is then read as usual).
    fresh: bool,
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
            layout: Layout::new(namespace, sr.name_any()),
            owner,
            live: Live::default(),
            seen: Default::default(),
            held: Default::default(),
            marks: Default::default(),
            full_write: false,
            writes: None,
            fresh: false,
        }
    }

    /// The resource has never stored a credential (its first rotation).
    pub fn expect_new(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// Notes every write in `writes`.
    pub fn with_writes(mut self, writes: std::sync::Arc<crate::kube_client::OwnWrites>) -> Self {
        self.writes = Some(writes);
        self
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
        self.layout.secret_name()
    }

    /// Whether `secret` is this resource's vault: it carries an owner reference with
    /// this resource's uid — or it carries no owner reference at all (an older
    /// `rotor keys rotate` removed them) and rotor's three vault labels for this
    /// resource; the next write puts the owner reference back.
    fn is_ours(&self, secret: &Secret) -> bool {
        self.is_ours_as(secret, VAULT_LABEL)
    }

    /// [`Self::is_ours`] with `label` as the vault label (the old Secret's is
    /// `rotor.dev/vault`).
    fn is_ours_as(&self, secret: &Secret, label: &str) -> bool {
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
            && labels.get(label).map(String::as_str) == Some("true")
            && labels.get(OWNER_LABEL) == Some(&self.layout.owner_label())
    }

    fn foreign(&self) -> VaultError {
        self.foreign_named(self.name())
    }

    fn foreign_named(&self, name: String) -> VaultError {
        VaultError::Foreign {
            namespace: self.layout.namespace.clone(),
            name,
            resource: self.layout.resource.clone(),
        }
    }

    /// The vault Secret, when it exists and is ours: as last seen by this instance,
    /// else read.
    async fn load(&self) -> Result<Option<Secret>, VaultError> {
        if let Some(seen) = self.seen_secret() {
            return Ok(Some(seen));
        }
        let found = match self.api.get_opt(&self.name()).await? {
            Some(s) if !self.is_ours(&s) => return Err(self.foreign()),
            Some(s) => Some(self.finish_move(s).await?),
            None => self.move_legacy().await?,
        };
        self.note_uid(found.as_ref());
        self.remember(found.clone());
        Ok(found)
    }

    /// No escrow Secret: this resource's `rotor-vault-` Secret from before the
    /// escrow, if there is one, is copied whole to the escrow's name (a create, which
    /// never adopts, marked with the old Secret's uid and resourceVersion), then
    /// deleted ([`Self::finish_move`]). `None`: neither exists. A foreign Secret of the
    /// old name is neither read nor touched: the store is unavailable, as with an
    /// impostor under the new name.
    async fn move_legacy(&self) -> Result<Option<Secret>, VaultError> {
        let old_name = self.layout.legacy_secret_name();
        let Some(old) = self.api.get_opt(&old_name).await? else {
            return Ok(None);
        };
        if !self.is_ours_as(&old, LEGACY_LABEL) {
            return Err(self.foreign_named(old_name));
        }
        let (Some(uid), Some(version), Some(owner)) = (
            old.metadata.uid.clone(),
            old.metadata.resource_version.clone(),
            self.owner.clone(),
        ) else {
            return Err(self.foreign_named(old_name));
        };
        let copy = Secret {
            metadata: ObjectMeta {
                name: Some(self.name()),
                namespace: Some(self.layout.namespace.clone()),
                labels: Some(self.labels()),
                annotations: Some(BTreeMap::from([(
                    MOVED_FROM_ANNOTATION.to_string(),
                    format!("{uid}/{version}"),
                )])),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: old.data.clone(),
            ..Secret::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let created = match self.api.create(&params, &copy).await {
            Ok(created) => created,
            // Made meanwhile (another writer of this store): read as usual.
            Err(e) if is_conflict(&e) => match self.api.get_opt(&self.name()).await? {
                Some(s) if self.is_ours(&s) => s,
                Some(_) => return Err(self.foreign()),
                None => return Err(VaultError::Contended(self.name())),
            },
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            namespace = %self.layout.namespace,
            name = %self.layout.resource,
            from = %old_name,
            to = %self.name(),
            "copied the store from before the escrow to its new name"
        );
        // Both exist now; a crash here leaves the marked copy, which wins.
        pause::point("vault_move").await;
        self.finish_move(created).await.map(Some)
    }

    /// An escrow Secret marked as copied from its `rotor-vault-` predecessor: that one
    /// is deleted — only while it is the very object copied (uid and resourceVersion
    /// as preconditions; one changed since, or another object of that name, is left
    /// alone) — then the mark is removed. Unmarked: returned as it is. A delete or
    /// unmark that fails keeps the mark (tried again at the next open) and the copy
    /// serves anyway: it is complete, and only it is written from now on.
    async fn finish_move(&self, secret: Secret) -> Result<Secret, VaultError> {
        let Some(mark) = secret.annotations().get(MOVED_FROM_ANNOTATION).cloned() else {
            return Ok(secret);
        };
        let old_name = self.layout.legacy_secret_name();
        let (uid, version) = mark.split_once('/').unwrap_or((mark.as_str(), ""));
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: (!version.is_empty()).then(|| version.to_string()),
            }),
            ..kube::api::DeleteParams::default()
        };
        match self.api.delete(&old_name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(kube::Error::Api(e)) if e.code == 409 => tracing::warn!(
                namespace = %self.layout.namespace,
                name = %self.layout.resource,
                secret = %old_name,
                "the Secret from before the escrow changed after it was copied, or is another object now: left in place (the escrow is used; delete it yourself once you have checked it)"
            ),
            Err(e) => {
                tracing::warn!(
                    namespace = %self.layout.namespace,
                    name = %self.layout.resource,
                    secret = %old_name,
                    error = %e,
                    "deleting the Secret from before the escrow failed (RBAC: rotor needs delete on secrets); the escrow is used, the delete is tried again at its next use"
                );
                return Ok(secret);
            }
        }
        let patch = serde_json::json!({
            "metadata": {
                "uid": secret.metadata.uid,
                "annotations": { MOVED_FROM_ANNOTATION: null },
            },
        });
        match self.merge(&patch).await {
            Ok(unmarked) if self.is_ours(&unmarked) => {
                tracing::info!(
                    namespace = %self.layout.namespace,
                    name = %self.layout.resource,
                    from = %old_name,
                    "the store's move to the escrow is complete"
                );
                if let Some(writes) = &self.writes {
                    writes.note(
                        &self.layout.namespace,
                        &self.name(),
                        unmarked.metadata.resource_version.as_deref(),
                    );
                }
                Ok(unmarked)
            }
            Ok(_) => Err(self.foreign()),
            Err(e) => {
                tracing::warn!(
                    namespace = %self.layout.namespace,
                    name = %self.layout.resource,
                    error = %e,
                    "removing the escrow's moved-from mark failed; tried again at its next use"
                );
                Ok(secret)
            }
        }
    }

    /// After a write of this vault's Secret: its resourceVersion noted as rotor's own
    /// (its watch event wakes nothing), its uid as rotor's, the object kept.
    fn wrote(&self, written: Secret) {
        if let Some(writes) = &self.writes {
            writes.note(
                &self.layout.namespace,
                &self.name(),
                written.metadata.resource_version.as_deref(),
            );
        }
        self.note_uid(Some(&written));
        self.remember(Some(written));
    }

    /// Notes (or, with `None`, forgets) the uid of this vault's Secret as rotor's.
    fn note_uid(&self, secret: Option<&Secret>) {
        if let Some(writes) = &self.writes {
            writes.note_uid(
                &self.layout.namespace,
                &self.name(),
                secret.and_then(|s| s.metadata.uid.as_deref()),
            );
        }
    }

    /// Adds one entry without reading the vault first: a merge patch of that one key
    /// with the Secret's uid as precondition (the Secret rotor created or found to be
    /// its own, never one made again under the name since). Held audit records go with
    /// it as one batch key (folded into the trail by the next write that reads the
    /// vault). `false`: not possible here (uid unknown, the vault already read, marks
    /// to apply, a full write asked for, the Secret gone or replaced) — the caller
    /// reads and writes as usual, the held records still held.
    async fn put_blind(&self, key: &str, value: &str) -> Result<bool, VaultError> {
        if self.full_write || !self.marks().0.is_empty() {
            return Ok(false);
        }
        let held = self.take_unwritten();
        let result = self.put_blind_with(key, value, &held).await;
        if !matches!(result, Ok(true)) {
            self.hold_again(held);
        }
        result
    }

    async fn put_blind_with(
        &self,
        key: &str,
        value: &str,
        held: &[AuditRecord],
    ) -> Result<bool, VaultError> {
        let mut data = BTreeMap::from([(key.to_string(), value.to_string())]);
        if !held.is_empty() {
            let json =
                serde_json::to_string(held).map_err(|_| VaultError::Malformed(AUDIT_KEY.into()))?;
            data.insert(bounds::batch_key(held, &json), json);
        }
        let uid = self
            .writes
            .as_ref()
            .and_then(|w| w.uid_of(&self.layout.namespace, &self.name()));
        if self.fresh && self.seen_secret().is_none() && uid.is_none() {
            return match self.save(None, data).await {
                Ok(written) => {
                    self.wrote(written);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        let (None, Some(uid)) = (self.seen_secret(), uid) else {
            return Ok(false);
        };
        let encoded: serde_json::Map<String, serde_json::Value> = data
            .into_iter()
            .map(|(k, v)| (k, B64.encode(v.as_bytes()).into()))
            .collect();
        let patch = serde_json::json!({
            "metadata": {"uid": uid},
            "data": encoded,
        });
        match self.merge(&patch).await {
            Ok(written) if self.is_ours(&written) => {
                self.wrote(written);
                Ok(true)
            }
            // The same object, no longer carrying rotor's claim: never used again.
            Ok(_) => {
                self.note_uid(None);
                Err(self.foreign())
            }
            // Gone (404), or made again under the name (the API server refuses a uid
            // that is not the stored object's: 422 "field is immutable", or 409):
            // read it as usual, which tells rotor's vault from an impostor.
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {
                self.note_uid(None);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn seen_secret(&self) -> Option<Secret> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, secret: Option<Secret>) {
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = secret;
    }

    /// The audit records held for the next write (`None`: each is written at once).
    fn held(&self) -> std::sync::MutexGuard<'_, Option<Vec<AuditRecord>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on, audit records wait for the next write of this vault (or
    /// [`Vault::flush_audit`]) instead of each costing a write of their own.
    pub fn hold_audit(&self) {
        let mut held = self.held();
        held.get_or_insert_with(Vec::new);
    }

    /// [`Self::hold_audit`], starting with `records` (a rotation's records status
    /// still carries, `status.auditTail`): they go with this vault's next write, once
    /// (a record the trail has already is not added again).
    pub fn hold_audit_with(&self, records: Vec<AuditRecord>) {
        let mut held = self.held();
        let h = held.get_or_insert_with(Vec::new);
        let later = std::mem::take(h);
        *h = records;
        h.extend(later);
    }

    /// [`Self::hold_audit_with`] the records `status.auditTail` carries — which rotor
    /// does not alone control: at most [`crate::api::AUDIT_TAIL_LIMIT`] of them (the
    /// newest), every text bounded, so they cannot grow the escrow.
    pub fn hold_status_tail(&self, records: &[AuditRecord]) {
        let over = records.len().saturating_sub(crate::api::AUDIT_TAIL_LIMIT);
        let records = records[over..].iter().cloned().map(bounds::bounded);
        self.hold_audit_with(records.collect());
    }

    /// Takes the held records no write has carried yet (for `status.auditTail`).
    pub fn take_unwritten(&self) -> Vec<AuditRecord> {
        self.held().as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Marks `revoked` with this vault's next write instead of a write of its own
    /// (see [`Self::mark_revoked`]); that write then reads the vault.
    pub fn mark_with_next_write(&self, revoked: &[SlotRef], retention: chrono::Duration) {
        let mut marks = self.marks();
        marks.0.extend(revoked.iter().cloned());
        marks.1 = retention;
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, (Vec<SlotRef>, chrono::Duration)> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every write reads the vault and folds the audit batches into the trail (the
    /// batches blind writes leave are bounded by such writes).
    pub fn with_full_write(mut self) -> Self {
        self.full_write = true;
        self
    }

    /// Writes the audit records held so far (one write; none when nothing is held).
    pub async fn flush_audit(&self) -> Result<(), VaultError> {
        let nothing = self.held().as_ref().is_none_or(Vec::is_empty);
        if nothing {
            return Ok(());
        }
        self.modify(|_| ()).await.map(|_| ())
    }

    /// Records taken for a write that failed: held again, before any held since.
    fn hold_again(&self, records: Vec<AuditRecord>) {
        if records.is_empty() {
            return;
        }
        let mut held = self.held();
        let h = held.get_or_insert_with(Vec::new);
        let later = std::mem::take(h);
        *h = records;
        h.extend(later);
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
    ) -> Result<Secret, kube::Error> {
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
                    namespace: Some(self.layout.namespace.clone()),
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
            return self.api.create(&params, &secret).await;
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
        self.merge(&patch).await
    }

    /// A merge patch of this store's Secret under rotor's field manager (the patch
    /// carries its own precondition: uid or resourceVersion).
    async fn merge(&self, patch: &serde_json::Value) -> Result<Secret, kube::Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name(), &params, &Patch::Merge(patch))
            .await
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into()),
            (OWNER_LABEL.into(), self.layout.owner_label()),
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
        // Held audit records go with this write; back to held if it fails.
        let held = self.take_unwritten();
        let result = self.write_with(&mut change, &held).await;
        if result.is_err() {
            self.hold_again(held);
        }
        result
    }

    async fn write_with<T>(
        &self,
        change: &mut impl FnMut(&mut BTreeMap<String, String>) -> T,
        held: &[AuditRecord],
    ) -> Result<(T, usize), VaultError> {
        for _ in 0..WRITE_ATTEMPTS {
            let existing = self.load().await?;
            let has_owner = existing.as_ref().is_some_and(|s| {
                s.owner_references()
                    .iter()
                    .any(|r| Some(&r.uid) == self.owner.as_ref().map(|o| &o.uid))
            });
            let mut data = Self::decode(existing.as_ref());
            // Batches blind writes left are folded into the trail by any write, but
            // are no reason for one — until there are more than a few.
            let many_batches = bounds::batches(&data) > bounds::MAX_BATCHES;
            fold_audit(&mut data, &[]);
            let before = data.clone();
            let out = change(&mut data);
            let (marks, retention) = self.marks().clone();
            mark_entries(&mut data, &marks, retention, Utc::now());
            fold_audit(&mut data, held);
            let removed = housekeep(&mut data, &self.live, Utc::now());
            if existing.is_some() && has_owner && data == before && !many_batches {
                return Ok((out, removed));
            }
            pause::point("vault_write").await;
            match self.save(existing, data).await {
                Ok(written) => {
                    self.wrote(written);
                    self.marks().0.clear();
                    return Ok((out, removed));
                }
                Err(e) if is_conflict(&e) => {
                    // Changed meanwhile: read it afresh.
                    self.remember(None);
                    continue;
                }
                Err(e) => {
                    self.remember(None);
                    return Err(e.into());
                }
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
        let json = self
            .layout
            .seal(&self.ring, name, slot, credential)
            .and_then(|entry| entry.encode())
            .ok_or_else(|| VaultError::NoKek {
                namespace: self.ring.origin.clone(),
            })?;
        let key = entry_key(name);
        if self.put_blind(&key, &json).await? {
            return Ok(());
        }
        self.modify(|data| {
            data.insert(key.clone(), json.clone());
        })
        .await
        .map(|_| ())
    }

    /// Every entry.
    pub async fn entries(&self) -> Result<Vec<Entry>, VaultError> {
        decode_entries(&self.data().await?)
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
        let entry = Entry::decode(raw).ok_or_else(|| VaultError::Malformed(name.into()))?;
        let opened = self.open_current(&entry, outputs, secret_output).await;
        Ok(Some((entry, opened)))
    }

    fn open(
        &self,
        entry: &Entry,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Credential, OpenError> {
        self.layout.open(&self.ring, entry, outputs, secret_output)
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
        // Marked already (with the entry's write): no write, and the held records wait.
        let data = self.data().await?;
        let mut marked = data.clone();
        mark_entries(&mut marked, revoked, retention, now);
        if marked == data {
            return Ok(());
        }
        self.modify(|data| mark_entries(data, revoked, retention, now))
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
        let Some(entry) = entries
            .iter()
            .find(|e| e.id == id && e.fingerprint == fingerprint && e.revoked_at.is_none())
        else {
            return Ok(None);
        };
        let opened = self.open_current(entry, outputs, secret_output).await;
        Ok(Some(opened.and_then(|c| {
            // The AEAD vouches for the bytes; the fingerprint (in whichever form it
            // was recorded) for the slot.
            let value = c.outputs.get(c.secret_output).map(|v| v.expose_secret());
            if value.is_some_and(|v| crate::rotation::fingerprint_matches(&entry.fingerprint, v)) {
                Ok(c)
            } else {
                Err(OpenError::Malformed)
            }
        })))
    }

    /// Opens `entry`; one wrapped by a KEK version newer than this ring knows (`rotor
    /// keys rotate` re-wrapped it after the ring was had, before the KEK watch said
    /// so) is opened with the KEKs as they are now.
    async fn open_current(
        &self,
        entry: &Entry,
        outputs: &'static [&'static str],
        secret_output: &'static str,
    ) -> Result<Credential, OpenError> {
        match self.open(entry, outputs, secret_output) {
            Err(OpenError::KeyVersionUnavailable(v))
                if self.ring.current().is_none_or(|(current, _)| v > current) =>
            {
                match self.reload_ring().await {
                    Some(fresh) => self.layout.open(&fresh, entry, outputs, secret_output),
                    None => Err(OpenError::KeyVersionUnavailable(v)),
                }
            }
            other => other,
        }
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
        let entries = decode_entries(&data)?;
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
                self.layout
                    .open(ring, entry, outputs, secret_output)
                    .err()
                    .map(|e| format!("escrow entry {} (slot {}): {e}", entry.name, entry.slot))
            });
        let bytes = entry_bytes(&data);
        let crowded = (entries.len() * 4 > MAX_ENTRIES * 3 || bytes * 4 > MAX_ENTRY_BYTES * 3)
            .then(|| {
                format!(
                    "the escrow holds {} entries ({} KiB); rotor keeps at most {MAX_ENTRIES} entries and {} KiB, dropping the oldest revoked entries first and never the live slots or the in-flight credential — more unrevoked entries than that mean credentials rotor could not revoke (see the audit trail)",
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
        keys::ring_of(&kek, &self.ring.origin).ok()
    }

    /// Appends to the audit trail (and logs the record).
    pub async fn audit(&self, record: AuditRecord) -> Result<(), VaultError> {
        tracing::info!(
            target: "rotor::audit",
            namespace = %self.layout.namespace,
            name = %self.layout.resource,
            actor = %record.actor,
            action = %record.action,
            credential = record.credential.as_deref().unwrap_or(""),
            old_fingerprint = record.old_fingerprint.as_deref().unwrap_or(""),
            new_fingerprint = record.new_fingerprint.as_deref().unwrap_or(""),
            detail = record.detail.as_deref().unwrap_or(""),
            "audit"
        );
        // Bounded as it is made: the copy status may carry is the same record.
        let record = bounds::bounded(record);
        {
            let mut held = self.held();
            if let Some(held) = held.as_mut() {
                held.push(record);
                return Ok(());
            }
        }
        self.modify(|data| append_audit(data, record.clone()))
            .await
            .map(|_| ())
    }
}

/// Marks the entries of `revoked` (each by id and fingerprint) revoked at `now`,
/// expiring after `retention`; entries marked before keep their marks.
fn mark_entries(
    data: &mut BTreeMap<String, String>,
    revoked: &[SlotRef],
    retention: chrono::Duration,
    now: DateTime<Utc>,
) {
    if revoked.is_empty() {
        return;
    }
    for (_, raw) in raw_entries_mut(data) {
        let Some(mut entry) = Entry::decode(raw) else {
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
            if let Some(encoded) = entry.encode() {
                *raw = encoded;
            }
        }
    }
}

/// Every entry of a vault Secret's data, decoded; an error names the first that is
/// not an entry.
fn decode_entries(data: &BTreeMap<String, String>) -> Result<Vec<Entry>, VaultError> {
    raw_entries(data)
        .map(|(k, v)| Entry::decode(v).ok_or_else(|| VaultError::Malformed(k.clone())))
        .collect()
}

/// The audit trail of `resource` in `namespace`: from its escrow, or — not moved
/// yet — from its `rotor-vault-` Secret; either only when this SecretRotation (its uid)
/// owns it, as the controller requires.
pub async fn read_audit(
    client: &Client,
    namespace: &str,
    resource: &str,
) -> Result<Vec<AuditRecord>, VaultError> {
    // The trail is read only from a Secret that carries this very resource's owner
    // reference (its uid), as the controller reads it, not one an earlier resource of
    // the same name left, or one made without it. (The trail is not signed: whoever
    // may write Secrets in the namespace can still forge one that passes.)
    let resources: Api<SecretRotation> = Api::namespaced(client.clone(), namespace);
    let Some(sr) = resources.get_opt(resource).await? else {
        return Err(VaultError::NoResource {
            namespace: namespace.into(),
            resource: resource.into(),
        });
    };
    let vault = Vault::new(client, &sr, Keyring::default());
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(&vault_secret_name(resource)).await? {
        Some(s) if vault.is_ours(&s) => Some(s),
        Some(_) => return Err(vault.foreign()),
        None => match api.get_opt(&legacy_secret_name(resource)).await? {
            Some(s) if vault.is_ours_as(&s, LEGACY_LABEL) => Some(s),
            Some(_) => return Err(vault.foreign_named(legacy_secret_name(resource))),
            None => None,
        },
    };
    // The last rotation's records not moved into the escrow yet are in status.
    let tail = sr.status.map(|s| s.audit_tail).unwrap_or_default();
    let Some(secret) = secret else {
        return Ok(bounds::merge_records(Vec::new(), tail));
    };
    let data = Vault::decode(Some(&secret));
    if let Some(raw) = data.get(AUDIT_KEY)
        && serde_json::from_str::<Vec<AuditRecord>>(raw).is_err()
    {
        return Err(VaultError::Malformed(AUDIT_KEY.into()));
    }
    Ok(bounds::merge_records(bounds::audit_trail(&data), tail))
}
