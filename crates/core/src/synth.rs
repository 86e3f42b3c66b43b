//! Deterministic synthetic rasters for examples, tests and benches: a DSM of rolling terrain
//! with rectangular buildings, the same for the same seed on every machine. Every cell is a pure
//! function of (seed, col, row), so any window can be generated alone, in bounded memory.

use std::path::Path;

use gdal::DriverManager;
use gdal::cpl::CslStringList;
use gdal::raster::Buffer;
use ndarray::Array2;

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

/// The cells [col, col + cols) × [row, row + rows) of the synthetic DSM.
pub fn dsm_window(seed: u64, col: u64, row: u64, cols: usize, rows: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        dsm_value(seed, col + c as u64, row + r as u64)
    })
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
