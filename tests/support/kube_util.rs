//! Small helpers over kube for tests: apply manifests, wait for conditions, read Events.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use rotor::api::{SecretRotation, SecretRotationStatus};
use std::time::Duration;

/// Server-side applies every document of a YAML stream into `namespace` (unless a
/// document names its own, or is cluster-scoped).
pub async fn apply_yaml(
    client: &Client,
    namespace: &str,
    yaml: &str,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value).expect("a Kubernetes object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("gvk");
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Cluster {
            Api::all_with(client.clone(), &resource)
        } else {
            Api::namespaced_with(
                client.clone(),
                obj.namespace().as_deref().unwrap_or(namespace),
                &resource,
            )
        };
        let name = obj.name_any();
        applied.push(
            api.patch(
                &name,
                &PatchParams::apply("rotor-tests").force(),
                &Patch::Apply(&obj),
            )
            .await?,
        );
    }
    Ok(applied)
}

use serde::Deserialize;

/// A sample manifest from config/samples/.
pub fn sample(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/config/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub async fn wait_crd_established(client: &Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let cond = kube::runtime::conditions::is_crd_established();
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await
    .expect("CRD established within 30s")
    .unwrap();
}

/// Creates a fresh namespace named after the test.
pub async fn namespace(client: &Client, name: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
    name.to_string()
}

/// Waits (bounded) until the SecretRotation's status satisfies `pred`; returns it.
pub async fn wait_status(
    client: &Client,
    ns: &str,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&SecretRotationStatus) -> bool,
) -> SecretRotation {
    let api: Api<SecretRotation> = Api::namespaced(client.clone(), ns);
    let cond =
        move |obj: Option<&SecretRotation>| obj.and_then(|o| o.status.as_ref()).is_some_and(&pred);
    match tokio::time::timeout(
        Duration::from_secs(secs),
        kube::runtime::wait::await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(obj))) => obj,
        other => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "{ns}/{name}: not {what} within {secs}s ({other:?}); status now: {}",
                serde_json::to_string_pretty(&now.and_then(|o| o.status)).unwrap()
            )
        }
    }
}

/// The SecretRotation's status as it is now (it must have one).
pub async fn status_of(client: &Client, ns: &str, name: &str) -> SecretRotationStatus {
    Api::<SecretRotation>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
        .status
        .unwrap_or_else(|| panic!("{ns}/{name} has no status"))
}

pub async fn get_secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// The value under `key`, as text.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).unwrap())
}

/// Waits (bounded) until Secret `secret` holds `expected` under `key`.
pub async fn wait_value(
    client: &Client,
    ns: &str,
    secret: &str,
    key: &str,
    expected: &str,
    secs: u64,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = get_secret(client, ns, secret).await;
        let found = now.as_ref().and_then(|s| secret_value(s, key));
        if found.as_deref() == Some(expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}/{secret}: {key} not back to the expected value within {secs}s (Secret {})",
            if now.is_some() { "exists" } else { "absent" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) for an Event about `name` with `reason` whose note contains `note`.
pub async fn wait_for_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    note: &str,
    secs: u64,
) -> Event {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let events = events_for(client, ns, name).await;
        if let Some(e) = events.iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.note.as_deref().unwrap_or_default().contains(note)
        }) {
            return e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ns}/{name}: no {reason} Event saying {note:?} within {secs}s; reasons: {:?}",
            events
                .iter()
                .filter_map(|e| e.reason.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Events about the object `name` in `ns`, oldest first.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
}

/// The reasons of those Events.
pub async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    events_for(client, ns, name)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Fails when any `values` occurs in the operator's log, the Events, the status or the
/// audit trail (which every rotation writes) of this resource — and when any value the
/// whole test binary has seen so far (every fake-issued credential, every value a test
/// passed here) occurs in any operator's log, any Event, any status or any audit trail
/// on the cluster.
pub async fn assert_no_leak(client: &Client, ns: &str, name: &str, log: &str, values: &[String]) {
    let trail = rotor::vault::read_audit(client, ns, name).await.unwrap();
    assert!(!trail.is_empty(), "{name} has an audit trail");
    for v in values {
        assert!(
            v.len() >= 8,
            "scanning for a value too short to be meaningful"
        );
        super::remember_issued(v);
    }
    let mut places: Vec<(String, String)> = vec![("this operator's log".into(), log.to_string())];
    let plane = super::control_plane();
    for entry in std::fs::read_dir(&plane.dir).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with("operator-") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            places.push((format!("the log {file}"), text));
        }
    }
    let events = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    places.push((
        "an Event".into(),
        serde_json::to_string(&events.items).unwrap(),
    ));
    let rotations = Api::<SecretRotation>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    for sr in &rotations.items {
        let (sr_ns, sr_name) = (sr.namespace().unwrap_or_default(), sr.name_any());
        let at = format!("{sr_ns}/{sr_name}");
        places.push((
            format!("the status of {at}"),
            serde_json::to_string(&sr.status).unwrap(),
        ));
        let trail = rotor::vault::read_audit(client, &sr_ns, &sr_name)
            .await
            .unwrap_or_default();
        places.push((
            format!("the audit trail of {at}"),
            serde_json::to_string(&trail).unwrap(),
        ));
    }
    let values = super::issued();
    for (place, text) in &places {
        if let Some((v, form)) = find_leak(text, &values) {
            panic!(
                "a credential value ({}) appears {form} in {place}",
                rotor::rotation::fingerprint(v)
            );
        }
    }
}

/// [`assert_no_leak`] with every value of the target Secret `secret` (all of them are
/// credentials: the random provider's, in the tests that call this).
pub async fn assert_no_leak_of_target(
    client: &Client,
    ns: &str,
    name: &str,
    secret: &str,
    log: &str,
) {
    let target = get_secret(client, ns, secret)
        .await
        .expect("the target Secret");
    let values: Vec<String> = target
        .data
        .unwrap_or_default()
        .values()
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(!values.is_empty(), "{secret} holds a value to scan for");
    assert_no_leak(client, ns, name, log, &values).await;
}

/// The first of `values` (8 characters or more) that `text` holds in any form a log, an
/// Event or a status could carry it in, and which form.
pub fn find_leak<'a>(text: &str, values: &'a [String]) -> Option<(&'a String, &'static str)> {
    values.iter().filter(|v| v.len() >= 8).find_map(|v| {
        leak_forms(v)
            .into_iter()
            .find(|(f, _)| text.contains(f.as_str()))
            .map(|(_, how)| (v, how))
    })
}

/// `value` as it may appear: itself, JSON-escaped (the logs are JSON), percent-encoded
/// (in a URL or a form body), and base64 (standard or URL-safe, padded or not) at each
/// of the three byte alignments it can have inside a longer encoded string — for an
/// unaligned one, the groups that also hold bytes from before or after are left out.
pub fn leak_forms(value: &str) -> Vec<(String, &'static str)> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut forms = vec![(value.to_string(), "as is")];
    let json = serde_json::to_string(value).unwrap();
    forms.push((json[1..json.len() - 1].to_string(), "JSON-escaped"));
    for set in [NON_ALPHANUMERIC, UNRESERVED] {
        forms.push((
            utf8_percent_encode(value, set).to_string(),
            "percent-encoded",
        ));
        forms.push((
            utf8_percent_encode(value, set)
                .to_string()
                .replace("%20", "+"),
            "form-encoded",
        ));
    }
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(value.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            // Characters before `skip` mix in bytes from before the value; the last,
            // partial group mixes in what follows it.
            let skip = if offset == 0 { 0 } else { 4 };
            let whole = (offset + value.len()) / 3 * 4;
            if whole > skip && whole - skip >= 8 {
                forms.push((encoded[skip..whole].to_string(), "base64-encoded"));
            }
        }
    }
    forms.sort();
    forms.dedup_by(|a, b| a.0 == b.0);
    forms
}

/// Applies a merge patch to a SecretRotation.
pub async fn patch_rotation(client: &Client, ns: &str, name: &str, patch: serde_json::Value) {
    Api::<SecretRotation>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: &'a SecretRotationStatus, type_: &str) -> &'a rotor::api::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

/// Waits (bounded) until at least `n` Events regard `name`; returns their reasons.
pub async fn wait_events(
    client: &Client,
    ns: &str,
    name: &str,
    n: usize,
    secs: u64,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let reasons = event_reasons(client, ns, name).await;
        if reasons.len() >= n || std::time::Instant::now() >= deadline {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The fingerprint the operator whose namespace is `operator_ns` gives `value`:
/// HMAC-SHA256 under the `fingerprint` key of its `rotor-kek` Secret.
pub async fn fingerprint_of(client: &Client, operator_ns: &str, value: &str) -> String {
    let kek = Api::<Secret>::namespaced(client.clone(), operator_ns)
        .get(rotor::vault::KEK_SECRET)
        .await
        .unwrap();
    let key = kek.data.unwrap()[rotor::vault::FINGERPRINT_KEY].0.clone();
    assert_eq!(key.len(), 32, "a 32-byte fingerprint key");
    rotor::rotation::keyed_fingerprint(&key, value)
}

/// A kubeconfig (its path) for the ServiceAccount `account` of `namespace`, with a token
/// from the TokenRequest API, as a pod of that account would have.
pub async fn service_account_kubeconfig(client: &Client, namespace: &str, account: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(
        serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 86400}}),
    )
    .unwrap();
    let issued: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = issued.status.expect("a token").token;
    let plane = super::control_plane();
    let path = plane.dir.join(format!("{namespace}-{account}-kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: \"{}\", insecure-skip-tls-verify: true}}\nusers:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: t\n  context: {{cluster: t, user: sa}}\ncurrent-context: t\n",
            plane.apiserver_url
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// A Deployment `name` of `replicas` pods (labels `app: <name>`, `tier: web`) that
/// reads `secret` through `envFrom`: a consumer rotor can discover.
pub async fn deployment_reading(
    client: &Client,
    ns: &str,
    name: &str,
    secret: &str,
    replicas: i32,
) {
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name, "tier": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.invalid/app:1",
                    "envFrom": [{"secretRef": {"name": secret}}]
                }]}
            }
        }
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}
