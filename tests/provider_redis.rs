//! `provider.redis` against real `redis-server`s (tests/support/redis.rs): the sample
//! end to end through the operator, with and without an ACL file, TLS, the rules and
//! template users, hostile rules strings and servers, the endpoint guard, and the
//! operator SIGKILLed at every failpoint of a rotation.

mod support;

use ::redis::Value;
use rotor::rotation::{IssueRequest, NoStash, Provider, Revocation, Usage};
use secrecy::ExposeSecret;
use std::time::Duration;
use support::redis::{Recorder, Redis};
use support::scenario::*;
use support::*;

/// The Redis sample pointed at `port` (plain TCP), its admin password filled in, the
/// previous credential revocable at once (and revoked anyway after 3 s of use).
fn sample_for(redis: &Redis, port: u16) -> String {
    let manifest = sample("redis.yaml")
        .replace(
            "\n  schedule:\n",
            "\n  revocation: {minValidity: 0s, maxWait: 3s, onTimeout: Revoke}\n  schedule:\n",
        )
        .replace("host: redis.example.com", "host: 127.0.0.1")
        .replace("port: 6379", &format!("port: {port}"))
        .replace("tls: verify", "tls: disable")
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &redis.admin_password);
    assert!(manifest.contains("tls: disable") && manifest.contains("adminUsername: rotor"));
    manifest
}

/// The user, password and URL in the target Secret.
async fn login_in_secret(client: &kube::Client, ns: &str) -> (String, String, String) {
    let s = get_secret(client, ns, "app-cache-login").await.unwrap();
    (
        secret_value(&s, "REDIS_USER").unwrap(),
        secret_value(&s, "REDIS_PASSWORD").unwrap(),
        secret_value(&s, "REDIS_URL").unwrap(),
    )
}

async fn run(
    conn: &mut ::redis::aio::MultiplexedConnection,
    args: &[&str],
) -> Result<Value, String> {
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async::<Value>(conn)
        .await
        .map_err(|e| e.code().unwrap_or("io").to_string())
}

/// Every place a password was sent to the server: only ever as `AUTH`'s argument
/// (the connection test), never inside `ACL SETUSER` (which gets its hash).
fn sent_only_in_auth(recorder: &Recorder, password: &str) {
    let before = recorder.sent_before(password);
    assert!(
        !before.is_empty(),
        "the recorder saw the connection test's AUTH (the check can fail)"
    );
    for b in &before {
        assert!(
            b.contains("AUTH\r\n") && !b.contains("SETUSER"),
            "the password was sent outside AUTH: …{b:?}"
        );
    }
}

#[tokio::test]
async fn redis_sample_rotates_across_two_users_with_an_acl_file() {
    let redis = Redis::start(true, false);
    // The second user exists already, with a password a human chose, saved in the
    // ACL file: rotor owns it, and a restart must not bring that password back.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "app_b",
        "on",
        ">chosen-by-a-human-1",
        "~*",
        "+@all",
    ]);
    redis.cli(&["ACL", "SAVE"]);
    let monitor = redis.monitor();
    let recorder = Recorder::start(redis.port).await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "redis").await;
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    apply_yaml(&client, &ns, &sample_for(&redis, recorder.port))
        .await
        .unwrap();
    rotated(&client, &ns, "app-cache-login", 1).await;
    let (u1, p1, uri1) = login_in_secret(&client, &ns).await;
    assert_eq!(u1, "app_a");
    assert_eq!(
        uri1,
        format!("redis://app%5Fa:{p1}@127.0.0.1:{}/0", recorder.port)
    );
    // The rules apply: its keys and channels, read and write, nothing else.
    let mut as_a = redis.login(&u1, &p1).await.expect("the new user logs in");
    run(&mut as_a, &["SET", "app:x", "1"]).await.unwrap();
    assert_eq!(
        run(&mut as_a, &["SET", "other:x", "1"]).await,
        Err("NOPERM".into()),
        "a key outside ~app:*"
    );
    assert_eq!(
        run(&mut as_a, &["FLUSHALL"]).await,
        Err("NOPERM".into()),
        "a command outside the rules"
    );

    // The sweep revokes the password nobody was handed, once.
    wait_metric(&op, r#"rotor_orphan_sweeps_total{provider="redis"}"#, 4.0).await;
    assert_eq!(
        metric(&op, r#"rotor_orphans_swept_total{provider="redis"}"#).await,
        Some(1.0)
    );
    assert!(!redis.can_login("app_b", "chosen-by-a-human-1").await);

    rotate(&client, &ns, "app-cache-login", "r2", 2).await;
    let (u2, p2, _) = login_in_secret(&client, &ns).await;
    assert_eq!(u2, "app_b");
    // `rotor plan` says what the next rotation does, in the provider's words.
    let plan = rotor_cli(&["plan", "-n", &ns]);
    eprintln!("rotor plan:\n{plan}");
    assert!(
        plan.contains("app-cache-login") && plan.contains("redis") && plan.contains("rotate at"),
        "{plan}"
    );
    assert!(redis.can_login(&u2, &p2).await, "the new user logs in");
    assert!(
        redis.can_login(&u1, &p1).await,
        "the previous user still logs in"
    );
    // A connection app_a opened with the password of rotation 1 keeps working until
    // rotation 3 revokes that password, then it is killed.
    run(&mut as_a, &["GET", "app:x"])
        .await
        .expect("the old connection works until the revoke");
    request(&client, &ns, "app-cache-login", "rotor.dev/rotate", "r3").await;
    rotated(&client, &ns, "app-cache-login", 3).await;
    wait_for_event(
        &client,
        &ns,
        "app-cache-login",
        "ForcedRevocation",
        "the provider reports it in use (",
        30,
    )
    .await;
    assert!(
        run(&mut as_a, &["GET", "app:x"]).await.is_err(),
        "the revoked password's connection was killed"
    );
    let (u3, p3, _) = login_in_secret(&client, &ns).await;
    assert_eq!(u3, "app_a");
    assert!(redis.can_login(&u3, &p3).await);
    assert!(
        redis.can_login(&u2, &p2).await,
        "the previous one still works"
    );
    assert!(
        !redis.can_login(&u1, &p1).await,
        "the password from two rotations ago is dead"
    );

    // The ACL file holds all of it: after a restart the same two work and the dead
    // ones stay dead.
    op.stop().await;
    redis.restart();
    assert!(
        redis.can_login(&u3, &p3).await,
        "saved: the active password"
    );
    assert!(
        redis.can_login(&u2, &p2).await,
        "saved: the previous password"
    );
    assert!(
        !redis.can_login(&u1, &p1).await,
        "saved: two rotations ago is dead"
    );
    assert!(
        !redis.can_login("app_b", "chosen-by-a-human-1").await,
        "saved: the swept password did not come back"
    );
    assert_eq!(
        redis.users(),
        ["app_a", "app_b", "default", "rotor"],
        "no other user was made"
    );

    // The plaintext never reached the server except as AUTH's argument.
    for p in [&p1, &p2, &p3] {
        sent_only_in_auth(&recorder, p);
    }
    let seen = format!(
        "{}\n{}",
        redis.what_it_saw(),
        std::fs::read_to_string(&monitor).unwrap_or_default()
    );
    assert!(
        seen.contains("SETUSER") || seen.contains("setuser") || seen.contains("auth"),
        "the server's logs were read"
    );
    for p in [&p1, &p2, &p3] {
        assert!(
            !seen.contains(p.as_str()),
            "a password in the server's slow log, ACL log or MONITOR"
        );
    }
    assert_no_leak(
        &client,
        &ns,
        "app-cache-login",
        &op.logs(),
        &[p1, p2, p3, redis.admin_password.clone()],
    )
    .await;
}

/// The provider rotor builds for a Redis spec (`fields` merged over a plain spec for
/// `redis` with users `app_a`/`app_b`), as the operator builds it.
fn provider(redis: &Redis, fields: serde_json::Value) -> Result<Box<dyn Provider>, String> {
    provider_with(redis, fields, Duration::from_secs(10))
}

fn provider_with(
    redis: &Redis,
    fields: serde_json::Value,
    timeout: Duration,
) -> Result<Box<dyn Provider>, String> {
    let mut spec = serde_json::json!({
        "host": "127.0.0.1",
        "port": redis.port,
        "tls": "disable",
        "adminUsername": redis.admin_user,
        "credentialsRef": {"name": "admin", "key": "password"},
        "username": "app",
        "rules": "~app:* +@read +@write",
    });
    for (k, v) in fields.as_object().unwrap() {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    let spec: rotor::api::ProviderSpec =
        serde_json::from_value(serde_json::json!({ "redis": spec })).map_err(|e| e.to_string())?;
    let http = rotor::providers::HttpClient::new(rotor::providers::HttpSettings {
        allow_private_endpoints: true,
        timeout,
        ..rotor::providers::HttpSettings::default()
    });
    let mut secrets = rotor::providers::Secrets::default();
    secrets.0.insert(
        ("admin".into(), "password".into()),
        secrecy::SecretString::from(redis.admin_password.clone()),
    );
    secrets.0.insert(
        ("ca".into(), "ca.crt".into()),
        secrecy::SecretString::from(redis.ca_pem.clone()),
    );
    secrets.0.insert(
        ("other-ca".into(), "ca.crt".into()),
        secrecy::SecretString::from(redis.other_ca_pem.clone()),
    );
    rotor::providers::build(
        &spec,
        &rotor::providers::BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        },
    )
    .map_err(|e| e.to_string())
}

async fn issue(p: &dyn Provider, slot: u8) -> Result<(String, String, String), String> {
    let c = p
        .issue(&IssueRequest {
            name: "rotor-uid-1",
            slot,
            stash: &NoStash,
        })
        .await
        .map_err(|e| e.to_string())?;
    p.test(&c).await.map_err(|e| e.to_string())?;
    Ok((
        c.id.clone(),
        c.outputs["password"].expose_secret().to_string(),
        c.outputs["uri"].expose_secret().to_string(),
    ))
}

/// Without an ACL file: the same commands, no `ACL SAVE`; revoke ends the user's
/// connections; list_own finds exactly the two names; in_use counts connections.
#[tokio::test]
async fn without_an_acl_file_issue_test_revoke_list_and_usage() {
    let redis = Redis::start(false, false);
    redis.cli(&["ACL", "SETUSER", "app", "on", ">not-ours-1234"]);
    redis.cli(&["ACL", "SETUSER", "app_a_x", "on", ">not-ours-1234"]);
    redis.cli(&["ACL", "SETUSER", "app_c", "on", ">not-ours-1234"]);
    let p = provider(&redis, serde_json::json!({})).unwrap();
    assert_eq!(p.list_own("ignored").await.unwrap(), Vec::<String>::new());
    assert_eq!(p.revoke("app_b").await.unwrap(), Revocation::AlreadyGone);
    let (user, password, _) = issue(&*p, 0).await.unwrap();
    assert_eq!(user, "app_a");
    assert_eq!(p.list_own("ignored").await.unwrap(), ["app_a"]);
    assert_eq!(
        p.in_use("app_a", chrono::Utc::now()).await.unwrap(),
        Usage::Unused
    );
    let mut one = redis.login(&user, &password).await.unwrap();
    let _two = redis.login(&user, &password).await.unwrap();
    assert_eq!(
        p.in_use("app_a", chrono::Utc::now()).await.unwrap(),
        Usage::InUse {
            count: Some(2),
            last_used: None
        }
    );
    // A second issue into the same slot replaces the password: one at a time.
    let (_, password2, _) = issue(&*p, 0).await.unwrap();
    assert!(
        !redis.can_login("app_a", &password).await,
        "the slot's old password is gone"
    );
    assert!(redis.can_login("app_a", &password2).await);
    assert_eq!(p.revoke("app_a").await.unwrap(), Revocation::Revoked);
    assert!(
        run(&mut one, &["GET", "app:x"]).await.is_err(),
        "connections killed"
    );
    assert!(!redis.can_login("app_a", &password2).await);
    assert_eq!(
        p.in_use("app_a", chrono::Utc::now()).await.unwrap(),
        Usage::Unused
    );
    let slowlog = redis.cli(&["SLOWLOG", "GET", "10000"]);
    assert!(slowlog.lines().any(|l| l.trim() == "SETUSER"), "{slowlog}");
    assert!(
        !slowlog.lines().any(|l| l.trim() == "SAVE"),
        "no ACL SAVE without an ACL file"
    );
    assert!(!redis.what_it_saw().contains(&password2));
    // The others' users are untouched.
    assert!(redis.can_login("app", "not-ours-1234").await);
    assert!(redis.can_login("app_c", "not-ours-1234").await);
}

/// `templateUser`: the template's key patterns and commands are copied, its password
/// and its `nopass` never; a command outside them is refused with NOPERM.
#[tokio::test]
async fn template_user_rules_are_copied_without_its_passwords() {
    let redis = Redis::start(false, false);
    redis.cli(&[
        "ACL",
        "SETUSER",
        "tpl",
        "on",
        ">template-pass-1",
        "nopass",
        "~t:*",
        "&t:*",
        "-@all",
        "+get",
        "+set",
    ]);
    let p = provider(
        &redis,
        serde_json::json!({"rules": null, "templateUser": "tpl"}),
    )
    .unwrap();
    let (user, password, _) = issue(&*p, 1).await.unwrap();
    assert_eq!(user, "app_b");
    let mut c = redis.login(&user, &password).await.unwrap();
    run(&mut c, &["SET", "t:1", "v"]).await.unwrap();
    run(&mut c, &["GET", "t:1"]).await.unwrap();
    assert_eq!(run(&mut c, &["DEL", "t:1"]).await, Err("NOPERM".into()));
    assert_eq!(run(&mut c, &["SET", "x", "v"]).await, Err("NOPERM".into()));
    assert!(
        !redis.can_login("app_b", "template-pass-1").await,
        "no password copied"
    );
    assert!(
        !redis.can_login("app_b", "anything-at-all").await,
        "nopass not copied"
    );

    // A template with a selector, or one that does not exist: refused, nothing set.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "tpl2",
        "on",
        "~a:*",
        "+get",
        "(~b:* +set)",
    ]);
    let p2 = provider(
        &redis,
        serde_json::json!({"rules": null, "templateUser": "tpl2", "username": "sel"}),
    )
    .unwrap();
    let e = issue(&*p2, 0).await.unwrap_err();
    assert!(e.contains("selectors"), "{e}");
    let p3 = provider(
        &redis,
        serde_json::json!({"rules": null, "templateUser": "nobody", "username": "none"}),
    )
    .unwrap();
    let e = issue(&*p3, 0).await.unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
    let users = redis.users();
    assert!(
        !users
            .iter()
            .any(|u| u.starts_with("sel_") || u.starts_with("none_")),
        "{users:?}"
    );
}

/// A rules string that would set a password, open the user without one or hide
/// anything else is refused before anything reaches the server, and the error does not
/// repeat it.
#[tokio::test]
async fn hostile_rules_strings_are_refused() {
    let redis = Redis::start(false, false);
    for rules in [
        "~app:* >attacker-pw-123",
        "~app:* nopass",
        "~app:* resetpass",
        "+@all off",
        "+@all reset",
        "~* #0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "~* <attacker-pw-123",
        "~* !0123456789abcdef",
        "(~* +@all)",
        "~*\u{a0}>attacker-pw-123",
        "~*\n+@all\0nopass",
        "~* skip-sanitize-payload",
    ] {
        let e = match provider(&redis, serde_json::json!({"rules": rules})) {
            Err(e) => e,
            Ok(_) => panic!("{rules:?} accepted"),
        };
        assert!(
            e.contains("invalid provider configuration"),
            "{rules:?}: {e}"
        );
        assert!(
            !e.contains("attacker-pw") && !e.contains("0123456789abcdef"),
            "{e}"
        );
    }
    let e = provider(
        &redis,
        serde_json::json!({"username": null, "usernames": ["default", "other"]}),
    )
    .err()
    .expect("default refused");
    assert!(e.contains("\"default\" cannot be rotated"), "{e}");
    let long = "~a ".repeat(1500);
    assert!(provider(&redis, serde_json::json!({"rules": long})).is_err());
    assert_eq!(
        redis.users(),
        ["default", "rotor"],
        "nothing reached the server"
    );
}

/// TLS: verify with the right CA works and the URL says rediss://; the wrong CA is
/// refused before the password is sent; insecureSkipVerify encrypts without checking.
#[tokio::test]
async fn tls_verify_and_insecure_skip_verify() {
    let redis = Redis::start(false, true);
    let tls = |mode: &str, ca: Option<&str>, user: &str| {
        let mut f = serde_json::json!({"port": redis.tls_port, "tls": mode, "username": user});
        if let Some(ca) = ca {
            f["caRef"] = serde_json::json!({"name": ca, "key": "ca.crt"});
        }
        f
    };
    let p = provider(&redis, tls("verify", Some("ca"), "v")).unwrap();
    let (user, password, uri) = issue(&*p, 0).await.unwrap();
    assert_eq!(
        uri,
        format!("rediss://v%5Fa:{password}@127.0.0.1:{}/0", redis.tls_port)
    );
    assert!(redis.can_login(&user, &password).await);
    let wrong = provider(&redis, tls("verify", Some("other-ca"), "w")).unwrap();
    let e = issue(&*wrong, 0).await.unwrap_err();
    assert!(e.contains("certificate is not trusted"), "{e}");
    let mozilla = provider(&redis, tls("verify", None, "m")).unwrap();
    assert!(
        issue(&*mozilla, 0)
            .await
            .unwrap_err()
            .contains("certificate is not trusted")
    );
    let insecure = provider(&redis, tls("insecureSkipVerify", None, "i")).unwrap();
    let (_, _, uri) = issue(&*insecure, 0).await.unwrap();
    assert!(uri.starts_with("rediss://i%5Fa:"));
    let plain_to_tls = provider(&redis, tls("disable", None, "d")).unwrap();
    assert!(issue(&*plain_to_tls, 0).await.is_err());
    let users = redis.users();
    assert!(
        !users
            .iter()
            .any(|u| u.starts_with("w_") || u.starts_with("m_")),
        "{users:?}"
    );
}

/// A server that accepts and never answers, and one that answers without end: each
/// call ends within the session timeout, and the endless reply is cut at the cap.
#[tokio::test]
async fn stalling_and_flooding_servers_hold_no_worker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = Redis::start(false, false);
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_port = stall.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            held.push(s);
        }
    });
    let p = provider_with(
        &redis,
        serde_json::json!({"port": stall_port}),
        Duration::from_secs(2),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = issue(&*p, 0).await.unwrap_err();
    assert!(e.contains("did not finish"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // +OK to AUTH, then an array header of two billion elements and bytes forever.
    let flood = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flood_port = flood.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = flood.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"+OK\r\n").await;
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"*2000000000\r\n").await;
                let chunk = b"$1\r\nx\r\n".repeat(1024);
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let p = provider_with(
        &redis,
        serde_json::json!({"port": flood_port}),
        Duration::from_secs(15),
    )
    .unwrap();
    let e = p.list_own("x").await.unwrap_err().to_string();
    assert!(e.contains("more than 4 MiB"), "{e}");
}

/// The endpoint guard: without --allow-private-endpoints a loopback Redis is refused
/// and no connection reaches it.
#[tokio::test]
async fn a_loopback_redis_is_refused_without_allow_private_endpoints() {
    let redis = Redis::start(false, false);
    let recorder = Recorder::start(redis.port).await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "redis-guard").await;
    let _op = Operator::start(&ns);
    let manifest = sample_for(&redis, recorder.port).replace("host: 127.0.0.1", "host: localhost");
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "app-cache-login").await;
    assert!(
        s.last_rotation_message
            .contains("endpoint localhost resolves to a loopback, private or link-local address"),
        "{}",
        s.last_rotation_message
    );
    assert!(
        recorder.sent.lock().unwrap().is_empty(),
        "a connection reached Redis"
    );
}

/// Two rotations, a third killed at `point`, a restart: the third completes, the
/// Secret's credential logs in, the previous slot's still does, the one from two
/// rotations back does not, and only the two users exist.
async fn crash_at(point: &str) {
    let redis = Redis::start(true, false);
    let client = control_plane().client().await;
    let ns = namespace(&client, &format!("redis-crash-{}", point.replace('_', "-"))).await;
    let crash = format!("{point}@3");
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", crash.as_str())]);
    apply_yaml(&client, &ns, &sample_for(&redis, redis.port))
        .await
        .unwrap();
    rotated(&client, &ns, "app-cache-login", 1).await;
    let (u1, p1, _) = login_in_secret(&client, &ns).await;
    rotate(&client, &ns, "app-cache-login", "two", 2).await;
    let (u2, p2, _) = login_in_secret(&client, &ns).await;
    request(&client, &ns, "app-cache-login", "rotor.dev/rotate", "three").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !op.logs().contains("failpoint reached") {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: never reached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.stop().await;
    let op = Operator::start_with(&ns, FAST);
    rotated(&client, &ns, "app-cache-login", 3).await;
    let (u3, p3, _) = login_in_secret(&client, &ns).await;
    assert_eq!(
        (u1.as_str(), u2.as_str(), u3.as_str()),
        ("app_a", "app_b", "app_a")
    );
    assert!(
        redis.can_login(&u3, &p3).await,
        "{point}: the Secret's credential works"
    );
    assert!(
        redis.can_login(&u2, &p2).await,
        "{point}: the previous one still works"
    );
    assert!(
        !redis.can_login(&u1, &p1).await,
        "{point}: two rotations back is dead"
    );
    assert_eq!(redis.users(), ["app_a", "app_b", "default", "rotor"]);
    assert_no_leak(&client, &ns, "app-cache-login", &op.logs(), &[p1, p2, p3]).await;
}

macro_rules! crash_tests {
    ($($name:ident: $point:literal,)*) => {$(
        #[tokio::test]
        async fn $name() {
            crash_at($point).await;
        }
    )*};
}

crash_tests! {
    crash_after_intent: "after_intent",
    crash_after_revoke_old: "after_revoke_old",
    crash_before_vault: "before_vault",
    crash_after_vault: "after_vault",
    crash_after_test: "after_test",
    crash_after_secret: "after_secret",
    crash_after_flip: "after_flip",
}

/// An admin that may not `CONFIG GET`: rotor sends `ACL SAVE` anyway. With an ACL file
/// the change is saved (a restart keeps it); without one, Redis's "not configured to
/// use an ACL file" is no failure.
#[tokio::test]
async fn an_admin_without_config_get_still_saves_the_acl_file() {
    for acl_file in [true, false] {
        let redis = Redis::start(acl_file, false);
        let rules: Vec<&str> = support::redis::ADMIN_RULES
            .iter()
            .copied()
            .filter(|r| *r != "+config|get")
            .collect();
        let pw = format!(">{}", redis.admin_password);
        let mut setuser = vec!["ACL", "SETUSER", "narrow", "on", pw.as_str()];
        setuser.extend(rules);
        redis.cli(&setuser);
        if acl_file {
            redis.cli(&["ACL", "SAVE"]);
        }
        let p = provider(&redis, serde_json::json!({"adminUsername": "narrow"})).unwrap();
        let (user, password, _) = issue(&*p, 0)
            .await
            .unwrap_or_else(|e| panic!("acl_file {acl_file}: {e}"));
        let slowlog = redis.cli(&["SLOWLOG", "GET", "10000"]);
        assert!(
            slowlog.lines().any(|l| l.trim() == "SAVE"),
            "acl_file {acl_file}: ACL SAVE was sent"
        );
        if acl_file {
            redis.restart();
            assert!(
                redis.can_login(&user, &password).await,
                "saved without CONFIG GET"
            );
            assert_eq!(p.revoke(&user).await.unwrap(), Revocation::Revoked);
            redis.restart();
            assert!(
                !redis.can_login(&user, &password).await,
                "the revoke was saved too"
            );
        }
    }
}
