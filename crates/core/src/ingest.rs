//! Ingest: sources → collected metadata → layout → for every key, cut every intersecting source
//! window, merge, write. Runs on all cores (one GDAL handle per thread) with a bounded number of
//! tiles in flight, and writes nothing until every source has been opened and checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::layer::{LayerInfo, LayerWriter, WriteOptions};
use crate::model::{
    Crs, Extent, GridExtent, KeyIndex, LayoutScheme, SpatialKey, TileLayerMetadata, ZOrderIndex,
    collect_metadata,
};
use crate::source::{GdalSource, Reprojection, SourceInfo};
use crate::store::Store;
use crate::tile::{MergeMethod, Merger, Resample, SourceWindow, cut_into};

/// Receives progress of long work: tiles done out of a total.
pub trait Progress: Sync {
    fn start(&self, total: u64);
    fn advance(&self, n: u64);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub scheme: LayoutScheme,
    /// Reproject every source to this CRS; without it, sources must share one CRS.
    pub target_crs: Option<Crs>,
    pub resample: Resample,
    pub merge: MergeMethod,
    /// 1-based band numbers to ingest; all bands of the first source when `None`.
    pub bands: Option<Vec<usize>>,
    pub write: WriteOptions,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            scheme: LayoutScheme::Floating {
                tile_cols: 256,
                tile_rows: 256,
            },
            target_crs: None,
            resample: Resample::Nearest,
            merge: MergeMethod::First,
            bands: None,
            write: WriteOptions::default(),
            threads: None,
        }
    }
}

/// One source as the plan sees it: its header and its grid in the layer's CRS.
#[derive(Debug, Clone)]
pub struct PlannedSource {
    pub info: SourceInfo,
    /// The source's grid in the layer's CRS (its own grid when no reprojection is needed).
    pub layer_grid: GridExtent,
    pub reproject: bool,
}

/// What an ingest will do, decided before anything is written.
#[derive(Debug, Clone)]
pub struct IngestPlan {
    pub metadata: TileLayerMetadata,
    pub sources: Vec<PlannedSource>,
    /// 1-based band numbers.
    pub bands: Vec<usize>,
    /// Keys with at least one intersecting source, in Z-order so that neighbours go together.
    pub keys: Vec<SpatialKey>,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub layer: LayerInfo,
    /// Tiles (key × band) computed, and of those how many were all NoData and not stored.
    pub tiles: u64,
    pub empty_tiles: u64,
    pub elapsed: Duration,
}

/// Opens and checks every source and lays out the layer; writes nothing.
pub fn plan_ingest(urls: &[String], options: &IngestOptions) -> Result<IngestPlan> {
    if urls.is_empty() {
        return Err(Error::invalid("no sources given"));
    }
    let mut sources = Vec::with_capacity(urls.len());
    for url in urls {
        let src = GdalSource::open(url)?;
        let info = src.info().clone();
        let (layer_grid, reproject) = match &options.target_crs {
            Some(target) if !info.crs.same_as(target) => {
                if info.crs.wkt.is_empty() {
                    return Err(Error::Crs(format!(
                        "{url} has no CRS, so it cannot be reprojected to {target}"
                    )));
                }
                (src.grid_in(target)?, true)
            }
            _ => (info.grid, false),
        };
        sources.push((
            src,
            PlannedSource {
                info,
                layer_grid,
                reproject,
            },
        ));
    }
    let bands = match &options.bands {
        Some(b) if b.is_empty() => return Err(Error::invalid("the band list is empty")),
        Some(b) => b.clone(),
        None => (1..=sources[0].1.info.band_count).collect(),
    };
    for (src, _) in &sources {
        for &b in &bands {
            src.check_band(b)?;
        }
    }
    let summaries: Vec<_> = sources
        .iter()
        .map(|(_, p)| {
            let mut s = p.info.summary();
            s.grid = p.layer_grid;
            if let Some(t) = &options.target_crs {
                s.crs = t.clone();
            }
            s
        })
        .collect();
    let metadata = collect_metadata(&summaries, &options.scheme)?;
    let mt = metadata.layout.map_transform();
    let bounds = metadata.bounds.to_grid_bounds();
    let mut keys: Vec<SpatialKey> = bounds
        .iter_keys()
        .filter(|k| {
            let e = mt.key_to_extent(*k);
            summaries.iter().any(|s| s.grid.extent.intersects(&e))
        })
        .collect();
    let index = ZOrderIndex::new(&metadata.bounds);
    keys.sort_by_key(|k| index.to_index(*k));
    Ok(IngestPlan {
        metadata,
        sources: sources.into_iter().map(|(_, p)| p).collect(),
        bands,
        keys,
    })
}

/// The cell window [c0, c1) × [r0, r1) of `grid` that covers `extent` plus `margin` cells,
/// clipped to the grid; `None` when empty.
fn window_for(grid: &GridExtent, extent: &Extent, margin: f64) -> Option<(u64, u64, u64, u64)> {
    let (x0, y0) = grid.map_to_grid_f64(extent.xmin, extent.ymax);
    let (x1, y1) = grid.map_to_grid_f64(extent.xmax, extent.ymin);
    let snap = |v: f64| {
        let r = v.round();
        if (v - r).abs() < 1e-6 { r } else { v }
    };
    let c0 = (snap(x0).floor() - margin).max(0.0);
    let r0 = (snap(y0).floor() - margin).max(0.0);
    let c1 = (snap(x1).ceil() + margin).min(grid.cols as f64);
    let r1 = (snap(y1).ceil() + margin).min(grid.rows as f64);
    (c0 < c1 && r0 < r1).then_some((c0 as u64, r0 as u64, c1 as u64, r1 as u64))
}

/// The bounding box in `reprojection`'s target CRS of `extent`'s densified boundary.
fn reprojected_bbox(extent: &Extent, reprojection: &Reprojection) -> Option<Extent> {
    const N: usize = 21;
    let mut xs = Vec::with_capacity(4 * N + N * N);
    let mut ys = Vec::with_capacity(xs.capacity());
    for i in 0..N {
        let t = i as f64 / (N - 1) as f64;
        for j in 0..N {
            let u = j as f64 / (N - 1) as f64;
            xs.push(extent.xmin + t * extent.width());
            ys.push(extent.ymin + u * extent.height());
        }
    }
    reprojection.transform(&mut xs, &mut ys);
    let mut e = Extent::new(
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for (&x, &y) in xs.iter().zip(&ys) {
        if x.is_finite() && y.is_finite() {
            e = Extent::new(e.xmin.min(x), e.ymin.min(y), e.xmax.max(x), e.ymax.max(y));
        }
    }
    (e.xmin <= e.xmax && e.ymin <= e.ymax).then_some(e)
}

/// One thread's open sources and transforms.
struct Worker {
    sources: Vec<GdalSource>,
    reprojections: Vec<Option<Reprojection>>,
}

impl Worker {
    fn open(plan: &IngestPlan) -> Result<Worker> {
        let mut sources = Vec::with_capacity(plan.sources.len());
        let mut reprojections = Vec::with_capacity(plan.sources.len());
        for p in &plan.sources {
            sources.push(GdalSource::open(&p.info.url)?);
            reprojections.push(if p.reproject {
                Some(Reprojection::new(&plan.metadata.crs, &p.info.crs)?)
            } else {
                None
            });
        }
        Ok(Worker {
            sources,
            reprojections,
        })
    }

    /// Cuts and merges every source for `band` of `key`.
    fn tile(
        &self,
        plan: &IngestPlan,
        options: &IngestOptions,
        key: SpatialKey,
        band: usize,
    ) -> Result<crate::tile::Tile> {
        let md = &plan.metadata;
        let target = md.layout.tile_grid(key);
        let tl = md.layout.tile_layout;
        let mut merger = Merger::new(options.merge, tl.tile_rows as usize, tl.tile_cols as usize);
        for ((planned, src), reprojection) in plan
            .sources
            .iter()
            .zip(&self.sources)
            .zip(&self.reprojections)
        {
            if !planned.layer_grid.extent.intersects(&target.extent) {
                continue;
            }
            let grid = &planned.info.grid;
            let window = match reprojection {
                None => {
                    let margin = if grid.is_aligned_with(&target) {
                        0.0
                    } else {
                        options.resample.margin() as f64
                    };
                    window_for(grid, &target.extent, margin)
                }
                Some(r) => {
                    let Some(bbox) = reprojected_bbox(&target.extent, r) else {
                        continue;
                    };
                    window_for(grid, &bbox, options.resample.margin() as f64 + 1.0)
                }
            };
            let Some((c0, r0, c1, r1)) = window else {
                continue;
            };
            let values = src.read_window(band, c0, r0, (c1 - c0) as usize, (r1 - r0) as usize)?;
            let window_grid = GridExtent::from_origin(
                grid.extent.xmin + c0 as f64 * grid.cell_size.width,
                grid.extent.ymax - r0 as f64 * grid.cell_size.height,
                grid.cell_size,
                c1 - c0,
                r1 - r0,
            );
            let sw = SourceWindow {
                values: values.view(),
                grid: window_grid,
                cell_type: planned.info.cell_type,
            };
            match reprojection {
                None => cut_into(&sw, &target, options.resample, None, &mut merger),
                Some(r) => cut_into(
                    &sw,
                    &target,
                    options.resample,
                    Some(&|xs: &mut [f64], ys: &mut [f64]| r.transform(xs, ys)),
                    &mut merger,
                ),
            }
        }
        Ok(merger.finish(md.cell_type))
    }
}

/// Writes the layer a plan describes. On any error the partial layer is deleted.
pub fn run_ingest(
    plan: &IngestPlan,
    out_url: &str,
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let store = Store::open(out_url)?;
    let band_names = plan.bands.iter().map(|b| format!("band_{b}")).collect();
    let sources = plan.sources.iter().map(|s| s.info.url.clone()).collect();
    let writer = LayerWriter::create(
        store,
        plan.metadata.clone(),
        band_names,
        sources,
        options.write,
    )?;
    let total = plan.keys.len() as u64 * plan.bands.len() as u64;
    progress.start(total);
    let empty = AtomicU64::new(0);
    let work = || -> Result<()> {
        plan.keys.par_iter().with_min_len(4).try_for_each_init(
            || Worker::open(plan),
            |worker, &key| {
                let worker = match worker {
                    Ok(w) => &*w,
                    // The first key of a thread that could not open its sources reports why;
                    // try_for_each stops there.
                    Err(e) => {
                        return Err(std::mem::replace(
                            e,
                            Error::Internal("sources not open".into()),
                        ));
                    }
                };
                for (i, &band) in plan.bands.iter().enumerate() {
                    let tile = worker.tile(plan, options, key, band)?;
                    if tile.is_all_nodata() {
                        empty.fetch_add(1, Ordering::Relaxed);
                    }
                    writer.write_tile(i, key, &tile)?;
                    progress.advance(1);
                }
                Ok(())
            },
        )
    };
    let result = match options.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start {n} threads: {e}")))?
            .install(work),
        None => work(),
    };
    if let Err(e) = result {
        // Best effort: the error that stopped the ingest matters more than a failed clean-up.
        let _ = writer.abort();
        return Err(e);
    }
    let layer = writer.finish()?;
    Ok(IngestSummary {
        layer,
        tiles: total,
        empty_tiles: empty.into_inner(),
        elapsed: started.elapsed(),
    })
}

/// Plans and runs an ingest.
pub fn ingest(
    urls: &[String],
    out_url: &str,
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestSummary> {
    let plan = plan_ingest(urls, options)?;
    run_ingest(&plan, out_url, options, progress)
}
