//! README promises about the controller, each proven on the real API server with the
//! vendor fakes: a refused revoke-on-delete is retried and the finalizer can be
//! removed by hand; `CredentialsMissing` and `TargetConflict` heal once fixed; a key
//! written twice and an admin Secret that is also the target are refused before
//! anything is issued; and the `resourceVersion` precondition keeps a second writer
//! from starting a second rotation.

mod support;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use rotor::api::{RotationPhase, SecretRotation};
use std::time::{Duration, Instant};
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "supabase-secret-key";
const TARGET: &str = "supabase-secret-key";
const ADMIN: &str = "supabase-admin";
const FINALIZER: &str = "rotor.dev/revoke-on-delete";

/// Polls `check` every 200 ms until it is true; fails after `secs` saying `what`.
async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Supabase sample pointed at `fake`, as its two documents (admin Secret,
/// SecretRotation).
fn supabase_docs(fake: &fakes::Fake<fakes::Supabase>) -> (String, String) {
    let admin = fake.lock().admin_token.clone();
    let manifest = sample("supabase.yaml")
        .replace("https://api.supabase.com", &fake.url)
        .replace("sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN", &admin);
    let (secret, rotation) = manifest.split_once("\n---\n").unwrap();
    assert!(secret.contains("kind: Secret") && rotation.contains("kind: SecretRotation"));
    (secret.to_string(), rotation.to_string())
}

fn rotations(client: &kube::Client, ns: &str) -> Api<SecretRotation> {
    Api::namespaced(client.clone(), ns)
}

/// Sets `deletionPolicy: Revoke` and waits until rotor has added its finalizer.
async fn revoke_on_delete(client: &kube::Client, ns: &str) {
    patch_rotation(
        client,
        ns,
        NAME,
        serde_json::json!({"spec": {"deletionPolicy": "Revoke"}}),
    )
    .await;
    let api = rotations(client, ns);
    until(60, "rotor added its revoke-on-delete finalizer", || {
        let api = api.clone();
        async move {
            api.get(NAME)
                .await
                .unwrap()
                .finalizers()
                .iter()
                .any(|f| f == FINALIZER)
        }
    })
    .await;
}

use kube::ResourceExt;

/// The ids in the resource's slots.
fn slot_ids(status: &rotor::api::SecretRotationStatus) -> Vec<String> {
    status.slots.iter().map(|s| s.id.clone()).collect()
}

#[tokio::test]
async fn revoke_on_delete_the_vendor_refuses_is_retried_until_it_accepts() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-revoke-retry").await;
    let (fake, op, _) = supabase_rotated(&client, &ns, FAST).await;
    let s = rotate(&client, &ns, NAME, "two", 2).await;
    let ids = slot_ids(&s);
    assert_eq!(ids.len(), 2, "both slots hold a key");
    revoke_on_delete(&client, &ns).await;

    // The vendor refuses every revoke: the deletion is held, with a Warning that
    // says how to give up.
    fake.lock().knobs.fail_delete = true;
    let api = rotations(&client, &ns);
    api.delete(NAME, &DeleteParams::default()).await.unwrap();
    let warning = wait_for_event(&client, &ns, NAME, "RevokeOnDeleteFailed", "", 60).await;
    let note = warning.note.unwrap_or_default();
    assert!(
        note.contains(&format!("remove the finalizer {FINALIZER}")),
        "{note}"
    );
    // Retried: the vendor is asked again (every 30 s), and the resource stays.
    let asked = fake.lock().requests;
    until(90, "a second revoke attempt after the refusal", || async {
        fake.lock().requests > asked
    })
    .await;
    let held = api.get_opt(NAME).await.unwrap().expect("still held");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.finalizers().iter().any(|f| f == FINALIZER));
    for id in &ids {
        assert!(
            fake.lock().key(id).is_some_and(|k| !k.deleted),
            "{id} is still valid while the vendor refuses"
        );
    }

    // The vendor accepts again: the next retry revokes both slots and lets it go.
    fake.lock().knobs.fail_delete = false;
    until(
        90,
        "the deletion completed after the vendor recovered",
        || {
            let api = api.clone();
            async move { api.get_opt(NAME).await.unwrap().is_none() }
        },
    )
    .await;
    let deleted = fake.lock().deleted_ids.clone();
    for id in &ids {
        assert!(
            deleted.contains(id),
            "{id} revoked: {deleted:?}\n{}",
            op.logs()
        );
    }
    assert!(fake.lock().live().is_empty(), "no key left at the vendor");
    wait_for_event(&client, &ns, NAME, "RevokedOnDelete", "revoked", 60).await;
}

#[tokio::test]
async fn removing_the_finalizer_by_hand_deletes_without_revoking() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-finalizer-hand").await;
    let (fake, _op, s) = supabase_rotated(&client, &ns, FAST).await;
    let id = slot_ids(&s).remove(0);
    revoke_on_delete(&client, &ns).await;
    fake.lock().knobs.fail_delete = true;
    let api = rotations(&client, &ns);
    api.delete(NAME, &DeleteParams::default()).await.unwrap();
    wait_for_event(&client, &ns, NAME, "RevokeOnDeleteFailed", FINALIZER, 60).await;

    // What the Warning says to do: remove the finalizer.
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    until(60, "the deletion went through", || {
        let api = api.clone();
        async move { api.get_opt(NAME).await.unwrap().is_none() }
    })
    .await;
    // Nothing was revoked: the key stays valid at the vendor, as the README says.
    fake.lock().knobs.fail_delete = false;
    assert!(fake.lock().deleted_ids.is_empty());
    assert!(fake.lock().key(&id).is_some_and(|k| !k.deleted));
    assert!(
        !event_reasons(&client, &ns, NAME)
            .await
            .contains(&"RevokedOnDelete".to_string())
    );
}

#[tokio::test]
async fn credentials_missing_heals_once_the_admin_secret_exists() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-creds-missing").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let (admin_secret, rotation) = supabase_docs(&fake);
    let _op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &rotation).await.unwrap();
    let s = failed(&client, &ns, NAME).await;
    assert_eq!(condition(&s, "Degraded").reason, "CredentialsMissing");
    assert!(s.last_rotation_message.contains(ADMIN), "{s:?}");
    assert!(s.slots.is_empty());
    assert_eq!(fake.lock().requests, 0, "the vendor was not called");

    // The admin Secret appears, but does not share itself yet: still missing, now
    // saying why (rotor looked again by itself).
    let unshared = admin_secret
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#')
                && !l.contains("annotations:")
                && !l.contains("rotor.dev/allow-read")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(unshared, admin_secret);
    apply_yaml(&client, &ns, &unshared).await.unwrap();
    let s = wait_status(&client, &ns, NAME, 90, "SecretNotShared", |s| {
        s.last_rotation_message.contains("SecretNotShared")
    })
    .await
    .status
    .unwrap();
    assert_eq!(condition(&s, "Degraded").reason, "CredentialsMissing");
    assert_eq!(fake.lock().requests, 0, "the vendor was not called");

    // Fixed by sharing it, nothing else: no token, no spec change.
    apply_yaml(&client, &ns, &admin_secret).await.unwrap();
    let s = wait_status(&client, &ns, NAME, 90, "rotated once fixed", |s| {
        s.rotation_status == RotationPhase::Success && s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    assert_eq!(condition(&s, "Ready").status, "True");
    assert_eq!(condition(&s, "Degraded").status, "False");
    assert_eq!(fake.lock().creates, 1);
    assert!(
        value(&client, &ns, TARGET, "SUPABASE_SECRET_KEY")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn target_conflict_heals_once_the_foreign_secret_is_gone() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-conflict").await;
    let _op = Operator::start(&ns);
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: precious\nstringData:\n  TOKEN: hand-made-value-1234\n",
    )
    .await
    .unwrap();
    apply_yaml(
        &client,
        &ns,
        "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: grabby\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: precious}\n",
    )
    .await
    .unwrap();
    let s = failed(&client, &ns, "grabby").await;
    assert_eq!(condition(&s, "Degraded").reason, "TargetConflict");
    assert!(s.slots.is_empty());

    // The conflict is removed; rotor looks again by itself (every minute).
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .delete("precious", &DeleteParams::default())
        .await
        .unwrap();
    let s = wait_status(&client, &ns, "grabby", 150, "rotated once fixed", |s| {
        s.rotation_status == RotationPhase::Success && s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    assert_eq!(condition(&s, "Ready").status, "True");
    assert_eq!(condition(&s, "Degraded").status, "False");
    let secret = get_secret(&client, &ns, "precious").await.unwrap();
    let token = secret_value(&secret, "TOKEN").unwrap();
    assert_ne!(token, "hand-made-value-1234");
    assert_eq!(token.len(), 24);
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.name == "grabby" && o.controller == Some(true)),
        "rotor owns the Secret now"
    );
}

/// The PostgreSQL sample (three outputs) as `name`, with `mapping` and `target`
/// (the server is never reached: the refusals come first).
fn postgres_with(name: &str, mapping: &str, target: &str) -> String {
    let sample = sample("postgres.yaml");
    let (_, rotation) = sample.split_once("\n---\n").unwrap();
    let head = &rotation[..rotation.find("  secretsMapping:").unwrap()];
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: postgres-admin\n  annotations: {{rotor.dev/allow-read: \"*\"}}\nstringData:\n  password: not-a-real-admin-password\n---\n{}  secretsMapping: {mapping}\n  target: {target}\n",
        head.replace("name: app-db-login", &format!("name: {name}"))
            .replace("postgres.example.com", "127.0.0.1")
    )
}

#[tokio::test]
async fn a_key_written_twice_is_refused_before_issuing() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-key-twice").await;
    let _op = Operator::start_with(&ns, FAST);
    // Two outputs, one key.
    apply_yaml(
        &client,
        &ns,
        &postgres_with(
            "twice",
            "{username: DB_LOGIN, password: DB_LOGIN}",
            "{name: twice}",
        ),
    )
    .await
    .unwrap();
    let s = failed(&client, &ns, "twice").await;
    assert_eq!(condition(&s, "Degraded").reason, "InvalidSpec");
    assert!(
        s.last_rotation_message
            .contains("writes Secret key \"DB_LOGIN\" more than once"),
        "{}",
        s.last_rotation_message
    );
    assert!(s.slots.is_empty() && s.in_flight.is_none() && s.rotation_count == 0);
    assert!(
        s.last_rotation_attempted_at.is_none(),
        "no rotation started"
    );
    assert!(get_secret(&client, &ns, "twice").await.is_none());
    assert_eq!(
        wait_events(&client, &ns, "twice", 1, 60).await,
        vec!["InvalidSpec"]
    );

    // With keepPrevious, KEY_PREVIOUS is a key rotor writes too.
    apply_yaml(
        &client,
        &ns,
        &postgres_with(
            "shadow",
            "{password: DB, username: DB_PREVIOUS}",
            "{name: shadow, keepPrevious: true}",
        ),
    )
    .await
    .unwrap();
    let s = failed(&client, &ns, "shadow").await;
    assert!(
        s.last_rotation_message
            .contains("writes Secret key \"DB_PREVIOUS\" more than once"),
        "{}",
        s.last_rotation_message
    );
    assert!(s.slots.is_empty() && s.rotation_count == 0);
    assert!(
        s.last_rotation_attempted_at.is_none(),
        "no rotation started"
    );
    assert!(get_secret(&client, &ns, "shadow").await.is_none());
}

#[tokio::test]
async fn an_admin_secret_that_is_also_the_target_is_refused() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-admin-target").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let (admin_secret, rotation) = supabase_docs(&fake);
    let _op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &admin_secret).await.unwrap();
    let before = get_secret(&client, &ns, ADMIN).await.unwrap();
    apply_yaml(
        &client,
        &ns,
        &rotation.replace(
            "  target:\n    name: supabase-secret-key",
            &format!("  target:\n    name: {ADMIN}"),
        ),
    )
    .await
    .unwrap();
    let s = failed(&client, &ns, NAME).await;
    assert_eq!(condition(&s, "Degraded").reason, "InvalidSpec");
    assert!(
        s.last_rotation_message
            .contains("is also the target Secret"),
        "{}",
        s.last_rotation_message
    );
    assert!(s.slots.is_empty() && s.rotation_count == 0);
    assert_eq!(fake.lock().requests, 0, "the vendor was never called");
    let after = get_secret(&client, &ns, ADMIN).await.unwrap();
    assert_eq!(after.data, before.data, "the admin Secret is untouched");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the admin Secret was not written"
    );
}

#[tokio::test]
async fn a_second_writer_between_read_and_intent_never_starts_a_second_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "p-precondition").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let hold = Hold::new(&ns);
    hold.arm();
    // Operator A stops between its read and its intent write of rotation 2.
    let a = Operator::start_env(
        &ns,
        FAST,
        &[
            ("ROTOR_TEST_PAUSE_AT", "before_intent@2"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    );
    apply_supabase_sample(&client, &ns, &fake).await;
    rotated(&client, &ns, NAME, 1).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "two").await;
    until(60, "operator A paused before its intent write", || async {
        a.logs().contains("failpoint paused")
    })
    .await;
    assert_eq!(fake.lock().creates, 1);

    // Meanwhile a second writer (operator B, no leader election) handles the same
    // request: rotation 2 completes.
    let b = Operator::start_with(&ns, FAST);
    let s = rotated(&client, &ns, NAME, 2).await;
    let slots = slot_ids(&s);
    b.kill();
    assert_eq!(fake.lock().creates, 2);

    // A goes on with its stale decision: its intent write must be refused (409),
    // and the re-read finds nothing to do.
    const STALE: &str = "object changed since it was read";
    let stale_before = a.logs().matches(STALE).count();
    hold.release();
    until(
        60,
        "A's stale intent write was refused or A issued again",
        || async { a.logs().matches(STALE).count() > stale_before || fake.lock().creates > 2 },
    )
    .await;
    // Refused, A issued nothing in that reconcile; its retry re-reads the object and
    // finds the request handled.
    assert_eq!(
        fake.lock().creates,
        2,
        "a second writer started a second rotation:\n{}",
        a.logs()
    );
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!(s.rotation_count, 2);
    assert_eq!(slot_ids(&s), slots, "the slots are B's");
    let live: Vec<String> = fake.lock().live().iter().map(|k| k.id.clone()).collect();
    let mut expected = slots.clone();
    expected.sort();
    let mut live_sorted = live.clone();
    live_sorted.sort();
    assert_eq!(live_sorted, expected, "the vendor holds only the slot keys");
}
