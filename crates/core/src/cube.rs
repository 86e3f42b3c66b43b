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
//! - [`plan`]: the job (`CubeSpec`) → plan of blocks and stages → the tasks a worker runs.
//! - [`read`]: selection by variables, time range and bbox, and origin/shape access.

mod blocks;
pub mod differentiate;
mod execute;
pub mod layer;
mod netcdf;
mod pieces;
pub mod plan;
pub mod read;
mod reduce;
pub mod source;
pub mod spec;
pub mod temporal;
pub mod time;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub use layer::{CubeReader, CubeWriter};
pub use plan::{CubePlan, CubeSpec, CubeTask};
pub use read::{Selection, Subset};
pub use source::CubeSource;

/// The horizontal grid of a cube: north-up, regular.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeGrid {
    pub width: usize,
    pub height: usize,
    /// GDAL's geotransform (x origin, cell width, 0, y origin, 0, −cell height).
    pub geo_transform: [f64; 6],
    pub crs_wkt: String,
}

impl CubeGrid {
    /// Cell-centre x coordinates, west to east.
    pub fn xs(&self) -> Vec<f64> {
        let g = &self.geo_transform;
        (0..self.width)
            .map(|c| g[0] + (c as f64 + 0.5) * g[1])
            .collect()
    }

    /// Cell-centre y coordinates, north to south.
    pub fn ys(&self) -> Vec<f64> {
        let g = &self.geo_transform;
        (0..self.height)
            .map(|r| g[3] + (r as f64 + 0.5) * g[5])
            .collect()
    }

    /// The grid of a window of rows and columns.
    pub fn window(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> CubeGrid {
        let g = self.geo_transform;
        CubeGrid {
            width: cols.len(),
            height: rows.len(),
            geo_transform: [
                g[0] + cols.start as f64 * g[1],
                g[1],
                0.0,
                g[3] + rows.start as f64 * g[5],
                0.0,
                g[5],
            ],
            crs_wkt: self.crs_wkt.clone(),
        }
    }

    pub fn is_geographic(&self) -> bool {
        crate::layer::is_geographic_wkt(&self.crs_wkt)
    }

    /// The names of the y and x dimensions: `latitude`/`longitude` on a geographic grid (as
    /// cfgrib and ERA5's NetCDF name them), `y`/`x` otherwise.
    pub fn dim_names(&self) -> (&'static str, &'static str) {
        if self.is_geographic() {
            ("latitude", "longitude")
        } else {
            ("y", "x")
        }
    }

    /// Whether two grids are the same to within a millionth of a cell.
    pub fn matches(&self, other: &CubeGrid) -> bool {
        let tol = 1e-6 * self.geo_transform[1].abs().max(self.geo_transform[5].abs());
        self.width == other.width
            && self.height == other.height
            && self
                .geo_transform
                .iter()
                .zip(&other.geo_transform)
                .all(|(a, b)| (a - b).abs() <= tol)
    }

    pub fn describe(&self) -> String {
        let g = &self.geo_transform;
        format!(
            "{}x{} cells of {}x{} from ({}, {})",
            self.width, self.height, g[1], -g[5], g[0], g[3]
        )
    }
}

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
    pub fn plane_len(&self, grid: &CubeGrid) -> usize {
        self.axes_len() * grid.width * grid.height
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeInfo {
    pub format_version: u32,
    pub grid: CubeGrid,
    pub lead: Lead,
    pub variables: Vec<CubeVariable>,
    pub chunks: Chunks,
    #[serde(default)]
    pub sources: Vec<String>,
    /// What was left out of sources damaged in part (`on_bad_input: skip`), by source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_inputs: Vec<String>,
    pub complete: bool,
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
        let (y, x) = self.grid.dim_names();
        let mut dims = vec![self.lead.name().to_string()];
        dims.extend(var.axes.iter().map(|a| a.name.clone()));
        dims.extend([y.to_string(), x.to_string()]);
        dims
    }

    /// The shape of a variable's array.
    pub fn shape(&self, var: &CubeVariable) -> Vec<u64> {
        let mut shape = vec![self.lead.len() as u64];
        shape.extend(var.axes.iter().map(|a| a.values.len() as u64));
        shape.extend([self.grid.height as u64, self.grid.width as u64]);
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
