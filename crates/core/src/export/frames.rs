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
    let mut file = FrameFile::create(md, bands, out)?;
    let bounds = md.bounds.to_grid_bounds();
    let row_len = (bounds.col_max - bounds.col_min + 1).max(1) as usize;
    let keys: Vec<SpatialKey> = bounds.iter_keys().collect();
    progress.start(keys.len() as u64 * bands as u64);
    for band in 1..=bands {
        // A row of tiles is read at a time, in parallel (bounded memory), and appended in order.
        for row in keys.chunks(row_len) {
            let chunks: Vec<[u64; 2]> = row.iter().map(|&k| md.chunk_of(k)).collect();
            file.copy(reader, band, &chunks)?;
            progress.advance(row.len() as u64);
        }
    }
    file.finish(out)
}

/// A GeoTIFF (ZSTD) made of a layer's chunks: GDAL writes the file with no tiles in it, the
/// chunks' frames are appended in any order, and the tile arrays are filled in at the end,
/// where every tile not copied is NoData. Dropped unfinished, nothing is left.
pub(super) struct FrameFile {
    temp: TempFile,
    w: Appender,
    offsets_field: Field,
    counts_field: Field,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    /// Tiles across the raster, and in each band.
    across: u64,
    per_band: usize,
    tile_bytes: usize,
    metadata: crate::model::TileLayerMetadata,
    readers: rayon::ThreadPool,
}

impl FrameFile {
    /// The file, under a temporary name beside `out`, for a layer with this metadata and
    /// `bands` bands, with no tile in it yet.
    pub(super) fn create(
        md: &crate::model::TileLayerMetadata,
        bands: usize,
        out: &Path,
    ) -> Result<FrameFile> {
        let grid = md.array_grid();
        let tl = md.layout.tile_layout;
        let (tile_cols, tile_rows) = (u64::from(tl.tile_cols), u64::from(tl.tile_rows));
        let across = grid.cols.div_ceil(tile_cols);
        let per_band = (across * grid.rows.div_ceil(tile_rows)) as usize;
        let cell_bytes = md.cell_type.data_type.bytes() as u64;
        let tile_bytes = (tile_cols * tile_rows * cell_bytes) as usize;

        let temp = TempFile::beside(out, ".tif")?;
        let path = temp.path()?;
        let cells = grid.cols * grid.rows * bands as u64 * cell_bytes;
        let big = cells > CLASSIC_TIFF_MAX_CELL_BYTES;
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
        let start = file.seek(SeekFrom::End(0)).map_err(|e| gdal_err(path, e))?;
        // A large file past the page cache, as `tessera dem` writes one.
        let direct = cells > tessera_tiff::DIRECT_OVER;
        let w = Appender::new(file, path, start, direct).map_err(|e| gdal_err(path, e))?;
        // Reading a frame is mostly waiting on the disk or the network (a large layer's chunks
        // are not in the page cache): more readers than cores.
        let readers = rayon::ThreadPoolBuilder::new()
            .num_threads(FRAME_READERS)
            .thread_name(|i| format!("tessera-frames-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the frame readers: {e}")))?;
        Ok(FrameFile {
            temp,
            w,
            offsets_field,
            counts_field,
            offsets: vec![0; tiles],
            counts: vec![0; tiles],
            across,
            per_band,
            tile_bytes,
            metadata: md.clone(),
            readers,
        })
    }

    /// The index of the tile at chunk (row, column) of band `band` (1-based) in the tile arrays.
    fn index(&self, band: usize, [row, col]: [u64; 2]) -> Result<usize> {
        let i = (band - 1) * self.per_band + (row * self.across + col) as usize;
        match col < self.across && i < self.counts.len() {
            true => Ok(i),
            false => Err(Error::Internal(format!(
                "chunk {row}.{col} of band {band} is outside the GeoTIFF"
            ))),
        }
    }

    /// Whether the tile at this chunk of band `band` (1-based) is in the file.
    pub(super) fn has(&self, band: usize, chunk: [u64; 2]) -> bool {
        self.index(band, chunk).is_ok_and(|i| self.counts[i] != 0)
    }

    /// Reads the frames of `chunks` of band `band` (1-based) from `reader` in parallel, checks
    /// each, and appends those stored, in order; how many were.
    pub(super) fn copy(
        &mut self,
        reader: &LayerReader,
        band: usize,
        chunks: &[[u64; 2]],
    ) -> Result<usize> {
        let name = &reader.info().bands[band - 1];
        let tile_bytes = self.tile_bytes;
        let frames: Vec<Result<Option<Bytes>>> = self.readers.install(|| {
            chunks
                .par_iter()
                .map(|&chunk| {
                    let frame = reader.chunk_frame(band, chunk)?;
                    if let Some(f) = &frame {
                        check_frame(f, tile_bytes).map_err(|why| {
                            let key = reader.metadata().key_of_chunk(chunk);
                            Error::layer(reader.url(), format!("tile {key} of {name} {why}"))
                        })?;
                    }
                    Ok(frame)
                })
                .collect()
        });
        let mut copied = 0;
        for (&chunk, frame) in chunks.iter().zip(frames) {
            if let Some(f) = frame? {
                let i = self.index(band, chunk)?;
                (self.offsets[i], self.counts[i]) = self.append(&f)?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    /// Appends one frame; where it went and its length.
    fn append(&mut self, frame: &[u8]) -> Result<(u64, u64)> {
        let at = self.w.position();
        let path = self.temp.path()?;
        self.w.put(frame).map_err(|e| gdal_err(path, e))?;
        Ok((at, frame.len() as u64))
    }

    /// How many tiles are not in the file yet.
    pub(super) fn missing(&self) -> usize {
        self.counts.iter().filter(|&&c| c == 0).count()
    }

    /// Points every tile not copied at one frame of NoData, fills in the tile arrays and renames
    /// the file to `out`. `false`, with nothing written, when the frames end past what the tile
    /// offsets hold (32-bit offsets past 4 GiB): the decoding export writes that file.
    pub(super) fn finish(mut self, out: &Path) -> Result<bool> {
        if self.missing() > 0 {
            let frame = empty_frame(&self.metadata, self.tile_bytes)?;
            let (at, len) = self.append(&frame)?;
            for (o, c) in self.offsets.iter_mut().zip(&mut self.counts) {
                if *c == 0 {
                    (*o, *c) = (at, len);
                }
            }
        }
        let end = self.w.position();
        let path = self.temp.path()?.to_path_buf();
        let file = self.w.finish().map_err(|e| gdal_err(&path, e))?;
        let most = self.counts.iter().copied().max().unwrap_or(0);
        if !(holds(&self.offsets_field, end) && holds(&self.counts_field, most)) {
            return Ok(false);
        }
        patch(&self.offsets_field, file, &self.offsets).map_err(|e| gdal_err(&path, e))?;
        patch(&self.counts_field, file, &self.counts).map_err(|e| gdal_err(&path, e))?;
        let FrameFile { temp, w, .. } = self;
        drop(w);
        temp.persist(out)?;
        Ok(true)
    }
}

/// Where a job that an export follows stands, as its watcher last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobProgress {
    /// Running, with this many tasks done: a change says new tiles may be stored.
    Running { tasks_done: u64 },
    /// Succeeded: its layer is committed, complete at its URL.
    Succeeded,
    /// Failed or cancelled.
    Ended,
}

/// How an export that followed a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The GeoTIFF is at its name.
    Exported,
    /// Nothing written: the layer's tiles cannot be copied as they are (not ZSTD frames of whole
    /// GeoTIFF blocks, or offsets past a classic TIFF's), or the job ended before its layer
    /// began. The job's end decides whether the layer is exported otherwise.
    NotFollowed,
    /// Nothing written: the job did not succeed.
    JobEnded,
}

/// Chunks read and appended at a time while following (bounded memory: 64 tiles).
const FOLLOW_BATCH: usize = 64;

/// A pass lists the layer's chunks at least this often while the job runs, tasks done or not.
const FOLLOW_IDLE_PASS: std::time::Duration = std::time::Duration::from_secs(10);

/// The export of a layer that a job is writing, as its tiles appear: each pass lists the
/// chunks stored at `writing` (the job's staging prefix, or its output) when `job` says more
/// tasks are done, and appends the frames not yet in the file. When the job has succeeded, one
/// last pass over the committed layer at `committed` copies the rest, and the tiles it does not
/// store are NoData. A tile task writes the same frame whichever attempt writes it, so a frame
/// copied during the job is the one committed. If the job fails, nothing is left at `out`.
pub fn export_following(
    writing: &str,
    committed: &str,
    out: &Path,
    progress: &dyn Progress,
    job: &dyn Fn() -> JobProgress,
) -> Result<Followed> {
    let pause = || std::thread::sleep(std::time::Duration::from_millis(100));
    // The layer's documents are written when the job's tasks begin.
    let reader = loop {
        match job() {
            JobProgress::Running { .. } => {}
            JobProgress::Succeeded => return Ok(Followed::NotFollowed),
            JobProgress::Ended => return Ok(Followed::JobEnded),
        }
        if let Some(r) = LayerReader::open_unfinished(writing)? {
            break r;
        }
        pause();
    };
    let md = reader.metadata().clone();
    let bands = reader.info().bands.len();
    if !(reader.has_plain_frames() && super::block_tiled(&md)) {
        return Ok(Followed::NotFollowed);
    }
    let mut file = FrameFile::create(&md, bands, out)?;
    progress.start((file.per_band * bands) as u64);
    let mut seen = None;
    let mut last_pass = std::time::Instant::now();
    loop {
        let state = job();
        let committed_reader;
        let from = match state {
            JobProgress::Ended => return Ok(Followed::JobEnded),
            JobProgress::Running { tasks_done } => {
                if seen == Some(tasks_done) && last_pass.elapsed() < FOLLOW_IDLE_PASS {
                    pause();
                    continue;
                }
                seen = Some(tasks_done);
                &reader
            }
            JobProgress::Succeeded => {
                committed_reader = LayerReader::open(committed)?;
                &committed_reader
            }
        };
        last_pass = std::time::Instant::now();
        for band in 1..=bands {
            let new: Vec<[u64; 2]> = from
                .stored_chunks(band)?
                .into_iter()
                .filter(|&c| !file.has(band, c))
                .collect();
            for batch in new.chunks(FOLLOW_BATCH) {
                // A chunk listed and then moved by the commit is copied by the last pass.
                let copied = file.copy(from, band, batch)?;
                progress.advance(copied as u64);
            }
        }
        if state == JobProgress::Succeeded {
            progress.advance(file.missing() as u64);
            return Ok(match file.finish(out)? {
                true => Followed::Exported,
                false => Followed::NotFollowed,
            });
        }
    }
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

/// Whether a tile array (SHORT, LONG or LONG8: libtiff makes the byte counts of a small file
/// with no tiles yet SHORT) holds `v`.
fn holds(field: &Field, v: u64) -> bool {
    match field.field_type {
        3 => v <= u64::from(u16::MAX),
        4 => v <= u64::from(u32::MAX),
        16 => true,
        _ => false,
    }
}

/// Writes `values` over a tile array whose values it [`holds`].
fn patch(field: &Field, file: &File, values: &[u64]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(values.len() * 8);
    for &v in values {
        match field.field_type {
            3 => {
                let v = u16::try_from(v).map_err(std::io::Error::other)?;
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            4 => {
                let v = u32::try_from(v).map_err(std::io::Error::other)?;
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            _ => bytes.extend_from_slice(&v.to_le_bytes()),
        }
    }
    file.write_all_at(&bytes, field.at)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell as StdCell, RefCell};

    use ndarray::Array2;

    use super::*;
    use crate::layer::{LayerWriter, WriteOptions};
    use crate::model::{
        CellSize, CellType, Crs, DataType, GridExtent, LayoutScheme, RasterSummary,
        collect_metadata,
    };
    use crate::store::Store;
    use crate::tile::TileData;

    /// A 40 × 37 grid of f32 cells in 16 × 16 tiles (3 × 3 of them).
    fn metadata() -> crate::model::TileLayerMetadata {
        let summary = RasterSummary {
            name: "grid".into(),
            crs: Crs {
                wkt: String::new(),
                epsg: None,
            },
            grid: GridExtent::from_origin(0.0, 370.0, CellSize::new(10.0, 10.0), 40, 37),
            cell_type: CellType::new(DataType::F32, Some(-9999.0)),
            band_count: 1,
        };
        collect_metadata(&[summary], &LayoutScheme::floating(16, 16).unwrap()).unwrap()
    }

    fn tile(md: &crate::model::TileLayerMetadata, key: SpatialKey) -> Tile {
        let a = Array2::from_shape_fn((16, 16), |(r, c)| {
            (key.col * 1000 + key.row * 100) as f32 + (r * 16 + c) as f32 * 0.25
        });
        Tile {
            data: TileData::F32(a),
            cell_type: md.cell_type,
        }
    }

    /// Every cell of band 1 of a GeoTIFF, as GDAL reads it.
    fn cells(path: &Path) -> Vec<f64> {
        let ds = gdal::Dataset::open(path).unwrap();
        let (cols, rows) = ds.raster_size();
        let band = ds.rasterband(1).unwrap();
        let buf = band
            .read_as::<f64>((0, 0), (cols, rows), (cols, rows), None)
            .unwrap();
        buf.into_shape_and_vec().1
    }

    /// Counts the tiles copied, and how many of them before the job succeeded.
    #[derive(Default)]
    struct Copied {
        before_success: std::sync::atomic::AtomicU64,
        all: std::sync::atomic::AtomicU64,
        succeeded: std::sync::atomic::AtomicBool,
    }

    impl Progress for Copied {
        fn start(&self, _: u64) {}
        fn advance(&self, n: u64) {
            use std::sync::atomic::Ordering::SeqCst;
            self.all.fetch_add(n, SeqCst);
            if !self.succeeded.load(SeqCst) {
                self.before_success.fetch_add(n, SeqCst);
            }
        }
    }

    /// A job as an export following it sees it: each look writes the next few tiles of the
    /// layer (tile (1, 1) never: it is NoData) and says a task more is done; once every tile is
    /// written, the layer is finished and the job `end`s so.
    fn follow(dir: &Path, end: JobProgress) -> (Result<Followed>, Copied, std::path::PathBuf) {
        let md = metadata();
        let url = format!("file://{}", dir.join("layer").display());
        let writer = LayerWriter::create(
            Store::open(&url).unwrap(),
            md.clone(),
            vec!["band_1".into()],
            vec!["grid".into()],
            WriteOptions {
                zstd_level: 1,
                overwrite: false,
            },
        )
        .unwrap();
        let keys: Vec<SpatialKey> = md
            .bounds
            .to_grid_bounds()
            .iter_keys()
            .filter(|&k| k != SpatialKey::new(1, 1))
            .collect();
        let writer = RefCell::new(Some(writer));
        let looks = StdCell::new(0u64);
        let copied = Copied::default();
        let out = dir.join("followed.tif");
        // Tiles written after `n` looks: none in the first two, then two a look.
        let written = |n: u64| ((n.saturating_sub(2) * 2) as usize).min(keys.len());
        let job = || {
            let n = looks.get();
            if written(n) == keys.len() {
                if let Some(w) = writer.borrow_mut().take() {
                    w.finish().unwrap();
                }
                let succeeded = end == JobProgress::Succeeded;
                copied
                    .succeeded
                    .store(succeeded, std::sync::atomic::Ordering::SeqCst);
                return end;
            }
            looks.set(n + 1);
            let w = writer.borrow();
            for &k in &keys[written(n)..written(n + 1)] {
                w.as_ref().unwrap().write_tile(0, k, &tile(&md, k)).unwrap();
            }
            JobProgress::Running { tasks_done: n }
        };
        let r = export_following(&url, &url, &out, &copied, &job);
        (r, copied, out)
    }

    #[test]
    fn an_export_that_follows_a_job_copies_tiles_as_they_are_stored_and_equals_the_export() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, copied, out) = follow(tmp.path(), JobProgress::Succeeded);
        assert_eq!(r.unwrap(), Followed::Exported);
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(copied.all.load(SeqCst), 9, "8 tiles copied, 1 NoData");
        assert!(
            copied.before_success.load(SeqCst) >= 6,
            "{} tiles copied while the job ran",
            copied.before_success.load(SeqCst)
        );
        // Cell for cell what the decoding export of the finished layer writes.
        let url = format!("file://{}", tmp.path().join("layer").display());
        let decoded = tmp.path().join("decoded.tif");
        super::super::export(
            &url,
            &decoded,
            super::super::ExportFormat::GTiff,
            Compression::Deflate,
            &crate::ingest::NoProgress,
        )
        .unwrap();
        let (got, want) = (cells(&out), cells(&decoded));
        assert_eq!(got.len(), 40 * 37);
        assert!(got == want, "the followed export reads differently");
        assert!(got.contains(&-9999.0), "tile (1, 1) reads as NoData");
    }

    #[test]
    fn an_export_that_follows_a_failed_job_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (r, _, out) = follow(tmp.path(), JobProgress::Ended);
        assert_eq!(r.unwrap(), Followed::JobEnded);
        assert!(!out.exists());
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["layer"], "no temporary file is left");
    }
}
