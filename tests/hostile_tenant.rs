//! A tenant in the same namespace, an unlucky operator and an upgrade against rotor's
//! keys and vault (issue 9, items 6, 10, 12, 13, 14): each test performs the attack or
//! the fault against the real API server, the vendor fakes or a real PostgreSQL, and
//! asserts on what a user sees.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rotor::api::SecretRotation;
use std::collections::BTreeMap;
use support::fakes;
use support::scenario::*;
use support::*;

fn vault_name(resource: &str) -> String {
    format!("rotor-escrow-{resource}")
}

/// The vault's entries, as JSON.
async fn vault_entries(client: &Client, ns: &str, resource: &str) -> Vec<serde_json::Value> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&vault_name(resource))
        .await
        .unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("e."))
        .map(|(_, v)| serde_json::from_slice(&v.0).unwrap())
        .collect()
}

/// The random sample, renamed.
fn random_manifest(name: &str) -> String {
    sample("random.yaml")
        .replace("  name: session-key\n", &format!("  name: {name}\n"))
        .replace(
            "    name: app-session-key\n",
            &format!("    name: {name}-secret\n"),
        )
}

/// The Supabase sample pointed at `fake`, for SecretRotation `rotation` reading admin
/// Secret `secret`, whose allow-read annotation is `allow` (none when `None`).
fn supabase_manifest(
    fake: &fakes::Fake<fakes::Supabase>,
    rotation: &str,
    secret: &str,
    allow: Option<&str>,
) -> String {
    let admin = fake.lock().admin_token.clone();
    let annotation = match allow {
        Some(list) => format!("rotor.dev/allow-read: \"{list}\""),
        None => "example.com/note: \"not shared with rotor\"".to_string(),
    };
    sample("supabase.yaml")
        .replace("https://api.supabase.com", &fake.url)
        .replace("sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN", &admin)
        .replace("rotor.dev/allow-read: supabase-secret-key", &annotation)
        .replace("  name: supabase-admin\n", &format!("  name: {secret}\n"))
        .replace(
            "        name: supabase-admin\n",
            &format!("        name: {secret}\n"),
        )
        .replace(
            "name: supabase-secret-key\nspec",
            &format!("name: {rotation}\nspec"),
        )
        .replace(
            "    name: supabase-secret-key\n    keepPrevious",
            &format!("    name: {rotation}-secret\n    keepPrevious"),
        )
}

/// Item 6. PostgreSQL credential ids are user names: rotation 3 revokes app_a's old
/// password and issues a new one for app_a. Marking "every entry of app_a" revoked
/// took the new one too, so a deleted Secret was not restored but rotated again.
#[tokio::test]
async fn a_third_postgres_rotation_does_not_mark_the_live_password_revoked() {
    let pg = postgres::postgres();
    pg.admin_sql("CREATE DATABASE app").await;
    pg.admin_sql("CREATE ROLE app_rw").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-revoked").await;
    let op = Operator::start_with(&ns, FAST);
    let manifest = revocable_at_once(&sample("postgres.yaml"))
        .replace("host: postgres.example.com", "host: 127.0.0.1")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &pg.admin_password);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "app-db-login", 1).await;
    rotate(&client, &ns, "app-db-login", "two", 2).await;
    let before = rotate(&client, &ns, "app-db-login", "three", 3).await;
    let secret = get_secret(&client, &ns, "app-db-login").await.unwrap();
    let (user, password) = (
        secret_value(&secret, "DB_USER").unwrap(),
        secret_value(&secret, "DB_PASSWORD").unwrap(),
    );
    assert_eq!(user, "app_a", "rotation 3 reuses slot 0's user");
    assert!(pg.can_login(&user, &password, "app").await);
    // The sample's own `sslMode: require`: rotor's admin sessions ran over TLS.
    let log = pg.log();
    let admin_sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=postgres database=app"))
        .collect();
    assert!(
        !admin_sessions.is_empty() && admin_sessions.iter().all(|l| l.contains("SSL enabled")),
        "rotor's admin sessions, all over TLS: {admin_sessions:#?}"
    );

    // Deleted while no operator runs (no settle pass can answer with its own apply):
    // the restart must restore it from the vault.
    op.stop().await;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .delete("app-db-login", &Default::default())
        .await
        .unwrap();
    let _op = Operator::start_with(&ns, FAST);
    wait_for_event(
        &client,
        &ns,
        "app-db-login",
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    let after = status_of(&client, &ns, "app-db-login").await;
    assert_eq!(after.rotation_count, 3, "restored, not rotated");
    assert_eq!(after.slots, before.slots);
    let secret = get_secret(&client, &ns, "app-db-login").await.unwrap();
    assert_eq!(
        secret_value(&secret, "DB_PASSWORD").as_deref(),
        Some(password.as_str())
    );
    assert!(
        pg.can_login(&user, &password, "app").await,
        "the restored password still logs in"
    );
    let rotated_events = event_reasons(&client, &ns, "app-db-login")
        .await
        .iter()
        .filter(|r| *r == "Rotated")
        .count();
    // (The third one may be lost with the killed operator; never a fourth.)
    assert!(
        rotated_events <= 3,
        "{rotated_events} Rotated Events: the restore rotated"
    );
}

/// Item 10. Whoever can create a SecretRotation names a Secret of the namespace that
/// never opted in (or opted in for another resource) as its admin credential, with a
/// URL of its choice: nothing is sent; status says exactly what to set. `*` works.
#[tokio::test]
async fn a_secretrotation_cannot_send_a_secret_that_did_not_share_itself() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "unshared").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(
        &client,
        &ns,
        &supabase_manifest(&fake, "thief", "db-root", None),
    )
    .await
    .unwrap();
    apply_yaml(
        &client,
        &ns,
        &supabase_manifest(&fake, "thief-two", "billing-root", Some("billing-sync")),
    )
    .await
    .unwrap();
    for (name, secret) in [("thief", "db-root"), ("thief-two", "billing-root")] {
        let s = failed(&client, &ns, name).await;
        let expected =
            format!("Secret \"{secret}\" does not allow SecretRotation \"{name}\" to read it");
        assert!(
            s.last_rotation_message.contains(&expected),
            "{}",
            s.last_rotation_message
        );
        let set =
            format!("set the annotation rotor.dev/allow-read: \"{name}\" on Secret \"{secret}\"");
        assert!(
            s.last_rotation_message.contains(&set),
            "{}",
            s.last_rotation_message
        );
        assert_eq!(condition(&s, "Degraded").reason, "CredentialsMissing");
    }
    assert_eq!(fake.lock().requests, 0, "no request reached the vendor");

    // Shared with every SecretRotation of the namespace: it works.
    apply_yaml(
        &client,
        &ns,
        &supabase_manifest(&fake, "shared", "team-admin", Some("*")),
    )
    .await
    .unwrap();
    rotated(&client, &ns, "shared", 1).await;
    // The owner of a refused Secret opts in: the same resource rotates.
    apply_yaml(
        &client,
        &ns,
        &supabase_manifest(
            &fake,
            "thief-two",
            "billing-root",
            Some("billing-sync, thief-two"),
        ),
    )
    .await
    .unwrap();
    request(&client, &ns, "thief-two", "rotor.dev/rotate", "now").await;
    rotated(&client, &ns, "thief-two", 1).await;
    assert_eq!(status_of(&client, &ns, "thief").await.rotation_count, 0);
    // The refused Secrets' value appears nowhere (logs, Events, status, audit).
    let admin = fake.lock().admin_token.clone();
    let key = value(&client, &ns, "thief-two-secret", "SUPABASE_SECRET_KEY")
        .await
        .unwrap();
    assert_no_leak(&client, &ns, "thief-two", &op.logs(), &[admin, key]).await;
}

/// Item 10. A Secret named `rotor-escrow-<name>` that rotor did not create for this
/// resource is never adopted, read or written: it stays byte-for-byte the same.
#[tokio::test]
async fn a_pre_existing_foreign_vault_secret_is_never_adopted() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "squat").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let squatter = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(vault_name("grabbed")),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "payroll".to_string(),
            k8s_openapi::ByteString(b"someone else's data".to_vec()),
        )])),
        ..Default::default()
    };
    let created = secrets
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let _op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &random_manifest("grabbed"))
        .await
        .unwrap();
    let s = failed(&client, &ns, "grabbed").await;
    assert!(
        s.last_rotation_message.contains(&format!(
            "Secret {ns}/rotor-escrow-grabbed exists and was not created by rotor for SecretRotation \"grabbed\""
        )),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(s.rotation_count, 0);
    // A later reconcile does not change its mind.
    request(&client, &ns, "grabbed", "rotor.dev/rotate", "again").await;
    wait_status(&client, &ns, "grabbed", 90, "the request handled", |s| {
        s.last_handled_rotate_token.as_deref() == Some("again")
    })
    .await;
    let now = secrets.get(&vault_name("grabbed")).await.unwrap();
    assert_eq!(
        now.resource_version(),
        created.resource_version(),
        "never written"
    );
    assert_eq!(now.data, created.data);
    assert!(now.owner_references().is_empty() && now.labels().is_empty());
    assert!(get_secret(&client, &ns, "grabbed-secret").await.is_none());
}

/// A vault Secret deleted and made again by someone else under its name between two
/// rotations: rotor's next write (which names the uid of the Secret it knew, instead of
/// reading it first) is refused, and the impostor is never written.
#[tokio::test]
async fn a_vault_secret_replaced_between_rotations_is_never_written() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "swap").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let _op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &random_manifest("swapped"))
        .await
        .unwrap();
    rotated(&client, &ns, "swapped", 1).await;
    let name = vault_name("swapped");
    secrets.delete(&name, &Default::default()).await.unwrap();
    // Gone (bounded wait), then an impostor: someone else's Secret of that name (one
    // with rotor's three labels and no owner would be taken for a vault whose owner
    // reference an older `rotor keys rotate` removed).
    for _ in 0..100 {
        if secrets.get_opt(&name).await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let impostor = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "mine".to_string(),
            k8s_openapi::ByteString(b"not rotor's".to_vec()),
        )])),
        ..Default::default()
    };
    let created = secrets
        .create(&PostParams::default(), &impostor)
        .await
        .unwrap();
    request(&client, &ns, "swapped", "rotor.dev/rotate", "r2").await;
    let s = failed(&client, &ns, "swapped").await;
    assert!(
        s.last_rotation_message
            .contains("was not created by rotor for SecretRotation"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(s.rotation_count, 1);
    let now = secrets.get(&name).await.unwrap();
    assert_eq!(
        now.resource_version(),
        created.resource_version(),
        "never written"
    );
    assert_eq!(now.data, created.data);
}

/// Item 12. Fingerprints are keyed (HMAC under rotor-kek's `fingerprint` key), so a
/// short value cannot be brute-forced from status; and an upgrade from unkeyed
/// `sha256:` fingerprints neither rotates nor fails to restore.
#[tokio::test]
async fn fingerprints_are_keyed_and_old_unkeyed_ones_still_restore() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "fingerprint").await;
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &random_manifest("keyed"))
        .await
        .unwrap();
    let s = rotated(&client, &ns, "keyed", 1).await;
    let issued = value(&client, &ns, "keyed-secret", "SESSION_SECRET")
        .await
        .unwrap();
    let fp = s.slots[0].fingerprint.clone();
    assert!(fp.starts_with("hmac-sha256:"), "{fp}");
    assert_ne!(
        fp.trim_start_matches("hmac-sha256:"),
        rotor::rotation::legacy_fingerprint(&issued).trim_start_matches("sha256:"),
        "not the plain SHA-256 prefix"
    );
    assert_eq!(fp, fingerprint_of(&client, &ns, &issued).await);

    // The state an older rotor left: unkeyed fingerprints in status, in the vault
    // entry and on the Secret, and no fingerprint key in rotor-kek.
    op.stop().await;
    let legacy = rotor::rotation::legacy_fingerprint(&issued);
    let rotations: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let mut slots = serde_json::to_value(&s.slots).unwrap();
    slots[0]["fingerprint"] = legacy.clone().into();
    rotations
        .patch_status(
            "keyed",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"slots": slots}})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let vault = secrets.get(&vault_name("keyed")).await.unwrap();
    let mut patch = serde_json::Map::new();
    for (k, v) in vault
        .data
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("e."))
    {
        let mut entry: serde_json::Value = serde_json::from_slice(&v.0).unwrap();
        entry["fingerprint"] = legacy.clone().into();
        patch.insert(k, base64_of(&serde_json::to_vec(&entry).unwrap()).into());
    }
    secrets
        .patch(
            &vault_name("keyed"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "data": patch })),
        )
        .await
        .unwrap();
    secrets
        .patch(
            "rotor-kek",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"fingerprint": null}})),
        )
        .await
        .unwrap();
    secrets
        .delete("keyed-secret", &Default::default())
        .await
        .unwrap();

    let _op = Operator::start_with(&ns, FAST);
    wait_for_event(
        &client,
        &ns,
        "keyed",
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    let after = status_of(&client, &ns, "keyed").await;
    assert_eq!(after.rotation_count, 1, "an upgrade does not rotate");
    assert_eq!(after.slots[0].fingerprint, legacy);
    assert_eq!(
        value(&client, &ns, "keyed-secret", "SESSION_SECRET")
            .await
            .as_deref(),
        Some(issued.as_str())
    );
    let kek = secrets.get("rotor-kek").await.unwrap();
    assert_eq!(
        kek.data.unwrap()["fingerprint"].0.len(),
        32,
        "the key was added"
    );
}

/// Runs the CLI, which may fail: (success, stdout, stderr).
fn rotor_cli_result(args: &[&str]) -> (bool, String, String) {
    rotor_cli_env(args, &[])
}

/// Runs the CLI with extra environment, which may fail: (success, stdout, stderr).
fn rotor_cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 13. A deleted rotor-kek is not silently recreated by `keys rotate`, and one
/// the operator recreates is recognised as "that key version is gone"; `keys rotate`
/// reports what it could not re-wrap and fails; vault Secrets keep their owner.
#[tokio::test]
async fn a_lost_kek_is_reported_as_unavailable_and_keys_rotate_reports_failures() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "lost-kek").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &random_manifest("orphaned"))
        .await
        .unwrap();
    rotated(&client, &ns, "orphaned", 1).await;

    // The KEK Secret is lost while the operator is down.
    op.stop().await;
    secrets
        .delete("rotor-kek", &Default::default())
        .await
        .unwrap();
    let (ok, _, err) = rotor_cli_result(&["keys", "rotate", "-n", &ns]);
    assert!(!ok, "keys rotate without a KEK Secret fails");
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        secrets.get_opt("rotor-kek").await.unwrap().is_none(),
        "not created"
    );

    // The operator creates a new v1: the old entries need the lost v1.
    let _op = Operator::start_with(&ns, FAST);
    let s = wait_status(&client, &ns, "orphaned", 60, "vault problem", |s| {
        s.escrow
            .as_ref()
            .and_then(|v| v.problem.as_deref())
            .is_some()
    })
    .await;
    let problem = s.status.unwrap().escrow.unwrap().problem.unwrap();
    assert!(problem.contains("key_version_unavailable"), "{problem}");

    // A healthy resource beside it; keys rotate re-wraps its entry, reports the other.
    apply_yaml(&client, &ns, &random_manifest("healthy"))
        .await
        .unwrap();
    let healthy = rotated(&client, &ns, "healthy", 1).await;
    let uid = Api::<SecretRotation>::namespaced(client.clone(), &ns)
        .get("healthy")
        .await
        .unwrap()
        .uid()
        .unwrap();
    let (ok, out, err) = rotor_cli_result(&["keys", "rotate", "-n", &ns]);
    assert!(!ok, "a failure makes the run fail: {out}");
    assert!(out.contains("1 data keys re-wrapped, 1 failed"), "{out}");
    assert!(
        err.contains("rotor-escrow-orphaned") && err.contains("key_version_unavailable"),
        "{err}"
    );
    let vault = secrets.get(&vault_name("healthy")).await.unwrap();
    assert!(
        vault.owner_references().iter().any(|r| r.uid == uid),
        "keys rotate keeps the owner reference: {:?}",
        vault.owner_references()
    );
    let entries = vault_entries(&client, &ns, "healthy").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    for entry in entries {
        assert_eq!(entry["sealed"]["kekVersion"], 2);
    }
    // Still readable: a deleted target is restored from the re-wrapped entry.
    secrets
        .delete("healthy-secret", &Default::default())
        .await
        .unwrap();
    wait_for_event(
        &client,
        &ns,
        "healthy",
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    assert_eq!(
        status_of(&client, &ns, "healthy").await.slots,
        healthy.slots
    );
}

/// Item 14. A credential that fails its test is marked revoked in the vault, and a
/// vault flooded with entries (long history, short intervals) is cut back to its bound
/// on the next write without losing the live slots; the resource keeps working.
#[tokio::test]
async fn a_flooded_vault_is_bounded_and_failed_credentials_are_marked_revoked() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "flood").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(&ns, FAST);
    let name = "supabase-secret-key";
    apply_supabase_sample(&client, &ns, &fake).await;
    rotated(&client, &ns, name, 1).await;

    fake.lock().knobs.fail_test = true;
    request(&client, &ns, name, "rotor.dev/rotate", "doomed").await;
    wait_status(&client, &ns, name, 60, "the test failed", |s| {
        s.failed_attempts > 0
    })
    .await;
    let entries = vault_entries(&client, &ns, name).await;
    let unrevoked = entries
        .iter()
        .filter(|e| e.get("revokedAt").is_none())
        .count();
    assert_eq!(
        unrevoked, 1,
        "only the active credential is unrevoked: {entries:?}"
    );
    fake.lock().knobs.fail_test = false;

    // Flood: 60 entries that an older rotor (or a long history) left behind.
    let template = entries[0].clone();
    let mut flood = serde_json::Map::new();
    for i in 0..60 {
        let mut e = template.clone();
        e["name"] = format!("rotor-flood-{i}").into();
        e["fingerprint"] = format!("hmac-sha256:{i:08x}").into();
        if i % 2 == 0 {
            e["revokedAt"] = "2026-01-01T00:00:00Z".into();
            e["expiresAt"] = "2099-01-01T00:00:00Z".into();
        }
        flood.insert(
            format!("e.flood{i:02}"),
            base64_of(&serde_json::to_vec(&e).unwrap()).into(),
        );
    }
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            &vault_name(name),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "data": flood })),
        )
        .await
        .unwrap();
    let s = rotate(&client, &ns, name, "after-flood", 2).await;
    let entries = vault_entries(&client, &ns, name).await;
    assert!(
        entries.len() <= rotor::vault::MAX_ENTRIES,
        "{} entries",
        entries.len()
    );
    assert!(s.escrow.unwrap().entries as usize <= rotor::vault::MAX_ENTRIES);
    // Both live slots survive: a deleted Secret comes back with both keys.
    let (k2, k1) = (
        value(&client, &ns, name, "SUPABASE_SECRET_KEY")
            .await
            .unwrap(),
        value(&client, &ns, name, "SUPABASE_SECRET_KEY_PREVIOUS")
            .await
            .unwrap(),
    );
    // Deleted while no operator runs, so that no settle pass already holding the
    // Secret answers the deletion with its own apply: the restart must restore it
    // from the vault.
    op.stop().await;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .delete(name, &Default::default())
        .await
        .unwrap();
    let _op = Operator::start_with(&ns, FAST);
    wait_for_event(
        &client,
        &ns,
        name,
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    assert_eq!(
        value(&client, &ns, name, "SUPABASE_SECRET_KEY").await,
        Some(k2)
    );
    assert_eq!(
        value(&client, &ns, name, "SUPABASE_SECRET_KEY_PREVIOUS").await,
        Some(k1)
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Item 10. Convox replaces its admin credential: rotor writes the admin Secret
/// (`<key>.pending`, then the new key). A Secret shared for reading only is never
/// written — and nothing is issued at the rack; opting in to writing makes it work.
#[tokio::test]
async fn a_secret_shared_for_reading_only_is_never_written() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "read-only").await;
    let initial = "InitialRackKey0123456789";
    let fake = fakes::convox(initial).await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = sample("convox.yaml")
        .replace("https://rack.example.com", &fake.url)
        .replace("REPLACE_WITH_THE_CURRENT_RACK_API_KEY", initial);
    let read_only = manifest.replace(
        "    rotor.dev/allow-write: convox-rack-key\n",
        "    example.com/note: read-only\n",
    );
    assert_ne!(read_only, manifest);
    apply_yaml(&client, &ns, &read_only).await.unwrap();
    let s = failed(&client, &ns, "convox-rack-key").await;
    assert!(
        s.last_rotation_message.contains(
            "set the annotation rotor.dev/allow-write: \"convox-rack-key\" on Secret \"convox-rack-admin\""
        ),
        "{}",
        s.last_rotation_message
    );
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(fake.lock().puts, 0, "nothing issued at the rack");
    assert_eq!(s.rotation_count, 0);

    request(
        &client,
        &ns,
        "convox-rack-key",
        "rotor.dev/rotate",
        "please",
    )
    .await;
    wait_status(
        &client,
        &ns,
        "convox-rack-key",
        90,
        "the request handled",
        |s| {
            s.last_rotation_message.contains("allow-write")
                && s.last_handled_rotate_token.as_deref() != Some("please")
        },
    )
    .await;
    let after = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(
        after.resource_version(),
        admin.resource_version(),
        "never written"
    );
    assert_eq!(fake.lock().puts, 0);

    // The owner of the Secret opts in to writing: it rotates.
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    request(&client, &ns, "convox-rack-key", "rotor.dev/rotate", "now").await;
    rotated(&client, &ns, "convox-rack-key", 1).await;
    assert_eq!(fake.lock().puts, 1);
}

/// Item 13. Several `rotor keys rotate` at once: each KEK version is written once (a
/// run that lost the race says so and fails), and every entry stays readable.
#[tokio::test]
async fn concurrent_keys_rotate_runs_never_overwrite_a_kek() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "kek-race").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let _op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &random_manifest("raced"))
        .await
        .unwrap();
    rotated(&client, &ns, "raced", 1).await;
    // Every run reads rotor-kek and stops before adding its version (a test-only pause
    // point); then all go at once: without the precondition each would write v2.
    let hold = Hold::new(&ns);
    hold.arm();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let ns = ns.clone();
            let path = hold.path().to_string();
            std::thread::spawn(move || {
                rotor_cli_env(
                    &["keys", "rotate", "-n", &ns],
                    &[
                        ("ROTOR_TEST_VAULT_PAUSE", "kek_write"),
                        ("ROTOR_TEST_HOLD", path.as_str()),
                    ],
                )
            })
        })
        .collect();
    hold.wait_paused("kek_write", 4).await;
    hold.release();
    let results: Vec<(bool, String, String)> =
        runs.into_iter().map(|r| r.join().unwrap()).collect();
    let won = results.iter().filter(|(ok, _, _)| *ok).count();
    assert_eq!(
        won, 1,
        "all four read the same rotor-kek: one adds v2 {results:?}"
    );
    let mut versions = Vec::new();
    for (ok, out, err) in &results {
        if out.starts_with("KEK v") {
            versions.push(out.split_whitespace().nth(1).unwrap().to_string());
        } else {
            assert!(!ok);
            assert!(err.contains("changed while rotor was writing it"), "{err}");
        }
    }
    let before = versions.len();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions.len(),
        before,
        "a KEK version written twice: {results:?}"
    );
    let kek = secrets.get("rotor-kek").await.unwrap().data.unwrap();
    assert_eq!(
        kek.keys().filter(|k| k.starts_with('v')).count(),
        1 + versions.len(),
        "{:?}",
        kek.keys()
    );
    // Every entry still opens: a deleted target comes back from the vault.
    let kept = value(&client, &ns, "raced-secret", "SESSION_SECRET").await;
    secrets
        .delete("raced-secret", &Default::default())
        .await
        .unwrap();
    wait_for_event(
        &client,
        &ns,
        "raced",
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    assert_eq!(
        value(&client, &ns, "raced-secret", "SESSION_SECRET").await,
        kept
    );
    let s = status_of(&client, &ns, "raced").await;
    assert_eq!(s.escrow.and_then(|v| v.problem), None);
}
