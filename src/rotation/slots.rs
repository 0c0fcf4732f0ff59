//! Two credential slots and the index of the active one.

use crate::api::Strategy;
use chrono::{DateTime, Utc};

/// What rotor knows about one issued credential: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: String,
    pub fingerprint: String,
    pub issued_at: DateTime<Utc>,
    /// Set once the credential is revoked, or condemned (a rotation that revokes it
    /// has started): it is never handed to consumers again.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Slot {
    /// Whether the credential may still be handed out.
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// The two slots. `active` is `None` until the first rotation has completed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotPair {
    pub active: Option<u8>,
    pub slots: [Option<Slot>; 2],
}

/// What one rotation will do, decided before any provider call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPlan {
    pub strategy: Strategy,
    /// The slot the new credential goes into.
    pub target: u8,
    /// The credential to revoke before issuing: with dualPhase, the one issued two
    /// rotations ago that still sits in the target slot.
    pub revoke_before_issue: Option<String>,
    /// The active credential the new one replaces in place (singlePhase only).
    pub replaces: Option<String>,
}

impl SlotPair {
    /// The active slot's credential.
    pub fn active_slot(&self) -> Option<&Slot> {
        self.active
            .and_then(|i| self.slots[usize::from(i)].as_ref())
    }

    /// The still-valid credential that was active before the last rotation (none once
    /// it is revoked).
    pub fn previous_slot(&self) -> Option<&Slot> {
        self.inactive_slot().filter(|s| s.is_live())
    }

    /// What the inactive slot holds, revoked or not.
    pub fn inactive_slot(&self) -> Option<&Slot> {
        self.active
            .and_then(|i| self.slots[usize::from(1 - i)].as_ref())
    }

    /// Plans the next rotation.
    pub fn plan(&self, strategy: Strategy) -> RotationPlan {
        match strategy {
            Strategy::DualPhase => {
                let target = self.active.map_or(0, |a| 1 - a);
                RotationPlan {
                    strategy,
                    target,
                    revoke_before_issue: self.slots[usize::from(target)]
                        .as_ref()
                        .map(|s| s.id.clone()),
                    replaces: None,
                }
            }
            Strategy::SinglePhase => {
                let target = self.active.unwrap_or(0);
                RotationPlan {
                    strategy,
                    target,
                    revoke_before_issue: None,
                    replaces: self.slots[usize::from(target)]
                        .as_ref()
                        .map(|s| s.id.clone()),
                }
            }
        }
    }

    /// Records a completed rotation: the new credential sits in the planned slot and
    /// becomes active. With singlePhase the other slot is emptied (nothing stays valid).
    pub fn complete(&mut self, plan: &RotationPlan, issued: Slot) {
        self.slots[usize::from(plan.target)] = Some(issued);
        if plan.strategy == Strategy::SinglePhase {
            self.slots[usize::from(1 - plan.target)] = None;
        }
        self.active = Some(plan.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn slot(id: &str) -> Slot {
        Slot {
            id: id.into(),
            fingerprint: format!("sha256:{id}"),
            issued_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            revoked_at: None,
        }
    }

    #[test]
    fn dual_phase_alternates_slots_and_revokes_two_back() {
        let mut pair = SlotPair::default();
        let ids = ["c1", "c2", "c3", "c4"];
        let mut revoked = Vec::new();
        for id in ids {
            let plan = pair.plan(Strategy::DualPhase);
            revoked.push(plan.revoke_before_issue.clone());
            pair.complete(&plan, slot(id));
        }
        assert_eq!(
            revoked,
            vec![None, None, Some("c1".to_string()), Some("c2".to_string())]
        );
        assert_eq!(pair.active, Some(1));
        assert_eq!(pair.active_slot().unwrap().id, "c4");
        assert_eq!(pair.previous_slot().unwrap().id, "c3");
    }

    #[test]
    fn first_rotation_fills_slot_zero() {
        let plan = SlotPair::default().plan(Strategy::DualPhase);
        assert_eq!(plan.target, 0);
        assert_eq!(plan.revoke_before_issue, None);
    }

    #[test]
    fn single_phase_replaces_in_place() {
        let mut pair = SlotPair::default();
        pair.complete(&pair.plan(Strategy::SinglePhase), slot("p1"));
        let plan = pair.plan(Strategy::SinglePhase);
        assert_eq!(plan.target, 0);
        assert_eq!(plan.replaces.as_deref(), Some("p1"));
        assert_eq!(plan.revoke_before_issue, None);
        pair.complete(&plan, slot("p2"));
        assert_eq!(pair.active_slot().unwrap().id, "p2");
        assert!(pair.previous_slot().is_none());
    }
}
