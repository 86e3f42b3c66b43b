//! A GeoTIFF's first image, block by block.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::codec::{Codec, undo_predictor};
use crate::{
    GEO_ASCII_PARAMS, GEO_DOUBLE_PARAMS, GEO_KEY_DIRECTORY, GeoTags, MODEL_PIXEL_SCALE,
    MODEL_TIEPOINT, MODEL_TRANSFORMATION, Result, SampleType, TagValues, corrupt, unsupported,
};

/// GDAL's NoData tag: the value as ASCII.
pub(crate) const GDAL_NODATA: u16 = 42113;

/// The most entries an image file directory may have, and the most values a tag may hold here:
/// bounds on what a damaged file can make this reader allocate.
const MAX_ENTRIES: u64 = 4096;
const MAX_VALUES: u64 = 1 << 28;

/// The largest block this reader decodes: a whole-image strip of a wide raster is GDAL's.
const MAX_BLOCK_BYTES: u64 = 256 << 20;

/// One band of a GeoTIFF opened for reading.
#[derive(Debug)]
pub struct Tiff {
    file: File,
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

/// A directory entry: its type, count and where its values are (inline or at an offset).
struct Entry {
    tag: u16,
    kind: u16,
    count: u64,
    /// The value field, as raw bytes (4 or 8 of them).
    field: [u8; 8],
}

fn type_size(kind: u16) -> Option<u64> {
    Some(match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 => 4,
        5 | 10 | 12 | 16 | 17 => 8,
        _ => return None,
    })
}

impl Tiff {
    /// Opens `path`'s first image; [`Error::Unsupported`](crate::Error::Unsupported) when it is
    /// a TIFF that this reader leaves to GDAL.
    pub fn open(path: &Path) -> Result<Tiff> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; 16];
        let n = read_some(&file, 0, &mut head)?;
        if n < 8 {
            return Err(corrupt("shorter than a TIFF header"));
        }
        if &head[..2] == b"MM" {
            return Err(unsupported("big-endian"));
        }
        if &head[..2] != b"II" {
            return Err(corrupt("no TIFF byte-order mark"));
        }
        let big = match u16::from_le_bytes([head[2], head[3]]) {
            42 => false,
            43 if n >= 16 => true,
            v => return Err(corrupt(format!("version {v}"))),
        };
        let ifd = if big {
            u64::from_le_bytes(head[8..16].try_into().unwrap_or_default())
        } else {
            u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()) as u64
        };
        let reader = Reader { file, len, big };
        let entries = reader.directory(ifd)?;
        reader.image(entries)
    }

    /// Blocks across and down.
    pub fn blocks(&self) -> (u64, u64) {
        (
            self.width.div_ceil(self.block.0),
            self.height.div_ceil(self.block.1),
        )
    }

    /// Tells the kernel the bytes of block rows `rows` will be read soon, so that a cold file
    /// is read ahead while other work goes on.
    pub fn will_need(&self, rows: std::ops::Range<u64>) {
        let (across, _) = self.blocks();
        let (a, b) = (
            rows.start * across,
            (rows.end * across).min(self.offsets.len() as u64),
        );
        let (mut lo, mut hi) = (u64::MAX, 0);
        for i in a..b {
            let (o, c) = (self.offsets[i as usize], self.counts[i as usize]);
            if c > 0 {
                lo = lo.min(o);
                hi = hi.max(o + c);
            }
        }
        if lo < hi {
            use std::os::fd::AsRawFd;
            // SAFETY: an advisory call on a descriptor this struct owns.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    lo as libc::off_t,
                    (hi - lo) as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Block (`bx`, `by`), decoded; blocks at the right and bottom edges are whole blocks, as
    /// TIFF stores them, except a last strip, which holds only the rows left.
    pub fn block(&self, bx: u64, by: u64) -> Result<Block> {
        let (across, down) = self.blocks();
        if bx >= across || by >= down {
            return Err(corrupt(format!("no block ({bx}, {by})")));
        }
        let i = (by * across + bx) as usize;
        let (width, mut rows) = (self.block.0 as usize, self.block.1 as usize);
        if !self.tiled {
            // Strips: the last one holds the rows left.
            rows = rows.min((self.height - by * self.block.1) as usize);
        }
        let size = width * rows * self.sample.bytes();
        let mut bytes = vec![0u8; size];
        let (offset, count) = (self.offsets[i], self.counts[i]);
        if count > 0 {
            let mut raw = vec![0u8; count as usize];
            if read_some(&self.file, offset, &mut raw)? != raw.len() {
                return Err(corrupt(format!(
                    "block {i} at {offset} is cut off by the end of the file"
                )));
            }
            self.codec.decode(&raw, &mut bytes)?;
            undo_predictor(self.predictor, self.sample, width, &mut bytes)?;
        } else if self.nodata.is_none() {
            // A sparse block without NoData: zeros, as GDAL reads it.
        } else {
            return Err(unsupported("sparse blocks with NoData"));
        }
        Ok(Block { width, rows, bytes })
    }
}

/// Reads as much of `buf` as the file holds from `offset`.
fn read_some(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

struct Reader {
    file: File,
    len: u64,
    big: bool,
}

impl Reader {
    fn directory(&self, offset: u64) -> Result<Vec<Entry>> {
        let (count_size, entry_size) = if self.big { (8, 20) } else { (2, 12) };
        let mut count = [0u8; 8];
        if offset == 0 || read_some(&self.file, offset, &mut count[..count_size])? != count_size {
            return Err(corrupt(format!("no image directory at {offset}")));
        }
        let n = u64::from_le_bytes(count);
        if n == 0 || n > MAX_ENTRIES {
            return Err(corrupt(format!("an image directory of {n} entries")));
        }
        let mut raw = vec![0u8; (n * entry_size) as usize];
        if read_some(&self.file, offset + count_size as u64, &mut raw)? != raw.len() {
            return Err(corrupt("the image directory is cut off"));
        }
        Ok(raw
            .chunks_exact(entry_size as usize)
            .map(|e| {
                let tag = u16::from_le_bytes([e[0], e[1]]);
                let kind = u16::from_le_bytes([e[2], e[3]]);
                let mut field = [0u8; 8];
                let count = if self.big {
                    field.copy_from_slice(&e[12..20]);
                    u64::from_le_bytes(e[4..12].try_into().unwrap_or_default())
                } else {
                    field[..4].copy_from_slice(&e[8..12]);
                    u32::from_le_bytes(e[4..8].try_into().unwrap_or_default()) as u64
                };
                Entry {
                    tag,
                    kind,
                    count,
                    field,
                }
            })
            .collect())
    }

    /// An entry's values as bytes.
    fn bytes(&self, e: &Entry) -> Result<Vec<u8>> {
        let size = type_size(e.kind)
            .ok_or_else(|| corrupt(format!("tag {} has unknown type {}", e.tag, e.kind)))?;
        if e.count > MAX_VALUES {
            return Err(corrupt(format!("tag {} holds {} values", e.tag, e.count)));
        }
        let total = size * e.count;
        let inline = if self.big { 8 } else { 4 };
        if total <= inline {
            return Ok(e.field[..total as usize].to_vec());
        }
        let offset = if self.big {
            u64::from_le_bytes(e.field)
        } else {
            u32::from_le_bytes(e.field[..4].try_into().unwrap_or_default()) as u64
        };
        if offset.checked_add(total).is_none_or(|end| end > self.len) {
            return Err(corrupt(format!("tag {}'s values are past the end", e.tag)));
        }
        let mut buf = vec![0u8; total as usize];
        read_some(&self.file, offset, &mut buf)?;
        Ok(buf)
    }

    /// An entry's values as unsigned integers.
    fn ints(&self, e: &Entry) -> Result<Vec<u64>> {
        let b = self.bytes(e)?;
        Ok(match e.kind {
            1 | 7 => b.iter().map(|&v| v as u64).collect(),
            3 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
                .collect(),
            4 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) as u64)
                .collect(),
            16 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
            k => {
                return Err(corrupt(format!(
                    "tag {} has type {k}, not an integer",
                    e.tag
                )));
            }
        })
    }

    fn image(self, entries: Vec<Entry>) -> Result<Tiff> {
        let find = |tag: u16| entries.iter().find(|e| e.tag == tag);
        let int = |tag: u16, default: Option<u64>| -> Result<u64> {
            match find(tag) {
                Some(e) => self
                    .ints(e)?
                    .first()
                    .copied()
                    .ok_or_else(|| corrupt(format!("tag {tag} is empty"))),
                None => default.ok_or_else(|| corrupt(format!("no tag {tag}"))),
            }
        };
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
                (b, self.ints(o)?, self.ints(c)?)
            }
            _ => {
                let rows = int(278, Some(u32::MAX as u64))?.min(height);
                let (Some(o), Some(c)) = (find(273), find(279)) else {
                    return Err(corrupt("strips without offsets or byte counts"));
                };
                ((width, rows), self.ints(o)?, self.ints(c)?)
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
            .find(|(_, (o, c))| o.checked_add(**c).is_none_or(|end| end > self.len))
        {
            return Err(corrupt(format!(
                "block {i} is past the end of the file ({} bytes)",
                self.len
            )));
        }
        let nodata = match find(GDAL_NODATA) {
            Some(e) => Some(parse_nodata(&self.bytes(e)?, sample)?),
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
            let values = match e.kind {
                3 => TagValues::Short(self.ints(e)?.into_iter().map(|v| v as u16).collect()),
                12 => TagValues::Double(
                    self.bytes(e)?
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                ),
                2 => TagValues::Ascii(self.bytes(e)?),
                k => return Err(unsupported(format!("GeoTIFF tag {tag} of type {k}"))),
            };
            geo.tags.push((tag, values));
        }
        Ok(Tiff {
            file: self.file,
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
