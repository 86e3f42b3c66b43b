//! The gRPC services: thin adapters from messages to the [`Coordinator`] and back. The bearer
//! token is checked by one interceptor in front of both services, and core errors become
//! statuses in one place, [`status_of`].

use std::sync::Arc;

use futures::StreamExt as _;
use tessera_core::cube::{CubeReader, Selection};
use tessera_core::job::LeasedTask;
use tessera_core::metrics::{Refusal, bearer_refusal};
use tessera_proto::{PROTOCOL_VERSION, from_proto, pb};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

use crate::service::{Coordinator, blocking};

/// How long a lease request with nothing to lease waits for work before answering empty.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// The one place core errors become gRPC statuses.
/// A catalog record as the protocol carries it.
fn dataset_pb(d: &tessera_core::catalog::Dataset) -> Result<pb::Dataset, Status> {
    Ok(pb::Dataset {
        id: d.id.to_string(),
        name: d.name.clone(),
        kind: d.kind.as_str().to_string(),
        status: d.status.as_str().to_string(),
        url: d.url.clone(),
        record_json: serde_json::to_vec(d)
            .map_err(|e| Status::internal(format!("a catalog record: {e}")))?,
    })
}

/// A query the catalog refused (its syntax, a column, a statement that writes).
fn query_status(e: tessera_catalog::QueryError) -> Status {
    match e {
        tessera_catalog::QueryError::Invalid(m) => Status::invalid_argument(m),
        tessera_catalog::QueryError::Core(e) => status_of(e),
    }
}

/// An unknown dataset is NOT_FOUND; other errors as [`status_of`] says.
fn not_found(e: tessera_core::Error) -> Status {
    match e {
        tessera_core::Error::InvalidArgument(m) if m.starts_with("no dataset") => {
            Status::not_found(m)
        }
        other => status_of(other),
    }
}

pub fn status_of(e: tessera_core::Error) -> Status {
    use tessera_core::Error;
    match e {
        Error::InvalidArgument(_) | Error::Source { .. } | Error::Crs(_) => {
            Status::invalid_argument(e.to_string())
        }
        Error::Layer { .. } => Status::failed_precondition(e.to_string()),
        Error::Storage { .. } if e.is_transient() => Status::unavailable(e.to_string()),
        Error::Storage { .. } => Status::failed_precondition(e.to_string()),
        Error::Internal(_) => Status::internal(e.to_string()),
    }
}

/// The interceptor in front of both services: with a token configured, every call must carry
/// `authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    token: Option<Arc<str>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth {
            token: token.map(Arc::from),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match bearer_refusal(given, token) {
            None => Ok(req),
            Some(Refusal::Wrong) => Err(Status::unauthenticated("wrong bearer token")),
            Some(Refusal::Missing) => Err(Status::unauthenticated(
                "missing bearer token (authorization: Bearer <token>)",
            )),
        }
    }
}

/// The client-facing service.
#[derive(Debug, Clone)]
pub struct JobApi(pub Arc<Coordinator>);

/// The worker-facing service.
#[derive(Debug, Clone)]
pub struct WorkerApi(pub Arc<Coordinator>);

type StatusStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::JobStatus, Status>> + Send>>;

impl JobApi {
    fn status(&self, job_id: &str) -> Result<tessera_core::job::JobStatus, Status> {
        let job = from_proto::job_id(job_id)?;
        self.0
            .status(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))
    }
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let job = self.0.submit(&req.into_inner().spec_yaml).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: job.to_string(),
        }))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::JobStatus>, Status> {
        let status = self.status(&req.get_ref().job_id)?;
        Ok(Response::new(pb::JobStatus::from(&status)))
    }

    type WatchJobStream = StatusStream;

    async fn watch_job(
        &self,
        req: Request<pb::JobRef>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = self.status(&req.get_ref().job_id)?.id;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let c = self.0.clone();
        let mut changed = c.subscribe();
        // Ends when the job ends or the client goes away (the send fails).
        tokio::spawn(async move {
            let mut last = None;
            while let Some(status) = c.status(job) {
                let msg = pb::JobStatus::from(&status);
                let key = (msg.state, msg.tasks_done, msg.tiles_done, msg.retries);
                if last != Some(key) {
                    last = Some(key);
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
                if status.state.is_terminal() {
                    break;
                }
                let _ =
                    tokio::time::timeout(std::time::Duration::from_millis(250), changed.changed())
                        .await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::JobRef>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let job = from_proto::job_id(&req.get_ref().job_id)?;
        let status = self.0.cancel(job).await?;
        Ok(Response::new(pb::JobStatus::from(&status)))
    }

    async fn list_jobs(
        &self,
        _req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self.0.jobs().iter().map(pb::JobStatus::from).collect(),
        }))
    }

    async fn search_datasets(
        &self,
        req: Request<pb::SearchDatasetsRequest>,
    ) -> Result<Response<pb::SearchDatasetsResponse>, Status> {
        let r = req.into_inner();
        let offset: usize = match r.page_token.as_str() {
            "" => 0,
            t => t.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "page_token `{t}` is not one this coordinator gave"
                ))
            })?,
        };
        let size = match r.page_size {
            0 => 100,
            n => (n as usize).min(10_000),
        };
        let text = |s: String| (!s.is_empty()).then_some(s);
        let bbox = match r.bbox.as_slice() {
            [] => None,
            [w, s, e, n] => Some([*w, *s, *e, *n]),
            other => {
                return Err(Status::invalid_argument(format!(
                    "bbox: four numbers west, south, east, north, not {}",
                    other.len()
                )));
            }
        };
        let time = match r.time.as_str() {
            "" => None,
            t => Some(tessera_catalog::parse_time_range(t).map_err(query_status)?),
        };
        let search = tessera_catalog::Search {
            where_sql: text(r.where_sql),
            filter_cql2: text(r.filter_cql2),
            bbox,
            time,
            order_by: text(r.order_by),
            // One more than a page, to know whether there is a next one.
            limit: Some(size + 1),
            offset,
        };
        let session = tessera_catalog::Session::open(&self.0.catalog)
            .await
            .map_err(query_status)?;
        let batches = session.search(&search).await.map_err(query_status)?;
        let ids = tessera_catalog::ids_of(&batches);
        let mut datasets = Vec::new();
        for id in ids.iter().take(size) {
            if let Some(d) = session.state().find(id).map_err(status_of)? {
                datasets.push(dataset_pb(&d)?);
            }
        }
        Ok(Response::new(pb::SearchDatasetsResponse {
            datasets,
            next_page_token: if ids.len() > size {
                (offset + size).to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn get_dataset(
        &self,
        req: Request<pb::GetDatasetRequest>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let state = self.0.catalog.read().await.map_err(status_of)?;
        let d = state.require(&req.get_ref().dataset).map_err(not_found)?;
        Ok(Response::new(dataset_pb(&d)?))
    }

    async fn update_dataset_attributes(
        &self,
        req: Request<pb::UpdateDatasetAttributesRequest>,
    ) -> Result<Response<pb::Dataset>, Status> {
        use tessera_core::catalog::{Change, Patch, check_attribute};
        let r = req.into_inner();
        for (k, v) in &r.set {
            check_attribute(k, v).map_err(status_of)?;
        }
        for k in &r.unset {
            check_attribute(k, "").map_err(status_of)?;
        }
        let set: std::collections::BTreeMap<String, String> = r.set.into_iter().collect();
        let state = self
            .0
            .catalog
            .commit(|state| {
                let d = state.require(&r.dataset)?;
                Ok(vec![Change::Update {
                    id: d.id,
                    patch: Box::new(Patch {
                        set: set.clone(),
                        unset: r.unset.clone(),
                        ..Patch::default()
                    }),
                }])
            })
            .await
            .map_err(not_found)?;
        let d = state.require(&r.dataset).map_err(not_found)?;
        Ok(Response::new(dataset_pb(&d)?))
    }

    async fn add_schedule(
        &self,
        req: Request<pb::AddScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let r = req.into_inner();
        let s = self
            .0
            .add_schedule(&r.name, &r.spec_yaml, &r.cron, &r.timezone)
            .await?;
        Ok(Response::new(schedule_pb(&s)))
    }

    async fn list_schedules(
        &self,
        _req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self.0.list_schedules().await;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(schedule_pb).collect(),
        }))
    }

    async fn remove_schedule(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s = self.0.remove_schedule(&req.into_inner().name).await?;
        Ok(Response::new(schedule_pb(&s)))
    }

    async fn run_schedule_now(
        &self,
        req: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s = self.0.run_schedule_now(&req.into_inner().name).await?;
        Ok(Response::new(schedule_pb(&s)))
    }

    async fn read_cube(
        &self,
        req: Request<pb::ReadCubeRequest>,
    ) -> Result<Response<pb::ReadCubeResponse>, Status> {
        let r = req.into_inner();
        // A dataset's id or name in the catalog, else a path in the store.
        let named = match self.0.catalog.read().await {
            Ok(state) => state.find(&r.layer).map_err(status_of)?.map(|d| d.url),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog");
                None
            }
        };
        let url = self
            .0
            .resolve_output(named.as_deref().unwrap_or(&r.layer))
            .map_err(|s| Status::new(s.code(), s.message().replace("output.url", "layer")))?;
        let subset = blocking(move || {
            let reader = CubeReader::open(&url)?;
            if !r.origin.is_empty() || !r.shape.is_empty() {
                let [var] = r.variables.as_slice() else {
                    return Err(tessera_core::Error::InvalidArgument(
                        "origin/shape reads one variable: name it".into(),
                    ));
                };
                return reader.region(var, &r.origin, &r.shape);
            }
            let selection = Selection {
                variables: r.variables,
                time: (!r.time.is_empty())
                    .then(|| Selection::parse_time(&r.time))
                    .transpose()?,
                bbox: (!r.bbox.is_empty())
                    .then(|| Selection::parse_bbox(&r.bbox))
                    .transpose()?,
            };
            reader.select(&selection)
        })
        .await
        .map_err(status_of)?;
        Ok(Response::new(tessera_proto::to_proto::subset(&subset)))
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerApi {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker protocol version {} is not the coordinator's version {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        let worker = tessera_core::job::WorkerId::new();
        let lease_ms = self.0.register_worker(worker);
        tracing::info!(%worker, name = %r.name, threads = r.threads, "worker registered");
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id: worker.to_string(),
            heartbeat_millis: (lease_ms / 3).max(1),
        }))
    }

    async fn lease_tasks(
        &self,
        req: Request<pb::LeaseTasksRequest>,
    ) -> Result<Response<pb::LeaseTasksResponse>, Status> {
        let r = req.into_inner();
        let worker = from_proto::worker_id(&r.worker_id)?;
        let max = r.max_tasks.max(1) as usize;
        // A long poll: with nothing to lease, the request waits (up to LEASE_WAIT) for the
        // next change — a new stage, a report, a submitted job — instead of the worker polling.
        // Subscribing first means no change between the attempt and the wait is missed.
        let mut changed = self.0.subscribe();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let (leases, now) = loop {
            let (leases, now) = self.0.lease(worker, max);
            if !leases.is_empty() {
                break (leases, now);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => break (leases, now),
            }
        };
        let leases = leases
            .into_iter()
            .map(|l| {
                pb::TaskLease::from(&LeasedTask {
                    task: l.task,
                    attempt: l.attempt,
                    lease_ms: l.expires_ms - now,
                    payload: l.payload,
                })
            })
            .collect();
        Ok(Response::new(pb::LeaseTasksResponse { leases }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let worker = from_proto::worker_id(&r.worker_id)?;
        let tasks = r
            .task_ids
            .iter()
            .map(|t| from_proto::task_id(t))
            .collect::<Result<Vec<_>, _>>()?;
        let lost = self.0.heartbeat(worker, &tasks);
        Ok(Response::new(pb::HeartbeatResponse {
            lost_task_ids: lost.iter().map(|t| t.to_string()).collect(),
            known: true,
        }))
    }

    async fn report_task(
        &self,
        req: Request<pb::ReportTaskRequest>,
    ) -> Result<Response<pb::ReportTaskResponse>, Status> {
        let (worker, report) = from_proto::report(req.into_inner())?;
        let accepted = self.0.report(worker, report).await?;
        Ok(Response::new(pb::ReportTaskResponse { accepted }))
    }

    async fn report_tasks(
        &self,
        req: Request<pb::ReportTasksRequest>,
    ) -> Result<Response<pb::ReportTasksResponse>, Status> {
        let mut accepted = Vec::new();
        for r in req.into_inner().reports {
            let (worker, report) = from_proto::report(r)?;
            accepted.push(self.0.report(worker, report).await?);
        }
        Ok(Response::new(pb::ReportTasksResponse { accepted }))
    }

    async fn get_stage_plan(
        &self,
        req: Request<pb::StagePlanRequest>,
    ) -> Result<Response<pb::StagePlanResponse>, Status> {
        let r = req.into_inner();
        let job = from_proto::job_id(&r.job_id)?;
        let ctx = self.0.stage_context(job, r.stage)?;
        let json = serde_json::to_vec(&ctx).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::StagePlanResponse { plan_json: json }))
    }
}

/// A schedule as the API returns it.
fn schedule_pb(s: &crate::schedules::Schedule) -> pb::Schedule {
    let trigger = |t: crate::schedules::Trigger| match t {
        crate::schedules::Trigger::Cron => "cron",
        crate::schedules::Trigger::CatchUp => "catch_up",
        crate::schedules::Trigger::Manual => "manual",
    };
    pb::Schedule {
        name: s.name.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        spec_yaml: s.spec_yaml.clone(),
        created_ms: s.created_ms,
        next_ms: s.next_ms().unwrap_or(0),
        runs: s
            .runs
            .iter()
            .map(|r| pb::ScheduleRun {
                due_ms: r.due_ms,
                fired_ms: r.fired_ms,
                trigger: trigger(r.trigger).into(),
                job_id: r.job.clone().unwrap_or_default(),
                outcome: r.outcome.name().into(),
                note: r.note.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The services whose health is reported: the whole server ("") and each API.
const HEALTH_NAMES: [&str; 3] = ["", "tessera.v1.JobService", "tessera.v1.WorkerService"];

/// How often the store's reachability is checked for the health service.
const HEALTH_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// Keeps the health service's answer current: SERVING while the store answers, NOT_SERVING
/// (and a log line once per change) while it does not.
async fn report_health(
    coordinator: Arc<Coordinator>,
    health: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let status = match coordinator.store_reachable().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::error!(error = %e, "the store is unreachable: NOT_SERVING until it answers");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            if status == ServingStatus::Serving && last.is_some() {
                tracing::info!("the store answers again: SERVING");
            }
            set_health(&health, status).await;
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_PERIOD).await;
    }
}

/// An accepted connection without Nagle's algorithm: a response's frames (headers, data,
/// trailers) leave at once instead of waiting for the client's acknowledgement of the first.
fn nodelay(
    accepted: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = accepted?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A server builder, with TLS when the coordinator has an identity.
fn server_builder(
    tls: Option<&crate::service::TlsIdentity>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match tls {
        Some(tls) => {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        }
        None => Ok(builder),
    }
}

/// Server reflection, v1 and v1alpha, over Tessera's and the health service's descriptors.
/// They are compiled in: a failure here is a bug, served around rather than fatal.
fn reflection() -> (
    Option<v1::ServerReflectionServer<impl v1::ServerReflection>>,
    Option<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .inspect_err(|e| tracing::error!(error = %e, "no server reflection (v1)"))
        .ok();
    let v1alpha = builder()
        .build_v1alpha()
        .inspect_err(|e| tracing::error!(error = %e, "no server reflection (v1alpha)"))
        .ok();
    (v1, v1alpha)
}

/// How long the first retry of a store unreachable at start waits, and the longest wait.
const START_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const START_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// A coordinator whose store did not answer at start (MinIO still starting, a bucket not made
/// yet) keeps its port: it serves the health service as NOT_SERVING, reflection, and
/// UNAVAILABLE for every other call (workers and clients retry on it), while it tries to
/// start again with growing waits, logging each failure. Returns the started coordinator, or
/// `None` when `stop` completes first; an error that is not the store's ends the wait.
pub async fn start_when_the_store_answers(
    listener: &tokio::net::TcpListener,
    config: crate::service::CoordinatorConfig,
    first: tessera_core::Error,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<Arc<Coordinator>>, StartError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let (reflection_v1, reflection_v1alpha) = reflection();
    let mut routes = tonic::service::Routes::new(health_service);
    if let Some(r) = reflection_v1 {
        routes = routes.add_service(r);
    }
    if let Some(r) = reflection_v1alpha {
        routes = routes.add_service(r);
    }
    let message = format!(
        "the coordinator is starting: its store {} does not answer yet",
        config.store_url
    );
    let router = routes.into_axum_router().fallback(move || {
        let message = message.clone();
        async move { Status::unavailable(message).into_http::<axum::body::Body>() }
    });
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((nodelay(l.accept().await.map(|(s, _)| s)), l))
    });
    let (started, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server_builder(config.tls.as_ref())?
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    let store = config.store_url.clone();
    let retry = async move {
        let (mut wait, mut last, mut attempt) = (START_RETRY_FIRST, first, 1u32);
        loop {
            tracing::error!(%store, error = %last, attempt, retry_in_s = wait.as_secs(), "the store is unreachable at start: NOT_SERVING until it answers");
            tokio::time::sleep(wait).await;
            match Coordinator::start(config.clone()).await {
                Ok(c) => {
                    tracing::warn!(%store, attempt, "the store answers: starting");
                    return Ok(c);
                }
                Err(e @ tessera_core::Error::Storage { .. }) => last = e,
                Err(e) => return Err(StartError::Start(e)),
            }
            wait = (wait * 2).min(START_RETRY_MAX);
            attempt += 1;
        }
    };
    tokio::pin!(server, retry, stop);
    let outcome = tokio::select! {
        r = &mut retry => Some(r),
        r = &mut server => return Err(match r {
            Ok(()) => StartError::Start(tessera_core::Error::Internal("the waiting server stopped".into())),
            Err(e) => StartError::Serve(e),
        }),
        () = &mut stop => None,
    };
    // The waiting server hands its port over: it closes its connections (clients reconnect).
    let _ = started.send(());
    server.await?;
    outcome.transpose()
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Start(#[from] tessera_core::Error),
    #[error("cannot serve gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves both services on `listener` until `shutdown` completes (mini-redis's `run`), with
/// the standard health service and server reflection (v1 and v1alpha) beside them.
pub async fn run(
    listener: tokio::net::TcpListener,
    coordinator: Arc<Coordinator>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let ticker = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::schedules::SCHEDULE_TICK).await;
                c.expire().await;
                c.tick_schedules().await;
            }
        })
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(nodelay);
    let mut builder = server_builder(coordinator.config.tls.as_ref())?;
    let auth = BearerAuth::new(coordinator.config.token.as_deref());
    // grpc.health.v1 (Kubernetes' gRPC probes, grpc_health_probe) and server reflection
    // (grpcurl and other generic clients): open, like every health endpoint, without a token.
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(report_health(coordinator.clone(), health.clone()));
    let (reflection_v1, reflection_v1alpha) = reflection();
    let draining = {
        let health = health.clone();
        async move {
            shutdown.await;
            // Draining: probes see NOT_SERVING while the server finishes its requests.
            set_health(&health, ServingStatus::NotServing).await;
        }
    };
    let result = builder
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(pb::job_service_server::JobServiceServer::with_interceptor(
            JobApi(coordinator.clone()),
            auth.clone(),
        ))
        .add_service(
            pb::worker_service_server::WorkerServiceServer::with_interceptor(
                WorkerApi(coordinator),
                auth,
            ),
        )
        .serve_with_incoming_shutdown(incoming, draining)
        .await;
    health_task.abort();
    ticker.abort();
    result
}
