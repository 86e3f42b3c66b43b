//! A task's source blocks read ahead of its tiles. Without it a cold file is read a block at a
//! time, as each is decoded, by tile threads that wait on the disk in turn (a cold 12000² DSM:
//! 0.3–0.8 s of a 3.5 s `tessera dem slope`). One thread follows the order the tile threads
//! take keys in, a few rows of keys ahead of them, and asks the kernel to read the blocks those
//! keys' windows will decode (`posix_fadvise(WILLNEED)`: asynchronous, into the page cache).
//! Only for local TIFFs (whose IFD says where each block is) on the layer's CRS; anything else
//! is read as before.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::IngestPlan;
use super::worker::{window_for, with_halo};
use crate::model::SpatialKey;
use crate::source::{BlockIndex, SourceInfo};

/// Follows the tile threads through `order` (they take key `next` next), keeping the blocks of
/// the `ahead` keys after it requested, until they are done or `stop` is set. Returns how many
/// blocks it requested.
pub(super) fn follow(
    plan: &IngestPlan,
    halo: usize,
    order: &[SpatialKey],
    next: &AtomicUsize,
    stop: &AtomicBool,
    ahead: usize,
) -> usize {
    let sources: Vec<(usize, &SourceInfo, BlockIndex, std::fs::File)> = plan
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.reproject)
        .filter_map(|(i, s)| {
            let path = s.info.url.strip_prefix("file://").unwrap_or(&s.info.url);
            // A local file, not an object or a /vsi path.
            let file = std::fs::File::open(path)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?;
            // A TIFF, whose blocks are where its IFD says.
            let grid = &s.info.grid;
            let index = BlockIndex::read(&file, (grid.cols, grid.rows), s.info.block_size)?;
            Some((i, &s.info, index, file))
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
        let target = with_halo(plan, halo, order[i]);
        i += 1;
        for (s, info, index, file) in &sources {
            let Some((c0, r0, c1, r1)) = window_for(&info.grid, &target.extent, 0.0) else {
                continue;
            };
            let (bw, bh) = info.block_size;
            let (bw, bh) = (bw.max(1) as u64, bh.max(1) as u64);
            for by in r0 / bh..=(r1 - 1) / bh {
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
        // Every key ahead, with a halo: each of the 4 x 3 blocks once.
        assert_eq!(follow(&plan, 40, keys, &next, &stop, keys.len()), 12);
        // The tile threads past the first row of keys: only the blocks of the rows after it.
        next.store(4, Ordering::Relaxed);
        assert_eq!(follow(&plan, 0, keys, &next, &stop, keys.len()), 8);
        // Stopped: nothing.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(follow(&plan, 0, keys, &next, &stop, keys.len()), 0);
    }
}
