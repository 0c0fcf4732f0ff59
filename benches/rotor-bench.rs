//! rotor-bench: prints numbers, asserts nothing. Run it with `make bench`.
//!
//! First the pure parts (vault envelope seal + open, the schedule computation), then,
//! in one run against the real etcd + kube-apiserver of the test harness:
//!
//! 1. **floor** — a bare client doing, for N resources, exactly the writes of a
//!    crash-safe rotation (status intent, vault Secret, target Secret, status result,
//!    Event), and the 3-write version (Secret, status, Event): the most the API
//!    server takes here, the yardstick for everything below; then the 5 writes under
//!    a controller's two watches, and with the steady state's trigger before them;
//! 2. **cold start** — N random-provider SecretRotations exist, rotor starts: time
//!    until every one has rotated once, as rotations/s and as % of the 5-write floor
//!    (followed in rotor's log, checked by a LIST: see `Progress`), and right after it
//!    its like: a bare client doing the cold start's work (`LIKE_RUN`);
//! 3. **requests per rotation** by verb and resource for every phase, from rotor's
//!    `rotor_kube_requests_total` and, side by side, from the API server's own
//!    `apiserver_request_total` minus the bench's own requests;
//! 4. **idle** — nothing due: rotor's CPU and requests per second;
//! 5. **steady state** — every resource annotated `rotor.dev/rotate` at once;
//! 6. **memory** — rotor's peak RSS with N resources and unrelated 3 KiB Secrets
//!    in a namespace it watches (created before it starts);
//! 7. **burst** — resources whose `rotateAtUtc` is the same minute, with their own
//!    operator: time until all rotated, failures, 429s.
//!
//! Everything lands in `bench/results.json`. Knobs (environment): ROTOR_BENCH_RESOURCES
//! (N, default 2000), ROTOR_BENCH_CONCURRENCY (16: rotor's --concurrency and the
//! bench's requests in flight), ROTOR_BENCH_IDLE_SECONDS (60),
//! ROTOR_BENCH_FOREIGN_SECRETS (10000), ROTOR_BENCH_BURST (2000), ROTOR_BENCH_FLOOR (1;
//! 0 skips the floor), ROTOR_BENCH_HOLD_SECONDS (0: how long rotor is kept running,
//! its pid and admin address printed, after the memory phase). Heap profile: ROTOR_TEST_WRAP="heaptrack -o /tmp/rotor-{n}" runs
//! each operator under heaptrack (tests/support), with `cargo bench --bench rotor-bench
//! --no-default-features` (heaptrack sees only the system allocator, not jemalloc).
//!
//! Why `apiserver_request_total` and not the audit log for the cross-check: the
//! audit log costs the same subtraction of the bench's own requests, and writing one JSON line per request
//! costs the API server CPU on the very cores whose throughput the floor measures.
//! The counter is free. Its differences: it counts a WATCH when the watch ends (the
//! watch row shows rotor's number only); 1.20 counts a GET of one custom resource as
//! LIST; and it holds the API server's own loopback requests.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: it then only says
//! how to run it.

#[path = "../tests/support/mod.rs"]
mod support;

use chrono::{SecondsFormat, Timelike, Utc};
use futures::{StreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rand::RngCore;
use rotor::api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, RotationPhase, SecretRotation};
use rotor::vault::envelope::{self, Keyring};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// How often a long phase prints where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rotor-bench: run it with `make bench` (cargo bench --bench rotor-bench)");
        return;
    }
    // API Priority and Fairness on in the bench's API server, and rotor runs as a
    // ServiceAccount (not an exempt admin), so that its requests are queued, and
    // rejected, as a real install's are.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("ROTOR_HARNESS_APF", "1") };
    // etcd is compacted by the bench before each timed run (see `settle`), not by the
    // API server every 5 minutes at whatever point of a run that falls.
    // SAFETY: as above.
    unsafe { std::env::set_var("ROTOR_HARNESS_BENCH_COMPACTION", "1") };
    let started = Instant::now();
    let mut results = Map::new();
    results.insert("pure".into(), pure());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(operator_at_scale(&mut results));
    let total = started.elapsed().as_secs_f64();
    results.insert("bench_wall_seconds".into(), json!(round(total, 1)));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(results)).unwrap() + "\n",
    )
    .unwrap();
    println!("\nwrote {} ({total:.0} s in all)", path.display());
}

fn row(what: &str, value: String) {
    println!("  {what:<52} {value}");
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn pure() -> Value {
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
    let seal = started.elapsed() / n;
    row(
        "escrow seal + open of a 48-byte value",
        format!(
            "{:.1} µs ({:.0}/s)",
            seal.as_secs_f64() * 1e6,
            1.0 / seal.as_secs_f64()
        ),
    );

    let n = 1_000_000;
    let start = Utc::now();
    let started = Instant::now();
    for i in 0..n {
        let t = start + chrono::Duration::seconds(i);
        std::hint::black_box(rotor::rotation::next_rotation_at(
            t,
            Duration::from_secs(30 * 86_400),
            Some((3, 0)),
        ));
    }
    let schedule = started.elapsed() / n as u32;
    row(
        "next rotation time (30d, at 03:00 UTC)",
        format!("{:.0} ns", schedule.as_secs_f64() * 1e9),
    );
    json!({
        "vault_seal_open_us": round(seal.as_secs_f64() * 1e6, 2),
        "next_rotation_at_ns": round(schedule.as_secs_f64() * 1e9, 1),
    })
}

// ---------------------------------------------------------------------------------
// Request accounting

/// Requests by (verb, resource), in rotor's vocabulary: verbs get, list, watch,
/// create, update, patch, delete, deletecollection; the resource's plural with
/// `/subresource` appended.
type Counts = BTreeMap<(String, String), f64>;

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The verb and resource of one of the bench's own requests, named as rotor's
/// counter (and the API server's metric) name them, so they can be subtracted.
fn classify(method: &http::Method, uri: &http::Uri) -> (String, String) {
    let (verb, resource) = rotor::kube_client::classify(method, uri);
    (verb.to_string(), resource)
}

/// An admin client that counts its own requests into `own`: the API server's
/// counter holds them too, and they are not rotor's.
async fn counted_client(own: Arc<Mutex<Counts>>) -> Client {
    counted_client_of(&control_plane().kubeconfig, own).await
}

/// A client of the kubeconfig at `path` that counts its own requests into `own`.
async fn counted_client_of(path: impl AsRef<std::path::Path>, own: Arc<Mutex<Counts>>) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let key = classify(req.method(), req.uri());
        *own.lock().unwrap().entry(key).or_default() += 1.0;
        req
    });
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&count)
        .build()
}

/// One Prometheus sample line: name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \" \\ \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// `rotor_kube_requests_total` from rotor's /metrics; None when rotor does not
/// export it.
fn rotor_requests(text: &str) -> Option<Counts> {
    let mut counts = Counts::new();
    let mut seen = false;
    for line in text.lines() {
        let Some(("rotor_kube_requests_total", labels, value)) = parse_sample(line) else {
            continue;
        };
        seen = true;
        let (Some(verb), Some(resource)) = (labels.get("verb"), labels.get("resource")) else {
            continue;
        };
        *counts.entry((verb.clone(), resource.clone())).or_default() += value;
    }
    seen.then_some(counts)
}

fn rotor_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the API server counted, from its own /metrics.
struct ApiServerCounts {
    /// `apiserver_request_total`, resource requests only, summed over group,
    /// version, scope, code and content type.
    requests: Counts,
    /// Requests the API server answered 429 Too Many Requests (counted, or dropped by
    /// its in-flight limit).
    too_many: f64,
    /// `apiserver_request_duration_seconds_sum`, keyed like `requests`: where the
    /// API server's time goes, by kind of request (the profile beside the counts).
    seconds: Counts,
    /// `apiserver_watch_events_total` and `apiserver_watch_events_sizes_sum` by kind:
    /// ("events", kind) and ("bytes", kind); `etcd_request_duration_seconds_count`
    /// as ("etcd <operation>", type).
    watch: Counts,
}

async fn apiserver_metrics(client: &Client) -> String {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    client.request_text(req).await.unwrap_or_default()
}

/// With `ROTOR_BENCH_PPROF=<dir>`: the API server's and etcd's CPU profiles
/// (`/debug/pprof/profile`) over `seconds`, from `delay` on, written to
/// `<dir>/<name>.pb.gz` and `<dir>/<name>.etcd.pb.gz` for `go tool pprof`, with the
/// rotations in the window printed (the Events created: one a rotation) so that a
/// function's samples can be read per rotation. Where the time goes, by function: what
/// the request counts and latencies cannot say.
fn pprof(
    client: &Client,
    name: &str,
    delay: Duration,
    seconds: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    let dir = std::env::var("ROTOR_BENCH_PPROF").ok()?;
    let (client, path, name) = (
        client.clone(),
        format!("{dir}/{name}.pb.gz"),
        name.to_string(),
    );
    Some(tokio::spawn(async move {
        use futures::AsyncReadExt;
        tokio::time::sleep(delay).await;
        let req = http::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
            .body(Vec::new())
            .unwrap();
        let mut body = Vec::new();
        // Rotations in the profile's window: one Event each, floor and rotor alike.
        let events = |text: String| {
            apiserver_counts(&text)
                .requests
                .get(&("create".to_string(), "events".to_string()))
                .copied()
                .unwrap_or(0.0)
        };
        let before = events(apiserver_metrics(&client).await);
        let _ = std::fs::create_dir_all(&dir);
        // etcd's profile over the same window (its --enable-pprof, plain HTTP on
        // loopback: no proxy, bounded).
        let etcd = {
            let url = format!(
                "{}/debug/pprof/profile?seconds={seconds}",
                control_plane().etcd_url
            );
            let path = format!("{dir}/{name}.etcd.pb.gz");
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(seconds + 30))
                    .build();
                if let Ok(http) = http
                    && let Ok(reply) = http.get(&url).send().await
                    && reply.status().is_success()
                    && let Ok(body) = reply.bytes().await
                {
                    let _ = std::fs::write(&path, &body);
                }
            })
        };
        match client.request_stream(req).await {
            Ok(mut stream) => match stream.read_to_end(&mut body).await {
                Ok(_) => {
                    let _ = etcd.await;
                    let rotations = events(apiserver_metrics(&client).await) - before;
                    let _ = std::fs::write(&path, &body);
                    println!(
                        "    profile of the API server: {path} ({rotations:.0} rotations in it)"
                    );
                }
                Err(e) => println!("    profile {path}: {e}"),
            },
            Err(e) => println!("    profile {path}: {e}"),
        }
    }))
}

/// Deletes the Secrets, Events and SecretRotations of `ns`: a floor run's objects,
/// once it is measured. Kept, they weighed on each later run — the bare floor measured
/// last was 5–19 % below the same run measured first (4–8 % with them deleted), and
/// the cold start after them cost API server + etcd 13.6–16.7 ms a rotation against
/// 12.8–13.4 with no floor before it (within this machine's noise) — so the floor and
/// rotor would each be measured on a different API server.
async fn clear(client: &Client, ns: &str) {
    let started = Instant::now();
    let (dp, lp) = (kube::api::DeleteParams::default(), ListParams::default());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut failed = Vec::new();
    if let Err(e) = secrets.delete_collection(&dp, &lp).await {
        failed.push(format!("Secrets: {e}"));
    }
    if let Err(e) = events.delete_collection(&dp, &lp).await {
        failed.push(format!("Events: {e}"));
    }
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), ns);
    if let Err(e) = api.delete_collection(&dp, &lp).await {
        failed.push(format!("SecretRotations: {e}"));
    }
    println!(
        "    cleared {ns} in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", failed.join("; "))
        }
    );
}

/// Brings the control plane to the same state before every timed run and phase: etcd
/// compacted to its current revision and defragmented, the API server's Go heap
/// collected, then 2 s of quiet. Without it each run started on what the runs before
/// it left — the old revisions of every object they wrote, and a heap whose next
/// collection fell into the next run — and the API server's own compaction (every 5
/// minutes, which the bench turns off) fell at an arbitrary point of whichever run was
/// under way. Prints what it did; a step that fails is named and the run goes on.
async fn settle(client: &Client) {
    use futures::AsyncReadExt;
    let started = Instant::now();
    let etcd = control_plane().etcd_url.clone();
    let mut said = Vec::new();
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            println!("    settle: no HTTP client: {e}");
            return;
        }
    };
    // etcd's v3 JSON gateway (loopback, plain HTTP): its numbers are strings.
    let call = |path: &str, body: Value| {
        let request = http.post(format!("{etcd}/v3/{path}")).json(&body);
        async move {
            let reply = request.send().await.map_err(|e| e.to_string())?;
            let status = reply.status();
            let body: Value = reply.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("{status}: {body}"))
            }
        }
    };
    let db_mib = |status: &Value| {
        status["dbSize"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0.0, |b| b / 1_048_576.0)
    };
    match call("maintenance/status", json!({})).await {
        Ok(status) => {
            let before = db_mib(&status);
            match status["header"]["revision"].as_str() {
                None => said.push("etcd said no revision: not compacted".into()),
                Some(revision) => match call(
                    "kv/compaction",
                    json!({"revision": revision, "physical": true}),
                )
                .await
                {
                    Ok(_) => said.push(format!("etcd compacted at revision {revision}")),
                    // "required revision has been compacted": nothing new since the last.
                    Err(e) if e.contains("compacted") => {
                        said.push(format!("etcd already compacted at {revision}"))
                    }
                    Err(e) => said.push(format!("etcd compaction failed ({e})")),
                },
            }
            match call("maintenance/defragment", json!({})).await {
                Ok(_) => match call("maintenance/status", json!({})).await {
                    Ok(after) => said.push(format!(
                        "defragmented ({before:.0} → {:.0} MiB)",
                        db_mib(&after)
                    )),
                    Err(_) => said.push("defragmented".into()),
                },
                Err(e) => said.push(format!("defragment failed ({e})")),
            }
        }
        Err(e) => said.push(format!("etcd status failed ({e})")),
    }
    // net/http/pprof's heap handler runs a full collection first when asked (gc=1).
    let req = http::Request::get("/debug/pprof/heap?gc=1")
        .body(Vec::new())
        .unwrap();
    let mut sink = Vec::new();
    match client.request_stream(req).await {
        Ok(mut stream) => match stream.read_to_end(&mut sink).await {
            Ok(_) => said.push("API server heap collected".into()),
            Err(e) => said.push(format!("API server collection failed ({e})")),
        },
        Err(e) => said.push(format!("API server collection failed ({e})")),
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "    settled in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        said.join(", ")
    );
}

/// [`Sample`]: one SecretRotation (`r0`, in a namespace of its own) rotated once by
/// rotor as its ServiceAccount, its status seen through a watch as each write left
/// it. None, said, if that does not happen within a minute.
async fn sample_rotation(bench: &Bench, identity: &[(&str, &str); 2]) -> Option<Sample> {
    let client = &bench.client;
    let ns = namespace(client, "bench-sample").await;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<SecretRotation>(&()),
    );
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Listed (nothing yet) before the resource exists: its every write is then seen.
    let listed = async {
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::InitDone) = event {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), listed).await;
    create_rotations(bench, &ns, "r", 1).await;
    let op = Operator::start_env(
        &ns,
        &["--concurrency", "1"],
        &[("ROTOR_LOG", "info"), identity[0], identity[1]],
    );
    let statuses = async {
        let mut intent = None;
        while let Some(event) = events.next().await {
            let (Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o))) = event else {
                continue;
            };
            let Some(status) = o.data.get("status") else {
                continue;
            };
            if status.get("inFlight").is_some() {
                intent.get_or_insert_with(|| status.clone());
            } else if status.get("rotationCount").and_then(Value::as_u64) == Some(1) {
                return intent.map(|intent| (intent, status.clone()));
            }
        }
        None
    };
    let statuses = tokio::time::timeout(Duration::from_secs(60), statuses).await;
    op.stop().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let listed = secrets.list(&ListParams::default()).await.ok();
    let secret = |escrow: bool| {
        listed.as_ref()?.items.iter().find(|s| {
            s.labels().contains_key(rotor::vault::VAULT_LABEL) == escrow
                && (escrow || s.name_any() == "r0-secret")
        })
    };
    match (statuses, secret(true), secret(false)) {
        (Ok(Some((intent, result))), Some(escrow), Some(target)) => Some(Sample {
            intent,
            result,
            escrow: escrow.clone(),
            target: target.clone(),
        }),
        _ => {
            println!("    rotor did not rotate {ns}/r0 once within a minute: no cold start's like");
            None
        }
    }
}

/// With `ROTOR_BENCH_PPROF=<dir>`: the SecretRotation `ns/name` as the API server
/// holds it (managedFields too), to `<dir>/<ns>-<name>-<when>.json`.
async fn dump_object(client: &Client, ns: &str, name: &str, when: &str) {
    let Ok(dir) = std::env::var("ROTOR_BENCH_PPROF") else {
        return;
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<SecretRotation>(&()),
    );
    if let Ok(o) = api.get(name).await {
        let _ = std::fs::write(
            format!("{dir}/{ns}-{name}-{when}.json"),
            serde_json::to_string_pretty(&o).unwrap_or_default(),
        );
    }
}

fn apiserver_counts(text: &str) -> ApiServerCounts {
    let mut requests = Counts::new();
    let mut seconds = Counts::new();
    let mut watch = Counts::new();
    let mut too_many = 0.0;
    for line in text.lines() {
        let (name, labels, value) = match parse_sample(line) {
            Some(sample) => sample,
            None => continue,
        };
        if name == "apiserver_dropped_requests_total" {
            too_many += value;
            continue;
        }
        let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let into = match name {
            "apiserver_request_total" => &mut requests,
            "apiserver_request_duration_seconds_sum" => &mut seconds,
            "apiserver_watch_events_total" | "apiserver_watch_events_sizes_sum" => {
                let what = if name.ends_with("total") {
                    "events"
                } else {
                    "bytes"
                };
                *watch
                    .entry((what.to_string(), label("kind").to_string()))
                    .or_default() += value;
                continue;
            }
            // What reached etcd: a read the watch cache answers never does.
            "etcd_request_duration_seconds_count" => {
                *watch
                    .entry((
                        format!("etcd {}", label("operation")),
                        label("type").to_string(),
                    ))
                    .or_default() += value;
                continue;
            }
            _ => continue,
        };
        if name == "apiserver_request_total" && label("code") == "429" {
            too_many += value;
        }
        if label("resource").is_empty() {
            continue;
        }
        // The API server's verbs, in rotor's words; APPLY is a server-side-apply PATCH.
        let verb = match label("verb") {
            "GET" => "get".to_string(),
            "LIST" => "list".to_string(),
            "WATCH" | "WATCHLIST" => "watch".to_string(),
            "POST" => "create".to_string(),
            "PUT" => "update".to_string(),
            "PATCH" | "APPLY" => "patch".to_string(),
            "DELETE" => "delete".to_string(),
            "DELETECOLLECTION" => "deletecollection".to_string(),
            other => other.to_lowercase(),
        };
        let resource = match label("subresource") {
            "" => label("resource").to_string(),
            sub => format!("{}/{sub}", label("resource")),
        };
        *into.entry((verb, resource)).or_default() += value;
    }
    ApiServerCounts {
        requests,
        too_many,
        seconds,
        watch,
    }
}

/// Where the API server's time went between two of its /metrics texts, per `unit`:
/// for each kind of request on rotor's resources, how many, their mean latency and
/// their latency per unit; and the watch events it sent, by kind, with their bytes.
/// Latency is wall time (queueing and etcd included), not CPU: it ranks the kinds
/// of one phase, and compares a phase with the floor run at the same concurrency.
fn apiserver_profile(before: &ApiServerCounts, after: &ApiServerCounts, per: f64) -> Value {
    let requests = delta(&after.requests, &before.requests);
    let seconds = delta(&after.seconds, &before.seconds);
    let watch = delta(&after.watch, &before.watch);
    println!(
        "    API server, per kind (everyone's requests, the bench's too): per unit, mean ms, ms per unit"
    );
    let mut kinds = Map::new();
    for ((verb, resource), count) in &requests {
        let wanted = ["secrets", "secretrotations", "events"]
            .iter()
            .any(|r| resource.split('/').next() == Some(r));
        if !wanted || verb == "watch" || *count <= 0.0 {
            continue;
        }
        let secs = seconds
            .get(&(verb.clone(), resource.clone()))
            .copied()
            .unwrap_or(0.0);
        println!(
            "      {verb:<8} {resource:<26} {:>7.2} {:>8.2} {:>8.2}",
            count / per,
            1e3 * secs / count,
            1e3 * secs / per
        );
        kinds.insert(
            format!("{verb} {resource}"),
            json!({"per_unit": round(count / per, 3), "mean_ms": round(1e3 * secs / count, 3),
                   "ms_per_unit": round(1e3 * secs / per, 3)}),
        );
    }
    let mut events = Map::new();
    for ((what, kind), n) in &watch {
        if what != "events" || *n <= 0.0 {
            continue;
        }
        let bytes = watch
            .get(&("bytes".to_string(), kind.clone()))
            .copied()
            .unwrap_or(0.0);
        println!(
            "      watch events {kind:<24} {:>7.2} per unit, {:>6.0} bytes each",
            n / per,
            bytes / n
        );
        events.insert(
            kind.clone(),
            json!({"per_unit": round(n / per, 3), "bytes_each": round(bytes / n, 0)}),
        );
    }
    let mut etcd = Map::new();
    for ((what, kind), n) in &watch {
        let Some(operation) = what.strip_prefix("etcd ") else {
            continue;
        };
        let wanted = ["Secret", "Unstructured", "Event"]
            .iter()
            .any(|k| kind.ends_with(k));
        if !wanted || *n <= 0.0 {
            continue;
        }
        println!(
            "      etcd {operation:<12} {kind:<28} {:>7.2} per unit",
            n / per
        );
        etcd.insert(format!("{operation} {kind}"), json!(round(n / per, 3)));
    }
    json!({"requests": kinds, "watch_events": events, "etcd_requests": etcd})
}

// ---------------------------------------------------------------------------------
// Processes

/// User + system CPU seconds of a process so far (0 once it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is field 3, utime
    // 14, stime 15.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// VmHWM (peak) and VmRSS of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    (status_mib(pid, "VmHWM:"), status_mib(pid, "VmRSS:"))
}

/// One field of a process's /proc status, in MiB (0 when it cannot be read).
fn status_mib(pid: u32, name: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Samples a process's RSS every second until dropped, printing a line every
/// `PRINT_EVERY` (and whenever the peak rose by 1 MiB): where in a phase the peak
/// comes from. `label` names the phase now running.
struct RssSeries {
    label: Arc<Mutex<&'static str>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSeries {
    const PRINT_EVERY: Duration = Duration::from_secs(10);

    fn start(pid: u32, progress: Progress) -> Self {
        let label = Arc::new(Mutex::new("cold start"));
        let phase = label.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let (mut printed_at, mut printed_peak) = (Instant::now(), 0.0);
            loop {
                let (peak, rss) = memory(pid);
                if peak == 0.0 {
                    return;
                }
                if printed_at.elapsed() >= Self::PRINT_EVERY || peak >= printed_peak + 1.0 {
                    println!(
                        "    rss: {:>6.0} s {:<12} RSS {rss:5.1} MiB (anon {:4.1}, file {:4.1}), peak {peak:5.1} MiB, {} rotations logged",
                        started.elapsed().as_secs_f64(),
                        *phase.lock().unwrap(),
                        status_mib(pid, "RssAnon:"),
                        status_mib(pid, "RssFile:"),
                        progress.rotated(),
                    );
                    (printed_at, printed_peak) = (Instant::now(), peak);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { label, task }
    }

    fn phase(&self, label: &'static str) {
        *self.label.lock().unwrap() = label;
    }
}

impl Drop for RssSeries {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn control_plane_cpu() -> f64 {
    let plane = control_plane();
    cpu_seconds(plane.apiserver_pid) + cpu_seconds(plane.etcd_pid)
}

/// Lines of the operator's log that report a 429: kube's API error names its reason
/// and code (`reason: "TooManyRequests", code: 429`). A bare "429" is not enough:
/// resource names such as `b429` are in the log too.
fn logged_429s(op: &Operator) -> usize {
    op.logs()
        .lines()
        .filter(|l| {
            [
                "TooManyRequests",
                "Too Many Requests",
                "code: 429",
                "\"code\":429",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .count()
}

// ---------------------------------------------------------------------------------
// Phases: a mark at each end, the difference reported

/// Everything counted at one moment.
struct Mark {
    at: Instant,
    /// rotor's own request counter; None when rotor does not export it.
    rotor: Option<Counts>,
    rotor_errors: f64,
    apiserver: ApiServerCounts,
    /// The bench's own requests, to subtract from the API server's count.
    bench: Counts,
    operator_cpu: f64,
    plane_cpu: f64,
    bench_cpu: f64,
}

struct Bench {
    client: Client,
    own: Arc<Mutex<Counts>>,
    concurrency: usize,
}

impl Bench {
    /// Counts now. `op`: the operator of the phase; None before it started (it has
    /// made no request yet).
    async fn mark(&self, op: Option<&Operator>) -> Mark {
        let (rotor, rotor_errors) = match op {
            Some(op) => {
                let text = metrics_text(op).await;
                (
                    rotor_requests(&text),
                    rotor_sample(&text, "rotor_reconciles_total{result=\"error\"}"),
                )
            }
            None => (Some(Counts::new()), 0.0),
        };
        let apiserver = apiserver_counts(&apiserver_metrics(&self.client).await);
        Mark {
            at: Instant::now(),
            rotor,
            rotor_errors,
            apiserver,
            bench: self.own.lock().unwrap().clone(),
            operator_cpu: op.map_or(0.0, |op| cpu_seconds(op.pid)),
            plane_cpu: control_plane_cpu(),
            bench_cpu: cpu_seconds(std::process::id()),
        }
    }

    /// Runs `f(0..n)` with the bench's concurrency (`in_flight` requests at once),
    /// printing progress; stops at `limit`. Returns the wall time and how many failed.
    async fn run_all<F, Fut>(
        &self,
        what: &str,
        n: usize,
        in_flight: usize,
        limit: Duration,
        f: F,
    ) -> (Duration, usize)
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<(), kube::Error>>,
    {
        let started = Instant::now();
        let mut printed = started;
        let (mut done, mut failed) = (0, 0);
        let mut results = stream::iter(0..n).map(&f).buffer_unordered(in_flight);
        while let Some(result) = results.next().await {
            done += 1;
            if let Err(e) = result {
                if failed == 0 {
                    let e: String = e.to_string().chars().take(300).collect();
                    println!("    {what}: first failure: {e}");
                }
                failed += 1;
            }
            if printed.elapsed() >= PROGRESS_EVERY {
                println!(
                    "    {what}: {done} of {n} ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
                printed = Instant::now();
            }
            if started.elapsed() > limit {
                println!("    {what}: stopped after {done} of {n} at {limit:?}");
                failed += n - done;
                break;
            }
        }
        if failed > 0 {
            println!("    {what}: {failed} of {n} failed");
        }
        (started.elapsed(), failed)
    }
}

/// rotor's and the API server's requests between two marks, per `unit` (a rotation,
/// a second), printed as a table and returned for the results file.
fn report(title: &str, before: &Mark, after: &Mark, per: f64, unit: &str) -> Value {
    let rotor = match (&before.rotor, &after.rotor) {
        (Some(b), Some(a)) => Some(delta(a, b)),
        _ => None,
    };
    // The API server's count minus the bench's own requests: what rotor sent, as the
    // API server saw it.
    let bench = delta(&after.bench, &before.bench);
    let server: Counts = delta(&after.apiserver.requests, &before.apiserver.requests)
        .into_iter()
        .map(|(k, v)| {
            let own = bench.get(&k).copied().unwrap_or(0.0);
            (k, v - own)
        })
        .collect();
    // Rows: what rotor counted, and whatever the API server saw on the resources rotor
    // works with (the API server's own housekeeping on others is not rotor's).
    const ROTOR_RESOURCES: [&str; 5] = [
        "secrets",
        "secretrotations",
        "secretrotations/status",
        "events",
        "leases",
    ];
    let mut keys: Vec<(String, String)> = rotor.iter().flat_map(|r| r.keys().cloned()).collect();
    keys.extend(
        server
            .iter()
            .filter(|((_, res), v)| ROTOR_RESOURCES.contains(&res.as_str()) && v.abs() > 0.0)
            .map(|(k, _)| k.clone()),
    );
    let verb_rank = |v: &str| {
        [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ]
        .iter()
        .position(|x| *x == v)
        .unwrap_or(99)
    };
    keys.sort_by(|a, b| (&a.1, verb_rank(&a.0)).cmp(&(&b.1, verb_rank(&b.0))));
    keys.dedup();

    let is_read = |v: &str| v == "get" || v == "list";
    let is_write = |v: &str| {
        matches!(
            v,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    };
    let fmt = |x: Option<f64>| x.map_or("n/a".to_string(), |x| format!("{:.2}", x / per));
    println!("  {title}: requests per {unit} (rotor's count | the API server's)");
    if keys.is_empty() {
        println!("    none");
    }
    let (mut rotor_json, mut server_json) = (Map::new(), Map::new());
    for (verb, resource) in &keys {
        let key = (verb.clone(), resource.clone());
        let r = rotor.as_ref().map(|r| r.get(&key).copied().unwrap_or(0.0));
        // The API server counts a watch when it ends.
        let s = (verb != "watch").then(|| server.get(&key).copied().unwrap_or(0.0));
        println!(
            "    {verb:<8} {resource:<30} {:>8} {:>8}",
            fmt(r),
            s.map_or("—".into(), |s| fmt(Some(s)))
        );
        let name = format!("{verb} {resource}");
        if let Some(r) = r {
            rotor_json.insert(name.clone(), json!(round(r / per, 3)));
        }
        if let Some(s) = s {
            server_json.insert(name, json!(round(s / per, 3)));
        }
    }
    let total = |counts: Option<&Counts>, pick: &dyn Fn(&str) -> bool| {
        counts.map(|c| {
            keys.iter()
                .filter(|(v, _)| pick(v))
                .map(|k| c.get(k).copied().unwrap_or(0.0))
                // An empty f64 sum is -0.0.
                .sum::<f64>()
                + 0.0
        })
    };
    let reads = (
        total(rotor.as_ref(), &is_read),
        total(Some(&server), &is_read),
    );
    let writes = (
        total(rotor.as_ref(), &is_write),
        total(Some(&server), &is_write),
    );
    println!(
        "    {:<39} {:>8} {:>8}",
        "reads (get + list)",
        fmt(reads.0),
        fmt(reads.1)
    );
    println!(
        "    {:<39} {:>8} {:>8}",
        "writes (create, update, patch, delete)",
        fmt(writes.0),
        fmt(writes.1)
    );
    let too_many = after.apiserver.too_many - before.apiserver.too_many;
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let operator_cpu = after.operator_cpu - before.operator_cpu;
    let plane_cpu = after.plane_cpu - before.plane_cpu;
    let bench_cpu = after.bench_cpu - before.bench_cpu;
    if keys.iter().any(|(_, r)| r == "secretrotations") {
        // Seen with curl: a GET of one custom resource is verb="LIST" in 1.20's metric.
        println!(
            "    (kube-apiserver 1.20 counts a GET of one SecretRotation as a LIST; its own\n     \
             loopback requests, e.g. its periodic GETs of system namespaces, are in its column)"
        );
    }
    println!(
        "    CPU: rotor {operator_cpu:.1} s, kube-apiserver + etcd {plane_cpu:.1} s, the bench itself {bench_cpu:.1} s (over {seconds:.1} s)"
    );
    if unit == "rotation" {
        println!(
            "    CPU per rotation: rotor {:.2} ms, kube-apiserver + etcd {:.1} ms",
            1e3 * operator_cpu / per,
            1e3 * plane_cpu / per
        );
    }
    let per_json = |x: Option<f64>| x.map(|x| round(x / per, 3));
    let profile = apiserver_profile(&before.apiserver, &after.apiserver, per);
    json!({
        "unit": unit,
        "apiserver_profile": profile,
        "window_seconds": round(seconds, 2),
        "requests": {
            "rotor": rotor.map(|_| Value::Object(rotor_json)),
            "apiserver_minus_bench": Value::Object(server_json),
        },
        "reads": {"rotor": per_json(reads.0), "apiserver_minus_bench": per_json(reads.1)},
        "writes": {"rotor": per_json(writes.0), "apiserver_minus_bench": per_json(writes.1)},
        "apiserver_429s": too_many,
        "reconcile_errors": after.rotor_errors - before.rotor_errors,
        "cpu_ms_per_unit": {
            "rotor": round(1e3 * operator_cpu / per, 3),
            "apiserver_and_etcd": round(1e3 * plane_cpu / per, 2),
        },
        "cpu_seconds": {
            "rotor": round(operator_cpu, 2),
            "apiserver_and_etcd": round(plane_cpu, 2),
            "bench": round(bench_cpu, 2),
        },
    })
}

// ---------------------------------------------------------------------------------
// Following progress

/// rotor's progress as its own log tells it — every rotation logs `rotated` once the
/// status write that completes it has landed (its Event follows, off the reconcile's
/// path: the phase's last few are published just after it ends) — checked against
/// the API server by a LIST when the log says a phase is done. Reading a file costs
/// the API server nothing; a watch of every SecretRotation, the bench's observer
/// before, cost it about a sixth of its rate (the 5-write floor under that watch: 148
/// rotations/s against 180 bare), a load the floor does not carry.
#[derive(Clone)]
struct Progress(Arc<Mutex<Followed>>);

struct Followed {
    api: Api<SecretRotation>,
    log: std::path::PathBuf,
    /// How far the log has been read, and the start of a line not yet complete.
    offset: u64,
    partial: Vec<u8>,
    /// `rotated` lines so far.
    rotated: usize,
}

/// The log line of a completed rotation (rotor's JSON format, as tests/support runs
/// it).
const ROTATED: &str = "\"message\":\"rotated\"";

impl Progress {
    fn follow(client: &Client, ns: &str, op: &Operator) -> Self {
        Self(Arc::new(Mutex::new(Followed {
            api: Api::namespaced(client.clone(), ns),
            log: op.log.clone(),
            offset: 0,
            partial: Vec::new(),
            rotated: 0,
        })))
    }

    /// Rotations the log has told of so far (it reads only what is new).
    fn rotated(&self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self.0.lock().unwrap();
        let Ok(mut file) = std::fs::File::open(&f.log) else {
            return f.rotated;
        };
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(f.offset)).is_err() || file.read_to_end(&mut fresh).is_err() {
            return f.rotated;
        }
        f.offset += fresh.len() as u64;
        let mut text = std::mem::take(&mut f.partial);
        text.extend_from_slice(&fresh);
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        f.partial = text.split_off(complete);
        f.rotated += String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains(ROTATED))
            .count();
        f.rotated
    }

    /// One LIST: how many resources have rotated at least `times` times, and how many
    /// report a failure; None (said) when the LIST fails.
    async fn listed(&self, times: u64) -> Option<(usize, usize)> {
        let api = self.0.lock().unwrap().api.clone();
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                println!("    LIST of the SecretRotations failed: {e}");
                return None;
            }
        };
        let done = list
            .items
            .iter()
            .filter(|sr| {
                sr.status
                    .as_ref()
                    .is_some_and(|s| s.rotation_count >= times)
            })
            .count();
        let failed = list
            .items
            .iter()
            .filter(|sr| {
                sr.status.as_ref().is_some_and(|s| {
                    s.rotation_status == RotationPhase::Failed || s.failed_attempts > 0
                })
            })
            .count();
        Some((done, failed))
    }

    /// Waits until the log tells of `base + n` rotations: the time since `since`; None
    /// if `limit` passed or the operator died first. (Then the phase's mark, then
    /// [`Progress::confirm`]: the LIST's cost stays out of the phase's numbers.)
    async fn wait_logged(
        &self,
        what: &str,
        n: usize,
        base: usize,
        since: Instant,
        limit: Duration,
        op: &Operator,
    ) -> Option<Duration> {
        let mut printed = Instant::now();
        loop {
            let logged = self.rotated().saturating_sub(base);
            if logged >= n {
                return Some(since.elapsed());
            }
            if since.elapsed() > limit {
                println!("    {what}: only {logged} of {n} within {limit:?}; going on");
                return None;
            }
            if op.exited() {
                println!("    {what}: the operator exited ({logged} of {n} done)");
                return None;
            }
            if printed.elapsed() >= PROGRESS_EVERY {
                println!(
                    "    {what}: {logged} of {n} ({:.0} s)",
                    since.elapsed().as_secs_f64()
                );
                printed = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the API server holds after the log said `took`: a LIST finds `n`
    /// resources rotated `times` times — else one LIST a second until one does (its
    /// time then), or `limit` since `since` passed (None). With how many resources
    /// report a failure (None when no LIST answered).
    async fn confirm(
        &self,
        what: &str,
        (n, times): (usize, u64),
        took: Option<Duration>,
        (since, limit): (Instant, Duration),
        op: &Operator,
    ) -> (Option<Duration>, Option<usize>) {
        let mut took = took;
        let mut failed = None;
        while took.is_some() {
            let listed = self.listed(times).await;
            failed = listed.map(|(_, f)| f).or(failed);
            let done = listed.map_or(0, |(done, _)| done);
            if done >= n {
                break;
            }
            // The log ran ahead of what the API server holds (a rotation logged
            // twice, or a status lost): only a LIST's own time counts.
            println!("    {what}: the log says done, a LIST finds {done} of {n}");
            if since.elapsed() > limit || op.exited() {
                took = None;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // (The phase's mark is the earlier one: its counts end before this.)
            took = Some(since.elapsed());
        }
        if took.is_none() && failed.is_none() {
            failed = self.listed(0).await.map(|(_, f)| f);
        }
        (took, failed)
    }
}

// ---------------------------------------------------------------------------------
// Objects

fn random_rotation(name: &str) -> SecretRotation {
    serde_json::from_value(json!({
        "apiVersion": "rotor.dev/v1alpha1",
        "kind": "SecretRotation",
        "metadata": {"name": name},
        "spec": {
            "provider": {"random": {"length": 32}},
            "secretsMapping": {"value": "TOKEN"},
            "target": {"name": format!("{name}-secret"), "keepPrevious": true},
        },
    }))
    .unwrap()
}

fn random_bytes(n: usize) -> ByteString {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    ByteString(bytes)
}

fn random_token() -> ByteString {
    use base64::Engine;
    let raw = random_bytes(24).0;
    ByteString(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw)
            .into_bytes(),
    )
}

/// Creates `n` random-provider SecretRotations `{prefix}{i}` in `ns`.
async fn create_rotations(bench: &Bench, ns: &str, prefix: &str, n: usize) -> Duration {
    let api: Api<SecretRotation> = Api::namespaced(bench.client.clone(), ns);
    let (took, _) = bench
        .run_all(
            &format!("creating {n} SecretRotations in {ns}"),
            n,
            bench.concurrency,
            deadline(n),
            |i| {
                let api = api.clone();
                async move {
                    api.create(
                        &PostParams::default(),
                        &random_rotation(&format!("{prefix}{i}")),
                    )
                    .await
                    .map(|_| ())
                }
            },
        )
        .await;
    took
}

/// How long a phase over `n` resources may take before the bench gives up on it.
fn deadline(n: usize) -> Duration {
    Duration::from_secs(300 + n as u64 / 5)
}

/// Who watches a floor run while it writes (the order of the 5-write rates).
#[derive(Clone, Copy)]
enum Watched {
    Nobody,
    /// [`controller_like_watches`].
    Controller,
}

/// One floor run: 5 writes or 3 (or the trigger and 5), who watches, the tag of its
/// Secrets' names (each run its own), its row's text and its key in the results.
#[derive(Clone, Copy)]
struct FloorRun {
    five: bool,
    /// Sent as rotor's ServiceAccount (token, RBAC, queued at workload-low) instead of
    /// the bench's admin (a static token in system:masters, exempt).
    as_rotor: bool,
    /// First the merge patch that asks for a rotation, as the steady state's bench
    /// sends (a write to the resource itself, which every watcher is sent).
    trigger: bool,
    /// The cold start's like: the read of the absent target first, rotor's own bodies
    /// (a [`Sample`]).
    like: bool,
    watched: Watched,
    tag: &'static str,
    what: &'static str,
    key: &'static str,
}

/// In this order: the watches, once open, stay open until a run that nobody watches.
/// Each run writes SecretRotations created just before it, and what it wrote is
/// deleted after it (see `clear`). The bare floor is measured first and last (the last
/// 4–8 % below the first since runs clear up after themselves; 5–19 % before), so the
/// better of the two is the floor — the most the API server takes — and the last,
/// adjacent in time to rotor's phases, is reported beside it. The run as rotor's
/// ServiceAccount says what an installed controller's identity costs (token,
/// RBAC, priority and fairness) against the bench's exempt admin. The cold start's
/// like does what rotor does for each resource at its cold start, with rotor's
/// identity, under those watches, with rotor's own bodies ([`sample_rotation`]).
const FLOOR_RUNS: [FloorRun; 7] = [
    FloorRun {
        five: true,
        as_rotor: false,
        watched: Watched::Nobody,
        trigger: false,
        like: false,
        tag: "f5",
        what: "5 writes: status, escrow, target, status, Event",
        key: "writes_5",
    },
    FloorRun {
        five: true,
        as_rotor: true,
        watched: Watched::Nobody,
        trigger: false,
        like: false,
        tag: "f5r",
        what: "5 writes as rotor's ServiceAccount (workload-low)",
        key: "writes_5_as_rotor_service_account",
    },
    FloorRun {
        five: false,
        as_rotor: false,
        watched: Watched::Nobody,
        trigger: false,
        like: false,
        tag: "f3",
        what: "3 writes: target, status, Event",
        key: "writes_3",
    },
    FloorRun {
        five: true,
        as_rotor: false,
        watched: Watched::Controller,
        trigger: false,
        like: false,
        tag: "f5c",
        what: "5 writes under a controller's two watches",
        key: "writes_5_under_controller_watches",
    },
    FloorRun {
        five: true,
        as_rotor: false,
        trigger: true,
        like: false,
        watched: Watched::Controller,
        tag: "f6c",
        what: "a second rotation: the trigger (annotation) and 5 writes to existing objects, those watches",
        key: "writes_6_trigger_under_controller_watches",
    },
    FloorRun {
        five: true,
        as_rotor: true,
        watched: Watched::Controller,
        trigger: false,
        like: true,
        tag: "f5l",
        what: "the cold start's like: rotor's ServiceAccount, those watches, the read of the absent target, 5 writes of rotor's bodies",
        key: "writes_5_cold_start_like",
    },
    FloorRun {
        five: true,
        as_rotor: false,
        watched: Watched::Nobody,
        trigger: false,
        like: false,
        tag: "f5b",
        what: "5 writes again, nobody watching (the better of the two is the floor)",
        key: "writes_5_again",
    },
];

/// The two watches a controller of the floor's resources holds, as rotor does: every
/// SecretRotation of `ns` (whole objects) and the metadata of its labelled Secrets but
/// the escrows. Their events are read and dropped; abort the tasks to end them. Each
/// sends its index (0, 1) on `listed` when a list is in.
fn controller_like_watches(
    client: &Client,
    ns: &str,
    listed: &tokio::sync::mpsc::UnboundedSender<usize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rotations: Api<SecretRotation> = Api::namespaced(client.clone(), ns);
    let secrets: Api<kube::core::PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
    let targets = watcher::Config::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},!{}",
        rotor::vault::VAULT_LABEL
    ));
    vec![
        drain(watcher(rotations, watcher::Config::default()), 0, listed),
        drain(watcher(secrets, targets), 1, listed),
    ]
}

/// Reads a watch's events and drops them, sending `index` on `listed` at each list's
/// end.
fn drain<K: Send + 'static>(
    events: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    index: usize,
    listed: &tokio::sync::mpsc::UnboundedSender<usize>,
) -> tokio::task::JoinHandle<()> {
    let listed = listed.clone();
    tokio::spawn(async move {
        let mut events = events.default_backoff().boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::InitDone) = event {
                let _ = listed.send(index);
            }
        }
    })
}

/// What one floor rotation does.
#[derive(Clone, Default)]
struct Shape {
    /// Status intent, vault Secret, target Secret, status result, Event; else target
    /// Secret, status result, Event.
    five: bool,
    /// A second rotation, as the steady state's are: first its `rotor.dev/rotate`
    /// merge patch, then the same writes to the objects a first rotation (this
    /// function without `trigger`, before the clock) left: the vault updated by a
    /// merge patch, the target Secret applied over itself.
    trigger: bool,
    /// The cold start's like: first the read of the target Secret (absent), as rotor
    /// reads it before a first rotation, then the 5 writes with rotor's own bodies.
    like: Option<Arc<Sample>>,
}

/// What rotor writes at one first rotation, as the API server holds it: the intent
/// and the result status (each as its write left it, seen through a watch), the
/// escrow and the target Secret.
struct Sample {
    intent: Value,
    result: Value,
    escrow: Secret,
    target: Secret,
}

impl Sample {
    /// `written` (the sample's escrow or target Secret) as `name`'s: its labels,
    /// annotations, owner references (their uid the sample's: the API server does not
    /// check it, and no garbage collector runs here) and type, the same keys with
    /// random values of the same lengths.
    fn secret_like(written: &Secret, name: String) -> Secret {
        let meta = &written.metadata;
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                labels: meta.labels.clone(),
                annotations: meta.annotations.clone(),
                owner_references: meta.owner_references.clone(),
                ..Default::default()
            },
            type_: written.type_.clone(),
            data: written.data.as_ref().map(|data| {
                data.iter()
                    .map(|(k, v)| (k.clone(), random_bytes(v.0.len())))
                    .collect()
            }),
            ..Default::default()
        }
    }
}

/// One floor rotation: what a crash-safe rotation must write, by a bare client, in
/// the `shape` given. `tag` names its Secrets (a run's vaults are created: each run
/// its own tag).
async fn floor_rotation(
    client: Client,
    ns: String,
    i: usize,
    Shape {
        five,
        trigger,
        like,
    }: Shape,
    tag: &'static str,
) -> kube::Result<()> {
    let name = format!("f{i}");
    let apply = PatchParams::apply("rotor-bench").force();
    let rotations: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client, &ns);
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let status = |status: Value| json!({"apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation", "status": status});
    if trigger {
        let ask = json!({"metadata": {"annotations": {"rotor.dev/rotate": tag}}});
        rotations
            .patch(&name, &PatchParams::default(), &Patch::Merge(&ask))
            .await?;
    }
    if like.is_some() {
        secrets.get_opt(&format!("{tag}-{i}-secret")).await?;
    }
    let escrow = format!("rotor-escrow-{tag}-{i}");
    let target_name = format!("{tag}-{i}-secret");
    let condition = |kind: &str, value: &str, reason: &str| {
        json!({"type": kind, "status": value, "reason": reason, "message": format!("{reason} (bench)"),
               "lastTransitionTime": now, "observedGeneration": 1})
    };
    let slot = |index: u8, state: &str| {
        json!({"index": index, "id": format!("rotor-bench-{tag}-{i}-{index}"),
               "fingerprint": "sha256:0123456789abcdef", "issuedAt": now, "state": state})
    };
    if five {
        let intent = |active: u8, target: u8, ready: &str| {
            json!({
                "rotationStatus": "Rotating", "provider": "random", "strategy": "dualPhase",
                "activeIndex": active, "lastRotationAttemptedAt": now,
                "lastRotationMessage": "rotating", "observedGeneration": 1,
                "inFlight": {"targetIndex": target, "credentialName": format!("rotor-bench-{tag}-{i}-{target}"),
                             "trigger": "initial", "startedAt": now},
                "conditions": [condition("Ready", ready, "Rotating"),
                               condition("Progressing", "True", "Rotating")],
            })
        };
        let intent = if let Some(sample) = &like {
            status(sample.intent.clone())
        } else if trigger {
            // A second rotation's intent keeps what the first left (rotor applies its
            // whole status each time).
            let mut second = intent(1, 0, "True");
            second["rotationCount"] = json!(1);
            second["slots"] = json!([slot(1, "active")]);
            status(second)
        } else {
            status(intent(0, 1, "False"))
        };
        rotations
            .patch_status(&name, &apply, &Patch::Apply(&intent))
            .await?;
        // The escrow: ~1.8 KB like rotor's (two sealed entries and the audit trail).
        let vault = if let Some(sample) = &like {
            Sample::secret_like(&sample.escrow, escrow.clone())
        } else {
            Secret {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(escrow.clone()),
                    labels: Some(
                        [
                            (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
                            (rotor::vault::VAULT_LABEL.to_string(), "true".to_string()),
                        ]
                        .into(),
                    ),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("e0".to_string(), random_bytes(700)),
                        ("e1".to_string(), random_bytes(700)),
                        ("audit".to_string(), random_bytes(400)),
                    ]
                    .into(),
                ),
                ..Default::default()
            }
        };
        if trigger {
            let data = json!({"data": vault.data});
            secrets
                .patch(&escrow, &PatchParams::default(), &Patch::Merge(&data))
                .await?;
        } else {
            secrets.create(&PostParams::default(), &vault).await?;
        }
    }
    let target = match &like {
        // (k8s-openapi writes apiVersion and kind.)
        Some(sample) => {
            serde_json::to_value(Sample::secret_like(&sample.target, target_name.clone()))
                .unwrap_or_default()
        }
        None => json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": target_name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "type": "Opaque",
            "data": {"TOKEN": random_token(), "TOKEN_PREVIOUS": random_token()},
        }),
    };
    secrets
        .patch(&target_name, &apply, &Patch::Apply(&target))
        .await?;
    let (active, count, slots) = if trigger {
        (0, 2, vec![slot(0, "active"), slot(1, "previous")])
    } else {
        (1, 1, vec![slot(1, "active")])
    };
    let result = like.map_or_else(
        || {
            status(json!({
                "rotationStatus": "Success", "provider": "random", "strategy": "dualPhase",
                "activeIndex": active, "rotationCount": count, "failedAttempts": 0,
                "lastRotatedAt": now, "lastRotationAttemptedAt": now,
                "lastRotationMessage": "rotated", "nextRotationAt": now,
                "slots": slots,
                "escrow": {"entries": count}, "targetSecret": format!("{tag}-{i}-secret"),
                "observedGeneration": 1,
                "conditions": [condition("Ready", "True", "Rotated"),
                               condition("Progressing", "False", "Idle"),
                               condition("Degraded", "False", "Healthy")],
            }))
        },
        |sample| status(sample.result.clone()),
    );
    rotations
        .patch_status(&name, &apply, &Patch::Apply(&result))
        .await?;
    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name}-")},
        "eventTime": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "reportingController": "rotor.dev/bench",
        "reportingInstance": "rotor-bench",
        "action": "Rotate",
        "reason": "Rotated",
        "type": "Normal",
        "note": format!("rotated {name}: slot 1 active"),
        "regarding": {"apiVersion": "rotor.dev/v1alpha1", "kind": "SecretRotation",
                      "name": name, "namespace": ns},
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// The run

/// [`controller_like_watches`] on `ns`, once both have listed (or `deadline(n)` has
/// passed, said).
async fn open_controller_watches(
    client: &Client,
    ns: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, mut listed) = tokio::sync::mpsc::unbounded_channel();
    let watches = controller_like_watches(client, ns, &tx);
    let both = async {
        // Each watch's first list (a re-list says so again).
        let mut seen = [false; 2];
        while seen != [true; 2] {
            match listed.recv().await {
                Some(i) => seen[i] = true,
                None => break,
            }
        }
    };
    if tokio::time::timeout(deadline(n), both).await.is_err() {
        println!(
            "    the controller's watches did not list within {:?}",
            deadline(n)
        );
    }
    watches
}

/// One timed floor run of `n` rotations in `ns` (SecretRotations `f0`… there, the
/// watches `run` names open) by `who`, on a settled control plane: its rate, printed
/// as a row, and its results entry.
async fn measure_floor(
    bench: &Bench,
    who: &Client,
    ns: &str,
    n: usize,
    run: &FloorRun,
    like: Option<Arc<Sample>>,
) -> (f64, Value) {
    let client = &bench.client;
    let shape = Shape {
        five: run.five,
        trigger: run.trigger,
        like,
    };
    let writes = match (run.five, run.trigger) {
        (true, true) => 6,
        (true, false) => 5,
        _ => 3,
    };
    settle(client).await;
    let plane_before = control_plane_cpu();
    let server_before = apiserver_counts(&apiserver_metrics(client).await);
    let profile = pprof(client, run.tag, Duration::from_secs(2), 6);
    let (took, failed) = bench
        .run_all(
            &format!("{writes}-write floor"),
            n,
            bench.concurrency,
            deadline(n),
            |i| floor_rotation(who.clone(), ns.to_string(), i, shape.clone(), run.tag),
        )
        .await;
    let rate = (n - failed) as f64 / took.as_secs_f64();
    let plane_ms = 1e3 * (control_plane_cpu() - plane_before) / n as f64;
    let server_after = apiserver_counts(&apiserver_metrics(client).await);
    // (After the run's numbers: a profile outlasting a short run adds nothing to
    // them; the next run starts once it is over.)
    if let Some(profile) = profile {
        let _ = profile.await;
    }
    row(
        run.what,
        format!(
            "{:.1} s, {rate:.0} rotations/s ({:.0} writes/s), API server + etcd {plane_ms:.1} ms CPU each{}",
            took.as_secs_f64(),
            rate * writes as f64,
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        ),
    );
    let measured = json!({"seconds": round(took.as_secs_f64(), 2), "rotations_per_s": round(rate, 1),
               "failed": failed, "apiserver_and_etcd_cpu_ms_per_rotation": round(plane_ms, 2),
               "apiserver_profile": apiserver_profile(&server_before, &server_after, n as f64)});
    (rate, measured)
}

async fn operator_at_scale(results: &mut Map<String, Value>) {
    let n = env_usize("ROTOR_BENCH_RESOURCES", 2000);
    let concurrency = env_usize("ROTOR_BENCH_CONCURRENCY", 16).max(1);
    let idle = Duration::from_secs(env_usize("ROTOR_BENCH_IDLE_SECONDS", 60) as u64);
    let foreign = env_usize("ROTOR_BENCH_FOREIGN_SECRETS", 10_000);
    let burst = env_usize("ROTOR_BENCH_BURST", 2000);
    let run_started = Utc::now();

    let own = Arc::new(Mutex::new(Counts::new()));
    let client = counted_client(own.clone()).await;
    let bench = Bench {
        client: client.clone(),
        own,
        concurrency,
    };
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "\noperator at scale: kube-apiserver {version} + etcd on loopback, random provider, N = {n}, concurrency {concurrency}"
    );
    results.insert(
        "setup".into(),
        json!({
            "date": run_started.to_rfc3339_opts(SecondsFormat::Secs, true),
            "commit": git_commit(),
            "machine": machine(),
            "kube_apiserver": version,
            "apiserver_priority_and_fairness": "enabled (the API server's defaults)",
            "rotor_identity": "ServiceAccount with config/rbac's ClusterRole and Role",
            "resources": n,
            "concurrency": concurrency,
            "idle_seconds": idle.as_secs(),
            "foreign_secrets": foreign,
            "burst_resources": burst,
            "rotor_log_level": "info",
        }),
    );

    // Unrelated Secrets first, so that rotor starts into a cluster that has them (in a
    // namespace it watches: its Secret watch must not hold them).
    let foreign_ns = namespace(&client, "bench-foreign").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &foreign_ns);
    let (took, _) = bench
        .run_all(
            &format!("creating {foreign} foreign Secrets"),
            foreign,
            32,
            deadline(foreign),
            |i| {
                let secrets = secrets.clone();
                async move {
                    let secret = Secret {
                        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                            name: Some(format!("foreign-{i}")),
                            labels: Some([("app".to_string(), "not-rotor".to_string())].into()),
                            ..Default::default()
                        },
                        data: Some([("blob".to_string(), random_bytes(3072))].into()),
                        ..Default::default()
                    };
                    secrets
                        .create(&PostParams::default(), &secret)
                        .await
                        .map(|_| ())
                }
            },
        )
        .await;
    row(
        &format!("{foreign} foreign 3 KiB Secrets created (32 in flight)"),
        format!(
            "{:.1} s ({:.0}/s)",
            took.as_secs_f64(),
            foreign as f64 / took.as_secs_f64()
        ),
    );
    results.insert(
        "foreign_secrets".into(),
        json!({"count": foreign, "create_seconds": round(took.as_secs_f64(), 2)}),
    );

    // rotor's identity, as an install gives it: a ServiceAccount bound to the RBAC in
    // config/rbac, its home (the KEK, the Lease) a namespace of its own.
    let home = namespace(&client, "bench-home").await;
    let kubeconfig = rbac_kubeconfig(&client, &home).await;
    let identity = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("POD_NAMESPACE", home.as_str()),
    ];

    // 1. The floor (ROTOR_BENCH_FLOOR=0 skips it, for profiling runs: no ratios then).
    println!("\n1. floor: a bare client, {n} rotations, {concurrency} at once");
    let floor_ns = namespace(&client, "bench-floor").await;
    // Bare (nobody watching: the issue's floor), then under the two watches any
    // controller of these resources holds, as rotor does — every SecretRotation
    // (whole objects) and the metadata of the target Secrets — so that what is left
    // between it and rotor is rotor's own. The last sends the steady state's trigger
    // first: the merge patch that asks for a rotation writes the resource, and every
    // watcher is sent it — work the steady state pays that the 5-write floors do not.
    // (The phases with rotor run under no watch of the bench's: see Progress.)
    // ROTOR_BENCH_PPROF=<dir> profiles the API server and etcd in each run and phase.
    let floors: &[FloorRun] = if env_usize("ROTOR_BENCH_FLOOR", 1) == 0 {
        &[]
    } else {
        &FLOOR_RUNS
    };
    let mut floor = Map::new();
    // The 5-write floors' rates, by who watched.
    let mut floor5: [f64; 2] = [0.0; 2];
    // The last bare run: adjacent in time to the cold start (the floor falls within a
    // run as etcd fills with the floor runs' objects).
    let mut last_bare = 0.0;
    // The second-rotation floor (the trigger and 5 writes to existing objects) under a
    // controller's watches: the steady state's like.
    let mut floor6 = 0.0;
    // The cold start's like: rotor's own bodies, from one rotation of its.
    let mut floor_like = 0.0;
    let sample = if floors.is_empty() {
        None
    } else {
        sample_rotation(&bench, &identity).await.map(Arc::new)
    };
    let mut controller_watches = Vec::new();
    let rotor_client = counted_client_of(&kubeconfig, bench.own.clone()).await;
    for run in floors {
        let like = if run.like {
            match &sample {
                Some(sample) => Some(sample.clone()),
                None => continue,
            }
        } else {
            None
        };
        // Each run on SecretRotations just created, as the cold start's are.
        create_rotations(&bench, &floor_ns, "f", n).await;
        match run.watched {
            // (Started once: the runs under them come last and share them.)
            Watched::Controller if controller_watches.is_empty() => {
                controller_watches = open_controller_watches(&client, &floor_ns, n).await;
            }
            Watched::Controller => {}
            Watched::Nobody => {
                for watch in controller_watches.drain(..) {
                    watch.abort();
                }
            }
        }
        if run.trigger {
            // The first rotation, before the clock: the timed one is the second.
            let first = Shape {
                five: run.five,
                ..Shape::default()
            };
            let (_, failed) = bench
                .run_all("first rotation", n, concurrency, deadline(n), |i| {
                    floor_rotation(client.clone(), floor_ns.clone(), i, first.clone(), run.tag)
                })
                .await;
            if failed > 0 {
                println!("    {failed} first rotations failed");
            }
        }
        let who = if run.as_rotor { &rotor_client } else { &client };
        let (rate, measured) = measure_floor(&bench, who, &floor_ns, n, run, like).await;
        match (run.five, run.trigger) {
            (true, false) if run.like => floor_like = rate,
            (true, false) if !run.as_rotor => {
                let best = &mut floor5[run.watched as usize];
                *best = best.max(rate);
                if matches!(run.watched, Watched::Nobody) {
                    last_bare = rate;
                }
            }
            (true, true) => floor6 = rate,
            _ => {}
        }
        floor.insert(run.key.to_string(), measured);
        // What the run wrote goes before the next run: otherwise every later run, and
        // rotor's phases, would be measured on an API server that the floor itself
        // has made slower (see `clear`).
        clear(&client, &floor_ns).await;
    }
    for watch in controller_watches {
        watch.abort();
    }
    if floor5[0] > 0.0 {
        row(
            "the 5-write floor (the better bare run)",
            format!("{:.0} rotations/s", floor5[0]),
        );
    }
    floor.insert(
        "writes_5_best_rotations_per_s".into(),
        json!((floor5[0] > 0.0).then(|| round(floor5[0], 1))),
    );
    floor.insert(
        "writes_5_last_rotations_per_s".into(),
        json!((last_bare > 0.0).then(|| round(last_bare, 1))),
    );
    results.insert("floor".into(), Value::Object(floor));
    let ratio = |rate: f64| {
        let of = |floor: f64| {
            if floor > 0.0 {
                100.0 * rate / floor
            } else {
                0.0
            }
        };
        (of(floor5[0]), of(floor5[1]), of(last_bare))
    };

    // 2. Cold start.
    println!("\n2. cold start: {n} SecretRotations exist, rotor starts");
    let cold_ns = namespace(&client, "bench-cold").await;
    create_rotations(&bench, &cold_ns, "r", n).await;
    settle(&client).await;
    let before = bench.mark(None).await;
    let started = Instant::now();
    let conc = concurrency.to_string();
    // info, rotor's default: debug lines are not what production pays for.
    let op = Operator::start_env(
        &format!("{cold_ns},{foreign_ns}"),
        &["--concurrency", &conc],
        &[("ROTOR_LOG", "info"), identity[0], identity[1]],
    );
    let progress = Progress::follow(&client, &cold_ns, &op);
    let series = RssSeries::start(op.pid, progress.clone());
    let profile = pprof(&client, "cold", Duration::from_secs(4), 6);
    let cold = progress
        .wait_logged("cold start", n, 0, started, deadline(n), &op)
        .await;
    let after_cold = bench.mark(Some(&op)).await;
    if let Some(profile) = profile {
        let _ = profile.await;
    }
    let (cold, failed) = progress
        .confirm("cold start", (n, 1), cold, (started, deadline(n)), &op)
        .await;
    dump_object(&client, &cold_ns, "r0", "cold").await;
    let mut phase = phase_summary(
        "cold start (operator start to last first rotation)",
        n,
        cold,
        ratio,
    );
    against_like(
        &mut phase,
        (n, cold, floor_like),
        "cold start against its like",
        "a bare client doing the cold start's work with rotor's bodies, identity and watches",
        "ratio_to_like_floor_percent",
    );
    phase.insert(
        "requests".into(),
        report("cold start", &before, &after_cold, n as f64, "rotation"),
    );
    let (peak_cold, _) = memory(op.pid);
    phase.insert("failed_resources".into(), json!(failed));
    results.insert("cold_start".into(), Value::Object(phase));

    // 3. Idle: every resource rotated, the next rotation 30 days away.
    println!(
        "\n3. idle: {n} resources, nothing due, {} s",
        idle.as_secs()
    );
    series.phase("idle");
    // From here: the cold start's confirming LIST is over.
    let idle_from = bench.mark(Some(&op)).await;
    let idle_started = Instant::now();
    while idle_started.elapsed() < idle {
        let left = idle.saturating_sub(idle_started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(30))).await;
        if !left.is_zero() && idle_started.elapsed() < idle {
            println!("    idle: {:.0} s", idle_started.elapsed().as_secs_f64());
        }
    }
    let after_idle = bench.mark(Some(&op)).await;
    let seconds = after_idle.at.duration_since(idle_from.at).as_secs_f64();
    let cpu = after_idle.operator_cpu - idle_from.operator_cpu;
    let requests = match (&idle_from.rotor, &after_idle.rotor) {
        (Some(b), Some(a)) => Some(delta(a, b).values().sum::<f64>() + 0.0),
        _ => None,
    };
    row(
        "rotor CPU while idle",
        format!(
            "{:.2} % of one core ({cpu:.2} s in {seconds:.0} s)",
            100.0 * cpu / seconds
        ),
    );
    row(
        "rotor requests while idle",
        requests.map_or("n/a (no rotor_kube_requests_total)".into(), |r| {
            format!("{:.2}/s ({r:.0} in {seconds:.0} s)", r / seconds)
        }),
    );
    let (peak_idle, rss_idle) = memory(op.pid);
    let idle_report = report("idle", &idle_from, &after_idle, seconds, "second");
    results.insert(
        "idle".into(),
        json!({
            "seconds": round(seconds, 1),
            "rotor_cpu_percent_of_one_core": round(100.0 * cpu / seconds, 3),
            "rotor_requests_per_s": requests.map(|r| round(r / seconds, 3)),
            "requests": idle_report,
        }),
    );

    // 4. Steady state: every resource asked to rotate at once.
    println!("\n4. steady state: all {n} annotated rotor.dev/rotate at once");
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &cold_ns);
    series.phase("steady");
    settle(&client).await;
    let token = format!("bench-{}", Utc::now().timestamp());
    let base = progress.rotated();
    let started = Instant::now();
    let profile = pprof(&client, "steady", Duration::from_secs(6), 6);
    let (requested, _) = bench
        .run_all("annotating", n, concurrency, deadline(n), |i| {
            let (api, token) = (api.clone(), token.clone());
            async move {
                api.patch(
                    &format!("r{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"rotor.dev/rotate": token}}}),
                    ),
                )
                .await
                .map(|_| ())
            }
        })
        .await;
    row(
        "annotations written",
        format!("{:.1} s", requested.as_secs_f64()),
    );
    let steady = progress
        .wait_logged("steady state", n, base, started, deadline(n), &op)
        .await;
    // At rest, before the mark's /metrics scrape (whose text is megabytes at scale).
    let (_, rss_before_scrape) = memory(op.pid);
    let after_steady = bench.mark(Some(&op)).await;
    let (_, rss_after_scrape) = memory(op.pid);
    if let Some(profile) = profile {
        let _ = profile.await;
    }
    let (steady, failed) = progress
        .confirm("steady state", (n, 2), steady, (started, deadline(n)), &op)
        .await;
    dump_object(&client, &cold_ns, "r0", "steady").await;
    let mut phase = phase_summary(
        "steady state (first annotation to last rotation)",
        n,
        steady,
        ratio,
    );
    against_like(
        &mut phase,
        (n, steady, floor6),
        "steady state against its like",
        "a bare client's second rotation (the trigger and 5 writes to existing objects) under a controller's watches",
        "ratio_to_trigger_floor_percent",
    );
    phase.insert(
        "annotate_seconds".into(),
        json!(round(requested.as_secs_f64(), 2)),
    );
    phase.insert(
        "requests".into(),
        report(
            "steady state",
            &after_idle,
            &after_steady,
            n as f64,
            "rotation",
        ),
    );
    phase.insert("failed_resources".into(), json!(failed));
    results.insert("steady_state".into(), Value::Object(phase));

    // 5. Memory, over all of the above.
    println!("\n5. memory: rotor with {n} resources, {foreign} foreign Secrets watched");
    series.phase("end");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(series);
    let (peak, rss_end) = memory(op.pid);
    row(
        "peak RSS after the cold start",
        format!("{peak_cold:.1} MiB"),
    );
    row("peak RSS after idle", format!("{peak_idle:.1} MiB"));
    row("RSS after idle", format!("{rss_idle:.1} MiB"));
    row("peak RSS after the steady state", format!("{peak:.1} MiB"));
    row("RSS now", format!("{rss_end:.1} MiB"));
    row(
        "RSS before / after the last /metrics scrape",
        format!("{rss_before_scrape:.1} / {rss_after_scrape:.1} MiB"),
    );
    // To look into rotor at its peak (gdb, curl its /metrics): it waits this long.
    let hold = env_usize("ROTOR_BENCH_HOLD_SECONDS", 0);
    if hold > 0 {
        println!(
            "    holding rotor (pid {}, {}) for {hold} s",
            op.pid, op.admin_url
        );
        tokio::time::sleep(Duration::from_secs(hold as u64)).await;
    }
    let vault = vault_cost(&client, &cold_ns).await;
    results.insert(
        "memory".into(),
        json!({
            "peak_rss_mib_after_cold_start": round(peak_cold, 1),
            "peak_rss_mib_after_idle": round(peak_idle, 1),
            "rss_mib_after_idle": round(rss_idle, 1),
            "peak_rss_mib": round(peak, 1),
            "rss_mib_end": round(rss_end, 1),
            "rss_mib_before_last_scrape": round(rss_before_scrape, 1),
            "rss_mib_after_last_scrape": round(rss_after_scrape, 1),
        }),
    );
    results.insert("vault".into(), vault);
    results.insert("operator_429_log_lines".into(), json!(logged_429s(&op)));
    op.stop().await;

    // 6. Burst.
    results.insert(
        "burst".into(),
        burst_phase(&bench, burst, ratio, &identity).await,
    );

    // The cluster at the end.
    let text = apiserver_metrics(&client).await;
    // (etcd_object_counts is left out: on 1.20 it is refreshed once a minute and read
    // 0 for Secrets in a trial run.)
    let mut etcd = Map::new();
    for line in text.lines() {
        if let Some(("etcd_db_total_size_in_bytes", _, v)) = parse_sample(line) {
            etcd.insert("db_total_size_mib".into(), json!(round(v / 1048576.0, 1)));
        }
    }
    println!("\netcd at the end");
    for (k, v) in &etcd {
        row(k, v.to_string());
    }
    results.insert("etcd_end".into(), Value::Object(etcd));

    // Priority and Fairness over the whole run: rotor's ServiceAccount is served at
    // workload-low (flow schema service-accounts), the bench's admin as exempt.
    let mut levels: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, v)) = parse_sample(line) else {
            continue;
        };
        let slot = match name {
            "apiserver_flowcontrol_dispatched_requests_total" => 0,
            "apiserver_flowcontrol_rejected_requests_total" => 1,
            _ => continue,
        };
        let key = format!(
            "{}/{}",
            labels.get("priority_level").map_or("?", String::as_str),
            labels.get("flow_schema").map_or("?", String::as_str)
        );
        let entry = levels.entry(key).or_default();
        if slot == 0 {
            entry.0 += v;
        } else {
            entry.1 += v;
        }
    }
    println!("\nAPI Priority and Fairness over the run (priority level/flow schema)");
    let mut flow = Map::new();
    for (key, (dispatched, rejected)) in &levels {
        row(
            key,
            format!("{dispatched:.0} dispatched, {rejected:.0} rejected"),
        );
        flow.insert(
            key.clone(),
            json!({"dispatched": dispatched, "rejected": rejected}),
        );
    }
    results.insert("priority_and_fairness".into(), Value::Object(flow));
}

/// A phase's rate (`n` rotations in `took`) against its like's (`like`: a bare client
/// doing the phase's own work), printed as `what` ("N % of `of`") and kept in `phase`
/// under `key`; nothing when the phase did not complete or the like was not run.
fn against_like(
    phase: &mut Map<String, Value>,
    (n, took, like): (usize, Option<Duration>, f64),
    what: &str,
    of: &str,
    key: &str,
) {
    let (Some(took), true) = (took, like > 0.0) else {
        return;
    };
    let percent = 100.0 * n as f64 / took.as_secs_f64() / like;
    row(what, format!("{percent:.0} % of {of}"));
    phase.insert(key.into(), json!(round(percent, 1)));
}

/// Time and rate of a phase that rotated `n` resources, printed; the start of its
/// results entry.
fn phase_summary(
    what: &str,
    n: usize,
    took: Option<Duration>,
    ratio: impl Fn(f64) -> (f64, f64, f64),
) -> Map<String, Value> {
    let mut phase = Map::new();
    match took {
        Some(took) => {
            let rate = n as f64 / took.as_secs_f64();
            let (bare, controller, last) = ratio(rate);
            row(
                what,
                format!(
                    "{:.1} s, {rate:.1} rotations/s = {bare:.0} % of the 5-write floor ({last:.0} % of its last bare run; {controller:.0} % of it under a controller's watches)",
                    took.as_secs_f64(),
                ),
            );
            phase.insert("seconds".into(), json!(round(took.as_secs_f64(), 2)));
            phase.insert("rotations_per_s".into(), json!(round(rate, 1)));
            phase.insert("ratio_to_floor_percent".into(), json!(round(bare, 1)));
            phase.insert(
                "ratio_to_last_bare_floor_percent".into(),
                json!(round(last, 1)),
            );
            phase.insert(
                "ratio_to_floor_under_controller_watches_percent".into(),
                json!(round(controller, 1)),
            );
        }
        None => {
            row(what, "did not complete".into());
            phase.insert("timed_out".into(), json!(true));
        }
    }
    phase
}

/// A kubeconfig for a ServiceAccount `rotor` in `home` bound to config/rbac's roles
/// (their `rotor-system` read as `home`), with a token from the TokenRequest API.
async fn rbac_kubeconfig(client: &Client, home: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rbac");
    let mut yaml = String::new();
    for file in ["service_account.yaml", "role.yaml", "self_role.yaml"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        yaml.push_str(&text.replace("rotor-system", home));
        yaml.push_str("\n---\n");
    }
    apply_yaml(client, home, &yaml).await.expect("config/rbac");
    support::service_account_kubeconfig(client, home, "rotor").await
}

/// What the escrow Secrets of `ns` hold: count, data bytes, stored object size.
async fn vault_cost(client: &Client, ns: &str) -> Value {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let list = secrets
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let vaults: Vec<&Secret> = list
        .iter()
        .filter(|s| s.name_any().starts_with(rotor::vault::VAULT_PREFIX))
        .collect();
    let data: usize = vaults
        .iter()
        .flat_map(|s| s.data.iter().flatten())
        .map(|(k, v)| k.len() + v.0.len())
        .sum();
    let object: usize = vaults
        .iter()
        .map(|s| serde_json::to_vec(s).map_or(0, |v| v.len()))
        .sum();
    let count = vaults.len().max(1) as f64;
    row(
        "escrow Secrets",
        format!(
            "{} of {:.0} bytes of data, {:.0} bytes as JSON objects (mean)",
            vaults.len(),
            data as f64 / count,
            object as f64 / count
        ),
    );
    json!({
        "secrets": vaults.len(),
        "mean_data_bytes": round(data as f64 / count, 0),
        "mean_json_object_bytes": round(object as f64 / count, 0),
        "total_json_mib": round(object as f64 / 1048576.0, 2),
    })
}

/// `b` resources whose next rotation falls on the same minute, rotor's own operator.
async fn burst_phase(
    bench: &Bench,
    b: usize,
    ratio: impl Fn(f64) -> (f64, f64, f64),
    identity: &[(&str, &str); 2],
) -> Value {
    println!("\n6. burst: {b} resources due at the same minute (rotateAtUtc)");
    let client = &bench.client;
    let ns = namespace(client, "bench-burst").await;
    let created = create_rotations(bench, &ns, "b", b).await;
    let start = bench.mark(None).await;
    let started = Instant::now();
    let conc = bench.concurrency.to_string();
    let op = Operator::start_env(
        &ns,
        &["--concurrency", &conc],
        &[("ROTOR_LOG", "info"), identity[0], identity[1]],
    );
    let progress = Progress::follow(client, &ns, &op);
    let first = progress
        .wait_logged("burst: first rotations", b, 0, started, deadline(b), &op)
        .await;
    let (first, _) = progress
        .confirm(
            "burst: first rotations",
            (b, 1),
            first,
            (started, deadline(b)),
            &op,
        )
        .await;
    row(
        "first rotation of all (set-up)",
        first.map_or("did not complete".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        }),
    );

    // Every resource has rotated once, so a 10 s interval has elapsed for all by the
    // chosen minute: each is due exactly at that rotateAtUtc. The minute is far enough
    // ahead for the schedule patches (they cost about what the creates did) to land.
    let margin = created * 2 + Duration::from_secs(30);
    let earliest = Utc::now() + chrono::Duration::from_std(margin).unwrap();
    let due = chrono::DateTime::from_timestamp((earliest.timestamp() / 60 + 1) * 60, 0).unwrap();
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), &ns);
    let schedule = json!({"spec": {"schedule": {
        "rotationInterval": "10s",
        "rotateAtUtc": {"hours": due.hour(), "minutes": due.minute()},
    }}});
    let (patched, _) = bench
        .run_all("scheduling", b, bench.concurrency, deadline(b), |i| {
            let (api, schedule) = (api.clone(), schedule.clone());
            async move {
                api.patch(
                    &format!("b{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&schedule),
                )
                .await
                .map(|_| ())
            }
        })
        .await;
    // Settled for the minute, not for the set-up before it. rotor is at rest by now
    // (its first rotations done, the patches' reconciles a status write each): no
    // paged LIST of its is in flight (those come at start and after a lost watch).
    settle(client).await;
    let until_due = (due - Utc::now()).to_std().unwrap_or_default();
    row(
        &format!(
            "schedule patched (rotateAtUtc {:02}:{:02})",
            due.hour(),
            due.minute()
        ),
        format!(
            "{:.1} s; {:.0} s before the minute",
            patched.as_secs_f64(),
            until_due.as_secs_f64()
        ),
    );
    if until_due < Duration::from_secs(5) {
        println!("    note: the patches ran late; some resources were due before all were patched");
    }
    // The mark just before the minute, after the patches' own reconciles.
    tokio::time::sleep(until_due.saturating_sub(Duration::from_secs(1))).await;
    let before = bench.mark(Some(&op)).await;
    let due_at = Instant::now() + (due - Utc::now()).to_std().unwrap_or_default();
    let base = progress.rotated();
    tokio::time::sleep_until(due_at.into()).await;
    let took = progress
        .wait_logged("burst", b, base, due_at, deadline(b), &op)
        .await;
    let after = bench.mark(Some(&op)).await;
    let (took, failed) = progress
        .confirm("burst", (b, 2), took, (due_at, deadline(b)), &op)
        .await;
    let mut phase = phase_summary("burst (the minute to the last rotation)", b, took, ratio);
    phase.insert(
        "first_rotation_seconds".into(),
        json!(first.map(|d| round(d.as_secs_f64(), 2))),
    );
    phase.insert(
        "requests".into(),
        report("burst", &before, &after, b as f64, "rotation"),
    );
    let failed_text = failed.map_or("unknown (the LIST failed)".into(), |f| f.to_string());
    let too_many = after.apiserver.too_many - start.apiserver.too_many;
    let logged = logged_429s(&op);
    let reconcile_errors = after.rotor_errors;
    row(
        "resources that report a failure",
        format!("{failed_text} (reconcile errors since start: {reconcile_errors:.0})"),
    );
    row(
        "429s: API server's count | lines in rotor's log",
        format!("{too_many:.0} | {logged}"),
    );
    let (peak, _) = memory(op.pid);
    row("rotor peak RSS", format!("{peak:.1} MiB"));
    phase.insert("failed_resources".into(), json!(failed));
    phase.insert("reconcile_errors".into(), json!(reconcile_errors));
    phase.insert("apiserver_429s".into(), json!(too_many));
    phase.insert("operator_429_log_lines".into(), json!(logged));
    phase.insert("peak_rss_mib".into(), json!(round(peak, 1)));
    phase.insert(
        "due_at".into(),
        json!(due.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    op.stop().await;
    Value::Object(phase)
}

fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit
    } else {
        format!("{commit}-dirty")
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown")
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kib: f64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    row(
        "machine",
        format!("{cpus} CPUs, {model}, {:.1} GiB RAM", ram_kib / 1048576.0),
    );
    json!({"nproc": cpus, "cpu_model": model, "ram_gib": round(ram_kib / 1048576.0, 1)})
}
