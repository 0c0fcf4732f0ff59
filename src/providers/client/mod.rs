//! The one HTTP client every HTTP provider shares: connection reuse, timeouts, the
//! endpoint guard, and retries of 429 and 5xx with exponential backoff and jitter,
//! honouring `Retry-After` and `X-RateLimit-Reset`. A vendor's announced budget
//! (`X-RateLimit-Remaining` with `X-RateLimit-Reset`) is kept per endpoint and
//! credential, and spent before sending: many resources sharing one admin token wait
//! for the window to reset instead of running into 429s and failing.

mod budget;
mod wait;

pub use wait::{AskedWait, requested_wait};

use super::endpoint::{self, Cidr, Guard, GuardedResolver};
use crate::rotation::ProviderError;
use budget::Budgets;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use wait::retry_after;

/// How HTTP calls behave; `rotor run` flags set it.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub allow_private_endpoints: bool,
    /// Internal address blocks rotor may reach although `allow_private_endpoints` is
    /// off (`--allow-private-cidr`).
    pub allow_private_cidrs: Vec<Cidr>,
    /// The longest one provider call (issue, test, revoke, list) may take as a whole,
    /// retries and polling included (`--provider-timeout`).
    pub provider_timeout: Duration,
    /// Retries after the first attempt for 429, 5xx and transport errors.
    pub max_retries: u32,
    /// First backoff; doubles per retry, with jitter.
    pub backoff_base: Duration,
    /// The longest rotor waits between two attempts; a vendor asking for more fails
    /// the attempt (the rotation is retried later with the controller's backoff). At
    /// least [`HttpSettings::MIN_MAX_WAIT`].
    pub max_wait: Duration,
    pub timeout: Duration,
    /// How often a provider polls a system that is updating (the Convox rack).
    pub poll_interval: Duration,
    /// How long a provider waits for such an update to finish.
    pub update_timeout: Duration,
}

impl HttpSettings {
    /// The shortest `max_wait` (`--http-max-wait`): the time the first request to an
    /// endpoint is given to learn its rate limit while the others wait. Below it,
    /// waiting for that answer would fail calls, and retries would go back to back.
    pub const MIN_MAX_WAIT: Duration = Budgets::PROBE;
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            allow_private_endpoints: false,
            allow_private_cidrs: Vec::new(),
            provider_timeout: Duration::from_secs(120),
            max_retries: 4,
            backoff_base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            update_timeout: Duration::from_secs(600),
        }
    }
}

/// The largest response body rotor reads from a vendor.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

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
            // serde quotes the offending value ("invalid type: string \"sk_…\""): redact.
            ProviderError::BadResponse(format!(
                "{what}: the body is not the expected JSON ({})",
                redact_tokens(&e.to_string())
            ))
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
    let mut out = redact_tokens(&text);
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

/// `text` with every word that may be a credential replaced by `[redacted]`.
fn redact_tokens(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            if looks_like_a_token(word) {
                "[redacted]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a word of a vendor's message may be a credential: long, or mixing
/// letters with digits or base64/URL punctuation the way keys do.
fn looks_like_a_token(word: &str) -> bool {
    let core = word.trim_matches(|c: char| "\"'`,.;:()[]{}<>!?".contains(c));
    if core.chars().count() >= 20 {
        return true;
    }
    let letters = core.chars().filter(char::is_ascii_alphabetic).count();
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let symbols = core.chars().filter(|c| "_-+/=".contains(*c)).count();
    core.len() >= 12 && letters > 0 && (digits > 0 || symbols > 0) && !core.contains("://")
}

/// Told about every HTTP request sent to a vendor (each attempt): the provider kind,
/// the answer's status (`None`: no answer: a transport error or a timeout) and the
/// seconds it took. The controller counts them in its metrics (providers know none).
pub type Observer = Arc<dyn Fn(&'static str, Option<u16>, f64) + Send + Sync>;

/// The shared client.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    pub settings: HttpSettings,
    budgets: Arc<Budgets>,
    observer: Option<Observer>,
    /// The provider kind requests are observed under.
    provider: &'static str,
}

impl HttpClient {
    pub fn new(mut settings: HttpSettings) -> Self {
        settings.max_wait = settings.max_wait.max(HttpSettings::MIN_MAX_WAIT);
        // reqwest is built without a crypto provider of its own: use ring, like kube.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard(&settings),
            }))
            // HTTP(S)_PROXY from the environment would connect to whatever a tenant's
            // URL names without the resolver's check: providers never use a proxy.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds from static settings");
        Self {
            client,
            settings,
            budgets: Arc::default(),
            observer: None,
            provider: "unknown",
        }
    }

    /// This client, telling `observer` about every request it sends.
    pub fn observed(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A handle on the same client (connections, budgets) whose requests are observed
    /// as `provider`'s.
    pub fn for_provider(&self, provider: &'static str) -> Self {
        Self {
            provider,
            ..self.clone()
        }
    }

    fn observe(&self, status: Option<u16>, sent: tokio::time::Instant) {
        if let Some(observer) = &self.observer {
            observer(self.provider, status, sent.elapsed().as_secs_f64());
        }
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
        self.check_host(&parsed)?;
        Ok(parsed)
    }

    /// Refuses a URL whose host is a literal internal address (names are checked by
    /// the resolver when connecting). Runs on every request, after placeholders.
    fn check_host(&self, url: &reqwest::Url) -> Result<(), ProviderError> {
        let guard = guard(&self.settings);
        let permitted = match url.host() {
            Some(url::Host::Ipv4(ip)) => guard.permits(ip.into()),
            Some(url::Host::Ipv6(ip)) => guard.permits(ip.into()),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                guard.allow_private
                    || !(d.eq_ignore_ascii_case("localhost")
                        || d.to_ascii_lowercase().ends_with(".localhost"))
            }
            None => {
                return Err(ProviderError::InvalidConfig(
                    "the request URL has no host".into(),
                ));
            }
        };
        if permitted {
            Ok(())
        } else {
            Err(endpoint::refused(url.host_str().unwrap_or_default()))
        }
    }

    /// Sends the request `make` builds, retrying 429, 5xx and transport errors.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, ProviderError> {
        let mut attempt = 0u32;
        loop {
            let request = make(&self.client)
                .build()
                .map_err(|e| ProviderError::InvalidConfig(format!("{what}: {}", without_url(e))))?;
            // The final URL, with every placeholder filled: a vendor-chosen id can make
            // the host an IP literal (`http://{{id}}/` with id 2852039166).
            self.check_host(request.url())?;
            let budget = self.budgets.key(&request);
            self.spend(what, budget).await?;
            let sent = tokio::time::Instant::now();
            let outcome = self.client.execute(request).await;
            if let Ok(resp) = &outcome {
                self.budgets.update(budget, resp.headers(), sent);
            }
            let (retryable, asked) = match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = read_body(resp, what).await;
                    self.observe(Some(status), sent);
                    let body = body?;
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
                    // X-RateLimit-Reset says when the rate window ends: it is a wait
                    // for a 429 only (a vendor sending it on every answer would
                    // otherwise hold a 503's retry for the rest of the window).
                    let asked = if status == 429 {
                        requested_wait(&headers)
                    } else {
                        retry_after(&headers)
                    };
                    // A 429 says nothing is left for this caller until the wait it
                    // asks for is over: the other requests sharing the budget wait
                    // too, instead of each running into a 429 of its own. (A 429's wait
                    // beyond --http-max-wait fails this call below and is not kept; a
                    // spent X-RateLimit window is, up to a day, with one probe every
                    // few minutes — see `Budgets::take`.)
                    if status == 429
                        && let Some(asked) = &asked
                        && asked.wait <= self.settings.max_wait
                    {
                        self.budgets.exhaust(budget, asked.wait);
                    }
                    (error, asked)
                }
                Err(e) => {
                    self.observe(None, sent);
                    (
                        ProviderError::Unavailable(format!("{what}: {}", transport_message(e))),
                        None,
                    )
                }
            };
            if let Some(asked) = &asked
                && asked.wait > self.settings.max_wait
            {
                return Err(retryable.with_note(format!(
                    "the provider asked to wait {}; rotor waits at most {} (--http-max-wait)",
                    asked.describe(),
                    humantime::format_duration(self.settings.max_wait)
                )));
            }
            if attempt >= self.settings.max_retries {
                return Err(retryable.after_retries(attempt + 1));
            }
            let wait = self.retry_wait(asked.map(|a| a.wait), attempt);
            // Not the error text: it may carry what the vendor echoed, and only the
            // provider wrapper knows which values to scrub from it.
            tracing::debug!(what, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Takes one request from the budget the vendor announced for this endpoint and
    /// credential, waiting for its window to reset when none is left (at most
    /// `--http-max-wait`; the whole call stays bounded by `--provider-timeout`).
    async fn spend(&self, what: &str, key: u64) -> Result<(), ProviderError> {
        loop {
            let Some(wait) = self.budgets.take(key, self.settings.max_wait) else {
                return Ok(());
            };
            if wait > self.settings.max_wait {
                return Err(ProviderError::RateLimited(format!(
                    "{what}: the provider's rate limit allows no request for {}; rotor waits at most {} (--http-max-wait)",
                    humantime::format_duration(Duration::from_secs(wait.as_secs())),
                    humantime::format_duration(self.settings.max_wait)
                )));
            }
            tracing::debug!(
                what,
                wait_ms = wait.as_millis() as u64,
                "waiting for the provider's rate-limit window"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// How long to wait before retry `attempt + 1`: what the vendor asked for, but
    /// never less than the backoff floor (a `Retry-After: 0`, negative or past would
    /// otherwise send every retry back to back).
    fn retry_wait(&self, asked: Option<Duration>, attempt: u32) -> Duration {
        match asked {
            Some(asked) => asked.max(self.backoff_floor(attempt)),
            None => self.backoff(attempt),
        }
    }

    /// The backoff for `attempt` without its jitter, at most `--http-max-wait`.
    fn backoff_floor(&self, attempt: u32) -> Duration {
        self.settings
            .backoff_base
            .saturating_mul(1 << attempt.min(10))
            .min(self.settings.max_wait)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let jitter = rand::rng().random_range(0.0..0.5);
        // Capped before the jitter: `mul_f64` panics past Duration::MAX (a huge
        // --http-backoff).
        let base = self.backoff_floor(attempt);
        Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + jitter))
            .unwrap_or(self.settings.max_wait)
            .min(self.settings.max_wait)
    }
}

fn guard(settings: &HttpSettings) -> Guard {
    Guard {
        allow_private: settings.allow_private_endpoints,
        allowed: settings.allow_private_cidrs.clone(),
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes, chunk by chunk: a vendor cannot make
/// rotor allocate more, nor keep it reading forever.
async fn read_body(mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, ProviderError> {
    let too_large = || {
        ProviderError::BadResponse(format!(
            "{what}: response larger than {} MiB",
            MAX_BODY / (1024 * 1024)
        ))
    };
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ProviderError::Unavailable(format!(
                    "{what}: reading the response failed: {}",
                    transport_message(e)
                )));
            }
        }
    }
}

fn without_url(e: reqwest::Error) -> String {
    transport_message(e)
}

fn transport_message(e: reqwest::Error) -> String {
    // reqwest's Display carries the URL, which can carry a key (`{{key}}` in a test
    // URL): drop it. The source chain says why (and carries the endpoint guard's
    // refusal).
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_huge_backoff_flag_is_capped_not_a_panic() {
        let client = HttpClient::new(HttpSettings {
            backoff_base: Duration::MAX,
            ..HttpSettings::default()
        });
        for attempt in [0, 3, 40] {
            assert!(client.backoff(attempt) <= client.settings.max_wait);
        }
    }

    #[tokio::test]
    async fn a_wait_beyond_the_cap_fails_the_attempt_with_what_was_asked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: inf\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
            }
        });
        let client = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        let err = client
            .send("probing", |c| c.get(format!("http://{addr}/")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("asked to wait more than a year (Retry-After: inf)")
                && err.contains("rotor waits at most 1m (--http-max-wait)"),
            "{err}"
        );
    }

    /// A vendor on 127.0.0.1 giving every request `answer`; counts the requests.
    async fn counting_vendor(answer: &'static [u8]) -> (String, Arc<AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    if matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let _ = sock.write_all(answer).await;
                    }
                });
            }
        });
        (url, count)
    }

    fn open_client() -> HttpClient {
        HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        })
    }

    #[tokio::test]
    async fn a_spent_window_longer_than_the_max_wait_fails_without_sending() {
        let (url, requests) = counting_vendor(b"HTTP/1.1 200 OK\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 3600\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        let client = open_client();
        let reply = client.send("listing", |c| c.get(&url)).await.unwrap();
        assert_eq!(reply.status, 200);
        let err = client.send("listing", |c| c.get(&url)).await.unwrap_err();
        assert!(matches!(err, ProviderError::RateLimited(_)), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("allows no request for 59m") && err.contains("(--http-max-wait)"),
            "{err}"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "the vendor saw a second request"
        );
    }

    #[tokio::test]
    async fn a_429s_retry_after_holds_back_every_caller_sharing_the_budget() {
        let (url, requests) = counting_vendor(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        let client = open_client();
        let calls = (0..8).map(|_| client.send("revoking", |c| c.get(&url)));
        // What the vendor sees within 4 s: the first request (the others wait for
        // its answer), then, once the 3 s it asked for are over, one more. Without
        // the 429 kept, all the waiting callers would go at once after the probe.
        let _ =
            tokio::time::timeout(Duration::from_secs(4), futures::future::join_all(calls)).await;
        let seen = requests.load(Ordering::SeqCst);
        assert!(seen <= 2, "the vendor saw {seen} requests");
        assert!(seen >= 1);
    }

    #[tokio::test]
    async fn every_attempt_is_observed_under_the_provider_kind_with_its_status() {
        let (url, _) = counting_vendor(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        type Seen = std::sync::Mutex<Vec<(&'static str, Option<u16>)>>;
        let seen: Arc<Seen> = Arc::default();
        let record = seen.clone();
        let client = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            max_retries: 1,
            backoff_base: Duration::from_millis(10),
            ..HttpSettings::default()
        })
        .observed(Arc::new(move |provider, status, _| {
            record.lock().unwrap().push((provider, status));
        }));
        let err = client
            .for_provider("http")
            .send("issuing", |c| c.get(&url))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::RateLimited(_)), "{err}");
        // No answer at all: observed as None.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let _ = client
            .for_provider("convex")
            .send("listing", |c| c.get(format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("http", Some(429)),
                ("http", Some(429)),
                ("convex", None),
                ("convex", None)
            ]
        );
    }

    #[test]
    fn a_retry_after_of_zero_still_waits_the_backoff() {
        let client = open_client();
        for attempt in 0..4 {
            let floor = client.backoff_floor(attempt);
            assert!(!floor.is_zero());
            assert!(client.retry_wait(Some(Duration::ZERO), attempt) >= floor);
            assert!(client.retry_wait(None, attempt) >= floor);
            // A longer wait asked for is kept.
            let long = floor + Duration::from_secs(7);
            assert_eq!(client.retry_wait(Some(long), attempt), long);
        }
    }

    #[test]
    fn a_max_wait_below_the_probe_is_raised_to_it() {
        let client = HttpClient::new(HttpSettings {
            max_wait: Duration::ZERO,
            ..HttpSettings::default()
        });
        assert_eq!(client.settings.max_wait, HttpSettings::MIN_MAX_WAIT);
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                    // Endless: the client has to stop.
                    while sock.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        let client = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            ..HttpSettings::default()
        });
        let err = client
            .send("listing", |c| c.get(format!("http://{addr}/")))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("response larger than 4 MiB"), "{err}");
    }

    #[tokio::test]
    async fn the_final_url_is_checked_and_errors_carry_no_url() {
        let client = HttpClient::new(HttpSettings::default());
        // 2852039166 is 169.254.169.254 written as one number.
        for url in [
            "http://2852039166/latest",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://localhost./",
        ] {
            let err = client
                .send("testing", |c| c.get(url))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("--allow-private-endpoints"), "{url}: {err}");
        }
        // A refused connection: the message must not carry the URL (a key in it).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let open = HttpClient::new(HttpSettings {
            allow_private_endpoints: true,
            max_retries: 0,
            ..HttpSettings::default()
        });
        let err = open
            .send("testing", |c| {
                c.get(format!(
                    "http://127.0.0.1:{port}/check?key=sk_live_secretvalue"
                ))
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("sk_live_secretvalue"), "{err}");
        assert!(!err.contains("/check"), "{err}");
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let reply = Reply {
            status: 200,
            body: br#"{"n": "sk_live_abcdefghijklmnop"}"#.to_vec(),
        };
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct N {
            n: u64,
        }
        let err = reply.json::<N>("reading").unwrap_err().to_string();
        assert!(!err.contains("sk_live"), "{err}");
        assert!(err.contains("invalid type"), "{err}");
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
        // Keys with / + = and short mixed keys are redacted too; prose is kept.
        assert_eq!(
            vendor_message(br#"{"message":"key abc/def+ghi=jkl0 is bad"}"#),
            "key [redacted] is bad"
        );
        assert_eq!(
            vendor_message(br#"{"error":"unknown key sk_7Hq2LmP9x"}"#),
            "unknown key [redacted]"
        );
        assert_eq!(
            vendor_message(br#"{"error":"rate limit exceeded, try again later"}"#),
            "rate limit exceeded, try again later"
        );
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
        let one = HttpClient::new(HttpSettings {
            allow_private_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
            ..HttpSettings::default()
        });
        assert!(one.check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(one.check_url("http://127.0.0.2:8080/x").is_err());
        assert!(one.check_url("http://169.254.169.254/").is_err());
    }
}
