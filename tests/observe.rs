//! Observing rotor: the alert rules (checked and unit-tested by promtool, the same
//! bytes in config/prometheus and in the chart), the chart's PrometheusRule and Grafana
//! dashboard rendered and applied to the API server, every dashboard query parsed as
//! PromQL, every metric the rules and the dashboard read exported by a running
//! operator, and the per-resource condition gauge following status.

mod support;

use kube::api::Api;
use rotor::api::SecretRotation;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use support::scenario::*;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RULES: &str = "charts/rotor/files/rotor-alerts.yaml";
const DASHBOARD: &str = "charts/rotor/files/rotor-dashboard.json";

fn python() -> String {
    std::env::var("ROTOR_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/rotor/venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

/// Renders the chart (hack/helm.py: the real Helm library); `Err(stderr)` if refused.
fn render(namespace: &str, values: serde_json::Value) -> Result<String, String> {
    let out = Command::new(python())
        .arg(format!("{ROOT}/hack/helm.py"))
        .args([
            "render",
            &format!("{ROOT}/charts/rotor"),
            namespace,
            &values.to_string(),
        ])
        .output()
        .expect("python with helm-python-sdk: run hack/deps.sh");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// Runs promtool in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("promtool")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("promtool (hack/deps.sh installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh scratch directory.
fn scratch(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rotor-observe-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every PromQL expression of the dashboard's panels (rows' nested panels too).
fn dashboard_exprs() -> Vec<String> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(
                    t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a target without expr in {:?}", p["title"]))
                        .to_string(),
                );
            }
            walk(&p["panels"], out);
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The dashboard's variable queries (`label_values(metric, label)`): not PromQL, but
/// they name metrics too.
fn dashboard_variable_queries() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["definition"].as_str().unwrap().to_string())
        .collect()
}

/// A Grafana expression as Prometheus would receive it: variables filled in.
fn as_prometheus_sees_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$namespace", ".*")
}

/// The metric names an expression reads (rotor's own: `rotor_…`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("rotor_") {
        let start = at + found;
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if !preceded {
            names.insert(expr[start..end].to_string());
        }
        at = end;
    }
    names
}

/// The `expr:` of every rule in a rule file.
fn rule_exprs(rules: &str) -> Vec<String> {
    let file: serde_json::Value = serde_yaml::from_str(rules).unwrap();
    file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The alert rules the README shows are the ones promtool checks and unit-tests (each
/// alert firing and not firing), and config/prometheus holds the chart's bytes.
#[test]
fn alert_rules_pass_promtool_and_are_the_readmes() {
    let rules = read(RULES);
    assert!(
        read("config/prometheus/rotor-alerts.yaml") == rules,
        "config/prometheus/rotor-alerts.yaml differs from {RULES}: copy it (the chart's is the source)"
    );
    let dir = std::path::Path::new(ROOT).join("config/prometheus");
    promtool(&dir, &["check", "rules", "rotor-alerts.yaml"]);
    promtool(&dir, &["test", "rules", "rotor-alerts.test.yaml"]);
    // Each alert is unit-tested both firing and not firing.
    let tests: serde_json::Value =
        serde_yaml::from_str(&read("config/prometheus/rotor-alerts.test.yaml")).unwrap();
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .map(|c| {
            (
                c["alertname"].as_str().unwrap().to_string(),
                !c["exp_alerts"].as_array().unwrap().is_empty(),
            )
        })
        .collect();
    let file: serde_json::Value = serde_yaml::from_str(&rules).unwrap();
    let alerts: Vec<&str> = file["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for want in [
        "RotorRotationFailing",
        "RotorRotationOverdue",
        "RotorKeyStoreUnavailable",
        "RotorConsumerRolloutStuck",
        "RotorCredentialStale",
        "RotorEscrowProblem",
    ] {
        assert!(alerts.contains(&want), "no alert {want}");
    }
    for alert in &alerts {
        for firing in [true, false] {
            assert!(
                cases.contains(&(alert.to_string(), firing)),
                "{alert} is not unit-tested {}",
                if firing { "firing" } else { "not firing" }
            );
        }
    }
    let readme = read("README.md");
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

/// Every query of the dashboard is PromQL Prometheus accepts: each goes into a rule
/// file as a recording rule, and promtool checks the file.
#[test]
fn every_dashboard_query_parses_as_promql() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({"record": format!("rotor:dashboard_query_{i}"), "expr": as_prometheus_sees_it(e)})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = scratch("dashboard");
    std::fs::write(
        dir.join("queries.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    promtool(&dir, &["check", "rules", "queries.yaml"]);
    // The check can fail: a query Prometheus refuses is reported.
    let broken = serde_json::json!({"groups": [{"name": "d", "rules": [
        {"record": "rotor:broken", "expr": "sum by (provider (rate(rotor_rotations_total[5m]))"}]}]});
    std::fs::write(
        dir.join("broken.yaml"),
        serde_yaml::to_string(&broken).unwrap(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .current_dir(&dir)
        .args(["check", "rules", "broken.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "promtool accepted a broken query");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The monitoring.coreos.com CRDs (PrometheusRule, ServiceMonitor) on the test's API
/// server.
async fn install_monitoring_crds(client: &kube::Client) {
    apply_yaml(
        client,
        "default",
        &read("tests/crds/monitoring.coreos.com.yaml"),
    )
    .await
    .unwrap();
    for crd in [
        "prometheusrules.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
    ] {
        wait_crd_established(client, crd).await;
    }
}

/// Applies `yaml`, retrying (bounded) while the API server does not serve a just
/// established CRD's kind yet.
async fn apply_when_served(client: &kube::Client, namespace: &str, yaml: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match apply_yaml(client, namespace, yaml).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "apply failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_chart_renders_the_rules_and_the_dashboard_and_they_apply() {
    // Off by default.
    let plain = documents(&render("obs", serde_json::json!({})).unwrap());
    assert!(
        !plain
            .iter()
            .any(|d| d["kind"] == "PrometheusRule" || d["metadata"]["name"] == "rotor-dashboard"),
        "rendered without being asked"
    );

    // Lints clean in strict mode with both on.
    let out = Command::new(python())
        .arg(format!("{ROOT}/hack/helm.py"))
        .args([
            "lint",
            &format!("{ROOT}/charts/rotor"),
            r#"{"prometheusRule": {"enabled": true}, "grafanaDashboard": {"enabled": true}}"#,
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["messages"], serde_json::json!([]), "{report}");

    let client = control_plane().client().await;
    let ns = namespace(&client, "obs-chart").await;
    let grafana = namespace(&client, "obs-grafana").await;
    install_monitoring_crds(&client).await;
    let values = serde_json::json!({
        "prometheusRule": {
            "enabled": true,
            "labels": {"release": "kube-prometheus-stack"},
            "annotations": {"team": "platform"},
            "overdueGraceSeconds": 7200,
        },
        "grafanaDashboard": {
            "enabled": true,
            "annotations": {"grafana_folder": "Security"},
            "namespace": grafana,
        },
        "serviceMonitor": {"enabled": true},
    });
    let yaml = render(&ns, values).unwrap();
    let docs = documents(&yaml);

    // The PrometheusRule carries the rule file's groups, the grace replaced.
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(rule["metadata"]["annotations"]["team"], "platform");
    let rules = read(RULES);
    assert!(rules.contains("rotor_next_rotation_timestamp_seconds > 3600"));
    let want: serde_json::Value = serde_yaml::from_str(&rules.replace(
        "rotor_next_rotation_timestamp_seconds > 3600",
        "rotor_next_rotation_timestamp_seconds > 7200",
    ))
    .unwrap();
    assert_eq!(rule["spec"]["groups"], want["groups"]);
    // And Prometheus accepts the rendered rules.
    let dir = scratch("rule");
    std::fs::write(
        dir.join("rendered.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    promtool(&dir, &["check", "rules", "rendered.yaml"]);
    let _ = std::fs::remove_dir_all(&dir);

    // The dashboard ConfigMap: the sidecar's label, the asked namespace, the JSON.
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "rotor-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], grafana.as_str());
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Security"
    );
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["rotor.json"].as_str().unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    assert_eq!(json, file);

    // Everything applies to the API server (the rule through the CRD's schema).
    apply_when_served(&client, &ns, &yaml).await;
    let rules_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::discovery::ApiResource {
            group: "monitoring.coreos.com".into(),
            version: "v1".into(),
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "PrometheusRule".into(),
            plural: "prometheusrules".into(),
        },
    );
    let stored = rules_api.get("rotor").await.unwrap();
    assert_eq!(stored.data["spec"]["groups"], want["groups"]);

    // Labels add to the sidecar's default, which `null` removes (Helm's way); the
    // schema is strict.
    let docs = documents(
        &render(
            "obs",
            serde_json::json!({"grafanaDashboard": {"enabled": true,
                "labels": {"dashboards": "rotor", "grafana_dashboard": null}}}),
        )
        .unwrap(),
    );
    let labels = &docs
        .iter()
        .find(|d| d["metadata"]["name"] == "rotor-dashboard")
        .unwrap()["metadata"]["labels"];
    assert_eq!(labels["dashboards"], "rotor");
    assert!(labels.get("grafana_dashboard").is_none(), "{labels}");
    for (values, named) in [
        (
            serde_json::json!({"prometheusRule": {"enable": true}}),
            "enable",
        ),
        (
            serde_json::json!({"prometheusRule": {"overdueGraceSeconds": "1h"}}),
            "overdueGraceSeconds",
        ),
        (
            serde_json::json!({"grafanaDashboard": {"label": {}}}),
            "label",
        ),
    ] {
        let refused = render("obs", values.clone()).expect_err(&values.to_string());
        assert!(refused.contains(named), "{values}: {refused}");
    }
}

/// A SecretRotation of the http sample whose vendor never answers: every attempt fails.
fn failing_http(name: &str) -> String {
    let closed = format!("http://127.0.0.1:{}", free_port());
    sample("http.yaml")
        .replace("https://api.example.com", &closed)
        .replace("partner-api-key", name)
        .replace("keys-api-admin", &format!("{name}-admin"))
        .replace(
            "REPLACE_WITH_AN_ADMIN_TOKEN",
            "admin-token-for-a-dead-vendor",
        )
}

/// The sample lines of a /metrics text whose name is `name` (exactly).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// Every metric the alert rules and the dashboard read is on /metrics of an operator
/// that rotated a random and an http resource (with consumers, a maxAge and a webhook)
/// and failed to rotate another.
#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_read_is_exported() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "obs-metrics").await;
    let fake = fakes::key_api().await;
    let op = Operator::start_with(&ns, FAST);
    // A consumer that never rolls out (no controller-manager here): stuck after 3 s.
    deployment_reading(&client, &ns, "web", "app-session-key", 1).await;
    // The webhook's signing Secret never shared itself with the resource: each
    // delivery fails (and is counted) without a receiver.
    let random = sample("random.yaml").replacen(
        "\n  schedule:\n",
        "\n  maxAge: 45d\n  consumers: {discover: true}\n  revocation: {maxWait: 3s}\n  notify:\n    webhook: {url: \"http://127.0.0.1:9/hook\", signingSecretRef: {name: hook-key, key: key}}\n  schedule:\n",
        1,
    );
    let hook_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: hook-key}\nstringData: {key: whsec-never-shared-0123}\n";
    apply_yaml(&client, &ns, hook_key).await.unwrap();
    apply_yaml(&client, &ns, &random).await.unwrap();
    apply_yaml(&client, &ns, &http_sample(&fake)).await.unwrap();
    apply_yaml(&client, &ns, &failing_http("dead-vendor-key"))
        .await
        .unwrap();
    rotated(&client, &ns, "session-key", 1).await;
    rotated(&client, &ns, "partner-api-key", 1).await;
    failed(&client, &ns, "dead-vendor-key").await;
    // Stuck: the consumer never rolled out within maxWait.
    wait_metric(
        &op,
        &format!(r#"rotor_consumer_rollout_stuck{{namespace="{ns}",name="session-key"}}"#),
        1.0,
    )
    .await;

    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for expr in rule_exprs(&read(RULES))
        .iter()
        .chain(&dashboard_exprs())
        .chain(&dashboard_variable_queries())
    {
        wanted.extend(metric_names(expr));
    }
    for name in [
        "rotor_resource_condition",
        "rotor_kek_available",
        "rotor_consumer_rollout_stuck",
        "rotor_provider_request_duration_seconds_bucket",
        "rotor_next_rotation_timestamp_seconds",
    ] {
        assert!(
            wanted.contains(name),
            "{name} is read by neither: {wanted:?}"
        );
    }
    // Counters and histograms are counted when a reconcile returns, a moment after
    // the status the waits above saw: wait (bounded) until every name is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = metrics_text(&op).await;
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| samples(&text, n).is_empty())
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not on /metrics: {missing:?}\n{text}\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for line in [
        "rotor_kek_available 1".to_string(),
        format!(
            r#"rotor_resource_condition{{namespace="{ns}",name="session-key",condition="Ready"}} 1"#
        ),
        format!(
            r#"rotor_resource_condition{{namespace="{ns}",name="session-key",condition="Stale"}} 0"#
        ),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    // Vendor requests by provider kind and answer class: never a URL or a host.
    assert!(
        !samples(&text, "rotor_provider_request_duration_seconds_count")
            .iter()
            .filter(|l| l.contains(r#"provider="http",status="2xx""#))
            .collect::<Vec<_>>()
            .is_empty(),
        "{text}"
    );
    assert!(
        samples(&text, "rotor_provider_request_duration_seconds_count")
            .iter()
            .any(|l| l.contains(r#"provider="http",status="error""#)),
        "the dead vendor's requests: {text}"
    );
    assert!(!text.contains("127.0.0.1"), "an address in the metrics");
    assert_no_leak_of_target(&client, &ns, "session-key", "app-session-key", &text).await;
}

/// `rotor_resource_condition` says what status says: a resource whose rotation fails
/// is Degraded and not Ready, one that rotated is Ready; a deleted resource's series go.
#[tokio::test]
async fn the_condition_gauge_follows_status_and_goes_with_the_resource() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "obs-conditions").await;
    let op = Operator::start_with(&ns, FAST);
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    apply_yaml(&client, &ns, &failing_http("dead-vendor-key"))
        .await
        .unwrap();
    let ok = rotated(&client, &ns, "session-key", 1).await;
    let broken = failed(&client, &ns, "dead-vendor-key").await;
    let gauge = |name: &str, condition: &str| {
        format!(
            r#"rotor_resource_condition{{namespace="{ns}",name="{name}",condition="{condition}"}}"#
        )
    };
    // The gauge is written with the status: once it shows Degraded, it matches status.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&op, &gauge("dead-vendor-key", "Degraded")).await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "never Degraded on /metrics:\n{}",
            metrics_text(&op).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status_of_now = status_of(&client, &ns, "dead-vendor-key").await;
    for (name, status) in [("session-key", &ok), ("dead-vendor-key", &status_of_now)] {
        for c in &status.conditions {
            let want = if c.status == "True" { 1.0 } else { 0.0 };
            assert_eq!(
                metric(&op, &gauge(name, &c.type_)).await,
                Some(want),
                "{name} {}={:?}",
                c.type_,
                c.status
            );
        }
    }
    assert_eq!(condition(&broken, "Degraded").status, "True");
    assert_eq!(
        metric(&op, &gauge("dead-vendor-key", "Ready")).await,
        Some(0.0)
    );
    assert_eq!(metric(&op, &gauge("session-key", "Ready")).await, Some(1.0));
    assert_eq!(
        metric(&op, &gauge("session-key", "Degraded")).await,
        Some(0.0)
    );
    // No maxAge: no Stale condition, no Stale series.
    assert_eq!(metric(&op, &gauge("session-key", "Stale")).await, None);

    // Deleted: every series of the resource goes; the other's stay.
    Api::<SecretRotation>::namespaced(client.clone(), &ns)
        .delete("dead-vendor-key", &Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(&op).await;
        if !text.contains(r#"name="dead-vendor-key""#) {
            assert!(text.contains(&gauge("session-key", "Ready")), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted resource's series stayed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `rotor_kek_available`: 0 while the KEK Secret has no key rotor can use (nothing
/// rotates), 1 once it has one (and the rotation goes through).
#[tokio::test]
async fn the_key_store_gauge_says_whether_rotor_can_read_its_keks() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "obs-kek").await;
    // A KEK Secret with the fingerprint key and no v<N>: rotor cannot wrap anything.
    let kek = "apiVersion: v1\nkind: Secret\nmetadata: {name: rotor-kek}\nstringData: {fingerprint: 0123456789abcdef0123456789abcdef}\n";
    apply_yaml(&client, &ns, kek).await.unwrap();
    let op = Operator::start(&ns);
    apply_yaml(&client, &ns, &sample("random.yaml"))
        .await
        .unwrap();
    let until = |want: f64| {
        let op = &op;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = metric(op, "rotor_kek_available").await;
                if now == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "rotor_kek_available is {now:?}, not {want}:\n{}",
                    op.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let api = Api::<SecretRotation>::namespaced(client.clone(), &ns);
    let rotations = || async {
        api.get("session-key")
            .await
            .unwrap()
            .status
            .map_or(0, |s| s.rotation_count)
    };
    until(0.0).await;
    // The rotation waits for a KEK: it failed (it cannot store the credential).
    let deadline = Instant::now() + Duration::from_secs(60);
    while api
        .get("session-key")
        .await
        .unwrap()
        .status
        .is_none_or(|s| s.failed_attempts == 0)
    {
        assert!(
            Instant::now() < deadline,
            "no failed attempt:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rotations().await, 0, "rotated without a KEK");
    // A usable v1: the next vault use reads it.
    let fixed = format!(
        "{kek}data: {{v1: {}}}\n",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
    );
    apply_yaml(&client, &ns, &fixed).await.unwrap();
    until(1.0).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while rotations().await != 1 {
        assert!(
            Instant::now() < deadline,
            "not rotated with the KEK:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
