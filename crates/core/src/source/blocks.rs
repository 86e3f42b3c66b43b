//! Decoded source blocks shared by the threads of a task, so that each block of a compressed
//! source is decoded once however many windows straddle it — a tile's window plus a halo of
//! 100 cells touches nine 256 × 256 blocks, and each of those blocks is wanted by up to nine
//! tiles. GDAL's own block cache is per dataset handle, and Tessera keeps one handle per thread.
//!
//! A window that is exactly one block (a layout aligned with the source's blocks, no halo) is
//! read straight through, uncached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};

use super::GdalSource;
use crate::error::Result;
use crate::model::CellType;

/// Source index, band, block column, block row.
type BlockKey = (usize, usize, u64, u64);

/// A decoded block: f32 cells when the source's type is exact in f32 (Float32, bytes, 16-bit
/// integers: half the memory of f64, twice the blocks in the same cache — an SVF with a halo
/// of 33 cells decoded each DEFLATE block of a city DSM 2.5 times with f64 blocks), else f64.
#[derive(Debug)]
enum Block {
    F32(Array2<f32>),
    F64(Array2<f64>),
}

impl Block {
    fn dim(&self) -> (usize, usize) {
        match self {
            Block::F32(a) => a.dim(),
            Block::F64(a) => a.dim(),
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
}

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
}

impl BlockCache {
    /// A cache holding up to `capacity` bytes of decoded cells.
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            capacity,
            inner: Mutex::new(Lru::default()),
            decoded: AtomicU64::new(0),
        }
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
        if self.uncached(src, (col, row), (cols, rows)) {
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

    /// Whether a window is read straight from the source: exactly one block (a layout aligned
    /// with the source's blocks, no halo), or blocks too large to cache.
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
        for (col, row, cols, rows) in [
            (0, 0, 700, 530),
            (100, 37, 456, 456),
            (244, 300, 456, 230),
            (256, 256, 256, 256),
            (512, 512, 188, 18),
        ] {
            let want = src.read_window::<f64>(1, col, row, cols, rows).unwrap();
            let got = cache
                .read_window(0, &src, 1, (col, row), (cols, rows))
                .unwrap();
            assert_eq!(got, want, "window {col},{row} {cols}x{rows}");
        }
        assert!(cache.lock().bytes <= cache.capacity);
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
