//! `spec.provider.mysql`: a MySQL 8 or MariaDB 10.11+ login rotated across two users.

use super::{SecretKeyRef, SslMode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A MySQL or MariaDB login rotated across two users (the dialect is read from the
/// server's `VERSION()`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlSpec {
    /// Server host name or address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Server port.
    #[serde(default = "default_mysql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Database the consumers use (and the connection test opens).
    #[schemars(length(min = 1, max = 64))]
    pub database: String,
    /// verify-full (the default: the chain against caRef or the Mozilla roots, and the
    /// host name); require (encrypted, the certificate not checked: MySQL has no
    /// channel binding, so whoever answers in the server's place can relay the admin's
    /// mysql_native_password scramble or read a caching_sha2_password full-auth
    /// password); or disable (no TLS: for a server on the same host or a trusted link).
    #[serde(default = "default_mysql_ssl_mode")]
    pub ssl_mode: SslMode,
    /// Admin user (its host part is whatever the server matches): CREATE USER, PROCESS,
    /// CONNECTION ADMIN and SELECT on mysql.user (see the README for the rest).
    #[serde(default = "default_mysql_admin")]
    #[schemars(length(min = 1, max = 80))]
    pub admin_username: String,
    /// The admin user's password.
    pub credentials_ref: SecretKeyRef,
    /// PEM CA bundle for verify-full (the CA that signed the server's certificate).
    /// Unset: the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<SecretKeyRef>,
    /// Base name: the users are `<username>_a` and `<username>_b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Or the two users by name (slot 0, slot 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 2))]
    pub usernames: Option<Vec<String>>,
    /// The host part of both accounts (`'<user>'@'<userHost>'`).
    #[serde(default = "default_user_host")]
    #[schemars(length(min = 1, max = 255))]
    pub user_host: String,
    /// A role that holds the privileges: each rotation grants it to the user it sets
    /// and makes it the user's default role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<String>,
    /// Copy the other user's grants (SHOW GRANTS) to the user each rotation sets: only
    /// plain GRANT statements whose grantee is exactly the other user; added, never
    /// revoked.
    #[serde(default)]
    pub copy_grants: bool,
}

fn default_mysql_port() -> u16 {
    3306
}

fn default_mysql_ssl_mode() -> SslMode {
    SslMode::VerifyFull
}

fn default_mysql_admin() -> String {
    "root".into()
}

fn default_user_host() -> String {
    "%".into()
}
