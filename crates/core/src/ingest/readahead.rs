//! A task's source blocks read ahead of its tiles. Without it a cold file is read a block at a
//! time, as each is decoded, by tile threads that wait on the disk in turn (a cold 12000² DSM:
//! 0.3–0.8 s of a 3.5 s `tessera dem slope`). One thread follows the order the tile threads
//! take keys in, a few rows of keys ahead of them, and reads the blocks that each row of keys'
//! windows will decode: a source the block cache decodes without GDAL in one read per block row
//! past the page cache, handed to the cache ([`BlockCache::read_ahead`]); any other local TIFF
//! on the layer's CRS by asking the kernel to read them (`posix_fadvise(WILLNEED)`:
//! asynchronous, into the page cache, where GDAL finds them). Anything else is read as before.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::IngestPlan;
use super::worker::{window_for, with_halo};
use crate::model::SpatialKey;
use crate::source::{BlockCache, BlockIndex, SourceInfo};

/// How a source's blocks are read ahead.
enum Ahead {
    /// Into the block cache.
    Cache,
    /// Into the page cache: where the TIFF's IFD says each block is.
    Advise(BlockIndex, std::fs::File),
}

/// Follows the tile threads through `order` (they take key `next` next), keeping the blocks of
/// the `ahead` keys after it read or requested, a row of keys at a time, until they are done or
/// `stop` is set. Returns how many blocks it read or requested.
pub(super) fn follow(
    plan: &IngestPlan,
    halo: usize,
    order: &[SpatialKey],
    next: &AtomicUsize,
    stop: &AtomicBool,
    ahead: usize,
    cache: &BlockCache,
) -> usize {
    let sources: Vec<(usize, &SourceInfo, Ahead)> = plan
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.reproject)
        .filter_map(|(i, s)| {
            if cache.direct(i).is_some() {
                return Some((i, &s.info, Ahead::Cache));
            }
            let path = s.info.url.strip_prefix("file://").unwrap_or(&s.info.url);
            // A local file, not an object or a /vsi path.
            let file = std::fs::File::open(path)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?;
            // A TIFF, whose blocks are where its IFD says.
            let grid = &s.info.grid;
            let index = BlockIndex::read(&file, (grid.cols, grid.rows), s.info.block_size)?;
            Some((i, &s.info, Ahead::Advise(index, file)))
        })
        .collect();
    if sources.is_empty() {
        return 0;
    }
    let mut requested: HashSet<(usize, usize, u64, u64)> = HashSet::new();
    let (mut i, mut count) = (0, 0);
    while i < order.len() && !stop.load(Ordering::Relaxed) {
        let n = next.load(Ordering::Relaxed);
        if i < n {
            // Behind the tile threads: their blocks are read already.
            i = n;
            continue;
        }
        if i >= n + ahead {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // The keys from `i` to the end of their row of keys (of a strip), and the raster they
        // read with their halos.
        let mut end = i + 1;
        while end < order.len()
            && order[end].row == order[i].row
            && order[end].col == order[end - 1].col + 1
        {
            end += 1;
        }
        let targets: Vec<_> = order[i..end]
            .iter()
            .map(|&k| with_halo(plan, halo, k))
            .collect();
        i = end;
        for (s, info, how) in &sources {
            let Some((c0, r0, c1, r1)) = targets
                .iter()
                .filter_map(|t| window_for(&info.grid, &t.extent, 0.0))
                .reduce(|a, b| (a.0.min(b.0), a.1.min(b.1), a.2.max(b.2), a.3.max(b.3)))
            else {
                continue;
            };
            let (bw, bh) = info.block_size;
            let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
            for by in r0 / bh..=(r1 - 1) / bh {
                match how {
                    Ahead::Cache => {
                        // The blocks not read yet, in runs that lie together.
                        let mut bx = c0 / bw;
                        while bx <= (c1 - 1) / bw {
                            if !requested.insert((*s, 1, bx, by)) {
                                bx += 1;
                                continue;
                            }
                            let mut run_end = bx + 1;
                            while run_end <= (c1 - 1) / bw && requested.insert((*s, 1, run_end, by))
                            {
                                run_end += 1;
                            }
                            count += cache.read_ahead(*s, by, bx..run_end);
                            bx = run_end;
                        }
                    }
                    Ahead::Advise(index, file) => {
                        for bx in c0 / bw..=(c1 - 1) / bw {
                            for &band in &plan.bands {
                                if !requested.insert((*s, band, bx, by)) {
                                    continue;
                                }
                                if let Some((offset, len)) = index.block(band, bx, by) {
                                    will_need(file, offset, len);
                                    count += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    count
}

/// Asks the kernel to read `len` bytes at `offset` of `file` into the page cache, without
/// waiting for them. Advice: a failure changes nothing but speed.
fn will_need(file: &std::fs::File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: an open file descriptor that `file` keeps open for the call; the call reads
    // nothing from this process's memory.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, plan_ingest};
    use crate::synth::write_test_dsm;

    #[test]
    fn the_blocks_of_the_keys_ahead_are_requested_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        write_test_dsm(&path, 1000, 600);
        let plan = plan_ingest(&[path.display().to_string()], &IngestOptions::default()).unwrap();
        let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let keys = &super::super::traversal(&plan, 40, &plan.keys);
        // Through GDAL: the kernel is asked for the blocks.
        let cache = BlockCache::new(64 << 20);
        // Every key ahead, with a halo: each of the 4 x 3 blocks once.
        assert_eq!(
            follow(&plan, 40, keys, &next, &stop, keys.len(), &cache),
            12
        );
        // The tile threads past the first row of keys: only the blocks of the rows after it.
        next.store(4, Ordering::Relaxed);
        assert_eq!(follow(&plan, 0, keys, &next, &stop, keys.len(), &cache), 8);
        // Stopped: nothing.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(follow(&plan, 0, keys, &next, &stop, keys.len(), &cache), 0);
    }

    #[test]
    fn blocks_read_ahead_into_the_cache_are_each_read_once_and_decoded_from_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsm.tif");
        write_test_dsm(&path, 1000, 600);
        let plan = plan_ingest(&[path.display().to_string()], &IngestOptions::default()).unwrap();
        let cache = BlockCache::new(64 << 20).reading(plan.sources.iter().map(|s| Some(&s.info)));
        assert!(
            cache.direct(0).is_some(),
            "a plain GeoTIFF is read without GDAL"
        );
        let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let keys = &super::super::traversal(&plan, 40, &plan.keys);
        // Each of the 4 x 3 blocks once, in a read per block row of each row of keys.
        assert_eq!(
            follow(&plan, 40, keys, &next, &stop, keys.len(), &cache),
            12
        );
        assert_eq!(cache.read_ahead_pending(), 12);
        // The tiles' windows, read through the cache, take every block's bytes read ahead and
        // give GDAL's cells.
        let src = crate::source::GdalSource::open(path.to_str().unwrap()).unwrap();
        for &key in keys {
            let t = with_halo(&plan, 40, key);
            let (c0, r0, c1, r1) = window_for(&plan.sources[0].info.grid, &t.extent, 0.0).unwrap();
            let (cols, rows) = ((c1 - c0) as usize, (r1 - r0) as usize);
            let got = cache
                .read_window(0, &src, 1, (c0, r0), (cols, rows))
                .unwrap();
            let want = src.read_window::<f64>(1, c0, r0, cols, rows).unwrap();
            assert_eq!(got, want, "key {key:?}");
        }
        assert_eq!(cache.read_ahead_pending(), 0);
        assert_eq!(cache.decoded(), 12);
    }
}
