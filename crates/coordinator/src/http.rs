//! The coordinator's HTTP side (`tessera coordinator --http ADDR`): the status page (the jobs
//! with their progress and ETA; for a job, a map of its tasks coloured by state and a preview
//! of what it wrote), its JSON, and Prometheus metrics at `/metrics` — all behind the same
//! bearer token as the gRPC APIs when one is configured. A browser gives the token once as
//! `?token=`; it is kept in a cookie for the page's own requests.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tessera_core::job::{JobId, JobState, JobStatus};
use tessera_core::preview::{LayerKind, PreviewOptions, layers_under, preview};

use tessera_core::metrics::{Exposition, Refusal, bearer_refusal};

use crate::scheduler::MetricsSnapshot;
use crate::service::Coordinator;

/// Serves the HTTP endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: Arc<Coordinator>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/preview.png", get(job_preview))
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/metrics", get(metrics))
        // The page's own assets hold no data: served to anyone.
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE_CSS) }),
        )
        .route(
            "/page.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], PAGE_JS) }),
        )
        .with_state(coordinator);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The name of the cookie that keeps a browser's token.
const COOKIE: &str = "tessera_token";

/// A query string's pairs.
fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query.as_deref().map_or_else(Vec::new, |q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The token a request carries: an `Authorization` header, else the page's cookie, else
/// `?token=` (as an `Authorization` value).
fn given_token(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return Some(v.to_str().unwrap_or("").to_string());
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    cookie
        .or_else(|| query_value(query, "token"))
        .map(|t| format!("Bearer {t}"))
}

/// The refusal of a request without the coordinator's bearer token (when it has one).
fn refusal(c: &Coordinator, headers: &HeaderMap, query: &[(String, String)]) -> Option<Refused> {
    let token = c.config.token.as_deref()?;
    let given = given_token(headers, query);
    Some(match bearer_refusal(given.as_deref(), token)? {
        Refusal::Wrong => Refused::new(StatusCode::UNAUTHORIZED, "wrong bearer token"),
        Refusal::Missing => Refused {
            challenge: true,
            ..Refused::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer <token>, or ?token=<token> in a browser)",
            )
        },
    })
}

/// The job `id` names, for a request that brings the token: what every job route starts with.
fn authorized_job(
    c: &Coordinator,
    headers: &HeaderMap,
    query: &[(String, String)],
    id: &str,
) -> Result<JobStatus, Refused> {
    match refusal(c, headers, query) {
        Some(refused) => Err(refused),
        None => find_job(c, id),
    }
}

/// A page for a browser: when the request brought the right token in its query, the token is
/// kept in a cookie for the page's own requests (only this site's, not readable by scripts).
fn page(c: &Coordinator, query: &[(String, String)], html: String) -> Response {
    let mut response = Html(html).into_response();
    if let (Some(token), Some(given)) = (c.config.token.as_deref(), query_value(query, "token"))
        && given == token
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        ))
    {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn index(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query_pairs(&query);
    if let Some(refused) = refusal(&c, &headers, &query) {
        return refused.into_response();
    }
    page(&c, &query, INDEX_HTML.to_string())
}

async fn job_page(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query_pairs(&query);
    let job = match authorized_job(&c, &headers, &query, &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    page(
        &c,
        &query,
        JOB_HTML.replace("{{JOB_ID}}", &job.id.to_string()),
    )
}

/// A request that cannot be answered: its status, the message that says why, and whether it
/// asks for a bearer token (`WWW-Authenticate`).
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    message: String,
    challenge: bool,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            message: message.into(),
            challenge: false,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = format!("{}\n", self.message);
        if self.challenge {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

/// The job `id` names, or a 400/404 saying why not.
fn find_job(c: &Coordinator, id: &str) -> Result<JobStatus, Refused> {
    let job: JobId = id
        .parse()
        .map_err(|_| Refused::new(StatusCode::BAD_REQUEST, format!("{id:?} is not a job id")))?;
    c.status(job)
        .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, format!("no job {job}")))
}

/// A job's progress in 0..=1 (by tiles when it counts them, else by tasks) and, while it
/// runs, the seconds it still needs at the rate it has had.
fn progress(s: &JobStatus) -> (f64, Option<f64>) {
    let fraction = if s.tiles_total > 0 {
        s.tiles_done as f64 / s.tiles_total as f64
    } else if s.tasks_total > 0 {
        s.tasks_done as f64 / s.tasks_total as f64
    } else {
        0.0
    };
    let fraction = if s.state == JobState::Succeeded {
        1.0
    } else {
        fraction.min(1.0)
    };
    let eta = (!s.state.is_terminal() && fraction > 0.0)
        .then(|| s.elapsed_ms as f64 / 1000.0 * (1.0 - fraction) / fraction);
    (fraction, eta)
}

fn job_json(s: &JobStatus) -> Value {
    let (fraction, eta) = progress(s);
    json!({
        "id": s.id.to_string(),
        "name": s.name,
        "output": s.output,
        "state": s.state.name(),
        "stage": s.stage,
        "tasks_total": s.tasks_total,
        "tasks_done": s.tasks_done,
        "tiles_total": s.tiles_total,
        "tiles_done": s.tiles_done,
        "bytes_written": s.bytes_written,
        "retries": s.retries,
        "error": s.error,
        "elapsed_s": s.elapsed_ms as f64 / 1000.0,
        "progress": fraction,
        "eta_s": eta,
    })
}

async fn api_jobs(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&c, &headers, &query_pairs(&query)) {
        return refused.into_response();
    }
    // Newest first.
    let jobs: Vec<Value> = c.jobs().iter().rev().map(job_json).collect();
    json_response(&Value::from(jobs))
}

async fn api_job(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let status = match authorized_job(&c, &headers, &query_pairs(&query), &id) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut body = job_json(&status);
    if let Some(map) = c.tile_map(status.id) {
        let tasks: Vec<Value> = map
            .tasks
            .iter()
            .map(|t| {
                json!({
                    "kind": t.kind,
                    "state": t.state.name(),
                    "attempts": t.attempts,
                    "keys": t.keys,
                })
            })
            .collect();
        body["map"] = json!({ "stage": map.stage, "tasks": tasks });
    }
    // What a finished job wrote that can be previewed.
    if status.state == JobState::Succeeded {
        let output = status.output.clone();
        let layers = tokio::task::spawn_blocking(move || layers_under(&output))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        body["layers"] = layers
            .into_iter()
            .map(|(name, kind)| {
                json!({
                    "name": name,
                    "kind": match kind { LayerKind::Raster => "raster", LayerKind::Cube => "cube" },
                })
            })
            .collect();
    }
    json_response(&body)
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// The query's value of `name` parsed, or a 400 naming it.
fn parsed<T: std::str::FromStr>(
    query: &[(String, String)],
    name: &str,
    default: T,
) -> Result<T, Refused> {
    match query_value(query, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| Refused::new(StatusCode::BAD_REQUEST, format!("bad {name}: {v:?}"))),
    }
}

async fn job_preview(
    State(c): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    match preview_png(&c, &headers, &query_pairs(&query), &id).await {
        Ok(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The PNG a preview request asks for, or why not.
async fn preview_png(
    c: &Coordinator,
    headers: &HeaderMap,
    query: &[(String, String)],
    id: &str,
) -> Result<Vec<u8>, Refused> {
    let status = authorized_job(c, headers, query, id)?;
    if status.state != JobState::Succeeded {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            format!(
                "job {} is {}: a preview needs it to have succeeded",
                status.id,
                status.state.name()
            ),
        ));
    }
    // A product of the job's output, by its name: one path segment, nothing above the output.
    let layer = query_value(query, "layer").unwrap_or("");
    if layer.contains('/') || layer.contains('\\') || layer == "." || layer == ".." {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!("layer {layer:?} is not a product name of this job's output"),
        ));
    }
    let options = PreviewOptions {
        max_side: parsed(query, "size", 1024usize)?.clamp(1, 4096),
        band: parsed(query, "band", 1usize)?,
        var: query_value(query, "var").map(str::to_string),
        time: query_value(query, "time").map(str::to_string),
    };
    let url = if layer.is_empty() {
        status.output.clone()
    } else {
        format!("{}/{layer}", status.output.trim_end_matches('/'))
    };
    match tokio::task::spawn_blocking(move || preview(&url, &options)).await {
        Ok(Ok(p)) => Ok(p.png),
        Ok(Err(e @ tessera_core::Error::InvalidArgument(_))) => {
            Err(Refused::new(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Ok(Err(e)) => Err(Refused::new(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err(Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the preview stopped: {e}"),
        )),
    }
}

async fn metrics(
    State(c): State<Arc<Coordinator>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&c, &headers, &query_pairs(&query)) {
        return refused.into_response();
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

const INDEX_HTML: &str = include_str!("page/index.html");
const JOB_HTML: &str = include_str!("page/job.html");
const STYLE_CSS: &str = include_str!("page/style.css");
const PAGE_JS: &str = include_str!("page/page.js");

/// The Prometheus text exposition of a snapshot.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = Exposition::default();
    out.head("tessera_jobs", "gauge", "Jobs by state.");
    for state in ["planning", "running", "succeeded", "failed", "cancelled"] {
        let n = m.jobs.get(state).copied().unwrap_or(0);
        out.sample("tessera_jobs", &[("state", state)], n);
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
        out.head(metric, kind, help);
        for (k, v) in values {
            out.sample(metric, &[("kind", k)], v);
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
        out.head(metric, kind, help);
        out.sample(metric, &[], v);
    }
    let metric = "tessera_task_duration_seconds";
    out.head(
        metric,
        "histogram",
        "From lease to report of finished tasks, by task kind.",
    );
    for (kind, h) in &c.durations {
        out.histogram(metric, &[("kind", kind)], h);
    }
    out.finish()
}
