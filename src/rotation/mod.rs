//! The pure heart of rotor: the dual-phase slot state machine, the schedule, and the
//! order of provider calls in one rotation. No Kubernetes and no HTTP here: everything
//! is a function of its inputs, so it is tested without any server.

mod engine;
mod schedule;
mod slots;

pub use engine::{Observer, RotationError, Silent, Step, execute};
pub use schedule::{
    Decision, Observed, Schedule, Trigger, decide, next_rotation_at, retry_backoff,
};
pub use slots::{RotationPlan, Slot, SlotPair};

use sha2::{Digest, Sha256};

/// The shortest interval rotor accepts, so that a typo cannot start a rotation storm.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// `sha256:` and the first 8 hex digits of the SHA-256 of `value`: enough to tell
/// credentials apart and to check a Secret by hand, useless for recovering the value.
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    format!("sha256:{}", hex::encode(&digest[..4]))
}

/// The deterministic name of the credential issued by rotation number `sequence` of
/// the resource with `uid`: a resumed rotation issues under the same name, and every
/// credential rotor creates starts with [`CREDENTIAL_PREFIX`].
pub fn credential_name(uid: &str, sequence: u64) -> String {
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!(
        "{CREDENTIAL_PREFIX}{}-{sequence}",
        short.to_ascii_lowercase()
    )
}

/// Prefix of every credential name rotor issues.
pub const CREDENTIAL_PREFIX: &str = "rotor-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_prefix() {
        // printf abc | sha256sum → ba7816bf...
        assert_eq!(fingerprint("abc"), "sha256:ba7816bf");
    }

    #[test]
    fn credential_names_are_deterministic_and_prefixed() {
        let uid = "5f0c3a9e-1b2c-4d5e-8f90-0123456789ab";
        assert_eq!(credential_name(uid, 7), "rotor-5f0c3a9e-7");
        assert_eq!(credential_name(uid, 7), credential_name(uid, 7));
        assert_ne!(credential_name(uid, 7), credential_name(uid, 8));
    }
}
