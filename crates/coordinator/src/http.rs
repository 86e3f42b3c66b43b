//! The coordinator's HTTP side (`tessera coordinator --http ADDR`): Prometheus metrics at
//! `/metrics`, behind the same bearer token as the gRPC APIs when one is configured.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::grpc::Refusal;
use crate::scheduler::{DURATION_BUCKETS, MetricsSnapshot};
use crate::service::Coordinator;

/// Serves the HTTP endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: Arc<Coordinator>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(coordinator);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The refusal of a request without the coordinator's bearer token (when it has one).
fn refusal(c: &Coordinator, headers: &HeaderMap) -> Option<Response> {
    let token = c.config.token.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Some(match crate::grpc::refusal(given, token)? {
        Refusal::Wrong => (StatusCode::UNAUTHORIZED, "wrong bearer token\n").into_response(),
        Refusal::Missing => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing bearer token (Authorization: Bearer <token>)\n",
        )
            .into_response(),
    })
}

async fn metrics(State(c): State<Arc<Coordinator>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&c, &headers) {
        return refused;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&c.metrics()),
    )
        .into_response()
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition of a snapshot.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::new();
    head(&mut out, "tessera_jobs", "gauge", "Jobs by state.");
    for state in ["planning", "running", "succeeded", "failed", "cancelled"] {
        let n = m.jobs.get(state).copied().unwrap_or(0);
        let _ = writeln!(out, "tessera_jobs{{state=\"{state}\"}} {n}");
    }
    let by_kind = [
        (
            "tessera_tasks_queued",
            "gauge",
            "Tasks waiting for a worker (the queue depth), by task kind.",
            &m.queued,
        ),
        (
            "tessera_tasks_running",
            "gauge",
            "Tasks leased to a worker now, by task kind.",
            &m.running,
        ),
        (
            "tessera_tasks_leased_total",
            "counter",
            "Leases handed out, by task kind.",
            &m.counters.leased,
        ),
        (
            "tessera_tasks_done_total",
            "counter",
            "Tasks finished, by task kind.",
            &m.counters.done,
        ),
        (
            "tessera_tasks_failed_total",
            "counter",
            "Task failures reported by workers, by task kind.",
            &m.counters.failed,
        ),
    ];
    for (metric, kind, help, values) in by_kind {
        head(&mut out, metric, kind, help);
        for (k, v) in values {
            let _ = writeln!(out, "{metric}{{kind=\"{k}\"}} {v}");
        }
    }
    let queue: u64 = m.queued.values().sum();
    let c = &m.counters;
    let scalars = [
        (
            "tessera_queue_depth",
            "gauge",
            "Tasks waiting for a worker, all kinds: what an autoscaler scales workers on.",
            queue,
        ),
        (
            "tessera_workers",
            "gauge",
            "Workers heard from within three lease lengths.",
            m.workers,
        ),
        (
            "tessera_lease_expiries_total",
            "counter",
            "Leases that expired (their task went back to the queue).",
            c.lease_expiries,
        ),
        (
            "tessera_task_retries_total",
            "counter",
            "Tasks run again after a failure or a lost lease.",
            c.retries,
        ),
        (
            "tessera_written_bytes_total",
            "counter",
            "Bytes of values finished tasks reported writing.",
            c.bytes_written,
        ),
        (
            "tessera_written_tiles_total",
            "counter",
            "Tiles (chunks, steps) finished tasks reported writing.",
            c.tiles_written,
        ),
    ];
    for (metric, kind, help, v) in scalars {
        head(&mut out, metric, kind, help);
        let _ = writeln!(out, "{metric} {v}");
    }
    let metric = "tessera_task_duration_seconds";
    head(
        &mut out,
        metric,
        "histogram",
        "From lease to report of finished tasks, by task kind.",
    );
    for (kind, (buckets, sum, count)) in &c.durations {
        let mut cumulative = 0;
        for (le, n) in DURATION_BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{metric}_bucket{{kind=\"{kind}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{metric}_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{metric}_sum{{kind=\"{kind}\"}} {sum}");
        let _ = writeln!(out, "{metric}_count{{kind=\"{kind}\"}} {count}");
    }
    out
}
