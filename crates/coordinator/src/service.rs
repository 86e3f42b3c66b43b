//! The coordinator: job intake and validation, the stages of a job (source headers → reduce →
//! tiles → finish), the journal, and the gRPC services over them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_core::ingest::{
    IngestPlan, PlannedSource, attach_layer as attach, create_layer, plan_from_sources,
};
use tessera_core::job::{
    JobId, JobSpec, JobState, JobStatus, LeasedTask, StagePlan, TaskOutput, TaskPayload, WorkerId,
};
use tessera_core::store::{Store, expand_sources};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::journal::{JobEnd, JobRecord, Journal};
use crate::plan::{cube_source_tasks, source_tasks, tile_tasks};
use crate::scheduler::{ReportOutcome, Scheduler, SchedulerConfig};
use tessera_core::cube::{CubePlan, CubeReader, CubeSource, CubeSpec, Selection};
use tessera_proto::{PROTOCOL_VERSION, from_proto, pb};

/// How long a lease request with nothing to lease waits for work before answering empty.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The object store holding the journal; every job's output must lie inside it.
    pub store_url: String,
    /// When set, both services require `authorization: Bearer <token>`.
    pub token: Option<String>,
    pub scheduler: SchedulerConfig,
    /// Serve TLS with this PEM certificate chain and key (rustls).
    pub tls: Option<TlsIdentity>,
}

/// A PEM certificate chain and private key.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

/// The coordinator's state, shared by its services.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    store: Store,
    journal: Journal,
    sched: Mutex<Scheduler>,
    plans: Mutex<HashMap<JobId, StagePlan>>,
    records: Mutex<HashMap<JobId, JobRecord>>,
    /// Space-time jobs restarted from the journal: their products are replaced.
    resumed: Mutex<std::collections::HashSet<JobId>>,
    started: Instant,
    changed: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The one place core errors become gRPC statuses.
pub fn status_of(e: tessera_core::Error) -> Status {
    use tessera_core::Error;
    match e {
        Error::InvalidArgument(_) | Error::Source { .. } | Error::Crs(_) => {
            Status::invalid_argument(e.to_string())
        }
        Error::Layer { .. } => Status::failed_precondition(e.to_string()),
        Error::Storage { .. } => Status::unavailable(e.to_string()),
        Error::Internal(_) => Status::internal(e.to_string()),
    }
}

/// The source headers the tasks of a header stage returned.
fn headers<T: serde::de::DeserializeOwned>(
    outputs: Vec<TaskOutput>,
) -> tessera_core::Result<Vec<T>> {
    outputs
        .into_iter()
        .map(|o| {
            let v = o.result.ok_or_else(|| {
                tessera_core::Error::Internal("a source task returned no header".into())
            })?;
            serde_json::from_value(v)
                .map_err(|e| tessera_core::Error::Internal(format!("bad source header: {e}")))
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> tessera_core::Result<T> + Send + 'static,
) -> tessera_core::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tessera_core::Error::Internal(format!("a blocking task panicked: {e}")))?
}

impl Coordinator {
    /// Opens the store and resumes the jobs its journal holds that have not ended.
    pub async fn start(config: CoordinatorConfig) -> tessera_core::Result<Arc<Coordinator>> {
        let store = Store::open(&config.store_url)?;
        let (changed, _) = watch::channel(0);
        let c = Arc::new(Coordinator {
            journal: Journal::new(store.clone()),
            store,
            sched: Mutex::new(Scheduler::new(config.scheduler)),
            plans: Mutex::new(HashMap::new()),
            records: Mutex::new(HashMap::new()),
            resumed: Mutex::new(Default::default()),
            started: Instant::now(),
            changed,
            config,
        });
        for (job, record) in c.journal.unfinished().await? {
            tracing::info!(%job, "resuming");
            c.clone().resume(job, record).await;
        }
        Ok(c)
    }

    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The store URL with a trailing slash, for prefix checks.
    fn store_root(&self) -> String {
        format!("{}/", self.store.url().trim_end_matches('/'))
    }

    /// Resolves a job's output URL: absolute URLs must lie inside the store; relative paths are
    /// taken inside it. `..` is refused.
    pub fn resolve_output(&self, url: &str) -> Result<String, Status> {
        if url.split('/').any(|seg| seg == "..") {
            return Err(Status::invalid_argument(format!(
                "output.url: `{url}` may not contain `..`"
            )));
        }
        let root = self.store_root();
        let is_absolute = url.contains("://") || url.starts_with('/');
        let resolved = if is_absolute {
            url.trim_end_matches('/').to_string()
        } else {
            format!("{root}{}", url.trim_start_matches("./"))
        };
        let normalized = if resolved.starts_with('/') {
            format!("file://{resolved}")
        } else {
            resolved.clone()
        };
        let root_norm = if root.starts_with('/') {
            format!("file://{root}")
        } else {
            root.clone()
        };
        if !normalized.starts_with(&root_norm) || normalized.len() <= root_norm.len() {
            return Err(Status::permission_denied(format!(
                "output.url: `{url}` is outside the coordinator's store `{}`",
                self.store.url()
            )));
        }
        if normalized[root_norm.len()..].starts_with("_tessera") {
            return Err(Status::permission_denied(format!(
                "output.url: `{url}` is inside the coordinator's journal"
            )));
        }
        Ok(resolved)
    }

    /// Validates and starts a job.
    pub async fn submit(self: &Arc<Self>, yaml: &str) -> Result<JobId, Status> {
        let spec = JobSpec::from_yaml(yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let output_url = self.resolve_output(&spec.output.url)?;
        if let Some(j) = self.writers_of(&output_url).first() {
            return Err(Status::failed_precondition(format!(
                "output.url: `{}` is being written by job {} ({}), which has not ended; wait for it, cancel it, or write elsewhere",
                spec.output.url, j.id, j.name
            )));
        }
        spec.ingest_options().map_err(status_of)?;
        let patterns = spec.sources.clone();
        let sources = blocking(move || expand_sources(&patterns))
            .await
            .map_err(status_of)?;
        let job = JobId::new();
        let record = JobRecord {
            spec,
            sources,
            output_url,
        };
        self.journal
            .put_job(job, &record)
            .await
            .map_err(status_of)?;
        self.clone().begin(job, record, BTreeMap::new());
        Ok(job)
    }

    /// A job of `n` tasks that do nothing, to measure the scheduler and the protocol.
    pub fn submit_noop(self: &Arc<Self>, n: usize) -> JobId {
        let job = JobId::new();
        let now = self.now();
        let mut s = lock(&self.sched);
        s.add_job(job, format!("{n} no-op tasks"), String::new(), 1, now);
        s.start_stage(job, 1, vec![(TaskPayload::Noop, 0); n], &BTreeMap::new());
        drop(s);
        self.notify();
        job
    }

    /// Registers a job and starts its metadata stage (`done`: tasks already journalled).
    fn begin(self: Arc<Self>, job: JobId, record: JobRecord, done: BTreeMap<u32, TaskOutput>) {
        let options = match record.spec.ingest_options() {
            Ok(o) => o,
            Err(e) => return self.end_failed(job, e.to_string()),
        };
        let tasks = match &record.spec.cube {
            Some(cube) => cube_source_tasks(&record.sources, &cube.variables),
            None => source_tasks(&record.sources),
        };
        lock(&self.plans).insert(
            job,
            StagePlan {
                options,
                output_url: record.output_url.clone(),
                plan: None,
                cube: None,
            },
        );
        let outcome = {
            let mut s = lock(&self.sched);
            s.add_job(
                job,
                record.spec.display_name(),
                record.output_url.clone(),
                record.spec.tasks.max_attempts,
                self.now(),
            );
            s.start_stage(job, 0, tasks, &done)
        };
        lock(&self.records).insert(job, record);
        self.notify();
        if let Some(o) = outcome {
            self.handle(o);
        }
    }

    async fn resume(self: Arc<Self>, job: JobId, record: JobRecord) {
        let resumed = async {
            if record.spec.cube.is_some() {
                // A space-time job starts over: its outputs are deterministic, so rewriting
                // them is safe, and the products it created are replaced.
                lock(&self.resumed).insert(job);
                self.clone().begin(job, record, BTreeMap::new());
                return Ok(());
            }
            match self.journal.plan(job).await? {
                None => {
                    let done = self.journal.tasks(job, 0).await?;
                    self.clone().begin(job, record, done);
                }
                Some(plan) => {
                    self.clone().begin(job, record.clone(), BTreeMap::new());
                    let done = self.journal.tasks(job, 1).await?;
                    self.clone().start_tiles(job, plan, done, true).await?;
                }
            }
            Ok::<_, tessera_core::Error>(())
        };
        if let Err(e) = resumed.await {
            self.end_failed(job, format!("cannot resume: {e}"));
        }
    }

    /// Acts on what a report (or a stage start) led to.
    fn handle(self: Arc<Self>, outcome: ReportOutcome) {
        match outcome {
            ReportOutcome::StageDone {
                job,
                stage: 0,
                outputs,
            } => {
                lock(&self.sched).set_planning(job);
                tokio::spawn(async move {
                    if let Err(e) = self.clone().reduce(job, outputs).await {
                        self.end_failed(job, e.to_string());
                    }
                });
            }
            ReportOutcome::StageDone { job, stage, .. } => {
                lock(&self.sched).set_planning(job);
                tokio::spawn(async move {
                    let cube = lock(&self.plans).get(&job).and_then(|p| p.cube.clone());
                    let next = match cube {
                        Some(plan) => self.clone().next_cube_stage(job, plan, stage).await,
                        None => self.clone().finish(job).await,
                    };
                    if let Err(e) = next {
                        self.end_failed(job, e.to_string());
                    }
                });
            }
            ReportOutcome::JobFailed { job, error } => self.end_failed(job, error),
            ReportOutcome::Accepted | ReportOutcome::Ignored(_) => {}
        }
        // (The spawned stage work reports its own failure through `end_failed`.)
    }

    fn end_failed(self: Arc<Self>, job: JobId, error: String) {
        tracing::warn!(%job, %error, "job failed");
        lock(&self.sched).fail(job, error.clone(), self.now());
        self.notify();
        tokio::spawn(async move {
            if let Err(e) = self
                .journal
                .put_end(
                    job,
                    &JobEnd {
                        state: JobState::Failed,
                        error: Some(error),
                    },
                )
                .await
            {
                tracing::error!(%job, error = %e, "cannot journal the end of a job");
            }
        });
    }

    fn stage_plan(&self, job: JobId) -> tessera_core::Result<StagePlan> {
        lock(&self.plans)
            .get(&job)
            .cloned()
            .ok_or_else(|| tessera_core::Error::Internal(format!("no plan for job {job}")))
    }

    /// The reduce after the metadata stage: collect, lay out, create the layer, start the tiles.
    async fn reduce(
        self: Arc<Self>,
        job: JobId,
        outputs: Vec<TaskOutput>,
    ) -> tessera_core::Result<()> {
        let cube_spec = lock(&self.records)
            .get(&job)
            .and_then(|r| r.spec.cube.clone());
        if let Some(spec) = cube_spec {
            return self.cube_reduce(job, spec, outputs).await;
        }
        let sources: Vec<PlannedSource> = headers(outputs)?;
        let options = self.stage_plan(job)?.options;
        let plan = blocking(move || plan_from_sources(sources, &options)).await?;
        self.journal.put_plan(job, &plan).await?;
        self.start_tiles(job, plan, BTreeMap::new(), false).await
    }

    async fn start_tiles(
        self: Arc<Self>,
        job: JobId,
        plan: IngestPlan,
        done: BTreeMap<u32, TaskOutput>,
        resumed: bool,
    ) -> tessera_core::Result<()> {
        let sp = self.stage_plan(job)?;
        let (options, url) = (sp.options.clone(), sp.output_url.clone());
        let p = plan.clone();
        blocking(move || {
            if resumed {
                attach(&p, &url, &options)?.write_metadata()
            } else {
                create_layer(&p, &url, &options).map(drop)
            }
        })
        .await?;
        let target_mb = lock(&self.records)
            .get(&job)
            .map_or(32, |r| r.spec.tasks.target_mb);
        let tasks = tile_tasks(&plan, target_mb);
        lock(&self.plans).insert(
            job,
            StagePlan {
                plan: Some(plan),
                ..sp
            },
        );
        let outcome = lock(&self.sched).start_stage(job, 1, tasks, &done);
        self.notify();
        if let Some(o) = outcome {
            self.handle(o);
        }
        Ok(())
    }

    /// The reduce of a space-time job: sort and check the sources' headers, plan the blocks,
    /// create the products, start the first stage.
    async fn cube_reduce(
        self: Arc<Self>,
        job: JobId,
        spec: CubeSpec,
        outputs: Vec<TaskOutput>,
    ) -> tessera_core::Result<()> {
        let sources: Vec<CubeSource> = headers(outputs)?;
        let sp = self.stage_plan(job)?;
        let overwrite = sp.options.write.overwrite || lock(&self.resumed).remove(&job);
        let (url, zstd) = (sp.output_url.clone(), sp.options.write.zstd_level);
        let plan = blocking(move || {
            let plan = CubePlan::new(&spec, &url, zstd, sources)?;
            plan.create_products(overwrite)?;
            Ok(plan)
        })
        .await?;
        lock(&self.plans).insert(
            job,
            StagePlan {
                cube: Some(plan.clone()),
                ..sp
            },
        );
        self.next_cube_stage(job, plan, 0).await
    }

    /// Starts the next stage of a space-time job that has tasks, or finishes it.
    async fn next_cube_stage(
        self: Arc<Self>,
        job: JobId,
        plan: CubePlan,
        after: u32,
    ) -> tessera_core::Result<()> {
        for stage in after + 1..=CubePlan::LAST_STAGE {
            let tasks: Vec<(TaskPayload, u64)> = plan
                .stage_tasks(stage)
                .into_iter()
                .map(|task| (TaskPayload::Cube { task }, 0))
                .collect();
            if tasks.is_empty() {
                continue;
            }
            let outcome = lock(&self.sched).start_stage(job, stage, tasks, &BTreeMap::new());
            self.notify();
            if let Some(o) = outcome {
                self.handle(o);
            }
            return Ok(());
        }
        blocking(move || plan.finish_products()).await?;
        self.succeed(job).await
    }

    /// Journals a job's success and marks it done.
    async fn succeed(&self, job: JobId) -> tessera_core::Result<()> {
        self.journal
            .put_end(
                job,
                &JobEnd {
                    state: JobState::Succeeded,
                    error: None,
                },
            )
            .await?;
        lock(&self.sched).succeed(job, self.now());
        self.notify();
        Ok(())
    }

    async fn finish(self: Arc<Self>, job: JobId) -> tessera_core::Result<()> {
        let sp = self.stage_plan(job)?;
        let plan = sp
            .plan
            .clone()
            .ok_or_else(|| tessera_core::Error::Internal("finishing an unplanned job".into()))?;
        blocking(move || {
            attach(&plan, &sp.output_url, &sp.options)?
                .finish()
                .map(drop)
        })
        .await?;
        self.succeed(job).await
    }

    pub fn status(&self, job: JobId) -> Option<JobStatus> {
        lock(&self.sched).status(job, self.now())
    }

    /// The jobs that have not ended and write `output_url`, inside it or around it: two jobs
    /// writing one layer would replace each other's chunks and scratch.
    pub fn writers_of(&self, output_url: &str) -> Vec<JobStatus> {
        let a = output_url.trim_end_matches('/');
        let nested = |b: &str| {
            let b = b.trim_end_matches('/');
            a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
        };
        lock(&self.sched)
            .jobs(self.now())
            .into_iter()
            .filter(|j| !j.state.is_terminal() && nested(&j.output))
            .collect()
    }

    /// Cancels a job: no task of it is leased again, and its end is journalled.
    pub async fn cancel(&self, job: JobId) -> Result<JobStatus, Status> {
        let now = self.now();
        if !lock(&self.sched).cancel(job, now) {
            return Err(Status::not_found(format!("no job {job}")));
        }
        self.journal
            .put_end(
                job,
                &JobEnd {
                    state: JobState::Cancelled,
                    error: None,
                },
            )
            .await
            .map_err(status_of)?;
        self.notify();
        self.status(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))
    }

    /// Tasks leased more than once in the current stage of a job (re-executions).
    pub fn extra_leases(&self, job: JobId) -> u64 {
        lock(&self.sched).extra_leases(job)
    }

    fn check_token<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.config.token else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match given {
            Some(v) if v.strip_prefix("Bearer ") == Some(token.as_str()) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
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

#[tonic::async_trait]
impl pb::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        self.0.check_token(&req)?;
        let job = self.0.submit(&req.into_inner().spec_yaml).await?;
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: job.to_string(),
        }))
    }

    async fn get_job(&self, req: Request<pb::JobRef>) -> Result<Response<pb::JobStatus>, Status> {
        self.0.check_token(&req)?;
        let job = from_proto::job_id(&req.get_ref().job_id)?;
        let status = self
            .0
            .status(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))?;
        Ok(Response::new(pb::JobStatus::from(&status)))
    }

    type WatchJobStream = StatusStream;

    async fn watch_job(
        &self,
        req: Request<pb::JobRef>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.0.check_token(&req)?;
        let job = from_proto::job_id(&req.get_ref().job_id)?;
        self.0
            .status(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let c = self.0.clone();
        let mut changed = c.changed.subscribe();
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
        self.0.check_token(&req)?;
        let job = from_proto::job_id(&req.get_ref().job_id)?;
        let status = self.0.cancel(job).await?;
        Ok(Response::new(pb::JobStatus::from(&status)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.0.check_token(&req)?;
        let jobs = lock(&self.0.sched).jobs(self.0.now());
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(pb::JobStatus::from).collect(),
        }))
    }

    async fn read_cube(
        &self,
        req: Request<pb::ReadCubeRequest>,
    ) -> Result<Response<pb::ReadCubeResponse>, Status> {
        self.0.check_token(&req)?;
        let r = req.into_inner();
        let url = self
            .0
            .resolve_output(&r.layer)
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
        self.0.check_token(&req)?;
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker protocol version {} is not the coordinator's version {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        let worker = WorkerId::new();
        let now = self.0.now();
        let mut s = lock(&self.0.sched);
        s.touch_worker(worker, now);
        let lease_ms = s.config().lease_ms;
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
        self.0.check_token(&req)?;
        let r = req.into_inner();
        let worker = from_proto::worker_id(&r.worker_id)?;
        let max = r.max_tasks.max(1) as usize;
        // A long poll: with nothing to lease, the request waits (up to LEASE_WAIT) for the
        // next change — a new stage, a report, a submitted job — instead of the worker polling.
        // Subscribing first means no change between the attempt and the wait is missed.
        let mut changed = self.0.changed.subscribe();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let (leases, now) = loop {
            let now = self.0.now();
            let leases = lock(&self.0.sched).lease(worker, max, now);
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
        self.0.check_token(&req)?;
        let r = req.into_inner();
        let worker = from_proto::worker_id(&r.worker_id)?;
        let tasks = r
            .task_ids
            .iter()
            .map(|t| from_proto::task_id(t))
            .collect::<Result<Vec<_>, _>>()?;
        let lost = lock(&self.0.sched).heartbeat(worker, &tasks, self.0.now());
        Ok(Response::new(pb::HeartbeatResponse {
            lost_task_ids: lost.iter().map(|t| t.to_string()).collect(),
            known: true,
        }))
    }

    async fn report_task(
        &self,
        req: Request<pb::ReportTaskRequest>,
    ) -> Result<Response<pb::ReportTaskResponse>, Status> {
        self.0.check_token(&req)?;
        let (worker, report) = from_proto::report(req.into_inner())?;
        let task = report.task;
        let outcome = match report.outcome {
            Ok(output) => {
                // Journalled before it counts: a restarted coordinator will not redo it.
                self.0
                    .journal
                    .put_task(task.job, task.stage, task.index, &output)
                    .await
                    .map_err(status_of)?;
                lock(&self.0.sched).report_ok(worker, task, output, self.0.now())
            }
            Err(f) => lock(&self.0.sched).report_err(worker, task, f.kind, f.message, self.0.now()),
        };
        let accepted = !matches!(outcome, ReportOutcome::Ignored(_));
        self.0.notify();
        self.0.clone().handle(outcome);
        Ok(Response::new(pb::ReportTaskResponse { accepted }))
    }

    async fn get_stage_plan(
        &self,
        req: Request<pb::StagePlanRequest>,
    ) -> Result<Response<pb::StagePlanResponse>, Status> {
        self.0.check_token(&req)?;
        let r = req.into_inner();
        let job = from_proto::job_id(&r.job_id)?;
        let plan = lock(&self.0.plans)
            .get(&job)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no job {job}")))?;
        if r.stage >= 1 && plan.plan.is_none() && plan.cube.is_none() {
            return Err(Status::failed_precondition(format!(
                "job {job} has no tile plan yet"
            )));
        }
        let json = serde_json::to_vec(&plan).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::StagePlanResponse { plan_json: json }))
    }
}

/// Serves both services on `listener` until `shutdown` completes (mini-redis's `run`).
pub async fn run(
    listener: tokio::net::TcpListener,
    coordinator: Arc<Coordinator>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let ticker = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let now = c.now();
                lock(&c.sched).expire(now);
            }
        })
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &coordinator.config.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let result = builder
        .add_service(pb::job_service_server::JobServiceServer::new(JobApi(
            coordinator.clone(),
        )))
        .add_service(pb::worker_service_server::WorkerServiceServer::new(
            WorkerApi(coordinator),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    ticker.abort();
    result
}
