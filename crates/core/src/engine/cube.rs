//! The space-time kind: NetCDF / GRIB / Zarr sources concatenated along time into products —
//! headers → sort, check and plan blocks → map (1), climatology (2), anomaly (3), rechunk (4)
//! → consolidated metadata of every product.

use super::{
    ComputePool, JobKind, JobRecord, PlannedTask, StageOutputs, foreign_task, from_headers,
    to_header,
};
use crate::cube::{CubePlan, CubeSource};
use crate::error::{Error, Result};
use crate::job::{TaskOutput, TaskPayload};

fn cube_spec(job: &JobRecord) -> Result<&crate::cube::CubeSpec> {
    job.spec
        .cube
        .as_ref()
        .ok_or_else(|| Error::Internal("a cube plan for a job without a cube section".into()))
}

impl JobKind for CubePlan {
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value> {
        let spec = cube_spec(job)?;
        let skip = spec.on_bad_input == crate::cube::spec::OnBadInput::Skip;
        to_header(&CubeSource::open_skipping(url, &spec.variables, skip)?)
    }

    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self> {
        let sources: Vec<CubeSource> = from_headers(headers)?;
        let mut plan = CubePlan::planned(
            cube_spec(job)?,
            &job.output_url,
            job.spec.output.zstd_level,
            sources,
            job.spec.incremental(),
        )?;
        if let Some(tag) = &job.staging {
            plan.stage_products(tag);
        }
        Ok(plan)
    }

    fn last_stage(&self) -> u32 {
        CubePlan::LAST_STAGE
    }

    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        CubePlan::stage_tasks(self, stage)
            .into_iter()
            .map(|task| (TaskPayload::Cube { task }, 0))
            .collect()
    }

    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        if resumed {
            self.attach_products()
        } else {
            self.create_products(job.spec.output.overwrite)
        }
    }

    fn execute(
        &self,
        _job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput> {
        let TaskPayload::Cube { task } = task else {
            return Err(foreign_task("cube", task));
        };
        let done = pool.install(|| self.run(*task))?;
        Ok(TaskOutput {
            tiles: done.chunks,
            bytes: done.bytes,
            // The steps a map task read, for the job's figures ([`CubePlan::steps_read`]).
            result: done
                .read
                .map(|r| serde_json::json!({ "steps_read": [r.start, r.end] })),
        })
    }

    fn commit(&self, _job: &JobRecord, _outputs: &StageOutputs) -> Result<()> {
        self.finish_products()
    }

    fn discard(&self, _job: &JobRecord) -> Result<()> {
        self.abort_products()
    }
}
