//! The vault's storage format, owned here and nowhere else: what the vault Secret (the
//! user-facing "escrow") is called, which of its keys are entries, how an entry is encoded, and the associated
//! data that binds a sealed credential to its namespace, resource, slot and name.
//! Change one of these and every stored entry is lost — which is why there is exactly
//! one copy of each.

use super::envelope::{self, Keyring, OpenError, Sealed};
use crate::rotation::{Credential, MAX_NAME, bounded_name, label_value};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Prefix of every vault Secret's name (users know the store as the escrow).
pub const VAULT_PREFIX: &str = "rotor-escrow-";
/// Prefix of the vault Secret's name before the store was called the escrow: such a
/// Secret is moved to its new name the next time rotor opens the store.
pub const LEGACY_PREFIX: &str = "rotor-vault-";
/// Prefix of the vault Secret's keys that hold entries.
const ENTRY_PREFIX: &str = "e.";
/// The vault Secret's key that holds the audit trail.
pub const AUDIT_KEY: &str = "audit";
/// Version tag at the start of every entry's associated data.
const AAD_VERSION: &str = "rotor/v1";

/// The vault Secret's name for `resource`: `rotor-escrow-<resource>`, or — when that
/// would pass Kubernetes' 253-character limit — its start and a hash of the name.
pub fn secret_name(resource: &str) -> String {
    bounded_name(VAULT_PREFIX, resource, MAX_NAME)
}

/// The name the vault Secret of `resource` had before the escrow
/// (`rotor-vault-<resource>`, bounded the same way).
pub fn legacy_secret_name(resource: &str) -> String {
    bounded_name(LEGACY_PREFIX, resource, MAX_NAME)
}

/// Where one resource's vault lives and what its entries are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub namespace: String,
    pub resource: String,
}

impl Layout {
    pub fn new(namespace: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            resource: resource.into(),
        }
    }

    /// The vault Secret's name.
    pub fn secret_name(&self) -> String {
        secret_name(&self.resource)
    }

    /// The vault Secret's name before the escrow.
    pub fn legacy_secret_name(&self) -> String {
        legacy_secret_name(&self.resource)
    }

    /// The value of the owner label (`rotor.dev/secret-rotation`) on the vault Secret:
    /// the resource name, bounded like a label value must be.
    pub fn owner_label(&self) -> String {
        label_value(&self.resource)
    }

    /// The associated data of the entry `name` in `slot`:
    /// `rotor/v1|<namespace>|<resource>|<slot>|<name>`.
    fn aad(&self, slot: u8, name: &str) -> Vec<u8> {
        format!(
            "{AAD_VERSION}|{}|{}|{slot}|{name}",
            self.namespace, self.resource
        )
        .into_bytes()
    }

    /// Seals `credential` as the entry `name` in `slot`; `None` when the ring has no
    /// key or the outputs cannot be encoded.
    pub fn seal(
        &self,
        ring: &Keyring,
        name: &str,
        slot: u8,
        credential: &Credential,
    ) -> Option<Entry> {
        let outputs: BTreeMap<&str, &str> = credential
            .outputs
            .iter()
            .map(|(k, v)| (*k, v.expose_secret()))
            .collect();
        let plaintext = Zeroizing::new(serde_json::to_vec(&outputs).ok()?);
        let sealed = envelope::seal(ring, &plaintext, &self.aad(slot, name))?;
        Some(Entry {
            name: name.into(),
            id: credential.id.clone(),
            slot,
            fingerprint: credential.fingerprint(),
            sealed,
            created_at: Utc::now(),
            revoked_at: None,
            expires_at: None,
        })
    }

    /// Opens `entry` with `ring`: the credential, with the outputs the provider names.
    pub fn open(
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

    /// `entry` with its data key wrapped again by `ring`'s current KEK (the
    /// ciphertext untouched).
    pub fn rewrap(&self, ring: &Keyring, entry: &Entry) -> Result<Entry, OpenError> {
        let sealed = envelope::rewrap(ring, &entry.sealed, &self.aad(entry.slot, &entry.name))?;
        Ok(Entry {
            sealed,
            ..entry.clone()
        })
    }
}

/// The vault Secret's key of the entry for credential `name`: `e.` and 20 hex digits
/// of the SHA-256 of the name (names may hold characters a Secret key cannot).
pub fn entry_key(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    format!("{ENTRY_PREFIX}{}", hex::encode(&digest[..10]))
}

/// Whether `key` of the vault Secret holds an entry (and not the audit trail or a key
/// someone else put there).
pub fn is_entry_key(key: &str) -> bool {
    key.starts_with(ENTRY_PREFIX)
}

/// The entries of a vault Secret's data, raw: `(key, encoded entry)`.
pub fn raw_entries(data: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    data.iter().filter(|(k, _)| is_entry_key(k))
}

/// The same, to change in place.
pub fn raw_entries_mut(
    data: &mut BTreeMap<String, String>,
) -> impl Iterator<Item = (&String, &mut String)> {
    data.iter_mut().filter(|(k, _)| is_entry_key(k))
}

/// One stored credential (the JSON under [`entry_key`] of its name).
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

impl Entry {
    /// The entry as stored; `None` only if JSON could not encode it.
    pub fn encode(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }

    /// An entry as stored; `None` when it is not one.
    pub fn decode(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }
}

/// One audit record (the API's type: `status.auditTail` holds the newest).
pub use crate::api::AuditRecord;

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(versions: &[u32]) -> Keyring {
        Keyring {
            keys: versions.iter().map(|v| (*v, Keyring::generate())).collect(),
            origin: "rotor-system".into(),
        }
    }

    fn credential(value: &str) -> Credential {
        Credential {
            id: "key-1".into(),
            outputs: BTreeMap::from([
                ("secret", SecretString::from(value.to_string())),
                ("id", SecretString::from("key-1".to_string())),
            ]),
            secret_output: "secret",
        }
    }

    #[test]
    fn the_associated_data_is_the_documented_string_byte_for_byte() {
        // Entries sealed by every earlier rotor were bound to exactly this string: a
        // change here makes each of them fail to open.
        assert_eq!(
            Layout::new("shop", "db").aad(0, "rotor-abc-1"),
            b"rotor/v1|shop|db|0|rotor-abc-1"
        );
        assert_eq!(
            entry_key("rotor-abc-1"),
            format!("e.{}", &hex::encode(Sha256::digest(b"rotor-abc-1"))[..20])
        );
    }

    #[test]
    fn an_entry_sealed_before_a_key_rotation_opens_after_it_and_only_where_it_belongs() {
        let layout = Layout::new("shop", "db");
        let before = ring(&[1]);
        let entry = layout
            .seal(&before, "rotor-abc-1", 1, &credential("s3cret"))
            .unwrap();
        assert_eq!(entry.sealed.kek_version, 1);
        // Stored and read back, as the vault Secret holds it.
        let entry = Entry::decode(&entry.encode().unwrap()).unwrap();

        // `keys rotate`: v2 added, the data key re-wrapped; then v1 removed.
        let mut after = before.clone();
        after.keys.insert(2, Keyring::generate());
        let rewrapped = layout.rewrap(&after, &entry).unwrap();
        assert_eq!(rewrapped.sealed.kek_version, 2);
        assert_eq!(rewrapped.sealed.ciphertext, entry.sealed.ciphertext);
        after.keys.remove(&1);
        let opened = layout
            .open(&after, &rewrapped, &["secret", "id"], "secret")
            .unwrap();
        assert_eq!(opened.outputs["secret"].expose_secret(), "s3cret");
        assert_eq!(opened.id, "key-1");
        // Not re-wrapped, it needs the KEK that is gone.
        assert_eq!(
            layout
                .open(&after, &entry, &["secret"], "secret")
                .unwrap_err(),
            OpenError::KeyVersionUnavailable(1)
        );
        // Moved to another resource, namespace or slot, it fails to open.
        for (other, slot) in [
            (Layout::new("shop", "cache"), 1),
            (Layout::new("other", "db"), 1),
            (layout.clone(), 0),
        ] {
            let moved = Entry {
                slot,
                ..rewrapped.clone()
            };
            assert_eq!(
                other
                    .open(&after, &moved, &["secret"], "secret")
                    .unwrap_err(),
                OpenError::Tampered,
                "{other:?} slot {slot}"
            );
        }
    }

    #[test]
    fn a_250_character_resource_name_gets_a_valid_vault_secret_name_and_label() {
        let long = format!("long-{}", "n".repeat(245));
        let layout = Layout::new("shop", long.as_str());
        let name = layout.secret_name();
        assert!(name.len() <= MAX_NAME, "{} characters", name.len());
        assert!(name.starts_with("rotor-escrow-long-nnn"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}"
        );
        let label = layout.owner_label();
        assert!(label.len() <= 63, "{label}");
        // Another long name with the same start gets another Secret.
        let other = Layout::new("shop", format!("long-{}x", "n".repeat(244)));
        assert_ne!(other.secret_name(), name);
        assert_ne!(other.owner_label(), label);
        // A short name is unchanged: existing escrows are found where they are.
        assert_eq!(Layout::new("shop", "db").secret_name(), "rotor-escrow-db");
        // The names from before the escrow, bounded the same way.
        assert_eq!(
            Layout::new("shop", "db").legacy_secret_name(),
            "rotor-vault-db"
        );
        let legacy = layout.legacy_secret_name();
        assert!(
            legacy.len() <= MAX_NAME && legacy.starts_with("rotor-vault-long-nnn"),
            "{legacy}"
        );
        assert_eq!(Layout::new("shop", "db").owner_label(), "db");
    }

    #[test]
    fn only_entry_keys_are_entries() {
        let entry = Layout::new("shop", "db")
            .seal(&ring(&[1]), "rotor-abc-1", 0, &credential("v"))
            .unwrap();
        let data = BTreeMap::from([
            (entry_key("rotor-abc-1"), entry.encode().unwrap()),
            (AUDIT_KEY.to_string(), "[]".to_string()),
            // JSON that looks like an entry, under a key that is not one.
            ("note".to_string(), entry.encode().unwrap()),
        ]);
        let keys: Vec<&String> = raw_entries(&data).map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&entry_key("rotor-abc-1")]);
        assert!(!is_entry_key(AUDIT_KEY) && !is_entry_key("note"));
        assert_eq!(Entry::decode("[]"), None);
    }
}
