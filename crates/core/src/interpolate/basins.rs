//! Thiessen outputs: the polygons as a vector layer, and each station's area share of each
//! zone (basin) with the areal average per zone and time step.
//!
//! A time step where some stations have no value gets the polygons of the stations that do
//! (what a hydrologist recomputes by hand), so a gap never biases a basin's average; the
//! weights table is that of every station.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use gdal::DriverManager;
use gdal::vector::{Geometry, LayerAccess, LayerOptions, OGRFieldType, OGRwkbGeometryType};

use super::stations::Stations;
use super::thiessen::{self, Ring};
use crate::error::{Error, Result};
use crate::model::Crs;
use crate::zonal::zones::{Column, MapPolygon, ZoneOptions, Zones};

/// The box the polygons are built in: around the stations and `also`, grown by a tenth.
pub fn frame(xy: &[(f64, f64)], also: &[(f64, f64)]) -> (f64, f64, f64, f64) {
    let mut b = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in xy.iter().chain(also) {
        b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    let pad = ((b.2 - b.0).max(b.3 - b.1) * 0.1).max(1.0);
    (b.0 - pad, b.1 - pad, b.2 + pad, b.3 + pad)
}

fn ring_wkt(ring: &[(f64, f64)]) -> String {
    let mut pts: Vec<String> = ring.iter().map(|(x, y)| format!("{x:?} {y:?}")).collect();
    if let Some(first) = pts.first().cloned() {
        pts.push(first);
    }
    format!("({})", pts.join(","))
}

fn polygons_wkt(parts: &[MapPolygon]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|rings| {
            let rings: Vec<String> = rings
                .iter()
                .map(|r| {
                    let open: &[(f64, f64)] = match (r.first(), r.last()) {
                        (Some(a), Some(b)) if r.len() > 1 && a == b => &r[..r.len() - 1],
                        _ => r,
                    };
                    ring_wkt(open)
                })
                .collect();
            format!("({})", rings.join(","))
        })
        .collect();
    format!("MULTIPOLYGON({})", parts.join(","))
}

fn vector_driver(path: &str) -> Result<&'static str> {
    let lower = path.to_ascii_lowercase();
    let driver = [
        (".geojson", "GeoJSON"),
        (".json", "GeoJSON"),
        (".gpkg", "GPKG"),
        (".shp", "ESRI Shapefile"),
        (".fgb", "FlatGeobuf"),
    ]
    .into_iter()
    .find(|(ext, _)| lower.ends_with(ext))
    .map(|(_, d)| d);
    driver.ok_or_else(|| {
        Error::invalid(format!(
            "--polygons {path}: write .geojson, .gpkg, .shp or .fgb"
        ))
    })
}

/// Writes every station's polygon — clipped to the frame, or to `boundary` — to `path`, with
/// the station's id, number, coordinates and the polygon's area; written beside and renamed.
pub fn write_polygons(
    path: &str,
    stations: &Stations,
    cells: &[Ring],
    crs: &Crs,
    boundary: Option<&Zones>,
    overwrite: bool,
) -> Result<usize> {
    let driver_name = vector_driver(path)?;
    let dest = Path::new(path);
    if dest.exists() && !overwrite {
        return Err(Error::invalid(format!(
            "--polygons {path} exists (pass --overwrite to replace it)"
        )));
    }
    let ext = dest.extension().and_then(|e| e.to_str()).unwrap_or("out");
    let tmp = dest.with_file_name(format!(
        ".{}.tessera-{}.{ext}",
        dest.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("polygons"),
        std::process::id()
    ));
    let err = |e: gdal::errors::GdalError| Error::storage(path.to_string(), e);
    let clip = match boundary {
        None => None,
        Some(z) => {
            let all: Vec<MapPolygon> = z.polygons.iter().flatten().cloned().collect();
            let g = Geometry::from_wkt(&polygons_wkt(&all)).map_err(|e| {
                Error::invalid(format!("--boundary: its polygons cannot be used: {e}"))
            })?;
            Some(g)
        }
    };
    let written = (|| -> Result<usize> {
        let driver = DriverManager::get_driver_by_name(driver_name).map_err(err)?;
        let mut ds = driver.create_vector_only(&tmp).map_err(err)?;
        let srs = if crs.wkt.is_empty() {
            None
        } else {
            Some(crate::source::spatial_ref(crs)?)
        };
        let layer = ds
            .create_layer(LayerOptions {
                name: "thiessen",
                srs: srs.as_ref(),
                ty: OGRwkbGeometryType::wkbMultiPolygon,
                options: None,
            })
            .map_err(err)?;
        layer
            .create_defn_fields(&[
                ("station", OGRFieldType::OFTString),
                ("number", OGRFieldType::OFTInteger),
                ("x", OGRFieldType::OFTReal),
                ("y", OGRFieldType::OFTReal),
                ("area", OGRFieldType::OFTReal),
            ])
            .map_err(err)?;
        let mut n = 0;
        for (s, cell) in cells.iter().enumerate() {
            if cell.len() < 3 {
                continue;
            }
            let wkt = format!("MULTIPOLYGON(({}))", ring_wkt(cell));
            let mut g = Geometry::from_wkt(&wkt).map_err(err)?;
            if let Some(b) = &clip {
                match g.intersection(b) {
                    Some(i) if !i.is_empty() && i.area() > 0.0 => g = i,
                    _ => continue,
                }
            }
            let area = g.area();
            let mut f = gdal::vector::Feature::new(layer.defn()).map_err(err)?;
            f.set_field_string(0, &stations.ids[s]).map_err(err)?;
            f.set_field_integer(1, (s + 1) as i32).map_err(err)?;
            f.set_field_double(2, stations.xy[s].0).map_err(err)?;
            f.set_field_double(3, stations.xy[s].1).map_err(err)?;
            f.set_field_double(4, area).map_err(err)?;
            f.set_geometry(g).map_err(err)?;
            f.create(&layer).map_err(err)?;
            n += 1;
        }
        ds.close().map_err(err)?;
        Ok(n)
    })();
    match written.and_then(|n| {
        crate::store::replace_file(&tmp, dest)
            .map(|()| n)
            .map_err(|e| Error::storage(path.to_string(), e))
    }) {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn zone_ids(zones: &Zones) -> Vec<String> {
    let text = |v: Option<String>| v.unwrap_or_default();
    match &zones.ids {
        Column::Int(c) => c.iter().map(|v| text(v.map(|x| x.to_string()))).collect(),
        Column::Real(c) => c.iter().map(|v| text(v.map(|x| x.to_string()))).collect(),
        Column::Text(c) => c.iter().cloned().map(text).collect(),
    }
}

/// What [`basin_averages`] computed.
#[derive(Debug, Clone, PartialEq)]
pub struct BasinSummary {
    pub zones: usize,
    /// Rows of the averages table.
    pub rows: usize,
    /// Zones no station's polygon reaches.
    pub zones_without_stations: usize,
}

/// The area of each station's polygon in each zone: `[zone][station]` over `xy`.
pub fn shares(xy: &[(f64, f64)], zones: &Zones) -> Vec<Vec<f64>> {
    let corners: Vec<(f64, f64)> = zones
        .polygons
        .iter()
        .flatten()
        .flatten()
        .flatten()
        .copied()
        .collect();
    let cells = thiessen::polygons(xy, frame(xy, &corners));
    zones
        .polygons
        .iter()
        .map(|zone| cells.iter().map(|c| thiessen::overlap(c, zone)).collect())
        .collect()
}

/// Thiessen weights of `stations` in each zone of `zones_path`, and the areal average of each
/// zone per time step: the tables `weights_out` (zone, station, x, y, area, weight) and
/// `out` (zone, time, value, stations), each `.csv` or `.parquet`.
pub fn basin_averages(
    stations: &Stations,
    zones: &ZoneOptions,
    crs: &Crs,
    out: &str,
    weights_out: Option<&str>,
) -> Result<BasinSummary> {
    let zones = Zones::read(zones, crs)?;
    let ids = zone_ids(&zones);
    // The weights of every station, for the weights table.
    let all = shares(&stations.xy, &zones);
    if let Some(path) = weights_out {
        let mut z = Vec::new();
        let mut st = Vec::new();
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut area = Vec::new();
        let mut weight = Vec::new();
        for (zi, row) in all.iter().enumerate() {
            let total: f64 = row.iter().sum();
            for (s, &a) in row.iter().enumerate() {
                if a > 0.0 {
                    z.push(ids[zi].clone());
                    st.push(stations.ids[s].clone());
                    xs.push(stations.xy[s].0);
                    ys.push(stations.xy[s].1);
                    area.push(a);
                    weight.push(a / total);
                }
            }
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (zones.id_name.as_str(), Arc::new(StringArray::from(z))),
            ("station", Arc::new(StringArray::from(st))),
            ("x", Arc::new(Float64Array::from(xs))),
            ("y", Arc::new(Float64Array::from(ys))),
            ("area", Arc::new(Float64Array::from(area))),
            ("weight", Arc::new(Float64Array::from(weight))),
        ];
        write_table(path, columns)?;
    }
    // The averages, with the polygons of the stations that have a value at each step.
    let mut by_mask: HashMap<Vec<bool>, Vec<Vec<f64>>> = HashMap::new();
    let mut z = Vec::new();
    let mut times = Vec::new();
    let mut values = Vec::new();
    let mut used = Vec::new();
    for (step, t) in stations.times.iter().enumerate() {
        let v = &stations.values[step];
        let mask: Vec<bool> = v.iter().map(|x| x.is_finite()).collect();
        let (xy, vals, _) = stations.at(step);
        let weights = by_mask.entry(mask.clone()).or_insert_with(|| {
            if mask.iter().all(|&m| m) {
                all.clone()
            } else {
                shares(&xy, &zones)
            }
        });
        for (zi, row) in weights.iter().enumerate() {
            let total: f64 = row.iter().sum();
            let sum: f64 = row.iter().zip(&vals).map(|(a, v)| a * v).sum();
            z.push(ids[zi].clone());
            times.push(t.map(|s| s * 1000));
            values.push((total > 0.0).then(|| sum / total));
            used.push(row.iter().filter(|&&a| a > 0.0).count() as u32);
        }
    }
    let rows = z.len();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (zones.id_name.as_str(), Arc::new(StringArray::from(z))),
        ("time", Arc::new(TimestampMillisecondArray::from(times))),
        ("value", Arc::new(Float64Array::from(values))),
        ("stations", Arc::new(UInt32Array::from(used))),
    ];
    write_table(out, columns)?;
    Ok(BasinSummary {
        zones: ids.len(),
        rows,
        zones_without_stations: all.iter().filter(|r| r.iter().all(|&a| a <= 0.0)).count(),
    })
}

/// Writes columns as CSV or Parquet (by `path`'s extension), beside and renamed into place.
fn write_table(path: &str, columns: Vec<(&str, ArrayRef)>) -> Result<()> {
    let lower = path.to_ascii_lowercase();
    let parquet = lower.ends_with(".parquet");
    if !parquet && !lower.ends_with(".csv") {
        return Err(Error::invalid(format!(
            "{path}: a table is written as .csv or .parquet"
        )));
    }
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| {
                let ty = match a.data_type() {
                    DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Millisecond, None),
                    t => t.clone(),
                };
                Field::new(*n, ty, true)
            })
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())
        .map_err(|e| Error::Internal(format!("table: {e}")))?;
    let dest = Path::new(path);
    let tmp = crate::zonal::table::hidden_beside(dest, &format!("tessera-{}", std::process::id()));
    let failed = |e: &dyn std::fmt::Display| Error::storage(path.to_string(), e);
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| failed(&e))?;
        if parquet {
            let mut w =
                parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| failed(&e))?;
            w.write(&batch).map_err(|e| failed(&e))?;
            w.close().map_err(|e| failed(&e))?;
        } else {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_format("%Y-%m-%dT%H:%M:%S".into())
                .build(file);
            w.write(&batch).map_err(|e| failed(&e))?;
        }
        Ok(())
    })();
    match result.and_then(|()| crate::store::replace_file(&tmp, dest).map_err(|e| failed(&e))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
