//! `layer export --compress zstd` without decoding a tile. A layer's chunk is one zstd frame of
//! its tile's cells, little-endian and row-major ([`crate::zarr::chunk`]); a little-endian TIFF
//! tile compressed with ZSTD and no predictor is exactly that. So GDAL creates the GeoTIFF with
//! no tiles in it (grid, CRS, NoData and every tag as the decoding export writes them;
//! `SPARSE_OK`, band-interleaved so that a band's tiles are the band's chunks), the frames are
//! appended to it as they are stored, and its TileOffsets and TileByteCounts are filled in.
//! Tiles the layer does not store (all NoData) all point at one frame of NoData, so every cell
//! reads as the decoding export writes it.
//!
//! A frame is checked before it is copied — one zstd frame, whole, of the tile's size — so a
//! truncated or foreign chunk is an error naming the tile, never a GeoTIFF that fails later.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use rayon::prelude::*;

use super::{Compression, TempFile, create_gtiff_with, gdal_err};
use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::layer::LayerReader;
use crate::model::SpatialKey;
use crate::tile::Tile;
use crate::zarr::chunk;

/// Files whose cells are more than this many bytes are BigTIFF: a zstd frame of incompressible
/// cells is a little larger than the cells, and a classic TIFF's offsets end at 4 GiB.
const CLASSIC_TIFF_MAX_CELL_BYTES: u64 = 3 << 30;

/// Writes every band of `reader`'s layer to the GeoTIFF `out` (ZSTD), copying its tiles' frames.
/// `false`, with nothing written, when the frames end past what GDAL made the tile offsets to
/// hold (32-bit offsets past 4 GiB): the decoding export writes that file.
pub(super) fn export_frames(
    reader: &LayerReader,
    out: &Path,
    progress: &dyn Progress,
) -> Result<bool> {
    let md = reader.metadata();
    let bands = reader.info().bands.len();
    let grid = md.array_grid();
    let tl = md.layout.tile_layout;
    let (tile_cols, tile_rows) = (u64::from(tl.tile_cols), u64::from(tl.tile_rows));
    let across = grid.cols.div_ceil(tile_cols);
    let per_band = (across * grid.rows.div_ceil(tile_rows)) as usize;
    let cell_bytes = md.cell_type.data_type.bytes() as u64;
    let tile_bytes = (tile_cols * tile_rows * cell_bytes) as usize;

    let temp = TempFile::beside(out, ".tif")?;
    let path = temp.path()?;
    let big = grid.cols * grid.rows * bands as u64 * cell_bytes > CLASSIC_TIFF_MAX_CELL_BYTES;
    let ds = create_gtiff_with(
        path,
        md,
        bands,
        Compression::Zstd,
        &[
            ("BIGTIFF", if big { "YES" } else { "NO" }),
            ("SPARSE_OK", "TRUE"),
            ("INTERLEAVE", "BAND"),
        ],
    )?;
    ds.close().map_err(|e| gdal_err(path, e))?;

    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| gdal_err(path, e))?;
    let arrays = TileArrays::read(&mut file).map_err(|e| gdal_err(path, e))?;
    let tiles = per_band * bands;
    if arrays.offsets.count != tiles as u64 || arrays.counts.count != tiles as u64 {
        return Err(Error::Internal(format!(
            "{}: GDAL made {} tile offsets for {tiles} tiles",
            path.display(),
            arrays.offsets.count
        )));
    }
    let mut offsets = vec![0u64; tiles];
    let mut counts = vec![0u64; tiles];
    let mut end = file.seek(SeekFrom::End(0)).map_err(|e| gdal_err(path, e))?;
    let mut w = BufWriter::with_capacity(8 << 20, file);
    let mut append = |frame: &[u8]| -> Result<(u64, u64)> {
        w.write_all(frame).map_err(|e| gdal_err(path, e))?;
        let at = end;
        end += frame.len() as u64;
        Ok((at, frame.len() as u64))
    };
    let mut empty: Option<(u64, u64)> = None;

    let bounds = md.bounds.to_grid_bounds();
    let row_len = (bounds.col_max - bounds.col_min + 1).max(1) as usize;
    let keys: Vec<SpatialKey> = bounds.iter_keys().collect();
    progress.start(keys.len() as u64 * bands as u64);
    for band in 1..=bands {
        let name = &reader.info().bands[band - 1];
        // A row of tiles is read at a time, in parallel (bounded memory), and appended in order.
        for row in keys.chunks(row_len) {
            let frames: Vec<Result<Option<Bytes>>> = row
                .par_iter()
                .map(|&key| {
                    let frame = reader.tile_frame(band, key)?;
                    if let Some(f) = &frame {
                        check_frame(f, tile_bytes).map_err(|why| {
                            Error::layer(reader.url(), format!("tile {key} of {name} {why}"))
                        })?;
                    }
                    Ok(frame)
                })
                .collect();
            for (&key, frame) in row.iter().zip(frames) {
                let [cr, cc] = md.chunk_of(key);
                let i = (band - 1) * per_band + (cr * across + cc) as usize;
                let (at, len) = match frame? {
                    Some(f) => append(&f)?,
                    None => match empty {
                        Some(e) => e,
                        None => *empty.insert(append(&empty_frame(md, tile_bytes)?)?),
                    },
                };
                let (Some(o), Some(c)) = (offsets.get_mut(i), counts.get_mut(i)) else {
                    return Err(Error::Internal(format!(
                        "tile {key} is outside the GeoTIFF"
                    )));
                };
                (*o, *c) = (at, len);
                progress.advance(1);
            }
        }
    }
    let mut file = w.into_inner().map_err(|e| gdal_err(path, e.error()))?;
    if !(arrays.offsets.holds(end) && arrays.counts.holds(tile_bytes as u64 * 2)) {
        return Ok(false);
    }
    arrays
        .offsets
        .patch(&mut file, &offsets)
        .map_err(|e| gdal_err(path, e))?;
    arrays
        .counts
        .patch(&mut file, &counts)
        .map_err(|e| gdal_err(path, e))?;
    drop(file);
    temp.persist(out)?;
    Ok(true)
}

/// Why `frame` is not one whole zstd frame of `len` bytes of cells, if it is not.
fn check_frame(frame: &[u8], len: usize) -> std::result::Result<(), String> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n == len as u64 => {}
        Ok(Some(n)) => return Err(format!("holds {n} bytes of cells, not {len}")),
        Ok(None) | Err(_) => return Err("is not a zstd frame with its size".into()),
    }
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => Ok(()),
        Ok(n) => Err(format!("is {} bytes, its zstd frame {n}", frame.len())),
        Err(_) => Err(format!("is a truncated zstd frame ({} bytes)", frame.len())),
    }
}

/// One tile of NoData (the layer's fill value), as a frame.
fn empty_frame(md: &crate::model::TileLayerMetadata, tile_bytes: usize) -> Result<Vec<u8>> {
    let tl = md.layout.tile_layout;
    let tile = Tile::empty(md.cell_type, tl.tile_rows as usize, tl.tile_cols as usize);
    let frame = crate::with_tile_data!(&tile.data, a => chunk::encode(
        a.as_slice().ok_or_else(|| Error::Internal("tile is not contiguous".into()))?,
        1,
    ))
    .map_err(|e| Error::Internal(format!("cannot compress a NoData tile: {e}")))?;
    check_frame(&frame, tile_bytes).map_err(Error::Internal)?;
    Ok(frame)
}

/// Where a TIFF's TileOffsets and TileByteCounts values are.
#[derive(Debug)]
struct TileArrays {
    offsets: TiffArray,
    counts: TiffArray,
}

/// The values of one array-valued tag of the first IFD.
#[derive(Debug, Clone, Copy)]
struct TiffArray {
    /// TIFF field type: 4 LONG (u32) or 16 LONG8 (u64).
    field_type: u16,
    count: u64,
    /// File offset of the first value.
    at: u64,
}

const TILE_OFFSETS: u16 = 324;
const TILE_BYTE_COUNTS: u16 = 325;

impl TileArrays {
    /// Reads a little-endian TIFF or BigTIFF's first IFD for its tile arrays.
    fn read(file: &mut File) -> std::io::Result<TileArrays> {
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut header[..8])?;
        if &header[..2] != b"II" {
            return Err(bad("not a little-endian TIFF"));
        }
        let big = match u16::from_le_bytes([header[2], header[3]]) {
            42 => false,
            43 => true,
            _ => return Err(bad("not a TIFF")),
        };
        let ifd = if big {
            file.read_exact(&mut header[8..16])?;
            u64::from_le_bytes(header[8..16].try_into().unwrap_or_default())
        } else {
            u64::from(u32::from_le_bytes(
                header[4..8].try_into().unwrap_or_default(),
            ))
        };
        file.seek(SeekFrom::Start(ifd))?;
        let (count_len, entry_len, value_len) = if big { (8, 20, 8) } else { (2, 12, 4) };
        let mut n = [0u8; 8];
        file.read_exact(&mut n[..count_len])?;
        let entries = u64::from_le_bytes(n);
        let mut raw = vec![0u8; entries as usize * entry_len];
        file.read_exact(&mut raw)?;
        let (mut offsets, mut counts) = (None, None);
        for (i, e) in raw.chunks_exact(entry_len).enumerate() {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            if tag != TILE_OFFSETS && tag != TILE_BYTE_COUNTS {
                continue;
            }
            let field_type = u16::from_le_bytes([e[2], e[3]]);
            let size = match field_type {
                4 => 4,
                16 => 8,
                _ => return Err(bad("tile arrays are neither LONG nor LONG8")),
            };
            let mut c = [0u8; 8];
            c[..value_len].copy_from_slice(&e[4..4 + value_len]);
            let count = u64::from_le_bytes(c);
            let field = &e[4 + value_len..4 + 2 * value_len];
            let entry_at = ifd + count_len as u64 + (i * entry_len) as u64;
            // Values that fit in the entry are in it; others are where it points.
            let at = if count * size <= value_len as u64 {
                entry_at + 4 + value_len as u64
            } else {
                let mut v = [0u8; 8];
                v[..value_len].copy_from_slice(field);
                u64::from_le_bytes(v)
            };
            let array = TiffArray {
                field_type,
                count,
                at,
            };
            if tag == TILE_OFFSETS {
                offsets = Some(array);
            } else {
                counts = Some(array);
            }
        }
        match (offsets, counts) {
            (Some(offsets), Some(counts)) => Ok(TileArrays { offsets, counts }),
            _ => Err(bad("no TileOffsets or TileByteCounts: not a tiled TIFF")),
        }
    }
}

impl TiffArray {
    /// Whether the array's values can be as large as `v`.
    fn holds(&self, v: u64) -> bool {
        self.field_type == 16 || v <= u64::from(u32::MAX)
    }

    /// Writes `values` over the array (each one it [holds](Self::holds)).
    fn patch(&self, file: &mut File, values: &[u64]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(values.len() * 8);
        for &v in values {
            if self.field_type == 16 {
                bytes.extend_from_slice(&v.to_le_bytes());
            } else {
                let v = u32::try_from(v).map_err(std::io::Error::other)?;
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        file.seek(SeekFrom::Start(self.at))?;
        file.write_all(&bytes)
    }
}
