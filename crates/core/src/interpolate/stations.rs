//! Stations: points with a value, and optionally a time, read from a CSV file or any OGR point
//! layer, in the target grid's CRS.
//!
//! A station is a location (or, with an id field, an id): a file of station time series — one
//! row per station and time — becomes one value per station and time step. Rows are handled,
//! never a crash, and counted in [`Report`]:
//! - a value that is empty or not a number is missing (NaN) for that station and step;
//! - two rows of one station and step are averaged (a duplicated location);
//! - a row without coordinates, or whose coordinates cannot be reprojected, is dropped.

use std::collections::BTreeMap;
use std::collections::HashMap;

use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::LayerAccess;
use serde::{Deserialize, Serialize};

use crate::cube::time::parse_instant;
use crate::error::{Error, Result};
use crate::model::{Crs, GridExtent};
use crate::source::{parse_crs, spatial_ref};
use crate::zonal::zones::{open_vector, vector_layer};

/// Where a station's coordinates and value are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationFields {
    /// The value field.
    pub value: String,
    /// A time field: one grid per distinct time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// A field identifying a station (default: its location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Coordinate fields of a table without geometry (a CSV): `x`/`y` in `crs`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// … or `lon`/`lat` in degrees (EPSG:4326).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<String>,
    /// The CRS of `x`/`y` (default: the target grid's), or of a layer that states none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<String>,
}

/// What reading the stations found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Rows (features) read.
    pub rows: usize,
    /// Rows whose value was empty or not a number.
    pub missing_values: usize,
    /// Rows of a station and step that already had a value (averaged with it).
    pub duplicates: usize,
    /// Rows without usable coordinates.
    pub dropped: usize,
    /// Stations outside the grid (they still inform the cells near them).
    pub outside_grid: usize,
}

/// Stations in the target CRS, with a value per time step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stations {
    pub ids: Vec<String>,
    pub xy: Vec<(f64, f64)>,
    /// The time steps, in order, seconds since the epoch (one `None` without a time field).
    pub times: Vec<Option<i64>>,
    /// `values[step][station]`, NaN where a station has no value.
    pub values: Vec<Vec<f64>>,
    pub report: Report,
}

impl Stations {
    /// Reads `path` (a CSV file or any vector file OGR reads; `path:layer` picks a layer),
    /// reprojected into `target`.
    pub fn read(path: &str, fields: &StationFields, target: &Crs) -> Result<Stations> {
        let what = format!("stations {path}");
        let ds = open_vector(path, &what)?;
        let mut layer = vector_layer(&ds, path, &what)?;
        let names: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
        let index = |flag: &str, name: &str| -> Result<usize> {
            names.iter().position(|f| f == name).ok_or_else(|| {
                Error::invalid(format!(
                    "{what}: no field {name:?} for {flag} (fields: {})",
                    names.join(", ")
                ))
            })
        };
        let value = index("the value", &fields.value)?;
        let time = fields
            .time
            .as_deref()
            .map(|t| index("the time", t))
            .transpose()?;
        let id = fields
            .id
            .as_deref()
            .map(|f| index("the id", f))
            .transpose()?;
        // Coordinates: fields, or the geometry.
        let (coords, source_crs) = match (&fields.x, &fields.y, &fields.lon, &fields.lat) {
            (Some(x), Some(y), None, None) => {
                let crs = match &fields.crs {
                    Some(c) => parse_crs(c)?,
                    None => target.clone(),
                };
                (Some((index("--x", x)?, index("--y", y)?)), crs)
            }
            (None, None, Some(lon), Some(lat)) => {
                if fields.crs.is_some() {
                    return Err(Error::invalid(
                        "--lon/--lat are degrees (EPSG:4326): give --x/--y with a CRS instead",
                    ));
                }
                (
                    Some((index("--lon", lon)?, index("--lat", lat)?)),
                    parse_crs("EPSG:4326")?,
                )
            }
            (None, None, None, None) => {
                let crs = match (layer.spatial_ref(), &fields.crs) {
                    (_, Some(c)) => parse_crs(c)?,
                    (Some(srs), None) => crate::source::parse_crs(&srs.to_wkt().map_err(|e| {
                        Error::Crs(format!("{what}: its CRS cannot be read: {e}"))
                    })?)?,
                    (None, None) => target.clone(),
                };
                (None, crs)
            }
            _ => {
                return Err(Error::invalid(
                    "give both --x and --y, or both --lon and --lat (or neither, for a layer with point geometries)",
                ));
            }
        };
        if coords.is_none() && layer.defn().geom_fields().next().is_none() {
            return Err(Error::invalid(format!(
                "{what}: the layer has no geometry: name its coordinate fields with --x/--y or --lon/--lat"
            )));
        }

        let mut report = Report::default();
        // (station key) → index; (time) → step; (step, station) → (sum, count).
        let mut station_of: HashMap<String, usize> = HashMap::new();
        let mut ids = Vec::new();
        let mut raw_xy = Vec::new();
        let mut cells: BTreeMap<(Option<i64>, usize), (f64, usize)> = BTreeMap::new();
        for (k, feature) in layer.features().enumerate() {
            report.rows += 1;
            let row = || match feature.fid() {
                Some(f) => format!("feature {f}"),
                None => format!("row {}", k + 1),
            };
            let text = |i: usize| feature.field_as_string(i).ok().flatten();
            let number = |i: usize| -> Option<f64> {
                let t = text(i)?;
                let t = t.trim();
                t.parse::<f64>().ok()
            };
            let xy = match coords {
                Some((xi, yi)) => number(xi).zip(number(yi)),
                None => feature.geometry().and_then(|g| {
                    let flat = gdal::vector::geometry_type_flatten(g.geometry_type());
                    (flat == gdal::vector::OGRwkbGeometryType::wkbPoint && !g.is_empty()).then(
                        || {
                            let (x, y, _) = g.get_point(0);
                            (x, y)
                        },
                    )
                }),
            };
            let Some(xy) = xy.filter(|(x, y)| x.is_finite() && y.is_finite()) else {
                report.dropped += 1;
                continue;
            };
            let when = match time {
                None => None,
                Some(ti) => {
                    let t = text(ti).unwrap_or_default();
                    // OGR writes dates with '/'.
                    let t = t.replacen('/', "-", 2);
                    Some(parse_instant(&t).map_err(|e| {
                        Error::invalid(format!("{what}: {} has a bad time: {e}", row()))
                    })?)
                }
            };
            let key = match id {
                Some(i) => text(i).unwrap_or_default(),
                None => format!("{:?},{:?}", xy.0, xy.1),
            };
            let s = *station_of.entry(key.clone()).or_insert_with(|| {
                ids.push(match id {
                    Some(_) => key,
                    None => (ids.len() + 1).to_string(),
                });
                raw_xy.push(xy);
                raw_xy.len() - 1
            });
            let v = number(value).filter(|v| v.is_finite());
            let Some(v) = v else {
                report.missing_values += 1;
                cells.entry((when, s)).or_insert((0.0, 0));
                continue;
            };
            let cell = cells.entry((when, s)).or_insert((0.0, 0));
            if cell.1 > 0 {
                report.duplicates += 1;
            }
            cell.0 += v;
            cell.1 += 1;
        }
        if ids.is_empty() {
            return Err(Error::invalid(format!(
                "{what}: no station has coordinates ({} rows read)",
                report.rows
            )));
        }
        let xy = reproject(&raw_xy, &source_crs, target, &what)?;
        let times: Vec<Option<i64>> = {
            let mut t: Vec<Option<i64>> = cells.keys().map(|k| k.0).collect();
            t.dedup();
            if t.is_empty() { vec![None] } else { t }
        };
        let step_of: HashMap<Option<i64>, usize> =
            times.iter().enumerate().map(|(i, &t)| (t, i)).collect();
        let mut values = vec![vec![f64::NAN; ids.len()]; times.len()];
        for ((t, s), (sum, n)) in cells {
            if n > 0 {
                values[step_of[&t]][s] = sum / n as f64;
            }
        }
        Ok(Stations {
            ids,
            xy,
            times,
            values,
            report,
        })
    }

    /// Counts the stations outside `grid` into the report.
    pub fn note_grid(&mut self, grid: &GridExtent) {
        let e = &grid.extent;
        self.report.outside_grid = self
            .xy
            .iter()
            .filter(|(x, y)| !(e.xmin..=e.xmax).contains(x) || !(e.ymin..=e.ymax).contains(y))
            .count();
    }

    /// The stations with a value at `step`: their coordinates and values.
    pub fn at(&self, step: usize) -> (Vec<(f64, f64)>, Vec<f64>, Vec<usize>) {
        let mut xy = Vec::new();
        let mut z = Vec::new();
        let mut index = Vec::new();
        for (s, &v) in self.values[step].iter().enumerate() {
            if v.is_finite() {
                xy.push(self.xy[s]);
                z.push(v);
                index.push(s);
            }
        }
        (xy, z, index)
    }
}

fn reproject(xy: &[(f64, f64)], from: &Crs, to: &Crs, what: &str) -> Result<Vec<(f64, f64)>> {
    if from.same_as(to) || from.wkt.is_empty() || to.wkt.is_empty() {
        return Ok(xy.to_vec());
    }
    let mut src: SpatialRef = spatial_ref(from)?;
    src.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let dst = spatial_ref(to)?;
    let t = CoordTransform::new(&src, &dst)
        .map_err(|e| Error::Crs(format!("{what}: cannot reproject {from} to {to}: {e}")))?;
    let mut xs: Vec<f64> = xy.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = xy.iter().map(|p| p.1).collect();
    t.transform_coords(&mut xs, &mut ys, &mut [])
        .map_err(|e| Error::Crs(format!("{what}: cannot reproject to {to}: {e}")))?;
    Ok(xs.into_iter().zip(ys).collect())
}
