//! `provider.convox`: the API key (password) of a Convox rack. Single-phase.
//!
//! HTTP Basic auth, user ignored, password = rack key. `PUT /system` with the form
//! body `parameters=Password%3D<new>` sets a new key; the rack then updates
//! (`GET /system` → `{"status": "updating"}` … `"running"`), and during the update
//! neither key may work. The new key is kept (stashed) *before* the PUT and left under
//! `<key>.pending` in the credentials Secret until rotor has recorded it, so a crash at
//! any point never loses the only key to the rack.

use super::{BuildContext, HttpClient, random_alphanumeric};
use crate::api::{ConvoxSpec, SecretKeyRef, Strategy};
use crate::rotation::{Credential, IssueRequest, NameParts, Provider, ProviderError, Revocation};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

const OUTPUT: &str = "apiKey";
const USER: &str = "convox";

pub struct ConvoxProvider {
    http: HttpClient,
    rack: String,
    current: SecretString,
    pending: Option<SecretString>,
    length: usize,
    admin: SecretKeyRef,
}

#[derive(Deserialize)]
struct System {
    #[serde(default)]
    status: String,
}

/// What `GET /system` says with one key.
enum Probe {
    Running,
    Busy(String),
    Refused,
}

impl ConvoxProvider {
    pub fn new(spec: &ConvoxSpec, ctx: &BuildContext<'_>) -> Result<Self, ProviderError> {
        ctx.http.check_url(&spec.rack_url)?;
        if !(16..=50).contains(&spec.password_length) {
            return Err(ProviderError::InvalidConfig(format!(
                "convox.passwordLength {} is out of range: use 16 to 50",
                spec.password_length
            )));
        }
        Ok(Self {
            http: ctx.http.clone(),
            rack: spec.rack_url.trim_end_matches('/').to_string(),
            current: ctx.secrets.get(&spec.credentials_ref)?.clone(),
            pending: ctx.secrets.pending(&spec.credentials_ref).cloned(),
            length: spec.password_length as usize,
            admin: spec.credentials_ref.clone(),
        })
    }

    async fn probe(&self, key: &str) -> Result<Probe, ProviderError> {
        let reply = self
            .http
            .send("reading the Convox rack status", |c| {
                c.get(format!("{}/system", self.rack))
                    .basic_auth(USER, Some(key))
            })
            .await?;
        match reply.status {
            401 | 403 => Ok(Probe::Refused),
            _ if reply.is_success() => {
                let system: System = reply.json("reading the Convox rack status")?;
                Ok(if system.status == "running" {
                    Probe::Running
                } else {
                    Probe::Busy(system.status)
                })
            }
            _ => Err(reply.error("reading the Convox rack status")),
        }
    }

    /// Polls until the rack runs and accepts `key`, within the update timeout.
    async fn wait_running(&self, key: &str) -> Result<(), ProviderError> {
        // Within the provider call's own deadline (--provider-timeout), so the message
        // says what the rack was doing rather than that the call was cut.
        let limit = self
            .http
            .settings
            .update_timeout
            .min(self.http.settings.provider_timeout.mul_f64(0.9));
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.probe(key).await? {
                Probe::Running => return Ok(()),
                Probe::Busy(status) => format!("status {status:?}"),
                Probe::Refused => "the key is not accepted yet".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ProviderError::Unavailable(format!(
                    "the rack did not come back running with the new key within {} ({last})",
                    humantime::format_duration(Duration::from_secs(limit.as_secs()))
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.http.settings.poll_interval.min(left)).await;
        }
    }

    fn credential(&self, id: &str, key: SecretString) -> Credential {
        Credential::single(id, OUTPUT, key)
    }
}

#[async_trait]
impl Provider for ConvoxProvider {
    fn kind(&self) -> &'static str {
        "convox"
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[OUTPUT]
    }

    fn secret_output(&self) -> &'static str {
        OUTPUT
    }

    fn default_strategy(&self) -> Strategy {
        Strategy::SinglePhase
    }

    fn credential_name(&self, parts: &NameParts<'_>) -> String {
        format!("convox-rack-key-{}", parts.sequence)
    }

    fn replaces_admin_credential(&self) -> Option<&SecretKeyRef> {
        Some(&self.admin)
    }

    fn known_values(&self) -> Vec<SecretString> {
        self.pending
            .iter()
            .cloned()
            .chain([self.current.clone()])
            .collect()
    }

    async fn issue(&self, request: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        // A rotation that died after its PUT left the new key pending: if the rack
        // takes it, that key is this rotation's credential. Never issue twice.
        // A rack still updating to it answers the pending key with its status (the
        // old key stopped working at the PUT): wait for that update, never probe the
        // old key or set another.
        if let Some(pending) = &self.pending {
            match self.probe(pending.expose_secret()).await? {
                Probe::Running => return Ok(self.credential(request.name, pending.clone())),
                Probe::Busy(_) => {
                    self.wait_running(pending.expose_secret()).await?;
                    return Ok(self.credential(request.name, pending.clone()));
                }
                Probe::Refused => {}
            }
        }
        let admin = match self.probe(self.current.expose_secret()).await? {
            Probe::Running => self.current.clone(),
            Probe::Busy(status) => {
                return Err(ProviderError::Unavailable(format!(
                    "the rack is {status:?}; rotor waits for running"
                )));
            }
            Probe::Refused => {
                return Err(ProviderError::Unauthorized {
                    status: 401,
                    message:
                        "the rack refuses the key in credentialsRef (and no pending key works)"
                            .into(),
                });
            }
        };
        let new_key = random_alphanumeric(self.length);
        let credential = self.credential(request.name, new_key.clone());
        // Kept before the rack hears of it: from here on, rotor can always reach the rack.
        request
            .stash
            .keep(&credential)
            .await
            .map_err(ProviderError::Stash)?;
        let form = [(
            "parameters",
            format!("Password={}", new_key.expose_secret()),
        )];
        let reply = self
            .http
            .send("setting the Convox rack key", |c| {
                c.put(format!("{}/system", self.rack))
                    .basic_auth(USER, Some(admin.expose_secret()))
                    .form(&form)
            })
            .await?;
        if !reply.is_success() {
            return Err(reply.error("setting the Convox rack key"));
        }
        self.wait_running(new_key.expose_secret()).await?;
        Ok(credential)
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let key = credential
            .outputs
            .get(OUTPUT)
            .map(|s| s.expose_secret())
            .unwrap_or_default();
        match self.probe(key).await? {
            Probe::Running => Ok(()),
            Probe::Busy(status) => {
                Err(ProviderError::TestFailed(format!("the rack is {status:?}")))
            }
            Probe::Refused => Err(ProviderError::TestFailed(
                "the rack refuses the new key".into(),
            )),
        }
    }

    /// The old key was replaced in place by the PUT: nothing left to revoke.
    async fn revoke(&self, _id: &str) -> Result<Revocation, ProviderError> {
        Ok(Revocation::AlreadyGone)
    }

    async fn list_own(&self, _prefix: &str) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }

    fn lists_own(&self) -> bool {
        false
    }
}
