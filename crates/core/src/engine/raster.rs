//! The raster kind: sources cut into a tiled layer through the operation chain, GeoTrellis's
//! way — headers → collect metadata and lay out the keys → tile tasks → consolidated metadata.

use serde::{Deserialize, Serialize};

use super::{
    ComputePool, JobKind, JobRecord, PlannedTask, StageOutputs, foreign_task, from_headers,
    to_header,
};
use crate::error::{Error, Result};
use crate::ingest::{
    IngestOptions, IngestPlan, NoProgress, PlannedSource, attach_layer, create_layer,
    plan_from_sources, plan_source, write_keys,
};
use crate::job::{TaskOutput, TaskPayload};
use crate::model::SpatialKey;

/// The plan of a raster job: the ingest plan, the options it was made with, and the output
/// per tile task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RasterPlan {
    pub options: IngestOptions,
    pub ingest: IngestPlan,
    pub target_mb: u32,
}

/// Groups the plan's keys (already in Z-order, so neighbours travel together) into tile tasks
/// of about `target_mb` of uncompressed output each, never splitting a key; each task comes
/// with the number of tiles (key × band) it writes.
pub fn tile_tasks(plan: &IngestPlan, target_mb: u32) -> Vec<PlannedTask> {
    let per_key = plan.bytes_per_key().max(1);
    let target = target_mb.max(1) as u64 * 1024 * 1024;
    let keys_per_task = (target / per_key).max(1) as usize;
    let bands = plan.band_names.len() as u64;
    plan.keys
        .chunks(keys_per_task)
        .map(|c| {
            (
                TaskPayload::WriteKeys { keys: c.to_vec() },
                c.len() as u64 * bands,
            )
        })
        .collect()
}

impl JobKind for RasterPlan {
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value> {
        to_header(&plan_source(url, &job.spec.ingest_options()?)?)
    }

    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self> {
        let options = job.spec.ingest_options()?;
        let sources: Vec<PlannedSource> = from_headers(headers)?;
        let ingest = plan_from_sources(sources, &options)?;
        Ok(RasterPlan {
            options,
            ingest,
            target_mb: job.spec.tasks.target_mb,
        })
    }

    fn last_stage(&self) -> u32 {
        1
    }

    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        match stage {
            1 => tile_tasks(&self.ingest, self.target_mb),
            _ => Vec::new(),
        }
    }

    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        let output = job.output();
        if resumed {
            attach_layer(&self.ingest, output.write_url(), &self.options)?.write_metadata()
        } else {
            create_layer(&self.ingest, output.write_url(), &self.options).map(drop)
        }
    }

    fn execute(
        &self,
        job: &JobRecord,
        task: &TaskPayload,
        pool: &ComputePool,
    ) -> Result<TaskOutput> {
        let TaskPayload::WriteKeys { keys } = task else {
            return Err(foreign_task("raster", task));
        };
        let writer = attach_layer(&self.ingest, job.output().write_url(), &self.options)?;
        let summary =
            pool.install(|| write_keys(&self.ingest, &self.options, &writer, keys, &NoProgress))?;
        // The tiles that were all NoData (and so not stored), for commit to tell them from
        // tiles the store lost.
        let result = (!summary.empty.is_empty()).then(|| {
            let empty: Vec<[u32; 3]> = summary
                .empty
                .iter()
                .map(|&(band, k)| [band as u32, k.col, k.row])
                .collect();
            serde_json::json!({ "empty": empty })
        });
        Ok(TaskOutput {
            tiles: summary.tiles,
            bytes: summary.bytes,
            result,
        })
    }

    /// Checks that every tile the tasks wrote is in the store (tiles they reported all NoData
    /// aside), then marks the layer complete, and promotes it over the old one if it replaces
    /// one.
    fn commit(&self, job: &JobRecord, outputs: &StageOutputs) -> Result<()> {
        let mut empty = std::collections::HashSet::new();
        for output in outputs.get(&1).into_iter().flat_map(|s| s.values()) {
            let Some(list) = output.result.as_ref().and_then(|r| r.get("empty")) else {
                continue;
            };
            let list: Vec<[u32; 3]> = serde_json::from_value(list.clone())
                .map_err(|e| Error::Internal(format!("a task's empty tiles: {e}")))?;
            empty.extend(
                list.into_iter()
                    .map(|[band, col, row]| (band as usize, SpatialKey::new(col, row))),
            );
        }
        let output = job.output();
        let writer = attach_layer(&self.ingest, output.write_url(), &self.options)?;
        writer.verify(&self.ingest.keys, &empty)?;
        writer.finish()?;
        output.commit()
    }

    fn discard(&self, job: &JobRecord) -> Result<()> {
        job.output().discard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, PlannedSource, plan_from_sources};
    use crate::model::{CellSize, CellType, Crs, DataType, GridExtent, LayoutScheme, SpatialKey};
    use crate::source::SourceInfo;

    fn plan(cols: u64, rows: u64, tile: u32) -> IngestPlan {
        let grid = GridExtent::from_origin(0.0, 0.0, CellSize::new(1.0, 1.0), cols, rows);
        let info = SourceInfo {
            url: "a.tif".into(),
            crs: Crs {
                wkt: "w".into(),
                epsg: Some(3857),
            },
            grid,
            cell_type: CellType::new(DataType::F32, None),
            band_count: 2,
            block_size: (256, 256),
            driver: "GTiff".into(),
        };
        let options = IngestOptions {
            scheme: LayoutScheme::floating(tile, tile).unwrap(),
            ..Default::default()
        };
        plan_from_sources(
            vec![PlannedSource {
                info,
                layer_grid: grid,
                reproject: false,
            }],
            &options,
        )
        .unwrap()
    }

    #[test]
    fn tasks_cover_every_key_once_in_order_within_the_target() {
        // Many sizes, including layouts that are not multiples of the tile size.
        for (cols, rows, tile, mb) in [
            (1000, 1000, 256, 1),
            (5000, 3001, 256, 32),
            (777, 555, 64, 1),
            (300, 300, 512, 1),
        ] {
            let p = plan(cols, rows, tile);
            let tasks = tile_tasks(&p, mb);
            let keys: Vec<SpatialKey> = tasks
                .iter()
                .flat_map(|(t, _)| match t {
                    TaskPayload::WriteKeys { keys } => keys.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(keys, p.keys, "every key once, in Z-order");
            let per_key = p.bytes_per_key();
            for (t, tiles) in &tasks {
                let TaskPayload::WriteKeys { keys } = t else {
                    unreachable!()
                };
                assert_eq!(*tiles, keys.len() as u64 * 2, "tiles = keys x bands");
                assert!(keys.len() == 1 || keys.len() as u64 * per_key <= mb as u64 * 1024 * 1024);
            }
        }
        // 1000² f32 × 2 bands in 256² tiles: 512 KiB a key, 2 keys per 1 MB task, 16 keys.
        assert_eq!(tile_tasks(&plan(1000, 1000, 256), 1).len(), 8);
    }
}
