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
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use rayon::prelude::*;
use tessera_tiff::Appender;

use super::{Compression, TempFile, create_gtiff_with, gdal_err};
use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::layer::LayerReader;
use crate::model::SpatialKey;
use crate::source::tiff::{Field, tile_arrays};
use crate::tile::Tile;
use crate::zarr::chunk;

/// Files whose cells are more than this many bytes are BigTIFF: a zstd frame of incompressible
/// cells is a little larger than the cells, and a classic TIFF's offsets end at 4 GiB.
const CLASSIC_TIFF_MAX_CELL_BYTES: u64 = 3 << 30;

/// Threads reading frames at once.
const FRAME_READERS: usize = 8;

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
    let (offsets_field, counts_field) = tile_arrays(&file).map_err(|e| gdal_err(path, e))?;
    let tiles = per_band * bands;
    if offsets_field.count != tiles as u64 || counts_field.count != tiles as u64 {
        return Err(Error::Internal(format!(
            "{}: GDAL made {} tile offsets for {tiles} tiles",
            path.display(),
            offsets_field.count
        )));
    }
    let mut offsets = vec![0u64; tiles];
    let mut counts = vec![0u64; tiles];
    let start = file.seek(SeekFrom::End(0)).map_err(|e| gdal_err(path, e))?;
    // A large file past the page cache, as `tessera dem` writes one.
    let direct = grid.cols * grid.rows * bands as u64 * cell_bytes > tessera_tiff::DIRECT_OVER;
    let mut w = Appender::new(file, path, start, direct).map_err(|e| gdal_err(path, e))?;
    let mut append = |frame: &[u8]| -> Result<(u64, u64)> {
        let at = w.position();
        w.put(frame).map_err(|e| gdal_err(path, e))?;
        Ok((at, frame.len() as u64))
    };
    let mut empty: Option<(u64, u64)> = None;

    // Reading a frame is mostly waiting on the disk or the network (a large layer's chunks
    // are not in the page cache): more readers than cores.
    let readers = rayon::ThreadPoolBuilder::new()
        .num_threads(FRAME_READERS)
        .thread_name(|i| format!("tessera-frames-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the frame readers: {e}")))?;
    let bounds = md.bounds.to_grid_bounds();
    let row_len = (bounds.col_max - bounds.col_min + 1).max(1) as usize;
    let keys: Vec<SpatialKey> = bounds.iter_keys().collect();
    progress.start(keys.len() as u64 * bands as u64);
    for band in 1..=bands {
        let name = &reader.info().bands[band - 1];
        // A row of tiles is read at a time, in parallel (bounded memory), and appended in order.
        for row in keys.chunks(row_len) {
            let frames: Vec<Result<Option<Bytes>>> = readers.install(|| {
                row.par_iter()
                    .map(|&key| {
                        let frame = reader.tile_frame(band, key)?;
                        if let Some(f) = &frame {
                            check_frame(f, tile_bytes).map_err(|why| {
                                Error::layer(reader.url(), format!("tile {key} of {name} {why}"))
                            })?;
                        }
                        Ok(frame)
                    })
                    .collect()
            });
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
    let end = w.position();
    let file = w.finish().map_err(|e| gdal_err(path, e))?;
    if !(holds(&offsets_field, end) && holds(&counts_field, tile_bytes as u64 * 2)) {
        return Ok(false);
    }
    patch(&offsets_field, file, &offsets).map_err(|e| gdal_err(path, e))?;
    patch(&counts_field, file, &counts).map_err(|e| gdal_err(path, e))?;
    drop(w);
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

/// Whether a tile array (LONG or LONG8) holds `v`.
fn holds(field: &Field, v: u64) -> bool {
    field.field_type == 16 || (field.field_type == 4 && v <= u64::from(u32::MAX))
}

/// Writes `values` over a tile array whose values it [`holds`].
fn patch(field: &Field, file: &File, values: &[u64]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(values.len() * 8);
    for &v in values {
        if field.field_type == 16 {
            bytes.extend_from_slice(&v.to_le_bytes());
        } else {
            let v = u32::try_from(v).map_err(std::io::Error::other)?;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    file.write_all_at(&bytes, field.at)
}
