//! A GeoTIFF's first image, block by block.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::append::{DIRECT_ALIGN, aligned};
use crate::codec::{Codec, undo_predictor};
use crate::ifd::{Directory, read_some};
use crate::{
    GEO_ASCII_PARAMS, GEO_DOUBLE_PARAMS, GEO_KEY_DIRECTORY, GeoTags, MODEL_PIXEL_SCALE,
    MODEL_TIEPOINT, MODEL_TRANSFORMATION, Result, SampleType, TagValues, corrupt, unsupported,
};

/// GDAL's NoData tag: the value as ASCII.
pub(crate) const GDAL_NODATA: u16 = 42113;

/// The largest block this reader decodes: a whole-image strip of a wide raster is GDAL's.
const MAX_BLOCK_BYTES: u64 = 256 << 20;

/// One band of a GeoTIFF opened for reading.
#[derive(Debug)]
pub struct Tiff {
    file: File,
    path: PathBuf,
    /// The file opened for direct reads, once asked for (`None`: the system refused).
    direct: std::sync::OnceLock<Option<File>>,
    pub width: u64,
    pub height: u64,
    pub sample: SampleType,
    /// Cells per block (width, height): the tile, or the image's width by rows per strip.
    pub block: (u64, u64),
    tiled: bool,
    codec: Codec,
    predictor: u64,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    /// NoData as GDAL reads it from the file.
    pub nodata: Option<f64>,
    pub geo: GeoTags,
}

/// A decoded block: its cells in the file's type, little-endian, rows of `width` cells.
#[derive(Debug)]
pub struct Block {
    pub width: usize,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

impl Tiff {
    /// Opens `path`'s first image; [`Error::Unsupported`](crate::Error::Unsupported) when it is
    /// a TIFF that this reader leaves to GDAL.
    pub fn open(path: &Path) -> Result<Tiff> {
        let file = File::open(path)?;
        let dir = Directory::first(&file)?;
        image(file, path, &dir)
    }

    /// Blocks across and down.
    pub fn blocks(&self) -> (u64, u64) {
        (
            self.width.div_ceil(self.block.0),
            self.height.div_ceil(self.block.1),
        )
    }

    /// Block (`bx`, `by`), decoded; blocks at the right and bottom edges are whole blocks, as
    /// TIFF stores them, except a last strip, which holds only the rows left.
    pub fn block(&self, bx: u64, by: u64) -> Result<Block> {
        let (across, down) = self.blocks();
        if bx >= across || by >= down {
            return Err(corrupt(format!("no block ({bx}, {by})")));
        }
        let i = (by * across + bx) as usize;
        let (offset, count) = (self.offsets[i], self.counts[i]);
        let mut raw = vec![0u8; count as usize];
        if read_some(&self.file, offset, &mut raw)? != raw.len() {
            return Err(corrupt(format!(
                "block {i} at {offset} is cut off by the end of the file"
            )));
        }
        self.decode_stored(by, &raw)
    }

    /// The block of row `by` whose stored bytes are `stored` (none: a sparse block), decoded.
    fn decode_stored(&self, by: u64, stored: &[u8]) -> Result<Block> {
        let (width, mut rows) = (self.block.0 as usize, self.block.1 as usize);
        if !self.tiled {
            // Strips: the last one holds the rows left.
            rows = rows.min((self.height - by * self.block.1) as usize);
        }
        let mut bytes = vec![0u8; width * rows * self.sample.bytes()];
        if !stored.is_empty() {
            self.codec.decode(stored, &mut bytes)?;
            undo_predictor(self.predictor, self.sample, width, &mut bytes)?;
        } else if self.nodata.is_some() {
            return Err(unsupported("sparse blocks with NoData"));
        }
        // (A sparse block without NoData: zeros, as GDAL reads it.)
        Ok(Block { width, rows, bytes })
    }

    /// The stored bytes of block row `by`, in one read where they lie together (as GDAL writes
    /// them), past the page cache if `direct` and the file system allows it (a cold file's
    /// bytes are then copied once, by the disk), into `buf` (a buffer to reuse: large fresh
    /// memory costs as much as the copy saved); [`decode`](Self::decode) makes the blocks of
    /// them. A reading thread can stay ahead of the decoding ones.
    pub fn read_row(&self, by: u64, direct: bool, buf: Vec<u8>) -> Result<RawRow> {
        self.read_blocks(by, 0..self.blocks().0, direct, buf)
    }

    /// [`read_row`](Self::read_row) for blocks `bxs` of block row `by` only: the part of a row
    /// that a window of the raster reads.
    pub fn read_blocks(
        &self,
        by: u64,
        bxs: std::ops::Range<u64>,
        direct: bool,
        mut buf: Vec<u8>,
    ) -> Result<RawRow> {
        let (across, down) = self.blocks();
        if by >= down || bxs.start >= bxs.end || bxs.end > across {
            return Err(corrupt(format!("no blocks {bxs:?} of block row {by}")));
        }
        let blocks = (by * across + bxs.start) as usize..(by * across + bxs.end) as usize;
        let first = bxs.start;
        let (offsets, counts) = (&self.offsets[blocks.clone()], &self.counts[blocks]);
        let stored = offsets.iter().zip(counts).filter(|(_, c)| **c > 0);
        let lo = stored.clone().map(|(o, _)| *o).min().unwrap_or(0);
        let hi = stored.clone().map(|(o, c)| o + c).max().unwrap_or(0);
        let sum: u64 = counts.iter().sum();
        // Together: the row's extent is not much more than its blocks.
        if lo < hi && hi - lo <= sum + sum / 8 + (1 << 20) && hi - lo <= 4 * MAX_BLOCK_BYTES {
            let (start, end) = (lo - lo % ALIGN, hi.div_ceil(ALIGN) * ALIGN);
            let len = (end - start) as usize;
            let at = aligned(&mut buf, len);
            let read = match direct.then(|| self.direct_file()).flatten() {
                Some(d) => match read_some(d, start, &mut buf[at..at + len]) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
                    r => Some(r?),
                },
                None => None,
            };
            let read = match read {
                Some(n) => n,
                None => read_some(&self.file, start, &mut buf[at..at + len])?,
            };
            if (read as u64) < hi - start {
                return Err(corrupt(format!(
                    "block row {by} is cut off by the end of the file"
                )));
            }
            let spans = offsets
                .iter()
                .zip(counts)
                .map(|(&o, &c)| match c {
                    0 => (0, 0),
                    c => (at + (o - start) as usize, c as usize),
                })
                .collect();
            return Ok(RawRow {
                by,
                first,
                buf,
                spans,
            });
        }
        // Apart: block by block.
        buf.clear();
        let mut spans = Vec::with_capacity(offsets.len());
        for (i, (&o, &c)) in offsets.iter().zip(counts).enumerate() {
            let from = buf.len();
            buf.resize(from + c as usize, 0);
            if read_some(&self.file, o, &mut buf[from..])? != c as usize {
                return Err(corrupt(format!(
                    "block {} of row {by} at {o} is cut off by the end of the file",
                    first + i as u64
                )));
            }
            spans.push((from, c as usize));
        }
        Ok(RawRow {
            by,
            first,
            buf,
            spans,
        })
    }

    /// Block `bx` of `raw`'s row, decoded: what [`block`](Self::block) reads.
    pub fn decode(&self, raw: &RawRow, bx: u64) -> Result<Block> {
        let &(at, len) = bx
            .checked_sub(raw.first)
            .and_then(|i| raw.spans.get(i as usize))
            .ok_or_else(|| corrupt(format!("no block ({bx}, {})", raw.by)))?;
        let stored = raw
            .buf
            .get(at..at + len)
            .ok_or_else(|| corrupt(format!("block ({bx}, {}) is cut off", raw.by)))?;
        self.decode_stored(raw.by, stored)
    }

    /// The file opened for direct reads, if the system allows it.
    fn direct_file(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .ok()
            })
            .as_ref()
    }
}

/// The alignment of a direct read's buffer, offset and length.
const ALIGN: u64 = DIRECT_ALIGN as u64;

/// A block row's stored bytes, as [`Tiff::read_row`] read them.
#[derive(Debug)]
pub struct RawRow {
    /// The block row.
    pub by: u64,
    /// The block column of the first block read.
    first: u64,
    buf: Vec<u8>,
    /// Each block's bytes in `buf`, from block `first` on: start and length (0 for a sparse
    /// block).
    spans: Vec<(usize, usize)>,
}

impl RawRow {
    /// The buffer, for the next [`Tiff::read_row`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// The image `dir` describes, in `file`.
fn image(file: File, path: &Path, dir: &Directory) -> Result<Tiff> {
    let find = |tag: u16| dir.field(tag);
    let int = |tag: u16, default: Option<u64>| dir.int(&file, tag, default);
    let len = file.metadata()?.len();
    let width = int(256, None)?;
    let height = int(257, None)?;
    if width == 0 || height == 0 {
        return Err(corrupt(format!("an image of {width} x {height} cells")));
    }
    if int(277, Some(1))? != 1 {
        return Err(unsupported("more than one sample per cell"));
    }
    let sample = SampleType::from_tiff(int(258, Some(1))?, int(339, Some(1))?)?;
    let codec = Codec::from_tiff(int(259, Some(1))?)?;
    let predictor = int(317, Some(1))?;
    let tiled = find(322).is_some() && find(323).is_some();
    let (block, offsets, counts) = match (find(322), find(323)) {
        (Some(_), Some(_)) => {
            let b = (int(322, None)?, int(323, None)?);
            let (Some(o), Some(c)) = (find(324), find(325)) else {
                return Err(corrupt("tiles without offsets or byte counts"));
            };
            (b, dir.ints(&file, &o)?, dir.ints(&file, &c)?)
        }
        _ => {
            let rows = int(278, Some(u32::MAX as u64))?.min(height);
            let (Some(o), Some(c)) = (find(273), find(279)) else {
                return Err(corrupt("strips without offsets or byte counts"));
            };
            ((width, rows), dir.ints(&file, &o)?, dir.ints(&file, &c)?)
        }
    };
    if block.0 == 0 || block.1 == 0 {
        return Err(corrupt("blocks of 0 cells"));
    }
    let block_bytes = block
        .0
        .saturating_mul(block.1)
        .saturating_mul(sample.bytes() as u64);
    if block_bytes > MAX_BLOCK_BYTES {
        return Err(unsupported(format!(
            "blocks of {} x {} cells (more than {} MB each)",
            block.0,
            block.1,
            MAX_BLOCK_BYTES >> 20
        )));
    }
    let blocks = width
        .div_ceil(block.0)
        .checked_mul(height.div_ceil(block.1))
        .ok_or_else(|| corrupt(format!("{width} x {height} cells in blocks of {block:?}")))?;
    if offsets.len() as u64 != blocks || counts.len() as u64 != blocks {
        return Err(corrupt(format!(
            "{} offsets and {} byte counts for {blocks} blocks",
            offsets.len(),
            counts.len()
        )));
    }
    if let Some((i, _)) = offsets
        .iter()
        .zip(&counts)
        .enumerate()
        .find(|(_, (o, c))| o.checked_add(**c).is_none_or(|end| end > len))
    {
        return Err(corrupt(format!(
            "block {i} is past the end of the file ({len} bytes)"
        )));
    }
    let nodata = match find(GDAL_NODATA) {
        Some(e) => Some(parse_nodata(&dir.bytes(&file, &e)?, sample)?),
        None => None,
    };
    let mut geo = GeoTags::default();
    for tag in [
        MODEL_PIXEL_SCALE,
        MODEL_TIEPOINT,
        MODEL_TRANSFORMATION,
        GEO_KEY_DIRECTORY,
        GEO_DOUBLE_PARAMS,
        GEO_ASCII_PARAMS,
    ] {
        let Some(e) = find(tag) else { continue };
        let values = match e.field_type {
            3 => TagValues::Short(dir.ints(&file, &e)?.into_iter().map(|v| v as u16).collect()),
            12 => TagValues::Double(
                dir.bytes(&file, &e)?
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
            2 => TagValues::Ascii(dir.bytes(&file, &e)?),
            k => return Err(unsupported(format!("GeoTIFF tag {tag} of type {k}"))),
        };
        geo.tags.push((tag, values));
    }
    Ok(Tiff {
        file,
        path: path.to_path_buf(),
        direct: std::sync::OnceLock::new(),
        width,
        height,
        sample,
        block,
        tiled,
        codec,
        predictor,
        offsets,
        counts,
        nodata,
        geo,
    })
}

/// GDAL_NODATA's text as GDAL reads it: a number, `nan` or `inf`; for 32-bit floats, a value
/// within 1e-10 of ±FLT_MAX is ±FLT_MAX.
fn parse_nodata(text: &[u8], sample: SampleType) -> Result<f64> {
    let text = String::from_utf8_lossy(text);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let v: f64 = text
        .parse()
        .map_err(|_| unsupported(format!("NoData `{text}`")))?;
    let max = f32::MAX as f64;
    Ok(match sample {
        SampleType::F32 if (v - max).abs() < 1e-10 * max => max,
        SampleType::F32 if (v + max).abs() < 1e-10 * max => -max,
        _ => v,
    })
}
