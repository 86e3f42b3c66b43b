//! The codec: zstd frames decoded as streams or into the ring of step buffers that map tasks
//! fold from, with pooled decoder contexts.

use std::io::{BufRead, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective};

use crate::error::{Error, Result};

use super::storage::*;

/// The smallest segment of a [`StepRing`]: a few MB, folded while still in the cache.
pub(super) const SEGMENT_BYTES: usize = 4 << 20;
/// Segments in a ring: one decoded into, one read by the fold, one coming back.
pub(super) const RING_SEGMENTS: usize = 3;

/// Where a task decodes chunks of whole steps: one buffer of three segments of a few MB (each
/// at least a zstd window and a step), decoded into front to back and around again (zstd's
/// round buffer), instead of a buffer of a whole chunk (58 MB for a month of the bench's
/// grid). zstd's history is contiguous but where the decoder comes back to the front. The fold
/// reads steps through [`ChunkView`]s that hold the segments they lie in, and a segment is
/// decoded into again only when no view holds it.
pub(crate) struct StepRing {
    /// Values per step.
    pub(super) step: usize,
    /// The smallest segment, in bytes.
    pub(super) floor: usize,
    pub(super) buffer: Option<Arc<ChunkBuffer>>,
    /// Values per segment.
    pub(super) seg: usize,
    /// One per segment; a view holds a clone of each segment it reads.
    pub(super) held: Vec<Arc<()>>,
    /// The segment the next chunk starts in: the one after the last chunk's last.
    pub(super) resume: usize,
}

/// A chunk's progress through a [`StepRing`].
pub(super) struct RingPos {
    /// Bytes of the buffer decoded to.
    pub(super) pos: usize,
    /// The chunk step that starts at value `base` of the buffer, and how many steps from it
    /// have been given out.
    pub(super) first: usize,
    pub(super) base: usize,
    pub(super) told: usize,
    /// The last segment reclaimed in this pass through the buffer.
    pub(super) owned: usize,
}

impl StepRing {
    pub(crate) fn new(step: usize) -> StepRing {
        StepRing::with_floor(step, SEGMENT_BYTES)
    }

    pub(super) fn with_floor(step: usize, floor: usize) -> StepRing {
        StepRing {
            step,
            floor,
            buffer: None,
            seg: 0,
            held: Vec::new(),
            resume: 0,
        }
    }

    /// Starts a chunk in the segment after the last chunk's (segments of at least
    /// `seg_values`), once `reclaim` says no view holds it (`None` when it gives up).
    pub(super) fn begin(
        &mut self,
        seg_values: usize,
        reclaim: &mut impl FnMut(&Arc<()>) -> bool,
    ) -> Option<RingPos> {
        if self.buffer.is_none() || self.seg < seg_values {
            // Views of the old buffer keep it alive; it returns to the pool with the last.
            self.seg = seg_values;
            self.buffer = Some(Arc::new(ChunkBuffer::new(RING_SEGMENTS * seg_values)));
            self.held = (0..RING_SEGMENTS).map(|_| Arc::new(())).collect();
            self.resume = 0;
        } else if !reclaim(&self.held[self.resume]) {
            return None;
        }
        let s = self.resume;
        Some(RingPos {
            pos: s * self.seg * 4,
            first: 0,
            base: s * self.seg,
            told: 0,
            owned: s,
        })
    }

    /// Gives out the chunk's last steps; the next chunk starts in the following segment.
    pub(super) fn finish(
        &mut self,
        at: &mut RingPos,
        emit: &mut impl FnMut(Range<usize>, ChunkView) -> bool,
    ) {
        self.give(at, emit);
        self.resume = (at.pos.max(1) - 1) / (self.seg * 4).max(1) + 1;
        self.resume %= RING_SEGMENTS;
    }

    /// Makes `want` bytes from `at.pos` free to write: reclaims the segments they reach into,
    /// giving out the steps decoded whole before waiting; at the end of the buffer, carries
    /// the step being decoded to the front. `None`: stopped by `emit` or `reclaim`.
    pub(super) fn room(
        &mut self,
        at: &mut RingPos,
        want: usize,
        reclaim: &mut impl FnMut(&Arc<()>) -> bool,
        emit: &mut impl FnMut(Range<usize>, ChunkView) -> bool,
    ) -> Option<()> {
        let seg_bytes = self.seg * 4;
        if at.pos + want > RING_SEGMENTS * seg_bytes {
            self.give(at, emit)?;
            if !reclaim(&self.held[0]) {
                return None;
            }
            let from = (at.base + at.told * self.step) * 4;
            let tail = at.pos - from;
            let buffer = self.buffer.as_ref()?;
            // SAFETY: the tail is decoded, is less than a step and lies in the last segment;
            // the first segment, which it goes to, has no reader and holds more than a step.
            unsafe {
                let base = buffer.as_ptr().cast::<u8>();
                std::ptr::copy_nonoverlapping(base.add(from), base, tail);
            }
            at.first += at.told;
            (at.base, at.told, at.pos, at.owned) = (0, 0, tail, 0);
            return Some(());
        }
        let last = (at.pos + want).saturating_sub(1) / seg_bytes;
        while at.owned < last {
            self.give(at, emit)?;
            at.owned += 1;
            if !reclaim(&self.held[at.owned]) {
                return None;
            }
        }
        Some(())
    }

    /// Gives the steps decoded whole since the last call to `emit`.
    pub(super) fn give(
        &self,
        at: &mut RingPos,
        emit: &mut impl FnMut(Range<usize>, ChunkView) -> bool,
    ) -> Option<()> {
        let whole = (at.pos / 4 - at.base) / self.step;
        if whole > at.told {
            let buffer = self.buffer.as_ref()?;
            let values = at.base + at.told * self.step..at.base + whole * self.step;
            let segments = values.start / self.seg..=(values.end - 1) / self.seg;
            let view = ChunkView {
                buffer: buffer.clone(),
                _segments: self.held[segments].to_vec(),
                range: values,
            };
            if !emit(at.first + at.told..at.first + whole, view) {
                return None;
            }
            at.told = whole;
        }
        Some(())
    }

    /// The start of the free bytes in the buffer.
    pub(super) fn at(&self, at: &RingPos) -> Option<*mut u8> {
        // SAFETY: `pos` lies inside the buffer.
        Some(unsafe { self.buffer.as_ref()?.as_ptr().cast::<u8>().add(at.pos) })
    }
}

/// `need` bytes of `input` in one slice (copied to `staging` when they straddle two read
/// blocks) given to `f`; `None` when the file ends first.
pub(super) fn with_input<T>(
    input: &mut Prefetch,
    staging: &mut Vec<u8>,
    need: usize,
    f: impl FnOnce(&[u8]) -> T,
) -> std::io::Result<Option<T>> {
    let data = input.fill_buf()?;
    if data.len() >= need {
        let out = f(&data[..need]);
        input.consume(need);
        return Ok(Some(out));
    }
    staging.clear();
    while staging.len() < need {
        let data = input.fill_buf()?;
        if data.is_empty() {
            return Ok(None);
        }
        let k = (need - staging.len()).min(data.len());
        staging.extend_from_slice(&data[..k]);
        input.consume(k);
    }
    Ok(Some(f(staging)))
}

/// A buffer one thread decodes into, front to back, while other threads read the steps
/// already decoded through [`ChunkView`]s. It is decoded into again only when no view is left
/// (`Arc::strong_count` is 1 but for the holder's).
pub(crate) struct ChunkBuffer {
    pub(super) values: Box<[std::cell::UnsafeCell<f32>]>,
}

// SAFETY: the decoder writes only past every view's range, and views only read; a buffer is
// decoded into again only when no view is left (the contract of `decode_chunk` and `view`).
unsafe impl Sync for ChunkBuffer {}
// SAFETY: the buffer owns plain f32 values.
unsafe impl Send for ChunkBuffer {}

/// Memory of dropped buffers, for the next task (faulted in once).
pub(super) static CHUNK_BUFFERS: Mutex<Vec<Box<[std::cell::UnsafeCell<f32>]>>> =
    Mutex::new(Vec::new());
/// At most this many are kept: a ring for each task running at once.
pub(super) const KEPT_CHUNK_BUFFERS: usize = 2;

impl ChunkBuffer {
    pub(crate) fn new(len: usize) -> ChunkBuffer {
        let mut kept = lock(&CHUNK_BUFFERS);
        if let Some(i) = kept.iter().position(|b| b.len() == len) {
            return ChunkBuffer {
                values: kept.swap_remove(i),
            };
        }
        drop(kept);
        let mut values: Vec<std::cell::UnsafeCell<f32>> = Vec::with_capacity(len);
        // Backed by transparent huge pages where the kernel can, advised before the first
        // touch: a few page faults instead of one per 4 KB.
        let (ptr, bytes) = (values.as_ptr() as usize, len * 4);
        let page = 4096;
        let start = ptr.next_multiple_of(page);
        let end = (ptr + bytes) / page * page;
        if end > start {
            // SAFETY: the advised range lies inside the allocation; the advice only changes
            // how the kernel backs it.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
        values.extend((0..len).map(|_| std::cell::UnsafeCell::new(0.0)));
        ChunkBuffer {
            values: values.into_boxed_slice(),
        }
    }

    pub(super) fn as_ptr(&self) -> *mut f32 {
        // UnsafeCell<f32> has f32's layout; writing through the pointer is allowed.
        std::cell::UnsafeCell::raw_get(self.values.as_ptr())
    }
}

impl Drop for ChunkBuffer {
    fn drop(&mut self) {
        let values = std::mem::take(&mut self.values);
        let mut kept = lock(&CHUNK_BUFFERS);
        if !values.is_empty() && kept.len() < KEPT_CHUNK_BUFFERS {
            kept.push(values);
        }
    }
}

/// Decoded values of a [`ChunkBuffer`] that no one writes while the view lives (it holds the
/// segments of a [`StepRing`] it lies in).
pub(crate) struct ChunkView {
    pub(super) buffer: Arc<ChunkBuffer>,
    pub(super) range: Range<usize>,
    /// The ring's segments the values lie in, held (not read) while the view lives.
    pub(super) _segments: Vec<Arc<()>>,
}

impl ChunkView {
    /// The values `range` of this view (relative to its start), as a view of its own.
    pub(crate) fn narrow(self, range: Range<usize>) -> ChunkView {
        assert!(range.end <= self.range.len());
        ChunkView {
            range: self.range.start + range.start..self.range.start + range.end,
            ..self
        }
    }

    pub(crate) fn values(&self) -> &[f32] {
        // SAFETY: the range is inside the buffer and, by `view`'s contract, final while the
        // view lives; the values are read only.
        unsafe {
            std::slice::from_raw_parts(
                self.buffer.as_ptr().add(self.range.start).cast_const(),
                self.range.len(),
            )
        }
    }
}

/// A raw zstd decoding context, for the buffer-less API (`ZSTD_decompressBegin` starts each
/// frame afresh). Dropped, it goes back to a pool for the next chunk.
pub(super) struct RawContext(pub(super) *mut zstd::zstd_safe::zstd_sys::ZSTD_DCtx);

/// A pooled context's pointer.
pub(super) struct PooledContext(*mut zstd::zstd_safe::zstd_sys::ZSTD_DCtx);

// SAFETY: a pooled context is not in use; it moves to the thread that takes it.
unsafe impl Send for PooledContext {}

pub(super) static RAW_CONTEXTS: Mutex<Vec<PooledContext>> = Mutex::new(Vec::new());

impl RawContext {
    pub(super) fn new() -> Option<RawContext> {
        if let Some(PooledContext(ctx)) = lock(&RAW_CONTEXTS).pop() {
            return Some(RawContext(ctx));
        }
        // SAFETY: creating a context has no preconditions; it is checked for null.
        let ctx = unsafe { zstd::zstd_safe::zstd_sys::ZSTD_createDCtx() };
        (!ctx.is_null()).then_some(RawContext(ctx))
    }
}

impl Drop for RawContext {
    fn drop(&mut self) {
        let mut kept = lock(&RAW_CONTEXTS);
        if kept.len() < KEPT_CONTEXTS {
            kept.push(PooledContext(self.0));
        } else {
            // SAFETY: the context is valid, not used elsewhere, and freed once.
            unsafe { zstd::zstd_safe::zstd_sys::ZSTD_freeDCtx(self.0) };
        }
    }
}

/// One chunk file being decoded step by step.
pub(super) struct ChunkStream {
    /// The step (within the chunk) the next read yields.
    pub(super) next_step: usize,
    pub(super) reader: ChunkReader,
}

pub(super) enum ChunkReader {
    Raw(Prefetch),
    Zstd(ZstdStream),
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("next_step", &self.next_step)
            .finish()
    }
}

impl ChunkStream {
    pub(super) fn open(path: &Path, zstd: bool) -> Result<ChunkStream> {
        let blocks = Prefetch::start(path)
            .map_err(|e| Error::source(path.display().to_string(), format!("cannot open: {e}")))?;
        let reader = if zstd {
            ChunkReader::Zstd(ZstdStream::new(blocks))
        } else {
            ChunkReader::Raw(blocks)
        };
        Ok(ChunkStream {
            next_step: 0,
            reader,
        })
    }

    /// Fills `buf` with the next `steps` steps.
    pub(super) fn read_steps(&mut self, buf: &mut [u8], steps: usize) -> std::io::Result<()> {
        match &mut self.reader {
            ChunkReader::Raw(r) => r.read_exact(buf),
            ChunkReader::Zstd(r) => r.read_exact(buf),
        }
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(e.kind(), "the chunk is shorter than its shape (truncated?)")
            } else {
                e
            }
        })?;
        self.next_step += steps;
        Ok(())
    }
}

/// Decoding contexts of finished streams, kept for the next: a context holds a window of a
/// few MB, and fresh memory costs a page fault per 4 KB.
pub(super) static CONTEXTS: Mutex<Vec<DCtx<'static>>> = Mutex::new(Vec::new());
/// At most this many contexts are kept (two tasks, a few spatial chunks each).
pub(super) const KEPT_CONTEXTS: usize = 8;

/// The zstd frames of a chunk file, decoded as they are read.
pub(super) struct ZstdStream {
    pub(super) ctx: Option<DCtx<'static>>,
    pub(super) input: Prefetch,
    /// Between frames: the last call ended a frame (or none began).
    pub(super) at_frame_end: bool,
}

impl ZstdStream {
    pub(super) fn new(input: Prefetch) -> ZstdStream {
        let ctx = lock(&CONTEXTS).pop().unwrap_or_else(DCtx::create);
        ZstdStream {
            ctx: Some(ctx),
            input,
            at_frame_end: true,
        }
    }
}

impl Read for ZstdStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some(ctx) = self.ctx.as_mut() else {
            return Ok(0);
        };
        while !out.is_empty() {
            let data = self.input.fill_buf()?;
            if data.is_empty() {
                if self.at_frame_end {
                    return Ok(0);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let mut input = InBuffer::around(data);
            let mut output = OutBuffer::around(&mut *out);
            let hint = ctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|code| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        zstd::zstd_safe::get_error_name(code),
                    )
                })?;
            let (used, made) = (input.pos(), output.pos());
            self.input.consume(used);
            self.at_frame_end = hint == 0;
            if made > 0 {
                return Ok(made);
            }
        }
        Ok(0)
    }
}

impl Drop for ZstdStream {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let mut kept = lock(&CONTEXTS);
            if kept.len() < KEPT_CONTEXTS && ctx.reset(ResetDirective::SessionOnly).is_ok() {
                kept.push(ctx);
            }
        }
    }
}
