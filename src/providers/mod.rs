//! Credential providers: one file each, each implementing the provider contract of
//! [`crate::rotation::Provider`]. Providers never touch the Kubernetes API; they get
//! their configuration validated and their Secrets resolved.

mod aws_iam;
pub mod client;
mod convex;
mod convox;
pub mod endpoint;
mod http;
mod mysql;
mod postgres;
mod random;
mod redis;
mod supabase;

pub use client::{HttpClient, HttpSettings, Observer};
pub use random::RandomProvider;

use crate::api::{ProviderSpec, SecretKeyRef, Strategy};
use crate::rotation::{Credential, IssueRequest, NameParts, Provider, ProviderError, Revocation};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;

/// Resolved Secret values a provider needs, by (Secret name, key).
#[derive(Default)]
pub struct Secrets(pub BTreeMap<(String, String), SecretString>);

impl Secrets {
    pub fn get(&self, r: &SecretKeyRef) -> Result<&SecretString, ProviderError> {
        self.0.get(&(r.name.clone(), r.key.clone())).ok_or_else(|| {
            ProviderError::InvalidConfig(format!("Secret {:?} has no key {:?}", r.name, r.key))
        })
    }

    /// The value a crashed single-phase rotation left under `<key>.pending`.
    pub fn pending(&self, r: &SecretKeyRef) -> Option<&SecretString> {
        self.0.get(&(r.name.clone(), pending_key(&r.key)))
    }
}

/// Where a single-phase provider's next admin credential waits while it is applied.
pub fn pending_key(key: &str) -> String {
    format!("{key}.pending")
}

/// What building a provider needs besides its spec.
pub struct BuildContext<'a> {
    pub secrets: &'a Secrets,
    pub http: &'a HttpClient,
    /// The SecretRotation's uid (for default name prefixes).
    pub uid: &'a str,
}

/// The outputs of each provider kind and the one that is the secret, known from the
/// spec alone (restoring a Secret needs no admin Secret and builds no provider). A unit test
/// holds it equal to each built provider's `outputs()` / `secret_output()`.
pub fn outputs_of(spec: &ProviderSpec) -> (&'static [&'static str], &'static str) {
    match spec {
        ProviderSpec::Random(_) => (&["value"], "value"),
        ProviderSpec::Supabase(_) | ProviderSpec::Convox(_) | ProviderSpec::Http(_) => {
            (&["apiKey"], "apiKey")
        }
        ProviderSpec::Convex(_) => (&["accessKey"], "accessKey"),
        ProviderSpec::Postgres(_) | ProviderSpec::Redis(_) => {
            (&["username", "password", "uri"], "password")
        }
        ProviderSpec::AwsIam(_) => (&["accessKeyId", "secretAccessKey"], "secretAccessKey"),
        ProviderSpec::Mysql(_) => (mysql::OUTPUTS, "password"),
    }
}

/// Builds the provider a spec names. Fails on configuration the schema cannot catch.
/// Every call of the provider it returns is bounded by `--provider-timeout` and has
/// the provider's secret values scrubbed from its errors.
pub fn build(
    spec: &ProviderSpec,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Provider>, ProviderError> {
    // Requests are observed under the provider's kind.
    let http = ctx.http.for_provider(spec.kind());
    let ctx = &BuildContext {
        http: &http,
        ..*ctx
    };
    let inner: Box<dyn Provider> = match spec {
        ProviderSpec::Random(r) => Box::new(RandomProvider::new(r)?),
        ProviderSpec::Supabase(s) => Box::new(supabase::SupabaseProvider::new(s, ctx)?),
        ProviderSpec::Convex(s) => Box::new(convex::ConvexProvider::new(s, ctx)?),
        ProviderSpec::Convox(s) => Box::new(convox::ConvoxProvider::new(s, ctx)?),
        ProviderSpec::Http(s) => Box::new(http::HttpProvider::new(s, ctx)?),
        ProviderSpec::Postgres(s) => Box::new(postgres::PostgresProvider::new(s, ctx)?),
        ProviderSpec::Redis(s) => Box::new(redis::RedisProvider::new(s, ctx)?),
        ProviderSpec::AwsIam(s) => Box::new(aws_iam::AwsIamProvider::new(s, ctx)?),
        ProviderSpec::Mysql(s) => Box::new(mysql::MysqlProvider::new(s, ctx)?),
    };
    let mut known = inner.known_values();
    // Every Secret value the resource resolved (admin credentials, header values).
    known.extend(ctx.secrets.0.values().cloned());
    Ok(Box::new(Bounded {
        inner,
        timeout: ctx.http.settings.provider_timeout,
        known,
    }))
}

/// Replaces every value in `values` (as is, percent-encoded, JSON-escaped and
/// base64-encoded) in `text` with `[redacted]`. Values under 4 bytes are left: they
/// would redact ordinary words and are no secret anyway.
pub fn scrub(text: &str, values: &[&str]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let mut out = text.to_string();
    for value in values.iter().filter(|v| v.len() >= 4) {
        let json = serde_json::to_string(value).unwrap_or_default();
        let mut forms = vec![
            value.to_string(),
            utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
            utf8_percent_encode(value, NON_ALPHANUMERIC)
                .to_string()
                .replace("%20", "+"),
            json.trim_matches('"').to_string(),
            STANDARD.encode(value),
            STANDARD_NO_PAD.encode(value),
            URL_SAFE.encode(value),
            URL_SAFE_NO_PAD.encode(value),
        ];
        // Longest first, so a form containing another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        for form in forms.iter().filter(|f| f.len() >= 4) {
            out = out.replace(form.as_str(), "[redacted]");
        }
    }
    out
}

/// The provider every caller gets: each call bounded in time as a whole (retries and
/// polling included), errors scrubbed of every value the provider knows.
struct Bounded {
    inner: Box<dyn Provider>,
    timeout: std::time::Duration,
    known: Vec<SecretString>,
}

impl Bounded {
    async fn bounded<T>(
        &self,
        what: &str,
        extra: &[&str],
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Unavailable(format!(
                "{what} at {} did not finish within {} (--provider-timeout)",
                self.inner.kind(),
                humantime::format_duration(self.timeout)
            ))),
        };
        result.map_err(|e| {
            let mut values: Vec<&str> = self.known.iter().map(|s| s.expose_secret()).collect();
            values.extend_from_slice(extra);
            e.map_message(|m| scrub(m, &values))
        })
    }
}

#[async_trait]
impl Provider for Bounded {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn outputs(&self) -> &'static [&'static str] {
        self.inner.outputs()
    }
    fn secret_output(&self) -> &'static str {
        self.inner.secret_output()
    }
    fn default_strategy(&self) -> Strategy {
        self.inner.default_strategy()
    }
    fn supports(&self, strategy: Strategy) -> bool {
        self.inner.supports(strategy)
    }
    fn credential_name(&self, parts: &NameParts<'_>) -> String {
        self.inner.credential_name(parts)
    }
    fn name_prefix(&self, uid: &str) -> String {
        self.inner.name_prefix(uid)
    }
    fn replaces_admin_credential(&self) -> Option<&SecretKeyRef> {
        self.inner.replaces_admin_credential()
    }
    fn known_values(&self) -> Vec<SecretString> {
        self.known.clone()
    }
    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let credential = self
            .bounded("issuing a credential", &[], self.inner.issue(request))
            .await?;
        // Ids are shown everywhere (status, Events, the audit trail): an id that holds
        // the credential itself, or an admin token (an `idPath` pointing at the key, a
        // hostile vendor), would publish it.
        let secret = credential
            .outputs
            .get(credential.secret_output)
            .map(|s| s.expose_secret());
        let exposes = secret
            .into_iter()
            .chain(self.known.iter().map(|k| k.expose_secret()))
            .any(|v| v.len() >= 4 && credential.id.contains(v));
        if exposes {
            return Err(ProviderError::BadResponse(
                "the id the provider returned for the new credential contains a secret value (the credential or an admin token); rotor will not show it as an id: check idPath".into(),
            ));
        }
        Ok(credential)
    }
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        // The secret and every output that holds it (a `uri`); not the others (a
        // username, host, port or database), which would make "MySQL at [redacted]"
        // of every message.
        let secret = credential
            .outputs
            .get(credential.secret_output)
            .map(|s| s.expose_secret())
            .unwrap_or_default();
        let values: Vec<&str> = credential
            .outputs
            .values()
            .map(|s| s.expose_secret())
            .filter(|v| secret.is_empty() || v.contains(secret))
            .collect();
        self.bounded(
            "testing the new credential",
            &values,
            self.inner.test(credential),
        )
        .await
    }
    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        self.bounded("revoking a credential", &[], self.inner.revoke(id))
            .await
    }
    async fn in_use(
        &self,
        id: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::rotation::Usage, ProviderError> {
        self.bounded(
            "asking whether a credential is in use",
            &[],
            self.inner.in_use(id, since),
        )
        .await
    }
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        self.bounded("listing credentials", &[], self.inner.list_own(prefix))
            .await
    }
    fn lists_own(&self) -> bool {
        self.inner.lists_own()
    }
}

/// One session of a database provider (connect, login, its few statements) within
/// `timeout`: a server that accepts and then stalls fails the attempt instead of
/// holding a worker. `at` names the server (`PostgreSQL at host:port`).
async fn session<T>(
    at: &str,
    what: &str,
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::Unavailable(format!(
            "{at} did not finish {what} within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// A driver error and its causes ("authentication error: server did not use channel
/// binding"): drivers' own text often names only the kind. A cause already in the
/// text is not repeated; the walk is bounded (the chain comes from a library).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    for _ in 0..8 {
        let Some(err) = source else { break };
        let more = err.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = err.source();
    }
    text
}

/// The two users of a login provider (`kind`: postgres, mysql, redis): slot 0 and
/// slot 1 are `<username>_a` and `<username>_b`, or the two users `usernames` names.
fn two_users(
    kind: &str,
    username: &Option<String>,
    usernames: &Option<Vec<String>>,
) -> Result<[String; 2], ProviderError> {
    match (username, usernames) {
        (Some(base), None) => Ok([format!("{base}_a"), format!("{base}_b")]),
        (None, Some(list)) if list.len() == 2 && list[0] != list[1] => {
            Ok([list[0].clone(), list[1].clone()])
        }
        _ => Err(ProviderError::InvalidConfig(format!(
            "{kind}: set either username (users <username>_a and <username>_b) or usernames (two different users)"
        ))),
    }
}

/// A new login for `user` (outputs `username`, `password`, `uri` and `extra`), kept
/// in the stash before the caller sends anything to the server: whatever the server
/// takes is in the escrow first, so a crash in between loses nothing.
async fn stashed_login(
    request: &IssueRequest<'_>,
    user: &str,
    password: &SecretString,
    uri: String,
    extra: Vec<(&'static str, String)>,
) -> Result<Credential, ProviderError> {
    let mut outputs = BTreeMap::from([
        ("username", SecretString::from(user.to_string())),
        ("uri", SecretString::from(uri)),
        ("password", password.clone()),
    ]);
    outputs.extend(extra.into_iter().map(|(k, v)| (k, SecretString::from(v))));
    let credential = Credential {
        id: user.to_string(),
        outputs,
        secret_output: "password",
    };
    request
        .stash
        .keep(&credential)
        .await
        .map_err(ProviderError::Stash)?;
    Ok(credential)
}

/// A random alphanumeric string from the OS CSPRNG (Convox keys, PostgreSQL passwords).
pub fn random_alphanumeric(len: usize) -> SecretString {
    use rand::Rng;
    let value: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    SecretString::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::NoStash;

    #[test]
    fn outputs_of_matches_every_built_provider() {
        let http = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        let mut secrets = Secrets::default();
        secrets
            .0
            .insert(("a".into(), "k".into()), SecretString::from("admin-token"));
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let admin = serde_json::json!({"name": "a", "key": "k"});
        let url = "http://127.0.0.1:1";
        for spec in [
            serde_json::json!({"random": {}}),
            serde_json::json!({"supabase": {"projectRef": "abcdefghijklmnopqrst", "credentialsRef": admin, "baseUrl": url}}),
            serde_json::json!({"convex": {"credentialsRef": admin, "baseUrl": url}}),
            serde_json::json!({"convox": {"rackUrl": url, "credentialsRef": admin}}),
            serde_json::json!({"http": {"issue": {"url": format!("{url}/keys")}, "keyPath": "$.key"}}),
            serde_json::json!({"postgres": {"host": "127.0.0.1", "database": "d", "credentialsRef": admin, "username": "u"}}),
            serde_json::json!({"redis": {"host": "127.0.0.1", "credentialsRef": admin, "username": "u", "rules": "~app:* +@read"}}),
            serde_json::json!({"awsIam": {"userName": "app", "endpointUrl": url, "accessKeyIdRef": admin, "secretAccessKeyRef": admin}}),
            serde_json::json!({"mysql": {"host": "127.0.0.1", "database": "d", "sslMode": "disable", "credentialsRef": admin, "username": "u"}}),
        ] {
            let spec: ProviderSpec = serde_json::from_value(spec).unwrap();
            let provider = build(&spec, &ctx).unwrap();
            assert_eq!(
                outputs_of(&spec),
                (provider.outputs(), provider.secret_output()),
                "{}",
                spec.kind()
            );
        }
    }

    #[test]
    fn scrub_removes_every_form() {
        use base64::Engine as _;
        let key = "s3cr3t/k+y=v@lue";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let text = format!(
            "a {key} b {} c {b64} d {}",
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC),
            serde_json::to_string(key).unwrap()
        );
        let out = scrub(&text, &[key]);
        assert!(!out.contains("s3cr3t") && !out.contains(&b64), "{out}");
        assert!(!out.contains("s3cr3t%2F"), "{out}");
        assert_eq!(scrub("no values here", &["abc"]), "no values here");
    }

    struct Slow;

    #[async_trait]
    impl Provider for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn outputs(&self) -> &'static [&'static str] {
            &["v"]
        }
        fn secret_output(&self) -> &'static str {
            "v"
        }
        async fn issue(&self, _: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
            std::future::pending().await
        }
        async fn test(&self, c: &Credential) -> Result<(), ProviderError> {
            let v = c.outputs["v"].expose_secret();
            let others: Vec<String> = c
                .outputs
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose_secret()))
                .collect();
            Err(ProviderError::TestFailed(format!(
                "GET /check?k={v} refused; admin tok-admin-1; {}",
                others.join(" ")
            )))
        }
        async fn revoke(&self, _: &str) -> Result<Revocation, ProviderError> {
            std::future::pending().await
        }
        async fn list_own(&self, _: &str) -> Result<Vec<String>, ProviderError> {
            std::future::pending().await
        }
        async fn in_use(
            &self,
            _: &str,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<crate::rotation::Usage, ProviderError> {
            std::future::pending().await
        }
    }

    /// Issues a credential whose id is its own value.
    struct IdIsKey;

    #[async_trait]
    impl Provider for IdIsKey {
        fn kind(&self) -> &'static str {
            "idiskey"
        }
        fn outputs(&self) -> &'static [&'static str] {
            &["v"]
        }
        fn secret_output(&self) -> &'static str {
            "v"
        }
        async fn issue(&self, _: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
            Ok(Credential::single(
                "key-sk_live_1234",
                "v",
                SecretString::from("sk_live_1234"),
            ))
        }
        async fn test(&self, _: &Credential) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn revoke(&self, _: &str) -> Result<Revocation, ProviderError> {
            Ok(Revocation::Revoked)
        }
        async fn list_own(&self, _: &str) -> Result<Vec<String>, ProviderError> {
            Ok(Vec::new())
        }
        async fn in_use(
            &self,
            _: &str,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<crate::rotation::Usage, ProviderError> {
            Ok(crate::rotation::Usage::InUse {
                count: Some(3),
                last_used: None,
            })
        }
    }

    #[tokio::test]
    async fn usage_is_asked_of_the_provider_itself() {
        // The wrapper must forward it: the trait's default (Unknown) would make rotor
        // revoke a credential the provider says is in use.
        let p = Bounded {
            inner: Box::new(IdIsKey),
            timeout: std::time::Duration::from_secs(5),
            known: Vec::new(),
        };
        let usage = p.in_use("k", chrono::Utc::now()).await.unwrap();
        assert_eq!(usage.to_string(), "in use (3 sessions)");
    }

    /// The providers that can tell are asked through what `build` hands out: were the
    /// wrapper to drop `in_use`, the trait's default would answer Unknown for both.
    #[tokio::test]
    async fn built_postgres_and_http_providers_answer_usage_themselves() {
        use crate::rotation::Usage;
        let router = axum::Router::new().route(
            "/keys/{id}/usage",
            axum::routing::get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    axum::Json(serde_json::json!({"id": id, "sessions": 2}))
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let http = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            max_retries: 0,
            ..HttpSettings::default()
        });
        let mut secrets = Secrets::default();
        secrets
            .0
            .insert(("a".into(), "k".into()), SecretString::from("admin-token"));
        let ctx = BuildContext {
            secrets: &secrets,
            http: &http,
            uid: "uid",
        };
        let spec: ProviderSpec = serde_json::from_value(serde_json::json!({"http": {
            "issue": {"url": format!("{url}/keys")},
            "keyPath": "$.key",
            "usage": {"url": format!("{url}/keys/{{{{id}}}}/usage"), "countPath": "$.sessions"},
        }}))
        .unwrap();
        let usage = build(&spec, &ctx)
            .unwrap()
            .in_use("k1", chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!(
            usage,
            Usage::InUse {
                count: Some(2),
                last_used: None
            }
        );
        server.abort();
        // PostgreSQL: nothing listens on port 1, so only the provider's own answer
        // (it connects to count sessions) is an error; the default would be Unknown.
        let spec: ProviderSpec = serde_json::from_value(serde_json::json!({"postgres": {
            "host": "127.0.0.1", "port": 1, "database": "d", "sslMode": "disable",
            "credentialsRef": {"name": "a", "key": "k"}, "username": "u",
        }}))
        .unwrap();
        let err = build(&spec, &ctx)
            .unwrap()
            .in_use("u_a", chrono::Utc::now())
            .await
            .expect_err("the postgres provider itself was asked");
        assert!(
            matches!(&err, ProviderError::Unavailable(m) if m.contains("127.0.0.1:1")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_id_that_holds_the_credential_is_refused() {
        let p = Bounded {
            inner: Box::new(IdIsKey),
            timeout: std::time::Duration::from_secs(5),
            known: Vec::new(),
        };
        let request = IssueRequest {
            name: "n",
            slot: 0,
            stash: &NoStash,
        };
        let err = p.issue(&request).await.unwrap_err().to_string();
        assert!(err.contains("contains a secret value"), "{err}");
        assert!(!err.contains("sk_live_1234"), "{err}");
    }

    #[tokio::test]
    async fn every_call_is_bounded_and_scrubbed() {
        let p = Bounded {
            inner: Box::new(Slow),
            timeout: std::time::Duration::from_millis(100),
            known: vec![SecretString::from("tok-admin-1")],
        };
        let err = p
            .issue(&IssueRequest {
                name: "n",
                slot: 0,
                stash: &NoStash,
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within 100ms"), "{err}");
        assert!(p.revoke("x").await.is_err());
        assert!(p.list_own("x").await.is_err());
        assert!(p.in_use("x", chrono::Utc::now()).await.is_err());
        let c = Credential::single("id", "v", SecretString::from("new-value-42"));
        let err = p.test(&c).await.unwrap_err().to_string();
        assert!(
            !err.contains("new-value-42") && !err.contains("tok-admin-1"),
            "{err}"
        );
        // Outputs that hold the secret go too; the others (where, as whom) stay.
        let c = Credential {
            id: "app_a".into(),
            outputs: BTreeMap::from([
                ("v", SecretString::from("pw-secret-77")),
                (
                    "uri",
                    SecretString::from("mysql://app_a:pw-secret-77@db.example:3306/app"),
                ),
                ("username", SecretString::from("app_a")),
                ("host", SecretString::from("db.example")),
            ]),
            secret_output: "v",
        };
        let err = p.test(&c).await.unwrap_err().to_string();
        assert!(
            !err.contains("pw-secret-77") && !err.contains("mysql://"),
            "{err}"
        );
        assert!(
            err.contains("host=db.example") && err.contains("username=app_a"),
            "{err}"
        );
    }
}
