//! Credential providers: one file each, one trait. Providers never touch the
//! Kubernetes API; they get their configuration already validated and resolved.

mod random;

pub use random::RandomProvider;

use crate::api::{ProviderSpec, Strategy};
use async_trait::async_trait;
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
}

/// The result of a revoke call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// The provider no longer knows the credential (e.g. 404): as good as revoked.
    AlreadyGone,
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
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider answered something rotor cannot read: {0}")]
    BadResponse(String),
    #[error("the new credential failed its test: {0}")]
    TestFailed(String),
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
    /// Issues a new credential named `name` (deterministic per rotation).
    async fn issue(&self, name: &str) -> Result<Credential, ProviderError>;
    /// Proves that `credential` works.
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError>;
    /// Revokes the credential with provider id `id`.
    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError>;
    /// Ids of the credentials at the provider whose name starts with `prefix`.
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError>;
}

/// Builds the provider a spec names. Fails on configuration the schema cannot catch.
pub fn build(spec: &ProviderSpec) -> Result<Box<dyn Provider>, ProviderError> {
    Ok(match spec {
        ProviderSpec::Random(r) => Box::new(RandomProvider::new(r)?),
    })
}
