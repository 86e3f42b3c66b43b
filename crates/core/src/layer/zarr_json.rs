//! The JSON documents of a layer: Zarr v2 metadata plus the attributes GDAL (`_ARRAY_DIMENSIONS`,
//! `_CRS`), CF and rioxarray (`grid_mapping`, `spatial_ref` with `crs_wkt` and `GeoTransform`)
//! look for.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::LayerInfo;
use crate::model::DataType;

pub(crate) fn dtype(t: DataType) -> &'static str {
    match t {
        DataType::U8 => "|u1",
        DataType::I16 => "<i2",
        DataType::U16 => "<u2",
        DataType::I32 => "<i4",
        DataType::F32 => "<f4",
        DataType::F64 => "<f8",
    }
}

/// A Zarr v2 fill value: integers as integers, NaN as the string "NaN".
pub(crate) fn fill_value(t: DataType, v: f64) -> Value {
    if t.is_float() {
        if v.is_nan() { json!("NaN") } else { json!(v) }
    } else {
        json!(v as i64)
    }
}

pub(crate) fn zarray(
    shape: &[u64],
    chunks: &[u64],
    t: DataType,
    fill: Value,
    zstd_level: i32,
) -> Value {
    json!({
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype(t),
        "compressor": { "id": "zstd", "level": zstd_level },
        "fill_value": fill,
        "order": "C",
        "filters": null,
        "dimension_separator": ".",
    })
}

/// The root attributes: Tessera's layer description and CF conventions.
pub(super) fn root_attributes(info: &LayerInfo) -> Value {
    json!({ "Conventions": "CF-1.8", "tessera": info })
}

/// Every metadata document of a layer, keyed by object key.
pub(super) fn documents(info: &LayerInfo, zstd_level: i32) -> BTreeMap<String, Value> {
    let md = &info.metadata;
    let grid = md.array_grid();
    let tl = md.layout.tile_layout;
    let crs = &md.crs;
    let mut docs = BTreeMap::new();
    docs.insert(".zgroup".to_string(), json!({ "zarr_format": 2 }));
    docs.insert(".zattrs".to_string(), root_attributes(info));

    let ct = md.cell_type;
    for (i, band) in info.bands.iter().enumerate() {
        let shape = [grid.rows, grid.cols];
        let chunks = [tl.tile_rows as u64, tl.tile_cols as u64];
        docs.insert(
            format!("{band}/.zarray"),
            zarray(
                &shape,
                &chunks,
                ct.data_type,
                fill_value(ct.data_type, ct.fill_value()),
                zstd_level,
            ),
        );
        let mut attrs = json!({
            "_ARRAY_DIMENSIONS": ["y", "x"],
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            "long_name": format!("band {}", i + 1),
        });
        if !crs.wkt.is_empty() {
            attrs["_CRS"] = json!({ "wkt": crs.wkt });
        }
        docs.insert(format!("{band}/.zattrs"), attrs);
    }

    let geographic = crs.is_geographic();
    for (name, n, axis) in [("x", grid.cols, "X"), ("y", grid.rows, "Y")] {
        docs.insert(
            format!("{name}/.zarray"),
            zarray(&[n], &[n], DataType::F64, json!("NaN"), zstd_level),
        );
        let (standard_name, units, long_name) = match (geographic, axis) {
            (true, "X") => ("longitude", "degrees_east", "longitude"),
            (true, _) => ("latitude", "degrees_north", "latitude"),
            (false, "X") => ("projection_x_coordinate", "m", "x coordinate of projection"),
            (false, _) => ("projection_y_coordinate", "m", "y coordinate of projection"),
        };
        docs.insert(
            format!("{name}/.zattrs"),
            json!({
                "_ARRAY_DIMENSIONS": [name],
                "axis": axis,
                "standard_name": standard_name,
                "long_name": long_name,
                "units": units,
            }),
        );
    }

    docs.insert(
        "spatial_ref/.zarray".to_string(),
        zarray(&[], &[], DataType::I32, json!(0), zstd_level),
    );
    docs.insert(
        "spatial_ref/.zattrs".to_string(),
        spatial_ref_attrs(&crs.wkt, &grid.geo_transform()),
    );
    docs
}

/// The attributes of the scalar `spatial_ref` variable that GDAL and xarray (rioxarray) read a
/// grid's CRS and geotransform from.
pub(crate) fn spatial_ref_attrs(wkt: &str, geo_transform: &[f64]) -> Value {
    let gt = geo_transform
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "_ARRAY_DIMENSIONS": [],
        "crs_wkt": wkt,
        "spatial_ref": wkt,
        "GeoTransform": gt,
    })
}
