//! `spec.consumers`, `spec.revocation`, `spec.maxAge`, `spec.notify`: who reads the
//! target Secret, when the previous credential may be revoked, and who is told.

use super::SecretKeyRef;
use super::spec::DNS1123_SUBDOMAIN;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Duration;

/// The most workloads `consumers.workloads` may name.
pub const MAX_NAMED_WORKLOADS: usize = 32;
/// The most workloads one SecretRotation restarts and follows (named, selected and
/// discovered together); more are refused with a clear message.
pub const MAX_CONSUMERS: usize = 64;

/// The pod-template annotation rotor sets to restart a consumer. Its value names the
/// rotations it restarts for (never a wall-clock second).
pub const RESTARTED_AT_ANNOTATION: &str = "rotor.dev/restartedAt";

/// The most restarts rotor writes to one workload for one rotation. A workload whose
/// pod template loses the rotation's token before it has rolled out (a `kubectl
/// rollout undo`, a replace) may run pods from before the rotation again, so it is
/// restarted again — at most this many writes in all; then it waits for
/// `revocation.maxWait` like any stuck consumer.
pub const MAX_RESTARTS: u32 = 3;

/// The workloads that read the target Secret. After each rotation rotor restarts them
/// (one pod-template annotation, `rotor.dev/restartedAt`) and follows their rollout;
/// the previous credential is never revoked while one still runs pods started before
/// the rotation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumersSpec {
    /// Workloads in this namespace, by kind and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub workloads: Vec<WorkloadRef>,
    /// Every Deployment, StatefulSet and DaemonSet in this namespace with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Every Deployment, StatefulSet and DaemonSet in this namespace whose pod template
    /// reads the target Secret (env `secretKeyRef`, `envFrom`, a `secret` volume or a
    /// projected one).
    #[serde(default)]
    pub discover: bool,
}

impl ConsumersSpec {
    /// Whether any consumer is named, selected or discovered.
    pub fn is_set(&self) -> bool {
        !self.workloads.is_empty() || self.selector.is_some() || self.discover
    }
}

/// A workload in the SecretRotation's namespace.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub struct WorkloadRef {
    /// Deployment, StatefulSet, DaemonSet or Rollout (Argo Rollouts).
    pub kind: WorkloadKind,
    /// The workload's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
}

// A kind of workload rotor restarts.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Rollout,
}

impl WorkloadKind {
    /// The kinds `selector` and `discover` look at.
    pub const BUILT_IN: [Self; 3] = [Self::Deployment, Self::StatefulSet, Self::DaemonSet];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Rollout => "Rollout",
        }
    }
}

/// When the previous credential is revoked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationSpec {
    /// NextRotation (default): the previous credential stays valid until the next
    /// rotation replaces it. Rollout: it is revoked as soon as every consumer has
    /// rolled out to the new one.
    #[serde(default)]
    pub after: RevokeAfter,
    /// How long rotor waits for consumers to roll out (and for a provider to report the
    /// previous credential unused) before it says so (`ConsumerRolloutStuck`). Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<TimeSpan>,
    /// What happens after maxWait: Keep (default) keeps the previous credential valid
    /// and the next rotation waits; Revoke revokes it anyway.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// A credential is never revoked less than this after it stopped being active
    /// (pods that loaded it just before a rotation keep working). Default 10m; `0s`
    /// allowed. Only an emergency revoke (`rotor.dev/revoke`) is exempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_validity: Option<TimeSpan>,
}

/// Default of `revocation.maxWait`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(3600);
/// Default of `revocation.minValidity`.
pub const DEFAULT_MIN_VALIDITY: Duration = Duration::from_secs(600);

// When the previous credential is revoked.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RevokeAfter {
    #[default]
    NextRotation,
    Rollout,
}

// What happens when consumers do not roll out within maxWait.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnTimeout {
    #[default]
    Keep,
    Revoke,
}

/// Who is told about rotations.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// A webhook that receives Rotated, RotationFailed, PreviousRevoked,
    /// ConsumerRolloutStuck and Stale: names, times and fingerprints, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// A signed webhook.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// An https URL (http only with `--allow-private-endpoints`); private addresses
    /// are refused like provider endpoints.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The HMAC-SHA256 key: each request carries `X-Rotor-Signature: t=<unix>,v1=<hex>`
    /// over `"<t>.<body>"`.
    pub signing_secret_ref: SecretKeyRef,
    /// json (default) or slack (a Slack incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
}

// The body of a webhook request.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// A duration with units w, d, h, m, s (`1h`, `10m`, `45d`, `0s`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct TimeSpan(pub String);

/// Pattern the API server enforces on a [`TimeSpan`].
pub const TIME_SPAN_PATTERN: &str =
    r"^([0-9]+w)?([0-9]+d)?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))*$";

impl TimeSpan {
    /// The span as a duration (zero allowed), at most ten years.
    pub fn duration(&self) -> Result<Duration, super::IntervalError> {
        if self.0.trim().bytes().all(|b| b.is_ascii_digit()) {
            // Bare numbers are days in rotationInterval only: here they need a unit.
            return Err(super::IntervalError::Syntax(
                self.0.chars().take(32).collect(),
            ));
        }
        super::interval::parse_span(&self.0)
    }
}

impl From<&str> for TimeSpan {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl JsonSchema for TimeSpan {
    fn schema_name() -> Cow<'static, str> {
        "TimeSpan".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": 32,
            "pattern": TIME_SPAN_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_need_a_unit_and_may_be_zero() {
        let d = |s: &str| TimeSpan::from(s).duration();
        assert_eq!(d("0s").unwrap(), Duration::ZERO);
        assert_eq!(d("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(d("45d").unwrap(), Duration::from_secs(45 * 86_400));
        assert_eq!(d("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(d("30").is_err(), "a bare number is ambiguous here");
        assert!(d("").is_err());
        assert!(d("soon").is_err());
        assert!(d("99999999999999w").is_err());
    }

    #[test]
    fn closed_sets_read_their_words() {
        let kind: WorkloadKind = serde_json::from_value("StatefulSet".into()).unwrap();
        assert_eq!(kind, WorkloadKind::StatefulSet);
        for k in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
            WorkloadKind::Rollout,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let after: RevokeAfter = serde_json::from_value("Rollout".into()).unwrap();
        assert_eq!(after, RevokeAfter::Rollout);
        let keep: OnTimeout = serde_json::from_value("Keep".into()).unwrap();
        assert_eq!(keep, OnTimeout::Keep);
        let slack: WebhookFormat = serde_json::from_value("slack".into()).unwrap();
        assert_eq!(slack, WebhookFormat::Slack);
    }
}
