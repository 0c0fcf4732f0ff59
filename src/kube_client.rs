//! The Kubernetes client rotor talks through: every request counted in
//! `rotor_kube_requests_total{verb,resource}`, and — with `--kube-qps` — a client-side
//! rate limit on top of the API server's own priority and fairness.

use crate::metrics::{KubeRequestLabels, Metrics};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use std::sync::Arc;
use std::time::Duration;

/// The client-side limit: `qps` requests a second on average, up to `burst` at once.
/// `qps == 0` sets none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

/// A client for `config` that counts its requests into `metrics`.
pub fn build(
    config: Config,
    metrics: Arc<Metrics>,
    limit: RateLimit,
) -> Result<Client, kube::Error> {
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let (verb, resource) = classify(req.method(), req.uri());
        tracing::trace!(target: "rotor::kube_requests", verb, %resource, path = req.uri().path(), "request");
        metrics
            .kube_requests
            .get_or_create(&KubeRequestLabels { verb, resource })
            .inc();
        req
    });
    let builder = ClientBuilder::try_from(config)?.with_layer(&count);
    Ok(if limit.qps > 0.0 {
        // A fixed window of `burst` requests every `burst / qps` seconds: `qps` on
        // average, `burst` at most at once (tower's limiter; the API server's priority
        // and fairness protects it from every client besides).
        let burst = limit.burst.max(1);
        // Within a nanosecond and a day: tower's limiter needs a window above zero,
        // and a rate so small that its window would not fit a Duration is one a day.
        let per = Duration::try_from_secs_f64(f64::from(burst) / limit.qps)
            .unwrap_or(Duration::from_secs(86_400))
            .clamp(Duration::from_nanos(1), Duration::from_secs(86_400));
        builder
            .with_layer(&tower::limit::RateLimitLayer::new(u64::from(burst), per))
            .build()
    } else {
        builder.build()
    })
}

/// What rotor's books key an object by: 64 bits of SipHash of its uid, or of its
/// `namespace/name`, keyed at random per process — 8 bytes in the map's own slot
/// instead of a string of its own (at 20,000 resources the strings were megabytes; a
/// 128-bit key, aligned to 16 bytes, made every slot of these maps twice as big).
///
/// Two objects share a key only when all 64 bits collide: about 1e-10 for the 60,000
/// keys of 20,000 resources in a process's life, and no tenant can aim at another's
/// key, since the hash key is secret and new with every process. Were it ever to
/// happen, the worst is one Secret's watch event taken for rotor's echo of another's
/// write (a stranger's change then waits for that resource's next reconcile —
/// `restore_first` — at most `--resync-interval` away), or a precondition that the
/// API server refuses (rotor then reads). Books whose mistake could cost more — which
/// revision of a SecretRotation the cache must reach — key by the uid's own 128 bits
/// (`UidRevisions`).
#[derive(Default)]
pub struct Keys(std::hash::RandomState);

impl Keys {
    pub fn of(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.0.hash_one(key)
    }
}

/// How a book keys an object's text: [`Keys`] (a 64-bit keyed hash of anything), or
/// [`UidKeys`] (a uid's own 128 bits; no key for any other text).
pub trait BookKeys: Default {
    type Key: Eq + std::hash::Hash + Copy;
    fn key(&self, text: &str) -> Option<Self::Key>;
}

impl BookKeys for Keys {
    type Key = u64;
    fn key(&self, text: &str) -> Option<u64> {
        Some(self.of(text))
    }
}

/// A uid in the API server's own form, keyed by its 128 bits: exact, nothing to
/// collide (two objects never share a uid). Any other text has no key: never noted,
/// so never known (a fresh read instead).
#[derive(Default)]
pub struct UidKeys;

impl BookKeys for UidKeys {
    type Key = [u64; 2];
    fn key(&self, uid: &str) -> Option<[u64; 2]> {
        uuid_words(uid)
    }
}

/// resourceVersions by key, held as the etcd revisions (integers) they are in every
/// API server rotor supports: one that is not an integer is not kept, so it never
/// counts as known; nor is a text its `K` has no key for.
#[derive(Default)]
pub struct Revisions<K: BookKeys> {
    book: std::sync::Mutex<std::collections::HashMap<K::Key, u64>>,
    keys: K,
}

/// resourceVersions by object uid, keyed exactly (see [`UidKeys`]).
pub type UidRevisions = Revisions<UidKeys>;

impl<K: BookKeys> Revisions<K> {
    /// Notes `resource_version` for `key` (forgets the key when there is none, or it is
    /// not an integer).
    pub fn note(&self, key: &str, resource_version: Option<&str>) {
        let Some(key) = self.keys.key(key) else {
            return;
        };
        let mut book = self.book();
        match revision(resource_version) {
            Some(rv) => book.insert(key, rv),
            None => book.remove(&key),
        };
    }

    /// Notes `resource_version` for `key` unless something is noted for it already.
    pub fn note_if_absent(&self, key: &str, resource_version: Option<&str>) {
        if let (Some(key), Some(rv)) = (self.keys.key(key), revision(resource_version)) {
            self.book().entry(key).or_insert(rv);
        }
    }

    /// The revision noted for `key`.
    pub fn get(&self, key: &str) -> Option<u64> {
        let key = self.keys.key(key)?;
        self.book().get(&key).copied()
    }

    pub fn forget(&self, key: &str) {
        if let Some(key) = self.keys.key(key) {
            self.book().remove(&key);
        }
    }

    /// How many keys are noted.
    pub fn len(&self) -> usize {
        self.book().len()
    }

    /// Whether no key is noted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn book(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<K::Key, u64>> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A uid in the API server's own form — a UUID in lower-case hex, hyphenated 8-4-4-4-12
/// — as its 128 bits in two words; `None` for any other text (upper case, braces,
/// no hyphens, another length). The form is one-to-one with the bits, so two
/// different uid texts never give the same words.
fn uuid_words(uid: &str) -> Option<[u64; 2]> {
    let bytes = uid.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = n << 4 | u128::from(digit);
    }
    // Split in halves: the truncations are the point.
    #[allow(clippy::cast_possible_truncation)]
    Some([(n >> 64) as u64, n as u64])
}

/// Whether an object seen at revision `seen` is no newer than rotor's write that gave
/// it `written` (both known): that write's echo, or an earlier one's.
fn no_newer(seen: Option<u64>, written: Option<u64>) -> bool {
    matches!((seen, written), (Some(s), Some(w)) if s <= w)
}

/// A resourceVersion as the etcd revision it is; `None` when it is not an integer.
pub fn revision(resource_version: Option<&str>) -> Option<u64> {
    resource_version.and_then(|rv| rv.parse().ok())
}

/// A uid as the API server makes them (a UUID in lower-case hex), held in 16 bytes
/// (two words, not a `u128`: its 16-byte alignment would double the map's slot);
/// any other text as it is.
#[derive(Clone, Debug, PartialEq)]
enum Uid {
    Uuid([u64; 2]),
    Other(Box<str>),
}

impl Uid {
    fn new(uid: &str) -> Self {
        match uuid_words(uid) {
            Some(words) => Self::Uuid(words),
            None => Self::Other(uid.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Uuid([high, low]) => {
                let hex = format!("{high:016x}{low:016x}");
                format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                )
            }
            Self::Other(text) => text.to_string(),
        }
    }
}

/// The resourceVersions rotor's own writes gave the Secrets it owns (by
/// `namespace/name`), so that the watch event each write causes does not wake the
/// resource that just wrote it: its reconcile already knows what it wrote. An event
/// with any other resourceVersion — a person's edit, a deletion — wakes it.
///
/// Also the uid of each vault Secret rotor created or found to be its own, so that a
/// later write can name it as a precondition instead of reading it first (a wrong one
/// could only fail that write's precondition, never write another object).
#[derive(Default)]
pub struct OwnWrites {
    written: Revisions<Keys>,
    uids: std::sync::Mutex<std::collections::HashMap<u64, Uid>>,
    /// Writes under way, by key: a watch event of such a Secret may be the write's own
    /// echo, come before its reply (a watch can overtake it). Judged when the reply
    /// (or the failure) comes, not at once: taken for a stranger's change, it woke the
    /// resource for a second reconcile that read its resource and target again.
    /// An entry lives only while its write is under way: at most one per running
    /// reconcile.
    pending: std::sync::Mutex<std::collections::HashMap<u64, Pending>>,
}

/// A write of rotor's under way, and the last watch event of its Secret that came
/// meanwhile.
#[derive(Default)]
struct Pending {
    writes: u32,
    event: Option<Deferred>,
}

/// A watch event held back while rotor's write to its object was under way.
struct Deferred {
    revision: Option<u64>,
    /// Hands the event back to the watch's consumer (it wakes its owner).
    wake: Box<dyn FnOnce() + Send>,
}

/// A write to a Secret rotor owns, under way: [`Writing::done`] with its reply's
/// resourceVersion; dropped without (the write failed), an event held back meanwhile
/// wakes its owner.
#[must_use]
pub struct Writing<'a> {
    writes: &'a OwnWrites,
    namespace: &'a str,
    name: &'a str,
    finished: bool,
}

impl Writing<'_> {
    /// The write succeeded and gave the object `resource_version`.
    pub fn done(mut self, resource_version: Option<&str>) {
        self.writes
            .note(self.namespace, self.name, resource_version);
        self.finished = true;
        self.writes
            .finish(self.namespace, self.name, revision(resource_version));
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.writes.finish(self.namespace, self.name, None);
        }
    }
}

impl OwnWrites {
    fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// rotor starts a write to `namespace/name`.
    pub fn writing<'a>(&'a self, namespace: &'a str, name: &'a str) -> Writing<'a> {
        let key = self.written.keys.of(&format!("{namespace}/{name}"));
        self.pending().entry(key).or_default().writes += 1;
        Writing {
            writes: self,
            namespace,
            name,
            finished: false,
        }
    }

    /// A write ended (`written`: the revision it gave; `None`: it failed): an event
    /// held back meanwhile wakes its owner unless it was that write's (or an earlier
    /// one's) echo.
    fn finish(&self, namespace: &str, name: &str, written: Option<u64>) {
        let key = self.written.keys.of(&format!("{namespace}/{name}"));
        let event = {
            let mut pending = self.pending();
            let Some(p) = pending.get_mut(&key) else {
                return;
            };
            p.writes = p.writes.saturating_sub(1);
            if p.writes > 0 {
                return;
            }
            pending.remove(&key).and_then(|p| p.event)
        };
        if let Some(event) = event
            && !no_newer(event.revision, written)
        {
            (event.wake)();
        }
    }

    /// Whether a watch event of `namespace/name` at `resource_version` wakes its owner
    /// now: not rotor's own write's echo. While rotor writes that object, the event is
    /// held back instead (`false`): `later` makes what is called when the write ends,
    /// if the event turns out to be someone else's change. (`later` runs outside the
    /// lock every write takes: what it copies is the caller's business.)
    pub fn wakes(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
        later: impl FnOnce() -> Box<dyn FnOnce() + Send>,
    ) -> bool {
        let key = self.written.keys.of(&format!("{namespace}/{name}"));
        let revision = revision(resource_version);
        // The newest event stands for all (one wake is enough); an older one that a
        // re-list brings again never replaces it.
        let replaces = |held: &Option<Deferred>| {
            held.as_ref().is_none_or(|h| match (h.revision, revision) {
                (Some(held), Some(new)) => new >= held,
                _ => true,
            })
        };
        match self.pending().get(&key) {
            None => return !self.is_echo(namespace, name, resource_version),
            Some(p) if !replaces(&p.event) => return false,
            Some(_) => {}
        }
        let wake = later();
        let mut pending = self.pending();
        match pending.get_mut(&key) {
            Some(p) => {
                if replaces(&p.event) {
                    p.event = Some(Deferred { revision, wake });
                }
                false
            }
            // The write ended meanwhile: judged as any event.
            None => {
                drop(pending);
                !self.is_echo(namespace, name, resource_version)
            }
        }
    }

    fn uids(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Uid>> {
        self.uids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes the uid of a Secret known to be rotor's.
    pub fn note_uid(&self, namespace: &str, name: &str, uid: Option<&str>) {
        let key = self.written.keys.of(&format!("{namespace}/{name}"));
        let mut uids = self.uids();
        match uid {
            Some(uid) => uids.insert(key, Uid::new(uid)),
            None => uids.remove(&key),
        };
    }

    /// The uid of a Secret known to be rotor's.
    pub fn uid_of(&self, namespace: &str, name: &str) -> Option<String> {
        let key = self.written.keys.of(&format!("{namespace}/{name}"));
        self.uids().get(&key).map(Uid::text)
    }

    /// Notes a write of rotor's.
    pub fn note(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        if resource_version.is_some() {
            self.written
                .note(&format!("{namespace}/{name}"), resource_version);
        }
    }

    /// Whether an object as a watch shows it is no newer than rotor's last write to
    /// it: that write, or one before it (which rotor's write came after — the vault
    /// is written with its resourceVersion as precondition, the target by an apply
    /// that sets every field rotor owns).
    pub fn is_echo(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        let written = self.written.get(&format!("{namespace}/{name}"));
        no_newer(revision(resource_version), written)
    }

    /// Forgets an object (its owner is gone).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.written.forget(&format!("{namespace}/{name}"));
        self.note_uid(namespace, name, None);
    }

    /// How many Secrets rotor knows a write or a uid of.
    pub fn len(&self) -> (usize, usize) {
        (self.written.len(), self.uids().len())
    }
}

/// The verb and resource of a request, as the API server's own metrics name them.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/… or /apis/<group>/<version>/…
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (verb(method, false, false), "nonresource".into()),
    };
    let (resource, name, sub) = match rest {
        ["namespaces", _ns, resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [] => return (verb(method, false, false), "nonresource".into()),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    let verb = if watch {
        "watch"
    } else {
        verb(method, name.is_some(), true)
    };
    (verb, resource)
}

fn verb(method: &http::Method, named: bool, resource: bool) -> &'static str {
    match *method {
        http::Method::GET if named || !resource => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources_as_the_api_server_counts_them() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/shop/secrets/db",
                "get",
                "secrets",
            ),
            (
                "GET",
                "/api/v1/namespaces/shop/secrets?labelSelector=a%3Db",
                "list",
                "secrets",
            ),
            (
                "GET",
                "/api/v1/secrets?watch=true&resourceVersion=5",
                "watch",
                "secrets",
            ),
            (
                "PATCH",
                "/apis/rotor.dev/v1alpha1/namespaces/shop/secretrotations/db/status?fieldManager=rotor",
                "patch",
                "secretrotations/status",
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                "create",
                "events",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/rotor/leases/rotor",
                "update",
                "leases",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/shop/secrets/x",
                "delete",
                "secrets",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/shop/secrets",
                "deletecollection",
                "secrets",
            ),
            ("GET", "/api/v1/namespaces/shop", "get", "namespaces"),
            ("GET", "/api/v1/namespaces", "list", "namespaces"),
            ("GET", "/version", "get", "nonresource"),
            (
                "GET",
                "/apis/apps/v1/namespaces/shop/deployments?watch=1",
                "watch",
                "deployments",
            ),
        ];
        for (method, uri, verb, resource) in cases {
            let got = classify(&method.parse().unwrap(), &uri.parse().unwrap());
            assert_eq!(got, (verb, resource.to_string()), "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn every_request_is_counted() {
        // A server that answers 404 to everything: the request still counts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let metrics = Arc::new(Metrics::default());
        let config = Config::new(format!("http://{addr}").parse().unwrap());
        let client = build(config, metrics.clone(), RateLimit { qps: 0.0, burst: 0 }).unwrap();
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, "shop");
        assert!(secrets.get_opt("db").await.unwrap().is_none());
        assert!(secrets.get_opt("db").await.unwrap().is_none());
        let text = metrics.encode();
        assert!(
            text.contains(r#"rotor_kube_requests_total{verb="get",resource="secrets"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn any_positive_rate_builds_a_client() {
        for qps in [1e-300, 0.001, 5.0, 1e300] {
            let config = Config::new("http://127.0.0.1:1".parse().unwrap());
            let limit = RateLimit { qps, burst: 100 };
            assert!(
                build(config, Arc::new(Metrics::default()), limit).is_ok(),
                "{qps}"
            );
        }
    }

    #[test]
    fn an_echo_is_rotor_s_own_write_or_older() {
        let w = OwnWrites::default();
        assert!(!w.is_echo("shop", "db", Some("10")), "nothing written");
        w.note("shop", "db", Some("12"));
        assert!(w.is_echo("shop", "db", Some("12")), "its own write");
        assert!(
            w.is_echo("shop", "db", Some("11")),
            "an earlier write's event"
        );
        assert!(
            !w.is_echo("shop", "db", Some("13")),
            "someone's later change"
        );
        assert!(!w.is_echo("shop", "other", Some("12")), "another Secret");
        assert!(!w.is_echo("shop", "db", Some("x")), "not an integer");
        assert!(!w.is_echo("shop", "db", None));
        w.forget("shop", "db");
        assert!(!w.is_echo("shop", "db", Some("12")));
        assert_eq!(w.len(), (0, 0));
    }

    /// A watch event that overtakes the reply of rotor's write is judged when the
    /// reply comes: its echo wakes nothing, anyone else's change wakes the owner once.
    #[test]
    fn an_event_during_a_write_is_judged_by_the_write_s_reply() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let w = OwnWrites::default();
        let woke = Arc::new(AtomicUsize::new(0));
        let wake = || {
            let woke = woke.clone();
            move || -> Box<dyn FnOnce() + Send> {
                Box::new(move || {
                    woke.fetch_add(1, Ordering::SeqCst);
                })
            }
        };
        // The echo overtakes the reply: held, then dropped as rotor's own.
        let writing = w.writing("shop", "db");
        assert!(!w.wakes("shop", "db", Some("20"), wake()));
        assert!(
            w.wakes("shop", "other", Some("20"), wake()),
            "another Secret"
        );
        writing.done(Some("20"));
        assert_eq!(woke.load(Ordering::SeqCst), 0);
        assert!(
            !w.wakes("shop", "db", Some("20"), wake()),
            "noted as rotor's"
        );
        // A change after rotor's write, seen while the next write is under way.
        let writing = w.writing("shop", "db");
        assert!(!w.wakes("shop", "db", Some("25"), wake()));
        writing.done(Some("24"));
        assert_eq!(woke.load(Ordering::SeqCst), 1);
        // A stranger's change held, then an older event again (a re-list served from
        // a lagging cache): the change still wakes the owner.
        let writing = w.writing("shop", "db");
        assert!(!w.wakes("shop", "db", Some("28"), wake()));
        assert!(!w.wakes("shop", "db", Some("26"), wake()));
        writing.done(Some("27"));
        assert_eq!(woke.load(Ordering::SeqCst), 2);
        // A failed write: whatever came meanwhile wakes the owner.
        let writing = w.writing("shop", "db");
        assert!(!w.wakes("shop", "db", Some("21"), wake()));
        drop(writing);
        assert_eq!(woke.load(Ordering::SeqCst), 3);
        // Nothing held once no write is under way; a write with no event wakes nothing.
        w.writing("shop", "db").done(Some("30"));
        assert_eq!(woke.load(Ordering::SeqCst), 3);
        assert!(w.wakes("shop", "db", Some("31"), wake()));
        assert!(w.pending().is_empty());
    }

    #[test]
    fn uids_come_back_as_they_were_given() {
        let w = OwnWrites::default();
        for uid in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "not-a-uuid",
            "",
        ] {
            w.note_uid("shop", "v", Some(uid));
            assert_eq!(w.uid_of("shop", "v").as_deref(), Some(uid));
        }
        assert_eq!(
            Uid::new("0f8fad5b-d9cb-469f-a165-70867728950e"),
            Uid::Uuid([0x0f8f_ad5b_d9cb_469f, 0xa165_7086_7728_950e])
        );
        assert!(w.uid_of("shop", "other").is_none());
        w.forget("shop", "v");
        assert!(w.uid_of("shop", "v").is_none());
    }

    #[test]
    fn the_books_slots_stay_small() {
        // At 20,000 resources these maps hold 60,000 entries: a u128 anywhere in a
        // slot (16-byte alignment) doubled them.
        assert_eq!(std::mem::size_of::<(u64, u64)>(), 16);
        assert_eq!(std::mem::size_of::<(u64, Uid)>(), 32);
        assert_eq!(std::mem::size_of::<([u64; 2], u64)>(), 24);
    }

    #[test]
    fn uid_revisions_are_exact_and_skip_what_is_no_uuid() {
        let r = UidRevisions::default();
        let a = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let b = "0f8fad5b-d9cb-469f-a165-70867728950f";
        r.note(a, Some("5"));
        r.note(b, Some("7"));
        assert_eq!((r.get(a), r.get(b)), (Some(5), Some(7)));
        // Not the API server's form: never noted, so never known (a fresh read).
        for other in [
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "0f8fad5b+d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "",
        ] {
            r.note(other, Some("9"));
            r.note_if_absent(other, Some("9"));
            assert_eq!(r.get(other), None, "{other:?}");
        }
        assert_eq!(r.len(), 2);
        r.note_if_absent(a, Some("6"));
        assert_eq!(r.get(a), Some(5), "something noted already wins");
        r.note(a, Some("x"));
        assert_eq!(r.get(a), None, "not an integer: forgotten");
        r.forget(b);
        assert!(r.is_empty());
    }

    #[test]
    fn revisions_are_kept_per_key() {
        let r = Revisions::<Keys>::default();
        r.note("a", Some("5"));
        r.note("b", Some("7"));
        assert_eq!(
            (r.get("a"), r.get("b"), r.get("c")),
            (Some(5), Some(7), None)
        );
        r.note("a", Some("x"));
        assert_eq!(r.get("a"), None, "not an integer: forgotten");
        r.forget("b");
        assert!(r.is_empty());
    }
}
