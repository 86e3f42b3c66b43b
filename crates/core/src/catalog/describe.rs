//! What a dataset holds, read from the dataset itself: a raster layer's or a cube's metadata,
//! a table's schema and row count.

use gdal::spatial_ref::{CoordTransform, SpatialRef};

use super::record::{DatasetKind, Description, Dim, Variable};
use crate::cube::{CubeReader, Lead};
use crate::error::{Error, Result};
use crate::layer::LayerReader;
use crate::model::{Crs, Extent, GridExtent};
use crate::store::Store;

/// Points along each edge when a bbox is reprojected (a straight edge in one CRS is a curve
/// in another).
const DENSIFY: i32 = 21;

/// The description of the dataset of `kind` at `url`.
pub fn describe(url: &str, kind: DatasetKind) -> Result<Description> {
    match kind {
        DatasetKind::Raster => describe_raster(url),
        DatasetKind::Cube => describe_cube(url),
        DatasetKind::Table => describe_table(url),
    }
}

/// `EPSG:n`, or the WKT when the CRS has no code.
fn crs_text(crs: &Crs) -> Option<String> {
    match crs.epsg {
        Some(code) => Some(format!("EPSG:{code}")),
        None if crs.wkt.is_empty() => None,
        None => Some(crs.wkt.clone()),
    }
}

fn bbox_of(e: &Extent) -> [f64; 4] {
    [e.xmin, e.ymin, e.xmax, e.ymax]
}

/// A bbox in `crs` as west, south, east, north in EPSG:4326; `None` when it cannot be
/// transformed (no CRS, or outside the CRS's area).
pub fn reproject_bbox(bbox: [f64; 4], crs: &Crs) -> Option<[f64; 4]> {
    if crs.epsg == Some(4326) {
        return Some(bbox);
    }
    let from = crate::source::spatial_ref(crs).ok()?;
    let mut to = SpatialRef::from_epsg(4326).ok()?;
    to.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    let t = CoordTransform::new(&from, &to).ok()?;
    let out = t.transform_bounds(&bbox, DENSIFY).ok()?;
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn spatial(d: &mut Description, grid: &GridExtent, crs: &Crs) {
    let bbox = bbox_of(&grid.extent);
    d.crs = crs_text(crs);
    d.bbox = Some(bbox);
    d.bbox_4326 = reproject_bbox(bbox, crs);
    d.cell_size = Some([grid.cell_size.width, grid.cell_size.height]);
}

fn dim(name: &str, size: u64) -> Dim {
    Dim {
        name: name.to_string(),
        size,
    }
}

fn describe_raster(url: &str) -> Result<Description> {
    let reader = LayerReader::open(url)?;
    let info = reader.info();
    let meta = &info.metadata;
    let grid = meta.array_grid();
    let mut d = Description::default();
    spatial(&mut d, &grid, &meta.crs);
    // The data's own extent, not the grid rounded out to whole tiles.
    d.bbox = Some(bbox_of(&meta.extent));
    d.bbox_4326 = reproject_bbox(bbox_of(&meta.extent), &meta.crs);
    d.dims = vec![
        dim("band", info.bands.len() as u64),
        dim("y", grid.rows),
        dim("x", grid.cols),
    ];
    d.variables = info
        .bands
        .iter()
        .map(|b| Variable {
            name: b.clone(),
            units: None,
            dtype: meta.cell_type.data_type.name().to_string(),
        })
        .collect();
    d.sources = info.sources.clone();
    Ok(d)
}

fn describe_cube(url: &str) -> Result<Description> {
    let reader = CubeReader::open(url)?;
    let info = reader.info();
    let mut d = Description::default();
    spatial(&mut d, &info.grid, &info.crs);
    if let Lead::Time(times) = &info.lead {
        d.time_start = times.iter().min().map(|t| t * 1000);
        d.time_end = times.iter().max().map(|t| t * 1000);
    }
    let (y, x) = info.crs.yx_dim_names();
    d.dims.push(dim("variable", info.variables.len() as u64));
    d.dims.push(dim(info.lead.name(), info.lead.len() as u64));
    // The levels or members of the variable that has the most.
    if let Some(axes) = info
        .variables
        .iter()
        .map(|v| &v.axes)
        .max_by_key(|a| a.len())
    {
        for a in axes {
            d.dims.push(dim(&a.name, a.values.len() as u64));
        }
    }
    d.dims.push(dim(y, info.grid.rows));
    d.dims.push(dim(x, info.grid.cols));
    d.variables = info
        .variables
        .iter()
        .map(|v| Variable {
            name: v.name.clone(),
            units: v
                .attrs
                .get("units")
                .and_then(|u| u.as_str())
                .map(str::to_string),
            dtype: "float32".to_string(),
        })
        .collect();
    d.sources = info.sources.clone();
    Ok(d)
}

/// The store holding a file, and the file's key in it.
pub fn split_file_url(url: &str) -> Result<(Store, String)> {
    let url = url.trim_end_matches('/');
    match url.rsplit_once('/') {
        Some((dir, file)) if !file.is_empty() => Ok((
            Store::open(if dir.is_empty() { "/" } else { dir })?,
            file.to_string(),
        )),
        _ => Err(Error::invalid(format!("`{url}` does not name a file"))),
    }
}

fn describe_table(url: &str) -> Result<Description> {
    let (store, key) = split_file_url(url)?;
    let bytes = crate::store::block_on(store.get(&key))?
        .ok_or_else(|| Error::storage_permanent(url, "the table is not there"))?;
    let mut d = Description::default();
    if url.ends_with(".csv") {
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        d.variables = header
            .split(',')
            .map(|c| Variable {
                name: c.trim_matches('"').to_string(),
                units: None,
                dtype: "utf8".to_string(),
            })
            .collect();
        d.dims = vec![dim("row", lines.count() as u64)];
        return Ok(d);
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::storage_permanent(url, format!("not a Parquet table: {e}")))?;
    d.dims = vec![dim(
        "row",
        reader.metadata().file_metadata().num_rows().max(0) as u64,
    )];
    d.variables = reader
        .schema()
        .fields()
        .iter()
        .map(|f| Variable {
            name: f.name().clone(),
            units: None,
            dtype: f.data_type().to_string().to_lowercase(),
        })
        .collect();
    Ok(d)
}
