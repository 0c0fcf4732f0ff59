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
#[derive(Clone, Default)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// How much of the /metrics text is made before it is sent.
const CHUNK: usize = 64 * 1024;

/// How long a scrape that does not read its answer may hold the encoder (and the
/// metric families' read locks) before the answer is cut short.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// /metrics, sent in pieces of about [`CHUNK`] bytes as the text is made: at 20,000
/// resources the text is about 15 MB, and made whole (a `String` doubling as it grew)
/// every scrape took some 30 MB for a moment — a third of rotor's peak RSS.
async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            text: String::with_capacity(CHUNK + 1024),
            tx,
            runtime,
        };
        // An error: the scraper went away (or stopped reading): nothing to tell it.
        if h.metrics.encode_to(&mut out).is_ok() {
            let _ = out.send();
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(body),
    )
}

/// The /metrics text, handed to the response a chunk at a time.
struct Chunks {
    text: String,
    tx: tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
    runtime: tokio::runtime::Handle,
}

impl Chunks {
    fn send(&mut self) -> std::fmt::Result {
        let chunk = std::mem::replace(&mut self.text, String::with_capacity(CHUNK + 1024));
        self.runtime
            .block_on(self.tx.send_timeout(Ok(chunk), SEND_TIMEOUT))
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_are_sent_in_chunks_that_make_the_whole_text() {
        let h = Health::default();
        for i in 0..5_000 {
            let name = format!("r{i}");
            // (No issue time: an age would differ between two scrapes.)
            h.metrics.schedule("shop", &name, Some(1.8e9), Some(1.7e9));
        }
        let whole = h.metrics.encode();
        assert!(whole.len() > 4 * CHUNK, "{}", whole.len());
        let response = metrics(State(h.clone())).await.into_response();
        let mut body = response.into_body().into_data_stream();
        let mut sent = String::new();
        let mut chunks = 0;
        use futures::StreamExt;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() < CHUNK + 1024, "{}", chunk.len());
            sent.push_str(std::str::from_utf8(&chunk).unwrap());
            chunks += 1;
        }
        assert!(chunks > 4, "{chunks}");
        assert!(sent == whole, "the chunks differ from the whole text");
    }
}
