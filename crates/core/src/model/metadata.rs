//! `TileLayerMetadata` and the collect-metadata reduce over sources.

use serde::{Deserialize, Serialize};

use super::grid_extent::ceil_snapped;
use super::{
    CellSize, CellType, Extent, GridExtent, KeyBounds, LayoutDefinition, LayoutScheme, SpatialKey,
};
use crate::error::{Error, Result};

/// A coordinate reference system as WKT, with its EPSG code when one is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crs {
    pub wkt: String,
    pub epsg: Option<u32>,
}

impl Crs {
    /// Whether two CRSs are the same: by EPSG code when both have one, else by WKT.
    pub fn same_as(&self, other: &Crs) -> bool {
        match (self.epsg, other.epsg) {
            (Some(a), Some(b)) => a == b,
            _ => self.wkt == other.wkt,
        }
    }

    /// A CRS known only by its WKT (as a file's metadata gives it); empty when there is none.
    pub fn from_wkt(wkt: impl Into<String>) -> Crs {
        Crs {
            wkt: wkt.into(),
            epsg: None,
        }
    }

    /// Whether map units are angles (a geographic CRS), judged from the WKT's root: WKT1's
    /// `GEOGCS`, WKT2's `GEOGCRS`/`GEOGRAPHICCRS`, or a WKT2:2015 `GEODCRS` with an ellipsoidal
    /// coordinate system (a geocentric one is Cartesian).
    pub fn is_geographic(&self) -> bool {
        let root = self.wkt.trim_start();
        ["GEOGCRS", "GEOGCS", "GEOGRAPHICCRS"]
            .iter()
            .any(|k| root.starts_with(k))
            || (root.starts_with("GEODCRS") && root.contains("ELLIPSOIDAL"))
    }

    /// The names of the y and x dimensions of a grid in this CRS: `latitude`/`longitude` on a
    /// geographic one (as cfgrib and ERA5's NetCDF name them), `y`/`x` otherwise.
    pub fn yx_dim_names(&self) -> (&'static str, &'static str) {
        if self.is_geographic() {
            ("latitude", "longitude")
        } else {
            ("y", "x")
        }
    }

    /// `EPSG:n`, or the first words of the WKT when there is no code.
    pub fn label(&self) -> String {
        match self.epsg {
            Some(code) => format!("EPSG:{code}"),
            None if self.wkt.is_empty() => "no CRS".to_string(),
            None => {
                let name = self.wkt.split('"').nth(1).unwrap_or(&self.wkt);
                format!("\"{name}\" (no EPSG code)")
            }
        }
    }
}

impl std::fmt::Display for Crs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// What collecting metadata needs to know of one source, already in the layer's CRS.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterSummary {
    /// Where it came from, for messages.
    pub name: String,
    pub crs: Crs,
    pub grid: GridExtent,
    pub cell_type: CellType,
    pub band_count: usize,
}

/// Everything a reader needs to know of a tiled layer (GeoTrellis `TileLayerMetadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileLayerMetadata {
    pub cell_type: CellType,
    pub layout: LayoutDefinition,
    /// The extent of the data itself, inside the layout's extent.
    pub extent: Extent,
    pub crs: Crs,
    pub bounds: KeyBounds<SpatialKey>,
    /// The pyramid level, for zoomed layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoom: Option<u32>,
}

impl TileLayerMetadata {
    pub fn cell_size(&self) -> CellSize {
        self.layout.cell_size()
    }

    /// The cell grid a layer stores: from the north-west corner of the key bounds to the
    /// south-east corner of the data. For a floating layout this is exactly the data's grid.
    pub fn array_grid(&self) -> GridExtent {
        let mt = self.layout.map_transform();
        let bounds = self.bounds.to_grid_bounds();
        let origin = mt.key_to_extent(self.bounds.min);
        let cs = self.cell_size();
        let tl = self.layout.tile_layout;
        let max_cols = bounds.width() as u64 * tl.tile_cols as u64;
        let max_rows = bounds.height() as u64 * tl.tile_rows as u64;
        let cols =
            (ceil_snapped((self.extent.xmax - origin.xmin) / cs.width) as u64).clamp(1, max_cols);
        let rows =
            (ceil_snapped((origin.ymax - self.extent.ymin) / cs.height) as u64).clamp(1, max_rows);
        GridExtent::from_origin(origin.xmin, origin.ymax, cs, cols, rows)
    }

    /// The Zarr chunk indices (row, col) of a key.
    pub fn chunk_of(&self, key: SpatialKey) -> [u64; 2] {
        [
            (key.row - self.bounds.min.row) as u64,
            (key.col - self.bounds.min.col) as u64,
        ]
    }

    /// The key of Zarr chunk (row, col).
    pub fn key_of_chunk(&self, chunk: [u64; 2]) -> SpatialKey {
        SpatialKey::new(
            self.bounds.min.col + chunk[1] as u32,
            self.bounds.min.row + chunk[0] as u32,
        )
    }
}

/// The collect-metadata reduce (GeoTrellis `collectMetadata`): extents are combined, cell types
/// unioned to the widest, the finest cell size wins, and the layout comes from `scheme`.
/// Sources in more than one CRS are refused; to mix CRSs, reproject the summaries to one target
/// CRS before calling this.
pub fn collect_metadata(
    sources: &[RasterSummary],
    scheme: &LayoutScheme,
) -> Result<TileLayerMetadata> {
    let Some(first) = sources.first() else {
        return Err(Error::invalid("no sources to collect metadata from"));
    };
    if let Some(other) = sources.iter().find(|s| !s.crs.same_as(&first.crs)) {
        return Err(Error::Crs(format!(
            "sources are in different CRSs: {} is {} and {} is {}; give a target CRS to reproject them",
            first.name, first.crs, other.name, other.crs
        )));
    }
    let mut extent = first.grid.extent;
    let mut cell_size = first.grid.cell_size;
    let mut cell_type = first.cell_type;
    for s in &sources[1..] {
        extent = extent.combine(&s.grid.extent);
        cell_size = cell_size.finest(&s.grid.cell_size);
        cell_type = cell_type.union(&s.cell_type);
    }
    let level = scheme.level_for(&extent, &cell_size)?;
    let bounds = level
        .layout
        .map_transform()
        .extent_to_bounds(&extent)
        .ok_or_else(|| Error::invalid(format!("extent {extent} lies outside the layout")))?;
    Ok(TileLayerMetadata {
        cell_type,
        layout: level.layout,
        extent,
        crs: first.crs.clone(),
        bounds: KeyBounds::from_grid_bounds(bounds),
        zoom: level.zoom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DataType, TileLayout};

    #[allow(clippy::too_many_arguments)] // a compact fixture for the worked examples
    fn summary(
        name: &str,
        epsg: u32,
        xmin: f64,
        ymax: f64,
        cs: f64,
        cols: u64,
        rows: u64,
        ct: CellType,
    ) -> RasterSummary {
        RasterSummary {
            name: name.into(),
            crs: Crs {
                wkt: format!("wkt {epsg}"),
                epsg: Some(epsg),
            },
            grid: GridExtent::from_origin(xmin, ymax, CellSize::new(cs, cs), cols, rows),
            cell_type: ct,
            band_count: 1,
        }
    }

    #[test]
    fn reduce_combines_extents_widens_types_and_keeps_the_finest_cells() {
        let a = summary(
            "a.tif",
            3007,
            0.0,
            100.0,
            2.0,
            50,
            50,
            CellType::new(DataType::I16, Some(-32768.0)),
        );
        let b = summary(
            "b.tif",
            3007,
            50.0,
            150.0,
            1.0,
            100,
            100,
            CellType::new(DataType::F32, None),
        );
        let md = collect_metadata(&[a, b], &LayoutScheme::floating(64, 64).unwrap()).unwrap();
        assert_eq!(md.extent, Extent::new(0.0, 0.0, 150.0, 150.0));
        assert_eq!(md.cell_size(), CellSize::new(1.0, 1.0));
        assert_eq!(md.cell_type, CellType::new(DataType::F32, Some(-32768.0)));
        assert_eq!(
            md.layout.tile_layout,
            TileLayout {
                layout_cols: 3,
                layout_rows: 3,
                tile_cols: 64,
                tile_rows: 64
            }
        );
        assert_eq!(md.array_grid().cols, 150);
        assert_eq!(md.bounds.max, SpatialKey::new(2, 2));
    }

    #[test]
    fn two_crss_are_refused_naming_both() {
        let a = summary(
            "a.tif",
            3007,
            0.0,
            100.0,
            1.0,
            10,
            10,
            CellType::new(DataType::F32, None),
        );
        let b = summary(
            "b.tif",
            3794,
            0.0,
            100.0,
            1.0,
            10,
            10,
            CellType::new(DataType::F32, None),
        );
        let err = collect_metadata(&[a, b], &LayoutScheme::floating(256, 256).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("EPSG:3007") && err.contains("EPSG:3794"),
            "{err}"
        );
        assert!(err.contains("a.tif") && err.contains("b.tif"), "{err}");
    }

    #[test]
    fn zoomed_array_grid_starts_at_the_key_bounds() {
        let a = summary(
            "a.tif",
            3857,
            1000.0,
            2000.0,
            100.0,
            10,
            10,
            CellType::new(DataType::U8, None),
        );
        let md = collect_metadata(&[a], &LayoutScheme::parse("zoomed:3857:256").unwrap()).unwrap();
        let g = md.array_grid();
        let origin = md.layout.map_transform().key_to_extent(md.bounds.min);
        assert_eq!((g.extent.xmin, g.extent.ymax), (origin.xmin, origin.ymax));
        assert!(g.extent.xmax >= 2000.0 && g.extent.ymin <= 1000.0);
        assert_eq!(md.chunk_of(md.bounds.min), [0, 0]);
        assert_eq!(md.key_of_chunk([0, 0]), md.bounds.min);
    }
}
