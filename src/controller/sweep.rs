//! The orphan sweep: revokes credentials rotor created at the provider that are in no
//! slot (what a dead rotation left, what a failed test left). It runs after every
//! rotation, once at start, and every `--sweep-interval`. One sweep is bounded: at
//! most [`REVOKES_PER_SWEEP`] revokes within one `--provider-timeout` (the listing
//! included); what is left waits for the next sweep on the resource's schedule, so a
//! vendor listing thousands of names, each answered with a long `Retry-After`, holds a
//! worker no longer than one provider call would.

use super::audit::Audit;
use super::reconcile::Run;
use super::validate::ValidSpec;
use crate::rotation::{Revocation, SlotPair};
use crate::vault::Vault;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::collections::BTreeSet;
use tracing::{info, warn};

/// The most orphans one sweep revokes; the rest wait for the next sweep.
pub(super) const REVOKES_PER_SWEEP: usize = 20;

impl Run {
    /// Sweeps: revokes this resource's credentials at the provider that are in no slot,
    /// and notes when it ran.
    pub(super) async fn sweep(&self, spec: &ValidSpec, pair: &SlotPair, vault: &Vault, uid: &str) {
        if !spec.provider.lists_own() {
            return;
        }
        let already = {
            let mut book = self.ctx.sweep_book();
            let swept = book.entry(uid.to_string()).or_default();
            swept.at = Some(Utc::now());
            swept.revoked.clone()
        };
        let revoked = self.revoke_orphans(spec, pair, vault, uid, &already).await;
        if let Some(swept) = self.ctx.sweep_book().get_mut(uid) {
            swept.revoked.extend(revoked);
        }
        crate::metrics::count(&self.ctx.metrics.sweeps, spec.provider.kind());
    }

    /// The slots changed: what earlier sweeps revoked may be in one now, so the next
    /// sweep looks at everything again.
    pub(super) fn slots_changed(&self, uid: &str) {
        if let Some(swept) = self.ctx.sweep_book().get_mut(uid) {
            swept.revoked.clear();
        }
    }

    async fn revoke_orphans(
        &self,
        spec: &ValidSpec,
        pair: &SlotPair,
        vault: &Vault,
        uid: &str,
        already: &BTreeSet<String>,
    ) -> Vec<String> {
        // The whole sweep (listing and revokes) takes at most one provider call's time.
        let budget = self.ctx.settings.http.provider_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let prefix = spec.provider.name_prefix(uid);
        let keep: Vec<&str> = pair.slots.iter().flatten().map(|s| s.id.as_str()).collect();
        let listed = match spec.provider.list_own(&prefix).await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "listing credentials for the orphan sweep failed");
                return Vec::new();
            }
        };
        let mut revoked = Vec::new();
        let audit = Audit::operator(vault);
        let mut orphans: Vec<&String> = listed
            .iter()
            .filter(|id| !keep.contains(&id.as_str()) && !already.contains(*id))
            .collect();
        if orphans.len() > REVOKES_PER_SWEEP {
            // Each sweep starts somewhere else: orphans the vendor refuses to revoke
            // cannot keep the ones after them from ever being tried.
            let start = rand::random_range(0..orphans.len());
            orphans.rotate_left(start);
        }
        let total = orphans.len();
        let mut tried = 0;
        for orphan in orphans.into_iter().take(REVOKES_PER_SWEEP) {
            let Some(left) = deadline
                .checked_duration_since(tokio::time::Instant::now())
                .filter(|d| !d.is_zero())
            else {
                break;
            };
            tried += 1;
            let Ok(outcome) = tokio::time::timeout(left, spec.provider.revoke(orphan)).await else {
                warn!(credential = %orphan, "revoking an orphan did not finish within the sweep's time (--provider-timeout); the next sweep tries again");
                break;
            };
            match outcome {
                Ok(Revocation::Unsupported) => {
                    warn!(credential = %orphan, "the provider cannot revoke an orphaned credential; it stays valid at the vendor");
                }
                Ok(_) => {
                    info!(credential = %orphan, "revoked an orphaned credential");
                    let detail = Some("orphan sweep".into());
                    audit
                        .record("revoke", Some(orphan), None, None, detail)
                        .await;
                    crate::metrics::count(&self.ctx.metrics.orphans_swept, spec.provider.kind());
                    revoked.push(orphan.clone());
                }
                Err(e) => warn!(credential = %orphan, error = %e, "revoking an orphan failed"),
            }
        }
        if tried < total {
            // Not every orphan was looked at: the next sweep (on the resource's
            // schedule) carries on; what this one revoked is not revoked again.
            warn!(
                orphans = total,
                tried,
                left = total - tried,
                max = REVOKES_PER_SWEEP,
                within = %humantime::format_duration(budget),
                "the orphan sweep stopped at its bound; the next sweep carries on"
            );
        }
        revoked
    }

    /// When this resource's next orphan sweep is due. A resource this process has not
    /// swept yet is due now (the sweep at start); after that, every `--sweep-interval`,
    /// or never (`None`) when periodic sweeps are off (`0s`) or the provider has
    /// nothing to list.
    pub(super) fn sweep_due(&self, spec: &ValidSpec) -> Option<DateTime<Utc>> {
        if !spec.provider.lists_own() {
            return None;
        }
        let uid = self.sr.uid()?;
        let last = self.ctx.sweep_book().get(&uid).and_then(|s| s.at);
        let Some(last) = last else {
            return Some(self.now);
        };
        let every = chrono::Duration::from_std(self.ctx.settings.sweep_interval)
            .ok()
            .filter(|d| !d.is_zero())?;
        Some(
            last.checked_add_signed(every)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}
