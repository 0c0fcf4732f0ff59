//! Restoring the target Secret from the vault: when it was deleted, lost a key, or no
//! longer holds the active credential, rotor writes the credentials it already issued
//! again — the same values, no provider call, no rotation counted.

use super::Error;
use super::reconcile::Run;
use super::rotate::Audit;
use super::secret;
use super::status;
use super::validate::ValidSpec;
use crate::providers::Credential;
use crate::rotation::Slot;
use crate::vault::Vault;
use kube::ResourceExt;
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
                warn!(name = %self.sr.name_any(), error = %e, "the vault is unavailable; cannot restore the target Secret from it");
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
            "target Secret {name:?} {}: written again from the vault with the active credential ({}, slot {index}); no new credential was issued",
            damage.describe(),
            active.fingerprint
        );
        info!(namespace = self.sr.namespace().as_deref().unwrap_or_default(), name = %self.sr.name_any(), slot = index, fingerprint = %active.fingerprint, "restored the target Secret from the vault");
        Audit::operator(&vault)
            .record(
                "restore",
                Some(&active.id),
                None,
                Some(active.fingerprint.clone()),
                Some(format!("target Secret {}", damage.describe())),
            )
            .await;
        super::metrics::count(&self.ctx.metrics.secret_restores, spec.provider.kind());
        self.publish(EventType::Normal, "Restored", "Restore", note)
            .await;
        Ok(true)
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
                warn!(name = %self.sr.name_any(), slot = index, error = %e, "the vault entry of this slot cannot be opened");
                None
            }
            Ok(None) => {
                info!(name = %self.sr.name_any(), slot = index, "the vault holds no entry for this slot");
                None
            }
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "reading the vault failed");
                None
            }
        }
    }
}
