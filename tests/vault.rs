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
    for _ in 0..300 {
        if op.logs().contains("failpoint reached") {
            op.kill();
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the operator never reached failpoint {point}:\n{}",
        op.logs()
    );
}

/// Two good rotations, then a third killed at `point`, then a restart: the third
/// completes exactly once, the Secret holds a live key, the vendor holds exactly the
/// two slot keys, the status tells the truth.
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
    request(&client, &ns, NAME, "rotor.dev/rotate", "three").await;
    kill_at_failpoint(&op, point).await;

    let op = Operator::start_with(&ns, FAST);
    let s3 = rotated(&client, &ns, NAME, 3).await;
    let k3 = value(&client, &ns, TARGET, KEY).await.unwrap();
    // What the vendor holds once the sweep after the resumed rotation has run.
    wait_metric(
        &op,
        r#"rotor_orphan_sweeps_total{provider="supabase"}"#,
        1.0,
    )
    .await;
    let live: Vec<(String, String)> = fake
        .lock()
        .live()
        .iter()
        .map(|k| (k.id.clone(), k.api_key.clone()))
        .collect();
    let slot_ids: Vec<&str> = s3.slots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        live.len(),
        2,
        "{point}: the vendor holds exactly the two slot keys: {live:?}"
    );
    for (id, _) in &live {
        assert!(
            slot_ids.contains(&id.as_str()),
            "{point}: live key {id} is in no slot {slot_ids:?}"
        );
    }
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
    let after_commit = point == "after_flip";
    let reasons = wait_events(&client, &ns, NAME, 3, if after_commit { 3 } else { 10 }).await;
    let events = reasons.iter().filter(|r| *r == "Rotated").count();
    assert_eq!(
        events,
        if after_commit { 2 } else { 3 },
        "{point}: one Event per completed rotation: {reasons:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status_of(&client, &ns, NAME).await.rotation_count, 3);
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
    assert!(
        wait_events(&client, &ns, NAME, 3, 10)
            .await
            .contains(&"EmergencyRevoked".to_string())
    );

    // Handled once: re-applying the same annotation changes nothing.
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&client, &ns, NAME).await.rotation_count, 3);
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
    let (_fake, _op, s) =
        supabase_rotated(&client, &ns, &[FAST, &["--vault-retention", "1s"]].concat()).await;
    assert_eq!(
        s.vault.as_ref().map(|v| (v.entries, v.problem.clone())),
        Some((1, None))
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let vault = secrets.get(&format!("rotor-vault-{NAME}")).await.unwrap();
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
    for (token, n) in [("two", 2), ("three", 3)] {
        request(&client, &ns, NAME, "rotor.dev/rotate", token).await;
        rotated(&client, &ns, NAME, n).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "four").await;
    rotated(&client, &ns, NAME, 4).await;
    // Entry 1 expired and was cleaned up; 2 (revoked, retained), 3 and 4 remain.
    wait_status(&client, &ns, NAME, 30, "three vault entries", |s| {
        s.vault.as_ref().is_some_and(|v| v.entries == 3)
    })
    .await;
    let entries = secrets
        .get(&format!("rotor-vault-{NAME}"))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(entries.keys().filter(|k| k.starts_with("e.")).count(), 3);

    // keys rotate: a new KEK version, every DEK re-wrapped, everything still readable.
    let said = rotor_cli(&["keys", "rotate", "-n", &ns]);
    assert!(said.starts_with("KEK v2 added"), "{said}");
    let vault = secrets.get(&format!("rotor-vault-{NAME}")).await.unwrap();
    for (k, v) in vault.data.unwrap() {
        if k.starts_with("e.") {
            let entry: serde_json::Value = serde_json::from_slice(&v.0).unwrap();
            assert_eq!(entry["sealed"]["kekVersion"], 2, "{k} re-wrapped");
        }
    }
    // Removing the old KEK keeps everything readable (all re-wrapped) ...
    secrets
        .patch(
            "rotor-kek",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"v1": null}})),
        )
        .await
        .unwrap();
    request(&client, &ns, NAME, "poke", "1").await;
    let s = wait_status(&client, &ns, NAME, 30, "vault checked", |s| {
        s.vault.as_ref().is_some_and(|v| v.problem.is_none())
    })
    .await;
    assert!(s.status.unwrap().vault.unwrap().problem.is_none());
    // ... removing the current one makes the entries unreadable, and status says so.
    secrets.patch("rotor-kek", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"v3": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "v2": null}}))).await.unwrap();
    request(&client, &ns, NAME, "poke", "2").await;
    let s = wait_status(&client, &ns, NAME, 30, "vault problem reported", |s| {
        s.vault.as_ref().is_some_and(|v| v.problem.is_some())
    })
    .await;
    let problem = s.status.unwrap().vault.unwrap().problem.unwrap();
    assert!(problem.contains("key_version_unavailable"), "{problem}");

    // An entry that claims the current KEK (version and recorded KEK id) but was
    // sealed under another fails loudly.
    let vault = secrets.get(&format!("rotor-vault-{NAME}")).await.unwrap();
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
            &format!("rotor-vault-{NAME}"),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .unwrap();
    request(&client, &ns, NAME, "poke", "3").await;
    let s = wait_status(&client, &ns, NAME, 30, "tampering reported", |s| {
        s.vault
            .as_ref()
            .and_then(|v| v.problem.as_deref())
            .is_some_and(|p| p.contains("failed authentication"))
    })
    .await;
    assert!(
        s.status
            .unwrap()
            .vault
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while api.get(NAME).await.unwrap().metadata.finalizers.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the finalizer was never added"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fake.lock().live().len(), 2);
    api.delete(NAME, &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
