//! `spec.deletionPolicy`: Retain (default) keeps issued credentials working when the
//! SecretRotation is deleted; Revoke holds the deletion with a finalizer until both
//! slots are revoked at the provider, and says so in an Event.

use super::Error;
use super::credentials;
use super::reconcile::Run;
use crate::api::DeletionPolicy;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::time::Duration;

/// The finalizer rotor sets with `deletionPolicy: Revoke`.
pub const REVOKE_FINALIZER: &str = "rotor.dev/revoke-on-delete";

impl Run {
    fn has_finalizer(&self) -> bool {
        self.sr.finalizers().iter().any(|f| f == REVOKE_FINALIZER)
    }

    /// The resource's finalizers without rotor's.
    fn other_finalizers(&self) -> Vec<String> {
        self.sr
            .finalizers()
            .iter()
            .filter(|f| *f != REVOKE_FINALIZER)
            .cloned()
            .collect()
    }

    async fn set_finalizers(&self, finalizers: Vec<String>) -> Result<(), Error> {
        // Guarded by resourceVersion: never drop somebody else's finalizer.
        let patch = serde_json::json!({
            "metadata": { "finalizers": finalizers, "resourceVersion": self.sr.resource_version() }
        });
        match self
            .rotations
            .patch(
                &self.sr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Stale),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds or removes the finalizer to match the policy. `Some` ends the reconcile.
    pub(super) async fn sync_finalizer(&self) -> Result<Option<Action>, Error> {
        if self.sr.metadata.deletion_timestamp.is_some() {
            return Ok(Some(if self.has_finalizer() {
                self.revoke_on_delete().await?
            } else {
                Action::await_change()
            }));
        }
        let wanted = self.sr.spec.deletion_policy == DeletionPolicy::Revoke;
        if wanted != self.has_finalizer() {
            let mut finalizers = self.other_finalizers();
            if wanted {
                finalizers.push(REVOKE_FINALIZER.into());
            }
            self.set_finalizers(finalizers).await?;
            // The watch brings the updated object.
            return Ok(Some(Action::await_change()));
        }
        Ok(None)
    }

    async fn revoke_on_delete(&self) -> Result<Action, Error> {
        let slots = super::status::slot_pair(&self.old);
        let ids: Vec<String> = slots.slots.iter().flatten().map(|s| s.id.clone()).collect();
        let outcome = async {
            let spec = credentials::prepare(&self.sr, &self.secrets, &self.ctx.http)
                .await
                .map_err(|e| e.to_string())?;
            for id in &ids {
                spec.provider
                    .revoke(id)
                    .await
                    .map_err(|e| format!("revoking {id}: {e}"))?;
            }
            Ok::<(), String>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                let note = if ids.is_empty() {
                    "deletionPolicy Revoke: nothing had been issued".to_string()
                } else {
                    format!(
                        "deletionPolicy Revoke: revoked {} at the provider before deletion",
                        ids.join(", ")
                    )
                };
                self.publish(EventType::Normal, "RevokedOnDelete", "Delete", note)
                    .await;
                self.set_finalizers(self.other_finalizers()).await?;
                Ok(Action::await_change())
            }
            Err(why) => {
                let note = format!(
                    "deletionPolicy Revoke: cannot revoke yet ({why}); retrying. To delete without revoking, remove the finalizer {REVOKE_FINALIZER}"
                );
                self.publish(EventType::Warning, "RevokeOnDeleteFailed", "Delete", note)
                    .await;
                Ok(Action::requeue(Duration::from_secs(30)))
            }
        }
    }
}
