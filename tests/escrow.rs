//! The escrow's move from its name before (`rotor-vault-<name>`, label
//! `rotor.dev/vault`): an upgrade loses no credential and issues none, a move cut short
//! by a crash is finished, a foreign Secret of the old name is never read, copied or
//! deleted — and what a lost `rotor-kek` does (README "The escrow") — on the real API
//! server with the vendor fakes.

mod support;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rotor::api::SecretRotation;
use std::collections::BTreeMap;
use std::time::Duration;
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "supabase-secret-key";
const TARGET: &str = "supabase-secret-key";
const KEY: &str = "SUPABASE_SECRET_KEY";
const NEW: &str = "rotor-escrow-supabase-secret-key";
const OLD: &str = "rotor-vault-supabase-secret-key";

/// The data of Secret `name`, if it exists.
async fn data_of(secrets: &Api<Secret>, name: &str) -> Option<BTreeMap<String, ByteString>> {
    secrets
        .get_opt(name)
        .await
        .unwrap()
        .map(|s| s.data.unwrap_or_default())
}

/// Only the entries (`e.*`) of an escrow's data.
fn entries(data: &BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    data.iter()
        .filter(|(k, _)| k.starts_with("e."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Turns the resource's escrow into what rotor before the escrow kept: the same
/// data, owner references and labels (`rotor.dev/vault` for `rotor.dev/escrow`) under
/// `rotor-vault-<name>`; the escrow itself is deleted. Returns the old Secret.
async fn make_old_style(secrets: &Api<Secret>) -> Secret {
    let escrow = secrets.get(NEW).await.unwrap();
    let mut labels = escrow.labels().clone();
    assert_eq!(
        labels.remove("rotor.dev/escrow").as_deref(),
        Some("true"),
        "{labels:?}"
    );
    labels.insert("rotor.dev/vault".into(), "true".into());
    let old = Secret {
        metadata: ObjectMeta {
            name: Some(OLD.into()),
            labels: Some(labels),
            owner_references: escrow.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: escrow.data.clone(),
        ..Secret::default()
    };
    let created = secrets.create(&PostParams::default(), &old).await.unwrap();
    secrets.delete(NEW, &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while secrets.get_opt(NEW).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the escrow never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    created
}

/// What the vendor issued and deleted so far.
fn vendor(fake: &fakes::Fake<fakes::Supabase>) -> (u32, Vec<String>) {
    let v = fake.lock();
    (v.creates, v.deleted_ids.clone())
}

/// Deletes the target Secret and waits until rotor wrote it again from the escrow.
async fn delete_target_and_wait_restored(client: &Client, ns: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets.delete(TARGET, &Default::default()).await.unwrap();
    wait_for_event(
        client,
        ns,
        NAME,
        "Restored",
        "written again from the escrow",
        90,
    )
    .await;
}

/// The escrow as the move leaves it: rotor's labels, its owner, no moved-from mark,
/// and every entry the old Secret held, unchanged.
async fn assert_moved(
    client: &Client,
    ns: &str,
    secrets: &Api<Secret>,
    want_entries: &BTreeMap<String, ByteString>,
) {
    // Gone: the delete is the move's last API call but one (the mark's removal).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let escrow = secrets.get(NEW).await.unwrap();
        let unmarked = !escrow.annotations().contains_key("rotor.dev/moved-from");
        if unmarked && secrets.get_opt(OLD).await.unwrap().is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the move never finished: old Secret present: {}, escrow annotations {:?}",
            secrets.get_opt(OLD).await.unwrap().is_some(),
            escrow.annotations()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let escrow = secrets.get(NEW).await.unwrap();
    let labels = escrow.labels();
    assert_eq!(
        labels.get("rotor.dev/escrow").map(String::as_str),
        Some("true")
    );
    assert!(!labels.contains_key("rotor.dev/vault"), "{labels:?}");
    assert_eq!(
        labels.get("rotor.dev/secret-rotation").map(String::as_str),
        Some(NAME)
    );
    let uid = Api::<SecretRotation>::namespaced(client.clone(), ns)
        .get(NAME)
        .await
        .unwrap()
        .uid()
        .unwrap();
    assert!(
        escrow.owner_references().iter().any(|r| r.uid == uid),
        "{:?}",
        escrow.owner_references()
    );
    assert_eq!(
        &entries(&escrow.data.unwrap_or_default()),
        want_entries,
        "the escrow holds every entry the old Secret held, unchanged"
    );
    let moved = secrets
        .list(&kube::api::ListParams::default().labels("rotor.dev/vault=true"))
        .await
        .unwrap()
        .items;
    assert!(moved.is_empty(), "nothing left under the old label");
}

/// An upgrade from rotor before the escrow: a resource rotated twice, its store under
/// the old name and label. The new operator (started with the old flag
/// `--vault-retention`, still accepted) moves it the first time it opens it, and
/// restores the deleted target Secret from it: the same credential (fingerprint), no
/// issue, no revoke, no rotation.
#[tokio::test]
async fn an_old_vault_secret_is_moved_to_the_escrow_without_a_new_credential() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "escrow-move").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    let s2 = rotate(&client, &ns, NAME, "two", 2).await;
    op.stop().await;
    let k2 = value(&client, &ns, TARGET, KEY).await.unwrap();
    let before = vendor(&fake);
    let old = make_old_style(&secrets).await;
    let held = entries(old.data.as_ref().unwrap());
    assert_eq!(held.len(), 2, "two credentials kept");

    secrets.delete(TARGET, &Default::default()).await.unwrap();
    let flags = [FAST, &["--vault-retention", "24h"]].concat();
    let _op = Operator::start_with(&ns, &flags);
    wait_for_event(
        &client,
        &ns,
        NAME,
        "Restored",
        "written again from the escrow",
        90,
    )
    .await;
    assert_eq!(
        value(&client, &ns, TARGET, KEY).await.as_deref(),
        Some(k2.as_str()),
        "the active credential, restored from the moved store"
    );
    let s = wait_status(&client, &ns, NAME, 90, "the escrow in status", |s| {
        s.escrow.as_ref().is_some_and(|l| l.entries == 2)
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.escrow.and_then(|l| l.problem), None);
    assert_eq!(s.rotation_count, 2, "no rotation");
    assert_eq!(s.slots, s2.slots, "the same slots");
    assert_eq!(
        s.slots[s.active_index as usize].fingerprint,
        fingerprint_of(&client, &ns, &k2).await
    );
    assert_eq!(vendor(&fake), before, "nothing issued or revoked");
    assert_moved(&client, &ns, &secrets, &held).await;

    // status.vault is gone from the schema: the API server prunes it.
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<SecretRotation>(&()),
    );
    api.patch_status(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"vault": {"entries": 9}}})),
    )
    .await
    .unwrap();
    let raw = api.get_status(NAME).await.unwrap();
    assert!(
        raw.data["status"].get("vault").is_none() && raw.data["status"].get("escrow").is_some(),
        "{}",
        raw.data["status"]
    );
}

/// The operator is killed between the move's two steps (the copy made, the old Secret
/// not yet deleted): both exist. The next operator takes the copy — the only one
/// written from then on — deletes the old one, and the restore gives the same
/// credential back, nothing issued.
#[tokio::test]
async fn a_move_cut_short_by_a_crash_is_finished_and_the_copy_wins() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "escrow-crash").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    let s2 = rotate(&client, &ns, NAME, "two", 2).await;
    op.stop().await;
    let k2 = value(&client, &ns, TARGET, KEY).await.unwrap();
    let before = vendor(&fake);
    let old = make_old_style(&secrets).await;
    let held = entries(old.data.as_ref().unwrap());

    let hold = Hold::new(&ns);
    hold.arm();
    let op = Operator::start_env(
        &ns,
        FAST,
        &[
            ("ROTOR_TEST_VAULT_PAUSE", "vault_move"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    );
    hold.wait_paused("vault_move", 1).await;
    // Both exist: the complete, marked copy and the old Secret, untouched.
    let copy = secrets.get(NEW).await.unwrap();
    assert_eq!(
        copy.annotations().get("rotor.dev/moved-from"),
        Some(&format!(
            "{}/{}",
            old.metadata.uid.as_deref().unwrap(),
            old.resource_version().unwrap()
        )),
        "the copy names the Secret it was made from"
    );
    assert_eq!(copy.data, old.data, "a complete copy");
    assert_eq!(
        secrets.get(OLD).await.unwrap().resource_version(),
        old.resource_version()
    );
    op.stop().await;
    hold.release();

    // The next operator finishes the move when it first opens the store (its first
    // reconcile), and restores from the copy.
    let _op = Operator::start_with(&ns, FAST);
    assert_moved(&client, &ns, &secrets, &held).await;
    delete_target_and_wait_restored(&client, &ns).await;
    assert_eq!(
        value(&client, &ns, TARGET, KEY).await.as_deref(),
        Some(k2.as_str()),
        "the active credential, from the copy"
    );
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!((s.rotation_count, &s.slots), (2, &s2.slots), "no rotation");
    assert_eq!(vendor(&fake), before, "nothing issued or revoked");
}

/// A foreign `rotor-vault-<name>` (someone else's uid in its owner reference, rotor's
/// labels, a copy of the real entries) while the resource has no escrow: never read,
/// copied or deleted. The store is unavailable, as with an impostor under the new
/// name: no restore from it, no credential issued, the Secret byte-for-byte the same.
#[tokio::test]
async fn a_foreign_rotor_vault_secret_is_never_read_copied_or_deleted() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "escrow-foreign").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    rotate(&client, &ns, NAME, "two", 2).await;
    op.stop().await;
    let before = vendor(&fake);
    // The real store, copied under the old name with another resource's uid.
    let escrow = secrets.get(NEW).await.unwrap();
    let mut owners = escrow.metadata.owner_references.clone().unwrap();
    owners[0].uid = "5f0c3a9e-0000-4000-8000-000000000000".into();
    let planted = Secret {
        metadata: ObjectMeta {
            name: Some(OLD.into()),
            labels: Some(BTreeMap::from([
                ("rotor.dev/vault".to_string(), "true".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "rotor".to_string(),
                ),
                ("rotor.dev/secret-rotation".to_string(), NAME.to_string()),
                // Out of other tests' `keys rotate` (each its own KEK namespace).
                ("rotor.dev/kek-namespace".to_string(), ns.clone()),
            ])),
            owner_references: Some(owners),
            ..ObjectMeta::default()
        },
        data: escrow.data.clone(),
        ..Secret::default()
    };
    let planted = secrets
        .create(&PostParams::default(), &planted)
        .await
        .unwrap();
    secrets.delete(NEW, &Default::default()).await.unwrap();
    secrets.delete(TARGET, &Default::default()).await.unwrap();

    let op = Operator::start_with(&ns, FAST);
    wait_status(&client, &ns, NAME, 90, "the store refused", |s| {
        s.last_rotation_message.contains(&format!(
            "Secret {ns}/{OLD} exists and was not created by rotor for SecretRotation \"{NAME}\""
        ))
    })
    .await;
    // A later reconcile does not change its mind.
    request(&client, &ns, NAME, "rotor.dev/rotate", "again").await;
    wait_status(&client, &ns, NAME, 90, "the request handled", |s| {
        s.last_handled_rotate_token.as_deref() == Some("again")
    })
    .await;
    // (A rotation that issues before it first writes the store has its credential
    // deleted by name on the next try, as with an impostor under the new name.)
    let _ = before;
    assert!(
        get_secret(&client, &ns, TARGET).await.is_none(),
        "not restored from someone else's Secret"
    );
    assert!(
        secrets.get_opt(NEW).await.unwrap().is_none(),
        "nothing copied"
    );
    let now = secrets.get(OLD).await.unwrap();
    assert_eq!(
        now.resource_version(),
        planted.resource_version(),
        "untouched"
    );
    assert_eq!(now.data, planted.data);
    assert!(!op.logs().contains("copied the store"), "{}", op.logs());
}

/// `rotor keys rotate` during an upgrade: a store still under its old name is moved
/// like the operator would move it, and re-wrapped there; the credential restores.
#[tokio::test]
async fn keys_rotate_moves_and_rewraps_a_store_not_moved_yet() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "escrow-keys").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    op.stop().await;
    let k1 = value(&client, &ns, TARGET, KEY).await.unwrap();
    make_old_style(&secrets).await;

    let said = rotor_cli(&["keys", "rotate", "-n", &ns]);
    assert!(said.starts_with("KEK v2 added"), "{said}");
    assert!(said.contains("1 data keys re-wrapped, 0 failed"), "{said}");
    assert!(secrets.get_opt(OLD).await.unwrap().is_none(), "moved");
    let escrow = data_of(&secrets, NEW).await.unwrap();
    let held = entries(&escrow);
    assert_eq!(held.len(), 1);
    for v in held.values() {
        let entry: serde_json::Value = serde_json::from_slice(&v.0).unwrap();
        assert_eq!(entry["sealed"]["kekVersion"], 2, "re-wrapped under v2");
    }
    // v1 removed: the re-wrapped entry still opens.
    secrets
        .patch(
            "rotor-kek",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"v1": null}})),
        )
        .await
        .unwrap();
    let before = vendor(&fake);
    let _op = Operator::start_with(&ns, FAST);
    delete_target_and_wait_restored(&client, &ns).await;
    assert_eq!(
        value(&client, &ns, TARGET, KEY).await.as_deref(),
        Some(k1.as_str())
    );
    assert_eq!(vendor(&fake), before);
}

/// README "When `rotor-kek` is lost": the operator makes a new one (a new `v1` and a
/// new fingerprint key) and every entry sealed before needs the lost key: status says
/// so, the target Secret is left as it is (not restorable, not rotated), and the next
/// rotations still work: each revokes the credential it pushes out of the slots, so two
/// rotations leave none of the old credentials valid. What a rotation cannot do is keep
/// the active value as `_PREVIOUS` (its fingerprint was keyed with the lost key).
#[tokio::test]
async fn a_lost_rotor_kek_is_replaced_and_the_next_rotations_revoke_the_old_credentials() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "escrow-lost-kek").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    let s2 = rotate(&client, &ns, NAME, "two", 2).await;
    let k2 = value(&client, &ns, TARGET, KEY).await.unwrap();
    let prev = format!("{KEY}_PREVIOUS");
    let k1 = value(&client, &ns, TARGET, &prev).await.unwrap();
    op.stop().await;
    let old_kek = secrets.get("rotor-kek").await.unwrap();
    secrets
        .delete("rotor-kek", &Default::default())
        .await
        .unwrap();

    let op = Operator::start_with(&ns, FAST);
    let s = wait_status(&client, &ns, NAME, 90, "the escrow problem", |s| {
        s.escrow.as_ref().is_some_and(|l| l.problem.is_some())
    })
    .await
    .status
    .unwrap();
    let problem = s.escrow.unwrap().problem.unwrap();
    assert!(problem.contains("key_version_unavailable"), "{problem}");
    // rotor_kek_available stays 1 (rotor made a new rotor-kek): the per-resource
    // gauge is what RotorEscrowProblem sees.
    let gauge = format!(r#"rotor_escrow_problem{{namespace="{ns}",name="{NAME}"}}"#);
    wait_metric(&op, &gauge, 1.0).await;
    assert_eq!(metric(&op, "rotor_kek_available").await, Some(1.0));
    let kek = secrets.get("rotor-kek").await.unwrap();
    assert_ne!(kek.metadata.uid, old_kek.metadata.uid, "a new rotor-kek");
    let keys: Vec<&String> = kek.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["fingerprint", "v1"]);
    assert_ne!(kek.data, old_kek.data, "new keys");
    assert_eq!((s.rotation_count, &s.slots), (2, &s2.slots), "no rotation");
    assert_eq!(value(&client, &ns, TARGET, KEY).await, Some(k2.clone()));
    assert_eq!(value(&client, &ns, TARGET, &prev).await, Some(k1.clone()));
    assert_eq!(vendor(&fake), (2, vec![]), "nothing issued or revoked");

    // Rotation 3 works: the oldest credential is revoked; the active one stays valid
    // in the previous slot but is no longer handed out as _PREVIOUS.
    let s3 = rotate(&client, &ns, NAME, "three", 3).await;
    let k3 = value(&client, &ns, TARGET, KEY).await.unwrap();
    assert_ne!(k3, k2);
    assert_eq!(value(&client, &ns, TARGET, &prev).await, None);
    assert_eq!(vendor(&fake), (3, vec![s2.slots[0].id.clone()]));
    assert!(s3.slots.iter().any(|sl| sl.id == s2.slots[1].id));
    // Rotation 4 revokes the last credential from before the loss.
    rotate(&client, &ns, NAME, "four", 4).await;
    assert_eq!(
        vendor(&fake),
        (4, vec![s2.slots[0].id.clone(), s2.slots[1].id.clone()])
    );
    assert_eq!(
        value(&client, &ns, TARGET, &prev).await,
        Some(k3),
        "_PREVIOUS is back: rotation 3's fingerprint uses the new key"
    );
    let s = wait_status(&client, &ns, NAME, 90, "no problem left", |s| {
        s.escrow.as_ref().is_some_and(|l| l.problem.is_none())
    })
    .await;
    assert_eq!(s.status.unwrap().rotation_count, 4);
    // The status that cleared the problem is the one exported (right after its write).
    for attempt in 0.. {
        let now = metric(&op, &gauge).await;
        if now == Some(0.0) {
            break;
        }
        assert!(attempt < 300, "{gauge} stayed at {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// An API server whose CRD predates `status.auditTail` drops it from rotor's status
/// write (a warning, not an error): the rotation's audit records then go to the
/// escrow with a write of their own, so `rotor audit` misses none of them.
#[tokio::test]
async fn an_older_crd_without_audit_tail_loses_no_audit_record() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let client = control_plane().client().await;
    let ns = namespace(&client, "old-crd").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = "secretrotations.rotor.dev";
    let original = crds.get(crd_name).await.unwrap();
    let mut older = serde_json::to_value(&original).unwrap();
    let props = &mut older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"];
    assert!(props["auditTail"].is_object(), "the CRD has auditTail now");
    props.as_object_mut().unwrap().remove("auditTail");
    let older: CustomResourceDefinition = serde_json::from_value(older).unwrap();
    crds.replace(crd_name, &PostParams::default(), &older)
        .await
        .unwrap();
    // Until the API server serves the older schema: a probe's tail is pruned.
    let rotations: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let probe = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: probe}\nspec:\n  provider: {random: {}}\n  schedule: {autoRotation: false}\n  secretsMapping: {value: V}\n  target: {name: probe}\n";
    apply_yaml(&client, &ns, probe).await.unwrap();
    let tail = serde_json::json!({"apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
        "status": {"auditTail": [{"time": "2026-01-01T00:00:00Z", "actor": "t", "action": "t"}]}});
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let written = rotations
            .patch_status(
                "probe",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&tail),
            )
            .await
            .unwrap();
        if written.status.is_none_or(|s| s.audit_tail.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the older CRD is never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rotations
        .delete("probe", &Default::default())
        .await
        .unwrap();

    let _op = Operator::start(&ns);
    let manifest = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: token}\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: token-secret}\n  revocation: {minValidity: 0s}\n";
    apply_yaml(&client, &ns, manifest).await.unwrap();
    rotated(&client, &ns, "token", 1).await;
    let s = rotate(&client, &ns, "token", "two", 2).await;
    assert!(s.audit_tail.is_empty(), "the older CRD keeps no tail");
    // Every step of both rotations is in the escrow itself.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let data = data_of(&secrets, "rotor-escrow-token").await.unwrap();
    let activations: usize = data
        .iter()
        .filter(|(k, _)| k.as_str() == "audit" || k.starts_with("audit."))
        .map(|(_, v)| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&v.0)
                .unwrap()
                .iter()
                .filter(|r| r["action"] == "activate")
                .count()
        })
        .sum();
    // Restored before any assertion can fail on it: later tests see today's CRD.
    let mut current = crds.get(crd_name).await.unwrap();
    current.spec = original.spec.clone();
    crds.replace(crd_name, &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(activations, 2, "both activations are in the escrow");
    let audit = rotor_cli(&["audit", "token", "-n", &ns]);
    assert_eq!(audit.matches("activate").count(), 2, "{audit}");
}
