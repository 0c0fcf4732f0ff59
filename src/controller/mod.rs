//! The Kubernetes shell around the rotation core: watch SecretRotations and the
//! Secrets rotor owns, reconcile, write Secrets and status, publish Events.

pub mod assess;
mod audit;
pub mod consumers;
pub mod credentials;
pub mod deletion;
pub mod events;
mod failpoint;
pub mod fairness;
#[cfg(test)]
mod fixtures;
pub mod guard;
pub mod looks;
mod notice;
pub mod plan;
mod reconcile;
mod restore;
mod rotate;
pub mod secret;
mod stale;
pub mod status;
mod store;
mod sweep;
pub mod triggers;
pub mod validate;

use crate::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use futures::{FutureExt, StreamExt, TryStreamExt};
use guard::Guarded;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, Reporter};
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use std::sync::Arc;
use std::time::Duration;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch these namespaces only; empty watches all.
    pub namespaces: Vec<String>,
    /// How many SecretRotations are reconciled at once, per watch (one watch for all
    /// namespaces, or one per listed namespace). Watching all namespaces, one namespace
    /// gets at most a quarter of them (at least one), so a tenant whose vendor hangs
    /// cannot hold every worker.
    pub concurrency: u16,
    /// Name reported on Events (the pod name in a cluster).
    pub instance: Option<String>,
    /// How providers make HTTP calls (and whether private endpoints are allowed).
    pub http: crate::providers::HttpSettings,
    /// The operator's own namespace (the vault's KEK Secret, the Lease).
    pub operator_namespace: String,
    /// How long a revoked credential's vault entry is kept before cleanup.
    pub vault_retention: Duration,
    /// How often each resource's orphan sweep runs besides the one after every
    /// rotation (and the first after start); zero: only after rotations.
    pub sweep_interval: Duration,
    /// How long after a rotation its consumers are restarted (coalescing window).
    pub consumer_restart_delay: Duration,
    /// How often a rollout is looked at while rotor waits for it.
    pub consumer_poll_interval: Duration,
    /// Every resource is looked at within this interval even when nothing is due and
    /// no watch event came (zero: never).
    pub resync_interval: Duration,
}

/// What one process remembers of a resource's orphan sweeps.
#[derive(Clone, Debug, Default)]
pub struct Swept {
    /// When the last sweep ran.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// What sweeps revoked since the last rotation. A provider that lists credentials
    /// it cannot tell revoked from live (a PostgreSQL user whose password is cleared
    /// still exists) is not revoked again on every sweep.
    pub revoked: std::collections::BTreeSet<String>,
}

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub http: crate::providers::HttpClient,
    pub reporter: Reporter,
    pub settings: Settings,
    /// Per resource (by uid): this process's orphan sweeps.
    pub swept: std::sync::Mutex<std::collections::HashMap<String, Swept>>,
    /// Reconciles running per namespace.
    pub fairness: fairness::Fairness,
    /// Per resource: reconciles that panicked in a row.
    pub panics: fairness::PanicBackoff,
    /// Consumer restarts waiting to be written, so that rotations of one workload's
    /// Secrets within the restart delay cause one rollout.
    pub restarts: consumers::Restarts,
    /// Webhook deliveries, off the reconcile's path.
    pub notifier: crate::notify::Notifier,
    /// Events being published off the reconciles' path (a permit each).
    pub events: Arc<tokio::sync::Semaphore>,
    /// rotor's own writes to the Secrets it owns, whose watch events wake nothing.
    pub own_writes: Arc<crate::kube_client::OwnWrites>,
    /// The vault's keyring, kept current by a watch on the KEK Secret.
    pub keys: Arc<crate::vault::KeyCache>,
    /// Per resource (by its uid's own 128 bits: exact): the resourceVersion of rotor's
    /// last write to it, so a reconcile knows whether the watch cache has caught up
    /// with that write.
    pub written: crate::kube_client::UidRevisions,
    /// Far next looks, kept off kube-runtime's scheduler (see looks.rs).
    pub looks: Arc<looks::Looks>,
}

impl Context {
    /// Publishes one Event about `regarding` (see events.rs: each its own object — kube's
    /// Recorder folds Events with the same reason into a series that keeps the first
    /// note, and names them past the API server's limit for long resource names).
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        events::publish(self.client.clone(), &self.reporter, event, regarding).await
    }

    /// Notes the resourceVersion a write of rotor's gave the resource `meta` names.
    pub fn wrote(&self, meta: &ObjectMeta, resource_version: Option<&str>) {
        if let (Some(uid), Some(_)) = (&meta.uid, resource_version) {
            self.written.note(uid, resource_version);
        }
    }

    /// Whether an object from the watch cache is at least as new as rotor's last
    /// write to it (or its last fresh read, or the watch's first list — see
    /// `Context::listed`). Unknown — a write whose outcome is unknown, or an object the
    /// first list did not hold, a uid not in the API server's UUID form — is never
    /// current.
    /// resourceVersions are etcd revisions (integers) in every API server rotor
    /// supports; one that is not an integer is never trusted.
    pub fn is_current(&self, meta: &ObjectMeta) -> bool {
        let cached = crate::kube_client::revision(meta.resource_version.as_deref());
        let written = meta.uid.as_deref().and_then(|uid| self.written.get(uid));
        matches!((cached, written), (Some(c), Some(w)) if c >= w)
    }

    /// `sr` as the watch's first list after this process started (as the leader)
    /// found it: that list is a consistent read made after every write of an earlier
    /// leader, so the cache is current for it — no read of its own on its first
    /// reconcile. Before that list ends nothing is reconciled (the store is not ready),
    /// so nothing of this process's own can be newer; something noted already wins.
    /// (The cache keeps no uid: it is parsed from the object, once, here.)
    fn listed(&self, sr: &Guarded) {
        if let Some(uid) = sr.uid() {
            self.written
                .note_if_absent(&uid, sr.metadata.resource_version.as_deref());
        }
    }

    /// rotor no longer knows what its last write to `meta`'s object did.
    pub fn unknown(&self, meta: &ObjectMeta) {
        if let Some(uid) = &meta.uid {
            self.written.forget(uid);
        }
    }

    /// Drops all rotor keeps in memory about a deleted SecretRotation: its gauges,
    /// look, sweep time and revision, what wakes it (`seen`) and its Secrets' write
    /// records. Its body is parsed once, for the uid and the target's name.
    fn gone(&self, sr: &Guarded, seen: &triggers::Triggers) {
        let (namespace, name) = (
            sr.metadata.namespace.as_deref().unwrap_or_default(),
            sr.metadata.name.as_deref().unwrap_or_default(),
        );
        self.metrics.forget(namespace, name);
        self.looks.forget(namespace, name);
        if sr.metadata.name.is_some() {
            seen.forget(namespace, name);
            let vault = crate::vault::vault_secret_name(name);
            self.own_writes.forget(namespace, &vault);
        }
        let uid = match sr.object() {
            Ok(o) => {
                self.own_writes.forget(namespace, &o.spec.target.name);
                o.metadata.uid.clone()
            }
            Err(unreadable) => unreadable.uid.clone(),
        };
        if let Some(uid) = uid {
            self.sweep_book().remove(&uid);
            self.written.forget(&uid);
        }
    }

    /// What the sweep noted per resource uid. A poisoned lock only means a reconcile
    /// panicked while holding it; the map itself is still usable.
    pub fn sweep_book(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Swept>> {
        self.swept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Errors that end a reconcile early; the error policy requeues.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the SecretRotation CRD is not served ({0}); install it with `kubectl apply -f crds/`")]
    CrdMissing(#[source] kube::Error),
    #[error(
        "cannot {verb} {resource} in {scope} ({message}): rotor needs get, list and watch on {resource} there (see config/rbac/)"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        message: String,
    },
    #[error("SecretRotation has no namespace")]
    NoNamespace,
    #[error("the SecretRotation changed while it was reconciled")]
    Stale,
    #[error("the escrow's key Secret cannot be read or created: {0}")]
    Vault(#[source] crate::vault::VaultError),
    #[error("the reconcile panicked (a bug in rotor); retrying with backoff")]
    Panicked,
    #[error(
        "the operator namespace {0:?} does not exist: create it (kubectl create namespace {0}) or set POD_NAMESPACE to the namespace rotor runs in"
    )]
    OperatorNamespaceMissing(String),
}

impl Error {
    /// A label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::CrdMissing(_) => "crd_missing",
            Self::Forbidden { .. } => "forbidden",
            Self::NoNamespace => "no_namespace",
            Self::Stale => "stale",
            Self::Vault(_) => "escrow",
            Self::Panicked => "panicked",
            Self::OperatorNamespaceMissing(_) => "operator_namespace_missing",
        }
    }
}

/// Events published at once, off the reconciles' path.
const EVENTS_IN_FLIGHT: usize = 64;

/// How long a resource whose namespace has no free reconcile slot waits.
const FAIRNESS_RETRY: Duration = Duration::from_secs(2);

/// One reconcile as the controller runs it: a fair share per namespace, an object
/// rotor cannot read marked invalid, names checked before any API call uses them, and
/// a panic turned into an error (requeued with backoff) instead of the end of the
/// process.
async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    // This reconcile consumes the resource's far look; the one it asks for (or its
    // error's retry) is the next.
    ctx.looks
        .taken(&ns, obj.metadata.name.as_deref().unwrap_or_default());
    let Some(_permit) = ctx.fairness.try_acquire(&ns) else {
        ctx.metrics.reconciled("deferred");
        return Ok(Action::requeue(FAIRNESS_RETRY));
    };
    let name = obj.metadata.name.clone().unwrap_or_default();
    let work = async {
        failpoint::panic_if_configured(&name);
        let object = match obj.object() {
            // Parsed on arrival, not from the cache: the object as the API server
            // holds it now.
            Err(unreadable) if unreadable.cache => {
                tracing::warn!(namespace = %ns, name = %name, error = %unreadable.error, "the cached SecretRotation does not parse again; reading it");
                let api: Api<crate::api::SecretRotation> = Api::namespaced(ctx.client.clone(), &ns);
                Ok(Arc::new(api.get(&name).await?))
            }
            object => object,
        };
        match &object {
            Err(unreadable) => {
                let message = guard::unreadable_message(&unreadable.error);
                guard::stop_invalid(&ctx, &obj, unreadable.status.as_ref(), message).await
            }
            // Names go into API URL paths: refuse bad ones before any request. A
            // resource being deleted still reaches its finalizer.
            Ok(sr) if sr.metadata.deletion_timestamp.is_none() => {
                match validate::check_names(&sr.spec) {
                    Err(e) => {
                        let message = format!("invalid spec: {e}");
                        guard::stop_invalid(&ctx, &obj, sr.status.as_ref(), message).await
                    }
                    Ok(()) => reconcile::reconcile(sr.clone(), ctx.clone()).await,
                }
            }
            Ok(sr) => reconcile::reconcile(sr.clone(), ctx.clone()).await,
        }
    };
    let result = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => {
            ctx.panics.reset(&ns, &name);
            result
        }
        // The payload may quote a value: never logged (see the panic hook in main).
        Err(_) => Err(Error::Panicked),
    };
    ctx.metrics
        .reconciled(if result.is_ok() { "ok" } else { "error" });
    result
}

fn error_policy(obj: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.kind().into(),
        })
        .inc();
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    // A panic repeats on every attempt until rotor is fixed or the spec changes:
    // back off per resource, up to five minutes.
    let retry = if matches!(error, Error::Panicked) {
        ctx.panics.next(namespace, name)
    } else {
        Duration::from_secs(15)
    };
    tracing::warn!(
        namespace,
        name,
        error = %error,
        kind = error.kind(),
        retry_in_secs = retry.as_secs(),
        "reconcile failed; retrying"
    );
    Action::requeue(retry)
}

/// Exits early with a clear message when the operator's own namespace (the vault's
/// key Secret, the Lease) does not exist. Without RBAC to read namespaces the check is
/// skipped: in a cluster, POD_NAMESPACE comes from the downward API and exists.
pub async fn check_operator_namespace(client: &Client, ns: &str) -> Result<(), Error> {
    match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::OperatorNamespaceMissing(ns.to_string())),
        Err(e) => {
            tracing::debug!(namespace = ns, error = %e, "cannot check the operator namespace");
            Ok(())
        }
    }
}

use kube::runtime::controller::Action;

/// `K` in `scope`: one namespace, or `None` for every namespace.
fn scoped<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    scope.as_ref().map_or_else(
        || Api::all(client.clone()),
        |ns| Api::namespaced(client.clone(), ns),
    )
}

/// The watch scopes of `settings`: each namespace, or `None` for all.
fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    }
}

/// A name no object can have (a name starts with a letter or a digit): what the
/// start-up checks list, to learn whether rotor may list without reading anything.
const NO_SUCH_NAME: &str = "-";

/// The Secrets rotor's Secrets watch follows: its own, but the escrows (and those from
/// before the escrow), which wake nothing: the API server does not even send their
/// changes.
fn own_secrets_selector() -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},!{},!{}",
        crate::vault::VAULT_LABEL,
        crate::vault::LEGACY_LABEL
    )
}

/// What `run` needs and cannot wait out, checked before any lease is taken (so a
/// standby with the same setup fails as early): the operator namespace, the CRD
/// served in every scope, and both watches allowed — no reconcile starts before the
/// Secrets watch has listed (see `run`), so a Role that may not list or watch Secrets
/// would hold every rotation, silently. A refusal (403) fails here, with its fix;
/// any other error of the Secrets requests is retried by the watches.
pub async fn preflight(client: &Client, settings: &Settings) -> Result<(), Error> {
    check_operator_namespace(client, &settings.operator_namespace).await?;
    for scope in scopes(settings) {
        let (rotations, secrets) = (
            scoped::<Guarded>(client, &scope),
            scoped::<Secret>(client, &scope),
        );
        let forbidden =
            |verb: &'static str, resource: &'static str, status: &kube::core::Status| {
                Error::Forbidden {
                    verb,
                    resource,
                    scope: scope.clone().unwrap_or_else(|| "all namespaces".into()),
                    message: printable(&status.message),
                }
            };
        // Each watch's own requests (the Secrets watch's label selector too, for an
        // authorizer that looks at it; the Secrets list but for its name, below); a
        // watch ends after a second.
        let watch = kube::api::WatchParams::default().timeout(1);
        let version = match rotations.list(&ListParams::default().limit(1)).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Err(forbidden("list", "secretrotations", &status));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(Error::CrdMissing(kube::Error::Api(status)));
            }
            // The API server failing, say: the watch retries (and says so).
            Err(_) => continue,
        };
        if let Err(kube::Error::Api(status)) = rotations.watch(&watch, &version).await
            && status.is_forbidden()
        {
            return Err(forbidden("watch", "secretrotations", &status));
        }
        let selector = own_secrets_selector();
        // A probe of the permission, not a read: the name no Secret can have, from the
        // API server's cache. With the label selector alone and a limit, the API
        // server read the namespace's Secrets from etcd one at a time until one
        // matched — every Secret of a namespace of foreign ones (of the cluster,
        // watching all), 10,000 reads taking seconds, at every start. (Authorizers
        // see a list of the Secret named "-": RBAC allows it exactly when it allows
        // the watch's list, unless a rule names "-". One that allows lists only of
        // named Secrets would pass it and refuse the watch, which then says so.)
        let probe = ListParams::default()
            .labels(&selector)
            .fields(&format!("metadata.name={NO_SUCH_NAME}"))
            .match_any();
        let version = match secrets.list_metadata(&probe).await {
            Ok(list) => list.metadata.resource_version.unwrap_or_default(),
            Err(kube::Error::Api(status)) if status.is_forbidden() => {
                return Err(forbidden("list", "secrets", &status));
            }
            Err(_) => continue,
        };
        let watch = watch.labels(&selector);
        if let Err(kube::Error::Api(status)) = secrets.watch_metadata(&watch, &version).await
            && status.is_forbidden()
        {
            return Err(forbidden("watch", "secrets", &status));
        }
    }
    Ok(())
}

/// Runs the controller until SIGINT or SIGTERM (after [`preflight`]): one watch per
/// namespace in `settings.namespaces` (all namespaces when empty). `health` turns
/// ready once every watch has listed its objects, and carries the metrics.
pub async fn run(
    client: Client,
    settings: Settings,
    health: crate::admin::Health,
) -> Result<(), Error> {
    let scopes = scopes(&settings);
    // The KEKs and the fingerprint key, before the first reconcile compares a
    // fingerprint (a failure here is retried by every vault use).
    let loaded = crate::vault::load_keyring(&client, &settings.operator_namespace).await;
    health.metrics.kek(loaded.is_ok());
    if let Err(e) = loaded {
        tracing::warn!(namespace = %settings.operator_namespace, error = %e, "loading the escrow keys failed");
    }
    let reporter = Reporter {
        controller: "rotor".into(),
        instance: settings.instance.clone(),
    };
    let ctx = Arc::new(Context {
        reporter,
        metrics: health.metrics.clone(),
        http: crate::providers::HttpClient::new(settings.http.clone()).observed({
            let metrics = health.metrics.clone();
            Arc::new(move |provider, status, seconds| {
                metrics.provider_request(provider, status, seconds);
            })
        }),
        client: client.clone(),
        settings: settings.clone(),
        swept: Default::default(),
        // Watching all namespaces, one controller's workers serve every tenant: give
        // each namespace a share. A listed namespace has a controller (and workers) of
        // its own, so it needs no share, and a single-namespace operator keeps all of
        // its workers.
        fairness: fairness::Fairness::new(if scopes == [None] {
            fairness::per_namespace(settings.concurrency)
        } else {
            usize::from(settings.concurrency)
        }),
        panics: Default::default(),
        restarts: Default::default(),
        written: Default::default(),
        keys: Default::default(),
        own_writes: Default::default(),
        looks: Default::default(),
        events: Arc::new(tokio::sync::Semaphore::new(EVENTS_IN_FLIGHT)),
        notifier: crate::notify::Notifier::new(
            crate::providers::HttpClient::new(settings.http.clone()),
            health.metrics.clone(),
        ),
    });
    let keys = ctx.keys.clone();
    let (keys_client, keys_namespace) = (client.clone(), settings.operator_namespace.clone());
    tokio::spawn(async move { keys.watch(keys_client, keys_namespace).await });
    let timer = tokio::spawn(ctx.looks.clone().run());
    let scope_names: Vec<&str> = scopes
        .iter()
        .map(|s| s.as_deref().unwrap_or("<all>"))
        .collect();
    tracing::info!(namespaces = ?scope_names, "rotor controller starting");
    let unsynced = Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len()));
    let controllers = scopes.iter().map(|scope| {
        let secrets = scoped::<kube::core::PartialObjectMeta<Secret>>(&client, scope);
        let own_secrets = watcher::Config::default().labels(&own_secrets_selector());
        // Ready once every SecretRotation watch has listed everything. Watching the
        // watcher's own InitDone, because Store::wait_until_ready wakes only one
        // waiter and the controller's runner is already waiting on it.
        let (reader, writer) = reflector::store();
        let (synced, unsynced) = (health.clone(), unsynced.clone());
        let mut first = true;
        let mut relist = Relist::default();
        let watch_scope = scope.clone();
        let watch_ctx = ctx.clone();
        let triggers = Arc::new(triggers::Triggers::default());
        let seen = triggers.clone();
        // Guarded keeps an object compact (see guard.rs): no managedFields, the
        // metadata the bookkeeping needs, the rest as JSON.
        // The lists are consistent reads (not the API server's cache, which may lag):
        // the first one tells what is current (see `Context::listed`).
        let sizes = reader.clone();
        let cached = reader.clone();
        // The SecretRotation watch starts once the Secrets watch (below) has listed, as
        // controller-runtime waits for every informer: a reconcile run before that list
        // could find a target that is then deleted before the list, and nothing would
        // wake its resource (a list holds no Delete; the next look may be hours away).
        // Its reconciles, and readiness, wait for both; an owner the list wakes is
        // still one reconcile (the scheduler holds one request per resource).
        let (secrets_listed, on_secrets_listed) = futures::channel::oneshot::channel::<()>();
        // Guarded: the watch reads objects whose spec no longer parses.
        let rotations = scoped::<Guarded>(&client, scope);
        let main_watch = futures::stream::once(first_secrets_list(
            on_secrets_listed,
            scope.clone().unwrap_or_else(|| "<all>".into()),
        ))
            .flat_map(move |_| watcher(rotations.clone(), watcher::Config::default()))
            .default_backoff()
            // A new version keeps the allocation size of the one it replaces, when it
            // fits there (see Guarded::keep_size).
            // (Not a deletion's: that body is about to go.)
            .map_ok(move |mut event| {
                if let watcher::Event::Apply(g) | watcher::Event::InitApply(g) = &mut event {
                    let old = sizes.get(&reflector::ObjectRef::from_obj(g));
                    g.keep_size(old.as_deref());
                }
                event
            })
            .inspect(move |event| match event {
                Ok(watcher::Event::InitApply(sr)) if first => watch_ctx.listed(sr),
                // Not the first list: nothing was exported yet that it could make stale,
                // and a cold start need not hold every name a second time.
                Ok(event @ (watcher::Event::Init | watcher::Event::InitApply(_))) if !first => {
                    relist.observe(event);
                }
                Ok(event @ watcher::Event::InitDone) => {
                    if let Some(listed) = relist.observe(event) {
                        // Deleted while the watch was down: no Delete event came, and
                        // until this InitDone the cache still holds them.
                        let mut gone = 0;
                        for sr in Relist::unlisted(&listed, cached.state()) {
                            watch_ctx.gone(&sr, &seen);
                            gone += 1;
                        }
                        if gone > 0 {
                            tracing::info!(
                                gone,
                                "forgot the SecretRotations deleted while the watch was down"
                            );
                        }
                        watch_ctx
                            .looks
                            .retain_listed(watch_scope.as_deref(), &listed);
                        seen.retain_listed(&listed);
                        let dropped = watch_ctx
                            .metrics
                            .retain_listed(watch_scope.as_deref(), &listed);
                        if dropped > 0 {
                            tracing::info!(
                                dropped,
                                "dropped the gauges of SecretRotations deleted while the watch was down"
                            );
                        }
                    }
                    if first {
                        first = false;
                        if unsynced.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                            tracing::info!("watches synced; ready");
                            synced.set_ready(true);
                        }
                    }
                }
                // Gone from the cache, so never reconciled again: drop what rotor
                // keeps per resource (its gauges, its sweep time).
                Ok(watcher::Event::Delete(sr)) => watch_ctx.gone(sr, &seen),
                _ => {}
            });
        // Reconciles follow what a person (or Argo CD) changes: the spec (generation,
        // bumped by a deletion too), annotations (rotor.dev/rotate, …) and finalizers.
        // rotor's own status writes change none of these and wake nothing: the
        // reconcile that wrote them asked for its next look itself. That saves a whole
        // reconcile (and its reads) per status write (see triggers.rs).
        let changes = reflector(writer, main_watch)
            .applied_objects()
            .try_filter(move |g| std::future::ready(triggers.wakes(g)));
        // The target Secrets wake their resource when someone else changes or deletes
        // them, never for rotor's own write (metadata only: no values held). A vault
        // Secret (owned, not controlled) wakes nothing: rotor alone writes it, and
        // reads it whenever it needs it.
        // An event that comes while rotor writes that Secret waits for the write's
        // reply (see OwnWrites::wakes) and, when it was not rotor's echo, comes back
        // through `late`.
        let echoes = ctx.own_writes.clone();
        let (late, late_events) = futures::channel::mpsc::unbounded();
        let mut secrets_listed = Some(secrets_listed);
        let mut secrets_relist = Relist::default();
        let (targets, wake) = (reader.clone(), ctx.clone());
        // Test hooks, inert otherwise: a pause point may hold the watch before each
        // list, and a test may end it so that it lists again, as after a 410.
        let owned = futures::stream::unfold(0, move |n| {
            let (secrets, config) = (secrets.clone(), own_secrets.clone());
            async move {
                failpoint::reached("secrets_watch", n).await;
                let watch = watcher(secrets, config).take_until(failpoint::relist_requested());
                Some((watch, n + 1))
            }
        })
        .flatten()
        .default_backoff()
        .inspect(move |event| match event {
            Ok(watcher::Event::InitDone) if secrets_listed.is_some() => {
                if let Some(listed) = secrets_listed.take() {
                    let _ = listed.send(());
                }
            }
            // Listed again (after a 410, say): a target deleted or relabelled while
            // the watch was down got no Delete event. Each resource whose target the
            // list does not hold (as a Secret a SecretRotation controls) gets a look
            // now. The first list needs none: nothing was reconciled before it.
            Ok(event) if secrets_listed.is_none() => {
                let counted = match event {
                    watcher::Event::InitApply(s) => controlled_by_a_rotation(&s.metadata),
                    _ => true,
                };
                if counted && let Some(listed) = secrets_relist.observe(event) {
                    // Off the controllers' task: every cached resource is parsed.
                    let (cached, wake) = (targets.state(), wake.clone());
                    tokio::task::spawn_blocking(move || {
                        let unlisted = targets_unlisted(&listed, cached);
                        for (namespace, name) in &unlisted {
                            wake.looks.now(namespace, name);
                        }
                        if !unlisted.is_empty() {
                            tracing::info!(
                                woken = unlisted.len(),
                                "the Secrets watch listed again without their target Secrets: looking at them"
                            );
                        }
                    });
                }
            }
            _ => {}
        })
            .touched_objects()
            .try_filter(move |s| {
                let wakes = controlled(&s.metadata)
                    && echoes.wakes(
                        s.metadata.namespace.as_deref().unwrap_or_default(),
                        s.metadata.name.as_deref().unwrap_or_default(),
                        s.metadata.resource_version.as_deref(),
                        || {
                            // What routes the event to its owner: no managedFields or
                            // annotations (a tenant's bytes) held meanwhile.
                            let event = kube::core::PartialObjectMeta::<Secret> {
                                types: s.types.clone(),
                                metadata: kube::api::ObjectMeta {
                                    namespace: s.metadata.namespace.clone(),
                                    name: s.metadata.name.clone(),
                                    owner_references: s.metadata.owner_references.clone(),
                                    resource_version: s.metadata.resource_version.clone(),
                                    ..Default::default()
                                },
                                _phantom: std::marker::PhantomData,
                            };
                            let late = late.clone();
                            Box::new(move || {
                                let _ = late.unbounded_send(event);
                            })
                        },
                    );
                std::future::ready(wakes)
            });
        let owned = futures::stream::select(owned, late_events.map(Ok));
        Controller::for_stream(changes, reader)
            .owns_stream(owned)
            .reconcile_on(ctx.looks.subscribe(scope.clone()))
            .with_config(controller::Config::default().concurrency(settings.concurrency))
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each({
                let mut failures = WatchFailures::default();
                move |result| {
                    match result {
                        // A watch that fails (refused, the API server failing): retried
                        // with backoff, but said, since until it works rotor is blind to
                        // what it watches. (A 410 is a relist: routine.)
                        Err(controller::Error::QueueError(e)) if watch_failed(&e) => {
                            if let Some(skipped) = failures.say(std::time::Instant::now()) {
                                tracing::warn!(
                                    error = %printable(&e.to_string()),
                                    skipped,
                                    "a watch failed; retrying with backoff"
                                );
                            }
                        }
                        // Reconcile errors were said by the reconcile (status, Event).
                        Err(e) => tracing::debug!(error = %e, "controller event"),
                        Ok(_) => {}
                    }
                    std::future::ready(())
                }
            })
    });
    futures::future::join_all(controllers).await;
    timer.abort();
    tracing::info!("rotor controller stopped");
    Ok(())
}

/// How often rotor says that a Secrets watch has not listed yet.
const SECRETS_LIST_WARN: Duration = Duration::from_secs(30);

/// Waits for the first list of the Secrets watch of `scope`; says so meanwhile, every
/// [`SECRETS_LIST_WARN`]: until then nothing in the scope is reconciled.
async fn first_secrets_list(mut listed: futures::channel::oneshot::Receiver<()>, scope: String) {
    while tokio::time::timeout(SECRETS_LIST_WARN, &mut listed)
        .await
        .is_err()
    {
        tracing::warn!(
            namespaces = %scope,
            "the Secrets watch has not listed yet: nothing here is reconciled until it has (can rotor list and watch Secrets? is the API server answering?)"
        );
    }
}

/// Whether a watch error means the watch is not working (rather than the routine
/// ends of a watch: its resourceVersion expired, 410, or its connection dropped).
fn watch_failed(e: &watcher::Error) -> bool {
    !matches!(e, watcher::Error::WatchError(s) if s.code == 410)
}

/// How often at most a controller says that a watch failed: a list that keeps failing
/// is retried about every second (kube-runtime's backoff starts over at each attempt).
const WATCH_FAILURE_EVERY: Duration = Duration::from_secs(60);

/// When a controller last said that a watch failed, and how many failures it has not
/// said since.
#[derive(Default)]
struct WatchFailures {
    said: Option<std::time::Instant>,
    skipped: u64,
}

impl WatchFailures {
    /// A failure at `now`: `Some(failures not said since the last one)` when this one is
    /// to be said (the first, and then at most one per [`WATCH_FAILURE_EVERY`]).
    fn say(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.said {
            Some(at) if now.saturating_duration_since(at) < WATCH_FAILURE_EVERY => {
                self.skipped += 1;
                None
            }
            _ => {
                self.said = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// An error's text as it may go into a log line: at most 300 characters, on one line
/// (a webhook's or a proxy's HTML page: its control characters as spaces).
fn printable(text: &str) -> String {
    crate::rotation::one_line(text).chars().take(300).collect()
}

/// Whether a controller (any) is among the object's owners.
fn controlled(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true))
}

/// Whether a SecretRotation is the object's controller.
fn controlled_by_a_rotation(meta: &ObjectMeta) -> bool {
    meta.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.kind == "SecretRotation"
            && r.api_version.starts_with("rotor.dev/")
    })
}

/// Of `cached` resources, those whose target Secret (the one its status names: set
/// once it has been reconciled, whether or not rotor could write it) is not among
/// `listed`: `(namespace, name)`.
fn targets_unlisted(
    listed: &std::collections::HashSet<crate::metrics::ResourceLabels>,
    cached: Vec<Arc<Guarded>>,
) -> Vec<(String, String)> {
    cached
        .iter()
        .filter_map(|g| {
            let sr = g.object().ok()?;
            let target = crate::metrics::ResourceLabels {
                namespace: sr.metadata.namespace.clone()?,
                name: sr.status.as_ref()?.target_secret.clone()?,
            };
            if listed.contains(&target) {
                return None;
            }
            Some((target.namespace, sr.metadata.name.clone()?))
        })
        .collect()
}

/// The resources one (re-)list of a watch found, gathered from its Init, InitApply and
/// InitDone events. A resource deleted while the watch was down gets no Delete event:
/// only its absence from the next list tells.
#[derive(Default)]
struct Relist {
    listed: Option<std::collections::HashSet<crate::metrics::ResourceLabels>>,
}

impl Relist {
    /// Notes `event`; at InitDone, hands over what the list found.
    fn observe<K: kube::Resource>(
        &mut self,
        event: &watcher::Event<K>,
    ) -> Option<std::collections::HashSet<crate::metrics::ResourceLabels>> {
        match event {
            watcher::Event::Init => {
                self.listed = Some(Default::default());
                None
            }
            watcher::Event::InitApply(object) => {
                if let Some(listed) = &mut self.listed {
                    listed.insert(crate::metrics::ResourceLabels {
                        namespace: object.meta().namespace.clone().unwrap_or_default(),
                        name: object.meta().name.clone().unwrap_or_default(),
                    });
                }
                None
            }
            watcher::Event::InitDone => self.listed.take(),
            _ => None,
        }
    }

    /// Of the objects the cache held before a relist, those it did not list.
    fn unlisted<K: kube::Resource>(
        listed: &std::collections::HashSet<crate::metrics::ResourceLabels>,
        cached: Vec<Arc<K>>,
    ) -> impl Iterator<Item = Arc<K>> {
        cached.into_iter().filter(|o| {
            !listed.contains(&crate::metrics::ResourceLabels {
                namespace: o.meta().namespace.clone().unwrap_or_default(),
                name: o.meta().name.clone().unwrap_or_default(),
            })
        })
    }
}

#[cfg(test)]
mod relist_tests {
    use super::Relist;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::Event;

    fn object(ns: &str, name: &str) -> ConfigMap {
        let mut o = ConfigMap::default();
        o.metadata.namespace = Some(ns.into());
        o.metadata.name = Some(name.into());
        o
    }

    #[test]
    fn a_relist_hands_over_exactly_what_it_listed() {
        let mut relist = Relist::default();
        // Events outside a list gather nothing.
        assert!(relist.observe(&Event::Apply(object("a", "x"))).is_none());
        assert!(relist.observe(&Event::InitDone::<ConfigMap>).is_none());
        relist.observe(&Event::<ConfigMap>::Init);
        relist.observe(&Event::InitApply(object("a", "kept")));
        relist.observe(&Event::InitApply(object("b", "other")));
        relist.observe(&Event::Delete(object("a", "deleted")));
        let listed = relist.observe(&Event::InitDone::<ConfigMap>).unwrap();
        let mut names: Vec<String> = listed
            .iter()
            .map(|l| format!("{}/{}", l.namespace, l.name))
            .collect();
        names.sort();
        assert_eq!(names, ["a/kept", "b/other"]);
        // Handed over once.
        assert!(relist.observe(&Event::InitDone::<ConfigMap>).is_none());
        // What the cache held and the list did not: deleted while the watch was down.
        let cached = ["a/kept", "a/gone", "b/other", "c/kept"]
            .map(|n| {
                let (ns, name) = n.split_once('/').unwrap();
                std::sync::Arc::new(object(ns, name))
            })
            .to_vec();
        let gone: Vec<_> = Relist::unlisted(&listed, cached)
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            gone,
            ["gone", "kept"],
            "a/gone, and c/kept: only a/kept was listed"
        );
    }

    fn rotation(ns: &str, name: &str, target: Option<&str>) -> std::sync::Arc<super::Guarded> {
        let mut v = serde_json::json!({
            "apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
            "metadata": {"namespace": ns, "name": name, "uid": "u", "resourceVersion": "1"},
            "spec": {"provider": {"random": {"length": 24}}, "secretsMapping": {"value": "V"},
                     "target": {"name": "spec-name"}},
        });
        if let Some(t) = target {
            v["status"] = serde_json::json!({"targetSecret": t});
        }
        std::sync::Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn a_failing_watch_is_told_from_its_routine_ends() {
        use kube::runtime::watcher::Error;
        let status = |code: u16| -> Box<kube::core::Status> {
            Box::new(serde_json::from_value(serde_json::json!({"code": code})).unwrap())
        };
        let api = |code: u16| kube::Error::Api(status(code));
        for failed in [
            Error::InitialListFailed(api(403)),
            Error::InitialListFailed(api(500)),
            Error::WatchStartFailed(api(403)),
            // A start refused as expired keeps its resourceVersion: stuck, not routine.
            Error::WatchStartFailed(api(410)),
            Error::WatchError(status(500)),
            Error::WatchFailed(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::NoResourceVersion,
        ] {
            assert!(super::watch_failed(&failed), "{failed}");
        }
        // An expired watch: the watcher lists again.
        assert!(!super::watch_failed(&Error::WatchError(status(410))));
    }

    #[test]
    fn a_failing_watch_is_said_at_once_then_once_a_minute_with_what_was_not() {
        let start = std::time::Instant::now();
        let at = |secs: u64| start + std::time::Duration::from_secs(secs);
        let mut failures = super::WatchFailures::default();
        assert_eq!(failures.say(at(0)), Some(0), "the first at once");
        for s in 1..60 {
            assert_eq!(failures.say(at(s)), None, "{s} s later");
        }
        assert_eq!(
            failures.say(at(60)),
            Some(59),
            "a minute later, with the 59 not said"
        );
        assert_eq!(failures.say(at(61)), None);
        assert_eq!(failures.say(at(200)), Some(1));
    }

    #[test]
    fn an_error_goes_into_a_log_line_short_and_on_one_line() {
        let page = format!("<html>\n<body>{}</body>\r\n", "x".repeat(1000));
        let line = super::printable(&page);
        assert_eq!(line.chars().count(), 300);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(line.starts_with("<html> <body>xxx"));
    }

    #[test]
    fn only_a_controlling_secret_rotation_counts_as_the_owner() {
        let meta = |owners: serde_json::Value| -> super::ObjectMeta {
            serde_json::from_value(serde_json::json!({ "ownerReferences": owners })).unwrap()
        };
        let owner = |api: &str, kind: &str, controller: bool| {
            serde_json::json!({"apiVersion": api, "kind": kind, "name": "x", "uid": "u",
                               "controller": controller})
        };
        let rotation = owner("rotor.dev/v1alpha1", "SecretRotation", true);
        assert!(super::controlled_by_a_rotation(&meta(serde_json::json!([
            rotation
        ]))));
        for other in [
            owner("rotor.dev/v1alpha1", "SecretRotation", false),
            owner("example.com/v1", "SecretRotation", true),
            owner("apps/v1", "Deployment", true),
        ] {
            assert!(!super::controlled_by_a_rotation(&meta(serde_json::json!(
                [other]
            ))));
        }
        assert!(!super::controlled_by_a_rotation(
            &super::ObjectMeta::default()
        ));
    }

    #[test]
    fn a_relist_wakes_the_resources_whose_written_target_it_lacks() {
        let mut relist = Relist::default();
        relist.observe(&Event::<ConfigMap>::Init);
        relist.observe(&Event::InitApply(object("a", "present")));
        relist.observe(&Event::InitApply(object("b", "deleted")));
        let listed = relist.observe(&Event::InitDone::<ConfigMap>).unwrap();
        let cached = vec![
            rotation("a", "kept", Some("present")),
            // Same Secret name in another namespace: listed there, not here.
            rotation("a", "lost", Some("deleted")),
            rotation("b", "other", Some("deleted")),
            // Not reconciled yet: no target named in its status.
            rotation("a", "new", None),
        ];
        assert_eq!(
            super::targets_unlisted(&listed, cached),
            [("a".to_string(), "lost".to_string())]
        );
    }
}
