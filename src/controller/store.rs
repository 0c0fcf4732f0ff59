//! How the controller opens a resource's vault, and what status says about it.

use super::reconcile::Run;
use super::status;
use super::validate::ValidSpec;
use crate::api::VaultStatus;
use crate::vault::{SlotRef, Vault, VaultError};

impl Run {
    /// How long a revoked credential's vault entry is kept.
    pub(super) fn retention(&self) -> chrono::Duration {
        // An out-of-range --vault-retention means "keep for ever", never "drop now".
        chrono::Duration::from_std(self.ctx.settings.vault_retention)
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Opens this resource's vault (loading the current KEKs), knowing which entries
    /// are live (the slots and the in-flight credential in status).
    pub(super) async fn vault(&self) -> Result<Vault, VaultError> {
        let ring = match self.ctx.keys.get() {
            Some(ring) => ring,
            None => {
                let loaded = crate::vault::load_keyring(
                    &self.ctx.client,
                    &self.ctx.settings.operator_namespace,
                )
                .await;
                self.ctx.metrics.kek(loaded.is_ok());
                loaded?
            }
        };
        self.ctx.metrics.kek(true);
        let live = status::slot_pair(&self.old)
            .slots
            .iter()
            .flatten()
            .map(|s| SlotRef {
                id: s.id.clone(),
                fingerprint: s.fingerprint.clone(),
            })
            .collect();
        let in_flight = self
            .old
            .in_flight
            .as_ref()
            .map(|f| f.credential_name.clone());
        Ok(Vault::new(&self.ctx.client, &self.sr, ring)
            .with_live(live, in_flight)
            .with_writes(self.ctx.own_writes.clone()))
    }

    /// What status says about the vault.
    pub(super) async fn vault_status(
        &self,
        vault: &Vault,
        spec: &ValidSpec,
    ) -> Option<VaultStatus> {
        let (entries, problem) = vault
            .summary(spec.provider.outputs(), spec.provider.secret_output())
            .await
            .ok()?;
        Some(VaultStatus {
            entries: u32::try_from(entries).unwrap_or(u32::MAX),
            problem,
        })
    }
}
