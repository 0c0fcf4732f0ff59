//! `SecretRotation.status`: what rotor did, for people and for tools such as Argo CD.
//! Never a credential value: slot ids and fingerprints only.

use super::Strategy;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a SecretRotation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRotationStatus {
    /// Pending, Rotating, Success or Failed.
    #[serde(default)]
    pub rotation_status: RotationPhase,

    /// The provider in use (random, supabase, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,

    /// The strategy in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,

    /// The slot (0 or 1) whose credential is in the target Secret.
    #[serde(default)]
    #[schemars(range(max = 1))]
    pub active_index: u8,

    /// The two credential slots: ids and fingerprints, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotStatus>,

    /// When rotor last started a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_attempted_at: Option<DateTime<Utc>>,

    /// When a rotation last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<DateTime<Utc>>,

    /// What happened last, in words.
    #[serde(default)]
    pub last_rotation_message: String,

    /// When rotor will rotate next (or retry a failed rotation). Unset when only manual
    /// rotation is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<DateTime<Utc>>,

    /// Failed attempts since the last successful rotation.
    #[serde(default)]
    pub failed_attempts: u32,

    /// Completed rotations.
    #[serde(default)]
    pub rotation_count: u64,

    /// The last `rotor.dev/rotate` annotation value that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rotate_token: Option<String>,

    /// The last `rotor.dev/revoke` annotation value that was acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_revoke_token: Option<String>,

    /// The escrow holding this resource's issued credentials (encrypted): the Secret
    /// `rotor-escrow-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<VaultStatus>,

    /// A rotation that was started and has not completed; a restarted operator
    /// resumes it instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightRotation>,

    /// The `rotor.dev/revoke` token of an emergency that has not completed: set at its
    /// first attempt, cleared once every older credential is gone at the vendor.
    /// Until then the emergency is retried as an emergency (with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_token: Option<String>,

    /// Credentials an emergency revoke has not revoked yet: still valid at the vendor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_revocations: Vec<PendingRevocation>,

    /// Which provider issued the slots' credentials (kind and endpoint, e.g.
    /// `supabase:https://api.supabase.com/abcdefghijklmnopqrst`). When the spec names
    /// another, rotor never asks the new provider to revoke the old ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,

    /// The Secret rotor writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secret: Option<String>,

    /// The consumers of the last rotation: restarted, and how far their rollout is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<ConsumersStatus>,

    /// The metadata.generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing and Degraded, in metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The last rotation's audit records (issue, test, activate) that are not in the
    /// escrow's trail yet: written with the flip, in the same status write, and moved
    /// into the escrow by its next write. `rotor audit` shows both. At most 16
    /// records, the newest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audit_tail: Vec<AuditRecord>,
}

/// How many audit records `status.auditTail` holds at most.
pub const AUDIT_TAIL_LIMIT: usize = 16;

/// One audit record: never a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    /// schedule, annotation, cli, operator (resume, sweep, initial), keys-rotate.
    pub actor: String,
    /// issue, test, activate, revoke, failure, key-rotation, restore.
    pub action: String,
    /// The credential's id at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The phase of the rotation lifecycle.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RotationPhase {
    /// Nothing issued yet.
    #[default]
    Pending,
    /// A rotation is under way.
    Rotating,
    /// The last rotation completed.
    Success,
    /// The last rotation failed or the spec is invalid; see lastRotationMessage.
    Failed,
}

/// One credential slot.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotStatus {
    /// 0 or 1.
    #[schemars(range(max = 1))]
    pub index: u8,
    /// The credential's id at the provider.
    pub id: String,
    /// `sha256:` and the first 8 hex digits of the SHA-256 of the secret value.
    pub fingerprint: String,
    /// When the credential was issued.
    pub issued_at: DateTime<Utc>,
    /// active (in the target Secret), previous (still valid, kept for consumers that
    /// have not reloaded) or revoked (no longer valid, never handed out again).
    pub state: SlotState,
    /// When rotor revoked it (or condemned it: a rotation that revokes it has started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a slot's credential is doing.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SlotState {
    /// In the target Secret; consumers use it.
    Active,
    /// The one before; still valid until the next rotation revokes it.
    Previous,
    /// Revoked (or being revoked): never in the target Secret again.
    Revoked,
}

/// The consumers of one rotation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumersStatus {
    /// The rotation (rotationCount) they were restarted for.
    pub rotation: u64,
    /// The `rotor.dev/restartedAt` token naming that rotation.
    pub token: String,
    /// When the credential before it stopped being active.
    pub since: DateTime<Utc>,
    /// Restarting, RollingOut, RolledOut or Stuck.
    pub phase: ConsumerPhase,
    /// Each consumer and how far it is (at most 64).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,
    /// What the provider said about the previous credential's use, when it can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// Set once the wait passed maxWait (a `ConsumerRolloutStuck` Event was published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_since: Option<DateTime<Utc>>,
    /// Set when rotor could not find every consumer (more than 64 match, discovery
    /// stopped, a listing failed): why. Consumers it does not follow may still hold
    /// the previous credential, so its revocation waits for revocation.maxWait and
    /// then does what onTimeout says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// How far the consumers of a rotation are.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConsumerPhase {
    /// The restart is about to be written.
    Restarting,
    /// Restarted; not every consumer has rolled out yet.
    RollingOut,
    /// Every consumer runs only pods started after the rotation.
    RolledOut,
    /// A consumer did not roll out within revocation.maxWait.
    Stuck,
}

/// One consumer's rollout.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Deployment, StatefulSet, DaemonSet or Rollout.
    pub kind: super::WorkloadKind,
    pub name: String,
    /// The workload's metadata.generation once the restart was written: rolled out
    /// means its controller has observed this generation (or a later one) and finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// How many restarts rotor wrote to it for this rotation: more than one when its
    /// pod template lost the rotation's token before it rolled out (a rollback).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Whether it has rolled out.
    pub rolled_out: bool,
    /// How far it is, e.g. `2 of 3 updated replicas are available`.
    #[serde(default)]
    pub message: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a rotation starts.
// On the wire (`status.inFlight.trigger`) the words of `as_str`; the schema stays a
// plain string (see `plain_string`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// Nothing issued yet.
    Initial,
    /// A rotation was started and not completed (the operator restarted).
    Resume,
    /// A new `rotor.dev/rotate` token.
    Manual,
    /// The target Secret is gone or lacks a key.
    TargetMissing,
    /// The schedule says so.
    Schedule,
    /// The last attempt failed and its backoff has elapsed.
    Retry,
    /// A new `rotor.dev/revoke` token: replace the credential and revoke both old slots.
    Emergency,
}

impl Trigger {
    /// The word used in status and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Resume => "resume",
            Self::Manual => "manual",
            Self::TargetMissing => "targetMissing",
            Self::Schedule => "schedule",
            Self::Retry => "retry",
            Self::Emergency => "emergency",
        }
    }
}

/// A string, no more: the schema a field had before its type became an enum.
fn plain_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string" })
}

/// A started rotation, recorded before rotor acts so a restart resumes it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightRotation {
    /// The slot being filled.
    #[schemars(range(max = 1))]
    pub target_index: u8,
    /// The deterministic name of the credential being issued.
    pub credential_name: String,
    /// What started it: initial, resume, manual, targetMissing, schedule, retry or
    /// emergency.
    #[schemars(schema_with = "plain_string")]
    pub trigger: Trigger,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// A credential rotor was asked to revoke and has not revoked yet.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRevocation {
    /// The credential's id at the provider.
    pub id: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Why it is still valid (the provider's last answer).
    pub reason: String,
}

/// A metav1.Condition.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing, Degraded or Stale.
    // A string on the wire: conditions are open in Kubernetes (another tool may add its
    // own type), and one foreign condition must not make the object unreadable. rotor
    // writes and finds its own through [`ConditionType`].
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    #[schemars(schema_with = "plain_string")]
    pub status: ConditionStatus,
    /// A CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When status last changed.
    pub last_transition_time: DateTime<Utc>,
    /// The generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// The conditions rotor sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
    /// The active credential is older than spec.maxAge.
    Stale,
}

impl ConditionType {
    pub const ALL: [Self; 4] = [Self::Ready, Self::Progressing, Self::Degraded, Self::Stale];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Stale => "Stale",
        }
    }
}

// A condition's status, as metav1.Condition has it. A word that is none of these (only
// a hand-edited status can hold one) reads as Unknown.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    #[serde(other)]
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(on: bool) -> Self {
        if on { Self::True } else { Self::False }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Compares with the word a user sees (`"True"`).
impl PartialEq<&str> for ConditionStatus {
    fn eq(&self, word: &&str) -> bool {
        self.as_str() == *word
    }
}

impl SecretRotationStatus {
    /// The condition of type `type_`, when set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }
}

/// What status says about the escrow.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultStatus {
    /// Entries (credentials kept, including revoked ones awaiting expiry).
    pub entries: u32,
    /// An entry that cannot be opened, e.g. `key_version_unavailable` when its KEK
    /// version was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_keep_their_words_on_the_wire() {
        use Trigger as T;
        for t in [
            T::Initial,
            T::Resume,
            T::Manual,
            T::TargetMissing,
            T::Schedule,
            T::Retry,
            T::Emergency,
        ] {
            let word = serde_json::to_value(t).unwrap();
            assert_eq!(
                word,
                t.as_str(),
                "status, Events and the audit say the same"
            );
            assert_eq!(serde_json::from_value::<Trigger>(word).unwrap(), t);
        }
        for c in [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        // A word metav1.Condition does not have reads as Unknown, not as an error
        // that would make the whole object unreadable.
        let odd: ConditionStatus = serde_json::from_value("Maybe".into()).unwrap();
        assert_eq!(odd, ConditionStatus::Unknown);
    }
}
