//! Multidimensional sources read through GDAL.
//!
//! - **GRIB** is read message by message through GDAL's raster API (one band per message):
//!   a variable is a parameter (`GRIB_ELEMENT`) on one kind of level; its time is the message's
//!   valid time; several levels of one kind make a level dimension (`isobaricInhPa`,
//!   `heightAboveGround`, as cfgrib names them); ensemble members make a `number` dimension —
//!   GDAL does not report a GRIB 1 message's member, so it is read from ECMWF's local section.
//!   Units and longitudes are kept as the file has them (`GRIB_NORMALIZE_UNITS=NO`: kelvin,
//!   not Celsius; `GRIB_ADJUST_LONGITUDE_RANGE=NO`: 0..360 stays 0..360).
//!   Names are cfgrib's (`2T` → `t2m`, `10U` → `u10`, `Z` → `z`).
//! - **NetCDF and Zarr** go through GDAL's multidimensional API: every array with a time
//!   dimension first and y, x last; `scale_factor` / `add_offset` and the fill value applied.
//!   The values of a local Zarr v2 array with zstd or no compression are then streamed chunk
//!   by chunk without GDAL ([`zarr`](super::zarr)), with the same conversions.

use std::ffi::CStr;

use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::time::TimeUnits;
use super::{Axis, CubeVariable};
use crate::error::{Error, Result};
use crate::model::{CellSize, Crs, GridExtent};
use crate::source::{crs_from_wkt, gdal_message, gdal_path};
use crate::zarr::local_group;

/// One source file's header: its grid, time steps and variables, and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeSource {
    pub url: String,
    /// The horizontal grid, north-up.
    pub grid: GridExtent,
    pub crs: Crs,
    /// Instants of the time steps, in file order.
    pub times: Vec<i64>,
    pub variables: Vec<SourceVariable>,
    /// What was left out of a source damaged in part (`on_bad_input: skip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceVariable {
    pub variable: CubeVariable,
    pub access: Access,
    /// Time steps per stored chunk (1 for GRIB): reads that end on these decode each once.
    #[serde(default = "one")]
    pub time_block: usize,
    /// The bytes stored for the variable when the source says cheaply (a local Zarr array's
    /// chunk files), else 0: what decoding it costs, for handing out the largest tasks first.
    #[serde(default)]
    pub stored_bytes: u64,
}

fn one() -> usize {
    1
}

/// Where a variable's values are in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Access {
    /// GRIB: the 1-based band of each (time, axes...) combination, row-major; 0 = absent.
    Bands { bands: Vec<u32> },
    /// A multidimensional array (time, axes..., y, x).
    Array {
        name: String,
        /// The y dimension runs south to north in the file.
        flip_y: bool,
        scale: f64,
        offset: f64,
        nodata: Option<f64>,
    },
}

impl CubeSource {
    /// Reads the header of a NetCDF, GRIB or Zarr source. `variables` (empty: all) selects by
    /// name; an unknown name is an error listing what the file has.
    pub fn open(url: &str, variables: &[String]) -> Result<CubeSource> {
        CubeSource::open_skipping(url, variables, false)
    }

    /// [`CubeSource::open`]; with `skip_bad`, a GRIB file with damaged messages is read
    /// without them, and what was left out is in [`CubeSource::skipped`].
    pub fn open_skipping(url: &str, variables: &[String], skip_bad: bool) -> Result<CubeSource> {
        crate::source::quiet_hdf5();
        let path = gdal_path(url)?;
        crate::source::check_exists(url, &path)?;
        if let Some(group) = local_group(&path) {
            check_zarr_metadata(url, &group)?;
        }
        let mut source = if is_grib(&path) {
            grib_header(url, &path, skip_bad)?
        } else {
            mdim_header(url, &path)?
        };
        if source.times.is_empty() {
            return Err(Error::source(url, "has no time steps"));
        }
        if !variables.is_empty() {
            let have: Vec<String> = source
                .variables
                .iter()
                .map(|v| v.variable.name.clone())
                .collect();
            for v in variables {
                if !have.contains(v) {
                    return Err(Error::source(
                        url,
                        format!("unknown variable {v:?} (it has {})", have.join(", ")),
                    ));
                }
            }
            source
                .variables
                .retain(|v| variables.contains(&v.variable.name));
            source
                .variables
                .sort_by_key(|v| variables.iter().position(|n| *n == v.variable.name));
        }
        Ok(source)
    }

    pub fn variable(&self, name: &str) -> Option<&SourceVariable> {
        self.variables.iter().find(|v| v.variable.name == name)
    }
}

// ---- GRIB -------------------------------------------------------------------------------------
fn dataset_grid(url: &str, ds: &Dataset) -> Result<(GridExtent, Crs)> {
    let (width, height) = ds.raster_size();
    let gt = ds
        .geo_transform()
        .map_err(|e| Error::source(url, format!("has no geotransform: {}", gdal_message(&e))))?;
    if gt[2] != 0.0 || gt[4] != 0.0 || gt[5] >= 0.0 {
        return Err(Error::source(url, "the grid is rotated or not north-up"));
    }
    let wkt = ds
        .spatial_ref()
        .and_then(|s| s.to_wkt())
        .unwrap_or_default();
    let cell = CellSize::new(gt[1], -gt[5]);
    let grid = GridExtent::from_origin(gt[0], gt[3], cell, width as u64, height as u64);
    Ok((grid, crs_from_wkt(&wkt)))
}

// ---- NetCDF / Zarr ----------------------------------------------------------------------------

fn open_mdim(url: &str, path: &str) -> Result<Dataset> {
    Dataset::open_ex(
        path,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_MULTIDIM_RASTER,
            ..Default::default()
        },
    )
    .map_err(|e| {
        Error::source(
            url,
            format!(
                "cannot open as a multidimensional dataset: {}",
                gdal_message(&e)
            ),
        )
    })
}

/// The metadata documents of a local Zarr group and of its arrays must be JSON objects: GDAL
/// drops an array whose `.zattrs` it cannot parse, and the variable would vanish from the
/// source without a word.
fn check_zarr_metadata(url: &str, group: &std::path::Path) -> Result<()> {
    const KNOWN_COMPRESSORS: [&str; 6] = ["zstd", "blosc", "zlib", "gzip", "lz4", "lzma"];
    let mut documents = vec![
        group.join(".zgroup"),
        group.join(".zattrs"),
        group.join(".zmetadata"),
    ];
    if let Ok(entries) = std::fs::read_dir(group) {
        for e in entries.flatten() {
            if e.path().join(".zarray").is_file() {
                documents.push(e.path().join(".zarray"));
                documents.push(e.path().join(".zattrs"));
            }
        }
    }
    for doc in documents {
        let Ok(bytes) = std::fs::read(&doc) else {
            continue;
        };
        let parsed: std::result::Result<Value, _> = serde_json::from_slice(&bytes);
        let what = match parsed {
            // GDAL leaves out an array whose compressor it does not know, without a word.
            Ok(Value::Object(o)) if doc.ends_with(".zarray") => {
                match o
                    .get("compressor")
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
                {
                    Some(id) if !KNOWN_COMPRESSORS.contains(&id) => format!(
                        "names the compressor {id:?}, which neither Tessera nor GDAL reads ({})",
                        KNOWN_COMPRESSORS.join(", ")
                    ),
                    _ => continue,
                }
            }
            Ok(Value::Object(_)) => continue,
            Ok(_) => "is not a JSON object: the Zarr metadata is damaged".to_string(),
            Err(e) => format!("is not valid JSON ({e}): the Zarr metadata is damaged"),
        };
        let rel = doc
            .strip_prefix(group)
            .unwrap_or(&doc)
            .display()
            .to_string();
        return Err(Error::source(
            url,
            format!("{rel} {what}: the Zarr metadata is damaged"),
        ));
    }
    Ok(())
}

/// What the raw GDAL multidimensional API gives beyond the `gdal` crate: the scale, offset and
/// attributes of an array.
/// The bytes of the chunk files in a local Zarr array's directory (its metadata excluded).
fn stored_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_dir() => dirs.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

struct ArrayExtras {
    scale: f64,
    offset: f64,
    attrs: Map<String, Value>,
    /// The array's CRS (the `gdal` crate panics on an array without one, so it is read here).
    crs_wkt: Option<String>,
    /// The chunk length along the first dim.
    time_block: usize,
}

fn array_extras(ds: &Dataset, name: &str) -> Option<ArrayExtras> {
    let raw = RawArray::open(ds, name)?;
    let array = raw.0;
    // SAFETY: the array handle is valid while `raw` lives; every other handle is checked for
    // null and released; strings are copied out before their owners are released.
    unsafe {
        let mut has = 0;
        let scale = gdal_sys::GDALMDArrayGetScale(array, &mut has);
        let scale = if has != 0 { scale } else { 1.0 };
        let offset = gdal_sys::GDALMDArrayGetOffset(array, &mut has);
        let offset = if has != 0 { offset } else { 0.0 };
        let mut attrs = Map::new();
        let mut n = 0usize;
        let list = gdal_sys::GDALMDArrayGetAttributes(array, &mut n, std::ptr::null_mut());
        if !list.is_null() {
            for &a in std::slice::from_raw_parts(list, n) {
                let key = CStr::from_ptr(gdal_sys::GDALAttributeGetName(a))
                    .to_string_lossy()
                    .into_owned();
                let dt = gdal_sys::GDALAttributeGetDataType(a);
                let class = gdal_sys::GDALExtendedDataTypeGetClass(dt);
                gdal_sys::GDALExtendedDataTypeRelease(dt);
                let value = if class == gdal_sys::GDALExtendedDataTypeClass::GEDTC_STRING {
                    let s = gdal_sys::GDALAttributeReadAsString(a);
                    if s.is_null() {
                        continue;
                    }
                    json!(CStr::from_ptr(s).to_string_lossy())
                } else if class == gdal_sys::GDALExtendedDataTypeClass::GEDTC_NUMERIC {
                    let mut count = 0usize;
                    let values = gdal_sys::GDALAttributeReadAsDoubleArray(a, &mut count);
                    if values.is_null() {
                        continue;
                    }
                    let v: Vec<f64> = std::slice::from_raw_parts(values, count).to_vec();
                    gdal_sys::VSIFree(values.cast());
                    if v.len() == 1 { json!(v[0]) } else { json!(v) }
                } else {
                    continue;
                };
                if !matches!(
                    key.as_str(),
                    "_FillValue"
                        | "missing_value"
                        | "scale_factor"
                        | "add_offset"
                        | "coordinates"
                        | "grid_mapping"
                        | "_ARRAY_DIMENSIONS"
                        | "DIMENSION_LIST"
                ) {
                    attrs.insert(key, value);
                }
            }
            gdal_sys::GDALReleaseAttributes(list, n);
        }
        let mut crs_wkt = None;
        let srs = gdal_sys::GDALMDArrayGetSpatialRef(array);
        if !srs.is_null() {
            let mut wkt: *mut std::ffi::c_char = std::ptr::null_mut();
            if gdal_sys::OSRExportToWkt(srs, &mut wkt) == 0 && !wkt.is_null() {
                crs_wkt = Some(CStr::from_ptr(wkt).to_string_lossy().into_owned());
            }
            if !wkt.is_null() {
                gdal_sys::VSIFree(wkt.cast());
            }
            gdal_sys::OSRDestroySpatialReference(srs);
        }
        let mut dims = 0usize;
        let sizes = gdal_sys::GDALMDArrayGetBlockSize(array, &mut dims);
        let mut time_block = 1;
        if !sizes.is_null() {
            if dims > 0 {
                time_block = (*sizes).max(1) as usize;
            }
            gdal_sys::VSIFree(sizes.cast());
        }
        Some(ArrayExtras {
            time_block,
            scale,
            offset,
            attrs,
            crs_wkt,
        })
    }
}

fn is_time_dim(name: &str) -> bool {
    matches!(name, "time" | "valid_time" | "t" | "TIME")
}

fn is_y_dim(name: &str) -> bool {
    matches!(name, "y" | "lat" | "latitude" | "rlat" | "Y")
}

fn is_x_dim(name: &str) -> bool {
    matches!(name, "x" | "lon" | "longitude" | "rlon" | "X")
}

/// The values of a dimension's indexing variable, or 0, 1, ... when it has none.
fn dim_values(dim: &gdal::raster::Dimension) -> Vec<f64> {
    let n = dim.size();
    let var = dim.indexing_variable();
    var.read_as::<f64>(vec![0], vec![n])
        .unwrap_or_else(|_| (0..n).map(|i| i as f64).collect())
}

/// A regular axis: (first centre, step), or an error naming the axis.
fn regular(url: &str, name: &str, v: &[f64]) -> Result<(f64, f64)> {
    if v.len() < 2 {
        return Err(Error::source(
            url,
            format!("dimension {name} has fewer than 2 values"),
        ));
    }
    let step = (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64;
    let tol = step.abs() * 1e-4;
    if step == 0.0 || v.windows(2).any(|w| ((w[1] - w[0]) - step).abs() > tol) {
        return Err(Error::source(
            url,
            format!("dimension {name} is not regularly spaced"),
        ));
    }
    Ok((v[0], step))
}

fn mdim_header(url: &str, path: &str) -> Result<CubeSource> {
    let ds = open_mdim(url, path)?;
    let root = ds
        .root_group()
        .map_err(|e| Error::source(url, gdal_message(&e)))?;
    let names = root.array_names(Default::default());
    let mut grid: Option<(GridExtent, Crs, bool, String, String)> = None;
    let mut times: Option<(String, Vec<i64>)> = None;
    let mut variables = Vec::new();
    let mut seen_dims = Vec::new();
    for name in &names {
        let array = root.open_md_array(name, Default::default()).map_err(|e| {
            Error::source(
                url,
                format!("cannot open array {name}: {}", gdal_message(&e)),
            )
        })?;
        let dims = array
            .dimensions()
            .map_err(|e| Error::source(url, gdal_message(&e)))?;
        let dnames: Vec<String> = dims.iter().map(|d| d.name()).collect();
        seen_dims.push(format!("{name}({})", dnames.join(", ")));
        if dims.len() < 3 {
            continue;
        }
        let n = dims.len();
        if !is_time_dim(&dnames[0]) || !is_y_dim(&dnames[n - 2]) || !is_x_dim(&dnames[n - 1]) {
            continue;
        }
        // The grid, from the first data array's y and x.
        if grid.is_none() {
            let ys = dim_values(&dims[n - 2]);
            let xs = dim_values(&dims[n - 1]);
            let (y0, dy) = regular(url, &dnames[n - 2], &ys)?;
            let (x0, dx) = regular(url, &dnames[n - 1], &xs)?;
            let flip_y = dy > 0.0;
            let north = if flip_y { ys[ys.len() - 1] } else { y0 };
            let crs = array_extras(&ds, name)
                .and_then(|e| e.crs_wkt)
                .filter(|w| !w.is_empty())
                .map(|w| crs_from_wkt(&w))
                .or_else(|| {
                    let geo = dnames[n - 1].starts_with("lon") && dnames[n - 2].starts_with("lat");
                    geo.then(|| crate::source::parse_crs("EPSG:4326").ok())
                        .flatten()
                })
                .unwrap_or_else(|| Crs::from_wkt(""));
            let cell = CellSize::new(dx, dy.abs());
            let g = GridExtent::from_origin(
                x0 - dx / 2.0,
                north + dy.abs() / 2.0,
                cell,
                xs.len() as u64,
                ys.len() as u64,
            );
            grid = Some((g, crs, flip_y, dnames[n - 2].clone(), dnames[n - 1].clone()));
        }
        let (g, flip_y, yname, xname) = grid
            .as_ref()
            .map(|g| (&g.0, g.2, &g.3, &g.4))
            .ok_or_else(|| Error::Internal("no grid".into()))?;
        if dnames[n - 2] != *yname
            || dnames[n - 1] != *xname
            || dims[n - 2].size() as u64 != g.rows
            || dims[n - 1].size() as u64 != g.cols
        {
            return Err(Error::source(
                url,
                format!("array {name} is on another grid than the file's first array"),
            ));
        }
        // Time.
        let tdim = &dims[0];
        let tvar = tdim.indexing_variable();
        let mut units = tvar.unit();
        if units.is_empty() {
            units = tvar
                .attribute("units")
                .map(|a| a.read_as_string())
                .unwrap_or_default();
        }
        let calendar = tvar.attribute("calendar").ok().map(|a| a.read_as_string());
        let tu = TimeUnits::parse(&units, calendar.as_deref())
            .map_err(|e| Error::source(url, format!("time of {name}: {e}")))?;
        // Read strictly: a time coordinate that cannot be read (a damaged chunk) or holds
        // values that are no times fails the source, naming it, instead of becoming indices.
        let tname = dnames[0].clone();
        let values = tvar
            .read_as::<f64>(vec![0], vec![tdim.size()])
            .map_err(|e| {
                Error::source(
                    url,
                    format!(
                        "cannot read the time coordinate {tname}: {}",
                        gdal_message(&e)
                    ),
                )
            })?;
        let instants: Vec<i64> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                tu.checked_instant(v).map_err(|e| {
                    Error::source(url, format!("time coordinate {tname}, step {i}: {e}"))
                })
            })
            .collect::<Result<_>>()?;
        match &times {
            None => times = Some((dnames[0].clone(), instants)),
            Some((tn, t)) if *tn == dnames[0] && *t == instants => {}
            Some((tn, _)) => {
                return Err(Error::source(
                    url,
                    format!(
                        "array {name} has another time axis ({}) than {tn}",
                        dnames[0]
                    ),
                ));
            }
        }
        let axes = dims[1..n - 2]
            .iter()
            .map(|d| Axis {
                name: d.name(),
                values: dim_values(d),
                attrs: Map::new(),
            })
            .collect();
        let extras = array_extras(&ds, name);
        let (scale, offset, time_block, mut attrs) = extras
            .map(|e| (e.scale, e.offset, e.time_block, e.attrs))
            .unwrap_or((1.0, 0.0, 1, Map::new()));
        let unit = array.unit();
        if !unit.is_empty() {
            attrs.entry("units").or_insert(json!(unit));
        }
        variables.push(SourceVariable {
            variable: CubeVariable {
                name: name.clone(),
                attrs,
                axes,
            },
            access: Access::Array {
                name: name.clone(),
                flip_y,
                scale,
                offset,
                nodata: array.no_data_value_as_double(),
            },
            time_block,
            stored_bytes: local_group(path).map_or(0, |g| stored_bytes(&g.join(name))),
        });
    }
    let (Some((grid, crs, ..)), Some((_, times))) = (grid, times) else {
        return Err(Error::source(
            url,
            format!(
                "has no array with dims (time, ..., y, x) (arrays: {})",
                seen_dims.join("; ")
            ),
        ));
    };
    Ok(CubeSource {
        url: url.to_string(),
        grid,
        crs,
        times,
        variables,
        skipped: Vec::new(),
    })
}

mod grib;
mod reader;

use grib::{grib_header, is_grib, open_grib};
use reader::RawArray;
pub use reader::SourceReader;

#[cfg(test)]
mod tests {
    use super::grib::{grib_level, grib_name};

    #[test]
    fn grib_names_are_cfgribs() {
        assert_eq!(grib_name("2T"), "t2m");
        assert_eq!(grib_name("10U"), "u10");
        assert_eq!(grib_name("Z"), "z");
        assert_eq!(grib_name("CAPE"), "cape");
        assert_eq!(
            grib_level("500-ISBL"),
            ("isobaricInhPa".into(), Some(500.0))
        );
        assert_eq!(
            grib_level("85000-ISBL"),
            ("isobaricInhPa".into(), Some(850.0))
        );
        assert_eq!(
            grib_level("2-HTGL"),
            ("heightAboveGround".into(), Some(2.0))
        );
    }
}
