//! Station data onto grids: nearest station, inverse distance weighting, ordinary kriging
//! with given or fitted variograms (PyKrige's models, parameters and fit), and Thiessen
//! polygons with their area shares of basins.
//!
//! # Layout
//! - [`stations`]: reading stations (CSV or any OGR point layer, with a value and optionally
//!   a time), reprojected to the target grid's CRS.
//! - [`variogram`]: the models, the experimental variogram and the fit.
//! - [`kriging`]: ordinary kriging, global or with a moving neighbourhood.
//! - [`idw`]: inverse distance weighting and the nearest station.
//! - [`thiessen`]: Thiessen polygons, their areas and their shares of zones.
//! - [`basins`]: the polygons as a vector layer; station weights and areal averages per basin.
//! - `search`: each cell's stations (k nearest, within a distance) a block of cells at a time.
//! - [`job`]: the `interpolate:` job section, its plan and tasks (a run of time steps each) —
//!   for `tessera interpolate` here and for a coordinator's workers alike.
//!
//! Every time step is its own problem: the stations with a value at that step, their own
//! fitted variogram when `fit` is asked for. A station file without a time field makes one
//! grid (a GeoTIFF); one with a time field makes a cube with a grid per time step.

pub mod basins;
pub mod idw;
pub mod job;
pub mod kriging;
mod search;
pub mod stations;
pub mod thiessen;
pub mod variogram;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{CellSize, Crs, Extent, GridExtent};

pub use job::{InterpolateHeader, InterpolatePlan};
pub use kriging::Neighbourhood;
pub use search::Reach;
pub use stations::{Report, StationFields, Stations};
pub use variogram::{Model, Variogram, VariogramParams};

/// How cells get their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Nearest,
    Idw,
    Kriging,
    /// The grid of station numbers (each cell's Thiessen polygon), and the polygons.
    Thiessen,
}

impl Method {
    pub fn parse(text: &str) -> Result<Method> {
        match text {
            "nearest" => Ok(Method::Nearest),
            "idw" => Ok(Method::Idw),
            "kriging" | "ordinary_kriging" | "ok" => Ok(Method::Kriging),
            "thiessen" | "voronoi" => Ok(Method::Thiessen),
            _ => Err(Error::invalid(format!(
                "method: {text:?} is not nearest, idw, kriging or thiessen"
            ))),
        }
    }
}

fn default_method() -> String {
    "idw".into()
}

fn default_power() -> f64 {
    2.0
}

fn default_nlags() -> usize {
    6
}

/// The `interpolate:` section of a job spec, and the options of `tessera interpolate`: the
/// source is the station file, `output.url` the cube.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpolateSpec {
    /// Where the stations' coordinates, value, time and id are.
    pub stations: StationFields,
    /// nearest, idw, kriging or thiessen.
    #[serde(default = "default_method")]
    pub method: String,
    /// IDW's power.
    #[serde(default = "default_power")]
    pub power: f64,
    /// Only stations within this distance (map units of the grid's CRS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_distance: Option<f64>,
    /// Only the N nearest stations (IDW; kriging's moving neighbourhood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<usize>,
    /// The kriging variogram model (default: linear, as PyKrige).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variogram: Option<String>,
    /// Its parameters (or `fit`).
    #[serde(default, skip_serializing_if = "VariogramParams::is_empty")]
    pub params: VariogramParams,
    /// Fit the variogram to each time step's experimental variogram.
    #[serde(default)]
    pub fit: bool,
    /// Lags of the experimental variogram.
    #[serde(default = "default_nlags")]
    pub nlags: usize,
    /// PyKrige's `weight`: favour the short lags in the fit.
    #[serde(default)]
    pub weight: bool,
    /// Also write the kriging variance (`<value>_variance`).
    #[serde(default)]
    pub variance: bool,
    /// The target grid: like this raster, layer or cube…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub like: Option<String>,
    /// … or a box (xmin, ymin, xmax, ymax), a cell size and a CRS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_size: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<String>,
    /// Time steps per chunk of the cube (and per task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_chunk: Option<usize>,
}

impl InterpolateSpec {
    pub fn method(&self) -> Result<Method> {
        Method::parse(&self.method)
    }

    /// What can be checked without reading anything; errors name the option.
    pub fn validate(&self) -> Result<()> {
        let method = self.method()?;
        if self.stations.value.trim().is_empty() && method != Method::Thiessen {
            return Err(Error::invalid("the value field is empty"));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return Err(Error::invalid(format!(
                "power: {} must be a positive number",
                self.power
            )));
        }
        if let Some(d) = self.max_distance
            && !(d.is_finite() && d > 0.0)
        {
            return Err(Error::invalid(format!(
                "max distance: {d} must be a positive number"
            )));
        }
        if self.neighbours == Some(0) {
            return Err(Error::invalid("neighbours: must be at least 1"));
        }
        if self.nlags == 0 {
            return Err(Error::invalid("nlags: must be at least 1"));
        }
        if self.time_chunk == Some(0) {
            return Err(Error::invalid("time chunk: must be at least 1"));
        }
        if method == Method::Kriging {
            self.variogram()?;
        } else if self.variogram.is_some() || self.fit || !self.params.is_empty() {
            return Err(Error::invalid(format!(
                "variogram options are for kriging, not {}",
                self.method
            )));
        }
        match (&self.like, &self.bbox, self.cell_size, &self.crs) {
            (Some(_), None, None, None) => {}
            (None, Some(b), Some(c), Some(_)) => {
                if !(b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3]) {
                    return Err(Error::invalid(format!(
                        "bbox: {b:?} is not xmin,ymin,xmax,ymax with xmin < xmax and ymin < ymax"
                    )));
                }
                if !(c.is_finite() && c > 0.0) {
                    return Err(Error::invalid(format!(
                        "cell size: {c} must be a positive number"
                    )));
                }
                let (cols, rows) = ((b[2] - b[0]) / c, (b[3] - b[1]) / c);
                if cols * rows > 4e9 {
                    return Err(Error::invalid(format!(
                        "the grid would have {cols:.0} x {rows:.0} cells: a larger cell size, please"
                    )));
                }
            }
            (Some(_), ..) => {
                return Err(Error::invalid(
                    "give the target grid as --like, or as --bbox, --cell-size and --crs, not both",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    "a target grid is needed: --like RASTER, or --bbox, --cell-size and --crs",
                ));
            }
        }
        Ok(())
    }

    /// The variogram model and its fixed parameters (`None`: fitted per step).
    pub fn variogram(&self) -> Result<(Model, Option<Variogram>)> {
        let model = Model::parse(self.variogram.as_deref().unwrap_or("linear"))?;
        if self.fit {
            if !self.params.is_empty() {
                return Err(Error::invalid(
                    "give variogram parameters or --fit, not both",
                ));
            }
            return Ok((model, None));
        }
        Ok((model, Some(self.params.variogram(model)?)))
    }

    /// The target grid and its CRS.
    pub fn target(&self) -> Result<(GridExtent, Crs)> {
        if let Some(like) = &self.like {
            let input = crate::zonal::ZonalInput::open(like, &[], None, &[])
                .map_err(|e| Error::invalid(format!("like {like}: {e}")))?;
            return Ok((input.grid(), input.crs()));
        }
        let (Some(b), Some(c), Some(crs)) = (self.bbox, self.cell_size, &self.crs) else {
            return Err(Error::invalid(
                "a target grid is needed: --like RASTER, or --bbox, --cell-size and --crs",
            ));
        };
        let crs = crate::source::parse_crs(crs)?;
        let grid = GridExtent::covering(Extent::new(b[0], b[1], b[2], b[3]), CellSize::new(c, c));
        Ok((grid, crs))
    }

    fn reach(&self) -> Reach {
        Reach {
            nearest: self.neighbours,
            max_distance: self.max_distance,
        }
    }
}

/// One time step's grids: the value and, for kriging with `variance`, the kriging variance.
#[derive(Debug, Clone, Default)]
pub struct StepGrids {
    pub value: Vec<f32>,
    pub variance: Option<Vec<f32>>,
    /// The variogram kriging used (fitted, or as given).
    pub variogram: Option<Variogram>,
    /// Stations with a value at this step.
    pub stations: usize,
}

/// Computes step `step` of `stations` on the `rows` of `grid`.
pub fn compute_step(
    spec: &InterpolateSpec,
    stations: &Stations,
    step: usize,
    grid: &GridExtent,
    rows: std::ops::Range<usize>,
) -> Result<StepGrids> {
    let method = spec.method()?;
    let cells = rows.len() * grid.cols as usize;
    let (xy, z, index) = stations.at(step);
    let when = || match stations.times.get(step).copied().flatten() {
        Some(t) => format!(" at {}", crate::cube::time::format_instant(t)),
        None => String::new(),
    };
    let nan = |n| vec![f32::NAN; n];
    let want_variance = spec.variance && method == Method::Kriging;
    if xy.is_empty() && method != Method::Thiessen {
        return Ok(StepGrids {
            value: nan(cells),
            variance: want_variance.then(|| nan(cells)),
            variogram: None,
            stations: 0,
        });
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    Ok(match method {
        Method::Nearest => StepGrids {
            value: idw::nearest(&xy, grid, rows)
                .into_iter()
                .map(|s| z.get(s).map_or(f32::NAN, |&v| v as f32))
                .collect(),
            stations: xy.len(),
            ..Default::default()
        },
        Method::Thiessen => {
            // Every station that has a location, whatever its value at this step.
            StepGrids {
                value: idw::nearest(&stations.xy, grid, rows)
                    .into_iter()
                    .map(|s| {
                        if s == usize::MAX {
                            f32::NAN
                        } else {
                            (s + 1) as f32
                        }
                    })
                    .collect(),
                stations: stations.xy.len(),
                ..Default::default()
            }
        }
        Method::Idw => StepGrids {
            value: to_f32(idw::idw(&xy, &z, grid, rows, spec.power, spec.reach())),
            stations: xy.len(),
            ..Default::default()
        },
        Method::Kriging => {
            let (model, given) = spec.variogram()?;
            let variogram = match given {
                Some(v) => v,
                None => {
                    let (lags, gamma) = variogram::experimental(&xy, &z, spec.nlags)
                        .map_err(|e| Error::invalid(format!("step{}: {e}", when())))?;
                    variogram::fit(model, &lags, &gamma, spec.weight)?
                }
            };
            let constant = z.iter().all(|&v| v == z[0]);
            if constant && variogram.params().iter().all(|&p| p == 0.0) {
                // No variation to krige: every weight is as good as another.
                return Ok(StepGrids {
                    value: vec![z[0] as f32; cells],
                    variance: want_variance.then(|| vec![0.0; cells]),
                    variogram: Some(variogram),
                    stations: xy.len(),
                });
            }
            let neighbourhood = match spec.neighbours {
                Some(k) => Neighbourhood::Nearest(k),
                None => Neighbourhood::Global,
            };
            let e = kriging::Kriging::new(&xy, &z, variogram)
                .grid(grid, rows, neighbourhood, want_variance)
                .map_err(|_| {
                    let ids: Vec<&str> = index
                        .iter()
                        .take(3)
                        .map(|&s| stations.ids[s].as_str())
                        .collect();
                    Error::invalid(format!(
                        "the kriging system{} is singular with the {} variogram (stations {}…): \
                         a sill of 0, or stations that coincide",
                        when(),
                        variogram.describe(),
                        ids.join(", ")
                    ))
                })?;
            StepGrids {
                value: to_f32(e.estimate),
                variance: want_variance.then(|| to_f32(e.variance)),
                variogram: Some(variogram),
                stations: xy.len(),
            }
        }
    })
}
