//! The controller under faults and hostile changes, on the real API server with the
//! vendor fakes: emergencies the vendor refuses, restores during outages, Secrets that
//! cannot be written, provider changes and namespace deletion.

mod support;

use rotor::api::RotationPhase;
use std::time::Duration;
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "supabase-secret-key";
const TARGET: &str = "supabase-secret-key";
const KEY: &str = "SUPABASE_SECRET_KEY";

fn previous_key() -> String {
    format!("{KEY}_PREVIOUS")
}

/// The keys the vendor still accepts.
fn live_keys(fake: &fakes::Fake<fakes::Supabase>) -> Vec<String> {
    fake.lock()
        .live()
        .iter()
        .map(|k| k.api_key.clone())
        .collect()
}

fn is_deleted(fake: &fakes::Fake<fakes::Supabase>, id: &str) -> bool {
    fake.lock().key(id).is_some_and(|k| k.deleted)
}

/// Waits (bounded, 60 s) until rotor has put its revoke-on-delete finalizer on `name`.
async fn wait_finalizer(client: &kube::Client, ns: &str, name: &str) {
    let api: kube::Api<rotor::api::SecretRotation> = kube::Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let finalizers = api.get(name).await.unwrap().metadata.finalizers;
        if finalizers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|f| f == "rotor.dev/revoke-on-delete")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}/{name}: rotor did not add its revoke-on-delete finalizer within 60s ({finalizers:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded, `secs`) until `name` is gone.
async fn wait_gone(
    client: &kube::Client,
    ns: &str,
    name: &str,
    secs: u64,
    logs: impl Fn() -> String,
) {
    let api: kube::Api<rotor::api::SecretRotation> = kube::Api::namespaced(client.clone(), ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}/{name}: the deletion was held for {secs}s:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn emergency_revoke_the_vendor_refuses_is_never_reported_done_and_is_retried() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-emergency-refused").await;
    let (fake, _op, first) = supabase_rotated(&client, &ns, FAST).await;
    let leaked = first.slots[0].clone();

    // The vendor answers every DELETE with 500 while the emergency runs.
    fake.lock().knobs.fail_delete = true;
    request(&client, &ns, NAME, "rotor.dev/revoke", "leak-1").await;
    let s = wait_status(&client, &ns, NAME, 60, "emergency incomplete", |s| {
        !s.pending_revocations.is_empty()
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.pending_revocations.len(), 1, "{s:?}");
    assert_eq!(s.pending_revocations[0].id, leaked.id);
    assert_eq!(s.pending_revocations[0].fingerprint, leaked.fingerprint);
    assert_eq!(s.rotation_status, RotationPhase::Failed);
    let degraded = condition(&s, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "EmergencyIncomplete")
    );
    assert!(
        s.last_rotation_message.contains(&leaked.id)
            && s.last_rotation_message.contains(&leaked.fingerprint),
        "the message names the still-live key: {}",
        s.last_rotation_message
    );
    assert_ne!(s.last_handled_revoke_token.as_deref(), Some("leak-1"));
    assert!(!is_deleted(&fake, &leaked.id), "the vendor refused");
    assert!(
        value(&client, &ns, TARGET, &previous_key()).await.is_none(),
        "the leaked key is not handed out as _PREVIOUS"
    );
    let plan = rotor_cli(&["plan", "-n", &ns, NAME]);
    assert!(
        plan.contains(&format!("revoke {}", leaked.id)) && plan.contains("emergency incomplete"),
        "{plan}"
    );
    wait_for_event(&client, &ns, NAME, "EmergencyIncomplete", &leaked.id, 60).await;
    let reasons = event_reasons(&client, &ns, NAME).await;
    assert!(
        !reasons.contains(&"EmergencyRevoked".to_string()),
        "no success while the leaked key is live: {reasons:?}"
    );

    // The vendor heals: the retry (after its backoff) revokes it, and only then is
    // the emergency done.
    fake.lock().knobs.fail_delete = false;
    let s = wait_status(&client, &ns, NAME, 120, "emergency done", |s| {
        s.last_handled_revoke_token.as_deref() == Some("leak-1")
    })
    .await
    .status
    .unwrap();
    assert!(s.pending_revocations.is_empty());
    assert!(is_deleted(&fake, &leaked.id), "the leaked key is gone");
    assert_eq!(s.rotation_status, RotationPhase::Success);
    assert_eq!(condition(&s, "Degraded").status, "False");
    assert_eq!(
        s.rotation_count, 2,
        "the retry revoked, it did not issue again"
    );
    assert_eq!(fake.lock().creates, 2);
    let key = value(&client, &ns, TARGET, KEY).await.unwrap();
    assert_eq!(live_keys(&fake), vec![key]);
    wait_for_event(&client, &ns, NAME, "EmergencyRevoked", "", 60).await;
}

#[tokio::test]
async fn emergency_during_a_vendor_outage_stays_an_emergency_after_the_outage() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-emergency-outage").await;
    let (fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    let s = rotate(&client, &ns, NAME, "two", 2).await;
    let old_ids: Vec<String> = s.slots.iter().map(|s| s.id.clone()).collect();
    assert_eq!(old_ids.len(), 2);

    // Outage: every request fails with 503 until healed.
    fake.lock().knobs.unavailable_next = u32::MAX;
    request(&client, &ns, NAME, "rotor.dev/revoke", "leak-2").await;
    let s = failed(&client, &ns, NAME).await;
    assert_eq!(s.emergency_token.as_deref(), Some("leak-2"), "{s:?}");
    assert_eq!(s.rotation_count, 2);
    fake.lock().knobs.unavailable_next = 0;

    let s = wait_status(&client, &ns, NAME, 120, "emergency done", |s| {
        s.last_handled_revoke_token.as_deref() == Some("leak-2")
    })
    .await
    .status
    .unwrap();
    for id in &old_ids {
        assert!(is_deleted(&fake, id), "old key {id} revoked");
    }
    assert!(
        value(&client, &ns, TARGET, &previous_key()).await.is_none(),
        "no _PREVIOUS value after an emergency"
    );
    let key = value(&client, &ns, TARGET, KEY).await.unwrap();
    assert_eq!(live_keys(&fake), vec![key]);
    assert_eq!(s.slots.len(), 1);
    assert!(
        s.last_rotation_message.starts_with("emergency revoke"),
        "{}",
        s.last_rotation_message
    );
}

#[tokio::test]
async fn emergency_with_an_http_provider_that_cannot_revoke_fails_loudly() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-emergency-norevoke").await;
    let fake = fakes::key_api().await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = http_sample_without_revoke(&fake);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = rotated(&client, &ns, "partner-api-key", 1).await;
    let dropped = s.slots[0].id.clone();
    // Ordinary rotations stay allowed; the first that drops a credential says, once,
    // that it stays valid, and the audit trail records each such drop.
    rotate(&client, &ns, "partner-api-key", "r2", 2).await;
    rotate(&client, &ns, "partner-api-key", "r3", 3).await;
    let s = rotate(&client, &ns, "partner-api-key", "r4", 4).await;
    wait_for_event(
        &client,
        &ns,
        "partner-api-key",
        "RevokeUnsupported",
        &dropped,
        60,
    )
    .await;
    let reasons = event_reasons(&client, &ns, "partner-api-key").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "RevokeUnsupported").count(),
        1,
        "{reasons:?}"
    );
    assert!(
        fake.lock().keys.contains_key(&dropped),
        "nothing claims it was revoked"
    );
    let audit = rotor_cli(&["audit", "partner-api-key", "-n", &ns]);
    assert!(audit.contains("revoke-unsupported"), "{audit}");
    let id = s
        .slots
        .iter()
        .find(|x| x.state == rotor::api::SlotState::Active)
        .unwrap()
        .id
        .clone();

    request(
        &client,
        &ns,
        "partner-api-key",
        "rotor.dev/revoke",
        "leak-3",
    )
    .await;
    let s = failed(&client, &ns, "partner-api-key").await;
    assert!(
        s.last_rotation_message.contains("cannot revoke") && s.last_rotation_message.contains(&id),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(condition(&s, "Degraded").reason, "EmergencyIncomplete");
    assert_ne!(s.last_handled_revoke_token.as_deref(), Some("leak-3"));
    assert!(
        fake.lock().keys.contains_key(&id),
        "still valid, and status says so"
    );
    wait_for_event(
        &client,
        &ns,
        "partner-api-key",
        "EmergencyIncomplete",
        &id,
        60,
    )
    .await;
    let reasons = event_reasons(&client, &ns, "partner-api-key").await;
    assert!(
        !reasons.contains(&"EmergencyRevoked".to_string()),
        "{reasons:?}"
    );
}

async fn delete_secret(client: &kube::Client, ns: &str, name: &str) {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    secrets
        .delete(name, &kube::api::DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn target_deleted_during_a_vendor_outage_is_restored_while_the_vendor_is_down() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-restore-outage").await;
    let (fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    rotate(&client, &ns, NAME, "two", 2).await;
    let active = value(&client, &ns, TARGET, KEY).await.unwrap();
    let previous = value(&client, &ns, TARGET, &previous_key()).await.unwrap();

    // The vendor goes down and a rotation fails: it waits for its retry.
    fake.lock().knobs.unavailable_next = u32::MAX;
    request(&client, &ns, NAME, "rotor.dev/rotate", "three").await;
    let s = failed(&client, &ns, NAME).await;
    assert_eq!(s.failed_attempts, 1);
    let creates = fake.lock().creates;

    // The failed rotation started revoking the previous key (its revoke is what
    // failed): that key left _PREVIOUS before the revoke and stays out.
    assert_eq!(value(&client, &ns, TARGET, &previous_key()).await, None);
    delete_secret(&client, &ns, TARGET).await;
    // Restored from the vault while the vendor is still down: the active key, never
    // the one a rotation has condemned.
    wait_value(&client, &ns, TARGET, KEY, &active, 60).await;
    wait_for_event(
        &client,
        &ns,
        NAME,
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!(s.rotation_count, 2, "no rotation counted");
    assert_eq!(fake.lock().creates, creates, "nothing issued");
    assert_eq!(
        value(&client, &ns, TARGET, &previous_key()).await,
        None,
        "not {previous:?}: a restore never writes back a condemned credential"
    );
}

#[tokio::test]
async fn target_deleted_while_the_admin_secret_is_missing_is_restored() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-restore-noadmin").await;
    let (fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    let active = value(&client, &ns, TARGET, KEY).await.unwrap();

    delete_secret(&client, &ns, "supabase-admin").await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    let s = failed(&client, &ns, NAME).await;
    assert_eq!(condition(&s, "Degraded").reason, "CredentialsMissing");

    delete_secret(&client, &ns, TARGET).await;
    wait_value(&client, &ns, TARGET, KEY, &active, 60).await;
    wait_for_event(
        &client,
        &ns,
        NAME,
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    assert_eq!(status_of(&client, &ns, NAME).await.rotation_count, 1);
    assert_eq!(fake.lock().creates, 1);
}

#[tokio::test]
async fn target_secret_made_immutable_shows_degraded_not_ready() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-immutable").await;
    let (_fake, _op, _) = supabase_rotated(&client, &ns, FAST).await;
    rotate(&client, &ns, NAME, "two", 2).await;
    assert!(value(&client, &ns, TARGET, &previous_key()).await.is_some());

    // Someone makes the Secret immutable; then a spec change needs a write
    // (keepPrevious off: _PREVIOUS goes), which the API server refuses.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &ns);
    secrets
        .patch(
            TARGET,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"immutable": true})),
        )
        .await
        .unwrap();
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({"spec": {"target": {"keepPrevious": false}}}),
    )
    .await;
    let s = wait_status(&client, &ns, NAME, 60, "degraded", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await
    .status
    .unwrap();
    assert_eq!(condition(&s, "Degraded").reason, "SecretWriteFailed");
    assert_eq!(condition(&s, "Ready").status, "False");
    assert_eq!(s.rotation_status, RotationPhase::Failed);
    assert!(
        s.last_rotation_message.contains("immutable"),
        "the API error is in the message: {}",
        s.last_rotation_message
    );
    wait_for_event(&client, &ns, NAME, "SecretWriteFailed", "immutable", 60).await;
}

#[tokio::test]
async fn provider_change_never_revokes_old_credentials_against_the_new_vendor() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-provider-change").await;
    let old_vendor = fakes::supabase("abcdefghijklmnopqrst").await;
    let new_vendor = fakes::supabase("abcdefghijklmnopqrst").await;
    let _op = Operator::start_with(&ns, FAST);
    apply_supabase_sample(&client, &ns, &old_vendor).await;
    rotated(&client, &ns, NAME, 1).await;
    let s = rotate(&client, &ns, NAME, "two", 2).await;
    let old_ids: Vec<String> = s.slots.iter().map(|s| s.id.clone()).collect();
    assert!(s.issued_by.as_deref().unwrap().contains(&old_vendor.url));

    // The same resource now points at another vendor (another baseUrl and token).
    apply_supabase_sample(&client, &ns, &new_vendor).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "three").await;
    let s = wait_status(&client, &ns, NAME, 60, "rotated at the new vendor", |s| {
        s.rotation_status == RotationPhase::Success
            && s.issued_by
                .as_deref()
                .is_some_and(|i| i.contains(&new_vendor.url))
    })
    .await
    .status
    .unwrap();
    rotate(&client, &ns, NAME, "four", s.rotation_count + 1).await;

    {
        let new = new_vendor.lock();
        assert_eq!(
            new.deletes_of_gone, 0,
            "the new vendor was never asked to revoke the old vendor's ids"
        );
        assert!(
            new.deleted_ids.iter().all(|id| !old_ids.contains(id)),
            "{:?}",
            new.deleted_ids
        );
    }
    let event = wait_for_event(
        &client,
        &ns,
        NAME,
        "ProviderChanged",
        "revoke them there by hand",
        60,
    )
    .await;
    let note = event.note.unwrap_or_default();
    for id in &old_ids {
        assert!(note.contains(id.as_str()), "the Event names {id}: {note}");
        assert!(
            old_vendor.lock().live().iter().any(|k| &k.id == id),
            "{id} is still valid at the old vendor (rotor cannot revoke it there)"
        );
    }
    let audit = rotor_cli(&["audit", NAME, "-n", &ns]);
    assert!(audit.contains("forget"), "{audit}");
}

#[tokio::test]
async fn namespace_deletion_with_revoke_policy_is_not_held_for_ever() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "h-ns-delete").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(&ns, FAST);
    apply_supabase_sample(&client, &ns, &fake).await;
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({"spec": {"deletionPolicy": "Revoke"}}),
    )
    .await;
    let s = rotated(&client, &ns, NAME, 1).await;
    let live_id = s.slots[0].id.clone();
    wait_finalizer(&client, &ns, NAME).await;

    // The vendor refuses revokes, and the namespace controller deletes the admin
    // Secret: the revoke can never happen. The namespace must still go.
    fake.lock().knobs.fail_delete = true;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    namespaces
        .delete(&ns, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..600 {
        if namespaces.get_opt(&ns).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        gone,
        "namespace {ns} still there after 120s:\n{}",
        op.logs()
    );
    assert!(
        op.logs().contains("revoke on delete abandoned") && op.logs().contains(&live_id),
        "the operator said what stays valid:\n{}",
        op.logs()
    );
    assert!(
        fake.lock().key(&live_id).is_some_and(|k| !k.deleted),
        "nothing was revoked: the key stays valid, as the log says"
    );
}

#[tokio::test]
async fn deleting_during_an_unfinished_rotation_revokes_the_in_flight_credential_too() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-delete-inflight").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    // The operator dies after rotation 2 issued its key and kept it in the vault.
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", "after_vault@2")]);
    apply_supabase_sample(&client, &ns, &fake).await;
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({"spec": {"deletionPolicy": "Revoke"}}),
    )
    .await;
    rotated(&client, &ns, NAME, 1).await;
    wait_finalizer(&client, &ns, NAME).await;
    let rotations: kube::Api<rotor::api::SecretRotation> =
        kube::Api::namespaced(client.clone(), &ns);
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    let mut stopped = false;
    for _ in 0..600 {
        if op.logs().contains("failpoint reached") {
            op.kill();
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "never reached the failpoint:\n{}", op.logs());
    assert_eq!(fake.lock().live().len(), 2, "slot key and in-flight key");
    assert!(status_of(&client, &ns, NAME).await.in_flight.is_some());

    // Deleted while nothing runs; the next operator revokes on delete.
    rotations.delete(NAME, &Default::default()).await.unwrap();
    let op = Operator::start_with(&ns, FAST);
    wait_gone(&client, &ns, NAME, 90, || op.logs()).await;
    let live: Vec<String> = fake.lock().live().iter().map(|k| k.id.clone()).collect();
    assert!(
        live.is_empty(),
        "the in-flight key was revoked too: {live:?}"
    );
}

#[tokio::test]
async fn a_second_emergency_over_an_incomplete_one_still_revokes_the_first_leak() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-emergency-twice").await;
    let (fake, _op, s) = supabase_rotated(&client, &ns, FAST).await;
    let first = s.slots[0].id.clone();

    fake.lock().knobs.fail_delete = true;
    request(&client, &ns, NAME, "rotor.dev/revoke", "a").await;
    let s = wait_status(&client, &ns, NAME, 60, "first emergency incomplete", |s| {
        s.pending_revocations.len() == 1
    })
    .await
    .status
    .unwrap();
    let second = s.slots[0].id.clone();
    // Another leak is reported before the first emergency completed.
    request(&client, &ns, NAME, "rotor.dev/revoke", "b").await;
    let s = wait_status(&client, &ns, NAME, 60, "both pending", |s| {
        s.pending_revocations.len() == 2
    })
    .await
    .status
    .unwrap();
    let pending: Vec<&str> = s
        .pending_revocations
        .iter()
        .map(|p| p.id.as_str())
        .collect();
    assert!(
        pending.contains(&first.as_str()) && pending.contains(&second.as_str()),
        "{pending:?}"
    );

    fake.lock().knobs.fail_delete = false;
    wait_status(&client, &ns, NAME, 120, "emergency b done", |s| {
        s.last_handled_revoke_token.as_deref() == Some("b")
    })
    .await;
    assert!(is_deleted(&fake, &first) && is_deleted(&fake, &second));
    let key = value(&client, &ns, TARGET, KEY).await.unwrap();
    assert_eq!(live_keys(&fake), vec![key]);

    // Withdrawn: the annotation removed while a revoke is refused. rotor stops
    // retrying and says what stays valid; it never claims it revoked it.
    fake.lock().knobs.fail_delete = true;
    request(&client, &ns, NAME, "rotor.dev/revoke", "c").await;
    let s = wait_status(&client, &ns, NAME, 60, "emergency c incomplete", |s| {
        s.pending_revocations.len() == 1
    })
    .await
    .status
    .unwrap();
    let third = s.pending_revocations[0].id.clone();
    patch_rotation(
        &client,
        &ns,
        NAME,
        serde_json::json!({"metadata": {"annotations": {"rotor.dev/revoke": null}}}),
    )
    .await;
    let event = wait_for_event(&client, &ns, NAME, "EmergencyWithdrawn", &third, 60).await;
    assert!(event.note.unwrap_or_default().contains("still valid"));
    let s = status_of(&client, &ns, NAME).await;
    assert!(s.pending_revocations.is_empty());
    assert_ne!(s.last_handled_revoke_token.as_deref(), Some("c"));
    assert!(!is_deleted(&fake, &third));
}

/// An emergency the old vendor would not finish, then a change of provider: the leaked
/// key is named as still valid at the old vendor, and the pending `rotor.dev/revoke`
/// request never turns into a "successful" emergency that revokes the new vendor's
/// first credential.
#[tokio::test]
async fn provider_change_during_an_incomplete_emergency_reports_no_false_success() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-provider-change-emergency").await;
    let (old_vendor, _op, first) = supabase_rotated(&client, &ns, FAST).await;
    let leaked = first.slots[0].id.clone();
    old_vendor.lock().knobs.fail_delete = true;
    request(&client, &ns, NAME, "rotor.dev/revoke", "leak").await;
    wait_status(&client, &ns, NAME, 60, "emergency incomplete", |s| {
        s.pending_revocations.iter().any(|p| p.id == leaked)
    })
    .await;

    let new_vendor = fakes::supabase("abcdefghijklmnopqrst").await;
    apply_supabase_sample(&client, &ns, &new_vendor).await;
    let s = wait_status(&client, &ns, NAME, 60, "rotated at the new vendor", |s| {
        s.rotation_status == RotationPhase::Success
            && s.issued_by
                .as_deref()
                .is_some_and(|i| i.contains(&new_vendor.url))
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.last_handled_revoke_token.as_deref(), Some("leak"));
    assert!(s.pending_revocations.is_empty());
    // A later rotation settles everything that would follow; still no emergency.
    rotate(&client, &ns, NAME, "after", s.rotation_count + 1).await;
    assert!(
        new_vendor.lock().deleted_ids.is_empty(),
        "the new vendor's credentials were never revoked as 'older'"
    );
    let reasons = event_reasons(&client, &ns, NAME).await;
    assert!(
        !reasons.contains(&"EmergencyRevoked".to_string()),
        "{reasons:?}"
    );
    let event = wait_for_event(&client, &ns, NAME, "ProviderChanged", &leaked, 60).await;
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains("revoke them there by hand")
    );
    assert!(old_vendor.lock().live().iter().any(|k| k.id == leaked));
}

/// `deletionPolicy: Revoke` with an http provider that has no revoke request: the
/// revoke can never happen, so the deletion is not held for ever (nor a Warning
/// published every 30 s): rotor names the key that stays valid and lets it go.
#[tokio::test]
async fn revoke_on_delete_with_a_provider_that_cannot_revoke_gives_up_loudly() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "h-delete-norevoke").await;
    let fake = fakes::key_api().await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = format!(
        "{}  deletionPolicy: Revoke\n",
        http_sample_without_revoke(&fake)
    );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = rotated(&client, &ns, "partner-api-key", 1).await;
    let key = s.slots[0].id.clone();
    wait_finalizer(&client, &ns, "partner-api-key").await;
    let api: kube::Api<rotor::api::SecretRotation> = kube::Api::namespaced(client.clone(), &ns);
    api.delete("partner-api-key", &Default::default())
        .await
        .unwrap();
    // Given up, not held: the provider can never revoke.
    wait_gone(&client, &ns, "partner-api-key", 60, String::new).await;
    let events = events_for(&client, &ns, "partner-api-key").await;
    let abandoned = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("RevokeOnDeleteAbandoned"))
        .expect("a RevokeOnDeleteAbandoned Event");
    let note = abandoned.note.clone().unwrap_or_default();
    assert!(
        note.contains(&key),
        "names the key that stays valid: {note}"
    );
    assert!(
        fake.lock().keys.contains_key(&key),
        "nothing claims it was revoked"
    );
}
