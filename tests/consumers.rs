//! Consumers: rotor restarts the workloads that read the target Secret and revokes the
//! previous credential only when none of them can still use it. Against the real API
//! server with kube-controller-manager (Deployment, ReplicaSet, StatefulSet
//! controllers); no kubelet runs, so the tests play it by marking pods Ready.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rotor::api::{ConsumerPhase, RESTARTED_AT_ANNOTATION, SlotState};
use serde_json::json;
use std::time::{Duration, Instant};
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "partner-api-key";
const SECRET: &str = "partner-api-key";

/// A Deployment of `replicas` pods that reads `secret` through `envFrom`.
async fn deployment(client: &Client, ns: &str, name: &str, secret: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name, "tier": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.invalid/app:1",
                    "envFrom": [{"secretRef": {"name": secret}}]
                }]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// Plays the kubelet: every pod of `app` not Ready yet becomes Running and Ready.
async fn make_ready(client: &Client, ns: &str, app: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap();
    let mut marked = 0;
    for pod in list.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}
        ]}});
        let name = pod.metadata.name.clone().unwrap();
        if pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .is_ok()
        {
            marked += 1;
        }
    }
    marked
}

/// Whether `kubectl rollout status` would call the Deployment done.
fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
}

/// Marks pods Ready until the Deployment has rolled out (bounded).
async fn roll_out(client: &Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        make_ready(client, ns, name).await;
        if rolled_out(&api.get(name).await.unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{name} did not roll out within 90s: {:?}",
            api.get(name).await.unwrap().status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until rotor has written the restart of `name`'s consumers (after its delay).
async fn restarted(client: &Client, ns: &str, name: &str) {
    wait_status(client, ns, name, 60, "consumers restarted", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.phase != ConsumerPhase::Restarting)
    })
    .await;
}

/// The `rotor.dev/restartedAt` value on a Deployment's pod template.
async fn restarted_at(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .spec?
        .template
        .metadata?
        .annotations?
        .get(RESTARTED_AT_ANNOTATION)
        .cloned()
}

async fn replica_sets(client: &Client, ns: &str, app: &str) -> usize {
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

/// The http sample against `fake`, with `extra` spec fields (YAML at spec's indent).
fn http_with(fake: &fakes::Fake<fakes::KeyApi>, extra: &str) -> String {
    let sample = http_sample(fake);
    sample.replace("  schedule:\n", &format!("{extra}  schedule:\n"))
}

/// Whether the key-API fake still accepts the key with id `id`.
fn live(fake: &fakes::Fake<fakes::KeyApi>, id: &str) -> bool {
    fake.lock().keys.contains_key(id)
}

#[tokio::test]
async fn the_previous_credential_is_revoked_once_every_consumer_rolled_out() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-rollout").await;
    let fake = fakes::key_api().await;
    deployment(&client, &ns, "web", SECRET, 2).await;
    roll_out(&client, &ns, "web").await;
    let _op = Operator::start_with(&ns, FAST);
    let spec = http_with(
        &fake,
        "  consumers:\n    workloads: [{kind: Deployment, name: web}]\n  revocation:\n    after: Rollout\n    minValidity: 0s\n",
    );
    apply_yaml(&client, &ns, &spec).await.unwrap();
    let first = rotated(&client, &ns, NAME, 1).await;
    let token1 = first.consumers.as_ref().unwrap().token.clone();
    restarted(&client, &ns, NAME).await;
    roll_out(&client, &ns, "web").await;
    wait_status(&client, &ns, NAME, 60, "first rollout followed", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.phase == ConsumerPhase::RolledOut)
    })
    .await;
    assert_eq!(
        restarted_at(&client, &ns, "web").await.as_deref(),
        Some(token1.as_str())
    );
    let old_id = first.slots[0].id.clone();
    let old_value = value(&client, &ns, SECRET, "PARTNER_API_KEY")
        .await
        .unwrap();

    // Rotation 2: the Deployment gets this rotation's token; its new pods are not
    // Ready, so the old credential stays valid at the vendor and in _PREVIOUS.
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let token2 = second.consumers.as_ref().unwrap().token.clone();
    assert!(token2.starts_with("2-"), "{token2}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted_at(&client, &ns, "web").await.as_deref() != Some(token2.as_str()) {
        assert!(
            Instant::now() < deadline,
            "web was not restarted for rotation 2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        live(&fake, &old_id),
        "revoked while the rollout had not even started"
    );
    assert_eq!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS")
            .await
            .as_deref(),
        Some(old_value.as_str()),
        "pods not rolled out still read the old credential"
    );
    let s = status_of(&client, &ns, NAME).await;
    assert_eq!(
        s.consumers.as_ref().unwrap().phase,
        ConsumerPhase::RollingOut
    );
    assert!(s.slots.iter().all(|s| s.state != SlotState::Revoked));

    // The kubelet (this test) brings the new pods up: revoked, out of the Secret.
    roll_out(&client, &ns, "web").await;
    let e = wait_for_event(&client, &ns, NAME, "PreviousRevoked", &old_id, 60).await;
    assert!(
        e.note
            .unwrap_or_default()
            .contains("every consumer has rolled out"),
        "the Event says why"
    );
    assert!(
        !live(&fake, &old_id),
        "the old key is revoked at the vendor"
    );
    assert_eq!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS").await,
        None,
        "_PREVIOUS is gone"
    );
    let s = status_of(&client, &ns, NAME).await;
    let previous = s.slots.iter().find(|x| x.index != s.active_index).unwrap();
    assert_eq!(previous.state, SlotState::Revoked);
    assert!(
        s.last_rotation_message.contains("revoked"),
        "{}",
        s.last_rotation_message
    );
    // One restart per rotation: the initial ReplicaSet and one per rotation.
    assert_eq!(replica_sets(&client, &ns, "web").await, 3);
}

#[tokio::test]
async fn a_stuck_rollout_keeps_the_old_credential_or_revokes_it_as_told() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    for on_timeout in ["Keep", "Revoke"] {
        let ns = namespace(&client, &format!("c-stuck-{}", on_timeout.to_lowercase())).await;
        let fake = fakes::key_api().await;
        deployment(&client, &ns, "web", SECRET, 1).await;
        roll_out(&client, &ns, "web").await;
        let op = Operator::start_with(&ns, FAST);
        let spec = http_with(
            &fake,
            &format!(
                "  consumers:\n    workloads: [{{kind: Deployment, name: web}}]\n  revocation:\n    after: Rollout\n    minValidity: 0s\n    maxWait: 4s\n    onTimeout: {on_timeout}\n"
            ),
        );
        apply_yaml(&client, &ns, &spec).await.unwrap();
        rotated(&client, &ns, NAME, 1).await;
        restarted(&client, &ns, NAME).await;
        roll_out(&client, &ns, "web").await;
        let second = rotate(&client, &ns, NAME, "r2", 2).await;
        let old_id = second
            .slots
            .iter()
            .find(|s| s.index != second.active_index)
            .unwrap()
            .id
            .clone();
        // Nobody marks the new pods Ready: the rollout never finishes.
        let stuck = wait_for_event(
            &client,
            &ns,
            NAME,
            "ConsumerRolloutStuck",
            "Deployment/web",
            60,
        )
        .await;
        assert!(stuck.note.unwrap_or_default().contains("maxWait (4s)"));
        match on_timeout {
            "Keep" => {
                let s = wait_status(&client, &ns, NAME, 30, "Degraded", |s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Degraded"
                            && c.status == "True"
                            && c.reason == "ConsumerRolloutStuck"
                    })
                })
                .await
                .status
                .unwrap();
                assert_eq!(s.consumers.unwrap().phase, ConsumerPhase::Stuck);
                tokio::time::sleep(Duration::from_secs(3)).await;
                assert!(live(&fake, &old_id), "Keep keeps the old credential valid");
                assert!(
                    value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS")
                        .await
                        .is_some()
                );
                // The next rotation would revoke it: it waits, and says why.
                request(&client, &ns, NAME, "rotor.dev/rotate", "r3").await;
                let held = wait_status(&client, &ns, NAME, 30, "held", |s| {
                    s.last_rotation_message.contains("is held")
                })
                .await
                .status
                .unwrap();
                assert_eq!(held.rotation_count, 2, "{}", held.last_rotation_message);
                assert!(held.last_rotation_message.contains("Deployment/web"));
                assert!(live(&fake, &old_id));
            }
            _ => {
                let e = wait_for_event(&client, &ns, NAME, "PreviousRevoked", &old_id, 60).await;
                assert!(e.note.unwrap_or_default().contains("onTimeout: Revoke"));
                assert!(!live(&fake, &old_id), "Revoke revokes anyway");
                assert_eq!(
                    value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS").await,
                    None
                );
            }
        }
        drop(op);
    }
}

#[tokio::test]
async fn an_operator_restart_mid_rollout_neither_restarts_again_nor_revokes_twice() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-crash").await;
    let fake = fakes::key_api().await;
    deployment(&client, &ns, "web", SECRET, 1).await;
    roll_out(&client, &ns, "web").await;
    let op = Operator::start_with(&ns, FAST);
    let spec = http_with(
        &fake,
        "  consumers:\n    workloads: [{kind: Deployment, name: web}]\n  revocation:\n    after: Rollout\n    minValidity: 0s\n",
    );
    apply_yaml(&client, &ns, &spec).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    restarted(&client, &ns, NAME).await;
    roll_out(&client, &ns, "web").await;
    wait_status(&client, &ns, NAME, 60, "rolled out", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.phase == ConsumerPhase::RolledOut)
    })
    .await;
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let token2 = second.consumers.as_ref().unwrap().token.clone();
    wait_status(&client, &ns, NAME, 30, "restarted", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.phase == ConsumerPhase::RollingOut)
    })
    .await;
    let sets = replica_sets(&client, &ns, "web").await;
    op.stop().await;

    let op2 = Operator::start_with(&ns, FAST);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        restarted_at(&client, &ns, "web").await.as_deref(),
        Some(token2.as_str())
    );
    assert_eq!(
        replica_sets(&client, &ns, "web").await,
        sets,
        "no second restart"
    );
    roll_out(&client, &ns, "web").await;
    wait_for_event(&client, &ns, NAME, "PreviousRevoked", "", 60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let revoked = event_reasons(&client, &ns, NAME)
        .await
        .into_iter()
        .filter(|r| r == "PreviousRevoked")
        .count();
    assert_eq!(revoked, 1, "revoked once");
    assert_eq!(
        fake.lock().deleted.len(),
        1,
        "one revoke call at the vendor"
    );
    drop(op2);
}

#[tokio::test]
async fn two_rotations_of_one_workload_in_the_same_second_cause_one_rollout() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-coalesce").await;
    // One Deployment reading two Secrets, each rotated by its own SecretRotation.
    deployment(&client, &ns, "web", "token-a", 1).await;
    roll_out(&client, &ns, "web").await;
    let op = Operator::start_with(&ns, FAST);
    for (name, secret) in [("a", "token-a"), ("b", "token-b")] {
        let yaml = format!(
            "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {{name: {name}}}\nspec:\n  provider: {{random: {{length: 24}}}}\n  secretsMapping: {{value: TOKEN}}\n  target: {{name: {secret}}}\n  revocation: {{minValidity: 0s}}\n  schedule: {{autoRotation: false}}\n  consumers:\n    workloads: [{{kind: Deployment, name: web}}]\n"
        );
        apply_yaml(&client, &ns, &yaml).await.unwrap();
        rotated(&client, &ns, name, 1).await;
        restarted(&client, &ns, name).await;
    }
    roll_out(&client, &ns, "web").await;
    for name in ["a", "b"] {
        wait_status(&client, &ns, name, 60, "rolled out", |s| {
            s.consumers
                .as_ref()
                .is_some_and(|c| c.phase == ConsumerPhase::RolledOut)
        })
        .await;
    }
    let before = replica_sets(&client, &ns, "web").await;
    // Both rotated in the same second.
    request(&client, &ns, "a", "rotor.dev/rotate", "now").await;
    request(&client, &ns, "b", "rotor.dev/rotate", "now").await;
    let a = rotated(&client, &ns, "a", 2).await;
    let b = rotated(&client, &ns, "b", 2).await;
    let (ta, tb) = (a.consumers.unwrap().token, b.consumers.unwrap().token);
    for name in ["a", "b"] {
        wait_status(&client, &ns, name, 30, "restarted", |s| {
            s.consumers
                .as_ref()
                .is_some_and(|c| c.phase != ConsumerPhase::Restarting)
        })
        .await;
    }
    let value = restarted_at(&client, &ns, "web").await.unwrap();
    let log: Vec<String> = op
        .logs()
        .lines()
        .filter(|l| l.contains("\"rotated\"") || l.contains("rotating"))
        .map(|l| l.chars().take(300).collect())
        .collect();
    assert!(
        value.split(',').any(|t| t == ta) && value.split(',').any(|t| t == tb),
        "one restart carries both rotations: {value}; {log:#?}"
    );
    let mut restarts = Vec::new();
    for name in ["a", "b"] {
        for e in events_for(&client, &ns, name).await {
            if e.reason.as_deref() == Some("ConsumersRestarted") {
                restarts.push(format!("{name}: {}", e.note.unwrap_or_default()));
            }
        }
    }
    assert_eq!(
        replica_sets(&client, &ns, "web").await,
        before + 1,
        "one rollout; restarts: {restarts:#?}"
    );
}

#[tokio::test]
async fn discover_finds_the_workloads_that_read_the_secret_and_no_other() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-discover").await;
    deployment(&client, &ns, "reader", "app-token", 1).await;
    deployment(&client, &ns, "other", "another-secret", 1).await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "vol"},
        "spec": {
            "serviceName": "vol",
            "selector": {"matchLabels": {"app": "vol"}},
            "template": {
                "metadata": {"labels": {"app": "vol"}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.invalid/app:1",
                        "volumeMounts": [{"name": "t", "mountPath": "/t"}]}],
                    "volumes": [{"name": "t", "secret": {"secretName": "app-token"}}]
                }
            }
        }
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let _op = Operator::start_with(&ns, FAST);
    let yaml = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: token}\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: app-token}\n  consumers: {discover: true}\n";
    apply_yaml(&client, &ns, yaml).await.unwrap();
    let s = rotated(&client, &ns, "token", 1).await;
    let found: Vec<String> = s
        .consumers
        .unwrap()
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.kind.as_str(), w.name))
        .collect();
    assert_eq!(found, ["Deployment/reader", "StatefulSet/vol"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while restarted_at(&client, &ns, "reader").await.is_none() {
        assert!(Instant::now() < deadline, "the reader was not restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        restarted_at(&client, &ns, "other").await,
        None,
        "another Secret's reader is left alone"
    );
}

#[tokio::test]
async fn a_rotation_that_fails_after_its_revoke_leaves_no_revoked_previous() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "c-no-revoked").await;
    let fake = fakes::key_api().await;
    let _op = Operator::start_with(&ns, FAST);
    let spec = http_with(&fake, "  revocation:\n    minValidity: 0s\n");
    apply_yaml(&client, &ns, &spec).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    let first_value = value(&client, &ns, SECRET, "PARTNER_API_KEY")
        .await
        .unwrap();
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let first_id = second
        .slots
        .iter()
        .find(|s| s.index == 0)
        .unwrap()
        .id
        .clone();
    assert_eq!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS")
            .await
            .as_deref(),
        Some(first_value.as_str())
    );
    // Rotation 3 revokes the first key (slot 0), then its issue fails.
    fake.lock().knobs.garbage = true;
    request(&client, &ns, NAME, "rotor.dev/rotate", "r3").await;
    failed(&client, &ns, NAME).await;
    assert!(!live(&fake, &first_id), "the revoke happened");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS").await,
        None,
        "the Secret never serves the revoked key"
    );
    let s = status_of(&client, &ns, NAME).await;
    let slot0 = s.slots.iter().find(|s| s.index == 0).unwrap();
    assert_eq!(slot0.state, SlotState::Revoked);
    // Deleting the Secret: the restore brings back the active key, not the revoked one.
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .delete(SECRET, &Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while value(&client, &ns, SECRET, "PARTNER_API_KEY")
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "not restored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS").await,
        None
    );
}
