//! Hostile specs and unlucky operators against a real kube-apiserver: an object that no
//! longer parses, an interval that overflows, a reconcile that panics, a tenant whose
//! vendor hangs, names that would reach an API URL path, a missing operator namespace.

mod support;

use kube::Api;
use rotor::api::{RotationPhase, SecretRotation, SecretRotationStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::scenario::{failed, rotated};
use support::*;

/// The fairness test watches all namespaces: while it runs, no other test of this
/// binary has an operator of its own (they would reconcile each other's objects).
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A random-provider SecretRotation with `interval` written verbatim (YAML).
fn random(name: &str, interval: &str) -> String {
    format!(
        "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: {name}\nspec:\n  provider: {{random: {{length: 16}}}}\n  schedule: {{rotationInterval: {interval}}}\n  secretsMapping: {{value: V}}\n  target: {{name: {name}-secret}}\n"
    )
}

fn condition_reason(status: &SecretRotationStatus, type_: &str) -> String {
    condition(status, type_).reason.clone()
}

/// Applies `crd_yaml` and waits (bounded) until the API server admits, or refuses,
/// `probe` in `ns` as `want_admitted` says. A CRD's schema takes effect shortly after
/// the update, not at once.
async fn swap_crd(
    client: &kube::Client,
    ns: &str,
    crd_yaml: &str,
    probe: &str,
    want_admitted: bool,
) {
    apply_yaml(client, "default", crd_yaml).await.unwrap();
    wait_crd_established(client, "secretrotations.rotor.dev").await;
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), ns);
    for _ in 0..300 {
        let admitted = apply_yaml(client, ns, probe).await.is_ok();
        if admitted {
            let _ = api.delete("crd-probe", &Default::default()).await;
        }
        if admitted == want_admitted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the CRD change did not take effect within 60s (want admitted: {want_admitted})");
}

/// Issue 9, item 2: an object stored while the CRD admitted `rotationInterval:
/// 4294967296` (which no longer deserializes) must not blind the watch: the operator
/// starts, the healthy neighbour rotates, the unreadable one says why it is stopped.
#[tokio::test]
async fn an_object_that_no_longer_parses_does_not_blind_the_watch() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "unreadable").await;
    let current = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/secretrotation.yaml"
    ))
    .unwrap();
    // The CRD as it was before the fix: no maximum on the integer form.
    let old = current.replace("                    maximum: 3650.0\n", "");
    assert_ne!(old, current, "the CRD has a maximum on rotationInterval");
    let probe = random("crd-probe", "4294967296");
    swap_crd(&client, &ns, &old, &probe, true).await;
    apply_yaml(&client, &ns, &random("legacy", "4294967296"))
        .await
        .expect("the old schema admits 4294967296");
    // Upgrade the CRD: the new schema refuses the value, the stored object stays.
    swap_crd(&client, &ns, &current, &probe, false).await;
    apply_yaml(&client, &ns, &random("healthy", "30d"))
        .await
        .unwrap();

    let op = Operator::start(&ns);
    rotated(&client, &ns, "healthy", 1).await;
    // An API server without CRD validation ratcheting (this one is 1.20) refuses
    // every write to an object whose stored spec fails the current schema, status
    // included: the Warning Event says why it is stopped.
    wait_for_event(
        &client,
        &ns,
        "legacy",
        "InvalidSpec",
        "rotor cannot read this SecretRotation (spec.schedule.rotationInterval: 4294967296 is out of range: whole days, 1 to 3650)",
        60,
    )
    .await;
    assert!(get_secret(&client, &ns, "legacy-secret").await.is_none());

    // Fixing the field brings it back.
    patch_rotation(
        &client,
        &ns,
        "legacy",
        serde_json::json!({"spec": {"schedule": {"rotationInterval": 7}}}),
    )
    .await;
    rotated(&client, &ns, "legacy", 1).await;
    assert!(!op.logs().contains("did not match any variant"));
}

/// Issue 9, item 2: an interval whose parts overflow while summing passes the schema
/// (it is short) and must end as InvalidSpec, not as a crash.
#[tokio::test]
async fn an_interval_that_overflows_is_refused_and_the_operator_stays_up() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "overflow").await;
    apply_yaml(
        &client,
        &ns,
        &random("overflow", "\"30000000000000w200000000000000d\""),
    )
    .await
    .expect("the schema admits it (31 characters)");
    let op = Operator::start(&ns);
    let status = failed(&client, &ns, "overflow").await;
    assert!(
        status
            .last_rotation_message
            .contains("is longer than the maximum of 3650 days"),
        "{}",
        status.last_rotation_message
    );
    assert_eq!(condition_reason(&status, "Ready"), "InvalidSpec");
    // Still alive: a resource created afterwards rotates.
    apply_yaml(&client, &ns, &random("after", "30d"))
        .await
        .unwrap();
    rotated(&client, &ns, "after", 1).await;
    assert!(!op.logs().contains("panic"));
}

/// Issue 9, item 3: a reconcile that panics is caught, counted and retried with
/// backoff; the process lives and the other resources rotate.
#[tokio::test]
async fn a_panicking_reconcile_takes_neither_the_operator_nor_its_neighbours() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "panics").await;
    apply_yaml(&client, &ns, &random("boom", "30d"))
        .await
        .unwrap();
    let op = Operator::start_env(&ns, &[], &[("ROTOR_TEST_PANIC", "boom")]);
    // Retried (first backoff 5s), not dropped, and the process survived both panics.
    wait_metric(&op, "rotor_reconcile_errors_total{error=\"panicked\"}", 1.0).await;
    apply_yaml(&client, &ns, &random("calm", "30d"))
        .await
        .unwrap();
    rotated(&client, &ns, "calm", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(&op, "rotor_reconcile_errors_total{error=\"panicked\"}")
        .await
        .unwrap_or(0.0)
        < 2.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the panicking resource was not retried"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = op.logs();
    assert!(logs.contains("panic (message withheld"), "{logs}");
    assert!(
        !logs.contains("failpoint: a reconcile panicked"),
        "a panic's message may quote a value and is never logged"
    );
    assert!(logs.contains("\"kind\":\"panicked\""), "{logs}");
    let status = Api::<SecretRotation>::namespaced(client.clone(), &ns)
        .get("boom")
        .await
        .unwrap()
        .status;
    assert!(status.is_none_or(|s| s.rotation_status != RotationPhase::Success));
}

/// A vendor that accepts connections and never answers.
async fn silent_vendor() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

/// Issue 9, item 4: four (here six) resources whose vendor hangs must not hold every
/// worker; a resource in another namespace rotates while they still hang.
#[tokio::test]
async fn a_tenant_whose_vendor_hangs_does_not_starve_another_namespace() {
    let _alone = EXCLUSIVE.write().await;
    let client = control_plane().client().await;
    let a = namespace(&client, "hang-a").await;
    let b = namespace(&client, "hang-b").await;
    let (port, accepted) = silent_vendor().await;
    for i in 0..6 {
        let manifest = format!(
            "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: hang-{i}\nspec:\n  provider:\n    http:\n      issue: {{url: \"http://127.0.0.1:{port}/keys\"}}\n      keyPath: $.key\n  secretsMapping: {{apiKey: K}}\n  target: {{name: hang-{i}-secret}}\n"
        );
        apply_yaml(&client, &a, &manifest).await.unwrap();
    }
    // All namespaces, one controller, the old default of 4 workers: without a
    // per-namespace share, the hanging resources take all four and every other
    // namespace waits ten minutes. (With `--namespace a,b` each namespace has a
    // controller and workers of its own.)
    let _op = Operator::start_env(
        "",
        &[
            "--concurrency",
            "4",
            "--allow-private-endpoints",
            "--http-timeout",
            "10m",
            "--http-max-retries",
            "0",
        ],
        &[("POD_NAMESPACE", &a)],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hanging call reached the vendor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apply_yaml(&client, &b, &random("healthy", "30d"))
        .await
        .unwrap();
    rotated(&client, &b, "healthy", 1).await;
    // They still hang: none of them finished.
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &a);
    for i in 0..6 {
        let sr = api.get(&format!("hang-{i}")).await.unwrap();
        assert!(
            sr.status.is_none_or(|s| s.rotation_count == 0),
            "hang-{i} rotated against a vendor that never answers"
        );
    }
}

/// Issue 9, item 15: names that would reach an API URL path, reserved names and keys
/// the API server refuses in a Secret are refused before any credential is issued.
#[tokio::test]
async fn names_and_keys_a_secret_cannot_have_are_refused_before_issuing() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "bad-names").await;
    let base = random("bad", "30d");
    // The schema refuses what it can express.
    for (from, to) in [
        (
            "target: {name: bad-secret}",
            "target: {name: \"x?dryRun=All\"}",
        ),
        ("target: {name: bad-secret}", "target: {name: Bad}"),
        ("{value: V}", "{value: \"a/b\"}"),
        ("30d", "\"1234567890123456789012345678901234d\""),
        ("30d", "3651"),
    ] {
        let manifest = base.replace(from, to);
        assert_ne!(manifest, base);
        let err = apply_yaml(&client, &ns, &manifest).await.err();
        assert!(
            matches!(&err, Some(kube::Error::Api(e)) if e.code == 422),
            "{to}: {err:?}"
        );
    }
    let http_ref = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: bad\nspec:\n  provider:\n    supabase: {projectRef: abcdefghijklmnopqrst, credentialsRef: {name: \"admin?dryRun=All\", key: k}}\n  secretsMapping: {apiKey: K}\n  target: {name: t}\n";
    assert!(apply_yaml(&client, &ns, http_ref).await.is_err());

    // What the schema cannot express, validation refuses: "." and "..", and a key
    // whose _PREVIOUS form passes 253 characters.
    let long = "K".repeat(245);
    let cases = [
        (
            "escrow",
            "V",
            "rotor-escrow-x",
            "reserved for rotor's escrow Secrets",
        ),
        (
            "vault",
            "V",
            "rotor-vault-x",
            "reserved for rotor's escrow Secrets",
        ),
        ("dot", "\".\"", "dot-secret", "not a valid Secret key"),
        (
            "dotdot",
            "\"..\"",
            "dotdot-secret",
            "not a valid Secret key",
        ),
        (
            "long",
            long.as_str(),
            "long-secret",
            "_PREVIOUS passes 253 characters",
        ),
    ];
    for (name, key, target, _) in &cases {
        let manifest = random(name, "30d")
            .replace("{value: V}", &format!("{{value: {key}}}"))
            .replace(
                &format!("{{name: {name}-secret}}"),
                &format!("{{name: {target}, keepPrevious: true}}"),
            );
        apply_yaml(&client, &ns, &manifest).await.unwrap();
    }
    let _op = Operator::start(&ns);
    for (name, _, target, want) in cases {
        let status = failed(&client, &ns, name).await;
        assert!(
            status.last_rotation_message.contains(want),
            "{name}: {}",
            status.last_rotation_message
        );
        assert_eq!(condition_reason(&status, "Ready"), "InvalidSpec");
        assert_eq!(status.rotation_count, 0);
        assert!(status.slots.is_empty(), "{name}: a credential was issued");
        assert!(get_secret(&client, &ns, target).await.is_none());
    }
}

/// Issue 9, item 16: without its namespace the operator exits at once, naming the
/// namespace and both fixes, instead of failing every rotation.
#[tokio::test]
async fn an_operator_whose_namespace_is_missing_exits_with_the_fix() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "no-operator-ns").await;
    let plane = control_plane();
    // Alone, and as a leader candidate (whose Lease lives in that namespace too).
    for extra in [&[][..], &["--leader-elect"][..]] {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(["run", "--namespace", &ns, "--metrics-address", "off"])
            .args(extra)
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("POD_NAMESPACE", "rotor-system-missing")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("rotor exits by itself")
            .unwrap();
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the operator namespace \"rotor-system-missing\" does not exist")
                && stderr.contains("kubectl create namespace rotor-system-missing")
                && stderr.contains("set POD_NAMESPACE"),
            "{extra:?}: {stderr}"
        );
    }
}

/// A Secret's type is immutable: a spec that changes `template.type` of a Secret rotor
/// already wrote would issue a credential and then fail every write. rotor refuses it
/// before any credential is issued, and picks up the fix.
#[tokio::test]
async fn a_template_type_change_is_refused_before_issuing() {
    let _shared = EXCLUSIVE.read().await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "type-change").await;
    let _op = Operator::start(&ns);
    apply_yaml(&client, &ns, &random("typed", "30d"))
        .await
        .unwrap();
    let before = rotated(&client, &ns, "typed", 1).await;
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let patch = |type_: &str| {
        serde_json::json!({"spec": {"target": {"template": {"type": type_}},
            "secretsMapping": {"value": "V"}}, "metadata": {"annotations": {"rotor.dev/rotate": type_}}})
    };
    api.patch(
        "typed",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch("example.com/other")),
    )
    .await
    .unwrap();
    let s = failed(&client, &ns, "typed").await;
    assert_eq!(condition_reason(&s, "Degraded"), "InvalidSpec");
    assert!(
        s.last_rotation_message.contains("example.com/other"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(s.rotation_count, 1, "nothing issued");
    assert_eq!(s.slots, before.slots);
    let secret = get_secret(&client, &ns, "typed-secret").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    // Back to the Secret's type: the pending rotation request goes through.
    api.patch(
        "typed",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch("Opaque")),
    )
    .await
    .unwrap();
    rotated(&client, &ns, "typed", 2).await;
}
