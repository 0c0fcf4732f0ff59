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
    /// `sha256:` + 8 hex digits of the secret output.
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
    /// Issues a new credential.
    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError>;
    /// Proves that `credential` works.
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError>;
    /// Revokes the credential with provider id `id`.
    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError>;
    /// Ids of the credentials at the provider whose name starts with `prefix`.
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

/// Builds the provider a spec names. Fails on configuration the schema cannot catch.
pub fn build(
    spec: &ProviderSpec,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Provider>, ProviderError> {
    Ok(match spec {
        ProviderSpec::Random(r) => Box::new(RandomProvider::new(r)?),
        ProviderSpec::Supabase(s) => Box::new(supabase::SupabaseProvider::new(s, ctx)?),
        ProviderSpec::Convex(s) => Box::new(convex::ConvexProvider::new(s, ctx)?),
        ProviderSpec::Convox(s) => Box::new(convox::ConvoxProvider::new(s, ctx)?),
        ProviderSpec::Http(s) => Box::new(http::HttpProvider::new(s, ctx)?),
        ProviderSpec::Postgres(s) => Box::new(postgres::PostgresProvider::new(s, ctx)?),
    })
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
