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

/// Prefix of the keys that hold a batch of audit records written without reading the
/// vault (with a blind entry write): folded into [`AUDIT_KEY`] by the next write that
/// reads it, and read with it.
const BATCH_PREFIX: &str = "audit.";

/// The key of a batch of `records` (serialized as `json`): unique per batch, so a
/// blind write never replaces a batch not folded yet (a repeated batch is the same key
/// with the same records).
pub(super) fn batch_key(records: &[AuditRecord], json: &str) -> String {
    use sha2::{Digest, Sha256};
    let nanos = records
        .first()
        .and_then(|r| r.time.timestamp_nanos_opt())
        .unwrap_or_default();
    let digest = Sha256::digest(json.as_bytes());
    format!("{BATCH_PREFIX}{nanos}.{}", hex::encode(&digest[..4]))
}

fn is_batch_key(key: &str) -> bool {
    key.starts_with(BATCH_PREFIX)
}

/// The whole trail a vault Secret's data holds: the trail key and every batch, oldest
/// first, each record once (a record written twice — by a retried or resumed write —
/// is one record), at most [`AUDIT_LIMIT`] (the newest). Unreadable parts are skipped.
/// Linear in what the Secret holds, whoever wrote it (a Secret is at most ~1 MiB).
pub(super) fn audit_trail(data: &BTreeMap<String, String>) -> Vec<AuditRecord> {
    let parse = |raw: &String| serde_json::from_str::<Vec<AuditRecord>>(raw).unwrap_or_default();
    let parts = data
        .iter()
        .filter(|(k, _)| k.as_str() == AUDIT_KEY || is_batch_key(k))
        .flat_map(|(_, raw)| parse(raw));
    merge_records(Vec::new(), parts)
}

/// `records` added to a trail, each record once, oldest first (stable: records of one
/// time keep their order), at most [`AUDIT_LIMIT`] (the newest).
pub(super) fn merge_records(
    trail: Vec<AuditRecord>,
    records: impl IntoIterator<Item = AuditRecord>,
) -> Vec<AuditRecord> {
    let mut seen = std::collections::HashSet::new();
    // A record from the future is not rotor's (its clock, give or take the skew a
    // cluster tolerates): kept, it would outlive every real one in the bound.
    let latest = Utc::now() + chrono::Duration::minutes(FUTURE_SKEW_MINUTES);
    let mut all: Vec<AuditRecord> = trail
        .into_iter()
        .chain(records)
        .filter(|r| r.time <= latest)
        .filter(|r| seen.insert(r.clone()))
        .collect();
    all.sort_by_key(|r| r.time);
    if all.len() > AUDIT_LIMIT {
        all.drain(..all.len() - AUDIT_LIMIT);
    }
    all
}

/// A record as rotor keeps it: every text bounded (a record that comes back from
/// status, which rotor does not alone control, cannot grow the escrow).
pub(super) fn bounded(mut record: AuditRecord) -> AuditRecord {
    for text in [&mut record.actor, &mut record.action] {
        truncate(text, FIELD_LIMIT);
    }
    for text in [
        &mut record.credential,
        &mut record.old_fingerprint,
        &mut record.new_fingerprint,
    ]
    .into_iter()
    .flatten()
    {
        truncate(text, FIELD_LIMIT);
    }
    if let Some(detail) = record.detail.as_mut() {
        truncate(detail, DETAIL_LIMIT);
    }
    record
}

/// How far ahead of this clock a record's time may be.
const FUTURE_SKEW_MINUTES: i64 = 5;

/// Batch keys an escrow may carry before a write that has nothing else to write folds
/// them (blind entry writes add one each).
pub(super) const MAX_BATCHES: usize = 8;

/// How many batch keys `data` holds.
pub(super) fn batches(data: &BTreeMap<String, String>) -> usize {
    data.keys().filter(|k| is_batch_key(k)).count()
}

/// Longest actor, action, credential id or fingerprint kept.
const FIELD_LIMIT: usize = 256;

/// Folds the batches into the trail key (and drops them), then appends `records` not
/// in the trail yet.
pub(super) fn fold_audit(data: &mut BTreeMap<String, String>, records: &[AuditRecord]) {
    let had_batches = data.keys().any(|k| is_batch_key(k));
    if !had_batches && records.is_empty() {
        return;
    }
    let trail = merge_records(audit_trail(data), records.iter().cloned());
    data.retain(|k, _| !is_batch_key(k));
    if let Ok(json) = serde_json::to_string(&trail) {
        data.insert(AUDIT_KEY.into(), json);
    }
}

/// Appends `record` to the trail (folding the batches in).
pub(super) fn append_audit(data: &mut BTreeMap<String, String>, record: AuditRecord) {
    fold_audit(data, &[record]);
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

    fn record(secs: i64, action: &str) -> AuditRecord {
        AuditRecord {
            time: chrono::DateTime::from_timestamp(1_700_000_000 + secs, 5).unwrap(),
            actor: "schedule".into(),
            action: action.into(),
            credential: Some("rotor-c1".into()),
            old_fingerprint: None,
            new_fingerprint: Some("fp".into()),
            detail: None,
        }
    }

    fn batch(data: &mut BTreeMap<String, String>, records: &[AuditRecord]) {
        let json = serde_json::to_string(records).unwrap();
        data.insert(batch_key(records, &json), json);
    }

    fn actions(trail: &[AuditRecord]) -> Vec<String> {
        trail.iter().map(|r| r.action.clone()).collect()
    }

    #[test]
    fn batches_fold_into_the_trail_in_time_order_each_record_once() {
        let mut data = BTreeMap::new();
        append_audit(&mut data, record(0, "issue"));
        // A blind write's batch, and the same records again (a resumed rotation's
        // status tail written by a later blind write): one record each.
        batch(&mut data, &[record(1, "test"), record(2, "activate")]);
        batch(
            &mut data,
            &[
                record(1, "test"),
                record(2, "activate"),
                record(3, "revoke"),
            ],
        );
        assert_eq!(data.len(), 3, "two batch keys: {:?}", data.keys());
        let read = audit_trail(&data);
        assert_eq!(actions(&read), ["issue", "test", "activate", "revoke"]);
        // A write folds them: the batch keys go, the trail key holds all.
        fold_audit(&mut data, &[record(2, "activate"), record(4, "issue")]);
        assert_eq!(data.keys().collect::<Vec<_>>(), [AUDIT_KEY]);
        assert_eq!(
            actions(&audit_trail(&data)),
            ["issue", "test", "activate", "revoke", "issue"]
        );
        // Folding again changes nothing.
        let before = data.clone();
        fold_audit(&mut data, &[]);
        assert_eq!(data, before);
    }

    #[test]
    fn the_folded_trail_keeps_its_bound() {
        let mut data = BTreeMap::new();
        let many: Vec<AuditRecord> = (0..AUDIT_LIMIT as i64 + 5)
            .map(|i| record(i, "issue"))
            .collect();
        batch(&mut data, &many[..100]);
        batch(&mut data, &many[100..]);
        let trail = audit_trail(&data);
        assert_eq!(trail.len(), AUDIT_LIMIT);
        assert_eq!(trail[0], many[5], "the oldest go first");
        fold_audit(&mut data, &[]);
        assert_eq!(audit_trail(&data), trail);
    }

    #[test]
    fn a_batch_key_is_a_valid_secret_key_and_differs_per_batch() {
        let a = [record(1, "test")];
        let b = [record(1, "test"), record(2, "activate")];
        let (ja, jb) = (
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
        );
        let (ka, kb) = (batch_key(&a, &ja), batch_key(&b, &jb));
        assert_ne!(ka, kb);
        for k in [&ka, &kb] {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
                "{k}"
            );
            assert!(!is_entry_key(k) && k != AUDIT_KEY);
        }
    }

    #[test]
    fn a_hostile_trail_is_read_each_record_once_and_kept_bounded() {
        // Batches full of records of one time (which a sort cannot separate), each
        // written twice (deduplicated by hashing, linear in what the Secret holds):
        // each record once, the newest 200.
        let mut data = BTreeMap::new();
        let records: Vec<AuditRecord> = (0..6_000)
            .map(|i| AuditRecord {
                credential: Some(format!("c{i}")),
                ..record(0, "issue")
            })
            .collect();
        batch(&mut data, &records);
        batch(&mut data, &records[1..]);
        let trail = audit_trail(&data);
        assert_eq!(trail.len(), AUDIT_LIMIT);
        let distinct: std::collections::HashSet<_> = trail.iter().collect();
        assert_eq!(distinct.len(), AUDIT_LIMIT, "each record once");
    }

    #[test]
    fn a_record_from_status_is_bounded() {
        let huge = "x".repeat(100_000);
        let r = bounded(AuditRecord {
            actor: huge.clone(),
            credential: Some(huge.clone()),
            detail: Some(huge),
            ..record(0, "issue")
        });
        assert!(r.actor.len() <= FIELD_LIMIT + 3);
        assert!(r.credential.unwrap().len() <= FIELD_LIMIT + 3);
        assert!(r.detail.unwrap().len() <= DETAIL_LIMIT + 3);
    }

    #[test]
    fn records_from_the_future_are_not_kept() {
        // 200 records dated in year 9900 would otherwise push every real one out.
        let mut data = BTreeMap::new();
        let forged: Vec<AuditRecord> = (0..AUDIT_LIMIT as i64)
            .map(|i| AuditRecord {
                time: chrono::DateTime::from_timestamp(250_000_000_000 + i, 0).unwrap(),
                ..record(0, "activate")
            })
            .collect();
        batch(&mut data, &forged);
        fold_audit(&mut data, &[record(1, "issue")]);
        assert_eq!(actions(&audit_trail(&data)), ["issue"]);
    }
}
