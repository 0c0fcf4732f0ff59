//! `provider.redis`: a Redis (6 or later) ACL login rotated across two users.
//!
//! Slot 0 and slot 1 are two ACL users (`<username>_a` / `<username>_b`, or two named
//! users). A rotation sends, as separate protocol arguments,
//! `ACL SETUSER <user> reset #<sha256 of the new password> <rules…> on`: one atomic
//! command that drops the user's old passwords and rules, adds the new password as a
//! hash (the plaintext never reaches the server, its MONITOR, SLOWLOG or ACL LOG),
//! applies the rules (the spec's, or those `ACL GETUSER` reads from a template user,
//! passwords never copied) and turns the user on. Then `ACL SAVE` when the server keeps
//! its users in an ACL file, so a restart cannot bring an old password back. Revoking is
//! `ACL SETUSER <user> resetpass off` + `CLIENT KILL USER <user>` (+ `ACL SAVE`).
//!
//! rotor makes the connection itself: the host is resolved and checked by the endpoint
//! guard and the connection goes to the checked address; TLS is rustls with rotor's own
//! configuration; every byte the server sends counts against [`MAX_SESSION_BYTES`], so
//! a hostile server cannot make rotor buffer without bound; each session is bounded by
//! the HTTP timeout. redis-rs only speaks the protocol over that stream.

use super::{BuildContext, endpoint, random_alphanumeric};
use crate::api::{RedisSpec, RedisTls};
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation, Usage};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use redis::Value;
use redis::aio::MultiplexedConnection;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PASSWORD_LENGTH: usize = 32;
/// The most a server may send in one session. The largest reply rotor reads is
/// `CLIENT LIST` (about 300 bytes a connection: some 13,000 connections). A reply of
/// many tiny elements takes several times its wire size once parsed, so the cap is
/// also what bounds the memory a hostile server can make rotor use (some 70 MB).
pub const MAX_SESSION_BYTES: u64 = 4 << 20;
/// The most rules rotor sends (from the spec or a template user).
const MAX_RULES: usize = 256;
/// The longest a rules string or one rule may be.
const MAX_RULES_LEN: usize = 4096;
const MAX_RULE_LEN: usize = 512;

pub struct RedisProvider {
    host: String,
    port: u16,
    tls: Tls,
    admin_user: String,
    admin_password: SecretString,
    users: [String; 2],
    rules: Rules,
    db: u32,
    guard: endpoint::Guard,
    /// The most one session (connect plus its commands) may take.
    session_timeout: Duration,
}

enum Tls {
    Disable,
    /// Encrypted; the certificate checked (`Verify`) or not (`InsecureSkipVerify`).
    On(Arc<rustls::ClientConfig>),
}

enum Rules {
    /// The spec's rules, checked once.
    Fixed(Vec<String>),
    /// Copied from this user at each rotation (and checked then).
    Template(String),
}

/// The name rules for user names rotor sends: printable ASCII without spaces (Redis
/// refuses spaces in user names; control bytes have no business there).
fn check_name(name: &str, field: &str) -> Result<(), ProviderError> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProviderError::InvalidConfig(format!(
            "redis.{field} {name:?} must be 1 to 128 printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Whether `rule` is one of the ACL rule shapes rotor passes on: key and channel
/// patterns, command and category grants, and the few keywords about those. Password
/// rules, on/off, reset and selectors are not: rotor sets the password and the state
/// itself, and a rules string must not open the user or set a password of its own.
/// The error never repeats the rule (a refused `>…` is a password).
fn check_rule(rule: &str) -> Result<(), String> {
    const KEYWORDS: &[&str] = &[
        "allkeys",
        "allchannels",
        "allcommands",
        "nocommands",
        "resetkeys",
        "resetchannels",
    ];
    const REFUSED: &[&str] = &[
        "on",
        "off",
        "nopass",
        "resetpass",
        "reset",
        "clearselectors",
        "skip-sanitize-payload",
        "sanitize-payload",
    ];
    if rule.len() > MAX_RULE_LEN {
        return Err(format!("a rule is longer than {MAX_RULE_LEN} bytes"));
    }
    if !rule.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a rule holds a character that is not printable ASCII".into());
    }
    let lower = rule.to_ascii_lowercase();
    if KEYWORDS.contains(&lower.as_str()) {
        return Ok(());
    }
    if REFUSED.contains(&lower.as_str()) {
        return Err(format!(
            "{lower:?} is not allowed: rotor sets the password and turns the user on itself"
        ));
    }
    if let Some(first @ ('>' | '<' | '#' | '!')) = rule.chars().next() {
        return Err(format!(
            "a password rule ({first}…) is not allowed: rotor sets the password itself"
        ));
    }
    if rule.starts_with('(') {
        return Err("selectors ((…)) are not supported".into());
    }
    for prefix in ["%RW~", "%R~", "%W~", "~", "&"] {
        if let Some(rest) = rule.strip_prefix(prefix) {
            return if rest.is_empty() {
                Err(format!("an empty {prefix} pattern"))
            } else {
                Ok(())
            };
        }
    }
    let command_word = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    };
    if let Some(rest) = rule.strip_prefix('+').or_else(|| rule.strip_prefix('-')) {
        if let Some(category) = rest.strip_prefix('@') {
            if !category.is_empty()
                && category.len() <= 64
                && category
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Ok(());
            }
            return Err("a command category (+@…/-@…) that is not a category name".into());
        }
        let mut parts = rest.splitn(2, '|');
        let command = parts.next().unwrap_or_default();
        let sub_ok = parts.next().is_none_or(command_word);
        if command_word(command) && sub_ok {
            return Ok(());
        }
        return Err("a command rule (+…/-…) that is not a command name".into());
    }
    Err("not a known ACL rule shape (~pattern, %R~/%W~/%RW~pattern, &pattern, +command, -command, +@category, -@category, allkeys, allchannels, allcommands, nocommands, resetkeys, resetchannels)".into())
}

/// Checks each of `rules`; the error names the rule by position only.
fn check_rules(rules: &[String], whence: &str) -> Result<(), ProviderError> {
    if rules.len() > MAX_RULES {
        return Err(ProviderError::InvalidConfig(format!(
            "{whence}: more than {MAX_RULES} rules"
        )));
    }
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule).map_err(|why| {
            ProviderError::InvalidConfig(format!(
                "{whence}: rule {} of {}: {why}",
                i + 1,
                rules.len()
            ))
        })?;
    }
    Ok(())
}

/// The spec's rules string, split at whitespace into one argument per rule.
pub fn parse_rules(rules: &str) -> Result<Vec<String>, ProviderError> {
    if rules.len() > MAX_RULES_LEN {
        return Err(ProviderError::InvalidConfig(format!(
            "redis.rules is longer than {MAX_RULES_LEN} bytes"
        )));
    }
    let list: Vec<String> = rules.split_ascii_whitespace().map(str::to_string).collect();
    if list.is_empty() {
        return Err(ProviderError::InvalidConfig(
            "redis.rules holds no rule".into(),
        ));
    }
    // Whitespace other than ASCII's would hide inside one argument.
    check_rules(&list, "redis.rules")?;
    Ok(list)
}

/// `#` + the SHA-256 of the password in lowercase hex: how `ACL SETUSER` takes a
/// password without seeing it.
fn password_hash(password: &str) -> String {
    format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
}

impl RedisProvider {
    pub fn new(spec: &RedisSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let users = super::two_users("redis", &spec.username, &spec.usernames)?;
        for u in &users {
            check_name(u, "username")?;
        }
        check_name(&spec.admin_username, "adminUsername")?;
        // `default` is every unauthenticated connection's user (and `requirepass`'s):
        // resetting it would lock out every client that does not name a user.
        if users.iter().any(|u| u == "default") {
            return Err(ProviderError::InvalidConfig(
                "redis: the user \"default\" cannot be rotated (it is the user of every connection that does not log in as another); rotate two named users".into(),
            ));
        }
        if users.contains(&spec.admin_username) {
            return Err(ProviderError::InvalidConfig(
                "redis.adminUsername must not be one of the two rotated users".into(),
            ));
        }
        let rules = match (&spec.rules, &spec.template_user) {
            (Some(rules), None) => Rules::Fixed(parse_rules(rules)?),
            (None, Some(template)) => {
                check_name(template, "templateUser")?;
                if users.contains(template) {
                    return Err(ProviderError::InvalidConfig(
                        "redis.templateUser must not be one of the two rotated users".into(),
                    ));
                }
                Rules::Template(template.clone())
            }
            _ => {
                return Err(ProviderError::InvalidConfig(
                    "redis: set exactly one of rules and templateUser".into(),
                ));
            }
        };
        if spec.ca_ref.is_some() && spec.tls != RedisTls::Verify {
            return Err(ProviderError::InvalidConfig(
                "redis.caRef is used only with tls: verify".into(),
            ));
        }
        let tls = match spec.tls {
            RedisTls::Disable => Tls::Disable,
            RedisTls::InsecureSkipVerify => Tls::On(Arc::new(super::postgres::unverified_config())),
            RedisTls::Verify => Tls::On(Arc::new(verifying_config(spec, ctx)?)),
        };
        Ok(Self {
            host: spec.host.clone(),
            port: spec.port,
            tls,
            admin_user: spec.admin_username.clone(),
            admin_password: ctx.secrets.get(&spec.credentials_ref)?.clone(),
            users,
            rules,
            db: spec.db,
            guard: endpoint::Guard {
                allow_private: ctx.http.settings.allow_private_endpoints,
                allowed: ctx.http.settings.allow_private_cidrs.clone(),
            },
            session_timeout: ctx.http.settings.timeout,
        })
    }

    fn at(&self) -> String {
        format!("Redis at {}:{}", self.host, self.port)
    }

    /// A connection to the checked address (TLS as configured), nobody logged in yet.
    async fn connect(&self) -> Result<MultiplexedConnection, ProviderError> {
        let addrs = endpoint::resolve_guarded(&self.host, self.port, &self.guard).await?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs.iter().take(8) {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(ProviderError::Unavailable(format!(
                "{}: {}",
                self.at(),
                last.map_or_else(|| "no address".to_string(), |e| e.to_string())
            )));
        };
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            Tls::Disable => Box::new(tcp),
            Tls::On(config) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| ProviderError::InvalidConfig(format!("redis.host: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.tls_error(&e))?;
                Box::new(tls)
            }
        };
        let capped = Capped {
            inner: stream,
            read: 0,
        };
        let info = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let (conn, driver) = MultiplexedConnection::new_with_config(&info, capped, config)
            .await
            .map_err(|e| self.classify(e, "connecting"))?;
        tokio::spawn(tokio::time::timeout(self.session_timeout, driver));
        Ok(conn)
    }

    fn tls_error(&self, e: &std::io::Error) -> ProviderError {
        let cert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|r| match r {
                rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
                _ => None,
            });
        match cert {
            Some(c) => ProviderError::Unavailable(format!(
                "{}: the server's certificate is not trusted ({c}); with tls: verify, caRef must hold the CA that signed it (unset: the Mozilla roots) and the certificate must name host {:?}",
                self.at(),
                self.host
            )),
            None => ProviderError::Unavailable(format!("{}: TLS handshake: {e}", self.at())),
        }
    }

    /// A connection logged in as the admin.
    async fn admin(&self) -> Result<MultiplexedConnection, ProviderError> {
        let mut conn = self.connect().await?;
        let auth: Result<Value, _> = redis::cmd("AUTH")
            .arg(&self.admin_user)
            .arg(self.admin_password.expose_secret())
            .query_async(&mut conn)
            .await;
        match auth {
            Ok(_) => Ok(conn),
            Err(e) if matches!(e.code(), Some("WRONGPASS") | Some("NOPERM")) => {
                Err(ProviderError::Unauthorized {
                    status: 401,
                    message: format!(
                        "{} refused the password of {:?} (WRONGPASS: wrong password, or the user is off)",
                        self.at(),
                        self.admin_user
                    ),
                })
            }
            Err(e) => Err(self.classify(e, "logging in as the admin")),
        }
    }

    /// Runs one session's work within the session timeout.
    async fn bounded<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        super::session(&self.at(), what, self.session_timeout, work).await
    }

    /// A redis-rs error as a provider error that says what failed. Server errors carry
    /// the server's text (which may repeat an argument: callers scrub what they sent).
    fn classify(&self, e: redis::RedisError, what: &str) -> ProviderError {
        let text = match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        };
        // Shown in status and Events: a bounded line, no control characters from a
        // hostile server.
        let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
        match e.code() {
            Some("NOPERM") => ProviderError::Rejected {
                status: 403,
                message: format!(
                    "{} refused {what} to {:?}: {text} (see the README for the ACL rules the admin needs)",
                    self.at(),
                    self.admin_user
                ),
            },
            Some("WRONGPASS") => ProviderError::Unauthorized {
                status: 401,
                message: format!("{} ({what}): {text}", self.at()),
            },
            Some(_) => ProviderError::Rejected {
                status: 400,
                message: format!("{} ({what}): {text}", self.at()),
            },
            None => ProviderError::Unavailable(format!("{} ({what}): {text}", self.at())),
        }
    }

    async fn query(
        &self,
        conn: &mut MultiplexedConnection,
        cmd: &redis::Cmd,
        what: &str,
    ) -> Result<Value, ProviderError> {
        cmd.query_async::<Value>(conn)
            .await
            .map_err(|e| self.classify(e, what))
    }

    /// Whether `user` exists (`ACL GETUSER` answers nil for a missing one).
    async fn get_user(
        &self,
        conn: &mut MultiplexedConnection,
        user: &str,
    ) -> Result<Option<Value>, ProviderError> {
        let v = self
            .query(
                conn,
                redis::cmd("ACL").arg("GETUSER").arg(user),
                "ACL GETUSER",
            )
            .await?;
        Ok(match v {
            Value::Nil => None,
            other => Some(other),
        })
    }

    /// The rules to give the users: the spec's, or the template user's.
    async fn rules(&self, conn: &mut MultiplexedConnection) -> Result<Vec<String>, ProviderError> {
        match &self.rules {
            Rules::Fixed(rules) => Ok(rules.clone()),
            Rules::Template(template) => {
                let Some(user) = self.get_user(conn, template).await? else {
                    return Err(ProviderError::InvalidConfig(format!(
                        "redis.templateUser {template:?} does not exist at {}",
                        self.at()
                    )));
                };
                let rules = template_rules(&user).map_err(|why| {
                    ProviderError::BadResponse(format!(
                        "ACL GETUSER {template:?} at {}: {why}",
                        self.at()
                    ))
                })?;
                check_rules(&rules, &format!("the rules of templateUser {template:?}"))?;
                Ok(rules)
            }
        }
    }

    /// `ACL SAVE` unless the server says it has no ACL file (`CONFIG GET aclfile`
    /// empty). When CONFIG is refused to the admin, `ACL SAVE` is sent anyway and
    /// "not configured to use an ACL file" read as no file.
    async fn save_acl(&self, conn: &mut MultiplexedConnection) -> Result<(), ProviderError> {
        let file = redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async::<Value>(conn)
            .await;
        if let Ok(v) = &file
            && config_value(v).is_some_and(str::is_empty)
        {
            return Ok(());
        }
        match redis::cmd("ACL")
            .arg("SAVE")
            .query_async::<Value>(conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if file.is_err()
                    && e.detail()
                        .is_some_and(|d| d.contains("not configured to use an ACL file")) =>
            {
                Ok(())
            }
            Err(e) => Err(self.classify(e, "ACL SAVE")),
        }
    }

    fn uri(&self, user: &str, password: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let scheme = match self.tls {
            Tls::Disable => "redis",
            Tls::On(_) => "rediss",
        };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{scheme}://{}:{}@{host}:{}/{}",
            enc(user),
            enc(password),
            self.port,
            self.db
        )
    }
}

/// The value of a `CONFIG GET <one>` reply (`[name, value]`, or a map under RESP3).
fn config_value(v: &Value) -> Option<&str> {
    let pair = match v {
        Value::Array(items) if items.len() == 2 => (&items[0], &items[1]),
        Value::Map(items) if items.len() == 1 => (&items[0].0, &items[0].1),
        _ => return None,
    };
    text(pair.1)
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// The fields of an `ACL GETUSER` reply (flat `[name, value, …]`, or a map).
fn fields(v: &Value) -> Option<Vec<(&str, &Value)>> {
    match v {
        Value::Array(items) => Some(
            items
                .chunks_exact(2)
                .filter_map(|kv| Some((text(&kv[0])?, &kv[1])))
                .collect(),
        ),
        Value::Map(items) => Some(
            items
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v)))
                .collect(),
        ),
        _ => None,
    }
}

/// The rules of a user as `ACL GETUSER` shows them: its commands, key and channel
/// patterns (Redis 7: one string each; Redis 6: lists of bare patterns) and the
/// all-keys/all-channels/all-commands flags. Passwords and the on/off flag are never
/// read. Selectors are refused.
fn template_rules(user: &Value) -> Result<Vec<String>, String> {
    let fields = fields(user).ok_or("not a user description")?;
    let mut rules = Vec::new();
    let words = |v: &Value, prefix: &str| -> Result<Vec<String>, String> {
        match v {
            Value::Array(items) => Ok(items
                .iter()
                .filter_map(text)
                .map(|p| {
                    if p.starts_with('~') || p.starts_with('%') || p.starts_with('&') {
                        p.to_string()
                    } else {
                        format!("{prefix}{p}")
                    }
                })
                .collect()),
            other => Ok(text(other)
                .ok_or("a rules field that is not text")?
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect()),
        }
    };
    let mut commands = None;
    for (name, value) in &fields {
        match *name {
            "flags" => {
                if let Value::Array(flags) = value {
                    for f in flags.iter().filter_map(text) {
                        if matches!(f, "allkeys" | "allchannels" | "allcommands") {
                            rules.push(f.to_string());
                        }
                    }
                }
            }
            "commands" => commands = Some(words(value, "+")?),
            "keys" => rules.extend(words(value, "~")?),
            "channels" => rules.extend(words(value, "&")?),
            "selectors" => {
                if matches!(value, Value::Array(s) if !s.is_empty()) {
                    return Err("the template user has selectors, which rotor does not copy".into());
                }
            }
            _ => {}
        }
        if rules.len() > MAX_RULES {
            return Err(format!("more than {MAX_RULES} rules"));
        }
    }
    // Commands last: `-@all +get` must come in its own order, after the patterns.
    rules.extend(commands.ok_or("no commands field")?);
    Ok(rules)
}

/// The number of connections of `user` in a `CLIENT LIST` reply, leaving out the
/// connection with id `own`.
fn count_connections(list: &str, user: &str, own: i64) -> u64 {
    let own = own.to_string();
    let mut n = 0;
    for line in list.lines() {
        let mut id = None;
        let mut who = None;
        for field in line.split(' ') {
            if let Some(v) = field.strip_prefix("id=") {
                id = Some(v);
            } else if let Some(v) = field.strip_prefix("user=") {
                who = Some(v);
            }
        }
        if who == Some(user) && id != Some(own.as_str()) {
            n += 1;
        }
    }
    n
}

fn verifying_config(
    spec: &RedisSpec,
    ctx: &BuildContext<'_>,
) -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    match &spec.ca_ref {
        Some(r) => {
            let pem = ctx.secrets.get(r)?.expose_secret().to_string();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    ProviderError::InvalidConfig(format!("redis.caRef: not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ProviderError::InvalidConfig(format!("redis.caRef: bad certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(ProviderError::InvalidConfig(
                    "redis.caRef holds no PEM certificate".into(),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A stream that fails once the server has sent more than [`MAX_SESSION_BYTES`].
struct Capped {
    inner: Box<dyn Io>,
    read: u64,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read >= MAX_SESSION_BYTES {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the server sent more than {} MiB in one session",
                MAX_SESSION_BYTES >> 20
            ))));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len().saturating_sub(before);
        self.read = self.read.saturating_add(got as u64);
        poll
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Provider for RedisProvider {
    fn kind(&self) -> &'static str {
        "redis"
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
        let hash = password_hash(password.expose_secret());
        self.bounded("setting the password", async {
            let mut admin = self.admin().await?;
            let rules = self.rules(&mut admin).await?;
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER").arg(user).arg("reset").arg(&hash);
            for rule in &rules {
                cmd.arg(rule);
            }
            cmd.arg("on");
            self.query(&mut admin, &cmd, "ACL SETUSER").await?;
            self.save_acl(&mut admin).await
        })
        .await
        // The server's error text may repeat an argument: never the hash.
        .map_err(|e| e.map_message(|m| m.replace(&hash, "#[redacted]")))?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let password = credential
            .outputs
            .get("password")
            .map(|p| p.expose_secret())
            .unwrap_or_default();
        self.bounded("the connection test", async {
            let mut conn = self.connect().await?;
            redis::cmd("AUTH")
                .arg(&credential.id)
                .arg(password)
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|e| match e.code() {
                    Some(code) => {
                        ProviderError::TestFailed(format!("AUTH as {:?}: {code}", credential.id))
                    }
                    None => self.classify(e, "the connection test's AUTH"),
                })?;
            // Logged in is what the test proves; rules without PING (`-@all +get`)
            // answer NOPERM, which is the user's rules working, not a failure.
            match redis::cmd("PING").query_async::<Value>(&mut conn).await {
                Ok(pong) if text(&pong) == Some("PONG") => Ok(()),
                Ok(_) => Err(ProviderError::TestFailed("PING did not answer PONG".into())),
                Err(e) if e.code() == Some("NOPERM") => Ok(()),
                Err(e) => Err(self.classify(e, "PING")),
            }
        })
        .await
        .map_err(|e| match e {
            ProviderError::TestFailed(m) => ProviderError::TestFailed(m),
            other => ProviderError::TestFailed(other.to_string()),
        })
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        self.bounded("revoking the user", async {
            let mut admin = self.admin().await?;
            if self.get_user(&mut admin, id).await?.is_none() {
                return Ok(Revocation::AlreadyGone);
            }
            self.query(
                &mut admin,
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(id)
                    .arg("resetpass")
                    .arg("off"),
                "ACL SETUSER resetpass off",
            )
            .await?;
            self.query(
                &mut admin,
                redis::cmd("CLIENT").arg("KILL").arg("USER").arg(id),
                "CLIENT KILL USER",
            )
            .await?;
            self.save_acl(&mut admin).await?;
            Ok(Revocation::Revoked)
        })
        .await
    }

    /// Connections of the user in `CLIENT LIST` (the admin's own connection left out):
    /// a count, never who or what they run.
    async fn in_use(&self, id: &str, _since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        self.bounded("counting the user's connections", async {
            let mut admin = self.admin().await?;
            let own = match self
                .query(
                    &mut admin,
                    &redis::cmd("CLIENT").arg("ID").clone(),
                    "CLIENT ID",
                )
                .await?
            {
                Value::Int(n) => n,
                _ => return Err(ProviderError::BadResponse("CLIENT ID: not a number".into())),
            };
            let list = self
                .query(
                    &mut admin,
                    &redis::cmd("CLIENT").arg("LIST").clone(),
                    "CLIENT LIST",
                )
                .await?;
            let list = text(&list)
                .ok_or_else(|| ProviderError::BadResponse("CLIENT LIST: not text".into()))?;
            Ok(match count_connections(list, id, own) {
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
            let users = self
                .query(
                    &mut admin,
                    &redis::cmd("ACL").arg("USERS").clone(),
                    "ACL USERS",
                )
                .await?;
            let Value::Array(users) = users else {
                return Err(ProviderError::BadResponse("ACL USERS: not a list".into()));
            };
            let mut own: Vec<String> = users
                .iter()
                .filter_map(text)
                .filter(|u| self.users.iter().any(|mine| mine == u))
                .map(str::to_string)
                .collect();
            own.sort();
            own.dedup();
            Ok(own)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_known_shapes_pass() {
        let rules = parse_rules("~app:* %R~ro:* %W~wo:* %RW~x &chan:* +@read +@write -flushall +client|id -@dangerous allkeys resetchannels").unwrap();
        assert_eq!(rules.len(), 12);
    }

    #[test]
    fn password_and_state_rules_are_refused_without_repeating_them() {
        for bad in [
            ">hunter2-secret",
            "<hunter2-secret",
            "#abcdef0123",
            "!abcdef0123",
            "nopass",
            "NOPASS",
            "resetpass",
            "on",
            "off",
            "reset",
            "(~x +get)",
            "clearselectors",
            "+get foo",
            "~",
            "+",
            "+@",
            "+get|",
            "bogus",
            "+ge\u{7f}t",
        ] {
            let e = parse_rules(&format!("~app:* {bad}"))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"));
            let m = e.to_string();
            assert!(!m.contains("hunter2") && !m.contains("abcdef"), "{m}");
        }
        assert!(parse_rules("").is_err());
        assert!(parse_rules(&"~a ".repeat(2000)).is_err());
        // Unicode whitespace does not split a rule: the whole rule is refused.
        assert!(parse_rules("~a\u{a0}>pw").is_err());
    }

    #[test]
    fn template_rules_copy_patterns_and_commands_never_passwords() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        // Redis 7.
        let user = Value::Array(vec![
            b("flags"),
            Value::Array(vec![b("on"), b("nopass")]),
            b("passwords"),
            Value::Array(vec![b("0123abcd")]),
            b("commands"),
            b("-@all +get +set"),
            b("keys"),
            b("~app:* %R~ro:*"),
            b("channels"),
            b("&news"),
            b("selectors"),
            Value::Array(vec![]),
        ]);
        let rules = template_rules(&user).unwrap();
        assert_eq!(
            rules,
            ["~app:*", "%R~ro:*", "&news", "-@all", "+get", "+set"]
        );
        // Redis 6.0: bare patterns, allkeys as a flag.
        let user = Value::Array(vec![
            b("flags"),
            Value::Array(vec![b("on"), b("allkeys")]),
            b("passwords"),
            Value::Array(vec![]),
            b("commands"),
            b("+@all"),
            b("keys"),
            Value::Array(vec![b("*")]),
        ]);
        assert_eq!(template_rules(&user).unwrap(), ["allkeys", "~*", "+@all"]);
        let with_selectors = Value::Array(vec![
            b("commands"),
            b("+get"),
            b("selectors"),
            Value::Array(vec![Value::Array(vec![])]),
        ]);
        assert!(template_rules(&with_selectors).is_err());
        assert!(template_rules(&Value::Int(3)).is_err());
    }

    #[test]
    fn client_list_counts_only_the_users_other_connections() {
        let list = "id=3 addr=127.0.0.1:1 name= user=app_a cmd=ping\n\
                    id=4 addr=127.0.0.1:2 name= user=app_ab cmd=ping\n\
                    id=5 addr=127.0.0.1:3 name= user=admin cmd=client|list\n\
                    id=6 addr=127.0.0.1:4 name= user=app_a cmd=get\n";
        assert_eq!(count_connections(list, "app_a", 5), 2);
        assert_eq!(count_connections(list, "admin", 5), 0);
        assert_eq!(count_connections(list, "app", 5), 0);
    }

    #[test]
    fn the_hash_is_what_redis_takes() {
        // SHA-256 of "hello".
        assert_eq!(
            password_hash("hello"),
            "#2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
