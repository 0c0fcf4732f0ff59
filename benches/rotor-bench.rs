//! rotor-bench: prints numbers, asserts nothing. Run it with `make bench`.
//!
//! - the pure parts: vault envelope seal + open, the schedule computation;
//! - the operator at scale against the real API server of the test harness:
//!   `ROTOR_BENCH_RESOURCES` (default 200) random-provider SecretRotations, a cold
//!   start that rotates them all, then a rotation of every one by annotation; wall
//!   time, rotations per second, the operator's peak and final memory, and the vault
//!   bytes each resource costs.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then only says
//! how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use rotor::api::SecretRotation;
use rotor::vault::envelope::{self, Keyring};
use std::time::{Duration, Instant};
use support::*;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rotor-bench: run it with `make bench` (cargo bench --bench rotor-bench)");
        return;
    }
    pure();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(operator_at_scale());
}

fn row(what: &str, value: String) {
    println!("  {what:<52} {value}");
}

fn pure() {
    println!("pure code (one thread)");
    let mut ring = Keyring::default();
    ring.keys.insert(1, Keyring::generate());
    let value = [7u8; 48];
    let aad = b"rotor/v1|bench|key|0|rotor-bench-1";
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        let sealed = envelope::seal(&ring, &value, aad).unwrap();
        let opened = envelope::open(&ring, &sealed, aad).unwrap();
        std::hint::black_box(opened);
    }
    let per = started.elapsed() / n;
    row(
        "vault seal + open of a 48-byte value",
        format!("{:.1} µs ({:.0}/s)", micros(per), 1.0 / per.as_secs_f64()),
    );

    let n = 1_000_000;
    let start = chrono::Utc::now();
    let started = Instant::now();
    for i in 0..n {
        let t = start + chrono::Duration::seconds(i);
        std::hint::black_box(rotor::rotation::next_rotation_at(
            t,
            Duration::from_secs(30 * 86_400),
            Some((3, 0)),
        ));
    }
    let per = started.elapsed() / n as u32;
    row(
        "next rotation time (30d, at 03:00 UTC)",
        format!("{:.0} ns", per.as_secs_f64() * 1e9),
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// VmHWM and VmRSS of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Waits (bounded) until every SecretRotation in `ns` has rotated `count` times.
async fn all_rotated(api: &Api<SecretRotation>, n: usize, count: u64) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    loop {
        let done = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|sr| {
                sr.status
                    .as_ref()
                    .is_some_and(|s| s.rotation_count >= count)
            })
            .count();
        if done >= n {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} rotated {count} times within 15 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn operator_at_scale() {
    let n: usize = std::env::var("ROTOR_BENCH_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let concurrency = std::env::var("ROTOR_BENCH_CONCURRENCY").unwrap_or_else(|_| "16".into());
    println!("operator against kube-apiserver 1.20 (loopback), random provider");
    let client = control_plane().client().await;
    let ns = namespace(&client, "bench").await;
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    for i in 0..n {
        let manifest = format!(
            "apiVersion: rotor.dev/v1alpha1\nkind: SecretRotation\nmetadata:\n  name: r{i}\nspec:\n  provider:\n    random: {{length: 32}}\n  secretsMapping:\n    value: TOKEN\n  target:\n    name: r{i}-secret\n    keepPrevious: true\n"
        );
        apply_yaml(&client, &ns, &manifest).await.unwrap();
    }
    row("SecretRotations", n.to_string());
    row("--concurrency", concurrency.clone());

    let op = Operator::start_with(&ns, &["--concurrency", &concurrency]);
    let cold = all_rotated(&api, n, 1).await;
    row(
        "cold start: every resource's first rotation",
        format!(
            "{:.2} s ({:.1} rotations/s)",
            cold.as_secs_f64(),
            n as f64 / cold.as_secs_f64()
        ),
    );
    let (peak, _) = memory(op.pid);
    row(
        "operator peak RSS after the cold start",
        format!("{peak:.1} MiB"),
    );

    let started = Instant::now();
    for i in 0..n {
        api.patch(
            &format!("r{i}"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"rotor.dev/rotate": "bench-2"}}
            })),
        )
        .await
        .unwrap();
    }
    let requested = started.elapsed();
    let again = all_rotated(&api, n, 2).await + requested;
    row(
        "rotate all by annotation (request to last Success)",
        format!(
            "{:.2} s ({:.1} rotations/s)",
            again.as_secs_f64(),
            n as f64 / again.as_secs_f64()
        ),
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (peak, now) = memory(op.pid);
    row("operator peak RSS", format!("{peak:.1} MiB"));
    row(
        "operator RSS, idle after both rounds",
        format!("{now:.1} MiB"),
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let vault = secrets.get("rotor-vault-r0").await.unwrap();
    let bytes: usize = vault
        .data
        .as_ref()
        .map(|d| d.iter().map(|(k, v)| k.len() + v.0.len()).sum())
        .unwrap_or(0);
    row(
        "vault Secret of one resource (2 entries + audit)",
        format!("{bytes} bytes"),
    );
}
