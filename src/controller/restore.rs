//! Restoring the target Secret from the vault: when it was deleted, lost a key, or no
//! longer holds the active credential, rotor writes the credentials it already issued
//! again — the same values, no provider call, no rotation counted.

use super::Error;
use super::audit::Audit;
use super::reconcile::Run;
use super::secret;
use super::status;
use super::validate::ValidSpec;
use crate::api::SecretRotation;
use crate::rotation::Slot;
use crate::rotation::{Credential, IssueRequest, Provider, ProviderError, Revocation};
use crate::vault::Vault;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use tracing::{info, warn};

/// What the target Secret lacked, as Events and the audit trail say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Damage {
    /// Deleted, or a mapped key removed.
    Missing,
    /// The mapped keys hold neither the active nor the previous credential.
    Changed,
}

impl Damage {
    fn describe(self) -> &'static str {
        match self {
            Self::Missing => "was deleted or lost a key",
            Self::Changed => "no longer held the active credential",
        }
    }
}

/// What [`Run::restore_first`] did.
pub(super) enum First {
    /// Restored the target Secret: the reconcile ends here.
    Restored(Action),
    /// Nothing restored: go on, with the target Secret as read here when it was
    /// (`Some`), so the assessment need not read it again.
    GoOn(Option<Option<Box<Secret>>>),
}

impl Run {
    /// Writes the target Secret again from the vault: the active slot's credential
    /// under the mapped keys and, with keepPrevious, the previous slot's under
    /// `_PREVIOUS`. `Ok(false)` when the vault cannot give the active credential
    /// (no active slot, no entry, an entry that does not open); the caller then
    /// rotates or leaves the Secret alone.
    pub(super) async fn restore(&self, spec: &ValidSpec, damage: Damage) -> Result<bool, Error> {
        let pair = status::slot_pair(&self.old);
        let (Some(index), Some(active)) = (pair.active, pair.active_slot()) else {
            return Ok(false);
        };
        let vault = match self.vault().await {
            Ok(vault) => vault,
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "the escrow is unavailable; cannot restore the target Secret from it");
                return Ok(false);
            }
        };
        let Some(credential) = self.kept(&vault, spec, index, active).await else {
            return Ok(false);
        };
        let values = secret::values_of(&credential, spec);
        if spec
            .mapping
            .iter()
            .any(|(_, key)| !values.contains_key(key))
        {
            return Ok(false);
        }
        let mut previous = BTreeMap::new();
        if spec.keep_previous
            && let Some(slot) = pair.previous_slot()
            && let Some(c) = self.kept(&vault, spec, 1 - index, slot).await
        {
            previous = secret::values_of(&c, spec);
        }
        self.apply_secret(spec, &values, &previous, index, &active.fingerprint)
            .await?;
        drop((values, previous, credential));

        let name = &self.sr.spec.target.name;
        let note = format!(
            "target Secret {name:?} {}: written again from the escrow with the active credential ({}, slot {index}); no new credential was issued",
            damage.describe(),
            active.fingerprint
        );
        info!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), slot = index, fingerprint = %active.fingerprint, "restored the target Secret from the escrow");
        Audit::operator(&vault)
            .record(
                "restore",
                Some(&active.id),
                None,
                Some(active.fingerprint.clone()),
                Some(format!("target Secret {}", damage.describe())),
            )
            .await;
        crate::metrics::count(&self.ctx.metrics.secret_restores, spec.provider.kind());
        self.publish(EventType::Normal, "Restored", "Restore", note)
            .await;
        Ok(true)
    }

    /// Restore first: a deleted or incomplete target Secret is written again from the
    /// vault before anything else is decided, without the provider's admin Secret and
    /// without any provider call, so that neither a vendor outage (a failing rotation
    /// waiting for its retry) nor missing admin credentials keep it missing. `None`
    /// when there is nothing to restore or it cannot be done here (the ordinary path
    /// then decides, and says why).
    pub(super) async fn restore_first(&self) -> First {
        if self.old.slots.is_empty() || self.provider_changed() {
            return First::GoOn(None);
        }
        let Some(spec) = offline_spec(&self.sr) else {
            return First::GoOn(None);
        };
        let existing = match self.secrets.get_opt(&self.sr.spec.target.name).await {
            Ok(existing) => existing,
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "reading the target Secret failed");
                return First::GoOn(None);
            }
        };
        let target = secret::Target::classify(existing.clone(), &self.sr);
        if matches!(target, secret::Target::Foreign) || target.is_complete(&spec) {
            return First::GoOn(Some(existing.map(Box::new)));
        }
        match self.restore(&spec, Damage::Missing).await {
            Ok(true) => First::Restored(Action::requeue(std::time::Duration::from_secs(1))),
            Ok(false) => First::GoOn(None),
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "restoring the target Secret failed");
                First::GoOn(None)
            }
        }
    }

    /// Whether the spec names another provider than the one that issued the slots.
    pub(super) fn provider_changed(&self) -> bool {
        let now = status::provider_identity(&self.sr.spec.provider);
        match (&self.old.issued_by, &self.old.provider) {
            (Some(issued_by), _) => *issued_by != now,
            // Written before issuedBy existed: the kind is all rotor knows.
            (None, Some(kind)) => kind != self.sr.spec.provider.kind(),
            (None, None) => false,
        }
    }

    /// The spec names another provider than the one that issued the slots: the old
    /// credentials are never revoked against the new provider (it would answer "not
    /// found", and they would stay valid for ever). They are forgotten, named in a
    /// Warning Event and the audit trail as still valid at the old provider, and a
    /// fresh initial rotation follows with the new one.
    pub(super) async fn forget_old_provider(&self) -> Result<Option<Action>, Error> {
        let nothing = self.old.slots.is_empty()
            && self.old.in_flight.is_none()
            && self.old.pending_revocations.is_empty();
        if nothing || !self.provider_changed() {
            return Ok(None);
        }
        let old = self
            .old
            .issued_by
            .clone()
            .or_else(|| self.old.provider.clone())
            .unwrap_or_default();
        let new = status::provider_identity(&self.sr.spec.provider);
        let mut still: Vec<(String, Option<String>)> = self
            .old
            .slots
            .iter()
            .map(|s| (s.id.clone(), Some(s.fingerprint.clone())))
            .collect();
        still.extend(
            self.old
                .pending_revocations
                .iter()
                .map(|p| (p.id.clone(), Some(p.fingerprint.clone()))),
        );
        if let Some(f) = &self.old.in_flight {
            still.push((format!("{} (in flight)", f.credential_name), None));
        }
        let named: Vec<String> = still
            .iter()
            .map(|(id, fp)| match fp {
                Some(fp) => format!("{id} ({fp})"),
                None => id.clone(),
            })
            .collect();
        let message = format!(
            "spec.provider changed from {old} to {new}: rotor never asks the new provider to revoke the old one's credentials; still valid at {old}: {}; revoke them there by hand. A fresh initial rotation runs with the new provider",
            named.join(", ")
        );
        let mut status = self.base_status();
        status.slots.clear();
        status.active_index = 0;
        status.in_flight = None;
        status.pending_revocations.clear();
        status.emergency_token = None;
        // A pending rotor.dev/revoke request was about the old provider's credentials,
        // which rotor no longer manages (the message names them): left unhandled, it
        // would revoke the new provider's first credential and report success.
        if let Some(token) = self.sr.annotations().get(crate::api::REVOKE_ANNOTATION) {
            status.last_handled_revoke_token = Some(token.clone());
        }
        status.failed_attempts = 0;
        status.issued_by = None;
        status.next_rotation_at = None;
        status::set_phase(
            &mut status,
            status::Reason::Pending,
            message.clone(),
            self.generation(),
            self.now,
        );
        self.write_status(&status).await?;
        warn!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), %message, "provider changed");
        if let Ok(vault) = self.vault().await {
            let audit = Audit::operator(&vault);
            for (id, fp) in &still {
                audit
                    .record(
                        "forget",
                        Some(id),
                        fp.clone(),
                        None,
                        Some(format!(
                            "provider changed to {new}: still valid at {old}; revoke by hand"
                        )),
                    )
                    .await;
            }
        }
        self.publish(EventType::Warning, "ProviderChanged", "Rotate", message)
            .await;
        Ok(Some(Action::requeue(std::time::Duration::from_secs(1))))
    }

    /// The slot's credential from the vault, when it is there and opens.
    async fn kept(
        &self,
        vault: &Vault,
        spec: &ValidSpec,
        index: u8,
        slot: &Slot,
    ) -> Option<Credential> {
        let found = vault
            .find(
                &slot.id,
                &slot.fingerprint,
                spec.provider.outputs(),
                spec.provider.secret_output(),
            )
            .await;
        match found {
            Ok(Some(Ok(credential))) => Some(credential),
            Ok(Some(Err(e))) => {
                warn!(name = %self.sr.name_any(), slot = index, error = %e, "the escrow entry of this slot cannot be opened");
                None
            }
            Ok(None) => {
                info!(name = %self.sr.name_any(), slot = index, "the escrow holds no entry for this slot");
                None
            }
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "reading the escrow failed");
                None
            }
        }
    }
}

/// A stand-in for the provider that knows its outputs and can do nothing else.
struct OutputsOnly {
    kind: &'static str,
    outputs: &'static [&'static str],
    secret_output: &'static str,
}

#[async_trait::async_trait]
impl Provider for OutputsOnly {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn outputs(&self) -> &'static [&'static str] {
        self.outputs
    }
    fn secret_output(&self) -> &'static str {
        self.secret_output
    }
    async fn issue(&self, _: &IssueRequest<'_>) -> Result<Credential, ProviderError> {
        Err(Self::unavailable())
    }
    async fn test(&self, _: &Credential) -> Result<(), ProviderError> {
        Err(Self::unavailable())
    }
    async fn revoke(&self, _: &str) -> Result<Revocation, ProviderError> {
        Err(Self::unavailable())
    }
    async fn list_own(&self, _: &str) -> Result<Vec<String>, ProviderError> {
        Err(Self::unavailable())
    }
}

impl OutputsOnly {
    fn unavailable() -> ProviderError {
        ProviderError::InvalidConfig("restoring from the escrow makes no provider call".into())
    }
}

/// What restoring needs of the spec (mapping, keepPrevious, outputs), checked as far
/// as restoring needs; `None` when the mapping does not fit the provider kind.
fn offline_spec(sr: &SecretRotation) -> Option<ValidSpec> {
    let (outputs, secret_output) = crate::providers::outputs_of(&sr.spec.provider);
    let mut mapping = Vec::new();
    for (output, key) in &sr.spec.secrets_mapping {
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !outputs.contains(&output.as_str()) || !key_ok {
            return None;
        }
        mapping.push((output.clone(), key.clone()));
    }
    if mapping.is_empty() {
        return None;
    }
    Some(ValidSpec {
        provider: Box::new(OutputsOnly {
            kind: sr.spec.provider.kind(),
            outputs,
            secret_output,
        }),
        strategy: sr.spec.strategy.unwrap_or(crate::api::Strategy::DualPhase),
        schedule: crate::rotation::Schedule {
            interval: crate::rotation::MIN_INTERVAL,
            at_utc: None,
            auto: false,
        },
        mapping,
        keep_previous: sr.spec.target.keep_previous,
        consumers: None,
        revocation: Default::default(),
        max_age: None,
        webhook: None,
    })
}
