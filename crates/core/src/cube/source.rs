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

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use gdal::{Dataset, DatasetOptions, GdalOpenFlags, Metadata};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::time::TimeUnits;
use super::{Axis, CubeGrid, CubeVariable};
use crate::error::{Error, Result};
use crate::source::gdal_path;
use crate::zarr::{ChunkView, Convert, StepRing, ZarrArray, local_group};

/// One source file's header: its grid, time steps and variables, and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CubeSource {
    pub url: String,
    pub grid: CubeGrid,
    /// Instants of the time steps, in file order.
    pub times: Vec<i64>,
    pub variables: Vec<SourceVariable>,
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

fn grib_config() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = gdal::config::set_config_option("GRIB_NORMALIZE_UNITS", "NO");
        // Keep the file's longitudes (0..360 for ERA5) as cfgrib does.
        let _ = gdal::config::set_config_option("GRIB_ADJUST_LONGITUDE_RANGE", "NO");
    });
}

/// Whether a path names a GRIB file (by extension).
fn is_grib(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    [".grib", ".grb", ".grib2", ".grb2", ".grib1"]
        .iter()
        .any(|e| p.ends_with(e))
}

impl CubeSource {
    /// Reads the header of a NetCDF, GRIB or Zarr source. `variables` (empty: all) selects by
    /// name; an unknown name is an error listing what the file has.
    pub fn open(url: &str, variables: &[String]) -> Result<CubeSource> {
        let path = gdal_path(url)?;
        crate::source::check_exists(url, &path)?;
        let mut source = if is_grib(&path) {
            grib_header(url, &path)?
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

/// cfgrib's name of an ECMWF parameter as GDAL reports it: `2T` → `t2m`, `10U` → `u10`.
fn grib_name(element: &str) -> String {
    let e = element.to_ascii_lowercase();
    let digits: String = e.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = &e[digits.len()..];
    match (digits.as_str(), rest.is_empty()) {
        ("", _) | (_, true) => e,
        ("2", false) => format!("{rest}2m"),
        (d, false) => format!("{rest}{d}"),
    }
}

/// A GRIB level from `GRIB_SHORT_NAME` (`500-ISBL`): the coordinate name and value.
fn grib_level(short_name: &str) -> (String, Option<f64>) {
    let Some((value, kind)) = short_name.split_once('-') else {
        return (short_name.to_string(), None);
    };
    let value: Option<f64> = value.parse().ok();
    match kind {
        // GRIB 1 gives hPa, GRIB 2 Pa.
        "ISBL" => (
            "isobaricInhPa".into(),
            value.map(|v| if v > 1100.0 { v / 100.0 } else { v }),
        ),
        "HTGL" => ("heightAboveGround".into(), value),
        "SFC" => ("surface".into(), value),
        k => (format!("level_{}", k.to_ascii_lowercase()), value),
    }
}

/// The ensemble member of each message of a GRIB 1 file, from ECMWF's local section (local
/// definitions 1 and 36 — the ensemble and ERA5's EDA — hold the perturbation number at octet
/// 50 of section 1); `None` when a message is not GRIB 1 with such a section. Messages may be
/// padded (ECMWF pads to 120 bytes), so the next one is searched for after each.
fn grib1_members(path: &str) -> Option<Vec<i64>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut members = Vec::new();
    let mut offset = 0u64;
    let mut head = [0u8; 60];
    while offset + 8 <= len {
        f.seek(SeekFrom::Start(offset)).ok()?;
        let n = (len - offset).min(60) as usize;
        f.read_exact(&mut head[..n]).ok()?;
        if &head[..4] != b"GRIB" {
            // Padding after a message: the next one starts at a later "GRIB", if any.
            let mut rest = Vec::new();
            f.seek(SeekFrom::Start(offset)).ok()?;
            f.by_ref().take(4096).read_to_end(&mut rest).ok()?;
            match rest.windows(4).position(|w| w == b"GRIB") {
                Some(p) if p > 0 => {
                    offset += p as u64;
                    continue;
                }
                _ if rest.iter().all(|&b| b == 0) => break,
                _ => return None,
            }
        }
        if head[7] != 1 || n < 58 {
            return None;
        }
        let total = u64::from(head[4]) << 16 | u64::from(head[5]) << 8 | u64::from(head[6]);
        let pds = &head[8..];
        let pds_len = usize::from(pds[0]) << 16 | usize::from(pds[1]) << 8 | usize::from(pds[2]);
        // centre 98 (ECMWF), local definition 1 (ensemble): perturbation number at octet 50.
        if pds[4] != 98 || pds_len < 51 || !matches!(pds[40], 1 | 36) {
            return None;
        }
        members.push(i64::from(pds[49]));
        offset += total.max(8);
    }
    Some(members)
}

fn grib_header(url: &str, path: &str) -> Result<CubeSource> {
    grib_config();
    let ds = Dataset::open(path).map_err(|e| Error::source(url, format!("cannot open: {e}")))?;
    let grid = dataset_grid(url, &ds)?;
    let count = ds.raster_count();
    let members = if count > 0 { grib1_members(path) } else { None };
    let members = members.filter(|m| m.len() == count);

    struct Msg {
        band: u32,
        time: i64,
        level: Option<f64>,
        member: i64,
    }
    // (element, level kind) → messages, in file order of first appearance.
    type Group = ((String, String), Vec<Msg>, Map<String, Value>);
    let mut groups: Vec<Group> = Vec::new();
    for b in 1..=count {
        let band = ds.rasterband(b).map_err(|e| Error::source(url, e))?;
        let md = |k: &str| band.metadata_item(k, "");
        let element = md("GRIB_ELEMENT").ok_or_else(|| {
            Error::source(
                url,
                format!("message {b} has no GRIB_ELEMENT: not a GRIB file GDAL understands"),
            )
        })?;
        let time: i64 = md("GRIB_VALID_TIME")
            .and_then(|v| v.split_whitespace().next().and_then(|s| s.parse().ok()))
            .ok_or_else(|| Error::source(url, format!("message {b} has no valid time")))?;
        let (kind, level) = grib_level(&md("GRIB_SHORT_NAME").unwrap_or_default());
        let member = members.as_ref().map_or(0, |m| m[b - 1]);
        let msg = Msg {
            band: b as u32,
            time,
            level,
            member,
        };
        let key = (element.clone(), kind);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(msg),
            None => {
                let mut attrs = Map::new();
                let comment = md("GRIB_COMMENT").unwrap_or_default();
                let long_name = comment.split(" [").next().unwrap_or("").trim().to_string();
                let units = md("GRIB_UNIT").unwrap_or_default();
                let units = units
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                if !long_name.is_empty() {
                    attrs.insert("long_name".into(), json!(long_name));
                }
                if !units.is_empty() {
                    attrs.insert("units".into(), json!(units));
                }
                attrs.insert("GRIB_ELEMENT".into(), json!(element));
                groups.push((key, vec![msg], attrs));
            }
        }
    }
    if groups.is_empty() {
        return Err(Error::source(url, "has no GRIB messages"));
    }

    let mut times: Vec<i64> = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|m| m.time))
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for g in &groups {
        *names.entry(grib_name(&g.0.0)).or_default() += 1;
    }
    let mut variables = Vec::new();
    for ((element, kind), msgs, attrs) in groups {
        let mut name = grib_name(&element);
        if names[&name] > 1 {
            name = format!("{name}_{kind}");
        }
        let mut levels: Vec<f64> = msgs.iter().filter_map(|m| m.level).collect();
        levels.sort_by(|a, b| b.total_cmp(a));
        levels.dedup();
        let mut numbers: Vec<i64> = msgs.iter().map(|m| m.member).collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut axes = Vec::new();
        if numbers.len() > 1 {
            axes.push(Axis {
                name: "number".into(),
                values: numbers.iter().map(|&n| n as f64).collect(),
                attrs: Map::from_iter([(
                    "long_name".into(),
                    json!("ensemble member numerical id"),
                )]),
            });
        }
        let has_levels = levels.len() > 1;
        if has_levels {
            let mut a = Map::new();
            if kind == "isobaricInhPa" {
                a.insert("units".into(), json!("hPa"));
                a.insert("long_name".into(), json!("pressure"));
                a.insert("positive".into(), json!("down"));
            }
            axes.push(Axis {
                name: kind.clone(),
                values: levels.clone(),
                attrs: a,
            });
        }
        let per_time = numbers.len().max(1) * if has_levels { levels.len() } else { 1 };
        let mut bands = vec![0u32; times.len() * per_time];
        for m in &msgs {
            let t = times.binary_search(&m.time).unwrap_or(0);
            let n = if numbers.len() > 1 {
                numbers.binary_search(&m.member).unwrap_or(0)
            } else {
                0
            };
            let l = if has_levels {
                levels.iter().position(|v| Some(*v) == m.level).unwrap_or(0)
            } else {
                0
            };
            let nl = if has_levels { levels.len() } else { 1 };
            let slot = &mut bands[t * per_time + n * nl + l];
            if *slot != 0 {
                return Err(Error::source(
                    url,
                    format!(
                        "variable {name}: messages {} and {} are for the same time, level and member",
                        slot, m.band
                    ),
                ));
            }
            *slot = m.band;
        }
        variables.push(SourceVariable {
            variable: CubeVariable { name, attrs, axes },
            access: Access::Bands { bands },
            time_block: 1,
            stored_bytes: 0,
        });
    }
    Ok(CubeSource {
        url: url.to_string(),
        grid,
        times,
        variables,
    })
}

fn dataset_grid(url: &str, ds: &Dataset) -> Result<CubeGrid> {
    let (width, height) = ds.raster_size();
    let gt = ds
        .geo_transform()
        .map_err(|e| Error::source(url, format!("has no geotransform: {e}")))?;
    if gt[2] != 0.0 || gt[4] != 0.0 || gt[5] >= 0.0 {
        return Err(Error::source(url, "the grid is rotated or not north-up"));
    }
    let crs_wkt = ds
        .spatial_ref()
        .and_then(|s| s.to_wkt())
        .unwrap_or_default();
    Ok(CubeGrid {
        width,
        height,
        geo_transform: gt,
        crs_wkt,
    })
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
            format!("cannot open as a multidimensional dataset: {e}"),
        )
    })
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
    let root = ds.root_group().map_err(|e| Error::source(url, e))?;
    let names = root.array_names(Default::default());
    let mut grid: Option<(CubeGrid, bool, String, String)> = None;
    let mut times: Option<(String, Vec<i64>)> = None;
    let mut variables = Vec::new();
    let mut seen_dims = Vec::new();
    for name in &names {
        let array = root
            .open_md_array(name, Default::default())
            .map_err(|e| Error::source(url, format!("cannot open array {name}: {e}")))?;
        let dims = array.dimensions().map_err(|e| Error::source(url, e))?;
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
            let crs_wkt = array_extras(&ds, name)
                .and_then(|e| e.crs_wkt)
                .filter(|w| !w.is_empty())
                .or_else(|| {
                    let geo = dnames[n - 1].starts_with("lon") && dnames[n - 2].starts_with("lat");
                    geo.then(|| crate::source::parse_crs("EPSG:4326").ok().map(|c| c.wkt))
                        .flatten()
                })
                .unwrap_or_default();
            let g = CubeGrid {
                width: xs.len(),
                height: ys.len(),
                geo_transform: [
                    x0 - dx / 2.0,
                    dx,
                    0.0,
                    north + dy.abs() / 2.0,
                    0.0,
                    -dy.abs(),
                ],
                crs_wkt,
            };
            grid = Some((g, flip_y, dnames[n - 2].clone(), dnames[n - 1].clone()));
        }
        let (g, flip_y, yname, xname) = grid
            .as_ref()
            .map(|g| (&g.0, g.1, &g.2, &g.3))
            .ok_or_else(|| Error::Internal("no grid".into()))?;
        if dnames[n - 2] != *yname
            || dnames[n - 1] != *xname
            || dims[n - 2].size() != g.height
            || dims[n - 1].size() != g.width
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
        let instants: Vec<i64> = dim_values(tdim)
            .into_iter()
            .map(|v| tu.instant(v))
            .collect();
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
    let (Some((grid, ..)), Some((_, times))) = (grid, times) else {
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
        times,
        variables,
    })
}

// ---- Reading ----------------------------------------------------------------------------------

/// A GDAL multidimensional array handle, released on drop.
struct RawArray(gdal_sys::GDALMDArrayH);

impl Drop for RawArray {
    fn drop(&mut self) {
        // SAFETY: the handle came from GDALGroupOpenMDArray and is released once.
        unsafe { gdal_sys::GDALMDArrayRelease(self.0) }
    }
}

impl RawArray {
    fn open(ds: &Dataset, name: &str) -> Option<RawArray> {
        let cname = CString::new(name).ok()?;
        // SAFETY: null handles are checked; the group is released after the array is opened.
        unsafe {
            let group = gdal_sys::GDALDatasetGetRootGroup(ds.c_dataset());
            if group.is_null() {
                return None;
            }
            let array = gdal_sys::GDALGroupOpenMDArray(group, cname.as_ptr(), std::ptr::null_mut());
            gdal_sys::GDALGroupRelease(group);
            (!array.is_null()).then_some(RawArray(array))
        }
    }

    /// Reads a hyperslab into `out` as `T` (f32 or f64), converting as GDAL does.
    fn read<T: gdal::raster::GdalType>(
        &self,
        start: &[u64],
        count: &[usize],
        out: &mut [T],
    ) -> bool {
        if out.len() != count.iter().product::<usize>() || start.len() != count.len() {
            return false;
        }
        // SAFETY: `out` holds exactly the hyperslab's elements of type T, which the buffer data
        // type describes; start and count have one entry per dimension.
        unsafe {
            let dt = gdal_sys::GDALExtendedDataTypeCreate(T::gdal_ordinal());
            let ok = gdal_sys::GDALMDArrayRead(
                self.0,
                start.as_ptr(),
                count.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                dt,
                out.as_mut_ptr().cast(),
                out.as_ptr().cast(),
                std::mem::size_of_val(out),
            );
            gdal_sys::GDALExtendedDataTypeRelease(dt);
            ok != 0
        }
    }
}

/// An open source, for reading blocks. Not shared between threads (GDAL handles are not).
/// Arrays stay open between reads, so GDAL's decoded chunks and buffers are reused; arrays of
/// a local Zarr v2 group that [`zarr`](super::zarr) reads are streamed without GDAL, which is
/// then not opened at all.
pub struct SourceReader<'a> {
    source: &'a CubeSource,
    path: String,
    zarr_group: Option<std::path::PathBuf>,
    zarr: std::cell::RefCell<BTreeMap<String, Option<std::rc::Rc<ZarrArray>>>>,
    // Declared before `dataset`: arrays are released before the dataset closes.
    arrays: std::cell::RefCell<BTreeMap<String, RawArray>>,
    scratch: std::cell::RefCell<Vec<f64>>,
    dataset: std::cell::OnceCell<Dataset>,
}

impl std::fmt::Debug for SourceReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceReader")
            .field("url", &self.source.url)
            .finish()
    }
}

impl<'a> SourceReader<'a> {
    pub fn open(source: &'a CubeSource) -> Result<SourceReader<'a>> {
        let path = gdal_path(&source.url)?;
        let zarr_group = local_group(&path);
        Ok(SourceReader {
            source,
            path,
            zarr_group,
            zarr: Default::default(),
            arrays: Default::default(),
            scratch: Default::default(),
            dataset: Default::default(),
        })
    }

    /// The GDAL dataset, opened on first use.
    fn dataset(&self) -> Result<&Dataset> {
        if let Some(ds) = self.dataset.get() {
            return Ok(ds);
        }
        let ds = if is_grib(&self.path) {
            grib_config();
            Dataset::open(&self.path)
                .map_err(|e| Error::source(&self.source.url, format!("cannot open: {e}")))?
        } else {
            open_mdim(&self.source.url, &self.path)?
        };
        Ok(self.dataset.get_or_init(|| ds))
    }

    /// The streamed Zarr array behind `var`, when there is one of the shape the header gave.
    fn zarr_array(&self, name: &str, var: &SourceVariable) -> Option<std::rc::Rc<ZarrArray>> {
        let group = self.zarr_group.as_ref()?;
        let mut arrays = self.zarr.borrow_mut();
        arrays
            .entry(name.to_string())
            .or_insert_with(|| {
                let a = ZarrArray::open(group, name)?;
                let g = &self.source.grid;
                let mut shape = vec![self.source.times.len()];
                shape.extend(var.variable.axes.iter().map(|a| a.values.len()));
                shape.extend([g.height, g.width]);
                (a.shape() == shape.as_slice()).then(|| std::rc::Rc::new(a))
            })
            .clone()
    }

    /// The steps per chunk when `var`'s chunks decode whole, in place, into a [`StepRing`]
    /// ([`ZarrArray::whole_steps`]).
    pub(super) fn whole_steps(&self, var: &SourceVariable) -> Option<usize> {
        let Access::Array {
            name,
            flip_y,
            scale,
            offset,
            nodata,
        } = &var.access
        else {
            return None;
        };
        let convert = Convert {
            scale: *scale,
            offset: *offset,
            nodata: *nodata,
        };
        self.zarr_array(name, var)?.whole_steps(&convert, *flip_y)
    }

    /// Decodes time chunk `tc` of `var` into `ring`'s segments, giving out steps as they are
    /// done (see [`ZarrArray::decode_chunk`]); only for variables with
    /// [`whole_steps`](Self::whole_steps).
    pub(super) fn decode_chunk(
        &self,
        var: &SourceVariable,
        tc: usize,
        ring: &mut StepRing,
        reclaim: impl FnMut(&Arc<()>) -> bool,
        emit: impl FnMut(Range<usize>, ChunkView) -> bool,
    ) -> Result<()> {
        let z = match &var.access {
            Access::Array { name, .. } => self.zarr_array(name, var),
            Access::Bands { .. } => None,
        }
        .ok_or_else(|| Error::Internal(format!("{} is not decoded whole", var.variable.name)))?;
        z.decode_chunk(tc, ring, reclaim, emit)
    }

    /// Whether reads of `var` are streamed (decoded in order, so a read may end anywhere
    /// without decoding anything twice).
    pub fn streams(&self, var: &SourceVariable) -> bool {
        match &var.access {
            Access::Array { name, .. } => self.zarr_array(name, var).is_some(),
            Access::Bands { .. } => false,
        }
    }

    /// Reads `times` (indices into the file's time steps) × every (member, level) × `rows` × all
    /// columns of a variable into `out` (row-major, NaN where the file has no value).
    pub fn read(
        &self,
        var: &SourceVariable,
        times: Range<usize>,
        rows: Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let url = &self.source.url;
        let grid = &self.source.grid;
        let w = grid.width;
        let h = rows.len();
        let planes = var.variable.axes_len();
        let need = times.len() * planes * h * w;
        if out.len() != need {
            return Err(Error::Internal(format!(
                "read buffer of {} for {need} values",
                out.len()
            )));
        }
        match &var.access {
            Access::Bands { bands } => {
                for (i, t) in times.clone().enumerate() {
                    for p in 0..planes {
                        let b = bands[t * planes + p];
                        let dst = &mut out[(i * planes + p) * h * w..][..h * w];
                        if b == 0 {
                            dst.fill(f32::NAN);
                            continue;
                        }
                        let band = self
                            .dataset()?
                            .rasterband(b as usize)
                            .map_err(|e| Error::source(url, e))?;
                        band.read_into_slice::<f32>(
                            (0, rows.start as isize),
                            (w, h),
                            (w, h),
                            dst,
                            None,
                        )
                        .map_err(|e| Error::source(url, format!("cannot read message {b}: {e}")))?;
                        if let Some(nd) = band.no_data_value() {
                            let nd = nd as f32;
                            dst.iter_mut()
                                .filter(|v| **v == nd)
                                .for_each(|v| *v = f32::NAN);
                        }
                    }
                }
            }
            Access::Array {
                name,
                flip_y,
                scale,
                offset,
                nodata,
            } => {
                let row0 = if *flip_y {
                    grid.height - rows.end
                } else {
                    rows.start
                };
                if let Some(z) = self.zarr_array(name, var) {
                    let convert = Convert {
                        scale: *scale,
                        offset: *offset,
                        nodata: *nodata,
                    };
                    return z.read(times, row0..row0 + h, *flip_y, convert, out);
                }
                let mut arrays = self.arrays.borrow_mut();
                if !arrays.contains_key(name) {
                    let a = RawArray::open(self.dataset()?, name)
                        .ok_or_else(|| Error::source(url, format!("cannot open array {name}")))?;
                    arrays.insert(name.clone(), a);
                }
                let array = &arrays[name];
                let mut start = vec![times.start as u64];
                let mut count = vec![times.len()];
                for a in &var.variable.axes {
                    start.push(0);
                    count.push(a.values.len());
                }
                start.extend([row0 as u64, 0]);
                count.extend([h, w]);
                let failed =
                    || Error::source(url, format!("cannot read {name} at time steps {times:?}"));
                if *scale == 1.0 && *offset == 0.0 && !flip_y {
                    if !array.read::<f32>(&start, &count, out) {
                        return Err(failed());
                    }
                    if let Some(nd) = nodata.filter(|n| !n.is_nan()) {
                        let nd = nd as f32;
                        out.iter_mut()
                            .filter(|v| **v == nd)
                            .for_each(|v| *v = f32::NAN);
                    }
                    return Ok(());
                }
                let mut raw = self.scratch.borrow_mut();
                raw.resize(need, 0.0);
                if !array.read::<f64>(&start, &count, &mut raw) {
                    return Err(failed());
                }
                for (plane, src) in out.chunks_mut(h * w).zip(raw.chunks(h * w)) {
                    for r in 0..h {
                        let sr = if *flip_y { h - 1 - r } else { r };
                        for c in 0..w {
                            let v = src[sr * w + c];
                            plane[r * w + c] = if Some(v) == *nodata || v.is_nan() {
                                f32::NAN
                            } else {
                                (v * scale + offset) as f32
                            };
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
