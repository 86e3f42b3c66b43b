//! Zones: the polygons of a vector layer that GDAL/OGR reads, with an id and attributes, in
//! the raster's CRS.

use gdal::cpl::CslStringList;
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::vector::{Geometry, Layer, LayerAccess, OGRFieldType, OGRwkbGeometryType};
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};

use crate::error::{Error, Result};
use crate::model::Crs;
use crate::source::{gdal_message, gdal_path, spatial_ref};

/// A column of values, one per zone, typed as the layer's field is.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Int(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

/// A polygon in map coordinates: the exterior ring and the holes.
pub type MapPolygon = Vec<Vec<(f64, f64)>>;

/// The zones of a layer.
#[derive(Debug, Clone)]
pub struct Zones {
    /// The id column's name: the id field's, or `fid`.
    pub id_name: String,
    pub ids: Column,
    /// Attribute fields carried into the output.
    pub fields: Vec<(String, Column)>,
    /// Each zone's polygons (one for a polygon, several for a multipolygon), in the target CRS.
    pub polygons: Vec<Vec<MapPolygon>>,
}

/// What to read and how.
#[derive(Debug, Clone, Default)]
pub struct ZoneOptions {
    /// `path` or `path:layer`; local or `s3://`.
    pub path: String,
    pub id_field: Option<String>,
    pub fields: Vec<String>,
    /// Repair invalid geometries (GDAL's `MakeValid`) instead of refusing them.
    pub make_valid: bool,
}

impl Zones {
    pub fn len(&self) -> usize {
        self.polygons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.polygons.is_empty()
    }

    /// Reads the zones of `options.path`, reprojected to `target` when the layer's CRS differs
    /// (each edge densified first so that it stays right: at most `max_segment`, in the
    /// layer's units, is drawn straight).
    pub fn read(options: &ZoneOptions, target: &Crs) -> Result<Zones> {
        let what = &options.path;
        let named = format!("zones {what}");
        let ds = open_vector(&options.path, &named)?;
        let mut layer = vector_layer(&ds, &options.path, &named)?;
        let field_names: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
        let field_index = |name: &str| -> Result<(usize, OGRFieldType::Type)> {
            let i = field_names.iter().position(|f| f == name).ok_or_else(|| {
                Error::invalid(format!(
                    "zones {what}: no field {name:?} (fields: {})",
                    field_names.join(", ")
                ))
            })?;
            let ty = layer.defn().fields().nth(i).map(|f| f.field_type());
            Ok((i, ty.unwrap_or(OGRFieldType::OFTString)))
        };
        let id = options.id_field.as_deref().map(field_index).transpose()?;
        let fields: Vec<(String, usize, OGRFieldType::Type)> = options
            .fields
            .iter()
            .map(|f| field_index(f).map(|(i, t)| (f.clone(), i, t)))
            .collect::<Result<_>>()?;
        let transform = reprojection(layer.spatial_ref(), target, what)?;

        let mut zones = Zones {
            id_name: options.id_field.clone().unwrap_or_else(|| "fid".into()),
            ids: empty_column(id.map_or(OGRFieldType::OFTInteger64, |(_, t)| t)),
            fields: fields
                .iter()
                .map(|(n, _, t)| (n.clone(), empty_column(*t)))
                .collect(),
            polygons: Vec::new(),
        };
        for (k, feature) in layer.features().enumerate() {
            let fid = feature.fid();
            let name = || match fid {
                Some(f) => format!("feature {f}"),
                None => format!("feature #{k}"),
            };
            match id {
                Some((i, _)) => push_field(&mut zones.ids, &feature, i)?,
                None => push_value(&mut zones.ids, fid.map(|f| f as i64)),
            }
            for ((_, i, _), (_, column)) in fields.iter().zip(&mut zones.fields) {
                push_field(column, &feature, *i)?;
            }
            let polygons = match feature.geometry() {
                None => Vec::new(),
                Some(g) => {
                    let repaired;
                    let valid = g.is_valid();
                    let g = if valid {
                        g
                    } else if options.make_valid {
                        repaired = g.make_valid(&CslStringList::new()).map_err(|e| {
                            Error::invalid(format!(
                                "zones {what}: {} cannot be repaired: {}",
                                name(),
                                gdal_message(&e)
                            ))
                        })?;
                        &repaired
                    } else {
                        return Err(Error::invalid(format!(
                            "zones {what}: {} has an invalid geometry (a self-intersection \
                             or a bad ring); fix it or pass --make-valid",
                            name()
                        )));
                    };
                    let mut polygons = Vec::new();
                    // A repaired polygon that collapsed (to a line or a point) has no area,
                    // and no cells.
                    collect_polygons(g, !valid, &mut polygons).map_err(|ty| {
                        Error::invalid(format!(
                            "zones {what}: {} is a {ty}, not a polygon or multipolygon",
                            name()
                        ))
                    })?;
                    if let Some((t, max_segment)) = &transform {
                        for p in &mut polygons {
                            for ring in p.iter_mut() {
                                *ring = densify(ring, *max_segment);
                                project(t, ring).map_err(|e| {
                                    Error::Crs(format!(
                                        "zones {what}: {} cannot be reprojected: {e}",
                                        name()
                                    ))
                                })?;
                            }
                        }
                    }
                    polygons
                }
            };
            zones.polygons.push(polygons);
        }
        Ok(zones)
    }
}

/// Opens the vector file of `text` (`path` or `path:layer`, local or `s3://`); `what` names
/// it in errors.
pub(crate) fn open_vector(text: &str, what: &str) -> Result<Dataset> {
    let (path, _) = split_layer(text);
    Dataset::open_ex(
        gdal_path(path)?,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_VECTOR | GdalOpenFlags::GDAL_OF_VERBOSE_ERROR,
            ..Default::default()
        },
    )
    .map_err(|e| {
        Error::invalid(format!(
            "{what}: not a vector file GDAL reads ({})",
            gdal_message(&e)
        ))
    })
}

/// The layer `text` names (`path:layer`), or the first one.
pub(crate) fn vector_layer<'d>(ds: &'d Dataset, text: &str, what: &str) -> Result<Layer<'d>> {
    match split_layer(text).1 {
        Some(name) => ds.layer_by_name(name).map_err(|_| {
            let names: Vec<String> = ds.layers().map(|l| l.name()).collect();
            Error::invalid(format!(
                "{what}: no layer {name:?} (layers: {})",
                names.join(", ")
            ))
        }),
        None => ds
            .layer(0)
            .map_err(|_| Error::invalid(format!("{what}: the file has no layer"))),
    }
}

/// `path:layer` → (path, layer); a Windows drive letter or a URL scheme is not a layer.
fn split_layer(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(':') {
        Some((path, layer))
            if !layer.is_empty() && !layer.starts_with("//") && !layer.contains('/') =>
        {
            (path, Some(layer))
        }
        _ => (text, None),
    }
}

fn empty_column(ty: OGRFieldType::Type) -> Column {
    match ty {
        OGRFieldType::OFTInteger | OGRFieldType::OFTInteger64 => Column::Int(Vec::new()),
        OGRFieldType::OFTReal => Column::Real(Vec::new()),
        _ => Column::Text(Vec::new()),
    }
}

fn push_value(column: &mut Column, v: Option<i64>) {
    match column {
        Column::Int(c) => c.push(v),
        Column::Real(c) => c.push(v.map(|v| v as f64)),
        Column::Text(c) => c.push(v.map(|v| v.to_string())),
    }
}

fn push_field(column: &mut Column, feature: &gdal::vector::Feature, i: usize) -> Result<()> {
    let bad = |e: gdal::errors::GdalError| Error::invalid(format!("field {i}: {e}"));
    match column {
        Column::Int(c) => c.push(feature.field_as_integer64(i).map_err(bad)?),
        Column::Real(c) => c.push(feature.field_as_double(i).map_err(bad)?),
        Column::Text(c) => c.push(feature.field_as_string(i).map_err(bad)?),
    }
    Ok(())
}

/// The polygons of a geometry (a polygon, a multipolygon, or a collection of them), as rings
/// of map coordinates; on another type, its name — or nothing, if `areal_only` (what a repair
/// left of a collapsed part).
fn collect_polygons(
    g: &Geometry,
    areal_only: bool,
    out: &mut Vec<MapPolygon>,
) -> std::result::Result<(), String> {
    let ty = gdal::vector::geometry_type_flatten(g.geometry_type());
    match ty {
        OGRwkbGeometryType::wkbPolygon => {
            let mut rings = Vec::new();
            for i in 0..g.geometry_count() {
                let mut points = Vec::new();
                g.get_geometry(i).get_points(&mut points);
                rings.push(points.into_iter().map(|(x, y, _)| (x, y)).collect());
            }
            if !rings.is_empty() {
                out.push(rings);
            }
            Ok(())
        }
        OGRwkbGeometryType::wkbMultiPolygon | OGRwkbGeometryType::wkbGeometryCollection => {
            for i in 0..g.geometry_count() {
                collect_polygons(&g.get_geometry(i), areal_only, out)?;
            }
            Ok(())
        }
        _ if areal_only => Ok(()),
        _ => Err(g.geometry_name()),
    }
}

/// How to bring the layer's coordinates into `target`, with the longest edge drawn straight;
/// `None` when they already are (or either CRS is unknown).
fn reprojection(
    layer: Option<SpatialRef>,
    target: &Crs,
    what: &str,
) -> Result<Option<(CoordTransform, f64)>> {
    let Some(mut from) = layer else {
        return Ok(None);
    };
    if target.wkt.is_empty() {
        return Ok(None);
    }
    let to = spatial_ref(target)?;
    from.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    if from == to {
        return Ok(None);
    }
    let t = CoordTransform::new(&from, &to)
        .map_err(|e| Error::Crs(format!("zones {what}: cannot reproject to {target}: {e}")))?;
    // A hundredth of a degree, or 1 km: an edge no longer than that bends less than a cell of
    // any grid these zones are meant for.
    let max_segment = if from.is_geographic() { 0.01 } else { 1000.0 };
    Ok(Some((t, max_segment)))
}

/// `ring` with points added so that no edge is longer than `max`.
fn densify(ring: &[(f64, f64)], max: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(ring.len());
    for w in ring.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let steps = ((x1 - x0).hypot(y1 - y0) / max).ceil().max(1.0) as usize;
        for s in 0..steps {
            let t = s as f64 / steps as f64;
            out.push((x0 + t * (x1 - x0), y0 + t * (y1 - y0)));
        }
    }
    if let Some(&last) = ring.last() {
        out.push(last);
    }
    out
}

fn project(t: &CoordTransform, ring: &mut [(f64, f64)]) -> std::result::Result<(), String> {
    let mut xs: Vec<f64> = ring.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = ring.iter().map(|p| p.1).collect();
    t.transform_coords(&mut xs, &mut ys, &mut [])
        .map_err(|e| e.to_string())?;
    for (p, (x, y)) in ring.iter_mut().zip(xs.into_iter().zip(ys)) {
        *p = (x, y);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_name_follows_the_last_colon() {
        assert_eq!(split_layer("a.gpkg:basins"), ("a.gpkg", Some("basins")));
        assert_eq!(split_layer("a.geojson"), ("a.geojson", None));
        assert_eq!(split_layer("s3://b/z.fgb"), ("s3://b/z.fgb", None));
        assert_eq!(densify(&[(0.0, 0.0), (3.0, 0.0)], 1.0).len(), 4);
    }
}
