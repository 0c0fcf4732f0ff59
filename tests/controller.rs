//! The controller against a real kube-apiserver: rotation, schedule, manual
//! rotation, conflicts, invalid specs and restarts, as a user sees them.

mod support;

use kube::Api;
use rotor::api::{RotationPhase, SecretRotation, SlotState};
use support::scenario::failed;
use support::*;

const SAMPLE: &str = "session-key";
const TARGET: &str = "app-session-key";

/// A random-provider SecretRotation. These tests rotate seconds apart, so the previous
/// credential may be revoked at once (`minValidity: 0s`); the default's hold is tested
/// in tests/consumers.rs.
fn rotation_yaml(name: &str, target: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: {name}\nspec:\n  provider:\n    random: {{length: 24, charset: hex}}\n  secretsMapping:\n    value: TOKEN\n  target:\n    name: {target}\n    keepPrevious: true\n  revocation: {{minValidity: 0s}}\n{extra_spec}"
    )
}

#[tokio::test]
async fn sample_first_rotation_fills_secret_status_and_events() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "first-rotation").await;
    let op = Operator::start(&ns);
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();

    let sr = wait_status(&client, &ns, SAMPLE, 60, "rotated", |s| {
        s.rotation_status == RotationPhase::Success
    })
    .await;
    let status = sr.status.unwrap();
    let secret = get_secret(&client, &ns, TARGET)
        .await
        .expect("target Secret created");
    let value = secret_value(&secret, "SESSION_SECRET").unwrap();
    assert_eq!(value.len(), 48);
    assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(
        secret_value(&secret, "SESSION_SECRET_PREVIOUS").is_none(),
        "nothing was active before"
    );

    // Status: slot 0 active, fingerprint of the value, times and conditions.
    assert_eq!(status.active_index, 0);
    assert_eq!(status.rotation_count, 1);
    assert_eq!(status.provider.as_deref(), Some("random"));
    assert_eq!(status.slots.len(), 1);
    assert_eq!(
        status.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &value).await
    );
    assert_eq!(status.slots[0].state, SlotState::Active);
    assert!(status.slots[0].id.starts_with("rotor-"));
    let last = status.last_rotated_at.unwrap();
    assert_eq!(status.last_rotation_attempted_at, Some(last));
    let next = status.next_rotation_at.unwrap();
    assert!(next >= last + chrono::Duration::days(30) && next < last + chrono::Duration::days(31));
    assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00");
    assert_eq!(status.observed_generation, sr.metadata.generation);
    assert_eq!(condition(&status, "Ready").status, "True");
    assert_eq!(condition(&status, "Degraded").status, "False");
    assert_eq!(condition(&status, "Progressing").status, "False");
    assert!(status.in_flight.is_none());
    assert!(
        status.last_rotation_message.contains("slot 0 active"),
        "{}",
        status.last_rotation_message
    );
    // The message once in Ready, not again in the conditions that are False.
    assert_eq!(
        condition(&status, "Ready").message,
        status.last_rotation_message
    );
    assert_eq!(
        condition(&status, "Progressing").message,
        "no rotation in progress"
    );
    assert_eq!(condition(&status, "Degraded").message, "no failure");

    // The Secret: owned by the SecretRotation, labelled, template labels applied.
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SecretRotation", SAMPLE, Some(true))
    );
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "rotor");
    assert_eq!(labels["app.kubernetes.io/part-of"], "web");
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["rotor.dev/fingerprint"],
        status.slots[0].fingerprint
    );
    let managers: Vec<_> = secret
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["rotor".to_string()],
        "written by server-side apply as rotor only"
    );

    // Event.
    // Events follow the status commit: wait (bounded) for the first one.
    let reasons = wait_events(&client, &ns, SAMPLE, 1, 10).await;
    assert_eq!(reasons, vec!["Rotated".to_string()]);

    // Printer columns as `kubectl get srot` shows them.
    let table = get_table(&client, &ns).await;
    let cols: Vec<String> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cols,
        [
            "Name",
            "Provider",
            "Status",
            "Active",
            "Last Rotated",
            "Next Rotation",
            "Age"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        (cells[1].as_str(), cells[2].as_str(), cells[3].as_i64()),
        (Some("random"), Some("Success"), Some(0))
    );

    assert_no_leak(&client, &ns, SAMPLE, &op.logs(), &[value]).await;
}

async fn get_table(client: &kube::Client, ns: &str) -> serde_json::Value {
    let req = http::Request::get(format!(
        "/apis/rotor.dev/v1alpha1/namespaces/{ns}/secretrotations"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    client.request(req).await.unwrap()
}

#[tokio::test]
async fn due_rotation_flips_active_slot_and_keeps_previous() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "due-rotation").await;
    let op = Operator::start(&ns);
    apply_yaml(
        &client,
        &ns,
        &rotation_yaml(
            "fast",
            "fast-secret",
            "  schedule: {rotationInterval: 10s}\n",
        ),
    )
    .await
    .unwrap();

    let first = wait_status(&client, &ns, "fast", 60, "rotated once", |s| {
        s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    let v1 = secret_value(
        &get_secret(&client, &ns, "fast-secret").await.unwrap(),
        "TOKEN",
    )
    .unwrap();
    let second = wait_status(&client, &ns, "fast", 40, "rotated twice", |s| {
        s.rotation_count == 2
    })
    .await
    .status
    .unwrap();
    let secret = get_secret(&client, &ns, "fast-secret").await.unwrap();
    let v2 = secret_value(&secret, "TOKEN").unwrap();

    assert_eq!(first.active_index, 0);
    assert_eq!(
        second.active_index, 1,
        "the new credential went into the other slot"
    );
    assert_ne!(v1, v2);
    assert_eq!(
        secret_value(&secret, "TOKEN_PREVIOUS").as_deref(),
        Some(v1.as_str())
    );
    let interval = second.last_rotated_at.unwrap() - first.last_rotated_at.unwrap();
    assert!(
        interval >= chrono::Duration::seconds(10),
        "rotated after {interval} instead of 10s"
    );
    let states: Vec<_> = second.slots.iter().map(|s| (s.index, s.state)).collect();
    assert_eq!(
        states,
        vec![(0, SlotState::Previous), (1, SlotState::Active)]
    );
    assert_eq!(
        second.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &v1).await
    );
    assert_eq!(
        second.slots[1].fingerprint,
        fingerprint_of(&client, &ns, &v2).await
    );
    assert!(
        second.last_rotation_message.contains("slot 0 kept valid"),
        "{}",
        second.last_rotation_message
    );

    // The third rotation reuses slot 0: the value from two rotations ago is gone.
    wait_status(&client, &ns, "fast", 40, "rotated three times", |s| {
        s.rotation_count == 3
    })
    .await;
    let secret = get_secret(&client, &ns, "fast-secret").await.unwrap();
    let v3 = secret_value(&secret, "TOKEN").unwrap();
    assert_eq!(
        secret_value(&secret, "TOKEN_PREVIOUS").as_deref(),
        Some(v2.as_str())
    );
    assert!(![v3.as_str(), v2.as_str()].contains(&v1.as_str()));
    op.kill();
    assert_no_leak(&client, &ns, "fast", &op.logs(), &[v1, v2, v3]).await;
}

#[tokio::test]
async fn manual_annotation_rotates_exactly_once_across_reapplies() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "manual").await;
    let _op = Operator::start(&ns);
    let manifest = |token: &str, label: &str| {
        rotation_yaml(
            "manual",
            "manual-secret",
            "  schedule: {autoRotation: false}\n",
        )
        .replace(
            "  name: manual\n",
            &format!("  name: manual\n  annotations: {{rotor.dev/rotate: \"{token}\"}}\n"),
        )
        .replace(
            "keepPrevious: true\n",
            &format!("keepPrevious: true\n    template: {{labels: {{sync: \"{label}\"}}}}\n"),
        )
    };
    // Created without a token: one rotation fills the Secret, then nothing is scheduled.
    apply_yaml(
        &client,
        &ns,
        &rotation_yaml(
            "manual",
            "manual-secret",
            "  schedule: {autoRotation: false}\n",
        ),
    )
    .await
    .unwrap();
    let s = wait_status(&client, &ns, "manual", 60, "filled", |s| {
        s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    assert!(
        s.next_rotation_at.is_none(),
        "autoRotation: false schedules nothing"
    );

    apply_yaml(&client, &ns, &manifest("token-a", "1"))
        .await
        .unwrap();
    let s = wait_status(&client, &ns, "manual", 90, "rotated by token-a", |s| {
        s.rotation_count == 2
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.last_handled_rotate_token.as_deref(), Some("token-a"));
    let value_after_a = secret_value(
        &get_secret(&client, &ns, "manual-secret").await.unwrap(),
        "TOKEN",
    );

    // Argo CD syncs re-apply the same manifest (same token) with other changes: each is
    // reconciled to rest with no rotation attempted.
    for sync in 2..=4 {
        let applied = apply_yaml(&client, &ns, &manifest("token-a", &sync.to_string()))
            .await
            .unwrap();
        let generation = applied[0].metadata.generation;
        support::scenario::settled_without_rotation(&client, &ns, "manual", generation, &s).await;
    }
    let secret = get_secret(&client, &ns, "manual-secret").await.unwrap();
    assert_eq!(secret_value(&secret, "TOKEN"), value_after_a);
    assert_eq!(
        secret.metadata.labels.unwrap()["sync"],
        "4",
        "template changes reach the Secret without a rotation"
    );

    apply_yaml(&client, &ns, &manifest("token-b", "4"))
        .await
        .unwrap();
    wait_status(&client, &ns, "manual", 90, "rotated by token-b", |s| {
        s.rotation_count == 3
    })
    .await;
    // One Rotated Event per rotation, nothing else (an `all()` over a list read
    // without waiting passed with no Event at all).
    let reasons = wait_events(&client, &ns, "manual", 3, 60).await;
    assert_eq!(reasons, vec!["Rotated"; 3]);
}

#[tokio::test]
async fn foreign_secret_is_never_overwritten() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "conflict").await;
    let _op = Operator::start(&ns);
    apply_yaml(&client, &ns, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: precious\nstringData:\n  TOKEN: hand-made-value-1234\n").await.unwrap();
    apply_yaml(&client, &ns, &rotation_yaml("grabby", "precious", ""))
        .await
        .unwrap();

    let s = failed(&client, &ns, "grabby").await;
    assert!(
        s.last_rotation_message
            .contains("\"precious\" exists and is not managed by this SecretRotation"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(condition(&s, "Degraded").reason, "TargetConflict");
    assert_eq!(condition(&s, "Ready").status, "False");
    assert!(s.slots.is_empty(), "nothing issued");
    let secret = get_secret(&client, &ns, "precious").await.unwrap();
    assert_eq!(
        secret_value(&secret, "TOKEN").as_deref(),
        Some("hand-made-value-1234")
    );
    assert!(secret.metadata.owner_references.is_none());
    wait_events(&client, &ns, "grabby", 1, 10).await;
    let events = events_for(&client, &ns, "grabby").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].type_.as_deref(), events[0].reason.as_deref()),
        (Some("Warning"), Some("TargetConflict"))
    );
}

#[tokio::test]
async fn invalid_specs_get_a_clear_status_and_recover_when_fixed() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "invalid").await;
    let op = Operator::start(&ns);

    // What the schema can express is refused by the API server itself.
    for (bad, why) in [
        ("  schedule: {rotateAtUtc: {hours: 24}}\n", "hours"),
        (
            "  schedule: {rotationInterval: \"thirty days\"}\n",
            "rotationInterval",
        ),
    ] {
        let err = apply_yaml(&client, &ns, &rotation_yaml("bad", "bad-secret", bad))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    let no_provider = rotation_yaml("bad", "bad-secret", "")
        .replace("    random: {length: 24, charset: hex}\n", "    {}\n");
    assert!(
        apply_yaml(&client, &ns, &no_provider).await.is_err(),
        "a provider is required"
    );

    // What only rotor can judge ends in status.
    let unknown_output =
        rotation_yaml("wrong", "wrong-secret", "").replace("value: TOKEN", "apiKey: TOKEN");
    apply_yaml(&client, &ns, &unknown_output).await.unwrap();
    let s = failed(&client, &ns, "wrong").await;
    assert_eq!(
        s.last_rotation_message,
        "invalid spec: spec.secretsMapping names output \"apiKey\", which the random provider does not have (it has: value)"
    );
    assert_eq!(
        (
            condition(&s, "Degraded").status.as_str(),
            condition(&s, "Degraded").reason.as_str()
        ),
        ("True", "InvalidSpec")
    );
    assert!(get_secret(&client, &ns, "wrong-secret").await.is_none());

    let zero = rotation_yaml(
        "zero",
        "zero-secret",
        "  schedule: {rotationInterval: 0d}\n",
    );
    apply_yaml(&client, &ns, &zero).await.unwrap();
    let s = failed(&client, &ns, "zero").await;
    assert!(
        s.last_rotation_message
            .contains("rotationInterval must be greater than zero"),
        "{}",
        s.last_rotation_message
    );

    // No retry storm. Logs and Events are deduplicated and unchanged status writes are
    // skipped, so only the reconcile counter can see a hot loop: over a 5 s window (the
    // operator watches this namespace only, and both resources here wait for a change)
    // it may move by a handful — a requeue every 10 ms would be hundreds.
    let before = reconciles(&op).await;
    assert!(
        before >= 2.0,
        "both invalid resources were reconciled: {before}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let during = reconciles(&op).await - before;
    assert!(
        during <= 4.0,
        "{during} reconciles in 5 s of two resources waiting for a change: a retry storm"
    );
    let events = event_reasons(&client, &ns, "wrong").await;
    assert_eq!(events, vec!["InvalidSpec".to_string()]);
    let s = status_of(&client, &ns, "wrong").await;
    assert!(s.last_rotation_attempted_at.is_none());

    // Fixing the spec recovers.
    apply_yaml(&client, &ns, &rotation_yaml("wrong", "wrong-secret", ""))
        .await
        .unwrap();
    let s = wait_status(&client, &ns, "wrong", 90, "recovered", |s| {
        s.rotation_status == RotationPhase::Success
    })
    .await
    .status
    .unwrap();
    assert_eq!(condition(&s, "Degraded").status, "False");
    assert!(get_secret(&client, &ns, "wrong-secret").await.is_some());
}

#[tokio::test]
async fn restarted_operator_resumes_without_a_second_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "restart").await;
    let op = Operator::start(&ns);
    apply_yaml(&client, &ns, &rotation_yaml("steady", "steady-secret", ""))
        .await
        .unwrap();
    let s = wait_status(&client, &ns, "steady", 60, "rotated", |s| {
        s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    let value = secret_value(
        &get_secret(&client, &ns, "steady-secret").await.unwrap(),
        "TOKEN",
    )
    .unwrap();
    op.kill();

    // A plain restart: nothing is due, so nothing rotates.
    let op = Operator::start(&ns);
    let applied = apply_yaml(
        &client,
        &ns,
        &rotation_yaml(
            "steady",
            "steady-secret",
            "  schedule: {rotationInterval: 29d}\n",
        ),
    )
    .await
    .unwrap();
    let generation = applied[0].metadata.generation;
    let after =
        support::scenario::settled_without_rotation(&client, &ns, "steady", generation, &s).await;
    assert_eq!(
        secret_value(
            &get_secret(&client, &ns, "steady-secret").await.unwrap(),
            "TOKEN"
        )
        .as_deref(),
        Some(value.as_str())
    );
    op.kill();

    // A crash mid-way: the intent was recorded, then the process died.
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let mut status = after.clone();
    status.rotation_status = RotationPhase::Rotating;
    status.in_flight = Some(rotor::api::InFlightRotation {
        target_index: 1,
        credential_name: "rotor-crashed-2".into(),
        trigger: rotor::api::Trigger::Schedule,
        started_at: chrono::Utc::now(),
    });
    let patch = serde_json::json!({"apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation", "status": status});
    api.patch_status(
        "steady",
        &kube::api::PatchParams::apply("rotor").force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
    .unwrap();

    let op = Operator::start(&ns);
    let resumed = wait_status(&client, &ns, "steady", 90, "resumed", |s| {
        s.rotation_status == RotationPhase::Success
    })
    .await
    .status
    .unwrap();
    assert_eq!(
        resumed.rotation_count, 2,
        "the interrupted rotation completes once"
    );
    assert_eq!(resumed.active_index, 1);
    assert_eq!(
        resumed.slots[1].id, "rotor-crashed-2",
        "resumed under the recorded name"
    );
    assert!(resumed.in_flight.is_none());
    let secret = get_secret(&client, &ns, "steady-secret").await.unwrap();
    assert_eq!(
        secret_value(&secret, "TOKEN_PREVIOUS").as_deref(),
        Some(value.as_str())
    );
    // And stays done: a new generation is reconciled to rest with no second attempt.
    let applied = apply_yaml(
        &client,
        &ns,
        &rotation_yaml(
            "steady",
            "steady-secret",
            "  schedule: {rotationInterval: 28d}\n",
        ),
    )
    .await
    .unwrap();
    support::scenario::settled_without_rotation(
        &client,
        &ns,
        "steady",
        applied[0].metadata.generation,
        &resumed,
    )
    .await;
    assert_no_leak(&client, &ns, "steady", &op.logs(), &[value]).await;
}

#[tokio::test]
async fn damaged_target_secret_is_restored_from_the_vault() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    use support::scenario::{rotate, rotated, value};
    let client = control_plane().client().await;
    let ns = namespace(&client, "restore").await;
    let name = "restore";
    let target = "restore-secret";
    let op = Operator::start(&ns);
    apply_yaml(&client, &ns, &rotation_yaml(name, target, ""))
        .await
        .unwrap();
    rotated(&client, &ns, name, 1).await;
    let before = rotate(&client, &ns, name, "second", 2).await;
    let token = value(&client, &ns, target, "TOKEN").await.unwrap();
    let previous = value(&client, &ns, target, "TOKEN_PREVIOUS").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);

    // The same two credentials back in the Secret (bounded wait).
    let both_back = |secs| {
        let (client, ns, token, previous) =
            (client.clone(), ns.clone(), token.clone(), previous.clone());
        async move {
            wait_value(&client, &ns, target, "TOKEN", &token, secs).await;
            let kept = value(&client, &ns, target, "TOKEN_PREVIOUS").await;
            assert_eq!(kept.as_deref(), Some(previous.as_str()));
        }
    };

    // Deleted while the operator runs: the same two credentials come back.
    secrets.delete(target, &Default::default()).await.unwrap();
    both_back(60).await;
    let restores = r#"rotor_secret_restores_total{provider="random"}"#;
    wait_metric(&op, restores, 1.0).await;

    // Edited by hand: the active credential is put back.
    secrets
        .patch(
            target,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"TOKEN": "typed-by-hand-0001"}})),
        )
        .await
        .unwrap();
    wait_value(&client, &ns, target, "TOKEN", &token, 60).await;
    wait_metric(&op, restores, 2.0).await;

    // Deleted while no operator runs: the next one restores it and says so.
    op.stop().await;
    secrets.delete(target, &Default::default()).await.unwrap();
    let plan = rotor_cli(&["plan", "-n", &ns, name]);
    assert!(
        plan.contains("restore Secret \"restore-secret\" from the escrow"),
        "{plan}"
    );
    let op = Operator::start(&ns);
    both_back(60).await;
    // The note says what happened and that nothing was issued.
    wait_for_event(
        &client,
        &ns,
        name,
        "Restored",
        "was deleted or lost a key: written again from the escrow with the active credential",
        30,
    )
    .await;
    let after = status_of(&client, &ns, name).await;
    assert_eq!(after.rotation_count, 2, "a restore is not a rotation");
    assert_eq!(after.active_index, before.active_index);
    assert_eq!(after.slots, before.slots);
    let trail = rotor::vault::read_audit(&client, &ns, name).await.unwrap();
    assert!(
        trail.iter().any(|r| r.action == "restore"),
        "the audit trail records the restore: {trail:?}"
    );

    wait_metric(&op, restores, 1.0).await;

    // The vault gone as well: only a rotation can refill the Secret.
    op.stop().await;
    secrets.delete(target, &Default::default()).await.unwrap();
    secrets
        .delete(&format!("rotor-escrow-{name}"), &Default::default())
        .await
        .unwrap();
    let op = Operator::start(&ns);
    let refilled = rotated(&client, &ns, name, 3).await;
    assert_eq!(refilled.active_index, 1 - before.active_index);
    let fresh = value(&client, &ns, target, "TOKEN").await.unwrap();
    assert!(fresh != token && fresh != previous);
    wait_for_event(
        &client,
        &ns,
        name,
        "Rotated",
        "(trigger: targetMissing)",
        30,
    )
    .await;
    assert_no_leak(&client, &ns, name, &op.logs(), &[token, previous, fresh]).await;
}

#[test]
fn the_leak_scan_sees_a_value_in_every_form_a_log_can_carry_it() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let value = "s3cr3t/+value?&= with space".to_string();
    let values = [value.clone()];
    let clean = r#"{"msg":"rotated","fingerprint":"hmac-sha256:0a1b2c3d"}"#;
    assert_eq!(find_leak(clean, &values), None);
    for prefix in ["", "x", "xy"] {
        let embedded = format!("{prefix}user:{value}@host");
        for text in [
            STANDARD.encode(&embedded),
            URL_SAFE_NO_PAD.encode(&embedded),
            format!("Basic {}", STANDARD.encode(&embedded)),
        ] {
            assert!(find_leak(&text, &values).is_some(), "missed in {text}");
        }
    }
    let escaped = serde_json::to_string(&value).unwrap();
    assert!(find_leak(&format!("{{\"v\":{escaped}}}"), &values).is_some());
    let url = format!(
        "https://h/?k={}",
        percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
    );
    assert!(find_leak(&url, &values).is_some(), "missed in {url}");
}
