//! The one HTTP client every HTTP provider shares: connection reuse, timeouts, the
//! endpoint guard, and retries of 429 and 5xx with exponential backoff and jitter,
//! honouring `Retry-After` and `X-RateLimit-Reset`.

use super::ProviderError;
use super::endpoint::{self, GuardedResolver};
use rand::Rng;
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

/// How HTTP calls behave; `rotor run` flags set it.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub allow_private_endpoints: bool,
    /// Retries after the first attempt for 429, 5xx and transport errors.
    pub max_retries: u32,
    /// First backoff; doubles per retry, with jitter.
    pub backoff_base: Duration,
    /// The longest rotor waits between two attempts; a vendor asking for more fails
    /// the attempt (the rotation is retried later with the controller's backoff).
    pub max_wait: Duration,
    pub timeout: Duration,
    /// How often a provider polls a system that is updating (the Convox rack).
    pub poll_interval: Duration,
    /// How long a provider waits for such an update to finish.
    pub update_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allow_private_endpoints: false,
            max_retries: 4,
            backoff_base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            update_timeout: Duration::from_secs(600),
        }
    }
}

/// A response the caller has to judge (anything but 429, 5xx and transport errors).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Parses a JSON body.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::BadResponse(format!("{what}: the body is not the expected JSON ({e})"))
        })
    }

    /// The error for a non-success reply, with the vendor's message.
    pub fn error(&self, what: &str) -> ProviderError {
        let message = format!("{what}: {}", vendor_message(&self.body));
        match self.status {
            401 | 403 => ProviderError::Unauthorized {
                status: self.status,
                message,
            },
            status => ProviderError::Rejected { status, message },
        }
    }
}

/// The vendor's error text (`message`, `error` or the raw body), shortened, with
/// anything that looks like a token replaced, so a vendor echoing a key cannot leak it.
pub fn vendor_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "msg", "detail"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|m| m.as_str().map(str::to_string)))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let redacted: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            if word.len() >= 20 && !word.contains('/') {
                "[redacted]".to_string()
            } else {
                word.to_string()
            }
        })
        .collect();
    let mut out = redacted.join(" ");
    if out.is_empty() {
        out = "(no message)".into();
    }
    if out.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The shared client.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    pub settings: HttpSettings,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Self {
        // reqwest is built without a crypto provider of its own: use ring, like kube.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private_endpoints,
            }))
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds from static settings");
        Self { client, settings }
    }

    /// Checks a provider URL: http(s), and not a literal internal address.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, ProviderError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ProviderError::InvalidConfig(format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::InvalidConfig(format!(
                "{url:?}: only http and https are supported"
            )));
        }
        let internal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => endpoint::is_internal(ip.into()),
            Some(url::Host::Ipv6(ip)) => endpoint::is_internal(ip.into()),
            Some(url::Host::Domain(d)) => {
                d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")
            }
            None => return Err(ProviderError::InvalidConfig(format!("{url:?} has no host"))),
        };
        if internal && !self.settings.allow_private_endpoints {
            return Err(endpoint::refused(parsed.host_str().unwrap_or_default()));
        }
        Ok(parsed)
    }

    /// Sends the request `make` builds, retrying 429, 5xx and transport errors.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, ProviderError> {
        let mut attempt = 0u32;
        loop {
            let outcome = make(&self.client).send().await;
            let (retryable, asked_wait) = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status != 429 && status < 500 {
                        return Ok(Reply { status, body });
                    }
                    let reply = Reply { status, body };
                    let error = if status == 429 {
                        ProviderError::RateLimited(format!(
                            "{what}: {}",
                            vendor_message(&reply.body)
                        ))
                    } else {
                        ProviderError::Unavailable(format!(
                            "{what}: HTTP {status}: {}",
                            vendor_message(&reply.body)
                        ))
                    };
                    (error, requested_wait(&headers))
                }
                Err(e) => (
                    ProviderError::Unavailable(format!("{what}: {}", transport_message(&e))),
                    None,
                ),
            };
            if attempt >= self.settings.max_retries {
                return Err(retryable.after_retries(attempt + 1));
            }
            let wait = match asked_wait {
                Some(w) if w > self.settings.max_wait => {
                    return Err(
                        retryable.with_note(format!("the provider asked to wait {}s", w.as_secs()))
                    );
                }
                Some(w) => w,
                None => self.backoff(attempt),
            };
            tracing::debug!(what, attempt, wait_ms = wait.as_millis() as u64, error = %retryable, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .settings
            .backoff_base
            .saturating_mul(1 << attempt.min(10));
        let jitter = rand::rng().random_range(0.0..0.5);
        base.mul_f64(1.0 + jitter).min(self.settings.max_wait)
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's Display carries the URL; its source chain says why (and carries our
    // endpoint guard's refusal).
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// How long the server asked rotor to wait: `Retry-After` (seconds or an HTTP date)
/// or `X-RateLimit-Reset` (seconds to wait, or a unix time).
pub fn requested_wait(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            return Some(
                (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default(),
            );
        }
    }
    let reset = header("x-ratelimit-reset")?.parse::<f64>().ok()?;
    let now = chrono::Utc::now().timestamp() as f64;
    let secs = if reset > 1_000_000_000.0 {
        reset - now
    } else {
        reset
    };
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn waits_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(requested_wait(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("3"));
        assert_eq!(requested_wait(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        let at = chrono::Utc::now().timestamp() + 5;
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&at.to_string()).unwrap(),
        );
        let w = requested_wait(&h).unwrap();
        assert!(
            w <= Duration::from_secs(5) && w >= Duration::from_secs(3),
            "{w:?}"
        );
        assert_eq!(requested_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn vendor_messages_are_short_and_redacted() {
        assert_eq!(
            vendor_message(br#"{"message":"project not found"}"#),
            "project not found"
        );
        let echoed = br#"{"message":"bad key sb_secret_abcdefghijklmnopqrstuvwxyz0123"}"#;
        assert_eq!(vendor_message(echoed), "bad key [redacted]");
        assert_eq!(vendor_message(b""), "(no message)");
        assert!(vendor_message(&vec![b'a'; 5000]).len() < 400);
    }

    #[test]
    fn private_urls_are_refused_by_default() {
        let strict = HttpClient::new(HttpSettings::default());
        for url in [
            "http://127.0.0.1:8080/x",
            "https://10.0.0.5/",
            "http://[::1]/",
            "http://localhost/",
            "http://169.254.169.254/latest",
        ] {
            let err = strict.check_url(url).unwrap_err().to_string();
            assert!(err.contains("--allow-private-endpoints"), "{url}: {err}");
        }
        assert!(strict.check_url("https://api.supabase.com/v1").is_ok());
        assert!(strict.check_url("file:///etc/passwd").is_err());
        let open = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        assert!(open.check_url("http://127.0.0.1:8080/x").is_ok());
    }
}
