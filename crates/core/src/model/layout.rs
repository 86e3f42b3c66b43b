//! `TileLayout`, `LayoutDefinition` and `MapKeyTransform`: how an extent is cut into tiles.

use serde::{Deserialize, Serialize};

use super::grid_extent::{GRID_EPSILON, floor_snapped};
use super::{CellSize, Extent, GridBounds, GridExtent, SpatialKey};

/// How many tiles, and how many cells per tile (GeoTrellis `TileLayout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileLayout {
    pub layout_cols: u32,
    pub layout_rows: u32,
    pub tile_cols: u32,
    pub tile_rows: u32,
}

impl TileLayout {
    pub fn total_cols(&self) -> u64 {
        self.layout_cols as u64 * self.tile_cols as u64
    }

    pub fn total_rows(&self) -> u64 {
        self.layout_rows as u64 * self.tile_rows as u64
    }
}

/// An extent cut into a tile layout (GeoTrellis `LayoutDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayoutDefinition {
    pub extent: Extent,
    pub tile_layout: TileLayout,
}

impl LayoutDefinition {
    pub fn new(extent: Extent, tile_layout: TileLayout) -> Self {
        LayoutDefinition {
            extent,
            tile_layout,
        }
    }

    pub fn cell_size(&self) -> CellSize {
        CellSize::new(
            self.extent.width() / self.tile_layout.total_cols() as f64,
            self.extent.height() / self.tile_layout.total_rows() as f64,
        )
    }

    /// The cell grid of the whole layout.
    pub fn grid(&self) -> GridExtent {
        GridExtent {
            extent: self.extent,
            cell_size: self.cell_size(),
            cols: self.tile_layout.total_cols(),
            rows: self.tile_layout.total_rows(),
        }
    }

    pub fn map_transform(&self) -> MapKeyTransform {
        MapKeyTransform::new(
            self.extent,
            self.tile_layout.layout_cols,
            self.tile_layout.layout_rows,
        )
    }

    /// Every key of the layout.
    pub fn grid_bounds(&self) -> GridBounds {
        GridBounds::new(
            0,
            0,
            self.tile_layout.layout_cols - 1,
            self.tile_layout.layout_rows - 1,
        )
    }

    /// The cell grid of one tile.
    pub fn tile_grid(&self, key: SpatialKey) -> GridExtent {
        GridExtent {
            extent: self.map_transform().key_to_extent(key),
            cell_size: self.cell_size(),
            cols: self.tile_layout.tile_cols as u64,
            rows: self.tile_layout.tile_rows as u64,
        }
    }
}

/// Converts between map coordinates and keys (GeoTrellis `MapKeyTransform`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapKeyTransform {
    extent: Extent,
    layout_cols: u32,
    layout_rows: u32,
    tile_width: f64,
    tile_height: f64,
}

impl MapKeyTransform {
    pub fn new(extent: Extent, layout_cols: u32, layout_rows: u32) -> Self {
        MapKeyTransform {
            extent,
            layout_cols,
            layout_rows,
            tile_width: extent.width() / layout_cols as f64,
            tile_height: extent.height() / layout_rows as f64,
        }
    }

    /// The extent of the tile at `key`.
    pub fn key_to_extent(&self, key: SpatialKey) -> Extent {
        let xmin = self.extent.xmin + key.col as f64 * self.tile_width;
        let ymax = self.extent.ymax - key.row as f64 * self.tile_height;
        Extent::new(xmin, ymax - self.tile_height, xmin + self.tile_width, ymax)
    }

    /// Continuous tile coordinates of a point (not clamped to the layout).
    pub fn map_to_grid_f64(&self, x: f64, y: f64) -> (f64, f64) {
        (
            (x - self.extent.xmin) / self.tile_width,
            (self.extent.ymax - y) / self.tile_height,
        )
    }

    /// The tile column and row holding a point, which may lie outside the layout (negative or
    /// past the last key). A point on a tile line belongs to the tile east / south of it.
    pub fn point_to_grid(&self, x: f64, y: f64) -> (i64, i64) {
        let (c, r) = self.map_to_grid_f64(x, y);
        (floor_snapped(c) as i64, floor_snapped(r) as i64)
    }

    /// The key of the tile holding a point, or `None` outside the layout.
    pub fn point_to_key(&self, x: f64, y: f64) -> Option<SpatialKey> {
        let (c, r) = self.point_to_grid(x, y);
        let inside =
            (0..self.layout_cols as i64).contains(&c) && (0..self.layout_rows as i64).contains(&r);
        inside.then(|| SpatialKey::new(c as u32, r as u32))
    }

    /// The keys whose tiles intersect `extent`, clamped to the layout, or `None` when there are
    /// none. As in GeoTrellis the north and west edges of `extent` are inclusive and its south
    /// and east edges exclusive: an east edge that lies exactly on a tile line does not pull in
    /// the tile beyond it.
    pub fn extent_to_bounds(&self, extent: &Extent) -> Option<GridBounds> {
        let (col_min, row_min) = self.point_to_grid(extent.xmin, extent.ymax);
        let (cmax, rmax) = self.map_to_grid_f64(extent.xmax, extent.ymin);
        let exclusive = |v: f64, min: i64| {
            let r = v.round();
            let on_line = (v - r).abs() <= GRID_EPSILON;
            if on_line {
                (r as i64 - 1).max(min)
            } else {
                v.floor() as i64
            }
        };
        let col_max = exclusive(cmax, col_min);
        let row_max = exclusive(rmax, row_min);
        let clamp_lo = |v: i64| v.max(0);
        let (c0, r0) = (clamp_lo(col_min), clamp_lo(row_min));
        let c1 = col_max.min(self.layout_cols as i64 - 1);
        let r1 = row_max.min(self.layout_rows as i64 - 1);
        (c0 <= c1 && r0 <= r1).then(|| GridBounds::new(c0 as u32, r0 as u32, c1 as u32, r1 as u32))
    }

    /// The extent covered by a rectangle of keys.
    pub fn bounds_to_extent(&self, bounds: &GridBounds) -> Extent {
        let nw = self.key_to_extent(SpatialKey::new(bounds.col_min, bounds.row_min));
        let se = self.key_to_extent(SpatialKey::new(bounds.col_max, bounds.row_max));
        Extent::new(nw.xmin, se.ymin, se.xmax, nw.ymax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> LayoutDefinition {
        // 4 × 3 tiles of 10 × 10 cells of 1 m, north-west corner at (100, 50).
        LayoutDefinition::new(
            Extent::new(100.0, 20.0, 140.0, 50.0),
            TileLayout {
                layout_cols: 4,
                layout_rows: 3,
                tile_cols: 10,
                tile_rows: 10,
            },
        )
    }

    #[test]
    fn key_to_extent_counts_rows_from_the_north() {
        let mt = layout().map_transform();
        assert_eq!(
            mt.key_to_extent(SpatialKey::new(0, 0)),
            Extent::new(100.0, 40.0, 110.0, 50.0)
        );
        assert_eq!(
            mt.key_to_extent(SpatialKey::new(3, 2)),
            Extent::new(130.0, 20.0, 140.0, 30.0)
        );
    }

    #[test]
    fn key_extent_key_round_trip() {
        let l = layout();
        let mt = l.map_transform();
        for key in l.grid_bounds().iter_keys() {
            let e = mt.key_to_extent(key);
            assert_eq!(
                mt.extent_to_bounds(&e),
                Some(GridBounds::new(key.col, key.row, key.col, key.row))
            );
            let (cx, cy) = ((e.xmin + e.xmax) / 2.0, (e.ymin + e.ymax) / 2.0);
            assert_eq!(mt.point_to_key(cx, cy), Some(key));
            // The north-west corner belongs to the key itself.
            assert_eq!(mt.point_to_key(e.xmin, e.ymax), Some(key));
        }
    }

    #[test]
    fn south_east_edge_on_a_tile_line_is_exclusive() {
        let mt = layout().map_transform();
        // Ends exactly on the line x = 120, y = 30: tiles (0..=1, 0..=1), not (0..=2, 0..=2).
        let e = Extent::new(100.0, 30.0, 120.0, 50.0);
        assert_eq!(mt.extent_to_bounds(&e), Some(GridBounds::new(0, 0, 1, 1)));
        // A hair past the line pulls in the next tiles.
        let e = Extent::new(100.0, 29.9, 120.1, 50.0);
        assert_eq!(mt.extent_to_bounds(&e), Some(GridBounds::new(0, 0, 2, 2)));
        // North-west edge on a tile line is inclusive.
        let e = Extent::new(110.0, 35.0, 115.0, 40.0);
        assert_eq!(mt.extent_to_bounds(&e), Some(GridBounds::new(1, 1, 1, 1)));
        // Larger than the layout: clamped.
        let e = Extent::new(0.0, 0.0, 1000.0, 1000.0);
        assert_eq!(mt.extent_to_bounds(&e), Some(GridBounds::new(0, 0, 3, 2)));
        // Outside: nothing.
        assert_eq!(
            mt.extent_to_bounds(&Extent::new(200.0, 0.0, 300.0, 10.0)),
            None
        );
    }
}
