//! Plain GeoTIFFs read and written without GDAL.
//!
//! `tessera dem` on a local GeoTIFF runs in a process that does not load libgdal: loading its
//! ~110 shared libraries from a cold page cache takes about 0.2 s, more than a 3000² slope takes
//! to compute. This crate reads and writes the GeoTIFFs such a command meets most — one band,
//! tiled or stripped, uncompressed, DEFLATE or ZSTD, with or without a predictor, classic or
//! BigTIFF, little-endian — and says [`Error::Unsupported`] for everything else, which is then
//! left to GDAL. Georeferencing is carried, not interpreted: the GeoTIFF tags of the input are
//! written to the output as they are, so that GDAL reads the same grid and CRS from both.

mod append;
mod codec;
mod fs;
mod ifd;
mod read;
mod write;

pub use append::{Appender, DIRECT_ALIGN, aligned};
pub use codec::Codec;
pub use fs::replace_file;
pub use ifd::{Directory, Field, read_some};
pub use read::{Block, RawRow, Tiff};
pub use write::{DIRECT_OVER, TiffWriter, WriterSpec};

/// Why a file cannot be read or written here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A valid file this crate does not read (GDAL may): the reason names the feature.
    #[error("not a plain GeoTIFF: {0}")]
    Unsupported(String),
    /// A file that is not a TIFF, or a damaged one.
    #[error("corrupt TIFF: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn unsupported(why: impl Into<String>) -> Error {
    Error::Unsupported(why.into())
}

fn corrupt(why: impl Into<String>) -> Error {
    Error::Corrupt(why.into())
}

/// The type of a band's cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl SampleType {
    /// From TIFF's BitsPerSample and SampleFormat (1 unsigned, 2 signed, 3 float).
    fn from_tiff(bits: u64, format: u64) -> Result<SampleType> {
        Ok(match (bits, format) {
            (8, 1) => SampleType::U8,
            (8, 2) => SampleType::I8,
            (16, 1) => SampleType::U16,
            (16, 2) => SampleType::I16,
            (32, 1) => SampleType::U32,
            (32, 2) => SampleType::I32,
            (32, 3) => SampleType::F32,
            (64, 3) => SampleType::F64,
            _ => {
                return Err(unsupported(format!(
                    "{bits}-bit samples of format {format}"
                )));
            }
        })
    }

    pub fn bytes(self) -> usize {
        match self {
            SampleType::U8 | SampleType::I8 => 1,
            SampleType::U16 | SampleType::I16 => 2,
            SampleType::U32 | SampleType::I32 | SampleType::F32 => 4,
            SampleType::F64 => 8,
        }
    }

    /// TIFF's SampleFormat.
    fn format(self) -> u16 {
        match self {
            SampleType::U8 | SampleType::U16 | SampleType::U32 => 1,
            SampleType::I8 | SampleType::I16 | SampleType::I32 => 2,
            SampleType::F32 | SampleType::F64 => 3,
        }
    }

    /// `dst[i]` = cell `i` of `src` (little-endian cells of this type) as f64, NaN where it is
    /// NoData (NaN, or equal to `nodata`), as GDAL's readers give them to Tessera.
    pub fn to_f64(self, src: &[u8], nodata: Option<f64>, dst: &mut [f64]) {
        self.to_cells(src, nodata, dst)
    }

    /// [`to_f64`](Self::to_f64) into f64 or f32 cells: the f64 value (NoData tested on it)
    /// rounded once.
    pub fn to_cells<T: Cell>(self, src: &[u8], nodata: Option<f64>, dst: &mut [T]) {
        match nodata {
            None => self.map_cells(src, dst, T::from_f64),
            Some(nd) => self.map_cells(src, dst, |v| {
                T::from_f64(if v == nd { f64::NAN } else { v })
            }),
        }
    }

    /// `dst[i]` = `f`(the value of cell `i` of `src`, little-endian cells of this type, as f64).
    pub fn map_cells<T>(self, src: &[u8], dst: &mut [T], f: impl Fn(f64) -> T) {
        fn conv<const N: usize, T>(
            src: &[u8],
            dst: &mut [T],
            value: impl Fn([u8; N]) -> f64,
            f: impl Fn(f64) -> T,
        ) {
            for (s, d) in src.chunks_exact(N).zip(dst.iter_mut()) {
                *d = f(value(s.try_into().unwrap_or([0; N])));
            }
        }
        match self {
            SampleType::U8 => conv::<1, T>(src, dst, |b| b[0] as f64, f),
            SampleType::I8 => conv::<1, T>(src, dst, |b| b[0] as i8 as f64, f),
            SampleType::U16 => conv(src, dst, |b| u16::from_le_bytes(b) as f64, f),
            SampleType::I16 => conv(src, dst, |b| i16::from_le_bytes(b) as f64, f),
            SampleType::U32 => conv(src, dst, |b| u32::from_le_bytes(b) as f64, f),
            SampleType::I32 => conv(src, dst, |b| i32::from_le_bytes(b) as f64, f),
            SampleType::F32 => conv(src, dst, |b| f32::from_le_bytes(b) as f64, f),
            SampleType::F64 => conv(src, dst, f64::from_le_bytes, f),
        }
    }
}

/// A cell type cells are read into: f64, or f32 for a kernel that computes in f32.
pub trait Cell: Copy + Send + Sync + 'static {
    const NAN: Self;
    /// `v`, rounded to this type.
    fn from_f64(v: f64) -> Self;
    /// This value as f64 (exactly).
    fn to_f64(self) -> f64;
}

impl Cell for f64 {
    const NAN: f64 = f64::NAN;
    fn from_f64(v: f64) -> f64 {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Cell for f32 {
    const NAN: f32 = f32::NAN;
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

/// A TIFF tag's values, as the file holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValues {
    Short(Vec<u16>),
    Double(Vec<f64>),
    Ascii(Vec<u8>),
}

/// The georeferencing of a GeoTIFF: its ModelPixelScale, ModelTiepoint, ModelTransformation
/// and GeoKey tags, carried from a file read to a file written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoTags {
    pub tags: Vec<(u16, TagValues)>,
}

const MODEL_PIXEL_SCALE: u16 = 33550;
const MODEL_TIEPOINT: u16 = 33922;
const MODEL_TRANSFORMATION: u16 = 34264;
const GEO_KEY_DIRECTORY: u16 = 34735;
const GEO_DOUBLE_PARAMS: u16 = 34736;
const GEO_ASCII_PARAMS: u16 = 34737;

impl GeoTags {
    fn get(&self, tag: u16) -> Option<&TagValues> {
        self.tags.iter().find(|(t, _)| *t == tag).map(|(_, v)| v)
    }

    fn doubles(&self, tag: u16) -> Option<&[f64]> {
        match self.get(tag) {
            Some(TagValues::Double(v)) => Some(v),
            _ => None,
        }
    }

    /// The size of a cell in map units (width, height), from the pixel scale or a transformation
    /// without rotation; an error for a rotated grid or a file without either.
    pub fn cell_size(&self) -> Result<(f64, f64)> {
        if let Some(m) = self.doubles(MODEL_TRANSFORMATION) {
            if m.len() < 16 {
                return Err(corrupt("ModelTransformation has fewer than 16 values"));
            }
            if m[1] != 0.0 || m[4] != 0.0 {
                return Err(unsupported("a rotated grid (ModelTransformation)"));
            }
            return Ok((m[0].abs(), m[5].abs()));
        }
        match self.doubles(MODEL_PIXEL_SCALE) {
            Some(s) if s.len() >= 2 && self.doubles(MODEL_TIEPOINT).is_some() => {
                Ok((s[0].abs(), s[1].abs()))
            }
            _ => Err(unsupported("no georeferencing (pixel scale and tiepoint)")),
        }
    }

    /// GTModelTypeGeoKey: 1 projected, 2 geographic (degrees), 3 geocentric.
    pub fn model_type(&self) -> Option<u16> {
        let Some(TagValues::Short(keys)) = self.get(GEO_KEY_DIRECTORY) else {
            return None;
        };
        // A header of four shorts, then four per key: id, location (0 = the value itself),
        // count, value.
        keys.get(4..)?
            .chunks_exact(4)
            .find(|k| k[0] == 1024 && k[1] == 0)
            .map(|k| k[3])
    }

    /// Whether map units are degrees; `None` when the file says no CRS or one this crate does
    /// not judge (left to GDAL).
    pub fn geographic(&self) -> Option<bool> {
        match self.model_type()? {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
}
