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
//! - [`job`]: the `zonal:` job section, its plan, tasks and commit — for `tessera zonal` here
//!   and for a coordinator's workers alike.
//! - `table`: the long-form table and its Parquet / CSV writer.
//!
//! The coverage table — (zone, cell, fraction) — is computed once per grid and zone set and
//! reused for every band, variable and time step. Values are read a piece at a time (a band of
//! rows × a run of time steps, at most [`PIECE_BYTES`]), and the statistics of a piece of time
//! steps are written as soon as they are complete.

pub mod coverage;
mod input;
pub mod job;
pub mod stats;
pub(crate) mod table;
pub mod zones;

use crate::error::Result;
use crate::ingest::Progress;

pub use coverage::{Cover, Method, Polygon};
pub use input::ZonalInput;
pub use job::{Weights, ZonalHeader, ZonalPlan, ZonalSpec, ZonalTask};
pub use stats::{Accumulator, Stat};
pub use table::TableFormat;
pub use zones::{Column, ZoneOptions, Zones};

/// The most value bytes (f64) a task holds at once: a band of rows × a run of time steps.
pub const PIECE_BYTES: usize = 64 << 20;

/// A zonal job's options, checked (from a [`ZonalSpec`]).
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
    /// A weight per cell for the `weighted_*` statistics.
    pub weights: Option<job::Weights>,
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

/// Runs a zonal job here, task after task of its plan, and writes its table to `out` (`-`:
/// CSV on standard output). The table is written beside `out` and moved into place at the
/// end: a failed run leaves no file and an existing one untouched.
pub fn run(
    input: &str,
    spec: &ZonalSpec,
    out: &str,
    progress: &dyn Progress,
) -> Result<ZonalSummary> {
    spec.validate(out)?;
    let options = spec.options()?;
    let source = ZonalInput::open(input, &options.variables, options.time, &options.bands)?;
    let header = ZonalHeader::of(&source);
    if let Some(w) = &options.weights {
        w.check(&header.grid, &header.crs)?;
    }
    let plan = ZonalPlan::new(input, spec, header, out, &std::process::id().to_string(), 1)?;
    let zones = Zones::read(&options.zones, &plan.header.crs)?;
    let layers = plan.header.variables.len() * plan.header.steps.len();
    progress.start((layers * zones.len()) as u64);
    let mut covered = vec![false; zones.len()];
    // Tasks of the same rows follow each other's steps: their coverage is computed once.
    let mut cover: Option<(std::ops::Range<usize>, Vec<Vec<Cover>>)> = None;
    let mut values = Vec::new();
    let rows = plan.write_table(&zones, |t| {
        let task = &plan.tasks[t];
        if cover.as_ref().is_none_or(|(rows, _)| *rows != task.rows) {
            cover = Some((task.rows.clone(), plan.coverage(&zones, task.rows.clone())?));
        }
        let Some((_, cells)) = cover.as_ref() else {
            return Err(crate::Error::Internal("no coverage".into()));
        };
        for (seen, cells) in covered.iter_mut().zip(cells) {
            *seen |= !cells.is_empty();
        }
        let accs = plan.aggregate(&source, task, cells, &mut values)?;
        if task.rows.end == plan.header.grid.rows as usize {
            progress.advance((task.steps.len() * zones.len()) as u64);
        }
        Ok(accs)
    })?;
    Ok(ZonalSummary {
        zones: zones.len(),
        zones_outside: covered.iter().filter(|c| !**c).count(),
        layers,
        rows,
    })
}
