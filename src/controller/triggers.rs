//! Which watch events wake a reconcile: a SecretRotation whose [`Guarded::trigger`]
//! changed since the watch last showed it (or that is new to it).
//!
//! kube-runtime's `predicate_filter` does the same keyed by the object's name,
//! namespace and uid as strings (three allocations and a wide map entry, about 0.2 KB a
//! resource); here the key is a 64-bit hash of namespace and name and the value the
//! trigger hash, 16 bytes a resource, and a deleted resource leaves at once (the
//! predicate cache kept it for an hour).
//!
//! Why a hash key cannot make rotor miss a change: two resources whose keys collide
//! share an entry, so each event of one is compared with the other's trigger, which
//! differs (the trigger hashes the uid, unique per object) — the event wakes its
//! resource, an extra reconcile at most. Skipping an event wrongly needs the two keys
//! *and* the two triggers to be equal, 128 bits at once (about 1e-30 for a pair), and
//! no tenant can aim at it: the key hash is keyed at random per process.

use super::guard::Guarded;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The last trigger of every resource one watch saw.
#[derive(Default)]
pub struct Triggers {
    seen: Mutex<HashMap<u64, u64>>,
    keys: RandomState,
}

impl Triggers {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, namespace: &str, name: &str) -> u64 {
        self.keys.hash_one((namespace, name))
    }

    /// Whether `obj` wakes a reconcile: new, or what wakes one changed. Notes it.
    pub fn wakes(&self, obj: &Guarded) -> bool {
        let key = self.key(
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default(),
        );
        self.lock().insert(key, obj.trigger) != Some(obj.trigger)
    }

    /// The resource is gone: a new one of the same name wakes.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = self.key(namespace, name);
        self.lock().remove(&key);
    }

    /// After the watch listed everything again: forgets what the list did not find.
    pub fn retain_listed(&self, listed: &HashSet<crate::metrics::ResourceLabels>) {
        let keep: HashSet<u64> = listed
            .iter()
            .map(|l| self.key(&l.namespace, &l.name))
            .collect();
        self.lock().retain(|key, _| keep.contains(key));
    }

    /// How many resources are known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no resource is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, uid: &str, annotation: &str, rv: &str) -> Guarded {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv,
                         "annotations": {"rotor.dev/rotate": annotation}},
            "spec": {"provider": {"random": {}}, "secretsMapping": {"value": "V"},
                     "target": {"name": "t"}},
        }))
        .unwrap()
    }

    #[test]
    fn a_new_or_changed_resource_wakes_a_status_write_does_not() {
        let t = Triggers::default();
        assert!(t.wakes(&object("a", "u1", "1", "5")), "new");
        assert!(
            !t.wakes(&object("a", "u1", "1", "6")),
            "only its resourceVersion"
        );
        assert!(
            t.wakes(&object("a", "u1", "2", "7")),
            "an annotation changed"
        );
        assert!(!t.wakes(&object("a", "u1", "2", "8")));
        assert!(t.wakes(&object("b", "u2", "2", "9")), "another resource");
        // Deleted and created again while the watch was down: another uid wakes.
        assert!(t.wakes(&object("a", "u3", "2", "10")));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_deleted_or_unlisted_resource_is_forgotten() {
        let t = Triggers::default();
        t.wakes(&object("a", "u1", "1", "5"));
        t.wakes(&object("b", "u2", "1", "5"));
        t.forget("ns", "a");
        assert_eq!(t.len(), 1);
        assert!(t.wakes(&object("a", "u1", "1", "6")), "known no more");
        let listed = HashSet::from([crate::metrics::ResourceLabels {
            namespace: "ns".into(),
            name: "a".into(),
        }]);
        t.retain_listed(&listed);
        assert_eq!(t.len(), 1);
        assert!(!t.wakes(&object("a", "u1", "1", "7")), "kept");
        assert!(t.wakes(&object("b", "u2", "1", "7")), "dropped");
    }
}
