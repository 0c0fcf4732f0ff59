//! Shipping rotor: the Helm chart (rendered by the real Helm v4 library), the kustomize
//! tree, least-privilege RBAC proven by a run with only the chart's ServiceAccount
//! token, the CRD copies, and the Argo CD health check on status objects from real runs.

mod support;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::watcher;
use rotor::api::{RotationPhase, SecretRotation};
use std::path::Path;
use std::process::Command;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> String {
    std::env::var("ROTOR_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/rotor/venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

fn helm(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(format!("{ROOT}/hack/helm.py"))
        .args(args)
        .output()
        .expect("python with helm-python-sdk: run hack/deps.sh");
    assert!(
        out.status.success(),
        "helm.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn chart() -> String {
    format!("{ROOT}/charts/rotor")
}

/// Renders the chart; returns the documents as JSON values.
fn render(namespace: &str, values: serde_json::Value) -> (String, Vec<serde_json::Value>) {
    render_release(namespace, values, "rotor")
}

/// Renders as release `release` (cluster-scoped names differ per release, so tests
/// running in parallel do not rebind each other's ClusterRoleBinding).
fn render_release(
    namespace: &str,
    values: serde_json::Value,
    release: &str,
) -> (String, Vec<serde_json::Value>) {
    let yaml = helm(&["render", &chart(), namespace, &values.to_string(), release]);
    let docs = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    (yaml, docs)
}

use serde::Deserialize;

fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

/// 1.20 serves PodDisruptionBudget only as policy/v1beta1; offline rendering assumes a
/// newer cluster, where the chart picks policy/v1.
fn for_old_server(yaml: &str) -> String {
    yaml.replace(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget",
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget",
    )
}

#[test]
fn chart_lints_clean_in_strict_mode() {
    for values in [
        serde_json::json!({}),
        serde_json::json!({"watchNamespaces": ["team-a", "team-b"]}),
        serde_json::json!({"replicaCount": 2, "serviceMonitor": {"enabled": true}}),
        every_new_value(),
        serde_json::json!({"fullnameOverride": "keys", "crds": {"enabled": false},
            "aggregateClusterRoles": false, "test": {"enabled": false}}),
    ] {
        let report: serde_json::Value =
            serde_json::from_str(&helm(&["lint", &chart(), &values.to_string()])).unwrap();
        assert_eq!(
            report["errors"],
            serde_json::json!([]),
            "{values}: {report}"
        );
        assert_eq!(
            report["messages"],
            serde_json::json!([]),
            "{values}: {report}"
        );
    }
}

/// Renders with `values`; the exit status and stderr.
fn render_refused(values: &str) -> (bool, String) {
    let out = Command::new(python())
        .arg(format!("{ROOT}/hack/helm.py"))
        .args(["render", &chart(), "rotor-system", values])
        .output()
        .expect("python with helm-python-sdk: run hack/deps.sh");
    (
        !out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chart_values_are_checked_by_the_schema() {
    // The defaults render: a refusal below is the schema's, not a broken chart.
    let (refused, stderr) = render_refused("{}");
    assert!(!refused, "the default values must render: {stderr}");
    // (values, what the error must name): unknown keys at the top, one and two levels
    // down, a typo inside a pass-through Kubernetes object, and malformed values.
    let cases = [
        (r#"{"replicaCounts": 2}"#, "replicaCounts"),
        (r#"{"image": {"repo": "x"}}"#, "repo"),
        (r#"{"leaderElection": {"enable": false}}"#, "enable"),
        (r#"{"metrics": {"service": {"enable": false}}}"#, "enable"),
        (r#"{"resources": {"limit": {"memory": "1Gi"}}}"#, "limit"),
        (r#"{"replicaCount": 0}"#, "replicaCount"),
        (r#"{"sweepInterval": "hourly"}"#, "sweepInterval"),
        // rotor reads settings from ROTOR_* (ROTOR_ALLOW_PRIVATE_ENDPOINTS) and its
        // home from POD_NAMESPACE: extraEnv must not set them behind the values.
        (
            r#"{"extraEnv": [{"name": "ROTOR_ALLOW_PRIVATE_ENDPOINTS", "value": "true"}]}"#,
            "extraEnv",
        ),
        (
            r#"{"extraEnv": [{"name": "POD_NAMESPACE", "value": "kube-system"}]}"#,
            "extraEnv",
        ),
        (r#"{"watchNamespaces": "shop"}"#, "watchNamespaces"),
        (r#"{"crds": {"enable": false}}"#, "enable"),
        (r#"{"networkPolicy": {"enable": true}}"#, "enable"),
        (r#"{"networkPolicy": {"apiServer": {"cidr": []}}}"#, "cidr"),
        (
            r#"{"networkPolicy": {"providerEgress": [{"port": 443}]}}"#,
            "port",
        ),
        (
            r#"{"podDisruptionBudget": {"minAvailable": "half"}}"#,
            "minAvailable",
        ),
        (
            r#"{"podDisruptionBudget": {"maxUnavailabe": 1}}"#,
            "maxUnavailabe",
        ),
        (r#"{"providers": {"httpMaxRetry": 8}}"#, "httpMaxRetry"),
        (r#"{"providers": {"timeout": "soon"}}"#, "timeout"),
        (r#"{"extraArgs": "--log-level=debug"}"#, "extraArgs"),
        (r#"{"extraEnv": [{"value": "x"}]}"#, "name"),
        (r#"{"test": {"image": {"repo": "x"}}}"#, "repo"),
        (r#"{"commonLabels": {"team": 1}}"#, "commonLabels"),
        (
            r#"{"topologySpreadConstraints": [{"maxSkew": 1}]}"#,
            "topologyKey",
        ),
    ];
    for (values, named) in cases {
        let (refused, stderr) = render_refused(values);
        assert!(refused, "{values} was accepted");
        assert!(
            stderr.contains(named),
            "{values}: the error does not name {named:?}: {stderr}"
        );
    }
    let (refused, _) =
        render_refused(r#"{"replicaCount": 2, "leaderElection": {"enabled": false}}"#);
    assert!(
        refused,
        "two replicas without leader election must be refused"
    );
    let (refused, stderr) = render_refused(
        r#"{"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}"#,
    );
    assert!(
        refused,
        "minAvailable and maxUnavailable together were accepted"
    );
    assert!(stderr.contains("not both"), "{stderr}");
    // A budget that never allows an eviction hangs every node drain.
    for pdb in [
        r#"{"minAvailable": 2}"#,
        r#"{"minAvailable": "100%"}"#,
        r#"{"maxUnavailable": 0}"#,
    ] {
        let (refused, stderr) = render_refused(&format!(
            r#"{{"replicaCount": 2, "podDisruptionBudget": {pdb}}}"#
        ));
        assert!(refused, "{pdb} was accepted");
        assert!(stderr.contains("never allows an eviction"), "{stderr}");
    }
    let (refused, stderr) =
        render_refused(r#"{"replicaCount": 3, "podDisruptionBudget": {"minAvailable": 2}}"#);
    assert!(!refused, "minAvailable 2 of 3 must be accepted: {stderr}");
    // `global` is what a parent chart passes to every subchart: a strict root that
    // refused it would break rotor as a subchart (helm/helm#10392).
    let (refused, stderr) =
        render_refused(r#"{"global": {"imageRegistry": "registry.example", "x": {"y": 1}}}"#);
    assert!(!refused, "`global` must be accepted: {stderr}");
}

#[tokio::test]
async fn chart_renders_and_applies_in_default_namespaced_and_ha_modes() {
    let client = control_plane().client().await;
    // Default: cluster-wide.
    let ns = namespace(&client, "chart-default").await;
    let (yaml, docs) = render(&ns, serde_json::json!({}));
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Pod",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    assert_test_pod(&docs, &ns, "rotor");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    apply_yaml(&client, &ns, &yaml)
        .await
        .expect("every rendered object applies");

    // Namespaced: a Role per watched namespace, no cluster-wide Secret access.
    let ns = namespace(&client, "chart-namespaced").await;
    for team in ["team-a", "team-b"] {
        namespace(&client, team).await;
    }
    let (yaml, docs) = render(
        &ns,
        serde_json::json!({"watchNamespaces": ["team-a", "team-b"]}),
    );
    // The only ClusterRoles are the tenants' aggregated ones (nothing on Secrets), and
    // nothing binds the operator cluster-wide.
    let cluster_roles: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(cluster_roles, ["rotor-view", "rotor-edit"]);
    assert!(
        !kinds(&docs).contains(&"ClusterRoleBinding".to_string()),
        "{:?}",
        kinds(&docs)
    );
    let role_namespaces: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "rotor")
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(role_namespaces, ["team-a", "team-b"]);
    assert!(yaml.contains("--namespace=team-a,team-b"));
    apply_yaml(&client, &ns, &yaml)
        .await
        .expect("namespaced mode applies");

    // HA: two replicas, leader election, a PodDisruptionBudget.
    let ns = namespace(&client, "chart-ha").await;
    let (yaml, docs) = render(&ns, serde_json::json!({"replicaCount": 2}));
    // Today's PodDisruptionBudget stays the default.
    let pdb = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget with two replicas");
    assert_eq!(
        pdb["spec"],
        serde_json::json!({"minAvailable": 1, "selector": {"matchLabels":
            {"app.kubernetes.io/name": "rotor", "app.kubernetes.io/instance": "rotor"}}})
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(yaml.contains("--leader-elect"));
    apply_yaml(&client, &ns, &for_old_server(&yaml))
        .await
        .expect("HA mode applies");
}

#[tokio::test]
async fn kustomize_default_renders_and_applies() {
    let client = control_plane().client().await;
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/config/default")])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let applied = apply_yaml(&client, "rotor-system", &yaml)
        .await
        .expect("kustomize output applies");
    let mut kinds: Vec<String> = applied
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let samples = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/config/samples")])
        .output()
        .unwrap();
    assert!(
        samples.status.success(),
        "{}",
        String::from_utf8_lossy(&samples.stderr)
    );
    let count = String::from_utf8_lossy(&samples.stdout)
        .matches("kind: SecretRotation")
        .count();
    // One sample per provider, each listed in the kustomization.
    let files = std::fs::read_dir(Path::new(ROOT).join("config/samples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .count();
    assert_eq!(count, files, "one sample per provider");
    assert!(count >= 9, "one sample per provider");
}

#[test]
fn the_crd_is_the_same_bytes_everywhere() {
    let generated = rotor::api::crd_yaml();
    for copy in [
        "crds/secretrotation.yaml",
        "config/crd/secretrotation.yaml",
        "charts/rotor/files/secretrotation.yaml",
    ] {
        let on_disk = std::fs::read_to_string(Path::new(ROOT).join(copy)).unwrap();
        assert!(
            on_disk == generated,
            "{copy} differs from `rotor crd`: run `make crd`"
        );
    }
}

/// The rules a full rotation needed, as the chart grants them. A widening of the
/// ClusterRole shows up here as a diff.
const EXPECTED_CLUSTER_RULES: &[(&str, &str, &[&str])] = &[
    (
        "rotor.dev",
        "secretrotations",
        &["get", "list", "watch", "patch"],
    ),
    ("rotor.dev", "secretrotations/status", &["patch"]),
    ("rotor.dev", "secretrotations/finalizers", &["update"]),
    (
        "",
        "secrets",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", "events", &["create"]),
    ("apps", "deployments", &["get", "list", "patch"]),
    ("apps", "statefulsets", &["get", "list", "patch"]),
    ("apps", "daemonsets", &["get", "list", "patch"]),
    ("argoproj.io", "rollouts", &["get", "patch"]),
    ("", "namespaces", &["get"]),
];

/// A Role that may read and write Secrets but not list them, or not watch them: rotor
/// would wait for its Secrets watch for ever, reconciling nothing. It stops at once
/// and says why — with `--leader-elect` too, before it asks for the lease (this Role
/// grants no Leases: asking would fail with another message). The same for a Role
/// that may not watch SecretRotations.
#[tokio::test]
async fn a_role_that_cannot_list_or_watch_secrets_stops_rotor_at_start_and_says_so() {
    let client = control_plane().client().await;
    const ALL: &str = "get, list, watch, create, patch, delete";
    for (missing, resource, rotations, secrets, flags) in [
        (
            "list",
            "secrets",
            "get, list, watch, patch",
            "get, watch, create, patch, delete",
            &[][..],
        ),
        (
            "watch",
            "secrets",
            "get, list, watch, patch",
            "get, list, create, patch, delete",
            &["--leader-elect", "--lease-name", "narrow"][..],
        ),
        ("watch", "secretrotations", "get, list, patch", ALL, &[][..]),
    ] {
        let ns = namespace(&client, &format!("rbac-no{missing}-{resource}")).await;
        let role = format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: narrow}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: narrow}}
rules:
- apiGroups: [rotor.dev]
  resources: [secretrotations]
  verbs: [{rotations}]
- apiGroups: [rotor.dev]
  resources: [secretrotations/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [{secrets}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: narrow}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: narrow}}
subjects:
- {{kind: ServiceAccount, name: narrow}}
"#
        );
        apply_yaml(&client, &ns, &role).await.unwrap();
        // The authorizer has the binding (what it grants) before rotor starts.
        let user = format!("system:serviceaccount:{ns}:narrow");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !allowed(&client, &user, "list", "rotor.dev", "secretrotations", &ns).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the Role was not in force within 30s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let group = if resource == "secrets" {
            ""
        } else {
            "rotor.dev"
        };
        assert!(!allowed(&client, &user, missing, group, resource, &ns).await);
        let kubeconfig = service_account_kubeconfig(&client, &ns, "narrow").await;
        let op = Operator::start_env(&ns, flags, &[("KUBECONFIG", kubeconfig.as_str())]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !op.exited() {
            assert!(
                std::time::Instant::now() < deadline,
                "rotor still runs 60s after start without {missing} on {resource}:\n{}",
                op.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let logs = op.logs();
        assert!(
            logs.contains(&format!("cannot {missing} {resource} in {ns}"))
                && logs.contains(&format!("rotor needs get, list and watch on {resource}")),
            "{logs}"
        );
    }
}

#[tokio::test]
async fn rbac_is_least_privilege_proven_by_a_run_with_the_chart_token() {
    let client = control_plane().client().await;
    let home = namespace(&client, "rbac-system").await;
    let tenant = namespace(&client, "rbac-tenant").await;
    let (yaml, _) = render_release(&home, serde_json::json!({}), "rotor-rbac");
    apply_yaml(&client, &home, &yaml).await.unwrap();

    // A token for the chart's ServiceAccount, as a pod would have.
    let kubeconfig = service_account_kubeconfig(&client, &home, "rotor-rbac").await;
    let op = Operator::start_env(
        &tenant,
        &["--leader-elect", "--lease-name", "rotor-leader"],
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAMESPACE", home.as_str()),
            ("POD_NAME", "rotor-0"),
        ],
    );
    apply_yaml(&client, &tenant, &sample("random.yaml"))
        .await
        .unwrap();
    wait_status(
        &client,
        &tenant,
        "session-key",
        60,
        "rotated with the chart's token",
        |s| s.rotation_status == RotationPhase::Success,
    )
    .await;
    // Consumers: a Deployment that reads the Secret is found, restarted and followed
    // with the chart's token too.
    deployment_reading(&client, &tenant, "web", "app-session-key", 1).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &tenant);
    patch_rotation(
        &client,
        &tenant,
        "session-key",
        serde_json::json!({"spec": {"consumers": {"discover": true}, "revocation": {"minValidity": "0s"}}}),
    )
    .await;
    patch_rotation(
        &client,
        &tenant,
        "session-key",
        serde_json::json!({"metadata": {"annotations": {"rotor.dev/rotate": "rbac"}}}),
    )
    .await;
    wait_status(&client, &tenant, "session-key", 60, "rotated twice", |s| {
        s.rotation_count == 2
    })
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let restarted = deployments
            .get("web")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_some_and(|a| {
                a.get("rotor.dev/restartedAt")
                    .is_some_and(|v| v.split(',').any(|t| t.starts_with("2-")))
            });
        if restarted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumer was not restarted with the chart's token:\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        wait_events(&client, &tenant, "session-key", 3, 60).await,
        vec!["Rotated", "Rotated", "ConsumersRestarted"]
    );
    assert_no_leak_of_target(
        &client,
        &tenant,
        "session-key",
        "app-session-key",
        &op.logs(),
    )
    .await;
    // deletionPolicy Revoke: the finalizer is added, then removed after revoking.
    patch_rotation(
        &client,
        &tenant,
        "session-key",
        serde_json::json!({"spec": {"deletionPolicy": "Revoke"}}),
    )
    .await;
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &tenant);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let finalizers = api
            .get("session-key")
            .await
            .unwrap()
            .metadata
            .finalizers
            .unwrap_or_default();
        if finalizers.iter().any(|f| f == "rotor.dev/revoke-on-delete") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rotor never added its finalizer with the chart's token (finalizers: {finalizers:?}):\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    api.delete("session-key", &Default::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while api.get_opt("session-key").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "not deleted through the finalizer within 60s:\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // It went away because rotor revoked and removed its finalizer, not by itself.
    wait_for_event(&client, &tenant, "session-key", "RevokedOnDelete", "", 60).await;
    let logs = op.logs();
    assert!(
        !logs.contains("forbidden") && !logs.contains("Forbidden"),
        "a request was refused:\n{logs}"
    );

    let role = Api::<ClusterRole>::all(client.clone())
        .get("rotor-rbac")
        .await
        .unwrap();
    let granted: Vec<(String, String, Vec<String>)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| {
            let groups = r.api_groups.unwrap_or_default();
            let verbs = r.verbs.clone();
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                r.resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |res| (g.clone(), res, verbs.clone()))
            })
        })
        .collect();
    let expected: Vec<(String, String, Vec<String>)> = EXPECTED_CLUSTER_RULES
        .iter()
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        granted, expected,
        "the ClusterRole changed: update the expectation only if a rotation needs it"
    );
}

fn argo_health(obj: &serde_json::Value) -> (String, String) {
    let file = control_plane()
        .dir
        .join(format!("argo-{}.json", rand_suffix()));
    std::fs::write(&file, obj.to_string()).unwrap();
    let out = Command::new("lua5.1")
        .current_dir(ROOT)
        .arg("hack/argocd_health.lua")
        .arg(&file)
        .output()
        .expect("lua5.1: run hack/deps.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.trim_end().split_once('\t').unwrap();
    (status.to_string(), message.to_string())
}

fn rand_suffix() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn argocd_health_check_on_status_objects_from_real_runs() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "argocd").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<SecretRotation>(&()),
    );
    // No status yet: no operator running.
    let manifest = "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: argo\nspec:\n  provider: {random: {length: 16}}\n  secretsMapping: {value: V}\n  target: {name: argo-secret}\n";
    apply_yaml(&client, &ns, manifest).await.unwrap();
    let fresh = serde_json::to_value(api.get("argo").await.unwrap()).unwrap();
    assert_eq!(argo_health(&fresh).0, "Progressing");

    // Watch every version of the object through its first rotation.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let recorder = seen.clone();
    let watch_api = api.clone();
    let watching = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = event {
                recorder
                    .lock()
                    .unwrap()
                    .push(serde_json::to_value(o).unwrap());
            }
        }
    });
    let op = Operator::start(&ns);
    wait_status(&client, &ns, "argo", 60, "rotated", |s| {
        s.rotation_status == RotationPhase::Success
    })
    .await;
    // The watch has delivered every version up to the Success the API server showed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|o| o["status"]["rotationStatus"] == "Success")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never delivered the Success version"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    watching.abort();
    let versions = seen.lock().unwrap().clone();
    let rotating = versions
        .iter()
        .find(|o| o["status"]["rotationStatus"] == "Rotating")
        .expect("the intent write was observed");
    assert_eq!(argo_health(rotating).0, "Progressing");
    let healthy = serde_json::to_value(api.get("argo").await.unwrap()).unwrap();
    let (status, message) = argo_health(&healthy);
    assert_eq!(status, "Healthy");
    assert!(message.contains("slot 0 active"), "{message}");

    assert_no_leak_of_target(&client, &ns, "argo", "argo-secret", &op.logs()).await;

    // Stale: the spec changed while no operator was running.
    op.kill();
    apply_yaml(&client, &ns, &manifest.replace("length: 16", "length: 20"))
        .await
        .unwrap();
    let stale = serde_json::to_value(api.get("argo").await.unwrap()).unwrap();
    assert_eq!(
        argo_health(&stale),
        (
            "Progressing".into(),
            "Waiting for rotor to observe generation 2".into()
        )
    );

    // Failed: an invalid spec.
    let _op = Operator::start(&ns);
    apply_yaml(&client, &ns, &manifest.replace("{value: V}", "{apiKey: V}"))
        .await
        .unwrap();
    wait_status(&client, &ns, "argo", 60, "failed", |s| {
        s.rotation_status == RotationPhase::Failed
    })
    .await;
    let failed = serde_json::to_value(api.get("argo").await.unwrap()).unwrap();
    let (status, message) = argo_health(&failed);
    assert_eq!(status, "Degraded");
    assert!(
        message.contains("spec.secretsMapping names output \"apiKey\""),
        "{message}"
    );

    // The copy in the argocd-cm patch is the same script.
    let patch =
        std::fs::read_to_string(format!("{ROOT}/config/argocd/argocd-cm-patch.yaml")).unwrap();
    let script = std::fs::read_to_string(format!("{ROOT}/config/argocd/health.lua")).unwrap();
    let embedded: String = patch
        .split_once("rotor.dev_SecretRotation: |\n")
        .unwrap()
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert_eq!(embedded, script);
}

/// Every value the chart conventions added, set away from its default.
fn every_new_value() -> serde_json::Value {
    serde_json::json!({
        "global": {"imageRegistry": "registry.example"},
        "commonLabels": {"team": "platform", "cost-center": "42"},
        "replicaCount": 3,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "allowPrivateCidrs": ["10.20.0.0/16"],
        "providers": {
            "timeout": "5m", "httpTimeout": "45s", "httpMaxRetries": 8, "httpBackoff": "1s",
            "httpMaxWait": "2m", "pollInterval": "10s", "updateTimeout": "20m"
        },
        "extraArgs": ["--allow-private-cidr=192.168.7.0/24"],
        "extraEnv": [
            {"name": "SSL_CERT_FILE", "value": "/etc/ssl/certs/ca-certificates.crt"},
            {"name": "SSL_CERT_DIR", "value": "/etc/rotor/ca"}
        ],
        "extraVolumes": [{"name": "private-ca", "configMap": {"name": "private-ca"}}],
        "extraVolumeMounts": [{"name": "private-ca", "mountPath": "/etc/rotor/ca", "readOnly": true}],
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway"},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "mine"}}}
        ],
        "crds": {"keep": false},
        "networkPolicy": {"enabled": true, "apiServer": {"cidrs": ["10.0.0.5/32"], "ports": [6443]}},
        "serviceMonitor": {"enabled": false}
    })
}

/// The `helm test` pod: a hook that asks /readyz through the metrics Service, with a
/// restricted security context, and labels no object of the operator selects.
fn assert_test_pod(docs: &[serde_json::Value], ns: &str, fullname: &str) {
    let pod = docs
        .iter()
        .find(|d| d["kind"] == "Pod")
        .expect("the helm test pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let container = &pod["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "wget");
    assert_eq!(
        command.last().copied(),
        Some(format!("http://{fullname}-metrics.{ns}.svc:8080/readyz").as_str())
    );
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["metadata"]["name"], format!("{fullname}-metrics"));
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    // The operator's Service must not send traffic to the test pod.
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    let selected = service["spec"]["selector"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    assert!(!selected, "the metrics Service selects the test pod");
}

fn doc<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn args_of(docs: &[serde_json::Value]) -> Vec<String> {
    doc(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `rotor run ARGS --help`: exits 0 only when rotor's own parser accepts every argument
/// (an unknown flag, a bad value or a flag given twice fails before --help is reached).
fn rotor_accepts(args: &[String]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .arg("run")
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn chart_renders_and_applies_every_new_value() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "chart-all").await;
    let (yaml, docs) = render_release(&ns, every_new_value(), "rotor-all");

    // commonLabels on every object, the CRD included.
    for d in &docs {
        assert_eq!(
            d["metadata"]["labels"]["team"], "platform",
            "{} {} lacks commonLabels",
            d["kind"], d["metadata"]["name"]
        );
    }
    let deployment = doc(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["cost-center"],
        "42"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The provider flags and extraArgs, accepted by rotor's own parser.
    let args = args_of(&docs);
    for flag in [
        "--provider-timeout=5m",
        "--http-timeout=45s",
        "--http-max-retries=8",
        "--http-backoff=1s",
        "--http-max-wait=2m",
        "--poll-interval=10s",
        "--update-timeout=20m",
        "--allow-private-cidr=10.20.0.0/16",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    assert_eq!(
        args.last().map(String::as_str),
        Some("--allow-private-cidr=192.168.7.0/24"),
        "extraArgs come last"
    );
    rotor_accepts(&args).expect("rotor run accepts the chart's arguments");
    // A flag the chart already sets cannot be repeated through extraArgs (the README
    // and values.yaml say so): rotor refuses to start.
    let (_, docs_dup) = render_release(
        &ns,
        serde_json::json!({"extraArgs": ["--http-max-retries=9"]}),
        "rotor-all",
    );
    let refused = rotor_accepts(&args_of(&docs_dup)).unwrap_err();
    assert!(
        refused.contains("cannot be used multiple times"),
        "{refused}"
    );

    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        ["POD_NAMESPACE", "POD_NAME", "SSL_CERT_FILE", "SSL_CERT_DIR"]
    );
    assert_eq!(
        container["volumeMounts"],
        serde_json::json!([{"name": "private-ca", "mountPath": "/etc/rotor/ca", "readOnly": true}])
    );
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{"name": "private-ca", "configMap": {"name": "private-ca"}}])
    );
    // A constraint without labelSelector gets the operator's; one with keeps its own.
    let spread = &pod["topologySpreadConstraints"];
    assert_eq!(
        spread[0]["labelSelector"]["matchLabels"],
        serde_json::json!({"app.kubernetes.io/name": "rotor", "app.kubernetes.io/instance": "rotor-all"})
    );
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread[1]["labelSelector"],
        serde_json::json!({"matchLabels": {"app": "mine"}})
    );
    // Exactly the one PDB bound that was set.
    assert_eq!(
        doc(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    assert!(
        doc(&docs, "PodDisruptionBudget")["spec"]
            .get("minAvailable")
            .is_none()
    );
    // crds.keep false: no resource policy.
    assert!(
        doc(&docs, "CustomResourceDefinition")["metadata"]
            .get("annotations")
            .is_none()
    );

    // The API server takes all of it (the ConfigMap the volume names need not exist).
    let applied = apply_yaml(&client, &ns, &for_old_server(&yaml))
        .await
        .expect("every new value applies");
    let deployment = applied
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "Deployment")
        .unwrap();
    assert_eq!(
        deployment.data["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Other PDB shapes: a percentage, and none at all.
    let (_, docs) = render_release(
        &ns,
        serde_json::json!({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": "50%"}}),
        "rotor-all",
    );
    assert_eq!(
        doc(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        "50%"
    );
    let (_, docs) = render_release(
        &ns,
        serde_json::json!({"replicaCount": 2, "podDisruptionBudget": {"enabled": false}}),
        "rotor-all",
    );
    assert!(!kinds(&docs).contains(&"PodDisruptionBudget".to_string()));
}

/// Every name the chart makes follows nameOverride / fullnameOverride, and every
/// reference (bindings, the Service, the test pod) follows with it.
#[tokio::test]
async fn chart_name_overrides_rename_every_object_consistently() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "chart-names").await;
    let (yaml, docs) = render_release(
        &ns,
        serde_json::json!({"fullnameOverride": "keyring", "networkPolicy": {"enabled": true}}),
        "rotor-names",
    );
    for d in docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
    {
        let name = d["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("keyring"), "{} {name}", d["kind"]);
    }
    for binding in docs
        .iter()
        .filter(|d| d["kind"].as_str().unwrap().ends_with("Binding"))
    {
        assert_eq!(binding["subjects"][0]["name"], "keyring");
        let role = binding["roleRef"]["name"].as_str().unwrap();
        assert!(
            docs.iter()
                .any(|d| d["kind"] == binding["roleRef"]["kind"] && d["metadata"]["name"] == role),
            "{role} is not rendered"
        );
    }
    assert!(args_of(&docs).contains(&"--lease-name=keyring-leader".to_string()));
    assert_test_pod(&docs, &ns, "keyring");
    apply_yaml(&client, &ns, &yaml)
        .await
        .expect("fullnameOverride applies");

    let (_, docs) = render_release(&ns, serde_json::json!({"nameOverride": "keys"}), "prod");
    let deployment = doc(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "prod-keys");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "keys"
    );
}

#[tokio::test]
async fn chart_crd_is_rotor_crd_and_follows_crds_values() {
    // Not in crds/: Helm would install it from there too, and never upgrade it.
    assert!(
        !Path::new(ROOT).join("charts/rotor/crds").exists(),
        "charts/rotor/crds/ must not exist: the CRD is a template"
    );
    let generated: serde_json::Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(&rotor::api::crd_yaml()).unwrap(),
    )
    .unwrap();
    let (_, docs) = render("rotor-system", serde_json::json!({}));
    let mut crd = doc(&docs, "CustomResourceDefinition").clone();
    assert_eq!(
        crd["metadata"]["annotations"],
        serde_json::json!({"helm.sh/resource-policy": "keep"})
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    let meta = crd["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("annotations");
    // Helm re-encodes `minimum: 0.0` as `minimum: 0`: the same JSON number.
    assert!(
        numbers_as_f64(&crd) == numbers_as_f64(&generated),
        "the chart's CRD is not `rotor crd`'s: run `make crd`"
    );

    let (_, docs) = render("rotor-system", serde_json::json!({"crds": {"keep": false}}));
    assert!(
        doc(&docs, "CustomResourceDefinition")["metadata"]
            .get("annotations")
            .is_none()
    );
    let (_, docs) = render(
        "rotor-system",
        serde_json::json!({"crds": {"enabled": false}}),
    );
    assert!(!kinds(&docs).contains(&"CustomResourceDefinition".to_string()));

    // Applied over the CRD the harness installed from crds/, the API server holds the
    // same spec as before.
    let client = control_plane().client().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let before =
        serde_json::to_value(crds.get("secretrotations.rotor.dev").await.unwrap().spec).unwrap();
    let (yaml, _) = render("rotor-system", serde_json::json!({}));
    let crd_yaml = yaml
        .split("\n---\n")
        .find(|d| d.contains("kind: CustomResourceDefinition"))
        .unwrap();
    let applied = apply_yaml(&client, "default", crd_yaml).await.unwrap();
    assert_eq!(
        numbers_as_f64(&applied[0].data["spec"]),
        numbers_as_f64(&before)
    );
    wait_crd_established(&client, "secretrotations.rotor.dev").await;
}

/// `v` with every number as a float, so that 0 and 0.0 compare equal.
fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test]
async fn network_policy_renders_what_the_values_say() {
    // No CNI runs here, so nothing enforces the policy: the test checks that the rules
    // are the ones the values ask for and that the API server accepts them.
    let client = control_plane().client().await;
    let selector = |release: &str| {
        serde_json::json!({"matchLabels":
            {"app.kubernetes.io/name": "rotor", "app.kubernetes.io/instance": release}})
    };
    let public_443 = serde_json::json!({
        "ports": [{"port": 443, "protocol": "TCP"}],
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "100.64.0.0/10",
                "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["::1/128", "fc00::/7", "fe80::/10"]}}
        ]
    });
    let dns_ports =
        serde_json::json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]);

    // Off by default.
    let (_, docs) = render("rotor-system", serde_json::json!({}));
    assert!(!kinds(&docs).contains(&"NetworkPolicy".to_string()));

    // On with the defaults: metrics from anywhere; API server ports to any address;
    // kube-dns; providers on 443 at public addresses only.
    let ns = namespace(&client, "netpol-default").await;
    let (yaml, docs) = render_release(
        &ns,
        serde_json::json!({"networkPolicy": {"enabled": true}}),
        "np-default",
    );
    let expected = serde_json::json!({
        "podSelector": selector("np-default"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": "metrics", "protocol": "TCP"}]}],
        "egress": [
            {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
            {"ports": dns_ports, "to": [{"namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
            public_443
        ]
    });
    assert_eq!(doc(&docs, "NetworkPolicy")["spec"], expected);
    let applied = apply_yaml(&client, &ns, &yaml).await.unwrap();
    let policy = applied
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "NetworkPolicy")
        .unwrap();
    assert_eq!(
        policy.data["spec"], expected,
        "the API server changed the rules"
    );

    // Every knob set.
    let ns = namespace(&client, "netpol-knobs").await;
    let monitoring =
        serde_json::json!({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}});
    let database = serde_json::json!({"ports": [{"port": 5432, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]});
    let dns = serde_json::json!({"ipBlock": {"cidr": "169.254.20.10/32"}});
    let (yaml, docs) = render_release(
        &ns,
        serde_json::json!({"networkPolicy": {
            "enabled": true,
            "metricsFrom": [monitoring],
            "apiServer": {"cidrs": ["10.0.0.5/32", "10.0.0.6/32"], "ports": [6443]},
            "dnsTo": [dns],
            "providerEgress": [public_443, database]
        }}),
        "np-knobs",
    );
    let expected = serde_json::json!({
        "podSelector": selector("np-knobs"),
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [monitoring, {"podSelector": {"matchLabels":
                {"app.kubernetes.io/name": "rotor-test", "app.kubernetes.io/instance": "np-knobs"}}}]
        }],
        "egress": [
            {"ports": [{"port": 6443, "protocol": "TCP"}],
             "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}, {"ipBlock": {"cidr": "10.0.0.6/32"}}]},
            {"ports": dns_ports, "to": [dns]},
            public_443,
            database
        ]
    });
    assert_eq!(doc(&docs, "NetworkPolicy")["spec"], expected);
    // The peer that lets `helm test` in selects the test pod.
    let test_labels = doc(&docs, "Pod")["metadata"]["labels"].clone();
    for (k, v) in expected["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&test_labels[k], v);
    }
    let applied = apply_yaml(&client, &ns, &yaml).await.unwrap();
    let policy = applied
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "NetworkPolicy")
        .unwrap();
    assert_eq!(
        policy.data["spec"], expected,
        "the API server changed the rules"
    );
}

/// May `user` do `verb` on `resource` (group `group`) in `ns`? Asked of the API server.
async fn allowed(
    client: &kube::Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {"user": user, "resourceAttributes":
            {"namespace": ns, "verb": verb, "group": group, "resource": resource}}
    }))
    .unwrap();
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test]
async fn aggregated_cluster_roles_give_tenants_secretrotations_not_secrets() {
    // kube-controller-manager's clusterrole-aggregation controller fills view/edit/admin.
    let plane = control_plane().with_controller_manager();
    let client = plane.client().await;
    let home = namespace(&client, "agg-system").await;
    let tenant = namespace(&client, "agg-tenant").await;
    let (yaml, docs) = render_release(&home, serde_json::json!({}), "rotor-agg");
    let view = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "rotor-agg-view")
        .unwrap();
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    apply_yaml(&client, &home, &yaml).await.unwrap();
    // Users bound the usual way: alice views, bob edits, carol administers the namespace.
    for (user, role) in [("alice", "view"), ("bob", "edit"), ("carol", "admin")] {
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {user}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
        );
        apply_yaml(&client, &tenant, &binding).await.unwrap();
    }
    let srot = ("rotor.dev", "secretrotations");
    // Bounded: the controller aggregates within moments of the roles appearing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let alice_lists = allowed(&client, "alice", "list", srot.0, srot.1, &tenant).await;
        let bob_creates = allowed(&client, "bob", "create", srot.0, srot.1, &tenant).await;
        let carol_deletes = allowed(
            &client,
            "carol",
            "deletecollection",
            srot.0,
            srot.1,
            &tenant,
        )
        .await;
        if alice_lists && bob_creates && carol_deletes {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not aggregated within 60s: view list {alice_lists}, edit create {bob_creates}, admin deletecollection {carol_deletes}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for verb in ["get", "list", "watch"] {
        assert!(
            allowed(&client, "alice", verb, srot.0, srot.1, &tenant).await,
            "view {verb}"
        );
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !allowed(&client, "alice", verb, srot.0, srot.1, &tenant).await,
            "view {verb}"
        );
        assert!(
            allowed(&client, "bob", verb, srot.0, srot.1, &tenant).await,
            "edit {verb}"
        );
    }
    // view never reads Secrets (rotor adds nothing that would change that).
    for verb in ["get", "list", "watch"] {
        assert!(
            !allowed(&client, "alice", verb, "", "secrets", &tenant).await,
            "view {verb} secrets"
        );
    }
    // Only where bound: bob cannot create in another namespace.
    assert!(!allowed(&client, "bob", "create", srot.0, srot.1, &home).await);
    // The rule came from rotor's role: the built-in view role now names secretrotations.
    let view = Api::<ClusterRole>::all(client.clone())
        .get("view")
        .await
        .unwrap();
    assert!(view.rules.unwrap_or_default().iter().any(|r| {
        r.resources
            .as_ref()
            .is_some_and(|res| res.iter().any(|x| x == "secretrotations"))
    }));
}

#[test]
fn chart_readme_is_generated_from_values() {
    let run = |args: &[&str]| {
        Command::new(python())
            .arg(format!("{ROOT}/hack/chart-docs.py"))
            .args(args)
            .output()
            .expect("python with helm-python-sdk: run hack/deps.sh")
    };
    let out = run(&["--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readme = std::fs::read_to_string(format!("{ROOT}/charts/rotor/README.md")).unwrap();
    assert!(
        readme.contains("| providers.httpMaxRetries | int | `4` |"),
        "{readme}"
    );

    // The check fails on a stale README, and the generator on an undocumented key.
    let copy = control_plane_free_dir("chart-docs");
    for f in ["Chart.yaml", "values.yaml", "README.md", "README.md.tmpl"] {
        std::fs::copy(format!("{ROOT}/charts/rotor/{f}"), copy.join(f)).unwrap();
    }
    let values = std::fs::read_to_string(copy.join("values.yaml")).unwrap();
    std::fs::write(
        copy.join("values.yaml"),
        values.replace(
            "# -- Its scrape interval.",
            "# -- Its scrape interval (changed).",
        ),
    )
    .unwrap();
    let out = run(&["--chart", copy.to_str().unwrap(), "--check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is stale: run `make chart-docs`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "+| serviceMonitor.interval | string | `\"30s\"` | Its scrape interval (changed). |"
        ),
        "{stderr}"
    );
    std::fs::write(
        copy.join("values.yaml"),
        values.replace("  # -- Its scrape interval.\n", ""),
    )
    .unwrap();
    let out = run(&["--chart", copy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no `# --` comment for serviceMonitor.interval"),
        "{stderr}"
    );
}

/// A scratch directory of its own (no control plane needed).
fn control_plane_free_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rotor-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn chart_metadata_for_artifact_hub_and_the_license() {
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{ROOT}/charts/rotor/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{ROOT}/charts/rotor/values.yaml")).unwrap(),
    )
    .unwrap();
    let annotation = |key: &str| -> serde_yaml::Value {
        let text = chart["annotations"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Chart.yaml lacks {key}"));
        serde_yaml::from_str(text).unwrap()
    };
    assert_eq!(
        chart["annotations"]["artifacthub.io/category"].as_str(),
        Some("security")
    );
    // One license everywhere.
    let cargo = std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).unwrap();
    assert!(cargo.contains("\nlicense = \"Apache-2.0\"\n"));
    assert_eq!(
        chart["annotations"]["artifacthub.io/license"].as_str(),
        Some("Apache-2.0")
    );
    let license = std::fs::read_to_string(format!("{ROOT}/LICENSE")).unwrap();
    assert!(
        license.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(
        license.contains("END OF TERMS AND CONDITIONS"),
        "the full text"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{ROOT}/charts/rotor/LICENSE")).unwrap(),
        license
    );
    // The images are the ones the chart runs.
    let images: Vec<String> = annotation("artifacthub.io/images")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap().to_string())
        .collect();
    let app_version = chart["appVersion"].as_str().unwrap();
    assert_eq!(
        images,
        [
            format!(
                "{}:{app_version}",
                values["image"]["repository"].as_str().unwrap()
            ),
            format!(
                "{}:{}",
                values["test"]["image"]["repository"].as_str().unwrap(),
                values["test"]["image"]["tag"].as_str().unwrap()
            )
        ]
    );
    // The CRD entry is the CRD's.
    let crd: serde_yaml::Value = serde_yaml::from_str(&rotor::api::crd_yaml()).unwrap();
    let listed = &annotation("artifacthub.io/crds")[0];
    assert_eq!(listed["name"], crd["metadata"]["name"]);
    assert_eq!(listed["kind"], crd["spec"]["names"]["kind"]);
    assert_eq!(listed["version"], crd["spec"]["versions"][0]["name"]);
    assert_eq!(
        listed["description"],
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
    );
    let links = annotation("artifacthub.io/links");
    assert!(links.as_sequence().is_some_and(|l| !l.is_empty()));
    // The example is a valid SecretRotation: the API server takes it.
    let client = control_plane().client().await;
    let ns = namespace(&client, "artifacthub").await;
    let examples = serde_yaml::to_string(&annotation("artifacthub.io/crdsExamples")[0]).unwrap();
    let applied = apply_yaml(&client, &ns, &examples)
        .await
        .expect("the crdsExamples SecretRotation applies");
    assert_eq!(applied[0].types.as_ref().unwrap().kind, "SecretRotation");
}

/// A private CA the way the README's Install section tells: `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` (a ConfigMap's mount layout) reach rotor's provider client. An HTTPS
/// vendor on 127.0.0.1 with a certificate from a private CA: refused without them,
/// trusted with the CA as SSL_CERT_FILE, and with the image's bundle as SSL_CERT_FILE
/// plus the CA in SSL_CERT_DIR.
#[tokio::test]
async fn a_private_ca_reaches_the_provider_client_through_ssl_cert_env() {
    let client = control_plane().client().await;
    let dir = control_plane()
        .dir
        .join(format!("private-ca-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=rotor test private CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // What a ConfigMap volume looks like inside the pod: a timestamped directory, `..data`
    // pointing at it, and each key a symlink through `..data`.
    let mount = dir.join("mount");
    std::fs::create_dir_all(mount.join("..2026_12_04_00_00_00.1")).unwrap();
    std::fs::copy(
        dir.join("ca.crt"),
        mount.join("..2026_12_04_00_00_00.1/ca.crt"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_12_04_00_00_00.1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ca.crt", mount.join("ca.crt")).unwrap();

    // The vendor: POST issues a key over TLS with the private CA's certificate.
    let prefix = format!("pk{}x{}", std::process::id(), rand_suffix());
    for n in 0..8 {
        remember_issued(&format!("{prefix}-{n}"));
    }
    let server = r#"
import http.server, json, ssl, sys
class Vendor(http.server.BaseHTTPRequestHandler):
    issued = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        n = Vendor.issued
        Vendor.issued += 1
        body = json.dumps({"data": {"key": f"{sys.argv[3]}-{n}", "id": str(n)}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Vendor)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let port_file = dir.join("port");
    let mut vendor = Command::new("python3");
    vendor
        .args(["-c", server])
        .arg(dir.join("server.crt"))
        .arg(dir.join("server.key"))
        .arg(&prefix)
        .stdout(std::fs::File::create(&port_file).unwrap())
        .stderr(std::fs::File::create(dir.join("vendor.log")).unwrap());
    spawn(vendor);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            .unwrap_or_default()
            .trim()
            .parse::<u16>()
        {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTPS vendor did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };

    let rotation = format!(
        "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata: {{name: private}}\nspec:\n  provider:\n    http:\n      issue: {{url: \"https://127.0.0.1:{port}/keys\", body: '{{\"name\": \"{{{{name}}}}\"}}'}}\n      keyPath: $.data.key\n      idPath: $.data.id\n      list: {{url: \"https://127.0.0.1:{port}/keys\", namePath: \"$.keys[*].name\", idPath: \"$.keys[*].id\"}}\n  secretsMapping: {{apiKey: API_KEY}}\n  target: {{name: private-key}}\n"
    );
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let ca = dir.join("ca.crt");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, RotationPhase);
    let cases: [Case; 3] = [
        ("ca-none", vec![], RotationPhase::Failed),
        (
            "ca-file",
            vec![("SSL_CERT_FILE", ca.to_str().unwrap())],
            RotationPhase::Success,
        ),
        (
            "ca-dir",
            vec![
                ("SSL_CERT_FILE", bundle),
                ("SSL_CERT_DIR", mount.to_str().unwrap()),
            ],
            RotationPhase::Success,
        ),
    ];
    for (name, env, phase) in cases {
        let ns = namespace(&client, name).await;
        let op = Operator::start_env(
            &ns,
            &["--allow-private-endpoints", "--http-max-retries", "0"],
            &env,
        );
        apply_yaml(&client, &ns, &rotation).await.unwrap();
        let done = wait_status(&client, &ns, "private", 60, "rotated or failed", |s| {
            matches!(
                s.rotation_status,
                RotationPhase::Success | RotationPhase::Failed
            )
        })
        .await;
        let status = done.status.unwrap();
        assert_eq!(
            status.rotation_status,
            phase,
            "{name}: {}\n{}",
            status.last_rotation_message,
            op.logs()
        );
        if phase == RotationPhase::Failed {
            assert!(
                status.last_rotation_message.contains("certificate"),
                "{name}: {}",
                status.last_rotation_message
            );
        } else {
            assert_no_leak_of_target(&client, &ns, "private", "private-key", &op.logs()).await;
        }
    }
}
