//! Far looks: the next look at a resource that is more than [`FAR`] away waits here,
//! not in kube-runtime's scheduler.
//!
//! Every resource has a next look (its next rotation, or `--resync-interval` at the
//! latest), so at rest every resource would hold a scheduler entry: kube-runtime's
//! holds the request's `ObjectRef` (name, namespace, resourceVersion and uid, each its
//! own allocation) twice, in a `DelayQueue` and a `HashMap` — about 0.8 KB a resource,
//! 16 MB at 20,000. Here a far look costs one shared `namespace/name` string and two
//! small map entries. When it is due, the resource goes to its controller like a
//! watch event (`Controller::reconcile_on`): reconciled at once, and the reconcile
//! says when it looks next. Near looks (retries, rollouts being followed) stay with
//! kube-runtime: they are few, and short-lived.
//!
//! A reconcile consumes its resource's far look ([`Looks::taken`], at its start) and
//! the one it asks for supersedes it, as kube-runtime's own scheduler does with the
//! requeue a reconcile returns. A deleted resource's look is dropped with it.

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

/// A resource: `namespace/name` (a '/' is in neither), shared by both maps.
type Key = Arc<str>;

/// The far looks of every controller of the process, and where each goes when due.
#[derive(Default)]
pub struct Looks {
    inner: Mutex<Inner>,
    /// A look earlier than every other was scheduled (or the first controller
    /// subscribed): the timer sleeps until then instead.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Inner {
    /// By due time: what the timer waits for.
    queue: BTreeSet<(Instant, Key)>,
    /// By resource: its one look, so that a new one supersedes it.
    due: HashMap<Key, Instant>,
    /// Per watch scope (a namespace, or `None` for all): its controller's trigger.
    controllers: Vec<(Option<String>, mpsc::UnboundedSender<ObjectRef<Guarded>>)>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Looks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resources of `scope` (a namespace; `None`: every namespace) whose far look
    /// is due, for `Controller::reconcile_on`.
    pub fn subscribe(&self, scope: Option<String>) -> mpsc::UnboundedReceiver<ObjectRef<Guarded>> {
        let (tx, rx) = mpsc::unbounded();
        self.lock().controllers.push((scope, tx));
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
                self.schedule(namespace, name, at);
                Action::await_change()
            }
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        }
    }

    /// Looks at `namespace/name` at `at`, instead of any look scheduled before.
    fn schedule(&self, namespace: &str, name: &str, at: Instant) {
        let mut inner = self.lock();
        let key: Key = match inner.due.get_key_value(key(namespace, name).as_str()) {
            Some((key, _)) => key.clone(),
            None => key(namespace, name).into(),
        };
        if let Some(old) = inner.due.insert(key.clone(), at) {
            inner.queue.remove(&(old, key.clone()));
        }
        inner.queue.insert((at, key));
        let first = inner.queue.first().map(|(first, _)| *first);
        drop(inner);
        if first == Some(at) {
            self.changed.notify_one();
        }
    }

    /// A reconcile of `namespace/name` started: it decides the next look.
    pub fn taken(&self, namespace: &str, name: &str) {
        let mut inner = self.lock();
        if let Some((key, at)) = inner.due.remove_entry(key(namespace, name).as_str()) {
            inner.queue.remove(&(at, key));
        }
    }

    /// `namespace/name` is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.taken(namespace, name);
    }

    /// After a watch of `scope` listed everything again: drops the looks of its
    /// resources that the list did not find (deleted while the watch was down).
    pub fn retain_listed(
        &self,
        scope: Option<&str>,
        listed: &std::collections::HashSet<crate::metrics::ResourceLabels>,
    ) {
        let mut inner = self.lock();
        let gone: Vec<(Instant, Key)> = inner
            .due
            .iter()
            .filter(|(key, _)| {
                let (namespace, name) = key.split_once('/').unwrap_or_default();
                scope.is_none_or(|s| s == namespace)
                    && !listed.contains(&crate::metrics::ResourceLabels {
                        namespace: namespace.into(),
                        name: name.into(),
                    })
            })
            .map(|(key, at)| (*at, key.clone()))
            .collect();
        for entry in gone {
            inner.due.remove(&entry.1);
            inner.queue.remove(&entry);
        }
    }

    /// How many far looks are waiting.
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether no far look is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When `namespace/name` is looked at next, if that is a far look.
    pub fn due(&self, namespace: &str, name: &str) -> Option<Instant> {
        self.lock().due.get(key(namespace, name).as_str()).copied()
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

    /// Hands over every look due at `now`; the time of the next one.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        while let Some((at, _)) = inner.queue.first()
            && *at <= now
        {
            let Some((_, key)) = inner.queue.pop_first() else {
                break;
            };
            inner.due.remove(&key);
            let (namespace, name) = key.split_once('/').unwrap_or_default();
            hand_over(&inner, namespace, name);
        }
        inner.queue.first().map(|(at, _)| *at)
    }

    /// Looks at `namespace/name` now, as a watch event would (one it missed); its
    /// reconcile decides the next look.
    pub fn now(&self, namespace: &str, name: &str) {
        hand_over(&self.lock(), namespace, name);
    }
}

/// Sends `namespace/name` to the controller that watches its namespace.
fn hand_over(inner: &Inner, namespace: &str, name: &str) {
    let to = inner
        .controllers
        .iter()
        .find(|(scope, _)| scope.as_deref() == Some(namespace))
        .or_else(|| inner.controllers.iter().find(|(scope, _)| scope.is_none()));
    if let Some((_, to)) = to {
        // A controller that stopped (shutdown) takes nothing more.
        let _ = to.unbounded_send(ObjectRef::new(name).within(namespace));
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
        let rx = looks.subscribe(None);
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
        looks.schedule("a", "x", t0 + 300 * MS);
        looks.schedule("a", "y", t0 + 100 * MS);
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
        looks.schedule("a", "x", t0 + 100 * MS);
        looks.schedule("a", "x", t0 + 400 * MS);
        // Superseded by an earlier one: the sleeping timer wakes for it.
        looks.schedule("a", "y", t0 + 10_000 * MS);
        tokio::time::sleep(50 * MS).await;
        looks.schedule("a", "y", t0 + 200 * MS);
        // A reconcile started, and asked for no far look: none.
        looks.schedule("a", "taken", t0 + 100 * MS);
        looks.taken("a", "taken");
        // Deleted.
        looks.schedule("a", "gone", t0 + 100 * MS);
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
        let mut shop = looks.subscribe(Some("shop".into()));
        let mut bank = looks.subscribe(Some("bank".into()));
        tokio::spawn(looks.clone().run());
        let t0 = Instant::now();
        looks.schedule("bank", "x", t0 + 50 * MS);
        looks.schedule("shop", "y", t0 + 100 * MS);
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
}
