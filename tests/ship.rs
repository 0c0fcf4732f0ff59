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
        (r#"{"watchNamespaces": "shop"}"#, "watchNamespaces"),
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
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
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
    assert!(
        !kinds(&docs).iter().any(|k| k.starts_with("Cluster")),
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
    assert!(kinds(&docs).contains(&"PodDisruptionBudget".to_string()));
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
    assert_eq!(count, 6, "one sample per provider");
}

#[test]
fn the_crd_is_the_same_bytes_everywhere() {
    let generated = rotor::api::crd_yaml();
    for copy in [
        "crds/secretrotation.yaml",
        "config/crd/secretrotation.yaml",
        "charts/rotor/crds/secretrotation.yaml",
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
    ("events.k8s.io", "events", &["create", "patch"]),
    ("apps", "deployments", &["get", "list", "patch"]),
    ("apps", "statefulsets", &["get", "list", "patch"]),
    ("apps", "daemonsets", &["get", "list", "patch"]),
    ("argoproj.io", "rollouts", &["get", "patch"]),
    ("", "namespaces", &["get"]),
];

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
    let web: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                    "envFrom": [{"secretRef": {"name": "app-session-key"}}]}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &tenant);
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
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
                    .is_some_and(|v| v.starts_with("2-"))
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

/// The alert rules the README shows are the ones promtool checks and unit-tests.
#[test]
fn alert_rules_pass_promtool_and_are_the_readmes() {
    let dir = format!("{ROOT}/config/prometheus");
    for args in [
        vec!["check", "rules", "rotor-alerts.yaml"],
        vec!["test", "rules", "rotor-alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .current_dir(&dir)
            .args(&args)
            .output()
            .expect("promtool (hack/deps.sh installs Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(format!("{dir}/rotor-alerts.yaml")).unwrap();
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.contains("alert:") || l.contains("expr:"))
    {
        assert!(
            readme.contains(line.trim()),
            "README lacks {:?}",
            line.trim()
        );
    }
}
