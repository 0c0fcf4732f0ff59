//! The key-encryption keys: the KEK Secret in the operator's namespace (`v1`, `v2`,
//! …; the highest is current) with the fingerprint key, loading it, and
//! `rotor keys rotate`, which adds a version and re-wraps every escrow's data keys.

use super::bounds::{Live, append_audit};
use super::envelope::Keyring;
use super::format::{AuditRecord, Entry, Layout, legacy_secret_name, raw_entries_mut, secret_name};
use super::{
    KEK_NAMESPACE_LABEL, LEGACY_LABEL, VAULT_LABEL, Vault, VaultError, WRITE_ATTEMPTS, is_conflict,
    pause,
};
use crate::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_LABEL, SecretRotation};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The KEK Secret's name, in the operator's namespace.
pub const KEK_SECRET: &str = "rotor-kek";
/// The key of the KEK Secret that holds the fingerprint key (32 bytes, never rotated).
pub const FINGERPRINT_KEY: &str = "fingerprint";

/// The keyring of a KEK Secret (and installs its fingerprint key for this process).
pub(super) fn ring_of(secret: &Secret, namespace: &str) -> Result<Keyring, VaultError> {
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

/// The keyring as a watch on the KEK Secret last showed it, so that a vault use costs
/// no read of it. Empty until the watch has listed it, and again whenever the watch
/// fails or the Secret is gone: callers then read it themselves ([`load_keyring`]).
#[derive(Default)]
pub struct KeyCache {
    ring: std::sync::RwLock<Option<Keyring>>,
}

impl KeyCache {
    /// The keyring, if the watch holds a current one.
    pub fn get(&self) -> Option<Keyring> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, ring: Option<Keyring>) {
        *self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ring;
    }

    /// Keeps the cache current until the stream ends (never, but for a shutdown).
    /// Needs list and watch on the one Secret (RBAC `resourceNames: [rotor-kek]`);
    /// without them the cache stays empty and every use reads the Secret.
    pub async fn watch(&self, client: Client, namespace: String) {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let api: Api<Secret> = Api::namespaced(client, &namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={KEK_SECRET}"));
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listed = false,
                Ok(watcher::Event::InitApply(s) | watcher::Event::Apply(s)) => {
                    listed = true;
                    self.set(ring_of(&s, &namespace).ok().filter(|r| !r.keys.is_empty()));
                }
                Ok(watcher::Event::InitDone) if !listed => self.set(None),
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(_)) => self.set(None),
                Err(e) => {
                    // Not known to be current any more.
                    self.set(None);
                    tracing::debug!(namespace, error = %e, "watching the KEK Secret failed; reading it at each use");
                }
            }
        }
    }
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
                            "created the escrow key Secret {KEK_SECRET} with v1 and the fingerprint key"
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

/// What `rotor keys rotate` did.
#[derive(Debug, Default)]
pub struct KeyRotation {
    /// The KEK version added.
    pub version: u32,
    /// Data keys re-wrapped with it.
    pub rewrapped: usize,
    /// Every entry or escrow that could not be re-wrapped, and why (never a value).
    pub failures: Vec<String>,
}

/// `rotor keys rotate`: adds a KEK version (with the KEK Secret's resourceVersion as a
/// precondition, so two concurrent runs cannot both add `v<N+1>`) and re-wraps every
/// DEK in every escrow Secret (ciphertexts untouched), keeping each escrow's owner
/// reference. A store still under its name from before the escrow (`rotor-vault-`)
/// is moved to its escrow first, as the operator would, and re-wrapped there. Never
/// creates the KEK Secret. Failures are returned, not logged away.
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
    // The escrows wrapped by this namespace's KEKs, and those from before the label
    // (one operator per cluster then) — and the same for the stores from before the
    // escrow (`rotor.dev/vault`), which are moved on the way.
    let vaults: Api<Secret> = Api::all(client.clone());
    let mut listed = Vec::new();
    for label in [VAULT_LABEL, LEGACY_LABEL] {
        for selector in [
            format!("{label}=true,{KEK_NAMESPACE_LABEL}={operator_namespace}"),
            format!("{label}=true,!{KEK_NAMESPACE_LABEL}"),
        ] {
            listed.extend(
                vaults
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .into_iter()
                    .map(|s| (label, s)),
            );
        }
    }
    // One store per resource, though a move cut short leaves two Secrets.
    let mut seen = std::collections::BTreeSet::new();
    for (label, secret) in listed {
        let (Some(ns), Some(name)) = (secret.namespace(), secret.metadata.name.clone()) else {
            continue;
        };
        let Some(resource) = owning_resource(&secret, &name) else {
            report.failures.push(format!(
                "{ns}/{name}: labelled {label} but neither its owner reference nor its {OWNER_LABEL} label names a SecretRotation whose escrow has this name; left alone"
            ));
            continue;
        };
        if !seen.insert((ns.clone(), resource.clone())) {
            continue;
        }
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
            layout: Layout::new(ns.as_str(), resource.as_str()),
            owner,
            live: Live::default(),
            seen: Default::default(),
            held: Default::default(),
            marks: Default::default(),
            full_write: false,
            writes: None,
            fresh: false,
        };
        let result = vault
            .modify(|data| {
                let (rewrapped, failures) =
                    rewrap_all(data, &vault.ring, &vault.layout, Utc::now());
                let failures: Vec<String> = failures
                    .into_iter()
                    .map(|f| format!("{ns}/{name} {f}"))
                    .collect();
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

/// The SecretRotation an escrow Secret belongs to: the one its owner reference names,
/// or (an older `keys rotate` removed owner references) its owner label — and only when
/// that resource's escrow has exactly this name (or had it, before the escrow), so a
/// Secret labelled for another resource is never re-wrapped as if it were its escrow.
fn owning_resource(secret: &Secret, name: &str) -> Option<String> {
    let by_owner = secret
        .owner_references()
        .iter()
        .filter(|r| r.kind == "SecretRotation" && r.api_version.starts_with("rotor.dev/"))
        .map(|r| r.name.clone());
    let by_label = secret.labels().get(OWNER_LABEL).cloned();
    by_owner
        .chain(by_label)
        .find(|r| secret_name(r) == name || legacy_secret_name(r) == name)
}

/// Re-wraps every entry of a vault's `data` with `ring`'s current KEK: how many were,
/// and — without a value — each that could not be and why. Expired entries are
/// skipped: the same write drops them.
fn rewrap_all(
    data: &mut BTreeMap<String, String>,
    ring: &Keyring,
    layout: &Layout,
    now: DateTime<Utc>,
) -> (usize, Vec<String>) {
    let mut rewrapped = 0;
    let mut failures = Vec::new();
    for (key, raw) in raw_entries_mut(data) {
        let Some(entry) = Entry::decode(raw) else {
            failures.push(format!("entry {key}: malformed"));
            continue;
        };
        if entry.expires_at.is_some_and(|t| t <= now) {
            continue;
        }
        match layout.rewrap(ring, &entry).map(|e| e.encode()) {
            Ok(Some(encoded)) => {
                *raw = encoded;
                rewrapped += 1;
            }
            Ok(None) => failures.push(format!("entry {}: malformed", entry.name)),
            Err(e) => failures.push(format!("entry {}: {e}", entry.name)),
        }
    }
    (rewrapped, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::Credential;
    use crate::vault::envelope::OpenError;
    use crate::vault::format::entry_key;
    use secrecy::{ExposeSecret, SecretString};

    #[test]
    fn keys_rotate_rewraps_what_opens_after_the_old_kek_is_gone() {
        let layout = Layout::new("shop", "db");
        let mut ring = Keyring {
            keys: BTreeMap::from([(1, Keyring::generate())]),
            origin: "rotor-system".into(),
        };
        let credential = Credential {
            id: "k".into(),
            outputs: BTreeMap::from([("secret", SecretString::from("v".to_string()))]),
            secret_output: "secret",
        };
        let mut data = BTreeMap::new();
        for (name, expires) in [("live", None), ("gone", Some(Utc::now()))] {
            let mut entry = layout.seal(&ring, name, 0, &credential).unwrap();
            entry.expires_at = expires;
            data.insert(entry_key(name), entry.encode().unwrap());
        }
        data.insert(entry_key("broken"), "{}".into());
        data.insert("audit".into(), "[]".into());
        ring.keys.insert(2, Keyring::generate());

        let (rewrapped, failures) = rewrap_all(&mut data, &ring, &layout, Utc::now());
        assert_eq!(rewrapped, 1, "the expired entry is not counted");
        assert_eq!(
            failures,
            vec![format!("entry {}: malformed", entry_key("broken"))]
        );
        assert_eq!(data["audit"], "[]", "not an entry: untouched");

        ring.keys.remove(&1);
        let live = Entry::decode(&data[&entry_key("live")]).unwrap();
        let opened = layout.open(&ring, &live, &["secret"], "secret").unwrap();
        assert_eq!(opened.outputs["secret"].expose_secret(), "v");
        let gone = Entry::decode(&data[&entry_key("gone")]).unwrap();
        assert_eq!(
            layout
                .open(&ring, &gone, &["secret"], "secret")
                .unwrap_err(),
            OpenError::KeyVersionUnavailable(1)
        );
    }

    #[test]
    fn a_escrow_belongs_to_the_resource_whose_escrow_name_it_has() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let long = format!("long-{}", "n".repeat(245));
        let secret = |name: &str, owner: Option<&str>, label: Option<&str>| Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        api_version: "rotor.dev/v1alpha1".into(),
                        kind: "SecretRotation".into(),
                        name: o.into(),
                        uid: "u".into(),
                        ..OwnerReference::default()
                    }]
                }),
                labels: label.map(|l| BTreeMap::from([(OWNER_LABEL.to_string(), l.to_string())])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let hashed = secret_name(&long);
        assert_eq!(
            owning_resource(&secret(&hashed, Some(&long), None), &hashed),
            Some(long.clone()),
            "a long name is found through the owner reference"
        );
        assert_eq!(
            owning_resource(
                &secret("rotor-escrow-db", None, Some("db")),
                "rotor-escrow-db"
            ),
            Some("db".into()),
            "an escrow whose owner reference was removed, through its label"
        );
        assert_eq!(
            owning_resource(
                &secret("rotor-vault-db", Some("db"), None),
                "rotor-vault-db"
            ),
            Some("db".into()),
            "a store from before the escrow, under its old name"
        );
        assert_eq!(
            owning_resource(
                &secret("rotor-escrow-db", Some("cache"), Some("cache")),
                "rotor-escrow-db"
            ),
            None,
            "labelled and owned for another resource"
        );
        assert_eq!(
            owning_resource(&secret("rotor-escrow-x", None, None), "rotor-escrow-x"),
            None,
            "no name to go by"
        );
    }
}
