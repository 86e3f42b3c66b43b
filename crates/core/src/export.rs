//! Exporting a layer to a single raster file through GDAL: GeoTIFF (tiled) or COG, compressed
//! with DEFLATE (the default), ZSTD or not at all — and the GeoTIFF that tile tasks write
//! directly, block by block, without a layer ([`GeoTiffWriter`], [`compute_to_gtiff`]).
//! Files are written under a temporary name and renamed when complete.

mod frames;

pub use frames::{Followed, JobProgress, export_following};

use std::path::{Path, PathBuf};

use gdal::cpl::CslStringList;
use gdal::raster::{Buffer, GdalType};
use gdal::{Dataset, DriverManager};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ingest::{
    IngestOptions, IngestPlan, KeysSummary, Progress, TileSink, with_threads, write_keys,
};
use crate::layer::LayerReader;
use crate::model::{DataType, SpatialKey, TileLayerMetadata};
use crate::source::spatial_ref;
use crate::tile::{Cell, Tile};

/// The file formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    GTiff,
    Cog,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gtiff" | "geotiff" => Ok(ExportFormat::GTiff),
            "cog" => Ok(ExportFormat::Cog),
            _ => Err(Error::invalid(format!(
                "unknown export format `{s}` (expected GTiff or COG)"
            ))),
        }
    }
}

/// How the exported file's blocks are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// None, as gdaldem and gdal_translate write by default: the fastest to write.
    None,
    /// DEFLATE at level 1: every reader opens it; within 2 % of the default level's size on
    /// elevation-like floats at half the time.
    #[default]
    Deflate,
    /// ZSTD at level 1: faster than DEFLATE, read by GDAL ≥ 2.3.
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "deflate" => Ok(Compression::Deflate),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(Error::invalid(format!(
                "unknown compression `{s}` (expected none, deflate or zstd)"
            ))),
        }
    }
}

impl Compression {
    /// GDAL's `COMPRESS` value.
    fn gdal_name(self) -> &'static str {
        match self {
            Compression::None => "NONE",
            Compression::Deflate => "DEFLATE",
            Compression::Zstd => "ZSTD",
        }
    }

    /// The GTiff creation options: the method and its level.
    fn creation_options(self) -> Vec<(&'static str, &'static str)> {
        let level = match self {
            Compression::None => None,
            Compression::Deflate => Some(("ZLEVEL", "1")),
            Compression::Zstd => Some(("ZSTD_LEVEL", "1")),
        };
        std::iter::once(("COMPRESS", self.gdal_name()))
            .chain(level)
            .collect()
    }
}

fn gdal_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::storage(path.display().to_string(), e)
}

/// Removes a file when dropped unless disarmed.
struct TempFile(Option<PathBuf>);

impl TempFile {
    /// `.{name}.{pid}.tmp{suffix}` beside `out`, removed when dropped unless persisted; an
    /// error when `out`'s directory does not exist.
    fn beside(out: &Path, suffix: &str) -> Result<TempFile> {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(gdal_err(out, "its directory does not exist"));
        }
        let name = out
            .file_name()
            .ok_or_else(|| gdal_err(out, "not a file name"))?
            .to_string_lossy();
        Ok(TempFile(Some(parent.join(format!(
            ".{name}.{}.tmp{suffix}",
            std::process::id()
        )))))
    }

    fn path(&self) -> Result<&Path> {
        self.0
            .as_deref()
            .ok_or_else(|| Error::Internal("temp path".into()))
    }

    /// Renames the file to `out` and keeps it.
    fn persist(mut self, out: &Path) -> Result<()> {
        crate::store::replace_file(self.path()?, out).map_err(|e| gdal_err(out, e))?;
        self.0 = None;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes every band of the layer at `layer_url` to `out`.
pub fn export(
    layer_url: &str,
    out: &Path,
    format: ExportFormat,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<()> {
    let reader = LayerReader::open(layer_url)?;
    if format == ExportFormat::GTiff
        && compression == Compression::Zstd
        && block_tiled(reader.metadata())
        && reader.has_plain_frames()
        && frames::export_frames(&reader, out, progress)?
    {
        return Ok(());
    }
    let tiff = TempFile::beside(out, ".tif")?;
    let tiff_path = tiff.path()?;
    let md = reader.metadata();
    let ds = create_gtiff(tiff_path, md, reader.info().bands.len(), compression)?;
    let ds = match md.cell_type.data_type {
        DataType::U8 => write_gtiff::<u8>(&reader, ds, tiff_path, progress),
        DataType::I16 => write_gtiff::<i16>(&reader, ds, tiff_path, progress),
        DataType::U16 => write_gtiff::<u16>(&reader, ds, tiff_path, progress),
        DataType::I32 => write_gtiff::<i32>(&reader, ds, tiff_path, progress),
        DataType::F32 => write_gtiff::<f32>(&reader, ds, tiff_path, progress),
        DataType::F64 => write_gtiff::<f64>(&reader, ds, tiff_path, progress),
    }?;
    match format {
        ExportFormat::GTiff => {
            drop(ds);
            tiff.persist(out)
        }
        ExportFormat::Cog => {
            let cog = TempFile::beside(out, ".cog.tif")?;
            let driver = DriverManager::get_driver_by_name("COG").map_err(|e| gdal_err(out, e))?;
            let mut opts = CslStringList::new();
            for (k, v) in [
                ("COMPRESS", compression.gdal_name()),
                ("BLOCKSIZE", "256"),
                ("NUM_THREADS", "ALL_CPUS"),
            ] {
                opts.set_name_value(k, v).map_err(|e| gdal_err(out, e))?;
            }
            let copy = ds
                .create_copy(&driver, cog.path()?, &opts)
                .map_err(|e| gdal_err(out, e))?;
            drop(copy);
            drop(ds);
            cog.persist(out)
        }
    }
}

/// A tile's cells clipped to the raster, and where they go.
struct ExportBlock<T> {
    origin: (isize, isize),
    size: (usize, usize),
    values: Vec<T>,
}

/// An empty GeoTIFF at `path` for a layer with this metadata and `bands` bands: its grid, CRS,
/// cell type and NoData, tiled as the layer is when its tiles are multiples of 16 cells.
fn create_gtiff(
    path: &Path,
    md: &TileLayerMetadata,
    bands: usize,
    compression: Compression,
) -> Result<Dataset> {
    create_gtiff_with(path, md, bands, compression, &[("BIGTIFF", "IF_SAFER")])
}

/// [`create_gtiff`] with more creation options (`BIGTIFF` among them).
fn create_gtiff_with(
    path: &Path,
    md: &TileLayerMetadata,
    bands: usize,
    compression: Compression,
    more: &[(&str, &str)],
) -> Result<Dataset> {
    let grid = md.array_grid();
    let driver = crate::source::geotiff_driver()?;
    let mut opts = CslStringList::new();
    let tl = md.layout.tile_layout;
    let mut pairs: Vec<(&str, String)> = vec![
        // Blocks are compressed on all cores.
        ("NUM_THREADS", "ALL_CPUS".to_string()),
    ];
    pairs.extend(more.iter().map(|&(k, v)| (k, v.to_string())));
    pairs.extend(
        compression
            .creation_options()
            .into_iter()
            .map(|(k, v)| (k, v.to_string())),
    );
    if block_tiled(md) {
        pairs.extend([
            ("TILED", "YES".to_string()),
            ("BLOCKXSIZE", tl.tile_cols.to_string()),
            ("BLOCKYSIZE", tl.tile_rows.to_string()),
        ]);
    }
    for (k, v) in &pairs {
        opts.set_name_value(k, v).map_err(|e| gdal_err(path, e))?;
    }
    let (cols, rows) = (grid.cols as usize, grid.rows as usize);
    macro_rules! create {
        ($t:ty) => {
            driver.create_with_band_type_with_options::<$t, _>(path, cols, rows, bands, &opts)
        };
    }
    let mut ds = match md.cell_type.data_type {
        DataType::U8 => create!(u8),
        DataType::I16 => create!(i16),
        DataType::U16 => create!(u16),
        DataType::I32 => create!(i32),
        DataType::F32 => create!(f32),
        DataType::F64 => create!(f64),
    }
    .map_err(|e| gdal_err(path, e))?;
    ds.set_geo_transform(&grid.geo_transform())
        .map_err(|e| gdal_err(path, e))?;
    if !md.crs.wkt.is_empty() {
        ds.set_spatial_ref(&spatial_ref(&md.crs)?)
            .map_err(|e| gdal_err(path, e))?;
    }
    if let Some(nd) = md.cell_type.nodata {
        for b in 1..=bands {
            ds.rasterband(b)
                .and_then(|mut band| band.set_no_data_value(Some(nd)))
                .map_err(|e| gdal_err(path, e))?;
        }
    }
    // The header and georeferencing written now, by this thread, whose PROJ context the plan
    // warmed: written at the first block instead, a tile thread would start its own.
    ds.flush_cache().map_err(|e| gdal_err(path, e))?;
    Ok(ds)
}

/// Whether the GeoTIFF's blocks are the layer's tiles (TIFF tiles are multiples of 16 cells).
fn block_tiled(md: &TileLayerMetadata) -> bool {
    let tl = md.layout.tile_layout;
    tl.tile_cols.is_multiple_of(16) && tl.tile_rows.is_multiple_of(16)
}

fn write_gtiff<T: Cell + GdalType + Copy>(
    reader: &LayerReader,
    ds: Dataset,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Dataset> {
    let md = reader.metadata();
    let grid = md.array_grid();
    let bands = reader.info().bands.len();
    let tl = md.layout.tile_layout;
    let bounds = md.bounds.to_grid_bounds();
    let row_len = (bounds.col_max - bounds.col_min + 1).max(1) as usize;
    let keys: Vec<_> = bounds.iter_keys().collect();
    progress.start(keys.len() as u64 * bands as u64);
    for b in 1..=bands {
        let mut band = ds.rasterband(b).map_err(|e| gdal_err(path, e))?;
        // Tiles are read and decoded in parallel, a row of tiles at a time (bounded memory), and
        // written in order.
        for row in keys.chunks(row_len) {
            let blocks: Vec<Result<ExportBlock<T>>> = row
                .par_iter()
                .map(|&key| {
                    let tile = reader.read_tile(b, key)?.unwrap_or_else(|| {
                        Tile::empty(md.cell_type, tl.tile_rows as usize, tl.tile_cols as usize)
                    });
                    let [cr, cc] = md.chunk_of(key);
                    let (x0, y0) = (cc * tl.tile_cols as u64, cr * tl.tile_rows as u64);
                    let w = (tl.tile_cols as u64).min(grid.cols - x0) as usize;
                    let h = (tl.tile_rows as u64).min(grid.rows - y0) as usize;
                    // One conversion, cell by cell, straight into the file's type.
                    let values: Vec<T> = crate::with_tile_data!(&tile.data, a => a.slice(ndarray::s![..h, ..w]).iter().map(|v| T::from_f64(v.to_f64())).collect());
                    Ok(ExportBlock {
                        origin: (x0 as isize, y0 as isize),
                        size: (w, h),
                        values,
                    })
                })
                .collect();
            for block in blocks {
                let ExportBlock {
                    origin,
                    size,
                    values,
                } = block?;
                let mut buf = Buffer::new(size, values);
                band.write(origin, size, &mut buf)
                    .map_err(|e| gdal_err(path, e))?;
                progress.advance(1);
            }
        }
    }
    Ok(ds)
}

/// One GeoTIFF written block by block as tile tasks compute its tiles — no layer in between,
/// nothing decoded twice. Built by the embedded fast path (`tessera dem` without
/// `--keep-layer`): each tile is converted to the file's type on the thread that hands it in
/// and written as one TIFF block (one write call while the file's lock is held); blocks are
/// compressed on all cores by GDAL. The file is written under a temporary name beside `out`
/// and renamed by [`GeoTiffWriter::finish`]; dropped unfinished, it is removed.
pub struct GeoTiffWriter {
    ds: std::sync::Mutex<Dataset>,
    metadata: TileLayerMetadata,
    bands: usize,
    temp: TempFile,
    out: PathBuf,
}

impl std::fmt::Debug for GeoTiffWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoTiffWriter")
            .field("out", &self.out)
            .field("bands", &self.bands)
            .finish_non_exhaustive()
    }
}

impl GeoTiffWriter {
    /// Creates the file for a layer with this metadata and `bands` bands.
    pub fn create(
        metadata: &TileLayerMetadata,
        bands: usize,
        out: &Path,
        compression: Compression,
    ) -> Result<GeoTiffWriter> {
        let temp = TempFile::beside(out, ".tif")?;
        let ds = create_gtiff(temp.path()?, metadata, bands, compression)?;
        Ok(GeoTiffWriter {
            ds: std::sync::Mutex::new(ds),
            metadata: metadata.clone(),
            bands,
            temp,
            out: out.to_path_buf(),
        })
    }

    fn write_block<T: Cell + GdalType + Copy>(
        &self,
        band: usize,
        key: SpatialKey,
        a: ndarray::Array2<T>,
    ) -> Result<()> {
        let md = &self.metadata;
        let grid = md.array_grid();
        let (rows, cols) = a.dim();
        let [cr, cc] = md.chunk_of(key);
        let (x0, y0) = (cc * cols as u64, cr * rows as u64);
        let path = &self.out;
        let whole = block_tiled(md);
        let (w, h) = if whole {
            (cols, rows)
        } else {
            (
                (cols as u64).min(grid.cols - x0) as usize,
                (rows as u64).min(grid.rows - y0) as usize,
            )
        };
        // A whole block is the tile's own cells, unless they are not in row-major order.
        let values: Vec<T> = if whole && a.is_standard_layout() {
            let (v, offset) = a.into_raw_vec_and_offset();
            debug_assert_eq!(offset.unwrap_or(0), 0);
            v
        } else if whole {
            a.iter().copied().collect()
        } else {
            a.slice(ndarray::s![..h, ..w]).iter().copied().collect()
        };
        let mut buf = Buffer::new((w, h), values);
        let ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = ds.rasterband(band).map_err(|e| gdal_err(path, e))?;
        if whole {
            b.write_block((cc as usize, cr as usize), &mut buf)
        } else {
            b.write((x0 as isize, y0 as isize), (w, h), &mut buf)
        }
        .map_err(|e| gdal_err(path, e))
    }

    /// Flushes and closes the file and renames it to its name.
    pub fn finish(self) -> Result<()> {
        let GeoTiffWriter { ds, temp, out, .. } = self;
        let ds = ds.into_inner().unwrap_or_else(|p| p.into_inner());
        ds.close().map_err(|e| gdal_err(&out, e))?;
        temp.persist(&out)
    }
}

impl TileSink for GeoTiffWriter {
    /// Writes the tile at `key` of band `band` (0-based): one block when the file's blocks are
    /// the tiles, else the tile's window clipped to the raster.
    fn write_tile(&self, band: usize, key: SpatialKey, tile: Tile) -> Result<()> {
        let md = &self.metadata;
        if band >= self.bands || !md.bounds.to_grid_bounds().contains(key) {
            return Err(Error::Internal(format!(
                "tile {key} of band {band} is outside the GeoTIFF"
            )));
        }
        // Tiles come in the file's type (the chain's output type): converted only if not.
        let data = if tile.data.data_type() == md.cell_type.data_type {
            tile.data
        } else {
            tile.data.convert(md.cell_type.data_type)
        };
        crate::with_tile_data!(data, a => self.write_block(band + 1, key, a))
    }
}

/// Computes the tiles of `plan` in this process, on all cores, and writes them straight into
/// the GeoTIFF `out` — the embedded fast path of `tessera dem`: the same plan, tiles and chain
/// a job runs, without a layer, a re-read or a network. On any error nothing is left at `out`
/// (a file already there stays as it was).
pub fn compute_to_gtiff(
    plan: &IngestPlan,
    options: &IngestOptions,
    out: &Path,
    compression: Compression,
    progress: &dyn Progress,
) -> Result<KeysSummary> {
    let writer = GeoTiffWriter::create(&plan.metadata, plan.band_names.len(), out, compression)?;
    progress.start(plan.keys.len() as u64 * plan.band_names.len() as u64);
    let summary = with_threads(options.threads, || {
        write_keys(plan, options, &writer, &plan.keys, progress)
    })??;
    writer.finish()?;
    Ok(summary)
}
