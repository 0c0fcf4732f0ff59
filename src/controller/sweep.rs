//! The orphan sweep: revokes credentials rotor created at the provider that are in no
//! slot (what a dead rotation left, what a failed test left). It runs after every
//! rotation, once at start, and every `--sweep-interval`. One sweep is bounded: at
//! most [`REVOKES_PER_SWEEP`] revokes within one `--provider-timeout` (the listing
//! included); what is left waits for the resource's next sweep, which starts at a
//! random orphan, so a vendor listing thousands of names, each answered with a long
//! `Retry-After`, holds a worker no longer than one provider call would, and an orphan
//! whose revoke always runs out the time cannot keep the others from being tried.

use super::audit::Audit;
use super::reconcile::Run;
use super::validate::ValidSpec;
use crate::rotation::{Revocation, SlotPair};
use crate::vault::Vault;
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// The most orphans one sweep revokes; the rest wait for the next sweep.
pub(super) const REVOKES_PER_SWEEP: usize = 20;

/// The least time left for a sweep to start another revoke (or a quarter of
/// `--provider-timeout` when that is shorter): a revoke that reaches the vendor is not
/// cut off before its answer is recorded.
const MIN_REVOKE_TIME: Duration = Duration::from_secs(5);

/// When a sweep that starts at `now` must be done: one `--provider-timeout` later, or
/// a day when that is beyond what the clock can add (a huge flag is not a panic).
fn sweep_deadline(now: Instant, budget: Duration) -> Instant {
    now.checked_add(budget)
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// Whether a sweep with `left` of its `budget` may start another revoke.
fn may_start_revoke(left: Duration, budget: Duration) -> bool {
    left >= MIN_REVOKE_TIME.min(budget / 4) && !left.is_zero()
}

/// The orphans in the order a sweep tries them: rotated to start at `start` (modulo
/// their number), whatever their number, so that an orphan whose revoke always runs
/// out the sweep's time cannot keep the ones after it from ever being tried.
fn sweep_order<T>(mut orphans: Vec<T>, start: usize) -> Vec<T> {
    if !orphans.is_empty() {
        let start = start % orphans.len();
        orphans.rotate_left(start);
    }
    orphans
}
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
        let deadline = sweep_deadline(Instant::now(), budget);
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
        let orphans: Vec<&String> = listed
            .iter()
            .filter(|id| !keep.contains(&id.as_str()) && !already.contains(*id))
            .collect();
        // Each sweep starts at a random orphan, however few there are: one the vendor
        // never answers for cannot keep the ones after it from ever being tried.
        let start = rand::random_range(0..orphans.len().max(1));
        let orphans = sweep_order(orphans, start);
        let total = orphans.len();
        let mut tried = 0;
        for orphan in orphans.into_iter().take(REVOKES_PER_SWEEP) {
            // Not started with too little time left: a revoke cut off after it reached
            // the vendor would go unrecorded.
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| may_start_revoke(*left, budget))
            else {
                break;
            };
            tried += 1;
            let Ok(outcome) = tokio::time::timeout(left, spec.provider.revoke(orphan)).await else {
                warn!(credential = %orphan, "revoking an orphan did not finish within the sweep's time (--provider-timeout); a later sweep tries again");
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
            // Not every orphan was looked at: the resource's next sweep (every
            // --sweep-interval; with 0s only after its next rotation or a restart)
            // starts at a random orphan; what this one revoked is not revoked again.
            warn!(
                orphans = total,
                tried,
                left = total - tried,
                max = REVOKES_PER_SWEEP,
                within = %humantime::format_duration(budget),
                "the orphan sweep stopped at its bound; the resource's next sweep (after --sweep-interval, or its next rotation or a restart when that is 0s) starts at a random orphan"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_orphan_is_tried_first_by_some_sweep_however_few_there_are() {
        for n in 1..=REVOKES_PER_SWEEP {
            let orphans: Vec<usize> = (0..n).collect();
            let mut first = vec![false; n];
            for sweep in 0..n {
                let order = sweep_order(orphans.clone(), sweep);
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, orphans, "an orphan was lost or doubled");
                first[order[0]] = true;
            }
            assert!(first.iter().all(|f| *f), "{n} orphans: {first:?}");
        }
        assert!(sweep_order(Vec::<usize>::new(), 7).is_empty());
        assert_eq!(sweep_order(vec![1, 2, 3], usize::MAX).len(), 3);
    }

    #[test]
    fn a_revoke_is_not_started_with_too_little_time_left() {
        let budget = Duration::from_secs(120);
        assert!(may_start_revoke(Duration::from_secs(120), budget));
        assert!(may_start_revoke(MIN_REVOKE_TIME, budget));
        assert!(!may_start_revoke(Duration::from_secs(4), budget));
        assert!(!may_start_revoke(Duration::from_millis(1), budget));
        // A short --provider-timeout: a quarter of it.
        let short = Duration::from_secs(2);
        assert!(may_start_revoke(Duration::from_millis(600), short));
        assert!(!may_start_revoke(Duration::from_millis(400), short));
        assert!(!may_start_revoke(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn a_huge_provider_timeout_is_a_deadline_not_a_panic() {
        let now = Instant::now();
        let deadline = sweep_deadline(now, Duration::MAX);
        assert!(deadline >= now);
        assert_eq!(
            sweep_deadline(now, Duration::from_secs(120)),
            now + Duration::from_secs(120)
        );
    }
}
