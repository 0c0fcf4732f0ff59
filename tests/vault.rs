//! Never lose a credential: the vault, crash-safe steps (the operator SIGKILLed at
//! every step of a dual-phase and a single-phase rotation), orphan sweep, emergency
//! revoke, expiry, key rotation and the audit trail — on the real API server with the
//! vendor fakes.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rotor::api::SecretRotation;
use std::time::Duration;
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "supabase-secret-key";
const TARGET: &str = "supabase-secret-key";
const KEY: &str = "SUPABASE_SECRET_KEY";

/// Waits until the operator stops at its failpoint, then SIGKILLs it.
async fn kill_at_failpoint(op: &Operator, point: &str) {
    wait_log(op, "failpoint reached", point).await;
    op.kill();
}

/// The vendor's record: how many keys it issued, which ids it deleted, which are live.
fn vendor_record(fake: &fakes::Fake<fakes::Supabase>) -> (u32, Vec<String>, Vec<String>) {
    let vendor = fake.lock();
    let live = vendor.live().iter().map(|k| k.id.clone()).collect();
    (vendor.creates, vendor.deleted_ids.clone(), live)
}

/// Two good rotations, then a third killed at `point`, then a restart: the third
/// completes exactly once — issued once, or (killed before the vault kept it) the
/// leftover deleted by name and issued once more; nothing issued a second time once
/// the vault holds it — the Secret holds a live key, the vendor holds exactly the two
/// slot keys (before any orphan sweep could clean up, and after), the status tells
/// the truth.
async fn dual_phase_crash_at(point: &str) {
    let client = control_plane().client().await;
    let ns = namespace(&client, &format!("crash-dual-{}", point.replace('_', "-"))).await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let crash = format!("{point}@3");
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", crash.as_str())]);
    apply_supabase_sample(&client, &ns, &fake).await;
    rotated(&client, &ns, NAME, 1).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    let s2 = rotated(&client, &ns, NAME, 2).await;
    let k2 = value(&client, &ns, TARGET, KEY).await.unwrap();
    let k1_id = s2.slots[0].id.clone();
    assert_eq!(
        vendor_record(&fake).0,
        2,
        "{point}: two rotations, two keys"
    );
    request(&client, &ns, NAME, "rotor.dev/rotate", "three").await;
    kill_at_failpoint(&op, point).await;
    // The key the killed rotation issued, if it got that far.
    let (creates_at_kill, deleted_at_kill, _) = vendor_record(&fake);
    let issued_before_kill = !matches!(point, "after_intent" | "after_revoke_old");
    assert_eq!(
        creates_at_kill,
        if issued_before_kill { 3 } else { 2 },
        "{point}: the killed rotation issued {creates_at_kill} keys in all"
    );
    let killed_key = issued_before_kill.then(|| fake.lock().keys[2].id.clone());
    let revoked_before_kill = point != "after_intent";
    assert_eq!(
        deleted_at_kill,
        if revoked_before_kill {
            vec![k1_id.clone()]
        } else {
            vec![]
        },
        "{point}: what the killed rotation revoked"
    );

    // The restarted operator stops right after it commits the rotation (status
    // written, before the Event and the orphan sweep that follow): what the vendor was
    // asked so far is the resumed rotation's work alone.
    let hold = Hold::new(&ns);
    hold.arm();
    let op = Operator::start_env(
        &ns,
        FAST,
        &[
            ("ROTOR_TEST_PAUSE_AT", "after_flip@3"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    );
    let s3 = rotated(&client, &ns, NAME, 3).await;
    if point != "after_flip" {
        wait_log(&op, "failpoint paused", point).await;
        assert_eq!(
            metric(&op, r#"rotor_orphan_sweeps_total{provider="supabase"}"#).await,
            None,
            "{point}: no orphan sweep has run yet"
        );
    }
    let (creates, deleted, live) = vendor_record(&fake);
    // Killed before the vault kept it: the leftover is deleted by name and the key
    // issued afresh. Killed later: the kept key is resumed, never issued again.
    let (want_creates, want_deleted) = match &killed_key {
        Some(leftover) if point == "before_vault" => (4, vec![k1_id.clone(), leftover.clone()]),
        _ => (3, vec![k1_id.clone()]),
    };
    assert_eq!(
        creates, want_creates,
        "{point}: keys the vendor issued in all (a second issue of rotation 3?)"
    );
    assert_eq!(
        deleted, want_deleted,
        "{point}: exactly these keys were deleted at the vendor"
    );
    if let Some(kept) = killed_key.as_ref().filter(|_| point != "before_vault") {
        assert_eq!(
            s3.slots[0].id, *kept,
            "{point}: the key the killed rotation issued and kept is the one activated"
        );
    }
    let slot_ids: Vec<String> = s3.slots.iter().map(|s| s.id.clone()).collect();
    let mut sorted_live = live.clone();
    sorted_live.sort();
    let mut sorted_slots = slot_ids.clone();
    sorted_slots.sort();
    assert_eq!(
        sorted_live, sorted_slots,
        "{point}: before any sweep, the vendor holds exactly the two slot keys"
    );
    if matches!(point, "after_vault" | "after_test" | "after_secret") {
        let audit = audit_text(&ns, NAME);
        assert!(
            audit.contains("resumed from the escrow"),
            "{point}: the audit trail records the resume:\n{audit}"
        );
    }
    hold.release();

    let k3 = value(&client, &ns, TARGET, KEY).await.unwrap();
    // The sweep that follows the resumed rotation (or, after the flip, the one at
    // start) finds nothing to revoke: the vendor's record is unchanged.
    wait_metric(
        &op,
        r#"rotor_orphan_sweeps_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        vendor_record(&fake),
        (creates, deleted.clone(), live.clone()),
        "{point}: the sweep had nothing to clean up"
    );
    let live: Vec<(String, String)> = fake
        .lock()
        .live()
        .iter()
        .map(|k| (k.id.clone(), k.api_key.clone()))
        .collect();
    assert_eq!(
        live.len(),
        2,
        "{point}: the vendor holds exactly the two slot keys: {live:?}"
    );
    assert!(
        live.iter().any(|(_, k)| *k == k3),
        "{point}: the Secret holds a live key"
    );
    assert_eq!(
        value(&client, &ns, TARGET, &format!("{KEY}_PREVIOUS"))
            .await
            .as_deref(),
        Some(k2.as_str()),
        "{point}"
    );
    assert_eq!(s3.active_index, 0, "{point}");
    assert_eq!(
        s3.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &k3).await,
        "{point}: status is truthful"
    );
    assert_eq!(s3.slots[1].id, s2.slots[1].id, "{point}");
    assert!(s3.in_flight.is_none());
    // Status counts rotations; Events are at most once per rotation (a kill after the
    // status commit and before the Event loses that Event, never doubles one).
    // (Read after the sweep above: the reconcile that published an Event, or would have
    // published a doubled one, sweeps only after publishing.)
    let after_commit = point == "after_flip";
    let reasons = event_reasons(&client, &ns, NAME).await;
    let events = reasons.iter().filter(|r| *r == "Rotated").count();
    assert_eq!(
        events,
        if after_commit { 2 } else { 3 },
        "{point}: one Event per completed rotation: {reasons:?}"
    );
    // Nothing rotated again: still three rotations, the same slots, no new key.
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!(s.rotation_count, 3, "{point}");
    assert_eq!(s.slots, s3.slots, "{point}");
    assert_eq!(fake.lock().creates, creates, "{point}: no further issue");
    let all: Vec<String> = fake.lock().keys.iter().map(|k| k.api_key.clone()).collect();
    assert_no_leak(&client, &ns, NAME, &op.logs(), &all).await;
    let audit = audit_text(&ns, NAME);
    for v in &all {
        assert!(!audit.contains(v.as_str()), "a value in the audit trail");
    }
}

macro_rules! dual_phase_crash_tests {
    ($($test:ident => $point:literal),* $(,)?) => {
        $(#[tokio::test]
        async fn $test() {
            dual_phase_crash_at($point).await;
        })*
    };
}

dual_phase_crash_tests! {
    dual_phase_killed_after_intent => "after_intent",
    dual_phase_killed_after_revoking_the_old_key => "after_revoke_old",
    dual_phase_killed_after_issue_before_the_vault => "before_vault",
    dual_phase_killed_after_the_vault => "after_vault",
    dual_phase_killed_after_the_test => "after_test",
    dual_phase_killed_after_the_secret_write => "after_secret",
    dual_phase_killed_after_the_flip => "after_flip",
}

/// A single-phase (Convox) rotation killed at `point`, then a restart: the rack, the
/// admin Secret and the target Secret agree on one working key; one rotation counted.
async fn single_phase_crash_at(point: &str) {
    let client = control_plane().client().await;
    let ns = namespace(
        &client,
        &format!("crash-single-{}", point.replace('_', "-")),
    )
    .await;
    let initial = "InitialRackKey0123456789";
    let fake = fakes::convox(initial).await;
    let crash = format!("{point}@1");
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", crash.as_str())]);
    let manifest = sample("convox.yaml")
        .replace("https://rack.example.com", &fake.url)
        .replace("REPLACE_WITH_THE_CURRENT_RACK_API_KEY", initial);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    kill_at_failpoint(&op, point).await;
    let _op = Operator::start_with(&ns, FAST);
    let s = rotated(&client, &ns, "convox-rack-key", 1).await;
    let key = value(&client, &ns, "convox-rack-key", "CONVOX_PASSWORD")
        .await
        .unwrap();
    assert_eq!(
        fake.lock().password,
        key,
        "{point}: the rack runs with the key in the Secret"
    );
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(
        secret_value(&admin, "rackKey").as_deref(),
        Some(key.as_str()),
        "{point}: rotor holds the rack key"
    );
    assert!(secret_value(&admin, "rackKey.pending").is_none(), "{point}");
    assert_eq!(fake.lock().puts, 1, "{point}: the rack key was set once");
    // Killed once the rack runs the new key: the kept key is resumed from the vault
    // (it passes its test), not left to the pending-admin-key fallback.
    if matches!(point, "after_test" | "after_secret") {
        let audit = audit_text(&ns, "convox-rack-key");
        assert!(
            audit.contains("resumed from the escrow"),
            "{point}: the audit trail records the resume:\n{audit}"
        );
    }
    assert_eq!(
        s.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &key).await
    );
}

macro_rules! single_phase_crash_tests {
    ($($test:ident => $point:literal),* $(,)?) => {
        $(#[tokio::test]
        async fn $test() {
            single_phase_crash_at($point).await;
        })*
    };
}

single_phase_crash_tests! {
    single_phase_killed_after_intent => "after_intent",
    single_phase_killed_after_the_vault_before_the_put => "after_vault",
    single_phase_killed_after_the_test => "after_test",
    single_phase_killed_after_the_secret_write => "after_secret",
    single_phase_killed_after_the_flip => "after_flip",
}

fn audit_text(ns: &str, name: &str) -> String {
    rotor_cli(&["audit", name, "-n", ns])
}

#[tokio::test]
async fn emergency_revoke_leaves_exactly_one_valid_key() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "emergency").await;
    let (fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    rotated(&client, &ns, NAME, 2).await;
    assert_eq!(fake.lock().live().len(), 2);

    request(&client, &ns, NAME, "rotor.dev/revoke", "leaked-2026-11-23").await;
    let s = rotated(&client, &ns, NAME, 3).await;
    let key = value(&client, &ns, TARGET, KEY).await.unwrap();
    let live: Vec<String> = fake
        .lock()
        .live()
        .iter()
        .map(|k| k.api_key.clone())
        .collect();
    assert_eq!(
        live,
        vec![key.clone()],
        "exactly one valid key at the vendor, the one in the Secret"
    );
    assert!(
        value(&client, &ns, TARGET, &format!("{KEY}_PREVIOUS"))
            .await
            .is_none(),
        "no revoked key handed out"
    );
    assert_eq!(s.slots.len(), 1);
    assert_eq!(
        s.last_handled_revoke_token.as_deref(),
        Some("leaked-2026-11-23")
    );
    assert!(
        s.last_rotation_message.starts_with("emergency revoke"),
        "{}",
        s.last_rotation_message
    );
    wait_for_event(
        &client,
        &ns,
        NAME,
        "EmergencyRevoked",
        "every older credential revoked",
        90,
    )
    .await;

    // Handled once: the tokens stay on the object, and a real change to it (a new
    // generation, so a watch event and a reconcile whose status write is visible)
    // neither revokes nor issues again.
    let vendor_before = {
        let v = fake.lock();
        (v.creates, v.deleted_ids.clone())
    };
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let before = api.get(NAME).await.unwrap();
    let generation = before.metadata.generation.unwrap();
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({
            "metadata": {"annotations": {"rotor.dev/rotate": "two", "rotor.dev/revoke": "leaked-2026-11-23"}},
            "spec": {"schedule": {"rotateAtUtc": {"hours": 4, "minutes": 0}}},
        }),
    )
    .await;
    let after = wait_status(&client, &ns, NAME, 90, "the change reconciled", |s| {
        s.observed_generation == Some(generation + 1)
            && s.rotation_status == rotor::api::RotationPhase::Success
            && s.in_flight.is_none()
    })
    .await;
    let now = after.status.unwrap();
    assert_eq!(now.rotation_count, 3, "handled once: {now:?}");
    assert_eq!(
        now.last_rotation_attempted_at, s.last_rotation_attempted_at,
        "no rotation was attempted"
    );
    assert_eq!(now.slots, s.slots);
    let vendor_after = {
        let v = fake.lock();
        (v.creates, v.deleted_ids.clone())
    };
    assert_eq!(
        vendor_after, vendor_before,
        "nothing issued or revoked at the vendor again"
    );
    assert_eq!(
        value(&client, &ns, TARGET, KEY).await.as_deref(),
        Some(key.as_str())
    );
    let audit = audit_text(&ns, NAME);
    assert!(audit.contains("emergency"), "{audit}");
}

#[tokio::test]
async fn orphans_are_swept_periodically_and_counted() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "sweep").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let flags = [FAST, &["--sweep-interval", "2s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    apply_supabase_sample(&client, &ns, &fake).await;
    let s1 = rotated(&client, &ns, NAME, 1).await;
    // The sweep that follows the rotation has finished before the orphans appear.
    wait_metric(
        &op,
        r#"rotor_orphan_sweeps_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    // A key of this resource that is in no slot (what a rotation killed between the
    // vendor's answer and the vault leaves behind), and one of somebody else.
    let prefix = s1.in_flight.as_ref().map_or_else(
        || {
            fake.lock().keys[0]
                .name
                .rsplit_once('_')
                .unwrap()
                .0
                .to_string()
        },
        |f| f.credential_name.clone(),
    );
    {
        let mut vendor = fake.lock();
        for (id, name) in [
            ("orphan-1", format!("{prefix}_99")),
            ("foreign-1", "someone_elses_key".to_string()),
        ] {
            vendor.keys.push(fakes::SupabaseKey {
                id: id.into(),
                name,
                key_type: "secret".into(),
                api_key: format!("sb_secret_{id}_zzzzzzzzzzzz"),
                deleted: false,
            });
        }
    }
    // No rotation needed: the periodic sweep finds it (its counter is the last thing
    // it touches).
    wait_metric(
        &op,
        r#"rotor_orphans_swept_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    let vendor_deleted = fake.lock().deleted_ids.clone();
    assert!(
        vendor_deleted.contains(&"orphan-1".to_string()),
        "{vendor_deleted:?}"
    );
    assert!(
        !vendor_deleted.contains(&"foreign-1".to_string()),
        "never another resource's key"
    );
    assert!(audit_text(&ns, NAME).contains("orphan sweep"));
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!(s.rotation_count, 1, "a sweep is not a rotation");
    assert_eq!(s.slots, s1.slots, "the slot keys are left alone");
    let live: Vec<String> = fake.lock().live().iter().map(|k| k.id.clone()).collect();
    assert!(
        live.contains(&s1.slots[0].id) && live.contains(&"foreign-1".to_string()),
        "{live:?}"
    );
}

#[tokio::test]
async fn the_vault_keeps_values_encrypted_expires_revoked_entries_and_survives_key_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "vault").await;
    let (_fake, _op, s) = supabase_rotated(
        &client,
        &ns,
        &[FAST, &["--escrow-retention", "1s"]].concat(),
    )
    .await;
    assert_eq!(
        s.escrow.as_ref().map(|v| (v.entries, v.problem.clone())),
        Some((1, None))
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let vault = secrets.get(&format!("rotor-escrow-{NAME}")).await.unwrap();
    let raw = serde_json::to_string(&vault.data).unwrap();
    let k1 = value(&client, &ns, TARGET, KEY).await.unwrap();
    let decoded: String = vault
        .data
        .as_ref()
        .unwrap()
        .values()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .collect();
    assert!(
        !raw.contains(&k1) && !decoded.contains(&k1),
        "the value is stored encrypted only"
    );
    let owner = &vault.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SecretRotation", Some(false))
    );
    assert!(
        secrets.get_opt("rotor-kek").await.unwrap().is_some(),
        "the KEK Secret lives in the operator namespace"
    );

    // Rotations 2 and 3: rotation 3 revokes key 1; with a 1s retention its entry expires
    // and rotation 4's cleanup deletes it.
    let s2 = rotate(&client, &ns, NAME, "two", 2).await;
    rotate(&client, &ns, NAME, "three", 3).await;
    // Entry 1 is marked revoked after rotation 3's status is written (its retention
    // clock starts then): wait for the mark and for its expiry to pass.
    let id1 = s.slots[0].id.clone();
    wait_expired(&secrets, &id1).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "four").await;
    let s4 = rotated(&client, &ns, NAME, 4).await;
    // Entry 1 expired and went with rotation 4's first write; 2 (revoked by rotation
    // 4, retained), 3 and 4 remain.
    assert!(
        vault_entry(&secrets, &id1).await.is_none(),
        "the expired entry is deleted"
    );
    assert_eq!(s4.escrow.as_ref().map(|v| v.entries), Some(3), "{s4:?}");
    let entries = secrets
        .get(&format!("rotor-escrow-{NAME}"))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(entries.keys().filter(|k| k.starts_with("e.")).count(), 3);

    // Entry 2 (revoked by rotation 4) expires too, and goes with the next write: the
    // one `keys rotate` makes. (Waited for, so that what follows does not race it.)
    wait_expired(&secrets, &s2.slots[1].id).await;
    // keys rotate: a new KEK version, every DEK re-wrapped, everything still readable.
    let said = rotor_cli(&["keys", "rotate", "-n", &ns]);
    assert!(said.starts_with("KEK v2 added"), "{said}");
    assert!(
        said.contains("2 data keys re-wrapped, 0 failed"),
        "the expired entry is dropped, not counted: {said}"
    );
    assert!(
        vault_entry(&secrets, &s2.slots[1].id).await.is_none(),
        "the expired entry 2 went with keys rotate's write"
    );
    let vault = secrets.get(&format!("rotor-escrow-{NAME}")).await.unwrap();
    let mut checked = 0;
    for (k, v) in vault.data.unwrap() {
        if k.starts_with("e.") {
            let entry: serde_json::Value = serde_json::from_slice(&v.0).unwrap();
            assert_eq!(entry["sealed"]["kekVersion"], 2, "{k} re-wrapped");
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "every entry checked");
    // Removing the old KEK keeps everything readable (all re-wrapped) ...
    secrets
        .patch(
            "rotor-kek",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"v1": null}})),
        )
        .await
        .unwrap();
    // A reconcile that provably ran after the removal (it saw the next generation)
    // checked every entry against the KEKs left.
    let s = reconciled_after_change(&client, &ns, 5).await;
    assert_eq!(
        s.escrow.as_ref().map(|v| (v.entries, v.problem.clone())),
        Some((2, None)),
        "every entry still opens without v1"
    );
    // ... removing the current one makes the entries unreadable, and status says so.
    secrets.patch("rotor-kek", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"v3": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "v2": null}}))).await.unwrap();
    request(&client, &ns, NAME, "poke", "2").await;
    let s = wait_status(&client, &ns, NAME, 90, "vault problem reported", |s| {
        s.escrow.as_ref().is_some_and(|v| v.problem.is_some())
    })
    .await;
    let problem = s.status.unwrap().escrow.unwrap().problem.unwrap();
    assert!(problem.contains("key_version_unavailable"), "{problem}");

    // An entry that claims the current KEK (version and recorded KEK id) but was
    // sealed under another fails loudly.
    let vault = secrets.get(&format!("rotor-escrow-{NAME}")).await.unwrap();
    let mut tampered = serde_json::Map::new();
    for (k, v) in vault
        .data
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("e."))
    {
        let mut entry: serde_json::Value = serde_json::from_slice(&v.0).unwrap();
        entry["sealed"]["kekVersion"] = 3.into();
        entry["sealed"]["kekId"] = rotor::vault::envelope::kek_id(&[0; 32]).into();
        tampered.insert(k, base64_of(&serde_json::to_vec(&entry).unwrap()).into());
    }
    let patch = serde_json::json!({ "data": tampered });
    secrets
        .patch(
            &format!("rotor-escrow-{NAME}"),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .unwrap();
    request(&client, &ns, NAME, "poke", "3").await;
    let s = wait_status(&client, &ns, NAME, 90, "tampering reported", |s| {
        s.escrow
            .as_ref()
            .and_then(|v| v.problem.as_deref())
            .is_some_and(|p| p.contains("failed authentication"))
    })
    .await;
    assert!(
        s.status
            .unwrap()
            .escrow
            .unwrap()
            .problem
            .unwrap()
            .contains("failed authentication")
    );

    let audit = audit_text(&ns, NAME);
    for action in ["issue", "test", "activate", "revoke", "key-rotation"] {
        assert!(audit.contains(action), "audit lacks {action}:\n{audit}");
    }
}

/// The vault entry of credential `id`, as JSON.
async fn vault_entry(secrets: &Api<Secret>, id: &str) -> Option<serde_json::Value> {
    let vault = secrets.get(&format!("rotor-escrow-{NAME}")).await.unwrap();
    vault
        .data
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("e."))
        .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(&v.0).unwrap())
        .find(|e| e["id"] == id)
}

/// Waits (bounded) until credential `id`'s vault entry is marked revoked and its
/// retention has passed.
async fn wait_expired(secrets: &Api<Secret>, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let entry = vault_entry(secrets, id).await.expect("the entry is kept");
        let expires = entry["expiresAt"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        if expires.is_some_and(|t| t < chrono::Utc::now()) {
            assert!(entry["revokedAt"].is_string(), "{entry}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "entry {id} never expired: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Changes the spec (the hour of the schedule: no rotation) and waits until a
/// reconcile of that generation has finished: its status is what rotor sees now.
async fn reconciled_after_change(
    client: &kube::Client,
    ns: &str,
    hours: u32,
) -> rotor::api::SecretRotationStatus {
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), ns);
    let patched = api
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"schedule": {"rotateAtUtc": {"hours": hours}}}}),
            ),
        )
        .await
        .unwrap();
    let generation = patched.metadata.generation.unwrap();
    wait_status(client, ns, NAME, 90, "the change reconciled", |s| {
        s.observed_generation >= Some(generation)
            && s.rotation_status == rotor::api::RotationPhase::Success
            && s.in_flight.is_none()
    })
    .await
    .status
    .unwrap()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn deletion_policy_revoke_revokes_both_slots_and_retain_keeps_them() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "deletion").await;
    let (fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    rotate(&client, &ns, NAME, "two", 2).await;
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);

    // Retain (the default): deleting keeps both keys working.
    let retained = api.get(NAME).await.unwrap();
    assert!(
        retained.metadata.finalizers.is_none(),
        "no finalizer with Retain"
    );
    // Revoke: a finalizer holds the deletion until both slots are revoked.
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({"spec": {"deletionPolicy": "Revoke"}}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while api.get(NAME).await.unwrap().metadata.finalizers.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the finalizer was never added"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fake.lock().live().len(), 2);
    api.delete(NAME, &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while api.get_opt(NAME).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "deletion never completed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        fake.lock().live().is_empty(),
        "both slots revoked before the resource went away"
    );
    let reasons = event_reasons(&client, &ns, NAME).await;
    assert!(
        reasons.contains(&"RevokedOnDelete".to_string()),
        "{reasons:?}"
    );

    // Retain: a second resource deleted without the policy leaves its key alive.
    let manifest = sample("supabase.yaml")
        .replace("https://api.supabase.com", &fake.url)
        .replace(
            "sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN",
            &fake.lock().admin_token.clone(),
        )
        .replace("name: supabase-secret-key\nspec", "name: kept\nspec")
        .replace(
            "rotor.dev/allow-read: supabase-secret-key",
            "rotor.dev/allow-read: supabase-secret-key,kept",
        )
        .replace(
            "    name: supabase-secret-key\n    keepPrevious",
            "    name: kept-secret\n    keepPrevious",
        );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "kept", 1).await;
    api.delete("kept", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while api.get_opt("kept").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        fake.lock().live().len(),
        1,
        "Retain keeps the credential working"
    );
}

/// README "The vault": every vault write but a new entry's is a patch with the
/// resourceVersion last seen as a precondition, retried on conflict. rotor is held
/// between seeing its vault and writing it (during rotation 2) while a second writer —
/// `rotor keys rotate`, which re-wraps the entries and appends to the audit trail —
/// writes the same Secret: neither write is lost.
#[tokio::test]
async fn a_second_writer_between_the_vaults_read_and_write_loses_nothing() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "vault-writers").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let hold = Hold::new(&ns);
    let _op = Operator::start_env(
        &ns,
        FAST,
        &[
            ("ROTOR_TEST_VAULT_PAUSE", "vault_write"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    );
    apply_supabase_sample(&client, &ns, &fake).await;
    let s1 = rotated(&client, &ns, NAME, 1).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let id1 = s1.slots[0].id.clone();
    assert_eq!(
        vault_entry(&secrets, &id1).await.unwrap()["sealed"]["kekVersion"],
        1
    );

    // Rotation 2 writes its entry blind (one key, no read): nothing to race with.
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    let s2 = rotated(&client, &ns, NAME, 2).await;
    let id2 = s2.slots[1].id.clone();

    hold.arm();
    request(&client, &ns, NAME, "rotor.dev/rotate", "three").await;
    hold.wait_paused("vault_write", 1).await;
    // Rotation 3 revoked entry 1's key and has read the vault to store its entry with
    // that mark, about to write it back: the second writer goes first, re-wrapping
    // both entries.
    let said = rotor_cli(&["keys", "rotate", "-n", &ns]);
    assert!(said.starts_with("KEK v2 added"), "{said}");
    assert!(said.contains("2 data keys re-wrapped, 0 failed"), "{said}");
    hold.release();

    let s3 = rotated(&client, &ns, NAME, 3).await;
    // The second writer's write survived rotor's ...
    let entry1 = vault_entry(&secrets, &id1).await.unwrap();
    assert_eq!(
        entry1["sealed"]["kekVersion"], 2,
        "entry 1 stays re-wrapped under v2"
    );
    assert!(
        entry1["revokedAt"].is_string(),
        "and carries rotation 3's revoked mark: {entry1}"
    );
    assert_eq!(
        vault_entry(&secrets, &id2).await.unwrap()["sealed"]["kekVersion"],
        2,
        "entry 2 stays re-wrapped under v2"
    );
    let audit = audit_text(&ns, NAME);
    assert!(audit.contains("key-rotation"), "{audit}");
    // ... and rotor's own write (retried on the conflict) is there too.
    let id3 = s3.slots[0].id.clone();
    assert!(
        vault_entry(&secrets, &id3).await.is_some(),
        "rotation 3's credential is kept"
    );
    // Every live entry opens — also for rotation 3's own status, although the
    // rotation loaded the KEKs before `keys rotate` added v2 (it reads them again).
    assert_eq!(
        s3.escrow.as_ref().map(|v| (v.entries, v.problem.clone())),
        Some((3, None)),
        "rotation 3's status: every live entry opens"
    );
    let fresh = reconciled_after_change(&client, &ns, 5).await;
    assert_eq!(
        fresh.escrow.map(|v| (v.entries, v.problem)),
        Some((3, None)),
        "every live entry opens"
    );
}

/// README: `--sweep-interval 0s` turns the periodic sweep off — orphans are swept only
/// after a rotation and when the operator starts.
#[tokio::test]
async fn sweep_interval_zero_sweeps_only_after_rotations_and_at_start() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "sweep-off").await;
    let flags = [FAST, &["--sweep-interval", "0s"]].concat();
    let (fake, op, _) = supabase_rotated(&client, &ns, &flags).await;
    let sweeps = r#"rotor_orphan_sweeps_total{provider="supabase"}"#;
    wait_metric(&op, sweeps, 1.0).await;
    let prefix = fake.lock().keys[0]
        .name
        .rsplit_once('_')
        .unwrap()
        .0
        .to_string();
    let plant = |id: &str, n: u32| {
        fake.lock().keys.push(fakes::SupabaseKey {
            id: id.into(),
            name: format!("{prefix}_{}", 90 + n),
            key_type: "secret".into(),
            api_key: format!("sb_secret_{id}_zzzzzzzzzzzz"),
            deleted: false,
        });
    };
    plant("orphan-1", 1);
    let swept_so_far = metric(&op, sweeps).await;
    // A window in which a 1 s interval would have swept several times: nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(metric(&op, sweeps).await, swept_so_far, "no periodic sweep");
    assert!(!fake.lock().deleted_ids.contains(&"orphan-1".to_string()));

    // A rotation sweeps after itself.
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    rotated(&client, &ns, NAME, 2).await;
    wait_metric(
        &op,
        r#"rotor_orphans_swept_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    assert!(fake.lock().deleted_ids.contains(&"orphan-1".to_string()));

    // A start sweeps once.
    op.stop().await;
    plant("orphan-2", 2);
    let op = Operator::start_with(&ns, &flags);
    wait_metric(
        &op,
        r#"rotor_orphans_swept_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    assert!(fake.lock().deleted_ids.contains(&"orphan-2".to_string()));
    assert_eq!(
        status_of(&client, &ns, NAME).await.rotation_count,
        2,
        "no rotation"
    );
}

/// A resource name of 250 characters (Kubernetes allows 253): `rotor-vault-<name>`
/// would have 262 and the owner label may hold 63. Both are bounded with a hash of the
/// name: the resource rotates, its audit trail reads back, and `keys rotate` finds
/// its vault through the owner reference and re-wraps it. Its Events are there too:
/// named `<name>.<hex nanos>` as kube-runtime's Recorder names them (267 characters),
/// the API server refused every one.
#[tokio::test]
async fn a_250_character_name_rotates_has_events_and_keys_rotate_finds_its_vault() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "long-name").await;
    let _op = Operator::start(&ns);
    let name = format!("long-{}", "n".repeat(245));
    assert_eq!(name.len(), 250);
    let manifest =
        sample("random.yaml").replace("  name: session-key\n", &format!("  name: {name}\n"));
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let status = rotated(&client, &ns, &name, 1).await;
    assert_eq!(condition(&status, "Ready").status, "True");
    let event = wait_for_event(&client, &ns, &name, "Rotated", "slot 0 active", 30).await;
    let event_name = event.metadata.name.unwrap();
    assert!(
        event_name.len() <= 253 && event_name.starts_with("long-nnn"),
        "{event_name}"
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let target = secrets.get("app-session-key").await.unwrap();
    assert_eq!(
        secret_value(&target, "SESSION_SECRET").map(|v| v.len()),
        Some(48)
    );
    let label = &target.metadata.labels.as_ref().unwrap()["rotor.dev/secret-rotation"];
    assert!(
        label.len() <= 63 && label.starts_with("long-nnn"),
        "the owner label is a valid, recognisable label value: {label}"
    );
    let vaults = secrets
        .list(&kube::api::ListParams::default().labels("rotor.dev/escrow=true"))
        .await
        .unwrap()
        .items;
    assert_eq!(vaults.len(), 1);
    let vault_name = vaults[0].metadata.name.clone().unwrap();
    assert!(
        vault_name.len() <= 253 && vault_name.starts_with("rotor-escrow-long-nnn"),
        "{vault_name}"
    );
    assert_eq!(vault_name, rotor::vault::vault_secret_name(&name));
    assert_eq!(
        vaults[0].metadata.owner_references.as_ref().unwrap()[0].name,
        name
    );
    assert!(
        audit_text(&ns, &name).contains("activate"),
        "the audit trail reads back"
    );

    let said = rotor_cli(&["keys", "rotate", "-n", &ns]);
    assert!(said.contains("1 data keys re-wrapped, 0 failed"), "{said}");
    // The re-wrapped entry opens: the next rotation keeps the previous value.
    let before = secret_value(&target, "SESSION_SECRET").unwrap();
    rotate(&client, &ns, &name, "after-keys-rotate", 2).await;
    let target = secrets.get("app-session-key").await.unwrap();
    assert_eq!(
        secret_value(&target, "SESSION_SECRET_PREVIOUS"),
        Some(before)
    );
}
