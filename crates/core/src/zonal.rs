//! Zonal statistics: per zone of a polygon layer, statistics of the raster cells it covers,
//! each cell weighted by the exact fraction of its area inside the zone (exactextract's
//! definitions), for every band of a raster or every variable and time step of a cube — as an
//! Arrow table written to Parquet or CSV.
//!
//! # Layout
//! - [`coverage`]: the fraction of each cell a polygon covers (exact, centre, all-touched).
//! - [`stats`]: the statistics, as partial aggregates that merge exactly.
//! - [`zones`]: reading the polygons, ids and attributes through OGR, reprojected.
//! - `input`: the rasters and cubes a zonal job reads.
//! - `table`: the long-form table and its Parquet / CSV writer.
//!
//! The coverage table — (zone, cell, fraction) — is computed once per grid and zone set and
//! reused for every band, variable and time step. Values are read a piece at a time (a band of
//! rows × a run of time steps, at most [`PIECE_BYTES`]), and the statistics of a piece of time
//! steps are written as soon as they are complete.

pub mod coverage;
mod input;
pub mod stats;
mod table;
pub mod zones;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ingest::Progress;
use crate::model::GridExtent;

pub use coverage::{Cover, Method, Polygon};
pub use input::ZonalInput;
pub use stats::{Accumulator, Stat};
pub use table::TableFormat;
pub use zones::{Column, ZoneOptions, Zones};

/// The most value bytes (f64) held at once: a band of rows × a run of time steps.
pub const PIECE_BYTES: usize = 64 << 20;

/// What to compute.
#[derive(Debug, Clone)]
pub struct ZonalOptions {
    pub zones: ZoneOptions,
    pub stats: Vec<Stat>,
    pub method: Method,
    /// Cube variables (empty: all).
    pub variables: Vec<String>,
    /// A cube's time range, inclusive, seconds since the epoch.
    pub time: Option<(i64, i64)>,
    /// Raster bands, 1-based (empty: all).
    pub bands: Vec<usize>,
}

/// What a zonal run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ZonalSummary {
    pub zones: usize,
    /// Zones that cover no cell of the grid (their rows have count 0 and null statistics).
    pub zones_outside: usize,
    /// (variable, time step) pairs, or bands.
    pub layers: usize,
    pub rows: usize,
}

/// Each zone's covered cells on `grid`, from its polygons in map coordinates.
pub fn coverage_table(zones: &Zones, grid: &GridExtent, method: Method) -> Vec<Vec<Cover>> {
    zones
        .polygons
        .par_iter()
        .map(|polygons| {
            let parts: Vec<Polygon> = polygons
                .iter()
                .filter(|rings| !rings.is_empty())
                .map(|rings| {
                    let to_grid = |ring: &Vec<(f64, f64)>| -> coverage::Ring {
                        ring.iter()
                            .map(|&(x, y)| grid.map_to_grid_f64(x, y))
                            .collect()
                    };
                    Polygon {
                        exterior: to_grid(&rings[0]),
                        holes: rings[1..].iter().map(to_grid).collect(),
                    }
                })
                .collect();
            coverage::coverage(&parts, grid.rows, grid.cols, method)
        })
        .collect()
}

/// Runs a zonal job on `input` and writes its table to `out` (`-`: CSV on standard output).
/// The table is written beside `out` and moved into place at the end: a failed run leaves no
/// file and an existing one untouched.
pub fn run(
    input: &str,
    options: &ZonalOptions,
    out: &str,
    progress: &dyn Progress,
) -> Result<ZonalSummary> {
    let format = TableFormat::of(out)?;
    let source = ZonalInput::open(input, &options.variables, options.time, &options.bands)?;
    let crs = source.crs();
    if crs.wkt.is_empty() {
        return Err(Error::Crs(format!(
            "{input} has no CRS: zones cannot be placed on it (set one with gdal_edit.py -a_srs)"
        )));
    }
    let zones = Zones::read(&options.zones, &crs)?;
    let grid = source.grid();
    let cover = coverage_table(&zones, &grid, options.method);
    let zones_outside = cover.iter().filter(|c| c.is_empty()).count();
    let layers = source.layer_count();
    let mut writer = table::TableWriter::create(
        out,
        format,
        &zones,
        &options.stats,
        source.has_variables(),
        source.has_time(),
    )?;
    progress.start((layers * zones.len()) as u64);
    let (rows, cols) = (grid.rows as usize, grid.cols as usize);
    let band_rows = (PIECE_BYTES / (cols * 8).max(1)).clamp(1, rows.max(1));
    let cell_area = grid.cell_size.width * grid.cell_size.height;
    let keep = stats::keeps_values(&options.stats);
    let mut written = 0;
    let mut values = Vec::new();
    for var in 0..source.variable_count() {
        let steps = source.steps(var);
        let per_piece = (PIECE_BYTES / (band_rows * cols * 8).max(1)).max(1);
        for piece_start in (steps.start..steps.end).step_by(per_piece) {
            let piece = piece_start..(piece_start + per_piece).min(steps.end);
            let mut accs: Vec<Vec<Accumulator>> = (0..zones.len())
                .map(|_| vec![Accumulator::new(keep); piece.len()])
                .collect();
            for r0 in (0..rows).step_by(band_rows) {
                let band = r0..(r0 + band_rows).min(rows);
                let band_cells = band.len() * cols;
                source.read(var, piece.clone(), band.clone(), &mut values)?;
                accs.par_iter_mut().zip(&cover).for_each(|(acc, cells)| {
                    let first = cells.partition_point(|c| (c.row as usize) < band.start);
                    let last = cells.partition_point(|c| (c.row as usize) < band.end);
                    for (s, acc) in acc.iter_mut().enumerate() {
                        let plane = &values[s * band_cells..(s + 1) * band_cells];
                        for c in &cells[first..last] {
                            let at = (c.row as usize - band.start) * cols + c.col as usize;
                            acc.add(plane[at], c.fraction);
                        }
                    }
                });
            }
            written += writer.write_piece(&source, var, piece.clone(), &accs, cell_area)?;
            progress.advance((piece.len() * zones.len()) as u64);
        }
    }
    writer.finish()?;
    Ok(ZonalSummary {
        zones: zones.len(),
        zones_outside,
        layers,
        rows: written,
    })
}
