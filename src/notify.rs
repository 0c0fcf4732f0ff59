//! Signed webhook notifications (`spec.notify.webhook`): a JSON (or Slack) body naming
//! the resource, the event, times and fingerprints — never a value — signed with
//! HMAC-SHA256 over `"<t>.<body>"` in `X-Rotor-Signature: t=<unix>,v1=<hex>`.
//!
//! Requests follow the providers' endpoint rule: [`HttpClient::check_url`] refuses a
//! literal internal address or a scheme other than http(s), and the connection
//! resolves names through the same guarded resolver, with no proxy and no redirects.
//! They do not go through [`HttpClient::send`]: its vendor rate-limit budget, its
//! retry settings and its `ProviderError` messages are a provider's, not a
//! webhook's. A delivery makes at most 4 attempts (waits 1 s, 2 s, 4 s; a 429's
//! `Retry-After` in seconds, capped at 30 s), each bounded by 10 s, and never reads the
//! receiver's reply body. A [`Notifier`] delivers off the caller's path with bounded
//! concurrency: a failed or dropped delivery never blocks or undoes a rotation, and is
//! counted.
//!
//! Error messages never carry the key, the body or the URL beyond its host (a Slack
//! webhook URL's path is itself a secret).

use crate::api::WebhookFormat;
use crate::metrics::Metrics;
use crate::providers::HttpClient;
use crate::providers::endpoint::{Guard, GuardedResolver};
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Rotor-Signature";
/// Deliveries queued or in flight at once, per process; more are dropped (and counted).
const IN_FLIGHT: usize = 64;
/// Of those, at most this many for one namespace: a tenant whose receiver hangs (a
/// delivery can take about two minutes: 4 attempts of 10 s and the waits between)
/// cannot take every slot from the others.
const IN_FLIGHT_PER_NAMESPACE: usize = 4;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    Rotated,
    RotationFailed,
    PreviousRevoked,
    ConsumerRolloutStuck,
    Stale,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "Rotated",
            Self::RotationFailed => "RotationFailed",
            Self::PreviousRevoked => "PreviousRevoked",
            Self::ConsumerRolloutStuck => "ConsumerRolloutStuck",
            Self::Stale => "Stale",
        }
    }
}

/// One notification: names, times, fingerprints and rotor's own message.
#[derive(Clone, Debug)]
pub struct Notification {
    pub event: NotifyEvent,
    pub namespace: String,
    pub name: String,
    pub time: DateTime<Utc>,
    /// rotor's status message (the same text as the Event: never a value).
    pub message: String,
    pub fingerprint: Option<String>,
    pub rotation: Option<u64>,
}

/// Where to send, and the signing key.
pub struct Webhook {
    pub url: String,
    pub key: SecretString,
    pub format: WebhookFormat,
}

/// The key redacted, and of the URL only its host: a Slack URL's path is a secret,
/// and any URL's query or userinfo may be.
impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "<not a URL>".into());
        f.debug_struct("Webhook")
            .field("host", &host)
            .field("key", &"[redacted]")
            .field("format", &self.format)
            .finish()
    }
}

/// Why a delivery failed. Never the key, the body, nor the URL beyond its host.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The URL is not one rotor sends to (not a URL, not http(s), a private address).
    #[error("webhook URL refused: {0}")]
    Url(String),
    /// The receiver answered a final status (4xx other than 429, or 1xx/3xx).
    #[error(
        "the webhook rejected the notification with HTTP {status} (attempt {attempts}, not retried)"
    )]
    Rejected { status: u16, attempts: u32 },
    /// Every attempt failed with a retryable status or a transport error.
    #[error("webhook delivery gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: Failure },
    /// The HTTP client could not be built (TLS set-up).
    #[error("the webhook HTTP client could not be built: {0}")]
    Client(String),
}

/// The last failure of a delivery that gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A 429 or a 5xx.
    Status(u16),
    /// A transport error: a fixed description of its kind, never reqwest's text (which
    /// names the URL).
    Transport(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "last answer HTTP {s}"),
            Self::Transport(kind) => write!(f, "last error: {kind}"),
        }
    }
}

#[derive(Serialize)]
struct JsonBody<'a> {
    event: &'static str,
    namespace: &'a str,
    name: &'a str,
    time: String,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<u64>,
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

/// The request body: JSON with the notification's fields, or a Slack incoming-webhook
/// message `{"text": "<event> <namespace>/<name>: <message>"}`.
pub fn body(n: &Notification, format: WebhookFormat) -> Vec<u8> {
    let encoded = match format {
        WebhookFormat::Json => serde_json::to_vec(&JsonBody {
            event: n.event.as_str(),
            namespace: &n.namespace,
            name: &n.name,
            time: n.time.to_rfc3339_opts(SecondsFormat::Secs, true),
            message: &n.message,
            fingerprint: n.fingerprint.as_deref(),
            rotation: n.rotation,
        }),
        WebhookFormat::Slack => serde_json::to_vec(&SlackBody {
            text: format!(
                "{} {}/{}: {}",
                n.event.as_str(),
                n.namespace,
                n.name,
                n.message
            ),
        }),
    };
    // Strings and integers only: serialising cannot fail.
    encoded.unwrap_or_default()
}

/// `t=<t>,v1=<lowercase hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &[u8], t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(crate::rotation::hmac_sha256(key, &signed))
    )
}

/// How hard one delivery tries.
#[derive(Clone, Copy, Debug)]
struct Policy {
    /// Attempts in all, the first included.
    attempts: u32,
    /// The wait after the first failure; doubles after each further one.
    backoff_base: Duration,
    /// The longest `Retry-After` honoured.
    retry_after_cap: Duration,
    /// Each attempt, connection to reply headers.
    attempt_timeout: Duration,
}

impl Policy {
    const DEFAULT: Self = Self {
        attempts: 4,
        backoff_base: Duration::from_secs(1),
        retry_after_cap: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(10),
    };

    /// The wait after failed attempt `attempt` (1-based): the receiver's `Retry-After`
    /// (capped), else the exponential backoff.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.retry_after_cap),
            None => self
                .backoff_base
                .saturating_mul(1 << attempt.saturating_sub(1).min(10)),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: the backoff applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A client with the providers' connection rules (guarded resolver, no proxy, no
/// redirects), built from `http`'s settings.
fn webhook_client(http: &HttpClient) -> Result<reqwest::Client, NotifyError> {
    // Like HttpClient::new: reqwest has no crypto provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            guard: Guard {
                allow_private: http.settings.allow_private_endpoints,
                allowed: http.settings.allow_private_cidrs.clone(),
            },
        }))
        .no_proxy()
        .connect_timeout(Policy::DEFAULT.attempt_timeout)
        .timeout(Policy::DEFAULT.attempt_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyError::Client(e.without_url().to_string()))
}

/// The URL, checked with the providers' rule. Messages name the scheme or the host,
/// never the URL itself (`check_url`'s own messages quote it whole).
fn checked_url(http: &HttpClient, url: &str) -> Result<reqwest::Url, NotifyError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| NotifyError::Url(format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(NotifyError::Url(format!(
            "scheme {:?}: only http and https are supported",
            parsed.scheme()
        )));
    }
    // Scheme and syntax are checked above: what remains is the host rule, whose
    // message names the host only.
    http.check_url(url).map_err(|e| {
        let host = parsed.host_str().unwrap_or("(none)");
        match e {
            crate::rotation::ProviderError::InvalidConfig(m) if !m.contains(url) => {
                NotifyError::Url(m)
            }
            _ => NotifyError::Url(format!("host {host} is not allowed")),
        }
    })
}

/// A transport error's kind, in fixed words.
fn transport_kind(e: &reqwest::Error) -> String {
    let class = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut detail = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            detail = Some(io.kind().to_string());
        } else if s.to_string().contains("--allow-private-endpoints") {
            // The guarded resolver: the name resolves to an internal address.
            detail = Some("the host resolves to a private address".into());
            break;
        }
        source = s.source();
    }
    match detail {
        Some(d) => format!("{class} ({d})"),
        None => class.into(),
    }
}

/// Sends one notification: POST, signed per attempt, retrying 429, 5xx and transport
/// errors (at most 4 attempts; waits 1 s, 2 s, 4 s or a 429's `Retry-After` up to 30 s).
pub async fn deliver(
    http: &HttpClient,
    hook: &Webhook,
    n: &Notification,
) -> Result<(), NotifyError> {
    // The URL first: a refused one needs no client.
    checked_url(http, &hook.url)?;
    let client = webhook_client(http)?;
    deliver_with(&client, http, &Policy::DEFAULT, hook, n).await
}

async fn deliver_with(
    client: &reqwest::Client,
    http: &HttpClient,
    policy: &Policy,
    hook: &Webhook,
    n: &Notification,
) -> Result<(), NotifyError> {
    let url = checked_url(http, &hook.url)?;
    let body = body(n, hook.format);
    let key = hook.key.expose_secret().as_bytes();
    let mut last = Failure::Transport("no attempt made".into());
    for attempt in 1..=policy.attempts {
        let header = signature(key, Utc::now().timestamp(), &body);
        let outcome = client
            .post(url.clone())
            .timeout(policy.attempt_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, header)
            .body(body.clone())
            .send()
            .await;
        // The reply's body is never read: dropping the response closes it.
        let asked = match outcome {
            Ok(reply) => {
                let status = reply.status();
                if status.is_success() {
                    return Ok(());
                }
                let code = status.as_u16();
                if code != 429 && !status.is_server_error() {
                    return Err(NotifyError::Rejected {
                        status: code,
                        attempts: attempt,
                    });
                }
                last = Failure::Status(code);
                if code == 429 {
                    retry_after(reply.headers())
                } else {
                    None
                }
            }
            Err(e) => {
                last = Failure::Transport(transport_kind(&e));
                None
            }
        };
        if attempt < policy.attempts {
            let wait = policy.wait(attempt, asked);
            tracing::debug!(
                namespace = %n.namespace,
                name = %n.name,
                event = n.event.as_str(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying the webhook"
            );
            tokio::time::sleep(wait).await;
        }
    }
    Err(NotifyError::GaveUp {
        attempts: policy.attempts,
        last,
    })
}

/// Delivers notifications in the background, at most [`IN_FLIGHT`] at once.
pub struct Notifier {
    http: HttpClient,
    /// One connection pool for every delivery (`Err`: the reason none could be built).
    client: Result<reqwest::Client, String>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    /// Deliveries under way per namespace (an entry is removed when it reaches 0).
    tenants: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    per_namespace: usize,
    policy: Policy,
}

/// A namespace's share of the in-flight deliveries, given back on drop.
struct Share {
    tenants: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    namespace: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = tenants.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tenants.remove(&self.namespace);
            }
        }
    }
}

impl Notifier {
    pub fn new(http: HttpClient, metrics: Arc<Metrics>) -> Self {
        Self::with(
            http,
            metrics,
            IN_FLIGHT,
            IN_FLIGHT_PER_NAMESPACE,
            Policy::DEFAULT,
        )
    }

    fn with(
        http: HttpClient,
        metrics: Arc<Metrics>,
        slots: usize,
        per_namespace: usize,
        policy: Policy,
    ) -> Self {
        let client = webhook_client(&http).map_err(|e| {
            tracing::warn!(error = %e, "webhook notifications will fail");
            e.to_string()
        });
        Self {
            http,
            client,
            metrics,
            slots: Arc::new(Semaphore::new(slots)),
            tenants: Default::default(),
            per_namespace,
            policy,
        }
    }

    /// A share for `namespace`, or `None` when it already has its
    /// [`IN_FLIGHT_PER_NAMESPACE`] deliveries under way.
    fn share(&self, namespace: &str) -> Option<Share> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let n = tenants.entry(namespace.to_string()).or_default();
        if *n >= self.per_namespace {
            return None;
        }
        *n += 1;
        Some(Share {
            tenants: self.tenants.clone(),
            namespace: namespace.to_string(),
        })
    }

    /// Sends in the background; returns at once and never fails. Dropped (and
    /// counted) when [`IN_FLIGHT`] deliveries are already queued or under way, when
    /// [`IN_FLIGHT_PER_NAMESPACE`] of them are the notification's namespace's, or
    /// when called outside a tokio runtime.
    pub fn send(&self, hook: Webhook, n: Notification) {
        let runtime = tokio::runtime::Handle::try_current();
        // The namespace's share first: a full tenant must not take a global slot.
        let share = self.share(&n.namespace);
        let permit = share
            .as_ref()
            .and_then(|_| self.slots.clone().try_acquire_owned().ok());
        let (Ok(runtime), Some(permit), Some(share)) = (runtime, permit, share) else {
            Metrics::result(&self.metrics.webhook_deliveries, "dropped");
            tracing::warn!(
                namespace = %n.namespace,
                name = %n.name,
                event = n.event.as_str(),
                "webhook notification dropped: too many deliveries under way (for this namespace or in all)"
            );
            return;
        };
        let job = Job {
            http: self.http.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            policy: self.policy,
        };
        runtime.spawn(async move {
            let _permit = permit;
            let _share = share;
            let _ = job.run(&hook, &n).await;
        });
    }

    /// Sends and waits for the outcome (counted and logged like [`Notifier::send`];
    /// not subject to the in-flight bound: the caller waits).
    pub async fn send_and_wait(&self, hook: &Webhook, n: &Notification) -> Result<(), NotifyError> {
        Job {
            http: self.http.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            policy: self.policy,
        }
        .run(hook, n)
        .await
    }
}

/// One delivery with what it needs, owned (for a spawned task).
struct Job {
    http: HttpClient,
    client: Result<reqwest::Client, String>,
    metrics: Arc<Metrics>,
    policy: Policy,
}

impl Job {
    async fn run(&self, hook: &Webhook, n: &Notification) -> Result<(), NotifyError> {
        let outcome = match &self.client {
            Ok(client) => deliver_with(client, &self.http, &self.policy, hook, n).await,
            Err(e) => Err(NotifyError::Client(e.clone())),
        };
        match &outcome {
            Ok(()) => Metrics::result(&self.metrics.webhook_deliveries, "delivered"),
            Err(e) => {
                Metrics::result(&self.metrics.webhook_deliveries, "failed");
                tracing::warn!(
                    namespace = %n.namespace,
                    name = %n.name,
                    event = n.event.as_str(),
                    error = %e,
                    "webhook delivery failed"
                );
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::HttpSettings;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use hmac::{KeyInit, Mac};
    use std::sync::Mutex;
    use std::time::Instant;

    const KEY: &str = "s3cret-signing-key";

    /// Short waits, so that retry tests take milliseconds.
    const FAST: Policy = Policy {
        attempts: 4,
        backoff_base: Duration::from_millis(10),
        retry_after_cap: Duration::from_millis(50),
        attempt_timeout: Duration::from_millis(500),
    };

    fn note() -> Notification {
        Notification {
            event: NotifyEvent::Rotated,
            namespace: "shop".into(),
            name: "db".into(),
            time: DateTime::UNIX_EPOCH,
            message: "rotated: slot 1 active (sha256:41aa07de)".into(),
            fingerprint: Some("sha256:41aa07de".into()),
            rotation: Some(7),
        }
    }

    fn hmac_hex(key: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_t_dot_body() {
        let body = br#"{"event":"Rotated"}"#;
        assert_eq!(
            signature(b"k3y", 1_700_000_000, body),
            format!("t=1700000000,v1={}", hmac_hex(b"k3y", 1_700_000_000, body))
        );
        // Pinned (computed with `openssl dgst -sha256 -hmac` and Python's hmac): a
        // change of the signed string's format breaks every receiver.
        assert_eq!(
            signature(b"key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
        assert_eq!(
            signature(b"k3y", 1_700_000_000, body),
            "t=1700000000,v1=015fc279da90b0c7eb8368dd1198cb139e2f6207575962e0cca3f633f2a57fe9"
        );
        assert_eq!(SIGNATURE_HEADER, "X-Rotor-Signature");
    }

    #[test]
    fn bodies_carry_exactly_the_named_fields() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(&note(), WebhookFormat::Json)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "event": "Rotated",
                "namespace": "shop",
                "name": "db",
                "time": "1970-01-01T00:00:00Z",
                "message": "rotated: slot 1 active (sha256:41aa07de)",
                "fingerprint": "sha256:41aa07de",
                "rotation": 7,
            })
        );
        // Absent optional fields are left out, not null.
        let bare = Notification {
            event: NotifyEvent::ConsumerRolloutStuck,
            fingerprint: None,
            rotation: None,
            ..note()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body(&bare, WebhookFormat::Json)).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["event", "message", "name", "namespace", "time"]);
        assert_eq!(v["event"], "ConsumerRolloutStuck");

        let slack: serde_json::Value =
            serde_json::from_slice(&body(&note(), WebhookFormat::Slack)).unwrap();
        assert_eq!(
            slack,
            serde_json::json!({"text": "Rotated shop/db: rotated: slot 1 active (sha256:41aa07de)"})
        );
    }

    #[test]
    fn event_names_are_their_camel_case_words() {
        for (e, s) in [
            (NotifyEvent::Rotated, "Rotated"),
            (NotifyEvent::RotationFailed, "RotationFailed"),
            (NotifyEvent::PreviousRevoked, "PreviousRevoked"),
            (NotifyEvent::ConsumerRolloutStuck, "ConsumerRolloutStuck"),
            (NotifyEvent::Stale, "Stale"),
        ] {
            assert_eq!(e.as_str(), s);
        }
    }

    #[test]
    fn waits_double_from_one_second_and_retry_after_is_capped() {
        let p = Policy::DEFAULT;
        assert_eq!(p.attempts, 4);
        let waits: Vec<u64> = (1..p.attempts).map(|a| p.wait(a, None).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
        assert_eq!(p.wait(1, Some(Duration::from_secs(3))).as_secs(), 3);
        assert_eq!(p.wait(2, Some(Duration::from_secs(3600))).as_secs(), 30);
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", " 5 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn debug_shows_neither_the_key_nor_the_path_or_query() {
        let text = format!(
            "{:?}",
            Webhook {
                url: "https://u:pw@hooks.example.com/services/T0/B0/XYZsecret?token=abc".into(),
                key: SecretString::from(KEY),
                format: WebhookFormat::Slack,
            }
        );
        assert!(text.contains("hooks.example.com"), "{text}");
        for secret in [KEY, "XYZsecret", "token=abc", "pw"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[derive(Default)]
    struct Receiver {
        /// Statuses to answer, in order (with a `Retry-After: 0` on 429); then 200.
        script: Vec<u16>,
        attempts: u32,
        /// Bodies whose signature verified (independently of `signature`).
        verified: Vec<Vec<u8>>,
        hang: bool,
    }

    /// Verifies `t=<t>,v1=<hex>` with the hmac crate directly, and a fresh `t`.
    fn verifies(headers: &HeaderMap, body: &[u8]) -> bool {
        let Some(header) = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let (mut t, mut v1) = (None, None);
        for part in header.split(',') {
            if let Some(x) = part.strip_prefix("t=") {
                t = x.parse::<i64>().ok();
            } else if let Some(x) = part.strip_prefix("v1=") {
                v1 = Some(x.to_string());
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let json = headers
            .get("content-type")
            .is_some_and(|v| v == "application/json");
        json && (Utc::now().timestamp() - t).abs() < 300 && v1 == hmac_hex(KEY.as_bytes(), t, body)
    }

    async fn receive(
        State(st): State<Arc<Mutex<Receiver>>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let hang = {
            let mut r = st.lock().unwrap();
            r.attempts += 1;
            if verifies(&headers, &body) {
                r.verified.push(body.to_vec());
            }
            r.hang
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let mut r = st.lock().unwrap();
        if r.script.is_empty() {
            return StatusCode::OK.into_response();
        }
        let status = StatusCode::from_u16(r.script.remove(0)).unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            (status, [("retry-after", "0")]).into_response()
        } else {
            status.into_response()
        }
    }

    async fn receiver(r: Receiver) -> (String, Arc<Mutex<Receiver>>) {
        let state = Arc::new(Mutex::new(r));
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, state)
    }

    fn client(private: bool) -> HttpClient {
        HttpClient::new(HttpSettings {
            allow_private_endpoints: private,
            ..HttpSettings::default()
        })
    }

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url.into(),
            key: SecretString::from(KEY),
            format: WebhookFormat::Json,
        }
    }

    async fn fast(http: &HttpClient, hook: &Webhook) -> Result<(), NotifyError> {
        let c = webhook_client(http).unwrap();
        deliver_with(&c, http, &FAST, hook, &note()).await
    }

    #[tokio::test]
    async fn delivers_signed_json() {
        let (url, st) = receiver(Receiver::default()).await;
        deliver(&client(true), &hook(&url), &note()).await.unwrap();
        let r = st.lock().unwrap();
        assert_eq!(r.attempts, 1);
        assert_eq!(r.verified, [body(&note(), WebhookFormat::Json)]);
    }

    #[tokio::test]
    async fn retries_5xx_and_429_and_stops_at_other_4xx() {
        let http = client(true);
        // 500 twice, then 200: three attempts, each signed.
        let (url, st) = receiver(Receiver {
            script: vec![500, 503],
            ..Receiver::default()
        })
        .await;
        fast(&http, &hook(&url)).await.unwrap();
        {
            let r = st.lock().unwrap();
            assert_eq!(r.attempts, 3);
            assert_eq!(r.verified.len(), 3, "every attempt is signed");
        }

        // 400 is final: one attempt.
        let (url, st) = receiver(Receiver {
            script: vec![400],
            ..Receiver::default()
        })
        .await;
        let e = fast(&http, &hook(&url)).await.unwrap_err();
        assert!(
            matches!(
                e,
                NotifyError::Rejected {
                    status: 400,
                    attempts: 1
                }
            ),
            "{e}"
        );
        assert_eq!(st.lock().unwrap().attempts, 1);

        // A 429's Retry-After (0 s) replaces the 1 s backoff, with the real policy.
        let (url, st) = receiver(Receiver {
            script: vec![429],
            ..Receiver::default()
        })
        .await;
        let started = Instant::now();
        deliver(&http, &hook(&url), &note()).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(900));
        assert_eq!(st.lock().unwrap().attempts, 2);
    }

    #[tokio::test]
    async fn gives_up_after_four_attempts_saying_nothing_secret() {
        let http = client(true);
        let (url, st) = receiver(Receiver {
            script: vec![500; 10],
            ..Receiver::default()
        })
        .await;
        let e = fast(&http, &hook(&format!("{url}?token=q1w2e3")))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                NotifyError::GaveUp {
                    attempts: 4,
                    last: Failure::Status(500)
                }
            ),
            "{e}"
        );
        assert_eq!(st.lock().unwrap().attempts, 4);
        let text = e.to_string();
        assert!(
            text.contains("4 attempts") && text.contains("HTTP 500"),
            "{text}"
        );
        let sent = String::from_utf8(body(&note(), WebhookFormat::Json)).unwrap();
        for secret in [KEY, "q1w2e3", "sha256:41aa07de", sent.as_str(), "/hook"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[tokio::test]
    async fn transport_errors_are_retried_and_named_by_kind_only() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = fast(
            &client(true),
            &hook(&format!(
                "http://user:pa55word@127.0.0.1:{port}/x?token=q1w2e3"
            )),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, NotifyError::GaveUp { attempts: 4, last: Failure::Transport(k) } if k.contains("connection")),
            "{e}"
        );
        let text = e.to_string();
        for secret in ["pa55word", "user", "q1w2e3", "/x", KEY] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }

        // An attempt that hangs is cut by the attempt timeout.
        let (url, st) = receiver(Receiver {
            hang: true,
            ..Receiver::default()
        })
        .await;
        let policy = Policy {
            attempts: 2,
            attempt_timeout: Duration::from_millis(200),
            ..FAST
        };
        let http = client(true);
        let c = webhook_client(&http).unwrap();
        let started = Instant::now();
        let e = deliver_with(&c, &http, &policy, &hook(&url), &note())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("timed out"), "{e}");
        assert_eq!(st.lock().unwrap().attempts, 2);
    }

    #[tokio::test]
    async fn a_private_address_or_bad_scheme_is_refused_without_a_request() {
        let (url, st) = receiver(Receiver::default()).await;
        let strict = client(false);
        let e = deliver(&strict, &hook(&url), &note()).await.unwrap_err();
        assert!(matches!(e, NotifyError::Url(_)), "{e}");
        assert!(e.to_string().contains("--allow-private-endpoints"), "{e}");
        // Through the Notifier as well.
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::new(strict.clone(), metrics.clone());
        assert!(notifier.send_and_wait(&hook(&url), &note()).await.is_err());
        assert!(
            metrics
                .encode()
                .contains(r#"rotor_webhook_deliveries_total{result="failed"} 1"#)
        );
        assert_eq!(st.lock().unwrap().attempts, 0, "no request was sent");

        for url in [
            "http://user:pa55word@localhost:1/x?token=q1w2e3",
            "ftp://user:pa55word@example.com/x?token=q1w2e3",
            "not a url ?token=q1w2e3",
        ] {
            let e = deliver(&strict, &hook(url), &note())
                .await
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("webhook URL refused"), "{e}");
            for secret in ["pa55word", "q1w2e3"] {
                assert!(!e.contains(secret), "{secret} in {e}");
            }
        }
    }

    #[tokio::test]
    async fn outcomes_are_counted() {
        let (url, _st) = receiver(Receiver {
            script: vec![404],
            ..Receiver::default()
        })
        .await;
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::with(client(true), metrics.clone(), 4, 4, FAST);
        assert!(notifier.send_and_wait(&hook(&url), &note()).await.is_err());
        notifier.send_and_wait(&hook(&url), &note()).await.unwrap();
        let text = metrics.encode();
        for line in [
            r#"rotor_webhook_deliveries_total{result="failed"} 1"#,
            r#"rotor_webhook_deliveries_total{result="delivered"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_hanging_receiver_never_blocks_the_sender() {
        let (url, st) = receiver(Receiver {
            hang: true,
            ..Receiver::default()
        })
        .await;
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::with(client(true), metrics.clone(), 1, 1, FAST);
        // The receiver never answers: a send that waited would never return.
        for _ in 0..3 {
            notifier.send(hook(&url), note());
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"rotor_webhook_deliveries_total{result="dropped"} 2"#),
            "{text}"
        );
        assert!(!text.contains(r#"result="delivered""#), "{text}");
        // The one admitted delivery is under way (bounded wait for it to arrive).
        for _ in 0..100 {
            if st.lock().unwrap().attempts > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(st.lock().unwrap().attempts, 1);
    }

    #[tokio::test]
    async fn one_namespace_cannot_take_every_slot() {
        let (url, st) = receiver(Receiver {
            hang: true,
            ..Receiver::default()
        })
        .await;
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::with(client(true), metrics.clone(), 4, 2, FAST);
        // The noisy tenant sends five; two are admitted, three dropped.
        for _ in 0..5 {
            notifier.send(hook(&url), note());
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"rotor_webhook_deliveries_total{result="dropped"} 3"#),
            "{text}"
        );
        // Another namespace still gets through, while the first one's hang.
        let mut other = note();
        other.namespace = "team-b".into();
        notifier.send(hook(&url), other.clone());
        notifier.send(hook(&url), other);
        let text = metrics.encode();
        assert!(
            text.contains(r#"rotor_webhook_deliveries_total{result="dropped"} 3"#),
            "team-b's two were admitted: {text}"
        );
        for _ in 0..200 {
            if st.lock().unwrap().attempts >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(st.lock().unwrap().attempts, 4, "2 + 2 deliveries under way");
        // A full process drops whatever the namespace.
        let mut third = note();
        third.namespace = "team-c".into();
        notifier.send(hook(&url), third);
        assert!(
            metrics
                .encode()
                .contains(r#"rotor_webhook_deliveries_total{result="dropped"} 4"#)
        );
    }
}
