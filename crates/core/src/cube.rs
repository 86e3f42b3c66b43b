//! Space-time layers ("cubes"): per variable an array with dims (time, [member], [level], y, x),
//! made from many NetCDF / GRIB / Zarr files concatenated along time, and the temporal and
//! spatial operations on them as map/reduce over blocks of (time range, row band).
//!
//! # Layout
//! - [`time`]: CF time (`units`, `calendar`), the proleptic Gregorian calendar.
//! - [`source`]: reading a multidimensional file through GDAL (GRIB by message, NetCDF and Zarr
//!   through the multidimensional API) as a [`CubeSource`].
//! - [`layer`]: the layer format — a Zarr v2 group that xarray opens with decoded time.
//! - [`temporal`]: resample, climatology and anomaly as accumulators over time steps.
//! - [`differentiate`]: d/dx, d/dy and magnitude with xarray's `differentiate` arithmetic.
//! - [`plan`]: the job (`CubeSpec`) → plan of blocks and stages → the tasks a worker runs; the
//!   products' outputs and coordinates are planned in `products`.
//! - [`incremental`]: runs that bring existing products up to date with new time steps.
//! - [`read`]: selection by variables, time range and bbox, and origin/shape access.

mod blocks;
pub mod differentiate;
mod execute;
pub mod incremental;
pub mod layer;
mod netcdf;
mod pieces;
pub mod plan;
mod products;
pub mod read;
mod reduce;
pub mod source;
pub mod spec;
pub mod temporal;
pub mod time;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};

pub use layer::{CubeReader, CubeWriter};
pub use plan::{CubePlan, CubeSpec, CubeTask};
pub use read::{Selection, Subset};
pub use source::CubeSource;

/// A dimension between time and y: a pressure level or height, or an ensemble member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<f64>,
    #[serde(default)]
    pub attrs: Map<String, Value>,
}

/// A variable: its name, CF attributes and the dims between time and y.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeVariable {
    pub name: String,
    #[serde(default)]
    pub attrs: Map<String, Value>,
    #[serde(default)]
    pub axes: Vec<Axis>,
}

impl CubeVariable {
    /// Cells per time step.
    pub fn plane_len(&self, grid: &GridExtent) -> usize {
        self.axes_len() * (grid.cols * grid.rows) as usize
    }

    /// The number of (member, level) combinations per time step.
    pub fn axes_len(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }
}

/// The leading dimension of a cube: time, or the groups of a climatology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lead {
    /// Instants, seconds since 1970-01-01 UTC.
    Time(Vec<i64>),
    Month(Vec<u32>),
    Season(Vec<String>),
    Dayofyear(Vec<u32>),
}

impl Lead {
    pub fn name(&self) -> &'static str {
        match self {
            Lead::Time(_) => "time",
            Lead::Month(_) => "month",
            Lead::Season(_) => "season",
            Lead::Dayofyear(_) => "dayofyear",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Lead::Time(v) => v.len(),
            Lead::Month(v) | Lead::Dayofyear(v) => v.len(),
            Lead::Season(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn times(&self) -> Option<&[i64]> {
        match self {
            Lead::Time(v) => Some(v),
            _ => None,
        }
    }
}

/// Chunk sizes along (lead, y, x); member and level chunks are 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunks {
    pub lead: usize,
    pub y: usize,
    pub x: usize,
}

/// Everything about a cube layer, kept in its root `.zattrs` under `"tessera_cube"`.
///
/// The horizontal grid is a raster's: a north-up [`GridExtent`] in a [`Crs`]. Format version 1
/// kept it as `{width, height, geo_transform, crs_wkt}`; such cubes are still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "stored::StoredCubeInfo")]
pub struct CubeInfo {
    pub format_version: u32,
    pub grid: GridExtent,
    pub crs: Crs,
    pub lead: Lead,
    pub variables: Vec<CubeVariable>,
    pub chunks: Chunks,
    #[serde(default)]
    pub sources: Vec<String>,
    /// What was left out of sources damaged in part (`on_bad_input: skip`), by source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_inputs: Vec<String>,
    /// Set on a product kept by incremental runs: the input steps it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Inputs>,
    pub complete: bool,
}

/// The input time steps a product kept by incremental runs was computed from, as runs of
/// equal spacing `[first, step, count]` (ten years of hourly steps are one run): the next run
/// reads only the steps that are not here. Such a product's lead coordinate has fixed chunks,
/// so that a reader of its old metadata still decodes the coordinate chunks an append
/// rewrites.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub runs: Vec<[i64; 3]>,
}

impl Inputs {
    /// The runs of sorted, distinct `times`.
    pub fn from_times(times: &[i64]) -> Inputs {
        let mut runs: Vec<[i64; 3]> = Vec::new();
        for &t in times {
            match runs.last_mut() {
                Some([first, step, count]) if *count == 1 => {
                    *step = t - *first;
                    *count = 2;
                }
                Some([first, step, count]) if *first + *step * *count == t => *count += 1,
                _ => runs.push([t, 0, 1]),
            }
        }
        Inputs { runs }
    }

    pub fn times(&self) -> Vec<i64> {
        self.runs
            .iter()
            .flat_map(|&[first, step, count]| (0..count).map(move |k| first + step * k))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r[2].max(0) as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CubeInfo {
    pub fn variable(&self, name: &str) -> Result<(usize, &CubeVariable)> {
        self.variables
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == name)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown variable {name:?} (the layer has {})",
                    self.variable_names().join(", ")
                ))
            })
    }

    pub fn variable_names(&self) -> Vec<String> {
        self.variables.iter().map(|v| v.name.clone()).collect()
    }

    /// The dims of a variable, outermost first.
    pub fn dims(&self, var: &CubeVariable) -> Vec<String> {
        let (y, x) = self.crs.yx_dim_names();
        let mut dims = vec![self.lead.name().to_string()];
        dims.extend(var.axes.iter().map(|a| a.name.clone()));
        dims.extend([y.to_string(), x.to_string()]);
        dims
    }

    /// The shape of a variable's array.
    pub fn shape(&self, var: &CubeVariable) -> Vec<u64> {
        let mut shape = vec![self.lead.len() as u64];
        shape.extend(var.axes.iter().map(|a| a.values.len() as u64));
        shape.extend([self.grid.rows, self.grid.cols]);
        shape
    }

    /// The chunk shape of a variable's array.
    pub fn chunk_shape(&self, var: &CubeVariable) -> Vec<u64> {
        let mut shape = vec![self.chunks.lead as u64];
        shape.extend(var.axes.iter().map(|_| 1));
        shape.extend([self.chunks.y as u64, self.chunks.x as u64]);
        shape
    }
}

/// How a cube's attributes are stored, in every format version this Tessera reads.
mod stored {
    use serde::Deserialize;

    use super::{Chunks, CubeInfo, CubeVariable, Lead};
    use crate::model::{CellSize, Crs, GridExtent};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StoredGrid {
        Grid(GridExtent),
        /// Format version 1.
        GeoTransform {
            width: u64,
            height: u64,
            geo_transform: [f64; 6],
            crs_wkt: String,
        },
    }

    #[derive(Deserialize)]
    pub(super) struct StoredCubeInfo {
        format_version: u32,
        grid: StoredGrid,
        crs: Option<Crs>,
        lead: Lead,
        variables: Vec<CubeVariable>,
        chunks: Chunks,
        #[serde(default)]
        sources: Vec<String>,
        #[serde(default)]
        skipped_inputs: Vec<String>,
        #[serde(default)]
        incremental: Option<super::Inputs>,
        complete: bool,
    }

    impl TryFrom<StoredCubeInfo> for CubeInfo {
        type Error = String;

        fn try_from(s: StoredCubeInfo) -> Result<CubeInfo, String> {
            let (grid, crs) = match (s.grid, s.crs) {
                (StoredGrid::Grid(grid), Some(crs)) => (grid, crs),
                (StoredGrid::Grid(_), None) => return Err("the grid has no `crs`".into()),
                (
                    StoredGrid::GeoTransform {
                        width,
                        height,
                        geo_transform: g,
                        crs_wkt,
                    },
                    _,
                ) => {
                    if g[2] != 0.0 || g[4] != 0.0 || g[1] <= 0.0 || g[5] >= 0.0 {
                        return Err(format!("the geotransform {g:?} is not north-up"));
                    }
                    let cell = CellSize::new(g[1], -g[5]);
                    let grid = GridExtent::from_origin(g[0], g[3], cell, width, height);
                    (grid, Crs::from_wkt(crs_wkt))
                }
            };
            Ok(CubeInfo {
                format_version: s.format_version,
                grid,
                crs,
                lead: s.lead,
                variables: s.variables,
                chunks: s.chunks,
                sources: s.sources,
                skipped_inputs: s.skipped_inputs,
                incremental: s.incremental,
                complete: s.complete,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CellSize;
    use serde_json::json;

    fn info(grid: Value, crs: Option<Value>) -> Value {
        let mut doc = json!({
            "format_version": 1, "grid": grid, "lead": {"time": [0, 3600]},
            "variables": [{"name": "t2m"}], "chunks": {"lead": 2, "y": 2, "x": 4},
            "complete": true,
        });
        if let Some(crs) = crs {
            doc["crs"] = crs;
        }
        doc
    }

    #[test]
    fn a_version_1_cube_reads_its_grid_as_a_grid_extent_and_crs() {
        let v1 = info(
            json!({"width": 4, "height": 2, "geo_transform": [-10.125, 0.25, 0.0, 60.125, 0.0, -0.25],
                   "crs_wkt": "GEOGCRS[\"WGS 84\"]"}),
            None,
        );
        let read: CubeInfo = serde_json::from_value(v1).expect("v1");
        let grid = GridExtent::from_origin(-10.125, 60.125, CellSize::new(0.25, 0.25), 4, 2);
        assert_eq!(read.grid, grid);
        assert_eq!(read.crs, Crs::from_wkt("GEOGCRS[\"WGS 84\"]"));
        assert_eq!(read.crs.yx_dim_names(), ("latitude", "longitude"));
        assert_eq!(read.shape(&read.variables[0]), [2, 2, 4]);

        // What this version writes reads back the same.
        let mut now = read.clone();
        now.format_version = layer::CUBE_FORMAT_VERSION;
        let written = serde_json::to_value(&now).expect("json");
        assert!(written["grid"].get("cell_size").is_some() && written["crs"].is_object());
        assert_eq!(
            serde_json::from_value::<CubeInfo>(written).expect("v2"),
            now
        );
    }

    #[test]
    fn a_cube_grid_that_is_not_north_up_or_has_no_crs_is_refused_by_name() {
        let south_up = info(
            json!({"width": 4, "height": 2, "geo_transform": [0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                   "crs_wkt": ""}),
            None,
        );
        let e = serde_json::from_value::<CubeInfo>(south_up).unwrap_err();
        assert!(e.to_string().contains("not north-up"), "{e}");
        let grid = GridExtent::from_origin(0.0, 0.0, CellSize::new(1.0, 1.0), 4, 2);
        let no_crs = info(serde_json::to_value(grid).expect("grid"), None);
        let e = serde_json::from_value::<CubeInfo>(no_crs).unwrap_err();
        assert!(e.to_string().contains("no `crs`"), "{e}");
    }
}
