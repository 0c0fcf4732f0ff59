//! `provider.awsIam`: the access keys of one IAM user.

use super::SecretKeyRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The access keys of one IAM user. IAM allows two keys per user, which are the two
/// slots: each rotation creates a key (CreateAccessKey) and tests it with
/// sts:GetCallerIdentity signed with the new key. Outputs: `accessKeyId`,
/// `secretAccessKey`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsIamSpec {
    /// The IAM user whose access keys rotate (the name, not the ARN).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[\w+=,.@-]+$"))]
    pub user_name: String,
    /// The region STS is called in (the test of a new key). IAM itself is global and
    /// signed for us-east-1 (cn-north-1 in a `cn-` region, us-gov-west-1 in a
    /// `us-gov-` one). Default us-east-1.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,
    /// The IAM endpoint. Default https://iam.amazonaws.com (in a cn- or us-gov- region,
    /// that partition's). Set for an IAM-compatible
    /// service (or a test server); loopback and private addresses need
    /// `--allow-private-endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The STS endpoint the new key is tested against. Default: the regional
    /// endpoint https://sts.<region>.amazonaws.com, or endpointUrl when that is set
    /// (a server that serves both on one port, like moto's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint_url: Option<String>,
    /// The access key id of the admin principal that manages the user's keys.
    pub access_key_id_ref: SecretKeyRef,
    /// That principal's secret access key.
    pub secret_access_key_ref: SecretKeyRef,
    /// A session token, when the admin credential is temporary (it then expires, and
    /// rotations fail until the Secret is refreshed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_ref: Option<SecretKeyRef>,
    /// true (default): revoking a key first deactivates it (UpdateAccessKey
    /// Inactive), which `aws iam update-access-key --status Active` undoes; the next
    /// revoke of it (the next rotation, or the orphan sweep) deletes it. false: a
    /// revoke deletes the key at once.
    #[serde(default = "default_true")]
    pub deactivate_first: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_true() -> bool {
    true
}
