//! One life for every job kind.
//!
//! A job goes through the same steps whatever it computes:
//!
//! ```text
//! stage 0: header tasks on workers (one per source)
//!    │  reduce: a pure function of the headers → a serialisable JobPlan (journalled)
//!    ▼
//! prepare: create the outputs (or, resumed, make sure they are there)
//!    │
//! stages 1..=last: tasks of the plan (each finished task journalled)
//!    ▼
//! commit: mark the outputs complete (promote them over the old ones when they replace any)
//!
//! failed or cancelled after prepare: discard what the job wrote
//! ```
//!
//! The coordinator and the worker drive any [`JobPlan`] without knowing its kind: the
//! coordinator asks for [`header_tasks`], calls [`reduce`], then [`JobPlan::stage_tasks`],
//! [`JobPlan::prepare`] and [`JobPlan::commit`]; the worker calls [`execute`] on whatever it
//! leased. A kind is a spec section, a planner and an executor here:
//! - [`raster`]: tile jobs (cut, merge, map algebra, focal operations) into a raster layer;
//! - [`cube`]: space-time jobs (resample, climatology, anomaly, gradient, rechunk) into
//!   space-time layers;
//! - [`zonal`]: statistics per zone of a polygon layer, as a table;
//! - [`interpolate`]: station values gridded per time step (IDW, kriging, ...) into a cube.
//!
//! To add a kind: give [`JobSpec`] its section, implement [`JobKind`] for its plan in a module
//! beside these two, and add it to [`JobPlan`] and to the dispatch in [`kind_of`].

pub mod cube;
pub mod interpolate;
pub mod raster;
pub mod zonal;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{JobSpec, TaskOutput, TaskPayload};
use crate::staging::Output;

/// A job as accepted and journalled: the spec, its sources expanded, its output resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub sources: Vec<String>,
    pub output_url: String,
    /// Set when the job replaces an existing output: the tag of its staging prefix (the job's
    /// id), so that the old output stays whole until the job has succeeded
    /// ([`crate::staging`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<String>,
}

impl JobRecord {
    /// The job's output: where its writers write, and where that ends up.
    pub fn output(&self) -> Output {
        self.output_of(&self.output_url)
    }

    /// The same for another output of the job (a cube product with a URL of its own).
    pub fn output_of(&self, url: &str) -> Output {
        match &self.staging {
            Some(tag) => Output::staged(url, tag),
            None => Output::direct(url),
        }
    }
}

/// A task with the number of tiles (or chunks) it is expected to write, for progress.
pub type PlannedTask = (TaskPayload, u64);

/// What one kind of job does at each step of the life. Implemented by the kind's plan: the
/// serialisable result of its reduce, journalled and sent to workers.
pub trait JobKind: Sized + Clone + Serialize + DeserializeOwned {
    /// Reads one source's header on a worker (stage 0); the result goes to [`JobKind::reduce`].
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value>;

    /// The plan, from the headers of every source in order. Pure: writes nothing.
    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self>;

    /// The last stage that may have tasks.
    fn last_stage(&self) -> u32;

    /// The tasks of a stage (1..=last), in the order they should be leased; empty when this
    /// plan has none in that stage.
    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask>;

    /// Creates the outputs before the first task runs. `resumed`: a restarted coordinator
    /// continues the job, so outputs that exist are kept (their finished chunks with them).
    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()>;

    /// Runs one task of stage 1 or later on the worker's compute pool.
    fn execute(
        &self,
        job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput>;

    /// Marks the outputs complete, once every stage is done; `outputs` are what every task
    /// reported (by stage and index), for a kind to check the store against.
    fn commit(&self, job: &JobRecord, outputs: &StageOutputs) -> Result<()>;

    /// Removes what the job wrote, after it failed or was cancelled once its outputs were
    /// prepared: staged outputs leave the old ones untouched ([`crate::staging`]).
    fn discard(&self, job: &JobRecord) -> Result<()>;
}

/// What the finished tasks of a job reported, by stage and task index.
pub type StageOutputs =
    std::collections::BTreeMap<u32, std::collections::BTreeMap<u32, TaskOutput>>;

/// The plan of a job of any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "plan", rename_all = "snake_case")]
pub enum JobPlan {
    Raster(raster::RasterPlan),
    Cube(crate::cube::CubePlan),
    Zonal(crate::zonal::ZonalPlan),
    Interpolate(Box<crate::interpolate::InterpolatePlan>),
    /// Stages of tasks that do nothing (`stages[k]` tasks in stage k + 1), to measure the
    /// scheduler and the protocol, and to test the lifecycle.
    Noop {
        stages: Vec<usize>,
    },
}

/// The kinds, by the spec section that asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raster,
    Cube,
    Zonal,
    Interpolate,
}

/// The kind a spec asks for.
pub fn kind_of(spec: &JobSpec) -> Kind {
    match (&spec.cube, &spec.zonal, &spec.interpolate) {
        (Some(_), _, _) => Kind::Cube,
        (_, Some(_), _) => Kind::Zonal,
        (_, _, Some(_)) => Kind::Interpolate,
        _ => Kind::Raster,
    }
}

/// A dataset a job writes, as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDataset {
    pub name: String,
    pub kind: crate::catalog::DatasetKind,
    pub url: String,
}

/// The datasets a job writes: its layer, each cube product, or its table. Named by the spec's
/// `catalog.name` (`<name>/<product>` for a cube's products), else by their path in the store
/// at `store_url`.
pub fn datasets(job: &JobRecord, store_url: &str) -> Vec<JobDataset> {
    use crate::catalog::DatasetKind;
    let root = format!("{}/", store_url.trim_end_matches('/'));
    let output = job.output_url.trim_end_matches('/');
    let path_name = |url: &str| {
        let url = url.trim_end_matches('/');
        url.strip_prefix(&root)
            .or_else(|| url.strip_prefix(root.trim_start_matches("file://")))
            .unwrap_or_else(|| url.rsplit('/').next().unwrap_or(url))
            .to_string()
    };
    let named = job.spec.catalog.as_ref().and_then(|c| c.name.clone());
    match kind_of(&job.spec) {
        Kind::Cube => job
            .spec
            .cube
            .iter()
            .flat_map(|c| &c.products)
            .map(|(product, p)| {
                let url = p
                    .url
                    .clone()
                    .unwrap_or_else(|| format!("{output}/{product}"));
                JobDataset {
                    name: match &named {
                        Some(n) => format!("{n}/{product}"),
                        None => path_name(&url),
                    },
                    kind: DatasetKind::Cube,
                    url,
                }
            })
            .collect(),
        kind => vec![JobDataset {
            name: named.unwrap_or_else(|| path_name(output)),
            kind: match kind {
                Kind::Zonal => DatasetKind::Table,
                Kind::Interpolate => DatasetKind::Cube,
                _ => DatasetKind::Raster,
            },
            url: output.to_string(),
        }],
    }
}

/// The header tasks (stage 0) of a job: one per source.
pub fn header_tasks(job: &JobRecord) -> Vec<PlannedTask> {
    job.sources
        .iter()
        .map(|url| (TaskPayload::Header { url: url.clone() }, 0))
        .collect()
}

/// The reduce after the header stage, for any kind. Pure: writes nothing.
pub fn reduce(job: &JobRecord, outputs: Vec<TaskOutput>) -> Result<JobPlan> {
    let headers = outputs
        .into_iter()
        .map(|o| {
            o.result
                .ok_or_else(|| Error::Internal("a header task returned no header".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(match kind_of(&job.spec) {
        Kind::Raster => JobPlan::Raster(raster::RasterPlan::reduce(job, headers)?),
        Kind::Cube => JobPlan::Cube(crate::cube::CubePlan::reduce(job, headers)?),
        Kind::Zonal => JobPlan::Zonal(<crate::zonal::ZonalPlan as JobKind>::reduce(job, headers)?),
        Kind::Interpolate => JobPlan::Interpolate(Box::new(JobKind::reduce(job, headers)?)),
    })
}

impl JobPlan {
    /// What the run does beyond its figures, for its status: an incremental run's steps
    /// added and read and periods recomputed, or that nothing was new.
    pub fn summary(&self) -> Option<String> {
        match self {
            JobPlan::Cube(p) => p.summary(),
            JobPlan::Raster(p) => p.summary(),
            _ => None,
        }
    }

    /// What the finished tasks measured, for the job's status: the steps an incremental
    /// cube run's map tasks read from their sources.
    pub fn measured(&self, outputs: &StageOutputs) -> Option<String> {
        match self {
            JobPlan::Cube(p) if p.incremental() => Some(format!(
                "the map tasks read {} steps from the sources",
                crate::cube::incremental::steps_read(outputs)
            )),
            _ => None,
        }
    }

    pub fn last_stage(&self) -> u32 {
        match self {
            JobPlan::Raster(p) => p.last_stage(),
            JobPlan::Cube(p) => JobKind::last_stage(p),
            JobPlan::Zonal(p) => JobKind::last_stage(p),
            JobPlan::Interpolate(p) => JobKind::last_stage(p.as_ref()),
            JobPlan::Noop { stages } => stages.len() as u32,
        }
    }

    pub fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        match self {
            JobPlan::Raster(p) => p.stage_tasks(stage),
            JobPlan::Cube(p) => JobKind::stage_tasks(p, stage),
            JobPlan::Zonal(p) => JobKind::stage_tasks(p, stage),
            JobPlan::Interpolate(p) => JobKind::stage_tasks(p.as_ref(), stage),
            JobPlan::Noop { stages } => {
                let n = stage
                    .checked_sub(1)
                    .and_then(|k| stages.get(k as usize))
                    .copied()
                    .unwrap_or(0);
                vec![(TaskPayload::Noop, 0); n]
            }
        }
    }

    /// The first stage after `after` that has tasks, with them; `None` when every stage is done.
    pub fn next_stage(&self, after: u32) -> Option<(u32, Vec<PlannedTask>)> {
        (after + 1..=self.last_stage())
            .map(|stage| (stage, self.stage_tasks(stage)))
            .find(|(_, tasks)| !tasks.is_empty())
    }

    /// What the plan left out of its inputs and a user must hear of (`on_bad_input: skip`).
    pub fn skipped_inputs(&self) -> Vec<String> {
        match self {
            JobPlan::Cube(p) => p
                .products
                .first()
                .map(|p| p.info.skipped_inputs.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    pub fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        match self {
            JobPlan::Raster(p) => p.prepare(job, resumed),
            JobPlan::Cube(p) => JobKind::prepare(p, job, resumed),
            JobPlan::Zonal(p) => JobKind::prepare(p, job, resumed),
            JobPlan::Interpolate(p) => JobKind::prepare(p.as_ref(), job, resumed),
            JobPlan::Noop { .. } => Ok(()),
        }
    }

    pub fn commit(&self, job: &JobRecord, outputs: &StageOutputs) -> Result<()> {
        match self {
            JobPlan::Raster(p) => p.commit(job, outputs),
            JobPlan::Cube(p) => JobKind::commit(p, job, outputs),
            JobPlan::Zonal(p) => JobKind::commit(p, job, outputs),
            JobPlan::Interpolate(p) => JobKind::commit(p.as_ref(), job, outputs),
            JobPlan::Noop { .. } => Ok(()),
        }
    }

    pub fn discard(&self, job: &JobRecord) -> Result<()> {
        match self {
            JobPlan::Raster(p) => p.discard(job),
            JobPlan::Cube(p) => JobKind::discard(p, job),
            JobPlan::Zonal(p) => JobKind::discard(p, job),
            JobPlan::Interpolate(p) => JobKind::discard(p.as_ref(), job),
            JobPlan::Noop { .. } => Ok(()),
        }
    }

    fn execute(
        &self,
        job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput> {
        match self {
            JobPlan::Raster(p) => p.execute(job, task, pool),
            JobPlan::Cube(p) => JobKind::execute(p, job, task, pool),
            JobPlan::Zonal(p) => JobKind::execute(p, job, task, pool),
            JobPlan::Interpolate(p) => JobKind::execute(p.as_ref(), job, task, pool),
            JobPlan::Noop { .. } => Ok(TaskOutput::default()),
        }
    }
}

/// What a worker needs to run the tasks of a job's stage: the job, and its plan from stage 1 on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageContext {
    pub job: JobRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<JobPlan>,
}

/// The threads a worker computes on: one rayon pool per worker, sized by `--threads`, built
/// once and used by every task the worker runs (a pool per task cost a thread start-up each
/// time). Workers embedded in one process each have their own, so one cannot starve another.
#[derive(Clone)]
pub struct ComputePool(std::sync::Arc<rayon::ThreadPool>);

impl ComputePool {
    pub fn new(threads: usize) -> Result<ComputePool> {
        let threads = threads.max(1);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tessera-compute-{i}"))
            .build()
            .map(|p| ComputePool(std::sync::Arc::new(p)))
            .map_err(|e| Error::Internal(format!("cannot start {threads} compute threads: {e}")))
    }

    pub fn threads(&self) -> usize {
        self.0.current_num_threads()
    }

    /// Runs `f` with this pool as the one rayon's parallel iterators use.
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.0.install(f)
    }
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComputePool({} threads)", self.threads())
    }
}

/// Runs any task of any job on a worker's pool: what a worker does with a lease.
pub fn execute(ctx: &StageContext, task: &TaskPayload, pool: &ComputePool) -> Result<TaskOutput> {
    match (task, &ctx.plan) {
        (TaskPayload::Noop, _) => Ok(TaskOutput::default()),
        (TaskPayload::Header { url }, _) => {
            let header = match kind_of(&ctx.job.spec) {
                Kind::Raster => raster::RasterPlan::header(&ctx.job, url)?,
                Kind::Cube => <crate::cube::CubePlan as JobKind>::header(&ctx.job, url)?,
                Kind::Zonal => <crate::zonal::ZonalPlan as JobKind>::header(&ctx.job, url)?,
                Kind::Interpolate => {
                    <crate::interpolate::InterpolatePlan as JobKind>::header(&ctx.job, url)?
                }
            };
            Ok(TaskOutput {
                tiles: 0,
                bytes: 0,
                result: Some(header),
            })
        }
        (task, Some(plan)) => plan.execute(&ctx.job, task, pool),
        (task, None) => Err(Error::Internal(format!(
            "a {} task before its job was planned",
            task.name()
        ))),
    }
}

/// The error for a task that is not of its job's kind (a plan and a task that do not match).
pub(crate) fn foreign_task(kind: &str, task: &TaskPayload) -> Error {
    Error::Internal(format!("a {kind} job has no {} tasks", task.name()))
}

/// Serialises a header for the reduce.
pub(crate) fn to_header<T: Serialize>(header: &T) -> Result<serde_json::Value> {
    serde_json::to_value(header).map_err(|e| Error::Internal(format!("header: {e}")))
}

/// Reads back the headers [`to_header`] made.
pub(crate) fn from_headers<T: DeserializeOwned>(headers: Vec<serde_json::Value>) -> Result<Vec<T>> {
    headers
        .into_iter()
        .map(|h| {
            serde_json::from_value(h)
                .map_err(|e| Error::Internal(format!("bad source header: {e}")))
        })
        .collect()
}
