//! The interpolation kind: a station file → header (stations, time steps, target grid) →
//! tasks of a chunk of time steps each, gridded and written into the cube → its consolidated
//! metadata at commit.

use super::{
    ComputePool, JobKind, JobRecord, PlannedTask, StageOutputs, foreign_task, from_headers,
    to_header,
};
use crate::error::{Error, Result};
use crate::interpolate::{InterpolateHeader, InterpolatePlan, InterpolateSpec};
use crate::job::{TaskOutput, TaskPayload};

fn interpolate_spec(job: &JobRecord) -> Result<&InterpolateSpec> {
    job.spec.interpolate.as_ref().ok_or_else(|| {
        Error::Internal("an interpolation plan for a job without an interpolate section".into())
    })
}

impl JobKind for InterpolatePlan {
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value> {
        let (header, _) = InterpolateHeader::read(url, interpolate_spec(job)?)?;
        to_header(&header)
    }

    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self> {
        let mut headers: Vec<InterpolateHeader> = from_headers(headers)?;
        let (Some(header), Some(stations)) = (headers.pop(), job.sources.first()) else {
            return Err(Error::invalid(
                "an interpolation job reads one station file",
            ));
        };
        InterpolatePlan::new(
            stations,
            interpolate_spec(job)?,
            header,
            job.output(),
            job.spec.output.zstd_level,
        )
    }

    fn last_stage(&self) -> u32 {
        1
    }

    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        if stage != 1 {
            return Vec::new();
        }
        // Progress counts time steps.
        self.tasks
            .iter()
            .enumerate()
            .map(|(index, steps)| {
                let index = index as u32;
                (TaskPayload::Interpolate { index }, steps.len() as u64)
            })
            .collect()
    }

    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        if resumed {
            self.attach()
        } else {
            self.create(job.spec.output.overwrite)
        }
    }

    fn execute(
        &self,
        _job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput> {
        let TaskPayload::Interpolate { index } = task else {
            return Err(foreign_task("interpolation", task));
        };
        let bytes = pool.install(|| InterpolatePlan::execute(self, *index as usize))?;
        Ok(TaskOutput {
            tiles: self
                .tasks
                .get(*index as usize)
                .map_or(0, |s| s.len() as u64),
            bytes,
            result: None,
        })
    }

    fn commit(&self, _job: &JobRecord, _outputs: &StageOutputs) -> Result<()> {
        InterpolatePlan::commit(self)
    }

    fn discard(&self, _job: &JobRecord) -> Result<()> {
        InterpolatePlan::discard(self)
    }
}
