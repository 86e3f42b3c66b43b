//! Keys of the tile grid: `SpatialKey`, `GridBounds` and `KeyBounds`.

use serde::{Deserialize, Serialize};

/// A tile's place in a layout: `col` grows east, `row` grows south from the north-west corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpatialKey {
    pub col: u32,
    pub row: u32,
}

impl SpatialKey {
    pub const fn new(col: u32, row: u32) -> Self {
        SpatialKey { col, row }
    }
}

impl std::fmt::Display for SpatialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {})", self.col, self.row)
    }
}

/// An inclusive rectangle of tile columns and rows (GeoTrellis `GridBounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GridBounds {
    pub col_min: u32,
    pub row_min: u32,
    pub col_max: u32,
    pub row_max: u32,
}

impl GridBounds {
    pub const fn new(col_min: u32, row_min: u32, col_max: u32, row_max: u32) -> Self {
        GridBounds {
            col_min,
            row_min,
            col_max,
            row_max,
        }
    }

    pub fn width(&self) -> u32 {
        self.col_max - self.col_min + 1
    }

    pub fn height(&self) -> u32 {
        self.row_max - self.row_min + 1
    }

    pub fn size(&self) -> u64 {
        self.width() as u64 * self.height() as u64
    }

    pub fn contains(&self, key: SpatialKey) -> bool {
        (self.col_min..=self.col_max).contains(&key.col)
            && (self.row_min..=self.row_max).contains(&key.row)
    }

    pub fn intersection(&self, other: &GridBounds) -> Option<GridBounds> {
        let g = GridBounds {
            col_min: self.col_min.max(other.col_min),
            row_min: self.row_min.max(other.row_min),
            col_max: self.col_max.min(other.col_max),
            row_max: self.row_max.min(other.row_max),
        };
        (g.col_min <= g.col_max && g.row_min <= g.row_max).then_some(g)
    }

    /// Every key, row by row from the north-west corner.
    pub fn iter_keys(&self) -> impl Iterator<Item = SpatialKey> + use<> {
        let (c0, c1) = (self.col_min, self.col_max);
        (self.row_min..=self.row_max)
            .flat_map(move |row| (c0..=c1).map(move |col| SpatialKey::new(col, row)))
    }
}

/// The smallest and largest key of a layer (GeoTrellis `KeyBounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBounds<K> {
    pub min: K,
    pub max: K,
}

impl KeyBounds<SpatialKey> {
    pub fn from_grid_bounds(g: GridBounds) -> Self {
        KeyBounds {
            min: SpatialKey::new(g.col_min, g.row_min),
            max: SpatialKey::new(g.col_max, g.row_max),
        }
    }

    pub fn to_grid_bounds(&self) -> GridBounds {
        GridBounds::new(self.min.col, self.min.row, self.max.col, self.max.row)
    }

    pub fn combine(&self, other: &Self) -> Self {
        KeyBounds {
            min: SpatialKey::new(
                self.min.col.min(other.min.col),
                self.min.row.min(other.min.row),
            ),
            max: SpatialKey::new(
                self.max.col.max(other.max.col),
                self.max.row.max(other.max.row),
            ),
        }
    }
}
