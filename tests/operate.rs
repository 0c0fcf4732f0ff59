//! Operating rotor: metrics and health endpoints, and leader election between two
//! replicas on a real API server.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use rotor::api::RotationPhase;
use std::time::{Duration, Instant};
use support::scenario::{rotate, rotated};
use support::*;

async fn http_get(url: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn metrics_and_health_after_a_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "metrics").await;
    let op = Operator::start(&ns);
    // Ready once the watches have synced.
    let mut ready = (0, String::new());
    for _ in 0..100 {
        ready = http_get(&format!("{}/readyz", op.admin_url)).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, (200, "ok".to_string()));
    assert_eq!(http_get(&format!("{}/livez", op.admin_url)).await.0, 200);

    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    let sr = wait_status(&client, &ns, "session-key", 60, "rotated", |s| {
        s.rotation_status == RotationPhase::Success
    })
    .await;
    // Metrics are exported right after the status commit: poll briefly.
    let mut scrape = (0, String::new());
    for _ in 0..50 {
        scrape = http_get(&format!("{}/metrics", op.admin_url)).await;
        if scrape.1.contains("rotor_rotations_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = scrape;
    assert_eq!(code, 200);
    assert!(
        body.contains(r#"rotor_rotations_total{provider="random",result="success"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"rotor_rotation_duration_seconds_count{provider="random"} 1"#),
        "{body}"
    );
    let next = sr.status.unwrap().next_rotation_at.unwrap().timestamp();
    let gauge = format!(
        r#"rotor_next_rotation_timestamp_seconds{{namespace="{ns}",name="session-key"}} {next}"#
    );
    assert!(body.contains(&gauge), "missing {gauge} in\n{body}");
    assert!(
        body.contains("rotor_credential_last_rotated_timestamp_seconds{"),
        "{body}"
    );
    // The per-resource gauges the alert rules read, from the first rotation on.
    for series in [
        format!(r#"rotor_credential_age_seconds{{namespace="{ns}",name="session-key"}}"#),
        format!(r#"rotor_failed_attempts{{namespace="{ns}",name="session-key"}} 0"#),
    ] {
        assert!(body.contains(&series), "missing {series} in\n{body}");
    }
    // Labelled families appear with their first sample: no webhook, no deliveries.
    assert!(!body.contains("rotor_webhook_deliveries"), "{body}");
    // Counted when the reconcile returns, a moment after the status commit.
    wait_metric(&op, r#"rotor_reconciles_total{result="ok"}"#, 1.0).await;
    assert!(
        !body.contains("result=\"failure\""),
        "no failure was counted: {body}"
    );
    let value = secret_value(
        &get_secret(&client, &ns, "app-session-key").await.unwrap(),
        "SESSION_SECRET",
    )
    .unwrap();
    assert!(!body.contains(&value), "a value in the metrics");
    assert_no_leak_of_target(&client, &ns, "session-key", "app-session-key", &op.logs()).await;

    // A deleted resource leaves no per-resource series behind.
    Api::<rotor::api::SecretRotation>::namespaced(client.clone(), &ns)
        .delete("session-key", &Default::default())
        .await
        .unwrap();
    let series = format!(r#"namespace="{ns}",name="session-key""#);
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(&format!("{}/metrics", op.admin_url)).await.1;
        if !body.contains(&series) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!body.contains(&series), "{body}");
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_takeover_without_double_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "leader").await;
    let flags = LEADER_FLAGS;
    // Let replica a take the lease first, so the test knows who leads.
    let (a, leases) = leader_a(&client, &ns).await;
    let b = Operator::start_env(
        &ns,
        &flags,
        &[("POD_NAMESPACE", &ns), ("POD_NAME", "replica-b")],
    );
    // The standby is ready too, so a rolling update does not stall.
    let mut standby_ready = 0;
    for _ in 0..100 {
        standby_ready = http_get(&format!("{}/readyz", b.admin_url)).await.0;
        if standby_ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(standby_ready, 200);

    let manifest = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: ha\nspec:\n  provider: {random: {length: 16}}\n  schedule: {autoRotation: false}\n  secretsMapping: {value: V}\n  target: {name: ha-secret}\n";
    apply_yaml(&client, &ns, manifest).await.unwrap();
    wait_status(&client, &ns, "ha", 60, "rotated", |s| s.rotation_count == 1).await;
    assert_eq!(
        wait_events(&client, &ns, "ha", 1, 10).await,
        vec!["Rotated"]
    );
    // The leader reconciled; the standby ran no reconcile at all (its counter has no
    // sample), though it watches the same objects.
    wait_metric(&a, r#"rotor_reconciles_total{result="ok"}"#, 1.0).await;
    assert_eq!(reconciles(&b).await, 0.0, "the standby must not reconcile");

    a.kill();
    let killed = Instant::now();
    patch_rotation(
        &client,
        &ns,
        "ha",
        serde_json::json!({"metadata": {"annotations": {"rotor.dev/rotate": "after-failover"}}}),
    )
    .await;
    wait_status(&client, &ns, "ha", 60, "rotated by the new leader", |s| {
        s.rotation_count == 2
    })
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(20),
        "took over after {takeover:?} (lease 6s)"
    );
    // Exactly one rotation per request: two Rotated Events, rotationCount 2.
    let reasons = wait_events(&client, &ns, "ha", 2, 60).await;
    assert_eq!(reasons, vec!["Rotated", "Rotated"]);
    let s = status_of(&client, &ns, "ha").await;
    assert_eq!(s.rotation_count, 2);
    // The new leader is the one reconciling now.
    assert!(reconciles(&b).await >= 1.0, "replica-b took over the work");
    assert_eq!(
        holder(leases.get_opt("rotor-leader").await.unwrap()).as_deref(),
        Some("replica-b")
    );
    let logs = a.logs() + &b.logs();
    assert_no_leak_of_target(&client, &ns, "ha", "ha-secret", &logs).await;
    eprintln!("leader takeover measured: {takeover:?}");
}

fn plan_line<'a>(plan: &'a str, name: &str) -> &'a str {
    plan.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in\n{plan}"))
}

#[tokio::test]
async fn plan_shows_what_would_happen_and_rotate_asks_for_a_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "plan").await;
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    let manual = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: manual\nspec:\n  provider: {random: {length: 16}}\n  schedule: {autoRotation: false}\n  secretsMapping: {value: V}\n  target: {name: manual-secret}\n";
    apply_yaml(&client, &ns, manual).await.unwrap();
    apply_yaml(
        &client,
        &ns,
        &manual
            .replace("name: manual\n", "name: broken\n")
            .replace("{value: V}", "{apiKey: V}"),
    )
    .await
    .unwrap();
    // A Secret of the target's name that is not rotor's: plan, like the controller,
    // says it will not be touched (one assessment for both).
    apply_yaml(
        &client,
        &ns,
        &manual
            .replace("name: manual\n", "name: taken\n")
            .replace("manual-secret", "someone-elses"),
    )
    .await
    .unwrap();
    apply_yaml(
        &client,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: someone-elses\nstringData: {V: theirs}\n",
    )
    .await
    .unwrap();

    // Before any operator ran.
    let plan = rotor_cli(&["plan", "-n", &ns]);
    assert!(
        plan_line(&plan, "taken")
            .ends_with("nothing: Secret \"someone-elses\" exists and is not rotor's"),
        "{plan}"
    );
    // One namespace: no NAMESPACE column (as kubectl).
    assert!(plan.starts_with("NAME "), "{plan}");
    assert!(
        plan_line(&plan, "session-key").ends_with("rotate now (initial): issue into slot 0"),
        "{plan}"
    );
    assert!(
        plan_line(&plan, "broken")
            .contains("nothing: invalid spec: spec.secretsMapping names output \"apiKey\""),
        "{plan}"
    );
    let before = Api::<rotor::api::SecretRotation>::namespaced(client.clone(), &ns)
        .get("session-key")
        .await
        .unwrap();
    assert!(before.status.is_none(), "plan changes nothing");

    let _op = Operator::start(&ns);
    let s = wait_status(&client, &ns, "session-key", 60, "rotated", |s| {
        s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    wait_status(&client, &ns, "manual", 60, "rotated", |s| {
        s.rotation_count == 1
    })
    .await;
    let plan = rotor_cli(&["plan", "-n", &ns]);
    let next = s.next_rotation_at.unwrap().to_rfc3339();
    assert!(
        plan_line(&plan, "session-key").ends_with(&format!("rotate at {next}: issue into slot 1")),
        "{plan}"
    );
    assert!(
        plan_line(&plan, "manual")
            .ends_with("nothing until a rotor.dev/rotate token (autoRotation: false)"),
        "{plan}"
    );
    let one = rotor_cli(&["plan", "-n", &ns, "manual"]);
    assert_eq!(one.lines().count(), 2, "{one}");

    let said = rotor_cli(&["rotate", "manual", "-n", &ns]);
    assert!(
        said.starts_with("secretrotation.rotor.dev/manual rotation requested (rotor.dev/rotate="),
        "{said}"
    );
    let s = wait_status(&client, &ns, "manual", 30, "rotated on request", |s| {
        s.rotation_count == 2
    })
    .await
    .status
    .unwrap();
    assert_eq!(s.active_index, 1);

    // `rotor revoke`: an emergency — a fresh rotor.dev/revoke token, and the operator
    // issues a new credential and revokes every older one.
    let value_before = secret_value(
        &get_secret(&client, &ns, "manual-secret").await.unwrap(),
        "V",
    )
    .unwrap();
    let said = rotor_cli(&["revoke", "manual", "-n", &ns]);
    assert!(said.contains("rotor.dev/revoke="), "{said}");
    let sr = Api::<rotor::api::SecretRotation>::namespaced(client.clone(), &ns)
        .get("manual")
        .await
        .unwrap();
    let token = sr.metadata.annotations.unwrap_or_default()["rotor.dev/revoke"].clone();
    assert!(
        said.contains(&token),
        "the token it set is the one it printed: {said}"
    );
    wait_for_event(&client, &ns, "manual", "EmergencyRevoked", "", 60).await;
    let s = status_of(&client, &ns, "manual").await;
    assert_eq!(s.rotation_count, 3, "one emergency rotation");
    assert_eq!(
        s.slots.len(),
        1,
        "one credential left, every older one revoked"
    );
    assert_eq!(s.last_handled_revoke_token.as_deref(), Some(token.as_str()));
    let value_after = secret_value(
        &get_secret(&client, &ns, "manual-secret").await.unwrap(),
        "V",
    )
    .unwrap();
    assert_ne!(
        value_after, value_before,
        "the leaked value is gone from the Secret"
    );

    // `rotor plan -A`: every namespace, this one and another.
    let other = namespace(&client, "plan-other").await;
    apply_yaml(
        &client,
        &other,
        &manual.replace("name: manual\n", "name: elsewhere\n"),
    )
    .await
    .unwrap();
    let all = rotor_cli(&["plan", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    for (namespace, name) in [(&ns, "session-key"), (&ns, "manual"), (&other, "elsewhere")] {
        assert!(
            all.lines().any(|l| {
                let mut cols = l.split_whitespace();
                cols.next() == Some(namespace.as_str()) && cols.next() == Some(name)
            }),
            "{namespace}/{name} missing from plan -A:\n{all}"
        );
    }
    assert_eq!(
        rotor_cli(&["--version"]).trim(),
        format!("rotor {}", env!("CARGO_PKG_VERSION"))
    );
}

/// README (Operating): a leader that loses its lease exits, so it never reconciles
/// beside the new leader. Another holder takes the Lease over; replica-a must exit
/// and leave it alone.
#[tokio::test]
async fn a_leader_that_loses_its_lease_exits() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "lease-lost").await;
    // Let replica a take the lease first, so the test knows who leads.
    let (a, leases) = leader_a(&client, &ns).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    leases
        .patch(
            "rotor-leader",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {
                "holderIdentity": "intruder",
                "acquireTime": now,
                "renewTime": now,
                "leaseDurationSeconds": 3600,
            }})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.exited() {
        assert!(
            Instant::now() < deadline,
            "the leader kept running after losing its lease:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        holder(leases.get_opt("rotor-leader").await.unwrap()).as_deref(),
        Some("intruder"),
        "it left the lease to its new holder"
    );
    assert!(a.logs().contains("lost the leader lease"), "{}", a.logs());
}

const LEADER_FLAGS: [&str; 3] = ["--leader-elect", "--lease-duration-seconds", "6"];

/// The holder of a Lease, if any.
fn holder(lease: Option<Lease>) -> Option<String> {
    lease.and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

/// Replica a, started with leader election, once it holds the Lease (bounded, 60 s).
async fn leader_a(client: &kube::Client, ns: &str) -> (Operator, Api<Lease>) {
    let a = Operator::start_env(
        ns,
        &LEADER_FLAGS,
        &[("POD_NAMESPACE", ns), ("POD_NAME", "replica-a")],
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while holder(leases.get_opt("rotor-leader").await.unwrap()).as_deref() != Some("replica-a") {
        assert!(Instant::now() < deadline, "replica-a never took the lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (a, leases)
}

/// Every `rotor_kube_requests_total` sample of `op`, by its labels.
async fn kube_requests(op: &Operator) -> std::collections::BTreeMap<String, f64> {
    let (_, text) = http_get(&format!("{}/metrics", op.admin_url)).await;
    text.lines()
        .filter_map(|l| l.strip_prefix("rotor_kube_requests_total"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What rotation number `n` of the resource `token` cost, asked by annotation and
/// measured until it is at rest: (reads, writes, what).
async fn rotation_cost(
    client: &kube::Client,
    ns: &str,
    op: &Operator,
    n: u64,
) -> (f64, f64, String) {
    let requests = kube_requests(op).await;
    rotate(client, ns, "token", &format!("r{n}"), n).await;
    // At rest (a rotation's last request, its Event, may follow its status).
    tokio::time::sleep(Duration::from_secs(3)).await;
    spent(&requests, &kube_requests(op).await)
}

/// Requests between two scrapes, as (reads, writes, what).
fn spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> (f64, f64, String) {
    let (mut reads, mut writes, mut what) = (0.0, 0.0, String::new());
    for (labels, v) in after {
        let d = v - before.get(labels).copied().unwrap_or(0.0);
        if d == 0.0 {
            continue;
        }
        what.push_str(&format!("{labels} {d}\n"));
        if labels.contains("verb=\"get\"") || labels.contains("verb=\"list\"") {
            reads += d;
        } else if !labels.contains("verb=\"watch\"") {
            writes += d;
        }
    }
    (reads, writes, what)
}

/// The watch event of rotor's own target Secret write can come before the write's
/// reply (rotor paused between the two here): it is judged once the reply is in, so it
/// wakes no second reconcile and costs no read. A stranger's change that comes in that
/// gap is not swallowed: it wakes the resource, which puts the credential back.
#[tokio::test]
async fn the_echo_of_a_target_write_wakes_nothing_even_before_its_reply() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "echo").await;
    let manifest = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: token}\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: token-secret, keepPrevious: false}\n  revocation: {minValidity: 0s}\n";
    let started = |n: u64, hold: &support::scenario::Hold| {
        Operator::start_env(
            &ns,
            &[],
            &[
                ("ROTOR_TEST_PAUSE_AT", &format!("target_reply@{n}")),
                ("ROTOR_TEST_HOLD", hold.path()),
            ],
        )
    };
    let hold = support::scenario::Hold::new(&ns);
    hold.arm();
    let op = started(2, &hold);
    apply_yaml(&client, &ns, manifest).await.unwrap();
    rotated(&client, &ns, "token", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (requests, reconciled) = (kube_requests(&op).await, reconciles(&op).await);
    support::scenario::request(&client, &ns, "token", "rotor.dev/rotate", "r2").await;
    wait_log(&op, "failpoint paused", "target_reply@2").await;
    // The target Secret's watch event is in long before this.
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.release();
    rotated(&client, &ns, "token", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (reads, writes, what) = spent(&requests, &kube_requests(&op).await);
    assert_eq!((reads, writes), (1.0, 5.0), "{what}");
    assert_eq!(
        reconciles(&op).await - reconciled,
        1.0,
        "the echo of rotor's own write woke a second reconcile"
    );
    op.stop().await;

    // Rotation 3 pauses at the same point; someone overwrites the credential in the
    // gap. Its event waits for the reply, then wakes the resource: the active
    // credential is back (the resync interval, an hour, plays no part).
    hold.arm();
    let op = started(3, &hold);
    support::scenario::request(&client, &ns, "token", "rotor.dev/rotate", "r3").await;
    wait_log(&op, "failpoint paused", "target_reply@3").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let tampered = serde_json::json!({"data": {"TOKEN": "dGFtcGVyZWQ="}});
    secrets
        .patch(
            "token-secret",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&tampered),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    hold.release();
    rotated(&client, &ns, "token", 3).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let secret = secrets.get("token-secret").await.unwrap();
        let token = secret.data.unwrap_or_default().get("TOKEN").cloned();
        if token.is_some_and(|t| t.0 != b"tampered") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overwritten credential was never put back: a stranger's change during rotor's write was swallowed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_rotation_costs_five_writes_one_read_and_no_second_reconcile() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "cost").await;
    let op = Operator::start(&ns);
    let manifest = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: token}\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: token-secret, keepPrevious: true}\n  revocation: {minValidity: 0s}\n";
    apply_yaml(&client, &ns, manifest).await.unwrap();
    rotated(&client, &ns, "token", 1).await;
    // At rest (a rotation's last request, its Event, may follow its status).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconciled = reconciles(&op).await;
    let (reads, writes, what) = rotation_cost(&client, &ns, &op, 2).await;
    // intent, vault entry (with the last rotation's audit records), target Secret,
    // status (the flip, with this rotation's audit records), Event.
    assert_eq!(writes, 5.0, "{what}");
    assert!(
        what.contains("verb=\"patch\",resource=\"secrets\"} 2"),
        "one escrow write and one target write:\n{what}"
    );
    // The target Secret (the vault is written without a read: its uid is the
    // precondition); a reconcile's reads more (the resource, the target, the vault)
    // only if the watch event of rotor's own Secret write overtook the write's reply
    // (then it is not known as rotor's yet).
    assert!(reads <= 4.0, "{what}");
    let woke = reconciles(&op).await - reconciled;
    assert!(
        woke <= 2.0,
        "rotor's own writes (status, Secret, vault) woke reconciles: {woke}"
    );
    // The rotation's own reconcile trusts the watch cache, which holds the
    // annotation's change (newer than rotor's last write): it does not read the
    // resource. Only a second reconcile, woken by a race above, may find the cache
    // behind rotor's status write and read it.
    let resource_reads: f64 = what
        .lines()
        .filter(|l| l.contains("verb=\"get\"") && l.contains("secretrotations"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        resource_reads < woke,
        "{resource_reads} reads of the resource in {woke} reconciles:\n{what}"
    );

    // A rotation that revokes the target slot's old credential writes the target
    // Secret once more before the revoke (that credential leaves `_PREVIOUS` first);
    // the revoked mark goes with the entry's write (which then reads the escrow), not
    // a write of its own.
    let (reads, writes, what) = rotation_cost(&client, &ns, &op, 3).await;
    assert_eq!(writes, 6.0, "{what}");
    assert!(
        what.contains("verb=\"patch\",resource=\"secrets\"} 3"),
        "the target twice, the escrow once:\n{what}"
    );
    assert!(reads <= 5.0, "{what}");

    // The audit trail misses no step of any rotation and repeats none, across the
    // eighth rotation (whose entry write folds the blind writes' batches in).
    for n in 4..=10 {
        rotate(&client, &ns, "token", &format!("r{n}"), n).await;
    }
    let trail: Vec<serde_json::Value> =
        serde_json::from_str(&rotor_cli(&["audit", "token", "-n", &ns, "-o", "json"])).unwrap();
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in ["issue", "test", "activate"] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            10,
            "one {action} per rotation: {actions:?}"
        );
    }
    let times: Vec<&str> = trail.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.is_sorted(), "oldest first: {times:?}");
    // The last rotation's records are in status until the escrow's next write; every
    // earlier one is in the escrow, whose batches stay few.
    let s = status_of(&client, &ns, "token").await;
    let tail: Vec<&str> = s.audit_tail.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(tail, ["issue", "test", "activate"], "{tail:?}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let escrow = secrets.get("rotor-escrow-token").await.unwrap();
    let data = escrow.data.unwrap_or_default();
    let batches = data.keys().filter(|k| k.starts_with("audit.")).count();
    assert!(
        batches <= 2,
        "batches folded at the eighth rotation: {:?}",
        data.keys()
    );
    let in_escrow = |d: &k8s_openapi::ByteString| -> Vec<serde_json::Value> {
        serde_json::from_slice(&d.0).unwrap()
    };
    let kept: usize = data
        .iter()
        .filter(|(k, _)| k.as_str() == "audit" || k.starts_with("audit."))
        .map(|(_, v)| {
            in_escrow(v)
                .iter()
                .filter(|r| r["action"] == "activate")
                .count()
        })
        .sum();
    assert_eq!(kept, 9, "rotations 1–9 are activated in the escrow itself");

    // Someone else's change of the target Secret still wakes it: deleted, restored.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let before = secrets.get("token-secret").await.unwrap();
    secrets
        .delete("token-secret", &Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let restored = loop {
        if let Some(s) = secrets.get_opt("token-secret").await.unwrap()
            && s.metadata.uid != before.metadata.uid
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted Secret was not restored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(restored.data, before.data, "restored with the same values");
}

/// Deletes the random sample's target Secret while rotor is held at `hold`, lets it
/// go on, and waits (bounded) for its Restored Event and `key` back in the Secret.
async fn deleted_then_restored(
    client: &kube::Client,
    ns: &str,
    hold: &support::scenario::Hold,
    key: Option<String>,
) {
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .delete("app-session-key", &Default::default())
        .await
        .unwrap();
    hold.release();
    wait_for_event(
        client,
        ns,
        "session-key",
        "Restored",
        "written again from the escrow",
        60,
    )
    .await;
    assert_eq!(
        support::scenario::value(client, ns, "app-session-key", "SESSION_SECRET").await,
        key,
        "the same key, back"
    );
}

/// A target Secret deleted while a starting operator has not listed the Secrets yet:
/// rotor neither reconciles nor reports ready before that list (a reconcile before it
/// would see the Secret, and the list would hold no Delete for it), then restores it.
#[tokio::test]
async fn a_target_deleted_before_the_secrets_are_listed_is_restored() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "listed").await;
    let op = Operator::start(&ns);
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    rotated(&client, &ns, "session-key", 1).await;
    let key = support::scenario::value(&client, &ns, "app-session-key", "SESSION_SECRET").await;
    op.stop().await;

    let hold = support::scenario::Hold::new(&ns);
    hold.arm();
    let op = Operator::start_env(
        &ns,
        &[],
        &[
            ("ROTOR_TEST_PAUSE_AT", "secrets_watch@0"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    );
    wait_log(&op, "failpoint paused", "held before the Secrets list").await;
    // Long enough for a reconcile of the one resource (tens of milliseconds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        http_get(&format!("{}/readyz", op.admin_url)).await.0,
        503,
        "not ready before the Secrets are listed"
    );
    deleted_then_restored(&client, &ns, &hold, key).await;
    assert_eq!(http_get(&format!("{}/readyz", op.admin_url)).await.0, 200);
}

/// A target Secret deleted while the Secrets watch is down (it ends, and lists again
/// as after a 410): the new list holds no Delete for it, and rotor still restores it
/// (not at the next resync, hours away).
#[tokio::test]
async fn a_target_deleted_while_the_secrets_watch_is_down_is_restored() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "relist").await;
    let hold = support::scenario::Hold::new(&ns);
    hold.arm();
    let relist = format!("{}.relist", hold.path());
    let op = Operator::start_env(
        &ns,
        &[],
        &[
            ("ROTOR_TEST_PAUSE_AT", "secrets_watch@1"),
            ("ROTOR_TEST_HOLD", hold.path()),
            ("ROTOR_TEST_RELIST", &relist),
        ],
    );
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    rotated(&client, &ns, "session-key", 1).await;
    let key = support::scenario::value(&client, &ns, "app-session-key", "SESSION_SECRET").await;
    assert!(key.is_some());

    // The watch ends; the next one waits at the pause point, before its list.
    std::fs::write(&relist, b"").unwrap();
    wait_log(
        &op,
        "failpoint paused",
        "held before the second Secrets list",
    )
    .await;
    deleted_then_restored(&client, &ns, &hold, key).await;
    wait_log(&op, "without their target Secrets", "the relist woke it").await;
}

/// Lists of Secrets that reached etcd (the API server's
/// `etcd_request_duration_seconds_count`): its cache answers the rest.
async fn etcd_secret_lists(client: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("etcd_request_duration_seconds_count{")
                && l.contains(r#"operation="list""#)
                && l.contains(r#"type="*[]core.Secret""#)
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// rotor's start-up checks learn whether it may list Secrets without reading them.
/// They listed with the Secrets watch's label selector and a limit of one, and for
/// that kube-apiserver 1.20 read the namespace's Secrets from etcd one at a time until
/// one matched: every Secret of a namespace of foreign ones (of the cluster, watching
/// all) — 10,000 reads and seconds at every start in the bench's.
#[tokio::test]
async fn starting_beside_many_foreign_secrets_reads_them_in_pages_not_one_by_one() {
    use futures::StreamExt;
    const FOREIGN: usize = 400;
    let client = control_plane().client().await;
    let ns = namespace(&client, "foreign-secrets").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let made = futures::stream::iter(0..FOREIGN)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                let secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("foreign-{i}")},
                    "stringData": {"key": "not rotor's"},
                }))
                .unwrap();
                secrets.create(&Default::default(), &secret).await.is_ok()
            }
        })
        .buffer_unordered(16)
        .filter(|made| std::future::ready(*made))
        .count()
        .await;
    assert_eq!(made, FOREIGN);
    let before = etcd_secret_lists(&client).await;
    // (The series of kube-apiserver 1.20, the harness's: counted, it is there.)
    assert!(
        before > 0.0,
        "no etcd lists of Secrets counted: the metric is not there"
    );
    let op = Operator::start(&ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&format!("{}/readyz", op.admin_url)).await.0 != 200 {
        assert!(Instant::now() < deadline, "rotor never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lists = etcd_secret_lists(&client).await - before;
    // Its watch's first list: one page of 500 (other tests' starts add a few); a read
    // one by one makes FOREIGN.
    assert!(
        lists < (FOREIGN / 4) as f64,
        "{lists} lists of Secrets reached etcd while rotor started beside {FOREIGN} foreign Secrets"
    );
}
