//! rotor's own queue of looks at resources: the far next looks (more than [`FAR`]
//! away), and every reconcile a watch event asks for, wait here, not in kube-runtime's
//! scheduler; kube-runtime holds at most a few per controller at a time.
//!
//! Every resource has a next look (its next rotation, or `--resync-interval` at the
//! latest), so at rest every resource would hold a scheduler entry: kube-runtime's
//! holds the request's `ObjectRef` (name, namespace, resourceVersion and uid, each its
//! own allocation) in a `DelayQueue` and a `HashMap`, and a request due while every
//! worker is busy in a `HashSet` it never shrinks — about 0.8 KB a resource, and at a
//! cold start (or when every resource is annotated at once) all of them are due at
//! once. Here a look costs one shared `namespace/name` string and two small map
//! entries, the same entry whether the look is far or due now. When it is due, the
//! resource goes to its controller (`Controller::reconcile_on`) — at most `in_flight`
//! (twice the controller's workers) handed over whose reconcile has not started yet,
//! so that the workers never wait for work and kube-runtime never queues a whole
//! round. A reconcile says when it looks next. Near looks (retries, rollouts being
//! followed) stay with kube-runtime: they are few, and short-lived.
//!
//! A reconcile consumes its resource's look ([`Looks::taken`], at its start) and the
//! far one it asks for supersedes an earlier far one; a watch event's look ([`Looks::wake`])
//! that came while it ran is kept (it is earlier), as kube-runtime keeps the earlier of
//! two requests. A resource handed over and not started yet is not handed again: its
//! reconcile reads the newest object when it starts. A deleted resource's look is
//! dropped with it.

use super::guard::Guarded;
use futures::channel::mpsc;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// A look further away than this waits in [`Looks`].
pub const FAR: Duration = Duration::from_secs(300);

/// A resource handed to its controller whose reconcile has not started after this
/// long no longer counts against `in_flight` (kube-runtime dropped it: a resource
/// gone from its cache), so that a lost hand-over never stalls the queue.
const HANDED_FOR: Duration = Duration::from_secs(60);

/// A resource: `namespace/name` (a '/' is in neither), shared by the maps.
type Key = Arc<str>;

/// The looks of every controller of the process, and where each goes when due.
#[derive(Default)]
pub struct Looks {
    inner: Mutex<Inner>,
    /// A look earlier than every other was scheduled, a controller subscribed or a
    /// reconcile started (a hand-over slot freed): the timer looks again.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    /// By resource: its one look, so that a new one supersedes it.
    due: HashMap<Key, Due>,
    /// Per watch scope (a namespace, or `None` for all): its controller.
    routes: Vec<Route>,
    /// By due time, the looks of namespaces no controller takes (yet).
    unrouted: BTreeSet<(Instant, Key)>,
}

#[derive(Clone, Copy)]
struct Due {
    at: Instant,
    /// Asked for by a watch event (or a deferral), not by a reconcile's result.
    wake: bool,
}

struct Route {
    scope: Option<String>,
    tx: mpsc::UnboundedSender<ObjectRef<Guarded>>,
    /// By due time: what the timer waits for.
    queue: BTreeSet<(Instant, Key)>,
    /// Handed over, the reconcile not started yet: when.
    handed: HashMap<Key, Instant>,
    /// At most this many handed over at once.
    in_flight: usize,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Inner {
    /// The controller of `namespace`'s resources, if one subscribed.
    fn route(&self, namespace: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.scope.as_deref() == Some(namespace))
            .or_else(|| self.routes.iter().position(|r| r.scope.is_none()))
    }

    fn queue(&mut self, key: &str) -> &mut BTreeSet<(Instant, Key)> {
        let (namespace, _) = key.split_once('/').unwrap_or_default();
        match self.route(namespace) {
            Some(i) => &mut self.routes[i].queue,
            None => &mut self.unrouted,
        }
    }

    /// Drops `key`'s look, if it has one.
    fn remove(&mut self, key: &str) {
        if let Some((key, due)) = self.due.remove_entry(key) {
            self.queue(&key).remove(&(due.at, key.clone()));
        }
    }
}

impl Looks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resources of `scope` (a namespace; `None`: every namespace) whose look is
    /// due, for `Controller::reconcile_on`; at most `in_flight` handed over at once
    /// whose reconcile has not started.
    pub fn subscribe(
        &self,
        scope: Option<String>,
        in_flight: usize,
    ) -> mpsc::UnboundedReceiver<ObjectRef<Guarded>> {
        let (tx, rx) = mpsc::unbounded();
        let mut inner = self.lock();
        inner.routes.push(Route {
            scope,
            tx,
            queue: BTreeSet::new(),
            handed: HashMap::new(),
            in_flight: in_flight.max(1),
        });
        // Looks scheduled before (none in practice: the watches start after) move to
        // the controller that takes them now.
        let moved: Vec<(Instant, Key)> = std::mem::take(&mut inner.unrouted).into_iter().collect();
        for (at, key) in moved {
            inner.queue(&key).insert((at, key));
        }
        drop(inner);
        self.changed.notify_one();
        rx
    }

    /// The action that looks at `namespace/name` after `wait` (`None`: only when a
    /// watch event comes): a far one is kept here and the controller told to await a
    /// change; a near one is kube-runtime's requeue.
    pub fn look(&self, namespace: &str, name: &str, wait: Option<Duration>) -> Action {
        match wait {
            Some(wait) if wait > FAR => {
                // Past any Instant (centuries away): the farthest the clock can say,
                // which is still within --resync-interval's bound in practice.
                let at = Instant::now()
                    .checked_add(wait)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400));
                self.schedule(namespace, name, at, false);
                Action::await_change()
            }
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        }
    }

    /// A watch event asks for a reconcile of `namespace/name`: queued here, handed to
    /// its controller in turn. Nothing to do when it was handed over and has not
    /// started (it reads the newest object when it does).
    pub fn wake(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let key = key(namespace, name);
        if inner
            .route(namespace)
            .is_some_and(|i| inner.routes[i].handed.contains_key(key.as_str()))
        {
            return;
        }
        let first = Self::schedule_in(&mut inner, key, Instant::now(), true);
        drop(inner);
        if first {
            self.changed.notify_one();
        }
    }

    /// A reconcile of `namespace/name` could not run now (its namespace's workers are
    /// busy): it waits here `wait`, in turn with every other look, and the controller
    /// is told to await a change.
    pub fn defer(&self, namespace: &str, name: &str, wait: Duration) -> Action {
        self.schedule(namespace, name, Instant::now() + wait, true);
        Action::await_change()
    }

    /// Looks at `namespace/name` at `at`: the earlier of it and a look already waiting
    /// when either is a wake (a watch event that came while a reconcile ran outlives
    /// the look that reconcile asks for), else instead of it.
    fn schedule(&self, namespace: &str, name: &str, at: Instant, wake: bool) {
        let first = Self::schedule_in(&mut self.lock(), key(namespace, name), at, wake);
        if first {
            self.changed.notify_one();
        }
    }

    /// [`Self::schedule`] under the lock; whether the look is the first due.
    fn schedule_in(inner: &mut Inner, key: String, at: Instant, wake: bool) -> bool {
        let key: Key = match inner.due.get_key_value(key.as_str()) {
            Some((key, old)) => {
                if (old.wake || wake) && old.at <= at {
                    return false;
                }
                key.clone()
            }
            None => key.into(),
        };
        inner.remove(&key);
        inner.due.insert(key.clone(), Due { at, wake });
        let queue = inner.queue(&key);
        queue.insert((at, key));
        queue.first().map(|(first, _)| *first) == Some(at)
    }

    /// A reconcile of `namespace/name` started: it decides the next look.
    pub fn taken(&self, namespace: &str, name: &str) {
        let key = key(namespace, name);
        let mut inner = self.lock();
        inner.remove(&key);
        let freed = inner
            .route(namespace)
            .is_some_and(|i| inner.routes[i].handed.remove(key.as_str()).is_some());
        drop(inner);
        if freed {
            self.changed.notify_one();
        }
    }

    /// `namespace/name` is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.taken(namespace, name);
    }

    /// After a watch of `scope` listed everything again: drops the looks (and the
    /// hand-overs) of its resources that the list did not find (deleted while the
    /// watch was down).
    pub fn retain_listed(
        &self,
        scope: Option<&str>,
        listed: &std::collections::HashSet<crate::metrics::ResourceLabels>,
    ) {
        let gone = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or_default();
            scope.is_none_or(|s| s == namespace)
                && !listed.contains(&crate::metrics::ResourceLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                })
        };
        let mut inner = self.lock();
        let dropped: Vec<Key> = inner.due.keys().filter(|k| gone(k)).cloned().collect();
        for key in dropped {
            inner.remove(&key);
        }
        for route in &mut inner.routes {
            route.handed.retain(|key, _| !gone(key));
        }
        drop(inner);
        self.changed.notify_one();
    }

    /// How many looks are waiting.
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether no look is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `namespace/name` is looked at next, if that is a look of its own.
    pub fn due(&self, namespace: &str, name: &str) -> Option<Instant> {
        self.lock()
            .due
            .get(key(namespace, name).as_str())
            .map(|d| d.at)
    }

    /// Hands every due look to its controller, at its time, for ever.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.fire(Instant::now());
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    /// Hands over the looks due at `now` that the controllers take; when to look
    /// again (a look falls due, or a hand-over lapses).
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut next: Option<Instant> = None;
        let mut soonest = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        for route in &mut inner.routes {
            route
                .handed
                .retain(|_, at| now.saturating_duration_since(*at) < HANDED_FOR);
            while route.handed.len() < route.in_flight
                && let Some((at, _)) = route.queue.first()
                && *at <= now
            {
                let Some((_, key)) = route.queue.pop_first() else {
                    break;
                };
                inner.due.remove(&key);
                let (namespace, name) = key.split_once('/').unwrap_or_default();
                // A controller that stopped (shutdown) takes nothing more.
                if route
                    .tx
                    .unbounded_send(ObjectRef::new(name).within(namespace))
                    .is_ok()
                {
                    route.handed.insert(key, now);
                }
            }
            match route.queue.first() {
                // Due, but as many handed over as may be: when the oldest lapses (a
                // reconcile starting wakes the timer before).
                Some((at, _)) if *at <= now => {
                    if let Some(oldest) = route.handed.values().min() {
                        soonest(*oldest + HANDED_FOR);
                    }
                }
                Some((at, _)) => soonest(*at),
                None => {}
            }
        }
        // No controller takes them: dropped when due, as a controller that stopped
        // drops its own.
        while let Some((at, _)) = inner.unrouted.first()
            && *at <= now
        {
            if let Some((_, key)) = inner.unrouted.pop_first() {
                inner.due.remove(&key);
            }
        }
        if let Some((at, _)) = inner.unrouted.first() {
            soonest(*at);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    const HOUR: Duration = Duration::from_secs(3600);
    const MS: Duration = Duration::from_millis(1);

    fn name(r: &ObjectRef<Guarded>) -> String {
        format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
    }

    /// The next look handed over, and how long after `since` it came.
    async fn next(
        rx: &mut mpsc::UnboundedReceiver<ObjectRef<Guarded>>,
        since: Instant,
    ) -> (String, Duration) {
        let r = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap()
            .unwrap();
        (name(&r), since.elapsed())
    }

    fn started() -> (Arc<Looks>, mpsc::UnboundedReceiver<ObjectRef<Guarded>>) {
        let looks = Arc::new(Looks::default());
        let rx = looks.subscribe(None, 64);
        tokio::spawn(looks.clone().run());
        (looks, rx)
    }

    #[tokio::test]
    async fn a_far_look_waits_here_until_its_time_a_near_one_is_kube_s() {
        let (looks, _rx) = started();
        let before = Instant::now();
        assert_eq!(looks.look("a", "x", Some(3 * HOUR)), Action::await_change());
        let due = looks.due("a", "x").unwrap();
        assert!(due >= before + 3 * HOUR && due <= Instant::now() + 3 * HOUR);
        // Near: kube-runtime's requeue, nothing kept here.
        assert_eq!(
            looks.look("a", "z", Some(Duration::from_secs(30))),
            Action::requeue(Duration::from_secs(30))
        );
        assert_eq!(looks.look("a", "w", None), Action::await_change());
        assert_eq!(looks.len(), 1);
    }

    #[tokio::test]
    async fn a_look_fires_at_its_time_once() {
        let (looks, mut rx) = started();
        let t0 = Instant::now();
        looks.schedule("a", "x", t0 + 300 * MS, false);
        looks.schedule("a", "y", t0 + 100 * MS, false);
        let (first, after) = next(&mut rx, t0).await;
        assert_eq!(first, "a/y");
        assert!(after >= 100 * MS && after < 250 * MS, "{after:?}");
        let (second, after) = next(&mut rx, t0).await;
        assert_eq!(second, "a/x");
        assert!(after >= 300 * MS, "{after:?}");
        assert!(looks.is_empty());
        // Nothing more.
        tokio::time::sleep(300 * MS).await;
        assert!(futures::poll!(rx.next()).is_pending());
    }

    #[tokio::test]
    async fn a_new_look_supersedes_the_old_and_a_taken_or_deleted_one_never_fires() {
        let (looks, mut rx) = started();
        let t0 = Instant::now();
        // Superseded by a later look: fires then, and once.
        looks.schedule("a", "x", t0 + 100 * MS, false);
        looks.schedule("a", "x", t0 + 400 * MS, false);
        // Superseded by an earlier one: the sleeping timer wakes for it.
        looks.schedule("a", "y", t0 + 10_000 * MS, false);
        tokio::time::sleep(50 * MS).await;
        looks.schedule("a", "y", t0 + 200 * MS, false);
        // A reconcile started, and asked for no far look: none.
        looks.schedule("a", "taken", t0 + 100 * MS, false);
        looks.taken("a", "taken");
        // Deleted.
        looks.schedule("a", "gone", t0 + 100 * MS, false);
        looks.forget("a", "gone");
        assert_eq!(looks.len(), 2);
        let (first, after) = next(&mut rx, t0).await;
        assert_eq!(first, "a/y");
        assert!(after >= 200 * MS && after < 350 * MS, "{after:?}");
        let (second, after) = next(&mut rx, t0).await;
        assert_eq!(second, "a/x");
        assert!(after >= 400 * MS, "{after:?}");
        tokio::time::sleep(300 * MS).await;
        assert!(futures::poll!(rx.next()).is_pending());
        assert!(looks.is_empty());
    }

    #[tokio::test]
    async fn each_look_goes_to_the_controller_of_its_namespace() {
        let looks = Arc::new(Looks::default());
        let mut shop = looks.subscribe(Some("shop".into()), 64);
        let mut bank = looks.subscribe(Some("bank".into()), 64);
        tokio::spawn(looks.clone().run());
        let t0 = Instant::now();
        looks.schedule("bank", "x", t0 + 50 * MS, false);
        looks.schedule("shop", "y", t0 + 100 * MS, false);
        assert_eq!(next(&mut bank, t0).await.0, "bank/x");
        assert_eq!(next(&mut shop, t0).await.0, "shop/y");
    }

    #[tokio::test]
    async fn a_relist_drops_the_looks_of_resources_it_did_not_find() {
        let looks = Looks::default();
        for (ns, name) in [("shop", "kept"), ("shop", "gone"), ("other", "elsewhere")] {
            looks.look(ns, name, Some(HOUR));
        }
        let listed = std::collections::HashSet::from([crate::metrics::ResourceLabels {
            namespace: "shop".into(),
            name: "kept".into(),
        }]);
        looks.retain_listed(Some("shop"), &listed);
        assert!(looks.due("shop", "kept").is_some());
        assert!(looks.due("shop", "gone").is_none());
        assert!(looks.due("other", "elsewhere").is_some());
        looks.retain_listed(None, &listed);
        assert!(looks.due("other", "elsewhere").is_none());
        assert_eq!(looks.len(), 1);
    }

    #[tokio::test]
    async fn at_most_in_flight_are_handed_over_until_their_reconciles_start() {
        let looks = Arc::new(Looks::default());
        let mut rx = looks.subscribe(None, 2);
        tokio::spawn(looks.clone().run());
        let t0 = Instant::now();
        for name in ["a", "b", "c", "d"] {
            looks.wake("ns", name);
        }
        assert_eq!(next(&mut rx, t0).await.0, "ns/a");
        assert_eq!(next(&mut rx, t0).await.0, "ns/b");
        tokio::time::sleep(100 * MS).await;
        assert!(futures::poll!(rx.next()).is_pending(), "two in flight");
        // Woken again before its reconcile started: not handed over twice.
        looks.wake("ns", "a");
        assert_eq!(looks.len(), 2);
        looks.taken("ns", "a");
        assert_eq!(next(&mut rx, t0).await.0, "ns/c");
        // A deleted one frees its place too.
        looks.forget("ns", "b");
        assert_eq!(next(&mut rx, t0).await.0, "ns/d");
        assert!(looks.is_empty());
    }

    #[tokio::test]
    async fn a_wake_during_a_reconcile_outlives_the_far_look_it_asks_for() {
        let (looks, mut rx) = started();
        let t0 = Instant::now();
        looks.wake("a", "x");
        assert_eq!(next(&mut rx, t0).await.0, "a/x");
        looks.taken("a", "x");
        // An annotation while it runs; then the reconcile asks for its next look.
        looks.wake("a", "x");
        looks.look("a", "x", Some(3 * HOUR));
        assert_eq!(next(&mut rx, t0).await.0, "a/x");
        looks.taken("a", "x");
        assert_eq!(looks.look("a", "x", Some(3 * HOUR)), Action::await_change());
        assert!(looks.due("a", "x").unwrap() >= t0 + 3 * HOUR);
        // A deferral waits its time, and a wake does not put it off.
        let t1 = Instant::now();
        looks.defer("a", "y", 200 * MS);
        looks.wake("a", "y");
        let (name, after) = next(&mut rx, t1).await;
        assert_eq!(name, "a/y");
        assert!(after < 150 * MS, "the wake is earlier: {after:?}");
    }

    #[tokio::test]
    async fn a_hand_over_whose_reconcile_never_starts_lapses() {
        let looks = Looks::default();
        let mut rx = looks.subscribe(None, 1);
        looks.wake("a", "x");
        looks.wake("a", "y");
        let now = Instant::now();
        let lapses = looks.fire(now).unwrap();
        assert_eq!(name(&rx.next().await.unwrap()), "a/x");
        assert!(futures::poll!(rx.next()).is_pending());
        // a/x never starts (gone from kube-runtime's cache): a/y goes when that
        // hand-over lapses.
        assert_eq!(lapses, now + HANDED_FOR);
        assert_eq!(looks.fire(lapses - MS), Some(lapses));
        assert!(futures::poll!(rx.next()).is_pending());
        assert_eq!(looks.fire(lapses), None);
        assert_eq!(name(&rx.next().await.unwrap()), "a/y");
    }
}
