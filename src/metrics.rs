//! Prometheus metrics. Labels carry names, providers and results — never values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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
    pub rotations: Family<RotationLabels, Counter>,
    pub rotation_duration: Family<ProviderLabels, Histogram>,
    pub failures: Family<ProviderLabels, Counter>,
    pub next_rotation: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub last_rotated: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    pub orphans_swept: Family<ProviderLabels, Counter>,
    pub sweeps: Family<ProviderLabels, Counter>,
    pub secret_restores: Family<ProviderLabels, Counter>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Age of each resource's active credential, computed at scrape time from `issued`.
    pub credential_age: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    /// status.failedAttempts per resource: failed attempts since the last success.
    pub failed_attempts: Family<ResourceLabels, Gauge>,
    /// spec.maxAge per resource (absent without one).
    pub max_age: Family<ResourceLabels, Gauge<f64, AtomicU64>>,
    issued: std::sync::Mutex<std::collections::HashMap<ResourceLabels, f64>>,
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
        let next_rotation = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "next_rotation_timestamp_seconds",
            "When each SecretRotation rotates next (unix time)",
            next_rotation.clone(),
        );
        let last_rotated = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_last_rotated_timestamp_seconds",
            "When the active credential was issued (unix time); its age is time() minus this",
            last_rotated.clone(),
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
            "Target Secrets written again from the vault (deleted, lost a key, or edited)",
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
        let credential_age = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_age_seconds",
            "Age of the active credential (now minus when it was issued)",
            credential_age.clone(),
        );
        let failed_attempts = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "failed_attempts",
            "Failed rotation attempts of each SecretRotation since its last success (alert on this, not on expiry)",
            failed_attempts.clone(),
        );
        let max_age = Family::<ResourceLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_max_age_seconds",
            "spec.maxAge of each SecretRotation that sets one",
            max_age.clone(),
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
        Self {
            registry,
            kube_requests,
            cache_misses,
            credential_age,
            failed_attempts,
            max_age,
            issued: Default::default(),
            webhook_deliveries,
            consumer_restarts,
            early_revocations,
            rotations,
            rotation_duration,
            failures,
            next_rotation,
            last_rotated,
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
        let labels = ResourceLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.failed_attempts
            .get_or_create(&labels)
            .set(i64::from(failed_attempts));
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match issued_at {
            Some(t) => {
                issued.insert(labels.clone(), t);
            }
            None => {
                issued.remove(&labels);
                self.credential_age.remove(&labels);
            }
        }
        match max_age {
            Some(s) => {
                self.max_age.get_or_create(&labels).set(s);
            }
            None => {
                self.max_age.remove(&labels);
            }
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        for (labels, issued) in self
            .issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            self.credential_age
                .get_or_create(labels)
                .set((now - issued).max(0.0));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
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
        let labels = ResourceLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match next {
            Some(t) => {
                self.next_rotation.get_or_create(&labels).set(t);
            }
            None => {
                self.next_rotation.remove(&labels);
            }
        }
        if let Some(t) = last_rotated {
            self.last_rotated.get_or_create(&labels).set(t);
        }
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = ResourceLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.next_rotation.remove(&labels);
        self.last_rotated.remove(&labels);
        self.max_age.remove(&labels);
        self.credential_age.remove(&labels);
        self.failed_attempts.remove(&labels);
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&labels);
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
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        m.forget("shop", "key");
        assert!(!m.encode().contains("namespace=\"shop\""));
    }
}
