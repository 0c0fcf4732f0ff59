//! Signed webhook notifications (`spec.notify.webhook`): a JSON (or Slack) body naming
//! the resource, the event, times and fingerprints — never a value — signed with
//! HMAC-SHA256 over `"<t>.<body>"` in `X-Rotor-Signature: t=<unix>,v1=<hex>`.
//!
//! Requests go through the providers' HTTP client: the same private-address rule, no
//! proxy, no redirects, bounded replies, retries of 429, 5xx and transport errors with
//! backoff. A [`Notifier`] delivers off the caller's path with bounded concurrency: a
//! failed or dropped delivery never blocks or undoes a rotation, and is counted.

use crate::api::WebhookFormat;
use crate::metrics::Metrics;
use crate::providers::HttpClient;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Rotor-Signature";
/// Deliveries in flight at once, per process; more are dropped (and counted).
const IN_FLIGHT: usize = 16;

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

/// Why a delivery failed. Never the key or the body.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("webhook delivery failed: {0}")]
    Failed(#[source] crate::rotation::ProviderError),
    #[error("the webhook answered HTTP {0}")]
    Refused(u16),
}

/// The request body.
pub fn body(n: &Notification, format: WebhookFormat) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => {
            let mut v = json!({
                "event": n.event.as_str(),
                "namespace": n.namespace,
                "name": n.name,
                "time": n.time.to_rfc3339(),
                "message": n.message,
            });
            if let Some(fp) = &n.fingerprint {
                v["fingerprint"] = json!(fp);
            }
            if let Some(r) = n.rotation {
                v["rotation"] = json!(r);
            }
            v
        }
        WebhookFormat::Slack => json!({
            "text": format!("rotor {} {}/{}: {}", n.event.as_str(), n.namespace, n.name, n.message)
        }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// `t=<t>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.
pub fn signature(key: &[u8], t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(crate::rotation::hmac_sha256(key, &signed))
    )
}

/// Sends one notification, with the client's retries.
pub async fn deliver(
    http: &HttpClient,
    hook: &Webhook,
    n: &Notification,
) -> Result<(), NotifyError> {
    let url = http.check_url(&hook.url).map_err(NotifyError::Failed)?;
    let body = body(n, hook.format);
    let header = signature(
        hook.key.expose_secret().as_bytes(),
        Utc::now().timestamp(),
        &body,
    );
    let reply = http
        .send("webhook", |c| {
            c.post(url.clone())
                .header("Content-Type", "application/json")
                .header(SIGNATURE_HEADER, &header)
                .body(body.clone())
        })
        .await
        .map_err(NotifyError::Failed)?;
    if reply.is_success() {
        Ok(())
    } else {
        Err(NotifyError::Refused(reply.status))
    }
}

/// Delivers notifications in the background, at most [`IN_FLIGHT`] at once.
pub struct Notifier {
    http: HttpClient,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

impl Notifier {
    pub fn new(http: HttpClient, metrics: Arc<Metrics>) -> Self {
        Self::with_slots(http, metrics, IN_FLIGHT)
    }

    fn with_slots(http: HttpClient, metrics: Arc<Metrics>, slots: usize) -> Self {
        Self {
            http,
            metrics,
            slots: Arc::new(Semaphore::new(slots)),
        }
    }

    /// Sends in the background; returns at once. Dropped (and counted) when
    /// [`IN_FLIGHT`] deliveries are already under way.
    pub fn send(&self, hook: Webhook, n: Notification) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            Metrics::result(&self.metrics.webhook_deliveries, "dropped");
            tracing::warn!(namespace = %n.namespace, name = %n.name, event = n.event.as_str(), "webhook notification dropped: too many deliveries under way");
            return;
        };
        let (http, metrics) = (self.http.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = deliver_counted(&http, &metrics, &hook, &n).await;
        });
    }

    /// Sends and waits for the outcome (counted like [`Notifier::send`]).
    pub async fn send_and_wait(&self, hook: &Webhook, n: &Notification) -> Result<(), NotifyError> {
        deliver_counted(&self.http, &self.metrics, hook, n).await
    }
}

async fn deliver_counted(
    http: &HttpClient,
    metrics: &Metrics,
    hook: &Webhook,
    n: &Notification,
) -> Result<(), NotifyError> {
    let outcome = deliver(http, hook, n).await;
    match &outcome {
        Ok(()) => Metrics::result(&metrics.webhook_deliveries, "delivered"),
        Err(e) => {
            Metrics::result(&metrics.webhook_deliveries, "failed");
            tracing::warn!(namespace = %n.namespace, name = %n.name, event = n.event.as_str(), error = %e, "webhook delivery failed");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::HttpSettings;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use hmac::{KeyInit, Mac};
    use std::sync::Mutex;
    use std::time::Duration;

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

    #[test]
    fn the_signature_is_hmac_sha256_over_t_dot_body() {
        let body = br#"{"event":"Rotated"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(b"1700000000.");
        mac.update(body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            signature(b"k3y", 1_700_000_000, body),
            format!("t=1700000000,v1={expected}")
        );
        // Pinned (computed with Python's hmac): a change of the signed string's format
        // is a breaking change for every receiver.
        assert_eq!(
            signature(b"key", 1, b"x"),
            "t=1,v1=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
        );
    }

    #[test]
    fn bodies_carry_names_times_and_fingerprints_only() {
        let v: serde_json::Value =
            serde_json::from_slice(&body(&note(), WebhookFormat::Json)).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "event",
                "fingerprint",
                "message",
                "name",
                "namespace",
                "rotation",
                "time"
            ]
        );
        assert_eq!(v["time"], "1970-01-01T00:00:00+00:00");
        let slack: serde_json::Value =
            serde_json::from_slice(&body(&note(), WebhookFormat::Slack)).unwrap();
        assert_eq!(slack.as_object().unwrap().len(), 1);
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .starts_with("rotor Rotated shop/db: ")
        );
    }

    #[derive(Default)]
    struct Receiver {
        /// Answers to give, in order; then 200.
        script: Vec<u16>,
        attempts: u32,
        /// Bodies whose signature verified.
        verified: Vec<Vec<u8>>,
        hang: bool,
    }

    async fn receive(
        State(st): State<Arc<Mutex<Receiver>>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let hang = {
            let mut r = st.lock().unwrap();
            r.attempts += 1;
            let header = headers
                .get(SIGNATURE_HEADER)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let t: i64 = header
                .split(',')
                .find_map(|p| p.strip_prefix("t="))
                .and_then(|t| t.parse().ok())
                .unwrap_or_default();
            if signature(b"s3cret-signing-key", t, &body) == header {
                r.verified.push(body.to_vec());
            }
            r.hang
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let mut r = st.lock().unwrap();
        if r.script.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::from_u16(r.script.remove(0)).unwrap()
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
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            ..HttpSettings::default()
        })
    }

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url.into(),
            key: SecretString::from("s3cret-signing-key"),
            format: WebhookFormat::Json,
        }
    }

    #[tokio::test]
    async fn delivers_signed_and_retries_what_may_pass() {
        let http = client(true);
        // 500 twice, then 200: three attempts, one verified body each time.
        let (url, st) = receiver(Receiver {
            script: vec![500, 503],
            ..Receiver::default()
        })
        .await;
        deliver(&http, &hook(&url), &note()).await.unwrap();
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
        let e = deliver(&http, &hook(&url), &note()).await.unwrap_err();
        assert!(matches!(e, NotifyError::Refused(400)), "{e}");
        assert_eq!(st.lock().unwrap().attempts, 1);

        // Always 500: gives up after 1 + max_retries, and says nothing secret.
        let (url, st) = receiver(Receiver {
            script: vec![500; 10],
            ..Receiver::default()
        })
        .await;
        let e = deliver(&http, &hook(&url), &note())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(st.lock().unwrap().attempts, 4);
        assert!(!e.contains("s3cret"), "{e}");
        assert!(!e.contains("sha256:41aa07de"), "no body in the error: {e}");
    }

    #[tokio::test]
    async fn a_private_address_is_refused_without_a_request() {
        let (url, st) = receiver(Receiver::default()).await;
        let e = deliver(&client(false), &hook(&url), &note())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("private"), "{e}");
        assert_eq!(st.lock().unwrap().attempts, 0);
    }

    #[tokio::test]
    async fn a_hanging_receiver_never_blocks_the_sender() {
        let (url, _st) = receiver(Receiver {
            hang: true,
            ..Receiver::default()
        })
        .await;
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::with_slots(client(true), metrics.clone(), 1);
        let started = std::time::Instant::now();
        for _ in 0..3 {
            notifier.send(hook(&url), note());
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "send returns at once"
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"rotor_webhook_deliveries_total{result="dropped"} 2"#),
            "{text}"
        );
    }
}
