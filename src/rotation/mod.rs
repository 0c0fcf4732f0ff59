//! The pure heart of rotor: the dual-phase slot state machine, the schedule, the
//! provider contract and the order of provider calls in one rotation, and how
//! credentials are named and fingerprinted. No Kubernetes and no HTTP here: everything
//! is a function of its inputs, so it is tested without any server.

mod engine;
mod naming;
mod provider;
pub mod revocation;
mod schedule;
mod slots;

pub use engine::{Observer, RotationError, Silent, Step, execute};
pub use naming::{
    CREDENTIAL_PREFIX, FINGERPRINT_PREFIX, LEGACY_FINGERPRINT_PREFIX, MAX_LABEL_VALUE, MAX_NAME,
    bounded_name, clipped, credential_name, fingerprint, fingerprint_matches, has_fingerprint_key,
    hmac_sha256, keyed_fingerprint, label_value, legacy_fingerprint, one_line, own_name,
    set_fingerprint_key,
};
pub use provider::{
    Credential, IssueRequest, NameParts, NoStash, Provider, ProviderError, Revocation, Stash,
    StashError, Usage,
};
pub use revocation::{ConsumerState, RevocationPolicy, Verdict};
pub use schedule::{
    Decision, Observed, Schedule, Trigger, decide, next_rotation_at, retry_at, retry_backoff,
};
pub use slots::{RotationPlan, Slot, SlotPair};

/// The shortest interval rotor accepts, so that a typo cannot start a rotation storm.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
