//! Array indexing: a Zarr v2 array in a local directory (its `.zarray`, element types, fill
//! value and scaling), which chunks and runs of bytes a box of it takes, and decoding whole
//! chunks in place.

use std::collections::HashMap;
use std::io::BufRead;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};

use super::codec::*;
use super::storage::*;

/// An element type, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dtype {
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
    pub(super) fn parse(s: &str) -> Option<Dtype> {
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

    pub(super) fn size(self) -> usize {
        match self {
            Dtype::I1 | Dtype::U1 => 1,
            Dtype::I2 | Dtype::U2 => 2,
            Dtype::F4 | Dtype::I4 | Dtype::U4 => 4,
            Dtype::F8 => 8,
        }
    }

    /// Element `i` of `b`.
    pub(super) fn get(self, b: &[u8], i: usize) -> f64 {
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
pub(crate) struct Convert {
    pub scale: f64,
    pub offset: f64,
    pub nodata: Option<f64>,
}

impl Convert {
    pub(super) fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }

    pub(super) fn value(&self, v: f64) -> f32 {
        if v.is_nan() || Some(v) == self.nodata {
            f32::NAN
        } else {
            (v * self.scale + self.offset) as f32
        }
    }

    /// Converts the stored run `src` (`dst.len()` elements) into `dst`.
    pub(super) fn run(&self, dtype: Dtype, src: &[u8], dst: &mut [f32]) {
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
pub(crate) struct ZarrArray {
    pub(super) dir: PathBuf,
    pub(super) shape: Vec<usize>,
    pub(super) chunks: Vec<usize>,
    pub(super) dtype: Dtype,
    pub(super) zstd: bool,
    pub(super) separator: char,
    pub(super) fill: f64,
    pub(super) streams: std::cell::RefCell<HashMap<Vec<usize>, ChunkStream>>,
    pub(super) scratch: std::cell::RefCell<Vec<u8>>,
}

/// The directory of a local Zarr group, from a source's GDAL path ([`gdal_path`]: a `/vsis3/`
/// path is no local directory, so S3 sources stay with GDAL).
///
/// [`gdal_path`]: crate::source::gdal_path
pub(crate) fn local_group(path: &str) -> Option<PathBuf> {
    let dir = Path::new(path);
    (dir.join(".zgroup").is_file() || dir.join(".zmetadata").is_file()).then(|| dir.to_path_buf())
}

impl ZarrArray {
    /// The array `name` of the group at `group`, when its `.zarray` is one this module reads
    /// (v2, C order, no filters, zstd or no compressor, a little-endian number type).
    pub(crate) fn open(group: &Path, name: &str) -> Option<ZarrArray> {
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

    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub(super) fn chunk_path(&self, index: &[usize]) -> PathBuf {
        let sep = self.separator.to_string();
        let key: Vec<String> = index.iter().map(|i| i.to_string()).collect();
        self.dir.join(key.join(&sep))
    }

    /// Reads steps `times` × every plane of the middle dims × file rows `rows` × all columns
    /// into `out` ([step][plane][row][column]; rows reversed with `flip_y`).
    pub(crate) fn read(
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
    pub(crate) fn whole_steps(&self, convert: &Convert, flip_y: bool) -> Option<usize> {
        (self.zstd
            && self.dtype == Dtype::F4
            && convert.is_identity()
            && convert.nodata.is_none_or(f64::is_nan)
            && !flip_y
            && self.chunks[1..] == self.shape[1..])
            .then_some(self.chunks[0])
    }

    /// The values of one step.
    pub(crate) fn step_len(&self) -> usize {
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
    pub(crate) fn decode_chunk(
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
        // SAFETY: `ZSTD_isError` only inspects the integer it is given.
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
        // SAFETY: `ZSTD_isError` only inspects the integer it is given.
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
            // SAFETY: `ZSTD_isError` only inspects the integer it is given.
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
    pub(super) fn runs(&self, rest: &[usize], want: &[Range<usize>], flip_y: bool) -> Vec<Run> {
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

/// A run of values along x: `len` elements from element `at` of a chunk's step slab to element
/// `to` of an output step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub(super) at: usize,
    pub(super) to: usize,
    pub(super) len: usize,
}

/// Every index in the box `spans`, row-major.
pub(super) fn box_indices(spans: &[Range<usize>]) -> Vec<Vec<usize>> {
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
