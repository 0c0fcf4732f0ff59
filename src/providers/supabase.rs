//! `provider.supabase`: project API keys through the Supabase Management API.
//!
//! Create `POST /v1/projects/{ref}/api-keys?reveal=true`, read
//! `GET /v1/projects/{ref}/api-keys/{id}?reveal=true`, list
//! `GET /v1/projects/{ref}/api-keys?reveal=false`, delete
//! `DELETE /v1/projects/{ref}/api-keys/{id}` (404: already gone). Bearer auth with a
//! personal access token.

use super::{BuildContext, HttpClient};
use crate::api::{SupabaseKeyType, SupabaseSpec};
use crate::rotation::{Credential, IssueRequest, NameParts, Provider, ProviderError, Revocation};
use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const OUTPUT: &str = "apiKey";
const DEFAULT_BASE: &str = "https://api.supabase.com";

pub struct SupabaseProvider {
    http: HttpClient,
    base: String,
    project_ref: String,
    key_type: SupabaseKeyType,
    token: SecretString,
}

#[derive(Deserialize)]
struct ApiKey {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

impl SupabaseProvider {
    pub fn new(spec: &SupabaseSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let base = spec.base_url.clone().unwrap_or_else(|| DEFAULT_BASE.into());
        ctx.http.check_url(&base)?;
        let project_ref = segment(&spec.project_ref).map_err(|_| {
            ProviderError::InvalidConfig(format!(
                "supabase.projectRef {:?} is not a project ref",
                spec.project_ref
            ))
        })?;
        Ok(Self {
            http: ctx.http.clone(),
            base: base.trim_end_matches('/').to_string(),
            project_ref,
            key_type: spec.key_type,
            token: ctx.secrets.get(&spec.credentials_ref)?.clone(),
        })
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/v1/projects/{}/api-keys{tail}",
            self.base, self.project_ref
        )
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose_secret())
    }
}

/// A path segment from a spec or a vendor, percent-encoded: an id `../../x?y` stays
/// one segment.
/// `.` and `..` are refused: `%2E%2E` is still `..` to a URL parser.
fn segment(raw: &str) -> Result<String, ProviderError> {
    if matches!(raw, "" | "." | "..") {
        return Err(ProviderError::BadResponse(format!(
            "the id {raw:?} cannot go into a URL path"
        )));
    }
    Ok(utf8_percent_encode(raw, NON_ALPHANUMERIC).to_string())
}

/// Supabase key names match `^[a-z_][a-z0-9_]+$`, 4–64 characters.
fn key_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name.truncate(64);
    name
}

#[async_trait]
impl Provider for SupabaseProvider {
    fn kind(&self) -> &'static str {
        "supabase"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        OUTPUT
    }

    fn credential_name(&self, parts: &NameParts<'_>) -> String {
        key_name(&crate::rotation::credential_name(parts.uid, parts.sequence))
    }

    fn name_prefix(&self, uid: &str) -> String {
        key_name(&crate::rotation::credential_name(uid, 0))
            .trim_end_matches('0')
            .to_string()
    }

    fn known_values(&self) -> Vec<SecretString> {
        vec![self.token.clone()]
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        // A rotation that died after creating its key left it under this name: its
        // value is not ours any more, so delete it before creating the name afresh.
        for leftover in self.ids_where(|n| n == request.name).await? {
            tracing::info!(id = %leftover, name = request.name, "deleting a key a dead rotation created");
            self.revoke(&leftover).await?;
        }
        let body = serde_json::json!({
            "type": self.key_type.as_str(),
            "name": request.name,
            "description": "managed by rotor; rotated automatically",
        });
        let reply = self
            .http
            .send("creating a Supabase API key", |c| {
                c.post(self.url("?reveal=true"))
                    .header("Authorization", self.bearer())
                    .json(&body)
            })
            .await?;
        if !reply.is_success() {
            return Err(reply.error("creating a Supabase API key"));
        }
        let key: ApiKey = reply.json("creating a Supabase API key")?;
        let value = key.api_key.filter(|k| !k.is_empty()).ok_or_else(|| {
            ProviderError::BadResponse("the created key carries no api_key".into())
        })?;
        let credential = Credential::single(key.id, OUTPUT, SecretString::from(value));
        request
            .stash
            .keep(&credential)
            .await
            .map_err(ProviderError::Stash)?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let path = format!("/{}?reveal=true", segment(&credential.id)?);
        let reply = self
            .http
            .send("reading the new Supabase API key", |c| {
                c.get(self.url(&path))
                    .header("Authorization", self.bearer())
            })
            .await?;
        if !reply.is_success() {
            return Err(ProviderError::TestFailed(
                reply.error("reading the new key back").to_string(),
            ));
        }
        let key: ApiKey = reply.json("reading the new Supabase API key")?;
        let ours = credential.outputs.get(OUTPUT).map(|s| s.expose_secret());
        if key.api_key.as_deref() != ours {
            return Err(ProviderError::TestFailed(
                "Supabase returns a different value for the new key".into(),
            ));
        }
        Ok(())
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        let path = format!("/{}?reason=rotated%20by%20rotor", segment(id)?);
        let reply = self
            .http
            .send("deleting a Supabase API key", |c| {
                c.delete(self.url(&path))
                    .header("Authorization", self.bearer())
            })
            .await?;
        match reply.status {
            404 => Ok(Revocation::AlreadyGone),
            _ if reply.is_success() => Ok(Revocation::Revoked),
            _ => Err(reply.error("deleting a Supabase API key")),
        }
    }

    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        // Own names are exactly `rotor_<uid8>_<n>`.
        self.ids_where(|n| crate::rotation::own_name(prefix, n))
            .await
    }
}

impl SupabaseProvider {
    /// Ids of the keys whose name satisfies `keep`.
    async fn ids_where(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, ProviderError> {
        let reply = self
            .http
            .send("listing Supabase API keys", |c| {
                c.get(self.url("?reveal=false"))
                    .header("Authorization", self.bearer())
            })
            .await?;
        if !reply.is_success() {
            return Err(reply.error("listing Supabase API keys"));
        }
        let keys: Vec<ApiKey> = reply.json("listing Supabase API keys")?;
        Ok(keys
            .into_iter()
            .filter(|k| k.name.as_deref().is_some_and(&keep))
            .map(|k| k.id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::key_name;

    #[test]
    fn names_follow_supabase_rules() {
        let re = |n: &str| {
            n.len() >= 4
                && n.len() <= 64
                && n.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
                && n.chars()
                    .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
        };
        for raw in ["rotor-5F0C3A9E-7", "9lives", "a-b.c d"] {
            assert!(re(&key_name(raw)), "{raw} -> {}", key_name(raw));
        }
        assert_eq!(key_name("rotor-5f0c3a9e-7"), "rotor_5f0c3a9e_7");
    }

    #[test]
    fn vendor_ids_stay_one_path_segment() {
        assert_eq!(
            super::segment("../../x?y").unwrap(),
            "%2E%2E%2F%2E%2E%2Fx%3Fy"
        );
        assert_eq!(super::segment("abc123").unwrap(), "abc123");
        assert!(super::segment("..").is_err() && super::segment(".").is_err());
    }
}
