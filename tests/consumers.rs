//! Consumers: rotor restarts the workloads that read the target Secret and revokes the
//! previous credential only when none of them can still use it. Against the real API
//! server with kube-controller-manager (Deployment, ReplicaSet, StatefulSet
//! controllers); no kubelet runs, so the tests play it by marking pods Ready.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rotor::api::{ConsumerPhase, MAX_RESTARTS, RESTARTED_AT_ANNOTATION, SlotState};
use serde_json::json;
use std::time::{Duration, Instant};
use support::fakes;
use support::scenario::*;
use support::*;

const NAME: &str = "partner-api-key";
const SECRET: &str = "partner-api-key";

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

/// Waits (bounded by `secs`) until rotor says every consumer of `name`'s rotation rolled
/// out; its status then.
async fn consumers_rolled_out(
    client: &Client,
    ns: &str,
    name: &str,
    secs: u64,
    what: &str,
) -> rotor::api::SecretRotationStatus {
    wait_status(client, ns, name, secs, what, |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.phase == ConsumerPhase::RolledOut)
    })
    .await
    .status
    .unwrap()
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

/// Whether the Deployment's pod template carries rotation token `token`.
async fn carries(client: &Client, ns: &str, name: &str, token: &str) -> bool {
    restarted_at(client, ns, name)
        .await
        .is_some_and(|v| v.split(',').any(|t| t == token))
}

/// Plays `kubectl rollout undo`: the Deployment's pod template goes back to the one
/// whose `rotor.dev/restartedAt` was `value` (its ReplicaSet, with its pods from
/// before, is scaled up again).
async fn roll_back(client: &Client, ns: &str, name: &str, value: &str) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: value}}}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Waits (bounded by `secs`) until `web`'s pod template carries `token`.
async fn carries_within(client: &Client, ns: &str, token: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !carries(client, ns, "web", token).await {
        assert!(
            Instant::now() < deadline,
            "web was not restarted for {token} within {secs}s: {:?}",
            status_of(client, ns, NAME).await.consumers
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The id of the credential in the slot that is not active.
fn previous_id(s: &rotor::api::SecretRotationStatus) -> String {
    s.slots
        .iter()
        .find(|x| x.index != s.active_index)
        .unwrap()
        .id
        .clone()
}

/// How many ReplicaSets Deployment `app` has, once its controller has seen its latest
/// template: it creates a restart's ReplicaSet before it reports that generation
/// observed, so a count taken earlier could miss a restart rotor already wrote.
async fn replica_sets(client: &Client, ns: &str, app: &str) -> usize {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = api.get(app).await.unwrap();
        let seen = d.status.as_ref().and_then(|s| s.observed_generation);
        if seen >= d.metadata.generation {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{app}: generation {:?} not observed within 30s (observed {seen:?})",
            d.metadata.generation
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

/// The http sample against `fake`, with `extra` spec fields (YAML at spec's indent).
fn http_with(fake: &fakes::Fake<fakes::KeyApi>, extra: &str) -> String {
    let sample = http_sample_as_shipped(fake);
    sample.replace("  schedule:\n", &format!("{extra}  schedule:\n"))
}

/// Whether the key-API fake still accepts the key with id `id`.
fn live(fake: &fakes::Fake<fakes::KeyApi>, id: &str) -> bool {
    fake.lock().keys.contains_key(id)
}

/// A Deployment `web` of `replicas` pods reading the target Secret, rolled out; an
/// operator; the http sample against `fake` with `web` as its consumer and
/// `revocation` (YAML lines at the spec's indent); its first rotation's restart
/// rolled out. Keep the operator alive for the test.
async fn first_rotation_rolled_out(
    client: &Client,
    ns: &str,
    fake: &fakes::Fake<fakes::KeyApi>,
    replicas: i32,
    revocation: &str,
) -> (Operator, rotor::api::SecretRotationStatus) {
    first_rotation_rolled_out_env(client, ns, fake, replicas, revocation, &[]).await
}

/// [`first_rotation_rolled_out`] with `env` for the operator.
async fn first_rotation_rolled_out_env(
    client: &Client,
    ns: &str,
    fake: &fakes::Fake<fakes::KeyApi>,
    replicas: i32,
    revocation: &str,
    env: &[(&str, &str)],
) -> (Operator, rotor::api::SecretRotationStatus) {
    deployment_reading(client, ns, "web", SECRET, replicas).await;
    roll_out(client, ns, "web").await;
    let op = Operator::start_env(ns, FAST, env);
    let spec = http_with(
        fake,
        &format!(
            "  consumers:\n    workloads: [{{kind: Deployment, name: web}}]\n  revocation:\n{revocation}"
        ),
    );
    apply_yaml(client, ns, &spec).await.unwrap();
    let first = rotated(client, ns, NAME, 1).await;
    restarted(client, ns, NAME).await;
    roll_out(client, ns, "web").await;
    consumers_rolled_out(client, ns, NAME, 60, "first rollout followed").await;
    (op, first)
}

#[tokio::test]
async fn the_previous_credential_is_revoked_once_every_consumer_rolled_out() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-rollout").await;
    let fake = fakes::key_api().await;
    let (_op, first) = first_rotation_rolled_out(
        &client,
        &ns,
        &fake,
        2,
        "    after: Rollout\n    minValidity: 0s\n",
    )
    .await;
    let token1 = first.consumers.as_ref().unwrap().token.clone();
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
    let rotated_at = Instant::now();
    carries_within(&client, &ns, &token2, 30).await;
    // Printed, never asserted (`cargo test -- --nocapture`): for the closing notes.
    eprintln!(
        "measured: rotation → restart written {:?}",
        rotated_at.elapsed()
    );
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
    let rolled_out_at = Instant::now();
    let e = wait_for_event(&client, &ns, NAME, "PreviousRevoked", &old_id, 60).await;
    eprintln!(
        "measured: rolled out → PreviousRevoked {:?}",
        rolled_out_at.elapsed()
    );
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
    // Status follows the Event within the same reconcile.
    let s = wait_status(&client, &ns, NAME, 30, "the slot revoked", |s| {
        s.slots
            .iter()
            .any(|x| x.index != s.active_index && x.state == SlotState::Revoked)
    })
    .await
    .status
    .unwrap();
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
        let revocation = format!(
            "    after: Rollout\n    minValidity: 0s\n    maxWait: 4s\n    onTimeout: {on_timeout}\n"
        );
        let (op, _) = first_rotation_rolled_out(&client, &ns, &fake, 1, &revocation).await;
        let second = rotate(&client, &ns, NAME, "r2", 2).await;
        let old_id = previous_id(&second);
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
                // Stuck is looked at every 30 s, not in a loop.
                let before = reconciles(&op).await;
                tokio::time::sleep(Duration::from_secs(6)).await;
                let during = reconciles(&op).await - before;
                assert!(during <= 3.0, "{during} reconciles in 6 s while stuck");
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
    let (op, _) = first_rotation_rolled_out(
        &client,
        &ns,
        &fake,
        1,
        "    after: Rollout\n    minValidity: 0s\n",
    )
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
    assert!(carries(&client, &ns, "web", &token2).await);
    assert_eq!(
        replica_sets(&client, &ns, "web").await,
        sets,
        "no second restart"
    );
    let s = status_of(&client, &ns, NAME).await;
    let web = &s.consumers.as_ref().unwrap().workloads[0];
    assert_eq!(
        web.restarts, 1,
        "one restart written for rotation 2: {web:?}"
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
async fn a_rollback_during_the_rollout_is_restarted_again_and_never_passes_as_rolled_out() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-undo").await;
    let fake = fakes::key_api().await;
    let (_op, first) = first_rotation_rolled_out(
        &client,
        &ns,
        &fake,
        1,
        "    after: Rollout\n    minValidity: 0s\n",
    )
    .await;
    let token1 = first.consumers.as_ref().unwrap().token.clone();

    // Rotation 2 restarts web; its new pod is not Ready. Someone rolls web back to
    // rotation 1's template: that ReplicaSet's pod, started before rotation 2's
    // Secret, runs again, and the Deployment reports rolled out at once.
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let token2 = second.consumers.as_ref().unwrap().token.clone();
    let old_id = previous_id(&second);
    carries_within(&client, &ns, &token2, 30).await;
    let written = restarted_at(&client, &ns, "web").await.unwrap();
    assert_eq!(
        written,
        format!("{token1},{token2}"),
        "rotation 1's token is kept"
    );
    roll_back(&client, &ns, "web", &token1).await;
    // rotor sees the token gone and restarts web again instead of calling the
    // rollback a rollout.
    carries_within(&client, &ns, &token2, 30).await;
    let c = wait_status(&client, &ns, NAME, 30, "restarted again", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.workloads[0].restarts == 2)
    })
    .await
    .status
    .unwrap()
    .consumers
    .unwrap();
    assert_eq!(c.phase, ConsumerPhase::RollingOut);
    assert!(!c.workloads[0].rolled_out);
    assert!(
        live(&fake, &old_id),
        "revoked while pods from before the rotation ran"
    );
    wait_for_event(&client, &ns, NAME, "ConsumersRestarted", "again", 30).await;
    // Its new pod comes up: now the previous credential goes.
    roll_out(&client, &ns, "web").await;
    wait_for_event(&client, &ns, NAME, "PreviousRevoked", &old_id, 60).await;
    assert!(!live(&fake, &old_id));

    // Rotation 3, rolled back again and again: restarted at most MAX_RESTARTS times in
    // all, then left to revocation.maxWait — never counted as rolled out.
    let third = rotate(&client, &ns, NAME, "r3", 3).await;
    let token3 = third.consumers.as_ref().unwrap().token.clone();
    let old_id = previous_id(&third);
    carries_within(&client, &ns, &token3, 30).await;
    for n in 2..=MAX_RESTARTS {
        roll_back(&client, &ns, "web", &format!("{token1},{token2}")).await;
        carries_within(&client, &ns, &token3, 30).await;
        wait_status(&client, &ns, NAME, 30, "restarted again", |s| {
            s.consumers
                .as_ref()
                .is_some_and(|c| c.workloads[0].restarts == n)
        })
        .await;
    }
    roll_back(&client, &ns, "web", &format!("{token1},{token2}")).await;
    wait_status(&client, &ns, NAME, 30, "not restarted again", |s| {
        s.consumers
            .as_ref()
            .is_some_and(|c| c.workloads[0].message.contains("not restarted again"))
    })
    .await;
    roll_out(&client, &ns, "web").await;
    // Longer than a look (5 s): still not rolled out, the credential still valid.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!carries(&client, &ns, "web", &token3).await);
    let c = status_of(&client, &ns, NAME).await.consumers.unwrap();
    assert_eq!(c.phase, ConsumerPhase::RollingOut, "{:?}", c.workloads);
    assert_eq!(c.workloads[0].restarts, MAX_RESTARTS);
    assert!(!c.workloads[0].rolled_out);
    assert!(
        live(&fake, &old_id),
        "revoked while pods from before rotation 3 run"
    );
}

/// The restart is written only over the object it read: another writer's change in
/// between (here another SecretRotation's token, as its restart writes it) makes the
/// API server refuse the write (resourceVersion precondition), and rotor reads again
/// and keeps that token. Written blind, the value from before would drop it — and that
/// rotation would see its restart undone.
#[tokio::test]
async fn a_restart_written_over_a_change_since_its_read_keeps_the_change() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-race").await;
    let fake = fakes::key_api().await;
    let hold = Hold::new(&ns);
    let (op, first) = first_rotation_rolled_out_env(
        &client,
        &ns,
        &fake,
        1,
        "    after: Rollout\n    minValidity: 0s\n",
        &[
            ("ROTOR_TEST_PAUSE_AT", "before_restart_write@2"),
            ("ROTOR_TEST_HOLD", hold.path()),
        ],
    )
    .await;
    let token1 = first.consumers.as_ref().unwrap().token.clone();

    hold.arm();
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let token2 = second.consumers.as_ref().unwrap().token.clone();
    wait_log(&op, "failpoint paused", "before_restart_write@2").await;
    // Another rotation's restart lands in between.
    let other = "7-0a1b2c3d";
    roll_back(&client, &ns, "web", &format!("{token1},{other}")).await;
    hold.release();

    carries_within(&client, &ns, &token2, 30).await;
    assert_eq!(
        restarted_at(&client, &ns, "web").await.unwrap(),
        format!("{token1},{other},{token2}"),
        "the token written in between is kept"
    );
    roll_out(&client, &ns, "web").await;
    let c = consumers_rolled_out(&client, &ns, NAME, 60, "rolled out")
        .await
        .consumers
        .unwrap();
    assert_eq!(
        c.workloads[0].restarts, 1,
        "a refused write is not a restart"
    );
}

#[tokio::test]
async fn a_restart_that_cannot_be_written_is_stuck_at_max_wait_and_still_retried() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-refused").await;
    let fake = fakes::key_api().await;
    deployment_reading(&client, &ns, "web", SECRET, 1).await;
    // The pod template's annotations fill the API server's 256 KiB limit but for a few
    // bytes: rotor's restart annotation does not fit (422 Invalid).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let filler = "x".repeat(262_144 - "filler".len() - 8);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"filler": filler}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    roll_out(&client, &ns, "web").await;
    let _op = Operator::start_with(&ns, FAST);
    let spec = http_with(
        &fake,
        "  consumers:\n    workloads: [{kind: Deployment, name: web}]\n  revocation:\n    after: Rollout\n    minValidity: 0s\n    maxWait: 6s\n",
    );
    apply_yaml(&client, &ns, &spec).await.unwrap();
    let first = rotated(&client, &ns, NAME, 1).await;
    let token = first.consumers.as_ref().unwrap().token.clone();
    // The write keeps failing: at maxWait the rotation says it is stuck, and why.
    let stuck = wait_for_event(
        &client,
        &ns,
        NAME,
        "ConsumerRolloutStuck",
        "restart failed",
        60,
    )
    .await;
    assert!(
        stuck
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("maxWait (6s)"),
        "{:?}",
        stuck.note
    );
    let s = wait_status(&client, &ns, NAME, 30, "Degraded", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Degraded" && c.status == "True" && c.reason == "ConsumerRolloutStuck"
        })
    })
    .await
    .status
    .unwrap();
    let c = s.consumers.unwrap();
    assert_eq!(c.phase, ConsumerPhase::Stuck);
    assert!(
        c.workloads[0].message.starts_with("restart failed"),
        "{}",
        c.workloads[0].message
    );
    assert_eq!(c.workloads[0].restarts, 0);
    // Stuck, the restart is still retried (every 30 s): once it fits, it is written
    // and the rollout followed to its end.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"filler": null}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    carries_within(&client, &ns, &token, 60).await;
    roll_out(&client, &ns, "web").await;
    let s = consumers_rolled_out(&client, &ns, NAME, 60, "rolled out").await;
    assert_eq!(s.consumers.unwrap().workloads[0].restarts, 1);
}

#[tokio::test]
async fn two_rotations_of_one_workload_in_the_same_second_cause_one_rollout() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-coalesce").await;
    // One Deployment reading two Secrets, each rotated by its own SecretRotation.
    deployment_reading(&client, &ns, "web", "token-a", 1).await;
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
        consumers_rolled_out(&client, &ns, name, 60, "rolled out").await;
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
    deployment_reading(&client, &ns, "reader", "app-token", 1).await;
    deployment_reading(&client, &ns, "other", "another-secret", 1).await;
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

#[tokio::test]
async fn an_open_postgres_session_of_the_old_user_holds_its_revocation() {
    let pg = support::postgres::postgres();
    pg.admin_sql("CREATE DATABASE app").await;
    pg.admin_sql("CREATE ROLE app_rw").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "c-pg-usage").await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = sample("postgres.yaml")
        .replace("host: postgres.example.com", "host: 127.0.0.1")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &pg.admin_password)
        .replace(
            "  schedule:\n",
            "  revocation: {after: Rollout, minValidity: 0s}\n  schedule:\n",
        );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "app-db-login", 1).await;
    let user = value(&client, &ns, "app-db-login", "DB_USER")
        .await
        .unwrap();
    let password = value(&client, &ns, "app-db-login", "DB_PASSWORD")
        .await
        .unwrap();
    // A pod that loaded the first login keeps a session open.
    let session = pg.session(&user, &password, "app").await;
    rotate(&client, &ns, "app-db-login", "r2", 2).await;
    let held = wait_status(
        &client,
        &ns,
        "app-db-login",
        30,
        "held by the session",
        |s| s.last_rotation_message.contains("in use (1 session)"),
    )
    .await
    .status
    .unwrap();
    assert!(held.slots.iter().all(|s| s.state != SlotState::Revoked));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pg.can_login(&user, &password, "app").await,
        "not revoked under the session"
    );
    session
        .simple_query("SELECT 1")
        .await
        .expect("the session still works");

    // The session ends: the revocation goes through.
    drop(session);
    wait_for_event(&client, &ns, "app-db-login", "PreviousRevoked", &user, 60).await;
    assert!(
        !pg.can_login(&user, &password, "app").await,
        "revoked once unused"
    );
    assert_eq!(
        value(&client, &ns, "app-db-login", "DB_PASSWORD_PREVIOUS").await,
        None
    );
}

type Bodies = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver on 127.0.0.1 that checks every signature: the bodies whose
/// signature verified, and every body it was sent.
async fn receiver(key: &'static str) -> (String, Bodies, Bodies) {
    use axum::http::{HeaderMap, StatusCode};
    let got: Bodies = Default::default();
    let all: Bodies = Default::default();
    let (seen, sent) = (got.clone(), all.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, sent) = (seen.clone(), sent.clone());
            async move {
                sent.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                let header = headers
                    .get("X-Rotor-Signature")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let t = header
                    .split(',')
                    .find_map(|p| p.strip_prefix("t="))
                    .unwrap_or_default();
                let v1 = header
                    .split(',')
                    .find_map(|p| p.strip_prefix("v1="))
                    .unwrap_or_default();
                // The receiver's own check, as the README shows it.
                let mut signed = format!("{t}.").into_bytes();
                signed.extend_from_slice(&body);
                let want = hex::encode(rotor::rotation::hmac_sha256(key.as_bytes(), &signed));
                if want != v1 {
                    return StatusCode::UNAUTHORIZED;
                }
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got, all)
}

#[tokio::test]
async fn a_signed_webhook_hears_rotations_and_staleness_without_values() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "c-webhook").await;
    let (url, got, all) = receiver("whsec-0123456789abcdef").await;
    let op = Operator::start_with(&ns, FAST);
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hook-key, annotations: {{rotor.dev/allow-read: token}}}}\nstringData: {{key: whsec-0123456789abcdef}}\n---\napiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {{name: token}}\nspec:\n  provider: {{random: {{length: 24}}}}\n  secretsMapping: {{value: TOKEN}}\n  target: {{name: app-token}}\n  schedule: {{autoRotation: false}}\n  maxAge: 4s\n  notify:\n    webhook: {{url: \"{url}\", signingSecretRef: {{name: hook-key, key: key}}}}\n"
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    // A SecretRotation whose "signing key" is a Secret that never shared itself (a
    // database password): rotor never signs with it, so nobody can guess it offline.
    let sneaky = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: db-password}}\nstringData: {{password: hunter2}}\n---\napiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {{name: sneaky}}\nspec:\n  provider: {{random: {{length: 24}}}}\n  secretsMapping: {{value: TOKEN}}\n  target: {{name: sneaky-token}}\n  notify:\n    webhook: {{url: \"{url}\", signingSecretRef: {{name: db-password, key: password}}}}\n"
    );
    apply_yaml(&client, &ns, &sneaky).await.unwrap();
    rotated(&client, &ns, "sneaky", 1).await;
    let s = rotated(&client, &ns, "token", 1).await;
    let fingerprint = s.slots[0].fingerprint.clone();
    // autoRotation is off: four seconds later the credential is older than maxAge.
    let stale = wait_status(&client, &ns, "token", 30, "Stale", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Stale" && c.status == "True" && c.reason == "MaxAgeExceeded")
    })
    .await
    .status
    .unwrap();
    assert_eq!(
        stale.rotation_status,
        rotor::api::RotationPhase::Success,
        "stale, not failed"
    );
    wait_for_event(&client, &ns, "token", "Stale", "older than spec.maxAge", 30).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or_default().to_string())
            .collect();
        if events.contains(&"Stale".to_string()) {
            break events;
        }
        assert!(Instant::now() < deadline, "webhook heard only {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        events,
        ["Rotated", "Stale"],
        "each once, in order, every signature valid"
    );
    assert!(
        all.lock().unwrap().iter().all(|b| b["name"] != "sneaky"),
        "nothing signed with an unshared Secret"
    );
    wait_metric(
        &op,
        r#"rotor_webhook_deliveries_total{result="failed"}"#,
        1.0,
    )
    .await;
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies[0]["namespace"], ns.as_str());
    assert_eq!(bodies[0]["name"], "token");
    assert_eq!(bodies[0]["fingerprint"], fingerprint.as_str());
    assert_eq!(bodies[0]["rotation"], 1);
    // The suite's leak scan: no value in any body.
    let token = value(&client, &ns, "app-token", "TOKEN").await.unwrap();
    remember_issued(&token);
    let text = serde_json::to_string(&bodies).unwrap();
    let mut values = issued();
    values.push("whsec-0123456789abcdef".into());
    assert_eq!(find_leak(&text, &values), None, "{text}");
    // The age gauge.
    let max_age = format!(r#"rotor_credential_max_age_seconds{{namespace="{ns}",name="token"}}"#);
    assert_eq!(metric(&op, &max_age).await, Some(4.0));
    let scrape = metric(
        &op,
        &format!(r#"rotor_credential_age_seconds{{namespace="{ns}",name="token"}}"#),
    )
    .await;
    assert!(scrape.is_some_and(|age| age >= 4.0), "{scrape:?}");
    assert_no_leak(&client, &ns, "token", &op.logs(), &[token]).await;
}

#[tokio::test]
async fn a_third_rotation_minutes_after_the_second_waits_for_min_validity() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "c-min-validity").await;
    let fake = fakes::key_api().await;
    let _op = Operator::start_with(&ns, FAST);
    // The default minValidity (10m): nothing in the spec about revocation.
    let shipped = http_sample_as_shipped(&fake);
    assert!(!shipped.contains("revocation"));
    apply_yaml(&client, &ns, &shipped).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let first_id = second
        .slots
        .iter()
        .find(|s| s.index == 0)
        .unwrap()
        .id
        .clone();
    // A second `rotor rotate` a moment later would revoke the key pods loaded a
    // moment ago: it waits, and says until when.
    request(&client, &ns, NAME, "rotor.dev/rotate", "r3").await;
    let held = wait_status(&client, &ns, NAME, 30, "held", |s| {
        s.last_rotation_message
            .contains("is held: revocation.minValidity")
    })
    .await
    .status
    .unwrap();
    assert_eq!(held.rotation_count, 2);
    assert!(
        held.last_rotation_message.contains("stays valid until"),
        "{}",
        held.last_rotation_message
    );
    assert_eq!(held.rotation_status, rotor::api::RotationPhase::Success);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(live(&fake, &first_id), "the first key is still valid");
    // An emergency is not held.
    request(&client, &ns, NAME, "rotor.dev/revoke", "leak").await;
    rotated(&client, &ns, NAME, 3).await;
    assert!(!live(&fake, &first_id), "the emergency revoked it at once");
}

#[tokio::test]
async fn an_argo_rollout_is_restarted_through_restart_at_and_skipped_when_not_installed() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "c-argo").await;
    let _op = Operator::start_with(&ns, FAST);
    let yaml = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {name: token}\nspec:\n  provider: {random: {length: 24}}\n  secretsMapping: {value: TOKEN}\n  target: {name: app-token}\n  revocation: {minValidity: 0s}\n  consumers:\n    workloads: [{kind: Rollout, name: checkout}]\n";
    apply_yaml(&client, &ns, yaml).await.unwrap();
    rotated(&client, &ns, "token", 1).await;
    // Argo Rollouts is not installed: skipped, and the status says so.
    let s = consumers_rolled_out(&client, &ns, "token", 30, "skipped").await;
    let w = &s.consumers.unwrap().workloads[0];
    assert!(w.message.contains("not installed"), "{}", w.message);

    // Installed (a minimal Rollout CRD: this binary's API server only).
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: rollouts.argoproj.io}\nspec:\n  group: argoproj.io\n  names: {kind: Rollout, plural: rollouts, singular: rollout}\n  scope: Namespaced\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    apply_yaml(&client, &ns, crd).await.unwrap();
    wait_crd_established(&client, "rollouts.argoproj.io").await;
    let rollout = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: checkout}\nspec:\n  replicas: 1\n  template:\n    metadata: {labels: {app: checkout}}\n    spec: {containers: [{name: app, image: registry.invalid/app:1}]}\nstatus: {phase: Healthy}\n";
    apply_yaml(&client, &ns, rollout).await.unwrap();
    let s = rotate(&client, &ns, "token", "r2", 2).await;
    let token = s.consumers.unwrap().token;
    restarted(&client, &ns, "token").await;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
            "rollouts",
        ),
    );
    let obj = api.get("checkout").await.unwrap();
    // The token on the Rollout itself; its pod template untouched (a template change
    // would start a full release, and a workloadRef Rollout has no template).
    assert_eq!(
        obj.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION)),
        Some(&token)
    );
    assert_eq!(
        obj.data.pointer("/spec/template/metadata/annotations"),
        None,
        "{:?}",
        obj.data
    );
    let restart_at = obj
        .data
        .pointer("/spec/restartAt")
        .and_then(|v| v.as_str())
        .unwrap()
        .to_string();
    // Argo Rollouts not running: the phase is still Healthy from before, but the
    // restart has not happened, so it is not rolled out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status_of(&client, &ns, "token").await;
    assert_eq!(s.consumers.unwrap().phase, ConsumerPhase::RollingOut);
    // Argo Rollouts (this test) restarts the pods and reports it.
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Healthy", "restartedAt": restart_at}})),
    )
    .await
    .unwrap();
    consumers_rolled_out(&client, &ns, "token", 30, "rolled out").await;
}

#[tokio::test]
async fn consumers_rotor_cannot_follow_hold_the_revocation() {
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let ns = namespace(&client, "c-cut").await;
    let fake = fakes::key_api().await;
    // 65 consumers match the selector: one more than rotor follows. With no replicas
    // each rolls out by itself (kube-controller-manager), so only the cut can hold.
    for i in 0..65 {
        deployment_reading(&client, &ns, &format!("w{i:02}"), SECRET, 0).await;
    }
    let _op = Operator::start_with(&ns, FAST);
    let spec = http_with(
        &fake,
        "  consumers:\n    selector: {matchLabels: {tier: web}}\n  revocation:\n    after: Rollout\n    minValidity: 0s\n    maxWait: 4s\n    onTimeout: Keep\n",
    );
    apply_yaml(&client, &ns, &spec).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    let incomplete = wait_for_event(
        &client,
        &ns,
        NAME,
        "ConsumersIncomplete",
        "65 consumers",
        30,
    )
    .await;
    assert!(
        incomplete
            .note
            .unwrap_or_default()
            .contains("only the first 64 found are restarted and followed")
    );
    let second = rotate(&client, &ns, NAME, "r2", 2).await;
    let c = second.consumers.as_ref().unwrap();
    assert_eq!(c.workloads.len(), 64);
    assert!(
        c.incomplete
            .as_deref()
            .is_some_and(|w| w.contains("65 consumers match")),
        "{c:?}"
    );
    let old_id = previous_id(&second);
    // Every followed consumer rolls out, yet the one not followed may still use the
    // old credential: stuck after maxWait, and Keep keeps it.
    let s = wait_status(&client, &ns, NAME, 90, "stuck", |s| {
        s.consumers.as_ref().is_some_and(|c| {
            c.workloads.iter().all(|w| w.rolled_out) && c.phase == ConsumerPhase::Stuck
        })
    })
    .await
    .status
    .unwrap();
    assert!(
        s.last_rotation_message.contains("consumers not followed"),
        "{}",
        s.last_rotation_message
    );
    let stuck = wait_for_event(
        &client,
        &ns,
        NAME,
        "ConsumerRolloutStuck",
        "not followed",
        30,
    )
    .await;
    assert!(stuck.note.unwrap_or_default().contains("maxWait (4s)"));
    assert!(live(&fake, &old_id), "the old credential stays valid");
    assert!(
        value(&client, &ns, SECRET, "PARTNER_API_KEY_PREVIOUS")
            .await
            .is_some()
    );
    assert!(
        !event_reasons(&client, &ns, NAME)
            .await
            .iter()
            .any(|r| r == "PreviousRevoked" || r == "ConsumersRolledOut"),
        "nothing says every consumer rolled out"
    );
}
