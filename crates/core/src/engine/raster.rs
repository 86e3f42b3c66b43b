//! The raster kind: sources cut into a tiled layer through the operation chain, GeoTrellis's
//! way — headers → collect metadata and lay out the keys → tile tasks → consolidated metadata.
//!
//! An incremental run (`mode: incremental`) over a layer that exists compares the sources (the
//! globs expanded again) with the ones the layer records, and writes only the tiles that the
//! new ones touch (with the operations' halo around them), each from every source over it; the
//! layer's extent grows east and south as the new sources need, its metadata written last.

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
use crate::layer::{LayerInfo, LayerReader};
use crate::model::{Extent, SpatialKey};
use crate::store::{Store, block_on};

/// The plan of a raster job: the ingest plan, the options it was made with, and the output
/// per tile task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RasterPlan {
    pub options: IngestOptions,
    pub ingest: IngestPlan,
    pub target_mb: u32,
    /// An incremental run over a layer that exists: `ingest.keys` are then only the tiles the
    /// new sources touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
}

/// What an incremental run adds to a layer that exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The sources the layer did not have.
    pub new_sources: Vec<String>,
    /// The layer's tiles (keys) after the run, and its size in cells before.
    pub keys_after: usize,
    pub size_before: (u64, u64),
}

impl RasterPlan {
    /// Compares the plan over every source with the layer at `url`: `None` when there is no
    /// layer yet (this run writes it whole); else the update, with `ingest.keys` cut to the
    /// tiles the new sources touch. Refuses, naming the new files, sources that would move the
    /// layer's origin or change its grid, and a layer source no source matches any more.
    fn fit(&mut self, url: &str) -> Result<Option<Update>> {
        if block_on(Store::open(url)?.list(""))?.is_empty() {
            return Ok(None);
        }
        let old: LayerInfo = LayerReader::open(url)
            .map_err(|e| {
                Error::invalid(format!(
                    "{url}: cannot bring this layer up to date, it does not read as a layer: {e}"
                ))
            })?
            .info()
            .clone();
        let plan = &self.ingest;
        let urls: Vec<&str> = plan.sources.iter().map(|s| s.info.url.as_str()).collect();
        if let Some(gone) = old.sources.iter().find(|s| !urls.contains(&s.as_str())) {
            return Err(Error::invalid(format!(
                "the layer was made from {gone}, which no source matches any more: incremental runs add sources; rebuild with mode: full"
            )));
        }
        let new: Vec<usize> = (0..plan.sources.len())
            .filter(|&i| !old.sources.contains(&plan.sources[i].info.url))
            .collect();
        let names = new
            .iter()
            .map(|&i| plan.sources[i].info.url.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (was, is) = (&old.metadata, &plan.metadata);
        let differs = |what: &str, theirs: String, ours: String| {
            Error::invalid(format!(
                "{names}: with the new sources the layer's {what} would be {ours}, the layer at {url} has {theirs}; nothing was written (rebuild with mode: full)"
            ))
        };
        if old.bands != plan.band_names {
            return Err(differs(
                "bands",
                old.bands.join(", "),
                plan.band_names.join(", "),
            ));
        }
        if was.cell_type != is.cell_type {
            return Err(differs(
                "cell type",
                format!("{:?}", was.cell_type),
                format!("{:?}", is.cell_type),
            ));
        }
        if !was.crs.same_as(&is.crs) {
            return Err(differs("CRS", was.crs.to_string(), is.crs.to_string()));
        }
        let tiling = |m: &crate::model::TileLayerMetadata| {
            let (tl, cs) = (m.layout.tile_layout, m.layout.cell_size());
            format!(
                "tiles of {} x {} cells of {} x {}",
                tl.tile_cols, tl.tile_rows, cs.width, cs.height
            )
        };
        if tiling(was) != tiling(is) {
            return Err(differs("tiling", tiling(was), tiling(is)));
        }
        let (a, b) = (was.array_grid(), is.array_grid());
        if a.extent.xmin != b.extent.xmin || a.extent.ymax != b.extent.ymax {
            return Err(Error::invalid(format!(
                "{names}: the new sources reach west or north of the layer's origin ({}, {}) at {url}: incremental runs grow a layer east and south; nothing was written (rebuild with mode: full)",
                a.extent.xmin, a.extent.ymax
            )));
        }
        // The tiles the new sources touch, with the operations' halo around each.
        let halo = plan.chain(&self.options)?.halo() as f64;
        let cs = is.layout.cell_size();
        let touched: Vec<Extent> = new
            .iter()
            .map(|&i| {
                let e = plan.sources[i].layer_grid.extent;
                Extent::new(
                    e.xmin - halo * cs.width,
                    e.ymin - halo * cs.height,
                    e.xmax + halo * cs.width,
                    e.ymax + halo * cs.height,
                )
            })
            .collect();
        let mt = is.layout.map_transform();
        let keys_after = plan.keys.len();
        self.ingest
            .keys
            .retain(|k| touched.iter().any(|e| e.intersects(&mt.key_to_extent(*k))));
        let grid = was.array_grid();
        Ok(Some(Update {
            new_sources: new
                .iter()
                .map(|&i| self.ingest.sources[i].info.url.clone())
                .collect(),
            keys_after,
            size_before: (grid.cols, grid.rows),
        }))
    }

    /// What this run does, for the job's status (an incremental run's figures).
    pub fn summary(&self) -> Option<String> {
        let u = self.update.as_ref()?;
        if u.new_sources.is_empty() {
            return Some("incremental: nothing new, the layer has every source".into());
        }
        let grid = self.ingest.metadata.array_grid();
        let mut s = format!(
            "incremental: {} new sources ({}); {} tiles written, of {} in the layer",
            u.new_sources.len(),
            u.new_sources.join(", "),
            self.ingest.keys.len(),
            u.keys_after
        );
        if (grid.cols, grid.rows) != u.size_before {
            s += &format!(
                "; the layer grew from {} x {} to {} x {} cells",
                u.size_before.0, u.size_before.1, grid.cols, grid.rows
            );
        }
        Some(s)
    }
}

/// Groups the plan's keys (already in Z-order, so neighbours travel together) into tile tasks
/// of about `target_mb` of uncompressed output each, never splitting a key; each task comes
/// with the number of tiles (key × band) it writes.
///
/// A chain with a `halo` reads a ring of source cells around each task's keys that the tasks
/// beside it read (and decode) too. When [`halo_square`] asks for more keys than the target
/// gives, the tasks are those squares of keys instead (in the Z-order of their first keys), so
/// that the ring stays a small share of what a task reads.
pub fn tile_tasks(plan: &IngestPlan, target_mb: u32, halo: usize) -> Vec<PlannedTask> {
    let per_key = plan.bytes_per_key().max(1);
    let target = target_mb.max(1) as u64 * 1024 * 1024;
    let keys_per_task = (target / per_key).max(1) as usize;
    let bands = plan.band_names.len() as u64;
    let task = |keys: Vec<SpatialKey>| {
        let tiles = keys.len() as u64 * bands;
        (TaskPayload::WriteKeys { keys }, tiles)
    };
    let side = halo_square(plan, halo);
    if (side as usize).pow(2) <= keys_per_task {
        return plan
            .keys
            .chunks(keys_per_task)
            .map(|c| task(c.to_vec()))
            .collect();
    }
    let mut squares: Vec<Vec<SpatialKey>> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for &k in &plan.keys {
        let i = *index
            .entry((k.col / side, k.row / side))
            .or_insert_with(|| {
                squares.push(Vec::new());
                squares.len() - 1
            });
        squares[i].push(k);
    }
    squares.into_iter().map(task).collect()
}

/// The side, in keys, of a square task whose ring of `halo` cells — rounded out to the source's
/// blocks, which are decoded whole — adds at most a twelfth to the cells it decodes; but no
/// more than leaves 16 tasks to share among workers. 1 without a halo. An SVF of a city DSM (a
/// halo of 34 cells, 256 × 256 blocks and tiles) decoded each block 1.4 times in tasks of 128
/// keys in Z-order; in squares of 25 × 25 keys, 1.16 times; in squares of 49 × 49, 1.08 times.
/// A task's memory does not grow with its side: its threads take its keys in strips
/// ([`crate::ingest::write_keys`]).
pub fn halo_square(plan: &IngestPlan, halo: usize) -> u32 {
    if halo == 0 {
        return 1;
    }
    let tl = plan.metadata.layout.tile_layout;
    // Blocks are decoded whole: the ring is the halo rounded out to them (to rows of a striped
    // source's strips).
    let block = plan
        .sources
        .first()
        .map_or(1, |s| s.info.block_size.0.min(s.info.block_size.1).max(1));
    let ring = halo.div_ceil(block) * block;
    // (side + 2 ring)² ≤ 13/12 side² when side ≥ 2 ring / (√(13/12) − 1), about 49 rings.
    let side_cells = 2.0 * ring as f64 / ((13.0f64 / 12.0).sqrt() - 1.0);
    let tile = f64::from(tl.tile_cols.min(tl.tile_rows).max(1));
    let side = (side_cells / tile).ceil();
    let most = (plan.keys.len() as f64 / 16.0).sqrt().floor();
    side.min(most).max(1.0) as u32
}

impl JobKind for RasterPlan {
    fn header(job: &JobRecord, url: &str) -> Result<serde_json::Value> {
        to_header(&plan_source(url, &job.spec.ingest_options()?)?)
    }

    fn reduce(job: &JobRecord, headers: Vec<serde_json::Value>) -> Result<Self> {
        let options = job.spec.ingest_options()?;
        let sources: Vec<PlannedSource> = from_headers(headers)?;
        let ingest = plan_from_sources(sources, &options)?;
        let mut plan = RasterPlan {
            options,
            ingest,
            target_mb: job.spec.tasks.target_mb,
            update: None,
        };
        if job.spec.incremental() {
            plan.update = plan.fit(&job.output_url)?;
        }
        Ok(plan)
    }

    fn last_stage(&self) -> u32 {
        1
    }

    fn stage_tasks(&self, stage: u32) -> Vec<PlannedTask> {
        match stage {
            1 => {
                // The chain was checked when the plan was made.
                let halo = self.ingest.chain(&self.options).map_or(0, |c| c.halo());
                tile_tasks(&self.ingest, self.target_mb, halo)
            }
            _ => Vec::new(),
        }
    }

    fn prepare(&self, job: &JobRecord, resumed: bool) -> Result<()> {
        if self.update.is_some() {
            // The layer exists: its metadata is written when the new tiles are.
            return Ok(());
        }
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
        if let Some(u) = &self.update {
            if !u.new_sources.is_empty() {
                writer.finish_update()?;
            }
            return Ok(());
        }
        writer.finish()?;
        output.commit()
    }

    /// Removes what the job wrote; an incremental run leaves the layer it updates (its
    /// metadata still the old one; the tiles it rewrote hold the new sources too).
    fn discard(&self, job: &JobRecord) -> Result<()> {
        if self.update.is_some() {
            return Ok(());
        }
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
            let tasks = tile_tasks(&p, mb, 0);
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
        assert_eq!(tile_tasks(&plan(1000, 1000, 256), 1, 0).len(), 8);
    }

    #[test]
    fn a_focal_chain_takes_squares_of_keys_wide_enough_that_its_halo_is_a_small_ring() {
        // A city-sized plan (256² blocks and tiles): a halo of 34 cells rounds out to a block,
        // so a task is 49 × 49 keys, where the ring it decodes again is (51² − 49²) / 49² = 8 %.
        let city = plan(46_667, 60_834, 256);
        assert_eq!(halo_square(&city, 34), 49);
        assert_eq!(halo_square(&city, 0), 1);
        // A halo past a block is a ring two blocks deep: squares of 98 keys, but 52 leave the
        // 16 tasks (183 × 238 keys).
        assert_eq!(halo_square(&city, 257), 52);
        for (p, halo, side) in [
            (city, 34, 49),
            // 20 × 12 keys: squares of 3, to leave 16 tasks.
            (plan(5000, 3001, 256), 34, 3),
        ] {
            assert_eq!(halo_square(&p, halo), side);
            let tasks = tile_tasks(&p, 1, halo);
            let mut keys: Vec<SpatialKey> = Vec::new();
            for (t, tiles) in &tasks {
                let TaskPayload::WriteKeys { keys: k } = t else {
                    panic!("{t:?}")
                };
                assert_eq!(*tiles, k.len() as u64 * 2, "tiles = keys x bands");
                // One square each, whole unless at the raster's edge.
                let (c, r) = (k[0].col / side, k[0].row / side);
                assert!(
                    k.iter().all(|k| (k.col / side, k.row / side) == (c, r)),
                    "{k:?}"
                );
                let across = (p.keys.iter().map(|k| k.col).max().unwrap() + 1 - c * side).min(side);
                let down = (p.keys.iter().map(|k| k.row).max().unwrap() + 1 - r * side).min(side);
                assert_eq!(k.len() as u32, across * down);
                keys.extend(k);
            }
            assert!(tasks.len() >= 16, "{} tasks", tasks.len());
            let mut all = p.keys.clone();
            all.sort_by_key(|k| (k.row, k.col));
            keys.sort_by_key(|k| (k.row, k.col));
            assert_eq!(keys, all, "every key once");
        }
        // Where the target asks for more keys than the square, tasks are chunks as without a
        // halo: 64² f32 tiles of 2 bands are 32 KiB a key, 32 keys a 1 MB task.
        let small = plan(777, 555, 64);
        assert_eq!(halo_square(&small, 3), 2);
        assert_eq!(tile_tasks(&small, 1, 3), tile_tasks(&small, 1, 0));
    }
}
