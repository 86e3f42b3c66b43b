//! A worker's own `/metrics` (`tessera worker --http ADDR`): the tasks it ran by kind, their
//! durations, what they wrote, and what it is running now — behind the worker's token when it
//! has one, like the coordinator's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tessera_core::job::TaskOutput;
use tessera_core::metrics::{Exposition, Histogram, Refusal, bearer_refusal};

/// Counters of one worker, updated by its lease loop.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    running: u64,
    done: BTreeMap<&'static str, u64>,
    failed: BTreeMap<&'static str, u64>,
    durations: BTreeMap<&'static str, Histogram>,
    bytes: u64,
    tiles: u64,
    undelivered: u64,
}

impl WorkerMetrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn started(&self) {
        self.counts().running += 1;
    }

    /// A task of `kind` ended after `seconds`, with its output when it succeeded.
    pub(crate) fn ended(&self, kind: &'static str, seconds: f64, output: Option<&TaskOutput>) {
        let mut c = self.counts();
        c.running = c.running.saturating_sub(1);
        match output {
            Some(o) => {
                *c.done.entry(kind).or_default() += 1;
                c.durations.entry(kind).or_default().observe(seconds);
                c.bytes += o.bytes;
                c.tiles += o.tiles;
            }
            None => *c.failed.entry(kind).or_default() += 1,
        }
    }

    pub(crate) fn undelivered(&self) {
        self.counts().undelivered += 1;
    }

    /// The Prometheus text exposition of the counters now.
    pub fn render(&self) -> String {
        let c = self.counts();
        let mut out = Exposition::default();
        for (metric, help, values) in [
            (
                "tessera_worker_tasks_done_total",
                "Tasks this worker finished, by task kind.",
                &c.done,
            ),
            (
                "tessera_worker_tasks_failed_total",
                "Tasks that failed on this worker, by task kind.",
                &c.failed,
            ),
        ] {
            out.head(metric, "counter", help);
            for (k, v) in values {
                out.sample(metric, &[("kind", k)], v);
            }
        }
        out.head(
            "tessera_worker_tasks_running",
            "gauge",
            "Tasks this worker is running now.",
        );
        out.sample("tessera_worker_tasks_running", &[], c.running);
        for (metric, help, v) in [
            (
                "tessera_worker_written_bytes_total",
                "Bytes of values this worker's finished tasks wrote.",
                c.bytes,
            ),
            (
                "tessera_worker_written_tiles_total",
                "Tiles (chunks, steps) this worker's finished tasks wrote.",
                c.tiles,
            ),
            (
                "tessera_worker_reports_undelivered_total",
                "Task reports the coordinator never received (the task is leased again).",
                c.undelivered,
            ),
        ] {
            out.head(metric, "counter", help);
            out.sample(metric, &[], v);
        }
        let metric = "tessera_worker_task_duration_seconds";
        out.head(
            metric,
            "histogram",
            "How long this worker's finished tasks ran, by task kind.",
        );
        for (kind, h) in &c.durations {
            out.histogram(metric, &[("kind", kind)], h);
        }
        out.finish()
    }
}

#[derive(Debug, Clone)]
struct Shared {
    metrics: Arc<WorkerMetrics>,
    token: Option<String>,
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<WorkerMetrics>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Shared { metrics, token });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        match bearer_refusal(given, token) {
            Some(Refusal::Wrong) => {
                return (StatusCode::UNAUTHORIZED, "wrong bearer token\n").into_response();
            }
            Some(Refusal::Missing) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "missing bearer token (Authorization: Bearer <token>)\n",
                )
                    .into_response();
            }
            None => {}
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
