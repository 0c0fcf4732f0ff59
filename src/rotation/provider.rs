//! The provider contract: what a provider is asked to do in a rotation, what it hands
//! back, and how it fails. `providers/` implements it; the vault stores what it
//! defines; the rotation core calls it in its safe order.

use crate::api::{SecretKeyRef, Strategy};
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
    /// see [`super::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        let secret = self
            .outputs
            .get(self.secret_output)
            .map(|s| s.expose_secret())
            .unwrap_or("");
        super::fingerprint(secret)
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
    async fn keep(&self, credential: &Credential) -> Result<(), StashError>;
}

/// Why a new credential could not be kept. The issue call fails with it: nothing may
/// use a credential that is kept nowhere.
#[derive(Debug, thiserror::Error)]
pub enum StashError {
    /// The vault write failed.
    #[error("escrow: {0}")]
    Vault(String),
    /// The pending copy of a single-phase provider's next admin credential could not
    /// be written into its Secret.
    #[error("{0}")]
    AdminSecret(String),
}

/// A stash that keeps nothing (tests, providers that need none).
pub struct NoStash;

#[async_trait]
impl Stash for NoStash {
    async fn keep(&self, _: &Credential) -> Result<(), StashError> {
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

/// Whether a credential is still used, as far as the provider can tell. Never names of
/// clients or their data: counts and times only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// The provider cannot tell (most cannot): rotor does not wait on it.
    Unknown,
    /// Not in use.
    Unused,
    /// In use: `sessions` open now (PostgreSQL) or uses counted by the vendor, and/or
    /// the last use the vendor saw.
    InUse {
        count: Option<u64>,
        last_used: Option<DateTime<Utc>>,
    },
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("usage unknown"),
            Self::Unused => f.write_str("unused"),
            Self::InUse { count, last_used } => {
                f.write_str("in use")?;
                if let Some(n) = count {
                    write!(f, " ({n} session{})", if *n == 1 { "" } else { "s" })?;
                }
                if let Some(t) = last_used {
                    write!(f, " (last used {})", t.to_rfc3339())?;
                }
                Ok(())
            }
        }
    }
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
    Stash(#[from] StashError),
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
            Self::Stash(StashError::Vault(m)) => Self::Stash(StashError::Vault(f(&m))),
            Self::Stash(StashError::AdminSecret(m)) => Self::Stash(StashError::AdminSecret(f(&m))),
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
        super::credential_name(parts.uid, parts.sequence)
    }
    /// The name prefix of every credential this resource issues (for listing).
    fn name_prefix(&self, uid: &str) -> String {
        super::credential_name(uid, 0)
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
    /// Whether the credential with provider id `id`, which stopped being active at
    /// `since`, is still used. Asked before rotor revokes it; a provider that cannot
    /// tell answers [`Usage::Unknown`] (the default) and is not waited for.
    async fn in_use(&self, id: &str, since: DateTime<Utc>) -> Result<Usage, ProviderError> {
        let _ = (id, since);
        Ok(Usage::Unknown)
    }
    /// Ids of the credentials at the provider that this resource issued: `prefix` is
    /// [`Provider::name_prefix`], and only names of exactly this provider's own format
    /// after it count (a neighbour's `shop-payments-…` is not `shop`'s, nor is a
    /// human's `shop-admin`).
    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError>;
    /// Whether [`Provider::list_own`] can ever find anything: a provider that keeps
    /// nothing at the vendor (random), replaces in place (Convox) or has no list
    /// request configured (http) is never swept, which costs no API request.
    fn lists_own(&self) -> bool {
        true
    }
}
