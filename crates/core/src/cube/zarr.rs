//! Local Zarr v2 sources read without GDAL, as streams.
//!
//! A Zarr v2 chunk is one zstd frame (or raw bytes) of a C-order box whose first dim is time,
//! so the frame decodes step by step: a map task reads a year of a variable through a window
//! of a few MB instead of holding decoded and compressed chunks of 60 + 45 MB (what GDAL's
//! whole-chunk reads cost). Each chunk file is read ahead on its own thread while the task
//! decodes, and read with `O_DIRECT` where it is not in the page cache (`mincore` says which
//! pages are; `RWF_NOWAIT` would start readahead as it asks): an archive is read once per
//! job, and filling the page cache with it costs more CPU than reading it (on the bench
//! machine 1.7 GB cold took 2.4 s, 1.7 s of it in the kernel, buffered; 1.2 s, 0.2 s direct).
//! Blocks the page cache holds are read from it.
//!
//! Arrays this does not cover (Zarr v3, other codecs, filters, F order, big-endian types) go
//! through GDAL as before.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, Read};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde_json::Value;
use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective};

use crate::error::{Error, Result};

/// Bytes read from a chunk file at a time; a stream keeps up to `DEPTH + 2` blocks.
const BLOCK: usize = 2 << 20;
const DEPTH: usize = 2;
/// `O_DIRECT` alignment of offsets, lengths and buffer addresses.
const ALIGN: usize = 4096;

/// An element type, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F4,
    F8,
    I1,
    U1,
    I2,
    U2,
    I4,
    U4,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        if !cfg!(target_endian = "little") {
            return None;
        }
        Some(match s {
            "<f4" => Dtype::F4,
            "<f8" => Dtype::F8,
            "|i1" => Dtype::I1,
            "|u1" => Dtype::U1,
            "<i2" => Dtype::I2,
            "<u2" => Dtype::U2,
            "<i4" => Dtype::I4,
            "<u4" => Dtype::U4,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::I1 | Dtype::U1 => 1,
            Dtype::I2 | Dtype::U2 => 2,
            Dtype::F4 | Dtype::I4 | Dtype::U4 => 4,
            Dtype::F8 => 8,
        }
    }

    /// Element `i` of `b`.
    fn get(self, b: &[u8], i: usize) -> f64 {
        let n = self.size();
        let e = &b[i * n..i * n + n];
        match self {
            Dtype::F4 => f64::from(f32::from_le_bytes([e[0], e[1], e[2], e[3]])),
            Dtype::F8 => f64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]),
            Dtype::I1 => f64::from(e[0] as i8),
            Dtype::U1 => f64::from(e[0]),
            Dtype::I2 => f64::from(i16::from_le_bytes([e[0], e[1]])),
            Dtype::U2 => f64::from(u16::from_le_bytes([e[0], e[1]])),
            Dtype::I4 => f64::from(i32::from_le_bytes([e[0], e[1], e[2], e[3]])),
            Dtype::U4 => f64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]])),
        }
    }
}

/// How stored values become the cube's: `NaN` where the value is the fill value, else
/// `value × scale + offset`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Convert {
    pub scale: f64,
    pub offset: f64,
    pub nodata: Option<f64>,
}

impl Convert {
    fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }

    fn value(&self, v: f64) -> f32 {
        if v.is_nan() || Some(v) == self.nodata {
            f32::NAN
        } else {
            (v * self.scale + self.offset) as f32
        }
    }

    /// Converts the stored run `src` (`dst.len()` elements) into `dst`.
    fn run(&self, dtype: Dtype, src: &[u8], dst: &mut [f32]) {
        if dtype == Dtype::F4 && self.is_identity() {
            let nd = self.nodata.filter(|n| !n.is_nan()).map(|n| n as f32);
            for (d, e) in dst.iter_mut().zip(src.chunks_exact(4)) {
                let v = f32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                *d = if Some(v) == nd { f32::NAN } else { v };
            }
        } else {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = self.value(dtype.get(src, i));
            }
        }
    }
}

/// A Zarr v2 array in a local directory that this module can read.
#[derive(Debug)]
pub(super) struct ZarrArray {
    dir: PathBuf,
    shape: Vec<usize>,
    chunks: Vec<usize>,
    dtype: Dtype,
    zstd: bool,
    separator: char,
    fill: f64,
    streams: std::cell::RefCell<HashMap<Vec<usize>, ChunkStream>>,
    scratch: std::cell::RefCell<Vec<u8>>,
}

/// The directory of a local Zarr group, from a source's GDAL path ([`gdal_path`]: a `/vsis3/`
/// path is no local directory, so S3 sources stay with GDAL).
///
/// [`gdal_path`]: crate::source::gdal_path
pub(super) fn local_group(path: &str) -> Option<PathBuf> {
    let dir = Path::new(path);
    (dir.join(".zgroup").is_file() || dir.join(".zmetadata").is_file()).then(|| dir.to_path_buf())
}

impl ZarrArray {
    /// The array `name` of the group at `group`, when its `.zarray` is one this module reads
    /// (v2, C order, no filters, zstd or no compressor, a little-endian number type).
    pub(super) fn open(group: &Path, name: &str) -> Option<ZarrArray> {
        let dir = group.join(name);
        let meta: Value = serde_json::from_slice(&std::fs::read(dir.join(".zarray")).ok()?).ok()?;
        let usizes = |k: &str| -> Option<Vec<usize>> {
            meta.get(k)?
                .as_array()?
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize))
                .collect()
        };
        let (shape, chunks) = (usizes("shape")?, usizes("chunks")?);
        let plain_filters = match meta.get("filters") {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        let zstd = match meta.get("compressor") {
            None | Some(Value::Null) => false,
            Some(c) if c.get("id").and_then(Value::as_str) == Some("zstd") => true,
            _ => return None,
        };
        let separator = match meta.get("dimension_separator").and_then(Value::as_str) {
            None | Some(".") => '.',
            Some("/") => '/',
            _ => return None,
        };
        let fill = match meta.get("fill_value") {
            Some(Value::Number(n)) => n.as_f64()?,
            Some(Value::String(s)) if s == "Infinity" => f64::INFINITY,
            Some(Value::String(s)) if s == "-Infinity" => f64::NEG_INFINITY,
            _ => f64::NAN,
        };
        let ok = meta.get("zarr_format").and_then(Value::as_u64) == Some(2)
            && meta.get("order").and_then(Value::as_str) == Some("C")
            && plain_filters
            && shape.len() >= 3
            && shape.len() == chunks.len()
            && chunks.iter().all(|&c| c > 0);
        let dtype = Dtype::parse(meta.get("dtype")?.as_str()?)?;
        ok.then(|| ZarrArray {
            dir,
            shape,
            chunks,
            dtype,
            zstd,
            separator,
            fill,
            streams: Default::default(),
            scratch: Default::default(),
        })
    }

    pub(super) fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn chunk_path(&self, index: &[usize]) -> PathBuf {
        let sep = self.separator.to_string();
        let key: Vec<String> = index.iter().map(|i| i.to_string()).collect();
        self.dir.join(key.join(&sep))
    }

    /// Reads steps `times` × every plane of the middle dims × file rows `rows` × all columns
    /// into `out` ([step][plane][row][column]; rows reversed with `flip_y`).
    pub(super) fn read(
        &self,
        times: Range<usize>,
        rows: Range<usize>,
        flip_y: bool,
        convert: Convert,
        out: &mut [f32],
    ) -> Result<()> {
        let nd = self.shape.len();
        let (h, w) = (rows.len(), self.shape[nd - 1]);
        let planes: usize = self.shape[1..nd - 2].iter().product();
        if out.len() != times.len() * planes * h * w
            || times.end > self.shape[0]
            || rows.end > self.shape[nd - 2]
        {
            return Err(Error::Internal(format!(
                "zarr read of {times:?} × {rows:?} into {} values",
                out.len()
            )));
        }
        if times.is_empty() || rows.is_empty() {
            return Ok(());
        }
        // The wanted box in array coordinates, past the time dim.
        let mut want: Vec<Range<usize>> = self.shape[1..].iter().map(|&n| 0..n).collect();
        want[nd - 3] = rows.clone();
        // Chunk indices along each dim past time that the box touches.
        let spans: Vec<Range<usize>> = want
            .iter()
            .zip(&self.chunks[1..])
            .map(|(r, &c)| r.start / c..r.end.div_ceil(c))
            .collect();
        let ct = self.chunks[0];
        let slab: usize = self.chunks[1..].iter().product::<usize>() * self.dtype.size();
        // One spatial chunk that is exactly the wanted box, f32 as stored: decode into `out`.
        let whole = self.dtype == Dtype::F4
            && convert.is_identity()
            && convert.nodata.is_none_or(f64::is_nan)
            && !flip_y
            && want
                .iter()
                .zip(&self.chunks[1..])
                .all(|(r, &c)| r.start == 0 && r.end == c);
        let mut streams = self.streams.borrow_mut();
        let mut scratch = self.scratch.borrow_mut();
        let mut kept = Vec::new();
        let step_len = planes * h * w;
        let dtype = self.dtype;
        for tc in times.start / ct..times.end.div_ceil(ct) {
            let s0 = times.start.max(tc * ct);
            let s1 = times.end.min((tc + 1) * ct);
            let dst0 = (s0 - times.start) * step_len;
            for rest in box_indices(&spans) {
                let mut index = vec![tc];
                index.extend(&rest);
                let path = self.chunk_path(&index);
                let dst = &mut out[dst0..dst0 + (s1 - s0) * step_len];
                let runs = self.runs(&rest, &want, flip_y);
                if !path.exists() {
                    let v = convert.value(self.fill);
                    for step in dst.chunks_mut(step_len) {
                        for r in &runs {
                            step[r.to..r.to + r.len].fill(v);
                        }
                    }
                    continue;
                }
                let first = s0 - tc * ct;
                let mut stream = match streams.remove(&index) {
                    Some(s) if s.next_step <= first => s,
                    _ => ChunkStream::open(&path, self.zstd)?,
                };
                let fail = |e: std::io::Error| {
                    Error::source(
                        path.display().to_string(),
                        format!("cannot decode the Zarr chunk: {e}"),
                    )
                };
                scratch.resize(slab, 0);
                while stream.next_step < first {
                    stream.read_steps(&mut scratch, 1).map_err(fail)?;
                }
                if whole {
                    // SAFETY: any bit pattern is a valid f32, and the byte view covers exactly
                    // `dst`'s memory while `dst` is not otherwise used.
                    let bytes = unsafe {
                        std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), dst.len() * 4)
                    };
                    stream.read_steps(bytes, s1 - s0).map_err(fail)?;
                } else {
                    for step in dst.chunks_mut(step_len) {
                        stream.read_steps(&mut scratch, 1).map_err(fail)?;
                        for r in &runs {
                            let n = r.len * dtype.size();
                            let src = &scratch[r.at * dtype.size()..][..n];
                            convert.run(dtype, src, &mut step[r.to..r.to + r.len]);
                        }
                    }
                }
                // A stream with steps past this read stays open for the next read.
                if s1 == times.end && stream.next_step < ct {
                    streams.insert(index.clone(), stream);
                    kept.push(index);
                }
            }
        }
        streams.retain(|k, _| kept.contains(k));
        Ok(())
    }

    /// The steps per chunk when every chunk holds whole steps (every plane, row and column) as
    /// f32 read unchanged (`convert` is the identity, rows in file order): then chunks decode
    /// straight into the segments of a [`StepRing`] with [`decode_chunk`](Self::decode_chunk).
    pub(super) fn whole_steps(&self, convert: &Convert, flip_y: bool) -> Option<usize> {
        (self.zstd
            && self.dtype == Dtype::F4
            && convert.is_identity()
            && convert.nodata.is_none_or(f64::is_nan)
            && !flip_y
            && self.chunks[1..] == self.shape[1..])
            .then_some(self.chunks[0])
    }

    /// The values of one step.
    pub(super) fn step_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Decodes time chunk `tc` (of [`whole_steps`](Self::whole_steps) steps) in order into
    /// `ring`, calling `emit(steps, view)` as steps of the chunk become final; `emit`
    /// returning false stops early. `reclaim` waits until no view holds a segment about to be
    /// decoded into again (false: stop).
    ///
    /// zstd's buffer-less API decodes each block straight into the ring, so no decoded byte is
    /// copied but the part of a step at the end of the ring (it goes to the front). The ring's
    /// segments hold at least a zstd window each, so back-references never reach a segment
    /// being decoded into again. A missing chunk is the fill value.
    pub(super) fn decode_chunk(
        &self,
        tc: usize,
        ring: &mut StepRing,
        mut reclaim: impl FnMut(&Arc<()>) -> bool,
        mut emit: impl FnMut(Range<usize>, ChunkView) -> bool,
    ) -> Result<()> {
        use zstd::zstd_safe::zstd_sys as z;
        let step = self.step_len();
        let ct = self.chunks[0];
        if ring.step != step {
            return Err(Error::Internal(format!(
                "a ring of {}-value steps for steps of {step}",
                ring.step
            )));
        }
        let step_bytes = step * 4;
        let chunk_bytes = ct * step_bytes;
        // The largest piece written at once: a zstd block at most.
        const PIECE: usize = 128 << 10;
        let segment = |window: usize| {
            (window + step_bytes + 2 * PIECE)
                .max(ring.floor)
                .min(chunk_bytes)
                .div_ceil(4)
        };
        let mut index = vec![tc];
        index.extend(self.shape[1..].iter().map(|_| 0));
        let path = self.chunk_path(&index);
        if !path.exists() {
            let Some(mut at) = ring.begin(segment(0), &mut reclaim) else {
                return Ok(());
            };
            let mut left = chunk_bytes;
            while left > 0 {
                let n = PIECE.min(left);
                if ring.room(&mut at, n, &mut reclaim, &mut emit).is_none() {
                    return Ok(());
                }
                let fill = (self.fill as f32).to_le_bytes();
                let Some(dst) = ring.at(&at) else {
                    return Ok(());
                };
                // SAFETY: `room` made the n bytes at `dst` free of readers; n is a multiple
                // of 4 (whole values).
                unsafe {
                    for i in (0..n).step_by(4) {
                        std::ptr::copy_nonoverlapping(fill.as_ptr(), dst.add(i), 4);
                    }
                }
                at.pos += n;
                left -= n;
            }
            ring.finish(&mut at, &mut emit);
            return Ok(());
        }
        let fail = |e: String| {
            Error::source(
                path.display().to_string(),
                format!("cannot decode the Zarr chunk: {e}"),
            )
        };
        let zstd_error = |code: usize| fail(zstd::zstd_safe::get_error_name(code).to_string());
        let truncated = || fail("the chunk is shorter than its shape (truncated?)".into());
        let mut input = Prefetch::start(&path).map_err(|e| fail(e.to_string()))?;
        let head = input.fill_buf().map_err(|e| fail(e.to_string()))?;
        // SAFETY: an all-zero header is a valid value for zstd to fill.
        let mut frame: z::ZSTD_FrameHeader = unsafe { std::mem::zeroed() };
        // SAFETY: `head` is readable for its length; zstd reads at most that.
        let code = unsafe { z::ZSTD_getFrameHeader(&mut frame, head.as_ptr().cast(), head.len()) };
        if unsafe { z::ZSTD_isError(code) } != 0 {
            return Err(zstd_error(code));
        }
        if code > 0 {
            return Err(truncated());
        }
        if frame.frameType != z::ZSTD_FrameType_e::ZSTD_frame {
            return Err(fail(
                "a skippable frame where a zstd frame should be".into(),
            ));
        }
        if frame.frameContentSize != z::ZSTD_CONTENTSIZE_UNKNOWN as u64
            && frame.frameContentSize != chunk_bytes as u64
        {
            return Err(fail(format!(
                "the chunk holds {} bytes, its shape {chunk_bytes}",
                frame.frameContentSize
            )));
        }
        let block_max = (frame.blockSizeMax as usize).clamp(1, PIECE);
        let window = usize::try_from(frame.windowSize)
            .unwrap_or(usize::MAX)
            .min(chunk_bytes);
        let ctx = RawContext::new().ok_or_else(|| fail("no zstd context".into()))?;
        // SAFETY: the context is valid; this starts a frame.
        let code = unsafe { z::ZSTD_decompressBegin(ctx.0) };
        if unsafe { z::ZSTD_isError(code) } != 0 {
            return Err(zstd_error(code));
        }
        let Some(mut at) = ring.begin(segment(window), &mut reclaim) else {
            return Ok(());
        };
        let mut total = 0;
        let mut staging = Vec::new();
        loop {
            // SAFETY: the context is valid.
            let need = unsafe { z::ZSTD_nextSrcSizeToDecompress(ctx.0) };
            if need == 0 {
                break;
            }
            // zstd writes a block (and may stage its literals) within the capacity it is given.
            let want = block_max.min(chunk_bytes - total);
            if ring.room(&mut at, want, &mut reclaim, &mut emit).is_none() {
                return Ok(());
            }
            let dst = ring.at(&at).ok_or_else(|| fail("no ring".into()))?;
            // SAFETY: `room` made `want` bytes at `dst` free of readers, and zstd refers back
            // only into bytes decoded since the front of the ring was last reclaimed (a
            // segment is at least a window); `src` is `need` readable bytes.
            let made = with_input(&mut input, &mut staging, need, |src| unsafe {
                z::ZSTD_decompressContinue(ctx.0, dst.cast(), want, src.as_ptr().cast(), src.len())
            })
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(truncated)?;
            if unsafe { z::ZSTD_isError(made) } != 0 {
                return Err(zstd_error(made));
            }
            at.pos += made;
            total += made;
        }
        if total != chunk_bytes {
            return Err(fail(format!(
                "the chunk holds {total} bytes, its shape {chunk_bytes}"
            )));
        }
        ring.finish(&mut at, &mut emit);
        Ok(())
    }

    /// The x-runs of the chunk at chunk index `rest` (past time) inside the wanted box.
    fn runs(&self, rest: &[usize], want: &[Range<usize>], flip_y: bool) -> Vec<Run> {
        let n = want.len();
        let origin: Vec<usize> = rest
            .iter()
            .zip(&self.chunks[1..])
            .map(|(i, c)| i * c)
            .collect();
        let spans: Vec<Range<usize>> = (0..n)
            .map(|d| want[d].start.max(origin[d])..want[d].end.min(origin[d] + self.chunks[d + 1]))
            .collect();
        if spans.iter().any(|s| s.is_empty()) {
            return Vec::new();
        }
        let (h, w) = (want[n - 2].len(), want[n - 1].len());
        let x = &spans[n - 1];
        box_indices(&spans[..n - 1])
            .into_iter()
            .map(|i| {
                let mut at = 0;
                for d in 0..n - 1 {
                    at = at * self.chunks[d + 1] + (i[d] - origin[d]);
                }
                at = at * self.chunks[n] + (x.start - origin[n - 1]);
                let mut plane = 0;
                for d in 0..n - 2 {
                    plane = plane * want[d].len() + (i[d] - want[d].start);
                }
                let y = i[n - 2] - want[n - 2].start;
                let row = if flip_y { h - 1 - y } else { y };
                Run {
                    at,
                    to: (plane * h + row) * w + (x.start - want[n - 1].start),
                    len: x.len(),
                }
            })
            .collect()
    }
}

/// The smallest segment of a [`StepRing`]: a few MB, folded while still in the cache.
const SEGMENT_BYTES: usize = 4 << 20;
/// Segments in a ring: one decoded into, one read by the fold, one coming back.
const RING_SEGMENTS: usize = 3;

/// Where a task decodes chunks of whole steps: one buffer of three segments of a few MB (each
/// at least a zstd window and a step), decoded into front to back and around again (zstd's
/// round buffer), instead of a buffer of a whole chunk (58 MB for a month of the bench's
/// grid). zstd's history is contiguous but where the decoder comes back to the front. The fold
/// reads steps through [`ChunkView`]s that hold the segments they lie in, and a segment is
/// decoded into again only when no view holds it.
pub(super) struct StepRing {
    /// Values per step.
    step: usize,
    /// The smallest segment, in bytes.
    floor: usize,
    buffer: Option<Arc<ChunkBuffer>>,
    /// Values per segment.
    seg: usize,
    /// One per segment; a view holds a clone of each segment it reads.
    held: Vec<Arc<()>>,
    /// The segment the next chunk starts in: the one after the last chunk's last.
    resume: usize,
}

/// A chunk's progress through a [`StepRing`].
struct RingPos {
    /// Bytes of the buffer decoded to.
    pos: usize,
    /// The chunk step that starts at value `base` of the buffer, and how many steps from it
    /// have been given out.
    first: usize,
    base: usize,
    told: usize,
    /// The last segment reclaimed in this pass through the buffer.
    owned: usize,
}

impl StepRing {
    pub(super) fn new(step: usize) -> StepRing {
        StepRing::with_floor(step, SEGMENT_BYTES)
    }

    fn with_floor(step: usize, floor: usize) -> StepRing {
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
    fn begin(
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
    fn finish(&mut self, at: &mut RingPos, emit: &mut impl FnMut(Range<usize>, ChunkView) -> bool) {
        self.give(at, emit);
        self.resume = (at.pos.max(1) - 1) / (self.seg * 4).max(1) + 1;
        self.resume %= RING_SEGMENTS;
    }

    /// Makes `want` bytes from `at.pos` free to write: reclaims the segments they reach into,
    /// giving out the steps decoded whole before waiting; at the end of the buffer, carries
    /// the step being decoded to the front. `None`: stopped by `emit` or `reclaim`.
    fn room(
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
    fn give(
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
    fn at(&self, at: &RingPos) -> Option<*mut u8> {
        // SAFETY: `pos` lies inside the buffer.
        Some(unsafe { self.buffer.as_ref()?.as_ptr().cast::<u8>().add(at.pos) })
    }
}

/// `need` bytes of `input` in one slice (copied to `staging` when they straddle two read
/// blocks) given to `f`; `None` when the file ends first.
fn with_input<T>(
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
pub(super) struct ChunkBuffer {
    values: Box<[std::cell::UnsafeCell<f32>]>,
}

// SAFETY: the decoder writes only past every view's range, and views only read; a buffer is
// decoded into again only when no view is left (the contract of `decode_chunk` and `view`).
unsafe impl Sync for ChunkBuffer {}
// SAFETY: the buffer owns plain f32 values.
unsafe impl Send for ChunkBuffer {}

/// Memory of dropped buffers, for the next task (faulted in once).
static CHUNK_BUFFERS: Mutex<Vec<Box<[std::cell::UnsafeCell<f32>]>>> = Mutex::new(Vec::new());
/// At most this many are kept: a ring for each task running at once.
const KEPT_CHUNK_BUFFERS: usize = 2;

impl ChunkBuffer {
    pub(super) fn new(len: usize) -> ChunkBuffer {
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

    fn as_ptr(&self) -> *mut f32 {
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
pub(super) struct ChunkView {
    buffer: Arc<ChunkBuffer>,
    range: Range<usize>,
    /// The ring's segments the values lie in, held (not read) while the view lives.
    _segments: Vec<Arc<()>>,
}

impl ChunkView {
    /// The values `range` of this view (relative to its start), as a view of its own.
    pub(super) fn narrow(self, range: Range<usize>) -> ChunkView {
        assert!(range.end <= self.range.len());
        ChunkView {
            range: self.range.start + range.start..self.range.start + range.end,
            ..self
        }
    }

    pub(super) fn values(&self) -> &[f32] {
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
struct RawContext(*mut zstd::zstd_safe::zstd_sys::ZSTD_DCtx);

/// A pooled context's pointer.
struct PooledContext(*mut zstd::zstd_safe::zstd_sys::ZSTD_DCtx);

// SAFETY: a pooled context is not in use; it moves to the thread that takes it.
unsafe impl Send for PooledContext {}

static RAW_CONTEXTS: Mutex<Vec<PooledContext>> = Mutex::new(Vec::new());

impl RawContext {
    fn new() -> Option<RawContext> {
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

/// A run of values along x: `len` elements from element `at` of a chunk's step slab to element
/// `to` of an output step.
#[derive(Debug, Clone, Copy)]
struct Run {
    at: usize,
    to: usize,
    len: usize,
}

/// Every index in the box `spans`, row-major.
fn box_indices(spans: &[Range<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for s in spans {
        out = out
            .into_iter()
            .flat_map(|p| {
                s.clone().map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

/// One chunk file being decoded step by step.
struct ChunkStream {
    /// The step (within the chunk) the next read yields.
    next_step: usize,
    reader: ChunkReader,
}

enum ChunkReader {
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
    fn open(path: &Path, zstd: bool) -> Result<ChunkStream> {
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
    fn read_steps(&mut self, buf: &mut [u8], steps: usize) -> std::io::Result<()> {
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
static CONTEXTS: Mutex<Vec<DCtx<'static>>> = Mutex::new(Vec::new());
/// At most this many contexts are kept (two tasks, a few spatial chunks each).
const KEPT_CONTEXTS: usize = 8;

/// The zstd frames of a chunk file, decoded as they are read.
struct ZstdStream {
    ctx: Option<DCtx<'static>>,
    input: Prefetch,
    /// Between frames: the last call ended a frame (or none began).
    at_frame_end: bool,
}

impl ZstdStream {
    fn new(input: Prefetch) -> ZstdStream {
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

/// A pool's lock; a pool is a cache, so a poisoned one is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A block of file bytes in an `O_DIRECT`-aligned window of a vector. Dropped blocks go back
/// to a pool ([`BLOCKS`]) for the next stream.
struct Block {
    data: Vec<u8>,
    start: usize,
    len: usize,
}

/// Buffers of dropped blocks.
static BLOCKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// At most this many are kept (two tasks' streams).
const KEPT_BLOCKS: usize = 4 * (DEPTH + 2);

impl Block {
    fn new() -> Block {
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
        Block {
            data,
            start,
            len: 0,
        }
    }

    fn window(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.start + BLOCK]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut kept = lock(&BLOCKS);
        if kept.len() < KEPT_BLOCKS {
            kept.push(std::mem::take(&mut self.data));
        }
    }
}

/// A file read ahead on its own thread, block by block, as a `BufRead`.
struct Prefetch {
    full: mpsc::Receiver<std::io::Result<Block>>,
    empty: mpsc::SyncSender<Block>,
    current: Option<Block>,
    pos: usize,
    done: bool,
}

impl Prefetch {
    fn start(path: &Path) -> std::io::Result<Prefetch> {
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
        let (empty, empty_rx) = mpsc::sync_channel::<Block>(DEPTH + 2);
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
                            Block::new()
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
fn read_block(
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

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(ALIGN)
}

/// Which pages of a file the page cache holds (one byte a page, bit 0 set when resident),
/// from `mincore` on a mapping that is never touched; `None` when that cannot be asked.
fn resident_pages(file: &File) -> Option<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a Zarr v2 array of `shape` in `chunks` whose element at index i is `value(i)`
    /// (flat C-order index), stored as `dtype`; chunks in `skip` are left out.
    fn write_array(
        dir: &Path,
        shape: &[usize],
        chunks: &[usize],
        dtype: &str,
        zstd: bool,
        skip: &[Vec<usize>],
        value: impl Fn(usize) -> f64,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let compressor = if zstd {
            r#"{"id": "zstd", "level": 1}"#
        } else {
            "null"
        };
        let meta = format!(
            r#"{{"zarr_format": 2, "shape": {shape:?}, "chunks": {chunks:?}, "dtype": "{dtype}",
                "order": "C", "filters": null, "fill_value": -9, "compressor": {compressor}}}"#
        );
        std::fs::write(dir.join(".zarray"), meta).unwrap();
        let grid: Vec<Range<usize>> = shape
            .iter()
            .zip(chunks)
            .map(|(&n, &c)| 0..n.div_ceil(c))
            .collect();
        for index in box_indices(&grid) {
            if skip.contains(&index) {
                continue;
            }
            let boxed: Vec<Range<usize>> = chunks.iter().map(|&c| 0..c).collect();
            let mut bytes = Vec::new();
            for local in box_indices(&boxed) {
                let global: Vec<usize> = local
                    .iter()
                    .zip(&index)
                    .zip(chunks)
                    .map(|((l, i), c)| i * c + l)
                    .collect();
                let inside = global.iter().zip(shape).all(|(g, n)| g < n);
                let flat = global.iter().zip(shape).fold(0, |a, (g, n)| a * n + g);
                let v = if inside { value(flat) } else { -9.0 };
                match dtype {
                    "<f4" => bytes.extend((v as f32).to_le_bytes()),
                    "<i2" => bytes.extend((v as i16).to_le_bytes()),
                    _ => unreachable!(),
                }
            }
            if zstd {
                bytes = zstd::bulk::compress(&bytes, 1).unwrap();
            }
            let key: Vec<String> = index.iter().map(|i| i.to_string()).collect();
            std::fs::write(dir.join(key.join(".")), bytes).unwrap();
        }
    }

    /// What `read` must give, from `value` directly.
    fn expected(
        shape: &[usize],
        times: Range<usize>,
        rows: Range<usize>,
        flip_y: bool,
        value: impl Fn(usize) -> f64,
    ) -> Vec<f32> {
        let n = shape.len();
        let planes: usize = shape[1..n - 2].iter().product();
        let (h, w) = (rows.len(), shape[n - 1]);
        let mut out = Vec::new();
        for t in times {
            for p in 0..planes {
                for r in 0..h {
                    let y = if flip_y {
                        rows.end - 1 - r
                    } else {
                        rows.start + r
                    };
                    for x in 0..w {
                        out.push(value(((t * planes + p) * shape[n - 2] + y) * w + x) as f32);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn streams_equal_the_array_in_any_chunking() {
        let tmp = tempfile::tempdir().unwrap();
        let shape = [7, 2, 9, 11];
        let value = |i: usize| (i as f64) * 0.5 - 3.0;
        let cases: [(&str, [usize; 4], bool); 4] = [
            ("a", [3, 1, 4, 5], true),
            ("b", [7, 2, 9, 11], true),
            ("c", [2, 2, 9, 4], false),
            ("d", [4, 1, 2, 11], true),
        ];
        for (name, chunks, zstd) in cases {
            let dir = tmp.path().join(name);
            write_array(&dir, &shape, &chunks, "<f4", zstd, &[], value);
            let a = ZarrArray::open(tmp.path(), name).unwrap();
            let id = Convert {
                scale: 1.0,
                offset: 0.0,
                nodata: None,
            };
            for (times, rows, flip) in [
                (0..7, 0..9, false),
                (1..6, 2..7, false),
                (2..3, 3..9, true),
                (0..7, 0..9, true),
            ] {
                let mut out = vec![0f32; times.len() * 2 * rows.len() * 11];
                a.read(times.clone(), rows.clone(), flip, id, &mut out)
                    .unwrap();
                let want = expected(&shape, times.clone(), rows.clone(), flip, value);
                assert_eq!(out, want, "{name} {times:?} {rows:?} flip {flip}");
            }
            // Consecutive pieces continue the open streams and give the same values.
            let mut whole = Vec::new();
            for piece in [0..2, 2..3, 3..7] {
                let mut out = vec![0f32; piece.len() * 2 * 9 * 11];
                a.read(piece, 0..9, false, id, &mut out).unwrap();
                whole.extend(out);
            }
            assert_eq!(
                whole,
                expected(&shape, 0..7, 0..9, false, value),
                "{name} pieces"
            );
        }
    }

    #[test]
    fn whole_chunks_decode_in_place_reporting_final_steps() {
        let tmp = tempfile::tempdir().unwrap();
        // Chunks of 400 steps × 60 × 60 (5.8 MB, so more than one report each) in 900 steps:
        // two full chunks and an edge chunk of 100 steps; chunk 1 is missing.
        let shape = [900, 60, 60];
        // Noise, so that the input arrives in several blocks and the decoding in several calls.
        let value = |i: usize| ((i * 2_654_435_761) % 1_000_003) as f64 / 7.0;
        write_array(
            &tmp.path().join("v"),
            &shape,
            &[400, 60, 60],
            "<f4",
            true,
            &[vec![1, 0, 0]],
            value,
        );
        let a = ZarrArray::open(tmp.path(), "v").unwrap();
        let id = Convert {
            scale: 1.0,
            offset: 0.0,
            nodata: None,
        };
        let scaled = Convert { scale: 2.0, ..id };
        assert_eq!(a.whole_steps(&id, false), Some(400));
        assert_eq!(a.whole_steps(&id, true), None);
        assert_eq!(a.whole_steps(&scaled, false), None);
        // Segments of a zstd window and a step (the floor is lifted for the test, and level 1
        // has 512 KB windows): a chunk of 5.8 MB goes round the ring of 2.3 MB twice, and the
        // next chunk starts where it ended.
        let mut ring = StepRing::with_floor(3600, 0);
        // The views given out are kept until the ring asks for their segment back; each must
        // still read what it read when given (the ring writes into no segment a view holds).
        let mut decode = |tc: usize, stop_after: usize| -> Result<(Vec<usize>, Vec<f32>)> {
            let mut reports = Vec::new();
            let mut got = Vec::new();
            let held: std::cell::RefCell<Vec<(ChunkView, Vec<f32>)>> = Default::default();
            let intact = |held: &[(ChunkView, Vec<f32>)]| {
                assert!(held.iter().all(|(v, seen)| v.values() == seen.as_slice()));
            };
            a.decode_chunk(
                tc,
                &mut ring,
                |segment| {
                    intact(&held.borrow());
                    held.borrow_mut()
                        .retain(|(v, _)| !v._segments.iter().any(|s| Arc::ptr_eq(s, segment)));
                    Arc::strong_count(segment) == 1
                },
                |steps, view| {
                    assert_eq!(
                        steps.start,
                        reports.last().copied().unwrap_or(0),
                        "in order"
                    );
                    assert_eq!(view.values().len(), steps.len() * 3600);
                    reports.push(steps.end);
                    got.extend_from_slice(view.values());
                    let seen = view.values().to_vec();
                    held.borrow_mut().push((view, seen));
                    reports.len() < stop_after
                },
            )?;
            intact(&held.borrow());
            Ok((reports, got))
        };
        for tc in 0..3 {
            let (reports, got) = decode(tc, usize::MAX).unwrap();
            let steps = 400.min(900 - tc * 400);
            assert_eq!(reports.last(), Some(&400));
            if tc == 1 {
                assert!(
                    got.iter().all(|&v| v == -9.0),
                    "a missing chunk is the fill"
                );
            } else {
                // A full chunk of noise goes through several segments.
                assert!(tc == 2 || reports.len() >= 3, "{reports:?}");
                let want = expected(&shape, tc * 400..tc * 400 + steps, 0..60, false, value);
                assert_eq!(&got[..steps * 3600], want.as_slice(), "chunk {tc}");
            }
        }
        // Stopping early leaves a context and a ring that the next chunk reuses cleanly.
        let (reports, _) = decode(0, 1).unwrap();
        assert_eq!(reports.len(), 1);
        let (_, got) = decode(2, usize::MAX).unwrap();
        let want = expected(&shape, 800..900, 0..60, false, value);
        assert_eq!(&got[..100 * 3600], want.as_slice());
        // A truncated chunk is an error naming it.
        let chunk = tmp.path().join("v").join("0.0.0");
        let bytes = std::fs::read(&chunk).unwrap();
        std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
        let e = decode(0, usize::MAX).unwrap_err().to_string();
        assert!(e.contains("0.0.0") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn integers_are_scaled_and_fill_and_missing_chunks_are_nan() {
        let tmp = tempfile::tempdir().unwrap();
        let shape = [4, 1, 6, 5];
        let value = |i: usize| {
            if i.is_multiple_of(7) {
                -9.0
            } else {
                (i % 50) as f64
            }
        };
        write_array(
            &tmp.path().join("v"),
            &shape,
            &[2, 1, 3, 5],
            "<i2",
            true,
            &[vec![1, 0, 1, 0]],
            value,
        );
        let a = ZarrArray::open(tmp.path(), "v").unwrap();
        let convert = Convert {
            scale: 0.5,
            offset: 100.0,
            nodata: Some(-9.0),
        };
        let mut out = vec![0f32; 4 * 6 * 5];
        a.read(0..4, 0..6, false, convert, &mut out).unwrap();
        for t in 0..4 {
            for y in 0..6 {
                for x in 0..5 {
                    let i = (t * 6 + y) * 5 + x;
                    let missing = t >= 2 && y >= 3;
                    let v = value(i);
                    let want = if missing || v == -9.0 {
                        f32::NAN
                    } else {
                        (v * 0.5 + 100.0) as f32
                    };
                    assert!(
                        out[i] == want || (out[i].is_nan() && want.is_nan()),
                        "{t} {y} {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_truncated_chunk_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        write_array(
            &tmp.path().join("v"),
            &[4, 1, 3, 3],
            &[4, 1, 3, 3],
            "<f4",
            true,
            &[],
            |i| i as f64,
        );
        let chunk = tmp.path().join("v").join("0.0.0.0");
        let bytes = std::fs::read(&chunk).unwrap();
        std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
        let a = ZarrArray::open(tmp.path(), "v").unwrap();
        let id = Convert {
            scale: 1.0,
            offset: 0.0,
            nodata: None,
        };
        let mut out = vec![0f32; 4 * 9];
        let e = a
            .read(0..4, 0..3, false, id, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.0.0.0") && e.contains("cannot decode"), "{e}");
    }

    #[test]
    fn unsupported_arrays_are_left_to_gdal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        std::fs::create_dir_all(&dir).unwrap();
        for meta in [
            r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "F", "filters": null, "fill_value": null, "compressor": null}"#,
            r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "C", "filters": null, "fill_value": null, "compressor": {"id": "blosc"}}"#,
            r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": ">f4", "order": "C", "filters": null, "fill_value": null, "compressor": null}"#,
            r#"{"zarr_format": 2, "shape": [2,3,3], "chunks": [2,3,3], "dtype": "<f4", "order": "C", "filters": [{"id": "delta"}], "fill_value": null, "compressor": null}"#,
        ] {
            std::fs::write(dir.join(".zarray"), meta).unwrap();
            assert!(ZarrArray::open(tmp.path(), "v").is_none(), "{meta}");
        }
    }
}
