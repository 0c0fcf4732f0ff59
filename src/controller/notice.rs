//! The webhook of `spec.notify`, fed from the controller's transitions: the signing
//! key is read from its Secret at each notification; delivery runs off the reconcile
//! (a failed one never blocks or undoes a rotation, and is counted and logged).

use super::credentials::{ALLOW_READ_ANNOTATION, shared_with};
use super::reconcile::Run;
use super::validate::ValidSpec;
use crate::notify::{Notification, NotifyEvent, Webhook};
use kube::ResourceExt;
use secrecy::SecretString;
use tracing::warn;

impl Run {
    /// Sends `event` to the resource's webhook, if it has one.
    pub(super) async fn notify(
        &self,
        spec: &ValidSpec,
        event: NotifyEvent,
        message: String,
        fingerprint: Option<String>,
    ) {
        let Some(hook) = &spec.webhook else {
            return;
        };
        let r = &hook.signing_secret_ref;
        let resource = self.sr.name_any();
        let key = match self.secrets.get_opt(&r.name).await {
            // Like every Secret rotor reads for a SecretRotation, the key must opt in:
            // else whoever may create a SecretRotation could have any Secret of the
            // namespace used as an HMAC key and guess it offline from the signatures.
            Ok(Some(secret)) if !shared_with(&secret, ALLOW_READ_ANNOTATION, &resource) => {
                warn!(name = %resource, secret = %r.name, event = event.as_str(), "the webhook signing Secret does not allow this SecretRotation to read it (annotation {ALLOW_READ_ANNOTATION}): notification not sent");
                crate::metrics::Metrics::result(&self.ctx.metrics.webhook_deliveries, "failed");
                return;
            }
            Ok(Some(secret)) => secret
                .data
                .and_then(|mut d| d.remove(&r.key))
                .and_then(|b| String::from_utf8(b.0).ok())
                .filter(|k| !k.is_empty()),
            Ok(None) => None,
            Err(e) => {
                warn!(name = %self.sr.name_any(), error = %e, "reading the webhook signing Secret failed");
                None
            }
        };
        let Some(key) = key else {
            warn!(name = %self.sr.name_any(), secret = %r.name, key = %r.key, event = event.as_str(), "the webhook signing key is missing: notification not sent");
            crate::metrics::Metrics::result(&self.ctx.metrics.webhook_deliveries, "failed");
            return;
        };
        self.ctx.notifier.send(
            Webhook {
                url: hook.url.clone(),
                key: SecretString::from(key),
                format: hook.format,
            },
            Notification {
                event,
                namespace: self.sr.namespace().unwrap_or_default(),
                name: self.sr.name_any(),
                time: self.now,
                message,
                fingerprint,
                // A rotation that just completed is the next one after the status read.
                rotation: Some(match event {
                    NotifyEvent::Rotated => self.old.rotation_count.saturating_add(1),
                    _ => self.old.rotation_count,
                }),
            },
        );
    }
}
