//! `provider.redis`: a Redis (6 or later) ACL user rotated across two users.

use super::SecretKeyRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Redis ACL login rotated across two users.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Server host name or address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Server port.
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// verify (the default: TLS, the chain checked against caRef or the Mozilla roots,
    /// and the host name, as `rediss://` clients do); insecureSkipVerify (TLS, the
    /// certificate not checked: whoever answers in the server's place reads the admin
    /// password, which Redis's AUTH sends as it is); or disable (plain TCP).
    #[serde(default)]
    pub tls: RedisTls,
    /// PEM CA bundle for `tls: verify` (the CA that signed the server's certificate).
    /// Unset: the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<SecretKeyRef>,
    /// The ACL user rotor logs in as (needs `+acl|setuser +acl|getuser +acl|users
    /// +acl|save +client|list +client|kill +client|id +config|get`).
    #[serde(default = "default_redis_admin")]
    #[schemars(length(min = 1, max = 128))]
    pub admin_username: String,
    /// The admin user's password.
    pub credentials_ref: SecretKeyRef,
    /// Base name: the users are `<username>_a` and `<username>_b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 126))]
    pub username: Option<String>,
    /// Or the two users by name (slot 0, slot 1); not `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 2))]
    pub usernames: Option<Vec<String>>,
    /// The users' ACL rules, e.g. `~app:* +@read +@write` (key patterns `~…`/`%R~…`/
    /// `%W~…`/`%RW~…`, channel patterns `&…`, commands `+…`/`-…`, categories `+@…`/
    /// `-@…`, allkeys, allchannels, allcommands, nocommands, resetkeys, resetchannels).
    /// Password rules (`>`, `<`, `#`, `!`, nopass, resetpass), on, off, reset and
    /// selectors are refused: rotor sets the password and turns the user on itself.
    /// Exactly one of rules and templateUser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub rules: Option<String>,
    /// Or copy the rules (keys, channels, commands; never passwords) of this existing
    /// user, read with `ACL GETUSER` at each rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub template_user: Option<String>,
    /// The database number put in the `uri` output (`redis://…/<db>`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 65535))]
    pub db: u32,
}

fn default_redis_port() -> u16 {
    6379
}

fn default_redis_admin() -> String {
    "default".into()
}

// How the Redis connection is secured.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisTls {
    #[default]
    Verify,
    InsecureSkipVerify,
    Disable,
}

impl RedisTls {
    /// The value as the spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::InsecureSkipVerify => "insecureSkipVerify",
            Self::Disable => "disable",
        }
    }
}
