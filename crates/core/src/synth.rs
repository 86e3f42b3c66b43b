//! Deterministic synthetic rasters for examples, tests and benches: a DSM of rolling terrain
//! with rectangular buildings, the same for the same seed on every machine. Every cell is a pure
//! function of (seed, col, row), so any window can be generated alone, in bounded memory.

use std::path::Path;

use gdal::DriverManager;
use gdal::cpl::CslStringList;
use gdal::raster::Buffer;
use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::model::{CellSize, GridExtent};
use crate::source::{parse_crs, spatial_ref};

/// Side of the square blocks that each hold at most one building, in cells.
const BLOCK: u64 = 48;

fn mix(mut z: u64) -> u64 {
    // SplitMix64 finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// A building in a block: cells [c0, c1) × [r0, r1) relative to the block, and its height.
fn building(seed: u64, bx: u64, by: u64) -> Option<(u64, u64, u64, u64, f32)> {
    let h = mix(seed ^ mix(bx.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ by));
    if h.is_multiple_of(5) {
        return None; // an open square or park
    }
    let w = 10 + (h >> 8) % 30;
    let d = 10 + (h >> 16) % 30;
    let c0 = (h >> 24) % (BLOCK - w);
    let r0 = (h >> 32) % (BLOCK - d);
    let height = 6.0 + ((h >> 40) % 400) as f32 / 10.0;
    Some((c0, c0 + w, r0, r0 + d, height))
}

/// The synthetic DSM's height at cell (col, row), in metres.
pub fn dsm_value(seed: u64, col: u64, row: u64) -> f32 {
    let (x, y) = (col as f64, row as f64);
    let phase = (seed % 1000) as f64 / 159.0;
    let terrain = 120.0
        + 25.0 * (x / 410.0 + phase).sin() * (y / 330.0).cos()
        + 6.0 * (x / 57.0 + y / 83.0).sin()
        + 1.5 * (x / 9.0).sin() * (y / 11.0 + phase).cos();
    let (bx, by) = (col / BLOCK, row / BLOCK);
    let (cx, cy) = (col % BLOCK, row % BLOCK);
    let roof = match building(seed, bx, by) {
        Some((c0, c1, r0, r1, h)) if (c0..c1).contains(&cx) && (r0..r1).contains(&cy) => h,
        _ => 0.0,
    };
    terrain as f32 + roof
}

/// The cells [col, col + cols) × [row, row + rows) of the synthetic DSM, rows on all cores (a
/// city-sized DSM is billions of cells).
pub fn dsm_window(seed: u64, col: u64, row: u64, cols: usize, rows: usize) -> Array2<f32> {
    let mut cells = vec![0f32; rows * cols];
    if cols > 0 {
        cells
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, line)| {
                for (c, v) in line.iter_mut().enumerate() {
                    *v = dsm_value(seed, col + c as u64, row + r as u64);
                }
            });
    }
    Array2::from_shape_vec((rows, cols), cells).unwrap_or_else(|_| Array2::zeros((rows, cols)))
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthDsm {
    pub cols: u64,
    pub rows: u64,
    pub seed: u64,
    pub cell_size: f64,
    /// North-west corner.
    pub origin: (f64, f64),
    pub crs: String,
}

impl Default for SynthDsm {
    fn default() -> Self {
        SynthDsm {
            cols: 2048,
            rows: 2048,
            seed: 1,
            cell_size: 1.0,
            origin: (500_000.0, 6_400_000.0),
            crs: "EPSG:32633".into(),
        }
    }
}

/// Writes the default synthetic DSM, `cols` × `rows` cells, to `path`: the input of tests
/// that need a tiled DEFLATE GeoTIFF of a given size.
#[cfg(test)]
pub(crate) fn write_test_dsm(path: &Path, cols: u64, rows: u64) {
    SynthDsm {
        cols,
        rows,
        ..SynthDsm::default()
    }
    .write_geotiff(path, &crate::ingest::NoProgress)
    .unwrap_or_else(|e| panic!("cannot write the test DSM {}: {e}", path.display()));
}

/// Writes `cells` (row-major, `cols` × `rows`) with GDAL to a GeoTIFF at `path` made with
/// creation `options`, with 1 m cells at (500,000, 6,400,000) of EPSG:32633 and `nodata`: a test
/// input of a given type and layout.
#[cfg(test)]
pub(crate) fn write_test_tiff<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    (cols, rows): (usize, usize),
    options: &[(&str, &str)],
    nodata: Option<f64>,
    cells: Vec<T>,
) {
    let mut opts = CslStringList::new();
    for (k, v) in options {
        opts.set_name_value(k, v).unwrap();
    }
    let mut ds = crate::source::geotiff_driver()
        .unwrap()
        .create_with_band_type_with_options::<T, _>(path, cols, rows, 1, &opts)
        .unwrap();
    ds.set_geo_transform(&[500_000.0, 1.0, 0.0, 6_400_000.0, 0.0, -1.0])
        .unwrap();
    ds.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(32633).unwrap())
        .unwrap();
    let mut band = ds.rasterband(1).unwrap();
    band.set_no_data_value(nodata).unwrap();
    band.write((0, 0), (cols, rows), &mut Buffer::new((cols, rows), cells))
        .unwrap();
}

impl SynthDsm {
    pub fn grid(&self) -> GridExtent {
        GridExtent::from_origin(
            self.origin.0,
            self.origin.1,
            CellSize::new(self.cell_size, self.cell_size),
            self.cols,
            self.rows,
        )
    }

    /// Writes the DSM as a tiled, DEFLATE-compressed Float32 GeoTIFF, 256 rows at a time.
    pub fn write_geotiff(&self, path: &Path, progress: &dyn Progress) -> Result<()> {
        if self.cols == 0 || self.rows == 0 || self.cell_size.is_nan() || self.cell_size <= 0.0 {
            return Err(Error::invalid(format!(
                "a synthetic DSM needs cols, rows and cell size > 0 (got {} x {}, {})",
                self.cols, self.rows, self.cell_size
            )));
        }
        let err = |e: gdal::errors::GdalError| Error::storage(path.display().to_string(), e);
        let crs = parse_crs(&self.crs)?;
        let driver = DriverManager::get_driver_by_name("GTiff").map_err(err)?;
        let mut opts = CslStringList::new();
        for (k, v) in [
            ("TILED", "YES"),
            ("COMPRESS", "DEFLATE"),
            ("BIGTIFF", "IF_SAFER"),
            ("BLOCKXSIZE", "256"),
            ("BLOCKYSIZE", "256"),
            // Blocks compressed on all cores (each block alone: the same bytes).
            ("NUM_THREADS", "ALL_CPUS"),
        ] {
            opts.set_name_value(k, v).map_err(err)?;
        }
        let mut ds = driver
            .create_with_band_type_with_options::<f32, _>(
                path,
                self.cols as usize,
                self.rows as usize,
                1,
                &opts,
            )
            .map_err(err)?;
        ds.set_geo_transform(&self.grid().geo_transform())
            .map_err(err)?;
        ds.set_spatial_ref(&spatial_ref(&crs)?).map_err(err)?;
        let mut band = ds.rasterband(1).map_err(err)?;
        const STRIP: u64 = 256;
        progress.start(self.rows.div_ceil(STRIP));
        let mut row = 0;
        while row < self.rows {
            let n = STRIP.min(self.rows - row) as usize;
            let strip = dsm_window(self.seed, 0, row, self.cols as usize, n);
            let mut buf = Buffer::new((self.cols as usize, n), strip.into_raw_vec_and_offset().0);
            band.write((0, row as isize), (self.cols as usize, n), &mut buf)
                .map_err(err)?;
            row += n as u64;
            progress.advance(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cube_write_that_fails_while_replacing_one_leaves_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("c.zarr").to_str().unwrap().to_string();
        let cube = SynthCube {
            steps: 48,
            rows: 5,
            cols: 7,
            start: 0,
        };
        let info = cube.write(&url, false).unwrap();
        let files = |p: &std::path::Path| {
            let mut v: Vec<_> = walk(p);
            v.sort();
            v
        };
        fn walk(p: &std::path::Path) -> Vec<(String, Vec<u8>)> {
            let mut out = Vec::new();
            for e in std::fs::read_dir(p).unwrap().flatten() {
                if e.path().is_dir() {
                    out.extend(walk(&e.path()));
                } else {
                    out.push((
                        e.path().display().to_string(),
                        std::fs::read(e.path()).unwrap(),
                    ));
                }
            }
            out
        }
        let before = files(dir.path());
        // A replacement that fails after writing a chunk.
        let err = crate::cube::CubeWriter::write_whole(&url, info.clone(), 3, true, |w| {
            w.write_block(0, 0, 0, 48, 5, &vec![1.0; 48 * 35])?;
            Err(Error::Internal("the disk is full".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the disk is full"));
        assert_eq!(
            files(dir.path()),
            before,
            "the old cube is whole, nothing else is left"
        );
        // One that succeeds replaces it.
        crate::cube::CubeWriter::write_whole(&url, info, 3, true, |w| {
            w.write_block(0, 0, 0, 48, 5, &vec![1.0; 48 * 35])?;
            w.write_block(1, 0, 0, 48, 5, &vec![2.0; 48 * 35])
        })
        .unwrap();
        assert_ne!(files(dir.path()), before);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1, "no staging prefix is left");
    }

    #[test]
    fn the_dsm_is_deterministic_and_windows_agree_with_cells() {
        let w = dsm_window(7, 100, 200, 64, 32);
        assert_eq!(w, dsm_window(7, 100, 200, 64, 32));
        assert_eq!(w[(5, 9)], dsm_value(7, 109, 205));
        assert_ne!(
            dsm_window(8, 100, 200, 64, 32),
            w,
            "another seed, another city"
        );
        // Buildings stand out of the terrain: some cells are well above the terrain's range.
        let big = dsm_window(7, 0, 0, 480, 480);
        let tall = big.iter().filter(|v| **v > 160.0 + 6.0).count();
        assert!(tall > 0 && tall < big.len() / 2, "{tall} building cells");
    }
}

/// A deterministic synthetic reanalysis cube: hourly 2 m temperature (`t2m`, K) and total
/// precipitation (`tp`, m) on a regular 0.25° latitude/longitude grid, with diurnal and
/// seasonal cycles, written as a Tessera space-time layer (a Zarr source for cube jobs).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthCube {
    pub steps: usize,
    pub rows: usize,
    pub cols: usize,
    /// The first step, seconds since the epoch (whole hours).
    pub start: i64,
}

impl SynthCube {
    fn value(&self, var: usize, t: usize, row: usize, col: usize) -> f32 {
        let hours = (self.start / 3600) as f64 + t as f64;
        let day = (2.0 * std::f64::consts::PI * hours / 24.0).sin();
        let year = (2.0 * std::f64::consts::PI * hours / 8766.0).sin();
        let (y, x) = (
            row as f64 / self.rows.max(1) as f64,
            col as f64 / self.cols.max(1) as f64,
        );
        // A hash of the indices for small deterministic noise.
        let mut h = (t as u64) ^ ((row as u64) << 21) ^ ((col as u64) << 42) ^ (var as u64) << 60;
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        let noise = (h % 1000) as f64 / 1000.0 - 0.5;
        let v = match var {
            0 => 283.0 - 12.0 * y + 3.0 * (6.0 * x).sin() + 4.0 * day + 8.0 * year + noise,
            _ => (0.0004 * ((9.0 * x + 4.0 * y + hours / 30.0).sin() + noise)).max(0.0),
        };
        v as f32
    }

    /// Writes the cube to `url` (a path or URL).
    pub fn write(&self, url: &str, overwrite: bool) -> Result<crate::cube::CubeInfo> {
        use crate::cube::{Chunks, CubeInfo, CubeVariable, Lead, layer::CUBE_FORMAT_VERSION};
        if self.steps == 0 || self.rows < 2 || self.cols < 2 {
            return Err(Error::invalid(
                "a synthetic cube needs at least 1 step and 2 x 2 cells",
            ));
        }
        let attrs = |units: &str, long: &str| {
            serde_json::Map::from_iter([
                ("units".to_string(), serde_json::json!(units)),
                ("long_name".to_string(), serde_json::json!(long)),
            ])
        };
        let chunk_t = 24.min(self.steps);
        let info = CubeInfo {
            format_version: CUBE_FORMAT_VERSION,
            grid: GridExtent::from_origin(
                -10.125,
                60.125,
                CellSize::new(0.25, 0.25),
                self.cols as u64,
                self.rows as u64,
            ),
            crs: parse_crs("EPSG:4326")?,
            lead: Lead::Time(
                (0..self.steps)
                    .map(|t| self.start + 3600 * t as i64)
                    .collect(),
            ),
            variables: vec![
                CubeVariable {
                    name: "t2m".into(),
                    attrs: attrs("K", "2 metre temperature"),
                    axes: vec![],
                },
                CubeVariable {
                    name: "tp".into(),
                    attrs: attrs("m", "Total precipitation"),
                    axes: vec![],
                },
            ],
            chunks: Chunks {
                lead: chunk_t,
                y: self.rows.min(256),
                x: self.cols.min(256),
            },
            sources: vec!["tessera synth cube".into()],
            skipped_inputs: Vec::new(),
            incremental: None,
            complete: false,
        };
        let plane = self.rows * self.cols;
        crate::cube::CubeWriter::write_whole(url, info, 3, overwrite, |writer| {
            (0..2).try_for_each(|var| {
                (0..self.steps).step_by(chunk_t).try_for_each(|t0| {
                    let n = chunk_t.min(self.steps - t0);
                    let mut data = Vec::with_capacity(n * plane);
                    for t in t0..t0 + n {
                        for r in 0..self.rows {
                            data.extend((0..self.cols).map(|c| self.value(var, t, r, c)));
                        }
                    }
                    writer.write_block(var, t0, 0, n, self.rows, &data)
                })
            })
        })
    }
}
