//! Ingest: sources → collected metadata → layout → for every key, cut every intersecting source
//! window, merge, apply the chain of operations (local, and focal with a halo), write.
//!
//! The work comes in the stages a coordinator schedules, each a plain function:
//! 1. [`plan_source`] — a metadata task: open one source, check its bands, find its grid in the
//!    layer's CRS;
//! 2. [`plan_from_sources`] — the reduce: collect metadata, lay out, list the keys;
//! 3. [`create_layer`], then [`write_keys`] for groups of keys (tile tasks, on all cores, one
//!    GDAL handle per thread; a key's tiles are made in `worker`), then `LayerWriter::finish`.
//!    `write_keys` hands tiles to a [`TileSink`]: the layer, or — `tessera dem`'s fast path —
//!    the blocks of one GeoTIFF.
//!
//! [`ingest`] runs them all in one process. Nothing is written until every source has been
//! opened and checked; a failed in-process ingest deletes what it wrote.

mod limits;
mod readahead;
mod worker;

pub use limits::{DEFAULT_MAX_CELLS, MAX_KEY_GRID, MAX_SOURCE_BLOCK_CELLS, MAX_TILE_CELLS};
use worker::Worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::focal::DEFAULT_MAX_HALO;
use crate::layer::{LayerInfo, LayerWriter, WriteOptions};
use crate::model::{
    CellType, Crs, DataType, GridExtent, KeyIndex, LayoutScheme, SpatialKey, TileLayerMetadata,
    ZOrderIndex, collect_metadata,
};
use crate::operation::{Operation, PreparedChain};
use crate::source::{BlockCache, GdalSource, SourceInfo};
use crate::staging::Output;
use crate::store::Store;
use crate::tile::{MergeMethod, Resample, Tile};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestOptions {
    pub scheme: LayoutScheme,
    /// Reproject every source to this CRS; without it, sources must share one CRS.
    pub target_crs: Option<Crs>,
    pub resample: Resample,
    pub merge: MergeMethod,
    /// Keep each source's bands apart (b1, b2, ... in source order) instead of merging sources.
    #[serde(default)]
    pub stack: bool,
    /// 1-based band numbers to ingest; all bands of the first source when `None`.
    pub bands: Option<Vec<usize>>,
    /// Operations applied to each key's stack of bands, local and focal.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// The largest halo (cells) the focal operations may need in all.
    #[serde(default = "default_max_halo")]
    pub max_halo: usize,
    /// The output cell type; by default the sources' (with operations, the last one's: f32, or
    /// u8 for hillshade).
    #[serde(default)]
    pub output_type: Option<DataType>,
    pub write: WriteOptions,
    /// Worker threads; all cores when `None`.
    #[serde(default)]
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
            stack: false,
            bands: None,
            operations: Vec::new(),
            max_halo: DEFAULT_MAX_HALO,
            output_type: None,
            write: WriteOptions::default(),
            threads: None,
        }
    }
}

/// Threads that encode and store tiles: a local disk is kept busy by a few, an object store's
/// PUTs wait on the network and want more in flight.
const FILE_WRITERS: usize = 2;
const OBJECT_STORE_WRITERS: usize = 16;
/// Tiles queued per writer thread.
pub const TILES_IN_FLIGHT: usize = 2;

/// Decoded source blocks a tile task keeps (f64 cells): 192 × 256 × 256 blocks.
const BLOCK_CACHE_BYTES: usize = 96 << 20;

fn default_max_halo() -> usize {
    DEFAULT_MAX_HALO
}

/// The bands read for every key, before the operations: each source's when stacking.
fn stack_len(options: &IngestOptions, sources: usize, bands: usize) -> usize {
    if options.stack {
        sources * bands
    } else {
        bands
    }
}

/// One source as the plan sees it: its header and its grid in the layer's CRS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedSource {
    pub info: SourceInfo,
    /// The source's grid in the layer's CRS (its own grid when no reprojection is needed).
    pub layer_grid: GridExtent,
    pub reproject: bool,
}

/// What an ingest will do, decided before anything is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestPlan {
    pub metadata: TileLayerMetadata,
    pub sources: Vec<PlannedSource>,
    /// 1-based band numbers read from each source.
    pub bands: Vec<usize>,
    /// The layer's arrays, one per output band.
    pub band_names: Vec<String>,
    /// Keys with at least one intersecting source, in Z-order so that neighbours go together.
    pub keys: Vec<SpatialKey>,
}

impl IngestPlan {
    /// The operations checked against the layer's grid.
    pub fn chain(&self, options: &IngestOptions) -> Result<PreparedChain> {
        PreparedChain::new(
            &options.operations,
            stack_len(options, self.sources.len(), self.bands.len()),
            &crate::focal::grid_of(&self.metadata),
            options.max_halo,
        )
    }

    /// Bytes of one output tile, all bands.
    pub fn bytes_per_key(&self) -> u64 {
        let tl = self.metadata.layout.tile_layout;
        tl.tile_cols as u64
            * tl.tile_rows as u64
            * self.metadata.cell_type.data_type.bytes() as u64
            * self.band_names.len() as u64
    }
}

/// What writing a group of keys did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysSummary {
    /// Tiles (key × band) computed, and of those how many were all NoData and not stored.
    pub tiles: u64,
    pub empty_tiles: u64,
    /// Which: (band index, key). Commit tells them from tiles the store lost.
    pub empty: Vec<(usize, SpatialKey)>,
    /// Uncompressed bytes of the tiles stored.
    pub bytes: u64,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub layer: LayerInfo,
    pub tiles: u64,
    pub empty_tiles: u64,
    pub elapsed: Duration,
}

/// Stage 1, one source: opens it, checks the bands, and finds its grid in the layer's CRS.
pub fn plan_source(url: &str, options: &IngestOptions) -> Result<PlannedSource> {
    let src = GdalSource::open(url)?;
    let info = src.info().clone();
    if let Some(bands) = &options.bands {
        if bands.is_empty() {
            return Err(Error::invalid("the band list is empty"));
        }
        for &b in bands {
            src.check_band(b)?;
        }
    }
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
    Ok(PlannedSource {
        info,
        layer_grid,
        reproject,
    })
}

/// Stage 2, the reduce: collects metadata over the planned sources, lays out the layer and lists
/// its keys. Pure: no I/O.
pub fn plan_from_sources(
    sources: Vec<PlannedSource>,
    options: &IngestOptions,
) -> Result<IngestPlan> {
    let Some(first) = sources.first() else {
        return Err(Error::invalid("no sources given"));
    };
    let bands = match &options.bands {
        Some(b) => b.clone(),
        None => (1..=first.info.band_count).collect(),
    };
    let missing = sources.iter().find_map(|s| {
        bands
            .iter()
            .find(|&&b| b > s.info.band_count)
            .map(|&b| (s, b))
    });
    if let Some((s, b)) = missing {
        let n = s.info.band_count;
        let plural = if n == 1 { "" } else { "s" };
        return Err(Error::source(
            &s.info.url,
            format!("band {b} not found (it has {n} band{plural})"),
        ));
    }
    let summaries: Vec<_> = sources
        .iter()
        .map(|p| {
            let mut s = p.info.summary();
            s.grid = p.layer_grid;
            if let Some(t) = &options.target_crs {
                s.crs = t.clone();
            }
            s
        })
        .collect();
    let mut metadata = collect_metadata(&summaries, &options.scheme)?;
    limits::check_sizes(&sources, &metadata)?;
    let grid = crate::focal::grid_of(&metadata);
    // Focal parameters that depend on the grid (a geographic CRS needs a scale; the halo a
    // radius needs) are checked here, before anything is written.
    let chain = PreparedChain::new(
        &options.operations,
        stack_len(options, sources.len(), bands.len()),
        &grid,
        options.max_halo,
    )?;
    let chain_type = chain.output_cell_type();
    let data_type = options
        .output_type
        .or(chain_type.map(|t| t.data_type))
        .unwrap_or(metadata.cell_type.data_type);
    if data_type != metadata.cell_type.data_type || chain_type.is_some() {
        // Operations make NaN the NoData of a float output; an integer output keeps a NoData
        // it can hold (the operation's own first, as hillshade's 0), or takes its type's
        // default.
        let nodata = if data_type.is_float() {
            Some(f64::NAN)
        } else {
            chain_type
                .and_then(|t| t.nodata)
                .into_iter()
                .chain(metadata.cell_type.nodata)
                .find(|nd| data_type.can_hold(*nd))
                .or(Some(data_type.default_nodata()))
        };
        metadata.cell_type = CellType::new(data_type, nodata);
    }
    let band_names = if options.stack || !options.operations.is_empty() {
        (1..=chain.bands()).map(|i| format!("band_{i}")).collect()
    } else {
        bands.iter().map(|b| format!("band_{b}")).collect()
    };
    let mt = metadata.layout.map_transform();
    let mut keys: Vec<SpatialKey> = metadata
        .bounds
        .to_grid_bounds()
        .iter_keys()
        .filter(|k| {
            let e = mt.key_to_extent(*k);
            summaries.iter().any(|s| s.grid.extent.intersects(&e))
        })
        .collect();
    let tl = metadata.layout.tile_layout;
    let cells =
        (keys.len() as u64).saturating_mul(u64::from(tl.tile_cols) * u64::from(tl.tile_rows));
    if cells > limits::max_cells() {
        return Err(Error::invalid(format!(
            "the layer would store {} tiles of {} x {} cells, more than the budget of {} cells (TESSERA_MAX_CELLS)",
            keys.len(),
            tl.tile_cols,
            tl.tile_rows,
            limits::max_cells()
        )));
    }
    let index = ZOrderIndex::new(&metadata.bounds);
    keys.sort_by_key(|k| index.to_index(*k));
    Ok(IngestPlan {
        metadata,
        sources,
        bands,
        band_names,
        keys,
    })
}

/// Stages 1 and 2 in this process.
pub fn plan_ingest(urls: &[String], options: &IngestOptions) -> Result<IngestPlan> {
    if urls.is_empty() {
        return Err(Error::invalid("no sources given"));
    }
    let sources = urls
        .iter()
        .map(|u| plan_source(u, options))
        .collect::<Result<Vec<_>>>()?;
    plan_from_sources(sources, options)
}

/// Creates the (empty) layer a plan describes.
pub fn create_layer(
    plan: &IngestPlan,
    out_url: &str,
    options: &IngestOptions,
) -> Result<LayerWriter> {
    let store = Store::open(out_url)?;
    let sources = plan.sources.iter().map(|s| s.info.url.clone()).collect();
    LayerWriter::create(
        store,
        plan.metadata.clone(),
        plan.band_names.clone(),
        sources,
        options.write,
    )
}

/// Opens the layer `create_layer` made, to write tiles (a tile task) or finish it.
pub fn attach_layer(
    plan: &IngestPlan,
    out_url: &str,
    options: &IngestOptions,
) -> Result<LayerWriter> {
    let info = LayerInfo {
        format_version: crate::layer::FORMAT_VERSION,
        metadata: plan.metadata.clone(),
        bands: plan.band_names.clone(),
        sources: plan.sources.iter().map(|s| s.info.url.clone()).collect(),
        complete: false,
    };
    LayerWriter::attach(Store::open(out_url)?, info, options.write.zstd_level)
}

/// Where a tile task's tiles go: a layer's store, or the blocks of one GeoTIFF
/// ([`crate::export::GeoTiffWriter`], the embedded fast path).
pub trait TileSink: Sync {
    /// Writes the tile at `key` of output band `band` (0-based); a tile that is all NoData is
    /// handed in too, and handed over: a sink may keep its cells without a copy.
    fn write_tile(&self, band: usize, key: SpatialKey, tile: Tile) -> Result<()>;
    /// How many threads write at once: more where a write waits on the network.
    fn writers(&self) -> usize {
        FILE_WRITERS
    }
}

impl TileSink for LayerWriter {
    fn write_tile(&self, band: usize, key: SpatialKey, tile: Tile) -> Result<()> {
        LayerWriter::write_tile(self, band, key, &tile)
    }
    fn writers(&self) -> usize {
        if self.url().starts_with("s3://") {
            OBJECT_STORE_WRITERS
        } else {
            FILE_WRITERS
        }
    }
}

/// Stage 3, a tile task: computes and writes `keys`.
///
/// Two sides overlap: the current rayon pool decodes sources, cuts, merges and runs the chain;
/// a few writer threads encode (zstd) and store tiles — more of them for an object store, where
/// a PUT waits on the network. A bounded channel between them keeps at most
/// [`TILES_IN_FLIGHT`] tiles per writer in memory, whatever the raster's size. A failed write
/// fails the task: computing stops at the next key and the first error is returned.
pub fn write_keys(
    plan: &IngestPlan,
    options: &IngestOptions,
    writer: &dyn TileSink,
    keys: &[SpatialKey],
    progress: &dyn Progress,
) -> Result<KeysSummary> {
    let empty = std::sync::Mutex::new(Vec::new());
    let stored_bytes = AtomicU64::new(0);
    let tile_bytes = plan.bytes_per_key() / plan.band_names.len().max(1) as u64;
    let chain = plan.chain(options)?;
    // Blocks decoded once for all the task's threads: windows with halos, or not aligned with
    // the sources' blocks, share them.
    let blocks = BlockCache::new(BLOCK_CACHE_BYTES).reading(
        plan.sources
            .iter()
            .map(|s| (!s.reproject).then_some(&s.info)),
    );
    let writers = writer.writers();
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<(usize, SpatialKey, Tile)>(writers * TILES_IN_FLIGHT);
    let rx = std::sync::Mutex::new(rx);
    let write_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let order = traversal(plan, chain.halo(), keys);
    // The next key of `order` a tile thread takes.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let computed = std::thread::scope(|scope| {
        // Two rows of keys (of a strip) ahead.
        let ahead = 2 * order.iter().take_while(|k| k.row == order[0].row).count();
        let (order, next, done, halo) = (&order, &next, &done, chain.halo());
        let blocks = &blocks;
        scope.spawn(move || readahead::follow(plan, halo, order, next, done, ahead, blocks));
        for _ in 0..writers {
            scope.spawn(|| {
                loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((band, key, tile)) = next else {
                        return;
                    };
                    // After a failure the rest is drained, unwritten, so that no computing
                    // thread waits on a full channel.
                    if failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    match writer.write_tile(band, key, tile) {
                        Ok(()) => progress.advance(1),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            write_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
        // Every thread of the pool takes the next key of one order ([`traversal`]) rather
        // than rayon's halving splits, which give each thread a front of its own and decode
        // the blocks along the splits twice.
        let compute = |worker: &Worker, key: SpatialKey| -> Result<()> {
            for (i, tile) in worker
                .tiles(plan, options, &chain, key)?
                .into_iter()
                .enumerate()
            {
                if tile.is_all_nodata() {
                    empty
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, key));
                } else {
                    stored_bytes.fetch_add(tile_bytes, Ordering::Relaxed);
                }
                tx.send((i, key, tile))
                    .map_err(|_| Error::Internal("the tile writers stopped".into()))?;
            }
            Ok(())
        };
        let computed: Vec<Result<()>> = rayon::broadcast(|_| {
            let worker = Worker::open(plan, blocks).inspect_err(|_| {
                failed.store(true, Ordering::Relaxed);
            })?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&key) = order.get(i) else {
                    return Ok(());
                };
                // Another thread or a writer failed: its error is the task's.
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                compute(&worker, key).inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
            }
        });
        done.store(true, Ordering::Relaxed);
        // Closing the channel lets the writers finish what is queued and stop; the scope
        // waits for them.
        drop(tx);
        computed
    });
    if let Some(e) = write_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    computed.into_iter().collect::<Result<()>>()?;
    let empty = empty.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(KeysSummary {
        tiles: keys.len() as u64 * plan.band_names.len() as u64,
        empty_tiles: empty.len() as u64,
        empty,
        bytes: stored_bytes.into_inner(),
    })
}

/// The order a task's threads take its keys in: row by row, so that they move along the raster
/// together and each source block is decoded once while the tiles around it are computed — in
/// vertical strips of keys narrow enough that the blocks a row of tiles and its halo touch fit
/// in half the block cache (a 46,667-cell-wide DSM's row of 256 × 256 blocks, three blocks
/// deep for a halo, is 140 MB). A source whose blocks are wider than a strip (a striped file)
/// is taken row by row across the whole width, where each of its blocks is decoded once.
fn traversal(plan: &IngestPlan, halo: usize, keys: &[SpatialKey]) -> Vec<SpatialKey> {
    traversal_within(plan, halo, keys, BLOCK_CACHE_BYTES as u64 / 2)
}

/// [`traversal`] with strips whose blocks fit in `budget` bytes.
fn traversal_within(
    plan: &IngestPlan,
    halo: usize,
    keys: &[SpatialKey],
    budget: u64,
) -> Vec<SpatialKey> {
    let mut order = keys.to_vec();
    let (Some(west), Some(east)) = (
        keys.iter().map(|k| k.col).min(),
        keys.iter().map(|k| k.col).max(),
    ) else {
        return order;
    };
    let width = u64::from(east - west) + 1;
    let tl = plan.metadata.layout.tile_layout;
    let strip = match plan.sources.first() {
        Some(s) => {
            let (bw, bh) = s.info.block_size;
            let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
            let cell = if s.info.cell_type.data_type.exact_in_f32() {
                4
            } else {
                8
            };
            // Decoded bytes a row of tiles keeps in use, per key across.
            let deep = (u64::from(tl.tile_rows) + 2 * halo as u64).div_ceil(bh) + 1;
            let per_key = deep * bh * u64::from(tl.tile_cols) * cell * plan.bands.len() as u64;
            let strip = (budget / per_key.max(1)).clamp(1, width);
            if bw > strip * u64::from(tl.tile_cols) {
                width
            } else {
                strip
            }
        }
        None => width,
    };
    order.sort_by_key(|k| (u64::from(k.col - west) / strip, k.row, k.col));
    order
}

/// Runs `f` on a rayon pool of `threads` threads, or on the global pool.
pub(crate) fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    match threads {
        Some(n) => Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start {n} threads: {e}")))?
            .install(f)),
        None => Ok(f()),
    }
}

/// Writes the layer a plan describes, in this process. On any error the partial layer is
/// deleted; a layer that replaces another is written beside it and promoted over it only once
/// it is whole ([`crate::staging`]), so a failure leaves the old one as it was.
pub fn run_ingest(
    plan: &IngestPlan,
    out_url: &str,
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let output = Output::for_process(out_url, options.write.overwrite);
    let writer = create_layer(plan, output.write_url(), options)?;
    progress.start(plan.keys.len() as u64 * plan.band_names.len() as u64);
    let result = with_threads(options.threads, || {
        write_keys(plan, options, &writer, &plan.keys, progress)
    })
    .and_then(|r| r);
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // Best effort: the error that stopped the ingest matters more than a failed clean-up.
            let _ = output.discard();
            return Err(e);
        }
    };
    let empty: std::collections::HashSet<_> = summary.empty.iter().copied().collect();
    let layer = match writer
        .verify(&plan.keys, &empty)
        .and_then(|()| writer.finish())
    {
        Ok(layer) => layer,
        Err(e) => {
            let _ = output.discard();
            return Err(e);
        }
    };
    output.commit()?;
    Ok(IngestSummary {
        layer,
        tiles: summary.tiles,
        empty_tiles: summary.empty_tiles,
        elapsed: started.elapsed(),
    })
}

/// Plans and runs an ingest in this process.
pub fn ingest(
    urls: &[String],
    out_url: &str,
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestSummary> {
    let plan = plan_ingest(urls, options)?;
    run_ingest(&plan, out_url, options, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::write_test_dsm;

    #[test]
    fn a_failed_tile_write_fails_the_ingest_and_leaves_no_layer() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("dsm.tif");
        write_test_dsm(&src, 600, 500);
        let out = dir.path().join("layer");
        let options = IngestOptions::default();
        let plan = plan_ingest(&[src.display().to_string()], &options).unwrap();
        let writer = create_layer(&plan, out.to_str().unwrap(), &options).unwrap();
        // A file where the band's chunk directory should be: every tile write fails, even for
        // root.
        let band = out.join(&plan.band_names[0]);
        std::fs::remove_dir_all(&band).unwrap();
        std::fs::write(&band, b"in the way").unwrap();
        let err = write_keys(&plan, &options, &writer, &plan.keys, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot write tile"), "{err}");
        writer.abort().unwrap();

        // Nothing half-written is left in the way: the same output is written cleanly after.
        let summary = run_ingest(&plan, out.to_str().unwrap(), &options, &NoProgress);
        assert!(summary.is_ok(), "a clean run succeeds: {summary:?}");
        let reader = crate::layer::LayerReader::open(out.to_str().unwrap()).unwrap();
        assert_eq!(reader.tiles_present(1).unwrap().len(), plan.keys.len());
    }

    #[test]
    fn keys_are_taken_row_by_row_in_strips_whose_blocks_fit_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let tiled = dir.path().join("tiled.tif");
        write_test_dsm(&tiled, 2560, 512);
        let options = IngestOptions::default();
        let plan = plan_ingest(&[tiled.display().to_string()], &options).unwrap();
        assert_eq!(plan.sources[0].info.block_size, (256, 256));
        let cols = |order: &[SpatialKey]| order.iter().map(|k| (k.col, k.row)).collect::<Vec<_>>();
        // Row by row when a row of tiles' blocks fit: 10 keys across, 2 down.
        let rows: Vec<_> = (0..2).flat_map(|r| (0..10).map(move |c| (c, r))).collect();
        assert_eq!(
            cols(&traversal_within(&plan, 33, &plan.keys, u64::MAX)),
            rows
        );
        // A halo of 33 keeps three rows of 256 × 256 f32 blocks in use: 768 KiB per key
        // across. Four keys' worth: strips of 4, 4 and 2 keys.
        let strips: Vec<_> = [(0, 4), (4, 8), (8, 10)]
            .into_iter()
            .flat_map(|(c0, c1)| (0..2).flat_map(move |r| (c0..c1).map(move |c| (c, r))))
            .collect();
        let budget = 4 * 3 * 256 * 256 * 4;
        assert_eq!(
            cols(&traversal_within(&plan, 33, &plan.keys, budget)),
            strips
        );

        // A striped file (blocks of whole rows): row by row across the whole width.
        let striped = dir.path().join("striped.tif");
        let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let src = gdal::Dataset::open(&tiled).unwrap();
        src.create_copy(&driver, &striped, &gdal::cpl::CslStringList::new())
            .unwrap();
        let plan = plan_ingest(&[striped.display().to_string()], &options).unwrap();
        assert_eq!(plan.sources[0].info.block_size.0, 2560);
        assert_eq!(cols(&traversal_within(&plan, 33, &plan.keys, budget)), rows);
    }
}
