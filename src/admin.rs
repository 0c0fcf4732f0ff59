//! The admin server: `/metrics` (Prometheus), `/livez`, `/readyz`. Ready once the
//! controller's watches have synced — or while this replica stands by for the leader
//! lease, so a rolling update of a leader-elected Deployment never stalls.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin server reports.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// The scrapes that may run at once ([`SCRAPES`]).
    scrapes: Arc<tokio::sync::Semaphore>,
    /// [`SCRAPE_DEADLINE`] (shorter in tests).
    scrape_deadline: std::time::Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            metrics: Arc::default(),
            ready: Arc::default(),
            scrapes: Arc::new(tokio::sync::Semaphore::new(SCRAPES)),
            scrape_deadline: SCRAPE_DEADLINE,
        }
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// How much of the /metrics text is made before it is sent.
const CHUNK: usize = 64 * 1024;

/// How long one scrape may take in all — a scraper that reads slowly or not at all
/// included — before its answer is cut off, its thread and its snapshot of the
/// per-resource gauges freed. A whole scrape at 20,000 resources takes well under a
/// second; Prometheus itself gives up after 10 s by default. No metric's lock is held
/// meanwhile (see [`Metrics::encode_to`]).
const SCRAPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Scrapes made at once (two: an HA pair of Prometheus servers scraping in the same
/// second). Another waits, first come first served, while the deadline of one could
/// pass, then gets 503: at most this many threads and snapshots, however many
/// connections a client opens. (Keep who may connect to the metrics port at all to the
/// scrapers: the chart's `networkPolicy.metricsFrom`.)
const SCRAPES: usize = 2;

/// /metrics, sent in pieces of about [`CHUNK`] bytes as the text is made: at 20,000
/// resources the text is about 15 MB, and made whole (a `String` doubling as it grew)
/// every scrape took some 30 MB for a moment — a third of rotor's peak RSS.
///
/// An answer that cannot be made whole within [`SCRAPE_DEADLINE`] ends in an error, so
/// the connection is aborted rather than closed cleanly: a scraper never takes a
/// truncated exposition for a whole one.
async fn metrics(State(h): State<Health>) -> axum::response::Response {
    let deadline = h.scrape_deadline;
    let permit = tokio::time::timeout(deadline, h.scrapes.clone().acquire_owned()).await;
    let Ok(Ok(permit)) = permit else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "too many scrapes at once\n",
        )
            .into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
    let runtime = tokio::runtime::Handle::current();
    let made = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut out = Chunks {
            text: String::with_capacity(CHUNK + 1024),
            tx,
            runtime,
            until: tokio::time::Instant::now() + deadline,
        };
        h.metrics.encode_to(&mut out).and_then(|()| out.send())
    });
    let body = futures::stream::unfold(Some((rx, made)), move |state| async move {
        let (mut rx, made) = state?;
        if let Some(chunk) = rx.recv().await {
            return Some((Ok(chunk), Some((rx, made))));
        }
        // Every chunk is out: whole only if the encoder says so.
        let why = match made.await {
            Ok(Ok(())) => return None,
            Ok(Err(_)) => "the scraper did not read it within the deadline",
            Err(_) => "the encoder failed",
        };
        tracing::warn!(
            deadline_seconds = deadline.as_secs_f64(),
            "a /metrics scrape was cut off: {why}"
        );
        let cut = std::io::Error::other("the /metrics answer was cut off");
        Some((Err(cut), None))
    });
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// The /metrics text, handed to the response a chunk at a time.
struct Chunks {
    text: String,
    tx: tokio::sync::mpsc::Sender<String>,
    runtime: tokio::runtime::Handle,
    /// The scrape's deadline: a chunk not taken by then ends it.
    until: tokio::time::Instant,
}

impl Chunks {
    fn send(&mut self) -> std::fmt::Result {
        let chunk = std::mem::replace(&mut self.text, String::with_capacity(CHUNK + 1024));
        let left = self
            .until
            .saturating_duration_since(tokio::time::Instant::now());
        self.runtime
            .block_on(self.tx.send_timeout(chunk, left))
            .map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.text.push_str(s);
        if self.text.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
    }
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening (/metrics, /livez, /readyz)");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::KubeRequestLabels;
    use futures::StreamExt;

    /// `h` with 5,000 resources' gauges: a text of many chunks.
    fn busy() -> Health {
        let h = Health::default();
        for i in 0..5_000 {
            let name = format!("r{i}");
            // (No issue time: an age would differ between two scrapes.)
            h.metrics.schedule("shop", &name, Some(1.8e9), Some(1.7e9));
        }
        h
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_are_sent_in_chunks_that_make_the_whole_text() {
        let h = busy();
        let whole = h.metrics.encode();
        assert!(whole.len() > 4 * CHUNK, "{}", whole.len());
        assert!(whole.ends_with("# EOF\n"));
        let response = metrics(State(h.clone())).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        let mut sent = String::new();
        let mut chunks = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() < CHUNK + 1024, "{}", chunk.len());
            sent.push_str(std::str::from_utf8(&chunk).unwrap());
            chunks += 1;
        }
        assert!(chunks > 4, "{chunks}");
        assert!(sent == whole, "the chunks differ from the whole text");
    }

    /// A scraper that stops reading holds no metric's lock: a reconcile counting a
    /// request of a kind never seen (a write lock on its family) goes on at once,
    /// even when that family alone is many chunks long.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scraper_that_stops_reading_stalls_no_metric_update() {
        let h = busy();
        for i in 0..20_000 {
            h.metrics
                .kube_requests
                .get_or_create(&KubeRequestLabels {
                    verb: "get",
                    resource: format!("kind{i}"),
                })
                .inc();
        }
        let response = metrics(State(h.clone())).await;
        let mut body = response.into_body().into_data_stream();
        // One chunk read, then the scraper stalls with the encoder blocked on a full
        // channel (four chunks queued).
        assert!(body.next().await.unwrap().is_ok());
        let metrics = h.metrics.clone();
        let update = tokio::task::spawn_blocking(move || {
            for i in 0..100 {
                metrics
                    .kube_requests
                    .get_or_create(&KubeRequestLabels {
                        verb: "patch",
                        resource: format!("new{i}"),
                    })
                    .inc();
                metrics.schedule("shop", &format!("new{i}"), Some(1.0), None);
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), update)
            .await
            .expect("a metric update waited on a stalled scrape")
            .unwrap();
        drop(body);
    }

    /// An answer cut off (the scraper stopped reading longer than the send timeout)
    /// ends in an error, never in a clean end of a truncated text.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_off_answer_ends_in_an_error() {
        let mut h = busy();
        h.scrape_deadline = std::time::Duration::from_millis(50);
        let whole = h.metrics.encode();
        let response = metrics(State(h)).await;
        let mut body = response.into_body().into_data_stream();
        assert!(body.next().await.unwrap().is_ok());
        // Stalled for ten send timeouts: the encoder gives up.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut sent = 0;
        let mut failed = false;
        for _ in 0..1_000 {
            match body.next().await {
                Some(Ok(chunk)) => sent += chunk.len(),
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        assert!(failed, "the cut-off answer ended cleanly");
        assert!(sent + CHUNK < whole.len(), "{sent} of {}", whole.len());
    }

    /// Two scrapes at once; a third waits its turn (first come, first served) and is
    /// served when one ends — or gets 503 once its deadline passes first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_third_scrape_at_once_waits_its_turn() {
        let h = busy();
        let first = metrics(State(h.clone())).await;
        let second = metrics(State(h.clone())).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(second.status(), StatusCode::OK);
        let third = tokio::spawn(metrics(State(h.clone())));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "a third scrape ran beside two");
        // The first one read to its end: the third is served.
        let mut body = first.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), third)
            .await
            .expect("the third scrape was not served when the first ended")
            .unwrap();
        assert_eq!(third.status(), StatusCode::OK);
        drop(second);

        // Every permit held past a scrape's deadline: 503.
        let mut h = busy();
        h.scrape_deadline = std::time::Duration::from_millis(100);
        let _held = h.scrapes.clone().acquire_many_owned(SCRAPES as u32).await;
        let turned = metrics(State(h.clone())).await;
        assert_eq!(turned.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A scraper that reads, but too slowly to finish within the deadline, is cut off
    /// at the deadline (not after a timeout per chunk): it frees its place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_reader_is_cut_off_at_the_scrape_deadline() {
        let mut h = busy();
        h.scrape_deadline = std::time::Duration::from_millis(400);
        let response = metrics(State(h.clone())).await;
        let mut body = response.into_body().into_data_stream();
        let mut failed = false;
        // A chunk every 150 ms: each well within any per-chunk wait, the whole far
        // beyond the deadline.
        for _ in 0..1_000 {
            match body.next().await {
                Some(Ok(_)) => tokio::time::sleep(std::time::Duration::from_millis(150)).await,
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
                None => break,
            }
        }
        assert!(failed, "a slow reader kept its scrape past the deadline");
        // Its place is free again.
        let permits = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            h.scrapes.clone().acquire_many_owned(SCRAPES as u32),
        )
        .await;
        assert!(permits.is_ok(), "the cut-off scrape still holds its place");
    }
}
