//! PostgreSQL as an attacker or a broken network would present it: a server (or a man
//! in the middle) that asks for the admin password in the clear, certificates from the
//! wrong CA or for another name, a server that accepts and never answers, and refused
//! passwords told apart from every other failure. All against a real PostgreSQL with
//! TLS on (tests/support/postgres.rs) and the operator against a real API server.

mod support;

use support::postgres::{Postgres, postgres};
use support::scenario::*;
use support::*;

/// A SecretRotation `name` with its admin Secret (and CA Secret when `ca` is set).
#[allow(clippy::too_many_arguments)]
fn manifest(
    name: &str,
    host: &str,
    port: u16,
    database: &str,
    ssl_mode: &str,
    admin: (&str, &str),
    username: &str,
    ca: Option<&str>,
) -> String {
    let mut postgres = serde_json::json!({
        "host": host,
        "port": port,
        "database": database,
        "sslMode": ssl_mode,
        "adminUsername": admin.0,
        "credentialsRef": {"name": format!("{name}-admin"), "key": "password"},
        "username": username,
    });
    let mut docs = vec![serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{name}-admin"), "annotations": {"rotor.dev/allow-read": name}},
        "stringData": {"password": admin.1},
    })];
    if let Some(pem) = ca {
        postgres["caRef"] = serde_json::json!({"name": format!("{name}-ca"), "key": "ca.crt"});
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
            "provider": {"postgres": postgres},
            "schedule": {"rotationInterval": "7d"},
            "secretsMapping": {"username": "DB_USER", "password": "DB_PASSWORD", "uri": "DATABASE_URL"},
            "target": {"name": name},
        },
    }));
    docs.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Lines of the server log that say `user` logged in (authentication completed).
fn logins_of(pg: &Postgres, user: &str) -> usize {
    let needle = format!("connection authorized: user={user} ");
    pg.log().lines().filter(|l| l.contains(&needle)).count()
}

#[tokio::test]
async fn require_logs_in_with_scram_bound_to_the_certificate_it_did_not_check() {
    let pg = postgres();
    pg.admin_sql("CREATE DATABASE req_db").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-require").await;
    let op = Operator::start_with(&ns, FAST);
    let yaml = manifest(
        "req",
        "127.0.0.1",
        pg.port,
        "req_db",
        "require",
        ("postgres", &pg.admin_password),
        "req",
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "req", 1).await;
    let user = value(&client, &ns, "req", "DB_USER").await.unwrap();
    let password = value(&client, &ns, "req", "DB_PASSWORD").await.unwrap();
    assert_eq!(user, "req_a");
    assert!(
        pg.can_login(&user, &password, "req_db").await,
        "the rotated password logs in"
    );
    let uri = value(&client, &ns, "req", "DATABASE_URL").await.unwrap();
    assert!(uri.ends_with("?sslmode=require"), "{uri}");
    // rotor's own sessions (the admin's and the connection test's) were encrypted.
    let log = pg.log();
    for who in ["postgres", "req_a"] {
        let line = format!(
            "connection authorized: user={who} database=req_db application_name=rotor SSL enabled"
        );
        assert!(
            log.contains(&line),
            "no TLS login of {who} in the server log:\n{log}"
        );
    }
    assert_no_leak(
        &client,
        &ns,
        "req",
        &op.logs(),
        &[password, pg.admin_password.clone()],
    )
    .await;
}

#[tokio::test]
async fn a_server_asking_for_the_password_in_the_clear_under_require_gets_nothing() {
    let pg = postgres();
    // The server asks this role for its password in the clear (pg_hba `password`), as a
    // man in the middle with its own certificate would: `require` checks no certificate.
    let admin_password = format!("cleartext-admin-{}", free_port());
    pg.admin_sql(&format!(
        "CREATE ROLE cleartext_admin WITH LOGIN CREATEROLE PASSWORD '{admin_password}'"
    ))
    .await;
    pg.admin_sql("CREATE DATABASE mitm_db").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-cleartext").await;
    let op = Operator::start_with(&ns, FAST);
    let yaml = manifest(
        "mitm",
        "127.0.0.1",
        pg.port,
        "mitm_db",
        "require",
        ("cleartext_admin", &admin_password),
        "mitm",
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    let status = failed(&client, &ns, "mitm").await;
    let message = &status.last_rotation_message;
    assert!(
        message.contains("did not offer SCRAM-SHA-256-PLUS (channel binding)")
            && message.contains("did not send the password of \"cleartext_admin\""),
        "{message}"
    );
    assert_eq!(status.rotation_count, 0);
    // The server never got the password: no login of the role, and no wrong password.
    assert_eq!(logins_of(pg, "cleartext_admin"), 0, "{}", pg.log());
    assert!(
        !pg.log()
            .contains("password authentication failed for user \"cleartext_admin\""),
        "{}",
        pg.log()
    );
    assert!(
        !pg.can_login("mitm_a", "x-never-issued-x", "mitm_db").await,
        "no user was touched"
    );

    // The check above can see a sent password: a client that does send it in the
    // clear over TLS (as rotor did before) logs in, and the log shows it.
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            pg.ca_pem.as_bytes(),
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (session, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user("cleartext_admin")
        .password(&admin_password)
        .dbname("mitm_db")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .expect("the cleartext login works for a client that sends the password");
    tokio::spawn(connection);
    session.simple_query("SELECT 1").await.unwrap();
    drop(session);
    assert_eq!(logins_of(pg, "cleartext_admin"), 1, "{}", pg.log());
    assert_no_leak(&client, &ns, "mitm", &op.logs(), &[admin_password]).await;
}

#[tokio::test]
async fn verify_full_trusts_the_ca_in_ca_ref_for_the_name_in_the_certificate_only() {
    let pg = postgres();
    pg.admin_sql("CREATE DATABASE vf_db").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-verify").await;
    let op = Operator::start_with(&ns, FAST);
    let admin = ("postgres", pg.admin_password.as_str());
    let good = manifest(
        "vf-good",
        "127.0.0.1",
        pg.port,
        "vf_db",
        "verify-full",
        admin,
        "vf",
        Some(&pg.ca_pem),
    );
    // Another CA: the certificate does not chain to it.
    let wrong_ca = manifest(
        "vf-wrong-ca",
        "127.0.0.1",
        pg.port,
        "vf_db",
        "verify-full",
        admin,
        "vfw",
        Some(&pg.other_ca_pem),
    );
    // The right CA, but the certificate is for 127.0.0.1, not for `localhost`.
    let wrong_name = manifest(
        "vf-wrong-name",
        "localhost",
        pg.port,
        "vf_db",
        "verify-full",
        admin,
        "vfn",
        Some(&pg.ca_pem),
    );
    for yaml in [&good, &wrong_ca, &wrong_name] {
        apply_yaml(&client, &ns, yaml).await.unwrap();
    }
    rotated(&client, &ns, "vf-good", 1).await;
    let password = value(&client, &ns, "vf-good", "DB_PASSWORD").await.unwrap();
    assert!(pg.can_login("vf_a", &password, "vf_db").await);
    let uri = value(&client, &ns, "vf-good", "DATABASE_URL")
        .await
        .unwrap();
    assert!(uri.ends_with("?sslmode=verify-full"), "{uri}");

    for (name, why) in [
        ("vf-wrong-ca", "UnknownIssuer"),
        ("vf-wrong-name", "NotValidForName"),
    ] {
        let status = failed(&client, &ns, name).await;
        let message = &status.last_rotation_message;
        assert!(
            message.contains("the server's certificate is not trusted")
                && message.contains(why)
                && message.contains("caRef must hold the CA that signed it"),
            "{name}: {message}"
        );
        assert_eq!(status.rotation_count, 0, "{name}");
    }
    // Neither failed resource got as far as creating its users.
    assert!(!pg.can_login("vfw_a", "x-never-issued-x", "vf_db").await);
    assert!(!pg.can_login("vfn_a", "x-never-issued-x", "vf_db").await);
    assert_no_leak(
        &client,
        &ns,
        "vf-good",
        &op.logs(),
        &[password, pg.admin_password.clone()],
    )
    .await;
}

#[tokio::test]
async fn a_refused_password_is_told_apart_from_any_other_failure() {
    let pg = postgres();
    pg.admin_sql("CREATE DATABASE refused_db").await;
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-refused").await;
    let op = Operator::start_with(&ns, FAST);
    let wrong = format!("not-the-admin-password-{}", free_port());
    let bad_password = manifest(
        "bad-password",
        "127.0.0.1",
        pg.port,
        "refused_db",
        "require",
        ("postgres", &wrong),
        "bp",
        None,
    );
    // The right password, a database that does not exist (SQLSTATE 3D000).
    let no_database = manifest(
        "no-database",
        "127.0.0.1",
        pg.port,
        "no_such_db",
        "require",
        ("postgres", &pg.admin_password),
        "nd",
        None,
    );
    for yaml in [&bad_password, &no_database] {
        apply_yaml(&client, &ns, yaml).await.unwrap();
    }
    let refused = failed(&client, &ns, "bad-password").await;
    assert!(
        refused
            .last_rotation_message
            .contains("PostgreSQL refused the password of \"postgres\""),
        "{}",
        refused.last_rotation_message
    );
    let missing = failed(&client, &ns, "no-database").await;
    let message = &missing.last_rotation_message;
    assert!(
        message.contains("3D000") && !message.contains("refused the password"),
        "{message}"
    );
    assert_no_leak(
        &client,
        &ns,
        "bad-password",
        &op.logs(),
        &[wrong, pg.admin_password.clone()],
    )
    .await;
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_does_not_hold_a_worker() {
    // Accepts connections and keeps them open without a byte: TLS never starts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..64 {
            match listener.accept().await {
                Ok((socket, _)) => held.push(socket),
                Err(_) => break,
            }
        }
        held
    });
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-silent").await;
    let flags = [FAST, &["--http-timeout", "2s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let admin_password = format!("silent-admin-{}", free_port());
    let yaml = manifest(
        "silent",
        "127.0.0.1",
        port,
        "app",
        "require",
        ("postgres", &admin_password),
        "silent",
        None,
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    let status = failed(&client, &ns, "silent").await;
    assert!(
        status.last_rotation_message.contains(&format!(
            "PostgreSQL at 127.0.0.1:{port} did not finish setting the password within 2s"
        )),
        "{}",
        status.last_rotation_message
    );
    silent.abort();
    assert_no_leak(&client, &ns, "silent", &op.logs(), &[admin_password]).await;
}

/// README: `usernames` names the two users (slot 0, slot 1) instead of `<username>_a/_b`;
/// one that does not exist is created with LOGIN, one that exists is taken over.
#[tokio::test]
async fn usernames_name_both_users_and_a_missing_one_is_created() {
    let pg = postgres();
    pg.admin_sql("CREATE DATABASE named_db").await;
    pg.admin_sql("CREATE ROLE orders_next WITH LOGIN PASSWORD 'set-by-a-human-42'")
        .await;
    assert_eq!(
        pg.existing_roles(&["orders_live", "orders_next"]).await,
        vec!["orders_next".to_string()]
    );
    let client = control_plane().client().await;
    let ns = namespace(&client, "pg-usernames").await;
    let op = Operator::start_with(&ns, FAST);
    let yaml = manifest(
        "named",
        "127.0.0.1",
        pg.port,
        "named_db",
        "require",
        ("postgres", &pg.admin_password),
        "unused",
        None,
    )
    .replace(
        r#""username":"unused""#,
        r#""usernames":["orders_live","orders_next"]"#,
    );
    assert!(yaml.contains("usernames"), "{yaml}");
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "named", 1).await;
    let u1 = value(&client, &ns, "named", "DB_USER").await.unwrap();
    let p1 = value(&client, &ns, "named", "DB_PASSWORD").await.unwrap();
    assert_eq!(u1, "orders_live", "slot 0 is the first name");
    assert!(pg.can_login(&u1, &p1, "named_db").await);
    assert_eq!(
        pg.existing_roles(&["orders_live", "orders_next", "unused_a", "unused_b"])
            .await,
        vec!["orders_live".to_string(), "orders_next".to_string()],
        "the missing user was created, no <username>_a/_b"
    );

    rotate(&client, &ns, "named", "second", 2).await;
    let u2 = value(&client, &ns, "named", "DB_USER").await.unwrap();
    let p2 = value(&client, &ns, "named", "DB_PASSWORD").await.unwrap();
    assert_eq!(u2, "orders_next", "slot 1 is the second name");
    assert!(pg.can_login(&u2, &p2, "named_db").await);
    assert!(
        !pg.can_login("orders_next", "set-by-a-human-42", "named_db")
            .await,
        "the existing user's old password no longer works"
    );
    assert!(
        pg.can_login(&u1, &p1, "named_db").await,
        "the previous user still logs in"
    );
    assert_no_leak(
        &client,
        &ns,
        "named",
        &op.logs(),
        &[p1, p2, pg.admin_password.clone()],
    )
    .await;
}

/// The provider rotor builds for a PostgreSQL spec (users `<username>_a/_b`, admin
/// `admin`), as the operator builds it: through `rotor::providers::build`.
fn pg_provider(
    pg: &Postgres,
    database: &str,
    admin: (&str, &str),
    username: &str,
) -> Box<dyn rotor::rotation::Provider> {
    let spec: rotor::api::ProviderSpec = serde_json::from_value(serde_json::json!({"postgres": {
        "host": "127.0.0.1",
        "port": pg.port,
        "database": database,
        "sslMode": "require",
        "adminUsername": admin.0,
        "credentialsRef": {"name": "admin", "key": "password"},
        "username": username,
    }}))
    .unwrap();
    let http = rotor::providers::HttpClient::new(rotor::providers::HttpSettings {
        allow_private_endpoints: true,
        ..rotor::providers::HttpSettings::default()
    });
    let mut secrets = rotor::providers::Secrets::default();
    secrets.0.insert(
        ("admin".into(), "password".into()),
        secrecy::SecretString::from(admin.1.to_string()),
    );
    rotor::providers::build(
        &spec,
        &rotor::providers::BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        },
    )
    .unwrap()
}

/// Asks `provider` whether `user` is in use, within 20 s.
async fn usage_of(provider: &dyn rotor::rotation::Provider, user: &str) -> rotor::rotation::Usage {
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        provider.in_use(user, chrono::Utc::now()),
    )
    .await
    .expect("in_use answers within 20 s")
    .unwrap_or_else(|e| panic!("in_use({user:?}): {e}"))
}

/// `in_use` is the number of sessions the slot user has open (a count, nothing about
/// them): rotor waits on a user somebody still works as, and not on one nobody does.
#[tokio::test]
async fn in_use_counts_the_sessions_of_the_slot_user() {
    use rotor::rotation::{IssueRequest, NoStash, Usage};
    use secrecy::ExposeSecret;
    let pg = postgres();
    pg.admin_sql("CREATE DATABASE usage_db").await;
    let provider = pg_provider(pg, "usage_db", ("postgres", &pg.admin_password), "usage");
    let credential = provider
        .issue(&IssueRequest {
            name: "rotor-uid-1",
            slot: 0,
            stash: &NoStash,
        })
        .await
        .unwrap();
    assert_eq!(credential.id, "usage_a");
    let password = credential.outputs["password"].expose_secret().to_string();
    assert_eq!(
        usage_of(&*provider, "usage_a").await,
        Usage::Unused,
        "nobody logged in as it"
    );

    let first = pg.session("usage_a", &password, "usage_db").await;
    first.simple_query("SELECT 1").await.unwrap();
    assert_eq!(
        usage_of(&*provider, "usage_a").await,
        Usage::InUse {
            count: Some(1),
            last_used: None
        }
    );
    let second = pg.session("usage_a", &password, "postgres").await;
    second.simple_query("SELECT 1").await.unwrap();
    assert_eq!(
        usage_of(&*provider, "usage_a").await,
        Usage::InUse {
            count: Some(2),
            last_used: None
        },
        "every database counts"
    );
    assert_eq!(
        usage_of(&*provider, "usage_b").await,
        Usage::Unused,
        "the other slot's user (not even created) has none"
    );

    // The admin's own session does not count: with the slot user as admin, its one
    // connection is the one asking.
    drop(second);
    let as_itself = pg_provider(pg, "usage_db", ("usage_a", &password), "usage");
    assert_eq!(
        usage_of(&*as_itself, "usage_a").await.to_string(),
        "in use (1 session)",
        "the admin's own session is not counted"
    );

    // Closed sessions end asynchronously on the server: wait for it, bounded.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let usage = usage_of(&*provider, "usage_a").await;
        if usage == Usage::Unused {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {usage} 20 s after its sessions closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        usage_of(&*as_itself, "usage_a").await,
        Usage::Unused,
        "only the asking session is left, and it does not count"
    );
}
