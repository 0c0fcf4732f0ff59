//! Prometheus metrics. Labels carry names, providers and results — never values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// One Kubernetes API request: its verb (get, list, watch, create, update, patch,
/// delete, deletecollection) and resource (plural, `/subresource` appended).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    pub verb: &'static str,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// One HTTP request to a vendor: the provider kind and the answer's class (`2xx`,
/// `3xx`, `4xx`, `429`, `5xx`, or `error` when no answer came). Never a URL, host or
/// tenant value: the series stay bounded by kinds times classes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderRequestLabels {
    pub provider: &'static str,
    pub status: &'static str,
}

/// The class of an HTTP status for [`ProviderRequestLabels::status`]; 429 is its own.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(429) => "429",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
    }
}

/// The conditions `rotor_resource_condition` exports, in the order of its bits.
pub const CONDITIONS: [&str; 4] = ["Ready", "Progressing", "Degraded", "Stale"];

/// Adds one to a per-provider counter.
pub fn count(family: &Family<ProviderLabels, Counter>, provider: &str) {
    family
        .get_or_create(&ProviderLabels {
            provider: provider.into(),
        })
        .inc();
}

/// Every metric rotor exports.
pub struct Metrics {
    pub registry: Registry,
    /// The per-resource gauges' own registry, encoded after [`Self::registry`]: its
    /// text is the big one (megabytes at 20,000 resources) and is streamed, while the
    /// rest is made in memory first, so no metric family's lock is held while a slow
    /// scraper reads.
    per_resource: Registry,
    pub rotations: Family<RotationLabels, Counter>,
    pub rotation_duration: Family<ProviderLabels, Histogram>,
    pub failures: Family<ProviderLabels, Counter>,
    pub orphans_swept: Family<ProviderLabels, Counter>,
    pub sweeps: Family<ProviderLabels, Counter>,
    pub secret_restores: Family<ProviderLabels, Counter>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// The per-resource gauges, one entry a resource (see [`PerResource`]).
    resources: std::sync::Arc<PerResource>,
    /// Webhook deliveries by result: delivered, failed (after its retries), dropped.
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    /// Consumer restarts written, by result: restarted, failed.
    pub consumer_restarts: Family<ResultLabels, Counter>,
    /// Previous credentials revoked before the next rotation, by why: rollout (every
    /// consumer rolled out), timeout (onTimeout: Revoke).
    pub early_revocations: Family<ResultLabels, Counter>,
    /// Requests rotor made to the Kubernetes API, by verb and resource.
    pub kube_requests: Family<KubeRequestLabels, Counter>,
    /// Reconciles that read their SecretRotation from the API server because the
    /// watch cache was not known to be current.
    pub cache_misses: Counter,
    /// HTTP requests to vendors (every attempt, retries included), by provider kind and
    /// answer class.
    pub provider_requests: Family<ProviderRequestLabels, Histogram>,
    /// Whether rotor could read its KEKs at its last try.
    kek_available: std::sync::Arc<KekAvailable>,
}

/// `rotor_kek_available`: no sample until rotor tried to read its KEKs (a standby
/// waiting for the lease never does), then 1 or 0.
#[derive(Debug, Default)]
struct KekAvailable(std::sync::atomic::AtomicU8);

impl KekAvailable {
    const AVAILABLE: u8 = 1;
    const UNAVAILABLE: u8 = 2;
}

impl prometheus_client::collector::Collector for KekAvailable {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let value = match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Self::AVAILABLE => 1,
            Self::UNAVAILABLE => 0,
            _ => return Ok(()),
        };
        let metric = encoder.encode_descriptor(
            "kek_available",
            "1 when rotor could read its KEKs from the rotor-kek Secret at its last try, 0 when it could not",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(value).encode(metric)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rotor");
        let rotations = Family::<RotationLabels, Counter>::default();
        registry.register(
            "rotations",
            "Rotations by provider and result (success, failure)",
            rotations.clone(),
        );
        let rotation_duration = Family::<ProviderLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
        });
        registry.register(
            "rotation_duration_seconds",
            "Time from the start of a rotation to its end",
            rotation_duration.clone(),
        );
        let failures = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "rotation_failures",
            "Failed rotation attempts by provider",
            failures.clone(),
        );
        let orphans_swept = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "orphans_swept",
            "Credentials found at a provider in no slot and revoked",
            orphans_swept.clone(),
        );
        let sweeps = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "orphan_sweeps",
            "Orphan sweeps finished (after each rotation, at start, and every --sweep-interval)",
            sweeps.clone(),
        );
        let secret_restores = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "secret_restores",
            "Target Secrets written again from the escrow (deleted, lost a key, or edited)",
            secret_restores.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by result: ok, error, or deferred (the namespace had no free share)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by kind",
            reconcile_errors.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook notifications by result: delivered, failed (after retries), dropped (queue full)",
            webhook_deliveries.clone(),
        );
        let consumer_restarts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "consumer_restarts",
            "Consumer restarts (rotor.dev/restartedAt written) by result: restarted, failed",
            consumer_restarts.clone(),
        );
        let early_revocations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "early_revocations",
            "Previous credentials revoked before the next rotation: rollout (consumers rolled out), timeout (onTimeout Revoke)",
            early_revocations.clone(),
        );
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API by verb and resource (a watch counts once, when it starts)",
            kube_requests.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "stale_cache_rereads",
            "Reconciles that read their SecretRotation from the API server because the watch cache was not known to be current (the first after start, or older than rotor's own last write)",
            cache_misses.clone(),
        );
        let provider_requests =
            Family::<ProviderRequestLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            });
        registry.register(
            "provider_request_duration_seconds",
            "HTTP requests to vendors (each attempt), by provider kind and answer class: 2xx, 3xx, 4xx, 429, 5xx, error (no answer)",
            provider_requests.clone(),
        );
        let kek_available = std::sync::Arc::new(KekAvailable::default());
        registry.register_collector(Box::new(kek_available.clone()));
        let resources = std::sync::Arc::new(PerResource::default());
        let mut per_resource = Registry::with_prefix("rotor");
        per_resource.register_collector(Box::new(resources.clone()));
        Self {
            registry,
            per_resource,
            provider_requests,
            kek_available,
            resources,
            kube_requests,
            cache_misses,
            webhook_deliveries,
            consumer_restarts,
            early_revocations,
            rotations,
            rotation_duration,
            failures,
            orphans_swept,
            sweeps,
            secret_restores,
            reconciles,
            reconcile_errors,
        }
    }
}

impl Metrics {
    /// Counts one reconcile by its result (`ok`, `error`, `deferred`).
    pub fn reconciled(&self, result: &'static str) {
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one event of a family labelled by result.
    pub fn result(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// The active credential's issue time, the resource's maxAge and its failed
    /// attempts, for the age and failure gauges.
    pub fn credential(
        &self,
        namespace: &str,
        name: &str,
        issued_at: Option<f64>,
        max_age: Option<f64>,
        failed_attempts: u32,
    ) {
        self.resources.update(namespace, name, |g| {
            g.failed_attempts = failed_attempts;
            g.issued = Sample::from(issued_at);
            g.max_age = Sample::from(max_age);
        });
    }

    /// Whether rotor could read its KEKs just now.
    pub fn kek(&self, available: bool) {
        let state = if available {
            KekAvailable::AVAILABLE
        } else {
            KekAvailable::UNAVAILABLE
        };
        self.kek_available
            .0
            .store(state, std::sync::atomic::Ordering::Relaxed);
    }

    /// One HTTP request to a vendor of `provider` kind: its answer's status (`None`:
    /// no answer) and how long it took.
    pub fn provider_request(&self, provider: &'static str, status: Option<u16>, seconds: f64) {
        self.provider_requests
            .get_or_create(&ProviderRequestLabels {
                provider,
                status: status_class(status),
            })
            .observe(seconds);
    }

    /// The conditions a SecretRotation's status carries (by type, whether True; types
    /// other than [`CONDITIONS`] are ignored), and its consumer rollout: `None` when
    /// it follows none, else whether it is stuck.
    pub fn conditions<'a>(
        &self,
        namespace: &str,
        name: &str,
        conditions: impl IntoIterator<Item = (&'a str, bool)>,
        rollout_stuck: Option<bool>,
        escrow_problem: bool,
    ) {
        let mut bits = 0u8;
        for (type_, on) in conditions {
            if let Some(i) = CONDITIONS.iter().position(|c| *c == type_) {
                bits |= 1 << i;
                if on {
                    bits |= 1 << (i + 4);
                }
            }
        }
        let rollout = match rollout_stuck {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        self.resources.update(namespace, name, |g| {
            g.conditions = bits;
            g.rollout = rollout;
            g.escrow_problem = escrow_problem;
        });
    }

    /// The text exposition format, written to `out` as it is made — with no metric's
    /// lock held while `out` writes, so a writer that waits on a slow scraper never
    /// stalls a reconcile updating a metric: the registry's families (a few KB) are
    /// made in memory first; the per-resource gauges write a snapshot taken up front.
    pub fn encode_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut families = String::new();
        encode_registry(&mut families, &self.registry)?;
        out.write_str(&families)?;
        drop(families);
        encode_registry(out, &self.per_resource)?;
        encode_eof(out)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_to(&mut out).expect("writing to a String");
        out
    }

    pub fn rotation(&self, provider: &str, success: bool, seconds: f64) {
        let result = if success { "success" } else { "failure" };
        self.rotations
            .get_or_create(&RotationLabels {
                provider: provider.into(),
                result: result.into(),
            })
            .inc();
        self.rotation_duration
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .observe(seconds);
        if !success {
            count(&self.failures, provider);
        }
    }

    pub fn schedule(
        &self,
        namespace: &str,
        name: &str,
        next: Option<f64>,
        last_rotated: Option<f64>,
    ) {
        self.resources.update(namespace, name, |g| {
            g.next_rotation = Sample::from(next);
            if last_rotated.is_some() {
                g.last_rotated = Sample::from(last_rotated);
            }
        });
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.resources.book().remove(key(namespace, name).as_str());
    }

    /// After a watch of `namespace` (every namespace: `None`) listed everything again:
    /// drops each resource of it that the list did not find. A SecretRotation deleted
    /// while the watch was down reaches rotor as no Delete event, only as its absence
    /// here; without this its gauges (next rotation, conditions) would stay, and the
    /// overdue and stuck alerts fire for a resource that is gone. Returns how many.
    pub fn retain_listed(
        &self,
        namespace: Option<&str>,
        listed: &HashSet<ResourceLabels>,
    ) -> usize {
        let mut book = self.resources.book();
        let before = book.len();
        book.retain(|key, _| {
            let (ns, name) = split(key);
            namespace.is_some_and(|scope| scope != ns)
                || listed.contains(&ResourceLabels {
                    namespace: ns.into(),
                    name: name.into(),
                })
        });
        before - book.len()
    }
}

/// What rotor exports about each SecretRotation, one map entry a resource and
/// written out at scrape time: five gauge families of their own kept five copies of
/// every resource's labels (about 0.5 KB a resource in heaptrack at 5,000). Keyed by
/// `namespace/name` in one allocation (a '/' is in neither), the labels made at
/// scrape time. A B-tree, not a hash map: about 80 bytes an entry against 93 (a hash
/// table at 20,000 entries has 32,768 slots), no doubling of a whole table as it grows,
/// and a scrape copies out [`SCRAPE_BATCH`] rows at a time, going on after the last key
/// it copied, instead of every row (with its key) at once.
#[derive(Debug, Default)]
pub struct PerResource(std::sync::Mutex<std::collections::BTreeMap<Box<str>, Gauges>>);

/// How many resources' gauges a scrape copies out of the lock at once.
const SCRAPE_BATCH: usize = 256;

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

/// The labels of the resource `key` names.
fn labels(key: &str) -> [(&'static str, &str); 2] {
    let (namespace, name) = split(key);
    [("namespace", namespace), ("name", name)]
}

// A map entry (key and gauges) of 56 bytes: 20,000 resources' gauges in about 1.6 MB.
const _: () = assert!(std::mem::size_of::<Gauges>() <= 40);

/// A gauge's value, NaN when there is none (8 bytes, where an `Option<f64>` takes 16).
#[derive(Debug, Clone, Copy)]
struct Sample(f64);

impl Default for Sample {
    fn default() -> Self {
        Self(f64::NAN)
    }
}

impl Sample {
    /// `None` (and a NaN, which no gauge of rotor's has) is no sample.
    fn from(value: Option<f64>) -> Self {
        Self(value.unwrap_or(f64::NAN))
    }

    fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

/// One resource's gauges; no sample is not exported.
#[derive(Debug, Default, Clone, Copy)]
struct Gauges {
    next_rotation: Sample,
    last_rotated: Sample,
    /// When the active credential was issued: its age is computed at scrape time.
    issued: Sample,
    max_age: Sample,
    failed_attempts: u32,
    /// Bit i: condition [`CONDITIONS`]`[i]` is in status; bit i + 4: it is True.
    conditions: u8,
    /// 0: no consumer rollout followed; 1: followed; 2: stuck.
    rollout: u8,
    /// status.escrow.problem is set (e.g. the entries need a KEK that is gone).
    escrow_problem: bool,
}

impl PerResource {
    fn book(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Box<str>, Gauges>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Gauges)) {
        let mut book = self.book();
        let key = key(namespace, name);
        match book.get_mut(key.as_str()) {
            Some(gauges) => f(gauges),
            None => f(book.entry(key.into_boxed_str()).or_default()),
        }
    }

    /// Whether any resource's gauges satisfy `p`.
    fn any(&self, p: impl Fn(&Gauges) -> bool) -> bool {
        self.book().values().any(p)
    }

    /// Calls `f` with every resource's gauges in key order, copied out
    /// [`SCRAPE_BATCH`] at a time: the lock is not held while the text is written, and
    /// a scrape never holds a copy of every row. A resource added or dropped meanwhile
    /// is written or not, as a scrape a moment earlier or later would.
    fn each(&self, mut f: impl FnMut(&str, &Gauges) -> std::fmt::Result) -> std::fmt::Result {
        use std::ops::Bound;
        let mut rows: Vec<(Box<str>, Gauges)> = Vec::with_capacity(SCRAPE_BATCH);
        loop {
            let after = rows.pop();
            if let Some((key, gauges)) = &after {
                f(key, gauges)?;
            }
            rows.clear();
            {
                let book = self.book();
                let from = match &after {
                    Some((key, _)) => Bound::Excluded(&**key),
                    None => Bound::Unbounded,
                };
                rows.extend(
                    book.range::<str, _>((from, Bound::Unbounded))
                        .take(SCRAPE_BATCH)
                        .map(|(k, g)| (k.clone(), *g)),
                );
            }
            // All but the last now; the last after the next batch is copied (its key
            // is where that batch starts).
            let Some((_, init)) = rows.split_last() else {
                return Ok(());
            };
            for (key, gauges) in init {
                f(key, gauges)?;
            }
        }
    }
}

impl prometheus_client::collector::Collector for PerResource {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::gauge::ConstGauge;
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        type Pick = fn(&Gauges, f64) -> Option<f64>;
        let families: [(&str, &str, Pick); 4] = [
            (
                "next_rotation_timestamp_seconds",
                "When each SecretRotation rotates next (unix time)",
                |g, _| g.next_rotation.get(),
            ),
            (
                "credential_last_rotated_timestamp_seconds",
                "When the active credential was issued (unix time); its age is time() minus this",
                |g, _| g.last_rotated.get(),
            ),
            (
                "credential_age_seconds",
                "Age of the active credential (now minus when it was issued)",
                |g, now| g.issued.get().map(|t| (now - t).max(0.0)),
            ),
            (
                "credential_max_age_seconds",
                "spec.maxAge of each SecretRotation that sets one",
                |g, _| g.max_age.get(),
            ),
        ];
        // A family appears with its first sample, as the registry's own do.
        for (name, help, pick) in families {
            if !self.any(|g| pick(g, now).is_some()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            self.each(|key, gauges| match pick(gauges, now) {
                Some(v) => ConstGauge::new(v).encode(family.encode_family(&labels(key))?),
                None => Ok(()),
            })?;
        }
        if self.book().is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "failed_attempts",
            "Failed rotation attempts of each SecretRotation since its last success (alert on this, not on expiry)",
            None,
            MetricType::Gauge,
        )?;
        self.each(|key, gauges| {
            ConstGauge::new(i64::from(gauges.failed_attempts))
                .encode(family.encode_family(&labels(key))?)
        })?;
        let mut family = encoder.encode_descriptor(
            "escrow_problem",
            "1 while status.escrow.problem of a SecretRotation is set (its escrow cannot be used as it should, e.g. its entries need a KEK that is gone), 0 otherwise",
            None,
            MetricType::Gauge,
        )?;
        self.each(|key, gauges| {
            ConstGauge::new(i64::from(gauges.escrow_problem))
                .encode(family.encode_family(&labels(key))?)
        })?;
        if self.any(|g| g.conditions != 0) {
            let mut family = encoder.encode_descriptor(
                "resource_condition",
                "Each condition in the status of each SecretRotation: 1 when True, 0 when False or Unknown (no series for a condition the status does not carry)",
                None,
                MetricType::Gauge,
            )?;
            self.each(|key, gauges| {
                let (namespace, name) = split(key);
                for (i, condition) in CONDITIONS.iter().enumerate() {
                    if gauges.conditions & (1 << i) == 0 {
                        continue;
                    }
                    let on = gauges.conditions & (1 << (i + 4)) != 0;
                    let with = [
                        ("namespace", namespace),
                        ("name", name),
                        ("condition", condition),
                    ];
                    ConstGauge::new(i64::from(on)).encode(family.encode_family(&with)?)?;
                }
                Ok(())
            })?;
        }
        if self.any(|g| g.rollout != 0) {
            let mut family = encoder.encode_descriptor(
                "consumer_rollout_stuck",
                "1 while the consumers of a SecretRotation have not rolled out within revocation.maxWait, 0 while they roll out or have; only SecretRotations with consumers",
                None,
                MetricType::Gauge,
            )?;
            self.each(|key, gauges| match gauges.rollout {
                0 => Ok(()),
                rollout => ConstGauge::new(i64::from(rollout == 2))
                    .encode(family.encode_family(&labels(key))?),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotations_failures_and_schedule_are_exported() {
        let m = super::Metrics::default();
        m.rotation("supabase", true, 0.3);
        m.rotation("supabase", false, 1.5);
        m.schedule("shop", "key", Some(1_800_000_000.0), Some(1_700_000_000.0));
        super::count(&m.secret_restores, "random");
        m.reconciled("ok");
        m.reconciled("ok");
        let an_hour_ago = chrono::Utc::now().timestamp() as f64 - 3600.0;
        m.credential("shop", "key", Some(an_hour_ago), Some(86_400.0), 3);
        super::Metrics::result(&m.webhook_deliveries, "failed");
        assert!(
            !m.encode().contains("rotor_kek_available"),
            "no KEK sample before rotor tried"
        );
        m.kek(false);
        m.provider_request("supabase", Some(429), 0.2);
        m.provider_request("supabase", None, 10.0);
        m.provider_request("http", Some(204), 0.01);
        m.conditions(
            "shop",
            "key",
            [
                ("Ready", false),
                ("Progressing", false),
                ("Degraded", true),
                ("SomeoneElses", true),
            ],
            Some(true),
            false,
        );
        let text = m.encode();
        let age: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"rotor_credential_age_seconds{namespace="shop",name="key"} "#)
            })
            .and_then(|v| v.parse().ok())
            .expect("an age");
        assert!((3599.0..3700.0).contains(&age), "{age}");
        for line in [
            r#"rotor_rotations_total{provider="supabase",result="success"} 1"#,
            r#"rotor_rotations_total{provider="supabase",result="failure"} 1"#,
            r#"rotor_rotation_failures_total{provider="supabase"} 1"#,
            r#"rotor_rotation_duration_seconds_count{provider="supabase"} 2"#,
            r#"rotor_next_rotation_timestamp_seconds{namespace="shop",name="key"} 1800000000.0"#,
            r#"rotor_credential_last_rotated_timestamp_seconds{namespace="shop",name="key"} 1700000000.0"#,
            r#"rotor_secret_restores_total{provider="random"} 1"#,
            r#"rotor_reconciles_total{result="ok"} 2"#,
            r#"rotor_credential_max_age_seconds{namespace="shop",name="key"} 86400.0"#,
            r#"rotor_webhook_deliveries_total{result="failed"} 1"#,
            r#"rotor_failed_attempts{namespace="shop",name="key"} 3"#,
            r#"rotor_kek_available 0"#,
            r#"rotor_provider_request_duration_seconds_count{provider="supabase",status="429"} 1"#,
            r#"rotor_provider_request_duration_seconds_count{provider="supabase",status="error"} 1"#,
            r#"rotor_provider_request_duration_seconds_count{provider="http",status="2xx"} 1"#,
            r#"rotor_resource_condition{namespace="shop",name="key",condition="Ready"} 0"#,
            r#"rotor_resource_condition{namespace="shop",name="key",condition="Progressing"} 0"#,
            r#"rotor_resource_condition{namespace="shop",name="key",condition="Degraded"} 1"#,
            r#"rotor_consumer_rollout_stuck{namespace="shop",name="key"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // A condition the status does not carry has no series; nor has a foreign one.
        assert!(!text.contains(r#"condition="Stale""#), "{text}");
        assert!(!text.contains("SomeoneElses"), "{text}");
        m.conditions(
            "shop",
            "key",
            [("Ready", true), ("Stale", false)],
            Some(false),
            true,
        );
        m.kek(true);
        let text = m.encode();
        for line in [
            r#"rotor_resource_condition{namespace="shop",name="key",condition="Ready"} 1"#,
            r#"rotor_resource_condition{namespace="shop",name="key",condition="Stale"} 0"#,
            r#"rotor_consumer_rollout_stuck{namespace="shop",name="key"} 0"#,
            r#"rotor_escrow_problem{namespace="shop",name="key"} 1"#,
            r#"rotor_kek_available 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains(r#"condition="Degraded""#), "{text}");
        m.forget("shop", "key");
        let text = m.encode();
        assert!(!text.contains("namespace=\"shop\""));
        // Families appear with their first sample, and go with their last.
        assert!(!text.contains("rotor_failed_attempts"), "{text}");
        assert!(
            !text.contains("rotor_next_rotation_timestamp_seconds"),
            "{text}"
        );
        assert!(!text.contains("rotor_resource_condition"), "{text}");
        assert!(!text.contains("rotor_consumer_rollout_stuck"), "{text}");
        assert!(!text.contains("rotor_escrow_problem"), "{text}");
    }

    #[test]
    fn a_relist_drops_the_resources_it_did_not_find_in_its_own_scope() {
        use super::{HashSet, Metrics, ResourceLabels};
        let m = Metrics::default();
        for (ns, name) in [("shop", "kept"), ("shop", "gone"), ("other", "elsewhere")] {
            m.schedule(ns, name, Some(1.0), None);
        }
        let listed = HashSet::from([ResourceLabels {
            namespace: "shop".into(),
            name: "kept".into(),
        }]);
        // A watch of namespace shop says nothing of other namespaces.
        assert_eq!(m.retain_listed(Some("shop"), &listed), 1);
        let text = m.encode();
        assert!(text.contains(r#"namespace="shop",name="kept""#), "{text}");
        assert!(!text.contains(r#"name="gone""#), "{text}");
        assert!(text.contains(r#"name="elsewhere""#), "{text}");
        // A watch of every namespace: what it did not list is gone.
        assert_eq!(m.retain_listed(None, &listed), 1);
        assert!(!m.encode().contains(r#"name="elsewhere""#));
    }
}
