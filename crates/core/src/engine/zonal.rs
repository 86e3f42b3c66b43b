//! The zonal kind: one raster or cube → header (grid, variables, steps) → tasks of (variable,
//! steps, rows) that store partial aggregates per zone → the table, merged at commit.

use super::{
    ComputePool, JobKind, JobRecord, PlannedTask, StageOutputs, foreign_task, from_headers,
    to_header,
};
use crate::error::{Error, Result};
use crate::job::{TaskOutput, TaskPayload};
use crate::zonal::{ZonalHeader, ZonalInput, ZonalPlan, ZonalSpec};

fn zonal_spec(job: &JobRecord) -> Result<&ZonalSpec> {
    job.spec
        .zonal
        .as_ref()
        .ok_or_else(|| Error::Internal("a zonal plan for a job without a zonal section".into()))
}

/// Tasks enough to keep this many workers busy when the input has steps to share.
const PARALLEL_TASKS: usize = 8;

impl JobKind for ZonalPlan {
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value> {
        let o = zonal_spec(job)?.options()?;
        let input = ZonalInput::open(url, &o.variables, o.time, &o.bands)?;
        let header = ZonalHeader::of(&input);
        if let Some(w) = &o.weights {
            w.check(&header.grid, &header.crs)?;
        }
        to_header(&header)
    }

    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self> {
        let mut headers: Vec<ZonalHeader> = from_headers(headers)?;
        let (Some(header), Some(input)) = (headers.pop(), job.sources.first()) else {
            return Err(Error::invalid("a zonal job reads one source"));
        };
        let tag = job.staging.as_deref().unwrap_or("scratch");
        ZonalPlan::new(
            input,
            zonal_spec(job)?,
            header,
            &job.output_url,
            tag,
            PARALLEL_TASKS,
        )
    }

    fn last_stage(&self) -> u32 {
        1
    }

    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        if stage != 1 {
            return Vec::new();
        }
        (0..self.tasks.len() as u32)
            .map(|index| (TaskPayload::Zonal { index }, 0))
            .collect()
    }

    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        let out = std::path::Path::new(&self.out);
        if !resumed && !job.spec.output.overwrite && out.exists() {
            return Err(Error::invalid(format!(
                "output.url: {} exists (set output.overwrite: true to replace it)",
                self.out
            )));
        }
        match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(Error::invalid(
                format!("output.url: the directory {} does not exist", dir.display()),
            )),
            _ => Ok(()),
        }
    }

    fn execute(
        &self,
        _job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput> {
        let TaskPayload::Zonal { index } = task else {
            return Err(foreign_task("zonal", task));
        };
        let bytes = pool.install(|| ZonalPlan::execute(self, *index as usize))?;
        Ok(TaskOutput {
            tiles: 1,
            bytes,
            result: None,
        })
    }

    fn commit(&self, _job: &JobRecord, _outputs: &StageOutputs) -> Result<()> {
        ZonalPlan::commit(self)
    }

    fn discard(&self, _job: &JobRecord) -> Result<()> {
        ZonalPlan::discard(self)
    }
}
