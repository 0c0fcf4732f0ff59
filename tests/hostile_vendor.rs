//! A hostile or broken vendor against the real API server and the real operator
//! process: rate-limit headers that ask for forever, endless bodies, calls that never
//! end, ids that are IP literals, sweeps that must not touch a neighbour's tokens,
//! error texts that echo a key. The operator must stay up, say what happened in the
//! status, reach no private address and leak nothing.

mod support;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use support::fakes;
use support::scenario::*;
use support::*;

/// A vendor that misbehaves on purpose, one route per way, on 127.0.0.1.
async fn hostile_vendor() -> String {
    async fn forever_429() -> Response {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"message": "slow down"})),
        )
            .into_response();
        let h = r.headers_mut();
        h.insert("retry-after", "inf".parse().unwrap());
        h.insert("x-ratelimit-reset", "1e300".parse().unwrap());
        r
    }
    async fn endless() -> Response {
        let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        Body::from_stream(stream).into_response()
    }
    async fn hang() -> Response {
        std::future::pending().await
    }
    async fn id_is_an_ip() -> Response {
        let key = format!("hv_{}", random(40));
        remember_issued(&key);
        // 2130706434 is 127.0.0.2 written as one number.
        Json(json!({"key": key, "id": "2130706434", "name": "x"})).into_response()
    }
    async fn short_key() -> Response {
        let key = format!("pw{}", random(7));
        remember_issued(&key);
        Json(json!({"key": key, "id": format!("id-{}", random(6))})).into_response()
    }
    async fn echo(headers: HeaderMap) -> Response {
        let key = headers
            .get("x-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("key {key} is not valid")})),
        )
            .into_response()
    }
    let router = axum::Router::new()
        .route("/forever-429", post(forever_429))
        .route("/endless", post(endless))
        .route("/hang", post(hang))
        .route("/id-is-an-ip", post(id_is_an_ip))
        .route("/short-key", post(short_key))
        .route("/echo", get(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    url
}

fn random(n: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// An http-provider SecretRotation issuing at `issue_url`, testing with `test` (a URL
/// and whether the key goes into an `x-key` header), admin token `admin`.
fn http_rotation(name: &str, issue_url: &str, test: Option<(&str, bool)>, admin: &str) -> String {
    let test = match test {
        None => String::new(),
        Some((url, key_header)) => {
            let header = if key_header {
                "\n        headers:\n          - name: x-key\n            value: \"{{key}}\""
            } else {
                ""
            };
            format!("\n      test:\n        url: \"{url}\"\n        method: GET{header}")
        }
    };
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}-admin
  annotations:
    rotor.dev/allow-read: "{name}"
stringData:
  token: "{admin}"
---
apiVersion: rotor.dev/v1alpha1
kind: SecretRotation
metadata:
  name: {name}
spec:
  provider:
    http:
      issue:
        url: "{issue_url}"
        method: POST
        headers:
          - name: Authorization
            valuePrefix: "Bearer "
            valueFrom: {{ name: {name}-admin, key: token }}
        body: '{{"name": "{{{{name}}}}"}}'
      keyPath: $.key
      idPath: $.id{test}
  revocation: {{ minValidity: 0s }}
  schedule:
    rotationInterval: 30d
  secretsMapping:
    apiKey: KEY
  target:
    name: {name}
"#
    )
}

/// The healthy neighbour: the http sample against the generic key API fake.
async fn healthy(client: &kube::Client, ns: &str) -> fakes::Fake<fakes::KeyApi> {
    let fake = fakes::key_api().await;
    apply_yaml(client, ns, &http_sample(&fake)).await.unwrap();
    fake
}

/// The operator process is alive and its /livez answers 200.
async fn assert_alive(op: &Operator) {
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(op.pid as i32, 0) } == 0;
    assert!(alive, "the operator process died:\n{}", op.logs());
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/livez", op.admin_url),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "/livez");
}

#[tokio::test]
async fn rate_limit_header_asking_for_1e300_seconds_fails_one_resource_and_crashes_nothing() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-wait").await;
    let vendor = hostile_vendor().await;
    let op = Operator::start_with(&ns, FAST);
    let fake = healthy(&client, &ns).await;
    let admin = random(24);
    let manifest = http_rotation("greedy", &format!("{vendor}/forever-429"), None, &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "greedy").await;
    assert!(
        s.last_rotation_message
            .contains("the provider asked to wait more than a year (Retry-After: inf)")
            && s.last_rotation_message
                .contains("rotor waits at most 1m (--http-max-wait)"),
        "{}",
        s.last_rotation_message
    );
    rotated(&client, &ns, "partner-api-key", 1).await;
    assert_eq!(fake.lock().creates, 1);
    rotate(&client, &ns, "partner-api-key", "again", 2).await;
    assert_alive(&op).await;
}

#[tokio::test]
async fn endless_response_body_and_a_call_that_never_ends_are_cut_off() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-body").await;
    let vendor = hostile_vendor().await;
    let flags = [FAST, &["--provider-timeout", "3s", "--http-timeout", "1h"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let fake = healthy(&client, &ns).await;
    let admin = random(24);
    for (name, path) in [("endless", "endless"), ("hanging", "hang")] {
        let manifest = http_rotation(name, &format!("{vendor}/{path}"), None, &admin);
        apply_yaml(&client, &ns, &manifest).await.unwrap();
    }
    let s = failed(&client, &ns, "endless").await;
    assert!(
        s.last_rotation_message
            .contains("response larger than 4 MiB"),
        "{}",
        s.last_rotation_message
    );
    let s = failed(&client, &ns, "hanging").await;
    assert!(
        s.last_rotation_message
            .contains("did not finish within 3s (--provider-timeout)"),
        "{}",
        s.last_rotation_message
    );
    rotated(&client, &ns, "partner-api-key", 1).await;
    assert_eq!(fake.lock().creates, 1);
    assert_alive(&op).await;
}

#[tokio::test]
async fn vendor_id_that_is_an_ip_literal_and_proxy_variables_reach_no_private_address() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-ssrf").await;
    let vendor = hostile_vendor().await;
    // The canary: 127.0.0.2 is loopback on Linux and not in the allowed block.
    let canary = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let canary_port = canary.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = canary.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    let proxy = format!("http://127.0.0.2:{canary_port}");
    let op = Operator::start_env(
        &ns,
        &[
            "--allow-private-cidr",
            "127.0.0.1/32",
            "--http-backoff",
            "50ms",
            "--http-max-retries",
            "1",
        ],
        // Only for http:// (the vendors here): the Kubernetes client honours
        // HTTPS_PROXY for the API server, as it should.
        &[("HTTP_PROXY", &proxy), ("http_proxy", &proxy)],
    );
    let fake = healthy(&client, &ns).await;
    let admin = random(24);
    let test_url = format!("http://{{{{id}}}}:{canary_port}/check");
    let manifest = http_rotation(
        "ssrf",
        &format!("{vendor}/id-is-an-ip"),
        Some((&test_url, false)),
        &admin,
    );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "ssrf").await;
    assert!(
        s.last_rotation_message
            .contains("endpoint 127.0.0.2 resolves to a loopback"),
        "{}",
        s.last_rotation_message
    );
    // The allowed vendor on 127.0.0.1 is reached directly, not through the proxy.
    rotated(&client, &ns, "partner-api-key", 1).await;
    assert_eq!(fake.lock().creates, 1);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "something connected to 127.0.0.2"
    );
    assert_alive(&op).await;
}

#[tokio::test]
async fn convex_sweep_of_prefix_shop_spares_shop_payments_and_human_tokens() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-sweep").await;
    let fake = fakes::convex().await;
    let admin = fake.lock().admin_token.clone();
    let humans = ["shop-admin", "deploy-admin", "shop-1", "shop-payments"];
    for h in humans {
        let token = format!("cvx_human_{}", random(30));
        fake.lock().tokens.insert(h.to_string(), token);
    }
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let mut manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: convex-admin\n  annotations:\n    rotor.dev/allow-read: \"*\"\nstringData:\n  accessToken: \"{admin}\"\n"
    );
    for (name, prefix) in [("shop", "shop"), ("payments", "shop-payments")] {
        manifest.push_str(&format!(
            r#"---
apiVersion: rotor.dev/v1alpha1
kind: SecretRotation
metadata:
  name: {name}
spec:
  provider:
    convex:
      namePrefix: {prefix}
      credentialsRef: {{ name: convex-admin, key: accessToken }}
      baseUrl: "{url}"
  revocation: {{ minValidity: 0s }}
  schedule:
    rotationInterval: 30d
  secretsMapping:
    accessKey: KEY
  target:
    name: {name}
    keepPrevious: true
"#,
            url = fake.url
        ));
    }
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    rotated(&client, &ns, "shop", 1).await;
    rotated(&client, &ns, "payments", 1).await;
    for n in 2..=3 {
        rotate(&client, &ns, "payments", &format!("p{n}"), n).await;
        rotate(&client, &ns, "shop", &format!("s{n}"), n).await;
    }
    // Sweeps ran after the last rotations (one per resource per second, plus after
    // each rotation): wait for several more than the rotations caused.
    let before = metric(&op, r#"rotor_orphan_sweeps_total{provider="convex"}"#)
        .await
        .unwrap_or(0.0);
    wait_metric(
        &op,
        r#"rotor_orphan_sweeps_total{provider="convex"}"#,
        before + 4.0,
    )
    .await;
    let shop = status_of(&client, &ns, "shop").await;
    let payments = status_of(&client, &ns, "payments").await;
    let vendor = fake.lock();
    for h in humans {
        assert!(
            vendor.tokens.contains_key(h),
            "the human token {h} was revoked"
        );
    }
    for s in [&shop, &payments] {
        for slot in s.slots.iter() {
            assert!(
                vendor.tokens.contains_key(&slot.id),
                "a live slot token {} was revoked (deleted: {:?})",
                slot.id,
                vendor.deleted
            );
        }
    }
    // Each resource revoked only its own tokens.
    for d in &vendor.deleted {
        let (prefix, ms) = d.rsplit_once('-').unwrap();
        assert!(
            ["shop", "shop-payments"].contains(&prefix) && ms.parse::<u64>().is_ok(),
            "{d} was deleted"
        );
    }
    assert_eq!(vendor.deleted.len(), 2, "{:?}", vendor.deleted);
}

#[tokio::test]
async fn key_in_a_test_url_or_echoed_by_the_vendor_leaks_nowhere() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-leak").await;
    let vendor = hostile_vendor().await;
    let op = Operator::start_with(&ns, FAST);
    let refused = free_port();
    let admin = format!("adm{}", random(9));
    remember_issued(&admin);
    // A transport error on a URL carrying the key.
    let url = format!("http://127.0.0.1:{refused}/check?key={{{{key}}}}");
    let manifest = http_rotation(
        "refused",
        &format!("{vendor}/short-key"),
        Some((&url, false)),
        &admin,
    );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    // A vendor echoing the (short) key in its error.
    let manifest = http_rotation(
        "echoed",
        &format!("{vendor}/short-key"),
        Some((&format!("{vendor}/echo"), true)),
        &admin,
    );
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "refused").await;
    assert!(
        s.last_rotation_message.contains("failed its test")
            || s.last_rotation_message.contains("unavailable"),
        "{}",
        s.last_rotation_message
    );
    let s = failed(&client, &ns, "echoed").await;
    assert!(
        s.last_rotation_message.contains("is not valid"),
        "{}",
        s.last_rotation_message
    );
    wait_events(&client, &ns, "echoed", 1, 60).await;
    for name in ["refused", "echoed"] {
        assert_no_leak(&client, &ns, name, &op.logs(), std::slice::from_ref(&admin)).await;
    }
}

#[tokio::test]
async fn convox_rack_stuck_updating_is_given_up_within_the_provider_timeout() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-rack").await;
    let initial = "InitialRackKey0123456789";
    let fake = fakes::convox(initial).await;
    fake.lock().update_takes = std::time::Duration::from_secs(3600);
    // FAST but with the default 10 minute update timeout: only --provider-timeout
    // can end the poll in time.
    let mut flags: Vec<&str> = FAST.to_vec();
    let at = flags.iter().position(|f| *f == "--update-timeout").unwrap();
    flags[at + 1] = "10m";
    flags.extend(["--provider-timeout", "3s"]);
    let op = Operator::start_with(&ns, &flags);
    let manifest = sample("convox.yaml")
        .replace("https://rack.example.com", &fake.url)
        .replace("REPLACE_WITH_THE_CURRENT_RACK_API_KEY", initial);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = failed(&client, &ns, "convox-rack-key").await;
    assert!(
        s.last_rotation_message.contains(
            "the rack did not come back running with the new key within 2s (status \"updating\")"
        ),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(
        fake.lock().puts,
        1,
        "one key set, then polled, then given up"
    );
    assert!(
        fake.lock().updating_answers > 0,
        "rotor polled the rack while it said updating"
    );
    assert_alive(&op).await;
}

/// `--http-max-wait` set low: a vendor asking (`Retry-After`) for longer fails the
/// attempt at once, with what it asked and the cap; a shorter wait is honoured and
/// the rotation goes through.
#[tokio::test]
async fn retry_after_longer_than_http_max_wait_fails_at_once_and_a_shorter_one_is_waited() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-max-wait").await;
    let fake = fakes::key_api().await;
    fake.lock().knobs.rate_limit_next = 1;
    fake.lock().knobs.retry_after = Some("1".into());
    let flags = [FAST, &["--http-max-wait", "3s"]].concat();
    let _op = Operator::start_with(&ns, &flags);
    apply_yaml(&client, &ns, &http_sample(&fake)).await.unwrap();
    let s = rotated(&client, &ns, "partner-api-key", 1).await;
    assert_eq!(s.failed_attempts, 0, "{}", s.last_rotation_message);
    assert!(
        !event_reasons(&client, &ns, "partner-api-key")
            .await
            .iter()
            .any(|r| r == "RotationFailed"),
        "the 1 s wait was honoured within one attempt"
    );
    assert_eq!(fake.lock().creates, 1);

    fake.lock().knobs.rate_limit_next = 1000;
    fake.lock().knobs.retry_after = Some("30".into());
    let before = fake.lock().requests;
    request(
        &client,
        &ns,
        "partner-api-key",
        "rotor.dev/rotate",
        "too-long",
    )
    .await;
    let s = wait_status(&client, &ns, "partner-api-key", 60, "failed", |s| {
        s.rotation_status == rotor::api::RotationPhase::Failed
            && s.last_handled_rotate_token.as_deref() == Some("too-long")
    })
    .await
    .status
    .unwrap();
    assert!(
        s.last_rotation_message.contains(
            "the provider asked to wait 30s (Retry-After: 30); rotor waits at most 3s (--http-max-wait)"
        ),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(
        fake.lock().requests - before,
        1,
        "no retry after a wait beyond the cap"
    );
    assert_eq!(fake.lock().creates, 1);
}

/// `--http-timeout` cuts off a call the vendor never answers: one stalled call is
/// retried and the rotation goes through; a vendor that stalls every call fails the
/// rotation (each attempt cut off) long before `--provider-timeout`.
#[tokio::test]
async fn a_vendor_that_stalls_is_cut_off_by_http_timeout() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-stall").await;
    let fake = fakes::key_api().await;
    fake.lock().knobs.stall_next = 1;
    let flags = [FAST, &["--http-timeout", "2s", "--provider-timeout", "10m"]].concat();
    let op = Operator::start_with(&ns, &flags);
    apply_yaml(&client, &ns, &http_sample(&fake)).await.unwrap();
    let s = rotated(&client, &ns, "partner-api-key", 1).await;
    assert_eq!(s.failed_attempts, 0, "{}", s.last_rotation_message);
    assert!(
        !event_reasons(&client, &ns, "partner-api-key")
            .await
            .iter()
            .any(|r| r == "RotationFailed")
    );
    {
        let api = fake.lock();
        assert_eq!(api.knobs.stall_next, 0, "the stalled call was made");
        assert_eq!(api.creates, 1);
    }

    fake.lock().knobs.stall_next = 1000;
    let before = fake.lock().requests;
    request(
        &client,
        &ns,
        "partner-api-key",
        "rotor.dev/rotate",
        "stalls",
    )
    .await;
    let s = wait_status(&client, &ns, "partner-api-key", 60, "failed", |s| {
        s.rotation_status == rotor::api::RotationPhase::Failed
            && s.last_handled_rotate_token.as_deref() == Some("stalls")
    })
    .await
    .status
    .unwrap();
    assert!(
        s.last_rotation_message
            .contains("the provider is unavailable")
            && s.last_rotation_message.contains("timed out")
            && s.last_rotation_message.contains("gave up after 3 attempts"),
        "{}",
        s.last_rotation_message
    );
    assert_eq!(
        fake.lock().requests - before,
        3,
        "three attempts, each cut off"
    );
    assert_alive(&op).await;
}

/// A Convex API answering 503 with `Retry-After: 1` twice: rotor waits what it was
/// told between the attempts (seen at the vendor: at least a second apart, where the
/// backoff alone would be 50 ms) and the rotation goes through with no failed attempt.
#[tokio::test]
async fn a_503_with_retry_after_is_waited_for_and_retried_within_one_attempt() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-503").await;
    let fake = fakes::convex().await;
    let admin = fake.lock().admin_token.clone();
    fake.lock().knobs.unavailable_next = 2;
    fake.lock().knobs.retry_after = Some("1".into());
    let _op = Operator::start_with(&ns, FAST);
    let manifest = sample("convex.yaml")
        .replace("https://api.convex.dev", &fake.url)
        .replace("REPLACE_WITH_YOUR_CONVEX_ACCESS_TOKEN", &admin);
    apply_yaml(&client, &ns, &manifest).await.unwrap();
    let s = rotated(&client, &ns, "convex-deploy-key", 1).await;
    assert_eq!(s.failed_attempts, 0, "{}", s.last_rotation_message);
    assert!(
        !event_reasons(&client, &ns, "convex-deploy-key")
            .await
            .iter()
            .any(|r| r == "RotationFailed")
    );
    let vendor = fake.lock();
    assert_eq!(vendor.creates, 1);
    let seen = &vendor.knobs.seen;
    let outcomes: Vec<&str> = seen.iter().take(3).map(|(_, what)| *what).collect();
    assert_eq!(outcomes, ["503", "503", "pass"]);
    for pair in seen[..3].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= std::time::Duration::from_millis(950),
            "retried {gap:?} after a 503 that asked for 1 s"
        );
    }
}

/// One request as a vendor received it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    query: Option<String>,
    x_key: Option<String>,
    x_id: Option<String>,
    body: String,
}

/// A key API that records every request as it arrived (raw path, header, body), issues
/// keys with `id_of(n)` as their id, and answers a DELETE with `revoke_status`.
async fn recording_vendor(
    id_of: fn(u32) -> String,
    revoke_status: StatusCode,
) -> (String, Arc<std::sync::Mutex<Vec<Received>>>) {
    let seen: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
    let issued = Arc::new(AtomicU32::new(0));
    let state = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let seen = state.clone();
            let issued = issued.clone();
            async move {
                seen.lock().unwrap().push(Received {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    query: uri.query().map(str::to_string),
                    x_key: headers
                        .get("x-key")
                        .map(|v| v.to_str().unwrap_or("<not ASCII>").to_string()),
                    x_id: headers
                        .get("x-id")
                        .map(|v| v.to_str().unwrap_or("<not ASCII>").to_string()),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                match (method.as_str(), uri.path()) {
                    ("POST", "/keys") => {
                        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                        let key = format!("k/{}?&#{n}", random(32));
                        remember_issued(&key);
                        Json(json!({"key": key, "id": id_of(n)})).into_response()
                    }
                    ("GET", p) if p.starts_with("/check/") => StatusCode::OK.into_response(),
                    ("DELETE", p) if p.starts_with("/keys/") => revoke_status.into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// README (http): placeholders are percent-encoded in URLs and JSON-escaped in JSON
/// bodies, and filled once — a vendor id that spells a JSON field, a path, a query or
/// another placeholder is carried as data; `revoke` treats 410 as already gone.
#[tokio::test]
async fn http_placeholders_are_escaped_for_their_place_and_a_410_revoke_is_gone() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-escape").await;
    fn hostile_id(n: u32) -> String {
        format!("{n}/../x?admin=1#\", \"admin\": true, \"k\": \"{{{{key}}}}\\")
    }
    let (url, seen) = recording_vendor(hostile_id, StatusCode::GONE).await;
    let op = Operator::start_with(&ns, FAST);
    let admin = random(40);
    let yaml = http_rotation("escaped", &format!("{url}/keys"), None, &admin).replace(
        "      idPath: $.id",
        &format!(
            "      idPath: $.id\n      test:\n        url: \"{url}/check/{{{{key}}}}\"\n        method: GET\n        headers:\n          - name: x-key\n            value: \"{{{{key}}}}\"\n          - name: x-id\n            value: '{{{{id}}}}'\n      revoke:\n        url: \"{url}/keys/{{{{id}}}}\"\n        method: DELETE\n        body: '{{\"id\": \"{{{{id}}}}\"}}'"
        ),
    );
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "escaped", 1).await;
    rotate(&client, &ns, "escaped", "two", 2).await;
    // Rotation 3 revokes the key of rotation 1 (its slot's): the vendor says 410.
    let s = rotate(&client, &ns, "escaped", "three", 3).await;
    assert_eq!(s.failed_attempts, 0, "a 410 is not a failure");
    let events = event_reasons(&client, &ns, "escaped").await;
    assert!(
        events.iter().all(|r| r == "Rotated"),
        "nothing failed: {events:?}"
    );

    let seen = seen.lock().unwrap().clone();
    let first_key = {
        let tests: Vec<&Received> = seen.iter().filter(|r| r.method == "GET").collect();
        assert_eq!(tests.len(), 3, "one test per rotation: {seen:?}");
        for t in &tests {
            let key = t.x_key.clone().expect("the key in its header");
            // In the URL: one encoded path segment, no query, nothing cut at `#`.
            let segment = t.path.strip_prefix("/check/").unwrap();
            assert!(!segment.contains('/') && t.query.is_none(), "{t:?}");
            assert_eq!(
                percent_encoding::percent_decode_str(segment)
                    .decode_utf8()
                    .unwrap(),
                key
            );
        }
        for (n, t) in tests.iter().enumerate() {
            assert_eq!(
                t.x_id.as_deref(),
                Some(hostile_id(n as u32 + 1).as_str()),
                "the id is filled once: the {{{{key}}}} in it stays text"
            );
        }
        tests[0].x_key.clone().unwrap()
    };
    let revokes: Vec<&Received> = seen.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(
        revokes.len(),
        1,
        "rotation 3 revoked rotation 1's key: {seen:?}"
    );
    let revoke = revokes[0];
    let segment = revoke.path.strip_prefix("/keys/").unwrap();
    assert!(
        !segment.contains('/') && revoke.query.is_none(),
        "{revoke:?}"
    );
    assert_eq!(
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .unwrap(),
        hostile_id(1),
        "the id went into the URL as one segment"
    );
    let body: serde_json::Value = serde_json::from_str(&revoke.body).expect("valid JSON");
    assert_eq!(
        body,
        json!({"id": hostile_id(1)}),
        "the id is one JSON string, its placeholder text not filled"
    );
    assert!(
        !revoke.body.contains(&first_key),
        "the key never went into the revoke"
    );
    assert_no_leak(&client, &ns, "escaped", &op.logs(), &[admin]).await;
}

/// README (http): without `test` the key is activated untested; without `revoke` old
/// keys stay valid at the vendor — no request is made for either.
#[tokio::test]
async fn http_without_test_or_revoke_activates_untested_and_revokes_nothing() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-minimal").await;
    let (url, seen) = recording_vendor(|n| format!("id-{n}"), StatusCode::NO_CONTENT).await;
    let _op = Operator::start_with(&ns, FAST);
    let yaml = http_rotation("minimal", &format!("{url}/keys"), None, &random(40));
    assert!(!yaml.contains("test:") && !yaml.contains("revoke:"));
    apply_yaml(&client, &ns, &yaml).await.unwrap();
    rotated(&client, &ns, "minimal", 1).await;
    rotate(&client, &ns, "minimal", "two", 2).await;
    let s = rotate(&client, &ns, "minimal", "three", 3).await;
    assert_eq!(s.failed_attempts, 0);
    let key = value(&client, &ns, "minimal", "KEY").await.unwrap();
    assert!(
        key.starts_with("k/") && key.ends_with("#3"),
        "the third key is active"
    );
    let methods: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        methods,
        vec!["POST"; 3],
        "only the three issues: {methods:?}"
    );
}

/// What the sweep's vendor answers a revoke.
#[derive(Clone, Copy)]
enum RevokeAnswer {
    /// 403 at once.
    Forbidden,
    /// 429 with `Retry-After: 59`.
    SlowDown,
}

/// What a sweeping vendor was asked.
#[derive(Default)]
struct SweepSeen {
    lists: u32,
    revokes: u32,
}

/// A key API that issues keys named as rotor asks and lists, besides them, `extra`
/// more names of the issuing resource's own format (its prefix and digits): orphans
/// to the sweep, each revoke answered with `revoke`.
async fn orphan_flood(
    extra: u32,
    revoke: RevokeAnswer,
) -> (String, Arc<std::sync::Mutex<SweepSeen>>) {
    let seen: Arc<std::sync::Mutex<SweepSeen>> = Arc::default();
    let issued: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: Bytes| {
            let (seen, issued) = (state.clone(), issued.clone());
            async move {
                match (method.as_str(), uri.path()) {
                    ("POST", "/keys") => {
                        let name = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|b| b["name"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        issued.lock().unwrap().push(name.clone());
                        let key = format!("fl_{}", random(32));
                        remember_issued(&key);
                        Json(json!({"key": key, "name": name})).into_response()
                    }
                    ("GET", "/keys") => {
                        seen.lock().unwrap().lists += 1;
                        let issued = issued.lock().unwrap().clone();
                        let prefix = issued
                            .first()
                            .map(|n| n.trim_end_matches(|c: char| c.is_ascii_digit()))
                            .unwrap_or("none-")
                            .to_string();
                        let names: Vec<serde_json::Value> = issued
                            .iter()
                            .cloned()
                            .chain((0..extra).map(|i| format!("{prefix}{}", 1_000_000 + i)))
                            .map(|name| json!({ "name": name }))
                            .collect();
                        Json(json!({ "keys": names })).into_response()
                    }
                    ("DELETE", p) if p.starts_with("/keys/") => {
                        seen.lock().unwrap().revokes += 1;
                        match revoke {
                            RevokeAnswer::Forbidden => {
                                (StatusCode::FORBIDDEN, Json(json!({"message": "not yours"})))
                                    .into_response()
                            }
                            RevokeAnswer::SlowDown => {
                                let mut r = (
                                    StatusCode::TOO_MANY_REQUESTS,
                                    Json(json!({"message": "slow down"})),
                                )
                                    .into_response();
                                r.headers_mut().insert("retry-after", "59".parse().unwrap());
                                r
                            }
                        }
                    }
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// An http SecretRotation against [`orphan_flood`]: issue, revoke and list, no test.
fn flood_rotation(name: &str, url: &str) -> String {
    let auth = format!(
        "        headers:\n          - name: Authorization\n            valuePrefix: \"Bearer \"\n            valueFrom: {{ name: {name}-admin, key: token }}"
    );
    http_rotation(name, &format!("{url}/keys"), None, &random(24))
        .replace("      idPath: $.id\n", "")
        .replace(
            "      keyPath: $.key",
            &format!(
                "      keyPath: $.key\n      revoke:\n        url: \"{url}/keys/{{{{id}}}}\"\n        method: DELETE\n{auth}\n      list:\n        url: \"{url}/keys\"\n        method: GET\n{auth}\n        namePath: $.keys[*].name"
            ),
        )
}

/// A vendor listing 200 names of a resource's own format, refusing every revoke: each
/// sweep (one a second here) revokes at most 20 of them, and the operator says the
/// rest waits for the next sweep.
#[tokio::test]
async fn a_sweep_of_200_listed_orphans_revokes_at_most_20() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-flood").await;
    let (url, seen) = orphan_flood(200, RevokeAnswer::Forbidden).await;
    let flags = [FAST, &["--sweep-interval", "1s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    apply_yaml(&client, &ns, &flood_rotation("flood", &url))
        .await
        .unwrap();
    rotated(&client, &ns, "flood", 1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.lock().unwrap().lists < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three sweeps did not list within 60 s:\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (lists, revokes) = {
        let s = seen.lock().unwrap();
        (s.lists, s.revokes)
    };
    assert!(revokes > 0, "the sweep revoked nothing");
    assert!(
        revokes <= 20 * lists,
        "{revokes} revokes in {lists} sweeps: more than 20 a sweep"
    );
    assert!(
        op.logs()
            .contains("the orphan sweep stopped at its bound; the resource's next sweep"),
        "the operator does not say that orphans are left"
    );
    assert_alive(&op).await;
}

/// A vendor listing 200 orphans and answering every revoke with `Retry-After: 59`
/// (waited for, as it is under `--http-max-wait`): the sweep stops within one
/// `--provider-timeout` (5 s here) instead of waiting 5 s for each of them, so the one
/// worker (`--concurrency 1`, as a hostile namespace's share of them) is free again
/// and the neighbour's rotation goes through.
#[tokio::test]
async fn a_sweep_into_a_vendor_asking_to_wait_59s_frees_its_worker_within_the_provider_timeout() {
    let client = control_plane().client().await;
    let ns = namespace(&client, "hv-flood-slow").await;
    let (url, seen) = orphan_flood(200, RevokeAnswer::SlowDown).await;
    let flags = [FAST, &["--concurrency", "1", "--provider-timeout", "5s"]].concat();
    let op = Operator::start_with(&ns, &flags);
    let fake = healthy(&client, &ns).await;
    rotated(&client, &ns, "partner-api-key", 1).await;
    apply_yaml(&client, &ns, &flood_rotation("flood", &url))
        .await
        .unwrap();
    rotated(&client, &ns, "flood", 1).await;
    // The sweep after that rotation is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.lock().unwrap().revokes == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep revoked nothing:\n{}",
            op.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    rotate(&client, &ns, "partner-api-key", "neighbour", 2).await;
    assert_eq!(fake.lock().creates, 2);
    let (lists, revokes) = {
        let s = seen.lock().unwrap();
        (s.lists, s.revokes)
    };
    assert!(revokes <= 20 * lists, "{revokes} revokes in {lists} sweeps");
    assert_alive(&op).await;
}
