//! Decoded source blocks shared by the threads of a task, so that each block of a compressed
//! source is decoded once however many windows straddle it — a tile's window plus a halo of
//! 100 cells touches nine 256 × 256 blocks, and each of those blocks is wanted by up to nine
//! tiles. GDAL's own block cache is per dataset handle, and Tessera keeps one handle per thread.
//!
//! A window that is exactly one block (a layout aligned with the source's blocks, no halo) is
//! read straight through, uncached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ndarray::{Array2, s};

use super::GdalSource;
use crate::error::Result;

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

    fn bytes(&self) -> usize {
        match self {
            Block::F32(a) => a.len() * 4,
            Block::F64(a) => a.len() * 8,
        }
    }

    /// Copies cells [r0, r1) × [c0, c1) of the block into `out`, as f64 (exactly).
    fn copy_into(
        &self,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
        mut out: ndarray::ArrayViewMut2<f64>,
    ) {
        match self {
            Block::F32(a) => {
                out.zip_mut_with(&a.slice(s![r0..r1, c0..c1]), |o, &v| *o = f64::from(v))
            }
            Block::F64(a) => out.assign(&a.slice(s![r0..r1, c0..c1])),
        }
    }
}

/// A bounded cache of decoded blocks, least recently used out first.
#[derive(Debug)]
pub struct BlockCache {
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    blocks: HashMap<BlockKey, (Arc<Block>, u64)>,
    bytes: usize,
    tick: u64,
}

impl BlockCache {
    /// A cache holding up to `capacity` bytes of decoded cells.
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            capacity,
            inner: Mutex::new(Lru::default()),
        }
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
        let grid = src.info().grid;
        let (bw, bh) = src.info().block_size;
        let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
        let one_block = col % bw == 0
            && row % bh == 0
            && (cols as u64 == bw || col + cols as u64 == grid.cols)
            && (rows as u64 == bh || row + rows as u64 == grid.rows);
        let exact_in_f32 = src.info().cell_type.data_type.exact_in_f32();
        let block_bytes = (bw * bh) as usize * if exact_in_f32 { 4 } else { 8 };
        if one_block || block_bytes > self.capacity / 8 {
            return src.read_window(band, col, row, cols, rows);
        }
        let mut out = Array2::from_elem((rows, cols), f64::NAN);
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
                );
            }
        }
        Ok(out)
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
        {
            let mut lru = self.lock();
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((b, used)) = lru.blocks.get_mut(&key) {
                *used = tick;
                return Ok(b.clone());
            }
        }
        // Decoded outside the lock; two threads may decode the same block at once, and the
        // second insert replaces the first with equal cells.
        let grid = src.info().grid;
        let (x0, y0) = (bx * bw, by * bh);
        let (w, h) = (
            bw.min(grid.cols - x0) as usize,
            bh.min(grid.rows - y0) as usize,
        );
        let block = Arc::new(if src.info().cell_type.data_type.exact_in_f32() {
            Block::F32(src.read_window::<f32>(band, x0, y0, w, h)?)
        } else {
            Block::F64(src.read_window(band, x0, y0, w, h)?)
        });
        let mut lru = self.lock();
        let bytes = block.bytes();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((old, _)) = lru.blocks.insert(key, (block.clone(), tick)) {
            lru.bytes -= old.bytes();
        }
        lru.bytes += bytes;
        while lru.bytes > self.capacity && lru.blocks.len() > 1 {
            let oldest = lru
                .blocks
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            let Some(k) = oldest else { break };
            if let Some((b, _)) = lru.blocks.remove(&k) {
                lru.bytes -= b.bytes();
            }
        }
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::NoProgress;
    use crate::synth::SynthDsm;

    #[test]
    fn windows_assembled_from_blocks_equal_direct_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        SynthDsm {
            cols: 700,
            rows: 530,
            ..SynthDsm::default()
        }
        .write_geotiff(&path, &NoProgress)
        .unwrap();
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
}
