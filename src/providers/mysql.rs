//! `provider.mysql`: a MySQL 8 or MariaDB 10.11+ login rotated across two users.
//!
//! Slot 0 and slot 1 are two accounts (`'<username>_a'@'<userHost>'` /
//! `'<username>_b'@'<userHost>'`, or two named users). A rotation sets the inactive
//! account's password (creating the account when missing) and unlocks it; the active one
//! keeps working until the rotation after. The dialect comes from `SELECT VERSION()`:
//! on MariaDB the password is sent as its mysql_native_password hash
//! (`IDENTIFIED BY PASSWORD '*…'`), so the plaintext never reaches the server or its
//! logs; MySQL 8 gets `IDENTIFIED BY '<password>'` (it rewrites the statement in its
//! general and slow logs and binary log). Revoking locks the account, sets a random
//! password nobody keeps and kills the account's connections.
//!
//! TLS: MySQL has no channel binding. Under `require` the certificate is not checked, so
//! whoever answers in the server's place can relay the admin's native-password scramble
//! to the real server, or ask caching_sha2_password for the full password: the default
//! is `verify-full`. The driver never answers mysql_clear_password or the dialog plugin
//! with a password, and refuses the pre-4.1 password scheme.
//! Each session (connect, queries) is bounded by the HTTP timeout.

use super::{BuildContext, endpoint, random_alphanumeric};
use crate::api::{self, MysqlSpec};
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation, Usage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The outputs of every credential, in the order `outputs()` reports them.
pub const OUTPUTS: &[&str] = &["username", "password", "uri", "host", "port", "database"];

/// Letters and digits only: safe in a URI, in a SQL literal and in a shell.
const PASSWORD_LENGTH: usize = 32;
/// User and role names: MySQL's limit (MariaDB allows 80; 32 works on both).
const MAX_NAME_CHARS: usize = 32;
/// The most connections of one user a revoke kills (and so reads).
const MAX_KILLS: usize = 1000;
/// The most SHOW GRANTS lines copied.
const MAX_GRANTS: usize = 500;
/// The largest packet rotor accepts from the server.
const MAX_PACKET: usize = 1 << 20;

// Server error codes.
const ER_ACCESS_DENIED: u16 = 1045;
const ER_NONEXISTING_GRANT: u16 = 1141;
const ER_NO_SUCH_THREAD: u16 = 1094;
const ER_ACCOUNT_HAS_BEEN_LOCKED: u16 = 3118;
const ER_ACCOUNT_LOCKED_MARIADB: u16 = 4151;

pub struct MysqlProvider {
    host: String,
    port: u16,
    database: String,
    ssl_mode: api::SslMode,
    ca_pem: Option<Vec<u8>>,
    admin_user: String,
    admin_password: SecretString,
    users: [String; 2],
    user_host: String,
    member_of: Option<String>,
    copy_grants: bool,
    guard: endpoint::Guard,
    /// The most one session (connect plus its queries) may take.
    session_timeout: Duration,
}

/// Which SQL the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    MariaDb,
    Mysql,
}

impl Dialect {
    fn of_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Self::MariaDb
        } else {
            Self::Mysql
        }
    }
}

/// `name` as a backtick-quoted identifier (backticks doubled). Backticks mean the same
/// under every sql_mode (ANSI_QUOTES and NO_BACKSLASH_ESCAPES included).
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A single-quoted literal of a value rotor made (letters, digits, `*`): refused
/// otherwise, so no escaping rule of any sql_mode matters.
fn literal(value: &str) -> Result<String, ProviderError> {
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'*')
    {
        Ok(format!("'{value}'"))
    } else {
        Err(ProviderError::InvalidConfig(
            "mysql: a password rotor made is not alphanumeric".into(),
        ))
    }
}

/// The mysql_native_password hash MariaDB stores: `*` and the upper-case hex of
/// SHA1(SHA1(password)).
fn native_password_hash(password: &str) -> String {
    use sha1::{Digest, Sha1};
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    format!("*{}", hex::encode_upper(stage2))
}

fn check_name(name: &str, field: &str, max: usize) -> Result<(), ProviderError> {
    let chars = name.chars().count();
    if chars == 0 || chars > max {
        return Err(ProviderError::InvalidConfig(format!(
            "mysql.{field} {name:?} must be 1 to {max} characters"
        )));
    }
    if name.contains('\0') {
        return Err(ProviderError::InvalidConfig(format!(
            "mysql.{field} must not contain NUL"
        )));
    }
    Ok(())
}

/// The server error behind `e`, if the server answered with one.
fn server_error(e: &mysql_async::Error) -> Option<&mysql_async::ServerError> {
    match e {
        mysql_async::Error::Server(s) => Some(s),
        _ => None,
    }
}

fn sql_error(e: mysql_async::Error, what: &str) -> ProviderError {
    match server_error(&e) {
        Some(s) => ProviderError::Rejected {
            status: 400,
            message: format!("{what}: {} (MySQL error {})", s.message, s.code),
        },
        None => ProviderError::Unavailable(format!("{what}: {}", super::with_causes(&e))),
    }
}

/// One row's column `i` as `T`, or an error naming `what` (never a panic on what the
/// server sent).
fn column<T: mysql_async::prelude::FromValue>(
    row: &mysql_async::Row,
    i: usize,
    what: &str,
) -> Result<T, ProviderError> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        _ => Err(ProviderError::BadResponse(format!(
            "{what}: the server sent a value rotor cannot read"
        ))),
    }
}

impl MysqlProvider {
    pub fn new(spec: &MysqlSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let users = super::two_users("mysql", &spec.username, &spec.usernames)?;
        for u in &users {
            check_name(u, "username", MAX_NAME_CHARS)?;
        }
        check_name(&spec.admin_username, "adminUsername", 80)?;
        check_name(&spec.user_host, "userHost", 255)?;
        check_name(&spec.database, "database", 64)?;
        if let Some(role) = &spec.member_of {
            check_name(role, "memberOf", MAX_NAME_CHARS)?;
        }
        if users.contains(&spec.admin_username) {
            return Err(ProviderError::InvalidConfig(
                "mysql: the admin user cannot be one of the two rotated users".into(),
            ));
        }
        let ca_pem = match (&spec.ssl_mode, &spec.ca_ref) {
            (api::SslMode::VerifyFull, Some(r)) => {
                let pem = ctx.secrets.get(r)?.expose_secret().as_bytes().to_vec();
                check_pem(&pem)?;
                Some(pem)
            }
            _ => None,
        };
        Ok(Self {
            host: spec.host.clone(),
            port: spec.port,
            database: spec.database.clone(),
            ssl_mode: spec.ssl_mode,
            ca_pem,
            admin_user: spec.admin_username.clone(),
            admin_password: ctx.secrets.get(&spec.credentials_ref)?.clone(),
            users,
            user_host: spec.user_host.clone(),
            member_of: spec.member_of.clone(),
            copy_grants: spec.copy_grants,
            guard: endpoint::Guard {
                allow_private: ctx.http.settings.allow_private_endpoints,
                allowed: ctx.http.settings.allow_private_cidrs.clone(),
            },
            session_timeout: ctx.http.settings.timeout,
        })
    }

    fn account(&self, user: &str) -> String {
        format!("{}@{}", ident(user), ident(&self.user_host))
    }

    fn is_own(&self, id: &str) -> bool {
        self.users.iter().any(|u| u == id)
    }

    async fn connect(
        &self,
        user: &str,
        password: &str,
        database: Option<&str>,
    ) -> Result<mysql_async::Conn, ProviderError> {
        let addrs = endpoint::resolve_guarded(&self.host, self.port, &self.guard).await?;
        let ssl = match self.ssl_mode {
            api::SslMode::Disable => None,
            // Encrypted, the certificate not checked (the driver's own switches).
            api::SslMode::Require => Some(
                mysql_async::SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            api::SslMode::VerifyFull => {
                let opts = mysql_async::SslOpts::default()
                    .with_danger_tls_hostname_override(Some(self.host.clone()));
                Some(match &self.ca_pem {
                    Some(pem) => opts
                        .with_root_certs(vec![pem.clone().into()])
                        .with_disable_built_in_roots(true),
                    None => opts,
                })
            }
        };
        let opts = mysql_async::OptsBuilder::default()
            // The name the certificate must carry; the connection goes only to the
            // addresses the guard checked (the driver does not resolve again).
            .ip_or_hostname(self.host.clone())
            .resolved_ips(Some(addrs.iter().map(|a| a.ip()).collect::<Vec<_>>()))
            .tcp_port(self.port)
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password))
            .db_name(database)
            .ssl_opts(ssl)
            .enable_cleartext_plugin(false)
            // No answer packet over 1 MiB (rotor's queries return a few short rows):
            // else the driver takes the server's own max_allowed_packet, up to 1 GiB.
            .max_allowed_packet(Some(MAX_PACKET))
            .wait_timeout(Some(60))
            .secure_auth(true)
            .stmt_cache_size(0);
        mysql_async::Conn::new(opts)
            .await
            .map_err(|e| self.classify(e, user))
    }

    async fn admin(&self) -> Result<mysql_async::Conn, ProviderError> {
        self.connect(&self.admin_user, self.admin_password.expose_secret(), None)
            .await
    }

    /// Runs one session's work within the session timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        use futures::FutureExt as _;
        let at = format!("MySQL at {}:{}", self.host, self.port);
        // The driver panics on some malformed answers of a server that is not what it
        // claims (an empty or garbage RSA key or nonce in caching_sha2_password without
        // TLS): that is the server's fault, said as such, not a reconcile panic.
        let work = std::panic::AssertUnwindSafe(work)
            .catch_unwind()
            .map(|caught| {
                caught.unwrap_or_else(|_| {
                    Err(ProviderError::BadResponse(format!(
                        "{at}: the driver could not read the server's answer during {what} \
                         (it is not a MySQL or MariaDB server as the driver knows them, or \
                         something on the path altered it)"
                    )))
                })
            });
        contained(super::session(&at, what, self.session_timeout, work)).await
    }

    /// Turns a connection error into a message that says what failed and what to do,
    /// never with a password.
    fn classify(&self, e: mysql_async::Error, user: &str) -> ProviderError {
        let at = format!("{}:{}", self.host, self.port);
        if let Some(s) = server_error(&e) {
            if matches!(
                s.code,
                ER_ACCESS_DENIED | ER_ACCOUNT_HAS_BEEN_LOCKED | ER_ACCOUNT_LOCKED_MARIADB
            ) {
                return ProviderError::Unauthorized {
                    status: 401,
                    message: format!("MySQL at {at} refused the login of {user:?}: {}", s.message),
                };
            }
            return ProviderError::Rejected {
                status: 400,
                message: format!("MySQL at {at} (error {}): {}", s.code, s.message),
            };
        }
        let text = super::with_causes(&e);
        if let mysql_async::Error::Driver(d) = &e {
            match d {
                mysql_async::DriverError::CleartextPluginDisabled => {
                    return ProviderError::Rejected {
                        status: 400,
                        message: format!(
                            "MySQL at {at} asked for the password of {user:?} in the clear \
                             (mysql_clear_password); rotor never sends it that way: use \
                             mysql_native_password or caching_sha2_password for this user"
                        ),
                    };
                }
                mysql_async::DriverError::NoClientSslFlagFromServer => {
                    return ProviderError::Unavailable(format!(
                        "MySQL at {at} does not offer TLS, and sslMode is {}: configure \
                         ssl_cert/ssl_key on the server, or set sslMode disable",
                        self.ssl_mode.as_str()
                    ));
                }
                _ => {}
            }
        }
        if text.contains("certificate") || text.contains("Certificate") {
            return ProviderError::Unavailable(format!(
                "MySQL at {at}: the server's certificate is not trusted ({text}); with sslMode \
                 verify-full, caRef must hold the CA that signed it (unset: the Mozilla roots) \
                 and the certificate must name host {:?}",
                self.host
            ));
        }
        ProviderError::Unavailable(format!("MySQL at {at}: {text}"))
    }

    async fn dialect(&self, conn: &mut mysql_async::Conn) -> Result<Dialect, ProviderError> {
        let row: Option<mysql_async::Row> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| sql_error(e, "reading the server version"))?;
        let row = row
            .ok_or_else(|| ProviderError::BadResponse("SELECT VERSION() returned no row".into()))?;
        let version: String = column(&row, 0, "SELECT VERSION()")?;
        Ok(Dialect::of_version(&version))
    }

    async fn exists(
        &self,
        conn: &mut mysql_async::Conn,
        user: &str,
    ) -> Result<bool, ProviderError> {
        let row: Option<mysql_async::Row> = conn
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
                (user, &self.user_host),
            )
            .await
            .map_err(|e| sql_error(e, "looking up the user"))?;
        let n: i64 = match row {
            Some(r) => column(&r, 0, "looking up the user")?,
            None => 0,
        };
        Ok(n > 0)
    }

    /// `IDENTIFIED BY …` for `password` in `dialect`: MariaDB gets the hash.
    fn identified_by(dialect: Dialect, password: &str) -> Result<String, ProviderError> {
        Ok(match dialect {
            Dialect::MariaDb => format!(
                "IDENTIFIED BY PASSWORD {}",
                literal(&native_password_hash(password))?
            ),
            Dialect::Mysql => format!("IDENTIFIED BY {}", literal(password)?),
        })
    }

    async fn run(
        conn: &mut mysql_async::Conn,
        sql: String,
        what: &str,
    ) -> Result<(), ProviderError> {
        conn.query_drop(sql).await.map_err(|e| sql_error(e, what))
    }

    /// MySQL 8 keeps a secondary password (`RETAIN CURRENT PASSWORD`, set by whoever
    /// made the account) through `ALTER USER … IDENTIFIED BY`: it would go on logging in
    /// after every rotation and revoke. MariaDB has no secondary passwords.
    async fn discard_old_password(
        &self,
        conn: &mut mysql_async::Conn,
        dialect: Dialect,
        user: &str,
    ) -> Result<(), ProviderError> {
        if dialect != Dialect::Mysql {
            return Ok(());
        }
        Self::run(
            conn,
            format!("ALTER USER {} DISCARD OLD PASSWORD", self.account(user)),
            "discarding a secondary password",
        )
        .await
    }

    /// Grants the shared role and makes it the default.
    async fn grant_role(
        &self,
        conn: &mut mysql_async::Conn,
        dialect: Dialect,
        user: &str,
        role: &str,
    ) -> Result<(), ProviderError> {
        let account = self.account(user);
        Self::run(
            conn,
            format!("GRANT {} TO {account}", ident(role)),
            "granting the role",
        )
        .await?;
        let set_default = match dialect {
            Dialect::MariaDb => format!("SET DEFAULT ROLE {} FOR {account}", ident(role)),
            Dialect::Mysql => format!("SET DEFAULT ROLE {} TO {account}", ident(role)),
        };
        Self::run(conn, set_default, "setting the default role").await
    }

    /// Replays the other user's plain GRANT statements for `user`.
    async fn copy_grants_from(
        &self,
        conn: &mut mysql_async::Conn,
        other: &str,
        user: &str,
    ) -> Result<(), ProviderError> {
        let what = "reading the other user's grants";
        let mut lines = Vec::new();
        {
            let mut rows = match conn
                .query_iter(format!("SHOW GRANTS FOR {}", self.account(other)))
                .await
            {
                Ok(rows) => rows,
                Err(e) if server_error(&e).is_some_and(|s| s.code == ER_NONEXISTING_GRANT) => {
                    return Ok(());
                }
                Err(e) => return Err(sql_error(e, what)),
            };
            for _ in 0..MAX_GRANTS {
                let Some(row) = rows.next().await.map_err(|e| sql_error(e, what))? else {
                    break;
                };
                lines.push(column::<String>(&row, 0, "SHOW GRANTS")?);
            }
        }
        // A partial revoke (MySQL 8, partial_revokes=ON) narrows a GRANT above it:
        // copying the GRANT alone would give the copy more than the original has.
        if lines
            .iter()
            .any(|l| l.trim_start().to_ascii_uppercase().starts_with("REVOKE "))
        {
            return Err(ProviderError::Rejected {
                status: 400,
                message: format!(
                    "mysql.copyGrants: SHOW GRANTS FOR {} holds a partial revoke, which rotor \
                     does not copy (the copy would have more privileges than the original); \
                     use memberOf with a role instead",
                    self.account(other)
                ),
            });
        }
        let from = self.account(other);
        let to = self.account(user);
        let (mut copied, mut skipped) = (0usize, 0usize);
        for line in &lines {
            match rewrite_grant(line, &from, &to) {
                Some(grant) => {
                    Self::run(conn, grant, "copying a grant").await?;
                    copied += 1;
                }
                None => skipped += 1,
            }
        }
        // Counts only: a skipped line may hold a password hash.
        tracing::info!(user, from = other, copied, skipped, "copied grants");
        Ok(())
    }

    /// Ids of the user's connections (the admin's own excluded), at most MAX_KILLS.
    /// PROCESSLIST compares `USER` case-insensitively and ignoring trailing spaces, and
    /// `APP_A` or `app_a ` is another account: names are compared here, byte for byte.
    async fn connections(
        &self,
        conn: &mut mysql_async::Conn,
        user: &str,
    ) -> Result<Vec<u64>, ProviderError> {
        let what = "listing the user's connections";
        let mut rows = conn
            .exec_iter(
                format!(
                    "SELECT ID, USER FROM information_schema.PROCESSLIST \
                     WHERE USER = ? AND ID <> CONNECTION_ID() LIMIT {MAX_KILLS}"
                ),
                (user,),
            )
            .await
            .map_err(|e| sql_error(e, what))?;
        let mut ids = Vec::new();
        // The LIMIT is a request: more rows than it allows end the session's reading.
        for _ in 0..MAX_KILLS {
            let Some(row) = rows.next().await.map_err(|e| sql_error(e, what))? else {
                break;
            };
            let name: String = column(&row, 1, what)?;
            if name == user {
                ids.push(column::<u64>(&row, 0, what)?);
            }
        }
        Ok(ids)
    }

    fn uri(&self, user: &str, password: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mode = match self.ssl_mode {
            api::SslMode::Disable => "DISABLED",
            api::SslMode::Require => "REQUIRED",
            api::SslMode::VerifyFull => "VERIFY_IDENTITY",
        };
        format!(
            "mysql://{}:{}@{host}:{}/{}?ssl-mode={mode}",
            enc(user),
            enc(password),
            self.port,
            enc(&self.database),
        )
    }
}

/// Runs one session on a runtime of its own, on a blocking thread, and ends every task
/// the driver spawned with it. A `mysql_async::Conn` dropped mid-answer (the session
/// timed out) spawns a task that reads the rest of the answer and says goodbye, with no
/// time limit: a server that streams rows forever or stalls would keep that task and
/// its socket for good, one more at each retry. On the operator's multi-threaded runtime
/// the session's own runtime goes with the session, and those tasks with it; on a
/// current-thread runtime (some tests) the session runs as it is.
async fn contained<F: std::future::Future>(session: F) -> F::Output {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor != tokio::runtime::RuntimeFlavor::MultiThread {
        return session.await;
    }
    tokio::task::block_in_place(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let out = runtime.block_on(session);
                // Cancels what is left (the driver's goodbye tasks) at once.
                runtime.shutdown_background();
                out
            }
            // No runtime for it (out of threads or file descriptors): run it here.
            Err(_) => tokio::runtime::Handle::current().block_on(session),
        }
    })
}

/// A `SHOW GRANTS` line of `from` as the same grant to `to`, when it is a plain GRANT
/// (privileges or a role) whose grantee is exactly `from`; `None` for anything else
/// (IDENTIFIED/PASSWORD clauses, PROXY, REQUIRE, other grantees, SET DEFAULT ROLE).
fn rewrite_grant(line: &str, from: &str, to: &str) -> Option<String> {
    let upper = line.to_ascii_uppercase();
    if !upper.starts_with("GRANT ")
        || upper.contains("IDENTIFIED")
        || upper.contains("PASSWORD")
        || upper.starts_with("GRANT PROXY ")
        || line.contains('\0')
    {
        return None;
    }
    let (body, option) = match line.strip_suffix(" WITH GRANT OPTION") {
        Some(body) => (body, " WITH GRANT OPTION"),
        None => match line.strip_suffix(" WITH ADMIN OPTION") {
            Some(body) => (body, " WITH ADMIN OPTION"),
            None => (line, ""),
        },
    };
    let head = body.strip_suffix(from)?.strip_suffix(" TO ")?;
    Some(format!("{head} TO {to}{option}"))
}

fn check_pem(pem: &[u8]) -> Result<(), ProviderError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| ProviderError::InvalidConfig(format!("mysql.caRef: not PEM: {e}")))?;
        any = true;
    }
    if !any {
        return Err(ProviderError::InvalidConfig(
            "mysql.caRef: no certificate in the PEM".into(),
        ));
    }
    Ok(())
}

#[async_trait]
impl Provider for MysqlProvider {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn outputs(&self) -> &'static [&'static str] {
        OUTPUTS
    }

    fn secret_output(&self) -> &'static str {
        "password"
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let slot = usize::from(request.slot.min(1));
        let user = &self.users[slot];
        let other = &self.users[1 - slot];
        let password = random_alphanumeric(PASSWORD_LENGTH);
        let credential = super::stashed_login(
            request,
            user,
            &password,
            self.uri(user, password.expose_secret()),
            vec![
                ("host", self.host.clone()),
                ("port", self.port.to_string()),
                ("database", self.database.clone()),
            ],
        )
        .await?;
        self.bounded("setting the password", async {
            let mut admin = self.admin().await?;
            let dialect = self.dialect(&mut admin).await?;
            let identified = Self::identified_by(dialect, password.expose_secret())?;
            let account = self.account(user);
            if self.exists(&mut admin, user).await? {
                Self::run(
                    &mut admin,
                    format!("ALTER USER {account} {identified} ACCOUNT UNLOCK"),
                    "setting the password",
                )
                .await?;
                self.discard_old_password(&mut admin, dialect, user).await?;
            } else {
                Self::run(
                    &mut admin,
                    format!("CREATE USER {account} {identified} ACCOUNT UNLOCK"),
                    "creating the user",
                )
                .await?;
            }
            if let Some(role) = &self.member_of {
                self.grant_role(&mut admin, dialect, user, role).await?;
            }
            if self.copy_grants {
                self.copy_grants_from(&mut admin, other, user).await?;
            }
            let _ = admin.disconnect().await;
            Ok(())
        })
        .await
        .map_err(|e| {
            // Neither the password nor its hash in a message (a server echoing the
            // statement in a syntax error).
            let hash = native_password_hash(password.expose_secret());
            e.map_message(|m| super::scrub(m, &[password.expose_secret(), &hash]))
        })?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let password = credential
            .outputs
            .get("password")
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        self.bounded("the connection test", async {
            let mut conn = self
                .connect(&credential.id, password, Some(&self.database))
                .await
                .map_err(|e| ProviderError::TestFailed(e.to_string()))?;
            conn.query_drop("SELECT 1")
                .await
                .map_err(|e| ProviderError::TestFailed(format!("SELECT 1: {e}")))?;
            let _ = conn.disconnect().await;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            ProviderError::TestFailed(m) => ProviderError::TestFailed(m),
            other => ProviderError::TestFailed(other.to_string()),
        })
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        check_name(id, "username", MAX_NAME_CHARS)?;
        self.bounded("revoking the user", async {
            let mut admin = self.admin().await?;
            if !self.exists(&mut admin, id).await? {
                return Ok(Revocation::AlreadyGone);
            }
            let dialect = self.dialect(&mut admin).await?;
            // A password nobody keeps: a later unlock by hand does not bring back the old one.
            let discard = random_alphanumeric(PASSWORD_LENGTH);
            let identified = Self::identified_by(dialect, discard.expose_secret())?;
            Self::run(
                &mut admin,
                format!("ALTER USER {} {identified} ACCOUNT LOCK", self.account(id)),
                "locking the user",
            )
            .await?;
            self.discard_old_password(&mut admin, dialect, id).await?;
            for thread in self.connections(&mut admin, id).await? {
                match admin.query_drop(format!("KILL CONNECTION {thread}")).await {
                    Ok(()) => {}
                    Err(e) if server_error(&e).is_some_and(|s| s.code == ER_NO_SUCH_THREAD) => {}
                    Err(e) => return Err(sql_error(e, "ending the user's connections")),
                }
            }
            let _ = admin.disconnect().await;
            Ok(Revocation::Revoked)
        })
        .await
    }

    /// Connections of the user in information_schema.PROCESSLIST (the admin's own
    /// excluded): a count, never who or what they run.
    async fn in_use(&self, id: &str, _since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        self.bounded("counting the user's connections", async {
            let mut admin = self.admin().await?;
            let n = self.connections(&mut admin, id).await?.len();
            let _ = admin.disconnect().await;
            Ok(match u64::try_from(n).unwrap_or(u64::MAX) {
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
            let mut admin = self.admin().await?;
            let what = "listing the users";
            let mut rows = admin
                .exec_iter(
                    "SELECT User FROM mysql.user WHERE Host = ? AND User IN (?, ?)",
                    (&self.user_host, &self.users[0], &self.users[1]),
                )
                .await
                .map_err(|e| sql_error(e, what))?;
            let mut names = Vec::new();
            // At most a few rows (a case-insensitive collation could match more names).
            for _ in 0..16 {
                let Some(row) = rows.next().await.map_err(|e| sql_error(e, what))? else {
                    break;
                };
                let name: String = column(&row, 0, what)?;
                // Only exactly the two names.
                if self.is_own(&name) && !names.contains(&name) {
                    names.push(name);
                }
            }
            drop(rows);
            let _ = admin.disconnect().await;
            Ok(names)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_doubled_backticks() {
        assert_eq!(ident("app_a"), "`app_a`");
        assert_eq!(ident("a`b'c"), "`a``b'c`");
        assert!(literal("abc'd").is_err());
        assert_eq!(literal("*AB12").unwrap(), "'*AB12'");
    }

    #[test]
    fn the_native_hash_is_mysqls() {
        // SELECT PASSWORD('password') on MariaDB.
        assert_eq!(
            native_password_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }

    #[test]
    fn mariadb_gets_the_hash_and_mysql_the_password() {
        assert_eq!(
            MysqlProvider::identified_by(Dialect::MariaDb, "password").unwrap(),
            "IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'"
        );
        assert_eq!(
            MysqlProvider::identified_by(Dialect::Mysql, "abc123").unwrap(),
            "IDENTIFIED BY 'abc123'"
        );
        assert!(MysqlProvider::identified_by(Dialect::Mysql, "a'b").is_err());
    }

    #[test]
    fn the_dialect_comes_from_the_version() {
        assert_eq!(
            Dialect::of_version("10.11.6-MariaDB-0+deb12u1"),
            Dialect::MariaDb
        );
        assert_eq!(Dialect::of_version("8.0.36"), Dialect::Mysql);
    }

    #[test]
    fn only_plain_grants_to_exactly_the_other_user_are_replayed() {
        let from = "`app_b`@`%`";
        let to = "`app_a`@`%`";
        assert_eq!(
            rewrite_grant("GRANT SELECT, INSERT ON `app`.* TO `app_b`@`%`", from, to).as_deref(),
            Some("GRANT SELECT, INSERT ON `app`.* TO `app_a`@`%`")
        );
        assert_eq!(
            rewrite_grant("GRANT `app_rw` TO `app_b`@`%`", from, to).as_deref(),
            Some("GRANT `app_rw` TO `app_a`@`%`")
        );
        assert_eq!(
            rewrite_grant(
                "GRANT ALL PRIVILEGES ON `x`.* TO `app_b`@`%` WITH GRANT OPTION",
                from,
                to
            )
            .as_deref(),
            Some("GRANT ALL PRIVILEGES ON `x`.* TO `app_a`@`%` WITH GRANT OPTION")
        );
        for refused in [
            "GRANT USAGE ON *.* TO `app_b`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'",
            "GRANT USAGE ON *.* TO `app_b`@`%` REQUIRE SSL",
            "GRANT SELECT ON `app`.* TO `app_bb`@`%`",
            "GRANT SELECT ON `app`.* TO `x_app_b`@`%`",
            "GRANT SELECT ON `app`.* TO `app_b`@`localhost`",
            "GRANT PROXY ON ''@'%' TO `app_b`@`%`",
            "SET DEFAULT ROLE `r` FOR `app_b`@`%`",
            "REVOKE SELECT ON `app`.* FROM `app_b`@`%`",
            // Anything naming a password is skipped, even a database called so.
            "GRANT SELECT ON `password_db`.* TO `app_b`@`%`",
        ] {
            assert_eq!(rewrite_grant(refused, from, to), None, "{refused}");
        }
    }

    /// A "server" that asks for caching_sha2_password's full authentication over plain
    /// TCP and then sends a public key that is not one (mysql_async panics on it).
    async fn garbage_key_server() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let packet = |seq: u8, payload: &[u8]| {
                        let n = payload.len() as u32;
                        let mut p = n.to_le_bytes()[..3].to_vec();
                        p.push(seq);
                        p.extend_from_slice(payload);
                        p
                    };
                    // CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 |
                    // TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH; no SSL.
                    let caps: u32 = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000;
                    let mut hello = vec![0x0a];
                    hello.extend_from_slice(b"8.0.36\0");
                    hello.extend_from_slice(&7u32.to_le_bytes());
                    hello.extend_from_slice(b"abcdefgh\0");
                    hello.extend_from_slice(&(caps as u16).to_le_bytes());
                    hello.push(33);
                    hello.extend_from_slice(&2u16.to_le_bytes());
                    hello.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
                    hello.push(21);
                    hello.extend_from_slice(&[0; 10]);
                    hello.extend_from_slice(b"ijklmnopqrst\0");
                    hello.extend_from_slice(b"caching_sha2_password\0");
                    let mut buf = vec![0u8; 4096];
                    let _ = s.write_all(&packet(0, &hello)).await;
                    let _ = s.read(&mut buf).await; // the handshake response
                    let _ = s.write_all(&packet(2, &[0x01, 0x04])).await; // full auth
                    let _ = s.read(&mut buf).await; // "send me your key"
                    let _ = s.write_all(&packet(4, b"\x01not a public key")).await;
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_driver_panic_on_a_hostile_answer_is_a_provider_error() {
        let port = garbage_key_server().await;
        let (http, secrets) = ctx_parts();
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let provider =
            super::super::build(&spec(serde_json::json!({ "port": port })), &ctx).unwrap();
        let err = provider.list_own("").await.unwrap_err();
        assert!(matches!(err, ProviderError::BadResponse(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("the driver could not read the server's answer"),
            "{err}"
        );
    }

    /// What a session leaves running (the driver's goodbye task of a dropped
    /// connection) ends with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_a_session_spawns_end_with_it() {
        let (held, mut gone) = tokio::sync::oneshot::channel::<()>();
        contained(async move {
            tokio::spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            });
        })
        .await;
        let closed = tokio::time::timeout(Duration::from_secs(10), &mut gone).await;
        assert!(
            matches!(closed, Ok(Err(_))),
            "a task the session spawned outlived it"
        );
    }

    fn ctx_parts() -> (super::super::HttpClient, super::super::Secrets) {
        let http = super::super::HttpClient::new(super::super::HttpSettings {
            allow_private_endpoints: true,
            max_retries: 0,
            ..super::super::HttpSettings::default()
        });
        let mut secrets = super::super::Secrets::default();
        secrets.0.insert(
            ("a".into(), "k".into()),
            SecretString::from("admin-password"),
        );
        (http, secrets)
    }

    fn spec(extra: serde_json::Value) -> crate::api::ProviderSpec {
        let mut mysql = serde_json::json!({
            "host": "127.0.0.1", "port": 1, "database": "app", "sslMode": "disable",
            "credentialsRef": {"name": "a", "key": "k"}, "username": "u",
        });
        for (k, v) in extra.as_object().unwrap() {
            mysql[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({ "mysql": mysql })).unwrap()
    }

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        let (http, secrets) = ctx_parts();
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let refused = |extra: serde_json::Value| {
            super::super::build(&spec(extra), &ctx)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refused(serde_json::json!({"username": "a".repeat(31)})).contains("1 to 32"));
        assert!(refused(serde_json::json!({"username": "a\u{0}b"})).contains("NUL"));
        assert!(
            refused(serde_json::json!({"username": null, "usernames": ["x", "x"]}))
                .contains("two different users")
        );
        assert!(refused(serde_json::json!({"adminUsername": "u_a"})).contains("admin user"));
        assert!(refused(serde_json::json!({"memberOf": ""})).contains("memberOf"));
        assert!(
            refused(
                serde_json::json!({"sslMode": "verify-full", "caRef": {"name": "a", "key": "k"}})
            )
            .contains("caRef")
        );
        assert!(super::super::build(&spec(serde_json::json!({})), &ctx).is_ok());
    }

    #[tokio::test]
    async fn the_built_provider_answers_usage_itself() {
        // Nothing listens on port 1: only the provider's own answer (it connects to
        // count connections) is an error; the trait's default would say Unknown.
        let (http, secrets) = ctx_parts();
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let err = super::super::build(&spec(serde_json::json!({})), &ctx)
            .unwrap()
            .in_use("u_a", chrono::Utc::now())
            .await
            .expect_err("the mysql provider itself was asked");
        assert!(
            matches!(&err, ProviderError::Unavailable(m) if m.contains("127.0.0.1:1")),
            "{err}"
        );
    }

    #[test]
    fn the_uri_is_percent_encoded() {
        let (http, secrets) = ctx_parts();
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let p = MysqlProvider::new(
            &MysqlSpec {
                database: "my db".into(),
                ..serde_json::from_value(serde_json::json!({
                    "host": "::1", "database": "x", "credentialsRef": {"name": "a", "key": "k"},
                    "username": "u",
                }))
                .unwrap()
            },
            &ctx,
        )
        .unwrap();
        assert_eq!(
            p.uri("o'b", "pw"),
            "mysql://o%27b:pw@[::1]:3306/my%20db?ssl-mode=VERIFY_IDENTITY"
        );
    }
}
