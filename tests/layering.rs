//! The layers run one way: controller → {rotation, vault, providers} → rotation → api,
//! and the CLI (`cli/`, what the `rotor` command prints) sits on top: it reads through
//! controller, vault and api; nothing reaches back into it.
//! This reads every path in `src/` (use lines and inline paths alike) and fails on a
//! back-arrow, so the folders keep meaning what the README's code map says.

use std::collections::BTreeSet;
use std::path::Path;

/// What each layer may not reach: other modules of the crate, and outside crates.
fn forbidden(layer: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match layer {
        // Types only: the schema's source.
        "api" => (
            &[
                "cli",
                "rotation",
                "providers",
                "vault",
                "controller",
                "admin",
                "metrics",
                "leader",
                "notify",
            ],
            &[],
        ),
        // The pure core: no Kubernetes, no HTTP, no provider, no storage.
        "rotation" => (
            &[
                "cli",
                "providers",
                "vault",
                "controller",
                "admin",
                "metrics",
                "leader",
                "notify",
            ],
            &["kube", "k8s_openapi", "reqwest", "axum", "tokio_postgres"],
        ),
        // Providers implement the core's contract; they never touch Kubernetes.
        "providers" => (
            &[
                "cli",
                "vault",
                "controller",
                "admin",
                "metrics",
                "leader",
                "notify",
            ],
            &["kube", "k8s_openapi"],
        ),
        // The vault stores core types; it knows nothing of providers or the controller.
        "vault" => (
            &[
                "cli",
                "providers",
                "controller",
                "admin",
                "metrics",
                "leader",
                "notify",
            ],
            &[],
        ),
        "metrics" => (
            &[
                "cli",
                "api",
                "rotation",
                "providers",
                "vault",
                "controller",
                "admin",
                "leader",
                "notify",
            ],
            &[],
        ),
        "admin" => (
            &[
                "controller",
                "providers",
                "vault",
                "rotation",
                "leader",
                "cli",
            ],
            &[],
        ),
        "leader" => (
            &["controller", "providers", "vault", "rotation", "cli"],
            &[],
        ),
        // Webhooks go out through the providers' HTTP client (its private-address
        // rule); they never touch Kubernetes or the vault.
        "notify" => (
            &["vault", "controller", "admin", "leader", "cli"],
            &["kube", "k8s_openapi"],
        ),
        // The CLI is a client of the operator's API: it reads status, the plan and the
        // audit trail, and never runs a part of the operator (no provider call, no
        // metrics, no lease, no webhook); the controller is the only way to providers.
        "cli" => (
            &["providers", "admin", "metrics", "leader", "notify"],
            &["reqwest", "axum", "tokio_postgres"],
        ),
        // Every other layer: nothing reaches the CLI.
        "controller" | "kube_client" => (&["cli"], &[]),
        _ => (&[], &[]),
    }
}

/// The crate modules a line of `file` (in `layer`) reaches, by its `crate::` and
/// `super::` paths; `nested` says whether the file is below the layer's own file
/// (`src/rotation/engine.rs`, not `src/rotation/mod.rs`).
fn reached_modules(line: &str, nested: bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut paths: Vec<String> = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        if line[..at].ends_with(|c: char| c == '$' || c.is_alphanumeric()) {
            continue;
        }
        paths.push(line[at + "crate::".len()..].to_string());
    }
    // From a nested file, `super::super::` is the crate; from a layer's mod.rs (or a
    // top-level file), `super::` is.
    let up = if nested { "super::super::" } else { "super::" };
    for (at, _) in line.match_indices(up) {
        if line[..at].ends_with("super::") || line[..at].ends_with(char::is_alphanumeric) {
            continue;
        }
        paths.push(line[at + up.len()..].to_string());
    }
    for rest in paths {
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b}`: every top-level name in the group.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(ident(&item));
        } else {
            out.insert(ident(&rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

fn ident(text: &str) -> String {
    text.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Outside crates a line names (`kube::…`, `use reqwest;`).
fn reached_crates<'a>(line: &str, crates: &[&'a str]) -> Vec<&'a str> {
    crates
        .iter()
        .filter(|c| {
            line.match_indices(&format!("{c}::")).any(|(at, _)| {
                let before = &line[..at];
                !before.ends_with(|ch: char| ch.is_alphanumeric() || ch == '_')
            }) || line.trim() == format!("use {c};")
        })
        .copied()
        .collect()
}

/// Every back-arrow in `source`, the text of the file `path` (relative to `src/`).
fn back_arrows(path: &str, source: &str) -> Vec<String> {
    let mut parts = path.trim_end_matches(".rs").split('/');
    let layer = parts.next().unwrap_or_default().to_string();
    let nested = path.contains('/') && !path.ends_with("/mod.rs");
    let (modules, crates) = forbidden(&layer);
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for module in reached_modules(code, nested) {
            if modules.contains(&module.as_str()) {
                found.push(format!(
                    "src/{path}:{}: {layer} → {module}: {}",
                    n + 1,
                    code
                ));
            }
        }
        for c in reached_crates(code, crates) {
            found.push(format!(
                "src/{path}:{}: {layer} → crate {c}: {}",
                n + 1,
                code
            ));
        }
    }
    found
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn the_layers_run_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    // The check looked at the layers it guards.
    for layer in [
        "api/",
        "rotation/",
        "providers/",
        "vault/",
        "controller/",
        "cli/",
    ] {
        assert!(
            files.iter().any(|(p, _)| p.starts_with(layer)),
            "no source under src/{layer}"
        );
    }
    let arrows: Vec<String> = files
        .iter()
        .flat_map(|(path, source)| back_arrows(path, source))
        .collect();
    assert!(
        arrows.is_empty(),
        "imports against the layering (controller → {{rotation, vault, providers}} → rotation → api):\n{}",
        arrows.join("\n")
    );
}

#[test]
fn the_check_finds_every_form_of_back_arrow() {
    let cases = [
        ("rotation/engine.rs", "use crate::providers::Credential;"),
        (
            "rotation/engine.rs",
            "use crate::{api::Strategy, vault::Vault};",
        ),
        (
            "rotation/engine.rs",
            "    let v = crate::vault::Vault::new();",
        ),
        ("rotation/engine.rs", "use super::super::controller::Error;"),
        ("rotation/mod.rs", "use super::providers::Credential;"),
        ("rotation/schedule.rs", "use kube::ResourceExt;"),
        (
            "rotation/schedule.rs",
            "    let c = reqwest::Client::new();",
        ),
        ("providers/http.rs", "use crate::vault::Vault;"),
        (
            "providers/http.rs",
            "use k8s_openapi::api::core::v1::Secret;",
        ),
        ("api/spec.rs", "use crate::rotation::Trigger;"),
        ("admin.rs", "use crate::controller::Context;"),
        ("controller/plan.rs", "use crate::cli::Output;"),
        ("cli/status.rs", "use crate::providers::HttpClient;"),
        (
            "cli/mod.rs",
            "    let m = crate::metrics::Metrics::default();",
        ),
        ("vault/mod.rs", "use crate::providers::Credential;"),
    ];
    for (path, line) in cases {
        assert_eq!(
            back_arrows(path, line).len(),
            1,
            "{path}: {line:?} is a back-arrow the check missed"
        );
    }
    // Allowed arrows and look-alikes are not flagged.
    let fine = [
        ("rotation/engine.rs", "use crate::api::Strategy;"),
        ("rotation/engine.rs", "use super::{Credential, Provider};"),
        (
            "rotation/engine.rs",
            "// crate::providers is where these live",
        ),
        (
            "providers/http.rs",
            "use crate::rotation::{Credential, Provider};",
        ),
        ("controller/rotate.rs", "use crate::vault::Vault;"),
        ("vault/mod.rs", "use crate::rotation::Credential;"),
        ("cli/plan.rs", "use crate::controller::plan::PlanRow;"),
        ("cli/audit.rs", "use crate::vault::AuditRecord;"),
        ("cli/status.rs", "use super::output::{self, Output};"),
    ];
    for (path, line) in fine {
        assert!(
            back_arrows(path, line).is_empty(),
            "{path}: {line:?} flagged: {:?}",
            back_arrows(path, line)
        );
    }
}
