//! `spec.deletionPolicy`: Retain (default) keeps issued credentials working when the
//! SecretRotation is deleted; Revoke holds the deletion with a finalizer until both
//! slots are revoked at the provider, and says so in an Event.

use super::Error;
use super::credentials;
use super::reconcile::Run;
use crate::api::DeletionPolicy;
use crate::rotation::Revocation;
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
            Ok(written) => {
                self.ctx.wrote(
                    &self.sr.metadata,
                    written.metadata.resource_version.as_deref(),
                );
                Ok(())
            }
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

    /// What revoke-on-delete must revoke: both slots, what an emergency left pending,
    /// and the credential an unfinished rotation issued (found in the vault by its
    /// name). As (id, what it is) pairs; an in-flight credential the vault cannot
    /// name has no id and can only be reported.
    async fn to_revoke(&self) -> Vec<(Option<String>, String)> {
        let slots = super::status::slot_pair(&self.old);
        let mut out: Vec<(Option<String>, String)> = slots
            .slots
            .iter()
            .flatten()
            .map(|s| (Some(s.id.clone()), format!("{} ({})", s.id, s.fingerprint)))
            .collect();
        for p in &self.old.pending_revocations {
            if !out
                .iter()
                .any(|(id, _)| id.as_deref() == Some(p.id.as_str()))
            {
                out.push((Some(p.id.clone()), format!("{} ({})", p.id, p.fingerprint)));
            }
        }
        if let Some(f) = &self.old.in_flight {
            let (outputs, secret_output) = crate::providers::outputs_of(&self.sr.spec.provider);
            let entry = match self.vault().await {
                Ok(vault) => vault
                    .get(&f.credential_name, outputs, secret_output)
                    .await
                    .ok()
                    .flatten()
                    .map(|(entry, _)| entry),
                Err(_) => None,
            };
            match entry {
                Some(e)
                    if !out
                        .iter()
                        .any(|(id, _)| id.as_deref() == Some(e.id.as_str())) =>
                {
                    out.push((
                        Some(e.id.clone()),
                        format!("{} ({}, in flight)", e.id, e.fingerprint),
                    ));
                }
                Some(_) => {}
                None => out.push((
                    None,
                    format!("{} (in flight; not in the escrow)", f.credential_name),
                )),
            }
        }
        out
    }

    /// Whether the resource's namespace is being deleted. Reads the Namespace; where
    /// rotor may not (a namespaced install), asks the API server to dry-run a Secret
    /// create, which a terminating namespace refuses.
    async fn namespace_terminating(&self) -> bool {
        let ns = self.sr.namespace().unwrap_or_default();
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.ctx.client.clone());
        match namespaces.get_opt(&ns).await {
            Ok(Some(n)) => {
                return n.metadata.deletion_timestamp.is_some()
                    || n.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
            }
            Ok(None) => return true,
            Err(_) => {}
        }
        let probe = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                generate_name: Some("rotor-probe-".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let params = kube::api::PostParams {
            dry_run: true,
            field_manager: Some(crate::api::FIELD_MANAGER.into()),
        };
        match self.secrets.create(&params, &probe).await {
            Err(kube::Error::Api(e)) => e.code == 403 && e.message.contains("being terminated"),
            _ => false,
        }
    }

    async fn revoke_on_delete(&self) -> Result<Action, Error> {
        let targets = self.to_revoke().await;
        // Never ask another provider to revoke the old one's ids.
        let changed = self.provider_changed();
        let mut still: Vec<String> = Vec::new();
        let mut revoked: Vec<String> = Vec::new();
        // A provider that cannot revoke never will: retrying would hold the deletion
        // (and publish a Warning every 30 s) for ever.
        let mut unsupported = false;
        let outcome = async {
            if changed {
                return Err(format!(
                    "spec.provider changed since these were issued (issued by {})",
                    self.old.issued_by.as_deref().unwrap_or("another provider")
                ));
            }
            let spec = credentials::prepare(&self.sr, &self.secrets, &self.ctx.http)
                .await
                .map_err(|e| e.to_string())?;
            let mut first_error = None;
            for (id, what) in &targets {
                // An in-flight credential the vault does not hold was never kept:
                // a crash before the vault write (the orphan sweep's case), or no
                // issue at all. Named in the Event, not waited for.
                let Some(id) = id else {
                    continue;
                };
                match spec.provider.revoke(id).await {
                    Ok(Revocation::Revoked | Revocation::AlreadyGone) => revoked.push(what.clone()),
                    Ok(Revocation::Unsupported) => {
                        unsupported = true;
                        still.push(what.clone());
                        first_error.get_or_insert_with(|| "the provider cannot revoke".to_string());
                    }
                    Err(e) => {
                        still.push(what.clone());
                        first_error.get_or_insert_with(|| format!("revoking {id}: {e}"));
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        .await;
        match outcome {
            Ok(()) => {
                let unknown: Vec<&str> = targets
                    .iter()
                    .filter(|(id, _)| id.is_none())
                    .map(|(_, what)| what.as_str())
                    .collect();
                let mut note = if revoked.is_empty() {
                    "deletionPolicy Revoke: nothing had been issued".to_string()
                } else {
                    format!(
                        "deletionPolicy Revoke: revoked {} at the provider before deletion",
                        revoked.join(", ")
                    )
                };
                if !unknown.is_empty() {
                    note.push_str(&format!(
                        "; unknown to the escrow, not revoked: {}",
                        unknown.join(", ")
                    ));
                }
                self.publish(EventType::Normal, "RevokedOnDelete", "Delete", note)
                    .await;
                self.set_finalizers(self.other_finalizers()).await?;
                Ok(Action::await_change())
            }
            Err(why) if changed || unsupported || self.namespace_terminating().await => {
                // Nothing will bring the provider's Secrets back (the namespace is
                // going), or the provider is another one: holding the finalizer would
                // only keep the namespace from going. Say what stays valid.
                let mut valid: Vec<String> = if changed {
                    targets.iter().map(|(_, what)| what.clone()).collect()
                } else if still.is_empty() && revoked.is_empty() {
                    targets.iter().map(|(_, what)| what.clone()).collect()
                } else {
                    still.clone()
                };
                valid.dedup();
                let note = format!(
                    "deletionPolicy Revoke: gave up ({why}); still valid at the provider: {}; revoke by hand. The finalizer is removed so that the deletion can finish",
                    if valid.is_empty() {
                        "nothing".to_string()
                    } else {
                        valid.join(", ")
                    }
                );
                tracing::warn!(name = %self.sr.name_any(), %note, "revoke on delete abandoned");
                self.publish(
                    EventType::Warning,
                    "RevokeOnDeleteAbandoned",
                    "Delete",
                    note,
                )
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
