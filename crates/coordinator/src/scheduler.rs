//! The scheduler: a deterministic state machine of jobs, stages, tasks and leases, with no I/O
//! and no clock of its own — every call takes `now` in milliseconds — so that lease expiry,
//! retries with backoff and cancellation are tested exactly, with virtual workers.

use std::collections::{BTreeMap, HashMap};

pub use tessera_core::job::{FailureKind, JobState, JobStatus, TaskOutput, TaskPayload};
use tessera_core::job::{JobId, TaskId, WorkerId};
use tessera_core::metrics::Histogram;

/// Timing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub lease_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Lost leases (a worker died) allowed per task before the job fails.
    pub max_lost_leases: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_ms: 10_000,
            backoff_base_ms: 200,
            backoff_cap_ms: 10_000,
            max_lost_leases: 20,
        }
    }
}

/// A lease handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub task: TaskId,
    pub attempt: u32,
    pub expires_ms: u64,
    pub payload: TaskPayload,
}

#[derive(Debug, Clone, PartialEq)]
enum TaskState {
    Pending { not_before_ms: u64 },
    Leased { worker: WorkerId, expires_ms: u64 },
    Done,
}

#[derive(Debug, Clone)]
struct Task {
    payload: TaskPayload,
    tiles: u64,
    state: TaskState,
    failures: u32,
    lost: u32,
    /// Times the task was leased (for counting re-execution).
    leases: u32,
    /// Every worker the task was leased to: only they may report it done.
    holders: Vec<WorkerId>,
    output: Option<TaskOutput>,
    /// When it was last leased (for the task duration histogram).
    leased_ms: u64,
}

#[derive(Debug, Clone)]
struct Job {
    name: String,
    output: String,
    state: JobState,
    stage: u32,
    tasks: Vec<Task>,
    max_attempts: u32,
    error: Option<String>,
    submitted_ms: u64,
    ended_ms: Option<u64>,
    tiles_total: u64,
    tiles_done: u64,
    bytes: u64,
    retries: u64,
    /// Tasks of the current stage done, and the lowest index that may be pending.
    done: usize,
    cursor: usize,
    /// Tasks done in earlier stages.
    tasks_done_before: u64,
    tasks_total_before: u64,
    /// Stopped here, its life not ended yet (see [`Scheduler::ending`]).
    ending: bool,
    /// What the run does, from its plan.
    summary: Option<String>,
}

/// What a report led to.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// Recorded; the stage goes on.
    Accepted,
    /// Recorded, and it was the stage's last task: the outputs of every task, in task order.
    StageDone {
        job: JobId,
        stage: u32,
        outputs: Vec<TaskOutput>,
    },
    /// The job failed because of this report.
    JobFailed { job: JobId, error: String },
    /// Not recorded: the task is done already, its job is over, or the worker no longer holds
    /// it and reported a failure.
    Ignored(String),
}

/// The scheduler.
#[derive(Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// No lease expires before this (a lower bound), so `expire` can skip its scan.
    next_expiry: u64,
    jobs: BTreeMap<JobId, Job>,
    order: Vec<JobId>,
    workers: HashMap<WorkerId, u64>,
    /// Jobs failed by `expire` (a task lost its lease too often), until taken.
    failed: Vec<(JobId, String)>,
    /// Counters since this scheduler started, for `/metrics`.
    counters: Counters,
}

/// Monotonic counters of what the scheduler did, by task kind (the payload's name).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub leased: BTreeMap<&'static str, u64>,
    pub done: BTreeMap<&'static str, u64>,
    pub failed: BTreeMap<&'static str, u64>,
    pub lease_expiries: u64,
    pub retries: u64,
    pub bytes_written: u64,
    pub tiles_written: u64,
    /// Per kind: from lease to report of finished tasks.
    pub durations: BTreeMap<&'static str, Histogram>,
}

/// The scheduler's state for `/metrics`: counters, and gauges taken now.
#[derive(Debug, Default, Clone)]
pub struct MetricsSnapshot {
    pub counters: Counters,
    /// Jobs by state name.
    pub jobs: BTreeMap<&'static str, u64>,
    /// Tasks waiting to be leased (the queue depth), and leased now, by kind.
    pub queued: BTreeMap<&'static str, u64>,
    pub running: BTreeMap<&'static str, u64>,
    /// Workers heard from within three lease lengths.
    pub workers: u64,
}

/// A task's state as the status page colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileState {
    Queued,
    Running,
    Done,
    /// Its job stopped after it failed: it will not run again.
    Failed,
    /// Waiting or running again after a failure or a lost lease.
    Retried,
}

impl TileState {
    pub fn name(self) -> &'static str {
        match self {
            TileState::Queued => "queued",
            TileState::Running => "running",
            TileState::Done => "done",
            TileState::Failed => "failed",
            TileState::Retried => "retried",
        }
    }
}

/// One task of a [`TileMap`].
#[derive(Debug, Clone, PartialEq)]
pub struct MapTask {
    pub kind: &'static str,
    pub state: TileState,
    /// Times it was leased.
    pub attempts: u32,
    /// The (col, row) spatial keys it writes, for a raster stage; empty otherwise (the page
    /// lays such tasks out by index).
    pub keys: Vec<(u32, u32)>,
}

/// The tasks of a job's current stage, in task order.
#[derive(Debug, Clone, PartialEq)]
pub struct TileMap {
    pub stage: u32,
    pub tasks: Vec<MapTask>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            ..Default::default()
        }
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Adds a job in `Planning` state, with no tasks yet.
    /// A job that ended before this scheduler started (read back from the journal), listed
    /// with its final state and error; it has no tasks.
    pub fn add_ended(
        &mut self,
        id: JobId,
        name: String,
        output: String,
        state: JobState,
        error: Option<String>,
    ) {
        self.add_job(id, name, output, 1, 0);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.state = state;
            j.error = error;
            j.ended_ms = Some(0);
        }
    }

    pub fn add_job(
        &mut self,
        id: JobId,
        name: String,
        output: String,
        max_attempts: u32,
        now: u64,
    ) {
        self.jobs.insert(
            id,
            Job {
                name,
                output,
                state: JobState::Planning,
                stage: 0,
                tasks: Vec::new(),
                max_attempts: max_attempts.max(1),
                error: None,
                submitted_ms: now,
                ended_ms: None,
                tiles_total: 0,
                tiles_done: 0,
                bytes: 0,
                retries: 0,
                done: 0,
                cursor: 0,
                tasks_done_before: 0,
                tasks_total_before: 0,
                ending: false,
                summary: None,
            },
        );
        self.order.push(id);
    }

    pub fn summary(&self, job: JobId) -> Option<String> {
        self.jobs.get(&job).and_then(|j| j.summary.clone())
    }

    /// Keeps what the job's plan says it does, for its status.
    pub fn set_summary(&mut self, job: JobId, summary: Option<String>) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.summary = summary;
        }
    }

    /// Starts `stage` of a job with its tasks (each with the tiles it will write). `done` marks
    /// tasks a previous coordinator already finished (from the journal).
    pub fn start_stage(
        &mut self,
        job: JobId,
        stage: u32,
        tasks: Vec<(TaskPayload, u64)>,
        done: &BTreeMap<u32, TaskOutput>,
    ) -> Option<ReportOutcome> {
        let j = self.jobs.get_mut(&job)?;
        if j.state.is_terminal() {
            return None;
        }
        j.tasks_done_before += j.done as u64;
        j.tasks_total_before += j.tasks.len() as u64;
        j.stage = stage;
        j.state = JobState::Running;
        j.tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, (payload, tiles))| {
                let output = done.get(&(i as u32)).cloned();
                Task {
                    payload,
                    tiles,
                    state: if output.is_some() {
                        TaskState::Done
                    } else {
                        TaskState::Pending { not_before_ms: 0 }
                    },
                    failures: 0,
                    lost: 0,
                    leases: 0,
                    holders: Vec::new(),
                    output,
                    leased_ms: 0,
                }
            })
            .collect();
        j.done = j
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Done)
            .count();
        j.cursor = 0;
        let stage_tiles: u64 = j.tasks.iter().map(|t| t.tiles).sum();
        j.tiles_total += stage_tiles;
        for t in j.tasks.iter().filter(|t| t.state == TaskState::Done) {
            j.tiles_done += t.output.as_ref().map_or(0, |o| o.tiles);
            j.bytes += t.output.as_ref().map_or(0, |o| o.bytes);
        }
        Self::stage_done_outcome(job, j)
    }

    fn stage_done_outcome(job: JobId, j: &Job) -> Option<ReportOutcome> {
        (j.done == j.tasks.len()).then(|| ReportOutcome::StageDone {
            job,
            stage: j.stage,
            outputs: j
                .tasks
                .iter()
                .map(|t| t.output.clone().unwrap_or_default())
                .collect(),
        })
    }

    /// Marks a job `Planning` between stages (while the coordinator reduces).
    pub fn set_planning(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job).filter(|j| !j.state.is_terminal()) {
            j.state = JobState::Planning;
        }
    }

    pub fn succeed(&mut self, job: JobId, now: u64) {
        if let Some(j) = self.jobs.get_mut(&job).filter(|j| !j.state.is_terminal()) {
            j.state = JobState::Succeeded;
            j.ended_ms = Some(now);
        }
    }

    pub fn fail(&mut self, job: JobId, error: String, now: u64) {
        if let Some(j) = self.jobs.get_mut(&job).filter(|j| !j.state.is_terminal()) {
            j.state = JobState::Failed;
            j.error = Some(error);
            j.ended_ms = Some(now);
        }
        // Nothing more is leased; tasks still leased stay so until their workers report or
        // their leases expire, so that `in_flight` can tell when the last one stopped.
        self.halt(job);
    }

    /// Cancels a job: no more leases; reports for it are ignored. Returns false if unknown.
    pub fn cancel(&mut self, job: JobId, now: u64) -> bool {
        let Some(j) = self.jobs.get_mut(&job) else {
            return false;
        };
        if !j.state.is_terminal() {
            j.state = JobState::Cancelled;
            j.ended_ms = Some(now);
        }
        true
    }

    /// Leases no more tasks of `job` (it is ending); those leased run on until reported. The
    /// job is [`Scheduler::ending`] until [`Scheduler::ended`].
    pub fn halt(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.ending = true;
            for t in &mut j.tasks {
                if let TaskState::Pending { .. } = t.state {
                    t.state = TaskState::Pending {
                        not_before_ms: u64::MAX,
                    };
                }
            }
        }
    }

    /// Whether `job` was stopped here (a failed task, a cancel) and its life has not ended yet
    /// (it is removing what it wrote).
    pub fn ending(&self, job: JobId) -> bool {
        self.jobs.get(&job).is_some_and(|j| j.ending)
    }

    /// The job's life has ended: what it wrote is committed or removed.
    pub fn ended(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.ending = false;
        }
    }

    /// How many tasks of `job` workers may still be running: leased and not expired. An ended
    /// job's count falls as its workers report and as their leases run out (they are no longer
    /// extended), so it reaches 0 within one lease.
    pub fn in_flight(&self, job: JobId, now: u64) -> usize {
        self.jobs.get(&job).map_or(0, |j| {
            j.tasks
                .iter()
                .filter(
                    |t| matches!(t.state, TaskState::Leased { expires_ms, .. } if expires_ms > now),
                )
                .count()
        })
    }

    /// A report for a job that has ended: the worker has stopped running the task.
    fn release(j: &mut Job, i: usize, worker: WorkerId) {
        if let TaskState::Leased { worker: w, .. } = j.tasks[i].state
            && w == worker
        {
            j.tasks[i].state = TaskState::Pending {
                not_before_ms: u64::MAX,
            };
        }
    }

    /// Registers a worker (or notes that it is alive).
    pub fn touch_worker(&mut self, worker: WorkerId, now: u64) {
        self.workers.insert(worker, now);
    }

    /// Puts back every lease past its expiry; a task that lost too many leases fails its job.
    pub fn expire(&mut self, now: u64) {
        if now < self.next_expiry {
            return;
        }
        let mut next = u64::MAX;
        let max_lost = self.config.max_lost_leases;
        let mut failed = Vec::new();
        for (id, j) in self
            .jobs
            .iter_mut()
            .filter(|(_, j)| j.state == JobState::Running)
        {
            for (i, t) in j.tasks.iter_mut().enumerate() {
                let TaskState::Leased { worker, expires_ms } = t.state else {
                    continue;
                };
                if expires_ms > now {
                    next = next.min(expires_ms);
                    continue;
                }
                t.lost += 1;
                j.retries += 1;
                self.counters.lease_expiries += 1;
                self.counters.retries += 1;
                t.state = TaskState::Pending { not_before_ms: now };
                j.cursor = j.cursor.min(i);
                if t.lost > max_lost {
                    let task = TaskId {
                        job: *id,
                        stage: j.stage,
                        index: i as u32,
                    };
                    failed.push((
                        *id,
                        format!(
                            "task {task} lost its lease {} times (last held by worker {worker})",
                            t.lost
                        ),
                    ));
                }
            }
        }
        self.next_expiry = next;
        for (job, error) in failed {
            self.fail(job, error.clone(), now);
            self.failed.push((job, error));
        }
    }

    /// The jobs `expire` failed since the last call, with their errors.
    pub fn take_failed(&mut self) -> Vec<(JobId, String)> {
        std::mem::take(&mut self.failed)
    }

    /// Leases up to `max` runnable tasks to `worker`, oldest job first.
    pub fn lease(&mut self, worker: WorkerId, max: usize, now: u64) -> Vec<Lease> {
        self.expire(now);
        self.touch_worker(worker, now);
        let expires_ms = now + self.config.lease_ms;
        let mut out = Vec::new();
        for id in &self.order {
            if out.len() >= max {
                break;
            }
            let Some(j) = self
                .jobs
                .get_mut(id)
                .filter(|j| j.state == JobState::Running)
            else {
                continue;
            };
            // Every task before the cursor is leased or done; a task put back moves it down.
            let mut first_pending = None;
            for i in j.cursor..j.tasks.len() {
                let t = &mut j.tasks[i];
                let TaskState::Pending { not_before_ms } = t.state else {
                    continue;
                };
                if out.len() >= max || not_before_ms > now {
                    first_pending.get_or_insert(i);
                    if out.len() >= max {
                        break;
                    }
                    continue;
                }
                t.state = TaskState::Leased { worker, expires_ms };
                t.leases += 1;
                t.leased_ms = now;
                *self.counters.leased.entry(t.payload.name()).or_default() += 1;
                if !t.holders.contains(&worker) {
                    t.holders.push(worker);
                }
                out.push(Lease {
                    task: TaskId {
                        job: *id,
                        stage: j.stage,
                        index: i as u32,
                    },
                    attempt: t.failures + t.lost + 1,
                    expires_ms,
                    payload: t.payload.clone(),
                });
            }
            j.cursor = first_pending.unwrap_or(j.tasks.len());
        }
        if !out.is_empty() {
            self.next_expiry = self.next_expiry.min(expires_ms);
        }
        out
    }

    fn task_mut(&mut self, task: TaskId) -> Option<(&mut Job, usize)> {
        Self::task_in(&mut self.jobs, task)
    }

    /// A task of a current stage, from the jobs alone (so the counters stay borrowable).
    fn task_in(jobs: &mut BTreeMap<JobId, Job>, task: TaskId) -> Option<(&mut Job, usize)> {
        let j = jobs.get_mut(&task.job)?;
        let i = task.index as usize;
        (j.stage == task.stage && i < j.tasks.len()).then_some((j, i))
    }

    /// Extends the leases `worker` holds among `tasks`; returns those it no longer holds.
    pub fn heartbeat(&mut self, worker: WorkerId, tasks: &[TaskId], now: u64) -> Vec<TaskId> {
        self.expire(now);
        self.touch_worker(worker, now);
        let lease_ms = self.config.lease_ms;
        let mut lost = Vec::new();
        for &task in tasks {
            let held = match self.task_mut(task) {
                Some((j, i)) if j.state == JobState::Running => match &mut j.tasks[i].state {
                    TaskState::Leased {
                        worker: w,
                        expires_ms,
                    } if *w == worker => {
                        *expires_ms = now + lease_ms;
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !held {
                lost.push(task);
            }
        }
        lost
    }

    /// Records a task's success. A success from a worker that no longer holds the task still
    /// counts when the task is not done yet: outputs go to deterministic keys, so the result is
    /// the same whoever wrote it. A worker the task was never leased to is refused.
    pub fn report_ok(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        output: TaskOutput,
        now: u64,
    ) -> ReportOutcome {
        self.touch_worker(worker, now);
        let Some((j, i)) = Self::task_in(&mut self.jobs, task) else {
            return ReportOutcome::Ignored(format!("task {task} is not part of a current stage"));
        };
        if j.state != JobState::Running {
            Self::release(j, i, worker);
            return ReportOutcome::Ignored(format!("job {} is {:?}", task.job, j.state));
        }
        let t = &mut j.tasks[i];
        if !t.holders.contains(&worker) {
            return ReportOutcome::Ignored(format!("worker {worker} was never leased task {task}"));
        }
        if t.state == TaskState::Done {
            return ReportOutcome::Ignored(format!("task {task} is done already"));
        }
        t.state = TaskState::Done;
        j.done += 1;
        j.tiles_done += output.tiles;
        j.bytes += output.bytes;
        let kind = t.payload.name();
        let c = &mut self.counters;
        *c.done.entry(kind).or_default() += 1;
        c.bytes_written += output.bytes;
        c.tiles_written += output.tiles;
        let seconds = now.saturating_sub(t.leased_ms) as f64 / 1000.0;
        c.durations.entry(kind).or_default().observe(seconds);
        t.output = Some(output);
        Self::stage_done_outcome(task.job, j).unwrap_or(ReportOutcome::Accepted)
    }

    /// Records a task's failure: retried after a backoff, or the job fails — at once for bad
    /// input or a configuration fault, after `max_attempts` failures otherwise — with the
    /// task's error.
    pub fn report_err(
        &mut self,
        worker: WorkerId,
        task: TaskId,
        kind: FailureKind,
        error: String,
        now: u64,
    ) -> ReportOutcome {
        self.touch_worker(worker, now);
        let (base, cap) = (self.config.backoff_base_ms, self.config.backoff_cap_ms);
        let Some((j, i)) = Self::task_in(&mut self.jobs, task) else {
            return ReportOutcome::Ignored(format!("task {task} is not part of a current stage"));
        };
        if j.state != JobState::Running {
            Self::release(j, i, worker);
            return ReportOutcome::Ignored(format!("job {} is {:?}", task.job, j.state));
        }
        let t = &mut j.tasks[i];
        match t.state {
            TaskState::Leased { worker: w, .. } if w == worker => {}
            _ => {
                return ReportOutcome::Ignored(format!(
                    "worker {worker} does not hold task {task}"
                ));
            }
        }
        t.failures += 1;
        let failures = t.failures;
        *self.counters.failed.entry(t.payload.name()).or_default() += 1;
        if kind.is_final() || failures >= j.max_attempts {
            // This worker has stopped running it.
            t.state = TaskState::Pending {
                not_before_ms: u64::MAX,
            };
            let error = if kind.is_final() {
                error
            } else {
                format!("task {task} failed {failures} times; last error: {error}")
            };
            self.fail(task.job, error.clone(), now);
            return ReportOutcome::JobFailed {
                job: task.job,
                error,
            };
        }
        j.retries += 1;
        self.counters.retries += 1;
        let backoff = base.saturating_mul(1 << (failures - 1).min(20)).min(cap);
        t.state = TaskState::Pending {
            not_before_ms: now + backoff,
        };
        j.cursor = j.cursor.min(i);
        ReportOutcome::Accepted
    }

    pub fn status(&self, job: JobId, now: u64) -> Option<JobStatus> {
        let j = self.jobs.get(&job)?;
        Some(JobStatus {
            id: job,
            name: j.name.clone(),
            output: j.output.clone(),
            state: j.state,
            stage: j.stage,
            tasks_total: j.tasks_total_before + j.tasks.len() as u64,
            tasks_done: j.tasks_done_before + j.done as u64,
            tiles_total: j.tiles_total,
            tiles_done: j.tiles_done,
            bytes_written: j.bytes,
            retries: j.retries,
            error: j.error.clone(),
            elapsed_ms: j.ended_ms.unwrap_or(now).saturating_sub(j.submitted_ms),
            summary: j.summary.clone(),
        })
    }

    /// The counters and the gauges of this moment, for `/metrics`.
    pub fn metrics(&self, now: u64) -> MetricsSnapshot {
        let mut m = MetricsSnapshot {
            counters: self.counters.clone(),
            ..Default::default()
        };
        for j in self.jobs.values() {
            *m.jobs.entry(j.state.name()).or_default() += 1;
            if j.state != JobState::Running {
                continue;
            }
            for t in &j.tasks {
                let kind = t.payload.name();
                match t.state {
                    TaskState::Pending { not_before_ms } if not_before_ms != u64::MAX => {
                        *m.queued.entry(kind).or_default() += 1
                    }
                    TaskState::Leased { .. } => *m.running.entry(kind).or_default() += 1,
                    _ => {}
                }
            }
        }
        let recent = now.saturating_sub(3 * self.config.lease_ms);
        m.workers = self
            .workers
            .values()
            .filter(|&&seen| seen >= recent)
            .count() as u64;
        m
    }

    /// The tasks of `job`'s current (or last) stage, each with its state and where it lies:
    /// what the status page draws as the job's tile map.
    pub fn tile_map(&self, job: JobId) -> Option<TileMap> {
        let j = self.jobs.get(&job)?;
        let tasks = j
            .tasks
            .iter()
            .map(|t| {
                let again = t.failures + t.lost > 0;
                let state = match t.state {
                    TaskState::Done => TileState::Done,
                    TaskState::Leased { .. } if again => TileState::Retried,
                    TaskState::Leased { .. } => TileState::Running,
                    // Halted: it will not run again; it failed if it ever did.
                    TaskState::Pending { not_before_ms } if not_before_ms == u64::MAX => {
                        if t.failures > 0 {
                            TileState::Failed
                        } else {
                            TileState::Queued
                        }
                    }
                    TaskState::Pending { .. } if again => TileState::Retried,
                    TaskState::Pending { .. } => TileState::Queued,
                };
                let keys = match &t.payload {
                    TaskPayload::WriteKeys { keys } => {
                        keys.iter().map(|k| (k.col, k.row)).collect()
                    }
                    _ => Vec::new(),
                };
                MapTask {
                    kind: t.payload.name(),
                    state,
                    attempts: t.leases,
                    keys,
                }
            })
            .collect();
        Some(TileMap {
            stage: j.stage,
            tasks,
        })
    }

    pub fn jobs(&self, now: u64) -> Vec<JobStatus> {
        self.order
            .iter()
            .filter_map(|id| self.status(*id, now))
            .collect()
    }

    /// How many times tasks of the current stage of `job` were leased beyond once each.
    pub fn extra_leases(&self, job: JobId) -> u64 {
        self.jobs.get(&job).map_or(0, |j| {
            j.tasks
                .iter()
                .map(|t| t.leases.saturating_sub(1) as u64)
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler with a fast clock and one running job of `n` no-op tasks.
    fn setup(n: usize, max_attempts: u32) -> (Scheduler, JobId) {
        let mut s = Scheduler::new(SchedulerConfig {
            lease_ms: 1000,
            backoff_base_ms: 100,
            backoff_cap_ms: 400,
            max_lost_leases: 3,
        });
        let job = JobId::new();
        s.add_job(job, "test".into(), "memory://out".into(), max_attempts, 0);
        assert_eq!(
            s.start_stage(job, 1, vec![(TaskPayload::Noop, 1); n], &BTreeMap::new()),
            None
        );
        (s, job)
    }

    fn ok() -> TaskOutput {
        TaskOutput {
            tiles: 1,
            bytes: 10,
            result: None,
        }
    }

    #[test]
    fn the_tile_map_colours_each_task_by_its_state() {
        let (mut s, job) = setup(4, 2);
        let w = WorkerId::new();
        let states = |s: &Scheduler| -> Vec<&str> {
            let map = s.tile_map(job).unwrap();
            map.tasks.iter().map(|t| t.state.name()).collect()
        };
        assert_eq!(states(&s), ["queued"; 4]);
        let l = s.lease(w, 3, 0);
        s.report_ok(w, l[0].task, ok(), 10);
        s.report_err(w, l[1].task, FailureKind::Execution, "boom".into(), 10);
        assert_eq!(states(&s), ["done", "retried", "running", "queued"]);
        // Leased again after its backoff: still marked as a retry.
        assert!(s.heartbeat(w, &[l[2].task], 900).is_empty());
        let again = s.lease(w, 1, 1000);
        assert_eq!(again[0].task, l[1].task);
        assert_eq!(states(&s), ["done", "retried", "running", "queued"]);
        assert_eq!(s.tile_map(job).unwrap().tasks[1].attempts, 2);
        // Its second failure fails the job: that task is failed, the untouched one queued.
        s.report_err(w, l[1].task, FailureKind::Execution, "boom".into(), 1010);
        assert_eq!(states(&s), ["done", "failed", "running", "queued"]);
        assert!(s.tile_map(JobId::new()).is_none());
    }

    #[test]
    fn leases_expire_and_are_leased_again() {
        let (mut s, job) = setup(2, 3);
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let la = s.lease(a, 10, 0);
        assert_eq!(la.len(), 2);
        assert!(s.lease(b, 10, 500).is_empty(), "both leased to a");
        // a heartbeats task 0 only; task 1's lease expires at 1000.
        assert!(s.heartbeat(a, &[la[0].task], 900).is_empty());
        let lb = s.lease(b, 10, 1000);
        assert_eq!(
            lb.iter().map(|l| l.task).collect::<Vec<_>>(),
            vec![la[1].task]
        );
        assert_eq!(lb[0].attempt, 2);
        // a's heartbeat for task 1 now says it was lost.
        assert_eq!(
            s.heartbeat(a, &[la[0].task, la[1].task], 1100),
            vec![la[1].task]
        );
        assert_eq!(s.status(job, 1100).unwrap().retries, 1);
        assert_eq!(s.extra_leases(job), 1);
    }

    #[test]
    fn failures_back_off_then_the_job_fails_with_the_task_error() {
        let (mut s, job) = setup(1, 3);
        let w = WorkerId::new();
        let t = s.lease(w, 1, 0)[0].task;
        assert_eq!(
            s.report_err(w, t, FailureKind::Execution, "disk full".into(), 10),
            ReportOutcome::Accepted
        );
        // Backoff 100 ms after the first failure.
        assert!(s.lease(w, 1, 109).is_empty());
        assert_eq!(s.lease(w, 1, 110).len(), 1);
        assert_eq!(
            s.report_err(w, t, FailureKind::Execution, "disk full".into(), 120),
            ReportOutcome::Accepted
        );
        // 200 ms after the second.
        assert!(s.lease(w, 1, 319).is_empty());
        assert_eq!(s.lease(w, 1, 320).len(), 1);
        match s.report_err(w, t, FailureKind::Execution, "disk full".into(), 330) {
            ReportOutcome::JobFailed { error, .. } => assert_eq!(
                error,
                format!("task {t} failed 3 times; last error: disk full")
            ),
            other => panic!("{other:?}"),
        }
        let st = s.status(job, 400).unwrap();
        assert_eq!(st.state, JobState::Failed);
        assert!(st.error.unwrap().contains("disk full"));
        assert!(
            s.lease(w, 1, 10_000).is_empty(),
            "a failed job leases nothing"
        );
        assert_eq!(s.in_flight(job, 400), 0, "the failing task is not running");
    }

    #[test]
    fn an_input_error_fails_the_job_at_once() {
        let (mut s, job) = setup(3, 5);
        let w = WorkerId::new();
        let l = s.lease(w, 3, 0);
        let out = s.report_err(
            w,
            l[1].task,
            FailureKind::Input,
            "a.tif: band 4 not found (it has 1 band)".into(),
            5,
        );
        assert_eq!(
            out,
            ReportOutcome::JobFailed {
                job,
                error: "a.tif: band 4 not found (it has 1 band)".into()
            }
        );
        // Later reports of the other tasks are ignored.
        assert!(matches!(
            s.report_ok(w, l[0].task, ok(), 6),
            ReportOutcome::Ignored(_)
        ));
    }

    #[test]
    fn cancel_while_tasks_run() {
        let (mut s, job) = setup(4, 3);
        let w = WorkerId::new();
        let l = s.lease(w, 2, 0);
        assert!(matches!(
            s.report_ok(w, l[0].task, ok(), 1),
            ReportOutcome::Accepted
        ));
        assert!(s.cancel(job, 2));
        assert_eq!(s.status(job, 3).unwrap().state, JobState::Cancelled);
        assert!(s.lease(w, 10, 3).is_empty());
        // The task still running is counted until its worker reports it.
        assert_eq!(s.in_flight(job, 3), 1);
        assert!(matches!(
            s.report_ok(w, l[1].task, ok(), 4),
            ReportOutcome::Ignored(_)
        ));
        assert_eq!(s.in_flight(job, 4), 0, "the late report ends it");
        assert_eq!(
            s.heartbeat(w, &[l[1].task], 5),
            vec![l[1].task],
            "the worker learns its task is gone"
        );
        assert!(!s.cancel(JobId::new(), 6));
    }

    #[test]
    fn a_worker_reporting_a_task_it_no_longer_holds() {
        let (mut s, job) = setup(1, 3);
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let t = s.lease(a, 1, 0)[0].task;
        // a goes quiet; the lease expires and b takes the task.
        assert_eq!(s.lease(b, 1, 1000)[0].task, t);
        // a's late failure is ignored: b holds the task.
        assert!(matches!(
            s.report_err(a, t, FailureKind::Execution, "x".into(), 1001),
            ReportOutcome::Ignored(_)
        ));
        // a's late success counts (same deterministic output) and completes the stage...
        match s.report_ok(a, t, ok(), 1002) {
            ReportOutcome::StageDone {
                job: j,
                stage: 1,
                outputs,
            } => {
                assert_eq!(j, job);
                assert_eq!(outputs, vec![ok()]);
            }
            other => panic!("{other:?}"),
        }
        // ...and b's success afterwards is a duplicate.
        assert!(
            matches!(s.report_ok(b, t, ok(), 1003), ReportOutcome::Ignored(m) if m.contains("done already"))
        );
        assert_eq!(s.status(job, 1003).unwrap().tiles_done, 1, "counted once");
    }

    /// Issue 20, finding 8: a worker could report a task another worker held, and it counted.
    #[test]
    fn a_worker_that_never_held_a_task_cannot_report_it() {
        let (mut s, job) = setup(1, 3);
        let (a, stranger) = (WorkerId::new(), WorkerId::new());
        let t = s.lease(a, 1, 0)[0].task;
        for outcome in [
            s.report_ok(stranger, t, ok(), 1),
            s.report_err(stranger, t, FailureKind::Input, "x".into(), 1),
        ] {
            assert!(matches!(outcome, ReportOutcome::Ignored(_)), "{outcome:?}");
        }
        assert_eq!(s.status(job, 2).unwrap().tasks_done, 0);
        assert_eq!(s.status(job, 2).unwrap().state, JobState::Running);
        assert!(matches!(
            s.report_ok(a, t, ok(), 3),
            ReportOutcome::StageDone { .. }
        ));
    }

    #[test]
    fn too_many_lost_leases_fail_the_job() {
        let (mut s, job) = setup(1, 3);
        let w = WorkerId::new();
        for round in 0..4u64 {
            assert_eq!(s.lease(w, 1, round * 1000).len(), 1, "round {round}");
        }
        s.expire(4000);
        let st = s.status(job, 4000).unwrap();
        assert_eq!(st.state, JobState::Failed);
        assert!(st.error.unwrap().contains("lost its lease 4 times"));
    }

    #[test]
    fn a_resumed_stage_skips_done_tasks_and_may_be_done_at_once() {
        let mut s = Scheduler::default();
        let job = JobId::new();
        s.add_job(job, "r".into(), "o".into(), 3, 0);
        let done: BTreeMap<u32, TaskOutput> = [(0, ok()), (2, ok())].into();
        assert_eq!(
            s.start_stage(job, 1, vec![(TaskPayload::Noop, 1); 3], &done),
            None
        );
        let w = WorkerId::new();
        let l = s.lease(w, 10, 0);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].task.index, 1);
        assert!(matches!(
            s.report_ok(w, l[0].task, ok(), 1),
            ReportOutcome::StageDone { .. }
        ));
        let all: BTreeMap<u32, TaskOutput> = [(0, ok()), (1, ok())].into();
        let job2 = JobId::new();
        s.add_job(job2, "r2".into(), "o".into(), 3, 0);
        assert!(matches!(
            s.start_stage(job2, 1, vec![(TaskPayload::Noop, 1); 2], &all),
            Some(ReportOutcome::StageDone { .. })
        ));
    }
}
