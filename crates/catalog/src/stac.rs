//! The catalog as a static STAC catalog: a Collection per kind of dataset and an Item per
//! finished dataset, with its bbox, time range, projection and datacube fields and an asset
//! pointing at its data.
//!
//! ```text
//! catalog.json
//! <kind>/collection.json
//! <kind>/<id>/<id>.json
//! ```

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use stac::{Asset, Bbox, Catalog, Collection, Item, Link};
use tessera_core::catalog::{Dataset, DatasetKind, Status};

use crate::{QueryError, Result};

/// The projection extension (v2: `proj:code`).
pub const PROJECTION: &str = "https://stac-extensions.github.io/projection/v2.0.0/schema.json";
/// The datacube extension.
pub const DATACUBE: &str = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json";

fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| QueryError::Invalid(format!("STAC: {e}")))
}

fn media_type(d: &Dataset) -> &'static str {
    match d.kind {
        DatasetKind::Table if d.url.ends_with(".csv") => "text/csv",
        DatasetKind::Table => "application/vnd.apache.parquet",
        _ => "application/vnd+zarr",
    }
}

/// The datacube extension's dimensions and variables of a dataset.
fn datacube(d: &Dataset) -> (Map<String, Value>, Map<String, Value>) {
    let desc = &d.description;
    let mut dims = Map::new();
    let mut names = Vec::new();
    for dim in &desc.dims {
        let name = dim.name.as_str();
        let value = match name {
            "x" | "longitude" => json!({
                "type": "spatial", "axis": "x",
                "extent": desc.bbox.map(|b| json!([b[0], b[2]])).unwrap_or(json!([null, null])),
                "step": desc.cell_size.map(|c| json!(c[0])).unwrap_or(Value::Null),
                "reference_system": desc.crs.clone().map(|c| json!(c)).unwrap_or(json!(4326)),
            }),
            "y" | "latitude" => json!({
                "type": "spatial", "axis": "y",
                "extent": desc.bbox.map(|b| json!([b[1], b[3]])).unwrap_or(json!([null, null])),
                "step": desc.cell_size.map(|c| json!(-c[1])).unwrap_or(Value::Null),
                "reference_system": desc.crs.clone().map(|c| json!(c)).unwrap_or(json!(4326)),
            }),
            "time" => json!({
                "type": "temporal",
                "extent": [
                    desc.time_start.and_then(time).map(|t| t.to_rfc3339()),
                    desc.time_end.and_then(time).map(|t| t.to_rfc3339()),
                ],
            }),
            // The variables are listed in cube:variables, not as a dimension.
            "variable" => continue,
            other => json!({"type": other, "description": format!("{} values", dim.size)}),
        };
        names.push(name.to_string());
        dims.insert(name.to_string(), value);
    }
    let mut vars = Map::new();
    for v in &desc.variables {
        let mut var = json!({"dimensions": names.clone(), "type": "data", "data_type": v.dtype});
        if let Some(u) = &v.units {
            var["unit"] = json!(u);
        }
        vars.insert(v.name.clone(), var);
    }
    (dims, vars)
}

/// A dataset's Item.
pub fn item(d: &Dataset) -> Result<Item> {
    let desc = &d.description;
    let mut item = Item::new(d.id.to_string());
    if let Some([w, s, e, n]) = desc.bbox_4326 {
        item.bbox = Some(Bbox::TwoDimensional([w, s, e, n]));
        item.geometry = Some(
            serde_json::from_value(json!({
                "type": "Polygon",
                "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]],
            }))
            .map_err(|e| QueryError::Invalid(format!("STAC geometry: {e}")))?,
        );
    }
    let p = &mut item.properties;
    match (desc.time_start, desc.time_end) {
        (Some(a), b) => {
            p.datetime = None;
            p.start_datetime = time(a);
            p.end_datetime = time(b.unwrap_or(a));
        }
        _ => p.datetime = time(d.update_time),
    }
    p.title = Some(d.name.clone());
    let extra = &mut p.additional_fields;
    extra.insert("created".into(), to_json(&time(d.create_time))?);
    extra.insert("updated".into(), to_json(&time(d.update_time))?);
    extra.insert("tessera:kind".into(), json!(d.kind.as_str()));
    extra.insert("tessera:status".into(), json!(d.status.as_str()));
    if let Some(run) = &d.last_run {
        extra.insert("tessera:last_run".into(), json!(run));
    }
    if !d.attributes.is_empty() {
        extra.insert("tessera:attributes".into(), to_json(&d.attributes)?);
    }
    if let Some(crs) = &desc.crs {
        item.extensions.push(PROJECTION.to_string());
        let code = crs.starts_with("EPSG:").then(|| crs.clone());
        extra.insert("proj:code".into(), json!(code));
        if code.is_none() {
            extra.insert("proj:wkt2".into(), json!(crs));
        }
        if let Some(b) = desc.bbox {
            extra.insert("proj:bbox".into(), json!(b));
        }
        let size = |n: &[&str]| {
            desc.dims
                .iter()
                .find(|x| n.contains(&x.name.as_str()))
                .map(|x| x.size)
        };
        if let (Some(rows), Some(cols)) = (size(&["y", "latitude"]), size(&["x", "longitude"])) {
            extra.insert("proj:shape".into(), json!([rows, cols]));
        }
    }
    if d.kind != DatasetKind::Table {
        let (dims, vars) = datacube(d);
        item.extensions.push(DATACUBE.to_string());
        extra.insert("cube:dimensions".into(), Value::Object(dims));
        extra.insert("cube:variables".into(), Value::Object(vars));
    }
    let mut asset = Asset::new(&d.url);
    asset.r#type = Some(media_type(d).to_string());
    asset.roles = vec!["data".to_string()];
    asset.title = Some(d.name.clone());
    item.assets.insert("data".to_string(), asset);
    item.collection = Some(collection_id(d.kind));
    Ok(item)
}

fn collection_id(kind: DatasetKind) -> String {
    format!("tessera-{}", kind.as_str())
}

/// The files of the STAC catalog of `datasets` (those DONE), by path relative to its root.
pub fn export(datasets: &[Dataset]) -> Result<Vec<(String, Value)>> {
    let mut files = Vec::new();
    let mut root = Catalog::new("tessera", "The datasets of a Tessera store");
    root.links.push(Link::root("./catalog.json"));
    for kind in [DatasetKind::Raster, DatasetKind::Cube, DatasetKind::Table] {
        let members: Vec<&Dataset> = datasets
            .iter()
            .filter(|d| d.kind == kind && d.status == Status::Done)
            .collect();
        if members.is_empty() {
            continue;
        }
        let k = kind.as_str();
        let mut collection = Collection::new(collection_id(kind), format!("Tessera {k} datasets"));
        collection.license = "other".to_string();
        let boxes: Vec<[f64; 4]> = members
            .iter()
            .filter_map(|d| d.description.bbox_4326)
            .collect();
        let union = boxes.iter().copied().reduce(|a, b| {
            [
                a[0].min(b[0]),
                a[1].min(b[1]),
                a[2].max(b[2]),
                a[3].max(b[3]),
            ]
        });
        collection.extent.spatial.bbox = vec![Bbox::TwoDimensional(
            union.unwrap_or([-180.0, -90.0, 180.0, 90.0]),
        )];
        let starts = members
            .iter()
            .filter_map(|d| d.description.time_start)
            .min();
        let ends = members.iter().filter_map(|d| d.description.time_end).max();
        collection.extent.temporal.interval = vec![[starts.and_then(time), ends.and_then(time)]];
        collection.links.push(Link::root("../catalog.json"));
        collection.links.push(Link::parent("../catalog.json"));
        for d in members {
            let id = d.id.to_string();
            let mut item = item(d)?;
            item.links.push(Link::root("../../catalog.json"));
            item.links.push(Link::parent("../collection.json"));
            item.links.push(Link::collection("../collection.json"));
            collection
                .links
                .push(Link::item(format!("./{id}/{id}.json")));
            files.push((format!("{k}/{id}/{id}.json"), to_json(&item)?));
        }
        root.links
            .push(Link::child(format!("./{k}/collection.json")));
        files.push((format!("{k}/collection.json"), to_json(&collection)?));
    }
    files.push(("catalog.json".to_string(), to_json(&root)?));
    Ok(files)
}
