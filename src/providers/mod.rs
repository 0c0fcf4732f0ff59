//! Credential providers: one file each, one trait. Providers never touch the
//! Kubernetes API; they get their configuration validated and their Secrets resolved.

pub mod client;
mod convex;
mod convox;
pub mod endpoint;
mod http;
mod postgres;
mod random;
mod supabase;

pub use client::{HttpClient, HttpSettings};
pub use random::RandomProvider;

use crate::api::{ProviderSpec, SecretKeyRef, Strategy};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;

/// A credential a provider issued. Values are `SecretString`s: redacted in Debug,
/// zeroized on drop.
#[derive(Debug)]
pub struct Credential {
    /// The provider's id for it (used to revoke it later).
    pub id: String,
    /// Named outputs, e.g. `apiKey`, or `username` + `password` + `uri`.
    pub outputs: BTreeMap<&'static str, SecretString>,
    /// The output that is the secret itself; the fingerprint is taken of it.
    pub secret_output: &'static str,
}

impl Credential {
    /// The keyed fingerprint of the secret output (`hmac-sha256:` + 8 hex digits;
    /// see [`crate::rotation::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        let secret = self
            .outputs
            .get(self.secret_output)
            .map(|s| s.expose_secret())
            .unwrap_or("");
        crate::rotation::fingerprint(secret)
    }

    /// A credential with one output.
    pub fn single(id: impl Into<String>, output: &'static str, value: SecretString) -> Self {
        Self {
            id: id.into(),
            outputs: BTreeMap::from([(output, value)]),
            secret_output: output,
        }
    }
}

/// Where a credential is kept the moment it exists, before anything uses it.
#[async_trait]
pub trait Stash: Send + Sync {
    async fn keep(&self, credential: &Credential) -> Result<(), String>;
}

/// A stash that keeps nothing (tests, providers that need none).
pub struct NoStash;

#[async_trait]
impl Stash for NoStash {
    async fn keep(&self, _: &Credential) -> Result<(), String> {
        Ok(())
    }
}

/// One issue call.
pub struct IssueRequest<'a> {
    /// The credential's name (deterministic per rotation; see [`Provider::credential_name`]).
    pub name: &'a str,
    /// The slot it goes into (PostgreSQL picks the user by it).
    pub slot: u8,
    pub stash: &'a dyn Stash,
}

/// What a credential name is made of.
pub struct NameParts<'a> {
    /// The SecretRotation's uid.
    pub uid: &'a str,
    /// The number of the rotation that issues it.
    pub sequence: u64,
    /// When that rotation started (recorded in status before the issue call).
    pub started_at: DateTime<Utc>,
}

/// The result of a revoke call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// The provider no longer knows the credential (e.g. 404): as good as revoked.
    AlreadyGone,
    /// The provider has no way to revoke (an http provider without `revoke`): the
    /// credential stays valid at the vendor.
    Unsupported,
}

/// Why a provider call failed. Messages come from the vendor or from rotor, never
/// contain a credential value, and are shown to users in status and Events.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("invalid provider configuration: {0}")]
    InvalidConfig(String),
    #[error("the provider rejected the admin credential ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("the provider refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("rate limited by the provider: {0}")]
    RateLimited(String),
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider answered something rotor cannot read: {0}")]
    BadResponse(String),
    #[error("the new credential failed its test: {0}")]
    TestFailed(String),
    #[error("keeping the new credential failed: {0}")]
    Stash(String),
}

impl ProviderError {
    /// Adds how many attempts were made.
    pub fn after_retries(self, attempts: u32) -> Self {
        self.with_note(format!("gave up after {attempts} attempts"))
    }

    /// The same error with `f` applied to its message (scrubbing).
    pub fn map_message(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            Self::InvalidConfig(m) => Self::InvalidConfig(f(&m)),
            Self::Unauthorized { status, message } => Self::Unauthorized {
                status,
                message: f(&message),
            },
            Self::Rejected { status, message } => Self::Rejected {
                status,
                message: f(&message),
            },
            Self::RateLimited(m) => Self::RateLimited(f(&m)),
            Self::Unavailable(m) => Self::Unavailable(f(&m)),
            Self::BadResponse(m) => Self::BadResponse(f(&m)),
            Self::TestFailed(m) => Self::TestFailed(f(&m)),
            Self::Stash(m) => Self::Stash(f(&m)),
        }
    }

    /// Appends a note to the message.
    pub fn with_note(self, note: String) -> Self {
        match self {
            Self::RateLimited(m) => Self::RateLimited(format!("{m} ({note})")),
            Self::Unavailable(m) => Self::Unavailable(format!("{m} ({note})")),
            other => other,
        }
    }
}

/// Issue, test, revoke and list credentials at one provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Short name (random, supabase, ...), for status and metrics.
    fn kind(&self) -> &'static str;
    /// The outputs a credential carries; `secretsMapping` may only name these.
    fn outputs(&self) -> &'static [&'static str];
    /// The output that is the secret itself (fingerprinted).
    fn secret_output(&self) -> &'static str;
    /// The strategy used when the spec does not name one.
    fn default_strategy(&self) -> Strategy {
        Strategy::DualPhase
    }
    /// Whether the provider can run `strategy`.
    fn supports(&self, strategy: Strategy) -> bool {
        strategy == self.default_strategy()
    }
    /// The name of the credential a rotation issues: deterministic, so a resumed
    /// rotation finds what a dead one created, and recognisable as rotor's.
    fn credential_name(&self, parts: &NameParts<'_>) -> String {
        crate::rotation::credential_name(parts.uid, parts.sequence)
    }
    /// The name prefix of every credential this resource issues (for listing).
    fn name_prefix(&self, uid: &str) -> String {
        crate::rotation::credential_name(uid, 0)
            .trim_end_matches('0')
            .to_string()
    }
    /// The admin credential this provider replaces with each new credential (Convox:
    /// the rack key); rotor writes the new value there after a rotation.
    fn replaces_admin_credential(&self) -> Option<&SecretKeyRef> {
        None
    }
    /// Every secret value the provider holds (admin tokens, header values): scrubbed
    /// from its error messages, with their encoded forms, before they leave it.
    fn known_values(&self) -> Vec<SecretString> {
        Vec::new()
    }
    /// Issues a new credential.
    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError>;
    /// Proves that `credential` works.
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError>;
    /// Revokes the credential with provider id `id`.
    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError>;
    /// Ids of the credentials at the provider that this resource issued: `prefix` is
    /// [`Provider::name_prefix`], and only names of exactly this provider's own format
    /// after it count (a neighbour's `shop-payments-…` is not `shop`'s, nor is a
    /// human's `shop-admin`).
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError>;
}

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
        ProviderSpec::Postgres(_) => (&["username", "password", "uri"], "password"),
    }
}

/// Builds the provider a spec names. Fails on configuration the schema cannot catch.
/// Every call of the provider it returns is bounded by `--provider-timeout` and has
/// the provider's secret values scrubbed from its errors.
pub fn build(
    spec: &ProviderSpec,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Provider>, ProviderError> {
    let inner: Box<dyn Provider> = match spec {
        ProviderSpec::Random(r) => Box::new(RandomProvider::new(r)?),
        ProviderSpec::Supabase(s) => Box::new(supabase::SupabaseProvider::new(s, ctx)?),
        ProviderSpec::Convex(s) => Box::new(convex::ConvexProvider::new(s, ctx)?),
        ProviderSpec::Convox(s) => Box::new(convox::ConvoxProvider::new(s, ctx)?),
        ProviderSpec::Http(s) => Box::new(http::HttpProvider::new(s, ctx)?),
        ProviderSpec::Postgres(s) => Box::new(postgres::PostgresProvider::new(s, ctx)?),
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

/// Whether `name` is one this provider issued under `prefix`: the prefix, then only
/// the digits rotor puts there (a sequence number or a unix time).
pub fn own_name(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit())
    })
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
        let values: Vec<&str> = credential
            .outputs
            .values()
            .map(|s| s.expose_secret())
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
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        self.bounded("listing credentials", &[], self.inner.list_own(prefix))
            .await
    }
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
    fn own_names_are_exact() {
        assert!(own_name("shop-", "shop-1700000000000"));
        assert!(!own_name("shop-", "shop-payments-1700000000000"));
        assert!(!own_name("shop-", "shop-admin"));
        assert!(!own_name("shop-", "shop-"));
        assert!(!own_name("rotor-5f0c3a9e-", "rotor-5f0c3a9e-7x"));
        assert!(own_name("rotor-5f0c3a9e-", "rotor-5f0c3a9e-7"));
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
            Err(ProviderError::TestFailed(format!(
                "GET /check?k={v} refused; admin tok-admin-1"
            )))
        }
        async fn revoke(&self, _: &str) -> Result<Revocation, ProviderError> {
            std::future::pending().await
        }
        async fn list_own(&self, _: &str) -> Result<Vec<String>, ProviderError> {
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
        let c = Credential::single("id", "v", SecretString::from("new-value-42"));
        let err = p.test(&c).await.unwrap_err().to_string();
        assert!(
            !err.contains("new-value-42") && !err.contains("tok-admin-1"),
            "{err}"
        );
    }
}
