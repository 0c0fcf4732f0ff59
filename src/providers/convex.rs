//! `provider.convex`: Convex personal access tokens.
//!
//! Create `POST /v1/create_personal_access_token {"name"}` → `{"accessToken"}`; the
//! name is the token's id. Test: `GET /v1/list_personal_access_tokens` with the *new*
//! token. Delete: `POST /v1/delete_personal_access_token {"id": name}` (404: gone).

use super::{BuildContext, HttpClient};
use crate::api::ConvexSpec;
use crate::rotation::{Credential, IssueRequest, NameParts, Provider, ProviderError, Revocation};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const OUTPUT: &str = "accessKey";
const DEFAULT_BASE: &str = "https://api.convex.dev";
/// Unix milliseconds have 13 digits from 2001 to 2286.
const UNIX_MS_DIGITS: usize = 13;

pub struct ConvexProvider {
    http: HttpClient,
    base: String,
    prefix: Option<String>,
    token: SecretString,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    access_token: String,
}

impl ConvexProvider {
    pub fn new(spec: &ConvexSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        let base = spec.base_url.clone().unwrap_or_else(|| DEFAULT_BASE.into());
        ctx.http.check_url(&base)?;
        Ok(Self {
            http: ctx.http.clone(),
            base: base.trim_end_matches('/').to_string(),
            prefix: spec.name_prefix.clone(),
            token: ctx.secrets.get(&spec.credentials_ref)?.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }
}

/// Pulls token names out of a list response, whatever its envelope.
fn names_in(value: &serde_json::Value) -> Vec<String> {
    let items = match value {
        serde_json::Value::Array(items) => items.clone(),
        serde_json::Value::Object(map) => map
            .values()
            .find_map(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    items
        .iter()
        .filter_map(|item| match item {
            serde_json::Value::String(s) => Some(s.clone()),
            other => ["name", "id"]
                .iter()
                .find_map(|k| other.get(*k)?.as_str().map(str::to_string)),
        })
        .collect()
}

#[async_trait]
impl Provider for ConvexProvider {
    fn kind(&self) -> &'static str {
        "convex"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        OUTPUT
    }

    /// `<prefix>-<unix ms>`, the unix ms being when the rotation started (recorded in
    /// status first, so a resumed rotation uses the same name).
    fn credential_name(&self, parts: &NameParts<'_>) -> String {
        format!(
            "{}-{}",
            self.name_prefix(parts.uid),
            parts.started_at.timestamp_millis()
        )
    }

    fn name_prefix(&self, uid: &str) -> String {
        self.prefix.clone().unwrap_or_else(|| {
            let short: String = uid
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            format!("rotor-{}", short.to_ascii_lowercase())
        })
    }

    fn known_values(&self) -> Vec<SecretString> {
        vec![self.token.clone()]
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        let body = serde_json::json!({ "name": request.name });
        let create = || {
            self.http.send("creating a Convex access token", |c| {
                c.post(self.url("create_personal_access_token"))
                    .bearer_auth(self.token.expose_secret())
                    .json(&body)
            })
        };
        let mut reply = create().await?;
        if reply.status == 409 {
            // A rotation that died after creating this name: its token can never be
            // read again, so delete it and create the name afresh.
            tracing::info!(
                name = request.name,
                "a token with this rotation's name exists; replacing it"
            );
            self.revoke(request.name).await?;
            reply = create().await?;
        }
        if !reply.is_success() {
            return Err(reply.error("creating a Convex access token"));
        }
        let created: Created = reply.json("creating a Convex access token")?;
        if created.access_token.is_empty() {
            return Err(ProviderError::BadResponse(
                "the created token is empty".into(),
            ));
        }
        let credential = Credential::single(
            request.name,
            OUTPUT,
            SecretString::from(created.access_token),
        );
        request
            .stash
            .keep(&credential)
            .await
            .map_err(ProviderError::Stash)?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let new_token = credential
            .outputs
            .get(OUTPUT)
            .map(|s| s.expose_secret().to_string())
            .unwrap_or_default();
        let reply = self
            .http
            .send("listing tokens with the new Convex token", |c| {
                c.get(self.url("list_personal_access_tokens"))
                    .bearer_auth(&new_token)
            })
            .await?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(ProviderError::TestFailed(
                reply.error("listing tokens with the new token").to_string(),
            ))
        }
    }

    async fn revoke(&self, id: &str) -> Result<Revocation, ProviderError> {
        let body = serde_json::json!({ "id": id });
        let reply = self
            .http
            .send("deleting a Convex access token", |c| {
                c.post(self.url("delete_personal_access_token"))
                    .bearer_auth(self.token.expose_secret())
                    .json(&body)
            })
            .await?;
        match reply.status {
            404 => Ok(Revocation::AlreadyGone),
            _ if reply.is_success() => Ok(Revocation::Revoked),
            _ => Err(reply.error("deleting a Convex access token")),
        }
    }

    async fn list_own(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let reply = self
            .http
            .send("listing Convex access tokens", |c| {
                c.get(self.url("list_personal_access_tokens"))
                    .bearer_auth(self.token.expose_secret())
            })
            .await?;
        if !reply.is_success() {
            return Err(reply.error("listing Convex access tokens"));
        }
        let value: serde_json::Value = reply.json("listing Convex access tokens")?;
        // Own names are exactly `<prefix>-<13-digit unix ms>` (see credential_name):
        // `shop` must not take `shop-payments-…` (another resource's), `shop-admin` or
        // `shop-1` (a human's).
        let own = format!("{prefix}-");
        Ok(names_in(&value)
            .into_iter()
            .filter(|n| crate::rotation::own_name(&own, n) && n.len() == own.len() + UNIX_MS_DIGITS)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::names_in;
    use serde_json::json;

    #[test]
    fn list_shapes_are_understood() {
        assert_eq!(names_in(&json!([{"name": "a"}, {"name": "b"}])), ["a", "b"]);
        assert_eq!(names_in(&json!({"tokens": [{"name": "a"}]})), ["a"]);
        assert_eq!(names_in(&json!(["a"])), ["a"]);
    }
}
