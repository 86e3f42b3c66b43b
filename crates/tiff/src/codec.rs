//! A block's bytes on disk and its cells: compression and TIFF's predictors.

use crate::{Result, SampleType, corrupt, unsupported};

/// How a block's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    /// zlib streams (TIFF compression 8, or 32946 from older writers); written at level 6, as
    /// GDAL's default.
    Deflate,
    /// One zstd frame (compression 50000); written at level 1, as Tessera's GDAL exports.
    Zstd,
}

impl Codec {
    pub(crate) fn from_tiff(code: u64) -> Result<Codec> {
        match code {
            1 => Ok(Codec::None),
            8 | 32946 => Ok(Codec::Deflate),
            50000 => Ok(Codec::Zstd),
            c => Err(unsupported(format!("compression {c}"))),
        }
    }

    pub(crate) fn tiff_code(self) -> u16 {
        match self {
            Codec::None => 1,
            Codec::Deflate => 8,
            Codec::Zstd => 50000,
        }
    }

    /// `raw` decompressed into `out`, which it must fill exactly.
    pub(crate) fn decode(self, raw: &[u8], out: &mut [u8]) -> Result<()> {
        let n = match self {
            Codec::None => {
                let n = raw.len().min(out.len());
                out[..n].copy_from_slice(&raw[..n]);
                n
            }
            Codec::Deflate => libdeflater::Decompressor::new()
                .zlib_decompress(raw, out)
                .map_err(|e| corrupt(format!("a DEFLATE block does not decompress: {e}")))?,
            Codec::Zstd => zstd::bulk::decompress_to_buffer(raw, out)
                .map_err(|e| corrupt(format!("a ZSTD block does not decompress: {e}")))?,
        };
        if n != out.len() {
            return Err(corrupt(format!(
                "a block holds {n} bytes of cells, not {}",
                out.len()
            )));
        }
        Ok(())
    }

    /// `cells` compressed; `cells` itself when uncompressed.
    pub(crate) fn encode(self, cells: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Codec::None => Ok(cells),
            Codec::Deflate => {
                let level = libdeflater::CompressionLvl::new(6)
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                let mut c = libdeflater::Compressor::new(level);
                let mut out = vec![0; c.zlib_compress_bound(cells.len())];
                let n = c
                    .zlib_compress(&cells, &mut out)
                    .map_err(|e| std::io::Error::other(format!("DEFLATE: {e}")))?;
                out.truncate(n);
                Ok(out)
            }
            Codec::Zstd => ZSTD.with(|c| match &mut *c.borrow_mut() {
                Some(c) => c.compress(&cells),
                slot => slot
                    .insert(zstd::bulk::Compressor::new(1)?)
                    .compress(&cells),
            }),
        }
    }
}

thread_local! {
    /// Each thread's zstd compressor, made once: a context is some 100 KB to set up.
    static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Undoes TIFF's predictor on a decoded block of `width`-cell rows, in place: 1 none, 2
/// horizontal differencing of the cells' integer bits, 3 floating point (bytes split into planes,
/// most significant first, then differenced).
pub(crate) fn undo_predictor(
    predictor: u64,
    sample: SampleType,
    width: usize,
    block: &mut [u8],
) -> Result<()> {
    let size = sample.bytes();
    let row_len = width * size;
    if row_len == 0 {
        return Ok(());
    }
    match predictor {
        1 => Ok(()),
        2 => {
            for row in block.chunks_exact_mut(row_len) {
                match size {
                    1 => add_across::<1>(row, |a, b| [a[0].wrapping_add(b[0])]),
                    2 => add_across::<2>(row, |a, b| {
                        u16::from_le_bytes(a)
                            .wrapping_add(u16::from_le_bytes(b))
                            .to_le_bytes()
                    }),
                    4 => add_across::<4>(row, |a, b| {
                        u32::from_le_bytes(a)
                            .wrapping_add(u32::from_le_bytes(b))
                            .to_le_bytes()
                    }),
                    _ => add_across::<8>(row, |a, b| {
                        u64::from_le_bytes(a)
                            .wrapping_add(u64::from_le_bytes(b))
                            .to_le_bytes()
                    }),
                }
            }
            Ok(())
        }
        3 if matches!(sample, SampleType::F32 | SampleType::F64) => {
            let mut planes = vec![0u8; row_len];
            for row in block.chunks_exact_mut(row_len) {
                for i in 1..row_len {
                    row[i] = row[i].wrapping_add(row[i - 1]);
                }
                planes.copy_from_slice(row);
                // Plane k holds byte `size - 1 - k` (little-endian) of every cell.
                for (k, plane) in planes.chunks_exact(width).enumerate() {
                    let byte = size - 1 - k;
                    for (c, &b) in plane.iter().enumerate() {
                        row[c * size + byte] = b;
                    }
                }
            }
            Ok(())
        }
        p => Err(unsupported(format!("predictor {p}"))),
    }
}

/// Each cell of `row` becomes `add(previous cell, cell)`.
fn add_across<const N: usize>(row: &mut [u8], add: impl Fn([u8; N], [u8; N]) -> [u8; N]) {
    let mut prev = [0u8; N];
    for cell in row.chunks_exact_mut(N) {
        let cur: [u8; N] = (&*cell).try_into().unwrap_or([0; N]);
        prev = add(prev, cur);
        cell.copy_from_slice(&prev);
    }
}
