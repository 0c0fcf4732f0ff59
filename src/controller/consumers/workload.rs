//! The workloads that consume a Secret: finding them (named, selected, discovered from
//! their pod templates), restarting one (one pod-template annotation by server-side
//! apply), and telling whether one has rolled out, as `kubectl rollout status` does.

use crate::api::{RESTARTED_AT_ANNOTATION, WorkloadKind, WorkloadRef};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{GroupVersionKind, ObjectMeta};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Argo Rollouts' Rollout.
fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

/// A consumer as read now.
pub struct Observed {
    /// Which object (a workload deleted and created again under its name is another).
    pub uid: Option<String>,
    pub generation: Option<i64>,
    /// The `rotor.dev/restartedAt` value its pod template carries.
    pub restarted_with: Option<String>,
    /// Whether it has rolled out, and how far it is in words.
    pub rolled_out: bool,
    pub message: String,
}

/// What reading or restarting a consumer found.
pub enum Found {
    Workload(Observed),
    /// (A restart only.) It carries every token already — another write landed since
    /// the look — so nothing was written.
    Carried(Observed),
    /// No workload of that name.
    Missing,
    /// The kind is not served here (Argo Rollouts not installed).
    KindNotInstalled,
}

/// The workloads of one namespace, by kind.
pub struct Workloads {
    client: Client,
    namespace: String,
}

impl Workloads {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    fn dynamic(&self, kind: WorkloadKind) -> Api<DynamicObject> {
        let resource = match kind {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            WorkloadKind::Rollout => rollout_resource(),
        };
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Reads one consumer; `since_generation` is the generation its restart produced.
    pub async fn observe(
        &self,
        w: &WorkloadRef,
        since_generation: Option<i64>,
    ) -> Result<Found, kube::Error> {
        Ok(match self.fetch(w).await? {
            Ok(obj) => Found::Workload(observed(w.kind, &obj, since_generation)),
            Err(absent) => absent,
        })
    }

    /// The workload as stored, or what stands in its place (gone, kind not served).
    async fn fetch(&self, w: &WorkloadRef) -> Result<Result<DynamicObject, Found>, kube::Error> {
        match self.dynamic(w.kind).get_opt(&w.name).await {
            Ok(Some(obj)) => Ok(Ok(obj)),
            Ok(None) => self.missing(w.kind).await.map(Err),
            Err(e) if w.kind == WorkloadKind::Rollout && not_served(&e) => {
                Ok(Err(Found::KindNotInstalled))
            }
            Err(e) => Err(e),
        }
    }

    /// Restarts one consumer for `tokens` (the rotations it restarts for, comma-
    /// separated): only the `rotor.dev/restartedAt` annotation of its pod template, by
    /// server-side apply with rotor's field manager. The value keeps the tokens the
    /// workload carries already (see [`carry`]), so that a restart for one rotation
    /// never hides that the workload was restarted for an earlier one. A Rollout gets
    /// `spec.restartAt` and the annotation on itself instead (how Argo Rollouts
    /// restarts, without a new release).
    /// Never creates a workload: it is read first, and a gone one is `Missing`; written
    /// only if unchanged since (else a conflict, and it is retried).
    /// `rotation`: the number of the rotation that writes (for the tests' pause point).
    pub async fn restart(
        &self,
        w: &WorkloadRef,
        tokens: &str,
        rotation: u64,
    ) -> Result<Found, kube::Error> {
        let mut attempt = 1;
        loop {
            match self.restart_once(w, tokens, rotation).await {
                // Changed between the read and the write (its controller's status, a
                // rollback): read again, a few times, before the next look.
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < CONFLICT_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn restart_once(
        &self,
        w: &WorkloadRef,
        tokens: &str,
        rotation: u64,
    ) -> Result<Found, kube::Error> {
        let existing = match self.fetch(w).await? {
            Ok(obj) => obj,
            Err(absent) => return Ok(absent),
        };
        let (api_version, kind) = match &existing.types {
            Some(t) => (t.api_version.clone(), t.kind.clone()),
            None => return Ok(Found::Missing),
        };
        let counted = restarts_counted(w.kind, &existing);
        if tokens
            .split(',')
            .all(|t| super::carries(counted.as_deref(), t))
        {
            // Written meanwhile (another rotation's write carried them): a write now
            // would only reorder the value — a second rollout for nothing.
            return Ok(Found::Carried(observed(w.kind, &existing, None)));
        }
        let carried = restarted_with(w.kind, &existing);
        let value = carry(carried.as_deref(), tokens);
        // Only if it is still the object read: a workload deleted and created again
        // under the name is not patched blind (SSA would create one), nor one another
        // writer changed since (its tokens would be lost).
        let metadata = json!({
            "name": w.name,
            "uid": existing.metadata.uid,
            "resourceVersion": existing.metadata.resource_version,
        });
        let patch = if w.kind == WorkloadKind::Rollout {
            // Argo Rollouts restarts pods in place through `spec.restartAt`; a pod
            // template change would start a full release (canary steps, analysis),
            // and a Rollout with `workloadRef` has no template at all. The token goes
            // on the Rollout itself.
            let mut metadata = metadata;
            metadata["annotations"] = json!({RESTARTED_AT_ANNOTATION: &value});
            json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata,
                "spec": {"restartAt": restart_at(chrono::Utc::now())},
            })
        } else {
            json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata,
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: &value}}}},
            })
        };
        // (Tests: a pause between the read and the write, to change the workload there.)
        crate::controller::failpoint::reached("before_restart_write", rotation).await;
        let params = PatchParams::apply(crate::api::FIELD_MANAGER).force();
        let written = self
            .dynamic(w.kind)
            .patch(&w.name, &params, &Patch::Apply(&patch))
            .await?;
        Ok(Found::Workload(observed(
            w.kind,
            &written,
            written.metadata.generation,
        )))
    }

    /// A workload that is not there: gone, or — for a Rollout — a kind this cluster
    /// does not serve (the API answers 404 to both a missing object and a missing
    /// resource type).
    async fn missing(&self, kind: WorkloadKind) -> Result<Found, kube::Error> {
        if kind != WorkloadKind::Rollout {
            return Ok(Found::Missing);
        }
        match self
            .dynamic(kind)
            .list(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => Ok(Found::Missing),
            Err(e) if not_served(&e) => Ok(Found::KindNotInstalled),
            Err(e) => Err(e),
        }
    }

    /// Every Deployment, StatefulSet and DaemonSet with labels matching `selector`
    /// (a label selector string), or — with `reads` — whose pod template reads that
    /// Secret. At most `limit` (sorted by kind and name). Paged ([`PAGE`] a request):
    /// a selector lists metadata only; discovery reads pod templates a page at a time
    /// and stops after [`SCANNED`] workloads of a kind. `cut` says what was left out.
    pub async fn find(
        &self,
        selector: Option<&str>,
        reads: Option<&str>,
        limit: usize,
    ) -> Result<Listed, kube::Error> {
        let mut out = Vec::new();
        let mut cut = None;
        for kind in WorkloadKind::BUILT_IN {
            let mut params = ListParams::default().limit(PAGE);
            if let Some(s) = selector {
                params = params.labels(s);
            }
            let api = self.dynamic(kind);
            let mut scanned = 0usize;
            loop {
                let (names, next) = match reads {
                    None => {
                        let page = api.list_metadata(&params).await?;
                        let names: Vec<String> = page.items.iter().map(|o| o.name_any()).collect();
                        (names, page.metadata.continue_)
                    }
                    Some(secret) => {
                        let page = api.list(&params).await?;
                        let names = page
                            .items
                            .iter()
                            .filter(|o| {
                                pod_spec(&o.data).is_some_and(|spec| reads_secret(&spec, secret))
                            })
                            .map(|o| o.name_any())
                            .collect();
                        scanned += page.items.len();
                        (names, page.metadata.continue_)
                    }
                };
                out.extend(names.into_iter().map(|name| WorkloadRef { kind, name }));
                let Some(token) = next.filter(|t| !t.is_empty()) else {
                    break;
                };
                if out.len() > limit {
                    cut = Some(format!("more than {limit} consumers match"));
                    break;
                }
                if scanned >= SCANNED {
                    cut = Some(format!(
                        "discovery reads at most {SCANNED} {}s a rotation; the namespace has more",
                        kind.as_str()
                    ));
                    break;
                }
                params.continue_token = Some(token);
            }
        }
        out.sort();
        out.dedup();
        if out.len() > limit {
            cut.get_or_insert_with(|| format!("{} consumers match", out.len()));
            out.truncate(limit);
        }
        Ok(Listed { found: out, cut })
    }
}

/// Reads and writes of one restart when the workload keeps changing in between.
const CONFLICT_ATTEMPTS: u32 = 3;

/// Workloads a list request returns at once.
const PAGE: u32 = 100;
/// Workloads of one kind discovery reads in one rotation, at most.
const SCANNED: usize = 2_000;

/// What [`Workloads::find`] found, and what it left out.
pub struct Listed {
    pub found: Vec<WorkloadRef>,
    /// Why the list is incomplete, if it is.
    pub cut: Option<String>,
}

/// Whether the API server does not serve the resource (its CRD is not installed).
fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The pod template's spec of a workload, typed.
fn pod_spec(data: &Value) -> Option<PodSpec> {
    serde_json::from_value(data.pointer("/spec/template/spec")?.clone()).ok()
}

/// Whether a pod spec reads Secret `name`: env `secretKeyRef`, `envFrom.secretRef`,
/// a `secret` volume, or a projected volume's secret source.
pub fn reads_secret(spec: &PodSpec, name: &str) -> bool {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        let env = c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == name)
        });
        let env_from = c
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == name));
        if env || env_from {
            return true;
        }
    }
    spec.volumes.iter().flatten().any(|v| {
        let secret = v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(name));
        let projected = v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.secret.as_ref().is_some_and(|s| s.name == name))
        });
        secret || projected
    })
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// A Rollout's `spec.restartAt` for a restart asked at `now`: the next whole second.
/// Argo Rollouts evicts the pods created before it, and a pod's creationTimestamp is
/// in whole seconds: rounded down, a pod created earlier in the same second — before
/// the Secret was written — would be left running with the old credential. (Argo waits
/// for a time still to come: at most a second here.)
fn restart_at(now: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::DurationRound;
    let second = chrono::TimeDelta::seconds(1);
    let up = now.duration_trunc(second).unwrap_or(now) + second;
    up.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The most rotation tokens one `rotor.dev/restartedAt` value carries (about 1 KiB).
pub(super) const MAX_TOKENS: usize = 32;
/// The most tokens one restart adds (rotations coalesced into one write): the rest of
/// [`MAX_TOKENS`] keeps earlier rotations' tokens.
pub(super) const MAX_NEW_TOKENS: usize = 16;

/// The value to write for `new` tokens on a workload whose annotation holds `carried`:
/// the new tokens (at most [`MAX_NEW_TOKENS`]) after the most recent carried ones, at
/// most [`MAX_TOKENS`] in all, each once. A rotation counts its workload as restarted
/// while its token is there, so a later rotation's restart keeps it; a rollback to a
/// template from before the rotation drops it (and the rotation restarts again). Only
/// well-formed tokens are carried: the annotation is anyone's to write.
pub(super) fn carry(carried: Option<&str>, new: &str) -> String {
    let mut value: Vec<&str> = Vec::new();
    for t in new.split(',').filter(|t| !t.is_empty()) {
        if !value.contains(&t) && value.len() < MAX_NEW_TOKENS {
            value.push(t);
        }
    }
    let mut old: Vec<&str> = Vec::new();
    // The last occurrence of each counts (the newest place it was written in).
    for t in carried.unwrap_or_default().split(',').rev() {
        if old.len() + value.len() >= MAX_TOKENS {
            break;
        }
        if well_formed(t) && !value.contains(&t) && !old.contains(&t) {
            old.push(t);
        }
    }
    old.reverse();
    old.extend(value);
    old.join(",")
}

/// Whether `t` is a token as [`super::token`] makes them: `<sequence>-<hex>`.
fn well_formed(t: &str) -> bool {
    t.split_once('-').is_some_and(|(n, h)| {
        (1..=20).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && h.len() <= 8
            && h.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The `rotor.dev/restartedAt` value a workload carries: on a Rollout itself, else on
/// its pod template.
fn restarted_with(kind: WorkloadKind, obj: &DynamicObject) -> Option<String> {
    if kind == WorkloadKind::Rollout {
        obj.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
            .cloned()
    } else {
        obj.data
            .pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// The tokens that count as restarts: a Rollout's only while it still asks for the
/// restart rotor wrote with them (`spec.restartAt`: Argo Rollouts keeps it; a tool
/// that took it off took the restart off too).
fn restarts_counted(kind: WorkloadKind, obj: &DynamicObject) -> Option<String> {
    if kind == WorkloadKind::Rollout && text(&obj.data, "/spec/restartAt").is_none() {
        return None;
    }
    restarted_with(kind, obj)
}

/// A consumer's state, from the object as read.
fn observed(kind: WorkloadKind, obj: &DynamicObject, since_generation: Option<i64>) -> Observed {
    let restarted_with = restarts_counted(kind, obj);
    let generation = obj.metadata.generation;
    let (rolled_out, message) = rollout(kind, &obj.metadata, &obj.data, since_generation);
    Observed {
        uid: obj.metadata.uid.clone(),
        generation,
        restarted_with,
        rolled_out,
        message,
    }
}

/// Whether a workload has rolled out to (at least) `since_generation`, as
/// `kubectl rollout status` judges it, and how far it is in words.
pub fn rollout(
    kind: WorkloadKind,
    meta: &ObjectMeta,
    obj: &Value,
    since_generation: Option<i64>,
) -> (bool, String) {
    // The generation read, as `kubectl rollout status` checks: the status of an
    // earlier one says nothing about the template read (a rollback, then the token
    // back: the old status would count), and one re-created under the name starts
    // again at 1.
    let wanted = meta.generation.or(since_generation).unwrap_or(0);
    if kind != WorkloadKind::Rollout && int(obj, "/status/observedGeneration") < wanted {
        return (
            false,
            "waiting for its controller to see the restart".into(),
        );
    }
    let desired = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match kind {
        WorkloadKind::Deployment => {
            let updated = int(obj, "/status/updatedReplicas");
            let replicas = int(obj, "/status/replicas");
            let available = int(obj, "/status/availableReplicas");
            if updated < desired {
                (false, format!("{updated} of {desired} replicas updated"))
            } else if replicas > updated {
                (
                    false,
                    format!("{} old replicas pending termination", replicas - updated),
                )
            } else if available < updated {
                (
                    false,
                    format!("{available} of {updated} updated replicas available"),
                )
            } else {
                (true, format!("rolled out ({updated} replicas)"))
            }
        }
        WorkloadKind::StatefulSet => {
            if text(obj, "/spec/updateStrategy/type") == Some("OnDelete") {
                return (
                    false,
                    "updateStrategy OnDelete: pods change only when deleted".into(),
                );
            }
            let ready = int(obj, "/status/readyReplicas");
            let updated = int(obj, "/status/updatedReplicas");
            let current = text(obj, "/status/currentRevision");
            let update = text(obj, "/status/updateRevision");
            if updated < desired {
                (false, format!("{updated} of {desired} pods updated"))
            } else if ready < desired {
                (false, format!("{ready} of {desired} pods ready"))
            } else if current != update {
                (
                    false,
                    "waiting for the update revision to become current".into(),
                )
            } else {
                (true, format!("rolled out ({desired} pods)"))
            }
        }
        WorkloadKind::DaemonSet => {
            let desired = int(obj, "/status/desiredNumberScheduled");
            let updated = int(obj, "/status/updatedNumberScheduled");
            let available = int(obj, "/status/numberAvailable");
            if updated < desired {
                (false, format!("{updated} of {desired} pods updated"))
            } else if available < desired {
                (
                    false,
                    format!("{available} of {desired} updated pods available"),
                )
            } else {
                (true, format!("rolled out ({desired} pods)"))
            }
        }
        WorkloadKind::Rollout => {
            let phase = text(obj, "/status/phase").unwrap_or("Unknown");
            let asked = text(obj, "/spec/restartAt");
            let done = text(obj, "/status/restartedAt");
            let restarted = match (asked, done) {
                (Some(a), Some(d)) => d >= a,
                _ => false,
            };
            if phase == "Healthy" && restarted {
                (true, "rolled out (Healthy)".into())
            } else if asked.is_none() {
                // rotor asked for a restart: whoever took it off, no pod was restarted.
                (false, "spec.restartAt was taken off: not restarted".into())
            } else if !restarted {
                (false, format!("restart pending ({phase})"))
            } else {
                (false, format!("phase {phase}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_keeps_the_tokens_the_workload_carries() {
        assert_eq!(carry(None, "3-aaaa"), "3-aaaa");
        assert_eq!(carry(Some(""), "3-aaaa,5-bbbb"), "3-aaaa,5-bbbb");
        // A later rotation's restart keeps the earlier rotations' tokens, once each.
        assert_eq!(carry(Some("1-x,3-aaaa"), "3-aaaa,7-c"), "1-x,3-aaaa,7-c");
        // Bounded: the oldest carried tokens go first; new ones always stay.
        let many: Vec<String> = (0..40).map(|i| format!("{i}-x")).collect();
        let value = carry(Some(&many.join(",")), "99-new");
        let kept: Vec<&str> = value.split(',').collect();
        assert_eq!(kept.len(), MAX_TOKENS);
        assert_eq!(kept[0], "9-x");
        assert_eq!(kept[MAX_TOKENS - 1], "99-new");
        // A restart of many coalesced rotations still keeps earlier tokens.
        let new: Vec<String> = (100..140).map(|i| format!("{i}-n")).collect();
        let value = carry(Some(&many.join(",")), &new.join(","));
        let kept: Vec<&str> = value.split(',').collect();
        assert_eq!(kept.len(), MAX_TOKENS);
        assert_eq!(kept[MAX_TOKENS - MAX_NEW_TOKENS - 1], "39-x");
        assert_eq!(kept[MAX_TOKENS - MAX_NEW_TOKENS], "100-n");
        // Each once: a repeated token fills no place (its last place counts).
        assert_eq!(carry(Some("5-a,5-a,6-b,5-a"), "7-c,7-c"), "6-b,5-a,7-c");
        // What rotor never writes is not carried: anyone can write the annotation.
        let hostile = format!(
            "{},2026-12-05T10:00:00Z,-x,1-,1-abcdefghi,x-1",
            "9".repeat(300)
        );
        assert_eq!(carry(Some(&hostile), "3-aaaa"), "1-,3-aaaa");
    }

    #[test]
    fn a_rollout_counts_its_token_only_while_it_asks_for_the_restart() {
        let rollout = |spec: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                "metadata": {"name": "checkout", "annotations": {RESTARTED_AT_ANNOTATION: "3-aaaa"}},
                "spec": spec,
            }))
            .unwrap()
        };
        let asked = rollout(json!({"restartAt": "2026-12-04T10:00:00Z"}));
        let taken_off = rollout(json!({}));
        assert_eq!(
            observed(WorkloadKind::Rollout, &asked, None)
                .restarted_with
                .as_deref(),
            Some("3-aaaa")
        );
        // Restarted again (its token no longer counts); the token itself is carried.
        assert_eq!(
            observed(WorkloadKind::Rollout, &taken_off, None).restarted_with,
            None
        );
        assert_eq!(
            restarted_with(WorkloadKind::Rollout, &taken_off).as_deref(),
            Some("3-aaaa")
        );
    }

    #[test]
    fn a_rollout_restart_covers_pods_created_earlier_in_the_same_second() {
        let at = |t: &str| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        assert_eq!(
            restart_at(at("2026-12-05T21:45:03.400Z")),
            "2026-12-05T21:45:04Z"
        );
        // On the second: still the next one (a pod created at …:03 is before it).
        assert_eq!(
            restart_at(at("2026-12-05T21:45:03Z")),
            "2026-12-05T21:45:04Z"
        );
    }

    fn meta(generation: i64) -> ObjectMeta {
        ObjectMeta {
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn rolled_out_as_kubectl_rollout_status_says() {
        use WorkloadKind as K;
        let d = |observed: i64, updated: i64, replicas: i64, available: i64| {
            json!({"spec": {"replicas": 3}, "status": {"observedGeneration": observed,
                "updatedReplicas": updated, "replicas": replicas, "availableReplicas": available}})
        };
        let cases: Vec<(&str, K, Value, bool, &str)> = vec![
            (
                "deployment: not seen yet",
                K::Deployment,
                d(3, 3, 3, 3),
                false,
                "waiting for its controller",
            ),
            (
                "deployment: updating",
                K::Deployment,
                d(4, 1, 4, 3),
                false,
                "1 of 3 replicas updated",
            ),
            (
                "deployment: old pods left",
                K::Deployment,
                d(4, 3, 4, 3),
                false,
                "1 old replicas pending",
            ),
            (
                "deployment: not available",
                K::Deployment,
                d(4, 3, 3, 2),
                false,
                "2 of 3 updated replicas available",
            ),
            (
                "deployment: done",
                K::Deployment,
                d(4, 3, 3, 3),
                true,
                "rolled out (3 replicas)",
            ),
            (
                "deployment: a later generation counts",
                K::Deployment,
                d(9, 3, 3, 3),
                true,
                "rolled out",
            ),
            (
                "statefulset: revision pending",
                K::StatefulSet,
                json!({"spec": {"replicas": 2}, "status": {"observedGeneration": 4, "readyReplicas": 2,
                    "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "b"}}),
                false,
                "waiting for the update revision",
            ),
            (
                "statefulset: done",
                K::StatefulSet,
                json!({"spec": {"replicas": 2}, "status": {"observedGeneration": 4, "readyReplicas": 2,
                    "updatedReplicas": 2, "currentRevision": "b", "updateRevision": "b"}}),
                true,
                "rolled out (2 pods)",
            ),
            (
                "statefulset: OnDelete never rolls by itself",
                K::StatefulSet,
                json!({"spec": {"replicas": 1, "updateStrategy": {"type": "OnDelete"}},
                    "status": {"observedGeneration": 4}}),
                false,
                "updateStrategy OnDelete",
            ),
            (
                "daemonset: updating",
                K::DaemonSet,
                json!({"status": {"observedGeneration": 4, "desiredNumberScheduled": 5,
                    "updatedNumberScheduled": 4, "numberAvailable": 5}}),
                false,
                "4 of 5 pods updated",
            ),
            (
                "daemonset: done",
                K::DaemonSet,
                json!({"status": {"observedGeneration": 4, "desiredNumberScheduled": 5,
                    "updatedNumberScheduled": 5, "numberAvailable": 5}}),
                true,
                "rolled out (5 pods)",
            ),
            (
                "rollout: restart pending",
                K::Rollout,
                json!({"spec": {"restartAt": "2026-12-04T10:00:00Z"}, "status": {"phase": "Healthy"}}),
                false,
                "restart pending",
            ),
            (
                "rollout: restarted and healthy",
                K::Rollout,
                json!({"spec": {"restartAt": "2026-12-04T10:00:00Z"},
                    "status": {"phase": "Healthy", "restartedAt": "2026-12-04T10:00:00Z"}}),
                true,
                "rolled out (Healthy)",
            ),
            (
                "rollout: progressing",
                K::Rollout,
                json!({"spec": {"restartAt": "2026-12-04T10:00:00Z"},
                    "status": {"phase": "Progressing", "restartedAt": "2026-12-04T10:00:00Z"}}),
                false,
                "phase Progressing",
            ),
            (
                "rollout: restartAt taken off",
                K::Rollout,
                json!({"spec": {}, "status": {"phase": "Healthy", "restartedAt": "2026-12-04T10:00:00Z"}}),
                false,
                "spec.restartAt was taken off",
            ),
            // Whatever a hostile object holds, no panic: strings where numbers go.
            (
                "garbage status",
                K::Deployment,
                json!({"spec": {"replicas": "x"}, "status": {"observedGeneration": "y", "updatedReplicas": []}}),
                false,
                "waiting for its controller",
            ),
        ];
        for (case, kind, obj, want_done, want_message) in cases {
            let (done, message) = rollout(kind, &meta(4), &obj, Some(4));
            assert_eq!(done, want_done, "{case}: {message}");
            assert!(message.starts_with(want_message), "{case}: {message}");
        }
        // Restarted at 4, rolled back at 5 (the old pods count as updated), the token
        // put back at 6: the status of 5 says nothing about the template of 6.
        let (done, message) = rollout(K::Deployment, &meta(6), &d(5, 3, 3, 3), Some(4));
        assert!(!done, "{message}");
        assert!(
            message.starts_with("waiting for its controller"),
            "{message}"
        );
    }

    #[test]
    fn discovery_reads_every_way_a_pod_reads_a_secret() {
        let spec = |v: Value| -> PodSpec { serde_json::from_value(v).unwrap() };
        let container = |extra: Value| {
            let mut c = json!({"name": "app", "image": "app"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"containers": [c]})
        };
        let cases: Vec<(&str, PodSpec, bool)> = vec![
            (
                "env secretKeyRef",
                spec(container(
                    json!({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]}),
                )),
                true,
            ),
            (
                "envFrom",
                spec(container(
                    json!({"envFrom": [{"secretRef": {"name": "db"}}]}),
                )),
                true,
            ),
            (
                "init container envFrom",
                spec(
                    json!({"containers": [{"name": "a"}], "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "db"}}]}]}),
                ),
                true,
            ),
            (
                "secret volume",
                spec(
                    json!({"containers": [{"name": "a"}], "volumes": [{"name": "v", "secret": {"secretName": "db"}}]}),
                ),
                true,
            ),
            (
                "projected volume",
                spec(
                    json!({"containers": [{"name": "a"}], "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "db"}}]}}]}),
                ),
                true,
            ),
            (
                "another Secret",
                spec(container(
                    json!({"envFrom": [{"secretRef": {"name": "db-other"}}]}),
                )),
                false,
            ),
            (
                "a ConfigMap of the name",
                spec(container(
                    json!({"envFrom": [{"configMapRef": {"name": "db"}}]}),
                )),
                false,
            ),
            ("nothing", spec(container(json!({}))), false),
        ];
        for (case, spec, want) in cases {
            assert_eq!(reads_secret(&spec, "db"), want, "{case}");
        }
    }
}
