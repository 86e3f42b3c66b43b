//! The coordinator: job intake and validation, and the one place the effects of the job
//! lifecycle are applied — journal writes, the reduce, creating and committing outputs, the
//! scheduler's stages. The gRPC services over it are in [`crate::grpc`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tessera_core::catalog::Catalog;
use tessera_core::engine::{self, JobPlan, JobRecord, StageContext};
use tessera_core::job::{JobId, JobSpec, JobState, JobStatus, WorkerId};
use tessera_core::store::{Store, expand_sources, glob_base};
use tokio::sync::watch;
use tonic::Status;

use crate::grpc::status_of;
use crate::journal::{JobEnd, Journal, MAX_INTERRUPTED_STEPS, RiskyStep};
use crate::lifecycle::{Effect, Event, Lifecycle};
use crate::scheduler::{Lease, ReportOutcome, Scheduler, SchedulerConfig};
use crate::schedules::Schedule;

pub use crate::grpc::run;

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
    /// Which unfinished jobs of the journal to resume at start.
    pub resume: Resume,
    /// When not empty, every source must lie under one of these: local directories (compared
    /// after resolving symbolic links) or `s3://bucket/prefix` URLs. Without it, any token
    /// holder can make workers open any file they can read.
    pub allowed_sources: Vec<String>,
}

/// How many ended jobs a starting coordinator reads back from its journal to list.
pub const ENDED_JOBS_LISTED: usize = 1000;

/// Which unfinished jobs of its journal a starting coordinator resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Resume {
    /// Every one: a served coordinator owns its store.
    #[default]
    All,
    /// Only jobs writing this output (as a job spec gives it, or inside it): `tessera run`
    /// journals beside its output, and a sibling's interrupted job is none of its business —
    /// resuming it would run, and maybe crash on, work nobody asked for.
    Output(String),
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
    pub(crate) config: CoordinatorConfig,
    store: Store,
    pub(crate) journal: Journal,
    /// The catalog of the datasets jobs write, in the same store ([`crate::records`]).
    pub(crate) catalog: Catalog,
    sched: Mutex<Scheduler>,
    life: Mutex<Lifecycle>,
    /// Jobs resumed with a risky step cut short: how many times it was started.
    interrupted: Mutex<std::collections::HashMap<JobId, u32>>,
    started: Instant,
    changed: watch::Sender<u64>,
    /// The schedules, by name; their records are in the store ([`crate::schedules`]).
    pub(crate) schedules: tokio::sync::Mutex<BTreeMap<String, Schedule>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs blocking work (GDAL, planning, store I/O through `block_on`) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> tessera_core::Result<T> + Send + 'static,
) -> tessera_core::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tessera_core::Error::Internal(format!("a blocking task panicked: {e}")))?
}

/// The real path of `path`: its deepest existing ancestor with every symbolic link resolved,
/// and the rest (not created yet) appended.
fn real_path(path: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p, part| p.join(part)));
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Whether two output URLs are the same or one lies inside the other.
fn nested(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

impl Coordinator {
    /// Whether the store answers (a listing of the journal's directory: a missing bucket or
    /// refused credentials fail it, not only a dead endpoint).
    pub async fn store_reachable(&self) -> tessera_core::Result<()> {
        self.store.list_dirs("_tessera").await.map(drop)
    }

    /// Opens the store and resumes the jobs its journal holds that have not ended: each from
    /// its plan and its journalled tasks, whatever its kind.
    pub async fn start(config: CoordinatorConfig) -> tessera_core::Result<Arc<Coordinator>> {
        let store = Store::open(&config.store_url)?;
        let (changed, _) = watch::channel(0);
        let c = Arc::new(Coordinator {
            journal: Journal::new(store.clone()),
            catalog: Catalog::new(store.clone()),
            store,
            sched: Mutex::new(Scheduler::new(config.scheduler)),
            life: Mutex::new(Lifecycle::new()),
            interrupted: Mutex::default(),
            started: Instant::now(),
            changed,
            config,
            schedules: Default::default(),
        });
        let only = match &c.config.resume {
            Resume::All => None,
            Resume::Output(url) => Some(
                c.resolve_output(url)
                    .map_err(|s| tessera_core::Error::InvalidArgument(s.message().to_string()))?,
            ),
        };
        let listing = c.journal.list_jobs().await?;
        for s in c.journal.schedules().await? {
            c.schedules.lock().await.insert(s.name.clone(), s);
        }
        // Jobs that ended before this start are listed again (the newest, up to a limit).
        if c.config.resume == Resume::All {
            for (job, record, end) in c.journal.ended(&listing, ENDED_JOBS_LISTED).await? {
                lock(&c.sched).add_ended(
                    job,
                    record.spec.display_name(),
                    record.output_url,
                    end.state,
                    end.error,
                );
            }
        }
        for (job, record) in c.journal.unfinished(&listing).await? {
            if let Some(only) = &only
                && !nested(only, &record.output_url)
            {
                tracing::info!(%job, output = %record.output_url, "not resumed: another output");
                continue;
            }
            tracing::info!(%job, "resuming");
            let journalled = async {
                Ok::<_, tessera_core::Error>((
                    c.journal.risky(job).await?,
                    c.journal.plan(job).await?,
                    c.journal.tasks(job).await?,
                ))
            };
            match journalled.await {
                Ok((Some(risky), _, _)) if risky.starts >= MAX_INTERRUPTED_STEPS => {
                    let error = format!(
                        "the coordinator stopped {} times while running this job's {} (a crash on its input, or a kill); it is not resumed again",
                        risky.starts, risky.step
                    );
                    tracing::error!(%job, %error, "not resumed");
                    lock(&c.sched).add_ended(
                        job,
                        record.spec.display_name(),
                        record.output_url.clone(),
                        JobState::Failed,
                        Some(error.clone()),
                    );
                    c.put_end(job, JobState::Failed, Some(error.clone())).await;
                    c.record_end(job, &record, JobState::Failed, Some(error))
                        .await;
                }
                Ok((risky, plan, done)) => {
                    if let Some(risky) = risky {
                        tracing::warn!(%job, step = %risky.step, starts = risky.starts, "resumed after its step was cut short");
                        lock(&c.interrupted).insert(job, risky.starts);
                    }
                    c.drive(Event::Resumed {
                        job,
                        record: Box::new(record),
                        plan: plan.map(Box::new),
                        done,
                    })
                    .await
                }
                Err(e) => {
                    tracing::error!(%job, error = %e, "cannot resume");
                    let error = format!("cannot resume: {e}");
                    c.put_end(job, JobState::Failed, Some(error.clone())).await;
                    c.record_end(job, &record, JobState::Failed, Some(error))
                        .await;
                }
            }
        }
        Ok(c)
    }

    /// The scheduler's counters and gauges now, for `/metrics`.
    pub fn metrics(&self) -> crate::scheduler::MetricsSnapshot {
        lock(&self.sched).metrics(self.now())
    }

    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A receiver that sees every change of any job (a stage, a report, a submission).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Feeds an event to the lifecycle and applies its effects in order, and those of the
    /// events they lead to, until none is left. A failed effect ends its batch: what came
    /// after it depended on it.
    pub(crate) async fn drive(&self, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let effects = lock(&self.life).handle(event);
            for effect in effects {
                if let Some(next) = self.apply(effect).await {
                    let failed = matches!(next, Event::Failed { .. });
                    events.push_back(next);
                    if failed {
                        break;
                    }
                }
            }
        }
    }

    /// Drives an event on a task of its own (from a report, whose answer should not wait for a
    /// reduce or a commit).
    pub(crate) fn drive_later(self: &Arc<Self>, event: Event) {
        let c = self.clone();
        tokio::spawn(async move { c.drive(event).await });
    }

    /// Applies one effect; returns the event it led to, if any.
    async fn apply(&self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Register {
                job,
                name,
                output,
                max_attempts,
            } => {
                lock(&self.sched).add_job(job, name, output, max_attempts, self.now());
                self.notify();
                None
            }
            Effect::StartStage {
                job,
                stage,
                tasks,
                done,
            } => {
                let outcome = lock(&self.sched).start_stage(job, stage, tasks, &done);
                self.notify();
                outcome.and_then(Event::of_outcome)
            }
            Effect::SetPlanning { job } => {
                lock(&self.sched).set_planning(job);
                self.notify();
                None
            }
            Effect::Reduce {
                job,
                record,
                outputs,
            } => {
                let reduce = blocking(move || engine::reduce(&record, outputs).map(Box::new));
                let result = self.risky(job, "reduce", reduce).await;
                for note in result.iter().flat_map(|plan| plan.skipped_inputs()) {
                    tracing::warn!(%job, "on_bad_input: skip: {note}");
                }
                Some(Event::Reduced {
                    job,
                    result: result.map_err(|e| e.to_string()),
                })
            }
            Effect::JournalPlan { job, plan } => match self.journal.put_plan(job, &plan).await {
                Ok(()) => None,
                Err(e) => Some(Event::Failed {
                    job,
                    error: format!("cannot journal the plan: {e}"),
                }),
            },
            Effect::Prepare {
                job,
                record,
                plan,
                resumed,
            } => {
                self.record_running(job, &record).await;
                lock(&self.sched).set_summary(job, plan.summary());
                let prepare = blocking(move || plan.prepare(&record, resumed));
                let result = self.risky(job, "prepare", prepare).await;
                Some(Event::Prepared {
                    job,
                    result: result.map_err(|e| e.to_string()),
                })
            }
            Effect::Commit { job, record, plan } => {
                // What every task reported, from the journal (it holds them across restarts).
                let commit = async {
                    match self.journal.tasks(job).await {
                        Ok(outputs) => {
                            if let Some(read) = plan.measured(&outputs) {
                                let mut sched = lock(&self.sched);
                                let summary = sched.summary(job);
                                let joined =
                                    summary.map_or(read.clone(), |s| format!("{s}; {read}"));
                                sched.set_summary(job, Some(joined));
                            }
                            blocking(move || plan.commit(&record, &outputs)).await
                        }
                        Err(e) => Err(e),
                    }
                };
                let result = self.risky(job, "commit", commit).await;
                Some(Event::Committed {
                    job,
                    result: result.map_err(|e| e.to_string()),
                })
            }
            Effect::Discard { job, record, plan } => {
                lock(&self.sched).halt(job);
                // Tasks still running on workers would write after the clean-up: wait for their
                // reports, or for their leases to run out (no longer extended), first.
                let deadline = self.now() + lock(&self.sched).config().lease_ms + 1000;
                while lock(&self.sched).in_flight(job, self.now()) > 0 && self.now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                // A failure to clean up is logged, not made the job's error: the job already
                // failed, and a staged output's old version is safe either way.
                let discard = blocking(move || plan.discard(&record));
                let discarded = self.risky(job, "discard", discard).await;
                if let Err(e) = discarded {
                    tracing::warn!(%job, error = %e, "cannot remove what the failed job wrote");
                }
                None
            }
            Effect::End {
                job,
                state,
                error,
                journal,
            } => {
                if let Some(error) = &error {
                    tracing::warn!(%job, %error, "job failed");
                }
                // Journalled first: a client that sees the end can rely on it.
                if journal {
                    self.put_end(job, state, error.clone()).await;
                }
                // Then the catalog, so that what a client reads after the end is the end.
                let record = lock(&self.life).context(job).map(|c| c.job);
                if let Some(record) = record {
                    self.record_end(job, &record, state, error.clone()).await;
                }
                let now = self.now();
                let mut s = lock(&self.sched);
                match state {
                    JobState::Succeeded => s.succeed(job, now),
                    JobState::Cancelled => {
                        s.cancel(job, now);
                    }
                    _ => s.fail(job, error.unwrap_or_default(), now),
                }
                s.ended(job);
                drop(s);
                self.notify();
                None
            }
        }
    }

    /// Runs `step` of `job`, which runs the job's own code in the coordinator, journalled
    /// before it starts and cleared when it returns (see [`RiskyStep`]). A job that is not
    /// journalled (no-op jobs) has nothing to resume; a journal that cannot be written is
    /// logged: the step's own writes will meet the same store.
    async fn risky<T>(
        &self,
        job: JobId,
        step: &str,
        run: impl std::future::Future<Output = T>,
    ) -> T {
        let journalled = self.journalled(job);
        if journalled {
            let starts = lock(&self.interrupted).remove(&job).unwrap_or(0) + 1;
            let risky = RiskyStep {
                step: step.to_string(),
                starts,
            };
            if let Err(e) = self.journal.put_risky(job, &risky).await {
                tracing::warn!(%job, step, error = %e, "cannot journal the step's start");
            }
        }
        let result = run.await;
        if journalled && let Err(e) = self.journal.clear_risky(job).await {
            tracing::warn!(%job, step, error = %e, "cannot journal the step's end");
        }
        result
    }

    fn journalled(&self, job: JobId) -> bool {
        lock(&self.life).journalled(job)
    }

    async fn put_end(&self, job: JobId, state: JobState, error: Option<String>) {
        if let Err(e) = self.journal.put_end(job, &JobEnd { state, error }).await {
            tracing::error!(%job, error = %e, "cannot journal the end of a job");
        }
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
        // On a local store the check above is of names; a symbolic link inside the store can
        // still lead out of it. Real paths decide.
        if let (Some(path), Some(root)) = (
            normalized.strip_prefix("file://"),
            root_norm.strip_prefix("file://"),
        ) && let (Some(real), Some(real_root)) = (
            real_path(std::path::Path::new(path)),
            real_path(std::path::Path::new(root)),
        ) && (!real.starts_with(&real_root) || real.starts_with(real_root.join("_tessera")))
        {
            return Err(Status::permission_denied(format!(
                "output.url: `{url}` leads outside the coordinator's store through a symbolic link (to {})",
                real.display()
            )));
        }
        Ok(resolved)
    }

    /// Refuses sources outside the allowed prefixes, if the coordinator has any. Local paths
    /// are compared by their real paths, so a symbolic link cannot lead outside.
    fn check_sources(&self, sources: &[String]) -> Result<(), Status> {
        let allowed = &self.config.allowed_sources;
        if allowed.is_empty() {
            return Ok(());
        }
        let local = |url: &str| -> Option<std::path::PathBuf> {
            let path = url.strip_prefix("file://").unwrap_or(url);
            (!path.contains("://")).then(|| {
                let p = std::path::Path::new(path);
                real_path(p).unwrap_or_else(|| p.to_path_buf())
            })
        };
        for (i, source) in sources.iter().enumerate() {
            let inside = allowed
                .iter()
                .any(|prefix| match (local(source), local(prefix)) {
                    (Some(path), Some(dir)) => path.starts_with(dir),
                    (None, None) => {
                        let prefix = prefix.trim_end_matches('/');
                        source == prefix || source.starts_with(&format!("{prefix}/"))
                    }
                    _ => false,
                });
            if !inside {
                return Err(Status::permission_denied(format!(
                    "sources[{i}]: `{source}` is outside the sources this coordinator reads ({})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Validates, journals and starts a job.
    pub async fn submit(&self, yaml: &str) -> Result<JobId, Status> {
        let spec = JobSpec::from_yaml(yaml).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let output_url = self.resolve_output(&spec.output.url)?;
        if let Some(j) = self.writers_of(&output_url).first() {
            return Err(Status::failed_precondition(format!(
                "output.url: `{}` is being written by job {} ({}), which has not ended; wait for it, cancel it, or write elsewhere",
                spec.output.url, j.id, j.name
            )));
        }
        spec.ingest_options().map_err(status_of)?;
        // The globs' fixed parts first: a pattern outside is refused before it is listed.
        let bases: Vec<String> = spec
            .sources
            .iter()
            .map(|p| glob_base(p).unwrap_or_default().to_string())
            .collect();
        self.check_sources(&bases)?;
        let patterns = spec.sources.clone();
        let sources = blocking(move || expand_sources(&patterns))
            .await
            .map_err(status_of)?;
        self.check_sources(&sources)?;
        let job = JobId::new();
        // A job that may replace an output writes beside it until it has succeeded.
        // An incremental job updates its outputs in place (their metadata last), never staged.
        let staging = (spec.output.overwrite && !spec.incremental()).then(|| job.to_string());
        let record = JobRecord {
            spec,
            sources,
            output_url,
            staging,
        };
        self.record_submitted(job, &record).await?;
        if let Err(e) = self.journal.put_job(job, &record).await {
            let error = format!("cannot journal the job: {e}");
            self.record_end(job, &record, JobState::Failed, Some(error))
                .await;
            return Err(status_of(e));
        }
        self.drive(Event::Submitted {
            job,
            record: Box::new(record),
        })
        .await;
        Ok(job)
    }

    /// A job of `n` tasks that do nothing, to measure the scheduler and the protocol.
    pub async fn submit_noop(&self, n: usize) -> JobId {
        let job = JobId::new();
        self.drive(Event::Planned {
            job,
            name: format!("{n} no-op tasks"),
            plan: Box::new(JobPlan::Noop { stages: vec![n] }),
        })
        .await;
        job
    }

    pub fn status(&self, job: JobId) -> Option<JobStatus> {
        let status = lock(&self.sched).status(job, self.now());
        status.map(|s| self.settled(s))
    }

    /// The tasks of `job`'s current stage with their states, for the status page.
    pub fn tile_map(&self, job: JobId) -> Option<crate::scheduler::TileMap> {
        lock(&self.sched).tile_map(job)
    }

    pub fn jobs(&self) -> Vec<JobStatus> {
        let jobs = lock(&self.sched).jobs(self.now());
        jobs.into_iter().map(|s| self.settled(s)).collect()
    }

    /// A job the scheduler stopped (a task failed it, or it is being cancelled) has not ended
    /// until its life has: it may still be removing what it wrote, and a client that sees the
    /// end must find the store clean.
    fn settled(&self, mut status: JobStatus) -> JobStatus {
        if lock(&self.sched).ending(status.id) {
            status.state = JobState::Running;
        }
        status
    }

    /// The jobs that have not ended and write `output_url`, inside it or around it: two jobs
    /// writing one layer would replace each other's chunks and scratch.
    pub fn writers_of(&self, output_url: &str) -> Vec<JobStatus> {
        self.jobs()
            .into_iter()
            .filter(|j| !j.state.is_terminal() && nested(output_url, &j.output))
            .collect()
    }

    /// Cancels a job: no task of it is leased again, and its end is journalled.
    pub async fn cancel(&self, job: JobId) -> Result<JobStatus, Status> {
        if self.status(job).is_none() {
            return Err(Status::not_found(format!("no job {job}")));
        }
        self.drive(Event::Cancel { job }).await;
        self.status(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))
    }

    /// Tasks leased more than once in the current stage of a job (re-executions).
    pub fn extra_leases(&self, job: JobId) -> u64 {
        lock(&self.sched).extra_leases(job)
    }

    /// What workers need for the tasks of a job's `stage`.
    pub fn stage_context(&self, job: JobId, stage: u32) -> Result<StageContext, Status> {
        let ctx = lock(&self.life)
            .context(job)
            .ok_or_else(|| Status::not_found(format!("no job {job}")))?;
        if stage >= 1 && ctx.plan.is_none() {
            return Err(Status::failed_precondition(format!(
                "job {job} has no plan yet"
            )));
        }
        Ok(ctx)
    }

    // The scheduler's side, for the worker service.

    pub(crate) fn register_worker(&self, worker: WorkerId) -> u64 {
        let mut s = lock(&self.sched);
        s.touch_worker(worker, self.now());
        s.config().lease_ms
    }

    pub(crate) fn lease(&self, worker: WorkerId, max: usize) -> (Vec<Lease>, u64) {
        let now = self.now();
        (lock(&self.sched).lease(worker, max, now), now)
    }

    pub(crate) fn heartbeat(
        &self,
        worker: WorkerId,
        tasks: &[tessera_core::job::TaskId],
    ) -> Vec<tessera_core::job::TaskId> {
        lock(&self.sched).heartbeat(worker, tasks, self.now())
    }

    /// Records a task's report — a success journalled before it counts, so a restarted
    /// coordinator will not redo it — and drives what it led to. Returns whether it counted.
    pub(crate) async fn report(
        self: &Arc<Self>,
        worker: WorkerId,
        report: tessera_core::job::TaskReport,
    ) -> Result<bool, Status> {
        let task = report.task;
        let outcome = match report.outcome {
            Ok(output) => {
                self.journal
                    .put_task(task.job, task.stage, task.index, &output)
                    .await
                    .map_err(status_of)?;
                lock(&self.sched).report_ok(worker, task, output, self.now())
            }
            Err(f) => lock(&self.sched).report_err(worker, task, f.kind, f.message, self.now()),
        };
        let accepted = !matches!(outcome, ReportOutcome::Ignored(_));
        self.notify();
        if let Some(event) = Event::of_outcome(outcome) {
            self.drive_later(event);
        }
        Ok(accepted)
    }

    /// Puts back expired leases; jobs that lost a task too often fail.
    pub(crate) async fn expire(&self) {
        let failed = {
            let mut s = lock(&self.sched);
            s.expire(self.now());
            s.take_failed()
        };
        for (job, error) in failed {
            self.drive(Event::Failed { job, error }).await;
        }
    }
}
