//! Every provider end to end: the sample from config/samples/ applied to the real API
//! server, the operator running, the vendor played by a fake that follows the
//! documented API (or a real PostgreSQL). Assertions are made on the vendor's side too.

mod support;

use rotor::api::RotationPhase;
use support::fakes::{self, Knobs};
use support::scenario::*;
use support::*;

/// Flags for an operator talking to fakes on 127.0.0.1, with short waits.

#[tokio::test]
async fn supabase_sample_rotates_keys_at_the_vendor() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "supabase").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let admin = fake.lock().admin_token.clone();
    let op = Operator::start_with(&ns, FAST);
    let manifest = revocable_at_once(&sample("supabase.yaml"))
        .replace("https://api.supabase.com", &fake.url)
        .replace("sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN", &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let first = wait_status(&client, &ns, "supabase-secret-key", 60, "rotated", |s| {
        s.rotation_count == 1
    })
    .await;
    let s1 = first.status.unwrap();
    let k1 = value(&client, &ns, "supabase-secret-key", "SUPABASE_SECRET_KEY")
        .await
        .unwrap();
    {
        let vendor = fake.lock();
        assert_eq!(vendor.creates, 1);
        let key = vendor
            .key(&s1.slots[0].id)
            .expect("the slot id is the vendor's key id");
        assert_eq!(key.api_key, k1, "the Secret holds the vendor's key");
        assert_eq!(key.key_type, "secret");
        assert!(key.name.starts_with("rotor_"), "{}", key.name);
    }
    assert_eq!(
        s1.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &k1).await
    );

    let s2 = rotate(&client, &ns, "supabase-secret-key", "r2", 2).await;
    let k2 = value(&client, &ns, "supabase-secret-key", "SUPABASE_SECRET_KEY")
        .await
        .unwrap();
    assert_eq!(
        value(
            &client,
            &ns,
            "supabase-secret-key",
            "SUPABASE_SECRET_KEY_PREVIOUS"
        )
        .await
        .as_deref(),
        Some(k1.as_str())
    );
    {
        let vendor = fake.lock();
        assert_eq!(vendor.creates, 2);
        assert!(
            vendor.deleted_ids.is_empty(),
            "both keys stay valid after the second rotation"
        );
        assert_eq!(vendor.live().len(), 2);
    }
    let s3 = rotate(&client, &ns, "supabase-secret-key", "r3", 3).await;
    {
        let vendor = fake.lock();
        assert_eq!(vendor.creates, 3, "exactly one key per rotation");
        assert_eq!(
            vendor.deleted_ids,
            vec![s1.slots[0].id.clone()],
            "the key issued two rotations ago is deleted"
        );
        let live: Vec<&str> = vendor.live().iter().map(|k| k.id.as_str()).collect();
        assert_eq!(live.len(), 2);
        assert!(live.contains(&s2.slots[1].id.as_str()) && live.contains(&s3.slots[0].id.as_str()));
    }
    let events = wait_events(&client, &ns, "supabase-secret-key", 3, 60).await;
    assert_eq!(events, vec!["Rotated"; 3]);
    let k3 = value(&client, &ns, "supabase-secret-key", "SUPABASE_SECRET_KEY")
        .await
        .unwrap();
    assert_no_leak(
        &client,
        &ns,
        "supabase-secret-key",
        &op.logs(),
        &[k1, k2, k3, admin],
    )
    .await;
}

/// Applies the Supabase sample against `fake`, waits for the first rotation and the
/// orphan sweep that follows it (so later vendor knobs meet only what the test asks
/// for), and returns the key the Secret holds.
async fn supabase_ready(
    client: &kube::Client,
    ns: &str,
    fake: &fakes::Fake<fakes::Supabase>,
    op: &Operator,
) -> String {
    apply_supabase_sample(client, ns, fake).await;
    rotated(client, ns, "supabase-secret-key", 1).await;
    wait_metric(op, r#"rotor_orphan_sweeps_total{provider="supabase"}"#, 1.0).await;
    value(client, ns, "supabase-secret-key", "SUPABASE_SECRET_KEY")
        .await
        .unwrap()
}

/// Asks for a rotation that must fail, and checks what the user sees: Failed with
/// `expected` in the message, Degraded, a Warning Event, the old key still in the
/// Secret and still live at the vendor.
async fn expect_failed_rotation(
    client: &kube::Client,
    ns: &str,
    token: &str,
    expected: &str,
    old: &str,
) -> rotor::api::SecretRotationStatus {
    patch_rotation(
        client,
        ns,
        "supabase-secret-key",
        serde_json::json!({"metadata": {"annotations": {"rotor.dev/rotate": token}}}),
    )
    .await;
    let s = wait_status(client, ns, "supabase-secret-key", 60, "failed", |s| {
        s.rotation_status == RotationPhase::Failed
            && s.last_handled_rotate_token.as_deref() == Some(token)
    })
    .await
    .status
    .unwrap();
    assert!(
        s.last_rotation_message.contains(expected),
        "wanted {expected:?} in {:?}",
        s.last_rotation_message
    );
    assert!(
        s.last_rotation_message
            .contains("the credential in slot 0 stays active"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(
        (
            condition(&s, "Degraded").status.as_str(),
            condition(&s, "Degraded").reason.as_str()
        ),
        ("True", "RotationFailed")
    );
    assert_eq!(
        (
            condition(&s, "Ready").status.as_str(),
            condition(&s, "Ready").reason.as_str()
        ),
        ("True", "PreviousCredentialActive")
    );
    assert_eq!(
        value(client, ns, "supabase-secret-key", "SUPABASE_SECRET_KEY")
            .await
            .as_deref(),
        Some(old)
    );
    assert!(s.next_rotation_at.is_some(), "a retry is scheduled");
    let event = wait_for_event(
        client,
        ns,
        "supabase-secret-key",
        "RotationFailed",
        expected,
        60,
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    s
}

#[tokio::test]
async fn supabase_failures_leave_the_old_key_in_place() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "supabase-failures").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(&ns, FAST);
    let old = supabase_ready(&client, &ns, &fake, &op).await;

    // 429 storm: every attempt rate limited; retried (2 retries) honouring X-RateLimit-Reset.
    fake.lock().knobs = Knobs {
        rate_limit_next: 1000,
        ..Knobs::default()
    };
    let started = std::time::Instant::now();
    expect_failed_rotation(&client, &ns, "storm", "rate limited by the provider: listing Supabase API keys: Too many requests (gave up after 3 attempts)", &old).await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "the reset header was honoured"
    );
    assert_eq!(fake.lock().rate_limited, 3);

    // 5xx: vendor trouble.
    fake.lock().knobs = Knobs {
        unavailable_next: 1000,
        ..Knobs::default()
    };
    expect_failed_rotation(
        &client,
        &ns,
        "down-5xx",
        "HTTP 503: upstream unavailable",
        &old,
    )
    .await;

    // 401 on the admin token: fails at once, with the vendor's message.
    fake.lock().knobs = Knobs::default();
    let good_admin =
        std::mem::replace(&mut fake.lock().admin_token, "sbp_rotated_elsewhere".into());
    let before = fake.lock().requests;
    expect_failed_rotation(
        &client,
        &ns,
        "unauthorized",
        "rejected the admin credential (401)",
        &old,
    )
    .await;
    assert_eq!(fake.lock().requests - before, 1, "4xx is not retried");
    fake.lock().admin_token = good_admin;

    // Garbage JSON.
    fake.lock().knobs = Knobs {
        garbage: true,
        ..Knobs::default()
    };
    expect_failed_rotation(
        &client,
        &ns,
        "garbage",
        "the provider answered something rotor cannot read: creating a Supabase API key: the body is not the expected JSON",
        &old,
    )
    .await;
    // The new key fails its test: revoked again at once, the old one stays.
    fake.lock().knobs = Knobs {
        fail_test: true,
        ..Knobs::default()
    };
    let s = expect_failed_rotation(
        &client,
        &ns,
        "test-fails",
        "failed its test and was revoked",
        &old,
    )
    .await;
    assert_eq!(s.failed_attempts, 5);
    {
        let vendor = fake.lock();
        let live: Vec<&str> = vendor.live().iter().map(|k| k.api_key.as_str()).collect();
        assert_eq!(live, vec![old.as_str()], "only the old key is live");
        assert_eq!(
            vendor.deleted_ids.len(),
            1,
            "the key that failed its test was deleted"
        );
    }

    // Vendor down: connection refused.
    fake.lock().knobs = Knobs::default();
    fake.stop();
    expect_failed_rotation(&client, &ns, "down", "the provider is unavailable", &old).await;

    assert_no_leak(&client, &ns, "supabase-secret-key", &op.logs(), &[old]).await;
}

#[tokio::test]
async fn transient_429_is_retried_within_one_rotation() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "supabase-429").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let op = Operator::start_with(&ns, FAST);
    fake.lock().knobs = Knobs {
        rate_limit_next: 2,
        ..Knobs::default()
    };
    supabase_ready(&client, &ns, &fake, &op).await;
    {
        let vendor = fake.lock();
        assert_eq!((vendor.rate_limited, vendor.creates), (2, 1));
    }
    assert_no_failed_attempt(&client, &ns, "supabase-secret-key", &op, "supabase").await;
}

/// What the Convex fake saw, checked call by call: every create and delete carried
/// the admin token, and the `count` test calls (lists with another token) each carried
/// exactly the token the create just before it had issued.
fn assert_convex_tokens_used_right(vendor: &fakes::Convex, count: usize) {
    for call in vendor
        .calls_of("create")
        .iter()
        .chain(&vendor.calls_of("delete"))
    {
        assert_eq!(
            call.token, vendor.admin_token,
            "a {} used another token than the admin's ({:?})",
            call.op, call.name
        );
    }
    let tests = vendor.test_calls();
    assert_eq!(tests.len(), count, "one test call per issued token");
    for (list, create) in tests {
        let create = create.expect("a test call used a token no create issued");
        let last_create = vendor
            .calls
            .iter()
            .take_while(|c| !std::ptr::eq(*c, list))
            .filter(|c| c.op == "create" && c.issued.is_some())
            .last()
            .unwrap();
        assert_eq!(
            create, last_create,
            "the test call used an older token, not the one just issued"
        );
        assert_eq!(list.status, 200);
    }
}

/// `n` Supabase SecretRotations `shared-0` … sharing one admin Secret (one token).
fn shared_supabase(fake: &fakes::Fake<fakes::Supabase>, n: usize) -> String {
    let admin = fake.lock().admin_token.clone();
    let mut manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: supabase-admin\n  annotations:\n    rotor.dev/allow-read: \"*\"\nstringData:\n  accessToken: \"{admin}\"\n"
    );
    for i in 0..n {
        manifest.push_str(&format!(
            r#"---
apiVersion: rotor.dev/v1alpha1
kind: SecretRotation
metadata:
  name: shared-{i}
spec:
  provider:
    supabase:
      projectRef: abcdefghijklmnopqrst
      keyType: secret
      credentialsRef: {{ name: supabase-admin, key: accessToken }}
      baseUrl: "{url}"
  schedule:
    rotationInterval: 30d
  secretsMapping:
    apiKey: KEY
  target:
    name: shared-{i}
"#,
            url = fake.url
        ));
    }
    manifest
}

/// Many resources sharing one admin token against the documented rate limit (made
/// small here: 10 requests per 3 s window): all rotate, none fails, and the vendor
/// never had to refuse a request beyond the limit its headers announced.
#[tokio::test]
async fn many_resources_sharing_one_token_stay_within_the_announced_rate_limit() {
    const N: usize = 30;
    let client = control_plane().client().await;
    let ns = namespace(&client, "supabase-shared").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    fake.lock().rate = fakes::RateLimit::new(10, std::time::Duration::from_secs(3));
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &shared_supabase(&fake, N))
        .await
        .unwrap();
    for i in 0..N {
        // Thirty rotations of ~3 requests at 10 per 3 s take about 30 s, and more on a
        // loaded machine: the bound is generous.
        wait_status(&client, &ns, &format!("shared-{i}"), 300, "rotated", |s| {
            s.rotation_count == 1 && s.rotation_status == RotationPhase::Success
        })
        .await;
    }
    for i in 0..N {
        assert_eq!(
            status_of(&client, &ns, &format!("shared-{i}"))
                .await
                .failed_attempts,
            0,
            "shared-{i} had a failed attempt"
        );
    }
    assert_no_failed_attempt(&client, &ns, "shared-0", &op, "supabase").await;
    let vendor = fake.lock();
    assert_eq!(vendor.creates as usize, N, "one key per resource");
    assert_eq!(
        (vendor.over_limit, vendor.rate_limited),
        (0, 0),
        "rotor sent requests beyond the announced limit ({} requests in all)",
        vendor.requests
    );
}

#[tokio::test]
async fn convex_sample_rotates_tokens_and_tests_with_the_new_one() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "convex").await;
    let fake = fakes::convex().await;
    let admin = fake.lock().admin_token.clone();
    let op = Operator::start_with(&ns, FAST);
    let manifest = revocable_at_once(&sample("convex.yaml"))
        .replace("https://api.convex.dev", &fake.url)
        .replace("REPLACE_WITH_YOUR_CONVEX_ACCESS_TOKEN", &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s1 = rotated(&client, &ns, "convex-deploy-key", 1).await;
    let t1 = value(&client, &ns, "convex-deploy-key", "CONVEX_ACCESS_KEY")
        .await
        .unwrap();
    let name1 = s1.slots[0].id.clone();
    {
        let vendor = fake.lock();
        assert_eq!(vendor.tokens.get(&name1), Some(&t1));
        let (prefix, ms) = name1.rsplit_once('-').unwrap();
        assert!(
            prefix.starts_with("rotor-") && ms.parse::<i64>().unwrap() > 1_700_000_000_000,
            "{name1}"
        );
        assert_convex_tokens_used_right(&vendor, 1);
        assert_eq!(
            vendor.test_calls()[0].0.token,
            t1,
            "tested with the new token"
        );
    }
    rotate(&client, &ns, "convex-deploy-key", "r2", 2).await;
    rotate(&client, &ns, "convex-deploy-key", "r3", 3).await;
    let t3 = value(&client, &ns, "convex-deploy-key", "CONVEX_ACCESS_KEY")
        .await
        .unwrap();
    {
        let vendor = fake.lock();
        assert_eq!(vendor.creates, 3);
        assert_eq!(
            vendor.deleted,
            vec![name1],
            "deleted by name, two rotations later"
        );
        assert_eq!(vendor.tokens.len(), 2);
        assert_convex_tokens_used_right(&vendor, 3);
        assert_eq!(vendor.test_calls()[2].0.token, t3);
    }
    assert_no_failed_attempt(&client, &ns, "convex-deploy-key", &op, "convex").await;
    assert_no_leak(
        &client,
        &ns,
        "convex-deploy-key",
        &op.logs(),
        &[t1, t3, admin],
    )
    .await;
}

/// README "convex": a 409 for the rotation's name (a token created by an attempt whose
/// answer never arrived, whose value can never be read again) deletes that token and
/// creates the name afresh. Here the first create's answer is lost: the call is cut
/// off by `--http-timeout`, retried, meets the 409.
#[tokio::test]
async fn convex_409_on_create_replaces_the_token_whose_value_was_lost() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "convex-409").await;
    let fake = fakes::convex().await;
    let admin = fake.lock().admin_token.clone();
    fake.lock().lose_create_answer_next = 1;
    let flags = [FAST, &["--http-timeout", "3s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let manifest = sample("convex.yaml")
        .replace("https://api.convex.dev", &fake.url)
        .replace("REPLACE_WITH_YOUR_CONVEX_ACCESS_TOKEN", &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = rotated(&client, &ns, "convex-deploy-key", 1).await;
    let name = s.slots[0].id.clone();
    let token = value(&client, &ns, "convex-deploy-key", "CONVEX_ACCESS_KEY")
        .await
        .unwrap();
    {
        let vendor = fake.lock();
        let creates: Vec<(Option<&str>, u16, bool)> = vendor
            .calls_of("create")
            .iter()
            .map(|c| (c.name.as_deref(), c.status, c.issued.is_some()))
            .collect();
        assert_eq!(
            creates,
            vec![
                (Some(name.as_str()), 200, true),
                (Some(name.as_str()), 409, false),
                (Some(name.as_str()), 200, true),
            ],
            "lost answer, 409 on the retry, created afresh"
        );
        let lost = vendor.calls_of("create")[0].issued.clone().unwrap();
        assert_ne!(lost, token);
        assert_eq!(
            vendor.deleted,
            vec![name.clone()],
            "the lost token was deleted"
        );
        assert_eq!(
            vendor.tokens.get(&name),
            Some(&token),
            "the Secret holds the new one"
        );
        assert!(
            !vendor.tokens.values().any(|t| *t == lost),
            "the token whose value nobody has is dead"
        );
        assert_convex_tokens_used_right(&vendor, 1);
    }
    assert_no_failed_attempt(&client, &ns, "convex-deploy-key", &op, "convex").await;
}

/// Waits (bounded, 60 s) until `done` holds for the fake's state.
async fn wait_fake<S>(fake: &fakes::Fake<S>, what: &str, done: impl Fn(&S) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if done(&fake.lock()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fake did not see {what} within 60s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Nothing failed on the way: no failed attempt in status, no RotationFailed Event, and
/// the operator's `rotor_rotation_failures_total` for `provider` absent or 0 (while its
/// success counter is there, so the scrape itself worked).
async fn assert_no_failed_attempt(
    client: &kube::Client,
    ns: &str,
    name: &str,
    op: &Operator,
    provider: &str,
) {
    let s = status_of(client, ns, name).await;
    assert_eq!(s.failed_attempts, 0, "{}", s.last_rotation_message);
    let reasons = event_reasons(client, ns, name).await;
    assert!(
        !reasons.iter().any(|r| r == "RotationFailed"),
        "a rotation attempt failed: {reasons:?}"
    );
    let success = metric(
        op,
        &format!(r#"rotor_rotations_total{{provider="{provider}",result="success"}}"#),
    )
    .await;
    assert!(
        success.is_some_and(|v| v >= 1.0),
        "success counter {success:?}"
    );
    let failures = metric(
        op,
        &format!(r#"rotor_rotation_failures_total{{provider="{provider}"}}"#),
    )
    .await;
    assert!(
        failures.is_none_or(|v| v == 0.0),
        "rotor_rotation_failures_total {failures:?}"
    );
}

/// The Convox sample against `fake`, its update held until the test ends it.
async fn apply_convox_sample(
    client: &kube::Client,
    ns: &str,
    fake: &fakes::Fake<fakes::Convox>,
    initial: &str,
) {
    fake.lock().update_takes = std::time::Duration::from_secs(3600);
    let manifest = sample("convox.yaml")
        .replace("https://rack.example.com", &fake.url)
        .replace("REPLACE_WITH_THE_CURRENT_RACK_API_KEY", initial);
    apply_yaml(client, ns, &manifest).await.unwrap();
}

/// Lets the rack finish its update once rotor has polled it (seen `updating`) `polls`
/// times in all.
async fn finish_rack_update_after(fake: &fakes::Fake<fakes::Convox>, polls: u32) {
    wait_fake(fake, "rotor polling the updating rack", |r| {
        r.updating_answers >= polls
    })
    .await;
    fake.lock().finish_update();
}

#[tokio::test]
async fn convox_sample_replaces_the_rack_key_and_keeps_it() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "convox").await;
    let initial = "InitialRackKey0123456789";
    let fake = fakes::convox(initial).await;
    let op = Operator::start_with(&ns, FAST);
    apply_convox_sample(&client, &ns, &fake, initial).await;
    // The rack says "updating" to the new key until the test lets it finish: rotor
    // polls through it (the busy branch) instead of failing the attempt.
    finish_rack_update_after(&fake, 2).await;
    let s = rotated(&client, &ns, "convox-rack-key", 1).await;
    let k1 = value(&client, &ns, "convox-rack-key", "CONVOX_PASSWORD")
        .await
        .unwrap();
    {
        let rack = fake.lock();
        assert_eq!(
            rack.password, k1,
            "the rack runs with the key in the target Secret"
        );
        assert_eq!(rack.puts, 1);
        assert!(
            rack.raw_put_bodies[0].starts_with("parameters=Password%3D"),
            "{}",
            rack.raw_put_bodies[0].len()
        );
        assert_eq!(
            rack.refused_during_update, 0,
            "rotor polled the update with the new key only"
        );
        assert_eq!(k1.len(), 32);
    }
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(
        secret_value(&admin, "rackKey").as_deref(),
        Some(k1.as_str()),
        "rotor holds the rack key"
    );
    assert!(
        secret_value(&admin, "rackKey.pending").is_none(),
        "no pending key left"
    );
    assert_eq!(s.strategy, Some(rotor::api::Strategy::SinglePhase));
    assert_eq!(s.slots.len(), 1);
    let warning = wait_for_event(
        &client,
        &ns,
        "convox-rack-key",
        "SinglePhaseRotation",
        "",
        60,
    )
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    request(&client, &ns, "convox-rack-key", "rotor.dev/rotate", "r2").await;
    let polls = fake.lock().updating_answers;
    finish_rack_update_after(&fake, polls + 2).await;
    rotated(&client, &ns, "convox-rack-key", 2).await;
    let k2 = value(&client, &ns, "convox-rack-key", "CONVOX_PASSWORD")
        .await
        .unwrap();
    assert_ne!(k1, k2);
    assert_eq!(fake.lock().password, k2);
    assert_eq!(fake.lock().puts, 2);
    assert_eq!(fake.lock().refused_during_update, 0);
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(
        secret_value(&admin, "rackKey").as_deref(),
        Some(k2.as_str())
    );
    assert!(
        value(&client, &ns, "convox-rack-key", "CONVOX_PASSWORD_PREVIOUS")
            .await
            .is_none()
    );
    assert_no_failed_attempt(&client, &ns, "convox-rack-key", &op, "convox").await;
    assert_no_leak(
        &client,
        &ns,
        "convox-rack-key",
        &op.logs(),
        &[k1, k2, initial.to_string()],
    )
    .await;
}

#[tokio::test]
async fn convox_crash_after_the_put_resumes_with_the_pending_key() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "convox-crash").await;
    let initial = "InitialRackKey0123456789";
    let fake = fakes::convox(initial).await;
    let op = Operator::start_with(&ns, FAST);
    // The rack updates until the test ends it: kill the operator in the middle of it,
    // once it has polled the update.
    apply_convox_sample(&client, &ns, &fake, initial).await;
    wait_fake(&fake, "the PUT and a poll", |r| {
        r.puts == 1 && r.updating_answers >= 1
    })
    .await;
    op.kill();
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    let pending =
        secret_value(&admin, "rackKey.pending").expect("the new key was kept before the PUT");
    assert_eq!(secret_value(&admin, "rackKey").as_deref(), Some(initial));

    // The new operator finds the rack still updating with the pending key: it waits
    // for it (no second key, no failed attempt, no 30 s backoff).
    let polls = fake.lock().updating_answers;
    let op = Operator::start_with(&ns, FAST);
    finish_rack_update_after(&fake, polls + 1).await;
    let s = wait_status(&client, &ns, "convox-rack-key", 60, "resumed", |s| {
        s.rotation_count == 1
    })
    .await
    .status
    .unwrap();
    assert_eq!(
        fake.lock().puts,
        1,
        "the resumed rotation did not set another key"
    );
    assert_eq!(fake.lock().password, pending);
    assert_eq!(
        fake.lock().refused_during_update,
        0,
        "the old key was never tried after the PUT"
    );
    assert_eq!(
        value(&client, &ns, "convox-rack-key", "CONVOX_PASSWORD")
            .await
            .as_deref(),
        Some(pending.as_str())
    );
    let admin = get_secret(&client, &ns, "convox-rack-admin").await.unwrap();
    assert_eq!(
        secret_value(&admin, "rackKey").as_deref(),
        Some(pending.as_str())
    );
    assert!(secret_value(&admin, "rackKey.pending").is_none());
    assert_eq!(s.rotation_status, RotationPhase::Success);
    assert_no_failed_attempt(&client, &ns, "convox-rack-key", &op, "convox").await;
}

#[tokio::test]
async fn http_sample_issues_tests_and_revokes_through_configured_requests() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "http").await;
    let fake = fakes::key_api().await;
    let admin = fake.lock().admin_token.clone();
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &http_sample(&fake)).await.unwrap();
    let s1 = rotated(&client, &ns, "partner-api-key", 1).await;
    let k1 = value(&client, &ns, "partner-api-key", "PARTNER_API_KEY")
        .await
        .unwrap();
    assert_eq!(s1.slots[0].id, "key_1", "the id comes from idPath");
    {
        let api = fake.lock();
        assert_eq!(api.keys["key_1"].1, k1);
        assert!(
            api.keys["key_1"].0.starts_with("rotor-"),
            "the name went into the body template"
        );
        assert_eq!(api.whoami_ok, 1, "tested with the new key");
    }
    rotate(&client, &ns, "partner-api-key", "r2", 2).await;
    rotate(&client, &ns, "partner-api-key", "r3", 3).await;
    {
        let api = fake.lock();
        assert_eq!(api.creates, 3);
        assert_eq!(api.deleted, vec!["key_1".to_string()]);
        let mut live: Vec<&String> = api.keys.keys().collect();
        live.sort();
        assert_eq!(live, vec!["key_2", "key_3"]);
    }
    assert_no_leak(&client, &ns, "partner-api-key", &op.logs(), &[k1, admin]).await;
}

#[tokio::test]
async fn postgres_sample_rotates_across_two_users_on_a_real_server() {
    let pg = postgres::postgres();
    // A fresh server per test binary: the database and the shared role are new.
    pg.admin_sql("CREATE DATABASE app").await;
    pg.admin_sql("CREATE ROLE app_rw").await;
    // The second user exists already, with a password somebody chose: rotor owns it.
    pg.admin_sql("CREATE ROLE app_b WITH LOGIN PASSWORD 'chosen-by-a-human-1'")
        .await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "postgres").await;
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    // The sample's own `sslMode: require`: the test server speaks TLS.
    // An open session of the old user holds its revocation for up to maxWait (3 s
    // here), then onTimeout: Revoke revokes it anyway and ends the session.
    let manifest = sample("postgres.yaml")
        .replace(
            "\n  schedule:\n",
            "\n  revocation: {minValidity: 0s, maxWait: 3s, onTimeout: Revoke}\n  schedule:\n",
        )
        .replace("host: postgres.example.com", "host: 127.0.0.1")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &pg.admin_password);
    assert!(manifest.contains("sslMode: require"));
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    wait_status(&client, &ns, "app-db-login", 60, "rotated", |s| {
        s.rotation_count == 1
    })
    .await;
    let login = |n: u32| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let _ = n;
            let s = get_secret(&client, &ns, "app-db-login").await.unwrap();
            (
                secret_value(&s, "DB_USER").unwrap(),
                secret_value(&s, "DB_PASSWORD").unwrap(),
                secret_value(&s, "DATABASE_URL").unwrap(),
            )
        }
    };
    let (u1, p1, uri1) = login(1).await;
    assert_eq!(u1, "app_a");
    // memberOf: the user rotor created holds the role (and so its privileges); the
    // user that existed before is left as its owner made it.
    assert_eq!(pg.roles_of("app_a").await, vec!["app_rw".to_string()]);
    assert!(pg.roles_of("app_b").await.is_empty());
    pg.admin_sql(
        "CREATE TABLE IF NOT EXISTS app_grants (n int); GRANT SELECT ON app_grants TO app_rw",
    )
    .await;
    let as_a = pg.session(&u1, &p1, "postgres").await;
    as_a.simple_query("SELECT n FROM app_grants")
        .await
        .expect("app_a reads what app_rw may read");
    assert!(
        pg.can_login(&u1, &p1, "app").await,
        "the active user logs in"
    );
    assert_eq!(
        uri1,
        format!(
            "postgresql://app%5Fa:{p1}@127.0.0.1:{}/app?sslmode=require",
            pg.port
        )
    );

    // The sweep revokes the password nobody was handed, once: later sweeps (every
    // second here) leave the user alone until a rotation changes the slots.
    wait_metric(
        &op,
        r#"rotor_orphan_sweeps_total{provider="postgres"}"#,
        4.0,
    )
    .await;
    assert_eq!(
        metric(&op, r#"rotor_orphans_swept_total{provider="postgres"}"#).await,
        Some(1.0)
    );
    assert!(
        !pg.can_login("app_b", "chosen-by-a-human-1", "app").await,
        "the unused user's old password is revoked"
    );

    rotate(&client, &ns, "app-db-login", "r2", 2).await;
    let (u2, p2, _) = login(2).await;
    assert_eq!(u2, "app_b");
    assert!(pg.can_login(&u2, &p2, "app").await, "the new user logs in");
    assert!(
        pg.can_login(&u1, &p1, "app").await,
        "the previous user still logs in"
    );

    // A session app_a opened with the password from rotation 1, still open when
    // rotation 3 revokes that password: it is ended, not left running.
    let old_session = pg.session(&u1, &p1, "app").await;
    old_session.simple_query("SELECT 1").await.unwrap();
    // maxWait counts from when app_a stopped being active (rotation 2), seconds
    // ago: the hold is over at once (tests/consumers.rs shows the hold itself).
    request(&client, &ns, "app-db-login", "rotor.dev/rotate", "r3").await;
    rotated(&client, &ns, "app-db-login", 3).await;
    wait_for_event(
        &client,
        &ns,
        "app-db-login",
        "ForcedRevocation",
        "the provider reports it in use (",
        30,
    )
    .await;
    assert!(
        old_session.simple_query("SELECT 1").await.is_err(),
        "the revoked password's session was ended"
    );
    let (u3, p3, _) = login(3).await;
    assert_eq!(u3, "app_a");
    assert!(pg.can_login(&u3, &p3, "app").await);
    assert!(
        pg.can_login(&u2, &p2, "app").await,
        "the previous one still works"
    );
    assert!(
        !pg.can_login(&u1, &p1, "app").await,
        "the password from two rotations ago is dead"
    );
    assert_no_leak(
        &client,
        &ns,
        "app-db-login",
        &op.logs(),
        &[p1, p2, p3, pg.admin_password.clone()],
    )
    .await;
}

/// AWS's alternating-users Lambda leaves tables created by one user owned by it, and the
/// other user gets "permission denied" after the next rotation (its issues #56, #175,
/// #38). With memberOf, each user logs in as the shared role, so what either creates
/// belongs to the role and both keep using it.
#[tokio::test]
async fn postgres_objects_created_by_either_user_stay_usable_by_both() {
    let pg = postgres::postgres();
    pg.admin_sql("CREATE DATABASE shared_app").await;
    pg.admin_sql("CREATE ROLE shared_rw").await;
    pg.admin_session("shared_app")
        .await
        .batch_execute("GRANT CREATE, USAGE ON SCHEMA public TO shared_rw")
        .await
        .unwrap();
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-shared").await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = sample("postgres.yaml")
        .replace("name: app-db-login", "name: shared-login")
        .replace("allow-read: app-db-login", "allow-read: shared-login")
        .replace(
            "\n  schedule:\n",
            "\n  revocation: {minValidity: 0s}\n  schedule:\n",
        )
        .replace("host: postgres.example.com", "host: 127.0.0.1")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("database: app", "database: shared_app")
        .replace("username: app\n", "username: shared\n")
        .replace("memberOf: app_rw", "memberOf: shared_rw")
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &pg.admin_password);
    assert!(manifest.contains("memberOf: shared_rw") && manifest.contains("username: shared\n"));
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "shared-login", 1).await;
    let login = || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let s = get_secret(&client, &ns, "shared-login").await.unwrap();
            (
                secret_value(&s, "DB_USER").unwrap(),
                secret_value(&s, "DB_PASSWORD").unwrap(),
            )
        }
    };
    let (u1, p1) = login().await;
    assert_eq!(u1, "shared_a");
    let as_a = pg.session(&u1, &p1, "shared_app").await;
    as_a.batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)")
        .await
        .expect("shared_a creates a table");

    rotate(&client, &ns, "shared-login", "r2", 2).await;
    let (u2, p2) = login().await;
    assert_eq!(u2, "shared_b");
    let as_b = pg.session(&u2, &p2, "shared_app").await;
    as_b.batch_execute("INSERT INTO orders VALUES (2); UPDATE orders SET id = id + 10")
        .await
        .expect("shared_b writes the table shared_a created");
    let rows = as_b
        .query("SELECT id FROM orders ORDER BY id", &[])
        .await
        .expect("shared_b reads the table shared_a created");
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![11, 12]);
    as_b.batch_execute("CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (7)")
        .await
        .unwrap();
    // The owner is the shared role, not whichever user happened to create it.
    let owners = pg
        .admin_session("shared_app")
        .await
        .query(
            "SELECT tablename::text, tableowner::text FROM pg_catalog.pg_tables \
             WHERE tablename IN ('orders', 'invoices') ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let owners: Vec<(String, String)> = owners.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        owners,
        vec![
            ("invoices".to_string(), "shared_rw".to_string()),
            ("orders".to_string(), "shared_rw".to_string())
        ]
    );

    // shared_a's session would hold its revocation (the usage check): it ends here.
    drop(as_a);
    // The third rotation gives shared_a a new password: it still uses what shared_b made.
    rotate(&client, &ns, "shared-login", "r3", 3).await;
    let (u3, p3) = login().await;
    assert_eq!(u3, "shared_a");
    let as_a = pg.session(&u3, &p3, "shared_app").await;
    as_a.batch_execute("INSERT INTO invoices VALUES (8); DELETE FROM orders WHERE id = 11")
        .await
        .expect("shared_a writes the table shared_b created");
    assert!(
        !pg.can_login(&u1, &p1, "shared_app").await,
        "two rotations back is dead"
    );
}

/// SUPERUSER (like BYPASSRLS, CREATEROLE, CREATEDB) is not inherited through
/// membership, so rotor never makes such a memberOf the login's default role: every
/// session of the app would run with it (found by the attacker review).
#[tokio::test]
async fn a_privileged_member_of_is_never_the_logins_default_role() {
    let pg = postgres::postgres();
    pg.admin_sql("CREATE DATABASE su_app").await;
    pg.admin_sql("CREATE ROLE su_owner SUPERUSER NOLOGIN").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-su").await;
    let _op = Operator::start_with(&ns, FAST);
    let manifest = sample("postgres.yaml")
        .replace("name: app-db-login", "name: su-login")
        .replace("allow-read: app-db-login", "allow-read: su-login")
        .replace("host: postgres.example.com", "host: 127.0.0.1")
        .replace("port: 5432", &format!("port: {}", pg.port))
        .replace("database: app", "database: su_app")
        .replace("username: app\n", "username: su\n")
        .replace("memberOf: app_rw", "memberOf: su_owner")
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &pg.admin_password);
    assert!(manifest.contains("memberOf: su_owner"));
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "su-login", 1).await;
    let s = get_secret(&client, &ns, "su-login").await.unwrap();
    let (u, p) = (
        secret_value(&s, "DB_USER").unwrap(),
        secret_value(&s, "DB_PASSWORD").unwrap(),
    );
    assert_eq!(pg.roles_of(&u).await, vec!["su_owner".to_string()]);
    let session = pg.session(&u, &p, "su_app").await;
    let rows = session
        .query(
            "SELECT current_setting('is_superuser'), current_user::text",
            &[],
        )
        .await
        .unwrap();
    let (su, who): (String, String) = (rows[0].get(0), rows[0].get(1));
    assert_eq!((su.as_str(), who.as_str()), ("off", u.as_str()));
}

#[tokio::test]
async fn endpoint_safety_and_namespace_rules() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "guards").await;
    let fake = fakes::supabase("abcdefghijklmnopqrst").await;
    let admin = fake.lock().admin_token.clone();
    // No --allow-private-endpoints: the fake on 127.0.0.1 is refused.
    let _op = Operator::start(&ns);
    let manifest = sample("supabase.yaml")
        .replace("https://api.supabase.com", &fake.url)
        .replace("sbp_REPLACE_WITH_YOUR_PERSONAL_ACCESS_TOKEN", &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "supabase-secret-key").await;
    assert!(
        s.last_rotation_message
            .contains("--allow-private-endpoints"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(
        fake.lock().requests,
        0,
        "no request reached the internal address"
    );

    // A DNS name is judged by the addresses it resolves to: `localhost` is loopback.
    let by_name = manifest
        .replace("name: supabase-secret-key\nspec", "name: by-name\nspec")
        .replace("http://127.0.0.1:", "http://localhost:")
        .replace(
            "rotor.dev/allow-read: supabase-secret-key",
            "rotor.dev/allow-read: supabase-secret-key,by-name",
        );
    assert!(by_name.contains("http://localhost:") && by_name.contains(",by-name"));
    apply_yaml(&client, &ns, &by_name).await.unwrap();
    let s = failed(&client, &ns, "by-name").await;
    assert!(
        s.last_rotation_message
            .contains("endpoint localhost resolves to a loopback, private or link-local address"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(fake.lock().requests, 0, "nothing reached localhost either");

    // A database host goes through the same guard, before any connection.
    let pg = postgres::postgres();
    let database = manifest_pg_guarded(pg, "localhost");
    apply_yaml(&client, &ns, &database).await.unwrap();
    let s = failed(&client, &ns, "guarded-db").await;
    assert!(
        s.last_rotation_message
            .contains("endpoint localhost resolves to a loopback, private or link-local address"),
        "{}",
        s.last_rotation_message
    );
    assert!(
        !pg.log().contains("database=guard_db"),
        "rotor connected to the refused database host"
    );

    let cross = manifest
        .replace("name: supabase-secret-key\nspec", "name: cross\nspec")
        .replace(
            "        key: accessToken\n",
            "        key: accessToken\n        namespace: kube-system\n",
        );
    apply_yaml(&client, &ns, &cross).await.unwrap();
    let s = failed(&client, &ns, "cross").await;
    assert!(s.last_rotation_message.contains("namespace \"kube-system\": rotor reads Secrets only from the SecretRotation's own namespace"), "{}", s.last_rotation_message);

    let missing = manifest
        .replace("name: supabase-secret-key\nspec", "name: missing\nspec")
        .replace(
            "name: supabase-admin\n        key",
            "name: nowhere\n        key",
        );
    apply_yaml(&client, &ns, &missing).await.unwrap();
    let s = failed(&client, &ns, "missing").await;
    assert!(
        s.last_rotation_message
            .contains("Secret \"nowhere\" (admin credentials) does not exist"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(condition(&s, "Degraded").reason, "CredentialsMissing");
}

/// A PostgreSQL SecretRotation `guarded-db` (with its admin Secret) for `host`.
fn manifest_pg_guarded(pg: &postgres::Postgres, host: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: guarded-db-admin
  annotations:
    rotor.dev/allow-read: guarded-db
stringData:
  password: "{password}"
---
apiVersion: rotor.dev/v1alpha1
kind: SecretRotation
metadata:
  name: guarded-db
spec:
  provider:
    postgres:
      host: {host}
      port: {port}
      database: guard_db
      adminUsername: postgres
      credentialsRef: {{ name: guarded-db-admin, key: password }}
      username: guarded
  secretsMapping: {{ password: DB_PASSWORD }}
  target: {{ name: guarded-db }}
"#,
        password = pg.admin_password,
        port = pg.port,
    )
}

/// One scripted answer of the usage endpoint below: status and JSON body.
type UsageScript = std::sync::Arc<std::sync::Mutex<(Vec<(u16, String)>, Vec<String>)>>;

/// A vendor's usage endpoint on 127.0.0.1 that answers from `script` in order and
/// records each request (method, path, Authorization header).
async fn usage_endpoint(script: UsageScript) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::State;
    let router = axum::Router::new()
        .route(
            "/admin/keys/{id}/usage",
            axum::routing::any(
                |State(script): State<UsageScript>,
                 method: axum::http::Method,
                 uri: axum::http::Uri,
                 headers: axum::http::HeaderMap| async move {
                    let mut s = script.lock().unwrap();
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    s.1.push(format!("{method} {uri} {auth}"));
                    let (status, body) = if s.0.is_empty() {
                        (500, "{}".to_string())
                    } else {
                        s.0.remove(0)
                    };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                },
            ),
        )
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, server)
}

/// `http.usage`: the request is sent as configured (GET, `{{id}}` in the URL, the
/// Secret header resolved) and its answer read by `countPath` / `lastUsedPath`,
/// through the provider rotor builds from the spec (the wrapper forwards the call).
#[tokio::test]
async fn http_usage_request_says_whether_the_old_key_is_still_used() {
    use rotor::rotation::{ProviderError, Usage};
    let since = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let vendor_secret = "sk_live_do_not_show_1234";
    let script: UsageScript = std::sync::Arc::default();
    script.lock().unwrap().0 = [
        (
            200,
            r#"{"activeSessions": 3, "lastUsedAt": null}"#.to_string(),
        ),
        (
            200,
            r#"{"activeSessions": 0, "lastUsedAt": "2026-12-04T09:00:00Z"}"#.to_string(),
        ),
        (
            200,
            r#"{"activeSessions": 0, "lastUsedAt": "2026-12-04T10:30:00Z"}"#.to_string(),
        ),
        (404, r#"{"message": "no such key"}"#.to_string()),
        (410, "{}".to_string()),
        (
            200,
            format!(r#"{{"activeSessions": -1, "lastUsedAt": null, "key": "{vendor_secret}"}}"#),
        ),
        (
            200,
            format!(r#"{{"lastUsedAt": "{vendor_secret}", "activeSessions": 0}}"#),
        ),
        (503, r#"{"message": "down for maintenance"}"#.to_string()),
        (401, r#"{"message": "bad token"}"#.to_string()),
    ]
    .into();
    let (url, server) = usage_endpoint(std::sync::Arc::clone(&script)).await;
    let spec: rotor::api::ProviderSpec = serde_json::from_value(serde_json::json!({"http": {
        "issue": {"url": format!("{url}/admin/keys")},
        "keyPath": "$.data.key",
        "usage": {
            "url": format!("{url}/admin/keys/{{{{id}}}}/usage"),
            "headers": [{"name": "Authorization", "valuePrefix": "Bearer ",
                         "valueFrom": {"name": "keys-api-admin", "key": "token"}}],
            "countPath": "$.activeSessions",
            "lastUsedPath": "$.lastUsedAt",
        },
    }}))
    .unwrap();
    let http = rotor::providers::HttpClient::new(rotor::providers::HttpSettings {
        allow_private_endpoints: true,
        max_retries: 0,
        ..rotor::providers::HttpSettings::default()
    });
    let mut secrets = rotor::providers::Secrets::default();
    secrets.0.insert(
        ("keys-api-admin".into(), "token".into()),
        secrecy::SecretString::from("admin_usage_token_1"),
    );
    let provider = rotor::providers::build(
        &spec,
        &rotor::providers::BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        },
    )
    .unwrap();
    let ask = || async {
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            provider.in_use("key_1", since),
        )
        .await
        .expect("the usage request answers within 20 s")
    };
    assert_eq!(
        ask().await.unwrap(),
        Usage::InUse {
            count: Some(3),
            last_used: None
        }
    );
    assert_eq!(
        ask().await.unwrap(),
        Usage::Unused,
        "0 sessions, used before"
    );
    assert_eq!(
        ask().await.unwrap().to_string(),
        "in use (last used 2026-12-04T10:30:00+00:00)",
        "0 sessions, but used after it stopped being active"
    );
    assert_eq!(ask().await.unwrap(), Usage::Unused, "404: the key is gone");
    assert_eq!(ask().await.unwrap(), Usage::Unused, "410: the key is gone");
    for path in [
        "countPath \"$.activeSessions\"",
        "lastUsedPath \"$.lastUsedAt\"",
    ] {
        let err = ask().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ProviderError::BadResponse(_)), "{text}");
        assert!(text.contains(&format!("http.usage.{path}")), "{text}");
        assert!(!text.contains(vendor_secret), "{text}");
    }
    let err = ask().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    let err = ask().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let seen = script.lock().unwrap().1.clone();
    assert_eq!(
        seen.len(),
        9,
        "one request per question (no retries): {seen:?}"
    );
    for line in &seen {
        assert_eq!(
            line, "GET /admin/keys/key%5F1/usage Bearer admin_usage_token_1",
            "GET by default, {{{{id}}}} filled (percent-encoded, as for revoke), the Secret header resolved"
        );
    }
    server.abort();
}
