//! A fair share of the workers per namespace, and backoff for a reconcile that panics.
//!
//! The controller runs at most `--concurrency` reconciles at once. Without a cap per
//! namespace, a tenant with four resources whose vendor never answers holds four
//! workers until their calls time out; with the cap, the tenant's other resources wait
//! (requeued, holding no worker) and every other namespace keeps its share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How many reconciles of one namespace may run at once: a quarter of the workers,
/// at least one.
pub fn per_namespace(concurrency: u16) -> usize {
    usize::from(concurrency / 4).max(1)
}

/// Reconciles running per namespace.
#[derive(Debug)]
pub struct Fairness {
    limit: usize,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// One running reconcile's slot; freed when dropped (also when the reconcile panics).
#[derive(Debug)]
pub struct Permit {
    namespace: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl Fairness {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            running: Arc::default(),
        }
    }

    /// A slot for one reconcile in `namespace`, or `None` when its share is in use.
    pub fn try_acquire(&self, namespace: &str) -> Option<Permit> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let count = running.entry(namespace.to_string()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Permit {
            namespace: namespace.to_string(),
            running: self.running.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.namespace);
            }
        }
    }
}

/// Per resource, how many reconciles in a row panicked.
#[derive(Debug, Default)]
pub struct PanicBackoff {
    panics: Mutex<HashMap<String, u32>>,
}

/// First retry after a panic; doubles per panic in a row.
const PANIC_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest wait between two attempts of a resource whose reconcile keeps panicking.
pub const PANIC_BACKOFF_MAX: Duration = Duration::from_secs(300);

impl PanicBackoff {
    /// Records a panic of `namespace/name`; returns how long to wait before the next
    /// attempt.
    pub fn next(&self, namespace: &str, name: &str) -> Duration {
        let mut panics = self.panics.lock().unwrap_or_else(PoisonError::into_inner);
        let n = panics.entry(format!("{namespace}/{name}")).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        PANIC_BACKOFF_BASE
            .checked_mul(factor)
            .unwrap_or(PANIC_BACKOFF_MAX)
            .min(PANIC_BACKOFF_MAX)
    }

    /// A reconcile of `namespace/name` finished without panicking.
    pub fn reset(&self, namespace: &str, name: &str) {
        let mut panics = self.panics.lock().unwrap_or_else(PoisonError::into_inner);
        if !panics.is_empty() {
            panics.remove(&format!("{namespace}/{name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_its_share_and_no_more() {
        assert_eq!(per_namespace(4), 1);
        assert_eq!(per_namespace(16), 4);
        assert_eq!(per_namespace(1), 1);
        let f = Fairness::new(per_namespace(8));
        let a1 = f.try_acquire("a").unwrap();
        let _a2 = f.try_acquire("a").unwrap();
        assert!(f.try_acquire("a").is_none());
        let _b = f
            .try_acquire("b")
            .expect("another namespace is not blocked");
        drop(a1);
        assert!(f.try_acquire("a").is_some());
    }

    #[test]
    fn panic_backoff_doubles_up_to_the_cap_and_resets() {
        let b = PanicBackoff::default();
        assert_eq!(b.next("a", "x"), Duration::from_secs(5));
        assert_eq!(b.next("a", "x"), Duration::from_secs(10));
        for _ in 0..100 {
            assert!(b.next("a", "x") <= PANIC_BACKOFF_MAX);
        }
        assert_eq!(b.next("a", "x"), PANIC_BACKOFF_MAX);
        b.reset("a", "x");
        assert_eq!(b.next("a", "x"), Duration::from_secs(5));
    }
}
