//! `provider.awsIam` end to end: the sample applied to the real API server, the
//! operator running, IAM and STS played by moto's server (an independent
//! implementation of the AWS APIs) with its IAM auth on, so a key moto no longer has,
//! or a wrong secret, is refused. Assertions are made on what moto holds and on what
//! it was asked (its request recording).

mod support;

use std::time::Duration;
use support::moto::{Moto, moto};
use support::scenario::*;
use support::*;

const NAME: &str = "app-ci-aws-key";
const ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET: &str = "AWS_SECRET_ACCESS_KEY";

/// The sample for IAM user `user` against moto, with `revocation` and
/// `deactivateFirst` as given.
fn manifest(moto: &Moto, user: &str, revocation: &str, deactivate_first: bool) -> String {
    let admin = moto.rotor_admin();
    let m = sample("aws-iam.yaml")
        .replace("userName: app-ci", &format!("userName: {user}"))
        .replace(
            "region: us-east-1",
            &format!("region: us-east-1\n      endpointUrl: {}", moto.url),
        )
        .replace("REPLACE_WITH_THE_ADMIN_ACCESS_KEY_ID", &admin.id)
        .replace("REPLACE_WITH_THE_ADMIN_SECRET_ACCESS_KEY", &admin.secret)
        .replace(
            "deactivateFirst: true",
            &format!("deactivateFirst: {deactivate_first}"),
        )
        .replacen(
            "\n  schedule:\n",
            &format!("\n  revocation: {revocation}\n  schedule:\n"),
            1,
        );
    assert!(m.contains(&moto.url) && m.contains("revocation:"));
    m
}

/// The key the target Secret holds: (id, secret).
async fn key(client: &kube::Client, ns: &str) -> (String, String) {
    let s = get_secret(client, ns, NAME).await.unwrap();
    (
        secret_value(&s, ID).unwrap(),
        secret_value(&s, SECRET).unwrap(),
    )
}

fn user_arn_ok(arn: &Result<String, String>, user: &str) -> bool {
    arn.as_ref()
        .is_ok_and(|a| a.ends_with(&format!(":user/{user}")))
}

/// Waits (bounded) until `check` holds for the user's keys at moto.
async fn wait_keys(
    moto: &Moto,
    user: &str,
    what: &str,
    check: impl Fn(&[(String, String)]) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let keys = moto.keys(user);
        if check(&keys) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: moto holds {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No intent tag is left, and every key is marked with a name of this resource.
fn assert_marked(moto: &Moto, user: &str) {
    let tags = moto.tags(user);
    assert!(
        tags.iter()
            .all(|(k, v)| !v.starts_with("pending") && !k.starts_with("rotor-")),
        "an intent tag is left: {tags:?}"
    );
    for (id, _) in moto.keys(user) {
        assert!(
            tags.iter()
                .any(|(k, v)| *k == id && v.starts_with("rotor-")),
            "key {id} is not marked as rotor's: {tags:?}"
        );
    }
}

#[tokio::test]
async fn aws_iam_sample_rotates_access_keys_at_moto() {
    let moto = moto();
    let user = "app-three";
    moto.create_user(user);
    let client = control_plane().client().await;
    let ns = namespace(&client, "aws-iam").await;
    let op = Operator::start_with(&ns, FAST);
    // An old key used after it stopped being active holds its revocation for up to
    // maxWait (2 s here), then onTimeout: Revoke revokes it anyway.
    let m = manifest(
        moto,
        user,
        "{minValidity: 0s, maxWait: 2s, onTimeout: Revoke}",
        true,
    );
    apply_yaml(&client, &ns, &m).await.unwrap();
    let s1 = rotated(&client, &ns, NAME, 1).await;
    let (id1, k1) = key(&client, &ns).await;
    assert_eq!(s1.slots[0].id, id1, "the slot id is the access key id");
    assert!(user_arn_ok(&moto.identity(&id1, &k1), user), "key 1 works");
    assert_eq!(moto.keys(user), vec![(id1.clone(), "Active".to_string())]);
    assert_marked(moto, user);

    let s2 = rotate(&client, &ns, NAME, "r2", 2).await;
    let (id2, k2) = key(&client, &ns).await;
    assert_ne!(id1, id2);
    // Status keeps whole seconds: the use below must fall in a later second than
    // the switch for IAM's last-used date to be after it.
    let switched = s2.last_rotated_at.unwrap();
    while chrono::Utc::now() < switched + chrono::Duration::seconds(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(user_arn_ok(&moto.identity(&id2, &k2), user), "key 2 works");
    // A consumer still on key 1: it keeps working until it is revoked.
    assert!(
        user_arn_ok(&moto.identity(&id1, &k1), user),
        "the previous key still works"
    );

    rotate(&client, &ns, NAME, "r3", 3).await;
    // GetAccessKeyLastUsed saw key 1 used after it stopped being active.
    wait_for_event(
        &client,
        &ns,
        NAME,
        "ForcedRevocation",
        "the provider reports it in use (",
        30,
    )
    .await;
    let (id3, k3) = key(&client, &ns).await;
    assert!(user_arn_ok(&moto.identity(&id3, &k3), user), "key 3 works");
    assert!(
        user_arn_ok(&moto.identity(&id2, &k2), user),
        "the previous key still works"
    );
    assert_eq!(
        moto.identity(&id1, &k1),
        Err("InvalidClientTokenId".to_string()),
        "the key from two rotations ago no longer authenticates"
    );
    let mut keys = moto.keys(user);
    keys.sort();
    let mut want = vec![
        (id2.clone(), "Active".to_string()),
        (id3.clone(), "Active".to_string()),
    ];
    want.sort();
    assert_eq!(keys, want, "moto holds exactly the two slot keys");
    assert_marked(moto, user);
    // What moto was asked: three creates, never one while the user had two keys.
    assert_eq!(moto.assert_never_a_third_key(user), 3);
    assert_no_leak(
        &client,
        &ns,
        NAME,
        &op.logs(),
        &[k1, k2, k3, moto.rotor_admin().secret.clone()],
    )
    .await;
}

/// deactivateFirst: the first revoke deactivates (the key stays, Inactive, and a
/// mistaken revoke could be undone), the next deletes. false: deleted at once.
#[tokio::test]
async fn deactivate_first_shows_inactive_then_deleted() {
    let moto = moto();
    let client = control_plane().client().await;
    for (user, first) in [("app-deact", true), ("app-delete", false)] {
        moto.create_user(user);
        let ns = namespace(&client, &format!("aws-{user}")).await;
        let _op = Operator::start_with(&ns, FAST);
        // Rollout with no consumers: the previous key is revoked right after a rotation.
        let m = manifest(moto, user, "{after: Rollout, minValidity: 0s}", first);
        apply_yaml(&client, &ns, &m).await.unwrap();
        rotated(&client, &ns, NAME, 1).await;
        let (id1, k1) = key(&client, &ns).await;
        rotate(&client, &ns, NAME, "r2", 2).await;
        let (id2, _) = key(&client, &ns).await;
        if first {
            wait_keys(moto, user, "key 1 deactivated", |keys| {
                keys.iter().any(|(id, s)| *id == id1 && s == "Inactive")
            })
            .await;
            assert!(
                moto.keys(user)
                    .iter()
                    .any(|(id, s)| *id == id2 && s == "Active")
            );
            rotate(&client, &ns, NAME, "r3", 3).await;
            let (id3, _) = key(&client, &ns).await;
            // Key 1 deleted by the rotation that needed its place; key 2 deactivated.
            wait_keys(moto, user, "key 1 deleted, key 2 deactivated", |keys| {
                let mut k = keys.to_vec();
                k.sort();
                let mut want = vec![
                    (id2.clone(), "Inactive".to_string()),
                    (id3.clone(), "Active".to_string()),
                ];
                want.sort();
                k == want
            })
            .await;
            assert_eq!(
                moto.identity(&id1, &k1),
                Err("InvalidClientTokenId".to_string())
            );
        } else {
            wait_keys(moto, user, "key 1 deleted at once", |keys| {
                keys.len() == 1 && keys[0].0 == id2
            })
            .await;
        }
        moto.assert_never_a_third_key(user);
    }
}

/// A human's second key on the user: the next rotation finds two keys, neither an
/// Inactive one of rotor's, and fails saying so — no CreateAccessKey, nothing deleted.
#[tokio::test]
async fn a_humans_key_makes_the_rotation_fail_with_nothing_created_or_deleted() {
    let moto = moto();
    let user = "app-shared";
    moto.create_user(user);
    let (human, human_secret) = moto.create_key(user);
    let client = control_plane().client().await;
    let ns = namespace(&client, "aws-human").await;
    let op = Operator::start_with(&ns, FAST);
    let m = manifest(moto, user, "{minValidity: 0s}", true);
    apply_yaml(&client, &ns, &m).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    let (id1, k1) = key(&client, &ns).await;
    // `rotor plan` names the provider and what it would do.
    let plan = rotor_cli(&["plan", NAME, "-n", &ns]);
    assert!(plan.contains("awsIam"), "{plan}");
    let before = moto.actions(user);
    request(&client, &ns, NAME, "rotor.dev/rotate", "r2").await;
    let s = failed(&client, &ns, NAME).await;
    let message = &s.last_rotation_message;
    assert!(
        message.contains("already has 2 access keys")
            && message.contains(&format!("{human} (Active, not rotor's)"))
            && message.contains("it created nothing and deleted nothing"),
        "{message}"
    );
    let after = moto.actions(user);
    let new: Vec<&String> = after[before.len()..].iter().collect();
    assert!(
        !new.iter()
            .any(|a| *a == "CreateAccessKey" || *a == "DeleteAccessKey" || *a == "UpdateAccessKey"),
        "the failed rotation changed keys: {new:?}"
    );
    let mut keys = moto.keys(user);
    keys.sort();
    let mut want = vec![
        (human.clone(), "Active".to_string()),
        (id1.clone(), "Active".to_string()),
    ];
    want.sort();
    assert_eq!(keys, want);
    assert!(user_arn_ok(&moto.identity(&human, &human_secret), user));
    assert!(user_arn_ok(&moto.identity(&id1, &k1), user));
    moto.assert_never_a_third_key(user);
    assert_no_leak(&client, &ns, NAME, &op.logs(), &[k1, human_secret]).await;
}

/// Without --allow-private-endpoints, moto on 127.0.0.1 is refused before anything is
/// sent: moto sees no request for the user.
#[tokio::test]
async fn a_loopback_endpoint_is_refused_without_the_flag() {
    let moto = moto();
    let user = "app-guarded";
    moto.create_user(user);
    let client = control_plane().client().await;
    let ns = namespace(&client, "aws-guard").await;
    let _op = Operator::start(&ns);
    let m = manifest(moto, user, "{minValidity: 0s}", true);
    apply_yaml(&client, &ns, &m).await.unwrap();
    let s = failed(&client, &ns, NAME).await;
    assert!(
        s.last_rotation_message
            .contains("--allow-private-endpoints"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(moto.actions(user), vec!["CreateUser".to_string()]);
}

/// Two rotations, a third killed at `point`, a restart: the third completes, moto
/// holds exactly the two slot keys (a key created before the escrow kept it is deleted
/// and created once more), every key is marked, no intent tag is left, and no
/// CreateAccessKey was ever sent while the user had two keys.
async fn crash_at(point: &str) {
    let moto = moto();
    let user = format!("app-crash-{}", point.replace('_', "-"));
    moto.create_user(&user);
    let client = control_plane().client().await;
    let ns = namespace(&client, &format!("aws-crash-{}", point.replace('_', "-"))).await;
    let crash = format!("{point}@3");
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", crash.as_str())]);
    let m = manifest(moto, &user, "{minValidity: 0s}", true);
    apply_yaml(&client, &ns, &m).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    rotate(&client, &ns, NAME, "r2", 2).await;
    let (id2, k2) = key(&client, &ns).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "r3").await;
    wait_log(&op, "failpoint reached", point).await;
    op.kill();
    let op = Operator::start_with(&ns, FAST);
    if point == "before_vault" {
        // The key the dead rotation created is unmarked: only probably rotor's (a person
        // may have made a key just then), so rotor never deletes it. The user then holds
        // two keys, and the rotation fails naming it; a person deletes it.
        let s = wait_status(&client, &ns, NAME, 60, "the probable leftover named", |s| {
            s.last_rotation_message.contains("probably that key")
        })
        .await
        .status
        .unwrap();
        let leftover: Vec<String> = moto
            .keys(&user)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| *id != id2)
            .collect();
        assert_eq!(leftover.len(), 1, "{point}: {leftover:?}");
        assert!(
            s.last_rotation_message
                .contains(&format!("{} (Active, unmarked", leftover[0])),
            "{}",
            s.last_rotation_message
        );
        moto.admin(&[
            ("Action", "DeleteAccessKey"),
            ("UserName", &user),
            ("AccessKeyId", &leftover[0]),
        ]);
        // The failed rotation is retried by itself.
    }
    rotated(&client, &ns, NAME, 3).await;
    let (id3, k3) = key(&client, &ns).await;
    assert!(
        user_arn_ok(&moto.identity(&id3, &k3), &user),
        "{point}: the Secret's key works"
    );
    // The sweep after the rotation may still be running: wait for the end state.
    wait_keys(moto, &user, point, |keys| {
        let mut k: Vec<&str> = keys.iter().map(|(id, _)| id.as_str()).collect();
        k.sort();
        let mut want = vec![id2.as_str(), id3.as_str()];
        want.sort();
        k == want
    })
    .await;
    assert!(
        user_arn_ok(&moto.identity(&id2, &k2), &user),
        "{point}: the previous key works"
    );
    assert_marked(moto, &user);
    let creates = moto.assert_never_a_third_key(&user);
    let want = if point == "before_vault" { 4 } else { 3 };
    assert_eq!(creates, want, "{point}: CreateAccessKey requests");
    assert_no_leak(&client, &ns, NAME, &op.logs(), &[k2, k3]).await;
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {
        $(#[tokio::test]
        async fn $name() {
            crash_at($point).await;
        })*
    };
}

crash_tests! {
    killed_after_intent => "after_intent",
    killed_after_revoking_the_old_key => "after_revoke_old",
    killed_after_create_before_the_escrow => "before_vault",
    killed_after_the_escrow => "after_vault",
    killed_after_the_test => "after_test",
    killed_after_the_secret_write => "after_secret",
    killed_after_the_flip => "after_flip",
}

/// The orphan sweep lists only keys tagged with a name of this resource: a key tagged
/// with another resource's name is left alone; once tagged as this resource's (and in
/// no slot) it is deactivated, and the next rotation, finding two keys, deletes it.
#[tokio::test]
async fn the_sweep_takes_only_exactly_own_keys() {
    let moto = moto();
    let user = "app-sweep";
    moto.create_user(user);
    let client = control_plane().client().await;
    let ns = namespace(&client, "aws-sweep").await;
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let m = manifest(moto, user, "{minValidity: 0s}", true);
    apply_yaml(&client, &ns, &m).await.unwrap();
    let s1 = rotated(&client, &ns, NAME, 1).await;
    let (id1, _) = key(&client, &ns).await;
    let own = moto
        .tags(user)
        .into_iter()
        .find(|(k, _)| *k == id1)
        .map(|(_, v)| v)
        .unwrap();
    let prefix = own
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string();
    assert_eq!(s1.slots[0].id, id1);
    let (orphan, _) = moto.create_key(user);
    let tag = |value: &str| {
        moto.admin(&[
            ("Action", "TagUser"),
            ("UserName", user),
            ("Tags.member.1.Key", &orphan),
            ("Tags.member.1.Value", value),
        ]);
    };
    // Another resource's name, and this prefix with more than digits after it.
    for foreign in ["rotor-deadbeef-7", &format!("{prefix}7-old")] {
        tag(foreign);
        let seen = metric(&op, r#"rotor_orphan_sweeps_total{provider="awsIam"}"#)
            .await
            .unwrap_or(0.0);
        wait_metric(
            &op,
            r#"rotor_orphan_sweeps_total{provider="awsIam"}"#,
            seen + 2.0,
        )
        .await;
        assert!(
            moto.keys(user)
                .iter()
                .any(|(id, s)| *id == orphan && s == "Active"),
            "a key tagged {foreign:?} is not this resource's: {:?}",
            moto.keys(user)
        );
    }
    tag(&format!("{prefix}99"));
    wait_keys(moto, user, "the own orphan deactivated", |keys| {
        keys.iter().any(|(id, s)| *id == orphan && s == "Inactive")
            && keys.iter().any(|(id, s)| *id == id1 && s == "Active")
    })
    .await;
    rotate(&client, &ns, NAME, "r2", 2).await;
    let (id2, _) = key(&client, &ns).await;
    let mut keys: Vec<String> = moto.keys(user).into_iter().map(|(id, _)| id).collect();
    keys.sort();
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(
        keys, want,
        "the inactive own orphan made room for the new key"
    );
    moto.assert_never_a_third_key(user);
}

/// A rotation killed after its intent tag and before CreateAccessKey, and a person who
/// makes a key on the user moments later (found by the attacker review): that key looks
/// like the dead create's leftover — unmarked, not in the intent's list, created just
/// after it — but rotor cannot prove it is its own, so it never deletes or deactivates
/// it: the rotation fails naming the key and what to check, and the key keeps working.
#[tokio::test]
async fn a_key_made_by_a_person_after_a_dead_rotations_intent_is_never_deleted() {
    let moto = moto();
    let user = "app-intent-human";
    moto.create_user(user);
    let client = control_plane().client().await;
    let ns = namespace(&client, "aws-intent-human").await;
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", "after_intent@2")]);
    let m = manifest(moto, user, "{minValidity: 0s}", true);
    apply_yaml(&client, &ns, &m).await.unwrap();
    rotated(&client, &ns, NAME, 1).await;
    let (id1, _) = key(&client, &ns).await;
    request(&client, &ns, NAME, "rotor.dev/rotate", "r2").await;
    wait_log(&op, "failpoint reached", "after_intent").await;
    op.kill();
    let s = status_of(&client, &ns, NAME).await;
    let name = s.in_flight.as_ref().unwrap().credential_name.clone();
    // What issue() writes just before CreateAccessKey (the create then never happened).
    let now = chrono::Utc::now().timestamp();
    moto.admin(&[
        ("Action", "TagUser"),
        ("UserName", user),
        ("Tags.member.1.Key", &name),
        ("Tags.member.1.Value", &format!("pending t={now} {id1}")),
    ]);
    let (human, human_secret) = moto.create_key(user);
    let op = Operator::start_with(&ns, FAST);
    let s = wait_status(
        &client,
        &ns,
        NAME,
        60,
        "the rotation fails naming the key",
        |s| s.last_rotation_message.contains("probably that key"),
    )
    .await
    .status
    .unwrap();
    assert!(
        s.last_rotation_message
            .contains(&format!("{human} (Active, unmarked")),
        "{}",
        s.last_rotation_message
    );
    let keys = moto.keys(user);
    assert!(
        keys.iter()
            .any(|(id, status)| *id == human && status == "Active"),
        "rotor touched the person's key {human}: moto holds {keys:?}; logs:\n{}",
        op.logs()
    );
    assert!(user_arn_ok(&moto.identity(&human, &human_secret), user));
    // Rotation 1's and the person's: rotor sent none while the user held two keys.
    assert_eq!(moto.assert_never_a_third_key(user), 2);
}
