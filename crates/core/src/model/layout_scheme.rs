//! `LayoutScheme`: how a layout is chosen for a layer — floating, or a zoomed pyramid level.

use serde::{Deserialize, Serialize};

use super::grid_extent::ceil_snapped;
use super::{CellSize, Extent, LayoutDefinition, TileLayout};
use crate::error::{Error, Result};

/// The largest tile side Tessera accepts.
pub const MAX_TILE_SIZE: u32 = 65536;

/// The world a zoomed pyramid covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoomedCrs {
    /// EPSG:3857, the square world of ±20037508.342789244 m.
    WebMercator,
    /// EPSG:4326, (-180, -90, 180, 90) degrees; tiles are twice as wide as high in degrees.
    LatLng,
}

impl ZoomedCrs {
    pub fn epsg(self) -> u32 {
        match self {
            ZoomedCrs::WebMercator => 3857,
            ZoomedCrs::LatLng => 4326,
        }
    }

    pub fn world_extent(self) -> Extent {
        match self {
            ZoomedCrs::WebMercator => {
                let e = 20037508.342789244;
                Extent::new(-e, -e, e, e)
            }
            ZoomedCrs::LatLng => Extent::new(-180.0, -90.0, 180.0, 90.0),
        }
    }
}

/// A layout scheme (GeoTrellis `LayoutScheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LayoutScheme {
    /// Tiles of a fixed size laid from the data's own north-west corner, at its own resolution.
    Floating { tile_cols: u32, tile_rows: u32 },
    /// Power-of-two pyramid levels over the world of a CRS: level z has 2^z × 2^z tiles.
    Zoomed { crs: ZoomedCrs, tile_size: u32 },
}

/// A chosen layout, with its pyramid level for zoomed schemes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayoutLevel {
    pub zoom: Option<u32>,
    pub layout: LayoutDefinition,
}

fn check_tile_size(n: u32, what: &str) -> Result<u32> {
    if n == 0 || n > MAX_TILE_SIZE {
        return Err(Error::invalid(format!(
            "{what} {n} is out of range (1 to {MAX_TILE_SIZE})"
        )));
    }
    Ok(n)
}

impl LayoutScheme {
    pub fn floating(tile_cols: u32, tile_rows: u32) -> Result<Self> {
        Ok(LayoutScheme::Floating {
            tile_cols: check_tile_size(tile_cols, "tile columns")?,
            tile_rows: check_tile_size(tile_rows, "tile rows")?,
        })
    }

    /// Parses `floating:256`, `floating:512x256` (cols × rows), `zoomed:3857:256` or `zoomed:4326`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "layout `{s}` is not understood (expected floating:SIZE, floating:COLSxROWS or zoomed:3857|4326[:SIZE])"
            ))
        };
        let num = |t: &str| -> Result<u32> { t.trim().parse::<u32>().map_err(|_| bad()) };
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("floating"), Some(size), None, None) => match size.split_once(['x', 'X']) {
                Some((c, r)) => LayoutScheme::floating(num(c)?, num(r)?),
                None => {
                    let n = num(size)?;
                    LayoutScheme::floating(n, n)
                }
            },
            (Some("zoomed"), Some(crs), size, None) => {
                let crs = match crs.trim_start_matches("EPSG").trim_start_matches("epsg") {
                    "3857" => ZoomedCrs::WebMercator,
                    "4326" => ZoomedCrs::LatLng,
                    _ => return Err(bad()),
                };
                let tile_size =
                    check_tile_size(size.map(num).transpose()?.unwrap_or(256), "tile size")?;
                Ok(LayoutScheme::Zoomed { crs, tile_size })
            }
            _ => Err(bad()),
        }
    }

    /// The layout for data covering `extent` at `cell_size` (GeoTrellis `levelFor`).
    ///
    /// Floating: `layout_cols = ceil(total_cols / tile_cols)` (rows likewise); the layout keeps
    /// the data's (xmin, ymax) corner and grows east and south to whole tiles.
    /// Zoomed: the first level whose cells are at least as fine as `cell_size` on both axes.
    pub fn level_for(&self, extent: &Extent, cell_size: &CellSize) -> Result<LayoutLevel> {
        if !(extent.is_valid() && cell_size.width > 0.0 && cell_size.height > 0.0) {
            return Err(Error::invalid(format!(
                "cannot lay out extent {extent} with cell size {cell_size:?}"
            )));
        }
        match *self {
            LayoutScheme::Floating {
                tile_cols,
                tile_rows,
            } => {
                let total_cols = ceil_snapped(extent.width() / cell_size.width).max(1.0);
                let total_rows = ceil_snapped(extent.height() / cell_size.height).max(1.0);
                let layout_cols = (total_cols / tile_cols as f64).ceil();
                let layout_rows = (total_rows / tile_rows as f64).ceil();
                if layout_cols > u32::MAX as f64 || layout_rows > u32::MAX as f64 {
                    return Err(Error::invalid(format!(
                        "{total_cols} × {total_rows} cells need too many tiles"
                    )));
                }
                let tile_layout = TileLayout {
                    layout_cols: layout_cols as u32,
                    layout_rows: layout_rows as u32,
                    tile_cols,
                    tile_rows,
                };
                let width = tile_layout.total_cols() as f64 * cell_size.width;
                let height = tile_layout.total_rows() as f64 * cell_size.height;
                let layout_extent = Extent::new(
                    extent.xmin,
                    extent.ymax - height,
                    extent.xmin + width,
                    extent.ymax,
                );
                Ok(LayoutLevel {
                    zoom: None,
                    layout: LayoutDefinition::new(layout_extent, tile_layout),
                })
            }
            LayoutScheme::Zoomed { crs, tile_size } => {
                let world = crs.world_extent();
                let zoom_for = |res: f64, span: f64| {
                    (0..=30u32)
                        .find(|z| span / ((1u64 << z) as f64 * tile_size as f64) <= res + 1e-8)
                        .unwrap_or(30)
                };
                let zoom = zoom_for(cell_size.width, world.width())
                    .max(zoom_for(cell_size.height, world.height()));
                Ok(LayoutLevel {
                    zoom: Some(zoom),
                    layout: Self::zoomed_level(crs, tile_size, zoom),
                })
            }
        }
    }

    /// Level `zoom` of a zoomed pyramid.
    pub fn zoomed_level(crs: ZoomedCrs, tile_size: u32, zoom: u32) -> LayoutDefinition {
        let n = 1u32 << zoom.min(30);
        LayoutDefinition::new(
            crs.world_extent(),
            TileLayout {
                layout_cols: n,
                layout_rows: n,
                tile_cols: tile_size,
                tile_rows: tile_size,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SpatialKey;

    #[test]
    fn floating_layout_over_an_extent_not_a_multiple_of_the_tile_size() {
        // The RVT tile: 1000 × 1000 cells of 1 m from (563999.5, 146999.5).
        let extent = Extent::new(563999.5, 145999.5, 564999.5, 146999.5);
        let level = LayoutScheme::parse("floating:256")
            .unwrap()
            .level_for(&extent, &CellSize::new(1.0, 1.0))
            .unwrap();
        let l = level.layout;
        assert_eq!(
            l.tile_layout,
            TileLayout {
                layout_cols: 4,
                layout_rows: 4,
                tile_cols: 256,
                tile_rows: 256
            }
        );
        // Keeps (xmin, ymax), grows east and south to 1024 cells.
        assert_eq!(
            l.extent,
            Extent::new(563999.5, 145975.5, 565023.5, 146999.5)
        );
        assert_eq!(l.cell_size(), CellSize::new(1.0, 1.0));
        // The last data cell (999, 999) is in key (3, 3); the source's south-east corner lies
        // inside that tile, so the data's key bounds are the full 4 × 4.
        let mt = l.map_transform();
        assert_eq!(
            mt.point_to_key(564999.0, 146000.0),
            Some(SpatialKey::new(3, 3))
        );
        assert_eq!(mt.extent_to_bounds(&extent).map(|b| b.size()), Some(16));
    }

    #[test]
    fn floating_layout_with_rectangular_tiles_and_an_exact_fit() {
        // 512 × 300 cells of 2 m: 2 × 3 tiles of 256 × 100, extent unchanged, and the south-east
        // edge of the data lies exactly on a tile line: key bounds stop at (1, 2).
        let extent = Extent::new(0.0, 0.0, 1024.0, 600.0);
        let l = LayoutScheme::parse("floating:256x100")
            .unwrap()
            .level_for(&extent, &CellSize::new(2.0, 2.0))
            .unwrap()
            .layout;
        assert_eq!(
            l.tile_layout,
            TileLayout {
                layout_cols: 2,
                layout_rows: 3,
                tile_cols: 256,
                tile_rows: 100
            }
        );
        assert_eq!(l.extent, extent);
        assert_eq!(
            l.map_transform().extent_to_bounds(&extent),
            Some(crate::model::GridBounds::new(0, 0, 1, 2))
        );
    }

    #[test]
    fn zoomed_levels_pick_the_first_fine_enough_resolution() {
        let s = LayoutScheme::parse("zoomed:3857:256").unwrap();
        // Level 0 is 156543.03 m per cell; level 10 is 152.87 m.
        let e = Extent::new(0.0, 0.0, 1000.0, 1000.0);
        let lvl = s.level_for(&e, &CellSize::new(150.0, 150.0)).unwrap();
        assert_eq!(lvl.zoom, Some(11));
        let lvl = s.level_for(&e, &CellSize::new(152.88, 152.88)).unwrap();
        assert_eq!(lvl.zoom, Some(10));
        assert_eq!(lvl.layout.tile_layout.layout_cols, 1024);
        let g = LayoutScheme::parse("zoomed:4326").unwrap();
        let lvl = g
            .level_for(&Extent::new(0.0, 0.0, 1.0, 1.0), &CellSize::new(0.01, 0.01))
            .unwrap();
        // 360 / (2^z · 256) ≤ 0.01 → z = 8 (0.0055°); 180 / (2^z · 256) ≤ 0.01 → z = 7.
        assert_eq!(lvl.zoom, Some(8));
    }

    #[test]
    fn bad_tile_sizes_and_schemes_are_refused() {
        for bad in [
            "floating:0",
            "floating:65537",
            "floating:abc",
            "tiled:256",
            "zoomed:2154",
            "floating:256x0",
        ] {
            let err = LayoutScheme::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("out of range") || err.contains("not understood"),
                "{bad}: {err}"
            );
        }
        assert!(LayoutScheme::parse("floating:65536").is_ok());
    }
}
