//! Decoded source blocks shared by the threads of a task, so that each block of a compressed
//! source is decoded once however many windows straddle it — a tile's window plus a halo of
//! 100 cells touches nine 256 × 256 blocks, and each of those blocks is wanted by up to nine
//! tiles. GDAL's own block cache is per dataset handle, and Tessera keeps one handle per thread.
//!
//! A window that is exactly one block (a layout aligned with the source's blocks, no halo) is
//! read straight through, uncached.
//!
//! A plain local GeoTIFF (one band that [`tessera_tiff`] reads as GDAL does) is decoded without
//! GDAL, as `tessera dem` decodes it, from stored bytes that a task's reading thread read ahead
//! past the page cache ([`BlockCache::read_ahead`]): a city DSM's 9 GB are then copied once, by
//! the disk, rather than into the page cache and out of it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};

use tessera_tiff::{RawRow, Tiff};

use super::{GdalSource, SourceInfo};
use crate::error::Result;
use crate::model::{CellType, DataType};

/// Source index, band, block column, block row.
type BlockKey = (usize, usize, u64, u64);

/// A decoded block: f32 cells when the source's type is exact in f32 (Float32, bytes, 16-bit
/// integers: half the memory of f64, twice the blocks in the same cache — an SVF with a halo
/// of 33 cells decoded each DEFLATE block of a city DSM 2.5 times with f64 blocks), else f64.
#[derive(Debug)]
enum Block {
    F32(Array2<f32>),
    F64(Array2<f64>),
    /// A block decoded without GDAL, as it is stored: its cells are converted as they are
    /// copied out, rather than in a pass of their own.
    Stored(Stored),
}

/// A block as [`tessera_tiff`] decodes it, of which the first `dim` (rows, columns) are the
/// raster's (TIFF stores whole tiles at the raster's edges).
#[derive(Debug)]
struct Stored {
    block: tessera_tiff::Block,
    sample: tessera_tiff::SampleType,
    dim: (usize, usize),
}

impl Block {
    fn dim(&self) -> (usize, usize) {
        match self {
            Block::F32(a) => a.dim(),
            Block::F64(a) => a.dim(),
            Block::Stored(b) => b.dim,
        }
    }

    /// Copies cells [r0, r1) × [c0, c1) of the block into `out`, NaN where `nodata` says the
    /// cell is NoData.
    fn copy_into<T: WindowCell>(
        &self,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
        out: ArrayViewMut2<T>,
        nodata: Option<CellType>,
    ) {
        match self {
            Block::F32(a) => copy_cells(a.slice(s![r0..r1, c0..c1]), out, nodata, |v| {
                T::from_f64(f64::from(v))
            }),
            Block::F64(a) => copy_cells(a.slice(s![r0..r1, c0..c1]), out, nodata, T::from_f64),
            Block::Stored(b) => b.copy_into((r0, r1), (c0, c1), out, nodata),
        }
    }
}

impl Stored {
    /// [`Block::copy_into`]: each cell's value, as GDAL reads it into f64, tested for NoData
    /// and rounded to `T` once, as [`copy_cells`] makes them of GDAL's blocks.
    fn copy_into<T: WindowCell>(
        &self,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
        mut out: ArrayViewMut2<T>,
        nodata: Option<CellType>,
    ) {
        let size = self.sample.bytes();
        let width = self.block.width;
        for (r, mut o) in (r0..r1).zip(out.rows_mut()) {
            let Some(from) = self
                .block
                .bytes
                .get((r * width + c0) * size..(r * width + c1) * size)
            else {
                continue;
            };
            // Each cell's value as GDAL reads it into f64, tested for NoData, rounded once.
            let row = |o: &mut [T]| match nodata {
                None => self.sample.map_cells(from, o, T::from_f64),
                Some(ct) => self.sample.map_cells(from, o, |v| match ct.is_nodata(v) {
                    true => T::NAN,
                    false => T::from_f64(v),
                }),
            };
            match o.as_slice_mut() {
                Some(o) => row(o),
                None => {
                    let mut cells = vec![T::NAN; c1 - c0];
                    row(&mut cells);
                    o.iter_mut().zip(cells).for_each(|(o, c)| *o = c);
                }
            }
        }
    }
}

/// The cells a window is read into: f64, or f32 for a kernel that computes in f32 — exact
/// only from a source whose cells are exact in f32 (blocks held as f32), which is where
/// [`BlockCache::read_window_into`] is asked for them.
pub trait WindowCell: tessera_tiff::Cell + gdal::raster::GdalType {}

impl<T: tessera_tiff::Cell + gdal::raster::GdalType> WindowCell for T {}

/// `out = conv(from)`, NaN where `nodata` says a cell is NoData.
fn copy_cells<S: tessera_tiff::Cell, T: WindowCell>(
    from: ArrayView2<S>,
    out: ArrayViewMut2<T>,
    nodata: Option<CellType>,
    conv: impl Fn(S) -> T,
) {
    match nodata {
        None => copy_rows(from, out, conv),
        Some(ct) => copy_rows(from, out, |v| {
            if ct.is_nodata(v.to_f64()) {
                T::NAN
            } else {
                conv(v)
            }
        }),
    }
}

/// `out = conv(from)`, cell by cell, row slice by row slice.
fn copy_rows<S: Copy, T>(from: ArrayView2<S>, mut out: ArrayViewMut2<T>, conv: impl Fn(S) -> T) {
    for (mut o, f) in out.rows_mut().into_iter().zip(from.rows()) {
        match (o.as_slice_mut(), f.as_slice()) {
            (Some(o), Some(f)) => o.iter_mut().zip(f).for_each(|(o, &f)| *o = conv(f)),
            _ => o.zip_mut_with(&f, |o, &f| *o = conv(f)),
        }
    }
}

/// A bounded cache of decoded blocks, least recently used out first.
#[derive(Debug)]
pub struct BlockCache {
    capacity: usize,
    inner: Mutex<Lru>,
    /// Blocks decoded so far.
    decoded: AtomicU64,
    /// By source index: the source read without GDAL, where it can be ([`direct_source`]).
    direct: Vec<Option<Tiff>>,
    /// Buffers of stored bytes whose blocks are all decoded, for the next reads ahead.
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reads ahead: as many as a task has block rows in flight.
const KEPT_BUFFERS: usize = 4;

/// A block being decoded or decoded: the first thread to want it decodes it, the others wait
/// for it rather than decode it again (threads on neighbouring tiles want the same blocks at
/// the same moment). `None` once set: its decoding failed.
type Slot = Arc<OnceLock<Option<Arc<Block>>>>;

#[derive(Debug, Default)]
struct Lru {
    /// Each block with its size in bytes and when it was last wanted.
    blocks: HashMap<BlockKey, (Slot, usize, u64)>,
    bytes: usize,
    tick: u64,
    /// The stored bytes of blocks read ahead and not decoded yet (a block's row shared by the
    /// blocks read with it).
    read: HashMap<BlockKey, Arc<RawRow>>,
}

/// The source `info` describes, opened to be read without GDAL, when that reads the same cells
/// GDAL does: a local TIFF of one band that [`tessera_tiff`] reads, of the grid, cell type and
/// blocks GDAL reports, with blocks small enough to cache. `None` for anything else (GDAL reads
/// it).
pub fn direct_source(info: &SourceInfo, capacity: usize) -> Option<Tiff> {
    let path = info.url.strip_prefix("file://").unwrap_or(&info.url);
    if info.band_count != 1 || !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let tiff = Tiff::open(std::path::Path::new(path)).ok()?;
    use tessera_tiff::SampleType as S;
    let same_type = matches!(
        (tiff.sample, info.cell_type.data_type),
        (S::U8, DataType::U8)
            | (S::I16, DataType::I16)
            | (S::U16, DataType::U16)
            | (S::I32, DataType::I32)
            | (S::F32, DataType::F32)
            | (S::F64, DataType::F64)
    );
    let (bw, bh) = info.block_size;
    let cell = if info.cell_type.data_type.exact_in_f32() {
        4
    } else {
        8
    };
    (same_type
        && (tiff.width, tiff.height) == (info.grid.cols, info.grid.rows)
        && tiff.block == (bw as u64, bh as u64)
        && bw * bh * cell <= capacity / 8)
        .then_some(tiff)
}

impl BlockCache {
    /// A cache holding up to `capacity` bytes of decoded cells.
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            capacity,
            inner: Mutex::new(Lru::default()),
            decoded: AtomicU64::new(0),
            direct: Vec::new(),
            buffers: Mutex::new(Vec::new()),
        }
    }

    /// This cache, decoding without GDAL the `sources` (by source index; `None`: one read
    /// through GDAL) that [`direct_source`] opens.
    pub fn reading<'a>(
        mut self,
        sources: impl IntoIterator<Item = Option<&'a SourceInfo>>,
    ) -> BlockCache {
        self.direct = sources
            .into_iter()
            .map(|info| info.and_then(|info| direct_source(info, self.capacity)))
            .collect();
        self
    }

    /// Source number `index`, if it is read without GDAL.
    pub fn direct(&self, index: usize) -> Option<&Tiff> {
        self.direct.get(index).and_then(Option::as_ref)
    }

    /// Reads the stored bytes of blocks `bxs` of block row `by` of source number `index` (read
    /// without GDAL) in one read past the page cache, for the threads that will decode them;
    /// blocks wanted already are left to the threads that want them. Returns how many blocks it
    /// read; a failed read changes nothing but speed (the block's decoding reads it again, and
    /// reports what is wrong).
    pub fn read_ahead(&self, index: usize, by: u64, bxs: std::ops::Range<u64>) -> usize {
        let Some(tiff) = self.direct(index) else {
            return 0;
        };
        let buf = self
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        let Ok(row) = tiff.read_blocks(by, bxs.clone(), true, buf) else {
            return 0;
        };
        let row = Arc::new(row);
        let mut lru = self.lock();
        for bx in bxs.clone() {
            let key = (index, 1, bx, by);
            if !lru.blocks.contains_key(&key) {
                lru.read.insert(key, row.clone());
            }
        }
        drop(lru);
        self.recycle(row);
        bxs.count()
    }

    /// Blocks read ahead and not decoded yet.
    #[cfg(test)]
    pub(crate) fn read_ahead_pending(&self) -> usize {
        self.lock().read.len()
    }

    /// Keeps the buffer of `row` for the next read ahead, if this was its last holder.
    fn recycle(&self, row: Arc<RawRow>) {
        if let Ok(row) = Arc::try_unwrap(row) {
            let mut kept = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < KEPT_BUFFERS {
                kept.push(row.into_buffer());
            }
        }
    }

    /// Block (`bx`, `by`) of source `tiff`, of which `w` × `h` cells are inside the raster,
    /// decoded from its bytes read ahead, else read from the file; `None` when it cannot be
    /// decoded here (GDAL then reads it, and says what is wrong).
    fn decode_direct(&self, tiff: &Tiff, key: BlockKey, (w, h): (usize, usize)) -> Option<Block> {
        let (_, _, bx, by) = key;
        let read = self.lock().read.remove(&key);
        let block = match &read {
            Some(row) => tiff.decode(row, bx),
            None => tiff.block(bx, by),
        };
        if let Some(row) = read {
            self.recycle(row);
        }
        let block = block.ok()?;
        let size = tiff.sample.bytes();
        if block.width < w || block.rows < h || block.bytes.len() < block.width * h * size {
            return None;
        }
        Some(Block::Stored(Stored {
            block,
            sample: tiff.sample,
            dim: (h, w),
        }))
    }

    /// How many blocks have been decoded (a block evicted and wanted again counts twice).
    pub fn decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cells [col, col + cols) × [row, row + rows) of `band` of source number `index`, which
    /// `src` is this thread's handle of; the window must lie inside the raster.
    pub fn read_window(
        &self,
        index: usize,
        src: &GdalSource,
        band: usize,
        (col, row): (u64, u64),
        (cols, rows): (usize, usize),
    ) -> Result<Array2<f64>> {
        if self.uncached(src, (col, row), (cols, rows)) && self.direct(index).is_none() {
            return src.read_window(band, col, row, cols, rows);
        }
        let mut out = Array2::from_elem((rows, cols), f64::NAN);
        self.read_window_into(index, src, band, (col, row), out.view_mut(), None)?;
        Ok(out)
    }

    /// The window of `out`'s shape at (`col`, `row`) of `band`, as [`Self::read_window`],
    /// copied into `out` — NaN where `nodata` (a cell type) says a cell is NoData — without a
    /// window of its own in between.
    pub fn read_window_into<T: WindowCell>(
        &self,
        index: usize,
        src: &GdalSource,
        band: usize,
        (col, row): (u64, u64),
        mut out: ArrayViewMut2<T>,
        nodata: Option<CellType>,
    ) -> Result<()> {
        let (rows, cols) = out.dim();
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        if self.uncached(src, (col, row), (cols, rows)) {
            // One block of a source read without GDAL: decoded here, and not kept.
            if let Some(tiff) = self.direct(index).filter(|_| band == 1) {
                let (bw, bh) = src.info().block_size;
                let key = (index, band, col / bw.max(1) as u64, row / bh.max(1) as u64);
                if let Some(block) = self.decode_direct(tiff, key, (cols, rows)) {
                    self.decoded.fetch_add(1, Ordering::Relaxed);
                    block.copy_into((0, rows), (0, cols), out, nodata);
                    return Ok(());
                }
            }
            let cells = src.read_window::<T>(band, col, row, cols, rows)?;
            copy_cells(cells.view(), out, nodata, |v| v);
            return Ok(());
        }
        let (bw, bh) = src.info().block_size;
        let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
        let (c1, r1) = (col + cols as u64, row + rows as u64);
        for by in row / bh..=(r1 - 1) / bh {
            for bx in col / bw..=(c1 - 1) / bw {
                let block = self.block(index, src, band, bx, by, (bw, bh))?;
                let (x0, y0) = (bx * bw, by * bh);
                let (brows, bcols) = block.dim();
                // The overlap of the block and the window, in raster cells.
                let (ox0, ox1) = (x0.max(col), (x0 + bcols as u64).min(c1));
                let (oy0, oy1) = (y0.max(row), (y0 + brows as u64).min(r1));
                if ox0 >= ox1 || oy0 >= oy1 {
                    continue;
                }
                block.copy_into(
                    ((oy0 - y0) as usize, (oy1 - y0) as usize),
                    ((ox0 - x0) as usize, (ox1 - x0) as usize),
                    out.slice_mut(s![
                        (oy0 - row) as usize..(oy1 - row) as usize,
                        (ox0 - col) as usize..(ox1 - col) as usize
                    ]),
                    nodata,
                );
            }
        }
        Ok(())
    }

    /// Whether a window is read straight from the source, not kept in the cache: exactly one
    /// block (a layout aligned with the source's blocks, no halo), or blocks too large to cache.
    fn uncached(
        &self,
        src: &GdalSource,
        (col, row): (u64, u64),
        (cols, rows): (usize, usize),
    ) -> bool {
        let grid = src.info().grid;
        let (bw, bh) = src.info().block_size;
        let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
        let one_block = col % bw == 0
            && row % bh == 0
            && (cols as u64 == bw || col + cols as u64 == grid.cols)
            && (rows as u64 == bh || row + rows as u64 == grid.rows);
        let exact_in_f32 = src.info().cell_type.data_type.exact_in_f32();
        let block_bytes = (bw * bh) as usize * if exact_in_f32 { 4 } else { 8 };
        one_block || block_bytes > self.capacity / 8
    }

    fn block(
        &self,
        index: usize,
        src: &GdalSource,
        band: usize,
        bx: u64,
        by: u64,
        (bw, bh): (u64, u64),
    ) -> Result<Arc<Block>> {
        let key = (index, band, bx, by);
        let grid = src.info().grid;
        let (x0, y0) = (bx * bw, by * bh);
        let (w, h) = (
            bw.min(grid.cols - x0) as usize,
            bh.min(grid.rows - y0) as usize,
        );
        let exact_in_f32 = src.info().cell_type.data_type.exact_in_f32();
        let decode = || -> Result<Block> {
            self.decoded.fetch_add(1, Ordering::Relaxed);
            if let Some(tiff) = self.direct(index).filter(|_| band == 1)
                && let Some(block) = self.decode_direct(tiff, key, (w, h))
            {
                return Ok(block);
            }
            Ok(if exact_in_f32 {
                Block::F32(match src.read_block::<f32>(band, (bx, by), (w, h))? {
                    Some(cells) => cells,
                    None => src.read_window::<f32>(band, x0, y0, w, h)?,
                })
            } else {
                Block::F64(match src.read_block::<f64>(band, (bx, by), (w, h))? {
                    Some(cells) => cells,
                    None => src.read_window(band, x0, y0, w, h)?,
                })
            })
        };
        let slot = {
            let mut lru = self.lock();
            lru.tick += 1;
            let tick = lru.tick;
            match lru.blocks.get_mut(&key) {
                Some((slot, _, used)) => {
                    *used = tick;
                    slot.clone()
                }
                None => {
                    let bytes = w * h * if exact_in_f32 { 4 } else { 8 };
                    let slot = Slot::default();
                    lru.blocks.insert(key, (slot.clone(), bytes, tick));
                    lru.bytes += bytes;
                    lru.evict(self.capacity, key);
                    slot
                }
            }
        };
        // Decoded outside the map's lock, once: a thread wanting the block meanwhile waits here.
        let mut failed = None;
        let decoded = slot.get_or_init(|| match decode() {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        match (decoded, failed) {
            (Some(b), _) => Ok(b.clone()),
            // This thread's decode failed: the block leaves the cache and the error is the
            // task's.
            (None, Some(e)) => {
                let mut lru = self.lock();
                if lru
                    .blocks
                    .get(&key)
                    .is_some_and(|(s, _, _)| Arc::ptr_eq(s, &slot))
                    && let Some((_, bytes, _)) = lru.blocks.remove(&key)
                {
                    lru.bytes -= bytes;
                }
                Err(e)
            }
            // Another thread's decode failed: this one reads for itself, to report its own
            // error (or the cells, if the failure has passed).
            (None, None) => Ok(Arc::new(decode()?)),
        }
    }
}

impl Lru {
    /// Drops the least recently wanted blocks, never `keep`, until the cache is within
    /// `capacity` bytes.
    fn evict(&mut self, capacity: usize, keep: BlockKey) {
        while self.bytes > capacity && self.blocks.len() > 1 {
            let oldest = self
                .blocks
                .iter()
                .filter(|(k, _)| **k != keep)
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            if let Some((_, bytes, _)) = self.blocks.remove(&k) {
                self.bytes -= bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::write_test_dsm;

    #[test]
    fn windows_assembled_from_blocks_equal_direct_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        write_test_dsm(&path, 700, 530);
        let src = GdalSource::open(path.to_str().unwrap()).unwrap();
        // A small cache, so that blocks are evicted and read again.
        let cache = BlockCache::new(3 * 256 * 256 * 8 * 8);
        windows_equal_gdal(&cache, &src);
        assert!(cache.lock().bytes <= cache.capacity);
    }

    /// Windows of the 700 × 530 test DSM `src` read through `cache`, in f64 and in f32, are
    /// GDAL's: whole, straddling blocks, cut off at the edges, one block.
    fn windows_equal_gdal(cache: &BlockCache, src: &GdalSource) {
        for (col, row, cols, rows) in [
            (0, 0, 700, 530),
            (100, 37, 456, 456),
            (244, 300, 456, 230),
            (256, 256, 256, 256),
            (512, 512, 188, 18),
        ] {
            let want = src.read_window::<f64>(1, col, row, cols, rows).unwrap();
            let got = cache
                .read_window(0, src, 1, (col, row), (cols, rows))
                .unwrap();
            assert_eq!(got, want, "window {col},{row} {cols}x{rows}");
            let mut f32s = Array2::from_elem((rows, cols), f32::NAN);
            cache
                .read_window_into(0, src, 1, (col, row), f32s.view_mut(), None)
                .unwrap();
            assert_eq!(f32s.mapv(f64::from), want, "f32 window {col},{row}");
        }
    }

    #[test]
    fn windows_of_a_source_read_without_gdal_equal_gdal_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        write_test_dsm(&path, 700, 530);
        let src = GdalSource::open(path.to_str().unwrap()).unwrap();
        let info = src.info().clone();
        // A small cache, so that blocks are evicted and read again.
        let cache = BlockCache::new(3 * 256 * 256 * 8 * 8).reading([Some(&info)]);
        assert!(cache.direct(0).is_some());
        // Some blocks' bytes read ahead, one of them cut off at the raster's edge.
        assert_eq!(cache.read_ahead(0, 1, 1..3), 2);
        assert_eq!(cache.read_ahead(0, 2, 0..3), 3);
        windows_equal_gdal(&cache, &src);
        assert_eq!(cache.read_ahead_pending(), 0);
        assert!(cache.lock().bytes <= cache.capacity);
        // A window that is one block (read ahead, or not) is decoded and not kept: a layout
        // aligned with the source's blocks, without a halo, wants each block once.
        let fresh = BlockCache::new(64 << 20).reading([Some(&info)]);
        assert_eq!(fresh.read_ahead(0, 1, 1..2), 1);
        for (col, row, cols, rows) in [(256, 256, 256, 256), (512, 512, 188, 18)] {
            let want = src.read_window::<f64>(1, col, row, cols, rows).unwrap();
            let got = fresh
                .read_window(0, &src, 1, (col, row), (cols, rows))
                .unwrap();
            assert_eq!(got, want, "block at {col},{row}");
        }
        assert_eq!((fresh.decoded(), fresh.read_ahead_pending()), (2, 0));
        assert!(fresh.lock().blocks.is_empty());
        // What GDAL reads differently is left to GDAL: another band, a striped file whose
        // strips are too large to cache, a file that is not there.
        let mut other = info.clone();
        other.band_count = 2;
        assert!(direct_source(&other, 64 << 20).is_none());
        assert!(direct_source(&info, 1 << 20).is_none());
        other = info.clone();
        other.url = dir.path().join("missing.tif").display().to_string();
        assert!(direct_source(&other, 64 << 20).is_none());
        other = info.clone();
        other.cell_type.data_type = DataType::F64;
        assert!(direct_source(&other, 64 << 20).is_none());
    }

    /// A GeoTIFF of 16-bit integers with NoData, written by GDAL in tiles of 64 × 32.
    fn i16_source(path: &std::path::Path) {
        let (cols, rows) = (150, 100);
        let cells: Vec<i16> = (0..cols * rows)
            .map(|i| match i % 13 {
                0 => -9999,
                _ => ((i * 7919) % 3000) as i16 - 1500,
            })
            .collect();
        let options = [
            ("TILED", "YES"),
            ("BLOCKXSIZE", "64"),
            ("BLOCKYSIZE", "32"),
            ("COMPRESS", "DEFLATE"),
            ("PREDICTOR", "2"),
        ];
        crate::synth::write_test_tiff(path, (cols, rows), &options, Some(-9999.0), cells);
    }

    #[test]
    fn cells_read_without_gdal_are_gdals_with_nodata_as_nan_in_f32_and_f64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i16.tif");
        i16_source(&path);
        let src = GdalSource::open(path.to_str().unwrap()).unwrap();
        let info = src.info().clone();
        assert_eq!(info.cell_type.nodata, Some(-9999.0));
        let gdal = BlockCache::new(64 << 20);
        let direct = BlockCache::new(64 << 20).reading([Some(&info)]);
        assert!(direct.direct(0).is_some());
        assert_eq!(direct.read_ahead(0, 1, 0..3), 3);
        let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let bits64 = |a: &Array2<f64>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let nodata = Some(info.cell_type);
        for (col, row, cols, rows) in [(0, 0, 150, 100), (10, 20, 130, 50), (100, 60, 50, 40)] {
            let (mut a, mut b) = (
                Array2::from_elem((rows, cols), 0f32),
                Array2::from_elem((rows, cols), 0f32),
            );
            let at = (col, row);
            gdal.read_window_into(0, &src, 1, at, a.view_mut(), nodata)
                .unwrap();
            direct
                .read_window_into(0, &src, 1, at, b.view_mut(), nodata)
                .unwrap();
            assert_eq!(bits(&a), bits(&b), "f32 window {col},{row}");
            assert!(b.iter().any(|v| v.is_nan()), "NoData is NaN");
            let (mut a, mut b) = (
                Array2::from_elem((rows, cols), 0f64),
                Array2::from_elem((rows, cols), 0f64),
            );
            gdal.read_window_into(0, &src, 1, at, a.view_mut(), nodata)
                .unwrap();
            direct
                .read_window_into(0, &src, 1, at, b.view_mut(), nodata)
                .unwrap();
            assert_eq!(bits64(&a), bits64(&b), "f64 window {col},{row}");
        }
        assert_eq!(direct.read_ahead_pending(), 0);
    }

    #[test]
    fn threads_wanting_the_same_blocks_at_once_decode_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        write_test_dsm(&path, 1024, 768);
        let url = path.to_str().unwrap();
        let cache = BlockCache::new(64 << 20);
        let want = GdalSource::open(url)
            .unwrap()
            .read_window::<f64>(1, 0, 0, 1024, 768)
            .unwrap();
        // Four threads, each reading every window of 300 × 300 cells (nine blocks of 256 each
        // at most) in the same order: they want the same blocks at the same moments.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let src = GdalSource::open(url).unwrap();
                    for row in (0..768 - 300).step_by(100) {
                        for col in (0..1024 - 300).step_by(100) {
                            let got = cache
                                .read_window(0, &src, 1, (col, row), (300, 300))
                                .unwrap();
                            let (c, r) = (col as usize, row as usize);
                            assert_eq!(got, want.slice(s![r..r + 300, c..c + 300]));
                        }
                    }
                });
            }
        });
        // 4 × 3 blocks of 256 × 256, each decoded by one thread.
        assert_eq!(cache.decoded(), 12);
    }
}
