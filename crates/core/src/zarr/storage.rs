//! Storage: chunk files read block by block on a read-ahead thread, with `O_DIRECT` where the
//! page cache does not hold them.

use std::fs::File;
use std::io::{BufRead, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, mpsc};

/// Bytes read from a chunk file at a time; a stream keeps up to `DEPTH + 2` blocks.
pub(super) const BLOCK: usize = 2 << 20;
pub(super) const DEPTH: usize = 2;
/// `O_DIRECT` alignment of offsets, lengths and buffer addresses.
pub(super) const ALIGN: usize = 4096;

/// A pool's lock; a pool is a cache, so a poisoned one is used as it is.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A block of file bytes in an `O_DIRECT`-aligned window of a vector. Dropped blocks go back
/// to a pool ([`BLOCKS`]) for the next stream.
pub(super) struct ReadBlock {
    pub(super) data: Vec<u8>,
    pub(super) start: usize,
    pub(super) len: usize,
}

/// Buffers of dropped blocks.
pub(super) static BLOCKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most this many are kept (two tasks' streams).
pub(super) const KEPT_BLOCKS: usize = 4 * (DEPTH + 2);

impl ReadBlock {
    pub(super) fn new() -> ReadBlock {
        let data = lock(&BLOCKS).pop().unwrap_or_else(|| {
            // Aligned to BLOCK, the window can be one transparent huge page: a direct read
            // then pins and completes one page instead of 512.
            let data = vec![0u8; 2 * BLOCK];
            let start = data.as_ptr().align_offset(BLOCK);
            // SAFETY: the advised range lies inside `data`'s allocation; the advice only
            // changes how the kernel backs it.
            unsafe {
                libc::madvise(
                    data.as_ptr().add(start).cast_mut().cast(),
                    BLOCK,
                    libc::MADV_HUGEPAGE,
                );
            }
            data
        });
        let start = data.as_ptr().align_offset(BLOCK);
        ReadBlock {
            data,
            start,
            len: 0,
        }
    }

    pub(super) fn window(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + BLOCK]
    }
}

impl Drop for ReadBlock {
    fn drop(&mut self) {
        let mut kept = lock(&BLOCKS);
        if kept.len() < KEPT_BLOCKS {
            kept.push(std::mem::take(&mut self.data));
        }
    }
}

/// A file read ahead on its own thread, block by block, as a `BufRead`.
pub(super) struct Prefetch {
    pub(super) full: mpsc::Receiver<std::io::Result<ReadBlock>>,
    pub(super) empty: mpsc::SyncSender<ReadBlock>,
    pub(super) current: Option<ReadBlock>,
    pub(super) pos: usize,
    pub(super) done: bool,
}

impl Prefetch {
    pub(super) fn start(path: &Path) -> std::io::Result<Prefetch> {
        let buffered = File::open(path)?;
        // tmpfs and some file systems refuse O_DIRECT: then everything is read buffered.
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let resident = if direct.is_some() {
            resident_pages(&buffered)
        } else {
            None
        };
        let page = page_size();
        let (full_tx, full) = mpsc::sync_channel(DEPTH);
        let (empty, empty_rx) = mpsc::sync_channel::<ReadBlock>(DEPTH + 2);
        std::thread::Builder::new()
            .name("tessera-prefetch".into())
            .spawn(move || {
                let mut made = 0;
                let mut offset = 0u64;
                loop {
                    let mut block = match empty_rx.try_recv() {
                        Ok(b) => b,
                        Err(_) if made < DEPTH + 2 => {
                            made += 1;
                            ReadBlock::new()
                        }
                        Err(_) => match empty_rx.recv() {
                            Ok(b) => b,
                            Err(_) => return,
                        },
                    };
                    // Cached when every page of the block is (or when residency is unknown).
                    let first = offset as usize / page;
                    let cached = resident.as_ref().is_none_or(|r| {
                        r.iter().skip(first).take(BLOCK / page).all(|p| p & 1 == 1)
                    });
                    match read_block(&buffered, direct.as_ref(), cached, block.window(), offset) {
                        Ok(n) => {
                            block.len = n;
                            offset += n as u64;
                            let last = n < BLOCK;
                            if full_tx.send(Ok(block)).is_err() || last {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return;
                        }
                    }
                }
            })?;
        Ok(Prefetch {
            full,
            empty,
            current: None,
            pos: 0,
            done: false,
        })
    }
}

/// Reads `buf.len()` bytes at `offset` (fewer at the end of the file): through the page cache
/// when it holds them (`cached`), else directly when `direct` is open.
pub(super) fn read_block(
    buffered: &File,
    direct: Option<&File>,
    cached: bool,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let (file, is_direct) = match direct {
        Some(d) if !cached => (d, true),
        _ => (buffered, false),
    };
    let mut n = 0;
    while n < buf.len() {
        let k = file.read_at(&mut buf[n..], offset + n as u64)?;
        if k == 0 {
            break;
        }
        n += k;
        // A direct read ends short only at the end of the file.
        if is_direct && k % ALIGN != 0 {
            break;
        }
    }
    Ok(n)
}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(ALIGN)
}

/// Which pages of a file the page cache holds (one byte a page, bit 0 set when resident),
/// from `mincore` on a mapping that is never touched; `None` when that cannot be asked.
pub(super) fn resident_pages(file: &File) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if len == 0 {
        return Some(Vec::new());
    }
    // SAFETY: a read-only shared mapping of the whole file is made, queried and unmapped; its
    // memory is never read, so no page is faulted in, and `pages` has one byte per page.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return None;
        }
        let mut pages = vec![0u8; len.div_ceil(page_size())];
        let ok = libc::mincore(map, len, pages.as_mut_ptr()) == 0;
        libc::munmap(map, len);
        ok.then_some(pages)
    }
}

impl Read for Prefetch {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Prefetch {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let spent = self.current.as_ref().is_none_or(|b| self.pos >= b.len);
        if spent && !self.done {
            if let Some(b) = self.current.take() {
                let _ = self.empty.try_send(b);
            }
            match self.full.recv() {
                Ok(Ok(b)) => {
                    self.done = b.len < BLOCK;
                    self.current = Some(b);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => self.done = true,
            }
        }
        Ok(match &self.current {
            Some(b) => &b.data[b.start + self.pos..b.start + b.len],
            None => &[],
        })
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}
