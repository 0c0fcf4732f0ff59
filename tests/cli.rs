//! The `rotor` command as a user runs it, against the real API server: `status`,
//! `plan` and `audit` as tables, JSON and YAML; shell completion; the kubectl plugin
//! name; `version` reading the operator's Deployment.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::scenario::rotated;
use support::*;

/// Runs the built `rotor` as `program` (a path to it or to a link to it), with the
/// test cluster's kubeconfig unless `env` sets another: (success, stdout, stderr).
fn run_as(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rotor() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rotor"))
}

/// stdout of a command that must succeed.
fn ok(args: &[&str]) -> String {
    let (success, out, err) = run_as(rotor(), args, &[]);
    assert!(success, "rotor {args:?} failed: {err}");
    out
}

fn json(args: &[&str]) -> Vec<Value> {
    let out = ok(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("rotor {args:?}: {e}:\n{out}"))
}

fn yaml(args: &[&str]) -> Vec<Value> {
    let out = ok(args);
    serde_yaml::from_str(&out).unwrap_or_else(|e| panic!("rotor {args:?}: {e}:\n{out}"))
}

/// The rows of table `text` whose first column is `first`.
fn rows_starting<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(first))
        .collect()
}

#[tokio::test]
async fn status_plan_and_audit_print_tables_json_and_yaml() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "cli-status").await;
    let _op = Operator::start(&ns);
    let random = sample("random.yaml");
    apply_yaml(&client, &ns, &random).await.unwrap();
    apply_yaml(
        &client,
        &ns,
        &random
            .replace("name: session-key\n", "name: api-token\n")
            .replace("app-session-key", "api-token-secret"),
    )
    .await
    .unwrap();
    let first = rotated(&client, &ns, "session-key", 1).await;
    rotated(&client, &ns, "api-token", 1).await;
    let mut values = Vec::new();
    for secret in ["app-session-key", "api-token-secret"] {
        let secret = get_secret(&client, &ns, secret).await.unwrap();
        values.push(secret_value(&secret, "SESSION_SECRET").unwrap());
    }

    // -o json: one object per resource, the documented keys, what status says.
    let status = json(&["status", "-n", &ns, "-o", "json"]);
    let names: Vec<&str> = status.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api-token", "session-key"], "sorted by name");
    let row = &status[1];
    for (key, expected) in [
        ("namespace", Value::from(ns.as_str())),
        ("provider", "random".into()),
        ("phase", "Success".into()),
        ("ready", "True".into()),
        ("activeSlot", 0.into()),
        ("rotations", 1.into()),
        ("failedAttempts", 0.into()),
        ("targetSecret", "app-session-key".into()),
        (
            "lastRotatedAt",
            serde_json::to_value(first.last_rotated_at.unwrap()).unwrap(),
        ),
        (
            "nextRotationAt",
            serde_json::to_value(first.next_rotation_at.unwrap()).unwrap(),
        ),
        ("message", first.last_rotation_message.clone().into()),
    ] {
        assert_eq!(row[key], expected, "{key} in {row}");
    }
    assert_eq!(row.as_object().unwrap().len(), 12, "{row}");
    // -o yaml: the same list.
    assert_eq!(yaml(&["status", "-n", &ns, "-o", "yaml"]), status);

    // The table: a header and one row per resource; NAMESPACE only with -A.
    let table = ok(&["status", "-n", &ns]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "PROVIDER",
            "PHASE",
            "READY",
            "ACTIVE",
            "ROTATIONS",
            "LAST",
            "ROTATED",
            "NEXT",
            "ROTATION",
            "MESSAGE"
        ],
        "{table}"
    );
    let cols: Vec<&str> = rows_starting(&table, "session-key")[0]
        .split_whitespace()
        .collect();
    assert_eq!(
        &cols[1..6],
        ["random", "Success", "True", "0", "1"],
        "{table}"
    );
    assert_eq!(cols[7], "in", "next rotation counts down: {table}");
    let one = ok(&["status", "session-key", "-n", &ns]);
    assert_eq!(one.lines().count(), 2, "{one}");
    let all = ok(&["status", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert_eq!(
        rows_starting(&all, &ns).len(),
        2,
        "both resources, under their namespace:\n{all}"
    );

    // Errors: stderr and a non-zero exit, nothing on stdout.
    let (success, out, err) = run_as(rotor(), &["status", "missing", "-n", &ns], &[]);
    assert!(!success && out.is_empty(), "{out}");
    assert!(err.contains("\"missing\" not found"), "{err}");
    let (success, out, err) = run_as(rotor(), &["plan", "missing", "-n", &ns, "-o", "json"], &[]);
    assert!(!success && out.is_empty(), "{out}");
    assert!(err.contains("\"missing\" not found"), "{err}");
    let (success, _, err) = run_as(rotor(), &["status", "-o", "xml"], &[]);
    assert!(!success && err.contains("invalid value 'xml'"), "{err}");
    let empty = namespace(&client, "cli-empty").await;
    let (success, out, err) = run_as(rotor(), &["status", "-n", &empty], &[]);
    assert!(success && out.is_empty(), "{out}");
    assert!(err.contains("No SecretRotations found"), "{err}");
    assert_eq!(
        json(&["status", "-n", &empty, "-o", "json"]),
        Vec::<Value>::new()
    );

    // audit and plan: -o json and -o yaml parse, and say the same.
    let audit = json(&["audit", "session-key", "-n", &ns, "-o", "json"]);
    let actions: Vec<&str> = audit
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"issue") && actions.contains(&"activate"),
        "{actions:?}"
    );
    assert!(
        audit.iter().all(|r| r.as_object().unwrap().len() == 7),
        "every key in every record: {audit:?}"
    );
    assert_eq!(
        yaml(&["audit", "session-key", "-n", &ns, "-o", "yaml"]),
        audit
    );
    let audit_table = ok(&["audit", "session-key", "-n", &ns]);
    assert!(audit_table.starts_with("TIME "), "{audit_table}");
    assert_eq!(
        audit_table.lines().count(),
        audit.len() + 1,
        "{audit_table}"
    );

    let plan = json(&["plan", "-n", &ns, "-o", "json"]);
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert_eq!(plan[1]["name"], "session-key");
    assert_eq!(plan[1]["phase"], "Success");
    assert_eq!(
        plan[1]["nextRotationAt"],
        serde_json::to_value(first.next_rotation_at.unwrap()).unwrap()
    );
    assert!(
        plan[1]["action"]
            .as_str()
            .unwrap()
            .starts_with("rotate at "),
        "{plan:?}"
    );
    assert_eq!(yaml(&["plan", "-n", &ns, "-o", "yaml"]), plan);
    let plan_table = ok(&["plan", "-n", &ns]);
    assert!(plan_table.starts_with("NAME "), "{plan_table}");
    assert_eq!(
        rows_starting(&plan_table, "session-key").len(),
        1,
        "{plan_table}"
    );
    assert!(ok(&["plan", "-A"]).starts_with("NAMESPACE "));

    // No output carries a value.
    let outputs = [
        ok(&["status", "-n", &ns, "-o", "json"]),
        ok(&["status", "-n", &ns, "-o", "yaml"]),
        table,
        ok(&["audit", "session-key", "-n", &ns, "-o", "json"]),
        ok(&["plan", "-n", &ns, "-o", "yaml"]),
    ];
    for value in &values {
        assert!(outputs.iter().all(|o| !o.contains(value.as_str())));
    }
}

/// The subcommands `rotor --help` lists.
fn subcommands() -> Vec<String> {
    let help = ok(&["--help"]);
    let commands = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let names: Vec<String> = commands
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(String::from)
        .collect();
    for expected in ["status", "plan", "audit", "version", "completion"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    names
}

#[test]
fn completion_scripts_load_in_bash_and_name_every_subcommand() {
    let script = format!(
        "source <({} completion bash) && complete -p rotor",
        env!("CARGO_BIN_EXE_rotor")
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("complete") && said.trim_end().ends_with(" rotor"),
        "{said}"
    );

    let commands = subcommands();
    for (shell, flag) in [
        ("bash", "--output"),
        ("zsh", "--output"),
        ("fish", "-l output"),
    ] {
        let script = ok(&["completion", shell]);
        for command in &commands {
            assert!(
                script.contains(command.as_str()),
                "{shell} completion does not name {command}"
            );
        }
        assert!(script.contains(flag), "{shell}: flags are completed");
    }
    let (success, _, err) = run_as(rotor(), &["completion", "tcsh"], &[]);
    assert!(!success && err.contains("invalid value 'tcsh'"), "{err}");
}

#[test]
fn called_as_kubectl_rotor_the_help_says_kubectl_rotor() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-rotor");
    std::os::unix::fs::symlink(rotor(), &plugin).unwrap();
    let (success, help, _) = run_as(&plugin, &["--help"], &[]);
    assert!(success, "{help}");
    assert!(help.contains("Usage: kubectl rotor <COMMAND>"), "{help}");
    let (_, help, _) = run_as(&plugin, &["status", "--help"], &[]);
    assert!(help.contains("Usage: kubectl rotor status"), "{help}");
    // A usage error says it too.
    let (success, _, err) = run_as(&plugin, &["statuss"], &[]);
    assert!(!success && err.contains("kubectl rotor"), "{err}");
    // As itself, rotor says rotor.
    let (_, help, _) = run_as(rotor(), &["--help"], &[]);
    assert!(
        help.contains("Usage: rotor") && !help.contains("kubectl"),
        "{help}"
    );
    let (success, out, _) = run_as(&plugin, &["version", "--client"], &[]);
    assert!(success && out.starts_with("Client Version: "), "{out}");
}

#[tokio::test]
async fn version_reads_the_operators_deployment() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "cli-version").await;
    // The kustomize install's Deployment (its labels are the chart's selector labels),
    // with another image tag.
    let manifests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/manager/manager.yaml"
    ))
    .unwrap();
    let deployment = manifests
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Deployment"))
        .unwrap()
        .replace("namespace: rotor-system", &format!("namespace: {ns}"))
        .replace(
            "ghcr.io/rotor-dev/rotor:0.1.0",
            "ghcr.io/rotor-dev/rotor:9.9.9",
        );
    assert!(deployment.contains("app.kubernetes.io/name: rotor"));
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/rotor/templates/_helpers.tpl"
    ))
    .unwrap();
    assert!(
        chart.contains("app.kubernetes.io/name: {{ include \"rotor.name\" . }}"),
        "the chart labels its Deployment as rotor version looks for it"
    );
    apply_yaml(&client, &ns, &deployment).await.unwrap();

    let client_line = format!("Client Version: {}", env!("CARGO_PKG_VERSION"));
    for args in [vec!["version", "-n", ns.as_str()], vec!["version"]] {
        let out = ok(&args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], client_line, "{out}");
        assert_eq!(
            lines[1],
            format!(
                "Server Version: 9.9.9 (deployment {ns}/rotor, image ghcr.io/rotor-dev/rotor:9.9.9)"
            ),
            "{args:?}: {out}"
        );
    }
    let doc: Value = serde_json::from_str(&ok(&["version", "-n", &ns, "-o", "json"])).unwrap();
    assert_eq!(doc["clientVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["serverVersion"], "9.9.9");
    assert_eq!(doc["operators"][0]["namespace"], ns.as_str());
    let doc: Value = serde_yaml::from_str(&ok(&["version", "-n", &ns, "-o", "yaml"])).unwrap();
    assert_eq!(doc["serverVersion"], "9.9.9");

    // A namespace without the operator: the client version, a notice, exit 0.
    let empty = namespace(&client, "cli-version-none").await;
    let (success, out, err) = run_as(rotor(), &["version", "-n", &empty], &[]);
    assert!(success, "{err}");
    assert_eq!(out.trim_end(), client_line);
    assert!(err.contains("no rotor operator found"), "{err}");

    // No cluster: the client version, then a failure.
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("kubeconfig");
    std::fs::write(
        &nowhere,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\ncurrent-context: gone\n",
            free_port()
        ),
    )
    .unwrap();
    let env = [("KUBECONFIG", nowhere.to_str().unwrap())];
    let (success, out, err) = run_as(rotor(), &["version"], &env);
    assert!(!success, "{out}");
    assert_eq!(out.trim_end(), client_line);
    assert!(err.contains("cannot reach the cluster"), "{err}");
    // --client needs no cluster.
    let (success, out, err) = run_as(rotor(), &["version", "--client"], &env);
    assert!(success, "{err}");
    assert_eq!(out.trim_end(), client_line);
    let (success, out, _) = run_as(rotor(), &["version", "--client", "-o", "json"], &env);
    assert!(success);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["serverVersion"], Value::Null);
}

/// `rotor audit` reads a trail only from a Secret that this very SecretRotation owns
/// (its uid), as the controller does: a Secret with an owner reference of the right
/// kind and name but another uid (an earlier resource's, or made up) is refused.
#[tokio::test]
async fn audit_refuses_a_trail_in_a_secret_the_resource_does_not_own() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "cli-forged").await;
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/random.yaml"),
    )
    .unwrap();
    apply_yaml(&client, &ns, &sample).await.unwrap();
    let forged = r#"[{"time":"2026-01-01T00:00:00Z","actor":"operator","action":"revoke","credential":"everything-is-fine","oldFingerprint":null,"newFingerprint":null,"detail":"forged"}]"#;
    let secret = |name: &str, owner: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/managed-by: rotor\n    rotor.dev/escrow: \"true\"\n    rotor.dev/secret-rotation: session-key\n{owner}stringData:\n  audit: '{forged}'\n"
        )
    };
    let wrong_uid = "  ownerReferences:\n  - apiVersion: rotor.dev/v1alpha1\n    kind: SecretRotation\n    name: session-key\n    uid: 00000000-0000-0000-0000-000000000000\n";
    for (name, owner) in [
        ("rotor-escrow-session-key", wrong_uid),
        ("rotor-vault-session-key", wrong_uid),
    ] {
        apply_yaml(&client, &ns, &secret(name, owner))
            .await
            .unwrap();
        let (success, out, err) = run_as(rotor(), &["audit", "session-key", "-n", &ns], &[]);
        assert!(!success, "rotor audit showed a forged trail:\n{out}");
        assert!(!out.contains("everything-is-fine"), "{out}");
        assert!(
            err.contains(&format!(
                "Secret {ns}/{name} exists and was not created by rotor for SecretRotation \"session-key\""
            )),
            "{err}"
        );
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
            .delete(name, &Default::default())
            .await
            .unwrap();
    }
    let (success, _, err) = run_as(rotor(), &["audit", "nothing-here", "-n", &ns], &[]);
    assert!(!success);
    assert!(
        err.contains(&format!("SecretRotation {ns}/nothing-here does not exist")),
        "{err}"
    );
}
