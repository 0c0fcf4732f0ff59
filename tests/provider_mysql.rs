//! `provider.mysql` end to end against a real MariaDB (tests/support/mariadb.rs) and
//! the operator on a real API server: the sample's three rotations, the old user's
//! connection ended by its revoke, grants through a role and copied from the other
//! user, hostile names, TLS, the endpoint guard, crash safety at every failpoint, and
//! no value anywhere it must not be — the server's general log included.

mod support;

use mysql_async::prelude::Queryable;
use support::mariadb::{MariaDb, hex_literal, mariadb};
use support::scenario::*;
use support::*;

/// A SecretRotation `name` (with its admin Secret, and a CA Secret when `ca` is set)
/// for the test server; `extra` is merged into `spec.provider.mysql`.
fn manifest(
    db: &MariaDb,
    name: &str,
    host: &str,
    admin: (&str, &str),
    extra: serde_json::Value,
    ca: Option<&str>,
) -> String {
    let mut mysql = serde_json::json!({
        "host": host,
        "port": db.port,
        "database": "app",
        "sslMode": "disable",
        "adminUsername": admin.0,
        "credentialsRef": {"name": format!("{name}-admin"), "key": "password"},
    });
    for (k, v) in extra.as_object().unwrap() {
        mysql[k] = v.clone();
    }
    let mut docs = vec![serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{name}-admin"), "annotations": {"rotor.dev/allow-read": name}},
        "stringData": {"password": admin.1},
    })];
    if let Some(pem) = ca {
        mysql["caRef"] = serde_json::json!({"name": format!("{name}-ca"), "key": "ca.crt"});
        docs.push(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("{name}-ca"), "annotations": {"rotor.dev/allow-read": name}},
            "stringData": {"ca.crt": pem},
        }));
    }
    docs.push(serde_json::json!({
        "apiVersion": "rotor.dev/v1alpha1",
        "kind": "SecretRotation",
        "metadata": {"name": name},
        "spec": {
            "provider": {"mysql": mysql},
            "schedule": {"rotationInterval": "7d"},
            "revocation": {"minValidity": "0s", "maxWait": "3s", "onTimeout": "Revoke"},
            "secretsMapping": {"username": "DB_USER", "password": "DB_PASSWORD", "uri": "DATABASE_URL"},
            "target": {"name": name},
        },
    }));
    docs.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The login the target Secret holds: user, password.
async fn login(client: &kube::Client, ns: &str, name: &str) -> (String, String) {
    let s = get_secret(client, ns, name).await.unwrap();
    (
        secret_value(&s, "DB_USER").unwrap(),
        secret_value(&s, "DB_PASSWORD").unwrap(),
    )
}

/// The server's general log holds none of `values` (nor their percent-encoded forms).
fn assert_not_in_general_log(db: &MariaDb, values: &[String]) {
    let log = db.general_log();
    for v in values {
        assert!(
            find_leak(&log, std::slice::from_ref(v)).is_none(),
            "a password ({}) reached the server's general log",
            rotor::rotation::fingerprint(v)
        );
    }
}

/// The database `app` and the role `probe_rw` (SELECT on it), which the admin may grant
/// and set as a default role (MariaDB asks UPDATE on the mysql schema for that).
/// Idempotent: every test calls it.
fn setup(db: &MariaDb) {
    db.root_sql(
        "CREATE DATABASE IF NOT EXISTS app; CREATE ROLE IF NOT EXISTS probe_rw;
         GRANT SELECT ON app.* TO probe_rw;
         GRANT probe_rw TO rotor_admin@'%' WITH ADMIN OPTION;
         GRANT UPDATE ON mysql.* TO rotor_admin@'%';",
    );
}

#[tokio::test]
async fn mysql_sample_rotates_across_two_users_on_a_real_server() {
    let db = mariadb();
    // The role holds the privileges; the admin may grant it and set it as default.
    db.root_sql(
        "CREATE DATABASE IF NOT EXISTS app; CREATE TABLE app.grants_probe (n int);
         CREATE ROLE app_rw; GRANT SELECT ON app.* TO app_rw;
         GRANT app_rw TO rotor_admin@'%' WITH ADMIN OPTION;
         GRANT UPDATE ON mysql.* TO rotor_admin@'%';
         CREATE USER app_b@'%' IDENTIFIED BY 'chosen-by-a-human-1';",
    );
    let client = control_plane().client().await;
    let ns = namespace(&client, "mysql").await;
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    // The sample's own `sslMode: verify-full`, against the test CA.
    let ca_block = db.ca_pem.trim_end().replace('\n', "\n    ");
    let manifest = sample("mysql.yaml")
        .replace(
            "\n  schedule:\n",
            "\n  revocation: {minValidity: 0s, maxWait: 3s, onTimeout: Revoke}\n  schedule:\n",
        )
        .replace("host: mysql.example.com", "host: 127.0.0.1")
        .replace("port: 3306", &format!("port: {}", db.port))
        .replace("REPLACE_WITH_THE_ADMIN_PASSWORD", &db.admin_password)
        .replace("REPLACE_WITH_THE_CA_CERTIFICATE", &ca_block);
    assert!(manifest.contains("sslMode: verify-full"));
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let name = "app-mysql-login";
    rotated(&client, &ns, name, 1).await;
    let (u1, p1) = login(&client, &ns, name).await;
    assert_eq!(u1, "app_a");
    assert!(
        db.can_login(&u1, &p1, "app").await,
        "the active user logs in"
    );
    // memberOf: the role is the user's default, so its privileges apply at once.
    {
        let mut as_a = db.session(&u1, &p1, "app").await;
        as_a.query_drop("SELECT n FROM app.grants_probe")
            .await
            .expect("app_a reads what app_rw may read");
    }
    let s = get_secret(&client, &ns, name).await.unwrap();
    assert_eq!(
        secret_value(&s, "DATABASE_URL").unwrap(),
        format!(
            "mysql://app%5Fa:{p1}@127.0.0.1:{}/app?ssl-mode=VERIFY_IDENTITY",
            db.port
        )
    );
    assert_eq!(secret_value(&s, "DB_HOST").as_deref(), Some("127.0.0.1"));
    assert_eq!(secret_value(&s, "DB_PORT"), Some(db.port.to_string()));
    assert_eq!(secret_value(&s, "DB_NAME").as_deref(), Some("app"));

    // The sweep revokes the user nobody was handed (app_b, made by a human), once.
    wait_metric(&op, r#"rotor_orphan_sweeps_total{provider="mysql"}"#, 4.0).await;
    assert_eq!(
        metric(&op, r#"rotor_orphans_swept_total{provider="mysql"}"#).await,
        Some(1.0)
    );
    assert!(
        !db.can_login("app_b", "chosen-by-a-human-1", "app").await,
        "the unused user's old password is revoked"
    );

    // A connection app_a opens with the password from rotation 1: it keeps working
    // through rotation 2, and is counted and killed when rotation 3 revokes app_a.
    let mut old = db.session(&u1, &p1, "app").await;
    old.query_drop("SELECT 1").await.unwrap();

    rotate(&client, &ns, name, "r2", 2).await;
    let (u2, p2) = login(&client, &ns, name).await;
    assert_eq!(u2, "app_b");
    assert!(db.can_login(&u2, &p2, "app").await, "the new user logs in");
    assert!(
        db.can_login(&u1, &p1, "app").await,
        "the previous user still logs in"
    );

    old.query_drop("SELECT 1")
        .await
        .expect("the old user's connection works until it is revoked");
    request(&client, &ns, name, "rotor.dev/rotate", "r3").await;
    rotated(&client, &ns, name, 3).await;
    wait_for_event(
        &client,
        &ns,
        name,
        "ForcedRevocation",
        "the provider reports it in use (",
        30,
    )
    .await;
    assert!(
        old.query_drop("SELECT 1").await.is_err(),
        "the revoked user's connection was killed"
    );
    let (u3, p3) = login(&client, &ns, name).await;
    assert_eq!(u3, "app_a");
    assert!(db.can_login(&u3, &p3, "app").await);
    assert!(
        db.can_login(&u2, &p2, "app").await,
        "the previous one still works"
    );
    assert!(
        !db.can_login(&u1, &p1, "app").await,
        "the password from two rotations ago is refused"
    );
    // `rotor plan` names the provider and the user the next rotation revokes.
    let plan = rotor_cli(&["plan", name, "-n", &ns]);
    assert!(
        plan.contains("mysql") && plan.contains("issue into slot 1, revoking app_b"),
        "{plan}"
    );
    // MariaDB got each password as its hash only: the general log, which records every
    // statement as received, never saw a plaintext.
    let log = db.general_log();
    assert!(
        log.contains("ALTER USER `app_a`@`%` IDENTIFIED BY PASSWORD '*"),
        "the password was set by hash"
    );
    assert_not_in_general_log(db, &[p1.clone(), p2.clone(), p3.clone()]);
    assert_no_leak(
        &client,
        &ns,
        name,
        &op.logs(),
        &[p1, p2, p3, db.admin_password.clone()],
    )
    .await;
}

#[tokio::test]
async fn copy_grants_replays_only_the_other_users_plain_grants() {
    let db = mariadb();
    db.root_sql(
        "CREATE DATABASE IF NOT EXISTS cg_db; CREATE TABLE cg_db.t (n int);
         CREATE USER cg_two@'%' IDENTIFIED BY 'two-password-by-a-human';
         GRANT SELECT, INSERT ON cg_db.* TO cg_two@'%';
         CREATE USER cg_admin@'%' IDENTIFIED BY 'cg-admin-password-1';
         GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO cg_admin@'%';
         GRANT SELECT ON mysql.* TO cg_admin@'%';
         GRANT SELECT, INSERT ON cg_db.* TO cg_admin@'%' WITH GRANT OPTION;",
    );
    let client = control_plane().client().await;
    let ns = namespace(&client, "mysql-copy").await;
    let op = Operator::start_with(&ns, FAST);
    let yaml = manifest(
        db,
        "copied",
        "127.0.0.1",
        ("cg_admin", "cg-admin-password-1"),
        serde_json::json!({"usernames": ["cg_one", "cg_two"], "copyGrants": true, "database": "cg_db"}),
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "copied", 1).await;
    let (user, password) = login(&client, &ns, "copied").await;
    assert_eq!(user, "cg_one");
    let grants = db.root_sql("SHOW GRANTS FOR cg_one@'%'");
    assert!(
        grants.contains("GRANT SELECT, INSERT ON `cg_db`.* TO `cg_one`@`%`"),
        "{grants}"
    );
    {
        let mut s = db.session(&user, &password, "cg_db").await;
        s.query_drop("INSERT INTO cg_db.t VALUES (1)")
            .await
            .expect("the copied grant works");
    }
    // The USAGE line carries cg_two's password hash: replaying it would have given
    // cg_one cg_two's password.
    assert!(db.can_login(&user, &password, "cg_db").await);
    assert!(
        !db.can_login("cg_one", "two-password-by-a-human", "cg_db")
            .await
    );
    assert_no_leak(
        &client,
        &ns,
        "copied",
        &op.logs(),
        &[password, "cg-admin-password-1".into()],
    )
    .await;
}

#[tokio::test]
async fn hostile_user_names_are_quoted_not_injected() {
    let db = mariadb();
    setup(db);
    let client = control_plane().client().await;
    let ns = namespace(&client, "mysql-hostile").await;
    let op = Operator::start_with(&ns, FAST);
    // A quote, backticks, a semicolon and a comment: unquoted, this would drop the admin.
    let base = "h'`;DROP USER `rotor_admin`--";
    let yaml = manifest(
        db,
        "hostile",
        "127.0.0.1",
        ("rotor_admin", &db.admin_password),
        serde_json::json!({"username": base, "memberOf": "probe_rw"}),
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "hostile", 1).await;
    let (user, password) = login(&client, &ns, "hostile").await;
    assert_eq!(user, format!("{base}_a"));
    assert_eq!(
        db.hosts_of(&user),
        vec!["%".to_string()],
        "exactly that name"
    );
    assert_eq!(db.hosts_of("rotor_admin"), vec!["%".to_string()]);
    assert!(db.can_login(&user, &password, "app").await);
    rotate(&client, &ns, "hostile", "two", 2).await;
    let (user2, password2) = login(&client, &ns, "hostile").await;
    assert_eq!(user2, format!("{base}_b"));
    assert!(db.can_login(&user2, &password2, "app").await);
    let out = db.root_sql(&format!(
        "SELECT COUNT(*) FROM mysql.user WHERE User LIKE {}",
        hex_literal("h'%")
    ));
    assert_eq!(out.trim(), "2", "two users, nothing else");
    assert_no_leak(&client, &ns, "hostile", &op.logs(), &[password, password2]).await;
}

#[tokio::test]
async fn tls_require_works_and_verify_full_refuses_another_ca() {
    let db = mariadb();
    setup(db);
    let client = control_plane().client().await;
    let ns = namespace(&client, "mysql-tls").await;
    let _op = Operator::start_with(&ns, FAST);
    let require = manifest(
        db,
        "tls-require",
        "127.0.0.1",
        ("rotor_admin", &db.admin_password),
        serde_json::json!({"username": "tlsreq", "sslMode": "require", "memberOf": "probe_rw"}),
        None,
    );
    apply_yaml(&client, &ns, &require).await.unwrap();
    rotated(&client, &ns, "tls-require", 1).await;
    let (user, password) = login(&client, &ns, "tls-require").await;
    assert!(db.can_login(&user, &password, "app").await);
    // The consumers' URI says how rotor connected.
    let uri = value(&client, &ns, "tls-require", "DATABASE_URL")
        .await
        .unwrap();
    assert!(uri.ends_with("/app?ssl-mode=REQUIRED"), "{uri}");
    let wrong_ca = manifest(
        db,
        "tls-wrong-ca",
        "127.0.0.1",
        ("tls_wrong_admin", &db.admin_password),
        serde_json::json!({"username": "tlswrong", "sslMode": "verify-full"}),
        Some(&db.other_ca_pem),
    );
    apply_yaml(&client, &ns, &wrong_ca).await.unwrap();
    let s = failed(&client, &ns, "tls-wrong-ca").await;
    assert!(
        s.last_rotation_message
            .contains("the server's certificate is not trusted"),
        "{}",
        s.last_rotation_message
    );
    // The handshake failed before any login was attempted.
    assert!(
        !db.general_log().contains("tls_wrong_admin"),
        "rotor logged in through a certificate it does not trust"
    );
}

#[tokio::test]
async fn a_loopback_database_host_is_refused_without_allow_private_endpoints() {
    let db = mariadb();
    let client = control_plane().client().await;
    let ns = namespace(&client, "mysql-guard").await;
    let _op = Operator::start(&ns);
    let yaml = manifest(
        db,
        "guarded",
        "localhost",
        ("guard_admin", &db.admin_password),
        serde_json::json!({"username": "guarded"}),
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    let s = failed(&client, &ns, "guarded").await;
    assert!(
        s.last_rotation_message
            .contains("endpoint localhost resolves to a loopback, private or link-local address"),
        "{}",
        s.last_rotation_message
    );
    assert!(
        !db.general_log().contains("guard_admin"),
        "rotor connected to the refused database host"
    );
}

/// Two good rotations, then a third killed at `point`, then a restart: the rotation
/// completes, the Secret's login works at the server, the previous login still works,
/// the login from two rotations back is refused, exactly the two users exist, status
/// tells the truth and no value leaked.
async fn crash_at(point: &str) {
    let db = mariadb();
    setup(db);
    let client = control_plane().client().await;
    let ns = namespace(&client, &format!("mysql-crash-{}", point.replace('_', "-"))).await;
    let base = format!("cr_{point}");
    let name = "crash";
    let crash = format!("{point}@3");
    let op = Operator::start_env(&ns, FAST, &[("ROTOR_TEST_CRASH_AT", crash.as_str())]);
    let yaml = manifest(
        db,
        name,
        "127.0.0.1",
        ("rotor_admin", &db.admin_password),
        serde_json::json!({"username": base, "memberOf": "probe_rw"}),
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, name, 1).await;
    let (_, p1) = login(&client, &ns, name).await;
    rotate(&client, &ns, name, "two", 2).await;
    let (u2, p2) = login(&client, &ns, name).await;
    request(&client, &ns, name, "rotor.dev/rotate", "three").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !op.logs().contains("failpoint reached") {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: never reached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    op.stop().await;
    let op = Operator::start_with(&ns, FAST);
    let s3 = rotated(&client, &ns, name, 3).await;
    let (u3, p3) = login(&client, &ns, name).await;
    assert_eq!(u3, format!("{base}_a"), "{point}");
    assert!(
        db.can_login(&u3, &p3, "app").await,
        "{point}: the Secret's login works"
    );
    assert!(
        db.can_login(&u2, &p2, "app").await,
        "{point}: the previous login still works"
    );
    assert!(
        !db.can_login(&u3, &p1, "app").await,
        "{point}: the login from two rotations back is refused"
    );
    let out = db.root_sql(&format!(
        "SELECT User FROM mysql.user WHERE User LIKE {} ORDER BY 1",
        hex_literal(&format!("{base}%"))
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![format!("{base}_a"), format!("{base}_b")],
        "{point}: exactly the two users"
    );
    assert_eq!(
        s3.slots[0].fingerprint,
        fingerprint_of(&client, &ns, &p3).await,
        "{point}: status is truthful"
    );
    assert!(s3.in_flight.is_none(), "{point}");
    assert_not_in_general_log(db, &[p1.clone(), p2.clone(), p3.clone()]);
    assert_no_leak(&client, &ns, name, &op.logs(), &[p1, p2, p3]).await;
}

macro_rules! crash_tests {
    ($($test:ident => $point:literal),* $(,)?) => {
        $(#[tokio::test]
        async fn $test() {
            crash_at($point).await;
        })*
    };
}

crash_tests! {
    killed_after_intent => "after_intent",
    killed_after_revoking_the_old_user => "after_revoke_old",
    killed_after_setting_the_password_before_the_escrow => "before_vault",
    killed_after_the_escrow => "after_vault",
    killed_after_the_test => "after_test",
    killed_after_the_secret_write => "after_secret",
    killed_after_the_flip => "after_flip",
}

/// PROCESSLIST compares `USER` case-insensitively: the usage check and the revoke of
/// `case_a` must not count, nor KILL, the sessions of the different account `CASE_A`
/// (a human's, or another tenant's).
#[tokio::test]
async fn usage_and_revoke_leave_an_account_that_differs_only_in_case_alone() {
    let db = mariadb();
    db.root_sql(
        "CREATE DATABASE IF NOT EXISTS case_db;
         CREATE USER case_a@'%' IDENTIFIED BY 'own-password-1';
         CREATE USER CASE_A@'%' IDENTIFIED BY 'human-password-1';
         GRANT SELECT ON case_db.* TO case_a@'%';
         GRANT SELECT ON case_db.* TO CASE_A@'%';",
    );
    let http = rotor::providers::HttpClient::new(rotor::providers::HttpSettings {
        allow_private_endpoints: true,
        max_retries: 0,
        ..Default::default()
    });
    let mut secrets = rotor::providers::Secrets::default();
    secrets.0.insert(
        ("admin".into(), "password".into()),
        db.admin_password.clone().into(),
    );
    let spec: rotor::api::ProviderSpec = serde_json::from_value(serde_json::json!({"mysql": {
        "host": "127.0.0.1", "port": db.port, "database": "case_db", "sslMode": "disable",
        "adminUsername": "rotor_admin", "credentialsRef": {"name": "admin", "key": "password"},
        "username": "case",
    }}))
    .unwrap();
    let ctx = rotor::providers::BuildContext {
        secrets: &secrets,
        http: &http,
        uid: "uid",
    };
    let provider = rotor::providers::build(&spec, &ctx).unwrap();
    let mut human = db.session("CASE_A", "human-password-1", "case_db").await;
    assert_eq!(
        provider.in_use("case_a", chrono::Utc::now()).await.unwrap(),
        rotor::rotation::Usage::Unused,
        "CASE_A's session counted as case_a's"
    );
    assert_eq!(
        provider.revoke("case_a").await.unwrap(),
        rotor::rotation::Revocation::Revoked
    );
    human
        .query_drop("SELECT 1")
        .await
        .expect("the revoke of case_a killed CASE_A's session");
    assert!(!db.can_login("case_a", "own-password-1", "case_db").await);
    assert!(db.can_login("CASE_A", "human-password-1", "case_db").await);
}
