//! The vault's bounds: how many entries and bytes it keeps, which go first when it is
//! over them, and the bounded audit trail. Pure: applied to the vault Secret's data on
//! every write.

use super::SlotRef;
use super::format::{AUDIT_KEY, AuditRecord, Entry, is_entry_key, raw_entries};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Records kept in a resource's audit trail.
pub const AUDIT_LIMIT: usize = 200;
/// Entries a vault keeps at most: beyond it the oldest revoked entries go first, then
/// the oldest that are in no slot; the live slots' and the in-flight entry never.
pub const MAX_ENTRIES: usize = 32;
/// Bytes of entries a vault keeps at most (the same order of dropping); a Secret
/// cannot exceed 1 MiB.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// Longest audit detail kept (errors can be long).
pub(super) const DETAIL_LIMIT: usize = 512;

/// The entries that must survive every bound: the live slots and the in-flight one.
#[derive(Clone, Debug, Default)]
pub(super) struct Live {
    pub(super) known: bool,
    pub(super) slots: Vec<SlotRef>,
    pub(super) in_flight: Option<String>,
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

pub(super) fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

pub(super) fn append_audit(data: &mut BTreeMap<String, String>, record: AuditRecord) {
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

pub(super) fn entry_bytes(data: &BTreeMap<String, String>) -> usize {
    raw_entries(data).map(|(k, v)| k.len() + v.len()).sum()
}

/// Drops expired entries, then — while the vault is over [`MAX_ENTRIES`] or
/// [`MAX_ENTRY_BYTES`] — unreadable entries, the oldest revoked ones, and (when the
/// live entries are known) the oldest unrevoked ones that are in no slot and not in
/// flight. Returns how many entries went.
pub(super) fn housekeep(
    data: &mut BTreeMap<String, String>,
    live: &Live,
    now: DateTime<Utc>,
) -> usize {
    let before = data.len();
    data.retain(|k, v| {
        !is_entry_key(k)
            || Entry::decode(v)
                .and_then(|e| e.expires_at)
                .is_none_or(|t| t > now)
    });
    let over = |data: &BTreeMap<String, String>| {
        raw_entries(data).count() > MAX_ENTRIES || entry_bytes(data) > MAX_ENTRY_BYTES
    };
    if over(data) {
        // (rank, created) per droppable entry: 0 unreadable, 1 revoked, 2 unrevoked
        // and not live.
        let mut droppable: Vec<(u8, Option<DateTime<Utc>>, String)> = raw_entries(data)
            .filter_map(|(k, v)| match Entry::decode(v) {
                None => Some((0, None, k.clone())),
                Some(e) if e.revoked_at.is_some() => Some((1, Some(e.created_at), k.clone())),
                Some(e) if !live.holds(&e) => Some((2, Some(e.created_at), k.clone())),
                Some(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::envelope::Sealed;
    use crate::vault::format::entry_key;

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
        data.insert(entry_key(&e.name), e.encode().unwrap());
    }

    fn names(data: &BTreeMap<String, String>) -> Vec<String> {
        let mut n: Vec<String> = data
            .values()
            .filter_map(|v| Entry::decode(v))
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
