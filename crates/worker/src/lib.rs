//! # tessera-worker
//!
//! A worker registers with a coordinator (checking the protocol version), then leases tasks,
//! runs them with `tessera-core` on its own rayon pool (never on the async runtime), heartbeats
//! the tasks it holds, and reports outputs or structured errors. When `shutdown` completes it
//! stops leasing, finishes what it holds, reports, and returns. It counts what it ran for its
//! `/metrics` ([`metrics`]).

pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_client::{Retry, unreachable};
use tessera_core::engine::{self, StageContext};
use tessera_core::job::{
    JobId, LeasedTask, TaskFailure, TaskOutput, TaskPayload, TaskReport, WorkerId,
};
use tessera_proto::pb::worker_service_client::WorkerServiceClient;
use tessera_proto::{PROTOCOL_VERSION, from_proto, pb, to_proto};
use tonic::Request;
use tonic::transport::Channel;

/// How long a finished task's report is retried before it is left to the lease's expiry.
const REPORT_GRACE: Duration = Duration::from_secs(60);

/// Reports of one lease's quick tasks sent in one call, at most; and how long they gather.
const MAX_REPORT_BATCH: usize = 64;
const REPORT_GATHER: Duration = Duration::from_millis(10);

/// Sends reports: one with `ReportTask`, several with `ReportTasks`.
async fn send_reports(
    client: &Client,
    batch: &[pb::ReportTaskRequest],
) -> Result<(), tonic::Status> {
    let mut inner = client.inner.clone();
    if let [one] = batch {
        inner.report_task(client.req(one.clone())).await.map(drop)
    } else {
        let request = client.req(pb::ReportTasksRequest {
            reports: batch.to_vec(),
        });
        inner.report_tasks(request).await.map(drop)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    pub threads: usize,
    pub token: Option<String>,
    pub name: String,
    /// Tasks leased at once.
    pub max_tasks: u32,
    /// Report this protocol version instead of ours (for testing the refusal).
    pub protocol_version: u32,
    /// How long to keep trying a coordinator that cannot be reached (not started yet,
    /// restarting): `None`, the default, is forever.
    pub patience: Option<Duration>,
    /// For an `https://` coordinator: the PEM certificate of the CA to trust.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// What the worker counts for its `/metrics`.
    pub metrics: Arc<metrics::WorkerMetrics>,
}

/// A channel to `url`; `https://` URLs use TLS and trust `ca_pem`.
async fn connect(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, String> {
    tessera_client::connect(url, ca_pem)
        .await
        .map_err(|e| match e {
            tessera_client::ClientError::Connect { message, .. } => message,
            other => other.to_string(),
        })
}

impl WorkerConfig {
    pub fn new(coordinator: impl Into<String>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            token: None,
            name: format!("worker-{}", std::process::id()),
            max_tasks: 1,
            protocol_version: PROTOCOL_VERSION,
            tls_ca_pem: None,
            patience: None,
            metrics: Arc::default(),
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the coordinator at {0}: {1}")]
    Connect(String, String),
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("coordinator call failed: {0}")]
    Rpc(String),
    #[error("cannot start the worker: {0}")]
    Start(String),
}

fn rpc(s: tonic::Status) -> WorkerError {
    WorkerError::Rpc(format!("{}: {}", s.code(), s.message()))
}

/// A client that adds the bearer token to every call.
#[derive(Debug, Clone)]
struct Client {
    inner: WorkerServiceClient<Channel>,
    token: Option<String>,
}

impl Client {
    fn req<T>(&self, msg: T) -> Request<T> {
        tessera_proto::authorized(msg, self.token.as_deref())
    }
}

/// Runs a worker until `shutdown` completes, then drains.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    // A coordinator not started yet, or restarting, is waited for (with `patience`).
    let mut retry = Retry::new(config.patience);
    let channel = loop {
        match connect(&config.coordinator, config.tls_ca_pem.as_deref()).await {
            Ok(channel) => break channel,
            Err(e) => match retry.next_wait() {
                Some(wait) => {
                    tracing::warn!(coordinator = %config.coordinator, error = %e, "cannot reach the coordinator; trying again");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(WorkerError::Connect(config.coordinator.clone(), e)),
            },
        }
    };
    let client = Client {
        inner: WorkerServiceClient::new(channel),
        token: config.token.clone(),
    };
    let register = || {
        let mut inner = client.inner.clone();
        let request = client.req(pb::RegisterWorkerRequest {
            protocol_version: config.protocol_version,
            threads: config.threads as u32,
            name: config.name.clone(),
        });
        async move { inner.register_worker(request).await }
    };
    let mut registered = register().await;
    while let Err(s) = &registered
        && unreachable(s)
        && let Some(wait) = retry.next_wait()
    {
        tokio::time::sleep(wait).await;
        registered = register().await;
    }
    let reg = registered
        .map_err(|s| {
            if matches!(
                s.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated
            ) {
                WorkerError::Refused(s.message().to_string())
            } else {
                rpc(s)
            }
        })?
        .into_inner();
    let worker =
        from_proto::worker_id(&reg.worker_id).map_err(|e| WorkerError::Rpc(e.to_string()))?;
    tracing::info!(%worker, "registered");

    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let heartbeat = {
        let (client, held) = (client.clone(), held.clone());
        let period = Duration::from_millis(reg.heartbeat_millis.max(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let ids: Vec<String> = held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                let req = client.req(pb::HeartbeatRequest {
                    worker_id: worker.to_string(),
                    task_ids: ids,
                });
                if let Err(e) = client.inner.clone().heartbeat(req).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        })
    };
    let result = lease_loop(&config, &client, worker, &held, shutdown).await;
    heartbeat.abort();
    result
}

async fn lease_loop(
    config: &WorkerConfig,
    client: &Client,
    worker: WorkerId,
    held: &Arc<Mutex<HashSet<String>>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WorkerError> {
    tokio::pin!(shutdown);
    let mut contexts: HashMap<(JobId, u32), Arc<StageContext>> = HashMap::new();
    let mut idle = Duration::from_millis(5);
    let pool = tessera_core::engine::ComputePool::new(config.threads)
        .map_err(|e| WorkerError::Start(e.to_string()))?;
    let mut retry = Retry::new(config.patience);
    loop {
        let mut inner = client.inner.clone();
        let request = client.req(pb::LeaseTasksRequest {
            worker_id: worker.to_string(),
            max_tasks: config.max_tasks,
        });
        let reply = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = inner.lease_tasks(request) => r,
        };
        let leases = match reply {
            Ok(r) => {
                retry.contact();
                r.into_inner().leases
            }
            // The coordinator is down or restarting: keep trying (idle or not), with patience.
            Err(s) if unreachable(&s) => match retry.next_wait() {
                Some(wait) => {
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
                None => return Err(rpc(s)),
            },
            Err(s) => return Err(rpc(s)),
        };
        if leases.is_empty() {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(Duration::from_millis(50));
            continue;
        }
        idle = Duration::from_millis(5);
        let leased = leases.len();
        let mut pending: Vec<(String, pb::ReportTaskRequest)> = Vec::new();
        let mut gathering = std::time::Instant::now();
        for (i, lease) in leases.into_iter().enumerate() {
            // Told to stop: leased tasks not started are left to expire (and be leased again);
            // those done and not reported yet are reported (once) first.
            let stopping = tokio::select! {
                biased;
                _ = &mut shutdown => true,
                _ = std::future::ready(()) => false,
            };
            if stopping {
                let batch: Vec<pb::ReportTaskRequest> =
                    pending.iter().map(|(_, r)| r.clone()).collect();
                if !batch.is_empty() && send_reports(client, &batch).await.is_err() {
                    config.metrics.undelivered();
                }
                return Ok(());
            }
            let lease = LeasedTask::try_from(lease).map_err(|e| WorkerError::Rpc(e.to_string()))?;
            let id = lease.task.to_string();
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone());
            tracing::debug!(task = %id, attempt = lease.attempt, "task started");
            config.metrics.started();
            let began = std::time::Instant::now();
            let outcome = execute(client, &mut contexts, &pool, &lease).await;
            config.metrics.ended(
                lease.payload.name(),
                began.elapsed().as_secs_f64(),
                outcome.as_ref().ok(),
            );
            match &outcome {
                Ok(o) => {
                    tracing::info!(task = %id, attempt = lease.attempt, tiles = o.tiles, "task done")
                }
                Err(f) => {
                    tracing::warn!(task = %id, attempt = lease.attempt, error = %f.message, "task failed")
                }
            }
            let report = to_proto::report(
                worker,
                &TaskReport {
                    task: lease.task,
                    outcome,
                },
            );
            // Quick tasks of one lease are reported together; a slow task (or the lease's last)
            // sends what has gathered at once. Every report is delivered before the next lease.
            pending.push((id, report));
            let last = i + 1 == leased;
            if !(last || pending.len() >= MAX_REPORT_BATCH || gathering.elapsed() >= REPORT_GATHER)
            {
                continue;
            }
            let batch: Vec<pb::ReportTaskRequest> =
                pending.iter().map(|(_, r)| r.clone()).collect();
            if batch.len() > 1 {
                tracing::debug!(reports = batch.len(), "reports sent together");
            }
            let mut sent = send_reports(client, &batch).await;
            // A coordinator that is restarting will lease the tasks again if this never
            // arrives; the worker itself goes on waiting for the coordinator in the lease loop.
            let deadline = std::time::Instant::now() + REPORT_GRACE;
            while matches!(&sent, Err(s) if unreachable(s)) && std::time::Instant::now() < deadline
            {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                sent = send_reports(client, &batch).await;
            }
            let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
            for (id, _) in pending.drain(..) {
                h.remove(&id);
                if let Err(s) = &sent {
                    config.metrics.undelivered();
                    tracing::warn!(task = %id, error = %s, "report not delivered; the task will be leased again");
                }
            }
            drop(h);
            gathering = std::time::Instant::now();
        }
    }
}

/// What the tasks of a job's stage need, asked of the coordinator once per (job, stage).
async fn stage_context(
    client: &Client,
    contexts: &mut HashMap<(JobId, u32), Arc<StageContext>>,
    job: JobId,
    stage: u32,
) -> Result<Arc<StageContext>, TaskFailure> {
    if let Some(p) = contexts.get(&(job, stage)) {
        return Ok(p.clone());
    }
    let exec = |m: String| TaskFailure {
        kind: tessera_core::job::FailureKind::Execution,
        message: m,
    };
    let resp = client
        .inner
        .clone()
        .get_stage_plan(client.req(pb::StagePlanRequest {
            job_id: job.to_string(),
            stage,
        }))
        .await
        .map_err(|s| exec(format!("cannot get the plan of job {job}: {}", s.message())))?;
    let ctx: StageContext = serde_json::from_slice(&resp.into_inner().plan_json)
        .map_err(|e| exec(format!("bad plan of job {job}: {e}")))?;
    let ctx = Arc::new(ctx);
    contexts.insert((job, stage), ctx.clone());
    Ok(ctx)
}

/// Runs a leased task of any kind: its job's context, then the engine, off the async runtime.
async fn execute(
    client: &Client,
    contexts: &mut HashMap<(JobId, u32), Arc<StageContext>>,
    pool: &tessera_core::engine::ComputePool,
    lease: &LeasedTask,
) -> Result<TaskOutput, TaskFailure> {
    let task = lease.task;
    if lease.payload == TaskPayload::Noop {
        return Ok(TaskOutput::default());
    }
    let ctx = stage_context(client, contexts, task.job, task.stage).await?;
    let payload = lease.payload.clone();
    let pool = pool.clone();
    match tokio::task::spawn_blocking(move || engine::execute(&ctx, &payload, &pool)).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(TaskFailure::from_error(&e)),
        Err(e) => Err(TaskFailure {
            kind: tessera_core::job::FailureKind::Execution,
            message: format!("the task panicked: {e}"),
        }),
    }
}
