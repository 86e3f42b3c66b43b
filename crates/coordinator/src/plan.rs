//! Planning, as pure functions from (job, metadata) to tasks.

use tessera_core::ingest::IngestPlan;

use crate::scheduler::TaskPayload;

/// Groups the plan's keys (already in Z-order, so neighbours travel together) into tile tasks
/// of about `target_mb` of uncompressed output each, never splitting a key; each task comes
/// with the number of tiles (key × band) it writes.
pub fn tile_tasks(plan: &IngestPlan, target_mb: u32) -> Vec<(TaskPayload, u64)> {
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

/// One metadata task per source.
pub fn source_tasks(sources: &[String]) -> Vec<(TaskPayload, u64)> {
    sources
        .iter()
        .map(|url| (TaskPayload::ReadSource { url: url.clone() }, 0))
        .collect()
}

/// The header tasks of a space-time job: one per source.
pub fn cube_source_tasks(sources: &[String], variables: &[String]) -> Vec<(TaskPayload, u64)> {
    sources
        .iter()
        .map(|url| {
            let payload = TaskPayload::ReadCubeSource {
                url: url.clone(),
                variables: variables.to_vec(),
            };
            (payload, 0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::ingest::{IngestOptions, PlannedSource, plan_from_sources};
    use tessera_core::model::{
        CellSize, CellType, Crs, DataType, GridExtent, LayoutScheme, SpatialKey,
    };
    use tessera_core::source::SourceInfo;

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
