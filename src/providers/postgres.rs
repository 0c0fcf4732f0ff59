//! `provider.postgres`: a PostgreSQL login rotated across two users.
//!
//! Slot 0 and slot 1 are two users (`<username>_a` / `<username>_b`, or two named
//! users) that share a role (with `memberOf`, also their role at login, so what either
//! creates belongs to it). A rotation sets the inactive user's password; the active
//! user keeps working until the rotation after. The password is sent as a SCRAM-SHA-256
//! verifier computed here, so the plaintext never reaches the server or its logs.
//! Revoking clears the user's password and ends its sessions.
//!
//! TLS: `require` encrypts without checking the certificate, so anyone on the path can
//! answer in the server's place and ask for the password in the clear. Under `require`
//! rotor therefore authenticates only with SCRAM-SHA-256-PLUS (channel binding to the
//! certificate the connection actually saw): a man in the middle with its own
//! certificate cannot complete it, and cleartext, MD5, "trust" or SCRAM without
//! binding are refused before any password is sent. `verify-full` checks the chain
//! (caRef, or the Mozilla roots) and the host name, and then accepts any method.
//! Each session (connect, queries) is bounded by the HTTP timeout, so a server that
//! accepts the connection and then stalls cannot hold a worker.

use super::{BuildContext, endpoint, random_alphanumeric};
use crate::api::{self, PostgresSpec};
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation, Usage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::ChannelBinding;

const PASSWORD_LENGTH: usize = 32;

pub struct PostgresProvider {
    host: String,
    port: u16,
    database: String,
    ssl_mode: SslMode,
    admin_user: String,
    admin_password: SecretString,
    users: [String; 2],
    member_of: Option<String>,
    guard: endpoint::Guard,
    /// The most one session (connect plus its queries) may take.
    session_timeout: Duration,
}

#[derive(Clone)]
enum SslMode {
    Disable,
    Require,
    VerifyFull(Arc<rustls::ClientConfig>),
}

impl SslMode {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull(_) => "verify-full",
        }
    }
}

fn check_identifier(name: &str, field: &str) -> Result<(), ProviderError> {
    if name.is_empty() || name.len() > 63 {
        return Err(ProviderError::InvalidConfig(format!(
            "postgres.{field} {name:?} must be 1 to 63 bytes"
        )));
    }
    Ok(())
}

impl PostgresProvider {
    pub fn new(spec: &PostgresSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let users = super::two_users("postgres", &spec.username, &spec.usernames)?;
        for u in &users {
            check_identifier(u, "username")?;
        }
        check_identifier(&spec.admin_username, "adminUsername")?;
        if let Some(role) = &spec.member_of {
            check_identifier(role, "memberOf")?;
        }
        let ssl_mode = match spec.ssl_mode {
            api::SslMode::Disable => SslMode::Disable,
            api::SslMode::Require => SslMode::Require,
            api::SslMode::VerifyFull => SslMode::VerifyFull(Arc::new(verifying_config(spec, ctx)?)),
        };
        Ok(Self {
            host: spec.host.clone(),
            port: spec.port,
            database: spec.database.clone(),
            ssl_mode,
            admin_user: spec.admin_username.clone(),
            admin_password: ctx.secrets.get(&spec.credentials_ref)?.clone(),
            users,
            member_of: spec.member_of.clone(),
            guard: endpoint::Guard {
                allow_private: ctx.http.settings.allow_private_endpoints,
                allowed: ctx.http.settings.allow_private_cidrs.clone(),
            },
            session_timeout: ctx.http.settings.timeout,
        })
    }

    async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, ProviderError> {
        let addrs = endpoint::resolve_guarded(&self.host, self.port, &self.guard).await?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .hostaddr(addrs[0].ip())
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(&self.database)
            .application_name("rotor")
            .connect_timeout(Duration::from_secs(10));
        let unavailable = |e: tokio_postgres::Error| self.classify(e, user);
        // The connection task ends with the client; the bound is for a server that
        // stops reading while rotor says goodbye.
        let linger = self.session_timeout.saturating_mul(2);
        let client = match &self.ssl_mode {
            SslMode::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(unavailable)?;
                tokio::spawn(tokio::time::timeout(linger, conn));
                client
            }
            SslMode::Require | SslMode::VerifyFull(_) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = match &self.ssl_mode {
                    SslMode::VerifyFull(c) => {
                        config.channel_binding(ChannelBinding::Prefer);
                        (**c).clone()
                    }
                    _ => {
                        // The certificate is not checked: only SCRAM bound to it keeps
                        // the password from whoever presented it.
                        config.channel_binding(ChannelBinding::Require);
                        unverified_config()
                    }
                };
                let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, conn) = config.connect(connector).await.map_err(unavailable)?;
                tokio::spawn(tokio::time::timeout(linger, conn));
                client
            }
        };
        Ok(client)
    }

    /// Runs one session's work within the session timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let at = format!("PostgreSQL at {}:{}", self.host, self.port);
        super::session(&at, what, self.session_timeout, work).await
    }

    /// Turns a connection error into a message that says what failed and what to do,
    /// never with a password.
    fn classify(&self, e: tokio_postgres::Error, user: &str) -> ProviderError {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD {
                return ProviderError::Unauthorized {
                    status: 401,
                    message: format!("PostgreSQL refused the password of {user:?}"),
                };
            }
            return ProviderError::Rejected {
                status: 400,
                message: format!("PostgreSQL ({}): {}", db.code().code(), db.message()),
            };
        }
        let at = format!("{}:{}", self.host, self.port);
        if let Some(cert) = certificate_error(&e) {
            return ProviderError::Unavailable(format!(
                "PostgreSQL at {at}: the server's certificate is not trusted ({cert}); \
                 with sslMode verify-full, caRef must hold the CA that signed it (unset: the \
                 Mozilla roots) and the certificate must name host {:?}",
                self.host
            ));
        }
        let text = super::with_causes(&e);
        if matches!(self.ssl_mode, SslMode::Require)
            && (text.contains("channel binding") || text.contains("unsupported SASL mechanism"))
        {
            return ProviderError::Rejected {
                status: 400,
                message: format!(
                    "PostgreSQL at {at} did not offer SCRAM-SHA-256-PLUS (channel binding), so \
                     rotor did not send the password of {user:?}: under sslMode require the \
                     server's certificate is not checked, and a cleartext, MD5 or unbound \
                     login would give the password to whoever answered. Use scram-sha-256 \
                     in pg_hba.conf with TLS (PostgreSQL 11 or later, a certificate signed \
                     with RSA or ECDSA), or set sslMode verify-full"
                ),
            };
        }
        ProviderError::Unavailable(format!("PostgreSQL at {at}: {text}"))
    }

    async fn admin(&self) -> Result<tokio_postgres::Client, ProviderError> {
        self.connect(&self.admin_user, self.admin_password.expose_secret())
            .await
    }

    /// Makes `role` the user's role at login (`ALTER ROLE … SET role`), so what the user
    /// creates belongs to the shared role and stays usable by the other user after the
    /// next rotation. Only for a member of the role: a login whose default role it may
    /// not take would fail. Run at every issue, so users created before this existed
    /// get it too; a user that is not a member is left as its owner made it.
    async fn default_to_shared_role(
        &self,
        admin: &tokio_postgres::Client,
        user: &str,
        role: &str,
    ) -> Result<(), ProviderError> {
        let member = admin
            .query_one(
                "SELECT pg_catalog.pg_has_role($1::text::name, $2::text::name, 'MEMBER')",
                &[&user, &role],
            )
            .await
            .map_err(|e| sql_error(e, "checking membership of the shared role"))?;
        if !member.get::<_, bool>(0) {
            tracing::warn!(
                user,
                role,
                "the user is not a member of memberOf: its default role is left unset, and \
                 what it creates stays its own"
            );
            return Ok(());
        }
        // SUPERUSER, BYPASSRLS, CREATEROLE and CREATEDB are not inherited through
        // membership: a member has them only after SET ROLE. As the login's default
        // role they would apply to every session of the app (row-level security
        // silently off, a superuser app). Nor a predefined pg_* role.
        let privileged = admin
            .query_opt(
                "SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb \
                 OR starts_with(rolname, 'pg_') FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(|e| sql_error(e, "reading the shared role's attributes"))?
            .is_none_or(|r| r.get::<_, bool>(0));
        if privileged {
            tracing::warn!(
                user,
                role,
                "memberOf has SUPERUSER, BYPASSRLS, CREATEROLE or CREATEDB (or is a pg_ role): \
                 it is not made the user's role at login, which would give every session \
                 of the app those powers; what the user creates stays its own"
            );
            return Ok(());
        }
        let sql = format!(
            "ALTER ROLE {} SET role = {}",
            escape_identifier(user),
            escape_literal(role)
        );
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| sql_error(e, "setting the user's default role"))
    }

    fn uri(&self, user: &str, password: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "postgresql://{}:{}@{}:{}/{}?sslmode={}",
            enc(user),
            enc(password),
            self.host,
            self.port,
            enc(&self.database),
            self.ssl_mode.as_str()
        )
    }
}

/// The certificate problem behind a failed TLS handshake, if that is what failed.
fn certificate_error(e: &tokio_postgres::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    // A bounded walk: error chains are short, but they come from a library.
    for _ in 0..8 {
        let err = source?;
        if let Some(rustls::Error::InvalidCertificate(c)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{c:?}"));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(rustls::Error::InvalidCertificate(c)) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(format!("{c:?}"));
        }
        source = err.source();
    }
    None
}

fn sql_error(e: tokio_postgres::Error, what: &str) -> ProviderError {
    match e.as_db_error() {
        Some(db) => ProviderError::Rejected {
            status: 400,
            message: format!("{what}: {} ({})", db.message(), db.code().code()),
        },
        None => ProviderError::Unavailable(format!("{what}: {e}")),
    }
}

fn verifying_config(
    spec: &PostgresSpec,
    ctx: &BuildContext<'_>,
) -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    match &spec.ca_ref {
        Some(r) => {
            let pem = ctx.secrets.get(r)?.expose_secret().to_string();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    ProviderError::InvalidConfig(format!("postgres.caRef: not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ProviderError::InvalidConfig(format!("postgres.caRef: bad certificate: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// sslmode=require: encrypted, the certificate not checked (libpq's meaning).
pub(super) fn unverified_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &["username", "password", "uri"]
    }

    fn secret_output(&self) -> &'static str {
        "password"
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let user = &self.users[usize::from(request.slot.min(1))];
        let password = random_alphanumeric(PASSWORD_LENGTH);
        let credential = super::stashed_login(
            request,
            user,
            &password,
            self.uri(user, password.expose_secret()),
            vec![],
        )
        .await?;
        self.bounded("setting the password", async {
            let verifier =
                postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
            let admin = self.admin().await?;
            let exists = admin
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[user],
                )
                .await
                .map_err(|e| sql_error(e, "looking up the user"))?
                .is_some();
            let ident = escape_identifier(user);
            if exists {
                let sql = format!(
                    "ALTER ROLE {ident} WITH LOGIN PASSWORD {}",
                    escape_literal(&verifier)
                );
                admin
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| sql_error(e, "setting the password"))?;
            } else {
                let sql = format!(
                    "CREATE ROLE {ident} WITH LOGIN PASSWORD {}",
                    escape_literal(&verifier)
                );
                admin
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| sql_error(e, "creating the user"))?;
                if let Some(role) = &self.member_of {
                    let grant = format!("GRANT {} TO {ident}", escape_identifier(role));
                    admin
                        .batch_execute(&grant)
                        .await
                        .map_err(|e| sql_error(e, "granting the shared role"))?;
                }
            }
            if let Some(role) = &self.member_of {
                self.default_to_shared_role(&admin, user, role).await?;
            }
            Ok(())
        })
        .await?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let password = credential
            .outputs
            .get("password")
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        self.bounded("the connection test", async {
            let client = self
                .connect(&credential.id, password)
                .await
                .map_err(|e| ProviderError::TestFailed(e.to_string()))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| ProviderError::TestFailed(format!("SELECT 1: {e}")))?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            ProviderError::TestFailed(m) => ProviderError::TestFailed(m),
            other => ProviderError::TestFailed(other.to_string()),
        })
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        self.bounded("revoking the user", async {
            let admin = self.admin().await?;
            let exists = admin
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[&id],
                )
                .await
                .map_err(|e| sql_error(e, "looking up the user"))?
                .is_some();
            if !exists {
                return Ok(Revocation::AlreadyGone);
            }
            let sql = format!("ALTER ROLE {} WITH PASSWORD NULL", escape_identifier(id));
            admin
                .batch_execute(&sql)
                .await
                .map_err(|e| sql_error(e, "clearing the password"))?;
            admin
                .execute("SELECT pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = $1", &[&id])
                .await
                .map_err(|e| sql_error(e, "ending the user's sessions"))?;
            Ok(Revocation::Revoked)
        })
        .await
    }

    /// Sessions of the user in `pg_stat_activity` (the admin's own excluded): a count,
    /// never who or what they run.
    async fn in_use(&self, id: &str, _since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        self.bounded("counting the user's sessions", async {
            let admin = self.admin().await?;
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                    &[&id],
                )
                .await
                .map_err(|e| sql_error(e, "counting the user's sessions"))?;
            let n: i64 = row.get(0);
            Ok(match u64::try_from(n).unwrap_or(0) {
                0 => Usage::Unused,
                count => Usage::InUse {
                    count: Some(count),
                    last_used: None,
                },
            })
        })
        .await
    }

    async fn list_own(&self, _prefix: &str) -> Result<Vec<String>, ProviderError> {
        self.bounded("listing the users", async {
            let admin = self.admin().await?;
            let names: Vec<&str> = self.users.iter().map(String::as_str).collect();
            // Whether a role has a password only pg_authid says, which a CREATEROLE admin
            // cannot read (pg_roles shows every password as ********): every existing user
            // of the two is listed, and the sweep revokes one in no slot once per rotation.
            let rows = admin
                .query(
                    "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
                    &[&names],
                )
                .await
                .map_err(|e| sql_error(e, "listing the users"))?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
        .await
    }
}
